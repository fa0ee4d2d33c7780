//! Bonding as plain data: a bond is one bridge port made of member links. This module decides
//! which member(s) a frame leaves by, whether a frame that arrived on a member is admitted,
//! and which member is active — from member carrier observations and `now`, with no I/O.
//!
//! Modes (the Linux bonding driver's names and behaviour):
//! - `balance-rr`: frames go out of the usable members in turn.
//! - `active-backup`: one active member carries everything; frames arriving on the others are
//!   dropped (`bond_backup`). When the active member fails, the primary (if set and usable) or
//!   the first usable member takes over; a returning primary takes over again.
//! - `balance-xor`: a hash of the frame's flow (`layer2`, `layer2+3` or `layer3+4`) picks the
//!   member, so a flow stays on one member while many flows spread over all.
//! - `broadcast`: every frame goes out of every usable member.
//! - `802.3ad`: LACP ([`lacp`]) decides which members are aggregated; frames are spread over
//!   the distributing members by the flow hash, and taken only on collecting members.
//!
//! Member links go up and down through [`link::MemberLink`]'s `updelay`/`downdelay`
//! hysteresis. A change of active member is reported as a [`Failover`], so the switch can
//! announce the MACs behind the bond on the new member at once.

pub mod lacp;
pub mod link;

use std::time::Duration;

use serde::Serialize;

use crate::metrics::DropCounts;
use crate::time::Instant;
use crate::verdict::DropReason;
use crate::wire::flow::flow_key;
use crate::wire::lacp::{FRAME_LEN as LACPDU_LEN, Lacpdu};
use lacp::{Lacp, LacpSettings};
use link::{LinkPhase, MemberLink};

/// Which fields the `balance-xor` hash covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashPolicy {
    /// MAC addresses and EtherType.
    Layer2,
    /// MAC addresses and IP addresses.
    Layer23,
    /// IP addresses and transport ports (layer 2 for non-IP frames).
    Layer34,
}

impl HashPolicy {
    /// The name used in configuration (`layer2`, `layer2+3`, `layer3+4`).
    pub fn name(self) -> &'static str {
        match self {
            HashPolicy::Layer2 => "layer2",
            HashPolicy::Layer23 => "layer2+3",
            HashPolicy::Layer34 => "layer3+4",
        }
    }
}

/// How a bond uses its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BondMode {
    /// Round robin.
    BalanceRr,
    /// One active member.
    ActiveBackup,
    /// A flow hash picks the member.
    BalanceXor(HashPolicy),
    /// Every frame on every member.
    Broadcast,
    /// IEEE 802.3ad / 802.1AX link aggregation with LACP; a flow hash over the aggregated
    /// members.
    Lacp(HashPolicy),
}

impl BondMode {
    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            BondMode::BalanceRr => "balance-rr",
            BondMode::ActiveBackup => "active-backup",
            BondMode::BalanceXor(_) => "balance-xor",
            BondMode::Broadcast => "broadcast",
            BondMode::Lacp(_) => "802.3ad",
        }
    }
}

/// A bond's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BondConfig {
    /// The mode.
    pub mode: BondMode,
    /// How often member links are checked.
    pub miimon: Duration,
    /// How long a returning carrier must hold before the member is used.
    pub updelay: Duration,
    /// How long a lost carrier is waited out before the member is dropped.
    pub downdelay: Duration,
    /// The preferred member (active-backup), by index.
    pub primary: Option<usize>,
    /// How to speak LACP (802.3ad).
    pub lacp: Option<LacpSettings>,
}

/// A member's traffic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemberCounters {
    /// Frames received on the member.
    pub rx_frames: u64,
    /// Bytes received on the member.
    pub rx_bytes: u64,
    /// Frames sent on the member.
    pub tx_frames: u64,
    /// Bytes sent on the member.
    pub tx_bytes: u64,
    /// Frames dropped on the member, by reason.
    pub drops: DropCounts,
}

/// One member link.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its name (the port's name in the topology).
    pub name: String,
    link: MemberLink,
    /// Its counters.
    pub counters: MemberCounters,
}

impl Member {
    /// Its link phase.
    pub fn phase(&self) -> LinkPhase {
        self.link.phase()
    }

    /// Whether it carries frames.
    pub fn usable(&self) -> bool {
        self.link.usable()
    }
}

/// Which member(s) a frame leaves by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// No usable member: drop (`no_bond_member`).
    Nowhere,
    /// This member.
    One(usize),
    /// Every usable member.
    All,
}

/// The active member changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failover {
    /// The member that was active.
    pub from: Option<usize>,
    /// The member that is active now.
    pub to: Option<usize>,
}

/// Why an operator's change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BondError {
    /// No member of that name.
    #[error("the bond has no member named {0:?}")]
    NoSuchMember(String),
    /// Only active-backup bonds have an active member.
    #[error("only an active-backup bond has an active member (this one is {0})")]
    NotActiveBackup(&'static str),
    /// The member's link is not usable.
    #[error("member {0:?} is not up")]
    MemberDown(String),
}

/// A bond.
#[derive(Debug, Clone)]
pub struct Bond {
    config: BondConfig,
    members: Vec<Member>,
    active: Option<usize>,
    forced: bool,
    rr_next: usize,
    failovers: u64,
    lacp: Option<Lacp>,
}

fn mix(hash: u64, value: u64) -> u64 {
    (hash ^ value).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(27)
}

/// The flow hash of `frame` under `policy`.
pub fn flow_hash(policy: HashPolicy, frame: &[u8]) -> u64 {
    let key = flow_key(frame);
    let layer2 = mix(mix(mix(0, key.macs.0), key.macs.1), u64::from(key.ethertype));
    let ips = key.ips.map(|(s, d)| mix(mix(mix(mix(0, s as u64), (s >> 64) as u64), d as u64), (d >> 64) as u64));
    let hash = match (policy, ips) {
        (HashPolicy::Layer2, _) | (_, None) => layer2,
        (HashPolicy::Layer23, Some(ips)) => mix(layer2, ips),
        (HashPolicy::Layer34, Some(ips)) => {
            let (sp, dp) = key.ports.unwrap_or((0, 0));
            mix(mix(ips, u64::from(key.protocol)), (u64::from(sp) << 16) | u64::from(dp))
        }
    };
    hash ^ (hash >> 32)
}

impl Bond {
    /// A bond of `members` (all links down until observed).
    pub fn new(config: BondConfig, members: Vec<String>) -> Bond {
        let members: Vec<Member> = members
            .into_iter()
            .map(|name| Member { name, link: MemberLink::new(), counters: MemberCounters::default() })
            .collect();
        let lacp = match config.mode {
            BondMode::Lacp(_) => Some(Lacp::new(
                config.lacp.unwrap_or(LacpSettings {
                    active: true,
                    fast: false,
                    system: crate::wire::MacAddr([0x02, 0, 0, 0, 0, 1]),
                    system_priority: 65535,
                    key: 1,
                }),
                members.len(),
            )),
            _ => None,
        };
        Bond { config, members, active: None, forced: false, rr_next: 0, failovers: 0, lacp }
    }

    /// The settings.
    pub fn config(&self) -> &BondConfig {
        &self.config
    }

    /// The members, in configuration order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Member `index`, for counting.
    pub fn member_mut(&mut self, index: usize) -> Option<&mut Member> {
        self.members.get_mut(index)
    }

    /// The active member (active-backup).
    pub fn active(&self) -> Option<usize> {
        self.active
    }

    /// Times the active member changed.
    pub fn failovers(&self) -> u64 {
        self.failovers
    }

    /// Records member `index`'s carrier at `now`.
    pub fn observe(&mut self, index: usize, carrier: bool, now: Instant) -> Option<Failover> {
        let (up, down) = (self.config.updelay, self.config.downdelay);
        let changed = self.members.get_mut(index).is_some_and(|m| m.link.observe(carrier, now, up, down));
        self.update_lacp(now);
        if changed { self.reselect() } else { None }
    }

    /// Completes expired up/down delays (and LACP timers).
    pub fn run(&mut self, now: Instant) -> Option<Failover> {
        let mut changed = false;
        for m in &mut self.members {
            changed |= m.link.run(now);
        }
        self.update_lacp(now);
        if changed { self.reselect() } else { None }
    }

    fn update_lacp(&mut self, now: Instant) {
        let members = &self.members;
        if let Some(lacp) = self.lacp.as_mut() {
            lacp.update(&mut |i| members[i].usable(), now);
        }
    }

    /// When [`Bond::run`] (or [`Bond::lacp_transmit`]) next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let links = self.members.iter().filter_map(|m| m.link.next_deadline()).min();
        let lacp = self.lacp.as_ref().and_then(Lacp::next_deadline);
        match (links, lacp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// LACP state, for 802.3ad bonds.
    pub fn lacp(&self) -> Option<&Lacp> {
        self.lacp.as_ref()
    }

    /// Takes a LACPDU frame received on member `index`.
    pub fn lacp_receive(&mut self, index: usize, frame: &[u8], now: Instant) -> Result<(), DropReason> {
        let lacp = self.lacp.as_mut().ok_or(DropReason::LinkLocal)?;
        let pdu = Lacpdu::parse(frame).ok_or(DropReason::BadLacpdu)?;
        lacp.receive(index, &pdu, now);
        self.update_lacp(now);
        Ok(())
    }

    /// The LACPDU frame member `index` should send at `now`, if any.
    pub fn lacp_transmit(&mut self, index: usize, now: Instant) -> Option<[u8; LACPDU_LEN]> {
        let usable = self.members.get(index)?.usable();
        let lacp = self.lacp.as_mut()?;
        let system = lacp.settings().system;
        lacp.transmit(index, usable, now).map(|pdu| pdu.emit(system))
    }

    /// Makes member `name` active (active-backup), until its link fails.
    pub fn set_active(&mut self, name: &str) -> Result<Option<Failover>, BondError> {
        let index = self
            .members
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| BondError::NoSuchMember(name.to_string()))?;
        if self.config.mode != BondMode::ActiveBackup {
            return Err(BondError::NotActiveBackup(self.config.mode.name()));
        }
        if !self.members[index].usable() {
            return Err(BondError::MemberDown(name.to_string()));
        }
        self.forced = true;
        Ok(self.switch_to(Some(index)))
    }

    fn switch_to(&mut self, to: Option<usize>) -> Option<Failover> {
        if to == self.active {
            return None;
        }
        let failover = Failover { from: self.active, to };
        self.active = to;
        self.failovers += 1;
        Some(failover)
    }

    /// Picks the active member after a link change.
    fn reselect(&mut self) -> Option<Failover> {
        let usable = |i: Option<usize>| i.is_some_and(|i| self.members[i].usable());
        if !usable(self.active) {
            self.forced = false;
        }
        let primary = self.config.primary.filter(|&p| usable(Some(p)));
        let next = match (primary, self.forced) {
            (_, true) => self.active,
            (Some(p), false) => Some(p),
            (None, false) if usable(self.active) => self.active,
            (None, false) => self.members.iter().position(Member::usable),
        };
        self.switch_to(next)
    }

    /// Whether member `index` may carry frames now: its link is usable and, under LACP, it is
    /// distributing.
    fn carries(&self, index: usize) -> bool {
        self.members[index].usable()
            && self.lacp.as_ref().is_none_or(|l| l.member(index).is_some_and(|m| m.distributing()))
    }

    fn usable_count(&self) -> usize {
        (0..self.members.len()).filter(|&i| self.carries(i)).count()
    }

    fn nth_usable(&self, n: usize) -> Option<usize> {
        (0..self.members.len()).filter(|&i| self.carries(i)).nth(n)
    }

    /// Which member(s) `frame` leaves by.
    pub fn transmit(&mut self, frame: &[u8]) -> Transmit {
        let count = self.usable_count();
        if count == 0 {
            return Transmit::Nowhere;
        }
        let pick = match self.config.mode {
            BondMode::ActiveBackup => self.active,
            BondMode::Broadcast => return Transmit::All,
            BondMode::BalanceRr => {
                self.rr_next = self.rr_next.wrapping_add(1);
                self.nth_usable(self.rr_next % count)
            }
            BondMode::BalanceXor(policy) | BondMode::Lacp(policy) => {
                self.nth_usable((flow_hash(policy, frame) % count as u64) as usize)
            }
        };
        pick.map_or(Transmit::Nowhere, Transmit::One)
    }

    /// A digest of everything [`Bond::transmit`] and [`Bond::admit`] decide from: the active
    /// member, and per member whether it carries frames and whether it takes them. The first
    /// worker sends the other workers' replicas a fresh copy of the bond when it changes
    /// ([`Bond::take_state_of`]).
    pub fn forwarding_digest(&self) -> u64 {
        let mut digest = mix(self.members.len() as u64, self.active.map_or(u64::MAX, |a| a as u64));
        for i in 0..self.members.len() {
            let bits = u64::from(self.carries(i)) | u64::from(self.admit(i).is_ok()) << 1;
            digest = mix(digest, (i as u64) << 2 | bits);
        }
        digest
    }

    /// Becomes a copy of `authority` (the first worker's bond, after a change) while keeping
    /// this replica's member counters and its balance-rr turn: what a worker other than the
    /// first runs on. A replica decides where frames go and which it takes, and never runs
    /// timers or LACP itself.
    pub fn take_state_of(&mut self, authority: Bond) {
        let counters: Vec<MemberCounters> = self.members.iter().map(|m| m.counters).collect();
        let rr_next = self.rr_next;
        *self = authority;
        self.rr_next = rr_next;
        for (member, counters) in self.members.iter_mut().zip(counters) {
            member.counters = counters;
        }
    }

    /// The bond as a new replica starts from: `self`'s state with zeroed member counters.
    pub fn replica(&self) -> Bond {
        let mut replica = self.clone();
        for member in &mut replica.members {
            member.counters = MemberCounters::default();
        }
        replica
    }

    /// Whether a frame that arrived on member `index` is taken.
    pub fn admit(&self, index: usize) -> Result<(), DropReason> {
        match self.config.mode {
            BondMode::ActiveBackup if self.active != Some(index) => Err(DropReason::BondBackup),
            BondMode::Lacp(_)
                if !self.lacp.as_ref().is_some_and(|l| l.member(index).is_some_and(|m| m.collecting())) =>
            {
                Err(DropReason::LacpNotCollecting)
            }
            _ if !self.members.get(index).is_some_and(Member::usable) => Err(DropReason::LinkDown),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn bond(mode: BondMode, members: usize, primary: Option<usize>) -> Bond {
        let config = BondConfig {
            mode,
            miimon: Duration::from_millis(100),
            updelay: Duration::ZERO,
            downdelay: Duration::ZERO,
            primary,
            lacp: None,
        };
        Bond::new(config, (0..members).map(|i| format!("m{i}")).collect())
    }

    fn all_up(b: &mut Bond) {
        for i in 0..b.members().len() {
            b.observe(i, true, at(0));
        }
    }

    fn frame(src_port: u16) -> Vec<u8> {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(src_port, 80, 1, 1000)
            .write(&mut out, b"x")
            .unwrap();
        out
    }

    #[test]
    fn a_replica_follows_the_first_workers_bond_and_keeps_its_own_counters() {
        let mut first = bond(BondMode::ActiveBackup, 2, None);
        all_up(&mut first);
        let mut replica = first.replica();
        replica.member_mut(1).unwrap().counters.rx_frames = 7;
        let digest = first.forwarding_digest();
        assert_eq!(replica.forwarding_digest(), digest);
        // A counter or the clock moving changes nothing the replica decides from.
        first.member_mut(0).unwrap().counters.tx_frames = 100;
        assert!(first.run(at(5)).is_none());
        assert_eq!(first.forwarding_digest(), digest);
        // A failover does.
        assert!(first.observe(0, false, at(6)).is_some());
        assert_ne!(first.forwarding_digest(), digest);
        assert_eq!(replica.transmit(&frame(1)), Transmit::One(0), "not told yet");
        replica.take_state_of(first.clone());
        assert_eq!(replica.forwarding_digest(), first.forwarding_digest());
        assert_eq!(replica.transmit(&frame(1)), Transmit::One(1));
        assert_eq!(replica.admit(0), Err(DropReason::BondBackup));
        assert_eq!(replica.members()[1].counters.rx_frames, 7, "its own counters");
        assert_eq!(replica.members()[0].counters.tx_frames, 0, "not the first worker's");
        // Each member's carrying and taking count, not only the active member.
        let mut xor = bond(BondMode::BalanceXor(HashPolicy::Layer34), 3, None);
        all_up(&mut xor);
        let before = xor.forwarding_digest();
        xor.observe(2, false, at(1));
        assert_ne!(xor.forwarding_digest(), before);
    }

    #[test]
    fn round_robin_takes_turns_over_usable_members() {
        let mut b = bond(BondMode::BalanceRr, 3, None);
        assert_eq!(b.transmit(&frame(1)), Transmit::Nowhere);
        all_up(&mut b);
        let picks: Vec<_> = (0..6).map(|_| b.transmit(&frame(1))).collect();
        for i in 0..3 {
            assert_eq!(picks.iter().filter(|&&p| p == Transmit::One(i)).count(), 2, "{picks:?}");
        }
        b.observe(1, false, at(1));
        let picks: Vec<_> = (0..4).map(|_| b.transmit(&frame(1))).collect();
        assert!(!picks.contains(&Transmit::One(1)), "{picks:?}");
    }

    #[test]
    fn active_backup_fails_over_and_the_primary_returns() {
        let mut b = bond(BondMode::ActiveBackup, 2, Some(0));
        assert_eq!(b.observe(1, true, at(0)), Some(Failover { from: None, to: Some(1) }));
        assert_eq!(b.observe(0, true, at(1)), Some(Failover { from: Some(1), to: Some(0) }), "primary preferred");
        assert_eq!(b.transmit(&frame(1)), Transmit::One(0));
        assert_eq!(b.admit(0), Ok(()));
        assert_eq!(b.admit(1), Err(DropReason::BondBackup));
        assert_eq!(b.observe(0, false, at(2)), Some(Failover { from: Some(0), to: Some(1) }));
        assert_eq!(b.transmit(&frame(1)), Transmit::One(1));
        assert_eq!(b.observe(0, true, at(3)), Some(Failover { from: Some(1), to: Some(0) }));
        assert_eq!(b.failovers(), 4);
    }

    #[test]
    fn without_a_primary_the_active_member_stays() {
        let mut b = bond(BondMode::ActiveBackup, 2, None);
        all_up(&mut b);
        assert_eq!(b.active(), Some(0));
        b.observe(0, false, at(1));
        assert_eq!(b.active(), Some(1));
        assert_eq!(b.observe(0, true, at(2)), None, "no primary: no fail-back");
        assert_eq!(b.active(), Some(1));
        b.observe(1, false, at(3));
        b.observe(0, false, at(3));
        assert_eq!((b.active(), b.transmit(&frame(1))), (None, Transmit::Nowhere));
    }

    #[test]
    fn forcing_the_active_member() {
        let mut b = bond(BondMode::ActiveBackup, 2, Some(0));
        all_up(&mut b);
        assert_eq!(b.set_active("m1").unwrap(), Some(Failover { from: Some(0), to: Some(1) }));
        b.observe(0, false, at(1));
        b.observe(0, true, at(2));
        assert_eq!(b.active(), Some(1), "a forced member is kept while it is up");
        b.observe(1, false, at(3));
        assert_eq!(b.active(), Some(0));
        assert!(matches!(b.set_active("m1"), Err(BondError::MemberDown(_))));
        assert!(matches!(b.set_active("m9"), Err(BondError::NoSuchMember(_))));
        let mut rr = bond(BondMode::BalanceRr, 2, None);
        assert!(matches!(rr.set_active("m0"), Err(BondError::NotActiveBackup("balance-rr"))));
    }

    #[test]
    fn xor_keeps_a_flow_on_one_member_and_spreads_many() {
        for policy in [HashPolicy::Layer34] {
            let mut b = bond(BondMode::BalanceXor(policy), 2, None);
            all_up(&mut b);
            let first = b.transmit(&frame(1000));
            for _ in 0..10 {
                assert_eq!(b.transmit(&frame(1000)), first);
            }
            let mut seen = [0; 2];
            for port in 1000..1200 {
                if let Transmit::One(i) = b.transmit(&frame(port)) {
                    seen[i] += 1;
                }
            }
            assert!(seen[0] > 50 && seen[1] > 50, "{seen:?}");
        }
        // layer2 and layer2+3 do not look at ports: one pair of hosts is one flow.
        for policy in [HashPolicy::Layer2, HashPolicy::Layer23] {
            let mut b = bond(BondMode::BalanceXor(policy), 2, None);
            all_up(&mut b);
            let first = b.transmit(&frame(1));
            assert!((2..100).all(|p| b.transmit(&frame(p)) == first));
        }
    }

    #[test]
    fn hashes_differ_by_policy_fields() {
        let (a, b) = (frame(1), frame(2));
        assert_eq!(flow_hash(HashPolicy::Layer2, &a), flow_hash(HashPolicy::Layer2, &b));
        assert_eq!(flow_hash(HashPolicy::Layer23, &a), flow_hash(HashPolicy::Layer23, &b));
        assert_ne!(flow_hash(HashPolicy::Layer34, &a), flow_hash(HashPolicy::Layer34, &b));
        assert_eq!(flow_hash(HashPolicy::Layer34, &[0u8; 14]), flow_hash(HashPolicy::Layer2, &[0u8; 14]));
    }

    #[test]
    fn broadcast_uses_every_usable_member() {
        let mut b = bond(BondMode::Broadcast, 2, None);
        assert_eq!(b.transmit(&frame(1)), Transmit::Nowhere);
        b.observe(1, true, at(0));
        assert_eq!(b.transmit(&frame(1)), Transmit::All);
        assert_eq!(b.admit(0), Err(DropReason::LinkDown));
        assert_eq!(b.admit(1), Ok(()));
    }

    #[test]
    fn an_lacp_bond_carries_frames_only_on_aggregated_members() {
        use crate::wire::lacp::{PortInfo, state};
        let mut b = bond(BondMode::Lacp(HashPolicy::Layer34), 2, None);
        all_up(&mut b);
        assert_eq!(b.transmit(&frame(1)), Transmit::Nowhere, "nothing aggregated yet");
        assert_eq!(b.admit(0), Err(DropReason::LacpNotCollecting));
        let ours = Lacpdu::parse(&b.lacp_transmit(0, at(0)).expect("an active member speaks first")).unwrap();
        // The partner answers on member 0 only: in sync, collecting, with our view of the link.
        let partner = PortInfo {
            system_priority: 1,
            system: crate::wire::MacAddr([2, 0, 0, 0, 0, 9]),
            key: 5,
            port_priority: 1,
            port: 1,
            state: state::ACTIVITY
                | state::AGGREGATION
                | state::SYNCHRONIZATION
                | state::COLLECTING
                | state::DISTRIBUTING,
        };
        let reply = Lacpdu { actor: partner, partner: ours.actor };
        b.lacp_receive(0, &reply.emit(partner.system), at(1)).unwrap();
        assert_eq!(b.admit(0), Ok(()));
        assert_eq!(b.transmit(&frame(1)), Transmit::One(0));
        assert_eq!(b.lacp_receive(1, &[0u8; 60], at(1)), Err(DropReason::BadLacpdu));
        assert_eq!(b.config().mode.name(), "802.3ad");
    }

    #[test]
    fn delays_drive_failover_through_run_and_deadlines() {
        let config = BondConfig {
            mode: BondMode::ActiveBackup,
            miimon: Duration::from_millis(100),
            updelay: Duration::from_millis(200),
            downdelay: Duration::from_millis(100),
            primary: None,
            lacp: None,
        };
        let mut b = Bond::new(config, vec!["a".into(), "b".into()]);
        assert_eq!(b.observe(0, true, at(0)), None);
        assert_eq!(b.next_deadline(), Some(at(200)));
        assert_eq!(b.run(at(200)), Some(Failover { from: None, to: Some(0) }));
        b.observe(1, true, at(200));
        b.run(at(400));
        assert_eq!(b.observe(0, false, at(500)), None, "still used during downdelay");
        assert_eq!(b.transmit(&frame(1)), Transmit::One(0));
        assert_eq!(b.run(at(600)), Some(Failover { from: Some(0), to: Some(1) }));
        assert_eq!(b.members()[0].phase(), LinkPhase::Down);
    }
}
