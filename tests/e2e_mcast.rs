//! End to end: IGMP and MLD snooping with the real vswitchd binary, TAP ports in namespaces, and
//! real listeners: sockets that join groups, so the hosts' kernels send the reports and leaves
//! themselves (IGMPv3 and, forced, IGMPv2; MLDv2 and, forced, MLDv1). A sender in another
//! namespace sends to the group; members receive, a non-member's interface sees nothing of the
//! group's traffic, a leave stops delivery, and a removed port leaves the table.

mod support;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use support::*;
use vswitchd_control::netns;

const UDP_PORT: u16 = 5123;
const MARK: &[u8] = b"vswitchd-mcast-test";

/// Names for one test's topology: host `i` is namespace `hosts[i]` behind TAP port `ports[i]`.
struct Names {
    sw: String,
    hosts: Vec<String>,
    ports: Vec<String>,
}

impl Names {
    fn new(tag: &str, hosts: usize) -> Names {
        Names {
            sw: format!("vt{tag}sw"),
            hosts: (1..=hosts).map(|i| format!("vt{tag}h{i}")).collect(),
            ports: (1..=hosts).map(|i| format!("v{tag}p{i}")).collect(),
        }
    }

    fn ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 33, i as u8 + 1)
    }

    fn topology(&self, bridge: &str) -> String {
        let mut t = format!("[bridge]\nname = \"br{}\"\n{bridge}\n", &self.sw[2..8]);
        for h in &self.hosts {
            t.push_str(&format!("[[netns]]\nname = \"{h}\"\n\n"));
        }
        for (i, (h, p)) in self.hosts.iter().zip(&self.ports).enumerate() {
            t.push_str(&format!(
                "[[port]]\nname = \"{p}\"\ntype = \"tap\"\nnetns = \"{h}\"\naddress = \"{}/24\"\nmac = \"02:00:00:00:33:{:02x}\"\n\n",
                Names::ip(i),
                i + 1
            ));
        }
        t
    }

    fn start(&self, bridge: &str) -> (NamespaceGuard, Daemon) {
        let mut guard = NamespaceGuard::default();
        guard.create(&self.sw);
        for h in &self.hosts {
            guard.adopt(h);
        }
        let daemon = Daemon::start(&self.sw, &self.topology(bridge));
        (guard, daemon)
    }
}

/// A socket in a namespace that joined `group` on its interface and counts the test's
/// datagrams; it leaves the group when told, and closes on drop.
struct Listener {
    leave: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    got: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Listener {
    fn join(netns_name: &str, ifname: &str, local: Ipv4Addr, group: IpAddr) -> Listener {
        let (leave, stop, got) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ns, ifname) = (netns_name.to_string(), ifname.to_string());
        let (l, s, g) = (Arc::clone(&leave), Arc::clone(&stop), Arc::clone(&got));
        let thread = thread::spawn(move || {
            netns::run_in(&ns, move || {
                let index = nix::net::if_::if_nametoindex(ifname.as_str()).expect("interface index");
                let (domain, any): (Domain, SocketAddr) = match group {
                    IpAddr::V4(_) => (Domain::IPV4, (Ipv4Addr::UNSPECIFIED, UDP_PORT).into()),
                    IpAddr::V6(_) => (Domain::IPV6, (Ipv6Addr::UNSPECIFIED, UDP_PORT).into()),
                };
                let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).expect("udp socket");
                socket.set_reuse_address(true).unwrap();
                socket.bind(&SockAddr::from(any)).expect("bind");
                socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                match group {
                    IpAddr::V4(g) => socket.join_multicast_v4(&g, &local).expect("join v4"),
                    IpAddr::V6(g) => socket.join_multicast_v6(&g, index).expect("join v6"),
                }
                ready_tx.send(()).unwrap();
                let mut left = false;
                let mut buf = [0u8; 2048];
                while !s.load(Ordering::Relaxed) {
                    if l.load(Ordering::Relaxed) && !left {
                        match group {
                            IpAddr::V4(g) => socket.leave_multicast_v4(&g, &local).expect("leave v4"),
                            IpAddr::V6(g) => socket.leave_multicast_v6(&g, index).expect("leave v6"),
                        }
                        left = true;
                    }
                    if let Ok(n) = (&socket).read(&mut buf) {
                        if buf[..n].starts_with(MARK) {
                            g.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
            .expect("enter namespace");
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("listener joined");
        Listener { leave, stop, got, thread: Some(thread) }
    }

    fn got(&self) -> u64 {
        self.got.load(Ordering::Relaxed)
    }

    fn leave(&self) {
        self.leave.store(true, Ordering::Relaxed);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `count` marked datagrams to `group` out of `ifname` in `netns_name` (TTL/hop limit 1).
/// A send the kernel refuses (an IPv6 link-local address still tentative) is tried again.
fn send_to_group(netns_name: &str, ifname: &str, local: Ipv4Addr, group: IpAddr, count: usize) {
    let ifname = ifname.to_string();
    netns::run_in(netns_name, move || {
        let index = nix::net::if_::if_nametoindex(ifname.as_str()).expect("interface index");
        let socket = match group {
            IpAddr::V4(_) => {
                let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
                s.set_multicast_if_v4(&local).unwrap();
                s.set_multicast_ttl_v4(1).unwrap();
                s.set_multicast_loop_v4(false).unwrap();
                s
            }
            IpAddr::V6(_) => {
                let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
                s.set_multicast_if_v6(index).unwrap();
                s.set_multicast_hops_v6(1).unwrap();
                s.set_multicast_loop_v6(false).unwrap();
                s
            }
        };
        let to = SockAddr::from(SocketAddr::new(group, UDP_PORT));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut sent = 0;
        while sent < count {
            match socket.send_to(MARK, &to) {
                Ok(_) => sent += 1,
                Err(e) => assert!(Instant::now() < deadline, "cannot send to {group}: {e}"),
            }
            thread::sleep(Duration::from_millis(5));
        }
    })
    .expect("enter namespace");
}

/// Whether `frame` is one of the test's datagrams to `group`.
fn is_group_data(frame: &[u8], group: IpAddr) -> bool {
    let payload_has_mark = |p: &[u8]| p.windows(MARK.len()).any(|w| w == MARK);
    match (group, frame.get(12..14)) {
        (IpAddr::V4(g), Some([0x08, 0x00])) => {
            frame.len() > 34 && frame[23] == 17 && frame[30..34] == g.octets() && payload_has_mark(&frame[34..])
        }
        (IpAddr::V6(g), Some([0x86, 0xdd])) => {
            frame.len() > 54 && frame[20] == 17 && frame[38..54] == g.octets() && payload_has_mark(&frame[54..])
        }
        _ => false,
    }
}

/// The ports `mdb show --json` lists as members of `group`.
fn members(daemon: &Daemon, group: IpAddr) -> Vec<String> {
    let mdb = daemon.ctl_json(&["mdb", "show"]).expect("mdb show");
    let mut ports: Vec<String> = mdb["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["group"] == group.to_string().as_str())
        .map(|m| m["port"].as_str().unwrap().to_string())
        .collect();
    ports.sort();
    ports
}

fn wait_members(daemon: &Daemon, group: IpAddr, want: &[&String]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    wait_for(&format!("members of {group} to be {want:?}"), Duration::from_secs(10), || {
        (members(daemon, group) == want).then_some(())
    });
}

/// Waits until every listener counted `n` datagrams (they arrive within milliseconds).
fn wait_received(listeners: &[&Listener], n: u64, what: &str) {
    wait_for(what, Duration::from_secs(5), || listeners.iter().all(|l| l.got() >= n).then_some(()));
}

/// The scenario, for one group: host 0 sends, hosts 1 and 2 join (host 2 with the older protocol
/// version forced), host 3 never joins.
fn scenario(tag: &str, group: IpAddr, bridge: &str) {
    let names = Names::new(tag, 4);
    let (_guard, daemon) = names.start(bridge);
    let (h, p) = (&names.hosts, &names.ports);
    let older = match group {
        IpAddr::V4(_) => (format!("net.ipv4.conf.{}.force_igmp_version", p[2]), "2"),
        IpAddr::V6(_) => (format!("net.ipv6.conf.{}.force_mld_version", p[2]), "1"),
    };
    sysctl_in(&h[2], &older.0, older.1);
    let send = |count| send_to_group(&h[0], &p[0], Names::ip(0), group, count);

    // Before anyone joins, the group is unknown and floods: the non-member sees it (so the
    // captures below can see the group's traffic when it comes).
    let outsider = RawPort::open(&h[3], &p[3]);
    send(5);
    let seen = outsider.collect(Duration::from_millis(500), |f| is_group_data(f, group));
    assert_eq!(seen.len(), 5, "an unknown group floods to every port");

    let a = Listener::join(&h[1], &p[1], Names::ip(1), group);
    let b = Listener::join(&h[2], &p[2], Names::ip(2), group);
    wait_members(&daemon, group, &[&p[1], &p[2]]);
    let table = daemon.ctl(&["mdb", "show"]).unwrap();
    assert!(table.starts_with("VLAN"), "{table}");
    assert!(table.contains(&format!("{group}")) && table.contains(&format!("{},{}", p[1], p[2])), "{table}");

    send(20);
    wait_received(&[&a, &b], 20, "both members to receive 20 datagrams");
    let seen = outsider.collect(Duration::from_millis(500), |f| is_group_data(f, group));
    assert!(seen.is_empty(), "the non-member's interface got {} of the group's datagrams", seen.len());

    // A leaves: after the last-member time it gets nothing more, B still does.
    let watch_a = RawPort::open(&h[1], &p[1]);
    a.leave();
    wait_members(&daemon, group, &[&p[2]]);
    let _ = watch_a.collect(Duration::from_millis(100), |_| false); // what came before the leave
    send(20);
    wait_received(&[&b], 40, "the remaining member to receive 20 more");
    let seen = watch_a.collect(Duration::from_millis(500), |f| is_group_data(f, group));
    assert!(seen.is_empty(), "after its leave, a former member still got {} datagrams", seen.len());
    assert_eq!(outsider.collect(Duration::from_millis(100), |f| is_group_data(f, group)).len(), 0);
    assert_eq!(a.got(), 20);

    // B's interface goes down: its membership goes with it; back up, its kernel reports again.
    ip(&["-n", &h[2], "link", "set", &p[2], "down"]);
    wait_members(&daemon, group, &[]);
    ip(&["-n", &h[2], "link", "set", &p[2], "up"]);
    wait_members(&daemon, group, &[&p[2]]);

    // B's port is removed live: it leaves the table, and the group is unknown again.
    daemon.ctl_ok(&["port", "del", &p[2]]);
    wait_members(&daemon, group, &[]);
    send(5);
    assert_eq!(outsider.collect(Duration::from_millis(500), |f| is_group_data(f, group)).len(), 5);

    let drops = daemon.ctl_json(&["port", "show"]).unwrap();
    for port in drops["ports"].as_array().unwrap() {
        assert_eq!(port["drops"]["mcast_bad_report"], 0, "{port}");
    }
    drop((a, b));
}

#[test]
fn igmp_members_receive_non_members_do_not_and_a_leave_stops_delivery() {
    // Two workers: a report may be read by one worker and the group's traffic by the other.
    with_tag(|tag| scenario(tag, IpAddr::V4(Ipv4Addr::new(239, 1, 2, 3)), "threads = 2\nmcast_snooping = true"));
}

#[test]
fn mld_members_receive_non_members_do_not_and_a_leave_stops_delivery() {
    let group: Ipv6Addr = "ff05::4242".parse().unwrap();
    with_tag(|tag| scenario(tag, IpAddr::V6(group), "mcast_snooping = true"));
}

#[test]
fn without_snooping_every_port_gets_the_group() {
    with_tag(|tag| {
        let names = Names::new(tag, 3);
        let (_guard, daemon) = names.start("");
        let group = IpAddr::V4(Ipv4Addr::new(239, 7, 7, 7));
        let _a = Listener::join(&names.hosts[1], &names.ports[1], Names::ip(1), group);
        let outsider = RawPort::open(&names.hosts[2], &names.ports[2]);
        send_to_group(&names.hosts[0], &names.ports[0], Names::ip(0), group, 5);
        assert_eq!(outsider.collect(Duration::from_millis(500), |f| is_group_data(f, group)).len(), 5);
        let mdb = daemon.ctl_json(&["mdb", "show"]).unwrap();
        assert_eq!(mdb["snooping"], false);
        assert!(mdb["members"].as_array().unwrap().is_empty());
        assert!(daemon.ctl(&["mdb", "show"]).unwrap().contains("snooping is off"));
    });
}

/// Whether `frame` is an IGMP general query (IPv4 header with options, as the querier sends).
fn is_igmp_query(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&[0x08, 0x00]) && frame.len() >= 42 && frame[23] == 2 && {
        let at = 14 + usize::from(frame[14] & 0x0f) * 4;
        frame.get(at) == Some(&0x11) && frame[at + 4..at + 8] == [0, 0, 0, 0]
    }
}

/// Whether `frame` is an MLD general query behind a hop-by-hop header.
fn is_mld_query(frame: &[u8]) -> bool {
    frame.get(12..14) == Some(&[0x86, 0xdd])
        && frame.len() >= 86
        && frame[20] == 0
        && frame[54] == 58
        && frame[62] == 130
}

/// Whether `frame` is an IGMPv2 report or an MLDv1 report (behind a hop-by-hop header) for
/// `group`: a host's answer to the querier's v2/v1 query (which also moves the host to that
/// version, as a kernel bridge's default querier does). Before it, these hosts sent v3/v2
/// reports only.
fn is_query_answer(frame: &[u8], group: IpAddr) -> bool {
    match group {
        IpAddr::V4(g) if frame.get(12..14) == Some(&[0x08, 0x00]) && frame.len() > 34 && frame[23] == 2 => {
            let at = 14 + usize::from(frame[14] & 0x0f) * 4;
            frame.get(at) == Some(&0x16) && frame.get(at + 4..at + 8) == Some(&g.octets())
        }
        IpAddr::V6(g) if frame.get(12..14) == Some(&[0x86, 0xdd]) && frame.len() > 62 && frame[20] == 0 => {
            frame.get(62) == Some(&131) && frame.get(70..86) == Some(&g.octets())
        }
        _ => false,
    }
}

/// A test on a received frame.
type FramePredicate<'a> = dyn Fn(&[u8]) -> bool + 'a;

/// Collects from `port` until each of `wanted` accepted a frame, or `timeout` passed; returns
/// which did.
fn saw(port: &RawPort, timeout: Duration, wanted: &[&FramePredicate<'_>]) -> Vec<bool> {
    let mut seen = vec![false; wanted.len()];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && seen.contains(&false) {
        for frame in port.collect(Duration::from_millis(200), |_| true) {
            for (i, want) in wanted.iter().enumerate() {
                seen[i] |= want(&frame);
            }
        }
    }
    seen
}

#[test]
fn the_querier_queries_hosts_answer_and_answers_go_to_router_ports_only() {
    with_tag(|tag| {
        let names = Names::new(tag, 3);
        let (_guard, daemon) = names.start("mcast_snooping = true\nmcast_querier = true");
        let (h, p) = (&names.hosts, &names.ports);
        // Host 0 is behind a router port (set live); host 2 is another host.
        daemon.ctl_ok(&["port", "set", &p[0], "mrouter=true"]);
        let mdb = daemon.ctl_json(&["mdb", "show"]).unwrap();
        assert_eq!(mdb["routers"], serde_json::json!([{"port": p[0], "expires_secs": null}]), "{mdb}");
        assert!(daemon.ctl(&["mdb", "show"]).unwrap().contains(&format!("router ports: {} (mrouter)", p[0])));
        assert!(daemon.ctl_ok(&["save"]).contains("mrouter = true"));
        let router = RawPort::open(&h[0], &p[0]);
        let other = RawPort::open(&h[2], &p[2]);
        let v4 = IpAddr::V4(Ipv4Addr::new(239, 5, 5, 5));
        let v6 = IpAddr::V6("ff05::5555".parse().unwrap());
        let _a = Listener::join(&h[1], &p[1], Names::ip(1), v4);
        let _b = Listener::join(&h[1], &p[1], Names::ip(1), v6);
        // The queries, and the host's kernel taking them: it answers within the 10 s maximum
        // response time asked.
        let seen = saw(
            &router,
            Duration::from_secs(20),
            &[&is_igmp_query, &is_mld_query, &move |f| is_query_answer(f, v4), &move |f| is_query_answer(f, v6)],
        );
        assert_eq!(seen, [true; 4], "IGMP query, MLD query, IGMPv2 answer, MLDv1 answer");
        // The other host got the queries but not the answers: had it heard them, it would hold
        // back its own answers for the same groups (IGMPv2/MLDv1 report suppression).
        let got = other.collect(Duration::from_millis(300), |_| true);
        assert!(got.iter().any(|f| is_igmp_query(f)), "the other host got no query");
        let answers = got.iter().filter(|f| is_query_answer(f, v4) || is_query_answer(f, v6)).count();
        assert_eq!(answers, 0, "another host's answers reached a port that is not a router port");

        // The router port unset live: gone.
        daemon.ctl_ok(&["port", "set", &p[0], "mrouter="]);
        let mdb = daemon.ctl_json(&["mdb", "show"]).unwrap();
        assert_eq!(mdb["routers"], serde_json::json!([]), "{mdb}");
    });
}

/// The same scenario against the kernel's bridge with `mcast_snooping 1` (and its querier on:
/// without a querier on the link the kernel bridge floods every group), so what the vswitchd
/// tests expect is what the kernel does: members receive, the non-member's interface sees
/// nothing, a leave stops delivery.
#[test]
fn the_kernel_bridge_with_snooping_does_the_same() {
    with_tag(|tag| {
        let names = Names::new(tag, 3);
        let mut guard = NamespaceGuard::default();
        guard.create(&names.sw);
        for h in &names.hosts {
            guard.create(h);
        }
        let sw = names.sw.as_str();
        // The kernel bridge counts its own querier present only a query response interval after
        // it is turned on: 1 s here, set before the querier is.
        #[rustfmt::skip]
        ip(&["-n", sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "1",
             "mcast_query_response_interval", "100"]);
        ip(&["-n", sw, "link", "set", "br0", "up"]);
        for (i, (h, p)) in names.hosts.iter().zip(&names.ports).enumerate() {
            ip(&["-n", sw, "link", "add", &format!("sw{i}"), "type", "veth", "peer", "name", p, "netns", h]);
            ip(&["-n", sw, "link", "set", &format!("sw{i}"), "master", "br0", "up"]);
            ip(&["-n", h, "addr", "add", &format!("{}/24", Names::ip(i)), "dev", p]);
            ip(&["-n", h, "link", "set", p, "up"]);
        }
        ip(&["-n", sw, "link", "set", "br0", "type", "bridge", "mcast_querier", "1"]);
        let (h, p) = (&names.hosts, &names.ports);
        let group = IpAddr::V4(Ipv4Addr::new(239, 1, 2, 3));
        let kernel_members = || {
            let out = std::process::Command::new("bridge").args(["-n", sw, "mdb", "show"]).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines().filter(|l| l.contains(&group.to_string())).count()
        };
        let outsider = RawPort::open(&h[2], &p[2]);
        let member = Listener::join(&h[1], &p[1], Names::ip(1), group);
        wait_for("the kernel bridge's mdb entry", Duration::from_secs(10), || (kernel_members() == 1).then_some(()));
        thread::sleep(Duration::from_millis(1500)); // the querier counts as present
        let _ = outsider.collect(Duration::from_millis(100), |_| false);
        send_to_group(&h[0], &p[0], Names::ip(0), group, 20);
        wait_received(&[&member], 20, "the member to receive 20 datagrams through the kernel bridge");
        let seen = outsider.collect(Duration::from_millis(500), |f| is_group_data(f, group));
        assert!(seen.is_empty(), "through the kernel bridge the non-member got {} datagrams", seen.len());
        let watch = RawPort::open(&h[1], &p[1]);
        member.leave();
        wait_for("the kernel bridge's leave", Duration::from_secs(10), || (kernel_members() == 0).then_some(()));
        let _ = watch.collect(Duration::from_millis(100), |_| false);
        send_to_group(&h[0], &p[0], Names::ip(0), group, 20);
        // The port that left gets nothing more. (With its querier on, the kernel bridge does not
        // flood the group either once its last member left; vswitchd floods it as unknown then,
        // or with `mcast_flood_unknown = false` sends it to router ports only, as here.)
        let seen = watch.collect(Duration::from_millis(500), |f| is_group_data(f, group));
        assert!(seen.is_empty(), "after its leave, the kernel bridge still sent {} datagrams", seen.len());
        assert_eq!(member.got(), 20);
    });
}

/// An IGMPv2 leave for `group` as host `i` of [`Names`] would send it.
fn forged_leave(i: usize, group: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0x01, 0x00, 0x5e, 0, 0, 2, 0x02, 0, 0, 0, 0x33, i as u8 + 1, 0x08, 0x00];
    let mut ip = vec![0x46, 0xc0, 0, 32, 0, 0, 0x40, 0, 1, 2, 0, 0];
    ip.extend_from_slice(&Names::ip(i).octets());
    ip.extend_from_slice(&[224, 0, 0, 2, 0x94, 0x04, 0, 0]);
    let sum = inet_checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut igmp = vec![0x17, 0, 0, 0];
    igmp.extend_from_slice(&group.octets());
    let sum = inet_checksum(&igmp);
    igmp[2..4].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&igmp);
    f
}

/// With the querier on, a leave gets a group-specific query out of its port; a host there that
/// still listens answers it, and keeps getting the group. (A leave forged on behalf of a host
/// whose kernel still listens stands for a second host behind the same port.)
#[test]
fn with_the_querier_a_leave_asks_whether_members_remain() {
    with_tag(|tag| {
        let names = Names::new(tag, 3);
        let (_guard, daemon) = names.start("mcast_snooping = true\nmcast_querier = true");
        let (h, p) = (&names.hosts, &names.ports);
        let g = Ipv4Addr::new(239, 6, 6, 6);
        let group = IpAddr::V4(g);
        let a = Listener::join(&h[1], &p[1], Names::ip(1), group);
        let _b = Listener::join(&h[2], &p[2], Names::ip(2), group);
        wait_members(&daemon, group, &[&p[1], &p[2]]);
        let port = RawPort::open(&h[1], &p[1]);
        let _ = port.collect(Duration::from_millis(100), |_| false);
        port.send(&forged_leave(1, g));
        let is_group_query = |f: &[u8]| is_igmp_query_for(f, g) && f[..6] == [0x01, 0x00, 0x5e, 0x06, 0x06, 0x06];
        assert_eq!(saw(&port, Duration::from_secs(3), &[&is_group_query]), [true], "no group-specific query");
        thread::sleep(mcast_last_member_time() + Duration::from_millis(1500));
        assert_eq!(members(&daemon, group), [p[1].clone(), p[2].clone()], "the answer kept the membership");
        send_to_group(&h[0], &p[0], Names::ip(0), group, 10);
        wait_received(&[&a], 10, "the host that still listens to keep receiving");
        let mdb = daemon.ctl_json(&["mdb", "show"]).unwrap();
        assert!(mdb["group_queries_sent"].as_u64().unwrap() >= 1, "{mdb}");
        assert!(mdb["queries_sent"].as_u64().unwrap() >= 2, "{mdb}");
    });
}

/// Whether `frame` is an IGMP query for `group` (group-specific).
fn is_igmp_query_for(frame: &[u8], group: Ipv4Addr) -> bool {
    frame.get(12..14) == Some(&[0x08, 0x00]) && frame.len() >= 42 && frame[23] == 2 && {
        let at = 14 + usize::from(frame[14] & 0x0f) * 4;
        frame.get(at) == Some(&0x11) && frame.get(at + 4..at + 8) == Some(&group.octets())
    }
}

fn mcast_last_member_time() -> Duration {
    vswitchd_dataplane::mdb::LAST_MEMBER_TIME
}
