//! Fuzz target `names`: the property is `commons_protocol::fuzzing::names`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_protocol::fuzzing::names(data));
