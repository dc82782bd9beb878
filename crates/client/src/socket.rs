//! [`Socket`]: one namespace on a [`Manager`](crate::Manager)'s connection;
//! [`Event`]: a received event and its acknowledgement.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use switchboard::protocol::engine::Frame;
use switchboard::protocol::socketio::{self, Args, RESERVED_EVENTS};
use switchboard::{Value, from_value};
use tokio::sync::oneshot;

use crate::error::{AckError, EmitError};
use crate::manager::{
    AckResult, BufferPolicy, DisconnectReason, Inner, Queued, SocketStatus, ensure_driver,
};

/// One namespace of a connection (the JavaScript client's `Socket`).
/// Cheap to clone; clones are the same socket.
#[derive(Clone)]
pub struct Socket {
    pub(crate) inner: Arc<Inner>,
    pub(crate) nsp: Arc<str>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("nsp", &self.nsp).finish()
    }
}

/// Why [`Socket::wait_connected`] returned without a connection.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The server refused the namespace; the `connect_error` data.
    #[error("connection refused: {0:?}")]
    Refused(Value),
    /// The manager was closed or dropped.
    #[error("manager closed")]
    Closed,
}

impl Socket {
    fn with<R>(&self, f: impl FnOnce(&mut crate::manager::SockState) -> R) -> Option<R> {
        let mut st = self.inner.lock();
        st.sockets.get_mut(&*self.nsp).map(f)
    }

    /// The namespace of this socket.
    pub fn namespace(&self) -> &str {
        &self.nsp
    }

    /// Sets the `auth` payload: `f` runs at every connection and
    /// reconnection, so it can read a fresh token each time. It must return
    /// a JSON object (or `null` for none).
    pub fn set_auth(&self, f: impl Fn() -> serde_json::Value + Send + Sync + 'static) {
        self.with(|s| s.auth = Some(Arc::new(f)));
    }

    /// Connects the namespace (and the manager's connection if needed).
    /// Returns at once; see [`Socket::wait_connected`] and
    /// [`Socket::on_connect`].
    pub fn connect(&self) {
        self.with(|s| {
            s.active = true;
            if s.current() == crate::manager::SocketStatus::Refused {
                s.status.send_replace(SocketStatus::Disconnected);
            }
        });
        ensure_driver(&self.inner);
    }

    /// Leaves the namespace (`io client disconnect`); the manager's
    /// connection closes when no socket is left. Buffered packets stay
    /// buffered for a later [`Socket::connect`].
    pub fn disconnect(&self) {
        let mut st = self.inner.lock();
        let Some(s) = st.sockets.get_mut(&*self.nsp) else {
            return;
        };
        s.active = false;
        let was = s.current();
        s.status.send_replace(SocketStatus::Disconnected);
        s.pid = None;
        s.last_offset = None;
        let handlers = s.handlers.disconnect.clone();
        if was == SocketStatus::Connected {
            st.control
                .push(Frame::Text(socketio::encode_disconnect(&self.nsp)));
        }
        drop(st);
        self.inner.wake.notify_one();
        if was == SocketStatus::Connected {
            for h in handlers {
                h(DisconnectReason::IoClientDisconnect);
            }
        }
    }

    /// The current status.
    pub fn status(&self) -> SocketStatus {
        self.with(|s| s.current())
            .unwrap_or(SocketStatus::Disconnected)
    }

    /// Packets waiting in the offline buffer.
    pub fn buffered(&self) -> usize {
        self.with(|s| s.outbox.len()).unwrap_or(0)
    }

    /// Whether the namespace is connected.
    pub fn connected(&self) -> bool {
        self.status() == SocketStatus::Connected
    }

    /// The socket id the server gave (`None` when not connected).
    pub fn id(&self) -> Option<String> {
        self.with(|s| {
            if s.current() == SocketStatus::Connected {
                s.id.clone()
            } else {
                None
            }
        })
        .flatten()
    }

    /// Whether the last connection restored the previous session (the
    /// server supports connection state recovery and the client came back
    /// within its window): the missed packets were delivered.
    pub fn recovered(&self) -> bool {
        self.with(|s| s.recovered).unwrap_or(false)
    }

    /// Waits until the socket is connected (returns at once if it is).
    /// Wrap in `tokio::time::timeout` to bound the wait.
    pub async fn wait_connected(&self) -> Result<(), WaitError> {
        let Some(mut rx) = self.with(|s| s.status.subscribe()) else {
            return Err(WaitError::Closed);
        };
        loop {
            let status = *rx.borrow_and_update();
            match status {
                SocketStatus::Connected => return Ok(()),
                SocketStatus::Refused => {
                    return Err(WaitError::Refused(Value::Null));
                }
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Err(WaitError::Closed);
            }
        }
    }

    /// Calls `f` for every event named `event`.
    pub fn on(&self, event: &str, f: impl Fn(&Event) + Send + Sync + 'static) {
        let name = event.to_owned();
        self.with(|s| s.handlers.events.entry(name).or_default().push(Arc::new(f)));
    }

    /// Calls `f` for every event, before the handlers of its name.
    pub fn on_any(&self, f: impl Fn(&Event) + Send + Sync + 'static) {
        self.with(|s| s.handlers.any.push(Arc::new(f)));
    }

    /// Removes every handler of `event`.
    pub fn off(&self, event: &str) {
        self.with(|s| s.handlers.events.remove(event));
    }

    /// Calls `f` each time the namespace connects (after a reconnection too).
    pub fn on_connect(&self, f: impl Fn() + Send + Sync + 'static) {
        self.with(|s| s.handlers.connect.push(Arc::new(f)));
    }

    /// Calls `f` each time the namespace disconnects, with the reason.
    pub fn on_disconnect(&self, f: impl Fn(DisconnectReason) + Send + Sync + 'static) {
        self.with(|s| s.handlers.disconnect.push(Arc::new(f)));
    }

    /// Calls `f` when the server refuses the namespace, with the
    /// `connect_error` payload (`{message, data}`).
    pub fn on_connect_error(&self, f: impl Fn(&Value) + Send + Sync + 'static) {
        self.with(|s| s.handlers.connect_error.push(Arc::new(f)));
    }

    fn check_name(event: &str) -> Result<(), EmitError> {
        if RESERVED_EVENTS.contains(&event) {
            return Err(EmitError::Reserved(event.to_owned()));
        }
        Ok(())
    }

    /// Queues an encoded packet; returns the ack receiver when asked.
    fn queue<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
        args: Args,
        with_ack: bool,
        volatile: bool,
    ) -> Result<Option<(u64, oneshot::Receiver<AckResult>)>, EmitError> {
        Self::check_name(event)?;
        let policy = self.inner.config.buffer_policy;
        let capacity = self.inner.config.buffer_capacity;
        let mut st = self.inner.lock();
        if st.closed {
            return Err(EmitError::Closed);
        }
        let engine_open = st.engine_open;
        let Some(s) = st.sockets.get_mut(&*self.nsp) else {
            return Err(EmitError::Closed);
        };
        if volatile && !(engine_open && s.current() == SocketStatus::Connected) {
            return Ok(None);
        }
        let id = with_ack.then(|| {
            let id = s.next_ack;
            s.next_ack += 1;
            id
        });
        let encoded = socketio::encode_event(&self.nsp, event, data, args, id)?;
        if s.outbox.len() >= capacity {
            match policy {
                BufferPolicy::Reject => return Err(EmitError::BufferFull),
                BufferPolicy::DropOldest => {
                    if let Some(old) = s.outbox.pop_front()
                        && let Some(old_id) = old.ack
                        && let Some(tx) = s.acks.remove(&old_id)
                    {
                        let _ = tx.send(Err(AckError::Dropped));
                    }
                }
            }
        }
        s.outbox.push_back(Queued {
            frames: encoded.frames(),
            ack: id,
        });
        let rx = id.map(|id| {
            let (tx, rx) = oneshot::channel();
            s.acks.insert(id, tx);
            (id, rx)
        });
        drop(st);
        self.inner.wake.notify_one();
        Ok(rx)
    }

    /// Emits `event` with `data` as its one argument. Buffered while
    /// disconnected (see [`ManagerBuilder::offline_buffer`](crate::ManagerBuilder::offline_buffer)).
    /// Byte buffers (`bytes::Bytes`) inside `data` travel as binary
    /// attachments.
    pub fn emit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), EmitError> {
        self.queue(event, data, Args::One, false, false).map(|_| ())
    }

    /// Emits `event` with the items of `args` (a tuple, array or `Vec`) as
    /// its arguments.
    pub fn emit_many<T: Serialize + ?Sized>(&self, event: &str, args: &T) -> Result<(), EmitError> {
        self.queue(event, args, Args::Spread, false, false)
            .map(|_| ())
    }

    /// Emits `event` only if the socket is connected now; otherwise it is
    /// dropped (never buffered).
    pub fn emit_volatile<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<(), EmitError> {
        self.queue(event, data, Args::One, false, true).map(|_| ())
    }

    /// Emits `event` with `data` and waits up to `timeout` for the server's
    /// acknowledgement; returns its first argument as `R` (`()` ignores it).
    pub async fn emit_with_ack<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        event: &str,
        data: &T,
        timeout: Duration,
    ) -> Result<R, AckError> {
        let mut args = self.ack_values(event, data, Args::One, timeout).await?;
        let first = if args.is_empty() {
            Value::Null
        } else {
            args.swap_remove(0)
        };
        Ok(from_value(first)?)
    }

    /// Like [`Socket::emit_with_ack`] with the items of `args` (a tuple,
    /// array or `Vec`; `()` for none) as arguments.
    pub async fn emit_many_with_ack<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        event: &str,
        args: &T,
        timeout: Duration,
    ) -> Result<R, AckError> {
        let mut values = self.ack_values(event, args, Args::Spread, timeout).await?;
        let first = if values.is_empty() {
            Value::Null
        } else {
            values.swap_remove(0)
        };
        Ok(from_value(first)?)
    }

    /// Like [`Socket::emit_many_with_ack`], returning every argument of the
    /// acknowledgement as it is.
    pub async fn emit_many_with_ack_values<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
        timeout: Duration,
    ) -> Result<Vec<Value>, AckError> {
        self.ack_values(event, args, Args::Spread, timeout).await
    }

    async fn ack_values<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
        args: Args,
        timeout: Duration,
    ) -> Result<Vec<Value>, AckError> {
        let Some((id, rx)) = self.queue(event, data, args, true, false)? else {
            return Err(AckError::Closed);
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(AckError::Closed),
            Err(_) => {
                self.with(|s| s.acks.remove(&id));
                Err(AckError::Timeout)
            }
        }
    }
}

/// Answers one event that asked for an acknowledgement.
pub(crate) struct AckSender {
    inner: Arc<Inner>,
    nsp: Arc<str>,
    id: u64,
    done: AtomicBool,
}

impl AckSender {
    pub(crate) fn new(inner: Arc<Inner>, nsp: Arc<str>, id: u64) -> Self {
        AckSender {
            inner,
            nsp,
            id,
            done: AtomicBool::new(false),
        }
    }
}

/// A received event: its name, its arguments, and its acknowledgement when
/// the server asked for one.
pub struct Event {
    name: String,
    args: Vec<Value>,
    ack: Option<AckSender>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Event")
            .field("name", &self.name)
            .field("args", &self.args)
            .field("wants_ack", &self.ack.is_some())
            .finish()
    }
}

impl Event {
    pub(crate) fn new(name: String, args: Vec<Value>, ack: Option<AckSender>) -> Self {
        Event { name, args, ack }
    }

    /// The event name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The arguments (binary attachments as [`Value::Binary`]).
    pub fn args(&self) -> &[Value] {
        &self.args
    }

    /// Argument `index` as typed data (`Bytes` for binary).
    pub fn arg<T: DeserializeOwned>(
        &self,
        index: usize,
    ) -> Result<T, switchboard::protocol::value::ValueError> {
        from_value(self.args.get(index).cloned().unwrap_or_default())
    }

    /// The first argument as typed data.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, switchboard::protocol::value::ValueError> {
        self.arg(0)
    }

    /// Whether the server asked for an acknowledgement.
    pub fn wants_ack(&self) -> bool {
        self.ack.is_some()
    }

    /// Answers the event with `data` as the one argument of the
    /// acknowledgement. Only the first call sends; later ones and calls on
    /// an event that asked for none do nothing. Dropped if the socket is no
    /// longer connected (the server has forgotten the request).
    pub fn ack<T: Serialize + ?Sized>(&self, data: &T) -> Result<(), EmitError> {
        self.ack_with(data, Args::One)
    }

    /// Answers with the items of `args` as arguments.
    pub fn ack_many<T: Serialize + ?Sized>(&self, args: &T) -> Result<(), EmitError> {
        self.ack_with(args, Args::Spread)
    }

    fn ack_with<T: Serialize + ?Sized>(&self, data: &T, args: Args) -> Result<(), EmitError> {
        let Some(a) = &self.ack else { return Ok(()) };
        if a.done.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let encoded = socketio::encode_ack(&a.nsp, a.id, data, args)?;
        let mut st = a.inner.lock();
        let connected = st
            .sockets
            .get(&*a.nsp)
            .is_some_and(|s| s.current() == SocketStatus::Connected);
        if connected && st.engine_open {
            st.control.extend(encoded.frames());
            drop(st);
            a.inner.wake.notify_one();
        }
        Ok(())
    }
}
