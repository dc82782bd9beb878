//! Adapters: how a broadcast finds its sockets, locally or across a cluster.
//!
//! The [`Adapter`] trait is the only seam between nodes. Every operation that
//! may need other servers is async and returns what a cluster needs (ack
//! counts per server, socket descriptions, answers of other servers), even
//! though the default [`MemoryAdapter`] only serves this process. Room
//! membership of local sockets is synchronous: it never leaves the node.
//!
//! The adapter does not know the socket layer's types: it reaches this
//! node's sockets through [`LocalNamespace`] and a small trait for what it
//! needs of a socket (a send queue, ack slots, its description, a way to
//! disconnect it). [`LocalAdapter`] holds the room index and performs every
//! operation on this node's sockets; the [`MemoryAdapter`] is a
//! `LocalAdapter` plus the in-memory store of connection state recovery,
//! and a cluster adapter is a `LocalAdapter` plus the messages that carry
//! each operation to the other nodes.
//!
//! - `info`: [`SocketInfo`] and [`Handshake`], a socket as the cluster sees it.
//! - `local`: [`LocalAdapter`], the room index and local operations.
//! - `memory`: [`MemoryAdapter`], the default adapter.
//! - `recovery`: the in-memory store of connection state recovery.

mod info;
mod local;
mod memory;
mod recovery;

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use info::{Handshake, SocketInfo};
pub use local::{LocalAdapter, RoomEvent};
pub use memory::MemoryAdapter;
pub use recovery::{Offset, RecoveryConfig};

use crate::protocol::engine::Frame;
use crate::protocol::sid::Sid;
use crate::protocol::socketio::Encoded;
use crate::protocol::value::Value;

/// A room name. Every socket is also in the room named by its id.
pub type Room = String;

/// Which sockets an operation targets, and how.
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
    /// The socket that answered, when it is on this node (the cluster
    /// protocols of the reference do not carry the id of a remote socket).
    pub socket: Option<Sid>,
    /// Its ack arguments (only the first one travels between nodes, as in
    /// the reference).
    pub args: Vec<Value>,
}

/// What a broadcast with acknowledgements reports, as it happens: each
/// server tells how many clients it asked, then each answer arrives.
#[derive(Debug, Clone, PartialEq)]
pub enum AckEvent {
    /// A server sent the packet to this many of its clients.
    ClientCount(usize),
    /// A client answered.
    Ack(AckResponse),
}

/// Where a broadcast with acknowledgements reports ([`AckEvent`]s).
pub type AckSink = mpsc::UnboundedSender<AckEvent>;

/// A persisted session of connection state recovery: what a socket that
/// left abnormally needs to come back as itself.
#[derive(Debug, Clone, PartialEq)]
pub struct PersistedSession {
    /// The socket id to restore.
    pub sid: Sid,
    /// The private id the client presents to recover.
    pub pid: Sid,
    /// Its rooms (its own id room included, as the reference stores them).
    pub rooms: Vec<Room>,
    /// Its data (see [`crate::Socket::set_data`]).
    pub data: serde_json::Value,
}

/// A packet a recovering client missed: its frames (the offset already the
/// last argument) and its offset.
#[derive(Debug, Clone, PartialEq)]
pub struct MissedPacket {
    /// Where it is in the stream of stored packets.
    pub offset: Offset,
    /// The encoded packet.
    pub packet: Encoded,
}

/// Why an adapter operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The namespace no longer exists.
    #[error("the namespace is closed")]
    Closed,
    /// Other nodes did not all answer in time.
    #[error("timeout reached: {received} of {expected} servers answered")]
    Timeout {
        /// Answers received.
        received: usize,
        /// Answers expected.
        expected: usize,
    },
    /// The transport between nodes is unavailable (e.g. Redis is down).
    #[error("cluster transport unavailable: {0}")]
    Unavailable(String),
    /// The transport between nodes failed.
    #[error("cluster transport: {0}")]
    Transport(String),
}

/// The acknowledgement callback of an event received from another server:
/// answers it with one value, at most once.
pub struct ServerAck(Box<dyn FnOnce(Value) + Send>);

impl ServerAck {
    /// An acknowledgement that calls `f` with the answer.
    pub fn new(f: impl FnOnce(Value) + Send + 'static) -> Self {
        ServerAck(Box::new(f))
    }

    /// Answers.
    pub fn send(self, answer: Value) {
        (self.0)(answer)
    }
}

impl std::fmt::Debug for ServerAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerAck")
    }
}

/// A packet on its way to one local socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    /// Its frames (shared bytes).
    pub(crate) frames: &'a [Frame],
    /// Whether it may be dropped.
    pub(crate) volatile: bool,
    /// Its offset, when it was stored for connection state recovery.
    pub(crate) offset: Option<&'a Offset>,
}

/// What an adapter needs of a socket of this node.
pub(crate) trait LocalSocket: Send + Sync + 'static {
    /// Its id.
    fn id(&self) -> Sid;
    /// Queues a packet; `false` when it was not queued (volatile and not
    /// writable, or the socket is gone).
    fn deliver(&self, packet: Outgoing<'_>) -> bool;
    /// Routes answers to ack `id` into `sink`.
    fn expect_ack(&self, id: u64, sink: AckSink);
    /// Forgets the ack slot `id`.
    fn forget_ack(&self, id: u64);
    /// Whether it is connected (a socket that is leaving may not join).
    fn connected(&self) -> bool;
    /// Its data.
    fn data(&self) -> serde_json::Value;
    /// Its handshake.
    fn handshake(&self) -> Handshake;
    /// Disconnects it (its whole connection when `close`).
    fn disconnect(&self, close: bool);
}

/// A local socket handle.
pub(crate) type SocketRef = Arc<dyn LocalSocket>;

/// What an adapter needs of its namespace.
pub(crate) trait NamespaceHandle: Send + Sync + 'static {
    /// The connected socket with this id.
    fn socket(&self, sid: Sid) -> Option<SocketRef>;
    /// Every connected socket.
    fn sockets(&self) -> Vec<SocketRef>;
    /// A new ack id (one counter per namespace).
    fn next_ack_id(&self) -> u64;
    /// Dispatches an event sent by another server to this namespace's
    /// server-event handlers (`args[0]` is the event name).
    fn server_event(&self, args: Vec<Value>, ack: Option<ServerAck>);
}

/// An adapter's view of its namespace on this node: its name, its sockets,
/// and where events from other servers go. Handed to
/// [`AdapterFactory::create`].
#[derive(Clone)]
pub struct LocalNamespace {
    handle: Weak<dyn NamespaceHandle>,
    name: Arc<str>,
    recovery: Option<RecoveryConfig>,
}

impl std::fmt::Debug for LocalNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalNamespace")
            .field("name", &self.name)
            .finish()
    }
}

impl LocalNamespace {
    pub(crate) fn new(
        handle: Weak<dyn NamespaceHandle>,
        name: &str,
        recovery: Option<RecoveryConfig>,
    ) -> Self {
        LocalNamespace {
            handle,
            name: name.into(),
            recovery,
        }
    }

    /// The namespace name (`/`, `/admin`...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection state recovery settings, when it is on.
    pub fn recovery(&self) -> Option<&RecoveryConfig> {
        self.recovery.as_ref()
    }

    /// Whether the namespace still exists.
    pub fn is_open(&self) -> bool {
        self.handle.strong_count() > 0
    }

    /// A new ack id from the namespace's counter (for packets this node
    /// sends on behalf of another server's broadcast with acks).
    pub fn next_ack_id(&self) -> u64 {
        self.handle.upgrade().map_or(0, |ns| ns.next_ack_id())
    }

    /// Hands an event from another server (`args[0]` is its name) to the
    /// namespace's server-event handlers, with `ack` when the sender waits
    /// for an answer.
    pub fn server_event(&self, args: Vec<Value>, ack: Option<ServerAck>) {
        if let Some(ns) = self.handle.upgrade() {
            ns.server_event(args, ack);
        }
    }

    pub(crate) fn socket(&self, sid: Sid) -> Option<SocketRef> {
        self.handle.upgrade()?.socket(sid)
    }

    pub(crate) fn sockets(&self) -> Vec<SocketRef> {
        self.handle
            .upgrade()
            .map(|ns| ns.sockets())
            .unwrap_or_default()
    }
}

/// Fans packets out to sockets, on this node and (for cluster adapters)
/// others. One adapter serves one namespace.
///
/// Operations that target sockets take [`BroadcastOptions`]; with
/// `opts.local` they stay on this node.
#[async_trait]
pub trait Adapter: Send + Sync + 'static {
    /// The local half: this node's rooms and sockets. The room operations
    /// below default to it.
    fn local(&self) -> &LocalAdapter;

    /// Adds a local socket to rooms.
    fn add_all(&self, sid: Sid, rooms: &[Room]) {
        self.local().add_all(sid, rooms);
    }
    /// Removes a local socket from a room.
    fn del(&self, sid: Sid, room: &str) {
        self.local().del(sid, room);
    }
    /// Removes a local socket from all its rooms.
    fn del_all(&self, sid: Sid) {
        self.local().del_all(sid);
    }
    /// The rooms of a local socket (its own id room included).
    fn socket_rooms(&self, sid: Sid) -> Vec<Room> {
        self.local().socket_rooms(sid)
    }
    /// The local sockets matching `opts`.
    fn local_sockets(&self, opts: &BroadcastOptions) -> Vec<Sid> {
        self.local().socket_ids(opts)
    }

    /// Sends an encoded event (without ack id) to every matching socket.
    /// With connection state recovery on and a packet that is not
    /// volatile, the adapter stores it and appends its offset as the last
    /// argument, as the reference does.
    async fn broadcast(
        &self,
        packet: &Encoded,
        opts: &BroadcastOptions,
    ) -> Result<(), AdapterError>;

    /// Sends an encoded event whose ack id is `ack_id` to every matching
    /// socket. Each server reports into `sink` how many clients it asked
    /// ([`AckEvent::ClientCount`]), then their answers; the caller knows
    /// it has everything once [`Adapter::server_count`] servers reported
    /// and as many answers arrived as they announced. Other servers give
    /// the packet their own ack id.
    async fn broadcast_with_ack(
        &self,
        packet: &Encoded,
        ack_id: u64,
        opts: &BroadcastOptions,
        timeout: Duration,
        sink: AckSink,
    ) -> Result<(), AdapterError>;

    /// Describes every matching socket, on every node.
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

    /// Every room with at least one matching socket, on every node (own-id
    /// rooms included).
    async fn rooms(&self, opts: &BroadcastOptions) -> Result<Vec<Room>, AdapterError>;

    /// Emits an event (`args[0]` is its name) to the other servers of the
    /// cluster (not to clients). A single server has no one to tell.
    async fn server_side_emit(&self, _args: &[Value]) -> Result<(), AdapterError> {
        Ok(())
    }

    /// Emits an event to the other servers and waits for each one's
    /// answer (the first argument of its acknowledgement). On timeout the
    /// error carries the answers received.
    async fn server_side_emit_with_ack(
        &self,
        _args: &[Value],
    ) -> Result<Vec<Value>, (AdapterError, Vec<Value>)> {
        Ok(Vec::new())
    }

    /// Number of servers in the cluster (this one included).
    async fn server_count(&self) -> Result<usize, AdapterError> {
        Ok(1)
    }

    /// Stores a session for connection state recovery.
    async fn persist_session(&self, _session: PersistedSession) {}

    /// Takes a persisted session back, if it is known, has not expired and
    /// `offset` is still in the stored packets; its packets are read
    /// separately with [`Adapter::missed_packets`].
    async fn restore_session(
        &self,
        _pid: &str,
        _offset: &str,
    ) -> Result<Option<PersistedSession>, AdapterError> {
        Ok(None)
    }

    /// The stored packets after `offset` that a socket in `rooms` would
    /// have received, in order (connection state recovery).
    async fn missed_packets(
        &self,
        _rooms: &[Room],
        _offset: &str,
    ) -> Result<Vec<MissedPacket>, AdapterError> {
        Ok(Vec::new())
    }

    /// Waits until what this adapter asked of the cluster transport so far
    /// is in effect: what it queued is sent (persisted sessions included)
    /// and its subscriptions, including those of rooms just joined, are
    /// confirmed, so that messages other nodes publish from now on are
    /// received. A local adapter is always ready.
    async fn ready(&self) -> Result<(), AdapterError> {
        Ok(())
    }

    /// Stops the adapter (unsubscribes from other nodes). Called when the
    /// server closes.
    fn close(&self) {}
}

/// Builds the adapter of each namespace.
pub trait AdapterFactory: Send + Sync + 'static {
    /// The adapter for one namespace.
    fn create(&self, nsp: LocalNamespace) -> Arc<dyn Adapter>;
}

/// The default factory: a [`MemoryAdapter`] per namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryAdapterFactory;

impl AdapterFactory for MemoryAdapterFactory {
    fn create(&self, nsp: LocalNamespace) -> Arc<dyn Adapter> {
        Arc::new(MemoryAdapter::new(nsp))
    }
}

/// Whether a socket in `rooms` would receive a packet sent with `opts`
/// (connection state recovery's filter, as the reference's): some room
/// targeted (or none named) and no room excepted.
pub fn should_include(rooms: &[Room], opts_rooms: &[Room], opts_except: &[Room]) -> bool {
    let included = opts_rooms.is_empty() || rooms.iter().any(|r| opts_rooms.contains(r));
    let excluded = rooms.iter().any(|r| opts_except.contains(r));
    included && !excluded
}
