//! Engine.IO over WebSocket, against a raw echo engine on real connections:
//! handshake, echo, limits, heartbeat, and the upgrade from polling.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;
use switchboard::Sid;
use switchboard::engine::{Engine, EngineConfig, TransportKind};

const P: &str = "/engine.io/";

async fn quiet_server() -> (SocketAddr, Engine<Echo>) {
    start_engine(EngineConfig::default()).await
}

fn session_gone(engine: &Engine<Echo>, sid: &str) -> bool {
    engine.session(sid.parse::<Sid>().expect("sid")).is_none()
}

/// Polling handshake, then a WebSocket probe and upgrade. Returns the sid
/// and the upgraded WebSocket (after `5` was sent).
async fn upgraded(addr: SocketAddr) -> (String, Ws) {
    let (sid, _) = polling_handshake(addr, P).await;
    let mut ws = ws_connect(addr, &format!("{P}?EIO=4&transport=websocket&sid={sid}")).await;
    ws.send_text("2probe").await;
    ws.expect_text("3probe").await;
    ws.send_text("5").await;
    (sid, ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handshake_sends_open_packet_without_upgrades() {
    let (addr, engine) = start_engine(fast_heartbeat()).await;
    let mut ws = ws_connect(addr, &format!("{P}?EIO=4&transport=websocket")).await;
    let open = ws.recv_text().await;
    let json: serde_json::Value = serde_json::from_str(&open[1..]).expect("json");
    let sid = json["sid"].as_str().expect("sid");
    assert_eq!(sid.len(), 20);
    assert_eq!(
        open,
        format!(
            r#"0{{"sid":"{sid}","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":1000000}}"#
        )
    );
    assert_eq!(json.as_object().expect("object").len(), 5);
    let session = engine.session(sid.parse().expect("sid")).expect("session");
    assert_eq!(session.transport(), TransportKind::WebSocket);
    ws.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_with_bad_query_is_refused() {
    let (addr, engine) = quiet_server().await;
    for target in [
        format!("{P}?transport=websocket"),
        format!("{P}?EIO=abc&transport=websocket"),
        format!("{P}?EIO=4"),
        format!("{P}?EIO=4&transport=abc"),
    ] {
        match try_ws_connect(addr, &target).await {
            Err(_) => {}
            Ok(mut ws) => {
                ws.expect_closed().await;
            }
        }
    }
    assert_eq!(engine.session_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_message_is_echoed() {
    let (addr, _engine) = quiet_server().await;
    let (mut ws, _) = ws_open(addr, P).await;
    ws.send_text("4hello").await;
    ws.expect_text("4hello").await;
    ws.send_text("4héllo wörld").await;
    ws.expect_text("4héllo wörld").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_message_is_echoed_as_raw_binary_frame() {
    let (addr, _engine) = quiet_server().await;
    let (mut ws, _) = ws_open(addr, P).await;
    ws.send_binary(&[1, 2, 3, 4]).await;
    assert_eq!(ws.recv().await, Msg::Binary(vec![1, 2, 3, 4]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_packet_closes_the_websocket() {
    let (addr, engine) = quiet_server().await;
    let (mut ws, open) = ws_open(addr, P).await;
    let sid = open["sid"].as_str().expect("sid").to_owned();
    ws.send_text("abc").await;
    ws.expect_closed().await;
    wait_until("the session to close", || session_gone(&engine, &sid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_max_payload_closes_with_1009() {
    let config = EngineConfig {
        max_payload: 1000,
        ..EngineConfig::default()
    };
    let (addr, engine) = start_engine(config).await;
    let (mut ws, open) = ws_open(addr, P).await;
    assert_eq!(open["maxPayload"], json!(1000));
    let sid = open["sid"].as_str().expect("sid").to_owned();
    // Just under the limit still passes.
    let fits = format!("4{}", "y".repeat(998));
    ws.send_text(&fits).await;
    ws.expect_text(&fits).await;
    ws.send_text(&format!("4{}", "x".repeat(2000))).await;
    assert_eq!(ws.expect_closed().await, Some(1009));
    wait_until("the session to close", || session_gone(&engine, &sid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_message_over_max_payload_closes_with_1009() {
    let config = EngineConfig {
        max_payload: 1000,
        ..EngineConfig::default()
    };
    let (addr, engine) = start_engine(config).await;
    // A client that sends its messages in frames of 256 bytes.
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (inner, _) = tokio_websockets::ClientBuilder::new()
        .uri(&format!("ws://{addr}{P}?EIO=4&transport=websocket"))
        .expect("valid uri")
        .config(tokio_websockets::Config::default().frame_size(256))
        .connect_on(tcp)
        .await
        .expect("websocket handshake");
    let mut ws = Ws { inner };
    let open = ws.recv_text().await;
    let open: serde_json::Value = serde_json::from_str(&open[1..]).expect("open json");
    let sid = open["sid"].as_str().expect("sid").to_owned();
    let fits = format!("4{}", "y".repeat(998));
    ws.send_text(&fits).await;
    ws.expect_text(&fits).await;
    ws.send_text(&format!("4{}", "x".repeat(2000))).await;
    assert_eq!(ws.expect_closed().await, Some(1009));
    wait_until("the session to close", || session_gone(&engine, &sid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_timeout_closes_the_websocket() {
    let (addr, engine) = start_engine(fast_heartbeat()).await;
    let (mut ws, open) = ws_open(addr, P).await;
    let sid = open["sid"].as_str().expect("sid").to_owned();
    ws.expect_text("2").await;
    // Never answer the ping.
    ws.expect_closed().await;
    assert!(session_gone(&engine, &sid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_keeps_the_websocket_alive() {
    // A generous pong deadline so a loaded machine cannot miss it.
    let config = EngineConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(1000),
        ..EngineConfig::default()
    };
    let (addr, engine) = start_engine(config).await;
    let (mut ws, open) = ws_open(addr, P).await;
    let sid = open["sid"].as_str().expect("sid").to_owned();
    for _ in 0..3 {
        ws.expect_text("2").await;
        ws.send_text("3").await;
    }
    ws.send_text("4still").await;
    ws.expect_text("4still").await;
    assert!(!session_gone(&engine, &sid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_ping_follows_the_pong_not_the_pong_deadline() {
    // See the polling test of the same name: a 30 s deadline that the next
    // ping must not wait for.
    let config = EngineConfig {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_secs(30),
        ..EngineConfig::default()
    };
    let (addr, _engine) = start_engine(config).await;
    let (mut ws, _) = ws_open(addr, P).await;
    for _ in 0..5 {
        ws.expect_text("2").await;
        ws.send_text("3").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_polling_to_websocket() {
    let (addr, engine) = quiet_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    let mut ws = ws_connect(addr, &format!("{P}?EIO=4&transport=websocket&sid={sid}")).await;
    ws.send_text("2probe").await;
    ws.expect_text("3probe").await;
    // A poll during the probe is released with a noop.
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!((r.status, r.text().as_str()), (200, "6"));
    ws.send_text("5").await;
    ws.send_text("4hello").await;
    ws.expect_text("4hello").await;
    let session = engine.session(sid.parse().expect("sid")).expect("session");
    assert_eq!(session.transport(), TransportKind::WebSocket);

    // Polling is over for this session.
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), r#"{"code":3,"message":"Bad request"}"#);
    let r = post(addr, &poll_url(P, &sid), b"4nope").await;
    assert_eq!(r.status, 400);
    // ... and the WebSocket still works.
    ws.send_text("4after").await;
    ws.expect_text("4after").await;
}

/// Until the client sends `5`, server packets keep flowing over polling
/// (the reference flushes its buffer to a GET even while upgrading; only an
/// empty poll is released with a noop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_still_carries_packets_during_the_probe() {
    let (addr, _engine) = quiet_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    let mut ws = ws_connect(addr, &format!("{P}?EIO=4&transport=websocket&sid={sid}")).await;
    ws.send_text("2probe").await;
    ws.expect_text("3probe").await;
    let r = post(addr, &poll_url(P, &sid), b"4during").await;
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = get(addr, &poll_url(P, &sid)).await;
    assert_eq!((r.status, r.text().as_str()), (200, "4during"));
    ws.send_text("5").await;
    ws.send_text("4after").await;
    ws.expect_text("4after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_websocket_with_same_sid_is_closed() {
    let (addr, _engine) = quiet_server().await;
    let (sid, mut ws) = upgraded(addr).await;
    // Make sure the upgrade is complete before the second connection.
    ws.send_text("4ready").await;
    ws.expect_text("4ready").await;

    match try_ws_connect(addr, &format!("{P}?EIO=4&transport=websocket&sid={sid}")).await {
        Err(_) => {}
        Ok(mut second) => {
            second.send_text("2probe").await;
            assert!(matches!(second.recv().await, Msg::Close(_) | Msg::Gone));
        }
    }
    ws.send_text("4hello").await;
    ws.expect_text("4hello").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_queued_on_polling_are_delivered_over_websocket() {
    let (addr, engine) = quiet_server().await;
    let (sid, _) = polling_handshake(addr, P).await;
    // The echo of this sits in the polling buffer: nobody polls it.
    let r = post(addr, &poll_url(P, &sid), b"4queued1\x1e4queued2").await;
    assert_eq!(r.text(), "ok");
    let mut ws = ws_connect(addr, &format!("{P}?EIO=4&transport=websocket&sid={sid}")).await;
    ws.send_text("2probe").await;
    ws.expect_text("3probe").await;
    ws.send_text("5").await;
    ws.expect_text("4queued1").await;
    ws.expect_text("4queued2").await;
    ws.send_text("4next").await;
    ws.expect_text("4next").await;
    assert!(!session_gone(&engine, &sid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_closing_the_websocket_ends_the_session() {
    let (addr, engine) = quiet_server().await;
    let (ws, open) = ws_open(addr, P).await;
    let sid = open["sid"].as_str().expect("sid").to_owned();
    assert!(!session_gone(&engine, &sid));
    ws.close().await;
    wait_until("the session to close", || session_gone(&engine, &sid)).await;
}
