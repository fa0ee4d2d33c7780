//! BGP EVPN through FRR for `control = "evpn"` VXLAN ports: FRR's zebra speaks to the kernel,
//! so for each VNI vswitchd creates what zebra expects (a kernel bridge, a kernel VXLAN device
//! on another UDP port, and a veth pair with one end in the bridge: the "local" port), reads
//! the FDB entries zebra installs on the VXLAN device (all-zero MAC: a remote VTEP to flood to;
//! `extern_learn`: a MAC behind a remote VTEP) into the port's flood list and pinned MACs, and
//! advertises the MACs the switch has behind its other ports in that VNI as static entries on
//! the local port, which zebra sends out as type-2 routes.
//!
//! [`Core`] is the sans-I/O part: FDB events in, dataplane changes out; [`local_changes`] is
//! the diff of advertised MACs. [`Agent`] is the thread that carries them out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use tracing::{info, warn};
use vswitchd_dataplane::PortId;
use vswitchd_dataplane::VlanId;
use vswitchd_dataplane::switch::SwitchHandle;
use vswitchd_dataplane::vlan::VlanMode;
use vswitchd_dataplane::vxlan::VniMap;
use vswitchd_dataplane::wire::MacAddr;

use crate::netlink::NetlinkSocket;
use crate::netlink::fdb::{self, FdbEntry};
use crate::topology::{PortSpec, VxlanSpec};

/// The UDP port of the kernel VXLAN devices created for EVPN: not vswitchd's, so the kernel
/// never takes its traffic (they carry none: no frame enters their bridges).
pub const KERNEL_UDP_PORT: u16 = 4790;

/// Most MACs behind remote VTEPs pinned for one port (the rest are flooded to, and counted).
pub const MAX_REMOTE_MACS: usize = 65_536;

/// Most remote VTEPs EVPN makes flood targets of one port (more are ignored, and counted).
pub const MAX_REMOTES: usize = 4096;

/// Most local MACs advertised for one port.
pub const MAX_LOCAL_MACS: usize = 65_536;

/// How often the switch's FDB is read for local MACs to advertise.
pub const ADVERTISE_EVERY: Duration = Duration::from_millis(200);

/// The kernel objects of one VNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelNames {
    /// The bridge.
    pub bridge: String,
    /// The VXLAN device, a port of the bridge.
    pub vxlan: String,
    /// The veth end in the bridge that carries the advertised (local) MACs.
    pub local: String,
    /// Its peer, alone.
    pub peer: String,
}

/// The names of VNI `vni`'s kernel objects.
pub fn kernel_names(vni: u32) -> KernelNames {
    KernelNames {
        bridge: format!("evb{vni}"),
        vxlan: format!("evx{vni}"),
        local: format!("evl{vni}"),
        peer: format!("evp{vni}"),
    }
}

/// The VNIs of `spec` with the switch VLAN each is carried in (`vlan` is the port's own, for
/// a port with one VNI).
pub fn vnis(spec: &VxlanSpec, vlan: &VlanMode) -> Vec<(u32, VlanId)> {
    match &spec.vnis {
        VniMap::Single(vni) => {
            let v = match vlan {
                VlanMode::Access(v) => *v,
                _ => VlanId::NONE,
            };
            vec![(*vni, v)]
        }
        VniMap::PerVlan(map) => map.clone(),
    }
}

/// A change to make to the VXLAN port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Flood to this remote VTEP.
    AddRemote(IpAddr),
    /// Stop flooding to it.
    RemoveRemote(IpAddr),
    /// Send frames to `mac` in `vlan` to `remote` only.
    Pin {
        /// The VLAN.
        vlan: VlanId,
        /// The MAC.
        mac: MacAddr,
        /// Its VTEP.
        remote: IpAddr,
    },
    /// Forget where `mac` in `vlan` is.
    Unpin {
        /// The VLAN.
        vlan: VlanId,
        /// The MAC.
        mac: MacAddr,
    },
}

/// What zebra has said, per VXLAN device, and the changes it means for the port.
#[derive(Debug, Default)]
pub struct Core {
    /// The kernel VXLAN devices by index: the switch VLAN of each.
    devices: HashMap<u32, VlanId>,
    /// Remotes from the file: never removed by EVPN.
    configured: BTreeSet<IpAddr>,
    /// Each remote VTEP zebra named, with the VLANs (VNIs) it named it for.
    remotes: BTreeMap<IpAddr, BTreeSet<VlanId>>,
    /// MACs behind remote VTEPs.
    macs: BTreeMap<(VlanId, MacAddr), IpAddr>,
    /// MACs not pinned, and VTEPs not flooded to, because their table was full.
    pub dropped: u64,
}

impl Core {
    /// A core for the VXLAN devices `devices` (index, VLAN), beside the file's `configured`
    /// remotes.
    pub fn new(devices: impl IntoIterator<Item = (u32, VlanId)>, configured: &[IpAddr]) -> Core {
        Core {
            devices: devices.into_iter().collect(),
            configured: configured.iter().copied().collect(),
            ..Core::default()
        }
    }

    /// Whether `mac` in `vlan` is known behind a remote VTEP.
    pub fn is_remote(&self, vlan: VlanId, mac: MacAddr) -> bool {
        self.macs.contains_key(&(vlan, mac))
    }

    /// The remotes EVPN floods to now.
    pub fn remotes(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.remotes.keys().copied()
    }

    /// Takes in an FDB entry added (`added`) or deleted; returns the port changes it means.
    pub fn on_entry(&mut self, added: bool, e: &FdbEntry) -> Vec<Change> {
        let Some(&vlan) = self.devices.get(&e.ifindex) else { return Vec::new() };
        // The VXLAN device's own table (`self`, with a `dst`); the bridge's copies have none.
        let Some(dst) = e.dst else { return Vec::new() };
        if e.flags & fdb::NTF_MASTER != 0 || dst.is_unspecified() || dst.is_multicast() {
            return Vec::new();
        }
        let mut out = Vec::new();
        if e.mac == MacAddr([0; 6]) {
            if added {
                if !self.remotes.contains_key(&dst) && self.remotes.len() >= MAX_REMOTES {
                    self.dropped += 1;
                    return out;
                }
                let vlans = self.remotes.entry(dst).or_default();
                if vlans.is_empty() && !self.configured.contains(&dst) {
                    out.push(Change::AddRemote(dst));
                }
                vlans.insert(vlan);
            } else if let Some(vlans) = self.remotes.get_mut(&dst) {
                vlans.remove(&vlan);
                if vlans.is_empty() {
                    self.remotes.remove(&dst);
                    if !self.configured.contains(&dst) {
                        out.push(Change::RemoveRemote(dst));
                    }
                }
            }
            return out;
        }
        if !e.extern_learned() || !e.mac.is_valid_source() {
            return out;
        }
        let key = (vlan, e.mac);
        if added {
            if self.macs.get(&key) == Some(&dst) {
                return out;
            }
            if !self.macs.contains_key(&key) && self.macs.len() >= MAX_REMOTE_MACS {
                self.dropped += 1;
                return out;
            }
            self.macs.insert(key, dst);
            out.push(Change::Pin { vlan, mac: e.mac, remote: dst });
        } else if self.macs.get(&key) == Some(&dst) {
            // A delete naming the old VTEP after a move to a new one changes nothing.
            self.macs.remove(&key);
            out.push(Change::Unpin { vlan, mac: e.mac });
        }
        out
    }
}

/// A MAC in a switch VLAN.
pub type VlanMac = (VlanId, MacAddr);

/// The static entries to add and to delete so that exactly `wanted` is advertised, given
/// `advertised`.
pub fn local_changes(advertised: &BTreeSet<VlanMac>, wanted: &BTreeSet<VlanMac>) -> (Vec<VlanMac>, Vec<VlanMac>) {
    (wanted.difference(advertised).copied().collect(), advertised.difference(wanted).copied().collect())
}

/// The thread that keeps one EVPN port in step with zebra. Dropped, it stops (the kernel
/// objects go with the port's plumbing).
#[allow(missing_debug_implementations)]
pub struct Agent {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One VNI as the agent runs it.
struct Vni {
    vlan: VlanId,
    vxlan_index: u32,
    local_index: u32,
}

/// Starts the agent of EVPN port `port` (switch port `id`), whose kernel objects exist.
pub fn start(port: &PortSpec, spec: &VxlanSpec, id: PortId, switch: SwitchHandle) -> io::Result<Agent> {
    let mut socket = NetlinkSocket::open()?;
    let mut vnis = Vec::new();
    for (vni, vlan) in self::vnis(spec, &port.vlan) {
        let names = kernel_names(vni);
        vnis.push(Vni {
            vlan,
            vxlan_index: socket.require_link(&names.vxlan)?,
            local_index: socket.require_link(&names.local)?,
        });
    }
    let monitor = NetlinkSocket::open_neigh_monitor()?;
    monitor.set_read_timeout(ADVERTISE_EVERY / 2)?;
    let core = Core::new(vnis.iter().map(|v| (v.vxlan_index, v.vlan)), &spec.remotes);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let name = port.name.clone();
    let thread = thread::Builder::new()
        .name(format!("evpn-{}", port.name))
        .spawn(move || run(&name, core, vnis, socket, monitor, id, switch, &flag))?;
    Ok(Agent { stop, thread: Some(thread) })
}

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[allow(clippy::too_many_arguments)]
fn run(
    name: &str,
    mut core: Core,
    vnis: Vec<Vni>,
    mut socket: NetlinkSocket,
    mut monitor: NetlinkSocket,
    id: PortId,
    switch: SwitchHandle,
    stop: &AtomicBool,
) {
    info!(port = %name, vnis = vnis.len(), "EVPN: following zebra's FDB entries");
    // Events from here on are queued on the monitor; the dump gives what was there before.
    let mut changes = Vec::new();
    match socket.fdb() {
        Ok(entries) => {
            for e in &entries {
                changes.extend(core.on_entry(true, e));
            }
        }
        Err(e) => warn!(port = %name, error = %e, "EVPN: cannot read the FDB"),
    }
    let vlans: Vec<VlanId> = vnis.iter().map(|v| v.vlan).collect();
    let mut advertised: BTreeSet<(VlanId, MacAddr)> = BTreeSet::new();
    let mut last_advert = std::time::Instant::now() - ADVERTISE_EVERY;
    let mut reported = 0;
    while !stop.load(Ordering::SeqCst) {
        if core.dropped > reported {
            warn!(port = %name, dropped = core.dropped, "EVPN: tables full; VTEPs or MACs left out");
            reported = core.dropped;
        }
        if !changes.is_empty() {
            apply(&switch, id, std::mem::take(&mut changes));
        }
        if last_advert.elapsed() >= ADVERTISE_EVERY {
            last_advert = std::time::Instant::now();
            let vl = vlans.clone();
            let found = switch.call(move |s, now| s.fdb_macs_except(id, &vl, now, MAX_LOCAL_MACS), CALL_TIMEOUT);
            if let Ok(found) = found {
                // A MAC the FDB has on a local port is local, even if EVPN still places it
                // behind a remote VTEP: it moved here, and advertising it makes the move known.
                let wanted: BTreeSet<(VlanId, MacAddr)> = found.into_iter().collect();
                let (add, del) = local_changes(&advertised, &wanted);
                for (vlan, mac) in add {
                    let Some(v) = vnis.iter().find(|v| v.vlan == vlan) else { continue };
                    match socket.execute(fdb::add_static(v.local_index, mac)) {
                        Ok(_) => {
                            advertised.insert((vlan, mac));
                        }
                        Err(e) => warn!(port = %name, %mac, error = %e, "EVPN: cannot advertise a MAC"),
                    }
                }
                for (vlan, mac) in del {
                    advertised.remove(&(vlan, mac));
                    let Some(v) = vnis.iter().find(|v| v.vlan == vlan) else { continue };
                    // Gone already (zebra may take a local MAC back when it moved away): fine.
                    let _ = socket.execute(fdb::delete(v.local_index, mac));
                }
            }
        }
        match monitor.fdb_events() {
            Ok(events) => {
                for (added, e) in &events {
                    changes.extend(core.on_entry(*added, e));
                }
            }
            Err(e) if e.errno == nix::errno::Errno::EAGAIN => {}
            Err(e) if e.errno == nix::errno::Errno::ENOBUFS => {
                // Events were lost: read the whole table again and compare.
                warn!(port = %name, "EVPN: FDB events lost; reading the table again");
                changes.extend(resync(&mut core, &mut socket));
            }
            Err(e) => {
                warn!(port = %name, error = %e, "EVPN: cannot read FDB events");
                thread::sleep(ADVERTISE_EVERY);
            }
        }
    }
}

/// After lost events: what the table holds now against what the core believed.
fn resync(core: &mut Core, socket: &mut NetlinkSocket) -> Vec<Change> {
    let Ok(entries) = socket.fdb() else { return Vec::new() };
    let mut fresh = Core::new(core.devices.clone(), &core.configured.iter().copied().collect::<Vec<_>>());
    for e in &entries {
        fresh.on_entry(true, e);
    }
    let mut out = Vec::new();
    for r in core.remotes.keys().filter(|r| !fresh.remotes.contains_key(r) && !core.configured.contains(r)) {
        out.push(Change::RemoveRemote(*r));
    }
    for r in fresh.remotes.keys().filter(|r| !core.remotes.contains_key(r) && !core.configured.contains(r)) {
        out.push(Change::AddRemote(*r));
    }
    for (&(vlan, mac), _) in core.macs.iter().filter(|(k, _)| !fresh.macs.contains_key(k)) {
        out.push(Change::Unpin { vlan, mac });
    }
    for (&(vlan, mac), &remote) in fresh.macs.iter().filter(|(k, r)| core.macs.get(k) != Some(r)) {
        out.push(Change::Pin { vlan, mac, remote });
    }
    fresh.dropped = core.dropped;
    *core = fresh;
    out
}

/// Makes `changes` in the dataplane, in one job.
fn apply(switch: &SwitchHandle, id: PortId, changes: Vec<Change>) {
    let result = switch.call(
        move |s, _| {
            for c in changes {
                let done = match c {
                    Change::AddRemote(ip) => s.vxlan_flood_remote(id, ip, true).map(drop),
                    Change::RemoveRemote(ip) => s.vxlan_flood_remote(id, ip, false).map(drop),
                    Change::Pin { vlan, mac, remote } => s.vxlan_pin(id, vlan, mac, remote),
                    Change::Unpin { vlan, mac } => s.vxlan_unpin(id, vlan, mac).map(drop),
                };
                if let Err(e) = done {
                    return Err(e.to_string());
                }
            }
            Ok(())
        },
        CALL_TIMEOUT,
    );
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "EVPN: cannot change the VXLAN port"),
        Err(e) => warn!(error = %e, "EVPN: the dataplane did not take the change"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::message::{Reply, parse_replies};

    const VX: u32 = 7;

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }
    fn ne32(v: u32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    /// An `RTM_NEWNEIGH` (or `RTM_DELNEIGH`) for `mac` on device `ifindex`, laid out as the
    /// kernel sends what zebra installs: `self` with `dst` (and `extern_learn` for a MAC).
    fn message(new: bool, ifindex: u32, mac: [u8; 6], dst: [u8; 4], flags: u8, state: u16) -> Vec<u8> {
        [
            &ne32(16 + 12 + 12 + 8)[..],
            &ne16(if new { 28 } else { 29 }),
            &ne16(0),
            &ne32(0),
            &ne32(0),
            &[7, 0, 0, 0], // AF_BRIDGE
            &ne32(ifindex),
            &ne16(state),
            &[flags, 0],
            &ne16(10),
            &ne16(2), // NDA_LLADDR
            &mac,
            &[0, 0],
            &ne16(8),
            &ne16(1), // NDA_DST
            &dst,
        ]
        .concat()
    }

    fn feed(core: &mut Core, bytes: &[u8]) -> Vec<Change> {
        let mut out = Vec::new();
        for (_, r) in parse_replies(bytes) {
            match r {
                Reply::Neigh(e) => out.extend(core.on_entry(true, &e)),
                Reply::NeighGone(e) => out.extend(core.on_entry(false, &e)),
                other => panic!("{other:?}"),
            }
        }
        out
    }

    const B: [u8; 4] = [10, 0, 100, 2];
    const C: [u8; 4] = [10, 0, 100, 3];
    const HOST: [u8; 6] = [0x56, 0xac, 0x5b, 0xab, 0xf0, 0x0c];

    fn ip(a: [u8; 4]) -> IpAddr {
        IpAddr::from(a)
    }

    #[test]
    fn flood_entries_become_remotes_and_go_with_their_last_vni() {
        let v10 = VlanId::new(10).unwrap();
        let v20 = VlanId::new(20).unwrap();
        let mut core = Core::new([(VX, v10), (VX + 1, v20)], &[ip(C)]);
        let flood = |new, dev, dst| message(new, dev, [0; 6], dst, fdb::NTF_SELF, fdb::NUD_PERMANENT);
        assert_eq!(feed(&mut core, &flood(true, VX, B)), vec![Change::AddRemote(ip(B))]);
        assert_eq!(feed(&mut core, &flood(true, VX + 1, B)), vec![], "named again for another VNI");
        assert_eq!(feed(&mut core, &flood(true, VX, C)), vec![], "a remote from the file already");
        assert_eq!(feed(&mut core, &flood(false, VX, B)), vec![]);
        assert_eq!(feed(&mut core, &flood(false, VX + 1, B)), vec![Change::RemoveRemote(ip(B))]);
        assert_eq!(feed(&mut core, &flood(false, VX, C)), vec![], "the file's remote stays");
        // Another device's entries, and ARP-style entries, are not ours.
        assert_eq!(feed(&mut core, &flood(true, 99, B)), vec![]);
        let mut inet = flood(true, VX, B);
        inet[16] = 2;
        assert!(parse_replies(&inet).iter().all(|(_, r)| matches!(r, Reply::Other(_))));
    }

    #[test]
    fn extern_learned_macs_are_pinned_and_follow_a_move() {
        let mut core = Core::new([(VX, VlanId::NONE)], &[]);
        let learned = fdb::NTF_SELF | fdb::NTF_EXT_LEARNED;
        let to = |dst| Change::Pin { vlan: VlanId::NONE, mac: MacAddr(HOST), remote: ip(dst) };
        assert_eq!(feed(&mut core, &message(true, VX, HOST, B, learned, 0)), vec![to(B)]);
        assert!(core.is_remote(VlanId::NONE, MacAddr(HOST)));
        assert_eq!(feed(&mut core, &message(true, VX, HOST, B, learned, 0)), vec![], "the same again");
        // Moved: zebra replaces the entry with the new VTEP, then a late delete of the old one.
        assert_eq!(feed(&mut core, &message(true, VX, HOST, C, learned, 0)), vec![to(C)]);
        assert_eq!(feed(&mut core, &message(false, VX, HOST, B, learned, 0)), vec![]);
        assert_eq!(
            feed(&mut core, &message(false, VX, HOST, C, learned, 0)),
            vec![Change::Unpin { vlan: VlanId::NONE, mac: MacAddr(HOST) }]
        );
        // Not extern-learned (a static entry someone added), or a multicast MAC: left alone.
        assert_eq!(feed(&mut core, &message(true, VX, HOST, B, fdb::NTF_SELF, fdb::NUD_NOARP)), vec![]);
        assert_eq!(feed(&mut core, &message(true, VX, [1, 0, 0x5e, 0, 0, 1], B, learned, 0)), vec![]);
        // The bridge's copy (`master`) carries no VTEP.
        let mut bridge_copy = message(true, VX, HOST, B, fdb::NTF_MASTER | fdb::NTF_EXT_LEARNED, 0);
        bridge_copy.truncate(16 + 12 + 12);
        bridge_copy[0..4].copy_from_slice(&ne32(40));
        assert_eq!(feed(&mut core, &bridge_copy), vec![]);
    }

    /// Real messages from the kernel (6.x), dumped with `RTM_GETNEIGH` in family `AF_BRIDGE`
    /// after `bridge fdb append 00:00:00:00:00:00 dev evx1 dst 192.0.2.2` and `bridge fdb add
    /// 56:ac:5b:ab:f0:0c dev evx1 dst 192.0.2.2 self extern_learn` on VXLAN device 3 in bridge 2:
    /// the device's own MAC (in the bridge, permanent), the MAC entry, the flood entry; and a
    /// multicast entry of the bridge itself.
    const REAL: [&str; 4] = [
        "4c0000001c00020001000000ec6500000700000003000000800000000a0002005a6626a9b3b10000\
         080009000200000008000f000000000014000300000000001c0000001c00000000000000",
        "440000001c00020001000000ec6500000700000003000000c00012010a00020056ac5babf00c0000\
         08000100c000020214000300000000001b0000001b00000000000000",
        "440000001c00020001000000ec6500000700000003000000c00002010a0002000000000000000000\
         08000100c00002021400030000000000190000001c00000000000000",
        "280000001c00020001000000ec6500000700000002000000800002000a0002003333000000010000",
    ];

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn real_kernel_messages() {
        let mut core = Core::new([(3, VlanId::NONE)], &[]);
        let changes: Vec<Vec<Change>> = REAL.iter().map(|m| feed(&mut core, &hex(m))).collect();
        let b = ip([192, 0, 2, 2]);
        assert_eq!(
            changes,
            vec![
                vec![],
                vec![Change::Pin { vlan: VlanId::NONE, mac: MacAddr(HOST), remote: b }],
                vec![Change::AddRemote(b)],
                vec![],
            ]
        );
        let [(_, Reply::Neigh(own))] = parse_replies(&hex(REAL[0]))[..] else { panic!() };
        assert_eq!((own.master, own.dst, own.flags), (Some(2), None, 0));
        // The same as deletions (`RTM_DELNEIGH`) take them back.
        let gone: Vec<Vec<Change>> = REAL[1..3]
            .iter()
            .map(|m| {
                let mut bytes = hex(m);
                bytes[4] = 29;
                feed(&mut core, &bytes)
            })
            .collect();
        assert_eq!(
            gone,
            vec![vec![Change::Unpin { vlan: VlanId::NONE, mac: MacAddr(HOST) }], vec![Change::RemoveRemote(b)]]
        );
    }

    #[test]
    fn the_remote_tables_are_bounded() {
        let mut core = Core::new([(VX, VlanId::NONE)], &[]);
        let learned = fdb::NTF_SELF | fdb::NTF_EXT_LEARNED;
        for n in 0..(MAX_REMOTE_MACS as u32 + 10) {
            let b = n.to_be_bytes();
            feed(&mut core, &message(true, VX, [0x02, 0, b[0], b[1], b[2], b[3]], B, learned, 0));
        }
        assert_eq!(core.macs.len(), MAX_REMOTE_MACS);
        assert_eq!(core.dropped, 10);
        for n in 0..(MAX_REMOTES as u32 + 5) {
            let b = (0x0a00_0000 + n).to_be_bytes();
            feed(&mut core, &message(true, VX, [0; 6], b, fdb::NTF_SELF, fdb::NUD_PERMANENT));
        }
        assert_eq!(core.remotes().count(), MAX_REMOTES);
        assert_eq!(core.dropped, 15);
    }

    #[test]
    fn local_macs_diff() {
        let m = |n: u8| (VlanId::NONE, MacAddr([2, 0, 0, 0, 0, n]));
        let advertised: BTreeSet<_> = [m(1), m(2)].into();
        let wanted: BTreeSet<_> = [m(2), m(3)].into();
        assert_eq!(local_changes(&advertised, &wanted), (vec![m(3)], vec![m(1)]));
    }

    #[test]
    fn names_fit_an_interface_name() {
        let n = kernel_names(16_777_215);
        for name in [&n.bridge, &n.vxlan, &n.local, &n.peer] {
            assert!(name.len() <= 15, "{name}");
        }
    }
}
