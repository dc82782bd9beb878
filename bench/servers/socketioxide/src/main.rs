//! Benchmark server: the bench application on [socketioxide] (the latest
//! release from crates.io) mounted as a layer of an axum router.
//!
//! - `join` (room, with ack): the socket joins the room; acks `"ok"`.
//! - `publish` (room, payload): emits `msg` with the payload to every
//!   socket in the room (`io.to(room)`, the publisher included).
//! - `echo` (payload, with ack): acks with the same payload.
//!
//! Listens on 127.0.0.1:$PORT (default 3000) and prints `listening on <port>`
//! when ready. socketioxide's defaults are kept except `max_payload`, set to
//! 1 MB like Socket.IO's `maxHttpBufferSize` (socketioxide's default is
//! 100 kB). Accepted sockets get TCP_NODELAY (axum does not set it). The
//! Tokio runtime is current-thread unless `WORKERS` is greater than 1.
//! Exits on SIGTERM or SIGINT.
//!
//! Optional, for the cluster benchmarks (`bench/cluster.py`): `ADAPTER=redis`
//! puts the namespace on [socketioxide-redis] (the release that goes with
//! this socketioxide, its `redis` driver, Redis pub/sub, default options)
//! at `REDIS_URL` (`redis://127.0.0.1:6379`, RESP3) with channel prefix
//! `PREFIX` (`socket.io`). Unset, the server is the plain single-node one.

use std::io::Write;

use axum::serve::ListenerExt;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide_redis::{RedisAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::signal::unix::{SignalKind, signal};

/// The application's event handlers, registered on every socket of the
/// main namespace.
async fn on_connect<A: Adapter>(socket: SocketRef<A>) {
    socket.on(
        "join",
        async |socket: SocketRef<A>, Data::<String>(room), ack: AckSender<A>| {
            socket.join(room);
            let _ = ack.send("ok");
        },
    );
    socket.on(
        "publish",
        async |io: SocketIo<A>, Data::<(String, Value)>((room, payload))| {
            let _ = io.to(room).emit("msg", &payload).await;
        },
    );
    socket.on("echo", async |Data::<Value>(payload), ack: AckSender<A>| {
        let _ = ack.send(&payload);
    });
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Serves until the process ends.
async fn serve(port: u16) -> std::io::Result<()> {
    let builder = SocketIo::builder().max_payload(1_000_000);
    let router = match var("ADAPTER", "").as_str() {
        "" => {
            let (layer, io) = builder.build_layer();
            io.ns("/", on_connect);
            axum::Router::new().layer(layer)
        }
        "redis" => {
            let mut url = var("REDIS_URL", "redis://127.0.0.1:6379");
            if !url.contains("protocol=") {
                url.push_str(if url.contains('?') { "&" } else { "?" });
                url.push_str("protocol=resp3");
            }
            let client = redis::Client::open(url).map_err(std::io::Error::other)?;
            let config = RedisAdapterConfig::new().with_prefix(var("PREFIX", "socket.io"));
            let adapter = RedisAdapterCtr::new_with_redis_config(&client, config)
                .await
                .map_err(std::io::Error::other)?;
            let (layer, io) = builder
                .with_adapter::<RedisAdapter<_>>(adapter)
                .build_layer();
            io.ns("/", on_connect)
                .await
                .map_err(std::io::Error::other)?;
            axum::Router::new().layer(layer)
        }
        other => {
            return Err(std::io::Error::other(format!(
                "unknown ADAPTER {other:?} (redis)"
            )));
        }
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", listener.local_addr()?.port())?;
        out.flush()?;
    }
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).await
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
        tokio::select! {
            r = serve(port) => r,
            r = shutdown() => r,
        }
    })?;
    // Do not wait for the connections' tasks: exit at once.
    std::process::exit(0)
}
