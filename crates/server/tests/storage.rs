//! The embedded database under damage and over time: a write-ahead log
//! lost after a crash is detected and starts a new epoch, a damaged file is
//! refused at open naming it, a corruption met at run time makes the store
//! unhealthy, and the periodic sweep bounds what expired and idle channels
//! keep on disk (the end-to-end versions, with the binary killed and a full
//! disk, are in tests/server/e2e-chaos.test.mjs).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use switchboard_server::channel::ChannelName;
use switchboard_server::history::{
    AppendOptions, History, Recovery, SqliteHistory, SqliteOptions, SqliteStats, StreamPosition,
};

fn temp_db(name: &str) -> PathBuf {
    let dir = common::temp_dir("storage");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.db"))
}

fn ch(name: &str) -> ChannelName {
    ChannelName::parse(name).unwrap()
}

fn kept(size: usize, ttl: Option<Duration>) -> AppendOptions {
    AppendOptions {
        size,
        ttl,
        ..AppendOptions::default()
    }
}

/// Polls `stats` until `done` holds, for at most 20 s.
async fn stats_until(
    h: &SqliteHistory,
    what: &str,
    done: impl Fn(&SqliteStats) -> bool,
) -> SqliteStats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = h.stats().await.unwrap();
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Copies the database's files as a crash would leave them (the history
/// is still open: nothing is checkpointed or closed).
fn crash_copy(db: &Path, name: &str) -> PathBuf {
    let to = temp_db(name);
    for suffix in ["", "-wal", ".mark"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        if from.exists() {
            std::fs::copy(&from, format!("{}{suffix}", to.display())).unwrap();
        }
    }
    to
}

#[tokio::test]
async fn a_lost_write_ahead_log_starts_a_new_epoch_instead_of_reusing_offsets() {
    let db = temp_db("wal");
    let h = SqliteHistory::open(&db).unwrap();
    let c = ch("chat:lobby");
    let mut epoch = String::new();
    for n in 1..=200u64 {
        let a = h
            .append(&c, json!({ "n": n }).into(), None, &kept(1000, None))
            .await
            .unwrap();
        epoch = a.epoch;
    }
    let seen = StreamPosition {
        offset: 150,
        epoch: epoch.clone(),
    };

    // Whole: the same epoch, everything there.
    let whole = SqliteHistory::open(&crash_copy(&db, "whole")).unwrap();
    let (items, pos) = whole.latest(&c, 1000, None).await.unwrap();
    assert_eq!(
        (items.len(), pos.offset, pos.epoch.as_str()),
        (200, 200, epoch.as_str())
    );
    assert!(
        matches!(whole.since(&c, &seen, None).await.unwrap(), Recovery::Recovered(p) if p.len() == 50)
    );

    // The log cut in half: what is left is under a new epoch, a position
    // of the old one is not recovered, and new offsets are not confused
    // with the lost ones.
    let cut = crash_copy(&db, "cut");
    let wal = PathBuf::from(format!("{}-wal", cut.display()));
    let len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let damaged = SqliteHistory::open(&cut).unwrap();
    let (items, pos) = damaged.latest(&c, 1000, None).await.unwrap();
    assert!(pos.offset < 200, "the cut log lost publications");
    assert_ne!(pos.epoch, epoch, "a new epoch after the loss");
    assert_eq!(items.len() as u64, pos.offset);
    match damaged.since(&c, &seen, None).await.unwrap() {
        Recovery::NotRecovered { current } => assert_eq!(current, pos),
        other => panic!("a lost position was recovered: {other:?}"),
    }
    let next = damaged
        .append(&c, json!("after").into(), None, &kept(1000, None))
        .await
        .unwrap();
    assert_eq!(next.epoch, pos.epoch);
    // A channel first published after the loss is under the new epoch too.
    let fresh = damaged
        .append(&ch("chat:new"), json!(1).into(), None, &kept(10, None))
        .await
        .unwrap();
    assert_ne!(fresh.epoch, epoch);
    drop(damaged);
    // Reopened: the loss is not reported again, the new epoch stays.
    let reopened = SqliteHistory::open(&cut).unwrap();
    let (_, again) = reopened.latest(&c, 0, None).await.unwrap();
    assert_eq!(again.epoch, pos.epoch);
}

#[tokio::test]
async fn a_damaged_file_is_refused_at_open_naming_it() {
    let db = temp_db("damaged");
    {
        let h = SqliteHistory::open(&db).unwrap();
        for n in 0..300 {
            h.append(
                &ch(&format!("chat:c{}", n % 7)),
                json!({ "n": n, "pad": "p".repeat(400) }).into(),
                None,
                &kept(1000, None),
            )
            .await
            .unwrap();
        }
        h.checkpoint().unwrap();
    }
    let pristine = std::fs::read(&db).unwrap();
    let mut garbage = pristine.clone();
    let page = pristine.len() / 4096 / 2 * 4096;
    garbage[page..page + 4096].fill(0xa5);
    std::fs::write(&db, &garbage).unwrap();
    let err = SqliteHistory::open(&db)
        .err()
        .expect("a damaged file opened");
    let msg = err.to_string();
    assert!(msg.contains(&db.display().to_string()), "{msg}");
    assert!(msg.contains("damaged"), "{msg}");
    // Restored, it opens with everything.
    std::fs::write(&db, &pristine).unwrap();
    let h = SqliteHistory::open(&db).unwrap();
    let (items, _) = h.latest(&ch("chat:c0"), 1000, None).await.unwrap();
    assert_eq!(items.len(), 43);
    h.check().await.unwrap();
}

#[tokio::test]
async fn a_corruption_met_at_run_time_makes_the_store_unhealthy() {
    let db = temp_db("runtime");
    let h = SqliteHistory::open(&db).unwrap();
    h.check().await.unwrap();
    // More than SQLite's page cache (2 MB), checkpointed into the file.
    let channels: Vec<_> = (0..40).map(|i| ch(&format!("chat:r{i}"))).collect();
    for n in 0..25 {
        for c in &channels {
            h.append(
                c,
                json!({ "n": n, "pad": "q".repeat(8000) }).into(),
                None,
                &kept(1000, None),
            )
            .await
            .unwrap();
        }
    }
    h.checkpoint().unwrap();
    // Everything after the first pages overwritten while the store is open.
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[8 * 4096..len].fill(0x5a);
    std::fs::write(&db, &bytes).unwrap();
    let mut failed = 0;
    for c in &channels {
        match h.latest(c, 1000, None).await {
            Err(e) => {
                assert!(e.to_string().contains("corrupt"), "{e}");
                failed += 1;
            }
            // Never a wrong history: what is read is what was written.
            Ok((items, _)) => {
                assert_eq!(items.len(), 25);
                for (n, p) in items.iter().enumerate() {
                    assert_eq!(p.data, json!({ "n": n, "pad": "q".repeat(8000) }).into());
                }
            }
        }
    }
    assert!(failed > 0, "no read met the corruption");
    // Unhealthy from then on, even though the probe row itself may be
    // writable.
    let e = h.check().await.expect_err("healthy after a corruption");
    assert!(e.to_string().contains("corrupt"), "{e}");
}

#[tokio::test]
async fn expired_channels_lose_their_publications_in_the_sweep() {
    let options = SqliteOptions {
        sweep_every: Duration::from_millis(50),
        idle: None,
        ..SqliteOptions::default()
    };
    let h = SqliteHistory::open_with(&temp_db("ttl"), options).unwrap();
    let ttl = Some(Duration::from_secs(1));
    let appends = (0..200).flat_map(|i| (0..5).map(move |n| (ch(&format!("user:u{i}")), n)));
    let appends = appends.map(|(c, n)| {
        let h = h.clone();
        async move {
            h.append(&c, json!(n).into(), None, &kept(100, ttl))
                .await
                .unwrap()
        }
    });
    futures_util::future::join_all(appends).await;
    let forever = ch("chat:forever");
    for n in 0..5 {
        h.append(&forever, json!(n).into(), None, &kept(100, None))
            .await
            .unwrap();
    }
    let s = h.stats().await.unwrap();
    assert_eq!(s.streams, 201);
    assert!(s.publications > 5, "{s:?}");
    // Nobody touches the expired channels again: the sweep deletes them.
    let s = stats_until(&h, "expired publications to be swept", |s| {
        s.publications == 5
    })
    .await;
    // Positions stay while idempotency keys may still be remembered.
    assert_eq!(s.streams, 201);
    let (items, pos) = h.latest(&forever, 100, None).await.unwrap();
    assert_eq!((items.len(), pos.offset), (5, 5));
}

#[tokio::test]
async fn idle_channels_are_dropped_and_their_epoch_is_never_reused() {
    // bob has a subscriber until told otherwise.
    let bob_busy = Arc::new(AtomicBool::new(true));
    let busy = Arc::clone(&bob_busy);
    let options = SqliteOptions {
        sweep_every: Duration::from_millis(50),
        idle: Some(Duration::from_millis(300)),
        busy: Some(Arc::new(move |c: &ChannelName| {
            c.as_str() == "user:bob" && busy.load(Ordering::SeqCst)
        })),
    };
    let h = SqliteHistory::open_with(&temp_db("idle"), options).unwrap();
    let bob = ch("user:bob");
    let bobs = h
        .append(&bob, json!("hi bob").into(), None, &kept(100, None))
        .await
        .unwrap();
    let c = ch("user:alice");
    let mut last = None;
    for n in 0..3 {
        last = Some(
            h.append(&c, json!(n).into(), None, &kept(100, None))
                .await
                .unwrap(),
        );
    }
    let last = last.unwrap();
    let seen = StreamPosition {
        offset: 2,
        epoch: last.epoch.clone(),
    };
    stats_until(&h, "the idle channel to be dropped", |s| {
        (s.streams, s.publications) == (1, 1)
    })
    .await;
    // The subscribed one stays, whole, however idle.
    let (items, pos) = h.latest(&bob, 100, None).await.unwrap();
    assert_eq!((items.len(), pos.offset), (1, 1));
    assert_eq!(pos.epoch, bobs.epoch);
    // Published to again: offsets start over, under another epoch, so the
    // old position cannot match the new publications.
    let again = h
        .append(&c, json!("new life").into(), None, &kept(100, None))
        .await
        .unwrap();
    assert_eq!(again.publication.offset, 1);
    assert_ne!(again.epoch, last.epoch);
    assert!(matches!(
        h.since(&c, &seen, None).await.unwrap(),
        Recovery::NotRecovered { .. }
    ));
    // Unsubscribed: dropped once idle.
    bob_busy.store(false, Ordering::SeqCst);
    stats_until(&h, "every channel to be dropped", |s| {
        (s.streams, s.publications) == (0, 0)
    })
    .await;
    let (items, _) = h.latest(&bob, 100, None).await.unwrap();
    assert!(items.is_empty());
}

#[tokio::test]
async fn random_channels_do_not_grow_the_database_without_bound() {
    let options = SqliteOptions {
        sweep_every: Duration::from_millis(50),
        idle: Some(Duration::from_millis(200)),
        ..SqliteOptions::default()
    };
    let db = temp_db("bound");
    let h = SqliteHistory::open_with(&db, options).unwrap();
    let pad = "r".repeat(4000);
    let mut sizes = Vec::new();
    for round in 0..5 {
        let appends = (0..500).map(|i| {
            let c = ch(&format!("user:{round}-{i}"));
            let h = h.clone();
            let data = json!({ "pad": pad });
            async move {
                h.append(&c, data.into(), None, &kept(100, None))
                    .await
                    .unwrap()
            }
        });
        futures_util::future::join_all(appends).await;
        stats_until(&h, "the round's channels to be dropped", |s| s.streams == 0).await;
        h.checkpoint().unwrap();
        sizes.push(std::fs::metadata(&db).unwrap().len());
    }
    eprintln!("database file size after each round of 500 channels x 4 KB: {sizes:?}");
    // Each round writes about 2 MB; freed pages are reused by the next.
    assert!(
        sizes[4] <= sizes[0] * 2,
        "the file grew with every round: {sizes:?}"
    );
}
