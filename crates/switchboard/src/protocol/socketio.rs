//! Socket.IO v5 packets: a pure codec, no I/O.
//!
//! Text form: `<type>[<attachments>-][/<nsp>,][<ack id>][<json>]`.
//! Encoders write the complete Engine.IO message (with its leading `4`), so
//! the bytes go to the wire without another copy and a broadcast is encoded
//! once for all recipients.

use bytes::Bytes;
use serde::Serialize;

use super::engine::Frame;
use super::value::{Value, write_json};

/// Event names a client may not use.
pub const RESERVED_EVENTS: &[&str] = &[
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// The seven Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketKind {
    /// `0`: join a namespace (client), or its acceptance (server).
    Connect,
    /// `1`: leave a namespace.
    Disconnect,
    /// `2`: an event.
    Event,
    /// `3`: the answer to an event that asked for one.
    Ack,
    /// `4`: a refused namespace connection.
    ConnectError,
    /// `5`: an event with binary attachments.
    BinaryEvent,
    /// `6`: an ack with binary attachments.
    BinaryAck,
}

impl PacketKind {
    fn from_digit(d: u8) -> Option<Self> {
        Some(match d {
            b'0' => PacketKind::Connect,
            b'1' => PacketKind::Disconnect,
            b'2' => PacketKind::Event,
            b'3' => PacketKind::Ack,
            b'4' => PacketKind::ConnectError,
            b'5' => PacketKind::BinaryEvent,
            b'6' => PacketKind::BinaryAck,
            _ => return None,
        })
    }

    /// Whether attachments follow this packet.
    pub fn is_binary(self) -> bool {
        matches!(self, PacketKind::BinaryEvent | PacketKind::BinaryAck)
    }
}

/// A decoded packet. For binary kinds the placeholders in `payload` are still
/// to be replaced once `attachments` binary messages have arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// The packet type.
    pub kind: PacketKind,
    /// The namespace (`/` when absent on the wire).
    pub nsp: String,
    /// The ack id, when the sender wants an answer (or this is one).
    pub id: Option<u64>,
    /// Number of binary attachments that follow.
    pub attachments: usize,
    /// The JSON payload, if any.
    pub payload: Option<Value>,
}

/// Why a text message is not a valid Socket.IO packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Empty message.
    #[error("empty packet")]
    Empty,
    /// Unknown packet type digit.
    #[error("unknown packet type")]
    UnknownType,
    /// Attachment count missing, malformed, or over the limit.
    #[error("invalid attachment count")]
    Attachments,
    /// Ack id out of range.
    #[error("invalid ack id")]
    AckId,
    /// Payload is not valid JSON.
    #[error("invalid JSON payload")]
    Json,
    /// Payload has the wrong shape for the packet type.
    #[error("invalid payload for packet type")]
    Payload,
}

/// Parses one Socket.IO packet from the text of an Engine.IO message.
/// `max_attachments` bounds the attachment count a binary packet may announce.
pub fn decode(text: &[u8], max_attachments: usize) -> Result<Packet, ParseError> {
    let (&first, mut rest) = text.split_first().ok_or(ParseError::Empty)?;
    let kind = PacketKind::from_digit(first).ok_or(ParseError::UnknownType)?;

    let mut attachments = 0usize;
    if kind.is_binary() {
        let dash = rest
            .iter()
            .position(|b| *b == b'-')
            .ok_or(ParseError::Attachments)?;
        let digits = &rest[..dash];
        if digits.is_empty() || digits.len() > 6 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::Attachments);
        }
        attachments = digits
            .iter()
            .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
        if attachments > max_attachments {
            return Err(ParseError::Attachments);
        }
        rest = &rest[dash + 1..];
    }

    let mut nsp = String::from("/");
    if rest.first() == Some(&b'/') {
        let end = rest.iter().position(|b| *b == b',').unwrap_or(rest.len());
        nsp = std::str::from_utf8(&rest[..end])
            .map_err(|_| ParseError::Payload)?
            .to_owned();
        rest = rest.get(end + 1..).unwrap_or(&[]);
    }

    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut id = None;
    if digits > 0 {
        let text = std::str::from_utf8(&rest[..digits]).map_err(|_| ParseError::AckId)?;
        id = Some(text.parse::<u64>().map_err(|_| ParseError::AckId)?);
        rest = &rest[digits..];
    }

    let payload = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_slice::<Value>(rest).map_err(|_| ParseError::Json)?)
    };

    let valid = match (kind, &payload) {
        (PacketKind::Connect, None | Some(Value::Object(_))) => true,
        (PacketKind::Disconnect, None) => true,
        (PacketKind::ConnectError, Some(Value::Object(_) | Value::String(_))) => true,
        (PacketKind::Event | PacketKind::BinaryEvent, Some(Value::Array(items))) => {
            match items.first() {
                Some(Value::String(name)) => !RESERVED_EVENTS.contains(&name.as_str()),
                Some(Value::Number(_)) => true,
                _ => false,
            }
        }
        (PacketKind::Ack | PacketKind::BinaryAck, Some(Value::Array(_))) => id.is_some(),
        _ => false,
    };
    if !valid {
        return Err(ParseError::Payload);
    }
    Ok(Packet {
        kind,
        nsp,
        id,
        attachments,
        payload,
    })
}

/// An encoded packet: the Engine.IO text message and its binary attachments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The full Engine.IO text packet (`42...`).
    pub text: Bytes,
    /// Binary attachments, each sent as its own binary message after `text`.
    pub attachments: Vec<Bytes>,
}

impl Encoded {
    /// The Engine.IO frames of this packet, sharing its bytes.
    pub fn frames(&self) -> Vec<Frame> {
        let mut frames = Vec::with_capacity(1 + self.attachments.len());
        frames.push(Frame::Text(self.text.clone()));
        frames.extend(self.attachments.iter().cloned().map(Frame::Binary));
        frames
    }

    /// The same event with one more string argument at the end (connection
    /// state recovery appends each stored packet's offset this way). The
    /// text is copied once; attachments are shared.
    pub fn with_last_arg(&self, arg: &str) -> Encoded {
        let mut text = Vec::with_capacity(self.text.len() + arg.len() + 3);
        // An event's text always ends with the `]` of its argument array.
        let body = self.text.strip_suffix(b"]").unwrap_or(&self.text);
        text.extend_from_slice(body);
        text.push(b',');
        serde_json::to_writer(&mut text, arg).expect("strings serialize");
        text.push(b']');
        Encoded {
            text: Bytes::from(text),
            attachments: self.attachments.clone(),
        }
    }

    /// Reads the packet back: its namespace, ack id and payload (for an
    /// event, `[name, ...args]`), with binary attachments in place. Cluster
    /// adapters use it to carry an encoded broadcast to other nodes.
    pub fn decode(&self) -> Result<Packet, ParseError> {
        let text = self.text.strip_prefix(b"4").ok_or(ParseError::Empty)?;
        let mut packet = decode(text, self.attachments.len())?;
        // Only a packet with attachments has placeholders: in one without,
        // an object shaped like one is data (as the client handler reads
        // it).
        if packet.attachments > 0
            && let Some(payload) = packet.payload.as_mut()
        {
            payload
                .fill_placeholders(&self.attachments)
                .map_err(|()| ParseError::Attachments)?;
        }
        Ok(packet)
    }
}

/// How the data of an event or ack becomes its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Args {
    /// The data is one argument.
    One,
    /// The data serializes to an array whose items are the arguments.
    Spread,
}

/// Why data could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Serialization failed.
    #[error("cannot serialize payload: {0}")]
    Serialize(#[from] serde_json::Error),
    /// [`Args::Spread`] data did not serialize to an array.
    #[error("data to spread as arguments must serialize to an array")]
    NotAnArray,
}

fn push_header(buf: &mut Vec<u8>, digit: u8, attachments: usize, nsp: &str, id: Option<u64>) {
    buf.push(b'4');
    buf.push(digit);
    if attachments > 0 {
        buf.extend_from_slice(attachments.to_string().as_bytes());
        buf.push(b'-');
    }
    if nsp != "/" {
        buf.extend_from_slice(nsp.as_bytes());
        buf.push(b',');
    }
    if let Some(id) = id {
        buf.extend_from_slice(id.to_string().as_bytes());
    }
}

/// Writes `data` as arguments, continuing an open JSON array in `buf` whose
/// previous item (if any) is already written. Closes the array.
fn push_args<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    has_prev: bool,
    data: &T,
    args: Args,
    attachments: &mut Vec<Bytes>,
) -> Result<(), EncodeError> {
    if has_prev {
        buf.push(b',');
    }
    let start = buf.len();
    write_json(buf, data, attachments)?;
    match args {
        Args::One => buf.push(b']'),
        Args::Spread => {
            // `()` (written `null`) means no arguments, as `[]` does.
            let unit = &buf[start..] == b"null";
            if buf.get(start) != Some(&b'[') && !unit {
                return Err(EncodeError::NotAnArray);
            }
            if unit || buf.len() == start + 2 {
                // `[]`: no arguments; drop it and the separating comma.
                buf.truncate(if has_prev { start - 1 } else { start });
                buf.push(b']');
            } else {
                buf.remove(start);
            }
        }
    }
    Ok(())
}

fn finish(
    buf: Vec<u8>,
    kind: PacketKind,
    nsp: &str,
    id: Option<u64>,
    header_len: usize,
    attachments: Vec<Bytes>,
) -> Encoded {
    if attachments.is_empty() {
        return Encoded {
            text: Bytes::from(buf),
            attachments,
        };
    }
    let digit = if kind == PacketKind::Ack { b'6' } else { b'5' };
    let mut out = Vec::with_capacity(buf.len() + 8);
    push_header(&mut out, digit, attachments.len(), nsp, id);
    out.extend_from_slice(&buf[header_len..]);
    Encoded {
        text: Bytes::from(out),
        attachments,
    }
}

/// Encodes an event: `42<nsp>,<id>["event", ...args]`, as a binary event
/// when the data holds byte buffers.
pub fn encode_event<T: Serialize + ?Sized>(
    nsp: &str,
    event: &str,
    data: &T,
    args: Args,
    id: Option<u64>,
) -> Result<Encoded, EncodeError> {
    let mut buf = Vec::with_capacity(32 + nsp.len() + event.len());
    push_header(&mut buf, b'2', 0, nsp, id);
    let header_len = buf.len();
    buf.push(b'[');
    serde_json::to_writer(&mut buf, event)?;
    let mut attachments = Vec::new();
    push_args(&mut buf, true, data, args, &mut attachments)?;
    Ok(finish(
        buf,
        PacketKind::Event,
        nsp,
        id,
        header_len,
        attachments,
    ))
}

/// Encodes an event from already-built argument values.
pub fn encode_event_values(
    nsp: &str,
    event: &str,
    args: &[Value],
    id: Option<u64>,
) -> Result<Encoded, EncodeError> {
    encode_event(nsp, event, args, Args::Spread, id)
}

/// Encodes an ack: `43<nsp>,<id>[...args]`.
pub fn encode_ack<T: Serialize + ?Sized>(
    nsp: &str,
    id: u64,
    data: &T,
    args: Args,
) -> Result<Encoded, EncodeError> {
    let mut buf = Vec::with_capacity(32 + nsp.len());
    push_header(&mut buf, b'3', 0, nsp, Some(id));
    let header_len = buf.len();
    buf.push(b'[');
    let mut attachments = Vec::new();
    push_args(&mut buf, false, data, args, &mut attachments)?;
    Ok(finish(
        buf,
        PacketKind::Ack,
        nsp,
        Some(id),
        header_len,
        attachments,
    ))
}

/// Encodes the acceptance of a namespace connection: `40<nsp>,{"sid":"..."}`.
pub fn encode_connect(nsp: &str, sid: &str, pid: Option<&str>) -> Bytes {
    let mut buf = Vec::with_capacity(48 + nsp.len());
    push_header(&mut buf, b'0', 0, nsp, None);
    buf.extend_from_slice(b"{\"sid\":");
    serde_json::to_writer(&mut buf, sid).expect("strings serialize");
    if let Some(pid) = pid {
        buf.extend_from_slice(b",\"pid\":");
        serde_json::to_writer(&mut buf, pid).expect("strings serialize");
    }
    buf.push(b'}');
    Bytes::from(buf)
}

/// Encodes a refused namespace connection:
/// `44<nsp>,{"message":"...","data":...}` (`data` omitted when `None`).
pub fn encode_connect_error(nsp: &str, message: &str, data: Option<&Value>) -> Bytes {
    let mut buf = Vec::with_capacity(48 + nsp.len() + message.len());
    push_header(&mut buf, b'4', 0, nsp, None);
    buf.extend_from_slice(b"{\"message\":");
    serde_json::to_writer(&mut buf, message).expect("strings serialize");
    if let Some(data) = data {
        buf.extend_from_slice(b",\"data\":");
        // Binary in connect errors is not representable: written as a placeholder-free array.
        serde_json::to_writer(&mut buf, data).expect("values serialize");
    }
    buf.push(b'}');
    Bytes::from(buf)
}

/// Encodes a namespace disconnection: `41<nsp>,`.
pub fn encode_disconnect(nsp: &str) -> Bytes {
    let mut buf = Vec::with_capacity(4 + nsp.len());
    push_header(&mut buf, b'1', 0, nsp, None);
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(e: &Encoded) -> &str {
        std::str::from_utf8(&e.text).unwrap()
    }

    #[test]
    fn decodes_every_kind() {
        let p = decode(b"0", 10).unwrap();
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.payload),
            (PacketKind::Connect, "/", None)
        );
        let p = decode(br#"0/admin,{"token":"123"}"#, 10).unwrap();
        assert_eq!(p.nsp, "/admin");
        assert_eq!(
            p.payload.unwrap().get("token").unwrap().as_str(),
            Some("123")
        );
        let p = decode(b"1/admin,", 10).unwrap();
        assert_eq!((p.kind, p.nsp.as_str()), (PacketKind::Disconnect, "/admin"));
        let p = decode(br#"2/admin,12["hello",1]"#, 10).unwrap();
        assert_eq!((p.kind, p.id), (PacketKind::Event, Some(12)));
        let p = decode(br#"312["ok"]"#, 10).unwrap();
        assert_eq!((p.kind, p.id), (PacketKind::Ack, Some(12)));
        let p = decode(
            br#"52-["up",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            10,
        )
        .unwrap();
        assert_eq!((p.kind, p.attachments), (PacketKind::BinaryEvent, 2));
        let p = decode(br#"61-/x,7[{"_placeholder":true,"num":0}]"#, 10).unwrap();
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.id),
            (PacketKind::BinaryAck, "/x", Some(7))
        );
    }

    #[test]
    fn rejects_malformed_packets() {
        for bad in [
            &b""[..],
            b"9",
            b"2{}",
            b"2abc",
            b"2abc[\"x\"]",
            b"2[]",
            b"2[{}]",
            b"2[\"connect\"]",
            b"2[\"disconnect\"]",
            b"3[\"no id\"]",
            b"1{}",
            b"0[]",
            b"5[\"x\"]",
            b"5x-[\"x\"]",
            b"511-[\"x\"]",
            b"299999999999999999999[\"x\"]",
            b"2[\"x\"",
        ] {
            assert!(
                decode(bad, 10).is_err(),
                "{:?} should be rejected",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn encodes_events_acks_and_control_packets() {
        let e = encode_event("/", "message", &(1, "2"), Args::Spread, None).unwrap();
        assert_eq!(text(&e), r#"42["message",1,"2"]"#);
        let e = encode_event("/", "hi", &(), Args::Spread, None).unwrap();
        assert_eq!(text(&e), r#"42["hi"]"#);
        let e = encode_event("/", "hi", &7, Args::Spread, None).unwrap_err();
        assert!(matches!(e, EncodeError::NotAnArray));
        let e = encode_event("/", "hi", &Vec::<u8>::new(), Args::Spread, Some(3)).unwrap();
        assert_eq!(text(&e), r#"423["hi"]"#);
        let e = encode_event(
            "/chat",
            "hi",
            &serde_json::json!({"a":1}),
            Args::One,
            Some(5),
        )
        .unwrap();
        assert_eq!(text(&e), r#"42/chat,5["hi",{"a":1}]"#);
        let e = encode_ack("/", 4, &("ok",), Args::Spread).unwrap();
        assert_eq!(text(&e), r#"434["ok"]"#);
        let e = encode_ack("/x", 4, &Vec::<u8>::new(), Args::Spread).unwrap();
        assert_eq!(text(&e), r#"43/x,4[]"#);
        assert_eq!(&encode_connect("/", "abc", None)[..], br#"40{"sid":"abc"}"#);
        assert_eq!(&encode_disconnect("/x")[..], b"41/x,");
        assert_eq!(
            &encode_connect_error("/random", "Invalid namespace", None)[..],
            br#"44/random,{"message":"Invalid namespace"}"#
        );
    }

    #[test]
    fn binary_data_becomes_a_binary_packet() {
        let data = (
            Bytes::from_static(b"\x01"),
            "x",
            Bytes::from_static(b"\x02"),
        );
        let e = encode_event("/", "up", &data, Args::Spread, Some(9)).unwrap();
        assert_eq!(
            text(&e),
            r#"452-9["up",{"_placeholder":true,"num":0},"x",{"_placeholder":true,"num":1}]"#
        );
        assert_eq!(e.attachments.len(), 2);
        let e = encode_ack("/n", 1, &Bytes::from_static(b"\x01"), Args::One).unwrap();
        assert_eq!(text(&e), r#"461-/n,1[{"_placeholder":true,"num":0}]"#);
    }

    #[test]
    fn an_offset_is_appended_and_packets_read_back() {
        let e = encode_event("/chat", "m", &(1, "x"), Args::Spread, None).unwrap();
        let with = e.with_last_arg("12-0");
        assert_eq!(text(&with), r#"42/chat,["m",1,"x","12-0"]"#);
        let bin = encode_event("/", "up", &Bytes::from_static(b"\x07"), Args::One, None).unwrap();
        let with = bin.with_last_arg("3");
        assert_eq!(
            text(&with),
            r#"451-["up",{"_placeholder":true,"num":0},"3"]"#
        );
        let p = with.decode().unwrap();
        assert_eq!(p.kind, PacketKind::BinaryEvent);
        assert_eq!(
            p.payload,
            Some(Value::Array(vec![
                Value::from("up"),
                Value::Binary(Bytes::from_static(b"\x07")),
                Value::from("3"),
            ]))
        );
        let acked = encode_event("/x", "q", &1, Args::One, Some(9)).unwrap();
        let p = acked.decode().unwrap();
        assert_eq!((p.nsp.as_str(), p.id), ("/x", Some(9)));
    }

    #[test]
    fn echo_keeps_bytes_identical() {
        let raw = br#"2["message",1,"2",{"3":[true]}]"#;
        let p = decode(raw, 10).unwrap();
        let Some(Value::Array(items)) = p.payload else {
            panic!()
        };
        let e = encode_event_values("/", "message", &items[1..], None).unwrap();
        assert_eq!(&e.text[1..], &raw[..]);
    }
}
