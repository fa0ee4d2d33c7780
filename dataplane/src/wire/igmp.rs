//! IGMP (v1, v2, v3) as a snooping switch reads it: checked, zero-copy walks over an IPv4
//! packet that say whether it is IGMP and, if so, what it tells about group membership.
//!
//! The multicast group types ([`GroupAddr`], [`Message`]) are shared with [`super::mld`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;

/// IP protocol number of IGMP.
pub const PROTOCOL: u8 = 2;

/// A multicast group address, IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupAddr {
    /// An IPv4 group (224.0.0.0/4).
    V4([u8; 4]),
    /// An IPv6 group (ff00::/8).
    V6([u8; 16]),
}

impl GroupAddr {
    /// Whether it is a multicast address at all.
    pub fn is_multicast(self) -> bool {
        match self {
            GroupAddr::V4(a) => a[0] & 0xf0 == 0xe0,
            GroupAddr::V6(a) => a[0] == 0xff,
        }
    }

    /// Whether routers never forward it off the link, so snooping must not restrict it:
    /// 224.0.0.0/24 (RFC 4541 2.1.2), and IPv6 groups of interface-, link-local or reserved
    /// scope (ff00::/16, ff01::/16, ff02::/16: all-nodes, solicited-node, MLDv2 routers...).
    pub fn is_link_local(self) -> bool {
        match self {
            GroupAddr::V4(a) => a[0] == 224 && a[1] == 0 && a[2] == 0,
            GroupAddr::V6(a) => a[0] == 0xff && a[1] & 0x0f <= 2,
        }
    }

    /// Whether a host's report for it is taken into the table: a multicast group that is not
    /// link-local.
    pub fn is_snoopable(self) -> bool {
        self.is_multicast() && !self.is_link_local()
    }
}

impl fmt::Display for GroupAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            GroupAddr::V4(a) => Ipv4Addr::from(a).fmt(f),
            GroupAddr::V6(a) => Ipv6Addr::from(a).fmt(f),
        }
    }
}

/// What one IGMP or MLD message (or one record of a v3/v2 report) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// A query (general or group-specific): a multicast router or querier is behind the port.
    Query,
    /// A host behind the port listens to the group.
    Join(GroupAddr),
    /// A host behind the port stopped listening to the group.
    Leave(GroupAddr),
}

/// Why an IGMP or MLD message could not be read. The frame is counted as
/// `DropReason::McastBadReport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SnoopError {
    /// Shorter than its headers or its records say.
    #[error("truncated")]
    Truncated,
    /// The checksum does not match.
    #[error("bad checksum")]
    Checksum,
}

/// IGMPv3 (RFC 3376 4.2.12) and MLDv2 (RFC 3810 5.2.12) record types.
pub(crate) mod record {
    pub const MODE_IS_INCLUDE: u8 = 1;
    pub const CHANGE_TO_INCLUDE: u8 = 3;
    pub const BLOCK_OLD_SOURCES: u8 = 6;
}

/// What a v3 group record means without source filtering, as the Linux bridge takes it: an
/// INCLUDE of no source is a leave, a BLOCK changes nothing, everything else is a join.
pub(crate) fn record_message(kind: u8, sources: u16, group: GroupAddr) -> Option<Message> {
    match kind {
        record::MODE_IS_INCLUDE | record::CHANGE_TO_INCLUDE if sources == 0 => Some(Message::Leave(group)),
        record::BLOCK_OLD_SOURCES => None,
        1..=5 => Some(Message::Join(group)),
        _ => None,
    }
}

/// The IPv4 header's fields this module reads.
mod field {
    pub const TOTAL_LEN: std::ops::Range<usize> = 2..4;
    pub const FRAG: std::ops::Range<usize> = 6..8;
    pub const PROTOCOL: usize = 9;
    pub const DST: std::ops::Range<usize> = 16..20;
    pub const MIN_HEADER: usize = 20;
}

/// The destination of an IPv4 packet (the bytes after the Ethernet header and tags), if it
/// has a whole fixed header.
pub fn ipv4_destination(packet: &[u8]) -> Option<GroupAddr> {
    if packet.len() < field::MIN_HEADER || packet[0] >> 4 != 4 {
        return None;
    }
    let d = &packet[field::DST];
    Some(GroupAddr::V4([d[0], d[1], d[2], d[3]]))
}

/// Reads an IPv4 packet: `Ok(false)` if it is not IGMP (not IPv4, another protocol, a later
/// fragment), `Ok(true)` after calling `each` for every message it carries, an error if it is
/// IGMP but malformed. Reports for groups that are not multicast, or link-local, are skipped.
pub fn snoop(packet: &[u8], mut each: impl FnMut(Message)) -> Result<bool, SnoopError> {
    if packet.len() < field::MIN_HEADER || packet[0] >> 4 != 4 || packet[field::PROTOCOL] != PROTOCOL {
        return Ok(false);
    }
    let frag = u16::from_be_bytes([packet[field::FRAG.start], packet[field::FRAG.start + 1]]);
    if frag & 0x1fff != 0 {
        return Ok(false); // a later fragment has no IGMP header
    }
    if frag & 0x2000 != 0 {
        return Err(SnoopError::Truncated); // IGMP is never fragmented; a first fragment is cut short
    }
    let header = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[field::TOTAL_LEN.start], packet[field::TOTAL_LEN.start + 1]]));
    if header < field::MIN_HEADER || total < header || packet.len() < total {
        return Err(SnoopError::Truncated);
    }
    let igmp = &packet[header..total];
    if igmp.len() < 8 {
        return Err(SnoopError::Truncated);
    }
    if checksum::fold(checksum::sum(igmp, 0)) != 0xffff {
        return Err(SnoopError::Checksum);
    }
    let group = GroupAddr::V4([igmp[4], igmp[5], igmp[6], igmp[7]]);
    let mut report = |m: Message| match m {
        Message::Join(g) | Message::Leave(g) if !g.is_snoopable() => {}
        m => each(m),
    };
    match igmp[0] {
        0x11 => report(Message::Query),
        0x12 | 0x16 => report(Message::Join(group)),
        0x17 => report(Message::Leave(group)),
        0x22 => {
            let records = u16::from_be_bytes([igmp[6], igmp[7]]);
            let mut at = 8;
            for _ in 0..records {
                let head = igmp.get(at..at + 8).ok_or(SnoopError::Truncated)?;
                let sources = u16::from_be_bytes([head[2], head[3]]);
                let len = 8 + usize::from(sources) * 4 + usize::from(head[1]) * 4;
                if igmp.len() < at + len {
                    return Err(SnoopError::Truncated);
                }
                let group = GroupAddr::V4([head[4], head[5], head[6], head[7]]);
                if let Some(m) = record_message(head[0], sources, group) {
                    report(m);
                }
                at += len;
            }
        }
        _ => {} // other IGMP types (DVMRP, mtrace...) say nothing about membership
    }
    Ok(true)
}

/// Length of the general query [`general_query`] builds (IPv4 header with Router Alert, and
/// an IGMPv2 query), without the Ethernet header.
pub const QUERY_LEN: usize = 24 + 8;

/// An IGMPv2 general query from 0.0.0.0 to 224.0.0.1 (TTL 1, Router Alert), asking for
/// reports within `max_resp_tenths` tenths of a second, as the Linux bridge's querier sends.
/// (A v2 query is answered by v2 and v3 hosts alike.)
pub fn general_query(max_resp_tenths: u8) -> [u8; QUERY_LEN] {
    query([0; 4], max_resp_tenths)
}

/// An IGMPv2 group-specific query for `group`, sent to the group itself: do members remain?
pub fn group_query(group: [u8; 4], max_resp_tenths: u8) -> [u8; QUERY_LEN] {
    query(group, max_resp_tenths)
}

fn query(group: [u8; 4], max_resp_tenths: u8) -> [u8; QUERY_LEN] {
    let mut p = [0u8; QUERY_LEN];
    p[0] = 0x46; // version 4, 6 words (Router Alert option)
    p[1] = 0xc0; // DSCP CS6
    p[2..4].copy_from_slice(&(QUERY_LEN as u16).to_be_bytes());
    p[8] = 1; // TTL
    p[9] = PROTOCOL;
    p[16..20].copy_from_slice(if group == [0; 4] { &[224, 0, 0, 1] } else { &group });
    p[20..24].copy_from_slice(&[0x94, 0x04, 0, 0]); // Router Alert
    let sum = !checksum::fold(checksum::sum(&p[..24], 0));
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[24] = 0x11;
    p[25] = max_resp_tenths;
    p[28..32].copy_from_slice(&group);
    let sum = !checksum::fold(checksum::sum(&p[24..], 0));
    p[26..28].copy_from_slice(&sum.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 header (with Router Alert) around `igmp`, its checksum filled in.
    fn ipv4(igmp: &[u8]) -> Vec<u8> {
        let mut p = vec![0x46, 0xc0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 10, 0, 0, 1, 224, 0, 0, 22, 0x94, 4, 0, 0];
        let total = (p.len() + igmp.len()) as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        let mut igmp = igmp.to_vec();
        let sum = !checksum::fold(checksum::sum(&igmp, 0));
        igmp[2..4].copy_from_slice(&sum.to_be_bytes());
        p.extend_from_slice(&igmp);
        p
    }

    fn messages(packet: &[u8]) -> Result<(bool, Vec<Message>), SnoopError> {
        let mut out = Vec::new();
        let is = snoop(packet, |m| out.push(m))?;
        Ok((is, out))
    }

    const G: GroupAddr = GroupAddr::V4([239, 1, 2, 3]);

    #[test]
    fn v2_report_leave_and_query() {
        let report = ipv4(&[0x16, 0, 0, 0, 239, 1, 2, 3]);
        assert_eq!(messages(&report), Ok((true, vec![Message::Join(G)])));
        let v1 = ipv4(&[0x12, 0, 0, 0, 239, 1, 2, 3]);
        assert_eq!(messages(&v1), Ok((true, vec![Message::Join(G)])));
        let leave = ipv4(&[0x17, 0, 0, 0, 239, 1, 2, 3]);
        assert_eq!(messages(&leave), Ok((true, vec![Message::Leave(G)])));
        let query = ipv4(&[0x11, 100, 0, 0, 0, 0, 0, 0]);
        assert_eq!(messages(&query), Ok((true, vec![Message::Query])));
    }

    #[test]
    fn v3_records_join_and_leave_like_the_kernel() {
        #[rustfmt::skip]
        let report = ipv4(&[
            0x22, 0, 0, 0, 0, 0, 0, 4,
            4, 0, 0, 0, 239, 1, 2, 3,                    // TO_EX {}: join
            3, 0, 0, 0, 239, 9, 9, 9,                    // TO_IN {}: leave
            6, 0, 0, 1, 239, 7, 7, 7, 10, 0, 0, 9,       // BLOCK {10.0.0.9}: nothing
            2, 1, 0, 0, 224, 0, 0, 251, 0xaa, 0, 0, 0,   // IS_EX on a link-local group (aux data): skipped
        ]);
        let leave = Message::Leave(GroupAddr::V4([239, 9, 9, 9]));
        assert_eq!(messages(&report), Ok((true, vec![Message::Join(G), leave])));
    }

    #[test]
    fn malformed_igmp_is_an_error_and_other_protocols_are_not_igmp() {
        let mut bad = ipv4(&[0x16, 0, 0, 0, 239, 1, 2, 3]);
        bad[27] ^= 1;
        assert_eq!(messages(&bad), Err(SnoopError::Checksum));
        let short = ipv4(&[0x22, 0, 0, 0, 0, 0, 0, 2, 4, 0, 0, 0, 239, 1, 2, 3]);
        assert_eq!(messages(&short), Err(SnoopError::Truncated));
        let mut cut = ipv4(&[0x16, 0, 0, 0, 239, 1, 2, 3]);
        cut.truncate(28);
        assert_eq!(messages(&cut), Err(SnoopError::Truncated));
        let mut udp = ipv4(&[0x16, 0, 0, 0, 239, 1, 2, 3]);
        udp[9] = 17;
        assert_eq!(messages(&udp), Ok((false, vec![])));
        assert_eq!(messages(&[0x45; 10]), Ok((false, vec![])));
        for len in 0..ipv4(&[0x22, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 239, 1, 2, 3]).len() {
            let p = ipv4(&[0x22, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 239, 1, 2, 3]);
            let _ = messages(&p[..len]);
        }
    }

    #[test]
    fn the_general_query_is_well_formed() {
        let q = general_query(100);
        assert_eq!(messages(&q), Ok((true, vec![Message::Query])));
        let parsed = etherparse::Ipv4HeaderSlice::from_slice(&q).unwrap();
        assert_eq!(parsed.ttl(), 1);
        assert_eq!(parsed.header_checksum(), parsed.to_header().calc_header_checksum());
    }

    #[test]
    fn a_group_query_goes_to_its_group() {
        let q = group_query([239, 1, 2, 3], 10);
        assert_eq!(messages(&q), Ok((true, vec![Message::Query])));
        assert_eq!(ipv4_destination(&q), Some(G));
        assert_eq!(&q[28..32], &[239, 1, 2, 3]);
        let parsed = etherparse::Ipv4HeaderSlice::from_slice(&q).unwrap();
        assert_eq!(parsed.header_checksum(), parsed.to_header().calc_header_checksum());
    }

    #[test]
    fn link_local_groups() {
        assert!(GroupAddr::V4([224, 0, 0, 251]).is_link_local());
        assert!(!GroupAddr::V4([224, 0, 1, 1]).is_link_local());
        assert!(!GroupAddr::V4([10, 0, 0, 1]).is_multicast());
        let mut ff02 = [0u8; 16];
        ff02[0] = 0xff;
        ff02[1] = 0x02;
        assert!(GroupAddr::V6(ff02).is_link_local());
        ff02[1] = 0x0e;
        assert!(GroupAddr::V6(ff02).is_snoopable());
        assert_eq!(G.to_string(), "239.1.2.3");
    }
}
