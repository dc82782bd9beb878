//! Entry points shared by the fuzz targets (`fuzz/`) and the corpus replay
//! tests (`tests/fuzz_corpus.rs`): each takes the bytes a client or an
//! operator could supply, runs them through the server's real code, and
//! checks the invariants that hold for what is accepted (it panics when one
//! does not). Not a stable API.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::app::App;
use crate::auth::{AuthError, Verifier};
use crate::channel::{ChannelName, HistoryStorage, Policy, PublishRule, SubscribeRule};
use crate::config::{AuthConfig, Config, Sources};
use crate::hub::{CloseReason, Delivery, Signal, Subscriber, Wire};
use crate::session::{Command, Reply, Session};
use crate::wire::{json, sse};

/// The HS256 key the fuzzing verifier and application are configured with
/// (seed tokens are signed with it).
pub const SECRET: &str = "switchboard-fuzzing-secret-32-bytes!";

/// The authentication configuration the targets use: HS256 with
/// [`SECRET`], as a server configured with `auth.secret` runs.
fn auth_config() -> AuthConfig {
    AuthConfig {
        secret: Some(SECRET.into()),
        dev_login: Some(false),
        ..AuthConfig::default()
    }
}

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| Verifier::new(&auth_config()).expect("the fuzzing key is valid"))
}

/// A token, as every transport hands it to the verifier (`auth` command,
/// Socket.IO auth, SSE `?token=`): the first byte chooses how the rest is
/// used. `0`: the rest is the token as sent. Otherwise the rest is a JWT
/// payload (claims JSON, any bytes) signed here with [`SECRET`], so the
/// claim checks behind the signature are reached too.
pub fn jwt(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let v = verifier();
    if mode == 0 {
        let Ok(token) = std::str::from_utf8(rest) else {
            return;
        };
        let first = v.verify(token);
        assert_eq!(first, v.verify(token), "verification is not deterministic");
        if let Ok(identity) = first {
            assert!(!identity.user.is_empty());
        }
        return;
    }
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let message = format!("{header}.{}", URL_SAFE_NO_PAD.encode(rest));
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
            .expect("HS256 signs");
    let token = format!("{message}.{signature}");
    match v.verify(&token) {
        Ok(identity) => {
            // Only a JSON object whose `sub` is a non-empty string passes,
            // and the identity is what its claims say.
            let claims: serde_json::Map<String, Value> =
                serde_json::from_slice(rest).expect("accepted claims are a JSON object");
            assert_eq!(
                claims.get("sub").and_then(Value::as_str),
                Some(identity.user.as_str())
            );
            assert_eq!(
                identity.expires_at,
                claims.get("exp").and_then(Value::as_u64)
            );
        }
        // Properly signed with the configured algorithm: never refused for
        // its signature or its algorithm.
        Err(e) => assert!(
            !matches!(
                e,
                AuthError::BadSignature | AuthError::WrongAlgorithm | AuthError::Missing
            ),
            "a valid signature was refused: {e:?}"
        ),
    }
}

/// An SSE `Last-Event-ID` header: read as the gateway reads it (a header
/// value that is visible ASCII), parsed into positions, which format back
/// to an id that parses to the same positions.
pub fn sse_last_event_id(data: &[u8]) {
    let Ok(header) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let Ok(text) = header.to_str() else {
        return;
    };
    // A stream of a few channels (a compact id applies to the stream's
    // channels only).
    let stream: Vec<ChannelName> = ["chat:a", "chat:b", "user:x"]
        .iter()
        .map(|c| ChannelName::parse(c).expect("valid names"))
        .collect();
    let positions = sse::parse_id(text, &stream);
    let channels: Vec<ChannelName> = positions.keys().cloned().collect();
    let id = sse::format_id(&positions);
    assert_eq!(
        sse::parse_id(&id, &channels),
        positions,
        "id {id:?} does not read back"
    );
    assert!(positions.len() <= text.split(',').count().max(stream.len()));
}

/// The configuration file: TOML parsed over the defaults, then validated.
/// An accepted configuration written back as TOML loads to the same.
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sources = |text: String| Sources {
        file: Some((PathBuf::from("fuzz.toml"), text)),
        ..Sources::default()
    };
    let Ok(config) = Config::load(&sources(text.to_owned())) else {
        return;
    };
    let written = toml::to_string(&config).expect("an accepted configuration serializes");
    let again = Config::load(&sources(written.clone()))
        .unwrap_or_else(|e| panic!("written configuration refused: {e:?}\n{written}"));
    assert_eq!(again, config);
}

/// What the fuzzing connection's deliveries go to: nowhere.
struct Sink;

impl Subscriber for Sink {
    fn id(&self) -> &str {
        "fuzz"
    }
    fn deliver(&self, _: &Arc<Delivery>) -> bool {
        true
    }
    fn signal(&self, _: &Arc<Signal>) -> bool {
        true
    }
    fn close(&self, _: CloseReason) {}
    fn transport(&self) -> &'static str {
        "websocket"
    }
}

/// The application the `/ws` target talks to: HS256 with [`SECRET`], the
/// default channel namespaces with memory history.
fn app() -> &'static (tokio::runtime::Runtime, Arc<App>) {
    static APP: OnceLock<(tokio::runtime::Runtime, Arc<App>)> = OnceLock::new();
    APP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let mut config = Config {
            auth: auth_config(),
            ..Config::default()
        };
        config.server.data_dir = std::env::temp_dir().join("switchboard-fuzz");
        for policy in config.channels.values_mut() {
            policy.history_storage = HistoryStorage::Memory;
        }
        config.channels.insert(
            "open".into(),
            Policy {
                subscribe: SubscribeRule::Anyone,
                publish: PublishRule::Subscribers,
                history_size: 10,
                presence: true,
                join_leave: true,
                ..Policy::default()
            },
        );
        let app = {
            let _guard = rt.enter();
            App::new(config).expect("the fuzzing configuration is valid")
        };
        (rt, app)
    })
}

/// Text messages of one `/ws` connection, one per line: each is parsed as
/// the gateway parses it, and a request is handled by a real session of a
/// real application (the gateway's mapping of request types to commands),
/// in order, so `auth` then `subscribe`, `message`, `history`... are
/// reached. Every answer is one JSON object carrying the request's id.
pub fn ws_commands(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (rt, app) = app();
    let me: Arc<dyn Subscriber> = Arc::new(Sink);
    app.node.hub().connect(Arc::clone(&me), Wire::Json, None);
    let session = Session::pending(Arc::clone(app), "fuzz".into(), Wire::Json);
    for line in text.lines().take(16) {
        let request = match json::parse(line) {
            Ok(r) => r,
            Err(json::JsonError::InvalidJson) => {
                assert!(serde_json::from_str::<Value>(line).is_err());
                continue;
            }
            Err(json::JsonError::BadRequest(_)) => continue,
        };
        let command = match request.kind {
            json::ClientType::Auth => Command::Auth,
            json::ClientType::Ping => Command::Ping,
            json::ClientType::Subscribe => Command::Subscribe,
            json::ClientType::Unsubscribe => Command::Unsubscribe,
            json::ClientType::Message => Command::Publish,
            json::ClientType::Presence => Command::Presence,
            json::ClientType::History => Command::History,
        };
        let id = request.id.clone();
        let answer = match rt.block_on(session.handle(&me, command, &request.payload)) {
            Ok(Reply::Answer(answer)) => json::ack(id.clone(), answer),
            Ok(Reply::Subscribed {
                answer,
                cursor,
                offset,
            }) => {
                cursor.finish(offset, |_| {});
                json::ack(id.clone(), answer)
            }
            Err(refusal) => json::error(id.clone(), refusal.code, &refusal.message),
        };
        let answer: Value = serde_json::from_str(&answer).expect("answers are JSON");
        assert_eq!(answer.get("id").cloned(), id.filter(|v| !v.is_null()));
    }
    session.close();
}
