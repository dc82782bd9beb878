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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use switchboard::protocol::socketio::{self, Args, Encoded};
use switchboard::{ConnectError, DisconnectReason, Event, Socket, SocketIo};

use crate::app::App;
use crate::auth::Identity;
use crate::channel::ChannelName;
use crate::config::LimitsConfig;
use crate::history::StreamPosition;
use crate::hub::{CloseReason, Cursor, Cursors, Delivery, Signal, Subscriber, Wire};
use crate::limits::{Limiter, MessageRate, Permit, Rate};
use crate::node::{Publisher, Reader};

/// The Socket.IO server with the limits applied: the packet size, the
/// send queue, and a handshake check (rate per IP and capacity; refused
/// with HTTP 403 and the reason as message, as Engine.IO does).
pub fn build(
    limits: &LimitsConfig,
    limiter: Arc<Limiter>,
    metrics: Arc<crate::metrics::Metrics>,
) -> SocketIo {
    let mut config = switchboard::SocketIoConfig::default();
    config.engine.max_payload = limits.max_message_size;
    config.engine.max_queued_bytes = limits.max_queued_bytes;
    config.engine.allow_request = Some(Arc::new(move |parts: &http::request::Parts| {
        let ip = parts
            .extensions
            .get::<switchboard::RemoteAddr>()
            .map(|a| a.0.ip());
        limiter
            .handshake(ip)
            .and_then(|()| limiter.check(ip))
            .map_err(|why| {
                metrics.refusal(why.code());
                switchboard::engine::Refusal::new(why.code())
            })
    }));
    SocketIo::builder().config(config).build()
}

fn encode_publication(d: &Delivery) -> Vec<u8> {
    socketio::encode_event("/", "publication", &d.body(), Args::One, None)
        .map(|e| e.text.to_vec())
        .unwrap_or_default()
}

struct SioSubscriber {
    id: String,
    socket: Socket,
    cursors: Cursors,
    app: Arc<App>,
    rate: Mutex<MessageRate>,
}

impl SioSubscriber {
    fn send(&self, text: crate::hub::Encoded) -> bool {
        self.app
            .node
            .metrics()
            .message_out(Wire::SocketIo, text.len());
        let packet = Encoded {
            text,
            attachments: Vec::new(),
        };
        self.socket.emit_encoded(&packet).is_ok()
    }

    fn push(&self, d: &Delivery) -> bool {
        let ok = self.send(d.encoded(Wire::SocketIo, encode_publication));
        if ok {
            // Queued to the transport: as far as this protocol's delivery
            // is observed.
            self.app
                .node
                .metrics()
                .delivery_latency(d.published.elapsed());
        }
        ok
    }

    /// Counts a client request against the rate limit: `Err` holds the
    /// answer when it is refused (and the connection is closed on abuse).
    fn admit(&self, event: &Event) -> Result<(), Value> {
        let bytes = event
            .args()
            .first()
            .and_then(|a| serde_json::to_string(a).ok())
            .map_or(0, |s| s.len());
        let metrics = self.app.node.metrics();
        metrics.message_in(Wire::SocketIo, bytes);
        let verdict = self.rate.lock().unwrap_or_else(|e| e.into_inner()).check();
        match verdict {
            Rate::Allowed => Ok(()),
            Rate::Refused => Err(fail(
                metrics,
                "rate_limited",
                "too many messages; slow down",
            )),
            Rate::Abuse => {
                tracing::warn!(conn = %self.id, "rate limit exceeded for too long: disconnecting");
                metrics.refusal("rate_abuse");
                self.socket.disconnect();
                Err(fail(
                    metrics,
                    "rate_limited",
                    "rate limit exceeded; disconnected",
                ))
            }
        }
    }
}

impl Subscriber for SioSubscriber {
    fn id(&self) -> &str {
        &self.id
    }

    fn deliver(&self, d: &Arc<Delivery>) -> bool {
        self.push(d)
    }

    fn signal(&self, s: &Arc<Signal>) -> bool {
        self.send(s.encoded(Wire::SocketIo, |s| {
            socketio::encode_event("/", s.kind.as_str(), &s.body(), Args::One, None)
                .map(|e| e.text.to_vec())
                .unwrap_or_default()
        }))
    }

    fn close(&self, reason: CloseReason) {
        match reason {
            // `SocketIo::close` ends every session at shutdown without a
            // namespace disconnect, so clients reconnect (elsewhere).
            CloseReason::Shutdown => {}
            // A namespace disconnect: official clients do not reconnect.
            CloseReason::Disconnected => self.socket.disconnect(),
        }
    }

    fn transport(&self) -> &'static str {
        self.socket.transport()
    }
}

/// An error answer `{error: {code, message}}` (counted as a refusal).
fn fail(metrics: &crate::metrics::Metrics, code: &str, message: impl std::fmt::Display) -> Value {
    metrics.refusal(code);
    json!({ "error": { "code": code, "message": message.to_string() } })
}

fn channel_arg(app: &App, event: &Event) -> Result<ChannelName, Value> {
    let metrics = app.node.metrics();
    let name = event
        .args()
        .first()
        .and_then(|a| a.get("channel"))
        .and_then(switchboard::Value::as_str)
        .ok_or_else(|| fail(metrics, "bad_request", "channel is required"))?;
    ChannelName::parse(name).map_err(|e| fail(metrics, "bad_request", e))
}

fn arg_json(event: &Event) -> Value {
    event
        .args()
        .first()
        .cloned()
        .and_then(|v| switchboard::from_value::<Value>(v).ok())
        .unwrap_or(Value::Null)
}

/// Places of sockets that passed the middleware and are connecting.
type Permits = Arc<Mutex<HashMap<switchboard::Sid, Permit>>>;

/// Registers the vocabulary on `io`'s main namespace.
pub fn mount(io: &SocketIo, app: &Arc<App>) {
    let auth_app = Arc::clone(app);
    let permits: Permits = Arc::default();
    let mw_permits = Arc::clone(&permits);
    let ns = io.ns("/");
    ns.use_middleware(move |socket: Socket| {
        let app = Arc::clone(&auth_app);
        let permits = Arc::clone(&mw_permits);
        async move {
            let token = socket
                .handshake()
                .auth()
                .get("token")
                .and_then(switchboard::Value::as_str)
                .map(str::to_owned);
            if let Some(token) = token {
                let identity = app.verifier.verify(&token).map_err(|e| {
                    app.node.metrics().refusal(e.code());
                    ConnectError::new(e.to_string())
                        .with_data(switchboard::Value::from(json!({ "code": e.code() })))
                })?;
                let _ = socket.set_data(&Some(identity));
            }
            let ip = socket.handshake().address().map(|a| a.ip());
            // The Engine.IO handshake already counted against the rate.
            let permit = app.admit_handshaken(ip).map_err(|why| {
                app.node.metrics().refusal(why.code());
                ConnectError::new(why.to_string())
                    .with_data(switchboard::Value::from(json!({ "code": why.code() })))
            })?;
            let sid = socket.id();
            permits
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(sid, permit);
            // The connection handler takes the permit at once; a socket the
            // library discards after this middleware (its session closed,
            // its CONNECT answer could not be queued) never gets there, and
            // its permit must not stay counted.
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                permits
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&sid);
            });
            Ok(())
        }
    });
    let conn_app = Arc::clone(app);
    ns.on_connection(move |socket: Socket| {
        let app = Arc::clone(&conn_app);
        let permits = Arc::clone(&permits);
        async move {
            let identity: Option<Identity> = socket.data().ok().flatten();
            let permit = permits
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&socket.id());
            let sub = Arc::new(SioSubscriber {
                id: format!("sio-{}", socket.id()),
                socket: socket.clone(),
                cursors: Cursors::default(),
                rate: Mutex::new(MessageRate::new(app.limits())),
                app: Arc::clone(&app),
            });
            app.node.hub().connect(
                Arc::clone(&sub) as Arc<dyn Subscriber>,
                Wire::SocketIo,
                identity.as_ref().map(|i| i.user.clone()),
            );
            app.node.metrics().connection_opened(Wire::SocketIo);
            register(&socket, &app, &sub, identity, permit);
        }
    });
}

/// The events the gateway answers (the others are counted and refused).
const VOCABULARY: [&str; 5] = ["subscribe", "unsubscribe", "publish", "presence", "history"];

fn register(
    socket: &Socket,
    app: &Arc<App>,
    sub: &Arc<SioSubscriber>,
    identity: Option<Identity>,
    permit: Option<Permit>,
) {
    let identity = Arc::new(identity);
    {
        let (app, sub, identity) = (Arc::clone(app), Arc::clone(sub), Arc::clone(&identity));
        socket.on("subscribe", move |_: Socket, mut event: Event| {
            let (app, sub, identity) = (Arc::clone(&app), Arc::clone(&sub), Arc::clone(&identity));
            async move {
                if let Err(refusal) = sub.admit(&event) {
                    let _ = event.ack(&refusal);
                    return;
                }
                let (answer, resumed) =
                    subscribe(&app, &sub, identity.as_ref().as_ref(), &event).await;
                let _ = event.ack(&answer);
                // Publications that arrived while subscribing follow the ack
                // (the cursor held them until now), then the live ones.
                if let Some((cursor, last_sent)) = resumed {
                    cursor.finish(last_sent, |d| {
                        sub.push(d);
                    });
                }
            }
        });
    }
    {
        let (app, sub, identity) = (Arc::clone(app), Arc::clone(sub), Arc::clone(&identity));
        socket.on("unsubscribe", move |_: Socket, mut event: Event| {
            let answer = match sub.admit(&event).and_then(|()| channel_arg(&app, &event)) {
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
                let answer = match sub.admit(&event).and_then(|()| channel_arg(&app, &event)) {
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
                            Err(e) => fail(app.node.metrics(), e.code(), e),
                        }
                    }
                    Err(e) => e,
                };
                let _ = event.ack(&answer);
            }
        });
    }
    {
        let (app, sub, identity) = (Arc::clone(app), Arc::clone(sub), Arc::clone(&identity));
        socket.on("presence", move |_: Socket, mut event: Event| {
            let answer = match sub.admit(&event).and_then(|()| channel_arg(&app, &event)) {
                Ok(channel) => match app
                    .node
                    .presence(&channel, Reader::Client(identity.as_ref().as_ref()))
                {
                    Ok(p) => json!({ "channel": channel.as_str(), "presence": p }),
                    Err(e) => fail(app.node.metrics(), e.code(), e),
                },
                Err(e) => e,
            };
            let _ = event.ack(&answer);
            async {}
        });
    }
    {
        let (app, sub, identity) = (Arc::clone(app), Arc::clone(sub), Arc::clone(&identity));
        socket.on("history", move |_: Socket, mut event: Event| {
            let (app, sub, identity) = (Arc::clone(&app), Arc::clone(&sub), Arc::clone(&identity));
            async move {
                let answer = match sub.admit(&event).and_then(|()| channel_arg(&app, &event)) {
                    Ok(channel) => {
                        let limit = arg_json(&event)
                            .get("limit")
                            .and_then(Value::as_u64)
                            .unwrap_or(100)
                            .min(1000);
                        let reader = Reader::Client(identity.as_ref().as_ref());
                        match app.node.history_of(&channel, limit as usize, reader).await {
                            Ok((items, pos)) => json!({
                                "channel": channel.as_str(), "offset": pos.offset,
                                "epoch": pos.epoch, "publications": items,
                            }),
                            Err(e) => fail(app.node.metrics(), e.code(), e),
                        }
                    }
                    Err(e) => e,
                };
                let _ = event.ack(&answer);
            }
        });
    }
    {
        // Events outside the vocabulary count against the message rate like
        // any other (a flood of made-up events ends in `rate_limited` and an
        // abuse close), and an ack they ask for gets `bad_request`.
        let (app, sub) = (Arc::clone(app), Arc::clone(sub));
        socket.on_any(move |_: Socket, mut event: Event| {
            if !VOCABULARY.contains(&event.name()) {
                let answer = match sub.admit(&event) {
                    Ok(()) if event.wants_ack() => Some(fail(
                        app.node.metrics(),
                        "bad_request",
                        format_args!("unknown event {:?}", event.name()),
                    )),
                    Ok(()) => None,
                    Err(refusal) => Some(refusal),
                };
                if let Some(answer) = answer {
                    let _ = event.ack(&answer);
                }
            }
            async {}
        });
    }
    {
        let (app, sub) = (Arc::clone(app), Arc::clone(sub));
        let permit = Mutex::new(permit);
        socket.on_disconnect(move |_: Socket, reason| {
            if reason == DisconnectReason::SlowConsumer {
                tracing::warn!(conn = %sub.id, "slow consumer: disconnected");
                app.node.metrics().slow_consumer(Wire::SocketIo);
            }
            let channels = sub.cursors.drain();
            for channel in channels {
                app.node
                    .unsubscribe(&channel, identity.as_ref().as_ref(), &sub.id);
            }
            app.node.hub().disconnect(&sub.id);
            drop(permit.lock().unwrap_or_else(|e| e.into_inner()).take());
            async {}
        });
    }
}

async fn subscribe(
    app: &App,
    sub: &Arc<SioSubscriber>,
    identity: Option<&Identity>,
    event: &Event,
) -> (Value, Option<(Arc<Cursor>, u64)>) {
    let metrics = app.node.metrics();
    let channel = match channel_arg(app, event) {
        Ok(c) => c,
        Err(e) => return (e, None),
    };
    let max = app.limits().max_subscriptions;
    if !sub.cursors.contains(&channel) && sub.cursors.len() >= max {
        let message = format!("at most {max} subscriptions per connection");
        return (fail(metrics, "too_many_subscriptions", message), None);
    }
    let since: Option<StreamPosition> = match arg_json(event).get("since") {
        None | Some(Value::Null) => None,
        Some(v) => match serde_json::from_value(v.clone()) {
            Ok(p) => Some(p),
            Err(e) => {
                return (fail(metrics, "bad_request", format!("since: {e}")), None);
            }
        },
    };
    let cursor = sub.cursors.start(&channel);
    let subscriber: Arc<dyn Subscriber> = Arc::clone(sub) as Arc<dyn Subscriber>;
    match app
        .node
        .subscribe_resuming(
            &channel,
            identity,
            subscriber,
            Some(Arc::clone(&cursor)),
            since.as_ref(),
        )
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
            (answer, Some((cursor, s.position.offset)))
        }
        Err(e) => {
            sub.cursors.remove(&channel);
            (fail(metrics, e.code(), e), None)
        }
    }
}
