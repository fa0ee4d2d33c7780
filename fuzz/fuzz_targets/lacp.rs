//! Fuzz target: `vswitchd_dataplane::fuzzing::lacp`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vswitchd_dataplane::fuzzing::lacp(data));
