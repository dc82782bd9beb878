//! Gateways: the wire protocols clients use to reach the channels.
//!
//! - [`ws`]: the plain WebSocket JSON protocol at `/ws`.
//! - [`sse`]: Server-Sent Events at `/events`.

pub mod sse;
pub mod ws;
