//! A plain WebSocket echo server on Switchboard's WebSocket stack, for the
//! Autobahn conformance suite (`bench/autobahn/run.sh`).
//!
//! `cargo run --release -p switchboard --example ws-echo`: listens on
//! `127.0.0.1:$PORT` (default 9001, `0` picks a free port), prints
//! `listening on <port>`, accepts a WebSocket upgrade on any path and sends
//! every text and binary message back as it came.
//!
//! The connection is built the way the library's engine builds its own
//! (`engine/service.rs`, `accept_websocket`): the handshake is answered by
//! hand on a hyper upgrade, then `tokio_websockets::ServerBuilder` serves the
//! upgraded connection with `Limits` and `Config`. Pings, pongs and the
//! close reply are the crate's own, as in the library. Two profiles, chosen
//! with `WS_ECHO_PROFILE`:
//!
//! - `library` (default): the engine's configuration, a flush threshold of
//!   64 KiB;
//! - `server`: the plain WebSocket gateway of the `switchboard` server
//!   (`crates/server/src/gateway/ws.rs`), the crate's default `Config`.
//!
//! In both the message limit is [`MAX_MESSAGE`] (16 MiB, the largest
//! message of Autobahn's 9.x cases) instead of the library's 1 MB
//! `max_payload` or the server's 64 KiB `max_message_size`. The engine also
//! wraps the socket in its private write-coalescing layer, which this example
//! cannot reach: it only changes how many `write` calls carry the same bytes.
//!
//! The close lingers, as the library's and the server's do: once the
//! closing handshake is over, the write side is shut down and the socket
//! read until the client's end of stream, so that bytes the client sends
//! after its close frame do not make the kernel reset the connection (and
//! discard the echo and close reply the client has not read yet).
//! `WS_ECHO_LINGER=0` turns it off, to see the difference. See
//! `bench/autobahn/README.md`, case 7.1.6.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_websockets::{CloseCode, Config, Limits, Message, ServerBuilder, WebSocketStream};
use tower_service::Service;

#[path = "common/serve.rs"]
mod serve;

/// The largest message accepted, in bytes: Autobahn's 9.1.6 and 9.2.6 send
/// 16 MiB messages.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// How long a closing connection may take to finish the closing handshake,
/// as in the library's transport.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Which of Switchboard's WebSocket configurations to serve with.
#[derive(Clone, Copy, Debug)]
enum Profile {
    /// The library's engine (`engine/service.rs`).
    Library,
    /// The server's plain WebSocket gateway (`gateway/ws.rs`).
    Server,
}

impl Profile {
    fn from_env() -> Result<Self, String> {
        match std::env::var("WS_ECHO_PROFILE").as_deref() {
            Err(_) | Ok("library") => Ok(Profile::Library),
            Ok("server") => Ok(Profile::Server),
            Ok(other) => Err(format!(
                "WS_ECHO_PROFILE={other}: expected `library` or `server`"
            )),
        }
    }

    /// The `ServerBuilder` this profile's code path builds, with the
    /// message limit raised to [`MAX_MESSAGE`].
    fn builder(self) -> ServerBuilder {
        let limits = Limits::default().max_payload_len(Some(MAX_MESSAGE));
        match self {
            Profile::Library => ServerBuilder::new()
                .limits(limits)
                .config(Config::default().flush_threshold(64 * 1024)),
            Profile::Server => ServerBuilder::new().limits(limits),
        }
    }
}

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// How connections are served.
#[derive(Clone, Copy, Debug)]
struct Options {
    profile: Profile,
    /// A lingering close (on unless `WS_ECHO_LINGER=0`).
    linger: bool,
}

/// The HTTP side: answers upgrades, 400 to anything else.
#[derive(Clone, Copy)]
struct Echo(Options);

impl Service<Request<Incoming>> for Echo {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        ready(Ok(upgrade(self.0, req)))
    }
}

/// Accepts a WebSocket upgrade as the library's engine does: a key and
/// version 13 are required, the 101 carries the accept key, and the
/// upgraded connection is served on a task of its own.
fn upgrade(options: Options, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let Some(key) = key.filter(|_| version_ok) else {
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"expected a WebSocket upgrade",
        )));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = options.profile.builder().serve(TokioIo::new(upgraded));
                echo(ws, options.linger).await;
            }
            Err(e) => eprintln!("upgrade failed: {e}"),
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept_key(key.as_bytes()));
    r
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455, section 4.2.2).
fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes());
    HeaderValue::from_str(&digest).expect("base64 is a valid header value")
}

/// Echoes text and binary messages until the connection ends, then closes
/// it the way the library's transport does.
async fn echo(mut ws: Ws, linger: bool) {
    loop {
        match ws.next().await {
            Some(Ok(msg)) if msg.is_text() || msg.is_binary() => {
                if ws.send(msg).await.is_err() {
                    return;
                }
            }
            // The crate queued the close reply (for a close) or a close
            // frame with the error's code (for a protocol violation, a
            // too-long frame or invalid UTF-8).
            Some(Ok(msg)) if msg.is_close() => break,
            // A fragmented message over the limit gets no close from the
            // crate (a single frame over it does, and then this send is
            // refused as already closed): the library sends 1009 itself.
            Some(Err(tokio_websockets::Error::PayloadTooLong { .. })) => {
                let _ = ws
                    .send(Message::close(Some(CloseCode::MESSAGE_TOO_BIG), ""))
                    .await;
                break;
            }
            Some(Err(_)) => break,
            // Pings (the crate queued the pong) and pongs.
            Some(Ok(_)) => {}
            None => return,
        }
    }
    finish(&mut ws, linger).await;
}

/// Flushes what the crate queued, then reads until the peer's close or the
/// end of the stream, for at most [`CLOSE_GRACE`], before the socket is
/// dropped (the library's `finish` without a close of its own). With
/// `linger`, then shuts the write side down and reads the socket itself
/// until the client's end of stream, within the same grace.
async fn finish(ws: &mut Ws, linger: bool) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        let _ = ws.flush().await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
        }
        if linger {
            // The crate reads nothing past the peer's close frame.
            let io = ws.get_mut();
            let _ = io.shutdown().await;
            let mut buf = [0u8; 4096];
            while matches!(io.read(&mut buf).await, Ok(n) if n > 0) {}
        }
    })
    .await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = Options {
        profile: Profile::from_env()?,
        linger: std::env::var("WS_ECHO_LINGER").map_or(true, |v| v != "0"),
    };
    eprintln!("ws-echo: {options:?}, message limit {MAX_MESSAGE} bytes");
    serve::serve(Echo(options), serve::port(9001)).await?;
    Ok(())
}
