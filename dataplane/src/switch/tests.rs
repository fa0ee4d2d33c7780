//! The event loop's tests: ports on Unix datagram sockets, driven from threads or turn by turn.

use super::*;
use crate::port::datagram::DatagramPort;
use crate::wire::{EtherType, EthernetFrame, MacAddr};
use std::os::unix::net::UnixDatagram;
use std::thread;

#[test]
fn flapping_warnings_are_paced_and_the_held_back_counted() {
    let mut budget = WarnBudget::default();
    let at = |ms: u64| Instant::from_nanos(ms * 1_000_000);
    for n in 0..WarnBudget::PER_SECOND {
        assert_eq!(budget.take(at(u64::from(n))), Some(0));
    }
    assert_eq!(budget.take(at(500)), None);
    assert_eq!(budget.take(at(999)), None);
    assert_eq!(budget.take(at(1000)), Some(2), "the next second's first says how many were held back");
    assert_eq!(budget.take(at(1001)), Some(0));
}

fn frame(dst: MacAddr, src: MacAddr, payload_len: usize) -> Vec<u8> {
    let mut bytes = vec![0x5au8; 14 + payload_len];
    let mut f = EthernetFrame::new_unchecked(&mut bytes[..]);
    f.set_dst_addr(dst);
    f.set_src_addr(src);
    f.set_ethertype(EtherType::Ipv4);
    bytes
}

fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}

/// A running switch with `n` datagram ports; returns the hosts' ends.
fn start(n: usize) -> (SwitchHandle, thread::JoinHandle<Switch>, Vec<UnixDatagram>) {
    start_with(&vec![(VlanMode::Transparent, false); n])
}

/// A running switch with one datagram port per (VLAN mode, carries offload) pair.
fn start_with(ports: &[(VlanMode, bool)]) -> (SwitchHandle, thread::JoinHandle<Switch>, Vec<UnixDatagram>) {
    let (switch, hosts) = switch_with(ports);
    let (handle, thread) = run_in_thread(switch);
    (handle, thread, hosts)
}

/// A switch, not running yet, with one datagram port per (VLAN mode, carries offload)
/// pair; returns the hosts' ends.
fn switch_with(ports: &[(VlanMode, bool)]) -> (Switch, Vec<UnixDatagram>) {
    let mut switch = Switch::new("test", FdbConfig::default()).unwrap();
    let mut hosts = Vec::new();
    for (i, (vlan, offload)) in ports.iter().enumerate() {
        let (port, host) = if *offload { DatagramPort::pair_with_offload() } else { DatagramPort::pair() }.unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let info = PortInfo { vlan: vlan.clone(), ..plain(&format!("p{i}")) };
        switch.add_port(info, Box::new(port)).unwrap();
        hosts.push(host);
    }
    (switch, hosts)
}

fn recv(host: &UnixDatagram) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let n = host.recv(&mut buf).expect("frame expected");
    buf.truncate(n);
    buf
}

fn assert_nothing_waiting(host: &UnixDatagram) {
    host.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    assert_eq!(host.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    host.set_nonblocking(false).unwrap();
}

/// Runs `switch` on a thread of its own until stopped; the thread returns it for inspection.
fn run_in_thread(mut switch: Switch) -> (SwitchHandle, thread::JoinHandle<Switch>) {
    let handle = switch.handle();
    let thread = thread::spawn(move || {
        switch.run().unwrap();
        switch
    });
    (handle, thread)
}

/// A VXLAN endpoint on loopback (127.0.0.1, UDP port `port`) with VNI `vni` and `remotes`.
fn loopback_vxlan(port: u16, remotes: Vec<std::net::IpAddr>, vni: u32) -> crate::vxlan::VxlanConfig {
    crate::vxlan::VxlanConfig {
        local: std::net::Ipv4Addr::LOCALHOST.into(),
        dst_port: port,
        remotes,
        allowed: vec![],
        learning: true,
        vnis: crate::vxlan::VniMap::Single(vni),
        aging: Duration::from_secs(300),
        max_learned: 100,
    }
}

/// Waits until every job submitted before has run (jobs run in order).
fn sync(handle: &SwitchHandle) {
    handle.call(|_, _| (), Duration::from_secs(5)).unwrap();
}

/// Two workers over three ports: `hosts[port][worker]`.
fn start_two_workers() -> (SwitchHandle, thread::JoinHandle<Switch>, Vec<Vec<UnixDatagram>>) {
    let mut switch = Switch::new("test", FdbConfig::default()).unwrap();
    switch.set_threads(2).unwrap();
    let mut hosts = Vec::new();
    for i in 0..3 {
        let mut ios: Vec<Box<dyn Port>> = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..2 {
            let (port, host) = DatagramPort::pair().unwrap();
            host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            ios.push(Box::new(port));
            ends.push(host);
        }
        switch.add_port_queues(plain(&format!("p{i}")), ios).unwrap();
        hosts.push(ends);
    }
    let (handle, thread) = run_in_thread(switch);
    (handle, thread, hosts)
}

/// Asks the first worker `f` until it says yes (updates from other workers arrive between
/// its batches).
fn eventually(handle: &SwitchHandle, f: impl Fn(&mut SwitchState) -> bool + Send + Copy + 'static) {
    for _ in 0..500 {
        if handle.call(move |s, _| f(s), Duration::from_secs(5)).unwrap() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!("the first worker never got there");
}

#[test]
fn workers_share_what_they_learn_and_what_the_operator_changes() {
    let (handle, thread, hosts) = start_two_workers();
    let mut ports = Switch::new("x", FdbConfig::default()).unwrap();
    let info =
        PortInfo { name: "q".into(), kind: "datagram".into(), netns: None, mtu: 1500, vlan: VlanMode::Transparent };
    ports.set_threads(2).unwrap();
    let (one, _host) = DatagramPort::pair().unwrap();
    assert!(ports.add_port(info, Box::new(one)).is_err(), "two workers need two I/Os per port");

    // Worker 1 hears A first and floods on its own I/O.
    let a_to_b = frame(mac(2), mac(1), 46);
    hosts[0][1].send(&a_to_b).unwrap();
    assert_eq!(recv(&hosts[1][1]), a_to_b);
    assert_eq!(recv(&hosts[2][1]), a_to_b);
    // Worker 0 learns where A is from worker 1 and unicasts B's answer.
    eventually(&handle, |s| s.bridge.fdb().lookup(VlanId::NONE, mac(1)) == Some(PortId(0)));
    let b_to_a = frame(mac(1), mac(2), 46);
    hosts[1][0].send(&b_to_a).unwrap();
    assert_eq!(recv(&hosts[0][0]), b_to_a);
    sync(&handle);
    for quiet in [&hosts[2][0], &hosts[2][1], &hosts[0][1]] {
        assert_nothing_waiting(quiet);
    }
    // Counters add up across workers.
    eventually(&handle, |s| s.worker_rx_frames() == vec![1, 1]);
    let (a, _) = handle.call(|s, _| s.port_totals(PortId(0)), Duration::from_secs(5)).unwrap();
    assert_eq!((a.rx_frames, a.tx_frames), (1, 1));
    let (c, _) = handle.call(|s, _| s.port_totals(PortId(2)), Duration::from_secs(5)).unwrap();
    assert_eq!((c.rx_frames, c.tx_frames, c.tx_bytes), (0, 1, 60));

    // A flush on the first worker reaches worker 1: it floods toward B again.
    eventually(&handle, |s| s.bridge.fdb().len() == 2);
    assert_eq!(handle.call(|s, _| s.fdb_flush(None), Duration::from_secs(5)).unwrap(), 2);
    let c_to_b = frame(mac(2), mac(3), 46);
    hosts[2][1].send(&c_to_b).unwrap();
    assert_eq!(recv(&hosts[1][1]), c_to_b);
    assert_eq!(recv(&hosts[0][1]), c_to_b);
    assert_eq!(handle.call(|s, _| s.fdb_updates_lost(), Duration::from_secs(5)).unwrap(), 0);

    handle.stop().unwrap();
    let switch = thread.join().unwrap();
    assert_eq!(switch.state().worker_rx_frames(), vec![1, 2], "worker 1 published its last counts");
}

/// A port that queues every send and has the kernel refuse them all on flush.
#[derive(Debug, Default)]
struct RefusingQueue {
    frames: u64,
    bytes: u64,
    flushes: Arc<Mutex<u64>>,
}

impl Port for RefusingQueue {
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    fn recv(&mut self, _: &mut FrameBuf) -> io::Result<()> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn send(&mut self, parts: &[IoSlice<'_>], _: &VnetHdr) -> io::Result<()> {
        self.frames += 1;
        self.bytes += parts.iter().map(|p| p.len() as u64).sum::<u64>();
        Ok(())
    }
    fn queues_sends(&self) -> bool {
        true
    }
    fn flush(&mut self) -> Result<(), crate::port::SendFailure> {
        *self.flushes.lock().unwrap() += 1;
        let (frames, bytes) = (std::mem::take(&mut self.frames), std::mem::take(&mut self.bytes));
        if frames == 0 {
            return Ok(());
        }
        Err(crate::port::SendFailure { frames, bytes, error: io::Error::from_raw_os_error(libc::ENOBUFS) })
    }
}

/// A plain port's description.
/// With a hundred ports all flooding, one turn writes a bounded number of frames (so jobs
/// and signals wait a few milliseconds at most), the ports a turn did not reach go first in
/// the next, and everything is delivered in the end.
#[test]
fn a_turn_is_bounded_by_what_it_writes_and_no_port_is_left_behind() {
    use crate::port::memory::{Framing, MemoryPort, lock};
    const PORTS: usize = 100;
    const FRAMES: usize = READ_SHARE;
    let mut switch = Switch::new("t", FdbConfig::default()).unwrap();
    let mut wires = Vec::new();
    for i in 0..PORTS {
        let (io, wire) = MemoryPort::new(Framing::Plain, 1500);
        switch.add_port(plain(&format!("p{i}")), Box::new(io)).unwrap();
        for _ in 0..FRAMES {
            lock(&wire).inbox.push_back((frame(MacAddr::BROADCAST, mac(i as u8 + 1), 50), None));
        }
        wires.push(wire);
    }
    let sent = |wires: &[crate::port::memory::WireHandle]| wires.iter().map(|w| lock(w).sent).sum::<u64>();
    let waiting = |wires: &[crate::port::memory::WireHandle], i: usize| lock(&wires[i]).inbox.len();
    switch.run_once(Instant::ZERO);
    let first = sent(&wires);
    assert!(first as usize <= 2 * TURN_SENDS, "one turn wrote {first} frames");
    // 16 frames flooded to 99 ports: three ports' reads fill the budget.
    let left = (waiting(&wires, 0), waiting(&wires, 1), waiting(&wires, 2), waiting(&wires, 3));
    assert_eq!(left, (0, 0, 0, FRAMES));
    switch.run_once(Instant::ZERO);
    assert_eq!(waiting(&wires, 3), 0, "the ports left out go first next turn");
    let mut turns = 2;
    while wires.iter().any(|w| !lock(w).inbox.is_empty()) {
        switch.run_once(Instant::ZERO);
        turns += 1;
        assert!(turns < 1000);
    }
    assert_eq!(sent(&wires) as usize, PORTS * FRAMES * (PORTS - 1), "every flood reached every other port");
}

/// An 802.3ad bond with a member down: the loop's next deadline is a LACP period away, not
/// in the past (which woke the loop every millisecond).
#[test]
fn an_lacp_bond_with_a_member_down_lets_the_loop_sleep() {
    use crate::bond::lacp::LacpSettings;
    use crate::bond::{BondConfig, BondMode, HashPolicy};
    use crate::port::memory::{Framing, MemoryPort};
    let mut switch = Switch::new("t", FdbConfig::default()).unwrap();
    let settings = LacpSettings { active: true, fast: true, system: mac(9), system_priority: 65535, key: 1 };
    let config = BondConfig {
        mode: BondMode::Lacp(HashPolicy::Layer34),
        miimon: Duration::from_millis(100),
        updelay: Duration::ZERO,
        downdelay: Duration::ZERO,
        primary: None,
        lacp: Some(settings),
    };
    let mut bond = Bond::new(config, vec!["a".into(), "b".into()]);
    bond.observe(0, true, Instant::ZERO);
    bond.observe(1, false, Instant::ZERO);
    let members: Vec<Box<dyn Port>> =
        (0..2).map(|_| Box::new(MemoryPort::new(Framing::Plain, 1500).0) as Box<dyn Port>).collect();
    switch.add_bond(plain("bond"), bond, members).unwrap();
    let mut now = Instant::from_nanos(1_000_000_000);
    for _ in 0..5 {
        switch.run_once(now);
        let next = switch.next_deadline().expect("LACP has timers");
        assert!(next >= now + Duration::from_millis(500), "the loop would wake at {next:?}, now {now:?}");
        now = next;
    }
}

#[test]
fn frames_the_kernel_dropped_before_they_were_read_are_counted_once() {
    use crate::port::memory::{Framing, MemoryPort, lock};
    let mut switch = Switch::new("t", FdbConfig::default()).unwrap();
    let (a, wire) = MemoryPort::new(Framing::Plain, 1500);
    let pa = switch.add_port(plain("a"), Box::new(a)).unwrap();
    lock(&wire).kernel_drops = 5;
    let t0 = Instant::from_nanos(1);
    switch.run_once(t0);
    lock(&wire).kernel_drops = 2;
    switch.run_once(t0 + Duration::from_millis(10)); // read at most once a second
    let overflow = |s: &Switch| s.state().ports[pa.index()].counters.drops.get(DropReason::RxOverflow);
    assert_eq!(overflow(&switch), 5);
    switch.run_once(t0 + KERNEL_DROPS_EVERY);
    assert_eq!(overflow(&switch), 7);
    assert_eq!(switch.state().ports[pa.index()].counters.rx_frames, 7);
}

#[test]
fn a_frame_longer_than_the_buffer_is_counted_never_forwarded_cut_short() {
    use crate::port::memory::{Framing, MemoryPort, lock};
    let mut switch = Switch::new("t", FdbConfig::default()).unwrap();
    let (a, wire_a) = MemoryPort::new(Framing::VnetHdr, 65_000);
    let (b, wire_b) = MemoryPort::new(Framing::VnetHdr, 65_000);
    let pa = switch.add_port(PortInfo { mtu: 65_000, ..plain("a") }, Box::new(a)).unwrap();
    switch.add_port(PortInfo { mtu: 65_000, ..plain("b") }, Box::new(b)).unwrap();
    let mut long = VnetHdr::default().emit().to_vec();
    long.extend_from_slice(&frame(mac(2), mac(1), MAX_FRAME_LEN));
    lock(&wire_a).inbox.push_back((long, None));
    switch.run_once(Instant::ZERO);
    assert_eq!(lock(&wire_b).sent, 0);
    let counters = &switch.state().ports[pa.index()].counters;
    assert_eq!((counters.rx_frames, counters.drops.get(DropReason::Truncated)), (1, 1));
}

#[test]
fn a_port_the_kernel_reports_down_stays_down_however_many_frames_go_toward_it() {
    use crate::port::memory::{Framing, MemoryPort, lock};
    let mut switch = Switch::new("t", FdbConfig::default()).unwrap();
    let (a, wire_a) = MemoryPort::new(Framing::Plain, 1500);
    let (b, wire_b) = MemoryPort::new(Framing::Plain, 1500);
    switch.add_port(plain("a"), Box::new(a)).unwrap();
    let pb = switch.add_port(plain("b"), Box::new(b)).unwrap();
    switch.state_mut().set_link(pb, LinkState::Down);
    for i in 0..3 {
        lock(&wire_a).inbox.push_back((frame(mac(2), mac(1), 50), None));
        switch.run_once(Instant::from_nanos(i));
    }
    assert_eq!(lock(&wire_b).sent, 0, "nothing is sent toward a port that is down");
    let port = &switch.state().ports[pb.index()];
    assert_eq!(port.link, LinkState::Down);
    assert_eq!(port.counters.drops.get(DropReason::LinkDown), 3);
    switch.state_mut().set_link(pb, LinkState::Up);
    lock(&wire_a).inbox.push_back((frame(mac(2), mac(1), 50), None));
    switch.run_once(Instant::from_nanos(10));
    assert_eq!(lock(&wire_b).sent, 1);
}

fn plain(name: &str) -> PortInfo {
    PortInfo { name: name.into(), kind: "datagram".into(), netns: None, mtu: 1500, vlan: VlanMode::Transparent }
}

/// A switch, not running yet, with `n` plain datagram ports; returns the hosts' ends.
fn datagram_switch(n: usize) -> (Switch, Vec<UnixDatagram>) {
    switch_with(&vec![(VlanMode::Transparent, false); n])
}

#[test]
fn queued_frames_the_kernel_refuses_come_off_the_sent_counters_as_drops() {
    let (mut switch, hosts) = datagram_switch(2);
    let queue = RefusingQueue::default();
    let flushes = Arc::clone(&queue.flushes);
    let info = PortInfo { name: "q".into(), kind: "queue".into(), netns: None, mtu: 1500, vlan: VlanMode::Transparent };
    switch.add_port(info, Box::new(queue)).unwrap();
    let (handle, thread) = run_in_thread(switch);
    for _ in 0..3 {
        let flood = frame(MacAddr::BROADCAST, mac(1), 46);
        hosts[0].send(&flood).unwrap();
        assert_eq!(recv(&hosts[1]), flood);
    }
    sync(&handle);
    handle.stop().unwrap();
    let switch = thread.join().unwrap();
    let q = &switch.state().ports[2].counters;
    assert_eq!((q.tx_frames, q.tx_bytes), (0, 0), "refused frames are not counted as sent");
    assert_eq!(q.drops.get(DropReason::NoRoom), 3);
    assert!(*flushes.lock().unwrap() >= 3, "flushed after every batch");
    assert_eq!(switch.state().ports[1].counters.tx_frames, 3);
}

#[test]
fn floods_unknown_then_forwards_learned_unicast() {
    let (handle, thread, hosts) = start(3);
    let a_to_b = frame(mac(2), mac(1), 46);
    hosts[0].send(&a_to_b).unwrap();
    assert_eq!(recv(&hosts[1]), a_to_b);
    assert_eq!(recv(&hosts[2]), a_to_b);
    let b_to_a = frame(mac(1), mac(2), 46);
    hosts[1].send(&b_to_a).unwrap();
    assert_eq!(recv(&hosts[0]), b_to_a);
    sync(&handle);
    assert_nothing_waiting(&hosts[2]);
    assert_nothing_waiting(&hosts[1]);

    let fdb: Vec<_> = handle
        .call(|s, now| s.bridge.fdb().entries(now).map(|e| (e.mac, e.port)).collect::<Vec<_>>(), Duration::from_secs(5))
        .unwrap();
    assert!(fdb.contains(&(mac(1), PortId(0))) && fdb.contains(&(mac(2), PortId(1))));
    handle.stop().unwrap();
    let switch = thread.join().unwrap();
    let ports = &switch.state().ports;
    assert_eq!((ports[0].counters.rx_frames, ports[0].counters.tx_frames), (1, 1));
    assert_eq!((ports[1].counters.rx_frames, ports[1].counters.tx_frames), (1, 1));
    assert_eq!((ports[2].counters.rx_frames, ports[2].counters.tx_frames), (0, 1));
    assert_eq!(ports[2].counters.tx_bytes, 60);
}

#[test]
fn bad_frames_are_counted_by_reason_and_the_switch_keeps_going() {
    let (handle, thread, hosts) = start(2);
    hosts[0].send(&[0u8; 5]).unwrap();
    hosts[0].send(&[]).unwrap();
    hosts[0].send(&frame(mac(2), mac(1), 1501)).unwrap();
    hosts[0].send(&frame(mac(2), MacAddr::BROADCAST, 46)).unwrap();
    let good = frame(mac(2), mac(1), 1500);
    hosts[0].send(&good).unwrap();
    assert_eq!(recv(&hosts[1]), good);
    handle.stop().unwrap();
    let switch = thread.join().unwrap();
    let p0 = &switch.state().ports[0].counters;
    assert_eq!(p0.rx_frames, 5);
    assert_eq!(p0.drops.get(DropReason::Runt), 2);
    assert_eq!(p0.drops.get(DropReason::Oversize), 1);
    assert_eq!(p0.drops.get(DropReason::InvalidSource), 1);
    assert_eq!(p0.drops.total(), 4);
}

#[test]
fn a_full_egress_queue_is_counted_as_no_room() {
    let (handle, thread, hosts) = start(2);
    // Never read host 1: its socket buffer fills and sends start failing with EAGAIN.
    let f = frame(mac(2), mac(1), 1000);
    for _ in 0..2000 {
        hosts[0].send(&f).unwrap();
    }
    let seen = loop {
        let (rx, tx, no_room) = handle
            .call(
                |s, _| {
                    let (p0, p1) = (&s.ports[0].counters, &s.ports[1].counters);
                    (p0.rx_frames, p1.tx_frames, p1.drops.get(DropReason::NoRoom))
                },
                Duration::from_secs(5),
            )
            .unwrap();
        if rx == 2000 {
            break (tx, no_room);
        }
        thread::yield_now();
    };
    assert!(seen.1 > 0, "expected no_room drops, got {seen:?}");
    assert_eq!(seen.0 + seen.1, 2000);
    handle.stop().unwrap();
    thread.join().unwrap();
}

fn vid(n: u16) -> crate::VlanId {
    crate::VlanId::new(n).unwrap()
}

#[test]
fn access_ports_and_trunks_tag_and_untag() {
    let trunk =
        VlanMode::Trunk { allowed: Box::new([vid(10), vid(20)].into_iter().collect()), native: None, tpid: 0x8100 };
    let (handle, thread, hosts) =
        start_with(&[(VlanMode::Access(vid(10)), false), (VlanMode::Access(vid(20)), false), (trunk, false)]);
    let untagged = frame(MacAddr::BROADCAST, mac(1), 46);
    hosts[0].send(&untagged).unwrap();
    let tagged = recv(&hosts[2]);
    let expected: Vec<u8> = [&untagged[..12], &[0x81, 0x00, 0x00, 0x0a][..], &untagged[12..]].concat();
    assert_eq!(tagged, expected, "VLAN 10 leaves the trunk tagged 10");
    // VLAN 20 in on the trunk: out of the VLAN 20 access port, untagged.
    let mut in20 = expected.clone();
    in20[15] = 20;
    in20[6..12].copy_from_slice(&mac(2).0);
    hosts[2].send(&in20).unwrap();
    let out = recv(&hosts[1]);
    assert_eq!(out.len(), untagged.len());
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    sync(&handle);
    assert_nothing_waiting(&hosts[1]);
    assert_nothing_waiting(&hosts[0]);
    handle.stop().unwrap();
    let switch = thread.join().unwrap();
    assert_eq!(switch.state().ports[1].counters.tx_frames, 1);
    assert_eq!(switch.state().ports[0].counters.tx_frames, 0);
}

#[test]
fn a_qinq_tunnel_wraps_customer_tags_in_a_service_tag() {
    let service = VlanMode::Trunk { allowed: Box::new([vid(100)].into_iter().collect()), native: None, tpid: 0x88a8 };
    let (handle, thread, hosts) = start_with(&[(VlanMode::Dot1qTunnel(vid(100)), false), (service, false)]);
    let customer = [
        &frame(MacAddr::BROADCAST, mac(1), 46)[..12],
        &[0x81, 0x00, 0x00, 0x0a][..],
        &[0x08, 0x00][..],
        &[0u8; 46][..],
    ]
    .concat();
    hosts[0].send(&customer).unwrap();
    let out = recv(&hosts[1]);
    assert_eq!(&out[12..20], &[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00, 0x0a], "S-tag 100 around C-tag 10");
    assert_eq!(&out[16..], &customer[12..]);
    // And back: the service tag comes off, the customer's stays.
    let mut back = out.clone();
    back[6..12].copy_from_slice(&mac(2).0);
    hosts[1].send(&back).unwrap();
    let delivered = recv(&hosts[0]);
    assert_eq!(&delivered[12..16], &[0x81, 0x00, 0x00, 0x0a]);
    assert_eq!(delivered.len(), customer.len());
    handle.stop().unwrap();
    thread.join().unwrap();
}

/// A UDP/IPv4 frame from host 1 to host 2 whose checksum is only the pseudo-header sum,
/// with the virtio-net header that says so: what a veth or a VM's TAP hands over.
fn partial_udp(payload: &[u8]) -> (Vec<u8>, u16) {
    let builder =
        etherparse::PacketBuilder::ethernet2(mac(1).0, mac(2).0).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(4000, 5000);
    let mut f = Vec::new();
    builder.write(&mut f, payload).unwrap();
    let complete = u16::from_be_bytes([f[40], f[41]]);
    let mut pseudo = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 17];
    pseudo.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    let partial = crate::wire::checksum::fold(crate::wire::checksum::sum(&pseudo, 0));
    f[40..42].copy_from_slice(&partial.to_be_bytes());
    (f, complete)
}

#[test]
fn partial_checksums_are_passed_on_or_completed_and_super_frames_counted() {
    use crate::wire::vnet_hdr::{F_NEEDS_CSUM, GSO_UDP_L4};
    let (handle, thread, hosts) =
        start_with(&[(VlanMode::Transparent, true), (VlanMode::Transparent, true), (VlanMode::Transparent, false)]);
    let (frame, complete) = partial_udp(b"finish me");
    let header = VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..VnetHdr::default() };
    hosts[0].send(&[&header.emit()[..], &frame].concat()).unwrap();
    // To the port that carries offload: header and partial checksum as they were.
    let passed = recv(&hosts[1]);
    assert_eq!(VnetHdr::parse(&passed).unwrap(), header);
    assert_eq!(&passed[10..], &frame[..]);
    // To the one that does not: completed in software.
    let completed = recv(&hosts[2]);
    assert_eq!(u16::from_be_bytes([completed[40], completed[41]]), complete);
    // A UDP super-frame (USO) is cut into datagrams for the plain port.
    let uso = VnetHdr { gso_type: GSO_UDP_L4, gso_size: 100, ..header };
    hosts[0].send(&[&uso.emit()[..], &frame].concat()).unwrap();
    assert_eq!(VnetHdr::parse(&recv(&hosts[1])).unwrap(), uso);
    let segmented = recv(&hosts[2]);
    assert_eq!(u16::from_be_bytes([segmented[40], segmented[41]]), complete);
    // UFO (the old IP-fragmenting GSO type) cannot go to the plain port: counted there.
    let ufo = VnetHdr { gso_type: crate::wire::vnet_hdr::GSO_UDP, gso_size: 100, ..header };
    hosts[0].send(&[&ufo.emit()[..], &frame].concat()).unwrap();
    assert_eq!(VnetHdr::parse(&recv(&hosts[1])).unwrap(), ufo);
    sync(&handle);
    assert_nothing_waiting(&hosts[2]);
    handle.stop().unwrap();
    let switch = thread.join().unwrap();
    assert_eq!(switch.state().ports[2].counters.drops.get(DropReason::NoSegmentation), 1);
}

#[test]
fn a_flood_reaches_every_configured_remote_and_one_refused_copy_does_not_stop_the_rest() {
    use crate::port::udp_tunnel::UdpTunnelPort;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let remotes: Vec<UdpSocket> = (2..=4u8)
        .map(|n| {
            let socket = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, n), port)).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            socket
        })
        .collect();
    let local: IpAddr = Ipv4Addr::LOCALHOST.into();
    // An IPv6 remote on an IPv4 underlay: the kernel refuses that copy.
    let addresses: Vec<IpAddr> = vec![
        Ipv4Addr::new(127, 0, 0, 2).into(),
        Ipv6Addr::LOCALHOST.into(),
        Ipv4Addr::new(127, 0, 0, 3).into(),
        Ipv4Addr::new(127, 0, 0, 4).into(),
    ];
    let config = loopback_vxlan(port, addresses, 7);
    let (mut switch, hosts) = datagram_switch(1);
    let tunnel = UdpTunnelPort::open(local, port, 64).unwrap();
    let vx = switch.add_vxlan(plain("vx0"), Vxlan::new(config), Box::new(tunnel)).unwrap();
    let (handle, thread) = run_in_thread(switch);
    let flood = frame(MacAddr::BROADCAST, mac(1), 46);
    hosts[0].send(&flood).unwrap();
    let mut buf = [0u8; 2048];
    for remote in &remotes {
        let n = remote.recv(&mut buf).expect("a copy for every IPv4 remote");
        assert_eq!((&buf[..8], &buf[8..n]), (&crate::wire::vxlan::header(7)[..], &flood[..]));
    }
    sync(&handle);
    handle.stop().unwrap();
    let switch = thread.join().unwrap();
    let counters = &switch.state().ports[vx.index()].counters;
    assert_eq!(counters.tx_frames, 3);
    assert_eq!(counters.drops.total(), 1, "the refused copy is counted");
}

#[test]
fn every_worker_serves_a_vxlan_port_and_shares_what_it_learns_behind_the_remotes() {
    use crate::port::udp_tunnel::UdpTunnelPort;
    use std::net::{IpAddr, Ipv4Addr, UdpSocket};
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (r5, r6): (IpAddr, IpAddr) = (Ipv4Addr::new(127, 0, 0, 5).into(), Ipv4Addr::new(127, 0, 0, 6).into());
    let remote5 = UdpSocket::bind((r5, port)).unwrap();
    let remote6 = UdpSocket::bind((r6, port)).unwrap();
    for r in [&remote5, &remote6] {
        r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let local: IpAddr = Ipv4Addr::LOCALHOST.into();
    let config = loopback_vxlan(port, vec![r5, r6], 9);
    let mut switch = Switch::new("test", FdbConfig::default()).unwrap();
    switch.set_threads(2).unwrap();
    let mut hosts = Vec::new(); // the host port's ends, per worker
    let mut ios: Vec<Box<dyn Port>> = Vec::new();
    for _ in 0..2 {
        let (io, host) = DatagramPort::pair().unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        ios.push(Box::new(io));
        hosts.push(host);
    }
    switch.add_port_queues(plain("host"), ios).unwrap();
    let tunnels: Vec<Box<dyn Port>> = UdpTunnelPort::open_group(local, port, 64, 2)
        .unwrap()
        .into_iter()
        .map(|t| Box::new(t) as Box<dyn Port>)
        .collect();
    let vx = switch.add_vxlan_queues(plain("vx0"), Vxlan::new(config), tunnels).unwrap();
    let (handle, thread) = run_in_thread(switch);
    // Worker 1 receives these from the host and encapsulates them itself (unknown unicast:
    // to both remotes).
    let mut buf = [0u8; 2048];
    for n in 0..20u8 {
        let out = frame(mac(n + 10), mac(9), 46 + usize::from(n));
        hosts[1].send(&out).unwrap();
        for remote in [&remote5, &remote6] {
            let len = remote.recv(&mut buf).expect("encapsulated by the second worker");
            assert_eq!((&buf[..8], &buf[8..len]), (&crate::wire::vxlan::header(9)[..], &out[..]), "frame {n}");
        }
    }
    eventually(&handle, |s| {
        eprintln!("{:?}", s.worker_rx_frames());
        s.worker_rx_frames() == vec![0, 20]
    });
    // Back from 127.0.0.5, from 16 source ports: the kernel spreads them over both workers'
    // sockets, and each worker delivers to its own queue of the host port.
    let senders: Vec<UdpSocket> = (0..16).map(|_| UdpSocket::bind((r5, 0)).unwrap()).collect();
    let behind = |k: usize| mac(100 + k as u8);
    for (k, sender) in senders.iter().enumerate() {
        let back = frame(mac(9), behind(k), 46);
        sender.send_to(&[&crate::wire::vxlan::header(9)[..], &back].concat(), ("127.0.0.1", port)).unwrap();
    }
    let mut arrived = 0;
    for host in &hosts {
        host.set_nonblocking(true).unwrap();
    }
    for _ in 0..500 {
        for host in &hosts {
            while host.recv(&mut buf).is_ok() {
                arrived += 1;
            }
        }
        if arrived == 16 {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(arrived, 16, "every datagram decapsulated and delivered");
    let per_worker = handle.call(move |s, _| s.worker_rx_frames(), Duration::from_secs(5)).unwrap();
    assert!(per_worker[0] > 0 && per_worker[1] > 20, "both workers received from the tunnel: {per_worker:?}");
    // Each replica learned the MACs behind 127.0.0.5 that reached it, and the others' too.
    let knows_all = move |s: &mut SwitchState| {
        let v = s.ports[vx.index()].vxlan.as_ref().unwrap();
        (0..16).all(|k| v.unicast_remote(VlanId::NONE, behind(k)).map(|i| v.remotes()[i].addr) == Some(r5))
    };
    eventually(&handle, knows_all);
    for _ in 0..500 {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let asked = handle
            .call(
                move |s, _| {
                    s.submit_to_worker(
                        1,
                        Box::new(move |s, _| {
                            let _ = tx.send(knows_all(s));
                        }),
                    )
                },
                Duration::from_secs(5),
            )
            .unwrap();
        assert!(asked);
        if rx.recv_timeout(Duration::from_secs(5)).unwrap() {
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    // So frames toward them, from either worker, go to 127.0.0.5 only.
    for host in &hosts {
        for k in 0..16 {
            host.send(&frame(behind(k), mac(9), 60)).unwrap();
            remote5.recv(&mut buf).expect("unicast to the remote it was learned behind");
            assert_eq!(&buf[8..14], &behind(k).0, "to {k}");
        }
    }
    remote6.set_nonblocking(true).unwrap();
    assert!(remote6.recv(&mut buf).is_err(), "nothing flooded to the other remote");
    // `vxlan show`'s counters add up every worker's (each publishes its own within a
    // millisecond of its last frame).
    let counts = move |s: &mut SwitchState| {
        let remotes = s.vxlan_totals(vx).unwrap().0;
        remotes.iter().find(|r| r.addr == r5).map(|r| (r.rx_packets, r.tx_packets))
    };
    eventually(&handle, move |s| counts(s) == Some((16, 20 + 32)));
    let remotes = handle.call(move |s, _| s.vxlan_totals(vx).unwrap().0, Duration::from_secs(5)).unwrap();
    let r = remotes.iter().find(|r| r.addr == r5).unwrap();
    assert_eq!((r.rx_packets, r.tx_packets), (16, 20 + 32));
    let (vx_counters, _) = handle.call(move |s, _| s.port_totals(vx), Duration::from_secs(5)).unwrap();
    assert_eq!(vx_counters.drops.total(), 0);
    handle.stop().unwrap();
    thread.join().unwrap();
}

#[test]
fn a_vxlan_port_encapsulates_learns_and_refuses_strangers() {
    use crate::port::udp_tunnel::UdpTunnelPort;
    use std::net::{IpAddr, Ipv4Addr, UdpSocket};
    // Loopback plays the underlay: we are 127.0.0.1, the remote VTEP 127.0.0.2.
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let remote = UdpSocket::bind(("127.0.0.2", port)).unwrap();
    remote.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local: IpAddr = Ipv4Addr::new(127, 0, 0, 1).into();
    let config = loopback_vxlan(port, vec![Ipv4Addr::new(127, 0, 0, 2).into()], 42);
    let mut switch = Switch::new("vx", FdbConfig::default()).unwrap();
    let (host_port, host) = DatagramPort::pair().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let info = |name: &str| PortInfo {
        name: name.into(),
        kind: "x".into(),
        netns: None,
        mtu: 1500,
        vlan: VlanMode::Transparent,
    };
    switch.add_port(info("host"), Box::new(host_port)).unwrap();
    let tunnel = UdpTunnelPort::open(local, port, 64).unwrap();
    let vx = switch.add_vxlan(info("vx0"), Vxlan::new(config), Box::new(tunnel)).unwrap();
    let (handle, thread) = run_in_thread(switch);

    // Host -> unknown destination: head-end replicated to the remote, VNI 42.
    let out = frame(mac(9), mac(1), 46);
    host.send(&out).unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = remote.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..8], &crate::wire::vxlan::header(42));
    assert_eq!(&buf[8..n], &out[..]);
    assert_eq!(from.ip(), local);
    // Remote -> host: decapsulated, and mac(9) learned behind the remote.
    let back = frame(mac(1), mac(9), 46);
    remote.send_to(&[&crate::wire::vxlan::header(42)[..], &back].concat(), ("127.0.0.1", port)).unwrap();
    assert_eq!(recv(&host), back);
    // A stranger's datagram is counted and teaches nothing.
    let stranger = UdpSocket::bind("127.0.0.3:0").unwrap();
    let forged = frame(MacAddr::BROADCAST, mac(66), 46);
    stranger.send_to(&[&crate::wire::vxlan::header(42)[..], &forged].concat(), ("127.0.0.1", port)).unwrap();
    let mut bad = crate::wire::vxlan::header(42);
    bad[0] = 0;
    remote.send_to(&[&bad[..], &forged].concat(), ("127.0.0.1", port)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (unknown, malformed, learned) = loop {
        let seen = handle
            .call(
                move |s, now| {
                    let p = &s.ports[vx.index()];
                    let v = p.vxlan.as_ref().unwrap();
                    (
                        p.counters.drops.get(DropReason::VxlanUnknownRemote),
                        p.counters.drops.get(DropReason::VxlanBadHeader),
                        v.macs(now).map(|m| m.mac).collect::<Vec<_>>(),
                    )
                },
                Duration::from_secs(5),
            )
            .unwrap();
        if seen.0 + seen.1 == 2 || std::time::Instant::now() > deadline {
            break seen;
        }
        thread::yield_now();
    };
    assert_eq!((unknown, malformed), (1, 1));
    assert_eq!(learned, vec![mac(9)]);
    // Known unicast now goes to that remote only (one datagram).
    host.send(&frame(mac(9), mac(1), 46)).unwrap();
    let (n, _) = remote.recv_from(&mut buf).unwrap();
    assert_eq!(n, 8 + 60);
    handle.stop().unwrap();
    let switch = thread.join().unwrap();
    let v = switch.state().ports[vx.index()].vxlan.as_ref().unwrap();
    // Received: the one good datagram (the malformed one is refused before it counts).
    assert_eq!((v.remotes()[0].tx_packets, v.remotes()[0].rx_packets), (2, 1));
}

#[test]
fn a_super_frame_is_cut_into_segments_for_a_port_that_cannot_take_it() {
    use crate::wire::vnet_hdr::{F_NEEDS_CSUM, GSO_TCPV4};
    let (handle, thread, hosts) =
        start_with(&[(VlanMode::Transparent, true), (VlanMode::Transparent, true), (VlanMode::Transparent, false)]);
    let data: Vec<u8> = (0..4000u32).map(|i| (i % 253) as u8).collect();
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(mac(1).0, MacAddr::BROADCAST.0)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 80, 1, 1000)
        .write(&mut frame, &data)
        .unwrap();
    let gso = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    hosts[0].send(&[&gso.emit()[..], &frame].concat()).unwrap();
    // Whole to the port that carries offload ...
    let whole = recv(&hosts[1]);
    assert_eq!(VnetHdr::parse(&whole).unwrap(), gso);
    assert_eq!(whole.len(), 10 + frame.len());
    // ... and as three valid TCP segments to the one that does not.
    let mut payload = Vec::new();
    for _ in 0..3 {
        let segment = recv(&hosts[2]);
        let parsed = etherparse::SlicedPacket::from_ethernet(&segment).unwrap();
        let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Tcp(tcp))) =
            (&parsed.net, &parsed.transport)
        else {
            panic!("not TCP/IPv4")
        };
        assert_eq!(
            tcp.checksum(),
            tcp.to_header().calc_checksum_ipv4(&ip.header().to_header(), tcp.payload()).unwrap()
        );
        payload.extend_from_slice(tcp.payload());
    }
    assert_eq!(payload, data);
    handle.stop().unwrap();
    let switch = thread.join().unwrap();
    assert_eq!(switch.state().ports[2].counters.tx_frames, 3);
    assert_eq!(switch.state().ports[2].counters.drops.total(), 0);
}

#[test]
fn a_busy_polling_loop_forwards_and_stops() {
    let (mut switch, hosts) = datagram_switch(2);
    switch.set_busy_poll(crate::busy_poll::BusyPoll::Window(Duration::from_secs(60)));
    let handle = switch.handle();
    let thread = thread::spawn(move || switch.run().unwrap());
    for n in 0..100u8 {
        let f = frame(mac(2), mac(1), 46 + usize::from(n));
        hosts[0].send(&f).unwrap();
        assert_eq!(recv(&hosts[1]), f);
    }
    // Still spinning (the last frame was just now): a stop must still get through.
    handle.stop().unwrap();
    thread.join().unwrap();
}

#[test]
fn jobs_see_ports_by_name_and_stop_ends_the_loop() {
    let (handle, thread, _hosts) = start(2);
    let mtu = handle.call(|s, _| s.port_by_name("p1").map(|p| p.info.mtu), Duration::from_secs(5)).unwrap();
    assert_eq!(mtu, Some(1500));
    handle.stop().unwrap();
    thread.join().unwrap();
    assert_eq!(handle.call(|_, _| (), Duration::from_secs(1)), Err(HandleError::Stopped));
}

/// Adds a datagram port named `name` in `vlan` to a running switch of `threads` workers;
/// returns its id and the host ends (one per worker).
fn add_live(handle: &SwitchHandle, name: &str, vlan: VlanMode, threads: usize) -> (PortId, Vec<UnixDatagram>) {
    let mut ios: Vec<Box<dyn Port>> = Vec::new();
    let mut hosts = Vec::new();
    for _ in 0..threads {
        let (port, host) = DatagramPort::pair().unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        ios.push(Box::new(port));
        hosts.push(host);
    }
    let info = PortInfo { vlan, ..plain(name) };
    let id = handle.call(move |s, now| s.add_port(info, PortIo::Queues(ios), now), Duration::from_secs(5)).unwrap();
    (id.unwrap(), hosts)
}

#[test]
fn ports_come_and_go_while_the_others_keep_their_macs_and_counters() {
    let (handle, thread, hosts) = start(3);
    // Hosts behind p0 and p1 are learned.
    hosts[0].send(&frame(mac(2), mac(1), 50)).unwrap();
    recv(&hosts[1]);
    recv(&hosts[2]);
    hosts[1].send(&frame(mac(1), mac(2), 50)).unwrap();
    recv(&hosts[0]);
    assert_nothing_waiting(&hosts[2]);

    let (p3, new) = add_live(&handle, "p3", VlanMode::Transparent, 1);
    assert_eq!(p3, PortId(3));
    // A flood reaches the new port; a learned unicast does not.
    hosts[0].send(&frame(mac(9), mac(1), 50)).unwrap();
    recv(&hosts[1]);
    recv(&hosts[2]);
    recv(&new[0]);
    hosts[0].send(&frame(mac(2), mac(1), 50)).unwrap();
    recv(&hosts[1]);
    assert_nothing_waiting(&new[0]);
    // The new port learns, and is reached by unicast.
    new[0].send(&frame(mac(1), mac(4), 50)).unwrap();
    recv(&hosts[0]);
    hosts[0].send(&frame(mac(4), mac(1), 50)).unwrap();
    recv(&new[0]);
    assert_nothing_waiting(&hosts[1]);

    // p1 goes: its MACs are forgotten (frames to them flood), p0's are kept.
    handle.call(|s, now| s.remove_port(PortId(1), now), Duration::from_secs(5)).unwrap().unwrap();
    let state = handle
        .call(
            |s, _| {
                let names: Vec<String> = s.live_ports().map(|p| p.info.name.clone()).collect();
                (names, s.bridge.fdb().lookup(VlanId::NONE, mac(2)), s.bridge.fdb().lookup(VlanId::NONE, mac(1)))
            },
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(state, (vec!["p0".into(), "p2".into(), "p3".into()], None, Some(PortId(0))));
    assert!(handle.call(|s, _| s.port_by_name("p1").is_none(), Duration::from_secs(5)).unwrap());
    new[0].send(&frame(mac(2), mac(4), 50)).unwrap();
    recv(&hosts[2]);
    recv(&hosts[0]);
    assert!(hosts[1].send(&frame(mac(1), mac(2), 50)).is_err(), "p1's I/O is closed");

    // Removing it again, or a port that never was, is refused and changes nothing.
    let again = handle.call(|s, now| s.remove_port(PortId(1), now), Duration::from_secs(5)).unwrap();
    assert!(matches!(again, Err(ChangeError::NoSuchPort(_))));
    let twice = handle.call(|s, now| s.add_port(plain("p0"), PortIo::Queues(vec![]), now), Duration::from_secs(5));
    assert_eq!(twice.unwrap(), Err(ChangeError::Exists("p0".into())));

    // The slot is not reused at once (updates about the old port may be in flight) ...
    let (p4, _p4_hosts) = add_live(&handle, "p4", VlanMode::Transparent, 1);
    assert_eq!(p4, PortId(4));
    let counters = handle.call(|s, _| s.port_totals(PortId(0)).0.rx_frames, Duration::from_secs(5)).unwrap();
    assert_eq!(counters, 4, "p0 kept its counters through the changes");
    handle.stop().unwrap();
    let mut switch = thread.join().unwrap();
    // ... but once quarantined, it is.
    let later = Instant::ZERO + Duration::from_secs(3600);
    let (port, _host) = DatagramPort::pair().unwrap();
    let reused = switch.state_mut().add_port(plain("p5"), PortIo::Queues(vec![Box::new(port)]), later).unwrap();
    assert_eq!(reused, PortId(1));
}

#[test]
fn a_port_moved_to_another_vlan_reaches_that_vlan_only() {
    let v = |n| VlanMode::Access(VlanId::new(n).unwrap());
    let (handle, thread, hosts) = start_with(&[(v(10), false), (v(10), false), (v(20), false)]);
    hosts[0].send(&frame(mac(9), mac(1), 50)).unwrap();
    recv(&hosts[1]);
    assert_nothing_waiting(&hosts[2]);
    hosts[1].send(&frame(mac(1), mac(2), 50)).unwrap();
    recv(&hosts[0]);
    handle.call(move |s, _| s.reconfigure_port(PortId(1), v(20), 1500), Duration::from_secs(5)).unwrap().unwrap();
    // What p1 learned in VLAN 10 is gone; p1 now shares VLAN 20 with p2.
    let learned = handle.call(|s, _| s.bridge.fdb().lookup(VlanId::new(10).unwrap(), mac(2)), Duration::from_secs(5));
    assert_eq!(learned.unwrap(), None);
    hosts[0].send(&frame(mac(9), mac(1), 50)).unwrap();
    assert_nothing_waiting(&hosts[1]);
    assert_nothing_waiting(&hosts[2]);
    hosts[1].send(&frame(mac(9), mac(2), 50)).unwrap();
    recv(&hosts[2]);
    assert_nothing_waiting(&hosts[0]);
    handle.stop().unwrap();
    thread.join().unwrap();
}

#[test]
fn every_worker_forwards_to_and_from_a_port_added_while_running() {
    let (handle, thread, hosts) = start_two_workers();
    let (id, new) = add_live(&handle, "p3", VlanMode::Transparent, 2);
    // From the new port's queue on each worker, to p0 (flooded: p0 is not learned yet).
    for (worker, host) in new.iter().enumerate() {
        host.send(&frame(mac(1), mac(30 + worker as u8), 50)).unwrap();
        let got = recv(&hosts[0][worker]);
        assert_eq!(&got[6..12], &mac(30 + worker as u8).0);
        recv(&hosts[1][worker]);
        recv(&hosts[2][worker]);
    }
    // Both workers learned where mac(30) is (worker 1 told worker 0); a frame from p1 on
    // worker 0 goes to the new port alone.
    eventually(&handle, |s| s.bridge.fdb().lookup(VlanId::NONE, mac(31)) == Some(PortId(3)));
    hosts[1][0].send(&frame(mac(31), mac(2), 50)).unwrap();
    recv(&new[0]);
    assert_nothing_waiting(&hosts[2][0]);
    // Removed on every worker: floods from either worker no longer reach it.
    handle.call(move |s, now| s.remove_port(id, now), Duration::from_secs(5)).unwrap().unwrap();
    for ((from, also), other) in hosts[0].iter().zip(&hosts[1]).zip(&hosts[2]) {
        from.send(&frame(mac(99), mac(1), 50)).unwrap();
        recv(also);
        recv(other);
    }
    sync(&handle);
    for host in &new {
        assert!(host.send(&frame(mac(1), mac(3), 50)).is_err(), "every queue is closed");
    }
    handle.stop().unwrap();
    thread.join().unwrap();
}

#[test]
fn a_bond_gains_and_loses_members_keeping_the_ones_that_stay() {
    use crate::bond::{BondConfig, BondMode};
    let config = BondConfig {
        mode: BondMode::Broadcast,
        miimon: Duration::from_millis(100),
        updelay: Duration::ZERO,
        downdelay: Duration::ZERO,
        primary: None,
        lacp: None,
    };
    let up = |names: Vec<String>| {
        let mut bond = Bond::new(config.clone(), names.clone());
        for i in 0..names.len() {
            bond.observe(i, true, Instant::ZERO);
        }
        bond
    };
    let (mut switch, hosts) = switch_with(&[(VlanMode::Transparent, false)]);
    let (a, a_host) = DatagramPort::pair().unwrap();
    let (b, b_host) = DatagramPort::pair().unwrap();
    let (c, c_host) = DatagramPort::pair().unwrap();
    for host in [&a_host, &b_host, &c_host] {
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let bond = switch.add_bond(plain("bond"), up(vec!["a".into(), "b".into()]), vec![Box::new(a), Box::new(b)]);
    let bond = bond.unwrap();
    let (handle, thread) = run_in_thread(switch);
    hosts[0].send(&frame(mac(9), mac(1), 50)).unwrap();
    recv(&a_host);
    recv(&b_host);
    // b leaves and c joins; a keeps its socket.
    let bond_c = up(vec!["a".into(), "c".into()]);
    let members = vec![MemberIo::Keep(0), MemberIo::New(Box::new(c))];
    handle.call(move |s, _| s.replace_bond(bond, bond_c, members), Duration::from_secs(5)).unwrap().unwrap();
    hosts[0].send(&frame(mac(9), mac(1), 50)).unwrap();
    recv(&a_host);
    recv(&c_host);
    assert!(b_host.send(&frame(mac(1), mac(2), 50)).is_err(), "b's socket is closed");
    // Frames from a kept member and a new one both come in.
    a_host.send(&frame(mac(1), mac(5), 50)).unwrap();
    recv(&hosts[0]);
    c_host.send(&frame(mac(1), mac(6), 50)).unwrap();
    recv(&hosts[0]);
    let members = handle.call(move |s, _| s.ports[bond.index()].endpoints.len(), Duration::from_secs(5)).unwrap();
    assert_eq!(members, 2);
    handle.stop().unwrap();
    thread.join().unwrap();
}

#[test]
fn a_single_io_port_is_served_by_the_first_worker_and_reached_from_every_worker() {
    let (handle, thread, hosts) = start_two_workers();
    let (port, host) = DatagramPort::pair().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let added =
        handle.call(move |s, now| s.add_port(plain("vm"), PortIo::Single(Box::new(port)), now), Duration::from_secs(5));
    let id = added.unwrap().unwrap();
    // A flood from either worker's queue reaches it (the second worker hands its copy over).
    for (worker, from) in hosts[0].iter().enumerate() {
        from.send(&frame(mac(9), mac(1 + worker as u8), 50)).unwrap();
        let got = recv(&host);
        assert_eq!(&got[6..12], &mac(1 + worker as u8).0);
    }
    // Its frames come in on the first worker.
    host.send(&frame(mac(1), mac(40), 50)).unwrap();
    eventually(&handle, move |s| s.bridge.fdb().lookup(VlanId::NONE, mac(40)) == Some(id));
    handle.stop().unwrap();
    thread.join().unwrap();
}

#[test]
fn port_modes_hold_on_every_worker_and_storm_control_is_one_budget() {
    use crate::port_modes::{PortModes, StormPps};
    let (handle, thread, hosts) = start_two_workers();
    let hairpin = PortModes {
        hairpin: true,
        storm_pps: StormPps { broadcast: Some(1), ..StormPps::default() },
        ..PortModes::default()
    };
    let isolated = PortModes { isolated: true, ..PortModes::default() };
    for (id, modes) in [(PortId(0), hairpin.clone()), (PortId(1), isolated.clone()), (PortId(2), isolated)] {
        handle.call(move |s, _| s.set_port_modes(id, modes), Duration::from_secs(5)).unwrap().unwrap();
    }
    // On either worker, an isolated port's flood reaches the plain port only.
    for worker in 0..2 {
        hosts[1][worker].send(&frame(mac(9), mac(2), 50)).unwrap();
        recv(&hosts[0][worker]);
        assert_nothing_waiting(&hosts[2][worker]);
        assert_nothing_waiting(&hosts[2][1 - worker]);
    }
    // p0's broadcasts: one a second between both workers, back to p0 too (hairpin).
    for worker in [0, 1, 0, 1, 0, 1] {
        hosts[0][worker].send(&frame(MacAddr::BROADCAST, mac(1), 50)).unwrap();
    }
    eventually(&handle, |s| s.port_totals(PortId(0)).0.drops.get(DropReason::StormBroadcast) == 5);
    let delivered: usize = (0..2)
        .map(|w| {
            let mut n = 0;
            hosts[1][w].set_read_timeout(Some(Duration::from_millis(30))).unwrap();
            let mut buf = [0u8; 2048];
            while hosts[1][w].recv(&mut buf).is_ok() {
                n += 1;
            }
            n
        })
        .sum();
    assert_eq!(delivered, 1, "broadcasts delivered to p1 across both workers");
    let back: usize = (0..2)
        .map(|w| {
            hosts[0][w].set_read_timeout(Some(Duration::from_millis(30))).unwrap();
            let mut buf = [0u8; 2048];
            std::iter::from_fn(|| hosts[0][w].recv(&mut buf).ok()).count()
        })
        .sum();
    assert_eq!(back, 1, "the admitted broadcast came back to p0 (hairpin)");
    // Other modes changed, the same rate keeps the budget it has drawn on (within the second).
    let plain_hairpin = PortModes { hairpin: false, ..hairpin };
    handle.call(move |s, _| s.set_port_modes(PortId(0), plain_hairpin), Duration::from_secs(5)).unwrap().unwrap();
    hosts[0][1].send(&frame(MacAddr::BROADCAST, mac(1), 50)).unwrap();
    eventually(&handle, |s| s.port_totals(PortId(0)).0.drops.get(DropReason::StormBroadcast) == 6);
    handle.stop().unwrap();
    thread.join().unwrap();
}

#[test]
fn spanning_tree_takes_bpdus_sends_its_own_and_gates_ports() {
    use crate::stp::{PortState as StpState, Role, StpConfig, StpMode, StpPortConfig};
    use crate::wire::bpdu::{Bpdu, BpduKind};
    let (mut switch, hosts) = switch_with(&vec![(VlanMode::Transparent, false); 3]);
    let bpdu_from_peer = {
        let mut peer = crate::stp::Stp::new(StpConfig { priority: 4096, ..StpConfig::new(StpMode::Rstp, mac(0x99)) });
        peer.add_port(PortId(0), StpPortConfig::default(), true, Instant::ZERO);
        let mut out = Vec::new();
        peer.transmit(Instant::ZERO, mac(0x99), &mut out);
        out[0].1
    };
    // Off: a BPDU floods like the kernel bridge's with STP off.
    hosts[0].send(&bpdu_from_peer).unwrap();
    switch.run_once(Instant::from_secs(1));
    assert_eq!(recv(&hosts[1]), bpdu_from_peer.to_vec());
    assert_eq!(recv(&hosts[2]), bpdu_from_peer.to_vec());
    // On: the BPDU is the tree's, and each port sends its own.
    let now = Instant::from_secs(2);
    let config = StpConfig::new(StpMode::Rstp, mac(0xbb));
    switch.state_mut().stp_configure(Some(config), now);
    let edge = StpPortConfig { edge: true, ..StpPortConfig::default() };
    switch.state_mut().stp_set_port(PortId(2), edge, now);
    hosts[0].send(&bpdu_from_peer).unwrap();
    switch.run_once(now);
    let stp = switch.state().stp().unwrap();
    assert_eq!(stp.root_id(), 0x1000_0000_0000_0000 | mac(0x99).to_u64());
    assert_eq!(stp.port(PortId(0)).unwrap().role(), Role::Root);
    assert_eq!(switch.state().bridge.stp_state(PortId(0)), StpState::Forwarding);
    assert_eq!(switch.state().bridge.stp_state(PortId(2)), StpState::Forwarding);
    // Port 1 is designated, proposing, discarding: data from it goes nowhere.
    assert_eq!(switch.state().bridge.stp_state(PortId(1)), StpState::Discarding);
    let sent = Bpdu::parse(&recv(&hosts[1])).unwrap();
    assert_eq!(sent.kind, BpduKind::Rst);
    assert_eq!(sent.root_id, stp.root_id());
    hosts[1].send(&frame(MacAddr::BROADCAST, mac(1), 46)).unwrap();
    switch.run_once(now);
    let drops = switch.state().ports[1].counters.drops;
    assert_eq!(drops.get(DropReason::StpDiscarding), 1);
    assert!(recv(&hosts[0]).len() >= 60); // BPDUs only; the broadcast went nowhere
    // Data from the root port reaches the edge port but not the discarding one.
    hosts[0].send(&frame(MacAddr::BROADCAST, mac(2), 100)).unwrap();
    switch.run_once(now);
    let mut got = recv(&hosts[2]);
    while got.len() == 60 {
        got = recv(&hosts[2]);
    }
    assert_eq!(got, frame(MacAddr::BROADCAST, mac(2), 100));
    // A malformed BPDU is counted.
    let mut bad = bpdu_from_peer;
    bad[20] = 0x77;
    hosts[0].send(&bad).unwrap();
    switch.run_once(now);
    let drops = switch.state().ports[0].counters.drops;
    assert_eq!(drops.get(DropReason::BadBpdu), 1);
    // The port's link goes down: it leaves the tree's active topology.
    switch.state_mut().set_link(PortId(0), LinkState::Down);
    assert_eq!(switch.state().stp().unwrap().port(PortId(0)).unwrap().role(), Role::Disabled);
    assert_eq!(switch.state().stp().unwrap().root_id(), config.bridge_id());
}

#[test]
fn another_workers_bpdus_reach_the_tree_and_its_port_states_reach_every_worker() {
    use crate::stp::{PortState as StpState, Role, StpConfig, StpMode, StpPortConfig};
    let (handle, thread, hosts) = start_two_workers();
    handle
        .call(
            |s, now| {
                s.stp_configure(Some(StpConfig::new(StpMode::Rstp, mac(0xbb))), now);
                s.stp_set_port(PortId(2), StpPortConfig { edge: true, ..StpPortConfig::default() }, now);
            },
            Duration::from_secs(5),
        )
        .unwrap();
    let superior = {
        let mut peer = crate::stp::Stp::new(StpConfig { priority: 4096, ..StpConfig::new(StpMode::Rstp, mac(0x99)) });
        peer.add_port(PortId(0), StpPortConfig::default(), true, Instant::ZERO);
        let mut out = Vec::new();
        peer.transmit(Instant::ZERO, mac(0x99), &mut out);
        out[0].1
    };
    // Worker 1 reads the BPDU and hands it to the tree on the first worker.
    hosts[0][1].send(&superior).unwrap();
    eventually(&handle, |s| s.stp().is_some_and(|t| t.root_port() == Some(PortId(0))));
    let role = handle.call(|s, _| s.stp().unwrap().port(PortId(0)).unwrap().role(), Duration::from_secs(5));
    assert_eq!(role.unwrap(), Role::Root);
    // Worker 1 forwards from the root port to the edge port, not to the discarding one.
    let states = handle.call(
        |s, _| (s.bridge.stp_state(PortId(0)), s.bridge.stp_state(PortId(1)), s.bridge.stp_state(PortId(2))),
        Duration::from_secs(5),
    );
    assert_eq!(states.unwrap(), (StpState::Forwarding, StpState::Discarding, StpState::Forwarding));
    let data = frame(MacAddr::BROADCAST, mac(7), 100);
    hosts[0][1].send(&data).unwrap();
    assert_eq!(recv(&hosts[2][1]), data);
    sync(&handle);
    assert_nothing_waiting(&hosts[1][1]);
    // Nothing from the discarding port goes anywhere on worker 1 either.
    hosts[1][1].send(&frame(MacAddr::BROADCAST, mac(8), 100)).unwrap();
    thread::sleep(Duration::from_millis(50));
    assert_nothing_waiting(&hosts[0][1]);
    assert_nothing_waiting(&hosts[2][1]);
    handle.stop().unwrap();
    thread.join().unwrap();
}

/// Snooping on two workers: a report read by one worker restricts the group's traffic on the
/// other, and a router port set on the first reaches the second.
#[test]
fn workers_share_what_they_snoop_and_the_router_ports() {
    let mut switch = Switch::new("mcast", FdbConfig::default()).unwrap();
    let config = crate::mdb::McastConfig { snooping: true, ..Default::default() };
    switch.state_mut().bridge.mdb_mut().set_config(config);
    switch.set_threads(2).unwrap();
    let mut hosts = Vec::new(); // hosts[port][worker]
    for i in 0..3 {
        let mut ios: Vec<Box<dyn Port>> = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..2 {
            let (port, host) = DatagramPort::pair().unwrap();
            host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            ios.push(Box::new(port));
            ends.push(host);
        }
        switch.add_port_queues(plain(&format!("p{i}")), ios).unwrap();
        hosts.push(ends);
    }
    let (handle, thread) = run_in_thread(switch);
    #[rustfmt::skip]
    let report: Vec<u8> = vec![
        0x01, 0x00, 0x5e, 0x01, 0x02, 0x03, 0x02, 0, 0, 0, 0, 0x0b, 0x08, 0x00,
        0x46, 0x00, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x01, 0x02, 0xe9, 0xd1,
        10, 0, 0, 2, 239, 1, 2, 3, 0x94, 0x04, 0x00, 0x00,
        0x16, 0x00, 0xf8, 0xfa, 239, 1, 2, 3,
    ];
    let mut data = frame(MacAddr([0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]), mac(1), 46);
    data[14..34].copy_from_slice(&[0x45, 0, 0, 46, 0, 0, 0x40, 0, 1, 17, 0, 0, 10, 0, 0, 1, 239, 1, 2, 3]);

    // Worker 1 reads the report on port 1 (no querier: it floods).
    hosts[1][1].send(&report).unwrap();
    assert_eq!(recv(&hosts[0][1]), report);
    assert_eq!(recv(&hosts[2][1]), report);
    let group = crate::wire::igmp::GroupAddr::V4([239, 1, 2, 3]);
    eventually(&handle, move |s| s.bridge.mdb().is_known(VlanId::NONE, group));
    // Worker 0 sends the group's traffic to port 1 alone.
    hosts[0][0].send(&data).unwrap();
    assert_eq!(recv(&hosts[1][0]), data);
    sync(&handle);
    assert_nothing_waiting(&hosts[2][0]);

    // A router port set on the first worker reaches the second: it gets the group too.
    handle.call(|s, _| s.mdb_set_router(PortId(2), true), Duration::from_secs(5)).unwrap();
    let on_worker_1 = |s: &mut SwitchState| {
        let (tx, rx) = crossbeam_channel::bounded(1);
        s.submit_to_worker(
            1,
            Box::new(move |w, _| {
                let _ = tx.send(w.bridge.mdb().static_routers().collect::<Vec<_>>());
            }),
        );
        rx.recv_timeout(Duration::from_secs(5)).unwrap() == vec![PortId(2)]
    };
    eventually(&handle, on_worker_1);
    hosts[0][1].send(&data).unwrap();
    assert_eq!(recv(&hosts[1][1]), data);
    assert_eq!(recv(&hosts[2][1]), data);
    assert_eq!(handle.call(|s, _| s.fdb_updates_lost(), Duration::from_secs(5)).unwrap(), 0);

    handle.stop().unwrap();
    thread.join().unwrap();
}

/// The querier sends an IGMP and an MLD general query into each VLAN, tagged as each port's
/// mode says, once the ports have settled; and nothing before.
#[test]
fn the_querier_queries_every_vlan_the_ports_carry() {
    let v = |n| VlanId::new(n).unwrap();
    let trunk = VlanMode::Trunk { allowed: Box::new([v(10), v(20)].into_iter().collect()), native: None, tpid: 0x8100 };
    let (mut switch, hosts) =
        switch_with(&[(VlanMode::Transparent, false), (VlanMode::Access(v(10)), false), (trunk, false)]);
    let config = crate::mdb::McastConfig { snooping: true, querier: true, ..Default::default() };
    switch.state_mut().bridge.mdb_mut().set_config(config);
    let t0 = Instant::from_secs(100);
    switch.run_once(t0);
    for host in &hosts {
        assert_nothing_waiting(host);
    }
    switch.run_once(t0 + crate::mdb::QUERY_SETTLE);
    // Port 0 (VLAN 0) and port 1 (access 10): one IGMP and one MLD query each, untagged.
    for host in &hosts[..2] {
        let igmp = recv(host);
        assert_eq!((&igmp[..6], &igmp[12..14]), (&[0x01, 0x00, 0x5e, 0, 0, 1][..], &[0x08, 0x00][..]));
        let mld = recv(host);
        assert_eq!((&mld[..6], &mld[12..14]), (&[0x33, 0x33, 0, 0, 0, 1][..], &[0x86, 0xdd][..]));
        assert_nothing_waiting(host);
    }
    // The trunk: both kinds in VLAN 10 and in VLAN 20, tagged.
    let mut tags: Vec<(u16, u16)> = (0..4)
        .map(|_| {
            let f = recv(&hosts[2]);
            assert_eq!(&f[12..14], &[0x81, 0x00]);
            (u16::from_be_bytes([f[14], f[15]]) & 0x0fff, u16::from_be_bytes([f[16], f[17]]))
        })
        .collect();
    tags.sort_unstable();
    assert_eq!(tags, vec![(10, 0x0800), (10, 0x86dd), (20, 0x0800), (20, 0x86dd)]);
    assert_nothing_waiting(&hosts[2]);
    assert_eq!(switch.state().bridge.mdb().queries_sent, 2 * 3);
    // Nothing more until the next startup query.
    switch.run_once(t0 + crate::mdb::QUERY_SETTLE + Duration::from_secs(1));
    assert_nothing_waiting(&hosts[0]);
}

/// A snooped group's traffic keeps port isolation: from an isolated port it reaches a member
/// behind a plain port, not one behind another isolated port.
#[test]
fn group_traffic_from_an_isolated_port_skips_isolated_members() {
    use crate::port_modes::PortModes;
    let (mut switch, hosts) = switch_with(&vec![(VlanMode::Transparent, false); 3]);
    let config = crate::mdb::McastConfig { snooping: true, ..Default::default() };
    switch.state_mut().bridge.mdb_mut().set_config(config);
    let isolated = PortModes { isolated: true, ..PortModes::default() };
    for id in [PortId(0), PortId(1)] {
        switch.state_mut().set_port_modes(id, isolated.clone()).unwrap();
    }
    #[rustfmt::skip]
    let report = |src: u8| -> Vec<u8> {
        vec![
            0x01, 0x00, 0x5e, 0x01, 0x02, 0x03, 0x02, 0, 0, 0, 0, src, 0x08, 0x00,
            0x46, 0x00, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x01, 0x02, 0xe9, 0xd1,
            10, 0, 0, 2, 239, 1, 2, 3, 0x94, 0x04, 0x00, 0x00,
            0x16, 0x00, 0xf8, 0xfa, 239, 1, 2, 3,
        ]
    };
    // Members behind port 1 (isolated) and port 2 (plain).
    for (port, src) in [(1, 0x0b), (2, 0x0c)] {
        hosts[port].send(&report(src)).unwrap();
        switch.run_once(Instant::from_secs(1));
        for (other, host) in hosts.iter().enumerate() {
            if other != port {
                let _ = host.set_read_timeout(Some(Duration::from_millis(50)));
                let mut buf = [0u8; 2048];
                while host.recv(&mut buf).is_ok() {}
            }
        }
    }
    let group = crate::wire::igmp::GroupAddr::V4([239, 1, 2, 3]);
    assert!(switch.state().bridge.mdb().is_known(VlanId::NONE, group));
    let mut data = frame(MacAddr([0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]), mac(1), 46);
    data[14..34].copy_from_slice(&[0x45, 0, 0, 46, 0, 0, 0x40, 0, 1, 17, 0, 0, 10, 0, 0, 1, 239, 1, 2, 3]);
    hosts[0].send(&data).unwrap();
    switch.run_once(Instant::from_secs(1));
    hosts[2].set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(recv(&hosts[2]), data);
    assert_nothing_waiting(&hosts[1]);
}

// `vswitchctl trace`: the real pipeline, recorded, with nothing sent, learned or counted.

fn trace_egress(log: &crate::trace::TraceLog, port: PortId) -> Vec<crate::trace::EgressAction> {
    log.events()
        .iter()
        .filter_map(|e| match e {
            crate::trace::TraceEvent::Egress { port: p, action } if *p == port => Some(action.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_trace_follows_a_known_unicast_and_changes_nothing() {
    use crate::trace::{EgressAction, Learning, TraceEvent};
    let (mut switch, hosts) = datagram_switch(3);
    let now = Instant::from_secs(1);
    switch.state_mut().bridge.fdb_mut().learn(crate::VlanId::NONE, mac(2), PortId(1), now);
    let counters_before: Vec<_> = switch.state().ports.iter().map(|p| p.counters).collect();
    let log = switch.state_mut().trace(PortId(0), &frame(mac(2), mac(1), 46), now);
    let events = log.events();
    assert_eq!(events[0], TraceEvent::Received { port: PortId(0), len: 60 });
    assert!(events.contains(&TraceEvent::Learn {
        vlan: crate::VlanId::NONE,
        mac: mac(1),
        outcome: Learning::WouldLearn
    }));
    assert!(events.contains(&TraceEvent::Lookup { vlan: crate::VlanId::NONE, mac: mac(2), port: Some(PortId(1)) }));
    assert!(events.contains(&TraceEvent::Decision(Forward::Unicast(PortId(1)))));
    assert_eq!(
        trace_egress(&log, PortId(1)),
        vec![
            EgressAction::Vlan(Egress::Untagged),
            EgressAction::Offload("none: a plain frame"),
            EgressAction::WouldSend { len: 60, member: None }
        ]
    );
    assert_eq!(log.sent_to(), vec![PortId(1)]);
    // Nothing learned, counted or sent.
    assert!(switch.state().bridge.fdb().lookup(crate::VlanId::NONE, mac(1)).is_none(), "the source was not learned");
    let counters_after: Vec<_> = switch.state().ports.iter().map(|p| p.counters).collect();
    assert_eq!(counters_before, counters_after);
    for host in &hosts {
        assert_nothing_waiting(host);
    }
    // To the port it came from: dropped by name.
    let back = switch.state_mut().trace(PortId(1), &frame(mac(2), mac(3), 46), now);
    assert_eq!(back.dropped(), Some(DropReason::SamePort));
    assert!(back.sent_to().is_empty());
}

#[test]
fn a_trace_across_vlans_shows_the_tag_pushed_and_the_ports_passed_by() {
    use crate::trace::{EgressAction, TraceEvent};
    let trunk =
        VlanMode::Trunk { allowed: Box::new([vid(10), vid(20)].into_iter().collect()), native: None, tpid: 0x8100 };
    let (mut switch, hosts) = switch_with(&[
        (VlanMode::Access(vid(10)), false),
        (VlanMode::Access(vid(20)), false),
        (trunk, false),
        (VlanMode::Access(vid(10)), false),
    ]);
    let log = switch.state_mut().trace(PortId(0), &frame(MacAddr::BROADCAST, mac(1), 46), Instant::ZERO);
    assert!(log.events().contains(&TraceEvent::Classified { vlan: vid(10), pcp: 0, tag_stripped: false }));
    assert!(log.events().contains(&TraceEvent::Decision(Forward::Flood)));
    assert_eq!(trace_egress(&log, PortId(1)), vec![EgressAction::Skipped("not in the frame's VLAN")]);
    let push = crate::vlan::PushTag { tpid: 0x8100, tci: 10 };
    assert_eq!(trace_egress(&log, PortId(2))[0], EgressAction::Vlan(Egress::Tagged(push)));
    assert_eq!(trace_egress(&log, PortId(2))[2], EgressAction::WouldSend { len: 64, member: None });
    assert_eq!(log.sent_to(), vec![PortId(2), PortId(3)], "the flood set");
    assert!(trace_egress(&log, PortId(0)).is_empty(), "never back out of the ingress port");
    // A frame tagged 30 on the trunk is refused by name.
    let mut tagged: Vec<u8> = frame(MacAddr::BROADCAST, mac(1), 46);
    tagged.splice(12..12, [0x81, 0x00, 0x00, 30]);
    let refused = switch.state_mut().trace(PortId(2), &tagged, Instant::ZERO);
    assert_eq!(refused.dropped(), Some(DropReason::VlanNotAllowed));
    for host in &hosts {
        assert_nothing_waiting(host);
    }
}

#[test]
fn a_trace_names_the_bond_member_without_taking_a_round_robin_turn() {
    use crate::bond::{BondConfig, BondMode};
    use crate::trace::EgressAction;
    let config = BondConfig {
        mode: BondMode::BalanceRr,
        miimon: Duration::from_millis(100),
        updelay: Duration::ZERO,
        downdelay: Duration::ZERO,
        primary: None,
        lacp: None,
    };
    let mut bond = Bond::new(config, vec!["a".into(), "b".into()]);
    bond.observe(0, true, Instant::ZERO);
    bond.observe(1, true, Instant::ZERO);
    let (mut switch, _hosts) = datagram_switch(1);
    let (a, _a_host) = DatagramPort::pair().unwrap();
    let (b, _b_host) = DatagramPort::pair().unwrap();
    let id = switch.add_bond(plain("bond"), bond, vec![Box::new(a), Box::new(b)]).unwrap();
    let member = |switch: &mut Switch| {
        let log = switch.state_mut().trace(PortId(0), &frame(mac(9), mac(1), 46), Instant::ZERO);
        let actions = trace_egress(&log, id);
        assert!(matches!(actions.last(), Some(EgressAction::WouldSend { len: 60, member: Some(_) })), "{actions:?}");
        actions.into_iter().find_map(|a| match a {
            EgressAction::BondMember(m) => m,
            _ => None,
        })
    };
    let first = member(&mut switch);
    assert!(first.is_some());
    assert_eq!(member(&mut switch), first, "a trace does not advance balance-rr");
}

#[test]
fn a_trace_does_not_spend_storm_control_and_reports_it() {
    use crate::port_modes::{PortModes, StormControl, StormPps};
    use crate::trace::TraceEvent;
    let (mut switch, _hosts) = datagram_switch(2);
    let storm = StormPps { broadcast: Some(1), ..StormPps::default() };
    let control = Arc::new(StormControl::new(&storm));
    let modes = PortModes { storm_pps: storm, ..PortModes::default() };
    switch.state_mut().bridge.set_modes(PortId(0), modes, Some(Arc::clone(&control)));
    let t = Instant::from_secs(10);
    for _ in 0..5 {
        let log = switch.state_mut().trace(PortId(0), &frame(MacAddr::BROADCAST, mac(1), 46), t);
        let within = TraceEvent::Storm { class: crate::port_modes::FloodClass::Broadcast, within: true };
        assert!(log.events().contains(&within), "{:?}", log.events());
    }
    assert!(control.admit(crate::port_modes::FloodClass::Broadcast, t).is_ok(), "the budget is untouched");
}

#[test]
fn a_trace_into_a_vxlan_port_names_the_vni_and_remotes_and_sends_no_datagram() {
    use crate::port::udp_tunnel::UdpTunnelPort;
    use crate::trace::EgressAction;
    use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let remote = UdpSocket::bind(("127.0.0.6", port)).unwrap();
    remote.set_nonblocking(true).unwrap();
    let addresses: Vec<IpAddr> = vec![Ipv4Addr::new(127, 0, 0, 6).into(), Ipv4Addr::new(127, 0, 0, 7).into()];
    let (mut switch, _hosts) = datagram_switch(1);
    let tunnel = UdpTunnelPort::open(Ipv4Addr::LOCALHOST.into(), port, 64).unwrap();
    let vx = switch.add_vxlan(plain("vx0"), Vxlan::new(loopback_vxlan(port, addresses, 7)), Box::new(tunnel)).unwrap();
    let log = switch.state_mut().trace(PortId(0), &frame(MacAddr::BROADCAST, mac(1), 46), Instant::ZERO);
    let remotes: Vec<SocketAddr> =
        ["127.0.0.6", "127.0.0.7"].iter().map(|ip| SocketAddr::new(ip.parse().unwrap(), port)).collect();
    let actions = trace_egress(&log, vx);
    assert!(actions.contains(&EgressAction::Vxlan { vni: 7, remotes, learned: false }), "{actions:?}");
    assert_eq!(actions.last(), Some(&EgressAction::WouldSend { len: 60, member: None }));
    assert_eq!(switch.state().ports[vx.index()].counters.tx_frames, 0);
    let mut buf = [0u8; 2048];
    assert_eq!(remote.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::WouldBlock, "no datagram sent");
}

#[test]
fn every_worker_serves_a_bond_from_a_replica_the_first_worker_refreshes() {
    use crate::bond::{BondConfig, BondMode};
    let (handle, thread, hosts) = start_two_workers();
    let config = BondConfig {
        mode: BondMode::ActiveBackup,
        miimon: Duration::from_millis(100),
        updelay: Duration::ZERO,
        downdelay: Duration::ZERO,
        primary: None,
        lacp: None,
    };
    let mut bond = Bond::new(config, vec!["a".into(), "b".into()]);
    bond.observe(0, true, Instant::ZERO);
    bond.observe(1, true, Instant::ZERO);
    // members[w][m]: the far end of worker w's I/O on member m.
    let mut members: Vec<Vec<UnixDatagram>> = Vec::new();
    let mut per_worker: Vec<Vec<Box<dyn Port>>> = Vec::new();
    for _ in 0..2 {
        let (mut ios, mut ends): (Vec<Box<dyn Port>>, Vec<UnixDatagram>) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            let (io, end) = DatagramPort::pair().unwrap();
            end.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            ios.push(Box::new(io));
            ends.push(end);
        }
        per_worker.push(ios);
        members.push(ends);
    }
    let id = handle
        .call(
            move |s, now| s.add_port(plain("bond"), PortIo::BondQueues(Box::new(bond), per_worker), now),
            Duration::from_secs(5),
        )
        .unwrap()
        .unwrap();
    // From p0's second queue (worker 1) to an unknown address: worker 1 sends it out of its own
    // I/O on the active member, nothing goes to the first worker's.
    let out = frame(mac(50), mac(1), 46);
    hosts[0][1].send(&out).unwrap();
    assert_eq!(recv(&members[1][0]), out, "worker 1, member a");
    for end in [&members[0][0], &members[0][1], &members[1][1]] {
        assert_nothing_waiting(end);
    }
    // The first worker changes the active member; worker 1's replica follows.
    handle.call(move |s, _| s.bond_set_active(id, "b"), Duration::from_secs(5)).unwrap().unwrap();
    let mut moved = false;
    for _ in 0..500 {
        hosts[0][1].send(&out).unwrap();
        let mut buf = [0u8; 2048];
        members[1][1].set_nonblocking(true).unwrap();
        members[1][0].set_nonblocking(true).unwrap();
        while members[1][0].recv(&mut buf).is_ok() {}
        thread::sleep(Duration::from_millis(5));
        if members[1][1].recv(&mut buf).is_ok() {
            moved = true;
            break;
        }
    }
    assert!(moved, "worker 1 never sent on the new active member");
    members[1][0].set_nonblocking(false).unwrap();
    members[1][1].set_nonblocking(false).unwrap();
    // Worker 1 takes frames on the active member only (the backup's are `bond_backup`), and
    // delivers them to p0's queue of its own.
    let back = frame(mac(1), mac(50), 46);
    members[1][0].send(&back).unwrap();
    members[1][1].send(&back).unwrap();
    assert_eq!(recv(&hosts[0][1]), back);
    eventually(&handle, move |s| {
        let members = s.bond_member_totals(id);
        s.port_totals(id).0.drops.get(DropReason::BondBackup) == 1
            && members[1].rx_frames == 1
            && members[0].drops.get(DropReason::BondBackup) == 1
            && members[1].tx_frames >= 1
    });
    handle.stop().unwrap();
    thread.join().unwrap();
}

#[test]
fn a_tunnels_run_of_tcp_segments_reaches_an_offloading_port_as_one_super_frame() {
    use crate::port::udp_tunnel::UdpTunnelPort;
    use std::net::{IpAddr, Ipv4Addr, UdpSocket};
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let remote = UdpSocket::bind(("127.0.0.7", port)).unwrap();
    let local: IpAddr = Ipv4Addr::LOCALHOST.into();
    let config = loopback_vxlan(port, vec![Ipv4Addr::new(127, 0, 0, 7).into()], 9);
    let mut switch = Switch::new("gro", FdbConfig::default()).unwrap();
    let (io, host) = DatagramPort::pair_with_offload().unwrap();
    host.set_nonblocking(true).unwrap();
    switch.add_port(plain("host"), Box::new(io)).unwrap();
    let tunnel = UdpTunnelPort::open(local, port, 64).unwrap();
    let vx = switch.add_vxlan(plain("vx0"), Vxlan::new(config), Box::new(tunnel)).unwrap();
    let segment = |seq: u32, fill: u8| {
        let mut out = Vec::new();
        etherparse::PacketBuilder::ethernet2(mac(20).0, mac(9).0)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 80, seq, 1000)
            .ack(5)
            .write(&mut out, &[fill; 1000])
            .unwrap();
        out
    };
    // Seven segments of one flow; the fourth's checksum is wrong, so it travels alone and
    // splits the run: 3 merged, 1 alone, 3 merged.
    let mut sent = Vec::new();
    for i in 0..7u32 {
        let mut s = segment(1 + i * 1000, i as u8);
        if i == 3 {
            s[60] ^= 0xff;
        }
        remote.send_to(&[&crate::wire::vxlan::header(9)[..], &s].concat(), ("127.0.0.1", port)).unwrap();
        sent.push(s);
    }
    switch.run_once(Instant::from_nanos(1));
    let mut buf = vec![0u8; 70_000];
    let mut got = Vec::new();
    while let Ok(n) = host.recv(&mut buf) {
        let hdr = VnetHdr::parse(&buf[..crate::wire::vnet_hdr::LEN]).unwrap();
        got.push((hdr, buf[crate::wire::vnet_hdr::LEN..n].to_vec()));
    }
    assert_eq!(got.len(), 3, "{:?}", got.iter().map(|(h, f)| (h.gso_size, f.len())).collect::<Vec<_>>());
    for (hdr, frame) in [&got[0], &got[2]] {
        assert_eq!((hdr.gso_type, hdr.gso_size), (crate::wire::vnet_hdr::GSO_TCPV4, 1000));
        assert_eq!(frame.len(), 14 + 20 + 20 + 3000);
    }
    assert_eq!(got[1].1, sent[3], "the unverified segment is passed on as it came");
    assert_eq!(got[1].0, VnetHdr::default());
    // Cut back, the super-frames are the segments that were sent.
    let mut segments = Vec::new();
    for (hdr, frame) in [&got[0], &got[2]] {
        let mut scratch = vec![0u8; 70_000];
        crate::gso::segment(frame, hdr, 1500, &mut scratch, |s| segments.push(s.to_vec())).unwrap();
    }
    let ids = |f: &[u8]| [&f[..18], &f[20..24], &f[26..]].concat(); // without IP id and checksum
    let expected: Vec<Vec<u8>> = [0, 1, 2, 4, 5, 6].iter().map(|&i| ids(&sent[i])).collect();
    assert_eq!(segments.iter().map(|s| ids(s)).collect::<Vec<_>>(), expected);
    let counters = &switch.state().ports[vx.index()].counters;
    assert_eq!((counters.rx_frames, counters.drops.total()), (3, 0), "three frames went on to the bridge");
    assert_eq!(switch.state().ports[vx.index()].vxlan.as_ref().unwrap().remotes()[0].rx_packets, 7);
}

/// A busy port gives way: one turn reads at most [`READ_SHARE`] frames from a TAP-like port,
/// and a quiet port that received a frame meanwhile is served in the next turn, before the
/// busy port's next share.
#[test]
fn a_quiet_ports_frame_waits_for_one_short_read_of_a_busy_port() {
    use crate::port::memory::{Framing, MemoryPort, lock};
    let mut switch = Switch::new("t", FdbConfig::default()).unwrap();
    let mut wires = Vec::new();
    for i in 0..4u8 {
        let (io, wire) = MemoryPort::new(Framing::Plain, 1500);
        switch.add_port(plain(&format!("p{i}")), Box::new(io)).unwrap();
        wires.push(wire);
    }
    // Ports 1 and 2 make themselves known, so what follows is unicast.
    for p in [1u8, 2] {
        lock(&wires[usize::from(p)]).inbox.push_back((frame(MacAddr::BROADCAST, mac(p + 1), 50), None));
        switch.run_port_once(PortId(u16::from(p)), Instant::ZERO);
    }
    let sent = |i: usize| lock(&wires[i]).sent;
    let (to_1, to_2) = (sent(1), sent(2));
    // The flood: a long queue on port 0 toward port 1.
    for _ in 0..100 {
        lock(&wires[0]).inbox.push_back((frame(mac(2), mac(1), 50), None));
    }
    switch.run_port_once(PortId(0), Instant::ZERO);
    assert_eq!(sent(1) - to_1, READ_SHARE as u64, "one turn reads a share, not a batch");
    // Meanwhile the quiet port 3 receives one frame for port 2. The next turn forwards it
    // and the busy port's next share, no more.
    lock(&wires[3]).inbox.push_back((frame(mac(3), mac(4), 50), None));
    switch.run_port_once(PortId(3), Instant::ZERO);
    assert_eq!(sent(2) - to_2, 1, "the quiet port's frame was forwarded");
    assert_eq!(sent(1) - to_1, 2 * READ_SHARE as u64, "the busy port was carried into the turn");
}

/// The order a turn serves endpoints in: those that became ready since the last turn, then
/// those carried over undrained, even when a carried one's readiness is reported again.
#[test]
fn endpoints_carried_over_undrained_are_served_after_those_that_became_ready() {
    let mut ready = ReadyList::default();
    for _ in 0..3 {
        ready.add_endpoint();
    }
    ready.mark(0);
    ready.mark_carried();
    ready.start_serving();
    assert_eq!(ready.serving, [0]);
    ready.serving.clear();
    ready.carry(0); // read a share, not drained
    ready.mark(0); // its readiness reported again: it keeps its place
    ready.mark(2);
    ready.mark(1);
    ready.mark_carried();
    ready.start_serving();
    assert_eq!(ready.serving, [2, 1, 0]);
    assert!(ready.pending.is_empty() && ready.carried.is_empty());
}
