//! The IGMP/MLD querier (`mcast_querier = true`): the first worker sends general queries into
//! every VLAN the bridge's ports carry, so hosts keep reporting their groups where no
//! multicast router queries them, and snooping keeps its memberships.

use crate::VlanId;
use crate::mdb::QuerySchedule;
use crate::port::{FrameBuf, MAX_FRAME_LEN};
use crate::time::Instant;
use crate::vlan::{Classified, VlanMode};
use crate::wire::igmp::GroupAddr;
use crate::wire::{igmp, mld};

use super::Switch;
use super::transmit::transmit;

/// Max response time asked of hosts: 10 s (RFC 3376's default query response interval).
const MAX_RESPONSE_TENTHS: u8 = 100;

/// Max response time of a group-specific query after a leave: 1 s (the last member query
/// interval), so members that remain answer before the membership ends
/// ([`crate::mdb::LAST_MEMBER_TIME`]).
const LAST_MEMBER_TENTHS: u8 = 10;

/// The querier's state on the first worker.
#[derive(Debug, Default)]
pub(super) struct Querier {
    schedule: QuerySchedule,
    buf: Option<FrameBuf>,
    vlans: Vec<VlanId>,
    leaves: Vec<(VlanId, GroupAddr, crate::PortId)>,
}

impl Querier {
    /// When queries are next due.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.schedule.next_deadline()
    }
}

/// The querier's source MAC: locally administered, derived from the bridge name.
pub(super) fn querier_mac(bridge: &str) -> [u8; 6] {
    let mut h: u32 = 0x811c_9dc5;
    for b in bridge.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let [a, b, c, d] = h.to_be_bytes();
    [0x02, 0x51, a, b, c, d]
}

/// The IPv6 link-local address (modified EUI-64) of `mac`.
fn link_local(mac: [u8; 6]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfe;
    a[1] = 0x80;
    a[8..11].copy_from_slice(&[mac[0] ^ 0x02, mac[1], mac[2]]);
    a[11] = 0xff;
    a[12] = 0xfe;
    a[13..16].copy_from_slice(&mac[3..6]);
    a
}

impl Switch {
    /// Sends general queries if the querier is on and they are due, and a group-specific
    /// query out of each port a leave came in by (first worker only).
    pub(super) fn send_queries(&mut self, now: Instant) {
        let config = self.state.bridge.mdb().config();
        if !config.snooping || !config.querier || self.state.worker != 0 {
            self.state.bridge.mdb_mut().take_leaves(|_, _, _| {});
            return;
        }
        self.send_group_queries();
        let ports = self.state.live_ports().count();
        if !self.querier.schedule.due(now, ports) {
            return;
        }
        // The VLANs to query: every one some port carries.
        let mut vlans = std::mem::take(&mut self.querier.vlans);
        vlans.clear();
        for port in self.state.live_ports() {
            match &port.info.vlan {
                VlanMode::Transparent => vlans.push(VlanId::NONE),
                VlanMode::Access(v) | VlanMode::Dot1qTunnel(v) => vlans.push(*v),
                VlanMode::Trunk { allowed, native, .. } => {
                    vlans.extend(native.iter().copied());
                    vlans.extend(allowed.iter());
                }
            }
        }
        vlans.sort_unstable();
        vlans.dedup();
        let mac = querier_mac(&self.state.name);
        let mut buf = self.querier.buf.take().unwrap_or_else(|| FrameBuf::new(MAX_FRAME_LEN));
        let v4 = igmp::general_query(MAX_RESPONSE_TENTHS);
        let v6 = mld::general_query(link_local(mac), u16::from(MAX_RESPONSE_TENTHS) * 100);
        let frames: [(&[u8], [u8; 6], [u8; 2]); 2] =
            [(&v4, [0x01, 0x00, 0x5e, 0, 0, 1], [0x08, 0x00]), (&v6, [0x33, 0x33, 0, 0, 0, 1], [0x86, 0xdd])];
        for (packet, dst, ethertype) in frames {
            fill(&mut buf, dst, mac, ethertype, packet);
            for &vlan in &vlans {
                let class = Classified { vlan, pcp: 0, strip: 0 };
                for out in 0..self.state.ports.len() {
                    let out = crate::PortId(out as u16);
                    if self.state.ports[out.index()].removed.is_none() && self.state.bridge.port(out).is_some() {
                        transmit(&mut self.state, &mut self.endpoints, out, &mut buf, &class, true, &mut self.scratch);
                    }
                }
                self.state.bridge.mdb_mut().queries_sent += 1;
            }
        }
        self.querier.buf = Some(buf);
        self.querier.vlans = vlans;
    }

    /// Asks, out of the port a leave came in by, whether members of the group remain there
    /// (the kernel bridge's querier does the same): they answer within a second, before the
    /// membership ends.
    fn send_group_queries(&mut self) {
        let mut leaves = std::mem::take(&mut self.querier.leaves);
        leaves.clear();
        self.state.bridge.mdb_mut().take_leaves(|vlan, group, port| leaves.push((vlan, group, port)));
        if leaves.is_empty() {
            self.querier.leaves = leaves;
            return;
        }
        let mac = querier_mac(&self.state.name);
        let mut buf = self.querier.buf.take().unwrap_or_else(|| FrameBuf::new(MAX_FRAME_LEN));
        for &(vlan, group, out) in &leaves {
            match group {
                GroupAddr::V4(g) => {
                    let dst = [0x01, 0x00, 0x5e, g[1] & 0x7f, g[2], g[3]];
                    fill(&mut buf, dst, mac, [0x08, 0x00], &igmp::group_query(g, LAST_MEMBER_TENTHS));
                }
                GroupAddr::V6(g) => {
                    let dst = [0x33, 0x33, g[12], g[13], g[14], g[15]];
                    let ms = u16::from(LAST_MEMBER_TENTHS) * 100;
                    fill(&mut buf, dst, mac, [0x86, 0xdd], &mld::group_query(link_local(mac), g, ms));
                }
            }
            let live = self.state.ports.get(out.index()).is_some_and(|p| p.removed.is_none());
            if live && self.state.bridge.port(out).is_some() {
                let class = Classified { vlan, pcp: 0, strip: 0 };
                transmit(&mut self.state, &mut self.endpoints, out, &mut buf, &class, true, &mut self.scratch);
                self.state.bridge.mdb_mut().group_queries_sent += 1;
            }
        }
        self.querier.buf = Some(buf);
        self.querier.leaves = leaves;
    }
}

/// Puts an Ethernet frame (`dst`, `src`, `ethertype`, `packet`) into `buf`.
fn fill(buf: &mut FrameBuf, dst: [u8; 6], src: [u8; 6], ethertype: [u8; 2], packet: &[u8]) {
    let len = 14 + packet.len();
    let area = buf.receive_area();
    area[..6].copy_from_slice(&dst);
    area[6..12].copy_from_slice(&src);
    area[12..14].copy_from_slice(&ethertype);
    area[14..len].copy_from_slice(packet);
    buf.set_received(len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_a_stable_local_unicast_mac_and_its_eui64() {
        let mac = querier_mac("br0");
        assert_eq!(mac, querier_mac("br0"));
        assert_ne!(mac, querier_mac("br1"));
        assert_eq!(mac[0] & 0x03, 0x02); // locally administered, unicast
        let ll = link_local([0x02, 0x51, 1, 2, 3, 4]);
        assert_eq!(ll, [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x51, 1, 0xff, 0xfe, 2, 3, 4]);
    }
}
