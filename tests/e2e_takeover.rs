//! `vswitchd --takeover`, end to end with the real binary: a new process takes a running
//! bridge over (its TAP fds, packet sockets and FDB, passed over the control socket) while a
//! TCP stream, a ping flood and a stream of one UDP datagram per millisecond cross it; the
//! hosts' TAP devices never go away, the TCP stream completes byte-exact, the UDP loss is
//! measured and printed, and the new process's clean stop leaves nothing.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::*;
use vswitchd_control::netns;

const SECOND: Duration = Duration::from_secs(1);

/// The interface index of `link` in namespace `ns`.
fn ifindex(ns: &str, link: &str) -> u32 {
    let out = ip_output(&["-n", ns, "-o", "link", "show", link]);
    out.split(':').next().and_then(|i| i.trim().parse().ok()).unwrap_or_else(|| panic!("no {link} in {ns}: {out}"))
}

/// One UDP datagram per millisecond, numbered, from `from_ns` to `to_ip:5400` in `to_ns` until
/// `stop`: returns (sent, distinct received, the longest run of missing numbers).
fn udp_stream(
    from_ns: &str,
    to_ns: &str,
    to_ip: Ipv4Addr,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(u64, u64, u64)> {
    let receiver = netns::run_in(to_ns, move || UdpSocket::bind((to_ip, 5400))).unwrap().unwrap();
    receiver.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let sender = netns::run_in(from_ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))).unwrap().unwrap();
    let receiving = Arc::clone(&stop);
    let counter = thread::spawn(move || {
        let mut seen = BTreeSet::new();
        let mut buf = [0u8; 64];
        let mut quiet_after_stop = 0;
        loop {
            match receiver.recv(&mut buf) {
                Ok(8) => {
                    seen.insert(u64::from_be_bytes(buf[..8].try_into().unwrap()));
                }
                Ok(_) => {}
                Err(_) if receiving.load(Ordering::Relaxed) => {
                    quiet_after_stop += 1;
                    if quiet_after_stop > 2 {
                        return seen;
                    }
                }
                Err(_) => {}
            }
        }
    });
    thread::spawn(move || {
        let start = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let _ = sender.send_to(&sent.to_be_bytes(), (to_ip, 5400));
            sent += 1;
            let next = start + Duration::from_millis(sent);
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
        }
        let seen = counter.join().unwrap();
        let (mut longest, mut run) = (0u64, 0u64);
        for n in 0..sent {
            if seen.contains(&n) {
                run = 0;
            } else {
                run += 1;
                longest = longest.max(run);
            }
        }
        (sent, seen.len() as u64, longest)
    })
}

/// A TCP stream from `client_ns` to `server_ip:5401` in `server_ns` until `stop`; returns the
/// bytes that arrived, each checked.
fn tcp_stream(server_ns: &str, server_ip: Ipv4Addr, client_ns: &str, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    let listener = netns::run_in(server_ns, move || TcpListener::bind((server_ip, 5401))).unwrap().unwrap();
    let receiver = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut offset = 0u64;
        loop {
            let n = stream.read(&mut buf).expect("the TCP stream stalled for 30 s");
            if n == 0 {
                return offset;
            }
            for (i, &b) in buf[..n].iter().enumerate() {
                assert_eq!(b, (offset + i as u64) as u8 ^ 0x5a, "corrupted byte at {}", offset + i as u64);
            }
            offset += n as u64;
        }
    });
    let client = client_ns.to_string();
    thread::spawn(move || {
        let mut stream = netns::run_in(&client, move || {
            TcpStream::connect_timeout(&(server_ip, 5401).into(), Duration::from_secs(10))
        })
        .unwrap()
        .unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut buf = vec![0u8; 8 * 1024];
        let mut offset = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (offset + i as u64) as u8 ^ 0x5a;
            }
            stream.write_all(&buf).expect("write");
            offset += buf.len() as u64;
            thread::sleep(Duration::from_micros(500));
        }
        drop(stream);
        let received = receiver.join().unwrap();
        assert_eq!(received, offset, "bytes sent vs received");
        received
    })
}

fn a_takeover_keeps_the_hosts_devices_and_their_traffic(threads: usize) {
    with_tag(|tag| {
        let (sw, h1, h2, h3) = (format!("to{tag}sw"), format!("to{tag}h1"), format!("to{tag}h2"), format!("to{tag}h3"));
        let (a, b, c) = (format!("t{tag}a"), format!("t{tag}b"), format!("t{tag}c"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        for ns in [&h1, &h2, &h3] {
            guard.adopt(ns);
        }
        let topology = format!(
            "[bridge]\nname = \"to{tag}\"\nthreads = {threads}\n\
             [[netns]]\nname = \"{h1}\"\n[[netns]]\nname = \"{h2}\"\n[[netns]]\nname = \"{h3}\"\n\
             [[port]]\nname = \"{a}\"\ntype = \"tap\"\nnetns = \"{h1}\"\naddress = \"10.93.0.1/24\"\n\
             [[port]]\nname = \"{b}\"\ntype = \"veth\"\nnetns = \"{h2}\"\naddress = \"10.93.0.2/24\"\n"
        );
        let mut daemon = Daemon::start(&sw, &topology);
        // A port added live comes along.
        let added = daemon.ctl(&["port", "add", &c, "tap", &format!("netns={h3}"), "address=10.93.0.3/24"]);
        added.unwrap();
        daemon.ctl(&["fdb", "add", "02:00:00:00:77:77", &b]).unwrap();
        let (ip2, ip3) = (Ipv4Addr::new(10, 93, 0, 2), Ipv4Addr::new(10, 93, 0, 3));
        assert_eq!(ping(&h1, ip2, 2, Duration::from_secs(1)), 2);
        let tap_before = ifindex(&h1, &a);
        let ports_before = daemon.ctl_json(&["show"]).unwrap()["ports"].as_array().unwrap().len();

        let stop = Arc::new(AtomicBool::new(false));
        let udp = udp_stream(&h1, &h2, ip2, Arc::clone(&stop));
        let tcp = tcp_stream(&h2, ip2, &h1, Arc::clone(&stop));
        let pinging = Arc::clone(&stop);
        let h1_pings = h1.clone();
        let pings = thread::spawn(move || {
            let (mut sent, mut answered) = (0u64, 0u64);
            while !pinging.load(Ordering::Relaxed) {
                answered += u64::from(ping(&h1_pings, ip2, 10, Duration::from_millis(200)));
                sent += 10;
            }
            (sent, answered)
        });
        thread::sleep(Duration::from_millis(500));
        let old_pid = daemon.pid().unwrap();
        let started = Instant::now();
        let (old_status, old_log) = daemon.take_over(&sw).unwrap_or_else(|e| panic!("takeover failed: {e}"));
        let took = started.elapsed();
        thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::Relaxed);
        let (sent, received, longest_gap) = udp.join().unwrap();
        let bytes = tcp.join().expect("the TCP stream broke across the takeover");
        let (pings_sent, pings_answered) = pings.join().unwrap();
        println!(
            "takeover ({threads} worker(s)) from pid {old_pid} in {took:?}: UDP 1/ms {sent} sent, {} lost, longest gap {longest_gap} ms; \
             TCP {bytes} bytes byte-exact; pings {pings_answered}/{pings_sent}",
            sent - received
        );
        assert!(old_status.success(), "the old vswitchd exits 0 after handing over: {old_status}\n{old_log}");
        assert!(old_log.contains("handed the bridge over"), "{old_log}");
        assert!(sent - received < 100, "lost {} of {sent} datagrams at 1/ms", sent - received);
        assert_eq!(ifindex(&h1, &a), tap_before, "the host's TAP device is the same one");
        let show = daemon.ctl_json(&["show"]).unwrap();
        assert_eq!(show["ports"].as_array().unwrap().len(), ports_before, "{show}");
        assert_eq!(ping(&h3, Ipv4Addr::new(10, 93, 0, 1), 2, Duration::from_secs(1)), 2, "the live port forwards");
        let fdb = daemon.ctl(&["fdb", "show"]).unwrap();
        assert!(fdb.contains("02:00:00:00:77:77"), "the static entry came along: {fdb}");
        let saved = daemon.ctl(&["save"]).unwrap();
        assert!(saved.contains(&c), "the new process runs the live port too: {saved}");
        assert_eq!(ping(&h1, ip3, 2, Duration::from_secs(1)), 2);
        let (status, stderr) = daemon.terminate();
        assert!(status.success(), "{stderr}");
    });
}

#[test]
fn a_takeover_on_one_worker_keeps_the_hosts_devices_and_their_traffic() {
    a_takeover_keeps_the_hosts_devices_and_their_traffic(1);
}

#[test]
fn a_takeover_on_two_workers_keeps_the_hosts_devices_and_their_traffic() {
    a_takeover_keeps_the_hosts_devices_and_their_traffic(2);
}

#[test]
fn a_takeover_with_nothing_running_exits_1_and_creates_nothing() {
    with_tag(|tag| {
        let dir = std::env::temp_dir().join(format!("vswitchd-takeover-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("t.toml");
        std::fs::write(&config, format!("[bridge]\nname = \"tn{tag}\"\n[[netns]]\nname = \"tn{tag}h\"\n")).unwrap();
        let out = std::process::Command::new(VSWITCHD)
            .args(["--config", config.to_str().unwrap(), "--socket", dir.join("x.ctl").to_str().unwrap(), "--takeover"])
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("nothing to take over"), "{stderr}");
    });
}

/// With two workers, a takeover carries over a VXLAN port (every worker's socket of its
/// `SO_REUSEPORT` group) and a bond (every worker's socket on each member), and both forward
/// afterwards: toward the kernel's VTEP, and toward a kernel bridge on the far side of the
/// members.
#[test]
fn a_takeover_on_two_workers_carries_a_vxlan_port_and_a_bond() {
    with_tag(|tag| {
        let (sw, kernel, hb, far, h1) = (
            format!("tv{tag}sw"),
            format!("tv{tag}k"),
            format!("tv{tag}hb"),
            format!("tv{tag}f"),
            format!("tv{tag}h1"),
        );
        let mut guard = NamespaceGuard::default();
        for ns in [&sw, &kernel, &hb, &far] {
            guard.create(ns);
        }
        guard.adopt(&h1);
        kernel_vtep(&sw, &kernel, &hb, "10.94.0.2/24", &[]);
        // Two links from the switch's namespace to a kernel bridge in `far` (the active-backup
        // bond sends on one; what the bridge floods back on the other is dropped as backup).
        ip(&["-n", &far, "link", "add", "br0", "type", "bridge"]);
        for m in ["m1", "m2"] {
            let (a, b) = (format!("{m}a"), format!("{m}b"));
            ip(&["link", "add", &a, "netns", &sw, "type", "veth", "peer", "name", &b, "netns", &far]);
            ip(&["-n", &far, "link", "set", &b, "master", "br0"]);
            ip(&["-n", &far, "link", "set", &b, "up"]);
            ip(&["-n", &sw, "link", "set", &a, "up"]);
        }
        ip(&["-n", &far, "addr", "add", "10.94.0.9/24", "dev", "br0"]);
        ip(&["-n", &far, "link", "set", "br0", "up"]);
        let topology = format!(
            "[bridge]\nname = \"tv{tag}\"\nthreads = 2\n[[netns]]\nname = \"{h1}\"\n\
             [[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nvni = 42\nlocal = \"192.0.2.1\"\nremotes = [\"192.0.2.2\"]\nmtu = 1450\n\
             [[port]]\nname = \"bond0\"\ntype = \"bond\"\nmode = \"active-backup\"\n\
             [[port]]\nname = \"m1\"\ntype = \"netdev\"\ndevice = \"m1a\"\nmaster = \"bond0\"\n\
             [[port]]\nname = \"m2\"\ntype = \"netdev\"\ndevice = \"m2a\"\nmaster = \"bond0\"\n\
             [[port]]\nname = \"v{tag}\"\ntype = \"tap\"\nnetns = \"{h1}\"\naddress = \"10.94.0.1/24\"\nmtu = 1450\n"
        );
        let mut daemon = Daemon::start(&sw, &topology);
        let (far_host, vtep_host) = (Ipv4Addr::new(10, 94, 0, 9), Ipv4Addr::new(10, 94, 0, 2));
        wait_for("the bond's members up", 10 * SECOND, || {
            let bond = &daemon.ctl_json(&["bond", "show"]).ok()?["bonds"][0];
            bond["members"].as_array()?.iter().all(|m| m["usable"] == true).then_some(())
        });
        assert_eq!(ping(&h1, vtep_host, 2, 2 * SECOND), 2, "through the tunnel");
        assert_eq!(ping(&h1, far_host, 2, 2 * SECOND), 2, "through the bond");
        let (status, log) = daemon.take_over(&sw).unwrap_or_else(|e| panic!("takeover failed: {e}"));
        assert!(status.success(), "{log}");
        assert_eq!(ping(&h1, vtep_host, 3, 2 * SECOND), 3, "through the tunnel after the takeover");
        assert_eq!(ping(&h1, far_host, 3, 2 * SECOND), 3, "through the bond after the takeover");
        assert_eq!(tcp_transfer(&hb, vtep_host, &h1, 4 << 20), 4 << 20);
        assert_eq!(tcp_transfer(&far, far_host, &h1, 4 << 20), 4 << 20);
        let ports = daemon.ctl_json(&["port", "show"]).unwrap();
        for p in ports["ports"].as_array().unwrap() {
            let workers = p["worker_rx_frames"].as_array().map_or(0, Vec::len);
            assert_eq!(workers, 2, "{p}");
        }
        let (status, stderr) = daemon.terminate();
        assert!(status.success(), "{stderr}");
    });
}
