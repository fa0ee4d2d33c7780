//! Attacks and faults, end to end: the real vswitchd binary on real TAPs, veths and VXLAN
//! sockets in namespaces of the test's own, under a hostile guest, VXLAN garbage, a MAC flood, a
//! MAC hijack, an interface deleted and recreated, a namespace deleted under it, and a SIGKILL.
//! Each test prints its figures, and checks that the switch stays up, that the other ports keep
//! forwarding, that the damage is counted under named drop reasons, and that nothing is left.

mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use vswitchd_control::netns;

const SECOND: Duration = Duration::from_secs(1);

/// A small deterministic random source (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `low..high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Between `low` and `high - 1` random bytes.
    fn some_bytes(&mut self, low: u64, high: u64) -> Vec<u8> {
        let n = self.range(low, high) as usize;
        self.bytes(n)
    }
}

/// A port's counters from `vswitchctl --json port show PORT`.
fn port_stats(daemon: &Daemon, port: &str) -> Value {
    daemon.ctl_json(&["port", "show", port]).expect("port show")["ports"][0].clone()
}

/// The drop reasons with a non-zero count in `stats`.
fn nonzero_drops(stats: &Value) -> BTreeMap<String, u64> {
    stats["drops"]
        .as_object()
        .map(|d| d.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).filter(|(_, n)| *n > 0).collect())
        .unwrap_or_default()
}

fn drop_count(stats: &Value, reason: &str) -> u64 {
    stats["drops"][reason].as_u64().unwrap_or_else(|| panic!("no drop reason {reason:?} in {stats}"))
}

/// The link state `show` reports for `port`.
fn link_state(daemon: &Daemon, port: &str) -> String {
    let show = daemon.ctl_json(&["show"]).expect("show");
    let ports = show["ports"].as_array().expect("ports").clone();
    let entry = ports.iter().find(|p| p["name"] == port).unwrap_or_else(|| panic!("no port {port} in {show}"));
    entry["link"].as_str().unwrap_or_default().to_string()
}

/// Fails unless vswitchd still runs and answers `show`.
fn assert_alive(daemon: &mut Daemon) {
    assert!(daemon.is_running(), "vswitchd died");
    daemon.ctl(&["show"]).expect("vswitchd stopped answering `show`");
}

/// Stops vswitchd with SIGTERM, expects exit 0, and checks that of everything named with `tag`
/// only what the test made itself (`kept`: namespaces) is left.
fn stop_cleanly(daemon: &mut Daemon, tag: &str, kept: &[&str]) {
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "exit {status}: {stderr}");
    let left: Vec<String> =
        leftovers(tag).into_iter().filter(|l| !kept.iter().any(|k| *l == format!("namespace {k}"))).collect();
    assert!(left.is_empty(), "left behind after a clean stop: {left:?}");
    assert!(!daemon.socket.exists(), "control socket left behind");
}

/// The MAC address of `dev` in namespace `ns`.
fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out = ip_output(&["-n", ns, "-br", "link", "show", dev]);
    let text = out.split_whitespace().nth(2).unwrap_or_default();
    let bytes: Vec<u8> = text.split(':').filter_map(|part| u8::from_str_radix(part, 16).ok()).collect();
    bytes.try_into().unwrap_or_else(|_| panic!("no MAC for {dev} in {ns}: {out}"))
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Where `mac` is in the FDB, if anywhere.
fn fdb_port_of(daemon: &Daemon, mac: [u8; 6]) -> Option<String> {
    let fdb = daemon.ctl_json(&["fdb", "show"]).expect("fdb show");
    let mac = mac_text(mac);
    fdb["entries"].as_array()?.iter().find(|e| e["mac"] == mac.as_str()).map(|e| e["port"].as_str().unwrap().into())
}

/// Pings `dst` from `ns` once per round until `stop` is set; returns (sent, answered).
fn ping_until(ns: &str, dst: Ipv4Addr, stop: &AtomicBool) -> (u32, u32) {
    let (mut sent, mut answered) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        sent += 1;
        if ping(ns, dst, 1, SECOND / 5) == 1 {
            answered += 1;
            thread::sleep(Duration::from_millis(20));
        }
    }
    (sent, answered)
}

/// The memory line `ss` gives for the packet socket bound to `dev` in `ns` (`r`: bytes queued,
/// `rb`: the buffer size, `d`: frames the kernel dropped for want of room).
fn packet_socket_memory(ns: &str, dev: &str) -> String {
    let out = std::process::Command::new("ip").args(["netns", "exec", ns, "ss", "-0", "-m", "-n", "-a"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let bound = format!("*:{dev} ");
    text.lines().find(|l| l.contains(&bound)).and_then(|l| l.split_whitespace().last()).unwrap_or("?").to_string()
}

/// Raises its flag when dropped, also while a panic unwinds: the threads of a scope that loop
/// until the flag is up then end, and the scope can return the panic instead of hanging.
struct RaiseOnDrop<'a>(&'a AtomicBool);

impl Drop for RaiseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. A hostile guest.

const ETH_P_IPV4: [u8; 2] = [0x08, 0x00];
const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
const NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const GSO_UDP: u8 = 3;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// A virtio-net header as a guest's driver writes it (little-endian fields).
fn vnet(flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16, csum_start: u16, csum_offset: u16) -> [u8; 10] {
    let mut h = [0u8; 10];
    h[0] = flags;
    h[1] = gso_type;
    h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
    h[4..6].copy_from_slice(&gso_size.to_le_bytes());
    h[6..8].copy_from_slice(&csum_start.to_le_bytes());
    h[8..10].copy_from_slice(&csum_offset.to_le_bytes());
    h
}

/// Ethernet + IPv4 (from 10.93.0.66 to 10.93.0.99, nobody) + TCP + `payload` bytes.
fn tcp4(dst: [u8; 6], src: [u8; 6], payload: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETH_P_IPV4);
    let total = u16::try_from(40 + payload).unwrap_or(u16::MAX);
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 93, 0, 66, 10, 93, 0, 99]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.resize(54 + payload, 0xa5);
    f
}

/// Ethernet + IPv6 (documentation addresses) + TCP + `payload` bytes.
fn tcp6(dst: [u8; 6], src: [u8; 6], payload: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(74 + payload);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETH_P_IPV6);
    let len = u16::try_from(20 + payload).unwrap_or(u16::MAX);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[6, 64]);
    f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x66]);
    f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99]);
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    f.resize(74 + payload, 0x5a);
    f
}

/// Ethernet + IPv4 + UDP + `payload` bytes.
fn udp4(dst: [u8; 6], src: [u8; 6], payload: usize) -> Vec<u8> {
    let mut f = tcp4(dst, src, 0);
    f.truncate(34);
    f[23] = 17;
    let total = u16::try_from(28 + payload).unwrap_or(u16::MAX);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0x9c, 0x40, 0x17, 0x70]);
    f.extend_from_slice(&u16::try_from(8 + payload).unwrap_or(u16::MAX).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(42 + payload, 0x3c);
    f
}

/// The hostile frame kinds a guest writes: a name, and a maker from (destination MAC, guest
/// MAC, randomness) to (virtio-net header, frame).
type HostileMaker = fn([u8; 6], [u8; 6], &mut Rng) -> ([u8; 10], Vec<u8>);

fn hostile_kinds() -> Vec<(&'static str, HostileMaker)> {
    vec![
        ("tcp4 gso, gso_size 1..63", |d, s, r| {
            (vnet(NEEDS_CSUM, GSO_TCPV4, 54, r.range(1, 64) as u16, 34, 16), tcp4(d, s, 4000))
        }),
        ("tcp4 gso, gso_size 0", |d, s, _| (vnet(NEEDS_CSUM, GSO_TCPV4, 54, 0, 34, 16), tcp4(d, s, 3000))),
        ("tcp data offset < 5", |d, s, r| {
            let mut f = tcp4(d, s, 3000);
            f[46] = (r.range(0, 5) as u8) << 4;
            (vnet(NEEDS_CSUM, GSO_TCPV4, 54, 1400, 34, 16), f)
        }),
        ("ipv4 ihl < 5", |d, s, r| {
            let mut f = tcp4(d, s, 3000);
            f[14] = 0x40 | r.range(0, 5) as u8;
            (vnet(NEEDS_CSUM, GSO_TCPV4, 54, 1400, 34, 16), f)
        }),
        ("csum_start past the end", |d, s, r| {
            let f = tcp4(d, s, 200);
            (vnet(NEEDS_CSUM, 0, 0, 0, (f.len() as u64 + r.range(0, 1000)) as u16, 16), f)
        }),
        ("csum_offset past the end", |d, s, r| {
            let f = tcp4(d, s, 200);
            (vnet(NEEDS_CSUM, GSO_TCPV4, 54, 100, 34, (f.len() as u64 + r.range(0, 60000)) as u16), f)
        }),
        ("ip total length lies", |d, s, r| {
            let mut f = tcp4(d, s, 3000);
            f[16..18].copy_from_slice(&(r.next() as u16).to_be_bytes());
            (vnet(NEEDS_CSUM, GSO_TCPV4, 54, 1400, 34, 16), f)
        }),
        ("64 KiB frame, mss 1", |d, s, _| (vnet(NEEDS_CSUM, GSO_TCPV4, 54, 1, 34, 16), tcp4(d, s, 65_000 - 54))),
        ("tcp6 64 KiB frame, mss 1", |d, s, _| (vnet(NEEDS_CSUM, GSO_TCPV6, 74, 1, 54, 16), tcp6(d, s, 65_000 - 74))),
        ("udp_l4 gso, gso_size 1..8", |d, s, r| {
            (vnet(NEEDS_CSUM, GSO_UDP_L4, 42, r.range(1, 8) as u16, 34, 6), udp4(d, s, 100))
        }),
        ("ufo gso, gso_size 1", |d, s, _| (vnet(NEEDS_CSUM, GSO_UDP, 42, 1, 34, 6), udp4(d, s, 1000))),
        ("tcp6 gso on an ipv4 frame", |d, s, _| (vnet(NEEDS_CSUM, GSO_TCPV6, 54, 100, 34, 16), tcp4(d, s, 3000))),
        ("unknown gso type", |d, s, r| {
            let kind = [2u8, 6, 0x7f, 0x42][r.range(0, 4) as usize];
            (vnet(NEEDS_CSUM, kind, 54, 100, 34, 16), tcp4(d, s, 3000))
        }),
        ("hdr_len lies", |d, s, _| (vnet(NEEDS_CSUM, GSO_TCPV4, 65_535, 1000, 34, 16), tcp4(d, s, 3000))),
        ("ecn gso, gso_size 3", |d, s, _| (vnet(NEEDS_CSUM, GSO_TCPV4 | GSO_ECN, 54, 3, 34, 16), tcp4(d, s, 3000))),
        ("vlan-tagged gso, gso_size 7", |d, s, _| {
            let mut f = tcp4(d, s, 3000);
            f.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
            (vnet(NEEDS_CSUM, GSO_TCPV4, 58, 7, 38, 16), f)
        }),
        ("multicast source", |d, _, r| {
            let src = [0x01, 0x00, 0x5e, 0, 0, r.next() as u8];
            (vnet(0, 0, 0, 0, 0, 0), tcp4(d, src, 100))
        }),
        ("runt with gso", |_, _, r| (vnet(NEEDS_CSUM, GSO_TCPV4, 54, 1, 0, 16), r.bytes(10))),
        ("random header, random frame", |d, s, r| {
            let mut header = [0u8; 10];
            header.copy_from_slice(&r.bytes(10));
            let n = r.range(14, 3000) as usize;
            let mut f = r.bytes(n);
            f[..6].copy_from_slice(&d);
            f[6..12].copy_from_slice(&s);
            (header, f)
        }),
    ]
}

#[test]
fn a_hostile_guest_writing_lying_offload_headers_is_counted_and_transfers_go_on() {
    with_tag(|tag| {
        let (sw, kernel, a, v, b) =
            (format!("xg{tag}sw"), format!("xg{tag}k"), format!("xg{tag}a"), format!("xg{tag}v"), format!("xg{tag}b"));
        let (tap_a, veth_v, guest_dev) = (format!("ga{tag}"), format!("gv{tag}"), format!("gt{tag}"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.create(&kernel);
        guard.create(&b);
        guard.adopt(&a);
        guard.adopt(&v);
        kernel_vtep(&sw, &kernel, &b, "10.93.0.2/24", &[]);
        // The guest's TAP, held by the test as QEMU would hold it, in vswitchd's namespace.
        let guest = GuestTap::create(&sw, &guest_dev);
        let topology = format!(
            r#"
[bridge]
name = "xg{tag}"
[[netns]]
name = "{a}"
[[netns]]
name = "{v}"
[[port]]
name = "vx0"
type = "vxlan"
vni = 42
local = "192.0.2.1"
remotes = ["192.0.2.2"]
dst_port = 4789
mtu = 1450
[[port]]
name = "{tap_a}"
type = "tap"
netns = "{a}"
address = "10.93.0.1/24"
mtu = 1450
[[port]]
name = "{veth_v}"
type = "veth"
netns = "{v}"
address = "10.93.0.3/24"
mtu = 1450
[[port]]
name = "guest"
type = "netdev"
device = "{guest_dev}"
"#
        );
        let mut daemon = Daemon::start(&sw, &topology);
        let (ip_a, ip_b) = (Ipv4Addr::new(10, 93, 0, 1), Ipv4Addr::new(10, 93, 0, 2));
        assert_eq!(ping(&a, ip_b, 2, 2 * SECOND), 2, "A -> B over VXLAN before the attack");
        assert_eq!(ping(&v, ip_a, 2, 2 * SECOND), 2, "V -> A before the attack");
        let mac_b = mac_of(&b, "eth0");
        let guest_mac = [0x02, 0x47, 0, 0, 0, 1];

        // The guest writes hostile frames, to broadcast and to B (behind the VXLAN port, which
        // cannot take offloads and segments in software), while two TCP transfers run.
        let kinds = hostile_kinds();
        let mut accepted = vec![0u64; kinds.len()];
        let mut refused: BTreeMap<String, u64> = BTreeMap::new();
        let bytes = 8 << 20;
        let started = Instant::now();
        let done = AtomicBool::new(false);
        let written = thread::scope(|scope| {
            let over_vxlan = scope.spawn(|| tcp_transfer_on(&b, ip_b, 5201, &a, bytes));
            let over_veth = scope.spawn(|| tcp_transfer_on(&a, ip_a, 5202, &v, bytes));
            let watcher = scope.spawn(|| {
                while !(over_vxlan.is_finished() && over_veth.is_finished()) {
                    thread::sleep(Duration::from_millis(10));
                }
                done.store(true, Ordering::Relaxed);
                (over_vxlan.join(), over_veth.join())
            });
            let mut rng = Rng(0x5eed_0001);
            let mut written = 0u64;
            let deadline = Instant::now() + 15 * SECOND;
            let mut round = 0;
            while (round < 40 || !done.load(Ordering::Relaxed)) && Instant::now() < deadline && round < 2000 {
                for (i, (_, make)) in kinds.iter().enumerate() {
                    let dst = if (round + i) % 2 == 0 { [0xff; 6] } else { mac_b };
                    let (header, frame) = make(dst, guest_mac, &mut rng);
                    written += 1;
                    match guest.write(&header, &frame) {
                        Ok(_) => accepted[i] += 1,
                        Err(e) => *refused.entry(e.to_string()).or_default() += 1,
                    }
                }
                round += 1;
                thread::sleep(Duration::from_millis(3));
            }
            let (over_vxlan, over_veth) = watcher.join().expect("watcher");
            assert_eq!(over_vxlan.expect("TCP A -> B over VXLAN"), bytes, "TCP A -> B over VXLAN");
            assert_eq!(over_veth.expect("TCP V -> A"), bytes, "TCP V -> A over the veth");
            written
        });
        let elapsed = started.elapsed();
        let total_accepted: u64 = accepted.iter().sum();
        println!("hostile guest: {written} frames written in {elapsed:?}, {total_accepted} accepted by the kernel");
        for ((name, _), n) in kinds.iter().zip(&accepted) {
            println!("  {name:<32} accepted {n}");
        }
        println!("  refused by the kernel: {refused:?}");
        println!(
            "two TCP transfers of {} MiB each completed meanwhile: {:.1} Mbit/s each",
            bytes >> 20,
            (bytes * 8) as f64 / elapsed.as_secs_f64() / 1e6
        );

        assert_alive(&mut daemon);
        assert!(total_accepted > 0, "the kernel accepted none of the hostile frames");
        wait_for("the guest's frames to be counted", 5 * SECOND, || {
            (port_stats(&daemon, "guest")["rx_frames"].as_u64().unwrap() > 0).then_some(())
        });
        let mut bad_offload = 0;
        for port in ["guest", "vx0", tap_a.as_str(), veth_v.as_str()] {
            let s = port_stats(&daemon, port);
            bad_offload += drop_count(&s, "bad_offload");
            println!(
                "port {port}: rx {} (errors {}) tx {} drops {:?}",
                s["rx_frames"],
                s["rx_errors"],
                s["tx_frames"],
                nonzero_drops(&s)
            );
        }
        // Every frame that reached vswitchd's socket is counted: received (and dropped by name,
        // or forwarded), or a receive error where the kernel cannot describe a frame's offload
        // to a packet socket (UDP fragmentation offload). The rest overflowed the socket buffer.
        let guest_stats = port_stats(&daemon, "guest");
        let seen = guest_stats["rx_frames"].as_u64().unwrap() + guest_stats["rx_errors"].as_u64().unwrap();
        println!("the guest port saw {seen} of the {total_accepted} frames the kernel accepted");
        assert!(seen <= total_accepted, "the guest port counted {seen} > {total_accepted} written");
        assert!(drop_count(&guest_stats, "invalid_source") > 0, "multicast sources not counted: {guest_stats}");
        assert!(bad_offload > 0, "no frame was counted bad_offload");
        // The kernel's VXLAN host was not flooded by segments of mss-1 super-frames.
        let vx = daemon.ctl_json(&["vxlan", "show"]).unwrap()["tunnels"][0].clone();
        let sent_to_kernel = vx["remotes"][0]["tx_packets"].as_u64().unwrap();
        println!("VXLAN datagrams to the kernel's VTEP: {sent_to_kernel}");
        // About one datagram per 1400 bytes of the transfer, plus the ACKs of the other; cut
        // at mss 1, a single 64 KiB frame would be 65 000.
        let limit = 2 * bytes / 1000 + 10_000;
        assert!(sent_to_kernel < limit, "amplification: {sent_to_kernel} datagrams to the remote (limit {limit})");
        // The guest itself still gets through: a plain broadcast from it reaches A.
        let watch_a = RawPort::open(&a, &tap_a);
        let mut hello = vec![0xff; 6];
        hello.extend_from_slice(&guest_mac);
        hello.extend_from_slice(&[0x88, 0xb5]);
        hello.extend_from_slice(b"the guest, behaving again");
        hello.resize(60, 0);
        let rx_before = port_stats(&daemon, "guest")["rx_frames"].as_u64().unwrap();
        let heard = (0..20).any(|_| {
            guest.write(&[0; 10], &hello).expect("write a plain frame");
            let probe = hello.clone();
            !watch_a.collect(SECOND / 10, move |f| f == probe.as_slice()).is_empty()
        });
        let rx_after = port_stats(&daemon, "guest")["rx_frames"].as_u64().unwrap();
        println!(
            "a plain frame from the guest after the attack reached A: {heard}; guest rx {rx_before} -> {rx_after}"
        );
        let socket = packet_socket_memory(&sw, &guest_dev);
        println!("vswitchd's packet socket on the guest's TAP: {socket}");
        assert!(heard, "after the attack the guest's port no longer receives (its socket: {socket})");
        // Everyone still forwards.
        assert_eq!(ping(&a, ip_b, 2, 2 * SECOND), 2, "A -> B after the attack");
        assert_eq!(ping(&v, ip_b, 2, 2 * SECOND), 2, "V -> B after the attack");
        stop_cleanly(&mut daemon, tag, &[&sw, &kernel, &b]);
        assert_eq!(links_in(&sw), vec!["ul".to_string(), guest_dev.clone()], "vswitchd's namespace after the stop");
        drop(guest);
    });
}

// ---------------------------------------------------------------------------------------------
// 2. VXLAN garbage.

/// A VXLAN header for `vni` with flags byte `flags`.
fn vxlan_header(flags: u8, vni: u32) -> [u8; 8] {
    let v = vni.to_be_bytes();
    [flags, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// An inner Ethernet frame from `src`, to broadcast, carrying an ARP-sized nothing.
fn inner_frame(src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.resize(60, 0);
    f
}

#[test]
fn vxlan_garbage_from_the_remote_and_strangers_is_counted_and_the_tunnel_keeps_working() {
    with_tag(|tag| {
        let (sw, kernel, a, b) = (format!("xv{tag}sw"), format!("xv{tag}k"), format!("xv{tag}a"), format!("xv{tag}b"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.create(&kernel);
        guard.create(&b);
        guard.adopt(&a);
        let strangers = ["192.0.2.66", "192.0.2.67", "192.0.2.68", "192.0.2.69", "192.0.2.70"];
        kernel_vtep(&sw, &kernel, &b, "10.90.0.2/24", &strangers);
        let topology = fixture("vxlan-kernel-peer.toml", &[("vtep-host", &a), ("vtep", &format!("xv{tag}"))]);
        let mut daemon = Daemon::start(&sw, &topology);
        let (ip_a, ip_b) = (Ipv4Addr::new(10, 90, 0, 1), Ipv4Addr::new(10, 90, 0, 2));
        assert_eq!(ping(&a, ip_b, 2, 2 * SECOND), 2, "A -> B over VXLAN before the garbage");
        let before = port_stats(&daemon, "vx0");

        // Sockets in the underlay namespace: the configured remote's address and five strangers.
        let sources: Vec<UdpSocket> = netns::run_in(&kernel, || {
            std::iter::once("192.0.2.2")
                .chain(strangers)
                .map(|addr| UdpSocket::bind((addr, 0)).expect("bind"))
                .collect::<Vec<_>>()
        })
        .expect("enter");
        let garbage_kinds = [
            "empty",
            "short",
            "bad flags",
            "reserved bits",
            "unknown vni",
            "multicast inner source",
            "zero inner source",
            "inner runt",
            "random bytes",
            "good-looking",
        ];
        let total = 30_000u32;
        let mut sent = vec![0u32; garbage_kinds.len()];
        let mut send_errors = 0u32;
        let started = Instant::now();
        let done = AtomicBool::new(false);
        let (transfer, pings) = thread::scope(|scope| {
            let _raise = RaiseOnDrop(&done);
            let transfer = scope.spawn(|| tcp_transfer_on(&a, ip_a, 5301, &b, 8 << 20));
            let pinger = scope.spawn(|| ping_until(&a, ip_b, &done));
            let mut rng = Rng(0x5eed_0002);
            for n in 0..total {
                let kind = n as usize % garbage_kinds.len();
                let from_remote = (n as usize / garbage_kinds.len()) % 2 == 0;
                let socket = if from_remote { &sources[0] } else { &sources[1 + (n as usize / 2) % strangers.len()] };
                let stranger_mac = [0x02, 0x67, u8::from(!from_remote), (n >> 16) as u8, (n >> 8) as u8, n as u8];
                let datagram: Vec<u8> = match kind {
                    0 => Vec::new(),
                    1 => rng.some_bytes(1, 8),
                    2 => [&vxlan_header(rng.next() as u8 & !0x08, 42)[..], &inner_frame(stranger_mac)].concat(),
                    3 => {
                        let mut h = vxlan_header(0x08, 42);
                        h[1 + rng.range(0, 3) as usize] = rng.range(1, 256) as u8;
                        [&h[..], &inner_frame(stranger_mac)].concat()
                    }
                    4 => [&vxlan_header(0x08, rng.range(43, 1 << 24) as u32)[..], &inner_frame(stranger_mac)].concat(),
                    5 => [&vxlan_header(0x08, 42)[..], &inner_frame([0x01, 0x00, 0x5e, 0, 1, n as u8])].concat(),
                    6 => [&vxlan_header(0x08, 42)[..], &inner_frame([0; 6])].concat(),
                    7 => [&vxlan_header(0x08, 42)[..], &rng.some_bytes(0, 14)].concat(),
                    8 => rng.some_bytes(8, 1400),
                    // Well formed, from a stranger it must teach nothing; from the remote it
                    // is a MAC flood over the tunnel, which the FDB bound takes.
                    _ => [&vxlan_header(0x08, 42)[..], &inner_frame(stranger_mac)].concat(),
                };
                match socket.send_to(&datagram, "192.0.2.1:4789") {
                    Ok(_) => sent[kind] += 1,
                    Err(_) => send_errors += 1,
                }
                if n % 100 == 99 {
                    thread::sleep(Duration::from_millis(2));
                }
            }
            let transfer = transfer.join();
            done.store(true, Ordering::Relaxed);
            (transfer, pinger.join().expect("pinger"))
        });
        let elapsed = started.elapsed();
        assert_eq!(transfer.expect("TCP B -> A over VXLAN"), 8 << 20, "TCP B -> A during the garbage");
        let sent_total: u32 = sent.iter().sum();
        println!("VXLAN garbage: {sent_total} datagrams sent in {elapsed:?} ({send_errors} send errors)");
        for (name, n) in garbage_kinds.iter().zip(&sent) {
            println!("  {name:<24} {n}");
        }
        println!("pings A -> B during the garbage: {} of {} answered", pings.1, pings.0);

        // Wait until the counters stop moving, then compare.
        let mut last = 0;
        let after = wait_for("the garbage to be counted", 10 * SECOND, || {
            thread::sleep(Duration::from_millis(200));
            let s = port_stats(&daemon, "vx0");
            let rx = s["rx_frames"].as_u64().unwrap();
            let settled = rx == last;
            last = rx;
            settled.then_some(s)
        });
        let delta = |reason: &str| drop_count(&after, reason) - drop_count(&before, reason);
        let reasons = ["vxlan_unknown_remote", "vxlan_bad_header", "vxlan_unknown_vni", "invalid_source", "runt"];
        let counted: u64 = reasons.iter().map(|r| delta(r)).sum();
        println!("drops counted on vx0 since the garbage: {:?}", nonzero_drops(&after));
        println!("vxlan show drops: {}", daemon.ctl_json(&["vxlan", "show"]).unwrap()["tunnels"][0]["drops"]);
        println!(
            "counted {counted} of {sent_total} sent ({:.1}%); rx_frames on vx0 grew by {}",
            100.0 * counted as f64 / f64::from(sent_total),
            after["rx_frames"].as_u64().unwrap() - before["rx_frames"].as_u64().unwrap()
        );
        for reason in reasons {
            assert!(delta(reason) > 0, "nothing counted as {reason}: {after}");
        }
        // Strangers' half alone is 15 000; a socket buffer may overflow under the burst, but
        // most of it must be seen and named.
        assert!(counted * 2 >= u64::from(sent_total), "only {counted} of {sent_total} counted");
        // Strangers taught nothing: only the remote's good-looking frames may be in the FDB.
        let fdb = daemon.ctl_json(&["fdb", "show"]).unwrap();
        let entries = fdb["entries"].as_array().unwrap();
        let show = daemon.ctl_json(&["show"]).unwrap();
        println!(
            "FDB: {} entries, bridge {}",
            entries.len(),
            serde_json::json!({"learned": show["bridge"]["fdb_learned"], "evicted": show["bridge"]["fdb_evicted"]})
        );
        for e in entries {
            let mac = e["mac"].as_str().unwrap();
            assert!(!mac.starts_with("02:67:01:"), "a stranger's inner MAC {mac} was learned");
            assert!(!mac.starts_with("01:") && mac != "00:00:00:00:00:00", "invalid source learned: {mac}");
        }
        assert!(show["bridge"]["fdb_learned_entries"].as_u64() <= show["bridge"]["fdb_max_entries"].as_u64(), "{show}");
        assert_alive(&mut daemon);
        assert_eq!(ping(&a, ip_b, 3, 2 * SECOND), 3, "A -> B after the garbage");
        assert_eq!(tcp_transfer_on(&b, ip_b, 5302, &a, 4 << 20), 4 << 20, "TCP A -> B after the garbage");
        stop_cleanly(&mut daemon, tag, &[&sw, &kernel, &b]);
    });
}

// ---------------------------------------------------------------------------------------------
// 3. MAC flood.

/// `hosts` tap hosts on one vswitchd: namespaces `{prefix}{tag}h1..`, ports `{prefix}{tag}p1..`,
/// addresses 10.94.0.1.., MACs 02:00:00:00:5e:01..; `bridge_extra` goes under `[bridge]`.
struct TapHosts {
    sw: String,
    hosts: Vec<String>,
    ports: Vec<String>,
}

impl TapHosts {
    fn new(prefix: &str, tag: &str, hosts: usize) -> TapHosts {
        TapHosts {
            sw: format!("{prefix}{tag}sw"),
            hosts: (1..=hosts).map(|i| format!("{prefix}{tag}h{i}")).collect(),
            ports: (1..=hosts).map(|i| format!("{prefix}{tag}p{i}")).collect(),
        }
    }

    fn ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 94, 0, i as u8 + 1)
    }

    fn mac(i: usize) -> [u8; 6] {
        [0x02, 0, 0, 0, 0x5e, i as u8 + 1]
    }

    fn topology(&self, bridge_extra: &str) -> String {
        let mut t = format!("[bridge]\nname = \"{}\"\n{bridge_extra}\n", self.sw);
        for h in &self.hosts {
            t.push_str(&format!("[[netns]]\nname = \"{h}\"\n"));
        }
        for (i, (h, p)) in self.hosts.iter().zip(&self.ports).enumerate() {
            t.push_str(&format!(
                "[[port]]\nname = \"{p}\"\ntype = \"tap\"\nnetns = \"{h}\"\naddress = \"{}/24\"\nmac = \"{}\"\n",
                TapHosts::ip(i),
                mac_text(TapHosts::mac(i))
            ));
        }
        t
    }

    fn start(&self, bridge_extra: &str) -> (NamespaceGuard, Daemon) {
        let mut guard = NamespaceGuard::default();
        guard.create(&self.sw);
        for h in &self.hosts {
            guard.adopt(h);
        }
        let daemon = Daemon::start(&self.sw, &self.topology(bridge_extra));
        (guard, daemon)
    }
}

#[test]
fn a_mac_flood_is_bounded_and_evicts_only_the_flooder() {
    with_tag(|tag| {
        // h1 and h2 talk, h3 floods, h4 is quiet.
        let lab = TapHosts::new("xf", tag, 4);
        let max_entries = 4096u64;
        let (_guard, mut daemon) = lab.start(&format!("fdb_max_entries = {max_entries}"));
        assert_eq!(ping(&lab.hosts[0], TapHosts::ip(1), 2, 2 * SECOND), 2, "h1 -> h2 before the flood");
        assert_eq!(ping(&lab.hosts[3], TapHosts::ip(0), 1, 2 * SECOND), 1, "h4 -> h1 before the flood");
        let flooder = RawPort::open(&lab.hosts[2], &lab.ports[2]);

        // h1 -> h2 transfers, one after the other, for as long as the flood lasts.
        let bytes = 8 << 20;
        let stop = AtomicBool::new(false);
        let (sent, flood_time, transfers, transfer_time, leaked) = thread::scope(|scope| {
            let _raise = RaiseOnDrop(&stop);
            // What the flooder gets of h1's and h2's unicast: flooded because their entries went.
            let leaked = scope.spawn(|| {
                let mut leaked = 0;
                while !stop.load(Ordering::Relaxed) {
                    let talkers = [TapHosts::mac(0), TapHosts::mac(1)];
                    leaked += flooder.collect(SECOND / 10, |f| talkers.iter().any(|m| f[..6] == *m)).len();
                }
                leaked
            });
            let transfers = scope.spawn(|| {
                let started = Instant::now();
                let mut done = 0u16;
                while !stop.load(Ordering::Relaxed) {
                    let moved = tcp_transfer_on(&lab.hosts[1], TapHosts::ip(1), 5401 + done, &lab.hosts[0], bytes);
                    assert_eq!(moved, bytes, "TCP transfer {} during the flood", done + 1);
                    done += 1;
                }
                (done, started.elapsed())
            });
            // Sources 02:ff:xx:xx:xx:xx, each new; destinations unknown unicast (flooded).
            let started = Instant::now();
            let mut frame = vec![0u8; 60];
            frame[12..14].copy_from_slice(&[0x88, 0xb5]);
            let mut n: u64 = 0;
            while started.elapsed() < 5 * SECOND && !transfers.is_finished() {
                let s = n.to_be_bytes();
                frame[..6].copy_from_slice(&[0x02, 0xee, s[4], s[5], s[6], s[7]]);
                frame[6..12].copy_from_slice(&[0x02, 0xff, s[4], s[5], s[6], s[7]]);
                if flooder.try_send(&frame).is_ok() {
                    n += 1;
                }
            }
            let flood_time = started.elapsed();
            stop.store(true, Ordering::Relaxed);
            let (done, transfer_time) = transfers.join().expect("transfers");
            (n, flood_time, done, transfer_time, leaked.join().expect("leak counter"))
        });
        let show = daemon.ctl_json(&["show"]).unwrap();
        let flooder_stats = port_stats(&daemon, &lab.ports[2]);
        println!(
            "MAC flood: {sent} distinct sources sent in {flood_time:?} ({:.0} frames/s); vswitchd received {} on the \
             flooder's port",
            sent as f64 / flood_time.as_secs_f64(),
            flooder_stats["rx_frames"]
        );
        println!(
            "FDB: learned {} over the run, {} entries now (max {}), evicted {}, moved {}",
            show["bridge"]["fdb_learned"],
            show["bridge"]["fdb_learned_entries"],
            show["bridge"]["fdb_max_entries"],
            show["bridge"]["fdb_evicted"],
            show["bridge"]["fdb_moved"]
        );
        println!(
            "TCP h1 -> h2 during the flood: {transfers} transfers of {} MiB, all whole, in {transfer_time:?} ({:.1} Mbit/s)",
            bytes >> 20,
            (u64::from(transfers) * bytes * 8) as f64 / transfer_time.as_secs_f64() / 1e6
        );
        println!("frames for h1 or h2 that reached the flooder: {leaked}");
        assert!(transfers > 0, "no transfer completed");
        assert_eq!(leaked, 0, "the flood made the switch a hub: the flooder got h1's and h2's traffic");
        assert_alive(&mut daemon);
        assert!(sent >= 100_000, "the test sent only {sent} frames");
        assert!(show["bridge"]["fdb_learned_entries"].as_u64().unwrap() <= max_entries, "{show}");
        assert!(show["bridge"]["fdb_evicted"].as_u64().unwrap() > 0, "no eviction counted: {show}");
        // Eviction takes the busiest port's entries: the quiet host keeps its entry, and the
        // talking hosts keep theirs or get them back within a second.
        assert_eq!(fdb_port_of(&daemon, TapHosts::mac(3)), Some(lab.ports[3].clone()), "the quiet h4 was evicted");
        let positions: Vec<Option<String>> = (0..2).map(|i| fdb_port_of(&daemon, TapHosts::mac(i))).collect();
        println!("h1 and h2 in the FDB after the flood: {positions:?}");
        if positions.iter().any(Option::is_none) {
            assert_eq!(ping(&lab.hosts[0], TapHosts::ip(1), 1, SECOND), 1, "h1 -> h2 after the flood");
        }
        for i in 0..2 {
            assert_eq!(fdb_port_of(&daemon, TapHosts::mac(i)), Some(lab.ports[i].clone()), "h{} not learned", i + 1);
        }
        assert_eq!(ping(&lab.hosts[1], TapHosts::ip(0), 2, 2 * SECOND), 2, "h2 -> h1 after the flood");
        stop_cleanly(&mut daemon, tag, &[&lab.sw]);
    });
}

// ---------------------------------------------------------------------------------------------
// 4. MAC hijack.

#[test]
fn a_host_claiming_anothers_mac_does_not_cut_it_off() {
    with_tag(|tag| {
        let lab = TapHosts::new("xj", tag, 3);
        let (_guard, mut daemon) = lab.start("");
        let (a, b, c) = (0, 1, 2);
        assert_eq!(ping(&lab.hosts[a], TapHosts::ip(c), 2, 2 * SECOND), 2, "A -> C before the hijack");
        assert_eq!(fdb_port_of(&daemon, TapHosts::mac(a)), Some(lab.ports[a].clone()));
        let attacker = RawPort::open(&lab.hosts[b], &lab.ports[b]);

        // B sends frames to C with A's source MAC as fast as it can for 3 s, while A pings C,
        // and counts the frames for A that reach it.
        let attack = 3 * SECOND;
        let mut frame = TapHosts::mac(c).to_vec();
        frame.extend_from_slice(&TapHosts::mac(a));
        frame.extend_from_slice(&[0x88, 0xb5]);
        frame.resize(60, 0x77);
        let stop = AtomicBool::new(false);
        let (spoofed, stolen, pings, views) = thread::scope(|scope| {
            let _raise = RaiseOnDrop(&stop);
            let sender = scope.spawn(|| {
                let started = Instant::now();
                let mut n = 0u64;
                while started.elapsed() < attack {
                    if attacker.try_send(&frame).is_ok() {
                        n += 1;
                    }
                }
                n
            });
            let thief = scope.spawn(|| {
                let mut stolen = 0;
                while !stop.load(Ordering::Relaxed) {
                    stolen += attacker.collect(SECOND / 10, |f| f[..6] == TapHosts::mac(a)).len();
                }
                stolen
            });
            let (mut sent, mut answered) = (0u32, 0u32);
            let mut views: BTreeMap<String, u32> = BTreeMap::new();
            while !sender.is_finished() {
                sent += 1;
                if ping(&lab.hosts[a], TapHosts::ip(c), 1, SECOND / 5) == 1 {
                    answered += 1;
                }
                // Every fifth ping, so the daemon's debug log (a pipe nobody reads until the
                // end) stays well under its 64 KiB: a full pipe would block the control thread.
                if sent % 5 == 1 {
                    let at = fdb_port_of(&daemon, TapHosts::mac(a)).unwrap_or_else(|| "absent".into());
                    *views.entry(at).or_default() += 1;
                }
            }
            let spoofed = sender.join().expect("sender");
            stop.store(true, Ordering::Relaxed);
            (spoofed, thief.join().expect("thief"), (sent, answered), views)
        });
        let show = daemon.ctl_json(&["show"]).unwrap();
        println!(
            "MAC hijack: B sent {spoofed} frames with A's MAC in {attack:?}; B received {stolen} frames meant for A"
        );
        println!("pings A -> C during the hijack: {} of {} answered", pings.1, pings.0);
        println!("where the FDB put A's MAC, sampled after every fifth ping: {views:?}");
        let b_stats = port_stats(&daemon, &lab.ports[b]);
        println!(
            "fdb_moved {}, fdb_move_damped {}; B's port: rx {} drops {:?}",
            show["bridge"]["fdb_moved"],
            show["bridge"]["fdb_move_damped"],
            b_stats["rx_frames"],
            nonzero_drops(&b_stats)
        );
        println!("FDB after the hijack: {}", daemon.ctl(&["fdb", "show"]).unwrap().trim_end());
        assert_alive(&mut daemon);
        // Afterwards A is where it belongs, and talks.
        wait_for("A's MAC back on A's port", 5 * SECOND, || {
            ping(&lab.hosts[a], TapHosts::ip(c), 1, SECOND / 5);
            (fdb_port_of(&daemon, TapHosts::mac(a)) == Some(lab.ports[a].clone())).then_some(())
        });
        assert_eq!(ping(&lab.hosts[a], TapHosts::ip(c), 5, 2 * SECOND), 5, "A -> C after the hijack");
        // During it, at most brief loss.
        assert!(
            pings.1 * 10 >= pings.0 * 8,
            "A lost its traffic to B: {} of {} pings answered during the hijack",
            pings.1,
            pings.0
        );
        // B's claims are counted where they were refused.
        assert!(drop_count(&b_stats, "mac_pinned") > 0, "B's spoofed frames not counted: {b_stats}");
        stop_cleanly(&mut daemon, tag, &[&lab.sw]);
    });
}

// ---------------------------------------------------------------------------------------------
// 5. A device deleted and recreated under load.

#[test]
fn a_netdev_deleted_and_recreated_under_traffic_goes_absent_then_up_and_forwards_again() {
    with_tag(|tag| {
        let (sw, a, x) = (format!("xr{tag}sw"), format!("xr{tag}a"), format!("xr{tag}x"));
        let (tap_a, dev) = (format!("ra{tag}"), format!("rd{tag}"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.create(&x);
        guard.adopt(&a);
        let make_veth = || {
            ip(&["-n", &sw, "link", "add", &dev, "type", "veth", "peer", "name", "eth0", "netns", &x]);
            // The same host MAC each time, as a VM's is: A's neighbour entry stays right.
            ip(&["-n", &x, "link", "set", "eth0", "address", "02:00:00:00:5f:02"]);
            ip(&["-n", &x, "addr", "add", "10.95.0.2/24", "dev", "eth0"]);
            ip(&["-n", &x, "link", "set", "eth0", "up"]);
            ip(&["-n", &sw, "link", "set", &dev, "up"]);
        };
        make_veth();
        let topology = format!(
            "[bridge]\nname = \"xr{tag}\"\n[[netns]]\nname = \"{a}\"\n\
             [[port]]\nname = \"{tap_a}\"\ntype = \"tap\"\nnetns = \"{a}\"\naddress = \"10.95.0.1/24\"\n\
             [[port]]\nname = \"x\"\ntype = \"netdev\"\ndevice = \"{dev}\"\n"
        );
        let mut daemon = Daemon::start(&sw, &topology);
        let (ip_a, ip_x) = (Ipv4Addr::new(10, 95, 0, 1), Ipv4Addr::new(10, 95, 0, 2));
        assert_eq!(link_state(&daemon, "x"), "up");
        assert_eq!(ping(&a, ip_x, 2, 2 * SECOND), 2, "A -> X before");

        let stop = AtomicBool::new(false);
        let (pings, outage, states) = thread::scope(|scope| {
            let _raise = RaiseOnDrop(&stop);
            let pinger = scope.spawn(|| ping_until(&a, ip_x, &stop));
            let transfer = scope.spawn(|| {
                // Bulk traffic toward the device until it goes; the transfer itself may fail.
                netns::run_in(&a, || {
                    let socket = UdpSocket::bind((ip_a, 0)).unwrap();
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let _ = socket.send_to(&[0x42; 1200], (ip_x, 9));
                        n += 1;
                        if n % 64 == 0 {
                            thread::sleep(Duration::from_millis(1));
                        }
                    }
                    n
                })
                .unwrap()
            });
            thread::sleep(SECOND / 2);
            let deleted = Instant::now();
            ip(&["-n", &sw, "link", "del", &dev]);
            let mut states = vec![];
            wait_for("the port to be reported absent", 5 * SECOND, || {
                let s = link_state(&daemon, "x");
                if states.last() != Some(&s) {
                    states.push(s.clone());
                }
                (s == "absent").then_some(())
            });
            assert_alive(&mut daemon);
            thread::sleep(SECOND / 2);
            make_veth();
            wait_for("the port to be reported up again", 5 * SECOND, || {
                let s = link_state(&daemon, "x");
                if states.last() != Some(&s) {
                    states.push(s.clone());
                }
                (s == "up").then_some(())
            });
            wait_for("A -> X to answer again", 5 * SECOND, || (ping(&a, ip_x, 1, SECOND / 5) == 1).then_some(()));
            let outage = deleted.elapsed();
            thread::sleep(SECOND / 2);
            stop.store(true, Ordering::Relaxed);
            let datagrams = transfer.join().expect("udp sender");
            println!("UDP datagrams sent toward X throughout: {datagrams}");
            (pinger.join().expect("pinger"), outage, states)
        });
        let x_stats = port_stats(&daemon, "x");
        let show = daemon.ctl_json(&["show"]).unwrap();
        let changes =
            show["ports"].as_array().unwrap().iter().find(|p| p["name"] == "x").unwrap()["link_changes"].clone();
        println!("device deleted and recreated: link states seen {states:?}, link_changes {changes}");
        println!(
            "pings A -> X throughout: {} of {} answered; outage until answering again {outage:?}",
            pings.1, pings.0
        );
        println!("port x: rx {} tx {} drops {:?}", x_stats["rx_frames"], x_stats["tx_frames"], nonzero_drops(&x_stats));
        assert!(states.contains(&"absent".to_string()) && states.last() == Some(&"up".to_string()), "{states:?}");
        assert!(drop_count(&x_stats, "link_down") > 0, "frames toward the absent device not counted: {x_stats}");
        assert_eq!(tcp_transfer(&x, ip_x, &a, 8 << 20), 8 << 20, "TCP A -> X through the recreated device");
        assert_alive(&mut daemon);
        stop_cleanly(&mut daemon, tag, &[&sw, &x]);
        assert_eq!(links_in(&sw), vec![dev.clone()], "vswitchd's namespace after the stop");
    });
}

// ---------------------------------------------------------------------------------------------
// 6. A namespace deleted under vswitchd.

#[test]
fn a_namespace_deleted_under_a_netdev_port_leaves_the_switch_running_and_stopping_cleanly() {
    with_tag(|tag| {
        let (sw, x, y) = (format!("xn{tag}sw"), format!("xn{tag}x"), format!("xn{tag}y"));
        let hosts = [format!("xn{tag}a"), format!("xn{tag}b")];
        let ports = [format!("na{tag}"), format!("nb{tag}")];
        let dev = format!("nd{tag}");
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.create(&x);
        guard.create(&y);
        for h in &hosts {
            guard.adopt(h);
        }
        ip(&["-n", &x, "link", "add", &dev, "type", "veth", "peer", "name", "eth0", "netns", &y]);
        ip(&["-n", &x, "link", "set", &dev, "up"]);
        ip(&["-n", &y, "addr", "add", "10.96.0.3/24", "dev", "eth0"]);
        ip(&["-n", &y, "link", "set", "eth0", "up"]);
        // X is declared, so the port may name it; it exists, so vswitchd uses it as found.
        let mut topology = format!("[bridge]\nname = \"xn{tag}\"\n[[netns]]\nname = \"{x}\"\n");
        for (i, (h, p)) in hosts.iter().zip(&ports).enumerate() {
            topology.push_str(&format!(
                "[[netns]]\nname = \"{h}\"\n[[port]]\nname = \"{p}\"\ntype = \"tap\"\nnetns = \"{h}\"\naddress = \"10.96.0.{}/24\"\n",
                i + 1
            ));
        }
        topology.push_str(&format!("[[port]]\nname = \"y\"\ntype = \"netdev\"\ndevice = \"{dev}\"\nnetns = \"{x}\"\n"));
        let mut daemon = Daemon::start(&sw, &topology);
        let (ip_b, ip_y) = (Ipv4Addr::new(10, 96, 0, 2), Ipv4Addr::new(10, 96, 0, 3));
        assert_eq!(ping(&hosts[0], ip_y, 2, 2 * SECOND), 2, "A -> Y before");
        assert_eq!(ping(&hosts[0], ip_b, 2, 2 * SECOND), 2, "A -> B before");

        netns::delete(&x).expect("ip netns del");
        assert!(!netns_exists(&x));
        thread::sleep(SECOND);
        assert_alive(&mut daemon);
        let state = link_state(&daemon, "y");
        let y_answers = ping(&hosts[0], ip_y, 2, SECOND);
        let y_links = links_in(&y);
        println!(
            "namespace {x} deleted: port y is {state:?}; A -> Y answered {y_answers} of 2; Y's interfaces {y_links:?} \
             (vswitchd's sockets keep the deleted namespace alive)"
        );
        assert_eq!(ping(&hosts[0], ip_b, 3, 2 * SECOND), 3, "A -> B after the namespace went");
        let started = Instant::now();
        assert_eq!(tcp_transfer(&hosts[1], ip_b, &hosts[0], 8 << 20), 8 << 20, "TCP A -> B after the namespace went");
        println!("TCP A -> B: 8 MiB in {:?}", started.elapsed());
        stop_cleanly(&mut daemon, tag, &[&sw, &y]);
        // With vswitchd gone, the last hold on the deleted namespace went: its end of the veth,
        // and so Y's, are gone too.
        let released = Instant::now();
        wait_for("the deleted namespace's veth to go", 10 * SECOND, || links_in(&y).is_empty().then_some(()));
        println!("Y's veth end went {:?} after vswitchd stopped", released.elapsed());
    });
}

// ---------------------------------------------------------------------------------------------
// 7. SIGKILL and restart.

#[test]
fn after_sigkill_a_restart_on_the_same_file_forwards_and_a_clean_stop_leaves_nothing() {
    with_tag(|tag| {
        let (sw, h1, h2) = (format!("xk{tag}sw"), format!("xk{tag}h1"), format!("xk{tag}h2"));
        let (tap, veth) = (format!("k{tag}t"), format!("k{tag}v"));
        let mut guard = NamespaceGuard::default();
        guard.create(&sw);
        guard.adopt(&h1);
        guard.adopt(&h2);
        let topology = format!(
            "[bridge]\nname = \"xk{tag}\"\n[[netns]]\nname = \"{h1}\"\n[[netns]]\nname = \"{h2}\"\n\
             [[port]]\nname = \"{tap}\"\ntype = \"tap\"\nnetns = \"{h1}\"\naddress = \"10.97.0.1/24\"\n\
             [[port]]\nname = \"{veth}\"\ntype = \"veth\"\nnetns = \"{h2}\"\naddress = \"10.97.0.2/24\"\n"
        );
        let mut daemon = Daemon::start(&sw, &topology);
        let ip_2 = Ipv4Addr::new(10, 97, 0, 2);
        assert_eq!(ping(&h1, ip_2, 2, 2 * SECOND), 2, "h1 -> h2 before the kill");
        let pid = daemon.pid().unwrap();
        daemon.kill_hard();
        let mut left = leftovers(tag);
        for ns in [&sw, &h1, &h2] {
            if netns_exists(ns) {
                left.push(format!("in {ns}: {:?}", links_in(ns)));
            }
        }
        println!("SIGKILL {pid}: left behind {left:?}; control socket left: {}", daemon.socket.exists());

        // The restart removes what the killed instance listed in its state file, then sets up
        // afresh.
        daemon.restart(&sw).unwrap_or_else(|e| panic!("restart on the same file after SIGKILL failed: {e}"));
        assert_eq!(ping(&h1, ip_2, 3, 2 * SECOND), 3, "h1 -> h2 after the restart");
        assert_eq!(tcp_transfer(&h2, ip_2, &h1, 4 << 20), 4 << 20, "TCP h1 -> h2 after the restart");
        assert_alive(&mut daemon);
        // A clean stop of the restarted instance leaves nothing, the killed one's namespaces,
        // devices and state file included.
        stop_cleanly(&mut daemon, tag, &[&sw]);
        assert_eq!(links_in(&sw), Vec::<String>::new(), "vswitchd's namespace after the stop");
        let state = daemon.socket.with_file_name(format!("xk{tag}.state"));
        assert!(!state.exists(), "state file left behind");
    });
}
