//! Entry points shared by the fuzz targets (`fuzz/`) and the corpus replay
//! tests (`tests/fuzz_corpus.rs`): each takes the bytes a peer could send,
//! runs them through the real decoder a transport uses, and checks the
//! invariants that hold for what decodes (it panics when one does not).
//! Not a stable API.

use bytes::Bytes;

use crate::protocol::engine::{self, Frame, Packet, decode_payload, encode_payload};
use crate::protocol::socketio::{self, Args, PacketKind};
use crate::protocol::value::{Value, from_value, to_value, write_json};

/// What the Socket.IO client handler allows by default
/// (`SocketIoConfig::max_attachments`).
const MAX_ATTACHMENTS: usize = 10;

/// The frame a decoded packet is sent as.
fn frame_of(packet: &Packet) -> Frame {
    match packet {
        Packet::Binary(b) => Frame::Binary(b.clone()),
        other => Frame::Text(other.encode()),
    }
}

/// An Engine.IO packet as a WebSocket text frame carries it (the
/// transport hands the decoder only valid UTF-8).
pub fn engine_packet(data: &[u8]) {
    if std::str::from_utf8(data).is_err() {
        return;
    }
    let Ok(packet) = Packet::decode_text(Bytes::copy_from_slice(data)) else {
        return;
    };
    let encoded = packet.encode();
    match &packet {
        // Packets with data carry it unchanged.
        Packet::Open(_) | Packet::Ping(_) | Packet::Pong(_) | Packet::Message(_) => {
            assert_eq!(&encoded[..], data, "re-encoding changed the packet");
        }
        // Packets without data ignore what follows their type.
        Packet::Close | Packet::Upgrade | Packet::Noop => {
            assert_eq!(encoded.len(), 1);
            assert_eq!(encoded[0], data[0]);
        }
        Packet::Binary(_) => panic!("a text frame decoded as binary"),
    }
    if let Packet::Message(text) = &packet {
        assert!(std::str::from_utf8(text).is_ok(), "message is not UTF-8");
    }
    assert_eq!(Packet::decode_text(encoded), Ok(packet));
}

/// A long-polling POST body (`\x1e`-separated packets, binary ones in
/// base64).
pub fn polling_payload(data: &[u8]) {
    let payload = decode_payload(&Bytes::copy_from_slice(data));
    if payload.error.is_some() {
        // Packets before the first bad record are still delivered; each of
        // them was a whole record of the body.
        let records = data.split(|b| *b == engine::SEPARATOR).count();
        assert!(payload.packets.len() < records);
    }
    // What decoded encodes to a body that decodes to the same packets.
    if payload.packets.is_empty() {
        return;
    }
    let frames: Vec<Frame> = payload.packets.iter().map(frame_of).collect();
    let body = encode_payload(&frames);
    let again = decode_payload(&body);
    assert_eq!(again.error, None, "re-encoded payload does not decode");
    assert_eq!(again.packets, payload.packets);
    if payload.error.is_none() && payload.packets.iter().all(is_lossless) {
        // Every record was kept whole (base64 is read strictly, so it is
        // written back the same): the body is unchanged.
        assert_eq!(&body[..], data);
    }
}

/// Whether a packet keeps every byte of its record.
fn is_lossless(packet: &Packet) -> bool {
    matches!(
        packet,
        Packet::Open(_)
            | Packet::Ping(_)
            | Packet::Pong(_)
            | Packet::Message(_)
            | Packet::Binary(_)
    )
}

/// A Socket.IO packet followed by its binary attachments, as the client
/// handler assembles them: the first `\x1e`-separated part is the text of
/// the Engine.IO message, each further part one binary message.
pub fn socketio_packet(data: &[u8]) {
    let mut parts = data.split(|b| *b == engine::SEPARATOR);
    let text = parts.next().unwrap_or_default();
    let binaries: Vec<Bytes> = parts.map(Bytes::copy_from_slice).collect();
    let Ok(mut packet) = socketio::decode(text, MAX_ATTACHMENTS) else {
        return;
    };
    assert!(packet.attachments <= MAX_ATTACHMENTS);
    assert!(packet.nsp.starts_with('/'));
    if packet.kind.is_binary() && packet.attachments > 0 {
        if binaries.len() < packet.attachments {
            // Still waiting for attachments.
            return;
        }
        let attachments = &binaries[..packet.attachments];
        if let Some(payload) = packet.payload.as_mut()
            && payload.fill_placeholders(attachments).is_err()
        {
            return;
        }
    }
    // Events and acks re-encode (placeholders and attachments again) and
    // decode to the same namespace, id and arguments.
    let encoded = match (packet.kind, &packet.payload) {
        (PacketKind::Event | PacketKind::BinaryEvent, Some(Value::Array(items))) => {
            match items.split_first() {
                Some((Value::String(name), args)) => {
                    socketio::encode_event_values(&packet.nsp, name, args, packet.id)
                }
                _ => return,
            }
        }
        (PacketKind::Ack | PacketKind::BinaryAck, Some(Value::Array(args))) => {
            let id = packet.id.expect("decoded acks have an id");
            socketio::encode_ack(&packet.nsp, id, args, Args::Spread)
        }
        _ => return,
    };
    let encoded = encoded.expect("decoded values encode");
    let back = encoded.decode().expect("re-encoded packet decodes");
    assert_eq!(back.nsp, packet.nsp);
    assert_eq!(back.id, packet.id);
    assert_eq!(back.attachments, encoded.attachments.len());
    assert_eq!(back.kind.is_binary(), !encoded.attachments.is_empty());
    assert_eq!(
        json_of(back.payload.as_ref()),
        json_of(packet.payload.as_ref())
    );
}

/// A value's JSON with its attachments, for comparing values through a
/// round trip (numbers compare as written, as the wire carries them).
fn json_of(value: Option<&Value>) -> (Vec<u8>, Vec<Bytes>) {
    let mut out = Vec::new();
    let mut attachments = Vec::new();
    write_json(&mut out, &value, &mut attachments).expect("values serialize");
    (out, attachments)
}

/// JSON as the `Value` codec reads it (event arguments, connect auth,
/// adapter messages), then binary data put in place of its placeholders
/// and the typed conversions applications use.
pub fn value_json(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    assert!(!value.has_binary());
    // Written and read back: the same JSON (key order kept).
    let (json, attachments) = json_of(Some(&value));
    assert!(attachments.is_empty());
    let again: Value = serde_json::from_slice(&json).expect("written JSON reads back");
    assert_eq!(again, value, "{}", String::from_utf8_lossy(&json));
    // Placeholders filled with attachments, then written as placeholders
    // again: the same value comes back.
    let attachments: Vec<Bytes> = (0u8..4).map(|i| Bytes::from(vec![i; i.into()])).collect();
    let mut filled = value.clone();
    if filled.fill_placeholders(&attachments).is_ok() {
        let (json, written) = json_of(Some(&filled));
        let mut back: Value = serde_json::from_slice(&json).expect("written JSON reads back");
        back.fill_placeholders(&written)
            .expect("written placeholders name written attachments");
        assert_eq!(json_of(Some(&back)), json_of(Some(&filled)));
        assert_eq!(back.has_binary(), filled.has_binary());
        // Typed data converts to the same value.
        let converted = to_value(&filled).expect("values convert");
        assert_eq!(json_of(Some(&converted)), json_of(Some(&filled)));
    }
    // Typed conversions refuse what does not fit, without panicking.
    let _ = from_value::<serde_json::Value>(value.clone());
    let _ = from_value::<(String, u64)>(value.clone());
    let _ = from_value::<Option<Vec<Bytes>>>(filled.clone());
    let _ = from_value::<std::collections::HashMap<String, f64>>(value);
}

/// Whether a value holds an object shaped like a binary placeholder
/// (`{"_placeholder":true,"num":N}`): in a packet with attachments, the
/// protocol cannot tell it from a real one (Node's parser cannot either).
pub fn has_placeholder(value: &Value) -> bool {
    // With no attachments, any placeholder names a missing one.
    value.clone().fill_placeholders(&[]).is_err()
}
