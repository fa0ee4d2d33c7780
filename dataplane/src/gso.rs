//! Software segmentation: cuts a TCP or UDP GSO super-frame (as a TAP with offloads or a veth
//! hands it over, up to 64 KiB) into MTU-sized segments, for ports that cannot take the
//! super-frame whole — a VXLAN tunnel, an in-process port. What a NIC's TSO and USO do, per
//! segment: copy the headers, set the IP length (and the IPv4 identification and header
//! checksum), advance the TCP sequence number (keeping FIN and PSH for the last segment and CWR
//! for the first) or set the UDP length, and compute the transport checksum in full.
//!
//! Segments are built one at a time in a caller's scratch buffer: no allocation.

use crate::wire::VnetHdr;
use crate::wire::checksum::{fold, sum};
use crate::wire::ethernet::EtherType;
use crate::wire::vlan::skip_tags;
use crate::wire::vnet_hdr::{GSO_ECN, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};

/// Why a super-frame could not be segmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoError {
    /// A GSO type other than TCP over IPv4/IPv6 or UDP (`GSO_UDP_L4`), or IPv6 extension
    /// headers in front of the transport header.
    Unsupported,
    /// The headers do not parse, or do not match the offload metadata.
    Malformed,
    /// A segment would not fit the scratch buffer.
    TooBig,
    /// The segment size is absurd: smaller than any real TCP MSS ([`MIN_TCP_SEGMENT`]), or so
    /// small that the frame would become more than [`MAX_UDP_SEGMENTS`] datagrams. Cutting such
    /// a frame would turn one frame from a hostile guest into thousands.
    AbsurdSegmentSize,
    /// UDP datagrams of the sender's size would exceed the egress MTU (TCP segments are cut
    /// smaller instead; UDP datagram boundaries belong to the application).
    ExceedsMtu,
}

/// The smallest TCP segment size accepted: below every real stack's floor (Linux clamps the
/// MSS at 88 bytes, FreeBSD at 216), so a 64 KiB frame is at most about a thousand segments.
pub const MIN_TCP_SEGMENT: usize = 64;
/// The most datagrams one UDP super-frame may carry (Linux's `UDP_MAX_SEGMENTS`).
pub const MAX_UDP_SEGMENTS: usize = 128;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// The IP packet length of a full segment of super-frame `frame` (its IP and transport
/// headers plus `hdr.gso_size` bytes), if its headers can be read: what must fit a path.
pub fn segment_packet_len(frame: &[u8], hdr: &VnetHdr) -> Option<usize> {
    let (ethertype, l3) = skip_tags(frame).ok()?;
    let (ip_header, protocol) = match ethertype {
        EtherType::Ipv4 => (usize::from(*frame.get(l3)? & 0x0f) * 4, *frame.get(l3 + 9)?),
        EtherType::Ipv6 => (40, *frame.get(l3 + 6)?),
        _ => return None,
    };
    let l4_header = match protocol {
        IPPROTO_TCP => usize::from(*frame.get(l3 + ip_header + 12)? >> 4) * 4,
        IPPROTO_UDP => 8,
        _ => return None,
    };
    Some(ip_header + l4_header + usize::from(hdr.gso_size))
}

/// Cuts `frame` (described by `hdr`) into segments of at most `hdr.gso_size` payload bytes
/// whose IP packets fit `mtu`, building each in `scratch` and handing it to `emit`. Returns how
/// many segments there were.
///
/// Nothing in `hdr` or the frame's headers is trusted: they come from a guest or a host stack.
/// TCP segments shrink to fit `mtu` (a smaller MSS is still the same stream); UDP datagrams that
/// would not fit are refused. A TCP header shorter than 20 bytes, an IPv4 header shorter than
/// 20, or an absurd segment size is refused before anything is emitted.
///
/// TCP segments get consecutive sequence numbers, FIN and PSH on the last only, CWR on the
/// first only. UDP segments (`GSO_UDP_L4`, what a socket with `UDP_SEGMENT` sends) are
/// datagrams of their own: each gets its UDP length. Every segment gets its IP length, IPv4
/// identification and header checksum, and a full transport checksum.
pub fn segment(
    frame: &[u8],
    hdr: &VnetHdr,
    mtu: u32,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, GsoError> {
    let (ethertype, l3) = skip_tags(frame).map_err(|_| GsoError::Malformed)?;
    let (ipv6, protocol) = match (hdr.gso_type & !GSO_ECN, ethertype) {
        (GSO_TCPV4, EtherType::Ipv4) => (false, IPPROTO_TCP),
        (GSO_TCPV6, EtherType::Ipv6) => (true, IPPROTO_TCP),
        (GSO_UDP_L4, EtherType::Ipv4) => (false, IPPROTO_UDP),
        (GSO_UDP_L4, EtherType::Ipv6) => (true, IPPROTO_UDP),
        (GSO_TCPV4 | GSO_TCPV6 | GSO_UDP_L4, _) => return Err(GsoError::Malformed),
        _ => return Err(GsoError::Unsupported),
    };
    let (ip_header, carried) = if ipv6 {
        (40, *frame.get(l3 + 6).ok_or(GsoError::Malformed)?)
    } else {
        let ihl = usize::from(*frame.get(l3).ok_or(GsoError::Malformed)? & 0x0f) * 4;
        (ihl, *frame.get(l3 + 9).ok_or(GsoError::Malformed)?)
    };
    if carried != protocol {
        // An IPv6 extension header, or a transport that does not match the GSO type.
        return Err(if ipv6 && !matches!(carried, IPPROTO_TCP | IPPROTO_UDP) {
            GsoError::Unsupported
        } else {
            GsoError::Malformed
        });
    }
    let l4 = l3 + ip_header;
    let l4_header =
        if protocol == IPPROTO_TCP { usize::from(*frame.get(l4 + 12).ok_or(GsoError::Malformed)? >> 4) * 4 } else { 8 };
    let headers = l4 + l4_header;
    let min_l4_header = if protocol == IPPROTO_TCP { 20 } else { 8 };
    if l4_header < min_l4_header || ip_header < 20 || headers > frame.len() || hdr.gso_size == 0 {
        return Err(GsoError::Malformed);
    }
    let payload = &frame[headers..];
    // The IP packet of a segment: IP and transport headers plus the segment's payload. It must
    // fit the MTU, and its length field (16 bits) must never wrap.
    let packet_headers = headers - l3;
    let room = (mtu.min(u32::from(u16::MAX)) as usize).saturating_sub(packet_headers);
    let asked = usize::from(hdr.gso_size);
    let mss = if protocol == IPPROTO_TCP {
        if asked < MIN_TCP_SEGMENT {
            return Err(GsoError::AbsurdSegmentSize);
        }
        asked.min(room)
    } else {
        if payload.len().div_ceil(asked) > MAX_UDP_SEGMENTS {
            return Err(GsoError::AbsurdSegmentSize);
        }
        if asked > room {
            return Err(GsoError::ExceedsMtu);
        }
        asked
    };
    if mss == 0 || (protocol == IPPROTO_TCP && mss < MIN_TCP_SEGMENT) {
        return Err(GsoError::ExceedsMtu); // not even the smallest segment fits this MTU
    }
    if headers + mss > scratch.len() {
        return Err(GsoError::TooBig);
    }
    let seq = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    let ip_id = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]);
    let flags = frame.get(l4 + 13).copied().unwrap_or(0);
    let count = payload.len().div_ceil(mss).max(1);
    for i in 0..count {
        let chunk = &payload[(i * mss).min(payload.len())..((i + 1) * mss).min(payload.len())];
        let len = headers + chunk.len();
        let out = &mut scratch[..len];
        out[..headers].copy_from_slice(&frame[..headers]);
        out[headers..].copy_from_slice(chunk);
        if ipv6 {
            out[l3 + 4..l3 + 6].copy_from_slice(&((len - l3 - 40) as u16).to_be_bytes());
        } else {
            out[l3 + 2..l3 + 4].copy_from_slice(&((len - l3) as u16).to_be_bytes());
            out[l3 + 4..l3 + 6].copy_from_slice(&ip_id.wrapping_add(i as u16).to_be_bytes());
            out[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let check = !fold(sum(&out[l3..l4], 0));
            out[l3 + 10..l3 + 12].copy_from_slice(&check.to_be_bytes());
        }
        let checksum_at = if protocol == IPPROTO_TCP {
            out[l4 + 4..l4 + 8].copy_from_slice(&seq.wrapping_add((i * mss) as u32).to_be_bytes());
            let mut segment_flags = flags;
            if i + 1 < count {
                segment_flags &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                segment_flags &= !TCP_CWR;
            }
            out[l4 + 13] = segment_flags;
            l4 + 16
        } else {
            out[l4 + 4..l4 + 6].copy_from_slice(&((len - l4) as u16).to_be_bytes());
            l4 + 6
        };
        out[checksum_at..checksum_at + 2].copy_from_slice(&[0, 0]);
        let l4_len = len - l4;
        let mut pseudo = if ipv6 { sum(&out[l3 + 8..l3 + 40], 0) } else { sum(&out[l3 + 12..l3 + 20], 0) };
        pseudo = if ipv6 {
            sum(&[0, 0, 0, protocol], sum(&(l4_len as u32).to_be_bytes(), pseudo))
        } else {
            sum(&[0, protocol], sum(&(l4_len as u16).to_be_bytes(), pseudo))
        };
        let mut check = !fold(sum(&out[l4..], pseudo));
        if check == 0 && protocol == IPPROTO_UDP {
            check = 0xffff; // zero means "no checksum" in UDP
        }
        out[checksum_at..checksum_at + 2].copy_from_slice(&check.to_be_bytes());
        emit(out);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::vnet_hdr::F_NEEDS_CSUM;

    const MAX_SCRATCH: usize = 65_536 + 64;

    /// A TCP super-frame of `payload` bytes as a TAP with TSO hands it over: IP length for the
    /// whole thing, checksum in partial form (which segmentation ignores).
    fn super_frame(ipv6: bool, vlan: bool, payload: usize, flags: u8) -> (Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..payload).map(|i| (i * 7 % 251) as u8).collect();
        let eth = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut out = Vec::new();
        macro_rules! finish {
            ($b:expr) => {{
                let mut b = $b.tcp(40000, 80, 1_000_000, 65535).ack(5);
                if flags & TCP_PSH != 0 {
                    b = b.psh();
                }
                if flags & TCP_FIN != 0 {
                    b = b.fin();
                }
                b.write(&mut out, &data).unwrap();
            }};
        }
        match (ipv6, vlan) {
            (false, false) => finish!(eth.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)),
            (false, true) => finish!(eth.single_vlan(etherparse::VlanId::try_new(10).unwrap()).ipv4(
                [10, 0, 0, 1],
                [10, 0, 0, 2],
                64
            )),
            (true, _) => finish!(eth.ipv6([0xfd; 16], [0xfe; 16], 64)),
        }
        (out, data)
    }

    fn check(ipv6: bool, vlan: bool, payload: usize, mss: u16) {
        let (frame, data) = super_frame(ipv6, vlan, payload, TCP_PSH | TCP_FIN);
        let l4 = 14 + if vlan { 4 } else { 0 } + if ipv6 { 40 } else { 20 };
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if ipv6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: (l4 + 20) as u16,
            gso_size: mss,
            csum_start: l4 as u16,
            csum_offset: 16,
        };
        let mut scratch = vec![0u8; 9216];
        let mut segments = Vec::new();
        let n = segment(&frame, &hdr, 9000, &mut scratch, |s| segments.push(s.to_vec())).unwrap();
        assert_eq!(n, payload.div_ceil(usize::from(mss)).max(1));
        let mut joined = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            let parsed = etherparse::SlicedPacket::from_ethernet(s).unwrap();
            let Some(etherparse::TransportSlice::Tcp(tcp)) = parsed.transport else { panic!("segment {i} is not TCP") };
            assert_eq!(tcp.sequence_number(), 1_000_000 + (i * usize::from(mss)) as u32);
            let last = i + 1 == segments.len();
            assert_eq!((tcp.psh(), tcp.fin()), (last, last), "FIN and PSH only on the last segment");
            let checksum = match &parsed.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => {
                    assert!(ip.header().header_checksum() == ip.header().to_header().calc_header_checksum());
                    assert_eq!(usize::from(ip.header().total_len()), s.len() - (l4 - 20));
                    tcp.to_header().calc_checksum_ipv4(&ip.header().to_header(), tcp.payload()).unwrap()
                }
                Some(etherparse::NetSlice::Ipv6(ip)) => {
                    tcp.to_header().calc_checksum_ipv6(&ip.header().to_header(), tcp.payload()).unwrap()
                }
                _ => panic!("no IP"),
            };
            assert_eq!(tcp.checksum(), checksum, "segment {i} checksum");
            assert!(tcp.payload().len() <= usize::from(mss));
            joined.extend_from_slice(tcp.payload());
        }
        assert_eq!(joined, data, "the segments carry the payload, in order");
    }

    #[test]
    fn segments_are_valid_tcp_and_carry_the_stream() {
        check(false, false, 10_000, 1448);
        check(false, true, 3_000, 1000);
        check(true, false, 20_000, 1428);
        check(false, false, 1448 * 3, 1448);
        check(false, false, 100, 1448);
    }

    /// A UDP super-frame as a socket with `UDP_SEGMENT` hands it over: one UDP header and IP
    /// length for all the datagrams' payloads back to back.
    fn udp_super_frame(ipv6: bool, payload: usize) -> (Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..payload).map(|i| (i * 13 % 241) as u8).collect();
        let eth = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut out = Vec::new();
        if ipv6 {
            eth.ipv6([0xfd; 16], [0xfe; 16], 64).udp(5000, 6000).write(&mut out, &data).unwrap();
        } else {
            eth.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(5000, 6000).write(&mut out, &data).unwrap();
        }
        (out, data)
    }

    fn check_udp(ipv6: bool, payload: usize, size: u16) {
        let (frame, data) = udp_super_frame(ipv6, payload);
        let l4 = 14 + if ipv6 { 40 } else { 20 };
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: (l4 + 8) as u16,
            gso_size: size,
            csum_start: l4 as u16,
            csum_offset: 6,
        };
        let mut scratch = vec![0u8; 9216];
        let mut datagrams = Vec::new();
        let n = segment(&frame, &hdr, 9000, &mut scratch, |s| datagrams.push(s.to_vec())).unwrap();
        assert_eq!(n, payload.div_ceil(usize::from(size)));
        for (i, d) in datagrams.iter().enumerate() {
            let parsed = etherparse::SlicedPacket::from_ethernet(d).unwrap();
            let Some(etherparse::TransportSlice::Udp(udp)) = parsed.transport else {
                panic!("datagram {i} is not UDP")
            };
            let chunk = &data[i * usize::from(size)..((i + 1) * usize::from(size)).min(payload)];
            assert_eq!(udp.payload(), chunk, "datagram {i} carries its share, in order");
            assert_eq!(usize::from(udp.length()), 8 + chunk.len());
            assert_eq!((udp.source_port(), udp.destination_port()), (5000, 6000));
            let checksum = match &parsed.net {
                Some(etherparse::NetSlice::Ipv4(ip)) => {
                    assert_eq!(ip.header().header_checksum(), ip.header().to_header().calc_header_checksum());
                    assert_eq!(usize::from(ip.header().total_len()), 28 + chunk.len());
                    udp.to_header().calc_checksum_ipv4(&ip.header().to_header(), udp.payload()).unwrap()
                }
                Some(etherparse::NetSlice::Ipv6(ip)) => {
                    assert_eq!(usize::from(ip.header().payload_length()), 8 + chunk.len());
                    udp.to_header().calc_checksum_ipv6(&ip.header().to_header(), udp.payload()).unwrap()
                }
                _ => panic!("no IP"),
            };
            assert_eq!(udp.checksum(), checksum, "datagram {i} checksum");
        }
    }

    #[test]
    fn udp_super_frames_become_datagrams_with_their_own_lengths_and_checksums() {
        check_udp(false, 1400 * 40, 1400);
        check_udp(false, 1400 * 3 + 17, 1400);
        check_udp(true, 1200 * 10 + 1, 1200);
        check_udp(false, 100, 1400);
    }

    /// What a hostile guest can write into its TAP: headers that contradict the offload
    /// metadata. None of it may panic, and none of it may turn into thousands of frames.
    #[test]
    fn hostile_headers_are_refused_before_anything_is_emitted() {
        let (frame, _) = super_frame(false, false, 3000, 0);
        let hdr = VnetHdr { gso_type: GSO_TCPV4, gso_size: 1448, ..VnetHdr::default() };
        let mut scratch = vec![0u8; MAX_SCRATCH];
        let mut emitted = 0;
        // A TCP data offset of 2 (8 bytes): the flags and checksum would lie past the header.
        let mut short_tcp = frame.clone();
        short_tcp[14 + 20 + 12] = 2 << 4;
        let mut payloadless = short_tcp.clone();
        payloadless.truncate(14 + 20 + 8);
        for bad in [&short_tcp, &payloadless] {
            assert_eq!(segment(bad, &hdr, 1500, &mut scratch, |_| emitted += 1), Err(GsoError::Malformed));
        }
        // An IPv4 header length of 4 bytes.
        let mut short_ip = frame.clone();
        short_ip[14] = 0x41;
        assert_eq!(segment(&short_ip, &hdr, 1500, &mut scratch, |_| emitted += 1), Err(GsoError::Malformed));
        // One-byte segments: 3000 frames from one.
        for size in [1, 10, MIN_TCP_SEGMENT as u16 - 1] {
            assert_eq!(
                segment(&frame, &VnetHdr { gso_size: size, ..hdr }, 1500, &mut scratch, |_| emitted += 1),
                Err(GsoError::AbsurdSegmentSize)
            );
        }
        let (udp, _) = udp_super_frame(false, 3000);
        let udp_hdr = VnetHdr { gso_type: GSO_UDP_L4, gso_size: 20, ..VnetHdr::default() };
        assert_eq!(segment(&udp, &udp_hdr, 1500, &mut scratch, |_| emitted += 1), Err(GsoError::AbsurdSegmentSize));
        assert_eq!(emitted, 0);
    }

    #[test]
    fn segments_fit_the_egress_mtu_and_ip_lengths_never_wrap() {
        // A sender's 9000-byte MSS toward a 1500-byte port: TCP is cut to fit.
        let (frame, data) = super_frame(false, false, 60_000, TCP_PSH);
        let hdr = VnetHdr { gso_type: GSO_TCPV4, gso_size: 9000, ..VnetHdr::default() };
        let mut scratch = vec![0u8; MAX_SCRATCH];
        let mut joined = Vec::new();
        let n = segment(&frame, &hdr, 1500, &mut scratch, |s| {
            assert!(s.len() - 14 <= 1500, "a {}-byte IP packet on a 1500-byte MTU", s.len() - 14);
            assert_eq!(usize::from(u16::from_be_bytes([s[16], s[17]])), s.len() - 14);
            joined.extend_from_slice(&s[54..]);
        })
        .unwrap();
        assert_eq!(n, 60_000usize.div_ceil(1460));
        assert_eq!(joined, data);
        // The largest segment size there is, toward the largest MTU: the IP length still fits 16 bits.
        let (frame, _) = super_frame(false, false, 65_000, 0);
        let hdr = VnetHdr { gso_size: u16::MAX, ..hdr };
        segment(&frame, &hdr, u32::MAX, &mut scratch, |s| {
            assert_eq!(usize::from(u16::from_be_bytes([s[16], s[17]])), s.len() - 14, "the IP length wrapped");
        })
        .unwrap();
        // UDP datagrams keep their size: too big for the MTU is refused, not re-cut.
        let (udp, _) = udp_super_frame(false, 2000 * 3);
        let udp_hdr = VnetHdr { gso_type: GSO_UDP_L4, gso_size: 2000, ..VnetHdr::default() };
        assert_eq!(segment(&udp, &udp_hdr, 1500, &mut scratch, |_| {}), Err(GsoError::ExceedsMtu));
        assert_eq!(segment(&udp, &udp_hdr, 2028, &mut scratch, |_| {}), Ok(3));
    }

    #[test]
    fn unsupported_and_malformed_input_is_refused() {
        let (frame, _) = super_frame(false, false, 3000, 0);
        let hdr = VnetHdr { gso_type: GSO_TCPV4, gso_size: 1448, ..VnetHdr::default() };
        let mut scratch = vec![0u8; 9216];
        assert_eq!(
            segment(&frame, &VnetHdr { gso_type: 3, ..hdr }, 1500, &mut scratch, |_| {}),
            Err(GsoError::Unsupported)
        );
        assert_eq!(
            segment(&frame, &VnetHdr { gso_type: GSO_UDP_L4, ..hdr }, 1500, &mut scratch, |_| {}),
            Err(GsoError::Malformed),
            "a TCP frame is no UDP super-frame"
        );
        assert_eq!(
            segment(&frame, &VnetHdr { gso_type: GSO_TCPV6, ..hdr }, 1500, &mut scratch, |_| {}),
            Err(GsoError::Malformed)
        );
        assert_eq!(segment(&frame[..30], &hdr, 1500, &mut scratch, |_| {}), Err(GsoError::Malformed));
        assert_eq!(segment(&frame, &hdr, 1500, &mut scratch[..100], |_| {}), Err(GsoError::TooBig));
        assert_eq!(
            segment(&frame, &VnetHdr { gso_size: 0, ..hdr }, 1500, &mut scratch, |_| {}),
            Err(GsoError::Malformed)
        );
    }
}
