//! The `switchboard` server binary: loads the
//! configuration, then serves Socket.IO at `/socket.io/`, the plain
//! WebSocket protocol at `/ws` and Server-Sent Events at `/events`.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use switchboard_server::app::App;
use switchboard_server::config::{Config, LogFormat, Sources};

const OPTIONS: &str = "\
Every configuration key can be set in the TOML file, as an environment
variable SWITCHBOARD_<SECTION>__<KEY>, or with --set section.key=value
(later layers win: defaults < file < environment < flags):

  server.host, server.port, server.data_dir, server.tls_cert,
  server.tls_key, server.shutdown_timeout_secs, server.auth_timeout_secs,
  server.workers
  limits.max_connections, limits.max_connections_per_ip,
  limits.handshakes_per_second_per_ip, limits.handshake_burst,
  limits.messages_per_second, limits.messages_burst,
  limits.abuse_close_after, limits.max_subscriptions,
  limits.max_message_size, limits.max_queued_bytes
  web.enabled, web.dir
  auth.algorithm (HS256|RS256|ES256), auth.secret, auth.public_key_file,
  auth.issuer, auth.audience, auth.name_claim, auth.channels_claim,
  auth.dev_login
  api.key
  log.format (text|json), log.level
  channels.<namespace>.subscribe (anyone|authenticated|owner),
  channels.<namespace>.publish (nobody|subscribers|authenticated),
  channels.<namespace>.history_size, .history_ttl_secs,
  .history_storage (memory|persisted), .presence, .join_leave,
  .max_message_size

See docs/configuration.md for each key's meaning and default.";

/// A real-time server: channels over Socket.IO, plain WebSocket and SSE.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, after_long_help = OPTIONS)]
struct Cli {
    /// A TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on (server.host).
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on (server.port).
    #[arg(long)]
    port: Option<u16>,
    /// Directory of the embedded database (server.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Any configuration key: --set channels.chat.history_size=500.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Check the configuration, print it, and exit.
    #[arg(long)]
    check: bool,
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let file = match &cli.config {
        Some(path) => Some((
            path.clone(),
            std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the configuration file {}", path.display())
            })?,
        )),
        None => None,
    };
    let mut flags = Vec::new();
    if let Some(h) = &cli.host {
        flags.push(("server.host".to_owned(), h.clone()));
    }
    if let Some(p) = cli.port {
        flags.push(("server.port".to_owned(), p.to_string()));
    }
    if let Some(d) = &cli.data_dir {
        flags.push(("server.data_dir".to_owned(), d.display().to_string()));
    }
    for kv in &cli.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv}: expected KEY=VALUE"))?;
        flags.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(Config::load(&Sources {
        file,
        env: std::env::vars().collect(),
        flags,
    })?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = load(&cli)?;
    if cli.check {
        print!(
            "{}",
            toml::to_string(&config).context("cannot print the configuration")?
        );
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .context("log.level is not a valid filter")?;
    match config.log.format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_env_filter(filter)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_writer(std::io::stderr)
            .with_env_filter(filter)
            .init(),
    }
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        n => n,
    };
    // One core: one thread runs everything (the multi-threaded scheduler
    // would add a second thread for the accept loop and cross-thread
    // wake-ups on that one core).
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let addr = (config.server.host.clone(), config.server.port);
    let app = App::new(config)?;
    if app.verifier.dev_login() {
        tracing::warn!(
            "DEVELOPMENT LOGIN IS ON: POST /api/dev/token issues tokens to anyone. \
             Configure auth.secret or auth.public_key_file for real use."
        );
        if app.node.config().api.key.is_none() {
            tracing::warn!(
                api_key = app.api_key.as_deref().unwrap_or(""),
                "development API key for this run (set api.key for a fixed one)"
            );
        }
    }
    let server = &app.node.config().server;
    let tls = match (&server.tls_cert, &server.tls_key) {
        (Some(cert), Some(key)) => Some(switchboard_server::server::tls_acceptor(cert, key)?),
        _ => None,
    };
    let listener = listen(&addr)
        .await
        .with_context(|| format!("cannot listen on {}:{}", addr.0, addr.1))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%local, scheme, "switchboard listening");
    println!("listening on {}", local.port());
    switchboard_server::server::serve(app, listener, tls, shutdown_signal()).await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How many connections the kernel may hold for the server before it
/// accepts them. Tokio's default (128) overflows when a few hundred
/// clients connect at once (reconnection storms, load balancers): the
/// kernel then drops their SYNs and each retries a second later.
const LISTEN_BACKLOG: u32 = 1024;

/// Listens on the first address `addr` resolves to, with
/// [`LISTEN_BACKLOG`].
async fn listen(addr: &(String, u16)) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for resolved in tokio::net::lookup_host((addr.0.as_str(), addr.1)).await? {
        let socket = if resolved.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(resolved)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the address resolves to nothing")))
}
