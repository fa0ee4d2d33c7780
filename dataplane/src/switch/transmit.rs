//! The transmit paths: to a port's endpoint, through a bond's choice of member, into a VXLAN
//! tunnel (one datagram per remote, or one UDP GSO send per batch of segments), with software
//! segmentation and checksum completion for ports that take no offload metadata.

use super::*;
use crate::trace::{EgressAction, TraceEvent, TraceLog, record};

/// How a frame with offload metadata `offload` is handled toward a port that carries such
/// metadata (`carries`: a TAP with offloads, a tunnel's UDP GSO) or not.
fn offload_handling(offload: &VnetHdr, carries: bool) -> &'static str {
    match (offload.is_gso(), offload.needs_csum(), carries) {
        (false, false, _) => "none: a plain frame",
        (true, _, true) => "super-frame passed on whole (the port takes segmentation offload)",
        (true, _, false) => "super-frame cut into segments in software",
        (false, true, true) => "partial checksum passed on (the port completes it)",
        (false, true, false) => "partial checksum completed in software",
    }
}

/// Writes the frame in `buf` to port `out`: to its one endpoint, or to the bond member(s) the
/// bond picks. The frame loses the `class.strip` tag bytes at offset 12 and gains whatever tag
/// the port's VLAN mode pushes. A flood skips ports outside the frame's VLAN silently; a
/// unicast to one is a drop.
pub(super) fn transmit(
    state: &mut SwitchState,
    endpoints: &mut [Endpoint],
    out: PortId,
    buf: &mut FrameBuf,
    class: &Classified,
    flooding: bool,
    scratch: &mut Scratch,
) {
    transmit_traced(state, endpoints, out, buf, class, flooding, scratch, None)
}

/// Counts a drop at egress port `port`, or with a trace, records it instead.
fn drop_at(port: &mut PortState, trace: Option<&mut TraceLog>, reason: DropReason) {
    match trace {
        Some(log) => log.egress(port.id, EgressAction::Dropped(reason)),
        None => port.counters.drops.add(reason),
    }
}

/// [`transmit`], or with `trace`, the same steps recorded there instead of sending or counting
/// anything (no endpoint is touched: `endpoints` may be empty); a bond's choice is made on a
/// copy of the bond, so a balance-rr turn is not taken.
#[allow(clippy::too_many_arguments)]
pub(super) fn transmit_traced(
    state: &mut SwitchState,
    endpoints: &mut [Endpoint],
    out: PortId,
    buf: &mut FrameBuf,
    class: &Classified,
    flooding: bool,
    scratch: &mut Scratch,
    mut trace: Option<&mut TraceLog>,
) {
    if state.ports[out.index()].handed_off {
        if let Some(log) = trace {
            return log.egress(out, EgressAction::HandedOff);
        }
        let sent = state.handoff.as_mut().is_some_and(|h| h.send(out, class, flooding, buf));
        if !sent {
            state.ports[out.index()].counters.drops.add(DropReason::NoRoom);
        }
        return;
    }
    let egress = state.bridge.egress(out, buf.frame(), &buf.offload, class);
    let port = &mut state.ports[out.index()];
    let skip = |trace: Option<&mut TraceLog>, why| {
        if let Some(log) = trace {
            log.egress(out, EgressAction::Skipped(why));
        }
    };
    let egress = match egress {
        Err(DropReason::StpDiscarding) if flooding => return skip(trace, "spanning tree: not forwarding"),
        Err(reason) => return drop_at_tapped(port, trace, reason, buf.frame(), class, scratch.now),
        Ok(Egress::NotCarried) if flooding => return skip(trace, "not in the frame's VLAN"),
        Ok(Egress::NotCarried) => {
            return drop_at_tapped(port, trace, DropReason::VlanNotAllowed, buf.frame(), class, scratch.now);
        }
        Ok(egress) => egress,
    };
    record(&mut trace, || TraceEvent::Egress { port: out, action: EgressAction::Vlan(egress) });
    if trace.is_none() && !port.taps.is_empty() {
        crate::capture::tap_all(&port.taps, crate::capture::Direction::Outbound, None, buf.frame(), class, scratch.now);
    }
    if port.vxlan.is_some() {
        if flooding {
            if let Some(mac) = suppressible(state, out, buf.frame(), class, scratch) {
                if let Some(log) = trace {
                    return log.egress(out, EgressAction::Suppressed(mac));
                }
                answer_request(state, out, mac, buf.frame(), class, scratch);
                return;
            }
        }
        return send_vxlan(&mut state.ports[out.index()], endpoints, buf, class, scratch, trace);
    }
    let choice = match port.bond.as_mut() {
        None => Transmit::One(0),
        // The member the frame would take, without taking a balance-rr turn.
        Some(bond) if trace.is_some() => bond.clone().transmit(buf.frame()),
        Some(bond) => bond.transmit(buf.frame()),
    };
    match choice {
        Transmit::Nowhere => drop_at(port, trace, DropReason::NoBondMember),
        Transmit::One(member) => {
            if let (Some(log), Some(bond)) = (trace.as_deref_mut(), port.bond.as_ref()) {
                let name = bond.members().get(member).map(|m| m.name.clone());
                log.egress(out, EgressAction::BondMember(name));
            }
            send_on(port, endpoints, member, buf, class, egress, scratch, trace)
        }
        Transmit::All => {
            record(&mut trace, || TraceEvent::Egress { port: out, action: EgressAction::BondMember(None) });
            for member in 0..port.endpoints.len() {
                if port.bond.as_ref().is_some_and(|b| b.members()[member].usable()) {
                    send_on(port, endpoints, member, buf, class, egress, scratch, trace.as_deref_mut());
                }
            }
        }
    }
}

/// Counts a frame port `port` refuses on egress, and shows it to the captures of drops.
/// [`drop_at`] for a frame the bridge refused at egress: outside a trace it is also shown to
/// the port's captures that asked for drops.
fn drop_at_tapped(
    port: &mut PortState,
    trace: Option<&mut TraceLog>,
    reason: DropReason,
    frame: &[u8],
    class: &Classified,
    now: Instant,
) {
    match trace {
        Some(log) => log.egress(port.id, EgressAction::Dropped(reason)),
        None => egress_drop(port, reason, frame, class, now),
    }
}

fn egress_drop(port: &mut PortState, reason: DropReason, frame: &[u8], class: &Classified, now: Instant) {
    port.counters.drops.add(reason);
    if !port.taps.is_empty() {
        crate::capture::tap_all(&port.taps, crate::capture::Direction::Outbound, Some(reason), frame, class, now);
    }
}

/// Encapsulates the frame for VXLAN port `port`: the VNI comes from the frame's VLAN, the port
/// tag is not part of the inner frame, and the datagram goes to the remote the destination MAC
/// was learned behind, or to every configured remote. A super-frame is cut into segments first.
fn send_vxlan(
    port: &mut PortState,
    endpoints: &mut [Endpoint],
    buf: &mut FrameBuf,
    class: &Classified,
    scratch: &mut Scratch,
    trace: Option<&mut TraceLog>,
) {
    let Some(vxlan) = port.vxlan.as_mut() else { return };
    let Some(vni) = vxlan.vni_for(class.vlan) else {
        return drop_at(port, trace, DropReason::VxlanNoVni);
    };
    let destination = vxlan.destination(buf.frame(), class.vlan);
    if let Some(log) = trace {
        let targets = match destination {
            Some(remote) => remote..remote + 1,
            None => vxlan.flood_remotes(),
        };
        let remotes = targets.filter_map(|r| vxlan.remote_socket(r)).collect();
        log.egress(port.id, EgressAction::Vxlan { vni, remotes, learned: destination.is_some() });
        log.egress(port.id, EgressAction::Offload(offload_handling(&buf.offload, true)));
        let len = buf.len() - class.strip;
        return log.egress(port.id, EgressAction::WouldSend { len, member: None });
    }
    let io = endpoints[port.endpoints[0]].io.as_mut();
    scratch.sends += destination.map_or(vxlan.flood_remotes().len(), |_| 1).max(1);
    let flow = crate::bond::flow_hash(crate::bond::HashPolicy::Layer34, buf.frame());
    let header = crate::wire::vxlan::header(vni);
    let counters = &mut port.counters;
    let out = port.id;
    if buf.offload.is_gso() {
        // A super-frame whose segments would not fit the path is refused as a whole, as the
        // kernel does (its segments fitting is all that counts, not the super-frame's size).
        // (TCP is cut at the port's MTU if its segment size is bigger.)
        let segment = gso::segment_packet_len(buf.frame(), &buf.offload).map(|s| s.min(port.info.mtu as usize));
        let limit = segment.and_then(|_| path_mtu(io, vxlan, destination, None, scratch.now));
        if let (Some(segment), Some(limit)) = (segment, limit) {
            if segment > limit {
                counters.drops.add(DropReason::VxlanTooBig);
                return reply_too_big(out, vxlan, buf.frame(), class, limit, scratch);
            }
        }
    }
    let mut encapsulate = |frame: &[u8], vxlan: &mut Vxlan, counters: &mut PortCounters| {
        let (head, rest) = (&frame[..12], &frame[12 + class.strip..]);
        let inner_len = frame.len() - class.strip;
        let parts = [IoSlice::new(&header), IoSlice::new(head), IoSlice::new(rest)];
        send_encapsulated(io, &parts, inner_len, destination, flow, vxlan, counters)
    };
    if buf.offload.is_gso() {
        // Segments, each behind its VXLAN header, back to back: one UDP GSO send per group.
        let strip = class.strip;
        let (segment_buf, datagrams) = (&mut scratch.segment, &mut scratch.datagrams);
        let mut flush =
            |data: &[u8], size: usize, count: usize, inner: usize, vxlan: &mut Vxlan, counters: &mut PortCounters| {
                let targets = match destination {
                    Some(remote) => remote..remote + 1,
                    None => vxlan.flood_remotes(),
                };
                for remote in targets {
                    let Some(dest) = vxlan.remote_socket(remote) else { continue };
                    match io.send_datagrams_to(data, size, dest, flow) {
                        Ok(()) => {
                            vxlan.count_tx_batch(remote, count, inner);
                            counters.tx_frames += count as u64;
                            counters.tx_bytes += inner as u64;
                        }
                        Err(e) => counters.drops.add_many(tunnel_send_drop(&e), count as u64),
                    }
                }
            };
        let (mut len, mut count, mut size, mut inner) = (0usize, 0usize, 0usize, 0usize);
        let mtu = port.info.mtu;
        let result = gso::segment(buf.frame(), &buf.offload, mtu, segment_buf, |segment| {
            let datagram = crate::wire::vxlan::HEADER_LEN + segment.len() - strip;
            if count > 0 && (len + datagram > MAX_BATCH_BYTES || count == MAX_BATCH_DATAGRAMS || datagram > size) {
                flush(&datagrams[..len], size, count, inner, vxlan, counters);
                (len, count, inner) = (0, 0, 0);
            }
            if count == 0 {
                size = datagram;
            }
            let out = &mut datagrams[len..len + datagram];
            out[..8].copy_from_slice(&header);
            out[8..20].copy_from_slice(&segment[..12]);
            out[20..].copy_from_slice(&segment[12 + strip..]);
            len += datagram;
            count += 1;
            inner += datagram - crate::wire::vxlan::HEADER_LEN;
        });
        if count > 0 {
            flush(&datagrams[..len], size, count, inner, vxlan, counters);
        }
        if let Err(e) = result {
            counters.drops.add(segmentation_drop(e));
        }
        return;
    }
    if buf.offload.needs_csum() {
        let offload = buf.offload;
        let Some(done) = offload.complete_checksum(buf.frame_mut()) else {
            return counters.drops.add(DropReason::BadOffload);
        };
        buf.offload = done;
    }
    if encapsulate(buf.frame(), vxlan, counters) {
        // The underlay refused it as too big: tell the sender the path MTU, measured again
        // unless what was measured already explains the refusal.
        let packet = buf.len().saturating_sub(ethernet::HEADER_LEN + class.strip);
        let known = vxlan.path_mtu.get(scratch.now).filter(|&mtu| mtu < packet);
        let io = endpoints[port.endpoints[0]].io.as_mut();
        let measured = known.or_else(|| path_mtu(io, vxlan, destination, Some(packet), scratch.now));
        // (A path that would take it after all says nothing the sender could use.)
        if let Some(limit) = measured.filter(|&mtu| mtu < packet) {
            reply_too_big(out, vxlan, buf.frame(), class, limit, scratch);
        }
    }
}

/// The path MTU (of inner IP packet) toward `destination` (or the first flood remote): as
/// measured within [`crate::tunnel_mtu::PATH_MTU_EXPIRY`], else measured now on the tunnel
/// port — and always measured anew when `refused` (a packet of that size was just refused, so
/// a measurement that would let it through is stale).
fn path_mtu(
    io: &mut dyn Port,
    vxlan: &mut Vxlan,
    destination: Option<usize>,
    refused: Option<usize>,
    now: Instant,
) -> Option<usize> {
    if refused.is_none() {
        if let Some(mtu) = vxlan.path_mtu.get(now) {
            return Some(mtu);
        }
    }
    let remote = match destination {
        Some(remote) => remote,
        None => vxlan.flood_remotes().next()?,
    };
    let dest = vxlan.remote_socket(remote)?;
    let outer = io.path_mtu(dest)?;
    let inner = crate::vxlan::inner_room(outer as u32, dest.is_ipv6()).saturating_sub(ethernet::HEADER_LEN);
    vxlan.path_mtu.set(inner, now);
    Some(inner)
}

/// The untagged view of `frame` (less its `strip` tag bytes at offset 12): the frame itself,
/// or its first `tmp.len()` bytes copied into `tmp` without the tag.
fn untagged<'a>(frame: &'a [u8], strip: usize, tmp: &'a mut [u8]) -> &'a [u8] {
    if strip == 0 || frame.len() < 12 + strip {
        return frame;
    }
    let len = (frame.len() - strip).min(tmp.len());
    tmp[..12].copy_from_slice(&frame[..12]);
    tmp[12..len].copy_from_slice(&frame[12 + strip..len + strip]);
    &tmp[..len]
}

/// The VLAN tag a frame injected as received on tunnel port `vxlan` needs to land in `class`'s
/// VLAN: a port with a VNI per VLAN is a trunk; one with a single VNI takes frames untagged.
fn injected_tag(vxlan: &Vxlan, class: &Classified) -> Option<crate::VlanId> {
    let per_vlan = matches!(vxlan.config().vnis, crate::vxlan::VniMap::PerVlan(_));
    (per_vlan && class.vlan != crate::VlanId::NONE).then_some(class.vlan)
}

/// Queues the ICMP "fragmentation needed" / ICMPv6 "packet too big" answer to `frame`, too big
/// for tunnel port `out`'s path of `mtu` bytes, if one is due (see
/// [`crate::wire::icmp::too_big_reply`]) and the sender's rate allows. The reply enters the
/// bridge as if it came out of the tunnel, as the kernel's vxlan device injects its own,
/// and the bridge takes it to the sender.
fn reply_too_big(out: PortId, vxlan: &mut Vxlan, frame: &[u8], class: &Classified, mtu: usize, scratch: &mut Scratch) {
    let Scratch { untag, replies, reply_frames, now, .. } = scratch;
    if replies.len() >= reply_frames.len() {
        return;
    }
    let view = untagged(frame, class.strip, untag);
    let Some(sender) = crate::tunnel_mtu::ip_source(view) else { return };
    let Some(len) = crate::wire::icmp::too_big_reply(view, mtu, &mut reply_frames[replies.len()]) else { return };
    let allowed = vxlan.reply_limiter.allow(sender, *now);
    vxlan.count_too_big_reply(allowed);
    if allowed {
        replies.push(PendingReply { port: out, tag: injected_tag(vxlan, class), len });
    }
}

/// The MAC to answer locally an ARP request or neighbour solicitation flooded toward tunnel
/// port `out` with `arp_suppress`, when the address asked for is known and its MAC was learned
/// behind `out` (and there is room for the answer): the answer enters the bridge as if it came
/// out of the tunnel ([`answer_request`]), and the request does not go to the remotes.
fn suppressible(
    state: &SwitchState,
    out: PortId,
    frame: &[u8],
    class: &Classified,
    scratch: &mut Scratch,
) -> Option<MacAddr> {
    if !state.ports[out.index()].vxlan.as_ref().is_some_and(|v| v.arp_suppress()) {
        return None;
    }
    let request = neighbour_request(frame, class.strip, &mut scratch.untag)?;
    let mac = state.neighbours.lookup(class.vlan, request.target(), scratch.now)?;
    if state.bridge.fdb().lookup(class.vlan, mac) != Some(out) || scratch.replies.len() >= scratch.reply_frames.len() {
        return None;
    }
    Some(mac)
}

/// Queues the local answer [`suppressible`] found (`mac`) to the request `frame`, to enter the
/// bridge as if it came out of tunnel port `out`.
fn answer_request(
    state: &mut SwitchState,
    out: PortId,
    mac: MacAddr,
    frame: &[u8],
    class: &Classified,
    scratch: &mut Scratch,
) {
    let Some(request) = neighbour_request(frame, class.strip, &mut scratch.untag) else { return };
    let Some(vxlan) = state.ports[out.index()].vxlan.as_mut() else { return };
    let len = request.answer(mac, &mut scratch.reply_frames[scratch.replies.len()]);
    scratch.replies.push(PendingReply { port: out, tag: injected_tag(vxlan, class), len });
    vxlan.count_suppressed();
}

/// The ARP request or neighbour solicitation `frame` (with `strip` tag bytes) is, if any.
pub(super) fn neighbour_request(frame: &[u8], strip: usize, tmp: &mut [u8]) -> Option<crate::neigh::Request> {
    let view = neighbour_view(frame, strip, tmp)?;
    crate::neigh::Request::parse(view)
}

/// The untagged view of `frame` if it may be ARP or neighbour discovery (a cheap test first).
pub(super) fn neighbour_view<'a>(frame: &'a [u8], strip: usize, tmp: &'a mut [u8]) -> Option<&'a [u8]> {
    may_be_neighbour_message(frame, strip).then(|| untagged(frame, strip, tmp))
}

/// Whether `frame` (with `strip` tag bytes) may be ARP or neighbour discovery: two byte
/// compares, nothing copied.
pub(super) fn may_be_neighbour_message(frame: &[u8], strip: usize) -> bool {
    let Some(ethertype) = frame.get(12 + strip..14 + strip) else { return false };
    ethertype == [0x08, 0x06]
        || (ethertype == [0x86, 0xdd] && frame.get(20 + strip) == Some(&crate::wire::icmp::IPPROTO_ICMPV6))
}

const UNSPECIFIED: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0));

/// Sends one encapsulated datagram (`parts`, carrying `inner_len` bytes of inner frame) to
/// `destination`, the remote its inner destination was learned behind, or else to every
/// configured remote (head-end replication; learned remotes get unicast only), as many per
/// `sendmmsg` as [`crate::sys::SEND_TO_EACH_MAX`]. Each copy is counted, sent or dropped.
/// Returns whether a copy was refused as too big for the path.
fn send_encapsulated(
    io: &mut dyn Port,
    parts: &[IoSlice<'_>],
    inner_len: usize,
    destination: Option<usize>,
    flow: u64,
    vxlan: &mut Vxlan,
    counters: &mut PortCounters,
) -> bool {
    let mut too_big = false;
    let mut remotes = [0usize; crate::sys::SEND_TO_EACH_MAX];
    let mut dests = [UNSPECIFIED; crate::sys::SEND_TO_EACH_MAX];
    let mut count = 0;
    let candidates = match destination {
        Some(remote) => remote..remote + 1,
        None => vxlan.flood_remotes(),
    };
    for remote in candidates {
        let Some(dest) = vxlan.remote_socket(remote) else { continue };
        (remotes[count], dests[count]) = (remote, dest);
        count += 1;
        if count == dests.len() {
            too_big |= send_to_targets(io, parts, inner_len, &remotes, &dests, flow, vxlan, counters);
            count = 0;
        }
    }
    too_big | send_to_targets(io, parts, inner_len, &remotes[..count], &dests[..count], flow, vxlan, counters)
}

/// Sends `parts` to each of `dests` (the addresses of remotes `remotes`) in one call where the
/// port can, counting each copy; a copy the kernel refuses is counted as a drop and the rest
/// still go. Returns whether a copy was refused as too big for the path.
#[allow(clippy::too_many_arguments)]
fn send_to_targets(
    io: &mut dyn Port,
    parts: &[IoSlice<'_>],
    inner_len: usize,
    remotes: &[usize],
    dests: &[SocketAddr],
    flow: u64,
    vxlan: &mut Vxlan,
    counters: &mut PortCounters,
) -> bool {
    let mut too_big = false;
    let mut next = 0;
    while next < dests.len() {
        match io.send_to_each(parts, &dests[next..], flow) {
            Ok(sent) if sent > 0 => {
                for &remote in &remotes[next..next + sent] {
                    vxlan.count_tx(remote, inner_len);
                    counters.tx_frames += 1;
                    counters.tx_bytes += inner_len as u64;
                }
                next += sent;
            }
            Ok(_) => {
                counters.drops.add(DropReason::NoRoom);
                next += 1;
            }
            Err(e) => {
                let reason = tunnel_send_drop(&e);
                too_big |= reason == DropReason::VxlanTooBig;
                counters.drops.add(reason);
                next += 1;
            }
        }
    }
    too_big
}

/// The drop reason for a datagram the underlay refused.
fn tunnel_send_drop(error: &io::Error) -> DropReason {
    match error.raw_os_error() {
        Some(libc::EMSGSIZE) => DropReason::VxlanTooBig,
        Some(libc::EAGAIN | libc::ENOBUFS) => DropReason::NoRoom,
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ENETDOWN) => DropReason::LinkDown,
        _ => DropReason::TxError,
    }
}

/// The most bytes of VXLAN datagrams handed to one UDP GSO send (the UDP payload limit, with
/// room to spare).
const MAX_BATCH_BYTES: usize = 65_000;
/// The most datagrams in one UDP GSO send (the kernel's limit is 64 on older kernels).
const MAX_BATCH_DATAGRAMS: usize = 64;

/// Buffers the transmit path builds frames in, allocated once.
#[derive(Debug)]
pub(super) struct Scratch {
    /// One segment of a super-frame being cut.
    segment: Box<[u8]>,
    /// Encapsulated segments laid back to back for one batched send.
    datagrams: Box<[u8]>,
    /// Endpoints whose ports queued frames this batch (capacity: every endpoint).
    pub(super) to_flush: Vec<usize>,
    /// Sends made this turn.
    pub(super) sends: usize,
    /// The time of this turn.
    pub(super) now: Instant,
    /// Untagged copies of frames the reply builders read.
    pub(super) untag: Box<[u8]>,
    /// Replies (too-big, neighbour answers) to inject after the batch, as received on `port`;
    /// each one's bytes are in the `reply_frames` slot of its index.
    pub(super) replies: Vec<PendingReply>,
    pub(super) reply_frames: Vec<[u8; crate::wire::icmp::REPLY_MAX]>,
}

/// Replies a batch may queue; more are not sent (a too-big reply, or the request is flooded).
const REPLIES: usize = 32;

/// A reply waiting in [`Scratch::reply_frames`] to enter the bridge.
#[derive(Debug, Clone, Copy)]
pub(super) struct PendingReply {
    /// The tunnel port it enters by.
    pub(super) port: PortId,
    /// The VLAN tag it needs on that port.
    pub(super) tag: Option<crate::VlanId>,
    /// Its length.
    pub(super) len: usize,
}

impl Scratch {
    pub(super) fn new() -> Scratch {
        Scratch {
            segment: vec![0u8; MAX_FRAME_LEN].into_boxed_slice(),
            datagrams: vec![0u8; MAX_BATCH_BYTES + MAX_FRAME_LEN].into_boxed_slice(),
            to_flush: Vec::new(),
            sends: 0,
            now: Instant::ZERO,
            untag: vec![0u8; crate::wire::icmp::REPLY_MAX].into_boxed_slice(),
            replies: Vec::with_capacity(REPLIES),
            reply_frames: vec![[0u8; crate::wire::icmp::REPLY_MAX]; REPLIES],
        }
    }
}

fn segmentation_drop(error: gso::GsoError) -> DropReason {
    match error {
        gso::GsoError::Unsupported | gso::GsoError::TooBig => DropReason::NoSegmentation,
        gso::GsoError::Malformed | gso::GsoError::AbsurdSegmentSize => DropReason::BadOffload,
        gso::GsoError::ExceedsMtu => DropReason::EgressOversize,
    }
}

/// Sends `frame` on `io`, less the `class.strip` tag bytes at offset 12 and plus the tag
/// `egress` pushes, with offload metadata `offload` (moved along with the tag). Returns the
/// bytes sent.
fn send_frame(
    io: &mut dyn Port,
    frame: &[u8],
    class: &Classified,
    egress: Egress,
    offload: &VnetHdr,
) -> io::Result<usize> {
    let (head, rest) = (&frame[..12], &frame[12 + class.strip..]);
    match egress {
        Egress::Tagged(push) => {
            let tag = push.bytes();
            let offload = offload.shifted(tag.len() as i32 - class.strip as i32);
            io.send(&[IoSlice::new(head), IoSlice::new(&tag), IoSlice::new(rest)], &offload)
                .map(|()| frame.len() - class.strip + tag.len())
        }
        _ if class.strip == 0 => io.send(&[IoSlice::new(frame)], offload).map(|()| frame.len()),
        _ => {
            let offload = offload.shifted(-(class.strip as i32));
            io.send(&[IoSlice::new(head), IoSlice::new(rest)], &offload).map(|()| frame.len() - class.strip)
        }
    }
}

/// Takes frames a port queued but the kernel refused off the sent counters of `port` (and of
/// bond member `member`) and counts them as drops.
pub(super) fn uncount_failed(port: &mut PortState, member: usize, failure: &crate::port::SendFailure) {
    let reason = send_error_reason(&failure.error);
    if let Some(m) = port.bond.as_mut().and_then(|b| b.member_mut(member)) {
        m.counters.tx_frames = m.counters.tx_frames.saturating_sub(failure.frames);
        m.counters.tx_bytes = m.counters.tx_bytes.saturating_sub(failure.bytes);
        m.counters.drops.add_many(reason, failure.frames);
    }
    let counters = &mut port.counters;
    counters.tx_frames = counters.tx_frames.saturating_sub(failure.frames);
    counters.tx_bytes = counters.tx_bytes.saturating_sub(failure.bytes);
    counters.drops.add_many(reason, failure.frames);
}

/// The drop reason for a failed send.
fn send_error_reason(error: &io::Error) -> DropReason {
    match error.raw_os_error() {
        Some(libc::EAGAIN | libc::ENOBUFS) => DropReason::NoRoom,
        Some(libc::EIO | libc::ENETDOWN | libc::ENXIO | libc::ENODEV) => DropReason::LinkDown,
        _ => DropReason::TxError,
    }
}

/// Counts a drop on `port` (and on its bond member `member`, if it is a bond).
fn count_drop(port: &mut PortState, member: usize, reason: DropReason) {
    port.counters.drops.add(reason);
    if let Some(m) = port.bond.as_mut().and_then(|b| b.member_mut(member)) {
        m.counters.drops.add(reason);
    }
}

/// Counts the result of a send on `port` (and on bond member `member`), and updates the link
/// state a TAP's errors reveal.
fn count_sent(port: &mut PortState, member: usize, sent: io::Result<usize>) {
    match sent {
        Ok(len) => {
            port.counters.tx_frames += 1;
            port.counters.tx_bytes += len as u64;
            if let Some(m) = port.bond.as_mut().and_then(|b| b.member_mut(member)) {
                m.counters.tx_frames += 1;
                m.counters.tx_bytes += len as u64;
            } else if port.link == LinkState::Down && !port.link_from_kernel {
                port.link = LinkState::Up;
                port.link_changes += 1;
            }
        }
        Err(e) => {
            let reason = send_error_reason(&e);
            if reason == DropReason::LinkDown
                && port.bond.is_none()
                && port.link == LinkState::Up
                && !port.link_from_kernel
            {
                port.link = LinkState::Down;
                port.link_changes += 1;
            }
            count_drop(port, member, reason);
        }
    }
}

/// Sends the frame on `port`'s endpoint number `member` and counts the result. Toward an
/// endpoint that does not carry offload metadata, a super-frame is cut into segments (in
/// `scratch`) and a partial checksum is completed in place (it stays complete for the ports
/// after this one).
#[allow(clippy::too_many_arguments)]
fn send_on(
    port: &mut PortState,
    endpoints: &mut [Endpoint],
    member: usize,
    buf: &mut FrameBuf,
    class: &Classified,
    egress: Egress,
    scratch: &mut Scratch,
    trace: Option<&mut TraceLog>,
) {
    let Some(&index) = port.endpoints.get(member) else { return };
    if port.link_from_kernel && port.link != LinkState::Up && port.bond.is_none() {
        if let Some(log) = trace {
            return log.egress(port.id, EgressAction::Dropped(DropReason::LinkDown));
        }
        return count_drop(port, member, DropReason::LinkDown);
    }
    if let Some(log) = trace {
        let carries = port.offloads.is_some();
        log.egress(port.id, EgressAction::Offload(offload_handling(&buf.offload, carries)));
        let pushed = if let Egress::Tagged(_) = egress { crate::wire::vlan::TAG_LEN } else { 0 };
        let len = buf.len() - class.strip + pushed;
        let member = port.bond.as_ref().and_then(|b| b.members().get(member)).map(|m| m.name.clone());
        return log.egress(port.id, EgressAction::WouldSend { len, member });
    }
    scratch.sends += 1;
    endpoints[index].note_send(index, &mut scratch.to_flush);
    let io = endpoints[index].io.as_mut();
    if !io.carries_offload() {
        if buf.offload.is_gso() {
            let plain = VnetHdr::default();
            let mtu = port.info.mtu;
            let result = gso::segment(buf.frame(), &buf.offload, mtu, &mut scratch.segment, |segment| {
                let sent = send_frame(io, segment, class, egress, &plain);
                count_sent(port, member, sent);
            });
            match result {
                Ok(segments) => scratch.sends += segments.saturating_sub(1), // each one a send
                Err(e) => count_drop(port, member, segmentation_drop(e)),
            }
            return;
        }
        if buf.offload.needs_csum() {
            let offload = buf.offload;
            let Some(done) = offload.complete_checksum(buf.frame_mut()) else {
                return count_drop(port, member, DropReason::BadOffload);
            };
            buf.offload = done;
        }
    }
    let sent = send_frame(io, buf.frame(), class, egress, &buf.offload);
    count_sent(port, member, sent);
}
