//! An async Socket.IO v5 / Engine.IO v4 client on tokio, and a client for
//! the `switchboard` server's plain WebSocket protocol (`/ws`).
//!
//! TODO crate docs
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
