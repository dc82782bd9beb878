//! The Socket.IO client against a real socket.io 4.8 server (Node).
//! Needs `npm ci --prefix crates/client/tests/node`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{DEADLINE, NodeServer, fast_reconnection, next, wait_until};
use serde::{Deserialize, Serialize};
use switchboard_client::{
    AckError, BufferPolicy, DisconnectReason, EmitError, Manager, ManagerEvent, Socket,
    SocketStatus, Value,
};
use tokio::sync::mpsc;

const ACK: Duration = Duration::from_secs(10);

fn collect(socket: &Socket, event: &str) -> mpsc::UnboundedReceiver<Vec<Value>> {
    let (tx, rx) = mpsc::unbounded_channel();
    socket.on(event, move |ev| {
        let _ = tx.send(ev.args().to_vec());
    });
    rx
}

async fn connected(socket: &Socket) {
    tokio::time::timeout(DEADLINE, socket.wait_connected())
        .await
        .expect("connects before the deadline")
        .expect("connected");
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Chat {
    user: String,
    text: String,
    n: u32,
}

#[tokio::test]
async fn emit_ack_binary_and_handlers_against_node() {
    let server = NodeServer::start(0).await;
    let manager = Manager::builder(&server.url()).build().unwrap();
    let socket = manager.socket("/");
    let (any_tx, mut any_rx) = mpsc::unbounded_channel();
    socket.on_any(move |ev| {
        let _ = any_tx.send(ev.name().to_owned());
    });
    let mut welcome = collect(&socket, "welcome");
    let mut echo = collect(&socket, "echo");
    let mut answer = collect(&socket, "answer");
    socket.on("question", |ev| {
        let q: String = ev.data().unwrap();
        ev.ack(&format!("answer to {q}")).unwrap();
    });
    socket.connect();
    connected(&socket).await;
    assert!(socket.id().is_some());
    next(&mut welcome).await;
    assert_eq!(next(&mut any_rx).await, "welcome");

    // Typed payloads through serde, with an ack.
    let chat = Chat {
        user: "ada".into(),
        text: "hello".into(),
        n: 7,
    };
    let back: Chat = socket.emit_with_ack("echo-ack", &chat, ACK).await.unwrap();
    assert_eq!(back, chat);

    // Several arguments and binary both ways.
    let blob = Bytes::from_static(b"\x00\x01\xffbinary");
    socket
        .emit_many(
            "echo",
            &(1, "two", blob.clone(), serde_json::json!({"k": [true]})),
        )
        .unwrap();
    let args = next(&mut echo).await;
    // socket.io 4.8 with connection state recovery appends the packet's
    // offset as a last argument (the JS client keeps it too).
    assert_eq!(args.len(), 5, "{args:?}");
    assert!(args[4].as_str().is_some());
    assert_eq!(args[0].as_u64(), Some(1));
    assert_eq!(args[1].as_str(), Some("two"));
    assert_eq!(args[2].as_bytes(), Some(&blob));
    assert_eq!(next(&mut any_rx).await, "echo");

    let got = socket
        .emit_many_with_ack_values("get-binary", &(), ACK)
        .await
        .unwrap();
    assert_eq!(got[0].as_bytes().map(|b| b.to_vec()), Some(vec![1, 2, 3]));
    assert_eq!(
        got[1]
            .get("nested")
            .and_then(Value::as_bytes)
            .map(|b| b.to_vec()),
        Some(b"hi".to_vec())
    );
    let typed_bin: Bytes = socket.emit_with_ack("echo-ack", &blob, ACK).await.unwrap();
    assert_eq!(typed_bin, blob);

    // The server asks, we acknowledge.
    socket.emit("ask", "life").unwrap();
    let a = next(&mut answer).await;
    assert_eq!(a[0].as_str(), Some("answer to life"));

    // Reserved names are refused locally.
    assert!(matches!(
        socket.emit("disconnect", &()),
        Err(EmitError::Reserved(_))
    ));
    // An event nobody acknowledges times out.
    let r: Result<(), AckError> = socket
        .emit_with_ack("echo", &1, Duration::from_millis(200))
        .await;
    assert!(matches!(r, Err(AckError::Timeout)), "{r:?}");
    manager.close();
}

#[tokio::test]
async fn namespaces_share_one_connection_with_auth_headers_and_query() {
    let server = NodeServer::start(0).await;
    let manager = Manager::builder(&server.url())
        .header("x-test", "from-header")
        .query("k", "v w")
        .build()
        .unwrap();
    let root = manager.socket("/");
    let admin = manager.socket("/admin");
    let token = Arc::new(Mutex::new("wrong".to_owned()));
    let t = token.clone();
    let calls = Arc::new(Mutex::new(0u32));
    let c = calls.clone();
    admin.set_auth(move || {
        *c.lock().unwrap() += 1;
        serde_json::json!({"token": t.lock().unwrap().clone()})
    });
    let (err_tx, mut err_rx) = mpsc::unbounded_channel();
    admin.on_connect_error(move |v| {
        let _ = err_tx.send(v.clone());
    });
    root.connect();
    admin.connect();
    connected(&root).await;
    let refusal = next(&mut err_rx).await;
    assert_eq!(
        refusal.get("message").and_then(Value::as_str),
        Some("forbidden")
    );
    assert_eq!(
        refusal
            .get("data")
            .and_then(|d| d.get("code"))
            .and_then(Value::as_str),
        Some("bad_token")
    );
    assert_eq!(admin.status(), SocketStatus::Refused);

    // The auth closure is read again at the next connection.
    *token.lock().unwrap() = "secret".into();
    admin.connect();
    connected(&admin).await;
    assert_eq!(*calls.lock().unwrap(), 2);

    let a: String = root.emit_many_with_ack("conn-id", &(), ACK).await.unwrap();
    let b: String = admin.emit_many_with_ack("conn-id", &(), ACK).await.unwrap();
    assert_eq!(a, b, "both namespaces ride one Engine.IO connection");
    let transport: String = root
        .emit_many_with_ack("transport", &(), ACK)
        .await
        .unwrap();
    assert_eq!(transport, "websocket");

    let hs: serde_json::Value = admin
        .emit_many_with_ack("handshake", &(), ACK)
        .await
        .unwrap();
    assert_eq!(hs["header"], "from-header");
    assert_eq!(hs["query"], "v w");
    assert_eq!(hs["auth"]["token"], "secret");

    // Leaving one namespace keeps the other.
    admin.disconnect();
    let still: String = root.emit_many_with_ack("conn-id", &(), ACK).await.unwrap();
    assert_eq!(still, a);
    manager.close();
}

#[tokio::test]
async fn offline_buffer_bound_and_policies() {
    let server = NodeServer::start(0).await;
    // Reject: the fourth packet is refused while nothing is connected.
    let manager = Manager::builder(&server.url())
        .offline_buffer(3, BufferPolicy::Reject)
        .build()
        .unwrap();
    let socket = manager.socket("/");
    for i in 0..3 {
        socket.emit("log", &i).unwrap();
    }
    assert!(matches!(socket.emit("log", &3), Err(EmitError::BufferFull)));
    // Volatile packets are dropped while disconnected, never buffered.
    socket.emit_volatile("log", &"volatile").unwrap();
    socket.connect();
    connected(&socket).await;
    let log: Vec<Value> = socket
        .emit_many_with_ack("get-log", &(), ACK)
        .await
        .unwrap();
    assert_eq!(log, vec![Value::from(0u64), 1u64.into(), 2u64.into()]);
    manager.close();

    // DropOldest: the oldest goes, and its ack fails with Dropped.
    let manager = Manager::builder(&server.url())
        .offline_buffer(2, BufferPolicy::DropOldest)
        .build()
        .unwrap();
    let socket = manager.socket("/admin");
    socket.set_auth(|| serde_json::json!({"token": "secret"}));
    let s2 = socket.clone();
    let first =
        tokio::spawn(async move { s2.emit_with_ack::<_, Value>("log", &"first", ACK).await });
    // The first emit is queued once the task ran.
    wait_until(|| socket.buffered() == 1).await;
    socket.emit("log", &"a").unwrap();
    socket.emit("log", &"b").unwrap();
    let r = first.await.unwrap();
    assert!(matches!(r, Err(AckError::Dropped)), "{r:?}");
    socket.connect();
    connected(&socket).await;
    let log: Vec<Value> = socket
        .emit_many_with_ack("get-log", &(), ACK)
        .await
        .unwrap();
    assert_eq!(log, vec![Value::from("a"), "b".into()]);
    manager.close();
}

#[tokio::test]
async fn reconnects_after_server_restart_and_flushes_the_buffer_in_order() {
    let server = NodeServer::start(0).await;
    let port = server.port;
    let manager = Manager::builder(&server.url())
        .reconnection(fast_reconnection())
        .build()
        .unwrap();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    manager.on_event(move |e| {
        let _ = ev_tx.send(e.clone());
    });
    let socket = manager.socket("/");
    let (dc_tx, mut dc_rx) = mpsc::unbounded_channel();
    socket.on_disconnect(move |r| {
        let _ = dc_tx.send(r);
    });
    let connects = Arc::new(Mutex::new(0u32));
    let c = connects.clone();
    socket.on_connect(move || *c.lock().unwrap() += 1);
    socket.connect();
    connected(&socket).await;
    socket.emit("log", &"before").unwrap();
    let log: Vec<Value> = socket
        .emit_many_with_ack("get-log", &(), ACK)
        .await
        .unwrap();
    assert_eq!(log, vec![Value::from("before")]);

    server.kill().await;
    let reason = next(&mut dc_rx).await;
    assert!(
        matches!(
            reason,
            DisconnectReason::TransportClose | DisconnectReason::TransportError
        ),
        "{reason:?}"
    );
    // Emits while the server is down wait in the buffer.
    for i in 0..200u32 {
        socket.emit("log", &i).unwrap();
    }
    // At least one failed attempt is reported before the server is back.
    let mut saw_attempt = false;
    loop {
        match next(&mut ev_rx).await {
            ManagerEvent::ReconnectError(_) => break,
            ManagerEvent::ReconnectAttempt(_) => saw_attempt = true,
            _ => {}
        }
    }
    assert!(saw_attempt, "attempts are reported");
    let server = NodeServer::start(port).await;
    connected(&socket).await;
    let log: Vec<Value> = socket
        .emit_many_with_ack("get-log", &(), ACK)
        .await
        .unwrap();
    let expected: Vec<Value> = (0..200u64).map(Value::from).collect();
    assert_eq!(
        log, expected,
        "the new process got the buffer, in order, once"
    );
    assert_eq!(*connects.lock().unwrap(), 2);
    let mut saw_reconnect = false;
    while let Ok(e) = ev_rx.try_recv() {
        saw_reconnect |= matches!(e, ManagerEvent::Reconnect(n) if n >= 1);
    }
    assert!(saw_reconnect, "a reconnect event after the attempts");
    manager.close();
    drop(server);
}

#[tokio::test]
async fn gives_up_after_the_configured_attempts() {
    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let manager = Manager::builder(&format!("http://127.0.0.1:{port}"))
        .reconnection(switchboard_client::Reconnection {
            attempts: Some(3),
            ..fast_reconnection()
        })
        .build()
        .unwrap();
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    manager.on_event(move |e| {
        let _ = ev_tx.send(e.clone());
    });
    let socket = manager.socket("/");
    socket.connect();
    // An emit waiting in the offline buffer for a connection that never
    // comes: its ack fails when the manager gives up, not at its timeout.
    let waiting = socket.clone();
    let ack = tokio::spawn(async move {
        waiting
            .emit_with_ack::<_, serde_json::Value>("echo", &1, Duration::from_secs(600))
            .await
    });
    let mut events = Vec::new();
    loop {
        let e = next(&mut ev_rx).await;
        let done = e == ManagerEvent::ReconnectFailed;
        events.push(e);
        if done {
            break;
        }
    }
    let answer = tokio::time::timeout(Duration::from_secs(60), ack)
        .await
        .expect("the ack still waits after the manager gave up")
        .unwrap();
    assert!(
        matches!(answer, Err(switchboard_client::AckError::Disconnected)),
        "{answer:?}"
    );
    let attempts: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            ManagerEvent::ReconnectAttempt(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, vec![1, 2, 3]);
    assert!(matches!(events[0], ManagerEvent::Error(_)));
    let errors = events
        .iter()
        .filter(|e| matches!(e, ManagerEvent::ReconnectError(_)))
        .count();
    assert_eq!(errors, 3);
}

#[tokio::test]
async fn a_server_disconnect_is_not_reconnected() {
    let server = NodeServer::start(0).await;
    let manager = Manager::builder(&server.url())
        .reconnection(fast_reconnection())
        .build()
        .unwrap();
    let socket = manager.socket("/");
    let (dc_tx, mut dc_rx) = mpsc::unbounded_channel();
    socket.on_disconnect(move |r| {
        let _ = dc_tx.send(r);
    });
    socket.connect();
    connected(&socket).await;
    socket.emit("kick", &()).unwrap();
    assert_eq!(next(&mut dc_rx).await, DisconnectReason::IoServerDisconnect);
    assert_eq!(socket.status(), SocketStatus::Disconnected);
    // The manager closes the connection once no socket wants it.
    wait_until(|| !manager.is_open()).await;
    // Connecting again by hand works.
    socket.connect();
    connected(&socket).await;
    manager.close();
}

#[tokio::test]
async fn recovers_the_session_after_the_server_drops_the_transport() {
    let server = NodeServer::start(0).await;
    let manager = Manager::builder(&server.url())
        .reconnection(fast_reconnection())
        .build()
        .unwrap();
    let socket = manager.socket("/");
    let mut ticks = collect(&socket, "tick");
    let mut welcome = collect(&socket, "welcome");
    socket.connect();
    connected(&socket).await;
    assert!(!socket.recovered());
    let first_id = socket.id();
    let w = next(&mut welcome).await;
    assert_eq!(w[0].get("recovered"), Some(&Value::Bool(false)));
    // One broadcast gives the client an offset to resume from.
    socket.emit("tick-now", &1).unwrap();
    assert_eq!(next(&mut ticks).await[0].as_u64(), Some(1));

    // The server closes the transport, then broadcasts 20 ticks.
    socket.emit("drop-and-tick", &20).unwrap();
    let mut got = Vec::new();
    while got.len() < 20 {
        got.push(next(&mut ticks).await[0].as_u64().unwrap());
    }
    assert_eq!(
        got,
        (1..=20).collect::<Vec<u64>>(),
        "all missed ticks, in order"
    );
    assert!(socket.recovered());
    assert_eq!(socket.id(), first_id, "same socket id after recovery");
    let w = next(&mut welcome).await;
    assert_eq!(w[0].get("recovered"), Some(&Value::Bool(true)));
    // Nothing more (no duplicate) arrives before a fresh marker broadcast.
    socket.emit("tick-now", &1).unwrap();
    assert_eq!(next(&mut ticks).await[0].as_u64(), Some(1));
    manager.close();
}

async fn exercise_transport(transports: switchboard_client::Transports, expected: &str) {
    let server = NodeServer::start(0).await;
    let manager = Manager::builder(&server.url())
        .transports(transports)
        .header("x-test", "h")
        .build()
        .unwrap();
    let root = manager.socket("/");
    let admin = manager.socket("/admin");
    admin.set_auth(|| serde_json::json!({"token": "secret"}));
    let mut echo = collect(&root, "echo");
    let mut answer = collect(&root, "answer");
    root.on("question", |ev| {
        let _ = ev.ack(&Bytes::from_static(b"\x00bin-answer"));
    });
    root.connect();
    admin.connect();
    connected(&root).await;
    connected(&admin).await;
    assert_eq!(manager.transport(), Some(expected));
    let t: String = root
        .emit_many_with_ack("transport", &(), ACK)
        .await
        .unwrap();
    assert_eq!(t, expected, "the server sees the same transport");
    let a: String = root.emit_many_with_ack("conn-id", &(), ACK).await.unwrap();
    let b: String = admin.emit_many_with_ack("conn-id", &(), ACK).await.unwrap();
    assert_eq!(a, b);
    let hs: serde_json::Value = root
        .emit_many_with_ack("handshake", &(), ACK)
        .await
        .unwrap();
    assert_eq!(hs["header"], "h");

    // Binary both ways (base64 inside polling payloads).
    let blob = Bytes::from(vec![0u8, 1, 2, 254, 255]);
    root.emit_many("echo", &(blob.clone(), "x")).unwrap();
    let args = next(&mut echo).await;
    assert_eq!(args[0].as_bytes(), Some(&blob));
    let back: Bytes = root.emit_with_ack("echo-ack", &blob, ACK).await.unwrap();
    assert_eq!(back, blob);
    root.emit("ask", "q").unwrap();
    let a = next(&mut answer).await;
    assert_eq!(
        a[0].as_bytes().map(|b| b.to_vec()),
        Some(b"\x00bin-answer".to_vec())
    );
    // Many packets in a row keep their order.
    for i in 0..300u32 {
        root.emit("log", &i).unwrap();
    }
    let log: Vec<u32> = root.emit_many_with_ack("get-log", &(), ACK).await.unwrap();
    assert_eq!(log, (0..300).collect::<Vec<u32>>());
    manager.close();
}

#[tokio::test]
async fn long_polling_only() {
    exercise_transport(switchboard_client::Transports::Polling, "polling").await;
}

#[tokio::test]
async fn long_polling_then_upgrade_to_websocket() {
    exercise_transport(
        switchboard_client::Transports::PollingThenUpgrade,
        "websocket",
    )
    .await;
}

#[tokio::test]
async fn recovery_over_long_polling() {
    let server = NodeServer::start(0).await;
    let manager = Manager::builder(&server.url())
        .transports(switchboard_client::Transports::Polling)
        .reconnection(fast_reconnection())
        .build()
        .unwrap();
    let socket = manager.socket("/");
    let mut ticks = collect(&socket, "tick");
    socket.connect();
    connected(&socket).await;
    socket.emit("tick-now", &1).unwrap();
    assert_eq!(next(&mut ticks).await[0].as_u64(), Some(1));
    socket.emit("drop-and-tick", &10).unwrap();
    let mut got = Vec::new();
    while got.len() < 10 {
        got.push(next(&mut ticks).await[0].as_u64().unwrap());
    }
    assert_eq!(got, (1..=10).collect::<Vec<u64>>());
    assert!(socket.recovered());
    manager.close();
}
