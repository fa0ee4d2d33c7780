//! The topology file: TOML in, a validated [`Topology`] out, or a [`ConfigError`] that names
//! the file, the line and the key. Validation covers the whole file before anything is created.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use vswitchd_dataplane::VlanId;
use vswitchd_dataplane::bond::{BondMode, HashPolicy};
use vswitchd_dataplane::mdb::McastConfig;
use vswitchd_dataplane::port_modes::{MAX_ALLOWED_MACS, MAX_MAC_LIMIT, MAX_STORM_PPS, PortModes, StormPps};
use vswitchd_dataplane::stp::{DEFAULT_PORT_COST, StpMode};
use vswitchd_dataplane::vlan::{TPID_8021AD, TPID_8021Q, VlanMode, VlanSet};
use vswitchd_dataplane::vxlan::VniMap;
use vswitchd_dataplane::wire::MacAddr;
use vswitchd_dataplane::wire::vxlan;

/// Longest interface name the kernel accepts.
pub const IFNAME_MAX: usize = 15;

/// A bridge's `fdb_aging_secs` when the file sets none.
pub const DEFAULT_FDB_AGING_SECS: u64 = 300;

/// A bridge's `fdb_max_entries` when the file sets none.
pub const DEFAULT_FDB_MAX_ENTRIES: usize = 8192;

/// A port's `mtu` when the file sets none.
pub const DEFAULT_MTU: u32 = 1500;

/// A bond's `miimon_ms` when the file sets none (and a team's, always).
pub const DEFAULT_MIIMON_MS: u64 = 100;

/// The longest `miimon_ms`, `updelay_ms` or `downdelay_ms` of a bond.
pub const BOND_INTERVAL_MAX_MS: u64 = 60_000;

/// A VXLAN port's `ttl` when the file sets none.
pub const DEFAULT_VXLAN_TTL: u8 = 64;

/// A refused topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key, as a TOML path (`port[2].address`), when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// An address with a prefix length, as in `192.168.15.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCidr {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl FromStr for IpCidr {
    type Err = String;

    fn from_str(s: &str) -> Result<IpCidr, String> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| format!("{s:?} is not ADDRESS/PREFIX"))?;
        let addr: IpAddr = addr.parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("prefix {prefix:?} is not a number from 0 to {max}"))?;
        Ok(IpCidr { addr, prefix })
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A route to add in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination; `None` is the default route.
    pub dst: Option<IpCidr>,
    /// Next hop.
    pub via: IpAddr,
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dst {
            Some(dst) => write!(f, "{dst} via {}", self.via),
            None => write!(f, "default via {}", self.via),
        }
    }
}

/// The bridge's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Names the control socket and log lines.
    pub name: String,
    /// Idle time before a learned entry expires.
    pub fdb_aging: Duration,
    /// Bound on learned FDB entries.
    pub fdb_max_entries: usize,
    /// Worker threads forwarding frames.
    pub threads: Threads,
    /// The spanning tree (`stp = "rstp"` or `"stp"`); `None` with `stp = "off"`, the default.
    pub stp: Option<StpSpec>,
    /// IGMP/MLD snooping (`mcast_*` keys).
    pub mcast: McastConfig,
}

/// The bridge's spanning tree settings (`stp`, `stp_priority`, `hello_secs`,
/// `forward_delay_secs`, `max_age_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StpSpec {
    /// RSTP or 802.1D STP.
    pub mode: StpMode,
    /// Bridge priority, a multiple of 4096.
    pub priority: u16,
    /// Hello time, seconds.
    pub hello_secs: u64,
    /// Forward delay, seconds.
    pub forward_delay_secs: u64,
    /// Max age, seconds.
    pub max_age_secs: u64,
}

impl StpSpec {
    /// 802.1D-2004's defaults for `mode`.
    pub fn new(mode: StpMode) -> StpSpec {
        StpSpec { mode, priority: 32768, hello_secs: 2, forward_delay_secs: 15, max_age_secs: 20 }
    }
}

/// A port's spanning tree settings (`stp_cost`, `stp_priority`, `edge`, `bpdu_guard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortStpSpec {
    /// Path cost.
    pub cost: u32,
    /// Port priority, a multiple of 16.
    pub priority: u8,
    /// An edge port: forwards at once.
    pub edge: bool,
    /// A BPDU disables the port.
    pub bpdu_guard: bool,
}

impl Default for PortStpSpec {
    fn default() -> Self {
        PortStpSpec { cost: DEFAULT_PORT_COST, priority: 128, edge: false, bpdu_guard: false }
    }
}

/// How many worker threads forward frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// One per two cores, at most four.
    Auto,
    /// Exactly this many.
    Count(usize),
}

/// The most worker threads a bridge may ask for.
pub const MAX_THREADS: usize = 64;

/// The thread count `threads` comes to on a machine with `cores` cores. One worker per two
/// cores leaves the other core to the kernel side that produces and consumes the traffic (the
/// namespaces' stacks, the guests), where a userspace switch's throughput is decided.
pub fn resolve_threads(threads: Threads, cores: usize) -> usize {
    match threads {
        Threads::Count(n) => n,
        Threads::Auto => (cores / 2).clamp(1, 4),
    }
}

/// A namespace to create if absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsSpec {
    /// Its name under /run/netns.
    pub name: String,
    /// Routes to add once the ports' addresses are in place.
    pub routes: Vec<RouteSpec>,
    /// Write `/etc/netns/NAME/hosts` naming every topology host (`hosts = true`).
    pub hosts: bool,
}

/// The kinds of port this version implements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortKind {
    /// A TAP device owned by vswitchd; its kernel side goes into `netns` (or stays in
    /// vswitchd's namespace).
    Tap {
        /// Target namespace.
        netns: Option<String>,
    },
    /// A TAP device in vswitchd's own namespace: the bridge's own interface.
    Internal,
    /// A veth pair created by vswitchd: the end named after the port goes into `netns`,
    /// vswitchd attaches to `peer` (in its own namespace) with a packet socket.
    Veth {
        /// Target namespace of the named end.
        netns: Option<String>,
        /// The end vswitchd attaches to.
        peer: String,
    },
    /// An interface that exists already (a VM's TAP, a veth end, an uplink): vswitchd attaches
    /// to it with a packet socket and neither creates, configures nor deletes it.
    Netdev {
        /// The interface.
        device: String,
        /// The namespace it lives in (default: vswitchd's).
        netns: Option<String>,
    },
    /// A bond (or team) of the ports whose `master` names it.
    Bond(BondSpec),
    /// A VXLAN tunnel endpoint.
    Vxlan(VxlanSpec),
    /// A VM's QEMU `-netdev stream` or `-netdev dgram` backend on a Unix socket.
    Socket(SocketSpec),
    /// A VM's vhost-user device on a Unix socket (topology only for now: the port cannot be
    /// opened yet).
    VhostUser {
        /// The vhost-user socket.
        socket: PathBuf,
        /// vswitchd listens at `socket` (QEMU connects); else vswitchd connects.
        server: bool,
    },
}

/// How frames travel on a `socket` port's Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketFraming {
    /// A stream: each frame behind its length (4 bytes, big-endian), as QEMU's
    /// `-netdev stream` sends them.
    Stream,
    /// Datagrams: one frame each, as QEMU's `-netdev dgram` sends them.
    Dgram,
}

impl SocketFraming {
    /// The name used in the file.
    pub fn name(self) -> &'static str {
        match self {
            SocketFraming::Stream => "stream",
            SocketFraming::Dgram => "dgram",
        }
    }
}

/// A `socket` port's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    /// The socket's path: vswitchd's end.
    pub path: PathBuf,
    /// Stream or datagrams.
    pub framing: SocketFraming,
    /// Stream framing: vswitchd listens at `path` (QEMU connects, `server=off`); else vswitchd
    /// connects to a QEMU listening there (`server=on`). Datagrams: always true (vswitchd
    /// binds `path`).
    pub server: bool,
}

/// The longest socket path the kernel takes (`sun_path` less its terminating NUL).
pub const SOCKET_PATH_MAX: usize = 107;

/// A VXLAN port's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// The VNI(s) it carries.
    pub vnis: VniMap,
    /// The local underlay address.
    pub local: IpAddr,
    /// Configured remote VTEPs.
    pub remotes: Vec<IpAddr>,
    /// The UDP destination port.
    pub dst_port: u16,
    /// Learn inner MACs (and remotes from `allowed_remotes`).
    pub learning: bool,
    /// Underlay prefixes new remotes may come from.
    pub allowed_remotes: Vec<IpCidr>,
    /// Outer TTL / hop limit.
    pub ttl: u8,
    /// Answer ARP requests and neighbour solicitations for addresses known behind the tunnel
    /// locally instead of flooding them to the remotes.
    pub arp_suppress: bool,
    /// `control = "evpn"`: flood remotes and the MACs behind them come from BGP EVPN (FRR's
    /// zebra, through kernel objects vswitchd creates), and local MACs are advertised.
    pub evpn: bool,
}

/// A bond's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BondSpec {
    /// The mode.
    pub mode: BondMode,
    /// Link check interval.
    pub miimon: Duration,
    /// Carrier must hold this long before a member is used.
    pub updelay: Duration,
    /// A lost carrier is waited out this long before a member is dropped.
    pub downdelay: Duration,
    /// The preferred member (active-backup).
    pub primary: Option<String>,
    /// 802.3ad: active LACP (else passive).
    pub lacp_active: bool,
    /// 802.3ad: ask the partner for LACPDUs every second (else every 30 s).
    pub lacp_fast: bool,
    /// Members, in file order.
    pub members: Vec<String>,
}

impl PortKind {
    /// The type name used in the file.
    pub fn type_name(&self) -> &'static str {
        match self {
            PortKind::Tap { .. } => "tap",
            PortKind::Internal => "internal",
            PortKind::Veth { .. } => "veth",
            PortKind::Netdev { .. } => "netdev",
            PortKind::Bond(_) => "bond",
            PortKind::Vxlan(_) => "vxlan",
            PortKind::Socket(_) => "socket",
            PortKind::VhostUser { .. } => "vhost-user",
        }
    }

    /// The namespace the host side (the end that is not vswitchd's) lives in.
    pub fn netns(&self) -> Option<&str> {
        match self {
            PortKind::Tap { netns } | PortKind::Veth { netns, .. } | PortKind::Netdev { netns, .. } => netns.as_deref(),
            PortKind::Internal
            | PortKind::Bond(_)
            | PortKind::Vxlan(_)
            | PortKind::Socket(_)
            | PortKind::VhostUser { .. } => None,
        }
    }
}

/// A bridge port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// The kernel interface name.
    pub name: String,
    /// Its kind.
    pub kind: PortKind,
    /// An address on the kernel side.
    pub address: Option<IpCidr>,
    /// The kernel side's MAC.
    pub mac: Option<MacAddr>,
    /// MTU (default [`DEFAULT_MTU`]).
    pub mtu: u32,
    /// VLAN mode.
    pub vlan: VlanMode,
    /// The bond this port is a member of (then it is not a bridge port of its own).
    pub master: Option<String>,
    /// The host services an `internal` port offers (DHCP, DNS, masquerade).
    pub services: HostServices,
    /// Isolation, hairpin, MAC limit, allowed sources, storm control.
    pub modes: PortModes,
    /// Spanning tree settings.
    pub stp: PortStpSpec,
    /// A multicast router port: gets every snooped group's traffic (`mrouter = true`).
    pub mrouter: bool,
}

/// DHCP on an internal port: addresses `start..=end`, leased for `lease_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpSpec {
    /// The first address handed out.
    pub start: std::net::Ipv4Addr,
    /// The last address handed out.
    pub end: std::net::Ipv4Addr,
    /// The lease time.
    pub lease_secs: u32,
}

/// The lease time when `dhcp` gives none.
pub const DEFAULT_LEASE_SECS: u32 = 3600;

/// The services an `internal` port offers the hosts behind the switch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostServices {
    /// DHCP through dnsmasq.
    pub dhcp: Option<DhcpSpec>,
    /// The topology hosts' names through dnsmasq's DNS on the port's address.
    pub dns: bool,
    /// NAT for the port's subnet out of vswitchd's namespace.
    pub masquerade: bool,
}

impl HostServices {
    /// Whether the port offers nothing.
    pub fn is_empty(&self) -> bool {
        *self == HostServices::default()
    }
}

/// A validated topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Where it was read from.
    pub path: PathBuf,
    /// The bridge.
    pub bridge: BridgeSpec,
    /// Namespaces, in file order.
    pub netns: Vec<NetnsSpec>,
    /// Ports, in file order.
    pub ports: Vec<PortSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    bridge: Spanned<RawBridge>,
    #[serde(default)]
    netns: Vec<Spanned<RawNetns>>,
    #[serde(default)]
    port: Vec<Spanned<RawPort>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBridge {
    name: Spanned<String>,
    fdb_aging_secs: Option<Spanned<u64>>,
    fdb_max_entries: Option<Spanned<u64>>,
    /// `"auto"` or a count; taken as any value so a wrong one gets this key's message.
    threads: Option<Spanned<toml::Value>>,
    stp: Option<Spanned<String>>,
    stp_priority: Option<Spanned<i64>>,
    hello_secs: Option<Spanned<i64>>,
    forward_delay_secs: Option<Spanned<i64>>,
    max_age_secs: Option<Spanned<i64>>,
    mcast_snooping: Option<Spanned<bool>>,
    mcast_querier: Option<Spanned<bool>>,
    mcast_aging_secs: Option<Spanned<u64>>,
    mcast_flood_unknown: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetns {
    name: Spanned<String>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
    hosts: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDhcp {
    range: Spanned<String>,
    lease_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    dst: Spanned<String>,
    via: Spanned<String>,
}

/// Every key `interface.md` defines for a port; the ones this version does not implement are
/// refused by name rather than silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    netns: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    mac: Option<Spanned<String>>,
    mtu: Option<Spanned<u32>>,
    vlan: Option<Spanned<i64>>,
    trunk: Option<Spanned<Vec<Spanned<i64>>>>,
    native_vlan: Option<Spanned<i64>>,
    vlan_mode: Option<Spanned<String>>,
    vlan_protocol: Option<Spanned<String>>,
    master: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    miimon_ms: Option<Spanned<u64>>,
    updelay_ms: Option<Spanned<u64>>,
    downdelay_ms: Option<Spanned<u64>>,
    primary: Option<Spanned<String>>,
    xmit_hash_policy: Option<Spanned<String>>,
    lacp: Option<Spanned<String>>,
    lacp_rate: Option<Spanned<String>>,
    config: Option<Spanned<String>>,
    peer: Option<Spanned<String>>,
    device: Option<Spanned<String>>,
    vni: Option<Spanned<i64>>,
    vnis: Option<Spanned<Vec<Spanned<RawVni>>>>,
    local: Option<Spanned<String>>,
    remotes: Option<Spanned<Vec<Spanned<String>>>>,
    dst_port: Option<Spanned<i64>>,
    learning: Option<Spanned<bool>>,
    allowed_remotes: Option<Spanned<Vec<Spanned<String>>>>,
    ttl: Option<Spanned<i64>>,
    arp_suppress: Option<Spanned<bool>>,
    control: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    framing: Option<Spanned<String>>,
    server: Option<Spanned<bool>>,
    socket: Option<Spanned<String>>,
    dhcp: Option<Spanned<RawDhcp>>,
    dns: Option<Spanned<bool>>,
    masquerade: Option<Spanned<bool>>,
    isolated: Option<Spanned<bool>>,
    hairpin: Option<Spanned<bool>>,
    mac_limit: Option<Spanned<i64>>,
    allowed_macs: Option<Spanned<Vec<Spanned<String>>>>,
    storm_pps: Option<Spanned<RawStormPps>>,
    stp_cost: Option<Spanned<i64>>,
    stp_priority: Option<Spanned<i64>>,
    edge: Option<Spanned<bool>>,
    bpdu_guard: Option<Spanned<bool>>,
    mrouter: Option<Spanned<bool>>,
}

/// A port's `storm_pps` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStormPps {
    broadcast: Option<Spanned<i64>>,
    multicast: Option<Spanned<i64>>,
    unknown_unicast: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVni {
    vni: Spanned<i64>,
    vlan: Spanned<i64>,
}

struct Ctx<'a> {
    file: &'a Path,
    src: &'a str,
}

impl Ctx<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.src.len());
        self.src.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn err<T>(
        &self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError {
            file: self.file.to_path_buf(),
            line: Some(self.line(span.start)),
            key: Some(key.into()),
            message: message.into(),
        })
    }

    /// Turns a TOML/serde error into a [`ConfigError`], recovering the key from the line the
    /// error points at when the message does not name it.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let line = e.span().map(|s| self.line(s.start));
        let key = e.span().and_then(|s| {
            let start = self.src[..s.start.min(self.src.len())].rfind('\n').map_or(0, |i| i + 1);
            let text = self.src[start..].lines().next().unwrap_or("");
            let (key, _) = text.split_once('=')?;
            let key = key.trim();
            (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
        });
        ConfigError { file: self.file.to_path_buf(), line, key, message: e.message().trim().to_string() }
    }
}

/// Checks a name the kernel would accept for an interface (as `dev_valid_name` does).
fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > IFNAME_MAX {
        return Err(format!("interface name {name:?} must be 1 to {IFNAME_MAX} bytes long (it is {})", name.len()));
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0') {
        return Err(format!("interface name {name:?} may not be . or .., nor contain '/', ':' or spaces"));
    }
    Ok(())
}

/// Checks a name that becomes a file name (a namespace under /run/netns, a control socket).
fn check_file_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("name {name:?} must be 1 to 64 characters"));
    }
    if name.starts_with('.') || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("name {name:?} may hold only letters, digits, '-', '_' and '.', and not start with '.'"));
    }
    Ok(())
}

fn ip_addr(cx: &Ctx<'_>, key: String, value: &Spanned<String>) -> Result<IpAddr, ConfigError> {
    value
        .get_ref()
        .parse()
        .or_else(|_| cx.err(value.span(), key, format!("{:?} is not an IP address", value.get_ref())))
}

/// A `type = "vxlan"` port.
fn vxlan_spec(cx: &Ctx<'_>, i: usize, p: &RawPort) -> Result<VxlanSpec, ConfigError> {
    let key = |k: &str| format!("port[{i}].{k}");
    let vni_value = |k: String, v: &Spanned<i64>| -> Result<u32, ConfigError> {
        match u32::try_from(*v.get_ref()).ok().filter(|n| *n <= vxlan::VNI_MAX) {
            Some(n) => Ok(n),
            None => cx.err(v.span(), k, format!("VNI {} is out of range (0 to 16777215)", v.get_ref())),
        }
    };
    let vnis = match (&p.vni, &p.vnis) {
        (Some(vni), None) => VniMap::Single(vni_value(key("vni"), vni)?),
        (None, Some(list)) if !list.get_ref().is_empty() => {
            let mut map = Vec::new();
            for (j, entry) in list.get_ref().iter().enumerate() {
                let e = entry.get_ref();
                let vni = vni_value(format!("port[{i}].vnis[{j}].vni"), &e.vni)?;
                let vlan = vlan_id(cx, format!("port[{i}].vnis[{j}].vlan"), &e.vlan)?;
                if map.iter().any(|(v, l)| *v == vni || *l == vlan) {
                    return cx.err(
                        entry.span(),
                        format!("port[{i}].vnis[{j}]"),
                        "each VNI and each VLAN may appear once",
                    );
                }
                map.push((vni, vlan));
            }
            VniMap::PerVlan(map)
        }
        (None, Some(list)) => return cx.err(list.span(), key("vnis"), "`vnis` needs at least one entry"),
        (Some(_), Some(list)) => return cx.err(list.span(), key("vnis"), "give either `vni` or `vnis`, not both"),
        (None, None) => return cx.err(p.kind.span(), key("vni"), "a vxlan port needs `vni` (or `vnis`)"),
    };
    let Some(local) = &p.local else {
        return cx.err(p.kind.span(), key("local"), "a vxlan port needs `local`, its underlay address");
    };
    let local_ip = ip_addr(cx, key("local"), local)?;
    let mut remotes = Vec::new();
    if let Some(list) = &p.remotes {
        for (j, r) in list.get_ref().iter().enumerate() {
            let k = format!("port[{i}].remotes[{j}]");
            let ip = ip_addr(cx, k.clone(), r)?;
            if ip.is_ipv4() != local_ip.is_ipv4() {
                return cx.err(r.span(), k, "remotes must be of the same IP version as `local`");
            }
            if ip == local_ip || remotes.contains(&ip) {
                return cx.err(r.span(), k, format!("{ip} is listed twice or is the local address"));
            }
            remotes.push(ip);
        }
    }
    let learning = p.learning.as_ref().is_none_or(|l| *l.get_ref());
    let mut allowed_remotes = Vec::new();
    if let Some(list) = &p.allowed_remotes {
        if !learning {
            return cx.err(list.span(), key("allowed_remotes"), "`allowed_remotes` needs `learning = true`");
        }
        for (j, r) in list.get_ref().iter().enumerate() {
            match r.get_ref().parse::<IpCidr>() {
                Ok(c) => allowed_remotes.push(c),
                Err(m) => return cx.err(r.span(), format!("port[{i}].allowed_remotes[{j}]"), m),
            }
        }
    }
    let evpn = match &p.control {
        None => false,
        Some(c) if c.get_ref() == "evpn" => true,
        Some(c) => {
            return cx.err(c.span(), key("control"), format!("unknown control {:?} (expected \"evpn\")", c.get_ref()));
        }
    };
    if remotes.is_empty() && allowed_remotes.is_empty() && !evpn {
        return cx.err(
            p.kind.span(),
            key("remotes"),
            "a vxlan port needs `remotes` (or `allowed_remotes` to learn them, or `control = \"evpn\"`)",
        );
    }
    let dst_port = match &p.dst_port {
        None => vxlan::DEFAULT_PORT,
        Some(v) => match u16::try_from(*v.get_ref()).ok().filter(|p| *p > 0) {
            Some(port) => port,
            None => return cx.err(v.span(), key("dst_port"), "must be from 1 to 65535"),
        },
    };
    let ttl = match &p.ttl {
        None => DEFAULT_VXLAN_TTL,
        Some(v) => match u8::try_from(*v.get_ref()).ok().filter(|t| *t > 0) {
            Some(t) => t,
            None => return cx.err(v.span(), key("ttl"), "must be from 1 to 255"),
        },
    };
    let arp_suppress = p.arp_suppress.as_ref().is_some_and(|a| *a.get_ref());
    if evpn && dst_port == crate::evpn::KERNEL_UDP_PORT {
        return cx.err(
            p.dst_port.as_ref().map_or(p.kind.span(), |d| d.span()),
            key("dst_port"),
            format!("an EVPN port cannot use UDP port {}: its kernel VXLAN devices do", crate::evpn::KERNEL_UDP_PORT),
        );
    }
    Ok(VxlanSpec { vnis, local: local_ip, remotes, dst_port, learning, allowed_remotes, ttl, arp_suppress, evpn })
}

/// Checks a Unix socket path: absolute, short enough for `sun_path`, no NUL.
fn socket_path(cx: &Ctx<'_>, key: String, value: &Spanned<String>) -> Result<PathBuf, ConfigError> {
    let path = value.get_ref();
    if !path.starts_with('/') || path.ends_with('/') {
        return cx.err(value.span(), key, format!("{path:?} is not an absolute path to a socket"));
    }
    if path.len() > SOCKET_PATH_MAX || path.contains('\0') {
        return cx.err(
            value.span(),
            key,
            format!("a socket path must be at most {SOCKET_PATH_MAX} bytes, without NUL (it is {})", path.len()),
        );
    }
    Ok(PathBuf::from(path))
}

/// A `type = "socket"` port: `path`, `framing` (`stream`, the default, or `dgram`), `server`
/// (stream only; default true).
fn socket_spec(cx: &Ctx<'_>, i: usize, p: &RawPort) -> Result<SocketSpec, ConfigError> {
    let key = |k: &str| format!("port[{i}].{k}");
    let Some(path) = &p.path else {
        return cx.err(p.kind.span(), key("path"), "a socket port needs `path`, its Unix socket");
    };
    let path = socket_path(cx, key("path"), path)?;
    let framing = match p.framing.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
        None | Some(("stream", _)) => SocketFraming::Stream,
        Some(("dgram", _)) => SocketFraming::Dgram,
        Some((other, span)) => {
            return cx.err(span, key("framing"), format!("unknown framing {other:?} (expected stream or dgram)"));
        }
    };
    if let (Some(server), SocketFraming::Dgram) = (&p.server, framing) {
        return cx.err(
            server.span(),
            key("server"),
            "`server` applies to stream framing: with dgram vswitchd always binds `path`",
        );
    }
    let server = p.server.as_ref().is_none_or(|s| *s.get_ref());
    Ok(SocketSpec { path, framing, server })
}

fn millis(
    cx: &Ctx<'_>,
    key: String,
    value: &Option<Spanned<u64>>,
    default: u64,
    min: u64,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(Duration::from_millis(default)),
        Some(v) if !(min..=BOND_INTERVAL_MAX_MS).contains(v.get_ref()) => {
            cx.err(v.span(), key, format!("must be from {min} to {BOND_INTERVAL_MAX_MS} milliseconds"))
        }
        Some(v) => Ok(Duration::from_millis(*v.get_ref())),
    }
}

/// A `type = "bond"` port: `mode`, `miimon_ms`, `updelay_ms`, `downdelay_ms`, `primary`,
/// `xmit_hash_policy`, with the kernel bonding driver's names (numbers too).
fn bond_spec(cx: &Ctx<'_>, i: usize, p: &RawPort) -> Result<BondSpec, ConfigError> {
    let key = |k: &str| format!("port[{i}].{k}");
    let policy = match p.xmit_hash_policy.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("layer2" | "0", _)) => HashPolicy::Layer2,
        Some(("layer3+4" | "1", _)) => HashPolicy::Layer34,
        Some(("layer2+3" | "2", _)) => HashPolicy::Layer23,
        Some((other, span)) => {
            return cx.err(
                span,
                key("xmit_hash_policy"),
                format!("unknown xmit_hash_policy {other:?} (expected layer2, layer2+3 or layer3+4)"),
            );
        }
    };
    let Some(mode) = &p.mode else {
        return cx.err(
            p.kind.span(),
            key("mode"),
            "a bond needs `mode` (balance-rr, active-backup, balance-xor or broadcast)",
        );
    };
    let mode_value = match mode.get_ref().as_str() {
        "balance-rr" | "0" => BondMode::BalanceRr,
        "active-backup" | "1" => BondMode::ActiveBackup,
        "balance-xor" | "2" => BondMode::BalanceXor(policy),
        "broadcast" | "3" => BondMode::Broadcast,
        "802.3ad" | "4" => BondMode::Lacp(policy),
        m @ ("balance-tlb" | "5" | "balance-alb" | "6") => {
            return cx.err(
                mode.span(),
                key("mode"),
                format!("mode {m:?} is not supported by this version of vswitchd yet"),
            );
        }
        other => {
            return cx.err(
                mode.span(),
                key("mode"),
                format!(
                    "unknown mode {other:?} (expected balance-rr, active-backup, balance-xor, broadcast or 802.3ad)"
                ),
            );
        }
    };
    if let (Some(primary), false) = (&p.primary, mode_value == BondMode::ActiveBackup) {
        return cx.err(primary.span(), key("primary"), "`primary` applies to active-backup bonds");
    }
    let is_lacp = matches!(mode_value, BondMode::Lacp(_));
    for (name, value) in [("lacp", &p.lacp), ("lacp_rate", &p.lacp_rate)] {
        if let (Some(v), false) = (value, is_lacp) {
            return cx.err(v.span(), key(name), format!("`{name}` applies to 802.3ad bonds"));
        }
    }
    let lacp_active = match p.lacp.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("active", _)) => true,
        Some(("passive", _)) => false,
        Some((other, span)) => {
            return cx.err(span, key("lacp"), format!("unknown lacp {other:?} (expected active or passive)"));
        }
    };
    let lacp_fast = match p.lacp_rate.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("slow" | "0", _)) => false,
        Some(("fast" | "1", _)) => true,
        Some((other, span)) => {
            return cx.err(span, key("lacp_rate"), format!("unknown lacp_rate {other:?} (expected slow or fast)"));
        }
    };
    Ok(BondSpec {
        mode: mode_value,
        // A bond without a link monitor never fails over; vswitchd always monitors.
        miimon: millis(cx, key("miimon_ms"), &p.miimon_ms, DEFAULT_MIIMON_MS, 1)?,
        updelay: millis(cx, key("updelay_ms"), &p.updelay_ms, 0, 0)?,
        downdelay: millis(cx, key("downdelay_ms"), &p.downdelay_ms, 0, 0)?,
        primary: p.primary.as_ref().map(|v| v.get_ref().clone()),
        lacp_active,
        lacp_fast,
        members: Vec::new(),
    })
}

#[derive(Debug, Deserialize)]
struct TeamConfig {
    runner: Option<TeamRunner>,
    link_watch: Option<TeamLinkWatch>,
    #[serde(default)]
    ports: serde_json::Map<String, serde_json::Value>,
    #[serde(flatten)]
    _rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct TeamRunner {
    name: String,
    #[serde(default)]
    tx_hash: Vec<String>,
    active: Option<bool>,
    fast_rate: Option<bool>,
    #[serde(flatten)]
    _rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct TeamLinkWatch {
    name: String,
    #[serde(default)]
    delay_up: u64,
    #[serde(default)]
    delay_down: u64,
}

/// A `type = "team"` port: teamd's JSON `config` mapped onto a bond (runners roundrobin,
/// activebackup, loadbalance, broadcast; link watch ethtool with its delays).
fn team_spec(cx: &Ctx<'_>, i: usize, p: &RawPort) -> Result<BondSpec, ConfigError> {
    let key = format!("port[{i}].config");
    let Some(config) = &p.config else {
        return cx.err(p.kind.span(), key, "a team needs `config`, teamd's JSON configuration");
    };
    let team: TeamConfig = match serde_json::from_str(config.get_ref()) {
        Ok(t) => t,
        Err(e) => return cx.err(config.span(), key, format!("not a teamd configuration: {e}")),
    };
    let _ = team.ports;
    let runner = team.runner.as_ref().map_or("roundrobin", |r| r.name.as_str());
    let tx_hash = team.runner.as_ref().map(|r| r.tx_hash.clone()).unwrap_or_default();
    let policy = if tx_hash.iter().any(|h| matches!(h.as_str(), "l4" | "tcp" | "udp" | "sctp")) {
        HashPolicy::Layer34
    } else if tx_hash.iter().any(|h| matches!(h.as_str(), "l3" | "ip" | "ipv4" | "ipv6")) {
        HashPolicy::Layer23
    } else {
        HashPolicy::Layer2
    };
    let mode = match runner {
        "roundrobin" => BondMode::BalanceRr,
        "activebackup" => BondMode::ActiveBackup,
        "loadbalance" => BondMode::BalanceXor(policy),
        "broadcast" => BondMode::Broadcast,
        "lacp" => BondMode::Lacp(policy),
        other => {
            return cx.err(
                config.span(),
                key,
                format!("runner {other:?} is not supported (expected roundrobin, activebackup, loadbalance, broadcast or lacp)"),
            );
        }
    };
    let (updelay, downdelay) = match &team.link_watch {
        None => (0, 0),
        Some(w) if w.name == "ethtool" => (w.delay_up, w.delay_down),
        Some(w) => {
            return cx.err(config.span(), key, format!("link_watch {:?} is not supported (expected ethtool)", w.name));
        }
    };
    Ok(BondSpec {
        mode,
        miimon: Duration::from_millis(DEFAULT_MIIMON_MS),
        updelay: Duration::from_millis(updelay),
        downdelay: Duration::from_millis(downdelay),
        primary: None,
        // teamd's lacp runner defaults: active, slow rate.
        lacp_active: team.runner.as_ref().and_then(|r| r.active).unwrap_or(true),
        lacp_fast: team.runner.as_ref().and_then(|r| r.fast_rate).unwrap_or(false),
        members: Vec::new(),
    })
}

/// The `[bridge]` table's `mcast_*` keys (IGMP/MLD snooping).
fn mcast_config(cx: &Ctx<'_>, b: &RawBridge) -> Result<McastConfig, ConfigError> {
    let flag = |v: &Option<Spanned<bool>>, default: bool| v.as_ref().map_or(default, |v| *v.get_ref());
    let defaults = McastConfig::default();
    let aging = match &b.mcast_aging_secs {
        Some(v) if !(1..=86_400).contains(v.get_ref()) => {
            return cx.err(v.span(), "bridge.mcast_aging_secs", "must be from 1 to 86400 seconds");
        }
        Some(v) => Duration::from_secs(*v.get_ref()),
        None => defaults.aging,
    };
    let snooping = flag(&b.mcast_snooping, defaults.snooping);
    if !snooping {
        // Only a value other than the default needs snooping (the defaults may be spelled out).
        let needs_snooping = [
            ("mcast_querier", b.mcast_querier.as_ref().filter(|v| *v.get_ref() != defaults.querier).map(|v| v.span())),
            (
                "mcast_aging_secs",
                b.mcast_aging_secs.as_ref().filter(|v| *v.get_ref() != defaults.aging.as_secs()).map(|v| v.span()),
            ),
            (
                "mcast_flood_unknown",
                b.mcast_flood_unknown.as_ref().filter(|v| *v.get_ref() != defaults.flood_unknown).map(|v| v.span()),
            ),
        ];
        if let Some((key, Some(span))) = needs_snooping.into_iter().find(|(_, s)| s.is_some()) {
            return cx.err(span, format!("bridge.{key}"), format!("`{key}` needs `mcast_snooping = true`"));
        }
    }
    Ok(McastConfig {
        snooping,
        querier: flag(&b.mcast_querier, defaults.querier),
        aging,
        flood_unknown: flag(&b.mcast_flood_unknown, defaults.flood_unknown),
        max_groups: defaults.max_groups,
    })
}

/// Gives each bond its members (the ports whose `master` names it) and checks the pairing.
fn link_bond_members(cx: &Ctx<'_>, ports: &mut [PortSpec], raw: &[Spanned<RawPort>]) -> Result<(), ConfigError> {
    for i in 0..ports.len() {
        let Some(master) = ports[i].master.clone() else { continue };
        let span = raw[i].get_ref().master.as_ref().map_or(0..0, |m| m.span());
        let key = format!("port[{i}].master");
        let Some(bond) = ports.iter().position(|p| p.name == master) else {
            return cx.err(span, key, format!("no port named {master:?}"));
        };
        if !matches!(ports[bond].kind, PortKind::Bond(_)) {
            return cx.err(span, key, format!("port {master:?} is not a bond or team"));
        }
        if matches!(ports[i].kind, PortKind::Internal | PortKind::Bond(_)) {
            return cx.err(span, key, format!("a {} port cannot be a bond member", ports[i].kind.type_name()));
        }
        if ports[i].vlan != VlanMode::Transparent {
            return cx.err(span, key, "VLAN settings of a member belong on its bond");
        }
        if ports[i].mrouter {
            return cx.err(span, key, "`mrouter` of a member belongs on its bond");
        }
        let name = ports[i].name.clone();
        if let PortKind::Bond(spec) = &mut ports[bond].kind {
            spec.members.push(name);
        }
    }
    for (i, port) in ports.iter().enumerate() {
        if let PortKind::Bond(spec) = &port.kind {
            if spec.members.is_empty() {
                return cx.err(
                    raw[i].get_ref().name.span(),
                    format!("port[{i}]"),
                    format!("bond {:?} has no members (set `master = {:?}` on its member ports)", port.name, port.name),
                );
            }
            if let Some(primary) = &spec.primary {
                if !spec.members.contains(primary) {
                    let span = raw[i].get_ref().primary.as_ref().map_or(0..0, |p| p.span());
                    return cx.err(
                        span,
                        format!("port[{i}].primary"),
                        format!("{primary:?} is not a member of bond {:?}", port.name),
                    );
                }
            }
        }
    }
    Ok(())
}

/// The host services of port `i` (`dhcp`, `dns`, `masquerade`): only on an `internal` port,
/// which needs an IPv4 address; a DHCP range lies in its subnet.
fn host_services(
    cx: &Ctx<'_>,
    i: usize,
    p: &RawPort,
    kind: &PortKind,
    address: Option<IpCidr>,
) -> Result<HostServices, ConfigError> {
    let keys = [
        ("dhcp", p.dhcp.as_ref().map(|v| v.span())),
        ("dns", p.dns.as_ref().filter(|v| *v.get_ref()).map(|v| v.span())),
        ("masquerade", p.masquerade.as_ref().filter(|v| *v.get_ref()).map(|v| v.span())),
    ];
    let Some((first, Some(span))) = keys.iter().find(|(_, s)| s.is_some()).cloned() else {
        return Ok(HostServices::default());
    };
    if !matches!(kind, PortKind::Internal) {
        return cx.err(span, format!("port[{i}].{first}"), format!("`{first}` applies only to ports of type internal"));
    }
    let subnet = match address {
        Some(IpCidr { addr: IpAddr::V4(a), prefix }) => (a, prefix),
        _ => {
            return cx.err(
                span,
                format!("port[{i}].{first}"),
                format!("`{first}` needs the port's IPv4 `address` (the hosts' gateway and server)"),
            );
        }
    };
    let in_subnet = |ip: std::net::Ipv4Addr| {
        let mask = if subnet.1 == 0 { 0 } else { u32::MAX << (32 - u32::from(subnet.1)) };
        u32::from(ip) & mask == u32::from(subnet.0) & mask
    };
    let dhcp = match &p.dhcp {
        None => None,
        Some(d) => {
            let d = d.get_ref();
            let key = format!("port[{i}].dhcp.range");
            let bad = |m: String| cx.err::<HostServices>(d.range.span(), key.clone(), m);
            let Some((a, b)) = d.range.get_ref().split_once('-') else {
                return bad(format!("{:?} is not FIRST-LAST (two IPv4 addresses)", d.range.get_ref()));
            };
            let (Ok(start), Ok(end)) = (a.trim().parse::<std::net::Ipv4Addr>(), b.trim().parse::<std::net::Ipv4Addr>())
            else {
                return bad(format!("{:?} is not FIRST-LAST (two IPv4 addresses)", d.range.get_ref()));
            };
            if u32::from(start) > u32::from(end) {
                return bad(format!("{start} comes after {end}"));
            }
            if !in_subnet(start) || !in_subnet(end) {
                return bad(format!("the range is not inside the port's subnet {}/{}", subnet.0, subnet.1));
            }
            let lease_secs = match &d.lease_secs {
                None => DEFAULT_LEASE_SECS,
                Some(l) if (120..=31_536_000).contains(l.get_ref()) => *l.get_ref() as u32,
                Some(l) => {
                    return cx.err(
                        l.span(),
                        format!("port[{i}].dhcp.lease_secs"),
                        "must be from 120 to 31536000 seconds",
                    );
                }
            };
            Some(DhcpSpec { start, end, lease_secs })
        }
    };
    Ok(HostServices {
        dhcp,
        dns: p.dns.as_ref().is_some_and(|v| *v.get_ref()),
        masquerade: p.masquerade.as_ref().is_some_and(|v| *v.get_ref()),
    })
}

/// A port's modes: `isolated`, `hairpin`, `mac_limit`, `allowed_macs`, `storm_pps`. A bond
/// member is not a bridge port of its own, so it takes none (its bond does).
fn port_modes(cx: &Ctx<'_>, i: usize, p: &RawPort) -> Result<PortModes, ConfigError> {
    let key = |k: &str| format!("port[{i}].{k}");
    if p.master.is_some() {
        let keys = [
            ("isolated", p.isolated.as_ref().map(|v| v.span())),
            ("hairpin", p.hairpin.as_ref().map(|v| v.span())),
            ("mac_limit", p.mac_limit.as_ref().map(|v| v.span())),
            ("allowed_macs", p.allowed_macs.as_ref().map(|v| v.span())),
            ("storm_pps", p.storm_pps.as_ref().map(|v| v.span())),
        ];
        if let Some((k, Some(span))) = keys.into_iter().find(|(_, s)| s.is_some()) {
            return cx.err(
                span,
                key(k),
                format!("a bond member is not a bridge port of its own: set `{k}` on its bond"),
            );
        }
    }
    let mac_limit = match &p.mac_limit {
        Some(n) if !(1..=i64::from(MAX_MAC_LIMIT)).contains(n.get_ref()) => {
            return cx.err(n.span(), key("mac_limit"), format!("must be from 1 to {MAX_MAC_LIMIT}"));
        }
        Some(n) => Some(*n.get_ref() as u32),
        None => None,
    };
    let mut allowed_macs = Vec::new();
    if let Some(list) = &p.allowed_macs {
        if list.get_ref().is_empty() || list.get_ref().len() > MAX_ALLOWED_MACS {
            return cx.err(
                list.span(),
                key("allowed_macs"),
                format!("must list 1 to {MAX_ALLOWED_MACS} MAC addresses"),
            );
        }
        for (j, m) in list.get_ref().iter().enumerate() {
            let mac = match m.get_ref().parse::<MacAddr>() {
                Ok(mac) if mac.is_valid_source() => mac,
                Ok(mac) => {
                    return cx.err(
                        m.span(),
                        format!("port[{i}].allowed_macs[{j}]"),
                        format!("{mac} is not a unicast address"),
                    );
                }
                Err(e) => return cx.err(m.span(), format!("port[{i}].allowed_macs[{j}]"), e.to_string()),
            };
            if allowed_macs.contains(&mac) {
                return cx.err(m.span(), format!("port[{i}].allowed_macs[{j}]"), format!("{mac} is listed twice"));
            }
            allowed_macs.push(mac);
        }
    }
    let mut storm_pps = StormPps::default();
    if let Some(storm) = &p.storm_pps {
        let raw = storm.get_ref();
        for (name, value, slot) in [
            ("broadcast", &raw.broadcast, &mut storm_pps.broadcast),
            ("multicast", &raw.multicast, &mut storm_pps.multicast),
            ("unknown_unicast", &raw.unknown_unicast, &mut storm_pps.unknown_unicast),
        ] {
            if let Some(v) = value {
                if !(1..=i64::from(MAX_STORM_PPS)).contains(v.get_ref()) {
                    return cx.err(
                        v.span(),
                        format!("port[{i}].storm_pps.{name}"),
                        format!("must be from 1 to {MAX_STORM_PPS} frames a second"),
                    );
                }
                *slot = Some(*v.get_ref() as u32);
            }
        }
        if !storm_pps.is_limited() {
            return cx.err(
                storm.span(),
                key("storm_pps"),
                "limits no class: give broadcast, multicast and/or unknown_unicast",
            );
        }
    }
    Ok(PortModes {
        isolated: p.isolated.as_ref().is_some_and(|v| *v.get_ref()),
        hairpin: p.hairpin.as_ref().is_some_and(|v| *v.get_ref()),
        mac_limit,
        allowed_macs,
        storm_pps,
    })
}

fn vlan_id(cx: &Ctx<'_>, key: String, value: &Spanned<i64>) -> Result<VlanId, ConfigError> {
    match u16::try_from(*value.get_ref()).ok().filter(|v| (1..=4094).contains(v)).and_then(VlanId::new) {
        Some(v) => Ok(v),
        None => cx.err(value.span(), key, format!("VLAN {} is out of range (1 to 4094)", value.get_ref())),
    }
}

/// The port's VLAN mode from `vlan`, `trunk`, `native_vlan`, `vlan_mode` and `vlan_protocol`.
fn port_vlan_mode(cx: &Ctx<'_>, i: usize, p: &RawPort) -> Result<VlanMode, ConfigError> {
    let key = |k: &str| format!("port[{i}].{k}");
    let mode = p.vlan_mode.as_ref().map(|m| (m.get_ref().as_str(), m.span()));
    if let (Some(native), None) = (&p.native_vlan, &p.trunk) {
        return cx.err(native.span(), key("native_vlan"), "`native_vlan` needs `trunk`");
    }
    let tpid = match p.vlan_protocol.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("802.1q", _)) => TPID_8021Q,
        Some(("802.1ad", _)) => TPID_8021AD,
        Some((other, span)) => {
            return cx.err(
                span,
                key("vlan_protocol"),
                format!("unknown VLAN protocol {other:?} (expected 802.1q or 802.1ad)"),
            );
        }
    };
    if let (Some(protocol), None) = (&p.vlan_protocol, &p.trunk) {
        return cx.err(protocol.span(), key("vlan_protocol"), "`vlan_protocol` applies to trunks");
    }
    match (mode, &p.vlan, &p.trunk) {
        (_, Some(_), Some(trunk)) => cx.err(
            trunk.span(),
            key("trunk"),
            "a port is either an access port (`vlan`) or a trunk (`trunk`), not both",
        ),
        (None | Some(("access", _)), Some(vlan), None) => Ok(VlanMode::Access(vlan_id(cx, key("vlan"), vlan)?)),
        (Some(("dot1q-tunnel", _)), Some(vlan), None) => Ok(VlanMode::Dot1qTunnel(vlan_id(cx, key("vlan"), vlan)?)),
        (Some(("dot1q-tunnel", span)), None, _) => {
            cx.err(span, key("vlan_mode"), "a dot1q-tunnel port needs `vlan`, its service VLAN")
        }
        (None | Some(("trunk", _)), None, Some(trunk)) => {
            if trunk.get_ref().is_empty() {
                return cx.err(trunk.span(), key("trunk"), "a trunk needs at least one VLAN");
            }
            let mut allowed = VlanSet::EMPTY;
            for (j, v) in trunk.get_ref().iter().enumerate() {
                let id = vlan_id(cx, format!("port[{i}].trunk[{j}]"), v)?;
                if allowed.contains(id) {
                    return cx.err(v.span(), format!("port[{i}].trunk[{j}]"), format!("VLAN {id} is listed twice"));
                }
                allowed.insert(id);
            }
            let native = p.native_vlan.as_ref().map(|n| vlan_id(cx, key("native_vlan"), n)).transpose()?;
            Ok(VlanMode::Trunk { allowed: Box::new(allowed), native, tpid })
        }
        (None, None, None) => Ok(VlanMode::Transparent),
        (Some((m @ ("access" | "trunk"), span)), _, _) => {
            cx.err(span, key("vlan_mode"), format!("vlan_mode {m:?} does not match the port's `vlan`/`trunk` keys"))
        }
        (Some((other, span)), _, _) => cx.err(
            span,
            key("vlan_mode"),
            format!("unknown vlan_mode {other:?} (expected access, trunk or dot1q-tunnel)"),
        ),
    }
}

/// The `[bridge]` table's spanning tree keys.
fn bridge_stp(cx: &Ctx<'_>, b: &RawBridge) -> Result<Option<StpSpec>, ConfigError> {
    let mode = match b.stp.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None | Some(("off", _)) => None,
        Some(("rstp", _)) => Some(StpMode::Rstp),
        Some(("stp", _)) => Some(StpMode::Stp),
        Some((other, span)) => {
            return cx.err(span, "bridge.stp", format!("unknown stp {other:?} (expected rstp, stp or off)"));
        }
    };
    let timers = [
        ("stp_priority", &b.stp_priority),
        ("hello_secs", &b.hello_secs),
        ("forward_delay_secs", &b.forward_delay_secs),
        ("max_age_secs", &b.max_age_secs),
    ];
    let Some(mode) = mode else {
        if let Some((key, Some(v))) = timers.into_iter().find(|(_, v)| v.is_some()) {
            return cx.err(v.span(), format!("bridge.{key}"), "applies only with stp = \"rstp\" or \"stp\"");
        }
        return Ok(None);
    };
    let mut spec = StpSpec::new(mode);
    if let Some(v) = &b.stp_priority {
        let p = *v.get_ref();
        if !(0..=61440).contains(&p) || p % 4096 != 0 {
            return cx.err(v.span(), "bridge.stp_priority", "must be a multiple of 4096 from 0 to 61440");
        }
        spec.priority = p as u16;
    }
    let secs = |v: &Option<Spanned<i64>>, key: &str, range: std::ops::RangeInclusive<i64>, default: u64| match v {
        None => Ok(default),
        Some(v) if range.contains(v.get_ref()) => Ok(*v.get_ref() as u64),
        Some(v) => cx.err(
            v.span(),
            format!("bridge.{key}"),
            format!("must be from {} to {} seconds", range.start(), range.end()),
        ),
    };
    spec.hello_secs = secs(&b.hello_secs, "hello_secs", 1..=10, spec.hello_secs)?;
    spec.forward_delay_secs = secs(&b.forward_delay_secs, "forward_delay_secs", 2..=30, spec.forward_delay_secs)?;
    spec.max_age_secs = secs(&b.max_age_secs, "max_age_secs", 6..=40, spec.max_age_secs)?;
    if spec.max_age_secs < 2 * (spec.hello_secs + 1) {
        let span = b.max_age_secs.as_ref().or(b.hello_secs.as_ref()).map_or(0..0, |v| v.span());
        return cx.err(span, "bridge.max_age_secs", "must be at least 2 × (hello_secs + 1) (802.1D 17.14)");
    }
    Ok(Some(spec))
}

/// A `[[port]]` table's spanning tree keys (`stp_on`: the bridge runs the tree).
fn port_stp(cx: &Ctx<'_>, i: usize, p: &RawPort, stp_on: bool) -> Result<PortStpSpec, ConfigError> {
    let spans = [
        ("stp_cost", p.stp_cost.as_ref().map(|v| v.span())),
        ("stp_priority", p.stp_priority.as_ref().map(|v| v.span())),
        ("edge", p.edge.as_ref().map(|v| v.span())),
        ("bpdu_guard", p.bpdu_guard.as_ref().map(|v| v.span())),
    ];
    if let Some((key, Some(span))) = spans.iter().find(|(_, s)| s.is_some()).cloned() {
        if !stp_on {
            return cx.err(
                span,
                format!("port[{i}].{key}"),
                "applies only when [bridge] has stp = \"rstp\" or \"stp\"",
            );
        }
        if p.master.is_some() {
            return cx.err(span, format!("port[{i}].{key}"), "a bond member is not a bridge port: set it on the bond");
        }
    }
    let mut spec = PortStpSpec::default();
    if let Some(v) = &p.stp_cost {
        if !(1..=200_000_000).contains(v.get_ref()) {
            return cx.err(v.span(), format!("port[{i}].stp_cost"), "must be from 1 to 200000000");
        }
        spec.cost = *v.get_ref() as u32;
    }
    if let Some(v) = &p.stp_priority {
        let n = *v.get_ref();
        if !(0..=240).contains(&n) || n % 16 != 0 {
            return cx.err(v.span(), format!("port[{i}].stp_priority"), "must be a multiple of 16 from 0 to 240");
        }
        spec.priority = n as u8;
    }
    spec.edge = p.edge.as_ref().is_some_and(|v| *v.get_ref());
    spec.bpdu_guard = p.bpdu_guard.as_ref().is_some_and(|v| *v.get_ref());
    Ok(spec)
}

impl Topology {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Topology, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Topology::parse(path, &src)
    }

    /// Validates `src`, naming `path` in errors.
    pub fn parse(path: &Path, src: &str) -> Result<Topology, ConfigError> {
        let cx = Ctx { file: path, src };
        let raw: RawFile = toml::from_str(src).map_err(|e| cx.toml_error(&e))?;

        let b = raw.bridge.get_ref();
        if let Err(m) = check_file_name(b.name.get_ref()) {
            return cx.err(b.name.span(), "bridge.name", m);
        }
        let fdb_aging = match &b.fdb_aging_secs {
            Some(v) if !(1..=31_536_000).contains(v.get_ref()) => {
                return cx.err(v.span(), "bridge.fdb_aging_secs", "must be from 1 to 31536000 seconds");
            }
            Some(v) => Duration::from_secs(*v.get_ref()),
            None => Duration::from_secs(DEFAULT_FDB_AGING_SECS),
        };
        let fdb_max_entries = match &b.fdb_max_entries {
            Some(v) if !(1..=16_777_216).contains(v.get_ref()) => {
                return cx.err(v.span(), "bridge.fdb_max_entries", "must be from 1 to 16777216");
            }
            Some(v) => *v.get_ref() as usize,
            None => DEFAULT_FDB_MAX_ENTRIES,
        };
        let threads = match &b.threads {
            None => Threads::Auto,
            Some(t) => match t.get_ref() {
                toml::Value::String(w) if w == "auto" => Threads::Auto,
                toml::Value::Integer(n) if (1..=MAX_THREADS as i64).contains(n) => Threads::Count(*n as usize),
                _ => {
                    return cx.err(t.span(), "bridge.threads", format!("must be \"auto\" or from 1 to {MAX_THREADS}"));
                }
            },
        };
        let stp = bridge_stp(&cx, b)?;
        let mcast = mcast_config(&cx, b)?;
        let bridge = BridgeSpec { name: b.name.get_ref().clone(), fdb_aging, fdb_max_entries, threads, stp, mcast };

        let mut netns = Vec::new();
        let mut netns_names = HashSet::new();
        for (i, ns) in raw.netns.iter().enumerate() {
            let ns = ns.get_ref();
            let name = ns.name.get_ref();
            if let Err(m) = check_file_name(name) {
                return cx.err(ns.name.span(), format!("netns[{i}].name"), m);
            }
            if !netns_names.insert(name.clone()) {
                return cx.err(
                    ns.name.span(),
                    format!("netns[{i}].name"),
                    format!("namespace {name:?} is declared twice"),
                );
            }
            let mut routes = Vec::new();
            for (j, r) in ns.routes.iter().enumerate() {
                let r = r.get_ref();
                let via: IpAddr = match r.via.get_ref().parse() {
                    Ok(via) => via,
                    Err(_) => {
                        return cx.err(
                            r.via.span(),
                            format!("netns[{i}].routes[{j}].via"),
                            format!("{:?} is not an IP address", r.via.get_ref()),
                        );
                    }
                };
                let dst = match r.dst.get_ref().as_str() {
                    "default" => None,
                    text => match text.parse::<IpCidr>() {
                        Ok(c) => Some(c),
                        Err(m) => {
                            return cx.err(r.dst.span(), format!("netns[{i}].routes[{j}].dst"), m);
                        }
                    },
                };
                if dst.is_some_and(|d| d.addr.is_ipv4() != via.is_ipv4()) {
                    return cx.err(
                        r.via.span(),
                        format!("netns[{i}].routes[{j}].via"),
                        "destination and gateway are of different IP versions",
                    );
                }
                routes.push(RouteSpec { dst, via });
            }
            netns.push(NetnsSpec {
                name: name.clone(),
                routes,
                hosts: ns.hosts.as_ref().is_some_and(|h| *h.get_ref()),
            });
        }

        let mut ports = Vec::new();
        let mut port_names = HashSet::new();
        for (i, p) in raw.port.iter().enumerate() {
            let p = p.get_ref();
            let name = p.name.get_ref();
            if let Err(m) = check_ifname(name) {
                return cx.err(p.name.span(), format!("port[{i}].name"), m);
            }
            if !port_names.insert(name.clone()) {
                return cx.err(p.name.span(), format!("port[{i}].name"), format!("port name {name:?} is used twice"));
            }
            let netns_ref = match &p.netns {
                Some(ns) if !netns_names.contains(ns.get_ref()) => {
                    return cx.err(
                        ns.span(),
                        format!("port[{i}].netns"),
                        format!("namespace {:?} is not declared in a [[netns]] table", ns.get_ref()),
                    );
                }
                Some(ns) => Some(ns),
                None => None,
            };
            let netns_name = netns_ref.map(|n| n.get_ref().clone());
            let kind_name = p.kind.get_ref().as_str();
            let only_for = |key: &str, span: std::ops::Range<usize>, types: &str| {
                cx.err::<()>(span, format!("port[{i}].{key}"), format!("`{key}` applies only to ports of type {types}"))
            };
            if kind_name != "veth" {
                if let Some(peer) = &p.peer {
                    only_for("peer", peer.span(), "veth")?;
                }
            }
            if kind_name != "netdev" {
                if let Some(device) = &p.device {
                    only_for("device", device.span(), "netdev")?;
                }
            }
            if kind_name != "bond" {
                let bond_keys = [
                    ("mode", p.mode.as_ref().map(|v| v.span())),
                    ("miimon_ms", p.miimon_ms.as_ref().map(|v| v.span())),
                    ("updelay_ms", p.updelay_ms.as_ref().map(|v| v.span())),
                    ("downdelay_ms", p.downdelay_ms.as_ref().map(|v| v.span())),
                    ("primary", p.primary.as_ref().map(|v| v.span())),
                    ("xmit_hash_policy", p.xmit_hash_policy.as_ref().map(|v| v.span())),
                    ("lacp", p.lacp.as_ref().map(|v| v.span())),
                    ("lacp_rate", p.lacp_rate.as_ref().map(|v| v.span())),
                ];
                if let Some((key, Some(span))) = bond_keys.into_iter().find(|(_, s)| s.is_some()) {
                    only_for(key, span, "bond")?;
                }
            }
            if kind_name != "team" {
                if let Some(config) = &p.config {
                    only_for("config", config.span(), "team")?;
                }
            }
            if kind_name != "vxlan" {
                let vxlan_keys = [
                    ("vni", p.vni.as_ref().map(|v| v.span())),
                    ("vnis", p.vnis.as_ref().map(|v| v.span())),
                    ("local", p.local.as_ref().map(|v| v.span())),
                    ("remotes", p.remotes.as_ref().map(|v| v.span())),
                    ("dst_port", p.dst_port.as_ref().map(|v| v.span())),
                    ("learning", p.learning.as_ref().map(|v| v.span())),
                    ("allowed_remotes", p.allowed_remotes.as_ref().map(|v| v.span())),
                    ("ttl", p.ttl.as_ref().map(|v| v.span())),
                    ("arp_suppress", p.arp_suppress.as_ref().map(|v| v.span())),
                    ("control", p.control.as_ref().map(|v| v.span())),
                ];
                if let Some((key, Some(span))) = vxlan_keys.into_iter().find(|(_, s)| s.is_some()) {
                    only_for(key, span, "vxlan")?;
                }
            }
            if kind_name != "socket" {
                for (key, span) in
                    [("path", p.path.as_ref().map(|v| v.span())), ("framing", p.framing.as_ref().map(|v| v.span()))]
                {
                    if let Some(span) = span {
                        only_for(key, span, "socket")?;
                    }
                }
            }
            if kind_name != "vhost-user" {
                if let Some(socket) = &p.socket {
                    only_for("socket", socket.span(), "vhost-user")?;
                }
            }
            if !matches!(kind_name, "socket" | "vhost-user") {
                if let Some(server) = &p.server {
                    only_for("server", server.span(), "socket or vhost-user")?;
                }
            }
            if matches!(kind_name, "bond" | "team" | "vxlan" | "socket" | "vhost-user") {
                let host_keys = [
                    ("netns", p.netns.as_ref().map(|v| v.span())),
                    ("address", p.address.as_ref().map(|v| v.span())),
                    ("mac", p.mac.as_ref().map(|v| v.span())),
                    ("master", p.master.as_ref().map(|v| v.span())),
                ];
                if let Some((key, Some(span))) = host_keys.into_iter().find(|(_, s)| s.is_some()) {
                    return cx.err(
                        span,
                        format!("port[{i}].{key}"),
                        format!("`{key}` does not apply to a {kind_name} port: vswitchd's {kind_name} ports are not kernel interfaces"),
                    );
                }
            }
            let kind = match kind_name {
                "tap" => PortKind::Tap { netns: netns_name },
                "internal" => {
                    if let Some(ns) = netns_ref {
                        return cx.err(
                            ns.span(),
                            format!("port[{i}].netns"),
                            "an internal port lives in vswitchd's own namespace",
                        );
                    }
                    PortKind::Internal
                }
                "veth" => {
                    let peer = match &p.peer {
                        Some(peer) => {
                            if let Err(m) = check_ifname(peer.get_ref()) {
                                return cx.err(peer.span(), format!("port[{i}].peer"), m);
                            }
                            peer.get_ref().clone()
                        }
                        None => {
                            let peer = format!("{name}-sw");
                            if peer.len() > IFNAME_MAX {
                                return cx.err(
                                    p.name.span(),
                                    format!("port[{i}].peer"),
                                    format!(
                                        "the default peer name {peer:?} is longer than {IFNAME_MAX} bytes: set `peer`"
                                    ),
                                );
                            }
                            peer
                        }
                    };
                    if peer == *name {
                        return cx.err(
                            p.name.span(),
                            format!("port[{i}].peer"),
                            "a veth's two ends need different names",
                        );
                    }
                    PortKind::Veth { netns: netns_name, peer }
                }
                "netdev" => {
                    let Some(device) = &p.device else {
                        return cx.err(
                            p.kind.span(),
                            format!("port[{i}].device"),
                            "a netdev port needs `device`, the interface to attach to",
                        );
                    };
                    if let Err(m) = check_ifname(device.get_ref()) {
                        return cx.err(device.span(), format!("port[{i}].device"), m);
                    }
                    for (key, span) in
                        [("address", p.address.as_ref().map(|a| a.span())), ("mac", p.mac.as_ref().map(|m| m.span()))]
                    {
                        if let Some(span) = span {
                            return cx.err(
                                span,
                                format!("port[{i}].{key}"),
                                "vswitchd does not configure an interface it did not create",
                            );
                        }
                    }
                    PortKind::Netdev { device: device.get_ref().clone(), netns: netns_name }
                }
                "bond" => PortKind::Bond(bond_spec(&cx, i, p)?),
                "team" => PortKind::Bond(team_spec(&cx, i, p)?),
                "vxlan" => PortKind::Vxlan(vxlan_spec(&cx, i, p)?),
                "socket" => PortKind::Socket(socket_spec(&cx, i, p)?),
                "vhost-user" => {
                    let Some(socket) = &p.socket else {
                        return cx.err(
                            p.kind.span(),
                            format!("port[{i}].socket"),
                            "a vhost-user port needs `socket`, its Unix socket",
                        );
                    };
                    PortKind::VhostUser {
                        socket: socket_path(&cx, format!("port[{i}].socket"), socket)?,
                        server: p.server.as_ref().is_none_or(|s| *s.get_ref()),
                    }
                }
                other => {
                    return cx.err(
                        p.kind.span(),
                        format!("port[{i}].type"),
                        format!(
                            "unknown port type {other:?} (expected tap, veth, netdev, internal, vxlan, bond, team, \
                             socket or vhost-user)"
                        ),
                    );
                }
            };
            let mut vlan = port_vlan_mode(&cx, i, p)?;
            if let (PortKind::Vxlan(VxlanSpec { vnis: VniMap::Single(vni), .. }), VlanMode::Trunk { .. }) =
                (&kind, &vlan)
            {
                let span = p.trunk.as_ref().map(|v| v.span()).unwrap_or(0..0);
                return cx.err(
                    span,
                    format!("port[{i}].trunk"),
                    format!(
                        "a VXLAN port with one VNI ({vni}) cannot be a trunk: its VLANs would merge into one \
                         broadcast domain; map each VLAN to its own VNI with `vnis`"
                    ),
                );
            }
            if let PortKind::Vxlan(VxlanSpec { vnis: VniMap::PerVlan(map), .. }) = &kind {
                // Each VNI is a VLAN on the bridge: the port is a trunk of them.
                if vlan != VlanMode::Transparent {
                    let span = p.vlan.as_ref().map(|v| v.span()).or(p.trunk.as_ref().map(|v| v.span())).unwrap_or(0..0);
                    return cx.err(span, format!("port[{i}]"), "with `vnis`, the VLANs come from the VNI map");
                }
                vlan = VlanMode::Trunk {
                    allowed: Box::new(map.iter().map(|(_, v)| *v).collect()),
                    native: None,
                    tpid: TPID_8021Q,
                };
            }
            let address = match &p.address {
                Some(a) => match a.get_ref().parse::<IpCidr>() {
                    Ok(c) => Some(c),
                    Err(m) => return cx.err(a.span(), format!("port[{i}].address"), m),
                },
                None => None,
            };
            let mac = match &p.mac {
                Some(m) => match m.get_ref().parse::<MacAddr>() {
                    Ok(mac) if mac.is_valid_source() => Some(mac),
                    Ok(mac) => {
                        return cx.err(m.span(), format!("port[{i}].mac"), format!("{mac} is not a unicast address"));
                    }
                    Err(e) => return cx.err(m.span(), format!("port[{i}].mac"), e.to_string()),
                },
                None => None,
            };
            let mtu = match &p.mtu {
                Some(m) if !(68..=65_521).contains(m.get_ref()) => {
                    return cx.err(m.span(), format!("port[{i}].mtu"), "must be from 68 to 65521");
                }
                Some(m) => *m.get_ref(),
                None => DEFAULT_MTU,
            };
            let services = host_services(&cx, i, p, &kind, address)?;
            let stp = port_stp(&cx, i, p, bridge.stp.is_some())?;
            ports.push(PortSpec {
                name: name.clone(),
                kind,
                address,
                mac,
                mtu,
                vlan,
                master: p.master.as_ref().map(|m| m.get_ref().clone()),
                services,
                modes: port_modes(&cx, i, p)?,
                stp,
                mrouter: p.mrouter.as_ref().is_some_and(|m| *m.get_ref()),
            });
        }

        link_bond_members(&cx, &mut ports, &raw.port)?;
        // Every interface a port occupies, where it lives. A `netdev` port on an interface
        // vswitchd creates itself (a TAP, either end of a veth) would hand every frame back to
        // the switch: a loop, refused like attaching one interface twice.
        let mut attached: HashMap<(String, Option<String>), (usize, bool)> = HashMap::new();
        for (i, (port, raw)) in ports.iter().zip(&raw.port).enumerate() {
            let occupied: Vec<(String, Option<String>)> = match &port.kind {
                PortKind::Netdev { device, netns } => vec![(device.clone(), netns.clone())],
                PortKind::Veth { peer, netns } => vec![(peer.clone(), None), (port.name.clone(), netns.clone())],
                PortKind::Tap { netns } => vec![(port.name.clone(), netns.clone())],
                PortKind::Internal => vec![(port.name.clone(), None)],
                PortKind::Bond(_) => continue,
                PortKind::Vxlan(spec) => vec![(format!("udp:{}:{}", spec.local, spec.dst_port), None)],
                PortKind::Socket(SocketSpec { path, .. }) | PortKind::VhostUser { socket: path, .. } => {
                    vec![(format!("unix:{}", path.display()), None)]
                }
            };
            let created = !matches!(
                port.kind,
                PortKind::Netdev { .. } | PortKind::Vxlan(_) | PortKind::Socket(_) | PortKind::VhostUser { .. }
            );
            for key in occupied {
                let iface = key.0.clone();
                if let Some(&(other, other_created)) = attached.get(&key) {
                    let message = if let Some(path) = iface.strip_prefix("unix:") {
                        format!("socket {path:?} is used by port {:?} too", ports[other].name)
                    } else if created && other_created {
                        format!(
                            "interface {iface:?} would be created for both port {:?} and this one",
                            ports[other].name
                        )
                    } else if created || other_created {
                        let owner = if other_created { &ports[other].name } else { &port.name };
                        format!(
                            "interface {iface:?} is one vswitchd creates for port {owner:?}; a netdev port on it \
                             would loop every frame back into the switch"
                        )
                    } else {
                        format!("interface {iface:?} is attached twice")
                    };
                    return cx.err(raw.get_ref().name.span(), format!("port[{i}]"), message);
                }
                attached.insert(key, (i, created));
            }
        }
        Ok(Topology { path: path.to_path_buf(), bridge, netns, ports })
    }

    /// The worker threads this bridge runs on this machine.
    pub fn worker_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        resolve_threads(self.bridge.threads, cores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[bridge]
name = "br0"
fdb_aging_secs = 120

[[netns]]
name = "red"
routes = [{ dst = "default", via = "192.168.15.254" }]

[[netns]]
name = "blue"

[[port]]
name = "tap-red"
type = "tap"
netns = "red"
address = "192.168.15.1/24"
mac = "02:00:00:00:0f:01"

[[port]]
name = "tap-blue"
type = "tap"
netns = "blue"
address = "192.168.15.2/24"
mtu = 9000

[[port]]
name = "br0-int"
type = "internal"
address = "192.168.15.254/24"
"#;

    /// Parses `src`; a topology it accepts must also survive being written out and read back.
    fn parse(src: &str) -> Result<Topology, ConfigError> {
        let parsed = Topology::parse(Path::new("t.toml"), src);
        if let Ok(t) = &parsed {
            let written = t.to_toml();
            assert_eq!(Topology::parse(&t.path, &written).as_ref(), Ok(t), "written as:\n{written}");
        }
        parsed
    }

    fn error(src: &str) -> String {
        parse(src).unwrap_err().to_string()
    }

    #[test]
    fn mcast_keys_are_checked() {
        let with = |keys: &str| GOOD.replace("fdb_aging_secs = 120", &format!("fdb_aging_secs = 120\n{keys}"));
        let t = parse(&with("mcast_snooping = true\nmcast_querier = true\nmcast_aging_secs = 30")).unwrap();
        assert!(t.bridge.mcast.snooping && t.bridge.mcast.querier && t.bridge.mcast.flood_unknown);
        assert_eq!(t.bridge.mcast.aging, Duration::from_secs(30));
        assert!(!parse(GOOD).unwrap().bridge.mcast.snooping);
        let spelled_out =
            parse(&with("mcast_snooping = false\nmcast_querier = false\nmcast_aging_secs = 260")).unwrap();
        assert_eq!(spelled_out.bridge, parse(GOOD).unwrap().bridge, "the defaults may be written out");
        for (keys, key) in [
            ("mcast_querier = true", "bridge.mcast_querier"),
            ("mcast_snooping = true\nmcast_aging_secs = 0", "bridge.mcast_aging_secs"),
            ("mcast_snooping = \"yes\"", "mcast_snooping"),
        ] {
            let err = parse(&with(keys)).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{keys}: {err}");
            assert!(err.line.is_some(), "{err}");
        }
        let member = "[bridge]\nname = \"b\"\n[[port]]\nname = \"b0\"\ntype = \"bond\"\nmode = \"active-backup\"\n\
                      [[port]]\nname = \"m1\"\ntype = \"tap\"\nmaster = \"b0\"\nmrouter = true\n";
        assert!(error(member).contains("`mrouter` of a member belongs on its bond"), "{}", error(member));
        let router = parse(&GOOD.replace("mtu = 9000", "mtu = 9000\nmrouter = true")).unwrap();
        assert!(router.ports.iter().any(|p| p.mrouter));
    }

    #[test]
    fn a_good_file_parses() {
        let t = parse(GOOD).unwrap();
        assert_eq!(
            t.bridge,
            BridgeSpec {
                name: "br0".into(),
                fdb_aging: Duration::from_secs(120),
                fdb_max_entries: 8192,
                threads: Threads::Auto,
                stp: None,
                mcast: McastConfig::default(),
            }
        );
        assert_eq!(t.netns[0].routes, vec![RouteSpec { dst: None, via: "192.168.15.254".parse().unwrap() }]);
        assert_eq!(t.ports.len(), 3);
        assert_eq!(t.ports[0].kind, PortKind::Tap { netns: Some("red".into()) });
        assert_eq!(t.ports[0].address.unwrap().to_string(), "192.168.15.1/24");
        assert_eq!(t.ports[0].mac.unwrap().to_string(), "02:00:00:00:0f:01");
        assert_eq!(t.ports[1].mtu, 9000);
        assert_eq!(t.ports[2].kind, PortKind::Internal);
    }

    #[test]
    fn an_unknown_key_names_file_line_and_key() {
        let src = GOOD.replace("mtu = 9000", "mtu = 9000\ncolour = \"red\"");
        let msg = error(&src);
        assert!(msg.starts_with("t.toml:26"), "{msg}");
        assert!(msg.contains("colour"), "{msg}");
    }

    #[test]
    fn a_wrong_type_names_the_key_from_its_line() {
        let err = parse(&GOOD.replace("mtu = 9000", "mtu = \"big\"")).unwrap_err();
        assert_eq!((err.line, err.key.as_deref()), (Some(25), Some("mtu")));
    }

    #[test]
    fn duplicate_port_names_are_refused() {
        let src = GOOD.replace("name = \"tap-blue\"", "name = \"tap-red\"");
        assert_eq!(error(&src), "t.toml:21: key `port[1].name`: port name \"tap-red\" is used twice");
    }

    #[test]
    fn long_names_are_refused() {
        let src = GOOD.replace("\"tap-red\"", "\"tap-red-is-too-long\"");
        let msg = error(&src);
        assert!(msg.starts_with("t.toml:14: key `port[0].name`: interface name"), "{msg}");
        assert!(msg.contains("1 to 15 bytes"), "{msg}");
    }

    #[test]
    fn bad_addresses_are_refused() {
        for (bad, needle) in
            [("192.168.15.1", "ADDRESS/PREFIX"), ("192.168.15.1/33", "prefix"), ("300.1.1.1/24", "not an IP")]
        {
            let msg = error(&GOOD.replace("192.168.15.1/24", bad));
            assert!(msg.starts_with("t.toml:17: key `port[0].address`"), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn missing_namespaces_are_refused() {
        let msg = error(&GOOD.replace("netns = \"blue\"", "netns = \"green\""));
        assert_eq!(msg, "t.toml:23: key `port[1].netns`: namespace \"green\" is not declared in a [[netns]] table");
    }

    #[test]
    fn unknown_and_unsupported_types_are_refused() {
        let msg = error(&GOOD.replace("type = \"internal\"", "type = \"hub\""));
        assert!(msg.starts_with("t.toml:29: key `port[2].type`: unknown port type \"hub\""), "{msg}");
        let msg = error("[bridge]\nname = \"b\"\n[[port]]\nname = \"b0\"\ntype = \"bond\"\nmode = \"balance-alb\"\n");
        assert!(msg.contains("key `port[0].mode`") && msg.contains("not supported"), "{msg}");
    }

    #[test]
    fn other_values_are_range_checked() {
        assert!(error(&GOOD.replace("mtu = 9000", "mtu = 70000")).contains("port[1].mtu"));
        assert!(error(&GOOD.replace("fdb_aging_secs = 120", "fdb_aging_secs = 0")).contains("bridge.fdb_aging_secs"));
        assert!(error(&GOOD.replace("02:00:00:00:0f:01", "01:00:00:00:0f:01")).contains("not a unicast"));
        assert!(error(&GOOD.replace("02:00:00:00:0f:01", "nonsense")).contains("port[0].mac"));
        assert!(error(&GOOD.replace("via = \"192.168.15.254\"", "via = \"x\"")).contains("netns[0].routes[0].via"));
        assert!(error(&GOOD.replace("name = \"blue\"", "name = \"red\"")).contains("declared twice"));
        assert!(error(&GOOD.replace("name = \"br0\"", "name = \"../etc\"")).contains("bridge.name"));
        let msg = error(
            &GOOD
                .replace("netns = \"blue\"\naddress", "address")
                .replace("type = \"internal\"", "type = \"internal\"\nnetns = \"blue\""),
        );
        assert!(msg.contains("own namespace"), "{msg}");
    }

    #[test]
    fn vlan_keys_make_port_modes() {
        let v = |n| VlanId::new(n).unwrap();
        let with = |extra: &str| parse(&GOOD.replace("mtu = 9000", &format!("mtu = 9000\n{extra}")));
        assert_eq!(with("vlan = 10").unwrap().ports[1].vlan, VlanMode::Access(v(10)));
        let t = with("trunk = [10, 20]\nnative_vlan = 1").unwrap();
        assert_eq!(
            t.ports[1].vlan,
            VlanMode::Trunk {
                allowed: Box::new([v(10), v(20)].into_iter().collect()),
                native: Some(v(1)),
                tpid: TPID_8021Q
            }
        );
        let t = with("trunk = [100]\nvlan_protocol = \"802.1ad\"").unwrap();
        assert!(matches!(t.ports[1].vlan, VlanMode::Trunk { tpid: TPID_8021AD, .. }));
        assert_eq!(
            with("vlan = 100\nvlan_mode = \"dot1q-tunnel\"").unwrap().ports[1].vlan,
            VlanMode::Dot1qTunnel(v(100))
        );
        assert_eq!(parse(GOOD).unwrap().ports[1].vlan, VlanMode::Transparent);
        for (extra, needle) in [
            ("vlan = 0", "port[1].vlan`: VLAN 0 is out of range"),
            ("vlan = 4095", "out of range"),
            ("trunk = []", "at least one VLAN"),
            ("trunk = [10, 10]", "port[1].trunk[1]`: VLAN 10 is listed twice"),
            ("trunk = [10, 5000]", "port[1].trunk[1]`: VLAN 5000"),
            ("vlan = 10\ntrunk = [20]", "either an access port"),
            ("native_vlan = 3", "needs `trunk`"),
            ("vlan = 10\nvlan_protocol = \"802.1ad\"", "applies to trunks"),
            ("trunk = [10]\nvlan_protocol = \"802.1x\"", "unknown VLAN protocol"),
            ("vlan_mode = \"dot1q-tunnel\"", "needs `vlan`"),
            ("vlan = 10\nvlan_mode = \"trunk\"", "does not match"),
            ("vlan = 10\nvlan_mode = \"hybrid\"", "unknown vlan_mode"),
            ("vlan = \"ten\"", "vlan"),
        ] {
            let msg = with(extra).unwrap_err().to_string();
            assert!(msg.contains(needle), "{extra:?}: {msg}");
            assert!(msg.starts_with("t.toml:2"), "{extra:?}: {msg}");
        }
    }

    #[test]
    fn veth_and_netdev_ports() {
        let src = GOOD.replace("type = \"tap\"\nnetns = \"blue\"", "type = \"veth\"\nnetns = \"blue\"");
        let t = parse(&src).unwrap();
        assert_eq!(t.ports[1].kind, PortKind::Veth { netns: Some("blue".into()), peer: "tap-blue-sw".into() });
        let t = parse(&src.replace("mtu = 9000", "mtu = 9000\npeer = \"vb\"")).unwrap();
        assert_eq!(t.ports[1].kind, PortKind::Veth { netns: Some("blue".into()), peer: "vb".into() });
        let long = src.replace("\"tap-blue\"", "\"tap-blue-long\"");
        assert!(error(&long).contains("set `peer`"));
        let netdev = "[bridge]\nname = \"b\"\n[[port]]\nname = \"up\"\ntype = \"netdev\"\ndevice = \"eth1\"\n";
        assert_eq!(parse(netdev).unwrap().ports[0].kind, PortKind::Netdev { device: "eth1".into(), netns: None });
        assert!(error(&netdev.replace("device = \"eth1\"\n", "")).contains("needs `device`"));
        assert!(error(&format!("{netdev}address = \"10.0.0.1/24\"\n")).contains("did not create"));
        assert!(error(&format!("{netdev}peer = \"x\"\n")).contains("only to ports of type veth"));
        assert!(
            error(&GOOD.replace("mtu = 9000", "mtu = 9000\ndevice = \"eth0\""))
                .contains("only to ports of type netdev")
        );
        let twice = format!("{netdev}[[port]]\nname = \"up2\"\ntype = \"netdev\"\ndevice = \"eth1\"\n");
        assert!(error(&twice).contains("attached twice"));
        // A netdev port on one of vswitchd's own devices loops every frame back into the switch.
        for (device, netns) in
            [("tap-red", "\nnetns = \"red\""), ("tap-blue-sw", ""), ("tap-blue", "\nnetns = \"blue\"")]
        {
            let own = format!("{GOOD}\n[[port]]\nname = \"loop\"\ntype = \"netdev\"\ndevice = \"{device}\"{netns}\n");
            let own = own.replace("name = \"tap-blue\"\ntype = \"tap\"", "name = \"tap-blue\"\ntype = \"veth\"");
            let msg = error(&own);
            assert!(msg.contains("would loop every frame"), "{device}: {msg}");
        }
        assert!(
            error(&GOOD.replace("mtu = 9000", "mtu = 9000\nmaster = \"bond0\"")).contains("no port named \"bond0\"")
        );
    }

    const BONDED: &str = r#"
[bridge]
name = "b"
[[port]]
name = "bond0"
type = "bond"
mode = "active-backup"
primary = "m2"
trunk = [2, 3]
[[port]]
name = "m1"
type = "netdev"
device = "eth1"
master = "bond0"
[[port]]
name = "m2"
type = "netdev"
device = "eth2"
master = "bond0"
"#;

    #[test]
    fn bonds_collect_their_members() {
        let t = parse(BONDED).unwrap();
        let PortKind::Bond(spec) = &t.ports[0].kind else { panic!() };
        assert_eq!(spec.mode, BondMode::ActiveBackup);
        assert_eq!(spec.members, vec!["m1", "m2"]);
        assert_eq!(spec.primary.as_deref(), Some("m2"));
        assert_eq!(spec.miimon, Duration::from_millis(100), "a bond always monitors");
        assert_eq!(t.ports[1].master.as_deref(), Some("bond0"));
        let xor = parse(&BONDED.replace(
            "mode = \"active-backup\"\nprimary = \"m2\"",
            "mode = \"balance-xor\"\nxmit_hash_policy = \"layer3+4\"",
        ))
        .unwrap();
        let PortKind::Bond(spec) = &xor.ports[0].kind else { panic!() };
        assert_eq!(spec.mode, BondMode::BalanceXor(HashPolicy::Layer34));
        let numeric = parse(&BONDED.replace("mode = \"active-backup\"", "mode = \"1\"")).unwrap();
        assert!(matches!(&numeric.ports[0].kind, PortKind::Bond(s) if s.mode == BondMode::ActiveBackup));
        let lacp = parse(&BONDED.replace(
            "mode = \"active-backup\"\nprimary = \"m2\"",
            "mode = \"802.3ad\"\nlacp = \"passive\"\nlacp_rate = \"fast\"",
        ))
        .unwrap();
        let PortKind::Bond(spec) = &lacp.ports[0].kind else { panic!() };
        assert_eq!((spec.mode, spec.lacp_active, spec.lacp_fast), (BondMode::Lacp(HashPolicy::Layer2), false, true));
    }

    #[test]
    fn bad_bonds_are_refused_by_key() {
        for (from, to, needle) in [
            ("mode = \"active-backup\"", "mode = \"fastest\"", "port[0].mode`: unknown mode"),
            ("mode = \"active-backup\"", "mode = \"balance-alb\"", "not supported"),
            ("primary = \"m2\"", "lacp_rate = \"fast\"", "applies to 802.3ad"),
            ("mode = \"active-backup\"\nprimary = \"m2\"", "mode = \"802.3ad\"\nlacp = \"sometimes\"", "unknown lacp"),
            ("mode = \"active-backup\"\n", "", "port[0].mode`: a bond needs `mode`"),
            ("primary = \"m2\"", "primary = \"m9\"", "port[0].primary`: \"m9\" is not a member"),
            ("mode = \"active-backup\"", "mode = \"balance-rr\"", "`primary` applies to active-backup"),
            (
                "master = \"bond0\"\n[[port]]\nname = \"m2\"",
                "master = \"m2\"\n[[port]]\nname = \"m2\"",
                "is not a bond",
            ),
            ("device = \"eth2\"", "device = \"eth1\"", "attached twice"),
            ("device = \"eth1\"\nmaster", "device = \"eth1\"\nvlan = 5\nmaster", "belong on its bond"),
            ("trunk = [2, 3]", "trunk = [2, 3]\nmiimon_ms = 0", "port[0].miimon_ms`: must be from 1"),
            ("trunk = [2, 3]", "trunk = [2, 3]\naddress = \"10.0.0.1/24\"", "not kernel interfaces"),
            ("device = \"eth1\"", "device = \"eth1\"\nprimary = \"x\"", "only to ports of type bond"),
        ] {
            let src = BONDED.replace(from, to);
            assert_ne!(src, BONDED, "{from:?} not in the fixture");
            let msg = error(&src);
            assert!(msg.contains(needle), "{to:?}: {msg}");
        }
        let lonely = "[bridge]\nname = \"b\"\n[[port]]\nname = \"bond0\"\ntype = \"bond\"\nmode = \"broadcast\"\n";
        assert!(error(lonely).contains("has no members"));
    }

    #[test]
    fn teams_map_onto_bonds() {
        let team = |config: &str| {
            BONDED.replace(
                "type = \"bond\"\nmode = \"active-backup\"\nprimary = \"m2\"",
                &format!("type = \"team\"\nconfig = '{config}'"),
            )
        };
        let t =
            parse(&team(r#"{"runner": {"name": "activebackup"}, "link_watch": {"name": "ethtool", "delay_up": 200}}"#))
                .unwrap();
        let PortKind::Bond(spec) = &t.ports[0].kind else { panic!() };
        assert_eq!((spec.mode, spec.updelay), (BondMode::ActiveBackup, Duration::from_millis(200)));
        let t = parse(&team(r#"{"runner": {"name": "loadbalance", "tx_hash": ["eth", "ipv4", "l4"]}}"#)).unwrap();
        assert!(matches!(&t.ports[0].kind, PortKind::Bond(s) if s.mode == BondMode::BalanceXor(HashPolicy::Layer34)));
        assert!(error(&team(r#"{"runner": {"name": "random"}}"#)).contains("runner \"random\" is not supported"));
        assert!(
            error(&team(r#"{"runner": {"name": "activebackup"}, "link_watch": {"name": "arp_ping"}}"#))
                .contains("link_watch")
        );
        assert!(error(&team("not json")).contains("not a teamd configuration"));
    }

    const VX: &str = r#"
[bridge]
name = "b"
[[port]]
name = "vx0"
type = "vxlan"
vni = 42
local = "192.0.2.1"
remotes = ["192.0.2.2", "192.0.2.3"]
"#;

    #[test]
    fn vxlan_ports() {
        let t = parse(VX).unwrap();
        let PortKind::Vxlan(spec) = &t.ports[0].kind else { panic!() };
        assert_eq!(spec.vnis, VniMap::Single(42));
        assert_eq!((spec.dst_port, spec.ttl, spec.learning), (4789, 64, true));
        assert_eq!(spec.remotes.len(), 2);
        let multi =
            parse(&VX.replace("vni = 42", "vnis = [{ vni = 100, vlan = 10 }, { vni = 200, vlan = 20 }]")).unwrap();
        let PortKind::Vxlan(spec) = &multi.ports[0].kind else { panic!() };
        assert_eq!(spec.vnis, VniMap::PerVlan(vec![(100, VlanId::new(10).unwrap()), (200, VlanId::new(20).unwrap())]));
        assert!(matches!(multi.ports[0].vlan, VlanMode::Trunk { .. }), "the VNI map makes the port a trunk");
        for (from, to, needle) in [
            (
                "vni = 42",
                "vni = 42\ntrunk = [10, 20]",
                "port[0].trunk`: a VXLAN port with one VNI (42) cannot be a trunk",
            ),
            ("vni = 42", "vni = 16777216", "port[0].vni`: VNI 16777216 is out of range"),
            ("vni = 42\n", "", "needs `vni`"),
            ("vni = 42", "vni = 42\nvnis = [{ vni = 1, vlan = 2 }]", "either `vni` or `vnis`"),
            ("vni = 42", "vnis = [{ vni = 1, vlan = 2 }, { vni = 1, vlan = 3 }]", "port[0].vnis[1]`: each VNI"),
            ("local = \"192.0.2.1\"\n", "", "needs `local`"),
            ("\"192.0.2.3\"]", "\"2001:db8::1\"]", "port[0].remotes[1]`: remotes must be of the same IP version"),
            ("\"192.0.2.3\"]", "\"192.0.2.1\"]", "is listed twice or is the local address"),
            ("remotes = [\"192.0.2.2\", \"192.0.2.3\"]", "remotes = []", "needs `remotes`"),
            ("vni = 42", "vni = 42\ndst_port = 70000", "port[0].dst_port`"),
            ("vni = 42", "vni = 42\nttl = 0", "port[0].ttl`"),
            ("vni = 42", "vni = 42\nlearning = false\nallowed_remotes = [\"192.0.2.0/24\"]", "needs `learning = true`"),
            ("vni = 42", "vni = 42\naddress = \"10.0.0.1/24\"", "not kernel interfaces"),
            ("vni = 42", "vnis = [{ vni = 1, vlan = 2 }]\nvlan = 5", "come from the VNI map"),
        ] {
            let src = VX.replace(from, to);
            assert_ne!(src, VX, "{from:?} not in the fixture");
            let msg = error(&src);
            assert!(msg.contains(needle), "{to:?}: {msg}");
        }
        assert!(error(&GOOD.replace("mtu = 9000", "mtu = 9000\nvni = 5")).contains("only to ports of type vxlan"));
    }

    #[test]
    fn evpn_control_on_vxlan_ports() {
        let no_remotes = VX.replace("remotes = [\"192.0.2.2\", \"192.0.2.3\"]", "control = \"evpn\"");
        // `parse` also checks that the file written back reads the same.
        let t = parse(&no_remotes).unwrap();
        let PortKind::Vxlan(spec) = &t.ports[0].kind else { panic!() };
        assert!(spec.evpn && spec.remotes.is_empty());
        assert!(t.to_toml().contains("control = \"evpn\""), "{}", t.to_toml());
        let PortKind::Vxlan(spec) = &parse(VX).unwrap().ports[0].kind else { panic!() };
        assert!(!spec.evpn, "off by default");
        let beside = parse(&VX.replace("vni = 42", "vni = 42\ncontrol = \"evpn\"")).unwrap();
        let PortKind::Vxlan(spec) = &beside.ports[0].kind else { panic!() };
        assert!(spec.evpn && spec.remotes.len() == 2, "static remotes beside EVPN");
        let msg = error(&no_remotes.replace("\"evpn\"", "\"bgp\""));
        assert!(msg.contains("t.toml:") && msg.contains("port[0].control") && msg.contains("unknown control"), "{msg}");
        let msg = error(&no_remotes.replace("vni = 42", "vni = 42\ndst_port = 4790"));
        assert!(msg.contains("port[0].dst_port") && msg.contains("4790"), "{msg}");
        assert!(
            error(&GOOD.replace("mtu = 9000", "mtu = 9000\ncontrol = \"evpn\""))
                .contains("only to ports of type vxlan")
        );
    }

    #[test]
    fn arp_suppress_on_vxlan_ports() {
        let PortKind::Vxlan(spec) = &parse(VX).unwrap().ports[0].kind else { panic!() };
        assert!(!spec.arp_suppress, "off by default");
        // `parse` also checks that the file written back reads the same.
        let t = parse(&VX.replace("vni = 42", "vni = 42\narp_suppress = true")).unwrap();
        let PortKind::Vxlan(spec) = &t.ports[0].kind else { panic!() };
        assert!(spec.arp_suppress);
        assert!(t.to_toml().contains("arp_suppress = true"), "{}", t.to_toml());
        let msg = error(&VX.replace("vni = 42", "vni = 42\narp_suppress = \"yes\""));
        assert!(msg.contains("t.toml:") && msg.contains("arp_suppress"), "{msg}");
        let msg = error(&GOOD.replace("mtu = 9000", "mtu = 9000\narp_suppress = true"));
        assert!(msg.contains("arp_suppress") && msg.contains("only to ports of type vxlan"), "{msg}");
    }

    const VMS: &str = r#"
[bridge]
name = "b"
[[port]]
name = "vm1"
type = "vhost-user"
socket = "/run/vswitchd/vm1.sock"
[[port]]
name = "vm2"
type = "socket"
path = "/run/vswitchd/vm2.sock"
framing = "stream"
[[port]]
name = "vm3"
type = "socket"
path = "/run/vswitchd/vm3.sock"
framing = "dgram"
"#;

    #[test]
    fn socket_and_vhost_user_ports() {
        let t = parse(VMS).unwrap();
        assert_eq!(t.ports[0].kind, PortKind::VhostUser { socket: "/run/vswitchd/vm1.sock".into(), server: true });
        let server = SocketSpec { path: "/run/vswitchd/vm2.sock".into(), framing: SocketFraming::Stream, server: true };
        assert_eq!(t.ports[1].kind, PortKind::Socket(server));
        assert!(matches!(&t.ports[2].kind, PortKind::Socket(s) if s.framing == SocketFraming::Dgram && s.server));
        let client = parse(&VMS.replace("framing = \"stream\"", "server = false")).unwrap();
        assert!(
            matches!(&client.ports[1].kind, PortKind::Socket(s) if s.framing == SocketFraming::Stream && !s.server)
        );
        let long = format!("/run/{}", "x".repeat(SOCKET_PATH_MAX));
        for (from, to, needle) in [
            ("path = \"/run/vswitchd/vm2.sock\"\n", "", "port[1].path`: a socket port needs `path`"),
            ("\"/run/vswitchd/vm2.sock\"", "\"vm2.sock\"", "port[1].path`: \"vm2.sock\" is not an absolute path"),
            ("\"/run/vswitchd/vm2.sock\"", "\"/run/vswitchd/\"", "is not an absolute path to a socket"),
            ("\"/run/vswitchd/vm2.sock\"", &format!("\"{long}\""), "at most 107 bytes"),
            ("\"/run/vswitchd/vm2.sock\"", "\"/run/a\\u0000b\"", "without NUL"),
            ("framing = \"stream\"", "framing = \"raw\"", "port[1].framing`: unknown framing \"raw\""),
            (
                "framing = \"dgram\"",
                "framing = \"dgram\"\nserver = false",
                "port[2].server`: `server` applies to stream",
            ),
            ("framing = \"dgram\"", "framing = \"dgram\"\naddress = \"10.0.0.1/24\"", "not kernel interfaces"),
            ("framing = \"dgram\"", "framing = \"dgram\"\nmaster = \"vm1\"", "not kernel interfaces"),
            ("framing = \"dgram\"", "framing = \"dgram\"\nsocket = \"/x\"", "applies only to ports of type vhost-user"),
            ("socket = \"/run/vswitchd/vm1.sock\"\n", "", "port[0].socket`: a vhost-user port needs `socket`"),
            (
                "socket = \"/run/vswitchd/vm1.sock\"",
                "socket = \"/run/vswitchd/vm1.sock\"\npath = \"/x\"",
                "applies only to ports of type socket",
            ),
            (
                "\"/run/vswitchd/vm3.sock\"",
                "\"/run/vswitchd/vm2.sock\"",
                "port[2]`: socket \"/run/vswitchd/vm2.sock\" is used by port \"vm2\" too",
            ),
            (
                "\"/run/vswitchd/vm1.sock\"",
                "\"/run/vswitchd/vm3.sock\"",
                "socket \"/run/vswitchd/vm3.sock\" is used by port \"vm1\" too",
            ),
        ] {
            let src = VMS.replace(from, to);
            assert_ne!(src, VMS, "{from:?} not in the fixture");
            let msg = error(&src);
            assert!(msg.contains(needle), "{to:?}: {msg}");
        }
        assert!(error(&GOOD.replace("mtu = 9000", "mtu = 9000\nserver = true")).contains("socket or vhost-user"));
    }

    #[test]
    fn thread_counts_are_auto_or_1_to_64() {
        let with =
            |threads: &str, file: &str| file.replacen("name = \"b\"", &format!("name = \"b\"\nthreads = {threads}"), 1);
        assert_eq!(parse(&with("3", VX)).unwrap().bridge.threads, Threads::Count(3));
        assert_eq!(parse(&with("2", BONDED)).unwrap().bridge.threads, Threads::Count(2));
        let err = parse(&with("0", BONDED)).unwrap_err();
        assert_eq!((err.line, err.key.as_deref()), (Some(4), Some("bridge.threads")));
        assert_eq!(parse(&with("\"auto\"", BONDED)).unwrap().bridge.threads, Threads::Auto);
        assert_eq!(parse(BONDED).unwrap().bridge.threads, Threads::Auto);
        for bad in ["0", "65", "-1", "\"many\"", "1.5"] {
            let err = parse(&with(bad, BONDED)).unwrap_err();
            assert_eq!(err.key.as_deref(), Some("bridge.threads"), "{bad}: {err}");
        }
        let mut t = parse(BONDED).unwrap();
        t.bridge.threads = Threads::Count(5);
        assert_eq!(t.worker_threads(), 5);
    }

    #[test]
    fn auto_threads_leave_a_core_to_the_traffic() {
        assert_eq!(resolve_threads(Threads::Auto, 1), 1);
        assert_eq!(resolve_threads(Threads::Auto, 2), 1);
        assert_eq!(resolve_threads(Threads::Auto, 4), 2);
        assert_eq!(resolve_threads(Threads::Auto, 64), 4);
        assert_eq!(resolve_threads(Threads::Count(3), 2), 3);
    }

    #[test]
    fn port_modes_are_read_and_range_checked() {
        let base = "[bridge]\nname = \"br0\"\n[[port]]\nname = \"p0\"\ntype = \"tap\"\n";
        let t = parse(&format!(
            "{base}isolated = true\nhairpin = true\nmac_limit = 1\nallowed_macs = [\"02:00:00:00:00:01\", \
             \"02:00:00:00:00:02\"]\nstorm_pps = {{ broadcast = 100, unknown_unicast = 5 }}\n"
        ))
        .unwrap();
        let m = &t.ports[0].modes;
        assert!(m.isolated && m.hairpin);
        assert_eq!(m.mac_limit, Some(1));
        assert_eq!(m.allowed_macs.len(), 2);
        assert_eq!(m.storm_pps, StormPps { broadcast: Some(100), multicast: None, unknown_unicast: Some(5) });
        assert!(parse(base).unwrap().ports[0].modes.is_plain());
        for (bad, key, needle) in [
            ("isolated = 1", "isolated", "invalid type"),
            ("mac_limit = 0", "port[0].mac_limit", "from 1 to"),
            ("mac_limit = 70000", "port[0].mac_limit", "from 1 to"),
            ("allowed_macs = []", "port[0].allowed_macs", "1 to 256"),
            ("allowed_macs = [\"01:00:5e:00:00:01\"]", "port[0].allowed_macs[0]", "not a unicast"),
            ("allowed_macs = [\"nope\"]", "port[0].allowed_macs[0]", ""),
            ("allowed_macs = [\"02:00:00:00:00:01\", \"02:00:00:00:00:01\"]", "port[0].allowed_macs[1]", "twice"),
            ("storm_pps = { broadcast = 0 }", "port[0].storm_pps.broadcast", "from 1 to"),
            ("storm_pps = {}", "port[0].storm_pps", "limits no class"),
            ("storm_pps = { unicast = 5 }", "storm_pps", "unknown field"),
        ] {
            let err = parse(&format!("{base}{bad}\n")).unwrap_err();
            assert_eq!((err.line, err.key.as_deref()), (Some(6), Some(key)), "{bad}: {err}");
            assert!(err.message.contains(needle), "{bad}: {err}");
        }
        // A bond member takes no modes: its bond does.
        let err = parse(
            "[bridge]\nname = \"b\"\n[[port]]\nname = \"m0\"\ntype = \"tap\"\nmaster = \"bond0\"\nhairpin = true\n\
             [[port]]\nname = \"bond0\"\ntype = \"bond\"\nmode = \"active-backup\"\nisolated = true\n",
        )
        .unwrap_err();
        assert_eq!((err.line, err.key.as_deref()), (Some(7), Some("port[0].hairpin")), "{err}");
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let err = parse("[bridge]\nname = \"br0\"\n[[port]\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        let err = parse("[[port]]\nname = \"a\"\ntype = \"tap\"\n").unwrap_err();
        assert!(err.message.contains("bridge"), "{err}");
    }

    #[test]
    fn spanning_tree_keys_are_read_and_checked() {
        let file = |bridge: &str, port: &str| {
            format!("[bridge]\nname = \"b\"\n{bridge}\n[[port]]\nname = \"p\"\ntype = \"tap\"\n{port}\n")
        };
        let t = Topology::parse(
            Path::new("t.toml"),
            &file(
                "stp = \"rstp\"\nstp_priority = 4096\nhello_secs = 1\nforward_delay_secs = 4\nmax_age_secs = 6",
                "stp_cost = 100\nstp_priority = 16\nedge = true\nbpdu_guard = true",
            ),
        )
        .unwrap();
        assert_eq!(
            t.bridge.stp,
            Some(StpSpec {
                mode: StpMode::Rstp,
                priority: 4096,
                hello_secs: 1,
                forward_delay_secs: 4,
                max_age_secs: 6
            })
        );
        assert_eq!(t.ports[0].stp, PortStpSpec { cost: 100, priority: 16, edge: true, bpdu_guard: true });
        let off = Topology::parse(Path::new("t.toml"), &file("stp = \"off\"", "")).unwrap();
        assert_eq!(off.bridge.stp, None);
        assert_eq!(off.ports[0].stp, PortStpSpec::default());
        let legacy = Topology::parse(Path::new("t.toml"), &file("stp = \"stp\"", "")).unwrap();
        assert_eq!(legacy.bridge.stp, Some(StpSpec::new(StpMode::Stp)));
        let member = "[bridge]\nname = \"b\"\nstp = \"rstp\"\n[[port]]\nname = \"bond0\"\ntype = \"bond\"\n\
                      mode = \"active-backup\"\n[[port]]\nname = \"m1\"\ntype = \"veth\"\nmaster = \"bond0\"\nedge = true\n";
        let err = Topology::parse(Path::new("t.toml"), member).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("port[1].edge"), "{err}");
        assert!(err.message.contains("bond member"), "{err}");
        for (bridge, port, key, line) in [
            ("stp = \"mstp\"", "", "bridge.stp", 3),
            ("stp = \"rstp\"\nstp_priority = 100", "", "bridge.stp_priority", 4),
            ("stp = \"rstp\"\nhello_secs = 0", "", "bridge.hello_secs", 4),
            ("stp = \"rstp\"\nforward_delay_secs = 31", "", "bridge.forward_delay_secs", 4),
            ("stp = \"rstp\"\nmax_age_secs = 6\nhello_secs = 3", "", "bridge.max_age_secs", 4),
            ("hello_secs = 2", "", "bridge.hello_secs", 3),
            ("", "edge = true", "port[0].edge", 7),
            ("stp = \"rstp\"", "stp_cost = 0", "port[0].stp_cost", 7),
            ("stp = \"rstp\"", "stp_priority = 8", "port[0].stp_priority", 7),
        ] {
            let err = Topology::parse(Path::new("t.toml"), &file(bridge, port)).unwrap_err();
            assert_eq!(err.key.as_deref(), Some(key), "{err}");
            assert_eq!(err.line, Some(line), "{err}");
        }
    }
}
