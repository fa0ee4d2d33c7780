//! The forwarding path does not allocate: frames go through the real event loop (datagram
//! ports, no privileges needed) while a counting allocator watches the dataplane thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::unix::net::UnixDatagram;
use std::thread;
use std::time::Duration;

use vswitchd_dataplane::fdb::FdbConfig;
use vswitchd_dataplane::port::datagram::DatagramPort;
use vswitchd_dataplane::switch::{PortInfo, Switch, SwitchHandle};
use vswitchd_dataplane::wire::{EtherType, EthernetFrame, MacAddr};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Sizes of the last four allocations, to say what allocated when the test fails.
    static SIZES: Cell<[usize; 4]> = const { Cell::new([0; 4]) };
}

/// Counts allocations made by the current thread.
struct CountingAllocator;

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// thread-local Cell with a const initialiser, so counting itself never allocates.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        SIZES.with(|s| {
            let mut sizes = s.get();
            sizes.rotate_left(1);
            sizes[3] = layout.size();
            s.set(sizes)
        });
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut bytes = vec![0u8; 100];
    let mut f = EthernetFrame::new_unchecked(&mut bytes[..]);
    f.set_dst_addr(dst);
    f.set_src_addr(src);
    f.set_ethertype(EtherType::Ipv4);
    bytes
}

/// A plain datagram port's description.
fn port_info(i: usize) -> PortInfo {
    PortInfo { name: format!("p{i}"), kind: "datagram".into(), netns: None, mtu: 1500, vlan: Default::default() }
}

/// Calls `check` until it gives `Ok` (for at most 10 s); panics with its last `Err` otherwise.
fn until<T>(mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match check() {
            Ok(value) => return value,
            Err(why) => assert!(std::time::Instant::now() < deadline, "{why}"),
        }
        thread::yield_now();
    }
}

/// Allocations made so far by the dataplane thread.
fn dataplane_allocations(handle: &SwitchHandle) -> u64 {
    handle.call(|_, _| ALLOCATIONS.with(Cell::get), Duration::from_secs(5)).unwrap()
}

fn send_and_drain(from: &UnixDatagram, to: &[&UnixDatagram], frames: &[Vec<u8>]) {
    for f in frames {
        from.send(f).unwrap();
        let mut buf = [0u8; 2048];
        for host in to {
            assert_eq!(host.recv(&mut buf).unwrap(), f.len());
        }
    }
}

#[test]
fn forwarding_flooding_learning_and_dropping_do_not_allocate() {
    let mut switch = Switch::new("noalloc", FdbConfig::default()).unwrap();
    let mut hosts = Vec::new();
    for i in 0..3 {
        let (port, host) = DatagramPort::pair().unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        switch.add_port(port_info(i), Box::new(port)).unwrap();
        hosts.push(host);
    }
    let handle = switch.handle();
    let dataplane = thread::spawn(move || switch.run().unwrap());

    let (a, b, c) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]), MacAddr([2, 0, 0, 0, 0, 3]));
    // Warm up: learn every host once, so the FDB and the loop reach their working size.
    send_and_drain(&hosts[0], &[&hosts[1], &hosts[2]], &[frame(MacAddr::BROADCAST, a)]);
    send_and_drain(&hosts[1], &[&hosts[0], &hosts[2]], &[frame(MacAddr::BROADCAST, b)]);
    send_and_drain(&hosts[2], &[&hosts[0], &hosts[1]], &[frame(MacAddr::BROADCAST, c)]);

    let before = dataplane_allocations(&handle);
    let unicast: Vec<_> = (0..5000).map(|_| frame(b, a)).collect();
    send_and_drain(&hosts[0], &[&hosts[1]], &unicast);
    let broadcast: Vec<_> = (0..2000).map(|_| frame(MacAddr::BROADCAST, c)).collect();
    send_and_drain(&hosts[2], &[&hosts[0], &hosts[1]], &broadcast);
    for _ in 0..2000 {
        hosts[1].send(&[0u8; 7]).unwrap(); // runts, dropped and counted
    }
    // Jobs run between batches, so wait until the loop has read every runt.
    let after = until(|| {
        let (runts, allocations) = handle
            .call(
                |s, _| {
                    let allocations = ALLOCATIONS.with(Cell::get);
                    (s.ports[1].counters.drops.get(vswitchd_dataplane::verdict::DropReason::Runt), allocations)
                },
                Duration::from_secs(5),
            )
            .unwrap();
        if runts == 2000 { Ok(allocations) } else { Err(format!("only {runts} of 2000 runts counted")) }
    });
    let sizes = handle.call(|_, _| SIZES.with(Cell::get), Duration::from_secs(5)).unwrap();
    assert_eq!(after - before, 0, "the dataplane thread allocated while forwarding 9000 frames (last sizes {sizes:?})");

    handle.stop().unwrap();
    dataplane.join().unwrap();
}

/// With two workers, learning shares every new source with the other worker and applies what
/// the other learned: neither allocates on the first worker's thread.
#[test]
fn sharing_what_two_workers_learn_does_not_allocate() {
    let mut switch = Switch::new("noalloc2", FdbConfig::default()).unwrap();
    switch.set_threads(2).unwrap();
    let mut hosts = Vec::new(); // hosts[port][worker]
    for i in 0..2 {
        let mut ios: Vec<Box<dyn vswitchd_dataplane::port::Port>> = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..2 {
            let (port, host) = DatagramPort::pair().unwrap();
            host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            ios.push(Box::new(port));
            ends.push(host);
        }
        switch.add_port_queues(port_info(i), ios).unwrap();
        hosts.push(ends);
    }
    let handle = switch.handle();
    let dataplane = thread::spawn(move || switch.run().unwrap());
    let mac = |worker: u8, n: u16| MacAddr([2, worker, 0, 0, (n >> 8) as u8, n as u8]);
    // Warm up both workers and the channels between them.
    send_and_drain(&hosts[0][0], &[&hosts[1][0]], &[frame(MacAddr::BROADCAST, mac(0, 0))]);
    send_and_drain(&hosts[0][1], &[&hosts[1][1]], &[frame(MacAddr::BROADCAST, mac(1, 0))]);
    let fdb_len = || handle.call(|s, _| s.bridge.fdb().len(), Duration::from_secs(5)).unwrap();
    until(|| if fdb_len() >= 2 { Ok(()) } else { Err("worker 1's entry never reached worker 0".into()) });

    let before = dataplane_allocations(&handle);
    // 2000 new sources through the first worker (each shared), 2000 through the other (each
    // applied on the first).
    let own: Vec<_> = (1..=2000).map(|n| frame(MacAddr::BROADCAST, mac(0, n))).collect();
    send_and_drain(&hosts[0][0], &[&hosts[1][0]], &own);
    let other: Vec<_> = (1..=2000).map(|n| frame(MacAddr::BROADCAST, mac(1, n))).collect();
    send_and_drain(&hosts[0][1], &[&hosts[1][1]], &other);
    until(|| match fdb_len() {
        4002.. => Ok(()),
        n => Err(format!("only {n} of 4002 entries on the first worker")),
    });
    let after = dataplane_allocations(&handle);
    let sizes = handle.call(|_, _| SIZES.with(Cell::get), Duration::from_secs(5)).unwrap();
    assert_eq!(after - before, 0, "the first worker allocated while learning and sharing (last sizes {sizes:?})");
    assert_eq!(handle.call(|s, _| s.fdb_updates_lost(), Duration::from_secs(5)).unwrap(), 0);

    handle.stop().unwrap();
    dataplane.join().unwrap();
}

#[test]
fn port_modes_do_not_allocate() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use vswitchd_dataplane::port_modes::{PortModes, StormPps};
    use vswitchd_dataplane::verdict::DropReason;

    let mut switch = Switch::new("noallocmodes", FdbConfig::default()).unwrap();
    let mut hosts = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let (port, host) = DatagramPort::pair().unwrap();
        host.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        ids.push(switch.add_port(port_info(i), Box::new(port)).unwrap());
        hosts.push(host);
    }
    let handle = switch.handle();
    let dataplane = thread::spawn(move || switch.run().unwrap());
    let mac = |n: u8| MacAddr([2, 0, 0, 0, 0, n]);
    let (a, b, c, d, e) = (mac(1), mac(2), mac(3), mac(4), mac(5));
    // Port 0: hairpin, sources a and d allowed but one MAC at most, 100 broadcasts a second;
    // ports 1 and 2 isolated.
    let modes = [
        PortModes {
            hairpin: true,
            mac_limit: Some(1),
            allowed_macs: vec![a, d],
            storm_pps: StormPps { broadcast: Some(100), ..StormPps::default() },
            ..PortModes::default()
        },
        PortModes { isolated: true, ..PortModes::default() },
        PortModes { isolated: true, ..PortModes::default() },
    ];
    for (id, modes) in ids.iter().copied().zip(modes) {
        handle.call(move |s, _| s.set_port_modes(id, modes).unwrap(), Duration::from_secs(5)).unwrap();
    }
    let stop = AtomicBool::new(false);
    let received: Vec<AtomicU64> = (0..3).map(|_| AtomicU64::new(0)).collect();
    let counters = |port: usize, reason: Option<DropReason>| {
        handle
            .call(
                move |s, _| {
                    let allocations = ALLOCATIONS.with(Cell::get);
                    let c = &s.ports[port].counters;
                    (reason.map_or(c.rx_frames, |r| c.drops.get(r)), allocations)
                },
                Duration::from_secs(5),
            )
            .unwrap()
    };
    thread::scope(|scope| {
        for (host, count) in hosts.iter().zip(&received) {
            let stop = &stop;
            scope.spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if host.recv(&mut buf).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // Warm up: every host learned, port 0's broadcast back to itself (hairpin).
        hosts[0].send(&frame(MacAddr::BROADCAST, a)).unwrap();
        hosts[1].send(&frame(MacAddr::BROADCAST, b)).unwrap();
        hosts[2].send(&frame(MacAddr::BROADCAST, c)).unwrap();
        until(|| {
            let got: Vec<u64> = received.iter().map(|r| r.load(Ordering::Relaxed)).collect();
            if got == [3, 1, 1] { Ok(()) } else { Err(format!("warm-up: received {got:?}")) }
        });

        let before = dataplane_allocations(&handle);
        for _ in 0..2000 {
            hosts[0].send(&frame(b, a)).unwrap(); // forwarded
            hosts[0].send(&frame(b, e)).unwrap(); // source_not_allowed
            hosts[0].send(&frame(b, d)).unwrap(); // mac_limit
            hosts[1].send(&frame(c, b)).unwrap(); // isolated
        }
        for _ in 0..300 {
            hosts[0].send(&frame(MacAddr::BROADCAST, a)).unwrap(); // storm_broadcast past 100
        }
        let after = until(|| {
            let (rx0, _) = counters(0, None);
            let (rx1, allocations) = counters(1, None);
            if rx0 == 1 + 3 * 2000 + 300 && rx1 == 1 + 2000 {
                Ok(allocations)
            } else {
                Err(format!("read {rx0} and {rx1} frames"))
            }
        });
        let sizes = handle.call(|_, _| SIZES.with(Cell::get), Duration::from_secs(5)).unwrap();
        assert_eq!(after - before, 0, "the dataplane thread allocated under port modes (last sizes {sizes:?})");
        assert_eq!(counters(0, Some(DropReason::SourceNotAllowed)).0, 2000);
        assert_eq!(counters(0, Some(DropReason::MacLimit)).0, 2000);
        assert_eq!(counters(1, Some(DropReason::Isolated)).0, 2000);
        let storm = counters(0, Some(DropReason::StormBroadcast)).0;
        assert!((100..=200).contains(&storm), "{storm} broadcasts dropped by storm control");
        stop.store(true, Ordering::Relaxed);
    });
    handle.stop().unwrap();
    dataplane.join().unwrap();
}

/// ARP suppression on a VXLAN port (loopback underlay): snooping, answering locally and
/// injecting the answer do not allocate, nor does snooping a thousand new addresses.
#[test]
fn answering_arp_for_a_tunnel_does_not_allocate() {
    use std::net::{Ipv4Addr, UdpSocket};
    use vswitchd_dataplane::port::udp_tunnel::UdpTunnelPort;
    use vswitchd_dataplane::vxlan::{VniMap, Vxlan, VxlanConfig};
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let remote = UdpSocket::bind(("127.0.0.2", port)).unwrap();
    let mut vxlan = Vxlan::new(VxlanConfig {
        local: Ipv4Addr::LOCALHOST.into(),
        dst_port: port,
        remotes: vec![Ipv4Addr::new(127, 0, 0, 2).into()],
        allowed: vec![],
        learning: true,
        vnis: VniMap::Single(42),
        aging: Duration::from_secs(300),
        max_learned: 100,
    });
    vxlan.set_arp_suppress(true);
    let mut switch = Switch::new("noalloc3", FdbConfig::default()).unwrap();
    let (host_port, host) = DatagramPort::pair().unwrap();
    host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    switch.add_port(port_info(0), Box::new(host_port)).unwrap();
    let tunnel = UdpTunnelPort::open(Ipv4Addr::LOCALHOST.into(), port, 64).unwrap();
    switch.add_vxlan(port_info(1), vxlan, Box::new(tunnel)).unwrap();
    let handle = switch.handle();
    let dataplane = thread::spawn(move || switch.run().unwrap());

    let arp = |op: u8, sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]| {
        let mut f = if op == 1 { vec![0xff; 6] } else { vec![2, 0, 0, 0, 0, 1] };
        f.extend_from_slice(&sha);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, op]);
        f.extend_from_slice(&sha);
        f.extend_from_slice(&spa);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tpa);
        f.resize(60, 0);
        f
    };
    let mut buf = [0u8; 2048];
    // Warm up: one host behind the tunnel answers, one question answered locally.
    let reply = arp(2, [2, 0, 0, 0, 0, 9], [10, 0, 0, 9], [10, 0, 0, 1]);
    remote.send_to(&[&[0x08, 0, 0, 0, 0, 0, 42, 0][..], &reply].concat(), ("127.0.0.1", port)).unwrap();
    assert_eq!(host.recv(&mut buf).unwrap(), 60);
    let question = arp(1, [2, 0, 0, 0, 0, 1], [10, 0, 0, 1], [10, 0, 0, 9]);
    host.send(&question).unwrap();
    assert_eq!(host.recv(&mut buf).unwrap(), 60);

    let before = dataplane_allocations(&handle);
    for _ in 0..2000 {
        host.send(&question).unwrap();
        assert_eq!(host.recv(&mut buf).unwrap(), 60, "answered");
    }
    // Senders the table has not seen: each is learned (the table is sized up front).
    for n in 0..1000u16 {
        let [hi, lo] = n.to_be_bytes();
        host.send(&arp(1, [2, 0, 0, 1, hi, lo], [10, 1, hi, lo], [10, 0, 0, 9])).unwrap();
        assert_eq!(host.recv(&mut buf).unwrap(), 60, "answered");
    }
    let after = dataplane_allocations(&handle);
    let sizes = handle.call(|_, _| SIZES.with(Cell::get), Duration::from_secs(5)).unwrap();
    assert_eq!(after - before, 0, "the dataplane thread allocated while answering (last sizes {sizes:?})");
    handle.stop().unwrap();
    dataplane.join().unwrap();
}

/// With IGMP snooping on, traffic to a group goes to its member alone, and neither that nor
/// the member's repeated reports allocate once the group is in the table.
#[test]
fn snooped_group_traffic_and_repeated_reports_do_not_allocate() {
    let mut switch = Switch::new("noalloc3", FdbConfig::default()).unwrap();
    let config = vswitchd_dataplane::mdb::McastConfig { snooping: true, ..Default::default() };
    switch.state_mut().bridge.mdb_mut().set_config(config);
    let mut hosts = Vec::new();
    for i in 0..3 {
        let (port, host) = DatagramPort::pair().unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        switch.add_port(port_info(i), Box::new(port)).unwrap();
        hosts.push(host);
    }
    let handle = switch.handle();
    let dataplane = thread::spawn(move || switch.run().unwrap());

    // An IGMPv2 report for 239.1.2.3 from host 1 (flooded like any report), and a UDP datagram
    // to the group from host 0.
    #[rustfmt::skip]
    let report: Vec<u8> = vec![
        0x01, 0x00, 0x5e, 0x01, 0x02, 0x03, 0x02, 0, 0, 0, 0, 0x0b, 0x08, 0x00,
        0x46, 0x00, 0x00, 0x20, 0x00, 0x00, 0x40, 0x00, 0x01, 0x02, 0xe9, 0xd1,
        10, 0, 0, 2, 239, 1, 2, 3, 0x94, 0x04, 0x00, 0x00,
        0x16, 0x00, 0xf8, 0xfa, 239, 1, 2, 3,
    ];
    let mut data = frame(MacAddr([0x01, 0x00, 0x5e, 0x01, 0x02, 0x03]), MacAddr([2, 0, 0, 0, 0, 0x0a]));
    data[14..34].copy_from_slice(&[0x45, 0, 0, 86, 0, 0, 0x40, 0, 1, 17, 0, 0, 10, 0, 0, 1, 239, 1, 2, 3]);
    send_and_drain(&hosts[1], &[&hosts[0], &hosts[2]], std::slice::from_ref(&report));
    send_and_drain(&hosts[0], &[&hosts[1]], std::slice::from_ref(&data));

    let before = dataplane_allocations(&handle);
    let reports: Vec<_> = (0..500).map(|_| report.clone()).collect();
    send_and_drain(&hosts[1], &[&hosts[0], &hosts[2]], &reports);
    let stream: Vec<_> = (0..5000).map(|_| data.clone()).collect();
    send_and_drain(&hosts[0], &[&hosts[1]], &stream);
    let after = dataplane_allocations(&handle);
    let sizes = handle.call(|_, _| SIZES.with(Cell::get), Duration::from_secs(5)).unwrap();
    assert_eq!(after - before, 0, "the dataplane thread allocated on snooped traffic (last sizes {sizes:?})");
    // Host 2 is no member: it got the reports and nothing of the group's traffic.
    hosts[2].set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    assert!(hosts[2].recv(&mut buf).is_err(), "a non-member received group traffic");

    handle.stop().unwrap();
    dataplane.join().unwrap();
}

/// A capture of two ports (drops included), whose reader takes some frames and falls behind on
/// the rest: copying into the pool, queueing, and counting the frames lost for want of a slot
/// happen on the dataplane thread without allocating.
#[test]
fn capturing_and_losing_frames_do_not_allocate() {
    use vswitchd_dataplane::PortId;
    use vswitchd_dataplane::capture::Sink;
    let mut switch = Switch::new("noalloc", FdbConfig::default()).unwrap();
    let mut hosts = Vec::new();
    for i in 0..3 {
        let (port, host) = DatagramPort::pair().unwrap();
        host.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        switch.add_port(port_info(i), Box::new(port)).unwrap();
        hosts.push(host);
    }
    let handle = switch.handle();
    let dataplane = thread::spawn(move || switch.run().unwrap());
    let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    send_and_drain(&hosts[0], &[&hosts[1], &hosts[2]], &[frame(MacAddr::BROADCAST, a)]);
    send_and_drain(&hosts[1], &[&hosts[0], &hosts[2]], &[frame(MacAddr::BROADCAST, b)]);

    let sink = Sink::new(2, 64, true);
    let tapped = std::sync::Arc::clone(&sink);
    handle.call(move |s, _| s.add_capture(&tapped, &[PortId(0), PortId(1)]), Duration::from_secs(5)).unwrap();
    let reader = std::sync::Arc::clone(&sink);
    let read = thread::spawn(move || {
        let mut taken = 0u64;
        while let Some(record) = reader.next(Duration::from_millis(500)) {
            reader.recycle(record);
            taken += 1;
            if taken % 100 == 0 {
                thread::sleep(Duration::from_millis(20)); // behind: the pool runs dry
            }
        }
        taken
    });
    let before = dataplane_allocations(&handle);
    let unicast: Vec<_> = (0..3000).map(|_| frame(b, a)).collect();
    send_and_drain(&hosts[0], &[&hosts[1]], &unicast);
    for _ in 0..500 {
        hosts[0].send(&[0u8; 7]).unwrap(); // runts: dropped, and captured as drops
    }
    let after = until(|| {
        let (runts, allocations) = handle
            .call(
                |s, _| {
                    let allocations = ALLOCATIONS.with(Cell::get);
                    (s.ports[0].counters.drops.get(vswitchd_dataplane::verdict::DropReason::Runt), allocations)
                },
                Duration::from_secs(5),
            )
            .unwrap();
        if runts == 500 { Ok(allocations) } else { Err(format!("only {runts} of 500 runts counted")) }
    });
    let sizes = handle.call(|_, _| SIZES.with(Cell::get), Duration::from_secs(5)).unwrap();
    assert_eq!(after - before, 0, "the dataplane thread allocated while capturing (last sizes {sizes:?})");
    let taken = read.join().unwrap();
    let lost: u64 = sink.lost().iter().sum();
    // Every frame was seen twice (in on port 0, out on port 1), every runt once.
    assert_eq!(taken + lost, 2 * 3000 + 500, "taken {taken}, lost {lost}");
    assert!(lost > 0 && taken > 0, "taken {taken}, lost {lost}");
    let tapped = std::sync::Arc::clone(&sink);
    handle.call(move |s, _| s.remove_capture(&tapped), Duration::from_secs(5)).unwrap();
    handle.stop().unwrap();
    dataplane.join().unwrap();
}
