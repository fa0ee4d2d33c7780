//! The dataplane's only `unsafe` code: the TUN/TAP ioctls that no safe wrapper covers.
//!
//! Each block carries a `// SAFETY:` comment. Everything else in the workspace is
//! `#![deny(unsafe_code)]` through the workspace lints.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;

/// `_IOW('T', 202, int)`: attach this fd to a named TUN/TAP device, creating it if needed.
const TUNSETIFF: u64 = 0x4004_54ca;
/// Ethernet frames (not IP packets).
const IFF_TAP: libc::c_short = 0x0002;
/// No 4-byte packet-information header in front of each frame.
const IFF_NO_PI: libc::c_short = 0x1000;
/// Prefix every frame with a `struct virtio_net_hdr`.
const IFF_VNET_HDR: libc::c_short = 0x4000;
/// Fail with EBUSY if the device already exists, instead of attaching to it.
const IFF_TUN_EXCL: libc::c_short = -0x8000; // 0x8000 as the kernel's 16-bit flags field
/// The device has several queues, one fd each; the kernel spreads flows across them.
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;

/// `struct ifreq` as TUNSETIFF reads it: a name and, in the union, the flags.
#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _union_rest: [u8; 22],
}

/// Creates a new TAP device named `name` (Ethernet frames, no packet-info header, a 10-byte
/// virtio-net header in front of every frame) and returns a non-blocking, close-on-exec fd
/// attached to it. Fails with `EBUSY` if a device of that
/// name exists already: vswitchd never adopts a device it did not create.
pub fn create_tap(name: &str) -> io::Result<OwnedFd> {
    attach_tun(name, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL)
}

/// Creates a new multi-queue TAP device named `name` with `queues` queues (as
/// [`create_tap`], one fd per queue). The kernel hashes each flow the host sends to one queue,
/// so a worker per queue sees whole flows, in order. With one queue this is [`create_tap`].
pub fn create_tap_queues(name: &str, queues: usize) -> io::Result<Vec<OwnedFd>> {
    if queues <= 1 {
        return Ok(vec![create_tap(name)?]);
    }
    let flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;
    let mut fds = vec![attach_tun(name, flags | IFF_TUN_EXCL)?];
    for _ in 1..queues {
        // The device now exists and is ours: attach further queues to it.
        fds.push(attach_tun(name, flags)?);
    }
    Ok(fds)
}

fn attach_tun(name: &str, flags: libc::c_short) -> io::Result<OwnedFd> {
    if name.is_empty() || name.len() > IFNAME_MAX || name.bytes().any(|b| b == 0 || b == b'/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid interface name {name:?}")));
    }
    let file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut req = IfReqFlags { name: [0; 16], flags, _union_rest: [0; 22] };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `file` is an open fd for /dev/net/tun; TUNSETIFF reads a `struct ifreq` (40
    // bytes: 16-byte NUL-terminated name, then the flags at offset 16), which `IfReqFlags`
    // matches in size and layout, and may write the chosen name back into it; `req` lives on
    // this stack frame for the whole call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReqFlags) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// `_IOW('T', 208, unsigned int)`: which offloads the reader of a TAP takes.
const TUNSETOFFLOAD: u64 = 0x4004_54d0;

/// Tells the kernel which offloads the reader of the TAP at `fd` takes (`TUN_F_*` bits): with
/// checksum and TSO bits set, the host stack hands over partial checksums and 64 KiB GSO
/// super-frames instead of segmenting and checksumming in software first.
pub fn set_tap_offload(fd: std::os::fd::BorrowedFd<'_>, flags: u32) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned int of TUN_F_* bits), not
    // a pointer; `fd` is live for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD as _, libc::c_ulong::from(flags)) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Sets an integer socket option that no safe wrapper covers (for example
/// `SOL_NETLINK`/`NETLINK_EXT_ACK`, or the `SOL_PACKET` options of packet sockets).
pub fn set_socket_option_int(
    fd: std::os::fd::BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is a live descriptor borrowed for the call; the option value is a c_int on
    // this stack frame and its exact size is passed, so the kernel reads only that int.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Reads an integer socket option (for example the fanout group the kernel chose).
pub fn get_socket_option_int(
    fd: std::os::fd::BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` is live for the call; `value` and `len` are on this stack frame, and `len`
    // tells the kernel it may write at most one c_int into `value`.
    let rc =
        unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, (&mut value as *mut libc::c_int).cast(), &mut len) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(value) }
}

/// Most datagrams [`recv_datagrams`] takes in one call.
pub const DATAGRAM_BATCH: usize = 64;

/// Receives up to `bufs.len()` (at most [`DATAGRAM_BATCH`]) datagrams from a UDP socket in one
/// `recvmmsg`, without blocking: datagram `i` lands in `bufs[i]`, its length set and its sender
/// in `source`. Returns how many arrived.
pub fn recv_datagrams(fd: std::os::fd::BorrowedFd<'_>, bufs: &mut [crate::port::FrameBuf]) -> io::Result<usize> {
    let count = bufs.len().min(DATAGRAM_BATCH);
    // SAFETY: sockaddr_storage, iovec and mmsghdr are plain old data for which all-zero bytes
    // are valid values.
    let (mut names, mut iovs, mut msgs): (
        [libc::sockaddr_storage; DATAGRAM_BATCH],
        [libc::iovec; DATAGRAM_BATCH],
        [libc::mmsghdr; DATAGRAM_BATCH],
    ) = unsafe { std::mem::zeroed() };
    for i in 0..count {
        let area = bufs[i].receive_area();
        iovs[i] = libc::iovec { iov_base: area.as_mut_ptr().cast(), iov_len: area.len() };
        let hdr = &mut msgs[i].msg_hdr;
        hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        hdr.msg_iov = &mut iovs[i];
        hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `count` entries of `msgs` point into `names` and `iovs` on this stack
    // frame and, through `iovs`, into each buffer's receive area (not moved or touched until the
    // call returns), all with their true lengths.
    let received = unsafe { recv_messages(fd, &mut msgs[..count])? };
    for i in 0..received {
        bufs[i].set_received(msgs[i].msg_len as usize);
        bufs[i].truncated |= msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        bufs[i].source = socket_address(&names[i]);
    }
    Ok(received)
}

/// One non-blocking `recvmmsg` into `msgs`; returns how many messages arrived (their
/// `msg_len` and the buffers they point to filled in).
///
/// # Safety
/// Every pointer in every entry of `msgs` (name, iovecs and what they point to, control
/// buffer) must be valid for writes of the length stored beside it for the whole call.
unsafe fn recv_messages(fd: std::os::fd::BorrowedFd<'_>, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // SAFETY: `msgs` is a live slice of its true length; the caller vouches for the pointers in it.
    let received = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if received < 0 { Err(io::Error::last_os_error()) } else { Ok(received as usize) }
}

/// Sends the frames laid out in `slab` — frame `i` is `slab[i * slot..][..lens[i]]` — on a
/// connected or bound socket in one `sendmmsg`, without blocking. Returns how many the kernel
/// took (the first ones); an error only if it took none.
pub fn send_frames(fd: std::os::fd::BorrowedFd<'_>, slab: &[u8], slot: usize, lens: &[usize]) -> io::Result<usize> {
    const MAX: usize = 64;
    let count = lens.len().min(MAX);
    // SAFETY: iovec and mmsghdr are plain old data for which all-zero bytes are valid values.
    let mut iovs: [libc::iovec; MAX] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; MAX] = unsafe { std::mem::zeroed() };
    for i in 0..count {
        let frame = &slab[i * slot..i * slot + lens[i]];
        iovs[i] = libc::iovec { iov_base: frame.as_ptr() as *mut libc::c_void, iov_len: frame.len() };
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `count` entries of `msgs` each point at one iovec in `iovs` (on this stack
    // frame), which points into `slab` within its bounds (checked by the slicing above); sendmmsg
    // only reads them, and nothing moves them during the call.
    let sent = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), count as libc::c_uint, libc::MSG_DONTWAIT) };
    if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(sent as usize) }
}

/// Most destinations [`send_to_each`] takes in one call.
pub const SEND_TO_EACH_MAX: usize = 16;

/// Sends the datagram made of `parts` to each of `dests` (at most [`SEND_TO_EACH_MAX`]) in one
/// `sendmmsg`, without blocking. Returns how many destinations, from the first, the kernel
/// took; an error only if it took none.
pub fn send_to_each(
    fd: std::os::fd::BorrowedFd<'_>,
    parts: &[std::io::IoSlice<'_>],
    dests: &[nix::sys::socket::SockaddrStorage],
) -> io::Result<usize> {
    use nix::sys::socket::SockaddrLike;
    let count = dests.len().min(SEND_TO_EACH_MAX);
    // SAFETY: mmsghdr is plain old data for which all-zero bytes are a valid value.
    let mut msgs: [libc::mmsghdr; SEND_TO_EACH_MAX] = unsafe { std::mem::zeroed() };
    for (msg, dest) in msgs.iter_mut().zip(&dests[..count]) {
        msg.msg_hdr.msg_name = dest.as_ptr() as *mut libc::c_void;
        msg.msg_hdr.msg_namelen = dest.len();
        // IoSlice is guaranteed ABI-compatible with iovec.
        msg.msg_hdr.msg_iov = parts.as_ptr() as *mut libc::iovec;
        msg.msg_hdr.msg_iovlen = parts.len() as _;
    }
    // SAFETY: the first `count` entries point at `dests[i]` (a live sockaddr of the stated length)
    // and at `parts` (live slices, which `IoSlice` lays out as iovecs); sendmmsg only reads them.
    let sent = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), count as libc::c_uint, libc::MSG_DONTWAIT) };
    if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(sent as usize) }
}

/// The IPv4 or IPv6 address and port in a `sockaddr_storage` the kernel filled in.
fn socket_address(storage: &libc::sockaddr_storage) -> Option<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which is smaller than and
            // no more aligned than sockaddr_storage.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6, which is smaller than and
            // no more aligned than sockaddr_storage.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), sin6.sin6_flowinfo, sin6.sin6_scope_id).into())
        }
        _ => None,
    }
}

/// Every EtherType, as a packet socket protocol.
pub const ETH_P_ALL: u16 = 0x0003;

/// Opens a raw `AF_PACKET` socket bound to interface `ifindex` (in the calling thread's
/// namespace) for EtherType `protocol` (host order; [`ETH_P_ALL`] for every frame). The socket
/// is close-on-exec and blocking; callers set options (non-blocking, `PACKET_*`) themselves.
pub fn bound_packet_socket(ifindex: u32, protocol: u16) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let proto_be = libc::c_int::from(protocol.to_be());
    // SAFETY: plain socket(2) call with constant arguments; it returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto_be) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data for which all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = protocol.to_be();
    addr.sll_ifindex = ifindex as libc::c_int;
    // SAFETY: `addr` is a valid sockaddr_ll on this stack frame and its exact size is passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// `SOL_PACKET` socket options and auxdata.
pub mod packet {
    /// The socket option level.
    pub const SOL_PACKET: libc::c_int = 263;
    /// Deliver `struct tpacket_auxdata` with every frame.
    pub const PACKET_AUXDATA: libc::c_int = 8;
    /// Prefix frames with a `struct virtio_net_hdr`.
    pub const PACKET_VNET_HDR: libc::c_int = 15;
    /// Do not deliver frames this host sends on the interface.
    pub const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
    /// Join a fanout group: each frame goes to one of the group's sockets.
    pub const PACKET_FANOUT: libc::c_int = 18;
    /// Fanout by the frame's flow hash, so a flow always reaches the same socket.
    pub const PACKET_FANOUT_HASH: libc::c_int = 0;
    /// Let the kernel choose an unused group id (read it back with `getsockopt`).
    pub const PACKET_FANOUT_FLAG_UNIQUEID: libc::c_int = 0x2000;
    const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
    const PACKET_STATISTICS: libc::c_int = 6;
    const PACKET_MR_PROMISC: libc::c_ushort = 1;
    /// The checksum of the frame is partial.
    pub const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;
    /// `tp_vlan_tci` holds a tag the kernel took out of the frame.
    pub const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
    /// `tp_vlan_tpid` is set.
    pub const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

    /// Frames the kernel dropped for the packet socket `fd` since the last call, because its
    /// receive buffer was full (`struct tpacket_stats`'s `tp_drops`; reading resets it).
    pub fn take_drops(fd: BorrowedFd<'_>) -> io::Result<u32> {
        let mut stats = [0u32; 2]; // tp_packets, tp_drops
        let mut len = std::mem::size_of_val(&stats) as libc::socklen_t;
        // SAFETY: `fd` is live for the call; `stats` and `len` are on this stack frame, and `len`
        // tells the kernel it may write at most the 8 bytes of `stats`.
        let rc = unsafe {
            libc::getsockopt(fd.as_raw_fd(), SOL_PACKET, PACKET_STATISTICS, stats.as_mut_ptr().cast(), &mut len)
        };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(stats[1]) }
    }

    /// `struct tpacket_auxdata`.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Auxdata {
        /// `TP_STATUS_*` bits.
        pub tp_status: u32,
        /// Frame length on the wire.
        pub tp_len: u32,
        /// Bytes captured.
        pub tp_snaplen: u32,
        /// Offset of the MAC header.
        pub tp_mac: u16,
        /// Offset of the network header.
        pub tp_net: u16,
        /// The tag control information of a removed VLAN tag.
        pub tp_vlan_tci: u16,
        /// Its TPID.
        pub tp_vlan_tpid: u16,
    }

    #[repr(C)]
    struct PacketMreq {
        mr_ifindex: libc::c_int,
        mr_type: libc::c_ushort,
        mr_alen: libc::c_ushort,
        mr_address: [u8; 8],
    }

    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd};

    /// Puts the interface a packet socket is bound to in promiscuous mode for as long as the
    /// socket lives (the kernel counts, so this never turns it off for anyone else).
    pub fn add_promiscuous(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
        let mreq = PacketMreq {
            mr_ifindex: ifindex as libc::c_int,
            mr_type: PACKET_MR_PROMISC,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        // SAFETY: `fd` is live for the call; `mreq` is a `struct packet_mreq` (same layout,
        // 16 bytes) on this stack frame and its exact size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_ADD_MEMBERSHIP,
                (&mreq as *const PacketMreq).cast(),
                std::mem::size_of::<PacketMreq>() as libc::socklen_t,
            )
        };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// The auxdata control message of a message just filled in by `recvmsg`/`recvmmsg`, or a
    /// zeroed one if there is none (`PACKET_AUXDATA` off).
    fn auxdata_of(msg: &libc::msghdr) -> Auxdata {
        let mut aux = Auxdata::default();
        // SAFETY: `msg` was filled in by the kernel; CMSG_FIRSTHDR/CMSG_NXTHDR walk only within
        // msg_control..msg_controllen, and each cmsg's data is read unaligned, and only if the
        // cmsg is long enough to hold an Auxdata.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(msg);
            while !cmsg.is_null() {
                let c = &*cmsg;
                let data_len = c.cmsg_len as usize - (libc::CMSG_DATA(cmsg) as usize - cmsg as usize);
                if c.cmsg_level == SOL_PACKET
                    && c.cmsg_type == PACKET_AUXDATA
                    && data_len >= std::mem::size_of::<Auxdata>()
                {
                    aux = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<Auxdata>());
                }
                cmsg = libc::CMSG_NXTHDR(msg, cmsg);
            }
        }
        aux
    }

    /// Most frames [`recv_batch`] takes in one call.
    pub const BATCH: usize = 64;

    /// Receives up to `bufs.len()` (at most [`BATCH`]) frames from a packet socket with
    /// `PACKET_VNET_HDR` in one `recvmmsg`, without blocking: frame `i` lands in `bufs[i]` with
    /// its length and offload metadata (from its virtio-net header) set, and its auxdata in
    /// `aux[i]`. Returns how many frames arrived.
    pub fn recv_batch(
        fd: BorrowedFd<'_>,
        bufs: &mut [crate::port::FrameBuf],
        aux: &mut [Auxdata],
    ) -> io::Result<usize> {
        let count = bufs.len().min(aux.len()).min(BATCH);
        let mut heads = [[0u8; crate::wire::vnet_hdr::LEN]; BATCH];
        let mut controls = [[0u64; 8]; BATCH];
        // SAFETY: iovec is plain old data for which all-zero bytes are a valid value.
        let mut iovs: [[libc::iovec; 2]; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: mmsghdr is plain old data for which all-zero bytes are a valid value.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..count {
            let area = bufs[i].receive_area();
            iovs[i][0] = libc::iovec { iov_base: heads[i].as_mut_ptr().cast(), iov_len: heads[i].len() };
            iovs[i][1] = libc::iovec { iov_base: area.as_mut_ptr().cast(), iov_len: area.len() };
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_iov = iovs[i].as_mut_ptr();
            hdr.msg_iovlen = 2;
            hdr.msg_control = controls[i].as_mut_ptr().cast();
            hdr.msg_controllen = std::mem::size_of_val(&controls[i]) as _;
        }
        // SAFETY: the first `count` entries of `msgs` point, through `iovs` and `controls`, into
        // buffers that live on this stack frame (`heads`, `controls`) or in `bufs` (each buffer's
        // receive area, which is not moved or touched until recvmmsg returns), with their true
        // lengths.
        let received = unsafe { super::recv_messages(fd, &mut msgs[..count])? };
        for i in 0..received {
            bufs[i].set_received_with_header(msgs[i].msg_len as usize, &heads[i]);
            bufs[i].truncated |= msgs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            aux[i] = auxdata_of(&msgs[i].msg_hdr);
        }
        Ok(received)
    }

    /// Receives one frame from a packet socket into `head` then `body` (a virtio-net header
    /// and the frame, when `PACKET_VNET_HDR` is on) without blocking, and returns the bytes
    /// received, the frame's auxdata (zeroed if `PACKET_AUXDATA` is off) and whether the frame
    /// was cut short to fit.
    pub fn recv(fd: BorrowedFd<'_>, head: &mut [u8], body: &mut [u8]) -> io::Result<(usize, Auxdata, bool)> {
        let mut iov = [
            libc::iovec { iov_base: head.as_mut_ptr().cast(), iov_len: head.len() },
            libc::iovec { iov_base: body.as_mut_ptr().cast(), iov_len: body.len() },
        ];
        // Room for one cmsghdr (16 bytes) and a 20-byte tpacket_auxdata, 8-byte aligned.
        let mut control = [0u64; 8];
        // SAFETY: msghdr is plain old data for which all-zero bytes are a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: every pointer in `msg` points into buffers borrowed for this call (`iov`
        // into `head` and `body`, the control buffer into `control`) with their true lengths.
        let received = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        let aux = auxdata_of(&msg);
        Ok((received as usize, aux, msg.msg_flags & libc::MSG_TRUNC != 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_of_datagrams_arrives_with_lengths_and_senders() {
        use std::net::UdpSocket;
        use std::os::fd::AsFd;
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let to = rx.local_addr().unwrap();
        let (a, b) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
        a.send_to(&[1; 10], to).unwrap();
        b.send_to(&[2; 700], to).unwrap();
        a.send_to(&[3; 1], to).unwrap();
        let mut bufs: Vec<_> = (0..4).map(|_| crate::port::FrameBuf::new(1500)).collect();
        assert_eq!(recv_datagrams(rx.as_fd(), &mut bufs).unwrap(), 3);
        let seen: Vec<_> = bufs[..3].iter().map(|f| (f.frame()[0], f.len(), f.source)).collect();
        let (from_a, from_b) = (Some(a.local_addr().unwrap()), Some(b.local_addr().unwrap()));
        assert_eq!(seen, vec![(1, 10, from_a), (2, 700, from_b), (3, 1, from_a)]);
        let again = recv_datagrams(rx.as_fd(), &mut bufs).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn ifreq_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
        assert_eq!(std::mem::offset_of!(IfReqFlags, flags), 16);
        assert_eq!(IFF_TUN_EXCL as u16, 0x8000);
    }

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        for bad in ["", "sixteen-bytes-xx", "a/b", "nul\0"] {
            assert_eq!(create_tap(bad).unwrap_err().kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}

/// The most fds one message carries (the kernel's `SCM_MAX_FD` is 253).
pub const FDS_PER_MESSAGE: usize = 250;

/// Sends `payload` on the Unix stream socket `socket` with `fds` attached (`SCM_RIGHTS`, at
/// most [`FDS_PER_MESSAGE`]): the receiver gets fds of its own for the same open files.
pub fn send_with_fds(
    socket: std::os::fd::BorrowedFd<'_>,
    payload: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> io::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
    let raw: Vec<std::os::fd::RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    Ok(sendmsg::<UnixAddr>(socket.as_raw_fd(), &[io::IoSlice::new(payload)], cmsgs, MsgFlags::empty(), None)?)
}

/// Receives into `buf` from the Unix stream socket `socket`, with the fds attached to what
/// arrives (close-on-exec); returns the bytes received (0: the peer closed) and the fds.
pub fn recv_with_fds(socket: std::os::fd::BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg};
    use std::os::fd::FromRawFd;
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; FDS_PER_MESSAGE]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let message = recvmsg::<UnixAddr>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            for fd in received {
                // SAFETY: the kernel has just installed `fd` in this process's table for this
                // message (SCM_RIGHTS); nothing else refers to it, so it is ours to own and
                // close.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let truncated = message.flags.contains(MsgFlags::MSG_CTRUNC);
    let bytes = message.bytes;
    if truncated {
        return Err(io::Error::other("more fds than one message may carry: some were lost"));
    }
    Ok((bytes, fds))
}

#[cfg(test)]
mod fd_passing_tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn fds_sent_with_a_message_arrive_as_fds_of_the_same_files() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut reader, writer) = std::io::pipe().unwrap();
        let sent = send_with_fds(a.as_fd(), b"F", &[writer.as_fd(), writer.as_fd()]).unwrap();
        assert_eq!(sent, 1);
        drop(writer);
        let mut buf = [0u8; 8];
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!((n, &buf[..1], fds.len()), (1, &b"F"[..], 2));
        let mut copy = std::fs::File::from(fds.into_iter().next().unwrap());
        copy.write_all(b"through the copy").unwrap();
        drop(copy);
        let mut text = String::new();
        // The second copy still holds the pipe open: read what was written, not to EOF.
        let mut chunk = [0u8; 16];
        reader.read_exact(&mut chunk).unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        assert_eq!(text, "through the copy");
        // Without fds, a plain message.
        send_with_fds(a.as_fd(), b"xy", &[]).unwrap();
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!((n, fds.len()), (2, 0));
    }
}

/// Makes the program `command` starts begin with no signal blocked. A child inherits the
/// signal mask of the thread that starts it, and vswitchd's threads block SIGINT, SIGTERM and
/// SIGHUP (one thread waits for them): a server it starts (dnsmasq) would never hear the
/// SIGTERM that stops it.
pub fn unblock_signals_in_child(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called: it calls sigemptyset and sigprocmask (both on
    // POSIX's list) on a set on its stack, and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
