//! Fuzz target `jwt`: see `switchboard_server::fuzzing::jwt` (the corpus replay test calls the same function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_server::fuzzing::jwt(data));
