//! Fuzz target: `vswitchd_control::fuzzing::netlink_reply`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vswitchd_control::fuzzing::netlink_reply(data));
