//! Mounting Switchboard in an axum 0.8 application.
//!
//! `cargo run -p switchboard --example axum`, then connect any Socket.IO
//! client to `http://127.0.0.1:3000` and emit `message`: the server answers
//! `message-back` and broadcasts `chat` to everyone else. `GET /` is an
//! ordinary axum route.

use axum::Router;
use axum::routing::get;
use axum::serve::{Listener, ListenerExt};
use switchboard::{Event, Socket, SocketIo};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let io = SocketIo::builder().build();
    io.on_connection("/", |socket: Socket| async move {
        socket.on("message", |socket: Socket, mut event: Event| async move {
            let args = event.take_args();
            let _ = socket.emit_many("message-back", &args);
            let _ = socket.broadcast().emit_many("chat", &args).await;
        });
    });

    let app = Router::new()
        .route(
            "/",
            get(|| async { "Hello from axum; Socket.IO is at /socket.io/" }),
        )
        .layer(io.layer());

    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000u16);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await?
        // Small frames must not wait for Nagle's algorithm.
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    println!("listening on {}", listener.local_addr()?.port());
    axum::serve(listener, app).await
}
