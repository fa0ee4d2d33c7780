//! In-process ports over a Unix datagram socket pair: one end is a bridge port, the other is
//! held by a test or a benchmark. Real fds, so the real event loop runs, with no privileges.
//! A pair made [with offload](DatagramPort::pair_with_offload) puts a virtio-net header in
//! front of every frame, as a TAP with `IFF_VNET_HDR` does, to play a VM or a veth.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

use nix::sys::socket::{MsgFlags, UnixAddr, sendmsg};

use super::{FrameBuf, MAX_PARTS, Port, with_vnet_header};
use crate::wire::{VnetHdr, vnet_hdr};

/// The switch's end of a datagram pair.
#[derive(Debug)]
pub struct DatagramPort {
    socket: UnixDatagram,
    offload: bool,
}

impl DatagramPort {
    /// A port and the peer socket that plays the attached host (blocking, for tests).
    pub fn pair() -> io::Result<(DatagramPort, UnixDatagram)> {
        let (ours, theirs) = UnixDatagram::pair()?;
        ours.set_nonblocking(true)?;
        Ok((DatagramPort { socket: ours, offload: false }, theirs))
    }

    /// A pair whose messages are a virtio-net header and a frame.
    pub fn pair_with_offload() -> io::Result<(DatagramPort, UnixDatagram)> {
        let (port, peer) = DatagramPort::pair()?;
        Ok((DatagramPort { offload: true, ..port }, peer))
    }
}

impl Port for DatagramPort {
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.socket.as_raw_fd())
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> io::Result<()> {
        if !self.offload {
            let len = self.socket.recv(buf.receive_area())?;
            buf.set_received(len);
            return Ok(());
        }
        let mut header = [0u8; vnet_hdr::LEN];
        let len = {
            let mut iov = [io::IoSliceMut::new(&mut header), io::IoSliceMut::new(buf.receive_area())];
            nix::sys::socket::recvmsg::<()>(self.socket.as_raw_fd(), &mut iov, None, MsgFlags::MSG_DONTWAIT)?.bytes
        };
        buf.set_received_with_header(len, &header);
        Ok(())
    }

    fn send(&mut self, parts: &[IoSlice<'_>], offload: &VnetHdr) -> io::Result<()> {
        let header = offload.emit();
        let mut iov = [IoSlice::new(&[]); MAX_PARTS + 1];
        let parts = if self.offload { with_vnet_header(&header, parts, &mut iov) } else { parts };
        sendmsg::<UnixAddr>(self.socket.as_raw_fd(), parts, &[], MsgFlags::MSG_DONTWAIT, None)?;
        Ok(())
    }

    fn carries_offload(&self) -> bool {
        self.offload
    }
}
