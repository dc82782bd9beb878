//! The application: shared state and the HTTP router of the server.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;

use crate::auth::Verifier;
use crate::config::Config;
use crate::gateway;
use crate::node::Node;

/// Everything the gateways share.
pub struct App {
    /// Channels, history, presence and the hub.
    pub node: Node,
    /// Token verification.
    pub verifier: Verifier,
    /// How long a plain WebSocket client has to authenticate.
    pub auth_timeout: Duration,
    /// Largest accepted WebSocket message.
    pub max_message: usize,
    /// The Socket.IO server (its vocabulary is mounted by [`App::router`]).
    pub io: switchboard::SocketIo,
}

impl App {
    /// The application for a configuration.
    pub fn new(config: Config) -> anyhow::Result<Arc<App>> {
        let verifier = Verifier::new(&config.auth)?;
        let node = Node::new(Arc::new(config))?;
        Ok(Arc::new(App {
            node,
            verifier,
            auth_timeout: Duration::from_secs(10),
            max_message: 64 * 1024,
            io: switchboard::SocketIo::builder().build(),
        }))
    }

    /// The HTTP routes, with Socket.IO mounted at `/socket.io/`.
    pub fn router(self: &Arc<Self>) -> Router {
        gateway::socketio::mount(&self.io, self);
        Router::new()
            .route("/ws", get(gateway::ws::handler))
            .route("/events", get(gateway::sse::handler))
            .with_state(Arc::clone(self))
            .layer(self.io.layer())
    }
}
