//! `bench-loadgen client-echo`: what a Socket.IO client library costs.
//!
//! One process opens `--connections` connections with one client library
//! (`--client switchboard`: a `switchboard-client` `Manager` per connection,
//! WebSocket transport; `--client rust_socketio`: an async `rust_socketio`
//! `Client` per connection, WebSocket transport, built with the
//! `rust-socketio` feature). Every connection loops `echo` with an ack,
//! payload `{"n": <sequence>, "p": "<--payload bytes>"}`, and sends the
//! next one when the answer is back (closed loop, one ack in flight per
//! connection); an answer must carry the same `n`.
//!
//! Memory: this process's RSS before connecting and once every connection
//! is up; `bytes_per_conn` is the growth divided by the connections. Rate:
//! after `--warmup` seconds of load, the acks received over `--duration`
//! seconds, and the CPU time this process used meanwhile (user + system,
//! every thread, from `/proc/self/stat`): `acks_per_cpu_s`.
//!
//! ```text
//! bench-loadgen client-echo --client switchboard|rust_socketio
//!     [--url http://127.0.0.1:3000] [--connections 1000] [--duration 10]
//!     [--warmup 2] [--inflight 100] [--payload 64] [--timeout 10]
//!     [--server-pid PID]
//! ```
//!
//! Prints one JSON object. Fails (exit 1) when a connection cannot be
//! opened, an ack times out or fails, an answer does not match, a
//! connection drops during the run, or no ack arrives: the JSON with the
//! figures is then in the error message.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::spawn_local;

use crate::stats::{CpuWindow, Stats, cpu_ticks, now_us, rss_kib};

/// The client library under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `switchboard-client` (crates/client).
    Switchboard,
    /// `rust_socketio` (crates.io), its async client.
    RustSocketio,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Switchboard => "switchboard",
            Kind::RustSocketio => "rust_socketio",
        }
    }
}

struct Opts {
    client: Kind,
    url: String,
    connections: usize,
    duration: Duration,
    warmup: Duration,
    inflight: usize,
    payload: usize,
    timeout: Duration,
    server_pid: Option<u32>,
}

fn opts() -> Result<Opts, String> {
    let kv = crate::flags()?;
    Ok(Opts {
        client: match kv.get("client", "switchboard").as_str() {
            "switchboard" => Kind::Switchboard,
            "rust_socketio" | "rust-socketio" => Kind::RustSocketio,
            other => return Err(format!("unknown --client {other}")),
        },
        url: kv.get("url", "http://127.0.0.1:3000"),
        connections: (kv.num("connections", "1000")? as usize).max(1),
        duration: Duration::from_secs_f64(kv.num("duration", "10")?.max(0.1)),
        warmup: Duration::from_secs_f64(kv.num("warmup", "2")?.max(0.0)),
        inflight: (kv.num("inflight", "100")? as usize).max(1),
        payload: kv.num("payload", "64")? as usize,
        timeout: Duration::from_secs_f64(kv.num("timeout", "10")?.max(0.1)),
        server_pid: kv.opt("server-pid"),
    })
}

/// The `echo` payload.
#[derive(Serialize)]
struct Ping<'a> {
    n: u64,
    p: &'a str,
}

/// The part of the answer that is checked.
#[derive(Deserialize)]
struct Pong {
    n: u64,
}

/// One open connection of the library under test.
enum Conn {
    Switchboard {
        manager: switchboard_client::Manager,
        socket: switchboard_client::Socket,
    },
    #[cfg(feature = "rust-socketio")]
    RustSocketio(rust_socketio::asynchronous::Client),
}

impl Conn {
    /// Opens one connection and waits for the namespace's CONNECT answer.
    /// `drops` counts disconnections seen afterwards.
    async fn open(o: &Opts, drops: Arc<AtomicU64>) -> Result<Conn, String> {
        match o.client {
            Kind::Switchboard => {
                let manager = switchboard_client::Manager::builder(&o.url)
                    .reconnection(switchboard_client::Reconnection::disabled())
                    .connect_timeout(o.timeout)
                    .build()
                    .map_err(|e| e.to_string())?;
                let socket = manager.socket("/");
                socket.on_disconnect(move |_| {
                    drops.fetch_add(1, Ordering::Relaxed);
                });
                socket.connect();
                match tokio::time::timeout(o.timeout, socket.wait_connected()).await {
                    Ok(Ok(())) => Ok(Conn::Switchboard { manager, socket }),
                    Ok(Err(e)) => {
                        manager.close();
                        Err(e.to_string())
                    }
                    Err(_) => {
                        manager.close();
                        Err("connect timed out".into())
                    }
                }
            }
            #[cfg(feature = "rust-socketio")]
            Kind::RustSocketio => rs::open(o, drops).await,
            #[cfg(not(feature = "rust-socketio"))]
            Kind::RustSocketio => {
                drop(drops);
                Err("built without the rust-socketio feature \
                     (cargo build -p bench-loadgen --features rust-socketio)"
                    .into())
            }
        }
    }

    /// Emits `echo` with sequence number `n` and returns the `n` of the
    /// answer.
    async fn echo(&self, n: u64, pad: &str, timeout: Duration) -> Result<u64, String> {
        match self {
            Conn::Switchboard { socket, .. } => socket
                .emit_with_ack::<_, Pong>("echo", &Ping { n, p: pad }, timeout)
                .await
                .map(|pong| pong.n)
                .map_err(|e| e.to_string()),
            #[cfg(feature = "rust-socketio")]
            Conn::RustSocketio(client) => rs::echo(client, n, pad, timeout).await,
        }
    }

    async fn close(self) {
        match self {
            Conn::Switchboard { manager, socket } => {
                socket.disconnect();
                manager.close();
            }
            #[cfg(feature = "rust-socketio")]
            Conn::RustSocketio(client) => {
                let _ = client.disconnect().await;
            }
        }
    }
}

/// The `rust_socketio` side: callbacks turned into awaitable answers.
#[cfg(feature = "rust-socketio")]
mod rs {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures_util::FutureExt;
    use rust_socketio::asynchronous::{Client, ClientBuilder};
    use rust_socketio::{Event, Payload, TransportType};
    use tokio::sync::oneshot;

    use super::{Conn, Opts};

    /// A one-shot sender that a `FnMut` callback can fire once.
    type Slot<T> = Arc<Mutex<Option<oneshot::Sender<T>>>>;

    fn slot<T>() -> (Slot<T>, oneshot::Receiver<T>) {
        let (tx, rx) = oneshot::channel();
        (Arc::new(Mutex::new(Some(tx))), rx)
    }

    fn fire<T>(slot: &Mutex<Option<oneshot::Sender<T>>>, value: T) {
        if let Some(tx) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(value);
        }
    }

    pub(super) async fn open(o: &Opts, drops: Arc<AtomicU64>) -> Result<Conn, String> {
        let (connected, on_connect) = slot::<()>();
        let (failed, on_error) = slot::<String>();
        let build = ClientBuilder::new(o.url.as_str())
            .namespace("/")
            .transport_type(TransportType::Websocket)
            .reconnect(false)
            .on(Event::Connect, move |_, _| {
                fire(&connected, ());
                async {}.boxed()
            })
            .on(Event::Error, move |payload, _| {
                fire(&failed, format!("{payload:?}"));
                async {}.boxed()
            })
            .on(Event::Close, move |_, _| {
                drops.fetch_add(1, Ordering::Relaxed);
                async {}.boxed()
            })
            .connect();
        let client = match tokio::time::timeout(o.timeout, build).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("connect timed out".into()),
        };
        tokio::select! {
            r = on_connect => match r {
                Ok(()) => Ok(Conn::RustSocketio(client)),
                Err(_) => Err("closed before connecting".into()),
            },
            r = on_error => Err(r.unwrap_or_else(|_| "closed before connecting".into())),
            _ = tokio::time::sleep(o.timeout) => {
                let _ = client.disconnect().await;
                Err("no CONNECT answer".into())
            }
        }
    }

    pub(super) async fn echo(
        client: &Client,
        n: u64,
        pad: &str,
        timeout: Duration,
    ) -> Result<u64, String> {
        let (answer, rx) = slot::<Payload>();
        client
            .emit_with_ack(
                "echo",
                serde_json::json!({ "n": n, "p": pad }),
                timeout,
                move |payload, _| {
                    fire(&answer, payload);
                    async {}.boxed()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let payload = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err("ack callback dropped".into()),
            Err(_) => return Err("ack timed out".into()),
        };
        let first = match payload {
            Payload::Text(mut values) if !values.is_empty() => values.swap_remove(0),
            #[allow(deprecated)]
            Payload::String(s) => serde_json::from_str(&s).map_err(|e| e.to_string())?,
            other => return Err(format!("unexpected ack payload {other:?}")),
        };
        // rust_socketio hands an ack's whole argument array over as one
        // value: `[{"n": .., "p": ..}]`.
        let first = match first {
            serde_json::Value::Array(mut items) if !items.is_empty() => items.swap_remove(0),
            other => other,
        };
        first["n"]
            .as_u64()
            .ok_or_else(|| format!("ack without n: {first}"))
    }
}

/// What the connections' loops share.
struct Shared {
    stats: Stats,
    errors: Cell<u64>,
    mismatched: Cell<u64>,
    first_error: Cell<Option<String>>,
    stop: Cell<bool>,
}

/// One connection's closed loop: emit, wait for the ack, again.
async fn echo_loop(conn: Rc<Conn>, shared: Rc<Shared>, pad: Rc<str>, timeout: Duration) {
    let mut n: u64 = 0;
    while !shared.stop.get() {
        n += 1;
        let sent = now_us();
        match conn.echo(n, &pad, timeout).await {
            Ok(m) if m == n => shared.stats.record(sent),
            Ok(_) => shared.mismatched.set(shared.mismatched.get() + 1),
            Err(e) => {
                shared.errors.set(shared.errors.get() + 1);
                let first = shared.first_error.take().unwrap_or(e);
                shared.first_error.set(Some(first));
                break;
            }
        }
    }
}

fn self_rss() -> Result<u64, String> {
    rss_kib(std::process::id()).ok_or_else(|| "cannot read this process's RSS".to_owned())
}

/// Runs the scenario; see the module documentation.
pub(crate) async fn run() -> Result<Value, String> {
    let o = Rc::new(opts()?);
    let rss_before = self_rss()?;
    let drops = Arc::new(AtomicU64::new(0));

    // Connect, at most --inflight attempts at a time.
    let sem = Arc::new(Semaphore::new(o.inflight));
    let started = Instant::now();
    let mut pending = Vec::with_capacity(o.connections);
    for _ in 0..o.connections {
        let permit = Arc::clone(&sem)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (o, drops) = (Rc::clone(&o), Arc::clone(&drops));
        pending.push(spawn_local(async move {
            let c = Conn::open(&o, drops).await;
            drop(permit);
            c
        }));
    }
    let mut conns = Vec::with_capacity(o.connections);
    let mut connect_errors = Vec::new();
    for p in pending {
        match p.await {
            Ok(Ok(c)) => conns.push(Rc::new(c)),
            Ok(Err(e)) => connect_errors.push(e),
            Err(e) => connect_errors.push(e.to_string()),
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    if !connect_errors.is_empty() {
        for c in conns {
            if let Ok(c) = Rc::try_unwrap(c) {
                c.close().await;
            }
        }
        return Err(format!(
            "{} of {} connections failed ({}): first error: {}",
            connect_errors.len(),
            o.connections,
            o.client.name(),
            connect_errors[0]
        ));
    }
    // Let the last handshakes' buffers settle before reading the RSS.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = self_rss()?;

    let shared = Rc::new(Shared {
        stats: Stats::new(),
        errors: Cell::new(0),
        mismatched: Cell::new(0),
        first_error: Cell::new(None),
        stop: Cell::new(false),
    });
    let pad: Rc<str> = Rc::from("x".repeat(o.payload));
    let loops: Vec<_> = conns
        .iter()
        .map(|c| {
            spawn_local(echo_loop(
                Rc::clone(c),
                Rc::clone(&shared),
                Rc::clone(&pad),
                o.timeout,
            ))
        })
        .collect();
    tokio::time::sleep(o.warmup).await;

    // The measured window.
    shared.stats.reset();
    let window = CpuWindow::start(o.server_pid);
    let cpu0 = cpu_ticks(None).ok_or("cannot read this process's CPU time")?;
    let t0 = Instant::now();
    tokio::time::sleep(o.duration).await;
    let acks = shared.stats.received.get();
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_ticks(None).ok_or("cannot read this process's CPU time")?;
    let cpu = window.finish();
    let (p50, p99, max) = shared.stats.latency_ms();
    let rss_loaded = self_rss()?;

    // Stop: every loop ends once its ack in flight is back.
    shared.stop.set(true);
    for l in loops {
        let _ = l.await;
    }
    let dropped = drops.load(Ordering::Relaxed);
    let cpu_s = (cpu1 - cpu0) as f64 / 100.0;
    let n = conns.len();
    for c in conns {
        if let Ok(c) = Rc::try_unwrap(c) {
            c.close().await;
        }
    }

    let result = json!({
        "scenario": "client-echo",
        "client": o.client.name(),
        "connections": n,
        "connect_secs": (connect_secs * 1000.0).round() / 1000.0,
        "payload": o.payload,
        "window_s": (secs * 1000.0).round() / 1000.0,
        "acks": acks,
        "acks_per_s": (acks as f64 / secs).round(),
        "cpu_s": cpu_s,
        "client_cpu_pct": (cpu_s / secs * 100.0).round(),
        "acks_per_cpu_s": if cpu_s > 0.0 { (acks as f64 / cpu_s).round() } else { 0.0 },
        "rss_before_kib": rss_before,
        "rss_connected_kib": rss_connected,
        "rss_loaded_kib": rss_loaded,
        "bytes_per_conn": (rss_connected.saturating_sub(rss_before) as f64 * 1024.0 / n as f64).round(),
        "loaded_bytes_per_conn": (rss_loaded.saturating_sub(rss_before) as f64 * 1024.0 / n as f64).round(),
        "p50_ms": p50, "p99_ms": p99, "max_ms": max,
        "ack_errors": shared.errors.get(),
        "first_error": shared.first_error.take(),
        "mismatched": shared.mismatched.get(),
        "disconnects": dropped,
        "server_cpu_pct": cpu["server_cpu_pct"],
        "steal_pct": cpu["steal_pct"],
    });
    let mut problems = Vec::new();
    if acks == 0 {
        problems.push("no ack in the window".to_owned());
    }
    if shared.errors.get() > 0 {
        problems.push(format!("{} acks failed", shared.errors.get()));
    }
    if shared.mismatched.get() > 0 {
        problems.push(format!("{} answers did not match", shared.mismatched.get()));
    }
    if dropped > 0 {
        problems.push(format!("{dropped} connections dropped"));
    }
    if problems.is_empty() {
        Ok(result)
    } else {
        Err(format!("{}; figures: {result}", problems.join(", ")))
    }
}
