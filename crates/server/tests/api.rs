//! The HTTP API over real connections.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{Value, json};
use switchboard_server::app::App;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start() -> (SocketAddr, Arc<App>) {
    let mut config = common::config("api");
    config.api.key = Some("test-api-key-0123456789".into());
    let app = App::new(config).unwrap();
    (common::serve(&app).await, app)
}

/// One request; returns the status and the JSON body.
async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(k) = key {
        req.push_str(&format!("Authorization: apikey {k}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    let status = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let json_start = out.find("\r\n\r\n").unwrap() + 4;
    let text = &out[json_start..];
    // Bodies are small: tolerate chunked framing by taking the JSON object.
    let (from, to) = (
        text.find('{').unwrap_or(0),
        text.rfind('}').map_or(0, |i| i + 1),
    );
    (
        status,
        serde_json::from_str(&text[from..to]).unwrap_or(Value::Null),
    )
}

const KEY: Option<&str> = Some("test-api-key-0123456789");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_is_idempotent_and_readable_back() {
    let (addr, _app) = start().await;
    let body =
        json!({ "channel": "chat:lobby", "data": { "text": "hi" }, "idempotency_key": "req-1" });
    let (s, a) = call(addr, "POST", "/api/publish", KEY, Some(body.clone())).await;
    assert_eq!((s, a["offset"].as_u64()), (200, Some(1)), "{a}");
    let (s, b) = call(addr, "POST", "/api/publish", KEY, Some(body)).await;
    assert_eq!(
        (s, b["offset"].as_u64()),
        (200, Some(1)),
        "a retry is stored once: {b}"
    );
    let (s, h) = call(addr, "GET", "/api/history?channel=chat:lobby", KEY, None).await;
    assert_eq!(s, 200);
    assert_eq!(h["publications"].as_array().unwrap().len(), 1, "{h}");
    assert_eq!(h["publications"][0]["data"], json!({ "text": "hi" }));
    let (s, r) = call(
        addr,
        "POST",
        "/api/broadcast",
        KEY,
        Some(json!({ "channels": ["chat:a", "nope:b", "bad name"], "data": 1 })),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(r["results"][0]["offset"], 1);
    assert_eq!(r["results"][1]["error"]["code"], "unknown_namespace");
    assert_eq!(r["results"][2]["error"]["code"], "bad_channel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_stable_codes() {
    let (addr, _app) = start().await;
    let body = json!({ "channel": "chat:lobby", "data": 1 });
    let (s, e) = call(addr, "POST", "/api/publish", None, Some(body.clone())).await;
    assert_eq!((s, e["code"].as_str()), (401, Some("api_key_missing")));
    let (s, e) = call(
        addr,
        "POST",
        "/api/publish",
        Some("wrong-key-wrong-key"),
        Some(body),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (401, Some("bad_api_key")));
    let (s, e) = call(
        addr,
        "POST",
        "/api/publish",
        KEY,
        Some(json!({ "channel": "nope:x", "data": 1 })),
    )
    .await;
    assert_eq!((s, e["code"].as_str()), (400, Some("unknown_namespace")));
    let big = json!({ "channel": "chat:lobby", "data": "x".repeat(20_000) });
    let (s, e) = call(addr, "POST", "/api/publish", KEY, Some(big)).await;
    assert_eq!((s, e["code"].as_str()), (413, Some("message_too_large")));
    let (s, e) = call(addr, "GET", "/api/presence?channel=user:1", KEY, None).await;
    assert_eq!(
        (s, e["code"].as_str()),
        (403, Some("forbidden")),
        "user channels keep no presence"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_info_and_the_openapi_document() {
    let (addr, _app) = start().await;
    let (s, c) = call(addr, "GET", "/api/channels", KEY, None).await;
    assert_eq!((s, c["channels"].as_array().map(Vec::len)), (200, Some(0)));
    let (s, i) = call(addr, "GET", "/api/info", KEY, None).await;
    assert_eq!((s, i["name"].as_str()), (200, Some("switchboard")));
    let (s, doc) = call(addr, "GET", "/api/openapi.json", None, None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    for path in [
        "/api/publish",
        "/api/broadcast",
        "/api/presence",
        "/api/history",
        "/api/channels",
        "/api/info",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors_after_the_key_is_checked() {
    let (addr, _app) = start().await;
    // No key: 401 first, whatever the query.
    let (status, body) = call(addr, "GET", "/api/history", None, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("api_key_missing"))
    );
    // A key but no channel: a JSON 400.
    let (status, body) = call(addr, "GET", "/api/presence", KEY, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );
    // A body that is not JSON, or not the expected shape: a JSON 400.
    for raw in [
        "{not json",
        r#"{"channel": 5, "data": 1}"#,
        r#"{"data": 1}"#,
    ] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "POST /api/publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: apikey test-api-key-0123456789\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{raw}",
            raw.len()
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{raw}: {out}");
        let body = &out[out.find('{').unwrap()..=out.rfind('}').unwrap()];
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "bad_request", "{raw}: {out}");
    }
}
