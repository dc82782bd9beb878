//! The web chat: static files embedded at build time (see `build.rs`),
//! served at `/`. With `web.dir` set they are read from that directory
//! instead, so the page can be edited without rebuilding.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};

use crate::app::App;

include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// The content security policy of the pages: scripts, styles and
/// connections only to this server.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   style-src 'self'; script-src 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Names that may be served: one path segment of safe characters.
fn safe_name(path: &str) -> Option<&str> {
    let name = path.strip_prefix('/')?;
    let name = if name.is_empty() { "index.html" } else { name };
    (name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)))
    .then_some(name)
}

fn respond(ctype: &str, etag: Option<&str>, bytes: Body) -> Response {
    let mut res = Response::new(bytes);
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(ctype) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Some(etag) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
        h.insert(header::ETAG, etag);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    res
}

/// Serves a web file (the router's fallback): `GET /` is `index.html`.
pub(crate) async fn serve(State(app): State<Arc<App>>, req: Request) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(name) = safe_name(req.uri().path()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(dir) = &app.node.config().web.dir {
        return match tokio::fs::read(dir.join(name)).await {
            Ok(bytes) => respond(crate::mime::content_type(name), None, Body::from(bytes)),
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        };
    }
    let Some(&(_, ctype, etag, bytes)) = ASSETS.iter().find(|a| a.0 == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes());
    if fresh {
        let mut res = respond(ctype, Some(etag), Body::empty());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        return res;
    }
    respond(ctype, Some(etag), Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_served() {
        assert_eq!(safe_name("/"), Some("index.html"));
        assert_eq!(safe_name("/app.js"), Some("app.js"));
        assert_eq!(safe_name("/../Cargo.toml"), None);
        assert_eq!(safe_name("/a/b.js"), None);
        assert_eq!(safe_name("/.hidden"), None);
        assert_eq!(safe_name("nope"), None);
        assert!(ASSETS.iter().any(|a| a.0 == "index.html"));
    }
}
