//! Connection state recovery with the in-memory store: the wire as the
//! reference shows it (`pid` in the CONNECT answer, offsets as last
//! arguments, missed packets before the CONNECT answer), the disconnect
//! reasons that keep a session, expiry, forged or trimmed ids, middlewares,
//! volatile and ack'd emits, binary packets, and live traffic during a
//! recovery (no gap, no duplicate).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use serde_json::json;
use switchboard::adapter::{
    AckSink, Adapter, AdapterError, AdapterFactory, BroadcastOptions, LocalAdapter, LocalNamespace,
    MemoryAdapter, MemoryAdapterFactory, MissedPacket, PersistedSession, Room, SocketInfo,
};
use switchboard::engine::EngineConfig;
use switchboard::protocol::socketio::Encoded;
use switchboard::{
    ConnectError, DisconnectReason, Event, RecoveryConfig, Socket, SocketIo, SocketIoConfig,
};
use tokio::sync::mpsc::{self, UnboundedReceiver};

struct Server {
    addr: SocketAddr,
    io: SocketIo,
    sockets: UnboundedReceiver<Socket>,
    left: UnboundedReceiver<(String, DisconnectReason)>,
    middleware_runs: Arc<AtomicUsize>,
}

async fn start(recovery: RecoveryConfig, engine: EngineConfig) -> Server {
    start_with(recovery, engine, MemoryAdapterFactory).await
}

async fn start_with(
    recovery: RecoveryConfig,
    engine: EngineConfig,
    adapter: impl AdapterFactory,
) -> Server {
    let io = SocketIo::builder()
        .config(SocketIoConfig {
            engine: EngineConfig {
                path: "/socket.io/".into(),
                ..engine
            },
            ..SocketIoConfig::default()
        })
        .connection_state_recovery(recovery)
        .adapter(adapter)
        .build();
    let (tx, sockets) = mpsc::unbounded_channel();
    let (left_tx, left) = mpsc::unbounded_channel();
    let runs = Arc::new(AtomicUsize::new(0));
    let mw_runs = Arc::clone(&runs);
    let ns = io.ns("/");
    ns.use_middleware(move |socket: Socket| {
        mw_runs.fetch_add(1, Ordering::SeqCst);
        async move {
            if socket.handshake().auth().get("deny").is_some() {
                return Err(ConnectError::new("denied"));
            }
            Ok(())
        }
    });
    ns.on("join", |socket: Socket, mut event: Event| async move {
        let room: String = event.arg(0).unwrap_or_default();
        socket.join([room]);
        let _ = event.ack("ok");
    });
    ns.on_connection(move |socket: Socket| {
        let tx = tx.clone();
        let left_tx = left_tx.clone();
        async move {
            socket.on_disconnect(move |s: Socket, reason| {
                let left_tx = left_tx.clone();
                async move {
                    let _ = left_tx.send((s.id().to_string(), reason));
                }
            });
            let _ = tx.send(socket);
        }
    });
    let addr = start_io(&io).await;
    Server {
        addr,
        io,
        sockets,
        left,
        middleware_runs: runs,
    }
}

/// The CONNECT answer's `{sid, pid}`.
fn connect_reply(text: &str) -> (String, String) {
    let json: serde_json::Value =
        serde_json::from_str(text.strip_prefix("40").expect("a CONNECT answer")).expect("json");
    (
        json["sid"].as_str().expect("sid").to_owned(),
        json["pid"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The arguments of an event frame `42[...]`.
fn event_args(text: &str) -> Vec<serde_json::Value> {
    let json = text.strip_prefix("42").expect("an event");
    serde_json::from_str(json).expect("event json")
}

/// Connects (with `auth`), returning the socket, the CONNECT answer and
/// everything received before it.
async fn connect(addr: SocketAddr, auth: &str) -> (Ws, (String, String), Vec<Msg>) {
    let mut ws = sio_open(addr).await;
    ws.send_text(&format!("40{auth}")).await;
    let mut before = Vec::new();
    loop {
        match ws.recv_skip_pings().await {
            Msg::Text(t) if t.starts_with("40") => return (ws, connect_reply(&t), before),
            Msg::Text(t) if t.starts_with("44") => panic!("refused: {t}"),
            Msg::Gone | Msg::Close(_) => panic!("closed while connecting"),
            other => before.push(other),
        }
    }
}

async fn join(ws: &mut Ws, room: &str) {
    ws.send_text(&format!(r#"421["join","{room}"]"#)).await;
    ws.expect_text(r#"431["ok"]"#).await;
}

/// The last argument of an event: its offset.
fn offset_of(text: &str) -> String {
    event_args(text)
        .last()
        .and_then(|v| v.as_str())
        .expect("an offset")
        .to_owned()
}

fn recovery() -> RecoveryConfig {
    RecoveryConfig::default()
}

#[tokio::test]
async fn a_client_that_lost_its_transport_gets_its_id_rooms_data_and_missed_packets() {
    let mut srv = start(recovery(), EngineConfig::default()).await;
    let (mut ws, (sid, pid), _) = connect(srv.addr, "").await;
    assert_eq!(pid.len(), 20, "the CONNECT answer carries a pid");
    let socket = recv("socket", &mut srv.sockets).await;
    socket.set_data(&json!({"name": "ada"})).unwrap();
    join(&mut ws, "r").await;
    srv.io.to("r").emit("m", &0).await.unwrap();
    let first = ws.recv_text().await;
    assert_eq!(event_args(&first)[..2], [json!("m"), json!(0)]);
    let offset = offset_of(&first);
    // The transport is cut (no close frame): "transport close".
    drop(ws);
    let (_, reason) = recv("disconnect", &mut srv.left).await;
    assert_eq!(reason, DisconnectReason::TransportClose);
    let runs_before = srv.middleware_runs.load(Ordering::SeqCst);
    for i in 1..=3 {
        srv.io.to("r").emit("m", &i).await.unwrap();
    }
    srv.io.to("elsewhere").emit("m", &99).await.unwrap();
    srv.io.emit("all", &"everyone").await.unwrap();
    srv.io
        .to("r")
        .volatile()
        .emit("m", &"volatile")
        .await
        .unwrap();
    socket.emit("direct", &"while away").unwrap();
    let auth = json!({"pid": pid, "offset": offset}).to_string();
    let (mut ws, (sid2, pid2), before) = connect(srv.addr, &auth).await;
    assert_eq!((sid2.as_str(), pid2.as_str()), (sid.as_str(), pid.as_str()));
    let texts: Vec<Vec<serde_json::Value>> = before
        .iter()
        .map(|m| match m {
            Msg::Text(t) => event_args(t),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let names: Vec<(String, serde_json::Value)> = texts
        .iter()
        .map(|a| (a[0].as_str().unwrap().to_owned(), a[1].clone()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("m".into(), json!(1)),
            ("m".into(), json!(2)),
            ("m".into(), json!(3)),
            ("all".into(), json!("everyone")),
            ("direct".into(), json!("while away")),
        ],
        "missed packets, in order, before the CONNECT answer; not the other room's, not the volatile one"
    );
    let recovered = recv("recovered socket", &mut srv.sockets).await;
    assert!(recovered.recovered());
    assert_eq!(recovered.id().as_str(), sid);
    assert_eq!(
        recovered.data::<serde_json::Value>().unwrap(),
        json!({"name": "ada"})
    );
    let mut rooms = recovered.rooms();
    rooms.sort();
    let mut expected = vec![sid.clone(), "r".to_owned()];
    expected.sort();
    assert_eq!(rooms, expected);
    assert_eq!(
        srv.middleware_runs.load(Ordering::SeqCst),
        runs_before,
        "middlewares are skipped for a recovered socket"
    );
    // Live traffic goes on, to the restored room.
    srv.io.to("r").emit("m", &4).await.unwrap();
    let live = ws.recv_skip_pings().await;
    let Msg::Text(live) = live else { panic!() };
    assert_eq!(event_args(&live)[1], json!(4));
}

#[tokio::test]
async fn ping_timeout_keeps_the_session() {
    let engine = EngineConfig {
        ping_interval: Duration::from_millis(100),
        ping_timeout: Duration::from_millis(100),
        ..EngineConfig::default()
    };
    let mut srv = start(recovery(), engine).await;
    let (mut ws, (sid, pid), _) = connect(srv.addr, "").await;
    srv.io.emit("m", &1).await.unwrap();
    let offset = loop {
        if let Msg::Text(t) = ws.recv().await
            && t.starts_with("42")
        {
            break offset_of(&t);
        }
    };
    // Never answers the pings.
    let (_, reason) = recv("disconnect", &mut srv.left).await;
    assert_eq!(reason, DisconnectReason::PingTimeout);
    drop(ws);
    srv.io.emit("m", &2).await.unwrap();
    let auth = json!({"pid": pid, "offset": offset}).to_string();
    let (_ws, (sid2, _), before) = connect(srv.addr, &auth).await;
    assert_eq!(sid2, sid);
    assert_eq!(before.len(), 1);
}

#[tokio::test]
async fn expired_unknown_forged_or_trimmed_sessions_give_a_fresh_connection() {
    let mut srv = start(
        RecoveryConfig {
            max_disconnection_duration: Duration::from_millis(300),
            max_packets: 3,
            ..recovery()
        },
        EngineConfig::default(),
    )
    .await;
    // Expired.
    let (mut ws, (sid, pid), _) = connect(srv.addr, "").await;
    srv.io.emit("m", &1).await.unwrap();
    let offset = offset_of(&ws.recv_text().await);
    drop(ws);
    recv("disconnect", &mut srv.left).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    srv.io.emit("m", &2).await.unwrap();
    let auth = json!({"pid": pid, "offset": offset}).to_string();
    let (ws, (sid2, pid2), before) = connect(srv.addr, &auth).await;
    assert_ne!(sid2, sid, "an expired session is not restored");
    assert_ne!(pid2, pid);
    assert!(before.is_empty());
    assert!(!recv("socket", &mut srv.sockets).await.recovered());
    drop(ws);
    recv("disconnect", &mut srv.left).await;
    // Forged pid, and not even strings.
    for auth in [
        json!({"pid": "AAAAAAAAAAAAAAAAAAAA", "offset": "1"}),
        json!({"pid": 5, "offset": {}}),
        json!({"pid": pid2, "offset": "not-an-offset"}),
    ] {
        let (_ws, (s, _), before) = connect(srv.addr, &auth.to_string()).await;
        assert_ne!(s, sid2);
        assert!(before.is_empty());
    }
    // Trimmed: more than `max_packets` were sent since the offset.
    let (mut ws, (sid3, pid3), _) = connect(srv.addr, "").await;
    srv.io.emit("m", &1).await.unwrap();
    let offset = loop {
        let t = ws.recv_text().await;
        if event_args(&t)[1] == json!(1) {
            break offset_of(&t);
        }
    };
    drop(ws);
    recv("disconnect", &mut srv.left).await;
    for i in 0..5 {
        srv.io.emit("m", &i).await.unwrap();
    }
    let auth = json!({"pid": pid3, "offset": offset}).to_string();
    let (_ws, (sid4, _), before) = connect(srv.addr, &auth).await;
    assert_ne!(
        sid4, sid3,
        "an offset no longer stored gives a fresh connection"
    );
    assert!(before.is_empty());
}

#[tokio::test]
async fn middlewares_run_for_a_recovered_socket_when_told() {
    let mut srv = start(
        RecoveryConfig {
            skip_middlewares: false,
            ..recovery()
        },
        EngineConfig::default(),
    )
    .await;
    let (mut ws, (sid, pid), _) = connect(srv.addr, "").await;
    srv.io.emit("m", &1).await.unwrap();
    let offset = offset_of(&ws.recv_text().await);
    drop(ws);
    recv("disconnect", &mut srv.left).await;
    let runs = srv.middleware_runs.load(Ordering::SeqCst);
    let auth = json!({"pid": pid, "offset": offset}).to_string();
    let (_ws, (sid2, _), _) = connect(srv.addr, &auth).await;
    assert_eq!(sid2, sid);
    assert_eq!(srv.middleware_runs.load(Ordering::SeqCst), runs + 1);
    // And a middleware may still refuse it.
    let _ = recv("socket", &mut srv.sockets).await;
    let (mut ws, (_, pid), _) = connect(srv.addr, "").await;
    srv.io.emit("m", &2).await.unwrap();
    let offset = loop {
        let t = ws.recv_text().await;
        if event_args(&t)[1] == json!(2) {
            break offset_of(&t);
        }
    };
    drop(ws);
    let mut ws = sio_open(srv.addr).await;
    ws.send_text(&format!(
        "40{}",
        json!({"pid": pid, "offset": offset, "deny": true})
    ))
    .await;
    let reply = ws.recv_text().await;
    assert_eq!(reply, r#"44{"message":"denied"}"#);
}

#[tokio::test]
async fn volatile_and_acked_emits_carry_no_offset_and_are_never_replayed() {
    let mut srv = start(recovery(), EngineConfig::default()).await;
    let (mut ws, (_, pid), _) = connect(srv.addr, "").await;
    let socket = recv("socket", &mut srv.sockets).await;
    socket.emit_volatile("v", &1).unwrap();
    assert_eq!(ws.recv_text().await, r#"42["v",1]"#);
    let ack = {
        let s = socket.clone();
        tokio::spawn(async move {
            s.emit_with_ack_timeout("q", &1, Duration::from_secs(5))
                .await
        })
    };
    let q = ws.recv_text().await;
    assert!(q.starts_with("42") && q.ends_with(r#"["q",1]"#), "{q}");
    let id: String = q[2..].chars().take_while(char::is_ascii_digit).collect();
    ws.send_text(&format!("43{id}[\"a\"]")).await;
    ack.await.unwrap().unwrap();
    srv.io.emit("m", &1).await.unwrap();
    let offset = offset_of(&ws.recv_text().await);
    drop(ws);
    recv("disconnect", &mut srv.left).await;
    srv.io.broadcast().volatile().emit("v", &2).await.unwrap();
    let _ = srv
        .io
        .broadcast()
        .timeout(Duration::from_millis(50))
        .emit_with_ack("q", &2)
        .await;
    srv.io.emit("m", &2).await.unwrap();
    let auth = json!({"pid": pid, "offset": offset}).to_string();
    let (_ws, _, before) = connect(srv.addr, &auth).await;
    assert_eq!(before.len(), 1, "only the plain broadcast: {before:?}");
}

#[tokio::test]
async fn binary_packets_are_replayed_intact() {
    let mut srv = start(recovery(), EngineConfig::default()).await;
    let (mut ws, (_, pid), _) = connect(srv.addr, "").await;
    srv.io.emit("m", &1).await.unwrap();
    let offset = offset_of(&ws.recv_text().await);
    drop(ws);
    recv("disconnect", &mut srv.left).await;
    let payload = json!({"file": "x"});
    srv.io
        .emit_many_for_test(&payload, Bytes::from_static(b"\x00\x01\xfe"))
        .await;
    let auth = json!({"pid": pid, "offset": offset}).to_string();
    let (_ws, _, before) = connect(srv.addr, &auth).await;
    assert_eq!(before.len(), 2, "{before:?}");
    let Msg::Text(head) = &before[0] else {
        panic!()
    };
    assert!(
        head.starts_with(r#"451-["up",{"file":"x"},{"_placeholder":true,"num":0},""#),
        "{head}"
    );
    assert_eq!(before[1], Msg::Binary(vec![0, 1, 0xfe]));
}

/// Sends `up` with a JSON object and a byte buffer to everyone.
trait EmitBinary {
    async fn emit_many_for_test(&self, obj: &serde_json::Value, bytes: Bytes);
}

impl EmitBinary for SocketIo {
    async fn emit_many_for_test(&self, obj: &serde_json::Value, bytes: Bytes) {
        self.broadcast()
            .emit_many("up", &(obj, bytes))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_client_namespace_disconnect_keeps_no_session() {
    let mut srv = start(recovery(), EngineConfig::default()).await;
    let (mut ws, (sid, pid), _) = connect(srv.addr, "").await;
    srv.io.emit("m", &1).await.unwrap();
    let offset = offset_of(&ws.recv_text().await);
    ws.send_text("41").await;
    let (_, reason) = recv("disconnect", &mut srv.left).await;
    assert_eq!(reason, DisconnectReason::ClientNamespaceDisconnect);
    ws.send_text(&format!("40{}", json!({"pid": pid, "offset": offset})))
        .await;
    let reply = ws.recv_text().await;
    let (sid2, _) = connect_reply(&reply);
    assert_ne!(sid2, sid);
}

/// The memory adapter with a quirk of a remote store.
#[derive(Clone, Copy)]
enum Quirk {
    /// The missed packets take 30 ms to come back, so live broadcasts
    /// surely happen while a recovering socket is already in its rooms.
    Slow,
    /// The store delivers again, late, the packets a recovery just read (as
    /// a cluster store's live path may lag behind its read): the recovered
    /// socket must not send them twice.
    Late,
}

struct Quirky(Arc<MemoryAdapter>, Quirk);

impl AdapterFactory for Quirk {
    fn create(&self, nsp: LocalNamespace) -> Arc<dyn Adapter> {
        Arc::new(Quirky(Arc::new(MemoryAdapter::new(nsp)), *self))
    }
}

#[async_trait::async_trait]
impl Adapter for Quirky {
    fn local(&self) -> &LocalAdapter {
        self.0.local()
    }
    async fn broadcast(&self, p: &Encoded, o: &BroadcastOptions) -> Result<(), AdapterError> {
        self.0.broadcast(p, o).await
    }
    async fn broadcast_with_ack(
        &self,
        p: &Encoded,
        id: u64,
        o: &BroadcastOptions,
        t: Duration,
        sink: AckSink,
    ) -> Result<(), AdapterError> {
        self.0.broadcast_with_ack(p, id, o, t, sink).await
    }
    async fn fetch_sockets(&self, o: &BroadcastOptions) -> Result<Vec<SocketInfo>, AdapterError> {
        self.0.fetch_sockets(o).await
    }
    async fn add_sockets(&self, o: &BroadcastOptions, r: &[Room]) -> Result<(), AdapterError> {
        self.0.add_sockets(o, r).await
    }
    async fn del_sockets(&self, o: &BroadcastOptions, r: &[Room]) -> Result<(), AdapterError> {
        self.0.del_sockets(o, r).await
    }
    async fn disconnect_sockets(&self, o: &BroadcastOptions, c: bool) -> Result<(), AdapterError> {
        self.0.disconnect_sockets(o, c).await
    }
    async fn rooms(&self, o: &BroadcastOptions) -> Result<Vec<Room>, AdapterError> {
        self.0.rooms(o).await
    }
    async fn persist_session(&self, s: PersistedSession) {
        self.0.persist_session(s).await
    }
    async fn restore_session(
        &self,
        pid: &str,
        offset: &str,
    ) -> Result<Option<PersistedSession>, AdapterError> {
        self.0.restore_session(pid, offset).await
    }
    async fn missed_packets(
        &self,
        rooms: &[Room],
        offset: &str,
    ) -> Result<Vec<MissedPacket>, AdapterError> {
        if let Quirk::Slow = self.1 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let missed = self.0.missed_packets(rooms, offset).await?;
        if let Quirk::Late = self.1 {
            let again = missed.clone();
            let adapter = Arc::clone(&self.0);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                for m in again {
                    adapter.local().broadcast(
                        &m.packet,
                        &BroadcastOptions::default(),
                        Some(&m.offset),
                    );
                }
            });
        }
        Ok(missed)
    }
}

#[tokio::test]
async fn packets_delivered_late_after_a_recovery_are_not_sent_twice() {
    let mut srv = start_with(recovery(), EngineConfig::default(), Quirk::Late).await;
    let (mut ws, (_, pid), _) = connect(srv.addr, "").await;
    srv.io.emit("m", &0).await.unwrap();
    let offset = offset_of(&ws.recv_text().await);
    drop(ws);
    recv("disconnect", &mut srv.left).await;
    for i in 1..=3 {
        srv.io.emit("m", &i).await.unwrap();
    }
    let auth = json!({"pid": pid, "offset": offset}).to_string();
    let (mut ws, _, before) = connect(srv.addr, &auth).await;
    assert_eq!(before.len(), 3);
    // The store delivers them again 20 ms later; then a new one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    srv.io.emit("m", &4).await.unwrap();
    let next = loop {
        match ws.recv().await {
            Msg::Text(t) if t == "2" => continue,
            Msg::Text(t) => break t,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        event_args(&next)[1],
        json!(4),
        "no replayed packet twice: {next}"
    );
}

/// Broadcasts go on while recoveries register the socket, read the
/// missed packets (slowly) and send them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_traffic_during_a_recovery_has_no_gap_and_no_duplicate() {
    let mut srv = start_with(recovery(), EngineConfig::default(), Quirk::Slow).await;
    let io = srv.io.clone();
    // A steady stream of numbered broadcasts.
    let sender = tokio::spawn(async move {
        for i in 0u64.. {
            io.emit("n", &i).await.unwrap();
            if i % 20 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let mut seen: Vec<u64> = Vec::new();
    let mut last_offset: Option<String> = None;
    let mut pid = String::new();
    let mut sid = String::new();
    for round in 0..10 {
        let auth = match &last_offset {
            Some(o) => json!({"pid": pid, "offset": o}).to_string(),
            None => String::new(),
        };
        let (mut ws, (s, p), before) = connect(srv.addr, &auth).await;
        if round > 0 {
            assert_eq!(s, sid, "round {round} recovered");
        }
        sid = s;
        pid = p;
        let mut frames: Vec<String> = before
            .into_iter()
            .map(|m| match m {
                Msg::Text(t) => t,
                other => panic!("{other:?}"),
            })
            .collect();
        for _ in 0..100 {
            match ws.recv_skip_pings().await {
                Msg::Text(t) => frames.push(t),
                other => panic!("{other:?}"),
            }
        }
        for t in frames {
            let args = event_args(&t);
            seen.push(args[1].as_u64().unwrap());
            last_offset = Some(offset_of(&t));
        }
        drop(ws);
        recv("disconnect", &mut srv.left).await;
        while srv.sockets.try_recv().is_ok() {}
    }
    sender.abort();
    let first = seen[0];
    let expected: Vec<u64> = (first..first + seen.len() as u64).collect();
    assert_eq!(
        seen, expected,
        "every number once, in order, across 10 recoveries"
    );
}
