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

use std::io::Write;

use axum::serve::ListenerExt;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef};
use tokio::signal::unix::{SignalKind, signal};

/// Registers the application's event handlers on the main namespace.
fn app(io: &SocketIo) {
    io.ns("/", async |socket: SocketRef| {
        socket.on(
            "join",
            async |socket: SocketRef, Data::<String>(room), ack: AckSender| {
                socket.join(room);
                let _ = ack.send("ok");
            },
        );
        socket.on(
            "publish",
            async |io: SocketIo, Data::<(String, Value)>((room, payload))| {
                let _ = io.to(room).emit("msg", &payload).await;
            },
        );
        socket.on("echo", async |Data::<Value>(payload), ack: AckSender| {
            let _ = ack.send(&payload);
        });
    });
}

/// Serves until the process ends.
async fn serve(port: u16) -> std::io::Result<()> {
    let (layer, io) = SocketIo::builder().max_payload(1_000_000).build_layer();
    app(&io);
    let router = axum::Router::new().layer(layer);
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
