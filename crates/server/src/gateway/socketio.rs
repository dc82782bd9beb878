//! The Socket.IO gateway: official Socket.IO clients reach the channels
//! through a small event vocabulary on the main namespace, each answered
//! through an ack.
//!
//! - connect with `auth: { token }` (optional: anonymous clients reach
//!   channels whose policy lets anyone subscribe);
//! - `subscribe` `{channel, since?: {offset, epoch}}` → `{channel, offset,
//!   epoch, recovered, publications}`;
//! - `unsubscribe` `{channel}` → `{channel}`;
//! - `publish` `{channel, data}` → `{channel, offset, epoch}`;
//! - `presence` `{channel}` → `{channel, presence}`;
//! - `history` `{channel, limit?}` → `{channel, offset, epoch, publications}`;
//! - errors answer `{error: {code, message}}`;
//! - publications arrive as the event `publication` `{channel, offset,
//!   epoch, data, from}`.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use switchboard::protocol::socketio::{self, Args, Encoded};
use switchboard::{ConnectError, Event, Socket, SocketIo};

use crate::app::App;
use crate::auth::Identity;
use crate::channel::ChannelName;
use crate::history::StreamPosition;
use crate::hub::{Cursors, Delivery, Subscriber, Wire};
use crate::node::Publisher;

fn encode_publication(d: &Delivery) -> Vec<u8> {
    let payload = json!({
        "channel": d.channel.as_str(),
        "offset": d.publication.offset,
        "epoch": d.epoch,
        "data": d.publication.data,
        "from": d.publication.from,
    });
    socketio::encode_event("/", "publication", &payload, Args::One, None)
        .map(|e| e.text.to_vec())
        .unwrap_or_default()
}

struct SioSubscriber {
    id: String,
    socket: Socket,
    cursors: Cursors,
}

impl SioSubscriber {
    fn push(&self, d: &Delivery) -> bool {
        let text = d.encoded(Wire::SocketIo, encode_publication);
        let packet = Encoded {
            text: Bytes::from_owner(text),
            attachments: Vec::new(),
        };
        self.socket.emit_encoded(&packet).is_ok()
    }
}

impl Subscriber for SioSubscriber {
    fn id(&self) -> &str {
        &self.id
    }

    fn deliver(&self, d: &Arc<Delivery>) -> bool {
        match self.cursors.on_live(d) {
            Some(d) => self.push(&d),
            None => true,
        }
    }
}

fn fail(code: &str, message: impl std::fmt::Display) -> Value {
    json!({ "error": { "code": code, "message": message.to_string() } })
}

fn channel_arg(event: &Event) -> Result<ChannelName, Value> {
    let name = event
        .args()
        .first()
        .and_then(|a| a.get("channel"))
        .and_then(switchboard::Value::as_str)
        .ok_or_else(|| fail("bad_request", "channel is required"))?;
    ChannelName::parse(name).map_err(|e| fail("bad_request", e))
}

fn arg_json(event: &Event) -> Value {
    event
        .args()
        .first()
        .cloned()
        .and_then(|v| switchboard::from_value::<Value>(v).ok())
        .unwrap_or(Value::Null)
}

/// Registers the vocabulary on `io`'s main namespace.
pub fn mount(io: &SocketIo, app: &Arc<App>) {
    let auth_app = Arc::clone(app);
    let ns = io.ns("/");
    ns.use_middleware(move |socket: Socket| {
        let app = Arc::clone(&auth_app);
        async move {
            let token = socket
                .handshake()
                .auth()
                .get("token")
                .and_then(switchboard::Value::as_str)
                .map(str::to_owned);
            if let Some(token) = token {
                let identity = app.verifier.verify(&token).map_err(|e| {
                    ConnectError::new(e.to_string())
                        .with_data(switchboard::Value::from(json!({ "code": e.code() })))
                })?;
                let _ = socket.set_data(&Some(identity));
            }
            Ok(())
        }
    });
    let conn_app = Arc::clone(app);
    ns.on_connection(move |socket: Socket| {
        let app = Arc::clone(&conn_app);
        async move {
            let identity: Option<Identity> = socket.data().ok().flatten();
            let sub = Arc::new(SioSubscriber {
                id: format!("sio-{}", socket.id()),
                socket: socket.clone(),
                cursors: Cursors::default(),
            });
            register(&socket, &app, &sub, identity);
        }
    });
}

fn register(socket: &Socket, app: &Arc<App>, sub: &Arc<SioSubscriber>, identity: Option<Identity>) {
    let identity = Arc::new(identity);
    {
        let (app, sub, identity) = (Arc::clone(app), Arc::clone(sub), Arc::clone(&identity));
        socket.on("subscribe", move |_: Socket, mut event: Event| {
            let (app, sub, identity) = (Arc::clone(&app), Arc::clone(&sub), Arc::clone(&identity));
            async move {
                let (answer, held) =
                    subscribe(&app, &sub, identity.as_ref().as_ref(), &event).await;
                let _ = event.ack(&answer);
                // Publications that arrived while subscribing follow the ack.
                for d in held {
                    sub.push(&d);
                }
            }
        });
    }
    {
        let (app, sub, identity) = (Arc::clone(app), Arc::clone(sub), Arc::clone(&identity));
        socket.on("unsubscribe", move |_: Socket, mut event: Event| {
            let answer = match channel_arg(&event) {
                Ok(channel) => {
                    sub.cursors.remove(&channel);
                    app.node
                        .unsubscribe(&channel, identity.as_ref().as_ref(), &sub.id);
                    json!({ "channel": channel.as_str() })
                }
                Err(e) => e,
            };
            let _ = event.ack(&answer);
            async {}
        });
    }
    {
        let (app, sub, identity) = (Arc::clone(app), Arc::clone(sub), Arc::clone(&identity));
        socket.on("publish", move |_: Socket, mut event: Event| {
            let (app, sub, identity) = (Arc::clone(&app), Arc::clone(&sub), Arc::clone(&identity));
            async move {
                let answer = match channel_arg(&event) {
                    Ok(channel) => {
                        let data = arg_json(&event).get("data").cloned().unwrap_or(Value::Null);
                        let publisher = Publisher::Client {
                            identity: identity.as_ref().as_ref(),
                            conn: &sub.id,
                        };
                        match app.node.publish(&channel, data, publisher, None).await {
                            Ok((p, epoch)) => {
                                json!({ "channel": channel.as_str(), "offset": p.offset, "epoch": epoch })
                            }
                            Err(e) => fail(e.code(), e),
                        }
                    }
                    Err(e) => e,
                };
                let _ = event.ack(&answer);
            }
        });
    }
    {
        let app = Arc::clone(app);
        socket.on("presence", move |_: Socket, mut event: Event| {
            let answer = match channel_arg(&event) {
                Ok(channel) => match app.node.presence(&channel) {
                    Ok(p) => json!({ "channel": channel.as_str(), "presence": p }),
                    Err(e) => fail(e.code(), e),
                },
                Err(e) => e,
            };
            let _ = event.ack(&answer);
            async {}
        });
    }
    {
        let app = Arc::clone(app);
        socket.on("history", move |_: Socket, mut event: Event| {
            let app = Arc::clone(&app);
            async move {
                let answer = match channel_arg(&event) {
                    Ok(channel) => {
                        let limit = arg_json(&event)
                            .get("limit")
                            .and_then(Value::as_u64)
                            .unwrap_or(100)
                            .min(1000);
                        match app.node.history_of(&channel, limit as usize).await {
                            Ok((items, pos)) => json!({
                                "channel": channel.as_str(), "offset": pos.offset,
                                "epoch": pos.epoch, "publications": items,
                            }),
                            Err(e) => fail(e.code(), e),
                        }
                    }
                    Err(e) => e,
                };
                let _ = event.ack(&answer);
            }
        });
    }
    {
        let (app, sub) = (Arc::clone(app), Arc::clone(sub));
        socket.on_disconnect(move |_: Socket, _| {
            let channels = sub.cursors.drain();
            for channel in channels {
                app.node
                    .unsubscribe(&channel, identity.as_ref().as_ref(), &sub.id);
            }
            async {}
        });
    }
}

async fn subscribe(
    app: &App,
    sub: &Arc<SioSubscriber>,
    identity: Option<&Identity>,
    event: &Event,
) -> (Value, Vec<Arc<Delivery>>) {
    let channel = match channel_arg(event) {
        Ok(c) => c,
        Err(e) => return (e, Vec::new()),
    };
    let since: Option<StreamPosition> = match arg_json(event).get("since") {
        None | Some(Value::Null) => None,
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(p) => Some(p),
            Err(e) => return (fail("bad_request", format!("since: {e}")), Vec::new()),
        },
    };
    let cursor = sub.cursors.start(&channel);
    let subscriber: Arc<dyn Subscriber> = Arc::clone(sub) as Arc<dyn Subscriber>;
    match app
        .node
        .subscribe(&channel, identity, subscriber, since.as_ref())
        .await
    {
        Ok(s) => {
            let answer = json!({
                "channel": channel.as_str(),
                "offset": s.position.offset,
                "epoch": s.position.epoch,
                "recovered": s.recovered,
                "publications": s.missed,
            });
            (answer, cursor.finish(s.position.offset))
        }
        Err(e) => {
            sub.cursors.remove(&channel);
            (fail(e.code(), e), Vec::new())
        }
    }
}
