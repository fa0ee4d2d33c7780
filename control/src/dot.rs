//! `vswitchctl show --dot`: the running topology as a Graphviz graph, built by a pure function
//! from the topology the daemon runs (`save`) and what it reports live: link states (`show`),
//! bond members and the active one (`bond show`), tunnels' remotes (`vxlan show`).
//!
//! The graph: the bridge as a node; each namespace a cluster holding the ports whose host side
//! lives there (ports in vswitchd's own namespace sit beside the bridge); a bridge port joined
//! to the bridge by an edge labelled with its VLAN mode; a bond's members joined to the bond;
//! each VXLAN port joined to its remote VTEPs (configured: solid; learned: dashed). A port or
//! member whose link is not up is drawn grey and dashed, and says so.
//!
//! Names come from a file or a live command and may hold any character, so no name is ever a
//! DOT identifier: nodes are numbered (`"p3"`, `"r0"`, `"cluster_1"`) and names appear only
//! inside quoted, escaped labels ([`label`]).

use std::collections::BTreeMap;
use std::fmt::Write;

use vswitchd_dataplane::vxlan::VniMap;

use crate::ctl::{BondInfo, PortSummary, VxlanInfo};
use crate::topology::{PortKind, PortSpec, Topology};

/// `text` as the inside of a quoted DOT label: `"` and `\` escaped (a backslash would otherwise
/// start a Graphviz escape such as `\N` or `\G`), a line feed made a centred line break, and
/// other control characters (which no SVG may hold) replaced by `?`.
pub fn label(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// The label of a port node: its name, kind and what tells it apart.
fn port_label(port: &PortSpec) -> String {
    let mut lines = vec![port.name.clone()];
    match &port.kind {
        PortKind::Tap { .. } | PortKind::Internal => lines.push(port.kind.type_name().to_string()),
        PortKind::Veth { peer, .. } => lines.push(format!("veth (peer {peer})")),
        PortKind::Netdev { device, .. } if *device != port.name => lines.push(format!("netdev {device}")),
        PortKind::Netdev { .. } => lines.push("netdev".into()),
        PortKind::Bond(b) => lines.push(format!("bond {}", b.mode.name())),
        PortKind::Vxlan(v) => {
            let vnis = match &v.vnis {
                VniMap::Single(vni) => format!("VNI {vni}"),
                VniMap::PerVlan(map) => {
                    let list: Vec<String> = map.iter().map(|(vni, vlan)| format!("{vni}→{vlan}")).collect();
                    format!("VNI {}", list.join(","))
                }
            };
            lines.push(format!("vxlan {vnis}"));
            lines.push(format!("local {}", v.local));
        }
        PortKind::Socket(s) => lines.push(format!("socket {} {}", s.framing.name(), s.path.display())),
        PortKind::VhostUser { socket, .. } => lines.push(format!("vhost-user {}", socket.display())),
    }
    if let Some(address) = &port.address {
        lines.push(address.to_string());
    }
    label(&lines.join("\n"))
}

/// What the daemon reports about the running switch beyond its topology; each part may be
/// empty (then the graph shows the topology alone: links as up, remotes as configured).
#[derive(Debug, Clone, Copy, Default)]
pub struct Live<'a> {
    /// `show`'s ports: their link states.
    pub ports: &'a [PortSummary],
    /// `bond show`: members' link phases and the active member.
    pub bonds: &'a [BondInfo],
    /// `vxlan show`: remotes, configured and learned.
    pub tunnels: &'a [VxlanInfo],
}

impl Live<'_> {
    /// The link state of `port` (a bridge port, or a bond member), if reported.
    fn link(&self, port: &PortSpec) -> Option<&str> {
        match &port.master {
            Some(bond) => self
                .bonds
                .iter()
                .find(|b| b.name == *bond)
                .and_then(|b| b.members.iter().find(|m| m.name == port.name))
                .map(|m| m.link.as_str()),
            None => self.ports.iter().find(|p| p.name == port.name).map(|p| p.link.as_str()),
        }
    }

    /// Whether `port` is the active member of its (active-backup) bond.
    fn active_member(&self, port: &PortSpec) -> bool {
        port.master.as_ref().is_some_and(|bond| {
            self.bonds.iter().any(|b| b.name == *bond && b.active.as_deref() == Some(port.name.as_str()))
        })
    }
}

/// The node shape of a port of this kind.
fn shape(kind: &PortKind) -> &'static str {
    match kind {
        PortKind::Bond(_) => "box3d",
        PortKind::Vxlan(_) => "cds",
        PortKind::Internal => "house",
        PortKind::Socket(_) | PortKind::VhostUser { .. } => "component",
        PortKind::Tap { .. } | PortKind::Veth { .. } | PortKind::Netdev { .. } => "box",
    }
}

/// The topology as a Graphviz `graph`: see the module documentation. `live` adds link states,
/// active bond members and learned remotes; a remote named only in the topology is drawn as
/// configured.
pub fn topology_dot(topology: &Topology, live: &Live<'_>) -> String {
    let mut out = String::new();
    let bridge = &topology.bridge.name;
    out.push_str("graph \"vswitchd\" {\n");
    let _ = writeln!(
        out,
        "  graph [label=\"{}\", labelloc=t, rankdir=LR, fontname=\"Helvetica\"];",
        label(&format!("vswitchd bridge {bridge}"))
    );
    out.push_str("  node [fontname=\"Helvetica\", fontsize=11];\n  edge [fontname=\"Helvetica\", fontsize=9];\n");
    let _ =
        writeln!(out, "  \"b\" [label=\"{}\", shape=doubleoctagon, style=bold];", label(&format!("bridge {bridge}")));

    let id: BTreeMap<&str, usize> = topology.ports.iter().enumerate().map(|(i, p)| (p.name.as_str(), i)).collect();
    // Namespaces in file order, then any a port names that no [[netns]] table declares.
    let mut namespaces: Vec<&str> = topology.netns.iter().map(|n| n.name.as_str()).collect();
    for port in &topology.ports {
        if let Some(ns) = port.kind.netns()
            && !namespaces.contains(&ns)
        {
            namespaces.push(ns);
        }
    }
    let node = |out: &mut String, indent: &str, i: usize, port: &PortSpec| match live.link(port).filter(|l| *l != "up")
    {
        Some(link) => {
            let link = if link == "absent" { "absent".to_string() } else { format!("link {}", link.replace('_', " ")) };
            let _ = writeln!(
                out,
                "{indent}\"p{i}\" [label=\"{}\\n{}\", shape={}, style=dashed, color=gray50, fontcolor=gray30];",
                port_label(port),
                label(&link),
                shape(&port.kind)
            );
        }
        None => {
            let _ = writeln!(out, "{indent}\"p{i}\" [label=\"{}\", shape={}];", port_label(port), shape(&port.kind));
        }
    };
    for (i, port) in topology.ports.iter().enumerate().filter(|(_, p)| p.kind.netns().is_none()) {
        node(&mut out, "  ", i, port);
    }
    for (n, ns) in namespaces.iter().enumerate() {
        let _ = writeln!(out, "  subgraph \"cluster_{n}\" {{");
        let _ = writeln!(out, "    label=\"{}\"; style=\"rounded,dashed\";", label(&format!("netns {ns}")));
        for (i, port) in topology.ports.iter().enumerate().filter(|(_, p)| p.kind.netns() == Some(*ns)) {
            node(&mut out, "    ", i, port);
        }
        out.push_str("  }\n");
    }

    for (i, port) in topology.ports.iter().enumerate() {
        match port.master.as_deref().and_then(|m| id.get(m)) {
            Some(bond) if live.active_member(port) => {
                let _ = writeln!(out, "  \"p{bond}\" -- \"p{i}\" [label=\"active member\", style=bold];");
            }
            Some(bond) => {
                let _ = writeln!(out, "  \"p{bond}\" -- \"p{i}\" [label=\"member\", style=dashed];");
            }
            None => {
                let vlan = port.vlan.describe();
                let edge_label = if vlan == "-" { String::new() } else { format!(" [label=\"{}\"]", label(&vlan)) };
                let _ = writeln!(out, "  \"b\" -- \"p{i}\"{edge_label};");
            }
        }
    }

    // Remote VTEPs: one node per address, shared by the tunnel ports that reach it.
    let mut remotes: BTreeMap<String, usize> = BTreeMap::new();
    let mut edges: Vec<(usize, usize, bool)> = Vec::new();
    for (i, port) in topology.ports.iter().enumerate() {
        let PortKind::Vxlan(spec) = &port.kind else { continue };
        let mut listed: Vec<(String, bool)> = spec.remotes.iter().map(|r| (r.to_string(), true)).collect();
        for tunnel in live.tunnels.iter().filter(|t| t.name == port.name) {
            for r in &tunnel.remotes {
                match listed.iter_mut().find(|(a, _)| *a == r.address) {
                    Some(entry) => entry.1 |= r.configured,
                    None => listed.push((r.address.clone(), r.configured)),
                }
            }
        }
        for (address, configured) in listed {
            let next = remotes.len();
            let r = *remotes.entry(address).or_insert(next);
            edges.push((i, r, configured));
        }
    }
    let mut by_index: Vec<(&String, &usize)> = remotes.iter().collect();
    by_index.sort_by_key(|(_, r)| **r);
    for (address, r) in by_index {
        let _ = writeln!(
            out,
            "  \"r{r}\" [label=\"{}\", shape=ellipse, style=dotted];",
            label(&format!("remote VTEP\n{address}"))
        );
    }
    for (i, r, configured) in edges {
        let style = if configured { "label=\"configured\"" } else { "label=\"learned\", style=dashed" };
        let _ = writeln!(out, "  \"p{i}\" -- \"r{r}\" [{style}];");
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::ctl::{MemberInfo, RemoteInfo};

    fn parse(src: &str) -> Topology {
        Topology::parse(Path::new("t.toml"), src).expect("valid topology")
    }

    fn tunnel(name: &str, remotes: &[(&str, bool)]) -> VxlanInfo {
        VxlanInfo {
            name: name.into(),
            local: "192.0.2.1".into(),
            dst_port: 4789,
            learning: true,
            vnis: Vec::new(),
            remotes: remotes
                .iter()
                .map(|(a, configured)| RemoteInfo {
                    address: a.to_string(),
                    configured: *configured,
                    rx_packets: 0,
                    rx_bytes: 0,
                    tx_packets: 0,
                    tx_bytes: 0,
                })
                .collect(),
            macs: Vec::new(),
            drops: BTreeMap::new(),
            stats: Default::default(),
        }
    }

    /// The lines of `dot` holding `needle`.
    fn lines<'a>(dot: &'a str, needle: &str) -> Vec<&'a str> {
        dot.lines().filter(|l| l.contains(needle)).collect()
    }

    #[test]
    fn labels_escape_quotes_backslashes_and_control_characters() {
        assert_eq!(label(r#"a"b"#), r#"a\"b"#);
        assert_eq!(label(r"a\b"), r"a\\b");
        // A trailing backslash must not swallow the closing quote.
        assert_eq!(label("x\\"), "x\\\\");
        assert_eq!(label("two\nlines"), "two\\nlines");
        assert_eq!(label("bell\u{7}tab\t"), "bell?tab?");
        assert_eq!(label("{<b>|ü}; -- [x]"), "{<b>|ü}; -- [x]");
    }

    /// Every `"` in `dot` either opens or closes a quoted string or is escaped, and quoted
    /// strings never end in an odd run of backslashes: the text splits into whole tokens.
    fn quotes_balanced(dot: &str) -> bool {
        dot.lines().all(|line| {
            let mut inside = false;
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' if inside => {
                        chars.next();
                    }
                    '"' => inside = !inside,
                    _ => {}
                }
            }
            !inside
        })
    }

    #[test]
    fn every_kind_is_drawn_with_its_namespace_vlan_bond_and_remotes() {
        let t = parse(
            r#"
[bridge]
name = "br0"
[[netns]]
name = "red"
[[netns]]
name = "blue"
[[port]]
name = "t1"
type = "tap"
netns = "red"
address = "10.0.0.1/24"
vlan = 10
[[port]]
name = "v1"
type = "veth"
netns = "blue"
trunk = [10, 20]
native_vlan = 1
[[port]]
name = "n1"
type = "netdev"
device = "eth9"
[[port]]
name = "i1"
type = "internal"
[[port]]
name = "bond0"
type = "bond"
mode = "active-backup"
[[port]]
name = "m1"
type = "veth"
netns = "blue"
master = "bond0"
[[port]]
name = "m2"
type = "veth"
master = "bond0"
[[port]]
name = "vx0"
type = "vxlan"
vni = 42
local = "192.0.2.1"
remotes = ["192.0.2.2"]
[[port]]
name = "s1"
type = "socket"
path = "/tmp/s1.sock"
"#,
        );
        let tunnels = [tunnel("vx0", &[("192.0.2.2", true), ("192.0.2.9", false)])];
        let dot = topology_dot(&t, &Live { tunnels: &tunnels, ..Live::default() });
        assert!(dot.starts_with("graph \"vswitchd\" {\n") && dot.ends_with("}\n"), "{dot}");
        assert!(quotes_balanced(&dot), "{dot}");
        let index = |name: &str| t.ports.iter().position(|p| p.name == name).unwrap();
        // Kinds.
        assert!(dot.contains(&format!("\"p{}\" [label=\"t1\\ntap\\n10.0.0.1/24\", shape=box];", index("t1"))), "{dot}");
        assert!(dot.contains("v1\\nveth (peer "), "{dot}");
        assert!(dot.contains("n1\\nnetdev eth9"), "{dot}");
        assert!(dot.contains("i1\\ninternal\", shape=house"), "{dot}");
        assert!(dot.contains("bond0\\nbond active-backup\", shape=box3d"), "{dot}");
        assert!(dot.contains("vx0\\nvxlan VNI 42\\nlocal 192.0.2.1\", shape=cds"), "{dot}");
        assert!(dot.contains("s1\\nsocket stream /tmp/s1.sock\", shape=component"), "{dot}");
        // Namespaces: one cluster each, holding their ports, in file order.
        let red = dot.find("label=\"netns red\"").expect("red cluster");
        let blue = dot.find("label=\"netns blue\"").expect("blue cluster");
        assert!(red < blue);
        let t1 = dot.find("label=\"t1\\n").unwrap();
        let v1 = dot.find("label=\"v1\\n").unwrap();
        let m1 = dot.find("label=\"m1\\n").unwrap();
        assert!(red < t1 && t1 < blue && blue < v1 && blue < m1, "{dot}");
        assert_eq!(lines(&dot, "subgraph \"cluster_").len(), 2);
        // Ports of vswitchd's namespace come before any cluster.
        assert!(dot.find("label=\"n1\\n").unwrap() < red);
        // VLANs on the bridge edges; members hang off their bond, not the bridge.
        assert!(dot.contains(&format!("\"b\" -- \"p{}\" [label=\"access 10\"];", index("t1"))), "{dot}");
        assert!(dot.contains(&format!("\"b\" -- \"p{}\" [label=\"trunk 10,20 native 1\"];", index("v1"))), "{dot}");
        assert!(dot.contains(&format!("\"b\" -- \"p{}\";", index("n1"))), "{dot}");
        for m in ["m1", "m2"] {
            assert!(dot.contains(&format!("\"p{}\" -- \"p{}\" [label=\"member\"", index("bond0"), index(m))), "{dot}");
            assert!(!dot.contains(&format!("\"b\" -- \"p{}\"", index(m))), "{dot}");
        }
        assert_eq!(lines(&dot, "\"b\" -- ").len(), 7);
        // Remotes: the configured one once (topology and live state agree), the learned one dashed.
        assert_eq!(lines(&dot, "remote VTEP\\n192.0.2.2").len(), 1, "{dot}");
        let vx = index("vx0");
        assert!(dot.contains(&format!("\"p{vx}\" -- \"r0\" [label=\"configured\"];")), "{dot}");
        assert!(dot.contains(&format!("\"p{vx}\" -- \"r1\" [label=\"learned\", style=dashed];")), "{dot}");
        assert!(dot.contains("\"r1\" [label=\"remote VTEP\\n192.0.2.9\""), "{dot}");
    }

    #[test]
    fn odd_names_stay_inside_their_labels() {
        let t = parse(
            "[bridge]\nname = \"br0\"\n[[netns]]\nname = \"ns-q\"\n[[port]]\nname = \"a\\\"b\\\\\"\ntype = \"tap\"\nnetns = \"ns-q\"\n",
        );
        let dot = topology_dot(&t, &Live::default());
        assert!(quotes_balanced(&dot), "{dot}");
        assert!(dot.contains(r#""p0" [label="a\"b\\\ntap", shape=box];"#), "{dot}");
    }

    #[test]
    fn every_shipped_fixture_draws_one_node_per_port() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
        let mut drawn = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let t = Topology::load(&path).unwrap();
            let dot = topology_dot(&t, &Live::default());
            assert!(quotes_balanced(&dot), "{}: {dot}", path.display());
            for (i, port) in t.ports.iter().enumerate() {
                assert_eq!(lines(&dot, &format!("\"p{i}\" [label=\"{}\\n", label(&port.name))).len(), 1, "{dot}");
            }
            let members = t.ports.iter().filter(|p| p.master.is_some()).count();
            assert_eq!(lines(&dot, "\"b\" -- ").len(), t.ports.len() - members, "{dot}");
            assert_eq!(lines(&dot, "[label=\"member\"").len(), members, "{dot}");
            drawn += 1;
        }
        assert!(drawn >= 5, "fixtures drawn: {drawn}");
    }

    fn summary(name: &str, link: &str) -> PortSummary {
        PortSummary {
            name: name.into(),
            kind: "veth".into(),
            netns: None,
            mtu: 1500,
            link: link.into(),
            link_changes: 0,
            vlan: "-".into(),
            offloads: None,
            offload_refusals: 0,
        }
    }

    fn member(name: &str, link: &str, active: bool) -> MemberInfo {
        MemberInfo {
            name: name.into(),
            link: link.into(),
            usable: link == "up",
            active,
            rx_frames: 0,
            rx_bytes: 0,
            tx_frames: 0,
            tx_bytes: 0,
            drops: BTreeMap::new(),
            lacp: None,
        }
    }

    #[test]
    fn links_not_up_are_greyed_and_the_active_member_is_bold() {
        let t = parse(
            r#"
[bridge]
name = "br0"
[[port]]
name = "up1"
type = "veth"
[[port]]
name = "down1"
type = "veth"
[[port]]
name = "gone1"
type = "netdev"
device = "gone1"
[[port]]
name = "bond0"
type = "bond"
mode = "active-backup"
[[port]]
name = "m1"
type = "veth"
master = "bond0"
[[port]]
name = "m2"
type = "veth"
master = "bond0"
"#,
        );
        let ports =
            [summary("up1", "up"), summary("down1", "down"), summary("gone1", "absent"), summary("bond0", "up")];
        let bonds = [BondInfo {
            name: "bond0".into(),
            mode: "active-backup".into(),
            xmit_hash_policy: None,
            miimon_ms: 100,
            updelay_ms: 0,
            downdelay_ms: 0,
            primary: None,
            active: Some("m2".into()),
            failovers: 1,
            announcements: 0,
            members: vec![member("m1", "going_up", false), member("m2", "up", true)],
        }];
        let dot = topology_dot(&t, &Live { ports: &ports, bonds: &bonds, tunnels: &[] });
        assert!(quotes_balanced(&dot), "{dot}");
        assert!(dot.contains("\"p0\" [label=\"up1\\nveth (peer "), "{dot}");
        assert!(!lines(&dot, "\"p0\" [").concat().contains("dashed"), "{dot}");
        assert!(dot.contains("\\nlink down\", shape=box, style=dashed, color=gray50"), "{dot}");
        assert!(dot.contains("gone1\\nnetdev\\nabsent\", shape=box, style=dashed"), "{dot}");
        assert!(dot.contains("m1\\nveth (peer m1-sw)\\nlink going up\""), "{dot}");
        assert!(dot.contains("\"p3\" -- \"p4\" [label=\"member\", style=dashed];"), "{dot}");
        assert!(dot.contains("\"p3\" -- \"p5\" [label=\"active member\", style=bold];"), "{dot}");
    }

    #[test]
    fn a_remote_reached_by_two_tunnels_is_one_node() {
        let t = parse(
            r#"
[bridge]
name = "br0"
[[port]]
name = "vxa"
type = "vxlan"
vni = 1
local = "192.0.2.1"
remotes = ["192.0.2.7"]
[[port]]
name = "vxb"
type = "vxlan"
vni = 2
local = "192.0.2.1"
remotes = ["192.0.2.7"]
dst_port = 4790
"#,
        );
        let dot = topology_dot(&t, &Live::default());
        assert_eq!(lines(&dot, "remote VTEP").len(), 1, "{dot}");
        assert!(dot.contains("\"p0\" -- \"r0\"") && dot.contains("\"p1\" -- \"r0\""), "{dot}");
    }
}
