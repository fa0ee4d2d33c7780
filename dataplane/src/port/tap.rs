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
/// vswitchd takes checksum and TCP segmentation offload from it (`TUNSETOFFLOAD`), so the host
/// stack hands over 64 KiB TCP super-frames with partial checksums instead of segmenting in
/// software; frames written to it may carry the same, which the kernel finishes. If the kernel
/// refuses an offload, a smaller set (down to none) is used and the refusal counted.
#[derive(Debug)]
pub struct TapPort {
    fd: OwnedFd,
    name: String,
    offloads: u32,
    refused: u32,
}

/// `TUN_F_*` offload bits.
pub mod offload {
    /// Partial checksums.
    pub const CSUM: u32 = 0x01;
    /// TCP over IPv4 segmentation.
    pub const TSO4: u32 = 0x02;
    /// TCP over IPv6 segmentation.
    pub const TSO6: u32 = 0x04;
    /// TSO with ECN.
    pub const TSO_ECN: u32 = 0x08;
    /// UDP over IPv4 segmentation (`UDP_SEGMENT` senders; Linux 6.2 and later).
    pub const USO4: u32 = 0x20;
    /// UDP over IPv6 segmentation.
    pub const USO6: u32 = 0x40;
}

/// The offload sets to try, best first: USO where the kernel has it (older kernels refuse the
/// unknown bits), TSO, then checksum offload alone, which TSO and USO need; the empty set
/// always works.
pub fn offload_candidates() -> [u32; 4] {
    use offload::*;
    [CSUM | TSO4 | TSO6 | TSO_ECN | USO4 | USO6, CSUM | TSO4 | TSO6 | TSO_ECN, CSUM, 0]
}

impl TapPort {
    /// Creates the TAP device `name` in the calling thread's network namespace. Fails if an
    /// interface of that name exists.
    pub fn create(name: &str) -> io::Result<TapPort> {
        let fd = sys::create_tap(name)?;
        TapPort::negotiate(fd, name)
    }

    /// Creates the multi-queue TAP device `name` with `queues` queues, one port per queue
    /// (with one queue, [`TapPort::create`]). The device goes away when the last is closed.
    pub fn create_queues(name: &str, queues: usize) -> io::Result<Vec<TapPort>> {
        sys::create_tap_queues(name, queues)?.into_iter().map(|fd| TapPort::negotiate(fd, name)).collect()
    }

    /// Agrees on offloads for a freshly attached TAP fd.
    fn negotiate(fd: OwnedFd, name: &str) -> io::Result<TapPort> {
        let mut offloads = 0;
        let mut refused = 0;
        for flags in offload_candidates() {
            match sys::set_tap_offload(std::os::fd::AsFd::as_fd(&fd), flags) {
                Ok(()) => {
                    offloads = flags;
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    refused += 1;
                    tracing::warn!(tap = name, flags, "the kernel refused these TAP offloads; trying fewer");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(TapPort { fd, name: name.to_string(), offloads, refused })
    }

    /// A TAP queue handed over by another vswitchd process: the offloads are negotiated again
    /// (the same ones are accepted again, so the device does not change under the hosts).
    pub fn adopt(fd: OwnedFd, name: &str) -> io::Result<TapPort> {
        TapPort::negotiate(fd, name)
    }

    /// The offloads the kernel accepted (`TUN_F_*`).
    pub fn offloads(&self) -> u32 {
        self.offloads
    }

    /// The device name.
    #[must_use]
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
        buf.set_received_with_header(len, &header);
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

    fn offload_report(&self) -> Option<super::OffloadReport> {
        Some(super::OffloadReport { flags: self.offloads, refused: self.refused })
    }

    fn clone_fd(&self) -> Option<io::Result<OwnedFd>> {
        Some(self.fd.try_clone())
    }
}

#[cfg(test)]
mod tests {
    use super::offload::*;
    use super::offload_candidates;

    #[test]
    fn offload_sets_go_from_most_to_none_and_segmentation_always_comes_with_checksums() {
        let sets = offload_candidates();
        assert_eq!(sets[0], CSUM | TSO4 | TSO6 | TSO_ECN | USO4 | USO6);
        assert_eq!(*sets.last().unwrap(), 0, "the empty set always works");
        for pair in sets.windows(2) {
            assert_eq!(pair[0] & pair[1], pair[1], "each fallback is a subset of the set before");
        }
        for set in sets {
            if set & (TSO4 | TSO6 | USO4 | USO6) != 0 {
                assert_ne!(set & CSUM, 0, "{set:#x}: segmentation needs checksum offload");
            }
        }
    }
}
