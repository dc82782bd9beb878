//! The in-memory adapter: rooms of this process only.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{AckResponse, Adapter, AdapterError, BroadcastOptions, Room, SocketInfo};
use crate::protocol::sid::{Sid, SidMap, SidSet};
use crate::protocol::socketio::Encoded;
use crate::socket::Socket;
use crate::socket::namespace::LocalNamespace;

/// Named rooms of this node. A socket's own-id room is not stored: it is
/// answered from the namespace's socket map, which saves two allocations
/// per connection.
#[derive(Default)]
struct Index {
    /// Members of each named room, as handles (no lookup per delivery).
    rooms: HashMap<Room, SidMap<Socket>>,
    /// Named rooms of each socket.
    memberships: SidMap<Vec<Room>>,
}

/// Rooms and fan-out for the sockets of this process. The room index is
/// only locked to compute the recipients, never while sending.
pub struct MemoryAdapter {
    nsp: LocalNamespace,
    index: RwLock<Index>,
}

impl MemoryAdapter {
    /// An adapter for one namespace.
    pub fn new(nsp: LocalNamespace) -> Self {
        MemoryAdapter {
            nsp,
            index: RwLock::new(Index::default()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The sockets of one room: a named room, or a socket's own id.
    fn room_members(&self, index: &Index, room: &str, out: &mut Vec<Socket>) {
        if let Some(members) = index.rooms.get(room) {
            out.extend(members.values().cloned());
        }
        // A socket's own-id room, even when a named room has the same name.
        if let Some(socket) = room
            .parse::<Sid>()
            .ok()
            .and_then(|sid| self.nsp.socket(sid))
            && !index
                .rooms
                .get(room)
                .is_some_and(|m| m.contains_key(&socket.id()))
        {
            out.push(socket);
        }
    }

    /// The local sockets an operation targets.
    pub fn recipients(&self, opts: &BroadcastOptions) -> Vec<Socket> {
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
            let excluded: SidSet = excluded.iter().map(Socket::id).collect();
            out.retain(|s| !excluded.contains(&s.id()));
        }
        out
    }
}

#[async_trait]
impl Adapter for MemoryAdapter {
    fn add_all(&self, sid: Sid, rooms: &[Room]) {
        let Some(socket) = self.nsp.socket(sid) else {
            return;
        };
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
            let members = index.rooms.entry(room.clone()).or_default();
            if members.insert(sid, socket.clone()).is_none() {
                index.memberships.entry(sid).or_default().push(room.clone());
            }
        }
    }

    fn del(&self, sid: Sid, room: &str) {
        let mut index = self.write();
        if let Some(members) = index.rooms.get_mut(room) {
            members.remove(&sid);
            if members.is_empty() {
                index.rooms.remove(room);
            }
        }
        if let Some(rooms) = index.memberships.get_mut(&sid) {
            rooms.retain(|r| r != room);
            if rooms.is_empty() {
                index.memberships.remove(&sid);
            }
        }
    }

    fn del_all(&self, sid: Sid) {
        let mut index = self.write();
        let Some(rooms) = index.memberships.remove(&sid) else {
            return;
        };
        for room in rooms {
            if let Some(members) = index.rooms.get_mut(&room) {
                members.remove(&sid);
                if members.is_empty() {
                    index.rooms.remove(&room);
                }
            }
        }
    }

    fn socket_rooms(&self, sid: Sid) -> Vec<Room> {
        let mut rooms = Vec::new();
        // A connected socket is in its own-id room.
        if self.nsp.socket(sid).is_some() {
            rooms.push(sid.to_string());
        }
        if let Some(named) = self.read().memberships.get(&sid) {
            rooms.extend(named.iter().cloned());
        }
        rooms
    }

    fn local_sockets(&self, opts: &BroadcastOptions) -> Vec<Sid> {
        self.recipients(opts).iter().map(Socket::id).collect()
    }

    async fn broadcast(
        &self,
        packet: &Encoded,
        opts: &BroadcastOptions,
    ) -> Result<(), AdapterError> {
        let frames = packet.frames();
        for socket in self.recipients(opts) {
            // A full queue closes that one socket; the others go on.
            let _ = socket.send_frames(&frames, opts.volatile);
        }
        Ok(())
    }

    async fn broadcast_with_ack(
        &self,
        packet: &Encoded,
        opts: &BroadcastOptions,
        ack_id: u64,
        responses: mpsc::UnboundedSender<AckResponse>,
        _timeout: Duration,
    ) -> Result<usize, AdapterError> {
        let frames = packet.frames();
        let mut expected = 0;
        for socket in self.recipients(opts) {
            socket.expect_broadcast_ack(ack_id, responses.clone());
            if matches!(socket.send_frames(&frames, opts.volatile), Ok(true)) {
                expected += 1;
            } else {
                socket.forget_ack(ack_id);
            }
        }
        Ok(expected)
    }

    async fn fetch_sockets(
        &self,
        opts: &BroadcastOptions,
    ) -> Result<Vec<SocketInfo>, AdapterError> {
        Ok(self
            .recipients(opts)
            .into_iter()
            .map(|s| SocketInfo {
                id: s.id(),
                nsp: s.ns().to_owned(),
                rooms: self.socket_rooms(s.id()),
                data: s.data_value(),
                handshake: s.handshake().clone(),
            })
            .collect())
    }

    async fn add_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> Result<(), AdapterError> {
        for socket in self.recipients(opts) {
            self.add_all(socket.id(), rooms);
        }
        Ok(())
    }

    async fn del_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> Result<(), AdapterError> {
        for socket in self.recipients(opts) {
            for room in rooms {
                self.del(socket.id(), room);
            }
        }
        Ok(())
    }

    async fn disconnect_sockets(
        &self,
        opts: &BroadcastOptions,
        close: bool,
    ) -> Result<(), AdapterError> {
        for socket in self.recipients(opts) {
            socket.disconnect_with(close);
        }
        Ok(())
    }

    async fn rooms(&self, opts: &BroadcastOptions) -> Result<Vec<Room>, AdapterError> {
        let mut rooms = std::collections::BTreeSet::new();
        for socket in self.recipients(opts) {
            rooms.extend(self.socket_rooms(socket.id()));
        }
        Ok(rooms.into_iter().collect())
    }
}
