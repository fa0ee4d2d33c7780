//! Keeps the worker threads' FDB replicas in step: each worker forwards from its own copy of
//! the table and tells the others what it learned (and what the operator changed) over bounded
//! channels; they apply it between batches. Nothing on the forwarding path takes a lock, and a
//! single-worker switch has no peers and pays nothing.
//!
//! The replicas are eventually consistent: until an update arrives, a worker floods a frame
//! another worker could already unicast, which is what a bridge does for an unknown address
//! anyway. An update a full inbox refuses is counted, not waited for.

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::fdb::Fdb;
use crate::time::Instant;
use crate::wire::MacAddr;
use crate::{PortId, VlanId};

/// Updates one worker can hold before its peers' further updates are counted as lost.
pub const INBOX_CAPACITY: usize = 16_384;

/// A change to the table, as one worker tells the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdbUpdate {
    /// A frame from `mac` in `vlan` arrived on `port` (new, moved, or still alive).
    Learned {
        /// The VLAN.
        vlan: VlanId,
        /// The source address.
        mac: MacAddr,
        /// Where it arrived.
        port: PortId,
    },
    /// The operator added a static entry.
    Static {
        /// The VLAN.
        vlan: VlanId,
        /// The address.
        mac: MacAddr,
        /// Its port.
        port: PortId,
    },
    /// The operator removed an entry.
    Removed {
        /// The VLAN.
        vlan: VlanId,
        /// The address.
        mac: MacAddr,
    },
    /// Learned entries were flushed (on one port, or all).
    Flushed {
        /// The port, or every port.
        port: Option<PortId>,
    },
    /// A change to the multicast database (applied by [`crate::bridge::Bridge::apply_update`];
    /// the FDB ignores it).
    Mcast(crate::mdb::MdbUpdate),
    /// A datagram on VXLAN port `port` taught one worker's replica of the tunnel that `mac`
    /// in `vlan` (the tunnel's VLAN) lives behind the remote VTEP `remote`
    /// ([`crate::vxlan::Vxlan::learn_shared`]; the FDB ignores it).
    Tunnel {
        /// The VXLAN port.
        port: PortId,
        /// The VLAN the VNI maps to.
        vlan: VlanId,
        /// The inner source address.
        mac: MacAddr,
        /// The remote VTEP's underlay address.
        remote: std::net::IpAddr,
    },
    /// One worker's frame said `mac` answers for `ip` in `vlan` (ARP or neighbour discovery,
    /// for ARP/ND suppression: [`crate::neigh::Neighbours`]; the FDB ignores it).
    Neighbour {
        /// The VLAN.
        vlan: VlanId,
        /// The address asked for.
        ip: std::net::IpAddr,
        /// Who answers for it.
        mac: MacAddr,
    },
}

impl FdbUpdate {
    /// Applies the update to `fdb` at `now`.
    pub fn apply(self, fdb: &mut Fdb, now: Instant) {
        match self {
            FdbUpdate::Learned { vlan, mac, port } => {
                fdb.learn(vlan, mac, port, now);
            }
            FdbUpdate::Static { vlan, mac, port } => {
                let _ = fdb.add_static(vlan, mac, port);
            }
            FdbUpdate::Removed { vlan, mac } => {
                fdb.remove(vlan, mac);
            }
            FdbUpdate::Flushed { port } => {
                fdb.flush(port);
            }
            FdbUpdate::Mcast(_) | FdbUpdate::Tunnel { .. } | FdbUpdate::Neighbour { .. } => {}
        }
    }
}

/// One worker's end of the mesh: its inbox and a sender into every other worker's inbox.
#[derive(Debug)]
pub struct FdbSync {
    inbox: Receiver<FdbUpdate>,
    peers: Vec<Sender<FdbUpdate>>,
    /// Updates a peer's full inbox refused.
    pub lost: u64,
    /// Updates received and applied.
    pub applied: u64,
}

impl FdbSync {
    /// An end with no peers (a single worker).
    pub fn solo() -> FdbSync {
        FdbSync::mesh(1).pop().unwrap_or_else(|| unreachable!("mesh(1) has one end"))
    }

    /// `workers` ends, each wired to all the others.
    pub fn mesh(workers: usize) -> Vec<FdbSync> {
        let channels: Vec<(Sender<FdbUpdate>, Receiver<FdbUpdate>)> =
            (0..workers).map(|_| crossbeam_channel::bounded(if workers > 1 { INBOX_CAPACITY } else { 0 })).collect();
        (0..workers)
            .map(|me| FdbSync {
                inbox: channels[me].1.clone(),
                peers: channels.iter().enumerate().filter(|&(i, _)| i != me).map(|(_, (tx, _))| tx.clone()).collect(),
                lost: 0,
                applied: 0,
            })
            .collect()
    }

    /// Whether there is anyone to tell.
    pub fn has_peers(&self) -> bool {
        !self.peers.is_empty()
    }

    /// Tells every peer; a full or closed inbox counts the update as lost.
    pub fn publish(&mut self, update: FdbUpdate) {
        for peer in &self.peers {
            match peer.try_send(update) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.lost += 1,
            }
        }
    }

    /// Applies every update waiting in the inbox to `fdb`; returns how many.
    pub fn apply_pending(&mut self, fdb: &mut Fdb, now: Instant) -> usize {
        self.apply_pending_with(|update| update.apply(fdb, now))
    }

    /// Hands every update waiting in the inbox to `apply`; returns how many.
    pub fn apply_pending_with(&mut self, mut apply: impl FnMut(FdbUpdate)) -> usize {
        let mut applied = 0;
        while let Ok(update) = self.inbox.try_recv() {
            apply(update);
            applied += 1;
        }
        self.applied += applied as u64;
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdb::{EntryKind, FdbConfig};
    use std::time::Duration;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, n])
    }

    fn at(secs: u64) -> Instant {
        Instant::ZERO + Duration::from_secs(secs)
    }

    #[test]
    fn every_worker_hears_the_others_and_not_itself() {
        let mut ends = FdbSync::mesh(3);
        let mut tables: Vec<Fdb> = (0..3).map(|_| Fdb::new(FdbConfig::default())).collect();
        let learned = FdbUpdate::Learned { vlan: VlanId::NONE, mac: mac(1), port: PortId(2) };
        learned.apply(&mut tables[0], at(1));
        ends[0].publish(learned);
        assert_eq!(ends[0].apply_pending(&mut tables[0], at(1)), 0, "no echo to the sender");
        for w in 1..3 {
            assert_eq!(ends[w].apply_pending(&mut tables[w], at(1)), 1);
            assert_eq!(tables[w].lookup(VlanId::NONE, mac(1)), Some(PortId(2)));
        }
        ends[2].publish(FdbUpdate::Static { vlan: VlanId::NONE, mac: mac(9), port: PortId(1) });
        ends[2].publish(FdbUpdate::Flushed { port: Some(PortId(2)) });
        for w in 0..2 {
            assert_eq!(ends[w].apply_pending(&mut tables[w], at(2)), 2);
            assert_eq!(tables[w].lookup(VlanId::NONE, mac(1)), None, "flushed");
            let entry = tables[w].entries(at(2)).find(|e| e.mac == mac(9)).expect("static entry");
            assert_eq!((entry.port, entry.kind), (PortId(1), EntryKind::Static));
        }
        ends[1].publish(FdbUpdate::Removed { vlan: VlanId::NONE, mac: mac(9) });
        assert_eq!(ends[0].apply_pending(&mut tables[0], at(3)), 1);
        assert!(tables[0].is_empty());
    }

    #[test]
    fn a_full_inbox_counts_updates_as_lost_instead_of_waiting() {
        let mut ends = FdbSync::mesh(2);
        let update = FdbUpdate::Flushed { port: None };
        for _ in 0..INBOX_CAPACITY + 5 {
            ends[0].publish(update);
        }
        assert_eq!(ends[0].lost, 5);
        let mut table = Fdb::new(FdbConfig::default());
        assert_eq!(ends[1].apply_pending(&mut table, at(0)), INBOX_CAPACITY);
        assert_eq!(ends[1].applied, INBOX_CAPACITY as u64);
    }

    #[test]
    fn a_single_worker_has_no_peers() {
        let mut solo = FdbSync::solo();
        assert!(!solo.has_peers());
        solo.publish(FdbUpdate::Flushed { port: None });
        assert_eq!(solo.lost, 0);
    }

    #[test]
    fn a_busy_entry_is_shared_again_once_per_quarter_of_the_aging_time() {
        let mut fdb = Fdb::new(FdbConfig { aging: Duration::from_secs(40), max_learned: 16 });
        assert_eq!(fdb.share_interval(), Duration::from_secs(10));
        use crate::fdb::LearnOutcome::*;
        assert_eq!(fdb.learn(VlanId::NONE, mac(1), PortId(0), at(0)), Learned);
        assert_eq!(fdb.learn(VlanId::NONE, mac(1), PortId(0), at(5)), Refreshed { share: false });
        assert_eq!(fdb.learn(VlanId::NONE, mac(1), PortId(0), at(10)), Refreshed { share: true });
        assert_eq!(fdb.learn(VlanId::NONE, mac(1), PortId(0), at(19)), Refreshed { share: false });
        assert_eq!(fdb.learn(VlanId::NONE, mac(1), PortId(1), at(20)), Moved { from: PortId(0) });
        assert_eq!(fdb.learn(VlanId::NONE, mac(1), PortId(1), at(29)), Refreshed { share: false });
        assert_eq!(fdb.learn(VlanId::NONE, mac(1), PortId(1), at(30)), Refreshed { share: true });
    }
}
