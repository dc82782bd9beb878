//! Benchmark server: the bench application on the `switchboard` library.
//!
//! - `join` (room, with ack): the socket joins the room; acks `"ok"`.
//! - `publish` (room, payload): emits `msg` with the payload to every
//!   socket in the room (`io.to(room)`, the publisher included).
//! - `echo` (payload, with ack): acks with the same payload.
//!
//! Listens on 127.0.0.1:$PORT (default 3000) with the default options and
//! prints `listening on <port>` when ready. The Tokio runtime is
//! current-thread unless `WORKERS` is greater than 1. Exits on SIGTERM or
//! SIGINT.
//!
//! Optional, for the cluster benchmarks (`bench/cluster.py`); unset, the
//! server is the plain single-node one:
//! - `ADAPTER` = `redis` | `sharded` | `streams`: the `switchboard-redis`
//!   adapter in that mode (classic pub/sub, sharded pub/sub with dynamic
//!   room channels, Redis streams), on `REDIS_URL`
//!   (`redis://127.0.0.1:6379`) with channel prefix (and stream name)
//!   `PREFIX` (`socket.io`). `listening on` is printed once Redis confirmed
//!   the subscriptions, and `join` acks once the node receives the room's
//!   broadcasts.
//! - `RECOVERY=1`: connection state recovery
//!   (`RecoveryConfig::default()`): every broadcast is stored (in memory,
//!   or in the stream with `ADAPTER=streams`) and carries its offset as a
//!   last argument.

use std::io::Write;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use switchboard::{Event, RecoveryConfig, Socket, SocketIo, Value};
use switchboard_redis::RedisAdapter;
use tokio::signal::unix::{SignalKind, signal};

/// Registers the application's event handlers on the main namespace. They
/// are namespace-level handlers (`Namespace::on`), shared by every socket,
/// so a connection carries no handler allocations of its own.
fn app(io: &SocketIo, clustered: bool) {
    let server = io.clone();
    io.ns("/")
        .on("join", move |socket: Socket, mut event: Event| async move {
            if let Ok(room) = event.arg::<String>(0) {
                socket.join([room]);
            }
            if clustered {
                // Acked once this node receives the room's broadcasts (a
                // sharded room channel confirmed by Redis).
                let _ = socket.namespace().adapter().ready().await;
            }
            let _ = event.ack("ok");
        })
        .on("publish", move |_: Socket, mut event: Event| {
            let io = server.clone();
            async move {
                let mut args = event.take_args().into_iter();
                let Some(Value::String(room)) = args.next() else {
                    return;
                };
                let payload = args.next().unwrap_or(Value::Null);
                let _ = io.to(room).emit("msg", &payload).await;
            }
        })
        .on("echo", |_: Socket, mut event: Event| async move {
            let payload = event.take_args().into_iter().next().unwrap_or(Value::Null);
            let _ = event.ack(&payload);
        });
}

/// Accepts connections until the process ends.
async fn serve(io: SocketIo, port: u16) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?.port())?;
        out.flush()?;
    }
    let service = io.service();
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of file descriptors and the like: keep serving the others.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                tower_call(service.clone(), req)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}

/// Calls a tower service once.
fn tower_call<S, R>(mut service: S, req: R) -> S::Future
where
    S: tower_service::Service<R>,
{
    service.call(req)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown() -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Connects the `switchboard-redis` adapter in mode `redis` (classic),
/// `sharded` or `streams`.
async fn redis_adapter(mode: &str) -> std::io::Result<switchboard_redis::RedisAdapterFactory> {
    let var = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let url = var("REDIS_URL", "redis://127.0.0.1:6379");
    let prefix = var("PREFIX", "socket.io");
    let adapter = match mode {
        "redis" => RedisAdapter::classic().prefix(&prefix),
        "sharded" => RedisAdapter::sharded().prefix(&prefix),
        "streams" => RedisAdapter::streams().prefix(&prefix).stream_name(&prefix),
        other => {
            return Err(std::io::Error::other(format!(
                "unknown ADAPTER {other:?} (redis | sharded | streams)"
            )));
        }
    };
    adapter.connect(&url).await.map_err(std::io::Error::other)
}

fn main() -> std::io::Result<()> {
    let port = env_num("PORT").map_or(3000, |p| p as u16);
    let workers = env_num("WORKERS").unwrap_or(1) as usize;
    let runtime = if workers > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    runtime.block_on(async {
        let mut builder = SocketIo::builder();
        if std::env::var("RECOVERY").is_ok_and(|v| v == "1") {
            builder = builder.connection_state_recovery(RecoveryConfig::default());
        }
        let adapter = std::env::var("ADAPTER").ok().filter(|a| !a.is_empty());
        let factory = match adapter.as_deref() {
            None => None,
            Some(mode) => Some(redis_adapter(mode).await?),
        };
        if let Some(f) = &factory {
            builder = builder.adapter(f.clone());
        }
        let io = builder.build();
        app(&io, factory.is_some());
        if let Some(f) = &factory {
            f.ready().await.map_err(std::io::Error::other)?;
        }
        tokio::select! {
            r = serve(io, port) => r,
            r = shutdown() => r,
        }
    })?;
    // Do not wait for the connections' tasks: exit at once.
    std::process::exit(0)
}
