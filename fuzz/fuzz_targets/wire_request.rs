//! Fuzz target `wire_request`: the property is `commons_protocol::fuzzing::wire_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_protocol::fuzzing::wire_request(data));
