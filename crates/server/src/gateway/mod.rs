//! Gateways: the wire protocols clients use to reach the channels.
//!
//! - [`ws`]: the plain WebSocket JSON protocol at `/ws`.
//! - [`sse`]: Server-Sent Events at `/events`.
//! - [`socketio`]: the Socket.IO vocabulary at `/socket.io/`.
//! - [`api`]: the HTTP API for backends at `/api/`.

pub mod api;
pub mod socketio;
pub mod sse;
pub mod ws;
