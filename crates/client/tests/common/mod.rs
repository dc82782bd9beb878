//! Test helpers: the Node socket.io server and event collection.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use switchboard_client::Reconnection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Generous bound for anything a test waits for (never asserted as a time).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A running `node tests/node/server.js`.
pub struct NodeServer {
    pub child: Child,
    pub port: u16,
}

impl NodeServer {
    /// Starts the server on `port` (0: any) and waits for its port.
    pub async fn start(port: u16) -> NodeServer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node/server.js");
        let mut child = Command::new("node")
            .arg(script)
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node is installed (run `npm ci --prefix crates/client/tests/node`)");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = lines.next_line().await.expect("read node stdout") {
                if let Some(p) = line.strip_prefix("listening on ") {
                    return p.trim().parse::<u16>().expect("port");
                }
            }
            panic!("node server exited before listening");
        })
        .await
        .expect("node server starts");
        NodeServer { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the process and waits for it to exit.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Fast reconnection for tests.
pub fn fast_reconnection() -> Reconnection {
    Reconnection {
        delay: Duration::from_millis(50),
        delay_max: Duration::from_millis(300),
        ..Reconnection::default()
    }
}

/// Receives the next item, failing the test if none comes before the deadline.
pub async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("an item before the deadline")
        .expect("channel open")
}

/// Polls `f` until it is true (deadline: [`DEADLINE`]).
pub async fn wait_until(mut f: impl FnMut() -> bool) {
    tokio::time::timeout(DEADLINE, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition before the deadline");
}
