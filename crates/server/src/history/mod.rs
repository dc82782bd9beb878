//! Channel history: every publication gets the next offset of its channel,
//! and each channel stream has an epoch that changes when its history is
//! lost or reset. A client that saw `(offset, epoch)` can ask for what came
//! after: it gets every publication since, in order, without gaps or
//! duplicates, or a clear "not recoverable".
//!
//! [`History`] is the interface; [`MemoryHistory`] keeps channels in
//! memory, [`SqliteHistory`] in the embedded database and [`RedisHistory`]
//! in Redis, shared by the nodes of a cluster.

mod payload;
mod redis;
mod sqlite;

pub use payload::Payload;
pub use redis::RedisHistory;
pub use sqlite::{Busy, SqliteHistory, SqliteOptions, SqliteStats};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::channel::ChannelName;

/// Where a client is in a channel's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    /// The offset of the last publication seen (0: none yet).
    pub offset: u64,
    /// The epoch of the stream those offsets belong to.
    pub epoch: String,
}

/// One publication in a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    /// Its offset in the channel (1, 2, 3...).
    pub offset: u64,
    /// The published JSON, serialized once.
    pub data: Payload,
    /// Who published it (user id), when known.
    pub from: Option<String>,
    /// When it was published, in milliseconds since the epoch.
    pub time_ms: u64,
}

/// How to store one publication.
#[derive(Debug, Clone, Default)]
pub struct AppendOptions {
    /// How many publications the channel keeps (0: none; offsets still advance).
    pub size: usize,
    /// How long they are kept (`None`: no limit).
    pub ttl: Option<Duration>,
    /// A key that makes a retried publish land once.
    pub idempotency_key: Option<String>,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The publication (the earlier one, for a duplicate).
    pub publication: Publication,
    /// The channel's epoch.
    pub epoch: String,
    /// Whether the idempotency key had been seen: nothing new was stored.
    pub duplicate: bool,
}

/// What [`History::since`] could give back.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// Everything after the position, in order (possibly nothing).
    Recovered(Vec<Publication>),
    /// The position is from another epoch or older than what is kept; the
    /// client must start over from `current`.
    NotRecovered {
        /// Where the stream is now.
        current: StreamPosition,
    },
}

/// Why the history failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The storage failed.
    #[error("history storage: {0}")]
    Storage(String),
}

/// What runs right after a publication is stored (the node's fan-out), in
/// the channel's offset order, whether or not the caller of
/// [`History::append_then`] still waits.
pub type Stored = Box<dyn FnOnce(&Appended) + Send + 'static>;

/// Per-channel history. Implementations assign offsets atomically with
/// storing: two publications never get the same offset, and a reader never
/// sees offset `n + 1` before `n`. No lock wider than a channel is held on
/// the way, and none across a disk write.
#[async_trait]
pub trait History: Send + Sync + 'static {
    /// Stores a publication and gives it the channel's next offset.
    async fn append(
        &self,
        channel: &ChannelName,
        data: Payload,
        from: Option<String>,
        opts: &AppendOptions,
    ) -> Result<Appended, HistoryError> {
        self.append_then(channel, data, from, opts, Box::new(|_| {}))
            .await
    }

    /// [`History::append`], then `then` with the result (a duplicate
    /// included), before any later publication of the channel is stored.
    /// Once the future has been polled, the append and `then` happen as
    /// one unit even if the future is dropped: a cancelled caller cannot
    /// leave a publication stored but not delivered.
    async fn append_then(
        &self,
        channel: &ChannelName,
        data: Payload,
        from: Option<String>,
        opts: &AppendOptions,
        then: Stored,
    ) -> Result<Appended, HistoryError>;

    /// The publications after `position`, or why they cannot be recovered.
    async fn since(
        &self,
        channel: &ChannelName,
        position: &StreamPosition,
        ttl: Option<Duration>,
    ) -> Result<Recovery, HistoryError>;

    /// The last `limit` publications and the current position.
    async fn latest(
        &self,
        channel: &ChannelName,
        limit: usize,
        ttl: Option<Duration>,
    ) -> Result<(Vec<Publication>, StreamPosition), HistoryError>;
}

/// What a resume position says before anything is read, the same for
/// every implementation: another epoch or a position past the stream's
/// top cannot be recovered; the top itself is recovered with nothing to
/// send. `None`: the publications after it must be read.
pub(crate) fn settled(position: &StreamPosition, current: &StreamPosition) -> Option<Recovery> {
    if position.epoch != current.epoch || position.offset > current.offset {
        return Some(Recovery::NotRecovered {
            current: current.clone(),
        });
    }
    (position.offset == current.offset).then(|| Recovery::Recovered(Vec::new()))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new random epoch (8 hex characters).
pub fn new_epoch() -> String {
    let mut raw = [0u8; 4];
    getrandom::fill(&mut raw).expect("the OS random source is unavailable");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

struct Stream {
    epoch: String,
    /// Offset of the last publication (0: none yet).
    top: u64,
    items: VecDeque<Publication>,
    /// Idempotency key -> the publication it stored (kept even when the
    /// publication itself has left the history).
    keys: HashMap<String, Publication>,
    /// Forgotten: taken out of the map; whoever still holds it looks again.
    dead: bool,
}

impl Stream {
    fn prune(&mut self, ttl: Option<Duration>) {
        if let Some(ttl) = ttl {
            let oldest = now_ms().saturating_sub(ttl.as_millis() as u64);
            while self.items.front().is_some_and(|p| p.time_ms < oldest) {
                self.items.pop_front();
            }
            self.keys.retain(|_, p| p.time_ms >= oldest);
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
}

/// History kept in memory: lost at restart, when every channel gets a new
/// epoch (so clients learn their positions are void).
pub struct MemoryHistory {
    /// Each channel's stream behind its own lock: the map's lock is held
    /// only to find a stream, so channels never wait on each other.
    streams: Mutex<HashMap<ChannelName, Arc<Mutex<Stream>>>>,
    /// This process's epoch: every stream starts with it, and a channel
    /// never published to reads as `(0, epoch)` without being stored
    /// (reads of made-up channel names keep nothing).
    epoch: String,
    /// Set once an idle stream was forgotten ([`MemoryHistory::forget_idle`]):
    /// from then on a new stream gets an epoch of its own, as it may be one
    /// that was forgotten (its offsets start again, and a position from
    /// before must not resume into them).
    forgot: std::sync::atomic::AtomicBool,
}

impl Default for MemoryHistory {
    fn default() -> Self {
        MemoryHistory {
            streams: Mutex::default(),
            epoch: new_epoch(),
            forgot: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// How long idempotency keys are remembered.
pub(crate) const KEY_MEMORY: Duration = Duration::from_secs(300);

impl MemoryHistory {
    fn empty(&self) -> Stream {
        Stream {
            epoch: self.epoch.clone(),
            top: 0,
            items: VecDeque::new(),
            keys: HashMap::new(),
            dead: false,
        }
    }

    /// A stream being created (see `forgot`).
    fn created(&self) -> Stream {
        let mut stream = self.empty();
        if self.forgot.load(std::sync::atomic::Ordering::Acquire) {
            stream.epoch = new_epoch();
        }
        stream
    }

    /// Streams held in memory.
    pub fn stream_count(&self) -> usize {
        self.streams.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Forgets `channel`'s stream if it keeps nothing (no publication
    /// within `ttl`, no idempotency key still remembered) and `busy` says
    /// nobody is subscribed, so channels used once (`typing:<random>`) do
    /// not stay in memory. `busy` is asked again after the stream is
    /// taken out: a subscriber that came meanwhile may have read its
    /// position, and then the stream is put back.
    pub fn forget_idle(
        &self,
        channel: &ChannelName,
        ttl: Option<Duration>,
        busy: impl Fn() -> bool,
    ) -> bool {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let Some(stream) = streams.get(channel).map(Arc::clone) else {
            return false;
        };
        // A stream in use right now (an append) is not idle.
        let Ok(mut s) = stream.try_lock() else {
            return false;
        };
        s.prune(ttl);
        let key_oldest = now_ms().saturating_sub(KEY_MEMORY.as_millis() as u64);
        s.keys.retain(|_, p| p.time_ms >= key_oldest);
        if !s.items.is_empty() || !s.keys.is_empty() || busy() {
            return false;
        }
        streams.remove(channel);
        if busy() {
            streams.insert(channel.clone(), Arc::clone(&stream));
            return false;
        }
        // An append that found the stream before it was taken out sees
        // this under the stream's lock and looks again.
        s.dead = true;
        self.forgot
            .store(true, std::sync::atomic::Ordering::Release);
        true
    }

    /// Forgets every idle stream (see [`MemoryHistory::forget_idle`]);
    /// returns how many.
    pub fn sweep(
        &self,
        ttl_of: impl Fn(&ChannelName) -> Option<Duration>,
        busy: impl Fn(&ChannelName) -> bool,
    ) -> usize {
        let channels: Vec<ChannelName> = {
            let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            streams.keys().cloned().collect()
        };
        channels
            .iter()
            .filter(|c| self.forget_idle(c, ttl_of(c), || busy(c)))
            .count()
    }

    /// Appends to a stream (under its lock).
    fn append_to(
        s: &mut Stream,
        data: Payload,
        from: Option<String>,
        opts: &AppendOptions,
    ) -> Appended {
        s.prune(opts.ttl);
        let key_oldest = now_ms().saturating_sub(KEY_MEMORY.as_millis() as u64);
        s.keys.retain(|_, p| p.time_ms >= key_oldest);
        if let Some(key) = &opts.idempotency_key
            && let Some(p) = s.keys.get(key)
        {
            return Appended {
                publication: p.clone(),
                epoch: s.epoch.clone(),
                duplicate: true,
            };
        }
        s.top += 1;
        let publication = Publication {
            offset: s.top,
            data,
            from,
            time_ms: now_ms(),
        };
        if opts.size > 0 {
            s.items.push_back(publication.clone());
            while s.items.len() > opts.size {
                s.items.pop_front();
            }
        }
        if let Some(key) = &opts.idempotency_key {
            s.keys.insert(key.clone(), publication.clone());
        }
        Appended {
            publication,
            epoch: s.epoch.clone(),
            duplicate: false,
        }
    }

    /// Runs `f` on a channel's stream, created if missing.
    fn with_stream<T>(&self, channel: &ChannelName, f: impl FnOnce(&mut Stream) -> T) -> T {
        loop {
            let stream = {
                let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
                Arc::clone(
                    streams
                        .entry(channel.clone())
                        .or_insert_with(|| Arc::new(Mutex::new(self.created()))),
                )
            };
            let mut stream = stream.lock().unwrap_or_else(|e| e.into_inner());
            if !stream.dead {
                return f(&mut stream);
            }
        }
    }

    /// Runs `f` on a channel's stream, or on an empty one (not stored).
    fn read_stream<T>(&self, channel: &ChannelName, f: impl FnOnce(&mut Stream) -> T) -> T {
        let stream = {
            let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            streams.get(channel).map(Arc::clone)
        };
        match stream {
            Some(stream) => {
                let mut stream = stream.lock().unwrap_or_else(|e| e.into_inner());
                if stream.dead {
                    f(&mut self.empty())
                } else {
                    f(&mut stream)
                }
            }
            None => f(&mut self.empty()),
        }
    }
}

#[async_trait]
impl History for MemoryHistory {
    async fn append_then(
        &self,
        channel: &ChannelName,
        data: Payload,
        from: Option<String>,
        opts: &AppendOptions,
        then: Stored,
    ) -> Result<Appended, HistoryError> {
        // `then` runs under the channel's lock: the channel's next
        // publication waits for this one's fan-out, others do not.
        Ok(self.with_stream(channel, |s| {
            let appended = Self::append_to(s, data, from, opts);
            then(&appended);
            appended
        }))
    }

    async fn since(
        &self,
        channel: &ChannelName,
        position: &StreamPosition,
        ttl: Option<Duration>,
    ) -> Result<Recovery, HistoryError> {
        Ok(self.read_stream(channel, |s| {
            s.prune(ttl);
            if let Some(answer) = settled(position, &s.position()) {
                return answer;
            }
            // The next publication the client needs must still be kept.
            let needed = position.offset + 1;
            match s.items.front() {
                Some(first) if first.offset <= needed => Recovery::Recovered(
                    s.items
                        .iter()
                        .filter(|p| p.offset > position.offset)
                        .cloned()
                        .collect(),
                ),
                _ => Recovery::NotRecovered {
                    current: s.position(),
                },
            }
        }))
    }

    async fn latest(
        &self,
        channel: &ChannelName,
        limit: usize,
        ttl: Option<Duration>,
    ) -> Result<(Vec<Publication>, StreamPosition), HistoryError> {
        Ok(self.read_stream(channel, |s| {
            s.prune(ttl);
            let skip = s.items.len().saturating_sub(limit);
            (s.items.iter().skip(skip).cloned().collect(), s.position())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(size: usize) -> AppendOptions {
        AppendOptions {
            size,
            ..AppendOptions::default()
        }
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        // The memory history never waits: one poll completes it.
        let mut f = std::pin::pin!(f);
        match f
            .as_mut()
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("memory history waited"),
        }
    }

    #[test]
    fn offsets_are_monotonic_and_resume_has_no_gap_or_duplicate() {
        let h = MemoryHistory::default();
        let ch = ChannelName::parse("chat:lobby").unwrap();
        let first = block_on(h.append(&ch, json!(1).into(), None, &opts(100))).unwrap();
        assert_eq!(first.publication.offset, 1);
        let seen = StreamPosition {
            offset: 1,
            epoch: first.epoch.clone(),
        };
        for i in 2..=5 {
            let a = block_on(h.append(&ch, json!(i).into(), None, &opts(100))).unwrap();
            assert_eq!(a.publication.offset, i);
        }
        match block_on(h.since(&ch, &seen, None)).unwrap() {
            Recovery::Recovered(p) => {
                assert_eq!(
                    p.iter().map(|p| p.offset).collect::<Vec<_>>(),
                    vec![2, 3, 4, 5]
                );
            }
            other => panic!("{other:?}"),
        }
        let top = StreamPosition {
            offset: 5,
            epoch: first.epoch.clone(),
        };
        assert_eq!(
            block_on(h.since(&ch, &top, None)).unwrap(),
            Recovery::Recovered(vec![])
        );
    }

    #[test]
    fn too_old_or_wrong_epoch_is_not_recovered() {
        let h = MemoryHistory::default();
        let ch = ChannelName::parse("chat:lobby").unwrap();
        let mut epoch = String::new();
        for i in 1..=10 {
            epoch = block_on(h.append(&ch, json!(i).into(), None, &opts(3)))
                .unwrap()
                .epoch;
        }
        let old = StreamPosition {
            offset: 2,
            epoch: epoch.clone(),
        };
        let current = StreamPosition {
            offset: 10,
            epoch: epoch.clone(),
        };
        assert_eq!(
            block_on(h.since(&ch, &old, None)).unwrap(),
            Recovery::NotRecovered {
                current: current.clone()
            }
        );
        // Offset 7 is the last one not kept: 8, 9, 10 are.
        let edge = StreamPosition {
            offset: 7,
            epoch: epoch.clone(),
        };
        assert!(
            matches!(block_on(h.since(&ch, &edge, None)).unwrap(), Recovery::Recovered(p) if p.len() == 3)
        );
        let other = StreamPosition {
            offset: 9,
            epoch: "deadbeef".into(),
        };
        assert!(matches!(
            block_on(h.since(&ch, &other, None)).unwrap(),
            Recovery::NotRecovered { .. }
        ));
        let (latest, pos) = block_on(h.latest(&ch, 2, None)).unwrap();
        assert_eq!(
            latest.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![9, 10]
        );
        assert_eq!(pos, current);
    }

    #[test]
    fn an_idempotency_key_stores_a_retry_once() {
        let h = MemoryHistory::default();
        let ch = ChannelName::parse("chat:lobby").unwrap();
        let with_key = AppendOptions {
            size: 10,
            idempotency_key: Some("k1".into()),
            ..AppendOptions::default()
        };
        let a = block_on(h.append(&ch, json!("x").into(), None, &with_key)).unwrap();
        let b = block_on(h.append(&ch, json!("x").into(), None, &with_key)).unwrap();
        assert!(!a.duplicate && b.duplicate);
        assert_eq!(a.publication.offset, b.publication.offset);
        let (all, pos) = block_on(h.latest(&ch, 10, None)).unwrap();
        assert_eq!((all.len(), pos.offset), (1, 1));
    }
}
