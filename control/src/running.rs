//! The running switch as a plan applied to a desired topology. [`diff`] compares the topology
//! that runs with the one wanted and says which namespaces and ports to add, remove,
//! reconfigure in place or rebuild; [`Running::apply`] carries that out on the kernel (through
//! the plumbing's undo log) and on the live dataplane (through jobs). Start is the diff from an
//! empty topology, `reload` the diff to the file's, `port add/del/set` the diff to the running
//! topology with one change, and stop undoes everything.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::time::Duration;

use tracing::{info, warn};
use vswitchd_dataplane::PortId;
use vswitchd_dataplane::bond::lacp::LacpSettings;
use vswitchd_dataplane::bond::{Bond, BondConfig};
use vswitchd_dataplane::port::detached::DetachedPort;
use vswitchd_dataplane::port::packet::PacketPort;
use vswitchd_dataplane::port::tap::TapPort;
use vswitchd_dataplane::port::udp_tunnel::UdpTunnelPort;
use vswitchd_dataplane::port::{Port, boxed};
use vswitchd_dataplane::port_modes::PortModes;
use vswitchd_dataplane::stp::{StpConfig, StpPortConfig};
use vswitchd_dataplane::switch::{MemberIo, PortInfo, PortIo, SwitchHandle};
use vswitchd_dataplane::vxlan::{Vxlan, VxlanConfig};
use vswitchd_dataplane::wire::MacAddr;

use crate::attach;
use crate::monitor::{Monitors, Watch};
use crate::netlink::NetlinkSocket;
use crate::netns;
use crate::plumbing::{self, Owner, Step, Undo};
use crate::takeover::{FdKind, HandedEntry, HandedFd, Package};
use crate::topology::{BondSpec, NetnsSpec, PortKind, PortSpec, Topology};
use std::os::fd::OwnedFd;

/// How long a live change waits for the dataplane.
const DATAPLANE_TIMEOUT: Duration = Duration::from_secs(5);

/// What it takes to go from one topology to another.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// Ports to take out (bridge ports and bond members), those rebuilt included.
    pub ports_removed: Vec<String>,
    /// Namespaces whose routes are removed (changed routes are removed, then added).
    pub routes_removed: Vec<String>,
    /// Namespaces no longer wanted.
    pub netns_removed: Vec<String>,
    /// Namespaces to create (or use).
    pub netns_added: Vec<String>,
    /// Ports whose VLAN settings or MTU change, and nothing else.
    pub ports_reconfigured: Vec<String>,
    /// Ports to put in (those rebuilt included), in the desired topology's order.
    pub ports_added: Vec<String>,
    /// Bonds that stay but whose members change.
    pub bonds_rebuilt: Vec<String>,
    /// Namespaces whose routes are added.
    pub routes_added: Vec<String>,
}

impl Diff {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == Diff::default()
    }
}

/// Whether `old` becomes `new` by changing only what a running port can change in place: its
/// VLAN settings and its MTU (a bond member's MTU is its bond's business: rebuilt).
fn reconfigurable(old: &PortSpec, new: &PortSpec) -> bool {
    let mut old = old.clone();
    // A VXLAN port's `arp_suppress` changes in place too.
    if let (PortKind::Vxlan(was), PortKind::Vxlan(now)) = (&mut old.kind, &new.kind) {
        was.arp_suppress = now.arp_suppress;
    }
    let same_otherwise = PortSpec {
        vlan: new.vlan.clone(),
        mtu: new.mtu,
        modes: new.modes.clone(),
        mrouter: new.mrouter,
        ..old.clone()
    } == *new
        && old.master.is_none();
    same_otherwise && !matches!(old.kind, PortKind::Bond(_))
}

/// What changes from `running` to `desired` (pure: no I/O).
pub fn diff(running: &Topology, desired: &Topology) -> Diff {
    let mut d = Diff::default();
    let old: HashMap<&str, &PortSpec> = running.ports.iter().map(|p| (p.name.as_str(), p)).collect();
    let new: HashMap<&str, &PortSpec> = desired.ports.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut rebuilt = BTreeSet::new();
    for port in &running.ports {
        match new.get(port.name.as_str()) {
            None => d.ports_removed.push(port.name.clone()),
            Some(n) if *n == port => {}
            Some(n) if reconfigurable(port, n) => d.ports_reconfigured.push(port.name.clone()),
            Some(n) => {
                // A bond whose members alone change keeps running with new members.
                if let (PortKind::Bond(a), PortKind::Bond(b)) = (&port.kind, &n.kind) {
                    if (BondSpec { members: b.members.clone(), ..a.clone() }) == *b
                        && (PortSpec { kind: n.kind.clone(), ..port.clone() }) == **n
                    {
                        rebuilt.insert(port.name.clone());
                        continue;
                    }
                }
                d.ports_removed.push(port.name.clone());
            }
        }
    }
    d.ports_removed.reverse(); // newest first
    for port in &desired.ports {
        match old.get(port.name.as_str()) {
            Some(o) if *o == port || reconfigurable(o, port) || rebuilt.contains(&port.name) => {}
            _ => d.ports_added.push(port.name.clone()),
        }
    }
    // A kept bond is rebuilt when one of its members comes, goes or is rebuilt itself.
    for port in &desired.ports {
        let (PortKind::Bond(spec), Some(PortSpec { kind: PortKind::Bond(was), .. })) =
            (&port.kind, old.get(port.name.as_str()).copied())
        else {
            continue;
        };
        if d.ports_added.contains(&port.name) {
            continue;
        }
        let touched = |m: &String| d.ports_added.contains(m) || d.ports_removed.contains(m);
        if rebuilt.contains(&port.name) || spec.members.iter().chain(&was.members).any(touched) {
            d.bonds_rebuilt.push(port.name.clone());
        }
    }
    let old_ns: HashMap<&str, &NetnsSpec> = running.netns.iter().map(|n| (n.name.as_str(), n)).collect();
    let new_ns: HashMap<&str, &NetnsSpec> = desired.netns.iter().map(|n| (n.name.as_str(), n)).collect();
    for ns in running.netns.iter().rev() {
        match new_ns.get(ns.name.as_str()) {
            None => {
                d.netns_removed.push(ns.name.clone());
                if !ns.routes.is_empty() {
                    d.routes_removed.push(ns.name.clone());
                }
            }
            Some(n) if n.routes != ns.routes && !ns.routes.is_empty() => d.routes_removed.push(ns.name.clone()),
            Some(_) => {}
        }
    }
    for ns in &desired.netns {
        match old_ns.get(ns.name.as_str()) {
            None => {
                d.netns_added.push(ns.name.clone());
                if !ns.routes.is_empty() {
                    d.routes_added.push(ns.name.clone());
                }
            }
            Some(o) if o.routes != ns.routes && !ns.routes.is_empty() => d.routes_added.push(ns.name.clone()),
            Some(_) => {}
        }
    }
    d
}

/// A LACP system identifier for a bond: a locally administered unicast MAC derived from the
/// bridge and bond names, so it is stable across restarts and differs between instances.
fn lacp_system_id(bridge: &str, bond: &str) -> MacAddr {
    let mut hash = 0xcbf2_9ce4_8422_2325u64; // FNV-1a
    for byte in bridge.bytes().chain([0]).chain(bond.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let b = hash.to_be_bytes();
    MacAddr([0x02, b[0], b[1], b[2], b[3], b[4]])
}

/// The address the spanning tree sends BPDUs from and names the bridge by: derived from the
/// bridge's name, so it is the same after every restart, and locally administered.
pub fn stp_bridge_mac(bridge: &str) -> MacAddr {
    lacp_system_id(bridge, "stp")
}

/// The dataplane's spanning tree settings for the bridge's `stp` keys.
pub fn stp_config(bridge: &crate::topology::BridgeSpec) -> Option<StpConfig> {
    let spec = bridge.stp?;
    Some(StpConfig {
        mode: spec.mode,
        priority: spec.priority,
        mac: stp_bridge_mac(&bridge.name),
        hello: Duration::from_secs(spec.hello_secs),
        forward_delay: Duration::from_secs(spec.forward_delay_secs),
        max_age: Duration::from_secs(spec.max_age_secs),
    })
}

/// The dataplane's settings for a port's spanning tree keys.
fn stp_port_config(spec: &crate::topology::PortStpSpec) -> StpPortConfig {
    StpPortConfig { cost: spec.cost, priority: spec.priority, edge: spec.edge, bpdu_guard: spec.bpdu_guard }
}

/// The interface behind a port, for the link monitor.
struct WatchTarget {
    netns: Option<String>,
    device: String,
    ifindex: Option<u32>,
    /// Open a fresh packet socket when the interface is recreated (not for TAPs vswitchd owns).
    reattach: bool,
}

/// A port's I/O: one per worker thread.
type Queues = Vec<Box<dyn Port>>;

/// The index of `device` in namespace `netns` now, if it exists.
fn current_ifindex(netns_name: &Option<String>, device: &str) -> Option<u32> {
    let lookup = || NetlinkSocket::open().ok()?.link_index(device).ok().flatten();
    match netns_name {
        Some(ns) => netns::run_in(ns, lookup).ok().flatten(),
        None => lookup(),
    }
}

/// Opens the I/O of a port (or bond member), `queues` of it (one per worker thread): the TAP
/// the plumbing created (its queues), or packet sockets on the interface it names (a fanout
/// group); an absent netdev starts detached.
fn open_io(port: &PortSpec, tap: Option<Vec<TapPort>>, queues: usize) -> io::Result<(Queues, Option<WatchTarget>)> {
    let take_tap = |tap: Option<Vec<TapPort>>| {
        let tap = tap.ok_or_else(|| io::Error::other(format!("no device for port {}", port.name)))?;
        if tap.len() != queues {
            return Err(io::Error::other(format!("port {}: {} queues, {queues} wanted", port.name, tap.len())));
        }
        Ok(boxed(tap))
    };
    Ok(match &port.kind {
        PortKind::Tap { netns } => {
            let io = take_tap(tap)?;
            let ifindex = current_ifindex(netns, &port.name);
            (io, Some(WatchTarget { netns: netns.clone(), device: port.name.clone(), ifindex, reattach: false }))
        }
        PortKind::Internal => (take_tap(tap)?, None),
        PortKind::Veth { peer, .. } => {
            let sockets = PacketPort::open_group(peer, queues)
                .map_err(|e| io::Error::new(e.kind(), format!("attach to {peer}: {e}")))?;
            let ifindex = sockets.first().map(PacketPort::ifindex);
            (boxed(sockets), Some(WatchTarget { netns: None, device: peer.clone(), ifindex, reattach: true }))
        }
        PortKind::Netdev { device, netns } => {
            let opened = match netns {
                Some(ns) => netns::run_in(ns, || PacketPort::open_group(device, queues)).and_then(|r| r),
                None => PacketPort::open_group(device, queues),
            };
            let (io, ifindex) = match opened {
                Ok(sockets) => {
                    let ifindex = sockets.first().map(PacketPort::ifindex);
                    (boxed(sockets), ifindex)
                }
                Err(e) => {
                    warn!(port = %port.name, %device, error = %e, "interface not attached yet");
                    (DetachedPort::queues(queues), None)
                }
            };
            (io, Some(WatchTarget { netns: netns.clone(), device: device.clone(), ifindex, reattach: true }))
        }
        PortKind::Bond(_) | PortKind::Vxlan(_) | PortKind::Socket(_) => {
            return Err(io::Error::other(format!("port {} has no I/O of its own", port.name)));
        }
        PortKind::VhostUser { .. } => {
            return Err(io::Error::other(format!("port {} is a vhost-user device, not an interface", port.name)));
        }
    })
}

/// The MAC a vhost-user device offers its guest (the guest may set another): locally
/// administered, derived from the bridge and port names, so stable across restarts.
fn guest_mac(bridge: &str, port: &str) -> MacAddr {
    let mut hash = 0x8422_2325_cbf2_9ce4u64; // FNV-1a, another basis than the LACP ids'
    for byte in bridge.bytes().chain([0]).chain(port.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let b = hash.to_be_bytes();
    MacAddr([0x52, 0x54, b[0], b[1], b[2], b[3]])
}

/// A port plumbed and opened, ready for the dataplane: its description, its I/O, the
/// interfaces to watch (target, bond member, poll interval, queues), and for a socket port
/// what keeps it connected.
struct Prepared {
    info: PortInfo,
    io: PortIo,
    watches: Vec<(WatchTarget, Option<usize>, Option<Duration>, usize)>,
    socket: Option<attach::Pending>,
}

/// A VXLAN port's dataplane state, as its spec asks.
fn new_vxlan(spec: &crate::topology::VxlanSpec, topology: &Topology) -> Box<Vxlan> {
    let mut vxlan = Box::new(Vxlan::new(vxlan_config(spec, topology)));
    vxlan.set_arp_suppress(spec.arp_suppress);
    vxlan
}

/// A VXLAN port's dataplane settings.
fn vxlan_config(spec: &crate::topology::VxlanSpec, topology: &Topology) -> VxlanConfig {
    VxlanConfig {
        local: spec.local,
        dst_port: spec.dst_port,
        remotes: spec.remotes.clone(),
        allowed: spec.allowed_remotes.iter().map(|c| (c.addr, c.prefix)).collect(),
        learning: spec.learning,
        vnis: spec.vnis.clone(),
        aging: topology.bridge.fdb_aging,
        max_learned: topology.bridge.fdb_max_entries,
    }
}

/// The interface behind an existing port (or bond member), for the link monitor.
fn watch_target(port: &PortSpec) -> Option<WatchTarget> {
    let (netns, device, reattach) = match &port.kind {
        PortKind::Tap { netns } => (netns.clone(), port.name.clone(), false),
        PortKind::Veth { peer, .. } => (None, peer.clone(), true),
        PortKind::Netdev { device, netns } => (netns.clone(), device.clone(), true),
        PortKind::Internal
        | PortKind::Bond(_)
        | PortKind::Vxlan(_)
        | PortKind::Socket(_)
        | PortKind::VhostUser { .. } => return None,
    };
    let ifindex = current_ifindex(&netns, &device);
    Some(WatchTarget { netns, device, ifindex, reattach })
}

/// The dataplane's description of a port.
fn port_info(port: &PortSpec) -> PortInfo {
    PortInfo {
        name: port.name.clone(),
        kind: port.kind.type_name().to_string(),
        netns: port.kind.netns().map(str::to_string),
        mtu: port.mtu,
        vlan: port.vlan.clone(),
    }
}

/// The running switch: the topology it realises, what was created for it, and the ways into
/// the dataplane and the link monitors.
#[allow(missing_debug_implementations)] // owns I/O and threads' handles; `topology` is the view
pub struct Running {
    /// The topology that runs now.
    pub topology: Topology,
    /// The ports the topology file described when it was last (re)loaded: `reload`
    /// reconciles these and leaves the ports added with `port add` alone.
    pub from_file: BTreeSet<String>,
    ids: HashMap<String, PortId>,
    /// TAP devices of bond members, until their bond takes them.
    member_taps: HashMap<String, Vec<TapPort>>,
    undo: Undo,
    switch: SwitchHandle,
    monitors: Monitors,
    /// The connections and socket files of socket ports.
    sockets: HashMap<PortId, attach::Attachment>,
    /// The vhost-user devices, by port name: dropped, a device ends its connection and threads.
    vhost: HashMap<String, crate::vhost_user::VhostUserDevice>,
    threads: usize,
    /// The host services running (dnsmasq, NAT, hosts files), oldest first.
    services: Vec<crate::services::Service>,
    /// The modes of prepared ports not installed yet (by name): they go in with the port.
    pending_modes: HashMap<String, PortModes>,
    /// The EVPN agents of `control = "evpn"` VXLAN ports, by port name.
    evpn: HashMap<String, crate::evpn::Agent>,
}

impl Running {
    /// A switch running nothing yet: `topology`'s bridge settings, no namespace, no port.
    pub fn new(topology: &Topology, undo: Undo, switch: SwitchHandle, threads: usize) -> Running {
        let empty = Topology { netns: Vec::new(), ports: Vec::new(), ..topology.clone() };
        Running {
            topology: empty,
            from_file: BTreeSet::new(),
            ids: HashMap::new(),
            member_taps: HashMap::new(),
            undo,
            monitors: Monitors::new(switch.clone()),
            sockets: HashMap::new(),
            vhost: HashMap::new(),
            switch,
            threads,
            services: Vec::new(),
            pending_modes: HashMap::new(),
            evpn: HashMap::new(),
        }
    }

    /// Makes `desired` run: applies the [`diff`] from what runs. Every step is tried; a port
    /// that cannot be put in is left out (what was done for it undone) and named in the error,
    /// and the running topology says what runs.
    pub fn apply(&mut self, desired: &Topology) -> Result<Diff, Vec<String>> {
        let d = diff(&self.topology, desired);
        let mut errors = Vec::new();
        let old = self.topology.clone();
        let spec = |t: &Topology, name: &str| t.ports.iter().find(|p| p.name == name).cloned();
        // A port's services stop before the port goes (dnsmasq is bound to its interface).
        errors.extend(self.stop_services(|s| s.port().is_some_and(|p| d.ports_removed.iter().any(|r| r == p))));
        // Out of the dataplane first, then off the kernel.
        for name in &d.ports_removed {
            // A member's interface is about to go: its bond's link watches go first (the bond
            // is rebuilt, or removed, below), so the monitor does not detach whichever member
            // takes the leaving one's place.
            if let Some(bond) = spec(&old, name).and_then(|p| p.master).and_then(|b| self.ids.get(&b).copied()) {
                self.monitors.forget(bond);
            }
            // Its EVPN agent stops before the port and its kernel objects go.
            self.evpn.remove(name);
            if let Some(id) = self.ids.remove(name) {
                self.monitors.forget(id);
                // Its connection keeper stops before the port goes, and its socket file with it.
                self.sockets.remove(&id);
                self.vhost.remove(name);
                if let Err(e) = self.call(move |s, now| s.remove_port(id, now).map_err(|e| e.to_string())) {
                    errors.push(format!("port {name}: {e}"));
                }
            }
            self.member_taps.remove(name);
        }
        if !d.ports_removed.is_empty() {
            // A removed port's I/O is closed right after the job that removed it: one more
            // round trip to every worker, and its sockets are gone (a port added again binds
            // the same UDP port: a VXLAN port's sockets are one per worker).
            match self.call(|s, _| Ok(s.other_workers_barrier())) {
                Ok((answers, asked)) => {
                    for _ in 0..asked {
                        if answers.recv_timeout(std::time::Duration::from_secs(5)).is_err() {
                            errors.push("a worker did not answer within 5 s after a port was removed".into());
                            break;
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        for name in &d.ports_removed {
            for failure in self.undo.remove(&Owner::Port(name.clone())) {
                errors.push(format!("port {name}: {failure}"));
            }
            info!(port = %name, "port removed");
        }
        for ns in &d.routes_removed {
            errors.extend(self.undo.remove(&Owner::Routes(ns.clone())));
        }
        for ns in &d.netns_removed {
            self.monitors.stop(&Some(ns.clone()));
            errors.extend(self.undo.remove(&Owner::Netns(ns.clone())));
        }
        for ns in &d.netns_added {
            let Some(spec) = desired.netns.iter().find(|n| &n.name == ns) else { continue };
            if let Err(e) = self.undo.apply(Owner::Netns(ns.clone()), &plumbing::plan_netns(spec)) {
                errors.push(e.to_string());
            }
        }
        for name in &d.ports_reconfigured {
            let (Some(was), Some(port), Some(&id)) = (spec(&old, name), spec(desired, name), self.ids.get(name)) else {
                continue;
            };
            if let Err(e) = self.reconfigure(id, &was, &port) {
                errors.push(format!("port {name}: {e}"));
            }
        }
        let mut failed = BTreeSet::new();
        // Interfaces first (bond members among them), then what builds on them.
        let (later, first): (Vec<&String>, Vec<&String>) = d.ports_added.iter().partition(|name| {
            spec(desired, name).is_some_and(|p| matches!(p.kind, PortKind::Bond(_) | PortKind::Vxlan(_)))
        });
        // Each group is added to the dataplane in one job: a thousand ports, one round trip.
        for group in [first, later] {
            let mut prepared = Vec::new();
            let mut refused = Vec::new();
            for name in group {
                let Some(port) = spec(desired, name) else { continue };
                match self.prepare(&port, desired) {
                    Ok(p) => prepared.extend(p),
                    Err(e) => refused.push((name.clone(), e.to_string())),
                }
            }
            refused.extend(self.install(prepared, desired));
            for (name, e) in refused {
                warn!(port = %name, error = %e, "cannot add the port");
                errors.push(format!("port {name}: {e}"));
                for failure in self.undo.remove(&Owner::Port(name.clone())) {
                    errors.push(format!("port {name}: {failure}"));
                }
                failed.insert(name);
            }
        }
        for name in &d.bonds_rebuilt {
            let (Some(was), Some(port)) = (spec(&old, name), spec(desired, name)) else { continue };
            if let Err(e) = self.rebuild_bond(&was, &port, &d, desired) {
                errors.push(format!("bond {name}: {e}"));
            }
        }
        for ns in &d.routes_added {
            let Some(spec) = desired.netns.iter().find(|n| &n.name == ns) else { continue };
            if let Err(e) = self.undo.apply(Owner::Routes(ns.clone()), &plumbing::plan_routes(spec)) {
                errors.push(e.to_string());
            }
        }
        let mut now_running = desired.clone();
        // A bond that failed takes its members out with it; a member that failed leaves its bond.
        now_running
            .ports
            .retain(|p| !failed.contains(&p.name) && p.master.as_ref().is_none_or(|m| !failed.contains(m)));
        for p in &mut now_running.ports {
            if let PortKind::Bond(b) = &mut p.kind {
                b.members.retain(|m| !failed.contains(m));
            }
        }
        self.topology = now_running;
        errors.extend(self.reconcile_services());
        if let Err(e) = self.sync_mrouters() {
            errors.push(e);
        }
        if errors.is_empty() { Ok(d) } else { Err(errors) }
    }

    /// Stops the running host services `which` selects, newest first.
    fn stop_services(&mut self, which: impl Fn(&crate::services::Service) -> bool) -> Vec<String> {
        let (stop, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.services).into_iter().partition(|s| which(s));
        self.services = keep;
        let mut errors = Vec::new();
        for service in stop.iter().rev() {
            errors.extend(
                self.undo.remove(&Owner::Service(service.key())).into_iter().map(|e| format!("{service}: {e}")),
            );
        }
        errors
    }

    /// Makes the host services the running topology asks for run: those no longer wanted (or
    /// wanted otherwise) stop, then those missing start. After a takeover, the old process's
    /// (which it leaves running) are replaced: its dnsmasq is found by its pid file, its files
    /// and table carry vswitchd's mark, and the forwarding value from before is in its record.
    pub fn reconcile_services(&mut self) -> Vec<String> {
        let wanted = crate::services::plan(&self.topology, &self.undo.runtime_dir());
        let mut errors = self.stop_services(|s| !wanted.contains(s));
        for service in wanted {
            if self.services.contains(&service) {
                continue;
            }
            match self.undo.start_service(&service, &self.topology.bridge.name) {
                Ok(()) => self.services.push(service),
                Err(e) => errors.push(e.to_string()),
            }
        }
        errors
    }

    /// Makes the dataplane's configured multicast router ports those the running topology marks
    /// `mrouter = true` (on every worker), in one round trip.
    fn sync_mrouters(&self) -> Result<(), String> {
        let ports: Vec<(PortId, bool)> =
            self.topology.ports.iter().filter_map(|p| Some((*self.ids.get(&p.name)?, p.mrouter))).collect();
        self.call(move |state, _| {
            for (id, on) in ports {
                state.mdb_set_router(id, on);
            }
            Ok(())
        })
    }

    /// Runs `f` on the dataplane.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut vswitchd_dataplane::switch::SwitchState, vswitchd_dataplane::Instant) -> Result<R, String>
        + Send
        + 'static,
    ) -> Result<R, String> {
        self.switch.call(f, DATAPLANE_TIMEOUT).map_err(|e| e.to_string()).and_then(|r| r)
    }

    /// Plumbs `port` and opens its I/O, ready for the dataplane; a bond member is plumbed only
    /// (its bond takes it), so `None`.
    fn prepare(&mut self, port: &PortSpec, desired: &Topology) -> io::Result<Option<Prepared>> {
        let name = port.name.clone();
        let queues = self.threads;
        let mut taps = self
            .undo
            .apply(Owner::Port(name.clone()), &plumbing::plan_port(port, self.threads))
            .map_err(|e| io::Error::other(e.to_string()))?;
        let tap = taps.remove(&name);
        if port.master.is_some() {
            if let Some(tap) = tap {
                self.member_taps.insert(name, tap);
            }
            return Ok(None);
        }
        let info = port_info(port);
        self.note_modes(port);
        Ok(Some(match &port.kind {
            PortKind::Bond(spec) => {
                // Every worker serves the bond: per worker, one I/O per member.
                let mut per_worker: Vec<Vec<Box<dyn Port>>> = (0..self.threads).map(|_| Vec::new()).collect();
                let mut watches = Vec::new();
                for (index, member) in spec.members.iter().enumerate() {
                    let m = desired
                        .ports
                        .iter()
                        .find(|p| &p.name == member)
                        .ok_or_else(|| io::Error::other(format!("no member {member}")))?;
                    let (ios, target) = self.open_member(m)?;
                    for (worker, io) in per_worker.iter_mut().zip(ios) {
                        worker.push(io);
                    }
                    watches.extend(target.map(|t| (t, Some(index), Some(spec.miimon), self.threads)));
                }
                let bond = Box::new(self.bond(&name, spec));
                Prepared { info, io: PortIo::BondQueues(bond, per_worker), watches, socket: None }
            }
            PortKind::Vxlan(spec) => {
                let tunnels = UdpTunnelPort::open_group(spec.local, spec.dst_port, spec.ttl, self.threads)
                    .map_err(|e| io::Error::new(e.kind(), format!("VXLAN underlay sockets: {e}")))?;
                let vxlan = new_vxlan(spec, desired);
                Prepared { info, io: PortIo::Vxlan(vxlan, boxed(tunnels)), watches: Vec::new(), socket: None }
            }
            PortKind::Socket(spec) => {
                let (io, pending) = attach::open(spec, false)?;
                Prepared { info, io: PortIo::Single(io), watches: Vec::new(), socket: Some(pending) }
            }
            PortKind::VhostUser { socket, server } => {
                let (io, device) =
                    crate::vhost_user::start(&name, socket, *server, guest_mac(&self.topology.bridge.name, &name))?;
                self.vhost.insert(name.clone(), device);
                Prepared { info, io: PortIo::Single(Box::new(io)), watches: Vec::new(), socket: None }
            }
            _ => {
                let (ios, target) = open_io(port, tap, queues)?;
                // TAPs too: one deleted from under us is reported absent and its MACs are
                // forgotten, and a kernel side set down is down.
                let watches = target.map(|t| (t, None, None, queues)).into_iter().collect();
                Prepared { info, io: PortIo::Queues(ios), watches, socket: None }
            }
        }))
    }

    /// Adds prepared ports to the dataplane in one job, then watches their interfaces. Returns
    /// the ports that could not be added, with why.
    fn install(&mut self, prepared: Vec<Prepared>, desired: &Topology) -> Vec<(String, String)> {
        if prepared.is_empty() {
            return Vec::new();
        }
        let mut watches = Vec::new();
        let mut ports = Vec::new();
        for p in prepared {
            watches.push((p.info.name.clone(), p.watches, p.socket));
            let stp = desired.port(&p.info.name).map(|spec| stp_port_config(&spec.stp));
            ports.push((p.info, p.io, stp));
        }
        let ports: Vec<_> = ports
            .into_iter()
            .map(|(info, io, stp)| {
                let modes = self.pending_modes.remove(&info.name).unwrap_or_default();
                (info, io, modes, stp)
            })
            .collect();
        let added = self.call(move |s, now| {
            Ok(ports
                .into_iter()
                .map(|(info, io, modes, stp)| {
                    let id = s.add_port_with_modes(info, io, modes, now).map_err(|e| e.to_string())?;
                    // In the same job: the port joins the tree with its own settings (an edge
                    // port forwards from its first frame).
                    if let Some(stp) = stp {
                        s.stp_set_port(id, stp, now);
                    }
                    Ok(id)
                })
                .collect::<Vec<_>>())
        });
        let added = match added {
            Ok(added) => added,
            Err(e) => return watches.into_iter().map(|(name, _, _)| (name, e.clone())).collect(),
        };
        let mut failed = Vec::new();
        for ((name, targets, socket), result) in watches.into_iter().zip(added) {
            let id = match result {
                Ok(id) => id,
                Err(e) => {
                    failed.push((name, e));
                    continue;
                }
            };
            self.ids.insert(name.clone(), id);
            if let Some(port) = desired.port(&name) {
                if let PortKind::Vxlan(spec) = &port.kind {
                    if spec.evpn {
                        match crate::evpn::start(port, spec, id, self.switch.clone()) {
                            Ok(agent) => {
                                self.evpn.insert(name.clone(), agent);
                            }
                            Err(e) => warn!(port = %name, error = %e, "cannot follow EVPN"),
                        }
                    }
                }
            }
            if let Some(pending) = socket {
                match attach::start(pending, id, &name, self.switch.clone()) {
                    Ok(attachment) => {
                        self.sockets.insert(id, attachment);
                    }
                    Err(e) => warn!(port = %name, error = %e, "cannot keep the port connected"),
                }
            }
            for (t, member, poll_every, queues) in targets {
                let watch = Watch {
                    port: id,
                    member,
                    device: t.device,
                    ifindex: t.ifindex,
                    reattach: t.reattach,
                    poll_every,
                    queues,
                    gone: false,
                };
                if let Err(e) = self.monitors.watch(t.netns, watch) {
                    warn!(port = %name, error = %e, "cannot watch the port's link");
                }
            }
            info!(port = %name, id = id.index(), "port added");
        }
        failed
    }

    /// A bond member's I/O: its TAP (kept since it was plumbed) or a packet socket.
    /// Opens bond member `member`'s I/O: one per worker (the queues of its TAP, the sockets of
    /// a fanout group on its interface).
    fn open_member(&mut self, member: &PortSpec) -> io::Result<MemberQueues> {
        let tap = self.member_taps.remove(&member.name);
        let (ios, target) = open_io(member, tap, self.threads)?;
        if ios.len() != self.threads {
            return Err(io::Error::other(format!(
                "member {} has {} I/O queues for {} workers",
                member.name,
                ios.len(),
                self.threads
            )));
        }
        Ok((ios, target))
    }

    fn bond(&self, name: &str, spec: &BondSpec) -> Bond {
        let config = BondConfig {
            mode: spec.mode,
            miimon: spec.miimon,
            updelay: spec.updelay,
            downdelay: spec.downdelay,
            primary: spec.primary.as_ref().and_then(|p| spec.members.iter().position(|m| m == p)),
            lacp: Some(LacpSettings {
                active: spec.lacp_active,
                fast: spec.lacp_fast,
                system: lacp_system_id(&self.topology.bridge.name, name),
                system_priority: 65535,
                key: 1,
            }),
        };
        Bond::new(config, spec.members.clone())
    }

    fn watch_members(&mut self, id: PortId, targets: Vec<Option<WatchTarget>>, miimon: Duration) -> io::Result<()> {
        for (index, target) in targets.into_iter().enumerate() {
            if let Some(t) = target {
                let watch = Watch {
                    port: id,
                    member: Some(index),
                    device: t.device,
                    ifindex: t.ifindex,
                    reattach: t.reattach,
                    poll_every: Some(miimon),
                    queues: self.threads,
                    gone: false,
                };
                self.monitors.watch(t.netns, watch)?;
            }
        }
        Ok(())
    }

    /// Gives bond `was` → `port` its new members: those that stay keep their I/O.
    fn rebuild_bond(&mut self, was: &PortSpec, port: &PortSpec, d: &Diff, desired: &Topology) -> io::Result<()> {
        let (PortKind::Bond(old), PortKind::Bond(spec)) = (&was.kind, &port.kind) else { return Ok(()) };
        let id = *self.ids.get(&port.name).ok_or_else(|| io::Error::other("the bond is not running"))?;
        // Per worker, one I/O per member.
        let mut per_worker: Vec<Vec<MemberIo>> = (0..self.threads).map(|_| Vec::new()).collect();
        let mut targets = Vec::new();
        for member in &spec.members {
            let m = desired.ports.iter().find(|p| &p.name == member).ok_or_else(|| io::Error::other("no member"))?;
            match old.members.iter().position(|o| o == member).filter(|_| !d.ports_added.contains(member)) {
                Some(index) => {
                    // Kept: the same socket or TAP, on the interface it is on now.
                    let (netns, device, reattach) = match &m.kind {
                        PortKind::Veth { peer, .. } => (None, peer.clone(), true),
                        PortKind::Netdev { device, netns } => (netns.clone(), device.clone(), true),
                        PortKind::Tap { netns } => (netns.clone(), m.name.clone(), false),
                        _ => (None, m.name.clone(), false),
                    };
                    let ifindex = current_ifindex(&netns, &device);
                    for worker in &mut per_worker {
                        worker.push(MemberIo::Keep(index));
                    }
                    targets.push(Some(WatchTarget { netns, device, ifindex, reattach }));
                }
                None => {
                    let (ios, target) = self.open_member(m)?;
                    for (worker, io) in per_worker.iter_mut().zip(ios) {
                        worker.push(MemberIo::New(io));
                    }
                    targets.push(target);
                }
            }
        }
        let bond = self.bond(&port.name, spec);
        self.monitors.forget(id);
        self.call(move |s, _| s.replace_bond_queues(id, bond, per_worker).map_err(|e| e.to_string()))
            .map_err(io::Error::other)?;
        self.watch_members(id, targets, spec.miimon)?;
        info!(bond = %port.name, members = spec.members.len(), "bond members changed");
        Ok(())
    }

    /// Remembers `port`'s modes for [`Running::install`], which sets them with the port.
    fn note_modes(&mut self, port: &PortSpec) {
        if port.modes.is_plain() {
            self.pending_modes.remove(&port.name);
        } else {
            self.pending_modes.insert(port.name.clone(), port.modes.clone());
        }
    }

    /// Changes port `id` from `was` to `port` in place: VLANs in the dataplane, the MTU there
    /// and on the interfaces vswitchd created, the port's modes.
    fn reconfigure(&mut self, id: PortId, was: &PortSpec, port: &PortSpec) -> io::Result<()> {
        if was.vlan != port.vlan || was.mtu != port.mtu {
            let (vlan, mtu) = (port.vlan.clone(), port.mtu);
            self.call(move |s, _| s.reconfigure_port(id, vlan, mtu).map_err(|e| e.to_string()))
                .map_err(io::Error::other)?;
        }
        if was.modes != port.modes {
            let modes = port.modes.clone();
            self.call(move |s, _| s.set_port_modes(id, modes).map_err(|e| e.to_string())).map_err(io::Error::other)?;
        }
        if let (PortKind::Vxlan(before), PortKind::Vxlan(spec)) = (&was.kind, &port.kind)
            && before.arp_suppress != spec.arp_suppress
        {
            let on = spec.arp_suppress;
            self.call(move |s, _| s.set_arp_suppress(id, on).map_err(|e| e.to_string())).map_err(io::Error::other)?;
        }
        if was.mtu != port.mtu {
            let mtu = port.mtu;
            let netns = port.kind.netns().map(str::to_string);
            let mut steps = Vec::new();
            match &port.kind {
                PortKind::Tap { .. } | PortKind::Internal => {
                    steps.push(Step::ConfigureLink { link: port.name.clone(), netns, mtu, mac: None })
                }
                PortKind::Veth { peer, .. } => {
                    steps.push(Step::ConfigureLink { link: port.name.clone(), netns, mtu, mac: None });
                    steps.push(Step::ConfigureLink { link: peer.clone(), netns: None, mtu, mac: None });
                }
                _ => {}
            }
            self.undo.apply(Owner::Port(port.name.clone()), &steps).map_err(|e| io::Error::other(e.to_string()))?;
        }
        info!(port = %port.name, "port reconfigured");
        Ok(())
    }

    /// Packs the running bridge up for a new vswitchd process (`--takeover`): the topology,
    /// what was created, the FDB, and a second fd of every port's I/O on every worker (the
    /// ports keep forwarding meanwhile).
    pub fn package(&mut self) -> Result<(Package, Vec<OwnedFd>), String> {
        let (reply, answers) = crossbeam_channel::unbounded();
        let asked = self.call(move |s, _| Ok(s.collect_fds(reply)))?;
        let names: HashMap<PortId, String> = self.ids.iter().map(|(n, id)| (*id, n.clone())).collect();
        let mut described = Vec::new();
        let mut fds = Vec::new();
        for _ in 0..asked {
            let worker = answers.recv_timeout(DATAPLANE_TIMEOUT).map_err(|_| "a worker did not hand its fds over")?;
            for (id, ordinal, fd) in worker.fds {
                let Some(name) = names.get(&id) else { continue };
                let Some(port) = self.topology.ports.iter().find(|p| &p.name == name) else { continue };
                // A bond's endpoints are its members: the fd is what the member is.
                let spec = match &port.kind {
                    PortKind::Bond(b) => {
                        let Some(member) =
                            b.members.get(ordinal).and_then(|m| self.topology.ports.iter().find(|p| &p.name == m))
                        else {
                            continue;
                        };
                        member
                    }
                    _ => port,
                };
                let kind = match &spec.kind {
                    PortKind::Tap { .. } | PortKind::Internal => FdKind::Tap,
                    PortKind::Veth { peer, .. } => {
                        FdKind::Packet { ifindex: current_ifindex(&None, peer).unwrap_or(0) }
                    }
                    PortKind::Netdev { device, netns } => {
                        FdKind::Packet { ifindex: current_ifindex(netns, device).unwrap_or(0) }
                    }
                    PortKind::Vxlan(_) => FdKind::Tunnel,
                    PortKind::Bond(_) | PortKind::Socket(_) | PortKind::VhostUser { .. } => continue,
                };
                described.push(HandedFd { port: name.clone(), worker: worker.worker, ordinal, kind });
                fds.push(fd);
            }
        }
        let fdb = self.call(move |s, now| {
            let name = |id: PortId| s.live_port(id).map(|p| p.info.name.clone());
            Ok(s.bridge
                .fdb()
                .entries(now)
                .filter_map(|e| {
                    Some(HandedEntry {
                        mac: e.mac.to_string(),
                        vlan: e.vlan.get(),
                        port: name(e.port)?,
                        is_static: e.kind == vswitchd_dataplane::fdb::EntryKind::Static,
                    })
                })
                .collect::<Vec<_>>())
        })?;
        let package = Package {
            pid: std::process::id(),
            threads: self.threads,
            topology: self.topology.to_toml(),
            from_file: self.from_file.iter().cloned().collect(),
            created: self.undo.created(),
            fds: described,
            fdb,
        };
        Ok((package, fds))
    }

    /// Runs `topology` on the I/O another vswitchd process handed over (`fds`, as `package`
    /// describes them): nothing is created (the devices exist and stay), ports whose fds did
    /// not come are opened afresh, and the FDB is filled from the package.
    pub fn adopt(&mut self, topology: &Topology, package: &Package, fds: Vec<OwnedFd>) -> Result<(), Vec<String>> {
        let mut handed: HashMap<(String, usize, usize), (FdKind, OwnedFd)> = HashMap::new();
        for (what, fd) in package.fds.iter().zip(fds) {
            handed.insert((what.port.clone(), what.worker, what.ordinal), (what.kind.clone(), fd));
        }
        let mut errors = Vec::new();
        let (later, first): (Vec<&PortSpec>, Vec<&PortSpec>) = topology
            .ports
            .iter()
            .filter(|p| p.master.is_none())
            .partition(|p| matches!(p.kind, PortKind::Bond(_) | PortKind::Vxlan(_)));
        for group in [first, later] {
            let mut prepared = Vec::new();
            for port in group {
                match self.prepare_adopted(port, topology, &mut handed) {
                    Ok(p) => prepared.push(p),
                    Err(e) => errors.push(format!("port {}: {e}", port.name)),
                }
            }
            for (name, e) in self.install(prepared, topology) {
                errors.push(format!("port {name}: {e}"));
            }
        }
        let ids = self.ids.clone();
        let entries = package.fdb.clone();
        let filled = self.call(move |s, now| {
            for e in entries {
                let (Some(&id), Ok(mac), Some(vlan)) =
                    (ids.get(&e.port), e.mac.parse::<MacAddr>(), vswitchd_dataplane::VlanId::new(e.vlan))
                else {
                    continue;
                };
                if e.is_static {
                    let _ = s.fdb_add_static(vlan, mac, id);
                } else {
                    s.bridge.fdb_mut().learn(vlan, mac, id, now);
                }
            }
            Ok(())
        });
        if let Err(e) = filled {
            errors.push(format!("FDB: {e}"));
        }
        self.topology = topology.clone();
        self.from_file = package.from_file.iter().cloned().collect();
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// As [`Running::prepare`] for a port whose devices exist and whose fds were handed over.
    fn prepare_adopted(
        &mut self,
        port: &PortSpec,
        topology: &Topology,
        handed: &mut HashMap<(String, usize, usize), (FdKind, OwnedFd)>,
    ) -> io::Result<Prepared> {
        let info = port_info(port);
        self.note_modes(port);
        let mut take = |name: &str, worker: usize, ordinal: usize| handed.remove(&(name.to_string(), worker, ordinal));
        let wrap = |spec: &PortSpec, handed: Option<(FdKind, OwnedFd)>| -> io::Result<Option<Box<dyn Port>>> {
            Ok(match handed {
                Some((FdKind::Tap, fd)) => Some(Box::new(TapPort::adopt(fd, &spec.name)?)),
                Some((FdKind::Packet { ifindex }, fd)) => Some(Box::new(PacketPort::adopt(fd, ifindex))),
                Some((FdKind::Tunnel, _)) | None => None,
            })
        };
        Ok(match &port.kind {
            PortKind::Bond(spec) => {
                let mut per_worker: Vec<Vec<Box<dyn Port>>> = (0..self.threads).map(|_| Vec::new()).collect();
                let mut watches = Vec::new();
                for (index, member) in spec.members.iter().enumerate() {
                    let m = topology
                        .ports
                        .iter()
                        .find(|p| &p.name == member)
                        .ok_or_else(|| io::Error::other(format!("no member {member}")))?;
                    let mut ios = Vec::new();
                    for worker in 0..self.threads {
                        match wrap(m, take(&port.name, worker, index))? {
                            Some(io) => ios.push(io),
                            None => break,
                        }
                    }
                    if ios.len() != self.threads {
                        // Not all handed over (a netdev that was detached): open afresh.
                        if matches!(m.kind, PortKind::Tap { .. } | PortKind::Internal) {
                            return Err(io::Error::other(format!(
                                "the TAP queues of bond member {} were not all handed over",
                                m.name
                            )));
                        }
                        ios = self.open_member(m)?.0;
                    }
                    for (worker, io) in per_worker.iter_mut().zip(ios) {
                        worker.push(io);
                    }
                    watches.extend(watch_target(m).map(|t| (t, Some(index), Some(spec.miimon), self.threads)));
                }
                let bond = Box::new(self.bond(&port.name, spec));
                Prepared { info, io: PortIo::BondQueues(bond, per_worker), watches, socket: None }
            }
            PortKind::Vxlan(spec) => {
                // The old process's workers' sockets, as many as it ran (it handed each one).
                let mut handed_rx = Vec::new();
                for worker in 0.. {
                    match take(&port.name, worker, 0) {
                        Some((FdKind::Tunnel, fd)) => handed_rx.push(fd),
                        _ => break,
                    }
                }
                let tunnels = if handed_rx.is_empty() {
                    UdpTunnelPort::open_group(spec.local, spec.dst_port, spec.ttl, self.threads)?
                } else {
                    UdpTunnelPort::adopt_group(handed_rx, spec.local, spec.dst_port, spec.ttl, self.threads)?
                };
                let vxlan = new_vxlan(spec, topology);
                Prepared { info, io: PortIo::Vxlan(vxlan, boxed(tunnels)), watches: Vec::new(), socket: None }
            }
            // Not handed over: the socket is bound afresh in place of the old process's, whose
            // connection ends when it stops (a stream client connects again).
            PortKind::Socket(spec) => {
                let (io, pending) = attach::open(spec, true)?;
                Prepared { info, io: PortIo::Single(io), watches: Vec::new(), socket: Some(pending) }
            }
            // The device's state lives in the guest's memory map and vrings, which do not cross
            // processes: the new one serves the next connection (a client reconnects at once).
            PortKind::VhostUser { socket, server } => {
                let mac = guest_mac(&topology.bridge.name, &port.name);
                let (io, device) = crate::vhost_user::start(&port.name, socket, *server, mac)?;
                self.vhost.insert(port.name.clone(), device);
                Prepared { info, io: PortIo::Single(Box::new(io)), watches: Vec::new(), socket: None }
            }
            _ => {
                let mut ios = Vec::new();
                for worker in 0..self.threads {
                    match wrap(port, take(&port.name, worker, 0))? {
                        Some(io) => ios.push(io),
                        None => break,
                    }
                }
                if ios.len() != self.threads {
                    // Not all handed over (a netdev that was detached): open afresh.
                    if matches!(port.kind, PortKind::Tap { .. } | PortKind::Internal) {
                        return Err(io::Error::other("its TAP queues were not all handed over"));
                    }
                    ios = open_io(port, None, self.threads)?.0;
                }
                let watches = watch_target(port).map(|t| (t, None, None, self.threads)).into_iter().collect();
                Prepared { info, io: PortIo::Queues(ios), watches, socket: None }
            }
        })
    }

    /// Everything created, to remove at shutdown (after the dataplane stopped). The socket
    /// ports' connection keepers stop, and the socket files vswitchd bound go, first.
    pub fn into_undo(mut self) -> Undo {
        self.evpn.clear();
        self.sockets.clear();
        self.vhost.clear();
        self.undo
    }
}

/// A bond member's I/O, one per worker, and the interface to watch for it.
type MemberQueues = (Vec<Box<dyn Port>>, Option<WatchTarget>);

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn topology(ports: &str) -> Topology {
        let src = format!(
            "[bridge]\nname = \"br\"\n[[netns]]\nname = \"red\"\n[[netns]]\nname = \"blue\"\n\
             routes = [{{ dst = \"default\", via = \"10.0.0.1\" }}]\n{ports}"
        );
        Topology::parse(Path::new("t.toml"), &src).unwrap()
    }

    const TWO: &str = "[[port]]\nname = \"a\"\ntype = \"tap\"\nnetns = \"red\"\nvlan = 10\n\
                       [[port]]\nname = \"b\"\ntype = \"veth\"\nnetns = \"blue\"\n";

    #[test]
    fn port_modes_change_in_place() {
        let t = topology(TWO);
        let moded =
            topology(&TWO.replace("vlan = 10\n", "vlan = 10\nisolated = true\nstorm_pps = { broadcast = 5 }\n"));
        assert_eq!(diff(&t, &moded), Diff { ports_reconfigured: vec!["a".into()], ..Diff::default() });
        assert_eq!(diff(&moded, &t), Diff { ports_reconfigured: vec!["a".into()], ..Diff::default() });
    }

    #[test]
    fn from_nothing_everything_is_added_and_to_nothing_everything_removed() {
        let t = topology(TWO);
        let empty = Topology { netns: vec![], ports: vec![], ..t.clone() };
        let up = diff(&empty, &t);
        assert_eq!(up.ports_added, vec!["a", "b"]);
        assert_eq!(up.netns_added, vec!["red", "blue"]);
        assert_eq!(up.routes_added, vec!["blue"]);
        let down = diff(&t, &empty);
        assert_eq!(down.ports_removed, vec!["b", "a"]);
        assert_eq!(down.netns_removed, vec!["blue", "red"]);
        assert_eq!(down.routes_removed, vec!["blue"]);
        assert!(diff(&t, &t).is_empty());
    }

    #[test]
    fn a_vlan_or_mtu_change_is_made_in_place_anything_else_rebuilds_the_port() {
        let t = topology(TWO);
        let moved = topology(&TWO.replace("vlan = 10", "vlan = 20\nmtu = 9000"));
        assert_eq!(diff(&t, &moved), Diff { ports_reconfigured: vec!["a".into()], ..Diff::default() });
        let readdressed = topology(&TWO.replace("vlan = 10", "vlan = 10\naddress = \"10.0.0.2/24\""));
        let d = diff(&t, &readdressed);
        assert_eq!((d.ports_removed, d.ports_added), (vec!["a".to_string()], vec!["a".to_string()]));
    }

    #[test]
    fn arp_suppress_changes_in_place_other_vxlan_keys_rebuild() {
        let vx =
            "[[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nvni = 5\nlocal = \"192.0.2.1\"\nremotes = [\"192.0.2.2\"]\n";
        let t = topology(&format!("{TWO}{vx}"));
        let on = topology(&format!("{TWO}{vx}arp_suppress = true\n"));
        assert_eq!(diff(&t, &on), Diff { ports_reconfigured: vec!["vx0".into()], ..Diff::default() });
        let moved = topology(&format!("{TWO}{vx}ttl = 9\n"));
        assert_eq!(diff(&t, &moved).ports_added, vec!["vx0".to_string()]);
    }

    #[test]
    fn a_bond_member_joining_or_leaving_rebuilds_only_the_bond() {
        let bond = "[[port]]\nname = \"bond0\"\ntype = \"bond\"\nmode = \"active-backup\"\n\
                    [[port]]\nname = \"m1\"\ntype = \"veth\"\nmaster = \"bond0\"\n";
        let t = topology(&format!("{TWO}{bond}"));
        let joined = topology(&format!("{TWO}{bond}[[port]]\nname = \"m2\"\ntype = \"veth\"\nmaster = \"bond0\"\n"));
        let d = diff(&t, &joined);
        assert_eq!(d.ports_added, vec!["m2"]);
        assert!(d.ports_removed.is_empty());
        assert_eq!(d.bonds_rebuilt, vec!["bond0"]);
        let d = diff(&joined, &t);
        assert_eq!(d.ports_removed, vec!["m2"]);
        assert_eq!(d.bonds_rebuilt, vec!["bond0"]);
        assert!(d.ports_added.is_empty());
    }

    #[test]
    fn changed_routes_are_replaced() {
        let t = topology(TWO);
        let mut other = t.clone();
        other.netns[1].routes.clear();
        let d = diff(&t, &other);
        assert_eq!((d.routes_removed, d.routes_added), (vec!["blue".to_string()], vec![]));
        let d = diff(&other, &t);
        assert_eq!((d.routes_removed, d.routes_added), (vec![], vec!["blue".to_string()]));
    }
}
