//! Server-Sent Events at `GET /events?channel=...` (several `channel`
//! parameters allowed). The token comes from `Authorization: Bearer`, a
//! `token` cookie, or a `token` query parameter. Each publication is an
//! event whose `id:` holds the stream's position in every channel, so a
//! reconnecting `EventSource` resumes all of them through `Last-Event-ID`.
//! Comments keep the stream alive; the headers keep proxies from buffering.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::json;
use tokio::sync::mpsc;

use super::{Out, Push, SendQueue};
use crate::app::App;
use crate::auth::Identity;
use crate::channel::ChannelName;
use crate::hub::{CloseReason, Cursor, Delivery, Signal, Subscriber, Wire};
use crate::limits::Permit;
use crate::session::open_stream;
use crate::wire::sse::{self, Positions};

/// Interval of heartbeat comments.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "code": code, "message": message })),
    )
        .into_response()
}

struct SseSubscriber {
    id: String,
    /// When it overflows the stream ends (the client reconnects and
    /// resumes from its last event id).
    queue: SendQueue,
    closing: Mutex<Option<CloseReason>>,
    cursors: HashMap<ChannelName, Arc<Cursor>>,
    positions: Mutex<Positions>,
    app: Arc<App>,
    /// Drops the TCP connection of a client that stopped reading (its
    /// body is then no longer polled).
    control: Option<super::control::ConnectionControl>,
}

impl SseSubscriber {
    /// The event of a publication: the shared data, and an id with this
    /// stream's positions (moved on by this publication).
    fn event(&self, d: &Delivery) -> Bytes {
        let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        Self::event_with(&mut positions, d)
    }

    fn event_with(positions: &mut Positions, d: &Delivery) -> Bytes {
        let data = d.encoded(Wire::Sse, sse::publication_data);
        positions.insert(
            d.channel.clone(),
            crate::history::StreamPosition {
                offset: d.publication.offset,
                epoch: d.epoch.clone(),
            },
        );
        let id = sse::format_id(positions);
        Bytes::from(sse::event(Some(&id), "message", &data))
    }

    fn enqueue(&self, bytes: Bytes, published: Option<Instant>) -> bool {
        let len = bytes.len();
        match self.queue.push(bytes, published) {
            Push::Queued => {
                self.app.node.metrics().message_out(Wire::Sse, len);
                true
            }
            Push::Overflowed => {
                tracing::warn!(conn = %self.id, "slow consumer: ending the stream (queue over limits.max_queued_bytes)");
                self.app.node.metrics().slow_consumer(Wire::Sse);
                if let Some(control) = &self.control {
                    control.abort();
                }
                false
            }
            Push::Dropped => false,
        }
    }

    /// Queues a live publication. Its id is made and the event queued under
    /// the positions' lock, so ids follow the queue's order: an event's id
    /// never names a position whose event is written after it.
    fn push(&self, d: &Delivery) -> bool {
        let mut positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let event = Self::event_with(&mut positions, d);
        let queued = self.enqueue(event, d.sampled().then_some(d.published));
        drop(positions);
        queued
    }
}

impl Subscriber for SseSubscriber {
    fn id(&self) -> &str {
        &self.id
    }

    fn deliver(&self, d: &Arc<Delivery>) -> bool {
        self.push(d)
    }

    fn signal(&self, s: &Arc<Signal>) -> bool {
        let event = s.encoded(Wire::Sse, |s| {
            sse::event(None, s.kind.as_str(), s.body().to_string().as_bytes())
        });
        self.enqueue(event, None)
    }

    fn close(&self, reason: CloseReason) {
        *self.closing.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        self.queue.wake.notify_one();
    }

    fn transport(&self) -> &'static str {
        "http"
    }
}

/// Unsubscribes a stream from everything when its body is dropped (the
/// client went away), and gives its place back.
struct Leave {
    app: Arc<App>,
    identity: Option<Identity>,
    conn: String,
    channels: Vec<ChannelName>,
    _permit: Permit,
}

impl Drop for Leave {
    fn drop(&mut self) {
        for channel in &self.channels {
            self.app
                .node
                .unsubscribe(channel, self.identity.as_ref(), &self.conn);
        }
        self.app.node.hub().disconnect(&self.conn);
    }
}

fn token(req: &Request) -> Option<String> {
    if let Some(auth) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = auth.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_owned());
    }
    if let Some(cookies) = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
    {
        for c in cookies.split(';') {
            if let Some(t) = c.trim().strip_prefix("token=") {
                return Some(t.to_owned());
            }
        }
    }
    query_values(req, "token").into_iter().next()
}

fn query_values(req: &Request, name: &str) -> Vec<String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Opens an event stream.
pub(crate) async fn handler(State(app): State<Arc<App>>, req: Request) -> Response {
    // The rules are the session's (crate::session::open_stream); this only
    // maps a refusal to its HTTP status.
    // Admission first (the rate of attempts per address, the connection
    // caps), so refused attempts count against the rate too; then the
    // rules, which are the session's (crate::session::open_stream): this
    // only maps a refusal to its HTTP status.
    let permit = match app.admit(super::peer_ip(&req)) {
        Ok(p) => p,
        Err(why) => return super::refused(&app, why),
    };
    let names = query_values(&req, "channel");
    let (identity, channels) = match open_stream(&app, token(&req).as_deref(), &names) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let status = match refusal.code {
                "forbidden" => StatusCode::FORBIDDEN,
                code if code.starts_with("token_") => StatusCode::UNAUTHORIZED,
                _ => StatusCode::BAD_REQUEST,
            };
            return error(status, refusal.code, &refusal.message);
        }
    };
    // The header a reconnecting EventSource sends, or, for a stream a
    // client opens again itself (after a refusal an EventSource gives up),
    // the `last_event_id` query parameter.
    let last = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_values(&req, "last_event_id").into_iter().next())
        .map(|id| sse::parse_id(&id, &channels))
        .unwrap_or_default();

    let (queue, rx) = SendQueue::new(app.limits().max_queued_bytes);
    let mut raw = [0u8; 12];
    getrandom::fill(&mut raw).expect("the OS random source is unavailable");
    let conn = format!(
        "sse-{}",
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let sub = Arc::new(SseSubscriber {
        id: conn.clone(),
        queue,
        closing: Mutex::new(None),
        app: Arc::clone(&app),
        control: req
            .extensions()
            .get::<super::control::ConnectionControl>()
            .cloned(),
        cursors: channels
            .iter()
            .map(|c| (c.clone(), Arc::new(Cursor::default())))
            .collect(),
        positions: Mutex::new(Positions::new()),
    });
    let mut leave = Leave {
        app: Arc::clone(&app),
        identity: identity.clone(),
        conn,
        channels: Vec::new(),
        _permit: permit,
    };
    app.node.hub().connect(
        Arc::clone(&sub) as Arc<dyn Subscriber>,
        Wire::Sse,
        identity.as_ref().map(|i| i.user.clone()),
    );
    app.node.metrics().connection_opened(Wire::Sse);
    // Event ids start from where the client resumes, for every channel, so
    // an early event's id never forgets a channel subscribed after it.
    sub.positions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(
            last.iter()
                .filter(|(c, _)| channels.contains(c))
                .map(|(c, p)| (c.clone(), p.clone())),
        );
    let mut first = Vec::new();
    let mut replayed = Vec::with_capacity(channels.len());
    for channel in &channels {
        // Before the await: a client gone meanwhile is unsubscribed.
        leave.channels.push(channel.clone());
        let subscriber: Arc<dyn Subscriber> = Arc::clone(&sub) as Arc<dyn Subscriber>;
        let result = app
            .node
            .subscribe_resuming(
                channel,
                identity.as_ref(),
                subscriber,
                Some(Arc::clone(&sub.cursors[channel])),
                last.get(channel),
            )
            .await;
        let s = match result {
            Ok(s) => s,
            Err(e) => {
                // Checked above: only the storage can fail here.
                tracing::error!(%channel, error = %e, "subscribing an SSE stream failed");
                let mut res = error(StatusCode::SERVICE_UNAVAILABLE, e.code(), &e.to_string());
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return res;
            }
        };
        sub.positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.clone(), s.position.clone());
        if last.contains_key(channel) && !s.recovered {
            first.push(Bytes::from(sse::event(
                None,
                "unrecovered",
                json!({ "channel": channel.as_str(), "offset": s.position.offset, "epoch": s.position.epoch })
                    .to_string()
                    .as_bytes(),
            )));
        }
        for p in s.missed {
            let d = Delivery::new(channel.clone(), s.position.epoch.clone(), p);
            first.push(sub.event(&d));
        }
        replayed.push((channel, s.position.offset));
    }
    // Live publications are released only once every channel's replay is
    // built: a replayed event (written first) never carries in its id the
    // position of a live one queued behind it.
    for (channel, offset) in replayed {
        sub.cursors[channel].finish(offset, |d| {
            sub.push(d);
        });
    }

    let stream = async_stream(first, rx, leave, sub);
    let mut res = Response::new(Body::from_stream(stream));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    res
}

/// The body's state.
struct Body_ {
    first: std::vec::IntoIter<Bytes>,
    rx: mpsc::UnboundedReceiver<Out>,
    heartbeat: tokio::time::Interval,
    _leave: Leave,
    sub: Arc<SseSubscriber>,
    /// Once closing: what is still to be sent before the end.
    tail: Option<std::collections::VecDeque<Bytes>>,
}

impl Body_ {
    fn take(&self, (bytes, published): Out) -> Bytes {
        self.sub.queue.written(bytes.len());
        if let Some(at) = published {
            self.sub.app.node.metrics().delivery_latency(at.elapsed());
        }
        bytes
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(tail) = &mut self.tail {
                return tail.pop_front();
            }
            if self.sub.queue.overflowed() {
                return None;
            }
            if let Some(b) = self.first.next() {
                return Some(b);
            }
            let closing = *self.sub.closing.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reason) = closing {
                let mut tail = std::collections::VecDeque::new();
                while let Ok(out) = self.rx.try_recv() {
                    tail.push_back(self.take(out));
                }
                if reason == CloseReason::Disconnected {
                    tail.push_back(Bytes::from(sse::event(
                        None,
                        "disconnect",
                        br#"{"reason":"disconnected by the server"}"#,
                    )));
                }
                self.tail = Some(tail);
                continue;
            }
            tokio::select! {
                out = self.rx.recv() => return out.map(|o| self.take(o)),
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(sse::HEARTBEAT)),
                () = self.sub.queue.wake.notified() => {}
            }
        }
    }
}

/// The body: the first events, then live ones and heartbeats, until the
/// client goes away (then `leave` unsubscribes) or the server closes it.
fn async_stream(
    first: Vec<Bytes>,
    rx: mpsc::UnboundedReceiver<Out>,
    leave: Leave,
    sub: Arc<SseSubscriber>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    heartbeat.reset();
    let state = Body_ {
        first: first.into_iter(),
        rx,
        heartbeat,
        _leave: leave,
        sub,
        tail: None,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        let next = state.next().await?;
        Some((Ok(next), state))
    })
}
