//! ICMP messages the switch answers with on behalf of a host behind a tunnel: ICMPv4
//! "fragmentation needed" and ICMPv6 "packet too big" for a packet too big for the tunnel's
//! path (as the Linux vxlan device does since 5.9), and ICMPv6 neighbour solicitations and
//! advertisements for neighbour suppression. Builders write into a caller's buffer and return
//! the frame's length; parsers are checked views over a frame's bytes.

use super::checksum;
use super::ethernet::{self, MacAddr};
use std::net::{Ipv4Addr, Ipv6Addr};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IPv6 next header of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// The largest IPv4 datagram an ICMPv4 error may make (RFC 1812 4.3.2.3): the quote is cut to
/// fit it.
pub const IPV4_ERROR_MAX: usize = 576;
/// The IPv6 minimum MTU: an ICMPv6 error fits it (RFC 4443 2.4 (c)), and no path is smaller.
pub const IPV6_MIN_MTU: usize = 1280;
/// The smallest MTU an ICMPv4 "fragmentation needed" is sent for (the kernel's floor).
pub const IPV4_MIN_MTU: usize = 576;
/// The longest frame [`too_big_reply`] builds: an Ethernet header and an IPv6 minimum MTU.
pub const REPLY_MAX: usize = ethernet::HEADER_LEN + IPV6_MIN_MTU;
/// ICMPv6 type of a neighbour solicitation.
pub const ND_NEIGHBOR_SOLICIT: u8 = 135;
/// ICMPv6 type of a neighbour advertisement.
pub const ND_NEIGHBOR_ADVERT: u8 = 136;
/// Length of the neighbour advertisement [`neighbour_advert`] builds.
pub const ADVERT_LEN: usize = ethernet::HEADER_LEN + 40 + 32;

/// The ICMPv4 types that are errors (never answered with another error, RFC 1122 3.2.2).
fn icmpv4_is_error(kind: u8) -> bool {
    matches!(kind, 3 | 4 | 5 | 11 | 12)
}

/// Builds into `out` the reply to `frame` — an untagged Ethernet frame carrying an IPv4 or
/// IPv6 packet too big for a path of `mtu` bytes (of IP packet) — and returns its length, or
/// `None` when no reply is due. The reply comes from the packet's destination (its MAC and IP
/// address) and goes to its sender, quoting as much of the packet as an ICMP error may carry.
///
/// No reply is due, as with the kernel's tunnel PMTU check, for: an IPv4 packet without "don't
/// fragment" or that is a fragment (it would be fragmented, not refused), an MTU below 576
/// (IPv4) or 1280 (IPv6), a multicast or broadcast destination, a source that is unspecified,
/// loopback, multicast or broadcast, an ICMP error (never answer an error with one), or a
/// packet whose header is cut short.
pub fn too_big_reply(frame: &[u8], mtu: usize, out: &mut [u8; REPLY_MAX]) -> Option<usize> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = &frame[ethernet::HEADER_LEN..];
    let ip_len = match ethertype {
        ETHERTYPE_IPV4 => too_big_v4(ip, mtu, &mut out[ethernet::HEADER_LEN..])?,
        ETHERTYPE_IPV6 => too_big_v6(ip, mtu, &mut out[ethernet::HEADER_LEN..])?,
        _ => return None,
    };
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[0..6]);
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
    Some(ethernet::HEADER_LEN + ip_len)
}

fn too_big_v4(ip: &[u8], mtu: usize, out: &mut [u8]) -> Option<usize> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let header = usize::from(ip[0] & 0x0f) * 4;
    if header < 20 || ip.len() < header || mtu < IPV4_MIN_MTU {
        return None;
    }
    // "Don't fragment", no "more fragments", offset 0: only such a packet gets a reply.
    if u16::from_be_bytes([ip[6], ip[7]]) != 0x4000 {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    if dst.is_broadcast()
        || dst.is_multicast()
        || src.is_unspecified()
        || src.is_loopback()
        || src.is_broadcast()
        || src.is_multicast()
    {
        return None;
    }
    if ip[9] == IPPROTO_ICMP && ip.get(header).is_none_or(|&kind| icmpv4_is_error(kind)) {
        return None;
    }
    let quote = ip.len().min(IPV4_ERROR_MAX - 28);
    let total = 28 + quote;
    let out = &mut out[..total];
    out[0] = 0x45;
    out[1] = 0;
    out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    out[4..8].fill(0); // identification 0; no flags: an ICMP error may be fragmented
    out[8] = 64;
    out[9] = IPPROTO_ICMP;
    out[10..12].fill(0);
    out[12..16].copy_from_slice(&dst.octets());
    out[16..20].copy_from_slice(&src.octets());
    let sum = !checksum::fold(checksum::sum(&out[..20], 0));
    out[10..12].copy_from_slice(&sum.to_be_bytes());
    let icmp = &mut out[20..];
    icmp[0] = 3; // destination unreachable
    icmp[1] = 4; // fragmentation needed and DF set
    icmp[2..6].fill(0);
    icmp[6..8].copy_from_slice(&(mtu.min(usize::from(u16::MAX)) as u16).to_be_bytes());
    icmp[8..].copy_from_slice(&ip[..quote]);
    let sum = !checksum::fold(checksum::sum(icmp, 0));
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(total)
}

fn v6_addr(bytes: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&bytes[..16]);
    Ipv6Addr::from(a)
}

/// The ICMPv6 checksum of `message` from `src` to `dst` (RFC 8200 8.1 pseudo-header).
fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum = checksum::sum(&src.octets(), 0);
    sum = checksum::sum(&dst.octets(), sum);
    sum = checksum::sum(&(message.len() as u32).to_be_bytes(), sum);
    sum = checksum::sum(&[0, 0, 0, IPPROTO_ICMPV6], sum);
    !checksum::fold(checksum::sum(message, sum))
}

/// Writes an IPv6 header (payload `payload_len` bytes of ICMPv6, hop limit `hops`).
fn ipv6_header(out: &mut [u8], payload_len: usize, hops: u8, src: &Ipv6Addr, dst: &Ipv6Addr) {
    out[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    out[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    out[6] = IPPROTO_ICMPV6;
    out[7] = hops;
    out[8..24].copy_from_slice(&src.octets());
    out[24..40].copy_from_slice(&dst.octets());
}

fn too_big_v6(ip: &[u8], mtu: usize, out: &mut [u8]) -> Option<usize> {
    if ip.len() < 40 || ip[0] >> 4 != 6 || mtu < IPV6_MIN_MTU {
        return None;
    }
    let src = v6_addr(&ip[8..24]);
    let dst = v6_addr(&ip[24..40]);
    if src.is_unspecified() || src.is_loopback() || src.is_multicast() || dst.is_multicast() {
        return None;
    }
    if ip[6] == IPPROTO_ICMPV6 && ip.get(40).is_none_or(|&kind| kind < 128) {
        return None;
    }
    let quote = ip.len().min(IPV6_MIN_MTU - 48);
    let payload = 8 + quote;
    ipv6_header(out, payload, 64, &dst, &src);
    let icmp = &mut out[40..40 + payload];
    icmp[0] = 2; // packet too big
    icmp[1] = 0;
    icmp[2..4].fill(0);
    icmp[4..8].copy_from_slice(&(mtu.min(u32::MAX as usize) as u32).to_be_bytes());
    icmp[8..].copy_from_slice(&ip[..quote]);
    let sum = icmpv6_checksum(&dst, &src, icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(40 + payload)
}

/// A neighbour discovery message (RFC 4861) seen in an untagged frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// [`ND_NEIGHBOR_SOLICIT`] or [`ND_NEIGHBOR_ADVERT`].
    pub kind: u8,
    /// The IPv6 source address.
    pub src: Ipv6Addr,
    /// The target address.
    pub target: Ipv6Addr,
    /// The link-layer address option (source in a solicitation, target in an advertisement).
    pub lladdr: Option<MacAddr>,
}

/// The neighbour solicitation or advertisement `frame` (untagged) carries, if it is a
/// well-formed one: hop limit 255, ICMPv6 directly after the IPv6 header, code 0, options
/// whole.
pub fn parse_neighbour(frame: &[u8]) -> Option<Neighbour> {
    if u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) != ETHERTYPE_IPV6 {
        return None;
    }
    let ip = &frame[ethernet::HEADER_LEN..];
    if ip.len() < 40 + 24 || ip[0] >> 4 != 6 || ip[6] != IPPROTO_ICMPV6 || ip[7] != 255 {
        return None;
    }
    let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let icmp = ip.get(40..40 + payload).filter(|m| m.len() >= 24)?;
    let kind = icmp[0];
    if !matches!(kind, ND_NEIGHBOR_SOLICIT | ND_NEIGHBOR_ADVERT) || icmp[1] != 0 {
        return None;
    }
    let wanted = if kind == ND_NEIGHBOR_SOLICIT { 1 } else { 2 };
    let mut lladdr = None;
    let mut options = &icmp[24..];
    while options.len() >= 2 {
        let len = usize::from(options[1]) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        if options[0] == wanted && len >= 8 {
            lladdr = Some(MacAddr::from_bytes(&options[2..8]));
        }
        options = &options[len..];
    }
    Some(Neighbour { kind, src: v6_addr(&ip[8..24]), target: v6_addr(&icmp[8..24]), lladdr })
}

/// A solicited neighbour advertisement (RFC 4861 4.4) for `target` at `target_mac`, answering
/// the solicitation from `asker` (`asker_mac`): override set, router clear, with the target
/// link-layer address option.
pub fn neighbour_advert(
    target: &Ipv6Addr,
    target_mac: MacAddr,
    asker: &Ipv6Addr,
    asker_mac: MacAddr,
) -> [u8; ADVERT_LEN] {
    let mut out = [0u8; ADVERT_LEN];
    out[0..6].copy_from_slice(&asker_mac.0);
    out[6..12].copy_from_slice(&target_mac.0);
    out[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let ip = &mut out[ethernet::HEADER_LEN..];
    ipv6_header(ip, 32, 255, target, asker);
    let icmp = &mut ip[40..72];
    icmp[0] = ND_NEIGHBOR_ADVERT;
    icmp[4] = 0x60; // solicited, override
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = 2; // target link-layer address
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&target_mac.0);
    let sum = icmpv6_checksum(target, asker, icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv4Type, Icmpv6Type, SlicedPacket, TransportSlice};

    const A_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];

    /// The ICMPv6 message in IPv6 packet `ip` sums, with its pseudo-header, to all ones.
    fn icmpv6_checksum_ok(ip: &[u8]) -> bool {
        let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let mut sum = checksum::sum(&ip[8..40], 0);
        sum = checksum::sum(&(len as u32).to_be_bytes(), sum);
        sum = checksum::sum(&[0, 0, 0, 58], sum);
        checksum::fold(checksum::sum(&ip[40..40 + len], sum)) == 0xffff
    }
    const B_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    /// A 1514-byte frame from A (10.0.0.1) to B (10.0.0.2): IPv4 with DF, TCP.
    fn v4_frame(frag: u16, protocol: u8, len: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&B_MAC);
        f.extend_from_slice(&A_MAC);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (len - 14) as u16;
        f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0x12, 0x34]);
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, protocol, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        let sum = !checksum::fold(checksum::sum(&f[14..34], 0));
        f[24..26].copy_from_slice(&sum.to_be_bytes());
        // TCP: ports 40000 -> 5001, sequence 0x01020304.
        f.extend_from_slice(&[0x9c, 0x40, 0x13, 0x89, 1, 2, 3, 4, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
        f.resize(len, 0xab);
        f
    }

    fn v6_frame(next: u8, first: u8, len: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&B_MAC);
        f.extend_from_slice(&A_MAC);
        f.extend_from_slice(&[0x86, 0xdd]);
        let payload = (len - 54) as u16;
        f.extend_from_slice(&[0x60, 0, 0, 0, (payload >> 8) as u8, payload as u8, next, 64]);
        f.extend_from_slice(&"2001:db8::a".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&"2001:db8::b".parse::<Ipv6Addr>().unwrap().octets());
        f.push(first);
        f.resize(len, 0xcd);
        f
    }

    #[test]
    fn fragmentation_needed_for_an_ipv4_packet_with_df() {
        let frame = v4_frame(0x4000, 6, 1514);
        let mut out = [0u8; REPLY_MAX];
        let len = too_big_reply(&frame, 1450, &mut out).expect("a reply");
        assert_eq!(len, 14 + 576, "cut to a 576-byte datagram");
        let reply = &out[..len];
        assert_eq!(&reply[0..6], &A_MAC, "back to the sender");
        assert_eq!(&reply[6..12], &B_MAC, "from the destination's MAC");
        assert_eq!(&reply[12..14], &[0x08, 0x00]);
        assert_eq!(&reply[14..24], &[0x45, 0, 0x02, 0x40, 0, 0, 0, 0, 64, 1], "576 bytes, ICMP");
        assert_eq!(&reply[26..34], &[10, 0, 0, 2, 10, 0, 0, 1], "from B to A");
        assert_eq!(&reply[34..42], &[3, 4, reply[36], reply[37], 0, 0, 0x05, 0xaa], "type 3 code 4, MTU 1450");
        assert_eq!(&reply[42..42 + 548], &frame[14..14 + 548], "the original packet, quoted");
        assert_eq!(checksum::fold(checksum::sum(&reply[14..34], 0)), 0xffff, "IP header checksum");
        assert_eq!(checksum::fold(checksum::sum(&reply[34..], 0)), 0xffff, "ICMP checksum");
        let parsed = SlicedPacket::from_ethernet(reply).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = parsed.transport else { panic!("{parsed:?}") };
        let Icmpv4Type::DestinationUnreachable(unreachable) = icmp.icmp_type() else { panic!() };
        assert_eq!(unreachable, etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1450 });
    }

    #[test]
    fn a_short_packet_is_quoted_whole() {
        let frame = v4_frame(0x4000, 17, 14 + 40);
        let mut out = [0u8; REPLY_MAX];
        let len = too_big_reply(&frame, 1450, &mut out).unwrap();
        assert_eq!(len, 14 + 28 + 40);
        assert_eq!(&out[42..len], &frame[14..]);
    }

    #[test]
    fn no_reply_where_the_kernel_sends_none() {
        let mut out = [0u8; REPLY_MAX];
        for (what, frame, mtu) in [
            ("no DF", v4_frame(0, 6, 1514), 1450),
            ("a fragment", v4_frame(0x6000, 6, 1514), 1450),
            ("a later fragment", v4_frame(0x4010, 6, 1514), 1450),
            ("an MTU below 576", v4_frame(0x4000, 6, 1514), 500),
            ("an IPv6 MTU below 1280", v6_frame(6, 0, 1514), 1200),
        ] {
            assert_eq!(too_big_reply(&frame, mtu, &mut out), None, "{what}");
        }
        let mut icmp_error = v4_frame(0x4000, 1, 1514);
        icmp_error[34] = 3;
        assert_eq!(too_big_reply(&icmp_error, 1450, &mut out), None, "an ICMP error");
        let mut echo = v4_frame(0x4000, 1, 1514);
        echo[34] = 8;
        assert!(too_big_reply(&echo, 1450, &mut out).is_some(), "an echo request gets one");
        let mut multicast = v4_frame(0x4000, 17, 1514);
        multicast[30] = 239;
        assert_eq!(too_big_reply(&multicast, 1450, &mut out), None, "to a group");
        let mut zero_source = v4_frame(0x4000, 17, 1514);
        zero_source[26..30].fill(0);
        assert_eq!(too_big_reply(&zero_source, 1450, &mut out), None, "from 0.0.0.0");
        assert_eq!(too_big_reply(&v6_frame(58, 1, 1514), 1450, &mut out), None, "an ICMPv6 error");
        let mut to_group = v6_frame(17, 0, 1514);
        to_group[38] = 0xff;
        assert_eq!(too_big_reply(&to_group, 1450, &mut out), None, "to an IPv6 group");
        assert_eq!(too_big_reply(&v4_frame(0x4000, 6, 1514)[..30], 1450, &mut out), None, "cut short");
        assert_eq!(too_big_reply(&[0u8; 10], 1450, &mut out), None, "a runt");
        let mut arp = v4_frame(0x4000, 6, 60);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(too_big_reply(&arp, 1450, &mut out), None, "not IP");
    }

    #[test]
    fn packet_too_big_for_ipv6() {
        let frame = v6_frame(6, 0, 1514);
        let mut out = [0u8; REPLY_MAX];
        let len = too_big_reply(&frame, 1430, &mut out).expect("a reply");
        assert_eq!(len, REPLY_MAX, "cut to the IPv6 minimum MTU");
        let reply = &out[..len];
        assert_eq!((&reply[0..6], &reply[6..12]), (&A_MAC[..], &B_MAC[..]));
        let parsed = SlicedPacket::from_ethernet(reply).unwrap();
        let Some(etherparse::NetSlice::Ipv6(ip)) = &parsed.net else { panic!() };
        assert_eq!(ip.header().source_addr(), "2001:db8::b".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.header().destination_addr(), "2001:db8::a".parse::<Ipv6Addr>().unwrap());
        let Some(TransportSlice::Icmpv6(icmp)) = parsed.transport else { panic!() };
        assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1430 });
        assert!(icmpv6_checksum_ok(&reply[14..]), "ICMPv6 checksum");
        assert_eq!(icmp.checksum(), u16::from_be_bytes([reply[56], reply[57]]));
        assert_eq!(&reply[62..], &frame[14..14 + 1232], "quoted");
    }

    fn solicitation(src: &str, target: &str, option: bool) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[0x33, 0x33, 0xff, 0, 0, 0x0b]);
        f.extend_from_slice(&A_MAC);
        f.extend_from_slice(&[0x86, 0xdd]);
        let payload: u16 = if option { 32 } else { 24 };
        f.extend_from_slice(&[0x60, 0, 0, 0, 0, payload as u8, 58, 255]);
        f.extend_from_slice(&src.parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&"ff02::1:ff00:b".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&[135, 0, 0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&target.parse::<Ipv6Addr>().unwrap().octets());
        if option {
            f.extend_from_slice(&[1, 1]);
            f.extend_from_slice(&A_MAC);
        }
        f
    }

    #[test]
    fn solicitations_and_advertisements() {
        let ns = parse_neighbour(&solicitation("2001:db8::a", "2001:db8::b", true)).unwrap();
        assert_eq!(ns.kind, ND_NEIGHBOR_SOLICIT);
        assert_eq!(ns.target, "2001:db8::b".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ns.lladdr, Some(MacAddr(A_MAC)));
        let dad = parse_neighbour(&solicitation("::", "2001:db8::b", false)).unwrap();
        assert!(dad.src.is_unspecified() && dad.lladdr.is_none());
        let mut bad_option = solicitation("2001:db8::a", "2001:db8::b", true);
        bad_option[14 + 40 + 25] = 0;
        assert_eq!(parse_neighbour(&bad_option), None, "a zero-length option");
        let mut routed = solicitation("2001:db8::a", "2001:db8::b", true);
        routed[21] = 64;
        assert_eq!(parse_neighbour(&routed), None, "hop limit not 255");
        assert_eq!(parse_neighbour(&solicitation("2001:db8::a", "2001:db8::b", true)[..70]), None, "cut short");
        let mut empty = solicitation("2001:db8::a", "2001:db8::b", true);
        empty[18..20].fill(0);
        assert_eq!(parse_neighbour(&empty), None, "an IPv6 payload length of 0");
        // Every prefix of a good frame, and every single-byte change, parses or not, never panics.
        let good = solicitation("2001:db8::a", "2001:db8::b", true);
        for len in 0..good.len() {
            let _ = parse_neighbour(&good[..len]);
            let _ = too_big_reply(&good[..len], 1400, &mut [0u8; REPLY_MAX]);
        }
        for i in 0..good.len() {
            let mut f = good.clone();
            f[i] ^= 0xff;
            let _ = parse_neighbour(&f);
        }

        let target: Ipv6Addr = "2001:db8::b".parse().unwrap();
        let asker: Ipv6Addr = "2001:db8::a".parse().unwrap();
        let na = neighbour_advert(&target, MacAddr(B_MAC), &asker, MacAddr(A_MAC));
        let parsed = SlicedPacket::from_ethernet(&na).unwrap();
        let Some(TransportSlice::Icmpv6(icmp)) = parsed.transport else { panic!() };
        assert!(matches!(icmp.icmp_type(), Icmpv6Type::NeighborAdvertisement(_)), "{:?}", icmp.icmp_type());
        assert!(icmpv6_checksum_ok(&na[14..]));
        let back = parse_neighbour(&na).unwrap();
        assert_eq!((back.kind, back.target, back.lladdr), (ND_NEIGHBOR_ADVERT, target, Some(MacAddr(B_MAC))));
        assert_eq!(&na[0..12], &[A_MAC, B_MAC].concat()[..]);
    }
}
