//! The classic chat server, written with the library as a user would.
//!
//! - A connect middleware verifies a JWT (HS256, secret from `JWT_SECRET`,
//!   default `dev-secret`) taken from the handshake auth `{ token }`.
//! - Each socket joins `user:<id>`, so private messages reach every tab of
//!   a user.
//! - `room:join` / `room:leave`, `message:send` (acked with the new id and
//!   fanned out as `message:new`), `typing:start` / `typing:stop` relayed to
//!   the others in the room, `message:private`, `presence:list`.
//! - Presence counts users, not tabs: `presence:online` when a user's first
//!   tab connects, `presence:offline` when the last one leaves.
//!
//! Run: `cargo run -p switchboard --example chat` (listens on 127.0.0.1:3000,
//! `PORT` overrides).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard::{ConnectError, Event, Socket, SocketIo, Value};

#[path = "common/serve.rs"]
mod serve;

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    name: Option<String>,
}

/// What the middleware stores on each socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: String,
    name: String,
}

#[derive(Clone)]
struct Chat {
    io: SocketIo,
    key: Arc<DecodingKey>,
    /// Connected tabs per user id.
    online: Arc<Mutex<HashMap<String, usize>>>,
    next_id: Arc<AtomicU64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn refuse(reason: &str) -> ConnectError {
    ConnectError::new("unauthorized").with_data(Value::from(json!({ "reason": reason })))
}

impl Chat {
    fn authenticate(&self, socket: &Socket) -> Result<(), ConnectError> {
        let token = socket
            .handshake()
            .auth()
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| refuse("missing token"))?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &validation)
            .map_err(|_| refuse("invalid token"))?
            .claims;
        let user = User {
            name: claims.name.unwrap_or_else(|| claims.sub.clone()),
            id: claims.sub,
        };
        socket.set_data(&user).map_err(|_| refuse("invalid token"))
    }

    fn new_id(&self) -> String {
        format!("m{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    async fn on_connection(self, socket: Socket) {
        let Ok(user) = socket.data::<User>() else {
            return;
        };
        socket.join([format!("user:{}", user.id)]);
        let first_tab = {
            let mut online = self.online.lock().unwrap();
            let tabs = online.entry(user.id.clone()).or_insert(0);
            *tabs += 1;
            *tabs == 1
        };
        if first_tab {
            let _ = socket
                .broadcast()
                .emit(
                    "presence:online",
                    &json!({ "userId": user.id, "name": user.name }),
                )
                .await;
        }

        socket.on("room:join", |socket: Socket, mut event: Event| async move {
            let Some(room) = room_arg(&event) else {
                let _ = event.ack(&json!({ "error": "invalid room" }));
                return;
            };
            socket.join([format!("room:{room}")]);
            let members = socket
                .broadcast()
                .to(format!("room:{room}"))
                .fetch_sockets()
                .await
                .unwrap_or_default();
            let mut online: Vec<String> = members
                .into_iter()
                .filter_map(|s| s.data::<User>().ok())
                .map(|u| u.id)
                .collect();
            online.push(socket.data::<User>().map(|u| u.id).unwrap_or_default());
            online.sort();
            online.dedup();
            let _ = event.ack(&json!({ "ok": true, "online": online }));
        });

        socket.on(
            "room:leave",
            |socket: Socket, mut event: Event| async move {
                if let Some(room) = room_arg(&event) {
                    socket.leave(&format!("room:{room}"));
                }
                let _ = event.ack(&json!({ "ok": true }));
            },
        );

        let chat = self.clone();
        socket.on("message:send", move |socket: Socket, mut event: Event| {
            let chat = chat.clone();
            async move {
                let (Some(room), Some(text)) = (room_arg(&event), text_arg(&event)) else {
                    let _ = event.ack(&json!({ "error": "invalid message" }));
                    return;
                };
                let room_name = format!("room:{room}");
                if !socket.rooms().contains(&room_name) {
                    let _ = event.ack(&json!({ "error": "not in room" }));
                    return;
                }
                let user = socket.data::<User>().unwrap_or(User {
                    id: String::new(),
                    name: String::new(),
                });
                let id = chat.new_id();
                let message = json!({
                    "id": id, "room": room, "from": user.id, "name": user.name,
                    "text": text, "ts": now_ms(),
                });
                let _ = event.ack(&json!({ "id": id }));
                let _ = chat.io.to(room_name).emit("message:new", &message).await;
            }
        });

        for (event_name, typing) in [("typing:start", true), ("typing:stop", false)] {
            socket.on(event_name, move |socket: Socket, event: Event| async move {
                let Some(room) = room_arg(&event) else { return };
                let user_id = socket.data::<User>().map(|u| u.id).unwrap_or_default();
                let _ = socket
                    .to(format!("room:{room}"))
                    .emit(
                        "typing",
                        &json!({ "room": room, "userId": user_id, "typing": typing }),
                    )
                    .await;
            });
        }

        let chat = self.clone();
        socket.on(
            "message:private",
            move |socket: Socket, mut event: Event| {
                let chat = chat.clone();
                async move {
                    let to = event
                        .args()
                        .first()
                        .and_then(|a| a.get("to"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    let (Some(to), Some(text)) = (to, text_arg(&event)) else {
                        let _ = event.ack(&json!({ "error": "invalid message" }));
                        return;
                    };
                    let user = socket.data::<User>().unwrap_or(User {
                        id: String::new(),
                        name: String::new(),
                    });
                    let id = chat.new_id();
                    let message = json!({
                        "id": id, "from": user.id, "name": user.name, "to": to,
                        "text": text, "ts": now_ms(),
                    });
                    let _ = event.ack(&json!({ "id": id }));
                    let _ = chat
                        .io
                        .to(format!("user:{to}"))
                        .emit("message:private", &message)
                        .await;
                    if to != user.id {
                        let _ = socket
                            .to(format!("user:{}", user.id))
                            .emit("message:private", &message)
                            .await;
                    }
                }
            },
        );

        let chat = self.clone();
        socket.on("presence:list", move |_: Socket, mut event: Event| {
            let chat = chat.clone();
            async move {
                let mut online: Vec<String> = chat.online.lock().unwrap().keys().cloned().collect();
                online.sort();
                let _ = event.ack(&json!({ "online": online }));
            }
        });

        let chat = self.clone();
        socket.on_disconnect(move |_: Socket, _| {
            let chat = chat.clone();
            let user_id = user.id.clone();
            async move {
                let last_tab = {
                    let mut online = chat.online.lock().unwrap();
                    match online.get_mut(&user_id) {
                        Some(tabs) if *tabs > 1 => {
                            *tabs -= 1;
                            false
                        }
                        Some(_) => {
                            online.remove(&user_id);
                            true
                        }
                        None => false,
                    }
                };
                if last_tab {
                    let _ = chat
                        .io
                        .emit("presence:offline", &json!({ "userId": user_id }))
                        .await;
                }
            }
        });
    }
}

/// The `room` field of the first argument, when it is a non-empty string.
fn room_arg(event: &Event) -> Option<String> {
    let room = event.args().first()?.get("room")?.as_str()?;
    (!room.is_empty() && room.len() <= 100).then(|| room.to_owned())
}

/// The `text` field of the first argument: a non-empty string of at most
/// 2000 characters.
fn text_arg(event: &Event) -> Option<String> {
    let text = event.args().first()?.get("text")?.as_str()?;
    (!text.is_empty() && text.chars().count() <= 2000).then(|| text.to_owned())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let secret = std::env::var("JWT_SECRET").unwrap_or_else(|_| "dev-secret".into());
    let io = SocketIo::builder().build();
    let chat = Chat {
        io: io.clone(),
        key: Arc::new(DecodingKey::from_secret(secret.as_bytes())),
        online: Arc::default(),
        next_id: Arc::default(),
    };

    let auth = chat.clone();
    io.ns("/")
        .use_middleware(move |socket: Socket| {
            let result = auth.authenticate(&socket);
            async move { result }
        })
        .on_connection(move |socket: Socket| chat.clone().on_connection(socket));

    serve::serve(io.service(), serve::port(3000)).await
}
