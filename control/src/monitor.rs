//! Link monitoring for every port on a kernel interface (netdev ports, the switch-side ends of
//! veth pairs, the kernel sides of TAPs): one thread per namespace listens to netlink link
//! events and tells the dataplane when a port's interface goes down, comes up, disappears or
//! reappears. A reappearing interface (not a TAP, which vswitchd owns) gets a fresh packet
//! socket swapped in; the rest of the switch never notices.

use std::collections::HashMap;
use std::io;
use std::thread;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use tracing::{info, warn};
use vswitchd_dataplane::PortId;
use vswitchd_dataplane::port::boxed;
use vswitchd_dataplane::port::detached::DetachedPort;
use vswitchd_dataplane::port::packet::PacketPort;
use vswitchd_dataplane::switch::{LinkState, SwitchHandle};

use crate::netlink::{LinkInfo, NetlinkSocket, Reply};
use crate::netns;

/// A port (or bond member) to keep attached to an interface.
#[derive(Debug, Clone)]
pub struct Watch {
    /// The port.
    pub port: PortId,
    /// The bond member, if the interface is one.
    pub member: Option<usize>,
    /// Its interface.
    pub device: String,
    /// The interface index the port's socket is bound to now, if any.
    pub ifindex: Option<u32>,
    /// Open a fresh packet socket when the interface is recreated (not for TAPs vswitchd
    /// owns: their fd is their I/O).
    pub reattach: bool,
    /// Check the link this often besides listening to events (a bond's `miimon`).
    pub poll_every: Option<Duration>,
    /// Sockets to open on reattaching: one per worker thread (a fanout group).
    pub queues: usize,
    /// The interface of a port that is not re-attached (a TAP vswitchd holds) went away: it
    /// does not come back, whatever later takes its name.
    pub gone: bool,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts watching `watches`, which all live in namespace `netns` (`None`: vswitchd's own).
/// Returns once the monitor listens, so no event after this call is missed.
pub fn spawn(netns_name: Option<String>, watches: Vec<Watch>, switch: SwitchHandle) -> io::Result<()> {
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<io::Result<()>>(1);
    let label = netns_name.clone().unwrap_or_else(|| "own".into());
    let poll_every = watches.iter().filter_map(|w| w.poll_every).min();
    thread::Builder::new().name(format!("links-{label}")).spawn(move || {
        let setup = (|| -> io::Result<(NetlinkSocket, NetlinkSocket)> {
            if let Some(ns) = &netns_name {
                // This thread is dedicated to the namespace for its whole life.
                setns(netns::open(ns)?, CloneFlags::CLONE_NEWNET)?;
            }
            let events = NetlinkSocket::open_link_monitor()?;
            if let Some(every) = poll_every {
                events.set_read_timeout(every)?;
            }
            Ok((events, NetlinkSocket::open()?))
        })();
        let (mut events, mut query) = match setup {
            Ok(sockets) => {
                let _ = ready_tx.send(Ok(()));
                sockets
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let mut monitor = Monitor { watches: watches.into_iter().map(|w| (w.device.clone(), w)).collect(), switch };
        // The state as of now; events (and polls) from here on keep it current.
        monitor.poll(&mut query, true);
        loop {
            match events.events() {
                Ok(batch) => {
                    for event in batch {
                        match event {
                            Reply::Link(link) => monitor.on_link(&link),
                            Reply::LinkGone(link) => {
                                if let Some(name) = link.name.clone() {
                                    monitor.on_gone(&name, Some(link.index));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                // The poll interval passed without events: check the links that ask for it.
                Err(e) if e.errno == nix::errno::Errno::EAGAIN => monitor.poll(&mut query, false),
                // Events were lost: read every link again.
                Err(e) if e.errno == nix::errno::Errno::ENOBUFS => monitor.poll(&mut query, true),
                Err(e) => {
                    warn!(error = %e, "link monitor stopped");
                    return;
                }
            }
        }
    })?;
    ready_rx.recv().map_err(|_| io::Error::other("link monitor thread died"))?
}

struct Monitor {
    watches: HashMap<String, Watch>,
    switch: SwitchHandle,
}

impl Monitor {
    /// Reads the links of the watches that poll (or of all, with `all`) and applies them, in
    /// port and member order, so a bond's first usable member is the first one reported (two
    /// ends bonded back to back then pick the same active member).
    fn poll(&mut self, query: &mut NetlinkSocket, all: bool) {
        let mut watches: Vec<&Watch> = self.watches.values().filter(|w| all || w.poll_every.is_some()).collect();
        watches.sort_by_key(|w| (w.port, w.member));
        let names: Vec<String> = watches.into_iter().map(|w| w.device.clone()).collect();
        for name in names {
            match query.link(&name) {
                Ok(Some(link)) => self.on_link(&link),
                Ok(None) => self.on_gone(&name, None),
                Err(e) => warn!(device = %name, error = %e, "cannot read link state"),
            }
        }
    }

    fn on_link(&mut self, link: &LinkInfo) {
        let Some(name) = &link.name else { return };
        let Some(watch) = self.watches.get_mut(name) else { return };
        let (port, member) = (watch.port, watch.member);
        if watch.ifindex != Some(link.index) && !watch.reattach {
            if watch.gone {
                // A TAP vswitchd held is gone for good; a new interface that takes its name is
                // someone else's, not this port coming back.
                return;
            }
            watch.ifindex = Some(link.index);
        }
        if watch.ifindex != Some(link.index) {
            // New or recreated interface: attach a fresh socket (this thread is in its namespace).
            match PacketPort::open_group(name, watch.queues) {
                Ok(sockets) => {
                    info!(device = %name, ifindex = link.index, "attaching");
                    watch.ifindex = Some(link.index);
                    let ios = boxed(sockets);
                    let _ = self.switch.call(move |s, _| s.replace_port_queues(port, member, ios), CALL_TIMEOUT);
                }
                Err(e) => warn!(device = %name, error = %e, "cannot attach"),
            }
        }
        let running = link.is_running() && watch.ifindex == Some(link.index);
        let _ = self.switch.call(
            move |s, now| match member {
                Some(m) => s.bond_carrier(port, m, running, now),
                None => s.set_link(port, if running { LinkState::Up } else { LinkState::Down }),
            },
            CALL_TIMEOUT,
        );
    }

    fn on_gone(&mut self, name: &str, index: Option<u32>) {
        let Some(watch) = self.watches.get_mut(name) else { return };
        if index.is_some() && watch.ifindex != index {
            return; // an interface that merely had the same name earlier
        }
        if watch.ifindex.is_some() {
            info!(device = %name, "interface gone; detached until it returns");
        }
        watch.ifindex = None;
        watch.gone |= !watch.reattach;
        let (port, member, reattach, queues) = (watch.port, watch.member, watch.reattach, watch.queues);
        let _ = self.switch.call(
            move |s, now| {
                if reattach {
                    s.replace_port_queues(port, member, DetachedPort::queues(queues));
                }
                match member {
                    Some(m) => s.bond_carrier(port, m, false, now),
                    None => s.set_link(port, LinkState::Absent),
                }
            },
            CALL_TIMEOUT,
        );
    }
}
