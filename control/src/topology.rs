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
}

impl PortKind {
    /// The type name used in the file.
    pub fn type_name(&self) -> &'static str {
        match self {
            PortKind::Tap { .. } => "tap",
            PortKind::Internal => "internal",
        }
    }

    /// The namespace the kernel side ends up in.
    pub fn netns(&self) -> Option<&str> {
        match self {
            PortKind::Tap { netns } => netns.as_deref(),
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
    vlan: Option<Spanned<toml::Value>>,
    trunk: Option<Spanned<toml::Value>>,
    native_vlan: Option<Spanned<toml::Value>>,
    master: Option<Spanned<toml::Value>>,
    peer: Option<Spanned<toml::Value>>,
    device: Option<Spanned<toml::Value>>,
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
            let unsupported = [
                ("vlan", p.vlan.as_ref().map(|v| v.span())),
                ("trunk", p.trunk.as_ref().map(|v| v.span())),
                ("native_vlan", p.native_vlan.as_ref().map(|v| v.span())),
                ("master", p.master.as_ref().map(|v| v.span())),
                ("peer", p.peer.as_ref().map(|v| v.span())),
                ("device", p.device.as_ref().map(|v| v.span())),
            ];
            if let Some((key, Some(span))) = unsupported.into_iter().find(|(_, s)| s.is_some()) {
                return cx.err(
                    span,
                    format!("port[{i}].{key}"),
                    format!("`{key}` is not supported by this version of vswitchd yet"),
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
            let kind = match p.kind.get_ref().as_str() {
                "tap" => PortKind::Tap { netns: netns_ref.map(|n| n.get_ref().clone()) },
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
                "veth" | "netdev" | "vxlan" | "bond" | "team" => {
                    return cx.err(
                        p.kind.span(),
                        format!("port[{i}].type"),
                        format!("port type {:?} is not supported by this version of vswitchd yet", p.kind.get_ref()),
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
            ports.push(PortSpec { name: name.clone(), kind, address, mac, mtu });
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
        let msg = error(&GOOD.replace("mtu = 9000", "mtu = 9000\nvlan = 10"));
        assert!(msg.contains("key `port[1].vlan`") && msg.contains("not supported"), "{msg}");
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
    fn syntax_errors_carry_a_line() {
        let err = parse("[bridge]\nname = \"br0\"\n[[port]\n").unwrap_err();
        assert_eq!(err.line, Some(3));
        let err = parse("[[port]]\nname = \"a\"\ntype = \"tap\"\n").unwrap_err();
        assert!(err.message.contains("bridge"), "{err}");
    }
}
