//! The event loop's tests for answers given on behalf of hosts behind a tunnel: too-big replies
//! and ARP suppression, over a VXLAN port on loopback and datagram ports.

use super::*;
use crate::port::datagram::DatagramPort;
use crate::port::udp_tunnel::UdpTunnelPort;
use crate::wire::arp::{Arp, OP_REPLY};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::thread;

const FIVE_SECONDS: Duration = Duration::from_secs(5);

fn mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, n])
}

fn info(name: &str) -> PortInfo {
    PortInfo { name: name.into(), kind: "x".into(), netns: None, mtu: 1500, vlan: VlanMode::Transparent }
}

fn recv(host: &UnixDatagram) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let n = host.recv(&mut buf).expect("frame expected");
    buf.truncate(n);
    buf
}

/// A switch with one datagram host port (carrying offload metadata if `offload`) and a VXLAN
/// port on loopback (127.0.0.1) whose remote is 127.0.0.2; `setup` adjusts the VTEP. Returns
/// the handle, the thread, the host's end, the remote's socket, the tunnel's UDP port and the
/// vxlan port's id.
fn tunnel_switch(
    offload: bool,
    setup: impl FnOnce(&mut Vxlan),
) -> (SwitchHandle, thread::JoinHandle<Switch>, UnixDatagram, UdpSocket, u16, PortId) {
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let remote = UdpSocket::bind(("127.0.0.2", port)).unwrap();
    remote.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let config = crate::vxlan::VxlanConfig {
        local: Ipv4Addr::LOCALHOST.into(),
        dst_port: port,
        remotes: vec![IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))],
        allowed: vec![],
        learning: true,
        vnis: crate::vxlan::VniMap::Single(42),
        aging: Duration::from_secs(300),
        max_learned: 100,
    };
    let mut vxlan = Vxlan::new(config);
    setup(&mut vxlan);
    let mut switch = Switch::new("vx", FdbConfig::default()).unwrap();
    let (host_port, host) = if offload { DatagramPort::pair_with_offload() } else { DatagramPort::pair() }.unwrap();
    host.set_read_timeout(Some(FIVE_SECONDS)).unwrap();
    switch.add_port(info("host"), Box::new(host_port)).unwrap();
    let tunnel = UdpTunnelPort::open(Ipv4Addr::LOCALHOST.into(), port, 64).unwrap();
    let vx = switch.add_vxlan(info("vx0"), vxlan, Box::new(tunnel)).unwrap();
    let handle = switch.handle();
    let thread = thread::spawn(move || {
        switch.run().unwrap();
        switch
    });
    (handle, thread, host, remote, port, vx)
}

/// An ARP request from `sha`/`spa` for `tpa`, broadcast.
fn arp_request(sha: MacAddr, spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&sha.0);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sha.0);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa);
    f.resize(60, 0);
    f
}

/// Datagrams the remote gets within its read timeout.
fn drain(remote: &UdpSocket) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = remote.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

#[test]
fn an_arp_request_for_an_address_behind_the_tunnel_is_answered_here() {
    let (handle, thread, host, remote, port, vx) = tunnel_switch(false, |v| v.set_arp_suppress(true));
    // The remote's host 10.0.0.9 (mac 9) answers an ARP of ours through the tunnel: learned.
    let request = arp_request(mac(1), [10, 0, 0, 1], [10, 0, 0, 9]);
    let answer = Arp::parse(&request).unwrap().reply(mac(9));
    remote.send_to(&[&crate::wire::vxlan::header(42)[..], &answer].concat(), ("127.0.0.1", port)).unwrap();
    assert_eq!(recv(&host), answer);

    // Host 1 asks for 10.0.0.9: answered by the switch, nothing goes to the remote.
    drain(&remote);
    host.send(&request).unwrap();
    let reply = recv(&host);
    let arp = Arp::parse(&reply).expect("an ARP reply");
    assert_eq!((arp.op, arp.sha, arp.spa), (OP_REPLY, mac(9), Ipv4Addr::new(10, 0, 0, 9)));
    assert_eq!((arp.tha, arp.tpa), (mac(1), Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(&reply[0..12], &[mac(1).0, mac(9).0].concat()[..]);
    assert!(drain(&remote).is_empty(), "the request went through the tunnel");

    // An address nobody answered for yet floods as before.
    host.send(&arp_request(mac(1), [10, 0, 0, 1], [10, 0, 0, 8])).unwrap();
    assert_eq!(drain(&remote).len(), 1);
    handle.stop().unwrap();
    let switch = thread.join().unwrap();
    let v = switch.state().ports[vx.index()].vxlan.as_ref().unwrap();
    assert_eq!(v.stats().neigh_suppressed, 1);
}

#[test]
fn without_arp_suppress_requests_cross_the_tunnel() {
    let (handle, thread, host, remote, port, _) = tunnel_switch(false, |_| {});
    let request = arp_request(mac(1), [10, 0, 0, 1], [10, 0, 0, 9]);
    let answer = Arp::parse(&request).unwrap().reply(mac(9));
    remote.send_to(&[&crate::wire::vxlan::header(42)[..], &answer].concat(), ("127.0.0.1", port)).unwrap();
    assert_eq!(recv(&host), answer);
    drain(&remote);
    host.send(&request).unwrap();
    assert_eq!(drain(&remote).len(), 1);
    handle.stop().unwrap();
    thread.join().unwrap();
}

#[test]
fn a_super_frame_too_big_for_the_path_is_answered_with_fragmentation_needed() {
    use crate::wire::vnet_hdr::{F_NEEDS_CSUM, GSO_TCPV4};
    let (handle, thread, host, remote, _, vx) = tunnel_switch(true, |_| {});
    // The path is known to take 1000-byte packets (loopback takes far more: set by hand).
    handle
        .call(move |s, now| s.ports[vx.index()].vxlan.as_mut().unwrap().path_mtu.set(1000, now), FIVE_SECONDS)
        .unwrap();
    let data = vec![0x77u8; 4000];
    let mut frame = Vec::new();
    etherparse::PacketBuilder::ethernet2(mac(1).0, mac(2).0)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .tcp(40000, 80, 1, 1000)
        .write(&mut frame, &data)
        .unwrap();
    frame[20] |= 0x40; // don't fragment
    let gso = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    host.send(&[&gso.emit()[..], &frame].concat()).unwrap();
    let reply = recv(&host);
    let reply = &reply[crate::wire::vnet_hdr::LEN..];
    assert_eq!(&reply[0..12], &[mac(1).0, mac(2).0].concat()[..], "from the destination to the sender");
    let parsed = etherparse::SlicedPacket::from_ethernet(reply).unwrap();
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = parsed.transport else { panic!("{parsed:?}") };
    assert_eq!(
        icmp.icmp_type(),
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1000 }
        )
    );
    assert!(drain(&remote).is_empty(), "nothing of it went through the tunnel");

    // Segments that fit go through, cut.
    let small = VnetHdr { gso_size: 900, ..gso };
    host.send(&[&small.emit()[..], &frame].concat()).unwrap();
    let sent = drain(&remote);
    assert_eq!(sent.len(), 5, "4000 bytes in 900-byte segments");
    assert!(sent.iter().all(|d| d.len() <= 8 + 14 + 40 + 900));
    handle.stop().unwrap();
    let switch = thread.join().unwrap();
    let p = &switch.state().ports[vx.index()];
    assert_eq!(p.counters.drops.get(DropReason::VxlanTooBig), 1);
    assert_eq!(p.vxlan.as_ref().unwrap().stats().too_big_replies, 1);
}
