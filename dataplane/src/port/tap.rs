//! TAP ports: vswitchd owns a `/dev/net/tun` device and exchanges Ethernet frames through its
//! fd; the kernel side of the device is the host's interface (in any namespace).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::{FrameBuf, MAX_PARTS, Port, with_vnet_header};
use crate::sys;
use crate::wire::{VnetHdr, vnet_hdr};

/// A TAP device held open by vswitchd, with a virtio-net header on every frame
/// (`IFF_VNET_HDR`). Closing it removes the device.
///
/// No offloads are requested from the kernel yet (`TUNSETOFFLOAD` stays 0), so frames read
/// from it are complete; frames written to it may carry partial checksums or GSO metadata,
/// which the kernel finishes.
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
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> io::Result<()> {
        let mut header = [0u8; vnet_hdr::LEN];
        let len = {
            let mut iov = [IoSliceMut::new(&mut header), IoSliceMut::new(buf.receive_area())];
            nix::sys::uio::readv(&self.fd, &mut iov)?
        };
        buf.set_received(len.saturating_sub(vnet_hdr::LEN));
        buf.offload = VnetHdr::parse(&header).unwrap_or_default();
        Ok(())
    }

    fn send(&mut self, parts: &[IoSlice<'_>], offload: &VnetHdr) -> io::Result<()> {
        let header = offload.emit();
        let mut iov = [IoSlice::new(&[]); MAX_PARTS + 1];
        nix::sys::uio::writev(&self.fd, with_vnet_header(&header, parts, &mut iov))?;
        Ok(())
    }

    fn carries_offload(&self) -> bool {
        true
    }
}
