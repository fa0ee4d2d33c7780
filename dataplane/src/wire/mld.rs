//! MLD (v1, v2) as a snooping switch reads it: a checked, zero-copy walk over an IPv6 packet,
//! through a hop-by-hop (and destination) options header, to an ICMPv6 MLD message.

use super::checksum;
use super::igmp::{GroupAddr, Message, SnoopError, record_message};

/// IPv6 next-header numbers walked over or looked for.
const HOP_BY_HOP: u8 = 0;
const DEST_OPTS: u8 = 60;
const ICMPV6: u8 = 58;
/// Fixed IPv6 header length.
const HEADER: usize = 40;

/// The destination of an IPv6 packet (the bytes after the Ethernet header and tags), if it has
/// a whole fixed header.
pub fn ipv6_destination(packet: &[u8]) -> Option<GroupAddr> {
    if packet.len() < HEADER || packet[0] >> 4 != 6 {
        return None;
    }
    let mut d = [0u8; 16];
    d.copy_from_slice(&packet[24..40]);
    Some(GroupAddr::V6(d))
}

/// Reads an IPv6 packet: `Ok(false)` if it is not MLD (not IPv6, not ICMPv6, another ICMPv6
/// type), `Ok(true)` after calling `each` for every message it carries, an error if it is MLD
/// but malformed. Reports for link-local-scope groups are skipped.
pub fn snoop(packet: &[u8], mut each: impl FnMut(Message)) -> Result<bool, SnoopError> {
    if packet.len() < HEADER || packet[0] >> 4 != 6 {
        return Ok(false);
    }
    let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    let mut next = packet[6];
    let mut at = HEADER;
    // MLD comes behind a hop-by-hop header (Router Alert); at most two option headers are
    // walked, so a chain of them cannot cost more.
    for _ in 0..2 {
        if next != HOP_BY_HOP && next != DEST_OPTS {
            break;
        }
        let Some(ext) = packet.get(at..at + 2) else { return Ok(false) };
        next = ext[0];
        at += (usize::from(ext[1]) + 1) * 8;
    }
    if next != ICMPV6 {
        return Ok(false);
    }
    let end = HEADER + payload;
    let Some(&kind) = packet.get(at) else { return Ok(false) };
    if !matches!(kind, 130 | 131 | 132 | 143) {
        return Ok(false); // NDP and the rest of ICMPv6
    }
    if end > packet.len() || at + 8 > end {
        return Err(SnoopError::Truncated);
    }
    let mld = &packet[at..end];
    // The pseudo-header: source, destination, upper-layer length, next header.
    let mut sum = checksum::sum(&packet[8..40], 0);
    sum = checksum::sum(&(mld.len() as u32).to_be_bytes(), sum);
    sum = checksum::sum(&[0, 0, 0, ICMPV6], sum);
    if checksum::fold(checksum::sum(mld, sum)) != 0xffff {
        return Err(SnoopError::Checksum);
    }
    let mut report = |m: Message| match m {
        Message::Join(g) | Message::Leave(g) if !g.is_snoopable() => {}
        m => each(m),
    };
    let group_at = |off: usize| -> Result<GroupAddr, SnoopError> {
        let g = mld.get(off..off + 16).ok_or(SnoopError::Truncated)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(g);
        Ok(GroupAddr::V6(a))
    };
    match kind {
        130 => {
            group_at(8)?; // a query is 24 bytes at least
            report(Message::Query);
        }
        131 => report(Message::Join(group_at(8)?)),
        132 => report(Message::Leave(group_at(8)?)),
        _ => {
            let records = u16::from_be_bytes([mld[6], mld[7]]);
            let mut off = 8;
            for _ in 0..records {
                let head = mld.get(off..off + 4).ok_or(SnoopError::Truncated)?;
                let sources = u16::from_be_bytes([head[2], head[3]]);
                let len = 20 + usize::from(sources) * 16 + usize::from(head[1]) * 4;
                if mld.len() < off + len {
                    return Err(SnoopError::Truncated);
                }
                if let Some(m) = record_message(head[0], sources, group_at(off + 4)?) {
                    report(m);
                }
                off += len;
            }
        }
    }
    Ok(true)
}

/// Length of the general query [`general_query`] builds (IPv6 header, hop-by-hop Router
/// Alert, MLDv1 query), without the Ethernet header.
pub const QUERY_LEN: usize = HEADER + 8 + 24;

/// An MLDv1 general query from link-local `source` to ff02::1 (hop limit 1, Router Alert),
/// asking for reports within `max_resp_ms` milliseconds. (Hosts ignore queries from a source
/// that is not link-local, so it cannot be `::`.)
pub fn general_query(source: [u8; 16], max_resp_ms: u16) -> [u8; QUERY_LEN] {
    query(source, [0; 16], max_resp_ms)
}

/// An MLDv1 multicast-address-specific query for `group`, sent to the group itself.
pub fn group_query(source: [u8; 16], group: [u8; 16], max_resp_ms: u16) -> [u8; QUERY_LEN] {
    query(source, group, max_resp_ms)
}

fn query(source: [u8; 16], group: [u8; 16], max_resp_ms: u16) -> [u8; QUERY_LEN] {
    let mut p = [0u8; QUERY_LEN];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&((8 + 24) as u16).to_be_bytes());
    p[6] = HOP_BY_HOP;
    p[7] = 1; // hop limit
    p[8..24].copy_from_slice(&source);
    if group == [0; 16] {
        p[24] = 0xff;
        p[25] = 0x02;
        p[39] = 1;
    } else {
        p[24..40].copy_from_slice(&group);
    }
    // Hop-by-hop: next ICMPv6, length 0, Router Alert (MLD), PadN of 2.
    p[40..48].copy_from_slice(&[ICMPV6, 0, 5, 2, 0, 0, 1, 0]);
    p[48] = 130;
    p[52..54].copy_from_slice(&max_resp_ms.to_be_bytes());
    p[56..72].copy_from_slice(&group);
    let mut sum = checksum::sum(&p[8..40], 0);
    sum = checksum::sum(&24u32.to_be_bytes(), sum);
    sum = checksum::sum(&[0, 0, 0, ICMPV6], sum);
    let sum = !checksum::fold(checksum::sum(&p[48..], sum));
    p[50..52].copy_from_slice(&sum.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const G: [u8; 16] = [0xff, 0x0e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34];

    /// An IPv6 packet to ff02::16 with a hop-by-hop Router Alert, carrying `mld` with its
    /// checksum filled in.
    fn ipv6(mld: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0, 0, 0, HOP_BY_HOP, 1];
        p.extend_from_slice(&SRC);
        p.extend_from_slice(&[0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x16]);
        p.extend_from_slice(&[ICMPV6, 0, 5, 2, 0, 0, 1, 0]);
        let payload = (8 + mld.len()) as u16;
        p[4..6].copy_from_slice(&payload.to_be_bytes());
        let mut m = mld.to_vec();
        let mut sum = checksum::sum(&p[8..40], 0);
        sum = checksum::sum(&(m.len() as u32).to_be_bytes(), sum);
        sum = checksum::sum(&[0, 0, 0, ICMPV6], sum);
        let c = !checksum::fold(checksum::sum(&m, sum));
        m[2..4].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(&m);
        p
    }

    fn messages(packet: &[u8]) -> Result<(bool, Vec<Message>), SnoopError> {
        let mut out = Vec::new();
        let is = snoop(packet, |m| out.push(m))?;
        Ok((is, out))
    }

    fn v1(kind: u8, group: [u8; 16]) -> Vec<u8> {
        let mut m = vec![kind, 0, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&group);
        ipv6(&m)
    }

    #[test]
    fn v1_report_done_and_query() {
        assert_eq!(messages(&v1(131, G)), Ok((true, vec![Message::Join(GroupAddr::V6(G))])));
        assert_eq!(messages(&v1(132, G)), Ok((true, vec![Message::Leave(GroupAddr::V6(G))])));
        assert_eq!(messages(&v1(130, [0; 16])), Ok((true, vec![Message::Query])));
        let mut solicited = [0u8; 16];
        solicited[..2].copy_from_slice(&[0xff, 0x02]);
        assert_eq!(messages(&v1(131, solicited)), Ok((true, vec![])));
    }

    #[test]
    fn v2_records() {
        let mut m = vec![143, 0, 0, 0, 0, 0, 0, 2];
        m.extend_from_slice(&[4, 0, 0, 0]); // TO_EX {}: join
        m.extend_from_slice(&G);
        m.extend_from_slice(&[3, 0, 0, 1]); // TO_IN {one source}: a join without source filtering
        m.extend_from_slice(&G);
        m.extend_from_slice(&SRC);
        assert_eq!(messages(&ipv6(&m)), Ok((true, vec![Message::Join(GroupAddr::V6(G)); 2])));
        let mut leave = vec![143, 0, 0, 0, 0, 0, 0, 1, 3, 0, 0, 0];
        leave.extend_from_slice(&G);
        assert_eq!(messages(&ipv6(&leave)), Ok((true, vec![Message::Leave(GroupAddr::V6(G))])));
    }

    #[test]
    fn malformed_mld_is_an_error_and_ndp_is_not_mld() {
        let mut bad = v1(131, G);
        bad[60] ^= 1;
        assert_eq!(messages(&bad), Err(SnoopError::Checksum));
        let mut cut = vec![143, 0, 0, 0, 0, 0, 0, 3, 4, 0, 0, 0];
        cut.extend_from_slice(&G);
        assert_eq!(messages(&ipv6(&cut)), Err(SnoopError::Truncated));
        let mut ns = v1(135, G);
        ns[6] = ICMPV6; // no hop-by-hop: the ICMPv6 type sits where the option header was
        assert_eq!(messages(&ns), Ok((false, vec![])));
        let full = v1(131, G);
        for len in 0..full.len() {
            let _ = messages(&full[..len]);
        }
    }

    #[test]
    fn the_general_query_is_well_formed() {
        let q = general_query(SRC, 10_000);
        assert_eq!(messages(&q), Ok((true, vec![Message::Query])));
        let (ip, _) = etherparse::Ipv6Header::from_slice(&q).unwrap();
        assert_eq!(ip.hop_limit, 1);
        assert_eq!(ipv6_destination(&q), Some(GroupAddr::V6([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])));
        let g = group_query(SRC, G, 1000);
        assert_eq!(messages(&g), Ok((true, vec![Message::Query])));
        assert_eq!(ipv6_destination(&g), Some(GroupAddr::V6(G)));
        assert_eq!(&g[56..72], &G);
    }
}
