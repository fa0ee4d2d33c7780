//! VXLAN path MTU and neighbour suppression end to end: two vswitchd VTEPs over a veth underlay
//! of MTU 1500, each with a TAP host of MTU 1500 — 50 bytes more than the tunnel carries. A
//! frame too big for the path is answered with ICMP "fragmentation needed" (as the kernel's
//! bridged vxlan device does since Linux 5.9), so the hosts' kernels learn the path MTU and TCP
//! completes instead of stalling. With `arp_suppress`, ARP requests and neighbour solicitations
//! for addresses known behind the tunnel are answered locally and never reach the underlay.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use serde_json::Value;
use support::*;
use vswitchd_control::netns;

const SECOND: Duration = Duration::from_secs(1);
const MAC_A: &str = "02:93:00:00:00:01";
const MAC_B: &str = "02:93:00:00:00:02";
const A: Ipv4Addr = Ipv4Addr::new(10, 93, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 93, 0, 2);

/// Two vswitchd VTEPs (192.0.2.1 and .2 on a veth underlay, MTU 1500), each with TAP host `ha`
/// / `hb` (10.93.0.1 / .2, MTU 1500, 2001:db8:93::1 / ::2). Returns the guard, the daemons and
/// the namespaces: switch A, switch B, host A, host B. `extra` goes into both VXLAN ports'
/// tables; the switches run `threads` workers.
fn lab(extra: &str, threads: [usize; 2]) -> (NamespaceGuard, [Daemon; 2], [String; 4]) {
    require_privileges();
    let tag = unique_tag();
    let sw = [format!("mt{tag}a"), format!("mt{tag}b")];
    let hosts = [format!("mt{tag}ha"), format!("mt{tag}hb")];
    let mut guard = NamespaceGuard::default();
    for ns in &sw {
        guard.create(ns);
    }
    for h in &hosts {
        guard.adopt(h);
    }
    ip(&["link", "add", "ul", "netns", &sw[0], "type", "veth", "peer", "name", "ul", "netns", &sw[1]]);
    for (i, ns) in sw.iter().enumerate() {
        ip(&["-n", ns, "addr", "add", &format!("192.0.2.{}/24", i + 1), "dev", "ul"]);
        ip(&["-n", ns, "link", "set", "ul", "mtu", "1500"]);
        ip(&["-n", ns, "link", "set", "ul", "up"]);
    }
    let macs = [MAC_A, MAC_B];
    let daemons = [0, 1].map(|i| {
        let topology = format!(
            "[bridge]\nname = \"mt{tag}{i}\"\nthreads = {threads}\n[[netns]]\nname = \"{host}\"\n\
             [[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nvni = 93\nlocal = \"192.0.2.{local}\"\nremotes = [\"192.0.2.{remote}\"]\n{extra}\n\
             [[port]]\nname = \"mt{tag}{i}\"\ntype = \"tap\"\nnetns = \"{host}\"\naddress = \"10.93.0.{local}/24\"\nmac = \"{mac}\"\n",
            host = hosts[i],
            local = i + 1,
            remote = 2 - i,
            mac = macs[i],
            threads = threads[i],
        );
        Daemon::start(&sw[i], &topology)
    });
    for (i, h) in hosts.iter().enumerate() {
        let dev = format!("mt{tag}{i}");
        ip(&["-n", h, "addr", "add", &format!("2001:db8:93::{}/64", i + 1), "dev", &dev, "nodad"]);
    }
    let [a, b] = sw;
    let [ha, hb] = hosts;
    (guard, daemons, [a, b, ha, hb])
}

fn vxlan_show(daemon: &Daemon) -> Value {
    daemon.ctl_json(&["vxlan", "show"]).unwrap()["tunnels"][0].clone()
}

/// The path MTU toward `dst` that host `ns`'s kernel has learned, if any.
fn learned_mtu(ns: &str, dst: Ipv4Addr) -> Option<u32> {
    let route = ip_output(&["-n", ns, "route", "get", &dst.to_string()]);
    let mut words = route.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

/// How long a probe's socket stays open for the "too big" reply to reach it.
const REPLY_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// Sends one UDP datagram of `payload` bytes with "don't fragment" from `ns` to `dst`; returns
/// the raw OS error of the send, if it failed.
fn send_df(ns: &str, dst: Ipv4Addr, payload: usize) -> Option<i32> {
    netns::run_in(ns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        // IP_MTU_DISCOVER = IP_PMTUDISC_DO: never fragment, refuse what the path MTU forbids.
        vswitchd_dataplane::sys::set_socket_option_int(socket.as_fd(), libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, 2)
            .unwrap();
        let r = socket.send_to(&vec![0x5a; payload], (dst, 9)).err().and_then(|e| e.raw_os_error());
        // Linux learns a path MTU from an ICMP "too big" only through the socket that sent the
        // packet (udp_err looks it up by the quoted ports): closed at once, it would miss a
        // reply that takes longer than the close. vswitchd's reply takes ~0.1 ms from another
        // core when it polls, so the socket waits for it as any sender expecting an answer does.
        std::thread::sleep(REPLY_WAIT);
        r
    })
    .expect("enter")
}

/// Sends one UDP datagram of `payload` bytes from 2001:db8:93::1 in `ns` to 2001:db8:93::2,
/// refusing to fragment it; returns the raw OS error of the send, if it failed.
fn send_df6(ns: &str, payload: usize) -> Option<i32> {
    netns::run_in(ns, move || {
        let socket = UdpSocket::bind("[2001:db8:93::1]:0").unwrap();
        // IPV6_MTU_DISCOVER = IPV6_PMTUDISC_DO: the host would otherwise fragment it itself.
        vswitchd_dataplane::sys::set_socket_option_int(socket.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, 2)
            .unwrap();
        let r = socket.send_to(&vec![0x5a; payload], "[2001:db8:93::2]:9").err().and_then(|e| e.raw_os_error());
        // Linux learns a path MTU from an ICMP "too big" only through the socket that sent the
        // packet (udp_err looks it up by the quoted ports): closed at once, it would miss a
        // reply that takes longer than the close. vswitchd's reply takes ~0.1 ms from another
        // core when it polls, so the socket waits for it as any sender expecting an answer does.
        std::thread::sleep(REPLY_WAIT);
        r
    })
    .expect("enter")
}

/// Whether the underlay `frame` is a VXLAN datagram carrying an ARP request (or, with `ns`, a
/// neighbour solicitation) from 192.0.2.1.
fn tunnelled_request(frame: &[u8], ns: bool) -> bool {
    let outer = frame.len() > 64 && frame[12..14] == [0x08, 0x00] && frame[23] == 17 && frame[26..30] == [192, 0, 2, 1];
    if !outer || frame[36..38] != 4789u16.to_be_bytes() {
        return false;
    }
    let inner = &frame[50..];
    match &inner[12..14] {
        [0x08, 0x06] => inner.len() >= 22 && inner[20..22] == [0, 1],
        [0x86, 0xdd] => ns && inner.len() > 54 && inner[20] == 58 && inner[54] == 135,
        _ => false,
    }
}

#[test]
fn a_full_size_host_mtu_over_a_full_size_underlay() {
    // Switch B, whose host sends TCP into the tunnel first, runs two workers: each refuses the
    // super-frames its TAP queue gives it and replies itself; `vxlan show` adds up both.
    let (_guard, [da, db], [_, _, ha, hb]) = lab("", [1, 2]);
    assert_eq!(ping(&ha, B, 2, 2 * SECOND), 2);

    // TCP from host B (TSO super-frames over its TAP), with neither host knowing better (each
    // announces an MSS for 1500-byte packets): B's segments are 1500-byte packets, each
    // super-frame of them refused with a reply, and the transfer completes at the smaller size.
    assert_eq!(learned_mtu(&hb, A), None);
    let started = std::time::Instant::now();
    assert_eq!(tcp_transfer(&ha, A, &hb, 4 << 20), 4 << 20, "TCP B -> A");
    println!("4 MiB B -> A, learning the path MTU on the way: {:?}", started.elapsed());
    assert_eq!(learned_mtu(&hb, A), Some(1450), "host B learned the path MTU");
    let vx = vxlan_show(&db);
    assert!(vx["stats"]["too_big_replies"].as_u64().unwrap_or_else(|| panic!("{vx}")) >= 1, "{vx}");
    assert!(vx["drops"]["vxlan_too_big"].as_u64().unwrap() >= 1, "the refused super-frames are counted: {vx}");

    // A single datagram with DF too big for the tunnel: vswitchd A cannot send it (the underlay
    // refuses), and answers "fragmentation needed, MTU 1450" on B's behalf. Host A's kernel
    // learns the path MTU, and refuses the next such send itself.
    assert_eq!(learned_mtu(&ha, B), None, "nothing learned yet");
    assert_eq!(send_df(&ha, B, 1472), None, "a 1500-byte packet leaves host A");
    wait_for("host A to learn the path MTU", 5 * SECOND, || {
        (learned_mtu(&ha, B) == Some(1450)).then_some(()).or_else(|| {
            send_df(&ha, B, 1472);
            None
        })
    });
    assert_eq!(send_df(&ha, B, 1472), Some(libc::EMSGSIZE), "host A now refuses it itself");
    assert_eq!(send_df(&ha, B, 1422), None, "a 1450-byte packet still goes");
    let vx = vxlan_show(&da);
    assert!(vx["stats"]["too_big_replies"].as_u64().unwrap_or_else(|| panic!("{vx}")) >= 1, "{vx}");
    assert!(vx["drops"]["vxlan_too_big"].as_u64().unwrap() >= 1, "{vx}");

    // IPv6 (never fragmented on the way): "packet too big", learned the same way.
    assert_eq!(send_df6(&ha, 1452), None, "a 1500-byte IPv6 packet leaves host A");
    wait_for("host A to learn the IPv6 path MTU", 5 * SECOND, || {
        (send_df6(&ha, 1452) == Some(libc::EMSGSIZE)).then_some(())
    });
    assert_eq!(send_df6(&ha, 1402), None, "a 1450-byte one still goes");
    let route = ip_output(&["-n", &ha, "-6", "route", "get", "2001:db8:93::2"]);
    assert!(route.contains("mtu 1450"), "{route}");

    let started = std::time::Instant::now();
    assert_eq!(tcp_transfer(&hb, B, &ha, 4 << 20), 4 << 20, "TCP A -> B");
    println!("4 MiB A -> B, path MTU known: {:?}", started.elapsed());
    // The replies are paced per sender: a burst, then ten a second.
    let stats = &vxlan_show(&db)["stats"];
    let sent = stats["too_big_replies"].as_u64().unwrap();
    assert!(sent <= 10 + 10 * 60, "{stats}");
    for (d, side) in [(&da, "A"), (&db, "B")] {
        let ports = d.ctl_json(&["port", "show"]).unwrap();
        for p in ports["ports"].as_array().unwrap() {
            assert_eq!(p["drops"]["no_segmentation"], 0, "{side}: {p}");
        }
    }
}

#[test]
fn arp_and_neighbour_solicitations_answered_for_addresses_behind_the_tunnel() {
    let (_guard, [da, _db], [_, b_switch, ha, hb]) = lab("arp_suppress = true", [2, 1]);
    let dev_a = ip_output(&["-n", &ha, "-br", "link"])
        .lines()
        .find_map(|l| l.split_whitespace().next().filter(|n| n.starts_with("mt")).map(str::to_string))
        .expect("host A's TAP");

    // The first request floods through the tunnel: nothing is known yet. B's answer comes back
    // through it and teaches vswitchd A where 10.93.0.2 is.
    let capture = Capture::open(&b_switch, "ul");
    assert_eq!(ping(&ha, B, 2, 2 * SECOND), 2);
    let flooded = capture.collect(SECOND / 2, |f| tunnelled_request(f, false));
    assert!(!flooded.is_empty(), "the first ARP request crossed the tunnel");
    assert_eq!(vxlan_show(&da)["stats"]["neigh_suppressed"], 0);

    // Host A forgets B and asks again: vswitchd A answers, and the underlay sees no request.
    ip(&["-n", &ha, "neigh", "flush", "dev", &dev_a]);
    let capture = Capture::open(&b_switch, "ul");
    assert_eq!(ping(&ha, B, 2, 2 * SECOND), 2, "answered locally, and the ping went through");
    let flooded = capture.collect(SECOND, |f| tunnelled_request(f, false));
    assert!(flooded.is_empty(), "ARP requests crossed the tunnel: {}", flooded.len());
    let neigh = ip_output(&["-n", &ha, "neigh", "show", &B.to_string()]);
    assert!(neigh.contains(MAC_B), "{neigh}");
    assert!(vxlan_show(&da)["stats"]["neigh_suppressed"].as_u64().unwrap() >= 1);
    let table = da.ctl(&["vxlan", "show"]).unwrap();
    assert!(table.contains("ARP/ND requests answered locally"), "{table}");

    // IPv6: a solicitation for B's address, answered by B through the tunnel the first time,
    // then by vswitchd A.
    let (a6, b6): (Ipv6Addr, Ipv6Addr) = ("2001:db8:93::1".parse().unwrap(), "2001:db8:93::2".parse().unwrap());
    let poke = |ns: &str| {
        netns::run_in(ns, move || {
            let s = UdpSocket::bind(SocketAddr::new(IpAddr::V6(a6), 0)).unwrap();
            let _ = s.send_to(b"hello", SocketAddr::new(IpAddr::V6(b6), 9));
        })
        .expect("enter")
    };
    let known = || {
        let n = ip_output(&["-n", &ha, "-6", "neigh", "show", &b6.to_string()]);
        (n.contains(MAC_B) && !n.contains("INCOMPLETE") && !n.contains("FAILED")).then_some(())
    };
    poke(&ha);
    wait_for("host A to resolve B's IPv6 address", 5 * SECOND, known);
    let _ = hb;
    let before = vxlan_show(&da)["stats"]["neigh_suppressed"].as_u64().unwrap();
    ip(&["-n", &ha, "-6", "neigh", "flush", "dev", &dev_a]);
    let capture = Capture::open(&b_switch, "ul");
    poke(&ha);
    wait_for("host A to resolve B's IPv6 address again", 5 * SECOND, known);
    let flooded = capture.collect(SECOND, |f| tunnelled_request(f, true));
    assert!(flooded.is_empty(), "solicitations crossed the tunnel: {}", flooded.len());
    assert!(vxlan_show(&da)["stats"]["neigh_suppressed"].as_u64().unwrap() > before);

    // Turned off live (in place: the port keeps its learned MACs): requests cross again.
    da.ctl_ok(&["port", "set", "vx0", "arp_suppress=false"]);
    let saved = da.ctl(&["save"]).unwrap();
    assert!(!saved.contains("arp_suppress"), "{saved}");
    assert!(!da.ctl_json(&["fdb", "show", "--port", "vx0"]).unwrap()["entries"].as_array().unwrap().is_empty());
    ip(&["-n", &ha, "neigh", "flush", "dev", &dev_a]);
    let capture = Capture::open(&b_switch, "ul");
    assert_eq!(ping(&ha, B, 2, 2 * SECOND), 2);
    assert!(!capture.collect(SECOND / 2, |f| tunnelled_request(f, false)).is_empty(), "flooded again");
}

/// vswitchd against the kernel's own vxlan device, both with MTU 1500 toward hosts of MTU 1500
/// over a 1500-byte underlay: each side tells its host the path MTU (the kernel since 5.9,
/// vswitchd the same way), so TCP completes both ways.
#[test]
fn a_full_size_host_mtu_against_the_kernels_vtep() {
    require_privileges();
    let tag = unique_tag();
    let (sw, kernel, ha, hb) = (format!("mk{tag}sw"), format!("mk{tag}k"), format!("mk{tag}ha"), format!("mk{tag}hb"));
    let mut guard = NamespaceGuard::default();
    guard.create(&sw);
    guard.create(&kernel);
    guard.create(&hb);
    guard.adopt(&ha);
    ip(&["link", "add", "ul", "netns", &sw, "type", "veth", "peer", "name", "ul", "netns", &kernel]);
    ip(&["-n", &sw, "addr", "add", "192.0.2.1/24", "dev", "ul"]);
    ip(&["-n", &kernel, "addr", "add", "192.0.2.2/24", "dev", "ul"]);
    for ns in [&sw, &kernel] {
        ip(&["-n", ns, "link", "set", "ul", "up"]);
    }
    // The kernel's VTEP at a full 1500 bytes too: without `dev`, which would cap its MTU at the
    // underlay's less the encapsulation. On a kernel bridge, with host B behind it.
    let vxlan = "vx0 type vxlan id 42 dstport 4789 local 192.0.2.2 remote 192.0.2.1";
    ip(&[&["-n", &kernel, "link", "add"][..], &vxlan.split(' ').collect::<Vec<_>>()].concat());
    ip(&["-n", &kernel, "link", "set", "vx0", "mtu", "1500"]);
    ip(&["-n", &kernel, "link", "add", "br0", "type", "bridge"]);
    ip(&["link", "add", "eth0", "netns", &hb, "type", "veth", "peer", "name", "pb", "netns", &kernel]);
    for dev in ["vx0", "pb"] {
        ip(&["-n", &kernel, "link", "set", dev, "master", "br0"]);
        ip(&["-n", &kernel, "link", "set", dev, "up"]);
    }
    ip(&["-n", &kernel, "link", "set", "br0", "up"]);
    ip(&["-n", &hb, "addr", "add", "10.93.0.2/24", "dev", "eth0"]);
    ip(&["-n", &hb, "link", "set", "eth0", "up"]);
    let topology = format!(
        "[bridge]\nname = \"mk{tag}\"\n[[netns]]\nname = \"{ha}\"\n\
         [[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nvni = 42\nlocal = \"192.0.2.1\"\nremotes = [\"192.0.2.2\"]\n\
         [[port]]\nname = \"mk{tag}\"\ntype = \"tap\"\nnetns = \"{ha}\"\naddress = \"10.93.0.1/24\"\n"
    );
    let daemon = Daemon::start(&sw, &topology);
    assert_eq!(ping(&ha, B, 2, 2 * SECOND), 2);
    assert_eq!(tcp_transfer(&hb, B, &ha, 4 << 20), 4 << 20, "TCP from vswitchd's host (vswitchd replies)");
    assert_eq!(learned_mtu(&ha, B), Some(1450), "vswitchd told host A");
    // Host A forgets (or it would announce the smaller MSS and B would never send too big).
    ip(&["-n", &ha, "route", "flush", "cache"]);
    assert_eq!(learned_mtu(&ha, B), None);
    assert_eq!(tcp_transfer(&ha, A, &hb, 4 << 20), 4 << 20, "TCP from the kernel's host (the kernel replies)");
    assert_eq!(learned_mtu(&hb, A), Some(1450), "the kernel's VTEP told host B");
    let vx = vxlan_show(&daemon);
    assert!(vx["stats"]["too_big_replies"].as_u64().unwrap_or_else(|| panic!("{vx}")) >= 1, "{vx}");
}
