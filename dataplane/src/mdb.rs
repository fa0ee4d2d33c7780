//! The multicast database of IGMP/MLD snooping, as plain data: which ports listen to which
//! group in which VLAN, which ports lead to multicast routers, and when each of those expires.
//! Time is passed in; nothing here reads a clock or a socket.
//!
//! - A report (IGMPv1/v2/v3, MLDv1/v2) makes its port a member of the group in its VLAN until
//!   [`McastConfig::aging`] passes without another; a v3/v2 record is a join or a leave as the
//!   Linux bridge takes them without source filtering (an INCLUDE of no source leaves).
//! - A leave does not cut the port off at once, another host behind it may still listen: the
//!   membership then expires after [`LAST_MEMBER_TIME`] unless a report renews it (the kernel
//!   bridge's last-member-count × last-member-interval).
//! - A query makes its port a router port for [`ROUTER_TIMEOUT`]; `mrouter = true` ports are
//!   router ports for good. Router ports get every snooped group's traffic.
//! - The table is bounded ([`McastConfig::max_groups`]): a join for a new group when it is full
//!   is refused and counted ([`Mdb::refused`]), and that group's traffic floods as an unknown
//!   group does; the entries in place age out, so no sender can fill it for good.

use std::collections::HashMap;
use std::time::Duration;

use crate::time::Instant;
use crate::wire::igmp::{GroupAddr, Message};
use crate::{PortId, VlanId};

/// How long after a leave a membership lasts unless it is reported again (the kernel's
/// default last-member count 2 × last-member interval 1 s).
pub const LAST_MEMBER_TIME: Duration = Duration::from_secs(2);

/// How long a port stays a router port after a query (the kernel's multicast querier
/// interval, 255 s).
pub const ROUTER_TIMEOUT: Duration = Duration::from_secs(255);

/// How often the querier sends general queries (RFC 3376's query interval, 125 s).
pub const QUERY_INTERVAL: Duration = Duration::from_secs(125);

/// The startup query interval: the querier's first queries come this far apart (a quarter of
/// the query interval, RFC 3376 8.6), [`STARTUP_QUERIES`] of them.
pub const STARTUP_QUERY_INTERVAL: Duration = Duration::from_secs(31);
/// How many queries are sent at the startup interval.
pub const STARTUP_QUERIES: u32 = 2;

/// How long after the bridge's ports last changed the querier sends its first query: the new
/// ports' interfaces come up meanwhile.
pub const QUERY_SETTLE: Duration = Duration::from_secs(2);

/// When the querier sends general queries: [`QUERY_SETTLE`] after a port is added (or at
/// start), then [`STARTUP_QUERIES`] more [`STARTUP_QUERY_INTERVAL`] apart, then every
/// [`QUERY_INTERVAL`].
#[derive(Debug, Default, Clone)]
pub struct QuerySchedule {
    next: Option<Instant>,
    startup_left: u32,
    ports: usize,
}

impl QuerySchedule {
    /// Whether queries are due at `now`, the bridge having `ports` ports; if so, the next ones
    /// are scheduled.
    pub fn due(&mut self, now: Instant, ports: usize) -> bool {
        if ports > self.ports {
            self.next = Some(now + QUERY_SETTLE);
            self.startup_left = STARTUP_QUERIES;
        }
        self.ports = ports;
        match self.next {
            Some(next) if next <= now => {
                let gap = if self.startup_left > 0 {
                    self.startup_left -= 1;
                    STARTUP_QUERY_INTERVAL
                } else {
                    QUERY_INTERVAL
                };
                self.next = Some(now + gap);
                true
            }
            _ => false,
        }
    }

    /// When queries are next due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next
    }
}

/// Snooping settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McastConfig {
    /// Snoop IGMP/MLD and restrict group traffic to members and router ports. Off: every
    /// multicast frame floods.
    pub snooping: bool,
    /// Send general queries (so hosts keep reporting where there is no multicast router).
    pub querier: bool,
    /// A membership not reported again for this long expires (the kernel's membership
    /// interval, 260 s).
    pub aging: Duration,
    /// Traffic to a group nobody reported floods (true) or goes to router ports only.
    pub flood_unknown: bool,
    /// Bound on (VLAN, group) entries.
    pub max_groups: usize,
}

/// The most (VLAN, group) entries by default.
pub const DEFAULT_MAX_GROUPS: usize = 4096;

impl Default for McastConfig {
    fn default() -> Self {
        McastConfig {
            snooping: false,
            querier: false,
            aging: Duration::from_secs(260),
            flood_unknown: true,
            max_groups: DEFAULT_MAX_GROUPS,
        }
    }
}

/// A change one worker tells the others (through [`crate::fdb_sync`]), so every worker's
/// table says the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdbUpdate {
    /// A message snooped on `port` in `vlan`.
    Snooped {
        /// The VLAN.
        vlan: VlanId,
        /// Where it arrived.
        port: PortId,
        /// What it said.
        message: Message,
    },
    /// The operator made `port` a router port for good (or not).
    StaticRouter {
        /// The port.
        port: PortId,
        /// Whether it is one.
        on: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    port: PortId,
    reported: Instant,
    expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Router {
    port: PortId,
    /// `None`: configured (`mrouter = true`), never expires.
    expires: Option<Instant>,
}

/// One row of `vswitchctl mdb show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdbEntry {
    /// The VLAN (0 without VLANs).
    pub vlan: u16,
    /// The group.
    pub group: String,
    /// The member port.
    pub port: PortId,
    /// Seconds since its last report.
    pub age_secs: u64,
    /// Seconds until it expires without another report.
    pub expires_secs: u64,
}

/// The multicast database.
#[derive(Debug, Clone)]
pub struct Mdb {
    config: McastConfig,
    /// Keyed with a random secret (forged groups cannot target buckets).
    groups: HashMap<(VlanId, GroupAddr), Vec<Member>, ahash::RandomState>,
    routers: Vec<Router>,
    /// The earliest expiry of any membership or learned router port.
    earliest: Option<Instant>,
    /// Joins for new groups refused because the table was full.
    pub refused: u64,
    /// General queries our querier sent (one per protocol and VLAN).
    pub queries_sent: u64,
    /// Group-specific queries our querier sent after leaves.
    pub group_queries_sent: u64,
    /// Leaves that cut a membership short while our querier is on: each calls for a
    /// group-specific query out of its port ([`Mdb::take_leaves`]); at most [`LEAVES_QUEUED`].
    leaves: Vec<(VlanId, GroupAddr, PortId)>,
}

/// Leaves kept for group-specific queries between two [`Mdb::take_leaves`].
pub const LEAVES_QUEUED: usize = 64;

impl Mdb {
    /// An empty table.
    pub fn new(config: McastConfig) -> Mdb {
        let groups = HashMap::with_hasher(ahash::RandomState::new());
        Mdb {
            config,
            groups,
            routers: Vec::new(),
            earliest: None,
            refused: 0,
            queries_sent: 0,
            group_queries_sent: 0,
            leaves: Vec::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> McastConfig {
        self.config
    }

    /// Replaces the settings; turning snooping off forgets every group and learned router.
    pub fn set_config(&mut self, config: McastConfig) {
        self.config = config;
        if !config.snooping {
            self.groups.clear();
            self.routers.retain(|r| r.expires.is_none());
        }
    }

    /// Whether snooping is on.
    pub fn snooping(&self) -> bool {
        self.config.snooping
    }

    fn note_deadline(&mut self, at: Instant) {
        self.earliest = Some(self.earliest.map_or(at, |e| e.min(at)));
    }

    /// Takes in what a message snooped on `port` in `vlan` at `now` says.
    pub fn apply(&mut self, vlan: VlanId, port: PortId, message: Message, now: Instant) {
        if !self.config.snooping {
            return;
        }
        match message {
            Message::Query => {
                let expires = now + ROUTER_TIMEOUT;
                match self.routers.iter_mut().find(|r| r.port == port) {
                    Some(Router { expires: Some(e), .. }) => *e = expires,
                    Some(Router { expires: None, .. }) => return,
                    None => self.routers.push(Router { port, expires: Some(expires) }),
                }
                self.note_deadline(expires);
            }
            Message::Join(group) => {
                let expires = now + self.config.aging;
                let full = self.groups.len() >= self.config.max_groups;
                let members = match self.groups.get_mut(&(vlan, group)) {
                    Some(members) => members,
                    None if full => {
                        self.refused += 1;
                        return;
                    }
                    None => self.groups.entry((vlan, group)).or_default(),
                };
                match members.iter_mut().find(|m| m.port == port) {
                    Some(m) => (m.reported, m.expires) = (now, expires),
                    None => members.push(Member { port, reported: now, expires }),
                }
                self.note_deadline(expires);
            }
            Message::Leave(group) => {
                let soon = now + LAST_MEMBER_TIME;
                let Some(members) = self.groups.get_mut(&(vlan, group)) else { return };
                let Some(m) = members.iter_mut().find(|m| m.port == port) else { return };
                if m.expires > soon {
                    m.expires = soon;
                }
                self.note_deadline(soon);
                if self.config.querier && self.leaves.len() < LEAVES_QUEUED {
                    self.leaves.push((vlan, group, port));
                }
            }
        }
    }

    /// Hands `each` the leaves that call for a group-specific query (VLAN, group, port), and
    /// forgets them.
    pub fn take_leaves(&mut self, mut each: impl FnMut(VlanId, GroupAddr, PortId)) {
        for (vlan, group, port) in self.leaves.drain(..) {
            each(vlan, group, port);
        }
    }

    /// Applies an update another worker (or the operator) sent.
    pub fn apply_update(&mut self, update: MdbUpdate, now: Instant) {
        match update {
            MdbUpdate::Snooped { vlan, port, message } => self.apply(vlan, port, message, now),
            MdbUpdate::StaticRouter { port, on } => self.set_static_router(port, on),
        }
    }

    /// Makes `port` a router port for good (`mrouter = true`), or takes that back.
    pub fn set_static_router(&mut self, port: PortId, on: bool) {
        if on {
            self.routers.retain(|r| r.port != port);
            self.routers.push(Router { port, expires: None });
        } else {
            self.routers.retain(|r| r.port != port || r.expires.is_some());
        }
    }

    /// The ports configured as router ports.
    pub fn static_routers(&self) -> impl Iterator<Item = PortId> + '_ {
        self.routers.iter().filter(|r| r.expires.is_none()).map(|r| r.port)
    }

    /// Whether a querier is known to be present: ours (`mcast_querier`), or a query seen
    /// within [`ROUTER_TIMEOUT`]. Then reports go to router ports only, as the kernel bridge
    /// does; without one they flood, so a report reaches whoever may need it.
    pub fn querier_present(&self) -> bool {
        self.config.querier || self.routers.iter().any(|r| r.expires.is_some())
    }

    /// Fills `out` with the router ports but `in_port` (reusing its capacity).
    pub fn router_ports(&self, in_port: PortId, out: &mut Vec<PortId>) {
        out.clear();
        out.extend(self.routers.iter().map(|r| r.port).filter(|&p| p != in_port));
    }

    /// Whether a group is in the table for `vlan` (then its traffic goes to members and
    /// router ports; otherwise it is an unknown group).
    pub fn is_known(&self, vlan: VlanId, group: GroupAddr) -> bool {
        self.groups.contains_key(&(vlan, group))
    }

    /// Fills `out` with the ports a frame to `group` in `vlan` from `in_port` goes to: its
    /// members and the router ports, each once, never `in_port`. `out` keeps its capacity, so
    /// this does not allocate once it has grown to the port count.
    pub fn egress_ports(&self, vlan: VlanId, group: GroupAddr, in_port: PortId, out: &mut Vec<PortId>) {
        out.clear();
        if let Some(members) = self.groups.get(&(vlan, group)) {
            out.extend(members.iter().map(|m| m.port).filter(|&p| p != in_port));
        }
        for r in &self.routers {
            if r.port != in_port && !out.contains(&r.port) {
                out.push(r.port);
            }
        }
    }

    /// Forgets everything about `port` (removed, or gone down), configured router role included.
    pub fn remove_port(&mut self, port: PortId) {
        self.routers.retain(|r| r.port != port);
        self.groups.retain(|_, members| {
            members.retain(|m| m.port != port);
            !members.is_empty()
        });
    }

    /// Forgets what was learned behind `port` (its link went down): its memberships and its
    /// role as a router port learned from queries; `mrouter = true` stays. The hosts report
    /// again when their link comes back.
    pub fn port_down(&mut self, port: PortId) {
        self.routers.retain(|r| r.port != port || r.expires.is_none());
        self.groups.retain(|_, members| {
            members.retain(|m| m.port != port);
            !members.is_empty()
        });
    }

    /// Expires memberships and router ports due at `now`; returns how many went.
    pub fn run(&mut self, now: Instant) -> usize {
        if self.earliest.is_none_or(|e| e > now) {
            return 0;
        }
        let mut expired = 0;
        let mut earliest: Option<Instant> = None;
        let mut keep = |at: Instant| earliest = Some(earliest.map_or(at, |e: Instant| e.min(at)));
        self.groups.retain(|_, members| {
            members.retain(|m| {
                let live = m.expires > now;
                if live {
                    keep(m.expires);
                } else {
                    expired += 1;
                }
                live
            });
            !members.is_empty()
        });
        self.routers.retain(|r| match r.expires {
            Some(e) if e <= now => {
                expired += 1;
                false
            }
            Some(e) => {
                keep(e);
                true
            }
            None => true,
        });
        self.earliest = earliest;
        expired
    }

    /// When [`Mdb::run`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.earliest
    }

    /// Every membership, sorted by VLAN, group and port, with its remaining time at `now`.
    pub fn entries(&self, now: Instant) -> Vec<MdbEntry> {
        let mut out: Vec<(VlanId, GroupAddr, PortId, u64, u64)> = self
            .groups
            .iter()
            .flat_map(|(&(vlan, group), members)| {
                members.iter().map(move |m| {
                    let age = now.saturating_duration_since(m.reported).as_secs();
                    (vlan, group, m.port, age, m.expires.saturating_duration_since(now).as_secs())
                })
            })
            .collect();
        out.sort();
        out.into_iter()
            .map(|(vlan, group, port, age_secs, expires_secs)| MdbEntry {
                vlan: vlan.get(),
                group: group.to_string(),
                port,
                age_secs,
                expires_secs,
            })
            .collect()
    }

    /// The router ports with the seconds each has left (`None`: configured).
    pub fn routers(&self, now: Instant) -> Vec<(PortId, Option<u64>)> {
        let mut out: Vec<_> = self
            .routers
            .iter()
            .map(|r| (r.port, r.expires.map(|e| e.saturating_duration_since(now).as_secs())))
            .collect();
        out.sort();
        out
    }

    /// How many (VLAN, group) entries there are.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: GroupAddr = GroupAddr::V4([239, 1, 1, 1]);
    const H: GroupAddr = GroupAddr::V6([0xff, 0x0e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    const V: VlanId = VlanId::NONE;
    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);
    const P3: PortId = PortId(3);

    fn mdb() -> Mdb {
        Mdb::new(McastConfig { snooping: true, max_groups: 3, ..McastConfig::default() })
    }

    fn ports(m: &Mdb, group: GroupAddr, from: PortId) -> Vec<PortId> {
        let mut out = Vec::new();
        m.egress_ports(V, group, from, &mut out);
        out
    }

    #[test]
    fn members_and_routers_receive_and_joins_expire() {
        let mut m = mdb();
        let t0 = Instant::from_secs(100);
        m.apply(V, P1, Message::Join(G), t0);
        m.apply(V, P2, Message::Query, t0);
        assert!(m.is_known(V, G));
        assert_eq!(ports(&m, G, P3), vec![P1, P2]);
        assert_eq!(ports(&m, G, P1), vec![P2]);
        assert!(!m.is_known(V, H));
        assert!(!m.is_known(VlanId::new(5).unwrap(), G));
        assert_eq!(m.next_deadline(), Some(t0 + Duration::from_secs(255)));
        assert_eq!(m.run(t0 + Duration::from_secs(259)), 1); // the router port
        assert_eq!(m.run(t0 + Duration::from_secs(260)), 1);
        assert!(m.is_empty());
        assert_eq!(m.next_deadline(), None);
    }

    #[test]
    fn a_leave_expires_the_port_soon_unless_it_reports_again() {
        let mut m = mdb();
        let t0 = Instant::from_secs(1);
        m.apply(V, P1, Message::Join(G), t0);
        m.apply(V, P2, Message::Join(G), t0);
        m.apply(V, P1, Message::Leave(G), t0);
        assert_eq!(m.run(t0 + Duration::from_secs(1)), 0);
        assert_eq!(m.run(t0 + LAST_MEMBER_TIME), 1);
        assert_eq!(ports(&m, G, P3), vec![P2]);
        m.apply(V, P2, Message::Leave(G), t0);
        m.apply(V, P2, Message::Join(G), t0 + Duration::from_secs(1));
        assert_eq!(m.run(t0 + Duration::from_secs(10)), 0);
        assert_eq!(ports(&m, G, P3), vec![P2]);
        m.apply(V, P3, Message::Leave(H), t0); // leave of a group never joined: nothing
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn with_our_querier_a_leave_calls_for_a_group_query() {
        let mut m = mdb();
        m.apply(V, P1, Message::Join(G), Instant::ZERO);
        m.apply(V, P1, Message::Leave(G), Instant::ZERO);
        let mut leaves = Vec::new();
        m.take_leaves(|v, g, p| leaves.push((v, g, p)));
        assert!(leaves.is_empty(), "no querier, no query");
        m.set_config(McastConfig { querier: true, ..m.config() });
        m.apply(V, P1, Message::Join(G), Instant::ZERO);
        m.apply(V, P1, Message::Leave(G), Instant::ZERO);
        m.apply(V, P2, Message::Leave(G), Instant::ZERO); // not a member: nothing to ask
        m.take_leaves(|v, g, p| leaves.push((v, g, p)));
        assert_eq!(leaves, vec![(V, G, P1)]);
        for _ in 0..100 {
            m.apply(V, P1, Message::Leave(G), Instant::ZERO);
        }
        leaves.clear();
        m.take_leaves(|v, g, p| leaves.push((v, g, p)));
        assert_eq!(leaves.len(), LEAVES_QUEUED);
    }

    #[test]
    fn the_table_is_bounded_and_refusals_counted() {
        let mut m = mdb();
        for i in 0..5u8 {
            m.apply(V, P1, Message::Join(GroupAddr::V4([239, 0, 0, i])), Instant::ZERO);
        }
        assert_eq!((m.len(), m.refused), (3, 2));
        m.apply(V, P2, Message::Join(GroupAddr::V4([239, 0, 0, 0])), Instant::ZERO); // known: taken
        assert_eq!(m.refused, 2);
        m.run(Instant::from_secs(260));
        m.apply(V, P1, Message::Join(GroupAddr::V4([239, 0, 0, 4])), Instant::from_secs(261));
        assert_eq!((m.len(), m.refused), (1, 2));
    }

    #[test]
    fn static_routers_never_expire_and_removed_ports_go() {
        let mut m = mdb();
        m.set_static_router(P3, true);
        m.apply(V, P3, Message::Query, Instant::ZERO);
        m.apply(V, P1, Message::Join(G), Instant::ZERO);
        m.run(Instant::from_secs(10_000));
        assert_eq!(ports(&m, H, P1), vec![P3]);
        assert_eq!(m.routers(Instant::ZERO), vec![(P3, None)]);
        m.apply(V, P1, Message::Join(G), Instant::ZERO);
        m.apply(V, P2, Message::Query, Instant::ZERO);
        m.port_down(P3);
        m.port_down(P2);
        assert_eq!(ports(&m, G, P2), vec![P1, P3]);
        m.remove_port(P1);
        m.remove_port(P3);
        assert!(m.is_empty());
        assert_eq!(ports(&m, G, P2), Vec::<PortId>::new());
    }

    #[test]
    fn queries_go_out_after_ports_come_then_at_startup_then_query_intervals() {
        let mut q = QuerySchedule::default();
        let t0 = Instant::from_secs(10);
        assert!(!q.due(t0, 0));
        assert!(!q.due(t0, 2));
        assert_eq!(q.next_deadline(), Some(t0 + QUERY_SETTLE));
        let t1 = t0 + QUERY_SETTLE;
        assert!(q.due(t1, 2));
        assert!(!q.due(t1, 2));
        assert!(q.due(t1 + STARTUP_QUERY_INTERVAL, 2));
        let t2 = t1 + STARTUP_QUERY_INTERVAL * 2;
        assert!(q.due(t2, 2));
        assert_eq!(q.next_deadline(), Some(t2 + QUERY_INTERVAL));
        assert!(!q.due(t2 + Duration::from_secs(1), 1)); // a port went: nothing sooner
        assert!(!q.due(t2 + Duration::from_secs(2), 2)); // one came: soon
        assert_eq!(q.next_deadline(), Some(t2 + Duration::from_secs(2) + QUERY_SETTLE));
    }

    #[test]
    fn a_querier_is_present_after_a_query_or_when_we_are_one() {
        let mut m = mdb();
        m.set_static_router(P3, true);
        assert!(!m.querier_present());
        m.apply(V, P2, Message::Query, Instant::ZERO);
        assert!(m.querier_present());
        let mut out = Vec::new();
        m.router_ports(P2, &mut out);
        assert_eq!(out, vec![P3]);
        m.run(Instant::ZERO + ROUTER_TIMEOUT);
        assert!(!m.querier_present());
        m.set_config(McastConfig { querier: true, ..m.config() });
        assert!(m.querier_present());
    }

    #[test]
    fn nothing_is_learned_without_snooping() {
        let mut m = Mdb::new(McastConfig::default());
        m.apply(V, P1, Message::Join(G), Instant::ZERO);
        m.apply(V, P1, Message::Query, Instant::ZERO);
        assert!(m.is_empty() && m.routers(Instant::ZERO).is_empty());
    }

    #[test]
    fn entries_list_sorted_with_remaining_time() {
        let mut m = mdb();
        m.apply(V, P2, Message::Join(H), Instant::ZERO);
        m.apply(V, P1, Message::Join(G), Instant::ZERO);
        let e = m.entries(Instant::from_secs(60));
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].group.as_str(), e[0].port, e[0].age_secs, e[0].expires_secs), ("239.1.1.1", P1, 60, 200));
        assert_eq!(e[1].group, "ff0e::1");
    }
}
