//! An async Socket.IO v5 / Engine.IO v4 client on tokio, for any
//! Socket.IO server (ours, Node's socket.io 4.x, others), and a small
//! client for the `switchboard` server's plain WebSocket protocol (`/ws`,
//! module [`ws`]).
//!
//! # Socket.IO
//!
//! A [`Manager`] owns one Engine.IO connection (WebSocket, or HTTP
//! long-polling with the upgrade: [`Transports`]; `https`/`wss` through
//! rustls); each namespace is a [`Socket`] multiplexed on it, as in the
//! JavaScript client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use switchboard_client::{BufferPolicy, Manager, Reconnection};
//!
//! let manager = Manager::builder("http://127.0.0.1:3000")
//!     .header("x-client", "demo")
//!     .query("room", "lobby")
//!     .reconnection(Reconnection::default()) // 1 s doubling to 5 s, jitter 0.5, forever
//!     .offline_buffer(1000, BufferPolicy::DropOldest)
//!     .build()?;
//! let socket = manager.socket("/");
//! // Read at every (re)connection: a refreshed token is picked up.
//! socket.set_auth(|| serde_json::json!({ "token": std::env::var("TOKEN").ok() }));
//! socket.on("chat", |event| {
//!     let text: String = event.data().unwrap_or_default();
//!     println!("chat: {text}");
//!     let _ = event.ack("thanks"); // when the server asked for an ack
//! });
//! socket.on_any(|event| println!("{} {:?}", event.name(), event.args()));
//! socket.on_disconnect(|reason| println!("disconnected: {}", reason.as_str()));
//! socket.connect();
//! socket.wait_connected().await?;
//!
//! // Typed payloads through serde; byte buffers (bytes::Bytes) travel as
//! // binary attachments.
//! socket.emit("chat", "hello")?;
//! socket.emit_many("file", &("a.bin", bytes::Bytes::from_static(b"\x00\x01")))?;
//! let answer: serde_json::Value = socket
//!     .emit_with_ack("ping", &serde_json::json!({"n": 1}), Duration::from_secs(5))
//!     .await?;
//! println!("{answer}");
//! socket.emit_volatile("cursor", &(10, 20))?; // dropped unless connected now
//! manager.close();
//! # Ok(())
//! # }
//! ```
//!
//! **Reconnection.** When the connection drops (not after a server-side
//! disconnect or [`Socket::disconnect`]), the manager reconnects with
//! exponential backoff and jitter ([`Reconnection`]) and reconnects every
//! socket, calling the `auth` closure again; [`ManagerEvent`]s report each
//! attempt, failure and success. Emits made while disconnected wait in each
//! socket's bounded offline buffer ([`BufferPolicy`]) and are sent in order
//! once the namespace is connected again; volatile emits are dropped.
//!
//! **Connection state recovery.** With a server that supports it (Node's
//! `connectionStateRecovery`, the `switchboard` library's
//! `connection_state_recovery`), the socket sends its private id and last
//! offset when it reconnects; [`Socket::recovered`] tells whether the
//! server restored the session, in which case the packets missed meanwhile
//! have been delivered (to the handlers, in order) and the socket id is the
//! same. As in the JavaScript client, the offset the server appends to
//! events stays visible as their last argument.
//!
//! **Acknowledgements.** [`Socket::emit_with_ack`] ends exactly once: with
//! the answer, or with [`AckError::Timeout`] (the packet may or may not
//! have reached the server), [`AckError::Dropped`] (pushed out of a full
//! buffer) or [`AckError::Closed`].
//!
//! Handlers run on the manager's task, one after the other, outside any
//! lock: they should be quick (hand long work to a task or a channel).
//! Handlers that capture their socket keep the manager alive: call
//! [`Manager::close`] to stop it.
//!
//! # The `/ws` client
//!
//! [`ws::WsClient`] speaks the `switchboard` server's JSON protocol:
//! `auth` (a token closure, read at every connection), subscriptions that
//! resume from the last `(offset, epoch)` delivered after every
//! reconnection (no gap, no duplicate within the channel's history; a gap
//! seen on a live connection is repaired the same way), publish with ack,
//! presence and history, with the same [`Reconnection`] policy. The
//! `tail` example prints a channel as JSON lines:
//!
//! ```text
//! SWITCHBOARD_TOKEN=... cargo run --release -p switchboard-client --example tail -- \
//!     --url ws://127.0.0.1:3000/ws --channel chat:lobby
//! ```
#![forbid(unsafe_code)]

mod backoff;
mod error;
mod manager;
mod polling;
mod socket;
mod transport;
pub mod ws;

pub use backoff::Reconnection;
pub use error::{AckError, ConnectError, EmitError};
pub use manager::{
    BufferPolicy, DisconnectReason, Manager, ManagerBuilder, ManagerEvent, SocketStatus, Transports,
};
pub use socket::{Event, Socket, WaitError};
pub use switchboard::Value;
/// The rustls version this crate uses (for [`ManagerBuilder::tls_config`]).
pub use tokio_rustls::rustls;
