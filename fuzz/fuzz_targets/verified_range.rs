//! Fuzz target `verified_range`: the property is `commons_protocol::fuzzing::verified_range`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_protocol::fuzzing::verified_range(data));
