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
