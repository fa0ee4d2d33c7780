//! A port whose interface is absent (not created yet, or gone): it receives nothing and
//! refuses to send with `ENXIO`, which the event loop counts as `link_down`. The control plane
//! swaps in a real port when the interface (re)appears.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use super::{FrameBuf, Port};
use crate::wire::VnetHdr;

/// Stands in for a port whose interface is absent.
#[derive(Debug, Default)]
pub struct DetachedPort;

impl DetachedPort {
    /// One per worker thread: the I/O queues of a port whose interface is absent.
    pub fn queues(n: usize) -> Vec<Box<dyn Port>> {
        super::boxed((0..n).map(|_| DetachedPort).collect())
    }
}

impl Port for DetachedPort {
    fn raw_fd(&self) -> Option<RawFd> {
        None
    }

    fn recv(&mut self, _buf: &mut FrameBuf) -> io::Result<()> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn send(&mut self, _parts: &[IoSlice<'_>], _offload: &VnetHdr) -> io::Result<()> {
        Err(io::Error::from_raw_os_error(libc::ENXIO))
    }
}
