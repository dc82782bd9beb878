//! Fuzz target `config_file`: see `switchboard_server::fuzzing::config_file` (the corpus replay test calls the same function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_server::fuzzing::config_file(data));
