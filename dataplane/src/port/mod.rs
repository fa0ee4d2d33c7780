//! Ports: how frames get in and out of the switch. A port moves bytes; it decides nothing.
//!
//! The event loop sees only [`Port`]: an fd to poll for readability, `recv` into a
//! [`FrameBuf`], and `send` from a list of slices (scatter-gather, so a tag or an offload
//! header can be put in front of a frame without copying it). Port kinds live in their own
//! modules: [`tap`] (`/dev/net/tun`), [`datagram`] (an in-process socket pair for tests and
//! benchmarks). Packet-socket, UDP-tunnel and bond ports implement the same trait.

pub mod datagram;
pub mod tap;

use std::fmt;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;

/// Bytes kept free in front of every received frame, so headers can be pushed (a VLAN tag, a
/// virtio-net header, an outer VXLAN/UDP/IP header) without moving the frame.
pub const HEADROOM: usize = 128;

/// The largest frame a port may hand over: a 64 KiB offloaded super-frame and its headers.
pub const MAX_FRAME_LEN: usize = 65_536 + 64;

/// A reusable receive buffer: headroom, then one frame.
#[derive(Clone)]
pub struct FrameBuf {
    storage: Box<[u8]>,
    start: usize,
    len: usize,
}

impl fmt::Debug for FrameBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameBuf").field("start", &self.start).field("len", &self.len).finish()
    }
}

impl FrameBuf {
    /// A buffer that holds frames of up to `max_frame_len` bytes behind [`HEADROOM`].
    pub fn new(max_frame_len: usize) -> FrameBuf {
        FrameBuf { storage: vec![0u8; HEADROOM + max_frame_len].into_boxed_slice(), start: HEADROOM, len: 0 }
    }

    /// The space a port receives into; call [`FrameBuf::set_received`] afterwards.
    pub fn receive_area(&mut self) -> &mut [u8] {
        self.start = HEADROOM;
        self.len = 0;
        &mut self.storage[HEADROOM..]
    }

    /// Records that the port wrote `len` bytes into the receive area.
    pub fn set_received(&mut self, len: usize) {
        self.len = len.min(self.storage.len() - HEADROOM);
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
    /// `WouldBlock`, or come back later).
    fn raw_fd(&self) -> RawFd;

    /// Receives one frame into `buf`. `WouldBlock` means nothing is waiting.
    fn recv(&mut self, buf: &mut FrameBuf) -> io::Result<()>;

    /// Sends one frame made of `parts`, in order.
    fn send(&mut self, parts: &[IoSlice<'_>]) -> io::Result<()>;
}
