//! Engine.IO over HTTP long-polling, against a raw echo engine on real
//! connections: handshake, errors, messages, heartbeat, CORS.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;
use switchboard::Sid;
use switchboard::engine::{Cors, Engine, EngineConfig, Refusal};
use switchboard::protocol::engine::Frame;

const P: &str = "/engine.io/";

async fn echo_server() -> (SocketAddr, Engine<Echo>) {
    start_engine(fast_heartbeat()).await
}

/// An echo server whose heartbeat does not get in the way (long interval).
async fn quiet_server() -> (SocketAddr, Engine<Echo>) {
    start_engine(EngineConfig::default()).await
}

fn session_gone(engine: &Engine<Echo>, sid: &str) -> bool {
    engine.session(sid.parse::<Sid>().expect("sid")).is_none()
}

/// Sends a GET on the session and waits until the server holds it (the
/// request owns a reference to the session while it is pending).
async fn pending_get(addr: SocketAddr, engine: &Engine<Echo>, sid: &str) -> PendingRequest {
    let session = engine.session(sid.parse().expect("sid")).expect("session");
    let baseline = Arc::strong_count(&session);
    let req = start_request(addr, "GET", &poll_url(P, sid), &[], b"").await;
    wait_until("the poll to be pending", || {
        Arc::strong_count(&session) > baseline
    })
    .await;
    // Let the request task finish its synchronous part.
    tokio::time::sleep(Duration::from_millis(20)).await;
    req
}

fn assert_error(r: &HttpResponse, status: u16, code: u8, message: &str) {
    assert_eq!(r.status, status, "status of {r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.text(),
        json!({ "code": code, "message": message }).to_string()
    );
    assert_eq!(
        r.text(),
        format!(r#"{{"code":{code},"message":"{message}"}}"#),
        "exact error body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_has_exact_keys_and_values() {
    let (addr, _engine) = echo_server().await;
    let r = get(addr, &format!("{P}?EIO=4&transport=polling")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; charset=UTF-8"));
    let text = r.text();
    let json: serde_json::Value = serde_json::from_str(&text[1..]).expect("json");
    let obj = json.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "maxPayload",
            "pingInterval",
            "pingTimeout",
            "sid",
            "upgrades"
        ]
    );
    let sid = json["sid"].as_str().expect("sid string");
    assert_eq!(sid.len(), 20);
    assert!(
        sid.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "sid {sid:?} is URL-safe base64"
    );
    assert_eq!(json["upgrades"], json!(["websocket"]));
    assert_eq!(json["pingInterval"], json!(300));
    assert_eq!(json["pingTimeout"], json!(200));
    assert_eq!(json["maxPayload"], json!(1_000_000));
    // Key order as the reference writes it.
    assert_eq!(
        text,
        format!(
            r#"0{{"sid":"{sid}","upgrades":["websocket"],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}}"#
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_eio_is_refused_with_code_5() {
    let (addr, engine) = echo_server().await;
    for target in [
        format!("{P}?transport=polling"),
        format!("{P}?EIO=abc&transport=polling"),
        format!("{P}?EIO=3&transport=polling"),
    ] {
        let r = get(addr, &target).await;
        assert_error(&r, 400, 5, "Unsupported protocol version");
    }
    assert_eq!(engine.session_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_transport_is_refused_with_code_0() {
    let (addr, engine) = echo_server().await;
    for target in [format!("{P}?EIO=4"), format!("{P}?EIO=4&transport=abc")] {
        let r = get(addr, &target).await;
        assert_error(&r, 400, 0, "Transport unknown");
    }
    assert_eq!(engine.session_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_with_post_or_put_is_refused_with_code_2() {
    let (addr, engine) = echo_server().await;
    for method in ["POST", "PUT"] {
        let r = request(
            addr,
            method,
            &format!("{P}?EIO=4&transport=polling"),
            &[],
            b"",
        )
        .await;
        assert_error(&r, 400, 2, "Bad handshake method");
    }
    assert_eq!(engine.session_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sid_is_refused_with_code_1() {
    let (addr, _engine) = echo_server().await;
    for sid in ["AAAAAAAAAAAAAAAAAAAA", "not-a-sid"] {
        let r = get(addr, &poll_url(P, sid)).await;
        assert_error(&r, 400, 1, "Session ID unknown");
        let r = post(addr, &poll_url(P, sid), b"4hello").await;
        assert_error(&r, 400, 1, "Session ID unknown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_request_refusal_is_403_with_code_4() {
    let config = EngineConfig {
        allow_request: Some(Arc::new(|parts: &http::request::Parts| {
            if parts.headers.contains_key("x-let-me-in") {
                Ok(None)
            } else {
                Err(Refusal::new("no entry without the header"))
            }
        })),
        ..EngineConfig::default()
    };
    let (addr, engine) = start_engine(config).await;
    let target = format!("{P}?EIO=4&transport=polling");
    let r = get(addr, &target).await;
    assert_error(&r, 403, 4, "no entry without the header");
    assert_eq!(engine.session_count(), 0);

    let r = request(addr, "GET", &target, &[("X-Let-Me-In", "1")], b"").await;
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("0{"));
    assert_eq!(engine.session_count(), 1);
}

/// Counts the guards alive: one per admitted session.
struct Place(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admitted_session_holds_its_guard_until_it_closes() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let places = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&places);
    let config = EngineConfig {
        allow_request: Some(Arc::new(move |_: &http::request::Parts| {
            counted.fetch_add(1, Ordering::SeqCst);
            let guard: switchboard::engine::SessionGuard = Box::new(Place(Arc::clone(&counted)));
            Ok(Some(guard))
        })),
        ..EngineConfig::default()
    };
    let (addr, engine) = start_engine(config).await;
    let (first, _) = polling_handshake(addr, P).await;
    let (second, _) = polling_handshake(addr, P).await;
    assert_eq!(engine.session_count(), 2);
    assert_eq!(
        places.load(Ordering::SeqCst),
        2,
        "each open session holds its guard"
    );
    // The client closes the first session: its guard goes, the other stays.
    let r = post(addr, &poll_url(P, &first), b"1").await;
    assert_eq!(r.status, 200);
    assert!(session_gone(&engine, &first));
    assert_eq!(places.load(Ordering::SeqCst), 1);
    engine
        .session(second.parse().expect("sid"))
        .expect("session")
        .close(switchboard::engine::CloseReason::ForcedClose);
    assert_eq!(places.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_message_then_get_echo() {
    let (addr, _engine) = quiet_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    let r = post(addr, &poll_url(P, &sid), b"4hello").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");
    assert_eq!(r.header("content-type"), Some("text/html"));
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "4hello");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=UTF-8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_packets_in_one_payload() {
    let (addr, _engine) = quiet_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    let r = post(addr, &poll_url(P, &sid), b"4test1\x1e4test2\x1e4test3").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!(r.text(), "4test1\x1e4test2\x1e4test3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_round_trips_as_base64() {
    let (addr, _engine) = quiet_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    let r = post(addr, &poll_url(P, &sid), b"4hello\x1ebAQIDBA==").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!(r.text(), "4hello\x1ebAQIDBA==");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_packet_closes_the_session() {
    let (addr, engine) = quiet_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    // The answer may be a 400 or a reset; only the session's fate matters.
    let r = try_request(addr, "POST", &poll_url(P, &sid), &[], b"abc").await;
    if let Ok(r) = r {
        assert_ne!(r.text(), "ok", "an undecodable payload is not accepted");
    }
    assert!(session_gone(&engine, &sid));
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!(r.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_gets_close_the_session() {
    let (addr, engine) = quiet_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    let first = pending_get(addr, &engine, &sid).await;
    let second = get(addr, &format!("{}&t=burst", poll_url(P, &sid))).await;
    assert_eq!(second.status, 400);
    let first = first.response().await.expect("first poll answered");
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "1");
    assert!(session_gone(&engine, &sid));
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_error(&r, 400, 1, "Session ID unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_get_kills_the_session() {
    let (addr, engine) = quiet_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    let pending = pending_get(addr, &engine, &sid).await;
    drop(pending);
    // No other request: the server must notice the abort by itself.
    wait_until("the session to close after the aborted poll", || {
        session_gone(&engine, &sid)
    })
    .await;
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_error(&r, 400, 1, "Session ID unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_over_max_payload_is_413_and_the_session_lives() {
    let config = EngineConfig {
        max_payload: 1000,
        ..EngineConfig::default()
    };
    let (addr, engine) = start_engine(config).await;
    let (sid, open) = polling_handshake(addr, P).await;
    assert_eq!(open["maxPayload"], json!(1000));
    let big = format!("4{}", "x".repeat(5000));
    let r = post(addr, &poll_url(P, &sid), big.as_bytes()).await;
    assert_eq!(r.status, 413);
    assert!(r.body.is_empty(), "413 has an empty body");
    assert!(!session_gone(&engine, &sid));
    let r = post(addr, &poll_url(P, &sid), b"4still here").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!(r.text(), "4still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_packet_while_get_pending_releases_it_with_noop() {
    let (addr, engine) = quiet_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    let pending = pending_get(addr, &engine, &sid).await;
    let r = post(addr, &poll_url(P, &sid), b"1").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let g = pending.response().await.expect("poll answered");
    assert_eq!((g.status, g.text().as_str()), (200, "6"));
    assert!(session_gone(&engine, &sid));
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!(r.status, 400);
}

/// A server-side close after queued messages: the messages come in one
/// poll, the close packet alone in the next (a client handed both in one
/// payload would close before it handled the messages), then the session
/// is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_close_sends_queued_messages_before_the_close_packet() {
    let (addr, engine) = quiet_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    let session = engine.session(sid.parse().expect("sid")).expect("session");
    session.send(Frame::message(b"a")).expect("queued");
    session.send(Frame::message(b"b")).expect("queued");
    session.disconnect();
    drop(session);
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!((r.status, r.text().as_str()), (200, "4a\x1e4b"));
    assert!(
        !session_gone(&engine, &sid),
        "open until the close packet is out"
    );
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!((r.status, r.text().as_str()), (200, "1"));
    assert!(session_gone(&engine, &sid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_over_polling_keeps_the_session_alive() {
    // A generous timeout so a loaded machine cannot miss the pong deadline.
    let config = EngineConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(1000),
        ..EngineConfig::default()
    };
    let (addr, engine) = start_engine(config).await;
    let (sid, _) = polling_handshake(addr, P).await;
    for round in 0..3 {
        let r = get(addr, &poll_url(P, &sid)).await;
        assert_eq!((r.status, r.text().as_str()), (200, "2"), "ping #{round}");
        let r = post(addr, &poll_url(P, &sid), b"3").await;
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "pong #{round}");
    }
    assert!(!session_gone(&engine, &sid));
    let r = post(addr, &poll_url(P, &sid), b"4alive").await;
    assert_eq!(r.status, 200);
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!(r.text(), "4alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_ping_follows_the_pong_not_the_pong_deadline() {
    // A pong must re-arm the interval: with a 30 s pong deadline, a server
    // that waited for the deadline before the next ping would not send the
    // second ping within the client's 10 s bound.
    let config = EngineConfig {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_secs(30),
        ..EngineConfig::default()
    };
    let (addr, _engine) = start_engine(config).await;
    let (sid, _) = polling_handshake(addr, P).await;
    for round in 0..5 {
        let r = get(addr, &poll_url(P, &sid)).await;
        assert_eq!((r.status, r.text().as_str()), (200, "2"), "ping #{round}");
        let r = post(addr, &poll_url(P, &sid), b"3").await;
        assert_eq!(r.status, 200, "pong #{round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_timeout_closes_the_session() {
    let (addr, engine) = echo_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!(r.text(), "2");
    // No pong: the pending poll is released by the close.
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!((r.status, r.text().as_str()), (200, "1"));
    assert!(session_gone(&engine, &sid));
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_error(&r, 400, 1, "Session ID unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_timeout_closes_an_idle_session() {
    let (addr, engine) = echo_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    wait_until("the idle session to time out", || {
        session_gone(&engine, &sid)
    })
    .await;
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_error(&r, 400, 1, "Session ID unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_any_allows_every_origin() {
    let config = EngineConfig {
        cors: Some(Cors::any()),
        ..EngineConfig::default()
    };
    let (addr, _engine) = start_engine(config).await;
    let target = format!("{P}?EIO=4&transport=polling");
    let r = request(
        addr,
        "GET",
        &target,
        &[("Origin", "https://a.example")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    // Also without an Origin header, and on error responses.
    let r = get(addr, &target).await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let r = get(addr, &format!("{P}?EIO=4&transport=abc")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allow_list_reflects_allowed_origins_only() {
    let config = EngineConfig {
        cors: Some(Cors::allow_list(["https://good.example"])),
        ..EngineConfig::default()
    };
    let (addr, _engine) = start_engine(config).await;
    let target = format!("{P}?EIO=4&transport=polling");
    let r = request(
        addr,
        "GET",
        &target,
        &[("Origin", "https://good.example")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://good.example")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(
        r.header_all("vary").iter().any(|v| v.contains("Origin")),
        "Vary: Origin in {:?}",
        r.headers
    );

    let r = request(
        addr,
        "GET",
        &target,
        &[("Origin", "https://evil.example")],
        b"",
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-allow-credentials"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_preflight_is_204_with_methods_and_reflected_headers() {
    let config = EngineConfig {
        cors: Some(Cors::any()),
        ..EngineConfig::default()
    };
    let (addr, engine) = start_engine(config).await;
    let r = request(
        addr,
        "OPTIONS",
        &format!("{P}?EIO=4&transport=polling"),
        &[
            ("Origin", "https://a.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type,x-custom"),
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET,HEAD,PUT,PATCH,POST,DELETE")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type,x-custom")
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(engine.session_count(), 0, "a preflight opens no session");

    // Without requested headers, none are reflected.
    let r = request(
        addr,
        "OPTIONS",
        &format!("{P}?EIO=4&transport=polling"),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-headers"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_not_cached() {
    let (addr, _engine) = quiet_server().await;
    let r = get(addr, &format!("{P}?EIO=4&transport=polling")).await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let sid = r.json_after_open();
    let r = post(addr, &poll_url(P, &sid), b"4x").await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = get(addr, &format!("{P}?EIO=4&transport=abc")).await;
    assert_eq!(r.header("cache-control"), Some("no-store"));
}

trait OpenSid {
    fn json_after_open(&self) -> String;
}

impl OpenSid for HttpResponse {
    fn json_after_open(&self) -> String {
        let text = self.text();
        let json: serde_json::Value = serde_json::from_str(&text[1..]).expect("open json");
        json["sid"].as_str().expect("sid").to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_abandoned_mid_body_closes_the_session() {
    use tokio::io::AsyncWriteExt;
    let (addr, engine) = echo_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    let session = engine.session(sid.parse().expect("sid")).expect("session");
    let baseline = Arc::strong_count(&session);
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n4par",
        poll_url(P, &sid)
    );
    tcp.write_all(head.as_bytes()).await.expect("write");
    tcp.flush().await.expect("flush");
    // Wait until the server is reading that body, then abandon it.
    wait_until("the POST to be in progress", || {
        Arc::strong_count(&session) > baseline
    })
    .await;
    drop(session);
    drop(tcp);
    wait_until("the session to close", || session_gone(&engine, &sid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_packet_from_the_client_is_ignored() {
    let (addr, engine) = echo_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    let r = post(addr, &poll_url(P, &sid), b"0{}\x1e4still").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!(r.text(), "4still");
    assert!(!session_gone(&engine, &sid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_queue_takes_a_frame_over_the_byte_limit_a_backlog_does_not() {
    use switchboard::engine::SendError;
    let config = EngineConfig {
        max_queued_bytes: 1000,
        ..EngineConfig::default()
    };
    let (addr, engine) = start_engine(config).await;
    let (sid, _) = polling_handshake(addr, P).await;
    let session = engine.session(sid.parse().expect("sid")).expect("session");
    // Nothing queued: a 5,000-byte frame (a resume's replay, say) passes.
    let big = format!("4{}", "r".repeat(4999));
    assert_eq!(session.send(Frame::Text(big.clone().into())), Ok(true));
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!(r.text(), big, "the client got it whole");
    // A backlog over the limit is a slow consumer.
    let part = format!("4{}", "q".repeat(599));
    assert_eq!(session.send(Frame::Text(part.clone().into())), Ok(true));
    assert_eq!(
        session.send(Frame::Text(part.into())),
        Err(SendError::SlowConsumer)
    );
    wait_until("the slow consumer to close", || session_gone(&engine, &sid)).await;
}
