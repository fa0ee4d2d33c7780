//! The fields a transmit hash looks at — MAC addresses and EtherType, IP addresses, transport
//! ports — read from a frame without copying, past up to two VLAN tags. Anything that does not
//! parse simply yields fewer fields: a hash never fails.

use super::ethernet::{EtherType, Frame};
use super::vlan::skip_tags;

/// The flow identity of a frame, as far as it could be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowKey {
    /// Destination and source MAC as 48-bit integers.
    pub macs: (u64, u64),
    /// The EtherType after any VLAN tags.
    pub ethertype: u16,
    /// Source and destination IP address (IPv4 in the low 32 bits), if IP.
    pub ips: Option<(u128, u128)>,
    /// IP protocol number, if IP.
    pub protocol: u8,
    /// Source and destination TCP/UDP/SCTP port, if present and not a later fragment.
    pub ports: Option<(u16, u16)>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be128(b: &[u8]) -> Option<u128> {
    Some(u128::from_be_bytes(b.get(..16)?.try_into().ok()?))
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// Reads the flow key of `frame` (the Ethernet header must be whole to get anything at all).
pub fn flow_key(frame: &[u8]) -> FlowKey {
    let Ok(eth) = Frame::new_checked(frame) else { return FlowKey::default() };
    let mut key = FlowKey { macs: (eth.dst_addr().to_u64(), eth.src_addr().to_u64()), ..FlowKey::default() };
    let Ok((ethertype, at)) = skip_tags(frame) else {
        key.ethertype = u16::from(eth.ethertype());
        return key;
    };
    key.ethertype = u16::from(ethertype);
    let l3 = &frame[at..];
    let (protocol, l4, first_fragment) = match ethertype {
        EtherType::Ipv4 if l3.len() >= 20 && l3[0] >> 4 == 4 => {
            let ihl = usize::from(l3[0] & 0x0f) * 4;
            let (Some(src), Some(dst)) = (be32(&l3[12..]), be32(&l3[16..])) else { return key };
            key.ips = Some((u128::from(src), u128::from(dst)));
            let fragment_offset = be16(l3, 6).unwrap_or(0) & 0x1fff;
            (l3[9], l3.get(ihl..).unwrap_or(&[]), fragment_offset == 0)
        }
        EtherType::Ipv6 if l3.len() >= 40 && l3[0] >> 4 == 6 => {
            let (Some(src), Some(dst)) = (be128(&l3[8..]), be128(&l3[24..])) else { return key };
            key.ips = Some((src, dst));
            (l3[6], &l3[40..], true)
        }
        _ => return key,
    };
    key.protocol = protocol;
    // TCP, UDP, SCTP, UDP-Lite: ports first.
    if first_fragment && matches!(protocol, 6 | 17 | 132 | 136) {
        if let (Some(src), Some(dst)) = (be16(l4, 0), be16(l4, 2)) {
            key.ports = Some((src, dst));
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_frame(vlan: Option<u16>) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut out = Vec::new();
        match vlan {
            Some(v) => b
                .single_vlan(etherparse::VlanId::try_new(v).unwrap())
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(40000, 80, 1, 1000)
                .write(&mut out, b"x")
                .unwrap(),
            None => b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(40000, 80, 1, 1000).write(&mut out, b"x").unwrap(),
        }
        out
    }

    #[test]
    fn reads_every_layer_with_and_without_a_tag() {
        for vlan in [None, Some(10)] {
            let key = flow_key(&tcp_frame(vlan));
            assert_eq!(key.macs, (0x0200_0000_0002, 0x0200_0000_0001));
            assert_eq!(key.ethertype, 0x0800);
            assert_eq!(key.ips, Some((0x0a00_0001, 0x0a00_0002)));
            assert_eq!((key.protocol, key.ports), (6, Some((40000, 80))));
        }
    }

    #[test]
    fn ipv6_udp() {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .udp(5353, 53)
            .write(&mut out, b"q")
            .unwrap();
        let key = flow_key(&out);
        assert_eq!(key.ips, Some((u128::from_be_bytes([0xfd; 16]), u128::from_be_bytes([0xfe; 16]))));
        assert_eq!((key.protocol, key.ports), (17, Some((5353, 53))));
    }

    #[test]
    fn truncated_or_odd_frames_give_what_they_have() {
        let frame = tcp_frame(None);
        for cut in 0..frame.len() {
            let _ = flow_key(&frame[..cut]);
        }
        assert_eq!(flow_key(&frame[..14]).ips, None);
        assert_eq!(flow_key(&frame[..14]).macs.1, 0x0200_0000_0001);
        let mut fragment = frame.clone();
        fragment[14 + 6] = 0x00;
        fragment[14 + 7] = 0x10; // fragment offset 16: no ports in this fragment
        assert_eq!(flow_key(&fragment).ports, None);
        assert_eq!(flow_key(&[]), FlowKey::default());
    }
}
