//! What a tunnel port knows of its path MTU, and the pace of the "too big" replies it sends
//! back to senders, as plain data with time passed in.
//!
//! - [`PathMtu`]: the largest inner IP packet the underlay path takes, as last measured (the
//!   kernel's route MTU for a remote, less the encapsulation). It is measured when a send is
//!   refused as too big, or before a GSO super-frame is cut when nothing is known; it is
//!   trusted for [`PATH_MTU_EXPIRY`] (the kernel keeps a learned path MTU as long), then
//!   measured again, so a path that grows is noticed.
//! - [`ReplyLimiter`]: a token bucket per sender (by source address, hashed with a per-table
//!   secret into a fixed array of buckets: nothing to fill, nothing a sender can aim at another
//!   sender's bucket with). A sender gets [`BURST`] replies at once and [`PER_SECOND`] a second
//!   after that, so the replies cannot be used to amplify a flood; one reply is all a sender
//!   needs to lower its path MTU.

use std::net::IpAddr;
use std::time::Duration;

use crate::time::Instant;

/// How long a measured path MTU is trusted.
pub const PATH_MTU_EXPIRY: Duration = Duration::from_secs(600);
/// Replies a sender may get at once.
pub const BURST: u32 = 10;
/// Replies a sender may get a second, once its burst is spent.
pub const PER_SECOND: u32 = 10;
/// Buckets in a limiter (senders hashing to the same one share it).
pub const BUCKETS: usize = 64;

/// The largest inner IP packet the path takes, as last measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathMtu {
    measured: Option<(usize, Instant)>,
}

impl PathMtu {
    /// The path MTU (of inner IP packet) if measured within [`PATH_MTU_EXPIRY`] of `now`.
    pub fn get(&self, now: Instant) -> Option<usize> {
        self.measured.filter(|(_, at)| now.saturating_duration_since(*at) < PATH_MTU_EXPIRY).map(|(mtu, _)| mtu)
    }

    /// Records a measurement at `now`.
    pub fn set(&mut self, mtu: usize, now: Instant) {
        self.measured = Some((mtu, now));
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Credit, in time: one reply costs `1 / PER_SECOND` seconds of it.
    credit: Duration,
    last: Instant,
}

/// Token buckets per sender.
#[derive(Debug, Clone)]
pub struct ReplyLimiter {
    buckets: [Bucket; BUCKETS],
    secret: ahash::RandomState,
    /// Replies refused.
    pub refused: u64,
}

impl Default for ReplyLimiter {
    fn default() -> ReplyLimiter {
        ReplyLimiter {
            buckets: [Bucket { credit: COST * BURST, last: Instant::ZERO }; BUCKETS],
            secret: ahash::RandomState::new(),
            refused: 0,
        }
    }
}

const COST: Duration = Duration::from_nanos(1_000_000_000 / PER_SECOND as u64);

impl ReplyLimiter {
    /// Whether a reply to `sender` may go at `now` (and spends it if so).
    pub fn allow(&mut self, sender: IpAddr, now: Instant) -> bool {
        let index = (self.secret.hash_one(sender) % BUCKETS as u64) as usize;
        let bucket = &mut self.buckets[index];
        let elapsed = now.saturating_duration_since(bucket.last);
        bucket.credit = (bucket.credit + elapsed).min(COST * BURST);
        bucket.last = bucket.last.max(now);
        if bucket.credit >= COST {
            bucket.credit -= COST;
            true
        } else {
            self.refused += 1;
            false
        }
    }
}

/// The source address of the IP packet in the untagged Ethernet `frame`, if it carries one.
pub fn ip_source(frame: &[u8]) -> Option<IpAddr> {
    match frame.get(12..14)? {
        [0x08, 0x00] => {
            let b: [u8; 4] = frame.get(26..30)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        [0x86, 0xdd] => {
            let b: [u8; 16] = frame.get(22..38)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    #[test]
    fn a_sender_gets_a_burst_then_the_rate() {
        let mut limiter = ReplyLimiter::default();
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let allowed = (0..100).filter(|_| limiter.allow(a, at(1000))).count();
        assert_eq!(allowed, BURST as usize);
        assert_eq!(limiter.refused, 90);
        // One second later: PER_SECOND more.
        let allowed = (0..100).filter(|_| limiter.allow(a, at(2000))).count();
        assert_eq!(allowed, PER_SECOND as usize);
        // Over ten seconds of steady asking, about ten a second.
        let allowed = (0..10_000).filter(|i| limiter.allow(a, at(2000 + i))).count();
        assert!((99..=101).contains(&allowed), "{allowed}");
        // A long silence refills the burst, no more.
        let allowed = (0..100).filter(|_| limiter.allow(a, at(1_000_000))).count();
        assert_eq!(allowed, BURST as usize);
    }

    #[test]
    fn senders_mostly_do_not_share() {
        let mut limiter = ReplyLimiter::default();
        for _ in 0..BURST {
            limiter.allow(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), at(0));
        }
        // Of 32 other senders, most have their own bucket.
        let fresh = (2..34u8).filter(|&n| limiter.allow(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)), at(0))).count();
        assert!(fresh >= 28, "{fresh}");
    }

    #[test]
    fn a_path_mtu_is_trusted_for_a_while() {
        let mut p = PathMtu::default();
        assert_eq!(p.get(at(0)), None);
        p.set(1450, at(1000));
        assert_eq!(p.get(at(1000 + 599_000)), Some(1450));
        assert_eq!(p.get(at(1000 + 600_000)), None);
    }

    #[test]
    fn source_addresses() {
        let mut v4 = vec![0u8; 34];
        v4[12..14].copy_from_slice(&[0x08, 0]);
        v4[26..30].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(ip_source(&v4), Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))));
        assert_eq!(ip_source(&v4[..29]), None);
        let mut v6 = vec![0u8; 54];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        v6[37] = 1;
        assert_eq!(ip_source(&v6), Some(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)));
    }
}
