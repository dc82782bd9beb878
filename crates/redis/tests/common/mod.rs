//! Harness shared by the integration tests of `switchboard-redis`:
//!
//! - [`Node`]: one in-process Socket.IO server (its own `SocketIo`, its own
//!   `RedisAdapterFactory`), served with hyper on `127.0.0.1:0`, with the
//!   handlers the tests drive (join/leave with acks, server-side events,
//!   counters of middlewares and disconnect handlers).
//! - [`Client`]: a raw Socket.IO client over WebSocket (tokio-websockets)
//!   whose frames are read by a task of its own (it answers pings and,
//!   when told, acknowledgements).
//! - [`Keys`]: a random prefix per test and the deletion of the keys made
//!   under it; [`OwnRedis`]: a `redis-server` of the test's own, on a free
//!   port, that can be killed (-9) and restarted.
//!
//! Every wait is bounded by [`WAIT`].

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use switchboard::{
    ConnectError, DisconnectReason, Event, RemoteAddr, ServerEvent, Socket, SocketIo,
    SocketIoBuilder, Value,
};
use switchboard_redis::{RedisAdapter, RedisAdapterFactory, SubscriptionMode};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};
use tower_service::Service;

#[path = "../../../../tests/support/redis_servers.rs"]
mod redis_servers;
#[allow(unused_imports)] // each test binary uses some of them
pub(crate) use redis_servers::{OwnCluster, OwnRedis};

/// Upper bound of any single wait.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Runs `fut`, panicking with `what` if it takes longer than [`WAIT`].
pub(crate) async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `cond` every 10 ms until it holds (bounded by [`WAIT`]).
pub(crate) async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    bounded(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Polls an async condition every 20 ms until it holds (bounded by
/// [`WAIT`]).
pub(crate) async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    bounded(what, async {
        while !cond().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// One item from a channel (bounded by [`WAIT`]).
pub(crate) async fn recv<T>(what: &str, rx: &mut UnboundedReceiver<T>) -> T {
    bounded(what, rx.recv())
        .await
        .unwrap_or_else(|| panic!("channel closed while waiting for {what}"))
}

// ---------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------

/// The shared Redis of the machine (never flushed, never stopped).
pub(crate) fn redis_url() -> String {
    std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned())
}

/// A random prefix: channels and keys of one test.
pub(crate) fn unique(tag: &str) -> String {
    let mut raw = [0u8; 6];
    getrandom::fill(&mut raw).expect("random");
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    format!("sbtest-{tag}-{hex}")
}

/// A plain connection for what the tests do to Redis themselves.
pub(crate) async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("redis url");
    // Big messages on a busy machine: more than the client's default 500 ms.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(WAIT));
    bounded(
        "a raw redis connection",
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .expect("connect to redis")
}

/// Deletes the keys under a prefix when dropped (also when the test
/// fails): the stream and the sessions a test made. Nothing else is ever
/// deleted.
pub(crate) struct Keys {
    url: String,
    prefix: String,
}

impl Keys {
    pub(crate) fn new(url: &str, prefix: &str) -> Self {
        Keys {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let pattern = format!("{}*", self.prefix);
        let keys: Vec<String> = match redis::Commands::scan_match::<_, String>(&mut con, &pattern) {
            Ok(it) => it.filter_map(Result::ok).collect(),
            Err(_) => return,
        };
        for key in keys {
            debug_assert!(key.starts_with(&self.prefix));
            let _: Result<i64, _> = redis::cmd("DEL").arg(&key).query(&mut con);
        }
    }
}

// ---------------------------------------------------------------------------
// Modes and nodes
// ---------------------------------------------------------------------------

/// The adapter modes under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Classic,
    ShardedDynamic,
    ShardedStatic,
    Streams,
}

impl Kind {
    /// The adapter of this mode, every channel and key under `prefix`.
    pub(crate) fn adapter(self, prefix: &str) -> RedisAdapter {
        match self {
            Kind::Classic => RedisAdapter::classic().prefix(prefix),
            Kind::ShardedDynamic => RedisAdapter::sharded()
                .prefix(prefix)
                .subscription_mode(SubscriptionMode::Dynamic),
            Kind::ShardedStatic => RedisAdapter::sharded()
                .prefix(prefix)
                .subscription_mode(SubscriptionMode::Static),
            Kind::Streams => RedisAdapter::streams()
                .prefix(prefix)
                .stream_name(prefix)
                .session_prefix(session_prefix(prefix)),
        }
    }
}

/// The key prefix of the sessions of a streams-mode test.
pub(crate) fn session_prefix(prefix: &str) -> String {
    format!("{prefix}:session:")
}

/// Counts of `disconnecting` and `disconnect` handler runs, by socket id.
pub(crate) type HandlerRuns = Arc<Mutex<HashMap<String, (usize, usize)>>>;

/// One node.
pub(crate) struct Node {
    pub(crate) name: String,
    pub(crate) io: SocketIo,
    pub(crate) factory: RedisAdapterFactory,
    pub(crate) addr: SocketAddr,
    /// Sockets as they connect (recovered ones too).
    pub(crate) sockets: UnboundedReceiver<Socket>,
    /// `(sid, reason)` of each `disconnect`.
    pub(crate) left: UnboundedReceiver<(String, DisconnectReason)>,
    /// Arguments of each server-side `relay` event received.
    pub(crate) relayed: UnboundedReceiver<Vec<Value>>,
    pub(crate) middleware_runs: Arc<AtomicUsize>,
    pub(crate) handler_runs: HandlerRuns,
    server: Server,
}

/// How to build a node.
pub(crate) struct NodeOptions {
    pub(crate) name: String,
    /// Whether the node answers the server-side event `ping-node`.
    pub(crate) answers_pings: bool,
    /// Adjusts the server before it is built (recovery, heartbeat).
    pub(crate) builder: Box<dyn FnOnce(SocketIoBuilder) -> SocketIoBuilder + Send>,
}

impl NodeOptions {
    pub(crate) fn named(name: impl Into<String>) -> Self {
        NodeOptions {
            name: name.into(),
            answers_pings: true,
            builder: Box::new(|b| b),
        }
    }

    pub(crate) fn silent(mut self) -> Self {
        self.answers_pings = false;
        self
    }

    pub(crate) fn builder(
        mut self,
        f: impl FnOnce(SocketIoBuilder) -> SocketIoBuilder + Send + 'static,
    ) -> Self {
        self.builder = Box::new(f);
        self
    }
}

impl Node {
    /// Connects `adapter` to `url` and starts a node on it; returns once
    /// its subscriptions are confirmed.
    pub(crate) async fn start(adapter: RedisAdapter, url: &str, opts: NodeOptions) -> Node {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_test_writer()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .try_init();
        }
        // `cluster:<url>,<url>...` names the nodes of a Redis Cluster.
        let factory = match url.strip_prefix("cluster:") {
            Some(nodes) => {
                let nodes: Vec<&str> = nodes.split(',').collect();
                bounded("the adapter to connect", adapter.connect_cluster(&nodes)).await
            }
            None => bounded("the adapter to connect", adapter.connect(url)).await,
        }
        .expect("connect the adapter");
        let builder = (opts.builder)(SocketIo::builder()).adapter(factory.clone());
        let io = builder.build();
        let (sock_tx, sockets) = mpsc::unbounded_channel();
        let (left_tx, left) = mpsc::unbounded_channel();
        let (relay_tx, relayed) = mpsc::unbounded_channel();
        let middleware_runs = Arc::new(AtomicUsize::new(0));
        let handler_runs: HandlerRuns = Arc::default();
        let ns = io.ns("/");
        {
            let runs = Arc::clone(&middleware_runs);
            ns.use_middleware(move |socket: Socket| {
                runs.fetch_add(1, Ordering::SeqCst);
                async move {
                    if socket.handshake().auth().get("deny").is_some() {
                        return Err(ConnectError::new("denied"));
                    }
                    Ok(())
                }
            });
        }
        ns.on("join", |socket: Socket, mut event: Event| async move {
            let room: String = event.arg(0).unwrap_or_default();
            socket.join([room]);
            // Acked once this node receives the room's broadcasts (sharded
            // dynamic: the room's channel is subscribed).
            let _ = socket.namespace().adapter().ready().await;
            let _ = event.ack("ok");
        });
        ns.on("leave", |socket: Socket, mut event: Event| async move {
            let room: String = event.arg(0).unwrap_or_default();
            socket.leave(&room);
            let _ = event.ack("ok");
        });
        ns.on("set-data", |socket: Socket, mut event: Event| async move {
            let data: serde_json::Value = event.arg(0).unwrap_or_default();
            socket.set_data(&data).expect("data");
            let _ = event.ack("ok");
        });
        {
            let runs = Arc::clone(&handler_runs);
            ns.on_connection(move |socket: Socket| {
                let sock_tx = sock_tx.clone();
                let left_tx = left_tx.clone();
                let runs = Arc::clone(&runs);
                async move {
                    let r = Arc::clone(&runs);
                    socket.on_disconnecting(move |s: Socket, _| {
                        let r = Arc::clone(&r);
                        async move {
                            let mut g = r.lock().unwrap();
                            g.entry(s.id().to_string()).or_default().0 += 1;
                        }
                    });
                    socket.on_disconnect(move |s: Socket, reason| {
                        let left_tx = left_tx.clone();
                        let r = Arc::clone(&runs);
                        async move {
                            r.lock().unwrap().entry(s.id().to_string()).or_default().1 += 1;
                            let _ = left_tx.send((s.id().to_string(), reason));
                        }
                    });
                    let _ = sock_tx.send(socket);
                }
            });
        }
        ns.on_server_event("relay", move |mut e: ServerEvent| {
            let _ = relay_tx.send(e.take_args());
            async {}
        });
        if opts.answers_pings {
            let name = opts.name.clone();
            ns.on_server_event("ping-node", move |mut e: ServerEvent| {
                let _ = e.ack(&name);
                async {}
            });
            ns.on_server_event("echo", |mut e: ServerEvent| {
                let first = e.args().first().cloned().unwrap_or_default();
                let _ = e.ack(&first);
                async {}
            });
        }
        let server = serve(io.clone()).await;
        bounded("the adapter to be ready", factory.ready())
            .await
            .expect("adapter ready");
        Node {
            name: opts.name,
            addr: server.addr,
            io,
            factory,
            sockets,
            left,
            relayed,
            middleware_runs,
            handler_runs,
            server,
        }
    }

    /// A client of this node (no query, no auth).
    pub(crate) async fn client(&self) -> Client {
        Client::connect(self.addr, "", None)
            .await
            .expect("connected")
    }

    /// The next socket that connected here.
    pub(crate) async fn socket(&mut self) -> Socket {
        recv(&format!("a socket on {}", self.name), &mut self.sockets).await
    }

    /// Waits until what the adapter asked of Redis is in effect.
    pub(crate) async fn ready(&self) {
        bounded("adapter ready", self.io.ns("/").adapter().ready())
            .await
            .expect("adapter ready");
    }

    /// Stops the node as a server process would stop: sockets leave with
    /// "server shutting down", connections close, the adapter
    /// unsubscribes; then it stops accepting.
    pub(crate) async fn shutdown(self) {
        self.io.close(Duration::from_millis(500)).await;
        self.server.stop();
    }
}

/// The HTTP side of a node.
struct Server {
    addr: SocketAddr,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Server {
    fn stop(&self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Serves `io` with hyper (as the `cluster` example does) on a fresh
/// `127.0.0.1:0` listener.
async fn serve(io: SocketIo) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
    let conns2 = Arc::clone(&conns);
    let service = io.service();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let service = service.clone();
            let task = tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(RemoteAddr(peer));
                    let mut service = service.clone();
                    async move {
                        Ok::<_, Infallible>(service.call(req).await.unwrap_or_else(|e| match e {}))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
            });
            let mut c = conns2.lock().unwrap();
            c.retain(|h| !h.is_finished());
            c.push(task.abort_handle());
        }
    });
    Server {
        addr,
        accept,
        conns,
    }
}

/// Starts `n` nodes of one mode on `url`, named `node0`...; returns once
/// every node counts `n` servers.
pub(crate) async fn cluster(
    kind: Kind,
    url: &str,
    prefix: &str,
    n: usize,
    tweak: impl Fn(RedisAdapter) -> RedisAdapter,
) -> Vec<Node> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(
            Node::start(
                tweak(kind.adapter(prefix)),
                url,
                NodeOptions::named(format!("node{i}")),
            )
            .await,
        );
    }
    for node in &nodes {
        expect_server_count(node, n).await;
    }
    nodes
}

/// Waits until `node` counts `n` servers.
pub(crate) async fn expect_server_count(node: &Node, n: usize) {
    eventually(&format!("{} to count {n} servers", node.name), || async {
        node.io.server_count().await.ok() == Some(n)
    })
    .await;
}

// ---------------------------------------------------------------------------
// Socket.IO client
// ---------------------------------------------------------------------------

/// An event received: `42[...]`, or `45n-[...]` and its attachments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ev {
    pub(crate) name: String,
    /// The arguments after the name (placeholders left in place).
    pub(crate) args: Vec<serde_json::Value>,
    pub(crate) attachments: Vec<Vec<u8>>,
    /// The ack id, when an answer is asked for.
    pub(crate) ack: Option<u64>,
    /// The text frame as received.
    pub(crate) text: String,
}

impl Ev {
    /// The last argument as a string: the offset of connection state
    /// recovery.
    pub(crate) fn offset(&self) -> String {
        self.args
            .last()
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("no offset in {}", self.text))
            .to_owned()
    }
}

/// What the client's reader saw.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum In {
    Event(Ev),
    /// `43<id>[...]`.
    Ack(u64, Vec<serde_json::Value>),
    /// `41`: the server disconnected the socket.
    Disconnect,
    /// The connection closed.
    Closed,
}

/// Parses `4<2|3|5|6>[attachments-][id][json]` of namespace `/`.
fn parse(text: &str) -> Option<(char, usize, Option<u64>, serde_json::Value)> {
    let mut rest = text.strip_prefix('4')?;
    let kind = rest.chars().next()?;
    rest = &rest[1..];
    let mut attachments = 0;
    if kind == '5' || kind == '6' {
        let (n, after) = rest.split_once('-')?;
        attachments = n.parse().ok()?;
        rest = after;
    }
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let id = if digits.is_empty() {
        None
    } else {
        Some(digits.parse().ok()?)
    };
    let json = serde_json::from_str(&rest[digits.len()..]).ok()?;
    Some((kind, attachments, id, json))
}

fn event_of(text: String, attachments: Vec<Vec<u8>>) -> Option<Ev> {
    let (_, _, ack, json) = parse(&text)?;
    let serde_json::Value::Array(mut items) = json else {
        return None;
    };
    if items.is_empty() {
        return None;
    }
    let name = items.remove(0).as_str()?.to_owned();
    Some(Ev {
        name,
        args: items,
        attachments,
        ack,
        text,
    })
}

type WsStream = WebSocketStream<TcpStream>;

/// A frame read from the socket, binary attachments gathered.
enum Raw {
    Text(String, Vec<Vec<u8>>),
    Closed,
}

async fn read_raw(ws: &mut WsStream) -> Raw {
    let text = loop {
        match ws.next().await {
            None | Some(Err(_)) => return Raw::Closed,
            Some(Ok(m)) if m.is_text() => break m.as_text().unwrap_or_default().to_owned(),
            Some(Ok(m)) if m.is_close() => return Raw::Closed,
            Some(Ok(_)) => continue,
        }
    };
    let mut bins = Vec::new();
    if let Some((kind, n, _, _)) = parse(&text)
        && (kind == '5' || kind == '6')
    {
        while bins.len() < n {
            match ws.next().await {
                Some(Ok(m)) if m.is_binary() => bins.push(Bytes::from(m.into_payload()).to_vec()),
                Some(Ok(m)) if m.is_text() || m.is_close() => return Raw::Closed,
                Some(Ok(_)) => continue,
                None | Some(Err(_)) => return Raw::Closed,
            }
        }
    }
    Raw::Text(text, bins)
}

/// A Socket.IO client on namespace `/` over one WebSocket.
pub(crate) struct Client {
    pub(crate) sid: String,
    /// The private id of connection state recovery (when it is on).
    pub(crate) pid: Option<String>,
    /// Events received before the CONNECT answer (missed packets).
    pub(crate) before: Vec<Ev>,
    incoming: UnboundedReceiver<In>,
    pending: VecDeque<In>,
    out: UnboundedSender<String>,
    answers: Arc<Mutex<HashMap<String, serde_json::Value>>>,
    answer_pings: Arc<AtomicBool>,
    next_id: u64,
    task: JoinHandle<()>,
}

impl Client {
    /// Connects with an extra query (`&k=v`) and an auth object; `Err`
    /// with the CONNECT_ERROR frame when refused.
    pub(crate) async fn connect(
        addr: SocketAddr,
        query: &str,
        auth: Option<serde_json::Value>,
    ) -> Result<Client, String> {
        let tcp = bounded("tcp connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        let _ = tcp.set_nodelay(true);
        let uri = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket{query}");
        let (mut ws, _) = bounded(
            "websocket handshake",
            ClientBuilder::new().uri(&uri).expect("uri").connect_on(tcp),
        )
        .await
        .expect("websocket handshake");
        match bounded("the open packet", read_raw(&mut ws)).await {
            Raw::Text(t, _) if t.starts_with('0') => {}
            Raw::Text(t, _) => panic!("expected the open packet, got {t}"),
            Raw::Closed => panic!("closed before the open packet"),
        }
        let connect = match &auth {
            Some(a) => format!("40{a}"),
            None => "40".to_owned(),
        };
        bounded("send CONNECT", ws.send(Message::text(connect)))
            .await
            .expect("send");
        let mut before = Vec::new();
        let (sid, pid) = loop {
            match bounded("the CONNECT answer", read_raw(&mut ws)).await {
                Raw::Text(t, _) if t == "2" => {
                    let _ = ws.send(Message::text("3".to_owned())).await;
                }
                Raw::Text(t, _) if t.starts_with("40") => {
                    let json: serde_json::Value = serde_json::from_str(&t[2..]).expect("json");
                    let sid = json["sid"].as_str().expect("sid").to_owned();
                    let pid = json["pid"].as_str().map(str::to_owned);
                    break (sid, pid);
                }
                Raw::Text(t, _) if t.starts_with("44") => return Err(t),
                Raw::Text(t, bins) => {
                    before.push(event_of(t.clone(), bins).unwrap_or_else(|| panic!("{t}")))
                }
                Raw::Closed => panic!("closed while connecting"),
            }
        };
        let (in_tx, incoming) = mpsc::unbounded_channel();
        let (out, out_rx) = mpsc::unbounded_channel();
        let answers: Arc<Mutex<HashMap<String, serde_json::Value>>> = Arc::default();
        let answer_pings = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(reader(
            ws,
            in_tx,
            out_rx,
            Arc::clone(&answers),
            Arc::clone(&answer_pings),
        ));
        Ok(Client {
            sid,
            pid,
            before,
            incoming,
            pending: VecDeque::new(),
            out,
            answers,
            answer_pings,
            next_id: 100,
            task,
        })
    }

    /// Connects to `addr`, recovering `{pid, offset}`.
    pub(crate) async fn recover(addr: SocketAddr, pid: &str, offset: &str) -> Client {
        Client::connect(addr, "", Some(json!({"pid": pid, "offset": offset})))
            .await
            .expect("connected")
    }

    /// Sends a raw Socket.IO text frame.
    pub(crate) fn send(&self, text: &str) {
        let _ = self.out.send(text.to_owned());
    }

    /// Answers every future `event` asking for an ack with `answer`.
    pub(crate) fn answer(&self, event: &str, answer: serde_json::Value) {
        self.answers
            .lock()
            .unwrap()
            .insert(event.to_owned(), answer);
    }

    /// Stops answering the server's pings.
    pub(crate) fn stop_answering_pings(&self) {
        self.answer_pings.store(false, Ordering::SeqCst);
    }

    /// Cuts the transport: no close frame (the server sees "transport
    /// close").
    pub(crate) fn kill(self) {
        self.task.abort();
    }

    /// The next thing received.
    pub(crate) async fn next(&mut self) -> In {
        if let Some(i) = self.pending.pop_front() {
            return i;
        }
        recv("a frame from the server", &mut self.incoming).await
    }

    /// The next event (an ack, a disconnect or the end fail the test).
    pub(crate) async fn event(&mut self) -> Ev {
        match self.next().await {
            In::Event(e) => e,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    /// The next event, which must be `name`.
    pub(crate) async fn expect(&mut self, name: &str) -> Ev {
        let e = self.event().await;
        assert_eq!(e.name, name, "unexpected event {}", e.text);
        e
    }

    /// The names of the next events, up to and including `marker`.
    pub(crate) async fn names_until(&mut self, marker: &str) -> Vec<String> {
        let mut names = Vec::new();
        loop {
            let e = self.event().await;
            names.push(e.name.clone());
            if e.name == marker {
                return names;
            }
        }
    }

    /// Emits `event` with `args` and waits for its ack (other frames
    /// received meanwhile are kept for [`Client::next`]).
    pub(crate) async fn call(
        &mut self,
        event: &str,
        args: serde_json::Value,
    ) -> Vec<serde_json::Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut items = vec![json!(event)];
        match args {
            serde_json::Value::Array(a) => items.extend(a),
            serde_json::Value::Null => {}
            one => items.push(one),
        }
        self.send(&format!("42{id}{}", serde_json::Value::Array(items)));
        let mut skipped = Vec::new();
        let answer = loop {
            match recv(&format!("the ack of {event}"), &mut self.incoming).await {
                In::Ack(i, args) if i == id => break args,
                In::Closed => panic!("closed while waiting for the ack of {event}"),
                other => skipped.push(other),
            }
        };
        self.pending.extend(skipped);
        answer
    }

    /// Joins a room (acked once the node receives the room's broadcasts).
    pub(crate) async fn join(&mut self, room: &str) {
        assert_eq!(self.call("join", json!([room])).await, vec![json!("ok")]);
    }

    /// Waits until the connection is closed, skipping anything else.
    pub(crate) async fn closed(&mut self) {
        loop {
            if self.next().await == In::Closed {
                return;
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn reader(
    mut ws: WsStream,
    tx: UnboundedSender<In>,
    mut out: UnboundedReceiver<String>,
    answers: Arc<Mutex<HashMap<String, serde_json::Value>>>,
    answer_pings: Arc<AtomicBool>,
) {
    // A binary event waiting for its attachments: its text, how many.
    let mut partial: Option<(String, usize, Vec<Vec<u8>>)> = None;
    loop {
        tokio::select! {
            m = ws.next() => {
                let (text, bins) = match m {
                    None | Some(Err(_)) => {
                        let _ = tx.send(In::Closed);
                        return;
                    }
                    Some(Ok(m)) if m.is_close() => {
                        let _ = tx.send(In::Closed);
                        return;
                    }
                    Some(Ok(m)) if m.is_binary() => {
                        let Some((_, n, bins)) = partial.as_mut() else {
                            panic!("an attachment without its packet");
                        };
                        bins.push(Bytes::from(m.into_payload()).to_vec());
                        if bins.len() < *n {
                            continue;
                        }
                        let (t, _, bins) = partial.take().expect("partial");
                        (t, bins)
                    }
                    Some(Ok(m)) if m.is_text() => {
                        let t = m.as_text().unwrap_or_default().to_owned();
                        match parse(&t) {
                            Some(('5' | '6', n, _, _)) if n > 0 => {
                                partial = Some((t, n, Vec::new()));
                                continue;
                            }
                            _ => (t, Vec::new()),
                        }
                    }
                    Some(Ok(_)) => continue,
                };
                // SB_FRAMES=1 prints every frame received (debugging).
                if std::env::var_os("SB_FRAMES").is_some() {
                    eprintln!("<< {text} {bins:?}");
                }
                if text == "2" {
                    if answer_pings.load(Ordering::SeqCst) {
                        let _ = ws.send(Message::text("3".to_owned())).await;
                    }
                    continue;
                }
                if text == "1" {
                    // Engine.IO close.
                    let _ = tx.send(In::Closed);
                    return;
                }
                if text == "41" {
                    let _ = tx.send(In::Disconnect);
                    continue;
                }
                match parse(&text) {
                    Some(('3' | '6', _, Some(id), serde_json::Value::Array(args))) => {
                        let _ = tx.send(In::Ack(id, args));
                    }
                    Some(('2' | '5', _, _, _)) => {
                        let ev = event_of(text.clone(), bins).expect("an event");
                        if let Some(id) = ev.ack {
                            let answer = answers.lock().unwrap().get(&ev.name).cloned();
                            if let Some(a) = answer {
                                let _ = ws.send(Message::text(format!("43{id}[{a}]"))).await;
                            }
                        }
                        let _ = tx.send(In::Event(ev));
                    }
                    _ => panic!("unexpected frame {text}"),
                }
            }
            text = out.recv() => match text {
                Some(t) => {
                    let _ = ws.send(Message::text(t)).await;
                }
                None => return,
            },
        }
    }
}
