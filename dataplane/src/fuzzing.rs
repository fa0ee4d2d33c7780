//! Fuzz target bodies for the dataplane, shared by the coverage-guided fuzzers in `fuzz/` and
//! the corpus replay test (`tests/fuzz_corpora.rs`), so a crash a fuzzer found stays a test on
//! a stable toolchain.
//!
//! [`FramePipeline`] is a real [`Switch`] whose ports are [`memory`](crate::port::memory) ports:
//! a fuzz input is a sequence of frames, each received on one of a dozen ports of every kind
//! and VLAN mode (TAP-like ports with virtio-net headers, plain ports that force software
//! segmentation and checksum completion, QinQ, an 802.1ad trunk, two VXLAN ports, a
//! round-robin bond and an 802.3ad bond), forwarded by the same code as in production, with
//! time passed in. Every frame the switch sends is checked against what a kernel would take;
//! a panic or a broken rule is a finding.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::bond::lacp::LacpSettings;
use crate::bond::{Bond, BondConfig, BondMode, HashPolicy};
use crate::fdb::FdbConfig;
use crate::port::memory::{self, Framing, MemoryPort, WireHandle};
use crate::switch::{PortInfo, Switch};
use crate::time::Instant;
use crate::vlan::{TPID_8021AD, TPID_8021Q, VlanMode};
use crate::vxlan::{VniMap, Vxlan, VxlanConfig};
use crate::wire::MacAddr;
use crate::{PortId, VlanId};

/// The configured VXLAN remote every tunnel port accepts.
pub const CONFIGURED_REMOTE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The underlay prefix (/24) whose VTEPs the tunnel ports learn.
pub const ALLOWED_PREFIX: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 0);

/// One port of the pipeline: where its frames enter, and how.
#[derive(Debug)]
struct Entry {
    port: PortId,
    framing: Framing,
    wires: Vec<WireHandle>,
}

/// A switch with a port of every kind, driven one frame at a time.
#[derive(Debug)]
pub struct FramePipeline {
    switch: Switch,
    entries: Vec<Entry>,
    now: Instant,
}

fn vid(n: u16) -> VlanId {
    VlanId::new(n).unwrap_or(VlanId::NONE)
}

fn trunk(vlans: &[u16], native: Option<u16>, tpid: u16) -> VlanMode {
    VlanMode::Trunk { allowed: Box::new(vlans.iter().map(|&v| vid(v)).collect()), native: native.map(vid), tpid }
}

fn info(name: &str, mtu: u32, vlan: VlanMode) -> PortInfo {
    PortInfo { name: name.into(), kind: "memory".into(), netns: None, mtu, vlan }
}

/// How the 802.3ad bonds speak LACP.
const LACP: LacpSettings = LacpSettings {
    active: true,
    fast: true,
    system: MacAddr([0x02, 0, 0, 0, 0xaa, 0x01]),
    system_priority: 65535,
    key: 1,
};

/// A bond of `mode` checking links every 100 ms, without delays.
fn bond_config(mode: BondMode, lacp: Option<LacpSettings>) -> BondConfig {
    BondConfig {
        mode,
        miimon: Duration::from_millis(100),
        updelay: Duration::ZERO,
        downdelay: Duration::ZERO,
        primary: None,
        lacp,
    }
}

fn vxlan_config(vnis: VniMap) -> VxlanConfig {
    VxlanConfig {
        local: Ipv4Addr::new(192, 0, 2, 1).into(),
        dst_port: 4789,
        remotes: vec![CONFIGURED_REMOTE.into()],
        allowed: vec![(ALLOWED_PREFIX.into(), 24)],
        learning: true,
        vnis,
        aging: Duration::from_secs(300),
        max_learned: 256,
    }
}

impl FramePipeline {
    /// The switch and its ports. Fails only if the event loop's poller cannot be made.
    pub fn new() -> std::io::Result<FramePipeline> {
        let fdb = FdbConfig { max_learned: 512, ..FdbConfig::default() };
        let mut switch = Switch::new("fuzz", fdb)?;
        // Snooping on, with a small table, so IGMP/MLD parsing and the table's bound are fuzzed.
        let mcast = crate::mdb::McastConfig { snooping: true, querier: true, max_groups: 64, ..Default::default() };
        switch.state_mut().bridge.mdb_mut().set_config(mcast);
        let mut entries = Vec::new();
        let plain_ports: [(&str, Framing, u32, VlanMode); 9] = [
            ("tap10", Framing::VnetHdr, 1500, VlanMode::Access(vid(10))),
            ("trunk", Framing::VnetHdr, 9000, trunk(&[10, 20, 100], Some(1), TPID_8021Q)),
            ("plain10", Framing::Plain, 1500, VlanMode::Access(vid(10))),
            ("small10", Framing::Plain, 576, VlanMode::Access(vid(10))),
            ("qinq", Framing::VnetHdr, 1500, VlanMode::Dot1qTunnel(vid(100))),
            ("svc-trunk", Framing::Plain, 1500, trunk(&[100], None, TPID_8021AD)),
            ("tap0", Framing::VnetHdr, 1500, VlanMode::Transparent),
            ("plain0", Framing::Plain, 1280, VlanMode::Transparent),
            ("trunk-plain", Framing::Plain, 1500, trunk(&[10, 20], None, TPID_8021Q)),
        ];
        for (name, framing, mtu, vlan) in plain_ports {
            let (io, wire) = MemoryPort::new(framing, mtu);
            let port = switch.add_port(info(name, mtu, vlan), Box::new(io))?;
            entries.push(Entry { port, framing, wires: vec![wire] });
        }
        // The single-VNI port's MTU is the underlay's (too-big frames reach the tunnel and get
        // answered); both suppress ARP/ND (answers injected untagged, and with a VLAN's tag).
        let tunnels = [
            ("vx-single", 1500, VlanMode::Access(vid(10)), VniMap::Single(4242)),
            (
                "vx-multi",
                1450,
                trunk(&[10, 20], None, TPID_8021Q),
                VniMap::PerVlan(vec![(1010, vid(10)), (1020, vid(20))]),
            ),
        ];
        for (name, mtu, vlan, vnis) in tunnels {
            let (io, wire) = MemoryPort::new(Framing::Tunnel, 1500);
            let mut vxlan = Vxlan::new(vxlan_config(vnis));
            vxlan.set_arp_suppress(true);
            let port = switch.add_vxlan(info(name, mtu, vlan), vxlan, Box::new(io))?;
            entries.push(Entry { port, framing: Framing::Tunnel, wires: vec![wire] });
        }
        let bonds = [
            ("bond-rr", Framing::Plain, BondMode::BalanceRr, None, trunk(&[10, 20], None, TPID_8021Q)),
            ("bond-lacp", Framing::VnetHdr, BondMode::Lacp(HashPolicy::Layer34), Some(LACP), VlanMode::Access(vid(10))),
        ];
        for (name, framing, mode, lacp, vlan) in bonds {
            let mut bond = Bond::new(bond_config(mode, lacp), vec![format!("{name}-a"), format!("{name}-b")]);
            for member in 0..2 {
                bond.observe(member, true, Instant::ZERO);
            }
            let (mut ios, mut wires) = (Vec::new(), Vec::new());
            for _ in 0..2 {
                let (io, wire) = MemoryPort::new(framing, 1500);
                ios.push(Box::new(io) as Box<dyn crate::port::Port>);
                wires.push(wire);
            }
            let port = switch.add_bond(info(name, 1500, vlan), bond, ios)?;
            entries.push(Entry { port, framing, wires });
        }
        Ok(FramePipeline { switch, entries, now: Instant::ZERO })
    }

    /// How many ports frames can enter on.
    pub fn ports(&self) -> usize {
        self.entries.len()
    }

    /// Forgets what earlier inputs taught the switch (learned MACs, learned VXLAN state), so an
    /// input means the same whatever ran before it.
    pub fn forget(&mut self) {
        let state = self.switch.state_mut();
        state.fdb_flush(None);
        for port in &mut state.ports {
            if let Some(vxlan) = port.vxlan.as_mut() {
                *vxlan = Vxlan::new(vxlan.config().clone());
            }
        }
    }

    /// Receives `bytes` on port `index` (bond member `member`; for tunnels, from `source`) as
    /// the kernel would hand them over — behind a virtio-net header for TAP-like ports — and
    /// runs one turn of the switch `advance` after the last.
    pub fn receive(&mut self, index: usize, member: usize, bytes: &[u8], source: IpAddr, advance: Duration) {
        let entry = &self.entries[index % self.entries.len()];
        let wire = &entry.wires[member % entry.wires.len()];
        let source = (entry.framing == Framing::Tunnel).then(|| SocketAddr::new(source, 4789));
        memory::lock(wire).inbox.push_back((bytes.to_vec(), source));
        self.now = self.now + advance;
        let port = entry.port;
        self.switch.run_port_once(port, self.now);
    }

    /// As [`FramePipeline::receive`] for several frames read in one turn (a tunnel's run of
    /// datagrams, which [`crate::gro`] may merge).
    pub fn receive_batch(&mut self, index: usize, frames: &[Vec<u8>], source: IpAddr, advance: Duration) {
        let entry = &self.entries[index % self.entries.len()];
        let wire = &entry.wires[0];
        let source = (entry.framing == Framing::Tunnel).then(|| SocketAddr::new(source, 4789));
        for frame in frames {
            memory::lock(wire).inbox.push_back((frame.clone(), source));
        }
        self.now = self.now + advance;
        let port = entry.port;
        self.switch.run_port_once(port, self.now);
    }

    /// Every rule a sent frame broke so far, by port, and forgets them.
    pub fn take_violations(&mut self) -> Vec<(String, memory::Violation)> {
        let mut out = Vec::new();
        for entry in &self.entries {
            let name = self.switch.state().ports[entry.port.index()].info.name.clone();
            for wire in &entry.wires {
                out.extend(memory::lock(wire).violations.drain(..).map(|v| (name.clone(), v)));
            }
        }
        out
    }

    /// The switch, for checks after a run.
    pub fn switch(&self) -> &Switch {
        &self.switch
    }

    /// The switch, to change between turns.
    pub fn switch_mut(&mut self) -> &mut Switch {
        &mut self.switch
    }
}

/// A little-endian reader over fuzz input that yields zeros once the input runs out.
#[derive(Debug)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        let (&first, rest) = self.data.split_first().unwrap_or((&0, &[]));
        self.data = rest;
        first
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// The next `n` bytes (fewer if the input runs out).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }
}

/// A tunnel source picked by a fuzz byte: the configured remote, one of 256 hosts of the
/// allowed prefix, or a stranger.
pub fn tunnel_source(selector: u8, host: u8) -> IpAddr {
    match selector % 4 {
        0 | 1 => CONFIGURED_REMOTE.into(),
        2 => {
            let [a, b, c, _] = ALLOWED_PREFIX.octets();
            Ipv4Addr::new(a, b, c, host).into()
        }
        _ => Ipv4Addr::new(203, 0, 113, host).into(),
    }
}

/// The frame-pipeline target: records of `[port, member+source, advance, host, len16, bytes]`
/// until the input runs out, each received and forwarded; then no sent frame may break a rule.
pub fn frame_pipeline(pipeline: &mut FramePipeline, data: &[u8]) {
    pipeline.forget();
    let mut input = Input::new(data);
    while !input.is_empty() {
        let port = usize::from(input.byte());
        let selector = input.byte();
        let advance = Duration::from_millis(u64::from(input.byte()) * 16);
        let source = tunnel_source(selector >> 1, input.byte());
        let len = usize::from(input.u16());
        let bytes = input.bytes(len);
        pipeline.receive(port, usize::from(selector & 1), bytes, source, advance);
    }
    let violations = pipeline.take_violations();
    assert!(violations.is_empty(), "frames no kernel would take: {violations:?}");
}

/// `count` datagrams made from the VXLAN datagram `template`: if its inner frame is TCP over
/// IPv4 or IPv6, each the next segment of its flow (sequence number advanced by the payload,
/// transport checksum made valid), as a remote VTEP sends a stream; else `count` copies.
pub fn tcp_run(template: &[u8], count: usize) -> Vec<Vec<u8>> {
    let mut out = vec![template.to_vec(); count];
    let Some(inner) = template.get(crate::wire::vxlan::HEADER_LEN..) else { return out };
    let Ok((ethertype, l3)) = crate::wire::vlan::skip_tags(inner) else { return out };
    let l4 = match ethertype {
        crate::wire::EtherType::Ipv4 if inner.get(l3) == Some(&0x45) && inner.get(l3 + 9) == Some(&6) => l3 + 20,
        crate::wire::EtherType::Ipv6 if inner.get(l3 + 6) == Some(&6) => l3 + 40,
        _ => return out,
    };
    let Some(header) = inner.get(l4 + 12).map(|b| usize::from(b >> 4) * 4) else { return out };
    let Some(seq) = inner.get(l4 + 4..l4 + 8) else { return out };
    let seq = u32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]);
    let payload = inner.len().saturating_sub(l4 + header) as u32;
    for (i, datagram) in out.iter_mut().enumerate() {
        let at = crate::wire::vxlan::HEADER_LEN + l4;
        let next = seq.wrapping_add(payload.wrapping_mul(i as u32));
        datagram[at + 4..at + 8].copy_from_slice(&next.to_be_bytes());
        let frame = &mut datagram[crate::wire::vxlan::HEADER_LEN..];
        // Put the checksum in its partial form, then finish it: a valid checksum.
        if crate::wire::l4::tcp_gso(frame, 9000).is_some() {
            crate::wire::l4::finish_partial(frame);
        }
    }
    out
}

/// The VXLAN-receive target: datagrams from fuzz-chosen sources (configured, allowed, strange)
/// into the two tunnel ports — one at a time, or a run of TCP segments made from one
/// ([`tcp_run`]) read in one turn — then the same checks as [`frame_pipeline`] plus the bounds
/// on the endpoints' tables.
pub fn vxlan_receive(pipeline: &mut FramePipeline, data: &[u8]) {
    pipeline.forget();
    let tunnels: Vec<usize> =
        (0..pipeline.ports()).filter(|&i| pipeline.entries[i].framing == Framing::Tunnel).collect();
    let mut input = Input::new(data);
    while !input.is_empty() {
        let which = tunnels[usize::from(input.byte()) % tunnels.len()];
        let source = tunnel_source(input.byte(), input.byte());
        let timing = input.byte();
        let advance = Duration::from_secs(u64::from(timing / 8));
        let len = usize::from(input.u16());
        let bytes = input.bytes(len);
        match timing % 8 {
            run @ 1..=3 => {
                let count = [0, 2, 5, 40][usize::from(run)];
                pipeline.receive_batch(which, &tcp_run(bytes, count), source, advance);
            }
            _ => pipeline.receive(which, 0, bytes, source, advance),
        }
    }
    let violations = pipeline.take_violations();
    assert!(violations.is_empty(), "frames no kernel would take: {violations:?}");
    for port in &pipeline.switch.state().ports {
        if let Some(vxlan) = &port.vxlan {
            assert!(vxlan.remotes().len() <= 1 + 1024, "learned remotes unbounded");
            assert!(vxlan.macs(pipeline.now).count() <= vxlan.config().max_learned, "learned MACs unbounded");
        }
    }
}

/// The LACP target: LACPDUs (and anything else) on the members of an 802.3ad bond at
/// fuzz-chosen times, with the state machine run and transmitting between them.
pub fn lacp(data: &[u8]) {
    let config = bond_config(BondMode::Lacp(HashPolicy::Layer34), Some(LACP));
    let mut bond = Bond::new(config, vec!["a".into(), "b".into(), "c".into()]);
    let mut now = Instant::ZERO;
    let mut input = Input::new(data);
    while !input.is_empty() {
        let op = input.byte();
        let member = usize::from(op >> 4) % 4; // 3 is no member at all
        now = now + Duration::from_millis(u64::from(input.byte()) * 64);
        match op & 3 {
            0 => {
                let len = usize::from(input.byte()) + 64;
                let _ = bond.lacp_receive(member, input.bytes(len), now);
            }
            1 => {
                let _ = bond.observe(member, input.byte() & 1 == 1, now);
            }
            2 => {
                let _ = bond.lacp_transmit(member, now);
            }
            _ => {
                let _ = bond.run(now);
                let _ = bond.admit(member);
                let len = usize::from(input.byte());
                let _ = bond.transmit(input.bytes(len));
            }
        }
        // What the event loop does at the end of a turn; after it, no timer may be due already,
        // or the loop would wake again at once, and again (a spinning loop).
        let _ = bond.run(now);
        for member in 0..3 {
            let _ = bond.lacp_transmit(member, now);
        }
        if let Some(deadline) = bond.next_deadline() {
            assert!(deadline > now, "a deadline at {deadline:?} is due already at {now:?}: the loop would spin");
        }
    }
}

/// The QEMU stream target: a port's largest frame (two bytes), a read size (one byte), then a
/// byte stream fed to a [`StreamDeframer`](crate::port::socket::StreamDeframer) in reads of
/// that size. The frames it hands out, and where it stops, must be exactly what reading the
/// whole stream at once gives; its buffer must always take the next read.
pub fn socket_stream(data: &[u8]) {
    use crate::port::socket::{DeframeError, LENGTH_LEN, StreamDeframer};
    let mut input = Input::new(data);
    let mut deframer = StreamDeframer::new(usize::from(input.u16()));
    let max = deframer.max_frame();
    let read = usize::from(input.byte()).max(1) * 61;
    let stream = input.bytes(data.len());
    // The oracle: the whole stream, read at once.
    let mut expected: Vec<&[u8]> = Vec::new();
    let mut expected_error = None;
    let mut at = 0;
    while stream.len() - at >= LENGTH_LEN {
        let len = u32::from_be_bytes([stream[at], stream[at + 1], stream[at + 2], stream[at + 3]]);
        if len == 0 {
            expected_error = Some(DeframeError::ZeroLength);
            break;
        }
        if len as usize > max {
            expected_error = Some(DeframeError::TooLong { len, max });
            break;
        }
        let end = at + LENGTH_LEN + len as usize;
        if end > stream.len() {
            break;
        }
        expected.push(&stream[at + LENGTH_LEN..end]);
        at = end;
    }
    let mut got = 0;
    let mut error = None;
    'feeding: for chunk in stream.chunks(read) {
        let mut chunk = chunk;
        while !chunk.is_empty() {
            let taken = deframer.feed(chunk);
            assert!(taken > 0, "the buffer refused a read with every frame taken out");
            chunk = &chunk[taken..];
            loop {
                match deframer.next_frame() {
                    Ok(Some(frame)) => {
                        assert!(!frame.is_empty() && frame.len() <= max, "a frame of {} bytes", frame.len());
                        assert_eq!(Some(&frame), expected.get(got), "frame {got} differs");
                        got += 1;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        error = Some(e);
                        break 'feeding;
                    }
                }
            }
        }
    }
    assert_eq!(got, expected.len(), "frames handed out");
    assert_eq!(error, expected_error, "where the stream broke");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipeline_forwards_between_its_ports() {
        let mut pipeline = FramePipeline::new().unwrap();
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        frame.resize(60, 0);
        let mut with_header = [0u8; 10].to_vec();
        with_header.extend_from_slice(&frame);
        pipeline.receive(0, 0, &with_header, CONFIGURED_REMOTE.into(), Duration::ZERO);
        // A broadcast in VLAN 10 from tap10 reaches the other VLAN 10 ports.
        let sent = |p: &FramePipeline, i: usize| memory::lock(&p.entries[i].wires[0]).sent;
        for (i, name) in [(1, "trunk"), (2, "plain10"), (3, "small10"), (8, "trunk-plain"), (9, "vx-single")] {
            assert_eq!(sent(&pipeline, i), 1, "{name}");
        }
        assert_eq!(sent(&pipeline, 6), 0, "tap0 is in VLAN 0");
        assert!(pipeline.take_violations().is_empty());
    }

    #[test]
    fn a_tcp_run_from_a_tunnel_is_merged_and_every_port_takes_what_it_gets() {
        let mut pipeline = FramePipeline::new().unwrap();
        let mut inner = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 7], [2, 0, 0, 0, 0, 8])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1, 2, 100, 1000)
            .ack(1)
            .write(&mut inner, &[9; 1000])
            .unwrap();
        let template = [&crate::wire::vxlan::header(4242)[..], &inner].concat();
        let run = tcp_run(&template, 5);
        assert_eq!(run.len(), 5);
        let single = (0..pipeline.ports()).find(|&i| pipeline.entries[i].framing == Framing::Tunnel).unwrap();
        let port = pipeline.entries[single].port;
        pipeline.receive_batch(single, &run, CONFIGURED_REMOTE.into(), Duration::ZERO);
        let state = pipeline.switch.state();
        assert_eq!(state.ports[port.index()].counters.rx_frames, 1, "five segments, one super-frame");
        assert_eq!(state.ports[port.index()].vxlan.as_ref().unwrap().remotes()[0].rx_packets, 5);
        // Flooded to VLAN 10: ports with offloads take the super-frame, the others segments.
        assert!(pipeline.take_violations().is_empty());
        let sent = |p: &FramePipeline, i: usize| memory::lock(&p.entries[i].wires[0]).sent;
        assert_eq!(sent(&pipeline, 0), 1, "tap10 (offloads): one super-frame");
        assert_eq!(sent(&pipeline, 2), 5, "plain10: the five segments");
    }

    /// The committed corpus starts the VXLAN target from runs that merge, so even a short
    /// fuzzing run explores the receive offload's paths.
    #[test]
    fn the_vxlan_corpus_seeds_runs_of_segments_that_merge() {
        let seed = include_bytes!("../../fuzz/corpus/vxlan_receive/seed-tcp-runs");
        let mut pipeline = FramePipeline::new().unwrap();
        vxlan_receive(&mut pipeline, seed);
        let state = pipeline.switch.state();
        let tunnels: Vec<_> = state.ports.iter().filter(|p| p.vxlan.is_some()).collect();
        let datagrams: u64 =
            tunnels.iter().flat_map(|p| p.vxlan.as_ref().unwrap().remotes()).map(|r| r.rx_packets).sum();
        let frames: u64 = tunnels.iter().map(|p| p.counters.rx_frames).sum();
        assert_eq!(datagrams, 5 + 40 + 2, "every datagram of the three runs accepted");
        assert_eq!(frames, 1 + 1 + 1, "each run merged into one frame");
    }
}
