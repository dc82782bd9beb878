//! Fuzz target `value_json`: see `switchboard::fuzzing::value_json` (the corpus replay test calls the same function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::value_json(data));
