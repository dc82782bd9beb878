//! The hub: this node's subscribers of each channel, whatever protocol they
//! speak. A publication is handed to every subscriber once as a shared
//! [`Delivery`]; each protocol encodes it once (the first subscriber of that
//! protocol pays, the others share the bytes).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use crate::channel::ChannelName;
use crate::history::Publication;

/// A publication on its way to subscribers.
#[derive(Debug)]
pub struct Delivery {
    /// The channel.
    pub channel: ChannelName,
    /// The channel's epoch.
    pub epoch: String,
    /// The publication.
    pub publication: Publication,
    /// When it was handed to the hub (for the delivery latency metric).
    pub published: std::time::Instant,
    /// Encodings, one slot per wire protocol, filled on first use.
    encodings: [OnceLock<Encoded>; 3],
}

/// The wire protocols a delivery can be encoded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Socket.IO event frames.
    SocketIo = 0,
    /// The plain WebSocket JSON protocol.
    Json = 1,
    /// Server-Sent Events.
    Sse = 2,
}

/// Encoded bytes shared by every subscriber of one protocol (a clone is a
/// reference count, no copy and no allocation).
pub type Encoded = bytes::Bytes;

impl Delivery {
    /// A delivery of `publication` in `channel`.
    pub fn new(channel: ChannelName, epoch: String, publication: Publication) -> Arc<Self> {
        Arc::new(Delivery {
            channel,
            epoch,
            publication,
            published: std::time::Instant::now(),
            encodings: Default::default(),
        })
    }

    /// The publication as every protocol carries it:
    /// `{channel, offset, epoch, data, from}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({
            "channel": self.channel.as_str(),
            "offset": self.publication.offset,
            "epoch": self.epoch,
            "data": self.publication.data,
            "from": self.publication.from,
        })
    }

    /// The encoding for `wire`, made by `encode` the first time only.
    pub fn encoded(&self, wire: Wire, encode: impl FnOnce(&Delivery) -> Vec<u8>) -> Encoded {
        self.encodings[wire as usize]
            .get_or_init(|| bytes::Bytes::from(encode(self)))
            .clone()
    }
}

/// A presence signal: a user's first connection joined a channel, or its
/// last one left. Not stored in history: delivered live, at most once.
#[derive(Debug)]
pub struct Signal {
    /// The channel.
    pub channel: ChannelName,
    /// Join or leave.
    pub kind: SignalKind,
    /// The user.
    pub user: String,
    /// The user's display name.
    pub name: Option<String>,
    encodings: [OnceLock<Encoded>; 3],
}

/// What a [`Signal`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// The user's first connection subscribed.
    Join,
    /// The user's last connection left.
    Leave,
}

impl SignalKind {
    /// `join` or `leave`: the event name on every protocol.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Join => "join",
            SignalKind::Leave => "leave",
        }
    }
}

impl Signal {
    /// A signal.
    pub fn new(
        channel: ChannelName,
        kind: SignalKind,
        user: String,
        name: Option<String>,
    ) -> Arc<Self> {
        Arc::new(Signal {
            channel,
            kind,
            user,
            name,
            encodings: Default::default(),
        })
    }

    /// The JSON body shared by every protocol: `{channel, user, name}`.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "channel": self.channel.as_str(), "user": self.user, "name": self.name })
    }

    /// The encoding for `wire`, made by `encode` the first time only.
    pub fn encoded(&self, wire: Wire, encode: impl FnOnce(&Signal) -> Vec<u8>) -> Encoded {
        self.encodings[wire as usize]
            .get_or_init(|| bytes::Bytes::from(encode(self)))
            .clone()
    }
}

/// Why the server closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The server is shutting down: the client should reconnect (elsewhere).
    Shutdown,
    /// A backend disconnected the user through the HTTP API: the client
    /// should not reconnect on its own.
    Disconnected,
}

/// One connection subscribed to channels (a Socket.IO socket, a plain
/// WebSocket, an SSE stream).
pub trait Subscriber: Send + Sync + 'static {
    /// Unique id of the connection.
    fn id(&self) -> &str;
    /// Queues a delivery for the client; `false` if the client is gone or
    /// could not take it (its own slow-consumer policy applies).
    fn deliver(&self, delivery: &Arc<Delivery>) -> bool;
    /// Queues a join or leave signal; `false` if the client could not take it.
    fn signal(&self, signal: &Arc<Signal>) -> bool;
    /// Asks the connection to close (after what is already queued).
    fn close(&self, reason: CloseReason);
    /// The transport, for metrics (`websocket`, `polling`, `http`).
    fn transport(&self) -> &'static str;
}

/// A connection in the hub's registry.
struct Registered {
    sub: Arc<dyn Subscriber>,
    wire: Wire,
    user: Option<String>,
}

/// A connection's subscription to a channel: the connection, and the
/// cursor that orders its deliveries while it resumes (if it can resume).
#[derive(Clone)]
struct Subscription {
    sub: Arc<dyn Subscriber>,
    cursor: Option<Arc<Cursor>>,
}

/// The subscribers of one channel, by connection id.
type Subscribers = HashMap<String, Subscription>;

/// This node's subscribers by channel, and its connections by id.
#[derive(Default)]
pub struct Hub {
    channels: RwLock<HashMap<ChannelName, Subscribers>>,
    connections: RwLock<HashMap<String, Registered>>,
}

impl Hub {
    /// Registers an open connection (authenticated as `user`, if any), so
    /// that it can be closed by user or at shutdown.
    pub fn connect(&self, sub: Arc<dyn Subscriber>, wire: Wire, user: Option<String>) {
        let id = sub.id().to_owned();
        self.connections
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Registered { sub, wire, user });
    }

    /// Records that a registered connection authenticated as `user`.
    pub fn set_user(&self, conn: &str, user: &str) {
        if let Some(r) = self
            .connections
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(conn)
        {
            r.user = Some(user.to_owned());
        }
    }

    /// Forgets a closed connection.
    pub fn disconnect(&self, conn: &str) {
        self.connections
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(conn);
    }

    /// Asks every connection of `user` (or every connection, with `None`)
    /// to close; returns how many were asked. No lock is held while they
    /// are told.
    pub fn close_connections(&self, user: Option<&str>, reason: CloseReason) -> usize {
        let targets: Vec<Arc<dyn Subscriber>> = self
            .connections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| user.is_none() || r.user.as_deref() == user)
            .map(|r| Arc::clone(&r.sub))
            .collect();
        for t in &targets {
            t.close(reason);
        }
        targets.len()
    }

    /// Open connections by protocol: `[socket.io, ws, sse]`.
    pub fn connection_counts(&self) -> [usize; 3] {
        let mut counts = [0; 3];
        for r in self
            .connections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            counts[r.wire as usize] += 1;
        }
        counts
    }

    /// Open connections by protocol and transport.
    pub fn connections_by_transport(&self) -> Vec<(Wire, &'static str, usize)> {
        let mut counts: Vec<(Wire, &'static str, usize)> = Vec::new();
        for r in self
            .connections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            let t = r.sub.transport();
            match counts.iter_mut().find(|c| c.0 == r.wire && c.1 == t) {
                Some(c) => c.2 += 1,
                None => counts.push((r.wire, t, 1)),
            }
        }
        counts
    }

    /// Hands a join or leave signal to every subscriber of its channel.
    pub fn signal(&self, signal: &Arc<Signal>) -> usize {
        let subs: Vec<Arc<dyn Subscriber>> = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&signal.channel)
            .map(|s| s.values().map(|e| Arc::clone(&e.sub)).collect())
            .unwrap_or_default();
        subs.iter().filter(|s| s.signal(signal)).count()
    }

    /// Subscribes a connection; `false` if it already was.
    pub fn subscribe(&self, channel: &ChannelName, subscriber: Arc<dyn Subscriber>) -> bool {
        self.subscribe_with(channel, subscriber, None)
    }

    /// Subscribes a connection whose live deliveries pass through `cursor`
    /// (held while it resumes, never repeated): the hub applies it, so a
    /// delivery costs no lookup in the connection's own state.
    pub fn subscribe_with(
        &self,
        channel: &ChannelName,
        subscriber: Arc<dyn Subscriber>,
        cursor: Option<Arc<Cursor>>,
    ) -> bool {
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let subs = channels.entry(channel.clone()).or_default();
        let id = subscriber.id().to_owned();
        subs.insert(
            id,
            Subscription {
                sub: subscriber,
                cursor,
            },
        )
        .is_none()
    }

    /// Unsubscribes a connection; `false` if it was not subscribed.
    pub fn unsubscribe(&self, channel: &ChannelName, conn: &str) -> bool {
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let Some(subs) = channels.get_mut(channel) else {
            return false;
        };
        let removed = subs.remove(conn).is_some();
        if subs.is_empty() {
            channels.remove(channel);
        }
        removed
    }

    /// Whether a connection is subscribed to a channel.
    pub fn is_subscribed(&self, channel: &ChannelName, conn: &str) -> bool {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .is_some_and(|s| s.contains_key(conn))
    }

    /// Hands a delivery to every subscriber of its channel. The lock is
    /// released before anything is delivered. Returns how many took it.
    pub fn publish(&self, delivery: &Arc<Delivery>) -> usize {
        let subs: Vec<Subscription> = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&delivery.channel)
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default();
        subs.iter()
            .filter(|s| match &s.cursor {
                None => s.sub.deliver(delivery),
                // Held (resuming) or already sent: taken care of.
                Some(cursor) => cursor.on_live(delivery).is_none_or(|d| s.sub.deliver(&d)),
            })
            .count()
    }

    /// Number of subscribers of a channel on this node.
    pub fn subscriber_count(&self, channel: &ChannelName) -> usize {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .map_or(0, HashMap::len)
    }

    /// Every channel with subscribers on this node, with their count.
    pub fn channels(&self) -> Vec<(ChannelName, usize)> {
        let mut all: Vec<_> = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(c, s)| (c.clone(), s.len()))
            .collect();
        all.sort();
        all
    }
}

/// Orders one subscription's deliveries while it resumes: live deliveries
/// that arrive while the missed ones are being read are held, then sent
/// after them, and nothing is sent twice.
pub struct Cursor {
    state: std::sync::Mutex<CursorState>,
}

enum CursorState {
    Recovering(Vec<Arc<Delivery>>),
    Live(u64),
}

impl Default for Cursor {
    fn default() -> Self {
        Cursor {
            state: std::sync::Mutex::new(CursorState::Recovering(Vec::new())),
        }
    }
}

impl Cursor {
    /// A live delivery: returned when it is to be sent now; held (during
    /// recovery) or dropped (already sent) otherwise.
    pub fn on_live(&self, delivery: &Arc<Delivery>) -> Option<Arc<Delivery>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *state {
            CursorState::Recovering(held) => {
                held.push(Arc::clone(delivery));
                None
            }
            CursorState::Live(last) if delivery.publication.offset > *last => {
                *last = delivery.publication.offset;
                Some(Arc::clone(delivery))
            }
            CursorState::Live(_) => None,
        }
    }

    /// Ends recovery once everything up to `last_sent` was sent: hands the
    /// held deliveries still to send, in order, to `send`, and goes live.
    /// `send` runs under the cursor's lock, so a live delivery arriving
    /// meanwhile waits and is sent after them: never before, never twice.
    pub fn finish(&self, last_sent: u64, mut send: impl FnMut(&Arc<Delivery>)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let held = match std::mem::replace(&mut *state, CursorState::Live(last_sent)) {
            CursorState::Recovering(held) => held,
            CursorState::Live(last) => {
                *state = CursorState::Live(last.max(last_sent));
                return;
            }
        };
        let mut out: Vec<_> = held
            .into_iter()
            .filter(|d| d.publication.offset > last_sent)
            .collect();
        out.sort_by_key(|d| d.publication.offset);
        out.dedup_by_key(|d| d.publication.offset);
        for d in &out {
            send(d);
        }
        if let Some(last) = out.last() {
            *state = CursorState::Live(last.publication.offset);
        }
    }
}

/// The cursors of one connection, one per subscribed channel.
#[derive(Default)]
pub struct Cursors(std::sync::Mutex<HashMap<ChannelName, Arc<Cursor>>>);

impl Cursors {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ChannelName, Arc<Cursor>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new cursor (recovering) for a channel being subscribed.
    pub fn start(&self, channel: &ChannelName) -> Arc<Cursor> {
        let cursor = Arc::new(Cursor::default());
        self.map().insert(channel.clone(), Arc::clone(&cursor));
        cursor
    }

    /// How many channels.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Whether a channel has a cursor (is subscribed or subscribing).
    pub fn contains(&self, channel: &ChannelName) -> bool {
        self.map().contains_key(channel)
    }

    /// Forgets a channel.
    pub fn remove(&self, channel: &ChannelName) {
        self.map().remove(channel);
    }

    /// The cursor of a channel, if subscribed.
    pub fn get(&self, channel: &ChannelName) -> Option<Arc<Cursor>> {
        self.map().get(channel).cloned()
    }

    /// The channels.
    pub fn channels(&self) -> Vec<ChannelName> {
        self.map().keys().cloned().collect()
    }

    /// Forgets every channel and returns them.
    pub fn drain(&self) -> Vec<ChannelName> {
        self.map().drain().map(|(c, _)| c).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Probe {
        id: String,
        wire: Wire,
        got: Mutex<Vec<Encoded>>,
        closed: AtomicUsize,
    }

    impl Subscriber for Probe {
        fn id(&self) -> &str {
            &self.id
        }
        fn deliver(&self, d: &Arc<Delivery>) -> bool {
            let bytes = d.encoded(self.wire, |d| {
                ENCODES.fetch_add(1, Ordering::SeqCst);
                format!(
                    "{}:{}:{}",
                    d.channel, d.publication.offset, d.publication.data
                )
                .into_bytes()
            });
            self.got.lock().unwrap().push(bytes);
            true
        }
        fn signal(&self, s: &Arc<Signal>) -> bool {
            let bytes = s.encoded(self.wire, |s| s.body().to_string().into_bytes());
            self.got.lock().unwrap().push(bytes);
            true
        }
        fn close(&self, _: CloseReason) {
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
        fn transport(&self) -> &'static str {
            "test"
        }
    }

    static ENCODES: AtomicUsize = AtomicUsize::new(0);

    fn probe(id: &str, wire: Wire) -> Arc<Probe> {
        Arc::new(Probe {
            id: id.into(),
            wire,
            got: Mutex::new(Vec::new()),
            closed: AtomicUsize::new(0),
        })
    }

    fn delivery(offset: u64) -> Arc<Delivery> {
        Delivery::new(
            ChannelName::parse("chat:lobby").unwrap(),
            "e".into(),
            Publication {
                offset,
                data: serde_json::json!(offset),
                from: None,
                time_ms: 0,
            },
        )
    }

    #[test]
    fn a_cursor_holds_live_deliveries_during_recovery_and_never_repeats() {
        let c = Cursor::default();
        // Recovery will send offsets up to 5; 4, 5, 6, 7 arrive live meanwhile.
        for o in [4, 5, 6, 7] {
            assert!(c.on_live(&delivery(o)).is_none());
        }
        let mut held = Vec::new();
        c.finish(5, |d| held.push(d.publication.offset));
        assert_eq!(held, vec![6, 7]);
        assert!(c.on_live(&delivery(7)).is_none(), "already sent");
        assert_eq!(
            c.on_live(&delivery(8)).map(|d| d.publication.offset),
            Some(8)
        );
    }

    #[test]
    fn one_encoding_per_protocol_shared_by_all_subscribers() {
        let hub = Hub::default();
        let ch = ChannelName::parse("chat:lobby").unwrap();
        let a = probe("a", Wire::SocketIo);
        let b = probe("b", Wire::SocketIo);
        let c = probe("c", Wire::Sse);
        for p in [&a, &b, &c] {
            assert!(hub.subscribe(&ch, p.clone()));
        }
        assert!(!hub.subscribe(&ch, a.clone()), "already subscribed");
        let before = ENCODES.load(Ordering::SeqCst);
        let d = Delivery::new(
            ch.clone(),
            "e1".into(),
            Publication {
                offset: 1,
                data: serde_json::json!("hi"),
                from: None,
                time_ms: 0,
            },
        );
        assert_eq!(hub.publish(&d), 3);
        assert_eq!(
            ENCODES.load(Ordering::SeqCst) - before,
            2,
            "one per protocol"
        );
        let (ga, gb) = (a.got.lock().unwrap(), b.got.lock().unwrap());
        assert_eq!(ga[0].as_ptr(), gb[0].as_ptr(), "the same bytes, not a copy");
        drop((ga, gb));
        assert!(hub.unsubscribe(&ch, "a"));
        assert!(!hub.unsubscribe(&ch, "a"));
        assert_eq!(hub.subscriber_count(&ch), 2);
        assert_eq!(hub.channels(), vec![(ch.clone(), 2)]);
        hub.unsubscribe(&ch, "b");
        hub.unsubscribe(&ch, "c");
        assert!(hub.channels().is_empty());
    }

    #[test]
    fn connections_close_by_user_or_all_and_signals_reach_subscribers() {
        let hub = Hub::default();
        let ch = ChannelName::parse("chat:lobby").unwrap();
        let (a, b, c) = (
            probe("a", Wire::Json),
            probe("b", Wire::Sse),
            probe("c", Wire::SocketIo),
        );
        hub.connect(a.clone(), Wire::Json, None);
        hub.set_user("a", "ada");
        hub.connect(b.clone(), Wire::Sse, Some("ada".into()));
        hub.connect(c.clone(), Wire::SocketIo, Some("bob".into()));
        assert_eq!(hub.connection_counts(), [1, 1, 1]);
        assert_eq!(
            hub.close_connections(Some("ada"), CloseReason::Disconnected),
            2
        );
        assert_eq!(
            [&a, &b, &c].map(|p| p.closed.load(Ordering::SeqCst)),
            [1, 1, 0]
        );
        hub.disconnect("a");
        assert_eq!(hub.connection_counts(), [1, 0, 1]);
        assert_eq!(hub.close_connections(None, CloseReason::Shutdown), 2);
        hub.subscribe(&ch, c.clone());
        let s = Signal::new(ch.clone(), SignalKind::Join, "ada".into(), None);
        assert_eq!(hub.signal(&s), 1);
        assert_eq!(c.got.lock().unwrap().len(), 1);
    }
}
