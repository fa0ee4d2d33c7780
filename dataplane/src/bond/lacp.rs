//! LACP (IEEE 802.1AX, formerly 802.3ad) for one bond, as plain data: LACPDUs and link states
//! in, LACPDUs to send and per-member collecting/distributing out, time passed in.
//!
//! What is implemented, in the standard's terms, simplified to one aggregator per bond:
//! - Receive: a LACPDU records the partner's information; it expires after 3 of the periods we
//!   asked the partner to send at (3 s with our `fast` rate, 90 s otherwise). Expired partners
//!   are forgotten (the member is "defaulted").
//! - Selection: a member with a usable link and a current partner that allows aggregation is
//!   selected if its partner is the same system with the same key as the aggregator's (the
//!   first such member decides); others stay out.
//! - Mux: a selected member is in sync; it collects once its partner says it is in sync with
//!   our view of the link, and distributes once the partner collects too.
//! - Periodic transmission at the rate the partner asked for (before any partner: our own
//!   rate), and at once when our state changes. A passive member sends only to an active
//!   partner; two passive ends never form an aggregate.

use std::time::Duration;

use crate::time::Instant;
use crate::wire::MacAddr;
use crate::wire::lacp::{Lacpdu, PortInfo, state};

/// How this end speaks LACP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LacpSettings {
    /// Active (sends on its own) or passive (answers active partners).
    pub active: bool,
    /// Ask the partner for a LACPDU every second (else every 30 seconds).
    pub fast: bool,
    /// Our system identifier.
    pub system: MacAddr,
    /// Our system priority.
    pub system_priority: u16,
    /// Our aggregation key.
    pub key: u16,
}

const FAST_PERIOD: Duration = Duration::from_secs(1);
const SLOW_PERIOD: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Partner {
    /// What the partner says of itself.
    info: PortInfo,
    /// What the partner says of us.
    view: PortInfo,
    expires: Instant,
}

/// One member's LACP state.
#[derive(Debug, Clone)]
pub struct LacpMember {
    port: u16,
    partner: Option<Partner>,
    selected: bool,
    actor_state: u8,
    next_tx: Instant,
    need_to_transmit: bool,
    /// LACPDUs received.
    pub pdus_rx: u64,
    /// LACPDUs sent.
    pub pdus_tx: u64,
}

impl LacpMember {
    /// Our state bits for this member.
    pub fn actor_state(&self) -> u8 {
        self.actor_state
    }

    /// What the partner last said of itself, if current.
    pub fn partner(&self) -> Option<PortInfo> {
        self.partner.map(|p| p.info)
    }

    /// Frames received on the member are taken.
    pub fn collecting(&self) -> bool {
        self.actor_state & state::COLLECTING != 0
    }

    /// Frames may be sent on the member.
    pub fn distributing(&self) -> bool {
        self.actor_state & state::DISTRIBUTING != 0
    }
}

/// LACP for a bond's members.
#[derive(Debug, Clone)]
pub struct Lacp {
    settings: LacpSettings,
    members: Vec<LacpMember>,
}

impl Lacp {
    /// LACP over `members` links, numbered from 1.
    pub fn new(settings: LacpSettings, members: usize) -> Lacp {
        let members = (0..members)
            .map(|i| LacpMember {
                port: i as u16 + 1,
                partner: None,
                selected: false,
                actor_state: 0,
                next_tx: Instant::ZERO,
                need_to_transmit: false,
                pdus_rx: 0,
                pdus_tx: 0,
            })
            .collect();
        let mut lacp = Lacp { settings, members };
        lacp.update(&mut |_| false, Instant::ZERO);
        lacp
    }

    /// The settings.
    pub fn settings(&self) -> &LacpSettings {
        &self.settings
    }

    /// Member `index`'s state.
    pub fn member(&self, index: usize) -> Option<&LacpMember> {
        self.members.get(index)
    }

    fn actor_info(&self, index: usize) -> PortInfo {
        PortInfo {
            system_priority: self.settings.system_priority,
            system: self.settings.system,
            key: self.settings.key,
            port_priority: 255,
            port: self.members[index].port,
            state: self.members[index].actor_state,
        }
    }

    fn partner_expiry(&self) -> Duration {
        3 * if self.settings.fast { FAST_PERIOD } else { SLOW_PERIOD }
    }

    /// Takes a LACPDU received on member `index` at `now`.
    pub fn receive(&mut self, index: usize, pdu: &Lacpdu, now: Instant) {
        let expires = now + self.partner_expiry();
        let Some(member) = self.members.get_mut(index) else { return };
        member.pdus_rx += 1;
        let changed = member.partner.is_none_or(|p| p.info != pdu.actor || p.view != pdu.partner);
        member.partner = Some(Partner { info: pdu.actor, view: pdu.partner, expires });
        // Answer a partner whose view of us is out of date.
        if changed {
            member.need_to_transmit = true;
        }
    }

    /// Expires partners and recomputes selection and states; `usable(i)` says whether member
    /// `i`'s link is up. Returns whether any member's distributing state changed.
    pub fn update(&mut self, usable: &mut dyn FnMut(usize) -> bool, now: Instant) -> bool {
        for m in &mut self.members {
            if m.partner.is_some_and(|p| now >= p.expires) {
                m.partner = None;
                m.need_to_transmit = true;
            }
        }
        let eligible = |i: usize, m: &LacpMember, usable: &mut dyn FnMut(usize) -> bool| {
            usable(i) && m.partner.is_some_and(|p| p.info.state & state::AGGREGATION != 0)
        };
        let mut aggregator: Option<(MacAddr, u16)> = None;
        for (i, m) in self.members.iter().enumerate() {
            if eligible(i, m, usable) {
                let p = m.partner.expect("eligible members have a partner").info;
                aggregator = Some((p.system, p.key));
                break;
            }
        }
        let mut distributing_changed = false;
        for i in 0..self.members.len() {
            let selected = eligible(i, &self.members[i], usable)
                && self.members[i].partner.is_some_and(|p| Some((p.info.system, p.info.key)) == aggregator);
            let me = self.actor_info(i);
            let m = &mut self.members[i];
            m.selected = selected;
            let partner_in_sync = m.partner.is_some_and(|p| {
                p.info.state & state::SYNCHRONIZATION != 0
                    && p.view.system == me.system
                    && p.view.key == me.key
                    && p.view.port == me.port
            });
            let partner_collecting = m.partner.is_some_and(|p| p.info.state & state::COLLECTING != 0);
            let mut bits = state::AGGREGATION;
            if self.settings.active {
                bits |= state::ACTIVITY;
            }
            if self.settings.fast {
                bits |= state::TIMEOUT;
            }
            if m.partner.is_none() {
                bits |= state::DEFAULTED;
            }
            if selected {
                bits |= state::SYNCHRONIZATION;
                if partner_in_sync {
                    bits |= state::COLLECTING;
                    if partner_collecting {
                        bits |= state::DISTRIBUTING;
                    }
                }
            }
            if bits != m.actor_state {
                distributing_changed |= (bits ^ m.actor_state) & state::DISTRIBUTING != 0;
                m.actor_state = bits;
                m.need_to_transmit = true;
            }
        }
        distributing_changed
    }

    /// The LACPDU member `index` should send at `now`, if any (its link must be usable).
    pub fn transmit(&mut self, index: usize, usable: bool, now: Instant) -> Option<Lacpdu> {
        let actor = self.actor_info(index);
        let own_period = if self.settings.fast { FAST_PERIOD } else { SLOW_PERIOD };
        let active = self.settings.active;
        let m = self.members.get_mut(index)?;
        let partner_active = m.partner.is_some_and(|p| p.info.state & state::ACTIVITY != 0);
        if !usable || !(active || partner_active) {
            // Nothing to send now; look again a period later (a change of state sets
            // `need_to_transmit` before then), so a silent member never leaves a deadline in
            // the past for the event loop to wake up for again and again.
            m.next_tx = m.next_tx.max(now + own_period);
            return None;
        }
        if !m.need_to_transmit && now < m.next_tx {
            return None;
        }
        let period = match m.partner {
            Some(p) if p.info.state & state::TIMEOUT != 0 => FAST_PERIOD,
            Some(_) => SLOW_PERIOD,
            None => own_period,
        };
        m.need_to_transmit = false;
        m.next_tx = now + period;
        m.pdus_tx += 1;
        let partner = m.partner.map_or(PortInfo::default(), |p| p.info);
        Some(Lacpdu { actor, partner })
    }

    /// When [`Lacp::update`] or [`Lacp::transmit`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let tx = self.members.iter().map(|m| m.next_tx);
        let expiry = self.members.iter().filter_map(|m| m.partner.map(|p| p.expires));
        tx.chain(expiry).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(system: u8, active: bool, key: u16) -> LacpSettings {
        LacpSettings { active, fast: true, system: MacAddr([2, 0, 0, 0, 0, system]), system_priority: 65535, key }
    }

    /// A member that is down (or passive without an active partner) sends nothing, and its
    /// timer must not stay in the past: the event loop sleeps until the next deadline.
    #[test]
    fn a_silent_member_leaves_no_deadline_in_the_past() {
        for (usable, active) in [(false, true), (true, false)] {
            let mut a = Lacp::new(settings(1, active, 1), 2);
            let now = Instant::from_nanos(5_000_000_000);
            for member in 0..2 {
                assert!(a.transmit(member, usable, now).is_none());
            }
            let deadline = a.next_deadline().unwrap();
            assert!(deadline > now, "usable {usable}, active {active}: a deadline at {deadline:?}, now {now:?}");
        }
    }

    /// Two ends joined member to member; `cut[i]` stops member i's PDUs in both directions.
    /// Steps virtual time in 100 ms ticks for `secs` seconds.
    fn run(a: &mut Lacp, b: &mut Lacp, from: u64, secs: u64, cut: &[bool]) -> u64 {
        let mut t = from;
        while t < from + secs * 1000 {
            let now = Instant::from_nanos(t * 1_000_000);
            for _ in 0..3 {
                for (i, &is_cut) in cut.iter().enumerate() {
                    a.update(&mut |_| true, now);
                    b.update(&mut |_| true, now);
                    if let Some(pdu) = a.transmit(i, true, now) {
                        if !is_cut {
                            b.receive(i, &pdu, now);
                        }
                    }
                    if let Some(pdu) = b.transmit(i, true, now) {
                        if !is_cut {
                            a.receive(i, &pdu, now);
                        }
                    }
                }
            }
            t += 100;
        }
        t
    }

    fn distributing(l: &Lacp) -> Vec<bool> {
        (0..l.members.len()).map(|i| l.member(i).unwrap().distributing()).collect()
    }

    #[test]
    fn two_active_ends_aggregate_both_links() {
        let (mut a, mut b) = (Lacp::new(settings(1, true, 1), 2), Lacp::new(settings(2, true, 7), 2));
        assert_eq!(distributing(&a), vec![false, false]);
        run(&mut a, &mut b, 0, 2, &[false, false]);
        assert_eq!(distributing(&a), vec![true, true]);
        assert_eq!(distributing(&b), vec![true, true]);
        let partner = a.member(0).unwrap().partner().unwrap();
        assert_eq!((partner.system, partner.key), (MacAddr([2, 0, 0, 0, 0, 2]), 7));
        assert_eq!(a.member(0).unwrap().actor_state() & state::DEFAULTED, 0);
    }

    #[test]
    fn an_active_end_brings_a_passive_one_along_but_two_passive_ones_stay_apart() {
        let (mut a, mut b) = (Lacp::new(settings(1, true, 1), 1), Lacp::new(settings(2, false, 1), 1));
        run(&mut a, &mut b, 0, 2, &[false]);
        assert_eq!((distributing(&a), distributing(&b)), (vec![true], vec![true]));
        let (mut a, mut b) = (Lacp::new(settings(1, false, 1), 1), Lacp::new(settings(2, false, 1), 1));
        run(&mut a, &mut b, 0, 5, &[false]);
        assert_eq!((distributing(&a), distributing(&b)), (vec![false], vec![false]));
        assert_eq!(a.member(0).unwrap().pdus_tx, 0);
    }

    #[test]
    fn a_silent_partner_leaves_the_aggregate_after_three_periods() {
        let (mut a, mut b) = (Lacp::new(settings(1, true, 1), 2), Lacp::new(settings(2, true, 1), 2));
        let t = run(&mut a, &mut b, 0, 2, &[false, false]);
        let t = run(&mut a, &mut b, t, 2, &[false, true]);
        assert_eq!(distributing(&a), vec![true, true], "not expired after 2 s");
        run(&mut a, &mut b, t, 2, &[false, true]);
        assert_eq!(distributing(&a), vec![true, false], "expired after 3 s of silence");
        assert_ne!(a.member(1).unwrap().actor_state() & state::DEFAULTED, 0);
    }

    #[test]
    fn links_to_another_system_are_not_aggregated_with_the_first() {
        let mut a = Lacp::new(settings(1, true, 1), 2);
        let (mut b, mut c) = (Lacp::new(settings(2, true, 1), 1), Lacp::new(settings(3, true, 1), 1));
        for step in 0..30u64 {
            let now = Instant::from_nanos(step * 100_000_000);
            for _ in 0..3 {
                a.update(&mut |_| true, now);
                b.update(&mut |_| true, now);
                c.update(&mut |_| true, now);
                if let Some(p) = a.transmit(0, true, now) {
                    b.receive(0, &p, now);
                }
                if let Some(p) = a.transmit(1, true, now) {
                    c.receive(0, &p, now);
                }
                if let Some(p) = b.transmit(0, true, now) {
                    a.receive(0, &p, now);
                }
                if let Some(p) = c.transmit(0, true, now) {
                    a.receive(1, &p, now);
                }
            }
        }
        assert_eq!(distributing(&a), vec![true, false]);
    }

    #[test]
    fn a_down_link_is_not_selected_and_sends_nothing() {
        let (mut a, mut b) = (Lacp::new(settings(1, true, 1), 2), Lacp::new(settings(2, true, 1), 2));
        run(&mut a, &mut b, 0, 2, &[false, false]);
        let now = Instant::from_secs(3);
        assert!(a.update(&mut |i| i == 0, now));
        assert_eq!(distributing(&a), vec![true, false]);
        assert_eq!(a.transmit(1, false, now), None);
        assert!(a.next_deadline().is_some());
    }
}
