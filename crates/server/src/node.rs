//! The node: channels' policies, history and presence, and the hub, behind
//! the operations every gateway shares (publish, subscribe with resume,
//! unsubscribe), with errors that carry stable codes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::auth::Identity;
use crate::channel::{ChannelName, HistoryStorage, Policy};
use crate::config::Config;
use crate::history::{
    AppendOptions, Appended, History, HistoryError, MemoryHistory, Payload, Publication, Recovery,
    SqliteHistory, SqliteOptions, StreamPosition,
};
use crate::hub::{Delivery, Hub, Signal, SignalKind, Subscriber};
use crate::presence::{MemoryPresence, Presence, PresenceChange};

/// Why an operation was refused. Each has a stable code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The channel's namespace is not configured.
    #[error("unknown channel namespace")]
    UnknownNamespace,
    /// The policy (or the token's allowed channels) forbids it.
    #[error("not allowed by the channel's policy")]
    Forbidden,
    /// The publication is larger than the channel allows.
    #[error("message larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The connection's token has expired (it may refresh it).
    #[error("the token has expired; refresh it")]
    TokenExpired,
    /// The history storage failed.
    #[error(transparent)]
    History(#[from] HistoryError),
}

impl NodeError {
    /// The stable code sent to clients.
    pub fn code(&self) -> &'static str {
        match self {
            NodeError::UnknownNamespace => "unknown_namespace",
            NodeError::Forbidden => "forbidden",
            NodeError::TooLarge { .. } => "message_too_large",
            NodeError::TokenExpired => "token_expired",
            NodeError::History(_) => "storage_unavailable",
        }
    }
}

/// Who publishes.
#[derive(Debug, Clone, Copy)]
pub enum Publisher<'a> {
    /// A backend through the HTTP API: always allowed.
    Api,
    /// A client connection.
    Client {
        /// Its identity, if authenticated.
        identity: Option<&'a Identity>,
        /// Its connection id (to check it is subscribed).
        conn: &'a str,
    },
}

/// Who reads a channel's presence or history.
#[derive(Debug, Clone, Copy)]
pub enum Reader<'a> {
    /// A backend through the HTTP API: always allowed.
    Api,
    /// A client: allowed what it could subscribe to (the channel's policy
    /// and the token's allowed channels).
    Client(Option<&'a Identity>),
}

/// What a subscription with resume gives back.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribed {
    /// Where the channel's stream is now.
    pub position: StreamPosition,
    /// Whether the missed publications could all be recovered (true when
    /// no resume was asked).
    pub recovered: bool,
    /// The publications missed since the given position, in order.
    pub missed: Vec<Publication>,
    /// Whether this made the user appear in the channel's presence.
    pub joined: bool,
}

/// Unsubscribes a half-made subscription when dropped while armed.
struct Undo<'a> {
    node: &'a Node,
    channel: &'a ChannelName,
    identity: Option<&'a Identity>,
    conn: &'a str,
    armed: bool,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.node
                .unsubscribe(self.channel, self.identity, self.conn);
        }
    }
}

/// The server's shared state.
pub struct Node {
    config: Arc<Config>,
    memory: MemoryHistory,
    persisted: Option<SqliteHistory>,
    presence: MemoryPresence,
    /// Shared with the fan-out each append runs once stored.
    hub: Arc<Hub>,
    metrics: Arc<crate::metrics::Metrics>,
    /// When idle in-memory streams were last swept (ms since the epoch).
    swept_ms: AtomicU64,
}

/// How often, at most, idle in-memory streams are swept (on a publish).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl Node {
    /// A node for this configuration; the embedded database is opened under
    /// `server.data_dir` when a namespace persists its history.
    pub fn new(config: Arc<Config>) -> Result<Self, HistoryError> {
        Self::with_metrics(config, Arc::default())
    }

    /// A node counting into `metrics` (shared with the rest of the server).
    pub(crate) fn with_metrics(
        config: Arc<Config>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, HistoryError> {
        let hub: Arc<Hub> = Arc::default();
        let persisted = if config
            .channels
            .values()
            .any(|p| p.history_storage == HistoryStorage::Persisted)
        {
            // Channels with subscribers here are never swept away.
            let subscribed = Arc::clone(&hub);
            let options = SqliteOptions {
                busy: Some(Arc::new(move |c: &ChannelName| {
                    subscribed.subscriber_count(c) > 0
                })),
                ..SqliteOptions::default()
            };
            Some(SqliteHistory::open_with(
                &config.server.data_dir.join("history.db"),
                options,
            )?)
        } else {
            None
        };
        Ok(Node {
            config,
            memory: MemoryHistory::default(),
            persisted,
            presence: MemoryPresence::default(),
            hub,
            metrics,
            swept_ms: AtomicU64::new(crate::history::now_ms()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The hub of local subscribers.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Flushes persisted history to its file (at shutdown).
    pub fn flush(&self) -> Result<(), HistoryError> {
        match &self.persisted {
            Some(db) => db.checkpoint(),
            None => Ok(()),
        }
    }

    /// Whether the history storage works (for `/readyz`): a probe row
    /// written and read back, and no corruption met since the start.
    pub async fn check_storage(&self) -> Result<(), HistoryError> {
        match &self.persisted {
            Some(db) => db.check().await,
            None => Ok(()),
        }
    }

    /// The metrics.
    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// The policy of a channel.
    pub fn policy(&self, channel: &ChannelName) -> Result<&Policy, NodeError> {
        self.config
            .channels
            .get(channel.namespace())
            .ok_or(NodeError::UnknownNamespace)
    }

    fn history(&self, policy: &Policy) -> &dyn History {
        match (policy.history_storage, &self.persisted) {
            (HistoryStorage::Persisted, Some(db)) => db,
            _ => &self.memory,
        }
    }

    /// Refuses a connection whose token has expired: checked on each
    /// command, so authorization does not outlive the token.
    fn unexpired(identity: Option<&Identity>) -> Result<(), NodeError> {
        match identity {
            Some(id) if id.expired() => Err(NodeError::TokenExpired),
            _ => Ok(()),
        }
    }

    /// Whether a token's allowed-channels claim lets it use `channel`
    /// (`chat:*` allows a whole namespace).
    fn token_allows(identity: Option<&Identity>, channel: &ChannelName) -> bool {
        let Some(list) = identity.and_then(|i| i.channels.as_ref()) else {
            return true;
        };
        list.iter().any(|allowed| {
            allowed == channel.as_str()
                || allowed
                    .strip_suffix(":*")
                    .is_some_and(|ns| ns == channel.namespace())
        })
    }

    /// Publishes: checks the policy and size, stores the publication with
    /// its new offset, and hands it to this node's subscribers.
    pub async fn publish(
        &self,
        channel: &ChannelName,
        data: serde_json::Value,
        publisher: Publisher<'_>,
        idempotency_key: Option<String>,
    ) -> Result<(Publication, String), NodeError> {
        let policy = self.policy(channel)?;
        let from = match publisher {
            Publisher::Api => None,
            Publisher::Client { identity, conn } => {
                Self::unexpired(identity)?;
                let user = identity.map(|i| i.user.as_str());
                if !Self::token_allows(identity, channel)
                    || !policy.may_publish(user, self.hub.is_subscribed(channel, conn))
                {
                    return Err(NodeError::Forbidden);
                }
                user.map(str::to_owned)
            }
        };
        // Serialized once: the size check, the database and every
        // protocol's encoding share this text.
        let data = Payload::from_value(&data);
        let size = data.len();
        if size > policy.max_message_size {
            return Err(NodeError::TooLarge {
                max: policy.max_message_size,
            });
        }
        let opts = AppendOptions {
            size: policy.history_size,
            ttl: policy.history_ttl(),
            idempotency_key,
        };
        // The history runs the fan-out right after storing, in the
        // channel's offset order (a subscriber never sees offset n + 1
        // before n), and even if this future is dropped meanwhile (a client
        // that went away mid-request): stored means delivered.
        let (hub, metrics, name) = (
            Arc::clone(&self.hub),
            Arc::clone(&self.metrics),
            channel.clone(),
        );
        let fan_out = Box::new(move |appended: &Appended| {
            if !appended.duplicate {
                let delivery =
                    Delivery::new(name, appended.epoch.clone(), appended.publication.clone());
                metrics.publication();
                hub.publish(&delivery);
            }
        });
        let appended = self
            .history(policy)
            .append_then(channel, data, from, &opts, fan_out)
            .await?;
        self.forget_if_idle(channel, policy);
        self.sweep_memory();
        Ok((appended.publication, appended.epoch))
    }

    /// Forgets a channel's in-memory stream when it keeps nothing and
    /// nobody here is subscribed (see [`MemoryHistory::forget_idle`]).
    fn forget_if_idle(&self, channel: &ChannelName, policy: &Policy) {
        if policy.history_storage == HistoryStorage::Persisted && self.persisted.is_some() {
            return;
        }
        if self.hub.subscriber_count(channel) == 0 {
            self.memory.forget_idle(channel, policy.history_ttl(), || {
                self.hub.subscriber_count(channel) > 0
            });
        }
    }

    /// At most every [`SWEEP_EVERY`], forgets every idle in-memory stream
    /// (those whose last publication or idempotency key expired since).
    fn sweep_memory(&self) {
        let now = crate::history::now_ms();
        let last = self.swept_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < SWEEP_EVERY.as_millis() as u64
            || self
                .swept_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.memory.sweep(
            |c| self.policy(c).ok().and_then(Policy::history_ttl),
            |c| self.hub.subscriber_count(c) > 0,
        );
    }

    /// Channel streams held in memory (those of in-memory history).
    pub fn memory_streams(&self) -> usize {
        self.memory.stream_count()
    }

    /// Subscribes a connection, checking the policy; with `since`, also
    /// returns what it missed. The subscriber is registered before history
    /// is read, so nothing published meanwhile is lost: the gateway must
    /// hold live deliveries until it has sent `missed`, and skip offsets it
    /// already sent (see [`crate::hub::Cursor`]).
    pub async fn subscribe(
        &self,
        channel: &ChannelName,
        identity: Option<&Identity>,
        subscriber: Arc<dyn Subscriber>,
        since: Option<&StreamPosition>,
    ) -> Result<Subscribed, NodeError> {
        self.subscribe_resuming(channel, identity, subscriber, None, since)
            .await
    }

    /// [`Node::subscribe`] with the subscription's cursor: the hub passes
    /// live deliveries through it (see [`crate::hub::Cursor`]), so the
    /// gateway only has to finish it once `missed` is sent.
    pub async fn subscribe_resuming(
        &self,
        channel: &ChannelName,
        identity: Option<&Identity>,
        subscriber: Arc<dyn Subscriber>,
        cursor: Option<Arc<crate::hub::Cursor>>,
        since: Option<&StreamPosition>,
    ) -> Result<Subscribed, NodeError> {
        let policy = self.may_subscribe(channel, identity)?;
        let conn = subscriber.id().to_owned();
        self.hub.subscribe_with(channel, subscriber, cursor);
        // Undone if this fails or is cancelled (the client went away while
        // history was read): no orphan subscription, presence or cursor.
        let mut undo = Undo {
            node: self,
            channel,
            identity,
            conn: &conn,
            armed: true,
        };
        let joined = match (policy.presence, identity) {
            (true, Some(id)) => {
                self.presence
                    .add(channel, &id.user, id.name.as_deref(), &conn)
                    == PresenceChange::Joined
            }
            _ => false,
        };
        if joined && policy.join_leave {
            self.signal(channel, SignalKind::Join, identity);
        }
        let history = self.history(policy);
        let ttl = policy.history_ttl();
        let (recovered, missed, position) = match since {
            None => {
                let (_, position) = history.latest(channel, 0, ttl).await?;
                (true, Vec::new(), position)
            }
            Some(pos) => match history.since(channel, pos, ttl).await? {
                Recovery::Recovered(missed) => {
                    let position = StreamPosition {
                        offset: missed.last().map_or(pos.offset, |p| p.offset),
                        epoch: pos.epoch.clone(),
                    };
                    (true, missed, position)
                }
                Recovery::NotRecovered { current } => (false, Vec::new(), current),
            },
        };
        undo.armed = false;
        Ok(Subscribed {
            position,
            recovered,
            missed,
            joined,
        })
    }

    /// Unsubscribes a connection. Returns whether its user left the
    /// channel's presence (its last connection there).
    pub fn unsubscribe(
        &self,
        channel: &ChannelName,
        identity: Option<&Identity>,
        conn: &str,
    ) -> bool {
        self.hub.unsubscribe(channel, conn);
        let Ok(policy) = self.policy(channel) else {
            return false;
        };
        self.forget_if_idle(channel, policy);
        let left = match (policy.presence, identity) {
            (true, Some(id)) => {
                self.presence.remove(channel, &id.user, conn) == PresenceChange::Left
            }
            _ => false,
        };
        if left && policy.join_leave {
            self.signal(channel, SignalKind::Leave, identity);
        }
        left
    }

    fn signal(&self, channel: &ChannelName, kind: SignalKind, identity: Option<&Identity>) {
        if let Some(id) = identity {
            let signal = Signal::new(channel.clone(), kind, id.user.clone(), id.name.clone());
            self.hub.signal(&signal);
        }
    }

    /// The channel's policy, if `identity` may subscribe to it (the policy
    /// and the token's allowed channels).
    pub fn may_subscribe(
        &self,
        channel: &ChannelName,
        identity: Option<&Identity>,
    ) -> Result<&Policy, NodeError> {
        let policy = self.policy(channel)?;
        Self::unexpired(identity)?;
        let user = identity.map(|i| i.user.as_str());
        if !Self::token_allows(identity, channel) || !policy.may_subscribe(channel, user) {
            return Err(NodeError::Forbidden);
        }
        Ok(policy)
    }

    /// The channel's policy, if `reader` may read the channel (what it
    /// could subscribe to).
    fn readable(&self, channel: &ChannelName, reader: Reader<'_>) -> Result<&Policy, NodeError> {
        match reader {
            Reader::Api => self.policy(channel),
            Reader::Client(identity) => self.may_subscribe(channel, identity),
        }
    }

    /// The users present in a channel.
    pub fn presence(
        &self,
        channel: &ChannelName,
        reader: Reader<'_>,
    ) -> Result<Vec<crate::presence::PresenceEntry>, NodeError> {
        let policy = self.readable(channel, reader)?;
        if !policy.presence {
            return Err(NodeError::Forbidden);
        }
        Ok(self.presence.get(channel))
    }

    /// The last `limit` publications of a channel and its position.
    pub async fn history_of(
        &self,
        channel: &ChannelName,
        limit: usize,
        reader: Reader<'_>,
    ) -> Result<(Vec<Publication>, StreamPosition), NodeError> {
        let policy = self.readable(channel, reader)?;
        Ok(self
            .history(policy)
            .latest(channel, limit, policy.history_ttl())
            .await?)
    }
}
