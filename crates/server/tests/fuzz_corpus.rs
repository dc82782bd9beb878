//! Replays the fuzz targets' committed inputs on stable Rust as ordinary
//! tests: every file of `fuzz/seeds/<target>/`, `fuzz/corpus/<target>/`
//! and `fuzz/regressions/<target>/` goes through the same
//! `switchboard_server::fuzzing` function the fuzz target calls (so the test is the
//! target), which panics when an input breaks an invariant.

#[path = "../../../fuzz/replay.rs"]
mod replay;

use replay::replay;

#[test]
fn ws_commands() {
    replay("ws_commands", switchboard_server::fuzzing::ws_commands);
}

#[test]
fn sse_last_event_id() {
    replay(
        "sse_last_event_id",
        switchboard_server::fuzzing::sse_last_event_id,
    );
}

#[test]
fn jwt() {
    replay("jwt", switchboard_server::fuzzing::jwt);
}

#[test]
fn config_file() {
    replay("config_file", switchboard_server::fuzzing::config_file);
}
