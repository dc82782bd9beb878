//! Gateways: the wire protocols clients use to reach the channels.
//!
//! - [`ws`]: the plain WebSocket JSON protocol at `/ws`.

pub mod ws;
