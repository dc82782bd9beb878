//! Shared by the server's integration tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use switchboard_server::app::App;
use switchboard_server::config::Config;

/// A fresh directory path under the system's temporary directory.
pub(crate) fn temp_dir(prefix: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "switchboard-{prefix}-{}-{nanos}",
        std::process::id()
    ))
}

/// The default configuration with its data under a fresh directory.
pub(crate) fn config(prefix: &str) -> Config {
    let mut config = Config::default();
    config.server.data_dir = temp_dir(prefix);
    config
}

/// Serves the application on 127.0.0.1 (a free port) with the server's
/// own listener, until the test ends.
pub(crate) async fn serve(app: &Arc<App>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::clone(app);
    tokio::spawn(switchboard_server::server::serve(
        app,
        listener,
        None,
        std::future::pending(),
    ));
    addr
}

// ------------------------------------------------ plain WebSocket clients

/// A `/ws` client.
pub(crate) type Ws = tokio_websockets::WebSocketStream<tokio::net::TcpStream>;

/// Bound of one wait of the WebSocket helpers.
const WS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens `/ws`.
pub(crate) async fn ws_connect(addr: SocketAddr) -> Ws {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_websockets::ClientBuilder::new()
        .uri(&format!("ws://{addr}/ws"))
        .unwrap()
        .connect_on(stream)
        .await
        .unwrap()
        .0
}

/// Sends one JSON message.
pub(crate) async fn ws_send(ws: &mut Ws, v: serde_json::Value) {
    use futures_util::SinkExt as _;
    ws.send(tokio_websockets::Message::text(v.to_string()))
        .await
        .unwrap();
}

/// The next text message, or `Err(close code)` when the connection ends
/// (0: without a close frame).
pub(crate) async fn ws_next(ws: &mut Ws) -> Result<serde_json::Value, u16> {
    use futures_util::StreamExt as _;
    loop {
        match tokio::time::timeout(WS_WAIT, ws.next())
            .await
            .expect("timed out")
        {
            Some(Ok(m)) if m.is_close() => return Err(m.as_close().map_or(0, |(c, _)| c.into())),
            Some(Ok(m)) => {
                if let Some(t) = m.as_text() {
                    return Ok(serde_json::from_str(t).unwrap());
                }
            }
            _ => return Err(0),
        }
    }
}

/// The answer to request `id` (publications and signals pass by).
pub(crate) async fn ws_answer(ws: &mut Ws, id: &serde_json::Value) -> serde_json::Value {
    loop {
        let m = ws_next(ws).await.expect("closed");
        if &m["id"] == id {
            return m;
        }
        assert!(
            ["message", "join", "leave"].contains(&m["type"].as_str().unwrap_or("")),
            "unexpected {m}"
        );
    }
}

/// A `/ws` client authenticated as `user` (a development token).
pub(crate) async fn ws_authed(addr: SocketAddr, app: &App, user: &str) -> Ws {
    let mut ws = ws_connect(addr).await;
    let token = app.verifier.issue_dev_token(user, Some(user), 600).unwrap();
    ws_send(
        &mut ws,
        serde_json::json!({"type": "auth", "payload": {"token": token}, "id": "auth"}),
    )
    .await;
    let a = ws_answer(&mut ws, &serde_json::json!("auth")).await;
    assert_eq!(a["type"], "ack", "{a}");
    ws
}
