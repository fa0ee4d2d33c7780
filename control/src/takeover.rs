//! Handing a running bridge to a new vswitchd process (`vswitchd --takeover`): the old one
//! sends, over its control socket, a [`Package`] (the running topology, what it created, its
//! FDB, and how each port's fds are laid out) followed by the fds themselves (`SCM_RIGHTS`),
//! so the TAP devices the hosts use never go away and the packet and tunnel sockets keep their
//! queued frames. Both processes forward on the same fds until the new one says `go`; then the
//! old one stops and exits, removing nothing.
//!
//! The wire: the old process writes the package as one JSON line, then the fds in messages of
//! at most [`FDS_PER_MESSAGE`] with one byte each. The new one answers `go` once it forwards;
//! the old one answers `bye` and closes.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vswitchd_dataplane::sys::{FDS_PER_MESSAGE, recv_with_fds, send_with_fds};

use crate::state::Created;

/// The longest package accepted (a topology of thousands of ports and a full FDB fit).
pub const MAX_PACKAGE: usize = 256 << 20;

/// What an fd is, so the new process can wrap it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FdKind {
    /// A TAP queue.
    Tap,
    /// A packet socket bound to an interface.
    Packet {
        /// The interface's index.
        ifindex: u32,
    },
    /// A VXLAN port's receiving UDP socket.
    Tunnel,
}

/// One fd of a port: which worker polls it and which endpoint it is (queue or bond member).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedFd {
    /// The port.
    pub port: String,
    /// The worker (0: the first; a TAP's queue `n` is worker `n`'s).
    pub worker: usize,
    /// The endpoint on that worker: 0, or the bond member's index.
    pub ordinal: usize,
    /// What it is.
    #[serde(flatten)]
    pub kind: FdKind,
}

/// An FDB entry, by port name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandedEntry {
    /// The MAC address.
    pub mac: String,
    /// The VLAN.
    pub vlan: u16,
    /// The port.
    pub port: String,
    /// Added by the operator (else learned).
    #[serde(rename = "static")]
    pub is_static: bool,
}

/// Everything but the fds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// The old process.
    pub pid: u32,
    /// Worker threads (the new process runs as many: a TAP has one queue each).
    pub threads: usize,
    /// The running topology, as a topology file.
    pub topology: String,
    /// The ports the topology file described at the last (re)load.
    pub from_file: Vec<String>,
    /// What the old process created (its state file's list), now the new one's.
    pub created: Vec<Created>,
    /// The fds that follow, in order.
    pub fds: Vec<HandedFd>,
    /// The FDB.
    pub fdb: Vec<HandedEntry>,
}

/// Sends `package` and then `fds` (as many as `package.fds` describes, in that order).
pub fn send(stream: &UnixStream, package: &Package, fds: &[OwnedFd]) -> io::Result<()> {
    if fds.len() != package.fds.len() {
        return Err(io::Error::other(format!("{} fds for {} described", fds.len(), package.fds.len())));
    }
    let mut line = serde_json::to_vec(package).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut sent = 0;
    while sent < line.len() {
        sent += send_with_fds(stream.as_fd(), &line[sent..], &[])?;
    }
    for chunk in fds.chunks(FDS_PER_MESSAGE) {
        let borrowed: Vec<_> = chunk.iter().map(AsFd::as_fd).collect();
        send_with_fds(stream.as_fd(), b"F", &borrowed)?;
    }
    Ok(())
}

/// Receives a package and its fds, within `timeout`.
pub fn receive(stream: &UnixStream, timeout: Duration) -> io::Result<(Package, Vec<OwnedFd>)> {
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut package: Option<Package> = None;
    let mut markers = 0;
    loop {
        if let Some(p) = &package {
            // Each fd message carries one marker byte: all of them counted means all fds came.
            if markers >= p.fds.len().div_ceil(FDS_PER_MESSAGE) && fds.len() >= p.fds.len() {
                break;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the running vswitchd did not hand everything over"));
        }
        stream.set_read_timeout(Some(left))?;
        let (n, received) = recv_with_fds(stream.as_fd(), &mut buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the running vswitchd closed the connection"));
        }
        fds.extend(received);
        match &package {
            None => {
                bytes.extend_from_slice(&buf[..n]);
                if bytes.len() > MAX_PACKAGE {
                    return Err(io::Error::other("the package is too large"));
                }
                if let Some(end) = bytes.iter().position(|&b| b == b'\n') {
                    let text = &bytes[..end];
                    // A refusal comes as an ordinary control reply.
                    if let Ok(reply) = serde_json::from_slice::<crate::ctl::Response>(text) {
                        if !reply.ok {
                            return Err(io::Error::other(reply.error.unwrap_or_else(|| "refused".into())));
                        }
                    }
                    let p: Package =
                        serde_json::from_slice(text).map_err(|e| io::Error::other(format!("bad package: {e}")))?;
                    markers += bytes[end + 1..].len();
                    package = Some(p);
                }
            }
            Some(_) => markers += n,
        }
    }
    let package = package.ok_or_else(|| io::Error::other("no package"))?;
    if fds.len() != package.fds.len() {
        return Err(io::Error::other(format!("{} fds arrived for {} described", fds.len(), package.fds.len())));
    }
    Ok((package, fds))
}

/// Writes one word and a newline (`go`, `bye`).
pub fn say(stream: &UnixStream, word: &str) -> io::Result<()> {
    use std::io::Write;
    let mut s = stream;
    s.write_all(format!("{word}\n").as_bytes())
}

/// Waits up to `timeout` for the line `word`; `Ok(false)` if the peer closed or said something
/// else.
pub fn hear(stream: &UnixStream, word: &str, timeout: Duration) -> io::Result<bool> {
    use std::io::Read;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let mut s = stream;
    loop {
        match s.read(&mut byte)? {
            0 => return Ok(false),
            _ if byte[0] == b'\n' => return Ok(line == word.as_bytes()),
            _ if line.len() > 64 => return Ok(false),
            _ => line.push(byte[0]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_and_its_fds_cross_a_socket_in_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let count = FDS_PER_MESSAGE + 3; // two fd messages
        let mut pipes = Vec::new();
        let mut fds = Vec::new();
        let mut described = Vec::new();
        for i in 0..count {
            let (reader, writer) = std::io::pipe().unwrap();
            pipes.push(reader);
            fds.push(OwnedFd::from(writer));
            described.push(HandedFd { port: format!("p{i}"), worker: 0, ordinal: 0, kind: FdKind::Tunnel });
        }
        let package = Package {
            pid: 7,
            threads: 1,
            topology: "[bridge]\nname = \"b\"\n".into(),
            from_file: vec![],
            created: vec![Created::Namespace { name: "red".into() }],
            fds: described,
            fdb: vec![HandedEntry { mac: "02:00:00:00:00:01".into(), vlan: 0, port: "p0".into(), is_static: true }],
        };
        let sender = std::thread::spawn(move || send(&a, &package, &fds).map(|()| (a, package)));
        let (got, received) = receive(&b, Duration::from_secs(5)).unwrap();
        let (a, package) = sender.join().unwrap().unwrap();
        assert_eq!(got, package);
        assert_eq!(received.len(), count);
        // The fds are the same pipes, in order.
        for (i, fd) in received.into_iter().enumerate().step_by(97) {
            use std::io::{Read, Write};
            let mut w = std::fs::File::from(fd);
            w.write_all(&[i as u8]).unwrap();
            let mut byte = [0u8; 1];
            pipes[i].read_exact(&mut byte).unwrap();
            assert_eq!(byte[0], i as u8);
        }
        say(&a, "go").unwrap();
        assert!(hear(&b, "go", Duration::from_secs(1)).unwrap());
        drop(a);
        assert!(!hear(&b, "bye", Duration::from_secs(1)).unwrap(), "a closed stream is no answer");
    }
}
