//! Presence: the users (not connections) subscribed to a channel. A user
//! with three tabs is one entry with three connections; join and leave are
//! reported when a user's first connection arrives and its last one goes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Serialize;

use crate::channel::ChannelName;

/// One user present in a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresenceEntry {
    /// The user id.
    pub user: String,
    /// The display name from the user's token.
    pub name: Option<String>,
    /// How many of the user's connections are subscribed.
    pub connections: usize,
}

/// Whether a change made a user appear or disappear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceChange {
    /// The user's first connection: a join.
    Joined,
    /// The user's last connection left: a leave.
    Left,
    /// The user was already there (or still is).
    Unchanged,
}

/// Presence of users in channels. Connections are identified by an opaque
/// id unique across the cluster.
pub trait Presence: Send + Sync + 'static {
    /// A connection of `user` subscribed.
    fn add(
        &self,
        channel: &ChannelName,
        user: &str,
        name: Option<&str>,
        conn: &str,
    ) -> PresenceChange;
    /// A connection left (unsubscribed or disconnected).
    fn remove(&self, channel: &ChannelName, user: &str, conn: &str) -> PresenceChange;
    /// Everyone present, ordered by user id.
    fn get(&self, channel: &ChannelName) -> Vec<PresenceEntry>;
}

#[derive(Default)]
struct UserPresence {
    name: Option<String>,
    conns: Vec<String>,
}

/// Presence kept in this process.
#[derive(Default)]
pub struct MemoryPresence {
    channels: Mutex<HashMap<ChannelName, BTreeMap<String, UserPresence>>>,
}

impl Presence for MemoryPresence {
    fn add(
        &self,
        channel: &ChannelName,
        user: &str,
        name: Option<&str>,
        conn: &str,
    ) -> PresenceChange {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let users = channels.entry(channel.clone()).or_default();
        let entry = users.entry(user.to_owned()).or_default();
        if entry.conns.iter().any(|c| c == conn) {
            return PresenceChange::Unchanged;
        }
        if let Some(name) = name {
            entry.name = Some(name.to_owned());
        }
        entry.conns.push(conn.to_owned());
        if entry.conns.len() == 1 {
            PresenceChange::Joined
        } else {
            PresenceChange::Unchanged
        }
    }

    fn remove(&self, channel: &ChannelName, user: &str, conn: &str) -> PresenceChange {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let Some(users) = channels.get_mut(channel) else {
            return PresenceChange::Unchanged;
        };
        let Some(entry) = users.get_mut(user) else {
            return PresenceChange::Unchanged;
        };
        let before = entry.conns.len();
        entry.conns.retain(|c| c != conn);
        if entry.conns.len() == before {
            return PresenceChange::Unchanged;
        }
        if !entry.conns.is_empty() {
            return PresenceChange::Unchanged;
        }
        users.remove(user);
        if users.is_empty() {
            channels.remove(channel);
        }
        PresenceChange::Left
    }

    fn get(&self, channel: &ChannelName) -> Vec<PresenceEntry> {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .get(channel)
            .map(|users| {
                users
                    .iter()
                    .map(|(user, p)| PresenceEntry {
                        user: user.clone(),
                        name: p.name.clone(),
                        connections: p.conns.len(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_with_three_tabs_is_one_entry_joining_once_and_leaving_once() {
        let p = MemoryPresence::default();
        let ch = ChannelName::parse("chat:lobby").unwrap();
        assert_eq!(p.add(&ch, "42", Some("Ada"), "c1"), PresenceChange::Joined);
        assert_eq!(
            p.add(&ch, "42", Some("Ada"), "c2"),
            PresenceChange::Unchanged
        );
        assert_eq!(
            p.add(&ch, "42", Some("Ada"), "c3"),
            PresenceChange::Unchanged
        );
        assert_eq!(
            p.add(&ch, "42", Some("Ada"), "c3"),
            PresenceChange::Unchanged
        );
        assert_eq!(p.add(&ch, "7", None, "c4"), PresenceChange::Joined);
        assert_eq!(
            p.get(&ch),
            vec![
                PresenceEntry {
                    user: "42".into(),
                    name: Some("Ada".into()),
                    connections: 3
                },
                PresenceEntry {
                    user: "7".into(),
                    name: None,
                    connections: 1
                },
            ]
        );
        assert_eq!(p.remove(&ch, "42", "c1"), PresenceChange::Unchanged);
        assert_eq!(p.remove(&ch, "42", "c2"), PresenceChange::Unchanged);
        assert_eq!(p.remove(&ch, "42", "nope"), PresenceChange::Unchanged);
        assert_eq!(p.remove(&ch, "42", "c3"), PresenceChange::Left);
        assert_eq!(p.remove(&ch, "7", "c4"), PresenceChange::Left);
        assert!(p.get(&ch).is_empty());
    }
}
