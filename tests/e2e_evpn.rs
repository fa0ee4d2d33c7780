//! EVPN end to end: `control = "evpn"` VXLAN ports with no `remotes` learn their flood list and
//! the MACs behind remote VTEPs from the FDB entries of the kernel VXLAN device vswitchd makes
//! for zebra, and advertise their local MACs on the kernel bridge. Here `bridge fdb` plays
//! zebra's part (as OVN's tests do); `e2e_evpn_frr` runs real FRR.

mod support;

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const SECOND: Duration = Duration::from_secs(1);

fn vxlan_show(daemon: &Daemon) -> Value {
    daemon.ctl_json(&["vxlan", "show"]).unwrap()["tunnels"][0].clone()
}

fn bridge(args: &[&str]) {
    let out = Command::new("bridge").args(args).output().expect("run bridge");
    assert!(out.status.success(), "bridge {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn bridge_output(args: &[&str]) -> String {
    let out = Command::new("bridge").args(args).output().expect("run bridge");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mac_of(ns: &str, dev: &str) -> String {
    let out = ip_output(&["-n", ns, "-br", "link", "show", dev]);
    out.split_whitespace().nth(2).unwrap_or_default().to_string()
}

fn remote<'a>(vx: &'a Value, addr: &str) -> Option<&'a Value> {
    vx["remotes"].as_array().unwrap().iter().find(|r| r["address"] == addr)
}

fn tx_to(d: &Daemon, addr: &str) -> u64 {
    remote(&vxlan_show(d), addr).map_or(0, |r| r["tx_packets"].as_u64().unwrap())
}

#[test]
fn bridge_fdb_entries_drive_the_flood_list_and_pinned_macs() {
    require_privileges();
    let tag = unique_tag();
    let sw = [format!("ev{tag}a"), format!("ev{tag}b")];
    let hosts = [format!("ev{tag}ha"), format!("ev{tag}hb")];
    let mut guard = NamespaceGuard::default();
    for ns in sw.iter().chain(&hosts) {
        guard.create(ns);
    }
    for h in &hosts {
        sysctl_in(h, "net.ipv6.conf.all.disable_ipv6", "1");
        sysctl_in(h, "net.ipv6.conf.default.disable_ipv6", "1");
    }
    ip(&["link", "add", "ul", "netns", &sw[0], "type", "veth", "peer", "name", "ul", "netns", &sw[1]]);
    for (i, ns) in sw.iter().enumerate() {
        ip(&["-n", ns, "addr", "add", &format!("192.0.2.{}/24", i + 1), "dev", "ul"]);
        ip(&["-n", ns, "link", "set", "ul", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    let addr = |i: usize| Ipv4Addr::new(10, 93, 0, i as u8 + 1);
    let mut daemons = Vec::new();
    for i in 0..2 {
        let t = format!(
            "[bridge]\nname = \"ev{tag}{i}\"\n[[netns]]\nname = \"{}\"\n\
             [[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nvni = 500\nlocal = \"192.0.2.{}\"\ncontrol = \"evpn\"\n\
             learning = false\nmtu = 1450\n\
             [[port]]\nname = \"ev{tag}t{i}\"\ntype = \"tap\"\nnetns = \"{}\"\naddress = \"{}/24\"\nmtu = 1450\n",
            hosts[i],
            i + 1,
            hosts[i],
            addr(i)
        );
        daemons.push(Daemon::start(&sw[i], &t));
    }
    // What zebra needs is there: a bridge with the kernel VXLAN device (VNI 500, local address,
    // not vswitchd's UDP port, not learning) and the local veth end in it.
    for (i, ns) in sw.iter().enumerate() {
        let details = ip_output(&["-n", ns, "-d", "link", "show", "evx500"]);
        assert!(details.contains("master evb500"), "{details}");
        assert!(details.contains("vxlan id 500") && details.contains(&format!("local 192.0.2.{}", i + 1)), "{details}");
        assert!(details.contains("dstport 4790") && details.contains("nolearning"), "{details}");
        assert!(ip_output(&["-n", ns, "link", "show", "evl500"]).contains("master evb500"));
    }
    // No remotes yet: nothing crosses.
    assert_eq!(ping(&hosts[0], addr(1), 1, SECOND / 2), 0, "no remote VTEP is known yet");

    // Zebra's type-3 routes: each VTEP floods to the other.
    let started = Instant::now();
    bridge(&["-n", &sw[0], "fdb", "append", "00:00:00:00:00:00", "dev", "evx500", "dst", "192.0.2.2"]);
    bridge(&["-n", &sw[1], "fdb", "append", "00:00:00:00:00:00", "dev", "evx500", "dst", "192.0.2.1"]);
    wait_for("the hosts to reach each other", 5 * SECOND, || {
        (ping(&hosts[0], addr(1), 1, SECOND / 5) == 1).then_some(())
    });
    println!("EVPN figure: flood entries installed -> hosts reach each other: {:?}", started.elapsed());
    assert!(remote(&vxlan_show(&daemons[0]), "192.0.2.2").is_some_and(|r| r["configured"] == true));

    // Each side advertises its host's MAC as a static entry on the local port.
    let mac_a = mac_of(&hosts[0], &format!("ev{tag}t0"));
    let mac_b = mac_of(&hosts[1], &format!("ev{tag}t1"));
    for (ns, mac) in [(&sw[0], &mac_a), (&sw[1], &mac_b)] {
        wait_for("the local MAC to be advertised", 2 * SECOND, || {
            let fdb = bridge_output(&["-n", ns, "fdb", "show", "dev", "evl500"]);
            fdb.lines().any(|l| l.starts_with(mac.as_str()) && l.contains("static")).then_some(())
        });
    }

    // A third VTEP (that nobody answers at) joins the flood list: unknown unicast (learning is
    // off) goes to both.
    bridge(&["-n", &sw[0], "fdb", "append", "00:00:00:00:00:00", "dev", "evx500", "dst", "192.0.2.3"]);
    wait_for("the third remote", 2 * SECOND, || remote(&vxlan_show(&daemons[0]), "192.0.2.3").map(drop));
    let to_c = tx_to(&daemons[0], "192.0.2.3");
    assert_eq!(ping(&hosts[0], addr(1), 3, 2 * SECOND), 3);
    assert!(tx_to(&daemons[0], "192.0.2.3") >= to_c + 3, "unknown unicast floods to every VTEP");

    // Zebra's type-2 route for B's MAC: unicast to it goes to B's VTEP only.
    bridge(&["-n", &sw[0], "fdb", "add", &mac_b, "dev", "evx500", "dst", "192.0.2.2", "self", "extern_learn"]);
    wait_for("B's MAC to be pinned", 2 * SECOND, || {
        let vx = vxlan_show(&daemons[0]);
        vx["macs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mac"] == mac_b.as_str() && m["remote"] == "192.0.2.2")
            .then_some(())
    });
    let (to_b, to_c) = (tx_to(&daemons[0], "192.0.2.2"), tx_to(&daemons[0], "192.0.2.3"));
    assert_eq!(ping(&hosts[0], addr(1), 5, 2 * SECOND), 5);
    assert_eq!(tx_to(&daemons[0], "192.0.2.3"), to_c, "unicast to a MAC EVPN placed goes to its VTEP only");
    assert!(tx_to(&daemons[0], "192.0.2.2") >= to_b + 5);
    // Withdrawn: the MAC, then the third VTEP.
    bridge(&["-n", &sw[0], "fdb", "del", &mac_b, "dev", "evx500", "dst", "192.0.2.2", "self"]);
    wait_for("B's MAC to be unpinned", 2 * SECOND, || {
        let vx = vxlan_show(&daemons[0]);
        (!vx["macs"].as_array().unwrap().iter().any(|m| m["mac"] == mac_b.as_str())).then_some(())
    });
    bridge(&["-n", &sw[0], "fdb", "del", "00:00:00:00:00:00", "dev", "evx500", "dst", "192.0.2.3"]);
    wait_for("the third remote to go", 2 * SECOND, || {
        remote(&vxlan_show(&daemons[0]), "192.0.2.3").is_none().then_some(())
    });
    assert_eq!(ping(&hosts[0], addr(1), 2, 2 * SECOND), 2, "B still reached");
    bridge(&["-n", &sw[0], "fdb", "del", "00:00:00:00:00:00", "dev", "evx500", "dst", "192.0.2.2"]);
    wait_for("B's VTEP to go", 2 * SECOND, || remote(&vxlan_show(&daemons[0]), "192.0.2.2").is_none().then_some(()));
    daemons[0].ctl(&["fdb", "flush"]).unwrap();
    assert_eq!(ping(&hosts[0], addr(1), 1, SECOND / 2), 0, "B's VTEP withdrawn");

    // A MAC no longer in the switch's FDB is no longer advertised.
    daemons[1].ctl(&["fdb", "flush"]).unwrap();
    wait_for("B's MAC to be withdrawn", 2 * SECOND, || {
        let fdb = bridge_output(&["-n", &sw[1], "fdb", "show", "dev", "evl500"]);
        (!fdb.lines().any(|l| l.starts_with(mac_b.as_str()))).then_some(())
    });

    // Killed, B leaves its kernel objects; started again, it removes them (they are listed in
    // its state file) and makes them afresh, and follows the table again.
    daemons[1].kill_hard();
    assert!(links_in(&sw[1]).iter().any(|l| l == "evx500"));
    daemons[1].restart(&sw[1]).unwrap();
    wait_for("B's kernel objects again", 5 * SECOND, || {
        ip_output(&["-n", &sw[1], "link", "show", "evl500"]).contains("master evb500").then_some(())
    });
    wait_for("B's VTEP list from the table", 5 * SECOND, || {
        remote(&vxlan_show(&daemons[1]), "192.0.2.1").is_none().then_some(())
    });
    bridge(&["-n", &sw[1], "fdb", "append", "00:00:00:00:00:00", "dev", "evx500", "dst", "192.0.2.1"]);
    wait_for("A's VTEP at B", 2 * SECOND, || remote(&vxlan_show(&daemons[1]), "192.0.2.1").map(drop));

    // Stopped: the kernel objects go with it, exactly.
    let (status, _) = daemons[0].terminate();
    assert!(status.success());
    let (status, _) = daemons[1].terminate();
    assert!(status.success());
    for ns in &sw {
        let links = links_in(ns);
        for name in ["evb500", "evx500", "evl500", "evp500"] {
            assert!(!links.iter().any(|l| l == name), "{name} left: {links:?}");
        }
        assert!(links.iter().any(|l| l == "ul"), "what it did not create stays: {links:?}");
    }
}

#[test]
fn evpn_turned_on_and_off_live() {
    require_privileges();
    let tag = unique_tag();
    let ns = format!("ev{tag}l");
    let mut guard = NamespaceGuard::default();
    guard.create(&ns);
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    ip(&["-n", &ns, "addr", "add", "192.0.2.1/32", "dev", "lo"]);
    let t = format!(
        "[bridge]\nname = \"ev{tag}l\"\n[[port]]\nname = \"vx0\"\ntype = \"vxlan\"\nvni = 700\n\
         local = \"192.0.2.1\"\nremotes = [\"192.0.2.9\"]\n"
    );
    let mut daemon = Daemon::start(&ns, &t);
    assert!(!links_in(&ns).iter().any(|l| l == "evx700"));
    daemon.ctl_ok(&["port", "set", "vx0", "control=evpn"]);
    assert!(ip_output(&["-n", &ns, "link", "show", "evl700"]).contains("master evb700"));
    bridge(&["-n", &ns, "fdb", "append", "00:00:00:00:00:00", "dev", "evx700", "dst", "192.0.2.7"]);
    wait_for("the EVPN remote beside the file's", 2 * SECOND, || {
        let vx = vxlan_show(&daemon);
        (remote(&vx, "192.0.2.7").is_some() && remote(&vx, "192.0.2.9").is_some()).then_some(())
    });
    assert!(daemon.ctl_ok(&["save"]).contains("control = \"evpn\""));
    // Handed to a new process (`--takeover`): the objects stay, its agent reads the table.
    let index = ip_output(&["-n", &ns, "-o", "link", "show", "evx700"]);
    daemon.take_over(&ns).unwrap();
    assert_eq!(ip_output(&["-n", &ns, "-o", "link", "show", "evx700"]), index, "the same device, not a new one");
    wait_for("the EVPN remote after the takeover", 2 * SECOND, || remote(&vxlan_show(&daemon), "192.0.2.7").map(drop));
    daemon.ctl_ok(&["port", "set", "vx0", "control="]);
    let links = links_in(&ns);
    for name in ["evb700", "evx700", "evl700", "evp700"] {
        assert!(!links.iter().any(|l| l == name), "{name} left: {links:?}");
    }
    let vx = vxlan_show(&daemon);
    assert!(remote(&vx, "192.0.2.7").is_none() && remote(&vx, "192.0.2.9").is_some(), "{vx}");
    let (status, _) = daemon.terminate();
    assert!(status.success());
}
