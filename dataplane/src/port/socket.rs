//! Ports over the Unix sockets QEMU's `-netdev stream` and `-netdev dgram` backends speak: a
//! VM's frames with no virtio-net header, one per datagram, or on a stream each behind its
//! length (4 bytes, big-endian).
//!
//! [`StreamDeframer`] is the sans-I/O half of the stream framing: bytes go in, whole frames or
//! a [`DeframeError`] come out, from one buffer allocated per connection. [`StreamPort`] is one
//! connected stream (the control plane listens or connects, and swaps each connection in as the
//! port's I/O); a malformed length closes it, and the port tells whoever attached it through a
//! [`ConnectionClosed`] message. [`DgramPort`] is a bound datagram socket that answers the last
//! peer it heard from.

use std::io::{self, IoSlice, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixStream};

use crossbeam_channel::Sender;
use nix::sys::socket::{MsgFlags, UnixAddr, recvfrom, sendmsg};

use super::{FrameBuf, MAX_PARTS, Port, with_vnet_header};
use crate::verdict::DropReason;
use crate::wire::VnetHdr;

/// Bytes of the length in front of every frame on a stream.
pub const LENGTH_LEN: usize = 4;

/// The longest frame a stream connection may announce: more is never an Ethernet frame.
pub const MAX_STREAM_FRAME: usize = 65_535;

/// Bytes an Ethernet frame carries besides its MTU's worth: the header and two VLAN tags.
pub const FRAME_OVERHEAD: usize = 14 + 8;

/// The least a deframer buffers per read, so that many small frames come in one system call.
const MIN_BUFFER: usize = 64 * 1024;

/// The longest frame a port of MTU `mtu` takes on a stream: the MTU, the Ethernet header and
/// two VLAN tags, at most [`MAX_STREAM_FRAME`].
pub fn max_frame_for_mtu(mtu: u32) -> usize {
    (mtu as usize).saturating_add(FRAME_OVERHEAD).min(MAX_STREAM_FRAME)
}

/// Why a stream cannot be read on: after one of these no later byte can be trusted to start
/// a frame, so the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeframeError {
    /// A frame announced as 0 bytes long.
    #[error("a frame length of 0")]
    ZeroLength,
    /// A frame announced as longer than the port takes.
    #[error("a frame length of {len} bytes, more than the {max} the port takes")]
    TooLong {
        /// The announced length.
        len: u32,
        /// The most the port takes.
        max: usize,
    },
}

impl DeframeError {
    /// The drop reason the frame that broke the stream is counted under.
    pub fn drop_reason(self) -> DropReason {
        DropReason::SocketBadLength
    }
}

/// Cuts a byte stream of length-prefixed frames into frames, in one fixed buffer: a frame may
/// arrive split over any number of reads, and one read may bring many frames. Frames are
/// handed out as slices of the buffer; nothing is allocated after [`StreamDeframer::new`].
#[derive(Debug)]
pub struct StreamDeframer {
    buf: Box<[u8]>,
    /// The first byte not handed out yet.
    start: usize,
    /// The end of the bytes received.
    end: usize,
    max_frame: usize,
    failed: Option<DeframeError>,
}

impl StreamDeframer {
    /// A deframer for frames of 1 to `max_frame` bytes (at most [`MAX_STREAM_FRAME`]).
    pub fn new(max_frame: usize) -> StreamDeframer {
        let max_frame = max_frame.clamp(1, MAX_STREAM_FRAME);
        let capacity = (2 * (LENGTH_LEN + max_frame)).max(MIN_BUFFER);
        StreamDeframer { buf: vec![0u8; capacity].into_boxed_slice(), start: 0, end: 0, max_frame, failed: None }
    }

    /// The longest frame it takes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Bytes received but not handed out as frames yet.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Where the next bytes go: read into it, then [`StreamDeframer::commit`] how many came.
    /// Never empty while the frames already received are taken out first with
    /// [`StreamDeframer::next_frame`] (the buffer holds two of the longest frames).
    pub fn read_area(&mut self) -> &mut [u8] {
        if self.start > 0 && self.buf.len() - self.end < LENGTH_LEN + self.max_frame {
            // Move the partial frame to the front: at most one frame's bytes are copied.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were written into [`StreamDeframer::read_area`].
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Copies as much of `bytes` in as fits; returns how many were taken (all of them while the
    /// frames are taken out as they complete).
    pub fn feed(&mut self, bytes: &[u8]) -> usize {
        let area = self.read_area();
        let n = bytes.len().min(area.len());
        area[..n].copy_from_slice(&bytes[..n]);
        self.commit(n);
        n
    }

    /// The next whole frame, `None` until one has arrived, or the error that broke the stream
    /// (then always that error).
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, DeframeError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.end - self.start < LENGTH_LEN {
            return Ok(None);
        }
        let mut length = [0u8; LENGTH_LEN];
        length.copy_from_slice(&self.buf[self.start..self.start + LENGTH_LEN]);
        let len = u32::from_be_bytes(length);
        let error = match len as usize {
            0 => Some(DeframeError::ZeroLength),
            n if n > self.max_frame => Some(DeframeError::TooLong { len, max: self.max_frame }),
            _ => None,
        };
        if let Some(e) = error {
            self.failed = Some(e);
            return Err(e);
        }
        let frame_start = self.start + LENGTH_LEN;
        let frame_end = frame_start + len as usize;
        if frame_end > self.end {
            return Ok(None);
        }
        if frame_end == self.end {
            (self.start, self.end) = (0, 0);
        } else {
            self.start = frame_end;
        }
        Ok(Some(&self.buf[frame_start..frame_end]))
    }
}

/// What a [`StreamPort`] tells whoever attached it when its connection ends: `None` when the
/// peer closed it (or it broke), or the drop reason of the frame that made the port close it.
pub type ConnectionClosed = Option<DropReason>;

/// One connected QEMU `-netdev stream` peer as a bridge port. Frames are read through a
/// [`StreamDeframer`] and written behind their length; a write the socket takes only part of
/// keeps the rest in a buffer that goes out before anything else, so the stream never breaks
/// mid-frame (while it is not empty, new frames are refused with `WouldBlock`: `no_room`).
///
/// When the peer closes the connection, or sends a malformed length, the port stops reading
/// and writing (sends fail with `ENXIO`, counted `link_down`) and sends one
/// [`ConnectionClosed`] on the channel it was given.
#[derive(Debug)]
pub struct StreamPort {
    stream: UnixStream,
    deframer: StreamDeframer,
    /// The unsent tail of a frame the socket took only part of.
    pending: Box<[u8]>,
    pending_start: usize,
    pending_end: usize,
    closed: bool,
    on_close: Sender<ConnectionClosed>,
}

impl StreamPort {
    /// A port over the connected `stream` (made non-blocking here), taking frames of up to
    /// `max_frame` bytes, telling `on_close` when the connection ends.
    pub fn new(stream: UnixStream, max_frame: usize, on_close: Sender<ConnectionClosed>) -> io::Result<StreamPort> {
        stream.set_nonblocking(true)?;
        Ok(StreamPort {
            stream,
            deframer: StreamDeframer::new(max_frame),
            pending: vec![0u8; LENGTH_LEN + MAX_STREAM_FRAME].into_boxed_slice(),
            pending_start: 0,
            pending_end: 0,
            closed: false,
            on_close,
        })
    }

    /// Stops using the connection and says why, once.
    fn close(&mut self, why: ConnectionClosed) {
        if self.closed {
            return;
        }
        self.closed = true;
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let _ = self.on_close.try_send(why);
    }

    /// Sends what is left of a partly written frame; `Ok(true)` once nothing is left.
    fn flush_pending(&mut self) -> io::Result<bool> {
        while self.pending_start < self.pending_end {
            let rest = [IoSlice::new(&self.pending[self.pending_start..self.pending_end])];
            match send_parts(self.stream.as_raw_fd(), &rest) {
                Ok(n) => self.pending_start += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        (self.pending_start, self.pending_end) = (0, 0);
        Ok(true)
    }

    /// Keeps the bytes of `parts` from `sent` on, which the socket did not take.
    fn keep_unsent(&mut self, parts: &[IoSlice<'_>], mut sent: usize) {
        let mut at = 0;
        for part in parts {
            if sent >= part.len() {
                sent -= part.len();
                continue;
            }
            let rest = &part[sent..];
            sent = 0;
            let n = rest.len().min(self.pending.len() - at);
            self.pending[at..at + n].copy_from_slice(&rest[..n]);
            at += n;
        }
        (self.pending_start, self.pending_end) = (0, at);
    }

    fn closed_error() -> io::Error {
        io::Error::from_raw_os_error(libc::ENXIO)
    }
}

/// Sends `parts` on the stream `fd` without blocking and without `SIGPIPE`.
fn send_parts(fd: RawFd, parts: &[IoSlice<'_>]) -> io::Result<usize> {
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    Ok(sendmsg::<UnixAddr>(fd, parts, &[], flags, None)?)
}

impl Port for StreamPort {
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.stream.as_raw_fd())
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> io::Result<()> {
        if self.closed {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        if let Err(e) = self.flush_pending() {
            if e.kind() != io::ErrorKind::Interrupted {
                self.close(None);
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        loop {
            match self.deframer.next_frame() {
                Ok(Some(frame)) => {
                    let area = buf.receive_area();
                    let n = frame.len().min(area.len());
                    area[..n].copy_from_slice(&frame[..n]);
                    buf.set_received(n);
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => {
                    self.close(Some(e.drop_reason()));
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
            match (&self.stream).read(self.deframer.read_area()) {
                Ok(0) => {
                    // The peer closed the connection (a frame cut short with it is lost).
                    self.close(None);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n) => self.deframer.commit(n),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return Err(e),
                Err(e) => {
                    self.close(None);
                    return Err(e);
                }
            }
        }
    }

    fn send(&mut self, parts: &[IoSlice<'_>], _offload: &VnetHdr) -> io::Result<()> {
        if self.closed {
            return Err(StreamPort::closed_error());
        }
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len == 0 || len > MAX_STREAM_FRAME {
            return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
        }
        match self.flush_pending() {
            Ok(true) => {}
            Ok(false) => return Err(io::ErrorKind::WouldBlock.into()),
            Err(_) => {
                self.close(None);
                return Err(StreamPort::closed_error());
            }
        }
        let length = (len as u32).to_be_bytes();
        let mut iov = [IoSlice::new(&[]); MAX_PARTS + 1];
        let framed = with_vnet_header(&length, parts, &mut iov);
        loop {
            match send_parts(self.stream.as_raw_fd(), framed) {
                Ok(n) if n == LENGTH_LEN + len => return Ok(()),
                Ok(n) => {
                    // The frame counts as sent: the rest leaves before any other.
                    self.keep_unsent(framed, n);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Nothing was written: the stream is whole and the frame a `no_room` drop.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(_) => {
                    self.close(None);
                    return Err(StreamPort::closed_error());
                }
            }
        }
    }
}

/// A QEMU `-netdev dgram` peer as a bridge port: a datagram socket bound at the port's path,
/// one frame per datagram. Frames go to the address the last datagram came from (QEMU's
/// `local` path); until one has come, sends fail with `ENXIO` (counted `link_down`).
#[derive(Debug)]
pub struct DgramPort {
    socket: UnixDatagram,
    peer: Option<UnixAddr>,
}

impl DgramPort {
    /// A port over the bound `socket` (made non-blocking here).
    pub fn new(socket: UnixDatagram) -> io::Result<DgramPort> {
        socket.set_nonblocking(true)?;
        Ok(DgramPort { socket, peer: None })
    }

    /// The address replies go to, once a peer has been heard from.
    pub fn peer(&self) -> Option<&UnixAddr> {
        self.peer.as_ref()
    }
}

impl Port for DgramPort {
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.socket.as_raw_fd())
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> io::Result<()> {
        let (len, from) = recvfrom::<UnixAddr>(self.socket.as_raw_fd(), buf.receive_area())?;
        // An unbound sender cannot be answered: replies keep going where they went.
        if let Some(from) = from.filter(|a| a.path().is_some() || a.as_abstract().is_some()) {
            self.peer = Some(from);
        }
        buf.set_received(len);
        Ok(())
    }

    fn send(&mut self, parts: &[IoSlice<'_>], _offload: &VnetHdr) -> io::Result<()> {
        let Some(peer) = self.peer.as_ref() else {
            return Err(io::Error::from_raw_os_error(libc::ENXIO));
        };
        sendmsg(self.socket.as_raw_fd(), parts, &[], MsgFlags::MSG_DONTWAIT, Some(peer))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn framed(frames: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&(f.len() as u32).to_be_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    fn drain(d: &mut StreamDeframer) -> Result<Vec<Vec<u8>>, DeframeError> {
        let mut frames = Vec::new();
        while let Some(f) = d.next_frame()? {
            frames.push(f.to_vec());
        }
        Ok(frames)
    }

    #[test]
    fn several_frames_in_one_read_come_out_in_order() {
        let mut d = StreamDeframer::new(1522);
        let bytes = framed(&[b"first frame", b"2", &[7u8; 1500]]);
        assert_eq!(d.feed(&bytes), bytes.len());
        let frames = drain(&mut d).unwrap();
        assert_eq!(frames, vec![b"first frame".to_vec(), b"2".to_vec(), vec![7u8; 1500]]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn a_frame_split_anywhere_comes_out_whole_once() {
        let bytes = framed(&[b"abcdefghij", b"klm"]);
        // Every split point, the length included, and one byte at a time.
        for cut in 0..=bytes.len() {
            let mut d = StreamDeframer::new(100);
            d.feed(&bytes[..cut]);
            let mut frames = drain(&mut d).unwrap();
            d.feed(&bytes[cut..]);
            frames.extend(drain(&mut d).unwrap());
            assert_eq!(frames, vec![b"abcdefghij".to_vec(), b"klm".to_vec()], "cut at {cut}");
        }
        let mut d = StreamDeframer::new(100);
        let mut frames = Vec::new();
        for byte in &bytes {
            d.feed(std::slice::from_ref(byte));
            frames.extend(drain(&mut d).unwrap());
        }
        assert_eq!(frames.len(), 2);
    }

    #[test]
    fn a_long_stream_of_partial_reads_reuses_the_buffer() {
        let mut d = StreamDeframer::new(MAX_STREAM_FRAME);
        let frame = vec![0x5au8; 40_000];
        let bytes = framed(&[&frame, &frame, &frame, &frame, &frame]);
        let mut count = 0;
        for chunk in bytes.chunks(7_777) {
            assert_eq!(d.feed(chunk), chunk.len(), "there is always room once frames are taken out");
            for f in drain(&mut d).unwrap() {
                assert_eq!(f, frame);
                count += 1;
            }
        }
        assert_eq!(count, 5);
    }

    #[test]
    fn a_zero_length_breaks_the_stream_for_good() {
        let mut d = StreamDeframer::new(1522);
        d.feed(&framed(&[b"ok"]));
        d.feed(&[0, 0, 0, 0, 1, 2, 3]);
        assert_eq!(d.next_frame(), Ok(Some(&b"ok"[..])));
        assert_eq!(d.next_frame(), Err(DeframeError::ZeroLength));
        d.feed(&framed(&[b"later"]));
        assert_eq!(d.next_frame(), Err(DeframeError::ZeroLength), "nothing after it is trusted");
    }

    #[test]
    fn a_length_past_the_port_mtu_or_65535_is_refused_before_its_bytes_arrive() {
        let mut d = StreamDeframer::new(max_frame_for_mtu(1500));
        assert_eq!(d.max_frame(), 1522);
        d.feed(&1523u32.to_be_bytes());
        assert_eq!(d.next_frame(), Err(DeframeError::TooLong { len: 1523, max: 1522 }));
        let mut d = StreamDeframer::new(1522);
        d.feed(&framed(&[&[1u8; 1522]]));
        assert_eq!(d.next_frame().unwrap().map(<[u8]>::len), Some(1522), "exactly the most is fine");
        let mut d = StreamDeframer::new(usize::MAX);
        assert_eq!(d.max_frame(), MAX_STREAM_FRAME);
        d.feed(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_frame(), Err(DeframeError::TooLong { len: u32::MAX, max: MAX_STREAM_FRAME }));
        assert_eq!(max_frame_for_mtu(65_521), MAX_STREAM_FRAME);
    }

    fn connected(max_frame: usize) -> (StreamPort, UnixStream, crossbeam_channel::Receiver<ConnectionClosed>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        (StreamPort::new(ours, max_frame, tx).unwrap(), theirs, rx)
    }

    #[test]
    fn a_stream_port_reads_frames_and_writes_them_behind_their_length() {
        let (mut port, mut peer, closed) = connected(1522);
        peer.write_all(&framed(&[b"one", b"two"])).unwrap();
        let mut buf = FrameBuf::new(2048);
        port.recv(&mut buf).unwrap();
        assert_eq!(buf.frame(), b"one");
        port.recv(&mut buf).unwrap();
        assert_eq!(buf.frame(), b"two");
        assert_eq!(port.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        port.send(&[IoSlice::new(b"ab"), IoSlice::new(b"cd")], &VnetHdr::default()).unwrap();
        let mut got = [0u8; 8];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, &[0, 0, 0, 4, b'a', b'b', b'c', b'd']);
        assert!(closed.is_empty());
        drop(peer);
        assert_eq!(port.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(closed.try_recv(), Ok(None), "the peer closed it");
        let err = port.send(&[IoSlice::new(b"x")], &VnetHdr::default()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENXIO));
    }

    #[test]
    fn a_malformed_length_closes_the_connection_and_says_why() {
        let (mut port, mut peer, closed) = connected(1522);
        peer.write_all(&framed(&[b"good"])).unwrap();
        peer.write_all(&[0, 0, 0xff, 0xff]).unwrap();
        let mut buf = FrameBuf::new(2048);
        port.recv(&mut buf).unwrap();
        assert_eq!(buf.frame(), b"good");
        assert_eq!(port.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(closed.try_recv(), Ok(Some(DropReason::SocketBadLength)));
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "the peer sees the connection end");
        assert_eq!(port.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock, "said once");
    }

    #[test]
    fn a_full_socket_never_gets_half_a_frame_followed_by_another() {
        let (mut port, mut peer, _closed) = connected(MAX_STREAM_FRAME);
        let frame = vec![0x33u8; 60_000];
        let mut sent = 0;
        let mut refused = 0;
        for _ in 0..200 {
            match port.send(&[IoSlice::new(&frame)], &VnetHdr::default()) {
                Ok(()) => sent += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(refused > 0, "the socket buffer filled up");
        // Read everything while the port keeps flushing what it kept: whole frames only.
        peer.set_nonblocking(true).unwrap();
        let mut d = StreamDeframer::new(MAX_STREAM_FRAME);
        let mut received = 0;
        let mut idle = 0;
        while received < sent && idle < 1000 {
            let _ = port.flush_pending();
            match peer.read(d.read_area()) {
                Ok(n) => {
                    d.commit(n);
                    while let Some(f) = d.next_frame().unwrap() {
                        assert_eq!(f, &frame[..]);
                        received += 1;
                    }
                    idle = 0;
                }
                Err(_) => idle += 1,
            }
        }
        assert_eq!(received, sent);
    }

    #[test]
    fn a_dgram_port_answers_the_last_peer_it_heard_and_no_one_before() {
        let dir = std::env::temp_dir().join(format!("vswitchd-dgram-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut port = DgramPort::new(UnixDatagram::bind(dir.join("port")).unwrap()).unwrap();
        let err = port.send(&[IoSlice::new(b"early")], &VnetHdr::default()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENXIO));
        let a = UnixDatagram::bind(dir.join("a")).unwrap();
        let b = UnixDatagram::bind(dir.join("b")).unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        }
        a.send_to(b"from a", dir.join("port")).unwrap();
        let mut buf = FrameBuf::new(2048);
        port.recv(&mut buf).unwrap();
        assert_eq!(buf.frame(), b"from a");
        port.send(&[IoSlice::new(b"to "), IoSlice::new(b"a")], &VnetHdr::default()).unwrap();
        let mut got = [0u8; 16];
        assert_eq!(a.recv(&mut got).unwrap(), 4);
        b.send_to(b"from b", dir.join("port")).unwrap();
        port.recv(&mut buf).unwrap();
        port.send(&[IoSlice::new(b"to b")], &VnetHdr::default()).unwrap();
        let n = b.recv(&mut got).unwrap();
        assert_eq!(&got[..n], b"to b");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
