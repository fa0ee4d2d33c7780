//! `vswitchctl show --dot` end to end: the real daemon runs a topology with namespaces, an
//! access port whose name holds characters DOT and XML must escape, a VLAN trunk, a bond of two
//! members, and a VXLAN port with a configured remote, one added live and one learned from
//! traffic; Graphviz's own parser (`dot -Tsvg`, Debian package `graphviz`) must accept the
//! graph, and the picture must name every port, namespace, VLAN mode and remote.

mod support;

use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;
use vswitchd_control::netns;

/// The text of an SVG with the entities Graphviz writes turned back into characters.
fn svg_text(svg: &str) -> String {
    svg.replace("&#45;", "-")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#92;", "\\")
        .replace("&amp;", "&")
}

/// Runs `dot -Tsvg` on `graph`: its exit status, SVG and complaints.
fn graphviz(graph: &str) -> (bool, String, String) {
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run Graphviz's `dot` ({e}): install the Debian package graphviz"));
    child.stdin.take().unwrap().write_all(graph.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn show_dot_draws_the_running_topology_and_graphviz_parses_it() {
    with_tag(|tag| {
        let (sw, h1, h2, h3) = (format!("gd{tag}sw"), format!("gd{tag}h1"), format!("gd{tag}h2"), format!("gd{tag}h3"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        for ns in [&h1, &h2, &h3] {
            guard.adopt(ns);
        }
        // The underlay: vswitchd's VTEP 192.0.2.1, and 192.0.2.9 to play a VTEP it learns.
        ip(&["-n", &sw, "link", "add", "ul", "type", "veth", "peer", "name", "ul2"]);
        ip(&["-n", &sw, "link", "set", "ul2", "up"]);
        ip(&["-n", &sw, "addr", "add", "192.0.2.1/24", "dev", "ul"]);
        ip(&["-n", &sw, "addr", "add", "192.0.2.9/24", "dev", "ul"]);
        ip(&["-n", &sw, "link", "set", "ul", "up"]);
        ip(&["-n", &sw, "link", "set", "lo", "up"]);
        let odd = r#"t"<&\x"#;
        let topology = format!(
            r#"
[bridge]
name = "gd{tag}"
[[netns]]
name = "{h1}"
[[netns]]
name = "{h2}"
[[netns]]
name = "{h3}"
[[port]]
name = '{odd}'
type = "tap"
netns = "{h1}"
address = "10.91.0.1/24"
vlan = 10
[[port]]
name = "trunk1"
type = "veth"
netns = "{h2}"
trunk = [10, 20]
native_vlan = 1
[[port]]
name = "bond0"
type = "bond"
mode = "active-backup"
vlan = 20
[[port]]
name = "m1"
type = "veth"
netns = "{h3}"
master = "bond0"
[[port]]
name = "m2"
type = "veth"
netns = "{h3}"
master = "bond0"
[[port]]
name = "vx0"
type = "vxlan"
vni = 42
local = "192.0.2.1"
remotes = ["192.0.2.2"]
allowed_remotes = ["192.0.2.0/24"]
vlan = 10
"#
        );
        let daemon = Daemon::start(&sw, &topology);
        daemon.ctl_ok(&["vxlan", "remote", "add", "vx0", "192.0.2.3"]);
        // The bond's members come up once their far ends do; one becomes the active member.
        for m in ["m1", "m2"] {
            ip(&["-n", &h3, "link", "set", m, "up"]);
        }
        wait_for("both members up, one active", Duration::from_secs(10), || {
            let bond = daemon.ctl_json(&["bond", "show", "bond0"]).unwrap()["bonds"][0].clone();
            let members = bond["members"].as_array().unwrap().clone();
            (bond["active"].is_string() && members.iter().all(|m| m["link"] == "up")).then_some(())
        });
        // A VTEP the daemon learns: one well-formed VXLAN packet from 192.0.2.9.
        let mut packet = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
        packet.extend_from_slice(&[0xff; 6]);
        packet.extend_from_slice(&[0x02, 0x99, 0, 0, 0, 0x09, 0x88, 0xb5]);
        packet.resize(8 + 60, 0);
        wait_for("vswitchd to learn remote 192.0.2.9", Duration::from_secs(10), || {
            let p = packet.clone();
            netns::run_in(&sw, move || UdpSocket::bind("192.0.2.9:0").unwrap().send_to(&p, "192.0.2.1:4789").unwrap())
                .unwrap();
            let show = daemon.ctl_json(&["vxlan", "show"]).unwrap();
            show["tunnels"][0]["remotes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["address"] == "192.0.2.9" && r["configured"] == false)
                .then_some(())
        });

        let graph = daemon.ctl_ok(&["show", "--dot"]);
        assert!(graph.starts_with("graph "), "{graph}");
        let (ok, svg, complaints) = graphviz(&graph);
        assert!(ok, "dot -Tsvg refused the graph: {complaints}\n{graph}");
        assert!(complaints.trim().is_empty(), "dot -Tsvg complained: {complaints}\n{graph}");
        assert!(svg.contains("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        // One drawn box per port, one cluster per namespace.
        assert_eq!(svg.matches("class=\"node\"").count(), 1 + 6 + 3, "bridge, 6 ports, 3 remotes: {graph}");
        assert_eq!(svg.matches("class=\"cluster\"").count(), 3, "{graph}");
        let text = svg_text(&svg);
        for name in [odd, "trunk1", "bond0", "m1", "m2", "vx0"] {
            assert!(text.contains(&format!(">{name}</text>")), "port {name:?} is not drawn:\n{svg}");
        }
        for words in [
            format!("bridge gd{tag}"),
            format!("netns {h1}"),
            format!("netns {h2}"),
            format!("netns {h3}"),
            "access 10".into(),
            "access 20".into(),
            "trunk 10,20 native 1".into(),
            "bond active-backup".into(),
            "vxlan VNI 42".into(),
            "10.91.0.1/24".into(),
            "192.0.2.2".into(),
            "192.0.2.3".into(),
            "192.0.2.9".into(),
        ] {
            assert!(text.contains(&format!(">{words}</text>")), "{words:?} is not drawn:\n{svg}");
        }
        assert_eq!(text.matches(">active member</text>").count(), 1, "{svg}");
        assert_eq!(text.matches(">member</text>").count(), 1, "{svg}");
        assert!(!text.contains(">link down</text>"), "every link is up: {svg}");
        assert_eq!(text.matches(">configured</text>").count(), 2, "{svg}");
        assert_eq!(text.matches(">learned</text>").count(), 1, "{svg}");

        // A host takes its end of the trunk down: the picture shows it.
        ip(&["-n", &h2, "link", "set", "trunk1", "down"]);
        wait_for("trunk1's link to go down", Duration::from_secs(10), || {
            let show = daemon.ctl_json(&["show"]).unwrap();
            show["ports"].as_array().unwrap().iter().any(|p| p["name"] == "trunk1" && p["link"] == "down").then_some(())
        });
        let graph = daemon.ctl_ok(&["show", "--dot"]);
        let (ok, svg, complaints) = graphviz(&graph);
        assert!(ok, "{complaints}");
        assert_eq!(svg_text(&svg).matches(">link down</text>").count(), 1, "{svg}");
        let trunk = graph.lines().find(|l| l.contains("[label=\"trunk1\\n")).unwrap();
        assert!(trunk.contains("\\nlink down\", shape=box, style=dashed"), "{graph}");

        // --dot prints a graph, not JSON: asking for both is a usage error.
        let (code, _, err) = daemon.ctl_status(&["--json", "show", "--dot"]);
        assert_eq!(code, 2, "{err}");
        drop(daemon);
        drop(guard);
    });
}

#[test]
fn every_shipped_fixture_draws_a_graph_graphviz_accepts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut drawn = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let topology = vswitchd_control::topology::Topology::load(&path).unwrap();
        let graph = vswitchd_control::dot::topology_dot(&topology, &Default::default());
        let (ok, svg, complaints) = graphviz(&graph);
        assert!(ok && complaints.trim().is_empty(), "{}: {complaints}\n{graph}", path.display());
        let text = svg_text(&svg);
        for port in &topology.ports {
            assert!(text.contains(&format!(">{}</text>", port.name)), "{}: {} not drawn", path.display(), port.name);
        }
        drawn += 1;
    }
    assert!(drawn >= 5, "fixtures drawn: {drawn}");
}
