//! ARP-family frames vswitchd originates: the RARP "learning packet" that announces a MAC
//! address on a link, so switches beyond it move their FDB entry for it (what Open vSwitch
//! sends after a bond failover; the bonding driver sends gratuitous ARPs for the same purpose).

use super::ethernet::{self, EtherType, Frame, MacAddr};

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
}
