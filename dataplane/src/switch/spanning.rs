//! The spanning tree on the running switch: where the [`Stp`] instance lives, how BPDUs reach
//! it and leave it, and how its port states reach every worker.
//!
//! The instance lives on the first worker, beside the bonds' LACP: it receives the BPDUs that
//! worker reads, and the other workers pass theirs to it as jobs (at most
//! [`BPDUS_IN_FLIGHT`] at a time per worker, so a flood of BPDUs cannot grow the job queue;
//! the rest are counted `no_room`). Its timers run in the first worker's turns; the BPDUs it
//! sends go straight out of the port's (first) I/O, whatever the port's state and VLAN mode
//! (untagged, as the Linux bridge sends them). Its port state changes are applied to the
//! first worker's bridge at once and sent to the other workers as jobs, in order, like every
//! other change; topology-change flushes go through [`SwitchState::fdb_flush`], which reaches
//! every worker's FDB replica.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::stp::{Stp, StpConfig, StpEvent, StpPortConfig};
use crate::wire::bpdu;

/// BPDUs one worker may have on their way to the first worker at once.
pub const BPDUS_IN_FLIGHT: usize = 64;

/// How a worker other than the first passes BPDUs (and LACPDUs) to the first.
#[derive(Debug, Clone)]
pub(super) struct BpduRelay {
    pub(super) first: SwitchHandle,
    pub(super) in_flight: Arc<AtomicUsize>,
}

impl BpduRelay {
    /// Passes a copy of `frame` (its first `limit` bytes) to the first worker, which runs
    /// `take` on it as a job. Returns `false`, passing nothing, when [`BPDUS_IN_FLIGHT`] are
    /// already on their way (the caller counts `no_room`): a flood cannot grow the job queue.
    pub(super) fn pass(
        &self,
        frame: &[u8],
        limit: usize,
        take: impl FnOnce(&mut SwitchState, &[u8], Instant) + Send + 'static,
    ) -> bool {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= BPDUS_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let copy = frame[..frame.len().min(limit)].to_vec();
        let in_flight = Arc::clone(&self.in_flight);
        let _ = self.first.submit(Box::new(move |state, now| {
            in_flight.fetch_sub(1, Ordering::Relaxed);
            take(state, &copy, now);
        }));
        true
    }
}

impl SwitchState {
    /// Starts (or, with `None`, stops) the spanning tree at `now`, with every port in it.
    /// Call it on the first worker (before or while running): the other workers learn that
    /// BPDUs are no longer flooded and every port's state.
    pub fn stp_configure(&mut self, config: Option<StpConfig>, now: Instant) {
        self.now = now;
        let on = config.is_some();
        self.bridge.set_stp(on);
        for worker in &self.workers {
            let _ = worker.handle.submit(Box::new(move |state, _| state.bridge.set_stp(on)));
        }
        self.stp = config.map(Stp::new);
        if let Some(stp) = self.stp.as_mut() {
            for port in self.ports.iter().filter(|p| p.removed.is_none()) {
                stp.add_port(port.id, StpPortConfig::default(), port.link != LinkState::Down, now);
            }
        }
        self.apply_stp_events();
    }

    /// The spanning tree, if it runs (on the first worker).
    pub fn stp(&self) -> Option<&Stp> {
        self.stp.as_ref()
    }

    /// Sets port `id`'s spanning tree settings.
    pub fn stp_set_port(&mut self, id: PortId, config: StpPortConfig, now: Instant) {
        self.now = now;
        if let Some(stp) = self.stp.as_mut() {
            stp.set_port_config(id, config, now);
        }
        self.apply_stp_events();
    }

    /// A BPDU received on port `id`: to the tree, or counted under why it is dropped.
    pub(super) fn stp_receive(&mut self, id: PortId, frame: &[u8], now: Instant) {
        let verdict = match self.stp.as_mut() {
            Some(stp) => stp.receive(id, frame, now),
            None => Err(DropReason::LinkLocal),
        };
        if let Err(reason) = verdict {
            if let Some(port) = self.ports.get_mut(id.index()) {
                port.counters.drops.add(reason);
            }
        }
        self.apply_stp_events();
    }

    /// Port `id` joins the tree (called as it is installed on the first worker).
    pub(super) fn stp_port_added(&mut self, id: PortId) {
        if let Some(stp) = self.stp.as_mut() {
            stp.add_port(id, StpPortConfig::default(), true, self.now);
        }
        self.apply_stp_events();
    }

    /// Port `id` leaves the tree.
    pub(super) fn stp_port_removed(&mut self, id: PortId) {
        if let Some(stp) = self.stp.as_mut() {
            stp.remove_port(id, self.now);
        }
        self.apply_stp_events();
    }

    /// Port `id`'s link went up or down.
    pub(super) fn stp_link(&mut self, id: PortId, up: bool) {
        if let Some(stp) = self.stp.as_mut() {
            stp.set_link(id, up, self.now);
        }
        self.apply_stp_events();
    }

    /// Carries out what the tree decided: port states on every worker, flushes, log lines.
    fn apply_stp_events(&mut self) {
        let Some(stp) = self.stp.as_mut() else { return };
        let events = stp.take_events();
        for event in events {
            match event {
                StpEvent::State { port, state } => {
                    self.bridge.set_stp_state(port, state);
                    for worker in &self.workers {
                        let _ = worker.handle.submit(Box::new(move |s, _| s.bridge.set_stp_state(port, state)));
                    }
                    let name = self.ports.get(port.index()).map_or("?", |p| p.info.name.as_str());
                    tracing::info!(port = name, state = ?state, "spanning tree port state");
                }
                StpEvent::Flush { port } => {
                    self.fdb_flush(Some(port));
                }
                StpEvent::GuardTripped { port } => {
                    let name = self.ports.get(port.index()).map_or("?", |p| p.info.name.as_str());
                    tracing::warn!(
                        port = name,
                        "BPDU received on a port with bpdu_guard: the port is disabled until its link goes down and up"
                    );
                }
                StpEvent::NewRoot { root } => {
                    tracing::info!(root = %crate::stp::format_bridge_id(root), "spanning tree root");
                }
            }
        }
    }
}

impl Switch {
    /// Whether the frame in slot `slot` from `port` is a BPDU for the spanning tree; if so it
    /// was taken (by this worker's tree or passed on to the first worker's).
    pub(super) fn divert_bpdu(&mut self, port: PortId, slot: usize, now: Instant) -> bool {
        if !self.state.bridge.stp() || !bpdu::is_bridge_group(self.batch[slot].frame()) {
            return false;
        }
        if self.state.worker == 0 {
            self.state.stp_receive(port, self.batch[slot].frame(), now);
            return true;
        }
        let Some(relay) = self.state.bpdu_relay.as_ref() else { return true };
        if !relay.pass(self.batch[slot].frame(), 128, move |state, frame, now| state.stp_receive(port, frame, now)) {
            self.state.ports[port.index()].counters.drops.add(DropReason::NoRoom);
        }
        true
    }

    /// Runs the tree's timers due at `now` and sends the BPDUs due.
    pub(super) fn run_stp(&mut self, now: Instant) {
        self.state.now = now;
        let Some(stp) = self.state.stp.as_mut() else { return };
        if stp.next_deadline().is_some_and(|d| d <= now) {
            stp.tick(now);
        }
        if !stp.wants_transmit() {
            return;
        }
        let mac = stp.config().mac;
        let mut out = std::mem::take(&mut self.stp_out);
        stp.transmit(now, mac, &mut out);
        self.state.apply_stp_events();
        for (id, frame) in out.drain(..) {
            let Some(port) = self.state.ports.get_mut(id.index()) else { continue };
            if port.removed.is_some() || port.vxlan.is_some() {
                continue;
            }
            let member = match port.bond.as_ref() {
                Some(bond) => match bond.members().iter().position(|m| m.usable()) {
                    Some(m) => m,
                    None => continue,
                },
                None => 0,
            };
            let Some(&index) = port.endpoints.get(member) else { continue };
            self.endpoints[index].note_send(index, &mut self.scratch.to_flush);
            if self.endpoints[index].io.send(&[IoSlice::new(&frame)], &VnetHdr::default()).is_ok() {
                port.counters.tx_frames += 1;
                port.counters.tx_bytes += frame.len() as u64;
            }
        }
        self.stp_out = out;
    }

    /// When the tree next has work.
    pub(super) fn stp_deadline(&self) -> Option<Instant> {
        self.state.stp.as_ref().and_then(Stp::next_deadline)
    }
}
