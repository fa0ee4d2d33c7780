//! The frame `vswitchctl trace` runs through the pipeline, from its description: comma- or
//! space-separated fields (`dst=MAC,src=MAC,vlan=10,ipv4,tcp,dport=80`) or the frame's bytes in
//! hex. Pure: bytes out, or an error naming the field.
//!
//! Fields: `dst`, `src` (MACs; default broadcast and 02:00:00:00:00:01), `vlan` (adds an 802.1Q
//! tag), `pcp` (its priority; alone, a priority tag with VID 0), `ethertype` (a raw payload of
//! zeros), `arp` (a request; `sip`/`dip` its addresses), `ipv4` / `ipv6` with `sip` / `dip`,
//! `tcp` / `udp` / `icmp` with `sport` / `dport`, `len` (the whole frame's length, filled with
//! payload; at least 60 unless the headers are shorter). Checksums are computed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use vswitchd_dataplane::wire::MacAddr;
use vswitchd_dataplane::wire::checksum::{fold, sum};

/// The largest frame a trace takes.
pub const MAX_LEN: usize = 65_535;

/// Ethernet's minimum frame length without the FCS: shorter frames are padded to it.
const MIN_LEN: usize = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L3 {
    None,
    Arp,
    V4,
    V6,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    None,
    Tcp,
    Udp,
    Icmp,
}

fn field_error(field: &str, message: impl std::fmt::Display) -> String {
    format!("trace frame: field `{field}`: {message}")
}

fn number<T: std::str::FromStr>(field: &str, value: &str) -> Result<T, String> {
    let parsed = match value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok().and_then(|n| n.to_string().parse().ok()),
        None => value.parse().ok(),
    };
    parsed.ok_or_else(|| field_error(field, format!("`{value}` is not a number in range")))
}

/// Whether `spec` is the frame's bytes in hex (optionally with `:`, `-`, `.` or spaces).
fn is_hex(spec: &str) -> bool {
    let digits = spec.chars().filter(|c| !matches!(c, ':' | '-' | '.' | ' ' | '\n' | '\t'));
    !spec.contains('=') && spec.chars().any(|c| c.is_ascii_hexdigit()) && digits.clone().all(|c| c.is_ascii_hexdigit())
}

fn from_hex(spec: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = spec.bytes().filter(|c| !matches!(c, b':' | b'-' | b'.' | b' ' | b'\n' | b'\t')).collect();
    if digits.len() % 2 != 0 {
        return Err("trace frame: hex bytes: an odd number of digits".into());
    }
    if digits.len() / 2 > MAX_LEN {
        return Err(format!("trace frame: hex bytes: longer than {MAX_LEN} bytes"));
    }
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).unwrap_or("");
            u8::from_str_radix(text, 16).map_err(|_| format!("trace frame: hex bytes: `{text}` is not a byte"))
        })
        .collect()
}

/// The frame `spec` describes.
pub fn build(spec: &str) -> Result<Vec<u8>, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("trace frame: empty (give fields such as dst=MAC,src=MAC,ipv4,tcp or hex bytes)".into());
    }
    if is_hex(spec) {
        return from_hex(spec);
    }
    let mut dst = MacAddr::BROADCAST;
    let mut src = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
    let (mut vlan, mut pcp): (Option<u16>, Option<u8>) = (None, None);
    let mut ethertype: Option<u16> = None;
    let (mut l3, mut l4) = (L3::None, L4::None);
    let (mut sip, mut dip): (Option<IpAddr>, Option<IpAddr>) = (None, None);
    let (mut sport, mut dport) = (40000u16, 80u16);
    let mut len: Option<usize> = None;
    let set_l3 = |l3: &mut L3, want: L3, field: &str| {
        if *l3 != L3::None && *l3 != want {
            return Err(field_error(field, "a frame carries one of arp, ipv4, ipv6"));
        }
        *l3 = want;
        Ok(())
    };
    for item in spec.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (item, None),
        };
        let need = || value.ok_or_else(|| field_error(key, "needs a value (KEY=VALUE)"));
        let bare = || match value {
            None => Ok(()),
            Some(_) => Err(field_error(key, "takes no value")),
        };
        match key {
            "dst" | "src" => {
                let text = need()?;
                let mac: MacAddr = text.parse().map_err(|_| field_error(key, format!("`{text}` is not a MAC")))?;
                if key == "dst" { dst = mac } else { src = mac }
            }
            "vlan" => {
                let vid: u16 = number(key, need()?)?;
                if !(1..=4094).contains(&vid) {
                    return Err(field_error(key, format!("{vid} is not a VLAN (1-4094)")));
                }
                vlan = Some(vid);
            }
            "pcp" => {
                let p: u8 = number(key, need()?)?;
                if p > 7 {
                    return Err(field_error(key, format!("{p} is not a priority (0-7)")));
                }
                pcp = Some(p);
            }
            "ethertype" => ethertype = Some(number(key, need()?)?),
            "arp" => {
                bare()?;
                set_l3(&mut l3, L3::Arp, key)?;
            }
            "ipv4" => {
                bare()?;
                set_l3(&mut l3, L3::V4, key)?;
            }
            "ipv6" => {
                bare()?;
                set_l3(&mut l3, L3::V6, key)?;
            }
            "tcp" | "udp" | "icmp" => {
                bare()?;
                if l4 != L4::None {
                    return Err(field_error(key, "a frame carries one of tcp, udp, icmp"));
                }
                l4 = match key {
                    "tcp" => L4::Tcp,
                    "udp" => L4::Udp,
                    _ => L4::Icmp,
                };
            }
            "sip" | "dip" | "src_ip" | "dst_ip" => {
                let text = need()?;
                let ip: IpAddr =
                    text.parse().map_err(|_| field_error(key, format!("`{text}` is not an IP address")))?;
                if key.starts_with('s') { sip = Some(ip) } else { dip = Some(ip) }
            }
            "sport" => sport = number(key, need()?)?,
            "dport" => dport = number(key, need()?)?,
            "len" => {
                let n: usize = number(key, need()?)?;
                if !(14..=MAX_LEN).contains(&n) {
                    return Err(field_error(key, format!("{n} is not a frame length (14-{MAX_LEN})")));
                }
                len = Some(n);
            }
            _ => {
                return Err(field_error(
                    key,
                    "unknown (dst, src, vlan, pcp, ethertype, arp, ipv4, ipv6, tcp, udp, icmp, sip, dip, sport, dport, \
                     len)",
                ));
            }
        }
    }
    // What the addresses and transport imply.
    let v6_address = sip.is_some_and(|ip| ip.is_ipv6()) || dip.is_some_and(|ip| ip.is_ipv6());
    if l3 == L3::None && (l4 != L4::None || sip.is_some() || dip.is_some()) {
        l3 = if v6_address { L3::V6 } else { L3::V4 };
    }
    if l3 == L3::Arp && l4 != L4::None {
        return Err(field_error("arp", "an ARP frame carries no tcp, udp or icmp"));
    }
    let family_ok = |ip: Option<IpAddr>| match (l3, ip) {
        (_, None) => true,
        (L3::V6, Some(ip)) => ip.is_ipv6(),
        (_, Some(ip)) => ip.is_ipv4(),
    };
    for (field, ip) in [("sip", sip), ("dip", dip)] {
        if !family_ok(ip) {
            return Err(field_error(field, "the address family does not match the frame's (arp/ipv4 or ipv6)"));
        }
    }
    if ethertype.is_some() && l3 != L3::None {
        return Err(field_error("ethertype", "is set by arp, ipv4 or ipv6 already"));
    }

    let mut frame = Vec::with_capacity(len.unwrap_or(MIN_LEN));
    frame.extend_from_slice(&dst.0);
    frame.extend_from_slice(&src.0);
    if vlan.is_some() || pcp.is_some() {
        let tci = (u16::from(pcp.unwrap_or(0)) << 13) | vlan.unwrap_or(0);
        frame.extend_from_slice(&[0x81, 0x00]);
        frame.extend_from_slice(&tci.to_be_bytes());
    }
    let header_len = frame.len() + 2;
    // Bytes of L4 payload: what `len` leaves after the headers (none by default).
    let headers = header_len
        + match l3 {
            L3::None => 0,
            L3::Arp => 28,
            L3::V4 => 20,
            L3::V6 => 40,
        }
        + match (l3, l4) {
            (L3::None | L3::Arp, _) | (_, L4::None) => 0,
            (_, L4::Tcp) => 20,
            (_, L4::Udp | L4::Icmp) => 8,
        };
    let total = len.unwrap_or(headers.max(MIN_LEN));
    if total < headers {
        return Err(field_error("len", format!("{total} is shorter than the frame's headers ({headers} bytes)")));
    }
    // With IP, `len` grows the payload the IP header counts; without, it is padding.
    let payload = if matches!(l3, L3::V4 | L3::V6) && len.is_some() { total - headers } else { 0 };
    match l3 {
        L3::None => frame.extend_from_slice(&ethertype.unwrap_or(0x88b5).to_be_bytes()),
        L3::Arp => {
            let (IpAddr::V4(s), IpAddr::V4(d)) =
                (sip.unwrap_or(Ipv4Addr::new(10, 0, 0, 1).into()), dip.unwrap_or(Ipv4Addr::new(10, 0, 0, 2).into()))
            else {
                unreachable!("checked above")
            };
            frame.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
            frame.extend_from_slice(&src.0);
            frame.extend_from_slice(&s.octets());
            frame.extend_from_slice(&[0; 6]);
            frame.extend_from_slice(&d.octets());
        }
        L3::V4 | L3::V6 => {
            let (proto, l4_len) = match l4 {
                L4::None => (253u8, payload), // RFC 3692 experimental
                L4::Tcp => (6, 20 + payload),
                L4::Udp => (17, 8 + payload),
                L4::Icmp => (if l3 == L3::V4 { 1 } else { 58 }, 8 + payload),
            };
            let mut l4_bytes = vec![0u8; l4_len];
            match l4 {
                L4::Tcp => {
                    l4_bytes[0..2].copy_from_slice(&sport.to_be_bytes());
                    l4_bytes[2..4].copy_from_slice(&dport.to_be_bytes());
                    l4_bytes[12] = 5 << 4;
                    l4_bytes[13] = 0x02; // SYN
                    l4_bytes[14..16].copy_from_slice(&64240u16.to_be_bytes());
                }
                L4::Udp => {
                    l4_bytes[0..2].copy_from_slice(&sport.to_be_bytes());
                    l4_bytes[2..4].copy_from_slice(&dport.to_be_bytes());
                    l4_bytes[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                }
                L4::Icmp => l4_bytes[0] = if l3 == L3::V4 { 8 } else { 128 }, // echo request
                L4::None => {}
            }
            let pseudo = if l3 == L3::V4 {
                let s = match sip {
                    Some(IpAddr::V4(ip)) => ip,
                    _ => Ipv4Addr::new(10, 0, 0, 1),
                };
                let d = match dip {
                    Some(IpAddr::V4(ip)) => ip,
                    _ => Ipv4Addr::new(10, 0, 0, 2),
                };
                let total_len =
                    u16::try_from(20 + l4_len).map_err(|_| field_error("len", "too long for one IPv4 packet"))?;
                let mut ip = [0u8; 20];
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&total_len.to_be_bytes());
                ip[6] = 0x40; // don't fragment
                ip[8] = 64;
                ip[9] = proto;
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                let check = !fold(sum(&ip, 0));
                ip[10..12].copy_from_slice(&check.to_be_bytes());
                frame.extend_from_slice(&[0x08, 0x00]);
                frame.extend_from_slice(&ip);
                let mut p = Vec::with_capacity(12);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&[0, proto]);
                p.extend_from_slice(&(l4_len as u16).to_be_bytes());
                p
            } else {
                let s = match sip {
                    Some(IpAddr::V6(ip)) => ip,
                    _ => "fd00::1".parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::LOCALHOST),
                };
                let d = match dip {
                    Some(IpAddr::V6(ip)) => ip,
                    _ => "fd00::2".parse::<Ipv6Addr>().unwrap_or(Ipv6Addr::LOCALHOST),
                };
                let payload_len =
                    u16::try_from(l4_len).map_err(|_| field_error("len", "too long for one IPv6 packet"))?;
                let mut ip = [0u8; 40];
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&payload_len.to_be_bytes());
                ip[6] = proto;
                ip[7] = 64;
                ip[8..24].copy_from_slice(&s.octets());
                ip[24..40].copy_from_slice(&d.octets());
                frame.extend_from_slice(&[0x86, 0xdd]);
                frame.extend_from_slice(&ip);
                let mut p = Vec::with_capacity(40);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&(l4_len as u32).to_be_bytes());
                p.extend_from_slice(&[0, 0, 0, proto]);
                p
            };
            let at = match l4 {
                L4::Tcp => Some(16),
                L4::Udp => Some(6),
                L4::Icmp => Some(2),
                L4::None => None,
            };
            if let Some(at) = at {
                // ICMPv4's checksum covers the message only; the others take the pseudo-header.
                let initial = if l3 == L3::V4 && l4 == L4::Icmp { 0 } else { sum(&pseudo, 0) };
                let mut check = !fold(sum(&l4_bytes, initial));
                if l4 == L4::Udp && check == 0 {
                    check = 0xffff;
                }
                l4_bytes[at..at + 2].copy_from_slice(&check.to_be_bytes());
            }
            frame.extend_from_slice(&l4_bytes);
        }
    }
    frame.resize(total.max(frame.len()), 0);
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn fields_build_a_tagged_tcp_segment_with_good_checksums() {
        let f = build("dst=02:00:00:00:00:02,src=02:00:00:00:00:01,vlan=10,pcp=5,ipv4,tcp,dport=80").unwrap();
        assert_eq!(f.len(), 60, "58 bytes of headers, padded to the minimum");
        assert_eq!(&f[0..12], &[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        assert_eq!(&f[12..16], &[0x81, 0x00, 0xa0, 0x0a], "TPID, PCP 5, VID 10");
        assert_eq!(&f[16..18], &[0x08, 0x00]);
        let ip = &f[18..38];
        assert_eq!(fold(sum(ip, 0)), 0xffff, "IPv4 header checksum");
        assert_eq!((ip[9], &ip[12..16], &ip[16..20]), (6, &[10, 0, 0, 1][..], &[10, 0, 0, 2][..]));
        let tcp = &f[38..58];
        assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 80);
        let mut pseudo = [10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 20].to_vec();
        pseudo.extend_from_slice(tcp);
        assert_eq!(fold(sum(&pseudo, 0)), 0xffff, "TCP checksum");
    }

    #[test]
    fn defaults_pad_to_the_minimum_and_len_grows_the_ip_payload() {
        let f = build("ipv4,udp").unwrap();
        assert_eq!(f.len(), 60);
        assert_eq!(&f[0..6], &[0xff; 6], "broadcast by default");
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 28, "IPv4 total length without padding");
        let big = build("dst=02:00:00:00:00:02,udp,len=1600").unwrap();
        assert_eq!(big.len(), 1600);
        assert_eq!(u16::from_be_bytes([big[16], big[17]]) as usize, 1600 - 14);
        let v6 = build("dip=fd00::9,icmp").unwrap();
        assert_eq!(&v6[12..14], &[0x86, 0xdd]);
        assert_eq!(v6[20], 58);
        assert_eq!(v6[54], 128, "echo request");
        let arp = build("arp,sip=10.1.0.1,dip=10.1.0.2").unwrap();
        assert_eq!(&arp[12..14], &[0x08, 0x06]);
        assert_eq!(&arp[38..42], &[10, 1, 0, 2]);
        let raw = build("ethertype=0x88cc").unwrap();
        assert_eq!((&raw[12..14], raw.len()), (&[0x88, 0xcc][..], 60));
    }

    #[test]
    fn hex_bytes_are_taken_as_they_are() {
        let f = build("ff:ff:ff:ff:ff:ff 02:00:00:00:00:01 0806").unwrap();
        assert_eq!(hex(&f), "ffffffffffff0200000000010806");
        assert_eq!(build("0102").unwrap(), vec![1, 2], "a runt is the pipeline's to drop");
        assert!(build("abc").unwrap_err().contains("odd"));
    }

    #[test]
    fn a_bad_field_is_named() {
        for (spec, field) in [
            ("vlan=4095", "`vlan`"),
            ("vlan=x", "`vlan`"),
            ("dst=zz", "`dst`"),
            ("pcp=8", "`pcp`"),
            ("frobnicate", "`frobnicate`"),
            ("ipv4,arp", "`arp`"),
            ("tcp,udp", "`udp`"),
            ("ipv4,dip=fd00::1", "`dip`"),
            ("len=20,ipv4,tcp", "`len`"),
            ("dport=70000", "`dport`"),
            ("ipv4=1", "`ipv4`"),
        ] {
            let error = build(spec).unwrap_err();
            assert!(error.contains(field), "{spec}: {error}");
        }
    }
}
