//! The control socket: one JSON request per line in, one JSON reply per line out, over a Unix
//! stream socket created with mode 0600. The server answers by running a job on the dataplane
//! thread, so replies see a consistent state and the forwarding path takes no lock. A malformed
//! request gets an error reply; the connection and the daemon carry on.
//!
//! Clients cannot hurt the daemon: each is served on a thread of its own, up to
//! [`ClientLimits::max_connections`] at once (one more is told [`BUSY`] and closed); one that
//! does not send a whole request line in time, sends too long a line, or does not take its
//! reply in time is dropped. Large answers keep the dataplane thread only for a plain copy:
//! `fdb show` copies entries out and sorts and serializes them on the client's thread.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::stat::{Mode, umask};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};
use vswitchd_dataplane::fdb::{EntryKind, EntryView};
use vswitchd_dataplane::switch::{SwitchHandle, SwitchState};
use vswitchd_dataplane::wire::MacAddr;
use vswitchd_dataplane::{PortId, VlanId};

/// Where control sockets live by default.
pub const RUN_DIR: &str = "/run/vswitchd";

/// The default control socket of bridge `name`.
pub fn default_socket(bridge: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{bridge}.ctl"))
}

/// Longest request line accepted, by default.
pub const MAX_REQUEST: usize = 64 * 1024;
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
    /// The spanning tree: bridge and root identifiers, root port, each port's role and state.
    StpShow {},
    /// The multicast snooping table: groups per VLAN with their member ports, router ports.
    MdbShow {},
    /// Every counter and state, in the Prometheus text format (the result is the text).
    Metrics {},
    /// Make `member` the active member of active-backup bond `bond`.
    BondSetActive {
        /// The bond.
        bond: String,
        /// The member.
        member: String,
    },
    /// Add a port: `KEY=VALUE` settings as in a `[[port]]` table.
    PortAdd {
        /// Its name.
        name: String,
        /// Its type (`tap`, `veth`, `netdev`, ...).
        #[serde(rename = "type")]
        kind: String,
        /// `KEY=VALUE` settings (VALUE a TOML value or a bare word).
        #[serde(default)]
        settings: Vec<String>,
    },
    /// Remove a port, and what vswitchd created for it.
    PortDel {
        /// Its name.
        name: String,
    },
    /// Change a port's settings (`KEY=VALUE`; `KEY=` removes the key).
    PortSet {
        /// Its name.
        name: String,
        /// `KEY=VALUE` settings.
        settings: Vec<String>,
    },
    /// Add a remote VTEP to a VXLAN port.
    VxlanRemoteAdd {
        /// The VXLAN port.
        port: String,
        /// The remote's underlay address.
        ip: String,
    },
    /// Remove a remote VTEP from a VXLAN port.
    VxlanRemoteDel {
        /// The VXLAN port.
        port: String,
        /// The remote's underlay address.
        ip: String,
    },
    /// Re-read the topology file and apply the difference.
    Reload {},
    /// The running topology, as a topology file.
    Save {},
    /// Run a frame through the pipeline as if received on `port`, recording every decision;
    /// nothing is sent, learned or counted.
    Trace {
        /// The ingress port.
        port: String,
        /// The frame: fields (`dst=MAC,src=MAC,vlan=10,ipv4,tcp,dport=80`) or hex bytes.
        frame: String,
    },
    /// Hand the running bridge (its fds, FDB and state) to the process asking, then exit
    /// (`vswitchd --takeover`); the connection then speaks the takeover protocol.
    Takeover {},
    /// Capture the frames of these ports: the reply line is followed by pcapng bytes in
    /// length-prefixed chunks, then a summary line (see [`crate::capture`]).
    Capture {
        /// The ports.
        ports: Vec<String>,
        /// Dropped frames too, each with its drop reason as a comment.
        #[serde(default)]
        drops: bool,
        /// Stop after this many frames.
        #[serde(default)]
        count: Option<u64>,
    },
}

impl Request {
    /// Whether the request changes the running topology (answered by the control plane, not
    /// by a dataplane job).
    pub fn is_live_change(&self) -> bool {
        matches!(
            self,
            Request::PortAdd { .. }
                | Request::PortDel { .. }
                | Request::PortSet { .. }
                | Request::VxlanRemoteAdd { .. }
                | Request::VxlanRemoteDel { .. }
                | Request::Reload {}
                | Request::Save {}
                | Request::Takeover {}
        )
    }
}

/// Why a live change was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The request itself was wrong (a bad key, value or name): nothing was changed
    /// (`vswitchctl` exits 2). Otherwise carrying it out failed (exit 1).
    pub refused: bool,
    /// What went wrong, naming the key or the step.
    pub message: String,
}

impl Refusal {
    /// A request refused as wrong.
    pub fn refused(message: impl Into<String>) -> Refusal {
        Refusal { refused: true, message: message.into() }
    }

    /// A change that failed while being made.
    pub fn failed(message: impl Into<String>) -> Refusal {
        Refusal { refused: false, message: message.into() }
    }
}

/// What the control plane does besides dataplane jobs: live changes to the running topology
/// ([`Request::is_live_change`]) and handing the bridge to a new process ([`Request::Takeover`]).
pub trait LiveControl: Send + Sync {
    /// Makes the live change `request` asks for.
    fn change(&self, request: &Request) -> Result<serde_json::Value, Refusal>;
    /// Hands the running bridge over on `stream` (the connection the request came on).
    fn hand_over(&self, stream: &UnixStream) -> Result<(), String>;
}

/// The control plane's [`LiveControl`], shared by the client threads.
pub type LiveChanges = Arc<dyn LiveControl>;

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
    /// On failure: the request was refused as wrong and nothing changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

impl Response {
    fn from_result(r: Result<serde_json::Value, String>) -> Response {
        match r {
            Ok(v) => Response { ok: true, result: Some(v), error: None, refused: false },
            Err(e) => Response { ok: false, result: None, error: Some(e), refused: false },
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
    /// MACs pinned to their port for moving too often (MAC flapping: a loop or a spoofer).
    #[serde(default)]
    pub fdb_move_damped: u64,
    /// Worker threads forwarding.
    #[serde(default = "one")]
    pub threads: usize,
    /// Frames each worker thread has received, first worker first.
    #[serde(default)]
    pub worker_rx_frames: Vec<u64>,
    /// FDB updates between workers dropped on a full inbox (the worker floods instead).
    #[serde(default)]
    pub fdb_sync_lost: u64,
    /// The busy-poll policy: `adaptive` (the default), `off`, or `window`.
    #[serde(default)]
    pub busy_poll: String,
    /// The fixed window in microseconds (`window` only).
    #[serde(default)]
    pub busy_poll_window_us: Option<u64>,
    /// Zero-timeout polls made instead of sleeping, over all workers.
    #[serde(default)]
    pub busy_poll_spins: u64,
    /// Times a worker found its core contended while polling and went back to sleeping.
    #[serde(default)]
    pub busy_poll_backoffs: u64,
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
    /// Frames received, by worker thread (the first worker first): how the kernel spread the
    /// port's flows over its queues or sockets.
    #[serde(default)]
    pub worker_rx_frames: Vec<u64>,
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
    /// What the endpoint's tables went through: remotes and MACs learned, expired, evicted.
    #[serde(default)]
    pub stats: vswitchd_dataplane::vxlan::VxlanStats,
}

/// The result of `vxlan show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanShowResult {
    /// Tunnel ports.
    pub tunnels: Vec<VxlanInfo>,
}

/// One port in `stp show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StpPortInfo {
    /// The port.
    pub name: String,
    /// `root`, `designated`, `alternate`, `backup` or `disabled`.
    pub role: String,
    /// `discarding`, `learning` or `forwarding`.
    pub state: String,
    /// Path cost.
    pub cost: u32,
    /// Port priority.
    pub priority: u8,
    /// An edge port now.
    pub edge: bool,
    /// BPDU guard is on.
    pub bpdu_guard: bool,
    /// BPDU guard disabled the port.
    pub guard_tripped: bool,
    /// `rstp`, or `stp` when a legacy bridge is on the link.
    pub protocol: String,
    /// The designated bridge of the port's LAN.
    pub designated_bridge: String,
    /// BPDUs received and sent.
    pub bpdus_rx: u64,
    /// BPDUs sent.
    pub bpdus_tx: u64,
    /// Times the port started forwarding.
    pub forward_transitions: u64,
}

/// The result of `stp show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StpShowResult {
    /// `rstp`, `stp` or `off`.
    pub mode: String,
    /// This bridge's identifier (`8000.020000000001`), when the tree runs.
    pub bridge_id: Option<String>,
    /// The root bridge's identifier.
    pub root_id: Option<String>,
    /// The root port (none on the root bridge).
    pub root_port: Option<String>,
    /// The cost to the root.
    pub root_path_cost: u32,
    /// Topology changes detected or received.
    pub topology_changes: u64,
    /// Milliseconds since the last one.
    pub ms_since_topology_change: Option<u64>,
    /// The ports.
    pub ports: Vec<StpPortInfo>,
}

/// The spanning tree as `stp show` prints it.
fn stp_show(state: &SwitchState, now: vswitchd_dataplane::Instant) -> StpShowResult {
    use vswitchd_dataplane::stp::format_bridge_id;
    let Some(stp) = state.stp() else {
        return StpShowResult {
            mode: "off".into(),
            bridge_id: None,
            root_id: None,
            root_port: None,
            root_path_cost: 0,
            topology_changes: 0,
            ms_since_topology_change: None,
            ports: Vec::new(),
        };
    };
    let name = |id: PortId| state.live_port(id).map(|p| p.info.name.clone());
    let text = |v: serde_json::Value| v.as_str().map(String::from).unwrap_or_default();
    StpShowResult {
        mode: stp.config().mode.name().into(),
        bridge_id: Some(format_bridge_id(stp.bridge_id())),
        root_id: Some(format_bridge_id(stp.root_id())),
        root_port: stp.root_port().and_then(name),
        root_path_cost: stp.root_path_cost(),
        topology_changes: stp.topology_changes,
        ms_since_topology_change: stp.last_topology_change.map(|t| now.saturating_duration_since(t).as_millis() as u64),
        ports: stp
            .ports()
            .filter_map(|p| {
                Some(StpPortInfo {
                    name: name(p.id())?,
                    role: text(serde_json::to_value(p.role()).ok()?),
                    state: text(serde_json::to_value(p.state()).ok()?),
                    cost: p.config().cost,
                    priority: p.config().priority,
                    edge: p.oper_edge(),
                    bpdu_guard: p.config().bpdu_guard,
                    guard_tripped: p.guard_tripped(),
                    protocol: if p.sends_rstp() && stp.config().mode == vswitchd_dataplane::stp::StpMode::Rstp {
                        "rstp".into()
                    } else {
                        "stp".into()
                    },
                    designated_bridge: format_bridge_id(p.designated_bridge()),
                    bpdus_rx: p.bpdus_rx,
                    bpdus_tx: p.bpdus_tx,
                    forward_transitions: p.forward_transitions,
                })
            })
            .collect(),
    }
}

/// One (VLAN, group, port) membership of `mdb show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdbMember {
    /// The VLAN (0 without VLANs).
    pub vlan: u16,
    /// The group address.
    pub group: String,
    /// The member port.
    pub port: String,
    /// Seconds since the port last reported the group.
    pub age_secs: u64,
    /// Seconds until the membership expires without another report.
    pub expires_secs: u64,
}

/// A router port of `mdb show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdbRouter {
    /// The port.
    pub port: String,
    /// Seconds until it stops being one without another query; `None` when configured
    /// (`mrouter = true`).
    pub expires_secs: Option<u64>,
}

/// The result of `mdb show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdbShowResult {
    /// Whether snooping is on (off: every multicast frame floods and the table stays empty).
    pub snooping: bool,
    /// Whether vswitchd sends general queries.
    pub querier: bool,
    /// Membership lifetime without a report.
    pub aging_secs: u64,
    /// Whether traffic to groups nobody reported floods.
    pub flood_unknown: bool,
    /// (VLAN, group) entries in the table.
    pub groups: usize,
    /// The bound on them.
    pub max_groups: usize,
    /// Joins of new groups refused because the table was full.
    pub refused: u64,
    /// General queries vswitchd's querier sent (one per protocol and VLAN).
    pub queries_sent: u64,
    /// Group-specific queries it sent after leaves.
    pub group_queries_sent: u64,
    /// Memberships, sorted by VLAN, group, port.
    pub members: Vec<MdbMember>,
    /// Router ports.
    pub routers: Vec<MdbRouter>,
}

fn mdb_show(state: &SwitchState, now: vswitchd_dataplane::Instant) -> MdbShowResult {
    let mdb = state.bridge.mdb();
    let config = mdb.config();
    let name = |id: PortId| state.ports.get(id.index()).map_or_else(|| id.to_string(), |p| p.info.name.clone());
    MdbShowResult {
        snooping: config.snooping,
        querier: config.querier,
        aging_secs: config.aging.as_secs(),
        flood_unknown: config.flood_unknown,
        groups: mdb.len(),
        max_groups: config.max_groups,
        refused: mdb.refused,
        queries_sent: mdb.queries_sent,
        group_queries_sent: mdb.group_queries_sent,
        members: mdb
            .entries(now)
            .into_iter()
            .map(|e| MdbMember {
                vlan: e.vlan,
                group: e.group,
                port: name(e.port),
                age_secs: e.age_secs,
                expires_secs: e.expires_secs,
            })
            .collect(),
        routers: mdb
            .routers(now)
            .into_iter()
            .map(|(p, expires_secs)| MdbRouter { port: name(p), expires_secs })
            .collect(),
    }
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

/// Answers `request` from the switch state at `now` (runs on the dataplane thread).
pub fn answer(
    request: &Request,
    state: &mut SwitchState,
    now: vswitchd_dataplane::Instant,
) -> Result<serde_json::Value, String> {
    match request {
        Request::Show {} => {
            let busy_poll = state.busy_poll_totals();
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
                    fdb_move_damped: stats.move_damped,
                    threads: state.threads(),
                    worker_rx_frames: state.worker_rx_frames(),
                    fdb_sync_lost: state.fdb_updates_lost(),
                    busy_poll: busy_poll.0.name().to_string(),
                    busy_poll_window_us: busy_poll.0.window_us(),
                    busy_poll_spins: busy_poll.1.spins,
                    busy_poll_backoffs: busy_poll.1.backoffs,
                },
                ports: state
                    .live_ports()
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
            let mut entries = Vec::new();
            copy_fdb_slots(state, now, (0, usize::MAX), vlan, port, &mut entries);
            json(&FdbResultJson { entries: &FdbListing::sorted(entries, port_names(state)) })
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
            if let Some(ip) = remote {
                state.vxlan_add_static(port, vlan, mac, ip).map_err(|e| e.to_string())?;
            }
            Ok(serde_json::json!({}))
        }
        Request::FdbDel { mac, vlan } => {
            let mac: MacAddr =
                mac.parse().map_err(|e: vswitchd_dataplane::wire::ethernet::ParseMacError| e.to_string())?;
            let vlan = vlan_id(*vlan)?;
            state.vxlan_forget(vlan, mac);
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
            for p in state.live_ports().filter(|p| only.is_none_or(|id| id == p.id)) {
                let Some(b) = &p.bond else {
                    if only.is_some() {
                        return Err(format!("port {:?} is not a bond", p.info.name));
                    }
                    continue;
                };
                let config = b.config();
                let counters = state.bond_member_totals(p.id);
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
                        .map(|(i, m)| (i, m, counters.get(i).copied().unwrap_or_default()))
                        .map(|(i, m, c)| MemberInfo {
                            name: m.name.clone(),
                            link: serde_json::to_value(m.phase())
                                .ok()
                                .and_then(|v| v.as_str().map(String::from))
                                .unwrap_or_default(),
                            usable: m.usable(),
                            active: config.mode == vswitchd_dataplane::bond::BondMode::ActiveBackup
                                && b.active() == Some(i),
                            rx_frames: c.rx_frames,
                            rx_bytes: c.rx_bytes,
                            tx_frames: c.tx_frames,
                            tx_bytes: c.tx_bytes,
                            drops: c
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
        Request::VxlanShow {} => json(&finish_vxlan_show(copy_vxlan_show(state, now, true))),
        Request::StpShow {} => json(&stp_show(state, now)),
        Request::MdbShow {} => json(&mdb_show(state, now)),
        Request::Metrics {} => {
            let copied = copy_metrics(state, now)?;
            Ok(serde_json::Value::String(crate::metrics_text::exposition(&finish_metrics(copied)?)))
        }
        Request::Trace { port, frame } => {
            let bytes = crate::trace_frame::build(frame)?;
            trace_answer(state, port, &bytes, now).map_err(|(_, e)| e)
        }
        Request::PortAdd { .. }
        | Request::PortDel { .. }
        | Request::PortSet { .. }
        | Request::VxlanRemoteAdd { .. }
        | Request::VxlanRemoteDel { .. }
        | Request::Reload {}
        | Request::Save {}
        | Request::Takeover {} => Err("a live change is made by the control plane, not a dataplane job".into()),
        Request::Capture { .. } => Err("a capture streams on a connection of its own".into()),
        Request::BondSetActive { bond, member } => {
            let id = port_id(state, bond)?;
            state.bond_set_active(id, member)?;
            Ok(serde_json::json!({}))
        }
        Request::PortShow { port } => {
            let only = port.as_deref().map(|p| port_id(state, p)).transpose()?;
            let ports = state
                .live_ports()
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
                        worker_rx_frames: state.port_worker_rx_frames(p.id),
                    }
                })
                .collect();
            json(&PortShowResult { ports })
        }
    }
}

/// `trace`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceResult {
    /// The ingress port.
    pub port: String,
    /// The frame's length.
    pub frame_len: usize,
    /// Every decision, in pipeline order.
    pub steps: Vec<TraceStepJson>,
    /// `forward`, `drop` (the bridge dropped it: `drop_reason`), or `bpdu`.
    pub verdict: String,
    /// The bridge's drop reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    /// The ports the frame would be sent out of.
    pub sent_to: Vec<String>,
    /// Steps not recorded (past the trace's bound).
    #[serde(default)]
    pub steps_lost: usize,
}

/// One step of a trace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TraceStepJson {
    /// `receive`, `stp`, `vlan`, `learn`, `fdb`, `storm`, `decision`, `egress`, `bond`, `vxlan`,
    /// `offload`.
    pub stage: String,
    /// The port the step concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// The outcome.
    pub result: String,
    /// The particulars.
    pub detail: String,
}

/// Answers `trace`: the frame is built here (a bad field refuses the request), the trace runs
/// on the first worker.
fn trace_request(port: &str, frame: &str, switch: &SwitchHandle) -> Response {
    let refuse = |e: String| Response { ok: false, result: None, error: Some(e), refused: true };
    let bytes = match crate::trace_frame::build(frame) {
        Ok(b) => b,
        Err(e) => return refuse(e),
    };
    let port = port.to_string();
    match switch.call(move |state, now| trace_answer(state, &port, &bytes, now), DATAPLANE_TIMEOUT) {
        Ok(Ok(v)) => Response::from_result(Ok(v)),
        Ok(Err((true, e))) => refuse(e),
        Ok(Err((false, e))) => Response::from_result(Err(e)),
        Err(e) => Response::from_result(Err(e.to_string())),
    }
}

/// Traces `bytes` as received on `port` (on the dataplane thread). An unknown port is a refusal
/// (`true`).
fn trace_answer(
    state: &mut SwitchState,
    port: &str,
    bytes: &[u8],
    now: vswitchd_dataplane::Instant,
) -> Result<serde_json::Value, (bool, String)> {
    let id = port_id(state, port).map_err(|e| (true, e))?;
    let log = state.trace(id, bytes, now);
    let names = port_names(state);
    let name = |p: PortId| names.get(p.index()).cloned().unwrap_or_else(|| format!("#{}", p.index()));
    let bpdu = log.events().iter().any(|e| matches!(e, vswitchd_dataplane::trace::TraceEvent::SpanningTree));
    let dropped = log.dropped();
    let result = TraceResult {
        port: port.to_string(),
        frame_len: bytes.len(),
        steps: log
            .steps(&name)
            .into_iter()
            .map(|s| TraceStepJson { stage: s.stage.to_string(), port: s.port, result: s.result, detail: s.detail })
            .collect(),
        verdict: if bpdu {
            "bpdu"
        } else if dropped.is_some() {
            "drop"
        } else {
            "forward"
        }
        .to_string(),
        drop_reason: dropped.map(|r| r.name().to_string()),
        sent_to: log.sent_to().into_iter().map(name).collect(),
        steps_lost: log.lost,
    };
    json(&result).map_err(|e| (false, e))
}

fn json<T: Serialize>(value: &T) -> Result<serde_json::Value, String> {
    serde_json::to_value(value).map_err(|e| e.to_string())
}

/// What `vxlan show` needs from the dataplane, copied as plain values (the inner MACs as
/// [`RemoteMac`]s, a plain copy each): the formatting and sorting happen off the forwarding
/// thread, in [`finish_vxlan_show`]. A sender in an allowed prefix can fill the MAC table.
fn copy_vxlan_show(
    state: &SwitchState,
    now: vswitchd_dataplane::Instant,
    with_macs: bool,
) -> Vec<(VxlanInfo, Vec<vswitchd_dataplane::vxlan::RemoteMac>)> {
    state
        .live_ports()
        .filter_map(|p| {
            let v = p.vxlan.as_ref()?;
            let (remotes, stats) = state.vxlan_totals(p.id)?;
            let c = v.config();
            let info = VxlanInfo {
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
                remotes: remotes
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
                macs: Vec::new(),
                drops: state
                    .port_totals(p.id)
                    .0
                    .drops
                    .iter()
                    .filter(|(r, n)| *n > 0 && r.name().starts_with("vxlan"))
                    .map(|(r, n)| (r.name().to_string(), n))
                    .collect(),
                stats,
            };
            Some((info, if with_macs { v.macs(now).collect() } else { Vec::new() }))
        })
        .collect()
}

/// What the metrics need from the dataplane: the replies of `show`, `port show` and `bond show`
/// as JSON values, `vxlan show` without MACs, `stp show` and `mdb show`.
type MetricsCopy =
    ([serde_json::Value; 3], Vec<(VxlanInfo, Vec<vswitchd_dataplane::vxlan::RemoteMac>)>, StpShowResult, MdbShowResult);

fn copy_metrics(state: &mut SwitchState, now: vswitchd_dataplane::Instant) -> Result<MetricsCopy, String> {
    let show = answer(&Request::Show {}, state, now)?;
    let ports = answer(&Request::PortShow { port: None }, state, now)?;
    let bonds = answer(&Request::BondShow { bond: None }, state, now)?;
    Ok(([show, ports, bonds], copy_vxlan_show(state, now, false), stp_show(state, now), mdb_show(state, now)))
}

fn finish_metrics(copied: MetricsCopy) -> Result<crate::metrics_text::MetricsSnapshot, String> {
    let ([show, ports, bonds], vxlan, stp, mdb) = copied;
    let typed = |what: &str, e: serde_json::Error| format!("{what}: {e}");
    Ok(crate::metrics_text::MetricsSnapshot {
        version: env!("CARGO_PKG_VERSION").to_string(),
        show: serde_json::from_value(show).map_err(|e| typed("show", e))?,
        ports: serde_json::from_value(ports).map_err(|e| typed("port show", e))?,
        bonds: serde_json::from_value(bonds).map_err(|e| typed("bond show", e))?,
        vxlan: finish_vxlan_show(vxlan),
        stp,
        mdb,
    })
}

/// A snapshot of every counter, taken in one dataplane job (so the families agree).
pub fn metrics_snapshot(switch: &SwitchHandle) -> Result<crate::metrics_text::MetricsSnapshot, String> {
    let copied = switch.call(copy_metrics, DATAPLANE_TIMEOUT).map_err(|e| e.to_string())??;
    finish_metrics(copied)
}

/// The Prometheus text exposition of the switch now (`vswitchctl metrics`, `/metrics`); the
/// text is built off the dataplane thread.
pub fn metrics_text(switch: &SwitchHandle) -> Result<String, String> {
    metrics_snapshot(switch).map(|s| crate::metrics_text::exposition(&s))
}

/// Formats and sorts what [`copy_vxlan_show`] copied.
fn finish_vxlan_show(copied: Vec<(VxlanInfo, Vec<vswitchd_dataplane::vxlan::RemoteMac>)>) -> VxlanShowResult {
    let tunnels = copied
        .into_iter()
        .map(|(mut info, macs)| {
            info.macs = macs
                .into_iter()
                .map(|m| VxlanMac {
                    mac: m.mac.to_string(),
                    vlan: m.vlan.get(),
                    remote: m.remote.to_string(),
                    age_secs: m.age.map(|a| a.as_secs()),
                })
                .collect();
            info.macs.sort_by(|a, b| (&a.remote, a.vlan, &a.mac).cmp(&(&b.remote, b.vlan, &b.mac)));
            info
        })
        .collect();
    VxlanShowResult { tunnels }
}

/// Parses one request line and answers it through the dataplane. An FDB listing is copied out
/// of the dataplane and turned into JSON by whoever writes the reply, off the dataplane thread.
pub fn handle_line(line: &str, switch: &SwitchHandle) -> Reply {
    handle_line_with(line, switch, None)
}

/// As [`handle_line`], with live changes made by `changes` (refused without it).
pub fn handle_line_with(line: &str, switch: &SwitchHandle, changes: Option<&LiveChanges>) -> Reply {
    let request: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return Reply::error(format!("malformed request: {e}")),
    };
    debug!(?request, "control request");
    if request.is_live_change() {
        let Some(changes) = changes else { return Reply::error("this switch takes no live changes") };
        return Reply::Whole(match changes.change(&request) {
            Ok(v) => Response { ok: true, result: Some(v), error: None, refused: false },
            Err(r) => Response { ok: false, result: None, error: Some(r.message), refused: r.refused },
        });
    }
    if let Request::FdbShow { vlan, port } = request {
        return match list_fdb(vlan, port, switch) {
            Ok(listing) => Reply::Fdb(listing),
            Err(e) => Reply::error(e),
        };
    }
    if let Request::Trace { port, frame } = &request {
        return Reply::Whole(trace_request(port, frame, switch));
    }
    if let Request::VxlanShow {} = request {
        let copied = switch.call(|state, now| copy_vxlan_show(state, now, true), DATAPLANE_TIMEOUT);
        return Reply::Whole(Response::from_result(
            copied.map_err(|e| e.to_string()).and_then(|c| json(&finish_vxlan_show(c))),
        ));
    }
    if let Request::Metrics {} = request {
        return Reply::Whole(Response::from_result(metrics_text(switch).map(serde_json::Value::String)));
    }
    let result = switch.call(move |state, now| answer(&request, state, now), DATAPLANE_TIMEOUT);
    Reply::Whole(Response::from_result(result.map_err(|e| e.to_string()).and_then(|r| r)))
}

/// An answer to one request, ready to be written as one JSON line.
#[derive(Debug)]
pub enum Reply {
    /// A reply built whole.
    Whole(Response),
    /// A successful `fdb show`: written as `{"ok":true,"result":{"entries":[...]}}`, each row
    /// serialized as it is written, so a large table is never held as JSON text or values.
    Fdb(FdbListing),
}

impl Reply {
    fn error(text: impl Into<String>) -> Reply {
        Reply::Whole(Response::from_result(Err(text.into())))
    }

    /// Writes the reply and its newline to `out`.
    pub fn write_line(&self, out: impl Write) -> io::Result<()> {
        let mut out = io::BufWriter::with_capacity(64 * 1024, out);
        match self {
            Reply::Whole(response) => serde_json::to_writer(&mut out, response)?,
            Reply::Fdb(listing) => {
                serde_json::to_writer(&mut out, &FdbReplyJson { ok: true, result: FdbResultJson { entries: listing } })?
            }
        }
        out.write_all(b"\n")?;
        out.flush()
    }
}

/// The FDB entries `fdb show` lists, copied out of the dataplane as plain values, with the
/// port names they need; sorted by port, VLAN, MAC.
#[derive(Debug, Clone)]
pub struct FdbListing {
    entries: Vec<EntryView>,
    port_names: Vec<String>,
    /// The longest the copy held the dataplane thread in one job.
    longest_job: Duration,
    /// How long it held it in all.
    held: Duration,
}

impl FdbListing {
    /// The entries, in listing order.
    pub fn entries(&self) -> &[EntryView] {
        &self.entries
    }

    /// The longest the copy held the dataplane thread in one job.
    pub fn longest_job(&self) -> Duration {
        self.longest_job
    }

    /// How long the copy held the dataplane thread in all its jobs.
    pub fn held(&self) -> Duration {
        self.held
    }

    /// Sorts `entries`, copied in order; an entry copied twice (it moved while the copy went
    /// on) is listed as last copied.
    fn sorted(mut entries: Vec<EntryView>, port_names: Vec<String>) -> FdbListing {
        entries.reverse();
        entries.sort_by_key(|e| (e.vlan, e.mac)); // stable: the last copy of an entry comes first
        entries.dedup_by_key(|e| (e.vlan, e.mac));
        entries.sort_unstable_by_key(|e| (e.port, e.vlan, e.mac));
        FdbListing { entries, port_names, longest_job: Duration::ZERO, held: Duration::ZERO }
    }
}

/// Bytes a row of `fdb show` takes as JSON, about (for write deadlines).
const FDB_ROW_BYTES: usize = 100;

/// FDB slots copied per dataplane job: the dataplane stops for a fraction of a millisecond
/// at a time, whatever the table's size.
const FDB_SLOTS_PER_JOB: usize = 2048;

/// A filler for the copy buffer, which is allocated and its pages touched off the dataplane.
const UNUSED_ENTRY: EntryView =
    EntryView { vlan: VlanId::NONE, mac: MacAddr([0; 6]), port: PortId(0), kind: EntryKind::Static, age: None };

/// Appends the entries in `count` FDB slots from `from` that match `vlan` and `port` to
/// `into`; returns where the next slots start (`None` past the last). This is all of
/// `fdb show` the dataplane thread does; it allocates nothing if `into` has room for `count`.
fn copy_fdb_slots(
    state: &SwitchState,
    now: vswitchd_dataplane::Instant,
    (from, count): (usize, usize),
    vlan: Option<VlanId>,
    port: Option<PortId>,
    into: &mut Vec<EntryView>,
) -> Option<usize> {
    let (entries, next) = state.bridge.fdb().entries_in_slots(from, count, now);
    into.extend(entries.filter(|e| vlan.is_none_or(|v| v == e.vlan) && port.is_none_or(|p| p == e.port)));
    next
}

/// Every port's name, by index.
fn port_names(state: &SwitchState) -> Vec<String> {
    state.ports.iter().map(|p| p.info.name.clone()).collect()
}

/// Lists the FDB in short dataplane jobs: one checks the filter and sizes the table, then each
/// copies the entries of [`FDB_SLOTS_PER_JOB`] slots into a buffer allocated here. Sorting and
/// JSON happen here too.
fn list_fdb(vlan: Option<u16>, port: Option<String>, switch: &SwitchHandle) -> Result<FdbListing, String> {
    list_fdb_in_steps(vlan, port, switch, FDB_SLOTS_PER_JOB)
}

fn list_fdb_in_steps(
    vlan: Option<u16>,
    port: Option<String>,
    switch: &SwitchHandle,
    slots_per_job: usize,
) -> Result<FdbListing, String> {
    let vlan = vlan.map(|v| vlan_id(Some(v))).transpose()?;
    let (port, names, len) = switch
        .call(
            move |state, _| -> Result<_, String> {
                let port = port.as_deref().map(|p| port_id(state, p)).transpose()?;
                Ok((port, port_names(state), state.bridge.fdb().len()))
            },
            DATAPLANE_TIMEOUT,
        )
        .map_err(|e| e.to_string())??;
    let mut entries = Vec::with_capacity(len + len / 16);
    let mut step = vec![UNUSED_ENTRY; slots_per_job];
    let (mut from, mut jobs, mut longest, mut held) = (Some(0), 0u32, Duration::ZERO, Duration::ZERO);
    while let Some(start) = from {
        step.clear();
        let copied = switch
            .call(
                move |state, now| {
                    let started = Instant::now();
                    let next = copy_fdb_slots(state, now, (start, slots_per_job), vlan, port, &mut step);
                    (step, next, started.elapsed())
                },
                DATAPLANE_TIMEOUT,
            )
            .map_err(|e| e.to_string())?;
        entries.extend_from_slice(&copied.0);
        (step, from) = (copied.0, copied.1);
        jobs += 1;
        longest = longest.max(copied.2);
        held += copied.2;
    }
    debug!(
        entries = entries.len(),
        jobs,
        longest_us = longest.as_micros() as u64,
        mean_us = (held / jobs).as_micros() as u64,
        "FDB copied out of the dataplane"
    );
    Ok(FdbListing { longest_job: longest, held, ..FdbListing::sorted(entries, names) })
}

/// `fdb show`'s reply, shaped as [`Response`] with an [`FdbResult`].
#[derive(Serialize)]
struct FdbReplyJson<'a> {
    ok: bool,
    result: FdbResultJson<'a>,
}

/// [`FdbResult`], serialized row by row.
#[derive(Serialize)]
struct FdbResultJson<'a> {
    entries: &'a FdbListing,
}

impl Serialize for FdbListing {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.entries.len()))?;
        for e in &self.entries {
            let port = match self.port_names.get(e.port.index()) {
                Some(name) => std::borrow::Cow::Borrowed(name.as_str()),
                None => std::borrow::Cow::Owned(e.port.to_string()),
            };
            seq.serialize_element(&FdbRowJson {
                age_secs: e.age.map(|a| a.as_secs()),
                mac: e.mac,
                port,
                kind: match e.kind {
                    EntryKind::Learned => "learned",
                    EntryKind::Static => "static",
                },
                vlan: e.vlan.get(),
            })?;
        }
        seq.end()
    }
}

/// One [`FdbRow`] as the other replies put it on the wire: through a `serde_json::Value`,
/// whose maps sort their keys, so the fields are declared in key order here.
#[derive(Serialize)]
struct FdbRowJson<'a> {
    age_secs: Option<u64>,
    #[serde(serialize_with = "serialize_display")]
    mac: MacAddr,
    port: std::borrow::Cow<'a, str>,
    #[serde(rename = "type")]
    kind: &'static str,
    vlan: u16,
}

fn serialize_display<S: serde::Serializer>(value: &MacAddr, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// What the control socket grants each client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Connections served at once; one more gets a [`BUSY`] error line and is closed.
    pub max_connections: usize,
    /// Longest request line, in bytes without the newline; a longer one gets an error line
    /// and the connection is closed.
    pub max_request: usize,
    /// Time a client has to send a whole request line, counted from connecting or from its
    /// last reply; then it gets an error line and is closed.
    pub read_timeout: Duration,
    /// Time a client has to take a reply, plus a second per [`REPLY_BYTES_PER_SEC`] of it;
    /// then it is closed.
    pub write_timeout: Duration,
}

impl Default for ClientLimits {
    fn default() -> ClientLimits {
        ClientLimits {
            max_connections: 64,
            max_request: MAX_REQUEST,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// How fast a client must at least take a large reply.
pub const REPLY_BYTES_PER_SEC: usize = 4 << 20;

/// How a refusal for lack of room starts: nothing was done, the client may try again.
pub const BUSY: &str = "busy:";

/// A bound control socket; the file is removed when this is dropped, if it is still the one
/// bound.
///
/// The daemon binds it at a hidden name beside its path ([`ControlServer::bind_hidden`]) and
/// moves it to its path only when the switch is ready ([`Publisher::publish`]): a script that
/// waits for the socket file finds a switch that forwards.
#[derive(Debug)]
pub struct ControlServer {
    listener: Option<UnixListener>,
    path: PathBuf,
    /// Where the socket waits, bound, until it is published.
    hidden: PathBuf,
    /// Device and inode of the socket file bound.
    bound: (u64, u64),
    limits: ClientLimits,
}

/// Moves a bound control socket from its hidden name to its path; see
/// [`ControlServer::publisher`].
#[derive(Debug, Clone)]
pub struct Publisher {
    path: PathBuf,
    hidden: PathBuf,
    bound: (u64, u64),
}

/// The hidden name a control socket at `path` is bound at until it is published: a dot file in
/// the same directory (so the move is a rename within one file system).
fn hidden_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.starting"))
}

impl Publisher {
    /// The path the socket goes to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the socket to its path, unless something appeared there since it was checked: a
    /// stale socket is replaced; anything else, or a socket another daemon answers on, is left
    /// alone and the socket stays hidden.
    pub fn publish(&self) -> io::Result<()> {
        remove_stale_socket(&self.path)?;
        let ours = fs::symlink_metadata(&self.hidden)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.bound);
        if !ours {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} is no longer the socket vswitchd bound", self.hidden.display()),
            ));
        }
        // A new name that refuses to replace anything, then the hidden one goes.
        fs::hard_link(&self.hidden, &self.path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot move the socket to {}: {e}", self.path.display())))?;
        let _ = fs::remove_file(&self.hidden);
        Ok(())
    }
}

/// What sits at a path, in words.
fn describe(file_type: fs::FileType) -> &'static str {
    if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_file() {
        "a regular file"
    } else {
        "a device or FIFO"
    }
}

impl ControlServer {
    /// Binds `path`, created with mode 0600. Fails if another daemon answers on it or if the
    /// path holds anything but a socket (which is left alone); a stale socket nobody answers on
    /// is replaced.
    pub fn bind(path: &Path) -> io::Result<ControlServer> {
        let server = ControlServer::bind_hidden(path)?;
        server.publisher().publish()?;
        Ok(server)
    }

    /// Checks `path` as [`ControlServer::bind`] does, then binds the socket (mode 0600) at a
    /// hidden name beside it, where no client looks; [`ControlServer::publisher`] moves it to
    /// `path` when the daemon is ready. A hidden socket left by a killed daemon is replaced.
    pub fn bind_hidden(path: &Path) -> io::Result<ControlServer> {
        let hidden = hidden_path(path);
        let named = |e: io::Error, what: &str| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| named(e, "cannot create the directory of"))?;
        }
        remove_stale_socket(path)?;
        remove_stale_socket(&hidden)?;
        let listener = bind_owner_only(&hidden).map_err(|e| named(e, "cannot bind the socket for"))?;
        let meta = fs::symlink_metadata(&hidden).map_err(|e| named(e, "cannot inspect the socket for"))?;
        if meta.permissions().mode() & 0o7777 != 0o600 {
            // A default ACL on the directory overrides the umask.
            fs::set_permissions(&hidden, fs::Permissions::from_mode(0o600))
                .map_err(|e| named(e, "cannot restrict the socket for"))?;
        }
        Ok(ControlServer {
            listener: Some(listener),
            path: path.to_path_buf(),
            hidden,
            bound: (meta.dev(), meta.ino()),
            limits: ClientLimits::default(),
        })
    }

    /// Binds the socket of a process taking over the daemon that answers at `path`
    /// (`vswitchd --takeover`): at a hidden name of its own beside it, leaving `path` alone
    /// until the old daemon has gone.
    pub fn bind_for_takeover(path: &Path) -> io::Result<ControlServer> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("ctl");
        let hidden = path.with_file_name(format!(".{name}.takeover"));
        let named = |e: io::Error, what: &str| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()));
        remove_stale_socket(&hidden)?;
        let listener = bind_owner_only(&hidden).map_err(|e| named(e, "cannot bind the socket for"))?;
        let meta = fs::symlink_metadata(&hidden).map_err(|e| named(e, "cannot inspect the socket for"))?;
        Ok(ControlServer {
            listener: Some(listener),
            path: path.to_path_buf(),
            hidden,
            bound: (meta.dev(), meta.ino()),
            limits: ClientLimits::default(),
        })
    }

    /// What moves the socket to its path (from any thread, once the daemon is ready).
    pub fn publisher(&self) -> Publisher {
        Publisher { path: self.path.clone(), hidden: self.hidden.clone(), bound: self.bound }
    }

    /// Serves clients within `limits` rather than the defaults.
    pub fn with_limits(mut self, limits: ClientLimits) -> ControlServer {
        self.limits = limits;
        self
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections on background threads: one accepts, one serves each client, up to
    /// [`ClientLimits::max_connections`] at once.
    pub fn serve(&mut self, switch: SwitchHandle) -> io::Result<()> {
        self.serve_with(switch, None)
    }

    /// As [`ControlServer::serve`], with live changes made by `changes`.
    pub fn serve_with(&mut self, switch: SwitchHandle, changes: Option<LiveChanges>) -> io::Result<()> {
        let Some(listener) = self.listener.take() else {
            return Ok(());
        };
        let limits = self.limits;
        thread::Builder::new()
            .name("ctl-accept".into())
            .spawn(move || accept_clients(&listener, &switch, changes, limits))?;
        Ok(())
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        for name in [&self.path, &self.hidden] {
            let ours =
                fs::symlink_metadata(name).is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.bound);
            if ours {
                let _ = fs::remove_file(name);
            }
        }
    }
}

/// Binds `path` so that only the owner may connect, from the first moment: the file is created
/// under a umask that leaves 0600. The umask is per process, so this is for startup, before
/// other threads create files.
fn bind_owner_only(path: &Path) -> io::Result<UnixListener> {
    // Two binds at once (tests run in parallel) must not restore each other's umask.
    static UMASK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = UMASK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let previous = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(previous);
    bound
}

/// Removes the socket at `path` if it is one and nothing answers on it; refuses anything else.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io::Error::new(e.kind(), format!("cannot inspect {}: {e}", path.display()))),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} is {}, not a socket: leaving it alone (remove it or choose another --socket)",
                path.display(),
                describe(meta.file_type())
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{} is in use: is another vswitchd running for this bridge?", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            let again = fs::symlink_metadata(path)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot inspect {}: {e}", path.display())))?;
            if !again.file_type().is_socket() || (again.dev(), again.ino()) != (meta.dev(), meta.ino()) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} changed while vswitchd checked it: leaving it alone", path.display()),
                ));
            }
            debug!(path = %path.display(), "removing a stale control socket");
            fs::remove_file(path)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot remove stale socket {}: {e}", path.display())))
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("{} is a socket that cannot be checked ({e}): leaving it alone", path.display()),
        )),
    }
}

/// A place among the connections being served; given back on drop.
#[derive(Debug)]
struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    /// A slot, if fewer than `max` are taken.
    fn take(taken: &Arc<AtomicUsize>, max: usize) -> Option<ConnectionSlot> {
        taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| ConnectionSlot(Arc::clone(taken)))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts clients for ever; each is served on a thread of its own while there is room, and
/// refused with one error line when there is not. Never waits on a client.
fn accept_clients(listener: &UnixListener, switch: &SwitchHandle, changes: Option<LiveChanges>, limits: ClientLimits) {
    let taken = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: the client stays queued; try again soon.
                warn!(error = %e, "control socket accept failed");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let Some(slot) = ConnectionSlot::take(&taken, limits.max_connections) else {
            debug!(max = limits.max_connections, "control client refused: too many connections");
            let text = format!("{BUSY} {} control connections are open; try again", limits.max_connections);
            let _ = stream.set_nonblocking(true); // a fresh socket's buffer takes one line
            let _ = Reply::error(text).write_line(&stream);
            continue;
        };
        let switch = switch.clone();
        let changes = changes.clone();
        let spawned = thread::Builder::new().name("ctl-conn".into()).spawn(move || {
            let _slot = slot;
            serve_connection(&stream, &switch, changes.as_ref(), limits);
        });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a control connection thread");
        }
    }
}

/// Cuts a byte stream into request lines of at most `max` bytes (not counting the newline).
/// Plain data: the caller reads and feeds it.
#[derive(Debug)]
struct LineSplitter {
    line: Vec<u8>,
    max: usize,
}

/// What [`LineSplitter::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// The line goes on past the bytes fed.
    NeedMore,
    /// A line ended: [`LineSplitter::line`] holds it.
    Line,
    /// The line is longer than allowed.
    TooLong,
}

impl LineSplitter {
    fn new(max: usize) -> LineSplitter {
        LineSplitter { line: Vec::new(), max }
    }

    /// Starts a new line.
    fn clear(&mut self) {
        self.line.clear();
    }

    /// Takes bytes from `input` up to the end of the current line; returns how many it used.
    fn feed(&mut self, input: &[u8]) -> (usize, Split) {
        let (body, used, ended) = match input.iter().position(|&b| b == b'\n') {
            Some(end) => (&input[..end], end + 1, true),
            None => (input, input.len(), false),
        };
        if self.line.len() + body.len() > self.max {
            return (used, Split::TooLong);
        }
        self.line.extend_from_slice(body);
        (used, if ended { Split::Line } else { Split::NeedMore })
    }

    /// The line (without its newline).
    fn line(&self) -> &[u8] {
        &self.line
    }
}

/// Why no request line came.
#[derive(Debug)]
enum ReadFailure {
    /// The client closed the connection between requests.
    Closed,
    /// The line went past the limit.
    TooLong,
    /// No whole line before the deadline.
    TimedOut,
    /// The socket failed.
    Io(io::Error),
}

/// Reads the next request line into `splitter` by `deadline`. A last line the client ended by
/// closing instead of a newline counts.
fn read_request(
    reader: &mut BufReader<&UnixStream>,
    splitter: &mut LineSplitter,
    deadline: Instant,
) -> Result<(), ReadFailure> {
    splitter.clear();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ReadFailure::TimedOut);
        }
        reader.get_ref().set_read_timeout(Some(remaining)).map_err(ReadFailure::Io)?;
        let input = match reader.fill_buf() {
            Ok(input) => input,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(ReadFailure::TimedOut);
            }
            Err(e) => return Err(ReadFailure::Io(e)),
        };
        if input.is_empty() {
            return if splitter.line().is_empty() { Err(ReadFailure::Closed) } else { Ok(()) };
        }
        let (used, split) = splitter.feed(input);
        reader.consume(used);
        match split {
            Split::NeedMore => {}
            Split::Line => return Ok(()),
            Split::TooLong => return Err(ReadFailure::TooLong),
        }
    }
}

/// Writes to a stream until a deadline, then fails with `TimedOut`.
#[derive(Debug)]
struct DeadlineWriter<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl Write for DeadlineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let late = || io::Error::new(io::ErrorKind::TimedOut, "the client did not take its reply in time");
        if remaining.is_zero() {
            return Err(late());
        }
        self.stream.set_write_timeout(Some(remaining))?;
        match (&mut &*self.stream).write(bytes) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(late()),
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes `reply` to `stream` within the time `limits` grant for its size.
fn send(stream: &UnixStream, reply: &Reply, limits: ClientLimits) -> io::Result<()> {
    let by =
        |len: usize| Instant::now() + limits.write_timeout + Duration::from_secs((len / REPLY_BYTES_PER_SEC) as u64);
    match reply {
        Reply::Whole(response) => {
            let mut line = serde_json::to_vec(response).map_err(io::Error::other)?;
            line.push(b'\n');
            DeadlineWriter { stream, deadline: by(line.len()) }.write_all(&line)
        }
        Reply::Fdb(listing) => {
            reply.write_line(DeadlineWriter { stream, deadline: by(listing.entries.len() * FDB_ROW_BYTES) })
        }
    }
}

/// Answers one client's requests in order until it closes, stalls, sends too much, or does not
/// take its replies.
fn serve_connection(stream: &UnixStream, switch: &SwitchHandle, changes: Option<&LiveChanges>, limits: ClientLimits) {
    let mut reader = BufReader::with_capacity(16 * 1024, stream);
    let mut splitter = LineSplitter::new(limits.max_request);
    // Blank lines do not buy time: the deadline moves on only with a reply.
    let mut deadline = Instant::now() + limits.read_timeout;
    loop {
        let refusal = match read_request(&mut reader, &mut splitter, deadline) {
            Ok(()) => None,
            Err(ReadFailure::Closed) => return,
            Err(ReadFailure::TooLong) => Some(format!("request longer than {} bytes; closing", limits.max_request)),
            Err(ReadFailure::TimedOut) => {
                Some(format!("no complete request line within {:?}; closing", limits.read_timeout))
            }
            Err(ReadFailure::Io(e)) => {
                debug!(error = %e, "control connection failed");
                return;
            }
        };
        if let Some(text) = refusal {
            debug!(reason = %text, "control client dropped");
            let _ = send(stream, &Reply::error(text), limits);
            return;
        }
        let Ok(text) = std::str::from_utf8(splitter.line()) else {
            let _ = send(stream, &Reply::error("request is not UTF-8; closing"), limits);
            return;
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if let (Some(changes), Ok(Request::Takeover {})) = (changes, serde_json::from_str::<Request>(text)) {
            match changes.hand_over(stream) {
                Ok(()) => {}
                Err(e) => {
                    warn!(error = %e, "takeover abandoned; carrying on");
                    let _ = send(stream, &Reply::error(format!("takeover refused: {e}")), limits);
                }
            }
            return;
        }
        if let Ok(Request::Capture { ports, drops, count }) = serde_json::from_str::<Request>(text) {
            crate::capture::serve(stream, switch, &ports, drops, count);
            return;
        }
        let reply = handle_line_with(text, switch, changes);
        if let Err(e) = send(stream, &reply, limits) {
            debug!(error = %e, "control client dropped while taking its reply");
            return;
        }
        deadline = Instant::now() + limits.read_timeout;
    }
}

/// How long [`request`] keeps trying while the daemon is [`BUSY`].
const BUSY_RETRY_FOR: Duration = Duration::from_secs(10);

/// Sends one request to the daemon at `path` and returns its reply. While the daemon refuses
/// for lack of room (having done nothing), tries again, for up to [`BUSY_RETRY_FOR`].
pub fn request(path: &Path, request: &Request) -> io::Result<Response> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        let response = request_once(path, request)?;
        let busy = !response.ok && response.error.as_deref().is_some_and(|e| e.starts_with(BUSY));
        if !busy || started.elapsed() >= BUSY_RETRY_FOR {
            return Ok(response);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

fn request_once(path: &Path, request: &Request) -> io::Result<Response> {
    let mut stream = UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect to {}: {e}", path.display())))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut text = serde_json::to_string(request).map_err(io::Error::other)?;
    text.push('\n');
    // A refusal may close the connection before the request is taken: its reply still counts.
    let sent = stream.write_all(text.as_bytes());
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        sent?;
    }
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
        let r: Request = serde_json::from_str(r#"{"command":"capture","ports":["a","b"],"count":3}"#).unwrap();
        assert_eq!(r, Request::Capture { ports: vec!["a".into(), "b".into()], drops: false, count: Some(3) });
    }

    #[test]
    fn malformed_requests_are_refused() {
        for bad in
            ["", "{", r#"{"command":"reboot"}"#, r#"{"command":"show","extra":1}"#, r#"{"command":"fdb-add"}"#, "[]"]
        {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad:?} accepted");
        }
    }

    use std::io::Read;
    use std::os::unix::fs::symlink;
    use std::sync::atomic::AtomicBool;

    use vswitchd_dataplane::fdb::FdbConfig;
    use vswitchd_dataplane::port::detached::DetachedPort;
    use vswitchd_dataplane::switch::{PortInfo, Switch};

    #[test]
    fn lines_are_cut_at_newlines_and_bounded() {
        let mut s = LineSplitter::new(8);
        assert_eq!(s.feed(b"ab"), (2, Split::NeedMore));
        assert_eq!(s.feed(b"c\nde\n"), (2, Split::Line), "stops at the first newline");
        assert_eq!(s.line(), b"abc");
        s.clear();
        assert_eq!(s.feed(b"de\n"), (3, Split::Line));
        assert_eq!(s.line(), b"de");
        s.clear();
        assert_eq!(s.feed(b"12345678\n"), (9, Split::Line), "exactly the limit is fine");
        s.clear();
        assert_eq!(s.feed(b"1234"), (4, Split::NeedMore));
        assert_eq!(s.feed(b"56789"), (5, Split::TooLong));
        s.clear();
        assert_eq!(s.feed(b"123456789\n"), (10, Split::TooLong), "a newline does not excuse a long line");
    }

    /// A fresh directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("vswitchd-ctl-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn bind_leaves_anything_but_a_socket_alone() {
        let dir = TempDir::new();
        let file = dir.0.join("file");
        fs::write(&file, "precious").unwrap();
        let directory = dir.0.join("dir");
        fs::create_dir(&directory).unwrap();
        let link = dir.0.join("link");
        symlink(&file, &link).unwrap();
        let dangling = dir.0.join("dangling");
        symlink(dir.0.join("nowhere"), &dangling).unwrap();
        for (path, what) in [
            (&file, "a regular file"),
            (&directory, "a directory"),
            (&link, "a symbolic link"),
            (&dangling, "a symbolic link"),
        ] {
            let before = fs::symlink_metadata(path).unwrap();
            let e = ControlServer::bind(path).expect_err(what);
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()) && text.contains(what), "{text}");
            let after = fs::symlink_metadata(path).unwrap();
            assert_eq!((after.ino(), after.file_type()), (before.ino(), before.file_type()), "{what} was replaced");
        }
        assert_eq!(fs::read_to_string(&file).unwrap(), "precious");
    }

    #[test]
    fn bind_replaces_a_stale_socket_but_not_a_live_one() {
        let dir = TempDir::new();
        let path = dir.0.join("ctl.sock");
        let live = UnixListener::bind(&path).unwrap();
        let e = ControlServer::bind(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        drop(live); // the file stays behind, and nobody answers on it
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
        let server = ControlServer::bind(&path).expect("a stale socket is replaced");
        assert!(UnixStream::connect(server.path()).is_ok());
    }

    #[test]
    fn the_socket_is_created_0600_whatever_the_umask() {
        let dir = TempDir::new();
        let path = dir.0.join("ctl.sock");
        // Under the most permissive umask, the file bind creates is the owner's alone before
        // anything changes its mode.
        let previous = umask(Mode::empty());
        let listener = bind_owner_only(&path);
        let restored = umask(previous);
        let _listener = listener.unwrap();
        assert_eq!(restored, Mode::empty(), "the umask was not restored");
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let other = dir.0.join("other.sock");
        let _server = ControlServer::bind(&other).unwrap();
        assert_eq!(fs::symlink_metadata(&other).unwrap().permissions().mode() & 0o7777, 0o600);
    }

    #[test]
    fn dropping_the_server_removes_only_its_own_socket() {
        let dir = TempDir::new();
        let path = dir.0.join("ctl.sock");
        drop(ControlServer::bind(&path).unwrap());
        assert!(fs::symlink_metadata(&path).is_err(), "the server's socket was left behind");
        let server = ControlServer::bind(&path).unwrap();
        let other = dir.0.join("other");
        fs::write(&other, "not yours").unwrap();
        fs::rename(&other, &path).unwrap();
        drop(server);
        assert_eq!(fs::read_to_string(&path).unwrap(), "not yours", "drop removed a file it did not create");
    }

    #[test]
    fn a_hidden_socket_reaches_its_path_only_when_published() {
        let dir = TempDir::new();
        let path = dir.0.join("ctl.sock");
        let server = ControlServer::bind_hidden(&path).unwrap();
        assert!(fs::symlink_metadata(&path).is_err(), "the socket is at its path before it is published");
        let listing: Vec<String> =
            fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(listing, vec![".ctl.sock.starting"], "the hidden socket is not beside its path");
        let hidden = dir.0.join(".ctl.sock.starting");
        assert_eq!(fs::symlink_metadata(&hidden).unwrap().permissions().mode() & 0o7777, 0o600);
        server.publisher().publish().unwrap();
        assert!(UnixStream::connect(&path).is_ok(), "nothing answers at the path once published");
        assert!(fs::symlink_metadata(&hidden).is_err(), "the hidden name outlived publishing");
        drop(server);
        assert!(fs::read_dir(&dir.0).unwrap().next().is_none(), "the socket outlived the server");
    }

    #[test]
    fn a_socket_path_still_checked_first_and_never_replaced_when_published() {
        let dir = TempDir::new();
        let path = dir.0.join("ctl.sock");
        fs::write(&path, "precious").unwrap();
        let e = ControlServer::bind_hidden(&path).unwrap_err();
        assert!(e.to_string().contains("a regular file, not a socket"), "{e}");
        assert!(fs::read_dir(&dir.0).unwrap().count() == 1, "a refused path left a hidden socket");
        fs::remove_file(&path).unwrap();
        // Something appears at the path while the daemon sets up: it stays, the socket stays
        // hidden, and dropping the server removes only the hidden socket.
        let server = ControlServer::bind_hidden(&path).unwrap();
        fs::write(&path, "precious").unwrap();
        let e = server.publisher().publish().unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        let live = dir.0.join("live.sock");
        let _other = UnixListener::bind(&live).unwrap();
        fs::rename(&live, &path).unwrap();
        let e = server.publisher().publish().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        drop(server);
        assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket(), "the other daemon's socket went");
        assert!(fs::symlink_metadata(dir.0.join(".ctl.sock.starting")).is_err(), "the hidden socket was left");
        // A hidden socket a killed daemon left is replaced; a stale one at the path too.
        fs::remove_file(&path).unwrap();
        drop(UnixListener::bind(dir.0.join(".ctl.sock.starting")).unwrap());
        drop(UnixListener::bind(&path).unwrap());
        let server = ControlServer::bind_hidden(&path).unwrap();
        server.publisher().publish().unwrap();
        assert!(UnixStream::connect(&path).is_ok());
    }

    /// A switch with two detached ports, running on a thread until dropped.
    struct RunningSwitch {
        handle: SwitchHandle,
        thread: Option<thread::JoinHandle<()>>,
    }

    impl RunningSwitch {
        fn start(max_learned: usize) -> RunningSwitch {
            let fdb = FdbConfig { aging: Duration::from_secs(3600), max_learned };
            let mut switch = Switch::new("ctl-test", fdb).unwrap();
            for name in ["p0", "p1"] {
                let info = PortInfo {
                    name: name.into(),
                    kind: "netdev".into(),
                    netns: None,
                    mtu: 1500,
                    vlan: Default::default(),
                };
                switch.add_port(info, Box::new(DetachedPort)).unwrap();
            }
            let handle = switch.handle();
            let thread = thread::spawn(move || switch.run().unwrap());
            RunningSwitch { handle, thread: Some(thread) }
        }

        /// Learns `count` MACs behind p0 and p1 (alternately), in VLANs 0 and 1.
        fn learn(&self, count: usize) {
            self.handle
                .call(
                    move |state, now| {
                        for i in 0..count {
                            let mac = MacAddr::from_bytes(&((0x02u64 << 40) | i as u64).to_be_bytes()[2..8]);
                            let vlan = VlanId::new((i % 2) as u16).unwrap();
                            state.bridge.fdb_mut().learn(vlan, mac, PortId((i % 3 == 0) as u16), now);
                        }
                    },
                    Duration::from_secs(120),
                )
                .unwrap();
        }
    }

    impl Drop for RunningSwitch {
        fn drop(&mut self) {
            let _ = self.handle.stop();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// A server on a fresh socket with `limits`, and the switch it answers from.
    fn serving(limits: ClientLimits) -> (TempDir, ControlServer, RunningSwitch) {
        let dir = TempDir::new();
        let switch = RunningSwitch::start(1000);
        let mut server = ControlServer::bind(&dir.0.join("ctl.sock")).unwrap().with_limits(limits);
        server.serve(switch.handle.clone()).unwrap();
        (dir, server, switch)
    }

    fn read_reply(stream: &UnixStream) -> Response {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    /// Whether the server has closed `stream`: after any reply, it reads end of file, or a reset
    /// if the server left part of a request unread; not a timeout.
    fn closed_by_server(stream: &UnixStream) -> bool {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        match (&mut &*stream).read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut),
        }
    }

    const SHOW: &[u8] = b"{\"command\":\"show\"}\n";

    #[test]
    fn idle_half_line_and_trickling_clients_are_dropped_at_the_read_deadline() {
        let limits = ClientLimits { read_timeout: Duration::from_millis(300), ..ClientLimits::default() };
        let (_dir, server, _switch) = serving(limits);
        let started = Instant::now();
        let idle = UnixStream::connect(server.path()).unwrap();
        let half = UnixStream::connect(server.path()).unwrap();
        (&half).write_all(b"{\"command\":").unwrap();
        let trickle = UnixStream::connect(server.path()).unwrap();
        let trickler = {
            let trickle = trickle.try_clone().unwrap();
            thread::spawn(move || {
                // A byte every 50 ms, never a newline: each read is quick, the line never ends.
                for _ in 0..60 {
                    if (&trickle).write_all(b" ").is_err() {
                        return;
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            })
        };
        for (stream, what) in [(&idle, "idle"), (&half, "half a line"), (&trickle, "trickling")] {
            let reply = read_reply(stream);
            assert!(
                !reply.ok && reply.error.as_deref().unwrap().contains("no complete request line"),
                "{what}: {reply:?}"
            );
            assert!(closed_by_server(stream), "{what}: still open");
        }
        let took = started.elapsed();
        println!("idle, half-line and trickling clients dropped within {took:?} (read timeout 300 ms)");
        assert!(took < Duration::from_secs(2), "took {took:?}");
        trickler.join().unwrap();
        // A client that keeps to the deadline is answered, and can come back for more.
        let good = UnixStream::connect(server.path()).unwrap();
        for _ in 0..2 {
            (&good).write_all(SHOW).unwrap();
            assert!(read_reply(&good).ok);
        }
    }

    #[test]
    fn clients_beyond_the_limit_are_told_busy_and_request_waits_for_room() {
        let limits =
            ClientLimits { max_connections: 2, read_timeout: Duration::from_millis(500), ..ClientLimits::default() };
        let (_dir, server, _switch) = serving(limits);
        let holders: Vec<_> = (0..2).map(|_| UnixStream::connect(server.path()).unwrap()).collect();
        thread::sleep(Duration::from_millis(50)); // both accepted
        let third = UnixStream::connect(server.path()).unwrap();
        let _ = (&third).write_all(SHOW);
        let reply = read_reply(&third);
        assert!(!reply.ok && reply.error.as_deref().unwrap().starts_with(BUSY), "{reply:?}");
        assert!(closed_by_server(&third));
        // request() retries until the holders are dropped at their read deadline.
        let started = Instant::now();
        let reply = request(server.path(), &Request::Show {}).unwrap();
        assert!(reply.ok, "{reply:?}");
        println!("a request waited {:?} for a connection slot", started.elapsed());
        drop(holders);
    }

    #[test]
    fn a_client_that_never_reads_is_dropped_and_does_not_hold_up_others() {
        let limits = ClientLimits { write_timeout: Duration::from_millis(300), ..ClientLimits::default() };
        let (_dir, server, _switch) = serving(limits);
        let deaf = UnixStream::connect(server.path()).unwrap();
        deaf.set_nonblocking(true).unwrap();
        let port_show = b"{\"command\":\"port-show\"}\n".repeat(100);
        let started = Instant::now();
        // Requests go in until both directions are full; then, nothing is read, the server's
        // reply write stalls, and at its deadline the server drops the client: writes fail.
        let dropped_after = loop {
            match (&deaf).write(&port_show) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(20)),
                Err(_) => break started.elapsed(),
            }
            let answered = Instant::now();
            let reply = request(server.path(), &Request::Show {}).unwrap();
            assert!(reply.ok);
            assert!(answered.elapsed() < Duration::from_secs(1), "show took {:?}", answered.elapsed());
            assert!(started.elapsed() < Duration::from_secs(5), "the deaf client is still served");
        };
        println!("a client that never reads was dropped {dropped_after:?} after it started (write timeout 300 ms)");
    }

    #[test]
    fn a_too_long_line_gets_an_error_and_the_connection_closes() {
        let limits = ClientLimits { max_request: 1024, ..ClientLimits::default() };
        let (_dir, server, _switch) = serving(limits);
        let client = UnixStream::connect(server.path()).unwrap();
        let writer = {
            let client = client.try_clone().unwrap();
            thread::spawn(move || (&client).write_all(&vec![b'x'; 1 << 20]).is_err())
        };
        let reply = read_reply(&client);
        assert!(!reply.ok && reply.error.as_deref().unwrap().contains("longer than 1024 bytes"), "{reply:?}");
        assert!(closed_by_server(&client));
        assert!(writer.join().unwrap(), "the server read the whole megabyte");
        // Exactly the limit is served.
        let client = UnixStream::connect(server.path()).unwrap();
        let padded = format!("{{\"command\":\"show\"}}{}\n", " ".repeat(1024 - 18));
        (&client).write_all(padded.as_bytes()).unwrap();
        assert!(read_reply(&client).ok);
    }

    /// `fdb show` as the whole-reply path answered it: rows built on the dataplane thread,
    /// turned into a `serde_json::Value`, serialized in a [`Response`].
    /// Returns the line and how long the dataplane thread was held.
    fn fdb_show_as_before(switch: &SwitchHandle, vlan: Option<u16>, port: Option<&str>) -> (String, Duration) {
        let port = port.map(str::to_string);
        let (value, held) = switch
            .call(
                move |state, now| {
                    let started = Instant::now();
                    let vlan = vlan.map(|v| VlanId::new(v).unwrap());
                    let port = port.map(|p| state.port_by_name(&p).unwrap().id);
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
                            port: state.ports[e.port.index()].info.name.clone(),
                            kind: if e.kind == EntryKind::Learned { "learned" } else { "static" }.into(),
                            age_secs: e.age.map(|a| a.as_secs()),
                        })
                        .collect();
                    (serde_json::to_value(FdbResult { entries }).unwrap(), started.elapsed())
                },
                Duration::from_secs(300),
            )
            .unwrap();
        (
            serde_json::to_string(&Response { ok: true, result: Some(value), error: None, refused: false }).unwrap()
                + "\n",
            held,
        )
    }

    fn reply_text(reply: &Reply) -> String {
        let mut out = Vec::new();
        reply.write_line(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn fdb_show_keeps_its_wire_form() {
        let switch = RunningSwitch::start(1000);
        switch.learn(40);
        switch
            .handle
            .call(
                |state, _| {
                    state.fdb_add_static(VlanId::new(7).unwrap(), "02:00:00:00:aa:01".parse().unwrap(), PortId(1))
                },
                DATAPLANE_TIMEOUT,
            )
            .unwrap()
            .unwrap();
        for (vlan, port, request) in [
            (None, None, r#"{"command":"fdb-show"}"#),
            (Some(1), None, r#"{"command":"fdb-show","vlan":1}"#),
            (None, Some("p1"), r#"{"command":"fdb-show","port":"p1"}"#),
            (Some(7), Some("p1"), r#"{"command":"fdb-show","vlan":7,"port":"p1"}"#),
        ] {
            let reply = handle_line(request, &switch.handle);
            assert!(matches!(reply, Reply::Fdb(_)), "{request}: {reply:?}");
            assert_eq!(reply_text(&reply), fdb_show_as_before(&switch.handle, vlan, port).0, "{request}");
        }
        let in_small_steps = Reply::Fdb(list_fdb_in_steps(None, None, &switch.handle, 3).unwrap());
        assert_eq!(reply_text(&in_small_steps), fdb_show_as_before(&switch.handle, None, None).0, "steps of 3 slots");
        let whole = switch
            .handle
            .call(|state, now| answer(&Request::FdbShow { vlan: None, port: None }, state, now), DATAPLANE_TIMEOUT)
            .unwrap();
        let whole = serde_json::to_string(&Response::from_result(whole)).unwrap() + "\n";
        assert_eq!(whole, fdb_show_as_before(&switch.handle, None, None).0, "answer() lists the same");
        let listed = reply_text(&handle_line(r#"{"command":"fdb-show"}"#, &switch.handle));
        assert!(
            listed.contains(r#"{"age_secs":null,"mac":"02:00:00:00:aa:01","port":"p1","type":"static","vlan":7}"#),
            "{listed}"
        );
        for bad in [r#"{"command":"fdb-show","port":"nope"}"#, r#"{"command":"fdb-show","vlan":5000}"#] {
            let text = reply_text(&handle_line(bad, &switch.handle));
            assert!(text.starts_with(r#"{"ok":false,"error":"#), "{bad}: {text}");
        }
    }

    #[test]
    fn an_entry_that_moves_during_a_stepped_copy_is_listed_once_as_it_is_now() {
        let switch = RunningSwitch::start(1000);
        switch.learn(8);
        let (listed, moved) = switch
            .handle
            .call(
                |state, now| {
                    let mut copied = Vec::new();
                    let next = copy_fdb_slots(state, now, (0, 4), None, None, &mut copied);
                    // The entry in slot 1 (already copied) goes, a newcomer takes its slot, and it
                    // comes back behind another port, in a slot not copied yet.
                    let moved = copied[1];
                    assert!(state.fdb_remove(moved.vlan, moved.mac));
                    let newcomer = MacAddr([0x02, 0, 0, 0, 0xee, 0xee]);
                    state.bridge.fdb_mut().learn(VlanId::NONE, newcomer, PortId(0), now);
                    state.bridge.fdb_mut().learn(moved.vlan, moved.mac, PortId(1 - moved.port.0), now);
                    // The entry in slot 5 (the sixth learned) goes for good.
                    let gone = (VlanId::new(1).unwrap(), MacAddr([0x02, 0, 0, 0, 0, 5]));
                    assert!(state.fdb_remove(gone.0, gone.1));
                    let mut next = next;
                    while let Some(from) = next {
                        next = copy_fdb_slots(state, now, (from, 4), None, None, &mut copied);
                    }
                    // Slots 0 to 3, then 4 and 6 to 8: the moved entry twice, the newcomer missed,
                    // the freed slot skipped.
                    assert_eq!(copied.len(), 8);
                    assert!(!copied.iter().any(|e| (e.vlan, e.mac) == gone), "a freed slot was listed");
                    (FdbListing::sorted(copied, port_names(state)), moved)
                },
                DATAPLANE_TIMEOUT,
            )
            .unwrap();
        assert_eq!(listed.entries().len(), 7, "each entry once");
        let now_listed: Vec<_> =
            listed.entries().iter().filter(|e| (e.vlan, e.mac) == (moved.vlan, moved.mac)).collect();
        assert_eq!(now_listed.len(), 1);
        assert_eq!(now_listed[0].port.0, 1 - moved.port.0, "listed where it was copied last");
    }

    /// Counts what is written to it.
    #[derive(Default)]
    struct CountingSink(usize);

    impl Write for CountingSink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_large_fdb_show_holds_the_dataplane_only_for_short_copies() {
        // A million in an optimized build (`cargo test --release`); fewer in a debug build,
        // where building the old reply for comparison alone takes seconds.
        const ENTRIES: usize = if cfg!(debug_assertions) { 200_000 } else { 1_000_000 };
        let switch = RunningSwitch::start(ENTRIES);
        let started = Instant::now();
        switch.learn(ENTRIES);
        println!("learned {ENTRIES} entries in {:?}", started.elapsed());
        println!("size of a copied entry: {} bytes", std::mem::size_of::<EntryView>());
        let (_, before) = fdb_show_as_before(&switch.handle, None, None);

        // A probe asks the dataplane for nothing every millisecond: its slowest answer is the
        // longest the dataplane was unavailable.
        let stop = Arc::new(AtomicBool::new(false));
        let probe = {
            let (handle, stop) = (switch.handle.clone(), Arc::clone(&stop));
            thread::spawn(move || {
                let mut slowest = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    handle.call(|_, _| (), Duration::from_secs(60)).unwrap();
                    slowest = slowest.max(asked.elapsed());
                    thread::sleep(Duration::from_millis(1));
                }
                slowest
            })
        };
        thread::sleep(Duration::from_millis(20));
        let started = Instant::now();
        let reply = handle_line(r#"{"command":"fdb-show"}"#, &switch.handle);
        let listed = started.elapsed();
        let mut sink = CountingSink::default();
        reply.write_line(&mut sink).unwrap();
        let written = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        let stalled = probe.join().unwrap();

        let Reply::Fdb(listing) = &reply else { panic!("{reply:?}") };
        assert_eq!(listing.entries().len(), ENTRIES);
        assert!(
            listing.entries().windows(2).all(|w| (w[0].port, w[0].vlan, w[0].mac) < (w[1].port, w[1].vlan, w[1].mac))
        );
        println!(
            "fdb show of {ENTRIES} entries: building the reply on the dataplane thread (as before) held it \
             {before:?}; copying it out in steps of {FDB_SLOTS_PER_JOB} slots held it {:?} a step on average, at most {:?}, \
             and a probe found it unavailable at most {stalled:?} at a time; listing ready in {listed:?}, {} MB of JSON written in {written:?}",
            listing.held() / ENTRIES.div_ceil(FDB_SLOTS_PER_JOB) as u32,
            listing.longest_job(),
            sink.0 >> 20
        );
        assert!(listing.longest_job() < before / 100, "a step held the dataplane for {:?}", listing.longest_job());
        assert!(stalled < before / 4, "the dataplane was unavailable for {stalled:?}");
    }
}
