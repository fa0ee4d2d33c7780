//! A bond member's link with `updelay`/`downdelay` hysteresis: carrier observations come in
//! with their time, and the member is declared up or down only once the carrier has held for
//! the delay. Plain data; [`MemberLink::run`] applies expired delays.

use std::time::Duration;

use serde::Serialize;

use crate::time::Instant;

/// Where a member's link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkPhase {
    /// Down: not used.
    Down,
    /// Carrier is back, waiting out `updelay`: not used yet.
    GoingUp,
    /// Up: used.
    Up,
    /// Carrier is gone, waiting out `downdelay`: still used.
    GoingDown,
}

/// One member's link state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLink {
    phase: LinkPhase,
    /// When the pending transition (GoingUp/GoingDown) completes.
    until: Instant,
}

impl MemberLink {
    /// A member whose link starts down.
    pub fn new() -> MemberLink {
        MemberLink { phase: LinkPhase::Down, until: Instant::ZERO }
    }

    /// The phase.
    pub fn phase(&self) -> LinkPhase {
        self.phase
    }

    /// Whether frames may be sent and received on the member.
    pub fn usable(&self) -> bool {
        matches!(self.phase, LinkPhase::Up | LinkPhase::GoingDown)
    }

    /// Records a carrier observation at `now`. Returns whether usability changed.
    pub fn observe(&mut self, carrier: bool, now: Instant, updelay: Duration, downdelay: Duration) -> bool {
        let before = self.usable();
        self.phase = match (self.phase, carrier) {
            (LinkPhase::Down, true) if updelay.is_zero() => LinkPhase::Up,
            (LinkPhase::Down, true) => {
                self.until = now + updelay;
                LinkPhase::GoingUp
            }
            (LinkPhase::GoingUp, false) => LinkPhase::Down,
            (LinkPhase::Up, false) if downdelay.is_zero() => LinkPhase::Down,
            (LinkPhase::Up, false) => {
                self.until = now + downdelay;
                LinkPhase::GoingDown
            }
            (LinkPhase::GoingDown, true) => LinkPhase::Up,
            (phase, _) => phase,
        };
        self.run(now);
        before != self.usable()
    }

    /// Completes a delay that has expired at `now`. Returns whether usability changed.
    pub fn run(&mut self, now: Instant) -> bool {
        let before = self.usable();
        match self.phase {
            LinkPhase::GoingUp if now >= self.until => self.phase = LinkPhase::Up,
            LinkPhase::GoingDown if now >= self.until => self.phase = LinkPhase::Down,
            _ => {}
        }
        before != self.usable()
    }

    /// When a pending delay expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        matches!(self.phase, LinkPhase::GoingUp | LinkPhase::GoingDown).then_some(self.until)
    }
}

impl Default for MemberLink {
    fn default() -> Self {
        MemberLink::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn at(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn without_delays_carrier_is_state() {
        let mut l = MemberLink::new();
        assert!(l.observe(true, at(0), MS(0), MS(0)));
        assert_eq!(l.phase(), LinkPhase::Up);
        assert!(!l.observe(true, at(1), MS(0), MS(0)));
        assert!(l.observe(false, at(2), MS(0), MS(0)));
        assert_eq!(l.phase(), LinkPhase::Down);
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn updelay_holds_a_returning_link_back() {
        let mut l = MemberLink::new();
        assert!(!l.observe(true, at(0), MS(200), MS(0)));
        assert_eq!((l.phase(), l.next_deadline()), (LinkPhase::GoingUp, Some(at(200))));
        assert!(!l.run(at(199)));
        assert!(l.run(at(200)));
        assert_eq!(l.phase(), LinkPhase::Up);
    }

    #[test]
    fn a_flap_during_updelay_starts_over() {
        let mut l = MemberLink::new();
        l.observe(true, at(0), MS(200), MS(0));
        l.observe(false, at(100), MS(200), MS(0));
        assert_eq!(l.phase(), LinkPhase::Down);
        l.observe(true, at(150), MS(200), MS(0));
        assert!(!l.run(at(300)));
        assert!(l.run(at(350)));
    }

    #[test]
    fn downdelay_keeps_using_a_link_that_may_come_back() {
        let mut l = MemberLink::new();
        l.observe(true, at(0), MS(0), MS(300));
        assert!(!l.observe(false, at(10), MS(0), MS(300)));
        assert!(l.usable());
        assert!(!l.observe(true, at(100), MS(0), MS(300)), "back within downdelay: never unusable");
        assert_eq!(l.phase(), LinkPhase::Up);
        l.observe(false, at(200), MS(0), MS(300));
        assert!(l.run(at(500)));
        assert_eq!(l.phase(), LinkPhase::Down);
    }
}
