//! The Socket.IO v5 layer: namespaces, sockets, rooms, acknowledgements,
//! middlewares and broadcasts, on top of the engine.
//!
//! - [`SocketIo`]: the server handle, a tower endpoint and the entry point.
//! - [`namespace`]: static and dynamic namespaces.
//! - [`Socket`]: one client in one namespace.
//! - [`broadcast`]: broadcast operators.
//! - [`crate::Handshake`] (in [`crate::adapter`]): what a socket knows of its
//!   connection request, as the cluster sees it too.

pub mod broadcast;
mod client;
pub mod namespace;
// `socket::Socket` lives in `socket/socket.rs`: the file is named after its type.
#[allow(clippy::module_inception)]
mod socket;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;

pub use broadcast::{BroadcastOperator, RemoteSocket};
pub use client::Handler;
pub use namespace::{Namespace, NsMatcher, ParentNamespace};
pub use socket::{AckSender, Event, Socket};

use crate::adapter::{
    AdapterError, AdapterFactory, MemoryAdapterFactory, RecoveryConfig, Room, ServerAck,
};
use crate::engine::service::EngineEndpoint;
use crate::engine::{Engine, EngineConfig, EngineLayer};
use crate::protocol::socketio::EncodeError;
use crate::protocol::value::Value;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
pub(crate) type ConnectHandler = Arc<dyn Fn(Socket) -> BoxFuture<()> + Send + Sync>;
pub(crate) type EventHandler = Arc<dyn Fn(Socket, Event) -> BoxFuture<()> + Send + Sync>;
pub(crate) type DisconnectHandler =
    Arc<dyn Fn(Socket, DisconnectReason) -> BoxFuture<()> + Send + Sync>;
pub(crate) type Middleware =
    Arc<dyn Fn(Socket) -> BoxFuture<Result<(), ConnectError>> + Send + Sync>;
pub(crate) type PacketMiddleware = Arc<dyn Fn(&Socket, &Event) -> Result<(), String> + Send + Sync>;
pub(crate) type ServerEventHandler = Arc<dyn Fn(ServerEvent) -> BoxFuture<()> + Send + Sync>;

/// An event sent by another server of the cluster (see
/// [`Namespace::server_side_emit`] and [`Namespace::on_server_event`]).
#[derive(Debug)]
pub struct ServerEvent {
    name: String,
    args: Vec<Value>,
    ack: Option<ServerAck>,
}

impl ServerEvent {
    pub(crate) fn new(name: String, args: Vec<Value>, ack: Option<ServerAck>) -> Self {
        ServerEvent { name, args, ack }
    }

    /// The event name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The arguments.
    pub fn args(&self) -> &[Value] {
        &self.args
    }

    /// Takes the arguments out of the event.
    pub fn take_args(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.args)
    }

    /// Argument `index` converted to `T`.
    pub fn arg<T: serde::de::DeserializeOwned>(
        &self,
        index: usize,
    ) -> Result<T, crate::protocol::value::ValueError> {
        crate::from_value(self.args.get(index).cloned().unwrap_or(Value::Null))
    }

    /// Whether the sending server waits for an answer.
    pub fn wants_ack(&self) -> bool {
        self.ack.is_some()
    }

    /// Answers the sending server (one value; only the first answer
    /// counts). Does nothing when it did not ask.
    pub fn ack<T: serde::Serialize + ?Sized>(
        &mut self,
        data: &T,
    ) -> Result<(), crate::protocol::value::ValueError> {
        if let Some(ack) = self.ack.take() {
            ack.send(crate::to_value(data)?);
        }
        Ok(())
    }
}

/// A server-side emit with acknowledgements that did not fully succeed:
/// the error and the answers received before it.
#[derive(Debug, thiserror::Error)]
#[error("{error} ({} responses received)", responses.len())]
pub struct ServerAckError {
    /// Answers received before the error.
    pub responses: Vec<Value>,
    /// What went wrong.
    pub error: BroadcastError,
}

/// Runs a handler future without a task when it completes at once (the
/// common case: emit and return); only a handler that actually waits gets a
/// task of its own.
pub(crate) fn run(mut fut: BoxFuture<()>) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if fut.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(fut);
    }
}

/// Why a socket left its namespace. The texts are the reference server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The client closed the connection.
    TransportClose,
    /// The connection failed.
    TransportError,
    /// The client stopped answering pings.
    PingTimeout,
    /// The client sent something that is not Engine.IO.
    ParseError,
    /// The connection was closed because of an invalid Socket.IO packet.
    ForcedClose,
    /// The server closed the connection (invalid state, connect timeout).
    ForcedServerClose,
    /// The server disconnected the socket.
    ServerNamespaceDisconnect,
    /// The client left the namespace.
    ClientNamespaceDisconnect,
    /// The server is shutting down.
    ServerShuttingDown,
    /// The client read too slowly; its send queue overflowed.
    SlowConsumer,
}

impl DisconnectReason {
    /// The reason as the reference server names it.
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::TransportError => "transport error",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::ParseError => "parse error",
            DisconnectReason::ForcedClose => "forced close",
            DisconnectReason::ForcedServerClose => "forced server close",
            DisconnectReason::ServerNamespaceDisconnect => "server namespace disconnect",
            DisconnectReason::ClientNamespaceDisconnect => "client namespace disconnect",
            DisconnectReason::ServerShuttingDown => "server shutting down",
            DisconnectReason::SlowConsumer => "slow consumer",
        }
    }

    /// Whether connection state recovery keeps the session of a socket
    /// that left for this reason: the reference's list (transport close
    /// and error, ping timeout, forced close, server shutting down, forced
    /// server close).
    pub fn is_recoverable(self) -> bool {
        matches!(
            self,
            DisconnectReason::TransportClose
                | DisconnectReason::TransportError
                | DisconnectReason::PingTimeout
                | DisconnectReason::ForcedClose
                | DisconnectReason::ServerShuttingDown
                | DisconnectReason::ForcedServerClose
        )
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connect middleware's refusal: the client's `connect_error` gets this
/// message and data.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    /// The message (`err.message` on the client).
    pub message: String,
    /// Optional data (`err.data` on the client).
    pub data: Option<Value>,
}

impl ConnectError {
    /// A refusal with a message.
    pub fn new(message: impl Into<String>) -> Self {
        ConnectError {
            message: message.into(),
            data: None,
        }
    }

    /// Adds data for the client.
    pub fn with_data(mut self, data: impl Into<Value>) -> Self {
        self.data = Some(data.into());
        self
    }
}

/// Why an emit failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The socket is not connected.
    #[error("the socket is disconnected")]
    Disconnected,
    /// The event name is reserved.
    #[error("\"{0}\" is a reserved event name")]
    ReservedEvent(String),
    /// The data could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The client's send queue was full; it has been disconnected.
    #[error("the client reads too slowly and was disconnected")]
    SlowConsumer,
}

/// Why an acknowledgement did not arrive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// No answer within the timeout.
    #[error("operation has timed out")]
    Timeout,
    /// The socket disconnected first.
    #[error("the socket disconnected before answering")]
    Disconnected,
    /// The event could not be sent.
    #[error(transparent)]
    Emit(#[from] EmitError),
}

/// Why a broadcast failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BroadcastError {
    /// The packet could not be built.
    #[error(transparent)]
    Emit(#[from] EmitError),
    /// The adapter failed.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    /// Not every recipient answered in time.
    #[error("operation has timed out")]
    Timeout,
}

/// A broadcast with acknowledgements that did not fully succeed: the error
/// and the answers received before it.
#[derive(Debug, thiserror::Error)]
#[error("{error} ({} responses received)", responses.len())]
pub struct BroadcastAckError {
    /// Answers received before the error.
    pub responses: Vec<crate::adapter::AckResponse>,
    /// What went wrong.
    pub error: BroadcastError,
}

/// Socket.IO options.
#[derive(Debug, Clone)]
pub struct SocketIoConfig {
    /// Engine options; the path defaults to `/socket.io/`.
    pub engine: EngineConfig,
    /// How long a connection may stay without joining any namespace (45 s).
    pub connect_timeout: Duration,
    /// Maximum binary attachments in one packet (10).
    pub max_attachments: usize,
    /// Connection state recovery, off by default (see
    /// [`SocketIoBuilder::connection_state_recovery`]).
    pub connection_state_recovery: Option<RecoveryConfig>,
}

impl Default for SocketIoConfig {
    fn default() -> Self {
        SocketIoConfig {
            engine: EngineConfig {
                path: "/socket.io/".into(),
                ..EngineConfig::default()
            },
            connect_timeout: Duration::from_secs(45),
            max_attachments: 10,
            connection_state_recovery: None,
        }
    }
}

/// Builds a [`SocketIo`] server.
pub struct SocketIoBuilder {
    config: SocketIoConfig,
    adapter: Arc<dyn AdapterFactory>,
}

impl SocketIoBuilder {
    /// All options at once.
    pub fn config(mut self, config: SocketIoConfig) -> Self {
        self.config = config;
        self
    }

    /// Interval between pings.
    pub fn ping_interval(mut self, d: Duration) -> Self {
        self.config.engine.ping_interval = d;
        self
    }

    /// Time allowed for a pong.
    pub fn ping_timeout(mut self, d: Duration) -> Self {
        self.config.engine.ping_timeout = d;
        self
    }

    /// Time allowed to join a first namespace.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// Maximum message size (`maxHttpBufferSize`).
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.config.engine.max_payload = bytes;
        self
    }

    /// Cross-origin settings.
    pub fn cors(mut self, cors: crate::engine::Cors) -> Self {
        self.config.engine.cors = Some(cors);
        self
    }

    /// Request path (`/socket.io/`).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.config.engine.path = path.into();
        self
    }

    /// Turns connection state recovery on, as the reference's
    /// `connectionStateRecovery` option: a client that reconnects within
    /// `max_disconnection_duration` (with the `pid` and last offset the
    /// official clients send) gets its socket id, rooms and data back and
    /// the packets it missed, before the CONNECT answer. The CONNECT answer
    /// then carries a `pid`, and every event that is neither volatile nor
    /// expecting an ack carries its offset as its last argument (direct
    /// emits to one socket go through the adapter, so they are stored too).
    /// Sessions are kept for the reference's disconnect reasons only (see
    /// [`DisconnectReason::is_recoverable`]). The store is the adapter's:
    /// in memory for the default adapter (bounded by
    /// [`RecoveryConfig::max_packets`] and
    /// [`RecoveryConfig::max_sessions`]), Redis streams for
    /// `switchboard-redis` in streams mode.
    pub fn connection_state_recovery(mut self, config: RecoveryConfig) -> Self {
        self.config.connection_state_recovery = Some(config);
        self
    }

    /// The adapter factory (in-memory by default).
    pub fn adapter(mut self, factory: impl AdapterFactory) -> Self {
        self.adapter = Arc::new(factory);
        self
    }

    /// The server.
    pub fn build(self) -> SocketIo {
        let handler = Handler::new(self.config.clone(), self.adapter);
        let io = SocketIo {
            engine: Engine::new(self.config.engine, handler),
        };
        io.ns("/");
        io
    }
}

/// A Socket.IO server: cheap to clone, every clone is the same server.
/// Mount it with [`SocketIo::layer`] (axum, tower) or [`SocketIo::service`]
/// (plain hyper).
#[derive(Clone)]
pub struct SocketIo {
    engine: Engine<Handler>,
}

impl std::fmt::Debug for SocketIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketIo")
            .field("sessions", &self.engine.session_count())
            .finish()
    }
}

impl Default for SocketIo {
    fn default() -> Self {
        SocketIo::builder().build()
    }
}

impl SocketIo {
    /// A builder with the reference defaults.
    pub fn builder() -> SocketIoBuilder {
        SocketIoBuilder {
            config: SocketIoConfig::default(),
            adapter: Arc::new(MemoryAdapterFactory),
        }
    }

    /// The engine under this server.
    pub fn engine(&self) -> &Engine<Handler> {
        &self.engine
    }

    /// A tower layer serving Socket.IO on its path and passing the other
    /// requests to the wrapped service.
    pub fn layer(&self) -> EngineLayer<SocketIo> {
        EngineLayer::new(self.clone())
    }

    /// A tower service serving only Socket.IO (404 elsewhere).
    pub fn service(
        &self,
    ) -> crate::engine::EngineService<SocketIo, crate::engine::service::NotFound> {
        crate::engine::EngineService::new(self.clone(), crate::engine::service::NotFound)
    }

    /// The namespace `path`, created if needed. Returns its handle.
    pub fn ns(&self, path: &str) -> Namespace {
        self.engine.handler().static_ns(path)
    }

    /// Creates (or gets) a namespace and sets its connection handler.
    pub fn on_connection<F, Fut>(&self, path: &str, handler: F) -> Namespace
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let ns = self.ns(path);
        ns.on_connection(handler);
        ns
    }

    /// Serves every namespace matching `matcher`, creating each on its first
    /// connection, with this connection handler.
    pub fn dynamic_ns<F, Fut>(&self, matcher: NsMatcher, handler: F) -> ParentNamespace
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.engine.handler().dynamic_ns(matcher, handler)
    }

    /// An existing namespace (static, or a dynamic child already created).
    pub fn of(&self, path: &str) -> Option<Namespace> {
        self.engine.handler().get_ns(path)
    }

    /// A broadcast to the main namespace's room.
    pub fn to(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.ns("/").to(room)
    }

    /// A broadcast to every socket of the main namespace.
    pub fn broadcast(&self) -> BroadcastOperator {
        self.ns("/").broadcast()
    }

    /// Emits to every socket of the main namespace.
    pub async fn emit<T: serde::Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<(), BroadcastError> {
        self.broadcast().emit(event, data).await
    }

    /// Emits an event to the other servers of the cluster, on the main
    /// namespace (see [`Namespace::server_side_emit`]).
    pub async fn server_side_emit<T: serde::Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<(), BroadcastError> {
        self.ns("/").server_side_emit(event, args).await
    }

    /// Emits an event to the other servers and waits for their answers
    /// (see [`Namespace::server_side_emit_with_ack`]).
    pub async fn server_side_emit_with_ack<T: serde::Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<Vec<Value>, ServerAckError> {
        self.ns("/").server_side_emit_with_ack(event, args).await
    }

    /// Registers the handler of an event sent by other servers on the main
    /// namespace (see [`Namespace::on_server_event`]).
    pub fn on_server_event<F, Fut>(&self, event: &str, handler: F) -> Namespace
    where
        F: Fn(ServerEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let ns = self.ns("/");
        ns.on_server_event(event, handler);
        ns
    }

    /// Number of servers in the cluster (this one included).
    pub async fn server_count(&self) -> Result<usize, AdapterError> {
        self.ns("/").adapter().server_count().await
    }

    /// Disconnects every socket with reason `server shutting down` and
    /// closes every connection, waiting up to `grace` for clients to receive
    /// their close.
    pub async fn close(&self, grace: Duration) {
        for session in self.engine.sessions() {
            for socket in session.data.sockets() {
                socket.close(DisconnectReason::ServerShuttingDown);
            }
            session.disconnect();
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.engine.session_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for session in self.engine.sessions() {
            session.close(crate::engine::CloseReason::ForcedClose);
        }
        // What the adapters still have to send (sessions persisted for
        // recovery after a restart) goes out before they close.
        for ns in self.engine.handler().namespaces() {
            let adapter = ns.adapter();
            if let Err(e) = tokio::time::timeout(grace, adapter.ready())
                .await
                .unwrap_or(Ok(()))
            {
                tracing::warn!(nsp = ns.name(), error = %e, "the adapter could not flush before closing");
            }
            adapter.close();
        }
    }
}

impl EngineEndpoint for SocketIo {
    fn matches<B>(&self, req: &Request<B>) -> bool {
        self.engine.matches(req)
    }

    fn call<B>(&self, req: Request<B>) -> impl Future<Output = Response<Full<Bytes>>> + Send
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let engine = self.engine.clone();
        async move { engine.handle(req).await }
    }
}
