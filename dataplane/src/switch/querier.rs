//! The IGMP/MLD querier (`mcast_querier = true`): the first worker sends general queries into
//! every VLAN the bridge's ports carry, so hosts keep reporting their groups where no
//! multicast router queries them, and snooping keeps its memberships.

use crate::VlanId;
use crate::mdb::QuerySchedule;
use crate::port::{FrameBuf, MAX_FRAME_LEN};
use crate::time::Instant;
use crate::vlan::{Classified, VlanMode};
use crate::wire::{igmp, mld};

use super::Switch;
use super::transmit::transmit;

/// Max response time asked of hosts: 10 s (RFC 3376's default query response interval).
const MAX_RESPONSE_TENTHS: u8 = 100;

/// The querier's state on the first worker.
#[derive(Debug, Default)]
pub(super) struct Querier {
    schedule: QuerySchedule,
    buf: Option<FrameBuf>,
    vlans: Vec<VlanId>,
    /// General queries sent (one per protocol and VLAN).
    pub(super) sent: u64,
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
    /// Sends general queries if the querier is on and they are due (first worker only).
    pub(super) fn send_queries(&mut self, now: Instant) {
        let config = self.state.bridge.mdb().config();
        if !config.snooping || !config.querier || self.state.worker != 0 {
            return;
        }
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
            let len = 14 + packet.len();
            let area = buf.receive_area();
            area[..6].copy_from_slice(&dst);
            area[6..12].copy_from_slice(&mac);
            area[12..14].copy_from_slice(&ethertype);
            area[14..len].copy_from_slice(packet);
            buf.set_received(len);
            for &vlan in &vlans {
                let class = Classified { vlan, pcp: 0, strip: 0 };
                for out in 0..self.state.ports.len() {
                    let out = crate::PortId(out as u16);
                    if self.state.ports[out.index()].removed.is_none() && self.state.bridge.port(out).is_some() {
                        transmit(&mut self.state, &mut self.endpoints, out, &mut buf, &class, true, &mut self.scratch);
                    }
                }
                self.querier.sent += 1;
            }
        }
        self.querier.buf = Some(buf);
        self.querier.vlans = vlans;
    }
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
