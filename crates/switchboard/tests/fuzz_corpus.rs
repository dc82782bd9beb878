//! Replays the fuzz targets' committed inputs on stable Rust as ordinary
//! tests: every file of `fuzz/seeds/<target>/`, `fuzz/corpus/<target>/`
//! and `fuzz/regressions/<target>/` goes through the same
//! `switchboard::fuzzing` function the fuzz target calls (so the test is the
//! target), which panics when an input breaks an invariant.

#[path = "../../../fuzz/replay.rs"]
mod replay;

use replay::replay;

#[test]
fn engine_packet() {
    replay("engine_packet", switchboard::fuzzing::engine_packet);
}

#[test]
fn polling_payload() {
    replay("polling_payload", switchboard::fuzzing::polling_payload);
}

#[test]
fn socketio_packet() {
    replay("socketio_packet", switchboard::fuzzing::socketio_packet);
}

#[test]
fn value_json() {
    replay("value_json", switchboard::fuzzing::value_json);
}

/// Found by `redis_message` (a float64 from another node, written as JSON
/// and read back, changed by one unit in the last place): a number's
/// shortest representation reads back as the same number, so what a
/// client or another node sends is relayed unchanged.
#[test]
fn floats_read_back_exactly() {
    for text in ["2.6245098039215002", "-5.3136085366315596e+303"] {
        let value: switchboard::Value = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), text);
    }
}

/// Found by `socketio_packet`: an event without attachments whose data
/// holds an object shaped like a binary placeholder (a client may send
/// one in a plain event, and the server echo it) decodes, as the cluster
/// adapters decode every broadcast they forward, instead of failing for a
/// missing attachment.
#[test]
fn placeholder_shaped_data_without_attachments_decodes() {
    use switchboard::Value;
    use switchboard::protocol::socketio::encode_event_values;
    let shaped = Value::Object(vec![
        ("_placeholder".into(), Value::Bool(true)),
        ("num".into(), Value::from(0u64)),
    ]);
    let encoded = encode_event_values("/", "a", std::slice::from_ref(&shaped), None).unwrap();
    assert!(encoded.attachments.is_empty());
    let packet = encoded.decode().expect("the event decodes");
    assert_eq!(
        packet.payload,
        Some(Value::Array(vec![Value::from("a"), shaped]))
    );
}
