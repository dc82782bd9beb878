//! The same history behaviour from every implementation, persistence of
//! the embedded-database one across a reopen, and the Redis one shared by
//! several nodes (against the Redis at `REDIS_URL`, default
//! 127.0.0.1:6379, each test under a prefix of its own).

mod common;

use std::path::PathBuf;

use serde_json::json;
use switchboard_server::channel::ChannelName;
use switchboard_server::history::{
    AppendOptions, History, MemoryHistory, Recovery, RedisHistory, SqliteHistory, StreamPosition,
};

fn temp_db(name: &str) -> PathBuf {
    common::temp_dir("history").join(format!("{name}.db"))
}

fn opts(size: usize, key: Option<&str>) -> AppendOptions {
    AppendOptions {
        size,
        idempotency_key: key.map(str::to_owned),
        ..AppendOptions::default()
    }
}

async fn behaves(h: &dyn History) {
    let ch = ChannelName::parse("chat:lobby").unwrap();
    let other = ChannelName::parse("chat:other").unwrap();
    let mut epoch = String::new();
    for i in 1..=10u64 {
        let a = h
            .append(
                &ch,
                json!({ "n": i }).into(),
                Some("u1".into()),
                &opts(5, None),
            )
            .await
            .unwrap();
        assert_eq!(a.publication.offset, i, "offsets are consecutive");
        assert!(!a.duplicate);
        epoch = a.epoch;
    }
    // Channels are independent streams.
    let o = h
        .append(&other, json!("x").into(), None, &opts(5, None))
        .await
        .unwrap();
    assert_eq!(o.publication.offset, 1);

    let at = |offset| StreamPosition {
        offset,
        epoch: epoch.clone(),
    };
    match h.since(&ch, &at(7), None).await.unwrap() {
        Recovery::Recovered(p) => {
            assert_eq!(
                p.iter().map(|p| p.offset).collect::<Vec<_>>(),
                vec![8, 9, 10]
            );
            assert_eq!(p[0].data, json!({ "n": 8 }).into());
            assert_eq!(p[0].from.as_deref(), Some("u1"));
        }
        other => panic!("expected recovery, got {other:?}"),
    }
    // Offset 5 is the last one not kept (6..=10 are): 6 is the first needed.
    assert!(
        matches!(h.since(&ch, &at(5), None).await.unwrap(), Recovery::Recovered(p) if p.len() == 5)
    );
    assert_eq!(
        h.since(&ch, &at(4), None).await.unwrap(),
        Recovery::NotRecovered { current: at(10) }
    );
    assert_eq!(
        h.since(&ch, &at(10), None).await.unwrap(),
        Recovery::Recovered(vec![])
    );
    let foreign = StreamPosition {
        offset: 9,
        epoch: "other".into(),
    };
    assert_eq!(
        h.since(&ch, &foreign, None).await.unwrap(),
        Recovery::NotRecovered { current: at(10) }
    );
    let (latest, pos) = h.latest(&ch, 2, None).await.unwrap();
    assert_eq!(
        latest.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![9, 10]
    );
    assert_eq!(pos, at(10));

    // A retried publish with the same key is stored once.
    let a = h
        .append(&ch, json!("once").into(), None, &opts(5, Some("k")))
        .await
        .unwrap();
    let b = h
        .append(&ch, json!("once").into(), None, &opts(5, Some("k")))
        .await
        .unwrap();
    assert!(!a.duplicate && b.duplicate);
    assert_eq!((a.publication.offset, b.publication.offset), (11, 11));
    let (_, pos) = h.latest(&ch, 1, None).await.unwrap();
    assert_eq!(pos.offset, 11);
}

#[tokio::test]
async fn memory_history_behaves() {
    behaves(&MemoryHistory::default()).await;
}

#[tokio::test]
async fn sqlite_history_behaves() {
    behaves(&SqliteHistory::open(&temp_db("behaves")).unwrap()).await;
}

#[tokio::test]
async fn sqlite_history_survives_a_reopen() {
    let path = temp_db("reopen");
    let ch = ChannelName::parse("chat:lobby").unwrap();
    let epoch = {
        let h = SqliteHistory::open(&path).unwrap();
        let mut epoch = String::new();
        for i in 1..=3 {
            epoch = h
                .append(
                    &ch,
                    json!(i).into(),
                    None,
                    &opts(10, Some(&format!("k{i}"))),
                )
                .await
                .unwrap()
                .epoch;
        }
        epoch
    };
    let h = SqliteHistory::open(&path).unwrap();
    let (items, pos) = h.latest(&ch, 10, None).await.unwrap();
    assert_eq!(
        items.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        pos,
        StreamPosition {
            offset: 3,
            epoch: epoch.clone()
        }
    );
    // Same epoch: a client's position from before the restart still resumes.
    let resumed = h
        .since(&ch, &StreamPosition { offset: 1, epoch }, None)
        .await
        .unwrap();
    assert!(matches!(resumed, Recovery::Recovered(p) if p.len() == 2));
    // Idempotency keys survive too.
    let again = h
        .append(&ch, json!(3).into(), None, &opts(10, Some("k3")))
        .await
        .unwrap();
    assert!(again.duplicate);
    let next = h
        .append(&ch, json!(4).into(), None, &opts(10, None))
        .await
        .unwrap();
    assert_eq!(next.publication.offset, 4);
}

/// A channel never published to reads as offset 0 with the store's epoch,
/// the same epoch its first publication gets: a client that subscribed
/// before anything was published resumes it all.
async fn unknown_channels_read_as_empty(h: &dyn History) {
    let ch = ChannelName::parse("chat:made-up").unwrap();
    let (items, before) = h.latest(&ch, 10, None).await.unwrap();
    assert!(items.is_empty());
    assert_eq!(before.offset, 0);
    let a = h
        .append(&ch, json!(1).into(), None, &opts(10, None))
        .await
        .unwrap();
    assert_eq!(a.epoch, before.epoch, "the read epoch is the stream's");
    match h.since(&ch, &before, None).await.unwrap() {
        Recovery::Recovered(missed) => assert_eq!(missed.len(), 1),
        other => panic!("not recovered: {other:?}"),
    }
}

#[tokio::test]
async fn reads_of_unknown_channels_store_nothing() {
    unknown_channels_read_as_empty(&MemoryHistory::default()).await;
    let path = temp_db("unknown");
    let h = SqliteHistory::open(&path).unwrap();
    unknown_channels_read_as_empty(&h).await;
    for i in 0..50 {
        let ch = ChannelName::parse(&format!("chat:probe-{i}")).unwrap();
        h.latest(&ch, 1, None).await.unwrap();
        let pos = StreamPosition {
            offset: 3,
            epoch: "e".into(),
        };
        h.since(&ch, &pos, None).await.unwrap();
    }
    let db = rusqlite::Connection::open(&path).unwrap();
    let streams: i64 = db
        .query_row("SELECT COUNT(*) FROM streams", [], |r| r.get(0))
        .unwrap();
    assert_eq!(streams, 1, "only the channel that was published to");
}

#[tokio::test]
async fn sqlite_history_forgets_idempotency_keys_past_their_memory() {
    let path = temp_db("keys");
    let ch = ChannelName::parse("chat:lobby").unwrap();
    let h = SqliteHistory::open(&path).unwrap();
    let first = h
        .append(&ch, json!("a").into(), None, &opts(10, Some("k")))
        .await
        .unwrap();
    assert!(!first.duplicate);
    // Age the key past the five minutes keys are remembered.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE idempotency SET time_ms = 0", [])
        .unwrap();
    // A forgotten key stores a new publication...
    let again = h
        .append(&ch, json!("b").into(), None, &opts(10, Some("k")))
        .await
        .unwrap();
    assert!(!again.duplicate);
    assert_eq!(again.publication.offset, 2);
    // ... which the key now names.
    let retry = h
        .append(&ch, json!("b").into(), None, &opts(10, Some("k")))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.publication.offset, 2);
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A prefix no other run uses.
fn redis_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sbtest-{name}-{}-{nanos}", std::process::id())
}

/// Deletes every key under `prefix`.
async fn forget(prefix: &str) {
    let link = switchboard_redis::RedisLink::connect(&redis_url())
        .await
        .unwrap();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = link
            .query(
                switchboard_redis::redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{prefix}:*"))
                    .arg("COUNT")
                    .arg(1000),
            )
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: u64 = link
                .query(switchboard_redis::redis::cmd("DEL").arg(&keys))
                .await
                .unwrap();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

async fn redis_history(prefix: &str) -> RedisHistory {
    let link = switchboard_redis::RedisLink::connect(&redis_url())
        .await
        .expect("a Redis at REDIS_URL");
    RedisHistory::open(link, prefix).await.unwrap()
}

#[tokio::test]
async fn redis_history_behaves() {
    let (prefix, empty) = (redis_prefix("behaves"), redis_prefix("unknown"));
    behaves(&redis_history(&prefix).await).await;
    unknown_channels_read_as_empty(&redis_history(&empty).await).await;
    forget(&prefix).await;
    forget(&empty).await;
}

/// Two nodes on one Redis share a channel's stream: offsets are allocated
/// once across both, a position given by one is resumed on the other, an
/// idempotency key seen by one is honoured by the other, and each node's
/// follow-ups (its fan-out) run in offset order under concurrent appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_history_is_shared_by_nodes() {
    let prefix = redis_prefix("nodes");
    let (a, b) = (
        std::sync::Arc::new(redis_history(&prefix).await),
        std::sync::Arc::new(redis_history(&prefix).await),
    );
    let ch = ChannelName::parse("chat:shared").unwrap();
    let mut tasks = Vec::new();
    for (n, node) in [&a, &b, &a, &b].into_iter().enumerate() {
        let (node, ch) = (std::sync::Arc::clone(node), ch.clone());
        tasks.push(tokio::spawn(async move {
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            for i in 0..25 {
                let seen2 = std::sync::Arc::clone(&seen);
                node.append_then(
                    &ch,
                    json!({ "task": n, "i": i }).into(),
                    None,
                    &opts(1000, None),
                    Box::new(move |ap| seen2.lock().unwrap().push(ap.publication.offset)),
                )
                .await
                .unwrap();
            }
            seen.lock().unwrap().clone()
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let got = t.await.unwrap();
        assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
        all.extend(got);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=100).collect::<Vec<u64>>(), "each offset once");

    // A position from node a resumes on node b.
    let (_, pos) = a.latest(&ch, 0, None).await.unwrap();
    assert_eq!(pos.offset, 100);
    let back = StreamPosition {
        offset: 90,
        epoch: pos.epoch.clone(),
    };
    match b.since(&ch, &back, None).await.unwrap() {
        Recovery::Recovered(p) => assert_eq!(
            p.iter().map(|p| p.offset).collect::<Vec<_>>(),
            (91..=100).collect::<Vec<_>>()
        ),
        other => panic!("not recovered on the other node: {other:?}"),
    }
    // An idempotency key seen by one node is honoured by the other.
    let first = a
        .append(&ch, json!("k").into(), None, &opts(1000, Some("retry")))
        .await
        .unwrap();
    let again = b
        .append(&ch, json!("k").into(), None, &opts(1000, Some("retry")))
        .await
        .unwrap();
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(again.publication, first.publication);
    forget(&prefix).await;
}
