//! ARP-family frames vswitchd originates or reads: the RARP "learning packet" that announces a
//! MAC address on a link, so switches beyond it move their FDB entry for it (what Open vSwitch
//! sends after a bond failover; the bonding driver sends gratuitous ARPs for the same purpose);
//! and Ethernet/IPv4 ARP requests and replies (RFC 826), read for neighbour suppression, which
//! answers a request with a reply built here.

use super::ethernet::{self, EtherType, Frame, MacAddr};
use std::net::Ipv4Addr;

/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// ARP operation: request.
pub const OP_REQUEST: u16 = 1;
/// ARP operation: reply.
pub const OP_REPLY: u16 = 2;

/// An Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// [`OP_REQUEST`] or [`OP_REPLY`] (or another operation).
    pub op: u16,
    /// Sender hardware address.
    pub sha: MacAddr,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: MacAddr,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

impl Arp {
    /// The ARP packet an untagged `frame` carries, if it is an Ethernet/IPv4 one.
    pub fn parse(frame: &[u8]) -> Option<Arp> {
        if u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) != ETHERTYPE_ARP {
            return None;
        }
        let body = frame.get(ethernet::HEADER_LEN..ethernet::HEADER_LEN + 28)?;
        if body[0..6] != [0, 1, 0x08, 0x00, 6, 4] {
            return None;
        }
        let ip = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
        Some(Arp {
            op: u16::from_be_bytes([body[6], body[7]]),
            sha: MacAddr::from_bytes(&body[8..14]),
            spa: ip(&body[14..18]),
            tha: MacAddr::from_bytes(&body[18..24]),
            tpa: ip(&body[24..28]),
        })
    }

    /// The reply to this request saying `self.tpa` is at `mac`: from `mac` to the asker,
    /// padded to the Ethernet minimum.
    pub fn reply(&self, mac: MacAddr) -> [u8; ANNOUNCEMENT_LEN] {
        let mut bytes = [0u8; ANNOUNCEMENT_LEN];
        let mut frame = Frame::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr(self.sha);
        frame.set_src_addr(mac);
        frame.set_ethertype(EtherType::from(ETHERTYPE_ARP));
        let body = &mut bytes[ethernet::HEADER_LEN..];
        body[0..6].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
        body[6..8].copy_from_slice(&OP_REPLY.to_be_bytes());
        body[8..14].copy_from_slice(&mac.0);
        body[14..18].copy_from_slice(&self.tpa.octets());
        body[18..24].copy_from_slice(&self.sha.0);
        body[24..28].copy_from_slice(&self.spa.octets());
        bytes
    }
}

/// EtherType of RARP.
pub const ETHERTYPE_RARP: u16 = 0x8035;
/// Length of the announcement, padded to the Ethernet minimum (without FCS).
pub const ANNOUNCEMENT_LEN: usize = 60;

/// A broadcast RARP "reverse request" from `mac` about `mac`: carries no addresses anyone
/// acts on, but every switch on the way learns `mac` on the port it came in by.
pub fn rarp_announcement(mac: MacAddr) -> [u8; ANNOUNCEMENT_LEN] {
    let mut bytes = [0u8; ANNOUNCEMENT_LEN];
    let mut frame = Frame::new_unchecked(&mut bytes[..]);
    frame.set_dst_addr(MacAddr::BROADCAST);
    frame.set_src_addr(mac);
    frame.set_ethertype(EtherType::from(ETHERTYPE_RARP));
    let body = &mut bytes[ethernet::HEADER_LEN..];
    body[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    body[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    body[4] = 6; // hardware address length
    body[5] = 4; // protocol address length
    body[6..8].copy_from_slice(&3u16.to_be_bytes()); // operation: reverse request
    body[8..14].copy_from_slice(&mac.0); // sender hardware address; sender IP stays 0
    body[18..24].copy_from_slice(&mac.0); // target hardware address; target IP stays 0
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_layout() {
        let mac = MacAddr([0x02, 0, 0, 0, 0x0f, 0x01]);
        let f = rarp_announcement(mac);
        let expected_head: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // broadcast
            0x02, 0x00, 0x00, 0x00, 0x0f, 0x01, // source: the announced MAC
            0x80, 0x35, // RARP
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x03, // Ethernet/IPv4, 6/4, reverse request
            0x02, 0x00, 0x00, 0x00, 0x0f, 0x01, 0, 0, 0, 0, // sender MAC, 0.0.0.0
            0x02, 0x00, 0x00, 0x00, 0x0f, 0x01, 0, 0, 0, 0, // target MAC, 0.0.0.0
        ];
        assert_eq!(&f[..42], &expected_head);
        assert!(f[42..].iter().all(|&b| b == 0));
        let parsed = etherparse::Ethernet2Slice::from_slice_without_fcs(&f).unwrap();
        assert_eq!(parsed.ether_type().0, ETHERTYPE_RARP);
    }

    #[test]
    fn a_request_and_its_reply() {
        // Who has 10.0.0.2? Tell 10.0.0.1 (02:..:0a), broadcast.
        let request: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x0a, 0x08, 0x06, //
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, //
            0x02, 0, 0, 0, 0, 0x0a, 10, 0, 0, 1, //
            0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
        ];
        let arp = Arp::parse(&request).unwrap();
        assert_eq!(arp.op, OP_REQUEST);
        assert_eq!((arp.spa, arp.tpa), (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(arp.sha, MacAddr([2, 0, 0, 0, 0, 0x0a]));
        let reply = arp.reply(MacAddr([2, 0, 0, 0, 0, 0x0b]));
        let expected: [u8; 42] = [
            0x02, 0, 0, 0, 0, 0x0a, 0x02, 0, 0, 0, 0, 0x0b, 0x08, 0x06, //
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, //
            0x02, 0, 0, 0, 0, 0x0b, 10, 0, 0, 2, //
            0x02, 0, 0, 0, 0, 0x0a, 10, 0, 0, 1,
        ];
        assert_eq!(&reply[..42], &expected);
        assert!(reply[42..].iter().all(|&b| b == 0));
        let back = Arp::parse(&reply).unwrap();
        assert_eq!((back.op, back.spa, back.sha), (OP_REPLY, arp.tpa, MacAddr([2, 0, 0, 0, 0, 0x0b])));
        assert_eq!(Arp::parse(&request[..41]), None, "cut short");
        let mut ipv6 = request;
        ipv6[16] = 0x86;
        assert_eq!(Arp::parse(&ipv6), None, "not IPv4");
        let mut not_arp = request;
        not_arp[13] = 0x00;
        assert_eq!(Arp::parse(&not_arp), None, "not ARP");
    }
}
