//! Every cluster operation of the library across in-process nodes, in every
//! mode (classic, sharded dynamic, sharded static, streams), with two and
//! three nodes on the machine's Redis (a random prefix per test):
//! broadcasts (rooms, except, volatile, local-only, several rooms, binary),
//! broadcasts with acks (answers of every node, a room, partial answers on
//! timeout), `fetch_sockets` (ids, rooms, data, handshakes; filters),
//! `rooms()`, remote sockets (emit, join, leave, disconnect), joins, leaves
//! and disconnects of a selection, server-side emits with and without acks
//! (binary answers too), the server count; and requests to a node that
//! does not answer time out with `AdapterError::Timeout` after the
//! configured request timeout.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use serde_json::json;
use switchboard::adapter::AdapterError;
use switchboard::{BroadcastError, DisconnectReason, Value};

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn strings(v: &[Value]) -> Vec<String> {
    sorted(
        v.iter()
            .map(|x| x.as_str().expect("a string").to_owned())
            .collect(),
    )
}

async fn every_operation(kind: Kind, n: usize) {
    assert!(n >= 2);
    let url = redis_url();
    let prefix = unique(&format!("ops{n}"));
    let _keys = Keys::new(&url, &prefix);
    let mut nodes = cluster(kind, &url, &prefix, n, |a| a).await;
    let last = n - 1;

    // One client per node, with its own query and auth.
    let mut clients = Vec::new();
    let mut socks = Vec::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        let c = Client::connect(
            node.addr,
            &format!("&k=v{i}"),
            Some(json!({"token": format!("t{i}")})),
        )
        .await
        .expect("connected");
        let s = node.socket().await;
        assert_eq!(s.id().as_str(), c.sid);
        s.set_data(&json!({"node": i})).unwrap();
        c.answer("q", json!(format!("c{i}")));
        clients.push(c);
        socks.push(s);
    }
    for c in &mut clients {
        c.join("all").await;
        c.join("r").await;
    }
    clients[1].join("x").await;
    let sids: Vec<String> = clients.iter().map(|c| c.sid.clone()).collect();
    let io0 = nodes[0].io.clone();

    // --- Broadcasts: except, volatile, local-only, several rooms -------
    io0.to("r").except("x").emit("m", &1).await.unwrap();
    io0.broadcast().local().emit("l", &3).await.unwrap();
    io0.to("x").to("nobody").emit("many", &4).await.unwrap();
    io0.emit("mark", &5).await.unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let expected: Vec<&str> = match i {
            0 => vec!["m", "l", "mark"],
            1 => vec!["many", "mark"],
            _ => vec!["m", "mark"],
        };
        assert_eq!(c.names_until("mark").await, expected, "client {i}");
    }
    // Volatile: carried to every node; delivered to a client with nothing
    // queued (each one is idle now: it read everything sent so far).
    io0.to("r").volatile().emit("v", &2).await.unwrap();
    io0.emit("mark1", &5).await.unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.names_until("mark1").await, ["v", "mark1"], "client {i}");
    }
    // A single room from another node (classic and sharded dynamic: the
    // room's own channel).
    let io_last = nodes[last].io.clone();
    io_last.to("x").emit("xm", &6).await.unwrap();
    io_last.emit("mark2", &7).await.unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let expected = if i == 1 {
            vec!["xm", "mark2"]
        } else {
            vec!["mark2"]
        };
        assert_eq!(c.names_until("mark2").await, expected, "client {i}");
    }

    // --- Binary payloads, intact on every node ---------------------------
    let blob = Bytes::from_static(&[0, 1, 0xfe, 0xff, b'"']);
    io0.to("r")
        .emit_many("bin", &(json!({"a": 1}), blob.clone()))
        .await
        .unwrap();
    for c in &mut clients {
        let e = c.expect("bin").await;
        assert_eq!(
            e.text,
            r#"451-["bin",{"a":1},{"_placeholder":true,"num":0}]"#
        );
        assert_eq!(e.attachments, vec![blob.to_vec()]);
    }

    // --- Broadcast with acks spanning the nodes --------------------------
    let answers = io0
        .broadcast()
        .timeout(Duration::from_secs(5))
        .emit_with_ack("q", &"?")
        .await
        .expect("every client answers");
    let mut got: Vec<String> = answers
        .iter()
        .map(|a| a.args[0].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    let all: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    assert_eq!(got, all);
    let local: Vec<_> = answers.iter().filter(|a| a.socket.is_some()).collect();
    assert_eq!(local.len(), 1, "one answer comes from this node's socket");
    assert_eq!(local[0].socket.unwrap().as_str(), sids[0]);
    for c in &mut clients {
        assert!(c.expect("q").await.ack.is_some());
    }
    let answers = io0
        .to("x")
        .timeout(Duration::from_secs(5))
        .emit_with_ack("q", &"x?")
        .await
        .expect("the room answers");
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].args, vec![Value::from("c1")]);
    clients[1].expect("q").await;
    // No client anywhere: every node reports none, so the call returns at
    // once, long before its timeout.
    let none = bounded(
        "a broadcast with acks to an empty room",
        io0.to("nobody")
            .timeout(Duration::from_secs(60))
            .emit_with_ack("q", &()),
    )
    .await
    .expect("no answers to wait for");
    assert!(none.is_empty());
    // One client does not answer: a timeout with the others' answers.
    for (i, c) in clients.iter().enumerate() {
        if i != 1 {
            c.answer("q2", json!(i));
        }
    }
    let err = io0
        .broadcast()
        .timeout(Duration::from_millis(800))
        .emit_with_ack("q2", &())
        .await
        .expect_err("client 1 never answers");
    assert!(matches!(err.error, BroadcastError::Timeout), "{err}");
    let mut partial: Vec<u64> = err
        .responses
        .iter()
        .map(|a| a.args[0].as_u64().unwrap())
        .collect();
    partial.sort();
    let others: Vec<u64> = (0..n as u64).filter(|i| *i != 1).collect();
    assert_eq!(partial, others);
    for c in &mut clients {
        c.expect("q2").await;
    }

    // --- fetch_sockets: ids, rooms, data, handshakes ---------------------
    let found = io0.broadcast().fetch_sockets().await.unwrap();
    assert_eq!(
        sorted(found.iter().map(|s| s.id().to_string()).collect()),
        sorted(sids.clone())
    );
    for (i, sid) in sids.iter().enumerate() {
        let s = found.iter().find(|s| s.id().as_str() == sid).unwrap();
        let mut rooms = vec![sid.clone(), "all".into(), "r".into()];
        if i == 1 {
            rooms.push("x".into());
        }
        assert_eq!(sorted(s.rooms().to_vec()), sorted(rooms), "rooms of {i}");
        assert_eq!(
            s.data::<serde_json::Value>().unwrap(),
            json!({"node": i}),
            "data of {i}"
        );
        let hs = &s.info().handshake;
        assert_eq!(
            hs.auth().get("token"),
            Some(&Value::from(format!("t{i}"))),
            "auth of {i}"
        );
        assert_eq!(hs.query_param("k"), Some(format!("v{i}").as_str()));
        assert_eq!(hs.query().get("EIO").map(String::as_str), Some("4"));
        assert_eq!(
            hs.address().map(|a| a.ip()),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert!(hs.issued() > 0);
    }
    let in_x = io0.to("x").fetch_sockets().await.unwrap();
    assert_eq!(
        in_x.iter().map(|s| s.id().to_string()).collect::<Vec<_>>(),
        vec![sids[1].clone()]
    );
    let here = io0.broadcast().local().fetch_sockets().await.unwrap();
    assert_eq!(
        here.iter().map(|s| s.id().to_string()).collect::<Vec<_>>(),
        vec![sids[0].clone()],
        "local-only stays on this node"
    );
    let not_x = io0.broadcast().except("x").fetch_sockets().await.unwrap();
    assert_eq!(not_x.len(), n - 1);
    assert!(not_x.iter().all(|s| s.id().as_str() != sids[1]));

    // --- rooms() ----------------------------------------------------------
    let mut expected_rooms = sids.clone();
    expected_rooms.extend(["all".to_owned(), "r".to_owned(), "x".to_owned()]);
    assert_eq!(
        sorted(io0.broadcast().rooms().await.unwrap()),
        sorted(expected_rooms)
    );
    assert_eq!(
        sorted(io0.to("x").rooms().await.unwrap()),
        sorted(vec![sids[1].clone(), "all".into(), "r".into(), "x".into()])
    );

    // --- A remote socket: emit, join, leave --------------------------------
    let remote = io0.to(sids[last].clone()).fetch_sockets().await.unwrap();
    assert_eq!(remote.len(), 1);
    let remote = remote.into_iter().next().unwrap();
    remote.emit("direct", &"hi").await.unwrap();
    assert_eq!(clients[last].expect("direct").await.args, vec![json!("hi")]);
    remote.join(["jr"]).await.unwrap();
    let s = socks[last].clone();
    wait_until("the remote join", || s.rooms().contains(&"jr".to_owned())).await;
    nodes[last].ready().await;
    io0.to("jr").emit("jm", &1).await.unwrap();
    io0.emit("mark3", &0).await.unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let expected = if i == last {
            vec!["jm", "mark3"]
        } else {
            vec!["mark3"]
        };
        assert_eq!(c.names_until("mark3").await, expected, "client {i}");
    }
    remote.leave(["jr"]).await.unwrap();
    wait_until("the remote leave", || !s.rooms().contains(&"jr".to_owned())).await;
    io0.to("jr").emit("jm2", &1).await.unwrap();
    io0.emit("mark4", &0).await.unwrap();
    for c in &mut clients {
        assert_eq!(c.names_until("mark4").await, vec!["mark4"]);
    }

    // --- Join and leave for a selection ------------------------------------
    io0.to("r").except("x").join(["sel"]).await.unwrap();
    let joined: Vec<usize> = (0..n).filter(|i| *i != 1).collect();
    for &i in &joined {
        let s = socks[i].clone();
        wait_until("the selection joined", || {
            s.rooms().contains(&"sel".to_owned())
        })
        .await;
        nodes[i].ready().await;
    }
    // Node 1 handled the join before this broadcast (published after it).
    io0.emit("mark5", &0).await.unwrap();
    clients[1].expect("mark5").await;
    assert!(!socks[1].rooms().contains(&"sel".to_owned()));
    io0.to("sel").emit("selm", &1).await.unwrap();
    io0.emit("mark6", &0).await.unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        if i != 1 {
            c.expect("mark5").await;
        }
        let expected = if i == 1 {
            vec!["mark6"]
        } else {
            vec!["selm", "mark6"]
        };
        assert_eq!(c.names_until("mark6").await, expected, "client {i}");
    }
    io0.to("sel").leave(["sel"]).await.unwrap();
    for &i in &joined {
        let s = socks[i].clone();
        wait_until("the selection left", || {
            !s.rooms().contains(&"sel".to_owned())
        })
        .await;
    }

    // --- Server-side emits --------------------------------------------------
    io0.server_side_emit("relay", &("p", 1)).await.unwrap();
    for node in nodes.iter_mut().skip(1) {
        let args = recv("relay", &mut node.relayed).await;
        assert_eq!(args, vec![Value::from("p"), Value::from(1u64)]);
    }
    // Binary: intact, except in classic mode where server-side emits are
    // JSON (as Node's adapter writes them: a buffer arrives as
    // `{type: "Buffer", data: [...]}`, as it does on a Node node).
    let blob_as_sent = if kind == Kind::Classic {
        Value::from(json!({"type": "Buffer", "data": blob.to_vec()}))
    } else {
        Value::Binary(blob.clone())
    };
    let as_json = |v: &[Value]| serde_json::to_value(v).unwrap();
    io0.server_side_emit("relay", &(blob.clone(),))
        .await
        .unwrap();
    for node in nodes.iter_mut().skip(1) {
        let args = recv("binary relay", &mut node.relayed).await;
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].has_binary(), kind != Kind::Classic);
        assert_eq!(as_json(&args), as_json(std::slice::from_ref(&blob_as_sent)));
    }
    // The sender does not receive its own: the next one it gets is node 1's.
    nodes[1]
        .io
        .server_side_emit("relay", &("from1",))
        .await
        .unwrap();
    let args = recv("relay from node 1", &mut nodes[0].relayed).await;
    assert_eq!(args, vec![Value::from("from1")]);
    let answers = io0
        .server_side_emit_with_ack("ping-node", &())
        .await
        .unwrap();
    let others: Vec<String> = (1..n).map(|i| format!("node{i}")).collect();
    assert_eq!(strings(&answers), others);
    let answers = nodes[last]
        .io
        .server_side_emit_with_ack("ping-node", &())
        .await
        .unwrap();
    let others: Vec<String> = (0..last).map(|i| format!("node{i}")).collect();
    assert_eq!(strings(&answers), others);
    let answers = io0
        .server_side_emit_with_ack("echo", &(blob.clone(),))
        .await
        .unwrap();
    assert_eq!(answers.len(), n - 1);
    for a in &answers {
        assert_eq!(a.has_binary(), kind != Kind::Classic);
        assert_eq!(
            as_json(std::slice::from_ref(a)),
            as_json(std::slice::from_ref(&blob_as_sent))
        );
    }

    // --- Disconnects: a selection (namespace only), a remote socket ----
    io0.to("x").disconnect(false).await.unwrap();
    assert_eq!(clients[1].next().await, In::Disconnect);
    let (sid, reason) = recv("disconnect on node 1", &mut nodes[1].left).await;
    assert_eq!(sid, sids[1]);
    assert_eq!(reason, DisconnectReason::ServerNamespaceDisconnect);
    let mut d = nodes[last].client().await;
    let _ = nodes[last].socket().await;
    let remote = io0.to(d.sid.clone()).fetch_sockets().await.unwrap();
    assert_eq!(remote.len(), 1);
    remote[0].disconnect(true).await.unwrap();
    d.closed().await;
    let (sid, _) = recv("disconnect of d", &mut nodes[last].left).await;
    assert_eq!(sid, d.sid);
    assert_eq!(
        io0.broadcast().fetch_sockets().await.unwrap().len(),
        n - 1,
        "client 1 left the namespace, d is gone"
    );

    // --- Server count, as nodes come and go --------------------------------
    for node in &nodes {
        assert_eq!(node.io.server_count().await.unwrap(), n);
    }
    let gone = nodes.pop().unwrap();
    gone.shutdown().await;
    expect_server_count(&nodes[0], n - 1).await;
    let answers = io0
        .server_side_emit_with_ack("ping-node", &())
        .await
        .unwrap();
    assert_eq!(answers.len(), n - 2);
}

/// Three nodes, one of which has no handler for the event: the request
/// fails with a typed timeout after the configured request timeout, with
/// the answer that did arrive; a broadcast with acks to a client that
/// never answers does too.
async fn requests_time_out(kind: Kind) {
    let url = redis_url();
    let prefix = unique("timeout");
    let _keys = Keys::new(&url, &prefix);
    let timeout = Duration::from_millis(700);
    let a = Node::start(
        kind.adapter(&prefix).request_timeout(timeout),
        &url,
        NodeOptions::named("node0"),
    )
    .await;
    let b = Node::start(
        kind.adapter(&prefix).request_timeout(timeout),
        &url,
        NodeOptions::named("node1"),
    )
    .await;
    let c = Node::start(
        kind.adapter(&prefix).request_timeout(timeout),
        &url,
        NodeOptions::named("node2").silent(),
    )
    .await;
    for node in [&a, &b, &c] {
        expect_server_count(node, 3).await;
    }
    let timeouts = a.factory.metrics().timeouts;
    let started = Instant::now();
    let err =
        a.io.server_side_emit_with_ack("ping-node", &())
            .await
            .expect_err("node2 never answers");
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    match err.error {
        BroadcastError::Adapter(AdapterError::Timeout { received, expected }) => {
            assert_eq!((received, expected), (1, 2));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(err.responses, vec![Value::from("node1")]);
    assert_eq!(a.factory.metrics().timeouts, timeouts + 1);
    // The silent node is still a member: the others answer it.
    let answers =
        c.io.server_side_emit_with_ack("ping-node", &())
            .await
            .unwrap();
    assert_eq!(strings(&answers), vec!["node0", "node1"]);
}

#[tokio::test]
async fn classic_two_nodes() {
    every_operation(Kind::Classic, 2).await;
}

#[tokio::test]
async fn classic_three_nodes() {
    every_operation(Kind::Classic, 3).await;
}

#[tokio::test]
async fn sharded_dynamic_two_nodes() {
    every_operation(Kind::ShardedDynamic, 2).await;
}

#[tokio::test]
async fn sharded_dynamic_three_nodes() {
    every_operation(Kind::ShardedDynamic, 3).await;
}

#[tokio::test]
async fn sharded_static_two_nodes() {
    every_operation(Kind::ShardedStatic, 2).await;
}

#[tokio::test]
async fn sharded_static_three_nodes() {
    every_operation(Kind::ShardedStatic, 3).await;
}

#[tokio::test]
async fn streams_two_nodes() {
    every_operation(Kind::Streams, 2).await;
}

#[tokio::test]
async fn streams_three_nodes() {
    every_operation(Kind::Streams, 3).await;
}

#[tokio::test]
async fn classic_requests_time_out() {
    requests_time_out(Kind::Classic).await;
}

#[tokio::test]
async fn sharded_dynamic_requests_time_out() {
    requests_time_out(Kind::ShardedDynamic).await;
}

#[tokio::test]
async fn sharded_static_requests_time_out() {
    requests_time_out(Kind::ShardedStatic).await;
}

#[tokio::test]
async fn streams_requests_time_out() {
    requests_time_out(Kind::Streams).await;
}
