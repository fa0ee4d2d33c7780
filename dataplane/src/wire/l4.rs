//! Transport checksums of the IP packet inside an Ethernet frame: verify, and finish one the
//! sender left partial.
//!
//! A partial (offloaded) TCP or UDP checksum holds the folded, uncomplemented pseudo-header
//! sum; the device that transmits is meant to finish it. When a frame crosses from a kernel
//! device into userspace without its offload metadata — a VXLAN datagram received on a UDP
//! socket after crossing a veth, for instance — nothing says so. [`finish_partial`] tells the
//! cases apart without guessing: a checksum that verifies is left alone; one that does not, and
//! holds exactly the pseudo-header sum, is finished; anything else is left for the receiver to
//! reject.

use super::checksum::{fold, sum};
use super::ethernet::EtherType;
use super::vlan::skip_tags;

/// What [`finish_partial`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Not a TCP/UDP packet over IPv4/IPv6 it could read (or an IP fragment).
    NotApplicable,
    /// The checksum verified (or UDP over IPv4 without one).
    Valid,
    /// The checksum was partial and is now complete.
    Finished,
    /// The checksum is wrong and not partial: left as it is.
    Invalid,
}

/// Where the transport header of a TCP/UDP packet in a frame is, and its pseudo-header sum.
struct Located {
    pseudo: u32,
    protocol: u8,
    ipv6: bool,
    l3_start: usize,
    l4_start: usize,
    l4_len: usize,
}

fn locate(frame: &[u8]) -> Option<Located> {
    let (ethertype, at) = skip_tags(frame).ok()?;
    let l3 = &frame[at..];
    match ethertype {
        EtherType::Ipv4 if l3.len() >= 20 && l3[0] >> 4 == 4 => {
            let ihl = usize::from(l3[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([l3[2], l3[3]]));
            let fragmented = u16::from_be_bytes([l3[6], l3[7]]) & 0x3fff != 0;
            if ihl < 20 || total < ihl || total > l3.len() || fragmented {
                return None;
            }
            let protocol = l3[9];
            let l4_len = total - ihl;
            let mut pseudo = sum(&l3[12..20], 0);
            pseudo = sum(&[0, protocol], pseudo);
            pseudo = sum(&(l4_len as u16).to_be_bytes(), pseudo);
            Some(Located { pseudo, protocol, ipv6: false, l3_start: at, l4_start: at + ihl, l4_len })
        }
        EtherType::Ipv6 if l3.len() >= 40 && l3[0] >> 4 == 6 => {
            let payload = usize::from(u16::from_be_bytes([l3[4], l3[5]]));
            if 40 + payload > l3.len() {
                return None;
            }
            let protocol = l3[6]; // extension headers are not followed
            let mut pseudo = sum(&l3[8..40], 0);
            pseudo = sum(&(payload as u32).to_be_bytes(), pseudo);
            pseudo = sum(&[0, 0, 0, protocol], pseudo);
            Some(Located { pseudo, protocol, ipv6: true, l3_start: at, l4_start: at + 40, l4_len: payload })
        }
        _ => None,
    }
}

/// Offload metadata that lets a kernel device cut the TCP super-frame in `frame` into
/// segments that fit `mtu`: a GSO header, with the checksum field put in the partial form the
/// segmentation expects. `None` if `frame` is not TCP over IPv4/IPv6.
pub fn tcp_gso(frame: &mut [u8], mtu: u32) -> Option<super::VnetHdr> {
    use super::vnet_hdr::{F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6};
    let at = locate(frame).filter(|l| l.protocol == 6 && l.l4_len >= 20)?;
    let tcp_header = usize::from(frame[at.l4_start + 12] >> 4) * 4;
    let headers = at.l4_start - at.l3_start + tcp_header;
    let segment = (mtu as usize).checked_sub(headers).filter(|s| *s > 0)?;
    let field = at.l4_start + 16;
    frame[field..field + 2].copy_from_slice(&fold(at.pseudo).to_be_bytes());
    Some(super::VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if at.ipv6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: (at.l4_start + tcp_header) as u16,
        gso_size: u16::try_from(segment).ok()?,
        csum_start: at.l4_start as u16,
        csum_offset: 16,
    })
}

/// Verifies the TCP/UDP checksum in `frame` and finishes it if it was left partial.
pub fn finish_partial(frame: &mut [u8]) -> Finish {
    let Some(at) = locate(frame) else { return Finish::NotApplicable };
    let field = match at.protocol {
        6 if at.l4_len >= 20 => at.l4_start + 16,
        17 if at.l4_len >= 8 => at.l4_start + 6,
        _ => return Finish::NotApplicable,
    };
    let l4 = &frame[at.l4_start..at.l4_start + at.l4_len];
    let stored = u16::from_be_bytes([frame[field], frame[field + 1]]);
    if at.protocol == 17 && stored == 0 && !at.ipv6 {
        return Finish::Valid; // UDP over IPv4 may carry no checksum
    }
    if fold(sum(l4, at.pseudo)) == 0xffff {
        return Finish::Valid;
    }
    if stored != fold(at.pseudo) {
        return Finish::Invalid;
    }
    let mut complete = !fold(sum(l4, 0));
    if at.protocol == 17 && complete == 0 {
        complete = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&complete.to_be_bytes());
    Finish::Finished
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(vlan: bool) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut out = Vec::new();
        if vlan {
            b.single_vlan(etherparse::VlanId::try_new(10).unwrap())
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(40000, 80, 7, 1000)
                .write(&mut out, b"payload bytes")
                .unwrap();
        } else {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(40000, 80, 7, 1000).write(&mut out, b"payload bytes").unwrap();
        }
        out
    }

    /// The frame with its checksum field replaced by the partial form.
    fn make_partial(frame: &mut [u8], l3: usize) {
        let field = l3 + 20 + 16;
        let mut pseudo = sum(&frame[l3 + 12..l3 + 20], 0);
        pseudo = sum(&[0, 6], pseudo);
        let l4_len = frame.len() - l3 - 20;
        pseudo = sum(&(l4_len as u16).to_be_bytes(), pseudo);
        frame[field..field + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
    }

    #[test]
    fn a_valid_checksum_is_left_alone() {
        let mut f = tcp(false);
        let before = f.clone();
        assert_eq!(finish_partial(&mut f), Finish::Valid);
        assert_eq!(f, before);
    }

    #[test]
    fn a_partial_checksum_is_finished_with_and_without_a_vlan_tag() {
        for (vlan, l3) in [(false, 14), (true, 18)] {
            let good = tcp(vlan);
            let mut f = good.clone();
            make_partial(&mut f, l3);
            assert_ne!(f, good);
            assert_eq!(finish_partial(&mut f), Finish::Finished);
            assert_eq!(f, good, "finished checksum must equal etherparse's");
        }
    }

    #[test]
    fn a_corrupted_checksum_is_not_touched() {
        let mut f = tcp(false);
        f[14 + 20 + 16] ^= 0x5a;
        let before = f.clone();
        assert_eq!(finish_partial(&mut f), Finish::Invalid);
        assert_eq!(f, before);
    }

    #[test]
    fn a_tcp_super_frame_gets_a_gso_header_for_the_mtu() {
        let mut f = tcp(true);
        let h = tcp_gso(&mut f, 1450).unwrap();
        assert_eq!((h.gso_type, h.csum_start, h.csum_offset), (crate::wire::vnet_hdr::GSO_TCPV4, 38, 16));
        assert_eq!(h.gso_size, 1450 - 20 - 20, "the MTU less IPv4 and TCP headers (the tag does not count)");
        assert_eq!(h.hdr_len, 18 + 20 + 20);
        // The checksum is now partial: finishing it gives back etherparse's.
        assert_eq!(finish_partial(&mut f), Finish::Finished);
        assert_eq!(f, tcp(true));
        assert!(tcp_gso(&mut [0u8; 60], 1500).is_none());
    }

    #[test]
    fn ipv6_udp_and_odd_frames() {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .udp(1, 2)
            .write(&mut out, b"abc")
            .unwrap();
        assert_eq!(finish_partial(&mut out), Finish::Valid);
        assert_eq!(finish_partial(&mut [0u8; 10]), Finish::NotApplicable);
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.resize(42, 0);
        assert_eq!(finish_partial(&mut arp), Finish::NotApplicable);
        let f = tcp(false);
        for cut in 0..f.len() {
            let mut g = f[..cut].to_vec();
            let _ = finish_partial(&mut g);
        }
    }
}
