//! Gateways: the wire protocols clients use to reach the channels.
//!
//! - [`ws`]: the plain WebSocket JSON protocol at `/ws`.
//! - [`sse`]: Server-Sent Events at `/events`.
//! - [`socketio`]: the Socket.IO vocabulary at `/socket.io/`.
//! - [`api`]: the HTTP API for backends at `/api/`.
//! - [`health`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`control`]: what the listener hands each request (closing its TCP
//!   connection).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::app::App;
use crate::limits::Refused;

pub(crate) mod api;
pub(crate) mod control;
pub(crate) mod health;
pub(crate) mod socketio;
pub(crate) mod sse;
pub(crate) mod ws;

/// The client's IP address, from the listener's tag on the request.
pub(crate) fn peer_ip<B>(req: &http::Request<B>) -> Option<IpAddr> {
    req.extensions()
        .get::<switchboard::RemoteAddr>()
        .map(|a| a.0.ip())
}

/// The HTTP answer to a refused connection (WebSocket upgrade or SSE
/// stream): 429 for rates, 503 for capacity and shutdown, with a JSON
/// `{code, message}` body; counted as a refusal.
pub(crate) fn refused(app: &Arc<App>, why: Refused) -> Response {
    tracing::debug!(reason = why.code(), "connection refused");
    app.node.metrics().refusal(why.code());
    let status = match why {
        Refused::TooManyHandshakes | Refused::TooManyConnectionsPerIp => {
            StatusCode::TOO_MANY_REQUESTS
        }
        Refused::TooManyConnections | Refused::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut res = (
        status,
        axum::Json(serde_json::json!({ "code": why.code(), "message": why.to_string() })),
    )
        .into_response();
    res.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    res
}

/// A frame waiting to be written: its bytes, and for a live publication
/// whose latency is sampled ([`crate::hub::Delivery::sampled`]) when it
/// was published.
pub(crate) type Out = (Bytes, Option<Instant>);

/// What became of a frame pushed to a [`SendQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Queued.
    Queued,
    /// It did not fit: the queue overflowed just now (the connection is a
    /// slow consumer and must close).
    Overflowed,
    /// Not queued: the queue had overflowed before, or the connection is
    /// gone.
    Dropped,
}

/// The send queue of a plain WebSocket or SSE connection, bounded in bytes
/// (`limits.max_queued_bytes`): a frame that does not fit marks the
/// connection as a slow consumer (it is then closed; others are not
/// slowed down) and wakes its task.
pub(crate) struct SendQueue {
    tx: mpsc::UnboundedSender<Out>,
    queued: AtomicUsize,
    max: usize,
    overflow: AtomicBool,
    /// Wakes the connection's task (overflow, or a close request).
    pub(crate) wake: Notify,
}

impl SendQueue {
    /// A queue of at most `max` bytes and its receiving end.
    pub(crate) fn new(max: usize) -> (Self, mpsc::UnboundedReceiver<Out>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue = SendQueue {
            tx,
            queued: AtomicUsize::new(0),
            max,
            overflow: AtomicBool::new(false),
            wake: Notify::new(),
        };
        (queue, rx)
    }

    /// Queues a frame.
    pub(crate) fn push(&self, bytes: Bytes, published: Option<Instant>) -> Push {
        let len = bytes.len();
        if self.queued.fetch_add(len, Ordering::AcqRel) + len > self.max {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            if self.overflow.swap(true, Ordering::AcqRel) {
                return Push::Dropped;
            }
            self.wake.notify_one();
            return Push::Overflowed;
        }
        if self.tx.send((bytes, published)).is_ok() {
            Push::Queued
        } else {
            Push::Dropped
        }
    }

    /// `bytes` left the queue (written).
    pub(crate) fn written(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Whether a frame did not fit: the connection must close.
    pub(crate) fn overflowed(&self) -> bool {
        self.overflow.load(Ordering::Acquire)
    }
}
