//! The L2 pipeline as plain data: given the port a frame came in on and its bytes, decide
//! where it goes. Learning happens here; reading and writing frames does not.
//!
//! Steps, in order (each early exit is a named [`DropReason`]):
//! 1. validate: a whole Ethernet header (`runt`), no longer than the ingress MTU allows
//!    (`oversize`), a unicast non-zero source (`invalid_source`);
//! 2. drop IEEE 802.1D reserved link-local destinations (`link_local`);
//! 3. learn the source on the ingress port;
//! 4. broadcast, multicast and unknown unicast flood; known unicast goes to its port, unless
//!    that is the ingress port (`same_port`): a frame never leaves by the port it came in on.
//!
//! Egress admission ([`Bridge::egress_check`]) applies the egress port's MTU.

use crate::fdb::{Fdb, FdbConfig};
use crate::time::Instant;
use crate::verdict::{DropReason, Forward};
use crate::wire::ethernet::{self, EtherType, Frame};
use crate::wire::vlan;
use crate::{PortId, VlanId};

/// A port's settings, as far as forwarding is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgePortConfig {
    /// Largest L3 payload the port carries (the Ethernet header and up to two VLAN tags come
    /// on top).
    pub mtu: u32,
}

impl Default for BridgePortConfig {
    fn default() -> Self {
        BridgePortConfig { mtu: 1500 }
    }
}

/// The bridge: its ports and its forwarding database.
#[derive(Debug)]
pub struct Bridge {
    fdb: Fdb,
    ports: Vec<Option<BridgePortConfig>>,
}

/// Bytes of Ethernet header plus VLAN tags (at most two are looked at) ahead of the payload.
fn header_len_with_tags(frame: &Frame<&[u8]>) -> usize {
    let mut len = ethernet::HEADER_LEN;
    let mut ethertype = frame.ethertype();
    let bytes = frame.clone().into_inner();
    for _ in 0..2 {
        if !matches!(ethertype, EtherType::Vlan | EtherType::QinQ) {
            break;
        }
        match vlan::Tag::new_checked(&bytes[len..]) {
            Ok(tag) => ethertype = tag.inner_ethertype(),
            Err(_) => break,
        }
        len += vlan::TAG_LEN;
    }
    len
}

/// Whether a frame of this shape fits an MTU.
fn fits_mtu(frame: &Frame<&[u8]>, mtu: u32) -> bool {
    let len = frame.clone().into_inner().len();
    len <= header_len_with_tags(frame) + mtu as usize
}

impl Bridge {
    /// A bridge with no ports.
    pub fn new(fdb: FdbConfig) -> Bridge {
        Bridge {
            fdb: Fdb::new(fdb),
            ports: Vec::new(),
        }
    }

    /// Adds (or reconfigures) port `id`.
    pub fn add_port(&mut self, id: PortId, config: BridgePortConfig) {
        if self.ports.len() <= id.index() {
            self.ports.resize(id.index() + 1, None);
        }
        self.ports[id.index()] = Some(config);
        self.fdb.reserve_port(id);
    }

    /// Removes port `id` and every FDB entry behind it.
    pub fn remove_port(&mut self, id: PortId) {
        if let Some(slot) = self.ports.get_mut(id.index()) {
            *slot = None;
            self.fdb.remove_port(id);
        }
    }

    /// The port's settings, if it exists.
    pub fn port(&self, id: PortId) -> Option<BridgePortConfig> {
        self.ports.get(id.index()).copied().flatten()
    }

    /// Every port, in id order.
    pub fn port_ids(&self) -> impl Iterator<Item = PortId> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_some())
            .map(|(i, _)| PortId(i as u16))
    }

    /// The forwarding database.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The forwarding database, for operator changes.
    pub fn fdb_mut(&mut self) -> &mut Fdb {
        &mut self.fdb
    }

    /// Decides where a frame that arrived on `in_port` at `now` goes, learning its source.
    pub fn ingress(&mut self, in_port: PortId, bytes: &[u8], now: Instant) -> Forward {
        let Ok(frame) = Frame::new_checked(bytes) else {
            return Forward::Drop(DropReason::Runt);
        };
        let Some(port) = self.port(in_port) else {
            return Forward::Drop(DropReason::NotBridgePort);
        };
        if !fits_mtu(&frame, port.mtu) {
            return Forward::Drop(DropReason::Oversize);
        }
        let src = frame.src_addr();
        if !src.is_valid_source() {
            return Forward::Drop(DropReason::InvalidSource);
        }
        let dst = frame.dst_addr();
        if dst.is_link_local_reserved() {
            return Forward::Drop(DropReason::LinkLocal);
        }
        let vlan = VlanId::NONE;
        self.fdb.learn(vlan, src, in_port, now);
        if dst.is_multicast() {
            return Forward::Flood;
        }
        match self.fdb.lookup(vlan, dst) {
            Some(out) if out == in_port => Forward::Drop(DropReason::SamePort),
            Some(out) => Forward::Unicast(out),
            None => Forward::Flood,
        }
    }

    /// Whether `bytes` may leave through `out_port`.
    pub fn egress_check(&self, out_port: PortId, bytes: &[u8]) -> Result<(), DropReason> {
        let port = self.port(out_port).ok_or(DropReason::NotBridgePort)?;
        let frame = Frame::new_checked(bytes).map_err(|_| DropReason::Runt)?;
        if fits_mtu(&frame, port.mtu) {
            Ok(())
        } else {
            Err(DropReason::EgressOversize)
        }
    }

    /// Periodic work (FDB aging). Returns how many entries expired.
    pub fn run(&mut self, now: Instant) -> usize {
        self.fdb.run(now)
    }

    /// When [`Bridge::run`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.fdb.next_deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;

    const A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
    const B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);
    const P3: PortId = PortId(3);

    fn frame(dst: MacAddr, src: MacAddr, ethertype: u16, payload_len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; 14 + payload_len];
        let mut f = Frame::new_unchecked(&mut bytes[..]);
        f.set_dst_addr(dst);
        f.set_src_addr(src);
        f.set_ethertype(EtherType::from(ethertype));
        bytes
    }

    fn bridge() -> Bridge {
        let mut b = Bridge::new(FdbConfig::default());
        for p in [P1, P2, P3] {
            b.add_port(p, BridgePortConfig { mtu: 1500 });
        }
        b
    }

    const T0: Instant = Instant::ZERO;

    #[test]
    fn unknown_unicast_floods_then_learned_unicast_goes_direct() {
        let mut b = bridge();
        assert_eq!(b.ingress(P1, &frame(B, A, 0x0800, 46), T0), Forward::Flood);
        assert_eq!(
            b.ingress(P2, &frame(A, B, 0x0800, 46), T0),
            Forward::Unicast(P1)
        );
        assert_eq!(
            b.ingress(P1, &frame(B, A, 0x0800, 46), T0),
            Forward::Unicast(P2)
        );
    }

    #[test]
    fn broadcast_and_multicast_flood_even_when_known() {
        let mut b = bridge();
        assert_eq!(
            b.ingress(P1, &frame(MacAddr::BROADCAST, A, 0x0806, 28), T0),
            Forward::Flood
        );
        let group: MacAddr = "33:33:00:00:00:01".parse().unwrap();
        assert_eq!(
            b.ingress(P2, &frame(group, B, 0x86dd, 40), T0),
            Forward::Flood
        );
    }

    #[test]
    fn never_back_out_of_the_ingress_port() {
        let mut b = bridge();
        b.ingress(P1, &frame(B, A, 0x0800, 46), T0);
        let c = MacAddr([0x02, 0, 0, 0, 0, 0x0c]);
        assert_eq!(
            b.ingress(P1, &frame(A, c, 0x0800, 46), T0),
            Forward::Drop(DropReason::SamePort)
        );
    }

    #[test]
    fn malformed_frames_are_dropped_with_reasons() {
        let mut b = bridge();
        assert_eq!(
            b.ingress(P1, &[0u8; 13], T0),
            Forward::Drop(DropReason::Runt)
        );
        assert_eq!(b.ingress(P1, &[], T0), Forward::Drop(DropReason::Runt));
        assert_eq!(
            b.ingress(P1, &frame(B, A, 0x0800, 1501), T0),
            Forward::Drop(DropReason::Oversize)
        );
        assert_eq!(
            b.ingress(P1, &frame(B, MacAddr::BROADCAST, 0x0800, 46), T0),
            Forward::Drop(DropReason::InvalidSource)
        );
        assert_eq!(
            b.ingress(P1, &frame(B, MacAddr::ZERO, 0x0800, 46), T0),
            Forward::Drop(DropReason::InvalidSource)
        );
        let stp: MacAddr = "01:80:c2:00:00:00".parse().unwrap();
        assert_eq!(
            b.ingress(P1, &frame(stp, A, 0x0026, 38), T0),
            Forward::Drop(DropReason::LinkLocal)
        );
        assert!(b.fdb().lookup(VlanId::NONE, MacAddr::BROADCAST).is_none());
    }

    #[test]
    fn any_ethertype_and_a_bare_header_are_forwarded() {
        let mut b = bridge();
        for ethertype in [0x0000, 0x05dc, 0x88b5, 0xffff] {
            assert_eq!(
                b.ingress(P1, &frame(B, A, ethertype, 0), T0),
                Forward::Flood
            );
        }
    }

    #[test]
    fn vlan_tags_get_their_four_bytes_on_top_of_the_mtu() {
        let mut b = bridge();
        let mut tagged = frame(B, A, 0x8100, 4 + 1500);
        tagged[14..18].copy_from_slice(&[0x00, 0x0a, 0x08, 0x00]);
        assert_eq!(b.ingress(P1, &tagged, T0), Forward::Flood);
        tagged.push(0);
        assert_eq!(
            b.ingress(P1, &tagged, T0),
            Forward::Drop(DropReason::Oversize)
        );
        let mut double = frame(B, A, 0x88a8, 8 + 1500);
        double[14..22].copy_from_slice(&[0x00, 0x64, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x00]);
        assert_eq!(b.ingress(P1, &double, T0), Forward::Flood);
    }

    #[test]
    fn egress_mtu_is_the_egress_ports() {
        let mut b = bridge();
        b.add_port(P3, BridgePortConfig { mtu: 1000 });
        let big = frame(B, A, 0x0800, 1200);
        assert_eq!(b.egress_check(P2, &big), Ok(()));
        assert_eq!(b.egress_check(P3, &big), Err(DropReason::EgressOversize));
    }

    #[test]
    fn removing_a_port_forgets_what_was_learned_on_it() {
        let mut b = bridge();
        b.ingress(P1, &frame(B, A, 0x0800, 46), T0);
        b.remove_port(P1);
        assert_eq!(b.fdb().lookup(VlanId::NONE, A), None);
        assert_eq!(b.port_ids().collect::<Vec<_>>(), vec![P2, P3]);
    }

    #[test]
    fn aging_runs_through_the_bridge() {
        let mut b = Bridge::new(FdbConfig {
            aging: std::time::Duration::from_secs(5),
            max_learned: 10,
        });
        b.add_port(P1, BridgePortConfig::default());
        b.add_port(P2, BridgePortConfig::default());
        b.ingress(P1, &frame(B, A, 0x0800, 46), T0);
        assert_eq!(b.next_deadline(), Some(Instant::from_secs(5)));
        assert_eq!(b.run(Instant::from_secs(5)), 1);
        assert_eq!(
            b.ingress(P2, &frame(A, B, 0x0800, 46), Instant::from_secs(6)),
            Forward::Flood
        );
    }
}
