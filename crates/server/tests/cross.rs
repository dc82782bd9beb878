//! One room fabric, three protocols: a publication from a Socket.IO client,
//! a plain WebSocket client or the node reaches the subscribers on all
//! three (Socket.IO, plain WebSocket, SSE) with the same offset and payload.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use switchboard_server::app::App;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_websockets::{ClientBuilder, Message};

type Ws = tokio_websockets::WebSocketStream<tokio::net::TcpStream>;
const WAIT: Duration = Duration::from_secs(10);

async fn start() -> (SocketAddr, Arc<App>) {
    let app = App::new(common::config("cross")).unwrap();
    (common::serve(&app).await, app)
}

async fn ws_connect(addr: SocketAddr, path: &str) -> Ws {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    ClientBuilder::new()
        .uri(&format!("ws://{addr}{path}"))
        .unwrap()
        .connect_on(stream)
        .await
        .unwrap()
        .0
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("timed out")
            .expect("closed")
            .unwrap();
        if let Some(t) = m.as_text() {
            if t == "2" {
                ws.send(Message::text("3")).await.unwrap();
                continue;
            }
            return t.to_owned();
        }
    }
}

/// A Socket.IO client speaking raw frames; publications that arrive while
/// it waits for an ack are kept for later.
struct Sio(Ws, u64, std::collections::VecDeque<Value>);

impl Sio {
    async fn open(addr: SocketAddr, token: &str) -> Sio {
        let mut ws = ws_connect(addr, "/socket.io/?EIO=4&transport=websocket").await;
        assert!(next_text(&mut ws).await.starts_with('0'));
        ws.send(Message::text(format!("40{}", json!({ "token": token }))))
            .await
            .unwrap();
        let reply = next_text(&mut ws).await;
        assert!(reply.starts_with("40{"), "{reply}");
        Sio(ws, 0, Default::default())
    }

    async fn call(&mut self, event: &str, arg: Value) -> Value {
        self.1 += 1;
        let id = self.1;
        self.0
            .send(Message::text(format!("42{id}{}", json!([event, arg]))))
            .await
            .unwrap();
        loop {
            let t = next_text(&mut self.0).await;
            if let Some(rest) = t.strip_prefix(&format!("43{id}")) {
                let v: Value = serde_json::from_str(rest).unwrap();
                return v[0].clone();
            }
            if let Some(rest) = t.strip_prefix("42") {
                let v: Value = serde_json::from_str(rest).unwrap();
                if v[0] == "publication" {
                    self.2.push_back(v[1].clone());
                }
            }
        }
    }

    async fn publication(&mut self) -> Value {
        if let Some(v) = self.2.pop_front() {
            return v;
        }
        loop {
            let t = next_text(&mut self.0).await;
            if let Some(rest) = t.strip_prefix("42") {
                let v: Value = serde_json::from_str(rest).unwrap();
                if v[0] == "publication" {
                    return v[1].clone();
                }
            }
        }
    }
}

/// A plain WebSocket client (publications kept while it waits for an ack).
struct Plain(Ws, std::collections::VecDeque<Value>);

impl Plain {
    async fn open(addr: SocketAddr, token: &str) -> Plain {
        let mut p = Plain(ws_connect(addr, "/ws").await, Default::default());
        let a = p.call("auth", json!({ "token": token })).await;
        assert_eq!(a["type"], "ack");
        p
    }

    async fn call(&mut self, kind: &str, payload: Value) -> Value {
        self.0
            .send(Message::text(
                json!({ "type": kind, "payload": payload, "id": kind }).to_string(),
            ))
            .await
            .unwrap();
        loop {
            let v: Value = serde_json::from_str(&next_text(&mut self.0).await).unwrap();
            if v["id"] == kind {
                return v;
            }
            if v["type"] == "message" {
                self.1.push_back(v["payload"].clone());
            }
        }
    }

    async fn publication(&mut self) -> Value {
        if let Some(v) = self.1.pop_front() {
            return v;
        }
        loop {
            let v: Value = serde_json::from_str(&next_text(&mut self.0).await).unwrap();
            if v["type"] == "message" {
                return v["payload"].clone();
            }
        }
    }
}

/// An SSE client.
struct Sse(tokio::net::TcpStream, String);

impl Sse {
    async fn open(addr: SocketAddr, token: &str) -> Sse {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req =
            format!("GET /events?channel=chat:lobby&token={token} HTTP/1.1\r\nHost: x\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut s = Sse(tcp, String::new());
        while !s.1.contains("\r\n\r\n") {
            s.fill().await;
        }
        assert!(s.1.starts_with("HTTP/1.1 200"), "{}", s.1);
        let end = s.1.find("\r\n\r\n").unwrap() + 4;
        s.1.drain(..end);
        s
    }

    async fn fill(&mut self) {
        let mut buf = [0u8; 8192];
        let n = tokio::time::timeout(WAIT, self.0.read(&mut buf))
            .await
            .expect("timed out")
            .unwrap();
        assert!(n > 0);
        self.1.push_str(&String::from_utf8_lossy(&buf[..n]));
    }

    async fn publication(&mut self) -> Value {
        loop {
            // Publications only (join/leave events pass by).
            const MARK: &str = "event: message\ndata: ";
            if let Some(pos) = self.1.find(MARK)
                && let Some(end) = self.1[pos..].find("\n\n")
            {
                let v: Value = serde_json::from_str(&self.1[pos + MARK.len()..pos + end]).unwrap();
                self.1.drain(..pos + end);
                return v;
            }
            self.fill().await;
        }
    }
}

fn same(a: &Value, b: &Value) {
    for key in ["channel", "offset", "epoch", "data", "from"] {
        assert_eq!(a[key], b[key], "{key}: {a} vs {b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_from_each_protocol_reaches_the_other_two() {
    let (addr, app) = start().await;
    let token = |u: &str| app.verifier.issue_dev_token(u, Some(u), 60).unwrap();
    let mut sio = Sio::open(addr, &token("sio-user")).await;
    let ack = sio
        .call("subscribe", json!({ "channel": "chat:lobby" }))
        .await;
    assert_eq!(ack["channel"], "chat:lobby", "{ack}");
    let mut plain = Plain::open(addr, &token("ws-user")).await;
    let ack = plain
        .call("subscribe", json!({ "channel": "chat:lobby" }))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let mut sse = Sse::open(addr, &token("sse-user")).await;
    let lobby = switchboard_server::channel::ChannelName::parse("chat:lobby").unwrap();
    tokio::time::timeout(WAIT, async {
        while app.node.hub().subscriber_count(&lobby) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();

    // From Socket.IO.
    let ack = sio
        .call(
            "publish",
            json!({ "channel": "chat:lobby", "data": { "via": "sio" } }),
        )
        .await;
    assert_eq!(ack["offset"], 1, "{ack}");
    let (a, b, c) = (
        sio.publication().await,
        plain.publication().await,
        sse.publication().await,
    );
    same(&a, &b);
    same(&a, &c);
    assert_eq!(
        (a["offset"].as_u64(), a["from"].as_str()),
        (Some(1), Some("sio-user"))
    );

    // From the plain WebSocket.
    let ack = plain
        .call(
            "message",
            json!({ "channel": "chat:lobby", "data": { "via": "ws" } }),
        )
        .await;
    assert_eq!(ack["payload"]["offset"], 2, "{ack}");
    let (a, b, c) = (
        sio.publication().await,
        plain.publication().await,
        sse.publication().await,
    );
    same(&a, &b);
    same(&a, &c);
    assert_eq!(a["data"], json!({ "via": "ws" }));

    // From the node (what the HTTP API will call).
    app.node
        .publish(
            &lobby,
            json!({ "via": "api" }),
            switchboard_server::node::Publisher::Api,
            None,
        )
        .await
        .unwrap();
    let (a, b, c) = (
        sio.publication().await,
        plain.publication().await,
        sse.publication().await,
    );
    same(&a, &b);
    same(&a, &c);
    assert_eq!(a["offset"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_refuses_a_bad_token_with_connect_error() {
    let (addr, _app) = start().await;
    let mut ws = ws_connect(addr, "/socket.io/?EIO=4&transport=websocket").await;
    next_text(&mut ws).await;
    ws.send(Message::text(r#"40{"token":"not-a-jwt"}"#))
        .await
        .unwrap();
    let reply = next_text(&mut ws).await;
    assert!(reply.starts_with("44{"), "{reply}");
    let v: Value = serde_json::from_str(&reply[2..]).unwrap();
    assert_eq!(v["data"]["code"], "token_malformed");
}
