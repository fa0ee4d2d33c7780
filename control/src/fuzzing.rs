//! Fuzz target bodies for the control plane — the control protocol, the topology parser and
//! netlink replies — shared by the coverage-guided fuzzers in `fuzz/` and the corpus replay
//! test (`tests/fuzz_corpora.rs`).

use std::path::Path;

use vswitchd_dataplane::Instant;
use vswitchd_dataplane::fuzzing::FramePipeline;

use crate::ctl::{self, Request};
use crate::netlink::message::parse_replies;
use crate::plumbing;
use crate::topology::Topology;

/// The control-protocol target: a request line, parsed as the control socket parses it and,
/// if it parses, answered against a live switch state (with ports of every kind).
pub fn control_request(pipeline: &mut FramePipeline, data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else { return };
    for line in line.lines() {
        let Ok(request) = serde_json::from_str::<Request>(line) else { continue };
        let _ = ctl::answer(&request, pipeline.switch_mut().state_mut(), Instant::ZERO);
    }
}

/// The topology target: any text as a topology file. A refusal must name the file; a file
/// that is accepted must turn into a plan.
pub fn topology(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Topology::parse(Path::new("fuzz.toml"), text) {
        Ok(topology) => {
            let _ = plumbing::plan(&topology);
            // `save` writes what runs as a file: it must read back as the same topology, and
            // the diff from a topology to itself is empty.
            let saved = topology.to_toml();
            let again = Topology::parse(Path::new("fuzz.toml"), &saved)
                .unwrap_or_else(|e| panic!("a saved topology does not parse: {e}\n{saved}"));
            assert_eq!(again, topology, "a saved topology parses to another one:\n{saved}");
            assert!(crate::running::diff(&topology, &again).is_empty());
            let empty = Topology { netns: Vec::new(), ports: Vec::new(), ..topology.clone() };
            let up = crate::running::diff(&empty, &topology);
            assert_eq!(up.ports_added.len(), topology.ports.len(), "from nothing, every port is added");
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.toml"), "an error that does not name the file: {e}"),
    }
}

/// The netlink target: any datagram as a reply or event from the kernel.
pub fn netlink_reply(data: &[u8]) {
    let _ = parse_replies(data);
}

/// The vhost-user target: a guest driver's descriptor tables, rings and kicks, any values
/// (addresses past guest memory, loops, write-only buffers to transmit, huge lengths), with
/// frames from the switch in between. Nothing may panic, and every chain offered comes back.
pub fn vhost_descriptors(data: &[u8]) {
    use crate::vhost_user::harness::{BUFFERS, Harness, MEMORY, SIZE};
    let Some((features, ops)) = data.split_first_chunk::<8>() else { return };
    let mut h = Harness::new(u64::from_le_bytes(*features));
    let mut offered = [0usize; 2];
    for op in ops.chunks_exact(12) {
        let q = usize::from(op[0] & 1);
        let index = u16::from(op[1]) % SIZE;
        let addr = u64::from(u32::from_le_bytes([op[2], op[3], op[4], op[5]]));
        // Buffers in the buffer area, or straddling the end of guest memory and past it (a
        // buffer over the rings themselves is the guest's own undoing, and would break the
        // count below).
        let addr = if op[11] & 8 != 0 { MEMORY as u64 - 64 + addr % 4096 } else { BUFFERS + addr % 0x10000 };
        let len = if op[11] & 16 != 0 { u32::MAX } else { u32::from(u16::from_le_bytes([op[6], op[7]])) };
        h.descriptor(q, index, addr, len, u16::from(op[9] & 3), u16::from(op[10]) % SIZE);
        if op[11] & 1 != 0 && offered[q] < usize::from(SIZE) {
            h.offer(q, index);
            offered[q] += 1;
        }
        if op[11] & 2 != 0 {
            h.kick(q as u16);
        }
        if op[11] & 4 != 0 {
            let mut message = vec![0u8; 10 + 14 + (addr as usize % 3000)];
            message[10..16].copy_from_slice(&[0xff; 6]);
            message[..10].copy_from_slice(&op[..10]);
            let _ = h.switch.send(&message);
            h.kick(3);
        }
    }
    for (q, offered) in offered.iter().enumerate() {
        assert!(h.used(q).len() <= *offered, "more chains used than offered on queue {q}");
    }
}
