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
/// Fail with EBUSY if the device already exists, instead of attaching to it.
const IFF_TUN_EXCL: libc::c_short = -0x8000; // 0x8000 as the kernel's 16-bit flags field

/// `struct ifreq` as TUNSETIFF reads it: a name and, in the union, the flags.
#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _union_rest: [u8; 22],
}

/// Creates a new TAP device named `name` (Ethernet frames, no packet-info header) and returns
/// a non-blocking, close-on-exec fd attached to it. Fails with `EBUSY` if a device of that
/// name exists already: vswitchd never adopts a device it did not create.
pub fn create_tap(name: &str) -> io::Result<OwnedFd> {
    if name.is_empty() || name.len() > IFNAME_MAX || name.bytes().any(|b| b == 0 || b == b'/') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid interface name {name:?}")));
    }
    let file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut req = IfReqFlags { name: [0; 16], flags: IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL, _union_rest: [0; 22] };
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

#[cfg(test)]
mod tests {
    use super::*;

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
