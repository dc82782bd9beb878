//! Namespaces: static ones, and dynamic ones created on first connect.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};

use super::broadcast::BroadcastOperator;
use super::{ConnectHandler, Middleware, Socket};
use crate::adapter::{Adapter, AdapterFactory, Room};
use crate::protocol::sid::{Sid, SidMap};

/// Middlewares and connection handler of a namespace; shared by every
/// child of a dynamic namespace.
#[derive(Default)]
pub(crate) struct NsConfig {
    pub(crate) middlewares: RwLock<Vec<Middleware>>,
    pub(crate) on_connect: RwLock<Option<ConnectHandler>>,
    /// Event handlers shared by every socket of the namespace.
    pub(crate) events: RwLock<Vec<(Box<str>, super::EventHandler)>>,
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
}

impl NsInner {
    pub(crate) fn new(
        name: String,
        config: Arc<NsConfig>,
        factory: &dyn AdapterFactory,
    ) -> Arc<Self> {
        let ns = Arc::new(NsInner {
            name,
            config,
            sockets: RwLock::new(SidMap::default()),
            adapter: OnceLock::new(),
            ack_ids: AtomicU64::new(0),
        });
        let adapter = factory.create(LocalNamespace(Arc::downgrade(&ns)));
        let _ = ns.adapter.set(adapter);
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

/// The adapter's view of its namespace: the sockets of this node.
#[derive(Clone)]
pub struct LocalNamespace(Weak<NsInner>);

impl LocalNamespace {
    /// The connected local socket with this id.
    pub fn socket(&self, sid: Sid) -> Option<Socket> {
        self.0.upgrade()?.get(sid)
    }

    /// Every connected local socket.
    pub fn sockets(&self) -> Vec<Socket> {
        self.0.upgrade().map(|ns| ns.all()).unwrap_or_default()
    }

    /// The namespace name.
    pub fn name(&self) -> Option<String> {
        Some(self.0.upgrade()?.name.clone())
    }
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

    /// A broadcast to every socket of the namespace.
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(Arc::clone(&self.0))
    }

    /// A broadcast to the sockets of a room.
    pub fn to(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.broadcast().to(room)
    }

    /// A broadcast to every socket except those in a room.
    pub fn except(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.broadcast().except(room)
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
