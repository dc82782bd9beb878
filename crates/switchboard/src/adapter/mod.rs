//! Adapters: how a broadcast finds its sockets, locally or across a cluster.
//!
//! The [`Adapter`] trait is the only seam between nodes. Every operation that
//! may need other servers is async and returns what a cluster needs (ack
//! counts, socket descriptions), even though the default
//! [`MemoryAdapter`] only serves this process. Room membership of local
//! sockets is synchronous: it never leaves the node.

mod memory;

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use memory::MemoryAdapter;

use crate::protocol::sid::Sid;
use crate::protocol::socketio::Encoded;
use crate::protocol::value::Value;
use crate::socket::namespace::LocalNamespace;
use crate::socket::{DisconnectReason, Handshake};

/// A room name. Every socket is also in the room named by its id.
pub type Room = String;

/// Which sockets an operation targets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastOptions {
    /// Sockets in any of these rooms; all sockets when empty.
    pub rooms: Vec<Room>,
    /// Minus the sockets in any of these rooms.
    pub except: Vec<Room>,
    /// Only this node's sockets.
    pub local: bool,
    /// The packet may be dropped for clients that are not ready for it.
    pub volatile: bool,
}

/// One client's answer to a broadcast with acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub struct AckResponse {
    /// The socket that answered.
    pub socket: Sid,
    /// Its ack arguments.
    pub args: Vec<Value>,
}

/// A socket as seen by [`Adapter::fetch_sockets`]: it may live on this node
/// or another one.
#[derive(Debug, Clone)]
pub struct SocketInfo {
    /// The socket id.
    pub id: Sid,
    /// Its namespace.
    pub nsp: String,
    /// Its rooms.
    pub rooms: Vec<Room>,
    /// Its data (see [`crate::Socket::set_data`]).
    pub data: serde_json::Value,
    /// Its handshake.
    pub handshake: Handshake,
}

/// What connection state recovery stores of a socket that left abnormally.
#[derive(Debug, Clone)]
pub struct PersistedSession {
    /// The socket id to restore.
    pub sid: Sid,
    /// The private id the client presents to recover.
    pub pid: Sid,
    /// Its rooms.
    pub rooms: Vec<Room>,
    /// Its data.
    pub data: serde_json::Value,
    /// Why it left.
    pub reason: DisconnectReason,
}

/// A session restored by [`Adapter::restore_session`], with the packets it
/// missed.
#[derive(Debug, Clone)]
pub struct RestoredSession {
    /// What was persisted.
    pub session: PersistedSession,
    /// The packets broadcast to its rooms since the offset, in order.
    pub missed: Vec<Encoded>,
}

/// Why an adapter operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The namespace no longer exists.
    #[error("the namespace is closed")]
    Closed,
    /// Another node did not answer in time.
    #[error("the cluster did not answer in time")]
    Timeout,
    /// The transport between nodes failed.
    #[error("cluster transport: {0}")]
    Transport(String),
}

/// Fans packets out to sockets, on this node and (for cluster adapters)
/// others. One adapter serves one namespace.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// Adds a local socket to rooms.
    fn add_all(&self, sid: Sid, rooms: &[Room]);
    /// Removes a local socket from a room.
    fn del(&self, sid: Sid, room: &str);
    /// Removes a local socket from all its rooms.
    fn del_all(&self, sid: Sid);
    /// The rooms of a local socket.
    fn socket_rooms(&self, sid: Sid) -> Vec<Room>;
    /// The local sockets matching `opts`.
    fn local_sockets(&self, opts: &BroadcastOptions) -> Vec<Sid>;

    /// Sends an encoded packet to every matching socket.
    async fn broadcast(
        &self,
        packet: &Encoded,
        opts: &BroadcastOptions,
    ) -> Result<(), AdapterError>;

    /// Sends an encoded packet (whose ack id is `ack_id`) to every matching
    /// socket; answers go to `responses`. Returns how many answers to expect
    /// across the cluster.
    async fn broadcast_with_ack(
        &self,
        packet: &Encoded,
        opts: &BroadcastOptions,
        ack_id: u64,
        responses: mpsc::UnboundedSender<AckResponse>,
        timeout: Duration,
    ) -> Result<usize, AdapterError>;

    /// Describes every matching socket.
    async fn fetch_sockets(&self, opts: &BroadcastOptions)
    -> Result<Vec<SocketInfo>, AdapterError>;

    /// Makes every matching socket join `rooms`.
    async fn add_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> Result<(), AdapterError>;

    /// Makes every matching socket leave `rooms`.
    async fn del_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> Result<(), AdapterError>;

    /// Disconnects every matching socket (and its whole connection when
    /// `close`).
    async fn disconnect_sockets(
        &self,
        opts: &BroadcastOptions,
        close: bool,
    ) -> Result<(), AdapterError>;

    /// Every room with at least one socket.
    async fn rooms(&self, opts: &BroadcastOptions) -> Result<Vec<Room>, AdapterError>;

    /// Emits an event to the other servers of the cluster (not to clients).
    async fn server_side_emit(&self, _event: &str, _args: &[Value]) -> Result<(), AdapterError> {
        Ok(())
    }

    /// Number of servers in the cluster.
    async fn server_count(&self) -> Result<usize, AdapterError> {
        Ok(1)
    }

    /// Stores a session for connection state recovery.
    async fn persist_session(&self, _session: PersistedSession) {}

    /// Restores a session and the packets it missed since `offset`.
    async fn restore_session(&self, _pid: &str, _offset: &str) -> Option<RestoredSession> {
        None
    }
}

/// Builds the adapter of each namespace.
pub trait AdapterFactory: Send + Sync + 'static {
    /// The adapter for one namespace.
    fn create(&self, nsp: LocalNamespace) -> std::sync::Arc<dyn Adapter>;
}

/// The default factory: a [`MemoryAdapter`] per namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryAdapterFactory;

impl AdapterFactory for MemoryAdapterFactory {
    fn create(&self, nsp: LocalNamespace) -> std::sync::Arc<dyn Adapter> {
        std::sync::Arc::new(MemoryAdapter::new(nsp))
    }
}
