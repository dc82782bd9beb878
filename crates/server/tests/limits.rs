//! Limits over real connections: each limit is refused with the protocol's
//! own answer and counted in `/metrics` (`switchboard_refusals_total`).

mod common;

use common::{Ws, ws_answer as answer, ws_authed as authed, ws_next as next, ws_send as send};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::SinkExt;
use serde_json::{Value, json};
use switchboard_server::app::App;
use switchboard_server::channel::{
    ChannelName, HistoryStorage, Policy, PublishRule, SubscribeRule,
};
use switchboard_server::config::{Config, LimitsConfig};
use switchboard_server::node::Publisher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_websockets::Message;

/// The bound of every single wait.
const WAIT: Duration = Duration::from_secs(10);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);
/// The address every test client uses, unless it says otherwise.
const HOME: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Another loopback address: another client IP for the per-IP limits.
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn config(limits: LimitsConfig) -> Config {
    let mut config = common::config("limits");
    config.limits = limits;
    config
}

async fn start(config: Config) -> (SocketAddr, Arc<App>) {
    let app = App::new(config).unwrap();
    (common::serve(&app).await, app)
}

// ---------------------------------------------------------------- raw HTTP

/// A TCP connection to `addr` from the local address `from`.
async fn tcp_from(addr: SocketAddr, from: IpAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    tokio::time::timeout(WAIT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .unwrap()
}

/// A response read off a raw connection (the connection is kept: an
/// accepted upgrade or event stream stays open as long as it lives).
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
    tcp: TcpStream,
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
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\n{}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn read_some(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 8192];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
        .await
        .expect("read timed out")
        .unwrap_or(0);
    buf.extend_from_slice(&chunk[..n]);
    n
}

/// Sends `request` and reads the answer's head; the body too, unless the
/// answer is an accepted upgrade (101) or an event stream.
async fn exchange(mut tcp: TcpStream, request: &[u8]) -> Answer {
    // A server that answers before reading all of a request (a body over a
    // limit) may close while it is still being written: the answer is what
    // counts, so a failed write is not the test's failure.
    let _ = tcp.write_all(request).await;
    let mut buf = Vec::new();
    let end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = read_some(&mut tcp, &mut buf).await;
        assert!(
            n > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut rest = buf[end..].to_vec();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut answer = Answer {
        status,
        head,
        body: Vec::new(),
        tcp,
    };
    let streaming = answer
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if status == 101 || streaming {
        answer.body = rest;
        return answer;
    }
    if let Some(len) = answer.header("content-length") {
        let len: usize = len.parse().unwrap();
        while rest.len() < len {
            assert!(read_some(&mut answer.tcp, &mut rest).await > 0, "body cut");
        }
        rest.truncate(len);
        answer.body = rest;
    } else if answer
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        while !rest.starts_with(b"0\r\n\r\n") && find(&rest, b"\r\n0\r\n\r\n").is_none() {
            assert!(read_some(&mut answer.tcp, &mut rest).await > 0, "body cut");
        }
        answer.body = dechunk(&rest);
    } else {
        while read_some(&mut answer.tcp, &mut rest).await > 0 {}
        answer.body = rest;
    }
    answer
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line = find(raw, b"\r\n").expect("a chunk size");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..line]).unwrap().trim(), 16)
            .expect("a hexadecimal chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[line + 2..line + 2 + size]);
        raw = &raw[line + 2 + size + 2..];
    }
}

/// A WebSocket upgrade of `/ws` from `from`, by hand (to see refusals).
async fn ws_upgrade(addr: SocketAddr, from: IpAddr) -> Answer {
    let request = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    exchange(tcp_from(addr, from).await, request.as_bytes()).await
}

/// An SSE stream from `from`.
async fn sse_open(addr: SocketAddr, from: IpAddr, query: &str) -> Answer {
    let request =
        format!("GET /events?{query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
    exchange(tcp_from(addr, from).await, request.as_bytes()).await
}

/// One request on its own connection (`Connection: close`).
async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Answer {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if !body.is_empty() {
        request.extend_from_slice(b"Content-Type: text/plain;charset=UTF-8\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    exchange(tcp_from(addr, HOME).await, &request).await
}

/// Asserts a refusal: status, JSON `{code, message}`, `Retry-After: 1`.
fn assert_refused(a: &Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{}{}", a.head, a.text());
    assert!(
        a.header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{}",
        a.head
    );
    let body = a.json();
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(a.header("retry-after").as_deref(), Some("1"), "{}", a.head);
}

// ------------------------------------------------------------------ metrics

async fn metrics(addr: SocketAddr) -> String {
    let a = http(addr, "GET", "/metrics", b"").await;
    assert_eq!(a.status, 200);
    a.text()
}

/// The value of one series (`name{labels}`), which must be present.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

async fn refusals(addr: SocketAddr, reason: &str) -> f64 {
    metric(
        &metrics(addr).await,
        &format!("switchboard_refusals_total{{reason=\"{reason}\"}}"),
    )
}

// ---------------------------------------------------------------- WebSocket

async fn subscribe(ws: &mut Ws, channel: &str, id: i64) -> Value {
    send(
        ws,
        json!({"type": "subscribe", "payload": {"channel": channel}, "id": id}),
    )
    .await;
    answer(ws, &json!(id)).await
}

/// The next publication (signals pass by).
async fn publication(ws: &mut Ws) -> Value {
    loop {
        let m = next(ws).await.expect("closed");
        match m["type"].as_str() {
            Some("message") => return m["payload"].clone(),
            Some("join" | "leave") => {}
            _ => panic!("unexpected {m}"),
        }
    }
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

/// Small send queues (64 KiB) and a `feed` namespace only the API
/// publishes to, for the slow-reader tests.
fn slow_reader_config() -> Config {
    let mut config = config(LimitsConfig {
        max_message_size: 16 * 1024,
        max_queued_bytes: 64 * 1024,
        ..LimitsConfig::default()
    });
    config.channels.insert(
        "feed".into(),
        Policy {
            subscribe: SubscribeRule::Authenticated,
            publish: PublishRule::Nobody,
            history_size: 16,
            history_ttl_secs: 0,
            history_storage: HistoryStorage::Memory,
            presence: false,
            join_leave: false,
            max_message_size: 64 * 1024,
        },
    );
    config
}

// -------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_server_limit_get_503_until_one_closes() {
    let (addr, app) = start(config(LimitsConfig {
        max_connections: 2,
        handshakes_per_second_per_ip: 0,
        ..LimitsConfig::default()
    }))
    .await;
    let token = app.verifier.issue_dev_token("ada", None, 600).unwrap();
    let stream_query = format!("channel=chat:lobby&token={token}");

    // One WebSocket and one event stream fill the server (all protocols
    // count together).
    let ws = ws_upgrade(addr, HOME).await;
    assert_eq!(ws.status, 101, "{}", ws.head);
    let sse = sse_open(addr, HOME, &stream_query).await;
    assert_eq!(sse.status, 200, "{}", sse.head);

    let refused = ws_upgrade(addr, HOME).await;
    assert_refused(&refused, 503, "too_many_connections");
    let refused = sse_open(addr, OTHER, &stream_query).await;
    assert_refused(&refused, 503, "too_many_connections");
    assert_eq!(refusals(addr, "too_many_connections").await, 2.0);

    // Closing the WebSocket gives its place back.
    drop(ws);
    let mut attempts = 0;
    let again = loop {
        attempts += 1;
        assert!(
            attempts <= 500,
            "the closed WebSocket's place never came back"
        );
        let a = ws_upgrade(addr, HOME).await;
        if a.status == 101 {
            break a;
        }
        assert_refused(&a, 503, "too_many_connections");
        tokio::time::sleep(POLL).await;
    };

    // Closing the event stream too.
    drop(sse);
    let mut attempts = 0;
    let _again_sse = loop {
        attempts += 1;
        assert!(
            attempts <= 500,
            "the closed event stream's place never came back"
        );
        let a = sse_open(addr, HOME, &stream_query).await;
        if a.status == 200 {
            break a;
        }
        assert_refused(&a, 503, "too_many_connections");
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(app.connection_count(), 2);
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_ip_get_429_and_other_addresses_still_get_in() {
    let (addr, app) = start(config(LimitsConfig {
        max_connections_per_ip: 2,
        handshakes_per_second_per_ip: 0,
        ..LimitsConfig::default()
    }))
    .await;
    let token = app.verifier.issue_dev_token("ada", None, 600).unwrap();
    let stream_query = format!("channel=chat:lobby&token={token}");

    let first = ws_upgrade(addr, HOME).await;
    assert_eq!(first.status, 101, "{}", first.head);
    let second = sse_open(addr, HOME, &stream_query).await;
    assert_eq!(second.status, 200, "{}", second.head);

    assert_refused(
        &ws_upgrade(addr, HOME).await,
        429,
        "too_many_connections_per_ip",
    );
    assert_refused(
        &sse_open(addr, HOME, &stream_query).await,
        429,
        "too_many_connections_per_ip",
    );
    assert_eq!(refusals(addr, "too_many_connections_per_ip").await, 2.0);
    assert_eq!(refusals(addr, "too_many_connections").await, 0.0);

    // Another address has its own count.
    let other = ws_upgrade(addr, OTHER).await;
    assert_eq!(other.status, 101, "{}", other.head);
    let other_sse = sse_open(addr, OTHER, &stream_query).await;
    assert_eq!(other_sse.status, 200, "{}", other_sse.head);

    // A closed connection frees its address's place.
    drop(first);
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(
            attempts <= 500,
            "the closed connection's place never came back"
        );
        let a = ws_upgrade(addr, HOME).await;
        if a.status == 101 {
            break;
        }
        assert_refused(&a, 429, "too_many_connections_per_ip");
        tokio::time::sleep(POLL).await;
    }
    drop((second, other, other_sse));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_over_the_rate_get_429() {
    let (addr, app) = start(config(LimitsConfig {
        handshakes_per_second_per_ip: 1,
        handshake_burst: 3,
        ..LimitsConfig::default()
    }))
    .await;
    let token = app.verifier.issue_dev_token("ada", None, 600).unwrap();
    let stream_query = format!("channel=chat:lobby&token={token}");
    let mut open = Vec::new();
    let mut refused = 0.0;

    // The burst is admitted, then the rate (1/s) refuses: WebSocket...
    loop {
        let a = ws_upgrade(addr, HOME).await;
        if a.status != 101 {
            assert_refused(&a, 429, "too_many_handshakes");
            refused += 1.0;
            break;
        }
        open.push(a);
        assert!(open.len() <= 20, "the handshake rate is not enforced");
    }
    assert!(
        open.len() >= 3,
        "the burst of 3 was not admitted: {}",
        open.len()
    );
    // ... and event streams, from the same address.
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts <= 20, "the handshake rate is not enforced on SSE");
        let a = sse_open(addr, HOME, &stream_query).await;
        if a.status != 200 {
            assert_refused(&a, 429, "too_many_handshakes");
            refused += 1.0;
            break;
        }
        open.push(a);
    }
    assert_eq!(refusals(addr, "too_many_handshakes").await, refused);

    // Another address has its own bucket.
    let other = ws_upgrade(addr, OTHER).await;
    assert_eq!(other.status, 101, "{}", other.head);
}

/// `GET /socket.io/?EIO=4&transport=polling`: the Engine.IO handshake.
async fn engineio_handshake(addr: SocketAddr) -> Answer {
    http(addr, "GET", "/socket.io/?EIO=4&transport=polling", b"").await
}

/// The session id of an accepted Engine.IO polling handshake.
fn sid_of(a: &Answer) -> String {
    assert_eq!(a.status, 200, "{}{}", a.head, a.text());
    let text = a.text();
    let open = text.strip_prefix('0').unwrap_or_else(|| panic!("{text}"));
    let v: Value = serde_json::from_str(open).unwrap();
    v["sid"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_handshakes_over_the_rate_get_engineio_403() {
    let (addr, _app) = start(config(LimitsConfig {
        handshakes_per_second_per_ip: 1,
        handshake_burst: 2,
        ..LimitsConfig::default()
    }))
    .await;
    let mut accepted = 0;
    let refusal = loop {
        let a = engineio_handshake(addr).await;
        if a.status != 200 {
            break a;
        }
        sid_of(&a);
        accepted += 1;
        assert!(accepted <= 20, "the handshake rate is not enforced");
    };
    assert!(accepted >= 2, "the burst of 2 was not admitted: {accepted}");
    assert_eq!(refusal.status, 403, "{}{}", refusal.head, refusal.text());
    assert_eq!(
        refusal.json(),
        json!({"code": 4, "message": "too_many_handshakes"})
    );
    assert!(
        refusals(addr, "too_many_handshakes").await >= 1.0,
        "a refused Socket.IO handshake is not counted in /metrics"
    );
}

/// A whole Socket.IO connection over long-polling: the Engine.IO
/// handshake, then the namespace connect. Returns the server's answer
/// to the connect (`40{...}` or `44{...}`), or the refused handshake.
async fn socketio_connect(addr: SocketAddr) -> Result<String, Answer> {
    let a = engineio_handshake(addr).await;
    if a.status != 200 {
        return Err(a);
    }
    let sid = sid_of(&a);
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let posted = http(addr, "POST", &path, b"40").await;
    assert_eq!((posted.status, posted.text()), (200, "ok".to_owned()));
    let got = http(addr, "GET", &path, b"").await;
    assert_eq!(got.status, 200, "{}", got.head);
    Ok(got.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socketio_connection_spends_one_handshake_of_the_burst() {
    // A burst of 2 handshakes: two clients connecting at once are let in.
    let (addr, _app) = start(config(LimitsConfig {
        handshakes_per_second_per_ip: 1,
        handshake_burst: 2,
        ..LimitsConfig::default()
    }))
    .await;
    for client in 1..=2 {
        match socketio_connect(addr).await {
            Ok(reply) => assert!(
                reply.starts_with("40{"),
                "Socket.IO client {client} of a burst of 2 was refused at connect: {reply}"
            ),
            Err(a) => panic!(
                "Socket.IO client {client} of a burst of 2 was refused at its handshake: {} {}",
                a.status,
                a.text()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_message_rate_requests_are_refused_then_the_connection_closed() {
    let abuse_close_after = 3;
    let (addr, app) = start(config(LimitsConfig {
        messages_per_second: 1,
        messages_burst: 4,
        abuse_close_after,
        ..LimitsConfig::default()
    }))
    .await;
    // The observer sends two messages (auth, subscribe): within the burst.
    let mut observer = authed(addr, &app, "bob").await;
    assert_eq!(
        subscribe(&mut observer, "chat:lobby", 1).await["type"],
        "ack"
    );
    let mut abuser = authed(addr, &app, "ada").await;
    assert_eq!(subscribe(&mut abuser, "chat:lobby", 1).await["type"], "ack");

    // Publications flow while the abuser floods.
    let lobby = ChannelName::parse("chat:lobby").unwrap();
    let publisher = {
        let (app, lobby) = (Arc::clone(&app), lobby.clone());
        tokio::spawn(async move {
            for n in 1..=30u64 {
                app.node
                    .publish(&lobby, json!({ "n": n }), Publisher::Api, None)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };

    // Twenty pings at once: two more fit the burst, then refusals.
    for id in 100..120 {
        let ping = json!({"type": "ping", "id": id}).to_string();
        let _ = abuser.feed(Message::text(ping)).await;
    }
    let _ = abuser.flush().await;
    let mut answers: Vec<(i64, String)> = Vec::new();
    let code = loop {
        match next(&mut abuser).await {
            Ok(m) => match m["type"].as_str() {
                Some("message" | "join" | "leave") => {}
                Some("pong") => answers.push((m["id"].as_i64().unwrap(), "pong".into())),
                Some("error") => {
                    answers.push((
                        m["id"].as_i64().expect("the refusal carries the id"),
                        m["payload"]["code"].as_str().unwrap().to_owned(),
                    ));
                }
                _ => panic!("unexpected {m}"),
            },
            Err(code) => break code,
        }
    };
    assert_eq!(
        code, 1008,
        "closed for abuse with 1008; answers: {answers:?}"
    );
    let ids: Vec<i64> = answers.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (100..100 + ids.len() as i64).collect::<Vec<_>>(),
        "each request answered once, in order"
    );
    assert!(
        answers
            .iter()
            .all(|(_, a)| a == "pong" || a == "rate_limited"),
        "{answers:?}"
    );
    let limited = answers.iter().filter(|(_, a)| a == "rate_limited").count();
    let tail = abuse_close_after as usize - 1;
    assert!(
        answers.len() >= tail
            && answers[answers.len() - tail..]
                .iter()
                .all(|(_, a)| a == "rate_limited"),
        "the close follows {abuse_close_after} refusals in a row: {answers:?}"
    );
    assert!(
        answers.len() < 20,
        "closed before all 20 pings were answered"
    );

    // The observer got every publication, in order, and is still served.
    publisher.await.unwrap();
    for n in 1..=30u64 {
        let p = publication(&mut observer).await;
        assert_eq!(
            (p["offset"].as_u64(), p["data"]["n"].as_u64()),
            (Some(n), Some(n))
        );
    }
    send(&mut observer, json!({"type": "ping", "id": 7})).await;
    assert_eq!(answer(&mut observer, &json!(7)).await["type"], "pong");

    let text = metrics(addr).await;
    assert_eq!(
        metric(&text, "switchboard_refusals_total{reason=\"rate_limited\"}"),
        limited as f64
    );
    assert_eq!(
        metric(&text, "switchboard_refusals_total{reason=\"rate_abuse\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_beyond_the_limit_are_refused() {
    let (addr, app) = start(config(LimitsConfig {
        max_subscriptions: 2,
        ..LimitsConfig::default()
    }))
    .await;
    let mut ws = authed(addr, &app, "ada").await;
    assert_eq!(subscribe(&mut ws, "chat:a", 1).await["type"], "ack");
    assert_eq!(subscribe(&mut ws, "chat:b", 2).await["type"], "ack");
    // Subscribing again to a subscribed channel is not a new subscription.
    assert_eq!(subscribe(&mut ws, "chat:a", 3).await["type"], "ack");
    let e = subscribe(&mut ws, "chat:c", 4).await;
    assert_eq!(
        (
            e["type"].as_str(),
            e["payload"]["code"].as_str(),
            e["id"].as_i64()
        ),
        (Some("error"), Some("too_many_subscriptions"), Some(4)),
        "{e}"
    );
    // The connection stays; an unsubscribe makes room.
    send(
        &mut ws,
        json!({"type": "unsubscribe", "payload": {"channel": "chat:a"}, "id": 5}),
    )
    .await;
    assert_eq!(answer(&mut ws, &json!(5)).await["type"], "ack");
    assert_eq!(subscribe(&mut ws, "chat:c", 6).await["type"], "ack");
    assert_eq!(refusals(addr, "too_many_subscriptions").await, 1.0);

    // SSE: more channel parameters than the limit.
    let token = app.verifier.issue_dev_token("bob", None, 600).unwrap();
    let a = sse_open(
        addr,
        HOME,
        &format!("channel=chat:a&channel=chat:b&channel=chat:c&token={token}"),
    )
    .await;
    assert_eq!(a.status, 400, "{}{}", a.head, a.text());
    assert_eq!(a.json()["code"], "too_many_subscriptions");
    assert_eq!(refusals(addr, "too_many_subscriptions").await, 2.0);
    // A repeated parameter is one channel.
    let a = sse_open(
        addr,
        HOME,
        &format!("channel=chat:a&channel=chat:b&channel=chat:a&token={token}"),
    )
    .await;
    assert_eq!(a.status, 200, "{}{}", a.head, a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_message_over_the_size_limit_closes_with_1009() {
    let (addr, app) = start(config(LimitsConfig {
        max_message_size: 1024,
        ..LimitsConfig::default()
    }))
    .await;
    let mut other = authed(addr, &app, "bob").await;
    let mut ws = authed(addr, &app, "ada").await;
    // Just under the limit: answered.
    let pad = "x".repeat(900);
    send(&mut ws, json!({"type": "ping", "payload": pad, "id": 1})).await;
    assert_eq!(answer(&mut ws, &json!(1)).await["type"], "pong");
    // Over it: closed with 1009.
    let pad = "x".repeat(2000);
    send(&mut ws, json!({"type": "ping", "payload": pad, "id": 2})).await;
    assert_eq!(next(&mut ws).await, Err(1009));
    // Others are unaffected.
    send(&mut other, json!({"type": "ping", "id": 3})).await;
    assert_eq!(answer(&mut other, &json!(3)).await["type"], "pong");
    let text = metrics(addr).await;
    let counted = |reason: &str| {
        metric(
            &text,
            &format!("switchboard_refusals_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(
        counted("message_too_large"),
        1.0,
        "an oversized message is counted as message_too_large (bad_request: {})",
        counted("bad_request")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_websocket_message_over_the_size_limit_closes_with_1009() {
    let (addr, app) = start(config(LimitsConfig {
        max_message_size: 1024,
        ..LimitsConfig::default()
    }))
    .await;
    // A client that sends its messages in frames of 256 bytes.
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut ws = tokio_websockets::ClientBuilder::new()
        .uri(&format!("ws://{addr}/ws"))
        .unwrap()
        .config(tokio_websockets::Config::default().frame_size(256))
        .connect_on(stream)
        .await
        .unwrap()
        .0;
    let token = app.verifier.issue_dev_token("ada", None, 600).unwrap();
    send(
        &mut ws,
        json!({"type": "auth", "payload": {"token": token}, "id": "auth"}),
    )
    .await;
    assert_eq!(answer(&mut ws, &json!("auth")).await["type"], "ack");
    // Fragmented under the limit: answered.
    send(
        &mut ws,
        json!({"type": "ping", "payload": "x".repeat(900), "id": 1}),
    )
    .await;
    assert_eq!(answer(&mut ws, &json!(1)).await["type"], "pong");
    // Fragmented over it: the close frame says 1009.
    send(
        &mut ws,
        json!({"type": "ping", "payload": "x".repeat(4000), "id": 2}),
    )
    .await;
    assert_eq!(next(&mut ws).await, Err(1009));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_post_over_the_size_limit_gets_413() {
    let (addr, _app) = start(config(LimitsConfig {
        max_message_size: 1024,
        ..LimitsConfig::default()
    }))
    .await;
    let sid = sid_of(&engineio_handshake(addr).await);
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let mut big = b"4".to_vec();
    big.extend(std::iter::repeat_n(b'x', 2000));
    let a = http(addr, "POST", &path, &big).await;
    assert_eq!(a.status, 413, "{}{}", a.head, a.text());
    // The session lives on: a namespace connect still works.
    let posted = http(addr, "POST", &path, b"40").await;
    assert_eq!((posted.status, posted.text()), (200, "ok".to_owned()));
    let got = http(addr, "GET", &path, b"").await;
    assert!(got.text().starts_with("40{"), "{}", got.text());
    assert_eq!(
        refusals(addr, "message_too_large").await,
        1.0,
        "an oversized polling body is counted as message_too_large"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_disconnected_and_others_get_everything_in_order() {
    let config = slow_reader_config();
    let (addr, app) = start(config).await;
    let feed = ChannelName::parse("feed:firehose").unwrap();
    let mut reader = authed(addr, &app, "bob").await;
    assert_eq!(
        subscribe(&mut reader, feed.as_str(), 1).await["type"],
        "ack"
    );
    // The slow reader subscribes, then never reads its socket again.
    let mut slow = authed(addr, &app, "ada").await;
    assert_eq!(subscribe(&mut slow, feed.as_str(), 1).await["type"], "ack");
    let ws_connections = || app.node.hub().connection_counts()[1];
    assert_eq!(ws_connections(), 2);

    // Publish ~8 KiB publications, each read by the normal reader before
    // the next, until the slow reader is cut off (32 MiB at most: far more
    // than the kernel's socket buffers absorb).
    let pad = "x".repeat(8 * 1024);
    let max = 4096u64;
    let mut published = 0u64;
    while published < max && ws_connections() == 2 {
        published += 1;
        app.node
            .publish(
                &feed,
                json!({ "n": published, "pad": pad }),
                Publisher::Api,
                None,
            )
            .await
            .unwrap();
        let p = publication(&mut reader).await;
        assert_eq!(p["offset"].as_u64(), Some(published), "in order, none lost");
    }
    assert!(published > 1, "cut off before anything was queued");
    // Overflow happened by now; the slow reader must go (the server's own
    // write timeout is 10 s: wait longer than that).
    tokio::time::timeout(Duration::from_secs(30), async {
        while ws_connections() != 1 {
            tokio::time::sleep(POLL).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("the slow reader is still registered after {published} publications of 8 KiB")
    });
    let slow_counted = metric(
        &metrics(addr).await,
        "switchboard_slow_consumer_disconnects_total{protocol=\"ws\"}",
    );

    // The normal reader goes on receiving, in order.
    for _ in 0..5 {
        published += 1;
        app.node
            .publish(&feed, json!({ "n": published }), Publisher::Api, None)
            .await
            .unwrap();
        let p = publication(&mut reader).await;
        assert_eq!(p["offset"].as_u64(), Some(published));
    }

    // The slow reader's socket holds a prefix of the stream, then ends.
    let mut expected = 1u64;
    while let Ok(m) = next(&mut slow).await {
        assert_eq!(m["type"], "message", "{m}");
        assert_eq!(m["payload"]["offset"].as_u64(), Some(expected));
        expected += 1;
    }
    assert!(
        expected - 1 < published,
        "the slow reader was cut off yet got everything"
    );
    assert_eq!(
        slow_counted,
        1.0,
        "the slow reader's disconnect is not counted as a slow consumer \
         (it got {} of {published} publications before its connection ended)",
        expected - 1
    );
    assert_eq!(app.node.hub().subscriber_count(&feed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_attempts_and_closed_connections_give_their_places_back() {
    let (addr, app) = start(config(LimitsConfig {
        max_connections: 3,
        max_connections_per_ip: 2,
        handshakes_per_second_per_ip: 0,
        ..LimitsConfig::default()
    }))
    .await;
    let token = app.verifier.issue_dev_token("ada", None, 600).unwrap();
    let q = format!("channel=chat:lobby&token={token}");
    let mut open = vec![ws_upgrade(addr, HOME).await, sse_open(addr, HOME, &q).await];
    assert_eq!(
        open.iter().map(|a| a.status).collect::<Vec<_>>(),
        [101, 200]
    );
    for _ in 0..5 {
        assert_refused(
            &ws_upgrade(addr, HOME).await,
            429,
            "too_many_connections_per_ip",
        );
    }
    // Refused per address, they took no place overall: one is left.
    open.push(ws_upgrade(addr, OTHER).await);
    assert_eq!(open[2].status, 101, "{}", open[2].head);
    for _ in 0..5 {
        assert_refused(&ws_upgrade(addr, OTHER).await, 503, "too_many_connections");
        assert_refused(
            &sse_open(addr, OTHER, &q).await,
            503,
            "too_many_connections",
        );
    }
    assert_eq!(app.connection_count(), 3);
    open.clear();
    wait_for("every place to be given back", || {
        app.connection_count() == 0
    })
    .await;
    let text = metrics(addr).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_refusals_total{reason=\"too_many_connections\"}"
        ),
        10.0
    );
    assert_eq!(
        metric(
            &text,
            "switchboard_refusals_total{reason=\"too_many_connections_per_ip\"}"
        ),
        5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sse_reader_is_dropped_and_others_get_everything_in_order() {
    let config = slow_reader_config();
    let (addr, app) = start(config).await;
    let feed = ChannelName::parse("feed:firehose").unwrap();
    let mut reader = authed(addr, &app, "bob").await;
    assert_eq!(
        subscribe(&mut reader, feed.as_str(), 1).await["type"],
        "ack"
    );
    // An SSE stream that, once open, is never read again.
    let token = app.verifier.issue_dev_token("ada", None, 60).unwrap();
    let slow = sse_open(addr, HOME, &format!("channel={feed}&token={token}")).await;
    assert_eq!(slow.status, 200, "{}", slow.head);
    let sse_connections = || app.node.hub().connection_counts()[2];
    wait_for("the stream to register", || sse_connections() == 1).await;

    let pad = "x".repeat(8 * 1024);
    let mut published = 0u64;
    while published < 4096 && sse_connections() == 1 {
        published += 1;
        app.node
            .publish(
                &feed,
                json!({ "n": published, "pad": pad }),
                Publisher::Api,
                None,
            )
            .await
            .unwrap();
        let p = publication(&mut reader).await;
        assert_eq!(p["offset"].as_u64(), Some(published), "in order, none lost");
    }
    wait_for("the slow stream to be dropped", || sse_connections() == 0).await;
    assert_eq!(app.node.hub().subscriber_count(&feed), 1, "only the reader");
    let text = metrics(addr).await;
    assert_eq!(
        metric(
            &text,
            "switchboard_slow_consumer_disconnects_total{protocol=\"sse\"}"
        ),
        1.0
    );
    // Its TCP connection was closed by the server: reading drains what the
    // kernel held, then finds the end.
    let mut tcp = slow.tcp;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the slow stream's connection was not closed");
    // The reader keeps receiving.
    published += 1;
    app.node
        .publish(&feed, json!({ "n": published }), Publisher::Api, None)
        .await
        .unwrap();
    assert_eq!(
        publication(&mut reader).await["offset"].as_u64(),
        Some(published)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_discarded_after_the_middleware_gives_its_place_back() {
    let (addr, app) = start(config(LimitsConfig {
        max_connections_per_ip: 1,
        max_message_size: 1_000_000,
        ..LimitsConfig::default()
    }))
    .await;
    // A polling client fills its own send queue with 4096 connect_error
    // answers (CONNECTs to an unknown namespace), then CONNECTs to `/`: the
    // middleware admits it, but its answer cannot be queued and the
    // library discards the socket without a connection handler.
    let sid = sid_of(&engineio_handshake(addr).await);
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let mut body = vec!["40/nowhere,"; 4096].join("\u{1e}");
    body.push_str("\u{1e}40");
    let posted = http(addr, "POST", &path, body.as_bytes()).await;
    assert_eq!(posted.status, 200, "{}", posted.head);
    // The place is given back (within the 10 s the connection handler has
    // to take it), so one client from this address gets in again.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if app.connection_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the discarded socket's place was never given back");
    let a = ws_upgrade(addr, HOME).await;
    assert_eq!(a.status, 101, "{}", a.head);
}

// ------------------------------------------- the attacker's tests (issue 14)

/// The API key of the tests that call the API.
const KEY: &str = "a-test-api-key-of-some-length";

fn with_api_key(mut config: Config) -> Config {
    config.api.key = Some(KEY.into());
    config
}

/// Whether the server closed `tcp` (a read returns end of stream).
async fn closed_by_server(tcp: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(WAIT, tcp.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_a_request_without_its_key_before_reading_the_body() {
    let (addr, _app) = start(with_api_key(config(LimitsConfig::default()))).await;
    // Announces 1.9 MB and sends 10 bytes: the answer comes without the
    // rest, so the server buffered nothing of it.
    let mut tcp = tcp_from(addr, HOME).await;
    tcp.write_all(
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 1900000\r\n\r\n{\"channel\"",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    while find(&buf, b"\r\n\r\n").is_none() {
        assert!(
            read_some(&mut tcp, &mut buf).await > 0,
            "closed before an answer"
        );
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(head.contains("api_key_missing"), "{head}");
    // Same with a wrong key.
    let mut tcp = tcp_from(addr, HOME).await;
    tcp.write_all(
        b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: apikey nope\r\n\
          Content-Length: 1900000\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    while find(&buf, b"\r\n\r\n").is_none() {
        assert!(
            read_some(&mut tcp, &mut buf).await > 0,
            "closed before an answer"
        );
    }
    assert!(
        buf.starts_with(b"HTTP/1.1 401"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_body_over_the_limit_gets_413_and_a_trickled_one_408() {
    let (addr, _app) = start(with_api_key(config(LimitsConfig::default()))).await;
    // Declared over the limit (1 MiB with the default message size):
    // refused from the Content-Length, before any of the body is sent.
    let big = vec![b' '; (1 << 20) + 1];
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: apikey {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    let a = exchange(tcp_from(addr, HOME).await, &request).await;
    assert_eq!(a.status, 413, "{}{}", a.head, a.text());
    assert_eq!(a.json()["code"], "message_too_large");
    // Chunked, with no length announced: counted as it comes.
    let mut request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: apikey {KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        big.len()
    )
    .into_bytes();
    request.extend_from_slice(&big);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    let a = exchange(tcp_from(addr, HOME).await, &request).await;
    assert_eq!(a.status, 413, "{}{}", a.head, a.text());
    assert_eq!(a.json()["code"], "message_too_large");

    // A body that does not come within the body timeout: 408, connection
    // released (the development login's body too, without any key).
    for (path, auth) in [
        ("/api/publish", format!("Authorization: apikey {KEY}\r\n")),
        ("/api/dev/token", String::new()),
    ] {
        let mut tcp = tcp_from(addr, HOME).await;
        tcp.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n\
                 Content-Length: 100\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT * 3;
        while find(&buf, b"\r\n\r\n").is_none() {
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
                .await
                .expect("a trickled body was never answered")
                .unwrap_or(0);
            assert!(n > 0, "closed before an answer");
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        assert!(text.starts_with("HTTP/1.1 408"), "{path}: {text}");
        assert!(
            closed_by_server(&mut tcp).await,
            "{path}: the connection stays open"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_login_refuses_an_oversized_name() {
    let (addr, _app) = start(config(LimitsConfig::default())).await;
    let login = |name: String| async move {
        let body = json!({"user": "ada", "name": name}).to_string();
        let request = format!(
            "POST /api/dev/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        exchange(tcp_from(addr, HOME).await, request.as_bytes()).await
    };
    let a = login("n".repeat(65)).await;
    assert_eq!(a.status, 400, "{}", a.text());
    let a = login("bad\u{7}name".into()).await;
    assert_eq!(a.status, 400, "{}", a.text());
    // Announced over 4 KiB: refused from its Content-Length, before any of
    // it is sent.
    let request = "POST /api/dev/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                   Content-Type: application/json\r\nContent-Length: 1048600\r\n\r\n";
    let a = exchange(tcp_from(addr, HOME).await, request.as_bytes()).await;
    assert_eq!(a.status, 413, "{}", a.text());
    let a = login("Ada Lovelace".into()).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.json()["token"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_pin_more_tcp_connections_than_its_clients_could_use() {
    // Two client connections per address: 2 x 2 + 16 = 20 TCP connections.
    let (addr, _app) = start(config(LimitsConfig {
        max_connections_per_ip: 2,
        handshakes_per_second_per_ip: 0,
        ..LimitsConfig::default()
    }))
    .await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut tcp = tcp_from(addr, HOME).await;
        // Half a request: the connection is held open by the server.
        tcp.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        idle.push(tcp);
    }
    // The next one from the same address is closed at once...
    let mut refused = tcp_from(addr, HOME).await;
    let _ = refused
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(
        closed_by_server(&mut refused).await,
        "a 21st TCP connection was served"
    );
    // ...another address still gets in, and counts the refusal.
    let m = http_from(addr, OTHER, "/metrics").await;
    assert_eq!(
        metric(
            &m,
            "switchboard_refusals_total{reason=\"too_many_http_connections\"}"
        ),
        1.0
    );
    // A place comes back when a connection closes.
    drop(idle.pop());
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(
            attempts <= 500,
            "the closed connection's place never came back"
        );
        let mut tcp = tcp_from(addr, HOME).await;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf)).await;
        if buf.starts_with(b"HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `GET path` from `from`, its body.
async fn http_from(addr: SocketAddr, from: IpAddr, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let a = exchange(tcp_from(addr, from).await, request.as_bytes()).await;
    assert_eq!(a.status, 200, "{}", a.head);
    a.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engineio_sessions_without_a_namespace_count_against_the_connection_limits() {
    let (addr, app) = start(config(LimitsConfig {
        max_connections: 100,
        max_connections_per_ip: 3,
        handshakes_per_second_per_ip: 0,
        ..LimitsConfig::default()
    }))
    .await;
    // Three Engine.IO sessions that never connect a namespace fill the
    // address's places...
    let mut sids = Vec::new();
    for _ in 0..3 {
        sids.push(sid_of(&engineio_handshake(addr).await));
    }
    assert_eq!(app.connection_count(), 3);
    let refused = engineio_handshake(addr).await;
    assert_eq!(refused.status, 403, "{}{}", refused.head, refused.text());
    assert_eq!(
        refused.json(),
        json!({"code": 4, "message": "too_many_connections_per_ip"})
    );
    // ...so does a WebSocket of /ws from that address...
    let ws = ws_upgrade(addr, HOME).await;
    assert_refused(&ws, 429, "too_many_connections_per_ip");
    // ...and a session that closes gives its place back.
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={}", sids[0]);
    let closed = http(addr, "POST", &path, b"1").await;
    assert_eq!(closed.status, 200);
    wait_for("the closed session's place", || app.connection_count() == 2).await;
    // A Socket.IO client that connects holds one place, not two.
    match socketio_connect(addr).await {
        Ok(reply) => assert!(reply.starts_with("40{"), "{reply}"),
        Err(a) => panic!("refused: {} {}", a.status, a.text()),
    }
    assert_eq!(app.connection_count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_with_thousands_of_channel_parameters_is_refused_or_deduplicated() {
    let (addr, app) = start(config(LimitsConfig::default())).await;
    let token = app.verifier.issue_dev_token("ada", None, 600).unwrap();
    // 3,000 distinct channels: over the subscription cap.
    let many: String = (0..3000).map(|i| format!("channel=chat:c{i}&")).collect();
    let a = sse_open(addr, HOME, &format!("{many}token={token}")).await;
    assert_eq!(a.status, 400, "{}", a.head);
    assert_eq!(a.json()["code"], "too_many_subscriptions");
    // 3,000 times the same channel: one subscription.
    let same: String = "channel=chat:same&".repeat(3000);
    let a = sse_open(addr, HOME, &format!("{same}token={token}")).await;
    assert_eq!(a.status, 200, "{}", a.head);
    wait_for("the stream's subscription", || {
        app.node
            .hub()
            .subscriber_count(&ChannelName::parse("chat:same").unwrap())
            == 1
    })
    .await;
    drop(a);
}
