//! `bench-loadgen publish`: publish throughput of the `switchboard` server.
//!
//! `--conns` publishers (connections), each publishing to one of
//! `--channels` channels of namespace `--namespace` (publisher `i` on
//! channel `i % channels`) and waiting for the acknowledgement before the
//! next publish (closed loop: as fast as acks return). Through the HTTP API
//! (`--via api`: `POST /api/publish` on a keep-alive HTTP/1.1 connection,
//! `Authorization: apikey --api-key`) or through `/ws` (`--via ws`: a
//! development token from `POST /api/dev/token`, `auth`, then `message`
//! requests). After `--warmup` seconds, counts the acknowledged publications
//! over `--duration` seconds and the ack latency (p50, p99, max).
//!
//! ```text
//! bench-loadgen publish --addr 127.0.0.1:3000 --via api|ws --conns 64
//!     --channels 64 --namespace pbench --api-key KEY [--duration 5]
//!     [--warmup 1] [--payload 64] [--server-pid PID]
//! ```

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::spawn_local;
use tokio_websockets::{ClientBuilder, Message};

use crate::conn;
use crate::stats::{CpuWindow, Stats, now_us};

struct Opts {
    addr: SocketAddr,
    via_ws: bool,
    conns: usize,
    channels: usize,
    namespace: String,
    api_key: String,
    duration: Duration,
    warmup: Duration,
    payload: usize,
    server_pid: Option<u32>,
}

fn opts() -> Result<Opts, String> {
    let kv = crate::flags()?;
    Ok(Opts {
        addr: kv
            .get("addr", "127.0.0.1:3000")
            .parse()
            .map_err(|_| "bad --addr")?,
        via_ws: match kv.get("via", "api").as_str() {
            "api" => false,
            "ws" => true,
            other => return Err(format!("unknown --via {other}")),
        },
        conns: (kv.num("conns", "64")? as usize).max(1),
        channels: (kv.num("channels", "64")? as usize).max(1),
        namespace: kv.get("namespace", "pbench"),
        api_key: kv.get("api-key", ""),
        duration: Duration::from_secs_f64(kv.num("duration", "5")?),
        warmup: Duration::from_secs_f64(kv.num("warmup", "1")?),
        payload: kv.num("payload", "64")? as usize,
        server_pid: kv.opt("server-pid"),
    })
}

/// One HTTP/1.1 exchange on a keep-alive connection: the status and body.
async fn http(stream: &mut TcpStream, request: &[u8]) -> Result<(u16, Vec<u8>), String> {
    stream.write_all(request).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or("bad status line")?;
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or("no content-length")?;
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("connection closed".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok((status, buf[end + 4..end + 4 + len].to_vec()));
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn post(addr: SocketAddr, path: &str, auth: Option<&str>, body: &str) -> Vec<u8> {
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Counters shared by the publishers.
struct Run {
    stats: Stats,
    measuring: Cell<bool>,
    done: Cell<bool>,
    errors: Cell<u64>,
}

fn body(o: &Opts, channel: &str, seq: u64) -> String {
    let pad = "x".repeat(o.payload.saturating_sub(24));
    json!({ "channel": channel, "data": { "n": seq, "pad": pad } }).to_string()
}

async fn api_publisher(
    o: Rc<Opts>,
    run: Rc<Run>,
    channel: String,
    source: u8,
) -> Result<(), String> {
    let mut stream = conn::tcp(o.addr, source).await.map_err(|e| e.to_string())?;
    let auth = format!("apikey {}", o.api_key);
    let mut seq = 0;
    while !run.done.get() {
        seq += 1;
        let request = post(
            o.addr,
            "/api/publish",
            Some(&auth),
            &body(&o, &channel, seq),
        );
        let sent = now_us();
        let (status, answer) = http(&mut stream, &request).await?;
        if status != 200 {
            run.errors.set(run.errors.get() + 1);
            return Err(format!(
                "publish answered {status}: {}",
                String::from_utf8_lossy(&answer)
            ));
        }
        if run.measuring.get() {
            run.stats.record(sent);
        }
    }
    Ok(())
}

/// One `/ws` request and its answer (the frames in between are skipped).
async fn request(
    ws: &mut conn::Ws,
    id: &mut u64,
    kind: &str,
    payload: Value,
) -> Result<Value, String> {
    *id += 1;
    let text = json!({ "id": *id, "type": kind, "payload": payload }).to_string();
    ws.send(Message::text(text))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let msg = ws
            .next()
            .await
            .ok_or("closed")?
            .map_err(|e| e.to_string())?;
        let Some(text) = msg.as_text() else { continue };
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if v["id"] == json!(*id) {
            return Ok(v);
        }
    }
}

async fn ws_publisher(
    o: Rc<Opts>,
    run: Rc<Run>,
    channel: String,
    source: u8,
) -> Result<(), String> {
    let mut http_conn = conn::tcp(o.addr, source).await.map_err(|e| e.to_string())?;
    let user = format!("bench-{source}-{}", channel.replace(':', "-"));
    let (_, token) = http(
        &mut http_conn,
        &post(
            o.addr,
            "/api/dev/token",
            None,
            &json!({ "user": user }).to_string(),
        ),
    )
    .await?;
    let token: Value = serde_json::from_slice(&token).map_err(|e| e.to_string())?;
    let token = token["token"]
        .as_str()
        .ok_or("no dev token (is the development login on?)")?;
    let stream = conn::tcp(o.addr, source).await.map_err(|e| e.to_string())?;
    let (mut ws, _) = ClientBuilder::new()
        .uri(&format!("ws://{}/ws", o.addr))
        .map_err(|e| e.to_string())?
        .connect_on(stream)
        .await
        .map_err(|e| e.to_string())?;
    let mut id = 0u64;
    let authed = request(&mut ws, &mut id, "auth", json!({ "token": token })).await?;
    if authed["type"] != "ack" {
        return Err(format!("auth answered {authed}"));
    }
    let mut seq = 0;
    while !run.done.get() {
        seq += 1;
        let payload: Value = serde_json::from_str(&body(&o, &channel, seq)).expect("valid JSON");
        let sent = now_us();
        let answer = request(&mut ws, &mut id, "message", payload).await?;
        if answer["type"] != "ack" {
            run.errors.set(run.errors.get() + 1);
            return Err(format!("publish answered {answer}"));
        }
        if run.measuring.get() {
            run.stats.record(sent);
        }
    }
    let _ = ws.close().await;
    Ok(())
}

pub(crate) async fn run() -> Result<Value, String> {
    let o = Rc::new(opts()?);
    let run = Rc::new(Run {
        stats: Stats::new(),
        measuring: Cell::new(false),
        done: Cell::new(false),
        errors: Cell::new(0),
    });
    let mut tasks = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        let channel = format!("{}:c{}", o.namespace, i % o.channels);
        let source = (i % 8) as u8;
        let (o, run) = (Rc::clone(&o), Rc::clone(&run));
        tasks.push(spawn_local(async move {
            if o.via_ws {
                ws_publisher(o, run, channel, source).await
            } else {
                api_publisher(o, run, channel, source).await
            }
        }));
    }
    tokio::time::sleep(o.warmup).await;
    run.stats.reset();
    run.measuring.set(true);
    let cpu = CpuWindow::start(o.server_pid);
    let started = Instant::now();
    tokio::time::sleep(o.duration).await;
    run.measuring.set(false);
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu.finish();
    let acked = run.stats.received.get();
    run.done.set(true);
    let mut failures = Vec::new();
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            failures.push(e);
        }
    }
    let (p50, p99, max) = run.stats.latency_ms();
    if acked == 0 {
        return Err(format!("no publication acknowledged: {failures:?}"));
    }
    Ok(json!({
        "via": if o.via_ws { "ws" } else { "api" },
        "conns": o.conns,
        "channels": o.channels,
        "acked_per_s": (acked as f64 / secs).round(),
        "p50_ms": p50, "p99_ms": p99, "max_ms": max,
        "errors": run.errors.get(),
        "failures": failures.len(),
        "cpu": cpu,
    }))
}
