//! Fuzz target `wire_responses`: the property is `commons_protocol::fuzzing::wire_responses`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_protocol::fuzzing::wire_responses(data));
