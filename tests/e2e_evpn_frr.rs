//! EVPN with real FRR (Debian's `frr`: zebra + bgpd per namespace): three vswitchd hosts with
//! `control = "evpn"` VXLAN ports and no `remotes`, iBGP between them over an underlay bridge.
//! They reach each other, a broadcast reaches each other VTEP once, unicast to a known MAC
//! goes to its VTEP only, a MAC that moves is followed, and a host whose FRR stops is
//! withdrawn. Prints the figures of the EVPN note.

mod support;

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const SECOND: Duration = Duration::from_secs(1);
const ZEBRA: &str = "/usr/lib/frr/zebra";
const BGPD: &str = "/usr/lib/frr/bgpd";

/// One FRR instance (zebra + bgpd) in a namespace, with its own directory for its config,
/// pid files and sockets. Dropped, it stops.
struct Frr {
    dir: PathBuf,
    ns: String,
}

impl Frr {
    fn start(ns: &str, me: &str, peers: &[&str]) -> Frr {
        Frr::start_with(ns, me, peers, false)
    }

    /// As [`Frr::start`]; with `reflector`, the peers are route-reflector clients.
    fn start_with(ns: &str, me: &str, peers: &[&str], reflector: bool) -> Frr {
        assert!(std::path::Path::new(ZEBRA).exists(), "FRR is not installed ({ZEBRA} is missing): apt-get install frr");
        let dir = PathBuf::from(format!("/tmp/vswitchd-frr-{ns}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut conf = format!(
            "frr defaults datacenter\nhostname {ns}\nlog file {}/frr.log\n\
             router bgp 65000\n bgp router-id {me}\n no bgp default ipv4-unicast\n",
            dir.display()
        );
        for p in peers {
            conf.push_str(&format!(
                " neighbor {p} remote-as 65000\n neighbor {p} timers 1 3\n neighbor {p} timers connect 1\n"
            ));
        }
        conf.push_str(" address-family l2vpn evpn\n");
        for p in peers {
            conf.push_str(&format!("  neighbor {p} activate\n"));
            if reflector {
                conf.push_str(&format!("  neighbor {p} route-reflector-client\n"));
            }
        }
        conf.push_str("  advertise-all-vni\n exit-address-family\n");
        fs::write(dir.join("frr.conf"), conf).unwrap();
        let status = Command::new("chown").args(["-R", "frr:frr"]).arg(&dir).status().unwrap();
        assert!(status.success());
        let frr = Frr { dir, ns: ns.to_string() };
        frr.daemon(ZEBRA, "zebra");
        frr.daemon(BGPD, "bgpd");
        frr
    }

    fn daemon(&self, program: &str, name: &str) {
        let d = self.dir.display().to_string();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, program, "-d", "-N", &self.ns, "-P", "0"])
            .args(["-f", &format!("{d}/frr.conf"), "-i", &format!("{d}/{name}.pid"), "-z", &format!("{d}/zserv.api")])
            .args(["--vty_socket", &d, "--log", &format!("file:{d}/{name}.log")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name} in {}: {}", self.ns, String::from_utf8_lossy(&out.stderr));
    }

    fn vtysh(&self, command: &str) -> String {
        let out = Command::new("vtysh")
            .args(["--vty_socket", &self.dir.display().to_string(), "-c", command])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Established BGP sessions.
    fn sessions(&self) -> usize {
        let out = self.vtysh("show bgp l2vpn evpn summary json");
        let Ok(v) = serde_json::from_str::<Value>(&out) else { return 0 };
        v["peers"].as_object().map_or(0, |p| p.values().filter(|p| p["state"] == "Established").count())
    }

    fn stop(&mut self) {
        for name in ["bgpd", "zebra"] {
            if let Ok(pid) = fs::read_to_string(self.dir.join(format!("{name}.pid"))) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
                    let gone = Instant::now();
                    while std::path::Path::new(&format!("/proc/{pid}")).exists() && gone.elapsed() < 3 * SECOND {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
            let _ = fs::remove_file(self.dir.join(format!("{name}.pid")));
        }
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            for log in ["zebra.log", "bgpd.log", "frr.log"] {
                if let Ok(text) = fs::read_to_string(self.dir.join(log)) {
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    eprintln!("--- {} {log} (last lines, newest first)\n{}", self.ns, tail.join("\n"));
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn vxlan_show(daemon: &Daemon) -> Value {
    daemon.ctl_json(&["vxlan", "show"]).unwrap()["tunnels"][0].clone()
}

fn remote<'a>(vx: &'a Value, addr: &str) -> Option<&'a Value> {
    vx["remotes"].as_array().unwrap().iter().find(|r| r["address"] == addr && r["configured"] == true)
}

fn tx_to(d: &Daemon, addr: &str) -> u64 {
    vxlan_show(d)["remotes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == addr)
        .map_or(0, |r| r["tx_packets"].as_u64().unwrap())
}

fn pinned(d: &Daemon, mac: &str) -> Option<String> {
    let vx = vxlan_show(d);
    vx["macs"].as_array().unwrap().iter().find(|m| m["mac"] == mac).map(|m| m["remote"].as_str().unwrap().to_string())
}

fn vtep(i: usize) -> String {
    format!("192.0.2.{}", i + 1)
}

/// A gratuitous ARP from `mac` for `ip`.
fn garp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&ip.octets());
    f.resize(60, 0);
    f
}

#[test]
fn three_hosts_learn_each_other_from_bgp_evpn() {
    require_privileges();
    let tag = unique_tag();
    let sides = ["a", "b", "c"];
    let sw: Vec<String> = sides.iter().map(|s| format!("ef{tag}{s}")).collect();
    let hosts: Vec<String> = sides.iter().map(|s| format!("ef{tag}h{s}")).collect();
    // A "VM" that lives on A, then moves to C.
    let vm = [format!("ef{tag}ma"), format!("ef{tag}mc")];
    let underlay = format!("ef{tag}ul");
    let mut guard = NamespaceGuard::default();
    guard.create(&underlay);
    ip(&["-n", &underlay, "link", "add", "ulbr", "type", "bridge"]);
    ip(&["-n", &underlay, "link", "set", "ulbr", "up"]);
    for (i, ns) in sw.iter().enumerate() {
        guard.create(ns);
        let port = format!("p{i}");
        ip(&["link", "add", "ul", "netns", ns, "type", "veth", "peer", "name", &port, "netns", &underlay]);
        ip(&["-n", &underlay, "link", "set", &port, "master", "ulbr"]);
        ip(&["-n", &underlay, "link", "set", &port, "up"]);
        ip(&["-n", ns, "addr", "add", &format!("{}/24", vtep(i)), "dev", "ul"]);
        ip(&["-n", ns, "link", "set", "ul", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    for h in hosts.iter().chain(&vm) {
        guard.create(h);
        sysctl_in(h, "net.ipv6.conf.all.disable_ipv6", "1");
        sysctl_in(h, "net.ipv6.conf.default.disable_ipv6", "1");
    }
    let addr = |i: usize| Ipv4Addr::new(10, 95, 0, i as u8 + 1);
    let vm_ip = Ipv4Addr::new(10, 95, 0, 50);
    let vm_mac = [0x02, 0xee, 0, 0, 0, 0x50];
    let vm_mac_text = "02:ee:00:00:00:50";
    let mut daemons = Vec::new();
    for i in 0..3 {
        let mut t = format!(
            "[bridge]\nname = \"ef{tag}{i}\"\n[[netns]]\nname = \"{}\"\n\
             [[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nvni = 600\nlocal = \"{}\"\ncontrol = \"evpn\"\n\
             learning = false\nmtu = 1450\n\
             [[port]]\nname = \"ef{tag}t{i}\"\ntype = \"tap\"\nnetns = \"{}\"\naddress = \"{}/24\"\nmtu = 1450\n",
            hosts[i],
            vtep(i),
            hosts[i],
            addr(i)
        );
        // The VM's interface exists on A (with its address) and on C (idle, same MAC).
        if i != 1 {
            let which = if i == 0 { 0 } else { 1 };
            t.push_str(&format!(
                "[[netns]]\nname = \"{}\"\n[[port]]\nname = \"ef{tag}v{i}\"\ntype = \"tap\"\nnetns = \"{}\"\nmac = \"{vm_mac_text}\"\nmtu = 1450\n",
                vm[which], vm[which]
            ));
            if i == 0 {
                t.push_str(&format!("address = \"{vm_ip}/24\"\n"));
            }
        }
        daemons.push(Daemon::start(&sw[i], &t));
    }
    // Host 3 (K) is the kernel's own VTEP under FRR, the stock EVPN setup; it joins last.
    let peers = |i: usize| -> Vec<String> { (0..4).filter(|&j| j != i).map(vtep).collect() };
    let started = Instant::now();
    let mut frr: Vec<Frr> = Vec::new();
    for (i, ns) in sw.iter().enumerate().take(2) {
        let p = peers(i);
        frr.push(Frr::start(ns, &vtep(i), &p.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    // A and B: session, then reachability, with no remotes written anywhere.
    wait_for("A's session to B", 20 * SECOND, || (frr[0].sessions() >= 1).then_some(()));
    let session = started.elapsed();
    wait_for("A to reach B", 10 * SECOND, || (ping(&hosts[0], addr(1), 1, SECOND / 5) == 1).then_some(()));
    println!("EVPN figure: A+B: FRR start -> BGP session {:?}; -> A reaches B {:?}", session, started.elapsed());

    // C joins: time from its BGP sessions to full reachability.
    let p = peers(2);
    frr.push(Frr::start(&sw[2], &vtep(2), &p.iter().map(String::as_str).collect::<Vec<_>>()));
    wait_for("C's sessions", 20 * SECOND, || (frr[2].sessions() >= 2).then_some(()));
    let c_session = Instant::now();
    wait_for("C to flood to A and B", 10 * SECOND, || {
        let vx = vxlan_show(&daemons[2]);
        (remote(&vx, &vtep(0)).is_some() && remote(&vx, &vtep(1)).is_some()).then_some(())
    });
    println!("EVPN figure: C's BGP sessions up -> C floods to A and B: {:?}", c_session.elapsed());
    wait_for("C to reach A and B, and A and B C", 10 * SECOND, || {
        let all =
            [(2, 0), (2, 1), (0, 2), (1, 2)].iter().all(|&(from, to)| ping(&hosts[from], addr(to), 1, SECOND / 5) == 1);
        all.then_some(())
    });
    println!("EVPN figure: C's BGP sessions up -> full reachability: {:?}", c_session.elapsed());
    for (i, d) in daemons.iter().enumerate() {
        let vx = vxlan_show(d);
        for j in (0..3).filter(|&j| j != i) {
            assert!(remote(&vx, &vtep(j)).is_some(), "host {i} floods to {}: {vx}", vtep(j));
        }
    }

    // A broadcast from A reaches each other VTEP exactly once.
    let (b0, c0) = (tx_to(&daemons[0], &vtep(1)), tx_to(&daemons[0], &vtep(2)));
    let raw = RawPort::open(&hosts[0], &format!("ef{tag}t0"));
    raw.send(&garp([0x02, 0xaa, 0, 0, 0, 1], Ipv4Addr::new(10, 95, 0, 99)));
    wait_for("the broadcast to go out", 2 * SECOND, || (tx_to(&daemons[0], &vtep(2)) > c0).then_some(()));
    std::thread::sleep(SECOND / 5);
    let copies = (tx_to(&daemons[0], &vtep(1)) - b0, tx_to(&daemons[0], &vtep(2)) - c0);
    assert_eq!(copies, (1, 1), "one copy to each other VTEP");
    println!("EVPN figure: flood copies per broadcast, 3 hosts: EVPN {} (a static full mesh: 2)", copies.0 + copies.1);

    // Unicast to B's MAC (a type-2 route) goes to B's VTEP only.
    let mac_b = ip_output(&["-n", &hosts[1], "-br", "link", "show", &format!("ef{tag}t1")])
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    wait_for("B's MAC from BGP on A", 10 * SECOND, || (pinned(&daemons[0], &mac_b)? == vtep(1)).then_some(()));
    let c0 = tx_to(&daemons[0], &vtep(2));
    assert_eq!(ping(&hosts[0], addr(1), 5, 2 * SECOND), 5);
    assert_eq!(tx_to(&daemons[0], &vtep(2)), c0, "unicast to B's MAC must not reach C");

    // The VM on A is known at B; then it moves to C.
    ping(&vm[0], addr(1), 1, SECOND);
    wait_for("the VM's MAC behind A at B", 10 * SECOND, || {
        (pinned(&daemons[1], vm_mac_text)? == vtep(0)).then_some(())
    });
    assert_eq!(ping(&hosts[1], vm_ip, 1, SECOND), 1, "B reaches the VM on A");
    ip(&["-n", &vm[0], "link", "set", &format!("ef{tag}v0"), "down"]);
    ip(&["-n", &vm[1], "addr", "add", &format!("{vm_ip}/24"), "dev", &format!("ef{tag}v2")]);
    let moved = Instant::now();
    RawPort::open(&vm[1], &format!("ef{tag}v2")).send(&garp(vm_mac, vm_ip));
    wait_for("the move to be known at B", 10 * SECOND, || (pinned(&daemons[1], vm_mac_text)? == vtep(2)).then_some(()));
    let known = moved.elapsed();
    wait_for("B to reach the VM on C", 5 * SECOND, || (ping(&hosts[1], vm_ip, 1, SECOND / 5) == 1).then_some(()));
    println!("EVPN figure: MAC move: known at B after {known:?}; reached on C after {:?}", moved.elapsed());
    assert!(known < SECOND, "a moved MAC is followed within a second (took {known:?})");

    // C's FRR stops: C is withdrawn from A's and B's flood lists.
    frr[2].stop();
    let stopped = Instant::now();
    for d in &daemons[..2] {
        wait_for("C to be withdrawn", 10 * SECOND, || remote(&vxlan_show(d), &vtep(2)).is_none().then_some(()));
    }
    println!("EVPN figure: C's FRR stopped -> withdrawn at A and B after {:?}", stopped.elapsed());
    assert_eq!(ping(&hosts[0], addr(1), 1, SECOND), 1, "A and B still reach each other");

    // Interop: K, the kernel's VXLAN device (on vswitchd's UDP port) in a kernel bridge, with
    // its own FRR; it and vswitchd's hosts reach each other.
    let k = format!("ef{tag}k");
    let hk = format!("ef{tag}hk");
    guard.create(&k);
    guard.create(&hk);
    sysctl_in(&hk, "net.ipv6.conf.all.disable_ipv6", "1");
    ip(&["link", "add", "ul", "netns", &k, "type", "veth", "peer", "name", "p3", "netns", &underlay]);
    ip(&["-n", &underlay, "link", "set", "p3", "master", "ulbr"]);
    ip(&["-n", &underlay, "link", "set", "p3", "up"]);
    ip(&["-n", &k, "addr", "add", &format!("{}/24", vtep(3)), "dev", "ul"]);
    for dev in ["ul", "lo"] {
        ip(&["-n", &k, "link", "set", dev, "up"]);
    }
    ip(&["-n", &k, "link", "add", "br600", "type", "bridge"]);
    ip(&["-n", &k, "link", "set", "br600", "addrgenmode", "none"]);
    let vx = format!("vx600 type vxlan id 600 dstport 4789 local {} nolearning", vtep(3));
    ip(&[&["-n", &k, "link", "add"][..], &vx.split(' ').collect::<Vec<_>>()].concat());
    ip(&["-n", &k, "link", "set", "vx600", "master", "br600", "addrgenmode", "none"]);
    ip(&["-n", &k, "link", "set", "vx600", "type", "bridge_slave", "neigh_suppress", "off", "learning", "off"]);
    ip(&["link", "add", "eth0", "netns", &hk, "type", "veth", "peer", "name", "pk", "netns", &k]);
    ip(&["-n", &k, "link", "set", "pk", "master", "br600"]);
    for dev in ["pk", "vx600", "br600"] {
        ip(&["-n", &k, "link", "set", dev, "up"]);
    }
    ip(&["-n", &hk, "link", "set", "eth0", "mtu", "1450"]);
    ip(&["-n", &hk, "addr", "add", &format!("{}/24", addr(3)), "dev", "eth0"]);
    ip(&["-n", &hk, "link", "set", "eth0", "up"]);
    let p = peers(3);
    let k_started = Instant::now();
    frr.push(Frr::start(&k, &vtep(3), &p.iter().map(String::as_str).collect::<Vec<_>>()));
    wait_for("the kernel VTEP's host and A's and B's to reach each other", 15 * SECOND, || {
        let all = [(3, 0), (3, 1), (0, 3), (1, 3)].iter().all(|&(from, to)| {
            let (ns, dst) = (if from == 3 { &hk } else { &hosts[from] }, addr(to));
            ping(ns, dst, 1, SECOND / 5) == 1
        });
        all.then_some(())
    });
    println!(
        "EVPN figure: kernel VTEP under FRR started -> it and vswitchd's hosts reach each other: {:?}",
        k_started.elapsed()
    );
    assert!(remote(&vxlan_show(&daemons[0]), &vtep(3)).is_some(), "A floods to the kernel VTEP");
    let fdb = Command::new("bridge").args(["-n", &k, "fdb", "show", "dev", "vx600"]).output().unwrap();
    let fdb = String::from_utf8_lossy(&fdb.stdout);
    let mac_a = ip_output(&["-n", &hosts[0], "-br", "link", "show", &format!("ef{tag}t0")])
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    assert!(
        fdb.lines().any(|l| l.starts_with(&mac_a) && l.contains(&format!("dst {}", vtep(0)))),
        "the kernel VTEP has A's host MAC from vswitchd's advertisement: {fdb}"
    );
    drop(frr);
    for d in &mut daemons {
        let (status, _) = d.terminate();
        assert!(status.success());
    }
}

/// Sum of the datagrams vswitchd sent to its remotes.
fn tx_total(d: &Daemon) -> u64 {
    vxlan_show(d)["remotes"].as_array().unwrap().iter().map(|r| r["tx_packets"].as_u64().unwrap()).sum()
}

/// Copies of one broadcast from `host` (on `tap`) that `d` sends into the underlay.
fn copies_of_one_broadcast(d: &Daemon, host: &str, tap: &str) -> u64 {
    let before = tx_total(d);
    RawPort::open(host, tap).send(&garp([0x02, 0xaa, 0, 0, 0, 2], Ipv4Addr::new(10, 96, 0, 99)));
    wait_for("the broadcast to go out", 2 * SECOND, || (tx_total(d) > before).then_some(()));
    std::thread::sleep(SECOND / 2);
    tx_total(d) - before
}

/// The figure for 16 hosts: flood copies per broadcast with EVPN (16 vswitchd hosts, FRR on
/// each, iBGP through a route reflector) and with a static full mesh. Heavy (16 switches and
/// 34 FRR daemons): run by hand with `--ignored --nocapture`.
#[test]
#[ignore]
fn sixteen_hosts_flood_copies() {
    require_privileges();
    const N: usize = 16;
    let tag = unique_tag();
    let underlay = format!("eg{tag}ul");
    let rr = format!("eg{tag}rr");
    let sw: Vec<String> = (0..N).map(|i| format!("eg{tag}s{i}")).collect();
    let host = format!("eg{tag}h");
    let mut guard = NamespaceGuard::default();
    guard.create(&underlay);
    ip(&["-n", &underlay, "link", "add", "ulbr", "type", "bridge"]);
    ip(&["-n", &underlay, "link", "set", "ulbr", "up"]);
    let addr = |i: usize| format!("192.0.2.{}", i + 1);
    let rr_addr = "192.0.2.100".to_string();
    for (i, ns) in sw.iter().chain([&rr]).enumerate() {
        guard.create(ns);
        let port = format!("p{i}");
        ip(&["link", "add", "ul", "netns", ns, "type", "veth", "peer", "name", &port, "netns", &underlay]);
        ip(&["-n", &underlay, "link", "set", &port, "master", "ulbr"]);
        ip(&["-n", &underlay, "link", "set", &port, "up"]);
        let a = if i < N { addr(i) } else { rr_addr.clone() };
        ip(&["-n", ns, "addr", "add", &format!("{a}/24"), "dev", "ul"]);
        ip(&["-n", ns, "link", "set", "ul", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    guard.create(&host);
    sysctl_in(&host, "net.ipv6.conf.all.disable_ipv6", "1");
    let tap = format!("eg{tag}t");
    let mut daemons = Vec::new();
    for (i, ns) in sw.iter().enumerate() {
        let mut t = format!(
            "[bridge]\nname = \"eg{tag}{i}\"\n[[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nvni = 700\nlocal = \"{}\"\n\
             control = \"evpn\"\nlearning = false\nmtu = 1450\n",
            addr(i)
        );
        if i == 0 {
            t.push_str(&format!(
                "[[netns]]\nname = \"{host}\"\n[[port]]\nname = \"{tap}\"\ntype = \"tap\"\nnetns = \"{host}\"\nmtu = 1450\n"
            ));
        }
        daemons.push(Daemon::start(ns, &t));
    }
    let clients: Vec<String> = (0..N).map(addr).collect();
    let mut frr = vec![Frr::start_with(&rr, &rr_addr, &clients.iter().map(String::as_str).collect::<Vec<_>>(), true)];
    for (i, ns) in sw.iter().enumerate() {
        frr.push(Frr::start(ns, &addr(i), &[&rr_addr]));
    }
    let started = Instant::now();
    wait_for("host 0 to flood to the 15 others", 60 * SECOND, || {
        let vx = vxlan_show(&daemons[0]);
        (vx["remotes"].as_array().unwrap().iter().filter(|r| r["configured"] == true).count() == N - 1).then_some(())
    });
    println!("EVPN figure: 16 hosts: every VTEP known at host 0 {:?} after FRR started", started.elapsed());
    let evpn = copies_of_one_broadcast(&daemons[0], &host, &tap);
    drop(frr);
    for d in &mut daemons {
        d.terminate();
    }
    // The same host with a static full mesh: the 15 others written in `remotes`.
    let remotes: Vec<String> = (1..N).map(|i| format!("\"{}\"", addr(i))).collect();
    let t = format!(
        "[bridge]\nname = \"eg{tag}0\"\n[[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nvni = 700\nlocal = \"{}\"\n\
         remotes = [{}]\nlearning = false\nmtu = 1450\n\
         [[netns]]\nname = \"{host}\"\n[[port]]\nname = \"{tap}\"\ntype = \"tap\"\nnetns = \"{host}\"\nmtu = 1450\n",
        addr(0),
        remotes.join(", ")
    );
    let mut d = Daemon::start(&sw[0], &t);
    let mesh = copies_of_one_broadcast(&d, &host, &tap);
    d.terminate();
    println!("EVPN figure: flood copies per broadcast, 16 hosts: EVPN {evpn}, static full mesh {mesh}");
    assert_eq!((evpn, mesh), (N as u64 - 1, N as u64 - 1));
}
