//! History persisted in an embedded SQLite database (WAL mode).
//!
//! A publication is committed to the write-ahead log before `append`
//! returns, so it survives the process being killed (`kill -9`) right after
//! the publish was acknowledged; an operating-system crash may lose the last
//! transactions (`synchronous = NORMAL`), which is the usual trade-off.
//!
//! Appends go through one writer thread that commits in groups: the
//! publications that arrive while a commit is in flight are written together
//! in the next transaction (one savepoint each, so one failing append spoils
//! no other), and each is answered only after its own commit. The writer runs
//! each append's follow-up ([`Stored`]: the fan-out) right after the commit,
//! in commit order, whether or not the caller still waits: a publish whose
//! caller goes away is stored and delivered, or neither.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::{
    AppendOptions, Appended, History, HistoryError, KEY_MEMORY, Payload, Publication, Recovery,
    Stored, StreamPosition, new_epoch, now_ms, settled,
};
use crate::channel::ChannelName;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS streams (
    channel TEXT PRIMARY KEY,
    epoch TEXT NOT NULL,
    top INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS publications (
    channel TEXT NOT NULL,
    offset INTEGER NOT NULL,
    data TEXT NOT NULL,
    sender TEXT,
    time_ms INTEGER NOT NULL,
    PRIMARY KEY (channel, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    channel TEXT NOT NULL,
    key TEXT NOT NULL,
    offset INTEGER NOT NULL,
    data TEXT NOT NULL,
    sender TEXT,
    time_ms INTEGER NOT NULL,
    PRIMARY KEY (channel, key)
) WITHOUT ROWID;
";

fn storage(e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Storage(e.to_string())
}

/// The most appends one transaction of the writer takes.
const GROUP_MAX: usize = 512;

/// One append waiting for the writer.
struct AppendJob {
    channel: String,
    data: Payload,
    from: Option<String>,
    opts: AppendOptions,
    then: Stored,
    /// The caller's runtime: the follow-up runs inside it (a subscriber's
    /// queue may spawn a task, e.g. to close a slow consumer).
    runtime: Option<tokio::runtime::Handle>,
    reply: tokio::sync::oneshot::Sender<Result<Appended, HistoryError>>,
}

/// History in an embedded database file.
#[derive(Clone)]
pub struct SqliteHistory {
    db: Arc<Mutex<Connection>>,
    /// The writer thread's queue (it ends when the last clone is dropped).
    writer: std::sync::mpsc::Sender<AppendJob>,
    /// The epoch of this database: every stream starts with it, and a
    /// channel never published to reads as `(0, epoch)` without being
    /// stored (reads of made-up channel names store nothing).
    epoch: Arc<str>,
}

impl SqliteHistory {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(storage)?;
        }
        let db = Connection::open(path).map_err(storage)?;
        db.execute_batch(SCHEMA).map_err(storage)?;
        db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?1)",
            [new_epoch()],
        )
        .map_err(storage)?;
        let epoch: String = db
            .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |r| {
                r.get(0)
            })
            .map_err(storage)?;
        let db = Arc::new(Mutex::new(db));
        let epoch: Arc<str> = epoch.into();
        let (writer, jobs) = std::sync::mpsc::channel();
        let (wdb, wepoch) = (Arc::clone(&db), Arc::clone(&epoch));
        std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || write_loop(&wdb, &wepoch, &jobs))
            .map_err(storage)?;
        Ok(SqliteHistory { db, writer, epoch })
    }

    /// Writes the write-ahead log back into the database file (at
    /// shutdown; committed publications are durable without it).
    pub fn checkpoint(&self) -> Result<(), HistoryError> {
        let db = self.db.lock().unwrap_or_else(|e| e.into_inner());
        db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(storage)
    }

    /// Runs `f` on the connection off the async runtime's threads.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, HistoryError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || {
            let mut conn = db.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(storage)?
        .map_err(storage)
    }
}

/// The stream of a channel; a missing one is `(epoch, 0)`, stored only
/// with `create` (an append).
fn stream(
    tx: &Connection,
    channel: &str,
    epoch: &str,
    create: bool,
) -> Result<(String, u64), rusqlite::Error> {
    if let Some(s) = tx
        .prepare_cached("SELECT epoch, top FROM streams WHERE channel = ?1")?
        .query_row([channel], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .optional()?
    {
        return Ok(s);
    }
    if create {
        tx.prepare_cached("INSERT INTO streams (channel, epoch, top) VALUES (?1, ?2, 0)")?
            .execute(params![channel, epoch])?;
    }
    Ok((epoch.to_owned(), 0))
}

fn prune(tx: &Connection, channel: &str, ttl: Option<Duration>) -> Result<(), rusqlite::Error> {
    if let Some(ttl) = ttl {
        let oldest = now_ms().saturating_sub(ttl.as_millis() as u64) as i64;
        tx.prepare_cached("DELETE FROM publications WHERE channel = ?1 AND time_ms < ?2")?
            .execute(params![channel, oldest])?;
    }
    Ok(())
}

fn publication(r: &rusqlite::Row<'_>) -> Result<Publication, rusqlite::Error> {
    let data: String = r.get(1)?;
    Ok(Publication {
        offset: r.get::<_, i64>(0)? as u64,
        data: Payload::from_json(data)
            .unwrap_or_else(|| Payload::from_value(&serde_json::Value::Null)),
        from: r.get(2)?,
        time_ms: r.get::<_, i64>(3)? as u64,
    })
}

/// The writer thread: takes every waiting append, commits them in one
/// transaction, then runs their follow-ups in order and answers them.
fn write_loop(db: &Mutex<Connection>, epoch: &str, jobs: &std::sync::mpsc::Receiver<AppendJob>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let results = {
            let mut conn = db.lock().unwrap_or_else(|e| e.into_inner());
            commit_group(&mut conn, epoch, &mut group)
        };
        for (job, result) in group.into_iter().zip(results) {
            if let Ok(appended) = &result {
                let _inside = job.runtime.as_ref().map(tokio::runtime::Handle::enter);
                (job.then)(appended);
            }
            // The caller may have gone away: the publication is stored and
            // delivered all the same.
            let _ = job.reply.send(result);
        }
    }
}

/// Appends a group in one transaction, each in a savepoint of its own.
fn commit_group(
    conn: &mut Connection,
    epoch: &str,
    group: &mut [AppendJob],
) -> Vec<Result<Appended, HistoryError>> {
    let mut tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => return group.iter().map(|_| Err(storage(&e))).collect(),
    };
    let mut results = Vec::with_capacity(group.len());
    for job in group.iter_mut() {
        let one = tx.savepoint().and_then(|sp| {
            let data = job.data.clone();
            let appended = append_one(&sp, epoch, &job.channel, data, job.from.take(), &job.opts)?;
            sp.commit()?;
            Ok(appended)
        });
        results.push(one.map_err(storage));
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => results.iter().map(|_| Err(storage(&e))).collect(),
    }
}

/// One append inside the writer's transaction.
fn append_one(
    tx: &Connection,
    db_epoch: &str,
    channel: &str,
    data: Payload,
    from: Option<String>,
    opts: &AppendOptions,
) -> Result<Appended, rusqlite::Error> {
    let (epoch, top) = stream(tx, channel, db_epoch, true)?;
    let now = now_ms();
    tx.prepare_cached("DELETE FROM idempotency WHERE channel = ?1 AND time_ms < ?2")?
        .execute(params![
            channel,
            now.saturating_sub(KEY_MEMORY.as_millis() as u64) as i64
        ])?;
    if let Some(key) = &opts.idempotency_key {
        let seen = tx
            .prepare_cached(
                "SELECT offset, data, sender, time_ms FROM idempotency WHERE channel = ?1 AND key = ?2",
            )?
            .query_row(params![channel, key], publication)
            .optional()?;
        if let Some(p) = seen {
            return Ok(Appended {
                publication: p,
                epoch,
                duplicate: true,
            });
        }
    }
    prune(tx, channel, opts.ttl)?;
    let offset = top + 1;
    let text = data.as_str();
    if opts.size > 0 {
        tx.prepare_cached("INSERT INTO publications (channel, offset, data, sender, time_ms) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![channel, offset as i64, text, from, now as i64])?;
        tx.prepare_cached("DELETE FROM publications WHERE channel = ?1 AND offset <= ?2")?
            .execute(params![channel, offset as i64 - opts.size as i64])?;
    }
    if let Some(key) = &opts.idempotency_key {
        tx.prepare_cached("INSERT INTO idempotency (channel, key, offset, data, sender, time_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?
            .execute(params![channel, key, offset as i64, text, from, now as i64])?;
    }
    tx.prepare_cached("UPDATE streams SET top = ?2 WHERE channel = ?1")?
        .execute(params![channel, offset as i64])?;
    Ok(Appended {
        publication: Publication {
            offset,
            data,
            from,
            time_ms: now,
        },
        epoch,
        duplicate: false,
    })
}

#[async_trait]
impl History for SqliteHistory {
    async fn append_then(
        &self,
        channel: &ChannelName,
        data: Payload,
        from: Option<String>,
        opts: &AppendOptions,
        then: Stored,
    ) -> Result<Appended, HistoryError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = AppendJob {
            channel: channel.as_str().to_owned(),
            data,
            from,
            opts: opts.clone(),
            then,
            runtime: tokio::runtime::Handle::try_current().ok(),
            reply,
        };
        self.writer
            .send(job)
            .map_err(|_| storage("the history writer has stopped"))?;
        answer
            .await
            .map_err(|_| storage("the history writer has stopped"))?
    }

    async fn since(
        &self,
        channel: &ChannelName,
        position: &StreamPosition,
        ttl: Option<Duration>,
    ) -> Result<Recovery, HistoryError> {
        let channel = channel.as_str().to_owned();
        let position = position.clone();
        let db_epoch = Arc::clone(&self.epoch);
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let (epoch, top) = stream(&tx, &channel, &db_epoch, false)?;
            prune(&tx, &channel, ttl)?;
            let current = StreamPosition { offset: top, epoch };
            if let Some(answer) = settled(&position, &current) {
                tx.commit()?;
                return Ok(answer);
            }
            let first: Option<i64> = tx.query_row(
                "SELECT MIN(offset) FROM publications WHERE channel = ?1",
                [&channel],
                |r| r.get(0),
            )?;
            if first.is_none_or(|f| f as u64 > position.offset + 1) {
                tx.commit()?;
                return Ok(Recovery::NotRecovered { current });
            }
            let items = {
                let mut stmt = tx.prepare(
                    "SELECT offset, data, sender, time_ms FROM publications WHERE channel = ?1 AND offset > ?2 ORDER BY offset",
                )?;
                stmt.query_map(params![channel, position.offset as i64], publication)?
                    .collect::<Result<Vec<_>, _>>()?
            };
            tx.commit()?;
            Ok(Recovery::Recovered(items))
        })
        .await
    }

    async fn latest(
        &self,
        channel: &ChannelName,
        limit: usize,
        ttl: Option<Duration>,
    ) -> Result<(Vec<Publication>, StreamPosition), HistoryError> {
        let channel = channel.as_str().to_owned();
        let db_epoch = Arc::clone(&self.epoch);
        self.run(move |conn| {
            let tx = conn.transaction()?;
            let (epoch, top) = stream(&tx, &channel, &db_epoch, false)?;
            prune(&tx, &channel, ttl)?;
            let mut items = {
                let mut stmt = tx.prepare(
                    "SELECT offset, data, sender, time_ms FROM publications WHERE channel = ?1 ORDER BY offset DESC LIMIT ?2",
                )?;
                stmt.query_map(params![channel, limit as i64], publication)?
                    .collect::<Result<Vec<_>, _>>()?
            };
            items.reverse();
            tx.commit()?;
            Ok((items, StreamPosition { offset: top, epoch }))
        })
        .await
    }
}
