//! The daemon's lifecycle, end to end with the real binary: a restart after SIGKILL removes
//! what the killed instance created and forwards, and a clean stop then leaves nothing; a second
//! instance of a running bridge exits 1 naming it and creates nothing; the control socket
//! appears only once every port forwards; systemd hears `READY=1` then and `STOPPING=1` at
//! SIGTERM.

mod support;

use std::io::Read;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use vswitchd_control::netns;

const SECOND: Duration = Duration::from_secs(1);

/// The state file of bridge `bridge` whose control socket is `socket`: beside it.
fn state_file(socket: &Path, bridge: &str) -> PathBuf {
    socket.parent().unwrap().join(format!("{bridge}.state"))
}

/// The state file's contents.
fn state_of(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text}", path.display()))
}

/// What a state file lists, as `kind name` strings.
fn listed(state: &Value) -> Vec<String> {
    state["created"]
        .as_array()
        .expect("created")
        .iter()
        .map(|c| {
            let name = c.get("name").or_else(|| c.get("switch_end")).and_then(Value::as_str).unwrap_or_default();
            format!("{} {name}", c["kind"].as_str().unwrap_or_default())
        })
        .collect()
}

/// Everything named with `tag` that is left, but the namespaces in `kept`.
fn left_but(tag: &str, kept: &[&str]) -> Vec<String> {
    leftovers(tag).into_iter().filter(|l| !kept.iter().any(|k| *l == format!("namespace {k}"))).collect()
}

/// Stops vswitchd with SIGTERM, expects exit 0, and checks nothing named with `tag` is left but
/// the test's own namespaces `kept`: no device, no state file, no control socket.
fn stop_cleanly(daemon: &mut Daemon, tag: &str, bridge: &str, kept: &[&str]) -> String {
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "exit {status}: {stderr}");
    let left = left_but(tag, kept);
    assert!(left.is_empty(), "left behind after a clean stop: {left:?}");
    assert!(!daemon.socket.exists(), "control socket left behind");
    let state = state_file(&daemon.socket, bridge);
    assert!(!state.exists(), "state file left behind: {:?}", std::fs::read_to_string(&state));
    stderr
}

/// A vswitchd started by hand (with an environment of the test's choosing), its stderr read
/// as it comes; killed on drop.
struct Spawned {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Spawned {
    /// Starts vswitchd in `netns_name` on `config` with control socket `socket`, with the
    /// environment variables `env` added.
    fn start(netns_name: &str, config: &Path, socket: &Path, env: &[(&str, &str)]) -> Spawned {
        let mut command = Command::new(VSWITCHD);
        command
            .args(["--config", config.to_str().unwrap(), "--socket", socket.to_str().unwrap(), "--log-level", "info"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = netns::run_in(netns_name, move || command.spawn()).expect("enter").expect("spawn vswitchd");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Spawned { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Fails the test if vswitchd has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            thread::sleep(Duration::from_millis(100)); // the last of stderr
            panic!("vswitchd exited with {status}: {}", self.log());
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        wait_for("vswitchd to exit", 20 * SECOND, || self.child.try_wait().unwrap())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `vswitchctl --json show` on `socket`.
fn show(socket: &Path) -> Result<Value, String> {
    let out = Command::new(VSWITCHCTL).arg("--socket").arg(socket).args(["--json", "show"]).output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// The ports `show` lists, with their link state.
fn port_links(show: &Value) -> Vec<(String, String)> {
    show["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| (p["name"].as_str().unwrap_or_default().into(), p["link"].as_str().unwrap_or_default().into()))
        .collect()
}

/// A fresh directory for files the test writes, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("vswitchd-lifecycle-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn after_sigkill_a_restart_removes_what_the_killed_one_made_forwards_and_a_clean_stop_leaves_nothing() {
    with_tag(|tag| {
        let bridge = format!("lk{tag}");
        let (sw, h1, h2, kept) =
            (format!("lk{tag}sw"), format!("lk{tag}h1"), format!("lk{tag}h2"), format!("lk{tag}p"));
        let (tap, veth, internal, kept_veth) =
            (format!("k{tag}t"), format!("k{tag}v"), format!("k{tag}i"), format!("k{tag}p"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        // A namespace the topology names but that exists already: vswitchd uses it, never lists
        // it, and neither the restart nor the stop removes it.
        guard.create(&kept);
        guard.adopt(&h1);
        guard.adopt(&h2);
        let topology = format!(
            "[bridge]\nname = \"{bridge}\"\n\
             [[netns]]\nname = \"{h1}\"\n[[netns]]\nname = \"{h2}\"\n[[netns]]\nname = \"{kept}\"\n\
             [[port]]\nname = \"{tap}\"\ntype = \"tap\"\nnetns = \"{h1}\"\naddress = \"10.98.0.1/24\"\n\
             [[port]]\nname = \"{veth}\"\ntype = \"veth\"\nnetns = \"{h2}\"\naddress = \"10.98.0.2/24\"\n\
             [[port]]\nname = \"{kept_veth}\"\ntype = \"veth\"\nnetns = \"{kept}\"\naddress = \"10.98.0.3/24\"\n\
             [[port]]\nname = \"{internal}\"\ntype = \"internal\"\n"
        );
        let (ip_2, ip_3) = (Ipv4Addr::new(10, 98, 0, 2), Ipv4Addr::new(10, 98, 0, 3));
        let mut daemon = Daemon::start(&sw, &topology);
        let state = state_file(&daemon.socket, &bridge);
        let record = state_of(&state);
        assert_eq!(record["pid"].as_u64(), daemon.pid().map(u64::from), "{record}");
        assert_eq!(
            listed(&record),
            [
                format!("namespace {h1}"),
                format!("namespace {h2}"),
                format!("tap {tap}"),
                format!("veth {veth}-sw"),
                format!("veth {kept_veth}-sw"),
                format!("tap {internal}"),
            ],
            "the state file lists what vswitchd created, and only that: {record}"
        );
        assert_eq!(ping(&h1, ip_2, 2, 2 * SECOND), 2, "h1 -> h2 before the kill");

        let pid = daemon.pid().unwrap();
        daemon.kill_hard();
        let left = left_but(tag, &[&sw, &kept]);
        println!("SIGKILL {pid}: left behind {left:?}, in {sw}: {:?}; state file: {}", links_in(&sw), state.exists());
        assert!(state.exists(), "the killed instance's state file is gone");

        daemon.restart(&sw).unwrap_or_else(|e| panic!("the restart after SIGKILL failed: {e}"));
        let record = state_of(&state);
        assert_eq!(record["pid"].as_u64(), daemon.pid().map(u64::from), "the restart does not own the state file");
        assert!(netns_exists(&kept), "the pre-existing namespace went with the killed instance's leftovers");
        assert_eq!(ping(&h1, ip_2, 3, 2 * SECOND), 3, "h1 -> h2 after the restart");
        assert_eq!(ping(&h1, ip_3, 3, 2 * SECOND), 3, "h1 -> the pre-existing namespace after the restart");
        assert_eq!(tcp_transfer(&h2, ip_2, &h1, 4 << 20), 4 << 20, "TCP h1 -> h2 after the restart");

        let stderr = stop_cleanly(&mut daemon, tag, &bridge, &[&sw, &kept]);
        for removed in [format!("namespace {h1}"), format!("namespace {h2}"), format!("veth pair {veth} / {veth}-sw")] {
            assert!(
                stderr.lines().any(|l| l.contains("removed what the killed vswitchd created") && l.contains(&removed)),
                "the restart did not log removing {removed}:\n{stderr}"
            );
        }
        assert_eq!(links_in(&sw), Vec::<String>::new(), "vswitchd's namespace after the stop");
        assert_eq!(links_in(&kept), Vec::<String>::new(), "the pre-existing namespace after the stop");
    });
}

#[test]
fn a_second_instance_of_a_running_bridge_exits_1_naming_it_and_creates_nothing() {
    with_tag(|tag| {
        let bridge = format!("l2{tag}");
        let (sw, h1, extra) = (format!("l2{tag}sw"), format!("l2{tag}h1"), format!("l2{tag}x"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.adopt(&h1);
        guard.adopt(&extra);
        let first = format!(
            "[bridge]\nname = \"{bridge}\"\n[[netns]]\nname = \"{h1}\"\n\
             [[port]]\nname = \"s{tag}a\"\ntype = \"veth\"\nnetns = \"{h1}\"\naddress = \"10.99.0.1/24\"\n"
        );
        let mut daemon = Daemon::start(&sw, &first);
        let pid = daemon.pid().unwrap();
        let state = state_file(&daemon.socket, &bridge);
        let before = std::fs::read_to_string(&state).unwrap();
        let links_before = (links_in(&sw), links_in(&h1));

        // The same bridge, with a namespace and ports of its own, and a control socket of its
        // own beside the first one's.
        let dir = daemon.socket.parent().unwrap().to_path_buf();
        let second = format!(
            "{first}[[netns]]\nname = \"{extra}\"\n\
             [[port]]\nname = \"s{tag}b\"\ntype = \"veth\"\nnetns = \"{extra}\"\n\
             [[port]]\nname = \"s{tag}c\"\ntype = \"tap\"\nnetns = \"{extra}\"\n"
        );
        let config = dir.join("second.toml");
        std::fs::write(&config, second).unwrap();
        let socket = dir.join("second.sock");
        let mut refused = Spawned::start(&sw, &config, &socket, &[]);
        let status = wait_for("the second instance to exit", 20 * SECOND, || refused.child.try_wait().unwrap());
        thread::sleep(Duration::from_millis(100)); // the last of stderr
        let stderr = refused.log();
        println!("second instance: {}", stderr.trim());
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("vswitchd: bridge {bridge} is already run by vswitchd (pid {pid})")),
            "the refusal does not name the running process: {stderr}"
        );
        assert!(!netns_exists(&extra), "the second instance created its namespace");
        assert_eq!((links_in(&sw), links_in(&h1)), links_before, "the second instance changed the interfaces");
        let files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("second.sock"))
            .collect();
        assert!(files.is_empty(), "the second instance left {files:?}");
        assert_eq!(std::fs::read_to_string(&state).unwrap(), before, "the second instance touched the state file");
        assert!(daemon.is_running(), "the first instance died");
        assert_eq!(port_links(&daemon.ctl_json(&["show"]).unwrap()).len(), 1, "the first instance's ports changed");

        stop_cleanly(&mut daemon, tag, &bridge, &[&sw]);
        // Gone, it runs the bridge no more: the same file starts.
        let mut again = Spawned::start(&sw, &config, &socket, &[]);
        wait_for("the second instance, once the first is gone", 20 * SECOND, || {
            again.assert_running();
            show(&socket).ok()
        });
        assert_eq!(again.terminate().code(), Some(0), "{}", again.log());
        assert!(!state.exists(), "state file left behind");
    });
}

#[test]
fn ready_is_told_when_the_socket_answers_and_stopping_at_sigterm() {
    with_tag(|tag| {
        let bridge = format!("ln{tag}");
        let (sw, h1, h2) = (format!("ln{tag}sw"), format!("ln{tag}h1"), format!("ln{tag}h2"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.adopt(&h1);
        guard.adopt(&h2);
        let dir = TempDir::new(tag);
        let config = dir.0.join("t.toml");
        std::fs::write(
            &config,
            format!(
                "[bridge]\nname = \"{bridge}\"\n[[netns]]\nname = \"{h1}\"\n[[netns]]\nname = \"{h2}\"\n\
                 [[port]]\nname = \"n{tag}a\"\ntype = \"tap\"\nnetns = \"{h1}\"\naddress = \"10.100.0.1/24\"\n\
                 [[port]]\nname = \"n{tag}b\"\ntype = \"veth\"\nnetns = \"{h2}\"\naddress = \"10.100.0.2/24\"\n"
            ),
        )
        .unwrap();
        let socket = dir.0.join("ctl.sock");
        // systemd's end: a datagram socket named by NOTIFY_SOCKET.
        let notify_path = dir.0.join("notify");
        let notifications = UnixDatagram::bind(&notify_path).unwrap();
        notifications.set_read_timeout(Some(20 * SECOND)).unwrap();
        let mut daemon = Spawned::start(&sw, &config, &socket, &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())]);
        let mut buf = [0u8; 256];
        let started = Instant::now();
        let n = notifications.recv(&mut buf).unwrap_or_else(|e| panic!("no READY=1 ({e}): {}", daemon.log()));
        let shown = show(&socket);
        assert_eq!(String::from_utf8_lossy(&buf[..n]), "READY=1");
        println!("READY=1 after {:?}", started.elapsed());
        let shown = shown.unwrap_or_else(|e| panic!("at READY=1 the control socket does not answer: {e}"));
        let links = port_links(&shown);
        assert_eq!(links.len(), 2, "{shown}");
        assert!(links.iter().all(|(_, link)| link == "up"), "{links:?}");
        assert_eq!(ping(&h1, Ipv4Addr::new(10, 100, 0, 2), 2, 2 * SECOND), 2, "h1 -> h2 once ready");
        daemon.assert_running();

        // A reload (SIGHUP) is bracketed by RELOADING=1 (with the monotonic time) and READY=1.
        let pid = nix::unistd::Pid::from_raw(daemon.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        let n = notifications.recv(&mut buf).unwrap_or_else(|e| panic!("no RELOADING=1 ({e}): {}", daemon.log()));
        let reloading = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading:?}");
        let n = notifications
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no READY=1 after the reload ({e}): {}", daemon.log()));
        assert_eq!(String::from_utf8_lossy(&buf[..n]), "READY=1");
        daemon.assert_running();

        let status = daemon.terminate();
        let n = notifications.recv(&mut buf).unwrap_or_else(|e| panic!("no STOPPING=1 ({e}): {}", daemon.log()));
        assert_eq!(String::from_utf8_lossy(&buf[..n]), "STOPPING=1");
        assert_eq!(status.code(), Some(0), "{}", daemon.log());
        notifications.set_nonblocking(true).unwrap();
        assert!(
            notifications.recv(&mut buf).is_err(),
            "more notifications than READY=1, the reload's two and STOPPING=1"
        );
        assert!(!socket.exists() && !state_file(&socket, &bridge).exists(), "left behind: {:?}", dir.0.read_dir());
    });
}

#[test]
fn the_control_socket_appears_only_once_every_port_forwards() {
    with_tag(|tag| {
        let bridge = format!("lr{tag}");
        let sw = format!("lr{tag}sw");
        let hosts: Vec<String> = (1..=3).map(|i| format!("lr{tag}h{i}")).collect();
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        let mut topology = format!("[bridge]\nname = \"{bridge}\"\n");
        let mut ports = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            guard.adopt(host);
            topology.push_str(&format!(
                "[[netns]]\nname = \"{host}\"\nroutes = [{{ dst = \"default\", via = \"10.101.0.254\" }}]\n"
            ));
            for (kind, n) in [("tap", 1), ("veth", 2)] {
                let name = format!("r{tag}{i}{n}");
                topology.push_str(&format!(
                    "[[port]]\nname = \"{name}\"\ntype = \"{kind}\"\nnetns = \"{host}\"\naddress = \"10.101.0.{}/24\"\n",
                    10 * i + n
                ));
                ports.push(name);
            }
        }
        ports.push(format!("r{tag}gw"));
        topology
            .push_str(&format!("[[port]]\nname = \"r{tag}gw\"\ntype = \"internal\"\naddress = \"10.101.0.254/24\"\n"));
        let dir = TempDir::new(tag);
        let config = dir.0.join("t.toml");
        std::fs::write(&config, topology).unwrap();
        let socket = dir.0.join("ctl.sock");

        let mut daemon = Spawned::start(&sw, &config, &socket, &[]);
        let started = Instant::now();
        // Poll for the socket file as a script would; the moment it is there, setup must be
        // over: the last step (the last namespace's route) done, every port in `show`, up.
        let last = hosts.last().unwrap();
        loop {
            if std::fs::symlink_metadata(&socket).is_ok() {
                break;
            }
            daemon.assert_running();
            assert!(started.elapsed() < 20 * SECOND, "no control socket after 20 s: {}", daemon.log());
            thread::sleep(Duration::from_millis(1));
        }
        let appeared = started.elapsed();
        let routes = ip_output(&["-n", last, "route", "show", "default"]);
        assert!(routes.contains("10.101.0.254"), "the socket appeared before setup was over (no route in {last})");
        let shown = show(&socket).unwrap_or_else(|e| panic!("the socket appeared, but does not answer: {e}"));
        let links = port_links(&shown);
        let names: Vec<&String> = links.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ports.iter().collect::<Vec<_>>(), "{shown}");
        assert!(links.iter().all(|(_, link)| link == "up"), "{links:?}");
        println!("the control socket appeared {appeared:?} after the start, with {} ports up", links.len());
        assert_eq!(ping(&hosts[0], Ipv4Addr::new(10, 101, 0, 22), 2, 2 * SECOND), 2, "h1 -> h3 once ready");
        assert_eq!(daemon.terminate().code(), Some(0), "{}", daemon.log());
        assert!(dir.0.read_dir().unwrap().all(|e| e.unwrap().file_name() == "t.toml"), "left behind in the directory");
    });
}

#[test]
fn a_restart_after_a_kill_leaves_alone_a_link_that_took_a_listed_name_since() {
    with_tag(|tag| {
        let (sw, h1) = (format!("ln{tag}sw"), format!("ln{tag}h1"));
        let veth = format!("n{tag}v");
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.adopt(&h1);
        let topology = format!(
            "[bridge]\nname = \"ln{tag}\"\n[[netns]]\nname = \"{h1}\"\n\
             [[port]]\nname = \"{veth}\"\ntype = \"veth\"\nnetns = \"{h1}\"\n"
        );
        let mut daemon = Daemon::start(&sw, &topology);
        daemon.kill_hard();
        // Someone else's link now has the name of the veth end vswitchd listed.
        let peer = format!("{veth}-sw");
        ip(&["-n", &sw, "link", "del", &peer]);
        ip(&["-n", &sw, "tuntap", "add", &peer, "mode", "tap"]);
        let refused = daemon.restart(&sw).expect_err("the restart must not delete someone else's link");
        assert!(refused.contains("is a tun link now, not the veth vswitchd created: left alone"), "{refused}");
        assert!(links_in(&sw).contains(&peer), "the other link is still there: {:?}", links_in(&sw));
        ip(&["-n", &sw, "link", "del", &peer]);
        daemon.restart(&sw).unwrap_or_else(|e| panic!("the restart once the name is free: {e}"));
        let (status, stderr) = daemon.terminate();
        assert!(status.success(), "{stderr}");
    });
}
