//! The application: the state every gateway shares (the node, token
//! verification, admission, the Socket.IO server, the API key).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Verifier;
use crate::config::{Config, LimitsConfig};
use crate::limits::{Limiter, Permit, Refused};
use crate::node::Node;

/// Everything the gateways share.
pub struct App {
    /// Channels, history, presence and the hub.
    pub node: Node,
    /// Token verification.
    pub verifier: Verifier,
    /// How long a plain WebSocket client has to authenticate.
    pub auth_timeout: Duration,
    /// Connection admission and rates.
    pub(crate) limiter: Arc<Limiter>,
    /// The Socket.IO server (its vocabulary is mounted by
    /// the router, `router.rs`).
    pub io: switchboard::SocketIo,
    /// The key of the HTTP API: `api.key`, or with the development login
    /// a random one made at start (logged); `None` disables the API.
    pub api_key: Option<String>,
}

impl App {
    /// The application for a configuration.
    pub fn new(config: Config) -> anyhow::Result<Arc<App>> {
        let verifier = if config.auth.dev_login_enabled() {
            let secret = dev_secret(&config.server.data_dir, "dev-secret")?;
            Verifier::with_dev_secret(&config.auth, secret.as_bytes())?
        } else {
            Verifier::new(&config.auth)?
        };
        let api_key = match (&config.api.key, verifier.dev_login()) {
            (Some(key), _) => Some(key.clone()),
            (None, true) => Some(dev_secret(&config.server.data_dir, "dev-api-key")?),
            (None, false) => None,
        };
        let limiter = Limiter::new(config.limits.clone());
        let auth_timeout = Duration::from_secs(config.server.auth_timeout_secs);
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let io = socketio_server(&config.limits, Arc::clone(&limiter), Arc::clone(&metrics));
        let node = Node::with_metrics(Arc::new(config), metrics)?;
        Ok(Arc::new(App {
            node,
            verifier,
            auth_timeout,
            limiter,
            io,
            api_key,
        }))
    }

    /// The limits.
    pub fn limits(&self) -> &LimitsConfig {
        self.limiter.config()
    }

    /// Admits a new client connection from `ip` (rate of handshakes,
    /// connection counts, shutdown), or says why not.
    pub(crate) fn admit(&self, ip: Option<IpAddr>) -> Result<Permit, Refused> {
        if !self.is_ready() {
            return Err(Refused::ShuttingDown);
        }
        self.limiter.handshake(ip)?;
        self.limiter.admit(ip)
    }

    /// Open client connections (all protocols), as admission counts them.
    pub fn connection_count(&self) -> usize {
        self.limiter.connections()
    }

    /// Whether the server accepts connections (false once shutdown began).
    pub fn is_ready(&self) -> bool {
        self.limiter.is_open()
    }

    /// Marks the server as shutting down: `/readyz` fails, new connections
    /// are refused.
    pub fn begin_shutdown(&self) {
        self.limiter.close();
    }
}

/// A random value kept in `<data_dir>/<name>` (made on first use, readable
/// by the owner only), so development tokens and the development API key
/// survive a restart.
fn dev_secret(data_dir: &std::path::Path, name: &str) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let path = data_dir.join(name);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if existing.len() >= 32 {
            return Ok(existing.to_owned());
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).expect("the OS random source is unavailable");
    let value: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut file, value.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(value)
}

/// The Socket.IO server with the limits applied: the packet size, the
/// send queue, and admission at the Engine.IO handshake (rate per IP,
/// capacity, shutdown; refused with HTTP 403 and the reason as message, as
/// Engine.IO does). The session holds its place until it closes, whether
/// or not it ever connects a namespace.
fn socketio_server(
    limits: &LimitsConfig,
    limiter: Arc<Limiter>,
    metrics: Arc<crate::metrics::Metrics>,
) -> switchboard::SocketIo {
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
            .and_then(|()| limiter.admit(ip))
            .map(|permit| Some(Box::new(permit) as switchboard::engine::SessionGuard))
            .map_err(|why| {
                metrics.refusal(why.code());
                switchboard::engine::Refusal::new(why.code())
            })
    }));
    switchboard::SocketIo::builder().config(config).build()
}
