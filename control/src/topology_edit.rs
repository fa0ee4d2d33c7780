//! A running [`Topology`] printed back as a topology file, one that [`Topology::parse`] reads
//! back into an equal topology.

use std::fmt;
use std::time::Duration;

use toml::Value;
use vswitchd_dataplane::bond::{BondMode, HashPolicy};
use vswitchd_dataplane::vlan::{TPID_8021AD, VlanMode};
use vswitchd_dataplane::vxlan::VniMap;
use vswitchd_dataplane::wire::vxlan;

use crate::topology::{
    BOND_INTERVAL_MAX_MS, BondSpec, BridgeSpec, DEFAULT_FDB_AGING_SECS, DEFAULT_FDB_MAX_ENTRIES, DEFAULT_MIIMON_MS,
    DEFAULT_MTU, DEFAULT_VXLAN_TTL, NetnsSpec, PortKind, PortSpec, Threads, Topology, VxlanSpec,
};

/// Whether `key` can be written as a bare TOML key.
fn is_bare_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// One table's keys and values, in the order they are written.
type TableEntries = Vec<(String, Value)>;

/// A topology file as its tables.
#[derive(Debug, Clone)]
struct FileTables {
    bridge: TableEntries,
    netns: Vec<TableEntries>,
    ports: Vec<TableEntries>,
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
    w.0
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
    w.0
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

impl FileTables {
    fn of(topology: &Topology) -> FileTables {
        FileTables {
            bridge: bridge_entries(&topology.bridge),
            netns: topology.netns.iter().map(netns_entries).collect(),
            ports: topology.ports.iter().map(port_entries).collect(),
        }
    }

    fn render(&self) -> String {
        let mut text = String::new();
        let tables = std::iter::once(("[bridge]", &self.bridge))
            .chain(self.netns.iter().map(|t| ("[[netns]]", t)))
            .chain(self.ports.iter().map(|t| ("[[port]]", t)));
        for (header, entries) in tables {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(header);
            text.push('\n');
            for (key, value) in entries {
                text.push_str(&format!("{} = {value}\n", key_text(key)));
            }
        }
        text
    }
}

impl Topology {
    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&PortSpec> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The topology as a file that [`Topology::parse`] reads back into an equal topology.
    /// Settings at their defaults are left out; a team is written as the equivalent bond when
    /// a bond table can say it all.
    pub fn to_toml(&self) -> String {
        FileTables::of(self).render()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
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
}
