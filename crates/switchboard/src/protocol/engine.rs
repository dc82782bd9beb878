//! Engine.IO v4 packets and polling payloads: a pure codec, no I/O.
//!
//! A text packet is one type character followed by its data (`4hello`,
//! `2probe`). Binary packets travel as raw bytes on WebSocket and as `b` +
//! base64 inside a polling payload, where packets are separated by the record
//! separator `\x1e`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};

/// The record separator between packets of a polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// One decoded Engine.IO packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0`: the handshake, sent by the server only (JSON data).
    Open(Bytes),
    /// `1`: close the session.
    Close,
    /// `2`: heartbeat ping (or `2probe` during an upgrade).
    Ping(Bytes),
    /// `3`: heartbeat pong (or `3probe`).
    Pong(Bytes),
    /// `4`: a text message; the bytes are valid UTF-8.
    Message(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// `5`: the client completes a transport upgrade.
    Upgrade,
    /// `6`: no operation (releases a pending poll during an upgrade).
    Noop,
}

/// Why bytes could not be decoded as Engine.IO packets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// An empty packet.
    #[error("empty packet")]
    Empty,
    /// The first character is not a packet type.
    #[error("unknown packet type {0:#04x}")]
    UnknownType(u8),
    /// The text is not valid UTF-8.
    #[error("packet is not valid UTF-8")]
    InvalidUtf8,
    /// A `b` packet whose base64 does not decode.
    #[error("invalid base64 in binary packet")]
    InvalidBase64,
}

impl Packet {
    /// Decodes one text packet (a WebSocket text frame, or one record of a
    /// polling payload). `text` must already be known to be UTF-8.
    pub fn decode_text(text: Bytes) -> Result<Packet, DecodeError> {
        let Some(&kind) = text.first() else {
            return Err(DecodeError::Empty);
        };
        let data = text.slice(1..);
        Ok(match kind {
            b'0' => Packet::Open(data),
            b'1' => Packet::Close,
            b'2' => Packet::Ping(data),
            b'3' => Packet::Pong(data),
            b'4' => Packet::Message(data),
            b'5' => Packet::Upgrade,
            b'6' => Packet::Noop,
            other => return Err(DecodeError::UnknownType(other)),
        })
    }

    /// Encodes a text packet into its wire form (`<type><data>`), or returns
    /// the raw bytes of a binary one.
    pub fn encode(&self) -> Bytes {
        let (kind, data): (u8, &[u8]) = match self {
            Packet::Open(d) => (b'0', d),
            Packet::Close => (b'1', b""),
            Packet::Ping(d) => (b'2', d),
            Packet::Pong(d) => (b'3', d),
            Packet::Message(d) => (b'4', d),
            Packet::Binary(d) => return d.clone(),
            Packet::Upgrade => (b'5', b""),
            Packet::Noop => (b'6', b""),
        };
        let mut out = BytesMut::with_capacity(1 + data.len());
        out.put_u8(kind);
        out.put_slice(data);
        out.freeze()
    }
}

/// An outgoing frame, already encoded once and shareable between recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete text packet including its type character (`42[...]`, `2`).
    Text(Bytes),
    /// Raw binary data (a Socket.IO attachment).
    Binary(Bytes),
}

impl Frame {
    /// Bytes this frame occupies in a send queue.
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(b) | Frame::Binary(b) => b.len(),
        }
    }

    /// Whether the frame carries no bytes at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A text frame carrying one Engine.IO message (`4` + `text`).
    pub fn message(text: &[u8]) -> Frame {
        let mut out = BytesMut::with_capacity(1 + text.len());
        out.put_u8(b'4');
        out.put_slice(text);
        Frame::Text(out.freeze())
    }

    /// A static control packet: `1` close, `2` ping, `3` pong, `6` noop.
    pub fn control(kind: &'static [u8]) -> Frame {
        Frame::Text(Bytes::from_static(kind))
    }
}

/// A decoded polling body: the packets before the first error, and that
/// error (the reference delivers the packets before a bad one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Packets decoded, in order, up to the first bad one.
    pub packets: Vec<Packet>,
    /// The first error, if any.
    pub error: Option<DecodeError>,
}

/// Decodes a polling request body into its packets.
pub fn decode_payload(body: &Bytes) -> Payload {
    let mut out = Payload {
        packets: Vec::new(),
        error: None,
    };
    if body.is_empty() {
        out.error = Some(DecodeError::Empty);
        return out;
    }
    if std::str::from_utf8(body).is_err() {
        out.error = Some(DecodeError::InvalidUtf8);
        return out;
    }
    let mut start = 0;
    loop {
        let end = body[start..]
            .iter()
            .position(|b| *b == SEPARATOR)
            .map_or(body.len(), |i| start + i);
        match decode_record(body.slice(start..end)) {
            Ok(p) => out.packets.push(p),
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
        if end == body.len() {
            return out;
        }
        start = end + 1;
    }
}

fn decode_record(record: Bytes) -> Result<Packet, DecodeError> {
    if record.first() == Some(&b'b') {
        let data = STANDARD
            .decode(&record[1..])
            .map_err(|_| DecodeError::InvalidBase64)?;
        return Ok(Packet::Binary(Bytes::from(data)));
    }
    // A client `0` is not an error: the reference ignores it (so does the
    // session).
    Packet::decode_text(record)
}

/// Encodes frames as one polling response body (`\x1e`-separated, binary
/// frames as `b` + base64).
pub fn encode_payload<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Bytes {
    let mut out = BytesMut::new();
    for (i, frame) in frames.into_iter().enumerate() {
        if i > 0 {
            out.put_u8(SEPARATOR);
        }
        match frame {
            Frame::Text(t) => out.put_slice(t),
            Frame::Binary(b) => {
                out.put_u8(b'b');
                let start = out.len();
                out.resize(start + base64::encoded_len(b.len(), true).unwrap_or(0), 0);
                let n = STANDARD
                    .encode_slice(b, &mut out[start..])
                    .expect("buffer sized by encoded_len");
                out.truncate(start + n);
            }
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_packets_round_trip() {
        for raw in ["1", "2", "2probe", "3probe", "4hello", "5", "6", "4"] {
            let p = Packet::decode_text(Bytes::from(raw)).unwrap();
            assert_eq!(p.encode(), Bytes::from(raw));
        }
        assert_eq!(
            Packet::decode_text(Bytes::from("4hé")).unwrap(),
            Packet::Message(Bytes::from("hé"))
        );
    }

    #[test]
    fn bad_text_packets_are_errors() {
        assert_eq!(Packet::decode_text(Bytes::new()), Err(DecodeError::Empty));
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"9x")),
            Err(DecodeError::UnknownType(b'9'))
        );
    }

    #[test]
    fn payload_splits_on_record_separator_and_decodes_base64() {
        let body = Bytes::from_static(b"4hello\x1ebAQIDBA==\x1e2");
        let packets = decode_payload(&body).packets;
        assert_eq!(
            packets,
            vec![
                Packet::Message(Bytes::from("hello")),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])),
                Packet::Ping(Bytes::new()),
            ]
        );
    }

    #[test]
    fn bad_payloads_are_errors() {
        for bad in [&b"abc"[..], b"", b"b!!!", &[b'4', 0xff]] {
            assert!(decode_payload(&Bytes::copy_from_slice(bad)).error.is_some());
        }
        let partial = decode_payload(&Bytes::from_static(b"4a\x1e"));
        assert_eq!(partial.packets, vec![Packet::Message(Bytes::from("a"))]);
        assert_eq!(partial.error, Some(DecodeError::Empty));
    }

    #[test]
    fn payload_encoding_joins_and_base64s() {
        let frames = [
            Frame::Text(Bytes::from_static(b"4hello")),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            Frame::control(b"2"),
        ];
        assert_eq!(
            encode_payload(&frames),
            Bytes::from_static(b"4hello\x1ebAQIDBA==\x1e2")
        );
    }
}
