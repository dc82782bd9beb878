//! Operations endpoints: Prometheus metrics at `/metrics`, liveness at
//! `/healthz`, readiness at `/readyz` (fails once shutdown began, so a load
//! balancer stops sending new clients).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::app::App;
use crate::metrics::{Gauges, PROTOCOLS};

/// `GET /metrics`: the Prometheus text exposition.
pub(crate) async fn metrics(State(app): State<Arc<App>>) -> Response {
    let hub = app.node.hub();
    let channels = hub.channels();
    let gauges = Gauges {
        connections: hub
            .connections_by_transport()
            .into_iter()
            .map(|(wire, transport, n)| (PROTOCOLS[wire as usize], transport, n))
            .collect(),
        subscriptions: channels.iter().map(|(_, n)| n).sum(),
        channels: channels.len(),
        ready: app.is_ready(),
    };
    let mut res = app.node.metrics().render(&gauges).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

/// `GET /healthz`: 200 while the process serves requests.
pub(crate) async fn healthz() -> Response {
    axum::Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: 200 when the server accepts clients and its storage
/// works (a probe row written and read back through the history's writer,
/// and no corruption met since the start); 503 `shutting_down` during
/// shutdown, 503 `storage_error` with the reason when the storage fails
/// (a full disk, an I/O error, a corrupt file).
pub(crate) async fn readyz(State(app): State<Arc<App>>) -> Response {
    if !app.is_ready() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "shutting_down" })),
        )
            .into_response();
    }
    match app.node.check_storage().await {
        Ok(()) => axum::Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({ "status": "storage_error", "message": e.to_string() })),
        )
            .into_response(),
    }
}
