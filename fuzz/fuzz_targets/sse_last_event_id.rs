//! Fuzz target `sse_last_event_id`: see `switchboard_server::fuzzing::sse_last_event_id` (the corpus replay test calls the same function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_server::fuzzing::sse_last_event_id(data));
