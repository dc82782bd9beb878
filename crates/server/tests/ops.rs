//! Operations over real connections: health and readiness, metrics that
//! follow the traffic, graceful shutdown, and disconnecting a user through
//! the HTTP API.

mod common;

use common::{Ws, ws_answer as answer, ws_authed as authed, ws_next as next, ws_send as send};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use switchboard_server::app::App;
use switchboard_server::channel::ChannelName;
use switchboard_server::node::Publisher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The bound of every single wait.
const WAIT: Duration = Duration::from_secs(10);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);
const API_KEY: &str = "ops-test-api-key-0123456789";

async fn start() -> (SocketAddr, Arc<App>) {
    let mut config = common::config("ops");
    config.api.key = Some(API_KEY.into());
    let app = App::new(config).unwrap();
    (common::serve(&app).await, app)
}

fn lobby() -> ChannelName {
    ChannelName::parse("chat:lobby").unwrap()
}

// ---------------------------------------------------------------- raw HTTP

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", self.head, self.body))
    }
}

/// Reads what is there (bounded); 0 at the end of the connection.
async fn read_more(tcp: &mut TcpStream, raw: &mut Vec<u8>) -> usize {
    let mut buf = [0u8; 8192];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .expect("timed out")
        .unwrap_or(0);
    raw.extend_from_slice(&buf[..n]);
    n
}

/// One request on its own connection: the answer's head, and its body by
/// its `Content-Length` or else to the end of the connection.
async fn http(addr: SocketAddr, request: String) -> Answer {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        assert!(
            read_more(&mut tcp, &mut raw).await > 0,
            "no answer: {raw:?}"
        );
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut answer = Answer {
        status,
        head,
        body: String::new(),
    };
    match answer.header("content-length") {
        Some(len) => {
            let len: usize = len.parse().unwrap();
            while raw.len() < end + len {
                assert!(read_more(&mut tcp, &mut raw).await > 0, "body cut");
            }
        }
        None => while read_more(&mut tcp, &mut raw).await > 0 {},
    }
    answer.body = String::from_utf8_lossy(&raw[end..]).into_owned();
    if answer
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        answer.body = dechunk(&answer.body);
    }
    answer
}

fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    loop {
        let line = raw.find("\r\n").expect("a chunk size");
        let size = usize::from_str_radix(raw[..line].trim(), 16).expect("a chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&raw[line + 2..line + 2 + size]);
        raw = &raw[line + 2 + size + 2..];
    }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

async fn api_post(addr: SocketAddr, path: &str, body: &Value) -> Answer {
    let body = body.to_string();
    http(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: apikey {API_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await
}

/// An upgrade of `/ws` by hand, to read a refusal.
async fn ws_upgrade(addr: SocketAddr) -> Answer {
    http(
        addr,
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .to_owned(),
    )
    .await
}

// ------------------------------------------------------------------ metrics

/// The value of one series (`name{labels}`), if present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map(|v| v.parse().unwrap())
}

/// Polls `/metrics` until `series` satisfies `ok`; returns its value.
async fn metric_until(addr: SocketAddr, series: &str, ok: impl Fn(Option<f64>) -> bool) -> f64 {
    let mut last = String::new();
    let found = tokio::time::timeout(WAIT, async {
        loop {
            last = get(addr, "/metrics").await.body;
            let value = metric(&last, series);
            if ok(value) {
                return value.unwrap_or(0.0);
            }
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| {
        panic!(
            "{series} is {:?}, never what was expected:\n{last}",
            metric(&last, series)
        )
    })
}

// ---------------------------------------------------------------- clients

/// Everything until the connection ends, and how it ended.
async fn until_closed(ws: &mut Ws) -> (Vec<Value>, u16) {
    let mut seen = Vec::new();
    loop {
        match next(ws).await {
            Ok(m) => seen.push(m),
            Err(code) => return (seen, code),
        }
    }
}

async fn subscribed(addr: SocketAddr, app: &App, user: &str) -> Ws {
    let mut ws = authed(addr, app, user).await;
    send(
        &mut ws,
        json!({"type": "subscribe", "payload": {"channel": "chat:lobby"}, "id": "sub"}),
    )
    .await;
    assert_eq!(answer(&mut ws, &json!("sub")).await["type"], "ack");
    ws
}

/// An event stream read by hand.
struct Sse {
    tcp: TcpStream,
    /// Everything after the head (chunk framing included).
    body: String,
}

impl Sse {
    async fn open(addr: SocketAddr, app: &App, user: &str) -> Sse {
        let token = app.verifier.issue_dev_token(user, Some(user), 600).unwrap();
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /events?channel=chat:lobby&token={token} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut s = Sse {
            tcp,
            body: String::new(),
        };
        while !s.body.contains("\r\n\r\n") {
            assert!(s.fill().await, "closed before an answer");
        }
        let end = s.body.find("\r\n\r\n").unwrap() + 4;
        let head: String = s.body.drain(..end).collect();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{head}"
        );
        s
    }

    /// Reads more; `false` at the end of the connection.
    async fn fill(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        let n = tokio::time::timeout(WAIT, self.tcp.read(&mut buf))
            .await
            .expect("timed out")
            .unwrap_or(0);
        self.body.push_str(&String::from_utf8_lossy(&buf[..n]));
        n > 0
    }

    /// Whether the body ended (the last chunk came).
    fn ended(&self) -> bool {
        self.body.ends_with("\r\n0\r\n\r\n") || self.body == "0\r\n\r\n"
    }

    /// Reads until the body ends (its last chunk).
    async fn until_ended(&mut self) {
        while !self.ended() {
            assert!(self.fill().await, "the connection closed mid-body");
        }
    }

    /// The events (`(event, data)`) of the body, in order.
    fn events(&self) -> Vec<(String, Value)> {
        let text = dechunk_prefix(&self.body);
        text.split("\n\n")
            .filter_map(|block| {
                let mut event = String::from("message");
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                Some((event, data?))
            })
            .collect()
    }
}

/// The complete chunks of a chunked body read so far.
fn dechunk_prefix(mut raw: &str) -> String {
    let mut out = String::new();
    while let Some(line) = raw.find("\r\n") {
        let Ok(size) = usize::from_str_radix(raw[..line].trim(), 16) else {
            break;
        };
        if size == 0 || raw.len() < line + 2 + size + 2 {
            break;
        }
        out.push_str(&raw[line + 2..line + 2 + size]);
        raw = &raw[line + 2 + size + 2..];
    }
    out
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !done() {
            tokio::time::sleep(POLL).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

// -------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_follow_the_shutdown() {
    let (addr, app) = start().await;
    let h = get(addr, "/healthz").await;
    assert_eq!((h.status, h.json()), (200, json!({"status": "ok"})));
    let r = get(addr, "/readyz").await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "ready"})));
    let m = get(addr, "/metrics").await;
    assert_eq!(metric(&m.body, "switchboard_ready"), Some(1.0));

    app.begin_shutdown();
    let r = get(addr, "/readyz").await;
    assert_eq!(
        (r.status, r.json()),
        (503, json!({"status": "shutting_down"}))
    );
    // Alive still: only readiness fails.
    assert_eq!(get(addr, "/healthz").await.status, 200);
    // New clients are refused with 503 shutting_down.
    let w = ws_upgrade(addr).await;
    assert_eq!(
        (w.status, w.json()["code"].as_str()),
        (503, Some("shutting_down")),
        "{}{}",
        w.head,
        w.body
    );
    assert_eq!(w.header("retry-after").as_deref(), Some("1"));
    let token = app.verifier.issue_dev_token("ada", None, 600).unwrap();
    let s = get(addr, &format!("/events?channel=chat:lobby&token={token}")).await;
    assert_eq!(
        (s.status, s.json()["code"].as_str()),
        (503, Some("shutting_down"))
    );
    let m = get(addr, "/metrics").await.body;
    assert_eq!(metric(&m, "switchboard_ready"), Some(0.0));
    assert_eq!(
        metric(&m, "switchboard_refusals_total{reason=\"shutting_down\"}"),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_connections_messages_and_publications() {
    let (addr, app) = start().await;
    let m = get(addr, "/metrics").await;
    assert_eq!(m.status, 200);
    let content_type = m.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "{content_type}"
    );
    for line in [
        "# TYPE switchboard_connections gauge",
        "# TYPE switchboard_publications_total counter",
        "# TYPE switchboard_delivery_latency_seconds histogram",
    ] {
        assert!(
            m.body.lines().any(|l| l == line),
            "no {line:?} in\n{}",
            m.body
        );
    }
    assert_eq!(metric(&m.body, "switchboard_publications_total"), Some(0.0));
    assert_eq!(
        metric(&m.body, "switchboard_messages_in_total{protocol=\"ws\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&m.body, "switchboard_delivery_latency_seconds_count"),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &m.body,
            "switchboard_connections{protocol=\"ws\",transport=\"websocket\"}"
        ),
        None,
        "no connection yet"
    );

    // Authenticate, subscribe, publish: three messages in, one publication
    // delivered back to the client.
    let mut ws = subscribed(addr, &app, "ada").await;
    send(
        &mut ws,
        json!({"type": "message", "payload": {"channel": "chat:lobby", "data": "hi"}, "id": "pub"}),
    )
    .await;
    let mut got_ack = false;
    let mut got_publication = false;
    while !(got_ack && got_publication) {
        let m = next(&mut ws).await.expect("closed");
        match m["type"].as_str() {
            Some("ack") => got_ack = true,
            Some("message") => {
                assert_eq!(m["payload"]["data"], "hi");
                got_publication = true;
            }
            _ => {}
        }
    }

    let connections = "switchboard_connections{protocol=\"ws\",transport=\"websocket\"}";
    assert_eq!(
        metric_until(addr, connections, |v| v == Some(1.0)).await,
        1.0
    );
    metric_until(
        addr,
        "switchboard_messages_in_total{protocol=\"ws\"}",
        |v| v >= Some(3.0),
    )
    .await;
    metric_until(addr, "switchboard_publications_total", |v| v == Some(1.0)).await;
    metric_until(addr, "switchboard_delivery_latency_seconds_count", |v| {
        v >= Some(1.0)
    })
    .await;
    metric_until(
        addr,
        "switchboard_delivery_latency_seconds_bucket{le=\"+Inf\"}",
        |v| v >= Some(1.0),
    )
    .await;
    metric_until(
        addr,
        "switchboard_connections_opened_total{protocol=\"ws\"}",
        |v| v == Some(1.0),
    )
    .await;
    metric_until(addr, "switchboard_subscriptions", |v| v == Some(1.0)).await;
    metric_until(addr, "switchboard_channels", |v| v == Some(1.0)).await;
    metric_until(
        addr,
        "switchboard_messages_out_total{protocol=\"ws\"}",
        |v| v >= Some(1.0),
    )
    .await;

    // The gauge goes down when the client leaves.
    ws.close().await.unwrap();
    drop(ws);
    metric_until(addr, connections, |v| v.unwrap_or(0.0) == 0.0).await;
    metric_until(addr, "switchboard_subscriptions", |v| v == Some(0.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_tells_clients_to_go_and_stops() {
    let mut config = common::config("ops-shutdown");
    config.server.shutdown_timeout_secs = 5;
    let app = App::new(config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchboard_server::server::serve(
        Arc::clone(&app),
        listener,
        None,
        async move {
            let _ = stopped.await;
        },
    ));

    let mut ws = subscribed(addr, &app, "ada").await;
    let mut sse = Sse::open(addr, &app, "bob").await;
    wait_for("both clients to subscribe", || {
        app.node.hub().subscriber_count(&lobby()) == 2
    })
    .await;
    // Queued just before the shutdown: still delivered, before the close.
    app.node
        .publish(&lobby(), json!({"last": true}), Publisher::Api, None)
        .await
        .unwrap();
    stop.send(()).unwrap();

    let (seen, code) = until_closed(&mut ws).await;
    assert_eq!(code, 1001, "closed as going away; saw {seen:?}");
    assert!(
        seen.iter()
            .any(|m| m["type"] == "message" && m["payload"]["data"] == json!({"last": true})),
        "the queued publication came before the close: {seen:?}"
    );

    sse.until_ended().await;
    let events = sse.events();
    assert!(
        events
            .iter()
            .any(|(e, d)| e == "message" && d["data"] == json!({"last": true})),
        "the queued publication came before the end: {events:?}"
    );
    // Then the connection closes (each read bounded).
    while sse.fill().await {}
    assert!(sse.ended(), "nothing after the last chunk: {:?}", sse.body);

    tokio::time::timeout(WAIT, server)
        .await
        .expect("serve did not return after the shutdown")
        .unwrap();
    assert!(!app.is_ready());
    assert_eq!(app.node.hub().connection_counts(), [0, 0, 0]);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed: new connections are refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_disconnect_closes_every_connection_of_one_user() {
    let (addr, app) = start().await;
    let mut ada_ws = subscribed(addr, &app, "ada").await;
    let mut ada_sse = Sse::open(addr, &app, "ada").await;
    let mut bob = subscribed(addr, &app, "bob").await;
    wait_for("three subscribers", || {
        app.node.hub().subscriber_count(&lobby()) == 3
    })
    .await;
    assert_eq!(app.node.hub().connection_counts(), [0, 2, 1]);

    let a = api_post(addr, "/api/disconnect", &json!({"user": "ada"})).await;
    assert_eq!(
        (a.status, a.json()),
        (200, json!({"user": "ada", "disconnected": 2})),
        "{}{}",
        a.head,
        a.body
    );

    let (_, code) = until_closed(&mut ada_ws).await;
    assert_eq!(code, 4001, "the WebSocket is closed with 4001");

    ada_sse.until_ended().await;
    let events = ada_sse.events();
    let (last, data) = events.last().expect("events");
    assert_eq!(
        last, "disconnect",
        "the stream ends on a disconnect event: {events:?}"
    );
    assert!(data["reason"].is_string(), "{data}");

    // Bob is still connected and served.
    send(&mut bob, json!({"type": "ping", "id": "still"})).await;
    assert_eq!(answer(&mut bob, &json!("still")).await["type"], "pong");
    wait_for("ada's connections to be gone", || {
        app.node.hub().connection_counts() == [0, 1, 0]
    })
    .await;
    app.node
        .publish(&lobby(), json!("after"), Publisher::Api, None)
        .await
        .unwrap();
    loop {
        let m = next(&mut bob).await.expect("bob was closed");
        if m["type"] == "message" {
            assert_eq!(m["payload"]["data"], "after");
            break;
        }
    }
    // Nobody left to disconnect.
    let a = api_post(addr, "/api/disconnect", &json!({"user": "ada"})).await;
    assert_eq!(
        (a.status, a.json()),
        (200, json!({"user": "ada", "disconnected": 0}))
    );
}
