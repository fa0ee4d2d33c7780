//! In-process ports over a Unix datagram socket pair: one end is a bridge port, the other is
//! held by a test or a benchmark. Real fds, so the real event loop runs, with no privileges.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

use nix::sys::socket::{MsgFlags, UnixAddr, sendmsg};

use super::{FrameBuf, Port};
use crate::wire::VnetHdr;

/// The switch's end of a datagram pair.
#[derive(Debug)]
pub struct DatagramPort {
    socket: UnixDatagram,
}

impl DatagramPort {
    /// A port and the peer socket that plays the attached host (blocking, for tests).
    pub fn pair() -> io::Result<(DatagramPort, UnixDatagram)> {
        let (ours, theirs) = UnixDatagram::pair()?;
        ours.set_nonblocking(true)?;
        Ok((DatagramPort { socket: ours }, theirs))
    }
}

impl Port for DatagramPort {
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.socket.as_raw_fd())
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> io::Result<()> {
        let len = self.socket.recv(buf.receive_area())?;
        buf.set_received(len);
        Ok(())
    }

    fn send(&mut self, parts: &[IoSlice<'_>], _offload: &VnetHdr) -> io::Result<()> {
        sendmsg::<UnixAddr>(self.socket.as_raw_fd(), parts, &[], MsgFlags::MSG_DONTWAIT, None)?;
        Ok(())
    }
}
