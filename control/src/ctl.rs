//! The control socket: one JSON request per line in, one JSON reply per line out, over a Unix
//! stream socket (mode 0600). The server answers by running a job on the dataplane thread, so
//! replies see a consistent state and the forwarding path takes no lock. A malformed request
//! gets an error reply; the connection and the daemon carry on.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};
use vswitchd_dataplane::fdb::EntryKind;
use vswitchd_dataplane::switch::{SwitchHandle, SwitchState};
use vswitchd_dataplane::wire::MacAddr;
use vswitchd_dataplane::{PortId, VlanId};

/// Where control sockets live by default.
pub const RUN_DIR: &str = "/run/vswitchd";

/// The default control socket of bridge `name`.
pub fn default_socket(bridge: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{bridge}.ctl"))
}

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a request may wait for the dataplane.
const DATAPLANE_TIMEOUT: Duration = Duration::from_secs(5);

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The bridge and its ports.
    Show {},
    /// FDB entries, optionally filtered.
    FdbShow {
        /// Only this VLAN.
        #[serde(default)]
        vlan: Option<u16>,
        /// Only this port.
        #[serde(default)]
        port: Option<String>,
    },
    /// Add a static entry.
    FdbAdd {
        /// The MAC.
        mac: String,
        /// The port.
        port: String,
        /// The VLAN (default 0).
        #[serde(default)]
        vlan: Option<u16>,
        /// For a VXLAN port: the remote VTEP the MAC lives behind.
        #[serde(default)]
        remote: Option<String>,
    },
    /// Delete an entry, learned or static.
    FdbDel {
        /// The MAC.
        mac: String,
        /// The VLAN (default 0).
        #[serde(default)]
        vlan: Option<u16>,
    },
    /// Remove learned entries.
    FdbFlush {
        /// Only this port's.
        #[serde(default)]
        port: Option<String>,
    },
    /// Port counters.
    PortShow {
        /// Only this port.
        #[serde(default)]
        port: Option<String>,
    },
    /// Bonds: mode, members, link states, active member, counters per member.
    BondShow {
        /// Only this bond.
        #[serde(default)]
        bond: Option<String>,
    },
    /// VXLAN ports: VNIs, local address, remotes with counters, learned MACs.
    VxlanShow {},
    /// Make `member` the active member of active-backup bond `bond`.
    BondSetActive {
        /// The bond.
        bond: String,
        /// The member.
        member: String,
    },
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// What went wrong, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    fn from_result(r: Result<serde_json::Value, String>) -> Response {
        match r {
            Ok(v) => Response { ok: true, result: Some(v), error: None },
            Err(e) => Response { ok: false, result: None, error: Some(e) },
        }
    }
}

/// FDB counters, as `show` reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeSummary {
    /// Bridge name.
    pub name: String,
    /// Aging time.
    pub fdb_aging_secs: u64,
    /// Bound on learned entries.
    pub fdb_max_entries: usize,
    /// Entries now (learned and static).
    pub fdb_entries: usize,
    /// Learned entries now.
    pub fdb_learned_entries: usize,
    /// Entries ever learned.
    pub fdb_learned: u64,
    /// Learned entries that moved port.
    pub fdb_moved: u64,
    /// Entries removed by aging.
    pub fdb_expired: u64,
    /// Entries removed to make room.
    pub fdb_evicted: u64,
    /// Worker threads forwarding.
    #[serde(default = "one")]
    pub threads: usize,
    /// Frames each worker thread has received, first worker first.
    #[serde(default)]
    pub worker_rx_frames: Vec<u64>,
    /// FDB updates between workers dropped on a full inbox (the worker floods instead).
    #[serde(default)]
    pub fdb_sync_lost: u64,
}

fn one() -> usize {
    1
}

/// One port in `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSummary {
    /// Name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Namespace of the kernel side.
    pub netns: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// Link state (`up`, `down` or `absent`).
    pub link: String,
    /// Times the link state changed.
    pub link_changes: u64,
    /// VLAN mode (`-` for none, `access 10`, `trunk 10,20 native 1`, ...).
    pub vlan: String,
    /// Offloads negotiated with the kernel (TAPs: `csum,tso4,tso6,tso_ecn`, or `none`).
    #[serde(default)]
    pub offloads: Option<String>,
    /// Richer offload sets the kernel refused before one was accepted.
    #[serde(default)]
    pub offload_refusals: u32,
}

/// The result of `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowResult {
    /// The bridge.
    pub bridge: BridgeSummary,
    /// Its ports.
    pub ports: Vec<PortSummary>,
}

/// One FDB entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbRow {
    /// MAC.
    pub mac: String,
    /// VLAN.
    pub vlan: u16,
    /// Port name.
    pub port: String,
    /// `learned` or `static`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds since last seen (learned entries).
    pub age_secs: Option<u64>,
}

/// The result of `fdb show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbResult {
    /// Entries, sorted by port, VLAN, MAC.
    pub entries: Vec<FdbRow>,
}

/// One port's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    /// Name.
    pub name: String,
    /// Frames received.
    pub rx_frames: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Drops by reason (every reason listed).
    pub drops: BTreeMap<String, u64>,
}

/// The result of `port show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortShowResult {
    /// Ports.
    pub ports: Vec<PortStats>,
}

/// One bond member in `bond show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Name.
    pub name: String,
    /// `up`, `down`, `going_up` (updelay) or `going_down` (downdelay).
    pub link: String,
    /// Whether it carries frames.
    pub usable: bool,
    /// Whether it is the active member (active-backup).
    pub active: bool,
    /// Frames received.
    pub rx_frames: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Drops by reason (non-zero ones).
    pub drops: BTreeMap<String, u64>,
    /// LACP state (802.3ad bonds).
    pub lacp: Option<LacpInfo>,
}

/// A member's LACP state in `bond show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LacpInfo {
    /// Our state bits, by name.
    pub actor_state: Vec<String>,
    /// The partner's system identifier, if one answers.
    pub partner_system: Option<String>,
    /// The partner's key.
    pub partner_key: Option<u16>,
    /// The partner's state bits, by name.
    pub partner_state: Vec<String>,
    /// Frames are sent on the member.
    pub distributing: bool,
    /// LACPDUs received.
    pub pdus_rx: u64,
    /// LACPDUs sent.
    pub pdus_tx: u64,
}

fn lacp_state_names(bits: u8) -> Vec<String> {
    use vswitchd_dataplane::wire::lacp::state;
    [
        (state::ACTIVITY, "active"),
        (state::TIMEOUT, "fast"),
        (state::AGGREGATION, "aggregatable"),
        (state::SYNCHRONIZATION, "in_sync"),
        (state::COLLECTING, "collecting"),
        (state::DISTRIBUTING, "distributing"),
        (state::DEFAULTED, "defaulted"),
        (state::EXPIRED, "expired"),
    ]
    .into_iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, name)| name.to_string())
    .collect()
}

/// One bond in `bond show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondInfo {
    /// Name.
    pub name: String,
    /// Mode.
    pub mode: String,
    /// Hash policy (balance-xor).
    pub xmit_hash_policy: Option<String>,
    /// Link check interval.
    pub miimon_ms: u64,
    /// Up delay.
    pub updelay_ms: u64,
    /// Down delay.
    pub downdelay_ms: u64,
    /// Preferred member.
    pub primary: Option<String>,
    /// Active member.
    pub active: Option<String>,
    /// Changes of active member.
    pub failovers: u64,
    /// RARP announcements sent after failovers.
    pub announcements: u64,
    /// Members.
    pub members: Vec<MemberInfo>,
}

/// The result of `bond show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondShowResult {
    /// Bonds.
    pub bonds: Vec<BondInfo>,
}

/// A VNI carried by a VXLAN port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VniInfo {
    /// The VNI.
    pub vni: u32,
    /// The bridge VLAN it maps to (none for a single-VNI port).
    pub vlan: Option<u16>,
}

/// A remote VTEP in `vxlan show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteInfo {
    /// Its underlay address.
    pub address: String,
    /// Configured (gets floods) or learned.
    pub configured: bool,
    /// Packets received from it.
    pub rx_packets: u64,
    /// Inner bytes received from it.
    pub rx_bytes: u64,
    /// Packets sent to it.
    pub tx_packets: u64,
    /// Inner bytes sent to it.
    pub tx_bytes: u64,
}

/// A MAC known behind a remote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanMac {
    /// The MAC.
    pub mac: String,
    /// Its bridge VLAN.
    pub vlan: u16,
    /// The remote.
    pub remote: String,
    /// Seconds since last seen (learned entries).
    pub age_secs: Option<u64>,
}

/// One VXLAN port in `vxlan show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanInfo {
    /// Port name.
    pub name: String,
    /// Local underlay address.
    pub local: String,
    /// UDP destination port.
    pub dst_port: u16,
    /// Learning on.
    pub learning: bool,
    /// VNIs.
    pub vnis: Vec<VniInfo>,
    /// Remotes.
    pub remotes: Vec<RemoteInfo>,
    /// MACs behind remotes.
    pub macs: Vec<VxlanMac>,
    /// VXLAN drops by reason.
    pub drops: BTreeMap<String, u64>,
}

/// The result of `vxlan show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanShowResult {
    /// Tunnel ports.
    pub tunnels: Vec<VxlanInfo>,
}

/// The result of `fdb flush`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushResult {
    /// Entries removed.
    pub removed: usize,
}

fn port_id(state: &SwitchState, name: &str) -> Result<PortId, String> {
    state.port_by_name(name).map(|p| p.id).ok_or_else(|| format!("no port named {name:?}"))
}

fn vlan_id(vlan: Option<u16>) -> Result<VlanId, String> {
    let vid = vlan.unwrap_or(0);
    VlanId::new(vid).ok_or_else(|| format!("VLAN {vid} is out of range (0-4095)"))
}

fn port_name(state: &SwitchState, id: PortId) -> String {
    state.ports.get(id.index()).map_or_else(|| id.to_string(), |p| p.info.name.clone())
}

/// Answers `request` from the switch state at `now` (runs on the dataplane thread).
pub fn answer(
    request: &Request,
    state: &mut SwitchState,
    now: vswitchd_dataplane::Instant,
) -> Result<serde_json::Value, String> {
    match request {
        Request::Show {} => {
            let fdb = state.bridge.fdb();
            let stats = fdb.stats();
            let result = ShowResult {
                bridge: BridgeSummary {
                    name: state.name.clone(),
                    fdb_aging_secs: fdb.config().aging.as_secs(),
                    fdb_max_entries: fdb.config().max_learned,
                    fdb_entries: fdb.len(),
                    fdb_learned_entries: fdb.learned_len(),
                    fdb_learned: stats.learned,
                    fdb_moved: stats.moved,
                    fdb_expired: stats.expired,
                    fdb_evicted: stats.evicted,
                    threads: state.threads(),
                    worker_rx_frames: state.worker_rx_frames(),
                    fdb_sync_lost: state.fdb_updates_lost(),
                },
                ports: state
                    .ports
                    .iter()
                    .map(|p| PortSummary {
                        name: p.info.name.clone(),
                        kind: p.info.kind.clone(),
                        netns: p.info.netns.clone(),
                        mtu: p.info.mtu,
                        link: serde_json::to_value(p.link)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default(),
                        link_changes: p.link_changes,
                        vlan: p.info.vlan.describe(),
                        offloads: p.offloads.map(|o| o.describe()),
                        offload_refusals: p.offloads.map_or(0, |o| o.refused),
                    })
                    .collect(),
            };
            json(&result)
        }
        Request::FdbShow { vlan, port } => {
            let vlan = vlan.map(|v| vlan_id(Some(v))).transpose()?;
            let port = port.as_deref().map(|p| port_id(state, p)).transpose()?;
            let mut entries: Vec<_> = state
                .bridge
                .fdb()
                .entries(now)
                .filter(|e| vlan.is_none_or(|v| v == e.vlan) && port.is_none_or(|p| p == e.port))
                .collect();
            entries.sort_by_key(|e| (e.port, e.vlan, e.mac));
            let entries = entries
                .into_iter()
                .map(|e| FdbRow {
                    mac: e.mac.to_string(),
                    vlan: e.vlan.get(),
                    port: port_name(state, e.port),
                    kind: match e.kind {
                        EntryKind::Learned => "learned".into(),
                        EntryKind::Static => "static".into(),
                    },
                    age_secs: e.age.map(|a| a.as_secs()),
                })
                .collect();
            json(&FdbResult { entries })
        }
        Request::FdbAdd { mac, port, vlan, remote } => {
            let mac: MacAddr =
                mac.parse().map_err(|e: vswitchd_dataplane::wire::ethernet::ParseMacError| e.to_string())?;
            let vlan = vlan_id(*vlan)?;
            let port = port_id(state, port)?;
            let remote = match remote {
                Some(text) => {
                    let ip: std::net::IpAddr = text.parse().map_err(|_| format!("{text:?} is not an IP address"))?;
                    if state.ports[port.index()].vxlan.is_none() {
                        return Err(format!(
                            "--remote applies to vxlan ports; {:?} is not one",
                            state.ports[port.index()].info.name
                        ));
                    }
                    Some(ip)
                }
                None if state.ports[port.index()].vxlan.is_some() => {
                    return Err("a static entry on a vxlan port needs --remote IP".into());
                }
                None => None,
            };
            state.fdb_add_static(vlan, mac, port).map_err(|e| e.to_string())?;
            if let (Some(ip), Some(vxlan)) = (remote, state.ports[port.index()].vxlan.as_mut()) {
                vxlan.add_static(vlan, mac, ip);
            }
            Ok(serde_json::json!({}))
        }
        Request::FdbDel { mac, vlan } => {
            let mac: MacAddr =
                mac.parse().map_err(|e: vswitchd_dataplane::wire::ethernet::ParseMacError| e.to_string())?;
            let vlan = vlan_id(*vlan)?;
            for p in &mut state.ports {
                if let Some(vxlan) = p.vxlan.as_mut() {
                    vxlan.remove(vlan, mac);
                }
            }
            if state.fdb_remove(vlan, mac) {
                Ok(serde_json::json!({}))
            } else {
                Err(format!("no entry for {mac} in VLAN {vlan}"))
            }
        }
        Request::FdbFlush { port } => {
            let port = port.as_deref().map(|p| port_id(state, p)).transpose()?;
            let removed = state.fdb_flush(port);
            json(&FlushResult { removed })
        }
        Request::BondShow { bond } => {
            let only = bond.as_deref().map(|b| port_id(state, b)).transpose()?;
            let mut bonds = Vec::new();
            for p in state.ports.iter().filter(|p| only.is_none_or(|id| id == p.id)) {
                let Some(b) = &p.bond else {
                    if only.is_some() {
                        return Err(format!("port {:?} is not a bond", p.info.name));
                    }
                    continue;
                };
                let config = b.config();
                let name_of = |i: Option<usize>| i.and_then(|i| b.members().get(i)).map(|m| m.name.clone());
                bonds.push(BondInfo {
                    name: p.info.name.clone(),
                    mode: config.mode.name().to_string(),
                    xmit_hash_policy: match config.mode {
                        vswitchd_dataplane::bond::BondMode::BalanceXor(policy)
                        | vswitchd_dataplane::bond::BondMode::Lacp(policy) => Some(policy.name().to_string()),
                        _ => None,
                    },
                    miimon_ms: config.miimon.as_millis() as u64,
                    updelay_ms: config.updelay.as_millis() as u64,
                    downdelay_ms: config.downdelay.as_millis() as u64,
                    primary: name_of(config.primary),
                    active: (config.mode == vswitchd_dataplane::bond::BondMode::ActiveBackup)
                        .then(|| name_of(b.active()))
                        .flatten(),
                    failovers: b.failovers(),
                    announcements: p.announcements,
                    members: b
                        .members()
                        .iter()
                        .enumerate()
                        .map(|(i, m)| MemberInfo {
                            name: m.name.clone(),
                            link: serde_json::to_value(m.phase())
                                .ok()
                                .and_then(|v| v.as_str().map(String::from))
                                .unwrap_or_default(),
                            usable: m.usable(),
                            active: config.mode == vswitchd_dataplane::bond::BondMode::ActiveBackup
                                && b.active() == Some(i),
                            rx_frames: m.counters.rx_frames,
                            rx_bytes: m.counters.rx_bytes,
                            tx_frames: m.counters.tx_frames,
                            tx_bytes: m.counters.tx_bytes,
                            drops: m
                                .counters
                                .drops
                                .iter()
                                .filter(|(_, n)| *n > 0)
                                .map(|(r, n)| (r.name().to_string(), n))
                                .collect(),
                            lacp: b.lacp().and_then(|l| l.member(i)).map(|l| {
                                let partner = l.partner();
                                LacpInfo {
                                    actor_state: lacp_state_names(l.actor_state()),
                                    partner_system: partner.map(|p| p.system.to_string()),
                                    partner_key: partner.map(|p| p.key),
                                    partner_state: partner.map_or_else(Vec::new, |p| lacp_state_names(p.state)),
                                    distributing: l.distributing(),
                                    pdus_rx: l.pdus_rx,
                                    pdus_tx: l.pdus_tx,
                                }
                            }),
                        })
                        .collect(),
                });
            }
            json(&BondShowResult { bonds })
        }
        Request::VxlanShow {} => {
            let tunnels = state
                .ports
                .iter()
                .filter_map(|p| {
                    let v = p.vxlan.as_ref()?;
                    let c = v.config();
                    let mut macs: Vec<VxlanMac> = v
                        .macs(now)
                        .map(|m| VxlanMac {
                            mac: m.mac.to_string(),
                            vlan: m.vlan.get(),
                            remote: m.remote.to_string(),
                            age_secs: m.age.map(|a| a.as_secs()),
                        })
                        .collect();
                    macs.sort_by(|a, b| (&a.remote, a.vlan, &a.mac).cmp(&(&b.remote, b.vlan, &b.mac)));
                    Some(VxlanInfo {
                        name: p.info.name.clone(),
                        local: c.local.to_string(),
                        dst_port: c.dst_port,
                        learning: c.learning,
                        vnis: match &c.vnis {
                            vswitchd_dataplane::vxlan::VniMap::Single(vni) => vec![VniInfo { vni: *vni, vlan: None }],
                            vswitchd_dataplane::vxlan::VniMap::PerVlan(map) => {
                                map.iter().map(|(vni, vlan)| VniInfo { vni: *vni, vlan: Some(vlan.get()) }).collect()
                            }
                        },
                        remotes: v
                            .remotes()
                            .iter()
                            .map(|r| RemoteInfo {
                                address: r.addr.to_string(),
                                configured: r.configured,
                                rx_packets: r.rx_packets,
                                rx_bytes: r.rx_bytes,
                                tx_packets: r.tx_packets,
                                tx_bytes: r.tx_bytes,
                            })
                            .collect(),
                        macs,
                        drops: p
                            .counters
                            .drops
                            .iter()
                            .filter(|(r, n)| *n > 0 && r.name().starts_with("vxlan"))
                            .map(|(r, n)| (r.name().to_string(), n))
                            .collect(),
                    })
                })
                .collect();
            json(&VxlanShowResult { tunnels })
        }
        Request::BondSetActive { bond, member } => {
            let id = port_id(state, bond)?;
            state.bond_set_active(id, member)?;
            Ok(serde_json::json!({}))
        }
        Request::PortShow { port } => {
            let only = port.as_deref().map(|p| port_id(state, p)).transpose()?;
            let ports = state
                .ports
                .iter()
                .filter(|p| only.is_none_or(|id| id == p.id))
                .map(|p| {
                    let (counters, rx_errors) = state.port_totals(p.id);
                    PortStats {
                        name: p.info.name.clone(),
                        rx_frames: counters.rx_frames,
                        rx_bytes: counters.rx_bytes,
                        tx_frames: counters.tx_frames,
                        tx_bytes: counters.tx_bytes,
                        rx_errors,
                        drops: counters.drops.iter().map(|(r, n)| (r.name().to_string(), n)).collect(),
                    }
                })
                .collect();
            json(&PortShowResult { ports })
        }
    }
}

fn json<T: Serialize>(value: &T) -> Result<serde_json::Value, String> {
    serde_json::to_value(value).map_err(|e| e.to_string())
}

/// Parses one request line and answers it through the dataplane.
pub fn handle_line(line: &str, switch: &SwitchHandle) -> Response {
    let request: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return Response::from_result(Err(format!("malformed request: {e}"))),
    };
    debug!(?request, "control request");
    let result = switch.call(move |state, now| answer(&request, state, now), DATAPLANE_TIMEOUT);
    Response::from_result(result.map_err(|e| e.to_string()).and_then(|r| r))
}

/// A bound control socket; the file is removed when this is dropped.
#[derive(Debug)]
pub struct ControlServer {
    listener: Option<UnixListener>,
    path: PathBuf,
}

impl ControlServer {
    /// Binds `path` with mode 0600. Fails if another daemon answers on it; a stale file is
    /// replaced.
    pub fn bind(path: &Path) -> io::Result<ControlServer> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{} is in use: is another vswitchd running for this bridge?", path.display()),
                ));
            }
            fs::remove_file(path)?;
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
        }
        let listener = UnixListener::bind(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        Ok(ControlServer { listener: Some(listener), path: path.to_path_buf() })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections on a background thread, one thread per connection.
    pub fn serve(&mut self, switch: SwitchHandle) -> io::Result<()> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        thread::Builder::new().name("ctl-accept".into()).spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        let switch = switch.clone();
                        let spawned = thread::Builder::new()
                            .name("ctl-conn".into())
                            .spawn(move || serve_connection(stream, &switch));
                        if let Err(e) = spawned {
                            warn!(error = %e, "cannot start a control connection thread");
                        }
                    }
                    Err(e) => warn!(error = %e, "control socket accept failed"),
                }
            }
        })?;
        Ok(())
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn serve_connection(stream: UnixStream, switch: &SwitchHandle) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.by_ref().take(MAX_REQUEST).read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let reply = Response::from_result(Err(format!("unreadable request: {e}")));
                let _ = write_reply(&mut writer, &reply);
                return;
            }
        }
        let reply = if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST {
            Response::from_result(Err(format!("request longer than {MAX_REQUEST} bytes")))
        } else if line.trim().is_empty() {
            continue;
        } else {
            handle_line(line.trim(), switch)
        };
        if write_reply(&mut writer, &reply).is_err() {
            return;
        }
        if !line.ends_with('\n') && line.len() as u64 >= MAX_REQUEST {
            return;
        }
    }
}

fn write_reply(writer: &mut UnixStream, reply: &Response) -> io::Result<()> {
    let mut text = serde_json::to_string(reply).map_err(io::Error::other)?;
    text.push('\n');
    writer.write_all(text.as_bytes())
}

/// Sends one request to the daemon at `path` and returns its reply.
pub fn request(path: &Path, request: &Request) -> io::Result<Response> {
    let mut stream = UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {}: {e}", path.display())))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut text = serde_json::to_string(request).map_err(io::Error::other)?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad reply from vswitchd: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let r: Request = serde_json::from_str(r#"{"command":"fdb-show","vlan":10}"#).unwrap();
        assert_eq!(r, Request::FdbShow { vlan: Some(10), port: None });
        assert_eq!(serde_json::to_string(&Request::Show {}).unwrap(), r#"{"command":"show"}"#);
        let r: Request = serde_json::from_str(r#"{"command":"fdb-add","mac":"02:00:00:00:00:01","port":"p"}"#).unwrap();
        assert_eq!(r, Request::FdbAdd { mac: "02:00:00:00:00:01".into(), port: "p".into(), vlan: None, remote: None });
    }

    #[test]
    fn malformed_requests_are_refused() {
        for bad in
            ["", "{", r#"{"command":"reboot"}"#, r#"{"command":"show","extra":1}"#, r#"{"command":"fdb-add"}"#, "[]"]
        {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad:?} accepted");
        }
    }
}
