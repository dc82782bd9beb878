//! The in-memory adapter: rooms of this process only.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{AckResponse, Adapter, AdapterError, BroadcastOptions, Room, SocketInfo};
use crate::protocol::sid::Sid;
use crate::protocol::socketio::Encoded;
use crate::socket::namespace::LocalNamespace;

#[derive(Default)]
struct Index {
    rooms: HashMap<Room, HashSet<Sid>>,
    sids: HashMap<Sid, HashSet<Room>>,
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
}

#[async_trait]
impl Adapter for MemoryAdapter {
    fn add_all(&self, sid: Sid, rooms: &[Room]) {
        let mut index = self.write();
        for room in rooms {
            index.rooms.entry(room.clone()).or_default().insert(sid);
        }
        index
            .sids
            .entry(sid)
            .or_default()
            .extend(rooms.iter().cloned());
    }

    fn del(&self, sid: Sid, room: &str) {
        let mut index = self.write();
        if let Some(members) = index.rooms.get_mut(room) {
            members.remove(&sid);
            if members.is_empty() {
                index.rooms.remove(room);
            }
        }
        if let Some(rooms) = index.sids.get_mut(&sid) {
            rooms.remove(room);
        }
    }

    fn del_all(&self, sid: Sid) {
        let mut index = self.write();
        let Some(rooms) = index.sids.remove(&sid) else {
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
        self.read()
            .sids
            .get(&sid)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn local_sockets(&self, opts: &BroadcastOptions) -> Vec<Sid> {
        let index = self.read();
        let excluded: HashSet<Sid> = opts
            .except
            .iter()
            .filter_map(|r| index.rooms.get(r))
            .flatten()
            .copied()
            .collect();
        if opts.rooms.is_empty() {
            return index
                .sids
                .keys()
                .filter(|s| !excluded.contains(s))
                .copied()
                .collect();
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for room in &opts.rooms {
            for sid in index.rooms.get(room).into_iter().flatten() {
                if !excluded.contains(sid) && seen.insert(*sid) {
                    out.push(*sid);
                }
            }
        }
        out
    }

    async fn broadcast(
        &self,
        packet: &Encoded,
        opts: &BroadcastOptions,
    ) -> Result<(), AdapterError> {
        let frames = packet.frames();
        for sid in self.local_sockets(opts) {
            if let Some(socket) = self.nsp.socket(sid) {
                // A full queue closes that one socket; the others go on.
                let _ = socket.send_frames(&frames, opts.volatile);
            }
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
        for sid in self.local_sockets(opts) {
            if let Some(socket) = self.nsp.socket(sid) {
                socket.expect_broadcast_ack(ack_id, responses.clone());
                if matches!(socket.send_frames(&frames, opts.volatile), Ok(true)) {
                    expected += 1;
                } else {
                    socket.forget_ack(ack_id);
                }
            }
        }
        Ok(expected)
    }

    async fn fetch_sockets(
        &self,
        opts: &BroadcastOptions,
    ) -> Result<Vec<SocketInfo>, AdapterError> {
        Ok(self
            .local_sockets(opts)
            .into_iter()
            .filter_map(|sid| self.nsp.socket(sid))
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
        for sid in self.local_sockets(opts) {
            self.add_all(sid, rooms);
        }
        Ok(())
    }

    async fn del_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> Result<(), AdapterError> {
        for sid in self.local_sockets(opts) {
            for room in rooms {
                self.del(sid, room);
            }
        }
        Ok(())
    }

    async fn disconnect_sockets(
        &self,
        opts: &BroadcastOptions,
        close: bool,
    ) -> Result<(), AdapterError> {
        for sid in self.local_sockets(opts) {
            if let Some(socket) = self.nsp.socket(sid) {
                socket.disconnect_with(close);
            }
        }
        Ok(())
    }

    async fn rooms(&self, _opts: &BroadcastOptions) -> Result<Vec<Room>, AdapterError> {
        Ok(self.read().rooms.keys().cloned().collect())
    }
}
