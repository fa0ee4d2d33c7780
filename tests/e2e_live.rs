//! Live changes, end to end with the real binaries: ports added and removed a hundred times
//! while a TCP stream between two other ports runs byte-exact and never stalls; a port moved
//! between VLANs changes who it reaches; bad requests exit 2 naming the key and change
//! nothing; `reload` (and SIGHUP) applies an added, a removed and a changed port and refuses a
//! bad file; `save` prints a file `vswitchd --check` accepts and that starts the same switch; a
//! panic anywhere still removes everything.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::*;
use vswitchd_control::netns;

const SECOND: Duration = Duration::from_secs(1);

/// The running ports, `name:vlan-mode` each, sorted.
fn ports(daemon: &Daemon) -> Vec<String> {
    let show = daemon.ctl_json(&["show"]).unwrap();
    let mut ports: Vec<String> = show["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}:{}", p["name"].as_str().unwrap(), p["vlan"]))
        .collect();
    ports.sort();
    ports
}

/// A TCP stream from `client_ns` to `server_ip` in `server_ns` that runs until `stop` is set:
/// returns the bytes that arrived (each checked) and the longest wait between two reads.
fn stream_until(
    server_ns: &str,
    server_ip: Ipv4Addr,
    client_ns: &str,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(u64, Duration)> {
    let listener =
        netns::run_in(server_ns, move || TcpListener::bind((server_ip, 5301))).expect("enter").expect("bind");
    let receiver = thread::spawn(move || -> (u64, Duration) {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let (mut offset, mut longest, mut last) = (0u64, Duration::ZERO, Instant::now());
        loop {
            let n = stream.read(&mut buf).expect("read: the stream stalled for 30 s");
            let now = Instant::now();
            longest = longest.max(now - last);
            last = now;
            if n == 0 {
                return (offset, longest);
            }
            for (i, &b) in buf[..n].iter().enumerate() {
                assert_eq!(b, (offset + i as u64) as u8 ^ 0x3c, "corrupted byte at offset {}", offset + i as u64);
            }
            offset += n as u64;
        }
    });
    let client = client_ns.to_string();
    thread::spawn(move || {
        let mut stream = netns::run_in(&client, move || {
            TcpStream::connect_timeout(&(server_ip, 5301).into(), Duration::from_secs(10))
        })
        .expect("enter")
        .expect("connect");
        stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let mut offset = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (offset + i as u64) as u8 ^ 0x3c;
            }
            stream.write_all(&buf).expect("write");
            offset += buf.len() as u64;
            thread::sleep(Duration::from_micros(200)); // a steady stream, not a flood
        }
        drop(stream);
        let (received, longest) = receiver.join().expect("receiver");
        assert_eq!(received, offset, "bytes sent vs received");
        (received, longest)
    })
}

#[test]
fn a_hundred_port_add_del_cycles_leave_a_tcp_stream_between_two_other_ports_whole_and_flowing() {
    with_tag(|tag| {
        let (sw, h1, h2, h3) = (format!("lv{tag}sw"), format!("lv{tag}h1"), format!("lv{tag}h2"), format!("lv{tag}h3"));
        let (a, b, c) = (format!("v{tag}a"), format!("v{tag}b"), format!("v{tag}c"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        for ns in [&h1, &h2, &h3] {
            guard.adopt(ns);
        }
        let topology = format!(
            "[bridge]\nname = \"lv{tag}\"\nthreads = 2\n\
             [[netns]]\nname = \"{h1}\"\n[[netns]]\nname = \"{h2}\"\n[[netns]]\nname = \"{h3}\"\n\
             [[port]]\nname = \"{a}\"\ntype = \"veth\"\nnetns = \"{h1}\"\naddress = \"10.97.0.1/24\"\n\
             [[port]]\nname = \"{b}\"\ntype = \"tap\"\nnetns = \"{h2}\"\naddress = \"10.97.0.2/24\"\n"
        );
        let mut daemon = Daemon::start(&sw, &topology);
        let stop = Arc::new(AtomicBool::new(false));
        let stream = stream_until(&h2, Ipv4Addr::new(10, 97, 0, 2), &h1, Arc::clone(&stop));
        let started = Instant::now();
        let address = "address=10.97.0.3/24".to_string();
        let netns_arg = format!("netns={h3}");
        for cycle in 0..100 {
            // Alternately a veth and a TAP, created and removed by name each time.
            let kind = if cycle % 2 == 0 { "veth" } else { "tap" };
            daemon.ctl_ok(&["port", "add", &c, kind, &netns_arg, &address]);
            if cycle % 25 == 0 {
                assert_eq!(
                    ping(&h3, Ipv4Addr::new(10, 97, 0, 1), 3, SECOND),
                    3,
                    "cycle {cycle}: the new port forwards"
                );
            }
            daemon.ctl_ok(&["port", "del", &c]);
        }
        let cycles_took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let (bytes, longest) = stream.join().expect("the stream failed");
        println!(
            "100 port add/del cycles in {cycles_took:?}; TCP stream {bytes} bytes byte-exact, longest gap {longest:?}"
        );
        assert!(longest < SECOND, "the stream stalled for {longest:?}");
        assert_eq!(daemon.port_names(), vec![a.clone(), b.clone()]);
        assert!(
            !links_in(&h3).iter().any(|l| l.starts_with(&c)),
            "the last port's devices are gone: {:?}",
            links_in(&h3)
        );
        let (status, stderr) = daemon.terminate();
        assert!(status.success(), "{stderr}");
    });
}

#[test]
fn a_port_moved_between_vlans_changes_who_it_reaches_and_bad_requests_change_nothing() {
    with_tag(|tag| {
        let (sw, h1, h2, h3) = (format!("lm{tag}sw"), format!("lm{tag}h1"), format!("lm{tag}h2"), format!("lm{tag}h3"));
        let (a, b, c) = (format!("m{tag}a"), format!("m{tag}b"), format!("m{tag}c"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        for ns in [&h1, &h2, &h3] {
            guard.adopt(ns);
        }
        let topology = format!(
            "[bridge]\nname = \"lm{tag}\"\n\
             [[netns]]\nname = \"{h1}\"\n[[netns]]\nname = \"{h2}\"\n[[netns]]\nname = \"{h3}\"\n\
             [[port]]\nname = \"{a}\"\ntype = \"veth\"\nnetns = \"{h1}\"\naddress = \"10.96.0.1/24\"\nvlan = 10\n\
             [[port]]\nname = \"{b}\"\ntype = \"veth\"\nnetns = \"{h2}\"\naddress = \"10.96.0.2/24\"\nvlan = 10\n\
             [[port]]\nname = \"{c}\"\ntype = \"tap\"\nnetns = \"{h3}\"\naddress = \"10.96.0.3/24\"\nvlan = 20\n"
        );
        let mut daemon = Daemon::start(&sw, &topology);
        let (ip1, ip2) = (Ipv4Addr::new(10, 96, 0, 1), Ipv4Addr::new(10, 96, 0, 2));
        assert_eq!(ping(&h2, ip1, 2, SECOND), 2, "b reaches a in VLAN 10");
        assert_eq!(ping(&h3, ip2, 2, SECOND), 0, "c (VLAN 20) does not reach b");
        let before = daemon.ctl_json(&["port", "show", &a]).unwrap()["ports"][0]["rx_frames"].as_u64().unwrap();

        daemon.ctl_ok(&["port", "set", &b, "vlan=20"]);
        assert_eq!(ping(&h2, ip1, 2, SECOND), 0, "b, now in VLAN 20, no longer reaches a");
        assert_eq!(ping(&h3, ip2, 2, SECOND), 2, "c reaches b in VLAN 20");
        let after = daemon.ctl_json(&["port", "show", &a]).unwrap()["ports"][0]["rx_frames"].as_u64().unwrap();
        assert!(after >= before, "a kept its counters ({before} then {after})");

        // A trunk, then back to an access port.
        daemon.ctl_ok(&["port", "set", &b, "trunk=[10,20]", "native_vlan=20"]);
        assert_eq!(ping(&h3, ip2, 2, SECOND), 2, "untagged frames of the trunk's native VLAN 20");

        let unchanged = ports(&daemon);
        let long = "x".repeat(16);
        let refusals: Vec<(Vec<String>, &str)> = vec![
            (vec!["port".into(), "set".into(), b.clone(), "vlan=5000".into()], "vlan"),
            (vec!["port".into(), "set".into(), b.clone(), "colour=blue".into()], "colour"),
            (vec!["port".into(), "add".into(), format!("n{tag}"), "veth".into(), "bogus=1".into()], "bogus"),
            (vec!["port".into(), "add".into(), long, "tap".into()], "name"),
            (vec!["port".into(), "add".into(), a.clone(), "tap".into()], "name"),
            (
                vec![
                    "port".into(),
                    "add".into(),
                    format!("n{tag}"),
                    "netdev".into(),
                    format!("device={c}"),
                    format!("netns={h3}"),
                ],
                "device",
            ),
            (vec!["port".into(), "add".into(), format!("n{tag}"), "netdev".into(), format!("device={a}-sw")], ""),
            (vec!["port".into(), "add".into(), format!("n{tag}"), "wormhole".into()], "type"),
            (vec!["port".into(), "del".into(), format!("nosuch{tag}")], ""),
            (vec!["port".into(), "set".into(), format!("nosuch{tag}"), "vlan=3".into()], ""),
        ];
        for (args, key) in refusals {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, _, stderr) = daemon.ctl_status(&args);
            assert_eq!(code, 2, "vswitchctl {args:?} should be refused with exit 2: {stderr}");
            if !key.is_empty() {
                assert!(
                    stderr.contains(&format!("`{key}`")),
                    "vswitchctl {args:?}: the message names `{key}`: {stderr}"
                );
            }
        }
        assert_eq!(ports(&daemon), unchanged, "refused requests changed nothing");
        let (status, stderr) = daemon.terminate();
        assert!(status.success(), "{stderr}");
    });
}

#[test]
fn reload_applies_the_files_difference_keeps_live_ports_and_refuses_a_bad_file_and_save_round_trips() {
    with_tag(|tag| {
        let (sw, h1, h2, h3) = (format!("lr{tag}sw"), format!("lr{tag}h1"), format!("lr{tag}h2"), format!("lr{tag}h3"));
        let (a, b, c, d, e) =
            (format!("r{tag}a"), format!("r{tag}b"), format!("r{tag}c"), format!("r{tag}d"), format!("r{tag}e"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        for ns in [&h1, &h2, &h3] {
            guard.adopt(ns);
        }
        let head = format!(
            "[bridge]\nname = \"lr{tag}\"\n\
             [[netns]]\nname = \"{h1}\"\n[[netns]]\nname = \"{h2}\"\n[[netns]]\nname = \"{h3}\"\n\
             [[port]]\nname = \"{a}\"\ntype = \"veth\"\nnetns = \"{h1}\"\naddress = \"10.95.0.1/24\"\n"
        );
        let first = format!(
            "{head}[[port]]\nname = \"{b}\"\ntype = \"veth\"\nnetns = \"{h2}\"\naddress = \"10.95.0.2/24\"\n\
             [[port]]\nname = \"{c}\"\ntype = \"internal\"\n"
        );
        let mut daemon = Daemon::start(&sw, &first);
        daemon.ctl_ok(&["port", "add", &e, "tap", &format!("netns={h3}"), "address=10.95.0.5/24"]);
        let a_rx = || daemon.ctl_json(&["port", "show", &a]).unwrap()["ports"][0]["rx_frames"].as_u64().unwrap();
        assert_eq!(ping(&h1, Ipv4Addr::new(10, 95, 0, 2), 2, SECOND), 2);
        let before = a_rx();

        // b moves to VLAN 7, c goes, d comes; a is untouched; e (added live) stays.
        let second = format!(
            "{head}[[port]]\nname = \"{b}\"\ntype = \"veth\"\nnetns = \"{h2}\"\naddress = \"10.95.0.2/24\"\nvlan = 7\n\
             [[port]]\nname = \"{d}\"\ntype = \"internal\"\n"
        );
        std::fs::write(&daemon.config, &second).unwrap();
        let out = daemon.ctl_ok(&["reload"]);
        println!("reload: {out}");
        let now = ports(&daemon);
        assert_eq!(
            daemon.port_names(),
            {
                let mut n = vec![a.clone(), b.clone(), d.clone(), e.clone()];
                n.sort();
                n
            },
            "{now:?}"
        );
        assert!(
            now.iter().any(|p| p.starts_with(&format!("{b}:")) && p.contains("access 7")),
            "b is in VLAN 7: {now:?}"
        );
        assert!(a_rx() >= before, "a kept its counters");
        assert_eq!(ping(&h1, Ipv4Addr::new(10, 95, 0, 2), 2, SECOND), 0, "b left a's VLAN");
        assert_eq!(ping(&h1, Ipv4Addr::new(10, 95, 0, 5), 2, SECOND), 2, "the live port e still forwards");

        // A bad file is refused with file:line:key, and nothing changes; SIGHUP with one too.
        let bad = second.replace("vlan = 7", "vlan = 7000");
        std::fs::write(&daemon.config, &bad).unwrap();
        let (code, _, stderr) = daemon.ctl_status(&["reload"]);
        assert_eq!(code, 2, "{stderr}");
        let path = daemon.config.display().to_string();
        assert!(stderr.contains(&path) && stderr.contains("`port[1].vlan`"), "names file, line and key: {stderr}");
        let pid = daemon.pid().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
        // The daemon logs each refused reload: the request's, then the signal's.
        wait_for("SIGHUP's reload to be refused", 5 * SECOND, || {
            (daemon.log().matches("reload refused or incomplete").count() >= 2).then_some(())
        });
        assert_eq!(ports(&daemon), now, "a bad reload changed nothing");

        // SIGHUP with a good file: d goes.
        std::fs::write(&daemon.config, second.replace(&format!("[[port]]\nname = \"{d}\"\ntype = \"internal\"\n"), ""))
            .unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
        wait_for("SIGHUP to remove d", 5 * SECOND, || (!daemon.port_names().contains(&d)).then_some(()));

        // save: a file --check accepts, that names every running port and starts the same switch.
        let saved = daemon.ctl_ok(&["save"]);
        let saved_path = std::env::temp_dir().join(format!("vswitchd-save-{tag}.toml"));
        std::fs::write(&saved_path, &saved).unwrap();
        let check =
            Command::new(VSWITCHD).args(["--check", "--config", saved_path.to_str().unwrap()]).output().unwrap();
        assert!(
            check.status.success(),
            "--check refused the saved file: {}\n{saved}",
            String::from_utf8_lossy(&check.stderr)
        );
        let running = ports(&daemon);
        let (status, stderr) = daemon.terminate();
        assert!(status.success(), "{stderr}");
        let again = Daemon::start(&sw, &saved);
        assert_eq!(ports(&again), running, "the saved file starts the same switch");
        let resaved = again.ctl_ok(&["save"]);
        let _ = std::fs::remove_file(&saved_path);
        assert_eq!(resaved, saved, "saving the switch started from a saved file gives the same file");
        let mut again = again;
        let (status, stderr) = again.terminate();
        assert!(status.success(), "{stderr}");
    });
}

/// Starts vswitchd with `VSWITCHD_INJECT_PANIC=where` on two workers and expects it to exit 1
/// naming the panic, leaving nothing behind.
fn a_panic_cleans_up(place: &str) {
    with_tag(|tag| {
        let (sw, h1) = (format!("lp{tag}sw"), format!("lp{tag}h1"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.adopt(&h1);
        let dir = std::env::temp_dir().join(format!("vswitchd-panic-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("t.toml");
        std::fs::write(
            &config,
            format!(
                "[bridge]\nname = \"lp{tag}\"\nthreads = 2\n[[netns]]\nname = \"{h1}\"\n\
                 [[port]]\nname = \"p{tag}a\"\ntype = \"veth\"\nnetns = \"{h1}\"\n\
                 [[port]]\nname = \"p{tag}b\"\ntype = \"tap\"\nnetns = \"{h1}\"\n"
            ),
        )
        .unwrap();
        let socket = dir.join("ctl.sock");
        let child = netns::run_in(&sw, || {
            Command::new(VSWITCHD)
                .args(["--config", config.to_str().unwrap(), "--socket", socket.to_str().unwrap()])
                .env("VSWITCHD_INJECT_PANIC", place)
                .output()
        })
        .unwrap()
        .unwrap();
        let stderr = String::from_utf8_lossy(&child.stderr);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(child.status.code(), Some(1), "exit 1 after a panic in the {place}: {stderr}");
        assert!(stderr.contains("injected panic"), "the cause is logged: {stderr}");
        assert!(!netns_exists(&h1), "the namespace vswitchd created is gone after a panic in the {place}");
        assert_eq!(links_in(&sw), Vec::<String>::new(), "vswitchd's devices are gone after a panic in the {place}");
    });
}

#[test]
fn a_panic_on_the_first_worker_still_removes_everything() {
    a_panic_cleans_up("dataplane");
}

#[test]
fn a_panic_on_another_worker_stops_the_switch_and_removes_everything() {
    a_panic_cleans_up("worker");
}

#[test]
fn a_panic_in_the_control_plane_stops_the_switch_and_removes_everything() {
    a_panic_cleans_up("control");
}
