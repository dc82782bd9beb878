//! History persisted in an embedded SQLite database (WAL mode).
//!
//! A publication is committed to the write-ahead log before `append`
//! returns, so it survives the process being killed (`kill -9`) right after
//! the publish was acknowledged; an operating-system crash may lose the last
//! transactions (`synchronous = NORMAL`), which is the usual trade-off, but
//! never silently: see the high-water mark below.
//!
//! Appends go through one writer thread that commits in groups: the
//! publications that arrive while a commit is in flight are written together
//! in the next transaction (one savepoint each, so one failing append spoils
//! no other), and each is answered only after its own commit and the mark
//! (below) that covers it. A second thread writes the mark, then runs each
//! append's follow-up ([`Stored`]: the fan-out) in commit order, whether or
//! not the caller still waits, while the writer commits the next group: a
//! publish whose caller goes away is stored and delivered, or neither.
//!
//! **Damage.** At open the file is checked (`PRAGMA quick_check`); a corrupt
//! file is refused with an error naming it, never served. Every commit group
//! bumps a counter in the database and then writes it to a side file,
//! `history.db.mark` (overwritten in place, so it needs no new disk space,
//! and `fdatasync`ed before any append of the group is acknowledged). If the
//! database comes back behind its mark (the write-ahead log was truncated or
//! damaged, an OS crash lost its tail, an old backup was restored), committed
//! publications are gone: every stream gets a new epoch, logged as an error,
//! so clients resuming from a lost position are told `recovered: false`
//! instead of receiving other publications under reused offsets.
//!
//! **Health.** A storage failure is a [`HistoryError::Storage`], nothing is
//! acknowledged that was not committed, and [`SqliteHistory::check`] (for
//! `/readyz`) writes and reads back a probe row through the writer; a
//! corruption met at run time is remembered until restart.
//!
//! **Bounds.** The writer sweeps the database periodically: a channel whose
//! last publication is older than its history TTL (and than the memory of
//! idempotency keys) loses its publications, keys and stream row, and so
//! does, with [`SqliteOptions::idle`], any channel idle that long. A dropped
//! stream must never be recreated under its old epoch (a client's old
//! position would then match new publications), so a sweep that drops
//! streams gives the database a new epoch, the one new streams start with.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

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

/// The most appends one transaction of the writer takes.
const GROUP_MAX: usize = 512;

/// The most streams one sweep transaction drops (the writer answers appends
/// between batches).
const SWEEP_BATCH: usize = 500;

/// Whether a channel is in use on this node (it has subscribers).
pub type Busy = Arc<dyn Fn(&ChannelName) -> bool + Send + Sync>;

/// How the embedded database is kept.
#[derive(Clone)]
pub struct SqliteOptions {
    /// How often the writer sweeps expired and idle channels.
    pub sweep_every: Duration,
    /// Drop every channel (publications, idempotency keys, position) whose
    /// last publication is older than this, whatever its TTL (`None`: only
    /// channels with a history TTL are dropped, once expired).
    pub idle: Option<Duration>,
    /// Channels this says are in use are never dropped (their subscribers
    /// hold positions, and their resume cursors would skip the offsets of
    /// a stream started again); they count as active when swept. `None`:
    /// no channel is in use.
    pub busy: Option<Busy>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            sweep_every: Duration::from_secs(60),
            idle: None,
            busy: None,
        }
    }
}

/// What the database holds (for tests and operators).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteStats {
    /// Channels with a stored position.
    pub streams: u64,
    /// Publications kept.
    pub publications: u64,
    /// Idempotency keys remembered.
    pub keys: u64,
}

/// The connection and the epoch new streams start with (both change only
/// under the lock: a reader of a channel never stored sees the epoch its
/// first append will get).
struct Store {
    conn: Connection,
    epoch: String,
}

/// What the storage's health is, beyond the answer of one operation.
#[derive(Default)]
struct Health {
    /// A corruption met at run time: the store stays unhealthy until the
    /// file is repaired and the server restarted.
    corrupt: Mutex<Option<String>>,
    /// The high-water mark could not be written: a later loss of the
    /// write-ahead log might go unnoticed.
    mark: Mutex<Option<String>>,
}

impl Health {
    /// Turns a database error into a [`HistoryError`], remembering a
    /// corruption.
    fn error(&self, e: &rusqlite::Error) -> HistoryError {
        let what = describe(e);
        if is_corrupt(e) {
            let mut corrupt = self.corrupt.lock().unwrap_or_else(|p| p.into_inner());
            if corrupt.is_none() {
                tracing::error!(error = %what, "the history database is corrupt: refusing readiness until it is repaired");
                *corrupt = Some(what.clone());
            }
        }
        HistoryError::Storage(what)
    }
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// A short, stable description of a database error.
fn describe(e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => format!("the disk is full ({e})"),
        Some(ErrorCode::SystemIoFailure) => format!("disk input/output error ({e})"),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            format!("the database file is corrupt ({e})")
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            format!("the database is busy ({e})")
        }
        _ => e.to_string(),
    }
}

fn storage(e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Storage(e.to_string())
}

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

/// What the writer thread does.
enum Job {
    Append(AppendJob),
    /// Write and read back a probe row (readiness).
    Probe(tokio::sync::oneshot::Sender<Result<(), HistoryError>>),
}

/// History in an embedded database file.
#[derive(Clone)]
pub struct SqliteHistory {
    store: Arc<Mutex<Store>>,
    /// The writer thread's queue (it ends when the last clone is dropped).
    writer: Sender<Job>,
    health: Arc<Health>,
}

/// The side file holding the high-water mark of a database file.
fn mark_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".mark");
    db.with_file_name(name)
}

/// The mark's fixed-size text (so it is overwritten in place).
fn mark_text(commits: u64) -> String {
    format!("switchboard history mark v1 commits={commits:020}\n")
}

/// The high-water mark: the commit count the database had reached, kept
/// outside its write-ahead log.
struct Mark {
    file: File,
    path: PathBuf,
}

impl Mark {
    /// Reads the mark: `Ok(None)` when there is none yet, `Err` with what
    /// is wrong when the file is unreadable.
    fn read(path: &Path) -> Result<Option<u64>, String> {
        let mut text = String::new();
        match File::open(path) {
            Ok(mut f) => f
                .read_to_string(&mut text)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        text.trim_end()
            .strip_prefix("switchboard history mark v1 commits=")
            .and_then(|n| n.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("{} is not a history mark", path.display()))
    }

    fn create(path: &Path, commits: u64) -> std::io::Result<Mark> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut mark = Mark {
            file,
            path: path.to_owned(),
        };
        mark.write(commits)?;
        Ok(mark)
    }

    /// Overwrites the mark in place and waits until it is on disk.
    fn write(&mut self, commits: u64) -> std::io::Result<()> {
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(mark_text(commits).as_bytes())?;
        self.file.sync_data()
    }
}

fn meta(conn: &Connection, key: &str) -> Result<Option<String>, rusqlite::Error> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
        .execute([key, value])?;
    Ok(())
}

/// Adds the columns later versions need to a database made by an earlier one.
fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('streams')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if !columns.iter().any(|c| c == "ttl_ms") {
        conn.execute_batch(
            "ALTER TABLE streams ADD COLUMN ttl_ms INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE streams ADD COLUMN last_ms INTEGER NOT NULL DEFAULT 0;",
        )?;
        conn.execute(
            "UPDATE streams SET last_ms = COALESCE(
                 (SELECT MAX(time_ms) FROM publications p WHERE p.channel = streams.channel), ?1)",
            [now_ms() as i64],
        )?;
    }
    Ok(())
}

/// Refuses a damaged file: the quick check's first findings, with the path.
fn verify(conn: &Connection, path: &Path) -> Result<(), HistoryError> {
    let findings: Vec<String> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| damaged(path, &describe(&e)))?;
    if findings != ["ok"] {
        return Err(damaged(path, &findings.join("; ")));
    }
    Ok(())
}

fn damaged(path: &Path, what: &str) -> HistoryError {
    HistoryError::Storage(format!(
        "{} is damaged and will not be served ({what}). Restore it from a backup, \
         or move it away (with its -wal and -shm files) to start with an empty history",
        path.display()
    ))
}

/// Compares the database with its high-water mark and starts a new epoch
/// for every stream if committed transactions are missing. Returns the
/// database's commit count (at least the mark's).
fn reconcile(conn: &mut Connection, path: &Path, mark: &Path) -> Result<u64, rusqlite::Error> {
    let commits: u64 = meta(conn, "commits")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let lost = match Mark::read(mark) {
        Ok(None) => None,
        Ok(Some(m)) if m <= commits => None,
        Ok(Some(m)) => Some((
            m,
            format!(
                "{} has {commits} commits but its mark {} says {m} were made",
                path.display(),
                mark.display()
            ),
        )),
        Err(e) => Some((commits, e)),
    };
    let Some((mark_commits, why)) = lost else {
        return Ok(commits);
    };
    let epoch = new_epoch();
    let tx = conn.transaction()?;
    let streams = tx.execute("UPDATE streams SET epoch = ?1", [&epoch])?;
    set_meta(&tx, "epoch", &epoch)?;
    set_meta(&tx, "commits", &mark_commits.to_string())?;
    tx.commit()?;
    tracing::error!(
        reason = %why,
        streams,
        new_epoch = %epoch,
        "HISTORY LOST: committed publications are missing from the history database \
         (write-ahead log truncated or damaged, OS crash, or an older copy restored); \
         every channel starts a new epoch, so resuming clients are told recovered: false"
    );
    Ok(mark_commits.max(commits))
}

impl SqliteHistory {
    /// Opens (or creates) the database at `path` with the default options.
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (or creates) the database at `path`: refuses a damaged file
    /// (naming it), and starts a new epoch for every stream if the file is
    /// behind its high-water mark (see the module's documentation).
    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<Self, HistoryError> {
        let at = |e: &dyn std::fmt::Display| storage(format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| at(&e))?;
        }
        let mut conn = Connection::open(path).map_err(|e| damaged(path, &describe(&e)))?;
        verify(&conn, path)?;
        conn.execute_batch(SCHEMA).map_err(|e| at(&describe(&e)))?;
        migrate(&conn).map_err(|e| at(&describe(&e)))?;
        if meta(&conn, "epoch").map_err(|e| at(&e))?.is_none() {
            set_meta(&conn, "epoch", &new_epoch()).map_err(|e| at(&e))?;
        }
        let mark_file = mark_path(path);
        let commits = reconcile(&mut conn, path, &mark_file).map_err(|e| at(&describe(&e)))?;
        let mark = Mark::create(&mark_file, commits)
            .map_err(|e| storage(format!("{}: {e}", mark_file.display())))?;
        let epoch = meta(&conn, "epoch")
            .map_err(|e| at(&e))?
            .unwrap_or_else(new_epoch);
        let store = Arc::new(Mutex::new(Store { conn, epoch }));
        let health = Arc::new(Health::default());
        let (writer, jobs) = std::sync::mpsc::channel();
        let (synced, committed) = std::sync::mpsc::channel();
        let mut w = Writer {
            store: Arc::clone(&store),
            health: Arc::clone(&health),
            synced,
            commits,
            options,
        };
        let sync_health = Arc::clone(&health);
        std::thread::Builder::new()
            .name("history-sync".into())
            .spawn(move || sync_loop(mark, &sync_health, &committed))
            .map_err(storage)?;
        std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || w.run(&jobs))
            .map_err(storage)?;
        Ok(SqliteHistory {
            store,
            writer,
            health,
        })
    }

    /// Writes the write-ahead log back into the database file (at
    /// shutdown; committed publications are durable without it).
    pub fn checkpoint(&self) -> Result<(), HistoryError> {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        store
            .conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(|e| self.health.error(&e))
    }

    /// Whether the storage works now: no corruption met since the start,
    /// the high-water mark written, and a probe row written through the
    /// writer (after the appends queued before it) and read back.
    pub async fn check(&self) -> Result<(), HistoryError> {
        for state in [&self.health.corrupt, &self.health.mark] {
            if let Some(e) = state.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return Err(HistoryError::Storage(e));
            }
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writer
            .send(Job::Probe(reply))
            .map_err(|_| storage("the history writer has stopped"))?;
        answer
            .await
            .map_err(|_| storage("the history writer has stopped"))?
    }

    /// What the database holds.
    pub async fn stats(&self) -> Result<SqliteStats, HistoryError> {
        self.run(|conn, _| {
            let count = |table: &str| {
                conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|n| n as u64)
            };
            Ok(SqliteStats {
                streams: count("streams")?,
                publications: count("publications")?,
                keys: count("idempotency")?,
            })
        })
        .await
    }

    /// Runs `f` on the connection off the async runtime's threads.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, HistoryError> {
        let store = Arc::clone(&self.store);
        let health = Arc::clone(&self.health);
        tokio::task::spawn_blocking(move || {
            let mut store = store.lock().unwrap_or_else(|e| e.into_inner());
            let Store { conn, epoch } = &mut *store;
            f(conn, epoch).map_err(|e| health.error(&e))
        })
        .await
        .map_err(storage)?
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

/// The writer thread's state.
struct Writer {
    store: Arc<Mutex<Store>>,
    health: Arc<Health>,
    /// Committed groups, to the thread that writes the mark and answers.
    synced: Sender<Committed>,
    /// Commit groups made so far (the database's `commits`).
    commits: u64,
    options: SqliteOptions,
}

/// A committed group on its way to be answered.
struct Committed {
    /// The group's number (the database's `commits` once it is in).
    number: u64,
    group: Vec<AppendJob>,
    results: Vec<Result<Appended, HistoryError>>,
}

/// Runs the follow-ups of a group in order and answers its appends.
fn answer(group: Vec<AppendJob>, results: Vec<Result<Appended, HistoryError>>) {
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

/// The mark's thread: writes the number of the last committed group to
/// the mark and waits for the disk, then answers the groups it covers, in
/// commit order. The writer commits the next groups meanwhile, so one
/// flush of the mark covers every group committed during the previous one.
fn sync_loop(mut mark: Mark, health: &Health, committed: &Receiver<Committed>) {
    while let Ok(first) = committed.recv() {
        let mut batch = vec![first];
        while let Ok(more) = committed.try_recv() {
            batch.push(more);
        }
        let top = batch.last().map_or(0, |c| c.number);
        if let Err(e) = mark.write(top) {
            let what = format!("cannot write {}: {e}", mark.path.display());
            tracing::error!(error = %what, "the history's high-water mark is stale");
            *health.mark.lock().unwrap_or_else(|p| p.into_inner()) = Some(what);
        }
        for c in batch {
            answer(c.group, c.results);
        }
    }
}

impl Writer {
    /// Takes every waiting append, commits them in one transaction, then
    /// runs their follow-ups in order and answers them; sweeps between
    /// groups when it is time.
    fn run(&mut self, jobs: &Receiver<Job>) {
        let mut next_sweep = Instant::now() + self.options.sweep_every;
        loop {
            let wait = next_sweep.saturating_duration_since(Instant::now());
            let first = match jobs.recv_timeout(wait) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut group = Vec::new();
            let mut probes = Vec::new();
            let mut next = first;
            while let Some(job) = next.take() {
                match job {
                    Job::Append(a) => group.push(a),
                    Job::Probe(p) => probes.push(p),
                }
                if group.len() < GROUP_MAX {
                    next = jobs.try_recv().ok();
                }
            }
            if !group.is_empty() {
                self.commit(group);
            }
            for probe in probes {
                let _ = probe.send(self.probe());
            }
            if Instant::now() >= next_sweep {
                let more = self.sweep();
                // A sweep that stopped at its batch size goes on at once
                // (after the appends that queued meanwhile).
                next_sweep = Instant::now()
                    + if more {
                        Duration::ZERO
                    } else {
                        self.options.sweep_every
                    };
            }
        }
    }

    /// Commits a group and hands it to the mark's thread, which answers
    /// it once the mark covers it; a failed group is answered at once.
    fn commit(&mut self, mut group: Vec<AppendJob>) {
        let results = {
            let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
            let Store { conn, epoch } = &mut *store;
            commit_group(conn, epoch, &mut group, self.commits + 1)
        };
        match results {
            Ok(results) => {
                self.commits += 1;
                let committed = Committed {
                    number: self.commits,
                    group,
                    results,
                };
                if let Err(std::sync::mpsc::SendError(c)) = self.synced.send(committed) {
                    // The mark's thread is gone (it panicked): answer
                    // without the mark, and say the mark is stale.
                    *self.health.mark.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some("the history's mark thread has stopped".into());
                    answer(c.group, c.results);
                }
            }
            Err(e) => {
                let e = self.health.error(&e);
                tracing::warn!(error = %e, appends = group.len(), "a history commit failed; its publications were not stored");
                let results = group
                    .iter()
                    .map(|_| Err(HistoryError::Storage(e.to_string())))
                    .collect();
                answer(group, results);
            }
        }
    }

    /// Writes a probe row and reads it back.
    fn probe(&self) -> Result<(), HistoryError> {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let written = format!("{}-{}", now_ms(), new_epoch());
        let result = (|| {
            let tx = store.conn.transaction()?;
            set_meta(&tx, "probe", &written)?;
            tx.commit()?;
            meta(&store.conn, "probe")
        })();
        match result {
            Ok(Some(read)) if read == written => Ok(()),
            Ok(other) => Err(storage(format!(
                "the probe row read back {other:?}, not what was written"
            ))),
            Err(e) => Err(self.health.error(&e)),
        }
    }

    /// Drops expired and idle channels, at most [`SWEEP_BATCH`] of them;
    /// returns whether more remain.
    fn sweep(&self) -> bool {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let Store { conn, epoch } = &mut *store;
        match sweep_batch(conn, self.options.idle, self.options.busy.as_ref()) {
            Ok((more, None)) => more,
            Ok((more, Some((dropped, new)))) => {
                tracing::info!(
                    streams = dropped,
                    new_epoch = %new,
                    "history sweep dropped expired or idle channels; new streams start a new epoch"
                );
                *epoch = new;
                more
            }
            Err(e) => {
                let e = self.health.error(&e);
                tracing::warn!(error = %e, "the history sweep failed");
                false
            }
        }
    }
}

/// One sweep transaction: forgets expired idempotency keys, deletes the
/// publications of channels whose TTL has passed since their last one,
/// and drops (with everything they hold) the streams expired for longer
/// than keys are remembered, or idle longer than `idle`, unless `busy`
/// (then they count as active now). Returns whether more candidates may
/// remain, and how many streams were dropped with the database's new
/// epoch, if any were.
fn sweep_batch(
    conn: &mut Connection,
    idle: Option<Duration>,
    busy: Option<&Busy>,
) -> Result<(bool, Option<(usize, String)>), rusqlite::Error> {
    let now = now_ms() as i64;
    let key_memory = KEY_MEMORY.as_millis() as i64;
    let idle_ms = idle.map_or(-1, |d| d.as_millis() as i64);
    let tx = conn.transaction()?;
    tx.execute(
        "DELETE FROM idempotency WHERE time_ms < ?1",
        [now - key_memory],
    )?;
    // Channels whose every publication has expired.
    tx.execute(
        "DELETE FROM publications WHERE channel IN (
             SELECT channel FROM streams WHERE ttl_ms > 0 AND last_ms < ?1 - ttl_ms)",
        [now],
    )?;
    let doomed: Vec<String> = tx
        .prepare(
            "SELECT channel FROM streams
             WHERE (ttl_ms > 0 AND last_ms < ?1 - MAX(ttl_ms, ?2))
                OR (?3 >= 0 AND last_ms < ?1 - ?3)
             LIMIT ?4",
        )?
        .query_map(params![now, key_memory, idle_ms, SWEEP_BATCH as i64], |r| {
            r.get(0)
        })?
        .collect::<Result<_, _>>()?;
    let more = doomed.len() == SWEEP_BATCH;
    let mut dropped = 0;
    for channel in &doomed {
        // Checked under the store's lock: a subscriber registers before it
        // reads its position, which waits for this transaction.
        let in_use = busy.is_some_and(|busy| ChannelName::parse(channel).is_ok_and(|c| busy(&c)));
        if in_use {
            tx.prepare_cached("UPDATE streams SET last_ms = ?2 WHERE channel = ?1")?
                .execute(params![channel, now])?;
            continue;
        }
        for table in ["publications", "idempotency", "streams"] {
            tx.prepare_cached(&format!("DELETE FROM {table} WHERE channel = ?1"))?
                .execute([channel])?;
        }
        dropped += 1;
    }
    if dropped == 0 {
        tx.commit()?;
        return Ok((more, None));
    }
    let epoch = new_epoch();
    set_meta(&tx, "epoch", &epoch)?;
    tx.commit()?;
    Ok((more, Some((dropped, epoch))))
}

/// Appends a group in one transaction, each in a savepoint of its own, and
/// records the group's number. `Err`: nothing of the group was committed.
fn commit_group(
    conn: &mut Connection,
    epoch: &str,
    group: &mut [AppendJob],
    number: u64,
) -> Result<Vec<Result<Appended, HistoryError>>, rusqlite::Error> {
    let mut tx = conn.transaction()?;
    let mut results = Vec::with_capacity(group.len());
    for job in group.iter_mut() {
        let one = tx.savepoint().and_then(|sp| {
            let data = job.data.clone();
            let appended = append_one(&sp, epoch, &job.channel, data, job.from.take(), &job.opts)?;
            sp.commit()?;
            Ok(appended)
        });
        if let Err(e) = &one
            && tx.is_autocommit()
        {
            // SQLite rolled the whole transaction back (a full disk, an
            // I/O error): the appends after this one must not run outside
            // of it, each committed on its own and answered as failed.
            return Err(clone_error(e));
        }
        results.push(one.map_err(|e| storage(describe(&e))));
    }
    set_meta(&tx, "commits", &number.to_string())?;
    tx.commit()?;
    Ok(results)
}

/// A copy of an error that keeps its SQLite code.
fn clone_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, msg) => {
            rusqlite::Error::SqliteFailure(*code, msg.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
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
    let ttl_ms = opts.ttl.map_or(0, |t| t.as_millis() as i64);
    tx.prepare_cached("UPDATE streams SET top = ?2, ttl_ms = ?3, last_ms = ?4 WHERE channel = ?1")?
        .execute(params![channel, offset as i64, ttl_ms, now as i64])?;
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
            .send(Job::Append(job))
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
        self.run(move |conn, db_epoch| {
            let tx = conn.transaction()?;
            let (epoch, top) = stream(&tx, &channel, db_epoch, false)?;
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
        self.run(move |conn, db_epoch| {
            let tx = conn.transaction()?;
            let (epoch, top) = stream(&tx, &channel, db_epoch, false)?;
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
