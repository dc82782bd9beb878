//! Hostile and broken clients: malformed Socket.IO packets, protocol
//! violations, floods and slow consumers. Each must close only the
//! offending connection, never panic, and leave the server serving others.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use switchboard::engine::EngineConfig;
use switchboard::{DisconnectReason, Event, Socket, SocketIo, SocketIoConfig};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio_websockets::Message;

struct Server {
    addr: SocketAddr,
    io: SocketIo,
    /// (socket id, reason) of every socket that left.
    left: UnboundedReceiver<(String, DisconnectReason)>,
}

async fn server(config: SocketIoConfig) -> Server {
    let io = SocketIo::builder().config(config).build();
    let (tx, left) = mpsc::unbounded_channel();
    for nsp in ["/", "/custom"] {
        let tx = tx.clone();
        io.on_connection(nsp, move |socket: Socket| {
            let tx = tx.clone();
            async move {
                socket.on("message", |socket: Socket, mut event: Event| async move {
                    let _ = socket.emit_many("message-back", &event.take_args());
                });
                socket.on(
                    "echo-event",
                    |socket: Socket, mut event: Event| async move {
                        let _ = socket.emit_many("echo-event", &event.take_args());
                    },
                );
                socket.on_disconnect(move |socket: Socket, reason: DisconnectReason| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send((socket.id().to_string(), reason));
                    }
                });
            }
        });
    }
    let addr = start_io(&io).await;
    Server { addr, io, left }
}

async fn default_server() -> Server {
    server(SocketIoConfig::default()).await
}

impl Server {
    /// Waits for the given socket to leave; returns its reason.
    async fn reason_of(&mut self, sid: &str) -> DisconnectReason {
        loop {
            let (id, reason) = recv("a disconnect", &mut self.left).await;
            if id == sid {
                return reason;
            }
        }
    }

    /// The server still serves a new client normally.
    async fn still_serves(&self) {
        let (mut ws, _) = sio_client(self.addr).await;
        ws.send_text(r#"42["message","alive"]"#).await;
        ws.expect_text(r#"42["message-back","alive"]"#).await;
        ws.close().await;
    }
}

enum Out<'a> {
    Text(&'a str),
    Bin(&'a [u8]),
}

/// Joins `/`, sends `frames`, and checks that the connection is closed with
/// `reason` for the socket, that the session is gone, and that the server
/// still serves others.
async fn assert_rejected(frames: &[Out<'_>], reason: DisconnectReason) {
    let mut srv = default_server().await;
    let (mut ws, sid) = sio_client(srv.addr).await;
    for frame in frames {
        match frame {
            Out::Text(t) => ws.send_text(t).await,
            Out::Bin(b) => ws.send_binary(b).await,
        }
    }
    // Nothing is echoed: the connection just closes.
    loop {
        match ws.recv().await {
            Msg::Close(_) | Msg::Gone => break,
            Msg::Text(t) => assert!(
                !t.starts_with("42[\"message-back\""),
                "a broken packet was dispatched: {t}"
            ),
            Msg::Binary(b) => panic!("unexpected binary frame {b:?}"),
        }
    }
    assert_eq!(srv.reason_of(&sid).await, reason);
    wait_until("the session to be removed", || {
        srv.io.engine().session_count() == 0
    })
    .await;
    srv.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_packet_type_closes() {
    assert_rejected(&[Out::Text("4abc")], DisconnectReason::ForcedClose).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_with_object_payload_closes() {
    assert_rejected(&[Out::Text("42{}")], DisconnectReason::ForcedClose).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_with_invalid_ack_id_closes() {
    assert_rejected(
        &[Out::Text(r#"42abc["message",1,"2",{"3":[false]}]"#)],
        DisconnectReason::ForcedClose,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_with_empty_array_closes() {
    assert_rejected(&[Out::Text("42[]")], DisconnectReason::ForcedClose).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_with_reserved_name_closes() {
    assert_rejected(
        &[Out::Text(r#"42["connect"]"#)],
        DisconnectReason::ForcedClose,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_attachments_closes() {
    let placeholders: Vec<String> = (0..11)
        .map(|i| format!(r#"{{"_placeholder":true,"num":{i}}}"#))
        .collect();
    let text = format!(r#"4511-["message",{}]"#, placeholders.join(","));
    assert_rejected(&[Out::Text(&text)], DisconnectReason::ForcedClose).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_attachments_are_accepted() {
    let srv = default_server().await;
    let (mut ws, _) = sio_client(srv.addr).await;
    let placeholders: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"_placeholder":true,"num":{i}}}"#))
        .collect();
    ws.send_text(&format!(r#"4510-["message",{}]"#, placeholders.join(",")))
        .await;
    for i in 0..10u8 {
        ws.send_binary(&[i]).await;
    }
    ws.expect_text(&format!(
        r#"4510-["message-back",{}]"#,
        placeholders.join(",")
    ))
    .await;
    for i in 0..10u8 {
        assert_eq!(ws.recv_binary().await, [i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frame_without_announced_packet_closes() {
    assert_rejected(&[Out::Bin(&[1, 2, 3])], DisconnectReason::ForcedClose).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_packet_while_attachments_pending_closes() {
    assert_rejected(
        &[
            Out::Text(
                r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            ),
            Out::Bin(&[1]),
            Out::Text(r#"42["message","interleaved"]"#),
        ],
        DisconnectReason::ForcedClose,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_out_of_range_closes() {
    assert_rejected(
        &[
            Out::Text(r#"451-["message",{"_placeholder":true,"num":5}]"#),
            Out::Bin(&[1]),
        ],
        DisconnectReason::ForcedClose,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_for_a_namespace_not_joined_closes_with_forced_server_close() {
    assert_rejected(
        &[Out::Text(r#"42/custom,["message","sneaky"]"#)],
        DisconnectReason::ForcedServerClose,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connect_to_a_joined_namespace_closes() {
    assert_rejected(&[Out::Text("40")], DisconnectReason::ForcedServerClose).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connect_error_packet_closes() {
    assert_rejected(
        &[Out::Text(r#"44{"message":"nope"}"#)],
        DisconnectReason::ForcedServerClose,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_polling_body_is_400() {
    let srv = default_server().await;
    let (sid, _) = polling_handshake(srv.addr, "/socket.io/").await;
    let r = try_request(
        srv.addr,
        "POST",
        &poll_url("/socket.io/", &sid),
        &[("Content-Type", "text/plain;charset=UTF-8")],
        &[b'4', 0xff, 0xfe, b'x'],
    )
    .await;
    if let Ok(r) = r {
        assert_eq!(r.status, 400);
    }
    let r = get(srv.addr, &poll_url("/socket.io/", &sid)).await;
    assert_eq!(r.status, 400, "the session is gone");
    srv.still_serves().await;
}

/// One client floods the server with events whose echoes it never reads.
/// The server must close it as a slow consumer (its send queue is small)
/// while another client keeps getting its answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_client_that_never_reads_is_closed_as_slow_consumer() {
    let mut srv = server(SocketIoConfig {
        engine: EngineConfig {
            path: "/socket.io/".into(),
            max_queued_frames: 64,
            ..EngineConfig::default()
        },
        ..SocketIoConfig::default()
    })
    .await;
    let (mut good, _) = sio_client(srv.addr).await;
    let (flood, flood_sid) = sio_client(srv.addr).await;

    let payload = "f".repeat(1000);
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = Arc::clone(&stop);
    let flooder = tokio::spawn(async move {
        let mut ws = flood.inner;
        let mut sent = 0usize;
        for i in 0..20_000 {
            if stop_flag.load(Ordering::Relaxed) {
                break;
            }
            let text = format!(r#"42["echo-event",{i},"{payload}"]"#);
            match tokio::time::timeout(Duration::from_secs(20), ws.send(Message::text(text))).await
            {
                Ok(Ok(())) => sent += 1,
                // Closed by the server, or stuck because the server stopped
                // reading.
                _ => break,
            }
        }
        (sent, ws)
    });

    // The other client is served all along.
    for i in 0..50 {
        good.send_text(&format!(r#"42["echo-event",{i}]"#)).await;
        good.expect_text(&format!(r#"42["echo-event",{i}]"#)).await;
    }

    let reason = srv.reason_of(&flood_sid).await;
    assert_eq!(reason, DisconnectReason::SlowConsumer);
    assert_eq!(reason.as_str(), "slow consumer");
    stop.store(true, Ordering::Relaxed);
    let _ = bounded("the flooder to stop", flooder).await;

    good.send_text(r#"42["echo-event","after"]"#).await;
    good.expect_text(r#"42["echo-event","after"]"#).await;
    assert_eq!(srv.io.engine().session_count(), 1);
}

/// A client in a room that never reads is disconnected as a slow consumer,
/// while a fast client in the same room receives every broadcast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_on_broadcast_is_disconnected_fast_one_gets_everything() {
    const N: usize = 3000;
    const BATCH: usize = 16;
    let mut srv = server(SocketIoConfig {
        engine: EngineConfig {
            path: "/socket.io/".into(),
            max_queued_frames: 64,
            ..EngineConfig::default()
        },
        ..SocketIoConfig::default()
    })
    .await;
    let (fast, fast_sid) = sio_client(srv.addr).await;
    let (slow, slow_sid) = sio_client(srv.addr).await;
    let ns = srv.io.ns("/");
    for sid in [&fast_sid, &slow_sid] {
        let socket = ns.get_socket(sid.parse().expect("sid")).expect("socket");
        socket.join(["r"]);
    }

    let big = "b".repeat(10 * 1024);
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let expected_big = big.clone();
    let reader = tokio::spawn(async move {
        let mut ws = fast;
        for i in 0..N {
            let text = ws.recv_text().await;
            assert_eq!(
                text,
                format!(r#"42["tick",{i},"{expected_big}"]"#),
                "message #{i} in order"
            );
            let _ = progress_tx.send(i + 1);
        }
        ws
    });

    let mut slow_reason = None;
    for i in 0..N {
        srv.io
            .to("r")
            .emit_many("tick", &(i, &big))
            .await
            .expect("broadcast");
        if (i + 1) % BATCH == 0 || i + 1 == N {
            // Pace on the fast client only, so that its queue stays short.
            let target = i + 1;
            bounded(
                "the fast client to catch up",
                progress.wait_for(|n| *n >= target),
            )
            .await
            .expect("reader alive");
        }
        if slow_reason.is_none()
            && let Ok((id, reason)) = srv.left.try_recv()
        {
            assert_eq!(id, slow_sid, "only the slow client leaves");
            slow_reason = Some(reason);
        }
    }
    let fast = bounded("the fast reader", reader)
        .await
        .expect("fast reader");
    let slow_reason = match slow_reason {
        Some(r) => r,
        None => srv.reason_of(&slow_sid).await,
    };
    assert_eq!(slow_reason, DisconnectReason::SlowConsumer);
    assert!(ns.get_socket(fast_sid.parse().expect("sid")).is_some());
    assert!(ns.get_socket(slow_sid.parse().expect("sid")).is_none());

    // Once it reads, the slow client finds its connection closed.
    let mut slow = slow;
    slow.expect_closed().await;
    drop(fast);
}

/// A polling body whose echoes overflow the send queue: once the session is
/// doomed (a slow consumer), the rest of the body is not dispatched.
#[tokio::test]
async fn a_polling_body_stops_being_dispatched_once_the_session_is_doomed() {
    let io = SocketIo::builder()
        .config(SocketIoConfig {
            engine: EngineConfig {
                path: "/socket.io/".into(),
                max_queued_frames: 8,
                ..EngineConfig::default()
            },
            ..SocketIoConfig::default()
        })
        .build();
    let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&handled);
    io.ns("/")
        .on("echo-event", move |socket: Socket, mut event: Event| {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = socket.emit_many("echo-event", &event.take_args());
            async {}
        });
    let addr = start_io(&io).await;
    let (sid, _) = polling_handshake(addr, "/socket.io/").await;
    let url = poll_url("/socket.io/", &sid);
    assert_eq!(post(addr, &url, b"40").await.status, 200);
    let connected = get(addr, &url).await.text();
    assert!(connected.starts_with("40"), "{connected}");
    let body: Vec<String> = (0..50)
        .map(|i| format!(r#"42["echo-event",{i}]"#))
        .collect();
    let r = post(addr, &url, body.join("\x1e").as_bytes()).await;
    assert_eq!(r.status, 200);
    let n = handled.load(Ordering::SeqCst);
    assert!(
        n <= 9,
        "{n} events were handled; dispatching should stop at the overflow (8 queued frames)"
    );
    wait_until("the slow consumer to be closed", || {
        io.engine().session_count() == 0
    })
    .await;
}
