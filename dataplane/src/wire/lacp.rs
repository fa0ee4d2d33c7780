//! IEEE 802.1AX (802.3ad) LACPDUs: the Link Aggregation Control Protocol's one frame format,
//! sent to the Slow Protocols group 01:80:c2:00:00:02 with EtherType 0x8809, subtype 1.
//!
//! Layout after the Ethernet header: subtype, version, then the Actor and Partner information
//! TLVs (type, length 20, system priority, system MAC, key, port priority, port number, state,
//! 3 reserved bytes), the Collector TLV (type 3, length 16, max delay, 12 reserved), the
//! Terminator (type 0, length 0) and 50 reserved bytes: 110 bytes, 124 with the header.

use super::ethernet::{self, EtherType, Frame, MacAddr};

/// The Slow Protocols multicast address.
pub const SLOW_PROTOCOLS_MAC: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x02]);
/// The Slow Protocols EtherType.
pub const ETHERTYPE_SLOW: u16 = 0x8809;
/// Slow Protocols subtype of LACP.
pub const SUBTYPE_LACP: u8 = 1;
/// Bytes of a LACPDU frame (header included, no FCS).
pub const FRAME_LEN: usize = ethernet::HEADER_LEN + 110;

/// Actor/partner state bits.
pub mod state {
    /// Active LACP (else passive).
    pub const ACTIVITY: u8 = 0x01;
    /// Short timeout: the sender wants PDUs every second (else every 30 s).
    pub const TIMEOUT: u8 = 0x02;
    /// The link may be aggregated.
    pub const AGGREGATION: u8 = 0x04;
    /// The link is attached to the right aggregator.
    pub const SYNCHRONIZATION: u8 = 0x08;
    /// Frames received on the link are taken.
    pub const COLLECTING: u8 = 0x10;
    /// Frames are sent on the link.
    pub const DISTRIBUTING: u8 = 0x20;
    /// The partner information is the default (none received).
    pub const DEFAULTED: u8 = 0x40;
    /// The partner information expired.
    pub const EXPIRED: u8 = 0x80;
}

/// One side's description of a link (the Actor or Partner TLV).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortInfo {
    /// System priority.
    pub system_priority: u16,
    /// System identifier.
    pub system: MacAddr,
    /// Aggregation key: links with equal keys may be aggregated.
    pub key: u16,
    /// Port priority.
    pub port_priority: u16,
    /// Port number.
    pub port: u16,
    /// State bits.
    pub state: u8,
}

/// A parsed LACPDU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lacpdu {
    /// The sender's view of itself.
    pub actor: PortInfo,
    /// The sender's view of us.
    pub partner: PortInfo,
}

mod field {
    pub const SUBTYPE: usize = 0;
    pub const VERSION: usize = 1;
    pub const ACTOR: usize = 2;
    pub const PARTNER: usize = 22;
    pub const COLLECTOR: usize = 42;
    pub const TERMINATOR: usize = 58;
}

fn read_info(b: &[u8]) -> PortInfo {
    let u16_at = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    PortInfo {
        system_priority: u16_at(2),
        system: MacAddr::from_bytes(&b[4..10]),
        key: u16_at(10),
        port_priority: u16_at(12),
        port: u16_at(14),
        state: b[16],
    }
}

fn write_info(b: &mut [u8], tlv_type: u8, info: &PortInfo) {
    b[0] = tlv_type;
    b[1] = 20;
    b[2..4].copy_from_slice(&info.system_priority.to_be_bytes());
    b[4..10].copy_from_slice(&info.system.0);
    b[10..12].copy_from_slice(&info.key.to_be_bytes());
    b[12..14].copy_from_slice(&info.port_priority.to_be_bytes());
    b[14..16].copy_from_slice(&info.port.to_be_bytes());
    b[16] = info.state;
}

/// Whether `frame` is a LACPDU (by address, EtherType and subtype).
pub fn is_lacpdu(frame: &[u8]) -> bool {
    Frame::new_checked(frame)
        .is_ok_and(|f| f.ethertype() == EtherType::from(ETHERTYPE_SLOW) && f.payload().first() == Some(&SUBTYPE_LACP))
}

impl Lacpdu {
    /// Parses a LACPDU frame; `None` if it is not a well-formed one.
    pub fn parse(frame: &[u8]) -> Option<Lacpdu> {
        if !is_lacpdu(frame) {
            return None;
        }
        let p = &frame[ethernet::HEADER_LEN..];
        if p.len() < field::TERMINATOR + 2 || p[field::ACTOR] != 1 || p[field::ACTOR + 1] != 20 {
            return None;
        }
        if p[field::PARTNER] != 2 || p[field::PARTNER + 1] != 20 || p[field::VERSION] == 0 {
            return None;
        }
        Some(Lacpdu { actor: read_info(&p[field::ACTOR..]), partner: read_info(&p[field::PARTNER..]) })
    }

    /// The LACPDU as a frame from `source`.
    pub fn emit(&self, source: MacAddr) -> [u8; FRAME_LEN] {
        let mut bytes = [0u8; FRAME_LEN];
        let mut frame = Frame::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr(SLOW_PROTOCOLS_MAC);
        frame.set_src_addr(source);
        frame.set_ethertype(EtherType::from(ETHERTYPE_SLOW));
        let p = frame.payload_mut();
        p[field::SUBTYPE] = SUBTYPE_LACP;
        p[field::VERSION] = 1;
        write_info(&mut p[field::ACTOR..], 1, &self.actor);
        write_info(&mut p[field::PARTNER..], 2, &self.partner);
        p[field::COLLECTOR] = 3;
        p[field::COLLECTOR + 1] = 16;
        // Collector max delay 0, terminator type 0 length 0, reserved: all zero already.
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lacpdu {
        Lacpdu {
            actor: PortInfo {
                system_priority: 65535,
                system: MacAddr([0x02, 0, 0, 0, 0, 0xaa]),
                key: 1,
                port_priority: 255,
                port: 2,
                state: state::ACTIVITY | state::TIMEOUT | state::AGGREGATION,
            },
            partner: PortInfo { state: state::DEFAULTED, ..PortInfo::default() },
        }
    }

    #[test]
    fn layout_is_the_standards() {
        let f = sample().emit(MacAddr([0x02, 0, 0, 0, 0, 0xaa]));
        assert_eq!(f.len(), 124);
        assert_eq!(&f[0..6], &[0x01, 0x80, 0xc2, 0x00, 0x00, 0x02]);
        assert_eq!(&f[12..14], &[0x88, 0x09]);
        let expected_actor: [u8; 22] = [
            0x01, 0x01, // subtype LACP, version 1
            0x01, 0x14, // Actor TLV, length 20
            0xff, 0xff, // system priority 65535
            0x02, 0x00, 0x00, 0x00, 0x00, 0xaa, // system
            0x00, 0x01, // key 1
            0x00, 0xff, // port priority 255
            0x00, 0x02, // port 2
            0x07, // state: activity, short timeout, aggregation
            0x00, 0x00, 0x00, // reserved
        ];
        assert_eq!(&f[14..36], &expected_actor);
        assert_eq!(&f[36..38], &[0x02, 0x14]);
        assert_eq!(f[36 + 16], state::DEFAULTED);
        assert_eq!(&f[56..58], &[0x03, 0x10]);
        assert!(f[58..].iter().all(|&b| b == 0));
    }

    #[test]
    fn round_trip_and_rejections() {
        let f = sample().emit(MacAddr([0x02, 0, 0, 0, 0, 0xaa]));
        assert_eq!(Lacpdu::parse(&f), Some(sample()));
        assert!(is_lacpdu(&f));
        assert_eq!(Lacpdu::parse(&f[..70]), None);
        let mut marker = f;
        marker[14] = 2; // a Marker PDU, not LACP
        assert_eq!(Lacpdu::parse(&marker), None);
        let mut bad_tlv = f;
        bad_tlv[17] = 19;
        assert_eq!(Lacpdu::parse(&bad_tlv), None);
        for cut in 0..f.len() {
            let _ = Lacpdu::parse(&f[..cut]);
        }
    }
}
