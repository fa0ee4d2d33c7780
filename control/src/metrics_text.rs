//! The Prometheus text exposition (format 0.0.4) of one [`MetricsSnapshot`]: a pure function
//! from the replies the show commands give to the text `vswitchctl metrics` prints and
//! `vswitchd --metrics ADDR` serves at `/metrics`.
//!
//! Every family has its `# HELP` and `# TYPE` lines and all its samples together; counters end
//! in `_total`; label values are escaped (`\\`, `\"`, `\n`) so a port name can never break a
//! line. Enumerations (a port's spanning-tree state, a bond member's link phase) are written the
//! usual way: one sample per possible value, 1 for the current one and 0 for the others.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::ctl::{BondShowResult, MdbShowResult, PortShowResult, ShowResult, StpShowResult, VxlanShowResult};

/// Everything the exposition is built from: the same replies `show`, `port show`, `bond show`,
/// `vxlan show` (without its MAC list), `stp show` and `mdb show` give, taken in one dataplane
/// job so they agree with each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// vswitchd's version.
    pub version: String,
    /// `show`.
    pub show: ShowResult,
    /// `port show`.
    pub ports: PortShowResult,
    /// `bond show`.
    pub bonds: BondShowResult,
    /// `vxlan show`, MACs left out.
    pub vxlan: VxlanShowResult,
    /// `stp show`.
    pub stp: StpShowResult,
    /// `mdb show`.
    pub mdb: MdbShowResult,
}

/// The content type the text is served with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Spanning-tree port states, as `stp show` names them.
const STP_STATES: [&str; 3] = ["discarding", "learning", "forwarding"];
/// Bond member link phases, as `bond show` names them.
const MEMBER_LINKS: [&str; 4] = ["up", "down", "going_up", "going_down"];

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes HELP text: backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A metric's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// Labels of one sample: names (valid identifiers, fixed here) and values (escaped on output).
type Labels = Vec<(&'static str, String)>;

/// A counter family taken from one field: its name, its help, the field.
type Counter<T> = (&'static str, &'static str, fn(&T) -> u64);

/// The text being built.
struct Text {
    out: String,
}

impl Text {
    /// Writes one family: its HELP and TYPE lines, then its samples.
    fn family(&mut self, name: &str, kind: Kind, help: &str, samples: impl IntoIterator<Item = (Labels, u64)>) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.out.push_str(name);
            if !labels.is_empty() {
                self.out.push('{');
                for (i, (label, value)) in labels.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let _ = write!(self.out, "{label}=\"{}\"", escape_label(value));
                }
                self.out.push('}');
            }
            let _ = writeln!(self.out, " {value}");
        }
    }

    /// A family of one unlabelled sample.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help, [(Vec::new(), value)]);
    }
}

fn port(name: &str) -> Labels {
    vec![("port", name.to_string())]
}

/// Builds the exposition of `snapshot`.
pub fn exposition(snapshot: &MetricsSnapshot) -> String {
    let mut t = Text { out: String::with_capacity(16 * 1024) };
    let bridge = &snapshot.show.bridge;
    t.family(
        "vswitchd_build_info",
        Kind::Gauge,
        "vswitchd's version and the bridge it runs (always 1).",
        [(vec![("version", snapshot.version.clone()), ("bridge", bridge.name.clone())], 1)],
    );
    write_ports(&mut t, snapshot);
    write_fdb(&mut t, snapshot);
    write_bonds(&mut t, &snapshot.bonds);
    write_vxlan(&mut t, &snapshot.vxlan);
    write_stp(&mut t, &snapshot.stp);
    write_mdb(&mut t, &snapshot.mdb);
    t.out
}

fn write_ports(t: &mut Text, snapshot: &MetricsSnapshot) {
    let stats = &snapshot.ports.ports;
    let counters: [Counter<crate::ctl::PortStats>; 5] = [
        ("vswitchd_port_rx_frames_total", "Frames received on the port.", |p| p.rx_frames),
        ("vswitchd_port_rx_bytes_total", "Bytes received on the port (Ethernet header included).", |p| p.rx_bytes),
        ("vswitchd_port_tx_frames_total", "Frames sent on the port.", |p| p.tx_frames),
        ("vswitchd_port_tx_bytes_total", "Bytes sent on the port (Ethernet header included).", |p| p.tx_bytes),
        ("vswitchd_port_rx_errors_total", "Receive errors on the port.", |p| p.rx_errors),
    ];
    for (name, help, get) in counters {
        t.family(name, Kind::Counter, help, stats.iter().map(|p| (port(&p.name), get(p))));
    }
    t.family(
        "vswitchd_port_drops_total",
        Kind::Counter,
        "Frames dropped, by port and reason (ingress reasons on the port a frame came in on, egress \
         reasons on the port it could not leave by).",
        stats.iter().flat_map(|p| {
            p.drops.iter().map(|(reason, n)| (vec![("port", p.name.clone()), ("reason", reason.clone())], *n))
        }),
    );
    let ports = &snapshot.show.ports;
    t.family(
        "vswitchd_port_info",
        Kind::Gauge,
        "A port, its type and namespace (always 1).",
        ports.iter().map(|p| {
            (
                vec![
                    ("port", p.name.clone()),
                    ("type", p.kind.clone()),
                    ("netns", p.netns.clone().unwrap_or_default()),
                    ("vlan", p.vlan.clone()),
                ],
                1,
            )
        }),
    );
    t.family(
        "vswitchd_port_up",
        Kind::Gauge,
        "Whether the port's link is up (1) or down or absent (0).",
        ports.iter().map(|p| (port(&p.name), u64::from(p.link == "up"))),
    );
    t.family(
        "vswitchd_port_link_changes_total",
        Kind::Counter,
        "Times the port's link state changed.",
        ports.iter().map(|p| (port(&p.name), p.link_changes)),
    );
    t.family(
        "vswitchd_port_mtu_bytes",
        Kind::Gauge,
        "The port's MTU.",
        ports.iter().map(|p| (port(&p.name), u64::from(p.mtu))),
    );
}

fn write_fdb(t: &mut Text, snapshot: &MetricsSnapshot) {
    let b = &snapshot.show.bridge;
    t.single("vswitchd_fdb_entries", Kind::Gauge, "FDB entries now, learned and static.", b.fdb_entries as u64);
    t.single("vswitchd_fdb_learned_entries", Kind::Gauge, "Learned FDB entries now.", b.fdb_learned_entries as u64);
    t.single(
        "vswitchd_fdb_max_learned_entries",
        Kind::Gauge,
        "The bound on learned FDB entries.",
        b.fdb_max_entries as u64,
    );
    t.single("vswitchd_fdb_aging_seconds", Kind::Gauge, "The FDB aging time.", b.fdb_aging_secs);
    t.single("vswitchd_fdb_learns_total", Kind::Counter, "FDB entries learned.", b.fdb_learned);
    t.single("vswitchd_fdb_moves_total", Kind::Counter, "Learned FDB entries that moved to another port.", b.fdb_moved);
    t.single("vswitchd_fdb_expired_total", Kind::Counter, "FDB entries removed by aging.", b.fdb_expired);
    t.single("vswitchd_fdb_evictions_total", Kind::Counter, "FDB entries removed to make room.", b.fdb_evicted);
    t.single(
        "vswitchd_fdb_move_damped_total",
        Kind::Counter,
        "MACs pinned to their port for moving too often (flapping).",
        b.fdb_move_damped,
    );
    t.single(
        "vswitchd_fdb_sync_lost_total",
        Kind::Counter,
        "FDB updates between workers lost on a full inbox (the worker floods instead).",
        b.fdb_sync_lost,
    );
    t.single("vswitchd_worker_threads", Kind::Gauge, "Worker threads forwarding frames.", b.threads as u64);
    t.single(
        "vswitchd_busy_poll_spins_total",
        Kind::Counter,
        "Zero-timeout polls the workers made instead of sleeping (busy polling).",
        b.busy_poll_spins,
    );
    t.single(
        "vswitchd_busy_poll_backoffs_total",
        Kind::Counter,
        "Times a polling worker found its core contended and went back to sleeping.",
        b.busy_poll_backoffs,
    );
    t.family(
        "vswitchd_worker_rx_frames_total",
        Kind::Counter,
        "Frames each worker thread received.",
        b.worker_rx_frames.iter().enumerate().map(|(i, n)| (vec![("worker", i.to_string())], *n)),
    );
}

fn write_bonds(t: &mut Text, bonds: &BondShowResult) {
    let bonds = &bonds.bonds;
    let bond = |name: &str| vec![("bond", name.to_string())];
    t.family(
        "vswitchd_bond_info",
        Kind::Gauge,
        "A bond and its mode (always 1).",
        bonds.iter().map(|b| (vec![("bond", b.name.clone()), ("mode", b.mode.clone())], 1)),
    );
    t.family(
        "vswitchd_bond_failovers_total",
        Kind::Counter,
        "Changes of the bond's active member.",
        bonds.iter().map(|b| (bond(&b.name), b.failovers)),
    );
    t.family(
        "vswitchd_bond_announcements_total",
        Kind::Counter,
        "RARP announcements sent after failovers.",
        bonds.iter().map(|b| (bond(&b.name), b.announcements)),
    );
    let members = || bonds.iter().flat_map(|b| b.members.iter().map(move |m| (b, m)));
    let member = |b: &str, m: &str| vec![("bond", b.to_string()), ("member", m.to_string())];
    t.family(
        "vswitchd_bond_member_link",
        Kind::Gauge,
        "A member's link phase: 1 for the current one (up, down, going_up, going_down), 0 for the others.",
        members().flat_map(|(b, m)| {
            MEMBER_LINKS.iter().map(move |phase| {
                let mut labels = member(&b.name, &m.name);
                labels.push(("link", (*phase).to_string()));
                (labels, u64::from(m.link == *phase))
            })
        }),
    );
    t.family(
        "vswitchd_bond_member_usable",
        Kind::Gauge,
        "Whether the member carries frames.",
        members().map(|(b, m)| (member(&b.name, &m.name), u64::from(m.usable))),
    );
    t.family(
        "vswitchd_bond_member_active",
        Kind::Gauge,
        "Whether the member is the active one (active-backup).",
        members().map(|(b, m)| (member(&b.name, &m.name), u64::from(m.active))),
    );
    let counters: [Counter<crate::ctl::MemberInfo>; 4] = [
        ("vswitchd_bond_member_rx_frames_total", "Frames received on the member.", |m| m.rx_frames),
        ("vswitchd_bond_member_rx_bytes_total", "Bytes received on the member.", |m| m.rx_bytes),
        ("vswitchd_bond_member_tx_frames_total", "Frames sent on the member.", |m| m.tx_frames),
        ("vswitchd_bond_member_tx_bytes_total", "Bytes sent on the member.", |m| m.tx_bytes),
    ];
    for (name, help, get) in counters {
        t.family(name, Kind::Counter, help, members().map(|(b, m)| (member(&b.name, &m.name), get(m))));
    }
    t.family(
        "vswitchd_bond_member_drops_total",
        Kind::Counter,
        "Frames dropped on the member, by reason (reasons seen so far).",
        members().flat_map(|(b, m)| {
            m.drops.iter().map(|(reason, n)| {
                let mut labels = member(&b.name, &m.name);
                labels.push(("reason", reason.clone()));
                (labels, *n)
            })
        }),
    );
    let lacp = || members().filter_map(|(b, m)| m.lacp.as_ref().map(|l| (b, m, l)));
    t.family(
        "vswitchd_bond_member_lacp_distributing",
        Kind::Gauge,
        "Whether LACP lets frames be sent on the member (802.3ad bonds).",
        lacp().map(|(b, m, l)| (member(&b.name, &m.name), u64::from(l.distributing))),
    );
    t.family(
        "vswitchd_bond_member_lacpdus_rx_total",
        Kind::Counter,
        "LACPDUs received on the member.",
        lacp().map(|(b, m, l)| (member(&b.name, &m.name), l.pdus_rx)),
    );
    t.family(
        "vswitchd_bond_member_lacpdus_tx_total",
        Kind::Counter,
        "LACPDUs sent on the member.",
        lacp().map(|(b, m, l)| (member(&b.name, &m.name), l.pdus_tx)),
    );
}

fn write_vxlan(t: &mut Text, vxlan: &VxlanShowResult) {
    let tunnels = &vxlan.tunnels;
    t.family(
        "vswitchd_vxlan_remotes",
        Kind::Gauge,
        "Remote VTEPs of the VXLAN port, configured and learned.",
        tunnels.iter().map(|v| (port(&v.name), v.remotes.len() as u64)),
    );
    let remotes = || tunnels.iter().flat_map(|v| v.remotes.iter().map(move |r| (v, r)));
    let remote = |p: &str, r: &crate::ctl::RemoteInfo| {
        vec![
            ("port", p.to_string()),
            ("remote", r.address.clone()),
            ("configured", if r.configured { "true" } else { "false" }.to_string()),
        ]
    };
    let counters: [Counter<crate::ctl::RemoteInfo>; 4] = [
        ("vswitchd_vxlan_remote_rx_packets_total", "VXLAN packets received from the remote.", |r| r.rx_packets),
        ("vswitchd_vxlan_remote_rx_bytes_total", "Inner bytes received from the remote.", |r| r.rx_bytes),
        ("vswitchd_vxlan_remote_tx_packets_total", "VXLAN packets sent to the remote.", |r| r.tx_packets),
        ("vswitchd_vxlan_remote_tx_bytes_total", "Inner bytes sent to the remote.", |r| r.tx_bytes),
    ];
    for (name, help, get) in counters {
        t.family(name, Kind::Counter, help, remotes().map(|(v, r)| (remote(&v.name, r), get(r))));
    }
    // The endpoint's table counters, one family per field of `VxlanStats` (so a new field
    // shows up here without a change).
    let stats: Vec<(String, serde_json::Map<String, serde_json::Value>)> = tunnels
        .iter()
        .filter_map(|v| match serde_json::to_value(v.stats) {
            Ok(serde_json::Value::Object(map)) => Some((v.name.clone(), map)),
            _ => None,
        })
        .collect();
    let mut fields: Vec<&String> = stats.iter().flat_map(|(_, m)| m.keys()).collect();
    fields.sort();
    fields.dedup();
    for field in fields {
        let name = format!("vswitchd_vxlan_{}_total", sanitize(field));
        t.family(
            &name,
            Kind::Counter,
            &format!("VXLAN endpoint counter {field} (see `vxlan show`)."),
            stats.iter().filter_map(|(p, m)| m.get(field).and_then(serde_json::Value::as_u64).map(|n| (port(p), n))),
        );
    }
}

/// Keeps a metric name part to `[a-z0-9_]`.
fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

fn write_stp(t: &mut Text, stp: &StpShowResult) {
    t.family(
        "vswitchd_stp_enabled",
        Kind::Gauge,
        "Whether the spanning tree runs, by mode (rstp or stp).",
        [(vec![("mode", stp.mode.clone())], u64::from(stp.mode != "off"))],
    );
    if stp.mode == "off" {
        return;
    }
    t.single(
        "vswitchd_stp_is_root",
        Kind::Gauge,
        "Whether this bridge is the root bridge.",
        u64::from(stp.bridge_id.is_some() && stp.bridge_id == stp.root_id),
    );
    t.single("vswitchd_stp_root_path_cost", Kind::Gauge, "The cost to the root bridge.", u64::from(stp.root_path_cost));
    t.single(
        "vswitchd_stp_topology_changes_total",
        Kind::Counter,
        "Topology changes detected or received.",
        stp.topology_changes,
    );
    t.family(
        "vswitchd_stp_port_state",
        Kind::Gauge,
        "A port's spanning-tree state: 1 for the current one (discarding, learning, forwarding), 0 for the others.",
        stp.ports.iter().flat_map(|p| {
            STP_STATES
                .iter()
                .map(move |s| (vec![("port", p.name.clone()), ("state", (*s).to_string())], u64::from(p.state == *s)))
        }),
    );
    t.family(
        "vswitchd_stp_port_forward_transitions_total",
        Kind::Counter,
        "Times the port started forwarding.",
        stp.ports.iter().map(|p| (port(&p.name), p.forward_transitions)),
    );
    t.family(
        "vswitchd_stp_port_bpdus_rx_total",
        Kind::Counter,
        "BPDUs received on the port.",
        stp.ports.iter().map(|p| (port(&p.name), p.bpdus_rx)),
    );
    t.family(
        "vswitchd_stp_port_bpdus_tx_total",
        Kind::Counter,
        "BPDUs sent on the port.",
        stp.ports.iter().map(|p| (port(&p.name), p.bpdus_tx)),
    );
}

fn write_mdb(t: &mut Text, mdb: &MdbShowResult) {
    t.single("vswitchd_mdb_snooping", Kind::Gauge, "Whether IGMP/MLD snooping is on.", u64::from(mdb.snooping));
    t.single("vswitchd_mdb_groups", Kind::Gauge, "(VLAN, group) entries in the multicast table.", mdb.groups as u64);
    t.single("vswitchd_mdb_max_groups", Kind::Gauge, "The bound on multicast table entries.", mdb.max_groups as u64);
    t.single(
        "vswitchd_mdb_joins_refused_total",
        Kind::Counter,
        "Joins refused because the table was full.",
        mdb.refused,
    );
    t.single("vswitchd_mdb_queries_sent_total", Kind::Counter, "General queries the querier sent.", mdb.queries_sent);
    t.single(
        "vswitchd_mdb_group_queries_sent_total",
        Kind::Counter,
        "Group-specific queries sent after leaves.",
        mdb.group_queries_sent,
    );
    let mut per_port: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for m in &mdb.members {
        *per_port.entry(m.port.as_str()).or_default() += 1;
    }
    t.family(
        "vswitchd_mdb_port_groups",
        Kind::Gauge,
        "Groups the port is a member of (ports with none are left out).",
        per_port.into_iter().map(|(p, n)| (port(p), n)),
    );
    t.single("vswitchd_mdb_router_ports", Kind::Gauge, "Multicast router ports.", mdb.routers.len() as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> MetricsSnapshot {
        serde_json::from_str(include_str!("../../tests/fixtures/metrics_snapshot.json")).unwrap()
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("plain-name.0"), "plain-name.0");
        assert_eq!(escape_label(r#"a"b"#), r#"a\"b"#);
        assert_eq!(escape_label(r"a\b"), r"a\\b");
        assert_eq!(escape_label("a\nb"), r"a\nb");
        assert_eq!(escape_label("\\\"\n"), r#"\\\"\n"#);
        assert_eq!(escape_label("ünï,=}{"), "ünï,=}{");
        assert_eq!(escape_help("a\\b\nc \"quoted\""), "a\\\\b\\nc \"quoted\"");
    }

    /// Checks the layout: each family opens with HELP then TYPE, its samples follow it (named
    /// as it is), no family appears twice; returns the families with their types, in order.
    fn families(text: &str) -> Vec<(String, String)> {
        let mut seen: Vec<(String, String)> = Vec::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            let help = line.strip_prefix("# HELP ").unwrap_or_else(|| panic!("expected HELP, got {line:?}"));
            let name = help.split(' ').next().unwrap().to_string();
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{name}");
            let type_line = lines.next().unwrap();
            let kind = type_line
                .strip_prefix(&format!("# TYPE {name} "))
                .unwrap_or_else(|| panic!("expected TYPE {name}, got {type_line:?}"))
                .to_string();
            assert!(kind == "counter" || kind == "gauge", "{type_line}");
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name} is a {kind}");
            assert!(!seen.iter().any(|(n, _)| *n == name), "{name} twice");
            while let Some(sample) = lines.next_if(|l| !l.starts_with('#')) {
                let sample_name = sample.split(['{', ' ']).next().unwrap();
                assert_eq!(sample_name, name, "{sample}");
                let value = sample.rsplit(' ').next().unwrap();
                assert!(value.parse::<u64>().is_ok(), "{sample}");
            }
            seen.push((name, kind));
        }
        seen
    }

    #[test]
    fn every_family_has_help_type_and_its_samples_together() {
        let text = exposition(&example());
        let families = families(&text);
        for wanted in [
            "vswitchd_build_info",
            "vswitchd_port_rx_frames_total",
            "vswitchd_port_rx_bytes_total",
            "vswitchd_port_tx_frames_total",
            "vswitchd_port_tx_bytes_total",
            "vswitchd_port_rx_errors_total",
            "vswitchd_port_drops_total",
            "vswitchd_port_info",
            "vswitchd_port_up",
            "vswitchd_port_link_changes_total",
            "vswitchd_fdb_entries",
            "vswitchd_fdb_learns_total",
            "vswitchd_fdb_moves_total",
            "vswitchd_fdb_evictions_total",
            "vswitchd_worker_rx_frames_total",
            "vswitchd_busy_poll_spins_total",
            "vswitchd_busy_poll_backoffs_total",
            "vswitchd_bond_failovers_total",
            "vswitchd_bond_member_link",
            "vswitchd_bond_member_active",
            "vswitchd_bond_member_drops_total",
            "vswitchd_bond_member_lacpdus_rx_total",
            "vswitchd_vxlan_remotes",
            "vswitchd_vxlan_remote_rx_packets_total",
            "vswitchd_vxlan_macs_learned_total",
            "vswitchd_stp_topology_changes_total",
            "vswitchd_stp_port_state",
            "vswitchd_mdb_groups",
            "vswitchd_mdb_port_groups",
        ] {
            assert!(families.iter().any(|(n, _)| n == wanted), "{wanted} missing from\n{text}");
        }
    }

    #[test]
    fn samples_carry_the_snapshot_values_with_escaped_labels() {
        let text = exposition(&example());
        let lines: Vec<&str> = text.lines().collect();
        for wanted in [
            r#"vswitchd_build_info{version="0.1.0",bridge="br0"} 1"#,
            r#"vswitchd_port_rx_frames_total{port="p1"} 100"#,
            r#"vswitchd_port_tx_bytes_total{port="p1"} 11520"#,
            r#"vswitchd_port_rx_errors_total{port="we\"ird\\port"} 1"#,
            r#"vswitchd_port_drops_total{port="p1",reason="runt"} 2"#,
            r#"vswitchd_port_drops_total{port="p1",reason="no_room"} 0"#,
            r#"vswitchd_port_drops_total{port="we\"ird\\port",reason="no_room"} 7"#,
            r#"vswitchd_port_info{port="we\"ird\\port",type="veth",netns="line\nbreak",vlan="-"} 1"#,
            r#"vswitchd_port_up{port="we\"ird\\port"} 0"#,
            r#"vswitchd_port_up{port="p1"} 1"#,
            r#"vswitchd_port_link_changes_total{port="we\"ird\\port"} 4"#,
            "vswitchd_fdb_entries 5",
            "vswitchd_fdb_learned_entries 4",
            "vswitchd_fdb_learns_total 17",
            "vswitchd_fdb_moves_total 2",
            "vswitchd_fdb_expired_total 3",
            "vswitchd_fdb_evictions_total 1",
            "vswitchd_worker_threads 2",
            r#"vswitchd_worker_rx_frames_total{worker="1"} 30"#,
            r#"vswitchd_bond_info{bond="bond0",mode="active-backup"} 1"#,
            r#"vswitchd_bond_failovers_total{bond="bond0"} 3"#,
            r#"vswitchd_bond_member_link{bond="bond0",member="m1",link="up"} 1"#,
            r#"vswitchd_bond_member_link{bond="bond0",member="m1",link="down"} 0"#,
            r#"vswitchd_bond_member_link{bond="bond0",member="m\"2",link="going_down"} 1"#,
            r#"vswitchd_bond_member_active{bond="bond0",member="m1"} 1"#,
            r#"vswitchd_bond_member_usable{bond="bond0",member="m\"2"} 0"#,
            r#"vswitchd_bond_member_drops_total{bond="bond0",member="m\"2",reason="bond_inactive"} 9"#,
            r#"vswitchd_bond_member_lacpdus_tx_total{bond="bond0",member="m\"2"} 12"#,
            r#"vswitchd_vxlan_remotes{port="vx0"} 2"#,
            r#"vswitchd_vxlan_remote_tx_packets_total{port="vx0",remote="10.0.0.2",configured="true"} 4"#,
            r#"vswitchd_vxlan_remote_rx_bytes_total{port="vx0",remote="fd00::3",configured="false"} 0"#,
            r#"vswitchd_vxlan_macs_learned_total{port="vx0"} 5"#,
            r#"vswitchd_stp_enabled{mode="rstp"} 1"#,
            "vswitchd_stp_is_root 1",
            "vswitchd_stp_topology_changes_total 2",
            r#"vswitchd_stp_port_state{port="p1",state="forwarding"} 1"#,
            r#"vswitchd_stp_port_state{port="p1",state="discarding"} 0"#,
            r#"vswitchd_stp_port_state{port="we\"ird\\port",state="discarding"} 1"#,
            r#"vswitchd_stp_port_bpdus_rx_total{port="we\"ird\\port"} 8"#,
            "vswitchd_mdb_groups 2",
            "vswitchd_mdb_group_queries_sent_total 1",
            r#"vswitchd_mdb_port_groups{port="p1"} 2"#,
            r#"vswitchd_mdb_port_groups{port="bond0"} 1"#,
            "vswitchd_mdb_router_ports 1",
        ] {
            assert!(lines.contains(&wanted), "{wanted} missing from\n{text}");
        }
        // No raw line break inside a label: every line is a comment or a whole sample.
        assert!(lines.iter().all(|l| l.starts_with('#') || l.ends_with(|c: char| c.is_ascii_digit())));
    }

    #[test]
    fn an_idle_switch_without_bonds_tunnels_or_tree_still_exposes_every_family_it_has() {
        let mut snapshot = example();
        snapshot.bonds.bonds.clear();
        snapshot.vxlan.tunnels.clear();
        snapshot.stp.mode = "off".into();
        snapshot.stp.ports.clear();
        snapshot.mdb.members.clear();
        let text = exposition(&snapshot);
        let families = families(&text);
        assert!(families.iter().any(|(n, _)| n == "vswitchd_bond_failovers_total"));
        assert!(text.lines().any(|l| l == r#"vswitchd_stp_enabled{mode="off"} 0"#), "{text}");
        assert!(!families.iter().any(|(n, _)| n == "vswitchd_stp_port_state"));
        assert!(!text.lines().any(|l| l.starts_with("vswitchd_bond_failovers_total")));
    }
}
