//! IEEE 802.1Q VLANs as two pure translations keyed by the port's mode: [`ingress`] turns a
//! received frame into (VLAN, priority, how many tag bytes to strip), and [`egress`] says what
//! tag, if any, a frame of a VLAN gets on the way out of a port, or that the port does not
//! carry that VLAN at all.
//!
//! Inside the bridge a frame is "untagged relative to its VLAN": the port-level tag is
//! stripped (zero-copy: the event loop skips those 4 bytes when it writes) and the VLAN travels
//! as metadata. Tags inside it — a customer's 802.1Q tag carried through an 802.1ad service
//! VLAN — are payload and are never touched.
//!
//! Modes (after Open vSwitch's `access`, `trunk`, `native-untagged` and `dot1q-tunnel`):
//! - [`VlanMode::Transparent`]: no VLAN configuration. Every frame, tagged or not, belongs to
//!   VLAN 0 and passes unchanged, as on a kernel bridge without VLAN filtering.
//! - [`VlanMode::Access`]: untagged (or priority-tagged) in and out, in one VLAN.
//! - [`VlanMode::Trunk`]: tagged with `tpid` for the allowed VLANs; untagged frames belong to
//!   `native` (and leave untagged) if set, else are dropped. `tpid` 0x8100 is an 802.1Q trunk,
//!   0x88a8 an 802.1ad (QinQ) service trunk whose frames may carry a customer tag inside.
//! - [`VlanMode::Dot1qTunnel`]: a QinQ customer port: whatever arrives, tagged or not, is put
//!   in the service VLAN whole; on the way out the service tag is removed again.

use std::fmt;

use crate::VlanId;
use crate::verdict::DropReason;
use crate::wire::ethernet::{self, EtherType};
use crate::wire::vlan::{TAG_LEN, Tag};

/// TPID of an IEEE 802.1Q customer tag.
pub const TPID_8021Q: u16 = 0x8100;
/// TPID of an IEEE 802.1ad service tag.
pub const TPID_8021AD: u16 = 0x88a8;

/// A set of VLAN ids, as a 4096-bit bitmap.
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet([u64; 64]);

impl VlanSet {
    /// The empty set.
    pub const EMPTY: VlanSet = VlanSet([0; 64]);

    /// Adds `vlan`.
    pub fn insert(&mut self, vlan: VlanId) {
        self.0[usize::from(vlan.get()) / 64] |= 1 << (vlan.get() % 64);
    }

    /// Whether `vlan` is in the set.
    pub fn contains(&self, vlan: VlanId) -> bool {
        self.0[usize::from(vlan.get()) / 64] & (1 << (vlan.get() % 64)) != 0
    }

    /// The members, in order.
    pub fn iter(&self) -> impl Iterator<Item = VlanId> + '_ {
        (0..=VlanId::MAX).filter_map(VlanId::new).filter(|v| self.contains(*v))
    }
}

impl FromIterator<VlanId> for VlanSet {
    fn from_iter<I: IntoIterator<Item = VlanId>>(iter: I) -> VlanSet {
        let mut set = VlanSet::EMPTY;
        for v in iter {
            set.insert(v);
        }
        set
    }
}

impl fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(VlanId::get)).finish()
    }
}

/// How a port treats VLANs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VlanMode {
    /// No VLAN configuration: everything is VLAN 0, frames pass unchanged.
    #[default]
    Transparent,
    /// Untagged in one VLAN.
    Access(VlanId),
    /// Tagged for `allowed` (with `tpid`); untagged frames in `native`, if any.
    Trunk {
        /// VLANs carried tagged.
        allowed: Box<VlanSet>,
        /// The VLAN of untagged frames.
        native: Option<VlanId>,
        /// The tag's TPID (0x8100 or 0x88a8).
        tpid: u16,
    },
    /// QinQ customer port: everything goes into the service VLAN whole.
    Dot1qTunnel(VlanId),
}

impl VlanMode {
    /// Whether frames of `vlan` may leave through this port.
    pub fn carries(&self, vlan: VlanId) -> bool {
        match self {
            VlanMode::Transparent => vlan == VlanId::NONE,
            VlanMode::Access(v) | VlanMode::Dot1qTunnel(v) => *v == vlan,
            VlanMode::Trunk { allowed, native, .. } => allowed.contains(vlan) || *native == Some(vlan),
        }
    }

    /// A short description for `show`: `access 10`, `trunk 10,20 native 1`, ...
    pub fn describe(&self) -> String {
        match self {
            VlanMode::Transparent => "-".into(),
            VlanMode::Access(v) => format!("access {v}"),
            VlanMode::Dot1qTunnel(v) => format!("dot1q-tunnel {v}"),
            VlanMode::Trunk { allowed, native, tpid } => {
                let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
                let mut text = format!("trunk {}", list.join(","));
                if let Some(n) = native {
                    text.push_str(&format!(" native {n}"));
                }
                if *tpid == TPID_8021AD {
                    text.push_str(" 802.1ad");
                }
                text
            }
        }
    }
}

/// Where a received frame belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// Its VLAN.
    pub vlan: VlanId,
    /// Its priority (PCP), from the stripped tag, else 0.
    pub pcp: u8,
    /// Tag bytes to skip at offset 12 (0 or 4).
    pub strip: usize,
}

/// A tag to push after the MAC addresses on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushTag {
    /// TPID.
    pub tpid: u16,
    /// Tag control information: PCP (3 bits), DEI (0), VID (12 bits).
    pub tci: u16,
}

impl PushTag {
    /// The 4 tag bytes, as they go on the wire.
    pub fn bytes(self) -> [u8; TAG_LEN] {
        let [a, b] = self.tpid.to_be_bytes();
        let [c, d] = self.tci.to_be_bytes();
        [a, b, c, d]
    }
}

/// What a port does to a frame of some VLAN on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// The port does not carry the VLAN: do not send.
    NotCarried,
    /// Send as is (untagged relative to the VLAN).
    Untagged,
    /// Push this tag.
    Tagged(PushTag),
}

fn tpid_at(frame: &[u8], offset: usize) -> Option<u16> {
    frame.get(offset..offset + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn is_tpid(value: u16) -> bool {
    matches!(EtherType::from(value), EtherType::Vlan | EtherType::QinQ)
}

/// Classifies a frame (whose Ethernet header is known to be whole) arriving on a port in `mode`.
pub fn ingress(mode: &VlanMode, frame: &[u8]) -> Result<Classified, DropReason> {
    const AT: usize = ethernet::HEADER_LEN - 2; // the EtherType/TPID field
    if *mode == VlanMode::Transparent {
        return Ok(Classified { vlan: VlanId::NONE, pcp: 0, strip: 0 });
    }
    let outer = tpid_at(frame, AT).unwrap_or(0);
    let tag = if is_tpid(outer) {
        let tag = Tag::new_checked(&frame[ethernet::HEADER_LEN..]).map_err(|_| DropReason::BadVlanTag)?;
        if tag.vid() == 0xfff {
            return Err(DropReason::BadVlanTag);
        }
        Some((outer, tag.vid(), tag.pcp(), u16::from(tag.inner_ethertype())))
    } else {
        None
    };
    let untagged = |vlan: VlanId, pcp: u8, strip: usize| Ok(Classified { vlan, pcp, strip });
    match mode {
        VlanMode::Transparent => untagged(VlanId::NONE, 0, 0), // handled above
        VlanMode::Dot1qTunnel(service) => untagged(*service, tag.map_or(0, |t| t.2), 0),
        VlanMode::Access(vlan) => match tag {
            None => untagged(*vlan, 0, 0),
            // Priority-tagged (VID 0): untagged with a priority.
            Some((TPID_8021Q, 0, pcp, inner)) if !is_tpid(inner) => untagged(*vlan, pcp, TAG_LEN),
            Some((_, _, _, inner)) if is_tpid(inner) => Err(DropReason::DoubleTagged),
            Some(_) => Err(DropReason::VlanNotAllowed),
        },
        VlanMode::Trunk { allowed, native, tpid } => match tag {
            None => native.map_or(Err(DropReason::UntaggedNotAllowed), |n| untagged(n, 0, 0)),
            Some((outer, ..)) if outer != *tpid => Err(DropReason::WrongTpid),
            // An 802.1Q trunk does not take stacked tags; an 802.1ad one carries them inside.
            Some((_, _, _, inner)) if *tpid == TPID_8021Q && is_tpid(inner) => Err(DropReason::DoubleTagged),
            Some((_, 0, pcp, _)) => native.map_or(Err(DropReason::UntaggedNotAllowed), |n| untagged(n, pcp, TAG_LEN)),
            Some((_, vid, pcp, _)) => {
                let vlan = VlanId::new(vid).ok_or(DropReason::BadVlanTag)?;
                if allowed.contains(vlan) { untagged(vlan, pcp, TAG_LEN) } else { Err(DropReason::VlanNotAllowed) }
            }
        },
    }
}

/// What a port in `mode` does with a frame of `vlan` with priority `pcp`.
pub fn egress(mode: &VlanMode, vlan: VlanId, pcp: u8) -> Egress {
    if !mode.carries(vlan) {
        return Egress::NotCarried;
    }
    match mode {
        VlanMode::Trunk { native, tpid, .. } if *native != Some(vlan) => {
            Egress::Tagged(PushTag { tpid: *tpid, tci: (u16::from(pcp & 7) << 13) | vlan.get() })
        }
        _ => Egress::Untagged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: u16) -> VlanId {
        VlanId::new(id).unwrap()
    }

    fn trunk(ids: &[u16], native: Option<u16>, tpid: u16) -> VlanMode {
        VlanMode::Trunk { allowed: Box::new(ids.iter().map(|&i| v(i)).collect()), native: native.map(v), tpid }
    }

    /// A frame header: MACs, then `tags` (TPID, TCI) in order, then EtherType IPv4 and a byte.
    fn frame(tags: &[(u16, u16)]) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        for (tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00, 0x45]);
        f
    }

    fn ok(vlan: u16, pcp: u8, strip: usize) -> Result<Classified, DropReason> {
        Ok(Classified { vlan: v(vlan), pcp, strip })
    }

    /// The frame shapes every mode is checked against.
    fn shapes() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("untagged", frame(&[])),
            ("priority", frame(&[(0x8100, 0xa000)])),
            ("c10", frame(&[(0x8100, 0x600a)])),
            ("c30", frame(&[(0x8100, 30)])),
            ("c4095", frame(&[(0x8100, 0x0fff)])),
            ("c10 in c20", frame(&[(0x8100, 20), (0x8100, 10)])),
            ("c10 in s100", frame(&[(0x88a8, 100), (0x8100, 10)])),
            ("s100", frame(&[(0x88a8, 0x2064)])),
            ("truncated", [&frame(&[])[..12], &[0x81, 0x00, 0x00, 0x0a][..]].concat()),
        ]
    }

    fn check(mode: VlanMode, expected: &[(&str, Result<Classified, DropReason>)]) {
        let shapes = shapes();
        assert_eq!(shapes.len(), expected.len(), "every frame shape needs an expectation");
        for ((name, bytes), (want_name, want)) in shapes.iter().zip(expected) {
            assert_eq!(name, want_name);
            assert_eq!(ingress(&mode, bytes), *want, "{mode:?} <- {name}");
        }
    }

    #[test]
    fn truncated_shape_is_a_tpid_with_two_bytes_after_it() {
        let t = &shapes()[8].1;
        assert_eq!(t.len(), 16);
        assert_eq!(&t[12..14], &[0x81, 0x00]);
    }

    #[test]
    fn transparent_ports_take_everything_into_vlan_0_untouched() {
        check(
            VlanMode::Transparent,
            &[
                ("untagged", ok(0, 0, 0)),
                ("priority", ok(0, 0, 0)),
                ("c10", ok(0, 0, 0)),
                ("c30", ok(0, 0, 0)),
                ("c4095", ok(0, 0, 0)),
                ("c10 in c20", ok(0, 0, 0)),
                ("c10 in s100", ok(0, 0, 0)),
                ("s100", ok(0, 0, 0)),
                ("truncated", ok(0, 0, 0)),
            ],
        );
    }

    #[test]
    fn access_ports_take_untagged_and_priority_tagged_frames() {
        check(
            VlanMode::Access(v(10)),
            &[
                ("untagged", ok(10, 0, 0)),
                ("priority", ok(10, 5, 4)),
                ("c10", Err(DropReason::VlanNotAllowed)),
                ("c30", Err(DropReason::VlanNotAllowed)),
                ("c4095", Err(DropReason::BadVlanTag)),
                ("c10 in c20", Err(DropReason::DoubleTagged)),
                ("c10 in s100", Err(DropReason::DoubleTagged)),
                ("s100", Err(DropReason::VlanNotAllowed)),
                ("truncated", Err(DropReason::BadVlanTag)),
            ],
        );
    }

    #[test]
    fn trunks_take_their_vlans_tagged() {
        check(
            trunk(&[10, 20], None, TPID_8021Q),
            &[
                ("untagged", Err(DropReason::UntaggedNotAllowed)),
                ("priority", Err(DropReason::UntaggedNotAllowed)),
                ("c10", ok(10, 3, 4)),
                ("c30", Err(DropReason::VlanNotAllowed)),
                ("c4095", Err(DropReason::BadVlanTag)),
                ("c10 in c20", Err(DropReason::DoubleTagged)),
                ("c10 in s100", Err(DropReason::WrongTpid)),
                ("s100", Err(DropReason::WrongTpid)),
                ("truncated", Err(DropReason::BadVlanTag)),
            ],
        );
    }

    #[test]
    fn trunks_with_a_native_vlan_take_untagged_frames_into_it() {
        check(
            trunk(&[10, 20], Some(1), TPID_8021Q),
            &[
                ("untagged", ok(1, 0, 0)),
                ("priority", ok(1, 5, 4)),
                ("c10", ok(10, 3, 4)),
                ("c30", Err(DropReason::VlanNotAllowed)),
                ("c4095", Err(DropReason::BadVlanTag)),
                ("c10 in c20", Err(DropReason::DoubleTagged)),
                ("c10 in s100", Err(DropReason::WrongTpid)),
                ("s100", Err(DropReason::WrongTpid)),
                ("truncated", Err(DropReason::BadVlanTag)),
            ],
        );
    }

    #[test]
    fn service_trunks_carry_customer_tags_inside() {
        check(
            trunk(&[100], None, TPID_8021AD),
            &[
                ("untagged", Err(DropReason::UntaggedNotAllowed)),
                ("priority", Err(DropReason::WrongTpid)),
                ("c10", Err(DropReason::WrongTpid)),
                ("c30", Err(DropReason::WrongTpid)),
                ("c4095", Err(DropReason::BadVlanTag)),
                ("c10 in c20", Err(DropReason::WrongTpid)),
                ("c10 in s100", ok(100, 0, 4)),
                ("s100", ok(100, 1, 4)),
                ("truncated", Err(DropReason::BadVlanTag)),
            ],
        );
    }

    #[test]
    fn tunnel_ports_wrap_whatever_arrives() {
        check(
            VlanMode::Dot1qTunnel(v(100)),
            &[
                ("untagged", ok(100, 0, 0)),
                ("priority", ok(100, 5, 0)),
                ("c10", ok(100, 3, 0)),
                ("c30", ok(100, 0, 0)),
                ("c4095", Err(DropReason::BadVlanTag)),
                ("c10 in c20", ok(100, 0, 0)),
                ("c10 in s100", ok(100, 0, 0)),
                ("s100", ok(100, 1, 0)),
                ("truncated", Err(DropReason::BadVlanTag)),
            ],
        );
    }

    #[test]
    fn egress_per_mode() {
        let tag = |tpid, vid: u16, pcp: u16| Egress::Tagged(PushTag { tpid, tci: (pcp << 13) | vid });
        assert_eq!(egress(&VlanMode::Transparent, VlanId::NONE, 3), Egress::Untagged);
        assert_eq!(egress(&VlanMode::Transparent, v(10), 0), Egress::NotCarried);
        assert_eq!(egress(&VlanMode::Access(v(10)), v(10), 5), Egress::Untagged);
        assert_eq!(egress(&VlanMode::Access(v(10)), v(20), 0), Egress::NotCarried);
        let t = trunk(&[10, 20], Some(1), TPID_8021Q);
        assert_eq!(egress(&t, v(10), 5), tag(TPID_8021Q, 10, 5));
        assert_eq!(egress(&t, v(1), 5), Egress::Untagged);
        assert_eq!(egress(&t, v(30), 0), Egress::NotCarried);
        assert_eq!(egress(&trunk(&[100], None, TPID_8021AD), v(100), 0), tag(TPID_8021AD, 100, 0));
        assert_eq!(egress(&VlanMode::Dot1qTunnel(v(100)), v(100), 0), Egress::Untagged);
        assert_eq!(PushTag { tpid: 0x8100, tci: 0xa00a }.bytes(), [0x81, 0x00, 0xa0, 0x0a]);
    }

    #[test]
    fn a_frame_survives_a_round_trip_through_two_trunks() {
        // In on one trunk, out of another: strip 4 bytes, push the same tag: same bytes.
        let t = trunk(&[10], None, TPID_8021Q);
        let bytes = frame(&[(0x8100, 0x600a)]);
        let c = ingress(&t, &bytes).unwrap();
        let Egress::Tagged(push) = egress(&t, c.vlan, c.pcp) else { panic!("not tagged") };
        let out: Vec<u8> = [&bytes[..12], &push.bytes()[..], &bytes[12 + c.strip..]].concat();
        assert_eq!(out, bytes);
    }

    #[test]
    fn describe_for_show() {
        assert_eq!(VlanMode::Access(v(10)).describe(), "access 10");
        assert_eq!(trunk(&[10, 20], Some(1), TPID_8021Q).describe(), "trunk 10,20 native 1");
        assert_eq!(trunk(&[100], None, TPID_8021AD).describe(), "trunk 100 802.1ad");
        assert_eq!(VlanMode::Dot1qTunnel(v(100)).describe(), "dot1q-tunnel 100");
    }
}
