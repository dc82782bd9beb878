//! The Redis connections of one adapter factory, shared by its namespaces:
//! a command connection, a publisher that sends queued commands in order
//! (pipelined), a subscriber connection whose messages are dispatched to
//! the adapter that subscribed, and stream readers.
//!
//! Redis may go away. Then: commands fail at once (no retry loop inside a
//! call), the publisher drops what it cannot send (its queue is bounded),
//! the subscriber reconnects with backoff and re-subscribes every channel
//! (the client re-issues them, see `set_automatic_resubscription`), the
//! stream readers retry, and [`Metrics`] and log lines tell what happened.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::{PushInfo, PushKind, RedisError};
use tokio::sync::{mpsc, oneshot};

use crate::RedisError as Error;
use crate::conn::{Conn, Target, Topic};

/// Counters of the Redis side of an adapter (see
/// [`crate::RedisAdapterFactory::metrics`]).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Times the subscriber connection was lost.
    pub disconnects: AtomicU64,
    /// Times it came back (with its subscriptions).
    pub reconnects: AtomicU64,
    /// Commands sent (each one a round trip, pipelined or not).
    pub commands: AtomicU64,
    /// Commands that failed (Redis unreachable or an error answer).
    pub command_errors: AtomicU64,
    /// Messages not published because Redis was unreachable or the
    /// publisher's queue was full.
    pub dropped: AtomicU64,
    /// Cluster requests that timed out.
    pub timeouts: AtomicU64,
    /// Messages received from Redis (pub/sub and streams).
    pub received: AtomicU64,
    /// Messages received that could not be decoded (ignored).
    pub malformed: AtomicU64,
}

/// Receives the messages of a subscription: `(channel, payload)`. Runs on
/// the dispatcher task: it must not block.
pub(crate) type Handler = Arc<dyn Fn(&str, Bytes) + Send + Sync>;

enum SubOp {
    Subscribe(Topic),
    Unsubscribe(Topic),
    Sync(oneshot::Sender<()>),
}

/// What to do with a command's answer.
pub(crate) type Done = Box<dyn FnOnce(Result<redis::Value, Error>) + Send>;

/// A command for the publisher, and what to do with its answer (called in
/// the order the commands were queued).
pub(crate) struct Outgoing {
    pub(crate) cmd: redis::Cmd,
    pub(crate) done: Option<Done>,
}

/// How many commands may wait for the publisher; more are dropped (and
/// counted) rather than buffered without bound while Redis is slow or away.
const OUTBOX: usize = 16_384;
/// Most commands sent in one pipeline.
const BATCH: usize = 512;

/// The shared connections.
pub(crate) struct Driver {
    cmd: Conn,
    sub: Conn,
    target: Target,
    /// What logs call Redis.
    url: String,
    handlers: RwLock<HashMap<Topic, Handler>>,
    subq: mpsc::UnboundedSender<SubOp>,
    outbox: mpsc::Sender<Outgoing>,
    /// Whether Redis is believed reachable (false from a lost connection
    /// until it is back). While it is false a probe runs (see
    /// [`Driver::probe`]): commands are not even tried then, so nothing
    /// else would find out that Redis is back.
    up: AtomicBool,
    /// Whether the subscriber connection has its subscriptions (false from
    /// its loss until Redis confirms them again).
    subscribed: AtomicBool,
    /// Whether the probe runs.
    probing: AtomicBool,
    /// Wakes the probe early (the subscriptions are back).
    wake_probe: Arc<tokio::sync::Notify>,
    me: Weak<Driver>,
    pub(crate) metrics: Arc<Metrics>,
    readers: Mutex<HashMap<String, Arc<StreamRoutes>>>,
    /// The runtime the driver's tasks run on (adapters may be created
    /// outside of it).
    runtime: tokio::runtime::Handle,
    /// Counts the times Redis came back (for users that must catch up).
    reconnected: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("url", &self.url).finish()
    }
}

/// Where the entries of one stream go: by namespace.
#[derive(Default)]
pub(crate) struct StreamRoutes {
    routes: RwLock<HashMap<String, StreamHandler>>,
    /// Set once the reader knows where to start (entries added after this
    /// are read).
    started: tokio::sync::Notify,
    ready: AtomicBool,
    /// The id (`ms-seq`) of the last entry the reader handed out, or of the
    /// entry it started after.
    position: Mutex<(u64, u64)>,
    /// Signalled when `position` moves.
    moved: tokio::sync::Notify,
}

/// A stream entry id `ms-seq` as numbers.
fn entry_key(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Receives stream entries: `(entry id, fields)`.
pub(crate) type StreamHandler = Arc<dyn Fn(&str, &HashMap<String, Bytes>) + Send + Sync>;

impl Driver {
    /// Connects (both connections must succeed once) and starts the tasks.
    pub(crate) async fn connect(target: Target) -> Result<Arc<Driver>, Error> {
        let cmd = target.commands().await?;
        let (push_tx, push_rx) = mpsc::unbounded_channel::<PushInfo>();
        let sub = target.subscriber(push_tx).await?;
        let (subq, subq_rx) = mpsc::unbounded_channel();
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        let driver = Arc::new_cyclic(|me| Driver {
            me: me.clone(),
            subscribed: AtomicBool::new(true),
            probing: AtomicBool::new(false),
            wake_probe: Arc::default(),
            cmd,
            sub,
            url: target.describe(),
            target,
            handlers: RwLock::new(HashMap::new()),
            subq,
            outbox,
            up: AtomicBool::new(true),
            metrics: Arc::default(),
            readers: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
            reconnected: tokio::sync::watch::channel(0).0,
        });
        tokio::spawn(dispatch(Arc::downgrade(&driver), push_rx));
        tokio::spawn(subscriptions(Arc::downgrade(&driver), subq_rx));
        tokio::spawn(publisher(Arc::downgrade(&driver), outbox_rx));
        Ok(driver)
    }

    /// Moves each time Redis comes back after it was lost.
    pub(crate) fn reconnections(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reconnected.subscribe()
    }

    /// A command connection (for scripts).
    pub(crate) fn connection(&self) -> Conn {
        self.cmd.clone()
    }

    /// Counts a failed command (and notices a lost connection).
    pub(crate) fn failed(&self, e: &RedisError) {
        self.note_error(e);
    }

    /// Whether Redis is believed reachable.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Fails at once with a clear error while Redis is unreachable.
    pub(crate) fn check_up(&self) -> Result<(), switchboard::adapter::AdapterError> {
        if self.is_up() {
            Ok(())
        } else {
            Err(switchboard::adapter::AdapterError::Unavailable(format!(
                "Redis at {} is unreachable",
                self.url
            )))
        }
    }

    fn mark(&self, up: bool) {
        // Not back until the subscriptions are.
        if up && !self.subscribed.load(Ordering::Acquire) {
            return;
        }
        let was = self.up.swap(up, Ordering::AcqRel);
        if !up {
            self.probe();
        }
        if was && !up {
            self.metrics.disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(url = %self.url, "redis connection lost: cluster operations fail until it is back; local ones go on");
        } else if !was && up {
            self.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
            self.reconnected.send_modify(|n| *n += 1);
            tracing::info!(url = %self.url, "redis connection restored; subscriptions re-established");
        }
    }

    /// While Redis is believed unreachable, PINGs it through the command
    /// connection (which makes that connection reconnect) with backoff,
    /// or as soon as the subscriptions are back, until it answers with the
    /// subscriptions in place: then Redis is up again. At most one runs.
    fn probe(&self) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.me.clone();
        let wake = Arc::clone(&self.wake_probe);
        self.runtime.spawn(async move {
            let mut delay = Duration::from_millis(50);
            loop {
                let Some(d) = me.upgrade() else { return };
                d.metrics.commands.fetch_add(1, Ordering::Relaxed);
                let mut con = d.cmd.clone();
                let pong = redis::cmd("PING").exec_async(&mut con).await.is_ok();
                if pong && d.subscribed.load(Ordering::Acquire) {
                    // Cleared first: a loss noticed from now on starts
                    // another probe.
                    d.probing.store(false, Ordering::Release);
                    d.mark(true);
                    return;
                }
                drop(d);
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = wake.notified() => {}
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
    }

    fn note_error(&self, e: &RedisError) {
        self.metrics.command_errors.fetch_add(1, Ordering::Relaxed);
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
        {
            self.mark(false);
        }
    }

    /// Runs one command now (a round trip), bypassing the publisher queue.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, Error> {
        self.metrics.commands.fetch_add(1, Ordering::Relaxed);
        let mut con = self.cmd.clone();
        match cmd.query_async(&mut con).await {
            Ok(v) => {
                self.mark(true);
                Ok(v)
            }
            Err(e) => {
                self.note_error(&e);
                Err(e.into())
            }
        }
    }

    /// Runs a pipeline now.
    pub(crate) async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, Error> {
        self.metrics.commands.fetch_add(1, Ordering::Relaxed);
        let mut con = self.cmd.clone();
        match pipe.query_async(&mut con).await {
            Ok(v) => {
                self.mark(true);
                Ok(v)
            }
            Err(e) => {
                self.note_error(&e);
                Err(e.into())
            }
        }
    }

    /// Queues a command for the publisher (sent in order, pipelined).
    /// `false` when it was dropped (queue full, or Redis known to be away).
    pub(crate) fn enqueue(&self, out: Outgoing) -> bool {
        if !self.is_up() {
            self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(done) = out.done {
                done(Err(Error::Unavailable));
            }
            return false;
        }
        match self.outbox.try_send(out) {
            Ok(()) => true,
            Err(e) => {
                self.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                let out = match e {
                    mpsc::error::TrySendError::Full(o) | mpsc::error::TrySendError::Closed(o) => o,
                };
                if let Some(done) = out.done {
                    done(Err(Error::Unavailable));
                }
                false
            }
        }
    }

    /// Waits until the publisher has handled (sent, and run the callbacks
    /// of) every command queued before this call.
    pub(crate) async fn flush(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        let queued = self.enqueue(Outgoing {
            cmd: redis::cmd("PING"),
            done: Some(Box::new(move |r| {
                let _ = tx.send(r.map(|_| ()));
            })),
        });
        if !queued {
            return Err(Error::Unavailable);
        }
        rx.await.unwrap_or(Err(Error::Unavailable))
    }

    /// Subscribes `handler` to `topic` (issued in order; see
    /// [`Driver::sync`]).
    pub(crate) fn subscribe(&self, topic: Topic, handler: Handler) {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.clone(), handler);
        let _ = self.subq.send(SubOp::Subscribe(topic));
    }

    /// Unsubscribes from `topic`.
    pub(crate) fn unsubscribe(&self, topic: Topic) {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&topic);
        let _ = self.subq.send(SubOp::Unsubscribe(topic));
    }

    /// Waits until every subscription asked for so far is confirmed by
    /// Redis (or `timeout`).
    pub(crate) async fn sync(&self, timeout: Duration) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        let _ = self.subq.send(SubOp::Sync(tx));
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Error::Unavailable),
        }
    }

    /// Routes the entries of stream `name` for namespace `nsp` to
    /// `handler`, starting the stream's reader if needed. The reader starts
    /// after the stream's current last entry.
    pub(crate) fn read_stream(
        self: &Arc<Self>,
        name: &str,
        nsp: &str,
        handler: StreamHandler,
    ) -> Arc<StreamRoutes> {
        let mut readers = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        let routes = readers.entry(name.to_owned()).or_insert_with(|| {
            let routes = Arc::new(StreamRoutes::default());
            self.runtime.spawn(read_stream(
                Arc::downgrade(self),
                name.to_owned(),
                Arc::clone(&routes),
            ));
            routes
        });
        routes
            .routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(nsp.to_owned(), handler);
        Arc::clone(routes)
    }

    /// The routes of a stream being read.
    pub(crate) fn read_stream_routes(&self, name: &str) -> Option<Arc<StreamRoutes>> {
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Stops routing stream entries of `nsp`.
    pub(crate) fn forget_stream(&self, name: &str, nsp: &str) {
        if let Some(routes) = self
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            routes
                .routes
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(nsp);
        }
    }

    /// Asks again for every sharded subscription, one channel per command.
    fn resubscribe_shards(&self) {
        let shards: Vec<Topic> = self
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|t| matches!(t, Topic::Shard(_)))
            .cloned()
            .collect();
        for topic in shards {
            let _ = self.subq.send(SubOp::Subscribe(topic));
        }
    }

    fn handler(&self, topic: &Topic) -> Option<Handler> {
        self.handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .cloned()
    }
}

impl StreamRoutes {
    fn advance(&self, id: &str) {
        if let Some(key) = entry_key(id) {
            let mut p = self.position.lock().unwrap_or_else(|e| e.into_inner());
            if key > *p {
                *p = key;
            }
        }
        self.moved.notify_waiters();
    }

    /// Waits until the reader has handed out the entry `id` (and every one
    /// before it), or started after it.
    pub(crate) async fn reached(&self, id: &str) {
        let Some(target) = entry_key(id) else { return };
        loop {
            let moved = self.moved.notified();
            if *self.position.lock().unwrap_or_else(|e| e.into_inner()) >= target {
                return;
            }
            moved.await;
        }
    }

    /// Waits until the reader knows where it starts (entries added from
    /// now on will be read).
    pub(crate) async fn started(&self) {
        loop {
            let notified = self.started.notified();
            if self.ready.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

fn bytes_of(v: redis::Value) -> Option<Bytes> {
    match v {
        redis::Value::BulkString(b) => Some(Bytes::from(b)),
        redis::Value::SimpleString(s) => Some(Bytes::from(s.into_bytes())),
        _ => None,
    }
}

fn text_of(v: redis::Value) -> Option<String> {
    bytes_of(v).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

/// Dispatches what the subscriber connection pushes.
async fn dispatch(driver: Weak<Driver>, mut rx: mpsc::UnboundedReceiver<PushInfo>) {
    while let Some(push) = rx.recv().await {
        let Some(driver) = driver.upgrade() else {
            return;
        };
        let mut data = push.data.into_iter();
        let (topic, channel, payload) = match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let (Some(channel), Some(payload)) = (
                    data.next().and_then(text_of),
                    data.next().and_then(bytes_of),
                ) else {
                    continue;
                };
                let topic = if push.kind == PushKind::SMessage {
                    Topic::Shard(channel.clone())
                } else {
                    Topic::Channel(channel.clone())
                };
                (topic, channel, payload)
            }
            PushKind::PMessage => {
                let (Some(pattern), Some(channel), Some(payload)) = (
                    data.next().and_then(text_of),
                    data.next().and_then(text_of),
                    data.next().and_then(bytes_of),
                ) else {
                    continue;
                };
                (Topic::Pattern(pattern), channel, payload)
            }
            PushKind::Disconnection => {
                driver.subscribed.store(false, Ordering::Release);
                driver.mark(false);
                if driver.sub.is_cluster() {
                    // The cluster client re-subscribes a node's sharded
                    // channels in one SSUBSCRIBE, which a node refuses when
                    // they are in different slots: re-subscribe each.
                    driver.resubscribe_shards();
                }
                continue;
            }
            PushKind::Subscribe | PushKind::PSubscribe | PushKind::SSubscribe => {
                // The probe tells whether commands go through too.
                driver.subscribed.store(true, Ordering::Release);
                if !driver.is_up() {
                    driver.probe();
                    driver.wake_probe.notify_one();
                }
                continue;
            }
            _ => continue,
        };
        driver.metrics.received.fetch_add(1, Ordering::Relaxed);
        if let Some(handler) = driver.handler(&topic) {
            handler(&channel, payload);
        }
    }
}

/// Issues subscriptions in order; one that fails (Redis away) is retried.
async fn subscriptions(driver: Weak<Driver>, mut rx: mpsc::UnboundedReceiver<SubOp>) {
    while let Some(op) = rx.recv().await {
        let Some(d) = driver.upgrade() else { return };
        let mut con = d.sub.clone();
        match op {
            SubOp::Sync(tx) => {
                let _ = tx.send(());
            }
            SubOp::Subscribe(topic) => {
                let mut delay = Duration::from_millis(50);
                loop {
                    // Unsubscribed meanwhile: nothing to do.
                    if d.handler(&topic).is_none() {
                        break;
                    }
                    let r = con.subscribe(&topic).await;
                    match r {
                        Ok(()) => break,
                        Err(e) => {
                            d.note_error(&e);
                            tracing::debug!(?topic, error = %e, "subscribe failed; retrying");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(2));
                        }
                    }
                }
            }
            SubOp::Unsubscribe(topic) => {
                let r = con.unsubscribe(&topic).await;
                if let Err(e) = r {
                    tracing::debug!(?topic, error = %e, "unsubscribe failed");
                }
            }
        }
    }
}

/// Sends queued commands in order, as pipelines of what is waiting.
async fn publisher(driver: Weak<Driver>, mut rx: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let Some(d) = driver.upgrade() else { return };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for out in &batch {
            pipe.add_command(out.cmd.clone());
        }
        d.metrics
            .commands
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut con = d.cmd.clone();
        let started = Instant::now();
        if con.is_cluster() {
            // A cluster routes each command by its slot: no mixed-slot
            // pipeline, but the commands are sent at once, in order, and
            // answered in order.
            let calls = batch.iter().map(|out| {
                let mut con = con.clone();
                let cmd = out.cmd.clone();
                async move { cmd.query_async::<redis::Value>(&mut con).await }
            });
            let results = futures_util::future::join_all(calls).await;
            for (out, r) in batch.drain(..).zip(results) {
                let r = match r {
                    Ok(v) => {
                        d.mark(true);
                        Ok(v)
                    }
                    Err(e) => {
                        d.note_error(&e);
                        if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
                        {
                            d.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                            Err(Error::Unavailable)
                        } else {
                            Err(Error::Command(e.to_string()))
                        }
                    }
                };
                if let Some(done) = out.done {
                    done(r);
                }
            }
            continue;
        }
        let result: Result<Vec<redis::Value>, RedisError> = pipe.query_async(&mut con).await;
        match result {
            Ok(values) => {
                d.mark(true);
                let mut values = values.into_iter();
                for out in batch.drain(..) {
                    let v = values.next().unwrap_or(redis::Value::Nil);
                    let r = match v {
                        redis::Value::ServerError(e) => {
                            d.metrics.command_errors.fetch_add(1, Ordering::Relaxed);
                            Err(Error::Command(format!("{e:?}")))
                        }
                        v => Ok(v),
                    };
                    if let Some(done) = out.done {
                        done(r);
                    }
                }
            }
            Err(e) => {
                d.note_error(&e);
                tracing::debug!(error = %e, n = batch.len(), elapsed = ?started.elapsed(), "publishing failed");
                d.metrics
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                for out in batch.drain(..) {
                    if let Some(done) = out.done {
                        done(Err(Error::Unavailable));
                    }
                }
            }
        }
    }
}

/// Reads a stream from its end (as it was when the reader started), with
/// its own connection (a blocking read holds a connection).
async fn read_stream(driver: Weak<Driver>, name: String, routes: Arc<StreamRoutes>) {
    let target = match driver.upgrade() {
        Some(d) => d.target.clone(),
        None => return,
    };
    let mut con: Option<Conn> = None;
    let mut last: Option<String> = None;
    let mut delay = Duration::from_millis(50);
    loop {
        let Some(d) = driver.upgrade() else { return };
        if Arc::strong_count(&routes) == 1 {
            // The driver dropped its routes.
            return;
        }
        drop(d);
        if con.is_none() {
            match target.reader().await {
                Ok(c) => con = Some(c),
                Err(e) => {
                    tracing::debug!(stream = %name, error = %e, "stream reader cannot connect; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let c = con.as_mut().expect("connected above");
        if last.is_none() {
            // Start after the current last entry (not `$` at the first
            // read: entries added between now and that read would be lost).
            let r: Result<redis::Value, RedisError> = redis::cmd("XREVRANGE")
                .arg(&name)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(c)
                .await;
            match r {
                Ok(v) => {
                    let start = first_entry_id(v).unwrap_or_else(|| "0-0".to_owned());
                    routes.advance(&start);
                    last = Some(start);
                    routes.ready.store(true, Ordering::Release);
                    routes.started.notify_waiters();
                }
                Err(e) => {
                    if let Some(d) = driver.upgrade() {
                        d.note_error(&e);
                    }
                    con = None;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        let from = last.clone().expect("set above");
        let r: Result<redis::Value, RedisError> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(5000)
            .arg("COUNT")
            .arg(100)
            .arg("STREAMS")
            .arg(&name)
            .arg(&from)
            .query_async(c)
            .await;
        match r {
            Ok(v) => {
                delay = Duration::from_millis(50);
                if let Some(d) = driver.upgrade() {
                    d.mark(true);
                    for (id, fields) in xread_entries(v) {
                        d.metrics.received.fetch_add(1, Ordering::Relaxed);
                        let nsp = fields
                            .get("nsp")
                            .and_then(|b| std::str::from_utf8(b).ok())
                            .map(str::to_owned);
                        if nsp.is_none() {
                            // Every entry names its namespace.
                            d.metrics.malformed.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(stream = %name, %id, "ignoring a stream entry without namespace");
                        }
                        if let Some(nsp) = nsp {
                            let handler = routes
                                .routes
                                .read()
                                .unwrap_or_else(|e| e.into_inner())
                                .get(&nsp)
                                .cloned();
                            if let Some(h) = handler {
                                h(&id, &fields);
                            }
                        }
                        routes.advance(&id);
                        last = Some(id);
                    }
                }
            }
            Err(e) => {
                if let Some(d) = driver.upgrade() {
                    d.note_error(&e);
                }
                tracing::debug!(stream = %name, error = %e, "stream read failed; retrying");
                con = None;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// The id of the first entry of an XRANGE/XREVRANGE answer.
fn first_entry_id(v: redis::Value) -> Option<String> {
    match v {
        redis::Value::Array(items) => items.into_iter().next().and_then(|e| match e {
            redis::Value::Array(parts) => parts.into_iter().next().and_then(text_of),
            _ => None,
        }),
        _ => None,
    }
}

/// The entries of an XREAD answer: RESP2 `[[name, [entries]]]`, RESP3 a
/// map `name -> entries`.
pub(crate) fn xread_entries(v: redis::Value) -> Vec<(String, HashMap<String, Bytes>)> {
    let entries = match v {
        redis::Value::Array(streams) => streams
            .into_iter()
            .flat_map(|s| match s {
                redis::Value::Array(mut pair) if pair.len() == 2 => match pair.remove(1) {
                    redis::Value::Array(entries) => entries,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            })
            .collect(),
        redis::Value::Map(streams) => streams
            .into_iter()
            .flat_map(|(_, entries)| match entries {
                redis::Value::Array(e) => e,
                _ => Vec::new(),
            })
            .collect(),
        _ => Vec::new(),
    };
    entries.into_iter().filter_map(entry).collect()
}

/// The entries of an XRANGE answer: `[entries]`.
pub(crate) fn xrange_entries(v: redis::Value) -> Vec<(String, HashMap<String, Bytes>)> {
    match v {
        redis::Value::Array(entries) => entries.into_iter().filter_map(entry).collect(),
        _ => Vec::new(),
    }
}

/// One stream entry: `[id, [field, value, ...]]`.
fn entry(e: redis::Value) -> Option<(String, HashMap<String, Bytes>)> {
    let redis::Value::Array(parts) = e else {
        return None;
    };
    let mut parts = parts.into_iter();
    let id = parts.next().and_then(text_of)?;
    let fields = match parts.next()? {
        redis::Value::Array(kv) => {
            let mut map = HashMap::new();
            let mut kv = kv.into_iter();
            while let (Some(k), Some(v)) =
                (kv.next().and_then(text_of), kv.next().and_then(bytes_of))
            {
                map.insert(k, v);
            }
            map
        }
        redis::Value::Map(kv) => kv
            .into_iter()
            .filter_map(|(k, v)| Some((text_of(k)?, bytes_of(v)?)))
            .collect(),
        _ => return None,
    };
    Some((id, fields))
}
