//! The cluster scenario: several server nodes on one Redis, the
//! subscribers split across them (round robin), the publisher on the first
//! node. Each publish is `publish` (room, payload stamped with its send
//! time) on the first node, which broadcasts `msg` to the room through its
//! Redis adapter; every node delivers to its own subscribers.
//!
//! ```text
//! bench-loadgen cluster --addrs 127.0.0.1:A,127.0.0.1:B [--n 1000]
//!     [--rate 100] [--duration 3] [--p99-ms 100] [--trials 12] [--payload 64]
//!     [--sources 8] [--server-pids P1,P2] [--redis 127.0.0.1:R]
//!     [--redis-pid PID] [--settle-ms 300] [--subscribe-on 0,1]
//!     [--disturbed-pct 15] [--attempts 6] [--quiet-wait 300]
//! ```
//!
//! The machine may be shared: each trial also measures what the other
//! processes of the machine used (busy time in /proc/stat minus that of the
//! servers, Redis and the generator). A trial that fails while they took
//! more than `--disturbed-pct` of a core is run again, up to `--attempts`
//! times in all, once they use less than that over a second (waiting at
//! most `--quiet-wait` seconds).
//!
//! `--subscribe-on` lists the nodes (indexes in `--addrs`) that get
//! subscribers (all by default); `--subscribe-on 1` measures the remote
//! path alone.
//!
//! Like `search`: the publish rate doubles, then bisects, to find the
//! highest rate at which at least 99.9% of deliveries arrive, no
//! connection drops and the p99 publish-to-delivery latency stays under
//! `--p99-ms`; publishes go out at an even rate (every millisecond, those
//! due). Each trial also reports the CPU of every server process, of Redis
//! (`--redis-pid`) and of the generator, and the commands Redis executed
//! during the trial (`INFO stats commandstats` before and after, over
//! `--redis`; the INFO calls themselves left out) and its network bytes in
//! and out (one INFO answer, about 2 KB, included), per publish.
//!
//! Kept apart from `main.rs` (only a `mod` line and a match arm there): it
//! reads its own arguments and uses `conn` and `stats` only.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::spawn_local;
use tokio_websockets::Message;

use crate::conn::{self, Proto, Ws};
use crate::stats::{self, Stats};

const ROOM: &str = "bench";

struct Opts {
    addrs: Vec<SocketAddr>,
    n: usize,
    rate: f64,
    duration: Duration,
    p99_ms: f64,
    trials: usize,
    payload: usize,
    sources: u8,
    server_pids: Vec<u32>,
    redis: Option<SocketAddr>,
    redis_pid: Option<u32>,
    settle: Duration,
    subscribe_on: Vec<usize>,
    disturbed_pct: f64,
    attempts: usize,
    quiet_wait: Duration,
}

fn opts() -> Result<Opts, String> {
    let kv = crate::flags()?;
    let list = |k: &str| -> Vec<String> {
        kv.get(k, "")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let addrs = list("addrs")
        .iter()
        .map(|a| a.parse().map_err(|_| format!("bad address {a} in --addrs")))
        .collect::<Result<Vec<SocketAddr>, _>>()?;
    if addrs.is_empty() {
        return Err("cluster needs --addrs HOST:PORT,HOST:PORT".into());
    }
    Ok(Opts {
        n: kv.num("n", "1000")? as usize,
        rate: kv.num("rate", "100")?,
        duration: Duration::from_secs_f64(kv.num("duration", "3")?),
        p99_ms: kv.num("p99-ms", "100")?,
        trials: kv.num("trials", "12")? as usize,
        payload: kv.num("payload", "64")? as usize,
        sources: (kv.num("sources", "8")? as u8).clamp(1, 200),
        server_pids: list("server-pids")
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect(),
        redis: match kv.raw("redis") {
            Some(a) => Some(a.parse().map_err(|_| "bad --redis")?),
            None => None,
        },
        redis_pid: kv.opt("redis-pid"),
        settle: Duration::from_millis(kv.num("settle-ms", "300")? as u64),
        disturbed_pct: kv.num("disturbed-pct", "15")?,
        attempts: (kv.num("attempts", "6")? as usize).max(1),
        quiet_wait: Duration::from_secs_f64(kv.num("quiet-wait", "300")?),
        subscribe_on: list("subscribe-on")
            .iter()
            .filter_map(|i| i.parse().ok())
            .filter(|i| *i < addrs.len())
            .collect(),
        addrs,
    })
}

/// Runs the scenario; the result is one JSON object.
pub(crate) async fn run() -> Result<Value, String> {
    let o = opts()?;
    let stats = Rc::new(Stats::new());
    // Subscribers, round robin over the nodes, 256 connecting at a time.
    let sem = std::sync::Arc::new(Semaphore::new(256));
    let mut handles = Vec::with_capacity(o.n);
    for i in 0..o.n {
        let permit = std::sync::Arc::clone(&sem)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())?;
        let node = if o.subscribe_on.is_empty() {
            i % o.addrs.len()
        } else {
            o.subscribe_on[i % o.subscribe_on.len()]
        };
        let (addr, source) = (o.addrs[node], (i % o.sources as usize) as u8);
        handles.push(spawn_local(async move {
            let mut ws = conn::open(addr, source, Proto::Sio).await?;
            conn::join(&mut ws, Proto::Sio, ROOM).await?;
            drop(permit);
            Ok::<_, std::io::Error>((node, ws))
        }));
    }
    let mut per_node = vec![0usize; o.addrs.len()];
    let mut failed = 0;
    for h in handles {
        match h.await {
            Ok(Ok((node, ws))) => {
                per_node[node] += 1;
                spawn_local(conn::subscribe(ws, Proto::Sio, Rc::clone(&stats)));
            }
            _ => failed += 1,
        }
    }
    if failed > 0 {
        eprintln!("bench-loadgen: {failed} of {} connections failed", o.n);
    }
    let count: usize = per_node.iter().sum();
    if count == 0 {
        return Err("no subscriber could connect".into());
    }
    let mut publisher = conn::open(o.addrs[0], 0, Proto::Sio)
        .await
        .map_err(|e| e.to_string())?;

    let mut trials = Vec::new();
    let mut best: Option<Value> = None;
    let (mut lo, mut hi, mut rate) = (0.0f64, None::<f64>, o.rate);
    for _ in 0..o.trials.max(1) {
        // A trial that fails while other processes of the machine took
        // more than --disturbed-pct of a core is run again (at most
        // --attempts times in all): the search is otherwise at the mercy of
        // one disturbed trial.
        let mut attempts = 0;
        let mut trial = loop {
            attempts += 1;
            let t = trial(&o, &stats, count, &mut publisher, rate).await?;
            let other = t["cpu"]["other_cpu_pct"].as_f64().unwrap_or(0.0);
            let failed = !t["sustainable"].as_bool().unwrap_or(false);
            if failed
                && other > o.disturbed_pct
                && attempts < o.attempts
                && stats.disconnected.get() == 0
            {
                let waited = quiet(&o, &mut publisher).await?;
                eprintln!(
                    "  rate {rate:>9.0}/s: p99 {} ms while other processes took {other}% of a core: again (after {waited} s)",
                    t["p99_ms"]
                );
                continue;
            }
            break t;
        };
        trial["attempts"] = json!(attempts);
        let ok = trial["sustainable"].as_bool().unwrap_or(false);
        eprintln!(
            "  rate {rate:>9.0}/s: {} deliveries/s, p99 {} ms, delivered {:.4}, redis {}% CPU, {} commands/publish, others {}%{}",
            trial["deliveries_per_s"],
            trial["p99_ms"],
            trial["delivered_ratio"].as_f64().unwrap_or(0.0),
            trial["cpu"]["redis_cpu_pct"],
            trial["redis"]["commands_per_publish"],
            trial["cpu"]["other_cpu_pct"],
            if ok { "" } else { "  (not sustainable)" }
        );
        trials.push(trial.clone());
        if stats.disconnected.get() > 0 {
            break;
        }
        if ok {
            lo = rate;
            best = Some(trial);
        } else {
            hi = Some(rate);
        }
        match crate::next_rate(rate, lo, hi) {
            Some(next) => rate = next,
            None => break,
        }
        tokio::time::sleep(o.settle).await;
    }
    Ok(json!({
        "scenario": "cluster",
        "nodes": o.addrs.len(),
        "subscribers": count,
        "subscribers_per_node": per_node,
        "best": best,
        "trials": trials,
    }))
}

/// CPU ticks of the servers, Redis and this process, machine steal, and
/// the machine's busy ticks (user, nice, system: what processes ran).
struct Cpu {
    servers: Vec<Option<u64>>,
    redis: Option<u64>,
    me: Option<u64>,
    steal: Option<(u64, u64)>,
    busy: Option<u64>,
    at: Instant,
}

/// Busy ticks of the whole machine (all cores), from /proc/stat: user,
/// nice, system, irq and softirq (a process's own ticks include the
/// softirq work done in its context, loopback TCP's receive path).
fn machine_busy() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(7)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq
    (v.len() == 7).then(|| v[0] + v[1] + v[2] + v[5] + v[6])
}

impl Cpu {
    fn now(o: &Opts) -> Self {
        Cpu {
            servers: o
                .server_pids
                .iter()
                .map(|p| stats::cpu_ticks(Some(*p)))
                .collect(),
            redis: o.redis_pid.and_then(|p| stats::cpu_ticks(Some(p))),
            me: stats::cpu_ticks(None),
            steal: stats::steal_ticks(),
            busy: machine_busy(),
            at: Instant::now(),
        }
    }

    /// Ticks of the processes measured (servers, Redis, this one).
    fn ours(&self) -> u64 {
        self.servers.iter().flatten().sum::<u64>() + self.redis.unwrap_or(0) + self.me.unwrap_or(0)
    }

    /// Percentages of one core between `self` and `end` (one decimal: a
    /// tick is 10 ms, about 0.3% of a 3 s trial).
    fn since(&self, end: &Cpu) -> Value {
        let secs = (end.at - self.at).as_secs_f64().max(1e-3);
        let pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => json!((b.saturating_sub(a) as f64 / secs * 10.0).round() / 10.0),
            _ => Value::Null,
        };
        let steal = match (self.steal, end.steal) {
            (Some((t0, s0)), Some((t1, s1))) if t1 > t0 => {
                json!(((s1 - s0) as f64 / (t1 - t0) as f64 * 100.0).round())
            }
            _ => Value::Null,
        };
        let servers: Vec<Value> = self
            .servers
            .iter()
            .zip(&end.servers)
            .map(|(a, b)| pct(*a, *b))
            .collect();
        // What other processes of the machine (other tenants) used.
        let other = match (self.busy, end.busy) {
            (Some(a), Some(b)) => {
                let theirs =
                    (b.saturating_sub(a)).saturating_sub(end.ours().saturating_sub(self.ours()));
                json!((theirs as f64 / secs).round())
            }
            _ => Value::Null,
        };
        json!({
            "other_cpu_pct": other,
            "servers_cpu_pct": servers,
            "server_cpu_pct": servers.iter().filter_map(Value::as_f64).sum::<f64>(),
            "redis_cpu_pct": pct(self.redis, end.redis),
            "loadgen_cpu_pct": pct(self.me, end.me),
            "steal_pct": steal,
        })
    }
}

/// Waits until the other processes of the machine use less than
/// `--disturbed-pct` of a core over one second (at most `--quiet-wait`
/// seconds, 300); returns the seconds waited.
async fn quiet(o: &Opts, ws: &mut Ws) -> Result<u64, String> {
    let started = Instant::now();
    loop {
        let before = Cpu::now(o);
        // The publisher answers the server's pings meanwhile.
        let second = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(second);
        loop {
            tokio::select! {
                () = &mut second => break,
                msg = ws.next() => match msg {
                    Some(Ok(m)) if m.as_text() == Some("2") => {
                        ws.send(Message::text("3")).await.map_err(|e| e.to_string())?;
                    }
                    Some(Ok(_)) => {}
                    _ => return Err("publisher disconnected".into()),
                },
            }
        }
        let other = before.since(&Cpu::now(o))["other_cpu_pct"]
            .as_f64()
            .unwrap_or(0.0);
        if other < o.disturbed_pct || started.elapsed() >= o.quiet_wait {
            return Ok(started.elapsed().as_secs());
        }
    }
}

/// One trial: publishes at `rate` for the duration, then waits for the
/// deliveries to stop.
async fn trial(
    o: &Opts,
    stats: &Stats,
    count: usize,
    ws: &mut Ws,
    rate: f64,
) -> Result<Value, String> {
    stats.reset();
    let redis_before = match o.redis {
        Some(addr) => Some(commandstats(addr).await?),
        None => None,
    };
    let cpu = Cpu::now(o);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while start.elapsed() < o.duration {
        tokio::select! {
            _ = tick.tick() => {
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                if due > sent {
                    for _ in sent..due {
                        let text = format!("42[\"publish\",\"{ROOM}\",{}]", conn::payload(o.payload));
                        ws.feed(Message::text(text)).await.map_err(|e| e.to_string())?;
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
    let expected = sent * count as u64;
    let mut last = stats.received.get();
    let mut still = Instant::now();
    while stats.received.get() < expected && still.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if stats.received.get() != last {
            last = stats.received.get();
            still = Instant::now();
        }
    }
    let total_secs = start.elapsed().as_secs_f64();
    let cpu = cpu.since(&Cpu::now(o));
    let redis = match (o.redis, redis_before) {
        (Some(addr), Some(before)) => {
            let after = commandstats(addr).await?;
            let mut per: BTreeMap<String, u64> = BTreeMap::new();
            let mut usec = 0u64;
            let delta = |k: &str| {
                let a = after.get(k).map_or(0, |v| v.0);
                let b = before.get(k).map_or(0, |v| v.0);
                a.saturating_sub(b)
            };
            let (net_in, net_out) = (delta("net_in"), delta("net_out"));
            for (cmd, (calls, us)) in &after {
                let (c0, u0) = before.get(cmd).copied().unwrap_or((0, 0));
                if !matches!(cmd.as_str(), "info" | "net_in" | "net_out") && calls > &c0 {
                    per.insert(cmd.clone(), calls - c0);
                    usec += us.saturating_sub(u0);
                }
            }
            let total: u64 = per.values().sum();
            let per_publish = |v: u64| {
                if sent == 0 {
                    Value::Null
                } else {
                    json!((v as f64 / sent as f64 * 1000.0).round() / 1000.0)
                }
            };
            json!({
                "commands": per,
                "total": total,
                "commands_per_publish": per_publish(total),
                "command_usec": usec,
                "command_usec_per_publish": per_publish(usec),
                "net_in_bytes_per_publish": per_publish(net_in),
                "net_out_bytes_per_publish": per_publish(net_out),
            })
        }
        _ => Value::Null,
    };
    let received = stats.received.get();
    let (p50, p99, max) = stats.latency_ms();
    let delivered = if expected == 0 {
        0.0
    } else {
        received as f64 / expected as f64
    };
    Ok(json!({
        "rate": rate,
        "sent": sent,
        "expected": expected,
        "received": received,
        "delivered_ratio": delivered,
        "deliveries_per_s": (received as f64 / total_secs.max(publish_secs)).round(),
        "p50_ms": p50, "p99_ms": p99, "max_ms": max,
        "dropped_connections": stats.disconnected.get(),
        "sustainable": delivered >= 0.999 && p99 <= o.p99_ms && stats.disconnected.get() == 0,
        "cpu": cpu,
        "redis": redis,
    }))
}

/// `INFO stats commandstats` of the Redis at `addr`: calls and
/// microseconds by command (lower case, subcommands as `config|get`), and
/// the network bytes in and out as `net_in` and `net_out` (calls: bytes).
async fn commandstats(addr: SocketAddr) -> Result<HashMap<String, (u64, u64)>, String> {
    let text = info(addr, &["stats", "commandstats"])
        .await
        .map_err(|e| format!("redis INFO at {addr}: {e}"))?;
    let mut out = HashMap::new();
    for line in text.lines() {
        for (key, name) in [
            ("total_net_input_bytes:", "net_in"),
            ("total_net_output_bytes:", "net_out"),
        ] {
            if let Some(v) = line.strip_prefix(key).and_then(|v| v.trim().parse().ok()) {
                out.insert(name.to_owned(), (v, 0));
            }
        }
        let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let field = |k: &str| -> u64 {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
                .unwrap_or(0)
        };
        out.insert(name.to_owned(), (field("calls"), field("usec")));
    }
    Ok(out)
}

/// One `INFO <sections>` over a fresh connection (RESP2 bulk string).
async fn info(addr: SocketAddr, sections: &[&str]) -> std::io::Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    let mut cmd = format!("*{}\r\n$4\r\nINFO\r\n", sections.len() + 1);
    for s in sections {
        cmd.push_str(&format!("${}\r\n{s}\r\n", s.len()));
    }
    tcp.write_all(cmd.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
            continue;
        };
        if buf[0] != b'$' {
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&buf[..eol]).into_owned(),
            ));
        }
        let len: usize = std::str::from_utf8(&buf[1..eol])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad INFO answer"))?;
        if buf.len() >= eol + 2 + len {
            return Ok(String::from_utf8_lossy(&buf[eol + 2..eol + 2 + len]).into_owned());
        }
    }
}
