//! Fuzz target `redis_message`: see `switchboard_redis::fuzzing::adapter_message` (the corpus replay test calls the same function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_redis::fuzzing::adapter_message(data));
