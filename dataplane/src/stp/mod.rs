//! The spanning tree (802.1D-2004 clause 17, RSTP, with 802.1D STP compatibility) as plain
//! data: BPDUs in, time passed in; port roles, port states, BPDUs to send and FDB flushes out.
//!
//! The clause's state machines are folded into one recomputation run after every received
//! BPDU, link change and expired timer, which yields the same outcome for a bridge whose
//! changes are applied atomically (every port's new state takes effect in the same job):
//! - received information is recorded per port (superior, repeated or inferior designated
//!   information, or a root/alternate port's agreement) and ages out after three of the
//!   sender's hello times (`rcvdInfoWhile`);
//! - role selection (`updtRolesTree`): the best root path priority vector names the root port;
//!   a port whose designated priority vector is better than the one received becomes
//!   designated, otherwise alternate (or backup, when the better information is our own);
//! - port states: alternate, backup and disabled ports discard at once; a root port forwards
//!   at once (RSTP: the old root port stopped in the same step); an edge port forwards at once;
//!   a designated port proposes and forwards on its peer's agreement, or after twice the
//!   forward delay toward a legacy bridge or without agreement; a root port that receives a
//!   proposal puts its designated ports that are not agreed to discarding (sync) and agrees;
//! - protocol migration per port: a Configuration BPDU or TCN received after the migration
//!   delay switches the port to sending 802.1D BPDUs, an RST BPDU switches it back;
//! - topology change: a non-edge port that starts forwarding, or a TC (flag or TCN) received,
//!   flushes the learned entries of the other ports and sends TC on the other root and
//!   designated ports for a while; toward a legacy bridge a root port sends TCNs until
//!   acknowledged, and a designated port acknowledges TCNs;
//! - BPDU guard: a BPDU on a guarded port disables the port until its link goes down and up.

use std::time::Duration;

use serde::Serialize;

use crate::PortId;
use crate::time::Instant;
use crate::verdict::DropReason;
use crate::wire::MacAddr;
use crate::wire::bpdu::{Bpdu, BpduError, BpduKind, BpduRole, FRAME_LEN, flags};

#[cfg(test)]
mod tests;

/// Which protocol the bridge speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StpMode {
    /// Rapid Spanning Tree (802.1D-2004), falling back to STP per port.
    Rstp,
    /// 802.1D-1998 STP only (Force Protocol Version 0).
    Stp,
}

impl StpMode {
    /// The name the topology file uses.
    pub fn name(self) -> &'static str {
        match self {
            StpMode::Rstp => "rstp",
            StpMode::Stp => "stp",
        }
    }
}

/// The bridge's spanning tree settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StpConfig {
    /// RSTP or STP.
    pub mode: StpMode,
    /// Bridge priority (a multiple of 4096 by the standard; 0..=61440).
    pub priority: u16,
    /// The bridge's address (the low 48 bits of its identifier).
    pub mac: MacAddr,
    /// Hello time (whole seconds, 1..=10).
    pub hello: Duration,
    /// Forward delay (whole seconds).
    pub forward_delay: Duration,
    /// Max age (whole seconds).
    pub max_age: Duration,
}

impl StpConfig {
    /// The defaults of 802.1D-2004: priority 32768, hello 2 s, forward delay 15 s, max age 20 s.
    pub fn new(mode: StpMode, mac: MacAddr) -> StpConfig {
        StpConfig {
            mode,
            priority: 32768,
            mac,
            hello: Duration::from_secs(2),
            forward_delay: Duration::from_secs(15),
            max_age: Duration::from_secs(20),
        }
    }

    /// The bridge identifier: priority in the top 16 bits, the address below.
    pub fn bridge_id(&self) -> u64 {
        (u64::from(self.priority) << 48) | self.mac.to_u64()
    }
}

/// A port's spanning tree settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StpPortConfig {
    /// Path cost (1..=200000000).
    pub cost: u32,
    /// Port priority (a multiple of 16, 0..=240).
    pub priority: u8,
    /// An edge port (a host, not a bridge, behind it): forwards at once, until a BPDU arrives.
    pub edge: bool,
    /// A BPDU received disables the port.
    pub bpdu_guard: bool,
}

/// 802.1D-2004's recommended path cost for 1 Gb/s, used when a port sets none.
pub const DEFAULT_PORT_COST: u32 = 20_000;

impl Default for StpPortConfig {
    fn default() -> Self {
        StpPortConfig { cost: DEFAULT_PORT_COST, priority: 128, edge: false, bpdu_guard: false }
    }
}

/// A port's role in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Its link is down, or BPDU guard disabled it.
    Disabled,
    /// The way to the root.
    Root,
    /// The way to the root for the LAN on it.
    Designated,
    /// Another way to the root, blocked.
    Alternate,
    /// A second attachment to a LAN this bridge is designated for, blocked.
    Backup,
}

/// A port's forwarding state, which the bridge applies to frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    /// Neither learns nor forwards.
    Discarding,
    /// Learns sources but forwards nothing.
    Learning,
    /// Learns and forwards.
    Forwarding,
}

/// Something the switch must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StpEvent {
    /// Port `port`'s forwarding state is now `state`.
    State {
        /// The port.
        port: PortId,
        /// Its new state.
        state: PortState,
    },
    /// Forget what was learned behind `port` (a topology change).
    Flush {
        /// The port.
        port: PortId,
    },
    /// A BPDU arrived on BPDU-guarded `port`: it is disabled.
    GuardTripped {
        /// The port.
        port: PortId,
    },
    /// The root bridge changed.
    NewRoot {
        /// The new root's identifier.
        root: u64,
    },
}

/// A priority vector: root, cost to it, designated bridge, designated port (lower is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
struct Vector {
    root: u64,
    cost: u32,
    bridge: u64,
    port: u16,
}

/// Timer values carried in BPDUs, in 1/256 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Times {
    message_age: u16,
    max_age: u16,
    hello: u16,
    forward_delay: u16,
}

fn ticks(d: Duration) -> u16 {
    u16::try_from(d.as_secs().saturating_mul(256)).unwrap_or(u16::MAX)
}

fn duration(ticks: u16) -> Duration {
    Duration::from_millis(u64::from(ticks) * 1000 / 256)
}

/// Where a port's priority vector came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Info {
    /// The port is disabled.
    Disabled,
    /// Received information expired (or none yet): the port will be designated.
    Aged,
    /// Our own designated information.
    Mine,
    /// From the designated bridge on the LAN.
    Received,
}

/// How long after a port is enabled or switches protocol it may switch again (MigrateTime).
const MIGRATE_TIME: Duration = Duration::from_secs(3);
/// BPDUs a port may send per second (TxHoldCount).
const TX_HOLD_COUNT: u32 = 6;

/// One port's spanning tree state.
#[derive(Debug, Clone)]
pub struct StpPort {
    id: PortId,
    config: StpPortConfig,
    link_up: bool,
    guard_tripped: bool,
    role: Role,
    state: PortState,
    info: Info,
    vector: Vector,
    times: Times,
    rcvd_until: Instant,
    oper_edge: bool,
    send_rstp: bool,
    mdelay_until: Instant,
    /// Forward delay timer running toward the next state (designated, or root under STP).
    fd_until: Option<Instant>,
    proposing: bool,
    proposed: bool,
    agreed: bool,
    /// Send an agreement in the next BPDU.
    agree: bool,
    tc_until: Option<Instant>,
    /// Send a TC acknowledgment in the next Configuration BPDU.
    tc_ack: bool,
    /// The last BPDU received had the TC flag (act on its rising edge only).
    rcvd_tc: bool,
    tx_pending: bool,
    next_hello: Instant,
    tx_count: u32,
    tx_second: u64,
    /// BPDUs received.
    pub bpdus_rx: u64,
    /// BPDUs sent.
    pub bpdus_tx: u64,
    /// Times the port started forwarding.
    pub forward_transitions: u64,
}

impl StpPort {
    /// The port.
    pub fn id(&self) -> PortId {
        self.id
    }

    /// Its settings.
    pub fn config(&self) -> StpPortConfig {
        self.config
    }

    /// Its role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Its state.
    pub fn state(&self) -> PortState {
        self.state
    }

    /// Whether it is an edge port now (configured edge and no BPDU received since).
    pub fn oper_edge(&self) -> bool {
        self.oper_edge
    }

    /// Whether BPDU guard has disabled it.
    pub fn guard_tripped(&self) -> bool {
        self.guard_tripped
    }

    /// Whether it sends RST BPDUs (else 802.1D Configuration BPDUs: a legacy bridge is there).
    pub fn sends_rstp(&self) -> bool {
        self.send_rstp
    }

    /// The designated bridge on its LAN.
    pub fn designated_bridge(&self) -> u64 {
        self.vector.bridge
    }

    /// The port identifier (priority and number) as BPDUs carry it.
    pub fn port_id(&self) -> u16 {
        (u16::from(self.config.priority >> 4) << 12) | ((self.id.index() as u16 + 1) & 0x0fff)
    }
}

/// The bridge's spanning tree.
#[derive(Debug, Clone)]
pub struct Stp {
    config: StpConfig,
    ports: Vec<Option<StpPort>>,
    root: Vector,
    root_port: Option<PortId>,
    root_times: Times,
    events: Vec<StpEvent>,
    /// BPDUs received on a guarded port (each one disabled it, or found it disabled).
    pub guard_trips: u64,
    /// Topology changes detected or received.
    pub topology_changes: u64,
    /// When the last topology change was detected or received.
    pub last_topology_change: Option<Instant>,
    /// Something changed since the last [`Stp::transmit`]: BPDUs may be due.
    dirty: bool,
}

impl Stp {
    /// A spanning tree with no ports.
    pub fn new(config: StpConfig) -> Stp {
        let own = Stp::own_vector(&config);
        Stp {
            root_times: Stp::own_times(&config),
            config,
            ports: Vec::new(),
            root: own,
            root_port: None,
            events: Vec::new(),
            guard_trips: 0,
            topology_changes: 0,
            last_topology_change: None,
            dirty: true,
        }
    }

    fn own_vector(config: &StpConfig) -> Vector {
        Vector { root: config.bridge_id(), cost: 0, bridge: config.bridge_id(), port: 0 }
    }

    fn own_times(config: &StpConfig) -> Times {
        Times {
            message_age: 0,
            max_age: ticks(config.max_age),
            hello: ticks(config.hello),
            forward_delay: ticks(config.forward_delay),
        }
    }

    /// The settings.
    pub fn config(&self) -> &StpConfig {
        &self.config
    }

    /// This bridge's identifier.
    pub fn bridge_id(&self) -> u64 {
        self.config.bridge_id()
    }

    /// The root bridge's identifier.
    pub fn root_id(&self) -> u64 {
        self.root.root
    }

    /// The cost from this bridge to the root.
    pub fn root_path_cost(&self) -> u32 {
        self.root.cost
    }

    /// The root port (none on the root bridge).
    pub fn root_port(&self) -> Option<PortId> {
        self.root_port
    }

    /// The ports, in id order.
    pub fn ports(&self) -> impl Iterator<Item = &StpPort> {
        self.ports.iter().flatten()
    }

    /// Port `id`.
    pub fn port(&self, id: PortId) -> Option<&StpPort> {
        self.ports.get(id.index()).and_then(Option::as_ref)
    }

    fn port_mut(&mut self, id: PortId) -> Option<&mut StpPort> {
        self.ports.get_mut(id.index()).and_then(Option::as_mut)
    }

    /// What the switch must do since the last call.
    pub fn take_events(&mut self) -> Vec<StpEvent> {
        std::mem::take(&mut self.events)
    }

    /// Changes the bridge's settings at `now` (the tree is recomputed).
    pub fn set_config(&mut self, config: StpConfig, now: Instant) {
        self.config = config;
        for port in self.ports.iter_mut().flatten() {
            port.tx_pending = true;
            if !port.send_rstp && config.mode == StpMode::Rstp {
                port.send_rstp = true;
                port.mdelay_until = now + MIGRATE_TIME;
            }
            if config.mode == StpMode::Stp {
                port.send_rstp = false;
            }
        }
        self.recompute(now);
    }

    /// Adds port `id` at `now`, its link `up` or not. It starts discarding, unless it is an
    /// edge port.
    pub fn add_port(&mut self, id: PortId, config: StpPortConfig, up: bool, now: Instant) {
        if self.ports.len() <= id.index() {
            self.ports.resize(id.index() + 1, None);
        }
        self.ports[id.index()] = Some(StpPort {
            id,
            config,
            link_up: up,
            guard_tripped: false,
            role: Role::Disabled,
            state: PortState::Discarding,
            info: if up { Info::Aged } else { Info::Disabled },
            vector: Vector::default(),
            times: Times::default(),
            rcvd_until: now,
            oper_edge: config.edge,
            send_rstp: self.config.mode == StpMode::Rstp,
            mdelay_until: now + MIGRATE_TIME,
            fd_until: None,
            proposing: false,
            proposed: false,
            agreed: false,
            agree: false,
            tc_until: None,
            tc_ack: false,
            rcvd_tc: false,
            tx_pending: true,
            next_hello: now,
            tx_count: 0,
            tx_second: 0,
            bpdus_rx: 0,
            bpdus_tx: 0,
            forward_transitions: 0,
        });
        self.recompute(now);
    }

    /// Changes port `id`'s settings.
    pub fn set_port_config(&mut self, id: PortId, config: StpPortConfig, now: Instant) {
        let Some(port) = self.port_mut(id) else { return };
        if port.config.edge != config.edge {
            port.oper_edge = config.edge;
        }
        port.config = config;
        port.tx_pending = true;
        self.recompute(now);
    }

    /// Removes port `id`.
    pub fn remove_port(&mut self, id: PortId, now: Instant) {
        if let Some(slot) = self.ports.get_mut(id.index()) {
            *slot = None;
        }
        if self.root_port == Some(id) {
            self.root_port = None;
        }
        self.recompute(now);
    }

    /// Records port `id`'s link. A port whose link comes back is enabled again even if BPDU
    /// guard disabled it.
    pub fn set_link(&mut self, id: PortId, up: bool, now: Instant) {
        let mode = self.config.mode;
        let Some(port) = self.port_mut(id) else { return };
        if port.link_up == up {
            return;
        }
        port.link_up = up;
        if up {
            port.guard_tripped = false;
            port.info = Info::Aged;
            port.oper_edge = port.config.edge;
            port.send_rstp = mode == StpMode::Rstp;
            port.mdelay_until = now + MIGRATE_TIME;
            port.tx_pending = true;
            port.next_hello = now;
        }
        self.recompute(now);
    }

    /// Takes a BPDU frame received on port `id` at `now`. Returns the drop reason to count it
    /// under if it was malformed, or refused.
    pub fn receive(&mut self, id: PortId, frame: &[u8], now: Instant) -> Result<(), DropReason> {
        let bpdu = Bpdu::parse(frame).map_err(|e| match e {
            BpduError::NotBpdu | BpduError::Malformed => DropReason::BadBpdu,
        })?;
        let mode = self.config.mode;
        let Some(port) = self.port_mut(id) else { return Err(DropReason::NotBridgePort) };
        port.bpdus_rx += 1;
        if port.config.bpdu_guard {
            let newly = !port.guard_tripped;
            port.guard_tripped = true;
            self.guard_trips += 1;
            if newly {
                self.events.push(StpEvent::GuardTripped { port: id });
                self.recompute(now);
            }
            return Err(DropReason::BpduGuard);
        }
        if !port.link_up || port.guard_tripped {
            return Ok(());
        }
        port.oper_edge = false;
        // Protocol migration (the Port Protocol Migration machine).
        if mode == StpMode::Rstp && now >= port.mdelay_until {
            let legacy = bpdu.kind != BpduKind::Rst;
            if legacy == port.send_rstp {
                port.send_rstp = !legacy;
                port.mdelay_until = now + MIGRATE_TIME;
                port.tx_pending = true;
            }
        }
        let mut tc_received = false;
        if bpdu.kind == BpduKind::Tcn {
            if port.role == Role::Designated {
                port.tc_ack = true;
                port.tx_pending = true;
                tc_received = true;
            }
        } else {
            // Our own BPDU looped back (two ports on one LAN) is information like any other:
            // it makes the worse port a backup.
            let msg =
                Vector { root: bpdu.root_id, cost: bpdu.root_path_cost, bridge: bpdu.bridge_id, port: bpdu.port_id };
            let times = Times {
                message_age: bpdu.message_age,
                max_age: bpdu.max_age,
                hello: bpdu.hello_time,
                forward_delay: bpdu.forward_delay,
            };
            let role = bpdu.role();
            let designated_msg = matches!(role, BpduRole::Designated | BpduRole::Unknown);
            if designated_msg {
                // Superior information, or the designated bridge's own (repeated or changed);
                // anything goes once what the port held has aged out.
                let same_sender =
                    port.info == Info::Received && port.vector.bridge == msg.bridge && port.vector.port == msg.port;
                let superior = matches!(port.info, Info::Aged | Info::Disabled) || msg < port.vector || same_sender;
                if superior {
                    if msg != port.vector || port.info != Info::Received {
                        port.agreed = false;
                    }
                    port.vector = msg;
                    port.times = times;
                    port.info = Info::Received;
                    let hello = duration(times.hello).max(Duration::from_secs(1));
                    port.rcvd_until = if times.message_age >= times.max_age { now } else { now + hello * 3 };
                    if bpdu.kind == BpduKind::Rst && bpdu.flags & flags::PROPOSAL != 0 {
                        port.proposed = true;
                    }
                } else if port.info == Info::Mine {
                    // Inferior information from another bridge: we are designated and say so.
                    port.tx_pending = true;
                }
            } else if bpdu.kind == BpduKind::Rst
                && bpdu.flags & flags::AGREEMENT != 0
                && port.role == Role::Designated
                && port.info == Info::Mine
                && msg.root == port.vector.root
            {
                // A root or alternate port's agreement to our proposal.
                port.agreed = true;
                port.proposing = false;
            }
            if bpdu.flags & flags::TC_ACK != 0 && bpdu.kind == BpduKind::Config && port.role == Role::Root {
                // The legacy designated bridge acknowledged our TCNs: stop sending them.
                port.tc_until = None;
            }
            let tc = bpdu.flags & flags::TC != 0;
            if tc && !port.rcvd_tc && matches!(port.role, Role::Root | Role::Designated) {
                tc_received = true;
            }
            port.rcvd_tc = tc;
        }
        if tc_received {
            self.propagate_tc(id, now);
        }
        self.recompute(now);
        Ok(())
    }

    /// A topology change came in on (or was detected on) `from`: every other port forgets
    /// what it learned, and the other root and designated ports tell their LANs.
    fn propagate_tc(&mut self, from: PortId, now: Instant) {
        self.topology_changes += 1;
        self.last_topology_change = Some(now);
        let long = duration(self.root_times.max_age) + duration(self.root_times.forward_delay);
        let short = duration(self.root_times.hello) * 2;
        for port in self.ports.iter_mut().flatten() {
            if port.id == from || port.oper_edge || !matches!(port.role, Role::Root | Role::Designated) {
                continue;
            }
            self.events.push(StpEvent::Flush { port: port.id });
            port.tc_until = Some(now + if port.send_rstp { short } else { long });
            port.tx_pending = true;
        }
    }

    /// Runs the timers due at `now` (call it at [`Stp::next_deadline`] or later).
    pub fn tick(&mut self, now: Instant) {
        self.recompute(now);
    }

    /// When [`Stp::tick`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        for port in self.ports.iter().flatten() {
            if !port.link_up || port.guard_tripped {
                continue;
            }
            if port.info == Info::Received {
                at(port.rcvd_until);
            }
            if let Some(t) = port.fd_until {
                at(t);
            }
            if let Some(t) = port.tc_until {
                at(t);
            }
            if port.role == Role::Designated || port.tx_pending || port.tc_until.is_some() {
                at(port.next_hello);
            }
            if port.tx_pending {
                let second = Instant::from_secs(port.tx_second + 1);
                at(second);
            }
        }
        next
    }

    /// The BPDUs due at `now` from address `source`, with the port each goes out of.
    pub fn transmit(&mut self, now: Instant, source: MacAddr, out: &mut Vec<(PortId, [u8; FRAME_LEN])>) {
        self.dirty = false;
        let bridge_id = self.config.bridge_id();
        let own_hello = self.config.hello;
        let root = self.root;
        let root_times = self.root_times;
        let is_root = self.root_port.is_none();
        let mode = self.config.mode;
        for port in self.ports.iter_mut().flatten() {
            if !port.link_up || port.guard_tripped || port.role == Role::Disabled {
                continue;
            }
            if now >= port.next_hello {
                port.next_hello = now + own_hello;
                let tcn_due = !port.send_rstp && port.role == Role::Root && port.tc_until.is_some();
                if port.role == Role::Designated || tcn_due || (port.send_rstp && port.tc_until.is_some()) {
                    port.tx_pending = true;
                }
            }
            if !port.tx_pending {
                continue;
            }
            let second = now.as_nanos() / 1_000_000_000;
            if port.tx_second != second {
                port.tx_second = second;
                port.tx_count = 0;
            }
            if port.tx_count >= TX_HOLD_COUNT {
                continue;
            }
            let tc = port.tc_until.is_some();
            let bpdu = if port.send_rstp && mode == StpMode::Rstp {
                let role = match port.role {
                    Role::Root => BpduRole::Root,
                    Role::Designated => BpduRole::Designated,
                    Role::Alternate | Role::Backup => BpduRole::AlternateBackup,
                    Role::Disabled => continue,
                };
                let mut f = 0;
                if tc {
                    f |= flags::TC;
                }
                if port.proposing && port.role == Role::Designated {
                    f |= flags::PROPOSAL;
                }
                if port.agree {
                    f |= flags::AGREEMENT;
                }
                match port.state {
                    PortState::Learning => f |= flags::LEARNING,
                    PortState::Forwarding => f |= flags::LEARNING | flags::FORWARDING,
                    PortState::Discarding => {}
                }
                // Root and alternate ports speak only to agree or to pass a TC on.
                if port.role != Role::Designated && !port.agree && !tc {
                    port.tx_pending = false;
                    continue;
                }
                port.agree = false;
                Some(
                    Stp::config_bpdu(BpduKind::Rst, f, root, bridge_id, port.port_id(), root_times, is_root)
                        .with_role(role),
                )
            } else if port.role == Role::Designated {
                let mut f = 0;
                if tc {
                    f |= flags::TC;
                }
                if std::mem::take(&mut port.tc_ack) {
                    f |= flags::TC_ACK;
                }
                Some(Stp::config_bpdu(BpduKind::Config, f, root, bridge_id, port.port_id(), root_times, is_root))
            } else if port.role == Role::Root && tc {
                // Toward a legacy designated bridge, a TC goes up as TCNs until acknowledged.
                Some(Stp::config_bpdu(BpduKind::Tcn, 0, root, 0, 0, root_times, true))
            } else {
                None
            };
            port.tx_pending = false;
            if let Some(bpdu) = bpdu {
                port.tx_count += 1;
                port.bpdus_tx += 1;
                out.push((port.id, bpdu.emit(source)));
            }
        }
    }

    fn config_bpdu(kind: BpduKind, f: u8, root: Vector, bridge: u64, port: u16, times: Times, is_root: bool) -> Bpdu {
        Bpdu {
            kind,
            flags: f,
            root_id: root.root,
            root_path_cost: root.cost,
            bridge_id: bridge,
            port_id: port,
            message_age: if is_root { 0 } else { times.message_age.saturating_add(256) },
            max_age: times.max_age,
            hello_time: times.hello,
            forward_delay: times.forward_delay,
        }
    }

    /// Whether [`Stp::transmit`] may have BPDUs to send now without a deadline having passed:
    /// something changed since it last ran.
    pub fn wants_transmit(&self) -> bool {
        self.dirty
    }

    /// Ages received information, selects roles and moves port states, recording events.
    fn recompute(&mut self, now: Instant) {
        self.dirty = true;
        let bridge_id = self.config.bridge_id();
        let own_mac = self.config.mac.to_u64();
        // Received information that expired.
        for port in self.ports.iter_mut().flatten() {
            let enabled = port.link_up && !port.guard_tripped;
            if !enabled {
                port.info = Info::Disabled;
            } else if port.info == Info::Disabled {
                port.info = Info::Aged;
            }
            if port.info == Info::Received && now >= port.rcvd_until {
                port.info = Info::Aged;
                port.tx_pending = true;
            }
            if let Some(t) = port.tc_until {
                if now >= t {
                    port.tc_until = None;
                }
            }
        }
        // The root path priority vectors.
        let mut best = Stp::own_vector(&self.config);
        let mut best_key = (best, 0u16);
        let mut root_port = None;
        for port in self.ports.iter().flatten() {
            if port.info != Info::Received || port.vector.bridge & 0xffff_ffff_ffff == own_mac {
                continue;
            }
            let candidate = Vector { cost: port.vector.cost.saturating_add(port.config.cost), ..port.vector };
            let key = (candidate, port.port_id());
            if key < best_key {
                best_key = key;
                best = candidate;
                root_port = Some(port.id);
            }
        }
        if best.root != self.root.root {
            self.events.push(StpEvent::NewRoot { root: best.root });
        }
        self.root = Vector { bridge: bridge_id, port: 0, ..best };
        self.root_port = root_port;
        self.root_times = match root_port.and_then(|id| self.port(id)) {
            Some(p) => p.times,
            None => Stp::own_times(&self.config),
        };
        let times = self.root_times;
        let root = self.root;
        // Roles.
        let mut proposal_on_root = false;
        for port in self.ports.iter_mut().flatten() {
            let designated = Vector { root: root.root, cost: root.cost, bridge: bridge_id, port: port.port_id() };
            let role = match port.info {
                Info::Disabled => Role::Disabled,
                _ if Some(port.id) == root_port => Role::Root,
                Info::Received if port.vector <= designated => {
                    if port.vector.bridge == bridge_id {
                        Role::Backup
                    } else {
                        Role::Alternate
                    }
                }
                Info::Received | Info::Aged | Info::Mine => {
                    // An agreement holds for the priority vector it answered (times that
                    // drift, as a legacy root's message age does, do not void it).
                    if port.info != Info::Mine || port.vector != designated {
                        port.agreed = false;
                        port.tx_pending = true;
                    }
                    port.info = Info::Mine;
                    port.vector = designated;
                    port.times = times;
                    Role::Designated
                }
            };
            if role != port.role {
                port.role = role;
                port.tx_pending = true;
                port.proposing = false;
                port.fd_until = None;
                if role != Role::Designated {
                    port.agreed = false;
                }
            }
            if role == Role::Root && port.proposed {
                proposal_on_root = true;
            }
            if matches!(role, Role::Alternate | Role::Backup) && port.proposed {
                // A discarding port agrees at once.
                port.proposed = false;
                port.agree = true;
                port.tx_pending = true;
            }
        }
        let rstp = self.config.mode == StpMode::Rstp;
        // Sync: a proposal on the root port puts the designated ports that have no agreement
        // for the current information to discarding before the root port agrees.
        if proposal_on_root && rstp {
            for port in self.ports.iter_mut().flatten() {
                if port.role == Role::Root {
                    port.proposed = false;
                    port.agree = true;
                    port.tx_pending = true;
                } else if port.role == Role::Designated && !port.oper_edge && !port.agreed {
                    port.fd_until = None;
                    port.proposing = false;
                    Stp::set_state(&mut self.events, port, PortState::Discarding);
                }
            }
        }
        // States.
        let fwd_delay = duration(times.forward_delay).max(Duration::from_secs(1));
        let mut detected = Vec::new();
        for port in self.ports.iter_mut().flatten() {
            let target = match port.role {
                Role::Disabled | Role::Alternate | Role::Backup => Some(PortState::Discarding),
                Role::Root if rstp => Some(PortState::Forwarding),
                Role::Designated if port.oper_edge => Some(PortState::Forwarding),
                Role::Designated if rstp && port.send_rstp && port.agreed => Some(PortState::Forwarding),
                Role::Root | Role::Designated => {
                    if port.state == PortState::Forwarding {
                        None
                    } else {
                        if port.role == Role::Designated && rstp && port.send_rstp && !port.proposing {
                            port.proposing = true;
                            port.tx_pending = true;
                        }
                        match port.fd_until {
                            None => {
                                port.fd_until = Some(now + fwd_delay);
                                None
                            }
                            Some(t) if now >= t => {
                                port.fd_until = Some(now + fwd_delay);
                                Some(if port.state == PortState::Discarding {
                                    PortState::Learning
                                } else {
                                    PortState::Forwarding
                                })
                            }
                            Some(_) => None,
                        }
                    }
                }
            };
            if let Some(state) = target {
                if state != port.state {
                    if state == PortState::Forwarding {
                        port.fd_until = None;
                        port.forward_transitions += 1;
                        if !port.oper_edge {
                            detected.push(port.id);
                        }
                    }
                    if state == PortState::Discarding && port.state != PortState::Discarding {
                        self.events.push(StpEvent::Flush { port: port.id });
                    }
                    Stp::set_state(&mut self.events, port, state);
                }
            }
        }
        for id in detected {
            // This port too tells its LAN (RSTP: newTcWhile on the detecting port).
            if let Some(port) = self.port_mut(id) {
                let short = duration(times.hello) * 2;
                let long = duration(times.max_age) + duration(times.forward_delay);
                port.tc_until = Some(now + if port.send_rstp { short } else { long });
                port.tx_pending = true;
            }
            self.propagate_tc(id, now);
        }
    }

    fn set_state(events: &mut Vec<StpEvent>, port: &mut StpPort, state: PortState) {
        if port.state != state {
            port.state = state;
            port.tx_pending = true;
            events.push(StpEvent::State { port: port.id, state });
        }
    }
}

/// A bridge identifier as `vswitchctl stp show` and Linux print it: priority in hex, a dot,
/// the address in hex (`8000.020000000001`).
pub fn format_bridge_id(id: u64) -> String {
    format!("{:04x}.{:012x}", id >> 48, id & 0xffff_ffff_ffff)
}
