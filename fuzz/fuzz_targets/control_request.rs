//! Fuzz target: `vswitchd_control::fuzzing::control_request` over a switch with ports of every kind, built once per process.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use vswitchd_dataplane::fuzzing::FramePipeline;

thread_local! {
    static PIPELINE: RefCell<FramePipeline> = RefCell::new(FramePipeline::new().expect("an event loop"));
}

fuzz_target!(|data: &[u8]| {
    PIPELINE.with(|pipeline| vswitchd_control::fuzzing::control_request(&mut pipeline.borrow_mut(), data));
});
