//! The L2 pipeline as plain data: given the port a frame came in on and its bytes, decide
//! where it goes. Learning happens here; reading and writing frames does not.
//!
//! Steps, in order (each early exit is a named [`DropReason`]):
//! 1. validate: a whole Ethernet header (`runt`), no longer than the ingress MTU allows
//!    (`oversize`);
//! 2. classify into a VLAN by the port's [`VlanMode`] (`bad_vlan_tag`, `vlan_not_allowed`,
//!    `untagged_not_allowed`, `double_tagged`, `wrong_tpid`);
//! 3. require a unicast non-zero source (`invalid_source`) and drop IEEE 802.1D reserved
//!    link-local destinations (`link_local`) — except BPDUs (01:80:c2:00:00:00) while the
//!    spanning tree is off: those flood, as the Linux bridge's do with STP off; with the tree
//!    on, a port it has discarding drops everything else too (`stp_discarding`), and a
//!    learning port learns (step 5) and then drops;
//! 4. on a bond, drop what the network behind it reflected back (`bond_reflection`, see
//!    [`REFLECTION_LOCK`]);
//! 5. learn the source in (VLAN, MAC) on the ingress port; a source pinned to another port
//!    after flapping is not learned and the frame is dropped (`mac_pinned`): it is a loop's
//!    copy or a second sender claiming the address, and forwarding it would keep a loop going
//!    or let the claimant speak as the host. (The Linux bridge likewise drops, without
//!    roaming, a frame on a locked port whose source lives on another port, and Open vSwitch
//!    one on a bond; against a sticky entry Linux forwards without learning.) The pin is
//!    reported in [`Decision::flapping`];
//! 6. broadcast, multicast and unknown unicast flood to the VLAN's other ports; known unicast
//!    goes to its port, unless that is the ingress port (`same_port`): a frame never leaves by
//!    the port it came in on.
//!
//! A port's modes ([`PortModes`], see [`crate::port_modes`]) add to these steps: before
//! learning, a source outside the port's `allowed_macs` is dropped (`source_not_allowed`), and
//! a new source on a port holding its `mac_limit` of learned MACs (`mac_limit`); a hairpin
//! port's frames may go back out of it (step 6 and [`Bridge::floods_to`]); a frame from an
//! isolated port to another isolated one is dropped (`isolated`) and a flood skips them; and
//! a flood over the port's storm-control rate for its class is dropped (`storm_broadcast`,
//! `storm_multicast`, `storm_unknown_unicast`).
//!
//! Egress ([`Bridge::egress`]) applies the egress port's VLAN mode (not carried, untagged, or
//! a tag to push) and MTU.

use crate::fdb::{Fdb, FdbConfig, LearnOutcome};
use crate::fdb_sync::FdbUpdate;
use crate::mdb::{McastConfig, Mdb, MdbUpdate};
use crate::port_modes::{FloodClass, PortModes, StormControl};
use crate::stp::PortState;
use crate::time::Instant;
use crate::trace::{Learning, TraceEvent, TraceLog, record};
use crate::verdict::{DropReason, Forward};
use crate::vlan::{self, Classified, Egress, VlanMode};
use crate::wire::bpdu::BRIDGE_GROUP_MAC;
use crate::wire::ethernet::{self, EtherType, Frame};
use crate::wire::igmp::Message;
use crate::wire::vlan::{TAG_LEN, Tag};
use crate::wire::{MacAddr, VnetHdr, igmp, mld};
use crate::{PortId, VlanId};

/// A port's settings, as far as forwarding is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePortConfig {
    /// Largest L3 payload the port carries (the Ethernet header and up to two VLAN tags come
    /// on top).
    pub mtu: u32,
    /// How the port treats VLANs.
    pub vlan: VlanMode,
    /// The port is a bond: sources just seen on another port are reflections.
    pub bond: bool,
}

/// How long after a MAC was last seen on one port a frame from it arriving on a bond is taken
/// for a reflection of our own frame rather than a host that moved (Open vSwitch locks
/// entries for the same 5 seconds).
///
/// Only a frame we could have sent out of the bond can come back: a group or unknown
/// destination (flooded), or one known behind the bond itself. A frame to a destination known
/// behind another port was never sent to the bond, so it is the MAC's own traffic and is
/// learned: otherwise a spoofer on another port, re-sending the address of a host behind the
/// bond, would keep the lock fresh and shut the host out for as long as it liked. Learned, the
/// host's frames and the spoofer's make the MAC flap, and move damping pins it back behind the
/// bond where it was. (A destination learned between our flood and its reflection's return
/// lets one reflection move the MAC; the host's next frame moves it back.)
pub const REFLECTION_LOCK: std::time::Duration = std::time::Duration::from_secs(5);

impl Default for BridgePortConfig {
    fn default() -> Self {
        BridgePortConfig { mtu: 1500, vlan: VlanMode::Transparent, bond: false }
    }
}

/// The bridge's decision for a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Where it goes.
    pub forward: Forward,
    /// Its VLAN, priority and the tag bytes to strip (meaningless when dropped).
    pub class: Classified,
    /// The source was learned, moved, or refreshed after a while: the other workers' FDB
    /// replicas should hear of it.
    pub share: bool,
    /// This frame made its source flap and the source is now pinned: the event to log (once
    /// per hold-down, not per frame).
    pub flapping: Option<FlappingMac>,
}

impl Decision {
    fn drop(reason: DropReason) -> Decision {
        Decision {
            forward: Forward::Drop(reason),
            class: Classified { vlan: VlanId::NONE, pcp: 0, strip: 0 },
            share: false,
            flapping: None,
        }
    }
}

/// A MAC found moving between ports too fast, and pinned to one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlappingMac {
    /// Its VLAN.
    pub vlan: VlanId,
    /// The address.
    pub mac: MacAddr,
    /// The port it is held on: where it was before it started moving.
    pub held_on: PortId,
    /// The other port that claimed it.
    pub refused_from: PortId,
}

/// The bridge: its ports and its forwarding database.
#[derive(Debug, Clone)]
pub struct Bridge {
    fdb: Fdb,
    ports: Vec<Option<BridgePortConfig>>,
    /// Each port's modes, when not a plain port's; kept apart from [`BridgePortConfig`] so a
    /// VLAN or MTU change leaves them alone.
    modes: Vec<Option<ModeState>>,
    /// The spanning tree runs: BPDUs are its business, not forwarded.
    stp: bool,
    /// Each port's spanning tree state, by [`PortId`] (forwarding when the tree does not run).
    stp_states: Vec<PortState>,
    mdb: Mdb,
    /// What snooping learned from the frames of this batch, for the other workers
    /// ([`Bridge::drain_mdb_updates`]); bounded by [`MDB_OUTBOX`].
    mdb_out: Vec<MdbUpdate>,
}

/// A port's modes and its storm-control budget (shared with the other workers' bridges).
#[derive(Debug, Clone)]
struct ModeState {
    modes: PortModes,
    storm: Option<std::sync::Arc<StormControl>>,
}

/// Snooped messages kept for the other workers between two [`Bridge::drain_mdb_updates`]: an
/// IGMPv3 report carries many records, and one frame must not grow the list without bound.
pub const MDB_OUTBOX: usize = 256;

/// Whether a frame fits an MTU once `strip` tag bytes at offset 12 are removed: its length
/// may exceed the MTU by the Ethernet header and up to two VLAN tags it still carries. A GSO
/// super-frame fits if its segments' payload does.
fn fits_mtu(bytes: &[u8], offload: &VnetHdr, strip: usize, mtu: u32) -> bool {
    if offload.is_gso() {
        return u32::from(offload.gso_size) <= mtu;
    }
    let mut header = ethernet::HEADER_LEN;
    let mut at = ethernet::HEADER_LEN - 2 + strip;
    for _ in 0..2 {
        let Some(field) = bytes.get(at..at + 2) else { break };
        if !matches!(EtherType::from(u16::from_be_bytes([field[0], field[1]])), EtherType::Vlan | EtherType::QinQ)
            || Tag::new_checked(&bytes[at + 2..]).is_err()
        {
            break;
        }
        header += TAG_LEN;
        at += TAG_LEN;
    }
    bytes.len() - strip <= header + mtu as usize
}

impl Bridge {
    /// A bridge with no ports.
    pub fn new(fdb: FdbConfig) -> Bridge {
        Bridge {
            fdb: Fdb::new(fdb),
            ports: Vec::new(),
            modes: Vec::new(),
            stp: false,
            stp_states: Vec::new(),
            mdb: Mdb::new(McastConfig::default()),
            mdb_out: Vec::new(),
        }
    }

    /// Whether the spanning tree runs. Off, frames to the Bridge Group Address (BPDUs) are
    /// flooded like any multicast, as the Linux bridge does with STP off, and every port
    /// forwards; on, every port starts discarding until the tree says otherwise.
    pub fn set_stp(&mut self, on: bool) {
        self.stp = on;
        let state = if on { PortState::Discarding } else { PortState::Forwarding };
        self.stp_states.iter_mut().for_each(|s| *s = state);
    }

    /// Whether the spanning tree runs.
    pub fn stp(&self) -> bool {
        self.stp
    }

    /// Sets port `id`'s spanning tree state: a discarding port neither learns nor forwards, a
    /// learning port learns but does not forward.
    pub fn set_stp_state(&mut self, id: PortId, state: PortState) {
        if let Some(slot) = self.stp_states.get_mut(id.index()) {
            *slot = state;
        }
    }

    /// Port `id`'s spanning tree state.
    pub fn stp_state(&self, id: PortId) -> PortState {
        self.stp_states.get(id.index()).copied().unwrap_or(PortState::Forwarding)
    }

    /// Adds (or reconfigures) port `id`.
    pub fn add_port(&mut self, id: PortId, config: BridgePortConfig) {
        if self.ports.len() <= id.index() {
            self.ports.resize(id.index() + 1, None);
        }
        if self.ports[id.index()].is_none() {
            if self.stp_states.len() <= id.index() {
                self.stp_states.resize(id.index() + 1, PortState::Forwarding);
            }
            self.stp_states[id.index()] = if self.stp { PortState::Discarding } else { PortState::Forwarding };
        }
        self.ports[id.index()] = Some(config);
        self.fdb.reserve_port(id);
    }

    /// Removes port `id` and every FDB entry behind it.
    pub fn remove_port(&mut self, id: PortId) {
        if let Some(slot) = self.ports.get_mut(id.index()) {
            *slot = None;
            self.fdb.remove_port(id);
            self.mdb.remove_port(id);
        }
        if let Some(slot) = self.modes.get_mut(id.index()) {
            *slot = None;
        }
    }

    /// Sets port `id`'s modes. `storm` is the port's storm-control budget, shared by every
    /// worker's bridge (ignored when `modes` limit no class). A port that does not exist (any
    /// more) is left alone.
    pub fn set_modes(&mut self, id: PortId, modes: PortModes, storm: Option<std::sync::Arc<StormControl>>) {
        if self.port(id).is_none() {
            return;
        }
        if self.modes.len() <= id.index() {
            self.modes.resize(id.index() + 1, None);
        }
        let storm = storm.filter(|_| modes.storm_pps.is_limited());
        self.modes[id.index()] = (!modes.is_plain()).then_some(ModeState { modes, storm });
    }

    /// Port `id`'s modes, if it has any other than a plain port's.
    pub fn modes(&self, id: PortId) -> Option<&PortModes> {
        self.mode_state(id).map(|m| &m.modes)
    }

    /// Port `id`'s storm-control budget, if it limits any class.
    pub fn storm_control(&self, id: PortId) -> Option<&std::sync::Arc<StormControl>> {
        self.mode_state(id).and_then(|m| m.storm.as_ref())
    }

    fn mode_state(&self, id: PortId) -> Option<&ModeState> {
        self.modes.get(id.index()).and_then(Option::as_ref)
    }

    fn is_isolated(&self, id: PortId) -> bool {
        self.mode_state(id).is_some_and(|m| m.modes.isolated)
    }

    /// Whether a frame from `in_port` that floods goes out of `out`: `out` is a port, it is not
    /// the ingress port unless that is a hairpin port, and the two are not both isolated.
    pub fn floods_to(&self, in_port: PortId, out: PortId) -> bool {
        if self.port(out).is_none() {
            return false;
        }
        let Some(modes) = self.mode_state(in_port) else { return out != in_port };
        (out != in_port || modes.modes.hairpin) && !(modes.modes.isolated && self.is_isolated(out))
    }

    /// Applies what another worker learned or the operator changed. An update naming a port
    /// this bridge does not have (any more) is ignored: it was sent before the port was removed.
    pub fn apply_update(&mut self, update: FdbUpdate, now: Instant) {
        let port = match update {
            FdbUpdate::Learned { port, .. } | FdbUpdate::Static { port, .. } | FdbUpdate::Tunnel { port, .. } => {
                Some(port)
            }
            FdbUpdate::Mcast(MdbUpdate::Snooped { port, .. } | MdbUpdate::StaticRouter { port, .. }) => Some(port),
            FdbUpdate::Removed { .. } | FdbUpdate::Flushed { .. } | FdbUpdate::Neighbour { .. } => None,
        };
        if port.is_some_and(|p| self.port(p).is_none()) {
            return;
        }
        if let FdbUpdate::Mcast(update) = update {
            self.mdb.apply_update(update, now);
            return;
        }
        update.apply(&mut self.fdb, now);
    }

    /// The port's settings, if it exists.
    pub fn port(&self, id: PortId) -> Option<&BridgePortConfig> {
        self.ports.get(id.index()).and_then(Option::as_ref)
    }

    /// Every port, in id order.
    pub fn port_ids(&self) -> impl Iterator<Item = PortId> + '_ {
        self.ports.iter().enumerate().filter(|(_, p)| p.is_some()).map(|(i, _)| PortId(i as u16))
    }

    /// The forwarding database.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The forwarding database, for operator changes.
    pub fn fdb_mut(&mut self) -> &mut Fdb {
        &mut self.fdb
    }

    /// Decides where a frame that arrived on `in_port` at `now` goes, learning its source.
    pub fn ingress(&mut self, in_port: PortId, bytes: &[u8], offload: &VnetHdr, now: Instant) -> Decision {
        self.ingress_traced(in_port, bytes, offload, now, None)
    }

    /// What [`Bridge::ingress`] would decide for the frame, its steps recorded in `log`, with
    /// nothing changed: it runs on a copy of the bridge (learning and snooping change the copy
    /// only), and storm control is asked without spending its budget.
    pub fn trace_ingress(
        &self,
        in_port: PortId,
        bytes: &[u8],
        offload: &VnetHdr,
        now: Instant,
        log: &mut TraceLog,
    ) -> Decision {
        let mut copy = self.clone();
        copy.mdb_out.clear();
        copy.ingress_traced(in_port, bytes, offload, now, Some(log))
    }

    /// [`Bridge::ingress`], recording its steps when `trace` is given (then it must run on a
    /// copy: see [`Bridge::trace_ingress`]).
    fn ingress_traced(
        &mut self,
        in_port: PortId,
        bytes: &[u8],
        offload: &VnetHdr,
        now: Instant,
        mut trace: Option<&mut TraceLog>,
    ) -> Decision {
        let Ok(frame) = Frame::new_checked(bytes) else {
            return Decision::drop(DropReason::Runt);
        };
        let Some(port) = self.port(in_port) else {
            return Decision::drop(DropReason::NotBridgePort);
        };
        if !fits_mtu(bytes, offload, 0, port.mtu) {
            return Decision::drop(DropReason::Oversize);
        }
        if !offload.fits(bytes.len()) {
            return Decision::drop(DropReason::BadOffload);
        }
        let class = match vlan::ingress(&port.vlan, bytes) {
            Ok(class) => class,
            Err(reason) => return Decision::drop(reason),
        };
        record(&mut trace, || TraceEvent::Classified {
            vlan: class.vlan,
            pcp: class.pcp,
            tag_stripped: class.strip > 0,
        });
        // A partial checksum must start past the Ethernet header and the tag bytes the port
        // strips: those bytes are rewritten on the way out, and offsets into them cannot move
        // with the payload.
        if offload.needs_csum() && usize::from(offload.csum_start) < ethernet::HEADER_LEN + class.strip {
            return Decision::drop(DropReason::BadOffload);
        }
        let src = frame.src_addr();
        if !src.is_valid_source() {
            return Decision::drop(DropReason::InvalidSource);
        }
        let dst = frame.dst_addr();
        if dst.is_link_local_reserved() && (self.stp || dst != BRIDGE_GROUP_MAC) {
            return Decision::drop(DropReason::LinkLocal);
        }
        let stp_state = self.stp_state(in_port);
        if stp_state == PortState::Discarding {
            return Decision::drop(DropReason::StpDiscarding);
        }
        if port.bond && self.is_reflection(in_port, class.vlan, src, dst, now) {
            return Decision::drop(DropReason::BondReflection);
        }
        if let Some(m) = self.mode_state(in_port) {
            if let Err(reason) = self.admit_source(in_port, &m.modes, class.vlan, src) {
                return Decision { forward: Forward::Drop(reason), class, share: false, flapping: None };
            }
        }
        let learned = self.fdb.learn(class.vlan, src, in_port, now);
        record(&mut trace, || TraceEvent::Learn { vlan: class.vlan, mac: src, outcome: Learning::of(learned) });
        let (share, flapping, held_elsewhere) = match learned {
            LearnOutcome::Learned | LearnOutcome::Moved { .. } | LearnOutcome::Refreshed { share: true } => {
                (true, None, false)
            }
            LearnOutcome::Pinned { held_on, refused_from } => {
                let event = FlappingMac { vlan: class.vlan, mac: src, held_on, refused_from };
                (held_on == in_port, Some(event), held_on != in_port)
            }
            LearnOutcome::HeldDown { .. } => (false, None, true),
            LearnOutcome::Refreshed { share: false }
            | LearnOutcome::Static
            | LearnOutcome::InvalidSource
            | LearnOutcome::Disabled => (false, None, false),
        };
        if held_elsewhere {
            return Decision { forward: Forward::Drop(DropReason::MacPinned), class, share, flapping };
        }
        if stp_state == PortState::Learning {
            return Decision { forward: Forward::Drop(DropReason::StpDiscarding), class, share, flapping };
        }
        let snooped = (dst.is_multicast() && self.mdb.snooping()).then(|| self.snoop(in_port, &class, bytes, now));
        let modes = self.mode_state(in_port);
        let forward = if dst.is_multicast() {
            snooped.unwrap_or(Forward::Flood)
        } else {
            let found = self.fdb.lookup(class.vlan, dst);
            record(&mut trace, || TraceEvent::Lookup { vlan: class.vlan, mac: dst, port: found });
            match found {
                Some(out) if out == in_port && !modes.is_some_and(|m| m.modes.hairpin) => {
                    Forward::Drop(DropReason::SamePort)
                }
                Some(out) if modes.is_some_and(|m| m.modes.isolated) && self.is_isolated(out) => {
                    Forward::Drop(DropReason::Isolated)
                }
                Some(out) => Forward::Unicast(out),
                None => Forward::Flood,
            }
        };
        let forward = match (forward, modes.and_then(|m| m.storm.as_ref())) {
            // Snooped multicast (to a group's members or the router ports) counts as multicast.
            (flood @ (Forward::Flood | Forward::Group(_) | Forward::Routers), Some(storm)) => {
                let class = FloodClass::of(dst);
                // A trace asks without spending: the budget is shared with the real bridges.
                let verdict = if trace.is_some() { storm.check(class, now) } else { storm.admit(class, now) };
                record(&mut trace, || TraceEvent::Storm { class, within: verdict.is_ok() });
                match verdict {
                    Ok(()) => flood,
                    Err(reason) => Forward::Drop(reason),
                }
            }
            (forward, _) => forward,
        };
        Decision { forward, class, share, flapping }
    }

    /// Whether the port's modes take a frame from `src` in `vlan`: it is an allowed source, and
    /// it is known behind the port already (or statically anywhere) or the port is below its
    /// MAC limit.
    fn admit_source(&self, in_port: PortId, modes: &PortModes, vlan: VlanId, src: MacAddr) -> Result<(), DropReason> {
        if !modes.allows_source(src) {
            return Err(DropReason::SourceNotAllowed);
        }
        let Some(limit) = modes.mac_limit else { return Ok(()) };
        match self.fdb.lookup_seen(vlan, src) {
            Some((port, _)) if port == in_port => Ok(()),
            Some((_, None)) => Ok(()), // static elsewhere: not learned here
            _ if self.fdb.port_learned_len(in_port) < limit as usize => Ok(()),
            _ => Err(DropReason::MacLimit),
        }
    }

    /// Where a multicast frame goes with snooping on: an IGMP/MLD message is taken into the
    /// table; a query floods, a report or leave goes to router ports only while a querier is
    /// present (hosts that heard each other's reports would hold their own back) and floods
    /// otherwise; traffic to a link-local or non-IP group
    /// floods; traffic to a group in the table goes to its members and the router ports;
    /// traffic to another group floods or, without `flood_unknown`, goes to router ports only.
    fn snoop(&mut self, in_port: PortId, class: &Classified, bytes: &[u8], now: Instant) -> Forward {
        let at = ethernet::HEADER_LEN - 2 + class.strip;
        let Some(ethertype) = bytes.get(at..at + 2) else { return Forward::Flood };
        let packet = &bytes[at + 2..];
        let vlan = class.vlan;
        let (mdb, out) = (&mut self.mdb, &mut self.mdb_out);
        let mut query = false;
        let mut take = |message| {
            query |= message == Message::Query;
            mdb.apply(vlan, in_port, message, now);
            if out.len() < MDB_OUTBOX {
                out.push(MdbUpdate::Snooped { vlan, port: in_port, message });
            }
        };
        let (control, group) = match u16::from_be_bytes([ethertype[0], ethertype[1]]) {
            0x0800 => (igmp::snoop(packet, &mut take), igmp::ipv4_destination(packet)),
            0x86dd => (mld::snoop(packet, &mut take), mld::ipv6_destination(packet)),
            _ => return Forward::Flood,
        };
        match (control, group) {
            (Err(_), _) => Forward::Drop(DropReason::McastBadReport),
            (Ok(true), _) if query || !self.mdb.querier_present() => Forward::Flood,
            (Ok(true), _) => Forward::Routers,
            (Ok(false), None) => Forward::Flood,
            (Ok(false), Some(group)) if !group.is_snoopable() => Forward::Flood,
            (Ok(false), Some(group)) => {
                if self.mdb.is_known(vlan, group) || !self.mdb.config().flood_unknown {
                    Forward::Group(group)
                } else {
                    Forward::Flood
                }
            }
        }
    }

    /// The multicast database.
    pub fn mdb(&self) -> &Mdb {
        &self.mdb
    }

    /// The multicast database, for settings and operator changes.
    pub fn mdb_mut(&mut self) -> &mut Mdb {
        &mut self.mdb
    }

    /// Hands `each` what snooping learned since the last call, for the other workers.
    pub fn drain_mdb_updates(&mut self, mut each: impl FnMut(MdbUpdate)) {
        for update in self.mdb_out.drain(..) {
            each(update);
        }
    }

    /// Whether a frame from `src` to `dst` arriving on bond `in_port` at `now` is the network
    /// behind the bond returning a frame we sent (see [`REFLECTION_LOCK`]).
    fn is_reflection(&self, in_port: PortId, vlan: VlanId, src: MacAddr, dst: MacAddr, now: Instant) -> bool {
        let Some((owner, Some(seen))) = self.fdb.lookup_seen(vlan, src) else { return false };
        if owner == in_port || now.saturating_duration_since(seen) >= REFLECTION_LOCK {
            return false;
        }
        let sent_elsewhere = !dst.is_multicast() && self.fdb.lookup(vlan, dst).is_some_and(|out| out != in_port);
        !sent_elsewhere
    }

    /// What happens to a frame classified as `class` on its way out of `out_port`:
    /// `Ok(Egress::NotCarried)` when the port is not in the VLAN (a flood skips it silently),
    /// an error when it must be dropped and counted there.
    pub fn egress(
        &self,
        out_port: PortId,
        bytes: &[u8],
        offload: &VnetHdr,
        class: &Classified,
    ) -> Result<Egress, DropReason> {
        let port = self.port(out_port).ok_or(DropReason::NotBridgePort)?;
        if self.stp_state(out_port) != PortState::Forwarding {
            return Err(DropReason::StpDiscarding);
        }
        let egress = vlan::egress(&port.vlan, class.vlan, class.pcp);
        if egress != Egress::NotCarried && !fits_mtu(bytes, offload, class.strip, port.mtu) {
            return Err(DropReason::EgressOversize);
        }
        Ok(egress)
    }

    /// Periodic work (FDB and MDB aging). Returns how many entries expired.
    pub fn run(&mut self, now: Instant) -> usize {
        self.fdb.run(now) + self.mdb.run(now)
    }

    /// When [`Bridge::run`] next has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.fdb.next_deadline(), self.mdb.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;

    const A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
    const B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);
    const P3: PortId = PortId(3);

    fn frame(dst: MacAddr, src: MacAddr, ethertype: u16, payload_len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; 14 + payload_len];
        let mut f = Frame::new_unchecked(&mut bytes[..]);
        f.set_dst_addr(dst);
        f.set_src_addr(src);
        f.set_ethertype(EtherType::from(ethertype));
        bytes
    }

    fn bridge() -> Bridge {
        let mut b = Bridge::new(FdbConfig::default());
        for p in [P1, P2, P3] {
            b.add_port(p, BridgePortConfig::default());
        }
        b
    }

    const T0: Instant = Instant::ZERO;
    const NO: VnetHdr = VnetHdr { flags: 0, gso_type: 0, hdr_len: 0, gso_size: 0, csum_start: 0, csum_offset: 0 };

    #[test]
    fn gso_frames_are_measured_by_segment_and_bad_offsets_dropped() {
        let mut b = bridge();
        let big = frame(B, A, 0x0800, 30_000);
        let gso = VnetHdr { gso_type: crate::wire::vnet_hdr::GSO_TCPV4, gso_size: 1448, ..NO };
        assert_eq!(b.ingress(P1, &big, &gso, T0).forward, Forward::Flood);
        assert_eq!(
            b.ingress(P1, &big, &VnetHdr { gso_size: 1600, ..gso }, T0).forward,
            Forward::Drop(DropReason::Oversize)
        );
        let bad = VnetHdr { flags: crate::wire::vnet_hdr::F_NEEDS_CSUM, csum_start: 40, csum_offset: 16, ..NO };
        assert_eq!(b.ingress(P1, &frame(B, A, 0x0800, 40), &bad, T0).forward, Forward::Drop(DropReason::BadOffload));
    }

    #[test]
    fn unknown_unicast_floods_then_learned_unicast_goes_direct() {
        let mut b = bridge();
        assert_eq!(b.ingress(P1, &frame(B, A, 0x0800, 46), &NO, T0).forward, Forward::Flood);
        assert_eq!(b.ingress(P2, &frame(A, B, 0x0800, 46), &NO, T0).forward, Forward::Unicast(P1));
        assert_eq!(b.ingress(P1, &frame(B, A, 0x0800, 46), &NO, T0).forward, Forward::Unicast(P2));
    }

    #[test]
    fn broadcast_and_multicast_flood_even_when_known() {
        let mut b = bridge();
        assert_eq!(b.ingress(P1, &frame(MacAddr::BROADCAST, A, 0x0806, 28), &NO, T0).forward, Forward::Flood);
        let group: MacAddr = "33:33:00:00:00:01".parse().unwrap();
        assert_eq!(b.ingress(P2, &frame(group, B, 0x86dd, 40), &NO, T0).forward, Forward::Flood);
    }

    /// An IGMPv2 membership report for 239.1.2.3 from 10.0.0.2 (IPv4 header with Router Alert),
    /// as a host sends it: Ethernet header, IPv4, IGMP.
    #[rustfmt::skip]
    const IGMPV2_REPORT: [u8; 46] = [
        0x01, 0x00, 0x5e, 0x01, 0x02, 0x03, 0x02, 0, 0, 0, 0, 0x0a, 0x08, 0x00,
        0x46, 0x00, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x01, 0x02, 0xe9, 0xd1,
        10, 0, 0, 2, 239, 1, 2, 3, 0x94, 0x04, 0x00, 0x00,
        0x16, 0x00, 0xf8, 0xfa, 239, 1, 2, 3,
    ];

    /// A UDP datagram (no payload) from 10.0.0.11 to `group`, Ethernet header included.
    fn udp_to(group: [u8; 4], src: MacAddr) -> Vec<u8> {
        let dst = MacAddr([0x01, 0x00, 0x5e, group[1] & 0x7f, group[2], group[3]]);
        let mut f = frame(dst, src, 0x0800, 28);
        f[14..34].copy_from_slice(&[0x45, 0, 0, 28, 0, 0, 0x40, 0, 1, 17, 0, 0, 10, 0, 0, 11, 0, 0, 0, 0]);
        f[30..34].copy_from_slice(&group);
        f
    }

    fn snooping_bridge(flood_unknown: bool) -> Bridge {
        let mut b = bridge();
        b.mdb_mut().set_config(McastConfig { snooping: true, flood_unknown, ..McastConfig::default() });
        b
    }

    #[test]
    fn snooped_groups_go_to_members_and_router_ports_only() {
        let mut b = snooping_bridge(true);
        let g = crate::wire::igmp::GroupAddr::V4([239, 1, 2, 3]);
        assert_eq!(b.ingress(P1, &udp_to([239, 1, 2, 3], B), &NO, T0).forward, Forward::Flood, "unknown: floods");
        assert_eq!(b.ingress(P2, &IGMPV2_REPORT, &NO, T0).forward, Forward::Flood, "reports flood");
        let mut shared = Vec::new();
        b.drain_mdb_updates(|u| shared.push(u));
        let joined = MdbUpdate::Snooped { vlan: VlanId::NONE, port: P2, message: crate::wire::igmp::Message::Join(g) };
        assert_eq!(shared, vec![joined]);
        assert_eq!(b.ingress(P1, &udp_to([239, 1, 2, 3], B), &NO, T0).forward, Forward::Group(g));
        let mut out = Vec::new();
        b.mdb().egress_ports(VlanId::NONE, g, P1, &mut out);
        assert_eq!(out, vec![P2]);
        // Link-local groups flood whatever the table says; so does a group nobody reported.
        assert_eq!(b.ingress(P1, &udp_to([224, 0, 0, 251], B), &NO, T0).forward, Forward::Flood);
        assert_eq!(b.ingress(P1, &udp_to([239, 9, 9, 9], B), &NO, T0).forward, Forward::Flood);
        // The port goes: so does its membership, and the group is unknown again.
        b.remove_port(P2);
        assert!(b.mdb().is_empty());
        assert_eq!(b.ingress(P1, &udp_to([239, 1, 2, 3], B), &NO, T0).forward, Forward::Flood);
    }

    #[test]
    fn snooped_group_traffic_is_metered_by_storm_control_as_multicast() {
        let mut b = snooping_bridge(true);
        let g = crate::wire::igmp::GroupAddr::V4([239, 1, 2, 3]);
        b.ingress(P2, &IGMPV2_REPORT, &NO, T0);
        let storm = crate::port_modes::StormPps { multicast: Some(4), ..crate::port_modes::StormPps::default() };
        with_modes(&mut b, P1, PortModes { storm_pps: storm, ..PortModes::default() });
        let t = Instant::from_secs(1);
        let decisions: Vec<_> = (0..20).map(|_| b.ingress(P1, &udp_to([239, 1, 2, 3], B), &NO, t).forward).collect();
        assert_eq!(decisions.iter().filter(|d| **d == Forward::Group(g)).count(), 4);
        assert_eq!(decisions.iter().filter(|d| **d == Forward::Drop(DropReason::StormMulticast)).count(), 16);
    }

    #[test]
    fn with_a_querier_present_reports_go_to_router_ports_only() {
        let mut b = snooping_bridge(true);
        let mut query = vec![0x01, 0x00, 0x5e, 0, 0, 1, 0x02, 0, 0, 0, 0, 0x0c, 0x08, 0x00];
        query.extend_from_slice(&igmp::general_query(100));
        assert_eq!(b.ingress(P3, &query, &NO, T0).forward, Forward::Flood, "queries flood");
        assert_eq!(b.ingress(P2, &IGMPV2_REPORT, &NO, T0).forward, Forward::Routers);
        let mut out = Vec::new();
        b.mdb().router_ports(P2, &mut out);
        assert_eq!(out, vec![P3]);
        // Our own querier counts as one too.
        let mut ours = snooping_bridge(true);
        let config = McastConfig { querier: true, ..ours.mdb().config() };
        ours.mdb_mut().set_config(config);
        assert_eq!(ours.ingress(P2, &IGMPV2_REPORT, &NO, T0).forward, Forward::Routers);
    }

    #[test]
    fn without_flooding_unknown_groups_go_to_router_ports_only() {
        let mut b = snooping_bridge(false);
        let g = crate::wire::igmp::GroupAddr::V4([239, 9, 9, 9]);
        assert_eq!(b.ingress(P1, &udp_to([239, 9, 9, 9], B), &NO, T0).forward, Forward::Group(g));
        b.mdb_mut().set_static_router(P3, true);
        let mut out = Vec::new();
        b.mdb().egress_ports(VlanId::NONE, g, P1, &mut out);
        assert_eq!(out, vec![P3]);
    }

    #[test]
    fn a_bad_report_is_dropped_by_name_and_not_learned() {
        let mut b = snooping_bridge(true);
        let mut bad = IGMPV2_REPORT;
        bad[43] ^= 0x01;
        assert_eq!(b.ingress(P2, &bad, &NO, T0).forward, Forward::Drop(DropReason::McastBadReport));
        assert_eq!(b.ingress(P2, &IGMPV2_REPORT[..40], &NO, T0).forward, Forward::Drop(DropReason::McastBadReport));
        assert!(b.mdb().is_empty());
        // Without snooping the same bytes are just a multicast frame.
        let mut plain = bridge();
        assert_eq!(plain.ingress(P2, &bad, &NO, T0).forward, Forward::Flood);
    }

    #[test]
    fn reports_count_in_the_vlan_they_arrive_in() {
        let mut b = snooping_bridge(true);
        let trunk = VlanMode::Trunk {
            allowed: Box::new([VlanId::new(10).unwrap()].into_iter().collect()),
            native: None,
            tpid: 0x8100,
        };
        b.add_port(P1, BridgePortConfig { vlan: trunk, ..BridgePortConfig::default() });
        let mut tagged = IGMPV2_REPORT[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        tagged.extend_from_slice(&IGMPV2_REPORT[12..]);
        assert_eq!(b.ingress(P1, &tagged, &NO, T0).forward, Forward::Flood);
        let g = crate::wire::igmp::GroupAddr::V4([239, 1, 2, 3]);
        assert!(b.mdb().is_known(VlanId::new(10).unwrap(), g));
        assert!(!b.mdb().is_known(VlanId::NONE, g));
    }

    #[test]
    fn never_back_out_of_the_ingress_port() {
        let mut b = bridge();
        b.ingress(P1, &frame(B, A, 0x0800, 46), &NO, T0);
        let c = MacAddr([0x02, 0, 0, 0, 0, 0x0c]);
        assert_eq!(b.ingress(P1, &frame(A, c, 0x0800, 46), &NO, T0).forward, Forward::Drop(DropReason::SamePort));
    }

    #[test]
    fn malformed_frames_are_dropped_with_reasons() {
        let mut b = bridge();
        assert_eq!(b.ingress(P1, &[0u8; 13], &NO, T0).forward, Forward::Drop(DropReason::Runt));
        assert_eq!(b.ingress(P1, &[], &NO, T0).forward, Forward::Drop(DropReason::Runt));
        assert_eq!(b.ingress(P1, &frame(B, A, 0x0800, 1501), &NO, T0).forward, Forward::Drop(DropReason::Oversize));
        assert_eq!(
            b.ingress(P1, &frame(B, MacAddr::BROADCAST, 0x0800, 46), &NO, T0).forward,
            Forward::Drop(DropReason::InvalidSource)
        );
        assert_eq!(
            b.ingress(P1, &frame(B, MacAddr::ZERO, 0x0800, 46), &NO, T0).forward,
            Forward::Drop(DropReason::InvalidSource)
        );
        let lldp: MacAddr = "01:80:c2:00:00:0e".parse().unwrap();
        assert_eq!(b.ingress(P1, &frame(lldp, A, 0x88cc, 38), &NO, T0).forward, Forward::Drop(DropReason::LinkLocal));
        assert!(b.fdb().lookup(VlanId::NONE, MacAddr::BROADCAST).is_none());
    }

    #[test]
    fn bpdus_flood_with_stp_off_and_port_states_gate_with_it_on() {
        let mut b = bridge();
        let bpdu = frame(BRIDGE_GROUP_MAC, A, 0x0026, 46);
        assert_eq!(b.ingress(P1, &bpdu, &NO, T0).forward, Forward::Flood);
        b.set_stp(true);
        assert_eq!(b.ingress(P1, &bpdu, &NO, T0).forward, Forward::Drop(DropReason::LinkLocal));
        // Every port starts discarding: nothing learned, nothing forwarded, nothing sent.
        b.fdb_mut().flush(None);
        let data = frame(B, A, 0x0800, 46);
        assert_eq!(b.ingress(P1, &data, &NO, T0).forward, Forward::Drop(DropReason::StpDiscarding));
        assert!(b.fdb().lookup(VlanId::NONE, A).is_none());
        let class = Classified { vlan: VlanId::NONE, pcp: 0, strip: 0 };
        assert_eq!(b.egress(P2, &data, &NO, &class), Err(DropReason::StpDiscarding));
        // Learning: learned, not forwarded.
        b.set_stp_state(P1, PortState::Learning);
        assert_eq!(b.ingress(P1, &data, &NO, T0).forward, Forward::Drop(DropReason::StpDiscarding));
        assert_eq!(b.fdb().lookup(VlanId::NONE, A), Some(P1));
        b.set_stp_state(P1, PortState::Forwarding);
        b.set_stp_state(P2, PortState::Forwarding);
        assert_eq!(b.ingress(P1, &data, &NO, T0).forward, Forward::Flood);
        assert_eq!(b.egress(P2, &data, &NO, &class), Ok(Egress::Untagged));
        // A port added while the tree runs starts discarding; with the tree off all forward.
        b.add_port(PortId(7), BridgePortConfig::default());
        assert_eq!(b.stp_state(PortId(7)), PortState::Discarding);
        b.set_stp(false);
        assert_eq!(b.stp_state(P3), PortState::Forwarding);
    }

    #[test]
    fn any_ethertype_and_a_bare_header_are_forwarded() {
        let mut b = bridge();
        for ethertype in [0x0000, 0x05dc, 0x88b5, 0xffff] {
            assert_eq!(b.ingress(P1, &frame(B, A, ethertype, 0), &NO, T0).forward, Forward::Flood);
        }
    }

    #[test]
    fn vlan_tags_get_their_four_bytes_on_top_of_the_mtu() {
        let mut b = bridge();
        let mut tagged = frame(B, A, 0x8100, 4 + 1500);
        tagged[14..18].copy_from_slice(&[0x00, 0x0a, 0x08, 0x00]);
        assert_eq!(b.ingress(P1, &tagged, &NO, T0).forward, Forward::Flood);
        tagged.push(0);
        assert_eq!(b.ingress(P1, &tagged, &NO, T0).forward, Forward::Drop(DropReason::Oversize));
        let mut double = frame(B, A, 0x88a8, 8 + 1500);
        double[14..22].copy_from_slice(&[0x00, 0x64, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x00]);
        assert_eq!(b.ingress(P1, &double, &NO, T0).forward, Forward::Flood);
    }

    #[test]
    fn egress_mtu_is_the_egress_ports() {
        let mut b = bridge();
        b.add_port(P3, BridgePortConfig { mtu: 1000, ..BridgePortConfig::default() });
        let big = frame(B, A, 0x0800, 1200);
        let class = b.ingress(P1, &big, &NO, T0).class;
        assert_eq!(b.egress(P2, &big, &NO, &class), Ok(Egress::Untagged));
        assert_eq!(b.egress(P3, &big, &NO, &class), Err(DropReason::EgressOversize));
    }

    fn vlan_bridge() -> Bridge {
        let v = |n| VlanId::new(n).unwrap();
        let mut b = Bridge::new(FdbConfig::default());
        b.add_port(P1, BridgePortConfig { vlan: VlanMode::Access(v(10)), ..BridgePortConfig::default() });
        b.add_port(P2, BridgePortConfig { vlan: VlanMode::Access(v(20)), ..BridgePortConfig::default() });
        let trunk = VlanMode::Trunk {
            allowed: Box::new([v(10), v(20)].into_iter().collect()),
            native: None,
            tpid: vlan::TPID_8021Q,
        };
        b.add_port(P3, BridgePortConfig { vlan: trunk, ..BridgePortConfig::default() });
        b
    }

    #[test]
    fn a_bond_does_not_take_back_what_a_local_port_just_said() {
        let mut b = bridge();
        b.add_port(P3, BridgePortConfig { bond: true, ..BridgePortConfig::default() });
        b.ingress(P1, &frame(MacAddr::BROADCAST, A, 0x0806, 28), &NO, T0);
        let echo = frame(MacAddr::BROADCAST, A, 0x0806, 28);
        assert_eq!(b.ingress(P3, &echo, &NO, Instant::from_secs(1)).forward, Forward::Drop(DropReason::BondReflection));
        assert_eq!(b.fdb().lookup(VlanId::NONE, A), Some(P1), "the reflection must not move A");
        // A host that really moved behind the bond is learned there once the lock has passed.
        assert_eq!(b.ingress(P3, &echo, &NO, Instant::from_secs(6)).forward, Forward::Flood);
        assert_eq!(b.fdb().lookup(VlanId::NONE, A), Some(P3));
        // A plain port moves MACs at once.
        assert_eq!(b.ingress(P2, &echo, &NO, Instant::from_secs(6)).forward, Forward::Flood);
    }

    fn ms(n: u64) -> Instant {
        Instant::from_nanos(n * 1_000_000)
    }

    #[test]
    fn a_flapping_source_stays_with_its_host_and_the_claimant_is_dropped() {
        let mut b = bridge();
        let to_b = frame(B, A, 0x0800, 46);
        b.ingress(P3, &frame(A, B, 0x0800, 46), &NO, T0);
        b.ingress(P1, &to_b, &NO, T0);
        // A spoofer on P2 claims A between A's own frames: three moves are followed...
        for (n, port) in [P2, P1, P2].into_iter().enumerate() {
            let d = b.ingress(port, &to_b, &NO, ms(1000 + n as u64));
            assert_eq!((d.forward, d.flapping), (Forward::Unicast(P3), None));
        }
        // ...the fourth within the window pins A to P1, where it was; reported with this frame.
        let d = b.ingress(P1, &to_b, &NO, ms(1003));
        assert_eq!(d.forward, Forward::Unicast(P3), "the host's own frame goes through");
        let event = FlappingMac { vlan: VlanId::NONE, mac: A, held_on: P1, refused_from: P2 };
        assert_eq!((d.flapping, d.share), (Some(event), true));
        for n in 4..1000 {
            let d = b.ingress(P2, &to_b, &NO, ms(1000 + n));
            assert_eq!((d.forward, d.flapping), (Forward::Drop(DropReason::MacPinned), None));
        }
        assert_eq!(b.ingress(P3, &frame(A, B, 0x0800, 46), &NO, ms(2000)).forward, Forward::Unicast(P1));
        assert_eq!(b.fdb().stats().move_damped, 1);
        // After the hold-down, learning resumes.
        let after = ms(1003) + crate::fdb::MAC_MOVE_HOLD_DOWN;
        assert_eq!(b.ingress(P2, &to_b, &NO, after).forward, Forward::Unicast(P3));
        assert_eq!(b.fdb().lookup(VlanId::NONE, A), Some(P2));
    }

    #[test]
    fn a_claimants_frame_that_tips_the_flapping_is_dropped_and_reported() {
        let mut b = bridge();
        let to_b = frame(B, A, 0x0800, 46);
        b.ingress(P1, &to_b, &NO, T0);
        for (n, port) in [P2, P3, P1].into_iter().enumerate() {
            b.ingress(port, &to_b, &NO, ms(1000 + n as u64));
        }
        let d = b.ingress(P2, &to_b, &NO, ms(1003));
        assert_eq!(d.forward, Forward::Drop(DropReason::MacPinned));
        assert_eq!(d.flapping, Some(FlappingMac { vlan: VlanId::NONE, mac: A, held_on: P1, refused_from: P2 }));
        assert!(!d.share, "the other workers must not hear that A is on P2");
    }

    #[test]
    fn a_spoofer_cannot_shut_a_host_behind_a_bond_out() {
        let mut b = bridge();
        b.add_port(P3, BridgePortConfig { bond: true, ..BridgePortConfig::default() });
        // A lives behind the bond and talks to B, on P1.
        b.ingress(P1, &frame(A, B, 0x0800, 46), &NO, T0);
        b.ingress(P3, &frame(B, A, 0x0800, 46), &NO, T0);
        // A spoofer on P2 keeps claiming A.
        let spoofed = frame(MacAddr::BROADCAST, A, 0x0806, 28);
        assert_eq!(b.ingress(P2, &spoofed, &NO, ms(1000)).forward, Forward::Flood);
        assert_eq!(b.fdb().lookup(VlanId::NONE, A), Some(P2));
        // A's broadcasts look like our own flood coming back and stay locked out...
        let broadcast = frame(MacAddr::BROADCAST, A, 0x0806, 28);
        assert_eq!(b.ingress(P3, &broadcast, &NO, ms(1001)).forward, Forward::Drop(DropReason::BondReflection));
        // ...but a frame to B, known behind P1, never went out of the bond: it is A's own.
        assert_eq!(b.ingress(P3, &frame(B, A, 0x0800, 46), &NO, ms(1002)).forward, Forward::Unicast(P1));
        assert_eq!(b.fdb().lookup(VlanId::NONE, A), Some(P3));
        b.ingress(P2, &spoofed, &NO, ms(1003));
        let d = b.ingress(P3, &frame(B, A, 0x0800, 46), &NO, ms(1004));
        assert_eq!(d.forward, Forward::Unicast(P1));
        assert_eq!(d.flapping, Some(FlappingMac { vlan: VlanId::NONE, mac: A, held_on: P3, refused_from: P2 }));
        for n in 5..3000 {
            assert_eq!(b.ingress(P2, &spoofed, &NO, ms(1000 + n)).forward, Forward::Drop(DropReason::MacPinned));
        }
        assert_eq!(b.fdb().lookup(VlanId::NONE, A), Some(P3));
        assert_eq!(b.ingress(P3, &broadcast, &NO, ms(4000)).forward, Forward::Flood, "A's own port takes all of it");
    }

    #[test]
    fn what_the_bond_could_have_sent_is_still_a_reflection() {
        let mut b = bridge();
        b.add_port(P3, BridgePortConfig { bond: true, ..BridgePortConfig::default() });
        let c = MacAddr([0x02, 0, 0, 0, 0, 0x0c]);
        b.ingress(P3, &frame(MacAddr::BROADCAST, c, 0x0806, 28), &NO, T0);
        b.ingress(P1, &frame(c, A, 0x0800, 46), &NO, T0);
        // A's unicast to C went out of the bond; an upstream that floods it sends it back.
        assert_eq!(
            b.ingress(P3, &frame(c, A, 0x0800, 46), &NO, ms(1)).forward,
            Forward::Drop(DropReason::BondReflection)
        );
        // So does a flood to an unknown destination.
        let unknown = MacAddr([0x02, 0, 0, 0, 0, 0x0d]);
        assert_eq!(
            b.ingress(P3, &frame(unknown, A, 0x0800, 46), &NO, ms(2)).forward,
            Forward::Drop(DropReason::BondReflection)
        );
        assert_eq!(b.fdb().lookup(VlanId::NONE, A), Some(P1));
    }

    #[test]
    fn vlans_are_separate_broadcast_domains() {
        let mut b = vlan_bridge();
        let d = b.ingress(P1, &frame(MacAddr::BROADCAST, A, 0x0806, 28), &NO, T0);
        assert_eq!(d.forward, Forward::Flood);
        assert_eq!(d.class.vlan.get(), 10);
        assert_eq!(b.egress(P2, &[0; 60], &NO, &d.class), Ok(Egress::NotCarried));
        let tag = match b.egress(P3, &frame(MacAddr::BROADCAST, A, 0x0806, 28), &NO, &d.class) {
            Ok(Egress::Tagged(t)) => t,
            other => panic!("{other:?}"),
        };
        assert_eq!(tag.bytes(), [0x81, 0x00, 0x00, 0x0a]);
    }

    #[test]
    fn the_same_mac_is_learned_per_vlan() {
        let mut b = vlan_bridge();
        b.ingress(P1, &frame(B, A, 0x0800, 46), &NO, T0);
        let mut tagged = frame(B, A, 0x8100, 50);
        tagged[14..18].copy_from_slice(&[0x00, 0x14, 0x08, 0x00]); // VLAN 20
        let d = b.ingress(P3, &tagged, &NO, T0);
        assert_eq!((d.class.vlan.get(), d.class.strip), (20, 4));
        assert_eq!(b.fdb().lookup(VlanId::new(10).unwrap(), A), Some(P1));
        assert_eq!(b.fdb().lookup(VlanId::new(20).unwrap(), A), Some(P3));
        // B answers A in VLAN 20 from the access port: unicast back to the trunk.
        assert_eq!(b.ingress(P2, &frame(A, B, 0x0800, 46), &NO, T0).forward, Forward::Unicast(P3));
    }

    #[test]
    fn vlan_drops_are_named() {
        let mut b = vlan_bridge();
        let mut tagged = frame(B, A, 0x8100, 50);
        tagged[14..18].copy_from_slice(&[0x00, 0x1e, 0x08, 0x00]); // VLAN 30
        assert_eq!(b.ingress(P3, &tagged, &NO, T0).forward, Forward::Drop(DropReason::VlanNotAllowed));
        assert_eq!(
            b.ingress(P3, &frame(B, A, 0x0800, 46), &NO, T0).forward,
            Forward::Drop(DropReason::UntaggedNotAllowed)
        );
    }

    #[test]
    fn a_stripped_tag_does_not_count_against_the_egress_mtu() {
        let mut b = vlan_bridge();
        let mut tagged = frame(B, A, 0x8100, 4 + 1500);
        tagged[14..18].copy_from_slice(&[0x00, 0x0a, 0x08, 0x00]);
        let d = b.ingress(P3, &tagged, &NO, T0);
        assert_eq!(d.forward, Forward::Flood);
        assert_eq!(b.egress(P1, &tagged, &NO, &d.class), Ok(Egress::Untagged));
    }

    #[test]
    fn removing_a_port_forgets_what_was_learned_on_it() {
        let mut b = bridge();
        b.ingress(P1, &frame(B, A, 0x0800, 46), &NO, T0);
        b.remove_port(P1);
        assert_eq!(b.fdb().lookup(VlanId::NONE, A), None);
        assert_eq!(b.port_ids().collect::<Vec<_>>(), vec![P2, P3]);
    }

    fn with_modes(b: &mut Bridge, port: PortId, modes: PortModes) {
        let storm = std::sync::Arc::new(StormControl::new(&modes.storm_pps));
        b.set_modes(port, modes, Some(storm));
    }

    const ISOLATED: PortModes = PortModes {
        isolated: true,
        hairpin: false,
        mac_limit: None,
        allowed_macs: Vec::new(),
        storm_pps: crate::port_modes::StormPps { broadcast: None, multicast: None, unknown_unicast: None },
    };

    #[test]
    fn isolated_ports_reach_only_non_isolated_ones() {
        let mut b = bridge();
        let c = MacAddr([0x02, 0, 0, 0, 0, 0x0c]);
        with_modes(&mut b, P1, ISOLATED);
        with_modes(&mut b, P2, ISOLATED);
        // A and B on the isolated ports, C (the gateway) on P3.
        b.ingress(P1, &frame(MacAddr::BROADCAST, A, 0x0806, 28), &NO, T0);
        b.ingress(P2, &frame(MacAddr::BROADCAST, B, 0x0806, 28), &NO, T0);
        b.ingress(P3, &frame(MacAddr::BROADCAST, c, 0x0806, 28), &NO, T0);
        assert_eq!(b.ingress(P1, &frame(B, A, 0x0800, 46), &NO, T0).forward, Forward::Drop(DropReason::Isolated));
        assert_eq!(b.ingress(P2, &frame(A, B, 0x0800, 46), &NO, T0).forward, Forward::Drop(DropReason::Isolated));
        assert_eq!(b.ingress(P1, &frame(c, A, 0x0800, 46), &NO, T0).forward, Forward::Unicast(P3));
        assert_eq!(b.ingress(P3, &frame(B, c, 0x0800, 46), &NO, T0).forward, Forward::Unicast(P2));
        // Floods from an isolated port skip the other isolated ones; from the gateway, not.
        assert!(!b.floods_to(P1, P2) && b.floods_to(P1, P3) && !b.floods_to(P1, P1));
        assert!(b.floods_to(P3, P1) && b.floods_to(P3, P2) && !b.floods_to(P3, P3));
        // Unisolated again, A reaches B.
        b.set_modes(P2, PortModes::default(), None);
        assert_eq!(b.ingress(P1, &frame(B, A, 0x0800, 46), &NO, T0).forward, Forward::Unicast(P2));
        assert_eq!(b.modes(P2), None);
    }

    #[test]
    fn a_hairpin_port_reflects_its_own_frames() {
        let mut b = bridge();
        b.ingress(P1, &frame(MacAddr::BROADCAST, A, 0x0806, 28), &NO, T0);
        b.ingress(P1, &frame(MacAddr::BROADCAST, B, 0x0806, 28), &NO, T0);
        assert_eq!(b.ingress(P1, &frame(B, A, 0x0800, 46), &NO, T0).forward, Forward::Drop(DropReason::SamePort));
        assert!(!b.floods_to(P1, P1));
        with_modes(&mut b, P1, PortModes { hairpin: true, ..PortModes::default() });
        assert_eq!(b.ingress(P1, &frame(B, A, 0x0800, 46), &NO, T0).forward, Forward::Unicast(P1));
        assert!(b.floods_to(P1, P1) && b.floods_to(P1, P2));
        // Hairpin does not open isolation: an isolated hairpin port does not reflect.
        with_modes(&mut b, P1, PortModes { hairpin: true, ..ISOLATED });
        assert_eq!(b.ingress(P1, &frame(B, A, 0x0800, 46), &NO, T0).forward, Forward::Drop(DropReason::Isolated));
        assert!(!b.floods_to(P1, P1) && b.floods_to(P1, P2));
    }

    #[test]
    fn only_allowed_sources_are_taken_and_learned() {
        let mut b = bridge();
        with_modes(&mut b, P1, PortModes { allowed_macs: vec![A], ..PortModes::default() });
        assert_eq!(
            b.ingress(P1, &frame(MacAddr::BROADCAST, B, 0x0806, 28), &NO, T0).forward,
            Forward::Drop(DropReason::SourceNotAllowed)
        );
        assert_eq!(b.fdb().lookup(VlanId::NONE, B), None, "a refused source is not learned");
        assert_eq!(b.ingress(P1, &frame(MacAddr::BROADCAST, A, 0x0806, 28), &NO, T0).forward, Forward::Flood);
        // Other ports are not restricted.
        assert_eq!(b.ingress(P2, &frame(A, B, 0x0800, 46), &NO, T0).forward, Forward::Unicast(P1));
    }

    #[test]
    fn a_mac_limit_refuses_further_sources_until_one_ages_out() {
        let mut b = Bridge::new(FdbConfig { aging: std::time::Duration::from_secs(10), max_learned: 100 });
        for p in [P1, P2] {
            b.add_port(p, BridgePortConfig::default());
        }
        with_modes(&mut b, P1, PortModes { mac_limit: Some(1), ..PortModes::default() });
        assert_eq!(b.ingress(P1, &frame(MacAddr::BROADCAST, A, 0x0806, 28), &NO, T0).forward, Forward::Flood);
        assert_eq!(
            b.ingress(P1, &frame(MacAddr::BROADCAST, B, 0x0806, 28), &NO, T0).forward,
            Forward::Drop(DropReason::MacLimit)
        );
        assert_eq!(b.fdb().lookup(VlanId::NONE, B), None);
        // The one MAC keeps going, in any VLAN it was learned in.
        assert_eq!(
            b.ingress(P1, &frame(MacAddr::BROADCAST, A, 0x0806, 28), &NO, Instant::from_secs(5)).forward,
            Forward::Flood
        );
        // B learned on P2 cannot move onto the full port either.
        b.ingress(P2, &frame(MacAddr::BROADCAST, B, 0x0806, 28), &NO, Instant::from_secs(5));
        assert_eq!(
            b.ingress(P1, &frame(MacAddr::BROADCAST, B, 0x0806, 28), &NO, Instant::from_secs(6)).forward,
            Forward::Drop(DropReason::MacLimit)
        );
        // Once A ages out, B may take its place.
        b.run(Instant::from_secs(15));
        assert_eq!(b.fdb().port_learned_len(P1), 0);
        assert_eq!(
            b.ingress(P1, &frame(MacAddr::BROADCAST, B, 0x0806, 28), &NO, Instant::from_secs(16)).forward,
            Forward::Flood
        );
        assert_eq!(b.fdb().lookup(VlanId::NONE, B), Some(P1));
    }

    #[test]
    fn storm_control_drops_floods_over_the_rate_by_class() {
        let mut b = bridge();
        let storm = crate::port_modes::StormPps { broadcast: Some(10), multicast: Some(5), unknown_unicast: Some(3) };
        with_modes(&mut b, P1, PortModes { storm_pps: storm, ..PortModes::default() });
        let t = Instant::from_secs(1);
        let count = |b: &mut Bridge, dst: MacAddr, reason: DropReason| {
            let decisions: Vec<_> =
                (0..100).map(|_| b.ingress(P1, &frame(dst, A, 0x0800, 46), &NO, t).forward).collect();
            assert!(decisions.iter().all(|d| *d == Forward::Flood || *d == Forward::Drop(reason)));
            decisions.iter().filter(|d| **d == Forward::Flood).count()
        };
        assert_eq!(count(&mut b, MacAddr::BROADCAST, DropReason::StormBroadcast), 10);
        assert_eq!(count(&mut b, "01:00:5e:00:00:fb".parse().unwrap(), DropReason::StormMulticast), 5);
        assert_eq!(count(&mut b, B, DropReason::StormUnknownUnicast), 3);
        // Known unicast is not limited.
        b.ingress(P2, &frame(A, B, 0x0800, 46), &NO, t);
        assert!((0..100).all(|_| b.ingress(P1, &frame(B, A, 0x0800, 46), &NO, t).forward == Forward::Unicast(P2)));
        // Nor are the other ports.
        assert!(
            (0..100)
                .all(|_| b.ingress(P2, &frame(MacAddr::BROADCAST, B, 0x0806, 28), &NO, t).forward == Forward::Flood)
        );
    }

    #[test]
    fn modes_go_with_the_port_and_survive_a_vlan_change() {
        let mut b = bridge();
        with_modes(&mut b, P1, ISOLATED);
        b.add_port(P1, BridgePortConfig { mtu: 9000, ..BridgePortConfig::default() });
        assert_eq!(b.modes(P1), Some(&ISOLATED));
        b.remove_port(P1);
        b.add_port(P1, BridgePortConfig::default());
        assert_eq!(b.modes(P1), None);
        // Modes for a port that does not exist are not kept.
        b.set_modes(PortId(9), ISOLATED, None);
        assert_eq!(b.modes(PortId(9)), None);
    }

    #[test]
    fn aging_runs_through_the_bridge() {
        let mut b = Bridge::new(FdbConfig { aging: std::time::Duration::from_secs(5), max_learned: 10 });
        b.add_port(P1, BridgePortConfig::default());
        b.add_port(P2, BridgePortConfig::default());
        b.ingress(P1, &frame(B, A, 0x0800, 46), &NO, T0);
        assert_eq!(b.next_deadline(), Some(Instant::from_secs(5)));
        assert_eq!(b.run(Instant::from_secs(5)), 1);
        assert_eq!(b.ingress(P2, &frame(A, B, 0x0800, 46), &NO, Instant::from_secs(6)).forward, Forward::Flood);
    }
}
