//! The in-memory adapter: rooms of this process only, and (with connection
//! state recovery on) the packets and sessions of recovery in memory.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::local::LocalAdapter;
use super::recovery::MemoryStore;
use super::{
    AckEvent, AckSink, Adapter, AdapterError, BroadcastOptions, LocalNamespace, MissedPacket,
    PersistedSession, Room, SocketInfo,
};
use crate::protocol::socketio::Encoded;

/// The default adapter: this node's rooms, and the in-memory store of
/// connection state recovery when it is on.
pub struct MemoryAdapter {
    local: LocalAdapter,
    store: Option<Arc<MemoryStore>>,
}

impl std::fmt::Debug for MemoryAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAdapter")
            .field("local", &self.local)
            .field("recovery", &self.store.is_some())
            .finish()
    }
}

impl MemoryAdapter {
    /// An adapter for one namespace.
    pub fn new(nsp: LocalNamespace) -> Self {
        let store = nsp.recovery().cloned().map(MemoryStore::new);
        MemoryAdapter {
            local: LocalAdapter::new(nsp),
            store,
        }
    }

    /// The local half (rooms and operations on this node's sockets).
    pub fn local(&self) -> &LocalAdapter {
        &self.local
    }
}

#[async_trait]
impl Adapter for MemoryAdapter {
    fn local(&self) -> &LocalAdapter {
        &self.local
    }

    async fn broadcast(
        &self,
        packet: &Encoded,
        opts: &BroadcastOptions,
    ) -> Result<(), AdapterError> {
        match &self.store {
            Some(store) if !opts.volatile => {
                let (offset, packet) = store.store(packet, &opts.rooms, &opts.except);
                self.local.broadcast(&packet, opts, Some(&offset));
            }
            _ => {
                self.local.broadcast(packet, opts, None);
            }
        }
        Ok(())
    }

    async fn broadcast_with_ack(
        &self,
        packet: &Encoded,
        ack_id: u64,
        opts: &BroadcastOptions,
        _timeout: Duration,
        sink: AckSink,
    ) -> Result<(), AdapterError> {
        let count = self.local.broadcast_with_ack(packet, ack_id, opts, &sink);
        let _ = sink.send(AckEvent::ClientCount(count));
        Ok(())
    }

    async fn fetch_sockets(
        &self,
        opts: &BroadcastOptions,
    ) -> Result<Vec<SocketInfo>, AdapterError> {
        Ok(self.local.fetch_sockets(opts))
    }

    async fn add_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> Result<(), AdapterError> {
        self.local.add_sockets(opts, rooms);
        Ok(())
    }

    async fn del_sockets(
        &self,
        opts: &BroadcastOptions,
        rooms: &[Room],
    ) -> Result<(), AdapterError> {
        self.local.del_sockets(opts, rooms);
        Ok(())
    }

    async fn disconnect_sockets(
        &self,
        opts: &BroadcastOptions,
        close: bool,
    ) -> Result<(), AdapterError> {
        self.local.disconnect_sockets(opts, close);
        Ok(())
    }

    async fn rooms(&self, opts: &BroadcastOptions) -> Result<Vec<Room>, AdapterError> {
        Ok(self.local.rooms(opts).into_iter().collect())
    }

    async fn persist_session(&self, session: PersistedSession) {
        if let Some(store) = &self.store {
            store.persist(session);
        }
    }

    async fn restore_session(
        &self,
        pid: &str,
        offset: &str,
    ) -> Result<Option<PersistedSession>, AdapterError> {
        Ok(self.store.as_ref().and_then(|s| s.restore(pid, offset)))
    }

    async fn missed_packets(
        &self,
        rooms: &[Room],
        offset: &str,
    ) -> Result<Vec<MissedPacket>, AdapterError> {
        Ok(self
            .store
            .as_ref()
            .map(|s| s.missed(rooms, offset))
            .unwrap_or_default())
    }
}
