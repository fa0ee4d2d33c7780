//! A VXLAN tunnel endpoint's state as plain data: which VNIs map to which bridge VLANs, which
//! remote VTEPs exist (configured ones get floods; learned ones only unicast), which inner MACs
//! live behind which remote, and counters per remote. No sockets: the switch hands datagrams
//! in with their source and asks where frames go.
//!
//! Rules (RFC 7348, with the Linux vxlan driver's behaviour where the RFC leaves a choice):
//! - Accepted only from configured remotes, or — with `learning` on — from an allowed underlay
//!   prefix (that source then becomes a learned remote). Anything else is `vxlan_unknown_remote`:
//!   a VTEP listens on a UDP port anyone can send to.
//! - The header must have the I flag and zero reserved bits (`vxlan_bad_header`), and a VNI
//!   this endpoint carries (`vxlan_unknown_vni`).
//! - Broadcast, multicast and unknown unicast go to every configured remote (head-end
//!   replication); a MAC learned behind a remote gets unicast to that remote only. Learned MACs
//!   age like the FDB's; static ones (`fdb add MAC PORT --remote IP`) do not.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::VlanId;
use crate::time::Instant;
use crate::verdict::DropReason;
use crate::wire::ethernet::{self, Frame};
use crate::wire::{MacAddr, vxlan};

/// Which VNIs a port carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VniMap {
    /// One VNI: the port is an ordinary bridge port (of whatever VLAN mode it has: transparent,
    /// or an access port of one VLAN); frames arrive untagged.
    Single(u32),
    /// Several VNIs, each its own broadcast domain: the port acts as a trunk of these VLANs.
    PerVlan(Vec<(u32, VlanId)>),
}

/// A VTEP's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// The local underlay address.
    pub local: IpAddr,
    /// The UDP destination port.
    pub dst_port: u16,
    /// Configured remote VTEPs: flood targets and accepted sources.
    pub remotes: Vec<IpAddr>,
    /// Underlay prefixes (address, length) whose VTEPs are accepted and learned when `learning`.
    pub allowed: Vec<(IpAddr, u8)>,
    /// Learn inner MACs (and new remotes from `allowed`).
    pub learning: bool,
    /// VNIs carried.
    pub vnis: VniMap,
    /// Idle time after which a learned MAC is forgotten.
    pub aging: Duration,
    /// Bound on learned MACs.
    pub max_learned: usize,
}

/// A remote VTEP and its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Its underlay address.
    pub addr: IpAddr,
    /// Configured (gets floods) or learned.
    pub configured: bool,
    /// Packets received from it.
    pub rx_packets: u64,
    /// Inner bytes received from it.
    pub rx_bytes: u64,
    /// Packets sent to it.
    pub tx_packets: u64,
    /// Inner bytes sent to it.
    pub tx_bytes: u64,
}

/// One inner MAC behind a remote, as `vxlan show` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteMac {
    /// Its VLAN on the bridge.
    pub vlan: VlanId,
    /// The MAC.
    pub mac: MacAddr,
    /// The remote's address.
    pub remote: IpAddr,
    /// `None` for a static entry.
    pub age: Option<Duration>,
}

/// What a received datagram carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapsulated {
    /// The inner frame's VLAN on the bridge (VLAN 0 for a single-VNI port).
    pub vlan: VlanId,
    /// The remote it came from.
    pub remote: usize,
}

/// Most remotes learned from allowed prefixes.
const MAX_LEARNED_REMOTES: usize = 1024;
/// How often learned MACs are swept for age.
const SWEEP: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Behind {
    remote: usize,
    last_seen: Option<Instant>,
}

/// A VTEP.
#[derive(Debug, Clone)]
pub struct Vxlan {
    config: VxlanConfig,
    remotes: Vec<Remote>,
    macs: HashMap<(VlanId, MacAddr), Behind, ahash::RandomState>,
    next_sweep: Instant,
}

fn in_prefix(addr: IpAddr, (net, len): (IpAddr, u8)) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len.min(32))).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len.min(128))).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl Vxlan {
    /// A VTEP with no learned state.
    pub fn new(config: VxlanConfig) -> Vxlan {
        let remotes = config
            .remotes
            .iter()
            .map(|&addr| Remote { addr, configured: true, rx_packets: 0, rx_bytes: 0, tx_packets: 0, tx_bytes: 0 })
            .collect();
        Vxlan { config, remotes, macs: HashMap::with_hasher(ahash::RandomState::new()), next_sweep: Instant::ZERO }
    }

    /// The settings.
    pub fn config(&self) -> &VxlanConfig {
        &self.config
    }

    /// The remotes, configured first.
    pub fn remotes(&self) -> &[Remote] {
        &self.remotes
    }

    /// The VLAN a VNI belongs to.
    fn vlan_of(&self, vni: u32) -> Option<VlanId> {
        match &self.config.vnis {
            VniMap::Single(v) => (*v == vni).then_some(VlanId::NONE),
            VniMap::PerVlan(map) => map.iter().find(|(v, _)| *v == vni).map(|(_, vlan)| *vlan),
        }
    }

    /// The VNI frames of `vlan` are sent with.
    pub fn vni_for(&self, vlan: VlanId) -> Option<u32> {
        match &self.config.vnis {
            VniMap::Single(v) => {
                let _ = vlan;
                Some(*v)
            }
            VniMap::PerVlan(map) => map.iter().find(|(_, l)| *l == vlan).map(|(v, _)| *v),
        }
    }

    fn remote_index(&mut self, source: IpAddr) -> Result<usize, DropReason> {
        if let Some(i) = self.remotes.iter().position(|r| r.addr == source) {
            return Ok(i);
        }
        let allowed = self.config.learning && self.config.allowed.iter().any(|&p| in_prefix(source, p));
        let learned = self.remotes.iter().filter(|r| !r.configured).count();
        if !allowed || learned >= MAX_LEARNED_REMOTES {
            return Err(DropReason::VxlanUnknownRemote);
        }
        self.remotes.push(Remote {
            addr: source,
            configured: false,
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
        });
        Ok(self.remotes.len() - 1)
    }

    /// Checks a datagram from `source` and learns its inner source. On success the inner frame
    /// is `datagram[vxlan::HEADER_LEN..]`.
    pub fn decapsulate(&mut self, source: IpAddr, datagram: &[u8], now: Instant) -> Result<Decapsulated, DropReason> {
        let remote = self.remote_index(source)?;
        let (vni, inner) = vxlan::parse(datagram).map_err(|_| DropReason::VxlanBadHeader)?;
        let vlan = self.vlan_of(vni).ok_or(DropReason::VxlanUnknownVni)?;
        let frame = Frame::new_checked(inner).map_err(|_| DropReason::Runt)?;
        let r = &mut self.remotes[remote];
        r.rx_packets += 1;
        r.rx_bytes += inner.len() as u64;
        let src = frame.src_addr();
        if self.config.learning && src.is_valid_source() {
            let key = (vlan, src);
            let room = self.macs.len() < self.config.max_learned;
            // One hash for the lookup and the insert.
            match self.macs.entry(key) {
                Entry::Occupied(b) if b.get().last_seen.is_none() => {} // static: never moves
                Entry::Occupied(mut b) => *b.get_mut() = Behind { remote, last_seen: Some(now) },
                Entry::Vacant(v) if room => {
                    v.insert(Behind { remote, last_seen: Some(now) });
                }
                Entry::Vacant(_) => {}
            }
        }
        Ok(Decapsulated { vlan, remote })
    }

    /// The remote `mac` in `vlan` lives behind, if known.
    pub fn unicast_remote(&self, vlan: VlanId, mac: MacAddr) -> Option<usize> {
        if mac.is_multicast() {
            return None;
        }
        self.macs.get(&(vlan, mac)).map(|b| b.remote)
    }

    /// Where a frame to `dst` in `vlan` goes: one remote, or (`None`) every configured one.
    pub fn destination(&self, frame: &[u8], vlan: VlanId) -> Option<usize> {
        let dst = Frame::new_checked(frame).ok()?.dst_addr();
        self.unicast_remote(vlan, dst)
    }

    /// The socket address of remote `index`.
    pub fn remote_socket(&self, index: usize) -> Option<SocketAddr> {
        self.remotes.get(index).map(|r| SocketAddr::new(r.addr, self.config.dst_port))
    }

    /// Indices of the configured remotes (flood targets).
    pub fn flood_remotes(&self) -> impl Iterator<Item = usize> + '_ {
        self.remotes.iter().enumerate().filter(|(_, r)| r.configured).map(|(i, _)| i)
    }

    /// Counts `bytes` of inner frame sent to remote `index`.
    pub fn count_tx(&mut self, index: usize, bytes: usize) {
        if let Some(r) = self.remotes.get_mut(index) {
            r.tx_packets += 1;
            r.tx_bytes += bytes as u64;
        }
    }

    /// Counts `packets` datagrams carrying `bytes` of inner frames sent to remote `index`.
    pub fn count_tx_batch(&mut self, index: usize, packets: usize, bytes: usize) {
        if let Some(r) = self.remotes.get_mut(index) {
            r.tx_packets += packets as u64;
            r.tx_bytes += bytes as u64;
        }
    }

    /// Pins `mac` in `vlan` behind `remote` (added as an unconfigured remote if new).
    pub fn add_static(&mut self, vlan: VlanId, mac: MacAddr, remote: IpAddr) {
        let index = match self.remotes.iter().position(|r| r.addr == remote) {
            Some(i) => i,
            None => {
                self.remotes.push(Remote {
                    addr: remote,
                    configured: false,
                    rx_packets: 0,
                    rx_bytes: 0,
                    tx_packets: 0,
                    tx_bytes: 0,
                });
                self.remotes.len() - 1
            }
        };
        self.macs.insert((vlan, mac), Behind { remote: index, last_seen: None });
    }

    /// Forgets `mac` in `vlan`. Returns whether it was known.
    pub fn remove(&mut self, vlan: VlanId, mac: MacAddr) -> bool {
        self.macs.remove(&(vlan, mac)).is_some()
    }

    /// Forgets learned MACs idle for the aging time (at most once a second). Returns how many.
    pub fn run(&mut self, now: Instant) -> usize {
        if now < self.next_sweep {
            return 0;
        }
        self.next_sweep = now + SWEEP;
        let aging = self.config.aging;
        let before = self.macs.len();
        self.macs.retain(|_, b| b.last_seen.is_none_or(|seen| seen + aging > now));
        before - self.macs.len()
    }

    /// When [`Vxlan::run`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.macs.values().any(|b| b.last_seen.is_some()).then_some(self.next_sweep)
    }

    /// The MACs known behind remotes, with ages as of `now`.
    pub fn macs(&self, now: Instant) -> impl Iterator<Item = RemoteMac> + '_ {
        self.macs.iter().map(move |(&(vlan, mac), b)| RemoteMac {
            vlan,
            mac,
            remote: self.remotes[b.remote].addr,
            age: b.last_seen.map(|seen| now.saturating_duration_since(seen)),
        })
    }
}

/// Bytes of inner frame that fit an underlay MTU of `mtu` with IPv4 (or IPv6) outer headers.
pub fn inner_room(mtu: u32, ipv6: bool) -> usize {
    let overhead = if ipv6 { vxlan::OVERHEAD_V6 } else { vxlan::OVERHEAD_V4 } - ethernet::HEADER_LEN;
    (mtu as usize).saturating_sub(overhead)
}

#[cfg(test)]
mod tests {
    use super::*;

    const R1: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));
    const R2: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 3));
    const STRANGER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 9));

    fn config(vnis: VniMap) -> VxlanConfig {
        VxlanConfig {
            local: IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
            dst_port: 4789,
            remotes: vec![R1, R2],
            allowed: vec![],
            learning: true,
            vnis,
            aging: Duration::from_secs(300),
            max_learned: 100,
        }
    }

    fn datagram(vni: u32, src: u8, dst: [u8; 6]) -> Vec<u8> {
        let mut d = vxlan::header(vni).to_vec();
        d.extend_from_slice(&dst);
        d.extend_from_slice(&[0x02, 0, 0, 0, 0, src, 0x08, 0x00]);
        d.extend_from_slice(&[0u8; 46]);
        d
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, n])
    }

    fn vlan(n: u16) -> VlanId {
        VlanId::new(n).unwrap()
    }

    #[test]
    fn learns_inner_sources_behind_their_remote() {
        let mut v = Vxlan::new(config(VniMap::Single(42)));
        let t = Instant::from_secs(1);
        assert_eq!(
            v.decapsulate(R2, &datagram(42, 7, [0xff; 6]), t),
            Ok(Decapsulated { vlan: VlanId::NONE, remote: 1 })
        );
        assert_eq!(v.unicast_remote(VlanId::NONE, mac(7)), Some(1));
        assert_eq!(v.remotes()[1].rx_packets, 1);
        // Unknown unicast floods; known goes to one remote; multicast always floods.
        assert_eq!(v.destination(&datagram(42, 1, mac(7).0)[8..], VlanId::NONE), Some(1));
        assert_eq!(v.destination(&datagram(42, 1, mac(9).0)[8..], VlanId::NONE), None);
        assert_eq!(v.destination(&datagram(42, 1, [0xff; 6])[8..], VlanId::NONE), None);
        assert_eq!(v.flood_remotes().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(v.remote_socket(0), Some(SocketAddr::new(R1, 4789)));
    }

    #[test]
    fn strangers_and_bad_headers_change_nothing() {
        let mut v = Vxlan::new(config(VniMap::Single(42)));
        let t = Instant::from_secs(1);
        assert_eq!(v.decapsulate(STRANGER, &datagram(42, 7, [0xff; 6]), t), Err(DropReason::VxlanUnknownRemote));
        let mut bad = datagram(42, 7, [0xff; 6]);
        bad[0] = 0x0c;
        assert_eq!(v.decapsulate(R1, &bad, t), Err(DropReason::VxlanBadHeader));
        assert_eq!(v.decapsulate(R1, &bad[..5], t), Err(DropReason::VxlanBadHeader));
        assert_eq!(v.decapsulate(R1, &datagram(43, 7, [0xff; 6]), t), Err(DropReason::VxlanUnknownVni));
        assert_eq!(v.decapsulate(R1, &datagram(42, 7, [0xff; 6])[..20], t), Err(DropReason::Runt));
        assert_eq!(v.macs(t).count(), 0);
        assert_eq!(v.remotes().len(), 2);
    }

    #[test]
    fn allowed_prefixes_admit_new_remotes_only_when_learning() {
        let mut c = config(VniMap::Single(42));
        c.allowed = vec![(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 0)), 24)];
        let mut v = Vxlan::new(c.clone());
        let t = Instant::from_secs(1);
        assert_eq!(v.decapsulate(STRANGER, &datagram(42, 7, [0xff; 6]), t).map(|d| d.remote), Ok(2));
        assert!(!v.remotes()[2].configured);
        assert_eq!(v.flood_remotes().count(), 2, "learned remotes get no floods");
        c.learning = false;
        let mut v = Vxlan::new(c);
        assert_eq!(v.decapsulate(STRANGER, &datagram(42, 7, [0xff; 6]), t), Err(DropReason::VxlanUnknownRemote));
        assert!(in_prefix("2001:db8::5".parse().unwrap(), ("2001:db8::".parse().unwrap(), 64)));
        assert!(!in_prefix("2001:db9::5".parse().unwrap(), ("2001:db8::".parse().unwrap(), 64)));
    }

    #[test]
    fn each_vni_is_its_own_vlan() {
        let mut v = Vxlan::new(config(VniMap::PerVlan(vec![(100, vlan(10)), (200, vlan(20))])));
        let t = Instant::from_secs(1);
        assert_eq!(v.decapsulate(R1, &datagram(100, 7, [0xff; 6]), t).map(|d| d.vlan), Ok(vlan(10)));
        assert_eq!(v.decapsulate(R2, &datagram(200, 7, [0xff; 6]), t).map(|d| d.vlan), Ok(vlan(20)));
        assert_eq!(v.unicast_remote(vlan(10), mac(7)), Some(0));
        assert_eq!(v.unicast_remote(vlan(20), mac(7)), Some(1), "same MAC, other VNI, other remote");
        assert_eq!((v.vni_for(vlan(10)), v.vni_for(vlan(20)), v.vni_for(vlan(30))), (Some(100), Some(200), None));
        assert_eq!(v.vni_for(VlanId::NONE), None);
        assert_eq!(Vxlan::new(config(VniMap::Single(42))).vni_for(vlan(10)), Some(42), "one VNI, any VLAN mode");
    }

    #[test]
    fn learned_macs_age_and_static_ones_stay() {
        let mut v = Vxlan::new(config(VniMap::Single(42)));
        v.decapsulate(R1, &datagram(42, 7, [0xff; 6]), Instant::from_secs(10)).unwrap();
        v.add_static(VlanId::NONE, mac(8), "192.0.2.99".parse().unwrap());
        v.decapsulate(R1, &datagram(42, 8, [0xff; 6]), Instant::from_secs(11)).unwrap();
        assert_eq!(v.unicast_remote(VlanId::NONE, mac(8)), Some(2), "a static entry does not move");
        assert_eq!(v.run(Instant::from_secs(309)), 0);
        assert_eq!(v.run(Instant::from_secs(310)), 1);
        assert_eq!(v.unicast_remote(VlanId::NONE, mac(7)), None);
        assert_eq!(v.macs(Instant::from_secs(400)).next().unwrap().age, None);
        assert!(v.remove(VlanId::NONE, mac(8)));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut c = config(VniMap::Single(42));
        c.max_learned = 3;
        let mut v = Vxlan::new(c);
        for n in 0..10 {
            v.decapsulate(R1, &datagram(42, n + 1, [0xff; 6]), Instant::from_secs(1)).unwrap();
        }
        assert_eq!(v.macs(Instant::from_secs(1)).count(), 3);
    }

    #[test]
    fn mtu_arithmetic() {
        assert_eq!(inner_room(1500, false), 1464, "a 1450-byte MTU inner frame is 1464 bytes with its header");
        assert_eq!(inner_room(1500, true), 1444);
    }
}
