//! Fuzz target: `vswitchd_control::fuzzing::vhost_descriptors`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vswitchd_control::fuzzing::vhost_descriptors(data));
