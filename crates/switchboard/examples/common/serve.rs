//! Serving a tower service with plain hyper: bind 127.0.0.1:$PORT (0 picks
//! a free port), print `listening on <port>`, and serve every connection
//! with WebSocket upgrades enabled, TCP_NODELAY set and the peer address
//! passed to the handshake.

use std::convert::Infallible;
use std::error::Error;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use switchboard::RemoteAddr;
use tower_service::Service;

/// The port from `PORT`, or `default`.
pub(crate) fn port(default: u16) -> u16 {
    std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(default)
}

/// Serves `service` until the process ends.
pub(crate) async fn serve<S, B>(service: S, port: u16) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn Error + Send + Sync>>,
{
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?.port());
    loop {
        let (tcp, addr) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let service = service.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(RemoteAddr(addr));
                service.clone().call(req)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
