//! The HTTP router: every route of the server, the gateways behind them,
//! Socket.IO mounted as a layer, and the embedded web chat as fallback.
//! The top of the server's layers below the listener (`server.rs`): it
//! depends on the gateways, which depend on the session and the state
//! (`app.rs`), never the reverse.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

use crate::app::App;
use crate::gateway;

/// The HTTP routes of `app`, with Socket.IO mounted at `/socket.io/`.
pub(crate) fn router(app: &Arc<App>) -> Router {
    gateway::socketio::mount(&app.io, app);
    // The keyed API: the key is checked before the body is read, and the
    // body is read within a size and a time (`gateway::api::gate`).
    let api = Router::new()
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
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(app),
            gateway::api::gate,
        ));
    let router = Router::new()
        .merge(api)
        .route(
            "/api/dev/token",
            axum::routing::post(dev_token).route_layer(axum::middleware::from_fn(
                |req: axum::extract::Request, next: axum::middleware::Next| async move {
                    use axum::response::IntoResponse;
                    match gateway::api::read_body(req, DEV_TOKEN_BODY_LIMIT).await {
                        Ok(req) => next.run(req).await,
                        Err(e) => e.into_response(),
                    }
                },
            )),
        )
        .route("/metrics", get(gateway::health::metrics))
        .route("/healthz", get(gateway::health::healthz))
        .route("/readyz", get(gateway::health::readyz))
        .route("/api/openapi.json", get(gateway::api::openapi))
        .route("/ws", get(gateway::ws::handler))
        .route("/events", get(gateway::sse::handler));
    let router = if app.node.config().web.enabled {
        router.fallback(crate::web::serve)
    } else {
        router
    };
    let counted = Arc::clone(app);
    router
        .with_state(Arc::clone(app))
        .layer(app.io.layer())
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let app = Arc::clone(&counted);
                async move {
                    let socketio = req.uri().path().starts_with("/socket.io/");
                    let res = next.run(req).await;
                    // Engine.IO answers an oversized polling body itapp.
                    if socketio && res.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                        app.node.metrics().refusal("message_too_large");
                    }
                    res
                }
            },
        ))
}

/// The largest body the development login reads.
const DEV_TOKEN_BODY_LIMIT: usize = 4 * 1024;

/// The longest display name the development login accepts, in characters.
const DEV_NAME_MAX: usize = 64;

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
    let name_ok = name.is_some_and(|n| {
        let chars = n.chars().count();
        (1..=DEV_NAME_MAX).contains(&chars) && !n.chars().any(char::is_control)
    });
    if !name_ok {
        return (
            http::StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "code": "bad_request", "message": format!("name: 1-{DEV_NAME_MAX} characters, no control characters") })),
        )
            .into_response();
    }
    match app.verifier.issue_dev_token(user, name, 86_400) {
        Some(token) => axum::Json(serde_json::json!({ "token": token, "user": user })).into_response(),
        None => (
            http::StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "code": "not_found", "message": "the development login is off" })),
        )
            .into_response(),
    }
}
