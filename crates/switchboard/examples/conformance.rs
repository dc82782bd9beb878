//! The server the official protocol test suites expect, on 127.0.0.1:3000
//! (env `PORT` overrides): a raw Engine.IO echo on `/engine.io/` and the
//! Socket.IO handlers on `/socket.io/`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use switchboard::engine::service::NotFound;
use switchboard::engine::{
    CloseReason, Cors, Engine, EngineConfig, EngineHandler, EngineLayer, Session,
};
use switchboard::protocol::engine::Frame;
use switchboard::{Event, Socket, SocketIo, SocketIoConfig};
use tower_layer::Layer;

#[path = "common/serve.rs"]
mod serve;

/// Echoes every message back unchanged.
struct Echo;

impl EngineHandler for Echo {
    type Data = ();
    fn new_session_data(&self) {}
    fn on_open(&self, _: &Arc<Session<Self>>) {}
    fn on_message(&self, session: &Arc<Session<Self>>, text: Bytes) {
        let _ = session.send(Frame::message(&text));
    }
    fn on_binary(&self, session: &Arc<Session<Self>>, data: Bytes) {
        let _ = session.send(Frame::Binary(data));
    }
    fn on_close(&self, _: &Arc<Session<Self>>, _: CloseReason) {}
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let config = EngineConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        max_payload: 1_000_000,
        cors: Some(Cors::any()),
        ..EngineConfig::default()
    };
    let engine = Engine::new(config.clone(), Echo);

    let io = SocketIo::builder()
        .config(SocketIoConfig {
            engine: EngineConfig {
                path: "/socket.io/".into(),
                ..config
            },
            connect_timeout: Duration::from_millis(1000),
            ..SocketIoConfig::default()
        })
        .build();
    io.on_connection("/", |socket: Socket| async move {
        let _ = socket.emit("auth", socket.handshake().auth());
        socket.on("message", |socket: Socket, mut event: Event| async move {
            let _ = socket.emit_many("message-back", &event.take_args());
        });
        socket.on(
            "message-with-ack",
            |_: Socket, mut event: Event| async move {
                let args = event.take_args();
                let _ = event.ack_many(&args);
            },
        );
    });
    io.on_connection("/custom", |socket: Socket| async move {
        let _ = socket.emit("auth", socket.handshake().auth());
    });

    let service = io.layer().layer(EngineLayer::new(engine).layer(NotFound));

    serve::serve(service, serve::port(3000)).await
}
