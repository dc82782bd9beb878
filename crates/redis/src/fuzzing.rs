//! Entry points shared by the fuzz targets (`fuzz/`) and the corpus replay
//! tests (`tests/fuzz_corpus.rs`): the bytes another node (or anyone who
//! can publish to Redis) puts in a message go through the adapters' real
//! decoders and checks, and the invariants that hold for what is accepted
//! are checked (it panics when one does not). Not a stable API.

use switchboard::Value;

use crate::codec;
use crate::packet::{
    encode, event_checked, event_data, opts_checked, opts_from, opts_of, packet_of, rooms_checked,
    session_from, session_of, socket_from, socket_of,
};

/// The namespace messages are read for.
const NSP: &str = "/";

/// One adapter message, read every way an adapter reads one: the classic
/// adapter's broadcast channel (MessagePack `[uid, packet, opts]`), its
/// request and response channels and the sharded adapter's messages (JSON
/// when it starts with `{`, MessagePack otherwise), and the streams
/// adapter's stream entries and persisted sessions (base64 MessagePack).
pub fn adapter_message(data: &[u8]) {
    if let Ok(value) = codec::unpack(data) {
        round_trip(&value);
        classic_broadcast(&value);
    }
    if let Ok(value) = codec::decode_any(data) {
        round_trip(&value);
        message(&value);
    }
    if let Ok(raw) = codec::base64_decode(data)
        && let Ok(value) = codec::unpack(&raw)
    {
        round_trip(&value);
        message(&value);
        if let Some(session) = session_from(&value) {
            assert_eq!(session_from(&session_of(&session)), Some(session));
        }
    }
}

/// MessagePack and JSON written as the Node adapters write them read back
/// to values that are written the same way again.
fn round_trip(value: &Value) {
    let packed = codec::pack(value);
    let unpacked = codec::unpack(&packed).expect("packed values unpack");
    assert_eq!(codec::pack(&unpacked), packed);
    let json = codec::to_json(value);
    let parsed = codec::from_json(&json).expect("written JSON reads back");
    assert_eq!(codec::to_json(&parsed), json);
}

/// `[uid, packet, opts]` as the classic adapter's broadcast handler checks
/// it, then the event re-encoded for local sockets.
fn classic_broadcast(value: &Value) {
    let Value::Array(msg) = value else {
        return;
    };
    if msg.len() < 3 {
        return;
    }
    let Ok(Some(data)) = event_checked(msg.get(1), NSP) else {
        return;
    };
    if opts_checked(msg.get(2)).is_err() {
        return;
    }
    event(data);
}

/// Event data `[name, ...args]` encoded for this node's sockets: it
/// decodes to the same arguments, and is published back as a packet with
/// the same data.
fn event(data: &[Value]) {
    let Some(encoded) = encode(NSP, data, None) else {
        // Only a name that is neither a string nor a number has no packet.
        assert!(!matches!(
            data.first(),
            Some(Value::String(_) | Value::Number(_))
        ));
        return;
    };
    if !encoded.attachments.is_empty() && data.iter().any(switchboard::fuzzing::has_placeholder) {
        // Ambiguous in the protocol: a placeholder-shaped object next to
        // binary data reads back as an attachment (as in Node).
        return;
    }
    let decoded = encoded.decode().expect("encoded events decode");
    let Some(Value::Array(items)) = &decoded.payload else {
        panic!("an encoded event has no arguments");
    };
    assert_eq!(packed(&items[1..]), packed(&data[1..]));
    let packet = packet_of(&encoded, NSP).expect("encoded events make packets");
    let again = event_data(&packet, NSP).expect("packets carry their event");
    assert_eq!(packed(again), packed(items));
}

fn packed(items: &[Value]) -> Vec<u8> {
    codec::pack(&Value::Array(items.to_vec()))
}

/// A message of the request/response channels or of the sharded and
/// streams adapters: its lists of rooms, options, event packets, sockets.
fn message(value: &Value) {
    let Value::Object(_) = value else {
        return;
    };
    let data = value.get("data");
    for holder in [Some(value), data].into_iter().flatten() {
        let _ = rooms_checked(holder.get("rooms"));
        if let Ok(opts) = opts_checked(holder.get("opts")) {
            // Options written back read the same.
            let written = opts_of(&opts, None);
            assert_eq!(opts_checked(Some(&written)), Ok(opts.clone()));
            assert_eq!(opts_from(Some(&written)), opts);
        }
        if let Ok(Some(event_args)) = event_checked(holder.get("packet"), NSP) {
            event(event_args);
        }
        if let Some(Value::Array(sockets)) = holder.get("sockets") {
            for socket in sockets {
                if let Some(info) = socket_from(socket, NSP) {
                    let back =
                        socket_from(&socket_of(&info), NSP).expect("written sockets read back");
                    assert_eq!(
                        (&back.id, &back.rooms, &back.data),
                        (&info.id, &info.rooms, &info.data)
                    );
                }
            }
        }
        if let Some(session) = session_from(holder) {
            assert_eq!(session_from(&session_of(&session)), Some(session));
        }
    }
}
