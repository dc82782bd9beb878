//! Namespaces: static ones, and dynamic ones created on first connect.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use serde::Serialize;

use super::{
    BroadcastError, ConnectHandler, EmitError, Middleware, ServerAckError, ServerEvent,
    ServerEventHandler, Socket, run,
};
use crate::adapter::{
    Adapter, AdapterFactory, LocalNamespace, NamespaceHandle, RecoveryConfig, ServerAck, SocketRef,
};
use crate::protocol::sid::{Sid, SidMap};
use crate::protocol::socketio::RESERVED_EVENTS;
use crate::protocol::value::{Value, to_value};

/// Middlewares and connection handler of a namespace; shared by every
/// child of a dynamic namespace.
#[derive(Default)]
pub(crate) struct NsConfig {
    pub(crate) middlewares: RwLock<Vec<Middleware>>,
    pub(crate) on_connect: RwLock<Option<ConnectHandler>>,
    /// Event handlers shared by every socket of the namespace.
    pub(crate) events: RwLock<Vec<(Box<str>, super::EventHandler)>>,
    /// Handlers of events sent by other servers of the cluster.
    pub(crate) server_events: RwLock<Vec<(Box<str>, ServerEventHandler)>>,
}

impl NsConfig {
    pub(crate) fn handler(&self, event: &str) -> Option<super::EventHandler> {
        self.events
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(name, _)| &**name == event)
            .map(|(_, h)| Arc::clone(h))
    }
}

pub(crate) fn add_event<F, Fut>(config: &NsConfig, event: &str, handler: F)
where
    F: Fn(Socket, super::Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler: super::EventHandler = Arc::new(move |s, e| Box::pin(handler(s, e)));
    let mut events = config.events.write().unwrap_or_else(|e| e.into_inner());
    match events.iter_mut().find(|(name, _)| &**name == event) {
        Some(slot) => slot.1 = handler,
        None => events.push((event.into(), handler)),
    }
}

pub(crate) struct NsInner {
    pub(crate) name: String,
    pub(crate) config: Arc<NsConfig>,
    sockets: RwLock<SidMap<Socket>>,
    adapter: OnceLock<Arc<dyn Adapter>>,
    ack_ids: AtomicU64,
    /// Connection state recovery settings, when it is on.
    pub(crate) recovery: Option<RecoveryConfig>,
}

impl NsInner {
    pub(crate) fn new(
        name: String,
        config: Arc<NsConfig>,
        factory: &dyn AdapterFactory,
        recovery: Option<RecoveryConfig>,
    ) -> Arc<Self> {
        let ns = Arc::new(NsInner {
            name,
            config,
            sockets: RwLock::new(SidMap::default()),
            adapter: OnceLock::new(),
            ack_ids: AtomicU64::new(0),
            recovery,
        });
        let weak: std::sync::Weak<dyn NamespaceHandle> = Arc::downgrade(&ns) as _;
        let local = LocalNamespace::new(weak, &ns.name, ns.recovery.clone());
        let _ = ns.adapter.set(factory.create(local));
        ns
    }

    pub(crate) fn adapter(&self) -> &Arc<dyn Adapter> {
        self.adapter.get().expect("set at construction")
    }

    /// Ack ids come from one counter per namespace, shared by sockets and
    /// broadcasts (so one broadcast packet carries one id for everyone).
    pub(crate) fn next_ack_id(&self) -> u64 {
        self.ack_ids.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn insert(&self, socket: Socket) {
        self.sockets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(socket.id(), socket);
    }

    pub(crate) fn remove(&self, sid: Sid) {
        self.sockets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&sid);
    }

    pub(crate) fn get(&self, sid: Sid) -> Option<Socket> {
        self.sockets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sid)
            .cloned()
    }

    pub(crate) fn all(&self) -> Vec<Socket> {
        self.sockets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

impl NamespaceHandle for NsInner {
    fn socket(&self, sid: Sid) -> Option<SocketRef> {
        self.get(sid).map(|s| s.0 as SocketRef)
    }

    fn sockets(&self) -> Vec<SocketRef> {
        self.sockets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|s| Arc::clone(&s.0) as SocketRef)
            .collect()
    }

    fn next_ack_id(&self) -> u64 {
        NsInner::next_ack_id(self)
    }

    fn server_event(&self, mut args: Vec<Value>, ack: Option<ServerAck>) {
        if args.is_empty() {
            return;
        }
        let name = match args.remove(0) {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            _ => return,
        };
        let handler = self
            .config
            .server_events
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(n, _)| **n == *name)
            .map(|(_, h)| Arc::clone(h));
        match handler {
            Some(h) => run(h(ServerEvent::new(name, args, ack))),
            None => {
                tracing::debug!(nsp = %self.name, event = %name, "no handler for a server-side event")
            }
        }
    }
}

/// The arguments of an event: `args` serialized, as an array spreads into
/// several arguments, `()` into none, anything else is one argument.
pub(crate) fn event_args<T: Serialize + ?Sized>(
    event: &str,
    args: &T,
) -> Result<Vec<Value>, EmitError> {
    if RESERVED_EVENTS.contains(&event) {
        return Err(EmitError::ReservedEvent(event.to_owned()));
    }
    let mut out = vec![Value::String(event.to_owned())];
    let value = to_value(args).map_err(|e| {
        EmitError::Encode(crate::protocol::socketio::EncodeError::Serialize(
            serde::ser::Error::custom(e),
        ))
    })?;
    match value {
        Value::Null => {}
        Value::Array(items) => out.extend(items),
        one => out.push(one),
    }
    Ok(out)
}

/// A namespace: its handlers, middlewares, and the entry point for
/// broadcasts and server-side operations on its sockets.
#[derive(Clone)]
pub struct Namespace(pub(crate) Arc<NsInner>);

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Namespace").field(&self.0.name).finish()
    }
}

impl Namespace {
    /// The namespace name (`/`, `/admin`...).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Adds a connect middleware. Middlewares run in order before a socket
    /// joins; the first error refuses it (the client gets `connect_error`
    /// with the error's message and data). They may store data on the
    /// socket; it cannot emit yet.
    pub fn use_middleware<F, Fut>(&self, middleware: F) -> &Self
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), super::ConnectError>> + Send + 'static,
    {
        add_middleware(&self.0.config, middleware);
        self
    }

    /// Registers an event handler shared by every socket of the namespace.
    /// Unlike [`Socket::on`] in a connection handler, it costs nothing per
    /// connection. A socket's own handler for the same event takes
    /// precedence.
    pub fn on<F, Fut>(&self, event: &str, handler: F) -> &Self
    where
        F: Fn(Socket, super::Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        add_event(&self.0.config, event, handler);
        self
    }

    /// Sets the handler called for each new socket.
    pub fn on_connection<F, Fut>(&self, handler: F) -> &Self
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        set_connect(&self.0.config, handler);
        self
    }

    /// The connected socket of this node with this id.
    pub fn get_socket(&self, sid: Sid) -> Option<Socket> {
        self.0.get(sid)
    }

    /// The connected sockets of this node.
    pub fn sockets(&self) -> Vec<Socket> {
        self.0.all()
    }

    /// The adapter of this namespace.
    pub fn adapter(&self) -> &Arc<dyn Adapter> {
        self.0.adapter()
    }

    /// Registers the handler of an event sent by other servers of the
    /// cluster with [`Namespace::server_side_emit`] (Node's
    /// `io.on(event, ...)` for server-side events).
    pub fn on_server_event<F, Fut>(&self, event: &str, handler: F) -> &Self
    where
        F: Fn(ServerEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler: ServerEventHandler = Arc::new(move |e| Box::pin(handler(e)));
        let mut events = self
            .0
            .config
            .server_events
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match events.iter_mut().find(|(name, _)| &**name == event) {
            Some(slot) => slot.1 = handler,
            None => events.push((event.into(), handler)),
        }
        self
    }

    /// Emits an event to the other servers of the cluster (not to
    /// clients; this server does not receive it). `args` is a tuple, a
    /// `Vec` or a slice (one argument per item), `()` for none, or any
    /// other value as the only argument.
    pub async fn server_side_emit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<(), BroadcastError> {
        let args = event_args(event, args)?;
        Ok(self.0.adapter().server_side_emit(&args).await?)
    }

    /// Emits an event to the other servers and waits for each one's
    /// answer (the first argument of its acknowledgement), at most the
    /// adapter's request timeout; a single server gets an empty list at
    /// once.
    pub async fn server_side_emit_with_ack<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<Vec<Value>, ServerAckError> {
        let args = event_args(event, args).map_err(|e| ServerAckError {
            responses: Vec::new(),
            error: e.into(),
        })?;
        self.0
            .adapter()
            .server_side_emit_with_ack(&args)
            .await
            .map_err(|(error, responses)| ServerAckError {
                responses,
                error: error.into(),
            })
    }
}

pub(crate) fn add_middleware<F, Fut>(config: &NsConfig, middleware: F)
where
    F: Fn(Socket) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), super::ConnectError>> + Send + 'static,
{
    let mw: Middleware = Arc::new(move |s| Box::pin(middleware(s)));
    config
        .middlewares
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .push(mw);
}

pub(crate) fn set_connect<F, Fut>(config: &NsConfig, handler: F)
where
    F: Fn(Socket) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let h: ConnectHandler = Arc::new(move |s| Box::pin(handler(s)));
    *config.on_connect.write().unwrap_or_else(|e| e.into_inner()) = Some(h);
}

/// How a dynamic namespace recognises the names it serves.
pub enum NsMatcher {
    /// A glob where `*` matches any run of characters except `/`
    /// (`/org-*`, `/tenant/*/chat`).
    Glob(String),
    /// A predicate on the requested name.
    Predicate(Arc<dyn Fn(&str) -> bool + Send + Sync>),
}

impl NsMatcher {
    /// A glob matcher.
    pub fn glob(pattern: impl Into<String>) -> Self {
        NsMatcher::Glob(pattern.into())
    }

    /// A predicate matcher.
    pub fn predicate(f: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        NsMatcher::Predicate(Arc::new(f))
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        match self {
            NsMatcher::Glob(p) => glob_match(p.as_bytes(), name.as_bytes()),
            NsMatcher::Predicate(f) => f(name),
        }
    }
}

fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => {
            let mut i = 0;
            loop {
                if glob_match(rest, &name[i..]) {
                    return true;
                }
                if i == name.len() || name[i] == b'/' {
                    return false;
                }
                i += 1;
            }
        }
        Some((c, rest)) => name.first() == Some(c) && glob_match(rest, &name[1..]),
    }
}

/// A dynamic namespace: its children are created when a client first
/// connects to a matching name, and share its middlewares and handler.
#[derive(Clone)]
pub struct ParentNamespace {
    pub(crate) config: Arc<NsConfig>,
}

impl ParentNamespace {
    /// Registers an event handler shared by every socket of every child
    /// (see [`Namespace::on`]).
    pub fn on<F, Fut>(&self, event: &str, handler: F) -> &Self
    where
        F: Fn(Socket, super::Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        add_event(&self.config, event, handler);
        self
    }

    /// Adds a connect middleware to every child (see
    /// [`Namespace::use_middleware`]).
    pub fn use_middleware<F, Fut>(&self, middleware: F) -> &Self
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), super::ConnectError>> + Send + 'static,
    {
        add_middleware(&self.config, middleware);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_within_a_segment() {
        assert!(glob_match(b"/dyn-*", b"/dyn-42"));
        assert!(glob_match(b"/dyn-*", b"/dyn-"));
        assert!(!glob_match(b"/dyn-*", b"/dyn-4/2"));
        assert!(glob_match(b"/t/*/chat", b"/t/acme/chat"));
        assert!(!glob_match(b"/t/*/chat", b"/t/acme/news"));
        assert!(!glob_match(b"/dyn-*", b"/other"));
    }
}
