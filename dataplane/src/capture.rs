//! Packet capture taps: a port being captured carries [`Tap`]s, and the forwarding path copies
//! each frame it sees there (after ingress VLAN translation, before egress tagging) into a
//! capture's [`Sink`], a fixed pool of preallocated slots. Nothing is allocated per frame; a
//! capture whose reader is behind loses frames and counts them per port. A port nobody captures
//! pays one branch on an empty list per frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::VlanId;
use crate::time::Instant;
use crate::verdict::DropReason;
use crate::vlan::Classified;

/// The bytes of a frame a capture keeps (more are cut off; the original length is recorded).
pub const SNAPLEN: usize = 2048;

/// Slots in one capture's pool: at most this many frames wait for the reader.
pub const POOL: usize = 512;

/// Which way a frame went through the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received on the port (captured after ingress VLAN translation).
    Inbound,
    /// Sent out of the port (captured before egress tagging).
    Outbound,
}

/// One captured frame.
#[derive(Debug)]
pub struct Record {
    /// The capture's interface: the index of the port in the capture's port list.
    pub interface: u32,
    /// Which way it went.
    pub direction: Direction,
    /// Why it was dropped (captures that asked for drops only).
    pub drop: Option<DropReason>,
    /// Wall-clock time, in nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// The frame's length at the capture point.
    pub orig_len: usize,
    /// The bytes kept (at most [`SNAPLEN`]).
    pub len: usize,
    /// The bytes: `data[..len]`.
    pub data: Box<[u8]>,
}

impl Record {
    /// The kept bytes.
    pub fn frame(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

/// One capture's pool and queue, shared by the workers writing into it and the reader.
#[derive(Debug)]
pub struct Sink {
    free_tx: Sender<Box<Record>>,
    free_rx: Receiver<Box<Record>>,
    full_tx: Sender<Box<Record>>,
    full_rx: Receiver<Box<Record>>,
    drops: bool,
    /// Frames lost for want of a free slot, per interface.
    lost: Box<[AtomicU64]>,
}

impl Sink {
    /// A capture of `interfaces` ports with `pool` slots; `drops`: dropped frames too.
    pub fn new(interfaces: usize, pool: usize, drops: bool) -> Arc<Sink> {
        let pool = pool.max(1);
        let (free_tx, free_rx) = crossbeam_channel::bounded(pool);
        let (full_tx, full_rx) = crossbeam_channel::bounded(pool);
        for _ in 0..pool {
            let record = Record {
                interface: 0,
                direction: Direction::Inbound,
                drop: None,
                timestamp_ns: 0,
                orig_len: 0,
                len: 0,
                data: vec![0u8; SNAPLEN].into_boxed_slice(),
            };
            let _ = free_tx.send(Box::new(record));
        }
        let lost = (0..interfaces).map(|_| AtomicU64::new(0)).collect();
        Arc::new(Sink { free_tx, free_rx, full_tx, full_rx, drops, lost })
    }

    /// Whether the capture wants dropped frames.
    pub fn wants_drops(&self) -> bool {
        self.drops
    }

    /// Copies `frame` (as classified by `class`) into a free slot and queues it; counts it lost
    /// when no slot is free. The copy shows the frame as the switch sees it inside: the tag
    /// bytes the port stripped are gone and, if the frame is in a VLAN, an 802.1Q tag of that
    /// VLAN follows the MAC addresses.
    pub fn put(
        &self,
        interface: u32,
        direction: Direction,
        drop: Option<DropReason>,
        timestamp_ns: u64,
        frame: &[u8],
        class: &Classified,
    ) {
        let Ok(mut record) = self.free_rx.try_recv() else {
            return self.count_lost(interface);
        };
        let (len, orig_len) = inner_view(frame, class, &mut record.data);
        record.interface = interface;
        record.direction = direction;
        record.drop = drop;
        record.timestamp_ns = timestamp_ns;
        record.len = len;
        record.orig_len = orig_len;
        if self.full_tx.try_send(record).is_err() {
            self.count_lost(interface);
        }
    }

    fn count_lost(&self, interface: u32) {
        if let Some(lost) = self.lost.get(interface as usize) {
            lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The next captured frame, waiting up to `timeout`. Give it back with [`Sink::recycle`].
    pub fn next(&self, timeout: Duration) -> Option<Box<Record>> {
        self.full_rx.recv_timeout(timeout).ok()
    }

    /// The next captured frame if one is waiting.
    pub fn try_next(&self) -> Option<Box<Record>> {
        self.full_rx.try_recv().ok()
    }

    /// Returns a slot to the pool.
    pub fn recycle(&self, record: Box<Record>) {
        let _ = self.free_tx.try_send(record);
    }

    /// Frames lost so far, per interface.
    pub fn lost(&self) -> Vec<u64> {
        self.lost.iter().map(|l| l.load(Ordering::Relaxed)).collect()
    }
}

/// Writes into `out` the frame as the switch sees it inside (see [`Sink::put`]), cut at
/// `out.len()`; returns the bytes written and the frame's whole length.
pub fn inner_view(frame: &[u8], class: &Classified, out: &mut [u8]) -> (usize, usize) {
    if frame.len() < 12 + class.strip || (class.strip == 0 && class.vlan == VlanId::NONE) {
        let len = frame.len().min(out.len());
        out[..len].copy_from_slice(&frame[..len]);
        return (len, frame.len());
    }
    let tag: &[u8] = if class.vlan == VlanId::NONE {
        &[]
    } else {
        let tci = (u16::from(class.pcp & 7) << 13) | class.vlan.get();
        let [c, d] = tci.to_be_bytes();
        &[0x81, 0x00, c, d][..]
    };
    let rest = &frame[12 + class.strip..];
    let orig_len = 12 + tag.len() + rest.len();
    let mut len = 0;
    for part in [&frame[..12], tag, rest] {
        let n = part.len().min(out.len() - len);
        out[len..len + n].copy_from_slice(&part[..n]);
        len += n;
    }
    (len, orig_len)
}

/// A capture's tap on one port, as one worker holds it.
#[derive(Debug, Clone)]
pub struct Tap {
    /// The capture.
    pub sink: Arc<Sink>,
    /// The port's interface number in the capture.
    pub interface: u32,
    /// Wall-clock time minus this worker's clock, in nanoseconds (read when the tap was put).
    pub wall_offset_ns: u64,
}

/// Hands a frame to every tap in `taps` (those wanting drops only, for a dropped frame).
pub fn tap_all(
    taps: &[Tap],
    direction: Direction,
    drop: Option<DropReason>,
    frame: &[u8],
    class: &Classified,
    now: Instant,
) {
    for tap in taps {
        if drop.is_some() && !tap.sink.wants_drops() {
            continue;
        }
        let timestamp = now.as_nanos().saturating_add(tap.wall_offset_ns);
        tap.sink.put(tap.interface, direction, drop, timestamp, frame, class);
    }
}

/// The classification of a frame seen as it arrived (a dropped one: its VLAN is unknown).
pub const RAW: Classified = Classified { vlan: VlanId::NONE, pcp: 0, strip: 0 };

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tagged: Option<u16>) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        if let Some(vid) = tagged {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x06, 1, 2, 3]);
        f
    }

    #[test]
    fn an_untagged_frame_in_a_vlan_is_seen_tagged_inside() {
        let class = Classified { vlan: VlanId::new(10).unwrap(), pcp: 0, strip: 0 };
        let mut out = [0u8; SNAPLEN];
        let (len, orig) = inner_view(&frame(None), &class, &mut out);
        assert_eq!((len, orig), (21, 21));
        assert_eq!(&out[..len], &frame(Some(10))[..]);
    }

    #[test]
    fn a_translated_tag_is_replaced_and_a_stripped_one_without_vlan_goes() {
        let class = Classified { vlan: VlanId::new(20).unwrap(), pcp: 5, strip: 4 };
        let mut out = [0u8; SNAPLEN];
        let (len, _) = inner_view(&frame(Some(99)), &class, &mut out);
        let mut want = frame(Some(20));
        want[14] |= 5 << 5;
        assert_eq!(&out[..len], &want[..]);
        let class = Classified { vlan: VlanId::NONE, pcp: 0, strip: 4 };
        let (len, _) = inner_view(&frame(Some(99)), &class, &mut out);
        assert_eq!(&out[..len], &frame(None)[..]);
    }

    #[test]
    fn long_frames_are_cut_at_the_slot_and_keep_their_length() {
        let mut f = frame(None);
        f.resize(3000, 7);
        let class = Classified { vlan: VlanId::new(10).unwrap(), pcp: 0, strip: 0 };
        let mut out = [0u8; 100];
        assert_eq!(inner_view(&f, &class, &mut out), (100, 3004));
    }

    #[test]
    fn a_full_pool_counts_losses_per_interface_and_recycling_frees_slots() {
        let sink = Sink::new(2, 2, false);
        for _ in 0..5 {
            sink.put(1, Direction::Outbound, None, 7, &frame(None), &RAW);
        }
        assert_eq!(sink.lost(), vec![0, 3]);
        let record = sink.try_next().unwrap();
        assert_eq!((record.interface, record.direction, record.timestamp_ns), (1, Direction::Outbound, 7));
        assert_eq!(record.frame(), &frame(None)[..]);
        sink.recycle(record);
        sink.put(0, Direction::Inbound, None, 8, &frame(None), &RAW);
        assert_eq!(sink.lost(), vec![0, 3]);
    }

    #[test]
    fn drops_reach_only_captures_that_asked() {
        let (plain, drops) = (Sink::new(1, 4, false), Sink::new(1, 4, true));
        let taps = [
            Tap { sink: plain.clone(), interface: 0, wall_offset_ns: 0 },
            Tap { sink: drops.clone(), interface: 0, wall_offset_ns: 1000 },
        ];
        tap_all(&taps, Direction::Inbound, Some(DropReason::Runt), &frame(None), &RAW, Instant::from_nanos(5));
        assert!(plain.try_next().is_none());
        let record = drops.try_next().unwrap();
        assert_eq!((record.drop, record.timestamp_ns), (Some(DropReason::Runt), 1005));
    }
}
