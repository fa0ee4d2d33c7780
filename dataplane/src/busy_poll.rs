//! When a worker spins on its ports instead of sleeping: the busy-poll policy, as plain data
//! with time passed in.
//!
//! Sleeping costs a wake-up (the scheduler, a context switch, a cold cache) each time a frame
//! arrives at an idle worker: tens of microseconds on every request and every reply of a
//! request-response exchange. Spinning removes that, but a spinning worker holds a core; where
//! the cores are shared with the hosts' own stacks (every small machine, and this project's
//! benchmarks), that core is taken from the senders and receivers exactly when traffic is
//! dense — and dense traffic does not need it, because frames then arrive in batches that a
//! wake-up serves at once.
//!
//! So [`BusyPoll::Adaptive`], the default, spins only while traffic is *flowing and sparse*:
//! for [`ADAPTIVE_WINDOW`] after a frame, and only while the worker has seen at most
//! [`SPARSE_FRAMES`] frames in the current and the previous [`RATE_PERIOD`]. Idle, it sleeps;
//! dense, it sleeps and lets batches build; a ping or a request-response exchange finds it
//! awake, for its requests as well as its replies. An adaptive spin yields the core between
//! polls (`sched_yield`), so a host's stack that wants the core gets it first. A short window
//! would not do: a request arriving after a gap of a few milliseconds would still find the
//! worker asleep, and only its reply would be spared the wake-up (measured: 48 µs added to a
//! ping's round trip with a 100 µs window, 16 µs when always polling).
//! A spin that finds the core contended stops: when the next poll comes more than
//! [`CONTENDED_GAP`] after a spin's (the worker was left waiting behind other runnable tasks —
//! a yielding task has spent its claim on the core, so it waits longer than a sleeping one
//! that wakes), the worker sleeps for [`CONTENDED_BACKOFF`]: on a machine with more runnable
//! tasks than cores, a woken sleeper is served sooner than a yielding spinner.
//! [`BusyPoll::Window`] spins after every frame whatever the rate, without yielding (Open
//! vSwitch's PMD threads and DPDK poll all the time); [`BusyPoll::Off`] never spins.

use std::time::Duration;

use crate::time::Instant;

/// How long an adaptive worker keeps polling after a frame: traffic whose frames come closer
/// together than this is "flowing" (a ping every 20 ms, an exchange of requests and replies);
/// a worker that sees no frame for this long is idle and sleeps.
pub const ADAPTIVE_WINDOW: Duration = Duration::from_millis(50);

/// The period over which an adaptive worker counts frames to tell sparse traffic from dense.
pub const RATE_PERIOD: Duration = Duration::from_millis(1);

/// Frames per [`RATE_PERIOD`] up to which traffic counts as sparse (16 000 frames/s): above
/// it, wake-ups are already frequent and batches pay for them.
pub const SPARSE_FRAMES: u32 = 16;

/// A gap between a spin and the next poll longer than this means the worker waited for the
/// core: it is contended, and spinning costs latency instead of saving it.
pub const CONTENDED_GAP: Duration = Duration::from_micros(200);

/// How long an adaptive worker sleeps instead of spinning after finding the core contended.
pub const CONTENDED_BACKOFF: Duration = Duration::from_millis(20);

/// The busy-poll mode, as chosen on the command line.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BusyPoll {
    /// Always sleep until the next event.
    Off,
    /// Spin for this long after every frame, whatever the rate.
    Window(Duration),
    /// Spin, yielding the core between polls, for [`ADAPTIVE_WINDOW`] after a frame while
    /// traffic is sparse (the default).
    Adaptive,
}

/// What a worker's busy polling did, for `show` (summed over the workers there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusyPollCounts {
    /// Zero-timeout polls made instead of sleeping.
    pub spins: u64,
    /// Times a spin found the core contended and the worker went back to sleeping.
    pub backoffs: u64,
}

impl BusyPoll {
    /// How `show` names it: `adaptive`, `off`, or `window` (with [`BusyPoll::window_us`]).
    pub fn name(self) -> &'static str {
        match self {
            BusyPoll::Off => "off",
            BusyPoll::Window(_) => "window",
            BusyPoll::Adaptive => "adaptive",
        }
    }

    /// The fixed window in microseconds, if it is one.
    pub fn window_us(self) -> Option<u64> {
        match self {
            BusyPoll::Window(d) => Some(d.as_micros() as u64),
            _ => None,
        }
    }

    /// `--busy-poll-us`: absent means adaptive, 0 off, anything else that window.
    pub fn from_micros(micros: Option<u64>) -> BusyPoll {
        match micros {
            None => BusyPoll::Adaptive,
            Some(0) => BusyPoll::Off,
            Some(us) => BusyPoll::Window(Duration::from_micros(us)),
        }
    }
}

/// One worker's busy-poll state: when it last saw a frame and how many it saw lately.
#[derive(Clone, Debug)]
pub struct BusyPoller {
    mode: BusyPoll,
    last_frame: Option<Instant>,
    period_start: Instant,
    frames_this_period: u32,
    frames_last_period: u32,
    /// When the last spin was decided (adaptive), to notice a contended core.
    last_spin: Option<Instant>,
    /// No adaptive spinning before this (the core was found contended).
    backoff_until: Instant,
    spins: u64,
    backoffs: u64,
}

impl BusyPoller {
    /// A poller in `mode` that has seen no frame yet.
    pub fn new(mode: BusyPoll) -> BusyPoller {
        BusyPoller {
            mode,
            last_frame: None,
            period_start: Instant::ZERO,
            frames_this_period: 0,
            frames_last_period: 0,
            last_spin: None,
            backoff_until: Instant::ZERO,
            spins: 0,
            backoffs: 0,
        }
    }

    /// The mode it runs in.
    pub fn mode(&self) -> BusyPoll {
        self.mode
    }

    /// Records that a turn at `now` read `frames` frames.
    pub fn note_turn(&mut self, now: Instant, frames: usize) {
        self.roll_period(now);
        if frames > 0 {
            self.last_frame = Some(now);
            let frames = u32::try_from(frames).unwrap_or(u32::MAX);
            self.frames_this_period = self.frames_this_period.saturating_add(frames);
        }
    }

    /// Whether the worker should poll again at once (`true`) or sleep until an event.
    pub fn should_spin(&mut self, now: Instant) -> bool {
        let Some(last) = self.last_frame else { return false };
        let since = now.saturating_duration_since(last);
        let spin = match self.mode {
            BusyPoll::Off => false,
            BusyPoll::Window(window) => since < window,
            BusyPoll::Adaptive => {
                self.roll_period(now);
                if let Some(spun) = self.last_spin.take() {
                    if now.saturating_duration_since(spun) > CONTENDED_GAP {
                        self.backoff_until = now + CONTENDED_BACKOFF;
                        self.backoffs += 1;
                    }
                }
                let spin = now >= self.backoff_until
                    && since < ADAPTIVE_WINDOW
                    && self.frames_this_period.max(self.frames_last_period) <= SPARSE_FRAMES;
                if spin {
                    self.last_spin = Some(now);
                }
                spin
            }
        };
        self.spins += u64::from(spin);
        spin
    }

    /// Whether a spin should yield the core between polls.
    pub fn yields(&self) -> bool {
        self.mode == BusyPoll::Adaptive
    }

    /// Zero-timeout polls made so far instead of sleeping.
    pub fn spins(&self) -> u64 {
        self.spins
    }

    /// Times a spin found the core contended and the worker went back to sleeping.
    pub fn backoffs(&self) -> u64 {
        self.backoffs
    }

    /// Both counters.
    pub fn counts(&self) -> BusyPollCounts {
        BusyPollCounts { spins: self.spins, backoffs: self.backoffs }
    }

    fn roll_period(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.period_start);
        if elapsed < RATE_PERIOD {
            return;
        }
        // The period just ended is the previous one only if it ended less than a period ago.
        self.frames_last_period = if elapsed < RATE_PERIOD * 2 { self.frames_this_period } else { 0 };
        self.frames_this_period = 0;
        self.period_start = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_us(us: u64) -> Instant {
        Instant::from_nanos(us * 1000)
    }

    #[test]
    fn off_never_spins_and_nothing_spins_before_the_first_frame() {
        let mut off = BusyPoller::new(BusyPoll::Off);
        off.note_turn(at_us(10), 1);
        assert!(!off.should_spin(at_us(11)));
        for mode in [BusyPoll::Adaptive, BusyPoll::Window(Duration::from_secs(1))] {
            assert!(!BusyPoller::new(mode).should_spin(at_us(5)), "{mode:?}");
        }
    }

    #[test]
    fn a_window_spins_after_every_frame_whatever_the_rate() {
        let mut poller = BusyPoller::new(BusyPoll::Window(Duration::from_micros(500)));
        for us in 0..1000 {
            poller.note_turn(at_us(us), 64); // 64 M frames/s: far past sparse
        }
        assert!(poller.should_spin(at_us(1200)));
        assert!(!poller.should_spin(at_us(1500)));
    }

    #[test]
    fn adaptive_spins_for_a_window_after_a_lone_frame_then_sleeps() {
        let mut poller = BusyPoller::new(BusyPoll::Adaptive);
        poller.note_turn(at_us(5000), 1); // a ping's request
        for us in (5001..55_000).step_by(10) {
            assert!(poller.should_spin(at_us(us)), "at {us} µs");
        }
        assert!(!poller.should_spin(at_us(55_001)), "the window has passed: sleep");
        poller.note_turn(at_us(205_000), 1); // the next ping, 200 ms later
        assert!(poller.should_spin(at_us(205_050)));
        assert_eq!(poller.spins(), 5001);
        assert_eq!(poller.backoffs(), 0);
        assert!(poller.yields());
        assert!(!BusyPoller::new(BusyPoll::Window(Duration::from_secs(1))).yields());
    }

    #[test]
    fn adaptive_sleeps_while_traffic_is_dense_and_spins_again_once_it_thins() {
        let mut poller = BusyPoller::new(BusyPoll::Adaptive);
        // 64 frames per 10 µs turn for 3 ms: 6.4 M frames/s.
        for turn in 0..300 {
            poller.note_turn(at_us(1000 + turn * 10), 64);
            assert!(!poller.should_spin(at_us(1000 + turn * 10 + 1)), "dense at turn {turn}");
        }
        // The flood ends at 4 ms. One frame in the next period: the previous one was dense.
        poller.note_turn(at_us(4500), 1);
        assert!(!poller.should_spin(at_us(4501)), "the period before was dense");
        // Two periods on, only sparse frames are remembered.
        poller.note_turn(at_us(6100), 1);
        assert!(poller.should_spin(at_us(6101)));
    }

    #[test]
    fn adaptive_counts_up_to_the_sparse_limit_per_period() {
        let mut poller = BusyPoller::new(BusyPoll::Adaptive);
        for i in 0..u64::from(SPARSE_FRAMES) {
            poller.note_turn(at_us(2000 + i * 50), 1);
            assert!(poller.should_spin(at_us(2000 + i * 50 + 10)), "frame {i}");
        }
        poller.note_turn(at_us(2900), 1); // one past the limit within the same millisecond
        assert!(!poller.should_spin(at_us(2910)));
    }

    #[test]
    fn a_spin_that_waited_for_the_core_turns_into_sleep_for_a_while() {
        let mut poller = BusyPoller::new(BusyPoll::Adaptive);
        poller.note_turn(at_us(1000), 1);
        assert!(poller.should_spin(at_us(1001)));
        assert!(poller.should_spin(at_us(1010)));
        // The next poll comes 500 µs after the last spin: the worker waited behind others.
        assert!(!poller.should_spin(at_us(1510)));
        assert_eq!(poller.backoffs(), 1);
        poller.note_turn(at_us(1600), 1); // frames still come, sparse
        assert!(!poller.should_spin(at_us(1601)), "backing off");
        assert!(!poller.should_spin(at_us(21_000)), "still backing off");
        poller.note_turn(at_us(21_600), 1);
        assert!(poller.should_spin(at_us(21_601)), "the backoff is over");
        // Spinning on till the window closes (every poll prompt), then sleeping: no contention.
        let mut us = 21_611;
        while poller.should_spin(at_us(us)) {
            us += 10;
        }
        assert_eq!(us, 71_601, "the first poll 50 ms after the frame at 21 600 µs sleeps");
        assert!(!poller.should_spin(at_us(90_000)));
        poller.note_turn(at_us(90_500), 1);
        assert!(poller.should_spin(at_us(90_501)));
        assert_eq!(poller.backoffs(), 1);
    }

    #[test]
    fn the_command_line_maps_onto_the_modes() {
        assert_eq!(BusyPoll::from_micros(None), BusyPoll::Adaptive);
        assert_eq!(BusyPoll::from_micros(Some(0)), BusyPoll::Off);
        assert_eq!(BusyPoll::from_micros(Some(30)), BusyPoll::Window(Duration::from_micros(30)));
    }
}
