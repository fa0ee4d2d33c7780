//! Per-port forwarding modes as plain data: isolation (MACVLAN private), hairpin (VEPA's
//! reflective relay), a bound on learned MACs, a list of allowed source MACs (MACVLAN source
//! mode) and storm control, a rate limit per class of flooded traffic.
//!
//! Storm control is a GCRA (generic cell rate algorithm, the virtual-scheduling form of a
//! token bucket): one "theoretical arrival time" per class, kept in an atomic so that every
//! worker thread forwarding from the port draws on the same budget. A class limited to `N`
//! frames a second admits a frame when the theoretical arrival time is at most one second
//! ahead of now (a burst of up to `N` frames after a quiet second), and advances it by `1/N`
//! of a second. Time is passed in; nothing here reads a clock or allocates per frame.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::time::Instant;
use crate::verdict::DropReason;
use crate::wire::MacAddr;

/// Most entries `allowed_macs` may list (the list is searched per frame).
pub const MAX_ALLOWED_MACS: usize = 256;

/// Largest `mac_limit`.
pub const MAX_MAC_LIMIT: u32 = 65_536;

/// Largest storm-control rate, frames per second.
pub const MAX_STORM_PPS: u32 = 100_000_000;

/// How much burst a storm-control class allows: this long at its rate, after a quiet spell.
pub const STORM_BURST_NANOS: u64 = 1_000_000_000;

/// Frames per second each flooded class may reach; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StormPps {
    /// Frames to ff:ff:ff:ff:ff:ff.
    pub broadcast: Option<u32>,
    /// Frames to any other group address.
    pub multicast: Option<u32>,
    /// Unicast frames whose destination the FDB does not know (flooded).
    pub unknown_unicast: Option<u32>,
}

impl StormPps {
    /// Whether any class is limited.
    pub fn is_limited(&self) -> bool {
        self.broadcast.is_some() || self.multicast.is_some() || self.unknown_unicast.is_some()
    }
}

/// A port's modes, as configured. The default is a plain bridge port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortModes {
    /// Frames from this port never leave by another isolated port (nor, hairpin or not, by
    /// this one): isolated ports reach only non-isolated ones.
    pub isolated: bool,
    /// A frame may leave by the port it came in on: a known unicast back to it is delivered
    /// and a flood includes it.
    pub hairpin: bool,
    /// At most this many MACs learned behind the port; a frame from a further one is dropped
    /// (`mac_limit`) until one ages out.
    pub mac_limit: Option<u32>,
    /// When not empty, the only source MACs taken from the port; others are dropped
    /// (`source_not_allowed`).
    pub allowed_macs: Vec<MacAddr>,
    /// Storm control.
    pub storm_pps: StormPps,
}

impl PortModes {
    /// Whether these are a plain port's modes (nothing to check per frame).
    pub fn is_plain(&self) -> bool {
        *self == PortModes::default()
    }

    /// Whether `src` may send from the port.
    pub fn allows_source(&self, src: MacAddr) -> bool {
        self.allowed_macs.is_empty() || self.allowed_macs.contains(&src)
    }
}

/// The class of a flooded frame, by destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodClass {
    /// ff:ff:ff:ff:ff:ff.
    Broadcast,
    /// Another group address.
    Multicast,
    /// An individual address the FDB does not know.
    UnknownUnicast,
}

impl FloodClass {
    /// The class of a frame to `dst` that is flooded.
    pub fn of(dst: MacAddr) -> FloodClass {
        if dst.is_broadcast() {
            FloodClass::Broadcast
        } else if dst.is_multicast() {
            FloodClass::Multicast
        } else {
            FloodClass::UnknownUnicast
        }
    }

    /// What a frame of this class over its rate is dropped as.
    pub fn drop_reason(self) -> DropReason {
        match self {
            FloodClass::Broadcast => DropReason::StormBroadcast,
            FloodClass::Multicast => DropReason::StormMulticast,
            FloodClass::UnknownUnicast => DropReason::StormUnknownUnicast,
        }
    }
}

/// One rate limit (GCRA). Shared by reference between workers; admission is lock-free.
#[derive(Debug)]
pub struct RateLimit {
    /// Nanoseconds one frame costs (`1e9 / rate`); zero when unlimited.
    interval: u64,
    /// The theoretical arrival time, in nanoseconds of [`Instant`].
    tat: AtomicU64,
}

impl RateLimit {
    /// A limit of `pps` frames a second (`None`: no limit).
    pub fn new(pps: Option<u32>) -> RateLimit {
        let interval = pps.map_or(0, |n| (1_000_000_000 / u64::from(n.max(1))).max(1));
        RateLimit { interval, tat: AtomicU64::new(0) }
    }

    /// Whether a frame at `now` would be within the rate, without counting it.
    pub fn would_admit(&self, now: Instant) -> bool {
        self.interval == 0
            || self.tat.load(Ordering::Relaxed)
                <= now.as_nanos().saturating_add(STORM_BURST_NANOS.saturating_sub(self.interval))
    }

    /// Whether a frame at `now` is within the rate (and if so, it is counted against it).
    pub fn admit(&self, now: Instant) -> bool {
        if self.interval == 0 {
            return true;
        }
        let now = now.as_nanos();
        // At most one second's worth of frames ahead of now, less the one being admitted.
        let tolerance = STORM_BURST_NANOS.saturating_sub(self.interval);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            if tat > now.saturating_add(tolerance) {
                return false;
            }
            let next = tat.max(now).saturating_add(self.interval);
            match self.tat.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }
}

/// A port's storm control: one rate limit per flooded class.
#[derive(Debug)]
pub struct StormControl {
    broadcast: RateLimit,
    multicast: RateLimit,
    unknown_unicast: RateLimit,
}

impl StormControl {
    /// Limits at `pps`, starting with a full burst allowance.
    pub fn new(pps: &StormPps) -> StormControl {
        StormControl {
            broadcast: RateLimit::new(pps.broadcast),
            multicast: RateLimit::new(pps.multicast),
            unknown_unicast: RateLimit::new(pps.unknown_unicast),
        }
    }

    fn limit(&self, class: FloodClass) -> &RateLimit {
        match class {
            FloodClass::Broadcast => &self.broadcast,
            FloodClass::Multicast => &self.multicast,
            FloodClass::UnknownUnicast => &self.unknown_unicast,
        }
    }

    /// `Ok` when a flooded frame of `class` at `now` is within its rate, else why it drops.
    pub fn admit(&self, class: FloodClass, now: Instant) -> Result<(), DropReason> {
        if self.limit(class).admit(now) { Ok(()) } else { Err(class.drop_reason()) }
    }

    /// As [`StormControl::admit`], without counting the frame against the rate (a trace).
    pub fn check(&self, class: FloodClass, now: Instant) -> Result<(), DropReason> {
        if self.limit(class).would_admit(now) { Ok(()) } else { Err(class.drop_reason()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    #[test]
    fn an_unlimited_class_admits_everything() {
        let limit = RateLimit::new(None);
        assert!((0..100_000).all(|_| limit.admit(Instant::ZERO)));
    }

    #[test]
    fn a_burst_of_one_seconds_worth_then_the_rate() {
        let limit = RateLimit::new(Some(100));
        let t = Instant::from_secs(10);
        let burst = (0..1000).filter(|_| limit.admit(t)).count();
        assert_eq!(burst, 100, "a second's worth at once after a quiet spell");
        // Then one frame every 10 ms, however many are offered.
        let mut admitted = 0;
        for step in 1..=1000u64 {
            let now = t + std::time::Duration::from_millis(step);
            admitted += (0..50).filter(|_| limit.admit(now)).count();
        }
        assert_eq!(admitted, 100, "one second at 100 frames a second");
    }

    #[test]
    fn a_steady_sender_under_the_rate_is_never_dropped() {
        let limit = RateLimit::new(Some(1000));
        assert!((0..10_000u64).all(|n| limit.admit(ms(n))), "one frame a millisecond at 1000 pps");
    }

    #[test]
    fn the_allowance_refills_after_a_quiet_spell_but_no_further() {
        let limit = RateLimit::new(Some(10));
        assert_eq!((0..100).filter(|_| limit.admit(Instant::from_secs(1))).count(), 10);
        assert!(!limit.admit(ms(1050)));
        // Ten quiet seconds buy no more than one second's burst.
        assert_eq!((0..100).filter(|_| limit.admit(Instant::from_secs(12))).count(), 10);
    }

    #[test]
    fn classes_are_limited_and_named_separately() {
        let storm = StormControl::new(&StormPps { broadcast: Some(1), multicast: None, unknown_unicast: Some(2) });
        let t = Instant::from_secs(5);
        assert_eq!(storm.admit(FloodClass::Broadcast, t), Ok(()));
        assert_eq!(storm.admit(FloodClass::Broadcast, t), Err(DropReason::StormBroadcast));
        assert!((0..1000).all(|_| storm.admit(FloodClass::Multicast, t).is_ok()));
        assert_eq!(storm.admit(FloodClass::UnknownUnicast, t), Ok(()));
        assert_eq!(storm.admit(FloodClass::UnknownUnicast, t), Ok(()));
        assert_eq!(storm.admit(FloodClass::UnknownUnicast, t), Err(DropReason::StormUnknownUnicast));
    }

    #[test]
    fn workers_share_one_budget() {
        let storm = std::sync::Arc::new(StormControl::new(&StormPps { broadcast: Some(1000), ..StormPps::default() }));
        let t = Instant::from_secs(3);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let storm = storm.clone();
                std::thread::spawn(move || (0..1000).filter(|_| storm.admit(FloodClass::Broadcast, t).is_ok()).count())
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn flood_classes_follow_the_destination() {
        assert_eq!(FloodClass::of(MacAddr::BROADCAST), FloodClass::Broadcast);
        assert_eq!(FloodClass::of("01:00:5e:00:00:01".parse().unwrap()), FloodClass::Multicast);
        assert_eq!(FloodClass::of("02:00:00:00:00:01".parse().unwrap()), FloodClass::UnknownUnicast);
    }

    #[test]
    fn allowed_sources() {
        let a: MacAddr = "02:00:00:00:00:01".parse().unwrap();
        let b: MacAddr = "02:00:00:00:00:02".parse().unwrap();
        assert!(PortModes::default().allows_source(b));
        let modes = PortModes { allowed_macs: vec![a], ..PortModes::default() };
        assert!(modes.allows_source(a) && !modes.allows_source(b));
        assert!(!modes.is_plain());
    }
}
