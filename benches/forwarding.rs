//! Micro-benchmark of the forwarding decision (`Bridge::ingress`: validate, learn the source,
//! look up the destination) with a full FDB, in frames per second on one core; also the VXLAN
//! per-frame logic and the multicast decision with IGMP snooping.
//!
//! Run: `cargo bench -p vswitchd-dataplane --bench forwarding` (add `-- --quick` for a short
//! run). A figure, not a test: machines are shared and noisy.

use std::hint::black_box;
use std::time::{Duration, Instant as WallClock};

use vswitchd_dataplane::bridge::{Bridge, BridgePortConfig};
use vswitchd_dataplane::fdb::FdbConfig;
use vswitchd_dataplane::time::Instant;
use vswitchd_dataplane::verdict::Forward;
use vswitchd_dataplane::wire::{EtherType, EthernetFrame, MacAddr, VnetHdr};
use vswitchd_dataplane::{PortId, VlanId};

const PORTS: u16 = 16;
const FRAMES: usize = 8192;

fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
}

fn frame(dst: MacAddr, src: MacAddr) -> [u8; 64] {
    let mut bytes = [0u8; 64];
    let mut f = EthernetFrame::new_unchecked(&mut bytes[..]);
    f.set_dst_addr(dst);
    f.set_src_addr(src);
    f.set_ethertype(EtherType::Ipv4);
    bytes
}

/// Frames per second through `Bridge::ingress` with `entries` learned MACs.
fn run(entries: u32, duration: Duration) -> (f64, usize) {
    let mut bridge = Bridge::new(FdbConfig { aging: Duration::from_secs(300), max_learned: entries as usize });
    for p in 0..PORTS {
        bridge.add_port(PortId(p), BridgePortConfig::default());
    }
    let port_of = |n: u32| PortId((n % u32::from(PORTS)) as u16);
    let now = Instant::from_secs(1);
    for n in 0..entries {
        bridge.fdb_mut().learn(VlanId::NONE, mac(n), port_of(n), now);
    }
    // Pseudo-random pairs of known hosts, so lookups touch the whole table.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let frames: Vec<(PortId, [u8; 64])> = (0..FRAMES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let (s, d) = ((state % u64::from(entries)) as u32, ((state >> 32) % u64::from(entries)) as u32);
            (port_of(s), frame(mac(d), mac(s)))
        })
        .collect();

    let plain = VnetHdr::default();
    let mut forwarded = 0usize;
    let mut total = 0usize;
    let start = WallClock::now();
    let mut tick = 0u64;
    while start.elapsed() < duration {
        tick += 1;
        let now = Instant::from_secs(1) + Duration::from_micros(tick);
        for (port, bytes) in &frames {
            if let Forward::Unicast(_) = bridge.ingress(*port, black_box(bytes), &plain, now).forward {
                forwarded += 1;
            }
        }
        total += frames.len();
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    assert_eq!(bridge.fdb().learned_len(), entries as usize, "the table must stay full");
    (rate, forwarded)
}

/// VXLAN per-frame work without sockets, frames per second: decapsulation (header checks,
/// remote lookup, VNI lookup, learning the inner source) and encapsulation (VNI for the VLAN,
/// destination remote, flow hash for the source port, header).
fn vxlan(duration: Duration) -> (f64, f64) {
    use std::net::{IpAddr, Ipv4Addr};
    use vswitchd_dataplane::bond::{HashPolicy, flow_hash};
    use vswitchd_dataplane::vxlan::{VniMap, Vxlan, VxlanConfig};
    use vswitchd_dataplane::wire::vxlan::header;
    let remotes: Vec<IpAddr> = (2..10).map(|i| IpAddr::V4(Ipv4Addr::new(192, 0, 2, i))).collect();
    let mut vtep = Vxlan::new(VxlanConfig {
        local: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        dst_port: 4789,
        remotes: remotes.clone(),
        allowed: vec![],
        learning: true,
        vnis: VniMap::Single(42),
        aging: Duration::from_secs(300),
        max_learned: 8192,
    });
    let datagrams: Vec<(IpAddr, Vec<u8>)> = (0..4096u32)
        .map(|n| {
            let mut d = header(42).to_vec();
            d.extend_from_slice(&frame(mac(n.wrapping_mul(7) % 4096), mac(n % 4096)));
            (remotes[(n % 8) as usize], d)
        })
        .collect();
    let now = Instant::from_secs(1);
    let start = WallClock::now();
    let mut total = 0usize;
    while start.elapsed() < duration {
        for (source, d) in &datagrams {
            black_box(vtep.decapsulate(*source, black_box(d), now).ok());
        }
        total += datagrams.len();
    }
    let decap = total as f64 / start.elapsed().as_secs_f64();
    let start = WallClock::now();
    let mut total = 0usize;
    while start.elapsed() < duration {
        for (_, d) in &datagrams {
            let inner = &d[8..];
            let vni = vtep.vni_for(VlanId::NONE);
            let to = vtep.destination(black_box(inner), VlanId::NONE);
            let hash = flow_hash(HashPolicy::Layer34, inner);
            black_box((header(vni.unwrap_or(0)), to, hash));
        }
        total += datagrams.len();
    }
    (decap, total as f64 / start.elapsed().as_secs_f64())
}

/// Multicast traffic with IGMP snooping, frames per second: `Bridge::ingress` (learn the
/// source, read the IPv4 destination, look the group up) and the egress list (members and
/// router ports into a reused `Vec`), over `groups` groups with two members each; and the same
/// frames with snooping off (flooded), for the cost of snooping.
fn snooping(groups: u32, duration: Duration) -> (f64, f64) {
    use vswitchd_dataplane::mdb::McastConfig;
    use vswitchd_dataplane::wire::igmp::{GroupAddr, Message};
    let group = |n: u32| [239, 1, (n >> 8) as u8, n as u8];
    let frames: Vec<(PortId, Vec<u8>)> = (0..FRAMES as u32)
        .map(|n| {
            let g = group(n.wrapping_mul(2_654_435_761) % groups);
            let mut f = frame(MacAddr([0x01, 0x00, 0x5e, g[1] & 0x7f, g[2], g[3]]), mac(n % 64)).to_vec();
            f[14..34].copy_from_slice(&[0x45, 0, 0, 50, 0, 0, 0x40, 0, 1, 17, 0, 0, 10, 0, 0, 1, 0, 0, 0, 0]);
            f[30..34].copy_from_slice(&g);
            (PortId((n % 64 % u32::from(PORTS)) as u16), f)
        })
        .collect();
    let mut rates = [0.0; 2];
    for (i, on) in [true, false].into_iter().enumerate() {
        let mut bridge = Bridge::new(FdbConfig::default());
        for p in 0..PORTS {
            bridge.add_port(PortId(p), BridgePortConfig::default());
        }
        let config = McastConfig { snooping: on, max_groups: groups as usize, ..McastConfig::default() };
        bridge.mdb_mut().set_config(config);
        let now = Instant::from_secs(1);
        for n in 0..groups {
            for port in [n % u32::from(PORTS), (n + 5) % u32::from(PORTS)] {
                let g = GroupAddr::V4(group(n));
                bridge.mdb_mut().apply(VlanId::NONE, PortId(port as u16), Message::Join(g), now);
            }
        }
        let plain = VnetHdr::default();
        let mut out = Vec::with_capacity(usize::from(PORTS));
        let (start, mut total, mut tick) = (WallClock::now(), 0usize, 0u64);
        while start.elapsed() < duration {
            tick += 1;
            let now = Instant::from_secs(1) + Duration::from_micros(tick);
            for (port, bytes) in &frames {
                let d = bridge.ingress(*port, black_box(bytes), &plain, now);
                if let Forward::Group(g) = d.forward {
                    bridge.mdb().egress_ports(d.class.vlan, g, *port, &mut out);
                    black_box(&out);
                }
            }
            total += frames.len();
        }
        rates[i] = total as f64 / start.elapsed().as_secs_f64();
    }
    (rates[0], rates[1])
}

/// Frames per second copied into a capture's pool and taken out again (one thread doing both):
/// the cost a capture adds per frame and port it taps, plain and with a VLAN tag to write.
fn capture(duration: Duration) -> (f64, f64) {
    use vswitchd_dataplane::capture::{Direction, Sink, Tap, tap_all};
    use vswitchd_dataplane::vlan::Classified;
    let sink = Sink::new(1, 512, false);
    let taps = [Tap { sink: std::sync::Arc::clone(&sink), interface: 0, wall_offset_ns: 0 }];
    let bytes = frame(mac(1), mac(2));
    let mut rates = [0f64; 2];
    for (i, vlan) in [VlanId::NONE, VlanId::new(10).unwrap()].into_iter().enumerate() {
        let class = Classified { vlan, pcp: 0, strip: 0 };
        let (start, mut total) = (WallClock::now(), 0usize);
        while start.elapsed() < duration {
            for n in 0..256u64 {
                tap_all(&taps, Direction::Inbound, None, black_box(&bytes), &class, Instant::from_nanos(n));
            }
            while let Some(record) = sink.try_next() {
                black_box(record.frame());
                sink.recycle(record);
            }
            total += 256;
        }
        rates[i] = total as f64 / start.elapsed().as_secs_f64();
    }
    (rates[0], rates[1])
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let duration = if quick { Duration::from_millis(300) } else { Duration::from_secs(2) };
    println!("forwarding decision (validate + learn + lookup), one core, {PORTS} ports, 64-byte frames");
    for entries in [8_192u32, 1_048_576] {
        let (rate, forwarded) = run(entries, duration);
        println!("  fdb {entries:>9} entries: {:>7.1} M frames/s ({forwarded} forwarded as unicast)", rate / 1e6);
    }
    let (decap, encap) = vxlan(duration);
    println!("VXLAN per-frame logic, one core, 64-byte inner frames, 8 remotes, 4096 MACs");
    println!("  decapsulate (check, learn): {:>7.1} M frames/s", decap / 1e6);
    println!("  encapsulate (VNI, destination, flow hash, header): {:>7.1} M frames/s", encap / 1e6);
    println!("multicast decision, one core, {PORTS} ports, 64 senders, two members per group");
    for groups in [64u32, 4096] {
        let (on, off) = snooping(groups, duration);
        println!(
            "  {groups:>4} groups: snooping {:>6.1} M frames/s (with the egress list), off {:>6.1} M frames/s (flood)",
            on / 1e6,
            off / 1e6
        );
    }
    let (plain, tagged) = capture(duration);
    println!("capture, one core, 64-byte frames: copy into the pool and take out again");
    println!("  untagged {:>6.1} M frames/s, tagged (VLAN 10 written) {:>6.1} M frames/s", plain / 1e6, tagged / 1e6);
}
