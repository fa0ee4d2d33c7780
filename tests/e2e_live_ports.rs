//! Live changes for the port types `e2e_live.rs` leaves out, end to end with the real binaries,
//! each on one worker thread and on two: bond members joining and leaving a running bond (back
//! to back with a second vswitchd), a netdev port on an interface the test made (left in place
//! by `port del`), an internal port carrying the switch's own address, and a VXLAN port facing
//! the kernel's vxlan device whose remotes come and go (and whose UDP port `port del` frees).

mod support;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use vswitchd_control::netns;

const SECOND: Duration = Duration::from_secs(1);

/// `port`'s entry in `show`.
fn shown(daemon: &Daemon, port: &str) -> Value {
    let show = daemon.ctl_json(&["show"]).unwrap();
    show["ports"].as_array().unwrap().iter().find(|p| p["name"] == port).cloned().unwrap_or(Value::Null)
}

/// `port`'s counter `counter`, from `port show`.
fn port_counter(daemon: &Daemon, port: &str, counter: &str) -> u64 {
    let shown = daemon.ctl_json(&["port", "show", port]).unwrap();
    shown["ports"][0][counter].as_u64().unwrap_or_else(|| panic!("no {counter} for {port}: {shown}"))
}

/// `port`'s received frames, from `port show`.
fn rx_frames(daemon: &Daemon, port: &str) -> u64 {
    port_counter(daemon, port, "rx_frames")
}

/// Stops `daemon` with SIGTERM; it must exit 0.
fn stop(daemon: &mut Daemon) {
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "vswitchd exited with {status}: {stderr}");
}

/// Bond `bond`'s entry in `bond show`.
fn bond(daemon: &Daemon, bond: &str) -> Value {
    daemon.ctl_json(&["bond", "show", bond]).unwrap()["bonds"][0].clone()
}

/// The members of `bond`, `name:usable` each, in `bond show`'s order.
fn members(daemon: &Daemon, name: &str) -> Vec<String> {
    let b = bond(daemon, name);
    b["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}:{}", m["name"].as_str().unwrap(), m["usable"]))
        .collect()
}

/// A member's counter from `bond show`.
fn member_counter(daemon: &Daemon, name: &str, member: &str, counter: &str) -> u64 {
    let b = bond(daemon, name);
    let m = b["members"].as_array().unwrap().iter().find(|m| m["name"] == member).cloned();
    m.and_then(|m| m[counter].as_u64()).unwrap_or_else(|| panic!("no {counter} for member {member}: {b}"))
}

/// Waits until `name`'s members on `daemon` are exactly `want` (`name:usable` each).
fn wait_members(daemon: &Daemon, name: &str, want: &[&str], what: &str) {
    let deadline = Instant::now() + 10 * SECOND;
    loop {
        let now = members(daemon, name);
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: after 10 s the members are {now:?}, not {want:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A switch ("near") whose balance-rr bond `bond0` starts with one veth member, `m1`, the far end
/// of which lies in the namespace of a second vswitchd ("far") with a bond of netdev members
/// `m1` and `m2` (m2's interface does not exist yet); a host behind each switch. `m2` joins live
/// (its veth's far end appears and the far side attaches to it), then `leaving` (`m1` or `m2`)
/// leaves live (its veth pair goes, the far side loses it): the hosts reach each other
/// throughout, over the members that are there, and the ports the changes do not touch keep
/// their counters.
fn bond_members_join_and_leave(threads: usize, leaving: &str) {
    let staying = if leaving == "m1" { "m2" } else { "m1" };
    with_tag(|tag| {
        let (near, far, ha, hb) =
            (format!("lb{tag}n"), format!("lb{tag}f"), format!("lb{tag}ha"), format!("lb{tag}hb"));
        let (host_a, host_b) = (format!("a{tag}"), format!("b{tag}"));
        let mut guard = NamespaceGuard::default();
        guard.create(&near);
        guard.create(&far);
        guard.adopt(&ha);
        guard.adopt(&hb);
        let ip_b = Ipv4Addr::new(10, 88, 0, 2);
        let mut near_sw = Daemon::start(
            &near,
            &format!(
                "[bridge]\nname = \"lbn{tag}\"\nthreads = {threads}\n\
                 [[netns]]\nname = \"{far}\"\n[[netns]]\nname = \"{ha}\"\n\
                 [[port]]\nname = \"bond0\"\ntype = \"bond\"\nmode = \"balance-rr\"\n\
                 [[port]]\nname = \"m1\"\ntype = \"veth\"\nnetns = \"{far}\"\nmaster = \"bond0\"\n\
                 [[port]]\nname = \"{host_a}\"\ntype = \"tap\"\nnetns = \"{ha}\"\naddress = \"10.88.0.1/24\"\n"
            ),
        );
        let mut far_sw = Daemon::start(
            &far,
            &format!(
                "[bridge]\nname = \"lbf{tag}\"\nthreads = {threads}\n[[netns]]\nname = \"{hb}\"\n\
                 [[port]]\nname = \"bond0\"\ntype = \"bond\"\nmode = \"balance-rr\"\n\
                 [[port]]\nname = \"m1\"\ntype = \"netdev\"\ndevice = \"m1\"\nmaster = \"bond0\"\n\
                 [[port]]\nname = \"m2\"\ntype = \"netdev\"\ndevice = \"m2\"\nmaster = \"bond0\"\n\
                 [[port]]\nname = \"{host_b}\"\ntype = \"tap\"\nnetns = \"{hb}\"\naddress = \"10.88.0.2/24\"\n"
            ),
        );
        // What both switches say, for failure messages.
        let state = || {
            let said = |d: &Daemon| {
                let (b, p) = (d.ctl(&["bond", "show"]), d.ctl(&["port", "show"]));
                format!("{}\n{}", b.unwrap_or_else(|e| e), p.unwrap_or_else(|e| e))
            };
            format!("\nnear:\n{}\nfar:\n{}", said(&near_sw), said(&far_sw))
        };
        wait_members(&near_sw, "bond0", &["m1:true"], "near: m1 up");
        wait_members(&far_sw, "bond0", &["m1:true", "m2:false"], "far: m1 up, m2 not there yet");
        assert_eq!(ping(&ha, ip_b, 3, 2 * SECOND), 3, "the hosts reach each other over m1: {}", state());
        let counters = |what: &str, before: &mut [u64; 2]| {
            let now = [rx_frames(&near_sw, &host_a), rx_frames(&far_sw, &host_b)];
            assert!(now[0] >= before[0] && now[1] >= before[1], "{what}: host ports' rx_frames {before:?} -> {now:?}");
            *before = now;
        };
        let mut host_rx = [0, 0];
        counters("at start", &mut host_rx);
        assert!(host_rx[0] >= 3 && host_rx[1] >= 3, "the pings were counted: {host_rx:?}");

        // m2 joins: its far end appears in the far switch's namespace, which attaches to it.
        let out = near_sw.ctl_ok(&["port", "add", "m2", "veth", &format!("netns={far}"), "master=bond0"]);
        println!("port add m2: {out}");
        assert!(links_in(&far).contains(&"m2".to_string()), "m2's far end is in {far}: {:?}", links_in(&far));
        wait_members(&near_sw, "bond0", &["m1:true", "m2:true"], "near: both members up");
        wait_members(&far_sw, "bond0", &["m1:true", "m2:true"], "far: m2 attached when it appeared");
        assert_eq!(ping(&ha, ip_b, 3, 2 * SECOND), 3, "the hosts reach each other over both members: {}", state());
        // Bytes, not frames: the TAP host hands over 64 KiB TCP super-frames.
        let tx = |member: &str| member_counter(&near_sw, "bond0", member, "tx_bytes");
        let (m1_tx, m2_tx) = (tx("m1"), tx("m2"));
        assert_eq!(tcp_transfer(&hb, ip_b, &ha, 4 << 20), 4 << 20, "TCP over both members");
        assert!(
            tx("m1") > m1_tx + (1 << 20) && tx("m2") > m2_tx + (1 << 20),
            "round robin puts both members to work: {}",
            state()
        );
        assert!(member_counter(&near_sw, "bond0", "m2", "rx_frames") > 0, "{}", state());
        counters("after m2 joined", &mut host_rx);

        // One leaves: its veth pair goes (vswitchd made it); the bond carries on over the other.
        let out = near_sw.ctl_ok(&["port", "del", leaving]);
        println!("port del {leaving}: {out}");
        wait_members(&near_sw, "bond0", &[&format!("{staying}:true")], "near: one member left");
        let (far_links, near_links) = (links_in(&far), links_in(&near));
        assert!(!far_links.iter().any(|l| l == leaving), "{leaving}'s far end is gone: {far_links:?}");
        assert!(!near_links.contains(&format!("{leaving}-sw")), "{leaving}'s near end is gone: {near_links:?}");
        let far_members = if leaving == "m1" { ["m1:false", "m2:true"] } else { ["m1:true", "m2:false"] };
        wait_members(&far_sw, "bond0", &far_members, "far: the member that left is lost");
        let mut want = vec!["bond0".to_string(), host_a.clone()];
        want.sort();
        assert_eq!(near_sw.port_names(), want, "members are no ports of their own");
        let staying_tx = tx(staying);
        assert_eq!(ping(&ha, ip_b, 3, 2 * SECOND), 3, "the hosts reach each other over {staying} alone: {}", state());
        assert_eq!(tcp_transfer(&hb, ip_b, &ha, 4 << 20), 4 << 20, "TCP over {staying} alone");
        assert!(tx(staying) > staying_tx + (3 << 20), "{staying} carries it all: {}", state());
        counters("after a member left", &mut host_rx);

        stop(&mut far_sw);
        stop(&mut near_sw);
        assert_eq!(links_in(&far), Vec::<String>::new(), "the near switch removed the veth pairs it made");
        assert_eq!(links_in(&near), Vec::<String>::new(), "the near switch removed what it made");
    });
}

#[test]
fn a_member_joins_a_running_bond_and_leaves_it_again_on_one_worker() {
    bond_members_join_and_leave(1, "m2");
}

#[test]
fn a_member_joins_a_running_bond_and_leaves_it_again_on_two_workers() {
    bond_members_join_and_leave(2, "m2");
}

#[test]
fn a_member_joins_a_running_bond_and_the_original_member_leaves_on_one_worker() {
    bond_members_join_and_leave(1, "m1");
}

#[test]
fn a_member_joins_a_running_bond_and_the_original_member_leaves_on_two_workers() {
    bond_members_join_and_leave(2, "m1");
}

/// A netdev port added live on a veth pair the test made (one end in vswitchd's namespace, the
/// other in a host's, with an address) forwards; `port del` leaves the interface in place.
fn a_live_netdev_port_forwards_and_its_interface_outlives_it(threads: usize) {
    with_tag(|tag| {
        let (sw, h1, h2) = (format!("ln{tag}sw"), format!("ln{tag}h1"), format!("ln{tag}h2"));
        let (a, nd, dev) = (format!("a{tag}"), format!("n{tag}"), format!("nd{tag}"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.create(&h2);
        guard.adopt(&h1);
        let mut daemon = Daemon::start(
            &sw,
            &format!(
                "[bridge]\nname = \"ln{tag}\"\nthreads = {threads}\n[[netns]]\nname = \"{h1}\"\n\
                 [[port]]\nname = \"{a}\"\ntype = \"tap\"\nnetns = \"{h1}\"\naddress = \"10.88.1.1/24\"\n"
            ),
        );
        ip(&["link", "add", &dev, "netns", &sw, "type", "veth", "peer", "name", "eth0", "netns", &h2]);
        ip(&["-n", &h2, "addr", "add", "10.88.1.2/24", "dev", "eth0"]);
        ip(&["-n", &h2, "link", "set", "eth0", "up"]);
        ip(&["-n", &sw, "link", "set", &dev, "up"]);
        let ip1 = Ipv4Addr::new(10, 88, 1, 1);
        assert_eq!(ping(&h2, ip1, 1, SECOND / 2), 0, "no path before the port is added");
        let a_rx = rx_frames(&daemon, &a);

        daemon.ctl_ok(&["port", "add", &nd, "netdev", &format!("device={dev}")]);
        let port = shown(&daemon, &nd);
        assert_eq!(port["type"], "netdev", "{port}");
        assert_eq!(port["link"], "up", "{port}");
        assert_eq!(ping(&h2, ip1, 3, 2 * SECOND), 3, "the host behind the netdev reaches the TAP's host");
        assert_eq!(tcp_transfer(&h1, ip1, &h2, 4 << 20), 4 << 20, "TCP through the netdev port");
        // Bytes, not frames: the veth hands over TCP super-frames.
        let nd_rx = port_counter(&daemon, &nd, "rx_bytes");
        assert!(nd_rx > 3 << 20, "the netdev port counted what it received: {nd_rx} bytes");
        let after = rx_frames(&daemon, &a);
        assert!(after >= a_rx, "the TAP port kept its counters ({a_rx} then {after})");

        daemon.ctl_ok(&["port", "del", &nd]);
        assert_eq!(daemon.port_names(), vec![a.clone()]);
        assert!(links_in(&sw).contains(&dev), "vswitchd left the interface it found: {:?}", links_in(&sw));
        assert_eq!(ping(&h2, ip1, 1, SECOND / 2), 0, "no path once the port is gone");
        assert!(rx_frames(&daemon, &a) >= after, "the TAP port kept its counters");
        ip(&["-n", &sw, "link", "del", &dev]);

        stop(&mut daemon);
        assert_eq!(links_in(&sw), Vec::<String>::new());
    });
}

#[test]
fn a_live_netdev_port_forwards_and_its_interface_outlives_it_on_one_worker() {
    a_live_netdev_port_forwards_and_its_interface_outlives_it(1);
}

#[test]
fn a_live_netdev_port_forwards_and_its_interface_outlives_it_on_two_workers() {
    a_live_netdev_port_forwards_and_its_interface_outlives_it(2);
}

/// An internal port added live with an address is the switch's own address, reachable from a
/// host on another port; `port del` removes its TAP.
fn a_live_internal_port_is_reachable_until_removed(threads: usize) {
    with_tag(|tag| {
        let (sw, h1) = (format!("li{tag}sw"), format!("li{tag}h1"));
        let a = format!("a{tag}");
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.adopt(&h1);
        let mut daemon = Daemon::start(
            &sw,
            &format!(
                "[bridge]\nname = \"li{tag}\"\nthreads = {threads}\n[[netns]]\nname = \"{h1}\"\n\
                 [[port]]\nname = \"{a}\"\ntype = \"veth\"\nnetns = \"{h1}\"\naddress = \"10.88.2.2/24\"\n"
            ),
        );
        let own = Ipv4Addr::new(10, 88, 2, 1);
        assert_eq!(ping(&h1, own, 1, SECOND / 2), 0, "nobody has the address yet");
        let a_rx = rx_frames(&daemon, &a);

        daemon.ctl_ok(&["port", "add", "br-int", "internal", "address=10.88.2.1/24"]);
        assert_eq!(shown(&daemon, "br-int")["type"], "internal");
        assert!(links_in(&sw).contains(&"br-int".to_string()), "{:?}", links_in(&sw));
        assert_eq!(ping(&h1, own, 3, 2 * SECOND), 3, "the host reaches the switch's own address");
        assert_eq!(tcp_transfer(&sw, own, &h1, 4 << 20), 4 << 20, "TCP to the switch's own address");
        let after = rx_frames(&daemon, &a);
        assert!(after > a_rx, "the veth port counted the traffic ({a_rx} then {after})");

        daemon.ctl_ok(&["port", "del", "br-int"]);
        assert_eq!(daemon.port_names(), vec![a.clone()]);
        assert!(!links_in(&sw).contains(&"br-int".to_string()), "its TAP is gone: {:?}", links_in(&sw));
        assert_eq!(ping(&h1, own, 1, SECOND / 2), 0, "the address went with the port");
        assert!(rx_frames(&daemon, &a) >= after, "the veth port kept its counters");

        stop(&mut daemon);
        assert_eq!(links_in(&sw), Vec::<String>::new());
    });
}

#[test]
fn a_live_internal_port_is_reachable_until_removed_on_one_worker() {
    a_live_internal_port_is_reachable_until_removed(1);
}

#[test]
fn a_live_internal_port_is_reachable_until_removed_on_two_workers() {
    a_live_internal_port_is_reachable_until_removed(2);
}

/// vswitchd with one TAP host (`a`, 10.88.3.1) facing the kernel's vxlan device (see
/// [`kernel_vtep`]; host `hb` at 10.88.3.2) over an underlay, on `threads` workers, with no VXLAN
/// port yet: [`VxlanLab::add_vxlan`] adds it live, with the kernel's VTEP (192.0.2.2) and a
/// second remote that never answers (192.0.2.9, so the port keeps one when the kernel's goes).
struct VxlanLab {
    daemon: Daemon,
    a: String,
    ha: String,
    hb: String,
    _guard: NamespaceGuard,
}

const VX_A: Ipv4Addr = Ipv4Addr::new(10, 88, 3, 1);
const VX_B: Ipv4Addr = Ipv4Addr::new(10, 88, 3, 2);

impl VxlanLab {
    fn new(tag: &str, threads: usize) -> VxlanLab {
        let (sw, kernel, ha, hb) =
            (format!("lx{tag}sw"), format!("lx{tag}k"), format!("lx{tag}ha"), format!("lx{tag}hb"));
        let a = format!("a{tag}");
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.create(&kernel);
        guard.create(&hb);
        guard.adopt(&ha);
        kernel_vtep(&sw, &kernel, &hb, "10.88.3.2/24", &[]);
        // Frames to the silent remote leave (a static neighbour, no ARP) and nobody takes them.
        ip(&["-n", &sw, "neigh", "add", "192.0.2.9", "lladdr", "02:00:00:00:00:09", "dev", "ul", "nud", "permanent"]);
        let daemon = Daemon::start(
            &sw,
            &format!(
                "[bridge]\nname = \"lx{tag}\"\nthreads = {threads}\n[[netns]]\nname = \"{ha}\"\n\
                 [[port]]\nname = \"{a}\"\ntype = \"tap\"\nnetns = \"{ha}\"\naddress = \"10.88.3.1/24\"\nmtu = 1450\n"
            ),
        );
        VxlanLab { daemon, a, ha, hb, _guard: guard }
    }

    fn add_vxlan(&self) {
        self.daemon.ctl_ok(&[
            "port",
            "add",
            "vx0",
            "vxlan",
            "vni=42",
            "local=192.0.2.1",
            "remotes=[192.0.2.2,192.0.2.9]",
            "dst_port=4789",
            "mtu=1450",
        ]);
    }

    /// The VXLAN port's configured remotes, sorted.
    fn remotes(&self) -> Vec<String> {
        let vx = self.daemon.ctl_json(&["vxlan", "show"]).unwrap()["tunnels"][0].clone();
        let mut r: Vec<String> = vx["remotes"]
            .as_array()
            .unwrap_or_else(|| panic!("no vxlan port: {vx}"))
            .iter()
            .filter(|r| r["configured"] == true)
            .map(|r| r["address"].as_str().unwrap().to_string())
            .collect();
        r.sort();
        r
    }

    /// The TAP host's port's received frames.
    fn a_rx(&self) -> u64 {
        rx_frames(&self.daemon, &self.a)
    }
}

/// A VXLAN port added live facing the kernel's vxlan device forwards both ways; `port del`
/// frees its UDP port (the test can bind it), so the port can be added again.
fn a_live_vxlan_port_forwards_and_port_del_frees_its_udp_port(threads: usize) {
    with_tag(|tag| {
        let mut lab = VxlanLab::new(tag, threads);
        let (ha, hb) = (lab.ha.clone(), lab.hb.clone());
        assert_eq!(ping(&ha, VX_B, 1, SECOND / 2), 0, "no path before the VXLAN port is added");
        let a_rx = lab.a_rx();

        lab.add_vxlan();
        assert_eq!(lab.remotes(), ["192.0.2.2", "192.0.2.9"]);
        assert_eq!(shown(&lab.daemon, "vx0")["type"], "vxlan");
        assert_eq!(ping(&ha, VX_B, 3, 2 * SECOND), 3, "through the kernel's VTEP");
        assert_eq!(ping(&hb, VX_A, 3, 2 * SECOND), 3, "from behind the kernel's VTEP");
        assert_eq!(tcp_transfer(&hb, VX_B, &ha, 4 << 20), 4 << 20, "TCP into the kernel's VTEP");
        let a_now = lab.a_rx();
        assert!(a_now > a_rx, "the TAP port counted the traffic ({a_rx} then {a_now})");

        // port del closes the UDP sockets: the port is free (the test can bind it), and the
        // VXLAN port can be added again.
        lab.daemon.ctl_ok(&["port", "del", "vx0"]);
        assert_eq!(lab.daemon.port_names(), vec![lab.a.clone()]);
        assert_eq!(ping(&ha, VX_B, 1, SECOND / 2), 0, "no path once the VXLAN port is gone");
        let bound = netns::run_in(&format!("lx{tag}sw"), || UdpSocket::bind("192.0.2.1:4789")).expect("enter");
        assert!(bound.is_ok(), "UDP port 4789 is still taken after port del: {:?}", bound.err());
        drop(bound);
        lab.add_vxlan();
        assert_eq!(ping(&ha, VX_B, 3, 2 * SECOND), 3, "the VXLAN port added again forwards");
        assert_eq!(ping(&hb, VX_A, 3, 2 * SECOND), 3, "both ways");
        let now = lab.a_rx();
        assert!(now >= a_now, "the TAP port kept its counters ({a_now} then {now})");

        stop(&mut lab.daemon);
    });
}

#[test]
fn a_live_vxlan_port_forwards_and_port_del_frees_its_udp_port_on_one_worker() {
    a_live_vxlan_port_forwards_and_port_del_frees_its_udp_port(1);
}

#[test]
fn a_live_vxlan_port_forwards_and_port_del_frees_its_udp_port_on_two_workers() {
    a_live_vxlan_port_forwards_and_port_del_frees_its_udp_port(2);
}

/// `vxlan remote del` of the kernel's VTEP makes the host behind it unreachable (nothing goes
/// to it, what it sends is refused as from an unknown remote), `vxlan remote add` brings it
/// back; and two hundred more del/add cycles each succeed and leave the port running.
fn vxlan_remotes_deleted_and_added_change_reachability(threads: usize) {
    with_tag(|tag| {
        let mut lab = VxlanLab::new(tag, threads);
        let (ha, hb) = (lab.ha.clone(), lab.hb.clone());
        lab.add_vxlan();
        assert_eq!(ping(&ha, VX_B, 3, 2 * SECOND), 3, "through the kernel's VTEP");
        let mut a_now = lab.a_rx();

        lab.daemon.ctl_ok(&["vxlan", "remote", "del", "vx0", "192.0.2.2"]);
        assert_eq!(lab.remotes(), ["192.0.2.9"]);
        assert_eq!(ping(&ha, VX_B, 2, SECOND), 0, "the far host is unreachable without its VTEP as a remote");
        assert_eq!(ping(&hb, VX_A, 2, SECOND), 0, "and cannot reach in");
        let vx = lab.daemon.ctl_json(&["vxlan", "show"]).unwrap()["tunnels"][0].clone();
        assert!(
            vx["drops"]["vxlan_unknown_remote"].as_u64().unwrap_or(0) > 0,
            "the kernel's datagrams are refused as from an unknown remote: {vx}"
        );
        let now = lab.a_rx();
        assert!(now >= a_now, "the TAP port kept its counters ({a_now} then {now})");
        a_now = now;

        lab.daemon.ctl_ok(&["vxlan", "remote", "add", "vx0", "192.0.2.2"]);
        assert_eq!(lab.remotes(), ["192.0.2.2", "192.0.2.9"]);
        assert_eq!(ping(&ha, VX_B, 3, 2 * SECOND), 3, "reachable again once the remote is back");
        assert_eq!(ping(&hb, VX_A, 3, 2 * SECOND), 3, "both ways");
        let now = lab.a_rx();
        assert!(now >= a_now, "the TAP port kept its counters ({a_now} then {now})");

        // Each change rebuilds the port (closes its UDP sockets, binds new ones): every one
        // must succeed and leave the port running.
        for cycle in 0..200 {
            for op in ["del", "add"] {
                let (code, _, stderr) = lab.daemon.ctl_status(&["vxlan", "remote", op, "vx0", "192.0.2.2"]);
                assert_eq!(code, 0, "cycle {cycle}: vxlan remote {op} failed: {stderr}; ports now {:?}", {
                    lab.daemon.port_names()
                });
            }
        }
        assert_eq!(lab.remotes(), ["192.0.2.2", "192.0.2.9"]);
        assert_eq!(ping(&ha, VX_B, 3, 2 * SECOND), 3, "still forwarding after the cycles");

        stop(&mut lab.daemon);
    });
}

#[test]
fn vxlan_remotes_deleted_and_added_change_reachability_on_one_worker() {
    vxlan_remotes_deleted_and_added_change_reachability(1);
}

#[test]
fn vxlan_remotes_deleted_and_added_change_reachability_on_two_workers() {
    vxlan_remotes_deleted_and_added_change_reachability(2);
}
