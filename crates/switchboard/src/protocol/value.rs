//! [`Value`]: the dynamic payload of Socket.IO events.
//!
//! Like JSON, plus binary: Socket.IO carries binary attachments inside event
//! arguments, so a payload value must be able to hold bytes anywhere. Objects
//! keep their key order (`{"b":1,"a":2}` echoes byte for byte).
//!
//! Typed data converts with [`from_value`] and [`to_value`]; emitting typed
//! data never builds a `Value` at all (see [`write_json`]).

use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize};
use serde_json::Number;

/// A JSON value that may also hold binary data.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `null`.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string.
    String(String),
    /// Binary data (a Socket.IO attachment).
    Binary(Bytes),
    /// An array.
    Array(Vec<Value>),
    /// An object, in key order.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// The field `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A number as `u64`, when it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// A number as `f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    /// The bytes of a binary value.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// Whether this value, or anything inside it, is binary.
    pub fn has_binary(&self) -> bool {
        match self {
            Value::Binary(_) => true,
            Value::Array(items) => items.iter().any(Value::has_binary),
            Value::Object(fields) => fields.iter().any(|(_, v)| v.has_binary()),
            _ => false,
        }
    }

    /// Replaces `{"_placeholder":true,"num":N}` objects with attachment `N`.
    /// Fails when a placeholder names a missing attachment.
    pub(crate) fn fill_placeholders(&mut self, attachments: &[Bytes]) -> Result<(), ()> {
        match self {
            Value::Array(items) => items
                .iter_mut()
                .try_for_each(|v| v.fill_placeholders(attachments)),
            Value::Object(fields) => {
                if let Some(num) = placeholder_num(fields) {
                    let data = attachments.get(num).ok_or(())?;
                    *self = Value::Binary(data.clone());
                    return Ok(());
                }
                fields
                    .iter_mut()
                    .try_for_each(|(_, v)| v.fill_placeholders(attachments))
            }
            _ => Ok(()),
        }
    }
}

fn placeholder_num(fields: &[(String, Value)]) -> Option<usize> {
    if fields.len() != 2 {
        return None;
    }
    let mut is_placeholder = false;
    let mut num = None;
    for (k, v) in fields {
        match (k.as_str(), v) {
            ("_placeholder", Value::Bool(true)) => is_placeholder = true,
            ("num", Value::Number(n)) => num = n.as_u64(),
            _ => return None,
        }
    }
    if is_placeholder {
        num.and_then(|n| usize::try_from(n).ok())
    } else {
        None
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Number(n.into())
    }
}
impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Number(n.into())
    }
}
impl From<Bytes> for Value {
    fn from(b: Bytes) -> Self {
        Value::Binary(b)
    }
}
impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Number(n),
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(a) => Value::Array(a.into_iter().map(Value::from).collect()),
            serde_json::Value::Object(o) => {
                Value::Object(o.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
            }
        }
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => n.serialize(s),
            Value::String(v) => s.serialize_str(v),
            Value::Binary(b) => s.serialize_bytes(b),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Object(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Binary(Bytes::copy_from_slice(v)))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Binary(Bytes::from(v)))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            fields.push((k, v));
        }
        Ok(Value::Object(fields))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// Why a [`Value`] could not become the requested type, or the reverse.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

impl de::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError(msg.to_string())
    }
}

/// Converts a value into typed data. Binary values deserialize as bytes
/// (`bytes::Bytes`, `serde_bytes::ByteBuf`, `Vec<u8>`).
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ValueError> {
    T::deserialize(value)
}

/// Converts typed data into a value; byte buffers that serialize as bytes
/// (`bytes::Bytes`) become [`Value::Binary`].
pub fn to_value<T: Serialize + ?Sized>(data: &T) -> Result<Value, ValueError> {
    let mut attachments = Vec::new();
    let mut buf = Vec::new();
    write_json(&mut buf, data, &mut attachments).map_err(|e| ValueError(e.to_string()))?;
    let mut value: Value = serde_json::from_slice(&buf).map_err(|e| ValueError(e.to_string()))?;
    if !attachments.is_empty() {
        value
            .fill_placeholders(&attachments)
            .map_err(|()| ValueError("attachment count mismatch".into()))?;
    }
    Ok(value)
}

impl IntoDeserializer<'_, ValueError> for Value {
    type Deserializer = Value;
    fn into_deserializer(self) -> Value {
        self
    }
}

impl<'de> de::Deserializer<'de> for Value {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => n
                .deserialize_any(visitor)
                .map_err(|e| ValueError(e.to_string())),
            Value::String(s) => visitor.visit_string(s),
            Value::Binary(b) => visitor.visit_byte_buf(b.into()),
            Value::Array(items) => {
                let mut seq = de::value::SeqDeserializer::new(items.into_iter());
                let v = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(v)
            }
            Value::Object(fields) => {
                let mut map = de::value::MapDeserializer::new(fields.into_iter());
                let v = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(v)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self {
            Value::String(s) => visitor.visit_enum(s.into_deserializer()),
            Value::Object(mut fields) if fields.len() == 1 => {
                let (k, v) = fields.pop().expect("one field");
                visitor.visit_enum(de::value::MapAccessDeserializer::new(
                    de::value::MapDeserializer::new(std::iter::once((k, v))),
                ))
            }
            _ => Err(de::Error::custom(
                "expected a string or a one-key object for an enum",
            )),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// A JSON formatter that writes byte arrays as Socket.IO placeholders
/// (`{"_placeholder":true,"num":N}`) and keeps the bytes as attachments.
struct PlaceholderFormatter<'a> {
    attachments: &'a mut Vec<Bytes>,
}

impl serde_json::ser::Formatter for PlaceholderFormatter<'_> {
    fn write_byte_array<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        value: &[u8],
    ) -> std::io::Result<()> {
        let num = self.attachments.len();
        self.attachments.push(Bytes::copy_from_slice(value));
        write!(writer, "{{\"_placeholder\":true,\"num\":{num}}}")
    }
}

/// Serializes `data` as compact JSON into `out`, turning every byte buffer
/// into a placeholder and appending its bytes to `attachments`.
pub fn write_json<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    data: &T,
    attachments: &mut Vec<Bytes>,
) -> Result<(), serde_json::Error> {
    let mut ser = serde_json::Serializer::with_formatter(out, PlaceholderFormatter { attachments });
    data.serialize(&mut ser)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_key_order() {
        let text = br#"{"b":1,"a":[true,null,"x",1.5,-3],"c":{"z":1,"y":2}}"#;
        let v: Value = serde_json::from_slice(text).unwrap();
        let mut out = Vec::new();
        write_json(&mut out, &v, &mut Vec::new()).unwrap();
        assert_eq!(out, text);
    }

    #[test]
    fn binary_becomes_placeholder_and_back() {
        let v = Value::Array(vec![
            Value::from("x"),
            Value::Object(vec![(
                "file".into(),
                Value::Binary(Bytes::from_static(b"\x01\x02")),
            )]),
        ]);
        let mut out = Vec::new();
        let mut att = Vec::new();
        write_json(&mut out, &v, &mut att).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"["x",{"file":{"_placeholder":true,"num":0}}]"#
        );
        assert_eq!(att, vec![Bytes::from_static(b"\x01\x02")]);
        let mut back: Value = serde_json::from_slice(&out).unwrap();
        back.fill_placeholders(&att).unwrap();
        assert_eq!(back, v);
        let mut missing: Value = serde_json::from_slice(&out).unwrap();
        assert!(missing.fill_placeholders(&[]).is_err());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Upload {
        name: String,
        size: Option<u32>,
        data: Bytes,
        kind: Kind,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Kind {
        Image,
        Other(String),
    }

    #[test]
    fn typed_conversion_with_binary() {
        let up = Upload {
            name: "a.png".into(),
            size: None,
            data: Bytes::from_static(b"PNG"),
            kind: Kind::Other("x".into()),
        };
        let v = to_value(&up).unwrap();
        assert_eq!(
            v.get("data"),
            Some(&Value::Binary(Bytes::from_static(b"PNG")))
        );
        assert_eq!(v.get("size"), Some(&Value::Null));
        let back: Upload = from_value(v).unwrap();
        assert_eq!(back, up);
        let unit: Kind = from_value(Value::from("Image")).unwrap();
        assert_eq!(unit, Kind::Image);
        assert!(from_value::<u32>(Value::from("nope")).is_err());
    }
}
