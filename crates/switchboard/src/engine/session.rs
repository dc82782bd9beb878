//! One Engine.IO session: its send queue, transport state and heartbeat.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, Uri};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{CloseReason, EngineHandler, EngineShared, SessionGuard};
use crate::protocol::engine::{Frame, Packet};
use crate::protocol::sid::Sid;

/// The transport currently carrying a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    WebSocket,
}

impl TransportKind {
    /// The name used in the `transport` query parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Polling => "polling",
            TransportKind::WebSocket => "websocket",
        }
    }
}

/// What the handshake request looked like; kept for the upper layers
/// (Socket.IO handshake data, connect middleware).
///
/// The headers are kept as one compact byte string and parsed into a
/// [`HeaderMap`] only when first asked for: most applications never read
/// them, and a `HeaderMap` costs about a kilobyte per connection.
#[derive(Debug)]
pub struct RequestInfo {
    /// `name:value\n` for every header, in order.
    raw_headers: Box<[u8]>,
    headers: OnceLock<Box<HeaderMap>>,
    /// Request path and query.
    path_and_query: Box<str>,
    /// Peer address, when the server provided it (see [`crate::RemoteAddr`]).
    pub remote_addr: Option<std::net::SocketAddr>,
    /// When the handshake happened.
    pub time: SystemTime,
}

impl RequestInfo {
    /// Keeps what is needed of a request. Everything is copied: hyper's
    /// parsed values share its 8 KiB read buffer, and holding one of them
    /// would keep that buffer alive for the whole life of the connection.
    pub fn new(headers: &HeaderMap, uri: &Uri, remote_addr: Option<std::net::SocketAddr>) -> Self {
        let mut raw = Vec::with_capacity(headers.len() * 32);
        for (name, value) in headers {
            raw.extend_from_slice(name.as_str().as_bytes());
            raw.push(b':');
            raw.extend_from_slice(value.as_bytes());
            raw.push(b'\n');
        }
        RequestInfo {
            raw_headers: raw.into_boxed_slice(),
            headers: OnceLock::new(),
            path_and_query: uri.path_and_query().map_or("/", |pq| pq.as_str()).into(),
            remote_addr,
            time: SystemTime::now(),
        }
    }

    /// The request path and query (`/socket.io/?EIO=4&transport=polling`).
    pub fn path_and_query(&self) -> &str {
        &self.path_and_query
    }

    /// The query string, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.path_and_query.split_once('?').map(|(_, q)| q)
    }

    /// The request URI (path and query).
    pub fn uri(&self) -> Uri {
        self.path_and_query.parse().unwrap_or_default()
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        self.headers.get_or_init(|| {
            let mut map = HeaderMap::new();
            for line in self.raw_headers.split(|b| *b == b'\n') {
                let Some(colon) = line.iter().position(|b| *b == b':') else {
                    continue;
                };
                if let (Ok(name), Ok(value)) = (
                    http::header::HeaderName::from_bytes(&line[..colon]),
                    http::HeaderValue::from_bytes(&line[colon + 1..]),
                ) {
                    map.append(name, value);
                }
            }
            Box::new(map)
        })
    }
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The session is closed.
    #[error("the session is closed")]
    Closed,
    /// The queue was full: the session has been closed as a slow consumer.
    #[error("send queue full: the session was closed as a slow consumer")]
    SlowConsumer,
}

pub(crate) struct State {
    pub(crate) transport: TransportKind,
    pub(crate) upgrading: bool,
    pub(crate) polling: bool,
    pub(crate) posting: bool,
    /// Server asked to close: deliver the queue, then `1`, then close.
    pub(crate) closing: bool,
    pub(crate) closed: Option<CloseReason>,
    /// The queue overflowed: the session is being closed as a slow consumer.
    pub(crate) doomed: bool,
    pub(crate) queue: VecDeque<Frame>,
    pub(crate) queued_bytes: usize,
    /// When the pong for the last ping is due, while it is awaited.
    pub(crate) pong_due: Option<Instant>,
    /// When the last pong arrived (or the session opened): the next ping is
    /// due `ping_interval` after it.
    pub(crate) last_pong: Instant,
    /// What the handshake's admission gave the session to hold until it
    /// closes ([`crate::engine::EngineConfig::allow_request`]).
    guard: Option<SessionGuard>,
}

/// An Engine.IO session, shared by its transports and the upper layer.
pub struct Session<H: EngineHandler> {
    id: Sid,
    pub(crate) shared: Arc<EngineShared<H>>,
    state: Mutex<State>,
    /// Wakes the single consumer of the queue (the WebSocket writer or the
    /// pending poll).
    pub(crate) wake: Notify,
    /// Wakes every task waiting for the session to close.
    closed: Notify,
    /// Wakes the heartbeat task when a pong arrives.
    pong: Notify,
    request: Arc<RequestInfo>,
    /// The upper layer's per-session state.
    pub data: H::Data,
}

impl<H: EngineHandler> Session<H> {
    pub(crate) fn new(
        shared: Arc<EngineShared<H>>,
        transport: TransportKind,
        request: RequestInfo,
        guard: Option<SessionGuard>,
    ) -> Arc<Self> {
        let data = shared.handler.new_session_data();
        Arc::new(Session {
            id: Sid::new(),
            shared,
            state: Mutex::new(State {
                transport,
                upgrading: false,
                polling: false,
                posting: false,
                closing: false,
                closed: None,
                doomed: false,
                queue: VecDeque::new(),
                queued_bytes: 0,
                pong_due: None,
                last_pong: Instant::now(),
                guard,
            }),
            wake: Notify::new(),
            closed: Notify::new(),
            pong: Notify::new(),
            request: Arc::new(request),
            data,
        })
    }

    /// The session id.
    pub fn id(&self) -> Sid {
        self.id
    }

    /// The handshake request.
    pub fn request(&self) -> &Arc<RequestInfo> {
        &self.request
    }

    /// The transport carrying the session now.
    pub fn transport(&self) -> TransportKind {
        self.lock().transport
    }

    /// Whether the session is closed or closing (a slow consumer whose
    /// queue overflowed is closing too).
    pub fn is_closed(&self) -> bool {
        let s = self.lock();
        s.closed.is_some() || s.closing || s.doomed
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent data: recover it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues frames to send, all or none. Volatile frames are dropped
    /// (returning `Ok(false)`) when anything is already waiting; other frames
    /// that do not fit close the session as a slow consumer.
    pub fn send_frames(
        self: &Arc<Self>,
        frames: &[Frame],
        volatile: bool,
    ) -> Result<bool, SendError> {
        let bytes = frames.iter().map(Frame::len).sum();
        self.enqueue(frames.len(), bytes, frames.iter().cloned(), volatile)
    }

    /// Queues one frame (see [`Session::send_frames`]); the frame is moved
    /// into the queue, not cloned.
    pub fn send(self: &Arc<Self>, frame: Frame) -> Result<bool, SendError> {
        let bytes = frame.len();
        self.enqueue(1, bytes, std::iter::once(frame), false)
    }

    /// Queues `count` frames of `bytes` in all (see [`Session::send_frames`]).
    fn enqueue(
        self: &Arc<Self>,
        count: usize,
        bytes: usize,
        frames: impl Iterator<Item = Frame>,
        volatile: bool,
    ) -> Result<bool, SendError> {
        let cfg = &self.shared.config;
        {
            let mut s = self.lock();
            if s.closed.is_some() || s.closing || s.doomed {
                return Err(SendError::Closed);
            }
            if volatile && !s.queue.is_empty() {
                return Ok(false);
            }
            // An empty queue takes whatever comes: the client is keeping
            // up, and an answer larger than the limit (a resume's replay)
            // must not close it as a slow consumer on every attempt.
            let fits = s.queue.is_empty()
                || (s.queue.len() + count <= cfg.max_queued_frames
                    && s.queued_bytes + bytes <= cfg.max_queued_bytes);
            if fits {
                s.queue.extend(frames);
                s.queued_bytes += bytes;
            } else if volatile {
                return Ok(false);
            } else {
                s.doomed = true;
                drop(s);
                tracing::debug!(sid = %self.id, "send queue full: closing slow consumer");
                // Closed from a task of its own: closing runs disconnect
                // handlers, which must not run inside the caller's emit (it
                // may hold a lock those handlers take).
                let session = Arc::clone(self);
                tokio::spawn(async move { session.close(CloseReason::SlowConsumer) });
                return Err(SendError::SlowConsumer);
            }
        }
        self.wake.notify_one();
        Ok(true)
    }

    /// Takes every queued frame (the queue's allocation goes with them, so
    /// an idle session holds none). Returns them and whether the server
    /// asked to close after them.
    pub(crate) fn drain(&self) -> (VecDeque<Frame>, bool) {
        let mut s = self.lock();
        s.queued_bytes = 0;
        (std::mem::take(&mut s.queue), s.closing)
    }

    /// Waits until the session is closed.
    pub(crate) async fn wait_closed(&self) {
        loop {
            let notified = self.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().closed.is_some() {
                return;
            }
            notified.await;
        }
    }

    /// Closes the session gracefully from the server side: queued frames
    /// are still delivered, then a close packet, then the transport closes.
    pub fn disconnect(self: &Arc<Self>) {
        {
            let mut s = self.lock();
            if s.closed.is_some() || s.closing {
                return;
            }
            s.queue.push_back(Frame::control(b"1"));
            s.closing = true;
        }
        self.wake.notify_one();
        let session = Arc::clone(self);
        let timeout = self.shared.config.close_timeout;
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(timeout) => session.close(CloseReason::ForcedClose),
                () = session.wait_closed() => {}
            }
        });
    }

    /// Closes the session at once: removes it, stops its transports and
    /// tells the handler (exactly once).
    pub fn close(self: &Arc<Self>, reason: CloseReason) {
        let guard = {
            let mut s = self.lock();
            if s.closed.is_some() {
                return;
            }
            s.closed = Some(reason);
            s.queue.clear();
            s.queued_bytes = 0;
            s.guard.take()
        };
        drop(guard);
        self.shared.remove(self.id);
        self.closed.notify_waiters();
        self.wake.notify_one();
        tracing::debug!(sid = %self.id, reason = reason.as_str(), "engine session closed");
        self.shared.handler.on_close(self, reason);
    }

    /// Handles one packet from the client, whatever its transport.
    pub(crate) fn on_packet(self: &Arc<Self>, packet: Packet) {
        match packet {
            Packet::Pong(_) => {
                {
                    let mut s = self.lock();
                    s.pong_due = None;
                    s.last_pong = Instant::now();
                }
                self.pong.notify_one();
            }
            Packet::Message(text) => self.shared.handler.on_message(self, text),
            Packet::Binary(data) => self.shared.handler.on_binary(self, data),
            Packet::Close => self.close(CloseReason::TransportClose),
            // v4: only the server pings ("invalid heartbeat direction").
            Packet::Ping(_) => self.close(CloseReason::TransportError),
            Packet::Open(_) | Packet::Upgrade | Packet::Noop => {}
        }
    }

    /// Advances the heartbeat: sends the ping that is due, or closes the
    /// session whose pong is overdue. Returns when to call again (`None`
    /// once the session is closed). A ping goes out `ping_interval` after the
    /// last pong (or the open), and its pong is due `ping_timeout` later.
    pub(crate) fn heartbeat_tick(self: &Arc<Self>) -> Option<Instant> {
        let cfg = &self.shared.config;
        let now = Instant::now();
        let mut s = self.lock();
        if s.closed.is_some() {
            return None;
        }
        match s.pong_due {
            Some(due) if now >= due => {
                drop(s);
                self.close(CloseReason::PingTimeout);
                None
            }
            Some(due) => Some(due),
            None => {
                let next_ping = s.last_pong + cfg.ping_interval;
                if now < next_ping {
                    return Some(next_ping);
                }
                let due = now + cfg.ping_timeout;
                s.pong_due = Some(due);
                drop(s);
                let _ = self.send_frames(&[Frame::control(b"2")], false);
                Some(due)
            }
        }
    }

    /// The heartbeat of a session whose transport task does not run it
    /// (long-polling sessions): a task that sleeps between ticks.
    pub(crate) async fn heartbeat(self: Arc<Self>) {
        while let Some(next) = self.heartbeat_tick() {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                // A pong moves the next ping to `ping_interval` after it.
                () = self.pong.notified() => {}
                () = self.wait_closed() => return,
            }
        }
    }

    /// When the heartbeat next needs attention, without acting.
    pub(crate) fn heartbeat_deadline(&self) -> Instant {
        let s = self.lock();
        s.pong_due
            .unwrap_or(s.last_pong + self.shared.config.ping_interval)
    }

    /// Closes the session if its pong is overdue, even when the heartbeat
    /// timer has not fired yet: a request arriving after the deadline must
    /// find the session gone. Returns whether it is closed.
    pub(crate) fn expire_if_overdue(self: &Arc<Self>) -> bool {
        let overdue = {
            let s = self.lock();
            if s.closed.is_some() {
                return true;
            }
            s.pong_due
                .is_some_and(|due| tokio::time::Instant::now() >= due)
        };
        if overdue {
            self.close(CloseReason::PingTimeout);
        }
        overdue
    }

    pub(crate) fn set_polling(&self, active: bool) {
        self.lock().polling = active;
    }

    /// Text of the open packet for this session.
    pub(crate) fn open_packet(&self, upgrades: bool) -> Bytes {
        let cfg = &self.shared.config;
        let upgrades = if upgrades { r#"["websocket"]"# } else { "[]" };
        Bytes::from(format!(
            r#"0{{"sid":"{}","upgrades":{},"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
            self.id,
            upgrades,
            cfg.ping_interval.as_millis(),
            cfg.ping_timeout.as_millis(),
            cfg.max_payload
        ))
    }
}
