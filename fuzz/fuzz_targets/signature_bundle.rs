//! Fuzz target `signature_bundle`: the property is `commons_protocol::fuzzing::signature_bundle`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| commons_protocol::fuzzing::signature_bundle(data));
