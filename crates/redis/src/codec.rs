//! The encodings of Node's cluster adapters: MessagePack as notepack.io
//! and @msgpack/msgpack write it (maps, `bin` for buffers, integers in
//! their smallest form, float64 for other numbers), and JSON as
//! `JSON.stringify` writes it (a buffer becomes `{"type":"Buffer","data":
//! [...]}`). Messages are handled as [`Value`] trees, which keep key order
//! and binary data.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use switchboard::Value;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    /// Not MessagePack.
    #[error("invalid MessagePack: {0}")]
    Msgpack(#[from] rmp_serde::decode::Error),
    /// Not JSON.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Not valid base64.
    #[error("invalid base64")]
    Base64,
}

/// A [`Value`] as JavaScript's MessagePack encoders write it.
struct Js<'a>(&'a Value);

impl Serialize for Js<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    s.serialize_u64(u)
                } else if let Some(i) = n.as_i64() {
                    s.serialize_i64(i)
                } else {
                    let f = n.as_f64().unwrap_or(0.0);
                    // A JavaScript number with no fraction is written as an
                    // integer.
                    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                        if f >= 0.0 {
                            s.serialize_u64(f as u64)
                        } else {
                            s.serialize_i64(f as i64)
                        }
                    } else {
                        s.serialize_f64(f)
                    }
                }
            }
            Value::String(v) => s.serialize_str(v),
            Value::Binary(b) => s.serialize_bytes(b),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&Js(item))?;
                }
                seq.end()
            }
            Value::Object(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, &Js(v))?;
                }
                map.end()
            }
        }
    }
}

/// MessagePack of a value.
pub(crate) fn pack(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let mut ser = rmp_serde::Serializer::new(&mut out);
    // Writing into a Vec cannot fail, and every Value is serializable.
    let _ = Js(value).serialize(&mut ser);
    out
}

/// How deep MessagePack may nest (serde_json's limit for JSON): deeper
/// input is refused rather than followed down the stack (rmp-serde's own
/// limit, 1024 levels, overflows a 2 MiB thread stack).
const MAX_DEPTH: usize = 128;

/// A value from MessagePack.
pub(crate) fn unpack(bytes: &[u8]) -> Result<Value, DecodeError> {
    use serde::Deserialize as _;
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    Ok(Value::deserialize(&mut de)?)
}

/// JSON of a value, as `JSON.stringify` writes it.
pub(crate) fn to_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let _ = serde_json::to_writer(&mut out, &JsJson(value));
    out
}

/// A value from JSON.
pub(crate) fn from_json(bytes: &[u8]) -> Result<Value, DecodeError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// A message that is JSON when it starts with `{`, MessagePack otherwise
/// (how every Node adapter tells them apart).
pub(crate) fn decode_any(bytes: &[u8]) -> Result<Value, DecodeError> {
    if bytes.first() == Some(&b'{') {
        from_json(bytes)
    } else {
        unpack(bytes)
    }
}

/// Base64 (standard alphabet, padded) of bytes.
pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Bytes from base64.
pub(crate) fn base64_decode(text: &[u8]) -> Result<Vec<u8>, DecodeError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| DecodeError::Base64)
}

/// A [`Value`] as `JSON.stringify` writes it: a buffer is
/// `{"type":"Buffer","data":[...]}`.
struct JsJson<'a>(&'a Value);

impl Serialize for JsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Binary(b) => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("type", "Buffer")?;
                map.serialize_entry("data", &b[..])?;
                map.end()
            }
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&JsJson(item))?;
                }
                seq.end()
            }
            Value::Object(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, &JsJson(v))?;
                }
                map.end()
            }
            other => other.serialize(s),
        }
    }
}

/// An object value from key/value pairs.
pub(crate) fn obj<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A string value.
pub(crate) fn s(text: impl Into<String>) -> Value {
    Value::String(text.into())
}

/// An array of strings.
pub(crate) fn strings<'a>(items: impl IntoIterator<Item = &'a String>) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|r| Value::String(r.clone()))
            .collect(),
    )
}

/// A field of an object as text (numbers too: JavaScript rooms may be
/// numbers).
pub(crate) fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An array field as texts (rooms). A JavaScript room that is neither a
/// string nor a number (`undefined`, written `null`) still names a room,
/// one no socket is in: it becomes the empty name rather than vanishing
/// (an empty room list would mean every socket).
pub(crate) fn texts(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| text(Some(i)).unwrap_or_default())
            .collect(),
        _ => Vec::new(),
    }
}

/// A field as a JSON value (for socket data and handshakes).
pub(crate) fn json_of(v: Option<&Value>) -> serde_json::Value {
    v.and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn msgpack_is_written_as_notepack_writes_it() {
        let v = obj([
            ("a", Value::from(1u64)),
            ("b", Value::from(200u64)),
            ("c", Value::from(-1i64)),
            ("d", Value::from(serde_json::json!(1.5))),
            ("e", Value::from(serde_json::json!(2.0))),
            ("f", Value::Binary(Bytes::from_static(b"\x01\x02"))),
            ("g", Value::Null),
        ]);
        let packed = pack(&v);
        // fixmap 7, then "a" 1 (fixint), "b" 200 (uint8), "c" -1 (negative
        // fixint), "d" float64, "e" 2 (an integral number is an integer),
        // "f" bin8, "g" nil.
        let expected: Vec<u8> = [
            &[
                0x87, 0xa1, b'a', 0x01, 0xa1, b'b', 0xcc, 200, 0xa1, b'c', 0xff, 0xa1, b'd', 0xcb,
            ][..],
            &1.5f64.to_be_bytes()[..],
            &[
                0xa1, b'e', 0x02, 0xa1, b'f', 0xc4, 2, 1, 2, 0xa1, b'g', 0xc0,
            ][..],
        ]
        .concat();
        assert_eq!(packed, expected);
        let back = unpack(&packed).unwrap();
        assert_eq!(back.get("f"), v.get("f"));
        assert_eq!(back.get("b"), v.get("b"));
    }

    #[test]
    fn json_writes_buffers_as_javascript_does() {
        let v = Value::Array(vec![s("x"), Value::Binary(Bytes::from_static(b"\x07"))]);
        assert_eq!(to_json(&v), br#"["x",{"type":"Buffer","data":[7]}]"#);
        assert_eq!(
            decode_any(br#"{"a":1}"#).unwrap().get("a"),
            Some(&Value::from(1u64))
        );
        assert!(decode_any(b"\xc1").is_err());
    }
}
