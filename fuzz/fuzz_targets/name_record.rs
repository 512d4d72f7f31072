//! Fuzz target `name_record`: the property is `commons_protocol::fuzzing::name_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_protocol::fuzzing::name_record(data));
