//! Connection state recovery: its settings, offsets, and the in-memory store
//! of the default adapter (packets and sessions, bounded by time and count).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::{MissedPacket, PersistedSession, Room, should_include};
use crate::protocol::socketio::Encoded;

/// Connection state recovery settings (see
/// [`crate::SocketIoBuilder::connection_state_recovery`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How long a disconnected client may come back as itself (2 minutes,
    /// as the reference). Also how long stored packets are kept.
    pub max_disconnection_duration: Duration,
    /// Whether a recovered socket skips the connect middlewares (true, as
    /// the reference).
    pub skip_middlewares: bool,
    /// How many packets the in-memory store keeps per namespace (10,000;
    /// the oldest go first). A client whose offset is gone gets a fresh
    /// connection.
    pub max_packets: usize,
    /// How many disconnected sessions the in-memory store keeps per
    /// namespace (100,000; the oldest go first).
    pub max_sessions: usize,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            max_disconnection_duration: Duration::from_secs(120),
            skip_middlewares: true,
            max_packets: 10_000,
            max_sessions: 100_000,
        }
    }
}

/// The position of a stored packet, sent to clients as the last argument
/// of each stored event. The in-memory store numbers packets (`"42"`); the
/// Redis streams store uses stream entry ids (`"1700000000000-3"`). Two
/// offsets of one store compare by their numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Offset(Arc<str>);

impl Offset {
    /// An offset from its text.
    pub fn new(text: &str) -> Self {
        Offset(text.into())
    }

    /// Its text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its numbers: `(n, 0)` for `"n"`, `(ms, seq)` for `"ms-seq"`.
    pub fn key(&self) -> Option<(u64, u64)> {
        parse_key(&self.0)
    }

    /// Whether this offset comes after `other` (false when either is not
    /// one this library makes).
    pub fn is_after(&self, other: &Offset) -> bool {
        matches!((self.key(), other.key()), (Some(a), Some(b)) if a > b)
    }
}

fn parse_key(text: &str) -> Option<(u64, u64)> {
    match text.split_once('-') {
        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
        None => Some((text.parse().ok()?, 0)),
    }
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Stored {
    seq: u64,
    at: Instant,
    rooms: Vec<Room>,
    except: Vec<Room>,
    offset: Offset,
    packet: Encoded,
}

struct Session {
    session: PersistedSession,
    at: Instant,
}

#[derive(Default)]
struct Inner {
    next: u64,
    packets: VecDeque<Stored>,
    sessions: HashMap<String, Session>,
    /// Persisted pids in time order, for eviction (entries of sessions
    /// already restored or replaced are skipped).
    order: VecDeque<(String, Instant)>,
    sweeping: bool,
}

/// The in-memory store of the default adapter.
pub(crate) struct MemoryStore {
    config: RecoveryConfig,
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub(crate) fn new(config: RecoveryConfig) -> Arc<Self> {
        Arc::new(MemoryStore {
            config,
            inner: Mutex::new(Inner {
                next: 1,
                ..Inner::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a packet sent with these rooms: gives it the next offset,
    /// appended as its last argument. Returns the packet to send.
    pub(crate) fn store(
        self: &Arc<Self>,
        packet: &Encoded,
        rooms: &[Room],
        except: &[Room],
    ) -> (Offset, Encoded) {
        let now = Instant::now();
        let mut inner = self.lock();
        let seq = inner.next;
        inner.next += 1;
        let offset = Offset::new(&seq.to_string());
        let packet = packet.with_last_arg(offset.as_str());
        inner.packets.push_back(Stored {
            seq,
            at: now,
            rooms: rooms.to_vec(),
            except: except.to_vec(),
            offset: offset.clone(),
            packet: packet.clone(),
        });
        while inner.packets.len() > self.config.max_packets {
            inner.packets.pop_front();
        }
        self.expire(&mut inner, now);
        self.start_sweeper(&mut inner);
        (offset, packet)
    }

    pub(crate) fn persist(self: &Arc<Self>, session: PersistedSession) {
        let now = Instant::now();
        let mut inner = self.lock();
        let pid = session.pid.to_string();
        inner.order.push_back((pid.clone(), now));
        inner.sessions.insert(pid, Session { session, at: now });
        while inner.sessions.len() > self.config.max_sessions {
            let Some((pid, at)) = inner.order.pop_front() else {
                break;
            };
            if inner.sessions.get(&pid).is_some_and(|s| s.at == at) {
                inner.sessions.remove(&pid);
            }
        }
        self.expire(&mut inner, now);
        self.start_sweeper(&mut inner);
    }

    /// Takes a session back if it has not expired and `offset` is still
    /// stored (the reference's conditions).
    pub(crate) fn restore(&self, pid: &str, offset: &str) -> Option<PersistedSession> {
        let now = Instant::now();
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        if !inner.sessions.contains_key(pid) || find(&inner.packets, offset).is_none() {
            return None;
        }
        inner.sessions.remove(pid).map(|s| s.session)
    }

    /// The stored packets after `offset` for a socket in `rooms`.
    pub(crate) fn missed(&self, rooms: &[Room], offset: &str) -> Vec<MissedPacket> {
        let inner = self.lock();
        let Some(index) = find(&inner.packets, offset) else {
            return Vec::new();
        };
        inner
            .packets
            .iter()
            .skip(index + 1)
            .filter(|p| should_include(rooms, &p.rooms, &p.except))
            .map(|p| MissedPacket {
                offset: p.offset.clone(),
                packet: p.packet.clone(),
            })
            .collect()
    }

    /// Drops what is older than the disconnection window.
    fn expire(&self, inner: &mut Inner, now: Instant) {
        let window = self.config.max_disconnection_duration;
        let Some(threshold) = now.checked_sub(window) else {
            return;
        };
        while inner.packets.front().is_some_and(|p| p.at < threshold) {
            inner.packets.pop_front();
        }
        while inner.order.front().is_some_and(|(_, at)| *at < threshold) {
            let (pid, at) = inner.order.pop_front().expect("checked");
            if inner.sessions.get(&pid).is_some_and(|s| s.at == at) {
                inner.sessions.remove(&pid);
            }
        }
    }

    /// Sweeps periodically (every minute at most, as the reference), so an
    /// idle namespace does not keep expired sessions and packets. Started
    /// on first use, from within the runtime.
    fn start_sweeper(self: &Arc<Self>, inner: &mut Inner) {
        if inner.sweeping || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        inner.sweeping = true;
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = (self.config.max_disconnection_duration / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                let mut inner = store.lock();
                store.expire(&mut inner, Instant::now());
            }
        });
    }

    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.packets.len(), inner.sessions.len())
    }
}

/// The index of the packet with this offset.
fn find(packets: &VecDeque<Stored>, offset: &str) -> Option<usize> {
    let (seq, 0) = parse_key(offset)? else {
        return None;
    };
    let first = packets.front()?.seq;
    let index = usize::try_from(seq.checked_sub(first)?).ok()?;
    (packets.get(index)?.seq == seq).then_some(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sid::Sid;
    use crate::protocol::socketio::{Args, encode_event};

    fn packet(n: u64) -> Encoded {
        encode_event("/", "m", &n, Args::One, None).unwrap()
    }

    fn session() -> PersistedSession {
        PersistedSession {
            sid: Sid::new(),
            pid: Sid::new(),
            rooms: vec!["a".into()],
            data: serde_json::Value::Null,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn offsets_filter_and_bounds() {
        let store = MemoryStore::new(RecoveryConfig {
            max_packets: 4,
            ..RecoveryConfig::default()
        });
        let (o1, p1) = store.store(&packet(1), &[], &[]);
        assert_eq!(&p1.text[..], br#"42["m",1,"1"]"#);
        store.store(&packet(2), &["b".into()], &[]);
        store.store(&packet(3), &["a".into()], &[]);
        let missed = store.missed(&["a".into()], o1.as_str());
        assert_eq!(missed.len(), 1, "the packet for room b is filtered out");
        assert_eq!(missed[0].offset.as_str(), "3");
        store.store(&packet(4), &[], &["a".into()]);
        assert!(store.missed(&["a".into()], o1.as_str()).len() == 1);
        store.store(&packet(5), &[], &[]);
        // Bounded by count (4): offset 1 was dropped, so no recovery from it.
        let s = session();
        store.persist(s.clone());
        assert_eq!(store.restore(&s.pid.to_string(), "1"), None);
        assert_eq!(store.restore(&s.pid.to_string(), "zz"), None);
        assert_eq!(store.restore(&s.pid.to_string(), "4"), Some(s.clone()));
        // Taken: a second attempt finds nothing.
        assert_eq!(store.restore(&s.pid.to_string(), "4"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_and_packets_expire() {
        let store = MemoryStore::new(RecoveryConfig {
            max_disconnection_duration: Duration::from_secs(10),
            ..RecoveryConfig::default()
        });
        let (o, _) = store.store(&packet(1), &[], &[]);
        let s = session();
        store.persist(s.clone());
        assert_eq!(store.sizes(), (1, 1));
        tokio::time::sleep(Duration::from_secs(16)).await;
        // The sweeper ran meanwhile (nothing else touched the store).
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.sizes(), (0, 0));
        assert_eq!(store.restore(&s.pid.to_string(), o.as_str()), None);
    }

    #[test]
    fn offsets_compare_by_number() {
        assert!(Offset::new("10").is_after(&Offset::new("9")));
        assert!(Offset::new("1700000000000-3").is_after(&Offset::new("1700000000000-2")));
        assert!(!Offset::new("x").is_after(&Offset::new("1")));
    }

    #[test]
    fn sessions_are_bounded_by_count() {
        let store = MemoryStore::new(RecoveryConfig {
            max_sessions: 2,
            ..RecoveryConfig::default()
        });
        let (o, _) = store.store(&packet(1), &[], &[]);
        store.store(&packet(2), &[], &[]);
        let (a, b, c) = (session(), session(), session());
        store.persist(a.clone());
        store.persist(b.clone());
        store.persist(c.clone());
        assert_eq!(store.restore(&a.pid.to_string(), o.as_str()), None);
        assert!(store.restore(&c.pid.to_string(), o.as_str()).is_some());
    }
}
