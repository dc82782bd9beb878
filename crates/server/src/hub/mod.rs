//! The hub: this node's subscribers of each channel, whatever protocol they
//! speak. A publication is handed to every subscriber once as a shared
//! [`Delivery`]; each protocol encodes it once (the first subscriber of that
//! protocol pays, the others share the bytes).
//!
//! - this file: the subscriber index by channel and the fan-out;
//! - [`delivery`]: deliveries and signals and their encodings;
//! - [`cursor`]: resume cursors;
//! - `registry`: open connections by id and user.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::channel::ChannelName;

pub mod cursor;
pub mod delivery;
mod registry;

pub use cursor::{Cursor, Cursors};
pub use delivery::{Delivery, Encoded, Signal, SignalKind, Wire};
use registry::Registered;

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

/// A connection's subscription to a channel: the connection, and the
/// cursor that orders its deliveries while it resumes (if it can resume).
#[derive(Clone)]
struct Subscription {
    sub: Arc<dyn Subscriber>,
    cursor: Option<Arc<Cursor>>,
}

/// The subscribers of one channel, by connection id, with a snapshot of
/// them for the fan-out (made on the first publication after a change, so
/// a publication costs one reference count, not one per subscriber).
#[derive(Default)]
struct Subscribers {
    by_id: HashMap<String, Subscription>,
    snapshot: Option<Arc<[Subscription]>>,
}

/// This node's subscribers by channel, and its connections by id.
#[derive(Default)]
pub struct Hub {
    channels: RwLock<HashMap<ChannelName, Subscribers>>,
    connections: RwLock<HashMap<String, Registered>>,
}

impl Hub {
    /// Hands a join or leave signal to every subscriber of its channel.
    pub fn signal(&self, signal: &Arc<Signal>) -> usize {
        let subs: Vec<Arc<dyn Subscriber>> = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&signal.channel)
            .map(|s| s.by_id.values().map(|e| Arc::clone(&e.sub)).collect())
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
        subs.snapshot = None;
        subs.by_id
            .insert(
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
        let removed = subs.by_id.remove(conn).is_some();
        subs.snapshot = None;
        if subs.by_id.is_empty() {
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
            .is_some_and(|s| s.by_id.contains_key(conn))
    }

    /// Hands a delivery to every subscriber of its channel. The lock is
    /// released before anything is delivered. Returns how many took it.
    pub fn publish(&self, delivery: &Arc<Delivery>) -> usize {
        let Some(subs) = self.snapshot(&delivery.channel) else {
            return 0;
        };
        subs.iter()
            .filter(|s| match &s.cursor {
                None => s.sub.deliver(delivery),
                // Held (resuming) or already sent: taken care of.
                Some(cursor) => !cursor.pass(delivery) || s.sub.deliver(delivery),
            })
            .count()
    }

    /// The channel's subscribers as the fan-out reads them: the snapshot,
    /// made again (under the write lock) after a change.
    fn snapshot(&self, channel: &ChannelName) -> Option<Arc<[Subscription]>> {
        {
            let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
            match channels.get(channel) {
                None => return None,
                Some(Subscribers {
                    snapshot: Some(s), ..
                }) => return Some(Arc::clone(s)),
                Some(_) => {}
            }
        }
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let subs = channels.get_mut(channel)?;
        let snapshot = subs
            .snapshot
            .get_or_insert_with(|| subs.by_id.values().cloned().collect());
        Some(Arc::clone(snapshot))
    }

    /// Number of subscribers of a channel on this node.
    pub fn subscriber_count(&self, channel: &ChannelName) -> usize {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(channel)
            .map_or(0, |s| s.by_id.len())
    }

    /// Every channel with subscribers on this node, with their count.
    pub fn channels(&self) -> Vec<(ChannelName, usize)> {
        let mut all: Vec<_> = self
            .channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(c, s)| (c.clone(), s.by_id.len()))
            .collect();
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Publication;
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
                data: serde_json::json!("hi").into(),
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
