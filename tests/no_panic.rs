//! Bad input never panics: random bytes, and valid frames with random bytes flipped, cut short
//! or stretched, go through every parser and every per-frame decision the dataplane makes,
//! with random offload metadata. A deterministic generator, so a failure reproduces; the test
//! fails by panicking.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use vswitchd_dataplane::bridge::{Bridge, BridgePortConfig};
use vswitchd_dataplane::fdb::FdbConfig;
use vswitchd_dataplane::time::Instant;
use vswitchd_dataplane::vlan::{self, VlanMode, VlanSet};
use vswitchd_dataplane::vxlan::{VniMap, Vxlan, VxlanConfig};
use vswitchd_dataplane::wire::{self, VnetHdr};
use vswitchd_dataplane::{PortId, VlanId, gso};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Valid frames to mutate: TCP/UDP over IPv4/IPv6, with and without tags, ARP, a LACPDU, a
/// VXLAN datagram.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let eth = || etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let payload = vec![0x5a; 3000];
    let mut f = Vec::new();
    eth().ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(1, 2, 3, 4).write(&mut f, &payload).unwrap();
    out.push(f);
    let mut f = Vec::new();
    eth()
        .single_vlan(etherparse::VlanId::try_new(10).unwrap())
        .ipv6([1; 16], [2; 16], 64)
        .udp(1, 2)
        .write(&mut f, &payload[..100])
        .unwrap();
    out.push(f);
    let mut f = Vec::new();
    eth()
        .double_vlan(etherparse::VlanId::try_new(100).unwrap(), etherparse::VlanId::try_new(10).unwrap())
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(1, 2, 3, 4)
        .write(&mut f, &payload[..500])
        .unwrap();
    out.push(f);
    // IGMP and MLD (queries as the querier sends them; mutation turns them into reports).
    let mut igmp = vec![0x01, 0x00, 0x5e, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    igmp.extend_from_slice(&wire::igmp::general_query(100));
    out.push(igmp);
    let mut mld = vec![0x33, 0x33, 0, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
    mld.extend_from_slice(&wire::mld::general_query([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 1000));
    out.push(mld);
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.resize(42, 1);
    out.push(arp);
    out.push(wire::arp::rarp_announcement(wire::MacAddr([2, 0, 0, 0, 0, 9])).to_vec());
    let lacp = wire::lacp::Lacpdu::default().emit(wire::MacAddr([2, 0, 0, 0, 0, 9]));
    out.push(lacp.to_vec());
    // A BPDU as a neighbouring bridge sends it (an RST BPDU with a proposal).
    let mut neighbour = vswitchd_dataplane::stp::Stp::new(vswitchd_dataplane::stp::StpConfig::new(
        vswitchd_dataplane::stp::StpMode::Rstp,
        wire::MacAddr([2, 0, 0, 0, 0, 9]),
    ));
    neighbour.add_port(PortId(0), Default::default(), true, Instant::ZERO);
    let mut bpdus = Vec::new();
    neighbour.transmit(Instant::ZERO, wire::MacAddr([2, 0, 0, 0, 0, 9]), &mut bpdus);
    out.extend(bpdus.iter().map(|(_, f)| f.to_vec()));
    let mut vx = wire::vxlan::header(42).to_vec();
    vx.extend_from_slice(&out[0][..200]);
    out.push(vx);
    out
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(4) {
        0 => (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
        _ => {
            let mut f = seeds[rng.below(seeds.len())].clone();
            for _ in 0..rng.below(6) {
                if !f.is_empty() {
                    let at = rng.below(f.len());
                    f[at] = rng.next() as u8;
                }
            }
            match rng.below(4) {
                0 => f.truncate(rng.below(f.len() + 1)),
                1 => f.extend((0..rng.below(100)).map(|_| rng.next() as u8)),
                _ => {}
            }
            f
        }
    }
}

fn random_offload(rng: &mut Rng, len: usize) -> VnetHdr {
    let near = |rng: &mut Rng| (rng.below(len + 40)) as u16;
    match rng.below(3) {
        0 => VnetHdr::default(),
        _ => VnetHdr {
            flags: rng.next() as u8 & 3,
            gso_type: [0u8, 1, 3, 4, 5, 0x81, 0x7f][rng.below(7)],
            hdr_len: near(rng),
            gso_size: rng.below(3000) as u16,
            csum_start: near(rng),
            csum_offset: rng.below(20) as u16,
        },
    }
}

#[test]
fn every_parser_and_decision_survives_garbage() {
    let seeds = seeds();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let v = |n| VlanId::new(n).unwrap();
    let modes = [
        VlanMode::Transparent,
        VlanMode::Access(v(10)),
        VlanMode::Trunk {
            allowed: Box::new([v(10), v(20)].into_iter().collect::<VlanSet>()),
            native: Some(v(1)),
            tpid: 0x8100,
        },
        VlanMode::Trunk { allowed: Box::new([v(100)].into_iter().collect::<VlanSet>()), native: None, tpid: 0x88a8 },
        VlanMode::Dot1qTunnel(v(100)),
    ];
    let mut bridge = Bridge::new(FdbConfig { aging: Duration::from_secs(300), max_learned: 64 });
    for (i, mode) in modes.iter().enumerate() {
        bridge.add_port(PortId(i as u16), BridgePortConfig { mtu: 1500, vlan: mode.clone(), bond: i == 4 });
    }
    // Port modes on some ports: isolation, hairpin, a MAC limit, allowed sources, storm control.
    {
        use vswitchd_dataplane::port_modes::{PortModes, StormControl, StormPps};
        let storm = StormPps { broadcast: Some(50), multicast: Some(50), unknown_unicast: Some(50) };
        let mac = "02:00:00:00:00:01".parse().unwrap();
        let moded = [
            PortModes { isolated: true, hairpin: true, mac_limit: Some(2), storm_pps: storm, ..PortModes::default() },
            PortModes { isolated: true, allowed_macs: vec![mac], ..PortModes::default() },
            PortModes { hairpin: true, mac_limit: Some(1), ..PortModes::default() },
        ];
        for (i, m) in moded.into_iter().enumerate() {
            let control = std::sync::Arc::new(StormControl::new(&m.storm_pps));
            bridge.set_modes(PortId(i as u16), m, Some(control));
        }
    }
    let mcast = vswitchd_dataplane::mdb::McastConfig { snooping: true, max_groups: 32, ..Default::default() };
    bridge.mdb_mut().set_config(mcast);
    let mut vtep = Vxlan::new(VxlanConfig {
        local: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        dst_port: 4789,
        remotes: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2))],
        allowed: vec![(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 0)), 24)],
        learning: true,
        vnis: VniMap::PerVlan(vec![(42, v(10))]),
        aging: Duration::from_secs(300),
        max_learned: 64,
    });
    let mut stp = vswitchd_dataplane::stp::Stp::new(vswitchd_dataplane::stp::StpConfig::new(
        vswitchd_dataplane::stp::StpMode::Rstp,
        wire::MacAddr([2, 0, 0, 0, 0, 1]),
    ));
    for i in 0..modes.len() {
        stp.add_port(PortId(i as u16), Default::default(), true, Instant::ZERO);
    }
    let mut bpdus_out = Vec::new();
    let mut scratch = vec![0u8; 70_000];
    for round in 0..30_000u64 {
        let now = Instant::from_nanos(round * 1_000_000);
        let mut frame = mutate(&mut rng, &seeds);
        let offload = random_offload(&mut rng, frame.len());

        let _ = wire::EthernetFrame::new_checked(&frame[..])
            .map(|f| (f.src_addr(), f.dst_addr(), f.ethertype(), f.payload().len()));
        let _ = wire::vlan::skip_tags(&frame);
        let _ = wire::flow::flow_key(&frame);
        let _ = wire::vxlan::parse(&frame);
        let _ = wire::lacp::Lacpdu::parse(&frame);
        let _ = wire::bpdu::Bpdu::parse(&frame);
        let _ = stp.receive(PortId(rng.below(modes.len() + 1) as u16), &frame, now);
        if stp.next_deadline().is_some_and(|d| d <= now) {
            stp.tick(now);
        }
        stp.transmit(now, wire::MacAddr([2, 0, 0, 0, 0, 1]), &mut bpdus_out);
        bpdus_out.clear();
        let _ = stp.take_events();
        let _ = VnetHdr::parse(&frame);
        if let Some(packet) = frame.get(14..) {
            let _ = wire::igmp::snoop(packet, |_| {});
            let _ = wire::mld::snoop(packet, |_| {});
        }
        for mode in &modes {
            let _ = vlan::ingress(mode, &frame);
        }
        let port = PortId(rng.below(modes.len()) as u16);
        let decision = bridge.ingress(port, &frame, &offload, now);
        for out in 0..modes.len() {
            let _ = bridge.egress(PortId(out as u16), &frame, &offload, &decision.class);
            let _ = bridge.floods_to(port, PortId(out as u16));
        }
        bridge.run(now);
        let source = if rng.below(2) == 0 { "192.0.2.2" } else { "198.51.100.7" };
        let _ = vtep.decapsulate(source.parse().unwrap(), &frame, now);
        vtep.run(now);
        let _ = gso::segment(&frame, &offload, 1500, &mut scratch, |s| assert!(!s.is_empty()));
        let _ = offload.complete_checksum(&mut frame);
        let _ = wire::l4::finish_partial(&mut frame);
        let _ = wire::l4::tcp_gso(&mut frame, rng.below(9000) as u32);
    }
    assert!(bridge.fdb().learned_len() <= 64);
}
