//! Ports: how frames get in and out of the switch. A port moves bytes; it decides nothing.
//!
//! The event loop sees only [`Port`]: an fd to poll for readability, `recv` into a
//! [`FrameBuf`], and `send` from a list of slices (scatter-gather, so a tag can be put in
//! front of a frame without copying it) with the frame's offload metadata ([`VnetHdr`]).
//! Port kinds live in their own modules: [`tap`] (`/dev/net/tun`), [`packet`] (a packet
//! socket on an existing interface: veth and netdev ports), [`detached`] (an interface that
//! is absent for now), [`socket`] (a VM's QEMU stream or datagram socket), [`datagram`] (an
//! in-process socket pair for tests and benchmarks), [`memory`] (no socket at all: fuzz
//! targets and step-by-step tests).
//!
//! Ports that carry offload metadata ([`Port::carries_offload`]) take frames whose transport
//! checksum is still partial, and GSO super-frames, as they are; for the others the event
//! loop completes checksums in software first.

pub mod datagram;
pub mod detached;
pub mod memory;
pub mod packet;
pub mod socket;
pub mod tap;
pub mod tx_queue;
pub mod udp_tunnel;

use std::fmt;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::wire::vlan::TAG_LEN;
use crate::wire::{VnetHdr, vnet_hdr};

/// Bytes kept free in front of every received frame, so headers can be pushed (a VLAN tag, a
/// virtio-net header, an outer VXLAN/UDP/IP header) without moving the frame.
pub const HEADROOM: usize = 128;

/// The largest frame a port may hand over: a 64 KiB offloaded super-frame and its headers.
pub const MAX_FRAME_LEN: usize = 65_536 + 64;

/// A reusable receive buffer: headroom, then one frame, and the frame's offload metadata.
#[derive(Clone)]
pub struct FrameBuf {
    storage: Box<[u8]>,
    start: usize,
    len: usize,
    /// Offload state of the frame (all zero: a plain, complete frame).
    pub offload: VnetHdr,
    /// Where a tunnel port received the frame from (the outer source).
    pub source: Option<SocketAddr>,
    /// The frame was longer than the buffer and arrived cut short: never forwarded.
    pub truncated: bool,
}

impl fmt::Debug for FrameBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameBuf").field("start", &self.start).field("len", &self.len).finish()
    }
}

impl FrameBuf {
    /// A buffer that holds frames of up to `max_frame_len` bytes behind [`HEADROOM`].
    pub fn new(max_frame_len: usize) -> FrameBuf {
        FrameBuf {
            storage: vec![0u8; HEADROOM + max_frame_len].into_boxed_slice(),
            start: HEADROOM,
            len: 0,
            offload: VnetHdr::default(),
            source: None,
            truncated: false,
        }
    }

    /// The space a port receives into; call [`FrameBuf::set_received`] afterwards. Resets the
    /// offload metadata.
    pub fn receive_area(&mut self) -> &mut [u8] {
        self.start = HEADROOM;
        self.len = 0;
        self.offload = VnetHdr::default();
        self.source = None;
        self.truncated = false;
        &mut self.storage[HEADROOM..]
    }

    /// Drops `n` bytes from the front of the frame (an encapsulation header), without moving
    /// the rest.
    pub fn pull_front(&mut self, n: usize) {
        let n = n.min(self.len);
        self.start += n;
        self.len -= n;
    }

    /// Inserts a VLAN tag after the MAC addresses (moving the 12 address bytes into the
    /// headroom, not the frame), as when restoring a tag the kernel moved into metadata.
    /// Offload offsets move with the payload.
    pub fn insert_tag(&mut self, tag: [u8; TAG_LEN]) {
        if self.start < TAG_LEN || self.len < 12 {
            return;
        }
        let new_start = self.start - TAG_LEN;
        self.storage.copy_within(self.start..self.start + 12, new_start);
        self.storage[new_start + 12..new_start + 12 + TAG_LEN].copy_from_slice(&tag);
        self.start = new_start;
        self.len += TAG_LEN;
        self.offload = self.offload.shifted(TAG_LEN as i32);
    }

    /// Appends `bytes` to the frame; `false` (and nothing appended) if they do not fit.
    pub fn append(&mut self, bytes: &[u8]) -> bool {
        let end = self.start + self.len;
        let Some(room) = self.storage.get_mut(end..end + bytes.len()) else { return false };
        room.copy_from_slice(bytes);
        self.len += bytes.len();
        true
    }

    /// Makes this buffer hold a copy of `other`'s frame and offload metadata.
    pub fn copy_from(&mut self, other: &FrameBuf) {
        let len = other.len.min(self.storage.len() - HEADROOM);
        self.receive_area()[..len].copy_from_slice(&other.frame()[..len]);
        self.len = len;
        self.offload = other.offload;
    }

    /// Records that the port wrote `len` bytes into the receive area. A length that fills
    /// the area or more means the frame did not fit: it is marked truncated.
    pub fn set_received(&mut self, len: usize) {
        let room = self.storage.len() - HEADROOM;
        self.truncated |= len >= room;
        self.len = len.min(room);
    }

    /// Records a receive of `total` bytes of which the first [`vnet_hdr::LEN`] were the
    /// virtio-net `header` (read into its own buffer) and the rest the frame.
    pub fn set_received_with_header(&mut self, total: usize, header: &[u8; vnet_hdr::LEN]) {
        self.set_received(total.saturating_sub(vnet_hdr::LEN));
        self.offload = VnetHdr::parse(header).unwrap_or_default();
    }

    /// The frame.
    pub fn frame(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// The frame, writable.
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }

    /// Frame length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One bridge port's I/O.
pub trait Port: Send + fmt::Debug {
    /// The fd the event loop polls for readability (edge-triggered: `recv` until
    /// `WouldBlock`, or come back later); `None` if there is nothing to poll.
    fn raw_fd(&self) -> Option<RawFd>;

    /// Receives one frame into `buf`, with its offload metadata. `WouldBlock` means nothing
    /// is waiting.
    fn recv(&mut self, buf: &mut FrameBuf) -> io::Result<()>;

    /// Receives up to `bufs.len()` frames; returns how many (at least one), or the error of
    /// the first receive (`WouldBlock`: nothing waiting). Ports that can take many frames in
    /// one system call do; the default calls [`Port::recv`] in turn.
    fn recv_batch(&mut self, bufs: &mut [FrameBuf]) -> io::Result<usize> {
        let mut received = 0;
        while received < bufs.len() {
            match self.recv(&mut bufs[received]) {
                Ok(()) => received += 1,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if received > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(received)
    }

    /// Sends one frame made of `parts`, in order, with offload metadata `offload` (ignored by
    /// ports that do not [carry offload](Port::carries_offload)).
    fn send(&mut self, parts: &[IoSlice<'_>], offload: &VnetHdr) -> io::Result<()>;

    /// Whether [`Port::send`] may queue frames until [`Port::flush`] (ports that send many
    /// frames in one system call). The event loop flushes such ports at the end of each batch.
    fn queues_sends(&self) -> bool {
        false
    }

    /// Sends what [`Port::send`] queued. Frames that could not be sent (then, or earlier when
    /// the queue filled up) are reported, so the loop can take them off the sent counters and
    /// count them as drops.
    fn flush(&mut self) -> Result<(), SendFailure> {
        Ok(())
    }

    /// Whether a short [`Port::recv_batch`] may mean "stopped at an error the next call
    /// reports" rather than "nothing more waiting" (`recvmmsg` on a packet socket does this).
    fn defers_errors(&self) -> bool {
        false
    }

    /// Frames the kernel dropped for this port since the last call before vswitchd could read
    /// them (a full socket receive buffer), for ports that can tell.
    fn take_kernel_drops(&mut self) -> u64 {
        0
    }

    /// Frames the device behind the port dropped since the last call, by reason, handed to
    /// `count` (a vhost-user device's bad descriptors and undeliverable frames); for ports
    /// that can tell. Read when the kernel's drops are.
    fn take_device_drops(&mut self, _count: &mut dyn FnMut(crate::verdict::DropReason, u64)) {}

    /// Whether the port takes partial checksums and GSO super-frames as they are.
    fn carries_offload(&self) -> bool {
        false
    }

    /// The offloads the port negotiated with the kernel, if it negotiates any (TAPs).
    fn offload_report(&self) -> Option<OffloadReport> {
        None
    }

    /// A second fd for the port's kernel object (TAP queue, packet socket, tunnel socket),
    /// for handing the port to another vswitchd process; `None` for ports with nothing to hand
    /// over.
    fn clone_fd(&self) -> Option<io::Result<std::os::fd::OwnedFd>> {
        None
    }

    /// Sends one frame made of `parts` to `dest` (tunnel ports); `flow` is a hash of the inner
    /// flow, which tunnel ports use to spread flows over the underlay.
    fn send_to(&mut self, _parts: &[IoSlice<'_>], _dest: SocketAddr, _flow: u64) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "not a tunnel port"))
    }

    /// Sends the datagram made of `parts` to each of `dests` (tunnel ports: head-end
    /// replication). Returns how many destinations, from the first, it went to; an error only if
    /// it went to none. Ports that can do it in one call (`sendmmsg`) do; the default sends one
    /// by one.
    fn send_to_each(&mut self, parts: &[IoSlice<'_>], dests: &[SocketAddr], flow: u64) -> io::Result<usize> {
        for (i, &dest) in dests.iter().enumerate() {
            if let Err(e) = self.send_to(parts, dest, flow) {
                return if i == 0 { Err(e) } else { Ok(i) };
            }
        }
        Ok(dests.len())
    }

    /// The path MTU toward `dest` as the kernel knows it (the route's MTU, or the smaller one
    /// it learned), for tunnel ports that can tell; a system call or two, not for every frame.
    fn path_mtu(&mut self, _dest: SocketAddr) -> Option<usize> {
        None
    }

    /// Sends `datagrams` — back-to-back datagrams of `size` bytes, the last possibly shorter —
    /// to `dest` (tunnel ports). Ports that can batch do it in one call (UDP GSO); the default
    /// sends them one by one.
    fn send_datagrams_to(&mut self, datagrams: &[u8], size: usize, dest: SocketAddr, flow: u64) -> io::Result<()> {
        for datagram in datagrams.chunks(size.max(1)) {
            self.send_to(&[IoSlice::new(datagram)], dest, flow)?;
        }
        Ok(())
    }
}

/// `ports` as trait objects: one port's I/O queues, one per worker thread.
pub fn boxed<P: Port + 'static>(ports: Vec<P>) -> Vec<Box<dyn Port>> {
    ports.into_iter().map(|p| Box::new(p) as Box<dyn Port>).collect()
}

/// Frames a port accepted into its transmit queue that the kernel then refused.
#[derive(Debug)]
pub struct SendFailure {
    /// How many.
    pub frames: u64,
    /// Their bytes (as counted when they were queued).
    pub bytes: u64,
    /// The last error.
    pub error: io::Error,
}

impl SendFailure {
    /// Adds `frames` frames of `bytes` bytes that failed with `error` to `failure`.
    pub fn record(failure: &mut Option<SendFailure>, frames: u64, bytes: u64, error: io::Error) {
        match failure {
            Some(f) => {
                f.frames += frames;
                f.bytes += bytes;
                f.error = error;
            }
            None => *failure = Some(SendFailure { frames, bytes, error }),
        }
    }
}

/// What a port negotiated with the kernel: the `TUN_F_*` offloads it got, and how many richer
/// sets the kernel refused first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadReport {
    /// Accepted `TUN_F_*` bits.
    pub flags: u32,
    /// Offered sets the kernel refused before one was accepted.
    pub refused: u32,
}

impl OffloadReport {
    /// The accepted offloads by name (`csum,tso4,tso6,tso_ecn`), or `none`.
    pub fn describe(&self) -> String {
        let names: Vec<&str> =
            [(0x01, "csum"), (0x02, "tso4"), (0x04, "tso6"), (0x08, "tso_ecn"), (0x20, "uso4"), (0x40, "uso6")]
                .into_iter()
                .filter(|(bit, _)| self.flags & bit != 0)
                .map(|(_, name)| name)
                .collect();
        if names.is_empty() { "none".into() } else { names.join(",") }
    }
}

/// Most slices a frame is sent as: the addresses, a pushed tag, the rest.
pub const MAX_PARTS: usize = 3;

/// `parts` behind an emitted virtio-net header, as one iovec list (no allocation).
pub fn with_vnet_header<'a>(
    header: &'a [u8],
    parts: &[IoSlice<'a>],
    out: &'a mut [IoSlice<'a>; MAX_PARTS + 1],
) -> &'a [IoSlice<'a>] {
    let n = parts.len().min(MAX_PARTS);
    out[0] = IoSlice::new(header);
    out[1..=n].copy_from_slice(&parts[..n]);
    &out[..=n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserting_a_tag_keeps_the_frame_and_moves_offsets() {
        let mut buf = FrameBuf::new(64);
        let frame: Vec<u8> = (0u8..20).collect();
        buf.receive_area()[..20].copy_from_slice(&frame);
        buf.set_received(20);
        buf.offload = VnetHdr { flags: crate::wire::vnet_hdr::F_NEEDS_CSUM, csum_start: 14, ..VnetHdr::default() };
        buf.insert_tag([0x81, 0x00, 0x00, 0x0a]);
        let expected: Vec<u8> =
            frame[..12].iter().copied().chain([0x81, 0x00, 0x00, 0x0a]).chain(frame[12..].iter().copied()).collect();
        assert_eq!(buf.frame(), &expected[..]);
        assert_eq!(buf.offload.csum_start, 18);
    }

    #[test]
    fn offloads_are_described_by_name() {
        assert_eq!(OffloadReport { flags: 0x0f, refused: 0 }.describe(), "csum,tso4,tso6,tso_ecn");
        assert_eq!(OffloadReport { flags: 0x6f, refused: 0 }.describe(), "csum,tso4,tso6,tso_ecn,uso4,uso6");
        assert_eq!(OffloadReport { flags: 0x01, refused: 1 }.describe(), "csum");
        assert_eq!(OffloadReport { flags: 0, refused: 2 }.describe(), "none");
    }

    #[test]
    fn the_vnet_header_goes_first() {
        let header = [9u8; 10];
        let (a, b) = ([1u8, 2], [3u8]);
        let mut out = [IoSlice::new(&[]); MAX_PARTS + 1];
        let parts = [IoSlice::new(&a), IoSlice::new(&b)];
        let iov = with_vnet_header(&header, &parts, &mut out);
        assert_eq!(iov.len(), 3);
        assert_eq!(&*iov[0], &header);
        assert_eq!(&*iov[2], &b);
    }
}
