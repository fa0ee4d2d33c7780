//! Ethernet II frames: the MAC address type, the EtherType enum and the frame view.

use std::fmt;
use std::str::FromStr;

use super::Error;

/// A 48-bit IEEE 802 MAC address.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Builds an address from the first six bytes of `bytes`. Panics if there are fewer;
    /// views call it only on ranges `check_len` has validated.
    pub fn from_bytes(bytes: &[u8]) -> MacAddr {
        let mut octets = [0u8; 6];
        octets.copy_from_slice(&bytes[..6]);
        MacAddr(octets)
    }

    /// The group bit (I/G) is set: multicast, including broadcast.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// ff:ff:ff:ff:ff:ff.
    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    /// All zero.
    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }

    /// A unicast, non-zero address: the only kind a bridge may learn as a source.
    pub fn is_valid_source(self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// 01:80:c2:00:00:00 to 01:80:c2:00:00:0f: IEEE 802.1D reserved link-local groups
    /// (STP, pause, LACP, 802.1X, LLDP) that a bridge must not forward.
    pub fn is_link_local_reserved(self) -> bool {
        self.0[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && self.0[5] & 0xf0 == 0
    }

    /// The address as a 48-bit integer, for compact keys.
    pub fn to_u64(self) -> u64 {
        self.0.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a MAC address (expected six hex octets like 02:00:00:00:00:01): {0:?}")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<MacAddr, ParseMacError> {
        let err = || ParseMacError(s.to_string());
        let mut octets = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(octets))
    }
}

/// The EtherType field. Lossless: any value round-trips through `Unknown`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// 0x0800
    Ipv4,
    /// 0x0806
    Arp,
    /// 0x8100: an IEEE 802.1Q customer tag follows.
    Vlan,
    /// 0x88a8: an IEEE 802.1ad service tag follows.
    QinQ,
    /// 0x86dd
    Ipv6,
    /// Anything else, kept as read.
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(raw: u16) -> EtherType {
        match raw {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x8100 => EtherType::Vlan,
            0x88a8 => EtherType::QinQ,
            0x86dd => EtherType::Ipv6,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(t: EtherType) -> u16 {
        match t {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Vlan => 0x8100,
            EtherType::QinQ => 0x88a8,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(raw) => raw,
        }
    }
}

mod field {
    use std::ops::{Range, RangeFrom};
    pub const DESTINATION: Range<usize> = 0..6;
    pub const SOURCE: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    pub const PAYLOAD: RangeFrom<usize> = 14..;
}

/// Bytes in an Ethernet II header (no FCS: TAP devices and packet sockets carry none).
pub const HEADER_LEN: usize = field::PAYLOAD.start;

/// A view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct Frame<B> {
    buffer: B,
}

impl<B: AsRef<[u8]>> Frame<B> {
    /// Wraps `buffer` without checking its length.
    pub fn new_unchecked(buffer: B) -> Frame<B> {
        Frame { buffer }
    }

    /// Wraps `buffer` after checking that it holds a whole header.
    pub fn new_checked(buffer: B) -> Result<Frame<B>, Error> {
        let frame = Frame::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Succeeds if the buffer holds a whole Ethernet header.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN { Err(Error::Truncated { len, need: HEADER_LEN }) } else { Ok(()) }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> B {
        self.buffer
    }

    /// Destination address.
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::DESTINATION])
    }

    /// Source address.
    pub fn src_addr(&self) -> MacAddr {
        MacAddr::from_bytes(&self.buffer.as_ref()[field::SOURCE])
    }

    /// EtherType (or the TPID of the first tag).
    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType::from(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Everything after the 14-byte header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Frame<B> {
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        let raw = u16::from(ethertype).to_be_bytes();
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&raw);
    }

    /// Everything after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ARP request as a Linux TAP emits it (42 bytes, no padding, no FCS).
    static ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // destination: broadcast
        0x02, 0x00, 0x00, 0x00, 0x0f, 0x01, // source: 02:00:00:00:0f:01
        0x08, 0x06, // EtherType: ARP
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype 1, ptype IPv4, hlen 6, plen 4, op request
        0x02, 0x00, 0x00, 0x00, 0x0f, 0x01, 0xc0, 0xa8, 0x0f, 0x01, // sender MAC, 192.168.15.1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xa8, 0x0f, 0x02, // target MAC, 192.168.15.2
    ];

    #[test]
    fn deconstruct() {
        let frame = Frame::new_checked(&ARP_REQUEST[..]).unwrap();
        assert_eq!(frame.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(frame.src_addr(), MacAddr([0x02, 0, 0, 0, 0x0f, 0x01]));
        assert_eq!(frame.ethertype(), EtherType::Arp);
        assert_eq!(frame.payload(), &ARP_REQUEST[14..]);
    }

    #[test]
    fn construct_writes_every_header_byte() {
        let mut bytes = [0xa5u8; 42];
        let mut frame = Frame::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr(MacAddr::BROADCAST);
        frame.set_src_addr(MacAddr([0x02, 0, 0, 0, 0x0f, 0x01]));
        frame.set_ethertype(EtherType::Arp);
        frame.payload_mut().copy_from_slice(&ARP_REQUEST[14..]);
        assert_eq!(bytes, ARP_REQUEST);
    }

    #[test]
    fn truncated_header_is_rejected() {
        assert_eq!(Frame::new_checked(&ARP_REQUEST[..13]).unwrap_err(), Error::Truncated { len: 13, need: 14 });
        assert!(Frame::new_checked(&ARP_REQUEST[..14]).unwrap().payload().is_empty());
    }

    #[test]
    fn agrees_with_etherparse() {
        let eth = etherparse::Ethernet2Slice::from_slice_without_fcs(&ARP_REQUEST).unwrap();
        let frame = Frame::new_checked(&ARP_REQUEST[..]).unwrap();
        assert_eq!(frame.dst_addr().0, eth.destination());
        assert_eq!(frame.src_addr().0, eth.source());
        assert_eq!(u16::from(frame.ethertype()), eth.ether_type().0);
    }

    #[test]
    fn ethertype_is_lossless() {
        for raw in [0x0800u16, 0x0806, 0x8100, 0x88a8, 0x86dd, 0x88cc, 0x0000, 0xffff] {
            assert_eq!(u16::from(EtherType::from(raw)), raw);
        }
        assert_eq!(EtherType::from(0x88cc), EtherType::Unknown(0x88cc));
    }

    #[test]
    fn mac_classification() {
        assert!(MacAddr::BROADCAST.is_multicast() && MacAddr::BROADCAST.is_broadcast());
        assert!("01:00:5e:00:00:01".parse::<MacAddr>().unwrap().is_multicast());
        assert!(!MacAddr::ZERO.is_valid_source());
        assert!("02:00:00:00:00:01".parse::<MacAddr>().unwrap().is_valid_source());
        assert!("01:80:c2:00:00:00".parse::<MacAddr>().unwrap().is_link_local_reserved());
        assert!("01:80:c2:00:00:0e".parse::<MacAddr>().unwrap().is_link_local_reserved());
        assert!(!"01:80:c2:00:00:10".parse::<MacAddr>().unwrap().is_link_local_reserved());
    }

    #[test]
    fn mac_text_round_trip_and_rejections() {
        let mac: MacAddr = "02:AB:cd:00:0f:01".parse().unwrap();
        assert_eq!(mac.to_string(), "02:ab:cd:00:0f:01");
        assert_eq!("02-ab-cd-00-0f-01".parse::<MacAddr>().unwrap(), mac);
        assert_eq!(mac.to_u64(), 0x02ab_cd00_0f01);
        for bad in ["", "02:00:00:00:00", "02:00:00:00:00:01:02", "2:00:00:00:00:01", "zz:00:00:00:00:01"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad:?} accepted");
        }
    }
}
