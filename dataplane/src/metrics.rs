//! Per-port counters: frames and bytes each way, and drops by named reason.
//!
//! Counters are plain integers owned by the dataplane thread (no atomics, no locks); the
//! control plane reads a snapshot through the switch's job channel.

use serde::Serialize;

use crate::verdict::DropReason;

/// One counter per [`DropReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::COUNT]);

impl Default for DropCounts {
    fn default() -> Self {
        DropCounts([0; DropReason::COUNT])
    }
}

impl DropCounts {
    /// Counts one drop.
    pub fn add(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }

    /// Counts `n` drops.
    pub fn add_many(&mut self, reason: DropReason, n: u64) {
        self.0[reason.index()] += n;
    }

    /// The count for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &DropCounts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0.iter()) {
            *mine += theirs;
        }
    }

    /// Each reason with its count, in counter order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }
}

impl Serialize for DropCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(DropReason::COUNT))?;
        for (reason, count) in self.iter() {
            map.serialize_entry(reason.name(), &count)?;
        }
        map.end()
    }
}

/// A port's traffic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PortCounters {
    /// Frames read from the port.
    pub rx_frames: u64,
    /// Bytes read from the port (Ethernet header included, no FCS).
    pub rx_bytes: u64,
    /// Frames written to the port.
    pub tx_frames: u64,
    /// Bytes written to the port.
    pub tx_bytes: u64,
    /// Frames dropped, by reason: ingress reasons count on the port a frame came in on,
    /// egress reasons on the port it could not go out of.
    pub drops: DropCounts,
}

impl PortCounters {
    /// Adds `other`'s counts to these (one worker's to another's).
    pub fn merge(&mut self, other: &PortCounters) {
        self.rx_frames += other.rx_frames;
        self.rx_bytes += other.rx_bytes;
        self.tx_frames += other.tx_frames;
        self.tx_bytes += other.tx_bytes;
        self.drops.merge(&other.drops);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_count_by_reason() {
        let mut drops = DropCounts::default();
        drops.add(DropReason::Runt);
        drops.add(DropReason::Runt);
        drops.add(DropReason::NoRoom);
        assert_eq!(drops.get(DropReason::Runt), 2);
        assert_eq!(drops.get(DropReason::NoRoom), 1);
        assert_eq!(drops.get(DropReason::Oversize), 0);
        assert_eq!(drops.total(), 3);
    }

    #[test]
    fn workers_counters_add_up() {
        let mut a = PortCounters { rx_frames: 1, rx_bytes: 60, tx_frames: 2, tx_bytes: 120, ..Default::default() };
        a.drops.add(DropReason::Runt);
        let mut b = PortCounters { rx_frames: 10, rx_bytes: 600, tx_frames: 20, tx_bytes: 1200, ..Default::default() };
        b.drops.add(DropReason::Runt);
        b.drops.add(DropReason::NoRoom);
        a.merge(&b);
        assert_eq!((a.rx_frames, a.rx_bytes, a.tx_frames, a.tx_bytes), (11, 660, 22, 1320));
        assert_eq!((a.drops.get(DropReason::Runt), a.drops.get(DropReason::NoRoom)), (2, 1));
    }
}
