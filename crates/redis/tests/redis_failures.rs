//! Redis going away and coming back, in every mode, with a `redis-server`
//! of each test's own (killed with -9 and restarted on the same port; the
//! machine's Redis is never touched):
//!
//! - while it is down, local broadcasts still reach local clients; cluster
//!   requests (fetch_sockets, rooms, server-side emits with and without
//!   acks, server count, broadcasts with acks, joins) fail at once with
//!   `AdapterError::Unavailable`, long before the (long) request timeout;
//!   `is_connected()` is false and `metrics().disconnects` moved; many
//!   broadcasts are dropped and counted, not queued;
//! - once it is back, the adapter reconnects (`metrics().reconnects`) and
//!   re-subscribes every channel: broadcasts from the other node arrive
//!   again (sharded dynamic: room channels too, old and new), and every
//!   cluster request works again;
//! - a Redis that stalls (SIGSTOP) fills the publisher's bounded queue;
//!   the rest is dropped and counted, and all goes on once it answers.

mod common;

use std::future::Future;
use std::time::Duration;

use common::*;
use serde_json::json;
use switchboard::adapter::AdapterError;
use switchboard::{BroadcastError, SocketIo, Value};

/// The request timeout of these nodes: failures during the outage must
/// come from the outage, not from waiting this long.
const LONG: Duration = Duration::from_secs(60);

/// Broadcasts made while Redis is down.
const FLOOD: u64 = 20_000;

/// Runs a cluster request during the outage: it must fail well before
/// [`LONG`].
async fn fails_fast<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not fail fast while Redis is down"),
    }
}

fn is_unavailable(e: &BroadcastError) -> bool {
    matches!(e, BroadcastError::Adapter(AdapterError::Unavailable(_)))
}

/// Emits `event` from `io` until `client` receives it (the subscriptions
/// come back asynchronously), then makes sure nothing else is pending.
async fn delivered_again(io: &SocketIo, room: &str, client: &mut Client, event: &str) {
    bounded(&format!("{event} to arrive again"), async {
        loop {
            let _ = io.to(room.to_owned()).emit(event, &0).await;
            match tokio::time::timeout(Duration::from_millis(300), client.next()).await {
                Ok(In::Event(e)) if e.name == event => break,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(_) => continue,
            }
        }
    })
    .await;
    // Earlier attempts may still arrive: skip them, up to a marker.
    let marker = format!("{event}-done");
    io.to(room.to_owned()).emit(&marker, &0).await.unwrap();
    loop {
        let e = client.event().await;
        if e.name == marker {
            break;
        }
        assert_eq!(e.name, event);
    }
}

async fn survives_a_redis_restart(kind: Kind) {
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    let prefix = unique("restart");
    let nodes = cluster(kind, &url, &prefix, 2, |a| a.request_timeout(LONG)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut ca = a.client().await;
    let mut cb = b.client().await;
    ca.answer("q", json!("a"));
    cb.answer("q", json!("b"));
    ca.join("r").await;
    cb.join("r").await;
    ca.join("ra").await;
    cb.join("rb").await;
    b.io.to("r").emit("before", &1).await.unwrap();
    ca.expect("before").await;
    cb.expect("before").await;
    let before: Vec<_> = nodes.iter().map(|n| n.factory.metrics()).collect();
    assert!(a.factory.is_connected() && b.factory.is_connected());

    redis.kill();
    for node in &nodes {
        let f = node.factory.clone();
        wait_until(&format!("{} to notice", node.name), || !f.is_connected()).await;
    }
    for (node, m) in nodes.iter().zip(&before) {
        assert!(
            node.factory.metrics().disconnects > m.disconnects,
            "{}",
            node.name
        );
    }

    // Local broadcasts still reach local clients (the error, if any, says
    // the other nodes were not told).
    match a.io.to("r").emit("local", &1).await {
        Ok(()) => {}
        Err(e) => assert!(is_unavailable(&e), "{e}"),
    }
    ca.expect("local").await;
    a.io.broadcast().local().emit("local2", &2).await.unwrap();
    ca.expect("local2").await;

    // Cluster requests fail at once with a clear error.
    let e = fails_fast("fetch_sockets", a.io.broadcast().fetch_sockets())
        .await
        .expect_err("fetch_sockets");
    assert!(is_unavailable(&e), "{e}");
    let e = fails_fast("rooms", a.io.broadcast().rooms())
        .await
        .expect_err("rooms");
    assert!(is_unavailable(&e), "{e}");
    let e = fails_fast(
        "server_side_emit_with_ack",
        a.io.server_side_emit_with_ack("ping-node", &()),
    )
    .await
    .expect_err("server_side_emit_with_ack");
    assert!(is_unavailable(&e.error), "{e}");
    assert!(e.responses.is_empty());
    let e = fails_fast("server_side_emit", a.io.server_side_emit("relay", &1))
        .await
        .expect_err("server_side_emit");
    assert!(is_unavailable(&e), "{e}");
    let e = fails_fast("server_count", a.io.server_count())
        .await
        .expect_err("server_count");
    assert!(matches!(e, AdapterError::Unavailable(_)), "{e}");
    let e = fails_fast(
        "a broadcast with acks",
        a.io.broadcast().timeout(LONG).emit_with_ack("q", &()),
    )
    .await
    .expect_err("a broadcast with acks");
    assert!(is_unavailable(&e.error), "{e}");
    let e = fails_fast("a join", a.io.broadcast().join(["j"]))
        .await
        .expect_err("a join");
    assert!(is_unavailable(&e), "{e}");
    // ...applied here all the same.
    let sa = a.io.ns("/").get_socket(ca.sid.parse().unwrap()).unwrap();
    assert!(sa.rooms().contains(&"j".to_owned()));
    assert!(!a.factory.is_connected());

    // Memory stays bounded: what cannot be sent is dropped and counted.
    let dropped = a.factory.metrics().dropped;
    for i in 0..FLOOD {
        let _ = a.io.to("nobody").emit("flood", &i).await;
    }
    assert_eq!(a.factory.metrics().dropped - dropped, FLOOD);

    redis.restart().await;
    for (node, m) in nodes.iter().zip(&before) {
        let f = node.factory.clone();
        wait_until(&format!("{} to reconnect", node.name), || {
            f.is_connected() && f.metrics().reconnects > m.reconnects
        })
        .await;
    }
    // Every subscription is back: broadcasts both ways (sharded dynamic:
    // through the room's channel).
    delivered_again(&b.io, "ra", &mut ca, "again").await;
    delivered_again(&a.io, "rb", &mut cb, "again").await;
    // A room joined after the restart (sharded dynamic: a new channel).
    ca.join("r2").await;
    delivered_again(&b.io, "r2", &mut ca, "new-room").await;
    // Cluster requests work again.
    eventually("fetch_sockets to work again", || async {
        matches!(a.io.broadcast().fetch_sockets().await, Ok(s) if s.len() == 2)
    })
    .await;
    assert_eq!(a.io.server_count().await.unwrap(), 2);
    assert_eq!(b.io.server_count().await.unwrap(), 2);
    assert_eq!(
        a.io.server_side_emit_with_ack("ping-node", &())
            .await
            .unwrap(),
        vec![Value::from("node1")]
    );
    let answers =
        a.io.broadcast()
            .timeout(Duration::from_secs(5))
            .emit_with_ack("q", &())
            .await
            .unwrap();
    let mut got: Vec<String> = answers
        .iter()
        .map(|r| r.args[0].as_str().unwrap().to_owned())
        .collect();
    got.sort();
    assert_eq!(got, ["a", "b"]);
    ca.expect("q").await;
    cb.expect("q").await;
    b.io.server_side_emit("relay", &"back").await.unwrap();
    let mut nodes = nodes;
    assert_eq!(
        recv("relay", &mut nodes[0].relayed).await,
        vec![Value::from("back")]
    );
}

/// Redis stalls (SIGSTOP) instead of going away: nothing tells the
/// adapter, so broadcasts are queued for the publisher; the queue is
/// bounded (16,384 commands, plus one pipeline of 512 in flight) and what
/// does not fit is dropped and counted. Once Redis answers again, the
/// queue drains and the cluster works. (Classic mode: its broadcasts do
/// not wait for Redis; the other modes wait for the stream entry id or the
/// publication, so a stalled Redis holds the caller, up to the response
/// timeout, instead of a queue.)
#[tokio::test]
async fn a_stalled_redis_drops_rather_than_queues_without_bound() {
    const QUEUE: u64 = 16_384 + 512;
    const N: u64 = 40_000;
    let redis = OwnRedis::start().await;
    let url = redis.url();
    let prefix = unique("stall");
    let mut nodes = cluster(Kind::Classic, &url, &prefix, 2, |a| a).await;
    let mut cb = nodes[1].client().await;
    let _ = nodes[1].socket().await;
    cb.join("r").await;
    let dropped = nodes[0].factory.metrics().dropped;
    redis.pause();
    for i in 0..N {
        let _ = nodes[0].io.to("nobody").emit("flood", &i).await;
    }
    let lost = nodes[0].factory.metrics().dropped - dropped;
    assert!(lost >= N - QUEUE, "only {lost} of {N} dropped");
    assert!(lost < N, "the queue takes what fits");
    redis.resume();
    delivered_again(&nodes[0].io, "r", &mut cb, "after-stall").await;
    assert!(nodes[0].factory.is_connected());
    nodes[0].io.server_side_emit("relay", &"ok").await.unwrap();
    assert_eq!(
        recv("relay", &mut nodes[1].relayed).await,
        vec![Value::from("ok")]
    );
}

#[tokio::test]
async fn classic() {
    survives_a_redis_restart(Kind::Classic).await;
}

#[tokio::test]
async fn sharded_dynamic() {
    survives_a_redis_restart(Kind::ShardedDynamic).await;
}

#[tokio::test]
async fn sharded_static() {
    survives_a_redis_restart(Kind::ShardedStatic).await;
}

#[tokio::test]
async fn streams() {
    survives_a_redis_restart(Kind::Streams).await;
}
