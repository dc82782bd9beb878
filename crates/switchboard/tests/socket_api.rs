//! The server-side Socket.IO API (emit, acks, rooms, broadcasts, fetch,
//! disconnects), driven by raw WebSocket clients on real connections.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use switchboard::engine::EngineConfig;
use switchboard::{
    AckError, BroadcastError, DisconnectReason, Socket, SocketIo, SocketIoConfig, Value,
};
use tokio::sync::mpsc::{self, UnboundedReceiver};

/// What a socket's disconnect handlers saw.
#[derive(Debug, Clone)]
struct Left {
    id: String,
    stage: &'static str,
    reason: DisconnectReason,
    rooms: Vec<String>,
}

struct Api {
    addr: SocketAddr,
    io: SocketIo,
    sockets: UnboundedReceiver<Socket>,
    left: UnboundedReceiver<Left>,
}

impl Api {
    async fn start(engine: EngineConfig) -> Api {
        let io = SocketIo::builder()
            .config(SocketIoConfig {
                engine: EngineConfig {
                    path: "/socket.io/".into(),
                    ..engine
                },
                ..SocketIoConfig::default()
            })
            .build();
        let (sock_tx, sockets) = mpsc::unbounded_channel();
        let (left_tx, left) = mpsc::unbounded_channel();
        io.on_connection("/", move |socket: Socket| {
            let sock_tx = sock_tx.clone();
            let left_tx = left_tx.clone();
            async move {
                for stage in ["disconnecting", "disconnect"] {
                    let tx = left_tx.clone();
                    let handler = move |socket: Socket, reason: DisconnectReason| {
                        let tx = tx.clone();
                        async move {
                            let mut rooms = socket.rooms();
                            rooms.sort();
                            let _ = tx.send(Left {
                                id: socket.id().to_string(),
                                stage,
                                reason,
                                rooms,
                            });
                        }
                    };
                    if stage == "disconnecting" {
                        socket.on_disconnecting(handler);
                    } else {
                        socket.on_disconnect(handler);
                    }
                }
                let _ = sock_tx.send(socket);
            }
        });
        let addr = start_io(&io).await;
        Api {
            addr,
            io,
            sockets,
            left,
        }
    }

    async fn quiet() -> Api {
        Api::start(EngineConfig::default()).await
    }

    /// A client joined to `/`, with its server-side socket.
    async fn client_with_auth(&mut self, auth: Option<&str>) -> (Ws, Socket) {
        let mut ws = sio_open(self.addr).await;
        let sid = sio_join(&mut ws, "/", auth).await;
        let socket = recv("the server-side socket", &mut self.sockets).await;
        assert_eq!(socket.id().as_str(), sid);
        (ws, socket)
    }

    async fn client(&mut self) -> (Ws, Socket) {
        self.client_with_auth(None).await
    }

    /// The next `disconnect` record (skipping `disconnecting` ones).
    async fn disconnected(&mut self) -> Left {
        loop {
            let l = recv("a disconnect", &mut self.left).await;
            if l.stage == "disconnect" {
                return l;
            }
        }
    }
}

/// Proves that `ws` received nothing before `marker`: the server sends the
/// marker now, and it must be the next frame (a session's frames are FIFO).
async fn expect_nothing_before_marker(ws: &mut Ws, socket: &Socket) {
    socket.emit("marker", &()).expect("emit marker");
    ws.expect_text(r#"42["marker",null]"#).await;
}

/// Splits `42<id>[...]` into the ack id and the JSON array.
fn ack_request(text: &str) -> (u64, String) {
    let rest = text.strip_prefix("42").expect("an event");
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    assert!(digits > 0, "no ack id in {text:?}");
    (
        rest[..digits].parse().expect("id"),
        rest[digits..].to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_emit_reaches_only_that_client() {
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client().await;
    let (mut b, sb) = api.client().await;
    sa.emit("hi", "there").expect("emit");
    sa.emit_many("many", &(1, "two", [3])).expect("emit_many");
    a.expect_text(r#"42["hi","there"]"#).await;
    a.expect_text(r#"42["many",1,"two",[3]]"#).await;
    expect_nothing_before_marker(&mut b, &sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_with_ack_resolves_with_the_answer() {
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client().await;
    let asking = tokio::spawn(async move { sa.emit_with_ack("question", &json!({"q": 1})).await });
    let text = a.recv_text().await;
    let (id, rest) = ack_request(&text);
    assert_eq!(rest, r#"["question",{"q":1}]"#);
    a.send_text(&format!(r#"43{id}["answer",2]"#)).await;
    let answer = bounded("the ack", asking)
        .await
        .expect("task")
        .expect("acked");
    assert_eq!(answer, vec![Value::from("answer"), Value::from(2u64)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_with_ack_timeout_fails_when_client_never_answers() {
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client().await;
    let s = sa.clone();
    let asking = tokio::spawn(async move {
        s.emit_with_ack_timeout("question", &1, Duration::from_millis(200))
            .await
    });
    let text = a.recv_text().await;
    let (id, _) = ack_request(&text);
    let result = bounded("the ack timeout", asking).await.expect("task");
    assert!(matches!(result, Err(AckError::Timeout)), "{result:?}");
    // A late answer is ignored and the socket keeps working.
    a.send_text(&format!(r#"43{id}["late"]"#)).await;
    expect_nothing_before_marker(&mut a, &sa).await;
    assert!(sa.connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_join_leave_and_own_id() {
    let mut api = Api::quiet().await;
    let (_a, sa) = api.client().await;
    let id = sa.id().to_string();
    assert_eq!(sa.rooms(), vec![id.clone()]);
    sa.join(["r1", "r2"]);
    let mut rooms = sa.rooms();
    rooms.sort();
    let mut expected = vec![id.clone(), "r1".to_owned(), "r2".to_owned()];
    expected.sort();
    assert_eq!(rooms, expected);
    sa.leave("r1");
    let mut rooms = sa.rooms();
    rooms.sort();
    let mut expected = vec![id.clone(), "r2".to_owned()];
    expected.sort();
    assert_eq!(rooms, expected);
    // Leaving a room one is not in is harmless.
    sa.leave("nope");
    assert_eq!(sa.rooms().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_to_room_reaches_exactly_its_members() {
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client().await;
    let (mut b, sb) = api.client().await;
    let (mut c, sc) = api.client().await;
    sa.join(["r"]);
    sb.join(["r"]);
    api.io.to("r").emit("news", &1).await.expect("broadcast");
    a.expect_text(r#"42["news",1]"#).await;
    b.expect_text(r#"42["news",1]"#).await;
    expect_nothing_before_marker(&mut c, &sc).await;
    // A socket id is a room too.
    api.io
        .to(sc.id().to_string())
        .emit("direct", &2)
        .await
        .expect("broadcast");
    c.expect_text(r#"42["direct",2]"#).await;
    expect_nothing_before_marker(&mut a, &sa).await;
    expect_nothing_before_marker(&mut b, &sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_broadcast_and_to_exclude_the_sender() {
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client().await;
    let (mut b, sb) = api.client().await;
    let (mut c, sc) = api.client().await;
    sa.join(["r"]);
    sb.join(["r"]);

    sa.broadcast()
        .emit("all-but-a", &1)
        .await
        .expect("broadcast");
    b.expect_text(r#"42["all-but-a",1]"#).await;
    c.expect_text(r#"42["all-but-a",1]"#).await;
    expect_nothing_before_marker(&mut a, &sa).await;

    sa.to("r").emit("room-but-a", &2).await.expect("broadcast");
    b.expect_text(r#"42["room-but-a",2]"#).await;
    expect_nothing_before_marker(&mut a, &sa).await;
    expect_nothing_before_marker(&mut c, &sc).await;
    expect_nothing_before_marker(&mut b, &sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn except_excludes_a_room() {
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client().await;
    let (mut b, sb) = api.client().await;
    let (mut c, sc) = api.client().await;
    sa.join(["r"]);
    sb.join(["r"]);
    api.io
        .broadcast()
        .except("r")
        .emit("outside", &1)
        .await
        .expect("broadcast");
    c.expect_text(r#"42["outside",1]"#).await;
    expect_nothing_before_marker(&mut a, &sa).await;
    expect_nothing_before_marker(&mut b, &sb).await;

    // socket.except(room) also excludes the sender.
    sc.except("r").emit("from-c", &2).await.expect("broadcast");
    expect_nothing_before_marker(&mut a, &sa).await;
    expect_nothing_before_marker(&mut b, &sb).await;
    expect_nothing_before_marker(&mut c, &sc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_rooms_are_a_union_without_duplicates() {
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client().await;
    let (mut b, sb) = api.client().await;
    let (mut c, sc) = api.client().await;
    sa.join(["r1", "r2"]);
    sb.join(["r2"]);
    api.io
        .to("r1")
        .to("r2")
        .emit("union", &1)
        .await
        .expect("broadcast");
    a.expect_text(r#"42["union",1]"#).await;
    expect_nothing_before_marker(&mut a, &sa).await;
    b.expect_text(r#"42["union",1]"#).await;
    expect_nothing_before_marker(&mut b, &sb).await;
    expect_nothing_before_marker(&mut c, &sc).await;

    api.io
        .ns("/")
        .broadcast()
        .to_many(["r1", "r2", "r1"])
        .emit("union2", &2)
        .await
        .expect("broadcast");
    a.expect_text(r#"42["union2",2]"#).await;
    expect_nothing_before_marker(&mut a, &sa).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_emit_with_ack_collects_every_response() {
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client().await;
    let (mut b, sb) = api.client().await;
    let (mut c, sc) = api.client().await;
    sa.join(["r"]);
    sb.join(["r"]);
    let op = api.io.to("r").timeout(Duration::from_secs(5));
    let asking = tokio::spawn(async move { op.emit_with_ack("ping", "x").await });
    let (id_a, rest_a) = ack_request(&a.recv_text().await);
    let (id_b, rest_b) = ack_request(&b.recv_text().await);
    assert_eq!(id_a, id_b, "one packet id for every recipient");
    assert_eq!(rest_a, r#"["ping","x"]"#);
    assert_eq!(rest_b, rest_a);
    a.send_text(&format!(r#"43{id_a}["from-a"]"#)).await;
    b.send_text(&format!(r#"43{id_b}["from-b",1]"#)).await;
    let responses = bounded("the broadcast acks", asking)
        .await
        .expect("task")
        .expect("all answered");
    assert_eq!(responses.len(), 2);
    let by_socket: Vec<(String, Vec<Value>)> = responses
        .into_iter()
        .map(|r| (r.socket.expect("a local socket").to_string(), r.args))
        .collect();
    assert!(by_socket.contains(&(sa.id().to_string(), vec![Value::from("from-a")])));
    assert!(by_socket.contains(&(
        sb.id().to_string(),
        vec![Value::from("from-b"), Value::from(1u64)]
    )));
    expect_nothing_before_marker(&mut c, &sc).await;

    // No recipient: an immediate empty answer.
    let none = api
        .io
        .to("empty-room")
        .emit_with_ack("ping", "x")
        .await
        .expect("empty broadcast");
    assert!(none.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_emit_with_ack_timeout_keeps_partial_responses() {
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client().await;
    let (mut b, _sb) = api.client().await;
    let op = api.io.broadcast().timeout(Duration::from_millis(300));
    let asking = tokio::spawn(async move { op.emit_with_ack("ping", &()).await });
    let (id, _) = ack_request(&a.recv_text().await);
    let _ = ack_request(&b.recv_text().await);
    a.send_text(&format!(r#"43{id}["only-a"]"#)).await;
    // b never answers.
    let err = bounded("the broadcast timeout", asking)
        .await
        .expect("task")
        .expect_err("b never answered");
    assert!(matches!(err.error, BroadcastError::Timeout), "{err:?}");
    assert_eq!(err.responses.len(), 1);
    assert_eq!(err.responses[0].socket, Some(sa.id()));
    assert_eq!(err.responses[0].args, vec![Value::from("only-a")]);
    // b's late answer is ignored.
    b.send_text(&format!(r#"43{id}["late"]"#)).await;
    expect_nothing_before_marker(&mut a, &sa).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_sockets_describes_the_selected_sockets() {
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Profile {
        name: String,
        level: u32,
    }
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client_with_auth(Some(r#"{"user":"alice"}"#)).await;
    let (mut b, sb) = api.client().await;
    let (_c, _sc) = api.client().await;
    sa.join(["r"]);
    sb.join(["r"]);
    sa.set_data(&Profile {
        name: "alice".into(),
        level: 3,
    })
    .expect("set_data");
    let mut fetched = api.io.to("r").fetch_sockets().await.expect("fetch");
    assert_eq!(fetched.len(), 2);
    fetched.sort_by_key(|r| r.id() != sa.id());
    let (ia, ib) = (fetched[0].info(), fetched[1].info());
    assert_eq!(ia.id, sa.id());
    assert_eq!(ib.id, sb.id());
    assert_eq!(ia.nsp, "/");
    let rooms: HashSet<&str> = ia.rooms.iter().map(String::as_str).collect();
    assert_eq!(rooms, HashSet::from([sa.id().as_str(), "r"]));
    assert_eq!(ia.data, json!({ "name": "alice", "level": 3 }));
    // Untouched data is an empty object, as the reference's `socket.data`.
    assert_eq!(ib.data, json!({}));
    assert_eq!(
        ia.handshake.auth().get("user").and_then(Value::as_str),
        Some("alice")
    );
    assert_eq!(ia.handshake.query_param("EIO"), Some("4"));
    assert_eq!(ia.handshake.query_param("transport"), Some("websocket"));
    assert!(ia.handshake.address().is_some());
    assert_eq!(
        fetched[0].data::<Profile>().expect("typed data"),
        Profile {
            name: "alice".into(),
            level: 3
        }
    );
    // Every socket of the namespace.
    assert_eq!(
        api.io
            .broadcast()
            .fetch_sockets()
            .await
            .expect("fetch")
            .len(),
        3
    );

    // Operations on a fetched socket reach that socket only.
    fetched[0].emit("fetched", &1).await.expect("emit");
    a.expect_text(r#"42["fetched",1]"#).await;
    expect_nothing_before_marker(&mut b, &sb).await;
    fetched[1].join(["joined-remotely"]).await.expect("join");
    assert!(sb.rooms().contains(&"joined-remotely".to_owned()));
    fetched[1].disconnect(false).await.expect("disconnect");
    b.expect_text("41").await;
    assert!(!sb.connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_join_leave_disconnect_apply_to_the_selection() {
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client().await;
    let (mut b, sb) = api.client().await;
    let (mut c, sc) = api.client().await;
    sa.join(["r"]);
    sb.join(["r"]);
    let ns = api.io.ns("/");
    ns.to("r").join(["r2", "r3"]).await.expect("join");
    for s in [&sa, &sb] {
        let rooms = s.rooms();
        assert!(rooms.contains(&"r2".to_owned()) && rooms.contains(&"r3".to_owned()));
    }
    assert!(!sc.rooms().contains(&"r2".to_owned()));
    ns.to("r").leave(["r3"]).await.expect("leave");
    for s in [&sa, &sb] {
        assert!(!s.rooms().contains(&"r3".to_owned()));
        assert!(s.rooms().contains(&"r2".to_owned()));
    }
    let mut all_rooms = ns.broadcast().rooms().await.expect("rooms");
    all_rooms.sort();
    assert!(all_rooms.contains(&"r".to_owned()) && all_rooms.contains(&"r2".to_owned()));

    ns.to("r").disconnect(false).await.expect("disconnect");
    a.expect_text("41").await;
    b.expect_text("41").await;
    let mut gone = HashSet::new();
    for _ in 0..2 {
        let left = api.disconnected().await;
        assert_eq!(left.reason, DisconnectReason::ServerNamespaceDisconnect);
        gone.insert(left.id);
    }
    assert_eq!(
        gone,
        HashSet::from([sa.id().to_string(), sb.id().to_string()])
    );
    assert!(!sa.connected() && !sb.connected() && sc.connected());
    // Only the namespace was left: the connections stay open.
    assert_eq!(api.io.engine().session_count(), 3);
    sio_join(&mut a, "/", None).await;
    expect_nothing_before_marker(&mut c, &sc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_reason_client_namespace_disconnect() {
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client().await;
    a.send_text("41").await;
    let left = api.disconnected().await;
    assert_eq!(left.id, sa.id().to_string());
    assert_eq!(left.reason, DisconnectReason::ClientNamespaceDisconnect);
    assert_eq!(left.reason.as_str(), "client namespace disconnect");
    assert_eq!(api.io.engine().session_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_reason_server_namespace_disconnect() {
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client().await;
    sa.disconnect();
    a.expect_text("41").await;
    let left = api.disconnected().await;
    assert_eq!(left.reason, DisconnectReason::ServerNamespaceDisconnect);
    assert_eq!(left.reason.as_str(), "server namespace disconnect");
    assert!(!sa.connected());
    assert!(sa.emit("after", &()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_reason_transport_close() {
    let mut api = Api::quiet().await;
    let (a, _sa) = api.client().await;
    a.close().await;
    let left = api.disconnected().await;
    assert_eq!(left.reason, DisconnectReason::TransportClose);
    assert_eq!(left.reason.as_str(), "transport close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_reason_ping_timeout() {
    let mut api = Api::start(fast_heartbeat()).await;
    let (mut a, _sa) = api.client().await;
    a.expect_text("2").await;
    // Never answered.
    let left = api.disconnected().await;
    assert_eq!(left.reason, DisconnectReason::PingTimeout);
    assert_eq!(left.reason.as_str(), "ping timeout");
    a.expect_closed().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnecting_still_sees_the_rooms() {
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client().await;
    sa.join(["r"]);
    a.send_text("41").await;
    let first = recv("disconnecting", &mut api.left).await;
    assert_eq!(first.stage, "disconnecting");
    let mut expected = vec![sa.id().to_string(), "r".to_owned()];
    expected.sort();
    assert_eq!(first.rooms, expected);
    let second = recv("disconnect", &mut api.left).await;
    assert_eq!(second.stage, "disconnect");
    assert!(
        second.rooms.is_empty(),
        "rooms left by then: {:?}",
        second.rooms
    );
    assert!(
        api.io
            .to("r")
            .fetch_sockets()
            .await
            .expect("fetch")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_close_disconnects_everyone_with_server_shutting_down() {
    let mut api = Api::quiet().await;
    let (mut a, _sa) = api.client().await;
    let (mut b, _sb) = api.client().await;
    let io = api.io.clone();
    let closing = tokio::spawn(async move { io.close(Duration::from_secs(5)).await });
    for ws in [&mut a, &mut b] {
        loop {
            match ws.recv().await {
                Msg::Text(t) => assert!(!t.starts_with("41"), "no DISCONNECT on shutdown: {t}"),
                Msg::Binary(_) => panic!("unexpected binary frame"),
                Msg::Close(_) | Msg::Gone => break,
            }
        }
    }
    for _ in 0..2 {
        let left = api.disconnected().await;
        assert_eq!(left.reason, DisconnectReason::ServerShuttingDown);
        assert_eq!(left.reason.as_str(), "server shutting down");
    }
    bounded("io.close", closing).await.expect("task");
    assert_eq!(api.io.engine().session_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_data_round_trip() {
    #[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
    struct User {
        id: u64,
        name: String,
        tags: Vec<String>,
    }
    let mut api = Api::quiet().await;
    let (_a, sa) = api.client().await;
    assert!(sa.data::<User>().is_err(), "no data yet");
    let user = User {
        id: 7,
        name: "ada".into(),
        tags: vec!["x".into()],
    };
    sa.set_data(&user).expect("set");
    assert_eq!(sa.data::<User>().expect("get"), user);
    // Every handle of the socket sees it.
    let same = api.io.ns("/").get_socket(sa.id()).expect("socket");
    assert_eq!(same.data::<User>().expect("get"), user);
    sa.set_data(&42u32).expect("set");
    assert_eq!(same.data::<u32>().expect("get"), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_frames_are_byte_identical() {
    let mut api = Api::quiet().await;
    let (mut a, _sa) = api.client().await;
    let (mut b, _sb) = api.client().await;
    let payload = json!({
        "text": "x".repeat(10_000),
        "nested": {"z": 1, "a": [1.5, null, true]},
        "bin": "binary below",
    });
    api.io.emit("big", &payload).await.expect("broadcast");
    let fa = a.recv_text().await;
    let fb = b.recv_text().await;
    assert_eq!(fa, fb);
    assert_eq!(fa, format!("42[\"big\",{payload}]"));

    // With a binary attachment: the text and the attachment both match.
    let bin = switchboard::Value::Binary(bytes::Bytes::from_static(&[9, 8, 7]));
    api.io.emit_many_values(&[Value::from("bin"), bin]).await;
    let (ta, ba) = (a.recv_text().await, a.recv_binary().await);
    let (tb, bb) = (b.recv_text().await, b.recv_binary().await);
    assert_eq!((&ta, &ba), (&tb, &bb));
    assert_eq!(
        ta,
        r#"451-["bin-event","bin",{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(ba, [9, 8, 7]);
}

trait EmitValues {
    async fn emit_many_values(&self, args: &[Value]);
}

impl EmitValues for SocketIo {
    async fn emit_many_values(&self, args: &[Value]) {
        self.broadcast()
            .emit_many("bin-event", args)
            .await
            .expect("broadcast");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_handlers_serve_every_socket_and_socket_handlers_win() {
    let mut api = Api::quiet().await;
    api.io.ns("/").on(
        "shared",
        |_: Socket, mut event: switchboard::Event| async move {
            let _ = event.ack("from the namespace");
        },
    );
    let (mut a, sa) = api.client().await;
    let (mut b, _sb) = api.client().await;
    // Every socket gets the namespace handler.
    a.send_text(r#"421["shared"]"#).await;
    a.expect_text(r#"431["from the namespace"]"#).await;
    b.send_text(r#"422["shared"]"#).await;
    b.expect_text(r#"432["from the namespace"]"#).await;
    // A socket's own handler for the same event takes precedence.
    sa.on(
        "shared",
        |_: Socket, mut event: switchboard::Event| async move {
            let _ = event.ack("from the socket");
        },
    );
    a.send_text(r#"423["shared"]"#).await;
    a.expect_text(r#"433["from the socket"]"#).await;
    b.send_text(r#"424["shared"]"#).await;
    b.expect_text(r#"434["from the namespace"]"#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_room_with_another_sockets_id_does_not_hide_that_socket() {
    let mut api = Api::quiet().await;
    let (mut a, sa) = api.client().await;
    let (mut b, sb) = api.client().await;
    // A joins a room named after B's id (client-chosen names can do this).
    sa.join([sb.id().to_string()]);
    api.io
        .to(sb.id().to_string())
        .emit("both", &1)
        .await
        .expect("broadcast");
    a.expect_text(r#"42["both",1]"#).await;
    b.expect_text(r#"42["both",1]"#).await;
    // As in the reference, that room and B's own room are one room: B's
    // broadcast (which excepts it) reaches neither B nor A.
    let (mut c, sc) = api.client().await;
    sb.broadcast().emit("from-b", &2).await.expect("broadcast");
    c.expect_text(r#"42["from-b",2]"#).await;
    expect_nothing_before_marker(&mut b, &sb).await;
    expect_nothing_before_marker(&mut a, &sa).await;
    drop(sc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_joined_in_a_connect_middleware_are_kept() {
    let io = SocketIo::builder().build();
    let (tx, mut sockets) = mpsc::unbounded_channel();
    io.ns("/")
        .use_middleware(|socket: Socket| async move {
            socket.join(["vip"]);
            Ok(())
        })
        .on_connection(move |socket: Socket| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(socket);
            }
        });
    let addr = start_io(&io).await;
    let mut ws = sio_open(addr).await;
    sio_join(&mut ws, "/", None).await;
    let socket = recv("the socket", &mut sockets).await;
    assert!(
        socket.rooms().contains(&"vip".to_owned()),
        "{:?}",
        socket.rooms()
    );
    io.to("vip")
        .emit("hello-vip", &())
        .await
        .expect("broadcast");
    ws.expect_text(r#"42["hello-vip",null]"#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_rooms_lists_the_rooms_of_the_selection() {
    let mut api = Api::quiet().await;
    let (_a, sa) = api.client().await;
    let (_b, sb) = api.client().await;
    sa.join(["red", "blue"]);
    sb.join(["green"]);
    let rooms = api.io.to("red").rooms().await.expect("rooms");
    let mut expected = vec!["blue".to_owned(), "red".to_owned(), sa.id().to_string()];
    expected.sort();
    assert_eq!(rooms, expected);
}

#[tokio::test(flavor = "current_thread")]
async fn a_slow_consumer_is_closed_outside_the_emitting_call() {
    // On one thread, a task spawned by the emit cannot run before the emit
    // returns: the disconnect handler must not have run inside it (it could
    // take a lock the emitting code holds).
    let io = SocketIo::builder()
        .config(SocketIoConfig {
            engine: EngineConfig {
                path: "/socket.io/".into(),
                max_queued_frames: 4,
                ..EngineConfig::default()
            },
            ..SocketIoConfig::default()
        })
        .build();
    let (tx, mut sockets) = mpsc::unbounded_channel();
    let left = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = left.clone();
    io.on_connection("/", move |socket: Socket| {
        let tx = tx.clone();
        let seen = seen.clone();
        async move {
            socket.on_disconnect(move |_, reason| {
                let seen = seen.clone();
                async move {
                    assert_eq!(reason, DisconnectReason::SlowConsumer);
                    seen.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            });
            let _ = tx.send(socket);
        }
    });
    let addr = start_io(&io).await;
    let mut ws = sio_open(addr).await;
    sio_join(&mut ws, "/", None).await;
    let socket = recv("the socket", &mut sockets).await;
    // Fill the queue synchronously: the writer cannot run in between.
    let mut overflowed = false;
    for _ in 0..10 {
        if let Err(e) = socket.emit("x", &()) {
            assert!(matches!(
                e,
                switchboard::EmitError::SlowConsumer | switchboard::EmitError::Disconnected
            ));
            overflowed = true;
            break;
        }
    }
    assert!(overflowed, "the queue of 4 frames must overflow");
    assert!(
        !left.load(std::sync::atomic::Ordering::SeqCst),
        "handler ran inside emit"
    );
    wait_until("the disconnect handler", || {
        left.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
}
