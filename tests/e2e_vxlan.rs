//! VXLAN end to end: vswitchd as a VTEP against the Linux kernel's own vxlan device (both ways,
//! ping and TCP, each side learning the other's MACs), three vswitchd instances in a full mesh
//! over an underlay bridge with two VNIs kept apart, and garbage UDP from strangers.

mod support;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use serde_json::Value;
use support::*;
use vswitchd_control::netns;

const SECOND: Duration = Duration::from_secs(1);

fn vxlan_show(daemon: &Daemon) -> Value {
    daemon.ctl_json(&["vxlan", "show"]).unwrap()["tunnels"][0].clone()
}

fn mac_of(ns: &str, dev: &str) -> String {
    let out = ip_output(&["-n", ns, "-br", "link", "show", dev]);
    out.split_whitespace().nth(2).unwrap_or_default().to_string()
}

/// vswitchd (TAP host `ha`, VTEP 192.0.2.1) and the kernel's vxlan device on a kernel bridge
/// (host `hb`, VTEP 192.0.2.2) joined by a veth underlay; vswitchd runs `threads` workers.
/// Returns the guard, the daemon, and the namespaces: switch, kernel, ha, hb.
fn kernel_peer_lab(threads: usize) -> (NamespaceGuard, Daemon, [String; 4]) {
    require_privileges();
    let tag = unique_tag();
    let (sw, kernel, ha, hb) = (format!("vx{tag}sw"), format!("vx{tag}k"), format!("vx{tag}ha"), format!("vx{tag}hb"));
    let mut guard = NamespaceGuard::default();
    guard.create(&sw);
    guard.create(&kernel);
    guard.create(&hb);
    guard.adopt(&ha);
    // Underlay: one veth, 192.0.2.1 (vswitchd) and 192.0.2.2 (kernel), plus 192.0.2.66 on the
    // kernel side to play a stranger.
    ip(&["link", "add", "ul", "netns", &sw, "type", "veth", "peer", "name", "ul", "netns", &kernel]);
    ip(&["-n", &sw, "addr", "add", "192.0.2.1/24", "dev", "ul"]);
    ip(&["-n", &kernel, "addr", "add", "192.0.2.2/24", "dev", "ul"]);
    ip(&["-n", &kernel, "addr", "add", "192.0.2.66/24", "dev", "ul"]);
    for ns in [&sw, &kernel] {
        ip(&["-n", ns, "link", "set", "ul", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    // The kernel's VTEP (note dstport: the kernel's default is the pre-IANA 8472) on a kernel
    // bridge with host B behind it.
    ip(&[
        "-n",
        &kernel,
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        "4789",
        "local",
        "192.0.2.2",
        "remote",
        "192.0.2.1",
        "dev",
        "ul",
    ]);
    ip(&["-n", &kernel, "link", "add", "br0", "type", "bridge"]);
    ip(&["link", "add", "eth0", "netns", &hb, "type", "veth", "peer", "name", "pb", "netns", &kernel]);
    for dev in ["vx0", "pb"] {
        ip(&["-n", &kernel, "link", "set", dev, "master", "br0"]);
        ip(&["-n", &kernel, "link", "set", dev, "up"]);
    }
    ip(&["-n", &kernel, "link", "set", "br0", "up"]);
    ip(&["-n", &hb, "link", "set", "eth0", "mtu", "1450"]);
    ip(&["-n", &hb, "addr", "add", "10.90.0.2/24", "dev", "eth0"]);
    ip(&["-n", &hb, "link", "set", "eth0", "up"]);

    let topology = fixture("vxlan-kernel-peer.toml", &[("vtep-host", &ha)]).replacen(
        "[bridge]\n",
        &format!("[bridge]\nthreads = {threads}\n"),
        1,
    );
    assert!(topology.contains("threads = "));
    let daemon = Daemon::start(&sw, &topology);
    (guard, daemon, [sw, kernel, ha, hb])
}

/// Two workers: each serves the VXLAN port with its own socket (the kernel spreads the remote
/// VTEP's flows over them by UDP source port) and encapsulates what its TAP queue gives it;
/// both directions, sixteen flows at once (all on one socket: 1 in 2^15), content checked.
#[test]
fn two_workers_with_a_vxlan_port_against_the_kernels_vtep() {
    let (_guard, daemon, [_, _, ha, hb]) = kernel_peer_lab(2);
    let (a, b) = (Ipv4Addr::new(10, 90, 0, 1), Ipv4Addr::new(10, 90, 0, 2));
    assert_eq!(ping(&ha, b, 2, 2 * SECOND), 2);
    std::thread::scope(|scope| {
        let flows: Vec<_> = (0..16u16)
            .map(|i| {
                let (ha, hb) = (&ha, &hb);
                scope.spawn(move || {
                    if i % 2 == 0 {
                        tcp_transfer_on(hb, b, 5601 + i, ha, 1 << 20)
                    } else {
                        tcp_transfer_on(ha, a, 5601 + i, hb, 1 << 20)
                    }
                })
            })
            .collect();
        for flow in flows {
            assert_eq!(flow.join().expect("flow"), 1 << 20);
        }
    });
    let show = daemon.ctl_json(&["show"]).unwrap();
    let frames = show["bridge"]["worker_rx_frames"].clone();
    assert!(frames[1].as_u64().unwrap() > 0, "the second worker took some flows from the TAP: {show}");
    let ports = daemon.ctl_json(&["port", "show"]).unwrap();
    for p in ports["ports"].as_array().unwrap() {
        assert_eq!(p["drops"]["no_room"], 0, "no frame lost between workers: {p}");
        if p["name"] == "vx0" {
            let by_worker: Vec<u64> =
                p["worker_rx_frames"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
            assert!(
                by_worker.len() == 2 && by_worker.iter().all(|&n| n > 0),
                "both workers received from the tunnel: {p}"
            );
        }
    }
    // `vxlan show` adds up both workers' counters.
    let vx = vxlan_show(&daemon);
    let remote = &vx["remotes"][0];
    assert!(remote["rx_bytes"].as_u64().unwrap() >= 8 << 20, "what hb sent, counted on both workers: {vx}");
}

#[test]
fn interop_with_the_kernels_vxlan_device() {
    let (_guard, daemon, [_, kernel, ha, hb]) = kernel_peer_lab(1);
    let (a, b) = (Ipv4Addr::new(10, 90, 0, 1), Ipv4Addr::new(10, 90, 0, 2));
    assert_eq!(ping(&ha, b, 3, 2 * SECOND), 3, "vswitchd host -> kernel host");
    assert_eq!(ping(&hb, a, 3, 2 * SECOND), 3, "kernel host -> vswitchd host");
    assert_eq!(tcp_transfer(&hb, b, &ha, 20 << 20), 20 << 20, "TCP into the kernel's VTEP");
    assert_eq!(tcp_transfer(&ha, a, &hb, 20 << 20), 20 << 20, "TCP from the kernel's VTEP");
    // UDP super-frames (USO on the TAP) are cut into datagrams in software for the tunnel.
    assert_eq!(udp_gso_transfer(&hb, b, 6000, &ha, 1400, 200), 200, "UDP_SEGMENT into the kernel's VTEP");

    // Each side learned the other's host behind the other VTEP.
    let mac_a = mac_of(&ha, "tap-vtep");
    let mac_b = mac_of(&hb, "eth0");
    let bridge_fdb =
        std::process::Command::new("bridge").args(["-n", &kernel, "fdb", "show", "dev", "vx0"]).output().unwrap();
    let bridge_fdb = String::from_utf8_lossy(&bridge_fdb.stdout);
    assert!(bridge_fdb.lines().any(|l| l.contains(&mac_a) && l.contains("dst 192.0.2.1")), "kernel fdb: {bridge_fdb}");
    let fdb = daemon.ctl_json(&["fdb", "show", "--port", "vx0"]).unwrap();
    assert!(fdb["entries"].as_array().unwrap().iter().any(|e| e["mac"] == mac_b.as_str()), "{fdb}");
    let vx = vxlan_show(&daemon);
    assert!(
        vx["macs"].as_array().unwrap().iter().any(|m| m["mac"] == mac_b.as_str() && m["remote"] == "192.0.2.2"),
        "{vx}"
    );
    // Bytes, not packets: super-frames cross whole (a 64 KiB datagram counts once).
    let remote = &vx["remotes"][0];
    assert!(
        remote["rx_bytes"].as_u64().unwrap() > 20 << 20 && remote["tx_bytes"].as_u64().unwrap() > 20 << 20,
        "{remote}"
    );

    // Garbage: a well-formed packet from a stranger, and a malformed one from the real remote.
    let mut forged = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    forged.extend_from_slice(&[0xff; 6]);
    forged.extend_from_slice(&[0x02, 0x66, 0x66, 0x66, 0x66, 0x66, 0x08, 0x06]);
    forged.resize(8 + 60, 0);
    let mut malformed = forged.clone();
    malformed[0] = 0x0c;
    netns::run_in(&kernel, move || {
        let stranger = UdpSocket::bind("192.0.2.66:0").unwrap();
        stranger.send_to(&forged, "192.0.2.1:4789").unwrap();
        stranger.send_to(&[1, 2, 3], "192.0.2.1:4789").unwrap();
        let remote = UdpSocket::bind("192.0.2.2:0").unwrap();
        remote.send_to(&malformed, "192.0.2.1:4789").unwrap();
        remote.send_to(&[0x08, 0, 0], "192.0.2.1:4789").unwrap();
    })
    .unwrap();
    wait_for("the garbage to be counted", 5 * SECOND, || {
        let drops = vxlan_show(&daemon)["drops"].clone();
        (drops["vxlan_unknown_remote"] == 2 && drops["vxlan_bad_header"] == 2).then_some(())
    });
    let fdb = daemon.ctl_json(&["fdb", "show"]).unwrap().to_string();
    assert!(!fdb.contains("02:66:66:66:66:66"), "a stranger taught the FDB: {fdb}");
    let ports = daemon.ctl_json(&["port", "show"]).unwrap();
    for p in ports["ports"].as_array().unwrap() {
        assert_eq!(p["drops"]["no_segmentation"], 0, "{p}");
    }
    assert_eq!(ping(&ha, b, 1, 2 * SECOND), 1, "still forwarding");
}

#[test]
fn three_vteps_in_a_full_mesh_with_two_vnis_kept_apart() {
    require_privileges();
    let tag = unique_tag();
    let sides = ["a", "b", "c"];
    let sw: Vec<String> = sides.iter().map(|s| format!("vm{tag}{s}")).collect();
    let host = |s: usize, vlan: u16| format!("vm{tag}{}{vlan}", sides[s]);
    let underlay = format!("vm{tag}ul");
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
        ip(&["-n", ns, "addr", "add", &format!("192.0.2.{}/24", i + 1), "dev", "ul"]);
        ip(&["-n", ns, "link", "set", "ul", "up"]);
        for vlan in [10, 20] {
            // Hosts without IPv6: no background multicast (router solicitations, MLD) floods to
            // every remote while the test counts what went where.
            guard.create(&host(i, vlan));
            sysctl_in(&host(i, vlan), "net.ipv6.conf.all.disable_ipv6", "1");
            sysctl_in(&host(i, vlan), "net.ipv6.conf.default.disable_ipv6", "1");
        }
    }
    // Hosts in VLAN 10 are 10.91.0.1-3, in VLAN 20 10.91.0.101-103: one subnet, two VNIs.
    let address = |i: usize, vlan: u16| Ipv4Addr::new(10, 91, 0, (i + 1) as u8 + if vlan == 20 { 100 } else { 0 });
    let mut daemons = Vec::new();
    for i in 0..3 {
        let remotes: Vec<String> = (0..3).filter(|&j| j != i).map(|j| format!("\"192.0.2.{}\"", j + 1)).collect();
        let mut t = format!("[bridge]\nname = \"vm{tag}{}\"\n", sides[i]);
        for vlan in [10, 20] {
            t.push_str(&format!("[[netns]]\nname = \"{}\"\n", host(i, vlan)));
        }
        t.push_str(&format!(
            "[[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nvnis = [{{ vni = 100, vlan = 10 }}, {{ vni = 200, vlan = 20 }}]\n\
             local = \"192.0.2.{}\"\nremotes = [{}]\nmtu = 1450\n",
            i + 1,
            remotes.join(", ")
        ));
        for vlan in [10u16, 20] {
            t.push_str(&format!(
                "[[port]]\nname = \"v{tag}{}{vlan}\"\ntype = \"tap\"\nnetns = \"{}\"\naddress = \"{}/24\"\nmtu = 1450\nvlan = {vlan}\n",
                sides[i],
                host(i, vlan),
                address(i, vlan)
            ));
        }
        daemons.push(Daemon::start(&sw[i], &t));
    }
    let tx_to = |d: &Daemon, remote: &str| -> u64 {
        let vx = vxlan_show(d);
        let r = vx["remotes"].as_array().unwrap().iter().find(|r| r["address"] == remote).cloned().unwrap();
        r["tx_packets"].as_u64().unwrap()
    };

    // Head-end replication: A's first (broadcast) ARP goes to both B and C.
    assert_eq!(ping(&host(0, 10), address(2, 10), 2, 2 * SECOND), 2, "A10 -> C10");
    assert!(tx_to(&daemons[0], "192.0.2.2") >= 1 && tx_to(&daemons[0], "192.0.2.3") >= 1);
    // Learned: unicast to C10 now goes to C only.
    let to_b = tx_to(&daemons[0], "192.0.2.2");
    let to_c = tx_to(&daemons[0], "192.0.2.3");
    assert_eq!(ping(&host(0, 10), address(2, 10), 5, 2 * SECOND), 5);
    assert_eq!(tx_to(&daemons[0], "192.0.2.2"), to_b, "unicast to C must not reach B");
    assert!(tx_to(&daemons[0], "192.0.2.3") >= to_c + 5);
    let vx = vxlan_show(&daemons[0]);
    let mac_c10 = mac_of(&host(2, 10), &format!("v{tag}c10"));
    assert!(
        vx["macs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mac"] == mac_c10.as_str() && m["remote"] == "192.0.2.3" && m["vlan"] == 10),
        "{vx}"
    );
    assert_eq!(vx["vnis"][1]["vni"], 200);

    // The two VNIs are apart, although their hosts share a subnet.
    assert_eq!(ping(&host(0, 20), address(1, 20), 2, 2 * SECOND), 2, "A20 -> B20");
    assert_eq!(ping(&host(0, 10), address(1, 20), 2, SECOND / 2), 0, "VNI 100 must not reach VNI 200");
    assert_eq!(ping(&host(2, 20), address(0, 10), 2, SECOND / 2), 0, "VNI 200 must not reach VNI 100");
    assert_eq!(tcp_transfer(&host(1, 10), address(1, 10), &host(0, 10), 10 << 20), 10 << 20, "TCP A10 -> B10");
}

#[test]
fn an_ipv6_underlay() {
    require_privileges();
    let tag = unique_tag();
    let sw = [format!("v6{tag}a"), format!("v6{tag}b")];
    let hosts = [format!("v6{tag}ha"), format!("v6{tag}hb")];
    let mut guard = NamespaceGuard::default();
    for ns in &sw {
        guard.create(ns);
    }
    for h in &hosts {
        guard.adopt(h);
    }
    ip(&["link", "add", "ul", "netns", &sw[0], "type", "veth", "peer", "name", "ul", "netns", &sw[1]]);
    for (i, ns) in sw.iter().enumerate() {
        ip(&["-n", ns, "addr", "add", &format!("2001:db8::{}/64", i + 1), "dev", "ul", "nodad"]);
        ip(&["-n", ns, "link", "set", "ul", "up"]);
    }
    let mut daemons = Vec::new();
    for i in 0..2 {
        let topology = format!(
            "[bridge]\nname = \"v6{tag}{i}\"\n[[netns]]\nname = \"{}\"\n\
             [[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nvni = 7\nlocal = \"2001:db8::{}\"\nremotes = [\"2001:db8::{}\"]\nmtu = 1430\n\
             [[port]]\nname = \"v6{tag}{i}\"\ntype = \"tap\"\nnetns = \"{}\"\naddress = \"10.92.0.{}/24\"\nmtu = 1430\n",
            hosts[i],
            i + 1,
            2 - i,
            hosts[i],
            i + 1
        );
        daemons.push(Daemon::start(&sw[i], &topology));
    }
    let b = Ipv4Addr::new(10, 92, 0, 2);
    assert_eq!(ping(&hosts[0], b, 3, 2 * SECOND), 3);
    assert_eq!(tcp_transfer(&hosts[1], b, &hosts[0], 10 << 20), 10 << 20);
    let vx = vxlan_show(&daemons[0]);
    assert_eq!(vx["local"], "2001:db8::1");
    assert!(vx["remotes"][0]["tx_packets"].as_u64().unwrap() > 1000, "{vx}");
}
