//! Connections of `socket` ports (QEMU's `-netdev stream` and `-netdev dgram` backends): the
//! socket a port binds, and for stream ports a thread that listens (or connects, with backoff)
//! and swaps each connection into the running port as its I/O.
//!
//! A stream port starts with no connection (link `down`). When one comes, the thread hands the
//! dataplane a [`StreamPort`] over it and sets the link `up`; the port tells the thread when
//! the connection ends (the peer closed it, or sent a malformed length, which the thread counts
//! on the port under its drop reason), and the thread swaps a [`DetachedPort`] back in, sets the
//! link `down` and waits for the next connection (server) or connects again (client). Only one
//! connection is served at a time; another QEMU connecting meanwhile waits in the backlog.
//!
//! vswitchd only removes a socket file it bound itself (the same inode), when the port goes or
//! at shutdown; a stale socket at the path is replaced, a live one or any other file refused.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, info, warn};
use vswitchd_dataplane::PortId;
use vswitchd_dataplane::port::Port;
use vswitchd_dataplane::port::detached::DetachedPort;
use vswitchd_dataplane::port::socket::{ConnectionClosed, DgramPort, StreamPort, max_frame_for_mtu};
use vswitchd_dataplane::switch::{LinkState, SwitchHandle};

use crate::topology::{SocketFraming, SocketSpec};

/// How long a call into the dataplane may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The first wait before connecting again to a QEMU that is not listening; it doubles up to
/// [`RETRY_MAX`] while connecting keeps failing.
pub const RETRY_MIN: Duration = Duration::from_millis(100);

/// The longest wait between two attempts to connect.
pub const RETRY_MAX: Duration = Duration::from_secs(2);

const LISTENER: Token = Token(0);
const STOP: Token = Token(1);

/// A socket file vswitchd bound: removed on drop if the path still holds that very socket.
#[derive(Debug)]
pub struct BoundFile {
    path: PathBuf,
    identity: (u64, u64),
}

impl BoundFile {
    /// Records the socket just bound at `path`.
    fn record(path: &Path) -> io::Result<BoundFile> {
        let meta = fs::symlink_metadata(path)?;
        Ok(BoundFile { path: path.to_path_buf(), identity: (meta.dev(), meta.ino()) })
    }
}

impl Drop for BoundFile {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.identity);
        if ours {
            match fs::remove_file(&self.path) {
                Ok(()) => debug!(path = %self.path.display(), "removed the port's socket"),
                Err(e) => warn!(path = %self.path.display(), error = %e, "cannot remove the port's socket"),
            }
        }
    }
}

/// Makes room to bind at `path`: nothing there, or a socket nobody answers on (removed). A
/// socket something answers on is refused, unless `replace_live` (taking a bridge over from
/// another vswitchd, which is about to stop); any other file always is.
fn clear_path(path: &Path, framing: SocketFraming, replace_live: bool) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("cannot inspect {}: {e}", path.display()))),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket: leaving it alone", path.display()),
        ));
    }
    let answered = match framing {
        SocketFraming::Stream => UnixStream::connect(path).map(drop),
        SocketFraming::Dgram => UnixDatagram::unbound().and_then(|s| s.connect(path)),
    };
    match answered {
        Ok(()) if !replace_live => {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("{} is in use", path.display())));
        }
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("{} is a socket that cannot be checked ({e}): leaving it alone", path.display()),
            ));
        }
    }
    debug!(path = %path.display(), "replacing a stale socket");
    fs::remove_file(path).map_err(|e| io::Error::new(e.kind(), format!("cannot remove {}: {e}", path.display())))
}

/// A socket port opened, before it has an id: what its connections come from.
#[derive(Debug)]
pub enum Pending {
    /// A datagram socket: the port's I/O already; nothing to run.
    Dgram(BoundFile),
    /// A stream socket vswitchd listens on.
    Listen(UnixListener, BoundFile),
    /// A stream socket vswitchd connects to.
    Connect(PathBuf),
}

/// Opens the socket of port `spec`: the port's first I/O (a bound datagram socket, or no
/// connection yet) and what to start once the port has an id. With `replace_live`, a socket
/// another process answers on at the path is replaced (a bridge taken over).
pub fn open(spec: &SocketSpec, replace_live: bool) -> io::Result<(Box<dyn Port>, Pending)> {
    let bind_error = |e: io::Error| io::Error::new(e.kind(), format!("cannot bind {}: {e}", spec.path.display()));
    match (spec.framing, spec.server) {
        (SocketFraming::Dgram, _) => {
            clear_path(&spec.path, spec.framing, replace_live)?;
            let socket = UnixDatagram::bind(&spec.path).map_err(bind_error)?;
            let file = BoundFile::record(&spec.path)?;
            Ok((Box::new(DgramPort::new(socket)?), Pending::Dgram(file)))
        }
        (SocketFraming::Stream, true) => {
            clear_path(&spec.path, spec.framing, replace_live)?;
            let listener = UnixListener::bind(&spec.path).map_err(bind_error)?;
            let file = BoundFile::record(&spec.path)?;
            listener.set_nonblocking(true)?;
            Ok((Box::new(DetachedPort), Pending::Listen(listener, file)))
        }
        (SocketFraming::Stream, false) => Ok((Box::new(DetachedPort), Pending::Connect(spec.path.clone()))),
    }
}

/// A running socket port's connection keeper and socket file; dropping it stops the thread
/// (waiting for it) and removes the file vswitchd bound.
#[derive(Debug)]
pub struct Attachment {
    stop: Option<Sender<()>>,
    waker: Option<Arc<Waker>>,
    thread: Option<JoinHandle<()>>,
    file: Option<BoundFile>,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(waker) = &self.waker {
            let _ = waker.wake();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        drop(self.file.take()); // the socket goes once nothing accepts on it any more
    }
}

/// Starts keeping port `id` (named `name`) connected, as `pending` says.
pub fn start(pending: Pending, id: PortId, name: &str, switch: SwitchHandle) -> io::Result<Attachment> {
    let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
    let keeper = Keeper { id, name: name.to_string(), switch, stop };
    let spawn = |label: &str, body: Box<dyn FnOnce() + Send>| {
        thread::Builder::new().name(format!("{label}-{name}")).spawn(body)
    };
    Ok(match pending {
        Pending::Dgram(file) => Attachment { stop: None, waker: None, thread: None, file: Some(file) },
        Pending::Listen(listener, file) => {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), STOP)?);
            poll.registry().register(&mut SourceFd(&listener.as_raw_fd()), LISTENER, Interest::READABLE)?;
            let thread = spawn("listen", Box::new(move || keeper.listen(&listener, poll)))?;
            Attachment { stop: Some(stop_tx), waker: Some(waker), thread: Some(thread), file: Some(file) }
        }
        Pending::Connect(path) => {
            let thread = spawn("connect", Box::new(move || keeper.connect(&path)))?;
            Attachment { stop: Some(stop_tx), waker: None, thread: Some(thread), file: None }
        }
    })
}

/// The thread that keeps one stream port connected.
struct Keeper {
    id: PortId,
    name: String,
    switch: SwitchHandle,
    /// Disconnected when the port goes.
    stop: Receiver<()>,
}

impl Keeper {
    fn stopped(&self) -> bool {
        matches!(self.stop.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Sets the port's link (no connection: `down`).
    fn set_link(&self, link: LinkState) -> bool {
        let id = self.id;
        self.switch.call(move |s, _| s.set_link(id, link), CALL_TIMEOUT).is_ok()
    }

    /// Accepts one connection at a time on `listener` until the port goes.
    fn listen(self, listener: &UnixListener, mut poll: Poll) {
        if !self.set_link(LinkState::Down) {
            return;
        }
        let mut events = Events::with_capacity(4);
        loop {
            if self.stopped() {
                return;
            }
            match listener.accept() {
                Ok((connection, _)) => {
                    if !self.serve(connection) {
                        return;
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of fds, most likely: try again a little later.
                    warn!(port = %self.name, error = %e, "cannot accept a connection");
                    if !matches!(self.stop.recv_timeout(RETRY_MAX), Err(RecvTimeoutError::Timeout)) {
                        return;
                    }
                    continue;
                }
            }
            if let Err(e) = poll.poll(&mut events, None) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!(port = %self.name, error = %e, "cannot wait for connections; the port stays down");
                    return;
                }
            }
        }
    }

    /// Connects to `path` until the port goes: again whenever the connection ends, waiting
    /// longer after each failed attempt (up to [`RETRY_MAX`]).
    fn connect(self, path: &Path) {
        if !self.set_link(LinkState::Down) {
            return;
        }
        let mut wait = RETRY_MIN;
        let mut failures = 0u64;
        loop {
            if self.stopped() {
                return;
            }
            match UnixStream::connect(path) {
                Ok(connection) => {
                    (wait, failures) = (RETRY_MIN, 0);
                    if !self.serve(connection) {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    if failures == 0 {
                        info!(port = %self.name, path = %path.display(), error = %e, "cannot connect yet; trying again");
                    }
                    failures += 1;
                }
            }
            if !matches!(self.stop.recv_timeout(wait), Err(RecvTimeoutError::Timeout)) {
                return;
            }
            wait = (wait * 2).min(RETRY_MAX);
        }
    }

    /// Makes `connection` the port's I/O until it ends; `false` if the port went meanwhile.
    fn serve(&self, connection: UnixStream) -> bool {
        let id = self.id;
        let Ok(Some(mtu)) = self.switch.call(move |s, _| s.live_port(id).map(|p| p.info.mtu), CALL_TIMEOUT) else {
            return false;
        };
        let (on_close, closed) = crossbeam_channel::bounded::<ConnectionClosed>(1);
        let port = match StreamPort::new(connection, max_frame_for_mtu(mtu), on_close) {
            Ok(port) => port,
            Err(e) => {
                warn!(port = %self.name, error = %e, "cannot use the connection");
                return true;
            }
        };
        let attached = self.switch.call(
            move |s, _| {
                s.replace_port_io(id, None, Box::new(port));
                s.set_link(id, LinkState::Up);
            },
            CALL_TIMEOUT,
        );
        if attached.is_err() {
            return false;
        }
        info!(port = %self.name, "connected");
        let why = crossbeam_channel::select! {
            recv(closed) -> why => why.ok().flatten(),
            recv(self.stop) -> _ => return false,
        };
        match why {
            Some(reason) => warn!(port = %self.name, reason = reason.name(), "closed the connection"),
            None => info!(port = %self.name, "the connection ended"),
        }
        let detached = self.switch.call(
            move |s, _| {
                s.replace_port_io(id, None, Box::new(DetachedPort));
                s.set_link(id, LinkState::Down);
                if let (Some(reason), Some(port)) = (why, s.ports.get_mut(id.index())) {
                    port.counters.rx_frames += 1;
                    port.counters.drops.add(reason);
                }
            },
            CALL_TIMEOUT,
        );
        detached.is_ok() && !self.stopped()
    }
}
