//! Load generator for the Switchboard benchmarks.
//!
//! Speaks Engine.IO v4 / Socket.IO v5 over WebSocket (and long-polling for
//! one scenario), or plain WebSocket for the raw baseline. Connections come
//! from several loopback source addresses (127.0.0.2, 127.0.0.3, ...), so
//! more than 28k connections fit in the ephemeral port range. Latencies go
//! to an HDR histogram. Each scenario is bounded in time and prints one JSON
//! object on stdout.
//!
//! ```text
//! bench-loadgen <idle|fanout|search|echo|polling|cluster|publish|client-echo> --addr 127.0.0.1:3000
//!     (search and polling look for the highest sustainable publish rate)
//!     [--proto sio|raw|server] [--n N] [--duration S] [--rate R] [--payload B]
//!     [--server-pid PID] [--sources K] [--inflight I] [--clients C] [--p99-ms L]
//!     [--trials T]
//! ```
//!
//! `client-echo` measures a client library instead of a server (see
//! `clients.rs`): `--client switchboard|rust_socketio --connections N --url U`.

mod clients;
mod cluster;
mod conn;
mod publish;
mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use conn::{Poller, Proto, Ws};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use stats::{CpuWindow, Stats, now_us};
use tokio::sync::Semaphore;
use tokio::task::spawn_local;
use tokio_websockets::Message;

const ROOM: &str = "bench";

struct Args {
    scenario: String,
    addr: SocketAddr,
    proto: Proto,
    n: usize,
    duration: Duration,
    rate: f64,
    payload: usize,
    server_pid: Option<u32>,
    sources: u8,
    /// Connection attempts in flight at once while connecting.
    inflight: usize,
    clients: usize,
    p99_ms: f64,
    trials: usize,
}

/// The `--key value` pairs of the command line after the scenario.
pub(crate) fn flags() -> Result<Flags, String> {
    let mut kv = HashMap::new();
    let mut it = std::env::args().skip(2);
    while let Some(k) = it.next() {
        let k = k
            .strip_prefix("--")
            .ok_or(format!("unexpected argument {k}"))?
            .to_owned();
        let v = it.next().ok_or(format!("--{k} needs a value"))?;
        kv.insert(k, v);
    }
    Ok(Flags(kv))
}

/// The `--key value` flags of a scenario.
pub(crate) struct Flags(HashMap<String, String>);

impl Flags {
    /// A flag's value, or `default`.
    pub(crate) fn get(&self, k: &str, default: &str) -> String {
        self.0.get(k).cloned().unwrap_or_else(|| default.to_owned())
    }

    /// A numeric flag, or `default`.
    pub(crate) fn num(&self, k: &str, default: &str) -> Result<f64, String> {
        self.get(k, default)
            .parse::<f64>()
            .map_err(|_| format!("--{k} must be a number"))
    }

    /// A flag that may be absent (or unparsable: then absent too).
    pub(crate) fn opt<T: std::str::FromStr>(&self, k: &str) -> Option<T> {
        self.0.get(k).and_then(|v| v.parse().ok())
    }

    /// A flag's raw value, if given.
    pub(crate) fn raw(&self, k: &str) -> Option<&String> {
        self.0.get(k)
    }
}

/// The rate searches' next step from `rate`, given the highest sustainable
/// rate so far (`lo`) and the lowest unsustainable one (`hi`): double until
/// a rate fails, then bisect; `None` once the two are within 10% (or below
/// one publish per second).
pub(crate) fn next_rate(rate: f64, lo: f64, hi: Option<f64>) -> Option<f64> {
    let next = match hi {
        None => rate * 2.0,
        Some(h) if h / lo.max(1.0) > 1.1 && lo > 0.0 => (lo + h) / 2.0,
        Some(_) if lo == 0.0 => rate / 2.0,
        Some(_) => return None,
    };
    (next >= 1.0).then_some(next)
}

fn parse_args() -> Result<Args, String> {
    let scenario = std::env::args().nth(1).ok_or("missing scenario")?;
    let kv = flags()?;
    Ok(Args {
        scenario,
        addr: kv
            .get("addr", "127.0.0.1:3000")
            .parse()
            .map_err(|_| "bad --addr")?,
        proto: match kv.get("proto", "sio").as_str() {
            "sio" => Proto::Sio,
            "raw" => Proto::Raw,
            "server" => Proto::Server,
            other => return Err(format!("unknown --proto {other}")),
        },
        n: kv.num("n", "1000")? as usize,
        duration: Duration::from_secs_f64(kv.num("duration", "5")?),
        rate: kv.num("rate", "100")?,
        payload: kv.num("payload", "64")? as usize,
        server_pid: kv.opt("server-pid"),
        sources: (kv.num("sources", "8")? as u8).clamp(1, 200),
        inflight: (kv.num("inflight", "256")? as usize).max(1),
        clients: kv.num("clients", "100")? as usize,
        p99_ms: kv.num("p99-ms", "100")?,
        trials: kv.num("trials", "12")? as usize,
    })
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-loadgen: {e}");
            std::process::exit(2);
        }
    };
    now_us();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, async move {
        match args.scenario.as_str() {
            "idle" => idle(&args).await,
            "fanout" => {
                let subs = subscribers(&args, args.n).await?;
                fanout_trial(&args, &subs, args.rate).await
            }
            "search" => search(&args).await,
            "echo" => echo(&args).await,
            "polling" => polling(&args).await,
            "cluster" => cluster::run().await,
            "publish" => publish::run().await,
            "client-echo" => clients::run().await,
            other => Err(format!("unknown scenario {other}")),
        }
    });
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            println!("{}", json!({ "error": e }));
            std::process::exit(1);
        }
    }
}

/// Opens `n` connections with bounded concurrency; returns them and the
/// connect rate.
async fn open_many(args: &Args, n: usize, join: bool) -> Result<(Vec<Ws>, f64), String> {
    let sem = std::sync::Arc::new(Semaphore::new(args.inflight));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let permit = std::sync::Arc::clone(&sem)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (addr, proto, source) = (args.addr, args.proto, (i % args.sources as usize) as u8);
        handles.push(spawn_local(async move {
            let mut ws = conn::open(addr, source, proto).await?;
            if join && proto.is_sio() {
                conn::join(&mut ws, proto, ROOM).await?;
            }
            drop(permit);
            Ok::<_, std::io::Error>(ws)
        }));
    }
    let mut out = Vec::with_capacity(n);
    let mut failed = 0;
    for h in handles {
        match h.await {
            Ok(Ok(ws)) => out.push(ws),
            _ => failed += 1,
        }
    }
    let rate = out.len() as f64 / started.elapsed().as_secs_f64();
    if failed > 0 {
        eprintln!("bench-loadgen: {failed} of {n} connections failed");
    }
    if out.is_empty() {
        return Err("no connection could be opened".into());
    }
    Ok((out, rate))
}

async fn idle(args: &Args) -> Result<Value, String> {
    let pid = args.server_pid.ok_or("idle needs --server-pid")?;
    let before = stats::rss_kib(pid).ok_or("cannot read server RSS")?;
    let (conns, rate) = open_many(args, args.n, false).await?;
    let stats = Rc::new(Stats::new());
    let held = conns.len();
    for ws in conns {
        spawn_local(conn::subscribe(ws, args.proto, Rc::clone(&stats)));
    }
    tokio::time::sleep(args.duration.min(Duration::from_secs(5))).await;
    let after = stats::rss_kib(pid).ok_or("cannot read server RSS")?;
    Ok(json!({
        "scenario": "idle",
        "n": args.n,
        "connected": held,
        "connect_rate": rate.round(),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "bytes_per_conn": ((after.saturating_sub(before)) as f64 * 1024.0 / held as f64).round(),
        "dropped": stats.disconnected.get(),
    }))
}

struct Subscribers {
    stats: Rc<Stats>,
    count: usize,
    publisher: std::cell::RefCell<Option<Ws>>,
}

async fn subscribers(args: &Args, n: usize) -> Result<Subscribers, String> {
    let (conns, _) = open_many(args, n, true).await?;
    let stats = Rc::new(Stats::new());
    let count = conns.len();
    for ws in conns {
        spawn_local(conn::subscribe(ws, args.proto, Rc::clone(&stats)));
    }
    let mut publisher = conn::open(args.addr, 0, args.proto)
        .await
        .map_err(|e| e.to_string())?;
    if args.proto == Proto::Server {
        // The server's channels let subscribers publish.
        conn::join(&mut publisher, args.proto, ROOM)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(Subscribers {
        stats,
        count,
        publisher: std::cell::RefCell::new(Some(publisher)),
    })
}

fn publication(proto: Proto, size: usize) -> String {
    match proto {
        Proto::Sio => format!("42[\"publish\",\"{ROOM}\",{}]", conn::payload(size)),
        Proto::Raw => conn::payload(size),
        Proto::Server => format!(
            "42[\"publish\",{{\"channel\":\"{}\",\"data\":{}}}]",
            conn::CHANNEL,
            conn::payload(size)
        ),
    }
}

/// Publishes at `rate` for the duration, then waits for deliveries to stop.
async fn fanout_trial(args: &Args, subs: &Subscribers, rate: f64) -> Result<Value, String> {
    let mut ws = subs.publisher.borrow_mut().take().ok_or("publisher busy")?;
    subs.stats.reset();
    let cpu = CpuWindow::start(args.server_pid);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while start.elapsed() < args.duration {
        tokio::select! {
            _ = tick.tick() => {
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                if due > sent {
                    for _ in sent..due {
                        ws.feed(Message::text(publication(args.proto, args.payload)))
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    ws.flush().await.map_err(|e| e.to_string())?;
                    sent = due;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(m)) if m.as_text() == Some("2") => {
                    ws.send(Message::text("3")).await.map_err(|e| e.to_string())?;
                }
                Some(Ok(_)) => {}
                _ => return Err("publisher disconnected".into()),
            },
        }
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let expected = sent * subs.count as u64;
    // Drain: until everything arrived or nothing moved for a second.
    let mut last = subs.stats.received.get();
    let mut still = Instant::now();
    while subs.stats.received.get() < expected && still.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if subs.stats.received.get() != last {
            last = subs.stats.received.get();
            still = Instant::now();
        }
    }
    let total_secs = start.elapsed().as_secs_f64();
    let cpu = cpu.finish();
    *subs.publisher.borrow_mut() = Some(ws);
    let received = subs.stats.received.get();
    let (p50, p99, max) = subs.stats.latency_ms();
    let delivered = if expected == 0 {
        0.0
    } else {
        received as f64 / expected as f64
    };
    Ok(json!({
        "scenario": "fanout",
        "subscribers": subs.count,
        "rate": rate,
        "sent": sent,
        "expected": expected,
        "received": received,
        "delivered_ratio": delivered,
        "deliveries_per_s": (received as f64 / total_secs.max(publish_secs)).round(),
        "p50_ms": p50, "p99_ms": p99, "max_ms": max,
        "dropped_connections": subs.stats.disconnected.get(),
        "sustainable": delivered >= 0.999 && p99 <= args.p99_ms && subs.stats.disconnected.get() == 0,
        "cpu": cpu,
    }))
}

/// Searches the highest publish rate that stays sustainable: doubling,
/// then bisecting.
async fn search(args: &Args) -> Result<Value, String> {
    let subs = subscribers(args, args.n).await?;
    search_with(args, &subs, "search").await
}

async fn search_with(args: &Args, subs: &Subscribers, scenario: &str) -> Result<Value, String> {
    let mut trials = Vec::new();
    let mut best: Option<Value> = None;
    let mut lo = 0.0;
    let mut hi: Option<f64> = None;
    let mut rate = args.rate;
    for _ in 0..args.trials.max(1) {
        let trial = fanout_trial(args, subs, rate).await?;
        let ok = trial["sustainable"].as_bool().unwrap_or(false);
        eprintln!(
            "  rate {rate:>9.0}/s: {} deliveries/s, p99 {} ms, delivered {:.4}{}",
            trial["deliveries_per_s"],
            trial["p99_ms"],
            trial["delivered_ratio"].as_f64().unwrap_or(0.0),
            if ok { "" } else { "  (not sustainable)" }
        );
        trials.push(trial.clone());
        if subs.stats.disconnected.get() > 0 {
            break;
        }
        if ok {
            lo = rate;
            best = Some(trial);
        } else {
            hi = Some(rate);
        }
        match next_rate(rate, lo, hi) {
            Some(next) => rate = next,
            None => break,
        }
        // Let queues settle between trials.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok(json!({
        "scenario": scenario,
        "subscribers": subs.count,
        "best": best,
        "trials": trials,
    }))
}

async fn echo(args: &Args) -> Result<Value, String> {
    let (conns, _) = open_many(args, args.clients, false).await?;
    let stats = Rc::new(Stats::new());
    let deadline = Instant::now() + args.duration;
    let cpu = CpuWindow::start(args.server_pid);
    let start = Instant::now();
    let mut handles = Vec::new();
    for mut ws in conns {
        let stats = Rc::clone(&stats);
        let size = args.payload;
        handles.push(spawn_local(async move {
            let mut id: u64 = 0;
            while Instant::now() < deadline {
                id += 1;
                let sent = now_us();
                let text = format!(
                    "42{id}[\"echo\",{{\"t\":{sent},\"p\":\"{}\"}}]",
                    "x".repeat(size)
                );
                if conn::send(&mut ws, text).await.is_err() {
                    break;
                }
                let prefix = format!("43{id}[");
                if conn::wait_for(&mut ws, |t| t.starts_with(&prefix))
                    .await
                    .is_err()
                {
                    break;
                }
                stats.record(sent);
            }
        }));
    }
    for h in handles {
        let _ = h.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let (p50, p99, max) = stats.latency_ms();
    Ok(json!({
        "scenario": "echo",
        "clients": args.clients,
        "acks": stats.received.get(),
        "acks_per_s": (stats.received.get() as f64 / secs).round(),
        "p50_ms": p50, "p99_ms": p99, "max_ms": max,
        "cpu": cpu.finish(),
    }))
}

async fn polling(args: &Args) -> Result<Value, String> {
    let stats = Rc::new(Stats::new());
    let sem = std::sync::Arc::new(Semaphore::new(128));
    let mut handles = Vec::new();
    for i in 0..args.n {
        let permit = std::sync::Arc::clone(&sem)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let (addr, source) = (args.addr, (i % args.sources as usize) as u8);
        handles.push(spawn_local(async move {
            let p = Poller::open(addr, source, ROOM).await;
            drop(permit);
            p
        }));
    }
    let mut count = 0;
    for h in handles {
        if let Ok(Ok(p)) = h.await {
            count += 1;
            spawn_local(p.receive(Rc::clone(&stats)));
        }
    }
    if count == 0 {
        return Err("no polling client could connect".into());
    }
    let publisher = conn::open(args.addr, 0, Proto::Sio)
        .await
        .map_err(|e| e.to_string())?;
    let subs = Subscribers {
        stats,
        count,
        publisher: std::cell::RefCell::new(Some(publisher)),
    };
    search_with(args, &subs, "polling").await
}
