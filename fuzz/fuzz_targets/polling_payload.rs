//! Fuzz target `polling_payload`: see `switchboard::fuzzing::polling_payload` (the corpus replay test calls the same function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::polling_payload(data));
