//! The [`Manager`]: one Engine.IO connection, its reconnection loop, and the
//! namespaces ([`Socket`]s) multiplexed on it.
//!
//! One driver task per manager owns the transport. Sockets talk to it
//! through shared state guarded by a `std` mutex (never held across an
//! `.await`) and a [`Notify`]; handlers run on the driver task, outside the
//! lock, without a task per message.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use switchboard::Value;
use switchboard::protocol::engine::{Frame, Packet as EnginePacket};
use switchboard::protocol::socketio::{self, Encoded, PacketKind};
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::{Instant, sleep_until};

use crate::backoff::Reconnection;
use crate::error::{AckError, ConnectError};
use crate::polling;
use crate::socket::{AckSender, Event, Socket};
use crate::transport::{self, Headers, Target, Tls, Transport, WsTransport};

/// What to do with an emit when the offline buffer of its socket is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferPolicy {
    /// Refuse the new packet ([`EmitError::BufferFull`](crate::EmitError::BufferFull)).
    Reject,
    /// Drop the oldest buffered packet to make room; its ack, if any, fails
    /// with [`AckError::Dropped`].
    DropOldest,
}

/// Lifecycle events of the manager (the JavaScript client's `Manager`
/// events).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ManagerEvent {
    /// The Engine.IO connection is open (handshake done).
    Open,
    /// The Engine.IO connection closed, with the reason.
    Close(DisconnectReason),
    /// A connection attempt failed (first connection or reconnection).
    Error(String),
    /// Reconnection attempt number `n` (from 1) is about to start.
    ReconnectAttempt(u32),
    /// Reconnected after `n` attempts.
    Reconnect(u32),
    /// Reconnection attempt failed.
    ReconnectError(String),
    /// Gave up after the configured number of attempts.
    ReconnectFailed,
}

/// Why a socket or the connection went away (the JavaScript client's
/// reason strings, see [`DisconnectReason::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The server disconnected the socket (no automatic reconnection).
    IoServerDisconnect,
    /// [`Socket::disconnect`] or [`Manager::close`] was called.
    IoClientDisconnect,
    /// No packet from the server within `pingInterval + pingTimeout`.
    PingTimeout,
    /// The connection was closed.
    TransportClose,
    /// The connection failed.
    TransportError,
    /// The server sent something that is not Engine.IO / Socket.IO.
    ParseError,
}

impl DisconnectReason {
    /// The reason as the JavaScript client names it.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::IoServerDisconnect => "io server disconnect",
            DisconnectReason::IoClientDisconnect => "io client disconnect",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::TransportError => "transport error",
            DisconnectReason::ParseError => "parse error",
        }
    }
}

/// The state of one socket, as [`Socket::status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketStatus {
    /// Not connected (yet, or any more).
    Disconnected,
    /// The namespace connection was sent, not answered yet.
    Connecting,
    /// Connected to the namespace.
    Connected,
    /// The server refused the namespace (`connect_error`).
    Refused,
}

/// Which transports a [`Manager`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transports {
    /// WebSocket only (the JavaScript client's `transports: ["websocket"]`).
    WebSocket,
    /// HTTP long-polling first, then the upgrade to WebSocket when the
    /// server offers it (the JavaScript client's default); stays on polling
    /// if the upgrade fails (networks that block WebSocket).
    PollingThenUpgrade,
    /// HTTP long-polling only.
    Polling,
}

/// Options of a [`Manager`], set through [`ManagerBuilder`].
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) target: Target,
    pub(crate) path: String,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) headers: Headers,
    pub(crate) reconnection: Reconnection,
    pub(crate) buffer_capacity: usize,
    pub(crate) buffer_policy: BufferPolicy,
    pub(crate) connect_timeout: Duration,
    pub(crate) tls: Tls,
    pub(crate) transports: Transports,
}

/// Builds a [`Manager`].
pub struct ManagerBuilder {
    config: Result<Config, ConnectError>,
}

impl ManagerBuilder {
    fn map(mut self, f: impl FnOnce(&mut Config) -> Result<(), ConnectError>) -> Self {
        if let Ok(config) = self.config.as_mut()
            && let Err(e) = f(config)
        {
            self.config = Err(e);
        }
        self
    }

    /// The Engine.IO path (default `/socket.io/`).
    pub fn path(self, path: &str) -> Self {
        let path = path.to_owned();
        self.map(|c| {
            c.path = path;
            Ok(())
        })
    }

    /// Adds a query parameter to every request.
    pub fn query(self, key: &str, value: &str) -> Self {
        let (k, v) = (key.to_owned(), value.to_owned());
        self.map(|c| {
            c.query.push((k, v));
            Ok(())
        })
    }

    /// Adds an HTTP header to every request (handshake and upgrade).
    pub fn header(self, name: &str, value: &str) -> Self {
        let parsed = transport::header(name, value);
        self.map(|c| {
            c.headers.push(parsed?);
            Ok(())
        })
    }

    /// The reconnection policy (default: the JavaScript client's).
    pub fn reconnection(self, policy: Reconnection) -> Self {
        self.map(|c| {
            c.reconnection = policy;
            Ok(())
        })
    }

    /// Bound of each socket's offline buffer, in packets (default 1,000),
    /// and what to do when it is full (default [`BufferPolicy::Reject`]).
    pub fn offline_buffer(self, capacity: usize, policy: BufferPolicy) -> Self {
        self.map(|c| {
            c.buffer_capacity = capacity;
            c.buffer_policy = policy;
            Ok(())
        })
    }

    /// How long a connection attempt (TCP, WebSocket and Engine.IO
    /// handshakes) may take (default 20 s, as the JavaScript client).
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        self.map(|c| {
            c.connect_timeout = timeout;
            Ok(())
        })
    }

    /// The rustls configuration for `https`/`wss` URLs (default: trust the
    /// system's certificate authorities).
    pub fn tls_config(self, config: Arc<tokio_rustls::rustls::ClientConfig>) -> Self {
        self.map(|c| {
            c.tls.config = Some(config);
            Ok(())
        })
    }

    /// Which transports to use (default [`Transports::WebSocket`]).
    pub fn transports(self, transports: Transports) -> Self {
        self.map(|c| {
            c.transports = transports;
            Ok(())
        })
    }

    /// Builds the manager. Nothing connects until a socket does.
    pub fn build(self) -> Result<Manager, ConnectError> {
        let config = self.config?;
        Ok(Manager {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
                listeners: Mutex::new(Vec::new()),
            }),
        })
    }
}

/// A connection to one Socket.IO server, shared by the [`Socket`]s of its
/// namespaces (the JavaScript client's `Manager`). Cheap to clone.
#[derive(Clone)]
pub struct Manager {
    pub(crate) inner: Arc<Inner>,
}

type Listener = Arc<dyn Fn(&ManagerEvent) + Send + Sync>;
pub(crate) type EventHandler = Arc<dyn Fn(&Event) + Send + Sync>;
pub(crate) type ConnectHandler = Arc<dyn Fn() + Send + Sync>;
pub(crate) type DisconnectHandler = Arc<dyn Fn(DisconnectReason) + Send + Sync>;
pub(crate) type ConnectErrorHandler = Arc<dyn Fn(&Value) + Send + Sync>;
pub(crate) type AuthFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;
pub(crate) type AckResult = Result<Vec<Value>, AckError>;

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) state: Mutex<State>,
    pub(crate) wake: Notify,
    listeners: Mutex<Vec<Listener>>,
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A handler that panicked must not take the client down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit_event(&self, event: &ManagerEvent) {
        let listeners: Vec<Listener> = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for l in listeners {
            l(event);
        }
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) sockets: HashMap<String, SockState>,
    /// Frames to write before any socket's buffer (acks, disconnects).
    pub(crate) control: Vec<Frame>,
    pub(crate) engine_open: bool,
    pub(crate) transport: Option<&'static str>,
    pub(crate) driver_running: bool,
    pub(crate) closed: bool,
}

/// A packet waiting in a socket's offline buffer.
pub(crate) struct Queued {
    pub(crate) frames: Vec<Frame>,
    pub(crate) ack: Option<u64>,
}

#[derive(Default)]
pub(crate) struct Handlers {
    pub(crate) events: HashMap<String, Vec<EventHandler>>,
    pub(crate) any: Vec<EventHandler>,
    pub(crate) connect: Vec<ConnectHandler>,
    pub(crate) disconnect: Vec<DisconnectHandler>,
    pub(crate) connect_error: Vec<ConnectErrorHandler>,
}

pub(crate) struct SockState {
    pub(crate) status: watch::Sender<SocketStatus>,
    /// The user wants this socket connected (reconnect it after a drop).
    pub(crate) active: bool,
    pub(crate) id: Option<String>,
    pub(crate) pid: Option<String>,
    pub(crate) last_offset: Option<String>,
    pub(crate) recovered: bool,
    pub(crate) outbox: VecDeque<Queued>,
    pub(crate) acks: HashMap<u64, oneshot::Sender<AckResult>>,
    pub(crate) next_ack: u64,
    /// Events received before the namespace's `connect` answer.
    pub(crate) early: Vec<Event>,
    pub(crate) handlers: Handlers,
    pub(crate) auth: Option<AuthFn>,
}

impl SockState {
    fn new() -> Self {
        SockState {
            status: watch::Sender::new(SocketStatus::Disconnected),
            active: false,
            id: None,
            pid: None,
            last_offset: None,
            recovered: false,
            outbox: VecDeque::new(),
            acks: HashMap::new(),
            next_ack: 0,
            early: Vec::new(),
            handlers: Handlers::default(),
            auth: None,
        }
    }

    pub(crate) fn current(&self) -> SocketStatus {
        *self.status.borrow()
    }
}

impl Manager {
    /// Starts building a manager for `url` (`http(s)://` or `ws(s)://`,
    /// host and port; a path in the URL is ignored, see
    /// [`ManagerBuilder::path`]; a query is kept).
    pub fn builder(url: &str) -> ManagerBuilder {
        let config = Target::parse(url).map(|target| Config {
            target,
            path: "/socket.io/".to_owned(),
            query: Vec::new(),
            headers: Vec::new(),
            reconnection: Reconnection::default(),
            buffer_capacity: 1000,
            buffer_policy: BufferPolicy::Reject,
            connect_timeout: Duration::from_secs(20),
            tls: Tls::default(),
            transports: Transports::WebSocket,
        });
        ManagerBuilder { config }
    }

    /// The socket of namespace `nsp` (`/` or `/name`): the same one for the
    /// same namespace. It connects when [`Socket::connect`] is called.
    pub fn socket(&self, nsp: &str) -> Socket {
        let nsp = if nsp.starts_with('/') {
            nsp.to_owned()
        } else {
            format!("/{nsp}")
        };
        self.inner
            .lock()
            .sockets
            .entry(nsp.clone())
            .or_insert_with(SockState::new);
        Socket {
            inner: self.inner.clone(),
            nsp: Arc::from(nsp.as_str()),
        }
    }

    /// Registers a listener for the manager's lifecycle events.
    pub fn on_event(&self, f: impl Fn(&ManagerEvent) + Send + Sync + 'static) {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(f));
    }

    /// Closes the connection for good: connected sockets are disconnected
    /// (`io client disconnect`), buffered packets dropped, pending acks fail
    /// with [`AckError::Closed`].
    pub fn close(&self) {
        let mut st = self.inner.lock();
        st.closed = true;
        drop(st);
        self.inner.wake.notify_one();
    }

    /// The transport of the open connection (`websocket` or `polling`).
    pub fn transport(&self) -> Option<&'static str> {
        self.inner.lock().transport
    }

    /// Whether the Engine.IO connection is open.
    pub fn is_open(&self) -> bool {
        self.inner.lock().engine_open
    }
}

/// Starts the driver task if it is not running.
pub(crate) fn ensure_driver(inner: &Arc<Inner>) {
    let mut st = inner.lock();
    if st.driver_running || st.closed {
        drop(st);
        inner.wake.notify_one();
        return;
    }
    st.driver_running = true;
    drop(st);
    tokio::spawn(drive(inner.clone()));
}

/// The connection loop: connect, run the session, back off, again.
async fn drive(inner: Arc<Inner>) {
    let policy = inner.config.reconnection.clone();
    let mut attempts: u32 = 0;
    loop {
        if stop_requested(&inner) {
            break;
        }
        match open(&inner).await {
            Ok((transport, handshake)) => {
                if attempts > 0 {
                    inner.emit_event(&ManagerEvent::Reconnect(attempts));
                }
                attempts = 0;
                inner.emit_event(&ManagerEvent::Open);
                let reason = session(&inner, transport, handshake).await;
                end_session(&inner, reason);
                inner.emit_event(&ManagerEvent::Close(reason));
                if reason == DisconnectReason::IoClientDisconnect {
                    break;
                }
            }
            Err(e) => {
                let text = e.to_string();
                tracing::debug!("connection attempt failed: {text}");
                if attempts > 0 {
                    inner.emit_event(&ManagerEvent::ReconnectError(text));
                } else {
                    inner.emit_event(&ManagerEvent::Error(text));
                }
            }
        }
        if !policy.enabled || stop_requested(&inner) {
            break;
        }
        if policy.attempts.is_some_and(|max| attempts >= max) {
            inner.emit_event(&ManagerEvent::ReconnectFailed);
            break;
        }
        let delay = policy.delay_for(attempts);
        attempts += 1;
        inner.emit_event(&ManagerEvent::ReconnectAttempt(attempts));
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = sleep_until(until) => break,
                _ = inner.wake.notified() => {
                    if stop_requested(&inner) { break; }
                }
            }
        }
    }
    let mut st = inner.lock();
    st.driver_running = false;
    // The connection will not come back on its own: nothing waits for an
    // answer that cannot come, nor stays buffered for a connection that
    // will not open (a later `connect()` starts afresh).
    if st.closed {
        fail_everything(&mut st, || AckError::Closed);
    } else {
        fail_everything(&mut st, || AckError::Disconnected);
    }
}

fn stop_requested(inner: &Inner) -> bool {
    let st = inner.lock();
    st.closed || !st.sockets.values().any(|s| s.active)
}

fn fail_everything(st: &mut State, why: fn() -> AckError) {
    st.control.clear();
    for s in st.sockets.values_mut() {
        s.outbox.clear();
        for (_, tx) in s.acks.drain() {
            let _ = tx.send(Err(why()));
        }
        s.active = false;
    }
}

struct Handshake {
    ping_deadline: Duration,
    upgrades_ws: bool,
}

async fn open(inner: &Inner) -> Result<(Transport, Handshake), ConnectError> {
    let c = &inner.config;
    let mut extra = String::new();
    if !c.target.query.is_empty() {
        extra.push('&');
        extra.push_str(&c.target.query);
    }
    for (k, v) in &c.query {
        extra.push('&');
        extra.push_str(&transport::encode_component(k));
        extra.push('=');
        extra.push_str(&transport::encode_component(v));
    }
    let attempt = async {
        if c.transports == Transports::WebSocket {
            let pq = format!("{}?EIO=4&transport=websocket{extra}", c.path);
            let uri = c.target.ws_uri(&pq)?;
            let ws = transport::connect_ws(&c.target, uri, &c.headers, &c.tls).await?;
            let mut t = WsTransport::new(ws);
            return match t.recv().await {
                Some(Ok(EnginePacket::Open(data))) => {
                    Ok((Transport::Ws(Box::new(t)), parse_open(&data)?))
                }
                Some(Ok(other)) => Err(ConnectError::Handshake(format!(
                    "expected an open packet, got {other:?}"
                ))),
                Some(Err(e)) => Err(e),
                None => Err(ConnectError::Handshake("closed before open".into())),
            };
        }
        let base = format!("{}?EIO=4&transport=polling{extra}", c.path);
        let (mut polling, open, sid) =
            polling::handshake(&c.target, &c.tls, &c.headers, &base).await?;
        let hs = parse_open(&open)?;
        if c.transports == Transports::PollingThenUpgrade && hs.upgrades_ws {
            let pq = format!(
                "{}?EIO=4&transport=websocket&sid={}{extra}",
                c.path,
                transport::encode_component(&sid)
            );
            match upgrade(c, &pq, &mut polling).await {
                Ok(ws) => return Ok((Transport::Ws(Box::new(ws)), hs)),
                Err(e) => {
                    // Networks that block WebSocket: stay on polling, as
                    // the JavaScript client does.
                    tracing::debug!("upgrade failed, staying on polling: {e}");
                    if polling.is_paused() {
                        return Err(e);
                    }
                }
            }
        }
        Ok((Transport::Polling(Box::new(polling)), hs))
    };
    tokio::time::timeout(c.connect_timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

/// The upgrade: probe over a new WebSocket, pause polling, switch.
async fn upgrade(
    c: &Config,
    pq: &str,
    polling: &mut polling::PollingTransport,
) -> Result<WsTransport, ConnectError> {
    let uri = c.target.ws_uri(pq)?;
    let ws = transport::connect_ws(&c.target, uri, &c.headers, &c.tls).await?;
    let mut probe = WsTransport::new(ws);
    probe
        .send(vec![Frame::Text(Bytes::from_static(b"2probe"))])
        .await?;
    match probe.recv().await {
        Some(Ok(EnginePacket::Pong(data))) if &data[..] == b"probe" => {}
        other => {
            return Err(ConnectError::Handshake(format!(
                "bad probe answer: {other:?}"
            )));
        }
    }
    let pending = polling.pause().await?;
    let (ws, _) = probe.into_parts();
    let mut t = WsTransport::upgraded(ws, pending);
    t.send(vec![Frame::Text(Bytes::from_static(b"5"))]).await?;
    Ok(t)
}

fn parse_open(data: &[u8]) -> Result<Handshake, ConnectError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Open {
        #[allow(dead_code)]
        sid: String,
        ping_interval: u64,
        ping_timeout: u64,
        #[serde(default)]
        upgrades: Vec<String>,
    }
    let open: Open =
        serde_json::from_slice(data).map_err(|e| ConnectError::Handshake(e.to_string()))?;
    Ok(Handshake {
        ping_deadline: Duration::from_millis(open.ping_interval + open.ping_timeout),
        upgrades_ws: open.upgrades.iter().any(|u| u == "websocket"),
    })
}

/// Encodes a client namespace connection `40<nsp>,<auth>`.
fn encode_connect(nsp: &str, auth: &serde_json::Value) -> Frame {
    let mut buf = Vec::with_capacity(32 + nsp.len());
    buf.extend_from_slice(b"40");
    if nsp != "/" {
        buf.extend_from_slice(nsp.as_bytes());
        buf.push(b',');
    }
    if !auth.is_null() {
        // Writing a serde_json::Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut buf, auth);
    }
    Frame::Text(Bytes::from(buf))
}

/// Sockets that want a connection and have none: marks them connecting and
/// returns what their connect packets need.
#[allow(clippy::type_complexity)]
fn pending_connects(
    inner: &Inner,
) -> Vec<(String, Option<AuthFn>, Option<(String, Option<String>)>)> {
    let mut st = inner.lock();
    if !st.engine_open {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (nsp, s) in st.sockets.iter_mut() {
        if s.active && s.current() == SocketStatus::Disconnected {
            s.status.send_replace(SocketStatus::Connecting);
            let recovery = s.pid.clone().map(|pid| (pid, s.last_offset.clone()));
            out.push((nsp.clone(), s.auth.clone(), recovery));
        }
    }
    out
}

fn connect_frames(inner: &Inner) -> Vec<Frame> {
    pending_connects(inner)
        .into_iter()
        .map(|(nsp, auth, recovery)| {
            // The auth closure runs here, outside the lock: a fresh token at
            // every (re)connection.
            let mut data = auth.map(|f| f()).unwrap_or(serde_json::Value::Null);
            if let Some((pid, offset)) = recovery {
                let mut obj = serde_json::Map::new();
                obj.insert("pid".into(), pid.into());
                if let Some(o) = offset {
                    obj.insert("offset".into(), o.into());
                }
                if let serde_json::Value::Object(user) = data {
                    obj.extend(user);
                }
                data = serde_json::Value::Object(obj);
            }
            encode_connect(&nsp, &data)
        })
        .collect()
}

/// Takes everything ready to write: control frames, then the buffers of
/// connected sockets.
fn take_outgoing(inner: &Inner) -> Vec<Frame> {
    let mut st = inner.lock();
    let mut frames = std::mem::take(&mut st.control);
    for s in st.sockets.values_mut() {
        if s.current() == SocketStatus::Connected {
            for q in s.outbox.drain(..) {
                frames.extend(q.frames);
            }
        }
    }
    frames
}

/// A binary packet waiting for its attachments.
struct Partial {
    text: Bytes,
    expected: usize,
    attachments: Vec<Bytes>,
}

/// Work to do outside the lock after a packet.
enum Action {
    Event(Vec<EventHandler>, Event),
    Connect(Vec<ConnectHandler>),
    Disconnect(Vec<DisconnectHandler>, DisconnectReason),
    ConnectError(Vec<ConnectErrorHandler>, Value),
}

fn run(actions: Vec<Action>) {
    for a in actions {
        match a {
            Action::Event(hs, ev) => hs.iter().for_each(|h| h(&ev)),
            Action::Connect(hs) => hs.iter().for_each(|h| h()),
            Action::Disconnect(hs, r) => hs.iter().for_each(|h| h(r)),
            Action::ConnectError(hs, v) => hs.iter().for_each(|h| h(&v)),
        }
    }
}

async fn session(inner: &Arc<Inner>, mut transport: Transport, hs: Handshake) -> DisconnectReason {
    {
        let mut st = inner.lock();
        st.engine_open = true;
        st.transport = Some(transport.name());
    }
    let mut deadline = Instant::now() + hs.ping_deadline;
    let mut partial: Option<Partial> = None;
    let mut pongs = 0usize;
    loop {
        if inner.lock().closed || stop_requested(inner) {
            graceful_close(inner, &mut transport).await;
            return DisconnectReason::IoClientDisconnect;
        }
        let mut frames = connect_frames(inner);
        frames.extend((0..pongs).map(|_| Frame::control(b"3")));
        pongs = 0;
        frames.extend(take_outgoing(inner));
        if !frames.is_empty() {
            tokio::select! {
                r = transport.send(frames) => {
                    if r.is_err() { return DisconnectReason::TransportError; }
                }
                _ = sleep_until(deadline) => return DisconnectReason::PingTimeout,
            }
            continue;
        }
        tokio::select! {
            p = transport.recv() => {
                let packet = match p {
                    None => return DisconnectReason::TransportClose,
                    Some(Err(ConnectError::Handshake(_))) => return DisconnectReason::ParseError,
                    Some(Err(_)) => return DisconnectReason::TransportError,
                    Some(Ok(p)) => p,
                };
                deadline = Instant::now() + hs.ping_deadline;
                match packet {
                    EnginePacket::Ping(_) => pongs += 1,
                    EnginePacket::Close => return DisconnectReason::TransportClose,
                    EnginePacket::Message(data) => {
                        if let Err(()) = on_message(inner, data, &mut partial) {
                            return DisconnectReason::ParseError;
                        }
                    }
                    EnginePacket::Binary(data) => {
                        if let Err(()) = on_binary(inner, data, &mut partial) {
                            return DisconnectReason::ParseError;
                        }
                    }
                    _ => {}
                }
            }
            _ = inner.wake.notified() => {}
            _ = sleep_until(deadline) => return DisconnectReason::PingTimeout,
        }
    }
}

async fn graceful_close(inner: &Inner, transport: &mut Transport) {
    let mut frames = take_outgoing(inner);
    {
        let st = inner.lock();
        for (nsp, s) in &st.sockets {
            if s.current() == SocketStatus::Connected {
                frames.push(Frame::Text(socketio::encode_disconnect(nsp)));
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = transport.send(frames).await;
        transport.close().await;
    })
    .await;
}

/// Marks every socket disconnected after the transport went away.
fn end_session(inner: &Inner, reason: DisconnectReason) {
    let mut actions = Vec::new();
    {
        let mut st = inner.lock();
        st.engine_open = false;
        st.transport = None;
        st.control.clear();
        for s in st.sockets.values_mut() {
            s.early.clear();
            let was = s.current();
            if was == SocketStatus::Connected || was == SocketStatus::Connecting {
                s.status.send_replace(SocketStatus::Disconnected);
            }
            if was == SocketStatus::Connected {
                actions.push(Action::Disconnect(s.handlers.disconnect.clone(), reason));
            }
        }
    }
    run(actions);
}

fn on_binary(inner: &Arc<Inner>, data: Bytes, partial: &mut Option<Partial>) -> Result<(), ()> {
    let Some(p) = partial.as_mut() else {
        return Err(());
    };
    p.attachments.push(data);
    if p.attachments.len() < p.expected {
        return Ok(());
    }
    let Some(p) = partial.take() else {
        return Err(());
    };
    let packet = Encoded {
        text: p.text,
        attachments: p.attachments,
    }
    .decode()
    .map_err(|_| ())?;
    dispatch(inner, packet);
    Ok(())
}

fn on_message(inner: &Arc<Inner>, data: Bytes, partial: &mut Option<Partial>) -> Result<(), ()> {
    if partial.is_some() {
        // A text packet in the middle of attachments: the reference client
        // treats it as an error.
        return Err(());
    }
    let packet = socketio::decode(&data, 10_000).map_err(|_| ())?;
    if packet.attachments > 0 {
        let mut text = Vec::with_capacity(1 + data.len());
        text.push(b'4');
        text.extend_from_slice(&data);
        *partial = Some(Partial {
            text: Bytes::from(text),
            expected: packet.attachments,
            attachments: Vec::with_capacity(packet.attachments),
        });
        return Ok(());
    }
    dispatch(inner, packet);
    Ok(())
}

fn dispatch(inner: &Arc<Inner>, packet: socketio::Packet) {
    let mut actions = Vec::new();
    {
        let mut st = inner.lock();
        let Some(s) = st.sockets.get_mut(&packet.nsp) else {
            return;
        };
        match packet.kind {
            PacketKind::Connect => {
                let sid = packet
                    .payload
                    .as_ref()
                    .and_then(|p| p.get("sid"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let pid = packet
                    .payload
                    .as_ref()
                    .and_then(|p| p.get("pid"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                if !s.active {
                    // Left while the connection was on its way: leave again.
                    st.control
                        .push(Frame::Text(socketio::encode_disconnect(&packet.nsp)));
                    drop(st);
                    inner.wake.notify_one();
                    return;
                }
                s.recovered = pid.is_some() && pid == s.pid;
                if pid.is_none() {
                    s.last_offset = None;
                }
                s.pid = pid;
                s.id = sid;
                s.status.send_replace(SocketStatus::Connected);
                actions.push(Action::Connect(s.handlers.connect.clone()));
                for ev in std::mem::take(&mut s.early) {
                    actions.push(Action::Event(handlers_for(&s.handlers, ev.name()), ev));
                }
                drop(st);
                inner.wake.notify_one();
            }
            PacketKind::ConnectError => {
                s.active = false;
                s.status.send_replace(SocketStatus::Refused);
                actions.push(Action::ConnectError(
                    s.handlers.connect_error.clone(),
                    packet.payload.unwrap_or_default(),
                ));
            }
            PacketKind::Disconnect => {
                s.active = false;
                s.pid = None;
                s.last_offset = None;
                if s.current() == SocketStatus::Connected {
                    actions.push(Action::Disconnect(
                        s.handlers.disconnect.clone(),
                        DisconnectReason::IoServerDisconnect,
                    ));
                }
                s.status.send_replace(SocketStatus::Disconnected);
            }
            PacketKind::Event | PacketKind::BinaryEvent => {
                let Some(Value::Array(mut items)) = packet.payload else {
                    return;
                };
                if items.is_empty() {
                    return;
                }
                let name = match items.remove(0) {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    _ => return,
                };
                if s.pid.is_some()
                    && let Some(Value::String(offset)) = items.last()
                {
                    s.last_offset = Some(offset.clone());
                }
                let ack = packet
                    .id
                    .map(|id| AckSender::new(inner.clone(), Arc::from(packet.nsp.as_str()), id));
                let ev = Event::new(name, items, ack);
                if s.current() == SocketStatus::Connected {
                    actions.push(Action::Event(handlers_for(&s.handlers, ev.name()), ev));
                } else {
                    s.early.push(ev);
                }
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                let Some(id) = packet.id else { return };
                let args = match packet.payload {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                if let Some(tx) = s.acks.remove(&id) {
                    let _ = tx.send(Ok(args));
                }
            }
        }
    }
    run(actions);
}

fn handlers_for(h: &Handlers, name: &str) -> Vec<EventHandler> {
    let mut out = h.any.clone();
    if let Some(specific) = h.events.get(name) {
        out.extend(specific.iter().cloned());
    }
    out
}
