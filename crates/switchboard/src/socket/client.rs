//! One Engine.IO connection seen from Socket.IO: its namespace sockets,
//! binary reassembly, connect timeout, and packet dispatch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;

use super::namespace::{NsConfig, NsInner, NsMatcher, ParentNamespace, set_connect};
use super::{DisconnectReason, Namespace, Socket, SocketIoConfig, run};
use crate::adapter::AdapterFactory;
use crate::adapter::Handshake;
use crate::engine::{CloseReason, EngineHandler, Session};
use crate::protocol::engine::Frame;
use crate::protocol::sid::Sid;
use crate::protocol::socketio::{self, Packet, PacketKind};
use crate::protocol::value::Value;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `(pid, offset)` of a CONNECT that asks to recover a session: both
/// strings, and recovery on (the reference's conditions).
fn recovery_request(ns: &NsInner, auth: &Value) -> Option<(String, String)> {
    ns.recovery.as_ref()?;
    let pid = auth.get("pid")?.as_str()?;
    let offset = auth.get("offset")?.as_str()?;
    Some((pid.to_owned(), offset.to_owned()))
}

/// Longest namespace name accepted, in bytes.
pub(crate) const MAX_NAMESPACE_LEN: usize = 256;

struct Partial {
    packet: Packet,
    attachments: Vec<Bytes>,
}

/// Socket.IO state of one connection.
pub struct ClientState {
    sockets: Mutex<Vec<Socket>>,
    /// A binary packet waiting for its attachments (boxed: rare, and an
    /// idle connection should not carry its size).
    partial: Mutex<Option<Box<Partial>>>,
    connect_timer: Mutex<Option<tokio::task::AbortHandle>>,
}

impl ClientState {
    pub(crate) fn sockets(&self) -> Vec<Socket> {
        lock(&self.sockets).clone()
    }

    pub(crate) fn remove(&self, sid: Sid) {
        lock(&self.sockets).retain(|s| s.id() != sid);
    }

    fn find(&self, nsp: &str) -> Option<Socket> {
        lock(&self.sockets).iter().find(|s| s.ns() == nsp).cloned()
    }
}

struct Dynamic {
    matcher: NsMatcher,
    config: Arc<NsConfig>,
}

/// The Socket.IO server's engine handler: owns the namespaces.
pub struct Handler {
    config: SocketIoConfig,
    adapter: Arc<dyn AdapterFactory>,
    namespaces: RwLock<HashMap<String, Arc<NsInner>>>,
    dynamic: RwLock<Vec<Dynamic>>,
}

impl Handler {
    pub(crate) fn new(config: SocketIoConfig, adapter: Arc<dyn AdapterFactory>) -> Self {
        Handler {
            config,
            adapter,
            namespaces: RwLock::new(HashMap::new()),
            dynamic: RwLock::new(Vec::new()),
        }
    }

    pub(crate) fn static_ns(&self, path: &str) -> Namespace {
        let mut map = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        let ns = map.entry(path.to_owned()).or_insert_with(|| {
            NsInner::new(
                path.to_owned(),
                Arc::new(NsConfig::default()),
                &*self.adapter,
                self.config.connection_state_recovery.clone(),
            )
        });
        Namespace(Arc::clone(ns))
    }

    /// Every namespace (static ones and dynamic children).
    pub(crate) fn namespaces(&self) -> Vec<Namespace> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|ns| Namespace(Arc::clone(ns)))
            .collect()
    }

    pub(crate) fn get_ns(&self, path: &str) -> Option<Namespace> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .map(|ns| Namespace(Arc::clone(ns)))
    }

    pub(crate) fn dynamic_ns<F, Fut>(&self, matcher: NsMatcher, handler: F) -> ParentNamespace
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let config = Arc::new(NsConfig::default());
        set_connect(&config, handler);
        self.dynamic
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Dynamic {
                matcher,
                config: Arc::clone(&config),
            });
        ParentNamespace { config }
    }

    /// The namespace for a CONNECT: existing, or a new child of the first
    /// matching dynamic namespace.
    fn resolve(&self, path: &str) -> Option<Arc<NsInner>> {
        if let Some(ns) = self.get_ns(path) {
            return Some(ns.0);
        }
        let config = self
            .dynamic
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|d| d.matcher.matches(path))
            .map(|d| Arc::clone(&d.config))?;
        let mut map = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        let ns = map.entry(path.to_owned()).or_insert_with(|| {
            NsInner::new(
                path.to_owned(),
                config,
                &*self.adapter,
                self.config.connection_state_recovery.clone(),
            )
        });
        Some(Arc::clone(ns))
    }

    /// Closes the whole connection because the client broke the protocol.
    fn reject(&self, session: &Arc<Session<Self>>, reason: DisconnectReason) {
        for socket in session.data.sockets() {
            socket.close(reason);
        }
        session.disconnect();
    }

    fn on_packet(&self, session: &Arc<Session<Self>>, packet: Packet) {
        match packet.kind {
            PacketKind::Connect => {
                if session.data.find(&packet.nsp).is_some() {
                    self.reject(session, DisconnectReason::ForcedServerClose);
                    return;
                }
                self.connect(session, packet);
            }
            PacketKind::ConnectError => self.reject(session, DisconnectReason::ForcedServerClose),
            _ => match session.data.find(&packet.nsp) {
                Some(socket) => socket.on_packet(packet),
                None => self.reject(session, DisconnectReason::ForcedServerClose),
            },
        }
    }

    fn connect(&self, session: &Arc<Session<Self>>, packet: Packet) {
        // Long names are refused before any dynamic namespace is matched
        // (or created) for them.
        let ns = if packet.nsp.len() <= MAX_NAMESPACE_LEN {
            self.resolve(&packet.nsp)
        } else {
            None
        };
        let Some(ns) = ns else {
            let reply = socketio::encode_connect_error(&packet.nsp, "Invalid namespace", None);
            let _ = session.send(Frame::Text(reply));
            return;
        };
        let auth = packet.payload.unwrap_or_else(|| Value::Object(Vec::new()));
        let session = Arc::clone(session);
        run(Box::pin(async move {
            let recovery = recovery_request(&ns, &auth);
            let restored = match &recovery {
                Some((pid, offset)) => match ns.adapter().restore_session(pid, offset).await {
                    Ok(found) => found,
                    Err(e) => {
                        tracing::debug!(nsp = %ns.name, error = %e, "session not restored");
                        None
                    }
                },
                None => None,
            };
            let handshake = Handshake::new(Arc::clone(session.request()), auth);
            let socket = Socket::new(
                Arc::clone(&ns),
                Arc::clone(&session),
                handshake,
                restored.as_ref(),
            );
            let skip =
                restored.is_some() && ns.recovery.as_ref().is_some_and(|r| r.skip_middlewares);
            if !skip {
                let middlewares = ns
                    .config
                    .middlewares
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                for mw in middlewares {
                    if let Err(err) = mw(socket.clone()).await {
                        let reply = socketio::encode_connect_error(
                            &ns.name,
                            &err.message,
                            err.data.as_ref(),
                        );
                        let _ = session.send(Frame::Text(reply));
                        socket.discard();
                        return;
                    }
                }
            }
            {
                // Check and register under one lock: two CONNECTs for the
                // same namespace cannot both get in.
                let mut sockets = lock(&session.data.sockets);
                if session.is_closed() || sockets.iter().any(|s| s.ns() == ns.name) {
                    drop(sockets);
                    socket.discard();
                    return;
                }
                sockets.push(socket.clone());
            }
            if restored.is_some() {
                // Live packets are held from now on, until the missed ones
                // are sent.
                socket.begin_recovery();
            }
            ns.insert(socket.clone());
            // Its own-id room is implicit in the adapter: nothing to join.
            socket.set_connected();
            socket.join_pending();
            if let (Some(restored), Some((_, offset))) = (&restored, &recovery) {
                socket.join(restored.rooms.iter().cloned());
                let missed = match ns.adapter().missed_packets(&restored.rooms, offset).await {
                    Ok(missed) => missed,
                    Err(e) => {
                        tracing::debug!(sid = %socket.id(), error = %e, "missed packets unavailable");
                        Vec::new()
                    }
                };
                socket.finish_recovery(&missed, &crate::adapter::Offset::new(offset));
            }
            let reply = socketio::encode_connect(
                &ns.name,
                socket.id().as_str(),
                socket.pid().as_ref().map(Sid::as_str),
            );
            if session.send(Frame::Text(reply)).is_err() {
                socket.close(DisconnectReason::TransportError);
                return;
            }
            if let Some(timer) = lock(&session.data.connect_timer).take() {
                timer.abort();
            }
            let on_connect = ns
                .config
                .on_connect
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(handler) = on_connect {
                handler(socket).await;
            }
        }));
    }

    fn dispatch_text(&self, session: &Arc<Session<Self>>, text: &[u8]) {
        if lock(&session.data.partial).is_some() {
            // A text packet while attachments are pending.
            self.reject(session, DisconnectReason::ForcedClose);
            return;
        }
        match socketio::decode(text, self.config.max_attachments) {
            Ok(packet) if packet.kind.is_binary() && packet.attachments > 0 => {
                *lock(&session.data.partial) = Some(Box::new(Partial {
                    attachments: Vec::with_capacity(packet.attachments),
                    packet,
                }));
            }
            Ok(packet) => self.on_packet(session, packet),
            Err(e) => {
                tracing::debug!(sid = %session.id(), error = %e, "invalid Socket.IO packet");
                self.reject(session, DisconnectReason::ForcedClose);
            }
        }
    }
}

impl EngineHandler for Handler {
    type Data = ClientState;

    fn new_session_data(&self) -> ClientState {
        ClientState {
            sockets: Mutex::new(Vec::new()),
            partial: Mutex::new(None),
            connect_timer: Mutex::new(None),
        }
    }

    fn on_open(&self, session: &Arc<Session<Self>>) {
        let weak = Arc::downgrade(session);
        let timeout = self.config.connect_timeout;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(session) = weak.upgrade()
                && session.data.sockets().is_empty()
            {
                tracing::debug!(sid = %session.id(), "no namespace joined in time");
                session.disconnect();
            }
        });
        *lock(&session.data.connect_timer) = Some(timer.abort_handle());
    }

    fn on_message(&self, session: &Arc<Session<Self>>, text: Bytes) {
        self.dispatch_text(session, &text);
    }

    fn on_binary(&self, session: &Arc<Session<Self>>, data: Bytes) {
        let complete = {
            let mut partial = lock(&session.data.partial);
            match partial.as_mut() {
                None => None,
                Some(p) => {
                    p.attachments.push(data);
                    if p.attachments.len() == p.packet.attachments {
                        partial.take().map(|p| *p)
                    } else {
                        return;
                    }
                }
            }
        };
        let Some(Partial {
            mut packet,
            attachments,
        }) = complete
        else {
            // Binary data nobody announced.
            self.reject(session, DisconnectReason::ForcedClose);
            return;
        };
        if let Some(payload) = packet.payload.as_mut()
            && payload.fill_placeholders(&attachments).is_err()
        {
            self.reject(session, DisconnectReason::ForcedClose);
            return;
        }
        self.on_packet(session, packet);
    }

    fn on_close(&self, session: &Arc<Session<Self>>, reason: CloseReason) {
        if let Some(timer) = lock(&session.data.connect_timer).take() {
            timer.abort();
        }
        let reason = match reason {
            CloseReason::TransportClose => DisconnectReason::TransportClose,
            CloseReason::TransportError => DisconnectReason::TransportError,
            CloseReason::PingTimeout => DisconnectReason::PingTimeout,
            CloseReason::ParseError => DisconnectReason::ParseError,
            CloseReason::SlowConsumer => DisconnectReason::SlowConsumer,
            _ => DisconnectReason::ForcedClose,
        };
        for socket in session.data.sockets() {
            socket.close(reason);
        }
        *lock(&session.data.partial) = None;
    }
}
