//! The event loop: polls the ports, reads frames in bounded batches, asks the [`Bridge`]
//! where each goes, writes it out, and counts everything. It is the only clock reader.
//!
//! Rules it keeps (mio is edge-triggered):
//! - a readable port is read until `WouldBlock`, but at most [`BATCH`] frames per turn; a port
//!   cut short stays on the ready list and is served again on the next turn, after the
//!   others, so one busy port cannot starve the rest;
//! - the clock is read once per turn and that `now` is used for every frame of the turn;
//! - the loop sleeps until the bridge's next deadline (FDB aging) or the next event;
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
//! and whenever they go idle. Bonds and VXLAN ports keep their state (active member, LACP,
//! learned remotes) on the first worker alone: it receives on them, and the others hand it the
//! frames they forward toward them ([`crate::handoff`]).

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

/// Frames read from one port per turn before the loop moves on.
pub const BATCH: usize = 64;

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
    /// Another worker owns this port (a bond or VXLAN port, on a worker other than the
    /// first): frames for it are handed off.
    handed_off: bool,
    /// The kernel reports this port's link (through [`SwitchState::set_link`]); otherwise it
    /// is inferred from how sends fare.
    link_from_kernel: bool,
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
    pending_announce: Vec<(PortId, Failover)>,
    stop: bool,
    /// Worker threads forwarding for this bridge, this one included.
    threads: usize,
    /// FDB replication with the other workers (no peers with one worker).
    fdb_sync: FdbSync,
    /// The other workers (on the first worker only, once running).
    workers: Vec<WorkerLink>,
    /// The way to the first worker for frames toward ports it owns (other workers only).
    handoff: Option<HandoffSender>,
}

/// What a worker thread has counted, as it last published it for the first worker's answers.
#[derive(Debug, Clone, Default)]
pub struct WorkerTotals {
    /// Per port, by [`PortId`]: traffic counters and receive errors.
    pub ports: Vec<(PortCounters, u64)>,
    /// FDB updates the other workers' full inboxes refused.
    pub fdb_updates_lost: u64,
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
        self.ports.iter().find(|p| p.info.name == name)
    }

    /// Asks the loop to return after the current turn.
    pub fn request_stop(&mut self) {
        self.stop = true;
    }

    /// Records port `id`'s link state, counting changes. A port that goes down or away
    /// forgets the MACs learned behind it (as the kernel bridge does), so traffic to them
    /// floods and finds them wherever they reappear.
    ///
    /// From then on the port's link state is what the kernel says: sends no longer change it,
    /// and frames toward a port that is not up are counted `link_down` without a system call.
    /// The other workers learn the state too.
    pub fn set_link(&mut self, id: PortId, link: LinkState) {
        if self.set_link_here(id, link) && link != LinkState::Up {
            self.fdb_flush(Some(id));
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

    /// Records bond member `member`'s carrier at `now`; a resulting failover is announced.
    pub fn bond_carrier(&mut self, id: PortId, member: usize, carrier: bool, now: Instant) {
        if let Some(failover) =
            self.ports.get_mut(id.index()).and_then(|p| p.bond.as_mut()).and_then(|b| b.observe(member, carrier, now))
        {
            self.pending_announce.push((id, failover));
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
    batch: Vec<FrameBuf>,
    /// Where software segmentation and tunnel batching build frames.
    scratch: Scratch,
    ready: ReadyList,
    jobs_rx: Receiver<Job>,
    handle: SwitchHandle,
    /// Keep polling without sleeping for this long after the last frame (0: always sleep).
    busy_poll: Duration,
    last_frame: Instant,
    /// The other workers' I/O, one list per worker in [`PortId`] order, until [`Switch::run`]
    /// starts them.
    worker_ios: Vec<Vec<Box<dyn Port>>>,
    /// Where this worker publishes its counters (not on the first worker).
    publish: Option<Arc<Mutex<WorkerTotals>>>,
    /// Frames other workers hand over for the bonds and VXLAN ports this one owns.
    handoffs: Option<HandoffReceiver>,
    /// Counters changed since the last publication.
    unpublished: bool,
    /// When the kernel's drop counts are read next.
    next_kernel_drops: Instant,
    last_published: Instant,
    /// Paces the MAC-flapping warnings.
    flap_warnings: WarnBudget,
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
                pending_announce: Vec::new(),
                stop: false,
                threads: 1,
                fdb_sync: FdbSync::solo(),
                workers: Vec::new(),
                handoff: None,
            },
            endpoints: Vec::new(),
            batch: (0..BATCH).map(|_| FrameBuf::new(MAX_FRAME_LEN)).collect(),
            scratch: Scratch::new(),
            ready: ReadyList::default(),
            jobs_rx,
            handle: SwitchHandle { jobs: jobs_tx, waker },
            busy_poll: Duration::ZERO,
            last_frame: Instant::ZERO,
            worker_ios: Vec::new(),
            publish: None,
            handoffs: None,
            unpublished: false,
            last_published: Instant::ZERO,
            next_kernel_drops: Instant::ZERO,
            flap_warnings: WarnBudget::default(),
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

    /// Keeps polling (spinning on a zero-timeout poll) for `window` after the last frame before
    /// sleeping: a frame arriving meanwhile is served without a wake-up, at the cost of a core
    /// while traffic flows (Open vSwitch's PMD threads and DPDK poll all the time).
    pub fn set_busy_poll(&mut self, window: Duration) {
        self.busy_poll = window;
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
        let is_bond = bond.is_some();
        let offloads = if is_bond { None } else { ios.first().and_then(|io| io.offload_report()) };
        let mut endpoints = Vec::with_capacity(ios.len());
        for (member, io) in ios.into_iter().enumerate() {
            let index = self.endpoints.len();
            if let Some(fd) = io.raw_fd() {
                self.poll.registry().register(&mut SourceFd(&fd), Token(index), Interest::READABLE)?;
            }
            self.endpoints.push(Endpoint { io, port: id, member: is_bond.then_some(member), queued: false });
            self.scratch.to_flush.reserve_exact(self.endpoints.len());
            self.ready.add_endpoint();
            endpoints.push(index);
        }
        self.state.bridge.add_port(id, BridgePortConfig { mtu: info.mtu, vlan: info.vlan.clone(), bond: is_bond });
        self.state.ports.push(PortState {
            info,
            id,
            link: LinkState::Up,
            counters: PortCounters::default(),
            rx_errors: 0,
            link_changes: 0,
            bond,
            announcements: 0,
            offloads,
            vxlan: None,
            endpoints,
            handed_off: false,
            link_from_kernel: false,
        });
        Ok(id)
    }

    /// Adds a VXLAN tunnel port: `io` is its underlay (a [`crate::port::udp_tunnel::UdpTunnelPort`]).
    pub fn add_vxlan(&mut self, info: PortInfo, vxlan: Vxlan, io: Box<dyn Port>) -> io::Result<PortId> {
        let id = self.add(info, None, vec![io])?;
        self.owned_here();
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
            match worker.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(worker = index + 1, error = %e, "worker failed"),
                Err(_) => tracing::error!(worker = index + 1, "worker panicked"),
            }
        }
        self.publish_totals(self.clock.now());
        result
    }

    /// Starts a thread for each other worker, each a [`Switch`] over its own I/O with the
    /// same ports, a replica of the FDB, and a line back to this one.
    fn start_workers(&mut self) -> io::Result<Vec<thread::JoinHandle<io::Result<()>>>> {
        let ios = std::mem::take(&mut self.worker_ios);
        if ios.is_empty() {
            return Ok(Vec::new());
        }
        let mut mesh = FdbSync::mesh(ios.len() + 1).into_iter();
        self.state.fdb_sync = mesh.next().ok_or_else(|| io::Error::other("no FDB sync end"))?;
        let now = self.clock.now();
        let owned: Vec<bool> = self.state.ports.iter().map(|p| p.bond.is_some() || p.vxlan.is_some()).collect();
        let handoff = if owned.contains(&true) {
            let (sender, receiver) = crate::handoff::channel(Arc::clone(&self.handle.waker));
            self.handoffs = Some(receiver);
            Some(sender)
        } else {
            None
        };
        let mut started = Vec::new();
        for (index, (port_ios, sync)) in ios.into_iter().zip(mesh).enumerate() {
            let mut worker = Switch::new(&self.state.name, self.state.bridge.fdb().config())?;
            worker.clock = self.clock;
            worker.busy_poll = self.busy_poll;
            worker.state.threads = self.state.threads;
            for ((port, io), &owned) in self.state.ports.iter().zip(port_ios).zip(&owned) {
                let id = worker.add(port.info.clone(), None, vec![io])?;
                worker.state.ports[id.index()].handed_off = owned;
            }
            worker.state.handoff = handoff.clone();
            for entry in self.state.bridge.fdb().entries(now) {
                if entry.kind == crate::fdb::EntryKind::Static {
                    let _ = worker.state.bridge.fdb_mut().add_static(entry.vlan, entry.mac, entry.port);
                }
            }
            worker.state.fdb_sync = sync;
            let totals = Arc::new(Mutex::new(WorkerTotals::default()));
            worker.publish = Some(Arc::clone(&totals));
            self.state.workers.push(WorkerLink { handle: worker.handle(), totals });
            let thread = thread::Builder::new().name(format!("worker-{}", index + 1)).spawn(move || worker.run())?;
            started.push(thread);
        }
        Ok(started)
    }

    /// Publishes this worker's counters for the first worker (a no-op on the first worker).
    fn publish_totals(&mut self, now: Instant) {
        let Some(publish) = &self.publish else { return };
        let mut totals = publish.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        totals.ports.clear();
        totals.ports.extend(self.state.ports.iter().map(|p| (p.counters, p.rx_errors)));
        totals.fdb_updates_lost = self.state.fdb_sync.lost;
        self.unpublished = false;
        self.last_published = now;
    }

    /// The earliest deadline of the FDB, the bonds and the VXLAN endpoints.
    fn next_deadline(&self) -> Option<Instant> {
        let bonds = self
            .state
            .ports
            .iter()
            .filter_map(|p| match (&p.bond, &p.vxlan) {
                (Some(b), _) => b.next_deadline(),
                (_, Some(v)) => v.next_deadline(),
                _ => None,
            })
            .min();
        match (self.state.bridge.next_deadline(), bonds) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// One turn: wait for events (or a deadline), then serve jobs and ready endpoints.
    fn turn(&mut self) -> io::Result<()> {
        let timeout = if self.ready.pending.is_empty() {
            let now = self.clock.now();
            if !self.busy_poll.is_zero() && now.saturating_duration_since(self.last_frame) < self.busy_poll {
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
        if woken {
            while let Ok(job) = self.jobs_rx.try_recv() {
                job(&mut self.state, now);
            }
            self.swap_pending_io();
        }
        self.serve_handoffs();
        if self.state.fdb_sync.has_peers() {
            self.state.fdb_sync.apply_pending(self.state.bridge.fdb_mut(), now);
        }
        self.ready.start_serving();
        if !self.ready.serving.is_empty() {
            self.last_frame = now;
            self.unpublished = self.publish.is_some();
        }
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
                self.ready.again.push(endpoint);
            }
            served += 1;
        }
        for i in served..self.ready.serving.len() {
            self.ready.mark(self.ready.serving[i]);
        }
        while let Some(endpoint) = self.ready.again.pop() {
            self.ready.mark(endpoint);
        }
        self.ready.serving.clear();
        self.state.bridge.run(now);
        for port in &mut self.state.ports {
            if let Some(failover) = port.bond.as_mut().and_then(|b| b.run(now)) {
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
        self.announce_failovers();
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
        let limit = limit.min(BATCH);
        let (port, member) = (self.endpoints[endpoint].port, self.endpoints[endpoint].member);
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
            if self.state.ports[port.index()].vxlan.is_some() && !self.decapsulate(port, i, now) {
                continue;
            }
            self.forward(port, i, now);
        }
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
        self.flush_queued();
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

    /// Checks and strips the VXLAN encapsulation of the datagram in slot `slot` received on
    /// tunnel port `port`; a VNI mapped to a VLAN comes back as that VLAN's tag, which the
    /// port's trunk mode then takes off again. Returns whether the frame goes on to the bridge.
    fn decapsulate(&mut self, port: PortId, slot: usize, now: Instant) -> bool {
        let buf = &mut self.batch[slot];
        let state = &mut self.state.ports[port.index()];
        let Some(vxlan) = state.vxlan.as_mut() else { return true };
        let verdict = match buf.source {
            Some(source) => vxlan.decapsulate(source.ip(), buf.frame(), now),
            None => Err(DropReason::VxlanUnknownRemote),
        };
        match verdict {
            Ok(d) => {
                buf.pull_front(crate::wire::vxlan::HEADER_LEN);
                // A VTEP on this host (a kernel vxlan device behind a veth) hands over what
                // a NIC never would: offload metadata is lost on the way into a UDP socket, so
                // inner checksums may be partial and inner TCP frames may be whole GSO
                // super-frames. The first are finished; the second get a GSO header for the
                // port's MTU, so a kernel port downstream cuts them into segments.
                let mtu = state.info.mtu;
                if buf.len() > ethernet::HEADER_LEN + mtu as usize {
                    if let Some(gso) = crate::wire::l4::tcp_gso(buf.frame_mut(), mtu) {
                        buf.offload = gso;
                    }
                } else {
                    crate::wire::l4::finish_partial(buf.frame_mut());
                }
                if d.vlan != crate::VlanId::NONE {
                    let [c, d] = d.vlan.get().to_be_bytes();
                    buf.insert_tag([0x81, 0x00, c, d]);
                }
                true
            }
            Err(reason) => {
                state.counters.rx_frames += 1;
                state.counters.rx_bytes += buf.len() as u64;
                state.counters.drops.add(reason);
                false
            }
        }
    }

    /// Counts the frames the kernel dropped for each endpoint before they could be read. Only
    /// turns that run check (once a second at most): an idle loop has no new drops to find.
    fn count_kernel_drops(&mut self) {
        for endpoint in &mut self.endpoints {
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
        let buf = &mut self.batch[slot];
        let counters = &mut self.state.ports[in_port.index()].counters;
        counters.rx_frames += 1;
        counters.rx_bytes += buf.len() as u64;
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
        match decision.forward {
            Forward::Drop(reason) => self.state.ports[in_port.index()].counters.drops.add(reason),
            Forward::Unicast(out) => {
                transmit(&mut self.state, &mut self.endpoints, out, buf, &decision.class, false, &mut self.scratch)
            }
            Forward::Flood => {
                for out in 0..self.state.ports.len() {
                    let out = PortId(out as u16);
                    if out != in_port && self.state.bridge.port(out).is_some() {
                        transmit(
                            &mut self.state,
                            &mut self.endpoints,
                            out,
                            buf,
                            &decision.class,
                            true,
                            &mut self.scratch,
                        );
                    }
                }
            }
        }
    }
}

/// Endpoints with frames (possibly) waiting: `pending` fills up while `serving` is worked
/// through; both keep their capacity, so marking never allocates.
#[derive(Debug, Default)]
struct ReadyList {
    pending: Vec<usize>,
    serving: Vec<usize>,
    /// Served this turn but not drained: marked again after those not served at all.
    again: Vec<usize>,
    marked: Vec<bool>,
}

impl ReadyList {
    fn add_endpoint(&mut self) {
        self.marked.push(false);
        self.pending.reserve(self.marked.len());
        self.serving.reserve(self.marked.len());
        self.again.reserve(self.marked.len());
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

/// Writes the frame in `buf` to port `out`: to its one endpoint, or to the bond member(s) the
/// bond picks. The frame loses the `class.strip` tag bytes at offset 12 and gains whatever tag
/// the port's VLAN mode pushes. A flood skips ports outside the frame's VLAN silently; a
/// unicast to one is a drop.
fn transmit(
    state: &mut SwitchState,
    endpoints: &mut [Endpoint],
    out: PortId,
    buf: &mut FrameBuf,
    class: &Classified,
    flooding: bool,
    scratch: &mut Scratch,
) {
    if state.ports[out.index()].handed_off {
        let sent = state.handoff.as_mut().is_some_and(|h| h.send(out, class, flooding, buf));
        if !sent {
            state.ports[out.index()].counters.drops.add(DropReason::NoRoom);
        }
        return;
    }
    let egress = state.bridge.egress(out, buf.frame(), &buf.offload, class);
    let port = &mut state.ports[out.index()];
    let egress = match egress {
        Err(reason) => return port.counters.drops.add(reason),
        Ok(Egress::NotCarried) if flooding => return,
        Ok(Egress::NotCarried) => return port.counters.drops.add(DropReason::VlanNotAllowed),
        Ok(egress) => egress,
    };
    if port.vxlan.is_some() {
        return send_vxlan(port, endpoints, buf, class, scratch);
    }
    let choice = match port.bond.as_mut() {
        None => Transmit::One(0),
        Some(bond) => bond.transmit(buf.frame()),
    };
    match choice {
        Transmit::Nowhere => port.counters.drops.add(DropReason::NoBondMember),
        Transmit::One(member) => send_on(port, endpoints, member, buf, class, egress, scratch),
        Transmit::All => {
            for member in 0..port.endpoints.len() {
                if port.bond.as_ref().is_some_and(|b| b.members()[member].usable()) {
                    send_on(port, endpoints, member, buf, class, egress, scratch);
                }
            }
        }
    }
}

/// Encapsulates the frame for VXLAN port `port`: the VNI comes from the frame's VLAN, the port
/// tag is not part of the inner frame, and the datagram goes to the remote the destination MAC
/// was learned behind, or to every configured remote. A super-frame is cut into segments first.
fn send_vxlan(
    port: &mut PortState,
    endpoints: &mut [Endpoint],
    buf: &mut FrameBuf,
    class: &Classified,
    scratch: &mut Scratch,
) {
    let Some(vxlan) = port.vxlan.as_mut() else { return };
    let Some(vni) = vxlan.vni_for(class.vlan) else {
        return port.counters.drops.add(DropReason::VxlanNoVni);
    };
    let io = endpoints[port.endpoints[0]].io.as_mut();
    let destination = vxlan.destination(buf.frame(), class.vlan);
    scratch.sends += destination.map_or(vxlan.flood_remotes().len(), |_| 1).max(1);
    let flow = crate::bond::flow_hash(crate::bond::HashPolicy::Layer34, buf.frame());
    let header = crate::wire::vxlan::header(vni);
    let counters = &mut port.counters;
    let mut encapsulate = |frame: &[u8], vxlan: &mut Vxlan, counters: &mut PortCounters| {
        let (head, rest) = (&frame[..12], &frame[12 + class.strip..]);
        let inner_len = frame.len() - class.strip;
        let parts = [IoSlice::new(&header), IoSlice::new(head), IoSlice::new(rest)];
        send_encapsulated(io, &parts, inner_len, destination, flow, vxlan, counters);
    };
    if buf.offload.is_gso() {
        // Segments, each behind its VXLAN header, back to back: one UDP GSO send per group.
        let strip = class.strip;
        let (segment_buf, datagrams) = (&mut scratch.segment, &mut scratch.datagrams);
        let mut flush =
            |data: &[u8], size: usize, count: usize, inner: usize, vxlan: &mut Vxlan, counters: &mut PortCounters| {
                let targets = match destination {
                    Some(remote) => remote..remote + 1,
                    None => vxlan.flood_remotes(),
                };
                for remote in targets {
                    let Some(dest) = vxlan.remote_socket(remote) else { continue };
                    match io.send_datagrams_to(data, size, dest, flow) {
                        Ok(()) => {
                            vxlan.count_tx_batch(remote, count, inner);
                            counters.tx_frames += count as u64;
                            counters.tx_bytes += inner as u64;
                        }
                        Err(e) => counters.drops.add_many(tunnel_send_drop(&e), count as u64),
                    }
                }
            };
        let (mut len, mut count, mut size, mut inner) = (0usize, 0usize, 0usize, 0usize);
        let mtu = port.info.mtu;
        let result = gso::segment(buf.frame(), &buf.offload, mtu, segment_buf, |segment| {
            let datagram = crate::wire::vxlan::HEADER_LEN + segment.len() - strip;
            if count > 0 && (len + datagram > MAX_BATCH_BYTES || count == MAX_BATCH_DATAGRAMS || datagram > size) {
                flush(&datagrams[..len], size, count, inner, vxlan, counters);
                (len, count, inner) = (0, 0, 0);
            }
            if count == 0 {
                size = datagram;
            }
            let out = &mut datagrams[len..len + datagram];
            out[..8].copy_from_slice(&header);
            out[8..20].copy_from_slice(&segment[..12]);
            out[20..].copy_from_slice(&segment[12 + strip..]);
            len += datagram;
            count += 1;
            inner += datagram - crate::wire::vxlan::HEADER_LEN;
        });
        if count > 0 {
            flush(&datagrams[..len], size, count, inner, vxlan, counters);
        }
        if let Err(e) = result {
            counters.drops.add(segmentation_drop(e));
        }
        return;
    }
    if buf.offload.needs_csum() {
        let offload = buf.offload;
        let Some(done) = offload.complete_checksum(buf.frame_mut()) else {
            return counters.drops.add(DropReason::BadOffload);
        };
        buf.offload = done;
    }
    encapsulate(buf.frame(), vxlan, counters);
}

const UNSPECIFIED: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0));

/// Sends one encapsulated datagram (`parts`, carrying `inner_len` bytes of inner frame) to
/// `destination`, the remote its inner destination was learned behind, or else to every
/// configured remote (head-end replication; learned remotes get unicast only), as many per
/// `sendmmsg` as [`crate::sys::SEND_TO_EACH_MAX`]. Each copy is counted, sent or dropped.
fn send_encapsulated(
    io: &mut dyn Port,
    parts: &[IoSlice<'_>],
    inner_len: usize,
    destination: Option<usize>,
    flow: u64,
    vxlan: &mut Vxlan,
    counters: &mut PortCounters,
) {
    let mut remotes = [0usize; crate::sys::SEND_TO_EACH_MAX];
    let mut dests = [UNSPECIFIED; crate::sys::SEND_TO_EACH_MAX];
    let mut count = 0;
    let candidates = match destination {
        Some(remote) => remote..remote + 1,
        None => vxlan.flood_remotes(),
    };
    for remote in candidates {
        let Some(dest) = vxlan.remote_socket(remote) else { continue };
        (remotes[count], dests[count]) = (remote, dest);
        count += 1;
        if count == dests.len() {
            send_to_targets(io, parts, inner_len, &remotes, &dests, flow, vxlan, counters);
            count = 0;
        }
    }
    send_to_targets(io, parts, inner_len, &remotes[..count], &dests[..count], flow, vxlan, counters);
}

/// Sends `parts` to each of `dests` (the addresses of remotes `remotes`) in one call where the
/// port can, counting each copy; a copy the kernel refuses is counted as a drop and the rest
/// still go.
#[allow(clippy::too_many_arguments)]
fn send_to_targets(
    io: &mut dyn Port,
    parts: &[IoSlice<'_>],
    inner_len: usize,
    remotes: &[usize],
    dests: &[SocketAddr],
    flow: u64,
    vxlan: &mut Vxlan,
    counters: &mut PortCounters,
) {
    let mut next = 0;
    while next < dests.len() {
        match io.send_to_each(parts, &dests[next..], flow) {
            Ok(sent) if sent > 0 => {
                for &remote in &remotes[next..next + sent] {
                    vxlan.count_tx(remote, inner_len);
                    counters.tx_frames += 1;
                    counters.tx_bytes += inner_len as u64;
                }
                next += sent;
            }
            Ok(_) => {
                counters.drops.add(DropReason::NoRoom);
                next += 1;
            }
            Err(e) => {
                counters.drops.add(tunnel_send_drop(&e));
                next += 1;
            }
        }
    }
}

/// The drop reason for a datagram the underlay refused.
fn tunnel_send_drop(error: &io::Error) -> DropReason {
    match error.raw_os_error() {
        Some(libc::EMSGSIZE) => DropReason::VxlanTooBig,
        Some(libc::EAGAIN | libc::ENOBUFS) => DropReason::NoRoom,
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN) => DropReason::LinkDown,
        _ => DropReason::TxError,
    }
}

/// The most bytes of VXLAN datagrams handed to one UDP GSO send (the UDP payload limit, with
/// room to spare).
const MAX_BATCH_BYTES: usize = 65_000;
/// The most datagrams in one UDP GSO send (the kernel's limit is 64 on older kernels).
const MAX_BATCH_DATAGRAMS: usize = 64;

/// Buffers the transmit path builds frames in, allocated once.
#[derive(Debug)]
struct Scratch {
    /// One segment of a super-frame being cut.
    segment: Box<[u8]>,
    /// Encapsulated segments laid back to back for one batched send.
    datagrams: Box<[u8]>,
    /// Endpoints whose ports queued frames this batch (capacity: every endpoint).
    to_flush: Vec<usize>,
    /// Sends made this turn.
    sends: usize,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            segment: vec![0u8; MAX_FRAME_LEN].into_boxed_slice(),
            datagrams: vec![0u8; MAX_BATCH_BYTES + MAX_FRAME_LEN].into_boxed_slice(),
            to_flush: Vec::new(),
            sends: 0,
        }
    }
}

fn segmentation_drop(error: gso::GsoError) -> DropReason {
    match error {
        gso::GsoError::Unsupported | gso::GsoError::TooBig => DropReason::NoSegmentation,
        gso::GsoError::Malformed | gso::GsoError::AbsurdSegmentSize => DropReason::BadOffload,
        gso::GsoError::ExceedsMtu => DropReason::EgressOversize,
    }
}

/// Sends `frame` on `io`, less the `class.strip` tag bytes at offset 12 and plus the tag
/// `egress` pushes, with offload metadata `offload` (moved along with the tag). Returns the
/// bytes sent.
fn send_frame(
    io: &mut dyn Port,
    frame: &[u8],
    class: &Classified,
    egress: Egress,
    offload: &VnetHdr,
) -> io::Result<usize> {
    let (head, rest) = (&frame[..12], &frame[12 + class.strip..]);
    match egress {
        Egress::Tagged(push) => {
            let tag = push.bytes();
            let offload = offload.shifted(tag.len() as i32 - class.strip as i32);
            io.send(&[IoSlice::new(head), IoSlice::new(&tag), IoSlice::new(rest)], &offload)
                .map(|()| frame.len() - class.strip + tag.len())
        }
        _ if class.strip == 0 => io.send(&[IoSlice::new(frame)], offload).map(|()| frame.len()),
        _ => {
            let offload = offload.shifted(-(class.strip as i32));
            io.send(&[IoSlice::new(head), IoSlice::new(rest)], &offload).map(|()| frame.len() - class.strip)
        }
    }
}

/// Takes frames a port queued but the kernel refused off the sent counters of `port` (and of
/// bond member `member`) and counts them as drops.
fn uncount_failed(port: &mut PortState, member: usize, failure: &crate::port::SendFailure) {
    let reason = send_error_reason(&failure.error);
    if let Some(m) = port.bond.as_mut().and_then(|b| b.member_mut(member)) {
        m.counters.tx_frames = m.counters.tx_frames.saturating_sub(failure.frames);
        m.counters.tx_bytes = m.counters.tx_bytes.saturating_sub(failure.bytes);
        m.counters.drops.add_many(reason, failure.frames);
    }
    let counters = &mut port.counters;
    counters.tx_frames = counters.tx_frames.saturating_sub(failure.frames);
    counters.tx_bytes = counters.tx_bytes.saturating_sub(failure.bytes);
    counters.drops.add_many(reason, failure.frames);
}

/// The drop reason for a failed send.
fn send_error_reason(error: &io::Error) -> DropReason {
    match error.raw_os_error() {
        Some(libc::EAGAIN | libc::ENOBUFS) => DropReason::NoRoom,
        Some(libc::EIO | libc::ENETDOWN | libc::ENXIO | libc::ENODEV) => DropReason::LinkDown,
        _ => DropReason::TxError,
    }
}

/// Counts a drop on `port` (and on its bond member `member`, if it is a bond).
fn count_drop(port: &mut PortState, member: usize, reason: DropReason) {
    port.counters.drops.add(reason);
    if let Some(m) = port.bond.as_mut().and_then(|b| b.member_mut(member)) {
        m.counters.drops.add(reason);
    }
}

/// Counts the result of a send on `port` (and on bond member `member`), and updates the link
/// state a TAP's errors reveal.
fn count_sent(port: &mut PortState, member: usize, sent: io::Result<usize>) {
    match sent {
        Ok(len) => {
            port.counters.tx_frames += 1;
            port.counters.tx_bytes += len as u64;
            if let Some(m) = port.bond.as_mut().and_then(|b| b.member_mut(member)) {
                m.counters.tx_frames += 1;
                m.counters.tx_bytes += len as u64;
            } else if port.link == LinkState::Down && !port.link_from_kernel {
                port.link = LinkState::Up;
                port.link_changes += 1;
            }
        }
        Err(e) => {
            let reason = send_error_reason(&e);
            if reason == DropReason::LinkDown
                && port.bond.is_none()
                && port.link == LinkState::Up
                && !port.link_from_kernel
            {
                port.link = LinkState::Down;
                port.link_changes += 1;
            }
            count_drop(port, member, reason);
        }
    }
}

/// Sends the frame on `port`'s endpoint number `member` and counts the result. Toward an
/// endpoint that does not carry offload metadata, a super-frame is cut into segments (in
/// `scratch`) and a partial checksum is completed in place (it stays complete for the ports
/// after this one).
fn send_on(
    port: &mut PortState,
    endpoints: &mut [Endpoint],
    member: usize,
    buf: &mut FrameBuf,
    class: &Classified,
    egress: Egress,
    scratch: &mut Scratch,
) {
    let Some(&index) = port.endpoints.get(member) else { return };
    if port.link_from_kernel && port.link != LinkState::Up && port.bond.is_none() {
        return count_drop(port, member, DropReason::LinkDown);
    }
    scratch.sends += 1;
    endpoints[index].note_send(index, &mut scratch.to_flush);
    let io = endpoints[index].io.as_mut();
    if !io.carries_offload() {
        if buf.offload.is_gso() {
            let plain = VnetHdr::default();
            let mtu = port.info.mtu;
            let result = gso::segment(buf.frame(), &buf.offload, mtu, &mut scratch.segment, |segment| {
                let sent = send_frame(io, segment, class, egress, &plain);
                count_sent(port, member, sent);
            });
            match result {
                Ok(segments) => scratch.sends += segments.saturating_sub(1), // each one a send
                Err(e) => count_drop(port, member, segmentation_drop(e)),
            }
            return;
        }
        if buf.offload.needs_csum() {
            let offload = buf.offload;
            let Some(done) = offload.complete_checksum(buf.frame_mut()) else {
                return count_drop(port, member, DropReason::BadOffload);
            };
            buf.offload = done;
        }
    }
    let sent = send_frame(io, buf.frame(), class, egress, &buf.offload);
    count_sent(port, member, sent);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::datagram::DatagramPort;
    use crate::wire::{EtherType, EthernetFrame, MacAddr};
    use std::os::unix::net::UnixDatagram;
    use std::thread;

    #[test]
    fn flapping_warnings_are_paced_and_the_held_back_counted() {
        let mut budget = WarnBudget::default();
        let at = |ms: u64| Instant::from_nanos(ms * 1_000_000);
        for n in 0..WarnBudget::PER_SECOND {
            assert_eq!(budget.take(at(u64::from(n))), Some(0));
        }
        assert_eq!(budget.take(at(500)), None);
        assert_eq!(budget.take(at(999)), None);
        assert_eq!(budget.take(at(1000)), Some(2), "the next second's first says how many were held back");
        assert_eq!(budget.take(at(1001)), Some(0));
    }

    fn frame(dst: MacAddr, src: MacAddr, payload_len: usize) -> Vec<u8> {
        let mut bytes = vec![0x5au8; 14 + payload_len];
        let mut f = EthernetFrame::new_unchecked(&mut bytes[..]);
        f.set_dst_addr(dst);
        f.set_src_addr(src);
        f.set_ethertype(EtherType::Ipv4);
        bytes
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, n])
    }

    /// A running switch with `n` datagram ports; returns the hosts' ends.
    fn start(n: usize) -> (SwitchHandle, thread::JoinHandle<Switch>, Vec<UnixDatagram>) {
        start_with(&vec![(VlanMode::Transparent, false); n])
    }

    /// A running switch with one datagram port per (VLAN mode, carries offload) pair.
    fn start_with(ports: &[(VlanMode, bool)]) -> (SwitchHandle, thread::JoinHandle<Switch>, Vec<UnixDatagram>) {
        let (switch, hosts) = switch_with(ports);
        let (handle, thread) = run_in_thread(switch);
        (handle, thread, hosts)
    }

    /// A switch, not running yet, with one datagram port per (VLAN mode, carries offload)
    /// pair; returns the hosts' ends.
    fn switch_with(ports: &[(VlanMode, bool)]) -> (Switch, Vec<UnixDatagram>) {
        let mut switch = Switch::new("test", FdbConfig::default()).unwrap();
        let mut hosts = Vec::new();
        for (i, (vlan, offload)) in ports.iter().enumerate() {
            let (port, host) = if *offload { DatagramPort::pair_with_offload() } else { DatagramPort::pair() }.unwrap();
            host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let info = PortInfo { vlan: vlan.clone(), ..plain(&format!("p{i}")) };
            switch.add_port(info, Box::new(port)).unwrap();
            hosts.push(host);
        }
        (switch, hosts)
    }

    fn recv(host: &UnixDatagram) -> Vec<u8> {
        let mut buf = vec![0u8; 65536];
        let n = host.recv(&mut buf).expect("frame expected");
        buf.truncate(n);
        buf
    }

    fn assert_nothing_waiting(host: &UnixDatagram) {
        host.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2048];
        assert_eq!(host.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        host.set_nonblocking(false).unwrap();
    }

    /// Runs `switch` on a thread of its own until stopped; the thread returns it for inspection.
    fn run_in_thread(mut switch: Switch) -> (SwitchHandle, thread::JoinHandle<Switch>) {
        let handle = switch.handle();
        let thread = thread::spawn(move || {
            switch.run().unwrap();
            switch
        });
        (handle, thread)
    }

    /// A VXLAN endpoint on loopback (127.0.0.1, UDP port `port`) with VNI `vni` and `remotes`.
    fn loopback_vxlan(port: u16, remotes: Vec<std::net::IpAddr>, vni: u32) -> crate::vxlan::VxlanConfig {
        crate::vxlan::VxlanConfig {
            local: std::net::Ipv4Addr::LOCALHOST.into(),
            dst_port: port,
            remotes,
            allowed: vec![],
            learning: true,
            vnis: crate::vxlan::VniMap::Single(vni),
            aging: Duration::from_secs(300),
            max_learned: 100,
        }
    }

    /// Waits until every job submitted before has run (jobs run in order).
    fn sync(handle: &SwitchHandle) {
        handle.call(|_, _| (), Duration::from_secs(5)).unwrap();
    }

    /// Two workers over three ports: `hosts[port][worker]`.
    fn start_two_workers() -> (SwitchHandle, thread::JoinHandle<Switch>, Vec<Vec<UnixDatagram>>) {
        let mut switch = Switch::new("test", FdbConfig::default()).unwrap();
        switch.set_threads(2).unwrap();
        let mut hosts = Vec::new();
        for i in 0..3 {
            let mut ios: Vec<Box<dyn Port>> = Vec::new();
            let mut ends = Vec::new();
            for _ in 0..2 {
                let (port, host) = DatagramPort::pair().unwrap();
                host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                ios.push(Box::new(port));
                ends.push(host);
            }
            switch.add_port_queues(plain(&format!("p{i}")), ios).unwrap();
            hosts.push(ends);
        }
        let (handle, thread) = run_in_thread(switch);
        (handle, thread, hosts)
    }

    /// Asks the first worker `f` until it says yes (updates from other workers arrive between
    /// its batches).
    fn eventually(handle: &SwitchHandle, f: impl Fn(&mut SwitchState) -> bool + Send + Copy + 'static) {
        for _ in 0..500 {
            if handle.call(move |s, _| f(s), Duration::from_secs(5)).unwrap() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("the first worker never got there");
    }

    #[test]
    fn workers_share_what_they_learn_and_what_the_operator_changes() {
        let (handle, thread, hosts) = start_two_workers();
        let mut ports = Switch::new("x", FdbConfig::default()).unwrap();
        let info =
            PortInfo { name: "q".into(), kind: "datagram".into(), netns: None, mtu: 1500, vlan: VlanMode::Transparent };
        ports.set_threads(2).unwrap();
        let (one, _host) = DatagramPort::pair().unwrap();
        assert!(ports.add_port(info, Box::new(one)).is_err(), "two workers need two I/Os per port");

        // Worker 1 hears A first and floods on its own I/O.
        let a_to_b = frame(mac(2), mac(1), 46);
        hosts[0][1].send(&a_to_b).unwrap();
        assert_eq!(recv(&hosts[1][1]), a_to_b);
        assert_eq!(recv(&hosts[2][1]), a_to_b);
        // Worker 0 learns where A is from worker 1 and unicasts B's answer.
        eventually(&handle, |s| s.bridge.fdb().lookup(VlanId::NONE, mac(1)) == Some(PortId(0)));
        let b_to_a = frame(mac(1), mac(2), 46);
        hosts[1][0].send(&b_to_a).unwrap();
        assert_eq!(recv(&hosts[0][0]), b_to_a);
        sync(&handle);
        for quiet in [&hosts[2][0], &hosts[2][1], &hosts[0][1]] {
            assert_nothing_waiting(quiet);
        }
        // Counters add up across workers.
        eventually(&handle, |s| s.worker_rx_frames() == vec![1, 1]);
        let (a, _) = handle.call(|s, _| s.port_totals(PortId(0)), Duration::from_secs(5)).unwrap();
        assert_eq!((a.rx_frames, a.tx_frames), (1, 1));
        let (c, _) = handle.call(|s, _| s.port_totals(PortId(2)), Duration::from_secs(5)).unwrap();
        assert_eq!((c.rx_frames, c.tx_frames, c.tx_bytes), (0, 1, 60));

        // A flush on the first worker reaches worker 1: it floods toward B again.
        eventually(&handle, |s| s.bridge.fdb().len() == 2);
        assert_eq!(handle.call(|s, _| s.fdb_flush(None), Duration::from_secs(5)).unwrap(), 2);
        let c_to_b = frame(mac(2), mac(3), 46);
        hosts[2][1].send(&c_to_b).unwrap();
        assert_eq!(recv(&hosts[1][1]), c_to_b);
        assert_eq!(recv(&hosts[0][1]), c_to_b);
        assert_eq!(handle.call(|s, _| s.fdb_updates_lost(), Duration::from_secs(5)).unwrap(), 0);

        handle.stop().unwrap();
        let switch = thread.join().unwrap();
        assert_eq!(switch.state().worker_rx_frames(), vec![1, 2], "worker 1 published its last counts");
    }

    /// A port that queues every send and has the kernel refuse them all on flush.
    #[derive(Debug, Default)]
    struct RefusingQueue {
        frames: u64,
        bytes: u64,
        flushes: Arc<Mutex<u64>>,
    }

    impl Port for RefusingQueue {
        fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
            None
        }
        fn recv(&mut self, _: &mut FrameBuf) -> io::Result<()> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn send(&mut self, parts: &[IoSlice<'_>], _: &VnetHdr) -> io::Result<()> {
            self.frames += 1;
            self.bytes += parts.iter().map(|p| p.len() as u64).sum::<u64>();
            Ok(())
        }
        fn queues_sends(&self) -> bool {
            true
        }
        fn flush(&mut self) -> Result<(), crate::port::SendFailure> {
            *self.flushes.lock().unwrap() += 1;
            let (frames, bytes) = (std::mem::take(&mut self.frames), std::mem::take(&mut self.bytes));
            if frames == 0 {
                return Ok(());
            }
            Err(crate::port::SendFailure { frames, bytes, error: io::Error::from_raw_os_error(libc::ENOBUFS) })
        }
    }

    /// A plain port's description.
    /// With a hundred ports all flooding, one turn writes a bounded number of frames (so jobs
    /// and signals wait a few milliseconds at most), the ports a turn did not reach go first in
    /// the next, and everything is delivered in the end.
    #[test]
    fn a_turn_is_bounded_by_what_it_writes_and_no_port_is_left_behind() {
        use crate::port::memory::{Framing, MemoryPort, lock};
        const PORTS: usize = 100;
        const FRAMES: usize = 30;
        let mut switch = Switch::new("t", FdbConfig::default()).unwrap();
        let mut wires = Vec::new();
        for i in 0..PORTS {
            let (io, wire) = MemoryPort::new(Framing::Plain, 1500);
            switch.add_port(plain(&format!("p{i}")), Box::new(io)).unwrap();
            for _ in 0..FRAMES {
                lock(&wire).inbox.push_back((frame(MacAddr::BROADCAST, mac(i as u8 + 1), 50), None));
            }
            wires.push(wire);
        }
        let sent = |wires: &[crate::port::memory::WireHandle]| wires.iter().map(|w| lock(w).sent).sum::<u64>();
        let waiting = |wires: &[crate::port::memory::WireHandle], i: usize| lock(&wires[i]).inbox.len();
        switch.run_once(Instant::ZERO);
        let first = sent(&wires);
        assert!(first as usize <= 2 * TURN_SENDS, "one turn wrote {first} frames");
        assert_eq!((waiting(&wires, 0), waiting(&wires, 1), waiting(&wires, 2)), (0, 0, FRAMES));
        switch.run_once(Instant::ZERO);
        assert_eq!(waiting(&wires, 2), 0, "the ports left out go first next turn");
        let mut turns = 2;
        while wires.iter().any(|w| !lock(w).inbox.is_empty()) {
            switch.run_once(Instant::ZERO);
            turns += 1;
            assert!(turns < 1000);
        }
        assert_eq!(sent(&wires) as usize, PORTS * FRAMES * (PORTS - 1), "every flood reached every other port");
    }

    /// An 802.3ad bond with a member down: the loop's next deadline is a LACP period away, not
    /// in the past (which woke the loop every millisecond).
    #[test]
    fn an_lacp_bond_with_a_member_down_lets_the_loop_sleep() {
        use crate::bond::lacp::LacpSettings;
        use crate::bond::{BondConfig, BondMode, HashPolicy};
        use crate::port::memory::{Framing, MemoryPort};
        let mut switch = Switch::new("t", FdbConfig::default()).unwrap();
        let settings = LacpSettings { active: true, fast: true, system: mac(9), system_priority: 65535, key: 1 };
        let config = BondConfig {
            mode: BondMode::Lacp(HashPolicy::Layer34),
            miimon: Duration::from_millis(100),
            updelay: Duration::ZERO,
            downdelay: Duration::ZERO,
            primary: None,
            lacp: Some(settings),
        };
        let mut bond = Bond::new(config, vec!["a".into(), "b".into()]);
        bond.observe(0, true, Instant::ZERO);
        bond.observe(1, false, Instant::ZERO);
        let members: Vec<Box<dyn Port>> =
            (0..2).map(|_| Box::new(MemoryPort::new(Framing::Plain, 1500).0) as Box<dyn Port>).collect();
        switch.add_bond(plain("bond"), bond, members).unwrap();
        let mut now = Instant::from_nanos(1_000_000_000);
        for _ in 0..5 {
            switch.run_once(now);
            let next = switch.next_deadline().expect("LACP has timers");
            assert!(next >= now + Duration::from_millis(500), "the loop would wake at {next:?}, now {now:?}");
            now = next;
        }
    }

    #[test]
    fn frames_the_kernel_dropped_before_they_were_read_are_counted_once() {
        use crate::port::memory::{Framing, MemoryPort, lock};
        let mut switch = Switch::new("t", FdbConfig::default()).unwrap();
        let (a, wire) = MemoryPort::new(Framing::Plain, 1500);
        let pa = switch.add_port(plain("a"), Box::new(a)).unwrap();
        lock(&wire).kernel_drops = 5;
        let t0 = Instant::from_nanos(1);
        switch.run_once(t0);
        lock(&wire).kernel_drops = 2;
        switch.run_once(t0 + Duration::from_millis(10)); // read at most once a second
        let overflow = |s: &Switch| s.state().ports[pa.index()].counters.drops.get(DropReason::RxOverflow);
        assert_eq!(overflow(&switch), 5);
        switch.run_once(t0 + KERNEL_DROPS_EVERY);
        assert_eq!(overflow(&switch), 7);
        assert_eq!(switch.state().ports[pa.index()].counters.rx_frames, 7);
    }

    #[test]
    fn a_frame_longer_than_the_buffer_is_counted_never_forwarded_cut_short() {
        use crate::port::memory::{Framing, MemoryPort, lock};
        let mut switch = Switch::new("t", FdbConfig::default()).unwrap();
        let (a, wire_a) = MemoryPort::new(Framing::VnetHdr, 65_000);
        let (b, wire_b) = MemoryPort::new(Framing::VnetHdr, 65_000);
        let pa = switch.add_port(PortInfo { mtu: 65_000, ..plain("a") }, Box::new(a)).unwrap();
        switch.add_port(PortInfo { mtu: 65_000, ..plain("b") }, Box::new(b)).unwrap();
        let mut long = VnetHdr::default().emit().to_vec();
        long.extend_from_slice(&frame(mac(2), mac(1), MAX_FRAME_LEN));
        lock(&wire_a).inbox.push_back((long, None));
        switch.run_once(Instant::ZERO);
        assert_eq!(lock(&wire_b).sent, 0);
        let counters = &switch.state().ports[pa.index()].counters;
        assert_eq!((counters.rx_frames, counters.drops.get(DropReason::Truncated)), (1, 1));
    }

    #[test]
    fn a_port_the_kernel_reports_down_stays_down_however_many_frames_go_toward_it() {
        use crate::port::memory::{Framing, MemoryPort, lock};
        let mut switch = Switch::new("t", FdbConfig::default()).unwrap();
        let (a, wire_a) = MemoryPort::new(Framing::Plain, 1500);
        let (b, wire_b) = MemoryPort::new(Framing::Plain, 1500);
        switch.add_port(plain("a"), Box::new(a)).unwrap();
        let pb = switch.add_port(plain("b"), Box::new(b)).unwrap();
        switch.state_mut().set_link(pb, LinkState::Down);
        for i in 0..3 {
            lock(&wire_a).inbox.push_back((frame(mac(2), mac(1), 50), None));
            switch.run_once(Instant::from_nanos(i));
        }
        assert_eq!(lock(&wire_b).sent, 0, "nothing is sent toward a port that is down");
        let port = &switch.state().ports[pb.index()];
        assert_eq!(port.link, LinkState::Down);
        assert_eq!(port.counters.drops.get(DropReason::LinkDown), 3);
        switch.state_mut().set_link(pb, LinkState::Up);
        lock(&wire_a).inbox.push_back((frame(mac(2), mac(1), 50), None));
        switch.run_once(Instant::from_nanos(10));
        assert_eq!(lock(&wire_b).sent, 1);
    }

    fn plain(name: &str) -> PortInfo {
        PortInfo { name: name.into(), kind: "datagram".into(), netns: None, mtu: 1500, vlan: VlanMode::Transparent }
    }

    /// A switch, not running yet, with `n` plain datagram ports; returns the hosts' ends.
    fn datagram_switch(n: usize) -> (Switch, Vec<UnixDatagram>) {
        switch_with(&vec![(VlanMode::Transparent, false); n])
    }

    #[test]
    fn queued_frames_the_kernel_refuses_come_off_the_sent_counters_as_drops() {
        let (mut switch, hosts) = datagram_switch(2);
        let queue = RefusingQueue::default();
        let flushes = Arc::clone(&queue.flushes);
        let info =
            PortInfo { name: "q".into(), kind: "queue".into(), netns: None, mtu: 1500, vlan: VlanMode::Transparent };
        switch.add_port(info, Box::new(queue)).unwrap();
        let (handle, thread) = run_in_thread(switch);
        for _ in 0..3 {
            let flood = frame(MacAddr::BROADCAST, mac(1), 46);
            hosts[0].send(&flood).unwrap();
            assert_eq!(recv(&hosts[1]), flood);
        }
        sync(&handle);
        handle.stop().unwrap();
        let switch = thread.join().unwrap();
        let q = &switch.state().ports[2].counters;
        assert_eq!((q.tx_frames, q.tx_bytes), (0, 0), "refused frames are not counted as sent");
        assert_eq!(q.drops.get(DropReason::NoRoom), 3);
        assert!(*flushes.lock().unwrap() >= 3, "flushed after every batch");
        assert_eq!(switch.state().ports[1].counters.tx_frames, 3);
    }

    #[test]
    fn floods_unknown_then_forwards_learned_unicast() {
        let (handle, thread, hosts) = start(3);
        let a_to_b = frame(mac(2), mac(1), 46);
        hosts[0].send(&a_to_b).unwrap();
        assert_eq!(recv(&hosts[1]), a_to_b);
        assert_eq!(recv(&hosts[2]), a_to_b);
        let b_to_a = frame(mac(1), mac(2), 46);
        hosts[1].send(&b_to_a).unwrap();
        assert_eq!(recv(&hosts[0]), b_to_a);
        sync(&handle);
        assert_nothing_waiting(&hosts[2]);
        assert_nothing_waiting(&hosts[1]);

        let fdb: Vec<_> = handle
            .call(
                |s, now| s.bridge.fdb().entries(now).map(|e| (e.mac, e.port)).collect::<Vec<_>>(),
                Duration::from_secs(5),
            )
            .unwrap();
        assert!(fdb.contains(&(mac(1), PortId(0))) && fdb.contains(&(mac(2), PortId(1))));
        handle.stop().unwrap();
        let switch = thread.join().unwrap();
        let ports = &switch.state().ports;
        assert_eq!((ports[0].counters.rx_frames, ports[0].counters.tx_frames), (1, 1));
        assert_eq!((ports[1].counters.rx_frames, ports[1].counters.tx_frames), (1, 1));
        assert_eq!((ports[2].counters.rx_frames, ports[2].counters.tx_frames), (0, 1));
        assert_eq!(ports[2].counters.tx_bytes, 60);
    }

    #[test]
    fn bad_frames_are_counted_by_reason_and_the_switch_keeps_going() {
        let (handle, thread, hosts) = start(2);
        hosts[0].send(&[0u8; 5]).unwrap();
        hosts[0].send(&[]).unwrap();
        hosts[0].send(&frame(mac(2), mac(1), 1501)).unwrap();
        hosts[0].send(&frame(mac(2), MacAddr::BROADCAST, 46)).unwrap();
        let good = frame(mac(2), mac(1), 1500);
        hosts[0].send(&good).unwrap();
        assert_eq!(recv(&hosts[1]), good);
        handle.stop().unwrap();
        let switch = thread.join().unwrap();
        let p0 = &switch.state().ports[0].counters;
        assert_eq!(p0.rx_frames, 5);
        assert_eq!(p0.drops.get(DropReason::Runt), 2);
        assert_eq!(p0.drops.get(DropReason::Oversize), 1);
        assert_eq!(p0.drops.get(DropReason::InvalidSource), 1);
        assert_eq!(p0.drops.total(), 4);
    }

    #[test]
    fn a_full_egress_queue_is_counted_as_no_room() {
        let (handle, thread, hosts) = start(2);
        // Never read host 1: its socket buffer fills and sends start failing with EAGAIN.
        let f = frame(mac(2), mac(1), 1000);
        for _ in 0..2000 {
            hosts[0].send(&f).unwrap();
        }
        let seen = loop {
            let (rx, tx, no_room) = handle
                .call(
                    |s, _| {
                        let (p0, p1) = (&s.ports[0].counters, &s.ports[1].counters);
                        (p0.rx_frames, p1.tx_frames, p1.drops.get(DropReason::NoRoom))
                    },
                    Duration::from_secs(5),
                )
                .unwrap();
            if rx == 2000 {
                break (tx, no_room);
            }
            thread::yield_now();
        };
        assert!(seen.1 > 0, "expected no_room drops, got {seen:?}");
        assert_eq!(seen.0 + seen.1, 2000);
        handle.stop().unwrap();
        thread.join().unwrap();
    }

    fn vid(n: u16) -> crate::VlanId {
        crate::VlanId::new(n).unwrap()
    }

    #[test]
    fn access_ports_and_trunks_tag_and_untag() {
        let trunk =
            VlanMode::Trunk { allowed: Box::new([vid(10), vid(20)].into_iter().collect()), native: None, tpid: 0x8100 };
        let (handle, thread, hosts) =
            start_with(&[(VlanMode::Access(vid(10)), false), (VlanMode::Access(vid(20)), false), (trunk, false)]);
        let untagged = frame(MacAddr::BROADCAST, mac(1), 46);
        hosts[0].send(&untagged).unwrap();
        let tagged = recv(&hosts[2]);
        let expected: Vec<u8> = [&untagged[..12], &[0x81, 0x00, 0x00, 0x0a][..], &untagged[12..]].concat();
        assert_eq!(tagged, expected, "VLAN 10 leaves the trunk tagged 10");
        // VLAN 20 in on the trunk: out of the VLAN 20 access port, untagged.
        let mut in20 = expected.clone();
        in20[15] = 20;
        in20[6..12].copy_from_slice(&mac(2).0);
        hosts[2].send(&in20).unwrap();
        let out = recv(&hosts[1]);
        assert_eq!(out.len(), untagged.len());
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        sync(&handle);
        assert_nothing_waiting(&hosts[1]);
        assert_nothing_waiting(&hosts[0]);
        handle.stop().unwrap();
        let switch = thread.join().unwrap();
        assert_eq!(switch.state().ports[1].counters.tx_frames, 1);
        assert_eq!(switch.state().ports[0].counters.tx_frames, 0);
    }

    #[test]
    fn a_qinq_tunnel_wraps_customer_tags_in_a_service_tag() {
        let service =
            VlanMode::Trunk { allowed: Box::new([vid(100)].into_iter().collect()), native: None, tpid: 0x88a8 };
        let (handle, thread, hosts) = start_with(&[(VlanMode::Dot1qTunnel(vid(100)), false), (service, false)]);
        let customer = [
            &frame(MacAddr::BROADCAST, mac(1), 46)[..12],
            &[0x81, 0x00, 0x00, 0x0a][..],
            &[0x08, 0x00][..],
            &[0u8; 46][..],
        ]
        .concat();
        hosts[0].send(&customer).unwrap();
        let out = recv(&hosts[1]);
        assert_eq!(&out[12..20], &[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00, 0x0a], "S-tag 100 around C-tag 10");
        assert_eq!(&out[16..], &customer[12..]);
        // And back: the service tag comes off, the customer's stays.
        let mut back = out.clone();
        back[6..12].copy_from_slice(&mac(2).0);
        hosts[1].send(&back).unwrap();
        let delivered = recv(&hosts[0]);
        assert_eq!(&delivered[12..16], &[0x81, 0x00, 0x00, 0x0a]);
        assert_eq!(delivered.len(), customer.len());
        handle.stop().unwrap();
        thread.join().unwrap();
    }

    /// A UDP/IPv4 frame from host 1 to host 2 whose checksum is only the pseudo-header sum,
    /// with the virtio-net header that says so: what a veth or a VM's TAP hands over.
    fn partial_udp(payload: &[u8]) -> (Vec<u8>, u16) {
        let builder = etherparse::PacketBuilder::ethernet2(mac(1).0, mac(2).0)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(4000, 5000);
        let mut f = Vec::new();
        builder.write(&mut f, payload).unwrap();
        let complete = u16::from_be_bytes([f[40], f[41]]);
        let mut pseudo = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 17];
        pseudo.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        let partial = crate::wire::checksum::fold(crate::wire::checksum::sum(&pseudo, 0));
        f[40..42].copy_from_slice(&partial.to_be_bytes());
        (f, complete)
    }

    #[test]
    fn partial_checksums_are_passed_on_or_completed_and_super_frames_counted() {
        use crate::wire::vnet_hdr::{F_NEEDS_CSUM, GSO_UDP_L4};
        let (handle, thread, hosts) =
            start_with(&[(VlanMode::Transparent, true), (VlanMode::Transparent, true), (VlanMode::Transparent, false)]);
        let (frame, complete) = partial_udp(b"finish me");
        let header = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..VnetHdr::default() };
        hosts[0].send(&[&header.emit()[..], &frame].concat()).unwrap();
        // To the port that carries offload: header and partial checksum as they were.
        let passed = recv(&hosts[1]);
        assert_eq!(VnetHdr::parse(&passed).unwrap(), header);
        assert_eq!(&passed[10..], &frame[..]);
        // To the one that does not: completed in software.
        let completed = recv(&hosts[2]);
        assert_eq!(u16::from_be_bytes([completed[40], completed[41]]), complete);
        // A UDP super-frame (USO) is cut into datagrams for the plain port.
        let uso = VnetHdr { gso_type: GSO_UDP_L4, gso_size: 100, ..header };
        hosts[0].send(&[&uso.emit()[..], &frame].concat()).unwrap();
        assert_eq!(VnetHdr::parse(&recv(&hosts[1])).unwrap(), uso);
        let segmented = recv(&hosts[2]);
        assert_eq!(u16::from_be_bytes([segmented[40], segmented[41]]), complete);
        // UFO (the old IP-fragmenting GSO type) cannot go to the plain port: counted there.
        let ufo = VnetHdr { gso_type: crate::wire::vnet_hdr::GSO_UDP, gso_size: 100, ..header };
        hosts[0].send(&[&ufo.emit()[..], &frame].concat()).unwrap();
        assert_eq!(VnetHdr::parse(&recv(&hosts[1])).unwrap(), ufo);
        sync(&handle);
        assert_nothing_waiting(&hosts[2]);
        handle.stop().unwrap();
        let switch = thread.join().unwrap();
        assert_eq!(switch.state().ports[2].counters.drops.get(DropReason::NoSegmentation), 1);
    }

    #[test]
    fn a_flood_reaches_every_configured_remote_and_one_refused_copy_does_not_stop_the_rest() {
        use crate::port::udp_tunnel::UdpTunnelPort;
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let remotes: Vec<UdpSocket> = (2..=4u8)
            .map(|n| {
                let socket = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, n), port)).unwrap();
                socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                socket
            })
            .collect();
        let local: IpAddr = Ipv4Addr::LOCALHOST.into();
        // An IPv6 remote on an IPv4 underlay: the kernel refuses that copy.
        let addresses: Vec<IpAddr> = vec![
            Ipv4Addr::new(127, 0, 0, 2).into(),
            Ipv6Addr::LOCALHOST.into(),
            Ipv4Addr::new(127, 0, 0, 3).into(),
            Ipv4Addr::new(127, 0, 0, 4).into(),
        ];
        let config = loopback_vxlan(port, addresses, 7);
        let (mut switch, hosts) = datagram_switch(1);
        let tunnel = UdpTunnelPort::open(local, port, 64).unwrap();
        let vx = switch.add_vxlan(plain("vx0"), Vxlan::new(config), Box::new(tunnel)).unwrap();
        let (handle, thread) = run_in_thread(switch);
        let flood = frame(MacAddr::BROADCAST, mac(1), 46);
        hosts[0].send(&flood).unwrap();
        let mut buf = [0u8; 2048];
        for remote in &remotes {
            let n = remote.recv(&mut buf).expect("a copy for every IPv4 remote");
            assert_eq!((&buf[..8], &buf[8..n]), (&crate::wire::vxlan::header(7)[..], &flood[..]));
        }
        sync(&handle);
        handle.stop().unwrap();
        let switch = thread.join().unwrap();
        let counters = &switch.state().ports[vx.index()].counters;
        assert_eq!(counters.tx_frames, 3);
        assert_eq!(counters.drops.total(), 1, "the refused copy is counted");
    }

    #[test]
    fn another_worker_hands_frames_for_a_vxlan_port_to_the_first() {
        use crate::port::udp_tunnel::UdpTunnelPort;
        use std::net::{IpAddr, Ipv4Addr, UdpSocket};
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let remote = UdpSocket::bind(("127.0.0.5", port)).unwrap();
        remote.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let local: IpAddr = Ipv4Addr::LOCALHOST.into();
        let config = loopback_vxlan(port, vec![Ipv4Addr::new(127, 0, 0, 5).into()], 9);
        let mut switch = Switch::new("test", FdbConfig::default()).unwrap();
        switch.set_threads(2).unwrap();
        let mut hosts = Vec::new(); // the host port's ends, per worker
        let mut ios: Vec<Box<dyn Port>> = Vec::new();
        for _ in 0..2 {
            let (io, host) = DatagramPort::pair().unwrap();
            host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            ios.push(Box::new(io));
            hosts.push(host);
        }
        switch.add_port_queues(plain("host"), ios).unwrap();
        let tunnel = UdpTunnelPort::open(local, port, 64).unwrap();
        let vx = switch.add_vxlan(plain("vx0"), Vxlan::new(config), Box::new(tunnel)).unwrap();
        let (handle, thread) = run_in_thread(switch);
        // Worker 1 receives it; only the first worker can encapsulate.
        let mut buf = [0u8; 2048];
        for n in 0..20u8 {
            let out = frame(mac(9), mac(n + 10), 46 + usize::from(n));
            hosts[1].send(&out).unwrap();
            let len = remote.recv(&mut buf).expect("handed over and encapsulated");
            assert_eq!((&buf[..8], &buf[8..len]), (&crate::wire::vxlan::header(9)[..], &out[..]), "frame {n}");
        }
        // And back: the first worker decapsulates and writes to its own queue of the host port.
        let back = frame(mac(10), mac(9), 46);
        remote.send_to(&[&crate::wire::vxlan::header(9)[..], &back].concat(), ("127.0.0.1", port)).unwrap();
        assert_eq!(recv(&hosts[0]), back);
        eventually(&handle, |s| s.worker_rx_frames() == vec![1, 20]);
        let (vx_counters, _) = handle.call(move |s, _| s.port_totals(vx), Duration::from_secs(5)).unwrap();
        assert_eq!((vx_counters.tx_frames, vx_counters.drops.total()), (20, 0));
        handle.stop().unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn a_vxlan_port_encapsulates_learns_and_refuses_strangers() {
        use crate::port::udp_tunnel::UdpTunnelPort;
        use std::net::{IpAddr, Ipv4Addr, UdpSocket};
        // Loopback plays the underlay: we are 127.0.0.1, the remote VTEP 127.0.0.2.
        let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let remote = UdpSocket::bind(("127.0.0.2", port)).unwrap();
        remote.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let local: IpAddr = Ipv4Addr::new(127, 0, 0, 1).into();
        let config = loopback_vxlan(port, vec![Ipv4Addr::new(127, 0, 0, 2).into()], 42);
        let mut switch = Switch::new("vx", FdbConfig::default()).unwrap();
        let (host_port, host) = DatagramPort::pair().unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let info = |name: &str| PortInfo {
            name: name.into(),
            kind: "x".into(),
            netns: None,
            mtu: 1500,
            vlan: VlanMode::Transparent,
        };
        switch.add_port(info("host"), Box::new(host_port)).unwrap();
        let tunnel = UdpTunnelPort::open(local, port, 64).unwrap();
        let vx = switch.add_vxlan(info("vx0"), Vxlan::new(config), Box::new(tunnel)).unwrap();
        let (handle, thread) = run_in_thread(switch);

        // Host -> unknown destination: head-end replicated to the remote, VNI 42.
        let out = frame(mac(9), mac(1), 46);
        host.send(&out).unwrap();
        let mut buf = [0u8; 2048];
        let (n, from) = remote.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..8], &crate::wire::vxlan::header(42));
        assert_eq!(&buf[8..n], &out[..]);
        assert_eq!(from.ip(), local);
        // Remote -> host: decapsulated, and mac(9) learned behind the remote.
        let back = frame(mac(1), mac(9), 46);
        remote.send_to(&[&crate::wire::vxlan::header(42)[..], &back].concat(), ("127.0.0.1", port)).unwrap();
        assert_eq!(recv(&host), back);
        // A stranger's datagram is counted and teaches nothing.
        let stranger = UdpSocket::bind("127.0.0.3:0").unwrap();
        let forged = frame(MacAddr::BROADCAST, mac(66), 46);
        stranger.send_to(&[&crate::wire::vxlan::header(42)[..], &forged].concat(), ("127.0.0.1", port)).unwrap();
        let mut bad = crate::wire::vxlan::header(42);
        bad[0] = 0;
        remote.send_to(&[&bad[..], &forged].concat(), ("127.0.0.1", port)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let (unknown, malformed, learned) = loop {
            let seen = handle
                .call(
                    move |s, now| {
                        let p = &s.ports[vx.index()];
                        let v = p.vxlan.as_ref().unwrap();
                        (
                            p.counters.drops.get(DropReason::VxlanUnknownRemote),
                            p.counters.drops.get(DropReason::VxlanBadHeader),
                            v.macs(now).map(|m| m.mac).collect::<Vec<_>>(),
                        )
                    },
                    Duration::from_secs(5),
                )
                .unwrap();
            if seen.0 + seen.1 == 2 || std::time::Instant::now() > deadline {
                break seen;
            }
            thread::yield_now();
        };
        assert_eq!((unknown, malformed), (1, 1));
        assert_eq!(learned, vec![mac(9)]);
        // Known unicast now goes to that remote only (one datagram).
        host.send(&frame(mac(9), mac(1), 46)).unwrap();
        let (n, _) = remote.recv_from(&mut buf).unwrap();
        assert_eq!(n, 8 + 60);
        handle.stop().unwrap();
        let switch = thread.join().unwrap();
        let v = switch.state().ports[vx.index()].vxlan.as_ref().unwrap();
        // Received: the one good datagram (the malformed one is refused before it counts).
        assert_eq!((v.remotes()[0].tx_packets, v.remotes()[0].rx_packets), (2, 1));
    }

    #[test]
    fn a_super_frame_is_cut_into_segments_for_a_port_that_cannot_take_it() {
        use crate::wire::vnet_hdr::{F_NEEDS_CSUM, GSO_TCPV4};
        let (handle, thread, hosts) =
            start_with(&[(VlanMode::Transparent, true), (VlanMode::Transparent, true), (VlanMode::Transparent, false)]);
        let data: Vec<u8> = (0..4000u32).map(|i| (i % 253) as u8).collect();
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2(mac(1).0, MacAddr::BROADCAST.0)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, 1, 1000)
            .write(&mut frame, &data)
            .unwrap();
        let gso = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        hosts[0].send(&[&gso.emit()[..], &frame].concat()).unwrap();
        // Whole to the port that carries offload ...
        let whole = recv(&hosts[1]);
        assert_eq!(VnetHdr::parse(&whole).unwrap(), gso);
        assert_eq!(whole.len(), 10 + frame.len());
        // ... and as three valid TCP segments to the one that does not.
        let mut payload = Vec::new();
        for _ in 0..3 {
            let segment = recv(&hosts[2]);
            let parsed = etherparse::SlicedPacket::from_ethernet(&segment).unwrap();
            let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Tcp(tcp))) =
                (&parsed.net, &parsed.transport)
            else {
                panic!("not TCP/IPv4")
            };
            assert_eq!(
                tcp.checksum(),
                tcp.to_header().calc_checksum_ipv4(&ip.header().to_header(), tcp.payload()).unwrap()
            );
            payload.extend_from_slice(tcp.payload());
        }
        assert_eq!(payload, data);
        handle.stop().unwrap();
        let switch = thread.join().unwrap();
        assert_eq!(switch.state().ports[2].counters.tx_frames, 3);
        assert_eq!(switch.state().ports[2].counters.drops.total(), 0);
    }

    #[test]
    fn a_busy_polling_loop_forwards_and_stops() {
        let (mut switch, hosts) = datagram_switch(2);
        switch.set_busy_poll(Duration::from_secs(60));
        let handle = switch.handle();
        let thread = thread::spawn(move || switch.run().unwrap());
        for n in 0..100u8 {
            let f = frame(mac(2), mac(1), 46 + usize::from(n));
            hosts[0].send(&f).unwrap();
            assert_eq!(recv(&hosts[1]), f);
        }
        // Still spinning (the last frame was just now): a stop must still get through.
        handle.stop().unwrap();
        thread.join().unwrap();
    }

    #[test]
    fn jobs_see_ports_by_name_and_stop_ends_the_loop() {
        let (handle, thread, _hosts) = start(2);
        let mtu = handle.call(|s, _| s.port_by_name("p1").map(|p| p.info.mtu), Duration::from_secs(5)).unwrap();
        assert_eq!(mtu, Some(1500));
        handle.stop().unwrap();
        thread.join().unwrap();
        assert_eq!(handle.call(|_, _| (), Duration::from_secs(1)), Err(HandleError::Stopped));
    }
}
