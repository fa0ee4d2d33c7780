//! Spanning tree end to end: two vswitchd instances running RSTP and a kernel bridge running
//! 802.1D STP (`stp_state 1`) wired in a triangle, a host behind each. The loop is broken (one
//! broadcast arrives once, not in a storm), the kernel and both switches agree on the root,
//! the vswitchd ports toward the kernel fall back to 802.1D BPDUs, and cutting a switch's root
//! link moves it to its alternate port (the reconvergence time is printed). Beside it: with
//! `stp = "off"` BPDUs are forwarded like the kernel bridge's with STP off; edge ports, BPDU
//! guard, and ports added and removed at run time joining and leaving the tree; `stp = "stp"`
//! (802.1D only) blocking one of two parallel links to the kernel bridge.

mod support;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const SECOND: Duration = Duration::from_secs(1);
const HOST_A: Ipv4Addr = Ipv4Addr::new(10, 71, 0, 1);
const HOST_B: Ipv4Addr = Ipv4Addr::new(10, 71, 0, 2);
const HOST_K: Ipv4Addr = Ipv4Addr::new(10, 71, 0, 3);
/// The kernel bridge's address: with priority 4096 its identifier is 1000.020000007103.
const KERNEL_MAC: &str = "02:00:00:00:71:03";

/// The tests here time convergence: one at a time, so the figure is not CPU contention.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A bridge identifier as Linux prints it (`1000.2:0:0:0:71:3`) or vswitchd does
/// (`1000.020000007103`), as a number.
fn bridge_id(text: &str) -> u64 {
    let (priority, mac) = text.split_once('.').unwrap_or_else(|| panic!("bridge id {text:?}"));
    let priority = u64::from_str_radix(priority, 16).unwrap();
    let mac = if mac.contains(':') {
        mac.split(':').fold(0u64, |acc, b| (acc << 8) | u64::from_str_radix(b, 16).unwrap())
    } else {
        u64::from_str_radix(mac, 16).unwrap()
    };
    (priority << 48) | mac
}

/// The kernel bridge's `linkinfo.info_data`.
fn kernel_bridge(ns: &str) -> Value {
    let out = ip_output(&["-n", ns, "-j", "-d", "link", "show", "br0"]);
    let all: Value = serde_json::from_str(&out).unwrap();
    all[0]["linkinfo"]["info_data"].clone()
}

/// A kernel bridge port's STP state (`forwarding`, `blocking`, ...).
fn kernel_port_state(ns: &str, dev: &str) -> String {
    let out = ip_output(&["-n", ns, "-j", "-d", "link", "show", dev]);
    let all: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    all[0]["linkinfo"]["info_slave_data"]["state"].as_str().unwrap_or("absent").to_string()
}

fn stp(daemon: &Daemon) -> Value {
    daemon.ctl_json(&["stp", "show"]).unwrap()
}

fn port<'a>(stp: &'a Value, name: &str) -> &'a Value {
    stp["ports"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap_or(&Value::Null)
}

/// `(role, state)` of a vswitchd port.
fn role_state(daemon: &Daemon, name: &str) -> (String, String) {
    let s = stp(daemon);
    let p = port(&s, name);
    (p["role"].as_str().unwrap_or("").to_string(), p["state"].as_str().unwrap_or("").to_string())
}

/// A broadcast frame with a marker no one else sends.
fn marked_broadcast(src: [u8; 6], marker: u8) -> Vec<u8> {
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&[0x88, 0xb5]);
    frame.extend_from_slice(&[0x57, 0x54, 0x50, marker]);
    frame.resize(64, 0);
    frame
}

fn is_marked(frame: &[u8], marker: u8) -> bool {
    frame.len() >= 18 && frame[12..14] == [0x88, 0xb5] && frame[14..18] == [0x57, 0x54, 0x50, marker]
}

#[test]
fn rstp_and_kernel_stp_triangle_breaks_the_loop_agrees_on_the_root_and_reconverges() {
    let _serial = one_at_a_time();
    with_tag(|tag| {
        let sw = [format!("st{tag}a"), format!("st{tag}b")];
        let kernel = format!("st{tag}k");
        let hosts = [format!("st{tag}ha"), format!("st{tag}hb")];
        let mut guard = NamespaceGuard::default();
        guard.create(&sw[0]);
        guard.create(&sw[1]);
        guard.create(&kernel);
        guard.adopt(&hosts[0]);
        guard.adopt(&hosts[1]);
        // The kernel bridge: 802.1D STP, the lowest priority (the root), short timers.
        ip(&["-n", &kernel, "link", "add", "br0", "type", "bridge", "stp_state", "1", "priority", "4096"]);
        ip(&["-n", &kernel, "link", "set", "br0", "type", "bridge", "forward_delay", "200", "hello_time", "100"]);
        ip(&["-n", &kernel, "link", "set", "br0", "type", "bridge", "max_age", "600"]);
        ip(&["-n", &kernel, "link", "set", "br0", "address", KERNEL_MAC]);
        ip(&["-n", &kernel, "addr", "add", &format!("{HOST_K}/24"), "dev", "br0"]);
        // The triangle's three cables.
        let cables = [("ab", &sw[0], "ba", &sw[1]), ("ak", &sw[0], "ka", &kernel), ("bk", &sw[1], "kb", &kernel)];
        for (a, a_ns, b, b_ns) in cables {
            ip(&["link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns]);
            ip(&["-n", a_ns, "link", "set", a, "up"]);
            ip(&["-n", b_ns, "link", "set", b, "up"]);
        }
        for dev in ["ka", "kb"] {
            ip(&["-n", &kernel, "link", "set", dev, "master", "br0"]);
        }
        ip(&["-n", &kernel, "link", "set", "br0", "up"]);
        let started = Instant::now();
        let mut daemons = Vec::new();
        // Switch A from the shipped fixture; B like it, with the default priority.
        let a_config = fixture(
            "stp-triangle-a.toml",
            &[("stp-a", &format!("stp{tag}a")), ("stp-host-a", &hosts[0]), ("stp-ha", &format!("h{tag}a"))],
        );
        daemons.push(Daemon::start(&sw[0], &a_config));
        let host = &hosts[1];
        let b_config = format!(
            r#"
[bridge]
name = "stp{tag}b"
threads = 1
stp = "rstp"
hello_secs = 1
forward_delay_secs = 4
max_age_secs = 6
[[netns]]
name = "{host}"
[[port]]
name = "ba"
type = "netdev"
device = "ba"
[[port]]
name = "bk"
type = "netdev"
device = "bk"
[[port]]
name = "h{tag}b"
type = "tap"
netns = "{host}"
address = "{HOST_B}/24"
edge = true
"#
        );
        daemons.push(Daemon::start(&sw[1], &b_config));
        let (a, b) = (&daemons[0], &daemons[1]);
        // Converged: the kernel bridge is everyone's root; B's link to A is its alternate.
        let root = bridge_id(kernel_bridge(&kernel)["bridge_id"].as_str().unwrap());
        wait_for("the tree to converge", 30 * SECOND, || {
            let converged = bridge_id(stp(a)["root_id"].as_str()?) == root
                && bridge_id(stp(b)["root_id"].as_str()?) == root
                && role_state(a, "ak") == ("root".into(), "forwarding".into())
                && role_state(a, "ab") == ("designated".into(), "forwarding".into())
                && role_state(b, "bk") == ("root".into(), "forwarding".into())
                && role_state(b, "ba") == ("alternate".into(), "discarding".into())
                && kernel_port_state(&kernel, "ka") == "forwarding"
                && kernel_port_state(&kernel, "kb") == "forwarding";
            converged.then_some(())
        });
        println!("converged {:?} after the switches started (kernel forward delay 2 s)", started.elapsed());
        let k = kernel_bridge(&kernel);
        assert_eq!(bridge_id(k["root_id"].as_str().unwrap()), root, "{k}");
        let (sa, sb) = (stp(a), stp(b));
        println!("A: {sa}\nB: {sb}");
        println!("vswitchctl stp show on A:\n{}", a.ctl_ok(&["stp", "show"]));
        println!("vswitchctl stp show on B:\n{}", b.ctl_ok(&["stp", "show"]));
        assert_eq!(sa["root_port"], "ak");
        assert_eq!(sb["root_port"], "bk");
        // The kernel speaks 802.1D: the ports toward it migrated; between the switches, RSTP.
        wait_for("802.1D toward the kernel", 10 * SECOND, || {
            (port(&stp(a), "ak")["protocol"] == "stp" && port(&stp(b), "bk")["protocol"] == "stp").then_some(())
        });
        assert_eq!(port(&sa, "ab")["protocol"], "rstp");
        assert_eq!(port(&sb, "ba")["protocol"], "rstp");
        assert_eq!(port(&sa, &format!("h{tag}a"))["edge"], true);

        // No storm: one broadcast from host A arrives once at host B and once at the kernel.
        wait_for("host A reaches the kernel's address", 10 * SECOND, || {
            (ping(&hosts[0], HOST_K, 1, SECOND) == 1).then_some(())
        });
        assert_eq!(ping(&hosts[0], HOST_B, 3, SECOND), 3);
        let at_b = Capture::open(&hosts[1], &format!("h{tag}b"));
        let at_k = Capture::open(&kernel, "br0");
        let sender = RawPort::open(&hosts[0], &format!("h{tag}a"));
        sender.send(&marked_broadcast([0x02, 0, 0, 0, 0x71, 0x0a], 1));
        let seen_b = at_b.collect(2 * SECOND, |f| is_marked(f, 1)).len();
        let seen_k = at_k.collect(Duration::from_millis(100), |f| is_marked(f, 1)).len();
        println!("one broadcast: host B saw it {seen_b} time(s), the kernel bridge {seen_k} time(s)");
        assert_eq!((seen_b, seen_k), (1, 1));
        let drops = a.ctl_json(&["port", "show", "ab"]).unwrap();
        println!("A's ab counters: {drops}");

        // Cut B's root link: its alternate toward A takes over.
        let cut = Instant::now();
        ip(&["-n", &sw[1], "link", "del", "bk"]);
        wait_for("B's alternate port to take over", 10 * SECOND, || {
            (role_state(b, "ba") == ("root".into(), "forwarding".into())).then_some(())
        });
        let reconverged = cut.elapsed();
        wait_for("host B to reach the kernel through A", 10 * SECOND, || {
            (ping(&hosts[1], HOST_K, 1, Duration::from_millis(100)) == 1).then_some(())
        });
        let traffic = cut.elapsed();
        println!(
            "link cut: B's alternate port forwarding after {} ms, host B reaching the kernel bridge after {} ms",
            reconverged.as_millis(),
            traffic.as_millis()
        );
        assert!(reconverged < SECOND, "RSTP reconvergence took {reconverged:?}");
        let sb = stp(b);
        assert_eq!(sb["root_port"], "ba");
        assert_eq!(bridge_id(sb["root_id"].as_str().unwrap()), root);
        assert!(sb["topology_changes"].as_u64().unwrap() >= 1, "{sb}");
        assert_eq!(ping(&hosts[1], HOST_A, 3, SECOND), 3);
        drop(daemons);
        drop(guard);
    });
}

#[test]
fn bpdus_are_forwarded_with_stp_off() {
    with_tag(|tag| {
        let sw = format!("sf{tag}s");
        let hosts = [format!("sf{tag}h1"), format!("sf{tag}h2")];
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.adopt(&hosts[0]);
        guard.adopt(&hosts[1]);
        let topology = format!(
            r#"
[bridge]
name = "sf{tag}"
threads = 1
[[netns]]
name = "{h1}"
[[netns]]
name = "{h2}"
[[port]]
name = "f{tag}1"
type = "tap"
netns = "{h1}"
[[port]]
name = "f{tag}2"
type = "tap"
netns = "{h2}"
"#,
            h1 = hosts[0],
            h2 = hosts[1]
        );
        let daemon = Daemon::start(&sw, &topology);
        assert_eq!(daemon.ctl_json(&["stp", "show"]).unwrap()["mode"], "off");
        wait_for("both ports", 10 * SECOND, || (daemon.port_names().len() == 2).then_some(()));
        for (i, host) in hosts.iter().enumerate() {
            ip(&["-n", host, "link", "set", &format!("f{tag}{}", i + 1), "up"]);
        }
        // A switch behind port 1 sends a BPDU; the one behind port 2 sees it.
        let mut bpdu = vec![0x01, 0x80, 0xc2, 0, 0, 0, 0x02, 0, 0, 0, 0x5f, 0x01, 0, 38, 0x42, 0x42, 0x03, 0, 0, 0, 0];
        bpdu.resize(60, 0);
        let capture = Capture::open(&hosts[1], &format!("f{tag}2"));
        let sender = RawPort::open(&hosts[0], &format!("f{tag}1"));
        for _ in 0..3 {
            sender.send(&bpdu);
        }
        let seen = capture.collect(SECOND, |f| f.len() >= 21 && f[..6] == bpdu[..6] && f[6..12] == bpdu[6..12]);
        assert!(!seen.is_empty(), "the BPDU was not forwarded");
        assert_eq!(&seen[0][..21], &bpdu[..21]);
        drop(daemon);
        drop(guard);
    });
}

#[test]
fn edge_ports_bpdu_guard_and_ports_joining_and_leaving_at_run_time() {
    with_tag(|tag| {
        let sw = format!("sg{tag}s");
        let hosts = [format!("sg{tag}h1"), format!("sg{tag}h2"), format!("sg{tag}h3")];
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        for h in &hosts {
            guard.adopt(h);
        }
        let topology = format!(
            r#"
[bridge]
name = "sg{tag}"
threads = 1
stp = "rstp"
[[netns]]
name = "{h1}"
[[netns]]
name = "{h2}"
[[port]]
name = "g{tag}1"
type = "tap"
netns = "{h1}"
address = "10.72.0.1/24"
edge = true
[[port]]
name = "g{tag}2"
type = "tap"
netns = "{h2}"
address = "10.72.0.2/24"
edge = true
bpdu_guard = true
"#,
            h1 = hosts[0],
            h2 = hosts[1]
        );
        let daemon = Daemon::start(&sw, &topology);
        let (p1, p2, p3) = (format!("g{tag}1"), format!("g{tag}2"), format!("g{tag}3"));
        // Edge ports forward at once: no forward delay (15 s by default) before the first ping.
        let s = stp(&daemon);
        assert_eq!(s["mode"], "rstp");
        assert_eq!(s["root_id"], s["bridge_id"]);
        assert_eq!(port(&s, &p1)["state"], "forwarding");
        assert_eq!(ping(&hosts[0], Ipv4Addr::new(10, 72, 0, 2), 3, SECOND), 3);
        // A port added at run time joins the tree; as a non-edge port it starts discarding.
        daemon.ctl_ok(&["port", "add", &p3, "tap", &format!("netns={}", hosts[2]), "address=10.72.0.3/24"]);
        let s = stp(&daemon);
        assert_eq!(port(&s, &p3)["role"], "designated");
        assert_eq!(port(&s, &p3)["state"], "discarding");
        assert_eq!(ping(&hosts[2], Ipv4Addr::new(10, 72, 0, 1), 1, SECOND), 0);
        // ... and it sends BPDUs to whatever bridge might be behind it.
        let capture = Capture::open(&hosts[2], &p3);
        let bpdus = capture.collect(3 * SECOND, |f| f.len() >= 21 && f[..6] == [0x01, 0x80, 0xc2, 0, 0, 0]);
        assert!(!bpdus.is_empty(), "no BPDU on a designated port");
        assert_eq!(bpdus[0][14..21], [0x42, 0x42, 0x03, 0, 0, 2, 2], "an RST BPDU");
        // Its spanning tree settings change live (the port is re-created with them).
        daemon.ctl_ok(&["port", "set", &p3, "stp_cost=7", "stp_priority=32"]);
        let s = stp(&daemon);
        assert_eq!((port(&s, &p3)["cost"].as_u64(), port(&s, &p3)["priority"].as_u64()), (Some(7), Some(32)), "{s}");
        daemon.ctl_ok(&["port", "del", &p3]);
        assert!(port(&stp(&daemon), &p3).is_null(), "the removed port left the tree");
        // A BPDU on the guarded port disables it.
        let sender = RawPort::open(&hosts[1], &p2);
        sender.send(&bpdus[0]);
        wait_for("BPDU guard", 5 * SECOND, || (port(&stp(&daemon), &p2)["guard_tripped"] == true).then_some(()));
        let s = stp(&daemon);
        assert_eq!(port(&s, &p2)["role"], "disabled");
        assert_eq!(port(&s, &p2)["state"], "discarding");
        let shown = daemon.ctl_json(&["port", "show", &p2]).unwrap();
        assert_eq!(shown["ports"][0]["drops"]["bpdu_guard"], 1, "{shown}");
        assert_eq!(ping(&hosts[0], Ipv4Addr::new(10, 72, 0, 2), 1, SECOND), 0);
        let text = daemon.ctl_ok(&["stp", "show"]);
        println!("{text}");
        assert!(text.contains("disabled (bpdu guard)"), "{text}");
        assert!(text.contains("bridge id"), "{text}");
        drop(daemon);
        drop(guard);
    });
}

#[test]
fn stp_mode_breaks_two_parallel_links_to_a_kernel_bridge() {
    let _serial = one_at_a_time();
    with_tag(|tag| {
        let sw = format!("sp{tag}s");
        let kernel = format!("sp{tag}k");
        let host = format!("sp{tag}h");
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.create(&kernel);
        guard.adopt(&host);
        ip(&["-n", &kernel, "link", "add", "br0", "type", "bridge", "stp_state", "1", "priority", "4096"]);
        ip(&["-n", &kernel, "link", "set", "br0", "type", "bridge", "forward_delay", "200", "hello_time", "100"]);
        ip(&["-n", &kernel, "link", "set", "br0", "type", "bridge", "max_age", "600"]);
        ip(&["-n", &kernel, "addr", "add", "10.73.0.3/24", "dev", "br0"]);
        for (a, b) in [("p1", "k1"), ("p2", "k2")] {
            ip(&["link", "add", a, "netns", &sw, "type", "veth", "peer", "name", b, "netns", &kernel]);
            ip(&["-n", &sw, "link", "set", a, "up"]);
            ip(&["-n", &kernel, "link", "set", b, "master", "br0"]);
            ip(&["-n", &kernel, "link", "set", b, "up"]);
        }
        ip(&["-n", &kernel, "link", "set", "br0", "up"]);
        // 802.1D only: no handshake, every port on timers. p2 is cheaper, so it is the root port.
        let topology = format!(
            r#"
[bridge]
name = "sp{tag}"
threads = 1
stp = "stp"
[[netns]]
name = "{host}"
[[port]]
name = "p1"
type = "netdev"
device = "p1"
[[port]]
name = "p2"
type = "netdev"
device = "p2"
stp_cost = 100
[[port]]
name = "t{tag}"
type = "tap"
netns = "{host}"
address = "10.73.0.1/24"
edge = true
"#
        );
        let started = Instant::now();
        let daemon = Daemon::start(&sw, &topology);
        let root = bridge_id(kernel_bridge(&kernel)["bridge_id"].as_str().unwrap());
        wait_for("the tree to converge", 30 * SECOND, || {
            let s = stp(&daemon);
            (bridge_id(s["root_id"].as_str()?) == root
                && role_state(&daemon, "p2") == ("root".into(), "forwarding".into())
                && role_state(&daemon, "p1") == ("alternate".into(), "discarding".into()))
                .then_some(())
        });
        let took = started.elapsed();
        println!("802.1D: converged after {took:?} (forward delay 2 s: two of them on the root port)");
        assert!(took >= 4 * SECOND, "a root port in STP mode waits two forward delays: {took:?}");
        let s = stp(&daemon);
        assert_eq!(s["mode"], "stp");
        assert_eq!(port(&s, "p1")["protocol"], "stp");
        assert_eq!(port(&s, "p2")["cost"], 100);
        assert_eq!(s["root_path_cost"], 100);
        wait_for("the kernel's ports to forward", 10 * SECOND, || {
            (kernel_port_state(&kernel, "k1") == "forwarding" && kernel_port_state(&kernel, "k2") == "forwarding")
                .then_some(())
        });
        // No storm over the two parallel links: one broadcast reaches the kernel once.
        wait_for("the host to reach the kernel", 10 * SECOND, || {
            (ping(&host, Ipv4Addr::new(10, 73, 0, 3), 1, SECOND) == 1).then_some(())
        });
        let at_k = Capture::open(&kernel, "br0");
        RawPort::open(&host, &format!("t{tag}")).send(&marked_broadcast([0x02, 0, 0, 0, 0x73, 0x01], 2));
        let seen = at_k.collect(2 * SECOND, |f| is_marked(f, 2)).len();
        println!("one broadcast over two parallel links: the kernel bridge saw it {seen} time(s)");
        assert_eq!(seen, 1);
        drop(daemon);
        drop(guard);
    });
}
