//! The plain WebSocket gateway over real connections.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_server::app::App;
use switchboard_server::channel::ChannelName;
use switchboard_server::node::Publisher;
use tokio_websockets::{ClientBuilder, Message};

type Ws = tokio_websockets::WebSocketStream<tokio::net::TcpStream>;

const WAIT: Duration = Duration::from_secs(10);

async fn start(auth_timeout: Duration) -> (SocketAddr, Arc<App>) {
    let mut app = App::new(common::config("ws")).unwrap();
    Arc::get_mut(&mut app).expect("only handle").auth_timeout = auth_timeout;
    (common::serve(&app).await, app)
}

async fn connect(addr: SocketAddr) -> Ws {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (ws, _) = ClientBuilder::new()
        .uri(&format!("ws://{addr}/ws"))
        .unwrap()
        .connect_on(stream)
        .await
        .unwrap();
    ws
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> Value {
    let msg = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("timed out")
        .expect("closed")
        .expect("error");
    serde_json::from_str(msg.as_text().expect("text")).unwrap()
}

/// Waits for the close frame and returns its code.
async fn closed_with(ws: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out")
        {
            Some(Ok(m)) if m.is_close() => return m.as_close().map_or(0, |(c, _)| c.into()),
            Some(Ok(_)) => continue,
            _ => return 0,
        }
    }
}

async fn authed(addr: SocketAddr, app: &App, user: &str) -> Ws {
    let mut ws = connect(addr).await;
    let token = app.verifier.issue_dev_token(user, Some(user), 60).unwrap();
    send(
        &mut ws,
        json!({"type": "auth", "payload": {"token": token}, "id": 1}),
    )
    .await;
    let a = recv(&mut ws).await;
    assert_eq!(
        (a["type"].as_str(), a["id"].as_i64()),
        (Some("ack"), Some(1)),
        "{a}"
    );
    ws
}

/// The next message that is not a join/leave signal; signals are noted as
/// `"join <user>"`.
async fn recv_noting_signals(ws: &mut Ws, signals: &mut Vec<String>) -> Value {
    loop {
        let m = recv(ws).await;
        match m["type"].as_str() {
            Some(kind @ ("join" | "leave")) => {
                signals.push(format!("{kind} {}", m["payload"]["user"].as_str().unwrap()));
            }
            _ => return m,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_receive_what_another_client_publishes() {
    let (addr, app) = start(Duration::from_secs(10)).await;
    let mut a = authed(addr, &app, "ada").await;
    let mut b = authed(addr, &app, "bob").await;
    let (mut a_signals, mut b_signals) = (Vec::new(), Vec::new());
    for (ws, signals) in [(&mut a, &mut a_signals), (&mut b, &mut b_signals)] {
        send(
            ws,
            json!({"type": "subscribe", "payload": {"channel": "chat:lobby"}, "id": 2}),
        )
        .await;
        let ack = recv_noting_signals(ws, signals).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["payload"]["recovered"], true);
    }
    send(&mut b, json!({"type": "message", "payload": {"channel": "chat:lobby", "data": {"text": "hi"}}, "id": 3})).await;
    // b gets its ack and (as a subscriber) the message; a gets the message.
    let mut got_ack = false;
    let mut got_msg = false;
    for _ in 0..2 {
        let m = recv_noting_signals(&mut b, &mut b_signals).await;
        match m["type"].as_str() {
            Some("ack") => {
                assert_eq!(
                    (m["id"].as_i64(), m["payload"]["offset"].as_u64()),
                    (Some(3), Some(1))
                );
                got_ack = true;
            }
            Some("message") => got_msg = true,
            other => panic!("unexpected {other:?}: {m}"),
        }
    }
    assert!(got_ack && got_msg);
    let m = recv_noting_signals(&mut a, &mut a_signals).await;
    assert_eq!(a_signals, ["join ada", "join bob"], "presence signals");
    assert_eq!(b_signals, ["join bob"]);
    assert_eq!(m["type"], "message");
    assert_eq!(m["payload"]["channel"], "chat:lobby");
    assert_eq!(m["payload"]["offset"], 1);
    assert_eq!(m["payload"]["data"], json!({"text": "hi"}));
    assert_eq!(m["payload"]["from"], "bob");
    assert!(m.get("id").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_subscriber_gets_what_it_missed_in_order() {
    let (addr, app) = start(Duration::from_secs(10)).await;
    let mut a = authed(addr, &app, "ada").await;
    send(
        &mut a,
        json!({"type": "subscribe", "payload": {"channel": "chat:lobby"}, "id": 1}),
    )
    .await;
    let ack = recv(&mut a).await;
    let epoch = ack["payload"]["epoch"].as_str().unwrap().to_owned();
    for i in 1..=5 {
        send(&mut a, json!({"type": "message", "payload": {"channel": "chat:lobby", "data": i}, "id": 10 + i})).await;
    }
    // Five acks and five messages, in any interleaving.
    for _ in 0..10 {
        recv(&mut a).await;
    }
    let mut b = authed(addr, &app, "ada").await;
    send(&mut b, json!({"type": "subscribe", "payload": {"channel": "chat:lobby", "since": {"offset": 2, "epoch": epoch}}, "id": 9})).await;
    let ack = recv(&mut b).await;
    assert_eq!(ack["payload"]["recovered"], true, "{ack}");
    let offsets: Vec<u64> = ack["payload"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![3, 4, 5]);
    send(&mut b, json!({"type": "subscribe", "payload": {"channel": "chat:other", "since": {"offset": 2, "epoch": "nope"}}, "id": 10})).await;
    let ack = recv(&mut b).await;
    assert_eq!(ack["payload"]["recovered"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_auth_only_auth_and_ping_and_bad_input_is_answered() {
    let (addr, _app) = start(Duration::from_secs(10)).await;
    let mut ws = connect(addr).await;
    send(&mut ws, json!({"type": "ping", "id": "p"})).await;
    let m = recv(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["id"].as_str()),
        (Some("pong"), Some("p"))
    );
    send(
        &mut ws,
        json!({"type": "subscribe", "payload": {"channel": "chat:lobby"}, "id": 1}),
    )
    .await;
    let m = recv(&mut ws).await;
    assert_eq!(m["payload"]["code"], "unauthenticated");
    assert_eq!(m["id"], 1);
    send(
        &mut ws,
        json!({"type": "auth", "payload": {"token": "a.b.c"}, "id": 2}),
    )
    .await;
    let m = recv(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["payload"]["code"].as_str()),
        (Some("error"), Some("token_malformed"))
    );
    send(&mut ws, json!({"type": "teleport", "id": 3})).await;
    let m = recv(&mut ws).await;
    assert_eq!(
        (m["payload"]["code"].as_str(), m["id"].as_i64()),
        (Some("bad_request"), Some(3))
    );
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(closed_with(&mut ws).await, 1003);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_authenticates_is_closed() {
    let (addr, _app) = start(Duration::from_millis(200)).await;
    let mut ws = connect(addr).await;
    assert_eq!(closed_with(&mut ws).await, 1008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_with_1009_and_others_are_unaffected() {
    let (addr, app) = start(Duration::from_secs(10)).await;
    let mut other = authed(addr, &app, "bob").await;
    let mut ws = authed(addr, &app, "ada").await;
    ws.send(Message::text("x".repeat(100_000))).await.unwrap();
    assert_eq!(closed_with(&mut ws).await, 1009);
    send(&mut other, json!({"type": "ping", "id": 1})).await;
    assert_eq!(recv(&mut other).await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_token_that_allows_less_drops_those_subscriptions() {
    const SECRET: &str = "0123456789abcdef0123456789abcdef";
    let mut config = common::config("ws-reauth");
    config.auth.secret = Some(SECRET.into());
    let app = App::new(config).unwrap();
    let addr = common::serve(&app).await;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |channels: &[&str]| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": "ada", "exp": exp, "channels": channels}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let mut ws = common::ws_connect(addr).await;
    let auth = |t: String, id: &str| json!({"type": "auth", "payload": {"token": t}, "id": id});
    common::ws_send(&mut ws, auth(token(&["chat:*"]), "a1")).await;
    assert_eq!(
        common::ws_answer(&mut ws, &json!("a1")).await["type"],
        "ack"
    );
    for ch in ["chat:a", "chat:b"] {
        common::ws_send(
            &mut ws,
            json!({"type": "subscribe", "payload": {"channel": ch}, "id": ch}),
        )
        .await;
        assert_eq!(common::ws_answer(&mut ws, &json!(ch)).await["type"], "ack");
    }
    // The same user, now allowed chat:a only.
    common::ws_send(&mut ws, auth(token(&["chat:a"]), "a2")).await;
    assert_eq!(
        common::ws_answer(&mut ws, &json!("a2")).await["type"],
        "ack"
    );
    let b = ChannelName::parse("chat:b").unwrap();
    assert_eq!(app.node.hub().subscriber_count(&b), 0, "chat:b was dropped");
    for ch in ["chat:b", "chat:a"] {
        app.node
            .publish(
                &ChannelName::parse(ch).unwrap(),
                json!(ch),
                Publisher::Api,
                None,
            )
            .await
            .unwrap();
    }
    // Only chat:a's publication arrives.
    loop {
        let m = common::ws_next(&mut ws).await.unwrap();
        if m["type"] == "message" {
            assert_eq!(m["payload"]["channel"], "chat:a", "{m}");
            break;
        }
    }
}
