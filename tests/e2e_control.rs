//! End to end: the control socket of the real vswitchd binary under abuse (many clients at
//! once, clients that never read, an endless request line) still answers a normal client
//! quickly, and vswitchd never deletes a file at its socket path that is not its socket.
//! Each test runs vswitchd in a namespace of its own and removes everything it made.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const SHOW: &[u8] = b"{\"command\":\"show\"}\n";

/// vswitchd with one TAP port, in a namespace of its own. Its log is drained as it goes (these
/// tests make it log a lot, and a full pipe would stall it); killed on drop.
struct Vswitchd {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
    log: Arc<Mutex<String>>,
    _namespaces: NamespaceGuard,
}

/// A directory removed on drop.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh directory and a topology of one TAP port in namespace `host`.
fn topology(tag: &str, host: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("vswitchd-ctl-e2e-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("topology.toml");
    let text = format!(
        "[bridge]\nname = \"c{tag}\"\n\n[[netns]]\nname = \"{host}\"\n\n\
         [[port]]\nname = \"c{tag}p1\"\ntype = \"tap\"\nnetns = \"{host}\"\naddress = \"192.168.77.1/24\"\n"
    );
    std::fs::write(&config, text).unwrap();
    (dir, config)
}

impl Vswitchd {
    fn start() -> Vswitchd {
        require_privileges();
        let tag = unique_tag();
        let (switch_ns, host) = (format!("vc{tag}sw"), format!("vc{tag}h1"));
        let mut namespaces = NamespaceGuard::default();
        namespaces.create(&switch_ns);
        namespaces.adopt(&host);
        let (dir, config) = topology(&tag, &host);
        let socket = dir.join("ctl.sock");
        let args = ["--config", config.to_str().unwrap(), "--socket", socket.to_str().unwrap(), "--log-level", "debug"];
        let mut child = spawn_in(&switch_ns, VSWITCHD, &args).expect("spawn vswitchd");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                let mut log = sink.lock().unwrap();
                if log.len() < 1 << 20 {
                    log.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let mut daemon = Vswitchd { child, socket, dir, log, _namespaces: namespaces };
        wait_for("vswitchd's control socket", Duration::from_secs(20), || {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("vswitchd exited early with {status}: {}", daemon.log.lock().unwrap());
            }
            daemon.ctl_show().ok()
        });
        daemon
    }

    /// Runs `vswitchctl --json show` as a user would; returns how long it took.
    fn ctl_show(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let out = Command::new(VSWITCHCTL)
            .arg("--socket")
            .arg(&self.socket)
            .args(["--json", "show"])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let show: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        assert_eq!(show["ports"].as_array().map(Vec::len), Some(1), "{show}");
        Ok(started.elapsed())
    }

    /// Runs `vswitchctl show`, which must answer within a second.
    fn show_within_a_second(&self, when: &str) -> Duration {
        let took = self.ctl_show().unwrap_or_else(|e| panic!("vswitchctl show {when}: {e}"));
        assert!(took < Duration::from_secs(1), "vswitchctl show {when} took {took:?}");
        took
    }

    fn assert_running(&mut self) {
        assert!(self.child.try_wait().unwrap().is_none(), "vswitchd died: {}", self.log.lock().unwrap());
    }
}

impl Drop for Vswitchd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The next reply line on `stream`, as JSON.
fn reply(stream: &UnixStream) -> serde_json::Value {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("a reply line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

#[test]
fn two_hundred_clients_at_once_are_answered_or_refused_while_vswitchctl_answers_within_a_second() {
    let mut daemon = Vswitchd::start();
    let meta = std::fs::symlink_metadata(&daemon.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "the control socket is not the owner's alone");

    let start = Arc::new(Barrier::new(201));
    let clients: Vec<_> = (0..200)
        .map(|_| {
            let (start, socket) = (Arc::clone(&start), daemon.socket.clone());
            thread::spawn(move || {
                start.wait();
                let connected = Instant::now();
                let stream = UnixStream::connect(&socket).expect("connect");
                // Hold the connection a while before asking, as a slow client would.
                thread::sleep(Duration::from_millis(300));
                let _ = (&stream).write_all(SHOW); // a refused client may be closed already
                (reply(&stream), connected.elapsed())
            })
        })
        .collect();
    start.wait();
    thread::sleep(Duration::from_millis(50)); // while the first clients hold every slot
    let slowest_ctl = (0..5).map(|i| daemon.show_within_a_second(&format!("#{i} under 200 clients"))).max().unwrap();
    let (mut answered, mut refused, mut slowest_client) = (0, 0, Duration::ZERO);
    for client in clients {
        let (reply, took) = client.join().expect("client");
        slowest_client = slowest_client.max(took);
        match (&reply["ok"], reply["error"].as_str()) {
            (serde_json::Value::Bool(true), _) => answered += 1,
            (_, Some(error)) if error.starts_with("busy:") => refused += 1,
            _ => panic!("neither an answer nor a clear refusal: {reply}"),
        }
    }
    println!(
        "200 clients at once: {answered} answered, {refused} told busy, the slowest in {slowest_client:?}; \
         vswitchctl show answered within {slowest_ctl:?} meanwhile"
    );
    assert!(answered > 0 && refused > 0, "{answered} answered, {refused} refused");
    daemon.assert_running();
}

#[test]
fn ten_clients_that_never_read_are_dropped_while_others_are_served() {
    let mut daemon = Vswitchd::start();
    let deaf: Vec<UnixStream> = (0..10)
        .map(|_| {
            let stream = UnixStream::connect(&daemon.socket).unwrap();
            stream.set_nonblocking(true).unwrap();
            stream
        })
        .collect();
    let requests = SHOW.repeat(200);
    let started = Instant::now();
    let mut dropped_after: Vec<Option<Duration>> = vec![None; deaf.len()];
    let (mut served, mut slowest_ctl) = (0, Duration::ZERO);
    // Each deaf client sends requests until both directions are full and never reads a reply:
    // the daemon's reply write stalls, and at its deadline the daemon drops the client, which
    // then cannot write any more.
    while dropped_after.iter().any(Option::is_none) {
        assert!(started.elapsed() < Duration::from_secs(30), "clients still connected: {dropped_after:?}");
        for (stream, dropped) in deaf.iter().zip(&mut dropped_after).filter(|(_, d)| d.is_none()) {
            match (&*stream).write(&requests) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *dropped = Some(started.elapsed()),
            }
        }
        slowest_ctl = slowest_ctl.max(daemon.show_within_a_second("while clients do not read"));
        served += 1;
        thread::sleep(Duration::from_millis(100));
    }
    let last = dropped_after.iter().flatten().max().unwrap();
    println!(
        "10 clients that never read were dropped {:?} to {last:?} after they started; meanwhile {served} \
         vswitchctl show answered, the slowest in {slowest_ctl:?}",
        dropped_after.iter().flatten().min().unwrap()
    );
    assert!(*last < Duration::from_secs(15), "dropped only after {last:?}");
    daemon.show_within_a_second("after the deaf clients");
    daemon.assert_running();
}

#[test]
fn a_megabyte_line_without_a_newline_gets_an_error_and_the_daemon_stays_up() {
    let mut daemon = Vswitchd::start();
    let client = UnixStream::connect(&daemon.socket).unwrap();
    let started = Instant::now();
    let writer = {
        let client = client.try_clone().unwrap();
        thread::spawn(move || (&client).write_all(&vec![b'{'; 1 << 20]).is_err())
    };
    let reply = reply(&client);
    let took = started.elapsed();
    assert_eq!(reply["ok"], false, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("longer than 65536 bytes"), "{reply}");
    assert!(writer.join().unwrap(), "the daemon took the whole megabyte");
    let after = daemon.show_within_a_second("after the long line");
    println!("a 1 MiB line was refused in {took:?}; vswitchctl show then answered in {after:?}");
    daemon.assert_running();
}

#[test]
fn a_regular_file_at_the_socket_path_stops_vswitchd_and_is_left_alone() {
    require_privileges();
    let tag = unique_tag();
    let (switch_ns, host) = (format!("vc{tag}sw"), format!("vc{tag}h1"));
    let mut namespaces = NamespaceGuard::default();
    namespaces.create(&switch_ns);
    namespaces.adopt(&host);
    let (dir, config) = topology(&tag, &host);
    let _dir = RemoveOnDrop(dir.clone());
    let socket = dir.join("ctl.sock");
    std::fs::write(&socket, "not a socket\n").unwrap();
    let args = ["--config", config.to_str().unwrap(), "--socket", socket.to_str().unwrap()];
    let mut child = spawn_in(&switch_ns, VSWITCHD, &args).expect("spawn vswitchd");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vswitchd kept running with a regular file at its socket path");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let content = std::fs::read_to_string(&socket);
    let created_host = netns_exists(&host);
    println!("vswitchd with a regular file at its socket path: {status}, {:?}", stderr.trim());
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&socket.display().to_string()) && stderr.contains("not a socket"), "{stderr}");
    assert_eq!(content.expect("the file is still there"), "not a socket\n", "the file was changed");
    assert!(!created_host, "vswitchd created namespace {host} before refusing");
}
