//! Broadcast operators: which sockets, with which flags, doing what.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use super::namespace::{Namespace, NsInner};
use super::{BroadcastAckError, BroadcastError, EmitError};
use crate::adapter::{AckEvent, AckResponse, BroadcastOptions, Room, SocketInfo};
use crate::protocol::socketio::{self, Args, RESERVED_EVENTS};

/// Default wait for broadcast acknowledgements when no timeout is set.
pub const DEFAULT_BROADCAST_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Selects sockets of a namespace (rooms, exceptions, flags) and acts on
/// them through the adapter, on this node and the rest of the cluster.
#[derive(Clone)]
pub struct BroadcastOperator {
    ns: Arc<NsInner>,
    opts: BroadcastOptions,
    timeout: Option<Duration>,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Arc<NsInner>) -> Self {
        BroadcastOperator {
            ns,
            opts: BroadcastOptions::default(),
            timeout: None,
        }
    }

    /// Targets the sockets of a room as well (rooms add up).
    pub fn to(mut self, room: impl Into<Room>) -> Self {
        self.opts.rooms.push(room.into());
        self
    }

    /// Same as [`to`](Self::to).
    pub fn within(self, room: impl Into<Room>) -> Self {
        self.to(room)
    }

    /// Targets the sockets of several rooms.
    pub fn to_many<R: Into<Room>>(mut self, rooms: impl IntoIterator<Item = R>) -> Self {
        self.opts.rooms.extend(rooms.into_iter().map(Into::into));
        self
    }

    /// Excludes the sockets of a room (a socket id is a room too).
    pub fn except(mut self, room: impl Into<Room>) -> Self {
        self.opts.except.push(room.into());
        self
    }

    /// Only the sockets of this node.
    pub fn local(mut self) -> Self {
        self.opts.local = true;
        self
    }

    /// Lets the packet be dropped for clients that are not ready for it.
    pub fn volatile(mut self) -> Self {
        self.opts.volatile = true;
        self
    }

    /// How long [`emit_with_ack`](Self::emit_with_ack) waits for answers.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The selection.
    pub fn options(&self) -> &BroadcastOptions {
        &self.opts
    }

    /// Emits an event with one argument; it is encoded once and the bytes
    /// are shared by every recipient.
    pub async fn emit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<(), BroadcastError> {
        self.send(event, data, Args::One).await
    }

    /// Emits an event whose arguments are the items of `args`.
    pub async fn emit_many<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<(), BroadcastError> {
        self.send(event, args, Args::Spread).await
    }

    async fn send<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
        args: Args,
    ) -> Result<(), BroadcastError> {
        check(event)?;
        let packet = socketio::encode_event(&self.ns.name, event, data, args, None)
            .map_err(EmitError::from)?;
        self.ns.adapter().broadcast(&packet, &self.opts).await?;
        Ok(())
    }

    /// Emits an event asking every recipient for an acknowledgement, and
    /// waits for all of them (at most the timeout, 5 s by default). On
    /// timeout the error carries the answers received so far.
    pub async fn emit_with_ack<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<Vec<AckResponse>, BroadcastAckError> {
        self.request(event, data, Args::One).await
    }

    /// [`emit_with_ack`](Self::emit_with_ack) with the items of `args` as
    /// the arguments (`()` or an empty slice for none).
    pub async fn emit_many_with_ack<T: Serialize + ?Sized>(
        &self,
        event: &str,
        args: &T,
    ) -> Result<Vec<AckResponse>, BroadcastAckError> {
        self.request(event, args, Args::Spread).await
    }

    async fn request<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
        args: Args,
    ) -> Result<Vec<AckResponse>, BroadcastAckError> {
        let fail = |error| BroadcastAckError {
            responses: Vec::new(),
            error,
        };
        check(event).map_err(fail)?;
        let id = self.ns.next_ack_id();
        let packet = socketio::encode_event(&self.ns.name, event, data, args, Some(id))
            .map_err(|e| fail(BroadcastError::Emit(e.into())))?;
        let timeout = self.timeout.unwrap_or(DEFAULT_BROADCAST_ACK_TIMEOUT);
        let (tx, mut rx) = mpsc::unbounded_channel();
        // However this ends (answers, timeout, or the caller dropping this
        // future), no recipient keeps a slot for this id.
        let _slots = ForgetBroadcastAck { ns: &self.ns, id };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let adapter = self.ns.adapter();
        adapter
            .broadcast_with_ack(&packet, id, &self.opts, timeout, tx)
            .await
            .map_err(|e| fail(e.into()))?;
        // Every server reports how many clients it asked; the answers are
        // complete once all servers reported and that many answers came.
        let servers = if self.opts.local {
            1
        } else {
            adapter.server_count().await.map_err(|e| fail(e.into()))?
        };
        let (mut reported, mut expected) = (0usize, 0usize);
        let mut responses = Vec::new();
        while reported < servers || responses.len() < expected {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(AckEvent::ClientCount(n)) => {
                        reported += 1;
                        expected += n;
                    }
                    Some(AckEvent::Ack(r)) => responses.push(r),
                    // Every recipient is gone: no more answers can come.
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
        if reported < servers || responses.len() < expected {
            return Err(BroadcastAckError {
                responses,
                error: BroadcastError::Timeout,
            });
        }
        Ok(responses)
    }

    /// Every selected socket, on every node: its description and
    /// operations (emit, join, leave, disconnect) that go through the
    /// adapter, so they work wherever the socket lives.
    pub async fn fetch_sockets(&self) -> Result<Vec<RemoteSocket>, BroadcastError> {
        let infos = self.ns.adapter().fetch_sockets(&self.opts).await?;
        Ok(infos
            .into_iter()
            .map(|info| RemoteSocket {
                info,
                ns: Arc::clone(&self.ns),
            })
            .collect())
    }

    /// Makes every selected socket join `rooms`.
    pub async fn join<R: Into<Room>>(
        &self,
        rooms: impl IntoIterator<Item = R>,
    ) -> Result<(), BroadcastError> {
        let rooms: Vec<Room> = rooms.into_iter().map(Into::into).collect();
        Ok(self.ns.adapter().add_sockets(&self.opts, &rooms).await?)
    }

    /// Makes every selected socket leave `rooms`.
    pub async fn leave<R: Into<Room>>(
        &self,
        rooms: impl IntoIterator<Item = R>,
    ) -> Result<(), BroadcastError> {
        let rooms: Vec<Room> = rooms.into_iter().map(Into::into).collect();
        Ok(self.ns.adapter().del_sockets(&self.opts, &rooms).await?)
    }

    /// Disconnects every selected socket; with `close`, their whole
    /// connections.
    pub async fn disconnect(&self, close: bool) -> Result<(), BroadcastError> {
        Ok(self
            .ns
            .adapter()
            .disconnect_sockets(&self.opts, close)
            .await?)
    }

    /// Every room with at least one selected socket.
    pub async fn rooms(&self) -> Result<Vec<Room>, BroadcastError> {
        Ok(self.ns.adapter().rooms(&self.opts).await?)
    }
}

struct ForgetBroadcastAck<'a> {
    ns: &'a Arc<NsInner>,
    id: u64,
}

impl Drop for ForgetBroadcastAck<'_> {
    fn drop(&mut self) {
        for socket in self.ns.all() {
            socket.forget_ack(self.id);
        }
    }
}

fn check(event: &str) -> Result<(), BroadcastError> {
    if RESERVED_EVENTS.contains(&event) {
        return Err(BroadcastError::Emit(EmitError::ReservedEvent(
            event.to_owned(),
        )));
    }
    Ok(())
}

/// A socket found by [`BroadcastOperator::fetch_sockets`], possibly on
/// another node of the cluster.
#[derive(Clone)]
pub struct RemoteSocket {
    info: SocketInfo,
    ns: Arc<NsInner>,
}

impl std::fmt::Debug for RemoteSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSocket")
            .field("info", &self.info)
            .finish()
    }
}

impl RemoteSocket {
    /// Its id, namespace, rooms, data and handshake.
    pub fn info(&self) -> &SocketInfo {
        &self.info
    }

    /// Its id.
    pub fn id(&self) -> crate::protocol::sid::Sid {
        self.info.id
    }

    /// Its rooms when it was fetched.
    pub fn rooms(&self) -> &[Room] {
        &self.info.rooms
    }

    /// Its data (see [`crate::Socket::set_data`]) as `T`.
    pub fn data<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(self.info.data.clone())
    }

    fn only_me(&self) -> BroadcastOperator {
        BroadcastOperator::new(Arc::clone(&self.ns)).to(self.info.id.to_string())
    }

    /// Emits an event with one argument to this socket.
    pub async fn emit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<(), BroadcastError> {
        self.only_me().emit(event, data).await
    }

    /// Makes it join rooms.
    pub async fn join<R: Into<Room>>(
        &self,
        rooms: impl IntoIterator<Item = R>,
    ) -> Result<(), BroadcastError> {
        self.only_me().join(rooms).await
    }

    /// Makes it leave rooms.
    pub async fn leave<R: Into<Room>>(
        &self,
        rooms: impl IntoIterator<Item = R>,
    ) -> Result<(), BroadcastError> {
        self.only_me().leave(rooms).await
    }

    /// Disconnects it (and its whole connection when `close`).
    pub async fn disconnect(&self, close: bool) -> Result<(), BroadcastError> {
        self.only_me().disconnect(close).await
    }
}

/// Broadcast operators start from a namespace (kept here so that the
/// namespace does not depend on its operators).
impl Namespace {
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
}
