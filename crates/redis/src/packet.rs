//! What the Node adapters put in their messages, to and from the library's
//! types: a packet `{type, data: [event, ...args], nsp}`, broadcast options
//! `{rooms, except, flags}`, a socket `{id, handshake, rooms, data}`, a
//! persisted session `{sid, pid, rooms, data}`.

use std::time::Duration;

use switchboard::Value;
use switchboard::adapter::{BroadcastOptions, PersistedSession, SocketInfo};
use switchboard::protocol::socketio::{Encoded, encode_event_values};

use crate::codec::{json_of, obj, s, strings, text, texts};

/// The Socket.IO EVENT packet type, as the Node adapters carry it.
const EVENT: u64 = 2;

/// The packet of an encoded event, as Node's adapters publish it (without
/// an ack id: each receiving node gives its own).
pub(crate) fn packet_of(packet: &Encoded, nsp: &str) -> Option<Value> {
    let decoded = packet.decode().ok()?;
    let data = decoded.payload?;
    Some(obj([
        ("type", Value::from(EVENT)),
        ("data", data),
        ("nsp", s(nsp)),
    ]))
}

/// The event data `[event, ...args]` of a packet of namespace `nsp`
/// (a missing `nsp` means `/`), or `None` when it is not an event for it.
pub(crate) fn event_data<'a>(packet: &'a Value, nsp: &str) -> Option<&'a [Value]> {
    let packet_nsp = packet.get("nsp").and_then(Value::as_str).unwrap_or("/");
    if packet_nsp != nsp {
        return None;
    }
    // 2 (EVENT) or 5 (BINARY_EVENT, as other encoders may write it).
    match packet.get("type").and_then(Value::as_u64) {
        Some(2 | 5) | None => {}
        Some(_) => return None,
    }
    match packet.get("data") {
        Some(Value::Array(items)) if !items.is_empty() => Some(items),
        _ => None,
    }
}

/// Why a message of another node was refused (see [`crate::Metrics`]'s
/// `malformed`).
pub(crate) type Malformed = &'static str;

/// Most rooms one list of a message may name (rooms, except, rooms to
/// join or leave): a longer one makes the message malformed, which bounds
/// the work (and the room index growth) one message can cause.
pub(crate) const MAX_ROOMS: usize = 100_000;

/// The event data of a packet another node sent, checked: `Ok(None)` when
/// it is for another namespace, `Err` when it is not an event packet (not
/// a map, another packet type, no `[name, ...args]`).
pub(crate) fn event_checked<'a>(
    packet: Option<&'a Value>,
    nsp: &str,
) -> Result<Option<&'a [Value]>, Malformed> {
    let Some(packet @ Value::Object(_)) = packet else {
        return Err("the packet is not a map");
    };
    match packet.get("nsp") {
        None | Some(Value::Null | Value::String(_)) => {}
        Some(_) => return Err("the packet's namespace is not a string"),
    }
    match packet.get("type") {
        None => {}
        Some(t) if matches!(t.as_u64(), Some(2 | 5)) => {}
        Some(_) => return Err("the packet is not an event"),
    }
    match packet.get("data") {
        Some(Value::Array(items))
            if matches!(items.first(), Some(Value::String(_) | Value::Number(_))) => {}
        _ => return Err("the packet has no [name, ...args]"),
    }
    Ok(event_data(packet, nsp))
}

/// A list of rooms another node sent, checked: absent (or null) is none;
/// otherwise a list of at most [`MAX_ROOMS`] strings or numbers (a null
/// item is the empty name, as [`texts`] reads it).
pub(crate) fn rooms_checked(v: Option<&Value>) -> Result<Vec<String>, Malformed> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) if items.len() > MAX_ROOMS => Err("too many rooms"),
        Some(Value::Array(items))
            if items
                .iter()
                .all(|i| matches!(i, Value::String(_) | Value::Number(_) | Value::Null)) =>
        {
            Ok(texts(v))
        }
        Some(_) => Err("rooms are not a list of names"),
    }
}

/// Broadcast options another node sent, checked: a map whose `rooms` and
/// `except` are lists of rooms and whose `flags`, if any, are a map.
pub(crate) fn opts_checked(v: Option<&Value>) -> Result<BroadcastOptions, Malformed> {
    let Some(o @ Value::Object(_)) = v else {
        return Err("the options are not a map");
    };
    rooms_checked(o.get("rooms"))?;
    rooms_checked(o.get("except"))?;
    match o.get("flags") {
        None | Some(Value::Null | Value::Object(_)) => {}
        Some(_) => return Err("the flags are not a map"),
    }
    Ok(opts_from(v))
}

/// Encodes event data `[event, ...args]` for this node's sockets.
pub(crate) fn encode(nsp: &str, data: &[Value], ack_id: Option<u64>) -> Option<Encoded> {
    let (name, args) = data.split_first()?;
    let name = text(Some(name))?;
    encode_event_values(nsp, &name, args, ack_id).ok()
}

/// Broadcast options as Node writes them: `{rooms, except, flags}`.
pub(crate) fn opts_of(opts: &BroadcastOptions, timeout: Option<Duration>) -> Value {
    let mut flags = Vec::new();
    if opts.volatile {
        flags.push(("volatile".to_owned(), Value::Bool(true)));
    }
    if let Some(t) = timeout {
        flags.push((
            "timeout".to_owned(),
            Value::from(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        ));
    }
    obj([
        ("rooms", strings(&opts.rooms)),
        ("except", strings(&opts.except)),
        ("flags", Value::Object(flags)),
    ])
}

/// Broadcast options from another node.
pub(crate) fn opts_from(v: Option<&Value>) -> BroadcastOptions {
    let volatile = v
        .and_then(|o| o.get("flags"))
        .and_then(|f| f.get("volatile"))
        .is_some_and(|x| !matches!(x, Value::Null | Value::Bool(false)));
    BroadcastOptions {
        rooms: texts(v.and_then(|o| o.get("rooms"))),
        except: texts(v.and_then(|o| o.get("except"))),
        local: false,
        volatile,
    }
}

/// A socket as the Node adapters describe it in fetch answers.
pub(crate) fn socket_of(info: &SocketInfo) -> Value {
    obj([
        ("id", s(info.id.as_str())),
        ("handshake", Value::from(info.handshake.to_json())),
        ("rooms", strings(&info.rooms)),
        ("data", Value::from(info.data.clone())),
    ])
}

/// A socket described by another node.
pub(crate) fn socket_from(v: &Value, nsp: &str) -> Option<SocketInfo> {
    let id = text(v.get("id"))?.parse().ok()?;
    Some(SocketInfo {
        id,
        nsp: nsp.to_owned(),
        rooms: texts(v.get("rooms")),
        data: json_of(v.get("data")),
        handshake: switchboard::Handshake::from_json(&json_of(v.get("handshake"))),
    })
}

/// A persisted session as the streams adapter stores it.
pub(crate) fn session_of(session: &PersistedSession) -> Value {
    obj([
        ("sid", s(session.sid.as_str())),
        ("pid", s(session.pid.as_str())),
        ("rooms", strings(&session.rooms)),
        ("data", Value::from(session.data.clone())),
    ])
}

/// A persisted session read back.
pub(crate) fn session_from(v: &Value) -> Option<PersistedSession> {
    Some(PersistedSession {
        sid: text(v.get("sid"))?.parse().ok()?,
        pid: text(v.get("pid"))?.parse().ok()?,
        rooms: texts(v.get("rooms")),
        data: json_of(v.get("data")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use switchboard::protocol::socketio::{Args, encode_event};

    #[test]
    fn packets_round_trip_through_node_shapes() {
        let e = encode_event(
            "/chat",
            "m",
            &(1, Bytes::from_static(b"\x01")),
            Args::Spread,
            Some(4),
        )
        .unwrap();
        let p = packet_of(&e, "/chat").unwrap();
        assert_eq!(p.get("type"), Some(&Value::from(2u64)));
        let data = event_data(&p, "/chat").unwrap();
        assert_eq!(data[2], Value::Binary(Bytes::from_static(b"\x01")));
        assert!(event_data(&p, "/").is_none());
        let back = encode("/chat", data, None).unwrap();
        assert_eq!(
            &back.text[..],
            br#"451-/chat,["m",1,{"_placeholder":true,"num":0}]"#
        );
        let no_nsp = obj([
            ("type", Value::from(2u64)),
            ("data", Value::Array(vec![s("x")])),
        ]);
        assert!(event_data(&no_nsp, "/").is_some());
    }

    #[test]
    fn options_round_trip() {
        let opts = BroadcastOptions {
            rooms: vec!["a".into()],
            except: vec!["b".into()],
            local: false,
            volatile: true,
        };
        let v = opts_of(&opts, None);
        assert_eq!(opts_from(Some(&v)), opts);
        let numeric = crate::codec::from_json(br#"{"rooms":[12],"except":[],"flags":{}}"#).unwrap();
        assert_eq!(opts_from(Some(&numeric)).rooms, vec!["12".to_owned()]);
    }
}
