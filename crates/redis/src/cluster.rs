//! The protocol of socket.io-adapter's `ClusterAdapter` (message types
//! 1-13, `{uid, nsp, type, data}`), carried two ways:
//!
//! - **sharded** (`@socket.io/redis-adapter` 8.3's `createShardedAdapter`):
//!   SPUBLISH / SSUBSCRIBE on `<prefix>#<nsp>#` and this node's
//!   `<prefix>#<nsp>#<uid>#`; in `dynamic` mode a broadcast to one public
//!   room goes to `<prefix>#<nsp>#<room>#`, which a node subscribes to while
//!   it has sockets in that room. JSON, or MessagePack when the data holds
//!   binary.
//! - **streams** (`@socket.io/redis-streams-adapter` 0.3): what must reach
//!   every node in order (broadcasts, joins, leaves, disconnects) is XADDed
//!   to the stream (the entry id is the offset of connection state
//!   recovery); requests (broadcasts with acks, fetches, server-side emits)
//!   go through pub/sub on `<prefix>#<nsp>#`, answers on
//!   `<prefix>#<nsp>#<uid>#`, all MessagePack. Sessions of connection state
//!   recovery are stored in Redis with their expiry.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use switchboard::Value;
use switchboard::adapter::{
    AckEvent, AckSink, Adapter, AdapterError, BroadcastOptions, LocalAdapter, LocalNamespace,
    MissedPacket, Offset, PersistedSession, Room, RoomEvent, ServerAck, SocketInfo, should_include,
};
use switchboard::protocol::socketio::Encoded;
use tokio::sync::oneshot;

use crate::codec::{self, obj, s, strings, text, texts};
use crate::conn::Topic;
use crate::driver::{Driver, Handler, Outgoing};
use crate::packet::{
    Malformed, encode, event_checked, event_data, opts_checked, opts_from, opts_of, packet_of,
    rooms_checked, session_from, session_of, socket_from, socket_of,
};
use crate::requests::{Requests, hex16, relay_acks};
use crate::{Config, Mode, SubscriptionMode, unavailable};

/// Message types of the cluster protocol.
mod kind {
    pub(super) const BROADCAST: u64 = 3;
    pub(super) const SOCKETS_JOIN: u64 = 4;
    pub(super) const SOCKETS_LEAVE: u64 = 5;
    pub(super) const DISCONNECT_SOCKETS: u64 = 6;
    pub(super) const FETCH_SOCKETS: u64 = 7;
    pub(super) const FETCH_SOCKETS_RESPONSE: u64 = 8;
    pub(super) const SERVER_SIDE_EMIT: u64 = 9;
    pub(super) const SERVER_SIDE_EMIT_RESPONSE: u64 = 10;
    pub(super) const BROADCAST_CLIENT_COUNT: u64 = 11;
    pub(super) const BROADCAST_ACK: u64 = 12;
}

/// How many XRANGE calls a session restore makes at most (the
/// reference's limit).
const RESTORE_MAX_XRANGE_CALLS: usize = 100;

/// A namespace's sharded-mode or streams-mode adapter.
pub(crate) struct Cluster {
    me: Weak<Cluster>,
    local: LocalAdapter,
    driver: Arc<Driver>,
    config: Arc<Config>,
    uid: String,
    nsp: String,
    /// `<prefix>#<nsp>#`: the main (sharded) or public (streams) channel.
    channel: String,
    /// `<prefix>#<nsp>#<uid>#`: where answers to this node go.
    response_channel: String,
    /// The stream of this namespace (streams mode).
    stream: Option<String>,
    requests: Arc<Requests>,
}

fn looks_like_a_socket_id(room: &str) -> bool {
    room.len() == 20
}

/// `hashCode` of the streams adapter: Java's string hash over UTF-16 code
/// units, in 32-bit signed arithmetic (so it may be negative).
pub(crate) fn js_hash(text: &str) -> i32 {
    let mut hash: i32 = 0;
    for unit in text.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    hash
}

/// The stream of a namespace: `name`, or with several streams
/// `name-<hash(nsp) % count>` (JavaScript's `%`: the sign of the hash).
pub(crate) fn stream_name(name: &str, count: usize, nsp: &str) -> String {
    if count <= 1 {
        return name.to_owned();
    }
    let i = i64::from(js_hash(nsp)) % i64::try_from(count).unwrap_or(1);
    format!("{name}-{i}")
}

impl Cluster {
    pub(crate) fn new(nsp: LocalNamespace, driver: Arc<Driver>, config: Arc<Config>) -> Arc<Self> {
        let name = nsp.name().to_owned();
        let prefix = config.prefix.clone();
        let uid = hex16();
        let stream = match &config.mode {
            Mode::Streams { stream_count, .. } => {
                Some(stream_name(&config.stream_name(), *stream_count, &name))
            }
            _ => None,
        };
        let dynamic = matches!(
            config.mode,
            Mode::Sharded(SubscriptionMode::Dynamic | SubscriptionMode::DynamicPrivate)
        );
        let adapter = Arc::new_cyclic(|me: &Weak<Cluster>| {
            let mut local = LocalAdapter::new(nsp);
            if dynamic {
                let me = me.clone();
                local = local.with_room_listener(move |event| {
                    if let Some(me) = me.upgrade() {
                        me.on_room_event(event);
                    }
                });
            }
            Cluster {
                me: me.clone(),
                local,
                channel: format!("{prefix}#{name}#"),
                response_channel: format!("{prefix}#{name}#{uid}#"),
                uid,
                nsp: name,
                stream,
                driver,
                config,
                requests: Arc::default(),
            }
        });
        adapter.subscribe_all();
        adapter
    }

    fn handler(&self, f: fn(&Cluster, &str, Bytes)) -> Handler {
        let me = self.me.clone();
        Arc::new(move |channel: &str, payload: Bytes| {
            if let Some(me) = me.upgrade() {
                f(&me, channel, payload);
            }
        })
    }

    fn topic(&self, channel: String) -> Topic {
        if self.sharded_pubsub() {
            Topic::Shard(channel)
        } else {
            Topic::Channel(channel)
        }
    }

    fn sharded_pubsub(&self) -> bool {
        match &self.config.mode {
            Mode::Sharded(_) => true,
            Mode::Streams { sharded_pubsub, .. } => *sharded_pubsub,
            Mode::Classic => false,
        }
    }

    fn subscribe_all(&self) {
        let d = &self.driver;
        d.subscribe(
            self.topic(self.channel.clone()),
            self.handler(Cluster::on_raw),
        );
        d.subscribe(
            self.topic(self.response_channel.clone()),
            self.handler(Cluster::on_raw),
        );
        if let Some(stream) = &self.stream {
            let me = self.me.clone();
            d.read_stream(
                stream,
                &self.nsp,
                Arc::new(move |id: &str, fields: &HashMap<String, Bytes>| {
                    if let Some(me) = me.upgrade() {
                        match decode_entry(fields) {
                            Ok(msg) => me.on_message(&msg, Some(id)),
                            Err(e) => me.malformed("stream entry", e),
                        }
                    }
                }),
            );
        }
    }

    fn dynamic_channel(&self, room: &str) -> String {
        format!("{}{room}#", self.channel)
    }

    /// In dynamic mode, a node listens to a room's own channel while it has
    /// sockets in the room.
    fn on_room_event(&self, event: RoomEvent) {
        let private_too = matches!(
            self.config.mode,
            Mode::Sharded(SubscriptionMode::DynamicPrivate)
        );
        match event {
            RoomEvent::Created(room) if private_too || !self.local.is_socket_id(&room) => {
                self.driver.subscribe(
                    Topic::Shard(self.dynamic_channel(&room)),
                    self.handler(Cluster::on_raw),
                );
            }
            RoomEvent::Deleted(room) => {
                self.driver
                    .unsubscribe(Topic::Shard(self.dynamic_channel(&room)));
            }
            RoomEvent::Created(_) => {}
        }
    }

    fn malformed(&self, what: &str, e: impl std::fmt::Display) {
        self.driver
            .metrics
            .malformed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(nsp = %self.nsp, error = %e, "ignoring a malformed {what}");
    }

    /// A pub/sub message (sharded: JSON or MessagePack; streams:
    /// MessagePack).
    fn on_raw(&self, _channel: &str, payload: Bytes) {
        match codec::decode_any(&payload) {
            Ok(msg) => self.on_message(&msg, None),
            Err(e) => self.malformed("message", e),
        }
    }

    /// A message of another node (`offset`: its stream entry id).
    fn on_message(&self, msg: &Value, offset: Option<&str>) {
        if let Err(e) = check_message(msg, &self.nsp) {
            return self.malformed("message", e);
        }
        if text(msg.get("uid")).as_deref() == Some(self.uid.as_str()) {
            return;
        }
        if text(msg.get("nsp")).as_deref() != Some(self.nsp.as_str()) {
            return;
        }
        let data = msg.get("data").cloned().unwrap_or_default();
        let from = text(msg.get("uid")).unwrap_or_default();
        match msg.get("type").and_then(Value::as_u64) {
            Some(kind::BROADCAST) => {
                let Some(packet) = data.get("packet") else {
                    return;
                };
                let Some(event) = event_data(packet, &self.nsp) else {
                    return;
                };
                match text(data.get("requestId")) {
                    Some(id) => self.broadcast_for(&from, id, event, &data),
                    None => {
                        let opts = opts_from(data.get("opts"));
                        if let Some(packet) = encode(&self.nsp, event, None) {
                            self.deliver(&packet, &opts, offset.filter(|o| !o.is_empty()));
                        }
                    }
                }
            }
            Some(kind::SOCKETS_JOIN) => {
                self.local
                    .add_sockets(&opts_from(data.get("opts")), &texts(data.get("rooms")));
            }
            Some(kind::SOCKETS_LEAVE) => {
                self.local
                    .del_sockets(&opts_from(data.get("opts")), &texts(data.get("rooms")));
            }
            Some(kind::DISCONNECT_SOCKETS) => {
                let close = matches!(data.get("close"), Some(Value::Bool(true)));
                self.local
                    .disconnect_sockets(&opts_from(data.get("opts")), close);
            }
            Some(kind::FETCH_SOCKETS) => {
                let sockets: Vec<Value> = self
                    .local
                    .fetch_sockets(&opts_from(data.get("opts")))
                    .iter()
                    .map(socket_of)
                    .collect();
                self.respond(
                    &from,
                    kind::FETCH_SOCKETS_RESPONSE,
                    obj([
                        (
                            "requestId",
                            data.get("requestId").cloned().unwrap_or_default(),
                        ),
                        ("sockets", Value::Array(sockets)),
                    ]),
                );
            }
            Some(kind::SERVER_SIDE_EMIT) => {
                let Some(Value::Array(args)) = data.get("packet").cloned() else {
                    return;
                };
                let ack = text(data.get("requestId")).map(|id| {
                    let me = self.me.clone();
                    ServerAck::new(move |arg| {
                        if let Some(me) = me.upgrade() {
                            me.respond(
                                &from,
                                kind::SERVER_SIDE_EMIT_RESPONSE,
                                obj([("requestId", s(id)), ("packet", arg)]),
                            );
                        }
                    })
                });
                self.local.namespace().server_event(args, ack);
            }
            Some(
                kind::BROADCAST_CLIENT_COUNT
                | kind::BROADCAST_ACK
                | kind::FETCH_SOCKETS_RESPONSE
                | kind::SERVER_SIDE_EMIT_RESPONSE,
            ) => self.on_response(msg),
            _ => {}
        }
    }

    /// An answer to one of this node's requests.
    fn on_response(&self, msg: &Value) {
        let Some(data) = msg.get("data") else { return };
        let Some(id) = text(data.get("requestId")) else {
            return;
        };
        match msg.get("type").and_then(Value::as_u64) {
            Some(kind::BROADCAST_CLIENT_COUNT) => {
                let n = data.get("clientCount").and_then(Value::as_u64).unwrap_or(0);
                self.requests.client_count(&id, n as usize);
            }
            Some(kind::BROADCAST_ACK) => {
                self.requests
                    .client_ack(&id, data.get("packet").cloned().unwrap_or_default());
            }
            _ => {
                self.requests.answer(&id, data.clone());
            }
        }
    }

    /// Delivers a broadcast to this node's sockets, with its offset when
    /// connection state recovery stores it.
    fn deliver(&self, packet: &Encoded, opts: &BroadcastOptions, offset: Option<&str>) {
        let recovering = self.local.namespace().recovery().is_some() && self.stream.is_some();
        match offset {
            Some(o) if recovering && !opts.volatile => {
                let with = packet.with_last_arg(o);
                self.local.broadcast(&with, opts, Some(&Offset::new(o)));
            }
            _ => {
                self.local.broadcast(packet, opts, None);
            }
        }
    }

    /// Sends another node's broadcast with acks to this node's sockets;
    /// answers the count, then each ack.
    fn broadcast_for(&self, from: &str, id: String, event: &[Value], data: &Value) {
        let (ack_id, to) = (id.clone(), from.to_owned());
        relay_acks(
            self,
            self.me.clone(),
            event,
            data.get("opts"),
            self.config.request_timeout,
            |count| {
                self.respond(
                    from,
                    kind::BROADCAST_CLIENT_COUNT,
                    obj([
                        ("requestId", s(id)),
                        ("clientCount", Value::from(count as u64)),
                    ]),
                );
            },
            move |me: &Cluster, arg| {
                me.respond(
                    &to,
                    kind::BROADCAST_ACK,
                    obj([("requestId", s(ack_id.clone())), ("packet", arg)]),
                );
            },
        );
    }

    /// A message `{type, data, uid, nsp}` (the reference's key order).
    fn message(&self, kind: u64, data: Value) -> Value {
        obj([
            ("type", Value::from(kind)),
            ("data", data),
            ("uid", s(self.uid.clone())),
            ("nsp", s(self.nsp.clone())),
        ])
    }

    /// Answers another node on its own channel.
    fn respond(&self, to: &str, kind: u64, data: Value) {
        let msg = self.message(kind, data);
        let channel = format!("{}{to}#", self.channel);
        let payload = match self.stream {
            Some(_) => codec::pack(&msg),
            None => sharded_encode(kind, &msg),
        };
        let cmd = self.pubsub_cmd(&channel, payload);
        self.driver.enqueue(Outgoing { cmd, done: None });
    }

    fn pubsub_cmd(&self, channel: &str, payload: Vec<u8>) -> redis::Cmd {
        let mut cmd = redis::cmd(if self.sharded_pubsub() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        });
        cmd.arg(channel).arg(payload);
        cmd
    }

    /// The command that carries a message to the other nodes.
    fn publish_cmd(&self, kind: u64, data: Value) -> redis::Cmd {
        let ephemeral = kind == kind::SERVER_SIDE_EMIT
            || kind == kind::FETCH_SOCKETS
            || (kind == kind::BROADCAST && data.get("requestId").is_some());
        match &self.stream {
            Some(stream) if !ephemeral => {
                let payload = if may_contain_binary(kind) && data.has_binary() {
                    codec::base64_encode(&codec::pack(&data)).into_bytes()
                } else {
                    codec::to_json(&data)
                };
                let mut cmd = redis::cmd("XADD");
                cmd.arg(stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.config.max_len)
                    .arg("*")
                    .arg("uid")
                    .arg(&self.uid)
                    .arg("nsp")
                    .arg(&self.nsp)
                    .arg("type")
                    .arg(kind.to_string())
                    .arg("data")
                    .arg(payload);
                cmd
            }
            Some(_) => {
                let msg = self.message(kind, data);
                self.pubsub_cmd(&self.channel, codec::pack(&msg))
            }
            None => {
                let channel = self.sharded_channel(kind, &data);
                let msg = self.message(kind, data);
                self.pubsub_cmd(&channel, sharded_encode(kind, &msg))
            }
        }
    }

    /// Sharded mode: a broadcast without acks to one public room goes to
    /// that room's channel (dynamic modes).
    fn sharded_channel(&self, kind: u64, data: &Value) -> String {
        let room = match data.get("opts").map(|o| texts(o.get("rooms"))) {
            Some(rooms) if rooms.len() == 1 => rooms.into_iter().next(),
            _ => None,
        };
        let dynamic = match self.config.mode {
            Mode::Sharded(SubscriptionMode::Dynamic) => {
                room.as_deref().is_some_and(|r| !looks_like_a_socket_id(r))
            }
            Mode::Sharded(SubscriptionMode::DynamicPrivate) => true,
            _ => false,
        };
        match room {
            Some(room) if kind == kind::BROADCAST && data.get("requestId").is_none() && dynamic => {
                self.dynamic_channel(&room)
            }
            _ => self.channel.clone(),
        }
    }

    /// Publishes in order and waits: `Ok(offset)` (the stream entry id, or
    /// empty), then runs `then` on the publisher's task, in order.
    async fn publish_then(
        &self,
        kind: u64,
        data: Value,
        then: impl FnOnce(Option<&str>) + Send + 'static,
    ) -> Result<String, AdapterError> {
        let (tx, rx) = oneshot::channel();
        let cmd = self.publish_cmd(kind, data);
        self.driver.enqueue(Outgoing {
            cmd,
            done: Some(Box::new(move |r| {
                let offset = match &r {
                    Ok(redis::Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
                    Ok(redis::Value::SimpleString(s)) => Some(s.clone()),
                    _ => None,
                };
                then(offset.as_deref());
                let _ = tx.send(r.map(|_| offset.unwrap_or_default()));
            })),
        });
        match rx.await {
            Ok(Ok(offset)) => Ok(offset),
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(AdapterError::Closed),
        }
    }

    /// Sends a request and collects `expected` answers.
    async fn request(
        &self,
        kind: u64,
        mut data: Vec<(&str, Value)>,
        expected: usize,
        timeout: Duration,
    ) -> Result<Vec<Value>, (AdapterError, Vec<Value>)> {
        let id = hex16();
        let waiting = self.requests.wait(id.clone());
        data.push(("requestId", s(id)));
        let data = Value::Object(data.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
        self.publish_then(kind, data, |_| {})
            .await
            .map_err(|e| (e, Vec::new()))?;
        waiting
            .collect(expected, timeout, &self.driver.metrics)
            .await
    }

    fn opts_value(opts: &BroadcastOptions) -> Value {
        opts_of(opts, None)
    }

    /// A join/leave/disconnect: published, then applied here (also when the
    /// publication failed: the error says the other nodes were not told).
    async fn remote(
        &self,
        kind: u64,
        data: Value,
        apply: impl FnOnce(&LocalAdapter),
    ) -> Result<(), AdapterError> {
        let r = self.publish_then(kind, data, |_| {}).await;
        apply(&self.local);
        r.map(|_| ())
    }
}

/// Whether a message `{uid, nsp, type, data}` has what its type needs, of
/// the right types (what is not checked here is read leniently). Messages
/// of other namespaces and of types this node does not handle (heartbeats)
/// are only checked for their envelope.
fn check_message(msg: &Value, nsp: &str) -> Result<(), Malformed> {
    if !matches!(msg, Value::Object(_)) {
        return Err("not a map");
    }
    if text(msg.get("uid")).is_none() {
        return Err("no uid");
    }
    let Some(Value::String(msg_nsp)) = msg.get("nsp") else {
        return Err("no namespace");
    };
    let Some(kind) = msg.get("type").and_then(Value::as_u64) else {
        return Err("the type is not a number");
    };
    if msg_nsp != nsp {
        return Ok(());
    }
    let data = msg.get("data");
    let request_id = data.and_then(|d| d.get("requestId"));
    match request_id {
        None | Some(Value::String(_) | Value::Number(_)) => {}
        Some(_) => return Err("the request id is not a string"),
    }
    match kind {
        kind::BROADCAST => {
            event_checked(data.and_then(|d| d.get("packet")), nsp)?;
            opts_checked(data.and_then(|d| d.get("opts")))?;
        }
        kind::SOCKETS_JOIN | kind::SOCKETS_LEAVE => {
            opts_checked(data.and_then(|d| d.get("opts")))?;
            rooms_checked(data.and_then(|d| d.get("rooms")))?;
        }
        kind::DISCONNECT_SOCKETS => {
            opts_checked(data.and_then(|d| d.get("opts")))?;
        }
        kind::FETCH_SOCKETS => {
            opts_checked(data.and_then(|d| d.get("opts")))?;
            if request_id.is_none() {
                return Err("a fetch without request id");
            }
        }
        kind::SERVER_SIDE_EMIT => match data.and_then(|d| d.get("packet")) {
            Some(Value::Array(args))
                if matches!(args.first(), Some(Value::String(_) | Value::Number(_))) => {}
            _ => return Err("the event is not [name, ...args]"),
        },
        kind::BROADCAST_CLIENT_COUNT
        | kind::BROADCAST_ACK
        | kind::FETCH_SOCKETS_RESPONSE
        | kind::SERVER_SIDE_EMIT_RESPONSE
            if request_id.is_none() =>
        {
            return Err("a response without request id");
        }
        _ => {}
    }
    Ok(())
}

/// Whether a message type may carry binary data.
fn may_contain_binary(kind: u64) -> bool {
    matches!(
        kind,
        kind::BROADCAST
            | kind::BROADCAST_ACK
            | kind::FETCH_SOCKETS_RESPONSE
            | kind::SERVER_SIDE_EMIT
            | kind::SERVER_SIDE_EMIT_RESPONSE
    )
}

/// Sharded mode's encoding: MessagePack when the data holds binary, JSON
/// otherwise.
fn sharded_encode(kind: u64, msg: &Value) -> Vec<u8> {
    let binary = may_contain_binary(kind) && msg.get("data").is_some_and(Value::has_binary);
    if binary {
        codec::pack(msg)
    } else {
        codec::to_json(msg)
    }
}

/// A stream entry: `uid, nsp, type, data` (data JSON when it starts with
/// `{`, else base64 MessagePack).
fn decode_entry(fields: &HashMap<String, Bytes>) -> Result<Value, codec::DecodeError> {
    let field = |k: &str| {
        fields
            .get(k)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_owned)
    };
    let kind = field("type")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Value::Null, Value::from);
    let data = match fields.get("data") {
        Some(raw) if raw.first() == Some(&b'{') => codec::from_json(raw)?,
        Some(raw) => codec::unpack(&codec::base64_decode(raw)?)?,
        None => Value::Null,
    };
    Ok(obj([
        ("uid", field("uid").map_or(Value::Null, Value::String)),
        ("nsp", field("nsp").map_or(Value::Null, Value::String)),
        ("type", kind),
        ("data", data),
    ]))
}

/// The offset of a stream entry id is `ms-seq`.
fn is_stream_offset(offset: &str) -> bool {
    offset.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
    })
}

/// The id right after `offset` (exclusive ranges without Redis 6.2's `(`).
fn next_offset(offset: &str) -> String {
    let (ms, seq) = offset.split_once('-').unwrap_or((offset, "0"));
    format!("{ms}-{}", seq.parse::<u64>().unwrap_or(0).saturating_add(1))
}

#[async_trait]
impl Adapter for Cluster {
    fn local(&self) -> &LocalAdapter {
        &self.local
    }

    async fn broadcast(
        &self,
        packet: &Encoded,
        opts: &BroadcastOptions,
    ) -> Result<(), AdapterError> {
        if opts.local {
            self.local.broadcast(packet, opts, None);
            return Ok(());
        }
        let Some(p) = packet_of(packet, &self.nsp) else {
            return Err(AdapterError::Transport("not an event packet".into()));
        };
        let data = obj([("packet", p), ("opts", Self::opts_value(opts))]);
        // Delivered here once the other nodes were told (in publish order),
        // with its offset; also when telling them failed.
        let me = self.me.clone();
        let (packet, local_opts) = (packet.clone(), opts.clone());
        self.publish_then(kind::BROADCAST, data, move |offset| {
            if let Some(me) = me.upgrade() {
                me.deliver(&packet, &local_opts, offset.filter(|o| !o.is_empty()));
            }
        })
        .await
        .map(|_| ())
    }

    async fn broadcast_with_ack(
        &self,
        packet: &Encoded,
        ack_id: u64,
        opts: &BroadcastOptions,
        timeout: Duration,
        sink: AckSink,
    ) -> Result<(), AdapterError> {
        if !opts.local {
            self.driver.check_up()?;
            let p = packet_of(packet, &self.nsp)
                .ok_or_else(|| AdapterError::Transport("not an event packet".into()))?;
            let id = hex16();
            self.requests.expect_acks(id.clone(), sink.clone(), timeout);
            let data = obj([
                ("packet", p),
                ("requestId", s(id)),
                ("opts", opts_of(opts, Some(timeout))),
            ]);
            let cmd = self.publish_cmd(kind::BROADCAST, data);
            self.driver.enqueue(Outgoing { cmd, done: None });
        }
        let count = self.local.broadcast_with_ack(packet, ack_id, opts, &sink);
        let _ = sink.send(AckEvent::ClientCount(count));
        Ok(())
    }

    async fn fetch_sockets(
        &self,
        opts: &BroadcastOptions,
    ) -> Result<Vec<SocketInfo>, AdapterError> {
        let mut sockets = self.local.fetch_sockets(opts);
        if opts.local {
            return Ok(sockets);
        }
        let expected = self.server_count().await?.saturating_sub(1);
        if expected == 0 {
            return Ok(sockets);
        }
        let answers = self
            .request(
                kind::FETCH_SOCKETS,
                vec![("opts", Self::opts_value(opts))],
                expected,
                self.config.request_timeout,
            )
            .await
            .map_err(|(e, _)| e)?;
        for a in answers {
            if let Some(Value::Array(list)) = a.get("sockets") {
                sockets.extend(list.iter().filter_map(|v| socket_from(v, &self.nsp)));
            }
        }
        Ok(sockets)
    }

    async fn add_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> Result<(), AdapterError> {
        if opts.local {
            self.local.add_sockets(opts, rooms);
            return Ok(());
        }
        let data = obj([("opts", Self::opts_value(opts)), ("rooms", strings(rooms))]);
        self.remote(kind::SOCKETS_JOIN, data, |l| l.add_sockets(opts, rooms))
            .await
    }

    async fn del_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> Result<(), AdapterError> {
        if opts.local {
            self.local.del_sockets(opts, rooms);
            return Ok(());
        }
        let data = obj([("opts", Self::opts_value(opts)), ("rooms", strings(rooms))]);
        self.remote(kind::SOCKETS_LEAVE, data, |l| l.del_sockets(opts, rooms))
            .await
    }

    async fn disconnect_sockets(
        &self,
        opts: &BroadcastOptions,
        close: bool,
    ) -> Result<(), AdapterError> {
        if opts.local {
            self.local.disconnect_sockets(opts, close);
            return Ok(());
        }
        let data = obj([
            ("opts", Self::opts_value(opts)),
            ("close", Value::Bool(close)),
        ]);
        self.remote(kind::DISCONNECT_SOCKETS, data, |l| {
            l.disconnect_sockets(opts, close)
        })
        .await
    }

    async fn rooms(&self, opts: &BroadcastOptions) -> Result<Vec<Room>, AdapterError> {
        // The cluster protocol has no room listing: the rooms of every
        // selected socket, as fetched.
        let mut rooms = BTreeSet::new();
        for socket in self.fetch_sockets(opts).await? {
            rooms.extend(socket.rooms);
        }
        Ok(rooms.into_iter().collect())
    }

    async fn server_side_emit(&self, args: &[Value]) -> Result<(), AdapterError> {
        let data = obj([("packet", Value::Array(args.to_vec()))]);
        self.publish_then(kind::SERVER_SIDE_EMIT, data, |_| {})
            .await
            .map(|_| ())
    }

    async fn server_side_emit_with_ack(
        &self,
        args: &[Value],
    ) -> Result<Vec<Value>, (AdapterError, Vec<Value>)> {
        let expected = self
            .server_count()
            .await
            .map_err(|e| (e, Vec::new()))?
            .saturating_sub(1);
        if expected == 0 {
            return Ok(Vec::new());
        }
        let packet = |a: Value| a.get("packet").cloned().unwrap_or_default();
        self.request(
            kind::SERVER_SIDE_EMIT,
            vec![("packet", Value::Array(args.to_vec()))],
            expected,
            self.config.request_timeout,
        )
        .await
        .map(|answers| answers.into_iter().map(packet).collect())
        .map_err(|(e, got)| (e, got.into_iter().map(packet).collect()))
    }

    async fn server_count(&self) -> Result<usize, AdapterError> {
        let sub = if self.sharded_pubsub() {
            "SHARDNUMSUB"
        } else {
            "NUMSUB"
        };
        crate::numsub(&self.driver, sub, &self.channel).await
    }

    async fn persist_session(&self, session: PersistedSession) {
        let (Some(_), Some(recovery)) = (&self.stream, self.local.namespace().recovery()) else {
            return;
        };
        let key = format!("{}{}", self.config.session_prefix, session.pid);
        let value = codec::base64_encode(&codec::pack(&session_of(&session)));
        let ttl =
            u64::try_from(recovery.max_disconnection_duration.as_millis()).unwrap_or(u64::MAX);
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("PX").arg(ttl.max(1));
        self.driver.enqueue(Outgoing { cmd, done: None });
    }

    async fn restore_session(
        &self,
        pid: &str,
        offset: &str,
    ) -> Result<Option<PersistedSession>, AdapterError> {
        let Some(stream) = &self.stream else {
            return Ok(None);
        };
        if !is_stream_offset(offset) {
            return Ok(None);
        }
        let key = format!("{}{pid}", self.config.session_prefix);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("GET")
            .arg(&key)
            .cmd("DEL")
            .arg(&key)
            .ignore();
        let (raw,): (Option<Vec<u8>>,) = self
            .driver
            .query_pipe(&pipe)
            .await
            .map_err(|e| unavailable(&e))?;
        let exists: redis::Value = self
            .driver
            .query(redis::cmd("XRANGE").arg(stream).arg(offset).arg(offset))
            .await
            .map_err(|e| unavailable(&e))?;
        let found = matches!(&exists, redis::Value::Array(a) if !a.is_empty());
        let (Some(raw), true) = (raw, found) else {
            return Ok(None);
        };
        let session = codec::base64_decode(&raw)
            .ok()
            .and_then(|b| codec::unpack(&b).ok())
            .and_then(|v| session_from(&v));
        Ok(session)
    }

    async fn missed_packets(
        &self,
        rooms: &[Room],
        offset: &str,
    ) -> Result<Vec<MissedPacket>, AdapterError> {
        let Some(stream) = &self.stream else {
            return Ok(Vec::new());
        };
        let mut missed = Vec::new();
        let mut from = offset.to_owned();
        for _ in 0..RESTORE_MAX_XRANGE_CALLS {
            let v: redis::Value = self
                .driver
                .query(
                    redis::cmd("XRANGE")
                        .arg(stream)
                        .arg(next_offset(&from))
                        .arg("+"),
                )
                .await
                .map_err(|e| unavailable(&e))?;
            let entries = crate::driver::xrange_entries(v);
            if entries.is_empty() {
                break;
            }
            for (id, fields) in entries {
                from.clone_from(&id);
                let is_broadcast = fields.get("type").map(|t| &t[..]) == Some(b"3");
                let same_nsp = fields.get("nsp").map(|n| &n[..]) == Some(self.nsp.as_bytes());
                if !is_broadcast || !same_nsp {
                    continue;
                }
                let Ok(msg) = decode_entry(&fields) else {
                    continue;
                };
                let Some(data) = msg.get("data") else {
                    continue;
                };
                let Ok(opts) = opts_checked(data.get("opts")) else {
                    continue;
                };
                if opts.volatile || !should_include(rooms, &opts.rooms, &opts.except) {
                    continue;
                }
                let Some(event) = data.get("packet").and_then(|p| event_data(p, &self.nsp)) else {
                    continue;
                };
                let mut event = event.to_vec();
                event.push(s(id.clone()));
                if let Some(packet) = encode(&self.nsp, &event, None) {
                    missed.push(MissedPacket {
                        offset: Offset::new(&id),
                        packet,
                    });
                }
            }
        }
        // Entries up to `from` reach this node's sockets live two ways,
        // either of which may lag behind the read above: this node's own
        // broadcasts once the publisher has their ids, the others' through
        // the stream reader. Wait until both have handed all of them out
        // (meanwhile the recovering socket holds live packets and drops
        // those replayed here), so that none comes again after the replay.
        let caught_up = async {
            let _ = self.driver.flush().await;
            if let Some(routes) = self.driver.read_stream_routes(stream) {
                routes.reached(&from).await;
            }
        };
        if tokio::time::timeout(self.config.request_timeout, caught_up)
            .await
            .is_err()
        {
            tracing::debug!(nsp = %self.nsp, offset = %from, "live delivery is behind the store; packets may repeat");
        }
        Ok(missed)
    }

    async fn ready(&self) -> Result<(), AdapterError> {
        // What is queued goes out (sessions persisted at shutdown), then
        // the subscriptions are confirmed.
        tokio::time::timeout(self.config.request_timeout, self.driver.flush())
            .await
            .map_err(|_| AdapterError::Unavailable("the publisher did not drain".into()))?
            .map_err(|e| unavailable(&e))?;
        self.driver
            .sync(self.config.request_timeout)
            .await
            .map_err(|e| unavailable(&e))?;
        if let Some(stream) = &self.stream {
            let routes = self.driver.read_stream_routes(stream);
            if let Some(routes) = routes {
                tokio::time::timeout(self.config.request_timeout, routes.started())
                    .await
                    .map_err(|_| {
                        AdapterError::Unavailable("the stream reader did not start".into())
                    })?;
            }
        }
        Ok(())
    }

    fn close(&self) {
        self.driver.unsubscribe(self.topic(self.channel.clone()));
        self.driver
            .unsubscribe(self.topic(self.response_channel.clone()));
        for room in self.local.named_rooms() {
            self.driver
                .unsubscribe(Topic::Shard(self.dynamic_channel(&room)));
        }
        if let Some(stream) = &self.stream {
            self.driver.forget_stream(stream, &self.nsp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_the_javascript_hash() {
        // Computed with the package's own hashCode in Node.
        assert_eq!(js_hash("/"), 47);
        assert_eq!(js_hash("/chat"), 46_457_863);
        assert_eq!(stream_name("socket.io", 1, "/chat"), "socket.io");
        assert_eq!(stream_name("s", 4, "/"), "s-3");
        // A negative hash gives a negative index, as JavaScript's `%`.
        let h = js_hash("/admin-namespace-with-a-long-name");
        assert!(h < 0, "{h}");
        assert_eq!(h, -1_008_306_712);
        assert_eq!(
            stream_name("s", 3, "/admin-namespace-with-a-long-name"),
            "s--1"
        );
        // JavaScript writes -0 as "0".
        assert_eq!(
            stream_name("s", 4, "/admin-namespace-with-a-long-name"),
            "s-0"
        );
    }

    #[test]
    fn offsets_of_streams() {
        assert!(is_stream_offset("1700000000000-0"));
        assert!(!is_stream_offset("17"));
        assert!(!is_stream_offset("1-x"));
        assert_eq!(next_offset("5-9"), "5-10");
    }
}
