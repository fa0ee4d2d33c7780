//! What the bridge decides for a frame, and the named reasons a frame is not delivered.

use crate::PortId;
use crate::wire::igmp::GroupAddr;

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// To exactly one port (a known unicast destination).
    Unicast(PortId),
    /// To every other port of the broadcast domain (broadcast, multicast, unknown unicast).
    Flood,
    /// To the ports of the multicast database's entry for this group in the frame's VLAN (its
    /// members and the router ports), IGMP/MLD snooping having found it known (or unknown
    /// groups not flooded).
    Group(GroupAddr),
    /// To the multicast router ports only: an IGMP/MLD report or leave while a querier is
    /// present, so that hosts do not hear each other's reports and hold their own back
    /// (RFC 4541 2.1.1).
    Routers,
    /// Nowhere, for this reason (counted on the ingress port).
    Drop(DropReason),
}

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// Why a frame was not delivered. Each reason has a counter per port.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            /// How many reasons there are.
            pub const COUNT: usize = Self::ALL.len();

            /// The reason's stable snake_case name, as `vswitchctl port show` prints it.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)* }
            }

            /// The reason's slot in a counter array.
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

drop_reasons! {
    /// Shorter than an Ethernet header (14 bytes).
    Runt => "runt",
    /// Longer than the ingress port's MTU allows (MTU + 14, + 4 per VLAN tag).
    Oversize => "oversize",
    /// Source MAC is multicast, broadcast or all zero: no valid frame carries one.
    InvalidSource => "invalid_source",
    /// A VLAN tag that is cut short, or carries the reserved VID 4095.
    BadVlanTag => "bad_vlan_tag",
    /// Tagged with a VLAN the port does not carry.
    VlanNotAllowed => "vlan_not_allowed",
    /// Untagged (or priority-tagged) on a trunk without a native VLAN.
    UntaggedNotAllowed => "untagged_not_allowed",
    /// Two stacked tags where the port is not configured for them.
    DoubleTagged => "double_tagged",
    /// A tag whose TPID is not the one the trunk uses (0x88a8 on an 802.1Q trunk or vice versa).
    WrongTpid => "wrong_tpid",
    /// Destination is an IEEE 802.1D reserved group (01:80:c2:00:00:0x): pause, LACP, 802.1X,
    /// LLDP, and BPDUs while the spanning tree runs (it takes them first: this counts one that
    /// reached the bridge anyway). A bridge does not forward these; BPDUs flood with STP off.
    LinkLocal => "link_local",
    /// The destination was learned on the port the frame came in on.
    SamePort => "same_port",
    /// Longer than the egress port's MTU allows.
    EgressOversize => "egress_oversize",
    /// A GSO super-frame that software segmentation cannot cut (a GSO type other than TCP or
    /// UDP_L4, IPv6 extension headers, a segment too big for the scratch buffer).
    NoSegmentation => "no_segmentation",
    /// Offload metadata whose checksum offsets lie outside the frame.
    BadOffload => "bad_offload",
    /// Arrived on a backup member of an active-backup bond.
    BondBackup => "bond_backup",
    /// Arrived on a bond with a source MAC that was just seen on another port: the network
    /// behind the bond reflected our own frame back.
    BondReflection => "bond_reflection",
    /// Arrived on a member of an 802.3ad bond that LACP has not aggregated.
    LacpNotCollecting => "lacp_not_collecting",
    /// A Slow Protocols frame that is not a well-formed LACPDU.
    BadLacpdu => "bad_lacpdu",
    /// No member of the bond is up to send on.
    NoBondMember => "no_bond_member",
    /// A VXLAN datagram from an address that is neither a configured remote nor (with
    /// learning) in an allowed prefix.
    VxlanUnknownRemote => "vxlan_unknown_remote",
    /// A VXLAN header without the I flag, with reserved bits set, or cut short.
    VxlanBadHeader => "vxlan_bad_header",
    /// A VNI this endpoint does not carry.
    VxlanUnknownVni => "vxlan_unknown_vni",
    /// The frame and its encapsulation would not fit the underlay MTU (VXLAN never fragments).
    VxlanTooBig => "vxlan_too_big",
    /// The frame's VLAN maps to no VNI on this tunnel port.
    VxlanNoVni => "vxlan_no_vni",
    /// The egress device's queue had no room (EAGAIN/ENOBUFS).
    NoRoom => "no_room",
    /// The egress device's link is down (EIO from a TAP).
    LinkDown => "link_down",
    /// Any other error from the egress device.
    TxError => "tx_error",
    /// The port is not (or no longer) part of the bridge.
    NotBridgePort => "not_bridge_port",
    /// The source MAC flapped between ports and is pinned to another one for a hold-down
    /// (the FDB's move damping): a loop's copy or a second sender claiming the address. It is
    /// neither learned nor forwarded.
    MacPinned => "mac_pinned",
    /// Longer than the receive buffer: the kernel cut it short, so it is not forwarded.
    Truncated => "truncated",
    /// Dropped by the kernel before vswitchd could read it: the port's socket receive buffer
    /// was full (vswitchd fell behind the sender). Read from the socket once a second.
    RxOverflow => "rx_overflow",
    /// A QEMU stream socket announced a frame of 0 bytes, or longer than the port takes (its
    /// MTU, the Ethernet header and two VLAN tags; never more than 65535): nothing after it
    /// can be trusted to start a frame, so the connection is closed.
    SocketBadLength => "socket_bad_length",
    /// A vhost-user guest offered a descriptor chain outside its memory, pointing the wrong way
    /// or too long: the device returned it unused (counted on the port, on its receive side).
    VhostBadDescriptor => "vhost_bad_descriptor",
    /// A frame for a vhost-user guest that its buffers could not take: an offload it refused
    /// that could not be done for it, or a frame larger than its buffers without mergeable
    /// buffers.
    VhostUndeliverable => "vhost_undeliverable",
    /// From an isolated port to another isolated port (or back to itself): isolated ports
    /// reach only non-isolated ones.
    Isolated => "isolated",
    /// The source MAC is not in the port's `allowed_macs`.
    SourceNotAllowed => "source_not_allowed",
    /// A new source MAC on a port that already has its `mac_limit` of learned MACs.
    MacLimit => "mac_limit",
    /// A broadcast over the port's storm-control rate.
    StormBroadcast => "storm_broadcast",
    /// A multicast over the port's storm-control rate.
    StormMulticast => "storm_multicast",
    /// A unicast to an unknown destination (to be flooded) over the port's storm-control rate.
    StormUnknownUnicast => "storm_unknown_unicast",
    /// The spanning tree has the port discarding or learning: it neither forwards (received
    /// frames, counted on the ingress port) nor sends (unicast toward it, counted there).
    StpDiscarding => "stp_discarding",
    /// A frame to the Bridge Group Address (01:80:c2:00:00:00) that is not a well-formed BPDU,
    /// on a bridge running spanning tree.
    BadBpdu => "bad_bpdu",
    /// A BPDU on a port with `bpdu_guard`: the port is disabled.
    BpduGuard => "bpdu_guard",
    /// An IGMP or MLD message (seen with multicast snooping on) that is cut short or whose
    /// checksum is wrong: the snooping table does not take it, and it is not forwarded.
    McastBadReport => "mcast_bad_report",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indices_dense() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
