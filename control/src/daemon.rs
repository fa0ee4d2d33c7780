//! The daemon's life: claim the bridge (refusing if another vswitchd runs it, removing what a
//! killed one left), check and bind the control socket out of sight, apply the plumbing, start
//! the dataplane, and only then put the socket at its path and tell systemd `READY=1`; run until
//! SIGINT or SIGTERM, tell systemd `STOPPING=1`, then remove exactly what was created.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use tracing::{debug, error, info};
use vswitchd_dataplane::fdb::FdbConfig;
use vswitchd_dataplane::switch::{HandleError, PortInfo, Switch, SwitchHandle};

use std::collections::BTreeMap;

use std::collections::HashMap;
use tracing::warn;

use vswitchd_dataplane::PortId;
use vswitchd_dataplane::bond::lacp::LacpSettings;
use vswitchd_dataplane::bond::{Bond, BondConfig};
use vswitchd_dataplane::port::detached::DetachedPort;
use vswitchd_dataplane::port::packet::PacketPort;
use vswitchd_dataplane::port::tap::TapPort;
use vswitchd_dataplane::port::udp_tunnel::UdpTunnelPort;
use vswitchd_dataplane::port::{Port, boxed};
use vswitchd_dataplane::vxlan::{Vxlan, VxlanConfig};
use vswitchd_dataplane::wire::MacAddr;

use crate::ctl::{ControlServer, Publisher};
use crate::monitor::{self, Watch};
use crate::netlink::NetlinkSocket;
use crate::netns;
use crate::plumbing::{self, SetupError};
use crate::state::{self, Claim, StateError, StateFile};
use crate::topology::{PortKind, PortSpec, Topology};

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

/// The interface behind a port, for the link monitor.
struct WatchTarget {
    netns: Option<String>,
    device: String,
    ifindex: Option<u32>,
    /// Open a fresh packet socket when the interface is recreated (not for TAPs vswitchd owns).
    reattach: bool,
}

impl WatchTarget {
    fn watch(
        self,
        port: PortId,
        member: Option<usize>,
        poll_every: Option<std::time::Duration>,
        queues: usize,
    ) -> Watch {
        Watch {
            port,
            member,
            device: self.device,
            ifindex: self.ifindex,
            reattach: self.reattach,
            poll_every,
            queues,
            gone: false,
        }
    }
}

/// A port's I/O: one per worker thread.
type Queues = Vec<Box<dyn Port>>;

/// Opens the I/O of a port (or bond member), `queues` of it (one per worker thread): the TAP
/// plumbing created (its queues), or packet sockets on the interface it names (a fanout group);
/// an absent netdev starts detached.
fn open_io(
    port: &PortSpec,
    taps: &mut HashMap<String, Vec<TapPort>>,
    queues: usize,
) -> io::Result<(Queues, Option<WatchTarget>)> {
    let mut take_tap = || {
        let tap =
            taps.remove(&port.name).ok_or_else(|| io::Error::other(format!("no device for port {}", port.name)))?;
        if tap.len() != queues {
            return Err(io::Error::other(format!("port {}: {} queues, {queues} wanted", port.name, tap.len())));
        }
        Ok(boxed(tap))
    };
    Ok(match &port.kind {
        PortKind::Tap { netns } => {
            let tap = take_tap()?;
            let ifindex = current_ifindex(netns, &port.name);
            (tap, Some(WatchTarget { netns: netns.clone(), device: port.name.clone(), ifindex, reattach: false }))
        }
        PortKind::Internal => (take_tap()?, None),
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
        PortKind::Bond(_) | PortKind::Vxlan(_) => {
            return Err(io::Error::other(format!("port {} has no I/O of its own", port.name)));
        }
    })
}

/// The index of `device` in namespace `netns` now, if it exists.
fn current_ifindex(netns_name: &Option<String>, device: &str) -> Option<u32> {
    let lookup = || NetlinkSocket::open().ok()?.link_index(device).ok().flatten();
    match netns_name {
        Some(ns) => netns::run_in(ns, lookup).ok().flatten(),
        None => lookup(),
    }
}

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The control socket could not be set up (nothing was created). The cause names the path.
    #[error("control socket: {source}")]
    ControlSocket {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The bridge is run by another vswitchd, or its state file cannot be used (nothing was
    /// created).
    #[error("{0}")]
    State(#[from] StateError),
    /// What a killed vswitchd left could not all be removed (nothing was created; the state
    /// file still lists what remains).
    #[error("cannot remove what vswitchd pid {pid} left when it was killed (listed in {}): {}", path.display(), failures.join("; "))]
    LeftOver {
        /// The killed process.
        pid: u32,
        /// Its state file.
        path: PathBuf,
        /// What could not be removed, and why.
        failures: Vec<String>,
    },
    /// A setup step failed (what was done before it has been undone).
    #[error("setup failed, everything done before was undone: {0}")]
    Setup(#[from] SetupError),
    /// The dataplane failed (the plumbing has been removed).
    #[error("dataplane: {0}")]
    Dataplane(#[source] io::Error),
}

/// The signals that stop the daemon.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Where systemd's notification socket is (`NOTIFY_SOCKET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// A socket file.
    Path(PathBuf),
    /// An abstract socket address (`@NAME`; in the network namespace of the process).
    Abstract(Vec<u8>),
}

/// Reads the value of `NOTIFY_SOCKET`: an absolute path, or `@` and an abstract name. Anything
/// else (an empty value, a relative path, a `vsock:` address) is not supported.
pub fn notify_target(value: &OsStr) -> Option<NotifyTarget> {
    match value.as_bytes() {
        [b'@', name @ ..] if !name.is_empty() => Some(NotifyTarget::Abstract(name.to_vec())),
        [b'/', ..] => Some(NotifyTarget::Path(PathBuf::from(value))),
        _ => None,
    }
}

/// Sends `message` (`READY=1`, `STOPPING=1`) to `target` in one datagram.
pub fn send_notification(target: &NotifyTarget, message: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let sent = match target {
        NotifyTarget::Path(path) => socket.send_to(message.as_bytes(), path)?,
        NotifyTarget::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message.as_bytes(), &address)?
        }
    };
    if sent != message.len() {
        return Err(io::Error::other(format!("sent {sent} of {} bytes", message.len())));
    }
    Ok(())
}

/// Tells the service manager `message`, if `NOTIFY_SOCKET` names one (systemd `Type=notify`).
/// A failure is logged: the switch works without it.
fn notify(message: &str) {
    let Some(value) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let result = match notify_target(&value) {
        Some(target) => send_notification(&target, message),
        None => Err(io::Error::other("not an absolute path or @abstract name")),
    };
    match result {
        Ok(()) => debug!(message, "told the service manager"),
        Err(e) => {
            warn!(notify_socket = %value.to_string_lossy(), message, error = %e, "cannot notify the service manager")
        }
    }
}

/// Takes the bridge over from the dead owner `claim` found, if any: removes what its state
/// file lists, newest first (a namespace the topology names but vswitchd found in place is
/// never listed, so it stays). Then this process owns the state file.
fn remove_left_over(claim: Claim) -> Result<StateFile, DaemonError> {
    if let Some(record) = claim.left_over() {
        let pid = record.pid;
        let listed = record.created.clone();
        info!(pid, state = %claim.path().display(), listed = listed.len(), "a vswitchd that is gone left a state file; removing what it created");
        let mut remaining = Vec::new();
        let mut failures = Vec::new();
        for what in listed.iter().rev() {
            match plumbing::remove_left_over(what) {
                Ok(true) => info!(%what, pid, "removed what the killed vswitchd created"),
                Ok(false) => debug!(%what, pid, "already gone"),
                Err(e) => {
                    warn!(%what, pid, error = %e, "cannot remove what the killed vswitchd created");
                    failures.push(format!("{what}: {e}"));
                    remaining.push(what.clone());
                }
            }
        }
        if !failures.is_empty() {
            remaining.reverse();
            let path = claim.path().to_path_buf();
            claim.keep_left_over(remaining)?;
            return Err(DaemonError::LeftOver { pid, path, failures });
        }
    }
    Ok(claim.take()?)
}

/// Waits until the dataplane runs (it has answered a job: every port is in its loop), then
/// puts the control socket at its path and tells systemd `READY=1`. Returns `Ok(false)` if
/// the dataplane stopped first. A socket that cannot be put in place stops the switch.
fn announce_when_ready(switch: &SwitchHandle, publisher: &Publisher, bridge: &str, ports: usize) -> io::Result<bool> {
    loop {
        match switch.call(|_, _| (), Duration::from_secs(5)) {
            Ok(()) => break,
            Err(HandleError::Timeout(_)) => continue,
            Err(HandleError::Stopped) => return Ok(false),
        }
    }
    if let Err(e) = publisher.publish() {
        error!(error = %e, "cannot put the control socket in place; stopping");
        let _ = switch.stop();
        return Err(e);
    }
    notify("READY=1");
    info!(%bridge, ports, socket = %publisher.path().display(), "forwarding");
    Ok(true)
}

/// Runs `topology` until SIGINT or SIGTERM. Must be called before any other thread is started,
/// so every thread inherits the blocked stop signals and only the signal thread takes them.
pub fn run(topology: &Topology, socket: &Path, busy_poll: std::time::Duration) -> Result<(), DaemonError> {
    stop_signals().thread_block().map_err(|e| DaemonError::Dataplane(e.into()))?;
    let bridge = &topology.bridge.name;
    // Nothing is created before the bridge is known to be free and the socket path usable.
    let claim = state::claim(&state::path_for(socket, bridge), bridge)?;
    let mut server = ControlServer::bind_hidden(socket)
        .map_err(|source| DaemonError::ControlSocket { path: socket.to_path_buf(), source })?;
    let state = remove_left_over(claim)?;

    let steps = plumbing::plan(topology);
    let mut applied = plumbing::apply(&steps, state)?;

    let mut watches: BTreeMap<Option<String>, Vec<Watch>> = BTreeMap::new();
    let built = (|| -> io::Result<Switch> {
        let fdb = FdbConfig { aging: topology.bridge.fdb_aging, max_learned: topology.bridge.fdb_max_entries };
        let mut switch = Switch::new(&topology.bridge.name, fdb)?;
        switch.set_busy_poll(busy_poll);
        let threads = topology.worker_threads();
        switch.set_threads(threads)?;
        for port in topology.ports.iter().filter(|p| p.master.is_none()) {
            let info = PortInfo {
                name: port.name.clone(),
                kind: port.kind.type_name().to_string(),
                netns: port.kind.netns().map(str::to_string),
                mtu: port.mtu,
                vlan: port.vlan.clone(),
            };
            match &port.kind {
                PortKind::Bond(spec) => {
                    let members: Vec<&PortSpec> =
                        spec.members.iter().filter_map(|m| topology.ports.iter().find(|p| &p.name == m)).collect();
                    let mut ios = Vec::new();
                    let mut targets = Vec::new();
                    for member in &members {
                        let (io, target) = open_io(member, &mut applied.taps, 1)?;
                        ios.extend(io);
                        targets.push(target);
                    }
                    let config = BondConfig {
                        mode: spec.mode,
                        miimon: spec.miimon,
                        updelay: spec.updelay,
                        downdelay: spec.downdelay,
                        primary: spec.primary.as_ref().and_then(|p| spec.members.iter().position(|m| m == p)),
                        lacp: Some(LacpSettings {
                            active: spec.lacp_active,
                            fast: spec.lacp_fast,
                            system: lacp_system_id(&topology.bridge.name, &port.name),
                            system_priority: 65535,
                            key: 1,
                        }),
                    };
                    let bond = Bond::new(config, spec.members.clone());
                    let id = switch.add_bond(info, bond, ios)?;
                    for (index, target) in targets.into_iter().enumerate() {
                        if let Some(target) = target {
                            watches.entry(target.netns.clone()).or_default().push(target.watch(
                                id,
                                Some(index),
                                Some(spec.miimon),
                                1,
                            ));
                        }
                    }
                }
                PortKind::Vxlan(spec) => {
                    let tunnel = UdpTunnelPort::open(spec.local, spec.dst_port, spec.ttl).map_err(|e| {
                        io::Error::new(e.kind(), format!("port {}: VXLAN underlay sockets: {e}", port.name))
                    })?;
                    let config = VxlanConfig {
                        local: spec.local,
                        dst_port: spec.dst_port,
                        remotes: spec.remotes.clone(),
                        allowed: spec.allowed_remotes.iter().map(|c| (c.addr, c.prefix)).collect(),
                        learning: spec.learning,
                        vnis: spec.vnis.clone(),
                        aging: topology.bridge.fdb_aging,
                        max_learned: topology.bridge.fdb_max_entries,
                    };
                    switch.add_vxlan(info, Vxlan::new(config), Box::new(tunnel))?;
                }
                _ => {
                    let (io, target) = open_io(port, &mut applied.taps, threads)?;
                    let id = switch.add_port_queues(info, io)?;
                    // TAPs too: one deleted from under us is reported absent and its MACs are
                    // forgotten, and a kernel side set down is down.
                    if let Some(target) = target {
                        watches.entry(target.netns.clone()).or_default().push(target.watch(id, None, None, threads));
                    }
                }
            }
        }
        Ok(switch)
    })();
    let mut switch = match built {
        Ok(switch) => switch,
        Err(e) => {
            applied.undo.run();
            return Err(DaemonError::Dataplane(e));
        }
    };

    let handle = switch.handle();
    let signal_handle = handle.clone();
    let spawned = thread::Builder::new().name("signals".into()).spawn(move || {
        if let Ok(signal) = stop_signals().wait() {
            info!(%signal, "stopping");
        }
        let _ = signal_handle.stop();
    });
    let monitored = watches.into_iter().try_for_each(|(ns, list)| monitor::spawn(ns, list, handle.clone()));
    let served = spawned.and(monitored).and_then(|()| server.serve(handle.clone()));
    let publisher = server.publisher();
    let (bridge_name, ports) = (bridge.clone(), topology.ports.len());
    let announcer = served.and_then(|()| {
        thread::Builder::new()
            .name("ready".into())
            .spawn(move || announce_when_ready(&handle, &publisher, &bridge_name, ports))
    });
    let result = match &announcer {
        Ok(_) => switch.run(),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    };
    plumbing::remove_taps_together(topology); // all at once, not one close at a time
    drop(switch); // closes the TAP fds: any device still there goes away
    // With the dataplane gone, the announcer has published or given up; only then STOPPING=1,
    // so it can never be followed by a late READY=1.
    let announced = match announcer {
        Ok(thread) => thread.join().unwrap_or_else(|_| Err(io::Error::other("the ready thread panicked"))),
        Err(_) => Ok(false),
    };
    notify("STOPPING=1");
    let failures = applied.undo.run();
    drop(server);
    if !failures.is_empty() {
        error!(count = failures.len(), "some of what was created could not be removed");
    }
    result.map_err(DaemonError::Dataplane)?;
    announced.map_err(|source| DaemonError::ControlSocket { path: socket.to_path_buf(), source })?;
    info!("stopped; everything created has been removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;

    #[test]
    fn notify_socket_is_a_path_or_an_abstract_name() {
        assert_eq!(
            notify_target(OsStr::new("/run/systemd/notify")),
            Some(NotifyTarget::Path(PathBuf::from("/run/systemd/notify")))
        );
        assert_eq!(notify_target(OsStr::new("@sd-notify/1")), Some(NotifyTarget::Abstract(b"sd-notify/1".to_vec())));
        for unsupported in ["", "@", "relative/path", "vsock:2:1234"] {
            assert_eq!(notify_target(OsStr::new(unsupported)), None, "{unsupported:?}");
        }
    }

    #[test]
    fn notifications_reach_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("vswitchd-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let by_path = UnixDatagram::bind(&path).unwrap();
        let name = format!("vswitchd-notify-test-{}", std::process::id());
        let by_name = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        for socket in [&by_path, &by_name] {
            socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        send_notification(&NotifyTarget::Path(path.clone()), "READY=1").unwrap();
        send_notification(&NotifyTarget::Abstract(name.into_bytes()), "STOPPING=1").unwrap();
        let mut buf = [0u8; 64];
        let n = by_path.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let n = by_name.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
