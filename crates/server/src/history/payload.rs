//! A publication's data, serialized once: the JSON text is made when the
//! publication arrives and shared (reference-counted) by the size check,
//! the database, the history, and every protocol's encoding, which copy
//! the text as it is instead of serializing a tree again.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// JSON text, valid and compact, shared by every holder.
#[derive(Clone)]
pub struct Payload(Arc<RawValue>);

impl Payload {
    /// The JSON of `value` (serialized here, once).
    pub fn from_value(value: &serde_json::Value) -> Payload {
        let raw =
            serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned());
        Payload(Arc::from(raw))
    }

    /// JSON text read back (from the database); `None` if it is not JSON.
    pub fn from_json(text: String) -> Option<Payload> {
        RawValue::from_string(text)
            .ok()
            .map(|raw| Payload(Arc::from(raw)))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Its size in bytes (what the namespace's `max_message_size` bounds).
    pub fn len(&self) -> usize {
        self.as_str().len()
    }

    /// Whether the text is empty (never, for valid JSON).
    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }

    /// The data as a JSON tree (parsed again: for tests and rare readers).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.as_str()).unwrap_or(serde_json::Value::Null)
    }
}

impl From<serde_json::Value> for Payload {
    fn from(value: serde_json::Value) -> Self {
        Payload::from_value(&value)
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(|raw| Payload(Arc::from(raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_payload_is_serialized_once_and_written_as_it_is() {
        let v = json!({"b": [1, 2], "a": "x"});
        let p = Payload::from_value(&v);
        assert_eq!(p.as_str(), serde_json::to_string(&v).unwrap(), "compact");
        assert_eq!(p.len(), p.as_str().len());
        let outer = serde_json::to_string(&json!({"data": p.to_value()})).unwrap();
        #[derive(Serialize)]
        struct Outer<'a> {
            data: &'a Payload,
        }
        assert_eq!(serde_json::to_string(&Outer { data: &p }).unwrap(), outer);
        let back: Payload = serde_json::from_str(&outer[8..outer.len() - 1]).unwrap();
        assert_eq!(back, p);
        assert!(Payload::from_json("{nope".into()).is_none());
        assert_eq!(
            Payload::from_json("[1]".into()).unwrap().to_value(),
            json!([1])
        );
    }
}
