//! Wire formats of the server's own protocols (pure, no I/O): the plain
//! WebSocket JSON messages and Server-Sent Events. Socket.IO's wire format
//! is the library's.

pub(crate) mod json;
pub(crate) mod sse;
