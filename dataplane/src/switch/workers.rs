//! The other workers: starting them over their own I/O, and the counters they publish to the first.

use super::*;

impl Switch {
    /// Starts a thread for each other worker, each a [`Switch`] over its own I/O with the
    /// same ports, a replica of the FDB, and a line back to this one.
    pub(super) fn start_workers(&mut self) -> io::Result<Vec<thread::JoinHandle<io::Result<()>>>> {
        let ios = std::mem::take(&mut self.worker_ios);
        if ios.is_empty() {
            return Ok(Vec::new());
        }
        let mut mesh = FdbSync::mesh(ios.len() + 1).into_iter();
        self.state.fdb_sync = mesh.next().ok_or_else(|| io::Error::other("no FDB sync end"))?;
        let now = self.clock.now();
        let owned: Vec<bool> = self.state.ports.iter().map(|p| p.bond.is_some()).collect();
        // Even with no bond yet: one may be added while the switch runs.
        let (handoff, receiver) = crate::handoff::channel(Arc::clone(&self.handle.waker));
        self.handoffs = Some(receiver);
        let handoff = Some(handoff);
        let mut started = Vec::new();
        for (index, (port_ios, sync)) in ios.into_iter().zip(mesh).enumerate() {
            let mut worker = Switch::new(&self.state.name, self.state.bridge.fdb().config())?;
            worker.clock = self.clock;
            worker.busy_poll = BusyPoller::new(self.busy_poll.mode());
            worker.state.threads = self.state.threads;
            worker.state.worker = index + 1;
            worker.state.bridge.set_stp(self.state.bridge.stp());
            for ((port, io), &owned) in self.state.ports.iter().zip(port_ios).zip(&owned) {
                worker.state.install(port.id, port.info.clone(), None, port.vxlan.clone(), vec![io], owned);
                worker.state.bridge.set_stp_state(port.id, self.state.bridge.stp_state(port.id));
            }
            worker.state.bpdu_relay = Some(spanning::BpduRelay {
                first: self.handle.clone(),
                in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            });
            worker.apply_io_changes()?;
            worker.state.handoff = handoff.clone();
            for entry in self.state.bridge.fdb().entries(now) {
                if entry.kind == crate::fdb::EntryKind::Static {
                    let _ = worker.state.bridge.fdb_mut().add_static(entry.vlan, entry.mac, entry.port);
                }
            }
            worker.state.fdb_sync = sync;
            let mdb = worker.state.bridge.mdb_mut();
            mdb.set_config(self.state.bridge.mdb().config());
            for port in self.state.bridge.mdb().static_routers() {
                mdb.set_static_router(port, true);
            }
            let totals = Arc::new(Mutex::new(WorkerTotals::default()));
            worker.publish = Some(Arc::clone(&totals));
            self.state.workers.push(WorkerLink { handle: worker.handle(), totals });
            // A worker that fails or panics stops the whole switch (its queues would otherwise
            // go unread, silently): the first worker then returns the failure.
            let first = self.handle.clone();
            let thread = thread::Builder::new().name(format!("worker-{}", index + 1)).spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run()));
                let result = match outcome {
                    Ok(result) => result,
                    Err(cause) => {
                        Err(io::Error::other(format!("worker {} panicked: {}", index + 1, panic_text(&cause))))
                    }
                };
                if result.is_err() {
                    let _ = first.stop();
                }
                result
            })?;
            started.push(thread);
        }
        Ok(started)
    }

    /// Publishes this worker's counters for the first worker (a no-op on the first worker).
    pub(super) fn publish_totals(&mut self, now: Instant) {
        let Some(publish) = &self.publish else { return };
        let mut totals = publish.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        totals.ports.clear();
        totals.ports.extend(self.state.ports.iter().map(|p| (p.counters, p.rx_errors)));
        totals.fdb_updates_lost = self.state.fdb_sync.lost;
        totals.busy_poll = self.busy_poll.counts();
        totals.bond_members.clear();
        for port in self.state.ports.iter().filter(|p| p.removed.is_none()) {
            let Some(bond) = &port.bond else { continue };
            totals.bond_members.extend(bond.members().iter().enumerate().map(|(i, m)| (port.id, i, m.counters)));
        }
        totals.tunnel_remotes.clear();
        totals.tunnel_stats.clear();
        for port in self.state.ports.iter().filter(|p| p.removed.is_none()) {
            let Some(vxlan) = &port.vxlan else { continue };
            totals.tunnel_remotes.extend(vxlan.remotes().iter().map(|r| (port.id, r.clone())));
            totals.tunnel_stats.push((port.id, vxlan.stats()));
        }
        self.unpublished = false;
        self.last_published = now;
    }
}

/// What a panic said, if it said it with a string.
pub fn panic_text(cause: &(dyn std::any::Any + Send)) -> String {
    cause
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| cause.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
