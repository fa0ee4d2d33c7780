//! The daemon's life: bind the control socket, apply the plumbing, run the dataplane until
//! SIGINT or SIGTERM, then remove exactly what was created.

use std::io;
use std::path::{Path, PathBuf};
use std::thread;

use nix::sys::signal::{SigSet, Signal};
use tracing::{error, info};
use vswitchd_dataplane::fdb::FdbConfig;
use vswitchd_dataplane::switch::{PortInfo, Switch};

use std::collections::BTreeMap;

use tracing::warn;
use vswitchd_dataplane::port::Port;
use vswitchd_dataplane::port::detached::DetachedPort;
use vswitchd_dataplane::port::packet::PacketPort;

use crate::ctl::ControlServer;
use crate::monitor::{self, Watch};
use crate::netlink::NetlinkSocket;
use crate::netns;
use crate::plumbing::{self, SetupError};
use crate::topology::{PortKind, Topology};

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
    /// The control socket could not be set up (nothing was created).
    #[error("control socket {path}: {source}")]
    ControlSocket {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
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

/// Runs `topology` until SIGINT or SIGTERM. Must be called before any other thread is started,
/// so every thread inherits the blocked stop signals and only the signal thread takes them.
pub fn run(topology: &Topology, socket: &Path) -> Result<(), DaemonError> {
    stop_signals().thread_block().map_err(|e| DaemonError::Dataplane(e.into()))?;
    let mut server = ControlServer::bind(socket)
        .map_err(|source| DaemonError::ControlSocket { path: socket.to_path_buf(), source })?;

    let steps = plumbing::plan(topology);
    let mut applied = plumbing::apply(&steps)?;

    let mut watches: BTreeMap<Option<String>, Vec<Watch>> = BTreeMap::new();
    let built = (|| -> io::Result<Switch> {
        let fdb = FdbConfig { aging: topology.bridge.fdb_aging, max_learned: topology.bridge.fdb_max_entries };
        let mut switch = Switch::new(&topology.bridge.name, fdb)?;
        for port in &topology.ports {
            // The port's I/O, and the (namespace, interface) to watch for link changes.
            type Attached = (Box<dyn Port>, Option<(Option<String>, String)>);
            let (io, watch): Attached = match &port.kind {
                PortKind::Tap { .. } | PortKind::Internal => {
                    let tap = applied
                        .taps
                        .remove(&port.name)
                        .ok_or_else(|| io::Error::other(format!("no device for port {}", port.name)))?;
                    (Box::new(tap), None)
                }
                PortKind::Veth { peer, .. } => {
                    let socket = PacketPort::open(peer)
                        .map_err(|e| io::Error::new(e.kind(), format!("attach to {peer}: {e}")))?;
                    (Box::new(socket), Some((None, peer.clone())))
                }
                PortKind::Netdev { device, netns } => {
                    let opened = match netns {
                        Some(ns) => netns::run_in(ns, || PacketPort::open(device)).and_then(|r| r),
                        None => PacketPort::open(device),
                    };
                    let io: Box<dyn Port> = match opened {
                        Ok(socket) => Box::new(socket),
                        Err(e) => {
                            warn!(port = %port.name, %device, error = %e, "interface not attached yet");
                            Box::new(DetachedPort)
                        }
                    };
                    (io, Some((netns.clone(), device.clone())))
                }
            };
            let info = PortInfo {
                name: port.name.clone(),
                kind: port.kind.type_name().to_string(),
                netns: port.kind.netns().map(str::to_string),
                mtu: port.mtu,
                vlan: port.vlan.clone(),
            };
            let attached = io.raw_fd().is_some();
            let id = switch.add_port(info, io)?;
            if let Some((ns, device)) = watch {
                let ifindex = if attached { current_ifindex(&ns, &device) } else { None };
                watches.entry(ns).or_default().push(Watch { port: id, device, ifindex });
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
    let served = spawned.and(monitored).and_then(|()| server.serve(handle));
    let result = match served {
        Ok(()) => {
            info!(bridge = %topology.bridge.name, ports = topology.ports.len(), socket = %server.path().display(), "forwarding");
            switch.run()
        }
        Err(e) => Err(e),
    };
    drop(switch); // closes the TAP fds: the devices go away
    let failures = applied.undo.run();
    drop(server);
    if !failures.is_empty() {
        error!(count = failures.len(), "some of what was created could not be removed");
    }
    result.map_err(DaemonError::Dataplane)?;
    info!("stopped; everything created has been removed");
    Ok(())
}
