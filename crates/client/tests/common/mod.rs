//! Test helpers: the Node socket.io server and event collection.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value as Json, json};
use switchboard_client::Reconnection;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
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

pub fn target_dir() -> PathBuf {
    // tests run from target/<profile>/deps/
    let exe = std::env::current_exe().expect("test executable");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .to_path_buf()
}

pub fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SWITCHBOARD_BIN") {
        return PathBuf::from(p);
    }
    let p = target_dir().join("switchboard");
    assert!(
        p.exists(),
        "{} missing: run `cargo build -p switchboard-server` first (or set SWITCHBOARD_BIN)",
        p.display()
    );
    p
}

pub struct Server {
    pub child: Child,
    pub port: u16,
}

impl Server {
    pub async fn start(port: u16, data_dir: &std::path::Path, extra: &[&str]) -> Server {
        let mut child = Command::new(server_bin())
            .arg("--set")
            .arg(format!("server.port={port}"))
            .arg("--set")
            .arg("server.host=127.0.0.1")
            .arg("--set")
            .arg(format!("server.data_dir={}", data_dir.display()))
            .arg("--set")
            .arg("channels.chat.history_size=5000")
            .args(extra.iter().flat_map(|e| ["--set", e]))
            .env("SWITCHBOARD_LOG__LEVEL", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the switchboard binary");
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(p) = line.trim().strip_prefix("listening on ") {
                    return p.trim().parse::<u16>().expect("port");
                }
            }
            panic!("switchboard exited before listening");
        })
        .await
        .expect("switchboard starts");
        // Keep reading stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Server { child, port }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub async fn dev_token(&self, user: &str) -> String {
        let body = json!({"user": user, "name": user}).to_string();
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("connect");
        let req = format!(
            "POST /api/dev/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(req.as_bytes()).await.expect("write");
        let mut resp = String::new();
        tcp.read_to_string(&mut resp).await.expect("read");
        let json_start = resp.find("\r\n\r\n").expect("head") + 4;
        let v: Json = serde_json::from_str(resp[json_start..].trim()).expect("token JSON");
        v["token"].as_str().expect("token").to_owned()
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "switchboard-client-{name}-{}-{}",
        std::process::id(),
        getrandom_suffix()
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn getrandom_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
