//! A synchronous NETLINK_ROUTE socket: send one request, read until its ACK or error.
//!
//! A socket is bound to the network namespace of the thread that opened it, for life; open one
//! per namespace (see [`crate::netns::run_in`]). Messages are built by the pure functions in
//! [`message`].

pub mod fdb;
pub mod message;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, send, socket,
};

pub use message::{AddressInfo, LinkChange, LinkInfo, Reply};

const SOL_NETLINK: libc::c_int = 270;
/// The multicast group of link events.
const RTMGRP_LINK: u32 = 1;
/// The multicast group of neighbour (and bridge FDB) events.
const RTMGRP_NEIGH: u32 = 4;
const NETLINK_EXT_ACK: libc::c_int = 11;

/// A request the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkError {
    /// The errno.
    pub errno: Errno,
    /// The kernel's extended-ACK explanation, if any.
    pub message: Option<String>,
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.errno.desc())?;
        if let Some(m) = &self.message {
            write!(f, " ({m})")?;
        }
        Ok(())
    }
}

impl std::error::Error for NetlinkError {}

impl From<NetlinkError> for io::Error {
    fn from(e: NetlinkError) -> io::Error {
        io::Error::new(io::Error::from(e.errno).kind(), e)
    }
}

impl From<Errno> for NetlinkError {
    fn from(errno: Errno) -> NetlinkError {
        NetlinkError { errno, message: None }
    }
}

/// A NETLINK_ROUTE socket in one namespace.
#[derive(Debug)]
pub struct NetlinkSocket {
    fd: OwnedFd,
    seq: u32,
    rx: Vec<u8>,
}

impl NetlinkSocket {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<NetlinkSocket> {
        let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkRoute)?;
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &NetlinkAddr::new(0, 0))?;
        // Best effort: without extended ACKs errors still arrive, only without the kernel's text.
        let _ = vswitchd_dataplane::sys::set_socket_option_int(fd.as_fd(), SOL_NETLINK, NETLINK_EXT_ACK, 1);
        Ok(NetlinkSocket { fd, seq: 0, rx: vec![0u8; 32 * 1024] })
    }

    /// Opens a socket in the calling thread's namespace that receives link events
    /// (`RTNLGRP_LINK`): read them with [`NetlinkSocket::events`].
    pub fn open_link_monitor() -> io::Result<NetlinkSocket> {
        let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkRoute)?;
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &NetlinkAddr::new(0, RTMGRP_LINK))?;
        Ok(NetlinkSocket { fd, seq: 0, rx: vec![0u8; 64 * 1024] })
    }

    /// Opens a socket in the calling thread's namespace that receives neighbour and bridge FDB
    /// events (`RTNLGRP_NEIGH`): read them with [`NetlinkSocket::fdb_events`].
    pub fn open_neigh_monitor() -> io::Result<NetlinkSocket> {
        let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkRoute)?;
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &NetlinkAddr::new(0, RTMGRP_NEIGH))?;
        // A burst of routes from BGP must not overflow the queue: a bigger buffer (best effort).
        let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RcvBuf, &(4 << 20));
        Ok(NetlinkSocket { fd, seq: 0, rx: vec![0u8; 64 * 1024] })
    }

    /// Blocks until the kernel sends something (or the read timeout passes: `EAGAIN`), and
    /// returns the FDB events in it, added (`true`) or deleted.
    pub fn fdb_events(&mut self) -> Result<Vec<(bool, fdb::FdbEntry)>, NetlinkError> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        loop {
            match recv(fd, &mut self.rx, MsgFlags::empty()) {
                Ok(len) => {
                    return Ok(message::parse_replies(&self.rx[..len])
                        .into_iter()
                        .filter_map(|(_, r)| match r {
                            Reply::Neigh(e) => Some((true, e)),
                            Reply::NeighGone(e) => Some((false, e)),
                            _ => None,
                        })
                        .collect());
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Every bridge FDB entry of this socket's namespace.
    pub fn fdb(&mut self) -> Result<Vec<fdb::FdbEntry>, NetlinkError> {
        let replies = self.execute_replies(fdb::get_fdb())?;
        Ok(replies.into_iter().filter_map(|r| if let Reply::Neigh(e) = r { Some(e) } else { None }).collect())
    }

    /// Makes [`NetlinkSocket::events`] give up with `EAGAIN` after `timeout` without events.
    pub fn set_read_timeout(&self, timeout: std::time::Duration) -> io::Result<()> {
        let tv = nix::sys::time::TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
        nix::sys::socket::setsockopt(&self.fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv)?;
        Ok(())
    }

    /// Blocks until the kernel sends something, and returns the link events in it.
    pub fn events(&mut self) -> Result<Vec<Reply>, NetlinkError> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        loop {
            match recv(fd, &mut self.rx, MsgFlags::empty()) {
                Ok(len) => {
                    return Ok(message::parse_replies(&self.rx[..len])
                        .into_iter()
                        .map(|(_, r)| r)
                        .filter(|r| matches!(r, Reply::Link(_) | Reply::LinkGone(_)))
                        .collect());
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends `request` and waits for its acknowledgement; returns the links any link
    /// replies described.
    pub fn execute(&mut self, request: Vec<u8>) -> Result<Vec<LinkInfo>, NetlinkError> {
        let replies = self.execute_replies(request)?;
        Ok(replies.into_iter().filter_map(|r| if let Reply::Link(info) = r { Some(info) } else { None }).collect())
    }

    /// Every address in this socket's namespace.
    pub fn addresses(&mut self) -> Result<Vec<AddressInfo>, NetlinkError> {
        let replies = self.execute_replies(message::get_addresses())?;
        Ok(replies.into_iter().filter_map(|r| if let Reply::Address(a) = r { Some(a) } else { None }).collect())
    }

    /// Sends `request` and waits for its acknowledgement (or the end of a dump); returns the
    /// link and address replies that came before it.
    fn execute_replies(&mut self, mut request: Vec<u8>) -> Result<Vec<Reply>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        request[8..12].copy_from_slice(&seq.to_ne_bytes());
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.fd);
        loop {
            match send(fd, &request, MsgFlags::empty()) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let mut found = Vec::new();
        loop {
            let len = match recv(fd, &mut self.rx, MsgFlags::empty()) {
                Ok(len) => len,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            for (reply_seq, reply) in message::parse_replies(&self.rx[..len]) {
                if reply_seq != seq {
                    continue;
                }
                match reply {
                    Reply::Ack | Reply::Done => return Ok(found),
                    Reply::Error { errno, message } => {
                        return Err(NetlinkError { errno: Errno::from_raw(errno), message });
                    }
                    Reply::Link(_) | Reply::Address(_) | Reply::Neigh(_) => found.push(reply),
                    Reply::LinkGone(_) | Reply::NeighGone(_) | Reply::Other(_) => {}
                }
            }
        }
    }

    /// The link named `name`, or `None` if there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        match self.execute(message::get_link(name)) {
            Ok(mut links) => Ok(links.pop()),
            Err(e) if e.errno == Errno::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of the link named `name`, or `None` if there is none.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, NetlinkError> {
        Ok(self.link(name)?.map(|l| l.index))
    }

    /// The index of the link named `name`, which must exist.
    pub fn require_link(&mut self, name: &str) -> Result<u32, NetlinkError> {
        self.link_index(name)?
            .ok_or(NetlinkError { errno: Errno::ENODEV, message: Some(format!("no link named {name}")) })
    }

    /// Applies `change` to the link named `name`.
    pub fn set_link(&mut self, name: &str, change: LinkChange) -> Result<(), NetlinkError> {
        let index = self.require_link(name)?;
        self.execute(message::set_link(index, change)).map(drop)
    }

    /// Moves the link named `name` into the namespace open at `netns_fd`.
    pub fn move_link(&mut self, name: &str, netns_fd: RawFd) -> Result<(), NetlinkError> {
        let index = self.require_link(name)?;
        self.execute(message::move_link_to_netns(index, netns_fd)).map(drop)
    }

    /// Creates the veth pair `name` / `peer` in this socket's namespace.
    pub fn create_veth(&mut self, name: &str, peer: &str) -> Result<(), NetlinkError> {
        self.execute(message::create_veth(name, peer)).map(drop)
    }

    /// Keeps the link named `name` from configuring IPv6 on itself.
    pub fn disable_ipv6_autoconf(&mut self, name: &str) -> Result<(), NetlinkError> {
        let index = self.require_link(name)?;
        self.execute(message::disable_ipv6_autoconf(index)).map(drop)
    }

    /// Deletes the links named `names` that exist, together: each is put in device group
    /// `group`, then the group is deleted in one request, so the kernel unregisters them in one
    /// batch (deleting a thousand TAPs one by one takes about 20 s; together, a fraction of a
    /// second). `group` must be one no other device uses. Returns how many were deleted.
    pub fn delete_links_together(&mut self, names: &[&str], group: u32) -> Result<usize, NetlinkError> {
        let mut grouped = 0;
        for name in names {
            let Some(index) = self.link_index(name)? else { continue };
            self.execute(message::set_link(index, LinkChange { group: Some(group), ..LinkChange::default() }))?;
            grouped += 1;
        }
        if grouped > 0 {
            self.execute(message::delete_group(group))?;
        }
        Ok(grouped)
    }

    /// Deletes the link named `name` if it exists. Returns whether it did.
    pub fn delete_link(&mut self, name: &str) -> Result<bool, NetlinkError> {
        match self.link_index(name)? {
            Some(index) => match self.execute(message::delete_link(index)) {
                Ok(_) => Ok(true),
                // Gone between the lookup and the delete (a TAP whose last fd just closed).
                Err(NetlinkError { errno: nix::errno::Errno::ENODEV, .. }) => Ok(false),
                Err(e) => Err(e),
            },
            None => Ok(false),
        }
    }
}
