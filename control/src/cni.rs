//! The CNI protocol of `vswitchd-cni` (CNI spec 1.0.0, with STATUS and GC of 1.1.0) as plain
//! data: the network configuration and the environment turned into a typed [`Request`], the
//! result, the spec's error codes, and the names, MACs and container settings an attachment
//! gets. No I/O here; the binary (`src/bin/vswitchd-cni.rs`) carries requests out.
//!
//! An attachment `(network, CNI_CONTAINERID, CNI_IFNAME)` becomes a `netdev` port of the
//! running bridge on the host end of a veth pair; port and host interface share one name,
//! [`port_name`]: `v`, 4 hex digits of the network's name, 10 of the attachment. The network
//! part lets GC tell this network's ports from another's on the same bridge.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vswitchd_dataplane::wire::MacAddr;

use crate::topology::{IpCidr, RouteSpec};

/// The spec versions this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0", "1.1.0"];

/// The version in errors when the request's own is unknown, and of a VERSION reply to a
/// request that names none.
pub const LATEST_VERSION: &str = "1.1.0";

/// Error code: incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Error code: unsupported field in the network configuration (the message names key and value).
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Error code: the container is unknown or does not exist.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// Error code: invalid necessary environment variables (the message names them).
pub const INVALID_ENVIRONMENT: u32 = 4;
/// Error code: I/O failure.
pub const IO_FAILURE: u32 = 5;
/// Error code: failed to decode content.
pub const DECODE_FAILURE: u32 = 6;
/// Error code: invalid network configuration.
pub const INVALID_CONFIG: u32 = 7;
/// Error code: a transient condition; try again later.
pub const TRY_AGAIN_LATER: u32 = 11;
/// Error code (STATUS): the plugin cannot service ADD requests.
pub const NOT_AVAILABLE: u32 = 50;
/// Plugin-specific error code: a step of the operation failed (creating the veth pair, adding
/// the port, configuring the container), or CHECK found the attachment broken.
pub const OPERATION_FAILED: u32 = 100;

/// The spec's error result, printed on stdout with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniError {
    /// The protocol version in use.
    #[serde(default)]
    pub cni_version: String,
    /// A well-known code (below 100) or [`OPERATION_FAILED`].
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// The longer story.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code`, in [`LATEST_VERSION`] until [`CniError::in_version`] says otherwise.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError { cni_version: LATEST_VERSION.into(), code, msg: msg.into(), details: details.into() }
    }

    /// The same error, reported in `version` (the request's).
    pub fn in_version(mut self, version: &str) -> CniError {
        if SUPPORTED_VERSIONS.contains(&version) {
            self.cni_version = version.into();
        }
        self
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

/// The `ipam` section: only `type` is ours; the rest is the IPAM plugin's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IpamConfig {
    /// The IPAM plugin's executable name, looked up on `CNI_PATH`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// One attachment still valid, as GC lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// `CNI_CONTAINERID` of its ADD.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME` of its ADD.
    pub ifname: String,
}

/// The network configuration on stdin. Keys not listed here (`args`, `runtimeConfig`,
/// other plugins' keys) are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// The protocol version the runtime chose.
    pub cni_version: String,
    /// The network's name.
    pub name: String,
    /// The plugin's executable name.
    #[serde(rename = "type")]
    pub kind: String,
    /// The vswitchd bridge (its `[bridge] name`).
    pub bridge: String,
    /// Its control socket; default `/run/vswitchd/<bridge>.ctl`.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// The access VLAN of the container's port; none: a transparent port.
    #[serde(default)]
    pub vlan: Option<u16>,
    /// The subnet's gateway is the bridge's: an `internal` port of the topology in this VLAN.
    #[serde(default)]
    pub is_gateway: bool,
    /// NAT for the network: refused (not built yet).
    #[serde(default)]
    pub ip_masq: bool,
    /// MTU of both veth ends and of the port.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The IPAM plugin; none: the interface gets no address (a layer-2 attachment).
    #[serde(default)]
    pub ipam: Option<IpamConfig>,
    /// DNS settings, reported when IPAM gives none.
    #[serde(default)]
    pub dns: Option<Dns>,
    /// The result of the ADD (CHECK, DEL).
    #[serde(default)]
    pub prev_result: Option<CniResult>,
    /// GC: the attachments to keep.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// An interface in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its MAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Its MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The container's namespace (`CNI_NETNS`); none for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfig {
    /// `ADDRESS/PREFIX`.
    pub address: String,
    /// The subnet's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` (absent in IPAM results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Destination, `ADDRESS/PREFIX`.
    pub dst: String,
    /// Next hop; none: the gateway of the address of the same IP version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    /// Name servers, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// Whether it says nothing.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_none() && self.search.is_empty() && self.options.is_empty()
    }
}

/// A success result (ADD), or an IPAM plugin's abbreviated one (no `interfaces`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The protocol version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cni_version: String,
    /// Interfaces created: the host end, then the container's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings.
    #[serde(default)]
    pub dns: Dns,
}

/// The VERSION reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// The version of the request.
    pub cni_version: String,
    /// Every version spoken.
    pub supported_versions: Vec<String>,
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach a container.
    Add,
    /// Detach it; idempotent.
    Del,
    /// Verify an attachment.
    Check,
    /// Whether ADD could be served.
    Status,
    /// Remove what attachments no longer valid left.
    Gc,
    /// The versions spoken.
    Version,
}

impl Command {
    /// The command `CNI_COMMAND` names.
    pub fn parse(text: &str) -> Option<Command> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }
}

/// The container side of an attachment (ADD, DEL, CHECK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`; DEL may come without.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// The bridge port and host-side veth: [`port_name`].
    pub port: String,
}

/// What the runtime asks, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// VERSION, with the version asked in.
    Version {
        /// The request's `cniVersion`.
        cni_version: String,
    },
    /// Every other command.
    Network {
        /// ADD, DEL, CHECK, STATUS or GC.
        command: Command,
        /// The attachment (ADD, DEL, CHECK); none for STATUS and GC.
        target: Option<Target>,
        /// `CNI_PATH`, split.
        cni_path: Vec<PathBuf>,
        /// The configuration.
        config: Box<NetConf>,
    },
}

/// Reads a request from the environment (`env(NAME)`) and the configuration on stdin.
pub fn parse_request(env: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Result<Request, CniError> {
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    let command_text = env("CNI_COMMAND").ok_or_else(|| {
        CniError::new(INVALID_ENVIRONMENT, "CNI_COMMAND is not set", "expected ADD, DEL, CHECK, STATUS, GC or VERSION")
    })?;
    let command = Command::parse(&command_text).ok_or_else(|| {
        CniError::new(
            INVALID_ENVIRONMENT,
            format!("CNI_COMMAND {command_text:?} is unknown"),
            "expected ADD, DEL, CHECK, STATUS, GC or VERSION",
        )
    })?;
    if command == Command::Version {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Asked {
            #[serde(default)]
            cni_version: Option<String>,
        }
        let asked: Asked = if stdin.iter().all(u8::is_ascii_whitespace) {
            Asked { cni_version: None }
        } else {
            serde_json::from_slice(stdin)
                .map_err(|e| CniError::new(DECODE_FAILURE, "cannot decode the VERSION request", e.to_string()))?
        };
        return Ok(Request::Version { cni_version: asked.cni_version.unwrap_or_else(|| LATEST_VERSION.into()) });
    }
    let config = parse_config(stdin)?;
    let in_version = |e: CniError| e.in_version(&config.cni_version);
    let target = match command {
        Command::Add | Command::Del | Command::Check => {
            let container_id = env("CNI_CONTAINERID").ok_or_else(|| in_version(missing("CNI_CONTAINERID")))?;
            if !valid_container_id(&container_id) {
                return Err(in_version(CniError::new(
                    INVALID_ENVIRONMENT,
                    format!("CNI_CONTAINERID {container_id:?} is invalid"),
                    "a container ID starts with a letter or digit, followed by letters, digits, '_', '.' or '-'",
                )));
            }
            let ifname = env("CNI_IFNAME").ok_or_else(|| in_version(missing("CNI_IFNAME")))?;
            if let Err(why) = valid_interface_name(&ifname) {
                return Err(in_version(CniError::new(
                    INVALID_ENVIRONMENT,
                    format!("CNI_IFNAME {ifname:?} is invalid"),
                    why,
                )));
            }
            let netns = env("CNI_NETNS").map(PathBuf::from);
            if netns.is_none() && command != Command::Del {
                return Err(in_version(missing("CNI_NETNS")));
            }
            let port = port_name(&config.name, &container_id, &ifname);
            Some(Target { container_id, netns, ifname, port })
        }
        _ => None,
    };
    let cni_path = env("CNI_PATH").map(|p| p.split(':').filter(|d| !d.is_empty()).map(PathBuf::from).collect());
    Ok(Request::Network { command, target, cni_path: cni_path.unwrap_or_default(), config: Box::new(config) })
}

fn missing(name: &str) -> CniError {
    CniError::new(INVALID_ENVIRONMENT, format!("{name} is not set"), format!("{name} is required for this command"))
}

/// Decodes and checks the network configuration.
pub fn parse_config(stdin: &[u8]) -> Result<NetConf, CniError> {
    let version: serde_json::Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(DECODE_FAILURE, "cannot decode the network configuration", e.to_string()))?;
    let cni_version = version.get("cniVersion").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("CNI version {cni_version:?} is not supported"),
            format!("vswitchd-cni supports {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    let config: NetConf = serde_json::from_value(version).map_err(|e| {
        CniError::new(DECODE_FAILURE, "cannot decode the network configuration", e.to_string()).in_version(&cni_version)
    })?;
    check_config(&config).map_err(|e| e.in_version(&cni_version))?;
    Ok(config)
}

fn check_config(config: &NetConf) -> Result<(), CniError> {
    let invalid = |msg: String, details: &str| Err(CniError::new(INVALID_CONFIG, msg, details));
    if config.ip_masq {
        return Err(CniError::new(
            UNSUPPORTED_FIELD,
            "unsupported field ipMasq: true",
            "vswitchd-cni does no NAT yet: leave ipMasq out (or false) and masquerade on the host",
        ));
    }
    if !valid_network_name(&config.name) {
        return invalid(
            format!("network name {:?} is invalid", config.name),
            "it starts with a letter or digit, followed by letters, digits, '_', '.' or '-'",
        );
    }
    if let Err(why) = valid_interface_name(&config.bridge) {
        return invalid(format!("bridge {:?} is invalid", config.bridge), &why);
    }
    if let Some(vlan) = config.vlan {
        if !(1..=4094).contains(&vlan) {
            return invalid(format!("vlan {vlan} is out of range"), "a VLAN is from 1 to 4094");
        }
    }
    if let Some(mtu) = config.mtu {
        if !(68..=65521).contains(&mtu) {
            return invalid(format!("mtu {mtu} is out of range"), "an MTU is from 68 to 65521");
        }
    }
    if let Some(ipam) = &config.ipam {
        if ipam.kind.is_empty() || ipam.kind.contains('/') || ipam.kind == "." || ipam.kind == ".." {
            return invalid(format!("ipam type {:?} is invalid", ipam.kind), "it names an executable on CNI_PATH");
        }
    }
    Ok(())
}

/// The spec's container ID: a letter or digit, then letters, digits, `_`, `.`, `-`.
pub fn valid_container_id(id: &str) -> bool {
    id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_network_name(name: &str) -> bool {
    valid_container_id(name)
}

/// The kernel's interface name rules: 1–15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
pub fn valid_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err("an interface name is 1 to 15 bytes".into());
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err("an interface name is not . or .. and has no '/', ':' or whitespace".into());
    }
    Ok(())
}

/// 64-bit FNV-1a: stable across builds and machines, so names derived from it are too.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A zero byte between parts, so ("ab", "c") and ("a", "bc") differ.
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        for b in part.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The first 4 bytes of every port name of network `network`: `v` and 4 hex digits.
pub fn port_prefix(network: &str) -> String {
    format!("v{:04x}", fnv1a(&[network]) >> 48)
}

/// The bridge port (and host-side veth) of attachment `(network, container_id, ifname)`:
/// [`port_prefix`] and 10 hex digits, 15 bytes.
pub fn port_name(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{}{:010x}", port_prefix(network), fnv1a(&[network, container_id, ifname]) >> 24)
}

/// Whether `port` is named like a port of network `network` ([`port_name`]).
pub fn is_network_port(network: &str, port: &str) -> bool {
    port.len() == 15
        && port.starts_with(&port_prefix(network))
        && port[5..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The MACs of an attachment's container end and host end: locally administered unicast,
/// derived from [`port_name`]'s hash, so a re-created attachment keeps its MAC.
pub fn attachment_macs(network: &str, container_id: &str, ifname: &str) -> (MacAddr, MacAddr) {
    let h = fnv1a(&[network, container_id, ifname, "mac"]).to_be_bytes();
    (MacAddr([0x02, h[0], h[1], h[2], h[3], h[4]]), MacAddr([0x06, h[0], h[1], h[2], h[3], h[4]]))
}

/// What to configure in the container: addresses, then routes (a route without `gw` goes via
/// the gateway of the address of its IP version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSettings {
    /// Addresses for the interface.
    pub addresses: Vec<IpCidr>,
    /// Routes, each through a next hop.
    pub routes: Vec<RouteSpec>,
}

/// Turns an IPAM result into [`ContainerSettings`].
pub fn container_settings(ipam: &CniResult) -> Result<ContainerSettings, CniError> {
    let bad = |msg: String, details: &str| CniError::new(OPERATION_FAILED, msg, details);
    let mut addresses = Vec::new();
    for ip in &ipam.ips {
        let cidr: IpCidr =
            ip.address.parse().map_err(|e: String| bad(format!("IPAM returned address {:?}", ip.address), &e))?;
        addresses.push(cidr);
    }
    let mut routes = Vec::new();
    for route in &ipam.routes {
        let dst: IpCidr =
            route.dst.parse().map_err(|e: String| bad(format!("IPAM returned route to {:?}", route.dst), &e))?;
        let gateway = ipam.ips.iter().filter_map(|ip| ip.gateway).find(|gw| gw.is_ipv4() == dst.addr.is_ipv4());
        let via = route.gw.or(gateway).ok_or_else(|| {
            bad(
                format!("route to {} has no gw, and IPAM gave no gateway of its IP version", route.dst),
                "give the route a gw, or the IPAM range a gateway",
            )
        })?;
        if via.is_ipv4() != dst.addr.is_ipv4() {
            return Err(bad(format!("route to {} goes via {via}, of the other IP version", route.dst), ""));
        }
        routes.push(RouteSpec { dst: (dst.prefix > 0).then_some(dst), via });
    }
    Ok(ContainerSettings { addresses, routes })
}

/// One end of the veth pair, as the result lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethEnd {
    /// Interface name.
    pub name: String,
    /// Its MAC.
    pub mac: MacAddr,
}

/// The ADD result: the host end (index 0) and the container's interface (index 1, in
/// `sandbox`), IPAM's addresses on the container's interface, its routes, and its DNS
/// settings — or the configuration's when IPAM gave none.
pub fn build_result(
    config: &NetConf,
    host: &VethEnd,
    container: &VethEnd,
    sandbox: &str,
    mtu: u32,
    ipam: &CniResult,
) -> CniResult {
    let interfaces = vec![
        Interface { name: host.name.clone(), mac: Some(host.mac.to_string()), mtu: Some(mtu), sandbox: None },
        Interface {
            name: container.name.clone(),
            mac: Some(container.mac.to_string()),
            mtu: Some(mtu),
            sandbox: Some(sandbox.into()),
        },
    ];
    let ips = ipam.ips.iter().map(|ip| IpConfig { interface: Some(1), ..ip.clone() }).collect();
    let dns = if ipam.dns.is_empty() { config.dns.clone().unwrap_or_default() } else { ipam.dns.clone() };
    CniResult { cni_version: config.cni_version.clone(), interfaces, ips, routes: ipam.routes.clone(), dns }
}

/// The `vlan` column `show` gives a port of this network: `access N`, or `-`.
pub fn vlan_description(vlan: Option<u16>) -> String {
    vlan.map_or_else(|| "-".into(), |v| format!("access {v}"))
}

/// The `port-add` settings of an attachment's port.
pub fn port_settings(config: &NetConf, port: &str, mtu: u32) -> Vec<String> {
    let mut settings = vec![format!("device={port}"), format!("mtu={mtu}")];
    if let Some(vlan) = config.vlan {
        settings.push(format!("vlan={vlan}"));
    }
    settings
}

/// The MTU of an attachment: the configuration's, or 1500.
pub fn mtu(config: &NetConf) -> u32 {
    config.mtu.unwrap_or(1500)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's example plugin configuration (Appendix, "Add example"), with this plugin's
    /// type and keys added.
    const SPEC_CONFIG: &str = r#"{
        "cniVersion": "1.1.0",
        "name": "dbnet",
        "type": "bridge",
        "bridge": "cni0",
        "keyA": ["some more", "plugin specific", "configuration"],
        "ipam": {
            "type": "host-local",
            "subnet": "10.1.0.0/16",
            "gateway": "10.1.0.1"
        },
        "dns": {
            "nameservers": [ "10.1.0.1" ]
        }
    }"#;

    /// The spec's example host-local result.
    const SPEC_IPAM_RESULT: &str = r#"{
        "ips": [ { "address": "10.1.0.5/16", "gateway": "10.1.0.1" } ],
        "routes": [ { "dst": "0.0.0.0/0" } ],
        "dns": { "nameservers": [ "10.1.0.1" ] }
    }"#;

    /// The spec's example error.
    const SPEC_ERROR: &str = r#"{
        "cniVersion": "1.1.0",
        "code": 7,
        "msg": "Invalid Configuration",
        "details": "Network 192.168.0.0/31 too small to allocate from."
    }"#;

    /// The contract's configuration.
    const OUR_CONFIG: &str = r#"{"cniVersion": "1.0.0", "name": "vsnet", "type": "vswitchd-cni", "bridge": "br0",
        "socket": "/run/vswitchd/br0.ctl", "vlan": 10, "isGateway": false, "ipMasq": false, "mtu": 1500,
        "ipam": {"type": "host-local", "subnet": "10.22.0.0/24"}}"#;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    const ADD_ENV: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "ctr-1"),
        ("CNI_NETNS", "/var/run/netns/blue"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    #[test]
    fn the_spec_example_configuration_is_read() {
        let config = parse_config(SPEC_CONFIG.as_bytes()).unwrap();
        assert_eq!(config.cni_version, "1.1.0");
        assert_eq!(config.name, "dbnet");
        assert_eq!(config.bridge, "cni0");
        assert_eq!(config.ipam, Some(IpamConfig { kind: "host-local".into() }));
        assert_eq!(config.dns.unwrap().nameservers, vec!["10.1.0.1"]);
        assert_eq!((config.vlan, config.mtu, config.is_gateway, config.socket), (None, None, false, None));
    }

    #[test]
    fn our_configuration_becomes_a_typed_add_request() {
        let Request::Network { command, target, cni_path, config } =
            parse_request(env(ADD_ENV), OUR_CONFIG.as_bytes()).unwrap()
        else {
            panic!("not a network request")
        };
        assert_eq!(command, Command::Add);
        let target = target.unwrap();
        assert_eq!(target.container_id, "ctr-1");
        assert_eq!(target.netns.as_deref(), Some(std::path::Path::new("/var/run/netns/blue")));
        assert_eq!(target.ifname, "eth0");
        assert_eq!(target.port, port_name("vsnet", "ctr-1", "eth0"));
        assert_eq!(cni_path, vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]);
        assert_eq!(config.vlan, Some(10));
        assert_eq!(config.mtu, Some(1500));
        assert_eq!(config.socket.as_deref(), Some(std::path::Path::new("/run/vswitchd/br0.ctl")));
        assert_eq!(
            port_settings(&config, &target.port, 1500),
            vec![format!("device={}", target.port), "mtu=1500".to_string(), "vlan=10".to_string()]
        );
    }

    #[test]
    fn port_names_are_short_stable_and_per_network() {
        let name = port_name("vsnet", "ctr-1", "eth0");
        assert_eq!(name.len(), 15);
        assert!(valid_interface_name(&name).is_ok());
        // Stable: a fixed value, whatever the build.
        assert_eq!(name, port_name("vsnet", "ctr-1", "eth0"));
        assert_eq!(port_prefix("vsnet"), &name[..5]);
        assert_ne!(name, port_name("vsnet", "ctr-1", "eth1"));
        assert_ne!(name, port_name("vsnet", "ctr-2", "eth0"));
        assert!(is_network_port("vsnet", &name));
        assert!(!is_network_port("other", &name));
        assert!(!is_network_port("vsnet", &name[..14]));
        assert!(!is_network_port("vsnet", &format!("{}zzzzzzzzzz", port_prefix("vsnet"))));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(port_name("n", "ab", "c"), port_name("n", "a", "bc"));
        assert_eq!(fnv1a(&["a"]), 0xaf63_dc4c_8601_ec8c); // the published FNV-1a 64 of "a"
        let (container, host) = attachment_macs("vsnet", "ctr-1", "eth0");
        assert_eq!(container.0[0] & 0x03, 0x02, "locally administered unicast");
        assert_eq!(host.0[0] & 0x03, 0x02);
        assert_ne!(container, host);
    }

    #[test]
    fn the_spec_example_ipam_result_becomes_our_result() {
        let config = parse_config(SPEC_CONFIG.as_bytes()).unwrap();
        let ipam: CniResult = serde_json::from_str(SPEC_IPAM_RESULT).unwrap();
        let settings = container_settings(&ipam).unwrap();
        assert_eq!(settings.addresses, vec!["10.1.0.5/16".parse().unwrap()]);
        assert_eq!(settings.routes, vec![RouteSpec { dst: None, via: "10.1.0.1".parse().unwrap() }]);
        let host = VethEnd { name: "veth3243".into(), mac: "55:44:33:22:11:11".parse().unwrap() };
        let container = VethEnd { name: "eth0".into(), mac: "99:88:77:66:55:44".parse().unwrap() };
        let result = build_result(&config, &host, &container, "/var/run/netns/blue", 1500, &ipam);
        let expected: serde_json::Value = serde_json::from_str(
            r#"{
            "cniVersion": "1.1.0",
            "ips": [ { "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 1 } ],
            "routes": [ { "dst": "0.0.0.0/0" } ],
            "interfaces": [
                { "name": "veth3243", "mac": "55:44:33:22:11:11", "mtu": 1500 },
                { "name": "eth0", "mac": "99:88:77:66:55:44", "mtu": 1500, "sandbox": "/var/run/netns/blue" }
            ],
            "dns": { "nameservers": [ "10.1.0.1" ] }
        }"#,
        )
        .unwrap();
        assert_eq!(serde_json::to_value(&result).unwrap(), expected);
        // It reads back as the prevResult of CHECK and DEL.
        let back: CniResult = serde_json::from_value(expected).unwrap();
        assert_eq!(back, result);
    }

    #[test]
    fn the_spec_example_prev_result_is_read() {
        let check = r#"{"cniVersion": "1.1.0", "name": "dbnet", "type": "bridge", "bridge": "cni0",
            "prevResult": {
                "ips": [ { "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2 } ],
                "routes": [ { "dst": "0.0.0.0/0" } ],
                "interfaces": [
                    { "name": "cni0", "mac": "00:11:22:33:44:55" },
                    { "name": "veth3243", "mac": "55:44:33:22:11:11" },
                    { "name": "eth0", "mac": "00:11:22:33:44:66", "sandbox": "/var/run/netns/blue" }
                ],
                "dns": { "nameservers": [ "10.1.0.1" ] }
            }}"#;
        let prev = parse_config(check.as_bytes()).unwrap().prev_result.unwrap();
        assert_eq!(prev.interfaces[2].sandbox.as_deref(), Some("/var/run/netns/blue"));
        assert_eq!(prev.ips[0].interface, Some(2));
        assert_eq!(prev.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
    }

    #[test]
    fn dns_comes_from_ipam_else_from_the_configuration() {
        let config = parse_config(SPEC_CONFIG.as_bytes()).unwrap();
        let end = VethEnd { name: "x".into(), mac: MacAddr([2, 0, 0, 0, 0, 1]) };
        let from_config = build_result(&config, &end, &end, "/ns", 1500, &CniResult::default());
        assert_eq!(from_config.dns.nameservers, vec!["10.1.0.1"]);
        let ipam = CniResult { dns: Dns { search: vec!["example".into()], ..Dns::default() }, ..CniResult::default() };
        assert_eq!(build_result(&config, &end, &end, "/ns", 1500, &ipam).dns, ipam.dns);
    }

    #[test]
    fn the_spec_example_error_round_trips() {
        let error: CniError = serde_json::from_str(SPEC_ERROR).unwrap();
        assert_eq!(error.code, INVALID_CONFIG);
        assert_eq!(error.msg, "Invalid Configuration");
        let back: serde_json::Value = serde_json::to_value(&error).unwrap();
        assert_eq!(back, serde_json::from_str::<serde_json::Value>(SPEC_ERROR).unwrap());
    }

    #[test]
    fn routes_without_gw_go_via_the_gateway_of_their_ip_version() {
        let ipam: CniResult = serde_json::from_str(
            r#"{"ips": [{"address": "fd00::5/64", "gateway": "fd00::1"}, {"address": "10.22.0.5/24", "gateway": "10.22.0.1"}],
                "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}, {"dst": "192.0.2.0/24", "gw": "10.22.0.254"}]}"#,
        )
        .unwrap();
        let routes = container_settings(&ipam).unwrap().routes;
        assert_eq!(
            routes,
            vec![
                RouteSpec { dst: None, via: "10.22.0.1".parse().unwrap() },
                RouteSpec { dst: None, via: "fd00::1".parse().unwrap() },
                RouteSpec { dst: Some("192.0.2.0/24".parse().unwrap()), via: "10.22.0.254".parse().unwrap() },
            ]
        );
        let no_gateway: CniResult =
            serde_json::from_str(r#"{"ips": [{"address": "10.22.0.5/24"}], "routes": [{"dst": "0.0.0.0/0"}]}"#)
                .unwrap();
        assert_eq!(container_settings(&no_gateway).unwrap_err().code, OPERATION_FAILED);
        let crossed: CniResult =
            serde_json::from_str(r#"{"routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}"#).unwrap();
        assert!(container_settings(&crossed).is_err());
        let garbage: CniResult = serde_json::from_str(r#"{"ips": [{"address": "10.22.0.5"}]}"#).unwrap();
        assert!(container_settings(&garbage).is_err());
    }

    /// [`ADD_ENV`] with `key` set to `value`, or removed when `value` is empty.
    fn add_env_with(key: &str, value: &str) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> =
            ADD_ENV.iter().filter(|(k, _)| *k != key).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        if !value.is_empty() {
            vars.push((key.into(), value.into()));
        }
        vars
    }

    fn request_with(key: &str, value: &str, stdin: &str) -> Result<Request, CniError> {
        let vars = add_env_with(key, value);
        parse_request(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()), stdin.as_bytes())
    }

    #[test]
    fn bad_requests_get_the_spec_error_codes() {
        let code_with = |key: &str, value: &str, stdin: &str| request_with(key, value, stdin).unwrap_err().code;
        let code = |stdin: &str| code_with("CNI_ARGS", "", stdin);
        assert_eq!(code_with("CNI_COMMAND", "", OUR_CONFIG), INVALID_ENVIRONMENT);
        assert_eq!(code_with("CNI_COMMAND", "REBOOT", OUR_CONFIG), INVALID_ENVIRONMENT);
        assert_eq!(code_with("CNI_CONTAINERID", "", OUR_CONFIG), INVALID_ENVIRONMENT);
        assert_eq!(code_with("CNI_CONTAINERID", "-bad", OUR_CONFIG), INVALID_ENVIRONMENT);
        assert_eq!(code_with("CNI_IFNAME", "", OUR_CONFIG), INVALID_ENVIRONMENT);
        assert_eq!(code_with("CNI_IFNAME", "a-name-too-long-for-linux", OUR_CONFIG), INVALID_ENVIRONMENT);
        assert_eq!(code_with("CNI_IFNAME", "et/h0", OUR_CONFIG), INVALID_ENVIRONMENT);
        let error = request_with("CNI_NETNS", "", OUR_CONFIG).unwrap_err();
        assert_eq!(error.code, INVALID_ENVIRONMENT);
        assert!(error.msg.contains("CNI_NETNS"), "names the variable: {error:?}");
        assert_eq!(error.cni_version, "1.0.0", "reported in the request's version");
        assert_eq!(code("{"), DECODE_FAILURE);
        assert_eq!(code(r#"{"cniVersion": "1.0.0", "name": "n", "type": "t"}"#), DECODE_FAILURE);
        assert_eq!(code(&OUR_CONFIG.replace("1.0.0", "0.4.0")), INCOMPATIBLE_VERSION);
        assert_eq!(code(&OUR_CONFIG.replace(r#""vlan": 10"#, r#""vlan": 4095"#)), INVALID_CONFIG);
        assert_eq!(code(&OUR_CONFIG.replace(r#""mtu": 1500"#, r#""mtu": 67"#)), INVALID_CONFIG);
        assert_eq!(code(&OUR_CONFIG.replace(r#""bridge": "br0""#, r#""bridge": "../x""#)), INVALID_CONFIG);
        assert_eq!(code(&OUR_CONFIG.replace(r#""host-local""#, r#""../host-local""#)), INVALID_CONFIG);
        assert_eq!(code(&OUR_CONFIG.replace(r#""name": "vsnet""#, r#""name": "a b""#)), INVALID_CONFIG);
        let masq =
            request_with("CNI_ARGS", "", &OUR_CONFIG.replace(r#""ipMasq": false"#, r#""ipMasq": true"#)).unwrap_err();
        assert_eq!(masq.code, UNSUPPORTED_FIELD);
        assert!(masq.msg.contains("ipMasq") && masq.msg.contains("true"), "names key and value: {masq:?}");
        assert!(request_with("CNI_ARGS", "", OUR_CONFIG).is_ok());
    }

    #[test]
    fn del_needs_no_namespace_and_status_and_gc_no_container() {
        let del = [("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c"), ("CNI_IFNAME", "eth0")];
        let Request::Network { target: Some(target), .. } = parse_request(env(&del), OUR_CONFIG.as_bytes()).unwrap()
        else {
            panic!("DEL without CNI_NETNS refused")
        };
        assert_eq!(target.netns, None);
        for command in ["STATUS", "GC"] {
            let request = parse_request(env(&[("CNI_COMMAND", command)]), OUR_CONFIG.as_bytes()).unwrap();
            assert!(matches!(request, Request::Network { target: None, .. }), "{command}");
        }
        let gc = OUR_CONFIG.replace(
            r#""mtu": 1500"#,
            r#""mtu": 1500, "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]"#,
        );
        let config = parse_config(gc.as_bytes()).unwrap();
        assert_eq!(
            config.valid_attachments,
            Some(vec![Attachment { container_id: "c1".into(), ifname: "eth0".into() }])
        );
    }

    #[test]
    fn version_reports_what_it_speaks_in_the_version_asked() {
        let version = [("CNI_COMMAND", "VERSION")];
        assert_eq!(
            parse_request(env(&version), br#"{"cniVersion": "1.0.0"}"#).unwrap(),
            Request::Version { cni_version: "1.0.0".into() }
        );
        assert_eq!(parse_request(env(&version), b"").unwrap(), Request::Version { cni_version: LATEST_VERSION.into() });
        assert_eq!(parse_request(env(&version), b"[").unwrap_err().code, DECODE_FAILURE);
    }

    #[test]
    fn the_vlan_column_matches_show() {
        assert_eq!(vlan_description(Some(10)), "access 10");
        assert_eq!(vlan_description(None), "-");
    }
}
