//! On a Redis Cluster (three masters of the test's own): the sharded mode
//! (made for clusters), and the classic and streams modes, route commands
//! and sharded subscriptions by slot, count servers over every node, and
//! keep working when a master is killed and restarted (its sharded
//! channels are subscribed again, one by one).

mod common;

use common::*;
use serde_json::json;

/// Rooms whose dynamic channels are held by different masters.
async fn rooms_on_every_master(cluster: &OwnCluster, prefix: &str) -> Vec<String> {
    let mut found: Vec<Option<String>> = vec![None; 3];
    for i in 0.. {
        let room = format!("room{i}");
        let node = cluster.node_of(&format!("{prefix}#/#{room}#")).await;
        if found[node].is_none() {
            found[node] = Some(room);
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found.into_iter().map(Option::unwrap).collect()
}

async fn every_operation(kind: Kind) {
    let redis = OwnCluster::start().await;
    let url = redis.url();
    let prefix = unique("cluster");
    let nodes = cluster(kind, &url, &prefix, 2, |a| a).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let rooms = rooms_on_every_master(&redis, &prefix).await;
    let mut ca = a.client().await;
    let mut cb = b.client().await;
    for room in &rooms {
        cb.join(room).await;
    }
    // A broadcast to each room, from the other node, whatever master holds
    // its channel.
    for room in &rooms {
        a.io.to(room.clone()).emit("m", &room).await.unwrap();
        let e = cb.expect("m").await;
        assert_eq!(e.args, vec![json!(room)], "{kind:?}");
    }
    // The whole namespace.
    b.io.emit("all", &1).await.unwrap();
    ca.expect("all").await;
    cb.expect("all").await;
    // Requests: counts summed over the masters, fetch, server-side emit
    // with acks, broadcast with acks.
    assert_eq!(a.io.server_count().await.unwrap(), 2, "{kind:?}");
    let all = a.io.broadcast().fetch_sockets().await.unwrap();
    assert_eq!(all.len(), 2, "{kind:?}");
    let answers =
        a.io.server_side_emit_with_ack("ping-node", &())
            .await
            .unwrap();
    assert_eq!(answers, vec![switchboard::Value::from("node1")]);
    ca.answer("q", json!("from-a"));
    cb.answer("q", json!("from-b"));
    let acks =
        a.io.broadcast()
            .timeout(std::time::Duration::from_secs(5))
            .emit_many_with_ack("q", &())
            .await
            .unwrap();
    assert_eq!(acks.len(), 2, "{kind:?}");
}

#[tokio::test]
async fn sharded_dynamic_on_a_cluster() {
    every_operation(Kind::ShardedDynamic).await;
}

#[tokio::test]
async fn classic_on_a_cluster() {
    every_operation(Kind::Classic).await;
}

#[tokio::test]
async fn streams_on_a_cluster() {
    every_operation(Kind::Streams).await;
}

/// A master that holds some room channels is killed and restarted: those
/// channels are subscribed again and broadcasts to them flow.
#[tokio::test]
async fn sharded_channels_come_back_after_a_master_restarts() {
    let mut redis = OwnCluster::start().await;
    let url = redis.url();
    let prefix = unique("cluster-restart");
    let nodes = cluster(Kind::ShardedDynamic, &url, &prefix, 2, |a| a).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let rooms = rooms_on_every_master(&redis, &prefix).await;
    let mut cb = b.client().await;
    for room in &rooms {
        cb.join(room).await;
    }
    for room in &rooms {
        a.io.to(room.clone()).emit("before", &room).await.unwrap();
        cb.expect("before").await;
    }
    let victim = redis.node_of(&format!("{prefix}#/#{}#", rooms[1])).await;
    redis.restart(victim).await;
    // Every room's channel works again, in both directions.
    for room in &rooms {
        bounded(&format!("{room} to deliver again"), async {
            loop {
                let _ = a.io.to(room.clone()).emit("after", &room).await;
                match tokio::time::timeout(std::time::Duration::from_millis(300), cb.next()).await {
                    Ok(In::Event(e)) if e.name == "after" && e.args == vec![json!(room)] => break,
                    _ => continue,
                }
            }
        })
        .await;
    }
}
