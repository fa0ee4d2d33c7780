//! A running [`Topology`] printed back as a topology file, and changed by live commands: every
//! change rewrites the topology's TOML tables and validates them with [`Topology::parse`], so
//! the daemon accepts exactly the changes a file could have made, refused by key.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use toml::Value;
use vswitchd_dataplane::bond::{BondMode, HashPolicy};
use vswitchd_dataplane::port_modes::PortModes;
use vswitchd_dataplane::vlan::{TPID_8021AD, VlanMode};
use vswitchd_dataplane::vxlan::VniMap;
use vswitchd_dataplane::wire::vxlan;

use crate::topology::{
    BOND_INTERVAL_MAX_MS, BondSpec, BridgeSpec, ConfigError, DEFAULT_FDB_AGING_SECS, DEFAULT_FDB_MAX_ENTRIES,
    DEFAULT_MIIMON_MS, DEFAULT_MTU, DEFAULT_VXLAN_TTL, HostServices, NetnsSpec, PortKind, PortSpec, PortStpSpec,
    SocketFraming, StpSpec, Threads, Topology, VxlanSpec,
};

/// Every key a `[[port]]` table takes (as `Topology::parse` reads them).
pub const PORT_KEYS: &[&str] = &[
    "name",
    "type",
    "netns",
    "address",
    "mac",
    "mtu",
    "vlan",
    "trunk",
    "native_vlan",
    "vlan_mode",
    "vlan_protocol",
    "master",
    "mode",
    "miimon_ms",
    "updelay_ms",
    "downdelay_ms",
    "primary",
    "xmit_hash_policy",
    "lacp",
    "lacp_rate",
    "config",
    "peer",
    "device",
    "vni",
    "vnis",
    "local",
    "remotes",
    "dst_port",
    "learning",
    "allowed_remotes",
    "ttl",
    "arp_suppress",
    "control",
    "path",
    "framing",
    "server",
    "socket",
    "dhcp",
    "dns",
    "masquerade",
    "isolated",
    "hairpin",
    "mac_limit",
    "allowed_macs",
    "storm_pps",
    "stp_cost",
    "stp_priority",
    "edge",
    "bpdu_guard",
    "mrouter",
];

/// The port keys that together make a port's VLAN mode: setting one clears the others.
pub const VLAN_KEYS: &[&str] = &["vlan", "trunk", "native_vlan", "vlan_mode", "vlan_protocol"];

/// The port keys whose values are strings, so that a bare word that looks like a number or a
/// boolean (`mode=4`, `lacp_rate=1`, `device=1`) is still the string it means.
const STRING_KEYS: &[&str] = &[
    "name",
    "type",
    "netns",
    "address",
    "mac",
    "vlan_mode",
    "vlan_protocol",
    "master",
    "mode",
    "primary",
    "xmit_hash_policy",
    "lacp",
    "lacp_rate",
    "config",
    "peer",
    "device",
    "local",
    "path",
    "framing",
    "socket",
];

/// A refused change to a running topology: the key it concerns (a bare port key such as `vlan`,
/// when there is one) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditError {
    /// The bare key (`vlan`, `address`, `name`, ...), when the error concerns one.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl EditError {
    fn on_key(key: &str, message: impl Into<String>) -> EditError {
        EditError { key: Some(key.to_string()), message: message.into() }
    }

    fn general(message: impl Into<String>) -> EditError {
        EditError { key: None, message: message.into() }
    }
}

impl fmt::Display for EditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "key `{key}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for EditError {}

/// Whether `value` is what an empty `KEY=` gives: the request to remove the key. No key takes
/// an empty string, so `KEY=""` means the same.
pub fn is_removal(value: &Value) -> bool {
    matches!(value, Value::String(s) if s.is_empty())
}

/// Reads command-line `KEY=VALUE` words. A VALUE that parses as a TOML value is that value
/// (`10`, `true`, `[10,20]`, `"quoted"`); anything else is a bare string (`red`,
/// `10.0.0.5/24`, `02:00:00:00:00:01`), and so is a float or a date, which no key takes. A
/// bracketed list that is not TOML is a list of such words (`[192.0.2.2,192.0.2.3]`). Keys
/// that take strings take a number-like word as a string (`mode=4`). `KEY=` (an empty value)
/// asks to remove the key; see [`is_removal`].
pub fn parse_assignments(args: &[String]) -> Result<Vec<(String, Value)>, EditError> {
    args.iter()
        .map(|arg| {
            let Some((key, text)) = arg.split_once('=') else {
                return Err(EditError::general(format!("{arg:?} is not KEY=VALUE")));
            };
            if key.is_empty() {
                return Err(EditError::general(format!("{arg:?} has no key before '='")));
            }
            if !is_bare_key(key) {
                return Err(EditError::general(format!("{arg:?}: a key holds only letters, digits, '-' and '_'")));
            }
            let value = match word_value(text) {
                Value::Integer(_) | Value::Boolean(_) if STRING_KEYS.contains(&key) => Value::String(text.to_string()),
                v => v,
            };
            Ok((key.to_string(), value))
        })
        .collect()
}

/// One command-line VALUE, as [`parse_assignments`] describes.
fn word_value(text: &str) -> Value {
    match (toml_word_value(text), text.strip_prefix('[').and_then(|t| t.strip_suffix(']'))) {
        (Some(value), _) => value,
        (None, Some(inner)) => Value::Array(
            inner
                .split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(|w| toml_word_value(w).unwrap_or_else(|| Value::String(w.to_string())))
                .collect(),
        ),
        (None, None) => Value::String(text.to_string()),
    }
}

/// `text` as a TOML value, unless it is not one or is one no key takes (a float, a date).
fn toml_word_value(text: &str) -> Option<Value> {
    text.parse::<Value>().ok().filter(|v| !matches!(v, Value::Float(_) | Value::Datetime(_)))
}

/// Whether `key` can be written as a bare TOML key.
fn is_bare_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// One table's keys and values, in the order they are written.
type TableEntries = Vec<(String, Value)>;

/// Which table of a topology file a line or a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Bridge,
    Netns(usize),
    Port(usize),
}

/// A topology file as its tables, the form in which edits are made.
#[derive(Debug, Clone)]
struct FileTables {
    bridge: TableEntries,
    netns: Vec<TableEntries>,
    ports: Vec<TableEntries>,
}

/// The text of a [`FileTables`], with the line each table starts on.
#[derive(Debug)]
struct RenderedFile {
    text: String,
    section_starts: Vec<(usize, Section)>,
}

impl RenderedFile {
    /// The table that holds 1-based `line`.
    fn section_at(&self, line: usize) -> Option<Section> {
        self.section_starts.iter().rev().find(|(start, _)| *start <= line).map(|(_, section)| *section)
    }
}

/// Collects one table's entries.
#[derive(Debug, Default)]
struct TableWriter(TableEntries);

impl TableWriter {
    fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.0.push((key.to_string(), value.into()));
    }

    fn set_string(&mut self, key: &str, value: impl fmt::Display) {
        self.set(key, Value::String(value.to_string()));
    }

    fn set_strings<T: fmt::Display>(&mut self, key: &str, values: &[T]) {
        if !values.is_empty() {
            self.set(key, Value::Array(values.iter().map(|v| Value::String(v.to_string())).collect()));
        }
    }
}

fn bridge_entries(bridge: &BridgeSpec) -> TableEntries {
    let mut w = TableWriter::default();
    w.set_string("name", &bridge.name);
    if bridge.fdb_aging != Duration::from_secs(DEFAULT_FDB_AGING_SECS) {
        w.set("fdb_aging_secs", saturating_i64(u128::from(bridge.fdb_aging.as_secs())));
    }
    if bridge.fdb_max_entries != DEFAULT_FDB_MAX_ENTRIES {
        w.set("fdb_max_entries", saturating_i64(bridge.fdb_max_entries as u128));
    }
    if let Threads::Count(n) = bridge.threads {
        w.set("threads", saturating_i64(n as u128));
    }
    stp_bridge_entries(&mut w, bridge.stp.as_ref());
    mcast_entries(&mut w, &bridge.mcast);
    w.0
}

/// The `[bridge]` table's spanning tree keys that differ from their defaults.
fn stp_bridge_entries(w: &mut TableWriter, stp: Option<&StpSpec>) {
    let Some(stp) = stp else { return };
    w.set_string("stp", stp.mode.name());
    let defaults = StpSpec::new(stp.mode);
    if stp.priority != defaults.priority {
        w.set("stp_priority", i64::from(stp.priority));
    }
    for (key, value, default) in [
        ("hello_secs", stp.hello_secs, defaults.hello_secs),
        ("forward_delay_secs", stp.forward_delay_secs, defaults.forward_delay_secs),
        ("max_age_secs", stp.max_age_secs, defaults.max_age_secs),
    ] {
        if value != default {
            w.set(key, saturating_i64(u128::from(value)));
        }
    }
}

/// A port's spanning tree keys that differ from their defaults.
fn stp_port_entries(w: &mut TableWriter, stp: &PortStpSpec) {
    let defaults = PortStpSpec::default();
    if stp.cost != defaults.cost {
        w.set("stp_cost", i64::from(stp.cost));
    }
    if stp.priority != defaults.priority {
        w.set("stp_priority", i64::from(stp.priority));
    }
    if stp.edge {
        w.set("edge", true);
    }
    if stp.bpdu_guard {
        w.set("bpdu_guard", true);
    }
}

/// The `[bridge]` table's `mcast_*` keys, those that differ from the defaults.
fn mcast_entries(w: &mut TableWriter, mcast: &vswitchd_dataplane::mdb::McastConfig) {
    let defaults = vswitchd_dataplane::mdb::McastConfig::default();
    if !mcast.snooping {
        return; // the other keys need snooping on
    }
    w.set("mcast_snooping", true);
    if mcast.querier != defaults.querier {
        w.set("mcast_querier", mcast.querier);
    }
    if mcast.aging != defaults.aging {
        w.set("mcast_aging_secs", saturating_i64(u128::from(mcast.aging.as_secs())));
    }
    if mcast.flood_unknown != defaults.flood_unknown {
        w.set("mcast_flood_unknown", mcast.flood_unknown);
    }
}

fn netns_entries(netns: &NetnsSpec) -> TableEntries {
    let mut w = TableWriter::default();
    w.set_string("name", &netns.name);
    if !netns.routes.is_empty() {
        let routes = netns.routes.iter().map(|r| {
            let mut route = toml::Table::new();
            let dst = r.dst.map_or_else(|| "default".to_string(), |d| d.to_string());
            route.insert("dst".into(), Value::String(dst));
            route.insert("via".into(), Value::String(r.via.to_string()));
            Value::Table(route)
        });
        w.set("routes", Value::Array(routes.collect()));
    }
    if netns.hosts {
        w.set("hosts", true);
    }
    w.0
}

fn port_entries(port: &PortSpec) -> TableEntries {
    let mut w = TableWriter::default();
    w.set_string("name", &port.name);
    match &port.kind {
        PortKind::Tap { netns } => {
            w.set_string("type", "tap");
            if let Some(ns) = netns {
                w.set_string("netns", ns);
            }
        }
        PortKind::Internal => w.set_string("type", "internal"),
        PortKind::Veth { netns, peer } => {
            w.set_string("type", "veth");
            if let Some(ns) = netns {
                w.set_string("netns", ns);
            }
            w.set_string("peer", peer);
        }
        PortKind::Netdev { device, netns } => {
            w.set_string("type", "netdev");
            w.set_string("device", device);
            if let Some(ns) = netns {
                w.set_string("netns", ns);
            }
        }
        PortKind::Bond(spec) => bond_entries(&mut w, spec),
        PortKind::Vxlan(spec) => vxlan_entries(&mut w, spec),
        PortKind::Socket(spec) => {
            w.set_string("type", "socket");
            w.set_string("path", spec.path.display());
            w.set_string("framing", spec.framing.name());
            if !spec.server && spec.framing == SocketFraming::Stream {
                w.set("server", false);
            }
        }
        PortKind::VhostUser { socket, server } => {
            w.set_string("type", "vhost-user");
            w.set_string("socket", socket.display());
            if !server {
                w.set("server", false);
            }
        }
    }
    // With a VNI map the port's VLANs come from the map.
    if !matches!(&port.kind, PortKind::Vxlan(VxlanSpec { vnis: VniMap::PerVlan(_), .. })) {
        vlan_entries(&mut w, &port.vlan);
    }
    if let Some(address) = port.address {
        w.set_string("address", address);
    }
    if let Some(mac) = port.mac {
        w.set_string("mac", mac);
    }
    if port.mtu != DEFAULT_MTU {
        w.set("mtu", i64::from(port.mtu));
    }
    if let Some(master) = &port.master {
        w.set_string("master", master);
    }
    host_service_entries(&mut w, &port.services);
    mode_entries(&mut w, &port.modes);
    stp_port_entries(&mut w, &port.stp);
    if port.mrouter {
        w.set("mrouter", true);
    }
    w.0
}

/// An internal port's `dhcp`, `dns` and `masquerade`.
fn host_service_entries(w: &mut TableWriter, services: &HostServices) {
    if let Some(dhcp) = &services.dhcp {
        let mut table = toml::Table::new();
        table.insert("range".into(), Value::String(format!("{}-{}", dhcp.start, dhcp.end)));
        table.insert("lease_secs".into(), Value::Integer(i64::from(dhcp.lease_secs)));
        w.set("dhcp", Value::Table(table));
    }
    if services.dns {
        w.set("dns", true);
    }
    if services.masquerade {
        w.set("masquerade", true);
    }
}

/// A port's modes, those not at their defaults.
fn mode_entries(w: &mut TableWriter, modes: &PortModes) {
    if modes.isolated {
        w.set("isolated", true);
    }
    if modes.hairpin {
        w.set("hairpin", true);
    }
    if let Some(n) = modes.mac_limit {
        w.set("mac_limit", i64::from(n));
    }
    w.set_strings("allowed_macs", &modes.allowed_macs);
    let mut storm = toml::Table::new();
    let s = modes.storm_pps;
    for (name, value) in
        [("broadcast", s.broadcast), ("multicast", s.multicast), ("unknown_unicast", s.unknown_unicast)]
    {
        if let Some(n) = value {
            storm.insert(name.into(), Value::Integer(i64::from(n)));
        }
    }
    if !storm.is_empty() {
        w.set("storm_pps", Value::Table(storm));
    }
}

fn vlan_entries(w: &mut TableWriter, vlan: &VlanMode) {
    match vlan {
        VlanMode::Transparent => {}
        VlanMode::Access(v) => w.set("vlan", i64::from(v.get())),
        VlanMode::Dot1qTunnel(v) => {
            w.set("vlan", i64::from(v.get()));
            w.set_string("vlan_mode", "dot1q-tunnel");
        }
        VlanMode::Trunk { allowed, native, tpid } => {
            w.set("trunk", Value::Array(allowed.iter().map(|v| Value::Integer(i64::from(v.get()))).collect()));
            if let Some(native) = native {
                w.set("native_vlan", i64::from(native.get()));
            }
            if *tpid == TPID_8021AD {
                w.set_string("vlan_protocol", "802.1ad");
            }
        }
    }
}

fn vxlan_entries(w: &mut TableWriter, spec: &VxlanSpec) {
    w.set_string("type", "vxlan");
    match &spec.vnis {
        VniMap::Single(vni) => w.set("vni", i64::from(*vni)),
        VniMap::PerVlan(map) => {
            let entries = map.iter().map(|(vni, vlan)| {
                let mut entry = toml::Table::new();
                entry.insert("vni".into(), Value::Integer(i64::from(*vni)));
                entry.insert("vlan".into(), Value::Integer(i64::from(vlan.get())));
                Value::Table(entry)
            });
            w.set("vnis", Value::Array(entries.collect()));
        }
    }
    w.set_string("local", spec.local);
    w.set_strings("remotes", &spec.remotes);
    if spec.dst_port != vxlan::DEFAULT_PORT {
        w.set("dst_port", i64::from(spec.dst_port));
    }
    if !spec.learning {
        w.set("learning", false);
    }
    w.set_strings("allowed_remotes", &spec.allowed_remotes);
    if spec.ttl != DEFAULT_VXLAN_TTL {
        w.set("ttl", i64::from(spec.ttl));
    }
    if spec.arp_suppress {
        w.set("arp_suppress", true);
    }
    if spec.evpn {
        w.set_string("control", "evpn");
    }
}

/// The hash policy a bond mode carries, if it hashes.
fn hash_policy(mode: BondMode) -> Option<HashPolicy> {
    match mode {
        BondMode::BalanceXor(policy) | BondMode::Lacp(policy) => Some(policy),
        BondMode::BalanceRr | BondMode::ActiveBackup | BondMode::Broadcast => None,
    }
}

/// `d` in whole milliseconds, if it is a whole number of them.
fn whole_millis(d: Duration) -> Option<u64> {
    (d.subsec_nanos() % 1_000_000 == 0).then(|| u64::try_from(d.as_millis()).ok()).flatten()
}

/// Whether the keys of a `bond` table can say all of `spec`. A team can give a bond what a bond
/// table cannot: LACP settings outside 802.3ad, or link delays past the bond's limit.
fn fits_bond_table(spec: &BondSpec) -> bool {
    let in_range = |d: Duration, min: u64| whole_millis(d).is_some_and(|ms| (min..=BOND_INTERVAL_MAX_MS).contains(&ms));
    let lacp_as_default = spec.lacp_active && !spec.lacp_fast;
    in_range(spec.miimon, 1)
        && in_range(spec.updelay, 0)
        && in_range(spec.downdelay, 0)
        && (matches!(spec.mode, BondMode::Lacp(_)) || lacp_as_default)
}

fn bond_entries(w: &mut TableWriter, spec: &BondSpec) {
    if !fits_bond_table(spec) {
        w.set_string("type", "team");
        w.set_string("config", team_config(spec));
        return;
    }
    w.set_string("type", "bond");
    w.set_string("mode", spec.mode.name());
    if let Some(policy) = hash_policy(spec.mode).filter(|p| *p != HashPolicy::Layer2) {
        w.set_string("xmit_hash_policy", policy.name());
    }
    for (key, value, default) in [
        ("miimon_ms", spec.miimon, DEFAULT_MIIMON_MS),
        ("updelay_ms", spec.updelay, 0),
        ("downdelay_ms", spec.downdelay, 0),
    ] {
        let ms = whole_millis(value).unwrap_or(u64::MAX);
        if ms != default {
            w.set(key, saturating_i64(u128::from(ms)));
        }
    }
    if let Some(primary) = &spec.primary {
        w.set_string("primary", primary);
    }
    if matches!(spec.mode, BondMode::Lacp(_)) {
        if !spec.lacp_active {
            w.set_string("lacp", "passive");
        }
        if spec.lacp_fast {
            w.set_string("lacp_rate", "fast");
        }
    }
}

/// teamd's JSON configuration for a bond a `bond` table cannot say.
fn team_config(spec: &BondSpec) -> String {
    let runner = match spec.mode {
        BondMode::BalanceRr => "roundrobin",
        BondMode::ActiveBackup => "activebackup",
        BondMode::BalanceXor(_) => "loadbalance",
        BondMode::Broadcast => "broadcast",
        BondMode::Lacp(_) => "lacp",
    };
    let mut runner = serde_json::json!({
        "name": runner,
        "active": spec.lacp_active,
        "fast_rate": spec.lacp_fast,
    });
    if let Some(policy) = hash_policy(spec.mode) {
        let tx_hash: &[&str] = match policy {
            HashPolicy::Layer2 => &["eth"],
            HashPolicy::Layer23 => &["eth", "ipv4", "ipv6"],
            HashPolicy::Layer34 => &["eth", "ipv4", "ipv6", "l4"],
        };
        runner["tx_hash"] = serde_json::json!(tx_hash);
    }
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    serde_json::json!({
        "runner": runner,
        "link_watch": {"name": "ethtool", "delay_up": millis(spec.updelay), "delay_down": millis(spec.downdelay)},
    })
    .to_string()
}

fn saturating_i64(n: u128) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `key` as written before `=`: bare when it can be, else quoted.
fn key_text(key: &str) -> String {
    if is_bare_key(key) { key.to_string() } else { Value::String(key.to_string()).to_string() }
}

/// The string value of `key` in `entries`.
fn string_entry<'a>(entries: &'a TableEntries, key: &str) -> Option<&'a str> {
    entries.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.as_str())
}

/// The bare key in a [`ConfigError`] key: `port[3].trunk[1]` is `trunk`, `port[3]` is empty.
fn bare_key(key: &str) -> &str {
    let rest = match key.strip_prefix("port[").and_then(|k| k.split_once(']')) {
        Some((_, rest)) => rest.strip_prefix('.').unwrap_or(rest),
        None => key,
    };
    rest.split(['[', '.']).next().unwrap_or("")
}

/// The table a [`ConfigError`] key names (`port[3].vlan`, `netns[1].name`, `bridge.name`).
fn section_of_key(key: &str) -> Option<Section> {
    let index = |prefix: &str| -> Option<usize> { key.strip_prefix(prefix)?.split_once(']')?.0.parse().ok() };
    if let Some(i) = index("port[") {
        Some(Section::Port(i))
    } else if let Some(i) = index("netns[") {
        Some(Section::Netns(i))
    } else {
        (key == "bridge" || key.starts_with("bridge.")).then_some(Section::Bridge)
    }
}

/// The key an error about a whole port (two ports on one interface, VLAN keys beside a VNI map)
/// concerns, from the port's table.
fn whole_port_key(entries: &TableEntries, message: &str) -> Option<String> {
    if message.contains("VNI map") {
        return VLAN_KEYS.iter().find(|k| entries.iter().any(|(e, _)| e == *k)).map(|k| k.to_string());
    }
    let key = match string_entry(entries, "type")? {
        "netdev" => "device",
        "vxlan" => "local",
        "socket" => "path",
        "vhost-user" => "socket",
        "veth" => {
            let name = string_entry(entries, "name").unwrap_or("");
            let peer = string_entry(entries, "peer").map_or_else(|| format!("{name}-sw"), str::to_string);
            if message.contains(&format!("{peer:?}")) { "peer" } else { "name" }
        }
        "tap" | "internal" => "name",
        _ => return None,
    };
    Some(key.to_string())
}

impl FileTables {
    fn of(topology: &Topology) -> FileTables {
        FileTables {
            bridge: bridge_entries(&topology.bridge),
            netns: topology.netns.iter().map(netns_entries).collect(),
            ports: topology.ports.iter().map(port_entries).collect(),
        }
    }

    fn render(&self) -> RenderedFile {
        let mut text = String::new();
        let mut section_starts = Vec::new();
        let tables = std::iter::once(("[bridge]", Section::Bridge, &self.bridge))
            .chain(self.netns.iter().enumerate().map(|(i, t)| ("[[netns]]", Section::Netns(i), t)))
            .chain(self.ports.iter().enumerate().map(|(i, t)| ("[[port]]", Section::Port(i), t)));
        for (header, section, entries) in tables {
            if !text.is_empty() {
                text.push('\n');
            }
            section_starts.push((text.lines().count() + 1, section));
            text.push_str(header);
            text.push('\n');
            for (key, value) in entries {
                text.push_str(&format!("{} = {value}\n", key_text(key)));
            }
        }
        RenderedFile { text, section_starts }
    }

    /// Declares the namespace port `index` names, if no `[[netns]]` table does: the daemon
    /// creates it if absent and uses it if it exists. Returns the new table's index.
    fn declare_netns_of(&mut self, index: usize) -> Option<usize> {
        let netns = string_entry(&self.ports[index], "netns")?;
        if netns.is_empty() || self.netns.iter().any(|t| string_entry(t, "name") == Some(netns)) {
            return None;
        }
        self.netns.push(vec![("name".to_string(), Value::String(netns.to_string()))]);
        Some(self.netns.len() - 1)
    }

    /// Parses the tables as a file at `path` would be, mapping a refusal onto the edited port's
    /// keys. Of two ports that clash, the later one is refused, so the edited port is first
    /// checked in last place, where a clash lands on it.
    fn validate(
        &self,
        path: &Path,
        edited: Option<usize>,
        implied_netns: Option<usize>,
    ) -> Result<Topology, EditError> {
        if let Some(index) = edited.filter(|i| i + 1 < self.ports.len()) {
            let mut edited_last = self.clone();
            let port = edited_last.ports.remove(index);
            edited_last.ports.push(port);
            edited_last.parse(path, Some(edited_last.ports.len() - 1), implied_netns)?;
        }
        self.parse(path, edited, implied_netns)
    }

    fn parse(&self, path: &Path, edited: Option<usize>, implied_netns: Option<usize>) -> Result<Topology, EditError> {
        let rendered = self.render();
        Topology::parse(path, &rendered.text).map_err(|e| self.edit_error(&rendered, e, edited, implied_netns))
    }

    /// A refusal of the rendered tables in the terms of the edit: a bare key of the edited port,
    /// or the table it concerns, never the synthetic file's name or lines.
    fn edit_error(
        &self,
        rendered: &RenderedFile,
        error: ConfigError,
        edited: Option<usize>,
        implied_netns: Option<usize>,
    ) -> EditError {
        let section = error
            .key
            .as_deref()
            .and_then(section_of_key)
            .or_else(|| error.line.and_then(|line| rendered.section_at(line)));
        let key = error.key.as_deref().map(bare_key).filter(|k| !k.is_empty());
        let message = error.message;
        match section {
            Some(Section::Port(i)) if Some(i) == edited => {
                let key = key.map(str::to_string).or_else(|| whole_port_key(&self.ports[i], &message));
                EditError { key, message }
            }
            Some(Section::Netns(i)) if Some(i) == implied_netns => EditError::on_key("netns", message),
            Some(Section::Port(i)) => {
                let name = self.ports.get(i).and_then(|t| string_entry(t, "name")).unwrap_or("?");
                match key {
                    Some(key) => EditError::general(format!("port {name:?}, key `{key}`: {message}")),
                    None => EditError::general(format!("port {name:?}: {message}")),
                }
            }
            Some(Section::Netns(i)) => {
                let name = self.netns.get(i).and_then(|t| string_entry(t, "name")).unwrap_or("?");
                EditError::general(format!("namespace {name:?}: {message}"))
            }
            Some(Section::Bridge) | None => match error.key {
                Some(key) => EditError::general(format!("key `{key}`: {message}")),
                None => EditError::general(message),
            },
        }
    }
}

/// Refuses assignments no port table could hold: unknown keys, `name` and `type` (which are
/// the port's identity), keys given twice, and (when `adding`) removals.
fn check_assignments(assignments: &[(String, Value)], adding: bool) -> Result<(), EditError> {
    let settable: Vec<&str> = PORT_KEYS.iter().copied().filter(|k| *k != "name" && *k != "type").collect();
    for (i, (key, value)) in assignments.iter().enumerate() {
        if key == "name" || key == "type" {
            let message = if adding {
                format!("the port's {} is given before the KEY=VALUE list", key.to_uppercase())
            } else {
                "cannot be changed: remove the port and add it again".to_string()
            };
            return Err(EditError::on_key(key, message));
        }
        if !PORT_KEYS.contains(&key.as_str()) {
            return Err(EditError::on_key(key, format!("unknown key (a port takes {})", settable.join(", "))));
        }
        if assignments[..i].iter().any(|(k, _)| k == key) {
            return Err(EditError::on_key(key, "given twice"));
        }
        if adding && is_removal(value) {
            return Err(EditError::on_key(key, "an empty value removes a key, and a new port has none to remove"));
        }
    }
    Ok(())
}

impl Topology {
    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&PortSpec> {
        self.ports.iter().find(|p| p.name == name)
    }

    fn port_index(&self, name: &str) -> Result<usize, EditError> {
        self.ports
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| EditError::general(format!("no port named {name:?}")))
    }

    /// The topology as a file that [`Topology::parse`] reads back into an equal topology.
    /// Settings at their defaults are left out; a team is written as the equivalent bond when
    /// a bond table can say it all.
    pub fn to_toml(&self) -> String {
        FileTables::of(self).render().text
    }

    /// The topology with one more port, `name` of type `kind` with the `assignments` as its
    /// keys, validated as a file would be. A `netns` no `[[netns]]` table declares is declared.
    pub fn with_port_added(
        &self,
        name: &str,
        kind: &str,
        assignments: &[(String, Value)],
    ) -> Result<Topology, EditError> {
        if self.port(name).is_some() {
            return Err(EditError::on_key("name", format!("a port named {name:?} exists already")));
        }
        check_assignments(assignments, true)?;
        let mut tables = FileTables::of(self);
        let mut entries = vec![
            ("name".to_string(), Value::String(name.to_string())),
            ("type".to_string(), Value::String(kind.to_string())),
        ];
        entries.extend(assignments.iter().cloned());
        tables.ports.push(entries);
        let index = tables.ports.len() - 1;
        let implied_netns = tables.declare_netns_of(index);
        tables.validate(&self.path, Some(index), implied_netns)
    }

    /// The topology with port `name`'s keys replaced by `assignments` (an empty value, see
    /// [`is_removal`], removes the key). Setting any VLAN key ([`VLAN_KEYS`]) first clears them
    /// all, so an access port can become a trunk in one step. A `netns` no `[[netns]]` table
    /// declares is declared.
    pub fn with_port_set(&self, name: &str, assignments: &[(String, Value)]) -> Result<Topology, EditError> {
        let index = self.port_index(name)?;
        if assignments.is_empty() {
            return Err(EditError::general("nothing to set: give KEY=VALUE"));
        }
        check_assignments(assignments, false)?;
        let mut tables = FileTables::of(self);
        let entries = &mut tables.ports[index];
        if assignments.iter().any(|(k, _)| VLAN_KEYS.contains(&k.as_str())) {
            entries.retain(|(k, _)| !VLAN_KEYS.contains(&k.as_str()));
        }
        for (key, value) in assignments {
            if is_removal(value) {
                entries.retain(|(k, _)| k != key);
            } else if let Some(slot) = entries.iter_mut().find(|(k, _)| k == key) {
                slot.1 = value.clone();
            } else {
                entries.push((key.clone(), value.clone()));
            }
        }
        let implied_netns = tables.declare_netns_of(index);
        tables.validate(&self.path, Some(index), implied_netns)
    }

    /// The topology without port `name`. A bond goes with its members; a member leaves its
    /// bond (and stops being its `primary`), unless it is the last one. Namespaces stay.
    pub fn with_port_removed(&self, name: &str) -> Result<Topology, EditError> {
        let index = self.port_index(name)?;
        let port = &self.ports[index];
        let mut removed = vec![name];
        if let PortKind::Bond(spec) = &port.kind {
            removed.extend(spec.members.iter().map(String::as_str));
        }
        if let Some(master) = &port.master {
            if let Some(PortKind::Bond(spec)) = self.port(master).map(|p| &p.kind) {
                if spec.members.iter().all(|m| m == name) {
                    return Err(EditError::general(format!(
                        "port {name:?} is the last member of bond {master:?}, and a bond needs one: \
                         remove the bond instead (its members go with it)"
                    )));
                }
            }
        }
        let mut tables = FileTables::of(self);
        for (spec, entries) in self.ports.iter().zip(&mut tables.ports) {
            if matches!(&spec.kind, PortKind::Bond(b) if b.primary.as_deref() == Some(name)) {
                entries.retain(|(k, _)| k != "primary");
            }
        }
        let kept = self.ports.iter().zip(tables.ports).filter(|(p, _)| !removed.contains(&p.name.as_str()));
        tables.ports = kept.map(|(_, entries)| entries).collect();
        tables.validate(&self.path, None, None)
    }

    /// The topology with `ip` added to (`add`) or removed from the remotes of VXLAN port `port`.
    pub fn with_vxlan_remote(&self, port: &str, ip: &str, add: bool) -> Result<Topology, EditError> {
        let index = self.port_index(port)?;
        let PortKind::Vxlan(spec) = &self.ports[index].kind else {
            return Err(EditError::general(format!(
                "port {port:?} is a {} port, not a vxlan port",
                self.ports[index].kind.type_name()
            )));
        };
        let ip: IpAddr =
            ip.parse().map_err(|_| EditError::on_key("remotes", format!("{ip:?} is not an IP address")))?;
        let mut remotes = spec.remotes.clone();
        match (remotes.iter().position(|r| *r == ip), add) {
            (Some(_), true) => {
                return Err(EditError::on_key("remotes", format!("{ip} is a remote of {port:?} already")));
            }
            (None, true) => remotes.push(ip),
            (Some(at), false) => {
                remotes.remove(at);
            }
            (None, false) => return Err(EditError::on_key("remotes", format!("{ip} is not a remote of {port:?}"))),
        }
        let mut tables = FileTables::of(self);
        let entries = &mut tables.ports[index];
        let list = Value::Array(remotes.iter().map(|r| Value::String(r.to_string())).collect());
        if remotes.is_empty() {
            entries.retain(|(k, _)| k != "remotes");
        } else if let Some(slot) = entries.iter_mut().find(|(k, _)| k == "remotes") {
            slot.1 = list;
        } else {
            entries.push(("remotes".to_string(), list));
        }
        tables.validate(&self.path, Some(index), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::IpCidr;
    use vswitchd_dataplane::VlanId;

    fn parse(src: &str) -> Topology {
        match Topology::parse(Path::new("t.toml"), src) {
            Ok(t) => t,
            Err(e) => panic!("{e}\n{src}"),
        }
    }

    fn assert_round_trip(t: &Topology) {
        let written = t.to_toml();
        assert_eq!(Topology::parse(&t.path, &written).as_ref(), Ok(t), "written as:\n{written}");
    }

    fn args(words: &[&str]) -> Vec<(String, Value)> {
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        parse_assignments(&words).unwrap()
    }

    fn vlan(n: u16) -> VlanId {
        VlanId::new(n).unwrap()
    }

    #[test]
    fn every_fixture_round_trips() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let t = Topology::load(&path).unwrap();
                assert_round_trip(&t);
                count += 1;
            }
        }
        assert!(count >= 8, "only {count} fixtures in {}", dir.display());
    }

    /// Every key with a value other than its default, every port kind, bond mode and VLAN mode,
    /// and names that need escaping.
    const EVERY_FIELD: &str = r#"
[bridge]
name = "every-field"
fdb_aging_secs = 60
fdb_max_entries = 1000
threads = 3
stp = "rstp"
stp_priority = 8192
hello_secs = 1
forward_delay_secs = 4
max_age_secs = 6
mcast_snooping = true
mcast_querier = true
mcast_aging_secs = 90
mcast_flood_unknown = false

[[netns]]
name = "red"
routes = [
    { dst = "default", via = "10.0.0.254" },
    { dst = "10.9.0.0/16", via = "10.0.0.253" },
    { dst = "2001:db8:9::/48", via = "2001:db8::fe" },
]

[[netns]]
name = "blue"

[[port]]
name = 'q"\x'
type = "tap"
netns = "red"
address = "10.0.0.1/24"
mac = "02:00:00:00:00:01"
mtu = 9000
vlan = 10
stp_cost = 4
stp_priority = 32
edge = true
bpdu_guard = true
mrouter = true

[[port]]
name = "v6"
type = "veth"
netns = "blue"
peer = "v6-br"
address = "2001:db8::1/64"
mac = "02:AA:00:00:00:02"
trunk = [30, 10, 20]
native_vlan = 1

[[port]]
name = "qinq"
type = "tap"
vlan = 100
vlan_mode = "dot1q-tunnel"

[[port]]
name = "ad"
type = "internal"
trunk = [200]
vlan_protocol = "802.1ad"
vlan_mode = "trunk"

[[port]]
name = "v-default"
type = "veth"

[[port]]
name = "up"
type = "netdev"
device = "eth9"
netns = "blue"
mtu = 68

[[port]]
name = "lag"
type = "bond"
mode = "802.3ad"
xmit_hash_policy = "layer3+4"
miimon_ms = 50
updelay_ms = 200
downdelay_ms = 60000
lacp = "passive"
lacp_rate = "fast"
trunk = [10, 20]

[[port]]
name = "lag-a"
type = "netdev"
device = "eth1"
master = "lag"

[[port]]
name = "lag-b"
type = "veth"
peer = "lag-b-br"
master = "lag"

[[port]]
name = "ab"
type = "bond"
mode = "active-backup"
primary = "ab-2"

[[port]]
name = "ab-1"
type = "tap"
master = "ab"

[[port]]
name = "ab-2"
type = "tap"
master = "ab"

[[port]]
name = "xor"
type = "bond"
mode = "balance-xor"
xmit_hash_policy = "layer2+3"

[[port]]
name = "xor-1"
type = "netdev"
device = "eth2"
master = "xor"

[[port]]
name = "rr"
type = "bond"
mode = "0"
vlan = 5

[[port]]
name = "rr-1"
type = "netdev"
device = "eth3"
master = "rr"

[[port]]
name = "bc"
type = "bond"
mode = "broadcast"

[[port]]
name = "bc-1"
type = "netdev"
device = "eth4"
master = "bc"

[[port]]
name = "team-odd"
type = "team"
config = '{"runner": {"name": "activebackup", "active": false}, "link_watch": {"name": "ethtool", "delay_up": 100000, "delay_down": 5}}'

[[port]]
name = "team-odd-1"
type = "netdev"
device = "eth5"
master = "team-odd"

[[port]]
name = "team-lacp"
type = "team"
config = '{"runner": {"name": "lacp", "active": false, "fast_rate": true, "tx_hash": ["eth", "ipv4"]}}'

[[port]]
name = "team-lacp-1"
type = "netdev"
device = "eth6"
master = "team-lacp"

[[port]]
name = "vx0"
type = "vxlan"
vni = 42
local = "192.0.2.1"
remotes = ["192.0.2.2"]
dst_port = 8472
learning = true
allowed_remotes = ["198.51.100.0/24"]
ttl = 5
vlan = 7

[[port]]
name = "vx1"
type = "vxlan"
vnis = [{ vni = 100, vlan = 10 }, { vni = 200, vlan = 20 }]
local = "2001:db8::1"
remotes = ["2001:db8::2", "2001:db8::3"]
learning = false
mtu = 1400

[[port]]
name = "vm-stream"
type = "socket"
path = "/run/vswitchd/vm2 \"quoted\".sock"
framing = "stream"
server = false
mtu = 9000
vlan = 20

[[port]]
name = "vm-dgram"
type = "socket"
path = "/run/vswitchd/vm3.sock"
framing = "dgram"
trunk = [10, 20]

[[port]]
name = "vm-vhost"
type = "vhost-user"
socket = "/run/vswitchd/vm1.sock"
server = false
"#;

    #[test]
    fn every_field_round_trips() {
        let t = parse(EVERY_FIELD);
        assert_round_trip(&t);
        // The file above does set every field to something other than its default.
        assert_eq!(t.bridge.threads, Threads::Count(3));
        assert_eq!(t.netns[0].routes.len(), 3);
        assert_eq!(t.port("v-default").unwrap().kind, PortKind::Veth { netns: None, peer: "v-default-sw".into() });
        assert_eq!(t.port("v6").unwrap().mac.unwrap().to_string(), "02:aa:00:00:00:02");
        assert_eq!(t.port("qinq").unwrap().vlan, VlanMode::Dot1qTunnel(vlan(100)));
        assert!(matches!(t.port("ad").unwrap().vlan, VlanMode::Trunk { tpid: TPID_8021AD, .. }));
        let PortKind::Bond(lag) = &t.port("lag").unwrap().kind else { panic!() };
        assert_eq!((lag.lacp_active, lag.lacp_fast, lag.members.len()), (false, true, 2));
        let PortKind::Vxlan(vx0) = &t.port("vx0").unwrap().kind else { panic!() };
        assert_eq!((vx0.dst_port, vx0.ttl, vx0.allowed_remotes.len()), (8472, 5, 1));
        let PortKind::Vxlan(vx1) = &t.port("vx1").unwrap().kind else { panic!() };
        assert!(!vx1.learning);
        let PortKind::Socket(stream) = &t.port("vm-stream").unwrap().kind else { panic!() };
        assert_eq!((stream.framing, stream.server), (SocketFraming::Stream, false));
        assert_eq!(stream.path, Path::new("/run/vswitchd/vm2 \"quoted\".sock"));
        let PortKind::Socket(dgram) = &t.port("vm-dgram").unwrap().kind else { panic!() };
        assert_eq!((dgram.framing, dgram.server), (SocketFraming::Dgram, true));
        assert_eq!(
            t.port("vm-vhost").unwrap().kind,
            PortKind::VhostUser { socket: "/run/vswitchd/vm1.sock".into(), server: false }
        );
    }

    #[test]
    fn teams_are_written_as_bonds_when_a_bond_can_say_it_all() {
        let written = parse(EVERY_FIELD).to_toml();
        let table = |name: &str| {
            let start = written.find(&format!("name = \"{name}\"\n")).unwrap();
            written[start..].split("\n\n").next().unwrap().to_string()
        };
        let lacp = table("team-lacp");
        assert!(lacp.contains("type = \"bond\"\nmode = \"802.3ad\"\nxmit_hash_policy = \"layer2+3\""), "{lacp}");
        assert!(lacp.contains("lacp = \"passive\"\nlacp_rate = \"fast\""), "{lacp}");
        // LACP settings on an active-backup team, and an updelay past a bond's limit.
        let odd = table("team-odd");
        assert!(odd.contains("type = \"team\"\nconfig = "), "{odd}");
        let seed =
            Topology::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/seed-team-activebackup.toml"));
        assert!(seed.unwrap().to_toml().contains("name = \"team0\"\ntype = \"bond\"\nmode = \"active-backup\"\n"));
    }

    #[test]
    fn a_written_file_reads_like_a_hand_written_one() {
        let t = parse(
            "[bridge]\nname='br0'\n[[netns]]\nname='red'\nroutes=[{via='10.0.0.254',dst='default'}]\n\
             [[port]]\ntype='tap'\nname='tap-red'\nnetns='red'\naddress='10.0.0.1/24'\nmtu=1500\nvlan=10\n",
        );
        assert_eq!(
            t.to_toml(),
            "[bridge]\nname = \"br0\"\n\n\
             [[netns]]\nname = \"red\"\nroutes = [{ dst = \"default\", via = \"10.0.0.254\" }]\n\n\
             [[port]]\nname = \"tap-red\"\ntype = \"tap\"\nnetns = \"red\"\nvlan = 10\naddress = \"10.0.0.1/24\"\n"
        );
    }

    #[test]
    fn port_keys_are_the_ones_parse_takes() {
        let err = Topology::parse(Path::new("t.toml"), "[bridge]\nname = \"b\"\n[[port]]\ncolour = 1\n").unwrap_err();
        let (_, expected) = err.message.split_once("expected one of").unwrap();
        let mut taken: Vec<&str> = expected.split(',').map(|k| k.trim().trim_matches('`')).collect();
        let mut listed = PORT_KEYS.to_vec();
        taken.sort_unstable();
        listed.sort_unstable();
        assert_eq!(listed, taken);
        assert!(VLAN_KEYS.iter().chain(STRING_KEYS).all(|k| PORT_KEYS.contains(k)));
    }

    #[test]
    fn assignments_are_toml_values_or_bare_words() {
        let s = |v: &str| Value::String(v.to_string());
        let words = [
            "vlan=10",
            "learning=true",
            "trunk=[10,20]",
            "netns=\"quoted red\"",
            "netns=red",
            "address=10.0.0.5/24",
            "device=tap-vm7",
            "mac=02:00:00:00:00:01",
            "remotes=[192.0.2.2, 192.0.2.3]",
            "mode=4",
            "lacp_rate=1",
            "netns=inf",
            "netns=2024-01-01",
            "address=a=b",
            "vlan=",
        ];
        let expected = [
            ("vlan", Value::Integer(10)),
            ("learning", Value::Boolean(true)),
            ("trunk", Value::Array(vec![Value::Integer(10), Value::Integer(20)])),
            ("netns", s("quoted red")),
            ("netns", s("red")),
            ("address", s("10.0.0.5/24")),
            ("device", s("tap-vm7")),
            ("mac", s("02:00:00:00:00:01")),
            ("remotes", Value::Array(vec![s("192.0.2.2"), s("192.0.2.3")])),
            ("mode", s("4")),
            ("lacp_rate", s("1")),
            ("netns", s("inf")),
            ("netns", s("2024-01-01")),
            ("address", s("a=b")),
            ("vlan", s("")),
        ];
        let got = args(&words);
        for ((word, (key, value)), want) in words.iter().zip(&got).zip(expected) {
            assert_eq!((key.as_str(), value), (want.0, &want.1), "{word}");
        }
        assert!(is_removal(&got[14].1));
        assert!(!is_removal(&got[4].1));
    }

    #[test]
    fn deeply_bracketed_words_are_read_without_recursing() {
        let deep = format!("device={}a{}", "[".repeat(60_000), "]".repeat(60_000));
        let got = parse_assignments(&[deep]).unwrap();
        let Value::Array(items) = &got[0].1 else { panic!("{:?}", got[0].1) };
        assert!(matches!(&items[..], [Value::String(s)] if s.len() == 2 * 59_999 + 1));
        let nested = format!("trunk={}1{}", "[".repeat(60_000), "]".repeat(60_000));
        assert_eq!(parse_assignments(&[nested]).unwrap().len(), 1);
    }

    #[test]
    fn assignments_without_a_key_are_refused_by_argument() {
        for (word, needle) in
            [("vlan", "is not KEY=VALUE"), ("=10", "has no key"), ("port.vlan=10", "a key holds only")]
        {
            let err = parse_assignments(&["mtu=9000".to_string(), word.to_string()]).unwrap_err();
            assert_eq!(err.key, None, "{word}");
            assert!(err.message.contains(&format!("{word:?}")) && err.message.contains(needle), "{word}: {err}");
        }
    }

    const BASE: &str = r#"
[bridge]
name = "br0"

[[netns]]
name = "red"

[[port]]
name = "tap-red"
type = "tap"
netns = "red"
address = "10.0.0.1/24"
vlan = 10

[[port]]
name = "up"
type = "netdev"
device = "eth1"

[[port]]
name = "bond0"
type = "bond"
mode = "active-backup"
primary = "m2"

[[port]]
name = "m1"
type = "netdev"
device = "eth2"
master = "bond0"

[[port]]
name = "m2"
type = "netdev"
device = "eth3"
master = "bond0"

[[port]]
name = "vx0"
type = "vxlan"
vni = 42
local = "192.0.2.1"
remotes = ["192.0.2.2"]
"#;

    /// Checks an edit's refusal: its key, its message, and that it names no file or line.
    fn assert_refused(result: Result<Topology, EditError>, key: Option<&str>, needle: &str) {
        let err = result.unwrap_err();
        let shown = err.to_string();
        assert_eq!(err.key.as_deref(), key, "{shown}");
        assert!(shown.contains(needle), "wanted {needle:?}: {shown}");
        assert!(!shown.contains("t.toml") && !shown.contains("port["), "{shown}");
    }

    #[test]
    fn ports_are_added_with_their_keys() {
        let base = parse(BASE);
        let t = base
            .with_port_added("tap-vm7", "tap", &args(&["netns=red", "address=10.0.0.7/24", "trunk=[10,20]"]))
            .unwrap();
        let port = t.port("tap-vm7").unwrap();
        assert_eq!(port.kind, PortKind::Tap { netns: Some("red".into()) });
        assert_eq!(port.address, Some("10.0.0.7/24".parse::<IpCidr>().unwrap()));
        assert!(matches!(&port.vlan, VlanMode::Trunk { allowed, .. } if allowed.contains(vlan(20))));
        assert_eq!(t.ports[..base.ports.len()], base.ports[..]);
        assert_eq!(t.netns, base.netns);
        // An undeclared namespace is declared.
        let t = base.with_port_added("v1", "veth", &args(&["netns=green", "peer=v1-br"])).unwrap();
        assert_eq!(t.netns.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(), ["red", "green"]);
        // A member joins its bond.
        let t = base.with_port_added("m3", "netdev", &args(&["device=eth4", "master=bond0"])).unwrap();
        let PortKind::Bond(spec) = &t.port("bond0").unwrap().kind else { panic!() };
        assert_eq!(spec.members, ["m1", "m2", "m3"]);
        // A VM's socket; its path is taken once.
        let t = base.with_port_added("vm2", "socket", &args(&["path=/run/vswitchd/vm2.sock", "server=false"])).unwrap();
        let PortKind::Socket(spec) = &t.port("vm2").unwrap().kind else { panic!() };
        assert_eq!(
            (spec.path.as_path(), spec.framing, spec.server),
            (Path::new("/run/vswitchd/vm2.sock"), SocketFraming::Stream, false)
        );
        assert_refused(
            t.with_port_added("vm3", "vhost-user", &args(&["socket=/run/vswitchd/vm2.sock"])),
            Some("socket"),
            "socket \"/run/vswitchd/vm2.sock\" is used by port \"vm2\" too",
        );
        assert_refused(
            t.with_port_added("vm3", "socket", &args(&["path=/run/vswitchd/vm2.sock", "framing=dgram"])),
            Some("path"),
            "is used by port \"vm2\" too",
        );
        let t = base.with_port_added("vm1", "vhost-user", &args(&["socket=/run/vswitchd/vm1.sock"])).unwrap();
        assert_eq!(
            t.port("vm1").unwrap().kind,
            PortKind::VhostUser { socket: "/run/vswitchd/vm1.sock".into(), server: true }
        );
    }

    #[test]
    fn refused_additions_name_the_key() {
        let base = parse(BASE);
        let err = base.with_port_added("p", "tap", &args(&["vlan=0"])).unwrap_err();
        assert_eq!(err.to_string(), "key `vlan`: VLAN 0 is out of range (1 to 4094)");
        for (name, kind, words, key, needle) in [
            ("tap-red", "tap", &[][..], Some("name"), "exists already"),
            ("a-very-long-name", "tap", &[], Some("name"), "1 to 15 bytes"),
            ("p", "tap", &["name=q"], Some("name"), "given before"),
            ("p", "hub", &[], Some("type"), "unknown port type \"hub\""),
            ("p", "tap", &["type=veth"], Some("type"), "given before"),
            ("p", "tap", &["colour=red"], Some("colour"), "unknown key"),
            ("p", "tap", &["vlan=5", "vlan=6"], Some("vlan"), "given twice"),
            ("p", "tap", &["vlan="], Some("vlan"), "none to remove"),
            ("p", "tap", &["address=10.0.0.5"], Some("address"), "ADDRESS/PREFIX"),
            ("p", "tap", &["mtu=big"], Some("mtu"), "invalid type"),
            ("p", "tap", &["trunk=[10,5000]"], Some("trunk"), "VLAN 5000 is out of range"),
            ("p", "tap", &["netns=../x"], Some("netns"), "may hold only"),
            ("p", "netdev", &[], Some("device"), "needs `device`"),
            ("p", "netdev", &["device=eth1"], Some("device"), "attached twice"),
            ("p", "netdev", &["device=tap-red", "netns=red"], Some("device"), "would loop every frame"),
            ("p", "veth", &["peer=eth1"], Some("peer"), "would loop every frame"),
            ("eth1", "tap", &[], Some("name"), "would loop every frame"),
            ("p", "tap", &["vlan=5", "master=bond0"], Some("master"), "belong on its bond"),
            ("p", "tap", &["master=up"], Some("master"), "is not a bond"),
            ("p", "vxlan", &["vni=7", "local=192.0.2.1", "remotes=[192.0.2.9]"], Some("local"), "udp:192.0.2.1:4789"),
            ("b1", "bond", &["mode=broadcast"], None, "has no members"),
            ("p", "socket", &[], Some("path"), "needs `path`"),
            ("p", "socket", &["path=run/vm.sock"], Some("path"), "not an absolute path"),
            ("p", "socket", &["path=/run/vm.sock", "framing=seqpacket"], Some("framing"), "unknown framing"),
            (
                "p",
                "socket",
                &["path=/run/vm.sock", "framing=dgram", "server=true"],
                Some("server"),
                "applies to stream",
            ),
            ("p", "socket", &["path=/run/vm.sock", "netns=red"], Some("netns"), "not kernel interfaces"),
            (
                "p",
                "socket",
                &["path=/run/vm.sock", "socket=/run/x"],
                Some("socket"),
                "only to ports of type vhost-user",
            ),
            ("p", "tap", &["server=true"], Some("server"), "only to ports of type socket or vhost-user"),
            ("p", "tap", &["path=/run/vm.sock"], Some("path"), "only to ports of type socket"),
            ("p", "vhost-user", &[], Some("socket"), "needs `socket`"),
            (
                "p",
                "vhost-user",
                &["socket=/run/vm.sock", "framing=dgram"],
                Some("framing"),
                "only to ports of type socket",
            ),
            (
                "p",
                "vxlan",
                &["vnis=[{vni=1,vlan=2}]", "local=192.0.2.5", "remotes=[192.0.2.9]", "vlan=5"],
                Some("vlan"),
                "come from the VNI map",
            ),
        ] {
            assert_refused(base.with_port_added(name, kind, &args(words)), key, needle);
        }
    }

    #[test]
    fn ports_are_set_key_by_key() {
        let base = parse(BASE);
        let t = base.with_port_set("tap-red", &args(&["trunk=[10,20]", "native_vlan=1", "mtu=9000"])).unwrap();
        let port = t.port("tap-red").unwrap();
        assert!(matches!(&port.vlan, VlanMode::Trunk { native: Some(n), .. } if *n == vlan(1)));
        assert_eq!((port.mtu, port.address), (9000, base.ports[0].address));
        let t = t.with_port_set("tap-red", &args(&["vlan=", "address="])).unwrap();
        assert_eq!((&t.ports[0].vlan, t.ports[0].address), (&VlanMode::Transparent, None));
        let t = base.with_port_set("tap-red", &args(&["vlan_mode=dot1q-tunnel", "vlan=100"])).unwrap();
        assert_eq!(t.ports[0].vlan, VlanMode::Dot1qTunnel(vlan(100)));
        let t = base.with_port_set("tap-red", &args(&["netns=blue"])).unwrap();
        assert_eq!((t.netns.len(), t.ports[0].kind.netns()), (2, Some("blue")));
        let t = base.with_port_set("bond0", &args(&["mode=0", "primary="])).unwrap();
        assert!(matches!(&t.ports[2].kind, PortKind::Bond(s) if s.mode == BondMode::BalanceRr));
        // The order of the ports stays.
        let t = base.with_port_set("up", &args(&["device=eth7"])).unwrap();
        assert_eq!(
            t.ports.iter().map(|p| &p.name).collect::<Vec<_>>(),
            base.ports.iter().map(|p| &p.name).collect::<Vec<_>>()
        );
        assert_eq!(t.ports[1].kind, PortKind::Netdev { device: "eth7".into(), netns: None });
    }

    #[test]
    fn refused_settings_name_the_key() {
        let base = parse(BASE);
        for (port, words, key, needle) in [
            ("nope", &["vlan=1"][..], None, "no port named \"nope\""),
            ("tap-red", &[], None, "nothing to set"),
            ("tap-red", &["name=x"], Some("name"), "cannot be changed"),
            ("tap-red", &["type=veth"], Some("type"), "cannot be changed"),
            ("tap-red", &["colour="], Some("colour"), "unknown key"),
            ("tap-red", &["vlan=4095"], Some("vlan"), "out of range"),
            // `up` comes before `m1`: the clash is still laid on the port being changed.
            ("up", &["device=eth2"], Some("device"), "attached twice"),
            ("up", &["device=tap-red", "netns=red"], Some("device"), "would loop every frame"),
            ("bond0", &["mode=balance-rr"], Some("primary"), "applies to active-backup"),
            ("bond0", &["address=10.0.0.9/24"], Some("address"), "not kernel interfaces"),
            ("m1", &["vlan=5"], Some("master"), "belong on its bond"),
            ("vx0", &["trunk=[10,20]"], Some("trunk"), "cannot be a trunk"),
            ("vx0", &["dst_port=0"], Some("dst_port"), "from 1 to 65535"),
        ] {
            assert_refused(base.with_port_set(port, &args(words)), key, needle);
        }
        // A change another port refuses names that port.
        let t = base.with_port_set("m1", &args(&["master="])).unwrap();
        assert_eq!(t.port("m1").unwrap().master, None);
        assert_refused(
            t.with_port_set("m2", &args(&["master="])),
            None,
            "port \"bond0\": bond \"bond0\" has no members",
        );
        assert_refused(base.with_port_set("m2", &args(&["master="])), None, "port \"bond0\", key `primary`");
    }

    #[test]
    fn removing_a_port_takes_what_depends_on_it() {
        let base = parse(BASE);
        let names = |t: &Topology| t.ports.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        let t = base.with_port_removed("tap-red").unwrap();
        assert_eq!(names(&t), ["up", "bond0", "m1", "m2", "vx0"]);
        assert_eq!(t.netns, base.netns, "namespaces stay");
        assert_eq!(names(&base.with_port_removed("bond0").unwrap()), ["tap-red", "up", "vx0"]);
        let t = base.with_port_removed("m2").unwrap();
        let PortKind::Bond(spec) = &t.port("bond0").unwrap().kind else { panic!() };
        assert_eq!((spec.members.as_slice(), spec.primary.as_deref()), (&["m1".to_string()][..], None));
        let t2 = base.with_port_removed("m1").unwrap();
        let PortKind::Bond(spec) = &t2.port("bond0").unwrap().kind else { panic!() };
        assert_eq!((spec.members.as_slice(), spec.primary.as_deref()), (&["m2".to_string()][..], Some("m2")));
        assert_refused(t.with_port_removed("m1"), None, "last member of bond \"bond0\"");
        assert_refused(base.with_port_removed("nope"), None, "no port named \"nope\"");
    }

    #[test]
    fn vxlan_remotes_are_added_and_removed() {
        let base = parse(BASE);
        let remotes = |t: &Topology| match &t.port("vx0").unwrap().kind {
            PortKind::Vxlan(spec) => spec.remotes.iter().map(IpAddr::to_string).collect::<Vec<_>>(),
            _ => panic!(),
        };
        let t = base.with_vxlan_remote("vx0", "192.0.2.3", true).unwrap();
        assert_eq!(remotes(&t), ["192.0.2.2", "192.0.2.3"]);
        let t = t.with_vxlan_remote("vx0", "192.0.2.2", false).unwrap();
        assert_eq!(remotes(&t), ["192.0.2.3"]);
        for (port, ip, add, key, needle) in [
            ("vx0", "192.0.2.2", true, Some("remotes"), "192.0.2.2 is a remote of \"vx0\" already"),
            ("vx0", "192.0.2.9", false, Some("remotes"), "192.0.2.9 is not a remote of \"vx0\""),
            ("vx0", "192.0.2.2", false, Some("remotes"), "needs `remotes`"),
            ("vx0", "2001:db8::1", true, Some("remotes"), "same IP version"),
            ("vx0", "192.0.2.1", true, Some("remotes"), "is the local address"),
            ("vx0", "not-an-ip", true, Some("remotes"), "\"not-an-ip\" is not an IP address"),
            ("tap-red", "192.0.2.9", true, None, "\"tap-red\" is a tap port, not a vxlan port"),
            ("nope", "192.0.2.9", true, None, "no port named"),
        ] {
            assert_refused(base.with_vxlan_remote(port, ip, add), key, needle);
        }
    }

    #[test]
    fn port_modes_round_trip_and_are_set_live() {
        let base = parse(BASE);
        let t = base
            .with_port_set(
                "tap-red",
                &args(&[
                    "isolated=true",
                    "hairpin=true",
                    "mac_limit=2",
                    "allowed_macs=[\"02:00:00:00:00:01\"]",
                    "storm_pps={broadcast=10,multicast=20,unknown_unicast=30}",
                ]),
            )
            .unwrap();
        assert_round_trip(&t);
        let modes = &t.port("tap-red").unwrap().modes;
        assert!(modes.isolated && modes.hairpin && modes.mac_limit == Some(2));
        assert_eq!(modes.storm_pps.multicast, Some(20));
        let written = t.to_toml();
        assert!(
            written.contains(
                "isolated = true\nhairpin = true\nmac_limit = 2\nallowed_macs = [\"02:00:00:00:00:01\"]\n\
                 storm_pps = { broadcast = 10, multicast = 20, unknown_unicast = 30 }\n"
            ),
            "{written}"
        );
        // Removing the keys makes it a plain port again.
        let plain = t
            .with_port_set("tap-red", &args(&["isolated=", "hairpin=", "mac_limit=", "allowed_macs=", "storm_pps="]))
            .unwrap();
        assert!(plain.port("tap-red").unwrap().modes.is_plain());
        assert_refused(base.with_port_set("tap-red", &args(&["mac_limit=0"])), Some("mac_limit"), "from 1 to");
        // MACs as a list of bare words, as the reference shows them.
        let t = base
            .with_port_set(
                "tap-red",
                &args(&["allowed_macs=[02:00:00:00:20:02,02:00:00:00:20:03]", "storm_pps={broadcast=500}"]),
            )
            .unwrap();
        let modes = &t.port("tap-red").unwrap().modes;
        assert_eq!(
            modes.allowed_macs.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
            ["02:00:00:00:20:02", "02:00:00:00:20:03"]
        );
        assert_eq!(modes.storm_pps.broadcast, Some(500));
    }

    #[test]
    fn edited_topologies_round_trip() {
        let base = parse(BASE);
        let t = base
            .with_port_added("tap-blue", "tap", &args(&["netns=blue", "mac=02:00:00:00:00:09", "mtu=1400"]))
            .and_then(|t| t.with_port_set("up", &args(&["trunk=[10,20]", "vlan_protocol=802.1ad"])))
            .and_then(|t| t.with_vxlan_remote("vx0", "192.0.2.8", true))
            .unwrap();
        assert_round_trip(&t);
        assert_eq!(t.path, base.path);
    }
}
