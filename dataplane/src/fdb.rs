//! The forwarding database: which port each (VLAN, MAC) lives behind, learned from source
//! addresses, aged when idle, bounded with fair eviction.
//!
//! Semantics (after Open vSwitch's `mac-learning`, with the kernel bridge's defaults):
//! - Keys are (VLAN, MAC): the same MAC may live in two VLANs on two ports.
//! - Only valid unicast sources are learned: never multicast, broadcast or all-zero.
//! - A learned entry expires after `aging` without a frame from it. Lookups do not refresh.
//! - Learned entries are bounded by `max_learned`. When the table is full, the port holding
//!   the most learned MACs loses its least recently used one, so one port flooding the table
//!   with forged sources pushes out its own entries, not everybody else's.
//! - Static entries never age, never move, are not evicted and do not count against the bound.
//! - A learned MAC seen on another port moves there at once; moves are counted.
//! - Moves are damped: a MAC that moves more than [`MAC_MOVE_LIMIT`] times within
//!   [`MAC_MOVE_WINDOW`] of its first move is flapping — a loop, or a second sender claiming
//!   the address. It is pinned, for [`MAC_MOVE_HOLD_DOWN`], to the port it held before the
//!   moves began (put back there if it had left), and learning it elsewhere is refused
//!   ([`LearnOutcome::HeldDown`]) without refreshing the entry; frames from the pinned port
//!   refresh it as usual. The pin is reported once ([`LearnOutcome::Pinned`]), is not
//!   extended by refused frames, and ends on its own: learning then resumes, so a host that
//!   really moved during the hold-down is only held off for its length.
//!   Whoever held the MAC before the contest keeps it: a host is protected against a spoofer
//!   that starts later, but a spoofer that spoke first (or alone while the host was silent
//!   for the whole aging time) holds the MAC against the host the same way. The table cannot
//!   tell which sender is genuine; a static entry can.
//!   Thresholds in the spirit of switches' "MAC flap" detection (several moves within about a
//!   second): a migrating VM or a bond failover moves once or twice, a loop hundreds of times
//!   a second. The pin lives in the entry (no side table), so it ages, is evicted and is
//!   flushed with it.
//!
//! Representation: a slab of entries, a keyed hash map from packed key to slab index, and two
//! intrusive doubly linked LRU lists threaded through the slab (one over all learned entries,
//! one per port). Because the event loop passes one `now` per batch and time is monotonic, the
//! lists stay sorted by last-seen time, so aging pops from the global head and eviction pops
//! from the busiest port's head, both in O(1). No allocation happens on the per-frame path once
//! the table has grown to its working size.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use crate::time::Instant;
use crate::wire::MacAddr;
use crate::{PortId, VlanId};

/// Moves a learned MAC may make within [`MAC_MOVE_WINDOW`] of the first; the next one within
/// the window pins it. Three lets a host fail over, fail back and move again.
pub const MAC_MOVE_LIMIT: u8 = 3;

/// How long after its first move a MAC's moves are counted together.
pub const MAC_MOVE_WINDOW: Duration = Duration::from_secs(1);

/// How long a flapping MAC stays pinned: long enough that a loop or a spoofer gains little
/// from each round, short enough that a host that really moved meanwhile is soon reachable.
pub const MAC_MOVE_HOLD_DOWN: Duration = Duration::from_secs(10);

/// [`Entry::moves`] of a pinned entry.
const PINNED: u8 = u8::MAX;

const _: () = assert!(MAC_MOVE_LIMIT < PINNED);
// The window's and hold-down's end are kept as milliseconds after `last_seen`, in two bytes.
const _: () = assert!(MAC_MOVE_HOLD_DOWN.as_millis() + MAC_MOVE_WINDOW.as_millis() < u16::MAX as u128);

/// Table parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbConfig {
    /// Idle time after which a learned entry expires.
    pub aging: Duration,
    /// Bound on learned entries (static entries are not counted). Zero disables learning.
    pub max_learned: usize,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig { aging: Duration::from_secs(300), max_learned: 8192 }
    }
}

/// How an entry came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Learned from a frame's source address; ages and moves.
    Learned,
    /// Added by the operator; never ages or moves.
    Static,
}

/// What learning a source address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnOutcome {
    /// A new entry (possibly after evicting another port's LRU entry).
    Learned,
    /// The entry existed on this port; its age was reset. `share` is set on the first refresh
    /// in each new [`Fdb::share_interval`] (counted from the clock's origin), so the other
    /// workers' replicas, which do not see this traffic, are told at least once every two
    /// intervals that it is still alive, and not much more often.
    Refreshed {
        /// Whether to tell the other workers.
        share: bool,
    },
    /// The entry existed on another port and moved here.
    Moved {
        /// Where it was.
        from: PortId,
    },
    /// A static entry holds this key; nothing changed.
    Static,
    /// The move was one too many within [`MAC_MOVE_WINDOW`]: the MAC is flapping. It is now
    /// pinned to `held_on`, the port it held before the moves began, for
    /// [`MAC_MOVE_HOLD_DOWN`]. Returned once per hold-down: this is the event to report.
    Pinned {
        /// Where the MAC is held (its entry was put back there if it had left).
        held_on: PortId,
        /// The other port claiming it: the learning port, or, when this move was the MAC
        /// coming back to `held_on`, the port it came from.
        refused_from: PortId,
    },
    /// The MAC is pinned to another port after flapping; this source was not learned and did
    /// not refresh the entry.
    HeldDown {
        /// Where the MAC is held.
        held_on: PortId,
    },
    /// The address is not a valid unicast source.
    InvalidSource,
    /// Learning is disabled (`max_learned` is zero).
    Disabled,
}

/// Why an operator's change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdbError {
    /// Static entries must name a unicast, non-zero MAC.
    #[error("{0} is not a unicast address")]
    NotUnicast(MacAddr),
}

/// Lifetime counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FdbStats {
    /// Entries created by learning.
    pub learned: u64,
    /// Learned entries that moved to another port.
    pub moved: u64,
    /// Flapping MACs pinned to a port (once per hold-down).
    pub move_damped: u64,
    /// Learned entries removed by aging.
    pub expired: u64,
    /// Learned entries removed to make room.
    pub evicted: u64,
}

/// One entry, as `fdb show` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryView {
    /// VLAN of the entry.
    pub vlan: VlanId,
    /// The MAC address.
    pub mac: MacAddr,
    /// The port it lives behind.
    pub port: PortId,
    /// Learned or static.
    pub kind: EntryKind,
    /// Time since a frame from it was last seen (learned entries only).
    pub age: Option<Duration>,
}

const NIL: u32 = u32::MAX;
/// Index of the all-entries LRU links in [`Entry::links`].
const GLOBAL: usize = 0;
/// Index of the per-port LRU links in [`Entry::links`].
const PER_PORT: usize = 1;

#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

impl Link {
    const DETACHED: Link = Link { prev: NIL, next: NIL };
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: usize,
}

impl List {
    const EMPTY: List = List { head: NIL, tail: NIL, len: 0 };
}

/// One entry: 40 bytes, as the table is cache-bound when large. The move-damping state takes
/// five of them: its deadline is kept relative to `last_seen`, in two bytes rather than eight,
/// and whether a refresh is shared is worked out from `last_seen` rather than stored.
#[derive(Debug, Clone)]
struct Entry {
    key: u64,
    port: PortId,
    kind: EntryKind,
    last_seen: Instant,
    /// Where the MAC was when the moves being counted began, or where it is pinned.
    home: PortId,
    /// When the move window closes or the hold-down ends, in milliseconds after `last_seen`
    /// (zero once passed).
    damping_ends_after_seen: u16,
    /// Moves counted in the open window (0: none open), or [`PINNED`].
    moves: u8,
    /// Free slots reuse `links[GLOBAL].next` as the free-list link.
    links: [Link; 2],
}

/// Milliseconds since the origin.
fn millis(at: Instant) -> u64 {
    at.as_nanos() / 1_000_000
}

impl Entry {
    fn is_pinned(&self) -> bool {
        self.moves == PINNED
    }

    /// When the move window closes or the hold-down ends, in milliseconds since the origin.
    fn damping_ends(&self) -> u64 {
        millis(self.last_seen) + u64::from(self.damping_ends_after_seen)
    }

    fn set_damping_ends(&mut self, ends_ms: u64) {
        let after_seen = ends_ms.saturating_sub(millis(self.last_seen));
        self.damping_ends_after_seen = u16::try_from(after_seen).unwrap_or(u16::MAX);
    }

    /// Closes a move window, or ends a hold-down, that has run out by `now`.
    fn settle_if_due(&mut self, now: Instant) {
        if self.moves != 0 && millis(now) >= self.damping_ends() {
            self.moves = 0;
        }
    }
}

fn pack_key(vlan: VlanId, mac: MacAddr) -> u64 {
    (u64::from(vlan.get()) << 48) | mac.to_u64()
}

fn unpack_key(key: u64) -> (VlanId, MacAddr) {
    let bytes = key.to_be_bytes();
    let vlan = VlanId::new((key >> 48) as u16 & VlanId::MAX).unwrap_or_default();
    (vlan, MacAddr::from_bytes(&bytes[2..8]))
}

/// The forwarding database.
#[derive(Debug, Clone)]
pub struct Fdb {
    config: FdbConfig,
    index: HashMap<u64, u32, ahash::RandomState>,
    slots: Vec<Entry>,
    free_head: u32,
    lru: List,
    per_port: Vec<List>,
    static_count: usize,
    stats: FdbStats,
}

/// Slots reserved up front, so a table that stays under this size never allocates.
const PREALLOCATED: usize = 65_536;

impl Fdb {
    /// An empty table. The hash is keyed with a per-table random secret, so remote senders
    /// cannot choose addresses that collide.
    pub fn new(config: FdbConfig) -> Fdb {
        let reserve = config.max_learned.min(PREALLOCATED);
        Fdb {
            config,
            index: HashMap::with_capacity_and_hasher(reserve, ahash::RandomState::new()),
            slots: Vec::with_capacity(reserve),
            free_head: NIL,
            lru: List::EMPTY,
            per_port: Vec::new(),
            static_count: 0,
            stats: FdbStats::default(),
        }
    }

    /// The table's parameters.
    pub fn config(&self) -> FdbConfig {
        self.config
    }

    /// How often a refreshed entry is shared with the other workers' replicas: a quarter of the
    /// aging time (at least a second), so a replica's copy never expires while traffic flows.
    pub fn share_interval(&self) -> Duration {
        Duration::from_secs((self.config.aging / 4).as_secs().max(1))
    }

    /// Makes room for ports up to `port` so learning on it never allocates.
    pub fn reserve_port(&mut self, port: PortId) {
        if self.per_port.len() <= port.index() {
            self.per_port.resize(port.index() + 1, List::EMPTY);
        }
    }

    /// Learns that `mac` in `vlan` lives behind `port`, as seen at `now`.
    pub fn learn(&mut self, vlan: VlanId, mac: MacAddr, port: PortId, now: Instant) -> LearnOutcome {
        if !mac.is_valid_source() {
            return LearnOutcome::InvalidSource;
        }
        let key = pack_key(vlan, mac);
        if let Some(&idx) = self.index.get(&key) {
            let entry = &mut self.slots[idx as usize];
            if entry.kind == EntryKind::Static {
                return LearnOutcome::Static;
            }
            entry.settle_if_due(now);
            if entry.port == port {
                let share = self.share_due(idx, now);
                self.touch(idx, now);
                return LearnOutcome::Refreshed { share };
            }
            if entry.is_pinned() {
                return LearnOutcome::HeldDown { held_on: entry.port };
            }
            return self.move_entry(idx, port, now);
        }
        if self.config.max_learned == 0 {
            return LearnOutcome::Disabled;
        }
        if self.lru.len >= self.config.max_learned {
            self.evict_from_busiest_port();
        }
        self.reserve_port(port);
        let idx = self.insert(key, port, EntryKind::Learned, now);
        self.push_back(idx, GLOBAL);
        self.push_back(idx, PER_PORT);
        self.stats.learned += 1;
        LearnOutcome::Learned
    }

    /// Moves learned entry `idx` to `port` at `now`, counting the move; the move one too many
    /// within the window pins the entry to where it was before the moves began.
    fn move_entry(&mut self, idx: u32, port: PortId, now: Instant) -> LearnOutcome {
        let entry = &self.slots[idx as usize];
        let from = entry.port;
        let (home, moves) = if entry.moves == 0 { (from, 0) } else { (entry.home, entry.moves) };
        if moves >= MAC_MOVE_LIMIT {
            // The pin counts as a sighting (the MAC was active within the window); it keeps
            // the lists in last-seen order.
            self.relocate(idx, home);
            self.touch(idx, now);
            let entry = &mut self.slots[idx as usize];
            entry.moves = PINNED;
            entry.set_damping_ends(millis(now + MAC_MOVE_HOLD_DOWN));
            self.stats.move_damped += 1;
            let refused_from = if port == home { from } else { port };
            return LearnOutcome::Pinned { held_on: home, refused_from };
        }
        self.relocate(idx, port);
        self.touch(idx, now);
        let entry = &mut self.slots[idx as usize];
        entry.home = home;
        if moves == 0 {
            entry.set_damping_ends(millis(now + MAC_MOVE_WINDOW));
        }
        entry.moves = moves + 1;
        self.stats.moved += 1;
        LearnOutcome::Moved { from }
    }

    /// Puts learned entry `idx` behind `port` (at the end of its list; touch it next).
    fn relocate(&mut self, idx: u32, port: PortId) {
        if self.slots[idx as usize].port != port {
            self.unlink(idx, PER_PORT);
            self.reserve_port(port);
            self.slots[idx as usize].port = port;
            self.push_back(idx, PER_PORT);
        }
    }

    /// Whether refreshing entry `idx` at `now` starts a new share interval.
    fn share_due(&self, idx: u32, now: Instant) -> bool {
        let interval = self.share_interval().as_nanos();
        let last_seen = self.slots[idx as usize].last_seen;
        u128::from(now.as_nanos()) / interval != u128::from(last_seen.as_nanos()) / interval
    }

    /// The port `mac` in `vlan` lives behind, if known. Does not refresh the entry.
    pub fn lookup(&self, vlan: VlanId, mac: MacAddr) -> Option<PortId> {
        self.index.get(&pack_key(vlan, mac)).map(|&idx| self.slots[idx as usize].port)
    }

    /// The port `mac` in `vlan` lives behind and when a frame from it was last seen (`None`
    /// for a static entry). Does not refresh the entry.
    pub fn lookup_seen(&self, vlan: VlanId, mac: MacAddr) -> Option<(PortId, Option<Instant>)> {
        self.index.get(&pack_key(vlan, mac)).map(|&idx| {
            let e = &self.slots[idx as usize];
            (e.port, (e.kind == EntryKind::Learned).then_some(e.last_seen))
        })
    }

    /// Adds or replaces a static entry. A learned entry with the same key becomes static.
    pub fn add_static(&mut self, vlan: VlanId, mac: MacAddr, port: PortId) -> Result<(), FdbError> {
        if !mac.is_valid_source() {
            return Err(FdbError::NotUnicast(mac));
        }
        let key = pack_key(vlan, mac);
        if let Some(&idx) = self.index.get(&key) {
            if self.slots[idx as usize].kind == EntryKind::Learned {
                self.unlink(idx, GLOBAL);
                self.unlink(idx, PER_PORT);
                self.slots[idx as usize].kind = EntryKind::Static;
                self.slots[idx as usize].moves = 0;
                self.static_count += 1;
            }
            self.slots[idx as usize].port = port;
        } else {
            self.insert(key, port, EntryKind::Static, Instant::ZERO);
            self.static_count += 1;
        }
        Ok(())
    }

    /// Removes the entry for `mac` in `vlan`, learned or static. Returns whether one existed.
    pub fn remove(&mut self, vlan: VlanId, mac: MacAddr) -> bool {
        match self.index.get(&pack_key(vlan, mac)) {
            Some(&idx) => {
                self.remove_slot(idx);
                true
            }
            None => false,
        }
    }

    /// Removes learned entries (of `port` only, if given). Static entries stay. Returns how
    /// many were removed. A flushed port (its link went down, or away) is also no longer a
    /// place a flapping MAC may be pinned back to.
    pub fn flush(&mut self, port: Option<PortId>) -> usize {
        let mut removed = 0;
        loop {
            let head = match port {
                Some(p) => self.per_port.get(p.index()).map_or(NIL, |l| l.head),
                None => self.lru.head,
            };
            if head == NIL {
                break;
            }
            self.remove_slot(head);
            removed += 1;
        }
        if let Some(port) = port {
            self.forget_home(port);
        }
        removed
    }

    /// Ends the move windows of MACs whose home (where damping would pin them) is `port`.
    fn forget_home(&mut self, port: PortId) {
        for &idx in self.index.values() {
            let entry = &mut self.slots[idx as usize];
            if entry.moves != 0 && entry.home == port {
                entry.moves = 0;
            }
        }
    }

    /// Removes every entry on `port`, static ones included (the port is going away), and
    /// forgets it as the place MACs moving elsewhere would be pinned back to.
    pub fn remove_port(&mut self, port: PortId) -> usize {
        let mut removed = self.flush(Some(port));
        let statics: Vec<u32> = self
            .index
            .values()
            .copied()
            .filter(|&idx| {
                let e = &self.slots[idx as usize];
                e.kind == EntryKind::Static && e.port == port
            })
            .collect();
        for idx in statics {
            self.remove_slot(idx);
            removed += 1;
        }
        removed
    }

    /// Expires learned entries idle for `aging` or longer at `now`. Returns how many.
    pub fn run(&mut self, now: Instant) -> usize {
        let mut expired = 0;
        while self.lru.head != NIL {
            let head = self.lru.head;
            if self.slots[head as usize].last_seen + self.config.aging > now {
                break;
            }
            self.remove_slot(head);
            expired += 1;
        }
        self.stats.expired += expired as u64;
        expired
    }

    /// When [`Fdb::run`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        (self.lru.head != NIL).then(|| self.slots[self.lru.head as usize].last_seen + self.config.aging)
    }

    /// Every entry, with ages as of `now`, in no particular order.
    pub fn entries(&self, now: Instant) -> impl Iterator<Item = EntryView> + '_ {
        self.index.values().map(move |&idx| self.view(idx as usize, now))
    }

    /// The entries in slots `from..from + count`, with ages as of `now`, and where the next
    /// slots start (`None` past the last): a large table listed in bounded steps, with changes
    /// in between. An entry keeps its slot while it lives, so one that stays is listed once;
    /// one removed and added back in between may be listed twice, or missed.
    pub fn entries_in_slots(
        &self,
        from: usize,
        count: usize,
        now: Instant,
    ) -> (impl Iterator<Item = EntryView> + '_, Option<usize>) {
        let end = from.saturating_add(count).min(self.slots.len());
        let next = (end < self.slots.len()).then_some(end);
        let live = (from.min(end)..end)
            .filter(|&idx| self.index.get(&self.slots[idx].key) == Some(&(idx as u32)))
            .map(move |idx| self.view(idx, now));
        (live, next)
    }

    fn view(&self, idx: usize, now: Instant) -> EntryView {
        let e = &self.slots[idx];
        let (vlan, mac) = unpack_key(e.key);
        let age = (e.kind == EntryKind::Learned).then(|| now.saturating_duration_since(e.last_seen));
        EntryView { vlan, mac, port: e.port, kind: e.kind, age }
    }

    /// Entries in the table, learned and static.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// The table holds nothing.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Learned entries in the table.
    pub fn learned_len(&self) -> usize {
        self.lru.len
    }

    /// Learned entries behind `port`.
    pub fn port_learned_len(&self, port: PortId) -> usize {
        self.per_port.get(port.index()).map_or(0, |l| l.len)
    }

    /// Lifetime counters.
    pub fn stats(&self) -> FdbStats {
        self.stats
    }

    fn evict_from_busiest_port(&mut self) {
        let busiest = self
            .per_port
            .iter()
            .enumerate()
            .filter(|(_, l)| l.len > 0)
            .max_by_key(|&(i, l)| (l.len, std::cmp::Reverse(i)))
            .map(|(_, l)| l.head);
        if let Some(victim) = busiest {
            self.remove_slot(victim);
            self.stats.evicted += 1;
        }
    }

    fn touch(&mut self, idx: u32, now: Instant) {
        let entry = &mut self.slots[idx as usize];
        if entry.last_seen == now {
            return;
        }
        let damping_ends = entry.damping_ends();
        entry.last_seen = now;
        entry.set_damping_ends(damping_ends);
        for which in [GLOBAL, PER_PORT] {
            if self.list(which, idx).tail != idx {
                self.unlink(idx, which);
                self.push_back(idx, which);
            }
        }
    }

    fn insert(&mut self, key: u64, port: PortId, kind: EntryKind, now: Instant) -> u32 {
        let entry = Entry {
            key,
            port,
            kind,
            last_seen: now,
            home: port,
            damping_ends_after_seen: 0,
            moves: 0,
            links: [Link::DETACHED; 2],
        };
        let idx = if self.free_head != NIL {
            let idx = self.free_head;
            self.free_head = self.slots[idx as usize].links[GLOBAL].next;
            self.slots[idx as usize] = entry;
            idx
        } else {
            self.slots.push(entry);
            (self.slots.len() - 1) as u32
        };
        self.index.insert(key, idx);
        idx
    }

    fn remove_slot(&mut self, idx: u32) {
        let entry = &self.slots[idx as usize];
        let key = entry.key;
        match entry.kind {
            EntryKind::Learned => {
                self.unlink(idx, GLOBAL);
                self.unlink(idx, PER_PORT);
            }
            EntryKind::Static => self.static_count -= 1,
        }
        self.index.remove(&key);
        self.slots[idx as usize].links[GLOBAL] = Link { prev: NIL, next: self.free_head };
        self.free_head = idx;
    }

    fn list(&self, which: usize, idx: u32) -> &List {
        match which {
            GLOBAL => &self.lru,
            _ => &self.per_port[self.slots[idx as usize].port.index()],
        }
    }

    fn list_mut(&mut self, which: usize, idx: u32) -> &mut List {
        match which {
            GLOBAL => &mut self.lru,
            _ => {
                let port = self.slots[idx as usize].port.index();
                &mut self.per_port[port]
            }
        }
    }

    fn unlink(&mut self, idx: u32, which: usize) {
        let Link { prev, next } = self.slots[idx as usize].links[which];
        if prev != NIL {
            self.slots[prev as usize].links[which].next = next;
        }
        if next != NIL {
            self.slots[next as usize].links[which].prev = prev;
        }
        let list = self.list_mut(which, idx);
        if prev == NIL {
            list.head = next;
        }
        if next == NIL {
            list.tail = prev;
        }
        list.len -= 1;
        self.slots[idx as usize].links[which] = Link::DETACHED;
    }

    fn push_back(&mut self, idx: u32, which: usize) {
        let list = self.list_mut(which, idx);
        let tail = list.tail;
        list.tail = idx;
        if tail == NIL {
            list.head = idx;
        }
        list.len += 1;
        if tail != NIL {
            self.slots[tail as usize].links[which].next = idx;
        }
        self.slots[idx as usize].links[which] = Link { prev: tail, next: NIL };
    }

    /// Checks every structural invariant; for tests.
    #[cfg(test)]
    fn check_invariants(&self) {
        assert!(self.lru.len <= self.config.max_learned);
        assert_eq!(self.index.len(), self.lru.len + self.static_count);
        let walk = |which: usize, list: &List| {
            let (mut n, mut prev, mut cur) = (0, NIL, list.head);
            let mut last_seen = Instant::ZERO;
            while cur != NIL {
                let e = &self.slots[cur as usize];
                assert_eq!(e.kind, EntryKind::Learned);
                assert_eq!(e.links[which].prev, prev);
                assert!(e.last_seen >= last_seen, "list out of LRU order");
                last_seen = e.last_seen;
                assert_eq!(self.index.get(&e.key), Some(&cur));
                n += 1;
                prev = cur;
                cur = e.links[which].next;
            }
            assert_eq!(list.tail, prev);
            assert_eq!(list.len, n);
        };
        walk(GLOBAL, &self.lru);
        let longest = (MAC_MOVE_WINDOW + MAC_MOVE_HOLD_DOWN).as_millis();
        for &idx in self.index.values() {
            let e = &self.slots[idx as usize];
            assert!(e.moves <= MAC_MOVE_LIMIT || e.is_pinned(), "{} moves", e.moves);
            assert!(u128::from(e.damping_ends_after_seen) <= longest);
            if e.kind == EntryKind::Static {
                assert_eq!(e.moves, 0, "a static entry is never damped");
            }
            if e.is_pinned() {
                assert_eq!(e.port, e.home, "a pinned entry sits on its home port");
            }
        }
        let mut sum = 0;
        for (port, list) in self.per_port.iter().enumerate() {
            walk(PER_PORT, list);
            let mut cur = list.head;
            while cur != NIL {
                assert_eq!(self.slots[cur as usize].port.index(), port);
                cur = self.slots[cur as usize].links[PER_PORT].next;
            }
            sum += list.len;
        }
        assert_eq!(sum, self.lru.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V0: VlanId = VlanId::NONE;
    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);
    const P3: PortId = PortId(3);

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn an_entry_stays_at_40_bytes() {
        assert!(std::mem::size_of::<Entry>() <= 40, "{} bytes", std::mem::size_of::<Entry>());
    }

    fn secs(s: u64) -> Instant {
        Instant::from_secs(s)
    }

    fn fdb(aging_secs: u64, max: usize) -> Fdb {
        Fdb::new(FdbConfig { aging: Duration::from_secs(aging_secs), max_learned: max })
    }

    #[test]
    fn learns_and_looks_up_sources() {
        let mut t = fdb(300, 100);
        assert_eq!(t.learn(V0, mac(1), P1, secs(0)), LearnOutcome::Learned);
        assert_eq!(t.learn(V0, mac(1), P1, secs(1)), LearnOutcome::Refreshed { share: false });
        assert_eq!(t.lookup(V0, mac(1)), Some(P1));
        assert_eq!(t.lookup(V0, mac(2)), None);
        assert_eq!(t.stats().learned, 1);
        t.check_invariants();
    }

    #[test]
    fn never_learns_group_or_zero_sources() {
        let mut t = fdb(300, 100);
        for src in [MacAddr::BROADCAST, "01:00:5e:00:00:01".parse().unwrap(), MacAddr::ZERO] {
            assert_eq!(t.learn(V0, src, P1, secs(0)), LearnOutcome::InvalidSource);
        }
        assert!(t.is_empty());
    }

    #[test]
    fn same_mac_lives_in_two_vlans() {
        let mut t = fdb(300, 100);
        let (v10, v20) = (VlanId::new(10).unwrap(), VlanId::new(20).unwrap());
        t.learn(v10, mac(1), P1, secs(0));
        t.learn(v20, mac(1), P2, secs(0));
        assert_eq!(t.lookup(v10, mac(1)), Some(P1));
        assert_eq!(t.lookup(v20, mac(1)), Some(P2));
        assert_eq!(t.stats().moved, 0);
        let mut vlans: Vec<_> = t.entries(secs(0)).map(|e| (e.vlan.get(), e.mac, e.port)).collect();
        vlans.sort();
        assert_eq!(vlans, vec![(10, mac(1), P1), (20, mac(1), P2)]);
    }

    #[test]
    fn idle_entries_age_out_and_refreshed_ones_do_not() {
        let mut t = fdb(300, 100);
        t.learn(V0, mac(1), P1, secs(0));
        t.learn(V0, mac(2), P2, secs(10));
        assert_eq!(t.next_deadline(), Some(secs(300)));
        t.learn(V0, mac(1), P1, secs(100)); // refresh: now expires at 400
        assert_eq!(t.next_deadline(), Some(secs(310)));
        assert_eq!(t.run(secs(309)), 0);
        assert_eq!(t.run(secs(310)), 1);
        assert_eq!(t.lookup(V0, mac(2)), None);
        assert_eq!(t.lookup(V0, mac(1)), Some(P1));
        assert_eq!(t.next_deadline(), Some(secs(400)));
        assert_eq!(t.run(secs(400)), 1);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
        assert_eq!(t.stats().expired, 2);
        t.check_invariants();
    }

    #[test]
    fn lookups_do_not_refresh() {
        let mut t = fdb(10, 100);
        t.learn(V0, mac(1), P1, secs(0));
        assert_eq!(t.lookup(V0, mac(1)), Some(P1));
        assert_eq!(t.run(secs(10)), 1);
    }

    #[test]
    fn moves_are_counted_and_follow_the_source() {
        let mut t = fdb(300, 100);
        t.learn(V0, mac(1), P1, secs(0));
        assert_eq!(t.learn(V0, mac(1), P2, secs(1)), LearnOutcome::Moved { from: P1 });
        assert_eq!(t.lookup(V0, mac(1)), Some(P2));
        assert_eq!(t.port_learned_len(P1), 0);
        assert_eq!(t.port_learned_len(P2), 1);
        assert_eq!(t.stats().moved, 1);
        t.check_invariants();
    }

    #[test]
    fn static_entries_never_age_move_or_count() {
        let mut t = fdb(10, 1);
        t.add_static(V0, mac(9), P1).unwrap();
        assert_eq!(t.learn(V0, mac(9), P2, secs(0)), LearnOutcome::Static);
        assert_eq!(t.lookup(V0, mac(9)), Some(P1));
        t.learn(V0, mac(1), P2, secs(0)); // fits: statics do not count against the bound
        assert_eq!(t.learned_len(), 1);
        assert_eq!(t.run(secs(1_000_000)), 1);
        assert_eq!(t.lookup(V0, mac(9)), Some(P1));
        let view = t.entries(secs(5)).next().unwrap();
        assert_eq!((view.kind, view.age), (EntryKind::Static, None));
        assert_eq!(t.flush(None), 0);
        assert!(t.remove(V0, mac(9)));
        assert!(!t.remove(V0, mac(9)));
        t.check_invariants();
    }

    #[test]
    fn static_entries_must_be_unicast() {
        let mut t = fdb(10, 1);
        assert!(t.add_static(V0, MacAddr::BROADCAST, P1).is_err());
        assert!(t.add_static(V0, MacAddr::ZERO, P1).is_err());
    }

    #[test]
    fn a_learned_entry_can_be_pinned_static() {
        let mut t = fdb(10, 10);
        t.learn(V0, mac(1), P1, secs(0));
        t.add_static(V0, mac(1), P2).unwrap();
        assert_eq!(t.learned_len(), 0);
        assert_eq!(t.lookup(V0, mac(1)), Some(P2));
        assert_eq!(t.run(secs(100)), 0);
        t.check_invariants();
    }

    #[test]
    fn eviction_takes_the_busiest_ports_least_recently_used_entry() {
        let mut t = fdb(300, 10);
        for n in 0..8 {
            t.learn(V0, mac(n), P1, secs(u64::from(n)));
        }
        t.learn(V0, mac(100), P2, secs(10));
        t.learn(V0, mac(101), P2, secs(11));
        t.learn(V0, mac(0), P1, secs(12)); // refresh P1's oldest: mac(1) is now its LRU
        assert_eq!(t.learn(V0, mac(200), P3, secs(13)), LearnOutcome::Learned);
        assert_eq!(t.learned_len(), 10);
        assert_eq!(t.lookup(V0, mac(1)), None, "P1's LRU entry should have gone");
        assert_eq!(t.lookup(V0, mac(0)), Some(P1));
        assert_eq!(t.lookup(V0, mac(100)), Some(P2));
        assert_eq!(t.stats().evicted, 1);
        t.check_invariants();
    }

    #[test]
    fn a_port_flooding_the_table_only_evicts_itself() {
        let mut t = fdb(300, 16);
        for n in 0..4 {
            t.learn(V0, mac(n), P1, secs(0));
        }
        for n in 1000..2000 {
            t.learn(V0, mac(n), P2, secs(1));
        }
        for n in 0..4 {
            assert_eq!(t.lookup(V0, mac(n)), Some(P1), "victim port lost mac {n}");
        }
        assert_eq!(t.port_learned_len(P2), 12);
        assert_eq!(t.stats().evicted, 1000 - 12);
        t.check_invariants();
    }

    #[test]
    fn zero_bound_disables_learning() {
        let mut t = fdb(300, 0);
        assert_eq!(t.learn(V0, mac(1), P1, secs(0)), LearnOutcome::Disabled);
        assert!(t.is_empty());
    }

    #[test]
    fn flush_by_port_and_remove_port() {
        let mut t = fdb(300, 100);
        t.learn(V0, mac(1), P1, secs(0));
        t.learn(V0, mac(2), P1, secs(0));
        t.learn(V0, mac(3), P2, secs(0));
        t.add_static(V0, mac(4), P1).unwrap();
        assert_eq!(t.flush(Some(P1)), 2);
        assert_eq!(t.lookup(V0, mac(3)), Some(P2));
        assert_eq!(t.lookup(V0, mac(4)), Some(P1));
        assert_eq!(t.remove_port(P1), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.flush(None), 1);
        assert!(t.is_empty());
        t.check_invariants();
    }

    #[test]
    fn ages_are_reported_from_now() {
        let mut t = fdb(300, 100);
        t.learn(V0, mac(1), P1, secs(5));
        let view = t.entries(secs(12)).next().unwrap();
        assert_eq!(view.age, Some(Duration::from_secs(7)));
        assert_eq!((view.vlan, view.mac, view.port, view.kind), (V0, mac(1), P1, EntryKind::Learned));
    }

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    const HOLD_MS: u64 = MAC_MOVE_HOLD_DOWN.as_millis() as u64;

    /// Host on P1 since 0; from 1 s, claims alternate P2, P1, P2 a millisecond apart: three
    /// moves, the most a window allows. Returns the time of the last.
    fn three_quick_moves(t: &mut Fdb) -> u64 {
        t.learn(V0, mac(1), P1, secs(0));
        assert_eq!(t.learn(V0, mac(1), P2, ms(1000)), LearnOutcome::Moved { from: P1 });
        assert_eq!(t.learn(V0, mac(1), P1, ms(1001)), LearnOutcome::Moved { from: P2 });
        assert_eq!(t.learn(V0, mac(1), P2, ms(1002)), LearnOutcome::Moved { from: P1 });
        1002
    }

    #[test]
    fn a_mac_that_moves_now_and_then_moves_at_once() {
        let mut t = fdb(300, 100);
        t.learn(V0, mac(1), P1, secs(0));
        assert_eq!(t.learn(V0, mac(1), P2, secs(60)), LearnOutcome::Moved { from: P1 }, "a VM migrates");
        assert_eq!(t.learn(V0, mac(1), P2, secs(61)), LearnOutcome::Refreshed { share: false });
        assert_eq!(t.learn(V0, mac(1), P3, secs(120)), LearnOutcome::Moved { from: P2 }, "and again");
        // Moves every 600 ms never put more than two in one window.
        for n in 0..100 {
            let port = [P1, P2][n % 2];
            assert!(matches!(t.learn(V0, mac(1), port, ms(200_000 + 600 * n as u64)), LearnOutcome::Moved { .. }));
        }
        assert_eq!(t.stats().move_damped, 0);
        t.check_invariants();
    }

    #[test]
    fn up_to_the_limit_moves_within_a_window_all_move() {
        let mut t = fdb(300, 100);
        three_quick_moves(&mut t);
        assert_eq!(t.lookup(V0, mac(1)), Some(P2));
        assert_eq!((t.stats().moved, t.stats().move_damped), (3, 0));
    }

    #[test]
    fn a_flapping_mac_is_pinned_where_it_was_and_reported_once() {
        let mut t = fdb(300, 100);
        let last = three_quick_moves(&mut t);
        // The host's frame is the move one too many: the MAC stays home, and the event names
        // the port it came back from.
        assert_eq!(t.learn(V0, mac(1), P1, ms(last + 1)), LearnOutcome::Pinned { held_on: P1, refused_from: P2 });
        assert_eq!(t.lookup(V0, mac(1)), Some(P1));
        for n in 2..5_000 {
            assert_eq!(t.learn(V0, mac(1), P2, ms(last + n)), LearnOutcome::HeldDown { held_on: P1 });
            assert_eq!(t.lookup(V0, mac(1)), Some(P1), "the spoofer's port got the MAC while pinned");
        }
        assert_eq!(t.learn(V0, mac(1), P1, ms(last + 5_000)), LearnOutcome::Refreshed { share: false });
        assert_eq!(t.learn(V0, mac(1), P3, ms(last + 5_001)), LearnOutcome::HeldDown { held_on: P1 });
        assert_eq!((t.stats().moved, t.stats().move_damped), (3, 1));
        t.check_invariants();
    }

    #[test]
    fn the_pin_puts_a_mac_that_left_back_where_it_was() {
        let mut t = fdb(300, 100);
        let last = three_quick_moves(&mut t);
        assert_eq!(t.lookup(V0, mac(1)), Some(P2));
        assert_eq!(t.learn(V0, mac(1), P3, ms(last + 1)), LearnOutcome::Pinned { held_on: P1, refused_from: P3 });
        assert_eq!(t.lookup(V0, mac(1)), Some(P1));
        assert_eq!((t.port_learned_len(P1), t.port_learned_len(P2), t.port_learned_len(P3)), (1, 0, 0));
        t.check_invariants();
    }

    #[test]
    fn a_spoofer_neither_takes_nor_keeps_alive_a_pinned_mac() {
        let mut t = fdb(30, 100);
        let last = three_quick_moves(&mut t);
        assert!(matches!(t.learn(V0, mac(1), P1, ms(last + 1)), LearnOutcome::Pinned { .. }));
        // The host refreshes its entry now and then; the spoofer sends every millisecond.
        for n in 2..HOLD_MS {
            let now = ms(last + n);
            if n % 1000 == 0 {
                assert!(matches!(t.learn(V0, mac(1), P1, now), LearnOutcome::Refreshed { .. }));
            } else {
                assert_eq!(t.learn(V0, mac(1), P2, now), LearnOutcome::HeldDown { held_on: P1 });
            }
        }
        let host_last_spoke = ms(last + 1000 * ((HOLD_MS - 1) / 1000));
        assert_eq!(t.lookup_seen(V0, mac(1)), Some((P1, Some(host_last_spoke))), "the spoofer refreshed the entry");
        t.check_invariants();
    }

    #[test]
    fn learning_resumes_after_the_hold_down() {
        let mut t = fdb(300, 100);
        let last = three_quick_moves(&mut t);
        let pinned_at = last + 1;
        assert!(matches!(t.learn(V0, mac(1), P1, ms(pinned_at)), LearnOutcome::Pinned { .. }));
        assert_eq!(t.learn(V0, mac(1), P2, ms(pinned_at + HOLD_MS - 1)), LearnOutcome::HeldDown { held_on: P1 });
        assert_eq!(t.learn(V0, mac(1), P2, ms(pinned_at + HOLD_MS)), LearnOutcome::Moved { from: P1 });
        assert_eq!(t.lookup(V0, mac(1)), Some(P2));
        // A contest that goes on is pinned again, to the same home, and reported again.
        let again = pinned_at + HOLD_MS;
        t.learn(V0, mac(1), P1, ms(again + 1));
        t.learn(V0, mac(1), P2, ms(again + 2));
        assert_eq!(t.learn(V0, mac(1), P1, ms(again + 3)), LearnOutcome::Pinned { held_on: P1, refused_from: P2 });
        assert_eq!(t.stats().move_damped, 2);
        t.check_invariants();
    }

    #[test]
    fn the_hold_down_does_not_drift_however_often_the_host_refreshes() {
        let mut t = fdb(300, 100);
        let last = three_quick_moves(&mut t);
        let pinned_at = ms(last + 1);
        assert!(matches!(t.learn(V0, mac(1), P1, pinned_at), LearnOutcome::Pinned { .. }));
        // Refreshes 300 µs apart re-base the deadline, kept relative to the last sighting.
        let mut now = pinned_at;
        let ends = pinned_at + MAC_MOVE_HOLD_DOWN;
        while now + Duration::from_micros(300) < ends {
            now = now + Duration::from_micros(300);
            t.learn(V0, mac(1), P1, now);
        }
        assert_eq!(t.learn(V0, mac(1), P2, ms(last + HOLD_MS)), LearnOutcome::HeldDown { held_on: P1 });
        assert_eq!(t.learn(V0, mac(1), P2, ends), LearnOutcome::Moved { from: P1 });
    }

    #[test]
    fn whoever_held_the_mac_before_the_contest_keeps_it() {
        // The spoofer speaks first: the table cannot tell, and holds the MAC for it.
        let mut t = fdb(300, 100);
        t.learn(V0, mac(1), P2, secs(0));
        t.learn(V0, mac(1), P1, ms(1000));
        t.learn(V0, mac(1), P2, ms(1001));
        t.learn(V0, mac(1), P1, ms(1002));
        assert_eq!(t.learn(V0, mac(1), P2, ms(1003)), LearnOutcome::Pinned { held_on: P2, refused_from: P1 });
        assert_eq!(t.learn(V0, mac(1), P1, ms(1004)), LearnOutcome::HeldDown { held_on: P2 });
        // A static entry is how the operator says which is genuine.
        t.add_static(V0, mac(1), P1).unwrap();
        assert_eq!(t.learn(V0, mac(1), P2, ms(1005)), LearnOutcome::Static);
        assert_eq!(t.lookup(V0, mac(1)), Some(P1));
        t.check_invariants();
    }

    #[test]
    fn a_removed_port_is_no_longer_where_a_flapping_mac_goes_back_to() {
        for flush_only in [false, true] {
            let mut t = fdb(300, 100);
            t.learn(V0, mac(1), P1, secs(0));
            t.learn(V0, mac(1), P2, ms(1000));
            t.learn(V0, mac(1), P3, ms(1001));
            // A port whose link goes down is flushed, not removed: it is no home either.
            if flush_only {
                t.flush(Some(P1));
            } else {
                t.remove_port(P1);
            }
            t.learn(V0, mac(1), P2, ms(1002));
            t.learn(V0, mac(1), P3, ms(1003));
            assert_eq!(t.learn(V0, mac(1), P2, ms(1004)), LearnOutcome::Moved { from: P3 }, "counting starts afresh");
            t.check_invariants();
        }
    }

    #[test]
    fn a_removed_port_is_no_longer_where_a_flapping_mac_goes_back_to_and_pins_afresh() {
        let mut t = fdb(300, 100);
        t.learn(V0, mac(1), P1, secs(0));
        t.learn(V0, mac(1), P2, ms(1000));
        t.learn(V0, mac(1), P3, ms(1001));
        t.remove_port(P1);
        t.learn(V0, mac(1), P2, ms(1002));
        t.learn(V0, mac(1), P3, ms(1003));
        assert_eq!(t.learn(V0, mac(1), P2, ms(1004)), LearnOutcome::Moved { from: P3 }, "counting starts afresh");
        assert_eq!(t.learn(V0, mac(1), P3, ms(1005)), LearnOutcome::Pinned { held_on: P3, refused_from: P2 });
        t.check_invariants();
    }

    #[test]
    fn flapping_is_per_vlan() {
        let mut t = fdb(300, 100);
        let v10 = VlanId::new(10).unwrap();
        let last = three_quick_moves(&mut t);
        t.learn(v10, mac(1), P3, ms(last));
        assert!(matches!(t.learn(V0, mac(1), P1, ms(last + 1)), LearnOutcome::Pinned { .. }));
        assert_eq!(t.learn(v10, mac(1), P2, ms(last + 2)), LearnOutcome::Moved { from: P3 });
    }

    /// A deterministic random walk over every operation, checking the invariants after each,
    /// with a few MACs claimed from several ports milliseconds apart so that they flap.
    #[test]
    fn invariants_hold_under_random_operations() {
        let mut t = fdb(50, 64);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut now_ms = 0u64;
        // Each reported pin's port and end, by key: reported once per hold-down, and no other
        // port gets the MAC before it ends.
        let mut pins: HashMap<(VlanId, MacAddr), (PortId, u64)> = HashMap::new();
        let (mut pinned, mut held_down) = (0u64, 0u64);
        for _ in 0..20_000 {
            let r = next();
            let mut m = mac((r >> 8) as u32 % 200);
            let mut p = PortId((r >> 40) as u16 % 5);
            let mut v = VlanId::new((r >> 50) as u16 % 3).unwrap();
            match r % 100 {
                0..=79 => {
                    if r % 100 >= 55 {
                        (v, m, p) = (V0, mac((r >> 8) as u32 % 2), PortId((r >> 40) as u16 % 3));
                        now_ms += (r >> 20) % 40;
                    }
                    let before = t.lookup(v, m);
                    match t.learn(v, m, p, ms(now_ms)) {
                        LearnOutcome::Pinned { held_on, refused_from } => {
                            pinned += 1;
                            assert_ne!(held_on, refused_from);
                            assert!(p == held_on || p == refused_from);
                            if let Some(&(_, ends)) = pins.get(&(v, m)) {
                                assert!(now_ms >= ends, "pinned twice within one hold-down");
                            }
                            pins.insert((v, m), (held_on, now_ms + HOLD_MS));
                        }
                        LearnOutcome::HeldDown { held_on } => {
                            held_down += 1;
                            assert_eq!(before, Some(held_on));
                            assert_ne!(held_on, p);
                        }
                        _ => {}
                    }
                    if let Some(&(on, ends)) = pins.get(&(v, m)) {
                        if now_ms < ends {
                            assert_eq!(t.lookup(v, m), Some(on), "a pinned MAC left its port");
                        }
                    }
                }
                80..=84 => {
                    let _ = t.add_static(v, m, p);
                }
                85..=89 => {
                    t.remove(v, m);
                }
                90 => {
                    t.flush(Some(p));
                }
                91 => {
                    t.remove_port(p);
                }
                _ => {
                    now_ms += (r >> 60) * 1000;
                    t.run(ms(now_ms));
                }
            }
            // A pin goes with its entry (removed, expired, evicted or made static).
            pins.retain(|&(v, m), _| matches!(t.lookup_seen(v, m), Some((_, Some(_)))));
            t.check_invariants();
            assert!(t.learned_len() <= 64);
        }
        let stats = t.stats();
        assert!(stats.evicted > 0 && stats.expired > 0 && stats.moved > 0);
        assert_eq!(stats.move_damped, pinned);
        assert!(pinned > 50 && held_down > 100, "{pinned} pins, {held_down} held down");
    }
}
