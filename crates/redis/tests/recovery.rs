//! Connection state recovery with the Redis streams store, on in-process
//! nodes sharing the machine's Redis (a random prefix per test): the
//! stream entry id is the offset, sessions are Redis keys with the
//! window as their expiry, so a client recovers on the node it left, on
//! another node, and on a restarted server. Also: ping timeouts keep the
//! session; expired, forged and trimmed sessions give a fresh connection;
//! middlewares are skipped or not; volatile and ack'd emits are never
//! replayed; binary packets are replayed intact; `disconnecting` and
//! `disconnect` run once per socket lifetime; live traffic during a
//! recovery has no gap and no duplicate.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use serde_json::json;
use switchboard::{DisconnectReason, RecoveryConfig, SocketIoBuilder};
use switchboard_redis::RedisAdapter;

fn window(d: Duration) -> RecoveryConfig {
    RecoveryConfig {
        max_disconnection_duration: d,
        ..RecoveryConfig::default()
    }
}

/// A streams-mode node with recovery on.
async fn node(prefix: &str, name: &str, recovery: RecoveryConfig) -> Node {
    node_with(prefix, name, recovery, |a| a, |b| b).await
}

async fn node_with(
    prefix: &str,
    name: &str,
    recovery: RecoveryConfig,
    adapter: impl FnOnce(RedisAdapter) -> RedisAdapter,
    builder: impl FnOnce(SocketIoBuilder) -> SocketIoBuilder + Send + 'static,
) -> Node {
    Node::start(
        adapter(Kind::Streams.adapter(prefix)),
        &redis_url(),
        NodeOptions::named(name).builder(move |b| builder(b.connection_state_recovery(recovery))),
    )
    .await
}

fn session_key(prefix: &str, pid: &str) -> String {
    format!("{}{pid}", session_prefix(prefix))
}

async fn session_exists(prefix: &str, pid: &str) -> bool {
    let mut con = raw(&redis_url()).await;
    redis::cmd("EXISTS")
        .arg(session_key(prefix, pid))
        .query_async::<i64>(&mut con)
        .await
        .expect("exists")
        == 1
}

/// Waits until the session of `pid` is stored in Redis.
async fn persisted(prefix: &str, pid: &str) {
    eventually("the session to be stored", || session_exists(prefix, pid)).await;
}

/// A stream entry id `ms-seq` as numbers.
fn entry_id(offset: &str) -> (u64, u64) {
    let (ms, seq) = offset.split_once('-').expect("ms-seq");
    (ms.parse().expect("ms"), seq.parse().expect("seq"))
}

/// `(name, first argument)` of each event, checking that each carries an
/// offset (its last argument) after the previous one.
fn names_and_args(events: &[Ev], from: &str) -> Vec<(String, serde_json::Value)> {
    let mut last = entry_id(from);
    events
        .iter()
        .map(|e| {
            let id = entry_id(&e.offset());
            assert!(id > last, "offsets in order: {} after {last:?}", e.text);
            last = id;
            (e.name.clone(), e.args[0].clone())
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn a_client_recovers_on_the_node_it_left_after_a_transport_close() {
    let url = redis_url();
    let prefix = unique("rec-same");
    let _keys = Keys::new(&url, &prefix);
    let mut a = node(&prefix, "node0", RecoveryConfig::default()).await;
    let b = node(&prefix, "node1", RecoveryConfig::default()).await;
    expect_server_count(&a, 2).await;
    let mut c = a.client().await;
    let pid = c.pid.clone().expect("the CONNECT answer carries a pid");
    assert_eq!(pid.len(), 20);
    let socket = a.socket().await;
    socket.set_data(&json!({"name": "ada"})).unwrap();
    c.join("r").await;
    a.io.to("r").emit("m", &0).await.unwrap();
    let first = c.expect("m").await;
    let offset = first.offset();
    entry_id(&offset);
    // The transport is cut (no close frame): "transport close".
    c.kill();
    let (sid, reason) = recv("disconnect", &mut a.left).await;
    assert_eq!(sid, socket.id().as_str());
    assert_eq!(reason, DisconnectReason::TransportClose);
    persisted(&prefix, &pid).await;
    let runs = a.middleware_runs.load(Ordering::SeqCst);
    a.io.to("r").emit("m", &1).await.unwrap();
    b.io.to("r").emit("m", &2).await.unwrap();
    a.io.to("elsewhere").emit("m", &99).await.unwrap();
    b.io.emit("all", &"everyone").await.unwrap();
    a.io.to("r")
        .volatile()
        .emit("m", &"volatile")
        .await
        .unwrap();
    socket.emit("direct", &"while away").unwrap();
    a.io.to("r").except("nobody").emit("m", &3).await.unwrap();
    let mut c = Client::recover(a.addr, &pid, &offset).await;
    assert_eq!(
        (c.sid.as_str(), c.pid.as_deref()),
        (sid.as_str(), Some(pid.as_str()))
    );
    assert_eq!(
        names_and_args(&c.before, &offset),
        vec![
            ("m".into(), json!(1)),
            ("m".into(), json!(2)),
            ("all".into(), json!("everyone")),
            ("direct".into(), json!("while away")),
            ("m".into(), json!(3)),
        ],
        "missed packets, in order, before the CONNECT answer; not the other room's, not the volatile one"
    );
    let recovered = a.socket().await;
    assert!(recovered.recovered());
    assert_eq!(recovered.id().as_str(), sid);
    assert_eq!(
        recovered.data::<serde_json::Value>().unwrap(),
        json!({"name": "ada"})
    );
    assert_eq!(
        sorted(recovered.rooms()),
        sorted(vec![sid.clone(), "r".into()])
    );
    assert_eq!(
        a.middleware_runs.load(Ordering::SeqCst),
        runs,
        "middlewares are skipped for a recovered socket"
    );
    assert!(
        !session_exists(&prefix, &pid).await,
        "a session is taken once"
    );
    // Live traffic goes on, to the restored room, from both nodes.
    b.io.to("r").emit("m", &4).await.unwrap();
    assert_eq!(c.expect("m").await.args[0], json!(4));
    a.io.to("r").emit("m", &5).await.unwrap();
    assert_eq!(c.expect("m").await.args[0], json!(5));
}

#[tokio::test]
async fn a_client_that_was_on_one_node_recovers_on_another() {
    let url = redis_url();
    let prefix = unique("rec-cross");
    let _keys = Keys::new(&url, &prefix);
    let mut a = node(&prefix, "node0", RecoveryConfig::default()).await;
    let mut b = node(&prefix, "node1", RecoveryConfig::default()).await;
    expect_server_count(&a, 2).await;
    let mut c = a.client().await;
    let pid = c.pid.clone().unwrap();
    let sid = c.sid.clone();
    let _ = a.socket().await;
    assert_eq!(
        c.call("set-data", json!([{"on": "a"}])).await,
        [json!("ok")]
    );
    c.join("r").await;
    c.join("s").await;
    b.io.to("r").emit("m", &0).await.unwrap();
    let offset = c.expect("m").await.offset();
    c.kill();
    recv("disconnect on a", &mut a.left).await;
    persisted(&prefix, &pid).await;
    // Missed broadcasts from both nodes, interleaved.
    a.io.to("r").emit("m", &1).await.unwrap();
    b.io.to("s").emit("m", &2).await.unwrap();
    a.io.to("other").emit("m", &99).await.unwrap();
    b.io.to("r").except("s").emit("m", &98).await.unwrap();
    a.io.to("s").emit("m", &3).await.unwrap();
    b.io.emit("m", &4).await.unwrap();
    let mut c = Client::recover(b.addr, &pid, &offset).await;
    assert_eq!(c.sid, sid, "the same id, on the other node");
    assert_eq!(
        names_and_args(&c.before, &offset),
        (1..=4)
            .map(|i| ("m".to_owned(), json!(i)))
            .collect::<Vec<_>>()
    );
    let recovered = b.socket().await;
    assert!(recovered.recovered());
    assert_eq!(
        recovered.data::<serde_json::Value>().unwrap(),
        json!({"on": "a"})
    );
    assert_eq!(
        sorted(recovered.rooms()),
        sorted(vec![sid.clone(), "r".into(), "s".into()])
    );
    // The cluster sees it on b, with its rooms and data.
    let found = a.io.to("s").fetch_sockets().await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id().as_str(), sid);
    assert_eq!(
        sorted(found[0].rooms().to_vec()),
        sorted(vec![sid.clone(), "r".into(), "s".into()])
    );
    assert_eq!(
        found[0].data::<serde_json::Value>().unwrap(),
        json!({"on": "a"})
    );
    // And broadcasts from a reach it on b.
    a.io.to("r").emit("live", &1).await.unwrap();
    let live = c.expect("live").await;
    assert!(entry_id(&live.offset()) > entry_id(&c.before.last().unwrap().offset()));
}

#[tokio::test]
async fn a_ping_timeout_keeps_the_session() {
    let url = redis_url();
    let prefix = unique("rec-ping");
    let _keys = Keys::new(&url, &prefix);
    let mut a = node_with(
        &prefix,
        "node0",
        RecoveryConfig::default(),
        |a| a,
        |b| {
            b.ping_interval(Duration::from_millis(250))
                .ping_timeout(Duration::from_millis(250))
        },
    )
    .await;
    let b = node(&prefix, "node1", RecoveryConfig::default()).await;
    let mut c = a.client().await;
    let pid = c.pid.clone().unwrap();
    a.io.emit("m", &1).await.unwrap();
    let offset = c.expect("m").await.offset();
    c.stop_answering_pings();
    let (sid, reason) = recv("disconnect", &mut a.left).await;
    assert_eq!(sid, c.sid);
    assert_eq!(reason, DisconnectReason::PingTimeout);
    drop(c);
    persisted(&prefix, &pid).await;
    a.io.emit("m", &2).await.unwrap();
    let c = Client::recover(b.addr, &pid, &offset).await;
    assert_eq!(c.sid, sid);
    assert_eq!(names_and_args(&c.before, &offset), [("m".into(), json!(2))]);
}

/// A server stops (its sockets leave with "server shutting down", which
/// keeps their sessions) and another starts on the same Redis and prefix:
/// the client recovers there, with what was broadcast meanwhile.
#[tokio::test]
async fn a_restarted_server_still_recovers_a_recent_session() {
    let url = redis_url();
    let prefix = unique("rec-restart");
    let _keys = Keys::new(&url, &prefix);
    let mut a = node(&prefix, "node0", RecoveryConfig::default()).await;
    let other = node(&prefix, "node1", RecoveryConfig::default()).await;
    let mut c = a.client().await;
    let pid = c.pid.clone().unwrap();
    let sid = c.sid.clone();
    let socket = a.socket().await;
    socket.set_data(&json!([1, 2])).unwrap();
    c.join("r").await;
    a.io.to("r").emit("m", &0).await.unwrap();
    let offset = c.expect("m").await.offset();
    drop(socket);
    let runs = Arc::clone(&a.handler_runs);
    let mut left = std::mem::replace(&mut a.left, tokio::sync::mpsc::unbounded_channel().1);
    // The server stops: everything of it is dropped right after.
    a.shutdown().await;
    c.closed().await;
    let (_, reason) = recv("disconnect", &mut left).await;
    assert_eq!(reason, DisconnectReason::ServerShuttingDown);
    assert_eq!(runs.lock().unwrap().get(&sid), Some(&(1, 1)));
    persisted(&prefix, &pid).await;
    other.io.to("r").emit("m", &1).await.unwrap();
    other.io.emit("m", &2).await.unwrap();
    let mut restarted = node(&prefix, "node0-again", RecoveryConfig::default()).await;
    let c = Client::recover(restarted.addr, &pid, &offset).await;
    assert_eq!(c.sid, sid);
    assert_eq!(
        names_and_args(&c.before, &offset),
        [("m".into(), json!(1)), ("m".into(), json!(2))]
    );
    let s = restarted.socket().await;
    assert!(s.recovered());
    assert_eq!(s.data::<serde_json::Value>().unwrap(), json!([1, 2]));
    assert_eq!(sorted(s.rooms()), sorted(vec![sid, "r".into()]));
}

#[tokio::test]
async fn expired_forged_or_trimmed_sessions_give_a_fresh_connection() {
    let url = redis_url();
    let prefix = unique("rec-fresh");
    let _keys = Keys::new(&url, &prefix);
    let mut a = node_with(
        &prefix,
        "node0",
        window(Duration::from_millis(1500)),
        |a| a.max_len(10),
        |b| b,
    )
    .await;

    // Expired: the session key is gone (Redis expired it).
    let mut c = a.client().await;
    let (sid, pid) = (c.sid.clone(), c.pid.clone().unwrap());
    let _ = a.socket().await;
    a.io.emit("m", &1).await.unwrap();
    let offset = c.expect("m").await.offset();
    c.kill();
    recv("disconnect", &mut a.left).await;
    persisted(&prefix, &pid).await;
    eventually("the session to expire", || async {
        !session_exists(&prefix, &pid).await
    })
    .await;
    let mut con = raw(&url).await;
    let stream_has_offset: Vec<redis::Value> = redis::cmd("XRANGE")
        .arg(&prefix)
        .arg(&offset)
        .arg(&offset)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(stream_has_offset.len(), 1, "only the session is gone");
    let c = Client::recover(a.addr, &pid, &offset).await;
    assert_ne!(c.sid, sid, "an expired session is not restored");
    assert_ne!(c.pid.as_deref(), Some(pid.as_str()));
    assert!(c.before.is_empty());
    assert!(!a.socket().await.recovered());
    drop(c);
    recv("disconnect", &mut a.left).await;

    // Forged or wrongly typed ids; a real pid with an offset that is not
    // one.
    let mut c = a.client().await;
    let (sid, pid) = (c.sid.clone(), c.pid.clone().unwrap());
    let _ = a.socket().await;
    a.io.emit("m", &2).await.unwrap();
    let offset = c.expect("m").await.offset();
    c.kill();
    recv("disconnect", &mut a.left).await;
    persisted(&prefix, &pid).await;
    for auth in [
        json!({"pid": "AAAAAAAAAAAAAAAAAAAA", "offset": offset}),
        json!({"pid": 5, "offset": {}}),
        json!({"pid": pid, "offset": "not-an-offset"}),
        json!({"pid": pid, "offset": "1-"}),
        json!({"pid": pid}),
    ] {
        let c = Client::connect(a.addr, "", Some(auth.clone()))
            .await
            .expect("a fresh connection, not an error");
        assert_ne!(c.sid, sid, "{auth}");
        assert!(c.before.is_empty());
        assert!(!a.socket().await.recovered());
    }
    // None of those consumed the real session.
    let c = Client::recover(a.addr, &pid, &offset).await;
    assert_eq!(c.sid, sid);
    assert!(a.socket().await.recovered());
    drop(c);

    // Trimmed: the stream (MAXLEN ~ 10) dropped the offset.
    let mut c = a.client().await;
    let (sid, pid) = (c.sid.clone(), c.pid.clone().unwrap());
    let _ = a.socket().await;
    a.io.emit("m", &3).await.unwrap();
    let offset = loop {
        let e = c.event().await;
        if e.args[0] == json!(3) {
            break e.offset();
        }
    };
    c.kill();
    persisted(&prefix, &pid).await;
    bounded("the offset to be trimmed away", async {
        loop {
            for i in 0..100 {
                a.io.to("nobody").emit("filler", &i).await.unwrap();
            }
            let left: Vec<redis::Value> = redis::cmd("XRANGE")
                .arg(&prefix)
                .arg(&offset)
                .arg(&offset)
                .query_async(&mut con)
                .await
                .unwrap();
            if left.is_empty() {
                break;
            }
        }
    })
    .await;
    let c = Client::recover(a.addr, &pid, &offset).await;
    assert_ne!(
        c.sid, sid,
        "an offset no longer stored gives a fresh connection"
    );
    assert!(c.before.is_empty());
}

#[tokio::test]
async fn middlewares_run_for_a_recovered_socket_when_told() {
    let url = redis_url();
    let prefix = unique("rec-mw");
    let _keys = Keys::new(&url, &prefix);
    let recovery = RecoveryConfig {
        skip_middlewares: false,
        ..RecoveryConfig::default()
    };
    let mut a = node(&prefix, "node0", recovery.clone()).await;
    let b = node(&prefix, "node1", recovery).await;
    let mut c = a.client().await;
    let (sid, pid) = (c.sid.clone(), c.pid.clone().unwrap());
    a.io.emit("m", &1).await.unwrap();
    let offset = c.expect("m").await.offset();
    c.kill();
    persisted(&prefix, &pid).await;
    let runs = b.middleware_runs.load(Ordering::SeqCst);
    let c = Client::recover(b.addr, &pid, &offset).await;
    assert_eq!(c.sid, sid);
    assert_eq!(b.middleware_runs.load(Ordering::SeqCst), runs + 1);
    drop(c);
    // And a middleware may still refuse it.
    let mut c = a.client().await;
    let pid = c.pid.clone().unwrap();
    let _ = a.socket().await;
    a.io.emit("m", &2).await.unwrap();
    let offset = loop {
        let e = c.event().await;
        if e.args[0] == json!(2) {
            break e.offset();
        }
    };
    c.kill();
    persisted(&prefix, &pid).await;
    let refused = Client::connect(
        a.addr,
        "",
        Some(json!({"pid": pid, "offset": offset, "deny": true})),
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(refused, r#"44{"message":"denied"}"#);
}

#[tokio::test]
async fn volatile_and_acked_emits_carry_no_offset_and_are_never_replayed() {
    let url = redis_url();
    let prefix = unique("rec-volatile");
    let _keys = Keys::new(&url, &prefix);
    let mut a = node(&prefix, "node0", RecoveryConfig::default()).await;
    let b = node(&prefix, "node1", RecoveryConfig::default()).await;
    let mut c = a.client().await;
    let pid = c.pid.clone().unwrap();
    c.answer("q", json!("a"));
    let socket = a.socket().await;
    socket.emit_volatile("v", &1).unwrap();
    assert_eq!(c.expect("v").await.text, r#"42["v",1]"#);
    let answer = socket
        .emit_with_ack_timeout("q", &1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(answer, vec![switchboard::Value::from("a")]);
    let q = c.expect("q").await;
    assert_eq!(q.args, [json!(1)], "no offset on an emit with ack");
    let answers =
        b.io.broadcast()
            .timeout(Duration::from_secs(5))
            .emit_with_ack("q", &2)
            .await
            .unwrap();
    assert_eq!(answers.len(), 1);
    assert_eq!(c.expect("q").await.args, [json!(2)]);
    b.io.emit("m", &1).await.unwrap();
    let offset = c.expect("m").await.offset();
    c.kill();
    persisted(&prefix, &pid).await;
    a.io.broadcast().volatile().emit("v", &2).await.unwrap();
    b.io.broadcast().volatile().emit("v", &3).await.unwrap();
    let _ =
        a.io.broadcast()
            .timeout(Duration::from_millis(100))
            .emit_with_ack("q", &3)
            .await;
    let _ =
        b.io.broadcast()
            .timeout(Duration::from_millis(100))
            .emit_with_ack("q", &4)
            .await;
    let _ = socket.emit_volatile("v", &4);
    b.io.emit("m", &2).await.unwrap();
    let c = Client::recover(a.addr, &pid, &offset).await;
    assert_eq!(
        names_and_args(&c.before, &offset),
        [("m".into(), json!(2))],
        "only the plain broadcast"
    );
}

#[tokio::test]
async fn binary_packets_are_replayed_intact() {
    let url = redis_url();
    let prefix = unique("rec-binary");
    let _keys = Keys::new(&url, &prefix);
    let mut a = node(&prefix, "node0", RecoveryConfig::default()).await;
    let b = node(&prefix, "node1", RecoveryConfig::default()).await;
    let mut c = a.client().await;
    let pid = c.pid.clone().unwrap();
    let socket = a.socket().await;
    a.io.emit("m", &1).await.unwrap();
    let offset = c.expect("m").await.offset();
    c.kill();
    persisted(&prefix, &pid).await;
    let blob = Bytes::from_static(&[0, 1, 0xfe, 0xff]);
    b.io.broadcast()
        .emit_many("up", &(json!({"file": "x"}), blob.clone()))
        .await
        .unwrap();
    socket.emit_many("direct", &(blob.clone(), "tail")).unwrap();
    a.io.emit("m", &2).await.unwrap();
    let c = Client::recover(b.addr, &pid, &offset).await;
    assert_eq!(c.before.len(), 3, "{:?}", c.before);
    let up = &c.before[0];
    let o1 = up.offset();
    assert_eq!(
        up.text,
        format!(r#"451-["up",{{"file":"x"}},{{"_placeholder":true,"num":0}},"{o1}"]"#)
    );
    assert_eq!(up.attachments, vec![blob.to_vec()]);
    let direct = &c.before[1];
    let o2 = direct.offset();
    assert_eq!(
        direct.text,
        format!(r#"451-["direct",{{"_placeholder":true,"num":0}},"tail","{o2}"]"#)
    );
    assert_eq!(direct.attachments, vec![blob.to_vec()]);
    assert_eq!(c.before[2].name, "m");
    assert!(entry_id(&o1) < entry_id(&o2));
}

#[tokio::test]
async fn disconnect_handlers_run_once_per_socket_lifetime() {
    let url = redis_url();
    let prefix = unique("rec-handlers");
    let _keys = Keys::new(&url, &prefix);
    let mut a = node(&prefix, "node0", RecoveryConfig::default()).await;
    let mut b = node(&prefix, "node1", RecoveryConfig::default()).await;
    let mut c = a.client().await;
    let (sid, pid) = (c.sid.clone(), c.pid.clone().unwrap());
    let _ = a.socket().await;
    a.io.emit("m", &1).await.unwrap();
    let offset = c.expect("m").await.offset();
    c.kill();
    recv("disconnect on a", &mut a.left).await;
    assert_eq!(a.handler_runs.lock().unwrap().get(&sid), Some(&(1, 1)));
    persisted(&prefix, &pid).await;
    let c = Client::recover(b.addr, &pid, &offset).await;
    assert_eq!(c.sid, sid);
    let _ = b.socket().await;
    // The second lifetime ends for good: the client leaves.
    c.send("41");
    let (_, reason) = recv("disconnect on b", &mut b.left).await;
    assert_eq!(reason, DisconnectReason::ClientNamespaceDisconnect);
    assert_eq!(b.handler_runs.lock().unwrap().get(&sid), Some(&(1, 1)));
    assert_eq!(a.handler_runs.lock().unwrap().get(&sid), Some(&(1, 1)));
    assert!(
        !session_exists(&prefix, &pid).await,
        "no session kept for a client that left"
    );
    // Shutting the nodes down runs nothing more for it.
    let (a_runs, b_runs) = (Arc::clone(&a.handler_runs), Arc::clone(&b.handler_runs));
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(a_runs.lock().unwrap().get(&sid), Some(&(1, 1)));
    assert_eq!(b_runs.lock().unwrap().get(&sid), Some(&(1, 1)));
    assert_eq!(
        a_runs.lock().unwrap().len() + b_runs.lock().unwrap().len(),
        2
    );
}

/// Numbered broadcasts go on (from the other node) while a client leaves
/// and recovers, several times, alternating nodes: every number arrives
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_traffic_during_recoveries_has_no_gap_and_no_duplicate() {
    let url = redis_url();
    let prefix = unique("rec-live");
    let _keys = Keys::new(&url, &prefix);
    let a = node(&prefix, "node0", RecoveryConfig::default()).await;
    let b = node(&prefix, "node1", RecoveryConfig::default()).await;
    let sender_io = b.io.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let sender = tokio::spawn(async move {
        let mut i = 0u64;
        while !stop2.load(Ordering::SeqCst) {
            sender_io.emit("n", &i).await.unwrap();
            i += 1;
            if i.is_multiple_of(4) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    let mut seen: Vec<u64> = Vec::new();
    let mut last: Option<String> = None;
    let mut ids = (String::new(), String::new());
    for round in 0..6 {
        let addr = if round % 2 == 0 { a.addr } else { b.addr };
        let mut c = match &last {
            Some(o) => Client::recover(addr, &ids.1, o).await,
            None => Client::connect(addr, "", None).await.unwrap(),
        };
        if round > 0 {
            assert_eq!(c.sid, ids.0, "round {round} recovered");
        }
        ids = (c.sid.clone(), c.pid.clone().unwrap());
        let mut events = std::mem::take(&mut c.before);
        for _ in 0..50 {
            events.push(c.expect("n").await);
        }
        for e in events {
            seen.push(e.args[0].as_u64().unwrap());
            last = Some(e.offset());
        }
        c.kill();
        persisted(&prefix, &ids.1).await;
    }
    stop.store(true, Ordering::SeqCst);
    sender.await.unwrap();
    let first = seen[0];
    let expected: Vec<u64> = (first..first + seen.len() as u64).collect();
    assert_eq!(
        seen, expected,
        "every number once, in order, across 6 recoveries"
    );
}
