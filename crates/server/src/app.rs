//! The application: shared state and the HTTP router of the server.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;

use crate::auth::Verifier;
use crate::config::{Config, LimitsConfig};
use crate::gateway;
use crate::limits::{Limiter, Permit, Refused};
use crate::node::Node;

/// Everything the gateways share.
pub struct App {
    /// Channels, history, presence and the hub.
    pub node: Node,
    /// Token verification.
    pub verifier: Verifier,
    /// How long a plain WebSocket client has to authenticate.
    pub auth_timeout: Duration,
    /// Connection admission and rates.
    pub limiter: Arc<Limiter>,
    /// False once shutdown began.
    ready: AtomicBool,
    /// The Socket.IO server (its vocabulary is mounted by [`App::router`]).
    pub io: switchboard::SocketIo,
    /// The key of the HTTP API: `api.key`, or with the development login
    /// a random one made at start (logged); `None` disables the API.
    pub api_key: Option<String>,
}

impl App {
    /// The application for a configuration.
    pub fn new(config: Config) -> anyhow::Result<Arc<App>> {
        let verifier = if config.auth.dev_login_enabled() {
            let secret = dev_secret(&config.server.data_dir, "dev-secret")?;
            Verifier::with_dev_secret(&config.auth, secret.as_bytes())?
        } else {
            Verifier::new(&config.auth)?
        };
        let api_key = match (&config.api.key, verifier.dev_login()) {
            (Some(key), _) => Some(key.clone()),
            (None, true) => Some(dev_secret(&config.server.data_dir, "dev-api-key")?),
            (None, false) => None,
        };
        let limiter = Limiter::new(config.limits.clone());
        let auth_timeout = Duration::from_secs(config.server.auth_timeout_secs);
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let io =
            gateway::socketio::build(&config.limits, Arc::clone(&limiter), Arc::clone(&metrics));
        let node = Node::with_metrics(Arc::new(config), metrics)?;
        Ok(Arc::new(App {
            node,
            verifier,
            auth_timeout,
            limiter,
            ready: AtomicBool::new(true),
            io,
            api_key,
        }))
    }

    /// The limits.
    pub fn limits(&self) -> &LimitsConfig {
        self.limiter.config()
    }

    /// Admits a new client connection from `ip` (rate of handshakes,
    /// connection counts, shutdown), or says why not.
    pub fn admit(&self, ip: Option<IpAddr>) -> Result<Permit, Refused> {
        if !self.is_ready() {
            return Err(Refused::ShuttingDown);
        }
        self.limiter.handshake(ip)?;
        self.limiter.admit(ip)
    }

    /// Admits a connection whose handshake was already counted against its
    /// IP's rate (a Socket.IO socket, checked at its Engine.IO handshake).
    pub fn admit_handshaken(&self, ip: Option<IpAddr>) -> Result<Permit, Refused> {
        if !self.is_ready() {
            return Err(Refused::ShuttingDown);
        }
        self.limiter.admit(ip)
    }

    /// Whether the server accepts connections (false once shutdown began).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the server as shutting down: `/readyz` fails, new connections
    /// are refused.
    pub fn begin_shutdown(&self) {
        self.ready.store(false, Ordering::Release);
    }

    /// The HTTP routes, with Socket.IO mounted at `/socket.io/`.
    pub fn router(self: &Arc<Self>) -> Router {
        gateway::socketio::mount(&self.io, self);
        let router = Router::new()
            .route("/api/dev/token", axum::routing::post(dev_token))
            .route("/api/publish", axum::routing::post(gateway::api::publish))
            .route(
                "/api/broadcast",
                axum::routing::post(gateway::api::broadcast),
            )
            .route("/api/presence", get(gateway::api::presence))
            .route("/api/history", get(gateway::api::history))
            .route("/api/channels", get(gateway::api::channels))
            .route("/api/info", get(gateway::api::info))
            .route(
                "/api/disconnect",
                axum::routing::post(gateway::api::disconnect),
            )
            .route("/metrics", get(gateway::health::metrics))
            .route("/healthz", get(gateway::health::healthz))
            .route("/readyz", get(gateway::health::readyz))
            .route("/api/openapi.json", get(gateway::api::openapi))
            .route("/ws", get(gateway::ws::handler))
            .route("/events", get(gateway::sse::handler));
        let router = if self.node.config().web.enabled {
            router.fallback(crate::web::serve)
        } else {
            router
        };
        let counted = Arc::clone(self);
        router
            .with_state(Arc::clone(self))
            .layer(self.io.layer())
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let app = Arc::clone(&counted);
                    async move {
                        let socketio = req.uri().path().starts_with("/socket.io/");
                        let res = next.run(req).await;
                        // Engine.IO answers an oversized polling body itself.
                        if socketio && res.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                            app.node.metrics().refusal("message_too_large");
                        }
                        res
                    }
                },
            ))
    }
}

/// A random value kept in `<data_dir>/<name>` (made on first use, readable
/// by the owner only), so development tokens and the development API key
/// survive a restart.
fn dev_secret(data_dir: &std::path::Path, name: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let path = data_dir.join(name);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if existing.len() >= 32 {
            return Ok(existing.to_owned());
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).expect("the OS random source is unavailable");
    let value: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut file, value.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(value)
}

/// `POST /api/dev/token` `{user, name?}` → `{token}`: the development
/// login, only when no real key is configured.
async fn dev_token(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    body: Result<axum::Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = body.map(|b| b.0).unwrap_or_default();
    let user = body
        .get("user")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let valid = !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid {
        return (
            http::StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "code": "bad_request", "message": "user: 1-64 characters of A-Z a-z 0-9 - _ ." })),
        )
            .into_response();
    }
    let name = body
        .get("name")
        .and_then(serde_json::Value::as_str)
        .or(Some(user));
    match app.verifier.issue_dev_token(user, name, 86_400) {
        Some(token) => axum::Json(serde_json::json!({ "token": token, "user": user })).into_response(),
        None => (
            http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "code": "not_found", "message": "the development login is off" })),
        )
            .into_response(),
    }
}
