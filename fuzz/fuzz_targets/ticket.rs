//! Fuzz target `ticket`: the property is `commons_protocol::fuzzing::ticket`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_protocol::fuzzing::ticket(data));
