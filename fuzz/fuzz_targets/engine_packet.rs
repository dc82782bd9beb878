//! Fuzz target `engine_packet`: see `switchboard::fuzzing::engine_packet` (the corpus replay test calls the same function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::engine_packet(data));
