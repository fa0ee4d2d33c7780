//! The daemon's life: bind the control socket, apply the plumbing, run the dataplane until
//! SIGINT or SIGTERM, then remove exactly what was created.

use std::io;
use std::path::{Path, PathBuf};
use std::thread;

use nix::sys::signal::{SigSet, Signal};
use tracing::{error, info};
use vswitchd_dataplane::fdb::FdbConfig;
use vswitchd_dataplane::switch::{PortInfo, Switch};

use crate::ctl::ControlServer;
use crate::plumbing::{self, SetupError};
use crate::topology::Topology;

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

    let built = (|| -> io::Result<Switch> {
        let fdb = FdbConfig { aging: topology.bridge.fdb_aging, max_learned: topology.bridge.fdb_max_entries };
        let mut switch = Switch::new(&topology.bridge.name, fdb)?;
        for port in &topology.ports {
            let tap = applied
                .taps
                .remove(&port.name)
                .ok_or_else(|| io::Error::other(format!("no device for port {}", port.name)))?;
            let info = PortInfo {
                name: port.name.clone(),
                kind: port.kind.type_name().to_string(),
                netns: port.kind.netns().map(str::to_string),
                mtu: port.mtu,
                vlan: port.vlan.clone(),
            };
            switch.add_port(info, Box::new(tap))?;
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
    let served = spawned.and_then(|_| server.serve(handle));
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
