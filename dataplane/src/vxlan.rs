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
//!   this endpoint carries (`vxlan_unknown_vni`); the inner frame must hold an Ethernet header
//!   (`runt`) with a unicast, non-zero source (`invalid_source`). Only a datagram that passes
//!   every check creates or refreshes state, so garbage from an allowed prefix learns nothing.
//! - Broadcast, multicast and unknown unicast go to every configured remote (head-end
//!   replication); a MAC learned behind a remote gets unicast to that remote only. Learned MACs
//!   age like the FDB's; static ones (`fdb add MAC PORT --remote IP`) do not.
//!
//! Nothing a sender does fills a table for good:
//! - Learned remotes are bounded ([`MAX_LEARNED_REMOTES`]). One not heard from for the aging
//!   time goes (its learned MACs, idle at least as long, went already). When the table is full
//!   a new source evicts the least recently heard learned remote rather than being refused: a
//!   refusal would let a spoofer hold every slot with one datagram per address per aging
//!   period, while under eviction it must outpace every live remote continuously, and a live
//!   remote it pushes out is back with its next datagram. Configured remotes, and remotes with
//!   static MACs behind them, never go.
//! - Learned MACs are bounded by `max_learned` (static ones are not counted); when full, the
//!   remote with the most learned MACs loses its least recently seen one, so a remote sending
//!   from random source MACs only pushes out its own.
//!
//! Representation, as in the FDB: a slab of MAC entries keyed by a hash map, threaded by two
//! intrusive lists (all learned MACs, and each remote's), and remote slots threaded by two
//! more (learned remotes by last datagram, and remotes bucketed by how many MACs they hold).
//! Time passed in is monotonic, so the lists stay sorted and aging and eviction each cost
//! O(1) per entry removed. Removing a remote moves the last one into its place in
//! [`Vxlan::remotes`]; MAC entries name remotes by a slot that does not move.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Serialize;

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
    /// Idle time after which a learned MAC, or a learned remote, is forgotten.
    pub aging: Duration,
    /// Bound on learned MACs (static ones are not counted). Zero disables MAC learning.
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
    /// The remote it came from, as an index into [`Vxlan::remotes`].
    pub remote: usize,
    /// The inner source was learned anew, moved to this remote, or has not been told to the
    /// other workers for a quarter of the aging time: tell them ([`Vxlan::learn_shared`]), so
    /// their replicas unicast to it too and do not age it out while it stays busy here.
    pub share: bool,
}

/// Lifetime counters of a VTEP's tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct VxlanStats {
    /// Remotes learned from allowed prefixes.
    pub remotes_learned: u64,
    /// Learned remotes forgotten after the aging time without a datagram.
    pub remotes_expired: u64,
    /// Learned remotes removed to make room for another (the least recently heard went).
    pub remotes_evicted: u64,
    /// Inner MACs learned.
    pub macs_learned: u64,
    /// Learned inner MACs that moved to another remote.
    pub macs_moved: u64,
    /// Learned inner MACs forgotten by aging (alone, or with their expired remote).
    pub macs_expired: u64,
    /// Learned inner MACs removed to make room (the busiest remote's least recently seen), or
    /// with their evicted remote.
    pub macs_evicted: u64,
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" replies sent back to senders of
    /// frames too big for the path (the frames themselves count as `vxlan_too_big`).
    #[serde(default)]
    pub too_big_replies: u64,
    /// Too-big replies the per-sender rate limit held back.
    #[serde(default)]
    pub too_big_replies_limited: u64,
    /// ARP requests and neighbour solicitations answered locally and not sent to the remotes
    /// (`arp_suppress`).
    #[serde(default)]
    pub neigh_suppressed: u64,
}

/// Most remotes learned from allowed prefixes at once.
pub const MAX_LEARNED_REMOTES: usize = 1024;
/// MAC slots reserved up front, so a table that stays under this size never allocates.
const PREALLOCATED: usize = 65_536;
/// The end of a list, or no slot.
const NIL: u32 = u32::MAX;

/// A node's place in an intrusive doubly linked list over a slab.
#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

impl Link {
    const DETACHED: Link = Link { prev: NIL, next: NIL };
}

/// An intrusive doubly linked list over a slab whose nodes keep their [`Link`] where `link`
/// points.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
}

impl List {
    const EMPTY: List = List { head: NIL, tail: NIL, len: 0 };

    fn push_back<T>(&mut self, nodes: &mut [T], idx: u32, link: fn(&mut T) -> &mut Link) {
        self.insert_after(nodes, idx, self.tail, link);
    }

    /// Inserts `idx` after `after`, or at the head if `after` is `NIL`.
    fn insert_after<T>(&mut self, nodes: &mut [T], idx: u32, after: u32, link: fn(&mut T) -> &mut Link) {
        let next = if after == NIL { self.head } else { link(&mut nodes[after as usize]).next };
        *link(&mut nodes[idx as usize]) = Link { prev: after, next };
        match after {
            NIL => self.head = idx,
            _ => link(&mut nodes[after as usize]).next = idx,
        }
        match next {
            NIL => self.tail = idx,
            _ => link(&mut nodes[next as usize]).prev = idx,
        }
        self.len += 1;
    }

    fn unlink<T>(&mut self, nodes: &mut [T], idx: u32, link: fn(&mut T) -> &mut Link) {
        let Link { prev, next } = *link(&mut nodes[idx as usize]);
        match prev {
            NIL => self.head = next,
            _ => link(&mut nodes[prev as usize]).next = next,
        }
        match next {
            NIL => self.tail = prev,
            _ => link(&mut nodes[next as usize]).prev = prev,
        }
        self.len -= 1;
        *link(&mut nodes[idx as usize]) = Link::DETACHED;
    }

    fn move_to_back<T>(&mut self, nodes: &mut [T], idx: u32, link: fn(&mut T) -> &mut Link) {
        if self.tail != idx {
            self.unlink(nodes, idx, link);
            self.push_back(nodes, idx, link);
        }
    }
}

/// A remote's table state, in a slot that does not move while the remote exists.
#[derive(Debug, Clone)]
struct RemoteSlot {
    /// Its position in [`Vxlan::remotes`]; `NIL` while the slot is free.
    index: u32,
    configured: bool,
    /// When a valid datagram last came from it (`Instant::ZERO` if never).
    last_heard: Instant,
    /// Static MACs behind it: while it has any, it is never aged or evicted.
    statics: u32,
    /// Its learned MACs, least recently seen first.
    macs: List,
    /// Place among the learned remotes without static MACs, least recently heard first; in a
    /// free slot, `heard.next` links the free list.
    heard: Link,
    /// Place among the remotes with as many learned MACs as this one.
    by_count: Link,
}

fn heard_link(r: &mut RemoteSlot) -> &mut Link {
    &mut r.heard
}

fn by_count_link(r: &mut RemoteSlot) -> &mut Link {
    &mut r.by_count
}

/// One inner MAC behind a remote.
#[derive(Debug, Clone)]
struct MacSlot {
    key: (VlanId, MacAddr),
    /// The [`RemoteSlot`] it lives behind.
    remote: u32,
    is_static: bool,
    last_seen: Instant,
    /// When the other workers were last told about it ([`Decapsulated::share`]).
    shared: Instant,
    /// Place among all learned MACs, least recently seen first; in a free slot, `all.next`
    /// links the free list.
    all: Link,
    /// Place among its remote's learned MACs.
    behind: Link,
}

fn all_link(m: &mut MacSlot) -> &mut Link {
    &mut m.all
}

fn behind_link(m: &mut MacSlot) -> &mut Link {
    &mut m.behind
}

/// A VTEP.
#[derive(Debug, Clone)]
pub struct Vxlan {
    config: VxlanConfig,
    /// Configured remotes first, then the others in no particular order.
    remotes: Vec<Remote>,
    /// The slot of each of `remotes`.
    remote_slot_of: Vec<u32>,
    remote_slots: Vec<RemoteSlot>,
    free_remote_slot: u32,
    remote_by_addr: HashMap<IpAddr, u32, ahash::RandomState>,
    /// Learned remotes without static MACs, least recently heard first.
    heard: List,
    /// `[n]`: the remotes with exactly `n` learned MACs (`n` ≥ 1), earliest to get there first.
    by_count: Vec<List>,
    /// The most learned MACs any remote has (0: none has any).
    busiest: usize,
    max_learned_remotes: usize,
    macs: HashMap<(VlanId, MacAddr), u32, ahash::RandomState>,
    mac_slots: Vec<MacSlot>,
    free_mac_slot: u32,
    /// Every learned MAC, least recently seen first.
    learned_macs: List,
    stats: VxlanStats,
    /// Answer ARP/ND requests for known addresses behind this port locally.
    arp_suppress: bool,
    /// The path MTU toward the remotes, as last measured.
    pub path_mtu: crate::tunnel_mtu::PathMtu,
    /// Paces the too-big replies.
    pub reply_limiter: crate::tunnel_mtu::ReplyLimiter,
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
    /// A VTEP with no learned state. Its hash maps are keyed with a per-table random secret,
    /// so senders cannot choose addresses that collide.
    pub fn new(config: VxlanConfig) -> Vxlan {
        let remote_room = config.remotes.len() + MAX_LEARNED_REMOTES;
        let mac_room = config.max_learned.min(PREALLOCATED);
        let mut vxlan = Vxlan {
            remotes: Vec::with_capacity(remote_room),
            remote_slot_of: Vec::with_capacity(remote_room),
            remote_slots: Vec::with_capacity(remote_room),
            free_remote_slot: NIL,
            remote_by_addr: HashMap::with_capacity_and_hasher(remote_room, ahash::RandomState::new()),
            heard: List::EMPTY,
            by_count: Vec::with_capacity(mac_room + 2),
            busiest: 0,
            max_learned_remotes: MAX_LEARNED_REMOTES,
            macs: HashMap::with_capacity_and_hasher(mac_room, ahash::RandomState::new()),
            mac_slots: Vec::with_capacity(mac_room),
            free_mac_slot: NIL,
            learned_macs: List::EMPTY,
            stats: VxlanStats::default(),
            arp_suppress: false,
            path_mtu: crate::tunnel_mtu::PathMtu::default(),
            reply_limiter: crate::tunnel_mtu::ReplyLimiter::default(),
            config,
        };
        for i in 0..vxlan.config.remotes.len() {
            let addr = vxlan.config.remotes[i];
            if !vxlan.remote_by_addr.contains_key(&addr) {
                vxlan.add_remote(addr, true, Instant::ZERO);
            }
        }
        vxlan
    }

    /// The settings.
    pub fn config(&self) -> &VxlanConfig {
        &self.config
    }

    /// Turns ARP/ND suppression on or off (`arp_suppress`): requests flooded toward this port
    /// for an address known to be behind it are answered locally instead.
    pub fn set_arp_suppress(&mut self, on: bool) {
        self.arp_suppress = on;
    }

    /// Whether ARP/ND suppression is on.
    pub fn arp_suppress(&self) -> bool {
        self.arp_suppress
    }

    /// Counts a too-big reply sent (`true`) or held back by the rate limit (`false`).
    pub fn count_too_big_reply(&mut self, sent: bool) {
        if sent {
            self.stats.too_big_replies += 1;
        } else {
            self.stats.too_big_replies_limited += 1;
        }
    }

    /// Counts a request answered locally instead of sent to the remotes.
    pub fn count_suppressed(&mut self) {
        self.stats.neigh_suppressed += 1;
    }

    /// The remotes, configured first. An index into this slice (as [`Decapsulated::remote`],
    /// [`Vxlan::unicast_remote`] and [`Vxlan::destination`] give) holds until the next call
    /// that can remove a remote ([`Vxlan::decapsulate`], [`Vxlan::run`], [`Vxlan::add_static`],
    /// [`Vxlan::remove`]): the last remote then moves into the removed one's place.
    pub fn remotes(&self) -> &[Remote] {
        &self.remotes
    }

    /// Lifetime counters.
    pub fn stats(&self) -> VxlanStats {
        self.stats
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

    /// Checks a datagram from `source` and learns its inner source. On success the inner frame
    /// is `datagram[vxlan::HEADER_LEN..]`. Nothing is learned or refreshed unless every check
    /// passes.
    pub fn decapsulate(&mut self, source: IpAddr, datagram: &[u8], now: Instant) -> Result<Decapsulated, DropReason> {
        let known = self.remote_by_addr.get(&source).copied();
        if known.is_none() && !self.may_learn_remote(source) {
            return Err(DropReason::VxlanUnknownRemote);
        }
        let (vni, inner) = vxlan::parse(datagram).map_err(|_| DropReason::VxlanBadHeader)?;
        let vlan = self.vlan_of(vni).ok_or(DropReason::VxlanUnknownVni)?;
        let src = Frame::new_checked(inner).map_err(|_| DropReason::Runt)?.src_addr();
        if !src.is_valid_source() {
            return Err(DropReason::InvalidSource);
        }
        let slot = match known {
            Some(slot) => slot,
            None => self.learn_remote(source, now),
        };
        self.hear(slot, now);
        let index = self.remote_slots[slot as usize].index as usize;
        let r = &mut self.remotes[index];
        r.rx_packets += 1;
        r.rx_bytes += inner.len() as u64;
        let share = self.config.learning && self.learn_mac((vlan, src), slot, now);
        Ok(Decapsulated { vlan, remote: self.remote_slots[slot as usize].index as usize, share })
    }

    /// Learns what another worker's replica of this endpoint learned from a datagram it
    /// checked ([`Decapsulated::share`]): `mac` in `vlan` behind `source`, which becomes a
    /// learned remote if this endpoint would accept it as one. The same bounds hold as for
    /// a datagram; nothing is shared back.
    pub fn learn_shared(&mut self, source: IpAddr, vlan: VlanId, mac: MacAddr, now: Instant) {
        if !self.config.learning || !mac.is_valid_source() {
            return;
        }
        let slot = match self.remote_by_addr.get(&source).copied() {
            Some(slot) => slot,
            None if self.may_learn_remote(source) => self.learn_remote(source, now),
            None => return,
        };
        self.hear(slot, now);
        self.learn_mac((vlan, mac), slot, now);
    }

    /// The remote `mac` in `vlan` lives behind, if known.
    pub fn unicast_remote(&self, vlan: VlanId, mac: MacAddr) -> Option<usize> {
        if mac.is_multicast() {
            return None;
        }
        let &slot = self.macs.get(&(vlan, mac))?;
        Some(self.remote_slots[self.mac_slots[slot as usize].remote as usize].index as usize)
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
    pub fn flood_remotes(&self) -> std::ops::Range<usize> {
        // Configured remotes come first: the learned ones (up to a thousand a sender can make)
        // are never walked for a flood.
        0..self.remotes.iter().position(|r| !r.configured).unwrap_or(self.remotes.len())
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

    /// Makes `addr` a flood target, as a configured remote is, while the port runs (a remote a
    /// control plane such as EVPN announced). A learned remote becomes one, keeping its MACs.
    /// Returns whether anything changed (`false`: it already was one).
    pub fn add_flood_remote(&mut self, addr: IpAddr) -> bool {
        let boundary = self.flood_remotes().end;
        let slot = match self.remote_by_addr.get(&addr) {
            Some(&slot) => {
                let r = &self.remote_slots[slot as usize];
                if r.configured {
                    return false;
                }
                if r.statics == 0 {
                    self.heard.unlink(&mut self.remote_slots, slot, heard_link);
                }
                slot
            }
            None => self.add_remote(addr, false, Instant::ZERO),
        };
        self.remote_slots[slot as usize].configured = true;
        let index = self.remote_slots[slot as usize].index as usize;
        self.remotes[index].configured = true;
        self.swap_remotes(index, boundary);
        true
    }

    /// Stops flooding to `addr`, a remote made a flood target (by the file or by
    /// [`Vxlan::add_flood_remote`]). It goes, with the MACs learned behind it, unless static
    /// MACs still pin it. Returns whether it was a flood target.
    pub fn remove_flood_remote(&mut self, addr: IpAddr) -> bool {
        let Some(&slot) = self.remote_by_addr.get(&addr) else { return false };
        if !self.remote_slots[slot as usize].configured {
            return false;
        }
        let last = self.flood_remotes().end - 1;
        let index = self.remote_slots[slot as usize].index as usize;
        self.swap_remotes(index, last);
        self.remote_slots[slot as usize].configured = false;
        self.remotes[last].configured = false;
        if self.remote_slots[slot as usize].statics == 0 {
            // Into the heard list, which removing a remote takes it off.
            self.heard.push_back(&mut self.remote_slots, slot, heard_link);
            self.remove_remote(slot);
        }
        true
    }

    /// Swaps the remotes at positions `a` and `b`, keeping their slots pointing at them.
    fn swap_remotes(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        self.remotes.swap(a, b);
        self.remote_slot_of.swap(a, b);
        self.remote_slots[self.remote_slot_of[a] as usize].index = a as u32;
        self.remote_slots[self.remote_slot_of[b] as usize].index = b as u32;
    }

    /// Pins `mac` in `vlan` behind `remote` (added as an unconfigured remote if new). The
    /// remote stays while any static MAC is behind it.
    pub fn add_static(&mut self, vlan: VlanId, mac: MacAddr, remote: IpAddr) {
        let remote = match self.remote_by_addr.get(&remote) {
            Some(&slot) => {
                self.pin(slot);
                slot
            }
            None => {
                let slot = self.add_remote(remote, false, Instant::ZERO);
                self.remote_slots[slot as usize].statics = 1;
                slot
            }
        };
        let key = (vlan, mac);
        match self.macs.get(&key) {
            Some(&slot) => {
                let entry = &self.mac_slots[slot as usize];
                let (was_static, before) = (entry.is_static, entry.remote);
                if !was_static {
                    self.learned_macs.unlink(&mut self.mac_slots, slot, all_link);
                    self.detach_from_remote(slot);
                }
                let entry = &mut self.mac_slots[slot as usize];
                (entry.is_static, entry.remote) = (true, remote);
                if was_static {
                    self.unpin(before);
                }
            }
            None => {
                self.alloc_mac(MacSlot {
                    key,
                    remote,
                    is_static: true,
                    last_seen: Instant::ZERO,
                    shared: Instant::ZERO,
                    all: Link::DETACHED,
                    behind: Link::DETACHED,
                });
            }
        }
    }

    /// Forgets `mac` in `vlan`. Returns whether it was known.
    pub fn remove(&mut self, vlan: VlanId, mac: MacAddr) -> bool {
        match self.macs.get(&(vlan, mac)) {
            Some(&slot) => {
                self.remove_mac(slot);
                true
            }
            None => false,
        }
    }

    /// Forgets learned MACs idle for the aging time, then learned remotes not heard from for
    /// as long (with whatever learned MACs are still behind them). Returns how many MACs went.
    pub fn run(&mut self, now: Instant) -> usize {
        let aging = self.config.aging;
        let mut expired = 0;
        while self.learned_macs.head != NIL {
            let head = self.learned_macs.head;
            if self.mac_slots[head as usize].last_seen + aging > now {
                break;
            }
            self.remove_mac(head);
            expired += 1;
        }
        while self.heard.head != NIL {
            let head = self.heard.head;
            if self.remote_slots[head as usize].last_heard + aging > now {
                break;
            }
            expired += self.remove_remote(head);
            self.stats.remotes_expired += 1;
        }
        self.stats.macs_expired += expired as u64;
        expired
    }

    /// When [`Vxlan::run`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let aging = self.config.aging;
        let mac = (self.learned_macs.head != NIL).then(|| self.mac_slots[self.learned_macs.head as usize].last_seen);
        let remote = (self.heard.head != NIL).then(|| self.remote_slots[self.heard.head as usize].last_heard);
        mac.into_iter().chain(remote).min().map(|seen| seen + aging)
    }

    /// The MACs known behind remotes, with ages as of `now`.
    pub fn macs(&self, now: Instant) -> impl Iterator<Item = RemoteMac> + '_ {
        self.macs.values().map(move |&slot| {
            let m = &self.mac_slots[slot as usize];
            RemoteMac {
                vlan: m.key.0,
                mac: m.key.1,
                remote: self.remotes[self.remote_slots[m.remote as usize].index as usize].addr,
                age: (!m.is_static).then(|| now.saturating_duration_since(m.last_seen)),
            }
        })
    }

    /// Whether a datagram from unknown `source` may make it a learned remote.
    fn may_learn_remote(&self, source: IpAddr) -> bool {
        self.config.learning
            && self.max_learned_remotes > 0
            && self.config.allowed.iter().any(|&prefix| in_prefix(source, prefix))
    }

    /// Adds a remote (neither in the heard list nor pinned yet) and returns its slot.
    fn add_remote(&mut self, addr: IpAddr, configured: bool, now: Instant) -> u32 {
        let state = RemoteSlot {
            index: self.remotes.len() as u32,
            configured,
            last_heard: now,
            statics: 0,
            macs: List::EMPTY,
            heard: Link::DETACHED,
            by_count: Link::DETACHED,
        };
        let slot = match self.free_remote_slot {
            NIL => {
                self.remote_slots.push(state);
                (self.remote_slots.len() - 1) as u32
            }
            free => {
                self.free_remote_slot = self.remote_slots[free as usize].heard.next;
                self.remote_slots[free as usize] = state;
                free
            }
        };
        self.remotes.push(Remote { addr, configured, rx_packets: 0, rx_bytes: 0, tx_packets: 0, tx_bytes: 0 });
        self.remote_slot_of.push(slot);
        self.remote_by_addr.insert(addr, slot);
        slot
    }

    /// Adds `addr` as a learned remote, evicting the least recently heard one if full.
    fn learn_remote(&mut self, addr: IpAddr, now: Instant) -> u32 {
        if self.heard.len >= self.max_learned_remotes {
            self.evict_remote();
        }
        let slot = self.add_remote(addr, false, now);
        self.heard.push_back(&mut self.remote_slots, slot, heard_link);
        self.stats.remotes_learned += 1;
        slot
    }

    fn evict_remote(&mut self) {
        if self.heard.head != NIL {
            let macs = self.remove_remote(self.heard.head);
            self.stats.remotes_evicted += 1;
            self.stats.macs_evicted += macs as u64;
        }
    }

    /// Removes a learned remote without static MACs and the MACs behind it; returns how many.
    fn remove_remote(&mut self, slot: u32) -> usize {
        let mut macs = 0;
        while self.remote_slots[slot as usize].macs.head != NIL {
            self.remove_mac(self.remote_slots[slot as usize].macs.head);
            macs += 1;
        }
        self.heard.unlink(&mut self.remote_slots, slot, heard_link);
        let index = self.remote_slots[slot as usize].index as usize;
        self.remote_by_addr.remove(&self.remotes[index].addr);
        self.remotes.swap_remove(index);
        self.remote_slot_of.swap_remove(index);
        if let Some(&moved) = self.remote_slot_of.get(index) {
            self.remote_slots[moved as usize].index = index as u32;
        }
        let freed = &mut self.remote_slots[slot as usize];
        freed.index = NIL;
        freed.heard = Link { prev: NIL, next: self.free_remote_slot };
        self.free_remote_slot = slot;
        macs
    }

    /// Notes a valid datagram from the remote in `slot`.
    fn hear(&mut self, slot: u32, now: Instant) {
        let remote = &mut self.remote_slots[slot as usize];
        if remote.last_heard == now {
            return;
        }
        remote.last_heard = now;
        if !remote.configured && remote.statics == 0 {
            self.heard.move_to_back(&mut self.remote_slots, slot, heard_link);
        }
    }

    /// Counts one more static MAC behind the remote in `slot`; a learned remote stops aging.
    fn pin(&mut self, slot: u32) {
        let remote = &mut self.remote_slots[slot as usize];
        remote.statics += 1;
        if remote.statics == 1 && !remote.configured {
            self.heard.unlink(&mut self.remote_slots, slot, heard_link);
        }
    }

    /// Counts one static MAC fewer behind the remote in `slot`; a learned remote left without
    /// any rejoins the heard list where its last datagram puts it (a walk over at most the
    /// bound, on the operator's path only).
    fn unpin(&mut self, slot: u32) {
        let remote = &mut self.remote_slots[slot as usize];
        remote.statics -= 1;
        if remote.statics > 0 || remote.configured {
            return;
        }
        let heard = remote.last_heard;
        let mut after = self.heard.tail;
        while after != NIL && self.remote_slots[after as usize].last_heard > heard {
            after = self.remote_slots[after as usize].heard.prev;
        }
        self.heard.insert_after(&mut self.remote_slots, slot, after, heard_link);
        if self.heard.len > self.max_learned_remotes {
            self.evict_remote();
        }
    }

    /// Learns that `key` lives behind the remote in `remote`, as seen at `now`.
    /// Learns or refreshes `key` behind `remote`. Returns whether the other workers should
    /// hear of it ([`Decapsulated::share`]).
    fn learn_mac(&mut self, key: (VlanId, MacAddr), remote: u32, now: Instant) -> bool {
        if let Some(&slot) = self.macs.get(&key) {
            let entry = &self.mac_slots[slot as usize];
            if entry.is_static {
                return false;
            }
            let moved = entry.remote != remote;
            if moved {
                self.detach_from_remote(slot);
                self.mac_slots[slot as usize].remote = remote;
                self.attach_to_remote(slot);
                self.stats.macs_moved += 1;
            } else if entry.last_seen == now {
                return false;
            }
            let entry = &mut self.mac_slots[slot as usize];
            entry.last_seen = now;
            let share = moved || now.saturating_duration_since(entry.shared) >= self.config.aging / 4;
            if share {
                entry.shared = now;
            }
            self.learned_macs.move_to_back(&mut self.mac_slots, slot, all_link);
            self.remote_slots[remote as usize].macs.move_to_back(&mut self.mac_slots, slot, behind_link);
            return share;
        }
        if self.config.max_learned == 0 {
            return false;
        }
        if self.learned_macs.len >= self.config.max_learned {
            self.evict_mac();
        }
        let slot = self.alloc_mac(MacSlot {
            key,
            remote,
            is_static: false,
            last_seen: now,
            shared: now,
            all: Link::DETACHED,
            behind: Link::DETACHED,
        });
        self.learned_macs.push_back(&mut self.mac_slots, slot, all_link);
        self.attach_to_remote(slot);
        self.stats.macs_learned += 1;
        true
    }

    /// Removes the least recently seen learned MAC of the remote with the most.
    fn evict_mac(&mut self) {
        if self.busiest == 0 {
            return;
        }
        let remote = self.by_count[self.busiest].head;
        self.remove_mac(self.remote_slots[remote as usize].macs.head);
        self.stats.macs_evicted += 1;
    }

    fn alloc_mac(&mut self, entry: MacSlot) -> u32 {
        let key = entry.key;
        let slot = match self.free_mac_slot {
            NIL => {
                self.mac_slots.push(entry);
                (self.mac_slots.len() - 1) as u32
            }
            free => {
                self.free_mac_slot = self.mac_slots[free as usize].all.next;
                self.mac_slots[free as usize] = entry;
                free
            }
        };
        self.macs.insert(key, slot);
        slot
    }

    /// Removes a MAC entry, learned or static.
    fn remove_mac(&mut self, slot: u32) {
        let entry = &self.mac_slots[slot as usize];
        let (key, remote, is_static) = (entry.key, entry.remote, entry.is_static);
        if !is_static {
            self.learned_macs.unlink(&mut self.mac_slots, slot, all_link);
            self.detach_from_remote(slot);
        }
        self.macs.remove(&key);
        self.mac_slots[slot as usize].all = Link { prev: NIL, next: self.free_mac_slot };
        self.free_mac_slot = slot;
        if is_static {
            self.unpin(remote);
        }
    }

    /// Adds learned MAC `slot` to its remote's list, moving the remote up a count bucket.
    fn attach_to_remote(&mut self, slot: u32) {
        let remote = self.mac_slots[slot as usize].remote;
        let had = self.remote_slots[remote as usize].macs.len;
        self.remote_slots[remote as usize].macs.push_back(&mut self.mac_slots, slot, behind_link);
        if had > 0 {
            self.by_count[had].unlink(&mut self.remote_slots, remote, by_count_link);
        }
        if self.by_count.len() <= had + 1 {
            self.by_count.resize(had + 2, List::EMPTY);
        }
        self.by_count[had + 1].push_back(&mut self.remote_slots, remote, by_count_link);
        self.busiest = self.busiest.max(had + 1);
    }

    /// Takes learned MAC `slot` off its remote's list, moving the remote down a count bucket.
    fn detach_from_remote(&mut self, slot: u32) {
        let remote = self.mac_slots[slot as usize].remote;
        let had = self.remote_slots[remote as usize].macs.len;
        self.remote_slots[remote as usize].macs.unlink(&mut self.mac_slots, slot, behind_link);
        self.by_count[had].unlink(&mut self.remote_slots, remote, by_count_link);
        if had > 1 {
            self.by_count[had - 1].push_back(&mut self.remote_slots, remote, by_count_link);
        }
        if had == self.busiest && self.by_count[had].len == 0 {
            self.busiest = had - 1;
        }
    }

    /// Checks every structural invariant; for tests.
    #[cfg(test)]
    fn check_invariants(&self) {
        // Remotes: the dense view and the slots agree; configured ones come first.
        assert_eq!(self.remotes.len(), self.remote_slot_of.len());
        assert_eq!(self.remotes.len(), self.remote_by_addr.len());
        let configured = self.remotes.iter().take_while(|r| r.configured).count();
        assert!(self.remotes[configured..].iter().all(|r| !r.configured), "configured remotes first");
        let mut statics = vec![0u32; self.remote_slots.len()];
        for (index, (r, &slot)) in self.remotes.iter().zip(&self.remote_slot_of).enumerate() {
            let s = &self.remote_slots[slot as usize];
            assert_eq!(s.index as usize, index);
            assert_eq!(s.configured, r.configured);
            assert_eq!(self.remote_by_addr.get(&r.addr), Some(&slot));
        }
        let live = |slot: u32| {
            let index = self.remote_slots[slot as usize].index;
            index != NIL && self.remote_slot_of.get(index as usize) == Some(&slot)
        };
        // The heard list: exactly the live learned remotes without statics, in order, bounded.
        let (mut n, mut prev, mut cur, mut last) = (0, NIL, self.heard.head, Instant::ZERO);
        while cur != NIL {
            let s = &self.remote_slots[cur as usize];
            assert!(live(cur) && !s.configured && s.statics == 0);
            assert_eq!(s.heard.prev, prev);
            assert!(s.last_heard >= last, "heard list out of order");
            (n, prev, last, cur) = (n + 1, cur, s.last_heard, s.heard.next);
        }
        assert_eq!((self.heard.len, self.heard.tail), (n, prev));
        assert!(self.heard.len <= self.max_learned_remotes);
        // MACs: every entry is indexed, points at a live remote and sits in the right lists.
        let mut learned = 0;
        for (key, &slot) in &self.macs {
            let m = &self.mac_slots[slot as usize];
            assert_eq!(&m.key, key);
            assert!(live(m.remote), "a MAC behind a removed remote");
            if m.is_static {
                statics[m.remote as usize] += 1;
            } else {
                learned += 1;
                assert!(m.last_seen <= self.remote_slots[m.remote as usize].last_heard);
            }
        }
        for &slot in &self.remote_slot_of {
            let s = &self.remote_slots[slot as usize];
            assert_eq!(s.statics, statics[slot as usize]);
            if !s.configured && s.statics == 0 {
                n -= 1; // counted once in the heard list
            }
        }
        assert_eq!(n, 0, "a learned remote missing from the heard list");
        assert_eq!(self.learned_macs.len, learned);
        assert!(learned <= self.config.max_learned);
        let walk = |list: &List, link: fn(&MacSlot) -> Link, remote: Option<u32>| {
            let (mut n, mut prev, mut cur, mut last) = (0, NIL, list.head, Instant::ZERO);
            while cur != NIL {
                let m = &self.mac_slots[cur as usize];
                assert!(!m.is_static);
                assert_eq!(self.macs.get(&m.key), Some(&cur));
                assert!(remote.is_none_or(|r| r == m.remote));
                assert_eq!(link(m).prev, prev);
                assert!(m.last_seen >= last, "MAC list out of order");
                (n, prev, last, cur) = (n + 1, cur, m.last_seen, link(m).next);
            }
            assert_eq!((list.len, list.tail), (n, prev));
        };
        walk(&self.learned_macs, |m| m.all, None);
        let mut sum = 0;
        for &slot in &self.remote_slot_of {
            walk(&self.remote_slots[slot as usize].macs, |m| m.behind, Some(slot));
            sum += self.remote_slots[slot as usize].macs.len;
        }
        assert_eq!(sum, learned);
        // Count buckets: each remote with learned MACs in the bucket of its count.
        let mut bucketed = 0;
        for (count, list) in self.by_count.iter().enumerate() {
            let (mut n, mut prev, mut cur) = (0, NIL, list.head);
            while cur != NIL {
                let s = &self.remote_slots[cur as usize];
                assert!(live(cur) && count > 0);
                assert_eq!((s.macs.len, s.by_count.prev), (count, prev));
                (n, prev, cur) = (n + 1, cur, s.by_count.next);
            }
            assert_eq!((list.len, list.tail), (n, prev));
            bucketed += n;
        }
        let with_macs = self.remote_slot_of.iter().filter(|&&s| self.remote_slots[s as usize].macs.len > 0).count();
        assert_eq!(bucketed, with_macs);
        let busiest = self.by_count.iter().rposition(|l| l.len > 0).unwrap_or(0);
        assert_eq!(self.busiest, busiest);
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
    fn flood_remotes_added_and_removed_while_running() {
        let r3: IpAddr = "192.0.2.4".parse().unwrap();
        let r4: IpAddr = "192.0.2.5".parse().unwrap();
        let mut c = config(VniMap::Single(42));
        c.remotes = vec![R1];
        c.allowed = vec![("192.0.2.0".parse().unwrap(), 24)];
        let mut v = Vxlan::new(c);
        let flood = |v: &Vxlan| v.remotes()[v.flood_remotes()].iter().map(|r| r.addr).collect::<Vec<_>>();
        // A learned remote (r3) and one pinned by a static MAC (r4) exist before EVPN names them.
        v.decapsulate(r3, &datagram(42, 3, [0xff; 6]), Instant::from_secs(1)).unwrap();
        v.add_static(vlan(1), mac(9), r4);
        assert_eq!(flood(&v), vec![R1]);
        assert!(v.add_flood_remote(R2));
        assert!(v.add_flood_remote(r3));
        assert!(v.add_flood_remote(r4));
        assert!(!v.add_flood_remote(R2), "already one");
        v.check_invariants();
        assert_eq!(flood(&v).len(), 4);
        assert_eq!(v.unicast_remote(VlanId::NONE, mac(3)).map(|i| v.remotes()[i].addr), Some(r3), "MACs kept");
        // Withdrawn: a remote without static MACs goes with its learned MACs; a pinned one stays.
        assert!(v.remove_flood_remote(r3));
        assert!(v.unicast_remote(VlanId::NONE, mac(3)).is_none());
        assert!(v.remove_flood_remote(r4));
        assert!(!v.remove_flood_remote(r4), "no longer one");
        v.check_invariants();
        assert_eq!(flood(&v).len(), 2);
        assert!(v.remotes().iter().any(|r| r.addr == r4 && !r.configured));
        assert_eq!(v.unicast_remote(vlan(1), mac(9)).map(|i| v.remotes()[i].addr), Some(r4));
        assert!(v.remove(vlan(1), mac(9)));
        assert!(v.remove_flood_remote(R1) && v.remove_flood_remote(R2));
        v.check_invariants();
        assert!(flood(&v).is_empty());
        assert!(!v.remotes().iter().any(|r| r.addr == R1));
    }

    #[test]
    fn learns_inner_sources_behind_their_remote() {
        let mut v = Vxlan::new(config(VniMap::Single(42)));
        let t = Instant::from_secs(1);
        assert_eq!(
            v.decapsulate(R2, &datagram(42, 7, [0xff; 6]), t),
            Ok(Decapsulated { vlan: VlanId::NONE, remote: 1, share: true })
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
    fn what_one_worker_learns_it_shares_once_then_again_each_quarter_of_the_aging_time() {
        let mut here = Vxlan::new(config(VniMap::Single(42)));
        let mut there = here.clone();
        let share = |v: &mut Vxlan, from: IpAddr, secs: u64| {
            v.decapsulate(from, &datagram(42, 7, [0xff; 6]), Instant::from_secs(secs)).unwrap().share
        };
        assert!(share(&mut here, R2, 1), "new");
        assert!(!share(&mut here, R2, 2), "refreshed, told already");
        assert!(!share(&mut here, R2, 75), "not yet a quarter of 300 s");
        assert!(share(&mut here, R2, 76), "a quarter of the aging time since it was told");
        assert!(share(&mut here, R1, 77), "moved to another remote");
        // The other worker's replica learns it as if the datagram had come to it.
        there.learn_shared(R1, VlanId::NONE, mac(7), Instant::from_secs(77));
        assert_eq!(there.unicast_remote(VlanId::NONE, mac(7)).map(|i| there.remotes()[i].addr), Some(R1));
        there.check_invariants();
        // Kept alive by the shares: still there after most of an aging time, gone after one.
        there.learn_shared(R1, VlanId::NONE, mac(7), Instant::from_secs(300));
        there.run(Instant::from_secs(500));
        assert!(there.unicast_remote(VlanId::NONE, mac(7)).is_some());
        there.run(Instant::from_secs(601));
        assert!(there.unicast_remote(VlanId::NONE, mac(7)).is_none());
    }

    #[test]
    fn a_shared_update_obeys_the_same_bounds_as_a_datagram() {
        let stranger_net = (STRANGER, 24);
        let mut v =
            Vxlan::new(VxlanConfig { allowed: vec![stranger_net], max_learned: 2, ..config(VniMap::Single(42)) });
        let t = Instant::from_secs(1);
        // Not a remote this endpoint would accept: nothing learned.
        v.learn_shared("203.0.113.9".parse().unwrap(), VlanId::NONE, mac(1), t);
        assert!(v.unicast_remote(VlanId::NONE, mac(1)).is_none());
        // A group address is no source.
        v.learn_shared(R1, VlanId::NONE, MacAddr([0x01, 0, 0x5e, 0, 0, 1]), t);
        assert_eq!(v.stats().macs_learned, 0);
        // From the allowed prefix: a learned remote, and the MAC bound holds.
        for n in 1..=5 {
            v.learn_shared(STRANGER, VlanId::NONE, mac(n), t);
        }
        assert!(v.remotes().iter().any(|r| r.addr == STRANGER && !r.configured));
        assert_eq!(v.macs(t).filter(|m| m.age.is_some()).count(), 2);
        v.check_invariants();
        // With learning off, nothing.
        let mut off = Vxlan::new(VxlanConfig { learning: false, ..config(VniMap::Single(42)) });
        off.learn_shared(R1, VlanId::NONE, mac(1), t);
        assert!(off.unicast_remote(VlanId::NONE, mac(1)).is_none());
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

    const PREFIX: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 0));

    /// The `n`th address of 198.18.0.0/15.
    fn allowed_addr(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + n))
    }

    /// A VTEP that learns remotes from 198.18.0.0/15.
    fn learning_vtep(max_learned: usize) -> Vxlan {
        let mut c = config(VniMap::Single(42));
        c.allowed = vec![(PREFIX, 15)];
        c.max_learned = max_learned;
        Vxlan::new(c)
    }

    fn wide_mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
    }

    fn datagram_from(vni: u32, src: MacAddr) -> Vec<u8> {
        let mut d = vxlan::header(vni).to_vec();
        d.extend_from_slice(&[0xff; 6]);
        d.extend_from_slice(&src.0);
        d.extend_from_slice(&[0x08, 0x00]);
        d.extend_from_slice(&[0u8; 46]);
        d
    }

    fn millis(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn learned_remotes(v: &Vxlan) -> usize {
        v.remotes().iter().filter(|r| !r.configured).count()
    }

    fn remote_of(v: &Vxlan, mac: MacAddr) -> Option<IpAddr> {
        v.unicast_remote(VlanId::NONE, mac).map(|i| v.remotes()[i].addr)
    }

    #[test]
    fn a_spoofer_cannot_keep_a_talking_remote_out() {
        let mut v = learning_vtep(100_000);
        let real = allowed_addr(100_000);
        let real_mac = wide_mac(0xffff);
        // 10,000 forged sources, each once; the real remote talks once every 100 of them.
        for n in 0..10_000u32 {
            let now = millis(1000 + u64::from(n));
            v.decapsulate(allowed_addr(n), &datagram_from(42, wide_mac(n)), now).unwrap();
            if n % 100 == 50 {
                v.decapsulate(real, &datagram_from(42, real_mac), now).unwrap();
            }
            assert!(learned_remotes(&v) <= MAX_LEARNED_REMOTES);
        }
        assert_eq!(remote_of(&v, real_mac), Some(real), "the talking remote and its MAC stay");
        assert_eq!(learned_remotes(&v), MAX_LEARNED_REMOTES);
        // A newcomer arriving at a full table gets in at once, and is unicast to.
        let newcomer = allowed_addr(100_001);
        let t = millis(20_000);
        assert!(v.decapsulate(newcomer, &datagram_from(42, wide_mac(0xfffe)), t).is_ok());
        assert_eq!(remote_of(&v, wide_mac(0xfffe)), Some(newcomer));
        let s = v.stats();
        assert_eq!(s.remotes_learned, 10_002);
        assert_eq!(s.remotes_evicted, 10_002 - MAX_LEARNED_REMOTES as u64);
        assert_eq!(s.macs_evicted, s.remotes_evicted, "each forged remote took its one MAC along");
        v.check_invariants();
        // The spoofer stops; the real remote keeps talking; aging clears the rest.
        let later = t + Duration::from_secs(300);
        v.decapsulate(real, &datagram_from(42, real_mac), later).unwrap();
        v.run(later);
        assert_eq!(v.remotes().iter().map(|r| r.addr).collect::<Vec<_>>(), vec![R1, R2, real]);
        assert_eq!(remote_of(&v, real_mac), Some(real));
        assert_eq!(v.stats().remotes_expired, MAX_LEARNED_REMOTES as u64 - 1);
        v.check_invariants();
    }

    #[test]
    fn garbage_from_allowed_strangers_creates_nothing() {
        let mut v = learning_vtep(100);
        let t = Instant::from_secs(1);
        let good = datagram_from(42, mac(7));
        let mut bad_flags = good.clone();
        bad_flags[0] = 0x0c;
        let mut reserved = good.clone();
        reserved[7] = 1;
        let cases: [(&[u8], DropReason); 9] = [
            (&[], DropReason::VxlanBadHeader),
            (&good[..7], DropReason::VxlanBadHeader),
            (&bad_flags, DropReason::VxlanBadHeader),
            (&reserved, DropReason::VxlanBadHeader),
            (&datagram_from(43, mac(7)), DropReason::VxlanUnknownVni),
            (&good[..8], DropReason::Runt),
            (&good[..21], DropReason::Runt),
            (&datagram_from(42, MacAddr::ZERO), DropReason::InvalidSource),
            (&datagram_from(42, MacAddr::BROADCAST), DropReason::InvalidSource),
        ];
        for (n, (datagram, reason)) in cases.iter().enumerate() {
            assert_eq!(v.decapsulate(allowed_addr(n as u32), datagram, t), Err(*reason), "case {n}");
        }
        let multicast = datagram_from(42, "01:00:5e:00:00:01".parse().unwrap());
        assert_eq!(v.decapsulate(allowed_addr(99), &multicast, t), Err(DropReason::InvalidSource));
        assert_eq!(v.remotes().len(), 2, "no remote learned from garbage");
        assert_eq!(v.macs(t).count(), 0);
        assert_eq!(v.stats(), VxlanStats::default());
        assert_eq!(v.next_deadline(), None);
        // From a configured remote, garbage is refused the same way and counts nothing.
        assert_eq!(v.decapsulate(R1, &multicast, t), Err(DropReason::InvalidSource));
        assert_eq!(v.remotes()[0].rx_packets, 0);
        v.check_invariants();
    }

    #[test]
    fn learned_remotes_age_out_once_idle_and_configured_or_pinned_ones_stay() {
        let mut v = learning_vtep(100);
        let (a, b, pinned) = (allowed_addr(1), allowed_addr(2), allowed_addr(3));
        v.decapsulate(a, &datagram_from(42, mac(1)), Instant::from_secs(10)).unwrap();
        v.decapsulate(b, &datagram_from(42, mac(2)), Instant::from_secs(20)).unwrap();
        v.decapsulate(pinned, &datagram_from(42, mac(3)), Instant::from_secs(20)).unwrap();
        v.add_static(VlanId::NONE, mac(9), pinned);
        v.decapsulate(R1, &datagram_from(42, mac(4)), Instant::from_secs(30)).unwrap();
        assert_eq!(v.next_deadline(), Some(Instant::from_secs(310)));
        assert_eq!(v.run(Instant::from_secs(309)), 0);
        assert_eq!(v.run(Instant::from_secs(310)), 1);
        assert_eq!(v.remotes().iter().filter(|r| r.addr == a).count(), 0, "a went with its MAC");
        assert_eq!(v.stats().remotes_expired, 1);
        v.run(Instant::from_secs(1000));
        let addrs: Vec<IpAddr> = v.remotes().iter().map(|r| r.addr).collect();
        assert_eq!(addrs, vec![R1, R2, pinned], "configured remotes and one with a static MAC stay");
        assert_eq!(remote_of(&v, mac(9)), Some(pinned));
        assert_eq!(v.next_deadline(), None);
        // Without its static MAC the pinned remote ages from its last datagram.
        assert!(v.remove(VlanId::NONE, mac(9)));
        assert_eq!(v.next_deadline(), Some(Instant::from_secs(320)));
        v.run(Instant::from_secs(1000));
        assert_eq!(v.remotes().len(), 2);
        // A remote only a static entry made goes right after its last static MAC.
        v.add_static(VlanId::NONE, mac(10), allowed_addr(50));
        assert_eq!(v.remotes().len(), 3);
        v.remove(VlanId::NONE, mac(10));
        v.run(Instant::from_secs(1001));
        assert_eq!(v.remotes().len(), 2);
        assert_eq!(v.stats().remotes_expired, 4);
        v.check_invariants();
    }

    #[test]
    fn removing_a_remote_keeps_every_index_pointing_at_the_right_one() {
        let mut v = learning_vtep(100);
        v.max_learned_remotes = 2;
        let (a, b, c) = (allowed_addr(1), allowed_addr(2), allowed_addr(3));
        v.decapsulate(a, &datagram_from(42, mac(1)), Instant::from_secs(1)).unwrap();
        v.decapsulate(b, &datagram_from(42, mac(2)), Instant::from_secs(2)).unwrap();
        assert_eq!(v.unicast_remote(VlanId::NONE, mac(2)), Some(3));
        // c evicts a (least recently heard); b moves into a's place.
        let d = v.decapsulate(c, &datagram_from(42, mac(3)), Instant::from_secs(3)).unwrap();
        assert_eq!(v.remotes()[d.remote].addr, c);
        assert_eq!(remote_of(&v, mac(1)), None, "a's MACs went with it");
        let i = v.unicast_remote(VlanId::NONE, mac(2)).unwrap();
        assert_eq!((i, v.remote_socket(i)), (2, Some(SocketAddr::new(b, 4789))));
        v.count_tx(i, 100);
        assert_eq!(v.remotes()[2].tx_bytes, 100);
        assert_eq!(remote_of(&v, mac(3)), Some(c));
        assert_eq!((v.stats().remotes_evicted, v.stats().macs_evicted), (1, 1));
        // The freed slot is reused and still resolves correctly.
        v.decapsulate(a, &datagram_from(42, mac(1)), Instant::from_secs(4)).unwrap();
        assert_eq!(remote_of(&v, mac(1)), Some(a));
        assert_eq!(remote_of(&v, mac(3)), Some(c));
        assert_eq!(remote_of(&v, mac(2)), None);
        v.check_invariants();
    }

    #[test]
    fn a_remote_flooding_random_macs_leaves_the_others_alone() {
        let mut c = config(VniMap::Single(42));
        c.max_learned = 1000;
        let mut v = Vxlan::new(c);
        for n in 0..10 {
            v.decapsulate(R2, &datagram_from(42, wide_mac(n)), Instant::from_secs(1)).unwrap();
        }
        v.add_static(VlanId::NONE, wide_mac(77), R2);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for n in 0..100_000u64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let random = MacAddr::from_bytes(&(state & 0xfeff_ffff_ffff).to_be_bytes()[2..]);
            let _ = v.decapsulate(R1, &datagram_from(42, random), millis(2000 + n / 100));
        }
        for n in 0..10 {
            assert_eq!(v.unicast_remote(VlanId::NONE, wide_mac(n)), Some(1), "R2 lost MAC {n}");
        }
        assert_eq!(v.unicast_remote(VlanId::NONE, wide_mac(77)), Some(1));
        assert_eq!(v.macs(Instant::from_secs(3)).filter(|m| m.remote == R1).count(), 990);
        assert!(v.stats().macs_evicted > 90_000);
        v.check_invariants();
    }

    #[test]
    fn eviction_takes_the_busiest_remotes_least_recently_seen_mac() {
        let mut c = config(VniMap::Single(42));
        c.max_learned = 6;
        let mut v = Vxlan::new(c);
        for n in 1..=4 {
            v.decapsulate(R1, &datagram_from(42, mac(n)), Instant::from_secs(u64::from(n))).unwrap();
        }
        v.decapsulate(R2, &datagram_from(42, mac(10)), Instant::from_secs(5)).unwrap();
        v.decapsulate(R2, &datagram_from(42, mac(11)), Instant::from_secs(6)).unwrap();
        v.decapsulate(R1, &datagram_from(42, mac(1)), Instant::from_secs(7)).unwrap(); // mac(2) is now R1's oldest
        v.decapsulate(R2, &datagram_from(42, mac(12)), Instant::from_secs(8)).unwrap();
        assert_eq!(remote_of(&v, mac(2)), None, "R1 has the most: its least recently seen MAC goes");
        assert_eq!((remote_of(&v, mac(1)), remote_of(&v, mac(10))), (Some(R1), Some(R2)));
        assert_eq!(v.stats().macs_evicted, 1);
        // A MAC that moves counts against its new remote.
        v.decapsulate(R2, &datagram_from(42, mac(3)), Instant::from_secs(9)).unwrap();
        assert_eq!((remote_of(&v, mac(3)), v.stats().macs_moved), (Some(R2), 1));
        v.check_invariants();
    }

    /// A deterministic random walk over every operation, checking the invariants after each.
    #[test]
    fn invariants_hold_under_random_operations() {
        let mut c = config(VniMap::PerVlan(vec![(100, vlan(10)), (200, vlan(20))]));
        c.allowed = vec![(PREFIX, 15)];
        c.aging = Duration::from_secs(50);
        c.max_learned = 32;
        let mut v = Vxlan::new(c);
        v.max_learned_remotes = 6;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut now = 0u64;
        for _ in 0..30_000 {
            let r = next();
            let source = match (r >> 8) % 16 {
                0 => R1,
                1 => R2,
                2 => STRANGER,
                n => allowed_addr(n as u32),
            };
            let src = match (r >> 12) % 50 {
                0 => MacAddr::ZERO,
                1 => MacAddr::BROADCAST,
                n => wide_mac(n as u32),
            };
            let vni = [100, 200, 300][(r >> 20) as usize % 3];
            let vid = vlan([10, 20][(r >> 24) as usize % 2]);
            match r % 100 {
                0..=69 => {
                    let mut d = datagram_from(vni, src);
                    match (r >> 28) % 10 {
                        0 => d.truncate((r >> 32) as usize % 30),
                        1 => d[0] = (r >> 32) as u8,
                        _ => {}
                    }
                    if let Ok(got) = v.decapsulate(source, &d, Instant::from_secs(now)) {
                        assert_eq!(v.remotes()[got.remote].addr, source);
                    }
                }
                70..=74 => v.add_static(vid, src, source),
                75..=84 => {
                    v.remove(vid, src);
                }
                _ => {
                    now += r >> 60;
                    v.run(Instant::from_secs(now));
                }
            }
            v.check_invariants();
            for m in v.macs(Instant::from_secs(now)) {
                let i = v.unicast_remote(m.vlan, m.mac);
                assert!(m.mac.is_multicast() || i.map(|i| v.remotes()[i].addr) == Some(m.remote));
            }
        }
        let s = v.stats();
        assert!(s.remotes_evicted > 0 && s.remotes_expired > 0, "{s:?}");
        assert!(s.macs_evicted > 0 && s.macs_expired > 0 && s.macs_moved > 0, "{s:?}");
    }

    #[test]
    fn mtu_arithmetic() {
        assert_eq!(inner_room(1500, false), 1464, "a 1450-byte MTU inner frame is 1464 bytes with its header");
        assert_eq!(inner_room(1500, true), 1444);
    }
}
