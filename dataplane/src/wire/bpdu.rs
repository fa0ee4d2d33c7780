//! IEEE 802.1D spanning tree BPDUs: Configuration and Topology Change Notification BPDUs
//! (802.1D-1998 STP) and Rapid Spanning Tree BPDUs (802.1D-2004 clause 9), carried in 802.3
//! frames with an LLC header (DSAP 0x42, SSAP 0x42, UI) to 01:80:c2:00:00:00.
//!
//! Layout after the LLC header: protocol identifier (2, zero), version (0 STP, 2 RSTP), type
//! (0x00 Configuration, 0x80 TCN, 0x02 RST), then for Configuration and RST BPDUs: flags, root
//! identifier (8), root path cost (4), bridge identifier (8), port identifier (2), message age,
//! max age, hello time and forward delay (2 each, in 1/256 s), and for RST BPDUs the Version 1
//! Length (1, zero). Configuration BPDUs are 35 bytes, RST BPDUs 36, TCNs 4.

use super::ethernet::{self, Frame, MacAddr};

/// The Bridge Group Address every BPDU is sent to.
pub const BRIDGE_GROUP_MAC: MacAddr = MacAddr([0x01, 0x80, 0xc2, 0x00, 0x00, 0x00]);
/// The LLC header of a BPDU: DSAP and SSAP 0x42 (spanning tree), control 3 (UI).
pub const LLC: [u8; 3] = [0x42, 0x42, 0x03];
/// Bytes of a frame carrying any BPDU: the minimum Ethernet frame (no FCS), padded.
pub const FRAME_LEN: usize = 60;

/// BPDU flag bits.
pub mod flags {
    /// Topology Change.
    pub const TC: u8 = 0x01;
    /// Proposal (RST only).
    pub const PROPOSAL: u8 = 0x02;
    /// Port role mask (RST only), shifted by [`ROLE_SHIFT`].
    pub const ROLE_MASK: u8 = 0x0c;
    /// Where the role sits in the flags.
    pub const ROLE_SHIFT: u8 = 2;
    /// Learning (RST only).
    pub const LEARNING: u8 = 0x10;
    /// Forwarding (RST only).
    pub const FORWARDING: u8 = 0x20;
    /// Agreement (RST only).
    pub const AGREEMENT: u8 = 0x40;
    /// Topology Change Acknowledgment.
    pub const TC_ACK: u8 = 0x80;
}

/// The role an RST BPDU's sender gives its port (the flags' role field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpduRole {
    /// 0: unknown (treated like designated by the receiver, as for a Configuration BPDU).
    Unknown,
    /// 1: alternate or backup.
    AlternateBackup,
    /// 2: root.
    Root,
    /// 3: designated.
    Designated,
}

impl BpduRole {
    fn from_bits(bits: u8) -> BpduRole {
        match (bits & flags::ROLE_MASK) >> flags::ROLE_SHIFT {
            1 => BpduRole::AlternateBackup,
            2 => BpduRole::Root,
            3 => BpduRole::Designated,
            _ => BpduRole::Unknown,
        }
    }

    fn bits(self) -> u8 {
        let n = match self {
            BpduRole::Unknown => 0,
            BpduRole::AlternateBackup => 1,
            BpduRole::Root => 2,
            BpduRole::Designated => 3,
        };
        n << flags::ROLE_SHIFT
    }
}

/// What kind of BPDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpduKind {
    /// An 802.1D-1998 Configuration BPDU.
    Config,
    /// A Topology Change Notification.
    Tcn,
    /// A Rapid Spanning Tree BPDU (version 2, or higher read as 2).
    Rst,
}

/// A parsed BPDU. Times are in 1/256 s, as on the wire; a TCN carries only its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bpdu {
    /// Configuration, TCN or RST.
    pub kind: BpduKind,
    /// Flag bits ([`flags`]).
    pub flags: u8,
    /// Root bridge identifier (priority in the top 16 bits, MAC below).
    pub root_id: u64,
    /// The sender's cost to the root.
    pub root_path_cost: u32,
    /// The sender's bridge identifier.
    pub bridge_id: u64,
    /// The sender's port identifier.
    pub port_id: u16,
    /// Age of the root's information.
    pub message_age: u16,
    /// Max age.
    pub max_age: u16,
    /// Hello time.
    pub hello_time: u16,
    /// Forward delay.
    pub forward_delay: u16,
}

/// Why bytes sent to the Bridge Group Address are not a BPDU this bridge takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BpduError {
    /// No 802.3 length field, wrong LLC header or protocol identifier.
    #[error("not an 802.1D BPDU")]
    NotBpdu,
    /// Shorter than its type needs, or an unknown type.
    #[error("malformed BPDU")]
    Malformed,
}

impl Bpdu {
    /// The sender's port role (RST BPDUs; [`BpduRole::Unknown`] otherwise).
    pub fn role(&self) -> BpduRole {
        match self.kind {
            BpduKind::Rst => BpduRole::from_bits(self.flags),
            _ => BpduRole::Unknown,
        }
    }

    /// Parses a frame to the Bridge Group Address. Padding beyond the BPDU is ignored.
    pub fn parse(frame: &[u8]) -> Result<Bpdu, BpduError> {
        let f = Frame::new_checked(frame).map_err(|_| BpduError::NotBpdu)?;
        let length = u16::from_be_bytes([frame[12], frame[13]]);
        if f.dst_addr() != BRIDGE_GROUP_MAC || length > 1500 {
            return Err(BpduError::NotBpdu);
        }
        let end = (ethernet::HEADER_LEN + usize::from(length)).min(frame.len());
        let p = &frame[ethernet::HEADER_LEN..end];
        if p.len() < 3 || p[..3] != LLC {
            return Err(BpduError::NotBpdu);
        }
        let b = &p[3..];
        if b.len() < 4 {
            return Err(BpduError::Malformed);
        }
        if b[0] != 0 || b[1] != 0 {
            return Err(BpduError::NotBpdu);
        }
        let kind = match (b[2], b[3]) {
            (_, 0x80) => BpduKind::Tcn,
            (_, 0x00) => BpduKind::Config,
            (v, 0x02) if v >= 2 => BpduKind::Rst,
            _ => return Err(BpduError::Malformed),
        };
        let empty = Bpdu {
            kind,
            flags: 0,
            root_id: 0,
            root_path_cost: 0,
            bridge_id: 0,
            port_id: 0,
            message_age: 0,
            max_age: 0,
            hello_time: 0,
            forward_delay: 0,
        };
        if kind == BpduKind::Tcn {
            return Ok(empty);
        }
        let need = if kind == BpduKind::Rst { 36 } else { 35 };
        if b.len() < need {
            return Err(BpduError::Malformed);
        }
        let u16_at = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
        let u64_at = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        Ok(Bpdu {
            flags: b[4],
            root_id: u64_at(5),
            root_path_cost: u32::from_be_bytes([b[13], b[14], b[15], b[16]]),
            bridge_id: u64_at(17),
            port_id: u16_at(25),
            message_age: u16_at(27),
            max_age: u16_at(29),
            hello_time: u16_at(31),
            forward_delay: u16_at(33),
            ..empty
        })
    }

    /// A Configuration or RST BPDU with `role` put into the flags (RST only).
    pub fn with_role(mut self, role: BpduRole) -> Bpdu {
        self.flags = (self.flags & !flags::ROLE_MASK) | role.bits();
        self
    }

    /// The BPDU as a frame from `source`, padded to [`FRAME_LEN`].
    pub fn emit(&self, source: MacAddr) -> [u8; FRAME_LEN] {
        let mut bytes = [0u8; FRAME_LEN];
        let mut frame = Frame::new_unchecked(&mut bytes[..]);
        frame.set_dst_addr(BRIDGE_GROUP_MAC);
        frame.set_src_addr(source);
        let len: u16 = match self.kind {
            BpduKind::Tcn => 3 + 4,
            BpduKind::Config => 3 + 35,
            BpduKind::Rst => 3 + 36,
        };
        bytes[12..14].copy_from_slice(&len.to_be_bytes());
        bytes[14..17].copy_from_slice(&LLC);
        let b = &mut bytes[17..];
        let (version, kind) = match self.kind {
            BpduKind::Tcn => (0, 0x80),
            BpduKind::Config => (0, 0x00),
            BpduKind::Rst => (2, 0x02),
        };
        b[2] = version;
        b[3] = kind;
        if self.kind == BpduKind::Tcn {
            return bytes;
        }
        b[4] = if self.kind == BpduKind::Config { self.flags & (flags::TC | flags::TC_ACK) } else { self.flags };
        b[5..13].copy_from_slice(&self.root_id.to_be_bytes());
        b[13..17].copy_from_slice(&self.root_path_cost.to_be_bytes());
        b[17..25].copy_from_slice(&self.bridge_id.to_be_bytes());
        b[25..27].copy_from_slice(&self.port_id.to_be_bytes());
        b[27..29].copy_from_slice(&self.message_age.to_be_bytes());
        b[29..31].copy_from_slice(&self.max_age.to_be_bytes());
        b[31..33].copy_from_slice(&self.hello_time.to_be_bytes());
        b[33..35].copy_from_slice(&self.forward_delay.to_be_bytes());
        // RST: Version 1 Length 0 at b[35], zero already.
        bytes
    }
}

/// Whether `frame` is addressed to the Bridge Group Address (a BPDU, or an attempt at one).
pub fn is_bridge_group(frame: &[u8]) -> bool {
    frame.get(..6) == Some(&BRIDGE_GROUP_MAC.0[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);

    fn sample(kind: BpduKind) -> Bpdu {
        Bpdu {
            kind,
            flags: flags::TC | flags::AGREEMENT | flags::PROPOSAL | flags::FORWARDING,
            root_id: 0x8000_0200_0000_0001,
            root_path_cost: 20_000,
            bridge_id: 0x1000_0200_0000_0002,
            port_id: 0x8003,
            message_age: 256,
            max_age: 20 * 256,
            hello_time: 2 * 256,
            forward_delay: 15 * 256,
        }
        .with_role(BpduRole::Designated)
    }

    #[test]
    fn rst_layout_is_the_standards() {
        let f = sample(BpduKind::Rst).emit(SRC);
        assert_eq!(&f[0..6], &BRIDGE_GROUP_MAC.0);
        assert_eq!(&f[12..14], &[0, 39]);
        assert_eq!(&f[14..17], &[0x42, 0x42, 0x03]);
        let expected: [u8; 36] = [
            0x00, 0x00, 0x02, 0x02, // protocol 0, version 2, type RST
            0x6f, // flags: TC, proposal, designated, forwarding, agreement
            0x80, 0x00, 0x02, 0, 0, 0, 0, 0x01, // root id
            0x00, 0x00, 0x4e, 0x20, // cost 20000
            0x10, 0x00, 0x02, 0, 0, 0, 0, 0x02, // bridge id
            0x80, 0x03, // port id
            0x01, 0x00, 0x14, 0x00, 0x02, 0x00, 0x0f, 0x00, // ages and times
            0x00, // version 1 length
        ];
        assert_eq!(&f[17..53], &expected);
        assert!(f[53..].iter().all(|&b| b == 0));
        assert_eq!(Bpdu::parse(&f), Ok(sample(BpduKind::Rst)));
        assert_eq!(Bpdu::parse(&f).unwrap().role(), BpduRole::Designated);
    }

    #[test]
    fn config_keeps_only_tc_flags_and_tcn_is_four_bytes() {
        let f = sample(BpduKind::Config).emit(SRC);
        assert_eq!(&f[12..14], &[0, 38]);
        assert_eq!(f[17 + 4], flags::TC);
        let parsed = Bpdu::parse(&f).unwrap();
        assert_eq!(parsed.kind, BpduKind::Config);
        assert_eq!(parsed.role(), BpduRole::Unknown);
        assert_eq!(parsed.root_id, 0x8000_0200_0000_0001);
        let tcn = Bpdu { kind: BpduKind::Tcn, ..sample(BpduKind::Tcn) }.emit(SRC);
        assert_eq!(&tcn[12..21], &[0, 7, 0x42, 0x42, 0x03, 0, 0, 0, 0x80]);
        assert_eq!(Bpdu::parse(&tcn).unwrap().kind, BpduKind::Tcn);
    }

    #[test]
    fn rejections_and_no_panic_on_any_cut() {
        let f = sample(BpduKind::Rst).emit(SRC);
        for cut in 0..f.len() {
            let _ = Bpdu::parse(&f[..cut]);
        }
        assert_eq!(Bpdu::parse(&f[..40]), Err(BpduError::Malformed));
        let mut llc = f;
        llc[14] = 0xaa;
        assert_eq!(Bpdu::parse(&llc), Err(BpduError::NotBpdu));
        let mut proto = f;
        proto[17] = 1;
        assert_eq!(Bpdu::parse(&proto), Err(BpduError::NotBpdu));
        let mut kind = f;
        kind[20] = 0x33;
        assert_eq!(Bpdu::parse(&kind), Err(BpduError::Malformed));
        let mut ethertype = f;
        ethertype[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(Bpdu::parse(&ethertype), Err(BpduError::NotBpdu));
        // A length field shorter than the BPDU cuts it.
        let mut short = f;
        short[12..14].copy_from_slice(&[0, 20]);
        assert_eq!(Bpdu::parse(&short), Err(BpduError::Malformed));
        assert!(is_bridge_group(&f));
    }
}
