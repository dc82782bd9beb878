//! `switchboard-redis`: a Redis adapter for the `switchboard` Socket.IO
//! library, wire-compatible with Node's official packages, so that Rust and
//! Node socket.io servers form one cluster (migrate one node at a time).
//!
//! Three modes, each matching a Node package byte for byte:
//!
//! | mode | Node package | Redis | recovery across nodes |
//! |---|---|---|---|
//! | [`RedisAdapter::classic`] | `@socket.io/redis-adapter` 8.3 `createAdapter` | PUBLISH / PSUBSCRIBE | no |
//! | [`RedisAdapter::sharded`] | `@socket.io/redis-adapter` 8.3 `createShardedAdapter` | SPUBLISH / SSUBSCRIBE (Redis 7, Redis Cluster, Valkey) | no |
//! | [`RedisAdapter::streams`] | `@socket.io/redis-streams-adapter` 0.3 | XADD / XREAD, pub/sub for requests | yes |
//!
//! ```rust,ignore
//! let redis = switchboard_redis::RedisAdapter::streams()
//!     .connect("redis://127.0.0.1:6379")
//!     .await?;
//! let io = switchboard::SocketIo::builder().adapter(redis.clone()).build();
//! // Every cluster operation of the library now spans the nodes:
//! io.to("room").emit("msg", &"hi").await?;
//! let everyone = io.broadcast().fetch_sockets().await?;
//! io.server_side_emit("relay", &("payload",)).await?;
//! ```
//!
//! Modules: `codec` (MessagePack and JSON as the Node packages write
//! them), `packet` (packets, options, sockets and sessions in their Node
//! shapes), `driver` (the Redis connections, reconnection and metrics),
//! `requests` (requests waiting for other nodes), `classic` and `cluster`
//! (the protocols).

mod classic;
mod cluster;
mod codec;
mod conn;
mod driver;
#[doc(hidden)]
pub mod fuzzing;
mod link;
mod packet;
mod requests;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchboard::adapter::{Adapter, AdapterError, AdapterFactory, LocalNamespace};

pub use driver::Metrics;
pub use link::{MessageHandler, RedisLink};
/// The Redis client the adapter is built on (commands and scripts for
/// [`RedisLink`]).
pub use redis;

/// How a sharded adapter subscribes (the Node option `subscriptionMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubscriptionMode {
    /// Only the namespace's channel and this node's own channel.
    Static,
    /// Also one channel per public room (not a socket id) this node has
    /// sockets in; a broadcast to one such room goes to its channel only.
    #[default]
    Dynamic,
    /// One channel per room, socket-id rooms included.
    DynamicPrivate,
}

/// Which Node package the adapter speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `@socket.io/redis-adapter` `createAdapter`.
    Classic,
    /// `@socket.io/redis-adapter` `createShardedAdapter`.
    Sharded(SubscriptionMode),
    /// `@socket.io/redis-streams-adapter`.
    Streams {
        /// Number of streams (`streamCount`, 1): namespaces are spread over
        /// them by the package's hash of their name.
        stream_count: usize,
        /// Requests over sharded pub/sub (`useShardedPubSub`).
        sharded_pubsub: bool,
    },
}

/// The adapter's settings, with the Node packages' defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The mode.
    pub mode: Mode,
    /// Channel prefix (`key` in classic mode, `channelPrefix` otherwise):
    /// `socket.io`.
    pub prefix: String,
    /// How long a request waits for the other nodes (`requestsTimeout`):
    /// 5 s.
    pub request_timeout: Duration,
    /// Classic mode: answer requests on the requester's own channel
    /// (`publishOnSpecificResponseChannel`, false).
    pub publish_on_specific_response_channel: bool,
    /// Streams mode: the stream's name (`streamName`, `socket.io`).
    pub stream_name: Option<String>,
    /// Streams mode: the stream's approximate length bound (`maxLen`,
    /// 10,000).
    pub max_len: usize,
    /// Streams mode: key prefix of persisted sessions (`sessionKeyPrefix`,
    /// `sio:session:`).
    pub session_prefix: String,
}

impl Config {
    fn new(mode: Mode) -> Self {
        Config {
            mode,
            prefix: "socket.io".into(),
            request_timeout: Duration::from_secs(5),
            publish_on_specific_response_channel: false,
            stream_name: None,
            max_len: 10_000,
            session_prefix: "sio:session:".into(),
        }
    }

    pub(crate) fn stream_name(&self) -> String {
        self.stream_name
            .clone()
            .unwrap_or_else(|| "socket.io".into())
    }
}

/// Why the adapter could not talk to Redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// The Redis client failed (connection refused, bad URL, protocol).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis is unreachable (or the publisher's queue is full).
    #[error("redis is unreachable")]
    Unavailable,
    /// Redis answered a command with an error.
    #[error("redis command failed: {0}")]
    Command(String),
}

pub(crate) fn unavailable(e: &RedisError) -> AdapterError {
    match e {
        RedisError::Command(m) => AdapterError::Transport(m.clone()),
        other => AdapterError::Unavailable(other.to_string()),
    }
}

/// The number of servers: subscribers of one channel (`PUBSUB NUMSUB` or
/// `SHARDNUMSUB`), this one included.
pub(crate) async fn numsub(
    driver: &driver::Driver,
    sub: &str,
    channel: &str,
) -> Result<usize, AdapterError> {
    driver.check_up()?;
    let answer: std::collections::HashMap<String, i64> = driver
        .query(redis::cmd("PUBSUB").arg(sub).arg(channel))
        .await
        .map_err(|e| unavailable(&e))?;
    let n = answer.get(channel).copied().unwrap_or(0);
    Ok(usize::try_from(n).unwrap_or(0).max(1))
}

/// Builds a Redis adapter: choose the mode, adjust the options, connect.
#[derive(Debug, Clone)]
pub struct RedisAdapter {
    config: Config,
}

impl RedisAdapter {
    /// The classic mode (`@socket.io/redis-adapter` `createAdapter`).
    pub fn classic() -> Self {
        RedisAdapter {
            config: Config::new(Mode::Classic),
        }
    }

    /// The sharded mode (`createShardedAdapter`), `dynamic` subscriptions.
    pub fn sharded() -> Self {
        RedisAdapter {
            config: Config::new(Mode::Sharded(SubscriptionMode::Dynamic)),
        }
    }

    /// The streams mode (`@socket.io/redis-streams-adapter`), which also
    /// stores connection state recovery's packets and sessions in Redis.
    pub fn streams() -> Self {
        RedisAdapter {
            config: Config::new(Mode::Streams {
                stream_count: 1,
                sharded_pubsub: false,
            }),
        }
    }

    /// All settings at once.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The channel prefix (classic `key`, otherwise `channelPrefix`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// How long requests to other nodes wait.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Sharded mode: how rooms are subscribed.
    pub fn subscription_mode(mut self, mode: SubscriptionMode) -> Self {
        if let Mode::Sharded(m) = &mut self.config.mode {
            *m = mode;
        }
        self
    }

    /// Classic mode: answers on the requester's own channel.
    pub fn publish_on_specific_response_channel(mut self, on: bool) -> Self {
        self.config.publish_on_specific_response_channel = on;
        self
    }

    /// Streams mode: the stream's name.
    pub fn stream_name(mut self, name: impl Into<String>) -> Self {
        self.config.stream_name = Some(name.into());
        self
    }

    /// Streams mode: the number of streams.
    pub fn stream_count(mut self, count: usize) -> Self {
        if let Mode::Streams { stream_count, .. } = &mut self.config.mode {
            *stream_count = count.max(1);
        }
        self
    }

    /// Streams mode: requests over sharded pub/sub.
    pub fn sharded_pubsub(mut self, on: bool) -> Self {
        if let Mode::Streams { sharded_pubsub, .. } = &mut self.config.mode {
            *sharded_pubsub = on;
        }
        self
    }

    /// Streams mode: the stream's approximate length bound.
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.config.max_len = max_len;
        self
    }

    /// Streams mode: the key prefix of persisted sessions.
    pub fn session_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.session_prefix = prefix.into();
        self
    }

    /// Connects to Redis (`redis://host:port/db`); the factory goes to
    /// [`switchboard::SocketIoBuilder::adapter`]. Must run inside a Tokio
    /// runtime (the adapter's tasks live there).
    pub async fn connect(self, url: &str) -> Result<RedisAdapterFactory, RedisError> {
        self.start(conn::Target::Single(url.to_owned())).await
    }

    /// Connects to a Redis Cluster through some of its nodes
    /// (`redis://host:port` each): commands and sharded subscriptions are
    /// routed by slot, pub/sub and counts span every node. Sharded mode is
    /// the one made for clusters (as in Node); classic and streams work
    /// too.
    pub async fn connect_cluster<S: AsRef<str>>(
        self,
        nodes: &[S],
    ) -> Result<RedisAdapterFactory, RedisError> {
        let nodes = nodes.iter().map(|n| n.as_ref().to_owned()).collect();
        self.start(conn::Target::Cluster(nodes)).await
    }

    /// Uses connections already made (shared with the application's own
    /// use of Redis).
    pub fn with_link(self, link: &RedisLink) -> RedisAdapterFactory {
        self.on(Arc::clone(&link.driver))
    }

    async fn start(self, target: conn::Target) -> Result<RedisAdapterFactory, RedisError> {
        Ok(self.on(driver::Driver::connect(target).await?))
    }

    fn on(self, driver: Arc<driver::Driver>) -> RedisAdapterFactory {
        RedisAdapterFactory {
            inner: Arc::new(Inner {
                driver,
                config: Arc::new(self.config),
                adapters: std::sync::Mutex::new(Vec::new()),
            }),
        }
    }
}

struct Inner {
    driver: Arc<driver::Driver>,
    config: Arc<Config>,
    adapters: std::sync::Mutex<Vec<std::sync::Weak<dyn Adapter>>>,
}

/// Creates a namespace's adapter on the shared Redis connections. Cheap to
/// clone; every clone shares the connections.
#[derive(Clone)]
pub struct RedisAdapterFactory {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisAdapterFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAdapterFactory")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// A copy of the adapter's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Times the connection to Redis was lost.
    pub disconnects: u64,
    /// Times it came back (subscriptions re-established).
    pub reconnects: u64,
    /// Commands sent (round trips, pipelined or not).
    pub commands: u64,
    /// Commands that failed.
    pub command_errors: u64,
    /// Messages not published (Redis unreachable, queue full).
    pub dropped: u64,
    /// Requests to other nodes that timed out.
    pub timeouts: u64,
    /// Messages received.
    pub received: u64,
    /// Messages received that could not be decoded.
    pub malformed: u64,
}

impl RedisAdapterFactory {
    /// The settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Whether Redis is reachable, as far as the adapter knows.
    pub fn is_connected(&self) -> bool {
        self.inner.driver.is_up()
    }

    /// The adapter's counters (reconnections, errors, traffic).
    pub fn metrics(&self) -> MetricsSnapshot {
        snapshot(&self.inner.driver.metrics)
    }

    /// Waits until every adapter created so far is listening (its
    /// subscriptions confirmed, its stream being read).
    pub async fn ready(&self) -> Result<(), AdapterError> {
        let adapters: Vec<Arc<dyn Adapter>> = self
            .inner
            .adapters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect();
        for a in adapters {
            a.ready().await?;
        }
        Ok(())
    }
}

pub(crate) fn snapshot(m: &Metrics) -> MetricsSnapshot {
    MetricsSnapshot {
        disconnects: m.disconnects.load(Ordering::Relaxed),
        reconnects: m.reconnects.load(Ordering::Relaxed),
        commands: m.commands.load(Ordering::Relaxed),
        command_errors: m.command_errors.load(Ordering::Relaxed),
        dropped: m.dropped.load(Ordering::Relaxed),
        timeouts: m.timeouts.load(Ordering::Relaxed),
        received: m.received.load(Ordering::Relaxed),
        malformed: m.malformed.load(Ordering::Relaxed),
    }
}

impl AdapterFactory for RedisAdapterFactory {
    fn create(&self, nsp: LocalNamespace) -> Arc<dyn Adapter> {
        let driver = Arc::clone(&self.inner.driver);
        let config = Arc::clone(&self.inner.config);
        let adapter: Arc<dyn Adapter> = match config.mode {
            Mode::Classic => classic::Classic::new(nsp, driver, config),
            Mode::Sharded(_) | Mode::Streams { .. } => cluster::Cluster::new(nsp, driver, config),
        };
        let mut adapters = self
            .inner
            .adapters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        adapters.retain(|a| a.strong_count() > 0);
        adapters.push(Arc::downgrade(&adapter));
        adapter
    }
}
