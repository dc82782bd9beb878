//! Replays the fuzz targets' committed inputs on stable Rust as ordinary
//! tests: every file of `fuzz/seeds/<target>/`, `fuzz/corpus/<target>/`
//! and `fuzz/regressions/<target>/` goes through the same
//! `switchboard_redis::fuzzing` function the fuzz target calls (so the test is the
//! target), which panics when an input breaks an invariant.

#[path = "../../../fuzz/replay.rs"]
mod replay;

use replay::replay;

#[test]
fn redis_message() {
    replay("redis_message", switchboard_redis::fuzzing::adapter_message);
}
