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
