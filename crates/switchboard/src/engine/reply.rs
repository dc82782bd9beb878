//! The engine's own HTTP answers: polling payloads, `ok`, and the
//! reference server's JSON errors with their codes.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

/// An answer produced by the engine.
pub(crate) struct Reply {
    status: StatusCode,
    content_type: Option<&'static str>,
    body: Bytes,
}

impl Reply {
    pub(crate) fn empty(status: StatusCode) -> Self {
        Reply {
            status,
            content_type: None,
            body: Bytes::new(),
        }
    }

    pub(crate) fn payload(body: Bytes) -> Self {
        Reply {
            status: StatusCode::OK,
            content_type: Some("text/plain; charset=UTF-8"),
            body,
        }
    }

    pub(crate) fn ok() -> Self {
        Reply {
            status: StatusCode::OK,
            content_type: Some("text/html"),
            body: Bytes::from_static(b"ok"),
        }
    }

    /// The reference's JSON error: `{"code":N,"message":"..."}`.
    pub(crate) fn error(code: ErrorCode, message: Option<&str>) -> Self {
        let message = message.unwrap_or(code.message());
        let body = serde_json::json!({ "code": code as u8, "message": message }).to_string();
        Reply {
            status: if code == ErrorCode::Forbidden {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            },
            content_type: Some("application/json"),
            body: Bytes::from(body),
        }
    }
}

/// The reference server's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ErrorCode {
    /// `Transport unknown`.
    UnknownTransport = 0,
    /// `Session ID unknown`.
    UnknownSid = 1,
    /// `Bad handshake method`.
    BadHandshakeMethod = 2,
    /// `Bad request`.
    BadRequest = 3,
    /// `Forbidden` (HTTP 403).
    Forbidden = 4,
    /// `Unsupported protocol version`.
    UnsupportedProtocolVersion = 5,
}

impl ErrorCode {
    fn message(self) -> &'static str {
        match self {
            ErrorCode::UnknownTransport => "Transport unknown",
            ErrorCode::UnknownSid => "Session ID unknown",
            ErrorCode::BadHandshakeMethod => "Bad handshake method",
            ErrorCode::BadRequest => "Bad request",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }
}

/// The HTTP response of a reply (never cached).
pub(crate) fn into_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(reply.body));
    *r.status_mut() = reply.status;
    let h = r.headers_mut();
    if let Some(ct) = reply.content_type {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}
