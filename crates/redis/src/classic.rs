//! The classic mode: `@socket.io/redis-adapter` 8.3's `createAdapter`
//! (PUBLISH / PSUBSCRIBE).
//!
//! - Broadcasts: MessagePack `[uid, packet, opts]` on `<key>#<nsp>#`, or
//!   `<key>#<nsp>#<room>#` when exactly one room is targeted; every node
//!   PSUBSCRIBEs `<key>#<nsp>#*`.
//! - Requests on `<key>-request#<nsp>#` (JSON, except the broadcast with
//!   acks: MessagePack), answers on `<key>-response#<nsp>#` (or the
//!   requester's own `<key>-response#<nsp>#<uid>#` with
//!   `publish_on_specific_response_channel`).
//! - Request types 0-9; the number of servers is `PUBSUB NUMSUB` of the
//!   request channel.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use switchboard::Value;
use switchboard::adapter::{
    AckEvent, AckSink, Adapter, AdapterError, BroadcastOptions, LocalAdapter, LocalNamespace, Room,
    ServerAck, SocketInfo,
};
use switchboard::protocol::sid::Sid;
use switchboard::protocol::socketio::Encoded;

use crate::codec::{self, obj, s, strings, text, texts};
use crate::conn::Topic;
use crate::driver::{Driver, Outgoing};
use crate::packet::{
    Malformed, encode, event_checked, opts_checked, opts_from, opts_of, packet_of, rooms_checked,
    socket_from, socket_of,
};
use crate::requests::{Requests, relay_acks, uid2};
use crate::{Config, unavailable};

/// Request types of the classic protocol.
mod kind {
    pub(super) const SOCKETS: u64 = 0;
    pub(super) const ALL_ROOMS: u64 = 1;
    pub(super) const REMOTE_JOIN: u64 = 2;
    pub(super) const REMOTE_LEAVE: u64 = 3;
    pub(super) const REMOTE_DISCONNECT: u64 = 4;
    pub(super) const REMOTE_FETCH: u64 = 5;
    pub(super) const SERVER_SIDE_EMIT: u64 = 6;
    pub(super) const BROADCAST: u64 = 7;
    pub(super) const BROADCAST_CLIENT_COUNT: u64 = 8;
    pub(super) const BROADCAST_ACK: u64 = 9;
}

/// A namespace's classic-mode adapter.
pub(crate) struct Classic {
    me: Weak<Classic>,
    local: LocalAdapter,
    driver: Arc<Driver>,
    config: Arc<Config>,
    uid: String,
    nsp: String,
    channel: String,
    request_channel: String,
    response_channel: String,
    specific_response_channel: String,
    requests: Arc<Requests>,
}

impl Classic {
    pub(crate) fn new(nsp: LocalNamespace, driver: Arc<Driver>, config: Arc<Config>) -> Arc<Self> {
        let name = nsp.name().to_owned();
        let key = config.prefix.clone();
        let uid = uid2(6);
        let response_channel = format!("{key}-response#{name}#");
        let adapter = Arc::new_cyclic(|me| Classic {
            me: me.clone(),
            local: LocalAdapter::new(nsp),
            channel: format!("{key}#{name}#"),
            request_channel: format!("{key}-request#{name}#"),
            specific_response_channel: format!("{response_channel}{uid}#"),
            response_channel,
            uid,
            nsp: name,
            driver,
            config,
            requests: Arc::default(),
        });
        let weak = Arc::downgrade(&adapter);
        let on = |f: fn(&Classic, &str, Bytes)| {
            let weak: Weak<Classic> = weak.clone();
            Arc::new(move |channel: &str, payload: Bytes| {
                if let Some(me) = weak.upgrade() {
                    f(&me, channel, payload);
                }
            }) as crate::driver::Handler
        };
        let d = &adapter.driver;
        d.subscribe(
            Topic::Pattern(format!("{}*", adapter.channel)),
            on(Classic::on_broadcast),
        );
        d.subscribe(
            Topic::Channel(adapter.request_channel.clone()),
            on(Classic::on_request),
        );
        d.subscribe(
            Topic::Channel(adapter.response_channel.clone()),
            on(Classic::on_response),
        );
        d.subscribe(
            Topic::Channel(adapter.specific_response_channel.clone()),
            on(Classic::on_response),
        );
        adapter
    }

    fn publish(&self, channel: &str, payload: Vec<u8>) -> bool {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.driver.enqueue(Outgoing { cmd, done: None })
    }

    /// Publishes now and waits for Redis to take it (requests).
    async fn publish_now(&self, channel: &str, payload: Vec<u8>) -> Result<(), AdapterError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.driver
            .query::<i64>(&cmd)
            .await
            .map(|_| ())
            .map_err(|e| unavailable(&e))
    }

    fn respond(&self, request: &Value, response: Vec<u8>) {
        let channel = if self.config.publish_on_specific_response_channel {
            format!(
                "{}{}#",
                self.response_channel,
                text(request.get("uid")).unwrap_or_default()
            )
        } else {
            self.response_channel.clone()
        };
        self.publish(&channel, response);
    }

    fn malformed(&self, what: &str, e: impl std::fmt::Display) {
        self.driver
            .metrics
            .malformed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(nsp = %self.nsp, error = %e, "ignoring a malformed {what}");
    }

    /// A broadcast published by another node.
    fn on_broadcast(&self, channel: &str, payload: Bytes) {
        let room = channel
            .strip_prefix(self.channel.as_str())
            .and_then(|r| r.strip_suffix('#'))
            .unwrap_or("");
        if !room.is_empty() && !self.local.has_room(room) {
            return;
        }
        let msg = match codec::unpack(&payload) {
            Ok(Value::Array(items)) if items.len() >= 3 => items,
            Ok(_) => return self.malformed("broadcast", "not [uid, packet, opts]"),
            Err(e) => return self.malformed("broadcast", e),
        };
        match text(msg.first()) {
            None => return self.malformed("broadcast", "the uid is not a string"),
            Some(uid) if uid == self.uid => return,
            Some(_) => {}
        }
        let data = match event_checked(msg.get(1), &self.nsp) {
            Ok(Some(data)) => data,
            Ok(None) => return,
            Err(e) => return self.malformed("broadcast", e),
        };
        let opts = match opts_checked(msg.get(2)) {
            Ok(opts) => opts,
            Err(e) => return self.malformed("broadcast", e),
        };
        if let Some(packet) = encode(&self.nsp, data, None) {
            self.local.broadcast(&packet, &opts, None);
        }
    }

    /// A request from another node (or this one: joins, leaves and
    /// disconnects apply to the sender through its own subscription).
    fn on_request(&self, _channel: &str, payload: Bytes) {
        let request = match codec::decode_any(&payload) {
            Ok(r @ Value::Object(_)) => r,
            Ok(_) => return self.malformed("request", "not a map"),
            Err(e) => return self.malformed("request", e),
        };
        if let Err(e) = self.check_request(&request) {
            return self.malformed("request", e);
        }
        let request_id = text(request.get("requestId"));
        let own = request_id
            .as_deref()
            .is_some_and(|id| self.requests.is_pending(id));
        let kind = request.get("type").and_then(Value::as_u64);
        let answer = |fields: Vec<(&str, Value)>| {
            let mut all = vec![("requestId", s(request_id.clone().unwrap_or_default()))];
            all.extend(fields);
            codec::to_json(&Value::Object(
                all.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ))
        };
        match kind {
            Some(kind::SOCKETS) if !own => {
                let opts = BroadcastOptions {
                    rooms: texts(request.get("rooms")),
                    ..BroadcastOptions::default()
                };
                let ids: Vec<String> = self
                    .local
                    .socket_ids(&opts)
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                self.respond(&request, answer(vec![("sockets", strings(&ids))]));
            }
            Some(kind::ALL_ROOMS) if !own => {
                let rooms = self.local_rooms();
                self.respond(&request, answer(vec![("rooms", strings(&rooms))]));
            }
            Some(k @ (kind::REMOTE_JOIN | kind::REMOTE_LEAVE | kind::REMOTE_DISCONNECT)) => {
                // As Node's adapter: with options, a selection; without (or
                // null), the older form for one socket.
                if let Some(opts) = request.get("opts").filter(|o| !matches!(o, Value::Null)) {
                    let opts = opts_from(Some(opts));
                    match k {
                        kind::REMOTE_JOIN => {
                            self.local.add_sockets(&opts, &texts(request.get("rooms")))
                        }
                        kind::REMOTE_LEAVE => {
                            self.local.del_sockets(&opts, &texts(request.get("rooms")))
                        }
                        _ => self
                            .local
                            .disconnect_sockets(&opts, truthy(request.get("close"))),
                    }
                    return;
                }
                // The older form: one socket by id, answered.
                let Some(sid) = text(request.get("sid")).and_then(|s| s.parse::<Sid>().ok()) else {
                    return;
                };
                let only = BroadcastOptions {
                    rooms: vec![sid.to_string()],
                    ..BroadcastOptions::default()
                };
                if self.local.socket_ids(&only).is_empty() {
                    return;
                }
                let room = text(request.get("room")).into_iter().collect::<Vec<_>>();
                match k {
                    kind::REMOTE_JOIN => self.local.add_all(sid, &room),
                    kind::REMOTE_LEAVE => room.iter().for_each(|r| self.local.del(sid, r)),
                    _ => self
                        .local
                        .disconnect_sockets(&only, truthy(request.get("close"))),
                }
                self.respond(&request, answer(vec![]));
            }
            Some(kind::REMOTE_FETCH) if !own => {
                let opts = opts_from(request.get("opts"));
                let sockets: Vec<Value> = self
                    .local
                    .fetch_sockets(&opts)
                    .iter()
                    .map(socket_of)
                    .collect();
                self.respond(&request, answer(vec![("sockets", Value::Array(sockets))]));
            }
            Some(kind::SERVER_SIDE_EMIT) => {
                if text(request.get("uid")).as_deref() == Some(self.uid.as_str()) {
                    return;
                }
                let Some(Value::Array(args)) = request.get("data").cloned() else {
                    return;
                };
                let ack = request_id.map(|id| {
                    let driver = Arc::clone(&self.driver);
                    let channel = self.response_channel.clone();
                    ServerAck::new(move |arg| {
                        let response = obj([
                            ("type", Value::from(kind::SERVER_SIDE_EMIT)),
                            ("requestId", s(id)),
                            ("data", arg),
                        ]);
                        let mut cmd = redis::cmd("PUBLISH");
                        cmd.arg(channel).arg(codec::to_json(&response));
                        driver.enqueue(Outgoing { cmd, done: None });
                    })
                });
                self.local.namespace().server_event(args, ack);
            }
            Some(kind::BROADCAST) => {
                let Some(id) = request_id else { return };
                if self.requests.is_own_ack_request(&id) {
                    return;
                }
                self.broadcast_for(&request, id);
            }
            _ => {}
        }
    }

    /// Whether a request has the fields its type needs, of the right
    /// types (what is not checked here is read leniently).
    fn check_request(&self, request: &Value) -> Result<(), Malformed> {
        let Some(kind) = request.get("type") else {
            return Err("no type");
        };
        let Some(kind) = kind.as_u64() else {
            return Err("the type is not a number");
        };
        match request.get("requestId") {
            None | Some(Value::String(_) | Value::Number(_)) => {}
            Some(_) => return Err("the request id is not a string"),
        }
        match kind {
            kind::SOCKETS => {
                rooms_checked(request.get("rooms"))?;
            }
            kind::REMOTE_JOIN | kind::REMOTE_LEAVE | kind::REMOTE_DISCONNECT => {
                match request.get("opts").filter(|o| !matches!(o, Value::Null)) {
                    Some(opts) => {
                        opts_checked(Some(opts))?;
                        rooms_checked(request.get("rooms"))?;
                    }
                    // The older form: one socket by id.
                    None if text(request.get("sid")).is_none() => {
                        return Err("neither options nor a socket id");
                    }
                    None => {}
                }
            }
            kind::REMOTE_FETCH => {
                opts_checked(request.get("opts"))?;
            }
            kind::SERVER_SIDE_EMIT => match request.get("data") {
                Some(Value::Array(args))
                    if matches!(args.first(), Some(Value::String(_) | Value::Number(_))) => {}
                _ => return Err("the event is not [name, ...args]"),
            },
            kind::BROADCAST => {
                if text(request.get("requestId")).is_none() {
                    return Err("a broadcast with acks without request id");
                }
                event_checked(request.get("packet"), &self.nsp)?;
                opts_checked(request.get("opts"))?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Sends another node's broadcast with acks to this node's sockets and
    /// answers with their count, then each ack.
    fn broadcast_for(&self, request: &Value, id: String) {
        let Ok(Some(data)) = event_checked(request.get("packet"), &self.nsp) else {
            return;
        };
        if opts_checked(request.get("opts")).is_err() {
            return;
        }
        let (count_id, ack_id, ack_request) = (id.clone(), id, request.clone());
        relay_acks(
            self,
            self.me.clone(),
            data,
            request.get("opts"),
            self.config.request_timeout,
            |count| {
                let answer = obj([
                    ("type", Value::from(kind::BROADCAST_CLIENT_COUNT)),
                    ("requestId", s(count_id)),
                    ("clientCount", Value::from(count as u64)),
                ]);
                self.respond(request, codec::to_json(&answer));
            },
            move |me: &Classic, arg| {
                let answer = obj([
                    ("type", Value::from(kind::BROADCAST_ACK)),
                    ("requestId", s(ack_id.clone())),
                    ("packet", arg),
                ]);
                me.respond(&ack_request, codec::pack(&answer));
            },
        );
    }

    /// An answer to one of this node's requests.
    fn on_response(&self, _channel: &str, payload: Bytes) {
        let response = match codec::decode_any(&payload) {
            Ok(r @ Value::Object(_)) => r,
            Ok(_) => return self.malformed("response", "not a map"),
            Err(e) => return self.malformed("response", e),
        };
        let Some(id) = text(response.get("requestId")) else {
            return self.malformed("response", "no request id");
        };
        if self.requests.is_own_ack_request(&id) {
            match response.get("type").and_then(Value::as_u64) {
                Some(kind::BROADCAST_CLIENT_COUNT) => {
                    let n = response
                        .get("clientCount")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    self.requests.client_count(&id, n as usize);
                }
                Some(kind::BROADCAST_ACK) => {
                    self.requests
                        .client_ack(&id, response.get("packet").cloned().unwrap_or_default());
                }
                _ => {}
            }
            return;
        }
        self.requests.answer(&id, response);
    }

    /// This node's rooms, socket-id rooms included (as Node's adapter keeps
    /// them).
    fn local_rooms(&self) -> Vec<Room> {
        let mut rooms: Vec<Room> = self.local.named_rooms();
        rooms.extend(
            self.local
                .socket_ids(&BroadcastOptions::default())
                .iter()
                .map(|s| s.to_string()),
        );
        rooms
    }

    /// Sends a request and collects the answers of the other servers.
    async fn request(
        &self,
        fields: Vec<(&str, Value)>,
        expected: usize,
    ) -> Result<Vec<Value>, (AdapterError, Vec<Value>)> {
        let id = uid2(6);
        let waiting = self.requests.wait(id.clone());
        let mut all = vec![("uid", s(self.uid.clone())), ("requestId", s(id))];
        all.extend(fields);
        let request = Value::Object(all.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
        self.publish_now(&self.request_channel, codec::to_json(&request))
            .await
            .map_err(|e| (e, Vec::new()))?;
        waiting
            .collect(expected, self.config.request_timeout, &self.driver.metrics)
            .await
    }

    /// Publishes a join/leave/disconnect request; every node applies it
    /// when it arrives, this one included. While Redis is away it is
    /// applied here only, and the error says so.
    async fn remote(
        &self,
        fields: Vec<(&str, Value)>,
        apply: impl FnOnce(&LocalAdapter),
    ) -> Result<(), AdapterError> {
        let mut all = vec![("uid", s(self.uid.clone()))];
        all.extend(fields);
        let request = Value::Object(all.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
        match self
            .publish_now(&self.request_channel, codec::to_json(&request))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                apply(&self.local);
                Err(e)
            }
        }
    }

    fn opts_json(opts: &BroadcastOptions) -> Value {
        obj([
            ("rooms", strings(&opts.rooms)),
            ("except", strings(&opts.except)),
        ])
    }
}

fn truthy(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Null) | Some(Value::Bool(false)))
}

#[async_trait]
impl Adapter for Classic {
    fn local(&self) -> &LocalAdapter {
        &self.local
    }

    async fn broadcast(
        &self,
        packet: &Encoded,
        opts: &BroadcastOptions,
    ) -> Result<(), AdapterError> {
        let mut sent = true;
        if !opts.local {
            let Some(p) = packet_of(packet, &self.nsp) else {
                return Err(AdapterError::Transport("not an event packet".into()));
            };
            let msg = Value::Array(vec![s(self.uid.clone()), p, opts_of(opts, None)]);
            let channel = match opts.rooms.as_slice() {
                [room] => format!("{}{room}#", self.channel),
                _ => self.channel.clone(),
            };
            sent = self.publish(&channel, codec::pack(&msg));
        }
        self.local.broadcast(packet, opts, None);
        if sent {
            Ok(())
        } else {
            Err(self.driver.check_up().err().unwrap_or_else(|| {
                AdapterError::Unavailable("the publisher's queue is full".into())
            }))
        }
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
            let id = uid2(6);
            self.requests.expect_acks(id.clone(), sink.clone(), timeout);
            let request = obj([
                ("uid", s(self.uid.clone())),
                ("requestId", s(id)),
                ("type", Value::from(kind::BROADCAST)),
                ("packet", p),
                ("opts", opts_of(opts, Some(timeout))),
            ]);
            self.publish(&self.request_channel, codec::pack(&request));
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
        let servers = self.server_count().await?;
        if servers <= 1 {
            return Ok(sockets);
        }
        let answers = self
            .request(
                vec![
                    ("type", Value::from(kind::REMOTE_FETCH)),
                    ("opts", Self::opts_json(opts)),
                ],
                servers - 1,
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
        self.remote(
            vec![
                ("type", Value::from(kind::REMOTE_JOIN)),
                ("opts", Self::opts_json(opts)),
                ("rooms", strings(rooms)),
            ],
            |l| l.add_sockets(opts, rooms),
        )
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
        self.remote(
            vec![
                ("type", Value::from(kind::REMOTE_LEAVE)),
                ("opts", Self::opts_json(opts)),
                ("rooms", strings(rooms)),
            ],
            |l| l.del_sockets(opts, rooms),
        )
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
        self.remote(
            vec![
                ("type", Value::from(kind::REMOTE_DISCONNECT)),
                ("opts", Self::opts_json(opts)),
                ("close", Value::Bool(close)),
            ],
            |l| l.disconnect_sockets(opts, close),
        )
        .await
    }

    async fn rooms(&self, opts: &BroadcastOptions) -> Result<Vec<Room>, AdapterError> {
        let selective = !opts.rooms.is_empty() || !opts.except.is_empty();
        if opts.local || selective {
            let mut rooms = std::collections::BTreeSet::new();
            for s in self.fetch_sockets(opts).await? {
                rooms.extend(s.rooms);
            }
            return Ok(rooms.into_iter().collect());
        }
        let mut rooms: std::collections::BTreeSet<Room> = self.local_rooms().into_iter().collect();
        let servers = self.server_count().await?;
        if servers > 1 {
            let answers = self
                .request(vec![("type", Value::from(kind::ALL_ROOMS))], servers - 1)
                .await
                .map_err(|(e, _)| e)?;
            for a in answers {
                rooms.extend(texts(a.get("rooms")));
            }
        }
        Ok(rooms.into_iter().collect())
    }

    async fn server_side_emit(&self, args: &[Value]) -> Result<(), AdapterError> {
        let request = obj([
            ("uid", s(self.uid.clone())),
            ("type", Value::from(kind::SERVER_SIDE_EMIT)),
            ("data", Value::Array(args.to_vec())),
        ]);
        self.publish_now(&self.request_channel, codec::to_json(&request))
            .await
    }

    async fn server_side_emit_with_ack(
        &self,
        args: &[Value],
    ) -> Result<Vec<Value>, (AdapterError, Vec<Value>)> {
        let servers = self.server_count().await.map_err(|e| (e, Vec::new()))?;
        if servers <= 1 {
            return Ok(Vec::new());
        }
        let answers = self
            .request(
                vec![
                    ("type", Value::from(kind::SERVER_SIDE_EMIT)),
                    ("data", Value::Array(args.to_vec())),
                ],
                servers - 1,
            )
            .await
            .map_err(|(e, got)| {
                (
                    e,
                    got.into_iter()
                        .map(|a| a.get("data").cloned().unwrap_or_default())
                        .collect(),
                )
            })?;
        Ok(answers
            .into_iter()
            .map(|a| a.get("data").cloned().unwrap_or_default())
            .collect())
    }

    async fn server_count(&self) -> Result<usize, AdapterError> {
        crate::numsub(&self.driver, "NUMSUB", &self.request_channel).await
    }

    async fn ready(&self) -> Result<(), AdapterError> {
        // What is queued goes out, then the subscriptions are confirmed.
        tokio::time::timeout(self.config.request_timeout, self.driver.flush())
            .await
            .map_err(|_| AdapterError::Unavailable("the publisher did not drain".into()))?
            .map_err(|e| unavailable(&e))?;
        self.driver
            .sync(self.config.request_timeout)
            .await
            .map_err(|e| unavailable(&e))
    }

    fn close(&self) {
        for topic in [
            Topic::Pattern(format!("{}*", self.channel)),
            Topic::Channel(self.request_channel.clone()),
            Topic::Channel(self.response_channel.clone()),
            Topic::Channel(self.specific_response_channel.clone()),
        ] {
            self.driver.unsubscribe(topic);
        }
    }
}
