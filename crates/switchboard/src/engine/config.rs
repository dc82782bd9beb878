//! Engine.IO options, with the reference server's defaults.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;

/// Which origins may call the server from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin (`Access-Control-Allow-Origin: *`, or the request's origin
    /// reflected when credentials are allowed).
    Any,
    /// Only these origins (exact match, e.g. `https://app.example.com`).
    List(Vec<String>),
}

/// Cross-origin settings for polling and handshake responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// The allowed origins.
    pub origins: CorsOrigins,
    /// Whether cookies and credentials are allowed
    /// (`Access-Control-Allow-Credentials: true`).
    pub credentials: bool,
}

impl Cors {
    /// Any origin, without credentials.
    pub fn any() -> Self {
        Cors {
            origins: CorsOrigins::Any,
            credentials: false,
        }
    }

    /// Only the given origins, with credentials allowed.
    pub fn allow_list<I: IntoIterator<Item = S>, S: Into<String>>(origins: I) -> Self {
        Cors {
            origins: CorsOrigins::List(origins.into_iter().map(Into::into).collect()),
            credentials: true,
        }
    }
}

/// A handshake refusal from [`EngineConfig::allow_request`]: answered with
/// HTTP 403 and `{"code":4,"message":<message>}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The message returned to the client.
    pub message: String,
}

impl Refusal {
    /// A refusal with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
        }
    }
}

/// What an accepted handshake hands its session to keep for the session's
/// whole life (for example its place under a connection limit): dropped
/// when the session closes, or at once if the transport never opens.
pub type SessionGuard = Box<dyn std::any::Any + Send + Sync>;

/// Hook deciding whether a handshake request may open a session; an
/// accepted one may give the session a [`SessionGuard`] to hold.
pub type AllowRequest = Arc<dyn Fn(&Parts) -> Result<Option<SessionGuard>, Refusal> + Send + Sync>;

/// Engine.IO server options. Defaults are the reference server's.
#[derive(Clone)]
pub struct EngineConfig {
    /// Request path prefix (`/engine.io/`; Socket.IO uses `/socket.io/`).
    pub path: String,
    /// Interval between server pings (25 s).
    pub ping_interval: Duration,
    /// How long the client has to answer a ping (20 s).
    pub ping_timeout: Duration,
    /// How long a WebSocket upgrade may take to complete (10 s).
    pub upgrade_timeout: Duration,
    /// Maximum size in bytes of one message or one polling request body
    /// (`maxHttpBufferSize`, announced as `maxPayload`; 1 MB).
    pub max_payload: usize,
    /// Whether the long-polling transport is enabled.
    pub polling: bool,
    /// Whether the WebSocket transport is enabled.
    pub websocket: bool,
    /// Whether polling sessions may upgrade to WebSocket.
    pub allow_upgrades: bool,
    /// Cross-origin settings; `None` sends no CORS headers.
    pub cors: Option<Cors>,
    /// Optional hook to refuse handshakes (and to give accepted sessions a
    /// guard to hold while they live).
    pub allow_request: Option<AllowRequest>,
    /// How many frames a session may have queued before it is treated as a
    /// slow consumer (see [`crate::engine`] for the policy).
    pub max_queued_frames: usize,
    /// How many bytes a session may have queued before it is treated as a
    /// slow consumer. Shared broadcast bytes count once per recipient.
    pub max_queued_bytes: usize,
    /// How long a server-initiated close waits for a polling client to fetch
    /// its last packets (30 s).
    pub close_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            path: "/engine.io/".into(),
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            upgrade_timeout: Duration::from_millis(10_000),
            max_payload: 1_000_000,
            polling: true,
            websocket: true,
            allow_upgrades: true,
            cors: None,
            allow_request: None,
            max_queued_frames: 4096,
            max_queued_bytes: 16 * 1024 * 1024,
            close_timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineConfig")
            .field("path", &self.path)
            .field("ping_interval", &self.ping_interval)
            .field("ping_timeout", &self.ping_timeout)
            .field("upgrade_timeout", &self.upgrade_timeout)
            .field("max_payload", &self.max_payload)
            .field("polling", &self.polling)
            .field("websocket", &self.websocket)
            .field("allow_upgrades", &self.allow_upgrades)
            .field("cors", &self.cors)
            .field("allow_request", &self.allow_request.is_some())
            .field("max_queued_frames", &self.max_queued_frames)
            .field("max_queued_bytes", &self.max_queued_bytes)
            .finish()
    }
}
