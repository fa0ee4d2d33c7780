//! The topology file: TOML in, a validated [`Topology`] out, or a [`ConfigError`] that names
//! the file, the line and the key. Validation covers the whole file before anything is created.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use vswitchd_dataplane::VlanId;
use vswitchd_dataplane::vlan::{TPID_8021AD, TPID_8021Q, VlanMode, VlanSet};
use vswitchd_dataplane::wire::MacAddr;

/// Longest interface name the kernel accepts.
pub const IFNAME_MAX: usize = 15;

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
}

/// A namespace to create if absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsSpec {
    /// Its name under /run/netns.
    pub name: String,
    /// Routes to add once the ports' addresses are in place.
    pub routes: Vec<RouteSpec>,
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
}

impl PortKind {
    /// The type name used in the file.
    pub fn type_name(&self) -> &'static str {
        match self {
            PortKind::Tap { .. } => "tap",
            PortKind::Internal => "internal",
            PortKind::Veth { .. } => "veth",
            PortKind::Netdev { .. } => "netdev",
        }
    }

    /// The namespace the host side (the end that is not vswitchd's) lives in.
    pub fn netns(&self) -> Option<&str> {
        match self {
            PortKind::Tap { netns } | PortKind::Veth { netns, .. } | PortKind::Netdev { netns, .. } => netns.as_deref(),
            PortKind::Internal => None,
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
    /// MTU (default 1500).
    pub mtu: u32,
    /// VLAN mode.
    pub vlan: VlanMode,
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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetns {
    name: Spanned<String>,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
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
    master: Option<Spanned<toml::Value>>,
    peer: Option<Spanned<String>>,
    device: Option<Spanned<String>>,
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
            None => Duration::from_secs(300),
        };
        let fdb_max_entries = match &b.fdb_max_entries {
            Some(v) if !(1..=16_777_216).contains(v.get_ref()) => {
                return cx.err(v.span(), "bridge.fdb_max_entries", "must be from 1 to 16777216");
            }
            Some(v) => *v.get_ref() as usize,
            None => 8192,
        };
        let bridge = BridgeSpec { name: b.name.get_ref().clone(), fdb_aging, fdb_max_entries };

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
            netns.push(NetnsSpec { name: name.clone(), routes });
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
            if let Some(master) = &p.master {
                return cx.err(
                    master.span(),
                    format!("port[{i}].master"),
                    "bonds are not supported by this version of vswitchd yet",
                );
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
                "vxlan" | "bond" | "team" => {
                    return cx.err(
                        p.kind.span(),
                        format!("port[{i}].type"),
                        format!("port type {kind_name:?} is not supported by this version of vswitchd yet"),
                    );
                }
                other => {
                    return cx.err(
                        p.kind.span(),
                        format!("port[{i}].type"),
                        format!("unknown port type {other:?} (expected tap, veth, netdev, internal, vxlan or bond)"),
                    );
                }
            };
            let vlan = port_vlan_mode(&cx, i, p)?;
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
                None => 1500,
            };
            ports.push(PortSpec { name: name.clone(), kind, address, mac, mtu, vlan });
        }

        let mut attached = HashSet::new();
        for (i, (port, raw)) in ports.iter().zip(&raw.port).enumerate() {
            let (iface, ns) = match &port.kind {
                PortKind::Netdev { device, netns } => (device.clone(), netns.clone()),
                PortKind::Veth { peer, .. } => (peer.clone(), None),
                PortKind::Tap { .. } | PortKind::Internal => (port.name.clone(), None),
            };
            if !attached.insert((iface.clone(), ns)) {
                return cx.err(
                    raw.get_ref().name.span(),
                    format!("port[{i}]"),
                    format!("interface {iface:?} is attached twice"),
                );
            }
        }
        Ok(Topology { path: path.to_path_buf(), bridge, netns, ports })
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

    fn parse(src: &str) -> Result<Topology, ConfigError> {
        Topology::parse(Path::new("t.toml"), src)
    }

    fn error(src: &str) -> String {
        parse(src).unwrap_err().to_string()
    }

    #[test]
    fn a_good_file_parses() {
        let t = parse(GOOD).unwrap();
        assert_eq!(
            t.bridge,
            BridgeSpec { name: "br0".into(), fdb_aging: Duration::from_secs(120), fdb_max_entries: 8192 }
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
        let msg = error(&GOOD.replace("type = \"internal\"", "type = \"vxlan\""));
        assert!(msg.contains("key `port[2].type`") && msg.contains("not supported"), "{msg}");
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
        assert!(
            error(&GOOD.replace("mtu = 9000", "mtu = 9000\nmaster = \"bond0\"")).contains("bonds are not supported")
        );
    }

    #[test]
    fn syntax_errors_carry_a_line() {
        let err = parse("[bridge]\nname = \"br0\"\n[[port]\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        let err = parse("[[port]]\nname = \"a\"\ntype = \"tap\"\n").unwrap_err();
        assert!(err.message.contains("bridge"), "{err}");
    }
}
