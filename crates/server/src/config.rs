//! Configuration: defaults < TOML file < `SWITCHBOARD_...` environment <
//! command-line flags.
//!
//! Every layer is merged as a tree of keys, then the result is checked:
//! an unknown key, a wrong type or an invalid value fails with a message
//! that names the key (`channels.chat.history_size: invalid type: ...`).
//! Environment variables name keys with `__` between levels:
//! `SWITCHBOARD_SERVER__PORT=4000`, `SWITCHBOARD_AUTH__SECRET=...`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::channel::{HistoryStorage, Policy, PublishRule, SubscribeRule};

/// The prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";

/// Listening address and storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    pub port: u16,
    /// Directory of the embedded database.
    pub data_dir: PathBuf,
    /// PEM certificate chain: with `tls_key`, the server speaks HTTPS/WSS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// On SIGTERM/SIGINT, how long clients' send queues may take to drain
    /// before the server stops anyway.
    pub shutdown_timeout_secs: u64,
    /// How long a plain WebSocket client has to authenticate.
    pub auth_timeout_secs: u64,
    /// Threads that run connections: `0` one per core the process may use
    /// (its CPU affinity counts); `1` runs everything on one thread.
    pub workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "0.0.0.0".into(),
            port: 3000,
            data_dir: PathBuf::from("./data"),
            tls_cert: None,
            tls_key: None,
            shutdown_timeout_secs: 10,
            auth_timeout_secs: 10,
            workers: 0,
        }
    }
}

/// Limits protecting the server from floods and slow clients. `0`
/// disables a rate limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open client connections (all protocols).
    pub max_connections: usize,
    /// Open client connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Connection attempts per second from one IP address (sustained).
    pub handshakes_per_second_per_ip: u32,
    /// Connection attempts from one IP address allowed in a burst.
    pub handshake_burst: u32,
    /// Messages per second a connection may send (sustained).
    pub messages_per_second: u32,
    /// Messages a connection may send in a burst.
    pub messages_burst: u32,
    /// Refused messages in a row after which the connection is closed.
    pub abuse_close_after: u32,
    /// Channels one connection may be subscribed to.
    pub max_subscriptions: usize,
    /// Largest message a client may send, in bytes (a WebSocket message,
    /// a Socket.IO packet or polling request body).
    pub max_message_size: usize,
    /// Bytes waiting to be written to one client before it is disconnected
    /// as a slow consumer.
    pub max_queued_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            handshakes_per_second_per_ip: 50,
            handshake_burst: 100,
            messages_per_second: 100,
            messages_burst: 200,
            abuse_close_after: 100,
            max_subscriptions: 128,
            max_message_size: 64 * 1024,
            max_queued_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The JWT algorithms accepted (fixed by configuration, never taken from a
/// token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    /// HMAC with SHA-256 and a shared secret.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256 and a public key.
    RS256,
    /// ECDSA P-256 with SHA-256 and a public key.
    ES256,
}

/// Token authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The only algorithm accepted.
    pub algorithm: Algorithm,
    /// The HS256 secret.
    pub secret: Option<String>,
    /// PEM file of the RS256/ES256 public key.
    pub public_key_file: Option<PathBuf>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Claim holding the display name.
    pub name_claim: String,
    /// Claim holding the channels a token allows (optional in tokens).
    pub channels_claim: String,
    /// The development login (`POST /api/dev/token`); `None`: on exactly
    /// when no key is configured.
    pub dev_login: Option<bool>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithm: Algorithm::HS256,
            secret: None,
            public_key_file: None,
            issuer: None,
            audience: None,
            name_claim: "name".into(),
            channels_claim: "channels".into(),
            dev_login: None,
        }
    }
}

impl AuthConfig {
    /// Whether a real key is configured.
    pub fn has_key(&self) -> bool {
        match self.algorithm {
            Algorithm::HS256 => self.secret.is_some(),
            Algorithm::RS256 | Algorithm::ES256 => self.public_key_file.is_some(),
        }
    }

    /// Whether the development login is on: never with a real key.
    pub fn dev_login_enabled(&self) -> bool {
        !self.has_key() && self.dev_login.unwrap_or(true)
    }
}

/// The HTTP API for backends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The key backends send (`Authorization: apikey <key>`).
    pub key: Option<String>,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` (human-readable) or `json`.
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `switchboard=debug`...).
    pub level: String,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// The web chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Whether the web chat is served at `/`.
    pub enabled: bool,
    /// Serve the page's files from this directory instead of the copies
    /// embedded in the binary (for working on the page).
    pub dir: Option<PathBuf>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            enabled: true,
            dir: None,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listening address and storage.
    pub server: ServerConfig,
    /// Token authentication.
    pub auth: AuthConfig,
    /// The HTTP API.
    pub api: ApiConfig,
    /// Logs.
    pub log: LogConfig,
    /// The web chat.
    pub web: WebConfig,
    /// Limits.
    pub limits: LimitsConfig,
    /// Policy of each channel namespace (`chat`, `user`...). A channel whose
    /// namespace is not listed is refused.
    pub channels: BTreeMap<String, Policy>,
}

impl Default for Config {
    fn default() -> Self {
        let mut channels = BTreeMap::new();
        channels.insert(
            "chat".into(),
            Policy {
                subscribe: SubscribeRule::Authenticated,
                publish: PublishRule::Subscribers,
                history_size: 100,
                history_ttl_secs: 0,
                history_storage: HistoryStorage::Persisted,
                presence: true,
                join_leave: true,
                max_message_size: 16 * 1024,
            },
        );
        channels.insert(
            "user".into(),
            Policy {
                subscribe: SubscribeRule::Owner,
                publish: PublishRule::Authenticated,
                history_size: 100,
                // Any user may write to anyone's channel (direct
                // messages): what they write expires, so the store holds
                // at most a week of it per channel.
                history_ttl_secs: 7 * 24 * 3600,
                history_storage: HistoryStorage::Persisted,
                presence: false,
                join_leave: false,
                max_message_size: 16 * 1024,
            },
        );
        channels.insert(
            "notifications".into(),
            Policy {
                subscribe: SubscribeRule::Authenticated,
                publish: PublishRule::Nobody,
                history_size: 50,
                history_ttl_secs: 86_400,
                history_storage: HistoryStorage::Memory,
                presence: false,
                join_leave: false,
                max_message_size: 16 * 1024,
            },
        );
        // Ephemeral signals such as typing indicators: no history.
        channels.insert(
            "typing".into(),
            Policy {
                subscribe: SubscribeRule::Authenticated,
                publish: PublishRule::Subscribers,
                history_size: 0,
                history_ttl_secs: 0,
                history_storage: HistoryStorage::Memory,
                presence: false,
                join_leave: false,
                max_message_size: 1024,
            },
        );
        Config {
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            api: ApiConfig::default(),
            log: LogConfig::default(),
            web: WebConfig::default(),
            limits: LimitsConfig::default(),
            channels,
        }
    }
}

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    /// The key (`server.port`, `channels.chat.history_size`).
    pub key: String,
    /// Why.
    pub reason: String,
}

fn err(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Merges `over` into `base`: objects key by key, anything else replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// Sets `key` (dotted) to `value` inside `tree`.
fn set_path(tree: &mut Value, key: &str, value: Value) {
    let mut over = value;
    for part in key.rsplit('.') {
        let mut obj = serde_json::Map::new();
        obj.insert(part.to_owned(), over);
        over = Value::Object(obj);
    }
    merge(tree, over);
}

/// A value given as text (environment, flags): a number, a boolean, or a
/// string.
fn scalar(text: &str) -> Value {
    if let Ok(n) = text.parse::<u64>() {
        return Value::from(n);
    }
    if let Ok(n) = text.parse::<i64>() {
        return Value::from(n);
    }
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(text.to_owned()),
    }
}

/// The layers of a configuration, lowest first after the defaults.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file's text and its path (for messages).
    pub file: Option<(PathBuf, String)>,
    /// Environment variables (all of them; only `SWITCHBOARD_` ones count).
    pub env: Vec<(String, String)>,
    /// Command-line settings as `key=value` (`server.port=4000`).
    pub flags: Vec<(String, String)>,
}

impl Config {
    /// Builds the configuration from its layers and validates it.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut tree = serde_json::to_value(Config::default()).expect("defaults serialize");
        if let Some((path, text)) = &sources.file {
            let file: Value = toml::from_str(text).map_err(|e| {
                err(
                    path.display().to_string(),
                    e.to_string().trim().replace('\n', " "),
                )
            })?;
            merge(&mut tree, file);
        }
        for (name, value) in &sources.env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            set_path(&mut tree, &key, scalar(value));
        }
        for (key, value) in &sources.flags {
            set_path(&mut tree, key, scalar(value));
        }
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            err(
                if key == "." { "(root)".to_owned() } else { key },
                e.inner().to_string(),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types cannot: ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(secret) = &self.auth.secret
            && secret.len() < 32
        {
            return Err(err("auth.secret", "must be at least 32 bytes long"));
        }
        if self.auth.algorithm != Algorithm::HS256 && self.auth.secret.is_some() {
            return Err(err(
                "auth.secret",
                "is for HS256; RS256 and ES256 take auth.public_key_file",
            ));
        }
        if self.auth.algorithm == Algorithm::HS256 && self.auth.public_key_file.is_some() {
            return Err(err(
                "auth.public_key_file",
                "is for RS256 and ES256; HS256 takes auth.secret",
            ));
        }
        if let Some(path) = &self.auth.public_key_file
            && !path.is_file()
        {
            return Err(err(
                "auth.public_key_file",
                format!("{} is not a readable file", path.display()),
            ));
        }
        if let Some(key) = &self.api.key
            && key.len() < 16
        {
            return Err(err("api.key", "must be at least 16 characters long"));
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(err(
                "server.tls_cert",
                "TLS needs both server.tls_cert and server.tls_key",
            ));
        }
        for (key, path) in [
            ("server.tls_cert", &self.server.tls_cert),
            ("server.tls_key", &self.server.tls_key),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(err(
                    key,
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        if self.server.auth_timeout_secs == 0 {
            return Err(err("server.auth_timeout_secs", "must be greater than 0"));
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.max_connections", l.max_connections),
            ("limits.max_connections_per_ip", l.max_connections_per_ip),
            ("limits.max_subscriptions", l.max_subscriptions),
            ("limits.max_message_size", l.max_message_size),
            ("limits.max_queued_bytes", l.max_queued_bytes),
        ] {
            if value == 0 {
                return Err(err(key, "must be greater than 0"));
            }
        }
        if l.max_queued_bytes < l.max_message_size {
            return Err(err(
                "limits.max_queued_bytes",
                "must be at least limits.max_message_size",
            ));
        }
        if self.log.level.contains(char::is_whitespace) {
            return Err(err("log.level", "a tracing filter has no spaces"));
        }
        for (ns, policy) in &self.channels {
            let key = |field: &str| format!("channels.{ns}.{field}");
            if ns.is_empty()
                || !ns
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                return Err(err(
                    format!("channels.{ns}"),
                    "a namespace is letters, digits, - and _",
                ));
            }
            if policy.max_message_size == 0 {
                return Err(err(key("max_message_size"), "must be greater than 0"));
            }
            if policy.history_size == 0 && policy.history_ttl_secs > 0 {
                return Err(err(key("history_ttl_secs"), "needs history_size > 0"));
            }
            if policy.join_leave && !policy.presence {
                return Err(err(key("join_leave"), "needs presence = true"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        file: Option<&str>,
        env: &[(&str, &str)],
        flags: &[(&str, &str)],
    ) -> Result<Config, ConfigError> {
        Config::load(&Sources {
            file: file.map(|t| (PathBuf::from("switchboard.toml"), t.to_owned())),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            flags: flags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    #[test]
    fn defaults_run_with_no_service_and_the_dev_login() {
        let c = load(None, &[], &[]).unwrap();
        assert_eq!(c.server.port, 3000);
        assert_eq!(c.server.data_dir, PathBuf::from("./data"));
        assert!(c.auth.dev_login_enabled());
        assert!(c.channels.contains_key("chat"));
    }

    #[test]
    fn layers_override_in_order_file_env_flags() {
        let file =
            "[server]\nport = 4000\nhost = \"127.0.0.1\"\n[channels.chat]\nhistory_size = 5\n";
        let c = load(Some(file), &[], &[]).unwrap();
        assert_eq!((c.server.port, c.server.host.as_str()), (4000, "127.0.0.1"));
        assert_eq!(c.channels["chat"].history_size, 5);
        // Other fields of the channel keep their defaults.
        assert!(c.channels["chat"].presence);
        let c = load(
            Some(file),
            &[("SWITCHBOARD_SERVER__PORT", "5000"), ("HOME", "/root")],
            &[],
        )
        .unwrap();
        assert_eq!(c.server.port, 5000);
        let c = load(
            Some(file),
            &[("SWITCHBOARD_SERVER__PORT", "5000")],
            &[("server.port", "6000")],
        )
        .unwrap();
        assert_eq!(c.server.port, 6000);
    }

    #[test]
    fn a_real_key_turns_the_dev_login_off() {
        let secret = "s".repeat(32);
        let c = load(None, &[("SWITCHBOARD_AUTH__SECRET", &secret)], &[]).unwrap();
        assert!(!c.auth.dev_login_enabled());
        let c = load(
            None,
            &[("SWITCHBOARD_AUTH__SECRET", &secret)],
            &[("auth.dev_login", "true")],
        )
        .unwrap();
        assert!(!c.auth.dev_login_enabled(), "never with a real key");
    }

    #[test]
    fn errors_name_the_key_and_the_reason() {
        let e = load(Some("[server]\nport = \"many\"\n"), &[], &[]).unwrap_err();
        assert_eq!(e.key, "server.port");
        assert!(e.reason.contains("invalid type"), "{e}");
        let e = load(Some("[server]\nprot = 1\n"), &[], &[]).unwrap_err();
        assert_eq!(e.key, "server.prot");
        assert!(e.reason.contains("unknown field"), "{e}");
        let e = load(None, &[], &[("server.port", "70000")]).unwrap_err();
        assert_eq!(e.key, "server.port");
        let e = load(None, &[], &[("channels.chat.max_message_size", "0")]).unwrap_err();
        assert_eq!(e.key, "channels.chat.max_message_size");
        let e = load(None, &[("SWITCHBOARD_AUTH__SECRET", "short")], &[]).unwrap_err();
        assert_eq!(e.key, "auth.secret");
        let e = load(
            Some("[channels.chat]\nsubscribe = \"everyone\"\n"),
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key, "channels.chat.subscribe");
        let e = load(
            Some("[channels.x]\npresence = false\njoin_leave = true\n"),
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key, "channels.x.join_leave");
        let e = load(Some("not toml ["), &[], &[]).unwrap_err();
        assert_eq!(e.key, "switchboard.toml");
        assert_eq!(
            e.to_string(),
            format!("invalid configuration: switchboard.toml: {}", e.reason)
        );
    }
}
