//! [`LocalAdapter`]: the rooms of this node's sockets and every operation
//! on them. The [`super::MemoryAdapter`] is one; cluster adapters use one
//! for their local half and for what other nodes ask of this one.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use super::{
    AckSink, BroadcastOptions, LocalNamespace, Offset, Outgoing, Room, SocketInfo, SocketRef,
};
use crate::protocol::sid::{Sid, SidMap, SidSet};
use crate::protocol::socketio::Encoded;

/// A room came to exist on this node (its first socket joined) or ceased
/// to (its last socket left). Own-id rooms are implicit and never reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// The room has its first local socket.
    Created(Room),
    /// The room's last local socket left.
    Deleted(Room),
}

type RoomListener = Box<dyn Fn(RoomEvent) + Send + Sync>;

/// Named rooms of this node. A socket's own-id room is not stored: it is
/// answered from the namespace's socket map, which saves two allocations
/// per connection.
#[derive(Default)]
struct Index {
    /// Members of each named room, as handles (no lookup per delivery).
    rooms: HashMap<Room, SidMap<SocketRef>>,
    /// Named rooms of each socket.
    memberships: SidMap<Vec<Room>>,
}

/// Rooms and operations for the sockets of this node. The room index is
/// only locked to compute the recipients, never while sending.
pub struct LocalAdapter {
    nsp: LocalNamespace,
    index: RwLock<Index>,
    listener: Option<RoomListener>,
}

impl std::fmt::Debug for LocalAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAdapter")
            .field("nsp", &self.nsp.name())
            .finish()
    }
}

impl LocalAdapter {
    /// The local half of an adapter for one namespace.
    pub fn new(nsp: LocalNamespace) -> Self {
        LocalAdapter {
            nsp,
            index: RwLock::new(Index::default()),
            listener: None,
        }
    }

    /// Calls `listener` whenever a room is created or deleted on this node
    /// (a cluster adapter subscribing to per-room channels needs this).
    /// The listener runs without the room index locked.
    pub fn with_room_listener(
        mut self,
        listener: impl Fn(RoomEvent) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Box::new(listener));
        self
    }

    /// The namespace.
    pub fn namespace(&self) -> &LocalNamespace {
        &self.nsp
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, events: Vec<RoomEvent>) {
        if let Some(listener) = &self.listener {
            for e in events {
                listener(e);
            }
        }
    }

    /// The sockets of one room: a named room, or a socket's own id.
    fn room_members(&self, index: &Index, room: &str, out: &mut Vec<SocketRef>) {
        let named = index.rooms.get(room);
        if let Some(members) = named {
            out.extend(members.values().cloned());
        }
        // A socket's own-id room, even when a named room has the same name.
        if let Some(socket) = room
            .parse::<Sid>()
            .ok()
            .and_then(|sid| self.nsp.socket(sid))
            && !named.is_some_and(|m| m.contains_key(&socket.id()))
        {
            out.push(socket);
        }
    }

    /// The local sockets an operation targets.
    pub(crate) fn recipients(&self, opts: &BroadcastOptions) -> Vec<SocketRef> {
        let mut out = Vec::new();
        if opts.rooms.is_empty() {
            out = self.nsp.sockets();
        } else {
            let index = self.read();
            for room in &opts.rooms {
                self.room_members(&index, room, &mut out);
            }
            drop(index);
            if opts.rooms.len() > 1 {
                let mut seen = SidSet::default();
                out.retain(|s| seen.insert(s.id()));
            }
        }
        if !opts.except.is_empty() {
            let mut excluded = Vec::new();
            {
                let index = self.read();
                for room in &opts.except {
                    self.room_members(&index, room, &mut excluded);
                }
            }
            let excluded: SidSet = excluded.iter().map(|s| s.id()).collect();
            out.retain(|s| !excluded.contains(&s.id()));
        }
        out
    }

    /// Adds a local socket to rooms (a socket that is leaving is not
    /// re-added).
    pub fn add_all(&self, sid: Sid, rooms: &[Room]) {
        let Some(socket) = self.nsp.socket(sid) else {
            return;
        };
        let mut created = Vec::new();
        {
            let mut index = self.write();
            // Checked under the index lock: a socket that is leaving clears
            // `connected` before removing its rooms, so it cannot rejoin after.
            if !socket.connected() {
                return;
            }
            for room in rooms {
                if room.as_str() == sid.as_str() {
                    continue;
                }
                let members = index.rooms.entry(room.clone()).or_insert_with(|| {
                    created.push(RoomEvent::Created(room.clone()));
                    SidMap::default()
                });
                if members.insert(sid, socket.clone()).is_none() {
                    index.memberships.entry(sid).or_default().push(room.clone());
                }
            }
        }
        self.notify(created);
    }

    /// Removes a local socket from a room.
    pub fn del(&self, sid: Sid, room: &str) {
        let mut deleted = Vec::new();
        {
            let mut index = self.write();
            if let Some(members) = index.rooms.get_mut(room) {
                members.remove(&sid);
                if members.is_empty() {
                    index.rooms.remove(room);
                    deleted.push(RoomEvent::Deleted(room.to_owned()));
                }
            }
            if let Some(rooms) = index.memberships.get_mut(&sid) {
                rooms.retain(|r| r != room);
                if rooms.is_empty() {
                    index.memberships.remove(&sid);
                }
            }
        }
        self.notify(deleted);
    }

    /// Removes a local socket from all its rooms.
    pub fn del_all(&self, sid: Sid) {
        let mut deleted = Vec::new();
        {
            let mut index = self.write();
            let Some(rooms) = index.memberships.remove(&sid) else {
                return;
            };
            for room in rooms {
                if let Some(members) = index.rooms.get_mut(&room) {
                    members.remove(&sid);
                    if members.is_empty() {
                        index.rooms.remove(&room);
                        deleted.push(RoomEvent::Deleted(room));
                    }
                }
            }
        }
        self.notify(deleted);
    }

    /// The rooms of a local socket, its own id room first.
    pub fn socket_rooms(&self, sid: Sid) -> Vec<Room> {
        let mut rooms = Vec::new();
        if self.nsp.socket(sid).is_some() {
            rooms.push(sid.to_string());
        }
        if let Some(named) = self.read().memberships.get(&sid) {
            rooms.extend(named.iter().cloned());
        }
        rooms
    }

    /// Whether a named room has sockets on this node, or `room` is the id
    /// of a local socket.
    pub fn has_room(&self, room: &str) -> bool {
        self.read().rooms.contains_key(room)
            || room
                .parse::<Sid>()
                .ok()
                .is_some_and(|sid| self.nsp.socket(sid).is_some())
    }

    /// Whether `room` is the id of a socket of this node.
    pub fn is_socket_id(&self, room: &str) -> bool {
        room.parse::<Sid>()
            .ok()
            .is_some_and(|sid| self.nsp.socket(sid).is_some())
    }

    /// The named rooms with sockets on this node (own-id rooms excluded).
    pub fn named_rooms(&self) -> Vec<Room> {
        self.read().rooms.keys().cloned().collect()
    }

    /// The ids of the local sockets matching `opts`.
    pub fn socket_ids(&self, opts: &BroadcastOptions) -> Vec<Sid> {
        self.recipients(opts).iter().map(|s| s.id()).collect()
    }

    /// Sends a packet to every matching local socket; returns how many
    /// queued it. `offset` is the packet's offset when it was stored for
    /// connection state recovery.
    pub fn broadcast(
        &self,
        packet: &Encoded,
        opts: &BroadcastOptions,
        offset: Option<&Offset>,
    ) -> usize {
        let frames = packet.frames();
        let out = Outgoing {
            frames: &frames,
            volatile: opts.volatile,
            offset,
        };
        // A full queue closes that one socket; the others go on.
        self.recipients(opts)
            .iter()
            .filter(|socket| socket.deliver(out))
            .count()
    }

    /// Sends a packet whose ack id is `ack_id` to every matching local
    /// socket, routing their answers to `sink`; returns how many answers
    /// to expect.
    pub fn broadcast_with_ack(
        &self,
        packet: &Encoded,
        ack_id: u64,
        opts: &BroadcastOptions,
        sink: &AckSink,
    ) -> usize {
        let frames = packet.frames();
        let out = Outgoing {
            frames: &frames,
            volatile: opts.volatile,
            offset: None,
        };
        let mut expected = 0;
        for socket in self.recipients(opts) {
            socket.expect_ack(ack_id, sink.clone());
            if socket.deliver(out) {
                expected += 1;
            } else {
                socket.forget_ack(ack_id);
            }
        }
        expected
    }

    /// Forgets ack `ack_id` on every local socket (its broadcast is over).
    pub fn forget_ack(&self, ack_id: u64) {
        for socket in self.nsp.sockets() {
            socket.forget_ack(ack_id);
        }
    }

    /// Describes every matching local socket.
    pub fn fetch_sockets(&self, opts: &BroadcastOptions) -> Vec<SocketInfo> {
        self.recipients(opts)
            .into_iter()
            .map(|s| SocketInfo {
                id: s.id(),
                nsp: self.nsp.name().to_owned(),
                rooms: self.socket_rooms(s.id()),
                data: s.data(),
                handshake: s.handshake(),
            })
            .collect()
    }

    /// Makes every matching local socket join `rooms`.
    pub fn add_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        for socket in self.recipients(opts) {
            self.add_all(socket.id(), rooms);
        }
    }

    /// Makes every matching local socket leave `rooms`.
    pub fn del_sockets(&self, opts: &BroadcastOptions, rooms: &[Room]) {
        for socket in self.recipients(opts) {
            for room in rooms {
                self.del(socket.id(), room);
            }
        }
    }

    /// Disconnects every matching local socket (its whole connection when
    /// `close`).
    pub fn disconnect_sockets(&self, opts: &BroadcastOptions, close: bool) {
        for socket in self.recipients(opts) {
            socket.disconnect(close);
        }
    }

    /// The rooms (own-id rooms included) of the matching local sockets.
    pub fn rooms(&self, opts: &BroadcastOptions) -> BTreeSet<Room> {
        let mut rooms = BTreeSet::new();
        for socket in self.recipients(opts) {
            rooms.extend(self.socket_rooms(socket.id()));
        }
        rooms
    }
}
