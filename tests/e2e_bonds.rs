//! Bonds end to end: two vswitchd instances, each with a bond of two members over two veth
//! links between them, and a host behind each. For every mode a TCP transfer is checked byte by
//! byte and the member counters must show the distribution the mode promises; active-backup
//! fails over while traffic flows, and the outage is measured with a numbered UDP stream.

mod support;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use vswitchd_control::netns;

const SECOND: Duration = Duration::from_secs(1);

/// The tests in this file push traffic through two switches each and one of them measures a
/// failover in milliseconds: they run one at a time, so that figure is not a measure of CPU
/// contention between tests.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
const HOST_A: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 1);
const HOST_B: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 2);

/// Two switches joined by a bond of two veth links, and a host behind each.
struct Lab {
    daemons: Vec<Daemon>,
    sw: [String; 2],
    hosts: [String; 2],
    _guard: NamespaceGuard,
    /// Last, so it is released after the daemons and namespaces are gone.
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Lab {
    fn new(bond_settings: &str) -> Lab {
        Lab::with_threads(bond_settings, 1)
    }

    /// A lab whose switches run `threads` workers (each serves the bond and the TAP).
    fn with_threads(bond_settings: &str, threads: usize) -> Lab {
        require_privileges();
        let serial = one_at_a_time();
        let tag = unique_tag();
        let sw = [format!("vb{tag}sa"), format!("vb{tag}sb")];
        let hosts = [format!("vb{tag}ha"), format!("vb{tag}hb")];
        let mut guard = NamespaceGuard::default();
        guard.create(&sw[0]);
        guard.create(&sw[1]);
        guard.adopt(&hosts[0]);
        guard.adopt(&hosts[1]);
        for link in ["m1", "m2"] {
            let (a, b) = (format!("{link}a"), format!("{link}b"));
            ip(&["link", "add", &a, "netns", &sw[0], "type", "veth", "peer", "name", &b, "netns", &sw[1]]);
            ip(&["-n", &sw[0], "link", "set", &a, "up"]);
            ip(&["-n", &sw[1], "link", "set", &b, "up"]);
        }
        let mut daemons = Vec::new();
        for (side, (ns, host)) in ["a", "b"].iter().zip(sw.iter().zip(&hosts)) {
            let address = if *side == "a" { HOST_A } else { HOST_B };
            let topology = format!(
                r#"
[bridge]
name = "bond{tag}{side}"
threads = {threads}
[[netns]]
name = "{host}"
[[port]]
name = "bond0"
type = "bond"
{bond_settings}
[[port]]
name = "m1"
type = "netdev"
device = "m1{side}"
master = "bond0"
[[port]]
name = "m2"
type = "netdev"
device = "m2{side}"
master = "bond0"
[[port]]
name = "v{tag}{side}"
type = "tap"
netns = "{host}"
address = "{address}/24"
"#
            );
            daemons.push(Daemon::start(ns, &topology));
        }
        let lab = Lab { daemons, sw, hosts, _guard: guard, _serial: serial };
        for daemon in &lab.daemons {
            wait_for("both members up", 10 * SECOND, || {
                let bond = &daemon.ctl_json(&["bond", "show"]).ok()?["bonds"][0];
                bond["members"].as_array()?.iter().all(|m| m["usable"] == true).then_some(())
            });
        }
        lab
    }

    fn bond(&self, side: usize) -> Value {
        self.daemons[side].ctl_json(&["bond", "show", "bond0"]).unwrap()["bonds"][0].clone()
    }

    /// Frames sent on each member of side `side`'s bond.
    fn member_tx(&self, side: usize) -> [u64; 2] {
        self.member_counter(side, "tx_frames")
    }

    /// Bytes sent on each member of side `side`'s bond (TAP hosts hand over 64 KiB TCP
    /// super-frames, so bytes say more about a stream's distribution than frames).
    fn member_tx_bytes(&self, side: usize) -> [u64; 2] {
        self.member_counter(side, "tx_bytes")
    }

    fn member_counter(&self, side: usize, counter: &str) -> [u64; 2] {
        let bond = self.bond(side);
        let value = |i: usize| bond["members"][i][counter].as_u64().unwrap();
        [value(0), value(1)]
    }

    fn transfer(&self, bytes: u64) {
        assert_eq!(tcp_transfer(&self.hosts[1], HOST_B, &self.hosts[0], bytes), bytes);
    }
}

#[test]
fn balance_rr_spreads_every_flow_over_both_members() {
    let lab = Lab::new("mode = \"balance-rr\"");
    assert_eq!(ping(&lab.hosts[0], HOST_B, 2, 2 * SECOND), 2);
    lab.transfer(20 << 20);
    let bytes = lab.member_tx_bytes(0);
    assert!(bytes[0] > 5 << 20 && bytes[1] > 5 << 20, "both members should carry the stream: {bytes:?}");
    let tx = lab.member_tx(0);
    let ratio = tx[0] as f64 / tx[1] as f64;
    assert!((0.8..1.25).contains(&ratio), "round robin takes turns frame by frame: {tx:?}");
}

#[test]
fn balance_xor_keeps_a_flow_on_one_member_and_spreads_many() {
    let lab = Lab::new("mode = \"balance-xor\"\nxmit_hash_policy = \"layer3+4\"");
    assert_eq!(ping(&lab.hosts[0], HOST_B, 1, 2 * SECOND), 1);
    let before = lab.member_tx_bytes(0);
    lab.transfer(20 << 20);
    let after = lab.member_tx_bytes(0);
    let used = [after[0] - before[0], after[1] - before[1]];
    let (big, small) = (used[0].max(used[1]), used[0].min(used[1]));
    assert!(big > 15 << 20 && small < 64 << 10, "one TCP flow must stay on one member: {used:?}");

    // Many flows (different source ports): both members carry some.
    let before = lab.member_tx_bytes(0);
    for _ in 0..24 {
        lab.transfer(256 << 10);
    }
    let after = lab.member_tx_bytes(0);
    let used = [after[0] - before[0], after[1] - before[1]];
    assert!(used[0] > 512 << 10 && used[1] > 512 << 10, "many flows should use both members: {used:?}");
}

/// With two workers, each sends the flows its TAP queue gives it out of its own socket on the
/// member the hash picks, and receives on its own sockets of the members' fanout groups: every
/// flow arrives whole, each stays on one member, both members carry some, and both workers
/// receive from the bond (sixteen connections all on one: 1 in 2^15).
#[test]
fn balance_xor_on_two_workers_serves_the_bond_on_both() {
    let lab = Lab::with_threads("mode = \"balance-xor\"\nxmit_hash_policy = \"layer3+4\"", 2);
    assert_eq!(ping(&lab.hosts[0], HOST_B, 1, 2 * SECOND), 1);
    let before = lab.member_tx_bytes(0);
    for _ in 0..16 {
        lab.transfer(1 << 20);
    }
    let after = lab.member_tx_bytes(0);
    let used = [after[0] - before[0], after[1] - before[1]];
    assert!(used[0] > 1 << 20 && used[1] > 1 << 20, "many flows should use both members: {used:?}");
    for daemon in &lab.daemons {
        let show = daemon.ctl_json(&["show"]).unwrap();
        let frames = show["bridge"]["worker_rx_frames"].as_array().unwrap().clone();
        assert_eq!(frames.len(), 2, "{show}");
        let ports = daemon.ctl_json(&["port", "show"]).unwrap();
        for p in ports["ports"].as_array().unwrap() {
            assert_eq!(p["drops"]["no_room"], 0, "no frame lost between workers: {p}");
            if p["name"] == "bond0" {
                let by_worker: Vec<u64> =
                    p["worker_rx_frames"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
                assert!(by_worker.iter().all(|&n| n > 0), "both workers received from the bond: {p}");
            }
        }
    }
    let frames = lab.daemons[0].ctl_json(&["show"]).unwrap()["bridge"]["worker_rx_frames"].clone();
    assert!(frames[1].as_u64().unwrap() > 0, "the second worker took some flows from the TAP: {frames}");
}

#[test]
fn broadcast_sends_everything_on_both_members() {
    let lab = Lab::new("mode = \"broadcast\"");
    lab.transfer(10 << 20);
    let tx = lab.member_tx(0);
    assert!(tx[0] > 100 && tx[0].abs_diff(tx[1]) <= 2, "every frame on both members: {tx:?}");
    let bytes = lab.member_tx_bytes(0);
    assert!(bytes[0] > 10 << 20, "{bytes:?}");
}

/// A numbered UDP stream from host A to host B, one datagram every millisecond for `length`;
/// `during` runs meanwhile. Returns the longest run of lost datagrams, in milliseconds, and
/// how many arrived.
fn outage_during(lab: &Lab, length: Duration, during: impl FnOnce()) -> (u64, usize) {
    let receiver = netns::run_in(&lab.hosts[1], || UdpSocket::bind((HOST_B, 7000))).unwrap().unwrap();
    receiver.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let sender = netns::run_in(&lab.hosts[0], || UdpSocket::bind((HOST_A, 0))).unwrap().unwrap();
    let count = length.as_millis() as u32;
    let sending = std::thread::spawn(move || {
        let start = Instant::now();
        for seq in 0..count {
            let due = start + Duration::from_millis(u64::from(seq));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let _ = sender.send_to(&seq.to_be_bytes(), (HOST_B, 7000));
        }
    });
    let receiving = std::thread::spawn(move || {
        let mut seen = vec![false; count as usize];
        let mut buf = [0u8; 16];
        while let Ok(n) = receiver.recv(&mut buf) {
            if n == 4 {
                let seq = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if let Some(slot) = seen.get_mut(seq) {
                    *slot = true;
                }
            }
        }
        seen
    });
    std::thread::sleep(length / 3);
    during();
    sending.join().unwrap();
    let seen = receiving.join().unwrap();
    let first = seen.iter().position(|&s| s).expect("no datagram arrived");
    let last = seen.iter().rposition(|&s| s).unwrap();
    let mut longest = 0u64;
    let mut run = 0u64;
    for &s in &seen[first..=last] {
        run = if s { 0 } else { run + 1 };
        longest = longest.max(run);
    }
    (longest, seen.iter().filter(|&&s| s).count())
}

#[test]
fn active_backup_uses_one_member_fails_over_fast_and_announces() {
    // Back to back, both ends must pick the same active member (frames arriving on a backup are
    // dropped, as the kernel's bonding driver does): the same primary on both sides.
    let lab = Lab::new("mode = \"active-backup\"\nmiimon_ms = 100\nprimary = \"m1\"");
    assert_eq!(ping(&lab.hosts[0], HOST_B, 2, 2 * SECOND), 2);
    let before = lab.member_tx(0);
    let before_bytes = lab.member_tx_bytes(0);
    lab.transfer(20 << 20);
    let after = lab.member_tx(0);
    let after_bytes = lab.member_tx_bytes(0);
    let active = lab.bond(0)["active"].as_str().unwrap().to_string();
    let (on, off) = if active == "m1" { (0, 1) } else { (1, 0) };
    assert!(after_bytes[on] - before_bytes[on] > 15 << 20, "the active member carries the stream: {after_bytes:?}");
    assert_eq!(after[off] - before[off], 0, "the backup carries nothing: {after:?}");

    // Take the active link down under a numbered stream and a TCP transfer.
    let link = format!("{active}a");
    let sw = lab.sw[0].clone();
    let tcp = std::thread::spawn({
        let (server, client) = (lab.hosts[1].clone(), lab.hosts[0].clone());
        move || tcp_transfer(&server, HOST_B, &client, 40 << 20)
    });
    let (outage_ms, arrived) = outage_during(&lab, 3 * SECOND, || ip(&["-n", &sw, "link", "set", &link, "down"]));
    assert_eq!(tcp.join().unwrap(), 40 << 20, "the transfer must complete across the failover");
    println!("active-backup failover outage: {outage_ms} ms ({arrived} of 3000 datagrams arrived), miimon 100 ms");
    assert!(outage_ms < 200, "outage {outage_ms} ms is not under 2 x miimon");

    let bond = lab.bond(0);
    assert_ne!(bond["active"].as_str().unwrap(), active, "{bond}");
    assert!(bond["failovers"].as_u64().unwrap() >= 2, "{bond}");
    assert!(bond["announcements"].as_u64().unwrap() >= 1, "host A's MAC should be announced: {bond}");
    assert_eq!(bond["members"][on]["usable"], false, "{bond}");
    let drops = &lab.daemons[1].ctl_json(&["bond", "show"]).unwrap()["bonds"][0];
    assert!(
        drops["members"].as_array().unwrap().iter().all(|m| m["drops"].get("bond_reflection").is_none()),
        "{drops}"
    );
}

#[test]
fn the_active_member_can_be_forced_and_a_vanished_member_is_survived() {
    let lab = Lab::new("mode = \"active-backup\"\nprimary = \"m1\"");
    assert_eq!(lab.bond(0)["active"], "m1");
    for daemon in &lab.daemons {
        daemon.ctl(&["bond", "set-active", "bond0", "m2"]).unwrap();
    }
    assert_eq!(lab.bond(0)["active"], "m2");
    assert_eq!(ping(&lab.hosts[0], HOST_B, 2, 2 * SECOND), 2);
    let err = lab.daemons[0].ctl(&["bond", "set-active", "bond0", "m9"]).unwrap_err();
    assert!(err.contains("no member named"), "{err}");
    let table = lab.daemons[0].ctl(&["bond", "show"]).unwrap();
    assert!(table.starts_with("bond0: active-backup, miimon 100 ms"), "{table}");
    assert!(table.contains("primary m1, active m2"), "{table}");

    // m2's device disappears on side A (and its peer with it): the bond carries on over m1.
    ip(&["-n", &lab.sw[0], "link", "del", "m2a"]);
    wait_for("m2 down", 5 * SECOND, || (lab.bond(0)["members"][1]["usable"] == false).then_some(()));
    assert_eq!(lab.bond(0)["active"], "m1");
    assert_eq!(ping(&lab.hosts[0], HOST_B, 2, 2 * SECOND), 2);
    lab.transfer(10 << 20);
}

#[test]
fn lacp_aggregates_between_two_instances_and_drops_a_silent_partners_links() {
    lacp_aggregates_and_drops_a_silent_partner(1);
}

/// The same with two workers: a LACPDU the kernel gives the second worker's socket is passed to
/// the first, which runs LACP, and the second follows what the first decides.
#[test]
fn lacp_on_two_workers_aggregates_and_drops_a_silent_partners_links() {
    lacp_aggregates_and_drops_a_silent_partner(2);
}

fn lacp_aggregates_and_drops_a_silent_partner(threads: usize) {
    let mut lab =
        Lab::with_threads("mode = \"802.3ad\"\nlacp_rate = \"fast\"\nxmit_hash_policy = \"layer3+4\"", threads);
    let distributing = |lab: &Lab, side: usize| -> Vec<bool> {
        let bond = lab.bond(side);
        bond["members"].as_array().unwrap().iter().map(|m| m["lacp"]["distributing"] == true).collect()
    };
    wait_for("the aggregate to form on both sides", 10 * SECOND, || {
        (distributing(&lab, 0) == [true, true] && distributing(&lab, 1) == [true, true]).then_some(())
    });
    let bond = lab.bond(0);
    assert_eq!(bond["mode"], "802.3ad");
    let partner = bond["members"][0]["lacp"]["partner_system"].as_str().unwrap().to_string();
    assert_eq!(bond["members"][1]["lacp"]["partner_system"], partner.as_str(), "one partner system on both links");
    assert!(bond["members"][0]["lacp"]["actor_state"].as_array().unwrap().iter().any(|s| s == "in_sync"));

    // Many flows spread over both aggregated links.
    let before = lab.member_tx_bytes(0);
    for _ in 0..16 {
        lab.transfer(256 << 10);
    }
    let after = lab.member_tx_bytes(0);
    assert!(after[0] - before[0] > 256 << 10 && after[1] - before[1] > 256 << 10, "{before:?} -> {after:?}");

    // Cutting one member keeps traffic flowing over the other.
    ip(&["-n", &lab.sw[0], "link", "set", "m1a", "down"]);
    wait_for("m1 out of the aggregate", 5 * SECOND, || (distributing(&lab, 0) == [false, true]).then_some(()));
    assert_eq!(ping(&lab.hosts[0], HOST_B, 2, 2 * SECOND), 2);
    lab.transfer(10 << 20);

    // A partner that stops answering (its daemon is gone, the links stay up) is dropped from
    // the aggregate after three missed LACPDUs.
    let (status, _) = lab.daemons[1].terminate();
    assert!(status.success());
    let silent_since = Instant::now();
    wait_for("the silent partner's link to leave the aggregate", 8 * SECOND, || {
        (distributing(&lab, 0) == [false, false]).then_some(())
    });
    let waited = silent_since.elapsed();
    assert!(waited >= Duration::from_secs(2), "left after only {waited:?}: it should take three missed 1 s LACPDUs");
    let m2 = &lab.bond(0)["members"][1]["lacp"];
    assert!(m2["actor_state"].as_array().unwrap().iter().any(|s| s == "defaulted"), "{m2}");
}

/// The seed's bond (`ip link add bond0 type bond miimon 100 mode active-backup`) on one side and
/// its team (teamd's activebackup runner) on the other, back to back over the two veth pairs the
/// bond fixture creates, each run as its header says (the team inside the bond's "teamside").
#[test]
fn the_seed_bond_and_team_run_back_to_back() {
    require_privileges();
    let _serial = one_at_a_time();
    let tag = unique_tag();
    let sw = [format!("vt{tag}sa"), format!("vt{tag}sb")];
    let hosts = [format!("vt{tag}ha"), format!("vt{tag}hb")];
    let mut guard = NamespaceGuard::default();
    guard.create(&sw[0]);
    guard.adopt(&sw[1]); // the bond fixture's "teamside", created by the bond's vswitchd
    for h in &hosts {
        guard.adopt(h);
    }
    let bond = Daemon::start(
        &sw[0],
        &fixture("seed-bond-active-backup.toml", &[("bond-host", &hosts[0]), ("teamside", &sw[1])]),
    );
    let team = Daemon::start(&sw[1], &fixture("seed-team-activebackup.toml", &[("team-host", &hosts[1])]));
    for (daemon, first) in [(&bond, "team-eth0"), (&team, "eth0")] {
        wait_for("an active member", 10 * SECOND, || {
            let b = daemon.ctl_json(&["bond", "show"]).ok()?["bonds"][0].clone();
            (b["active"] == first).then_some(())
        });
    }
    assert_eq!(team.ctl_json(&["bond", "show"]).unwrap()["bonds"][0]["mode"], "active-backup");
    assert_eq!(ping(&hosts[0], HOST_B, 2, 2 * SECOND), 2);
    assert_eq!(tcp_transfer(&hosts[1], HOST_B, &hosts[0], 10 << 20), 10 << 20);
    ip(&["-n", &sw[0], "link", "set", "bond-eth0", "down"]);
    for (daemon, second) in [(&bond, "team-eth1"), (&team, "eth1")] {
        wait_for("failover to eth1", 5 * SECOND, || {
            (daemon.ctl_json(&["bond", "show"]).ok()?["bonds"][0]["active"] == second).then_some(())
        });
    }
    assert_eq!(ping(&hosts[0], HOST_B, 2, 2 * SECOND), 2);
}
