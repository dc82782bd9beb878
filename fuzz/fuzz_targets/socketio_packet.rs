//! Fuzz target `socketio_packet`: see `switchboard::fuzzing::socketio_packet` (the corpus replay test calls the same function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::socketio_packet(data));
