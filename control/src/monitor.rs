//! Link monitoring for every port on a kernel interface (netdev ports, the switch-side ends of
//! veth pairs, the kernel sides of TAPs): one thread per namespace listens to netlink link
//! events and tells the dataplane when a port's interface goes down, comes up, disappears or
//! reappears. A reappearing interface (not a TAP, which vswitchd owns) gets a fresh packet
//! socket swapped in; the rest of the switch never notices.

use std::collections::HashMap;
use std::io;
use std::thread;
use std::time::{Duration, Instant};

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

/// How often a monitor looks at its commands when no link event wakes it.
const COMMAND_CHECK: Duration = Duration::from_millis(100);

/// A change to what a namespace's monitor watches.
enum Command {
    /// Watch this interface too (its link state is read at once).
    Add(Watch),
    /// Stop watching the interfaces of this port.
    Forget(PortId),
}

/// The link monitors of a running switch, one thread per namespace with something to watch;
/// ports come and go while it runs.
#[allow(missing_debug_implementations)] // channels of commands and a handle: nothing to show
pub struct Monitors {
    switch: SwitchHandle,
    threads: HashMap<Option<String>, crossbeam_channel::Sender<Command>>,
}

impl Monitors {
    /// No monitors yet.
    pub fn new(switch: SwitchHandle) -> Monitors {
        Monitors { switch, threads: HashMap::new() }
    }

    /// Watches `watch`, an interface in namespace `netns_name` (`None`: vswitchd's own),
    /// starting that namespace's monitor if it has none. Returns once the monitor listens.
    pub fn watch(&mut self, netns_name: Option<String>, watch: Watch) -> io::Result<()> {
        if let Some(commands) = self.threads.get(&netns_name) {
            if commands.send(Command::Add(watch.clone())).is_ok() {
                return Ok(());
            }
            self.threads.remove(&netns_name); // it stopped: start another
        }
        let commands = spawn(netns_name.clone(), vec![watch], self.switch.clone())?;
        self.threads.insert(netns_name, commands);
        Ok(())
    }

    /// Stops watching the interfaces of `port`, everywhere.
    pub fn forget(&mut self, port: PortId) {
        for commands in self.threads.values() {
            let _ = commands.send(Command::Forget(port));
        }
    }

    /// Stops the monitor of namespace `netns_name` (it is about to be deleted: the monitor's
    /// sockets would keep it alive).
    pub fn stop(&mut self, netns_name: &Option<String>) {
        self.threads.remove(netns_name);
    }
}

/// Starts watching `watches`, which all live in namespace `netns` (`None`: vswitchd's own).
/// Returns once the monitor listens, so no event after this call is missed, with the way to
/// change what it watches (it stops when that is dropped).
fn spawn(
    netns_name: Option<String>,
    watches: Vec<Watch>,
    switch: SwitchHandle,
) -> io::Result<crossbeam_channel::Sender<Command>> {
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<io::Result<()>>(1);
    let (commands_tx, commands) = crossbeam_channel::unbounded::<Command>();
    let label = netns_name.clone().unwrap_or_else(|| "own".into());
    thread::Builder::new().name(format!("links-{label}")).spawn(move || {
        let setup = (|| -> io::Result<(NetlinkSocket, NetlinkSocket)> {
            if let Some(ns) = &netns_name {
                // This thread is dedicated to the namespace for its whole life.
                setns(netns::open(ns)?, CloneFlags::CLONE_NEWNET)?;
            }
            let events = NetlinkSocket::open_link_monitor()?;
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
        let mut monitor = Monitor {
            watches: watches.into_iter().map(|w| (w.device.clone(), w)).collect(),
            switch,
            polled: Instant::now(),
        };
        // The state as of now; events (and polls) from here on keep it current.
        monitor.poll(&mut query, true);
        let mut timeout = None;
        loop {
            let poll_every = monitor.watches.values().filter_map(|w| w.poll_every).min();
            let wake = poll_every.map_or(COMMAND_CHECK, |p| p.min(COMMAND_CHECK));
            if timeout != Some(wake) {
                if let Err(e) = events.set_read_timeout(wake) {
                    warn!(error = %e, "link monitor cannot set its timeout; stopped");
                    return;
                }
                timeout = Some(wake);
            }
            let received = events.events();
            // Commands first: a watch forgotten before its interface was deleted must not
            // see that deletion.
            if !monitor.take_commands(&commands, &mut query) {
                return;
            }
            match received {
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
                // No event for a while: the links that ask for it are checked below.
                Err(e) if e.errno == nix::errno::Errno::EAGAIN => {}
                // Events were lost: read every link again.
                Err(e) if e.errno == nix::errno::Errno::ENOBUFS => monitor.poll(&mut query, true),
                Err(e) => {
                    warn!(error = %e, "link monitor stopped");
                    return;
                }
            }
            if poll_every.is_some_and(|every| monitor.polled.elapsed() >= every) {
                if !monitor.take_commands(&commands, &mut query) {
                    return;
                }
                monitor.poll(&mut query, false);
            }
        }
    })?;
    ready_rx.recv().map_err(|_| io::Error::other("link monitor thread died"))??;
    Ok(commands_tx)
}

struct Monitor {
    watches: HashMap<String, Watch>,
    switch: SwitchHandle,
    /// When the links that ask for it were last read.
    polled: Instant,
}

impl Monitor {
    /// Applies the commands waiting; `false` once the [`Monitors`] end is gone (stop).
    fn take_commands(&mut self, commands: &crossbeam_channel::Receiver<Command>, query: &mut NetlinkSocket) -> bool {
        loop {
            match commands.try_recv() {
                Ok(Command::Add(watch)) => {
                    let name = watch.device.clone();
                    self.watches.insert(name.clone(), watch);
                    match query.link(&name) {
                        Ok(Some(link)) => self.on_link(&link),
                        Ok(None) => self.on_gone(&name, None),
                        Err(e) => warn!(device = %name, error = %e, "cannot read link state"),
                    }
                }
                Ok(Command::Forget(port)) => self.watches.retain(|_, w| w.port != port),
                Err(crossbeam_channel::TryRecvError::Empty) => return true,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Reads the links of the watches that poll (or of all, with `all`) and applies them, in
    /// port and member order, so a bond's first usable member is the first one reported (two
    /// ends bonded back to back then pick the same active member).
    fn poll(&mut self, query: &mut NetlinkSocket, all: bool) {
        self.polled = Instant::now();
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
