//! From a validated topology to kernel state: [`plan`] turns the topology into an ordered list
//! of [`Step`]s (pure; `vswitchd --check` prints it), and [`apply`] carries them out over
//! netlink while recording how to undo each one. If a step fails, everything done so far is
//! undone before the error is returned; on shutdown, [`Undo::run`] removes exactly what was
//! created — a namespace that already existed is used and left in place. Each namespace, TAP
//! device and veth pair is listed in the bridge's [`StateFile`] before it is created, so that
//! after a kill the next start can remove it ([`remove_left_over`]).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use nix::errno::Errno;
use tracing::{info, warn};
use vswitchd_dataplane::port::tap::TapPort;
use vswitchd_dataplane::wire::MacAddr;

use crate::netlink::{LinkChange, NetlinkError, NetlinkSocket, message};
use crate::netns;
use crate::state::{Created, StateFile};
use crate::topology::{IpCidr, NetnsSpec, PortKind, PortSpec, RouteSpec, SocketFraming, Topology};

/// One thing to do to the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create a named namespace unless it exists (and then bring its loopback up).
    CreateNetns {
        /// The namespace.
        name: String,
    },
    /// Create a TAP device in vswitchd's namespace, held open by vswitchd.
    CreateTap {
        /// The device.
        name: String,
        /// Its queues: one per worker thread.
        queues: usize,
    },
    /// Create a veth pair in vswitchd's namespace.
    CreateVeth {
        /// The end vswitchd attaches to (stays in its namespace).
        switch_end: String,
        /// The end that goes to the host.
        host_end: String,
    },
    /// Stop a link from configuring IPv6 on itself (the switch-side end of a veth stays
    /// silent).
    SilenceLink {
        /// The link, in vswitchd's namespace.
        link: String,
    },
    /// Note an existing interface a netdev port attaches to (nothing is changed).
    UseExisting {
        /// The interface.
        device: String,
        /// Where it lives.
        netns: Option<String>,
    },
    /// Move a link into a namespace.
    MoveToNetns {
        /// The link.
        link: String,
        /// The target namespace.
        netns: String,
    },
    /// Set a link's MTU and (optionally) MAC.
    ConfigureLink {
        /// The link.
        link: String,
        /// Where it is (`None`: vswitchd's namespace).
        netns: Option<String>,
        /// MTU.
        mtu: u32,
        /// MAC address.
        mac: Option<MacAddr>,
    },
    /// Add an address to a link.
    AddAddress {
        /// The link.
        link: String,
        /// Where it is.
        netns: Option<String>,
        /// The address.
        address: IpCidr,
    },
    /// Bring a link up.
    SetUp {
        /// The link.
        link: String,
        /// Where it is.
        netns: Option<String>,
    },
    /// Add a route in a namespace.
    AddRoute {
        /// The namespace.
        netns: String,
        /// The route.
        route: RouteSpec,
    },
    /// Create a kernel link in vswitchd's namespace for port `port` (EVPN's objects).
    CreateKernelLink {
        /// The link.
        name: String,
        /// What it is.
        kind: KernelLink,
        /// The port it is for.
        port: String,
    },
    /// Make a link (in vswitchd's namespace) a port of a kernel bridge.
    SetMaster {
        /// The link.
        link: String,
        /// The bridge.
        master: String,
    },
    /// Note the Unix socket a VM's port uses (the daemon opens it when it adds the port; a
    /// socket to bind needs its directory to exist).
    UseSocket {
        /// The socket's path.
        path: PathBuf,
        /// What vswitchd does with it.
        role: SocketRole,
    },
}

/// A kernel link EVPN needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelLink {
    /// A bridge.
    Bridge,
    /// A VXLAN device that does not learn.
    Vxlan {
        /// Its VNI.
        vni: u32,
        /// Its source address.
        local: IpAddr,
        /// Its UDP port.
        port: u16,
    },
    /// A veth pair (the step names the end that goes in the bridge).
    Veth {
        /// The other end.
        peer: String,
    },
}

impl KernelLink {
    /// The kind the kernel reports for it.
    pub fn type_name(&self) -> &'static str {
        match self {
            KernelLink::Bridge => "bridge",
            KernelLink::Vxlan { .. } => "vxlan",
            KernelLink::Veth { .. } => "veth",
        }
    }
}

/// The EVPN kernel objects of VXLAN port `port`, per VNI: a bridge, a VXLAN device on
/// [`crate::evpn::KERNEL_UDP_PORT`] in it, a veth pair with one end in it, all up and silent.
fn plan_evpn(port: &PortSpec, spec: &crate::topology::VxlanSpec) -> Vec<Step> {
    let mut steps = Vec::new();
    let owner = port.name.clone();
    for (vni, _) in crate::evpn::vnis(spec, &port.vlan) {
        let n = crate::evpn::kernel_names(vni);
        let create = |name: &String, kind| Step::CreateKernelLink { name: name.clone(), kind, port: owner.clone() };
        steps.push(create(&n.bridge, KernelLink::Bridge));
        steps.push(create(&n.vxlan, KernelLink::Vxlan { vni, local: spec.local, port: crate::evpn::KERNEL_UDP_PORT }));
        steps.push(create(&n.local, KernelLink::Veth { peer: n.peer.clone() }));
        for link in [&n.bridge, &n.vxlan, &n.local, &n.peer] {
            steps.push(Step::SilenceLink { link: link.clone() });
        }
        for link in [&n.vxlan, &n.local] {
            steps.push(Step::SetMaster { link: link.clone(), master: n.bridge.clone() });
        }
        for link in [&n.peer, &n.local, &n.vxlan, &n.bridge] {
            steps.push(Step::SetUp { link: link.clone(), netns: None });
        }
    }
    steps
}

/// What vswitchd does with a VM port's Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketRole {
    /// Listens for QEMU's `-netdev stream` connection.
    StreamListen,
    /// Connects to QEMU's listening `-netdev stream`, again whenever the connection ends.
    StreamConnect,
    /// Binds the socket QEMU's `-netdev dgram` sends to.
    DgramBind,
    /// Listens for a vhost-user connection.
    VhostUserListen,
    /// Connects to a vhost-user socket.
    VhostUserConnect,
}

impl SocketRole {
    /// Whether vswitchd creates the socket file (and removes it when the port goes).
    pub fn binds(self) -> bool {
        !matches!(self, SocketRole::StreamConnect | SocketRole::VhostUserConnect)
    }
}

struct Where<'a>(&'a Option<String>);

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ns) => write!(f, "namespace {ns}"),
            None => write!(f, "vswitchd's namespace"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CreateNetns { name } => {
                write!(f, "create namespace {name} (use it if it exists)")
            }
            Step::CreateTap { name, queues: 1 } => write!(f, "create TAP device {name}"),
            Step::CreateTap { name, queues } => write!(f, "create TAP device {name} with {queues} queues"),
            Step::CreateVeth { switch_end, host_end } => write!(f, "create veth pair {host_end} / {switch_end}"),
            Step::SilenceLink { link } => write!(f, "turn off IPv6 autoconfiguration on {link}"),
            Step::UseExisting { device, netns } => {
                write!(f, "attach to existing {device} in {} (not created or changed)", Where(netns))
            }
            Step::MoveToNetns { link, netns } => write!(f, "move {link} into namespace {netns}"),
            Step::ConfigureLink { link, netns, mtu, mac } => {
                write!(f, "set {link} in {}: mtu {mtu}", Where(netns))?;
                if let Some(mac) = mac {
                    write!(f, ", mac {mac}")?;
                }
                Ok(())
            }
            Step::AddAddress { link, netns, address } => {
                write!(f, "add address {address} to {link} in {}", Where(netns))
            }
            Step::SetUp { link, netns } => write!(f, "bring {link} up in {}", Where(netns)),
            Step::AddRoute { netns, route } => write!(f, "add route {route} in namespace {netns}"),
            Step::CreateKernelLink { name, kind, port } => match kind {
                KernelLink::Vxlan { vni, local, port: udp } => write!(
                    f,
                    "create vxlan device {name} (VNI {vni}, local {local}, UDP port {udp}, no learning) for port {port}"
                ),
                KernelLink::Veth { peer } => write!(f, "create veth pair {name} / {peer} for port {port}"),
                KernelLink::Bridge => write!(f, "create kernel bridge {name} for port {port}"),
            },
            Step::SetMaster { link, master } => write!(f, "make {link} a port of bridge {master}"),
            Step::UseSocket { path, role } => {
                let path = path.display();
                match role {
                    SocketRole::StreamListen => write!(f, "listen for a QEMU stream connection at {path}"),
                    SocketRole::StreamConnect => {
                        write!(f, "connect to QEMU's stream socket at {path} (again whenever it closes)")
                    }
                    SocketRole::DgramBind => {
                        write!(f, "bind QEMU's datagram socket at {path} (replies go to the last sender)")
                    }
                    SocketRole::VhostUserListen => write!(f, "listen for a vhost-user connection at {path}"),
                    SocketRole::VhostUserConnect => write!(f, "connect to the vhost-user socket at {path}"),
                }
            }
        }
    }
}

/// The steps that realise `topology`, in order: its namespaces, its ports, then its routes.
pub fn plan(topology: &Topology) -> Vec<Step> {
    let queues = topology.worker_threads();
    let mut steps: Vec<Step> = topology.netns.iter().flat_map(plan_netns).collect();
    for port in &topology.ports {
        steps.extend(plan_port(port, queues));
    }
    for ns in &topology.netns {
        steps.extend(plan_routes(ns));
    }
    steps
}

/// The steps that create namespace `ns` (if absent).
pub fn plan_netns(ns: &NetnsSpec) -> Vec<Step> {
    vec![Step::CreateNetns { name: ns.name.clone() }]
}

/// The steps that add namespace `ns`'s routes (once its ports' addresses are in place).
pub fn plan_routes(ns: &NetnsSpec) -> Vec<Step> {
    ns.routes.iter().map(|route| Step::AddRoute { netns: ns.name.clone(), route: *route }).collect()
}

/// The steps that plumb `port` for a switch of `queues` worker threads.
pub fn plan_port(port: &PortSpec, queues: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let netns = port.kind.netns().map(str::to_string);
    match &port.kind {
        // A bond member too: every worker serves its bond, each on a queue of its own.
        PortKind::Tap { .. } | PortKind::Internal => steps.push(Step::CreateTap { name: port.name.clone(), queues }),
        PortKind::Veth { peer, .. } => {
            steps.push(Step::CreateVeth { switch_end: peer.clone(), host_end: port.name.clone() })
        }
        PortKind::Netdev { device, netns } => {
            steps.push(Step::UseExisting { device: device.clone(), netns: netns.clone() });
            return steps;
        }
        // A bond is not a kernel interface: its members are the ports to plumb.
        PortKind::Bond(_) => return steps,
        // A VXLAN port is UDP sockets on the underlay, opened by the daemon; with EVPN, the
        // kernel objects zebra reads and writes.
        PortKind::Vxlan(spec) if spec.evpn => return plan_evpn(port, spec),
        PortKind::Vxlan(_) => return steps,
        // A VM's socket is opened by the daemon too; the plan says what it does with it.
        PortKind::Socket(spec) => {
            let role = match (spec.framing, spec.server) {
                (SocketFraming::Dgram, _) => SocketRole::DgramBind,
                (SocketFraming::Stream, true) => SocketRole::StreamListen,
                (SocketFraming::Stream, false) => SocketRole::StreamConnect,
            };
            steps.push(Step::UseSocket { path: spec.path.clone(), role });
            return steps;
        }
        PortKind::VhostUser { socket, server } => {
            let role = if *server { SocketRole::VhostUserListen } else { SocketRole::VhostUserConnect };
            steps.push(Step::UseSocket { path: socket.clone(), role });
            return steps;
        }
    }
    if let Some(ns) = &netns {
        steps.push(Step::MoveToNetns { link: port.name.clone(), netns: ns.clone() });
    }
    steps.push(Step::ConfigureLink { link: port.name.clone(), netns: netns.clone(), mtu: port.mtu, mac: port.mac });
    if let Some(address) = port.address {
        steps.push(Step::AddAddress { link: port.name.clone(), netns: netns.clone(), address });
    }
    steps.push(Step::SetUp { link: port.name.clone(), netns });
    if let PortKind::Veth { peer, .. } = &port.kind {
        steps.push(Step::ConfigureLink { link: peer.clone(), netns: None, mtu: port.mtu, mac: None });
        steps.push(Step::SilenceLink { link: peer.clone() });
        steps.push(Step::SetUp { link: peer.clone(), netns: None });
    }
    steps
}

/// A step that failed, after everything before it was undone.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct SetupError {
    /// The step, as `--check` prints it.
    pub step: String,
    /// What went wrong.
    #[source]
    pub source: io::Error,
}

#[derive(Debug)]
enum UndoAction {
    /// Remove what was created: delete a namespace or a veth pair, close a TAP.
    Remove(Created),
    DeleteRoute {
        netns: String,
        route: RouteSpec,
    },
    /// Stop a host service (dnsmasq, NAT, forwarding, a hosts file).
    StopService(crate::services::Started),
}

/// What a piece of plumbing was done for: it is undone with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// A namespace (its creation).
    Netns(String),
    /// A port (its devices; the addresses on them go with them).
    Port(String),
    /// A namespace's routes.
    Routes(String),
    /// A host service ([`crate::services::Service::key`]).
    Service(String),
}

/// How to remove what [`apply`] created, newest first, all of it or one owner's.
#[derive(Debug)]
pub struct Undo {
    actions: Vec<(Owner, UndoAction)>,
    taps: HashMap<String, Vec<TapPort>>,
    sockets: HashMap<Option<String>, NetlinkSocket>,
    /// Where the namespaces each TAP device's kernel side goes to (from the plan's moves).
    tap_destinations: HashMap<String, String>,
    /// What is created is listed here first.
    state: StateFile,
}

/// Deletes the TAP devices of `topology` (kernel sides of `tap` ports, `internal` ports)
/// together, one batch per namespace, before their fds are closed: closing a thousand TAP fds
/// one after another unregisters the devices one at a time (about 20 ms each); a batch takes
/// one wait. Best effort: what is left goes when its fd closes. Returns how many were deleted.
pub fn remove_taps_together(topology: &Topology) -> usize {
    let mut by_namespace: HashMap<Option<&str>, Vec<&str>> = HashMap::new();
    for port in &topology.ports {
        match &port.kind {
            PortKind::Tap { netns } => by_namespace.entry(netns.as_deref()).or_default().push(&port.name),
            PortKind::Internal => by_namespace.entry(None).or_default().push(&port.name),
            _ => {}
        }
    }
    // A group number no one else uses: random (std's hasher keys are), in the upper half.
    let group = {
        use std::hash::BuildHasher;
        (std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u32) | 0x8000_0000
    };
    let mut removed = 0;
    for (netns_name, names) in by_namespace {
        let delete = || {
            NetlinkSocket::open()
                .map_err(|e| e.to_string())?
                .delete_links_together(&names, group)
                .map_err(|e| e.to_string())
        };
        let result = match netns_name {
            Some(ns) => netns::run_in(ns, delete).map_err(|e| e.to_string()).and_then(|r| r),
            None => delete(),
        };
        match result {
            Ok(n) => removed += n,
            Err(e) => {
                tracing::warn!(netns = netns_name.unwrap_or("own"), error = %e, "cannot remove TAP devices together")
            }
        }
    }
    removed
}

/// What [`apply`] made: the TAP devices (for the dataplane) and the undo log.
#[derive(Debug)]
pub struct Applied {
    /// TAP devices by name, one port per queue; closing them all removes the device.
    pub taps: HashMap<String, Vec<TapPort>>,
    /// The undo log.
    pub undo: Undo,
}

impl Undo {
    fn socket(&mut self, netns: &Option<String>) -> io::Result<&mut NetlinkSocket> {
        if !self.sockets.contains_key(netns) {
            let socket = match netns {
                Some(ns) => netns::run_in(ns, NetlinkSocket::open)??,
                None => NetlinkSocket::open()?,
            };
            self.sockets.insert(netns.clone(), socket);
        }
        Ok(self.sockets.get_mut(netns).expect("inserted above"))
    }

    /// Creates `what` with `create`, listed in the state file first (and taken off again if
    /// creating it fails: a name in the way may be someone else's); on success, `what` is
    /// undone on [`Undo::run`].
    fn create<T>(
        &mut self,
        owner: &Owner,
        what: Created,
        create: impl FnOnce(&mut Undo) -> io::Result<T>,
    ) -> io::Result<T> {
        self.state.will_create(what.clone())?;
        match create(self) {
            Ok(made) => {
                self.actions.push((owner.clone(), UndoAction::Remove(what)));
                Ok(made)
            }
            Err(e) => {
                if let Err(unlisted) = self.state.not_created(&what) {
                    warn!(error = %unlisted, "cannot take what was not created off the state file");
                }
                Err(e)
            }
        }
    }

    fn execute(&mut self, owner: &Owner, step: &Step) -> io::Result<()> {
        match step {
            Step::CreateNetns { name } => {
                if netns::exists(name) {
                    info!(netns = %name, "namespace exists; using it and leaving it in place");
                    return Ok(());
                }
                self.create(owner, Created::Namespace { name: name.clone() }, |_| netns::create(name))?;
                self.socket(&Some(name.clone()))?
                    .set_link("lo", LinkChange { up: Some(true), ..LinkChange::default() })?;
            }
            Step::CreateTap { name, queues } => {
                let netns = self.tap_destinations.get(name).cloned();
                let tap = self.create(owner, Created::Tap { name: name.clone(), netns }, |_| {
                    TapPort::create_queues(name, *queues).map_err(|e| match e.raw_os_error() {
                        Some(libc::EBUSY) | Some(libc::EINVAL) | Some(libc::EEXIST) => io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("an interface named {name} already exists"),
                        ),
                        _ => e,
                    })
                })?;
                self.taps.insert(name.clone(), tap);
            }
            Step::CreateVeth { switch_end, host_end } => {
                let socket = self.socket(&None)?;
                for name in [switch_end, host_end] {
                    if socket.link_index(name)?.is_some() {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!("an interface named {name} already exists"),
                        ));
                    }
                }
                let what = Created::Veth { switch_end: switch_end.clone(), host_end: host_end.clone() };
                self.create(owner, what, |undo| Ok(undo.socket(&None)?.create_veth(switch_end, host_end)?))?;
            }
            Step::SilenceLink { link } => self.socket(&None)?.disable_ipv6_autoconf(link)?,
            Step::UseExisting { device, netns } => {
                let present = self.socket(netns)?.link_index(device)?.is_some();
                if !present {
                    warn!(%device, "interface absent for now; the port will attach when it appears");
                }
            }
            Step::MoveToNetns { link, netns: ns } => {
                let target = netns::open(ns)?;
                self.socket(&None)?.move_link(link, target.as_raw_fd()).map_err(|e| match e.errno {
                    Errno::EEXIST => io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("namespace {ns} already has an interface named {link}"),
                    ),
                    _ => e.into(),
                })?;
            }
            Step::ConfigureLink { link, netns, mtu, mac } => {
                self.socket(netns)?.set_link(link, LinkChange { up: None, mtu: Some(*mtu), mac: *mac, group: None })?;
            }
            Step::AddAddress { link, netns, address } => {
                let socket = self.socket(netns)?;
                let index = socket.require_link(link)?;
                socket.execute(message::add_address(index, *address))?;
            }
            Step::SetUp { link, netns } => {
                self.socket(netns)?.set_link(link, LinkChange { up: Some(true), ..LinkChange::default() })?;
            }
            Step::AddRoute { netns, route } => {
                self.socket(&Some(netns.clone()))?.execute(message::route(route, true))?;
                self.actions.push((owner.clone(), UndoAction::DeleteRoute { netns: netns.clone(), route: *route }));
            }
            Step::CreateKernelLink { name, kind, port } => {
                if self.socket(&None)?.link_index(name)?.is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("an interface named {name} already exists"),
                    ));
                }
                let what = Created::Link { name: name.clone(), link_type: kind.type_name().into(), port: port.clone() };
                let request = match kind {
                    KernelLink::Bridge => crate::netlink::fdb::create_bridge(name),
                    KernelLink::Vxlan { vni, local, port } => {
                        crate::netlink::fdb::create_vxlan(name, *vni, *local, *port)
                    }
                    KernelLink::Veth { peer } => message::create_veth(name, peer),
                };
                self.create(owner, what, |undo| Ok(undo.socket(&None)?.execute(request).map(drop)?))?;
            }
            Step::SetMaster { link, master } => {
                let socket = self.socket(&None)?;
                let (index, bridge) = (socket.require_link(link)?, socket.require_link(master)?);
                socket.execute(crate::netlink::fdb::set_master(index, bridge))?;
            }
            Step::UseSocket { path, role } => {
                let directory = path.parent().filter(|d| !d.as_os_str().is_empty());
                if role.binds() && directory.is_some_and(|d| !d.is_dir()) {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("directory {} does not exist", directory.map_or(path.display(), |d| d.display())),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Undoes everything recorded, newest first, then removes the state file (or, if some of
    /// it could not be undone, leaves that listed for the next start). Failures are logged and
    /// returned; the rest is still undone.
    pub fn run(mut self) -> Vec<String> {
        let mut failures = Vec::new();
        let mut remaining = Vec::new();
        while let Some((_, action)) = self.actions.pop() {
            let result = self.undo_action(&action, false);
            if let Err(e) = result {
                warn!(?action, error = %e, "could not undo");
                failures.push(format!("{action:?}: {e}"));
                if let UndoAction::Remove(what) = action {
                    remaining.push(what);
                }
            }
        }
        self.sockets.clear();
        remaining.reverse(); // oldest first, as listed
        if let Err(e) = self.state.finish(remaining) {
            warn!(error = %e, "could not update the state file");
            failures.push(e.to_string());
        }
        failures
    }

    /// Carries out `steps` for `owner`, listing what it creates in the state file first.
    /// Returns the TAP devices created, by name. On failure, undoes what these steps did (and
    /// only that) and says which step failed.
    pub fn apply(&mut self, owner: Owner, steps: &[Step]) -> Result<HashMap<String, Vec<TapPort>>, SetupError> {
        for step in steps {
            if let Step::MoveToNetns { link, netns } = step {
                self.tap_destinations.insert(link.clone(), netns.clone());
            }
        }
        let first = self.actions.len();
        for step in steps {
            info!(%step, "setup");
            if let Err(source) = self.execute(&owner, step) {
                let step = step.to_string();
                warn!(%step, error = %source, "setup failed; undoing what was done");
                let done: Vec<(Owner, UndoAction)> = self.actions.drain(first..).collect();
                self.undo_now(done);
                self.taps.clear();
                return Err(SetupError { step, source });
            }
        }
        Ok(std::mem::take(&mut self.taps))
    }

    /// The directory of the bridge's state file, where host services keep their files.
    pub fn runtime_dir(&self) -> PathBuf {
        self.state.path().parent().map_or_else(|| PathBuf::from("."), std::path::Path::to_path_buf)
    }

    /// Starts host service `service` of bridge `bridge`; it is stopped with
    /// `Owner::Service(service.key())`, or on [`Undo::run`].
    pub fn start_service(&mut self, service: &crate::services::Service, bridge: &str) -> Result<(), SetupError> {
        info!(step = %service, "setup");
        let dir = self.runtime_dir();
        match crate::services::start(service, bridge, &dir) {
            Ok(started) => {
                self.actions.push((Owner::Service(service.key()), UndoAction::StopService(started)));
                Ok(())
            }
            Err(source) => {
                warn!(step = %service, error = %source, "setup failed");
                Err(SetupError { step: service.to_string(), source })
            }
        }
    }

    /// Removes what was created for `owner`, newest first, while the switch runs (TAP devices
    /// are deleted over netlink: their fds belong to the dataplane). Failures are logged and
    /// returned; what could not be removed stays listed for the next start.
    pub fn remove(&mut self, owner: &Owner) -> Vec<String> {
        let (mine, others): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.actions).into_iter().partition(|(o, _)| o == owner);
        self.actions = others;
        if let Owner::Netns(name) = owner {
            // A socket open in the namespace would keep it (and its links) alive.
            self.sockets.remove(&Some(name.clone()));
        }
        self.undo_now(mine)
    }

    /// Undoes `actions` (oldest first as given) newest first, taking what is removed off the
    /// state file.
    fn undo_now(&mut self, mut actions: Vec<(Owner, UndoAction)>) -> Vec<String> {
        let mut failures = Vec::new();
        while let Some((_, action)) = actions.pop() {
            match self.undo_action(&action, true) {
                Ok(()) => {
                    if let UndoAction::Remove(what) = &action {
                        if let Err(e) = self.state.not_created(what) {
                            warn!(error = %e, "cannot take what was removed off the state file");
                        }
                    }
                }
                Err(e) => {
                    warn!(?action, error = %e, "could not undo");
                    failures.push(format!("{action:?}: {e}"));
                }
            }
        }
        failures
    }

    /// Undoes one action. `running`: the switch runs, so a TAP device is deleted over netlink
    /// rather than by closing fds this log does not hold.
    fn undo_action(&mut self, action: &UndoAction, running: bool) -> Result<(), String> {
        {
            match action {
                UndoAction::DeleteRoute { netns, route } => {
                    match self.socket(&Some(netns.clone())).map_err(|e| e.to_string()) {
                        Ok(socket) => match socket.execute(message::route(route, false)) {
                            Ok(_) => Ok(()),
                            // Gone already, for instance with the link it went through.
                            Err(NetlinkError { errno: Errno::ESRCH | Errno::ENOENT, .. }) => Ok(()),
                            Err(e) => Err(e.to_string()),
                        },
                        Err(e) => Err(e),
                    }
                }
                UndoAction::StopService(started) => started.stop(),
                UndoAction::Remove(what @ Created::Tap { name, .. }) => {
                    if self.taps.remove(name).is_none() && running {
                        // The dataplane closing its queues may remove it first: then it is gone.
                        remove_left_over(what).map(drop).map_err(|e| e.to_string())
                    } else {
                        Ok(())
                    }
                }
                // Deleting one end of a veth deletes both, wherever the other one is.
                UndoAction::Remove(Created::Veth { switch_end, .. }) => match self.socket(&None) {
                    Ok(socket) => socket.delete_link(switch_end).map(drop).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                UndoAction::Remove(Created::Link { name, .. }) => match self.socket(&None) {
                    Ok(socket) => socket.delete_link(name).map(drop).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                UndoAction::Remove(Created::Namespace { name }) => {
                    // A socket open in the namespace would keep it (and its links) alive.
                    self.sockets.remove(&Some(name.clone()));
                    netns::delete(name).map_err(|e| e.to_string())
                }
            }
        }
    }

    /// What the state file lists: everything created and not removed yet, oldest first.
    pub fn created(&self) -> Vec<Created> {
        self.state.created().to_vec()
    }

    /// Names of the namespaces this run created.
    pub fn created_namespaces(&self) -> Vec<String> {
        self.actions
            .iter()
            .filter_map(|(_, a)| match a {
                UndoAction::Remove(Created::Namespace { name }) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Removes `what`, which a vswitchd killed before it could undo its work left behind (as its
/// state file lists it): a namespace, a veth pair (through its end in this process's
/// namespace), a TAP device (gone with the killed process's fds, unless another process held
/// one). Returns whether there was anything to remove.
pub fn remove_left_over(what: &Created) -> io::Result<bool> {
    match what {
        Created::Namespace { name } => {
            if !netns::exists(name) {
                return Ok(false);
            }
            netns::delete(name)?;
            Ok(true)
        }
        Created::Veth { switch_end, .. } => delete_if_kind(switch_end, "veth"),
        Created::Link { name, link_type, .. } => delete_if_kind(name, link_type),
        Created::Tap { name, netns: destination } => {
            let delete = || delete_if_kind(name, "tun");
            // Where it went, or here if it was not moved yet.
            let moved = match destination {
                Some(ns) if netns::exists(ns) => netns::run_in(ns, delete)??,
                _ => false,
            };
            Ok(moved || delete()?)
        }
    }
}

/// The undo log of what another vswitchd created for `topology` and handed over
/// (`--takeover`), as `state` lists it: each namespace, TAP device and veth pair is removed
/// with its owner, and the routes of `topology`'s namespaces with them.
pub fn adopted(state: StateFile, topology: &Topology) -> Undo {
    let mut undo = start(state);
    let created: Vec<Created> = undo.state.created().to_vec();
    for what in created {
        let owner = match &what {
            Created::Namespace { name } => Owner::Netns(name.clone()),
            Created::Tap { name, netns } => {
                if let Some(ns) = netns {
                    undo.tap_destinations.insert(name.clone(), ns.clone());
                }
                Owner::Port(name.clone())
            }
            Created::Veth { host_end, .. } => Owner::Port(host_end.clone()),
            Created::Link { port, .. } => Owner::Port(port.clone()),
        };
        undo.actions.push((owner, UndoAction::Remove(what)));
    }
    for ns in &topology.netns {
        for route in &ns.routes {
            undo.actions.push((
                Owner::Routes(ns.name.clone()),
                UndoAction::DeleteRoute { netns: ns.name.clone(), route: *route },
            ));
        }
    }
    undo
}

/// Deletes link `name` in this thread's namespace if it exists and is of `kind` (`veth`,
/// `tun`); a link of that name of another kind is someone else's (the name was reused since it
/// was listed) and is left alone, with an error saying so.
fn delete_if_kind(name: &str, kind: &str) -> io::Result<bool> {
    let mut socket = NetlinkSocket::open()?;
    match socket.link(name)? {
        None => Ok(false),
        Some(link) if link.kind.as_deref() == Some(kind) => Ok(socket.delete_link(name)?),
        Some(link) => Err(io::Error::other(format!(
            "{name} is a {} link now, not the {kind} vswitchd created: left alone",
            link.kind.as_deref().unwrap_or("plain")
        ))),
    }
}

/// An empty undo log whose creations are listed in `state`.
pub fn start(state: StateFile) -> Undo {
    Undo { actions: Vec::new(), taps: HashMap::new(), sockets: HashMap::new(), tap_destinations: HashMap::new(), state }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_plan_creates_namespaces_then_ports_then_routes() {
        let t = Topology::parse(
            Path::new("t.toml"),
            r#"
[bridge]
name = "br0"
[[netns]]
name = "red"
routes = [{ dst = "default", via = "10.0.0.254" }]
[[port]]
name = "tap-red"
type = "tap"
netns = "red"
address = "10.0.0.1/24"
mac = "02:00:00:00:00:01"
[[port]]
name = "br0-int"
type = "internal"
address = "10.0.0.254/24"
mtu = 9000
"#,
        )
        .unwrap();
        let text: Vec<String> = plan(&t).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            text,
            vec![
                "create namespace red (use it if it exists)",
                "create TAP device tap-red",
                "move tap-red into namespace red",
                "set tap-red in namespace red: mtu 1500, mac 02:00:00:00:00:01",
                "add address 10.0.0.1/24 to tap-red in namespace red",
                "bring tap-red up in namespace red",
                "create TAP device br0-int",
                "set br0-int in vswitchd's namespace: mtu 9000",
                "add address 10.0.0.254/24 to br0-int in vswitchd's namespace",
                "bring br0-int up in vswitchd's namespace",
                "add route default via 10.0.0.254 in namespace red",
            ]
        );
    }

    #[test]
    fn evpn_objects_in_the_plan() {
        let t = Topology::parse(
            Path::new("t.toml"),
            "[bridge]\nname = \"b\"\n[[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nvni = 600\n\
             local = \"192.0.2.1\"\ncontrol = \"evpn\"\n",
        )
        .unwrap();
        let text: Vec<String> = plan(&t).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            text,
            vec![
                "create kernel bridge evb600 for port vx0",
                "create vxlan device evx600 (VNI 600, local 192.0.2.1, UDP port 4790, no learning) for port vx0",
                "create veth pair evl600 / evp600 for port vx0",
                "turn off IPv6 autoconfiguration on evb600",
                "turn off IPv6 autoconfiguration on evx600",
                "turn off IPv6 autoconfiguration on evl600",
                "turn off IPv6 autoconfiguration on evp600",
                "make evx600 a port of bridge evb600",
                "make evl600 a port of bridge evb600",
                "bring evp600 up in vswitchd's namespace",
                "bring evl600 up in vswitchd's namespace",
                "bring evx600 up in vswitchd's namespace",
                "bring evb600 up in vswitchd's namespace",
            ]
        );
    }

    #[test]
    fn veth_and_netdev_ports_in_the_plan() {
        let t = Topology::parse(
            Path::new("t.toml"),
            "[bridge]\nname = \"b\"\n[[netns]]\nname = \"red\"\n\
             [[port]]\nname = \"veth-red\"\ntype = \"veth\"\nnetns = \"red\"\naddress = \"10.0.0.1/24\"\n\
             [[port]]\nname = \"up\"\ntype = \"netdev\"\ndevice = \"eth9\"\n",
        )
        .unwrap();
        let text: Vec<String> = plan(&t).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            text,
            vec![
                "create namespace red (use it if it exists)",
                "create veth pair veth-red / veth-red-sw",
                "move veth-red into namespace red",
                "set veth-red in namespace red: mtu 1500",
                "add address 10.0.0.1/24 to veth-red in namespace red",
                "bring veth-red up in namespace red",
                "set veth-red-sw in vswitchd's namespace: mtu 1500",
                "turn off IPv6 autoconfiguration on veth-red-sw",
                "bring veth-red-sw up in vswitchd's namespace",
                "attach to existing eth9 in vswitchd's namespace (not created or changed)",
            ]
        );
    }

    #[test]
    fn vm_sockets_in_the_plan() {
        let t = Topology::parse(
            Path::new("t.toml"),
            "[bridge]\nname = \"b\"\n\
             [[port]]\nname = \"a\"\ntype = \"socket\"\npath = \"/run/a.sock\"\n\
             [[port]]\nname = \"b\"\ntype = \"socket\"\npath = \"/run/b.sock\"\nserver = false\n\
             [[port]]\nname = \"c\"\ntype = \"socket\"\npath = \"/run/c.sock\"\nframing = \"dgram\"\n\
             [[port]]\nname = \"d\"\ntype = \"vhost-user\"\nsocket = \"/run/d.sock\"\n\
             [[port]]\nname = \"e\"\ntype = \"vhost-user\"\nsocket = \"/run/e.sock\"\nserver = false\n",
        )
        .unwrap();
        let text: Vec<String> = plan(&t).iter().map(|s| s.to_string()).collect();
        assert_eq!(
            text,
            vec![
                "listen for a QEMU stream connection at /run/a.sock",
                "connect to QEMU's stream socket at /run/b.sock (again whenever it closes)",
                "bind QEMU's datagram socket at /run/c.sock (replies go to the last sender)",
                "listen for a vhost-user connection at /run/d.sock",
                "connect to the vhost-user socket at /run/e.sock",
            ]
        );
    }
}
