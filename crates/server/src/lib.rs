//! The `switchboard` server: configuration,
//! channels and their policies, history with offsets and epochs, and
//! presence. The wire gateways (Socket.IO, plain WebSocket, SSE) and the
//! HTTP API build on these.
//!
//! - [`app`]: the state the gateways share.
//! - `router`: the HTTP routes.
//! - `gateway`: the wire protocols (Socket.IO, `/ws`, SSE, the HTTP API).
//! - [`auth`]: JWT verification (HS256, RS256, ES256) and the development login.
//! - [`config`]: defaults < TOML file < `SWITCHBOARD_...` environment <
//!   command-line flags, validated with errors that name the key.
//! - [`channel`]: `<namespace>:<name>` channel names and per-namespace
//!   policies.
//! - [`history`]: per-channel history with monotonic offsets and an epoch,
//!   so a client can resume without gaps or duplicates.
//! - [`hub`]: this node's subscribers of each channel, of any protocol,
//!   each publication encoded once per protocol.
//! - [`node`]: publish, subscribe with resume, unsubscribe, presence and
//!   history, as every gateway uses them.
//! - `limits`: connection admission and message rates.
//! - `metrics`: Prometheus metrics.
//! - [`server`]: the listener (TLS, graceful shutdown).
//! - `session`: a client connection's session, where every client command
//!   is handled for all protocols.
//! - [`presence`]: users (not connections) present in a channel.
//! - `web`: the embedded web chat served at `/`.
//! - `wire`: the plain WebSocket JSON messages and Server-Sent Events.

pub mod app;
pub mod auth;
pub mod channel;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod gateway;
pub mod history;
pub mod hub;
pub(crate) mod limits;
pub(crate) mod metrics;
mod mime;
pub mod node;
pub mod presence;
pub(crate) mod router;
pub mod server;
mod session;
pub(crate) mod web;
pub(crate) mod wire;
