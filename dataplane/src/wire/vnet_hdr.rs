//! The virtio-net header (`struct virtio_net_hdr`, 10 bytes, host byte order for the legacy
//! layout the kernel uses by default): the offload metadata that TAP devices opened with
//! `IFF_VNET_HDR` and packet sockets with `PACKET_VNET_HDR` put in front of every frame.
//!
//! It says whether the transport checksum is still partial (`NEEDS_CSUM`: the field holds only
//! the pseudo-header sum, to be completed over `csum_start..` and stored at
//! `csum_start + csum_offset`) and whether the frame is a GSO super-frame to be cut into
//! `gso_size` segments. Kernel virtual devices (veth, a VM's TAP) hand frames over in exactly
//! this state; forwarding them as they are without the header is how userspace switches break
//! TCP while ping still works.

use super::Error;

/// Bytes in the header.
pub const LEN: usize = 10;

/// The checksum is partial and must be completed.
pub const F_NEEDS_CSUM: u8 = 1;
/// The checksum has been checked already.
pub const F_DATA_VALID: u8 = 2;

/// Not a GSO frame.
pub const GSO_NONE: u8 = 0;
/// TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// UDP fragmentation offload (legacy).
pub const GSO_UDP: u8 = 3;
/// TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// UDP segmentation offload.
pub const GSO_UDP_L4: u8 = 5;
/// Flag bit: the TCP stream uses ECN.
pub const GSO_ECN: u8 = 0x80;

mod field {
    use std::ops::Range;
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: Range<usize> = 2..4;
    pub const GSO_SIZE: Range<usize> = 4..6;
    pub const CSUM_START: Range<usize> = 6..8;
    pub const CSUM_OFFSET: Range<usize> = 8..10;
}

/// A parsed virtio-net header. The all-zero value means "a plain, complete frame".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM`, `F_DATA_VALID`.
    pub flags: u8,
    /// `GSO_*`, possibly with `GSO_ECN`.
    pub gso_type: u8,
    /// Length of the headers ahead of the payload (a hint; may be 0).
    pub hdr_len: u16,
    /// Payload bytes per segment for GSO frames.
    pub gso_size: u16,
    /// Where checksumming starts, from the first byte of the Ethernet frame.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

fn u16_at(bytes: &[u8], range: std::ops::Range<usize>) -> u16 {
    u16::from_ne_bytes([bytes[range.start], bytes[range.start + 1]])
}

impl VnetHdr {
    /// Parses the first [`LEN`] bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<VnetHdr, Error> {
        if bytes.len() < LEN {
            return Err(Error::Truncated { len: bytes.len(), need: LEN });
        }
        Ok(VnetHdr {
            flags: bytes[field::FLAGS],
            gso_type: bytes[field::GSO_TYPE],
            hdr_len: u16_at(bytes, field::HDR_LEN),
            gso_size: u16_at(bytes, field::GSO_SIZE),
            csum_start: u16_at(bytes, field::CSUM_START),
            csum_offset: u16_at(bytes, field::CSUM_OFFSET),
        })
    }

    /// The header's wire form.
    pub fn emit(&self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[field::FLAGS] = self.flags;
        out[field::GSO_TYPE] = self.gso_type;
        out[field::HDR_LEN].copy_from_slice(&self.hdr_len.to_ne_bytes());
        out[field::GSO_SIZE].copy_from_slice(&self.gso_size.to_ne_bytes());
        out[field::CSUM_START].copy_from_slice(&self.csum_start.to_ne_bytes());
        out[field::CSUM_OFFSET].copy_from_slice(&self.csum_offset.to_ne_bytes());
        out
    }

    /// A GSO super-frame.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// The transport checksum is partial.
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// Whether the header can describe a frame of `len` bytes: a known GSO type with a
    /// segment size, and a partial checksum whose field lies inside the frame. Anything else
    /// came from a guest or a broken driver; a kernel device would refuse it at the next write.
    pub fn fits(&self, len: usize) -> bool {
        if self.is_gso() {
            let size = usize::from(self.gso_size);
            // What a kernel device refuses too (`virtio_net_hdr_to_skb`): 0xffff means
            // "by fragments", and a segmented frame's partial checksum must be the transport's.
            let sane = size != usize::from(u16::MAX)
                && match self.gso_type & !GSO_ECN {
                    // Below every real MSS, one frame would become a thousand segments.
                    GSO_TCPV4 | GSO_TCPV6 => {
                        size >= crate::gso::MIN_TCP_SEGMENT && (!self.needs_csum() || self.csum_offset == 16)
                    }
                    // More datagrams than Linux lets one UDP_SEGMENT send carry.
                    GSO_UDP_L4 => {
                        size > 0
                            && len.div_ceil(size) <= crate::gso::MAX_UDP_SEGMENTS + 1
                            && self.needs_csum()
                            && self.csum_offset == 6
                    }
                    GSO_UDP => size > 0,
                    _ => false,
                };
            if !sane {
                return false;
            }
        }
        !self.needs_csum() || usize::from(self.csum_start) + usize::from(self.csum_offset) + 2 <= len
    }

    /// The header for the same frame after `delta` bytes were inserted (positive) or removed
    /// (negative) ahead of the network header, as when a VLAN tag is pushed or popped.
    pub fn shifted(self, delta: i32) -> VnetHdr {
        let move_by = |v: u16| u16::try_from((i32::from(v) + delta).max(0)).unwrap_or(u16::MAX);
        VnetHdr {
            csum_start: if self.needs_csum() { move_by(self.csum_start) } else { self.csum_start },
            hdr_len: if self.hdr_len != 0 { move_by(self.hdr_len) } else { 0 },
            ..self
        }
    }

    /// Completes a partial checksum in `frame` in software and returns the header of the now
    /// complete frame. Returns `None` (and leaves `frame` alone) if the offsets do not fit.
    pub fn complete_checksum(&self, frame: &mut [u8]) -> Option<VnetHdr> {
        if !self.needs_csum() {
            return Some(*self);
        }
        let start = usize::from(self.csum_start);
        let at = start.checked_add(usize::from(self.csum_offset))?;
        if at + 2 > frame.len() || start > at {
            return None;
        }
        // The field holds the pseudo-header sum; summing it with the rest gives the total.
        let sum = !super::checksum::fold(super::checksum::sum(&frame[start..], 0));
        frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        Some(VnetHdr { flags: (self.flags & !F_NEEDS_CSUM) | F_DATA_VALID, ..*self })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.emit()).unwrap(), h);
        assert!(h.is_gso() && h.needs_csum());
        assert!(!VnetHdr { gso_type: GSO_ECN, ..Default::default() }.is_gso());
        assert_eq!(VnetHdr::parse(&[0; 9]).unwrap_err(), Error::Truncated { len: 9, need: 10 });
    }

    #[test]
    fn headers_that_cannot_describe_the_frame_are_told_apart() {
        let tso = VnetHdr { gso_type: GSO_TCPV4, gso_size: 1448, ..VnetHdr::default() };
        assert!(tso.fits(100) && VnetHdr::default().fits(0));
        assert!(!VnetHdr { gso_size: 0, ..tso }.fits(100), "GSO without a segment size");
        assert!(!VnetHdr { gso_size: 63, ..tso }.fits(100), "a segment size below any real MSS");
        assert!(!VnetHdr { gso_size: u16::MAX, ..tso }.fits(100), "GSO by fragments");
        assert!(
            !VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..tso }.fits(100),
            "not TCP's checksum"
        );
        let uso = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            gso_size: 100,
            csum_start: 34,
            csum_offset: 6,
            ..VnetHdr::default()
        };
        assert!(!VnetHdr { flags: 0, ..uso }.fits(12_000), "UDP segmentation without a partial checksum");
        assert!(uso.fits(12_000) && !uso.fits(20_000), "more than 128 datagrams in one frame");
        assert!(!VnetHdr { gso_type: 2, ..tso }.fits(100), "an unknown GSO type");
        let partial = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 16, ..VnetHdr::default() };
        assert!(partial.fits(52) && !partial.fits(51));
        assert!(!VnetHdr { csum_start: u16::MAX, csum_offset: u16::MAX, ..partial }.fits(70_000));
    }

    #[test]
    fn layout_is_the_kernels() {
        let h = VnetHdr {
            flags: 1,
            gso_type: 4,
            hdr_len: 0x0102,
            gso_size: 0x0304,
            csum_start: 0x0506,
            csum_offset: 0x0708,
        };
        let b = h.emit();
        assert_eq!((b[0], b[1]), (1, 4));
        assert_eq!(u16::from_ne_bytes([b[2], b[3]]), 0x0102);
        assert_eq!(u16::from_ne_bytes([b[8], b[9]]), 0x0708);
    }

    #[test]
    fn shifting_moves_offsets_that_are_in_use() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let pushed = h.shifted(4);
        assert_eq!((pushed.csum_start, pushed.hdr_len, pushed.csum_offset), (38, 70, 16));
        assert_eq!(pushed.shifted(-4), h);
        let plain = VnetHdr::default();
        assert_eq!(plain.shifted(4), plain);
    }

    /// A UDP/IPv4 frame whose checksum field holds only the pseudo-header sum, as a veth hands
    /// it over with CHECKSUM_PARTIAL; completing it must give what etherparse computes.
    #[test]
    fn completes_a_partial_udp_checksum() {
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(4000, 5000);
        let payload = b"partial checksum";
        let mut frame = Vec::new();
        builder.write(&mut frame, payload).unwrap();
        let expected = u16::from_be_bytes([frame[40], frame[41]]);
        // Replace the checksum by the (non-complemented) pseudo-header sum.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0, 17]);
        pseudo.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        let partial = super::super::checksum::fold(super::super::checksum::sum(&pseudo, 0));
        frame[40..42].copy_from_slice(&partial.to_be_bytes());
        let h = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..Default::default() };
        let done = h.complete_checksum(&mut frame).unwrap();
        assert_eq!(u16::from_be_bytes([frame[40], frame[41]]), expected);
        assert!(!done.needs_csum());
        assert!(VnetHdr { csum_start: 60, ..h }.complete_checksum(&mut frame).is_none());
    }
}
