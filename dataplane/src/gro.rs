//! Receive offload in userspace: merges a run of TCP segments of one flow, received one by one
//! (a VXLAN tunnel's datagrams), into one super-frame with a GSO header, as the kernel's GRO
//! does for a NIC. A TAP then hands the receiving host one packet instead of dozens, and the
//! switch makes one write.
//!
//! Only what the kernel's TCP GRO would merge is merged, so the super-frame segments back into
//! exactly the segments that arrived: plain TCP over IPv4 (no IP options, no fragment) or IPv6
//! (no extension header), the same Ethernet and IP headers (IPv4 identification aside), the
//! same ports, acknowledgment, window and TCP options, sequence numbers that follow on, flags
//! ACK alone (ACK|PSH closes the run), every segment but the last of the first one's size.
//! A segment whose checksum was not verified is never merged: merging would leave the checksum
//! to be computed afresh and pass corrupted data off as good.
//!
//! Sans-I/O: [`Run::start`] looks at a frame, [`Run::accepts`] at the next, and
//! [`Run::finish`] fixes the merged frame's lengths and checksums and returns its GSO header.

use crate::wire::VnetHdr;
use crate::wire::checksum::{fold, sum};
use crate::wire::ethernet::EtherType;
use crate::wire::vlan::skip_tags;
use crate::wire::vnet_hdr::{F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6};

/// The largest IP packet a run may grow to (IPv4's total length, and what a TAP takes).
pub const MAX_PACKET: usize = 65_535;
/// The most segments merged into one super-frame (the kernel's GRO stops at 64 as well).
pub const MAX_SEGMENTS: usize = 64;

const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

/// Where a TCP segment's headers are, in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    l3: usize,
    l4: usize,
    /// Where the payload starts.
    payload: usize,
    ipv6: bool,
    seq: u32,
    flags: u8,
}

fn parse(frame: &[u8]) -> Option<Segment> {
    let (ethertype, l3) = skip_tags(frame).ok()?;
    let ip = frame.get(l3..)?;
    let (l4, ipv6, end) = match ethertype {
        EtherType::Ipv4 => {
            let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
            let fragment = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff;
            if ip[0] != 0x45 || ip[9] != 6 || fragment != 0 || total < 40 || total > ip.len() {
                return None;
            }
            (l3 + 20, false, l3 + total)
        }
        EtherType::Ipv6 => {
            let payload = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
            if ip[0] >> 4 != 6 || ip[6] != 6 || 40 + payload > ip.len() || payload < 20 {
                return None;
            }
            (l3 + 40, true, l3 + 40 + payload)
        }
        _ => return None,
    };
    // Nothing after the IP packet (an Ethernet pad would end up inside the merged payload).
    if end != frame.len() {
        return None;
    }
    let tcp = frame.get(l4..l4 + 20)?;
    let header = usize::from(tcp[12] >> 4) * 4;
    if header < 20 || l4 + header > end {
        return None;
    }
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    Some(Segment { l3, l4, payload: l4 + header, ipv6, seq, flags: tcp[13] })
}

/// A segment [`Run::accepts`] took: where its payload starts, for the caller to append, and
/// what [`Run::appended`] needs of it (the segment is parsed once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Where the segment's payload starts in its frame.
    pub payload_at: usize,
    payload: usize,
    psh: bool,
}

/// A run being merged into its first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    first: Segment,
    /// The payload size of every segment but the last (the GSO size).
    segment: usize,
    /// The sequence number the next segment must carry.
    next_seq: u32,
    /// Segments merged so far.
    count: usize,
    /// No segment may follow (a short one, or one with PSH).
    closed: bool,
}

impl Run {
    /// A run starting with `frame` (already checked: `checksum_ok`), if it is a TCP segment
    /// that may start one.
    pub fn start(frame: &[u8], checksum_ok: bool) -> Option<Run> {
        if !checksum_ok {
            return None;
        }
        let first = parse(frame)?;
        let segment = frame.len() - first.payload;
        if segment == 0 || (first.flags != ACK && first.flags != ACK | PSH) {
            return None;
        }
        Some(Run {
            first,
            segment,
            next_seq: first.seq.wrapping_add(segment as u32),
            count: 1,
            closed: first.flags & PSH != 0,
        })
    }

    /// Segments merged so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Whether `frame` (already checked: `checksum_ok`) continues the run whose merged frame is
    /// `head`, and if so where its payload starts; the caller then appends that payload to
    /// `head` and calls [`Run::appended`].
    pub fn accepts(&self, head: &[u8], frame: &[u8], checksum_ok: bool) -> Option<Accepted> {
        if self.closed || !checksum_ok || self.count >= MAX_SEGMENTS {
            return None;
        }
        let next = parse(frame)?;
        let first = &self.first;
        let payload = frame.len() - next.payload;
        if next.l3 != first.l3
            || next.payload != first.payload
            || next.seq != self.next_seq
            || payload == 0
            || payload > self.segment
            || (next.flags != ACK && next.flags != ACK | PSH)
            || head.len() - first.l3 + payload > MAX_PACKET
        {
            return None;
        }
        // Ethernet and tags; the IP header but its lengths, identification and checksum; TCP
        // ports, acknowledgment, data offset, window, urgent pointer and options.
        let same = |a: std::ops::Range<usize>| head.get(a.clone()) == frame.get(a);
        let ip_same = if first.ipv6 {
            same(first.l3..first.l3 + 4) && same(first.l3 + 6..first.l3 + 40)
        } else {
            let l3 = first.l3;
            same(l3..l3 + 2) && same(l3 + 6..l3 + 10) && same(l3 + 12..l3 + 20)
        };
        let l4 = first.l4;
        let tcp_same =
            same(l4..l4 + 4) && same(l4 + 8..l4 + 13) && same(l4 + 14..l4 + 16) && same(l4 + 18..first.payload);
        let accepted = Accepted { payload_at: next.payload, payload, psh: next.flags & PSH != 0 };
        (same(0..first.l3) && ip_same && tcp_same).then_some(accepted)
    }

    /// Records that the segment [`Run::accepts`] took was appended to `head`.
    pub fn appended(&mut self, accepted: Accepted, head: &mut [u8]) {
        self.next_seq = self.next_seq.wrapping_add(accepted.payload as u32);
        self.count += 1;
        if accepted.psh {
            head[self.first.l4 + 13] |= PSH;
            self.closed = true;
        }
        if accepted.payload < self.segment {
            self.closed = true;
        }
    }

    /// Makes the merged frame `head` a well-formed super-frame: its IP lengths, its IPv4
    /// header checksum, its TCP checksum in the partial form segmentation expects. Returns the
    /// GSO header to send it with, or `None` if nothing was merged (the frame is unchanged).
    pub fn finish(&self, head: &mut [u8]) -> Option<VnetHdr> {
        if self.count < 2 {
            return None;
        }
        let Segment { l3, l4, payload, ipv6, .. } = self.first;
        let l4_len = head.len() - l4;
        let pseudo = if ipv6 {
            head[l3 + 4..l3 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            let pseudo = sum(&head[l3 + 8..l3 + 40], 0);
            sum(&[0, 0, 0, 6], sum(&(l4_len as u32).to_be_bytes(), pseudo))
        } else {
            let total = (head.len() - l3) as u16;
            head[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
            head[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
            let checksum = !fold(sum(&head[l3..l3 + 20], 0));
            head[l3 + 10..l3 + 12].copy_from_slice(&checksum.to_be_bytes());
            sum(&(l4_len as u16).to_be_bytes(), sum(&[0, 6], sum(&head[l3 + 12..l3 + 20], 0)))
        };
        head[l4 + 16..l4 + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
        Some(VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if ipv6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: payload as u16,
            gso_size: self.segment as u16,
            csum_start: l4 as u16,
            csum_offset: 16,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gso;

    fn segment(seq: u32, payload: &[u8], psh: bool, ipv6: bool) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let b = if ipv6 {
            b.ipv6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                64,
            )
        } else {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        };
        let mut b = b.tcp(40000, 80, seq, 1000).ack(77);
        if psh {
            b = b.psh();
        }
        let mut out = Vec::new();
        b.options(&[etherparse::TcpOptionElement::Timestamp(5, 6)]).unwrap().write(&mut out, payload).unwrap();
        out
    }

    /// Merges `frames` as the switch does: the run's head grows by the payloads it accepts.
    fn merge(frames: &[Vec<u8>]) -> (Vec<u8>, Option<VnetHdr>, usize) {
        let mut head = frames[0].clone();
        let mut run = Run::start(&head, true).expect("a run");
        for f in &frames[1..] {
            let Some(accepted) = run.accepts(&head, f, true) else { break };
            head.extend_from_slice(&f[accepted.payload_at..]);
            run.appended(accepted, &mut head);
        }
        let hdr = run.finish(&mut head);
        (head, hdr, run.count())
    }

    #[test]
    fn a_run_merges_and_segments_back_into_the_same_segments() {
        for ipv6 in [false, true] {
            let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; if i == 4 { 300 } else { 1000 }]).collect();
            let mut frames = Vec::new();
            let mut seq = 1_000_000u32;
            for (i, p) in payloads.iter().enumerate() {
                frames.push(segment(seq, p, i == 4, ipv6));
                seq += p.len() as u32;
            }
            let (merged, hdr, count) = merge(&frames);
            assert_eq!(count, 5);
            let hdr = hdr.expect("a GSO header");
            assert_eq!(hdr.gso_size, 1000);
            // Cut it as a kernel device would: the very same frames come out, checksums and all.
            let mut out = Vec::new();
            let mut scratch = vec![0u8; 70_000];
            gso::segment(&merged, &hdr, 9000, &mut scratch, |s| out.push(s.to_vec())).unwrap();
            assert_eq!(out.len(), 5);
            for (got, want) in out.iter().zip(&frames) {
                assert_eq!(normalized(got, ipv6), normalized(want, ipv6), "ipv6 {ipv6}");
            }
        }
    }

    /// `frame` with its IPv4 identification and header checksum zeroed (a segmenter numbers
    /// the segments from the first's identification).
    fn normalized(frame: &[u8], ipv6: bool) -> Vec<u8> {
        let mut f = frame.to_vec();
        if !ipv6 {
            f[18..20].copy_from_slice(&[0, 0]);
            f[24..26].copy_from_slice(&[0, 0]);
        }
        f
    }

    #[test]
    fn what_the_kernel_would_not_merge_is_not_merged() {
        let a = segment(1, &[1; 1000], false, false);
        let follow = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = segment(1001, &[2; 1000], false, false);
            f(&mut b);
            b
        };
        let run = Run::start(&a, true).unwrap();
        assert!(run.accepts(&a, &follow(&|_| {}), true).is_some(), "the plain next segment");
        assert!(run.accepts(&a, &follow(&|_| {}), false).is_none(), "an unverified checksum");
        assert!(Run::start(&a, false).is_none());
        assert!(run.accepts(&a, &segment(1002, &[2; 1000], false, false), true).is_none(), "a gap");
        assert!(run.accepts(&a, &segment(1001, &[2; 1001], false, false), true).is_none(), "bigger than the first");
        assert!(run.accepts(&a, &follow(&|b| b[47] |= 0x01), true).is_none(), "FIN");
        assert!(run.accepts(&a, &follow(&|b| b[37] = 81), true).is_none(), "another destination port");
        assert!(run.accepts(&a, &follow(&|b| b[42] = 9), true).is_none(), "another acknowledgment");
        assert!(run.accepts(&a, &follow(&|b| b[49] = 9), true).is_none(), "another window");
        assert!(run.accepts(&a, &follow(&|b| b[60] = 9), true).is_none(), "other TCP options");
        assert!(run.accepts(&a, &follow(&|b| b[22] = 9), true).is_none(), "another TTL");
        assert!(run.accepts(&a, &follow(&|b| b[0] = 9), true).is_none(), "another destination MAC");
        assert!(run.accepts(&a, &follow(&|b| b[18] = 9), true).is_some(), "the IPv4 identification may differ");
        let mut padded = follow(&|_| {});
        padded.push(0);
        assert!(run.accepts(&a, &padded, true).is_none(), "bytes after the IP packet");
        // A short segment or PSH ends the run.
        let (_, _, count) =
            merge(&[a.clone(), segment(1001, &[2; 10], false, false), segment(1011, &[3; 10], false, false)]);
        assert_eq!(count, 2);
        let (_, _, count) =
            merge(&[a.clone(), segment(1001, &[2; 1000], true, false), segment(2001, &[3; 10], false, false)]);
        assert_eq!(count, 2);
        // A lone segment is left as it is.
        let mut lone = a.clone();
        assert_eq!(Run::start(&lone, true).unwrap().finish(&mut lone), None);
        assert_eq!(lone, a);
        // Not TCP data: no run.
        assert!(Run::start(&segment(1, &[], false, false), true).is_none(), "no payload");
        let mut udp = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut udp, &[0; 100])
            .unwrap();
        assert!(Run::start(&udp, true).is_none());
    }

    #[test]
    fn a_run_stops_at_the_size_limits() {
        let mut frames = Vec::new();
        for i in 0..80u32 {
            frames.push(segment(1 + i * 1000, &[7; 1000], false, false));
        }
        let (merged, _, count) = merge(&frames);
        assert_eq!(count, 64, "at most 64 segments");
        assert!(merged.len() - 14 <= MAX_PACKET);
        let big: Vec<Vec<u8>> = (0..10u32).map(|i| segment(1 + i * 8000, &[7; 8000], false, false)).collect();
        let (merged, _, count) = merge(&big);
        assert_eq!(count, 8, "65535 bytes of IP packet at most");
        assert!(merged.len() - 14 <= MAX_PACKET);
    }
}
