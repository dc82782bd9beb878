//! The plain WebSocket gateway at `/ws`: JSON text messages
//! `{type, payload, id, timestamp}` (see [`crate::wire::json`]).
//!
//! Before `auth` only `auth` and `ping` are accepted; a client that has not
//! authenticated within the auth timeout is closed (1008). Invalid JSON
//! closes with 1003, a message over the limit with 1009 (by the framing
//! layer). Every request with an `id` is answered by an `ack` or an `error`
//! `{code, message}` with that id.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_websockets::{CloseCode, Limits, Message, ServerBuilder};

use super::{Out, Push, SendQueue};

/// Why writing to the client failed.
enum WriteError {
    /// The connection is broken.
    Io,
    /// The client does not read: a write did not finish within
    /// [`WRITE_TIMEOUT`], or the queue overflowed meanwhile.
    Slow,
}
use crate::app::App;
use crate::hub::{CloseReason, Delivery, Signal, Subscriber, Wire};
use crate::session::{Admission, Command, Refusal, Reply, Session};
use crate::wire::json::{self, ClientMessage, ClientType, JsonError};

/// How long one write to a client may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Close code asking a client not to reconnect on its own: a backend
/// disconnected its user through the HTTP API.
pub(crate) const CLOSE_DISCONNECTED: u16 = 4001;

/// Accepts the WebSocket upgrade and runs the connection.
pub(crate) async fn handler(State(app): State<Arc<App>>, mut req: Request) -> Response {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let (Some(key), true) = (key, upgrade) else {
        return (StatusCode::BAD_REQUEST, "expected a WebSocket upgrade").into_response();
    };
    let permit = match app.admit(super::peer_ip(&req)) {
        Ok(p) => p,
        Err(refused) => return super::refused(&app, refused),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = ServerBuilder::new()
            .limits(Limits::default().max_payload_len(Some(app.limits().max_message_size)))
            .serve(TokioIo::new(upgraded));
        let conn = Connection::new(app);
        conn.run(ws).await;
        drop(permit);
    });
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes());
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

/// The hub's view of a plain WebSocket connection.
struct WsSubscriber {
    id: String,
    queue: SendQueue,
    closing: Mutex<Option<CloseReason>>,
    metrics_app: Arc<App>,
}

impl WsSubscriber {
    /// Queues a frame; on overflow marks the connection as a slow consumer.
    fn enqueue(&self, bytes: Bytes, published: Option<Instant>) -> bool {
        let len = bytes.len();
        let ok = self.queue.push(bytes, published) == Push::Queued;
        if ok {
            self.metrics_app.node.metrics().message_out(Wire::Json, len);
        }
        ok
    }

    fn push(&self, d: &Arc<Delivery>) -> bool {
        let encoded = d.encoded(Wire::Json, json::publication);
        self.enqueue(encoded, d.sampled().then_some(d.published))
    }
}

impl Subscriber for WsSubscriber {
    fn id(&self) -> &str {
        &self.id
    }

    fn deliver(&self, d: &Arc<Delivery>) -> bool {
        self.push(d)
    }

    fn signal(&self, s: &Arc<Signal>) -> bool {
        let encoded = s.encoded(Wire::Json, |s| {
            json::encode(s.kind.as_str(), s.body(), None).into_bytes()
        });
        self.enqueue(encoded, None)
    }

    fn close(&self, reason: CloseReason) {
        *self.closing.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        self.queue.wake.notify_one();
    }

    fn transport(&self) -> &'static str {
        "websocket"
    }
}

struct Connection {
    app: Arc<App>,
    session: Session,
    sub: Arc<WsSubscriber>,
    rx: mpsc::UnboundedReceiver<Out>,
}

fn conn_id() -> String {
    let mut raw = [0u8; 12];
    getrandom::fill(&mut raw).expect("the OS random source is unavailable");
    format!(
        "ws-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

/// The error answer of a refusal.
fn error(id: Option<Value>, refusal: &Refusal) -> String {
    json::error(id, refusal.code, &refusal.message)
}

impl Connection {
    fn new(app: Arc<App>) -> Self {
        let (queue, rx) = SendQueue::new(app.limits().max_queued_bytes);
        let id = conn_id();
        let sub = Arc::new(WsSubscriber {
            id: id.clone(),
            queue,
            closing: Mutex::new(None),
            metrics_app: Arc::clone(&app),
        });
        app.node
            .hub()
            .connect(Arc::clone(&sub) as Arc<dyn Subscriber>, Wire::Json, None);
        app.node.metrics().connection_opened(Wire::Json);
        Connection {
            session: Session::pending(Arc::clone(&app), id, Wire::Json),
            app,
            sub,
            rx,
        }
    }

    /// Writes everything queued (up to `first` included) in one flush.
    async fn write_queued<S>(
        &mut self,
        ws: &mut tokio_websockets::WebSocketStream<S>,
        first: Option<Out>,
    ) -> Result<(), WriteError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut batch: Vec<Out> = first.into_iter().collect();
        while let Ok(more) = self.rx.try_recv() {
            batch.push(more);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let bytes: usize = batch.iter().map(|(b, _)| b.len()).sum();
        let mut published = Vec::new();
        let write = async {
            for (frame, at) in batch {
                published.extend(at);
                ws.feed(Message::text(frame)).await?;
            }
            ws.flush().await
        };
        // A client that stops reading blocks the write: the queue filling
        // up meanwhile ends it as surely as the timeout.
        let queue = &self.sub.queue;
        let overflow = async {
            while !queue.overflowed() {
                queue.wake.notified().await;
            }
        };
        let result = tokio::select! {
            r = tokio::time::timeout(WRITE_TIMEOUT, write) => match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(WriteError::Io),
                Err(_) => Err(WriteError::Slow),
            },
            () = overflow => Err(WriteError::Slow),
        };
        self.sub.queue.written(bytes);
        if result.is_ok() {
            let metrics = self.app.node.metrics();
            let now = Instant::now();
            for at in published {
                metrics.delivery_latency(now - at);
            }
        }
        result
    }

    async fn run<S>(mut self, mut ws: tokio_websockets::WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let auth_deadline = tokio::time::sleep(self.app.auth_timeout);
        tokio::pin!(auth_deadline);
        let sub = Arc::clone(&self.sub);
        let close = loop {
            if self.sub.queue.overflowed() {
                break self.slow_consumer();
            }
            let closing = *self.sub.closing.lock().unwrap_or_else(|e| e.into_inner());
            match closing {
                Some(CloseReason::Shutdown) => {
                    // What is queued still goes out, then the close.
                    let _ = self.write_queued(&mut ws, None).await;
                    break Some((CloseCode::GOING_AWAY, "server shutting down"));
                }
                Some(CloseReason::Disconnected) => {
                    let _ = self.write_queued(&mut ws, None).await;
                    let code = CloseCode::try_from(CLOSE_DISCONNECTED)
                        .unwrap_or(CloseCode::POLICY_VIOLATION);
                    break Some((code, "disconnected by the server"));
                }
                None => {}
            }
            tokio::select! {
                msg = ws.next() => {
                    let msg = match msg {
                        Some(Ok(msg)) => msg,
                        Some(Err(e)) => {
                            // A protocol error has its close frame queued
                            // by the framing layer, and so has a single
                            // frame over the limit; a fragmented message
                            // over it has not: its 1009 is sent here.
                            let too_long = matches!(e, tokio_websockets::Error::PayloadTooLong { .. });
                            let code = if too_long { "message_too_large" } else { "bad_request" };
                            self.app.node.metrics().refusal(code);
                            let close = too_long.then_some((CloseCode::MESSAGE_TOO_BIG, "message too large"));
                            close_handshake(&mut ws, close).await;
                            break None;
                        }
                        None => break None,
                    };
                    if msg.is_close() {
                        // The framing layer queued the answering close frame.
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.flush()).await;
                        break None;
                    }
                    let Some(text) = msg.as_text() else {
                        if msg.is_binary() {
                            self.app.node.metrics().refusal("bad_request");
                            break Some((CloseCode::UNSUPPORTED_DATA, "binary messages are not accepted"));
                        }
                        continue;
                    };
                    let id_of = |text: &str| serde_json::from_str::<Value>(text).ok().and_then(|v| v.get("id").cloned());
                    match self.session.admit(text.len()) {
                        Admission::Allowed => {}
                        Admission::Refused(refusal) => {
                            if send(&mut ws, error(id_of(text), &refusal)).await.is_err() {
                                break None;
                            }
                            continue;
                        }
                        Admission::Abuse(_) => {
                            break Some((CloseCode::POLICY_VIOLATION, "rate limit exceeded"));
                        }
                    }
                    let request = match json::parse(text) {
                        Ok(r) => r,
                        Err(JsonError::InvalidJson) => {
                            self.app.node.metrics().refusal("bad_request");
                            break Some((CloseCode::UNSUPPORTED_DATA, "invalid JSON"));
                        }
                        Err(JsonError::BadRequest(e)) => {
                            let refusal = self.session.refuse("bad_request", e);
                            if send(&mut ws, error(id_of(text), &refusal)).await.is_err() {
                                break None;
                            }
                            continue;
                        }
                    };
                    let answer = self.handle(request).await;
                    if send(&mut ws, answer).await.is_err() {
                        break None;
                    }
                }
                out = self.rx.recv() => {
                    let Some(first) = out else { break None };
                    match self.write_queued(&mut ws, Some(first)).await {
                        Ok(()) => {}
                        Err(WriteError::Slow) => break self.slow_consumer(),
                        Err(WriteError::Io) => break None,
                    }
                }
                () = sub.queue.wake.notified() => {}
                () = &mut auth_deadline, if !self.session.is_authenticated() => {
                    self.app.node.metrics().refusal("unauthenticated");
                    break Some((CloseCode::POLICY_VIOLATION, "authentication timeout"));
                }
            }
        };
        if let Some((code, reason)) = close {
            close_handshake(&mut ws, Some((code, reason))).await;
        }
        self.session.close();
    }

    /// Records a slow consumer; the close to send (1008), which is given a
    /// second at most.
    fn slow_consumer(&self) -> Option<(CloseCode, &'static str)> {
        tracing::warn!(conn = %self.sub.id, "slow consumer: closing (queue over limits.max_queued_bytes or a stalled write)");
        self.app.node.metrics().slow_consumer(Wire::Json);
        Some((CloseCode::POLICY_VIOLATION, "slow consumer"))
    }

    /// Answers one request: the session handles it, this only encodes.
    async fn handle(&mut self, req: ClientMessage) -> String {
        let id = req.id;
        let command = match req.kind {
            ClientType::Auth => Command::Auth,
            ClientType::Ping => Command::Ping,
            ClientType::Subscribe => Command::Subscribe,
            ClientType::Unsubscribe => Command::Unsubscribe,
            ClientType::Message => Command::Publish,
            ClientType::Presence => Command::Presence,
            ClientType::History => Command::History,
        };
        let me = Arc::clone(&self.sub) as Arc<dyn Subscriber>;
        match self.session.handle(&me, command, &req.payload).await {
            Ok(Reply::Answer(_)) if command == Command::Ping => {
                json::encode("pong", Value::Null, id)
            }
            Ok(Reply::Answer(answer)) => json::ack(id, answer),
            Ok(Reply::Subscribed {
                answer,
                cursor,
                offset,
            }) => {
                let answer = json::ack(id, answer);
                // Live publications that arrived meanwhile follow the ack
                // (it is written before the queue).
                cursor.finish(offset, |d| {
                    self.sub.push(d);
                });
                answer
            }
            Err(refusal) => error(id, &refusal),
        }
    }
}

/// The closing handshake, for at most 2 s: sends `close` (or flushes a
/// close frame the framing layer queued), then reads and drops what the
/// client still sends until its close or its end, so the connection is not
/// reset with unread data (a reset would lose the close frame on the
/// client's side).
async fn close_handshake<S>(
    ws: &mut tokio_websockets::WebSocketStream<S>,
    close: Option<(CloseCode, &str)>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let sent = match close {
            Some((code, reason)) => match ws.send(Message::close(Some(code), reason)).await {
                // The framing layer already queued a close frame of its
                // own: that one goes out.
                Err(tokio_websockets::Error::AlreadyClosed) => ws.flush().await,
                other => other,
            },
            None => ws.flush().await,
        };
        if sent.is_ok() {
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_close() {
                    break;
                }
            }
        }
        // The framing layer ends its stream at the peer's close (or a
        // protocol error) without draining the socket: shut down our side
        // and drain it (at most 1 MiB), or the kernel may still reset the
        // connection and destroy the close frame on its way.
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let io = ws.get_mut();
        let _ = io.shutdown().await;
        let mut buf = [0u8; 4096];
        let mut left: usize = 1 << 20;
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

async fn send<S>(ws: &mut tokio_websockets::WebSocketStream<S>, text: String) -> Result<(), ()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
