#![doc = include_str!("../README.md")]
//!
//! # Layers
//! Each module depends only on the ones above it:
//! - [`protocol`]: pure codecs (Engine.IO packets and payloads, Socket.IO
//!   packets, the [`Value`] payload type, ids).
//! - [`engine`]: Engine.IO sessions, the polling and WebSocket transports,
//!   upgrades, heartbeats, and the tower service.
//! - [`socket`]: Socket.IO namespaces, sockets, rooms, acknowledgements,
//!   middlewares and broadcast operators.
//! - [`adapter`]: fan-out of broadcasts to local (and, for cluster
//!   adapters, remote) sockets.

pub mod adapter;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod protocol;
pub mod socket;

pub use adapter::{Handshake, RecoveryConfig};
pub use engine::service::RemoteAddr;
pub use protocol::sid::Sid;
pub use protocol::value::{Value, from_value, to_value};
pub use socket::{
    AckError, AckSender, BroadcastAckError, BroadcastError, BroadcastOperator, ConnectError,
    DisconnectReason, EmitError, Event, Namespace, NsMatcher, ParentNamespace, RemoteSocket,
    ServerAckError, ServerEvent, Socket, SocketIo, SocketIoBuilder, SocketIoConfig,
};
