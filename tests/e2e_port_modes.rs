//! End to end: per-port modes on the real vswitchd binary, with the seed walkthroughs
//! (fixtures/seed-macvlan-*.toml) and the kernel's own macvlan as the reference and the peer:
//! - isolated ports give the reachability of macvlan private mode (compared with a kernel
//!   macvlan in private mode built alongside), and the isolation drop is counted and changes
//!   live;
//! - a hairpin port is the adjacent switch macvlan VEPA mode needs: two kernel macvlans in VEPA
//!   mode on a veth into vswitchd reach each other through it only while `hairpin` is on;
//! - allowed_macs and mac_limit drop (and count) frames from other sources;
//! - storm control bounds a broadcast blast near its rate and counts the rest.

mod support;

use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const SECOND: Duration = Duration::from_secs(1);

fn drop_count(daemon: &Daemon, port: &str, reason: &str) -> u64 {
    let stats = daemon.ctl_json(&["port", "show", port]).expect("port show")["ports"][0].clone();
    stats["drops"][reason].as_u64().unwrap_or_else(|| panic!("no drop reason {reason:?} in {stats}"))
}

/// Whether `from` reaches `to` (one of three pings answered).
fn reaches(from: &str, to: Ipv4Addr) -> bool {
    ping(from, to, 3, SECOND / 2) > 0
}

/// Which of `hosts` (namespace, address) reach which others, in order.
fn matrix(hosts: &[(String, Ipv4Addr)]) -> Vec<(usize, usize, bool)> {
    let mut m = Vec::new();
    for (i, (from, _)) in hosts.iter().enumerate() {
        for (j, (_, to)) in hosts.iter().enumerate() {
            if i != j {
                m.push((i, j, reaches(from, *to)));
            }
        }
    }
    m
}

/// A broadcast frame from `src` with ethertype 0x88b5 (local experimental) and `n` inside.
fn probe(src: [u8; 6], n: u32) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(b"port-modes");
    f.extend_from_slice(&n.to_be_bytes());
    f.resize(60, 0);
    f
}

fn is_probe(f: &[u8]) -> bool {
    f.len() >= 24 && f[12..14] == [0x88, 0xb5] && &f[14..24] == b"port-modes"
}

#[test]
fn isolated_ports_match_a_kernel_macvlan_in_private_mode() {
    with_tag(|tag| {
        let mut guard = NamespaceGuard::default();
        // vswitchd: the seed's walkthrough, under names of this test.
        let (sw, h1, h2, gw) = (format!("pi{tag}s"), format!("pi{tag}1"), format!("pi{tag}2"), format!("pi{tag}g"));
        let topology = fixture(
            "seed-macvlan-private.toml",
            &[("mvpriv", &format!("pi{tag}")), ("mv1", &h1), ("mv2", &h2), ("mvgw", &gw)],
        );
        guard.create(&sw);
        for ns in [&h1, &h2, &gw] {
            guard.adopt(ns);
        }
        let daemon = Daemon::start(&sw, &topology);
        let addr = |last: u8| Ipv4Addr::new(192, 168, 30, last);
        let hosts = vec![(h1.clone(), addr(1)), (h2.clone(), addr(2)), (gw.clone(), addr(254))];
        let ours = matrix(&hosts);

        // The kernel: two macvlans in private mode on a veth whose other end is the gateway.
        let (lower, k1, k2, kgw) = (format!("pk{tag}l"), format!("pk{tag}1"), format!("pk{tag}2"), format!("pk{tag}g"));
        for ns in [&lower, &k1, &k2, &kgw] {
            guard.create(ns);
        }
        ip(&["-n", &lower, "link", "add", "low", "type", "veth", "peer", "name", "gw", "netns", &kgw]);
        ip(&["-n", &lower, "link", "set", "low", "up"]);
        for (ns, name, cidr) in [(&k1, "m1", "192.168.30.1/24"), (&k2, "m2", "192.168.30.2/24")] {
            ip(&["-n", &lower, "link", "add", name, "link", "low", "type", "macvlan", "mode", "private"]);
            ip(&["-n", &lower, "link", "set", name, "netns", ns]);
            ip(&["-n", ns, "addr", "add", cidr, "dev", name]);
            ip(&["-n", ns, "link", "set", name, "up"]);
        }
        ip(&["-n", &kgw, "addr", "add", "192.168.30.254/24", "dev", "gw"]);
        ip(&["-n", &kgw, "link", "set", "gw", "up"]);
        let kernel = matrix(&[(k1.clone(), addr(1)), (k2.clone(), addr(2)), (kgw.clone(), addr(254))]);

        let expected = vec![(0, 1, false), (0, 2, true), (1, 0, false), (1, 2, true), (2, 0, true), (2, 1, true)];
        assert_eq!(kernel, expected, "the kernel's macvlan private mode (host 1, host 2, gateway)");
        assert_eq!(ours, expected, "vswitchd's isolated ports (host 1, host 2, gateway)");

        // A broadcast from host 1 reaches the gateway, not host 2.
        let (at_h1, at_h2, at_gw) = (RawPort::open(&h1, &h1), RawPort::open(&h2, &h2), RawPort::open(&gw, &gw));
        let (to_h2, to_gw) = thread::scope(|s| {
            let h2_heard = s.spawn(|| at_h2.collect(SECOND, is_probe).len());
            let gw_heard = s.spawn(|| at_gw.collect(SECOND, is_probe).len());
            thread::sleep(SECOND / 5);
            (0..5).for_each(|n| at_h1.send(&probe([0x02, 0, 0, 0, 0x1e, 0x01], n)));
            (h2_heard.join().unwrap(), gw_heard.join().unwrap())
        });
        assert_eq!((to_h2, to_gw), (0, 5), "host 1's broadcasts heard by host 2 and the gateway");

        // A unicast between the isolated hosts (host 1 told host 2's MAC) is dropped by name.
        ip(&["-n", &h1, "neigh", "replace", "192.168.30.2", "lladdr", "02:00:00:00:1e:02", "dev", &h1]);
        let before = drop_count(&daemon, &h1, "isolated");
        assert_eq!(ping(&h1, addr(2), 3, SECOND / 2), 0);
        let dropped = drop_count(&daemon, &h1, "isolated") - before;
        assert!(dropped >= 3, "{dropped} frames counted as isolated");

        // Live: host 2 no longer isolated, host 1 reaches it; isolated again, it does not.
        daemon.ctl(&["port", "set", &h2, "isolated=false"]).expect("port set isolated=false");
        assert!(reaches(&h1, addr(2)), "host 1 -> host 2 once host 2 is not isolated");
        daemon.ctl(&["port", "set", &h2, "isolated=true"]).expect("port set isolated=true");
        assert!(!reaches(&h1, addr(2)), "host 1 -> host 2 isolated again");
        assert!(reaches(&h2, addr(254)), "host 2 -> gateway");
        let saved = daemon.ctl(&["save"]).expect("save");
        assert_eq!(saved.matches("isolated = true").count(), 2, "{saved}");
    });
}

#[test]
fn kernel_macvlans_in_vepa_mode_meet_through_a_hairpin_port() {
    with_tag(|tag| {
        let mut guard = NamespaceGuard::default();
        let (sw, vepa, gw) = (format!("pe{tag}s"), format!("pe{tag}v"), format!("pe{tag}g"));
        let (up, a, b) = (format!("pe{tag}0"), format!("pe{tag}a"), format!("pe{tag}b"));
        let topology = fixture(
            "seed-macvlan-vepa.toml",
            &[
                ("mvvepa", &format!("pe{tag}")),
                ("vepa", &vepa),
                ("vepa0", &up),
                ("vepa0-sw", &format!("pe{tag}w")),
                ("vepagw", &gw),
            ],
        );
        guard.create(&sw);
        for ns in [&vepa, &gw] {
            guard.adopt(ns);
        }
        let daemon = Daemon::start(&sw, &topology);
        // The seed's kernel side: two macvlans in VEPA mode on the veth into vswitchd.
        for (ns, name, cidr) in [(&a, "mva", "192.168.31.1/24"), (&b, "mvb", "192.168.31.2/24")] {
            guard.create(ns);
            ip(&["-n", &vepa, "link", "add", name, "link", &up, "type", "macvlan", "mode", "vepa"]);
            ip(&["-n", &vepa, "link", "set", name, "netns", ns]);
            ip(&["-n", ns, "addr", "add", cidr, "dev", name]);
            ip(&["-n", ns, "link", "set", name, "up"]);
        }
        let addr = |last: u8| Ipv4Addr::new(192, 168, 31, last);
        assert!(reaches(&a, addr(254)) && reaches(&b, addr(254)), "both macvlans reach the gateway");
        assert!(reaches(&a, addr(2)), "a -> b, reflected by vswitchd's hairpin port");
        assert!(reaches(&b, addr(1)), "b -> a, reflected by vswitchd's hairpin port");

        // Without hairpin, vswitchd never sends a frame back where it came from.
        daemon.ctl(&["port", "set", &up, "hairpin=false"]).expect("port set hairpin=false");
        let before = drop_count(&daemon, &up, "same_port");
        assert!(!reaches(&a, addr(2)), "a -> b without hairpin");
        assert!(drop_count(&daemon, &up, "same_port") > before, "the unicast a -> b is counted as same_port");
        assert!(reaches(&a, addr(254)), "a -> gateway without hairpin");
        // The neighbours forgotten, a's ARP broadcast does not come back to b either.
        ip(&["-n", &a, "neigh", "flush", "dev", "mva"]);
        assert!(!reaches(&a, addr(2)), "a -> b without hairpin, by ARP");

        daemon.ctl(&["port", "set", &up, "hairpin=true"]).expect("port set hairpin=true");
        assert!(reaches(&a, addr(2)), "a -> b with hairpin on again");
    });
}

#[test]
fn other_sources_are_dropped_and_counted_and_storms_are_bounded() {
    with_tag(|tag| {
        let mut guard = NamespaceGuard::default();
        let (sw, src, one) = (format!("ps{tag}s"), format!("ps{tag}1"), format!("ps{tag}2"));
        let topology =
            fixture("seed-macvlan-source.toml", &[("mvsrc", &format!("ps{tag}")), ("src1", &src), ("one1", &one)]);
        guard.create(&sw);
        for ns in [&src, &one] {
            guard.adopt(ns);
        }
        let daemon = Daemon::start(&sw, &topology);
        let addr = |last: u8| Ipv4Addr::new(192, 168, 32, last);
        assert!(reaches(&src, addr(2)) && reaches(&one, addr(1)), "the hosts' own MACs pass");
        let at_src = RawPort::open(&src, &src);
        let at_one = RawPort::open(&one, &one);
        let forged = [0x02, 0, 0, 0, 0x20, 0x99];

        // allowed_macs: a forged source from src1 goes nowhere and is counted.
        let before = drop_count(&daemon, &src, "source_not_allowed");
        let heard = thread::scope(|s| {
            let listen = s.spawn(|| at_one.collect(SECOND, is_probe).len());
            thread::sleep(SECOND / 5);
            (0..20).for_each(|n| at_src.send(&probe(forged, n)));
            listen.join().unwrap()
        });
        assert_eq!(heard, 0, "forged frames delivered");
        assert_eq!(drop_count(&daemon, &src, "source_not_allowed") - before, 20);

        // mac_limit = 1: one1's host is the one MAC; a second source is dropped and counted.
        let before = drop_count(&daemon, &one, "mac_limit");
        let heard = thread::scope(|s| {
            let listen = s.spawn(|| at_src.collect(SECOND, is_probe).len());
            thread::sleep(SECOND / 5);
            (0..20).for_each(|n| at_one.send(&probe(forged, n)));
            listen.join().unwrap()
        });
        assert_eq!(heard, 0, "a second MAC's frames delivered");
        assert_eq!(drop_count(&daemon, &one, "mac_limit") - before, 20);
        let fdb = daemon.ctl_json(&["fdb", "show"]).expect("fdb show").to_string();
        assert!(!fdb.contains("02:00:00:00:20:99"), "the forged MAC was learned: {fdb}");
        assert!(reaches(&one, addr(1)), "one1's own MAC still passes");

        // storm_pps broadcast = 200: a blast of 2000 a second for a second from src1's own MAC.
        let own = [0x02, 0, 0, 0, 0x20, 0x01];
        let before = drop_count(&daemon, &src, "storm_broadcast");
        let (sent, elapsed, heard) = thread::scope(|s| {
            let listen = s.spawn(|| at_one.collect(2 * SECOND, is_probe).len());
            thread::sleep(SECOND / 5);
            let started = Instant::now();
            let mut sent = 0u32;
            for _ in 0..20 {
                for _ in 0..100 {
                    if at_src.try_send(&probe(own, sent)).is_ok() {
                        sent += 1;
                    }
                }
                thread::sleep(SECOND / 20);
            }
            (sent, started.elapsed(), listen.join().unwrap())
        });
        let dropped = drop_count(&daemon, &src, "storm_broadcast") - before;
        let bound = 200.0 + 200.0 * elapsed.as_secs_f64() + 20.0;
        println!("storm: sent {sent} in {elapsed:?}, delivered {heard} (bound {bound:.0}), storm_broadcast {dropped}");
        assert!(sent >= 1500, "only {sent} sent");
        assert!((heard as f64) <= bound, "{heard} delivered, more than {bound:.0}");
        assert!(heard >= 200, "only {heard} delivered: storm control cut below the rate");
        assert!(dropped > 0 && dropped + heard as u64 <= u64::from(sent) + 10, "dropped {dropped}, delivered {heard}");
        assert!(dropped as f64 >= f64::from(sent) - bound - 10.0, "dropped only {dropped} of {sent}");
        // The bucket refills: a host's ARP gets through after the storm.
        thread::sleep(SECOND);
        ip(&["-n", &src, "neigh", "flush", "dev", &src]);
        assert!(reaches(&src, addr(2)), "src1 -> one1 after the storm");
    });
}

#[test]
fn the_seed_fixtures_check() {
    for name in ["seed-macvlan-private.toml", "seed-macvlan-vepa.toml", "seed-macvlan-source.toml"] {
        let path = format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new(VSWITCHD).args(["--check", "--config", &path]).output().unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
