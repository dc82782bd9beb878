//! Redis servers of a test's own, for the tests that stop, freeze or
//! restart Redis (the machine's Redis is never touched): [`OwnRedis`], one
//! `redis-server` on a free port, and [`OwnCluster`], a three-master Redis
//! Cluster. Both are killed when dropped.
//!
//! Shared by the integration tests of `switchboard-redis` and of the
//! server, which include this file with `#[path]`.

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Runs `fut`, panicking with `what` if it takes longer than 10 s.
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A name nobody else uses (a folder of one cluster).
fn unique(tag: &str) -> String {
    let mut raw = [0u8; 6];
    getrandom::fill(&mut raw).expect("random");
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    format!("sbtest-{tag}-{hex}")
}

/// A `redis-server` of the test's own (no persistence), on a free port,
/// killed when dropped.
pub(crate) struct OwnRedis {
    pub(crate) port: u16,
    child: Option<Child>,
}

/// A free port below Linux's ephemeral range (32768 and up), so that no
/// outgoing connection takes it while the server is down for a restart.
fn free_port() -> u16 {
    loop {
        let mut raw = [0u8; 2];
        getrandom::fill(&mut raw).expect("random");
        let port = 15_000 + u16::from_le_bytes(raw) % 17_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl OwnRedis {
    /// Starts one and waits until it answers.
    pub(crate) async fn start() -> Self {
        let mut r = OwnRedis {
            port: free_port(),
            child: None,
        };
        // Another process may take the port first: then try another one.
        for _ in 0..5 {
            if r.spawn().await {
                return r;
            }
            r.kill();
            r.port = free_port();
        }
        panic!("could not start a redis-server");
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits until it answers; `false` if it
    /// exited first (its port was taken).
    async fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).expect("url");
        bounded("the test's own redis-server to answer", async {
            loop {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await
                    && redis::cmd("PING")
                        .query_async::<String>(&mut c)
                        .await
                        .is_ok()
                {
                    return true;
                }
                let exited = self
                    .child
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some());
                if exited {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// `kill -9`, and waits until the process is gone.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes it (SIGSTOP): connections stay open, nothing is answered.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws it (SIGCONT).
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Starts it again on the same port (empty: nothing was persisted).
    pub(crate) async fn restart(&mut self) {
        self.kill();
        assert!(self.spawn().await, "redis-server could not restart");
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of the test's own: three masters (no replicas) on free
/// ports, their cluster configuration in a temporary folder so that a
/// master restarted on its port takes its slots back. Killed when dropped.
pub(crate) struct OwnCluster {
    dir: std::path::PathBuf,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl OwnCluster {
    /// Starts three masters, creates the cluster, waits until it is ok.
    pub(crate) async fn start() -> Self {
        let dir = std::env::temp_dir().join(unique("redis-cluster"));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut c = OwnCluster {
            dir,
            ports: Vec::new(),
            children: Vec::new(),
        };
        while c.ports.len() < 3 {
            let port = free_port();
            // The cluster bus listens on port + 10000.
            if port > 55_000 || std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_err() {
                continue;
            }
            c.ports.push(port);
            c.children.push(None);
            let i = c.ports.len() - 1;
            c.spawn(i);
        }
        for i in 0..3 {
            c.wait_answers(i).await;
        }
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(c.ports.iter().map(|p| format!("127.0.0.1:{p}")));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let out = Command::new("redis-cli")
            .args(&args)
            .output()
            .expect("redis-cli must be installed");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        c.wait_ok().await;
        c
    }

    fn spawn(&mut self, i: usize) {
        let port = self.ports[i];
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-node-timeout", "2000"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.children[i] = Some(child);
    }

    async fn wait_answers(&self, i: usize) {
        let client = redis::Client::open(self.node_url(i)).expect("url");
        bounded("a cluster node to answer", async {
            loop {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await
                    && redis::cmd("PING")
                        .query_async::<String>(&mut c)
                        .await
                        .is_ok()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Waits until every node says the cluster is ok.
    pub(crate) async fn wait_ok(&self) {
        for i in 0..self.ports.len() {
            let client = redis::Client::open(self.node_url(i)).expect("url");
            bounded("the cluster to be ok", async {
                loop {
                    if let Ok(mut c) = client.get_multiplexed_async_connection().await
                        && let Ok(info) = redis::cmd("CLUSTER")
                            .arg("INFO")
                            .query_async::<String>(&mut c)
                            .await
                        && info.contains("cluster_state:ok")
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
        }
    }

    /// The URL of node `i`.
    pub(crate) fn node_url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.ports[i])
    }

    /// What [`Node::start`] takes for this cluster.
    pub(crate) fn url(&self) -> String {
        let nodes: Vec<String> = (0..self.ports.len()).map(|i| self.node_url(i)).collect();
        format!("cluster:{}", nodes.join(","))
    }

    /// The node that holds `key`'s (or a sharded channel's) slot.
    pub(crate) async fn node_of(&self, key: &str) -> usize {
        let client = redis::Client::open(self.node_url(0)).expect("url");
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .expect("conn");
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut c)
            .await
            .expect("keyslot");
        let shards: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut c)
            .await
            .expect("slots");
        let redis::Value::Array(ranges) = shards else {
            panic!("CLUSTER SLOTS")
        };
        for r in ranges {
            let redis::Value::Array(parts) = r else {
                continue;
            };
            let (
                Some(redis::Value::Int(lo)),
                Some(redis::Value::Int(hi)),
                Some(redis::Value::Array(master)),
            ) = (parts.first(), parts.get(1), parts.get(2))
            else {
                continue;
            };
            if (*lo..=*hi).contains(&slot)
                && let Some(redis::Value::Int(port)) = master.get(1)
            {
                return self
                    .ports
                    .iter()
                    .position(|p| i64::from(*p) == *port)
                    .expect("a node of ours");
            }
        }
        panic!("no node holds slot {slot}");
    }

    /// `kill -9` of node `i`.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts node `i` on its port (it takes its slots back, empty).
    pub(crate) async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_answers(i).await;
        self.wait_ok().await;
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
