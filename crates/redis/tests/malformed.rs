//! Messages that no Node adapter would write, published straight into a
//! cluster's channels and stream with a plain Redis client: garbage bytes,
//! wrong types, missing fields, a huge rooms list, deep nesting. Each one
//! is ignored (no delivery, no join, no disconnect, no panic) and counted
//! in `metrics().malformed`; the nodes go on working.

mod common;

use common::*;
use serde_json::json;

/// How many rooms make a rooms list too long.
const HUGE: usize = 100_001;

fn pack(v: &serde_json::Value) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("msgpack")
}

fn json_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}

/// An event packet as Node adapters carry it.
fn packet() -> serde_json::Value {
    json!({"type": 2, "data": ["ev", 1], "nsp": "/"})
}

/// Broadcast options with a huge rooms list (which includes "r").
fn huge_opts() -> serde_json::Value {
    let mut rooms: Vec<String> = (0..HUGE - 1).map(|i| format!("room-{i}")).collect();
    rooms.push("r".into());
    json!({"rooms": rooms, "except": [], "flags": {}})
}

/// MessagePack nested far deeper than any decoder should follow.
fn deep_msgpack() -> Vec<u8> {
    let mut v = vec![0x91u8; 200_000];
    v.push(0xc0);
    v
}

fn deep_json() -> Vec<u8> {
    let depth = 100_000;
    let mut v = b"{\"a\":".to_vec();
    v.extend(std::iter::repeat_n(b'[', depth));
    v.extend(std::iter::repeat_n(b']', depth));
    v.push(b'}');
    v
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn publish(con: &mut redis::aio::MultiplexedConnection, cmd: &str, ch: &str, payload: &[u8]) {
    let _: i64 = redis::cmd(cmd)
        .arg(ch)
        .arg(payload)
        .query_async(con)
        .await
        .expect("publish");
}

async fn xadd(con: &mut redis::aio::MultiplexedConnection, stream: &str, fields: &[(&str, &[u8])]) {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    let _: String = cmd.query_async(con).await.expect("xadd");
}

/// Publishes the garbage of `kind`; returns how many messages each node
/// must count as malformed.
async fn publish_garbage(
    kind: Kind,
    con: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> u64 {
    let ch = format!("{prefix}#/#");
    let mut n = 0;
    match kind {
        Kind::Classic => {
            let room_ch = format!("{prefix}#/#r#");
            let req = format!("{prefix}-request#/#");
            let resp = format!("{prefix}-response#/#");
            let opts = json!({"rooms": [], "except": [], "flags": {}});
            let broadcasts: Vec<(&str, Vec<u8>)> = vec![
                // Garbage bytes.
                (&ch, vec![0xc1, 0xff, 0x00]),
                // Not [uid, packet, opts].
                (&ch, pack(&json!("hello"))),
                // Wrong types.
                (&ch, pack(&json!([1, 2, 3]))),
                // Missing options.
                (&ch, pack(&json!(["x", packet()]))),
                // A packet without data.
                (&ch, pack(&json!(["x", {"type": 2, "nsp": "/"}, opts]))),
                // Rooms that are not a list (would reach everyone).
                (
                    &ch,
                    pack(&json!(["x", packet(), {"rooms": "r", "except": [], "flags": {}}])),
                ),
                // A huge rooms list, on the room's own channel.
                (&room_ch, pack(&json!(["x", packet(), huge_opts()]))),
                // Deep nesting.
                (&ch, deep_msgpack()),
            ];
            let requests: Vec<Vec<u8>> = vec![
                b"{not json".to_vec(),
                // No type.
                json_bytes(&json!({"uid": "x", "type": "x"})),
                // A disconnect whose rooms are not a list (would
                // disconnect everyone).
                json_bytes(&json!({"uid": "x", "type": 4,
                    "opts": {"rooms": "r", "except": []}, "close": true})),
                // A join whose rooms are not a list.
                json_bytes(&json!({"uid": "x", "type": 2,
                    "opts": {"rooms": ["r"], "except": []}, "rooms": "zz"})),
                // A server-side emit without data.
                json_bytes(&json!({"uid": "x", "type": 6})),
                // A broadcast with acks whose packet has no data.
                json_bytes(&json!({"uid": "x", "requestId": "abc", "type": 7,
                    "packet": {"type": 2, "nsp": "/"}, "opts": {"rooms": [], "except": []}})),
                deep_json(),
            ];
            let responses: Vec<Vec<u8>> = vec![
                vec![0xc1],
                // No request id.
                json_bytes(&json!({"type": 8, "clientCount": 1})),
            ];
            for (ch, p) in &broadcasts {
                publish(con, "PUBLISH", ch, p).await;
                n += 1;
            }
            for p in &requests {
                publish(con, "PUBLISH", &req, p).await;
                n += 1;
            }
            for p in &responses {
                publish(con, "PUBLISH", &resp, p).await;
                n += 1;
            }
        }
        Kind::ShardedDynamic | Kind::ShardedStatic => {
            let msg = |kind: u64, data: serde_json::Value| {
                json_bytes(&json!({"uid": "x", "nsp": "/", "type": kind, "data": data}))
            };
            let messages: Vec<Vec<u8>> = vec![
                vec![0xc1, 0xff],
                b"{not json".to_vec(),
                // Not an object.
                b"[1,2,3]".to_vec(),
                // The type as a string.
                json_bytes(&json!({"uid": "x", "nsp": "/", "type": "3", "data": {}})),
                // Missing data.
                json_bytes(&json!({"uid": "x", "nsp": "/", "type": 3})),
                // Rooms that are not a list (would reach everyone).
                msg(
                    3,
                    json!({"packet": packet(), "opts": {"rooms": "r", "except": [], "flags": {}}}),
                ),
                // A join whose rooms are not a list.
                msg(
                    4,
                    json!({"opts": {"rooms": ["r"], "except": []}, "rooms": 7}),
                ),
                // A disconnect whose options are not a map (would
                // disconnect everyone).
                msg(6, json!({"opts": 5, "close": true})),
                // A server-side emit without its packet.
                msg(9, json!({})),
                // A response without request id.
                msg(10, json!({})),
                // A huge rooms list.
                pack(&json!({"uid": "x", "nsp": "/", "type": 3,
                    "data": {"packet": packet(), "opts": huge_opts()}})),
                deep_msgpack(),
            ];
            for p in &messages {
                publish(con, "SPUBLISH", &ch, p).await;
                n += 1;
            }
        }
        Kind::Streams => {
            let pubsub: Vec<Vec<u8>> = vec![
                vec![0xc1],
                // A fetch without its data.
                pack(&json!({"uid": "x", "nsp": "/", "type": 7})),
                // A server-side emit whose packet is not a list.
                pack(&json!({"uid": "x", "nsp": "/", "type": 9,
                    "data": {"packet": "not a list"}})),
            ];
            for p in &pubsub {
                publish(con, "PUBLISH", &ch, p).await;
                n += 1;
            }
            let stream = prefix;
            let rooms_not_a_list = json_bytes(&json!({"packet": packet(),
                "opts": {"rooms": 5, "except": []}}));
            let leave_bad = json_bytes(&json!({"opts": {"rooms": ["r"], "except": []},
                "rooms": "zz"}));
            let huge = json_bytes(&json!({"packet": packet(), "opts": huge_opts()}));
            let deep = base64(&deep_msgpack());
            let entries: Vec<Vec<(&str, &[u8])>> = vec![
                // No namespace.
                vec![("uid", b"x"), ("type", b"3"), ("data", b"{}")],
                // Not base64.
                vec![
                    ("uid", b"x"),
                    ("nsp", b"/"),
                    ("type", b"3"),
                    ("data", b"!!not base64"),
                ],
                vec![
                    ("uid", b"x"),
                    ("nsp", b"/"),
                    ("type", b"3"),
                    ("data", b"{bad json"),
                ],
                // The type not a number.
                vec![
                    ("uid", b"x"),
                    ("nsp", b"/"),
                    ("type", b"abc"),
                    ("data", b"{}"),
                ],
                // Rooms that are not a list (would reach everyone).
                vec![
                    ("uid", b"x"),
                    ("nsp", b"/"),
                    ("type", b"3"),
                    ("data", &rooms_not_a_list),
                ],
                vec![
                    ("uid", b"x"),
                    ("nsp", b"/"),
                    ("type", b"5"),
                    ("data", &leave_bad),
                ],
                vec![
                    ("uid", b"x"),
                    ("nsp", b"/"),
                    ("type", b"3"),
                    ("data", &huge),
                ],
                vec![
                    ("uid", b"x"),
                    ("nsp", b"/"),
                    ("type", b"3"),
                    ("data", deep.as_bytes()),
                ],
            ];
            for e in &entries {
                xadd(con, stream, e).await;
                n += 1;
            }
        }
    }
    n
}

async fn malformed_messages_are_ignored_and_counted(kind: Kind) {
    let url = redis_url();
    let prefix = unique("malformed");
    let _keys = Keys::new(&url, &prefix);
    let mut nodes = cluster(kind, &url, &prefix, 2, |a| a).await;
    let mut ca = nodes[0].client().await;
    let sa = nodes[0].socket().await;
    let mut cb = nodes[1].client().await;
    ca.join("r").await;
    cb.join("r").await;
    let before: Vec<u64> = nodes
        .iter()
        .map(|n| n.factory.metrics().malformed)
        .collect();
    let mut con = raw(&url).await;
    let expected = publish_garbage(kind, &mut con, &prefix).await;
    for (node, before) in nodes.iter().zip(&before) {
        let f = node.factory.clone();
        wait_until(
            &format!("{} to count the malformed messages", node.name),
            || f.metrics().malformed >= before + expected,
        )
        .await;
    }
    // Nothing was delivered, joined or disconnected; both nodes work.
    nodes[1].io.to("r").emit("after", &1).await.unwrap();
    for c in [&mut ca, &mut cb] {
        assert_eq!(c.names_until("after").await, ["after"]);
    }
    nodes[0].io.to("r").emit("after2", &2).await.unwrap();
    for c in [&mut ca, &mut cb] {
        assert_eq!(c.names_until("after2").await, ["after2"]);
    }
    let mut rooms = sa.rooms();
    rooms.sort();
    let mut expected_rooms = vec![ca.sid.clone(), "r".to_owned()];
    expected_rooms.sort();
    assert_eq!(rooms, expected_rooms);
    assert_eq!(
        nodes[0].io.broadcast().fetch_sockets().await.unwrap().len(),
        2
    );
    assert_eq!(
        nodes[0]
            .io
            .server_side_emit_with_ack("ping-node", &())
            .await
            .unwrap(),
        vec![switchboard::Value::from("node1")]
    );
    for (node, before) in nodes.iter().zip(&before) {
        assert_eq!(
            node.factory.metrics().malformed,
            before + expected,
            "{}: each message counted once",
            node.name
        );
    }
    for node in &mut nodes {
        assert!(
            node.left.try_recv().is_err(),
            "no socket left {}",
            node.name
        );
    }
}

#[tokio::test]
async fn classic() {
    malformed_messages_are_ignored_and_counted(Kind::Classic).await;
}

#[tokio::test]
async fn sharded_dynamic() {
    malformed_messages_are_ignored_and_counted(Kind::ShardedDynamic).await;
}

#[tokio::test]
async fn sharded_static() {
    malformed_messages_are_ignored_and_counted(Kind::ShardedStatic).await;
}

#[tokio::test]
async fn streams() {
    malformed_messages_are_ignored_and_counted(Kind::Streams).await;
}
