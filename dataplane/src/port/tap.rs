//! TAP ports: vswitchd owns a `/dev/net/tun` device and exchanges Ethernet frames through its
//! fd; the kernel side of the device is the host's interface (in any namespace).

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::{FrameBuf, Port};
use crate::sys;

/// A TAP device held open by vswitchd. Closing it removes the device.
#[derive(Debug)]
pub struct TapPort {
    fd: OwnedFd,
    name: String,
}

impl TapPort {
    /// Creates the TAP device `name` in the calling thread's network namespace. Fails if an
    /// interface of that name exists.
    pub fn create(name: &str) -> io::Result<TapPort> {
        let fd = sys::create_tap(name)?;
        Ok(TapPort { fd, name: name.to_string() })
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Port for TapPort {
    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> io::Result<()> {
        let len = nix::unistd::read(&self.fd, buf.receive_area())?;
        buf.set_received(len);
        Ok(())
    }

    fn send(&mut self, parts: &[IoSlice<'_>]) -> io::Result<()> {
        nix::sys::uio::writev(&self.fd, parts)?;
        Ok(())
    }
}
