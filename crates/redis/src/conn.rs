//! One Redis server or a Redis Cluster, behind one connection type.
//!
//! Commands are routed by the client (by key or channel slot on a
//! cluster; `PUBSUB NUMSUB`/`SHARDNUMSUB` are sent to every node and
//! summed). Three kinds of connection are made: for commands (a call made
//! while Redis is away fails at once), for subscriptions (RESP3 pushes,
//! reconnects without end), and for blocking stream reads (no response
//! timeout).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, PushInfo, RedisFuture, RedisResult, Value};
use tokio::sync::mpsc;

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// One server (`redis://host:port/db`).
    Single(String),
    /// The seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

/// What a subscription is to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Topic {
    /// SUBSCRIBE.
    Channel(String),
    /// PSUBSCRIBE.
    Pattern(String),
    /// SSUBSCRIBE.
    Shard(String),
}

/// A connection to one server or to a cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}protocol=resp3")
}

impl Target {
    /// What to show in logs.
    pub(crate) fn describe(&self) -> String {
        match self {
            Target::Single(url) => url.clone(),
            Target::Cluster(nodes) => format!("cluster {}", nodes.join(",")),
        }
    }

    /// A connection for commands.
    pub(crate) async fn commands(&self) -> RedisResult<Conn> {
        match self {
            Target::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let con = client
                    .get_connection_manager_with_config(
                        ConnectionManagerConfig::new()
                            // A call made while Redis is away fails at
                            // once; the next one tries to reconnect.
                            .set_number_of_retries(0)
                            .set_connection_timeout(Some(Duration::from_millis(1000)))
                            .set_response_timeout(Some(Duration::from_secs(5))),
                    )
                    .await?;
                Ok(Conn::Single(con))
            }
            Target::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.clone())
                    .retries(1)
                    .connection_timeout(Duration::from_millis(1000))
                    .response_timeout(Duration::from_secs(5))
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A connection for subscriptions, its messages pushed to `push`.
    pub(crate) async fn subscriber(
        &self,
        push: mpsc::UnboundedSender<PushInfo>,
    ) -> RedisResult<Conn> {
        match self {
            Target::Single(url) => {
                let client = redis::Client::open(with_resp3(url).as_str())?;
                let con = client
                    .get_connection_manager_with_config(
                        ConnectionManagerConfig::new()
                            .set_push_sender(push)
                            .set_automatic_resubscription()
                            .set_number_of_retries(usize::MAX)
                            .set_min_delay(Duration::from_millis(50))
                            .set_max_delay(Duration::from_secs(2))
                            .set_connection_timeout(Some(Duration::from_millis(1000))),
                    )
                    .await?;
                Ok(Conn::Single(con))
            }
            Target::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.clone())
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(push)
                    .retries(10)
                    .max_retry_wait(2000)
                    .connection_timeout(Duration::from_millis(1000))
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// A connection for blocking reads (no response timeout).
    pub(crate) async fn reader(&self) -> RedisResult<Conn> {
        match self {
            Target::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                let con = client
                    .get_connection_manager_with_config(
                        ConnectionManagerConfig::new()
                            .set_number_of_retries(0)
                            .set_connection_timeout(Some(Duration::from_millis(1000)))
                            .set_response_timeout(None),
                    )
                    .await?;
                Ok(Conn::Single(con))
            }
            Target::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.clone())
                    .retries(1)
                    .connection_timeout(Duration::from_millis(1000))
                    .response_timeout(Duration::from_secs(3600))
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }
}

impl Conn {
    /// Whether this is a cluster connection (no mixed-slot pipelines).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// Subscribes (one channel per command).
    pub(crate) async fn subscribe(&mut self, topic: &Topic) -> RedisResult<()> {
        match (self, topic) {
            (Conn::Single(c), Topic::Channel(ch)) => c.subscribe(ch).await,
            (Conn::Single(c), Topic::Pattern(p)) => c.psubscribe(p).await,
            // The client counts the confirmations of a multi-channel
            // SSUBSCRIBE as one reply: one channel per command.
            (Conn::Single(c), Topic::Shard(ch)) => {
                redis::cmd("SSUBSCRIBE").arg(ch).exec_async(c).await
            }
            (Conn::Cluster(c), Topic::Channel(ch)) => c.subscribe(ch).await,
            (Conn::Cluster(c), Topic::Pattern(p)) => c.psubscribe(p).await,
            (Conn::Cluster(c), Topic::Shard(ch)) => c.ssubscribe(ch).await,
        }
    }

    /// Unsubscribes.
    pub(crate) async fn unsubscribe(&mut self, topic: &Topic) -> RedisResult<()> {
        match (self, topic) {
            (Conn::Single(c), Topic::Channel(ch)) => c.unsubscribe(ch).await,
            (Conn::Single(c), Topic::Pattern(p)) => c.punsubscribe(p).await,
            (Conn::Single(c), Topic::Shard(ch)) => {
                redis::cmd("SUNSUBSCRIBE").arg(ch).exec_async(c).await
            }
            (Conn::Cluster(c), Topic::Channel(ch)) => c.unsubscribe(ch).await,
            (Conn::Cluster(c), Topic::Pattern(p)) => c.punsubscribe(p).await,
            (Conn::Cluster(c), Topic::Shard(ch)) => c.sunsubscribe(ch).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}
