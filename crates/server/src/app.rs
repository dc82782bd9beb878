//! The application: shared state and the HTTP router of the server.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;

use crate::auth::Verifier;
use crate::config::Config;
use crate::gateway;
use crate::node::Node;

/// Everything the gateways share.
pub struct App {
    /// Channels, history, presence and the hub.
    pub node: Node,
    /// Token verification.
    pub verifier: Verifier,
    /// How long a plain WebSocket client has to authenticate.
    pub auth_timeout: Duration,
    /// Largest accepted WebSocket message.
    pub max_message: usize,
    /// The Socket.IO server (its vocabulary is mounted by [`App::router`]).
    pub io: switchboard::SocketIo,
    /// The key of the HTTP API: `api.key`, or with the development login
    /// a random one made at start (logged); `None` disables the API.
    pub api_key: Option<String>,
}

impl App {
    /// The application for a configuration.
    pub fn new(config: Config) -> anyhow::Result<Arc<App>> {
        let verifier = Verifier::new(&config.auth)?;
        let api_key = config.api.key.clone().or_else(|| {
            verifier.dev_login().then(|| {
                let mut raw = [0u8; 18];
                getrandom::fill(&mut raw).expect("the OS random source is unavailable");
                raw.iter().map(|b| format!("{b:02x}")).collect()
            })
        });
        let node = Node::new(Arc::new(config))?;
        Ok(Arc::new(App {
            node,
            verifier,
            auth_timeout: Duration::from_secs(10),
            max_message: 64 * 1024,
            io: switchboard::SocketIo::builder().build(),
            api_key,
        }))
    }

    /// The HTTP routes, with Socket.IO mounted at `/socket.io/`.
    pub fn router(self: &Arc<Self>) -> Router {
        gateway::socketio::mount(&self.io, self);
        Router::new()
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
            .route("/api/openapi.json", get(gateway::api::openapi))
            .route("/ws", get(gateway::ws::handler))
            .route("/events", get(gateway::sse::handler))
            .with_state(Arc::clone(self))
            .layer(self.io.layer())
    }
}

/// `POST /api/dev/token` `{user, name?}` → `{token}`: the development
/// login, only when no real key is configured.
async fn dev_token(
    axum::extract::State(app): axum::extract::State<Arc<App>>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
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
