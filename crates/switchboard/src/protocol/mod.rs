//! Pure protocol codecs: no I/O, no tasks, no clocks; fuzzable and
//! benchmarkable on their own.
//!
//! - [`engine`]: Engine.IO v4 packets and polling payloads.
//! - [`socketio`]: Socket.IO v5 packets.
//! - [`value`]: the dynamic payload type, JSON plus binary.
//! - [`sid`]: 20-character session and socket ids.

pub mod engine;
pub mod sid;
pub mod socketio;
pub mod value;
