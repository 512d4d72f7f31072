//! Fuzz target `hub_ids`: the property is `commons_protocol::fuzzing::hub_ids`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_protocol::fuzzing::hub_ids(data));
