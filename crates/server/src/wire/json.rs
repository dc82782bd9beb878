//! The plain WebSocket protocol: one JSON object per text message,
//! `{type, payload, id, timestamp}`.
//!
//! A client request may carry an `id`; its answer (`ack` or `error`)
//! carries the same `id`. Publications arrive as `message` without an id.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hub::Delivery;

/// What a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClientType {
    /// `{token}`: authenticate (the only request besides `ping` accepted
    /// before authentication).
    Auth,
    /// `{channel, since?: {offset, epoch}}`.
    Subscribe,
    /// `{channel}`.
    Unsubscribe,
    /// `{channel, data}`: publish.
    Message,
    /// `{channel}`: who is present.
    Presence,
    /// `{channel, limit?}`: the last publications.
    History,
    /// Keep-alive; answered by `pong`.
    Ping,
}

/// A request from a client.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientMessage {
    /// What is asked.
    #[serde(rename = "type")]
    pub(crate) kind: ClientType,
    /// Its parameters.
    #[serde(default)]
    pub(crate) payload: Value,
    /// Correlates the answer (number or string).
    #[serde(default)]
    pub(crate) id: Option<Value>,
    /// The client's clock, informational.
    #[serde(default)]
    pub(crate) timestamp: Option<Value>,
}

/// Why a text message is not a valid request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JsonError {
    /// Not JSON at all (closes the connection with 1003).
    #[error("invalid JSON")]
    InvalidJson,
    /// JSON, but not a request of a known type (answered with an error).
    #[error("unknown or malformed request: {0}")]
    BadRequest(String),
}

/// Parses one client text message.
pub(crate) fn parse(text: &str) -> Result<ClientMessage, JsonError> {
    let value: Value = serde_json::from_str(text).map_err(|_| JsonError::InvalidJson)?;
    serde_json::from_value(value).map_err(|e| JsonError::BadRequest(e.to_string()))
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ServerMessage<'a, P = Value> {
    /// `ack`, `error`, `message`, `pong`, `join`, `leave`.
    #[serde(rename = "type")]
    pub(crate) kind: &'a str,
    /// Its content.
    pub(crate) payload: P,
    /// The id of the request this answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<Value>,
    /// Server time, milliseconds since the epoch.
    pub(crate) timestamp: u64,
}

fn now_ms() -> u64 {
    crate::history::now_ms()
}

/// An `ack` answering request `id`.
pub(crate) fn ack(id: Option<Value>, payload: Value) -> String {
    encode("ack", payload, id)
}

/// An `error` `{code, message}` answering request `id`.
pub(crate) fn error(id: Option<Value>, code: &str, message: &str) -> String {
    encode(
        "error",
        serde_json::json!({ "code": code, "message": message }),
        id,
    )
}

/// Any server message.
pub(crate) fn encode(kind: &str, payload: Value, id: Option<Value>) -> String {
    serde_json::to_string(&ServerMessage {
        kind,
        payload,
        id,
        timestamp: now_ms(),
    })
    .expect("JSON values serialize")
}

/// A publication as pushed to subscribers (encoded once per delivery).
pub(crate) fn publication(d: &Delivery) -> Vec<u8> {
    serde_json::to_vec(&ServerMessage {
        kind: "message",
        payload: d.body(),
        id: None,
        timestamp: now_ms(),
    })
    .expect("JSON values serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelName;
    use crate::history::Publication;
    use serde_json::json;

    #[test]
    fn requests_parse_and_bad_input_is_classified() {
        let m = parse(r#"{"type":"subscribe","payload":{"channel":"chat:lobby"},"id":7}"#).unwrap();
        assert_eq!(m.kind, ClientType::Subscribe);
        assert_eq!(m.id, Some(json!(7)));
        assert_eq!(m.payload["channel"], "chat:lobby");
        let m = parse(r#"{"type":"ping"}"#).unwrap();
        assert_eq!((m.kind, m.payload), (ClientType::Ping, Value::Null));
        assert_eq!(parse("{nope"), Err(JsonError::InvalidJson));
        assert!(matches!(
            parse(r#"{"type":"teleport"}"#),
            Err(JsonError::BadRequest(_))
        ));
        assert!(matches!(
            parse(r#"{"payload":{}}"#),
            Err(JsonError::BadRequest(_))
        ));
        assert!(matches!(parse(r#"[1,2]"#), Err(JsonError::BadRequest(_))));
        assert!(matches!(
            parse(r#"{"type":"ping","extra":1}"#),
            Err(JsonError::BadRequest(_))
        ));
    }

    #[test]
    fn answers_carry_the_request_id_and_publications_their_position() {
        let a: Value = serde_json::from_str(&ack(Some(json!("r1")), json!({"ok": true}))).unwrap();
        assert_eq!(
            (a["type"].as_str(), a["id"].as_str()),
            (Some("ack"), Some("r1"))
        );
        assert!(a["timestamp"].as_u64().unwrap() > 0);
        let e: Value = serde_json::from_str(&error(Some(json!(3)), "forbidden", "no")).unwrap();
        assert_eq!(e["payload"], json!({"code": "forbidden", "message": "no"}));
        let none: Value = serde_json::from_str(&encode("pong", Value::Null, None)).unwrap();
        assert!(none.get("id").is_none());
        let d = Delivery::new(
            ChannelName::parse("chat:lobby").unwrap(),
            "e1".into(),
            Publication {
                offset: 4,
                data: json!({"text": "hi"}).into(),
                from: Some("ada".into()),
                time_ms: 1,
            },
        );
        let p: Value = serde_json::from_slice(&publication(&d)).unwrap();
        assert_eq!(p["type"], "message");
        assert_eq!(
            p["payload"],
            json!({"channel": "chat:lobby", "offset": 4, "epoch": "e1", "data": {"text": "hi"}, "from": "ada"})
        );
    }
}
