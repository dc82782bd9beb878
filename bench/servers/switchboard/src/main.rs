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

use std::io::Write;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use switchboard::{Event, Socket, SocketIo, Value};
use tokio::signal::unix::{SignalKind, signal};

/// Registers the application's event handlers on the main namespace. They
/// are namespace-level handlers (`Namespace::on`), shared by every socket,
/// so a connection carries no handler allocations of its own.
fn app(io: &SocketIo) {
    let server = io.clone();
    io.ns("/")
        .on("join", |socket: Socket, mut event: Event| async move {
            if let Ok(room) = event.arg::<String>(0) {
                socket.join([room]);
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
        let io = SocketIo::builder().build();
        app(&io);
        tokio::select! {
            r = serve(io, port) => r,
            r = shutdown() => r,
        }
    })?;
    // Do not wait for the connections' tasks: exit at once.
    std::process::exit(0)
}
