//! Fuzz target: `vswitchd_dataplane::fuzzing::socket_stream`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vswitchd_dataplane::fuzzing::socket_stream(data));
