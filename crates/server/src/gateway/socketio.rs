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
//! - `auth` `{token}` → `{user, name}` (a refreshed token, same user);
//! - errors answer `{error: {code, message}}`;
//! - any other event counts against the message rate and, if it asks for
//!   an ack, is answered `bad_request`.
//!
//! The commands are handled by the connection's [`Session`]; this module
//! only turns events into commands and answers into acks.
//! - publications arrive as the event `publication` `{channel, offset,
//!   epoch, data, from}`.

use std::sync::Arc;

use serde_json::{Value, json};
use switchboard::protocol::socketio::{self, Args, Encoded};
use switchboard::{ConnectError, DisconnectReason, Event, Socket, SocketIo};

use crate::app::App;
use crate::auth::{AuthError, Identity};
use crate::hub::{CloseReason, Delivery, Signal, Subscriber, Wire};
use crate::session::{Admission, Command, Refusal, Reply, Session};

fn encode_publication(d: &Delivery) -> Vec<u8> {
    socketio::encode_event("/", "publication", &d.body(), Args::One, None)
        .map(|e| e.text.to_vec())
        .unwrap_or_default()
}

struct SioSubscriber {
    socket: Socket,
    app: Arc<App>,
    session: Session,
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
        self.socket.emit_encoded(packet).is_ok()
    }

    fn push(&self, d: &Delivery) -> bool {
        let ok = self.send(d.encoded(Wire::SocketIo, encode_publication));
        if ok && d.sampled() {
            // Queued to the transport: as far as this protocol's delivery
            // is observed.
            self.app
                .node
                .metrics()
                .delivery_latency(d.published.elapsed());
        }
        ok
    }
}

impl Subscriber for SioSubscriber {
    fn id(&self) -> &str {
        self.session.id()
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

/// The error answer of a refusal: `{error: {code, message}}`.
fn error(refusal: &Refusal) -> Value {
    json!({ "error": { "code": refusal.code, "message": refusal.message } })
}

/// The event's first argument as JSON (`null` if none).
fn arg_json(event: &Event) -> Value {
    event
        .args()
        .first()
        .cloned()
        .and_then(|v| switchboard::from_value::<Value>(v).ok())
        .unwrap_or(Value::Null)
}

/// Registers the vocabulary on `io`'s main namespace.
pub(crate) fn mount(io: &SocketIo, app: &Arc<App>) {
    let auth_app = Arc::clone(app);
    let ns = io.ns("/");
    ns.use_middleware(move |socket: Socket| {
        let app = Arc::clone(&auth_app);
        async move {
            let refuse = |e: AuthError| {
                app.node.metrics().refusal(e.code());
                ConnectError::new(e.to_string())
                    .with_data(switchboard::Value::from(json!({ "code": e.code() })))
            };
            // No token (absent or null) connects anonymously; a token that
            // is not a string is refused, never taken as no token.
            let token = match socket.handshake().auth().get("token") {
                None | Some(switchboard::Value::Null) => None,
                Some(switchboard::Value::String(t)) => Some(t.clone()),
                Some(_) => return Err(refuse(AuthError::Malformed)),
            };
            if let Some(token) = token {
                let identity = app.verifier.verify(&token).map_err(refuse)?;
                let _ = socket.set_data(&Some(identity));
            }
            // The connection's place under the limits was taken at its
            // Engine.IO handshake (`app.rs`) and is held by its session.
            Ok(())
        }
    });
    let conn_app = Arc::clone(app);
    ns.on_connection(move |socket: Socket| {
        let app = Arc::clone(&conn_app);
        async move {
            let identity: Option<Identity> = socket.data().ok().flatten();
            let user = identity.as_ref().map(|i| i.user.clone());
            let session = Session::authenticated(
                Arc::clone(&app),
                format!("sio-{}", socket.id()),
                Wire::SocketIo,
                identity,
            );
            let sub = Arc::new(SioSubscriber {
                socket: socket.clone(),
                app: Arc::clone(&app),
                session,
            });
            app.node.hub().connect(
                Arc::clone(&sub) as Arc<dyn Subscriber>,
                Wire::SocketIo,
                user,
            );
            app.node.metrics().connection_opened(Wire::SocketIo);
            register(&socket, &app, &sub);
        }
    });
}

fn register(socket: &Socket, app: &Arc<App>, sub: &Arc<SioSubscriber>) {
    {
        // Every event counts against the message rate; those of the
        // vocabulary are the session's commands, the others are answered
        // `bad_request` when they ask for an ack.
        let sub = Arc::clone(sub);
        socket.on_any(move |_: Socket, event: Event| {
            let sub = Arc::clone(&sub);
            async move { sub.on_event(event).await }
        });
    }
    {
        let (app, sub) = (Arc::clone(app), Arc::clone(sub));
        socket.on_disconnect(move |_: Socket, reason| {
            if reason == DisconnectReason::SlowConsumer {
                tracing::warn!(conn = %sub.session.id(), "slow consumer: disconnected");
                app.node.metrics().slow_consumer(Wire::SocketIo);
            }
            sub.session.close();
            async {}
        });
    }
}

impl SioSubscriber {
    /// Answers one event: the session handles it, this only translates.
    async fn on_event(self: Arc<Self>, mut event: Event) {
        let args = arg_json(&event);
        let bytes = if args.is_null() {
            0
        } else {
            args.to_string().len()
        };
        match self.session.admit(bytes) {
            Admission::Allowed => {}
            Admission::Refused(refusal) => {
                let _ = event.ack(&error(&refusal));
                return;
            }
            Admission::Abuse(refusal) => {
                let _ = event.ack(&error(&refusal));
                self.socket.disconnect();
                return;
            }
        }
        let Some(command) = Command::from_event(event.name()) else {
            if event.wants_ack() {
                let refusal = self
                    .session
                    .refuse("bad_request", format!("unknown event {:?}", event.name()));
                let _ = event.ack(&error(&refusal));
            }
            return;
        };
        let me = Arc::clone(&self) as Arc<dyn Subscriber>;
        match self.session.handle(&me, command, &args).await {
            Ok(Reply::Answer(answer)) => {
                let _ = event.ack(&answer);
            }
            Ok(Reply::Subscribed {
                answer,
                cursor,
                offset,
            }) => {
                let _ = event.ack(&answer);
                // Publications that arrived while subscribing follow the
                // ack (the cursor held them until now), then the live ones.
                cursor.finish(offset, |d| {
                    self.push(d);
                });
            }
            Err(refusal) => {
                let _ = event.ack(&error(&refusal));
            }
        }
    }
}
