//! Live changes to the port table: ports added, removed, reconfigured and re-plumbed while the
//! switch forwards.
//!
//! A [`Job`] changes the state at once (the port exists, or no longer does, for the very next
//! frame), and the loop attaches or detaches the port's I/O right after that job, between
//! batches; every other worker gets the same change as a job of its own. Nothing on the
//! forwarding path takes a lock or allocates for it.
//!
//! A port's [`PortId`] indexes the port table on every worker and appears in FDB entries and
//! in updates between workers. A removed port's slot therefore stays empty for
//! [`SLOT_QUARANTINE`] before a new port may take it: long enough for any update about the
//! old port still on its way between workers to arrive and be ignored (an update about a port
//! that does not exist is dropped), so no MAC learned behind the old port ever points at the
//! new one.

use super::*;
use crate::port_modes::{PortModes, StormControl};

/// How long a removed port's slot stays empty before a new port may take it.
pub const SLOT_QUARANTINE: Duration = Duration::from_secs(2);

/// The I/O a port brings when it is added.
pub enum PortIo {
    /// A port on one interface: one I/O per worker thread (`[0]` for the first).
    Queues(Vec<Box<dyn Port>>),
    /// A bond: one I/O per member, in the bond's member order, served by the first worker
    /// (the others hand it their frames).
    Bond(Box<Bond>, Vec<Box<dyn Port>>),
    /// A bond served by every worker: per worker (`[0]` for the first), one I/O per member in
    /// the bond's member order (a queue of a multi-queue TAP, a socket of a fanout group). The
    /// first worker runs the bond (links, LACP, failovers); the others forward from a replica
    /// it refreshes whenever what decides forwarding changes ([`Bond::forwarding_digest`]), and
    /// pass it the LACPDUs they receive.
    BondQueues(Box<Bond>, Vec<Vec<Box<dyn Port>>>),
    /// A VXLAN port: its underlay sockets, one set per worker thread (`[0]` for the first).
    /// Every worker keeps a replica of the tunnel's state, receives on its own socket (the
    /// kernel spreads the remotes' flows over them, `SO_REUSEPORT`) and sends on its own; what
    /// one learns it tells the others ([`crate::fdb_sync::FdbUpdate::Tunnel`]).
    Vxlan(Box<Vxlan>, Vec<Box<dyn Port>>),
    /// A port with one I/O that only one worker can serve (a connection to a VM's socket, a
    /// vhost-user device): the first worker serves it; the others hand it their frames.
    Single(Box<dyn Port>),
}

impl fmt::Debug for PortIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortIo::Queues(q) => write!(f, "Queues({})", q.len()),
            PortIo::Bond(_, m) => write!(f, "Bond({} members)", m.len()),
            PortIo::BondQueues(_, w) => write!(f, "BondQueues({} workers)", w.len()),
            PortIo::Vxlan(..) => write!(f, "Vxlan"),
            PortIo::Single(_) => write!(f, "Single"),
        }
    }
}

/// A second fd of each of one worker's port I/Os, for handing the ports to another process.
#[derive(Debug)]
pub struct WorkerFds {
    /// The worker (0: the first).
    pub worker: usize,
    /// Port, endpoint number (queue, bond member), fd.
    pub fds: Vec<(PortId, usize, std::os::fd::OwnedFd)>,
}

/// A bond member's I/O when the bond's members change.
pub enum MemberIo {
    /// The I/O of the bond's member number `n` before the change (a TAP member cannot be
    /// reopened: closing it would delete the device).
    Keep(usize),
    /// A new member's I/O.
    New(Box<dyn Port>),
}

impl fmt::Debug for MemberIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemberIo::Keep(n) => write!(f, "Keep({n})"),
            MemberIo::New(_) => write!(f, "New"),
        }
    }
}

/// What the loop does to a port's I/O after the jobs of a turn.
#[derive(Debug)]
pub(super) enum IoChange {
    /// Poll these (one per endpoint: one, or one per bond member).
    Attach { id: PortId, ios: Vec<Box<dyn Port>> },
    /// Stop polling the port's endpoints and close their I/O.
    Detach { id: PortId },
    /// Give a bond new members, keeping some of the old ones' I/O.
    Rebond { id: PortId, members: Vec<MemberIo> },
}

/// A refused change to the port table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// No port has that name or id.
    #[error("no port {0}")]
    NoSuchPort(String),
    /// A port of that name exists.
    #[error("a port named {0} exists")]
    Exists(String),
    /// Every port id is taken (or quarantined).
    #[error("no free port id: {0} ports")]
    Full(usize),
    /// The I/O does not fit the switch.
    #[error("{0}")]
    Mismatch(String),
}

impl SwitchState {
    /// The ports that exist (a removed port's slot is skipped).
    pub fn live_ports(&self) -> impl Iterator<Item = &PortState> {
        self.ports.iter().filter(|p| p.removed.is_none())
    }

    /// The live port with id `id`.
    pub fn live_port(&self, id: PortId) -> Option<&PortState> {
        self.ports.get(id.index()).filter(|p| p.removed.is_none())
    }

    /// Adds a port at `now`: it forwards from the end of this turn, on every worker. Returns
    /// its id: the first slot free for [`SLOT_QUARANTINE`], or a new one.
    pub fn add_port(&mut self, info: PortInfo, io: PortIo, now: Instant) -> Result<PortId, ChangeError> {
        self.add_port_with_modes(info, io, PortModes::default(), now)
    }

    /// As [`SwitchState::add_port`], the port forwarding with `modes` from its first frame on
    /// every worker (they come with the port, not in a job after it).
    pub fn add_port_with_modes(
        &mut self,
        info: PortInfo,
        io: PortIo,
        modes: PortModes,
        now: Instant,
    ) -> Result<PortId, ChangeError> {
        if self.port_by_name(&info.name).is_some() {
            return Err(ChangeError::Exists(info.name));
        }
        let others = self.threads.saturating_sub(1);
        let single = matches!(io, PortIo::Single(_));
        let one_each = |ios: Vec<Box<dyn Port>>| ios.into_iter().map(|io| vec![io]).collect::<Vec<_>>();
        let detached = || one_each(DetachedPort::queues(others));
        let mismatch = |what: &str, got: usize, threads: usize| {
            ChangeError::Mismatch(format!("port {} has {got} {what} for {threads} worker threads", info.name))
        };
        // Per other worker: its I/O for the port, and its replica of a bond's or tunnel's state.
        let mut replica_bond = None;
        let mut replica_vxlan = None;
        let mut replicated = false;
        let (bond, vxlan, mine, theirs): (_, _, _, Vec<Vec<Box<dyn Port>>>) = match io {
            PortIo::Queues(ios) => {
                if ios.len() != self.threads {
                    return Err(mismatch("I/O queues", ios.len(), self.threads));
                }
                let mut ios = ios.into_iter();
                let mine: Vec<Box<dyn Port>> = ios.next().into_iter().collect();
                (None, None, mine, one_each(ios.collect()))
            }
            PortIo::Bond(bond, members) => {
                if members.len() != bond.members().len() || members.is_empty() {
                    return Err(ChangeError::Mismatch("a bond needs one I/O per member".into()));
                }
                (Some(*bond), None, members, detached())
            }
            PortIo::BondQueues(bond, per_worker) => {
                if per_worker.len() != self.threads {
                    return Err(mismatch("sets of bond member I/O", per_worker.len(), self.threads));
                }
                if bond.members().is_empty() || per_worker.iter().any(|m| m.len() != bond.members().len()) {
                    return Err(ChangeError::Mismatch("a bond needs one I/O per member on every worker".into()));
                }
                replica_bond = Some(bond.replica());
                replicated = self.threads > 1;
                let mut per_worker = per_worker.into_iter();
                let mine = per_worker.next().unwrap_or_default();
                (Some(*bond), None, mine, per_worker.collect())
            }
            PortIo::Vxlan(vxlan, ios) => {
                if ios.len() != self.threads {
                    return Err(mismatch("underlay sockets", ios.len(), self.threads));
                }
                replica_vxlan = Some(vxlan.clone());
                let mut ios = ios.into_iter();
                let mine: Vec<Box<dyn Port>> = ios.next().into_iter().collect();
                (None, Some(*vxlan), mine, one_each(ios.collect()))
            }
            PortIo::Single(io) => (None, None, vec![io], detached()),
        };
        let free = self
            .ports
            .iter()
            .position(|p| p.removed.is_some_and(|at| now.saturating_duration_since(at) >= SLOT_QUARANTINE));
        let index = free.unwrap_or(self.ports.len());
        let id = PortId(u16::try_from(index).map_err(|_| ChangeError::Full(self.ports.len()))?);
        let owned = (bond.is_some() && !replicated) || single;
        let storm = modes.storm_pps.is_limited().then(|| Arc::new(StormControl::new(&modes.storm_pps)));
        for (worker, ios) in self.workers.iter().zip(theirs) {
            let info = info.clone();
            let (modes, storm) = (modes.clone(), storm.clone());
            let (bond, vxlan) = (replica_bond.clone(), replica_vxlan.clone());
            let _ = worker.handle.submit(Box::new(move |state, _| {
                state.install(id, info, bond, vxlan.map(|v| *v), ios, owned);
                state.bridge.set_modes(id, modes, storm);
            }));
        }
        let digest = bond.as_ref().filter(|_| replicated).map(Bond::forwarding_digest);
        self.install(id, info, bond, vxlan, mine, false);
        self.ports[id.index()].bond_replicas = digest;
        self.bridge.set_modes(id, modes, storm);
        Ok(id)
    }

    /// Removes port `id` at `now`, on every worker: its FDB entries (static ones too) go, its
    /// I/O is closed after this turn, and frames toward it are no longer sent.
    pub fn remove_port(&mut self, id: PortId, now: Instant) -> Result<(), ChangeError> {
        if self.live_port(id).is_none() {
            return Err(ChangeError::NoSuchPort(format!("{id:?}")));
        }
        for worker in &self.workers {
            let _ = worker.handle.submit(Box::new(move |state, now| state.uninstall(id, now)));
        }
        self.uninstall(id, now);
        Ok(())
    }

    /// Changes how port `id` treats VLANs and its MTU, on every worker. If the VLAN mode
    /// changes, what was learned behind the port is forgotten (it was learned in VLANs the
    /// port may no longer carry); counters and static entries stay.
    pub fn reconfigure_port(&mut self, id: PortId, vlan: VlanMode, mtu: u32) -> Result<(), ChangeError> {
        let port = self.live_port(id).ok_or_else(|| ChangeError::NoSuchPort(format!("{id:?}")))?;
        let vlan_changed = port.info.vlan != vlan;
        for worker in &self.workers {
            let vlan = vlan.clone();
            let _ = worker.handle.submit(Box::new(move |state, _| state.reconfigure_here(id, vlan, mtu)));
        }
        self.reconfigure_here(id, vlan, mtu);
        if vlan_changed {
            self.fdb_flush(Some(id));
        }
        Ok(())
    }

    /// Sets port `id`'s modes ([`PortModes`]) on every worker, with one storm-control budget
    /// they share. When its `mac_limit` or `allowed_macs` change, what was learned behind the
    /// port is forgotten, so the new bound holds at once and no longer allowed sources are
    /// not reachable by their old entries.
    pub fn set_port_modes(&mut self, id: PortId, modes: PortModes) -> Result<(), ChangeError> {
        self.live_port(id).ok_or_else(|| ChangeError::NoSuchPort(format!("{id:?}")))?;
        let plain = PortModes::default();
        let was = self.bridge.modes(id).unwrap_or(&plain);
        let relearn = was.mac_limit != modes.mac_limit || was.allowed_macs != modes.allowed_macs;
        // The same rates keep the budget they have drawn on; new rates start afresh.
        let storm = match self.bridge.storm_control(id) {
            Some(storm) if was.storm_pps == modes.storm_pps => Some(Arc::clone(storm)),
            _ => modes.storm_pps.is_limited().then(|| Arc::new(StormControl::new(&modes.storm_pps))),
        };
        for worker in &self.workers {
            let (modes, storm) = (modes.clone(), storm.clone());
            let _ = worker.handle.submit(Box::new(move |state, _| state.bridge.set_modes(id, modes, storm)));
        }
        self.bridge.set_modes(id, modes, storm);
        if relearn {
            self.fdb_flush(Some(id));
        }
        Ok(())
    }

    /// Turns ARP/ND suppression on VXLAN port `id` on or off on every worker.
    pub fn set_arp_suppress(&mut self, id: PortId, on: bool) -> Result<(), ChangeError> {
        self.live_port(id).ok_or_else(|| ChangeError::NoSuchPort(format!("{id:?}")))?;
        for worker in &self.workers {
            let _ = worker.handle.submit(Box::new(move |state, _| state.set_arp_suppress_here(id, on)));
        }
        self.set_arp_suppress_here(id, on);
        Ok(())
    }

    fn set_arp_suppress_here(&mut self, id: PortId, on: bool) {
        if let Some(vxlan) = self.ports.get_mut(id.index()).and_then(|p| p.vxlan.as_mut()) {
            vxlan.set_arp_suppress(on);
        }
    }

    /// EVPN: makes `remote` a flood target of VXLAN port `id` (`on`), or stops flooding to it,
    /// in place, on every worker: the port keeps its other remotes, MACs and counters. Returns
    /// whether anything changed (on this worker's replica).
    pub fn vxlan_flood_remote(&mut self, id: PortId, remote: std::net::IpAddr, on: bool) -> Result<bool, ChangeError> {
        self.on_every_vxlan_replica(id, move |vxlan| {
            if on { vxlan.add_flood_remote(remote) } else { vxlan.remove_flood_remote(remote) }
        })
    }

    /// Applies `change` to VXLAN port `id`'s table here and, as a job of its own, on every
    /// other worker (each keeps a replica). Returns what it gave here.
    fn on_every_vxlan_replica<T>(
        &mut self,
        id: PortId,
        change: impl Fn(&mut Vxlan) -> T + Clone + Send + 'static,
    ) -> Result<T, ChangeError> {
        self.vxlan_mut(id)?;
        let theirs = change.clone();
        self.on_other_workers(move |state| {
            if let Ok(vxlan) = state.vxlan_mut(id) {
                theirs(vxlan);
            }
        });
        Ok(change(self.vxlan_mut(id)?))
    }

    /// Runs `change` on every other worker's state, as a job of its own (each keeps a replica
    /// of the VXLAN ports' tables).
    fn on_other_workers(&self, change: impl Fn(&mut SwitchState) + Clone + Send + 'static) {
        for worker in &self.workers {
            let change = change.clone();
            let _ = worker.handle.submit(Box::new(move |state, _| change(state)));
        }
    }

    /// Pins `mac` in `vlan` behind `remote` in VXLAN port `id`'s table, on every worker (the
    /// tunnel part of `fdb add MAC PORT --remote IP`, whose FDB part is
    /// [`SwitchState::fdb_add_static`]).
    pub fn vxlan_add_static(
        &mut self,
        id: PortId,
        vlan: VlanId,
        mac: MacAddr,
        remote: std::net::IpAddr,
    ) -> Result<(), ChangeError> {
        self.on_every_vxlan_replica(id, move |vxlan| vxlan.add_static(vlan, mac, remote))
    }

    /// Forgets `mac` in `vlan` in every VXLAN port's table, on every worker. Returns whether
    /// this worker knew it.
    pub fn vxlan_forget(&mut self, vlan: VlanId, mac: MacAddr) -> bool {
        let forget = move |state: &mut SwitchState| {
            let mut known = false;
            for port in &mut state.ports {
                if let Some(vxlan) = port.vxlan.as_mut() {
                    known |= vxlan.remove(vlan, mac);
                }
            }
            known
        };
        self.on_other_workers(move |state| {
            forget(state);
        });
        forget(self)
    }

    /// EVPN: pins `mac` in `vlan` behind `remote` in VXLAN port `id`'s table: frames the
    /// bridge sends the port for it (known or flooded) go to that VTEP only. The FDB is left to
    /// learn as ever, so a MAC that moves here is learned on its local port at once; an entry
    /// for it on another port (it moved away) is forgotten, so the next frame finds it anew.
    pub fn vxlan_pin(
        &mut self,
        id: PortId,
        vlan: VlanId,
        mac: MacAddr,
        remote: std::net::IpAddr,
    ) -> Result<(), ChangeError> {
        self.vxlan_add_static(id, vlan, mac, remote)?;
        if self.bridge.fdb().lookup(vlan, mac).is_some_and(|port| port != id) {
            self.fdb_remove(vlan, mac);
        }
        Ok(())
    }

    /// EVPN: takes back [`SwitchState::vxlan_pin`]. Returns whether it was pinned.
    pub fn vxlan_unpin(&mut self, id: PortId, vlan: VlanId, mac: MacAddr) -> Result<bool, ChangeError> {
        self.on_every_vxlan_replica(id, move |vxlan| vxlan.remove(vlan, mac))
    }

    /// The MACs in `vlans` the FDB has behind ports other than `except`, at most `limit` (for
    /// EVPN to advertise the MACs local to this host).
    pub fn fdb_macs_except(
        &self,
        except: PortId,
        vlans: &[VlanId],
        now: Instant,
        limit: usize,
    ) -> Vec<(VlanId, MacAddr)> {
        self.bridge
            .fdb()
            .entries(now)
            .filter(|e| e.port != except && vlans.contains(&e.vlan))
            .map(|e| (e.vlan, e.mac))
            .take(limit)
            .collect()
    }

    fn vxlan_mut(&mut self, id: PortId) -> Result<&mut Vxlan, ChangeError> {
        self.live_port(id).ok_or_else(|| ChangeError::NoSuchPort(format!("{id:?}")))?;
        self.ports
            .get_mut(id.index())
            .and_then(|p| p.vxlan.as_mut())
            .ok_or_else(|| ChangeError::Mismatch(format!("port {id:?} is not a VXLAN port")))
    }

    /// Replaces bond `id`'s members (one joined or left): the bond port keeps its id, its
    /// counters and the MACs learned behind it; the member states start afresh with `bond`.
    /// For a bond only the first worker serves ([`PortIo::Bond`]).
    pub fn replace_bond(&mut self, id: PortId, bond: Bond, members: Vec<MemberIo>) -> Result<(), ChangeError> {
        self.replace_bond_queues(id, bond, vec![members])
    }

    /// As [`SwitchState::replace_bond`], with each worker's member I/O (`[0]` for the first)
    /// for a bond every worker serves ([`PortIo::BondQueues`]); one set for a bond only the
    /// first worker serves.
    pub fn replace_bond_queues(
        &mut self,
        id: PortId,
        bond: Bond,
        per_worker: Vec<Vec<MemberIo>>,
    ) -> Result<(), ChangeError> {
        let port = self.live_port(id).ok_or_else(|| ChangeError::NoSuchPort(format!("{id:?}")))?;
        if port.bond.is_none() {
            return Err(ChangeError::Mismatch(format!("port {} is not a bond", port.info.name)));
        }
        let workers = if port.bond_replicas.is_some() { self.threads } else { 1 };
        if per_worker.len() != workers {
            return Err(ChangeError::Mismatch(format!(
                "bond {} is served by {workers} workers; member I/O came for {}",
                port.info.name,
                per_worker.len()
            )));
        }
        let old = port.endpoints.len();
        for members in &per_worker {
            if members.len() != bond.members().len() || members.is_empty() {
                return Err(ChangeError::Mismatch("a bond needs one I/O per member".into()));
            }
            if members.iter().any(|m| matches!(m, MemberIo::Keep(n) if *n >= old)) {
                return Err(ChangeError::Mismatch(format!("the bond had {old} members")));
            }
        }
        let mut per_worker = per_worker.into_iter();
        let mine = per_worker.next().unwrap_or_default();
        for (worker, members) in self.workers.iter().zip(per_worker) {
            let replica = bond.replica();
            let _ = worker.handle.submit(Box::new(move |state, _| state.replace_bond_here(id, replica, members)));
        }
        if self.ports[id.index()].bond_replicas.is_some() {
            self.ports[id.index()].bond_replicas = Some(bond.forwarding_digest());
        }
        self.replace_bond_here(id, bond, mine);
        Ok(())
    }

    fn replace_bond_here(&mut self, id: PortId, bond: Bond, members: Vec<MemberIo>) {
        let Some(port) = self.ports.get(id.index()).filter(|p| p.removed.is_none() && p.bond.is_some()) else { return };
        let _ = port;
        // Replacements asked for the old members (an interface that came or went) are stale.
        self.pending_io.retain(|(p, _, _)| *p != id);
        let mut bond = bond;
        if let Some(old) = self.ports[id.index()].bond.as_ref() {
            // The members that stay keep their counters.
            for (new, member) in members.iter().enumerate() {
                let MemberIo::Keep(n) = member else { continue };
                if let Some(was) = old.members().get(*n) {
                    let counters = was.counters;
                    if let Some(m) = bond.member_mut(new) {
                        m.counters = counters;
                    }
                }
            }
        }
        self.io_changes.push(IoChange::Rebond { id, members });
        self.ports[id.index()].bond = Some(bond);
    }

    /// Refreshes the other workers' replicas of bond `id` ([`PortIo::BondQueues`]) if what
    /// decides forwarding changed since they were last sent one (a link, a failover, LACP).
    pub(super) fn refresh_bond_replicas(&mut self) {
        for port in &mut self.ports {
            let (Some(pushed), Some(bond)) = (port.bond_replicas, port.bond.as_ref()) else { continue };
            let digest = bond.forwarding_digest();
            if digest == pushed {
                continue;
            }
            port.bond_replicas = Some(digest);
            let id = port.id;
            for worker in &self.workers {
                let authority = bond.replica();
                let _ = worker.handle.submit(Box::new(move |state, _| {
                    if let Some(replica) = state.ports.get_mut(id.index()).and_then(|p| p.bond.as_mut()) {
                        replica.take_state_of(authority);
                    }
                }));
            }
        }
    }

    /// A job on every other worker that answers on the returned channel, once each: when all
    /// have answered, every change submitted to them before (a port removed: its I/O closed)
    /// is done. Returns the channel and how many answers will come.
    pub fn other_workers_barrier(&self) -> (crossbeam_channel::Receiver<()>, usize) {
        let (done, answers) = crossbeam_channel::bounded(self.workers.len());
        let mut asked = 0;
        for worker in &self.workers {
            let done = done.clone();
            if worker
                .handle
                .submit(Box::new(move |_, _| {
                    let _ = done.send(());
                }))
                .is_ok()
            {
                asked += 1;
            }
        }
        (answers, asked)
    }

    /// Asks every worker for a second fd of each of its ports' I/O, answered on `reply` after
    /// this turn's jobs (the ports keep forwarding). Returns how many answers will come.
    pub fn collect_fds(&mut self, reply: Sender<WorkerFds>) -> usize {
        let mut asked = 1;
        for worker in &self.workers {
            let reply = reply.clone();
            if worker.handle.submit(Box::new(move |state, _| state.fd_requests.push(reply))).is_ok() {
                asked += 1;
            }
        }
        self.fd_requests.push(reply);
        asked
    }

    /// Puts a port in slot `id` on this worker (growing the table if needed); its I/O is
    /// attached after this turn's jobs.
    pub(super) fn install(
        &mut self,
        id: PortId,
        info: PortInfo,
        bond: Option<Bond>,
        vxlan: Option<Vxlan>,
        ios: Vec<Box<dyn Port>>,
        handed_off: bool,
    ) {
        let is_bond = bond.is_some();
        let offloads = if is_bond { None } else { ios.first().and_then(|io| io.offload_report()) };
        self.bridge.add_port(id, BridgePortConfig { mtu: info.mtu, vlan: info.vlan.clone(), bond: is_bond });
        let port = PortState {
            info,
            id,
            link: LinkState::Up,
            counters: PortCounters::default(),
            rx_errors: 0,
            link_changes: 0,
            bond,
            announcements: 0,
            offloads,
            vxlan,
            endpoints: Vec::new(),
            handed_off,
            link_from_kernel: false,
            removed: None,
            bond_replicas: None,
            taps: Vec::new(),
        };
        while self.ports.len() < id.index() {
            let filler = PortId(self.ports.len() as u16);
            self.ports.push(PortState::empty_slot(filler));
        }
        match self.ports.get_mut(id.index()) {
            Some(slot) => *slot = port,
            None => self.ports.push(port),
        }
        self.io_changes.push(IoChange::Attach { id, ios });
        if self.worker == 0 {
            self.stp_port_added(id);
        }
    }

    /// Takes port `id` out on this worker at `now`.
    fn uninstall(&mut self, id: PortId, now: Instant) {
        let Some(port) = self.ports.get_mut(id.index()) else { return };
        if port.removed.is_some() {
            return;
        }
        port.removed = Some(now);
        port.bond = None;
        port.bond_replicas = None;
        port.vxlan = None;
        port.handed_off = false;
        port.link = LinkState::Absent;
        self.bridge.remove_port(id);
        self.stp_port_removed(id);
        self.pending_announce.retain(|(p, _)| *p != id);
        self.pending_io.retain(|(p, _, _)| *p != id);
        self.io_changes.push(IoChange::Detach { id });
    }

    fn reconfigure_here(&mut self, id: PortId, vlan: VlanMode, mtu: u32) {
        let Some(port) = self.ports.get_mut(id.index()).filter(|p| p.removed.is_none()) else { return };
        port.info.vlan = vlan.clone();
        port.info.mtu = mtu;
        let bond = port.bond.is_some();
        self.bridge.add_port(id, BridgePortConfig { mtu, vlan, bond });
    }
}

impl PortState {
    /// A slot no port occupies (yet): a gap a worker fills while it catches up.
    fn empty_slot(id: PortId) -> PortState {
        PortState {
            info: PortInfo {
                name: String::new(),
                kind: String::new(),
                netns: None,
                mtu: 0,
                vlan: VlanMode::Transparent,
            },
            id,
            link: LinkState::Absent,
            counters: PortCounters::default(),
            rx_errors: 0,
            link_changes: 0,
            bond: None,
            announcements: 0,
            offloads: None,
            vxlan: None,
            endpoints: Vec::new(),
            handed_off: false,
            link_from_kernel: false,
            removed: Some(Instant::ZERO),
            bond_replicas: None,
            taps: Vec::new(),
        }
    }
}

impl Switch {
    /// Attaches and detaches the I/O the jobs of this turn asked for, in the order asked. An
    /// I/O the poller refuses stays attached but unpolled (its port forwards nothing in and
    /// logs why); the first error is returned for [`Switch::add_port`]'s sake.
    pub(super) fn apply_io_changes(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for change in std::mem::take(&mut self.state.io_changes) {
            match change {
                IoChange::Detach { id } => drop(self.detach(id)),
                IoChange::Rebond { id, members } => {
                    let mut old: Vec<Option<Box<dyn Port>>> = self.detach(id).into_iter().map(Some).collect();
                    let ios = members
                        .into_iter()
                        .map(|m| match m {
                            MemberIo::Keep(n) => {
                                old.get_mut(n).and_then(Option::take).unwrap_or_else(|| Box::new(DetachedPort))
                            }
                            MemberIo::New(io) => io,
                        })
                        .collect();
                    if let Err(e) = self.attach(id, ios) {
                        tracing::warn!(error = %e, "cannot poll a bond member");
                    }
                }
                IoChange::Attach { id, ios } => {
                    if let Err(e) = self.attach(id, ios) {
                        let name = self.state.ports.get(id.index()).map_or("?", |p| p.info.name.as_str());
                        tracing::warn!(port = %name, error = %e, "cannot poll the port");
                        if result.is_ok() {
                            result = Err(e);
                        }
                    }
                }
            }
        }
        result
    }

    /// Answers [`SwitchState::collect_fds`]: a second fd of every live port's I/O on this
    /// worker. An fd that cannot be duplicated (no fds left) is logged and left out.
    pub(super) fn answer_fd_requests(&mut self) {
        for reply in std::mem::take(&mut self.state.fd_requests) {
            let mut fds = Vec::new();
            for port in self.state.live_ports() {
                for (ordinal, &index) in port.endpoints.iter().enumerate() {
                    match self.endpoints[index].io.clone_fd() {
                        Some(Ok(fd)) => fds.push((port.id, ordinal, fd)),
                        Some(Err(e)) => {
                            tracing::warn!(port = %port.info.name, error = %e, "cannot duplicate the port's fd")
                        }
                        None => {}
                    }
                }
            }
            let _ = reply.send(WorkerFds { worker: self.state.worker, fds });
        }
    }

    /// Gives port `id` one endpoint per I/O (reusing free ones) and polls them.
    fn attach(&mut self, id: PortId, ios: Vec<Box<dyn Port>>) -> io::Result<()> {
        let Some(port) = self.state.ports.get(id.index()) else { return Ok(()) };
        let is_bond = port.bond.is_some();
        let mut endpoints = Vec::with_capacity(ios.len());
        let mut result = Ok(());
        for (member, io) in ios.into_iter().enumerate() {
            let index = match self.free_endpoints.pop() {
                Some(index) => index,
                None => {
                    self.endpoints.push(Endpoint { io: Box::new(DetachedPort), port: id, member: None, queued: false });
                    self.scratch.to_flush.reserve_exact(self.endpoints.len());
                    self.ready.add_endpoint();
                    self.endpoints.len() - 1
                }
            };
            if let Some(fd) = io.raw_fd() {
                if let Err(e) = self.poll.registry().register(&mut SourceFd(&fd), Token(index), Interest::READABLE) {
                    result = Err(e);
                }
            }
            self.endpoints[index] = Endpoint { io, port: id, member: is_bond.then_some(member), queued: false };
            self.ready.mark(index);
            endpoints.push(index);
        }
        self.state.ports[id.index()].endpoints = endpoints;
        result
    }

    /// Stops polling port `id`'s endpoints and returns their I/O (closed when dropped); the
    /// endpoints are free for the next port.
    fn detach(&mut self, id: PortId) -> Vec<Box<dyn Port>> {
        let mut ios = Vec::new();
        let Some(port) = self.state.ports.get_mut(id.index()) else { return ios };
        for index in std::mem::take(&mut port.endpoints) {
            let endpoint = &mut self.endpoints[index];
            if let Some(fd) = endpoint.io.raw_fd() {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
            // Frames it queued go out before it closes (they were counted as sent).
            if endpoint.queued {
                let _ = endpoint.io.flush();
                endpoint.queued = false;
                self.scratch.to_flush.retain(|&i| i != index);
            }
            ios.push(std::mem::replace(&mut endpoint.io, Box::new(DetachedPort)));
            endpoint.member = None;
            self.free_endpoints.push(index);
        }
        ios
    }
}
