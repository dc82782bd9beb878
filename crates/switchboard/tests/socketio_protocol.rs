//! Socket.IO v5 over raw WebSocket frames, like the official test suite:
//! namespaces, events, acks, binary attachments, middlewares.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use serde_json::json;
use switchboard::{
    ConnectError, DisconnectReason, Event, NsMatcher, Socket, SocketIo, SocketIoConfig, Value,
};
use tokio::sync::mpsc;

/// The server of the official suite, plus a few namespaces for the
/// features the suite does not cover.
fn suite_io(config: SocketIoConfig) -> SocketIo {
    let io = SocketIo::builder().config(config).build();
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
    io
}

async fn suite_server() -> (SocketAddr, SocketIo) {
    let io = suite_io(SocketIoConfig::default());
    let addr = start_io(&io).await;
    (addr, io)
}

/// Opens a connection and joins `/`, consuming the `auth` event.
async fn init(addr: SocketAddr) -> (Ws, String) {
    let (mut ws, sid) = sio_client(addr).await;
    ws.expect_text(r#"42["auth",{}]"#).await;
    (ws, sid)
}

fn connect_json(reply: &str, prefix: &str) -> serde_json::Map<String, serde_json::Value> {
    let json = reply
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected {prefix}..., got {reply:?}"));
    let v: serde_json::Value = serde_json::from_str(json).expect("json");
    v.as_object().expect("object").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_main_namespace() {
    let (addr, io) = suite_server().await;
    let mut ws = sio_open(addr).await;
    ws.send_text("40").await;
    let reply = ws.recv_text().await;
    let obj = connect_json(&reply, "40");
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["sid"]);
    let sid = obj["sid"].as_str().expect("sid string");
    assert_eq!(sid.len(), 20);
    ws.expect_text(r#"42["auth",{}]"#).await;
    // The socket id is not the engine session id.
    let sockets = io.ns("/").sockets();
    assert_eq!(sockets.len(), 1);
    assert_eq!(sockets[0].id().as_str(), sid);
    assert_ne!(sockets[0].session_id().as_str(), sid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_auth_payload() {
    let (addr, _io) = suite_server().await;
    let mut ws = sio_open(addr).await;
    ws.send_text(r#"40{"token":"123"}"#).await;
    let reply = ws.recv_text().await;
    assert_eq!(
        connect_json(&reply, "40").keys().collect::<Vec<_>>(),
        ["sid"]
    );
    ws.expect_text(r#"42["auth",{"token":"123"}]"#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_custom_namespace() {
    let (addr, _io) = suite_server().await;
    let mut ws = sio_open(addr).await;
    ws.send_text("40/custom,").await;
    let reply = ws.recv_text().await;
    let obj = connect_json(&reply, "40/custom,");
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["sid"]);
    assert_eq!(obj["sid"].as_str().map(str::len), Some(20));
    ws.expect_text(r#"42/custom,["auth",{}]"#).await;

    let mut ws = sio_open(addr).await;
    ws.send_text(r#"40/custom,{"token":"abc"}"#).await;
    let reply = ws.recv_text().await;
    connect_json(&reply, "40/custom,");
    ws.expect_text(r#"42/custom,["auth",{"token":"abc"}]"#)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_namespace_is_refused_and_connection_stays_usable() {
    let (addr, _io) = suite_server().await;
    let mut ws = sio_open(addr).await;
    ws.send_text("40/random").await;
    ws.expect_text(r#"44/random,{"message":"Invalid namespace"}"#)
        .await;
    ws.send_text("40/random,").await;
    ws.expect_text(r#"44/random,{"message":"Invalid namespace"}"#)
        .await;
    // Still usable.
    sio_join(&mut ws, "/", None).await;
    ws.expect_text(r#"42["auth",{}]"#).await;
    ws.send_text(r#"42["message","hi"]"#).await;
    ws.expect_text(r#"42["message-back","hi"]"#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_leaves_only_that_namespace() {
    let io = suite_io(SocketIoConfig::default());
    let (tx, mut reasons) = mpsc::unbounded_channel();
    io.on_connection("/other", move |socket: Socket| {
        let tx = tx.clone();
        async move {
            socket.on_disconnect(move |_: Socket, reason: DisconnectReason| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(reason);
                }
            });
        }
    });
    let addr = start_io(&io).await;
    let (mut ws, _) = init(addr).await;
    sio_join(&mut ws, "/other", None).await;
    ws.send_text("41/other,").await;
    assert_eq!(
        recv("disconnect reason", &mut reasons).await,
        DisconnectReason::ClientNamespaceDisconnect
    );
    // The main namespace and the engine session are untouched.
    ws.send_text(r#"42["message","message to main namespace"]"#)
        .await;
    ws.expect_text(r#"42["message-back","message to main namespace"]"#)
        .await;
    assert_eq!(io.engine().session_count(), 1);
    assert!(io.ns("/other").sockets().is_empty());
    // The namespace can be joined again.
    sio_join(&mut ws, "/other", None).await;
    assert_eq!(io.ns("/other").sockets().len(), 1);

    // Leaving the main namespace keeps the engine session open too.
    ws.send_text("41").await;
    wait_until("the main socket to leave", || {
        io.ns("/").sockets().is_empty()
    })
    .await;
    assert_eq!(io.engine().session_count(), 1);
    assert_eq!(io.ns("/other").sockets().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_keeps_bytes_identical() {
    let (addr, _io) = suite_server().await;
    let (mut ws, _) = init(addr).await;
    ws.send_text(r#"42["message",1,"2",{"3":[true]}]"#).await;
    ws.expect_text(r#"42["message-back",1,"2",{"3":[true]}]"#)
        .await;
    ws.send_text(r#"42["message",{"b":1,"a":[null,1.5,-2,"é\n"]}]"#)
        .await;
    ws.expect_text(r#"42["message-back",{"b":1,"a":[null,1.5,-2,"é\n"]}]"#)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_round_trip() {
    let (addr, _io) = suite_server().await;
    let (mut ws, _) = init(addr).await;
    ws.send_text(r#"42456["message-with-ack",1,"2",{"3":[false]}]"#)
        .await;
    ws.expect_text(r#"43456[1,"2",{"3":[false]}]"#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_event_and_binary_ack() {
    let (addr, _io) = suite_server().await;
    let (mut ws, _) = init(addr).await;
    ws.send_text(r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    ws.send_binary(&[1, 2, 3]).await;
    ws.send_binary(&[4, 5, 6]).await;
    ws.expect_text(
        r#"452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
    )
    .await;
    assert_eq!(ws.recv_binary().await, [1, 2, 3]);
    assert_eq!(ws.recv_binary().await, [4, 5, 6]);

    ws.send_text(
        r#"452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
    )
    .await;
    ws.send_binary(&[1, 2, 3]).await;
    ws.send_binary(&[4, 5, 6]).await;
    ws.expect_text(r#"462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    assert_eq!(ws.recv_binary().await, [1, 2, 3]);
    assert_eq!(ws.recv_binary().await, [4, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_closes_connection_without_namespace() {
    let io = suite_io(SocketIoConfig {
        connect_timeout: Duration::from_millis(300),
        ..SocketIoConfig::default()
    });
    let addr = start_io(&io).await;
    // Opened first, joins a namespace: never closed by the timer.
    let (mut joined, _) = init(addr).await;
    // Opened second, never joins.
    let mut idle = sio_open(addr).await;
    idle.expect_closed().await;
    // The idle connection's timer fired after the joined one's would have.
    joined.send_text(r#"42["message","still here"]"#).await;
    joined
        .expect_text(r#"42["message-back","still here"]"#)
        .await;
    // The idle session leaves the registry once its closing handshake ends
    // (the client's close, or the grace period).
    tokio::time::timeout(Duration::from_secs(5), async {
        while io.engine().session_count() != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the idle session is still registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_refusal_sends_connect_error() {
    let io = suite_io(SocketIoConfig::default());
    io.ns("/admin")
        .use_middleware(|socket: Socket| async move {
            if socket
                .handshake()
                .auth()
                .get("token")
                .and_then(Value::as_str)
                == Some("secret")
            {
                Ok(())
            } else {
                Err(ConnectError::new("unauthorized")
                    .with_data(Value::from(json!({ "code": 401 }))))
            }
        })
        .use_middleware(|_: Socket| async move { Ok(()) })
        .on_connection(|socket: Socket| async move {
            let _ = socket.emit("hello-admin", "welcome");
        });
    io.ns("/plain")
        .use_middleware(|_: Socket| async move { Err(ConnectError::new("closed today")) });
    let addr = start_io(&io).await;

    let mut ws = sio_open(addr).await;
    ws.send_text("40/admin,").await;
    ws.expect_text(r#"44/admin,{"message":"unauthorized","data":{"code":401}}"#)
        .await;
    ws.send_text("40/plain,").await;
    ws.expect_text(r#"44/plain,{"message":"closed today"}"#)
        .await;
    assert!(io.ns("/admin").sockets().is_empty());
    // The connection stays open, and a good token passes.
    ws.send_text(r#"40/admin,{"token":"secret"}"#).await;
    let reply = ws.recv_text().await;
    connect_json(&reply, "40/admin,");
    ws.expect_text(r#"42/admin,["hello-admin","welcome"]"#)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_namespace_by_glob() {
    let io = suite_io(SocketIoConfig::default());
    io.dynamic_ns(NsMatcher::glob("/dyn-*"), |socket: Socket| async move {
        let _ = socket.emit("dyn", socket.ns());
        socket.on("echo", |_: Socket, mut event: Event| async move {
            let args = event.take_args();
            let _ = event.ack_many(&args);
        });
    });
    let addr = start_io(&io).await;
    assert!(io.of("/dyn-42").is_none());
    let mut ws = sio_open(addr).await;
    sio_join(&mut ws, "/dyn-42", None).await;
    ws.expect_text(r#"42/dyn-42,["dyn","/dyn-42"]"#).await;
    ws.send_text(r#"42/dyn-42,7["echo","x"]"#).await;
    ws.expect_text(r#"43/dyn-42,7["x"]"#).await;
    assert!(io.of("/dyn-42").is_some());
    // A second child of the same parent.
    sio_join(&mut ws, "/dyn-abc", None).await;
    ws.expect_text(r#"42/dyn-abc,["dyn","/dyn-abc"]"#).await;
    // `*` does not cross a `/`.
    ws.send_text("40/dyn-4/2,").await;
    ws.expect_text(r#"44/dyn-4/2,{"message":"Invalid namespace"}"#)
        .await;
    ws.send_text("40/other,").await;
    ws.expect_text(r#"44/other,{"message":"Invalid namespace"}"#)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_namespace_by_predicate() {
    let io = suite_io(SocketIoConfig::default());
    let parent = io.dynamic_ns(
        NsMatcher::predicate(|name| {
            name.strip_prefix("/tenant-")
                .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        }),
        |socket: Socket| async move {
            let _ = socket.emit("tenant", socket.ns());
        },
    );
    parent.use_middleware(|socket: Socket| async move {
        if socket.ns() == "/tenant-13" {
            Err(ConnectError::new("unlucky"))
        } else {
            Ok(())
        }
    });
    let addr = start_io(&io).await;
    let mut ws = sio_open(addr).await;
    sio_join(&mut ws, "/tenant-7", None).await;
    ws.expect_text(r#"42/tenant-7,["tenant","/tenant-7"]"#)
        .await;
    ws.send_text("40/tenant-x,").await;
    ws.expect_text(r#"44/tenant-x,{"message":"Invalid namespace"}"#)
        .await;
    ws.send_text("40/tenant-13,").await;
    ws.expect_text(r#"44/tenant-13,{"message":"unlucky"}"#)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_all_sees_every_event() {
    let io = suite_io(SocketIoConfig::default());
    let (tx, mut seen) = mpsc::unbounded_channel();
    io.on_connection("/any", move |socket: Socket| {
        let tx = tx.clone();
        async move {
            socket.on_any(move |_: Socket, event: Event| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((event.name().to_owned(), event.args().to_vec()));
                }
            });
            socket.on("known", |socket: Socket, _: Event| async move {
                let _ = socket.emit("known-handled", &());
            });
        }
    });
    let addr = start_io(&io).await;
    let mut ws = sio_open(addr).await;
    sio_join(&mut ws, "/any", None).await;
    ws.send_text(r#"42/any,["a",1]"#).await;
    ws.send_text(r#"42/any,["known","x"]"#).await;
    ws.send_text(r#"42/any,[7,"numeric"]"#).await;
    ws.send_text(r#"42/any,3["b"]"#).await;
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(recv("on_any event", &mut seen).await);
    }
    assert_eq!(
        names,
        vec![
            ("a".to_owned(), vec![Value::from(1u64)]),
            ("known".to_owned(), vec![Value::from("x")]),
            ("7".to_owned(), vec![Value::from("numeric")]),
            ("b".to_owned(), vec![]),
        ]
    );
    // The specific handler runs as well.
    ws.expect_text(r#"42/any,["known-handled",null]"#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_middleware_refuses_an_event() {
    let io = suite_io(SocketIoConfig::default());
    io.on_connection("/guarded", |socket: Socket| async move {
        socket.use_packet(|_: &Socket, event: &Event| {
            if event.name() == "forbidden" {
                Err("not allowed".to_owned())
            } else {
                Ok(())
            }
        });
        socket.on("forbidden", |socket: Socket, mut event: Event| async move {
            let _ = socket.emit("handler-called", "forbidden");
            let _ = event.ack("handled");
        });
        socket.on("allowed", |socket: Socket, mut event: Event| async move {
            let _ = socket.emit("handler-called", "allowed");
            let _ = event.ack("handled");
        });
    });
    let addr = start_io(&io).await;
    let mut ws = sio_open(addr).await;
    sio_join(&mut ws, "/guarded", None).await;
    ws.send_text(r#"42/guarded,["forbidden"]"#).await;
    ws.send_text(r#"42/guarded,1["forbidden",1]"#).await;
    // Nothing from the refused handler comes before the ack refusal.
    ws.expect_text(r#"43/guarded,1[{"error":"not allowed"}]"#)
        .await;
    ws.send_text(r#"42/guarded,2["allowed"]"#).await;
    ws.expect_text(r#"42/guarded,["handler-called","allowed"]"#)
        .await;
    ws.expect_text(r#"43/guarded,2["handled"]"#).await;
}
