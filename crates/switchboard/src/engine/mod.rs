//! The Engine.IO v4 engine: sessions, transports and heartbeats.
//!
//! This layer knows nothing of namespaces or rooms. It turns HTTP requests
//! and WebSocket frames into calls on an [`EngineHandler`] and delivers the
//! frames the upper layer queues on a [`Session`].
//!
//! - [`config`]: options with the reference defaults.
//! - [`session`]: one session's send queue, state and heartbeat.
//! - `polling` / `websocket`: the two transports, and the upgrade.
//! - [`service`]: request routing, errors, CORS, and the tower service.
//!
//! # Slow consumers
//! Every session has one bounded send queue
//! ([`EngineConfig::max_queued_frames`], [`EngineConfig::max_queued_bytes`]).
//! A frame that does not fit is never silently lost: a volatile frame is
//! dropped (that is what volatile means), any other frame closes the session
//! with [`CloseReason::SlowConsumer`], so the client reconnects and, with
//! connection state recovery, catches up. Volatile frames are also dropped
//! whenever anything is already queued (the transport is not writable). An
//! empty queue takes any frame, however large: the client is keeping up, and
//! a single answer over the limit (a resume's replay) must not close it on
//! every attempt.

mod coalesce;
pub mod config;
mod polling;
mod reply;
pub mod service;
pub mod session;
mod websocket;

use std::sync::{Arc, RwLock};

use bytes::Bytes;

pub use config::{Cors, CorsOrigins, EngineConfig, Refusal, SessionGuard};
pub use service::{EngineLayer, EngineService, ResponseBody};
pub use session::{RequestInfo, SendError, Session, TransportKind};

use crate::protocol::sid::{Sid, SidMap};

/// Why an Engine.IO session ended. The texts are the reference server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client closed the connection (or sent a close packet).
    TransportClose,
    /// The transport failed (overlapping polls, aborted request, I/O error,
    /// message over the size limit).
    TransportError,
    /// No pong within the ping timeout.
    PingTimeout,
    /// The client sent something that is not Engine.IO.
    ParseError,
    /// The server closed the session.
    ForcedClose,
    /// The client read too slowly and its send queue overflowed.
    SlowConsumer,
}

impl CloseReason {
    /// The reason as the reference server names it.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ParseError => "parse error",
            CloseReason::ForcedClose => "forced close",
            CloseReason::SlowConsumer => "slow consumer",
        }
    }
}

/// What the layer above the engine implements (Socket.IO, or a raw
/// Engine.IO application). Calls come from transport tasks and must not
/// block.
pub trait EngineHandler: Send + Sync + Sized + 'static {
    /// Per-session state owned by the handler.
    type Data: Send + Sync + 'static;

    /// Builds the state for a new session.
    fn new_session_data(&self) -> Self::Data;

    /// A session opened (its open packet is already queued).
    fn on_open(&self, session: &Arc<Session<Self>>);

    /// A text message arrived (valid UTF-8).
    fn on_message(&self, session: &Arc<Session<Self>>, text: Bytes);

    /// A binary message arrived.
    fn on_binary(&self, session: &Arc<Session<Self>>, data: Bytes);

    /// The session closed; called exactly once.
    fn on_close(&self, session: &Arc<Session<Self>>, reason: CloseReason);
}

/// State shared by all sessions of one engine.
pub(crate) struct EngineShared<H: EngineHandler> {
    pub(crate) config: EngineConfig,
    pub(crate) handler: H,
    sessions: RwLock<SidMap<Arc<Session<H>>>>,
}

impl<H: EngineHandler> EngineShared<H> {
    pub(crate) fn get(&self, sid: Sid) -> Option<Arc<Session<H>>> {
        self.sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sid)
            .cloned()
    }

    pub(crate) fn insert(&self, session: Arc<Session<H>>) {
        self.sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(session.id(), session);
    }

    pub(crate) fn remove(&self, sid: Sid) {
        self.sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sid);
    }
}

/// A running engine: the handle to its sessions.
pub struct Engine<H: EngineHandler> {
    pub(crate) shared: Arc<EngineShared<H>>,
}

impl<H: EngineHandler> Clone for Engine<H> {
    fn clone(&self) -> Self {
        Engine {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<H: EngineHandler> Engine<H> {
    /// An engine with these options, calling `handler`.
    pub fn new(config: EngineConfig, handler: H) -> Self {
        Engine {
            shared: Arc::new(EngineShared {
                config,
                handler,
                sessions: RwLock::new(SidMap::default()),
            }),
        }
    }

    /// The options.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.shared.handler
    }

    /// The open session with this id.
    pub fn session(&self, sid: Sid) -> Option<Arc<Session<H>>> {
        self.shared.get(sid)
    }

    /// Number of open sessions.
    pub fn session_count(&self) -> usize {
        self.shared
            .sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Every open session.
    pub fn sessions(&self) -> Vec<Arc<Session<H>>> {
        self.shared
            .sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
