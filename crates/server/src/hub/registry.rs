//! The registry of this node's open connections, whatever their
//! protocol, with their user: how `POST /api/disconnect` reaches a user's
//! connections, how `/metrics` counts them, and how shutdown tells every
//! client to go.

use std::sync::Arc;

use super::{CloseReason, Hub, Subscriber, Wire};

/// A connection in the hub's registry.
pub(super) struct Registered {
    sub: Arc<dyn Subscriber>,
    wire: Wire,
    user: Option<String>,
}

impl Hub {
    /// Registers an open connection (authenticated as `user`, if any), so
    /// that it can be closed by user or at shutdown.
    pub fn connect(&self, sub: Arc<dyn Subscriber>, wire: Wire, user: Option<String>) {
        let id = sub.id().to_owned();
        self.connections
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Registered { sub, wire, user });
    }

    /// Records that a registered connection authenticated as `user`.
    pub fn set_user(&self, conn: &str, user: &str) {
        if let Some(r) = self
            .connections
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(conn)
        {
            r.user = Some(user.to_owned());
        }
    }

    /// Forgets a closed connection.
    pub fn disconnect(&self, conn: &str) {
        self.connections
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(conn);
    }

    /// Asks every connection of `user` (or every connection, with `None`)
    /// to close; returns how many were asked. No lock is held while they
    /// are told.
    pub fn close_connections(&self, user: Option<&str>, reason: CloseReason) -> usize {
        let targets: Vec<Arc<dyn Subscriber>> = self
            .connections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| user.is_none() || r.user.as_deref() == user)
            .map(|r| Arc::clone(&r.sub))
            .collect();
        for t in &targets {
            t.close(reason);
        }
        targets.len()
    }

    /// Open connections by protocol: `[socket.io, ws, sse]`.
    pub fn connection_counts(&self) -> [usize; 3] {
        let mut counts = [0; 3];
        for r in self
            .connections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            counts[r.wire as usize] += 1;
        }
        counts
    }

    /// Open connections by protocol and transport.
    pub fn connections_by_transport(&self) -> Vec<(Wire, &'static str, usize)> {
        let mut counts: Vec<(Wire, &'static str, usize)> = Vec::new();
        for r in self
            .connections
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            let t = r.sub.transport();
            match counts.iter_mut().find(|c| c.0 == r.wire && c.1 == t) {
                Some(c) => c.2 += 1,
                None => counts.push((r.wire, t, 1)),
            }
        }
        counts
    }
}
