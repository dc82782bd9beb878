//! A socket: one client connected to one namespace.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::broadcast::BroadcastOperator;
use super::namespace::NsInner;
use super::{
    AckError, DisconnectHandler, DisconnectReason, EmitError, EventHandler, Handler,
    PacketMiddleware, run,
};
use crate::adapter::{
    AckEvent, AckResponse, AckSink, BroadcastOptions, Handshake, LocalSocket, MissedPacket, Offset,
    Outgoing, PersistedSession, Room,
};
use crate::engine::{SendError, Session};
use crate::protocol::engine::Frame;
use crate::protocol::sid::Sid;
use crate::protocol::socketio::{self, Args, Encoded, Packet, PacketKind, RESERVED_EVENTS};
use crate::protocol::value::{Value, ValueError, from_value};

pub(crate) enum AckSlot {
    Single(oneshot::Sender<Vec<Value>>),
    Broadcast(AckSink),
}

/// A live packet held while a recovered socket's missed packets are sent.
struct Held {
    frames: Vec<Frame>,
    volatile: bool,
    offset: Option<Offset>,
}

#[derive(Default)]
struct Handlers {
    /// Event handlers: a few per socket, so a list (smaller than a map,
    /// and as fast to search at this size).
    events: Vec<(Box<str>, EventHandler)>,
    any: Vec<EventHandler>,
    disconnecting: Vec<DisconnectHandler>,
    disconnect: Vec<DisconnectHandler>,
    packet_middlewares: Vec<PacketMiddleware>,
}

pub(crate) struct SocketInner {
    id: Sid,
    pub(crate) ns: Arc<NsInner>,
    pub(crate) session: Arc<Session<Handler>>,
    handshake: Handshake,
    handlers: Mutex<Handlers>,
    acks: Mutex<HashMap<u64, AckSlot>>,
    connected: AtomicBool,
    closed: AtomicBool,
    data: Mutex<serde_json::Value>,
    /// Rooms joined before the socket was connected (in a middleware).
    pending_rooms: Mutex<Vec<Room>>,
    /// The private id of connection state recovery (when it is on).
    pid: Option<Sid>,
    /// Whether this socket is a recovered session.
    recovered: bool,
    /// Set while a recovered socket's missed packets are being sent: live
    /// packets are held (in `held`) until then.
    recovering: AtomicBool,
    held: Mutex<Option<Vec<Held>>>,
    /// After a recovery, the offset of the last packet replayed: a stored
    /// packet delivered late (a cluster store's live path may lag behind
    /// its read) at or before it is not sent twice. Cleared after a few
    /// later packets (`replayed_checks` counts them down).
    replayed: Mutex<Option<Offset>>,
    replayed_checks: std::sync::atomic::AtomicU32,
}

/// How many later packets a recovered socket checks against its replayed
/// offset before it stops checking.
const REPLAYED_CHECKS: u32 = 64;

/// A client connected to a namespace. Cheap to clone; every clone is the
/// same socket.
#[derive(Clone)]
pub struct Socket(pub(crate) Arc<SocketInner>);

impl fmt::Debug for Socket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.0.id)
            .field("nsp", &self.0.ns.name)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An event received from a client.
pub struct Event {
    name: String,
    args: Vec<Value>,
    ack: Option<AckSender>,
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("name", &self.name)
            .field("args", &self.args)
            .field("wants_ack", &self.ack.is_some())
            .finish()
    }
}

impl Event {
    /// The event name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The arguments, with binary attachments in place.
    pub fn args(&self) -> &[Value] {
        &self.args
    }

    /// Takes the arguments out of the event.
    pub fn take_args(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.args)
    }

    /// Argument `index` converted to `T`.
    pub fn arg<T: DeserializeOwned>(&self, index: usize) -> Result<T, ValueError> {
        from_value(self.args.get(index).cloned().unwrap_or(Value::Null))
    }

    /// Whether the client asked for an acknowledgement.
    pub fn wants_ack(&self) -> bool {
        self.ack.is_some()
    }

    /// Takes the acknowledgement callback, to answer later.
    pub fn take_ack(&mut self) -> Option<AckSender> {
        self.ack.take()
    }

    /// Answers the client's acknowledgement with one argument. Does nothing
    /// when the client did not ask for one or it was already answered.
    pub fn ack<T: Serialize + ?Sized>(&mut self, data: &T) -> Result<(), EmitError> {
        match self.ack.take() {
            Some(ack) => ack.send(data),
            None => Ok(()),
        }
    }

    /// Answers the acknowledgement with several arguments (`args` must
    /// serialize to an array: a tuple, a `Vec`, a slice of [`Value`]).
    pub fn ack_many<T: Serialize + ?Sized>(&mut self, args: &T) -> Result<(), EmitError> {
        match self.ack.take() {
            Some(ack) => ack.send_many(args),
            None => Ok(()),
        }
    }
}

/// Answers one client acknowledgement, at most once.
pub struct AckSender {
    socket: Socket,
    id: u64,
}

impl AckSender {
    /// Answers with one argument.
    pub fn send<T: Serialize + ?Sized>(self, data: &T) -> Result<(), EmitError> {
        let packet = socketio::encode_ack(&self.socket.0.ns.name, self.id, data, Args::One)?;
        self.socket.send_encoded(&packet, false)
    }

    /// Answers with several arguments (`args` must serialize to an array).
    pub fn send_many<T: Serialize + ?Sized>(self, args: &T) -> Result<(), EmitError> {
        let packet = socketio::encode_ack(&self.socket.0.ns.name, self.id, args, Args::Spread)?;
        self.socket.send_encoded(&packet, false)
    }
}

impl Socket {
    /// A new socket, or the recovered one of a persisted session.
    pub(crate) fn new(
        ns: Arc<NsInner>,
        session: Arc<Session<Handler>>,
        handshake: Handshake,
        restored: Option<&PersistedSession>,
    ) -> Self {
        let (id, pid, data) = match restored {
            Some(r) => (r.sid, Some(r.pid), r.data.clone()),
            None => (
                Sid::new(),
                ns.recovery.is_some().then(Sid::new),
                // As the reference's `socket.data`: an empty object.
                serde_json::Value::Object(serde_json::Map::new()),
            ),
        };
        Socket(Arc::new(SocketInner {
            id,
            ns,
            session,
            handshake,
            handlers: Mutex::new(Handlers::default()),
            acks: Mutex::new(HashMap::new()),
            connected: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            data: Mutex::new(data),
            pending_rooms: Mutex::new(Vec::new()),
            pid,
            recovered: restored.is_some(),
            recovering: AtomicBool::new(false),
            held: Mutex::new(None),
            replayed: Mutex::new(None),
            replayed_checks: std::sync::atomic::AtomicU32::new(0),
        }))
    }

    /// The socket id (20 URL-safe characters, distinct from the engine
    /// session id).
    pub fn id(&self) -> Sid {
        self.0.id
    }

    /// The namespace of this socket.
    pub fn namespace(&self) -> super::Namespace {
        super::Namespace(Arc::clone(&self.0.ns))
    }

    /// The namespace name.
    pub fn ns(&self) -> &str {
        &self.0.ns.name
    }

    /// The handshake: headers, query, auth payload, address, time.
    pub fn handshake(&self) -> &Handshake {
        &self.0.handshake
    }

    /// The engine session id of the connection carrying this socket.
    pub fn session_id(&self) -> Sid {
        self.0.session.id()
    }

    /// The transport in use (`polling` or `websocket`).
    pub fn transport(&self) -> &'static str {
        self.0.session.transport().as_str()
    }

    /// Whether the socket is connected.
    pub fn connected(&self) -> bool {
        self.0.connected.load(Ordering::Acquire)
    }

    /// Whether this socket came back through connection state recovery:
    /// same id, rooms and data as before its disconnection, and the
    /// packets it missed were sent to it before the CONNECT answer.
    pub fn recovered(&self) -> bool {
        self.0.recovered
    }

    /// The private session id of connection state recovery (sent to the
    /// client in the CONNECT answer), when recovery is on.
    pub fn pid(&self) -> Option<Sid> {
        self.0.pid
    }

    /// Stores typed data on the socket. It is serialized, so that it is
    /// visible to [`fetch_sockets`](BroadcastOperator::fetch_sockets) on
    /// every node of a cluster.
    pub fn set_data<T: Serialize>(&self, data: &T) -> Result<(), serde_json::Error> {
        *lock(&self.0.data) = serde_json::to_value(data)?;
        Ok(())
    }

    /// The data stored with [`Socket::set_data`], as `T`.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(lock(&self.0.data).clone())
    }

    pub(crate) fn data_value(&self) -> serde_json::Value {
        lock(&self.0.data).clone()
    }

    /// Changes the handlers, unless the socket has left (a late
    /// registration would keep the socket alive through its closures).
    fn register(&self, change: impl FnOnce(&mut Handlers)) {
        let mut handlers = lock(&self.0.handlers);
        if !self.0.closed.load(Ordering::Acquire) {
            change(&mut handlers);
        }
    }

    /// Registers the handler of an event.
    pub fn on<F, Fut>(&self, event: impl Into<String>, handler: F)
    where
        F: Fn(Socket, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler: EventHandler = Arc::new(move |s, e| Box::pin(handler(s, e)));
        let event: Box<str> = event.into().into_boxed_str();
        self.register(
            |h| match h.events.iter_mut().find(|(name, _)| *name == event) {
                Some(slot) => slot.1 = handler,
                None => h.events.push((event, handler)),
            },
        );
    }

    /// Registers a handler called for every event (before the event's own
    /// handler, which keeps the acknowledgement).
    pub fn on_any<F, Fut>(&self, handler: F)
    where
        F: Fn(Socket, Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.register(|h| h.any.push(Arc::new(move |s, e| Box::pin(handler(s, e)))));
    }

    /// Registers a handler called when the socket is about to leave; its
    /// rooms are still visible until the handler first waits (it is polled
    /// once before the socket leaves its rooms).
    pub fn on_disconnecting<F, Fut>(&self, handler: F)
    where
        F: Fn(Socket, DisconnectReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.register(|h| {
            h.disconnecting
                .push(Arc::new(move |s, r| Box::pin(handler(s, r))))
        });
    }

    /// Registers a handler called once the socket has left.
    pub fn on_disconnect<F, Fut>(&self, handler: F)
    where
        F: Fn(Socket, DisconnectReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.register(|h| {
            h.disconnect
                .push(Arc::new(move |s, r| Box::pin(handler(s, r))))
        });
    }

    /// Adds a per-packet middleware: it sees each incoming event before its
    /// handlers and may refuse it (the event is dropped, and an ack it asked
    /// for is answered with `{"error": <message>}`).
    pub fn use_packet<F>(&self, middleware: F)
    where
        F: Fn(&Socket, &Event) -> Result<(), String> + Send + Sync + 'static,
    {
        self.register(|h| h.packet_middlewares.push(Arc::new(middleware)));
    }

    /// Emits an event with one argument.
    ///
    /// With connection state recovery on, the event goes through the
    /// adapter (to the room of this socket's id), as the reference does, so
    /// that it is stored and replayed if the client is away.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), EmitError> {
        check_event(event)?;
        let packet = socketio::encode_event(&self.0.ns.name, event, data, Args::One, None)?;
        self.emit_stored(packet)
    }

    /// Emits an event whose arguments are the items of `args` (a tuple, a
    /// `Vec`, a slice of [`Value`]; `()` for none).
    pub fn emit_many<T: Serialize + ?Sized>(&self, event: &str, args: &T) -> Result<(), EmitError> {
        check_event(event)?;
        let packet = socketio::encode_event(&self.0.ns.name, event, args, Args::Spread, None)?;
        self.emit_stored(packet)
    }

    /// Sends an event already encoded with [`crate::protocol::socketio`] for
    /// this socket's namespace (without ack id): one encoding can then serve
    /// many sockets (as broadcasts do).
    /// The packet is moved into the socket's queue: a broadcast hands each
    /// socket a clone of the shared bytes (a reference count), nothing more.
    pub fn emit_encoded(&self, packet: Encoded) -> Result<(), EmitError> {
        if self.0.ns.recovery.is_some() {
            return self.emit_stored(packet);
        }
        if packet.attachments.is_empty() {
            if !self.0.connected.load(Ordering::Acquire) {
                return Err(EmitError::Disconnected);
            }
            return self
                .0
                .session
                .send(Frame::Text(packet.text))
                .map(|_| ())
                .map_err(emit_error);
        }
        self.send_encoded(&packet, false)
    }

    /// Sends an event, through the adapter when connection state recovery
    /// is on (stored, offset appended), directly otherwise. The adapter is
    /// asked at once, so consecutive emits keep their order; an adapter
    /// that waits (a cluster store) finishes on a task of its own.
    fn emit_stored(&self, packet: Encoded) -> Result<(), EmitError> {
        if self.0.ns.recovery.is_none() {
            return self.send_encoded(&packet, false);
        }
        let adapter = Arc::clone(self.0.ns.adapter());
        let opts = BroadcastOptions {
            rooms: vec![self.0.id.to_string()],
            ..BroadcastOptions::default()
        };
        run(Box::pin(async move {
            if let Err(e) = adapter.broadcast(&packet, &opts).await {
                tracing::debug!(error = %e, "emit through the adapter failed");
            }
        }));
        Ok(())
    }

    /// Emits an event that may be dropped if the client is not ready for it.
    pub fn emit_volatile<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<(), EmitError> {
        check_event(event)?;
        let packet = socketio::encode_event(&self.0.ns.name, event, data, Args::One, None)?;
        self.send_encoded(&packet, true)
    }

    /// Emits an event with one argument and waits for the client's
    /// acknowledgement, until the socket disconnects.
    pub async fn emit_with_ack<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<Vec<Value>, AckError> {
        self.request(event, data, None).await
    }

    /// Emits an event and waits at most `timeout` for its acknowledgement.
    pub async fn emit_with_ack_timeout<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
        timeout: Duration,
    ) -> Result<Vec<Value>, AckError> {
        self.request(event, data, Some(timeout)).await
    }

    async fn request<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
        timeout: Option<Duration>,
    ) -> Result<Vec<Value>, AckError> {
        check_event(event)?;
        let id = self.0.ns.next_ack_id();
        let packet = socketio::encode_event(&self.0.ns.name, event, data, Args::One, Some(id))
            .map_err(EmitError::from)?;
        let (tx, rx) = oneshot::channel();
        lock(&self.0.acks).insert(id, AckSlot::Single(tx));
        // However this future ends (answer, timeout, or dropped by the
        // caller), the slot goes.
        let _slot = ForgetAck { socket: self, id };
        self.send_encoded(&packet, false)?;
        let answer = match timeout {
            Some(t) => match tokio::time::timeout(t, rx).await {
                Ok(r) => r,
                Err(_) => return Err(AckError::Timeout),
            },
            None => rx.await,
        };
        answer.map_err(|_| AckError::Disconnected)
    }

    /// Joins rooms.
    ///
    /// In a connect middleware (before the socket is connected) the rooms
    /// are remembered and joined once it connects.
    pub fn join<R: Into<Room>>(&self, rooms: impl IntoIterator<Item = R>) {
        let rooms: Vec<Room> = rooms.into_iter().map(Into::into).collect();
        if !self.connected() {
            if !self.0.closed.load(Ordering::Acquire) {
                lock(&self.0.pending_rooms).extend(rooms);
            }
            return;
        }
        self.0.ns.adapter().add_all(self.0.id, &rooms);
    }

    /// Joins the rooms remembered before the socket was connected.
    pub(crate) fn join_pending(&self) {
        let rooms = std::mem::take(&mut *lock(&self.0.pending_rooms));
        if !rooms.is_empty() {
            self.0.ns.adapter().add_all(self.0.id, &rooms);
        }
    }

    /// Drops a socket that never connected (refused, or a duplicate).
    pub(crate) fn discard(&self) {
        self.close(DisconnectReason::ForcedServerClose);
    }

    /// Leaves a room.
    pub fn leave(&self, room: &str) {
        self.0.ns.adapter().del(self.0.id, room);
    }

    /// The socket's rooms (its own id room included).
    pub fn rooms(&self) -> Vec<Room> {
        self.0.ns.adapter().socket_rooms(self.0.id)
    }

    /// Broadcasts to every other socket of the namespace.
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(Arc::clone(&self.0.ns)).except(self.0.id.to_string())
    }

    /// Broadcasts to the sockets of a room, except this one.
    pub fn to(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.broadcast().to(room)
    }

    /// Broadcasts to the namespace except the sockets in `room` and this one.
    pub fn except(&self, room: impl Into<Room>) -> BroadcastOperator {
        self.broadcast().except(room)
    }

    /// Disconnects this socket from its namespace (the client receives a
    /// DISCONNECT and does not reconnect by itself).
    pub fn disconnect(&self) {
        self.disconnect_with(false);
    }

    /// Disconnects every namespace of this client and closes its connection.
    pub fn disconnect_all(&self) {
        self.disconnect_with(true);
    }

    pub(crate) fn disconnect_with(&self, close: bool) {
        if close {
            let sockets = self.0.session.data.sockets();
            for s in sockets {
                s.leave_namespace();
            }
            self.0.session.disconnect();
        } else {
            self.leave_namespace();
        }
    }

    fn leave_namespace(&self) {
        if !self.connected() {
            return;
        }
        let _ = self
            .0
            .session
            .send(Frame::Text(socketio::encode_disconnect(&self.0.ns.name)));
        self.close(DisconnectReason::ServerNamespaceDisconnect);
    }

    pub(crate) fn send_frames(&self, frames: &[Frame], volatile: bool) -> Result<bool, EmitError> {
        send_frames(&self.0, frames, volatile)
    }

    pub(crate) fn send_encoded(&self, packet: &Encoded, volatile: bool) -> Result<(), EmitError> {
        if packet.attachments.is_empty() {
            // The common case: one text frame, no allocation.
            let frame = [Frame::Text(packet.text.clone())];
            return self.send_frames(&frame, volatile).map(|_| ());
        }
        self.send_frames(&packet.frames(), volatile).map(|_| ())
    }

    pub(crate) fn forget_ack(&self, id: u64) {
        lock(&self.0.acks).remove(&id);
    }

    /// Holds live packets from now on, until [`Socket::finish_recovery`].
    pub(crate) fn begin_recovery(&self) {
        *lock(&self.0.held) = Some(Vec::new());
        self.0.recovering.store(true, Ordering::Release);
    }

    /// Sends the packets a recovered socket missed (stored after
    /// `from`), then the live packets held meanwhile that were not among
    /// them, in order, and goes live. Runs under the hold lock, so a live
    /// packet arriving meanwhile waits and follows.
    pub(crate) fn finish_recovery(&self, missed: &[MissedPacket], from: &Offset) {
        let mut held = lock(&self.0.held);
        let mut last = from.clone();
        for m in missed {
            let _ = self.send_frames(&m.packet.frames(), false);
            last = m.offset.clone();
        }
        for h in held.take().unwrap_or_default() {
            // A held packet already replayed (stored before the missed
            // packets were read) is not sent twice.
            if h.offset.as_ref().is_some_and(|o| !o.is_after(&last)) {
                continue;
            }
            let _ = self.send_frames(&h.frames, h.volatile);
            if let Some(o) = h.offset
                && o.is_after(&last)
            {
                last = o;
            }
        }
        *lock(&self.0.replayed) = Some(last);
        self.0
            .replayed_checks
            .store(REPLAYED_CHECKS, Ordering::Release);
        self.0.recovering.store(false, Ordering::Release);
    }

    pub(crate) fn set_connected(&self) {
        self.0.connected.store(true, Ordering::Release);
    }

    /// Handles a packet for this socket (after attachments were filled in).
    pub(crate) fn on_packet(&self, packet: Packet) {
        match packet.kind {
            PacketKind::Event | PacketKind::BinaryEvent => {
                let Some(Value::Array(mut args)) = packet.payload else {
                    return;
                };
                let name = match args.remove(0) {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    _ => return,
                };
                let ack = packet.id.map(|id| AckSender {
                    socket: self.clone(),
                    id,
                });
                self.dispatch(Event { name, args, ack });
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                let Some(id) = packet.id else { return };
                let args = match packet.payload {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                let slot = lock(&self.0.acks).remove(&id);
                match slot {
                    Some(AckSlot::Single(tx)) => {
                        let _ = tx.send(args);
                    }
                    Some(AckSlot::Broadcast(tx)) => {
                        let _ = tx.send(AckEvent::Ack(AckResponse {
                            socket: Some(self.0.id),
                            args,
                        }));
                    }
                    None => {}
                }
            }
            PacketKind::Disconnect => self.close(DisconnectReason::ClientNamespaceDisconnect),
            PacketKind::Connect | PacketKind::ConnectError => {}
        }
    }

    fn dispatch(&self, mut event: Event) {
        let (specific, any, middlewares) = {
            let h = lock(&self.0.handlers);
            (
                h.events
                    .iter()
                    .find(|(name, _)| **name == *event.name)
                    .map(|(_, handler)| Arc::clone(handler))
                    .or_else(|| self.0.ns.config.handler(&event.name)),
                h.any.clone(),
                h.packet_middlewares.clone(),
            )
        };
        for mw in &middlewares {
            if let Err(message) = mw(self, &event) {
                tracing::debug!(sid = %self.0.id, event = %event.name, %message, "event refused by middleware");
                let _ = event.ack(&serde_json::json!({ "error": message }));
                return;
            }
        }
        for handler in &any {
            let copy = Event {
                name: event.name.clone(),
                args: event.args.clone(),
                ack: if specific.is_none() && any.len() == 1 {
                    event.ack.take()
                } else {
                    None
                },
            };
            run(handler(self.clone(), copy));
        }
        if let Some(handler) = specific {
            run(handler(self.clone(), event));
        }
    }

    /// Leaves the namespace with `reason`: `disconnecting` handlers (rooms
    /// still visible), then rooms and registrations are dropped, pending
    /// acknowledgements fail, then `disconnect` handlers.
    pub(crate) fn close(&self, reason: DisconnectReason) {
        if self.0.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (disconnecting, disconnect) = {
            let h = lock(&self.0.handlers);
            (h.disconnecting.clone(), h.disconnect.clone())
        };
        let was_connected = self.connected();
        if was_connected {
            for handler in &disconnecting {
                run(handler(self.clone(), reason));
            }
            if let (Some(pid), true) = (self.0.pid, reason.is_recoverable()) {
                let session = PersistedSession {
                    sid: self.0.id,
                    pid,
                    rooms: self.rooms(),
                    data: self.data_value(),
                };
                let adapter = Arc::clone(self.0.ns.adapter());
                run(Box::pin(
                    async move { adapter.persist_session(session).await },
                ));
            }
        }
        // Disconnected first: a concurrent join (which the adapter checks
        // against `connected` under its index lock) cannot slip in after
        // the rooms are removed.
        self.0.connected.store(false, Ordering::Release);
        self.0.ns.remove(self.0.id);
        self.0.ns.adapter().del_all(self.0.id);
        self.0.session.data.remove(self.0.id);
        lock(&self.0.acks).clear();
        lock(&self.0.pending_rooms).clear();
        if was_connected {
            for handler in &disconnect {
                run(handler(self.clone(), reason));
            }
        }
        // Handlers hold clones of this socket: drop them to break cycles.
        *lock(&self.0.handlers) = Handlers::default();
    }
}

/// Removes an ack slot when the request waiting on it ends.
struct ForgetAck<'a> {
    socket: &'a Socket,
    id: u64,
}

impl Drop for ForgetAck<'_> {
    fn drop(&mut self) {
        self.socket.forget_ack(self.id);
    }
}

fn check_event(event: &str) -> Result<(), EmitError> {
    if RESERVED_EVENTS.contains(&event) {
        return Err(EmitError::ReservedEvent(event.to_owned()));
    }
    Ok(())
}

impl LocalSocket for SocketInner {
    fn id(&self) -> Sid {
        self.id
    }

    fn deliver(&self, packet: Outgoing<'_>) -> bool {
        if self.recovering.load(Ordering::Acquire) {
            let mut held = lock(&self.held);
            if let Some(held) = held.as_mut() {
                held.push(Held {
                    frames: packet.frames.to_vec(),
                    volatile: packet.volatile,
                    offset: packet.offset.cloned(),
                });
                return true;
            }
        }
        if self.replayed_checks.load(Ordering::Acquire) > 0
            && let Some(offset) = packet.offset
        {
            let mut replayed = lock(&self.replayed);
            if let Some(last) = replayed.as_ref() {
                if !offset.is_after(last) {
                    // Already replayed during the recovery.
                    return true;
                }
                if self.replayed_checks.fetch_sub(1, Ordering::AcqRel) == 1 {
                    *replayed = None;
                }
            }
        }
        matches!(send_frames(self, packet.frames, packet.volatile), Ok(true))
    }

    fn expect_ack(&self, id: u64, sink: AckSink) {
        lock(&self.acks).insert(id, AckSlot::Broadcast(sink));
    }

    fn forget_ack(&self, id: u64) {
        lock(&self.acks).remove(&id);
    }

    fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    fn data(&self) -> serde_json::Value {
        lock(&self.data).clone()
    }

    fn handshake(&self) -> Handshake {
        self.handshake.clone()
    }

    fn disconnect(&self, close: bool) {
        if let Some(socket) = self.ns.get(self.id) {
            socket.disconnect_with(close);
        }
    }
}

/// Queues frames on a socket's session, if it is connected.
fn send_frames(inner: &SocketInner, frames: &[Frame], volatile: bool) -> Result<bool, EmitError> {
    if !inner.connected.load(Ordering::Acquire) {
        return Err(EmitError::Disconnected);
    }
    inner
        .session
        .send_frames(frames, volatile)
        .map_err(emit_error)
}

/// What a refused send means to an emitter.
fn emit_error(e: SendError) -> EmitError {
    match e {
        SendError::SlowConsumer => EmitError::SlowConsumer,
        _ => EmitError::Disconnected,
    }
}
