//! The daemon's life: claim the bridge (refusing if another vswitchd runs it, removing what a
//! killed one left), check and bind the control socket out of sight, apply the plumbing, start
//! the dataplane, and only then put the socket at its path and tell systemd `READY=1`; run until
//! SIGINT or SIGTERM, tell systemd `STOPPING=1`, then remove exactly what was created.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};
use tracing::{debug, error, info, warn};
use vswitchd_dataplane::fdb::FdbConfig;
use vswitchd_dataplane::switch::{HandleError, Switch, SwitchHandle, panic_text};

use crate::ctl::{ControlServer, LiveChanges, LiveControl, Publisher, Refusal, Request};
use crate::plumbing::{self, SetupError};
use crate::running::Running;
use crate::state::{self, Claim, StateError, StateFile};
use crate::takeover::{self, Package};
use crate::topology::Topology;
use std::os::unix::net::UnixStream;

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
    /// Taking a running bridge over failed (the running vswitchd carries on).
    #[error("takeover: {0}")]
    Takeover(String),
    /// The dataplane failed (the plumbing has been removed).
    #[error("dataplane: {0}")]
    Dataplane(#[source] io::Error),
}

/// The signals the daemon takes: SIGINT and SIGTERM stop it, SIGHUP reloads.
fn signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
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

/// Removes what the host services of a killed vswitchd of `bridge` left (their records sit
/// beside the state file at `state_path`); what cannot be removed is logged.
fn remove_left_over_services(state_path: &Path, bridge: &str) {
    let dir = state_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let (removed, failed) = crate::services::remove_left_over(dir, bridge);
    for what in removed {
        info!(%what, "removed what a killed vswitchd's host services left");
    }
    for what in failed {
        warn!(%what, "cannot remove what a killed vswitchd's host services left");
    }
}

/// Waits until the dataplane runs (it has answered a job), then sets up every port of
/// `topology` on it, then puts the control socket at its path and tells systemd `READY=1`.
/// Returns `Ok(false)` if the dataplane stopped first. A port that cannot be set up, or a socket
/// that cannot be put in place, stops the switch (and is returned).
fn set_up_and_announce(
    switch: &SwitchHandle,
    running: &Shared,
    topology: &Topology,
    publisher: &Publisher,
) -> Result<bool, DaemonError> {
    if !dataplane_runs(switch) {
        return Ok(false);
    }
    {
        let mut guard = lock(running);
        let Some(running) = guard.as_mut() else { return Ok(false) };
        if let Err(errors) = running.apply(topology) {
            let _ = switch.stop();
            return Err(DaemonError::Setup(SetupError {
                step: "setting up the ports".into(),
                source: io::Error::other(errors.join("; ")),
            }));
        }
        running.from_file = topology.ports.iter().map(|p| p.name.clone()).collect();
    }
    if let Err(e) = publisher.publish() {
        error!(error = %e, "cannot put the control socket in place; stopping");
        let _ = switch.stop();
        return Err(DaemonError::ControlSocket { path: publisher.path().to_path_buf(), source: e });
    }
    notify("READY=1");
    info!(bridge = %topology.bridge.name, ports = topology.ports.len(), socket = %publisher.path().display(), "forwarding");
    Ok(true)
}

/// Waits until the dataplane runs (it has answered a job: every port added so far is in its
/// loop); `false` if it stopped first.
fn dataplane_runs(switch: &SwitchHandle) -> bool {
    loop {
        match switch.call(|_, _| (), Duration::from_secs(5)) {
            Ok(()) => return true,
            Err(HandleError::Timeout(_)) => continue,
            Err(HandleError::Stopped) => return false,
        }
    }
}

/// The running switch, shared by the control socket, the signal thread and shutdown (which
/// takes it out).
type Shared = Arc<Mutex<Option<Running>>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Option<Running>> {
    shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Re-reads the topology file and applies the difference (SIGHUP, `vswitchctl reload`),
/// between `RELOADING=1` and `READY=1`.
pub fn reload(shared: &Shared) -> Result<serde_json::Value, Refusal> {
    notify_reloading();
    let result = {
        let mut guard = lock(shared);
        match guard.as_mut() {
            Some(running) => crate::live::reload(running),
            None => Err(Refusal::failed("vswitchd is stopping")),
        }
    };
    notify("READY=1");
    match &result {
        Ok(_) => info!("reloaded"),
        Err(e) => warn!(error = %e.message, "reload refused or incomplete"),
    }
    result
}

/// `RELOADING=1` with the `CLOCK_MONOTONIC` time systemd asks for since version 253.
fn notify_reloading() {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0);
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={now}"));
}

/// The control plane's side of the control socket: live changes and handing the bridge over.
struct DaemonControl {
    shared: Shared,
    switch: SwitchHandle,
    handed_over: Arc<std::sync::atomic::AtomicBool>,
}

impl LiveControl for DaemonControl {
    fn change(&self, request: &Request) -> Result<serde_json::Value, Refusal> {
        match request {
            Request::Reload {} => reload(&self.shared),
            _ => match lock(&self.shared).as_mut() {
                Some(running) => crate::live::change(running, request),
                None => Err(Refusal::failed("vswitchd is stopping")),
            },
        }
    }

    /// Sends the package and the fds, waits for the new process's `go` (it then forwards on
    /// the same fds and owns the state file), and stops without removing anything. Live
    /// changes wait meanwhile (the running topology is locked).
    fn hand_over(&self, stream: &UnixStream) -> Result<(), String> {
        let mut guard = lock(&self.shared);
        let running = guard.as_mut().ok_or("vswitchd is stopping")?;
        info!("a new vswitchd asks for the bridge: handing it over");
        let (package, fds) = running.package()?;
        takeover::send(stream, &package, &fds).map_err(|e| format!("cannot send the bridge: {e}"))?;
        drop(fds);
        if !takeover::hear(stream, "go", TAKEOVER_TIMEOUT).map_err(|e| e.to_string())? {
            return Err("the new vswitchd gave up before taking over".into());
        }
        // Dropped without undoing: the devices, namespaces and state file are the new process's.
        self.handed_over.store(true, std::sync::atomic::Ordering::SeqCst);
        drop(guard.take());
        let _ = self.switch.stop();
        let _ = takeover::say(stream, "bye");
        info!("the new vswitchd forwards; stopping");
        Ok(())
    }
}

/// The set-up of a process taking over: runs the received bridge on the received fds, tells
/// the old process `go`, waits for it to stop and its socket to go, then puts the control
/// socket in place and tells systemd `READY=1`. If the bridge cannot run here, the state file
/// goes back to the old process, which carries on, and this one stops removing nothing.
fn adopt_and_announce(
    switch: &SwitchHandle,
    running: &Shared,
    received: Received,
    publisher: &Publisher,
) -> Result<bool, DaemonError> {
    if !dataplane_runs(switch) {
        return Ok(false);
    }
    let Received { stream, package, fds, topology, state_path } = received;
    let adopted = match lock(running).as_mut() {
        Some(r) => r.adopt(&topology, &package, fds),
        None => return Ok(false),
    };
    if let Err(errors) = adopted {
        // Nothing of this process's may be undone: it is all the old one's.
        drop(lock(running).take());
        if let Err(e) = state::give_back(&state_path, &topology.bridge.name, package.pid, package.created.clone()) {
            error!(error = %e, "cannot give the state file back to the running vswitchd");
        }
        let _ = switch.stop();
        return Err(DaemonError::Takeover(format!("cannot run the received bridge: {}", errors.join("; "))));
    }
    takeover::say(&stream, "go").map_err(|e| DaemonError::Takeover(format!("cannot tell the old vswitchd: {e}")))?;
    let stopped = takeover::hear(&stream, "bye", TAKEOVER_TIMEOUT).unwrap_or(false);
    // The old process left its host services running: this one's replace them now.
    if let Some(running) = lock(running).as_mut() {
        for failure in running.reconcile_services() {
            error!(error = %failure, "a host service did not start after the takeover");
        }
    }
    // Its socket goes when it exits: wait for that, then ours takes the path.
    let gone_by = std::time::Instant::now() + TAKEOVER_TIMEOUT;
    while publisher.path().exists() && std::time::Instant::now() < gone_by {
        if UnixStream::connect(publisher.path()).is_err() {
            break; // stale: publish replaces it
        }
        thread::sleep(Duration::from_millis(5));
    }
    if let Err(e) = publisher.publish() {
        error!(error = %e, "cannot put the control socket in place; stopping");
        let _ = switch.stop();
        return Err(DaemonError::ControlSocket { path: publisher.path().to_path_buf(), source: e });
    }
    notify(&format!("READY=1\nMAINPID={}", std::process::id()));
    info!(from = package.pid, old_stopped = stopped, ports = topology.ports.len(), socket = %publisher.path().display(), "took the bridge over; forwarding");
    Ok(true)
}

/// Test builds only: panics where `VSWITCHD_INJECT_PANIC` says (`dataplane`: the first
/// worker; `worker`: the second; `control`: the control plane), once the switch forwards, so
/// the end-to-end tests can check that a panic anywhere still removes what was created.
#[cfg(debug_assertions)]
fn inject_panic(switch: &SwitchHandle) {
    match std::env::var("VSWITCHD_INJECT_PANIC").as_deref() {
        Ok("dataplane") => {
            let _ = switch.call(|_, _| panic!("injected panic on the first worker"), Duration::from_secs(5));
        }
        Ok("worker") => {
            let _ = switch.call(
                |s, _| s.submit_to_worker(1, Box::new(|_, _| panic!("injected panic on the second worker"))),
                Duration::from_secs(5),
            );
        }
        Ok("control") => panic!("injected panic in the control plane"),
        _ => {}
    }
}

#[cfg(not(debug_assertions))]
fn inject_panic(_: &SwitchHandle) {}

/// Runs `topology` until SIGINT or SIGTERM (SIGHUP reloads it). Must be called before any
/// other thread is started, so every thread inherits the blocked signals and only the signal
/// thread takes them.
pub fn run(
    topology: &Topology,
    socket: &Path,
    busy_poll: vswitchd_dataplane::busy_poll::BusyPoll,
) -> Result<(), DaemonError> {
    run_as(topology, socket, busy_poll, Start::Fresh)
}

/// How the daemon comes by its bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Sets it up from the topology file.
    Fresh,
    /// Takes it over, running, from the vswitchd that answers on the control socket
    /// (`vswitchd --takeover`).
    Takeover,
}

/// What a process taking over received from the running one.
struct Received {
    stream: UnixStream,
    package: Package,
    fds: Vec<std::os::fd::OwnedFd>,
    topology: Topology,
    state_path: PathBuf,
}

/// Asks the vswitchd answering at `socket` for its bridge: its package and fds.
fn ask_for_bridge(file: &Topology, socket: &Path) -> Result<Received, DaemonError> {
    let failed = |what: String| DaemonError::Takeover(what);
    let stream = UnixStream::connect(socket)
        .map_err(|e| failed(format!("no vswitchd answers at {}: {e}: nothing to take over", socket.display())))?;
    takeover::say(&stream, r#"{"command":"takeover"}"#).map_err(|e| failed(e.to_string()))?;
    let (package, fds) = takeover::receive(&stream, TAKEOVER_TIMEOUT).map_err(|e| failed(e.to_string()))?;
    let topology = Topology::parse(&file.path, &package.topology)
        .map_err(|e| failed(format!("the running vswitchd's topology does not validate here: {e}")))?;
    if topology.bridge.name != file.bridge.name {
        return Err(failed(format!(
            "vswitchd pid {} runs bridge {}, not {} as {} says",
            package.pid,
            topology.bridge.name,
            file.bridge.name,
            file.path.display()
        )));
    }
    info!(pid = package.pid, ports = topology.ports.len(), fds = fds.len(), "received the running bridge");
    let state_path = state::path_for(socket, &topology.bridge.name);
    Ok(Received { stream, package, fds, topology, state_path })
}

/// How long a takeover waits for each side.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// As [`run`], starting as `start` says.
pub fn run_as(
    file_topology: &Topology,
    socket: &Path,
    busy_poll: vswitchd_dataplane::busy_poll::BusyPoll,
    start: Start,
) -> Result<(), DaemonError> {
    run_serving(file_topology, socket, busy_poll, start, None)
}

/// As [`run_as`], also serving metrics over HTTP where `metrics` says (`vswitchd --metrics`).
pub fn run_serving(
    file_topology: &Topology,
    socket: &Path,
    busy_poll: vswitchd_dataplane::busy_poll::BusyPoll,
    start: Start,
    metrics: Option<crate::metrics_http::Listen>,
) -> Result<(), DaemonError> {
    signals().thread_block().map_err(|e| DaemonError::Dataplane(e.into()))?;
    let (topology, mut server, undo, received) = match start {
        Start::Fresh => {
            let bridge = &file_topology.bridge.name;
            // Nothing is created before the bridge is known to be free and the socket path usable.
            let claim = state::claim(&state::path_for(socket, bridge), bridge)?;
            let server = ControlServer::bind_hidden(socket)
                .map_err(|source| DaemonError::ControlSocket { path: socket.to_path_buf(), source })?;
            let state = remove_left_over(claim)?;
            remove_left_over_services(&state::path_for(socket, bridge), bridge);
            (file_topology.clone(), server, plumbing::start(state), None)
        }
        Start::Takeover => {
            let received = ask_for_bridge(file_topology, socket)?;
            let server = ControlServer::bind_for_takeover(socket)
                .map_err(|source| DaemonError::ControlSocket { path: socket.to_path_buf(), source })?;
            // This process owns the state file from here on; given back if the takeover fails.
            let state = state::take_over(
                &received.state_path,
                &received.topology.bridge.name,
                received.package.created.clone(),
            )?;
            let undo = plumbing::adopted(state, &received.topology);
            (received.topology.clone(), server, undo, Some(received))
        }
    };
    let topology = &topology;

    let threads = received.as_ref().map_or_else(|| topology.worker_threads(), |r| r.package.threads);
    let built = (|| -> io::Result<Switch> {
        let fdb = FdbConfig { aging: topology.bridge.fdb_aging, max_learned: topology.bridge.fdb_max_entries };
        let mut switch = Switch::new(&topology.bridge.name, fdb)?;
        switch.state_mut().bridge.mdb_mut().set_config(topology.bridge.mcast);
        switch.set_busy_poll(busy_poll);
        switch.set_threads(threads)?;
        let stp = crate::running::stp_config(&topology.bridge);
        switch.state_mut().stp_configure(stp, vswitchd_dataplane::Instant::ZERO);
        Ok(switch)
    })();
    let mut switch = match built {
        Ok(switch) => switch,
        Err(e) => {
            undo.run();
            return Err(DaemonError::Dataplane(e));
        }
    };
    let handle = switch.handle();
    if let Some(listen) = metrics {
        if let Err(e) = crate::metrics_http::serve(listen, handle.clone()) {
            warn!(error = %e, "cannot start the metrics thread; metrics are not served");
        }
    }
    let shared: Shared = Arc::new(Mutex::new(Some(Running::new(topology, undo, handle.clone(), threads))));

    let signal_handle = handle.clone();
    let signal_shared = Arc::clone(&shared);
    let spawned = thread::Builder::new().name("signals".into()).spawn(move || {
        loop {
            match signals().wait() {
                Ok(Signal::SIGHUP) => {
                    info!("SIGHUP: reloading the topology file");
                    let _ = reload(&signal_shared);
                }
                Ok(signal) => {
                    info!(%signal, "stopping");
                    break;
                }
                Err(_) => break,
            }
        }
        let _ = signal_handle.stop();
    });
    let handed_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let changes: LiveChanges = Arc::new(DaemonControl {
        shared: Arc::clone(&shared),
        switch: handle.clone(),
        handed_over: Arc::clone(&handed_over),
    });
    let served = spawned.and_then(|_| server.serve_with(handle.clone(), Some(changes)));
    let publisher = server.publisher();
    let (setup_shared, setup_topology) = (Arc::clone(&shared), topology.clone());
    let announcer = served.and_then(|()| {
        thread::Builder::new().name("setup".into()).spawn(move || {
            // A panic here (or anywhere in the control plane's setup) stops the switch, and
            // the undo log still runs below.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let announced = match received {
                    None => set_up_and_announce(&handle, &setup_shared, &setup_topology, &publisher),
                    Some(received) => adopt_and_announce(&handle, &setup_shared, received, &publisher),
                };
                if matches!(announced, Ok(true)) {
                    inject_panic(&handle);
                }
                announced
            }));
            outcome.unwrap_or_else(|cause| {
                let _ = handle.stop();
                Err(DaemonError::Dataplane(io::Error::other(format!(
                    "the control plane panicked: {}",
                    panic_text(&*cause)
                ))))
            })
        })
    });
    let result = match &announcer {
        // A panic on the dataplane thread is a failure like any other: everything created is
        // still removed.
        Ok(_) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| switch.run()))
            .unwrap_or_else(|cause| Err(io::Error::other(format!("the dataplane panicked: {}", panic_text(&*cause))))),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    };
    // With the dataplane gone, the set-up thread has finished or given up; only then
    // STOPPING=1, so it can never be followed by a late READY=1.
    let announced = match announcer {
        Ok(thread) => thread
            .join()
            .unwrap_or_else(|_| Err(DaemonError::Dataplane(io::Error::other("the set-up thread panicked")))),
        Err(_) => Ok(false),
    };
    let running = lock(&shared).take();
    if handed_over.load(std::sync::atomic::Ordering::SeqCst) {
        drop(switch);
        drop(server);
        info!("handed the bridge over; exiting without removing anything");
        return result.map_err(DaemonError::Dataplane);
    }
    if let Some(running) = &running {
        plumbing::remove_taps_together(&running.topology); // all at once, not one close at a time
    }
    drop(switch); // closes the TAP fds: any device still there goes away
    notify("STOPPING=1");
    let failures = running.map(|r| r.into_undo().run()).unwrap_or_default();
    drop(server);
    if !failures.is_empty() {
        error!(count = failures.len(), "some of what was created could not be removed");
    }
    announced?;
    result.map_err(DaemonError::Dataplane)?;
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
