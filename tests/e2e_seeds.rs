//! The tutorials' walkthroughs (`shared/seeds/`), with vswitchd in place of the kernel bridge
//! and 802.1Q driver, end to end on real devices: veth pairs, netdev attachment, VLAN trunks
//! between two vswitchd instances, and containers reaching "the internet" through NAT. Traffic
//! is generated in Rust from inside the namespaces; TCP runs across every port type, which is
//! what catches checksum and offload mistakes.

mod support;

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use support::*;
use vswitchd_control::netns;

const SECOND: Duration = Duration::from_secs(1);

/// Starts the "Switching" seed (`fixtures/seed-veth-bridge.toml`) in fresh namespaces named
/// from `prefix`, with `bridge_extra` added to its `[bridge]` section. Returns the guard, the
/// daemon, and the switch's, red's and blue's namespaces.
fn start_veth_seed(prefix: &str, bridge_extra: &str) -> (NamespaceGuard, Daemon, [String; 3]) {
    require_privileges();
    let tag = unique_tag();
    let names = [format!("{prefix}{tag}sw"), format!("{prefix}{tag}red"), format!("{prefix}{tag}blue")];
    let topology = fixture("seed-veth-bridge.toml", &[("red", &names[1]), ("blue", &names[2])]).replacen(
        "name = \"v-net-0\"\n",
        &format!("name = \"v-net-0\"\n{bridge_extra}\n"),
        1,
    );
    assert!(topology.contains(bridge_extra));
    let mut guard = NamespaceGuard::default();
    guard.create(&names[0]);
    guard.adopt(&names[1]);
    guard.adopt(&names[2]);
    let daemon = Daemon::start(&names[0], &topology);
    (guard, daemon, names)
}

/// Seed "Switching": red and blue on bridge v-net-0 over veth pairs, vswitchd in place of the
/// kernel bridge.
#[test]
fn seed_red_and_blue_on_v_net_0_over_veth_pairs() {
    let (_guard, mut daemon, [sw, red, blue]) = start_veth_seed("vs", "");

    let (a, b) = (Ipv4Addr::new(192, 168, 15, 1), Ipv4Addr::new(192, 168, 15, 2));
    assert_eq!(ping(&red, b, 3, 2 * SECOND), 3);
    assert_eq!(ping(&blue, a, 3, 2 * SECOND), 3);
    // veths hand over GSO super-frames with partial checksums: both directions, content checked.
    assert_eq!(tcp_transfer(&blue, b, &red, 50 << 20), 50 << 20);
    assert_eq!(tcp_transfer(&red, a, &blue, 10 << 20), 10 << 20);

    let show = daemon.ctl_json(&["show"]).unwrap();
    assert_eq!(show["ports"][0]["type"], "veth");
    assert_eq!(show["ports"][0]["link"], "up");
    let ports = daemon.ctl_json(&["port", "show"]).unwrap();
    for p in ports["ports"].as_array().unwrap() {
        let drops = p["drops"].as_object().unwrap();
        assert!(drops.values().all(|n| n == 0), "unexpected drops: {p}");
    }
    // The switch-side ends stay silent: no IPv6 link-local address on them.
    let addrs = ip_output(&["-n", &sw, "-6", "addr", "show", "dev", "veth-red-br"]);
    assert!(!addrs.contains("inet6"), "{addrs}");

    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "{stderr}");
    assert!(!netns_exists(&red) && !netns_exists(&blue));
    let left = ip_output(&["-n", &sw, "-o", "link"]);
    assert_eq!(left.lines().count(), 1, "links left behind: {left}");
}

/// The same seed on two worker threads: each veth port is a fanout group of two packet
/// sockets, so each flow reaches one worker; flows in both directions, content checked.
#[test]
fn seed_red_and_blue_over_veth_pairs_on_two_worker_threads() {
    require_privileges();
    let (_guard, mut daemon, [_, red, blue]) = start_veth_seed("vf", "threads = 2");

    let (a, b) = (Ipv4Addr::new(192, 168, 15, 1), Ipv4Addr::new(192, 168, 15, 2));
    assert_eq!(ping(&red, b, 2, 2 * SECOND), 2);
    // The kernel spreads flows by their hash, random per connection: 8 flows leave one worker
    // idle once in a great while (seen once in CI), so a round that did is tried again, with
    // new connections; a fanout that does not spread at all fails all three.
    let mut show = serde_json::Value::Null;
    for round in 0..3u16 {
        std::thread::scope(|scope| {
            let transfers: Vec<_> = (0..8u16)
                .map(|i| {
                    let (red, blue) = (&red, &blue);
                    let port = 5401 + round * 8 + i;
                    scope.spawn(move || {
                        if i % 2 == 0 {
                            tcp_transfer_on(blue, b, port, red, 4 << 20)
                        } else {
                            tcp_transfer_on(red, a, port, blue, 4 << 20)
                        }
                    })
                })
                .collect();
            for transfer in transfers {
                assert_eq!(transfer.join().expect("transfer"), 4 << 20);
            }
        });
        show = daemon.ctl_json(&["show"]).unwrap();
        let frames: Vec<u64> =
            show["bridge"]["worker_rx_frames"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
        if frames.len() == 2 && frames.iter().all(|&n| n > 100) {
            break;
        }
        println!("round {round}: one worker was left idle: {frames:?}");
    }
    let frames: Vec<u64> =
        show["bridge"]["worker_rx_frames"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
    assert!(frames.len() == 2 && frames.iter().all(|&n| n > 100), "both workers forwarded: {show}");
    let ports = daemon.ctl_json(&["port", "show"]).unwrap();
    for p in ports["ports"].as_array().unwrap() {
        let drops = p["drops"].as_object().unwrap();
        assert!(drops.values().all(|n| n == 0), "unexpected drops: {p}");
    }
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "{stderr}");
    assert!(!netns_exists(&red) && !netns_exists(&blue));
}

/// A veth port and a TAP port on one bridge: super-frames from the veth are written to the
/// TAP with their offload header, plain frames go the other way.
#[test]
fn tcp_between_a_veth_port_and_a_tap_port() {
    require_privileges();
    let tag = unique_tag();
    let (sw, h1, h2) = (format!("vm{tag}sw"), format!("vm{tag}h1"), format!("vm{tag}h2"));
    let topology = format!(
        r#"
[bridge]
name = "mix{tag}"
[[netns]]
name = "{h1}"
[[netns]]
name = "{h2}"
[[port]]
name = "v{tag}v"
type = "veth"
netns = "{h1}"
address = "10.50.0.1/24"
[[port]]
name = "v{tag}t"
type = "tap"
netns = "{h2}"
address = "10.50.0.2/24"
"#
    );
    let mut guard = NamespaceGuard::default();
    guard.create(&sw);
    guard.adopt(&h1);
    guard.adopt(&h2);
    let _daemon = Daemon::start(&sw, &topology);
    let (a, b) = (Ipv4Addr::new(10, 50, 0, 1), Ipv4Addr::new(10, 50, 0, 2));
    assert_eq!(tcp_transfer(&h2, b, &h1, 30 << 20), 30 << 20, "veth -> tap");
    assert_eq!(tcp_transfer(&h1, a, &h2, 30 << 20), 30 << 20, "tap -> veth");
}

/// Seed "container network": container4 and container5 on br0 (10.201.0.0/24), the host
/// reaching them through br0's own address 10.201.0.1 (an `internal` port), default routes in
/// the containers, and "the internet" played by an `outside` namespace behind NAT masquerade
/// in the router namespace vswitchd runs in. Nothing touches the root namespace.
#[test]
fn seed_containers_on_br0_reach_the_outside_through_nat() {
    require_privileges();
    if std::process::Command::new("nft").arg("--version").output().is_err() {
        panic!(
            "this test needs nft (Debian package nftables) for the NAT in its router namespace; .ci/run installs it"
        );
    }
    let tag = unique_tag();
    let (router, c4, c5, outside) =
        (format!("vc{tag}rt"), format!("vc{tag}c4"), format!("vc{tag}c5"), format!("vc{tag}out"));
    let topology = fixture("seed-containers-br0.toml", &[("container4", &c4), ("container5", &c5)]);
    let mut guard = NamespaceGuard::default();
    guard.create(&router);
    guard.create(&outside);
    guard.adopt(&c4);
    guard.adopt(&c5);
    // The uplink from the router to the outside world, and the outside world itself.
    let (up_r, up_o) = (format!("u{tag}r"), format!("u{tag}o"));
    ip(&["link", "add", &up_r, "netns", &router, "type", "veth", "peer", "name", &up_o, "netns", &outside]);
    ip(&["-n", &router, "addr", "add", "198.51.100.1/24", "dev", &up_r]);
    ip(&["-n", &outside, "addr", "add", "198.51.100.2/24", "dev", &up_o]);
    ip(&["-n", &outside, "addr", "add", "203.0.113.8/32", "dev", "lo"]);
    for (ns, dev) in [(&router, &up_r), (&outside, &up_o)] {
        ip(&["-n", ns, "link", "set", dev, "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    ip(&["-n", &router, "route", "add", "default", "via", "198.51.100.2"]);
    sysctl_in(&router, "net.ipv4.ip_forward", "1");
    let nft = |args: &str| {
        let status = std::process::Command::new("ip")
            .args(["netns", "exec", &router, "nft"])
            .args(args.split(' '))
            .status()
            .unwrap();
        assert!(status.success(), "nft {args}");
    };
    nft("add table ip nat");
    nft("add chain ip nat post { type nat hook postrouting priority 100 ; }");
    nft(&format!("add rule ip nat post ip saddr 10.201.0.0/24 oifname {up_r} masquerade"));

    let _daemon = Daemon::start(&router, &topology);
    let gw = Ipv4Addr::new(10, 201, 0, 1);
    let (ip4, ip5, internet) =
        (Ipv4Addr::new(10, 201, 0, 4), Ipv4Addr::new(10, 201, 0, 5), Ipv4Addr::new(203, 0, 113, 8));
    assert_eq!(ping(&c4, ip5, 2, 2 * SECOND), 2, "container4 -> container5");
    assert_eq!(ping(&c5, ip4, 2, 2 * SECOND), 2, "container5 -> container4");
    assert_eq!(ping(&router, ip4, 2, 2 * SECOND), 2, "host -> container4 through br0");
    assert_eq!(ping(&c4, gw, 2, 2 * SECOND), 2, "container4 -> its gateway");
    assert_eq!(ping(&c4, internet, 2, 2 * SECOND), 2, "container4 -> the internet");

    // The outside world sees the router's address, not the container's: NAT did its job.
    let listener = netns::run_in(&outside, move || TcpListener::bind((internet, 8080))).unwrap().unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, peer) = listener.accept().unwrap();
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut stream, &mut buf).unwrap();
        (peer.ip(), buf.len())
    });
    let sent = netns::run_in(&c5, move || -> std::io::Result<usize> {
        let mut stream = TcpStream::connect_timeout(&(internet, 8080).into(), 5 * SECOND)?;
        let data = vec![7u8; 4 << 20];
        std::io::Write::write_all(&mut stream, &data)?;
        Ok(data.len())
    })
    .unwrap()
    .unwrap();
    let (peer, received) = server.join().unwrap();
    assert_eq!(received, sent);
    assert_eq!(peer, Ipv4Addr::new(198, 51, 100, 1), "the outside should see the masqueraded address");
}

/// Seed "VLAN": one link split into VLAN 2 and VLAN 3. This kernel has no 8021q module, so two
/// vswitchd instances are joined by a veth trunk, with hosts in VLAN 2 and 3 on each side.
#[test]
fn vlans_2_and_3_over_a_trunk_between_two_vswitchd_instances() {
    require_privileges();
    let tag = unique_tag();
    let (sw_a, sw_b) = (format!("vv{tag}a"), format!("vv{tag}b"));
    let host = |side: &str, vlan: u16| format!("vv{tag}{side}{vlan}");
    let ip_of = |side: &str, vlan: u16| Ipv4Addr::new(10, 0, 0, if side == "a" { 10 } else { 20 } + vlan as u8);
    let (trunk_a, trunk_b) = ("trunk-a", "trunk-b"); // as the fixtures name them, inside our namespaces
    let mut guard = NamespaceGuard::default();
    guard.create(&sw_a);
    guard.create(&sw_b);
    for side in ["a", "b"] {
        for vlan in [2, 3] {
            guard.adopt(&host(side, vlan));
        }
    }
    ip(&["link", "add", trunk_a, "netns", &sw_a, "type", "veth", "peer", "name", trunk_b, "netns", &sw_b]);
    ip(&["-n", &sw_a, "link", "set", trunk_a, "up"]);
    ip(&["-n", &sw_b, "link", "set", trunk_b, "up"]);
    let topology = |side: &str| {
        let (n2, n3) = (host(side, 2), host(side, 3));
        fixture(&format!("seed-vlan-{side}.toml"), &[(&format!("vlan2-{side}"), &n2), (&format!("vlan3-{side}"), &n3)])
    };
    let daemon_a = Daemon::start(&sw_a, &topology("a"));
    let _daemon_b = Daemon::start(&sw_b, &topology("b"));

    // Same VLAN: through. Other VLAN, same subnet: nothing.
    assert_eq!(ping(&host("a", 2), ip_of("b", 2), 2, 2 * SECOND), 2, "VLAN 2 across the trunk");
    assert_eq!(ping(&host("a", 3), ip_of("b", 3), 2, 2 * SECOND), 2, "VLAN 3 across the trunk");
    assert_eq!(ping(&host("a", 2), ip_of("b", 3), 2, SECOND / 2), 0, "VLAN 2 must not reach VLAN 3");
    assert_eq!(ping(&host("b", 3), ip_of("a", 2), 2, SECOND / 2), 0, "VLAN 3 must not reach VLAN 2");
    assert_eq!(ping(&host("a", 2), ip_of("a", 3), 2, SECOND / 2), 0, "nor on the same switch");

    // On the wire between the switches, frames carry the right tags.
    let a2 = ip_of("a", 2);
    let trunk = Capture::open(&sw_b, trunk_b);
    ping(&host("a", 2), ip_of("b", 2), 3, SECOND);
    ping(&host("a", 3), ip_of("b", 3), 3, SECOND);
    let is_icmp_from_a =
        |f: &[u8]| f.len() > 38 && f[12..14] == [0x81, 0x00] && f[16..18] == [0x08, 0x00] && f[27] == 1;
    let frames = trunk.collect(SECOND / 2, is_icmp_from_a);
    let vid_of = |f: &Vec<u8>| u16::from_be_bytes([f[14], f[15]]) & 0x0fff;
    let src_of = |f: &Vec<u8>| Ipv4Addr::new(f[30], f[31], f[32], f[33]);
    assert!(frames.iter().any(|f| vid_of(f) == 2), "no VLAN 2 frames on the trunk");
    assert!(frames.iter().any(|f| vid_of(f) == 3), "no VLAN 3 frames on the trunk");
    for f in &frames {
        let expected = if src_of(f) == a2 { 2 } else { 3 };
        assert_eq!(vid_of(f), expected, "frame from {} tagged {}", src_of(f), vid_of(f));
    }

    // TCP across a TAP, the trunk (netdev ports on both sides) and a TAP.
    assert_eq!(tcp_transfer(&host("b", 2), ip_of("b", 2), &host("a", 2), 20 << 20), 20 << 20);

    let vlan2 = daemon_a.ctl_json(&["fdb", "show", "--vlan", "2"]).unwrap();
    let entries = vlan2["entries"].as_array().unwrap();
    assert!(entries.len() >= 2, "{vlan2}");
    assert!(entries.iter().all(|e| e["vlan"] == 2));
    let show = daemon_a.ctl_json(&["show"]).unwrap();
    assert_eq!(show["ports"][0]["vlan"], "trunk 2,3");
    assert_eq!(show["ports"][1]["vlan"], "access 2");
    let ports = daemon_a.ctl_json(&["port", "show", "tap-vlan2-a"]).unwrap();
    assert_eq!(ports["ports"][0]["drops"]["vlan_not_allowed"], 0);
}

/// A netdev port whose interface goes down, disappears and comes back: reported, counted,
/// the rest of the switch unaffected, and the port recovers by itself.
#[test]
fn a_netdev_port_survives_its_interface_going_down_disappearing_and_returning() {
    netdev_port_survives(1);
}

/// The same with two workers: the returning interface gets a fresh fanout group, a socket for
/// each worker, and flows through either worker reach it.
#[test]
fn a_netdev_port_on_two_workers_survives_its_interface_returning() {
    netdev_port_survives(2);
}

fn netdev_port_survives(threads: usize) {
    require_privileges();
    let tag = unique_tag();
    let (sw, h1, h2, h3) = (format!("vn{tag}sw"), format!("vn{tag}h1"), format!("vn{tag}h2"), format!("vn{tag}h3"));
    let (dev, dev_host) = (format!("n{tag}d"), format!("n{tag}h"));
    let mut guard = NamespaceGuard::default();
    guard.create(&sw);
    guard.create(&h1);
    guard.adopt(&h2);
    guard.adopt(&h3);
    let plug_in = || {
        ip(&["link", "add", &dev, "netns", &sw, "type", "veth", "peer", "name", &dev_host, "netns", &h1]);
        // A fixed MAC, as a VM's NIC keeps across a reconnect (h2's ARP cache stays right).
        ip(&["-n", &h1, "link", "set", &dev_host, "address", "02:00:00:60:00:01"]);
        ip(&["-n", &h1, "addr", "add", "10.60.0.1/24", "dev", &dev_host]);
        ip(&["-n", &h1, "link", "set", &dev_host, "up"]);
        ip(&["-n", &sw, "link", "set", &dev, "up"]);
    };
    plug_in();
    let topology = format!(
        r#"
[bridge]
name = "nd{tag}"
threads = {threads}
[[netns]]
name = "{h2}"
[[netns]]
name = "{h3}"
[[port]]
name = "uplink"
type = "netdev"
device = "{dev}"
[[port]]
name = "v{tag}2"
type = "tap"
netns = "{h2}"
address = "10.60.0.2/24"
[[port]]
name = "v{tag}3"
type = "tap"
netns = "{h3}"
address = "10.60.0.3/24"
"#
    );
    let daemon = Daemon::start(&sw, &topology);
    let (a1, a3) = (Ipv4Addr::new(10, 60, 0, 1), Ipv4Addr::new(10, 60, 0, 3));
    let link = |daemon: &Daemon| daemon.ctl_json(&["show"]).unwrap()["ports"][0]["link"].as_str().unwrap().to_string();
    let wait_link = |state: &str| {
        wait_for(&format!("the uplink to be {state}"), 10 * SECOND, || (link(&daemon) == state).then_some(()));
    };
    assert_eq!(ping(&h2, a1, 2, 2 * SECOND), 2);
    assert_eq!(tcp_transfer(&h1, a1, &h2, 10 << 20), 10 << 20, "tap -> netdev");

    ip(&["-n", &sw, "link", "set", &dev, "down"]);
    wait_link("down");
    assert_eq!(ping(&h2, a1, 1, SECOND / 2), 0);
    assert_eq!(ping(&h2, a3, 2, 2 * SECOND), 2, "the other ports carry on");
    ip(&["-n", &sw, "link", "set", &dev, "up"]);
    wait_link("up");
    assert_eq!(ping(&h2, a1, 2, 2 * SECOND), 2, "back after link up");

    ip(&["-n", &sw, "link", "del", &dev]);
    wait_link("absent");
    assert_eq!(ping(&h3, Ipv4Addr::new(10, 60, 0, 2), 2, 2 * SECOND), 2, "the other ports carry on");
    plug_in();
    wait_link("up");
    assert_eq!(ping(&h2, a1, 2, 3 * SECOND), 2, "back after the interface returned");
    assert_eq!(tcp_transfer(&h2, Ipv4Addr::new(10, 60, 0, 2), &h1, 10 << 20), 10 << 20, "netdev -> tap");
    if threads > 1 {
        std::thread::scope(|scope| {
            let flows: Vec<_> = (0..6u16)
                .map(|i| {
                    let (h1, h2) = (&h1, &h2);
                    scope.spawn(move || tcp_transfer_on(h2, Ipv4Addr::new(10, 60, 0, 2), 5501 + i, h1, 2 << 20))
                })
                .collect();
            for flow in flows {
                assert_eq!(flow.join().expect("flow"), 2 << 20, "a flow after the return");
            }
        });
        let frames = daemon.ctl_json(&["show"]).unwrap()["bridge"]["worker_rx_frames"].clone();
        assert!(frames.as_array().unwrap().iter().all(|n| n.as_u64().unwrap() > 0), "{frames}");
    }

    let show = daemon.ctl_json(&["show"]).unwrap();
    assert!(show["ports"][0]["link_changes"].as_u64().unwrap() >= 4, "{show}");
    let ports = daemon.ctl_json(&["port", "show", "uplink"]).unwrap();
    assert!(ports["ports"][0]["drops"]["link_down"].as_u64().unwrap() > 0, "{ports}");
}
