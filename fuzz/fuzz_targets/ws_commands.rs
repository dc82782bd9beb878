//! Fuzz target `ws_commands`: see `switchboard_server::fuzzing::ws_commands` (the corpus replay test calls the same function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_server::fuzzing::ws_commands(data));
