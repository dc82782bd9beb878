//! Typed errors of the client.

use switchboard::protocol::socketio::EncodeError;
use switchboard::protocol::value::ValueError;

/// Why a connection attempt or an established transport failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL could not be parsed or has an unsupported scheme.
    #[error("invalid URL: {0}")]
    Url(String),
    /// A header name or value is not valid HTTP.
    #[error("invalid header: {0}")]
    Header(String),
    /// TCP (or TLS) failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The WebSocket handshake or stream failed.
    #[error("WebSocket error: {0}")]
    WebSocket(#[from] tokio_websockets::Error),
    /// TLS could not be set up (no trusted roots, bad server name).
    #[error("TLS error: {0}")]
    Tls(String),
    /// An HTTP (long-polling) request failed or was refused.
    #[error("HTTP error: {0}")]
    Http(String),
    /// The server's Engine.IO handshake was missing or malformed.
    #[error("bad Engine.IO handshake: {0}")]
    Handshake(String),
    /// No answer within the connection timeout.
    #[error("connection timed out")]
    Timeout,
}

/// Why an emit could not be queued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The data could not be serialized.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The offline buffer is full and its policy is
    /// [`BufferPolicy::Reject`](crate::BufferPolicy::Reject).
    #[error("offline buffer full")]
    BufferFull,
    /// The event name is reserved (`connect`, `disconnect`, ...).
    #[error("reserved event name {0:?}")]
    Reserved(String),
    /// The manager was closed.
    #[error("manager closed")]
    Closed,
}

/// Why an emit with an acknowledgement did not get its answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// The emit itself failed.
    #[error(transparent)]
    Emit(#[from] EmitError),
    /// No answer within the timeout.
    #[error("ack timed out")]
    Timeout,
    /// The packet was dropped from a full offline buffer
    /// ([`BufferPolicy::DropOldest`](crate::BufferPolicy::DropOldest)).
    #[error("dropped from the offline buffer")]
    Dropped,
    /// The manager was closed before the answer arrived.
    #[error("manager closed")]
    Closed,
    /// The connection ended and will not be reopened (reconnection is off,
    /// or its attempts ran out) before the answer arrived; an emit still in
    /// the offline buffer was not sent.
    #[error("disconnected, and not reconnecting")]
    Disconnected,
    /// The answer did not deserialize into the requested type.
    #[error("cannot decode ack: {0}")]
    Decode(#[from] ValueError),
}
