//! End to end: `vswitchctl trace` against the real vswitchd binary. A switch with two access
//! ports in VLAN 10, a trunk, an access port in VLAN 20 and an active-backup bond; traces of a
//! known unicast (FDB hit, egress port), a flood across VLANs (the trunk pushes tag 10, VLAN 20
//! is passed by), drops by name (a VLAN the trunk does not carry, back to the same port), the
//! bond's member, a frame in hex, and bad input (exit 2 naming the field). Meanwhile nothing
//! arrives on any egress interface, no counter moves and nothing is learned.

mod support;

use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::*;

const SECOND: Duration = Duration::from_secs(1);
const SRC: &str = "02:00:00:00:70:0a";
const KNOWN: &str = "02:00:00:00:70:0b";
const BEHIND_BOND: &str = "02:00:00:00:70:0d";

fn steps<'a>(trace: &'a Value, stage: &str) -> Vec<&'a Value> {
    trace["steps"].as_array().expect("steps").iter().filter(|s| s["stage"] == stage).collect()
}

fn step_at<'a>(trace: &'a Value, stage: &str, port: &str) -> Vec<&'a Value> {
    steps(trace, stage).into_iter().filter(|s| s["port"] == port).collect()
}

fn sent_to(trace: &Value) -> Vec<String> {
    let mut ports: Vec<String> =
        trace["sent_to"].as_array().expect("sent_to").iter().map(|p| p.as_str().unwrap().to_string()).collect();
    ports.sort();
    ports
}

/// Counters of every port, and the FDB without ages: what a trace must leave alone.
fn snapshot(daemon: &Daemon) -> (Value, Vec<(String, String, String)>) {
    let ports = daemon.ctl_json(&["port", "show"]).expect("port show");
    let fdb = daemon.ctl_json(&["fdb", "show"]).expect("fdb show");
    let entries = fdb["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["mac"].to_string(), e["vlan"].to_string(), e["port"].to_string()))
        .collect();
    (ports, entries)
}

#[test]
fn trace_shows_every_decision_and_sends_nothing() {
    with_tag(|tag| {
        let mut guard = NamespaceGuard::default();
        let sw = format!("tr{tag}s");
        let hosts: Vec<String> = ["a", "b", "t", "c"].iter().map(|h| format!("tr{tag}{h}")).collect();
        guard.create(&sw);
        // The namespaces exist before vswitchd starts, without IPv6: the hosts' kernels stay
        // quiet, so the counters can only move if the trace sends something.
        for ns in &hosts {
            guard.create(ns);
        }
        for ns in hosts.iter().chain([&sw]) {
            sysctl_in(ns, "net.ipv6.conf.all.disable_ipv6", "1");
            sysctl_in(ns, "net.ipv6.conf.default.disable_ipv6", "1");
        }
        for m in ["m1", "m2"] {
            ip(&["-n", &sw, "link", "add", &format!("{m}x"), "type", "veth", "peer", "name", &format!("{m}y")]);
            ip(&["-n", &sw, "link", "set", &format!("{m}x"), "up"]);
            ip(&["-n", &sw, "link", "set", &format!("{m}y"), "up"]);
        }
        let (a, b, t, c) = (&hosts[0], &hosts[1], &hosts[2], &hosts[3]);
        let topology = format!(
            r#"
[bridge]
name = "tr{tag}"
[[netns]]
name = "{a}"
[[netns]]
name = "{b}"
[[netns]]
name = "{t}"
[[netns]]
name = "{c}"
[[port]]
name = "{a}"
type = "tap"
netns = "{a}"
vlan = 10
[[port]]
name = "{b}"
type = "tap"
netns = "{b}"
vlan = 10
[[port]]
name = "{t}"
type = "tap"
netns = "{t}"
trunk = [10, 20]
[[port]]
name = "{c}"
type = "tap"
netns = "{c}"
vlan = 20
[[port]]
name = "bond0"
type = "bond"
mode = "active-backup"
miimon_ms = 50
vlan = 10
[[port]]
name = "m1"
type = "netdev"
device = "m1x"
master = "bond0"
[[port]]
name = "m2"
type = "netdev"
device = "m2x"
master = "bond0"
"#
        );
        let daemon = Daemon::start(&sw, &topology);
        let active = wait_for("a usable active member", 10 * SECOND, || {
            let bond = &daemon.ctl_json(&["bond", "show"]).ok()?["bonds"][0];
            let members = bond["members"].as_array()?;
            members.iter().all(|m| m["usable"] == true).then_some(())?;
            members.iter().find(|m| m["active"] == true).map(|m| m["name"].as_str().unwrap().to_string())
        });
        for ns in &hosts {
            ip(&["-n", ns, "link", "set", ns, "up"]);
        }
        daemon.ctl_ok(&["fdb", "add", KNOWN, b, "--vlan", "10"]);
        daemon.ctl_ok(&["fdb", "add", BEHIND_BOND, "bond0", "--vlan", "10"]);
        // vswitchd follows the hosts' links from the kernel: trace once it sees them up.
        wait_for("the hosts' links up in vswitchd", 10 * SECOND, || {
            let show = daemon.ctl_json(&["show"]).ok()?;
            let ports = show["ports"].as_array()?;
            let up = |name: &String| ports.iter().any(|p| p["name"] == name.as_str() && p["link"] == "up");
            hosts.iter().all(up).then_some(())
        });

        // Watch every egress interface for our frames while tracing.
        let ours = |f: &[u8]| f.len() >= 12 && f[6..12] == [0x02, 0, 0, 0, 0x70, 0x0a];
        let watchers: Vec<RawPort> = [(b, b.as_str()), (t, t.as_str()), (c, c.as_str()), (a, a.as_str())]
            .iter()
            .map(|(ns, dev)| RawPort::open(ns, dev))
            .chain(["m1y", "m2y"].iter().map(|dev| RawPort::open(&sw, dev)))
            .collect();
        let before = snapshot(&daemon);
        let heard = thread::scope(|s| {
            let listening: Vec<_> =
                watchers.iter().map(|w| s.spawn(move || w.collect(4 * SECOND, ours).len())).collect();
            // (The watchers' sockets were bound above: a frame sent before a watcher reads is
            // queued for it, so the traces need not wait for them.)

            // A known unicast: the FDB hit, the egress port, the source it would learn.
            let unicast = daemon
                .ctl_json(&["trace", a, &format!("dst={KNOWN},src={SRC},ipv4,tcp,dport=80")])
                .expect("trace unicast");
            assert_eq!(unicast["verdict"], "forward", "{unicast:#}");
            assert_eq!(sent_to(&unicast), vec![b.clone()]);
            let hit = step_at(&unicast, "fdb", b);
            assert_eq!(hit.len(), 1, "{unicast:#}");
            assert_eq!(hit[0]["result"], "hit");
            assert_eq!(steps(&unicast, "learn")[0]["result"], "would_learn", "{unicast:#}");
            assert!(steps(&unicast, "vlan")[0]["detail"].as_str().unwrap().starts_with("VLAN 10"));
            assert_eq!(step_at(&unicast, "egress", b)[0]["result"], "untagged");

            // A broadcast across VLANs: the flood set, the trunk's tag push, VLAN 20 passed by.
            let flood =
                daemon.ctl_json(&["trace", a, &format!("src={SRC},arp,sip=10.9.0.1,dip=10.9.0.2")]).expect("flood");
            assert_eq!(steps(&flood, "decision")[0]["result"], "flood", "{flood:#}");
            let mut expected = vec![b.clone(), t.clone(), "bond0".to_string()];
            expected.sort();
            assert_eq!(sent_to(&flood), expected, "{flood:#}");
            let trunk = step_at(&flood, "egress", t);
            assert_eq!(trunk[0]["result"], "push_tag", "{flood:#}");
            assert!(trunk[0]["detail"].as_str().unwrap().contains("VLAN 10"), "{flood:#}");
            assert!(
                trunk
                    .iter()
                    .any(|s| s["result"] == "would_send" && s["detail"].as_str().unwrap().starts_with("64 bytes"))
            );
            assert_eq!(step_at(&flood, "egress", c)[0]["result"], "skipped", "{flood:#}");
            assert!(step_at(&flood, "egress", a).is_empty(), "never back out of the ingress port");

            // Drops, by name: a VLAN the trunk does not carry; a frame to the port it came from.
            let wrong_vlan = daemon.ctl_json(&["trace", t, &format!("vlan=30,src={SRC},ipv4,udp")]).expect("trace");
            assert_eq!(
                (&wrong_vlan["verdict"], &wrong_vlan["drop_reason"]),
                (&"drop".into(), &"vlan_not_allowed".into())
            );
            assert!(sent_to(&wrong_vlan).is_empty());
            let same = daemon.ctl_json(&["trace", b, &format!("dst={KNOWN},src={SRC}")]).expect("trace");
            assert_eq!(same["drop_reason"], "same_port", "{same:#}");

            // Behind the bond: the member it would leave by is the active one.
            let bonded =
                daemon.ctl_json(&["trace", a, &format!("dst={BEHIND_BOND},src={SRC},ipv4,icmp")]).expect("trace");
            assert_eq!(sent_to(&bonded), vec!["bond0".to_string()], "{bonded:#}");
            let member = step_at(&bonded, "bond", "bond0");
            assert_eq!((&member[0]["result"], &member[0]["detail"]), (&"member".into(), &Value::from(active.clone())));

            // Hex bytes, and a trunk frame tagged 10 going untagged out of an access port.
            let hex = format!("{}{}8100000a88b5{}", KNOWN.replace(':', ""), SRC.replace(':', ""), "00".repeat(46));
            let tagged = daemon.ctl_json(&["trace", t, &hex]).expect("trace hex");
            assert_eq!(sent_to(&tagged), vec![b.clone()], "{tagged:#}");
            assert!(steps(&tagged, "vlan")[0]["detail"].as_str().unwrap().ends_with(", tag taken off"), "{tagged:#}");
            assert_eq!(step_at(&tagged, "egress", b)[0]["result"], "untagged");

            // The readable table.
            let table = daemon.ctl_ok(&["trace", a, &format!("dst={KNOWN},src={SRC}")]);
            assert!(table.starts_with("STEP"), "{table}");
            assert!(
                table.contains("would_send") && table.contains(&format!("verdict: would be sent to {b}")),
                "{table}"
            );

            // Bad input: exit 2 naming the field, or the port.
            let (code, _, err) = daemon.ctl_status(&["trace", a, "dst=02:00:00:00:00:01,vlan=5000"]);
            assert_eq!(code, 2, "{err}");
            assert!(err.contains("`vlan`"), "{err}");
            let (code, _, err) = daemon.ctl_status(&["trace", "nosuchport", "ipv4"]);
            assert_eq!(code, 2, "{err}");
            assert!(err.contains("nosuchport"), "{err}");

            listening.into_iter().map(|l| l.join().unwrap()).collect::<Vec<_>>()
        });
        assert_eq!(heard, vec![0; 6], "frames of ours on b, t, c, a, m1, m2 during the traces");
        let after = snapshot(&daemon);
        assert_eq!(before.1, after.1, "the FDB is as it was: nothing learned");
        assert_eq!(before.0, after.0, "no counter moved");
        assert!(!after.1.iter().any(|(mac, _, _)| mac.contains("70:0a")), "the traced source was not learned");
    });
}
