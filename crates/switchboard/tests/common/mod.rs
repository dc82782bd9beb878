//! Test harness shared by the integration tests: an in-process server bound
//! to `127.0.0.1:0`, a tiny raw-TCP HTTP/1.1 client, and a WebSocket client.
//!
//! Every wait is bounded by [`WAIT`] so that no test can hang.

#![allow(dead_code)]

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use switchboard::RemoteAddr;
use switchboard::engine::service::NotFound;
use switchboard::engine::{CloseReason, Engine, EngineConfig, EngineHandler, EngineLayer, Session};
use switchboard::protocol::engine::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};
use tower_layer::Layer;
use tower_service::Service;

/// Upper bound for any single wait in a test.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Runs `fut`, panicking with `what` if it takes longer than [`WAIT`].
pub(crate) async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `cond` every 5 ms until it holds (bounded by [`WAIT`]).
pub(crate) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    bounded(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Receives one item from an unbounded channel (bounded by [`WAIT`]).
pub(crate) async fn recv<T>(what: &str, rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
    bounded(what, rx.recv())
        .await
        .unwrap_or_else(|| panic!("channel closed while waiting for {what}"))
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

/// Raw Engine.IO handler echoing every message unchanged.
pub(crate) struct Echo;

impl EngineHandler for Echo {
    type Data = ();
    fn new_session_data(&self) {}
    fn on_open(&self, _: &Arc<Session<Self>>) {}
    fn on_message(&self, session: &Arc<Session<Self>>, text: Bytes) {
        let _ = session.send(Frame::message(&text));
    }
    fn on_binary(&self, session: &Arc<Session<Self>>, data: Bytes) {
        let _ = session.send(Frame::Binary(data));
    }
    fn on_close(&self, _: &Arc<Session<Self>>, _: CloseReason) {}
}

/// Engine options with the short heartbeat the official suites use
/// (ping interval 300 ms, ping timeout 200 ms).
pub(crate) fn fast_heartbeat() -> EngineConfig {
    EngineConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        ..EngineConfig::default()
    }
}

/// Serves `service` on a fresh `127.0.0.1:0` listener; returns its address.
/// The accept loop lives as long as the test runtime.
pub(crate) async fn serve<S, B>(service: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let service = service.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(RemoteAddr(peer));
                    service.clone().call(req)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// Starts a raw Engine.IO echo server on `/engine.io/`.
pub(crate) async fn start_engine(config: EngineConfig) -> (SocketAddr, Engine<Echo>) {
    let engine = Engine::new(config, Echo);
    let addr = serve(EngineLayer::new(engine.clone()).layer(NotFound)).await;
    (addr, engine)
}

/// Starts a Socket.IO server on `/socket.io/`.
pub(crate) async fn start_io(io: &switchboard::SocketIo) -> SocketAddr {
    serve(io.service()).await
}

// ---------------------------------------------------------------------------
// HTTP/1.1 client over raw TCP
// ---------------------------------------------------------------------------

/// A parsed HTTP response.
#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    /// The first value of a header (name case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header.
    pub(crate) fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

/// An HTTP request that has been written but whose response has not been
/// read yet. Dropping it closes the connection (an aborted request).
pub(crate) struct PendingRequest {
    stream: TcpStream,
}

/// Writes a request on a fresh connection without waiting for the answer.
pub(crate) async fn start_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> PendingRequest {
    let mut stream = bounded("tcp connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    let _ = stream.set_nodelay(true);
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bounded("write request", stream.write_all(&bytes))
        .await
        .expect("write request");
    PendingRequest { stream }
}

impl PendingRequest {
    /// Reads the response (bounded by [`WAIT`]).
    pub(crate) async fn response(self) -> std::io::Result<HttpResponse> {
        bounded("http response", read_response(self.stream)).await
    }
}

async fn read_response(mut stream: TcpStream) -> std::io::Result<HttpResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the response head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match length {
        Some(len) => {
            while body.len() < len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed inside the body",
                    ));
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None if status == 101 || status == 204 || status == 304 => body.clear(),
        None => {
            stream.read_to_end(&mut body).await?;
        }
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// One request on a fresh connection; errors (e.g. a reset) are returned.
pub(crate) async fn try_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<HttpResponse> {
    start_request(addr, method, target, headers, body)
        .await
        .response()
        .await
}

/// One request on a fresh connection.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    try_request(addr, method, target, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// `GET target`.
pub(crate) async fn get(addr: SocketAddr, target: &str) -> HttpResponse {
    request(addr, "GET", target, &[], b"").await
}

/// `POST target` with `body`.
pub(crate) async fn post(addr: SocketAddr, target: &str, body: &[u8]) -> HttpResponse {
    request(
        addr,
        "POST",
        target,
        &[("Content-Type", "text/plain;charset=UTF-8")],
        body,
    )
    .await
}

/// Opens a polling session on `path` (`/engine.io/` or `/socket.io/`).
/// Returns the sid and the open packet's JSON.
pub(crate) async fn polling_handshake(addr: SocketAddr, path: &str) -> (String, serde_json::Value) {
    let r = get(addr, &format!("{path}?EIO=4&transport=polling")).await;
    assert_eq!(r.status, 200, "handshake status");
    let text = r.text();
    assert!(text.starts_with('0'), "open packet expected, got {text:?}");
    let json: serde_json::Value = serde_json::from_str(&text[1..]).expect("open packet json");
    let sid = json["sid"].as_str().expect("sid").to_owned();
    (sid, json)
}

/// The polling URL of a session.
pub(crate) fn poll_url(path: &str, sid: &str) -> String {
    format!("{path}?EIO=4&transport=polling&sid={sid}")
}

// ---------------------------------------------------------------------------
// WebSocket client
// ---------------------------------------------------------------------------

/// One thing read from a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Msg {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
    /// A close frame, with its status code if it carried one.
    Close(Option<u16>),
    /// The connection ended without a close frame, or failed.
    Gone,
}

/// A WebSocket client over a plain TCP stream.
pub(crate) struct Ws {
    pub(crate) inner: WebSocketStream<TcpStream>,
}

/// Opens a WebSocket to `target` (path and query).
pub(crate) async fn try_ws_connect(
    addr: SocketAddr,
    target: &str,
) -> Result<Ws, tokio_websockets::Error> {
    let tcp = bounded("tcp connect", TcpStream::connect(addr)).await?;
    let _ = tcp.set_nodelay(true);
    let uri = format!("ws://{addr}{target}");
    let (ws, _) = bounded(
        "websocket handshake",
        ClientBuilder::new()
            .uri(&uri)
            .expect("valid uri")
            .connect_on(tcp),
    )
    .await?;
    Ok(Ws { inner: ws })
}

/// Opens a WebSocket to `target`, panicking on failure.
pub(crate) async fn ws_connect(addr: SocketAddr, target: &str) -> Ws {
    try_ws_connect(addr, target)
        .await
        .unwrap_or_else(|e| panic!("websocket {target}: {e}"))
}

impl Ws {
    /// Sends a text frame.
    pub(crate) async fn send_text(&mut self, text: &str) {
        bounded("ws send", self.inner.send(Message::text(text.to_owned())))
            .await
            .expect("ws send text");
    }

    /// Sends a binary frame.
    pub(crate) async fn send_binary(&mut self, data: &[u8]) {
        bounded("ws send", self.inner.send(Message::binary(data.to_vec())))
            .await
            .expect("ws send binary");
    }

    /// Reads the next frame (bounded by [`WAIT`]).
    pub(crate) async fn recv(&mut self) -> Msg {
        loop {
            let next = bounded("ws message", self.inner.next()).await;
            return match next {
                None | Some(Err(_)) => Msg::Gone,
                Some(Ok(m)) if m.is_text() => Msg::Text(m.as_text().unwrap_or_default().to_owned()),
                Some(Ok(m)) if m.is_binary() => Msg::Binary(Bytes::from(m.into_payload()).to_vec()),
                Some(Ok(m)) if m.is_close() => Msg::Close(
                    m.as_close()
                        .map(|(c, _)| u16::from(c))
                        .filter(|c| *c != 1005),
                ),
                // WebSocket-level pings and pongs.
                Some(Ok(_)) => continue,
            };
        }
    }

    /// Reads the next frame, skipping Engine.IO pings (`2`).
    pub(crate) async fn recv_skip_pings(&mut self) -> Msg {
        loop {
            match self.recv().await {
                Msg::Text(t) if t == "2" => continue,
                m => return m,
            }
        }
    }

    /// Reads the next frame, which must be text.
    pub(crate) async fn recv_text(&mut self) -> String {
        match self.recv().await {
            Msg::Text(t) => t,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Reads the next frame, which must be binary.
    pub(crate) async fn recv_binary(&mut self) -> Vec<u8> {
        match self.recv().await {
            Msg::Binary(b) => b,
            other => panic!("expected a binary frame, got {other:?}"),
        }
    }

    /// Reads the next frame, which must be exactly this text.
    pub(crate) async fn expect_text(&mut self, expected: &str) {
        let got = self.recv().await;
        assert_eq!(got, Msg::Text(expected.to_owned()), "unexpected frame");
    }

    /// Reads until the connection closes (close frame or end of stream),
    /// ignoring anything else. Returns the close code if one was sent.
    pub(crate) async fn expect_closed(&mut self) -> Option<u16> {
        loop {
            match self.recv().await {
                Msg::Close(code) => return code,
                Msg::Gone => return None,
                _ => continue,
            }
        }
    }

    /// Sends a close frame and waits for the server's answer.
    pub(crate) async fn close(mut self) {
        let _ = bounded("ws close", self.inner.send(Message::close(None, ""))).await;
        let _ = tokio::time::timeout(WAIT, async {
            while let Some(Ok(_)) = self.inner.next().await {}
        })
        .await;
    }
}

// ---------------------------------------------------------------------------
// Engine.IO / Socket.IO over WebSocket
// ---------------------------------------------------------------------------

/// Opens an Engine.IO WebSocket session on `path`; returns it with the open
/// packet's JSON.
pub(crate) async fn ws_open(addr: SocketAddr, path: &str) -> (Ws, serde_json::Value) {
    let mut ws = ws_connect(addr, &format!("{path}?EIO=4&transport=websocket")).await;
    let open = ws.recv_text().await;
    assert!(open.starts_with('0'), "open packet expected, got {open:?}");
    let json = serde_json::from_str(&open[1..]).expect("open json");
    (ws, json)
}

/// Opens an Engine.IO WebSocket session on `/socket.io/`.
pub(crate) async fn sio_open(addr: SocketAddr) -> Ws {
    ws_open(addr, "/socket.io/").await.0
}

/// Sends a CONNECT for `nsp` (`/` or `/name`) with an optional auth JSON and
/// reads the reply, which must be a successful CONNECT. Returns the socket id.
pub(crate) async fn sio_join(ws: &mut Ws, nsp: &str, auth: Option<&str>) -> String {
    let prefix = if nsp == "/" {
        "40".to_owned()
    } else {
        format!("40{nsp},")
    };
    ws.send_text(&format!("{prefix}{}", auth.unwrap_or("")))
        .await;
    let reply = ws.recv_skip_pings().await;
    let Msg::Text(reply) = reply else {
        panic!("expected the CONNECT reply for {nsp}, got {reply:?}");
    };
    let json = reply
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected {prefix}..., got {reply:?}"));
    let json: serde_json::Value = serde_json::from_str(json).expect("connect json");
    json["sid"].as_str().expect("sid").to_owned()
}

/// Opens a WebSocket on `/socket.io/` and joins the main namespace.
pub(crate) async fn sio_client(addr: SocketAddr) -> (Ws, String) {
    let mut ws = sio_open(addr).await;
    let sid = sio_join(&mut ws, "/", None).await;
    (ws, sid)
}
