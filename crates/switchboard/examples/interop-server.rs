//! The server driven by the official `socket.io-client` in
//! `tests/interop/` (see that folder). Listens on 127.0.0.1:$PORT and prints
//! `listening on <port>`.

use std::time::Duration;

use serde_json::json;
use switchboard::{ConnectError, Event, NsMatcher, Socket, SocketIo, Value};

#[path = "common/serve.rs"]
mod serve;

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// Acks with the event's own arguments.
async fn echo(_: Socket, mut event: Event) {
    let args = event.take_args();
    let _ = event.ack_many(&args);
}

fn main_namespace(io: &SocketIo) {
    let server = io.clone();
    io.on_connection("/", move |socket: Socket| {
        let io = server.clone();
        async move {
            let _ = socket.emit("welcome", &json!({ "id": socket.id() }));
            socket.on("echo", echo);
            socket.on("echo-event", |socket: Socket, mut event: Event| async move {
                let _ = socket.emit_many("echo-event", &event.take_args());
            });
            socket.on("join", |socket: Socket, mut event: Event| async move {
                if let Ok(room) = event.arg::<String>(0) {
                    socket.join([room]);
                }
                let _ = event.ack("ok");
            });
            socket.on("leave", |socket: Socket, mut event: Event| async move {
                if let Ok(room) = event.arg::<String>(0) {
                    socket.leave(&room);
                }
                let _ = event.ack("ok");
            });
            socket.on("to-room", |socket: Socket, mut event: Event| async move {
                let room: String = event.arg(0).unwrap_or_default();
                let payload = event.args().get(1).cloned().unwrap_or(Value::Null);
                let _ = socket.to(room).emit("room-msg", &payload).await;
                let _ = event.ack("ok");
            });
            let io2 = io.clone();
            socket.on("to-room-all", move |_: Socket, mut event: Event| {
                let io = io2.clone();
                async move {
                    let room: String = event.arg(0).unwrap_or_default();
                    let payload = event.args().get(1).cloned().unwrap_or(Value::Null);
                    let _ = io.to(room).emit("room-msg", &payload).await;
                    let _ = event.ack("ok");
                }
            });
            socket.on("ask-client", |socket: Socket, mut event: Event| async move {
                let timeout = Duration::from_millis(event.arg::<u64>(0).unwrap_or(1000));
                let answer = socket
                    .emit_with_ack_timeout("question", &(), timeout)
                    .await;
                let reply = match answer {
                    Ok(args) => json!({ "answer": switchboard::from_value::<serde_json::Value>(
                        args.into_iter().next().unwrap_or(Value::Null)).unwrap_or_default() }),
                    Err(_) => json!({ "error": "timeout" }),
                };
                let _ = event.ack(&reply);
            });
            socket.on("binary-echo", |socket: Socket, mut event: Event| async move {
                let args = event.take_args();
                let _ = socket.emit_many("binary-back", &args);
                let _ = event.ack_many(&args);
            });
            socket.on("disconnect-me", |socket: Socket, _: Event| async move {
                socket.disconnect();
            });
            socket.on("broadcast-ack", move |_: Socket, mut event: Event| {
                let io = io.clone();
                async move {
                    let timeout = Duration::from_millis(event.arg::<u64>(0).unwrap_or(1000));
                    let result = io
                        .broadcast()
                        .timeout(timeout)
                        .emit_with_ack("ping-all", &())
                        .await;
                    let (responses, error) = match result {
                        Ok(r) => (r, None),
                        Err(e) => (e.responses, Some("timeout")),
                    };
                    let firsts: Vec<Value> = responses
                        .into_iter()
                        .map(|r| r.args.into_iter().next().unwrap_or(Value::Null))
                        .collect();
                    let _ = event.ack(&json!({
                        "responses": switchboard::from_value::<serde_json::Value>(Value::Array(firsts)).unwrap_or_default(),
                        "error": error,
                    }));
                }
            });
            socket.on("rooms", |socket: Socket, mut event: Event| async move {
                let mut rooms = socket.rooms();
                rooms.sort();
                let _ = event.ack(&rooms);
            });
        }
    });
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let io = SocketIo::builder()
        .ping_interval(env_ms("PING_INTERVAL", 25_000))
        .ping_timeout(env_ms("PING_TIMEOUT", 20_000))
        .build();
    main_namespace(&io);

    io.on_connection("/second", |socket: Socket| async move {
        let _ = socket.emit("welcome-second", &json!({ "id": socket.id() }));
        socket.on("echo", echo);
    });

    io.ns("/admin")
        .use_middleware(|socket: Socket| async move {
            if socket
                .handshake()
                .auth()
                .get("token")
                .and_then(Value::as_str)
                == Some("secret")
            {
                Ok(())
            } else {
                Err(ConnectError::new("unauthorized")
                    .with_data(Value::from(json!({ "code": 401 }))))
            }
        })
        .on_connection(|socket: Socket| async move {
            let _ = socket.emit("hello-admin", &json!({ "user": "admin" }));
        });

    io.dynamic_ns(NsMatcher::glob("/dyn-*"), |socket: Socket| async move {
        let _ = socket.emit("dyn", socket.ns());
        socket.on("echo", echo);
    });

    serve::serve(io.service(), serve::port(3000)).await
}
