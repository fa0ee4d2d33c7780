//! Pure builders and a parser for what EVPN needs from rtnetlink: kernel bridges and VXLAN
//! devices, enslaving a link to a bridge, and bridge FDB entries (`ndmsg` in family
//! `AF_BRIDGE`: what `bridge fdb` shows and what FRR's zebra installs).
//!
//! `ndmsg` = family u8, pad u8, pad u16, ifindex i32, state u16, flags u8, type u8 (12 bytes);
//! then attributes (`NDA_*`).

use std::net::IpAddr;

use vswitchd_dataplane::wire::MacAddr;

use super::message::{
    Builder, IFLA_IFNAME, IFLA_INFO_DATA, IFLA_INFO_KIND, IFLA_LINKINFO, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    RTM_SETLINK, align, ifinfomsg, ip_bytes, name_value,
};

pub(crate) const RTM_NEWNEIGH: u16 = 28;
pub(crate) const RTM_DELNEIGH: u16 = 29;
const RTM_GETNEIGH: u16 = 30;
const RTM_NEWLINK: u16 = 16;
const NLM_F_REPLACE: u16 = 0x100;

const AF_BRIDGE: u8 = 7;

const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_VNI: u16 = 7;
const NDA_MASTER: u16 = 9;

/// `NTF_SELF`: the entry is the device's own (a VXLAN device's remote table).
pub const NTF_SELF: u8 = 0x02;
/// `NTF_MASTER`: the entry is in the bridge the port belongs to.
pub const NTF_MASTER: u8 = 0x04;
/// `NTF_EXT_LEARNED`: installed by a control plane (zebra's EVPN routes), not learned.
pub const NTF_EXT_LEARNED: u8 = 0x10;
/// `NUD_NOARP`: a static entry (`bridge fdb add ... static`).
pub const NUD_NOARP: u16 = 0x40;
/// `NUD_PERMANENT`: a permanent entry.
pub const NUD_PERMANENT: u16 = 0x80;

const IFLA_MASTER: u16 = 10;
const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_LEARNING: u16 = 7;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_VXLAN_LOCAL6: u16 = 17;

/// One bridge FDB entry, as a neighbour message in family `AF_BRIDGE` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    /// The port (or VXLAN device) it is on.
    pub ifindex: u32,
    /// `NUD_*` state.
    pub state: u16,
    /// `NTF_*` flags.
    pub flags: u8,
    /// The MAC address.
    pub mac: MacAddr,
    /// On a VXLAN device: the remote VTEP behind which `mac` is (`dst`).
    pub dst: Option<IpAddr>,
    /// The bridge, when the entry is the bridge's.
    pub master: Option<u32>,
    /// On a VXLAN device: the VNI, when given.
    pub vni: Option<u32>,
}

impl FdbEntry {
    /// Installed by a control plane (`extern_learn`).
    pub fn extern_learned(&self) -> bool {
        self.flags & NTF_EXT_LEARNED != 0
    }
}

fn ndmsg(ifindex: u32, state: u16, flags: u8) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = AF_BRIDGE;
    h[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    h[8..10].copy_from_slice(&state.to_ne_bytes());
    h[10] = flags;
    h
}

/// Parses the payload of an `RTM_NEWNEIGH`/`RTM_DELNEIGH` message; `None` for anything but a
/// well-formed `AF_BRIDGE` entry with a MAC address.
pub fn parse(payload: &[u8]) -> Option<FdbEntry> {
    if payload.len() < 12 || payload[0] != AF_BRIDGE {
        return None;
    }
    let ifindex = u32::from_ne_bytes(payload[4..8].try_into().ok()?);
    let state = u16::from_ne_bytes([payload[8], payload[9]]);
    let flags = payload[10];
    let (mut mac, mut dst, mut master, mut vni) = (None, None, None, None);
    let mut attrs = &payload[12..];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let attr_type = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        let value = &attrs[4..len];
        match (attr_type, value.len()) {
            (NDA_LLADDR, 6) => mac = Some(MacAddr(value.try_into().ok()?)),
            (NDA_DST, 4) => dst = Some(IpAddr::from(<[u8; 4]>::try_from(value).ok()?)),
            (NDA_DST, 16) => dst = Some(IpAddr::from(<[u8; 16]>::try_from(value).ok()?)),
            (NDA_MASTER, 4) => master = Some(u32::from_ne_bytes(value.try_into().ok()?)),
            (NDA_VNI, 4) => vni = Some(u32::from_ne_bytes(value.try_into().ok()?)),
            _ => {}
        }
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    Some(FdbEntry { ifindex, state, flags, mac: mac?, dst, master, vni })
}

/// Asks for every bridge FDB entry of the namespace (a dump).
pub fn get_fdb() -> Vec<u8> {
    Builder::new(RTM_GETNEIGH, NLM_F_DUMP, &ndmsg(0, 0, 0)).finish()
}

/// Adds (or replaces) a static entry for `mac` on bridge port `ifindex`, in its bridge
/// (`bridge fdb replace MAC dev PORT master static`).
pub fn add_static(ifindex: u32, mac: MacAddr) -> Vec<u8> {
    Builder::new(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, &ndmsg(ifindex, NUD_NOARP, NTF_MASTER))
        .attr(NDA_LLADDR, &mac.0)
        .finish()
}

/// Deletes the entry for `mac` on bridge port `ifindex` from its bridge.
pub fn delete(ifindex: u32, mac: MacAddr) -> Vec<u8> {
    Builder::new(RTM_DELNEIGH, 0, &ndmsg(ifindex, 0, NTF_MASTER)).attr(NDA_LLADDR, &mac.0).finish()
}

/// Creates a kernel bridge named `name`.
pub fn create_bridge(name: &str) -> Vec<u8> {
    Builder::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfomsg(0, 0, 0))
        .attr(IFLA_IFNAME, &name_value(name))
        .nest(IFLA_LINKINFO, |b| {
            b.attr(IFLA_INFO_KIND, b"bridge");
        })
        .finish()
}

/// Creates a kernel VXLAN device `name` for `vni` with source address `local`, on UDP port
/// `port`, not learning (`ip link add NAME type vxlan id VNI local LOCAL dstport PORT
/// nolearning`).
pub fn create_vxlan(name: &str, vni: u32, local: IpAddr, port: u16) -> Vec<u8> {
    Builder::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifinfomsg(0, 0, 0))
        .attr(IFLA_IFNAME, &name_value(name))
        .nest(IFLA_LINKINFO, |b| {
            b.attr(IFLA_INFO_KIND, b"vxlan").nest(IFLA_INFO_DATA, |b| {
                b.attr(IFLA_VXLAN_ID, &vni.to_ne_bytes());
                let local_attr = if local.is_ipv4() { IFLA_VXLAN_LOCAL } else { IFLA_VXLAN_LOCAL6 };
                b.attr(local_attr, &ip_bytes(local));
                b.attr(IFLA_VXLAN_LEARNING, &[0]);
                b.attr(IFLA_VXLAN_PORT, &port.to_be_bytes());
            });
        })
        .finish()
}

/// Makes link `index` a port of bridge `master`.
pub fn set_master(index: u32, master: u32) -> Vec<u8> {
    Builder::new(RTM_SETLINK, 0, &ifinfomsg(index, 0, 0)).attr(IFLA_MASTER, &master.to_ne_bytes()).finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::message::{Reply, parse_replies};

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }
    fn ne32(v: u32) -> [u8; 4] {
        v.to_ne_bytes()
    }

    /// The remote-VTEP entry zebra installs for a type-3 route, as the kernel reports it
    /// (`00:00:00:00:00:00 dst 10.0.100.2 self permanent` on the VXLAN device, index 7).
    fn flood_entry_message() -> Vec<u8> {
        [
            &ne32(16 + 12 + 12 + 8 + 8)[..], // nlmsg_len
            &ne16(RTM_NEWNEIGH),
            &ne16(0),
            &ne32(0),
            &ne32(0),
            &[AF_BRIDGE, 0, 0, 0], // ndm_family, pads
            &ne32(7),              // ndm_ifindex
            &ne16(NUD_PERMANENT),  // ndm_state
            &[NTF_SELF, 0],        // ndm_flags, ndm_type
            &ne16(10),             // NDA_LLADDR
            &ne16(NDA_LLADDR),
            &[0, 0, 0, 0, 0, 0, 0, 0], // MAC + padding
            &ne16(8),
            &ne16(NDA_DST),
            &[10, 0, 100, 2],
            &ne16(8),
            &ne16(NDA_VNI),
            &ne32(500),
        ]
        .concat()
    }

    #[test]
    fn parses_a_flood_entry() {
        let replies = parse_replies(&flood_entry_message());
        let [(_, Reply::Neigh(e))] = replies.as_slice() else { panic!("{replies:?}") };
        assert_eq!(e.ifindex, 7);
        assert_eq!(e.mac, MacAddr([0; 6]));
        assert_eq!(e.dst, Some("10.0.100.2".parse().unwrap()));
        assert_eq!(e.vni, Some(500));
        assert!(!e.extern_learned());
    }

    #[test]
    fn rejects_truncated_and_foreign_messages() {
        let msg = flood_entry_message();
        assert!(parse(&msg[16..20]).is_none());
        let mut inet = msg[16..].to_vec();
        inet[0] = 2; // AF_INET: // an ARP entry, not the bridge's
        assert!(parse(&inet).is_none());
        // Without its MAC attribute, no entry.
        let mut no_mac = msg[16..28].to_vec();
        no_mac.extend_from_slice(&msg[40..]);
        assert!(parse(&no_mac).is_none());
        // An attribute claiming more than is there ends the walk.
        let mut bad = msg[16..].to_vec();
        bad[12] = 200;
        assert!(parse(&bad).is_none());
    }

    #[test]
    fn static_entry_on_a_bridge_port() {
        let mac = MacAddr([0x02, 0, 0, 0, 0, 9]);
        let expected = [
            &ne32(16 + 12 + 12)[..],
            &ne16(RTM_NEWNEIGH),
            &ne16(0x1 | 0x4 | 0x400 | 0x100), // REQUEST | ACK | CREATE | REPLACE
            &ne32(0),
            &ne32(0),
            &[AF_BRIDGE, 0, 0, 0],
            &ne32(12),
            &ne16(NUD_NOARP),
            &[NTF_MASTER, 0],
            &ne16(10),
            &ne16(NDA_LLADDR),
            &[2, 0, 0, 0, 0, 9, 0, 0],
        ]
        .concat();
        assert_eq!(add_static(12, mac), expected);
        let del = delete(12, mac);
        assert_eq!(u16::from_ne_bytes([del[4], del[5]]), RTM_DELNEIGH);
        assert_eq!(
            &del[16..],
            &[&[AF_BRIDGE, 0, 0, 0][..], &ne32(12), &ne16(0), &[NTF_MASTER, 0], &expected[28..]].concat()[..]
        );
    }

    #[test]
    fn vxlan_device_request() {
        let msg = create_vxlan("vx5", 5, "10.0.0.1".parse().unwrap(), 4790);
        // ifinfomsg, IFNAME "vx5\0", then LINKINFO { KIND "vxlan", DATA { ID, LOCAL, LEARNING, PORT } }.
        let expected_tail = [
            &ne16(8)[..],
            &ne16(IFLA_IFNAME),
            b"vx5\0",
            &ne16(4 + 12 + 36),
            &ne16(IFLA_LINKINFO),
            &ne16(9),
            &ne16(IFLA_INFO_KIND),
            b"vxlan\0\0\0", // "vxlan" and padding
            &ne16(36),
            &ne16(IFLA_INFO_DATA),
            &ne16(8),
            &ne16(IFLA_VXLAN_ID),
            &ne32(5),
            &ne16(8),
            &ne16(IFLA_VXLAN_LOCAL),
            &[10, 0, 0, 1],
            &ne16(5),
            &ne16(IFLA_VXLAN_LEARNING),
            &[0, 0, 0, 0],
            &ne16(6),
            &ne16(IFLA_VXLAN_PORT),
            &[0x12, 0xb6, 0, 0], // 4790, network order
        ]
        .concat();
        assert_eq!(&msg[32..], &expected_tail[..]);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize, msg.len());
    }
}
