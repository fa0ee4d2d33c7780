//! Pure builders for the rtnetlink requests vswitchd sends, and a parser for the replies.
//! No sockets here: every function returns bytes or reads bytes, so each is tested against
//! annotated fixtures.
//!
//! Layout reminders (all integers in host byte order, attributes padded to 4 bytes):
//! `nlmsghdr` = len u32, type u16, flags u16, seq u32, pid u32 (16 bytes); then the family
//! header (`ifinfomsg` 16 bytes, `ifaddrmsg` 8, `rtmsg` 12); then attributes, each
//! len u16 (header included, padding excluded), type u16, value.

use std::net::IpAddr;
use std::os::fd::RawFd;

use vswitchd_dataplane::wire::MacAddr;

use crate::topology::{IpCidr, RouteSpec};

/// `nlmsghdr` length.
pub const HEADER_LEN: usize = 16;

pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const RTM_NEWLINK: u16 = 16;
pub(crate) const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
pub(crate) const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_ROOT | NLM_F_MATCH`: every object of the kind, in a multi-part reply.
pub(crate) const NLM_F_DUMP: u16 = 0x300;
pub(crate) const NLM_F_EXCL: u16 = 0x200;
pub(crate) const NLM_F_CREATE: u16 = 0x400;
/// In an error reply: the original request was not echoed in full.
pub(crate) const NLM_F_CAPPED: u16 = 0x100;
/// In an error reply: extended-ACK attributes follow.
pub(crate) const NLM_F_ACK_TLVS: u16 = 0x200;
/// Extended-ACK attribute: a human-readable error message.
pub(crate) const NLMSGERR_ATTR_MSG: u16 = 1;

const IFLA_ADDRESS: u16 = 1;
pub(crate) const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_OPERSTATE: u16 = 16;
pub(crate) const IFLA_LINKINFO: u16 = 18;
pub(crate) const IFLA_INFO_KIND: u16 = 1;
pub(crate) const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_GROUP: u16 = 27;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_GATEWAY: u16 = 5;

const AF_UNSPEC: u8 = 0;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IFF_UP: u32 = 0x1;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_NOWHERE: u8 = 255;
const RTN_UNICAST: u8 = 1;

/// Rounds up to the 4-byte netlink alignment.
pub(crate) fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Accumulates one netlink message.
#[derive(Debug)]
pub(crate) struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    pub(crate) fn new(msg_type: u16, flags: u16, family_header: &[u8]) -> Builder {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set by the socket
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        buf.extend_from_slice(family_header);
        Builder { buf }
    }

    pub(crate) fn attr(&mut self, attr_type: u16, value: &[u8]) -> &mut Builder {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&attr_type.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align(self.buf.len()), 0);
        self
    }

    /// An attribute whose value is whatever `body` adds (nested attributes, or a header and
    /// attributes, as a veth peer is).
    pub(crate) fn nest(&mut self, attr_type: u16, body: impl FnOnce(&mut Builder)) -> &mut Builder {
        let start = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&attr_type.to_ne_bytes());
        body(self);
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) -> &mut Builder {
        self.buf.extend_from_slice(bytes);
        self
    }

    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        std::mem::take(&mut self.buf)
    }
}

pub(crate) fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = AF_UNSPEC; // family; h[1] pad; h[2..4] device type
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&change.to_ne_bytes());
    h
}

fn family(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { AF_INET } else { AF_INET6 }
}

pub(crate) fn ip_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

pub(crate) fn name_value(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

/// Asks for the link named `name` (the reply carries its index).
pub fn get_link(name: &str) -> Vec<u8> {
    Builder::new(RTM_GETLINK, 0, &ifinfomsg(0, 0, 0)).attr(IFLA_IFNAME, &name_value(name)).finish()
}

/// Deletes link `index`.
pub fn delete_link(index: u32) -> Vec<u8> {
    Builder::new(RTM_DELLINK, 0, &ifinfomsg(index, 0, 0)).finish()
}

/// Moves link `index` into the namespace open at `netns_fd`.
pub fn move_link_to_netns(index: u32, netns_fd: RawFd) -> Vec<u8> {
    Builder::new(RTM_SETLINK, 0, &ifinfomsg(index, 0, 0))
        .attr(IFLA_NET_NS_FD, &(netns_fd as u32).to_ne_bytes())
        .finish()
}

/// Changes to make to a link; `None` leaves a setting alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkChange {
    /// Administrative state.
    pub up: Option<bool>,
    /// MTU.
    pub mtu: Option<u32>,
    /// MAC address.
    pub mac: Option<MacAddr>,
    /// Device group.
    pub group: Option<u32>,
}

/// Applies `change` to link `index`.
pub fn set_link(index: u32, change: LinkChange) -> Vec<u8> {
    let (flags, mask) = match change.up {
        Some(true) => (IFF_UP, IFF_UP),
        Some(false) => (0, IFF_UP),
        None => (0, 0),
    };
    let mut b = Builder::new(RTM_SETLINK, 0, &ifinfomsg(index, flags, mask));
    if let Some(mtu) = change.mtu {
        b.attr(IFLA_MTU, &mtu.to_ne_bytes());
    }
    if let Some(mac) = change.mac {
        b.attr(IFLA_ADDRESS, &mac.0);
    }
    if let Some(group) = change.group {
        b.attr(IFLA_GROUP, &group.to_ne_bytes());
    }
    b.finish()
}

/// Deletes every link in device group `group` of the caller's namespace at once: the kernel
/// unregisters them together, with one wait for readers instead of one per device.
pub fn delete_group(group: u32) -> Vec<u8> {
    Builder::new(RTM_DELLINK, 0, &ifinfomsg(0, 0, 0)).attr(IFLA_GROUP, &group.to_ne_bytes()).finish()
}

/// Creates a veth pair in the caller's namespace: `name` and its peer `peer`.
pub fn create_veth(name: &str, peer: &str) -> Vec<u8> {
    Builder::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfomsg(0, 0, 0))
        .attr(IFLA_IFNAME, &name_value(name))
        .nest(IFLA_LINKINFO, |b| {
            b.attr(IFLA_INFO_KIND, b"veth").nest(IFLA_INFO_DATA, |b| {
                b.nest(VETH_INFO_PEER, |b| {
                    b.raw(&ifinfomsg(0, 0, 0)).attr(IFLA_IFNAME, &name_value(peer));
                });
            });
        })
        .finish()
}

/// Stops the kernel from giving link `index` an IPv6 link-local address (and so from sending
/// router solicitations and DAD probes from it): for the switch-side end of a veth, which
/// must stay silent.
pub fn disable_ipv6_autoconf(index: u32) -> Vec<u8> {
    Builder::new(RTM_SETLINK, 0, &ifinfomsg(index, 0, 0))
        .nest(IFLA_AF_SPEC, |b| {
            b.nest(u16::from(AF_INET6), |b| {
                b.attr(IFLA_INET6_ADDR_GEN_MODE, &[IN6_ADDR_GEN_MODE_NONE]);
            });
        })
        .finish()
}

/// Adds `cidr` to link `index`.
pub fn add_address(index: u32, cidr: IpCidr) -> Vec<u8> {
    let mut h = [0u8; 8];
    h[0] = family(cidr.addr);
    h[1] = cidr.prefix;
    h[3] = RT_SCOPE_UNIVERSE;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    let addr = ip_bytes(cidr.addr);
    Builder::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &h).attr(IFA_LOCAL, &addr).attr(IFA_ADDRESS, &addr).finish()
}

/// Asks for every address of the namespace (a dump: [`Reply::Address`]es, then
/// [`Reply::Done`]).
pub fn get_addresses() -> Vec<u8> {
    Builder::new(RTM_GETADDR, NLM_F_DUMP, &[AF_UNSPEC, 0, 0, 0, 0, 0, 0, 0]).finish()
}

/// Adds (or with `add == false`, deletes) `route` in the main table.
pub fn route(route: &RouteSpec, add: bool) -> Vec<u8> {
    let mut h = [0u8; 12];
    h[0] = family(route.via);
    h[1] = route.dst.map_or(0, |d| d.prefix);
    h[4] = RT_TABLE_MAIN;
    if add {
        h[5] = RTPROT_BOOT;
        h[6] = RT_SCOPE_UNIVERSE;
        h[7] = RTN_UNICAST;
    } else {
        h[6] = RT_SCOPE_NOWHERE;
    }
    let (msg_type, flags) = if add { (RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL) } else { (RTM_DELROUTE, 0) };
    let mut b = Builder::new(msg_type, flags, &h);
    if let Some(dst) = route.dst {
        b.attr(RTA_DST, &ip_bytes(dst.addr));
    }
    b.attr(RTA_GATEWAY, &ip_bytes(route.via)).finish()
}

/// One message of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The request succeeded.
    Ack,
    /// The request failed with `errno`, and the kernel's explanation if it gave one.
    Error {
        /// The positive errno.
        errno: i32,
        /// The extended-ACK message.
        message: Option<String>,
    },
    /// A link description (the answer to [`get_link`], or a link event).
    Link(LinkInfo),
    /// A link was deleted (an event).
    LinkGone(LinkInfo),
    /// An address on a link (the answer to [`get_addresses`]).
    Address(AddressInfo),
    /// A bridge FDB entry (an answer to [`super::fdb::get_fdb`], or an event).
    Neigh(super::fdb::FdbEntry),
    /// A bridge FDB entry was deleted (an event).
    NeighGone(super::fdb::FdbEntry),
    /// End of a multi-part reply.
    Done,
    /// Anything else.
    Other(u16),
}

/// What a link message says about a link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// `IFF_*` flags.
    pub flags: u32,
    /// Interface name.
    pub name: Option<String>,
    /// RFC 2863 operational state (`IF_OPER_*`), if given.
    pub operstate: Option<u8>,
    /// The link's kind (`IFLA_INFO_KIND`: `veth`, `tun`, `bridge`, ...), if given.
    pub kind: Option<String>,
}

/// An address on a link, as an address message describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressInfo {
    /// The link's index.
    pub index: u32,
    /// The address (`IFA_LOCAL` where given, else `IFA_ADDRESS`) and its prefix length.
    pub cidr: IpCidr,
}

/// `IFF_UP`: administratively up.
pub const IFF_UP_FLAG: u32 = IFF_UP;
/// `IFF_LOWER_UP`: the driver signals carrier.
pub const IFF_LOWER_UP: u32 = 0x1_0000;

impl LinkInfo {
    /// Up and with carrier: frames can flow.
    pub fn is_running(&self) -> bool {
        self.flags & IFF_UP != 0 && self.flags & IFF_LOWER_UP != 0
    }
}

/// The `IFLA_INFO_KIND` string inside an `IFLA_LINKINFO` attribute's value.
fn link_kind(mut nested: &[u8]) -> Option<String> {
    while nested.len() >= 4 {
        let len = u16::from_ne_bytes([nested[0], nested[1]]) as usize;
        let attr_type = u16::from_ne_bytes([nested[2], nested[3]]) & 0x3fff;
        if len < 4 || len > nested.len() {
            return None;
        }
        if attr_type == IFLA_INFO_KIND {
            let text = nested[4..len].split(|&b| b == 0).next().unwrap_or(&[]);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        nested = &nested[align(len).min(nested.len())..];
    }
    None
}

fn parse_link(payload: &[u8]) -> Option<LinkInfo> {
    if payload.len() < 16 {
        return None;
    }
    let mut info = LinkInfo {
        index: u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]),
        flags: u32::from_ne_bytes([payload[8], payload[9], payload[10], payload[11]]),
        ..LinkInfo::default()
    };
    let mut attrs = &payload[16..];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let attr_type = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        let value = &attrs[4..len];
        match attr_type {
            IFLA_IFNAME => {
                let text = value.split(|&b| b == 0).next().unwrap_or(&[]);
                info.name = Some(String::from_utf8_lossy(text).into_owned());
            }
            IFLA_OPERSTATE => info.operstate = value.first().copied(),
            IFLA_LINKINFO => info.kind = link_kind(value),
            _ => {}
        }
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    Some(info)
}

fn parse_address(payload: &[u8]) -> Option<AddressInfo> {
    if payload.len() < 8 {
        return None;
    }
    let (family, prefix) = (payload[0], payload[1]);
    let index = u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]);
    let (mut local, mut address) = (None, None);
    let mut attrs = &payload[8..];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let attr_type = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        let value = &attrs[4..len];
        let addr = match (family, value.len()) {
            (AF_INET, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(value).ok()?)),
            (AF_INET6, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(value).ok()?)),
            _ => None,
        };
        match attr_type {
            IFA_LOCAL => local = addr,
            IFA_ADDRESS => address = addr,
            _ => {}
        }
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    let max = if family == AF_INET { 32 } else { 128 };
    let addr = local.or(address).filter(|_| prefix <= max)?;
    Some(AddressInfo { index, cidr: IpCidr { addr, prefix } })
}

/// Splits a datagram from the kernel into `(sequence, reply)` pairs. Malformed trailing bytes
/// end the iteration.
pub fn parse_replies(mut buf: &[u8]) -> Vec<(u32, Reply)> {
    let mut out = Vec::new();
    while buf.len() >= HEADER_LEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < HEADER_LEN || len > buf.len() {
            break;
        }
        let msg_type = u16::from_ne_bytes([buf[4], buf[5]]);
        let flags = u16::from_ne_bytes([buf[6], buf[7]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let payload = &buf[HEADER_LEN..len];
        let reply = match msg_type {
            NLMSG_ERROR => parse_error(payload, flags),
            NLMSG_DONE => Reply::Done,
            RTM_NEWLINK => parse_link(payload).map_or(Reply::Other(msg_type), Reply::Link),
            RTM_DELLINK => parse_link(payload).map_or(Reply::Other(msg_type), Reply::LinkGone),
            RTM_NEWADDR => parse_address(payload).map_or(Reply::Other(msg_type), Reply::Address),
            super::fdb::RTM_NEWNEIGH => super::fdb::parse(payload).map_or(Reply::Other(msg_type), Reply::Neigh),
            super::fdb::RTM_DELNEIGH => super::fdb::parse(payload).map_or(Reply::Other(msg_type), Reply::NeighGone),
            other => Reply::Other(other),
        };
        out.push((seq, reply));
        buf = &buf[align(len).min(buf.len())..];
    }
    out
}

fn parse_error(payload: &[u8], flags: u16) -> Reply {
    if payload.len() < 4 {
        return Reply::Error { errno: libc::EPROTO, message: None };
    }
    let code = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
    if code == 0 {
        return Reply::Ack;
    }
    // The kernel sends a negative errno; anything else (a positive code, i32::MIN, whose
    // negation overflows) is a malformed reply.
    let errno = match code.checked_neg() {
        Some(errno) if (1..4096).contains(&errno) => errno,
        _ => libc::EPROTO,
    };
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 && payload.len() >= 4 + HEADER_LEN {
        // The echoed request: its header only when capped, else all of it.
        let echoed = if flags & NLM_F_CAPPED != 0 {
            HEADER_LEN
        } else {
            u32::from_ne_bytes([payload[4], payload[5], payload[6], payload[7]]) as usize
        };
        let mut attrs = payload.get(4 + align(echoed)..).unwrap_or(&[]);
        while attrs.len() >= 4 {
            let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
            let attr_type = u16::from_ne_bytes([attrs[2], attrs[3]]);
            if len < 4 || len > attrs.len() {
                break;
            }
            if attr_type == NLMSGERR_ATTR_MSG {
                let text = &attrs[4..len];
                let text = text.split(|&b| b == 0).next().unwrap_or(&[]);
                message = Some(String::from_utf8_lossy(text).into_owned());
            }
            attrs = &attrs[align(len).min(attrs.len())..];
        }
    }
    Reply::Error { errno, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }
    fn ne32(v: u32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    fn concat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn get_link_by_name() {
        let expected = concat(&[
            &ne32(40),  // nlmsg_len: 16 header + 16 ifinfomsg + 4 attr header + 4 value ("red\0")
            &ne16(18),  // RTM_GETLINK
            &ne16(0x5), // NLM_F_REQUEST | NLM_F_ACK
            &ne32(0),   // sequence (set by the socket)
            &ne32(0),   // port id
            &[0, 0],    // ifi_family AF_UNSPEC, pad
            &ne16(0),   // ifi_type
            &ne32(0),   // ifi_index
            &ne32(0),   // ifi_flags
            &ne32(0),   // ifi_change
            &ne16(8),   // rta_len
            &ne16(3),   // IFLA_IFNAME
            b"red\0",   // value, already 4-aligned
        ]);
        assert_eq!(get_link("red"), expected);
    }

    #[test]
    fn set_link_up_with_mtu_and_mac() {
        let mac: MacAddr = "02:00:00:00:0f:01".parse().unwrap();
        let expected = concat(&[
            &ne32(52),  // 16 + 16 + 8 (MTU) + 12 (6-byte MAC padded to 8)
            &ne16(19),  // RTM_SETLINK
            &ne16(0x5), // REQUEST | ACK
            &ne32(0),
            &ne32(0),
            &[0, 0],
            &ne16(0),
            &ne32(7), // ifi_index
            &ne32(1), // ifi_flags: IFF_UP
            &ne32(1), // ifi_change: IFF_UP
            &ne16(8),
            &ne16(4), // IFLA_MTU
            &ne32(9000),
            &ne16(10),                          // rta_len: 4 + 6 (padding not counted)
            &ne16(1),                           // IFLA_ADDRESS
            &[0x02, 0, 0, 0, 0x0f, 0x01, 0, 0], // MAC + 2 bytes of padding
        ]);
        assert_eq!(set_link(7, LinkChange { up: Some(true), mtu: Some(9000), mac: Some(mac), group: None }), expected);
    }

    #[test]
    fn set_link_without_changes_touches_no_flag() {
        let msg = set_link(3, LinkChange::default());
        assert_eq!(msg.len(), 32);
        assert_eq!(&msg[24..32], &[0u8; 8]); // flags and change mask both zero
    }

    #[test]
    fn move_to_namespace_by_fd() {
        let msg = move_link_to_netns(5, 9);
        assert_eq!(&msg[4..6], &ne16(19));
        assert_eq!(&msg[20..24], &ne32(5));
        assert_eq!(&msg[32..], &concat(&[&ne16(8), &ne16(28), &ne32(9)])[..]); // IFLA_NET_NS_FD
    }

    #[test]
    fn add_ipv4_address() {
        let expected = concat(&[
            &ne32(40),    // 16 + 8 ifaddrmsg + 8 IFA_LOCAL + 8 IFA_ADDRESS
            &ne16(20),    // RTM_NEWADDR
            &ne16(0x605), // REQUEST | ACK | EXCL | CREATE
            &ne32(0),
            &ne32(0),
            &[2, 24, 0, 0], // AF_INET, prefix 24, flags, scope universe
            &ne32(4),       // ifa_index
            &ne16(8),
            &ne16(2),
            &[192, 168, 15, 1], // IFA_LOCAL
            &ne16(8),
            &ne16(1),
            &[192, 168, 15, 1], // IFA_ADDRESS
        ]);
        assert_eq!(add_address(4, "192.168.15.1/24".parse().unwrap()), expected);
    }

    #[test]
    fn add_and_delete_default_route() {
        let r = RouteSpec { dst: None, via: "10.201.0.1".parse().unwrap() };
        let expected = concat(&[
            &ne32(36), // 16 + 12 rtmsg + 8 RTA_GATEWAY
            &ne16(24), // RTM_NEWROUTE
            &ne16(0x605),
            &ne32(0),
            &ne32(0),
            &[2, 0, 0, 0],   // AF_INET, dst_len 0 (default), src_len, tos
            &[254, 3, 0, 1], // table main, proto boot, scope universe, type unicast
            &ne32(0),        // rtm_flags
            &ne16(8),
            &ne16(5),
            &[10, 201, 0, 1], // RTA_GATEWAY
        ]);
        assert_eq!(route(&r, true), expected);
        let del = route(&r, false);
        assert_eq!(&del[4..6], &ne16(25));
        assert_eq!(&del[6..8], &ne16(0x5));
        assert_eq!(&del[16..24], &[2, 0, 0, 0, 254, 0, 255, 0]);
    }

    #[test]
    fn dump_addresses() {
        let expected = concat(&[
            &ne32(24),    // 16 header + 8 ifaddrmsg
            &ne16(22),    // RTM_GETADDR
            &ne16(0x305), // REQUEST | ACK | ROOT | MATCH (a dump)
            &ne32(0),
            &ne32(0),
            &[0, 0, 0, 0], // AF_UNSPEC: every family; prefix, flags, scope
            &ne32(0),      // every link
        ]);
        assert_eq!(get_addresses(), expected);
    }

    #[test]
    fn parse_address_replies() {
        let v4 = concat(&[
            &ne32(40),
            &ne16(20), // RTM_NEWADDR
            &ne16(0x2),
            &ne32(3),
            &ne32(0),
            &[2, 24, 0x80, 0], // AF_INET, /24, IFA_F_PERMANENT, scope universe
            &ne32(9),
            &ne16(8),
            &ne16(1),
            &[10, 22, 0, 255], // IFA_ADDRESS (the peer on point-to-point links)
            &ne16(8),
            &ne16(2),
            &[10, 22, 0, 5], // IFA_LOCAL: the address itself
        ]);
        let v6 = concat(&[
            &ne32(44),
            &ne16(20),
            &ne16(0x2),
            &ne32(3),
            &ne32(0),
            &[10, 64, 0, 0],
            &ne32(9),
            &ne16(20),
            &ne16(1),
            &[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5],
        ]);
        let bad_prefix = concat(&[
            &ne32(32),
            &ne16(20),
            &ne16(0x2),
            &ne32(3),
            &ne32(0),
            &[2, 33, 0, 0],
            &ne32(9),
            &ne16(8),
            &ne16(2),
            &[1, 2, 3, 4],
        ]);
        let truncated = concat(&[&ne32(20), &ne16(20), &ne16(0x2), &ne32(3), &ne32(0), &[2, 24, 0, 0]]);
        let replies = parse_replies(&concat(&[&v4, &v6, &bad_prefix, &truncated]));
        let cidr = |s: &str| s.parse::<IpCidr>().unwrap();
        assert_eq!(
            replies,
            vec![
                (3, Reply::Address(AddressInfo { index: 9, cidr: cidr("10.22.0.5/24") })),
                (3, Reply::Address(AddressInfo { index: 9, cidr: cidr("fd00::5/64") })),
                (3, Reply::Other(20)),
                (3, Reply::Other(20)),
            ]
        );
    }

    #[test]
    fn ipv6_route_with_destination() {
        let r = RouteSpec { dst: Some("fd00:1::/64".parse().unwrap()), via: "fd00::1".parse().unwrap() };
        let msg = route(&r, true);
        assert_eq!(&msg[16..18], &[10, 64]);
        assert_eq!(msg.len(), 16 + 12 + 20 + 20);
        assert_eq!(&msg[28..32], &concat(&[&ne16(20), &ne16(1)])[..]); // RTA_DST, 16-byte address
    }

    #[test]
    fn parse_ack_error_with_extended_message_and_link() {
        let mut buf = Vec::new();
        // An ACK for sequence 7.
        buf.extend(concat(&[&ne32(36), &ne16(2), &ne16(0x100), &ne32(7), &ne32(0), &ne32(0), &[0u8; 16]]));
        // EEXIST (-17) for sequence 8, capped, with NLMSGERR_ATTR_MSG "File exists here".
        let text = b"File exists here\0"; // 17 bytes -> attribute length 21, padded to 24
        let mut err = concat(&[&ne32(0), &ne16(2), &ne16(0x300), &ne32(8), &ne32(0)]);
        err.extend(ne32((-17i32) as u32));
        err.extend(concat(&[&ne32(32), &ne16(16), &ne16(5), &ne32(8), &ne32(0)])); // echoed header
        err.extend(concat(&[&ne16(21), &ne16(1)]));
        err.extend(text);
        err.resize(align(err.len()), 0);
        let len = err.len() as u32;
        err[0..4].copy_from_slice(&ne32(len));
        buf.extend(err);
        // A link reply for sequence 9 with index 42.
        buf.extend(concat(&[
            &ne32(32),
            &ne16(16),
            &ne16(0),
            &ne32(9),
            &ne32(0),
            &[0, 0],
            &ne16(1),
            &ne32(42),
            &ne32(0),
            &ne32(0),
        ]));
        assert_eq!(
            parse_replies(&buf),
            vec![
                (7, Reply::Ack),
                (8, Reply::Error { errno: 17, message: Some("File exists here".into()) }),
                (9, Reply::Link(LinkInfo { index: 42, ..LinkInfo::default() })),
            ]
        );
    }

    #[test]
    fn create_a_veth_pair() {
        let expected = concat(&[
            &ne32(88),    // 16 + 16 + 12 (IFLA_IFNAME "v0-sw") + 44 (IFLA_LINKINFO)
            &ne16(16),    // RTM_NEWLINK
            &ne16(0x605), // REQUEST | ACK | EXCL | CREATE
            &ne32(0),
            &ne32(0),
            &[0u8; 16], // ifinfomsg
            &ne16(10),
            &ne16(3),
            b"v0-sw\0",
            &[0, 0], // IFLA_IFNAME, padded
            &ne16(44),
            &ne16(18), // IFLA_LINKINFO (nested)
            &ne16(8),
            &ne16(1),
            b"veth", //   IFLA_INFO_KIND "veth"
            &ne16(32),
            &ne16(2), //   IFLA_INFO_DATA
            &ne16(28),
            &ne16(1),   //     VETH_INFO_PEER: ifinfomsg + attrs
            &[0u8; 16], //       the peer's ifinfomsg
            &ne16(7),
            &ne16(3),
            b"v0\0",
            &[0], //       IFLA_IFNAME "v0", padded
        ]);
        assert_eq!(expected.len(), 88);
        assert_eq!(create_veth("v0-sw", "v0"), expected);
    }

    #[test]
    fn silence_ipv6_on_a_link() {
        let msg = disable_ipv6_autoconf(3);
        assert_eq!(
            &msg[32..],
            &concat(&[&ne16(16), &ne16(26), &ne16(12), &ne16(10), &ne16(5), &ne16(8), &[1, 0, 0, 0]])[..]
        );
    }

    #[test]
    fn link_events_carry_name_flags_and_state() {
        let mut msg = concat(&[&ne32(0), &ne16(17), &ne16(0), &ne32(0), &ne32(0)]);
        msg.extend(concat(&[&[0, 0], &ne16(1), &ne32(12), &ne32(0x1_0043), &ne32(0)]));
        msg.extend(concat(&[&ne16(9), &ne16(3), b"eth1\0", &[0, 0, 0]]));
        msg.extend(concat(&[&ne16(5), &ne16(16), &[6, 0, 0, 0]]));
        // IFLA_LINKINFO { IFLA_INFO_KIND "tun" }
        msg.extend(concat(&[&ne16(12), &ne16(18), &ne16(8), &ne16(1), b"tun\0"]));
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&ne32(len));
        let replies = parse_replies(&msg);
        let Reply::LinkGone(info) = &replies[0].1 else { panic!("{replies:?}") };
        assert_eq!((info.index, info.name.as_deref(), info.operstate), (12, Some("eth1"), Some(6)));
        assert_eq!(info.kind.as_deref(), Some("tun"));
        assert!(info.is_running());
    }

    #[test]
    fn truncated_replies_stop_parsing_without_panicking() {
        let full = get_link("red");
        for cut in 0..full.len() {
            let _ = parse_replies(&full[..cut]);
        }
        let mut bogus = full.clone();
        bogus[0..4].copy_from_slice(&ne32(1000));
        assert!(parse_replies(&bogus).is_empty());
        assert_eq!(parse_replies(&concat(&[&ne32(17), &ne16(2), &ne16(0), &ne32(1), &ne32(0), &[1]])).len(), 1);
    }

    #[test]
    fn error_codes_that_are_no_errno_are_a_protocol_error() {
        for code in [i32::MIN, 5, -5000] {
            let mut msg = 20u32.to_ne_bytes().to_vec();
            msg.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
            msg.extend_from_slice(&[0; 10]); // flags, sequence, port id
            msg.extend_from_slice(&code.to_ne_bytes());
            assert_eq!(parse_replies(&msg), vec![(0, Reply::Error { errno: libc::EPROTO, message: None })], "{code}");
        }
    }
}
