//! The client session: the one place where a connection's commands are
//! handled, whatever its protocol.
//!
//! A session owns what a connection is allowed and what it holds: its
//! identity (and the token's refresh), its subscriptions with their resume
//! cursors, its message rate and its subscription cap. Every command a
//! client sends (`auth`, `subscribe` with `since`, `unsubscribe`,
//! `publish`, `presence`, `history`, `ping`) goes through
//! [`Session::handle`], which answers a [`Reply`] or a [`Refusal`] with a
//! stable code (docs/protocol.md lists them). The checks run in one order
//! for every protocol:
//!
//! 1. the message rate ([`Session::admit`], for every frame the client
//!    sends, known command or not);
//! 2. authentication (before `auth`, only `auth` and `ping` are accepted on
//!    protocols that require it);
//! 3. the arguments: `channel`, then `since` / `limit` / `data`;
//! 4. the subscription cap;
//! 5. the node's rules: the channel's namespace, the token's expiry, the
//!    channel policy and the token's channels, the payload size.
//!
//! The gateways only translate: a frame of their protocol into a
//! [`Command`] and its JSON arguments, a reply or a refusal into their
//! answer shape, and deliveries into their frames (centrifuge's
//! Client/Transport split).

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;
use serde_json::Value;

use crate::app::App;
use crate::auth::Identity;
use crate::channel::ChannelName;
use crate::history::{Publication, StreamPosition};
use crate::hub::{Cursor, Cursors, Subscriber, Wire};
use crate::limits::{MessageRate, Rate};
use crate::node::{NodeError, Publisher, Reader};
use crate::presence::PresenceEntry;

/// A client command, whatever the protocol that carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// `{token}`: authenticate, or refresh the token (same user).
    Auth,
    /// Keep-alive.
    Ping,
    /// `{channel, since?: {offset, epoch}}`.
    Subscribe,
    /// `{channel}`.
    Unsubscribe,
    /// `{channel, data}`.
    Publish,
    /// `{channel}`: who is present.
    Presence,
    /// `{channel, limit?}`: the last publications.
    History,
}

impl Command {
    /// The command of a Socket.IO event name (the vocabulary).
    pub(crate) fn from_event(name: &str) -> Option<Command> {
        Some(match name {
            "auth" => Command::Auth,
            "subscribe" => Command::Subscribe,
            "unsubscribe" => Command::Unsubscribe,
            "publish" => Command::Publish,
            "presence" => Command::Presence,
            "history" => Command::History,
            _ => return None,
        })
    }
}

/// A refused command: a stable code and a readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The stable code (`bad_request`, `forbidden`, `rate_limited`, ...).
    pub(crate) code: &'static str,
    /// What went wrong, for people.
    pub(crate) message: String,
}

impl From<NodeError> for Refusal {
    fn from(e: NodeError) -> Self {
        Refusal {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// What a command answers.
pub(crate) enum Reply {
    /// The answer's body.
    Answer(Value),
    /// A subscription's answer; the gateway sends it, then finishes the
    /// cursor from `offset` (the publications that arrived meanwhile, then
    /// live ones).
    Subscribed {
        answer: Value,
        cursor: Arc<Cursor>,
        offset: u64,
    },
}

/// Whether a frame from the client is within its message rate.
pub(crate) enum Admission {
    /// Go on.
    Allowed,
    /// Answer this refusal (`rate_limited`) and drop the frame.
    Refused(Refusal),
    /// Refused for too long: answer if possible, then end the connection.
    Abuse(Refusal),
}

/// The answer to `publish` (also the HTTP API's).
#[derive(Debug, Serialize)]
pub(crate) struct Published<'a> {
    pub(crate) channel: &'a str,
    pub(crate) offset: u64,
    pub(crate) epoch: &'a str,
}

/// The answer to `presence` (also the HTTP API's).
#[derive(Debug, Serialize)]
pub(crate) struct Present<'a> {
    pub(crate) channel: &'a str,
    pub(crate) presence: &'a [PresenceEntry],
}

/// The answer to `history` (also the HTTP API's).
#[derive(Debug, Serialize)]
pub(crate) struct Recent<'a> {
    pub(crate) channel: &'a str,
    pub(crate) offset: u64,
    pub(crate) epoch: &'a str,
    pub(crate) publications: &'a [Publication],
}

/// The answer to `subscribe`.
#[derive(Debug, Serialize)]
struct SubscribedAnswer<'a> {
    channel: &'a str,
    offset: u64,
    epoch: &'a str,
    recovered: bool,
    publications: &'a [Publication],
}

/// The body of an answer.
pub(crate) fn body(answer: &impl Serialize) -> Value {
    serde_json::to_value(answer).unwrap_or(Value::Null)
}

/// Where a session stands with authentication.
enum Auth {
    /// Nothing but `auth` and `ping` until a token is given.
    Pending,
    /// Commands allowed, as this identity (`None`: anonymous).
    As(Option<Arc<Identity>>),
}

/// One client connection's session (see the module documentation).
pub(crate) struct Session {
    id: String,
    app: Arc<App>,
    wire: Wire,
    auth: Mutex<Auth>,
    cursors: Cursors,
    rate: Mutex<MessageRate>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    /// A session that must authenticate before anything else (`/ws`).
    pub(crate) fn pending(app: Arc<App>, id: String, wire: Wire) -> Session {
        Session::with(app, id, wire, Auth::Pending)
    }

    /// A session authenticated at connection time (`None`: anonymous), as
    /// Socket.IO connections are by their handshake's `auth`.
    pub(crate) fn authenticated(
        app: Arc<App>,
        id: String,
        wire: Wire,
        identity: Option<Identity>,
    ) -> Session {
        Session::with(app, id, wire, Auth::As(identity.map(Arc::new)))
    }

    fn with(app: Arc<App>, id: String, wire: Wire, auth: Auth) -> Session {
        Session {
            rate: Mutex::new(MessageRate::new(app.limits())),
            id,
            app,
            wire,
            auth: Mutex::new(auth),
            cursors: Cursors::default(),
        }
    }

    /// The connection's id (as the hub knows it).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Whether commands other than `auth` and `ping` are accepted.
    pub(crate) fn is_authenticated(&self) -> bool {
        matches!(*lock(&self.auth), Auth::As(_))
    }

    /// The identity commands run as (`None`: anonymous or not yet known).
    pub(crate) fn identity(&self) -> Option<Arc<Identity>> {
        match &*lock(&self.auth) {
            Auth::As(i) => i.clone(),
            Auth::Pending => None,
        }
    }

    /// A refusal, counted.
    pub(crate) fn refuse(&self, code: &'static str, message: impl std::fmt::Display) -> Refusal {
        refuse(&self.app, code, message)
    }

    /// Counts one frame from the client (`bytes` long) against the message
    /// rate. Every frame counts, whether or not it is a known command.
    pub(crate) fn admit(&self, bytes: usize) -> Admission {
        let metrics = self.app.node.metrics();
        metrics.message_in(self.wire, bytes);
        let verdict = lock(&self.rate).check();
        match verdict {
            Rate::Allowed => Admission::Allowed,
            Rate::Refused => {
                Admission::Refused(self.refuse("rate_limited", "too many messages; slow down"))
            }
            Rate::Abuse => {
                tracing::warn!(conn = %self.id, "rate limit exceeded for too long: disconnecting");
                // Counted as abuse only (not as one more `rate_limited`).
                metrics.refusal("rate_abuse");
                Admission::Abuse(Refusal {
                    code: "rate_limited",
                    message: "rate limit exceeded; disconnected".into(),
                })
            }
        }
    }

    /// Handles one command with its JSON arguments. `me` is the
    /// connection as the hub delivers to it.
    pub(crate) async fn handle(
        &self,
        me: &Arc<dyn Subscriber>,
        command: Command,
        args: &Value,
    ) -> Result<Reply, Refusal> {
        if !matches!(command, Command::Auth | Command::Ping) && !self.is_authenticated() {
            return Err(self.refuse("unauthenticated", "authenticate first (type auth)"));
        }
        let answer = match command {
            Command::Ping => Value::Null,
            Command::Auth => self.auth(args)?,
            Command::Subscribe => return self.subscribe(me, args).await,
            Command::Unsubscribe => {
                let channel = self.channel(args)?;
                self.cursors.remove(&channel);
                self.app
                    .node
                    .unsubscribe(&channel, self.identity().as_deref(), &self.id);
                serde_json::json!({ "channel": channel.as_str() })
            }
            Command::Publish => {
                let channel = self.channel(args)?;
                let data = args.get("data").cloned().unwrap_or(Value::Null);
                let identity = self.identity();
                let publisher = Publisher::Client {
                    identity: identity.as_deref(),
                    conn: &self.id,
                };
                let (p, epoch) =
                    self.counted(self.app.node.publish(&channel, data, publisher, None).await)?;
                body(&Published {
                    channel: channel.as_str(),
                    offset: p.offset,
                    epoch: &epoch,
                })
            }
            Command::Presence => {
                let channel = self.channel(args)?;
                let identity = self.identity();
                let present = self.counted(
                    self.app
                        .node
                        .presence(&channel, Reader::Client(identity.as_deref())),
                )?;
                body(&Present {
                    channel: channel.as_str(),
                    presence: &present,
                })
            }
            Command::History => {
                let channel = self.channel(args)?;
                let limit = args
                    .get("limit")
                    .and_then(Value::as_u64)
                    .unwrap_or(100)
                    .min(1000);
                let identity = self.identity();
                let reader = Reader::Client(identity.as_deref());
                let (items, pos) = self.counted(
                    self.app
                        .node
                        .history_of(&channel, limit as usize, reader)
                        .await,
                )?;
                body(&Recent {
                    channel: channel.as_str(),
                    offset: pos.offset,
                    epoch: &pos.epoch,
                    publications: &items,
                })
            }
        };
        Ok(Reply::Answer(answer))
    }

    /// Ends the session: leaves every channel and the hub.
    pub(crate) fn close(&self) {
        let identity = self.identity();
        for channel in self.cursors.drain() {
            self.app
                .node
                .unsubscribe(&channel, identity.as_deref(), &self.id);
        }
        self.app.node.hub().disconnect(&self.id);
    }

    fn counted<T>(&self, result: Result<T, NodeError>) -> Result<T, Refusal> {
        result.map_err(|e| self.refuse(e.code(), e))
    }

    fn channel(&self, args: &Value) -> Result<ChannelName, Refusal> {
        let name = args
            .get("channel")
            .and_then(Value::as_str)
            .ok_or_else(|| self.refuse("bad_request", "channel is required"))?;
        ChannelName::parse(name).map_err(|e| self.refuse("bad_request", e))
    }

    fn auth(&self, args: &Value) -> Result<Value, Refusal> {
        let token = args.get("token").and_then(Value::as_str).unwrap_or("");
        let identity = self
            .app
            .verifier
            .verify(token)
            .map_err(|e| self.refuse(e.code(), e))?;
        {
            let mut auth = lock(&self.auth);
            if let Auth::As(Some(current)) = &*auth
                && current.user != identity.user
            {
                let message = format!("already authenticated as {}", current.user);
                drop(auth);
                return Err(self.refuse("bad_request", message));
            }
            *auth = Auth::As(Some(Arc::new(identity.clone())));
        }
        self.app.node.hub().set_user(&self.id, &identity.user);
        // A refreshed token may allow fewer channels.
        for channel in self.cursors.channels() {
            if self
                .app
                .node
                .may_subscribe(&channel, Some(&identity))
                .is_err()
            {
                self.cursors.remove(&channel);
                self.app
                    .node
                    .unsubscribe(&channel, Some(&identity), &self.id);
            }
        }
        Ok(serde_json::json!({ "user": identity.user, "name": identity.name }))
    }

    async fn subscribe(&self, me: &Arc<dyn Subscriber>, args: &Value) -> Result<Reply, Refusal> {
        let channel = self.channel(args)?;
        let since: Option<StreamPosition> = match args.get("since") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value(v.clone())
                    .map_err(|e| self.refuse("bad_request", format!("since: {e}")))?,
            ),
        };
        let max = self.app.limits().max_subscriptions;
        if !self.cursors.contains(&channel) && self.cursors.len() >= max {
            return Err(self.refuse(
                "too_many_subscriptions",
                format!("at most {max} subscriptions per connection"),
            ));
        }
        let cursor = self.cursors.start(&channel);
        let identity = self.identity();
        let subscribed = self
            .app
            .node
            .subscribe_resuming(
                &channel,
                identity.as_deref(),
                Arc::clone(me),
                Some(Arc::clone(&cursor)),
                since.as_ref(),
            )
            .await;
        match subscribed {
            Ok(s) => Ok(Reply::Subscribed {
                answer: body(&SubscribedAnswer {
                    channel: channel.as_str(),
                    offset: s.position.offset,
                    epoch: &s.position.epoch,
                    recovered: s.recovered,
                    publications: &s.missed,
                }),
                cursor,
                offset: s.position.offset,
            }),
            Err(e) => {
                self.cursors.remove(&channel);
                Err(self.refuse(e.code(), e))
            }
        }
    }
}

/// A refusal, counted in the metrics under its code.
fn refuse(app: &App, code: &'static str, message: impl std::fmt::Display) -> Refusal {
    app.node.metrics().refusal(code);
    Refusal {
        code,
        message: message.to_string(),
    }
}

/// The checks of an SSE stream, which subscribes to its channels when it
/// opens (it sends no commands): the session's rules in the session's
/// order. The token (if any), then the channels (at least one, each a
/// valid name; repeats count once), then the cap, then every channel's
/// rules, all before anything is subscribed, so a refused stream leaves no
/// trace. An anonymous stream refused a channel that needs a user gets
/// `token_missing`.
pub(crate) fn open_stream(
    app: &App,
    token: Option<&str>,
    names: &[String],
) -> Result<(Option<Identity>, Vec<ChannelName>), Refusal> {
    let refuse = |code: &'static str, message: String| refuse(app, code, message);
    let identity = match token {
        Some(t) => Some(
            app.verifier
                .verify(t)
                .map_err(|e| refuse(e.code(), e.to_string()))?,
        ),
        None => None,
    };
    if names.is_empty() {
        return Err(refuse(
            "bad_request",
            "at least one channel parameter is required".into(),
        ));
    }
    // Linear in the number of names: repeated ones are dropped through a
    // set, not by searching the list for each.
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    let mut channels: Vec<ChannelName> = Vec::new();
    for name in names {
        let channel =
            ChannelName::parse(name).map_err(|e| refuse("bad_request", format!("{name}: {e}")))?;
        if seen.insert(channel.clone()) {
            channels.push(channel);
        }
    }
    let max = app.limits().max_subscriptions;
    if channels.len() > max {
        return Err(refuse(
            "too_many_subscriptions",
            format!("at most {max} channels per stream"),
        ));
    }
    for channel in &channels {
        if let Err(e) = app.node.may_subscribe(channel, identity.as_ref()) {
            let code = match (&e, &identity) {
                (NodeError::UnknownNamespace, _) | (_, Some(_)) => e.code(),
                (_, None) => crate::auth::AuthError::Missing.code(),
            };
            return Err(refuse(code, format!("{channel}: {e}")));
        }
    }
    Ok((identity, channels))
}
