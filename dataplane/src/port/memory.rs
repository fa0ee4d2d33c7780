//! In-process ports with no file descriptor: a [`MemoryWire`] holds what the port will receive
//! and checks what it sends, so the real pipeline (ingress, learning, VLANs, bonds, VXLAN,
//! segmentation) runs without a kernel — for fuzzing and for tests that drive the switch one
//! step at a time with [`crate::switch::Switch::run_once`].
//!
//! Each port plays one kind of kernel endpoint ([`Framing`]): a TAP or packet socket (a
//! virtio-net header in front of every frame, parsed by the same code the real ports use), a
//! plain frame port, or a UDP tunnel socket (datagrams with a source address). Every frame the
//! switch sends is checked against what a kernel would accept (lengths, segment sizes, offload
//! offsets); a frame that breaks a rule is recorded as a [`Violation`], which the fuzz targets
//! turn into a crash.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{FrameBuf, Port};
use crate::wire::{VnetHdr, ethernet, vnet_hdr};

/// What kind of kernel endpoint a memory port plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// A virtio-net header in front of every frame (a TAP with `IFF_VNET_HDR`, a packet socket
    /// with `PACKET_VNET_HDR`): offloads carried both ways.
    VnetHdr,
    /// Plain frames, no offload (checksums complete, super-frames cut before sending).
    Plain,
    /// A UDP tunnel socket: datagrams, each with the address it came from.
    Tunnel,
}

/// A frame sent that no kernel would take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule broken.
    pub rule: &'static str,
    /// The frame's (or datagram's) length.
    pub len: usize,
}

/// What a memory port will receive and what it sent.
#[derive(Debug, Default)]
pub struct MemoryWire {
    /// Received next, in order: the bytes as the endpoint would read them (with the
    /// virtio-net header in front for [`Framing::VnetHdr`]), and the sender's address for
    /// tunnels.
    pub inbox: VecDeque<(Vec<u8>, Option<SocketAddr>)>,
    /// Frames (or datagrams) sent.
    pub sent: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Sends that broke a rule.
    pub violations: Vec<Violation>,
    /// Frames "the kernel" dropped before the switch read them, reported once.
    pub kernel_drops: u64,
}

/// A shared handle on a memory port's wire.
pub type WireHandle = Arc<Mutex<MemoryWire>>;

/// Locks a wire, whatever a panicking holder left behind.
pub fn lock(wire: &WireHandle) -> MutexGuard<'_, MemoryWire> {
    wire.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The switch's end of an in-process endpoint.
#[derive(Debug)]
pub struct MemoryPort {
    wire: WireHandle,
    framing: Framing,
    /// The largest plain frame the endpoint takes: MTU, Ethernet header and two tags.
    max_frame: usize,
    /// The MTU; for a tunnel socket, the underlay's path MTU (a datagram that would not fit
    /// fails with `EMSGSIZE`, as with "don't fragment").
    mtu: usize,
}

/// The largest UDP payload of an IPv4 datagram.
const MAX_DATAGRAM: usize = 65_507;
/// An IPv4 and a UDP header: what a tunnel datagram adds to count against the path MTU.
const UDP_IPV4_HEADERS: usize = 28;

impl MemoryPort {
    /// A port of `framing` for an endpoint with MTU `mtu`, and the handle the driver keeps.
    pub fn new(framing: Framing, mtu: u32) -> (MemoryPort, WireHandle) {
        let wire = WireHandle::default();
        let max_frame = mtu as usize + ethernet::HEADER_LEN + 8;
        (MemoryPort { wire: Arc::clone(&wire), framing, max_frame, mtu: mtu as usize }, wire)
    }

    fn check_frame(&self, len: usize, offload: &VnetHdr, wire: &mut MemoryWire) {
        let carries = self.framing == Framing::VnetHdr;
        let mut broken = |rule| wire.violations.push(Violation { rule, len });
        if len < ethernet::HEADER_LEN {
            broken("a frame shorter than an Ethernet header");
        }
        if len > super::MAX_FRAME_LEN {
            broken("a frame longer than any port takes");
        }
        if !carries || !offload.is_gso() {
            if len > self.max_frame {
                broken("a frame longer than the egress MTU");
            }
        } else if offload.gso_size == 0 {
            broken("a GSO frame without a segment size");
        }
        if carries && offload.needs_csum() {
            let end = usize::from(offload.csum_start) + usize::from(offload.csum_offset) + 2;
            if end > len {
                broken("a partial checksum whose field lies outside the frame");
            }
        }
    }
}

impl Port for MemoryPort {
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> io::Result<()> {
        let Some((bytes, source)) = lock(&self.wire).inbox.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let area = buf.receive_area();
        match self.framing {
            Framing::VnetHdr => {
                // As readv(header, area): the header first, the rest into the area.
                let mut header = [0u8; vnet_hdr::LEN];
                let head = bytes.len().min(vnet_hdr::LEN);
                header[..head].copy_from_slice(&bytes[..head]);
                let body = &bytes[head..];
                let copied = body.len().min(area.len());
                area[..copied].copy_from_slice(&body[..copied]);
                buf.set_received_with_header(head + body.len(), &header);
            }
            Framing::Plain | Framing::Tunnel => {
                let copied = bytes.len().min(area.len());
                area[..copied].copy_from_slice(&bytes[..copied]);
                buf.set_received(bytes.len());
                buf.source = source;
            }
        }
        Ok(())
    }

    fn send(&mut self, parts: &[IoSlice<'_>], offload: &VnetHdr) -> io::Result<()> {
        let len = parts.iter().map(|p| p.len()).sum();
        let mut wire = lock(&self.wire);
        self.check_frame(len, offload, &mut wire);
        wire.sent += 1;
        wire.sent_bytes += len as u64;
        Ok(())
    }

    fn carries_offload(&self) -> bool {
        self.framing == Framing::VnetHdr
    }

    fn take_kernel_drops(&mut self) -> u64 {
        std::mem::take(&mut lock(&self.wire).kernel_drops)
    }

    fn path_mtu(&mut self, _dest: SocketAddr) -> Option<usize> {
        (self.framing == Framing::Tunnel).then_some(self.mtu)
    }

    fn send_to(&mut self, parts: &[IoSlice<'_>], _dest: SocketAddr, _flow: u64) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if self.framing == Framing::Tunnel && len + UDP_IPV4_HEADERS > self.mtu {
            return Err(io::Error::from_raw_os_error(libc::EMSGSIZE)); // "don't fragment"
        }
        let mut wire = lock(&self.wire);
        if len > MAX_DATAGRAM {
            wire.violations.push(Violation { rule: "a datagram longer than UDP carries", len });
        }
        wire.sent += 1;
        wire.sent_bytes += len as u64;
        Ok(())
    }

    fn send_datagrams_to(&mut self, datagrams: &[u8], size: usize, _dest: SocketAddr, _flow: u64) -> io::Result<()> {
        let mut wire = lock(&self.wire);
        let count = datagrams.len().div_ceil(size.max(1));
        if size == 0 || size > MAX_DATAGRAM || count > 64 || datagrams.len() > MAX_DATAGRAM {
            wire.violations.push(Violation { rule: "a UDP GSO send the kernel refuses", len: datagrams.len() });
        }
        if self.framing == Framing::Tunnel && size + UDP_IPV4_HEADERS > self.mtu {
            // The kernel refuses it (EINVAL) and the port would stop batching for good.
            wire.violations.push(Violation { rule: "a UDP GSO send over the path MTU", len: size });
        }
        wire.sent += count as u64;
        wire.sent_bytes += datagrams.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_go_in_as_the_kernel_would_hand_them_over_and_bad_sends_are_recorded() {
        let (mut port, wire) = MemoryPort::new(Framing::VnetHdr, 1500);
        let hdr = VnetHdr { flags: vnet_hdr::F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..VnetHdr::default() };
        let mut bytes = hdr.emit().to_vec();
        bytes.extend_from_slice(&[7u8; 60]);
        lock(&wire).inbox.push_back((bytes, None));
        let mut buf = FrameBuf::new(super::super::MAX_FRAME_LEN);
        port.recv(&mut buf).unwrap();
        assert_eq!((buf.len(), buf.offload), (60, hdr));
        assert_eq!(port.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        port.send(&[IoSlice::new(&[0u8; 60])], &hdr).unwrap();
        assert!(lock(&wire).violations.is_empty());
        port.send(&[IoSlice::new(&[0u8; 1600])], &VnetHdr::default()).unwrap();
        port.send(&[IoSlice::new(&[0u8; 38])], &hdr).unwrap();
        let rules: Vec<_> = lock(&wire).violations.iter().map(|v| v.rule).collect();
        assert_eq!(
            rules,
            ["a frame longer than the egress MTU", "a partial checksum whose field lies outside the frame"]
        );
    }
}
