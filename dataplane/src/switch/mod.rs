//! The event loop: polls the ports, reads frames in bounded batches, asks the [`Bridge`]
//! where each goes, writes it out, and counts everything. It is the only clock reader.
//!
//! Rules it keeps (mio is edge-triggered):
//! - a readable port is read until `WouldBlock`, but at most [`READ_SHARE`] frames per turn
//!   ([`BATCH`] from a tunnel's socket); a port cut short stays on the ready list and is served
//!   again on the next turn, after the ports that became ready meanwhile, so one busy port
//!   cannot starve the rest;
//! - the clock is read once per turn and that `now` is used for every frame of the turn;
//! - the loop sleeps until the bridge's next deadline (FDB aging) or the next event, unless the
//!   busy-poll policy ([`crate::busy_poll`]) says to poll again at once;
//! - the control plane never touches switch state directly: it sends a [`Job`] (a closure)
//!   through a channel and wakes the loop, which runs it between batches. So there is no
//!   lock on the forwarding path, and replies see a consistent state.
//!
//! Nothing here allocates per frame: receive buffers are allocated once, counters are plain
//! integers, and the ready lists are swapped, not rebuilt.
//!
//! More than one core: with [`Switch::set_threads`] above 1, every port brings one I/O per
//! worker (a queue of a multi-queue TAP, a member of a packet-socket fanout group), and
//! [`Switch::run`] starts the other workers, each a loop like this one over its own I/O with
//! its own FDB replica ([`crate::fdb_sync`]) and counters. The kernel spreads flows across the
//! queues, so each flow stays on one worker and in order. The first worker is the one the
//! control plane talks to; the others publish their counters to it once per busy millisecond
//! and whenever they go idle. A VXLAN port is served by every worker, each with its own
//! socket and a replica of the tunnel's tables (what one learns behind a remote it shares like
//! an FDB update). A bond is served by every worker too, each on its own queue or socket of
//! every member: the first worker runs it (links, LACP, failovers) and sends the others a fresh
//! replica whenever what decides forwarding changes; they pass it the LACPDUs they receive.
//! Ports with one I/O (a VM's socket, a vhost-user device) are the first worker's alone: it
//! receives on them, and the others hand it the frames they forward toward them
//! ([`crate::handoff`]).

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use serde::Serialize;

use crate::PortId;
use crate::VlanId;
use crate::bond::{Bond, Failover, Transmit};
use crate::bridge::{Bridge, BridgePortConfig};
use crate::busy_poll::{BusyPoll, BusyPoller};
use crate::fdb::{FdbConfig, FdbError};
use crate::fdb_sync::{FdbSync, FdbUpdate};
use crate::gso;
use crate::handoff::{HandoffReceiver, HandoffSender};
use crate::metrics::PortCounters;
use crate::port::{FrameBuf, MAX_FRAME_LEN, Port};
use crate::time::{Clock, Instant};
use crate::verdict::{DropReason, Forward};
use crate::vlan::{Classified, Egress, VlanMode};
use crate::vxlan::Vxlan;
use crate::wire::{MacAddr, VnetHdr, ethernet};

mod changes;
mod querier;
mod spanning;
mod trace;
mod transmit;
mod workers;

use crate::port::detached::DetachedPort;
use changes::IoChange;
pub use changes::{ChangeError, MemberIo, PortIo, SLOT_QUARANTINE, WorkerFds};
pub use spanning::BPDUS_IN_FLIGHT;
use std::fmt;
use transmit::{Scratch, transmit, uncount_failed};
pub use workers::panic_text;

/// Frames read from one port per turn before the loop moves on: a tunnel's, whose runs of
/// TCP segments merge within one read ([`crate::gro`]), and the buffers' count.
pub const BATCH: usize = 64;

/// Frames read from one TAP, veth or netdev port per turn. A frame that reaches another port
/// while the worker forwards a busy port's frames waits for the rest of that read, then goes
/// first ([`ReadyList`]): at about 2 µs per frame, 16 frames keep that wait near 30 µs where
/// 64 made it 130, and a bystander pair's median round trip under a line-rate flood fell from
/// 0.36 to 0.10 ms for no loss of forwarding rate (docs/benchmarks.md). Open vSwitch's bursts
/// are 32 frames, the kernel's NAPI budget 64.
pub const READ_SHARE: usize = 16;

/// Sends one turn may make before it yields to jobs (control requests, stop) and timers:
/// some milliseconds of system calls.
pub const TURN_SENDS: usize = 4096;

const WAKER: Token = Token(usize::MAX);

/// A unit of control-plane work run on the dataplane thread, given the state and `now`.
pub type Job = Box<dyn FnOnce(&mut SwitchState, Instant) + Send>;

/// A port's link: from netlink link events for ports on kernel interfaces (TAPs, veths,
/// netdevs); as last observed when sending for the others (`internal` ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Frames go through.
    Up,
    /// The interface is down or has no carrier.
    Down,
    /// The interface does not exist (now).
    Absent,
}

/// What the control plane knows about a port, besides its I/O.
#[derive(Debug, Clone)]
pub struct PortInfo {
    /// The port's name (the kernel interface name for TAP ports).
    pub name: String,
    /// Its type as the topology file names it (`tap`, `internal`, ...).
    pub kind: String,
    /// The namespace its kernel side lives in, if not vswitchd's own.
    pub netns: Option<String>,
    /// Its MTU.
    pub mtu: u32,
    /// How it treats VLANs.
    pub vlan: VlanMode,
}

/// One port's state on the dataplane thread.
#[derive(Debug, Clone)]
pub struct PortState {
    /// Description.
    pub info: PortInfo,
    /// The port's id.
    pub id: PortId,
    /// Last observed link state.
    pub link: LinkState,
    /// Traffic counters.
    pub counters: PortCounters,
    /// Receive errors other than `WouldBlock`.
    pub rx_errors: u64,
    /// Times the link state changed.
    pub link_changes: u64,
    /// The bond, if this port is one.
    pub bond: Option<Bond>,
    /// RARP announcements sent after failovers.
    pub announcements: u64,
    /// The offloads the port negotiated with the kernel (TAPs).
    pub offloads: Option<crate::port::OffloadReport>,
    /// The VXLAN endpoint, if this port is one.
    pub vxlan: Option<Vxlan>,
    /// Indices of this port's endpoints (one, or one per bond member).
    endpoints: Vec<usize>,
    /// Another worker owns this port (a port with one I/O, or a bond added with
    /// [`PortIo::Bond`], on a worker other than the first): frames for it are handed off.
    handed_off: bool,
    /// The kernel reports this port's link (through [`SwitchState::set_link`]); otherwise it
    /// is inferred from how sends fare.
    link_from_kernel: bool,
    /// When the port was removed: its slot stays empty for a while ([`SLOT_QUARANTINE`]).
    /// `None` for a port that exists.
    pub removed: Option<Instant>,
    /// On the first worker, for a bond every worker serves ([`PortIo::BondQueues`]): the
    /// [`Bond::forwarding_digest`] the other workers' replicas were last sent.
    bond_replicas: Option<u64>,
    /// The captures tapping this port on this worker (empty: no capture, one branch a frame).
    pub taps: Vec<crate::capture::Tap>,
}

/// Everything a [`Job`] may read or change.
#[derive(Debug)]
pub struct SwitchState {
    /// The bridge's name.
    pub name: String,
    /// The forwarding logic and its FDB.
    pub bridge: Bridge,
    /// Ports, indexed by [`PortId`].
    pub ports: Vec<PortState>,
    pending_io: Vec<(PortId, Option<usize>, Box<dyn Port>)>,
    /// Ports to attach or detach after this turn's jobs, in order.
    io_changes: Vec<IoChange>,
    /// Who wants a second fd of every port's I/O, after this turn's jobs.
    fd_requests: Vec<Sender<WorkerFds>>,
    /// This worker's number: 0 for the first.
    worker: usize,
    pending_announce: Vec<(PortId, Failover)>,
    stop: bool,
    /// Worker threads forwarding for this bridge, this one included.
    /// This worker's busy-poll policy and what it did (kept current by the loop).
    busy_poll: (BusyPoll, crate::busy_poll::BusyPollCounts),
    threads: usize,
    /// FDB replication with the other workers (no peers with one worker).
    fdb_sync: FdbSync,
    /// The other workers (on the first worker only, once running).
    workers: Vec<WorkerLink>,
    /// The way to the first worker for frames toward ports it owns (other workers only).
    handoff: Option<HandoffSender>,
    /// Addresses snooped from ARP and neighbour discovery, for VXLAN ports with
    /// `arp_suppress` (learned only while one has it).
    pub neighbours: crate::neigh::Neighbours,
    /// The spanning tree, when it runs (on the first worker only).
    stp: Option<crate::stp::Stp>,
    /// The way to the first worker's spanning tree for BPDUs (other workers only).
    bpdu_relay: Option<spanning::BpduRelay>,
    /// The time of the turn (for changes made without one, such as link events).
    now: Instant,
}

/// What a worker thread has counted, as it last published it for the first worker's answers.
#[derive(Debug, Clone, Default)]
pub struct WorkerTotals {
    /// Per port, by [`PortId`]: traffic counters and receive errors.
    pub ports: Vec<(PortCounters, u64)>,
    /// FDB updates the other workers' full inboxes refused.
    pub fdb_updates_lost: u64,
    /// Per VXLAN port: its replica's remotes, with what this worker sent and received.
    pub tunnel_remotes: Vec<(PortId, crate::vxlan::Remote)>,
    /// Per VXLAN port: its replica's counters.
    pub tunnel_stats: Vec<(PortId, crate::vxlan::VxlanStats)>,
    /// What its busy polling did.
    pub busy_poll: crate::busy_poll::BusyPollCounts,
    /// Per bond member its replica serves: bond, member, counters.
    pub bond_members: Vec<(PortId, usize, crate::bond::MemberCounters)>,
}

/// The first worker's line to another worker.
#[derive(Debug)]
struct WorkerLink {
    handle: SwitchHandle,
    totals: Arc<Mutex<WorkerTotals>>,
}

impl SwitchState {
    /// The port named `name`.
    pub fn port_by_name(&self, name: &str) -> Option<&PortState> {
        self.ports.iter().find(|p| p.removed.is_none() && p.info.name == name)
    }

    /// Asks the loop to return after the current turn.
    pub fn request_stop(&mut self) {
        self.stop = true;
    }

    /// Records port `id`'s link state, counting changes. A port that goes down or away
    /// forgets the MACs learned behind it (as the kernel bridge does), so traffic to them
    /// floods and finds them wherever they reappear; and its multicast memberships, on every
    /// worker (its hosts report again when it comes back).
    ///
    /// From then on the port's link state is what the kernel says: sends no longer change it,
    /// and frames toward a port that is not up are counted `link_down` without a system call.
    /// The other workers learn the state too.
    pub fn set_link(&mut self, id: PortId, link: LinkState) {
        let changed = self.set_link_here(id, link);
        if changed && link != LinkState::Up {
            self.fdb_flush(Some(id));
        }
        if changed {
            self.stp_link(id, link == LinkState::Up);
        }
        for worker in &self.workers {
            let _ = worker.handle.submit(Box::new(move |state, _| {
                state.set_link_here(id, link);
            }));
        }
    }

    /// Records the link state on this worker only; returns whether it changed.
    fn set_link_here(&mut self, id: PortId, link: LinkState) -> bool {
        let Some(port) = self.ports.get_mut(id.index()) else { return false };
        port.link_from_kernel = true;
        if port.link == link {
            return false;
        }
        port.link = link;
        port.link_changes += 1;
        if link != LinkState::Up {
            self.bridge.mdb_mut().port_down(id);
        }
        true
    }

    /// Replaces port `id`'s I/O (or its bond member `member`'s) after this job: an interface
    /// came back, or went away.
    pub fn replace_port_io(&mut self, id: PortId, member: Option<usize>, io: Box<dyn Port>) {
        self.pending_io.push((id, member, io));
    }

    /// Replaces port `id`'s I/O with one per worker (`ios[0]` for this one): the interface came
    /// back and every worker needs its own socket on it again.
    pub fn replace_port_queues(&mut self, id: PortId, member: Option<usize>, ios: Vec<Box<dyn Port>>) {
        let mut ios = ios.into_iter();
        if let Some(first) = ios.next() {
            self.pending_io.push((id, member, first));
        }
        for (worker, io) in self.workers.iter().zip(ios) {
            let _ = worker.handle.submit(Box::new(move |state, _| state.replace_port_io(id, member, io)));
        }
    }

    /// Runs `job` on worker `index` (1 for the second worker, ...); returns whether there is
    /// such a worker and it took the job.
    pub fn submit_to_worker(&self, index: usize, job: Job) -> bool {
        index.checked_sub(1).and_then(|i| self.workers.get(i)).is_some_and(|w| w.handle.submit(job).is_ok())
    }

    /// Worker threads forwarding for this bridge.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Port `id`'s counters and receive errors, summed over every worker.
    pub fn port_totals(&self, id: PortId) -> (PortCounters, u64) {
        let Some(port) = self.ports.get(id.index()) else { return (PortCounters::default(), 0) };
        let (mut counters, mut rx_errors) = (port.counters, port.rx_errors);
        for worker in &self.workers {
            let totals = worker.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((c, e)) = totals.ports.get(id.index()) {
                counters.merge(c);
                rx_errors += e;
            }
        }
        (counters, rx_errors)
    }

    /// VXLAN port `id`'s remotes and counters, with what every worker sent and received: this
    /// worker's replica's remotes (configured first), then any remote only another worker's
    /// replica has. The table counters (remotes and MACs learned, aged, evicted) are this
    /// replica's, which hears what the others learn; the too-big replies and suppressed
    /// requests are summed, each worker counting its own.
    pub fn vxlan_totals(&self, id: PortId) -> Option<(Vec<crate::vxlan::Remote>, crate::vxlan::VxlanStats)> {
        let vxlan = self.live_port(id)?.vxlan.as_ref()?;
        let (mut remotes, mut stats) = (vxlan.remotes().to_vec(), vxlan.stats());
        let mut index: std::collections::HashMap<std::net::IpAddr, usize> =
            remotes.iter().enumerate().map(|(i, r)| (r.addr, i)).collect();
        for worker in &self.workers {
            let totals = worker.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (_, theirs) in totals.tunnel_remotes.iter().filter(|(port, _)| *port == id) {
                let i = *index.entry(theirs.addr).or_insert_with(|| {
                    remotes.push(crate::vxlan::Remote {
                        rx_packets: 0,
                        rx_bytes: 0,
                        tx_packets: 0,
                        tx_bytes: 0,
                        ..theirs.clone()
                    });
                    remotes.len() - 1
                });
                let r = &mut remotes[i];
                r.rx_packets += theirs.rx_packets;
                r.rx_bytes += theirs.rx_bytes;
                r.tx_packets += theirs.tx_packets;
                r.tx_bytes += theirs.tx_bytes;
            }
            for (_, theirs) in totals.tunnel_stats.iter().filter(|(port, _)| *port == id) {
                stats.too_big_replies += theirs.too_big_replies;
                stats.too_big_replies_limited += theirs.too_big_replies_limited;
                stats.neigh_suppressed += theirs.neigh_suppressed;
            }
        }
        Some((remotes, stats))
    }

    /// Frames port `id` has received on each worker, this one first.
    pub fn port_worker_rx_frames(&self, id: PortId) -> Vec<u64> {
        let Some(port) = self.ports.get(id.index()) else { return Vec::new() };
        let mut frames = vec![port.counters.rx_frames];
        for worker in &self.workers {
            let totals = worker.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            frames.push(totals.ports.get(id.index()).map_or(0, |(c, _)| c.rx_frames));
        }
        frames
    }

    /// Bond `id`'s member counters, summed over every worker (the others serve it only if it
    /// is a [`PortIo::BondQueues`] bond).
    pub fn bond_member_totals(&self, id: PortId) -> Vec<crate::bond::MemberCounters> {
        let Some(bond) = self.live_port(id).and_then(|p| p.bond.as_ref()) else { return Vec::new() };
        let mut totals: Vec<crate::bond::MemberCounters> = bond.members().iter().map(|m| m.counters).collect();
        for worker in &self.workers {
            let published = worker.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (_, member, theirs) in published.bond_members.iter().filter(|(port, _, _)| *port == id) {
                if let Some(mine) = totals.get_mut(*member) {
                    mine.rx_frames += theirs.rx_frames;
                    mine.rx_bytes += theirs.rx_bytes;
                    mine.tx_frames += theirs.tx_frames;
                    mine.tx_bytes += theirs.tx_bytes;
                    mine.drops.merge(&theirs.drops);
                }
            }
        }
        totals
    }

    /// The busy-poll policy, and what busy polling did, summed over every worker.
    pub fn busy_poll_totals(&self) -> (BusyPoll, crate::busy_poll::BusyPollCounts) {
        let (mode, mut counts) = self.busy_poll;
        for worker in &self.workers {
            let theirs = worker.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).busy_poll;
            counts.spins += theirs.spins;
            counts.backoffs += theirs.backoffs;
        }
        (mode, counts)
    }

    /// Frames each worker has received, this one first.
    pub fn worker_rx_frames(&self) -> Vec<u64> {
        let mut frames = vec![self.ports.iter().map(|p| p.counters.rx_frames).sum()];
        for worker in &self.workers {
            let totals = worker.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            frames.push(totals.ports.iter().map(|(c, _)| c.rx_frames).sum());
        }
        frames
    }

    /// FDB updates between workers that a full inbox refused (the receiver floods instead).
    pub fn fdb_updates_lost(&self) -> u64 {
        let others: u64 = self
            .workers
            .iter()
            .map(|w| w.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).fdb_updates_lost)
            .sum();
        self.fdb_sync.lost + others
    }

    /// Adds a static FDB entry, on every worker.
    pub fn fdb_add_static(&mut self, vlan: VlanId, mac: MacAddr, port: PortId) -> Result<(), FdbError> {
        self.bridge.fdb_mut().add_static(vlan, mac, port)?;
        self.fdb_sync.publish(FdbUpdate::Static { vlan, mac, port });
        Ok(())
    }

    /// Removes an FDB entry, on every worker. Returns whether this worker had it.
    pub fn fdb_remove(&mut self, vlan: VlanId, mac: MacAddr) -> bool {
        self.fdb_sync.publish(FdbUpdate::Removed { vlan, mac });
        self.bridge.fdb_mut().remove(vlan, mac)
    }

    /// Flushes learned FDB entries (of one port, or all), on every worker. Returns how many
    /// this worker removed.
    pub fn fdb_flush(&mut self, port: Option<PortId>) -> usize {
        self.fdb_sync.publish(FdbUpdate::Flushed { port });
        self.bridge.fdb_mut().flush(port)
    }

    /// Makes port `id` a configured multicast router port (`mrouter = true`), or takes that
    /// back, on every worker.
    pub fn mdb_set_router(&mut self, id: PortId, on: bool) {
        self.bridge.mdb_mut().set_static_router(id, on);
        for worker in &self.workers {
            let _ = worker.handle.submit(Box::new(move |state, _| state.bridge.mdb_mut().set_static_router(id, on)));
        }
    }

    /// Taps ports `ports` for capture `sink` (port `ports[i]` is its interface `i`), on every
    /// worker; until [`SwitchState::remove_capture`], the forwarding path copies each frame they
    /// see into the sink.
    pub fn add_capture(&mut self, sink: &Arc<crate::capture::Sink>, ports: &[PortId]) {
        self.add_capture_here(sink, ports);
        for worker in &self.workers {
            let (sink, ports) = (Arc::clone(sink), ports.to_vec());
            let _ = worker.handle.submit(Box::new(move |state, _| state.add_capture_here(&sink, &ports)));
        }
    }

    fn add_capture_here(&mut self, sink: &Arc<crate::capture::Sink>, ports: &[PortId]) {
        // The wall clock is read here, once per capture and worker, not per frame: frames are
        // stamped with the turn's time plus this offset.
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let wall_offset_ns = u64::try_from(wall).unwrap_or(u64::MAX).saturating_sub(self.now.as_nanos());
        for (interface, &id) in ports.iter().enumerate() {
            if let Some(port) = self.ports.get_mut(id.index()) {
                let sink = Arc::clone(sink);
                port.taps.push(crate::capture::Tap { sink, interface: interface as u32, wall_offset_ns });
            }
        }
    }

    /// Removes capture `sink`'s taps, on every worker.
    pub fn remove_capture(&mut self, sink: &Arc<crate::capture::Sink>) {
        self.remove_capture_here(sink);
        for worker in &self.workers {
            let sink = Arc::clone(sink);
            let _ = worker.handle.submit(Box::new(move |state, _| state.remove_capture_here(&sink)));
        }
    }

    fn remove_capture_here(&mut self, sink: &Arc<crate::capture::Sink>) {
        for port in &mut self.ports {
            port.taps.retain(|tap| !Arc::ptr_eq(&tap.sink, sink));
        }
    }

    /// Records bond member `member`'s carrier at `now`; a resulting failover is announced.
    pub fn bond_carrier(&mut self, id: PortId, member: usize, carrier: bool, now: Instant) {
        if let Some(failover) =
            self.ports.get_mut(id.index()).and_then(|p| p.bond.as_mut()).and_then(|b| b.observe(member, carrier, now))
        {
            self.pending_announce.push((id, failover));
        }
    }

    /// Takes a LACPDU another worker received on bond `id`'s member `member` (it counted it).
    pub fn bond_lacpdu(&mut self, id: PortId, member: usize, frame: &[u8], now: Instant) {
        let Some(port) = self.ports.get_mut(id.index()).filter(|p| p.removed.is_none()) else { return };
        let Some(bond) = port.bond.as_mut() else { return };
        if let Err(reason) = bond.lacp_receive(member, frame, now) {
            port.counters.drops.add(reason);
            if let Some(m) = bond.member_mut(member) {
                m.counters.drops.add(reason);
            }
        }
    }

    /// Forces the active member of active-backup bond `id`; the failover is announced.
    pub fn bond_set_active(&mut self, id: PortId, member: &str) -> Result<(), String> {
        let bond = self.ports.get_mut(id.index()).and_then(|p| p.bond.as_mut()).ok_or("not a bond")?;
        if let Some(failover) = bond.set_active(member).map_err(|e| e.to_string())? {
            self.pending_announce.push((id, failover));
        }
        Ok(())
    }
}

/// Why a call into the dataplane failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The dataplane thread has stopped.
    #[error("the dataplane has stopped")]
    Stopped,
    /// The dataplane did not run the job in time.
    #[error("the dataplane did not answer within {0:?}")]
    Timeout(Duration),
}

/// A cloneable way into the running loop from other threads.
#[derive(Debug, Clone)]
pub struct SwitchHandle {
    jobs: Sender<Job>,
    waker: Arc<Waker>,
}

impl SwitchHandle {
    /// Runs `f` on the dataplane thread and returns its result.
    pub fn call<R, F>(&self, f: F, timeout: Duration) -> Result<R, HandleError>
    where
        R: Send + 'static,
        F: FnOnce(&mut SwitchState, Instant) -> R + Send + 'static,
    {
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        self.submit(Box::new(move |state, now| {
            let _ = reply_tx.send(f(state, now));
        }))?;
        reply_rx.recv_timeout(timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => HandleError::Timeout(timeout),
            crossbeam_channel::RecvTimeoutError::Disconnected => HandleError::Stopped,
        })
    }

    /// Asks the loop to stop; returns without waiting.
    pub fn stop(&self) -> Result<(), HandleError> {
        self.submit(Box::new(|state, _| state.request_stop()))
    }

    fn submit(&self, job: Job) -> Result<(), HandleError> {
        self.jobs.send(job).map_err(|_| HandleError::Stopped)?;
        self.waker.wake().map_err(|_| HandleError::Stopped)
    }
}

/// One polled I/O: a plain port's, or one member's of a bond.
#[derive(Debug)]
struct Endpoint {
    io: Box<dyn Port>,
    port: PortId,
    member: Option<usize>,
    /// On the flush list: its port queued frames during this batch.
    queued: bool,
}

impl Endpoint {
    /// Puts the endpoint on the flush list if its port queues sends and is not on it yet.
    fn note_send(&mut self, index: usize, to_flush: &mut Vec<usize>) {
        if !self.queued && self.io.queues_sends() {
            self.queued = true;
            to_flush.push(index);
        }
    }
}

/// The event loop and everything it owns.
#[derive(Debug)]
pub struct Switch {
    poll: Poll,
    events: Events,
    clock: Clock,
    state: SwitchState,
    endpoints: Vec<Endpoint>,
    /// Endpoints of removed ports, for the next port added.
    free_endpoints: Vec<usize>,
    batch: Vec<FrameBuf>,
    /// Where software segmentation and tunnel batching build frames.
    scratch: Scratch,
    ready: ReadyList,
    jobs_rx: Receiver<Job>,
    handle: SwitchHandle,
    /// When to keep polling instead of sleeping, and what it has seen lately.
    busy_poll: BusyPoller,
    /// Frames read in the current turn.
    turn_frames: usize,
    /// The other workers' I/O, one list per worker in [`PortId`] order, until [`Switch::run`]
    /// starts them.
    worker_ios: Vec<Vec<Box<dyn Port>>>,
    /// Where this worker publishes its counters (not on the first worker).
    publish: Option<Arc<Mutex<WorkerTotals>>>,
    /// Frames other workers hand over for the bonds and single-I/O ports this one owns.
    handoffs: Option<HandoffReceiver>,
    /// Counters changed since the last publication.
    unpublished: bool,
    /// When the kernel's drop counts are read next.
    next_kernel_drops: Instant,
    last_published: Instant,
    /// Paces the MAC-flapping warnings.
    flap_warnings: WarnBudget,
    /// The BPDUs the spanning tree sends this turn (kept for its capacity).
    stp_out: Vec<(PortId, [u8; crate::wire::bpdu::FRAME_LEN])>,
    /// The ports a snooped multicast frame goes to (reused: no allocation per frame).
    group_ports: Vec<PortId>,
    /// The IGMP/MLD querier's schedule and buffers (`mcast_querier = true`, first worker).
    querier: querier::Querier,
}

/// Lets [`WarnBudget::PER_SECOND`] warnings a second through and counts the rest: one
/// warning per event is already not per frame, but a loop makes every MAC in it flap at once.
#[derive(Debug, Default)]
struct WarnBudget {
    second: u64,
    spent: u32,
    held_back: u64,
}

impl WarnBudget {
    const PER_SECOND: u32 = 10;

    /// Spends one warning at `now`: `Some(n)` if it may be logged, `n` being how many were
    /// held back since the last one logged; `None` if it is held back.
    fn take(&mut self, now: Instant) -> Option<u64> {
        let second = now.as_nanos() / 1_000_000_000;
        if second != self.second {
            self.second = second;
            self.spent = 0;
        }
        if self.spent >= Self::PER_SECOND {
            self.held_back += 1;
            return None;
        }
        self.spent += 1;
        Some(std::mem::take(&mut self.held_back))
    }
}

/// How often the kernel's drop counts of busy ports' sockets are read.
const KERNEL_DROPS_EVERY: Duration = Duration::from_secs(1);

/// How often a busy worker publishes its counters.
const PUBLISH_EVERY: Duration = Duration::from_millis(1);

impl Switch {
    /// A switch named `name` with no ports.
    pub fn new(name: &str, fdb: FdbConfig) -> io::Result<Switch> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded();
        Ok(Switch {
            poll,
            events: Events::with_capacity(256),
            clock: Clock::new(),
            state: SwitchState {
                name: name.to_string(),
                bridge: Bridge::new(fdb),
                ports: Vec::new(),
                pending_io: Vec::new(),
                io_changes: Vec::new(),
                fd_requests: Vec::new(),
                worker: 0,
                pending_announce: Vec::new(),
                stop: false,
                threads: 1,
                busy_poll: (BusyPoll::Adaptive, crate::busy_poll::BusyPollCounts::default()),
                fdb_sync: FdbSync::solo(),
                workers: Vec::new(),
                handoff: None,
                neighbours: crate::neigh::Neighbours::new(crate::neigh::DEFAULT_MAX, fdb.aging),
                stp: None,
                bpdu_relay: None,
                now: Instant::ZERO,
            },
            endpoints: Vec::new(),
            free_endpoints: Vec::new(),
            batch: (0..BATCH).map(|_| FrameBuf::new(MAX_FRAME_LEN)).collect(),
            scratch: Scratch::new(),
            ready: ReadyList::default(),
            jobs_rx,
            handle: SwitchHandle { jobs: jobs_tx, waker },
            busy_poll: BusyPoller::new(BusyPoll::Adaptive),
            turn_frames: 0,
            worker_ios: Vec::new(),
            publish: None,
            handoffs: None,
            unpublished: false,
            last_published: Instant::ZERO,
            next_kernel_drops: Instant::ZERO,
            flap_warnings: WarnBudget::default(),
            stp_out: Vec::new(),
            group_ports: Vec::new(),
            querier: querier::Querier::default(),
        })
    }

    /// Forwards on `threads` worker threads (at least 1). Call it before adding ports: each
    /// port then needs one I/O per worker ([`Switch::add_port_queues`]); bonds and VXLAN ports,
    /// whose state one worker owns, are served by this (the first) one, and the others hand
    /// frames for them over ([`crate::handoff`]).
    pub fn set_threads(&mut self, threads: usize) -> io::Result<()> {
        if !self.state.ports.is_empty() {
            return Err(io::Error::other("set the thread count before adding ports"));
        }
        let threads = threads.max(1);
        self.state.threads = threads;
        self.worker_ios = (1..threads).map(|_| Vec::new()).collect();
        Ok(())
    }

    /// When to keep polling (spinning on a zero-timeout poll) instead of sleeping: a frame
    /// arriving meanwhile is served without a wake-up ([`crate::busy_poll`]; adaptive unless set).
    pub fn set_busy_poll(&mut self, mode: BusyPoll) {
        self.busy_poll = BusyPoller::new(mode);
    }

    /// Adds a port to the bridge and starts polling it (one worker).
    pub fn add_port(&mut self, info: PortInfo, io: Box<dyn Port>) -> io::Result<PortId> {
        self.add_port_queues(info, vec![io])
    }

    /// Adds a port with one I/O per worker thread: `ios[0]` is this worker's, `ios[w]` is
    /// worker `w`'s.
    pub fn add_port_queues(&mut self, info: PortInfo, ios: Vec<Box<dyn Port>>) -> io::Result<PortId> {
        if ios.len() != self.state.threads {
            return Err(io::Error::other(format!(
                "port {} has {} I/O queues for {} worker threads",
                info.name,
                ios.len(),
                self.state.threads
            )));
        }
        let mut ios = ios.into_iter();
        let first = ios.next().ok_or_else(|| io::Error::other("a port needs an I/O"))?;
        let id = self.add(info, None, vec![first])?;
        for (worker, io) in self.worker_ios.iter_mut().zip(ios) {
            worker.push(io);
        }
        Ok(id)
    }

    /// Gives the other workers a placeholder for a port only this one serves.
    fn owned_here(&mut self) {
        for worker in &mut self.worker_ios {
            worker.push(Box::new(crate::port::detached::DetachedPort));
        }
    }

    /// Adds a bond to the bridge: one port whose I/O is `members` (in the bond's member order).
    pub fn add_bond(&mut self, info: PortInfo, bond: Bond, members: Vec<Box<dyn Port>>) -> io::Result<PortId> {
        if members.len() != bond.members().len() || members.is_empty() {
            return Err(io::Error::other("a bond needs one I/O per member"));
        }
        let id = self.add(info, Some(bond), members)?;
        self.owned_here();
        Ok(id)
    }

    fn add(&mut self, info: PortInfo, bond: Option<Bond>, ios: Vec<Box<dyn Port>>) -> io::Result<PortId> {
        let id = PortId(u16::try_from(self.state.ports.len()).map_err(|_| io::Error::other("too many ports"))?);
        self.state.install(id, info, bond, None, ios, false);
        self.apply_io_changes()?;
        Ok(id)
    }

    /// Adds a VXLAN tunnel port on a switch of one worker: `io` is its underlay (a
    /// [`crate::port::udp_tunnel::UdpTunnelPort`]).
    pub fn add_vxlan(&mut self, info: PortInfo, vxlan: Vxlan, io: Box<dyn Port>) -> io::Result<PortId> {
        self.add_vxlan_queues(info, vxlan, vec![io])
    }

    /// Adds a VXLAN tunnel port with one underlay per worker thread (`ios[w]` is worker `w`'s,
    /// sockets bound to the same address with `SO_REUSEPORT`): every worker keeps a replica of
    /// the tunnel's state.
    pub fn add_vxlan_queues(&mut self, info: PortInfo, vxlan: Vxlan, ios: Vec<Box<dyn Port>>) -> io::Result<PortId> {
        let id = self.add_port_queues(info, ios)?;
        self.state.ports[id.index()].vxlan = Some(vxlan);
        Ok(id)
    }

    /// A handle for other threads.
    pub fn handle(&self) -> SwitchHandle {
        self.handle.clone()
    }

    /// The state, for inspection between runs (tests).
    pub fn state(&self) -> &SwitchState {
        &self.state
    }

    /// The state, to change between turns when the switch is driven in-process with
    /// [`Switch::run_once`] (a running switch takes changes as [`Job`]s instead).
    pub fn state_mut(&mut self) -> &mut SwitchState {
        &mut self.state
    }

    /// Runs until a job calls [`SwitchState::request_stop`]. The first run also starts the
    /// other workers, and stops and joins them before it returns.
    pub fn run(&mut self) -> io::Result<()> {
        let workers = self.start_workers()?;
        for i in 0..self.endpoints.len() {
            self.ready.mark(i);
        }
        self.state.stop = false;
        let mut result = Ok(());
        while !self.state.stop {
            if let Err(e) = self.turn() {
                result = Err(e);
                break;
            }
        }
        for worker in &self.state.workers {
            let _ = worker.handle.stop();
        }
        for (index, worker) in workers.into_iter().enumerate() {
            let failure = match worker.join() {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(cause) => io::Error::other(format!("worker {} panicked: {}", index + 1, panic_text(&cause))),
            };
            tracing::error!(worker = index + 1, error = %failure, "worker failed; the switch stops");
            if result.is_ok() {
                result = Err(failure);
            }
        }
        self.publish_totals(self.clock.now());
        result
    }

    /// The earliest deadline of the FDB, the bonds and the VXLAN endpoints.
    fn next_deadline(&self) -> Option<Instant> {
        let bonds = self
            .state
            .ports
            .iter()
            .filter_map(|p| match (&p.bond, &p.vxlan) {
                (Some(b), _) if self.state.worker == 0 => b.next_deadline(),
                (Some(_), _) => None,
                (_, Some(v)) => v.next_deadline(),
                _ => None,
            })
            .min();
        let config = self.state.bridge.mdb().config();
        let queries = self.querier.next_deadline().filter(|_| config.querier && config.snooping);
        [self.state.bridge.next_deadline(), bonds, self.stp_deadline(), queries].into_iter().flatten().min()
    }

    /// One turn: wait for events (or a deadline), then serve jobs and ready endpoints.
    fn turn(&mut self) -> io::Result<()> {
        let timeout = if self.ready.pending.is_empty() && self.ready.carried.is_empty() {
            let now = self.clock.now();
            if self.busy_poll.should_spin(now) {
                if self.busy_poll.yields() {
                    thread::yield_now(); // a host's stack that wants this core gets it first
                }
                Some(Duration::ZERO)
            } else {
                self.next_deadline().map(|d| d.saturating_duration_since(now) + Duration::from_millis(1))
            }
        } else {
            Some(Duration::ZERO)
        };
        if self.unpublished && timeout != Some(Duration::ZERO) {
            self.publish_totals(self.clock.now()); // going to sleep: leave the counters current
        }
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        let now = self.clock.now();
        let mut woken = false;
        for event in self.events.iter() {
            match event.token() {
                WAKER => woken = true,
                Token(endpoint) if endpoint < self.endpoints.len() => self.ready.mark(endpoint),
                _ => {}
            }
        }
        self.work(now, woken);
        Ok(())
    }

    /// One turn without waiting for events: every port is served as if it were readable, and
    /// the jobs waiting are run, with `now` as the time. This drives the real pipeline over
    /// ports that have no file descriptor ([`crate::port::memory`]): fuzz targets and tests
    /// that go step by step.
    pub fn run_once(&mut self, now: Instant) {
        for i in 0..self.endpoints.len() {
            self.ready.mark(i);
        }
        self.work(now, true);
    }

    /// As [`Switch::run_once`], serving only port `port`'s endpoints, as when its readiness
    /// alone was reported.
    pub fn run_port_once(&mut self, port: PortId, now: Instant) {
        if let Some(state) = self.state.ports.get(port.index()) {
            for &endpoint in &state.endpoints {
                self.ready.mark(endpoint);
            }
        }
        self.work(now, true);
    }

    /// The work of a turn once it is known what is ready: jobs (if `woken`), frames handed
    /// over by other workers, FDB updates from them, the ready endpoints, then timers and
    /// queued sends.
    fn work(&mut self, now: Instant, woken: bool) {
        self.scratch.now = now;
        self.state.now = now;
        if woken {
            while let Ok(job) = self.jobs_rx.try_recv() {
                job(&mut self.state, now);
                // After each job, not after all of them: a job that follows one removing a
                // port finds its I/O closed (the control plane's round trip after a removal
                // relies on it before binding the same UDP port again).
                let _ = self.apply_io_changes(); // a port that cannot be polled has been logged
            }
            self.swap_pending_io();
            self.answer_fd_requests();
        }
        self.serve_handoffs();
        if self.state.fdb_sync.has_peers() {
            let (bridge, ports, neighbours) =
                (&mut self.state.bridge, &mut self.state.ports, &mut self.state.neighbours);
            self.state.fdb_sync.apply_pending_with(|update| match update {
                FdbUpdate::Neighbour { vlan, ip, mac } => {
                    neighbours.learn(vlan, ip, mac, now);
                }
                FdbUpdate::Tunnel { port, vlan, mac, remote } => {
                    let live = ports.get_mut(port.index()).filter(|p| p.removed.is_none());
                    if let Some(vxlan) = live.and_then(|p| p.vxlan.as_mut()) {
                        vxlan.learn_shared(remote, vlan, mac, now);
                    }
                }
                update => bridge.apply_update(update, now),
            });
        }
        self.ready.mark_carried();
        self.ready.start_serving();
        if !self.ready.serving.is_empty() {
            self.unpublished = self.publish.is_some();
        }
        self.turn_frames = 0;
        // A turn is bounded by what it writes, not only by what it reads: a frame flooded to
        // a thousand ports costs a thousand sends. Each read takes at most as many frames as
        // fit the budget if every one were flooded to every port, and once the budget is spent
        // the endpoints not served yet go first next turn, which begins by serving jobs.
        self.scratch.sends = 0;
        let per_read = (TURN_SENDS / self.state.ports.len().max(1)).clamp(1, BATCH);
        let mut served = 0;
        while served < self.ready.serving.len() && self.scratch.sends < TURN_SENDS {
            let endpoint = self.ready.serving[served];
            if !self.serve_endpoint(endpoint, now, per_read) {
                self.ready.carry(endpoint);
            }
            served += 1;
        }
        for i in served..self.ready.serving.len() {
            self.ready.mark(self.ready.serving[i]);
        }
        self.ready.serving.clear();
        self.busy_poll.note_turn(now, self.turn_frames);
        self.state.busy_poll = (self.busy_poll.mode(), self.busy_poll.counts());
        self.state.bridge.run(now);
        self.state.neighbours.expire(now);
        let first = self.state.worker == 0;
        for port in &mut self.state.ports {
            // Another worker's bond is a replica the first worker refreshes: no timers of its own.
            if let Some(failover) = port.bond.as_mut().filter(|_| first).and_then(|b| b.run(now)) {
                self.state.pending_announce.push((port.id, failover));
            }
            if let Some(vxlan) = port.vxlan.as_mut() {
                vxlan.run(now);
            }
        }
        if now >= self.next_kernel_drops {
            self.next_kernel_drops = now + KERNEL_DROPS_EVERY;
            self.count_kernel_drops();
        }
        self.send_lacpdus(now);
        self.run_stp(now);
        self.send_queries(now);
        self.announce_failovers();
        if first {
            self.state.refresh_bond_replicas();
        }
        self.flush_queued();
        if self.unpublished && now.saturating_duration_since(self.last_published) >= PUBLISH_EVERY {
            self.publish_totals(now);
        }
    }

    fn swap_pending_io(&mut self) {
        while let Some((id, member, io)) = self.state.pending_io.pop() {
            let Some(index) =
                self.state.ports.get(id.index()).and_then(|p| p.endpoints.get(member.unwrap_or(0)).copied())
            else {
                continue;
            };
            let slot = &mut self.endpoints[index];
            if let Some(old) = slot.io.raw_fd() {
                let _ = self.poll.registry().deregister(&mut SourceFd(&old));
            }
            slot.io = io;
            if let Some(fd) = slot.io.raw_fd() {
                if let Err(e) = self.poll.registry().register(&mut SourceFd(&fd), Token(index), Interest::READABLE) {
                    tracing::warn!(port = %self.state.ports[id.index()].info.name, error = %e, "cannot poll the new port");
                }
            }
            self.ready.mark(index);
        }
    }

    /// Sends, for each active-backup failover, one RARP announcement per MAC known on the
    /// bridge's other ports out of the new active member, so the network behind the bond moves
    /// its FDB entries for them at once (as the bonding driver's gratuitous ARPs and Open
    /// vSwitch's learning packets do).
    fn announce_failovers(&mut self) {
        while let Some((port_id, failover)) = self.state.pending_announce.pop() {
            let Some(member) = failover.to else { continue };
            let port = &mut self.state.ports[port_id.index()];
            let Some(&endpoint) = port.endpoints.get(member) else { continue };
            let Some(config) = self.state.bridge.port(port_id) else { continue };
            self.endpoints[endpoint].note_send(endpoint, &mut self.scratch.to_flush);
            for entry in self.state.bridge.fdb().entries(Instant::ZERO) {
                if entry.port == port_id {
                    continue;
                }
                let frame = crate::wire::arp::rarp_announcement(entry.mac);
                let sent = match crate::vlan::egress(&config.vlan, entry.vlan, 0) {
                    Egress::NotCarried => continue,
                    Egress::Untagged => self.endpoints[endpoint].io.send(&[IoSlice::new(&frame)], &VnetHdr::default()),
                    Egress::Tagged(push) => {
                        let tag = push.bytes();
                        let parts = [IoSlice::new(&frame[..12]), IoSlice::new(&tag), IoSlice::new(&frame[12..])];
                        self.endpoints[endpoint].io.send(&parts, &VnetHdr::default())
                    }
                };
                if sent.is_ok() {
                    port.announcements += 1;
                }
            }
        }
    }

    /// Reads up to `limit` (at most [`BATCH`]) frames from `endpoint` and forwards them. Returns whether it was
    /// drained (read until `WouldBlock`).
    fn serve_endpoint(&mut self, endpoint: usize, now: Instant, limit: usize) -> bool {
        let mut received = 0;
        let mut drained = false;
        let (port, member) = (self.endpoints[endpoint].port, self.endpoints[endpoint].member);
        let tunnel = self.state.ports[port.index()].vxlan.is_some();
        let limit = limit.min(if tunnel { BATCH } else { READ_SHARE });
        while received < limit {
            let room = limit - received;
            match self.endpoints[endpoint].io.recv_batch(&mut self.batch[received..limit]) {
                // A short batch means the socket ran dry — or, on a port that defers errors
                // (`recvmmsg` on a packet socket), that the kernel stopped at a frame it could
                // not hand over and reports that with the next call. Such a port is not taken as
                // drained: the next turn reads on, or finds it dry. (Taken as dry, the frames
                // queued behind the error would never raise another edge-triggered event: a
                // deaf port.)
                Ok(n) if n < room => {
                    received += n;
                    drained = !self.endpoints[endpoint].io.defers_errors();
                    break;
                }
                Ok(n) => received += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // One frame the kernel could not hand over — a packet socket cannot describe a
                // guest's UDP fragmentation offload super-frame — is gone; those behind it are
                // read next turn.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    let counters = &mut self.state.ports[port.index()].counters;
                    counters.rx_frames += 1;
                    counters.drops.add(DropReason::BadOffload);
                    break;
                }
                Err(_) => {
                    self.state.ports[port.index()].rx_errors += 1;
                    drained = true;
                    break;
                }
            }
        }
        self.turn_frames += received;
        // A tunnel's datagrams carry one TCP segment each: runs of one flow are merged into
        // super-frames before they are forwarded ([`crate::gro`]).
        let mut run: Option<(usize, crate::gro::Run)> = None;
        for i in 0..received {
            if self.batch[i].truncated {
                let counters = &mut self.state.ports[port.index()].counters;
                counters.rx_frames += 1;
                counters.rx_bytes += self.batch[i].len() as u64;
                counters.drops.add(DropReason::Truncated);
                continue;
            }
            if let Some(m) = member {
                if !self.admit_on_member(port, m, i, now) {
                    continue;
                }
            }
            if tunnel {
                let Some(checksum_ok) = self.decapsulate(port, i, now) else { continue };
                if let Some((head, merging)) = run.as_mut() {
                    let (before, from) = self.batch.split_at_mut(i);
                    let (head_buf, next) = (&mut before[*head], &from[0]);
                    if let Some(accepted) = merging.accepts(head_buf.frame(), next.frame(), checksum_ok) {
                        if head_buf.append(&next.frame()[accepted.payload_at..]) {
                            merging.appended(accepted, head_buf.frame_mut());
                            continue;
                        }
                    }
                }
                if let Some((head, merging)) = run.take() {
                    self.forward_run(port, head, &merging, now);
                }
                if let Some(merging) = crate::gro::Run::start(self.batch[i].frame(), checksum_ok) {
                    run = Some((i, merging));
                    continue;
                }
            }
            self.forward(port, i, now);
        }
        if let Some((head, merging)) = run.take() {
            self.forward_run(port, head, &merging, now);
        }
        self.inject_replies(now);
        self.flush_queued();
        if let Some(handoff) = self.state.handoff.as_mut() {
            handoff.wake();
        }
        drained
    }

    /// Transmits what other workers handed over for the ports this one owns (at most a pool's
    /// worth per turn, so they cannot starve this worker's own ports).
    fn serve_handoffs(&mut self) {
        let Some(handoffs) = self.handoffs.as_ref() else { return };
        for _ in 0..crate::handoff::POOL_SIZE {
            let Some(mut handoff) = handoffs.next() else { break };
            let (out, class, flooding) = (handoff.out, handoff.class, handoff.flooding);
            transmit(&mut self.state, &mut self.endpoints, out, &mut handoff.buf, &class, flooding, &mut self.scratch);
            handoffs.recycle(handoff);
        }
        self.inject_replies(self.scratch.now);
        self.flush_queued();
    }

    /// Forwards the replies the batch queued (too-big errors, neighbour answers), each as a
    /// frame received on the tunnel port it answers for, through the first receive buffer
    /// (the batch is done with it).
    fn inject_replies(&mut self, now: Instant) {
        let pending = self.scratch.replies.len();
        for i in 0..pending {
            let reply = self.scratch.replies[i];
            let buf = &mut self.batch[0];
            let area = buf.receive_area();
            let len = reply.len.min(area.len());
            area[..len].copy_from_slice(&self.scratch.reply_frames[i][..len]);
            buf.set_received(len);
            if let Some(vlan) = reply.tag {
                let [c, d] = vlan.get().to_be_bytes();
                buf.insert_tag([0x81, 0x00, c, d]);
            }
            self.forward(reply.port, 0, now);
        }
        self.scratch.replies.clear();
    }

    /// Sends what the ports queued during the batch; frames the kernel refused come off the
    /// sent counters and are counted as drops.
    fn flush_queued(&mut self) {
        while let Some(index) = self.scratch.to_flush.pop() {
            let endpoint = &mut self.endpoints[index];
            endpoint.queued = false;
            if let Err(failure) = endpoint.io.flush() {
                let port = &mut self.state.ports[endpoint.port.index()];
                uncount_failed(port, endpoint.member.unwrap_or(0), &failure);
            }
        }
    }

    /// Forwards the frame in slot `head`, into which `merging` merged a run of segments: a
    /// super-frame with its GSO header if more than one.
    fn forward_run(&mut self, port: PortId, head: usize, merging: &crate::gro::Run, now: Instant) {
        if let Some(gso) = merging.finish(self.batch[head].frame_mut()) {
            self.batch[head].offload = gso;
        }
        self.forward(port, head, now);
    }

    /// Checks and strips the VXLAN encapsulation of the datagram in slot `slot` received on
    /// tunnel port `port`; a VNI mapped to a VLAN comes back as that VLAN's tag, which the
    /// port's trunk mode then takes off again. Returns `None` if the frame is dropped, else
    /// whether it is a plain frame whose transport checksum verified (it may be merged with
    /// others of its flow: [`crate::gro`]).
    fn decapsulate(&mut self, port: PortId, slot: usize, now: Instant) -> Option<bool> {
        const HEADER_LEN: usize = crate::wire::vxlan::HEADER_LEN;
        let buf = &mut self.batch[slot];
        let state = &mut self.state.ports[port.index()];
        let Some(vxlan) = state.vxlan.as_mut() else { return Some(false) };
        let verdict = match buf.source {
            Some(source) => vxlan.decapsulate(source.ip(), buf.frame(), now),
            None => Err(DropReason::VxlanUnknownRemote),
        };
        match verdict {
            Ok(d) => {
                if d.share && self.state.fdb_sync.has_peers() {
                    if let (Some(source), Some(inner)) = (buf.source, buf.frame().get(HEADER_LEN + 6..HEADER_LEN + 12))
                    {
                        let (vlan, mac, remote) = (d.vlan, MacAddr::from_bytes(inner), source.ip());
                        self.state.fdb_sync.publish(FdbUpdate::Tunnel { port, vlan, mac, remote });
                    }
                }
                buf.pull_front(crate::wire::vxlan::HEADER_LEN);
                // A VTEP on this host (a kernel vxlan device behind a veth) hands over what
                // a NIC never would: offload metadata is lost on the way into a UDP socket, so
                // inner checksums may be partial and inner TCP frames may be whole GSO
                // super-frames. The first are finished; the second get a GSO header for the
                // port's MTU, so a kernel port downstream cuts them into segments.
                let mtu = state.info.mtu;
                let mut checksum_ok = false;
                if buf.len() > ethernet::HEADER_LEN + mtu as usize {
                    if let Some(gso) = crate::wire::l4::tcp_gso(buf.frame_mut(), mtu) {
                        buf.offload = gso;
                    }
                } else {
                    use crate::wire::l4::Finish;
                    checksum_ok =
                        matches!(crate::wire::l4::finish_partial(buf.frame_mut()), Finish::Valid | Finish::Finished);
                }
                if d.vlan != crate::VlanId::NONE {
                    let [c, d] = d.vlan.get().to_be_bytes();
                    buf.insert_tag([0x81, 0x00, c, d]);
                }
                Some(checksum_ok)
            }
            Err(reason) => {
                state.counters.rx_frames += 1;
                state.counters.rx_bytes += buf.len() as u64;
                state.counters.drops.add(reason);
                None
            }
        }
    }

    /// Counts the frames the kernel dropped for each endpoint before they could be read. Only
    /// turns that run check (once a second at most): an idle loop has no new drops to find.
    fn count_kernel_drops(&mut self) {
        for endpoint in &mut self.endpoints {
            let port = &mut self.state.ports[endpoint.port.index()];
            endpoint.io.take_device_drops(&mut |reason, n| {
                if reason == DropReason::VhostBadDescriptor {
                    port.counters.rx_frames += n;
                }
                port.counters.drops.add_many(reason, n);
            });
            let dropped = endpoint.io.take_kernel_drops();
            if dropped > 0 {
                let port = &mut self.state.ports[endpoint.port.index()];
                port.counters.rx_frames += dropped;
                port.counters.drops.add_many(DropReason::RxOverflow, dropped);
                if let Some(m) = endpoint.member.and_then(|m| port.bond.as_mut()?.member_mut(m)) {
                    m.counters.rx_frames += dropped;
                    m.counters.drops.add_many(DropReason::RxOverflow, dropped);
                }
            }
        }
    }

    /// Sends the LACPDUs due on every 802.3ad bond's members.
    fn send_lacpdus(&mut self, now: Instant) {
        if self.state.worker != 0 {
            return; // the first worker runs LACP
        }
        for port in &mut self.state.ports {
            let Some(bond) = port.bond.as_mut() else { continue };
            if bond.lacp().is_none() {
                continue;
            }
            for member in 0..port.endpoints.len() {
                if let Some(frame) = bond.lacp_transmit(member, now) {
                    let index = port.endpoints[member];
                    self.endpoints[index].note_send(index, &mut self.scratch.to_flush);
                    let _ =
                        self.endpoints[port.endpoints[member]].io.send(&[IoSlice::new(&frame)], &VnetHdr::default());
                }
            }
        }
    }

    /// Counts a frame received on bond member `m` and says whether the bond passes it on to
    /// the bridge (LACPDUs are taken by the bond itself).
    fn admit_on_member(&mut self, port: PortId, m: usize, slot: usize, now: Instant) -> bool {
        let len = self.batch[slot].len() as u64;
        let frame = self.batch[slot].frame();
        let state = &mut self.state.ports[port.index()];
        let Some(bond) = state.bond.as_mut() else { return true };
        if self.state.worker != 0 && bond.lacp().is_some() && crate::wire::lacp::is_lacpdu(frame) {
            // A replica: the first worker runs LACP, and gets the LACPDU as a job (at most
            // BPDUS_IN_FLIGHT at a time, as BPDUs: a flood cannot grow its queue).
            if let Some(member) = bond.member_mut(m) {
                member.counters.rx_frames += 1;
                member.counters.rx_bytes += len;
            }
            let Some(relay) = self.state.bpdu_relay.as_ref() else { return false };
            if !relay.pass(frame, 256, move |state, frame, now| state.bond_lacpdu(port, m, frame, now)) {
                state.counters.drops.add(DropReason::NoRoom);
            }
            return false;
        }
        let verdict = if bond.lacp().is_some() && crate::wire::lacp::is_lacpdu(frame) {
            match bond.lacp_receive(m, frame, now) {
                Ok(()) => {
                    if let Some(member) = bond.member_mut(m) {
                        member.counters.rx_frames += 1;
                        member.counters.rx_bytes += len;
                    }
                    return false;
                }
                Err(reason) => Err(reason),
            }
        } else {
            bond.admit(m)
        };
        if let Some(member) = bond.member_mut(m) {
            member.counters.rx_frames += 1;
            member.counters.rx_bytes += len;
            if let Err(reason) = verdict {
                member.counters.drops.add(reason);
            }
        }
        if let Err(reason) = verdict {
            state.counters.rx_frames += 1;
            state.counters.rx_bytes += len;
            state.counters.drops.add(reason);
            return false;
        }
        true
    }

    fn forward(&mut self, in_port: PortId, slot: usize, now: Instant) {
        let counters = &mut self.state.ports[in_port.index()].counters;
        counters.rx_frames += 1;
        counters.rx_bytes += self.batch[slot].len() as u64;
        if self.divert_bpdu(in_port, slot, now) {
            return;
        }
        let buf = &mut self.batch[slot];
        let decision = self.state.bridge.ingress(in_port, buf.frame(), &buf.offload, now);
        if let Some(flapping) = decision.flapping {
            if let Some(held_back) = self.flap_warnings.take(now) {
                let name = |id: PortId| self.state.ports.get(id.index()).map_or("?", |p| p.info.name.as_str());
                tracing::warn!(
                    mac = %flapping.mac,
                    vlan = %flapping.vlan,
                    held_on = name(flapping.held_on),
                    refused_from = name(flapping.refused_from),
                    hold_down_secs = crate::fdb::MAC_MOVE_HOLD_DOWN.as_secs(),
                    earlier_warnings_held_back = held_back,
                    "MAC address flapping between ports: pinned to the port it was on"
                );
            }
        }
        if decision.share && self.state.fdb_sync.has_peers() {
            let mac = MacAddr::from_bytes(&buf.frame()[6..12]);
            self.state.fdb_sync.publish(FdbUpdate::Learned { vlan: decision.class.vlan, mac, port: in_port });
        }
        // Snooping for ARP/ND suppression: the cheap test first, then whether any port
        // suppresses, and only then the untagged copy of a tagged frame.
        if !matches!(decision.forward, Forward::Drop(_))
            && transmit::may_be_neighbour_message(buf.frame(), decision.class.strip)
            && self.state.ports.iter().any(|p| p.vxlan.as_ref().is_some_and(|v| v.arp_suppress()))
        {
            if let Some(view) = transmit::neighbour_view(buf.frame(), decision.class.strip, &mut self.scratch.untag) {
                let vlan = decision.class.vlan;
                if let Some((ip, mac)) = self.state.neighbours.observe(view, vlan, now) {
                    if self.state.fdb_sync.has_peers() {
                        self.state.fdb_sync.publish(FdbUpdate::Neighbour { vlan, ip, mac });
                    }
                }
            }
        }
        let taps = &self.state.ports[in_port.index()].taps;
        if !taps.is_empty() {
            let (drop, class) = match decision.forward {
                Forward::Drop(reason) => (Some(reason), crate::capture::RAW),
                _ => (None, decision.class),
            };
            crate::capture::tap_all(taps, crate::capture::Direction::Inbound, drop, buf.frame(), &class, now);
        }
        let sync = &mut self.state.fdb_sync;
        self.state.bridge.drain_mdb_updates(|update| {
            if sync.has_peers() {
                sync.publish(FdbUpdate::Mcast(update));
            }
        });
        if let Forward::Drop(reason) = decision.forward {
            return self.state.ports[in_port.index()].counters.drops.add(reason);
        }
        let (endpoints, scratch, class) = (&mut self.endpoints, &mut self.scratch, decision.class);
        fan_out(
            &mut self.state,
            in_port,
            decision.forward,
            class.vlan,
            &mut self.group_ports,
            |state, out, flooding| transmit(state, endpoints, out, buf, &class, flooding, scratch),
        );
    }
}

/// Hands `send` each port a forwarding decision takes the frame to (with whether it is
/// flooded there): the known unicast port; for a flood, every port [`Bridge::floods_to`]
/// admits; for snooped multicast, the group's members or the router ports, as far as
/// isolation lets it go. Forwarding sends there; a trace records ([`SwitchState::trace`]).
/// `ports` is reused scratch space.
fn fan_out(
    state: &mut SwitchState,
    in_port: PortId,
    forward: Forward,
    vlan: VlanId,
    ports: &mut Vec<PortId>,
    mut send: impl FnMut(&mut SwitchState, PortId, bool),
) {
    match forward {
        Forward::Drop(_) => {}
        Forward::Unicast(out) => send(state, out, false),
        Forward::Flood => {
            for out in 0..state.ports.len() {
                let out = PortId(out as u16);
                if state.bridge.floods_to(in_port, out) {
                    send(state, out, true);
                }
            }
        }
        Forward::Group(_) | Forward::Routers => {
            ports.clear();
            match forward {
                Forward::Group(group) => state.bridge.mdb().egress_ports(vlan, group, in_port, ports),
                _ => state.bridge.mdb().router_ports(in_port, ports),
            }
            for &out in ports.iter() {
                if out != in_port && state.bridge.floods_to(in_port, out) {
                    send(state, out, true);
                }
            }
        }
    }
}

/// Endpoints with frames (possibly) waiting: `pending` fills up while `serving` is worked
/// through; all keep their capacity, so marking never allocates. An endpoint a turn read from
/// but did not drain is `carried`: it is served again next turn, after the endpoints that
/// became ready meanwhile, so a frame arriving at a quiet port waits for one read of a busy
/// port, not two.
#[derive(Debug, Default)]
struct ReadyList {
    pending: Vec<usize>,
    serving: Vec<usize>,
    /// Served this turn but not drained: served next turn after those marked meanwhile.
    carried: Vec<usize>,
    marked: Vec<bool>,
}

impl ReadyList {
    fn add_endpoint(&mut self) {
        self.marked.push(false);
        self.pending.reserve(self.marked.len());
        self.serving.reserve(self.marked.len());
        self.carried.reserve(self.marked.len());
    }

    /// Serves `endpoint` again next turn, after those marked before then.
    fn carry(&mut self, endpoint: usize) {
        if !self.marked[endpoint] {
            self.marked[endpoint] = true;
            self.carried.push(endpoint);
        }
    }

    /// Queues the carried endpoints behind the ones marked since the last turn.
    fn mark_carried(&mut self) {
        self.pending.append(&mut self.carried);
    }

    fn mark(&mut self, endpoint: usize) {
        if !self.marked[endpoint] {
            self.marked[endpoint] = true;
            self.pending.push(endpoint);
        }
    }

    /// Moves the pending endpoints to `serving` and unmarks them, so one cut short by the
    /// batch limit can be marked again for the next turn.
    fn start_serving(&mut self) {
        std::mem::swap(&mut self.pending, &mut self.serving);
        for &endpoint in &self.serving {
            self.marked[endpoint] = false;
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tunnel_tests;
