//! UDP tunnel ports: the underlay side of a VXLAN endpoint. One socket bound to the local
//! address and the VXLAN port receives; a pool of sockets bound to the local address and
//! ephemeral ports sends, the inner flow's hash picking the socket — so each flow has a stable
//! UDP source port and the underlay's ECMP and RSS spread flows, as the kernel's vxlan device
//! does with its source port range.
//!
//! Every send socket sets "don't fragment" (`IP_PMTUDISC_DO`): VXLAN never fragments, and a
//! datagram that would not fit the path MTU fails with `EMSGSIZE`, which the switch counts as
//! `vxlan_too_big`. A spare socket, connected to a remote when asked, reads the kernel's path
//! MTU toward it (`IP_MTU` / `IPV6_MTU`), so the switch can tell the sender how big a packet
//! fits.
//!
//! The segments of a TCP super-frame leave in one `sendmsg` with `UDP_SEGMENT` (UDP GSO): the
//! kernel cuts the buffer into equal datagrams. If the kernel or the route refuses (`EINVAL`,
//! `EIO`, as on devices without checksum offload), the port falls back to one datagram per call
//! for good and counts it.

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};

use super::{FrameBuf, Port};
use crate::sys;
use crate::wire::VnetHdr;

/// Send sockets (distinct UDP source ports) per tunnel port.
pub const SOURCE_PORTS: usize = 8;

const IPPROTO_IP: libc::c_int = 0;
const IP_MTU_DISCOVER: libc::c_int = 10;
const IP_PMTUDISC_DO: libc::c_int = 2;
const IPPROTO_IPV6: libc::c_int = 41;
const IPV6_UNICAST_HOPS: libc::c_int = 16;
const IPV6_MTU_DISCOVER: libc::c_int = 23;
const IPV6_PMTUDISC_DO: libc::c_int = 2;
const IP_MTU: libc::c_int = 14;
const IPV6_MTU: libc::c_int = 24;

/// The underlay sockets of a tunnel port.
#[derive(Debug)]
pub struct UdpTunnelPort {
    rx: UdpSocket,
    tx: Vec<UdpSocket>,
    /// Connected to a remote to read the path MTU toward it; never sends.
    probe: UdpSocket,
    /// UDP GSO works (until a send says otherwise).
    segmentation: bool,
    /// Batched sends that fell back to one datagram per call.
    pub segmentation_fallbacks: u64,
}

fn configure(socket: &UdpSocket, ipv6: bool, ttl: u8) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    if ipv6 {
        sys::set_socket_option_int(socket.as_fd(), IPPROTO_IPV6, IPV6_UNICAST_HOPS, libc::c_int::from(ttl))?;
        sys::set_socket_option_int(socket.as_fd(), IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)?;
    } else {
        socket.set_ttl(u32::from(ttl))?;
        sys::set_socket_option_int(socket.as_fd(), IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)?;
    }
    for buffer in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        let _ = sys::set_socket_option_int(socket.as_fd(), libc::SOL_SOCKET, buffer, 4 << 20);
    }
    Ok(())
}

impl UdpTunnelPort {
    /// Binds `local:port` for receiving and [`SOURCE_PORTS`] sockets on `local` for sending,
    /// in the calling thread's namespace, with outer TTL (hop limit) `ttl`.
    pub fn open(local: IpAddr, port: u16, ttl: u8) -> io::Result<UdpTunnelPort> {
        let ipv6 = local.is_ipv6();
        let rx = UdpSocket::bind((local, port))
            .map_err(|e| io::Error::new(e.kind(), format!("bind {local} port {port}: {e}")))?;
        configure(&rx, ipv6, ttl)?;
        let tx = (0..SOURCE_PORTS)
            .map(|_| {
                let s = UdpSocket::bind((local, 0))?;
                configure(&s, ipv6, ttl)?;
                Ok(s)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let probe = UdpSocket::bind((local, 0))?;
        probe.set_nonblocking(true)?;
        Ok(UdpTunnelPort { rx, tx, probe, segmentation: true, segmentation_fallbacks: 0 })
    }

    /// One tunnel port per worker thread (`workers`), their receiving sockets bound to the same
    /// address and port with `SO_REUSEPORT`, so the kernel spreads the remotes' flows (by
    /// their UDP source port) over the workers. One worker: a plain socket, as
    /// [`UdpTunnelPort::open`].
    ///
    /// A port held by anybody else is refused as `EADDRINUSE`, as for one socket: the address
    /// is first bound without `SO_REUSEPORT` (which fails if anyone holds it, whatever their
    /// options), and that probe is closed just before the group binds.
    pub fn open_group(local: IpAddr, port: u16, ttl: u8, workers: usize) -> io::Result<Vec<UdpTunnelPort>> {
        if workers <= 1 {
            return Ok(vec![UdpTunnelPort::open(local, port, ttl)?]);
        }
        drop(
            UdpSocket::bind((local, port))
                .map_err(|e| io::Error::new(e.kind(), format!("bind {local} port {port}: {e}")))?,
        );
        (0..workers).map(|_| UdpTunnelPort::with_rx(reuse_port_socket(local, port)?, local, ttl)).collect()
    }

    /// As [`UdpTunnelPort::open_group`], taking over the receiving sockets another vswitchd
    /// process handed over (`handed`, the first worker's first); workers beyond them get new
    /// sockets that join the group (the handed ones were bound with `SO_REUSEPORT` if that
    /// process ran more than one worker; otherwise there is no group to join, and it fails).
    pub fn adopt_group(
        handed: Vec<std::os::fd::OwnedFd>,
        local: IpAddr,
        port: u16,
        ttl: u8,
        workers: usize,
    ) -> io::Result<Vec<UdpTunnelPort>> {
        let mut ports = Vec::with_capacity(workers);
        for fd in handed.into_iter().take(workers.max(1)) {
            ports.push(UdpTunnelPort::adopt(fd, local, ttl)?);
        }
        while ports.len() < workers.max(1) {
            let rx = reuse_port_socket(local, port)
                .map_err(|e| io::Error::new(e.kind(), format!("a socket for one more worker: {e}")))?;
            ports.push(UdpTunnelPort::with_rx(rx, local, ttl)?);
        }
        Ok(ports)
    }

    /// The tunnel port of `local` whose receiving socket `rx` (bound to the VXLAN port) was
    /// handed over by another vswitchd process; the sending sockets are new.
    pub fn adopt(rx: std::os::fd::OwnedFd, local: IpAddr, ttl: u8) -> io::Result<UdpTunnelPort> {
        UdpTunnelPort::with_rx(UdpSocket::from(rx), local, ttl)
    }

    fn with_rx(rx: UdpSocket, local: IpAddr, ttl: u8) -> io::Result<UdpTunnelPort> {
        configure(&rx, local.is_ipv6(), ttl)?;
        let tx = (0..SOURCE_PORTS)
            .map(|_| {
                let s = UdpSocket::bind((local, 0))?;
                configure(&s, local.is_ipv6(), ttl)?;
                Ok(s)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let probe = UdpSocket::bind((local, 0))?;
        probe.set_nonblocking(true)?;
        Ok(UdpTunnelPort { rx, tx, probe, segmentation: true, segmentation_fallbacks: 0 })
    }

    /// The UDP source ports flows are spread over.
    pub fn source_ports(&self) -> Vec<u16> {
        self.tx.iter().filter_map(|s| s.local_addr().ok()).map(|a| a.port()).collect()
    }
}

/// A UDP socket bound to `local`:`port` with `SO_REUSEPORT` (a member of a worker group).
fn reuse_port_socket(local: IpAddr, port: u16) -> io::Result<UdpSocket> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, bind, setsockopt, socket, sockopt};
    let family = if local.is_ipv6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(local, port)))
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("bind {local} port {port}: {e}")))?;
    Ok(UdpSocket::from(fd))
}

impl Port for UdpTunnelPort {
    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.rx.as_raw_fd())
    }

    fn clone_fd(&self) -> Option<io::Result<std::os::fd::OwnedFd>> {
        Some(self.rx.as_fd().try_clone_to_owned())
    }

    fn recv(&mut self, buf: &mut FrameBuf) -> io::Result<()> {
        let (len, source) = self.rx.recv_from(buf.receive_area())?;
        buf.set_received(len);
        buf.source = Some(source);
        Ok(())
    }

    fn recv_batch(&mut self, bufs: &mut [FrameBuf]) -> io::Result<usize> {
        sys::recv_datagrams(self.rx.as_fd(), bufs)
    }

    fn send(&mut self, _parts: &[IoSlice<'_>], _offload: &VnetHdr) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "a tunnel port needs a destination"))
    }

    fn send_to(&mut self, parts: &[IoSlice<'_>], dest: SocketAddr, flow: u64) -> io::Result<()> {
        let socket = &self.tx[(flow % self.tx.len() as u64) as usize];
        let addr = SockaddrStorage::from(dest);
        sendmsg(socket.as_raw_fd(), parts, &[], MsgFlags::MSG_DONTWAIT, Some(&addr))?;
        Ok(())
    }

    fn send_to_each(&mut self, parts: &[IoSlice<'_>], dests: &[SocketAddr], flow: u64) -> io::Result<usize> {
        match dests {
            [] => return Ok(0),
            // One copy (unicast, the common case): a plain sendmsg, no batch to build.
            [dest] => return self.send_to(parts, *dest, flow).map(|()| 1),
            _ => {}
        }
        let socket = &self.tx[(flow % self.tx.len() as u64) as usize];
        let count = dests.len().min(sys::SEND_TO_EACH_MAX);
        let addrs: [SockaddrStorage; sys::SEND_TO_EACH_MAX] =
            std::array::from_fn(|i| SockaddrStorage::from(dests[i.min(count.saturating_sub(1))]));
        sys::send_to_each(socket.as_fd(), parts, &addrs[..count])
    }

    fn path_mtu(&mut self, dest: SocketAddr) -> Option<usize> {
        self.probe.connect(dest).ok()?;
        let (level, name) = if dest.is_ipv6() { (IPPROTO_IPV6, IPV6_MTU) } else { (IPPROTO_IP, IP_MTU) };
        let mtu = sys::get_socket_option_int(self.probe.as_fd(), level, name).ok()?;
        usize::try_from(mtu).ok().filter(|&m| m > 0)
    }

    fn send_datagrams_to(&mut self, datagrams: &[u8], size: usize, dest: SocketAddr, flow: u64) -> io::Result<()> {
        if self.segmentation && datagrams.len() > size {
            let socket = &self.tx[(flow % self.tx.len() as u64) as usize];
            let addr = SockaddrStorage::from(dest);
            let segment = u16::try_from(size).unwrap_or(u16::MAX);
            let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
            match sendmsg(socket.as_raw_fd(), &[IoSlice::new(datagrams)], &cmsg, MsgFlags::MSG_DONTWAIT, Some(&addr)) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::EIO | nix::errno::Errno::EOPNOTSUPP) => {
                    self.segmentation = false;
                    self.segmentation_fallbacks += 1;
                    tracing::warn!("UDP segmentation offload refused; sending one datagram per call");
                }
                Err(e) => return Err(e.into()),
            }
        }
        for datagram in datagrams.chunks(size.max(1)) {
            self.send_to(&[IoSlice::new(datagram)], dest, flow)?;
        }
        Ok(())
    }
}
