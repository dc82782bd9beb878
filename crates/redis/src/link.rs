//! [`RedisLink`]: the adapter's Redis connections, for an application that
//! keeps its own data in the same Redis (the `switchboard` server keeps
//! channel offsets, history and presence there) and wants the same
//! behaviour when Redis goes away: commands that fail at once, an ordered
//! publisher with a bounded queue, subscriptions re-established after a
//! reconnection, metrics.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::conn::Topic;
use crate::driver::{Driver, Outgoing};
use crate::{MetricsSnapshot, RedisError};

/// Shared Redis connections. Cheap to clone.
#[derive(Clone)]
pub struct RedisLink {
    pub(crate) driver: Arc<Driver>,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink").finish()
    }
}

/// What a subscription hears: `(channel, payload)`. Runs on the
/// dispatcher task: it must not block.
pub type MessageHandler = Arc<dyn Fn(&str, Bytes) + Send + Sync>;

impl RedisLink {
    /// Connects to one Redis server (`redis://host:port/db`).
    pub async fn connect(url: &str) -> Result<Self, RedisError> {
        Ok(RedisLink {
            driver: Driver::connect(crate::conn::Target::Single(url.to_owned())).await?,
        })
    }

    /// Connects to a Redis Cluster through some of its nodes.
    pub async fn connect_cluster<S: AsRef<str>>(nodes: &[S]) -> Result<Self, RedisError> {
        let nodes = nodes.iter().map(|n| n.as_ref().to_owned()).collect();
        Ok(RedisLink {
            driver: Driver::connect(crate::conn::Target::Cluster(nodes)).await?,
        })
    }

    /// Runs a command now (one round trip). While Redis is unreachable it
    /// fails at once (the connection is refused; a Redis that stalls is
    /// given the response timeout, 5 s). It does not depend on the
    /// subscriber connection being up.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, RedisError> {
        self.driver.query(cmd).await
    }

    /// Runs a pipeline now (its commands must share a slot on a cluster).
    pub async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, RedisError> {
        self.driver.query_pipe(pipe).await
    }

    /// Runs a Lua script (EVALSHA, loading it when Redis does not know it).
    pub async fn script<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        self.driver
            .metrics
            .commands
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut con = self.driver.connection();
        invocation.invoke_async(&mut con).await.map_err(|e| {
            self.driver.failed(&e);
            RedisError::from(e)
        })
    }

    /// Queues a command for the ordered publisher (no answer awaited);
    /// `false` when it was dropped (Redis away, queue full).
    pub fn send(&self, cmd: redis::Cmd) -> bool {
        self.driver.enqueue(Outgoing { cmd, done: None })
    }

    /// Subscribes to a channel.
    pub fn subscribe(&self, channel: &str, handler: MessageHandler) {
        self.driver
            .subscribe(Topic::Channel(channel.to_owned()), handler);
    }

    /// Subscribes to a pattern (`prefix:*`); the handler gets each
    /// message's channel.
    pub fn psubscribe(&self, pattern: &str, handler: MessageHandler) {
        self.driver
            .subscribe(Topic::Pattern(pattern.to_owned()), handler);
    }

    /// Unsubscribes from a channel.
    pub fn unsubscribe(&self, channel: &str) {
        self.driver.unsubscribe(Topic::Channel(channel.to_owned()));
    }

    /// Waits until the subscriptions asked for so far are confirmed.
    pub async fn sync(&self, timeout: Duration) -> Result<(), RedisError> {
        self.driver.sync(timeout).await
    }

    /// Whether Redis is reachable, as far as the link knows.
    pub fn is_connected(&self) -> bool {
        self.driver.is_up()
    }

    /// Moves each time Redis comes back after it was lost (with the
    /// subscriptions re-established): what was published meanwhile may
    /// have been missed.
    pub fn reconnections(&self) -> tokio::sync::watch::Receiver<u64> {
        self.driver.reconnections()
    }

    /// The counters.
    pub fn metrics(&self) -> MetricsSnapshot {
        crate::snapshot(&self.driver.metrics)
    }
}
