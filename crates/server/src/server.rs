//! The listener: accepts TCP connections (with TLS when configured),
//! serves HTTP/1.1 with upgrades, tags each request with the peer's
//! address, and shuts down gracefully.
//!
//! Shutdown, in order: stop accepting; mark the server not ready; ask every
//! client to go (Socket.IO `disconnect`, WebSocket close 1001, SSE stream
//! end), each after what is already queued for it; let HTTP connections
//! finish their current request; wait for all of it up to the shutdown
//! timeout; flush the database.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::app::App;
use crate::config::LimitsConfig;
use crate::gateway::control::ConnectionControl;
use crate::hub::CloseReason;
use crate::limits::Limiter;
use crate::router::router;

/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS acceptor from PEM certificate chain and key files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("server.tls_cert: cannot read {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("server.tls_cert: no certificate in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("server.tls_key: cannot read {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("server.tls_key does not match server.tls_cert")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down
/// gracefully (see the module's documentation).
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let router = router(&app);
    let tcp_limiter = tcp_limiter(app.limits());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Every TCP connection holds a place, whatever it carries (an HTTP
        // request, a polling request, a WebSocket, a stream): one address
        // cannot pin more sockets than its clients could need.
        let place = match tcp_limiter.admit(Some(peer.ip())) {
            Ok(place) => place,
            Err(why) => {
                tracing::debug!(%peer, reason = why.code(), "TCP connection refused");
                app.node.metrics().refusal("too_many_http_connections");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (router, tls, mut stop_rx, open) = (
            router.clone(),
            tls.clone(),
            stop_rx.clone(),
            Arc::clone(&open),
        );
        open.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            match tls {
                None => serve_connection(tcp, peer, router, &mut stop_rx).await,
                Some(tls) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, router, &mut stop_rx).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
            open.fetch_sub(1, Ordering::AcqRel);
            drop(place);
        });
    }
    drop(listener);
    let timeout = Duration::from_secs(app.node.config().server.shutdown_timeout_secs);
    tracing::info!(
        ?timeout,
        "shutting down: telling clients to reconnect elsewhere"
    );
    app.begin_shutdown();
    let told = app
        .node
        .hub()
        .close_connections(None, CloseReason::Shutdown);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + timeout;
    app.io.close(timeout).await;
    while tokio::time::Instant::now() < deadline
        && (open.load(Ordering::Acquire) > 0
            || app.node.hub().connection_counts().iter().sum::<usize>() > 0)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = app.node.hub().connection_counts().iter().sum::<usize>();
    if let Err(e) = app.node.flush() {
        tracing::error!(error = %e, "flushing the database failed");
    }
    tracing::info!(told, left, "shut down");
}

/// The limits on TCP connections: twice the client connections overall and
/// per address, plus 16 (a long-polling client uses two at once; API
/// calls, health probes and the web page come on top).
fn tcp_limiter(limits: &LimitsConfig) -> Arc<Limiter> {
    Limiter::new(LimitsConfig {
        max_connections: limits.max_connections.saturating_mul(2).saturating_add(16),
        max_connections_per_ip: limits
            .max_connections_per_ip
            .saturating_mul(2)
            .saturating_add(16),
        ..limits.clone()
    })
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    router: axum::Router,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let control = ConnectionControl::default();
    let abort = control.clone();
    let service =
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(switchboard::RemoteAddr(peer));
            req.extensions_mut().insert(control.clone());
            router.clone().oneshot(req.map(axum::body::Body::new))
        });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    if *stop.borrow() {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = abort.aborted() => {
                tracing::debug!(%peer, "connection aborted by the server");
                return;
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                    return;
                }
            }
        }
    }
}
