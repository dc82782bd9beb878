//! A client for the `switchboard` server's plain WebSocket protocol
//! (`/ws`, see the server's docs/protocol.md): authentication, subscriptions
//! that resume from the last `(offset, epoch)` seen, publish with ack,
//! presence and history, with the same [`Reconnection`] policy as the
//! Socket.IO [`Manager`](crate::Manager).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use switchboard_client::ws::{SubEvent, WsClient};
//!
//! let client = WsClient::builder("ws://127.0.0.1:3000/ws")
//!     .token(|| std::env::var("SWITCHBOARD_TOKEN").ok())
//!     .build()?;
//! let mut sub = client.subscribe("chat:lobby");
//! let ack = client
//!     .publish("chat:lobby", &serde_json::json!({"text": "hi"}), Duration::from_secs(10))
//!     .await?;
//! println!("published at offset {}", ack.offset);
//! while let Some(event) = sub.recv().await {
//!     if let SubEvent::Publication(p) = event {
//!         println!("{} #{}: {}", p.channel, p.offset, p.data);
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::{Instant, sleep_until};
use tokio_websockets::Message;

use crate::backoff::Reconnection;
use crate::error::ConnectError;
use crate::transport::{self, Headers, Target, Tls, Ws};

/// Why a `/ws` request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WsError {
    /// The server answered with an error (`forbidden`, `token_expired`...).
    #[error("{code}: {message}")]
    Server {
        /// The stable error code (docs/protocol.md).
        code: String,
        /// A human-readable message.
        message: String,
    },
    /// No answer within the timeout. The request may or may not have been
    /// carried out (the connection may have dropped after it was sent).
    #[error("request timed out")]
    Timeout,
    /// The offline buffer of requests is full.
    #[error("offline buffer full")]
    BufferFull,
    /// The client was closed.
    #[error("client closed")]
    Closed,
    /// The data could not be serialized, or the answer not deserialized.
    #[error("JSON: {0}")]
    Json(String),
}

/// A publication on a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    /// The channel (`namespace:name`).
    pub channel: String,
    /// Its offset in the channel (1, 2, 3...).
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: String,
    /// The published data.
    pub data: Json,
    /// The user who published it (`None` for the HTTP API).
    #[serde(default)]
    pub from: Option<String>,
}

/// The answer to a publish.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PublishAck {
    /// The channel.
    pub channel: String,
    /// The offset the publication got.
    pub offset: u64,
    /// The channel's epoch.
    pub epoch: String,
}

/// What a [`Subscription`] delivers.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SubEvent {
    /// The server accepted the subscription (at every (re)connection):
    /// the channel's position, and whether the resume covered everything
    /// since the last publication delivered.
    Subscribed {
        /// The channel's current offset.
        offset: u64,
        /// The channel's epoch.
        epoch: String,
        /// `false` when resuming was asked and impossible (new epoch, or the
        /// history does not reach back): publications were missed.
        recovered: bool,
    },
    /// A publication, in offset order, never twice.
    Publication(Publication),
    /// A user's first connection subscribed (`{channel, user, name}`).
    Join(Json),
    /// A user's last connection left.
    Leave(Json),
    /// The server refused the subscription; it is dropped.
    Error(WsError),
}

/// Lifecycle events of a [`WsClient`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WsEvent {
    /// Connected and authenticated.
    Connected,
    /// The connection went away (the reason, for logs).
    Disconnected(String),
    /// Reconnection attempt `n` (from 1) is about to start.
    ReconnectAttempt(u32),
    /// An attempt failed.
    ReconnectError(String),
    /// `auth` was refused (the code); the client retries with backoff,
    /// reading the token again.
    AuthFailed(String),
    /// Gave up after the configured attempts.
    ReconnectFailed,
    /// A backend disconnected the user (close 4001): no reconnection.
    Kicked,
}

type TokenFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;
type Listener = Arc<dyn Fn(&WsEvent) + Send + Sync>;

#[derive(Clone)]
struct Config {
    target: Target,
    headers: Headers,
    token: Option<TokenFn>,
    reconnection: Reconnection,
    buffer_capacity: usize,
    connect_timeout: Duration,
    ping_interval: Duration,
    ping_timeout: Duration,
    tls: Tls,
}

/// Builds a [`WsClient`].
pub struct WsClientBuilder {
    config: Result<Config, ConnectError>,
}

impl WsClientBuilder {
    fn map(mut self, f: impl FnOnce(&mut Config) -> Result<(), ConnectError>) -> Self {
        if let Ok(c) = self.config.as_mut()
            && let Err(e) = f(c)
        {
            self.config = Err(e);
        }
        self
    }

    /// The token: `f` runs at every connection, so a refreshed token is
    /// used after a reconnection (`None`: no `auth`, anonymous).
    pub fn token(self, f: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        self.map(|c| {
            c.token = Some(Arc::new(f));
            Ok(())
        })
    }

    /// Adds an HTTP header to the WebSocket handshake.
    pub fn header(self, name: &str, value: &str) -> Self {
        let h = transport::header(name, value);
        self.map(|c| {
            c.headers.push(h?);
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

    /// Requests kept while disconnected (default 1,000); beyond it a
    /// request fails with [`WsError::BufferFull`].
    pub fn offline_buffer(self, capacity: usize) -> Self {
        self.map(|c| {
            c.buffer_capacity = capacity;
            Ok(())
        })
    }

    /// How long connecting (TCP, handshake, `auth`) may take (default 20 s).
    pub fn connect_timeout(self, timeout: Duration) -> Self {
        self.map(|c| {
            c.connect_timeout = timeout;
            Ok(())
        })
    }

    /// Heartbeat: a `ping` after `interval` without traffic; the connection
    /// is dropped (and resumed) when nothing arrives for `interval +
    /// timeout` (defaults 25 s and 20 s, Engine.IO's).
    pub fn heartbeat(self, interval: Duration, timeout: Duration) -> Self {
        self.map(|c| {
            c.ping_interval = interval;
            c.ping_timeout = timeout;
            Ok(())
        })
    }

    /// The rustls configuration for `wss` URLs (default: trust the system's
    /// certificate authorities).
    pub fn tls_config(self, config: Arc<tokio_rustls::rustls::ClientConfig>) -> Self {
        self.map(|c| {
            c.tls.config = Some(config);
            Ok(())
        })
    }

    /// Builds the client and starts connecting.
    pub fn build(self) -> Result<WsClient, ConnectError> {
        let config = self.config?;
        let inner = Arc::new(Inner {
            config,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            listeners: Mutex::new(Vec::new()),
        });
        tokio::spawn(drive(inner.clone()));
        Ok(WsClient { inner })
    }
}

/// A client of the server's `/ws` endpoint. Cheap to clone; dropping every
/// clone does not stop it: call [`WsClient::close`].
#[derive(Clone)]
pub struct WsClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    state: Mutex<State>,
    wake: Notify,
    listeners: Mutex<Vec<Listener>>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, e: &WsEvent) {
        let ls: Vec<Listener> = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for l in ls {
            l(e);
        }
    }
}

struct Sub {
    tx: mpsc::UnboundedSender<SubEvent>,
    /// The last publication delivered (or the position at subscription).
    position: Option<(u64, String)>,
    /// A gap was seen; a new subscribe is on its way.
    resyncing: bool,
}

/// Why an internal request was sent.
enum Internal {
    Subscribe(String),
}

enum Pending {
    User(oneshot::Sender<Result<Json, WsError>>),
    Internal(Internal),
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Requests not written yet.
    outbox: VecDeque<String>,
    pending: HashMap<u64, Pending>,
    subs: HashMap<String, Sub>,
    /// Subscribe requests to send at the next flush (channel names).
    resubscribe: Vec<String>,
    online: bool,
    closed: bool,
}

impl WsClient {
    /// Starts building a client for `url` (`ws://host:port/ws` or `wss://`).
    pub fn builder(url: &str) -> WsClientBuilder {
        let config = Target::parse(url).map(|target| Config {
            target,
            headers: Vec::new(),
            token: None,
            reconnection: Reconnection::default(),
            buffer_capacity: 1000,
            connect_timeout: Duration::from_secs(20),
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            tls: Tls::default(),
        });
        WsClientBuilder { config }
    }

    /// Registers a listener for lifecycle events.
    pub fn on_event(&self, f: impl Fn(&WsEvent) + Send + Sync + 'static) {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(f));
    }

    /// Whether the client is connected and authenticated.
    pub fn is_online(&self) -> bool {
        self.inner.lock().online
    }

    /// Subscribes to `channel` from now on. After a reconnection the client
    /// resumes from the last publication delivered, so nothing is missed
    /// or repeated within the channel's history.
    pub fn subscribe(&self, channel: &str) -> Subscription {
        self.subscribe_at(channel, None)
    }

    /// Subscribes to `channel` resuming after `(offset, epoch)` (a position
    /// saved earlier).
    pub fn subscribe_from(&self, channel: &str, offset: u64, epoch: &str) -> Subscription {
        self.subscribe_at(channel, Some((offset, epoch.to_owned())))
    }

    fn subscribe_at(&self, channel: &str, position: Option<(u64, String)>) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.inner.lock();
        st.subs.insert(
            channel.to_owned(),
            Sub {
                tx,
                position,
                resyncing: false,
            },
        );
        if st.online {
            st.resubscribe.push(channel.to_owned());
        }
        drop(st);
        self.inner.wake.notify_one();
        Subscription { rx }
    }

    /// Stops delivering `channel` (and tells the server when connected).
    pub fn unsubscribe(&self, channel: &str) {
        let mut st = self.inner.lock();
        st.subs.remove(channel);
        if st.online {
            let id = st.next_id;
            st.next_id += 1;
            let text = request_text("unsubscribe", &json!({ "channel": channel }), id);
            st.outbox.push_back(text);
        }
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Sends a request and waits up to `timeout` for its answer. Queued
    /// while disconnected.
    pub async fn request(
        &self,
        kind: &str,
        payload: Json,
        timeout: Duration,
    ) -> Result<Json, WsError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = self.inner.lock();
            if st.closed {
                return Err(WsError::Closed);
            }
            if st.outbox.len() >= self.inner.config.buffer_capacity {
                return Err(WsError::BufferFull);
            }
            let id = st.next_id;
            st.next_id += 1;
            st.outbox.push_back(request_text(kind, &payload, id));
            st.pending.insert(id, Pending::User(tx));
            id
        };
        self.inner.wake.notify_one();
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(WsError::Closed),
            Err(_) => {
                self.inner.lock().pending.remove(&id);
                Err(WsError::Timeout)
            }
        }
    }

    /// Publishes `data` on `channel`; the answer is the publication's
    /// position.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
        timeout: Duration,
    ) -> Result<PublishAck, WsError> {
        let data = serde_json::to_value(data).map_err(|e| WsError::Json(e.to_string()))?;
        let answer = self
            .request(
                "message",
                json!({"channel": channel, "data": data}),
                timeout,
            )
            .await?;
        serde_json::from_value(answer).map_err(|e| WsError::Json(e.to_string()))
    }

    /// Who is on `channel` (`{channel, presence: [{user, name, connections}]}`).
    pub async fn presence(&self, channel: &str, timeout: Duration) -> Result<Json, WsError> {
        self.request("presence", json!({ "channel": channel }), timeout)
            .await
    }

    /// The channel's stored publications (`{channel, offset, epoch,
    /// publications}`).
    pub async fn history(
        &self,
        channel: &str,
        limit: Option<u64>,
        timeout: Duration,
    ) -> Result<Json, WsError> {
        let mut payload = json!({ "channel": channel });
        if let Some(l) = limit {
            payload["limit"] = l.into();
        }
        self.request("history", payload, timeout).await
    }

    /// Closes the connection for good; pending requests fail with
    /// [`WsError::Closed`], subscriptions end.
    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.inner.wake.notify_one();
    }
}

/// The events of one subscribed channel.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::UnboundedReceiver<SubEvent>,
}

impl Subscription {
    /// The next event; `None` once the client is closed or the
    /// subscription dropped.
    pub async fn recv(&mut self) -> Option<SubEvent> {
        self.rx.recv().await
    }
}

fn request_text(kind: &str, payload: &Json, id: u64) -> String {
    json!({"type": kind, "payload": payload, "id": id}).to_string()
}

enum End {
    /// Reconnect with backoff.
    Retry(String),
    /// Do not reconnect.
    Stop,
}

async fn drive(inner: Arc<Inner>) {
    let policy = inner.config.reconnection.clone();
    let mut attempts = 0u32;
    loop {
        if inner.lock().closed {
            break;
        }
        match connect(&inner).await {
            Ok(ws) => {
                attempts = 0;
                inner.emit(&WsEvent::Connected);
                let end = session(&inner, ws).await;
                go_offline(&inner);
                match end {
                    End::Stop => break,
                    End::Retry(why) => inner.emit(&WsEvent::Disconnected(why)),
                }
            }
            Err(e) => inner.emit(&WsEvent::ReconnectError(e)),
        }
        if !policy.enabled || inner.lock().closed {
            break;
        }
        if policy.attempts.is_some_and(|max| attempts >= max) {
            inner.emit(&WsEvent::ReconnectFailed);
            break;
        }
        let until = Instant::now() + policy.delay_for(attempts);
        attempts += 1;
        inner.emit(&WsEvent::ReconnectAttempt(attempts));
        loop {
            tokio::select! {
                _ = sleep_until(until) => break,
                _ = inner.wake.notified() => if inner.lock().closed { break },
            }
        }
    }
    let mut st = inner.lock();
    st.closed = true;
    st.online = false;
    st.outbox.clear();
    for (_, p) in st.pending.drain() {
        if let Pending::User(tx) = p {
            let _ = tx.send(Err(WsError::Closed));
        }
    }
    st.subs.clear();
}

fn go_offline(inner: &Inner) {
    let mut st = inner.lock();
    st.online = false;
    st.resubscribe.clear();
    for sub in st.subs.values_mut() {
        sub.resyncing = false;
    }
    // Internal requests of the old connection will never be answered.
    st.pending.retain(|_, p| matches!(p, Pending::User(_)));
}

/// Connects and authenticates.
async fn connect(inner: &Inner) -> Result<Ws, String> {
    let c = &inner.config;
    let attempt = async {
        let mut pq = c.target.path.clone();
        if pq.is_empty() {
            pq.push('/');
        }
        if !c.target.query.is_empty() {
            pq.push('?');
            pq.push_str(&c.target.query);
        }
        let uri = c.target.ws_uri(&pq).map_err(|e| e.to_string())?;
        let mut ws = transport::connect_ws(&c.target, uri, &c.headers, &c.tls)
            .await
            .map_err(|e| e.to_string())?;
        let token = c.token.as_ref().and_then(|f| f());
        if let Some(token) = token {
            let text = request_text("auth", &json!({ "token": token }), u64::MAX);
            ws.send(Message::text(text))
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let msg = match ws.next().await {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("closed during auth".to_owned()),
                };
                let Some(text) = msg.as_text() else {
                    if msg.is_close() {
                        return Err("closed during auth".to_owned());
                    }
                    continue;
                };
                let v: Json = serde_json::from_str(text).map_err(|e| e.to_string())?;
                if v["id"].as_u64() != Some(u64::MAX) {
                    continue;
                }
                if v["type"] == "ack" {
                    break;
                }
                let code = v["payload"]["code"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_owned();
                inner.emit(&WsEvent::AuthFailed(code.clone()));
                return Err(format!("auth refused: {code}"));
            }
        }
        Ok(ws)
    };
    tokio::time::timeout(c.connect_timeout, attempt)
        .await
        .map_err(|_| "connection timed out".to_owned())?
}

/// Everything to write now: subscribes first, then queued requests.
fn take_outgoing(inner: &Inner) -> Vec<String> {
    let mut st = inner.lock();
    let mut out = Vec::new();
    let channels = std::mem::take(&mut st.resubscribe);
    for channel in channels {
        let Some(sub) = st.subs.get(&channel) else {
            continue;
        };
        let mut payload = json!({ "channel": channel });
        if let Some((offset, epoch)) = &sub.position {
            payload["since"] = json!({"offset": offset, "epoch": epoch});
        }
        let id = st.next_id;
        st.next_id += 1;
        st.pending
            .insert(id, Pending::Internal(Internal::Subscribe(channel)));
        out.push(request_text("subscribe", &payload, id));
    }
    out.extend(st.outbox.drain(..));
    out
}

async fn session(inner: &Arc<Inner>, mut ws: Ws) -> End {
    {
        let mut st = inner.lock();
        st.online = true;
        st.resubscribe = st.subs.keys().cloned().collect();
    }
    let c = &inner.config;
    let mut last_rx = Instant::now();
    let mut ping_at = last_rx + c.ping_interval;
    loop {
        if inner.lock().closed {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close()).await;
            return End::Stop;
        }
        let dead_at = last_rx + c.ping_interval + c.ping_timeout;
        let out = take_outgoing(inner);
        if !out.is_empty() {
            let write = async {
                for text in out {
                    ws.feed(Message::text(text)).await?;
                }
                ws.flush().await
            };
            tokio::select! {
                r = write => if let Err(e) = r { return End::Retry(e.to_string()) },
                _ = sleep_until(dead_at) => return End::Retry("heartbeat timeout".into()),
            }
            continue;
        }
        tokio::select! {
            msg = ws.next() => {
                let msg = match msg {
                    None => return End::Retry("closed".into()),
                    Some(Err(e)) => return End::Retry(e.to_string()),
                    Some(Ok(m)) => m,
                };
                last_rx = Instant::now();
                ping_at = last_rx + c.ping_interval;
                if let Some((code, reason)) = msg.as_close() {
                    if u16::from(code) == 4001 {
                        inner.emit(&WsEvent::Kicked);
                        return End::Stop;
                    }
                    return End::Retry(format!("closed {}: {reason}", u16::from(code)));
                }
                if let Some(text) = msg.as_text()
                    && let Ok(v) = serde_json::from_str::<Json>(text)
                {
                    on_message(inner, v);
                }
            }
            _ = inner.wake.notified() => {}
            _ = sleep_until(ping_at) => {
                ping_at = Instant::now() + c.ping_interval;
                if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
                    return End::Retry("write failed".into());
                }
            }
            _ = sleep_until(dead_at) => return End::Retry("heartbeat timeout".into()),
        }
    }
}

fn on_message(inner: &Inner, v: Json) {
    let kind = v["type"].as_str().unwrap_or("");
    let mut st = inner.lock();
    match kind {
        "ack" | "error" => {
            let Some(id) = v["id"].as_u64() else { return };
            let Some(pending) = st.pending.remove(&id) else {
                return;
            };
            let result = if kind == "ack" {
                Ok(v["payload"].clone())
            } else {
                Err(WsError::Server {
                    code: v["payload"]["code"].as_str().unwrap_or("").to_owned(),
                    message: v["payload"]["message"].as_str().unwrap_or("").to_owned(),
                })
            };
            match pending {
                Pending::User(tx) => {
                    let _ = tx.send(result);
                }
                Pending::Internal(Internal::Subscribe(channel)) => {
                    subscribed(&mut st, &channel, result);
                }
            }
        }
        "message" => {
            if let Ok(p) = serde_json::from_value::<Publication>(v["payload"].clone()) {
                deliver(&mut st, p);
            }
        }
        "join" | "leave" => {
            let channel = v["payload"]["channel"].as_str().unwrap_or("");
            if let Some(sub) = st.subs.get(channel) {
                let payload = v["payload"].clone();
                let _ = sub.tx.send(if kind == "join" {
                    SubEvent::Join(payload)
                } else {
                    SubEvent::Leave(payload)
                });
            }
        }
        _ => {}
    }
}

/// Delivers a publication unless it was delivered already. A gap (an
/// offset beyond the next one in the same epoch: a message lost on the
/// way) is not delivered: the channel is subscribed again from the last
/// offset delivered, and the server replays what is missing.
fn deliver(st: &mut State, p: Publication) {
    let State {
        subs, resubscribe, ..
    } = st;
    let Some(sub) = subs.get_mut(&p.channel) else {
        return;
    };
    if let Some((offset, epoch)) = &sub.position
        && *epoch == p.epoch
    {
        if p.offset <= *offset {
            return;
        }
        if p.offset > *offset + 1 {
            if !sub.resyncing {
                sub.resyncing = true;
                resubscribe.push(p.channel.clone());
            }
            return;
        }
    }
    sub.position = Some((p.offset, p.epoch.clone()));
    if sub.tx.send(SubEvent::Publication(p)).is_err() {
        subs.retain(|_, s| !s.tx.is_closed());
    }
}

#[derive(Deserialize)]
struct Subscribed {
    offset: u64,
    epoch: String,
    recovered: bool,
    #[serde(default)]
    publications: Vec<Replayed>,
}

#[derive(Deserialize)]
struct Replayed {
    offset: u64,
    data: Json,
    #[serde(default)]
    from: Option<String>,
}

fn subscribed(st: &mut State, channel: &str, result: Result<Json, WsError>) {
    let answer = match result {
        Ok(v) => serde_json::from_value::<Subscribed>(v).map_err(|e| WsError::Json(e.to_string())),
        Err(e) => Err(e),
    };
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            if let Some(sub) = st.subs.remove(channel) {
                let _ = sub.tx.send(SubEvent::Error(e));
            }
            return;
        }
    };
    let Some(sub) = st.subs.get_mut(channel) else {
        return;
    };
    sub.resyncing = false;
    let resumed = sub.position.is_some();
    let _ = sub.tx.send(SubEvent::Subscribed {
        offset: answer.offset,
        epoch: answer.epoch.clone(),
        recovered: answer.recovered || !resumed,
    });
    let same_epoch = sub
        .position
        .as_ref()
        .is_some_and(|(_, e)| *e == answer.epoch);
    if !same_epoch {
        sub.position = None;
    }
    for r in answer.publications {
        deliver(
            st,
            Publication {
                channel: channel.to_owned(),
                offset: r.offset,
                epoch: answer.epoch.clone(),
                data: r.data,
                from: r.from,
            },
        );
    }
    if let Some(sub) = st.subs.get_mut(channel) {
        let behind = sub
            .position
            .as_ref()
            .is_none_or(|(o, e)| *e != answer.epoch || *o < answer.offset);
        if behind {
            // Live publications start after the answer's offset.
            sub.position = Some((answer.offset, answer.epoch));
        }
    }
}
