//! Fuzz target `publisher_key`: the property is `commons_protocol::fuzzing::publisher_key`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_protocol::fuzzing::publisher_key(data));
