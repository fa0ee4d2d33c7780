//! The neighbour table behind ARP/ND suppression: which MAC answers for which IP address in
//! which VLAN, snooped from the ARP and neighbour discovery traffic that crosses the bridge,
//! and the local answer to a request for an address it knows.
//!
//! Learned from: ARP requests and replies (sender address, when the sender hardware address is
//! the frame's source), neighbour solicitations with a source address (not DAD probes) and
//! neighbour advertisements (target address; the target link-layer option, else the frame's
//! source). Entries age out after the aging time without being seen again.
//!
//! Bounded: at most `max` entries; a new address in a full table evicts the least recently
//! seen one, so a sender inventing addresses pushes out stale entries first and cannot hold
//! the table, and a live host is back with its next ARP. The recency order is a queue of
//! (key, stamp) with lazy deletion: a refresh pushes a new stamp and the old one is skipped
//! when it reaches the front; the queue is compacted when it grows past twice the bound, so
//! every operation is O(1) amortised and nothing allocates once the table is full.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use crate::VlanId;
use crate::time::Instant;
use crate::wire::MacAddr;
use crate::wire::arp::{Arp, OP_REPLY, OP_REQUEST};
use crate::wire::icmp::{self, ND_NEIGHBOR_ADVERT, ND_NEIGHBOR_SOLICIT};

/// Neighbour entries a table holds by default.
pub const DEFAULT_MAX: usize = 4096;

type Key = (VlanId, IpAddr);

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: MacAddr,
    seen: Instant,
    stamp: u64,
    /// When the other workers were last told of it ([`Neighbours::learn`]'s answer).
    shared: Instant,
}

/// A request that could be answered locally: who asks, for which address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// An ARP request.
    Arp(Arp),
    /// A neighbour solicitation from a specified source (`src`, at `mac`) for `target`.
    Solicit {
        /// The asker's address.
        src: std::net::Ipv6Addr,
        /// The asker's MAC (the frame's source).
        mac: MacAddr,
        /// The address asked for.
        target: std::net::Ipv6Addr,
    },
}

impl Request {
    /// The address asked for.
    pub fn target(&self) -> IpAddr {
        match self {
            Request::Arp(a) => IpAddr::V4(a.tpa),
            Request::Solicit { target, .. } => IpAddr::V6(*target),
        }
    }

    /// The request parsed from the untagged `frame`: an ARP request that is not a probe or a
    /// gratuitous announcement, or a neighbour solicitation that is not a DAD probe.
    pub fn parse(frame: &[u8]) -> Option<Request> {
        if let Some(arp) = Arp::parse(frame) {
            let probe_or_announcement = arp.spa.is_unspecified() || arp.spa == arp.tpa;
            return (arp.op == OP_REQUEST && !probe_or_announcement).then_some(Request::Arp(arp));
        }
        let nd = icmp::parse_neighbour(frame)?;
        if nd.kind != ND_NEIGHBOR_SOLICIT || nd.src.is_unspecified() || nd.target.is_multicast() {
            return None;
        }
        Some(Request::Solicit { src: nd.src, mac: MacAddr::from_bytes(&frame[6..12]), target: nd.target })
    }

    /// The answer saying the target is at `mac`, built into `out`; returns its length.
    pub fn answer(&self, mac: MacAddr, out: &mut [u8]) -> usize {
        match self {
            Request::Arp(a) => {
                let reply = a.reply(mac);
                out[..reply.len()].copy_from_slice(&reply);
                reply.len()
            }
            Request::Solicit { src, mac: asker, target } => {
                let advert = icmp::neighbour_advert(target, mac, src, *asker);
                out[..advert.len()].copy_from_slice(&advert);
                advert.len()
            }
        }
    }
}

/// Lifetime counters of a neighbour table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NeighbourStats {
    /// Addresses learned (new entries).
    pub learned: u64,
    /// Entries removed to make room.
    pub evicted: u64,
    /// Entries forgotten after the aging time.
    pub expired: u64,
}

/// IP → MAC per VLAN, bounded and aged.
#[derive(Debug, Clone)]
pub struct Neighbours {
    map: HashMap<Key, Entry, ahash::RandomState>,
    order: VecDeque<(Key, u64)>,
    next_stamp: u64,
    max: usize,
    aging: Duration,
    stats: NeighbourStats,
}

impl Neighbours {
    /// An empty table of at most `max` entries that forgets one after `aging` unseen.
    pub fn new(max: usize, aging: Duration) -> Neighbours {
        let max = max.max(1);
        Neighbours {
            map: HashMap::with_capacity_and_hasher(max, ahash::RandomState::new()),
            order: VecDeque::with_capacity(2 * max + 1),
            next_stamp: 0,
            max,
            aging,
            stats: NeighbourStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> NeighbourStats {
        self.stats
    }

    /// How many entries it holds (some may have expired but not been removed yet).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Holds no entry.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Records that `ip` in `vlan` is at `mac`, seen at `now`. Returns whether the other
    /// workers should hear of it: a new address, a new MAC for it, or one not told for a
    /// quarter of the aging time (so their entries do not age out while it stays busy here) —
    /// not every ARP a host sends.
    pub fn learn(&mut self, vlan: VlanId, ip: IpAddr, mac: MacAddr, now: Instant) -> bool {
        if !mac.is_valid_source() || ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            return false;
        }
        let key = (vlan, ip);
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let share = match self.map.get_mut(&key) {
            Some(entry) => {
                let share = entry.mac != mac || now.saturating_duration_since(entry.shared) >= self.aging / 4;
                let shared = if share { now } else { entry.shared };
                *entry = Entry { mac, seen: now, stamp, shared };
                share
            }
            None => {
                self.expire(now);
                while self.map.len() >= self.max {
                    self.evict_oldest();
                }
                self.map.insert(key, Entry { mac, seen: now, stamp, shared: now });
                self.stats.learned += 1;
                true
            }
        };
        self.order.push_back((key, stamp));
        if self.order.len() > 2 * self.max {
            let map = &self.map;
            self.order.retain(|(k, s)| map.get(k).is_some_and(|e| e.stamp == *s));
        }
        share
    }

    fn evict_oldest(&mut self) {
        while let Some((key, stamp)) = self.order.pop_front() {
            if self.map.get(&key).is_some_and(|e| e.stamp == stamp) {
                self.map.remove(&key);
                self.stats.evicted += 1;
                return;
            }
        }
    }

    /// The MAC `ip` in `vlan` is at, if seen within the aging time.
    pub fn lookup(&self, vlan: VlanId, ip: IpAddr, now: Instant) -> Option<MacAddr> {
        let entry = self.map.get(&(vlan, ip))?;
        (now.saturating_duration_since(entry.seen) < self.aging).then_some(entry.mac)
    }

    /// Forgets the entries not seen within the aging time; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        while let Some(&(key, stamp)) = self.order.front() {
            match self.map.get(&key) {
                Some(e) if e.stamp == stamp => {
                    if now.saturating_duration_since(e.seen) < self.aging {
                        break;
                    }
                    self.map.remove(&key);
                    removed += 1;
                }
                _ => {}
            }
            self.order.pop_front();
        }
        self.stats.expired += removed as u64;
        removed
    }

    /// Learns what the untagged `frame`, in `vlan`, says about its sender (ARP, NS, NA), and
    /// returns it when the other workers' tables should hear of it ([`Neighbours::learn`];
    /// [`crate::fdb_sync::FdbUpdate::Neighbour`]).
    pub fn observe(&mut self, frame: &[u8], vlan: VlanId, now: Instant) -> Option<(IpAddr, MacAddr)> {
        let source = MacAddr::from_bytes(frame.get(6..12).unwrap_or(&[0; 6]));
        let (ip, mac) = if let Some(arp) = Arp::parse(frame) {
            if !(matches!(arp.op, OP_REQUEST | OP_REPLY) && arp.sha == source) {
                return None;
            }
            (IpAddr::V4(arp.spa), arp.sha)
        } else {
            let nd = icmp::parse_neighbour(frame)?;
            match nd.kind {
                ND_NEIGHBOR_SOLICIT if !nd.src.is_unspecified() => (IpAddr::V6(nd.src), nd.lladdr.unwrap_or(source)),
                ND_NEIGHBOR_ADVERT => (IpAddr::V6(nd.target), nd.lladdr.unwrap_or(source)),
                _ => return None,
            }
        };
        self.learn(vlan, ip, mac, now).then_some((ip, mac))
    }
}

/// Whether the untagged `frame` is ARP or ICMPv6 (what [`Neighbours::observe`] reads): a cheap
/// test before the parse.
pub fn may_be_neighbour_frame(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        Some([0x08, 0x06]) => true,
        Some([0x86, 0xdd]) => frame.get(20) == Some(&icmp::IPPROTO_ICMPV6),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const MINUTE: Duration = Duration::from_secs(60);

    fn t(secs: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(secs)
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn v4(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    fn arp_frame(op: u16, sha: MacAddr, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&sha.0);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
        f.extend_from_slice(&op.to_be_bytes());
        f.extend_from_slice(&sha.0);
        f.extend_from_slice(&spa.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tpa.octets());
        f.resize(60, 0);
        f
    }

    #[test]
    fn only_news_and_a_quarter_aging_refresh_are_shared_with_the_other_workers() {
        let mut n = Neighbours::new(16, MINUTE);
        let vlan = VlanId::new(10).unwrap();
        let arp = |who: u8| arp_frame(1, mac(who), Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(n.observe(&arp(2), vlan, t(0)), Some((v4(2), mac(2))), "new");
        for secs in [1, 5, 14] {
            assert_eq!(n.observe(&arp(2), vlan, t(secs)), None, "the same again at {secs} s: not shared");
        }
        assert!(n.learn(vlan, v4(2), mac(2), t(15)), "a quarter of the aging time since it was shared");
        assert!(!n.learn(vlan, v4(2), mac(2), t(16)));
        assert_eq!(n.observe(&arp(3), vlan, t(17)), Some((v4(2), mac(3))), "another MAC for it");
        assert!(!n.learn(vlan, v4(2), MacAddr::BROADCAST, t(18)), "refused: nothing to share");
    }

    #[test]
    fn learns_looks_up_and_ages() {
        let mut n = Neighbours::new(16, MINUTE);
        let vlan = VlanId::new(10).unwrap();
        n.learn(vlan, v4(2), mac(2), t(0));
        assert_eq!(n.lookup(vlan, v4(2), t(30)), Some(mac(2)));
        assert_eq!(n.lookup(VlanId::NONE, v4(2), t(30)), None, "per VLAN");
        assert_eq!(n.lookup(vlan, v4(2), t(60)), None, "aged");
        n.learn(vlan, v4(2), mac(3), t(50));
        assert_eq!(n.lookup(vlan, v4(2), t(100)), Some(mac(3)), "refreshed, moved");
        assert_eq!(n.expire(t(200)), 1);
        assert!(n.is_empty());
        n.learn(vlan, IpAddr::V4(Ipv4Addr::UNSPECIFIED), mac(4), t(0));
        n.learn(vlan, v4(4), MacAddr::BROADCAST, t(0));
        assert!(n.is_empty(), "no unspecified address, no group MAC");
    }

    #[test]
    fn bounded_and_the_least_recently_seen_goes() {
        let mut n = Neighbours::new(4, MINUTE);
        for i in 1..=4 {
            n.learn(VlanId::NONE, v4(i), mac(i), t(u64::from(i)));
        }
        n.learn(VlanId::NONE, v4(1), mac(1), t(5)); // 1 is fresh again: 2 is the oldest
        n.learn(VlanId::NONE, v4(9), mac(9), t(6));
        assert_eq!(n.len(), 4);
        assert_eq!(n.lookup(VlanId::NONE, v4(2), t(7)), None, "evicted");
        assert_eq!(n.lookup(VlanId::NONE, v4(1), t(7)), Some(mac(1)));
        assert_eq!(n.stats().evicted, 1);
        // A sender inventing addresses, or refreshing one all the time, never grows it.
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i % 300));
            n.learn(VlanId::NONE, ip, mac(7), t(10));
            assert!(n.len() <= 4 && n.order.len() <= 9);
        }
    }

    #[test]
    fn snoops_arp_and_neighbour_discovery() {
        let mut n = Neighbours::new(16, MINUTE);
        let reply = arp_frame(OP_REPLY, mac(2), Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
        n.observe(&reply, VlanId::NONE, t(0));
        assert_eq!(n.lookup(VlanId::NONE, v4(2), t(1)), Some(mac(2)));
        let mut lying = arp_frame(OP_REQUEST, mac(3), Ipv4Addr::new(10, 0, 0, 3), Ipv4Addr::new(10, 0, 0, 1));
        lying[6..12].copy_from_slice(&mac(4).0);
        n.observe(&lying, VlanId::NONE, t(0));
        assert_eq!(n.lookup(VlanId::NONE, v4(3), t(1)), None, "sender MAC is not the frame's source");

        let target: Ipv6Addr = "2001:db8::b".parse().unwrap();
        let asker: Ipv6Addr = "2001:db8::a".parse().unwrap();
        let na = icmp::neighbour_advert(&target, mac(0xb), &asker, mac(0xa));
        assert!(may_be_neighbour_frame(&na) && may_be_neighbour_frame(&reply));
        n.observe(&na, VlanId::NONE, t(0));
        assert_eq!(n.lookup(VlanId::NONE, IpAddr::V6(target), t(1)), Some(mac(0xb)));
    }

    #[test]
    fn requests_that_may_be_answered() {
        let request = arp_frame(OP_REQUEST, mac(1), Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let r = Request::parse(&request).unwrap();
        assert_eq!(r.target(), v4(2));
        let mut out = [0u8; 128];
        let len = r.answer(mac(2), &mut out);
        let answer = Arp::parse(&out[..len]).unwrap();
        assert_eq!((answer.op, answer.sha, answer.tpa), (OP_REPLY, mac(2), Ipv4Addr::new(10, 0, 0, 1)));
        let probe = arp_frame(OP_REQUEST, mac(1), Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(Request::parse(&probe), None, "an address probe (RFC 5227) is for the owner to answer");
        let gratuitous = arp_frame(OP_REQUEST, mac(1), Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(Request::parse(&gratuitous), None);
        let reply = arp_frame(OP_REPLY, mac(1), Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(Request::parse(&reply), None);
    }
}
