//! Serving Switchboard with plain hyper 1, no framework.
//!
//! `cargo run -p switchboard --example hyper`: Socket.IO on
//! `http://127.0.0.1:3000/socket.io/`, 404 elsewhere.

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchboard::{Event, RemoteAddr, Socket, SocketIo};
use tower_service::Service;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let io = SocketIo::builder().build();
    io.on_connection("/", |socket: Socket| async move {
        let peer = socket.handshake().address();
        let _ = socket.emit("hello", &format!("you connect from {peer:?}"));
        socket.on("echo", |_: Socket, mut event: Event| async move {
            let args = event.take_args();
            let _ = event.ack_many(&args);
        });
    });
    // Socket.IO on its path, 404 for everything else.
    let service = io.service();

    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000u16);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?.port());
    loop {
        let (tcp, addr) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let service = service.clone();
        tokio::spawn(async move {
            // Hand the peer address to the handshake.
            let with_addr = service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(RemoteAddr(addr));
                service.clone().call(req)
            });
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), with_addr)
                // WebSocket upgrades need the connection handed over.
                .with_upgrades();
            if let Err(e) = conn.await {
                eprintln!("connection error: {e}");
            }
        });
    }
}
