//! One node of a Socket.IO cluster: the contract that
//! `tests/cluster/node-server.mjs` implements with the official Node
//! packages, so that Rust and Node nodes can be mixed in one cluster and
//! any client sees no difference. The contract is documented in full at
//! the top of `tests/cluster/node-server.mjs`; change both together.
//!
//! ```text
//! PORT=3001 ADAPTER=streams cargo run --release -p switchboard-redis --example cluster
//! ```
//!
//! Environment: `PORT`, `REDIS_URL` (redis://127.0.0.1:6379), or
//! `REDIS_CLUSTER` (`host:port,host:port...`, a Redis Cluster), `ADAPTER`
//! (`redis` | `sharded` | `streams` | `memory`), `PREFIX` (socket.io),
//! `SESSION_PREFIX` (sio:session:), `SUBSCRIPTION_MODE` (dynamic | static),
//! `NODE_NAME` (node-<port>), `RECOVERY=1` (connection state recovery,
//! skipping middlewares) with `RECOVERY_MS` (120000). Prints
//! `listening on <port>` once Redis confirmed every subscription.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use switchboard::{
    BroadcastError, DisconnectReason, Event, RecoveryConfig, RemoteAddr, RemoteSocket, ServerEvent,
    Socket, SocketIo, Value,
};
use switchboard_redis::{RedisAdapter, SubscriptionMode};
use tower_service::Service;

fn env(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Disconnect reasons of this node's sockets, by id (bounded).
#[derive(Default)]
struct Reasons(Mutex<(HashMap<String, String>, std::collections::VecDeque<String>)>);

impl Reasons {
    fn record(&self, id: String, reason: DisconnectReason) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.0.insert(id.clone(), reason.as_str().to_owned());
        g.1.push_back(id);
        if g.1.len() > 10_000
            && let Some(old) = g.1.pop_front()
        {
            g.0.remove(&old);
        }
    }

    fn get(&self, id: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .get(id)
            .cloned()
    }
}

/// Answers an event's ack (when it asked for one) with `value`.
fn answer(mut event: Event, value: serde_json::Value) {
    let _ = event.ack(&Value::from(value));
}

fn arg(event: &Event, i: usize) -> Value {
    event.args().get(i).cloned().unwrap_or(Value::Null)
}

fn text(event: &Event, i: usize) -> String {
    match arg(event, i) {
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn rooms_of(v: Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|i| match i {
                Value::String(s) => Some(s),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        Value::String(s) => vec![s],
        Value::Number(n) => vec![n.to_string()],
        _ => Vec::new(),
    }
}

fn error(e: impl std::fmt::Display) -> serde_json::Value {
    json!({ "error": e.to_string() })
}

async fn find(io: &SocketIo, id: &str) -> Result<Option<RemoteSocket>, BroadcastError> {
    Ok(io
        .to(id.to_owned())
        .fetch_sockets()
        .await?
        .into_iter()
        .next())
}

fn handlers(io: &SocketIo, node: String, port: u16, reasons: Arc<Reasons>) {
    let ns = io.ns("/");
    // Server-to-server events (other nodes, or the emitter).
    {
        let io = io.clone();
        ns.on_server_event("relay", move |event: ServerEvent| {
            let io = io.clone();
            async move {
                let payload = event.args().first().cloned().unwrap_or(Value::Null);
                let _ = io.broadcast().local().emit("relayed", &payload).await;
            }
        });
    }
    ns.on_server_event("node-ping", |mut event: ServerEvent| async move {
        let _ = event.ack("pong");
    });

    let io2 = io.clone();
    io.on_connection("/", move |socket: Socket| {
        let io = io2.clone();
        let reasons = Arc::clone(&reasons);
        let node = node.clone();
        async move {
            let reasons_ = Arc::clone(&reasons);
            socket.on("disconnect-reason", move |_: Socket, event: Event| {
                let reasons = Arc::clone(&reasons_);
                async move {
                    let reason = reasons.get(&text(&event, 0));
                    answer(event, json!(reason));
                }
            });
            let _ = socket.emit(
                "hello",
                &json!({ "node": node, "port": port, "recovered": socket.recovered() }),
            );
            socket.on_disconnect(move |s: Socket, reason| {
                let reasons = Arc::clone(&reasons);
                async move { reasons.record(s.id().to_string(), reason) }
            });
            socket.on("join", |socket: Socket, event: Event| async move {
                socket.join([text(&event, 0)]);
                // Acked once this node receives the room's broadcasts (a
                // dynamic subscription confirmed).
                let _ = socket_adapter_ready(&socket).await;
                answer(event, json!("ok"));
            });
            socket.on("leave", |socket: Socket, event: Event| async move {
                socket.leave(&text(&event, 0));
                answer(event, json!("ok"));
            });
            let io_ = io.clone();
            socket.on("publish", move |_: Socket, event: Event| {
                let io = io_.clone();
                async move {
                    let _ = io.to(text(&event, 0)).emit("msg", &arg(&event, 1)).await;
                    answer(event, json!("ok"));
                }
            });
            let io_ = io.clone();
            socket.on("publish-all", move |_: Socket, event: Event| {
                let io = io_.clone();
                async move {
                    let _ = io.emit("msg", &arg(&event, 0)).await;
                    answer(event, json!("ok"));
                }
            });
            let io_ = io.clone();
            socket.on("publish-except", move |_: Socket, event: Event| {
                let io = io_.clone();
                async move {
                    let mut op = io.to(text(&event, 0));
                    for r in rooms_of(arg(&event, 1)) {
                        op = op.except(r);
                    }
                    let _ = op.emit("msg", &arg(&event, 2)).await;
                    answer(event, json!("ok"));
                }
            });
            let io_ = io.clone();
            socket.on("count", move |_: Socket, event: Event| {
                let io = io_.clone();
                async move {
                    match io.broadcast().fetch_sockets().await {
                        Ok(all) => answer(event, json!(all.len())),
                        Err(e) => answer(event, error(e)),
                    }
                }
            });
            let io_ = io.clone();
            socket.on("server-emit", move |_: Socket, event: Event| {
                let io = io_.clone();
                async move {
                    let _ = io.server_side_emit("relay", &(arg(&event, 0),)).await;
                    answer(event, json!("ok"));
                }
            });
            let io_ = io.clone();
            socket.on("server-ask", move |_: Socket, mut event: Event| {
                let io = io_.clone();
                async move {
                    let answer = match io.server_side_emit_with_ack("node-ping", &()).await {
                        Ok(answers) => Value::Array(answers),
                        Err(e) => Value::Object(vec![
                            ("error".into(), Value::String(e.error.to_string())),
                            ("responses".into(), Value::Array(e.responses)),
                        ]),
                    };
                    let _ = event.ack(&answer);
                }
            });
            let io_ = io.clone();
            socket.on("ask-all", move |_: Socket, mut event: Event| {
                let io = io_.clone();
                async move {
                    let first = |args: Vec<Value>| args.into_iter().next().unwrap_or(Value::Null);
                    let answer = match io
                        .broadcast()
                        .timeout(Duration::from_secs(3))
                        .emit_many_with_ack("question", &())
                        .await
                    {
                        Ok(answers) => {
                            Value::Array(answers.into_iter().map(|a| first(a.args)).collect())
                        }
                        Err(e) => Value::Object(vec![
                            ("error".into(), Value::from("timeout")),
                            (
                                "responses".into(),
                                Value::Array(
                                    e.responses.into_iter().map(|a| first(a.args)).collect(),
                                ),
                            ),
                        ]),
                    };
                    let _ = event.ack(&answer);
                }
            });
            let io_ = io.clone();
            socket.on("join-all", move |_: Socket, event: Event| {
                let io = io_.clone();
                async move {
                    let _ = io.broadcast().join([text(&event, 0)]).await;
                    answer(event, json!("ok"));
                }
            });
            let io_ = io.clone();
            socket.on("leave-all", move |_: Socket, event: Event| {
                let io = io_.clone();
                async move {
                    let _ = io.broadcast().leave([text(&event, 0)]).await;
                    answer(event, json!("ok"));
                }
            });
            let io_ = io.clone();
            socket.on("kick", move |_: Socket, event: Event| {
                let io = io_.clone();
                async move {
                    let _ = io.to(text(&event, 0)).disconnect(true).await;
                    answer(event, json!("ok"));
                }
            });
            let io_ = io.clone();
            socket.on("rooms", move |_: Socket, event: Event| {
                let io = io_.clone();
                async move {
                    match io.broadcast().rooms().await {
                        Ok(mut rooms) => {
                            rooms.sort();
                            answer(event, json!(rooms));
                        }
                        Err(e) => answer(event, error(e)),
                    }
                }
            });
            let io_ = io.clone();
            socket.on("sockets-info", move |_: Socket, mut event: Event| {
                let io = io_.clone();
                async move {
                    let sockets = match io.to(text(&event, 0)).fetch_sockets().await {
                        Ok(s) => s,
                        Err(e) => return answer(event, error(e)),
                    };
                    let list: Vec<Value> = sockets
                        .iter()
                        .map(|s| {
                            let info = s.info();
                            let mut rooms = info.rooms.clone();
                            rooms.sort();
                            let hs = info.handshake.to_json();
                            Value::Object(vec![
                                ("id".into(), Value::from(info.id.to_string())),
                                ("rooms".into(), Value::from(json!(rooms))),
                                ("data".into(), Value::from(info.data.clone())),
                                (
                                    "handshake".into(),
                                    Value::Object(vec![
                                        ("auth".into(), info.handshake.auth().clone()),
                                        ("query".into(), Value::from(hs["query"].clone())),
                                        ("address".into(), Value::from(hs["address"].clone())),
                                        ("xdomain".into(), Value::from(hs["xdomain"].clone())),
                                        ("secure".into(), Value::from(hs["secure"].clone())),
                                        ("url".into(), Value::from(hs["url"].clone())),
                                    ]),
                                ),
                            ])
                        })
                        .collect();
                    let _ = event.ack(&Value::Array(list));
                }
            });
            socket.on("set-data", |socket: Socket, event: Event| async move {
                let data: serde_json::Value =
                    switchboard::from_value(arg(&event, 0)).unwrap_or_default();
                let _ = socket.set_data(&data);
                answer(event, json!("ok"));
            });
            let io_ = io.clone();
            socket.on("remote-emit", move |_: Socket, event: Event| {
                let io = io_.clone();
                async move {
                    match find(&io, &text(&event, 0)).await {
                        Ok(Some(s)) => {
                            let _ = s.emit("direct", &arg(&event, 1)).await;
                            answer(event, json!("ok"));
                        }
                        Ok(None) => answer(event, json!({"error": "not found"})),
                        Err(e) => answer(event, error(e)),
                    }
                }
            });
            let io_ = io.clone();
            socket.on("remote-join", move |_: Socket, event: Event| {
                let io = io_.clone();
                async move {
                    match find(&io, &text(&event, 0)).await {
                        Ok(Some(s)) => {
                            let _ = s.join([text(&event, 1)]).await;
                            answer(event, json!("ok"));
                        }
                        Ok(None) => answer(event, json!({"error": "not found"})),
                        Err(e) => answer(event, error(e)),
                    }
                }
            });
            let io_ = io.clone();
            socket.on("remote-leave", move |_: Socket, event: Event| {
                let io = io_.clone();
                async move {
                    match find(&io, &text(&event, 0)).await {
                        Ok(Some(s)) => {
                            let _ = s.leave([text(&event, 1)]).await;
                            answer(event, json!("ok"));
                        }
                        Ok(None) => answer(event, json!({"error": "not found"})),
                        Err(e) => answer(event, error(e)),
                    }
                }
            });
            let io_ = io.clone();
            socket.on("remote-disconnect", move |_: Socket, event: Event| {
                let io = io_.clone();
                async move {
                    match find(&io, &text(&event, 0)).await {
                        Ok(Some(s)) => {
                            let _ = s.disconnect(true).await;
                            answer(event, json!("ok"));
                        }
                        Ok(None) => answer(event, json!({"error": "not found"})),
                        Err(e) => answer(event, error(e)),
                    }
                }
            });
        }
    });
}

/// Waits until the namespace's adapter listens to what was just joined.
async fn socket_adapter_ready(socket: &Socket) -> Result<(), switchboard::adapter::AdapterError> {
    let io_ns = socket.namespace();
    io_ns.adapter().ready().await
}

async fn serve(io: SocketIo, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let service = io.service();
    loop {
        let (tcp, addr) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(RemoteAddr(addr));
                let mut service = service.clone();
                async move {
                    Ok::<Response<_>, Infallible>(
                        service.call(req).await.unwrap_or_else(|e| match e {}),
                    )
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let port: u16 = env("PORT", "0").parse()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let port = listener.local_addr()?.port();
    let node = env("NODE_NAME", &format!("node-{port}"));
    let redis_url = env("REDIS_URL", "redis://127.0.0.1:6379");
    let prefix = env("PREFIX", "socket.io");
    let mut builder = SocketIo::builder();
    if env("RECOVERY", "") == "1" {
        let ms: u64 = env("RECOVERY_MS", "120000").parse()?;
        builder = builder.connection_state_recovery(RecoveryConfig {
            max_disconnection_duration: Duration::from_millis(ms),
            skip_middlewares: true,
            ..RecoveryConfig::default()
        });
    }
    let adapter = match env("ADAPTER", "memory").as_str() {
        "memory" => None,
        "redis" => Some(RedisAdapter::classic().prefix(&prefix)),
        "sharded" => Some(RedisAdapter::sharded().prefix(&prefix).subscription_mode(
            match env("SUBSCRIPTION_MODE", "dynamic").as_str() {
                "static" => SubscriptionMode::Static,
                "dynamic-private" => SubscriptionMode::DynamicPrivate,
                _ => SubscriptionMode::Dynamic,
            },
        )),
        "streams" => Some(
            RedisAdapter::streams()
                .prefix(&prefix)
                .stream_name(&prefix)
                .session_prefix(env("SESSION_PREFIX", "sio:session:")),
        ),
        other => {
            return Err(
                format!("unknown ADAPTER {other:?} (redis | sharded | streams | memory)").into(),
            );
        }
    };
    // REDIS_CLUSTER=host:port,host:port... names the nodes of a Redis
    // Cluster instead of one server.
    let cluster: Vec<String> = env("REDIS_CLUSTER", "")
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| format!("redis://{n}"))
        .collect();
    let factory = match adapter {
        Some(a) if !cluster.is_empty() => Some(a.connect_cluster(&cluster).await?),
        Some(a) => Some(a.connect(&redis_url).await?),
        None => None,
    };
    if let Some(f) = &factory {
        builder = builder.adapter(f.clone());
    }
    let io = builder.build();
    handlers(&io, node, port, Arc::default());
    if let Some(f) = &factory {
        f.ready().await?;
    }
    println!("listening on {port}");
    tokio::select! {
        r = serve(io.clone(), listener) => r?,
        _ = tokio::signal::ctrl_c() => io.close(Duration::from_secs(2)).await,
        _ = terminate() => io.close(Duration::from_secs(2)).await,
    }
    Ok(())
}

#[cfg(unix)]
async fn terminate() {
    if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        s.recv().await;
    }
}
