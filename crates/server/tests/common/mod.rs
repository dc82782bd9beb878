//! Shared by the server's integration tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use switchboard_server::app::App;
use switchboard_server::config::Config;

/// A fresh directory path under the system's temporary directory.
pub(crate) fn temp_dir(prefix: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "switchboard-{prefix}-{}-{nanos}",
        std::process::id()
    ))
}

/// The default configuration with its data under a fresh directory.
pub(crate) fn config(prefix: &str) -> Config {
    let mut config = Config::default();
    config.server.data_dir = temp_dir(prefix);
    config
}

/// Serves the application on 127.0.0.1 (a free port) with the server's
/// own listener, until the test ends.
pub(crate) async fn serve(app: &Arc<App>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::clone(app);
    tokio::spawn(switchboard_server::server::serve(
        app,
        listener,
        None,
        std::future::pending(),
    ));
    addr
}
