//! The HTTP API for backends, under `/api/`, authenticated by the API key
//! (`Authorization: apikey <key>`). Errors are JSON `{code, message}` with
//! stable codes. The OpenAPI document is at `/api/openapi.json`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::channel::ChannelName;
use crate::node::{NodeError, Publisher, Reader};
use crate::session::{self, Present, Published, Recent};

/// An API error: a status and a JSON body `{code, message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(json!({ "code": self.code, "message": self.message })),
        )
            .into_response();
        // A 503 (the storage failed) is worth retrying soon.
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
        }
        res
    }
}

fn error(status: StatusCode, code: &'static str, message: impl std::fmt::Display) -> ApiError {
    ApiError {
        status,
        code,
        message: message.to_string(),
    }
}

fn node_error(e: &NodeError) -> ApiError {
    let status = match e {
        NodeError::UnknownNamespace => StatusCode::BAD_REQUEST,
        NodeError::Forbidden => StatusCode::FORBIDDEN,
        NodeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        NodeError::TokenExpired => StatusCode::UNAUTHORIZED,
        NodeError::History(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.code(), e)
}

/// How long a client may take to send a request body to the API (or the
/// development login): a body trickled slower is refused with 408, so a
/// slow sender cannot pin a connection and its buffer.
pub(crate) const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest request body the API reads: room for a publication of
/// `limits.max_message_size` and the request around it (a broadcast's
/// channel list), at least 1 MiB.
pub(crate) fn body_limit(max_message_size: usize) -> usize {
    max_message_size.saturating_mul(2).max(1 << 20)
}

/// In front of every keyed API route: the key is checked from the headers
/// alone, before a byte of the body is read (a request without the key
/// cannot make the server buffer its body); then the body is read within
/// [`body_limit`] and [`BODY_TIMEOUT`].
pub(crate) async fn gate(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Err(e) = authorize(&app, req.headers()) {
        return e.into_response();
    }
    match read_body(req, body_limit(app.limits().max_message_size)).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Reads a request's body within `limit` bytes and [`BODY_TIMEOUT`]: 413
/// `message_too_large` over the limit (at once when `Content-Length` says
/// so), 408 `body_timeout` when it comes too slowly.
pub(crate) async fn read_body(
    req: axum::extract::Request,
    limit: usize,
) -> Result<axum::extract::Request, ApiError> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
            format!("the request body is over {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(axum::extract::Request::from_parts(
            parts,
            axum::body::Body::from(bytes),
        )),
        Ok(Err(e)) => {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                Err(too_large())
            } else {
                Err(error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("reading the body: {e}"),
                ))
            }
        }
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Checks the API key; `Err` is the answer to send.
fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = app.api_key.as_deref() else {
        return Err(error(
            StatusCode::FORBIDDEN,
            "api_disabled",
            "no API key is configured (api.key)",
        ));
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("apikey "))
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), key.as_bytes()) => Ok(()),
        Some(_) => Err(error(
            StatusCode::UNAUTHORIZED,
            "bad_api_key",
            "the API key is not valid",
        )),
        None => Err(error(
            StatusCode::UNAUTHORIZED,
            "api_key_missing",
            "send Authorization: apikey <key>",
        )),
    }
}

/// Checks the API key, then that a JSON body of the `shape` came.
fn authorized_body<T>(
    app: &App,
    headers: &HeaderMap,
    body: Result<Json<T>, JsonRejection>,
    shape: &str,
) -> Result<T, ApiError> {
    authorize(app, headers)?;
    match body {
        Ok(Json(body)) => Ok(body),
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "message_too_large",
            e.body_text(),
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected a JSON body {shape}: {}", e.body_text()),
        )),
    }
}

/// Checks the API key, then the query (`?channel=...`).
fn authorized_query(
    app: &App,
    headers: &HeaderMap,
    q: Result<Query<ChannelQuery>, QueryRejection>,
) -> Result<ChannelQuery, ApiError> {
    authorize(app, headers)?;
    q.map(|Query(q)| q).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected ?channel=...: {}", e.body_text()),
        )
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn channel(name: &str) -> Result<ChannelName, ApiError> {
    ChannelName::parse(name).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_channel",
            format!("{name}: {e}"),
        )
    })
}

/// `POST /api/publish` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishBody {
    channel: String,
    data: Value,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// Publishes to one channel; a retry with the same `idempotency_key` is
/// stored once.
pub(crate) async fn publish(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<PublishBody>, JsonRejection>,
) -> Response {
    let body = match authorized_body(&app, &headers, body, "{channel, data}") {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let ch = match channel(&body.channel) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let key = body.idempotency_key.clone();
    match app.node.publish(&ch, body.data, Publisher::Api, key).await {
        Ok((p, epoch)) => Json(Published {
            channel: ch.as_str(),
            offset: p.offset,
            epoch: &epoch,
        })
        .into_response(),
        Err(e) => node_error(&e).into_response(),
    }
}

/// `POST /api/broadcast` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BroadcastBody {
    channels: Vec<String>,
    data: Value,
}

/// Publishes the same data to several channels; each gets its own result.
pub(crate) async fn broadcast(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<BroadcastBody>, JsonRejection>,
) -> Response {
    let body = match authorized_body(&app, &headers, body, "{channels, data}") {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    if body.channels.is_empty() || body.channels.len() > 1000 {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "channels: 1 to 1000 names",
        )
        .into_response();
    }
    let mut results = Vec::with_capacity(body.channels.len());
    for name in &body.channels {
        let result = match ChannelName::parse(name) {
            Err(e) => {
                json!({ "channel": name, "error": { "code": "bad_channel", "message": e.to_string() } })
            }
            Ok(ch) => match app
                .node
                .publish(&ch, body.data.clone(), Publisher::Api, None)
                .await
            {
                Ok((p, epoch)) => session::body(&Published {
                    channel: name,
                    offset: p.offset,
                    epoch: &epoch,
                }),
                Err(e) => {
                    json!({ "channel": name, "error": { "code": e.code(), "message": e.to_string() } })
                }
            },
        };
        results.push(result);
    }
    Json(json!({ "results": results })).into_response()
}

/// Query of the per-channel reads.
#[derive(Debug, Deserialize)]
pub(crate) struct ChannelQuery {
    channel: String,
    #[serde(default)]
    limit: Option<usize>,
}

/// Who is present in a channel.
pub(crate) async fn presence(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Result<Query<ChannelQuery>, QueryRejection>,
) -> Response {
    let q = match authorized_query(&app, &headers, q) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let ch = match channel(&q.channel) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    match app.node.presence(&ch, Reader::Api) {
        Ok(p) => Json(Present {
            channel: ch.as_str(),
            presence: &p,
        })
        .into_response(),
        Err(e) => node_error(&e).into_response(),
    }
}

/// The last publications of a channel.
pub(crate) async fn history(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    q: Result<Query<ChannelQuery>, QueryRejection>,
) -> Response {
    let q = match authorized_query(&app, &headers, q) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let ch = match channel(&q.channel) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    match app
        .node
        .history_of(&ch, q.limit.unwrap_or(100).min(1000), Reader::Api)
        .await
    {
        Ok((items, pos)) => Json(Recent {
            channel: ch.as_str(),
            offset: pos.offset,
            epoch: &pos.epoch,
            publications: &items,
        })
        .into_response(),
        Err(e) => node_error(&e).into_response(),
    }
}

/// Channels with subscribers on this node, and how many.
pub(crate) async fn channels(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r.into_response();
    }
    let list: Vec<Value> = app
        .node
        .hub()
        .channels()
        .into_iter()
        .map(|(c, n)| json!({ "channel": c.as_str(), "subscribers": n }))
        .collect();
    Json(json!({ "channels": list })).into_response()
}

/// `POST /api/disconnect` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DisconnectBody {
    user: String,
}

/// Disconnects every connection of a user on this node, on every protocol
/// (Socket.IO `disconnect`, WebSocket close 4001, SSE `disconnect` event
/// then the end of the stream).
pub(crate) async fn disconnect(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<DisconnectBody>, JsonRejection>,
) -> Response {
    let body = match authorized_body(&app, &headers, body, "{user}") {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    if body.user.is_empty() {
        return error(StatusCode::BAD_REQUEST, "bad_request", "user is empty").into_response();
    }
    let n = app
        .node
        .hub()
        .close_connections(Some(&body.user), crate::hub::CloseReason::Disconnected);
    tracing::info!(user = %body.user, connections = n, "user disconnected through the API");
    Json(json!({ "user": body.user, "disconnected": n })).into_response()
}

/// About this node.
pub(crate) async fn info(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&app, &headers) {
        return r.into_response();
    }
    Json(json!({
        "name": "switchboard",
        "version": env!("CARGO_PKG_VERSION"),
        "channels": app.node.hub().channels().len(),
        "namespaces": app.node.config().channels.keys().collect::<Vec<_>>(),
    }))
    .into_response()
}

/// The OpenAPI document.
pub(crate) async fn openapi() -> Response {
    Json(openapi_document()).into_response()
}

fn openapi_document() -> Value {
    let error = json!({ "$ref": "#/components/schemas/Error" });
    let answers = |ok: Value| {
        json!({
            "200": { "description": "OK", "content": { "application/json": { "schema": ok } } },
            "400": { "description": "Bad request", "content": { "application/json": { "schema": error } } },
            "401": { "description": "Missing or bad API key", "content": { "application/json": { "schema": error } } },
            "403": { "description": "Forbidden or API disabled", "content": { "application/json": { "schema": error } } },
        })
    };
    let position = json!({ "type": "object", "required": ["channel", "offset", "epoch"], "properties": {
        "channel": { "type": "string" }, "offset": { "type": "integer" }, "epoch": { "type": "string" } } });
    let channel_param = json!([{ "name": "channel", "in": "query", "required": true, "schema": { "type": "string" } }]);
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Switchboard HTTP API", "version": env!("CARGO_PKG_VERSION") },
        "components": {
            "securitySchemes": { "apikey": { "type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`apikey <key>`" } },
            "schemas": { "Error": { "type": "object", "required": ["code", "message"], "properties": {
                "code": { "type": "string" }, "message": { "type": "string" } } } }
        },
        "security": [{ "apikey": [] }],
        "paths": {
            "/api/publish": { "post": {
                "summary": "Publish to a channel (idempotent with idempotency_key)",
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["channel", "data"], "properties": {
                        "channel": { "type": "string" }, "data": {}, "idempotency_key": { "type": "string" } } } } } },
                "responses": answers(position.clone()) } },
            "/api/broadcast": { "post": {
                "summary": "Publish the same data to several channels",
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["channels", "data"], "properties": {
                        "channels": { "type": "array", "items": { "type": "string" } }, "data": {} } } } } },
                "responses": answers(json!({ "type": "object", "properties": { "results": { "type": "array", "items": { "type": "object" } } } })) } },
            "/api/presence": { "get": { "summary": "Users present in a channel", "parameters": channel_param,
                "responses": answers(json!({ "type": "object" })) } },
            "/api/history": { "get": { "summary": "Last publications of a channel",
                "parameters": [channel_param[0], { "name": "limit", "in": "query", "schema": { "type": "integer" } }],
                "responses": answers(json!({ "type": "object" })) } },
            "/api/channels": { "get": { "summary": "Channels with subscribers, with counts",
                "responses": answers(json!({ "type": "object" })) } },
            "/api/info": { "get": { "summary": "About this node", "responses": answers(json!({ "type": "object" })) } },
            "/api/disconnect": { "post": {
                "summary": "Disconnect every connection of a user",
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["user"], "properties": { "user": { "type": "string" } } } } } },
                "responses": answers(json!({ "type": "object", "properties": {
                    "user": { "type": "string" }, "disconnected": { "type": "integer" } } })) } }
        }
    })
}
