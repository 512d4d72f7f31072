//! Fuzz target `manifest`: the property is `commons_protocol::fuzzing::manifest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_protocol::fuzzing::manifest(data));
