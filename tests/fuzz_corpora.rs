//! Every input the fuzzers kept (`fuzz/corpus/TARGET`) and every crash they found
//! (`fuzz/regressions/TARGET`, one file per finding, named after what it broke) is run through
//! its target again on every `cargo test`, on the stable toolchain: a fixed crash stays fixed.
//! `scripts/fuzz.sh` runs the coverage-guided fuzzers themselves.

use std::path::{Path, PathBuf};

use vswitchd_control::fuzzing as control;
use vswitchd_dataplane::fuzzing::{self as dataplane, FramePipeline};

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

fn replay(target: &str, mut run: impl FnMut(&[u8])) {
    let inputs = inputs(target);
    for (path, bytes) in &inputs {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(bytes)));
        assert!(result.is_ok(), "{target}: {} fails again", path.display());
    }
    println!("{target}: {} inputs replayed", inputs.len());
}

#[test]
fn frame_pipeline_inputs() {
    let mut pipeline = FramePipeline::new().unwrap();
    replay("frame_pipeline", |data| dataplane::frame_pipeline(&mut pipeline, data));
    assert!(!inputs("frame_pipeline").is_empty(), "the frame pipeline has a corpus");
}

#[test]
fn vxlan_receive_inputs() {
    let mut pipeline = FramePipeline::new().unwrap();
    replay("vxlan_receive", |data| dataplane::vxlan_receive(&mut pipeline, data));
}

#[test]
fn lacp_inputs() {
    replay("lacp", dataplane::lacp);
}

#[test]
fn socket_stream_inputs() {
    replay("socket_stream", dataplane::socket_stream);
    assert!(!inputs("socket_stream").is_empty(), "the stream deframer has a corpus");
}

#[test]
fn control_request_inputs() {
    let mut pipeline = FramePipeline::new().unwrap();
    replay("control_request", |data| control::control_request(&mut pipeline, data));
}

#[test]
fn topology_inputs() {
    replay("topology", control::topology);
}

#[test]
fn netlink_reply_inputs() {
    replay("netlink_reply", control::netlink_reply);
}

#[test]
fn vhost_descriptors_inputs() {
    replay("vhost_descriptors", control::vhost_descriptors);
}
