//! The `/ws` client and the `tail` example against the `switchboard` binary
//! (build it first: `cargo build -p switchboard-server`; or point
//! `SWITCHBOARD_BIN` at one).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{DEADLINE, Server, fast_reconnection, next, target_dir, temp_dir};
use serde_json::{Value as Json, json};
use switchboard_client::ws::{Publication, SubEvent, Subscription, WsClient, WsError};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const ACK: Duration = Duration::from_secs(30);

async fn next_publication(sub: &mut Subscription) -> Publication {
    loop {
        match tokio::time::timeout(DEADLINE, sub.recv())
            .await
            .expect("a publication before the deadline")
            .expect("subscription open")
        {
            SubEvent::Publication(p) => return p,
            SubEvent::Error(e) => panic!("subscription refused: {e}"),
            _ => {}
        }
    }
}

async fn wait_subscribed(sub: &mut Subscription) {
    loop {
        match next_sub_event(sub).await {
            SubEvent::Subscribed { .. } => return,
            SubEvent::Error(e) => panic!("subscription refused: {e}"),
            _ => {}
        }
    }
}

async fn next_sub_event(sub: &mut Subscription) -> SubEvent {
    tokio::time::timeout(DEADLINE, sub.recv())
        .await
        .expect("an event before the deadline")
        .expect("subscription open")
}

/// The tail example as a child process: its stdout lines and stderr lines.
fn spawn_tail(
    url: &str,
    channel: &str,
    token: &str,
) -> (
    Child,
    mpsc::UnboundedReceiver<String>,
    mpsc::UnboundedReceiver<String>,
) {
    let bin = target_dir().join("examples").join("tail");
    assert!(
        bin.exists(),
        "{} missing (cargo test builds examples)",
        bin.display()
    );
    let mut child = Command::new(bin)
        .args(["--url", url, "--channel", channel])
        .env("SWITCHBOARD_TOKEN", token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tail");
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (err_tx, err_rx) = mpsc::unbounded_channel();
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
    tokio::spawn(async move {
        while let Ok(Some(l)) = out.next_line().await {
            let _ = out_tx.send(l);
        }
    });
    tokio::spawn(async move {
        while let Ok(Some(l)) = err.next_line().await {
            let _ = err_tx.send(l);
        }
    });
    (child, out_rx, err_rx)
}

async fn wait_line(rx: &mut mpsc::UnboundedReceiver<String>, prefix: &str) {
    loop {
        if next(rx).await.starts_with(prefix) {
            return;
        }
    }
}

#[tokio::test]
async fn ws_client_and_tail_resume_across_a_server_restart() {
    let data = temp_dir("restart");
    let server = Server::start(0, &data, &[]).await;
    let port = server.port;
    let token = server.dev_token("ada").await;
    let channel = "chat:restart";

    let (_tail, mut tail_out, mut tail_err) = spawn_tail(&server.ws_url(), channel, &token);
    wait_line(&mut tail_err, "tail: subscribed").await;

    let t = token.clone();
    let client = WsClient::builder(&server.ws_url())
        .token(move || Some(t.clone()))
        .reconnection(fast_reconnection())
        .build()
        .unwrap();
    let mut sub = client.subscribe(channel);
    wait_subscribed(&mut sub).await;
    // A subscriber that comes back late, after the publications it missed.
    let t = token.clone();
    let slow = WsClient::builder(&server.ws_url())
        .token(move || Some(t.clone()))
        .reconnection(switchboard_client::Reconnection {
            delay: Duration::from_secs(2),
            delay_max: Duration::from_secs(2),
            randomization: 0.0,
            ..Default::default()
        })
        .build()
        .unwrap();
    let mut slow_sub = slow.subscribe(channel);
    wait_subscribed(&mut slow_sub).await;

    for i in 0..30 {
        let ack = client
            .publish(channel, &json!({"i": i}), ACK)
            .await
            .unwrap();
        assert_eq!(ack.offset, i + 1);
    }
    let mut got: Vec<Publication> = Vec::new();
    while got.len() < 30 {
        got.push(next_publication(&mut sub).await);
    }

    server.kill().await;
    wait_line(&mut tail_err, "tail: disconnected").await;
    // Publications made while the server is down wait in the offline
    // buffer and go out, in order, once the client is back.
    let c2 = client.clone();
    let publisher = tokio::spawn(async move {
        let mut acks = Vec::new();
        for i in 30..60 {
            acks.push(c2.publish(channel, &json!({"i": i}), ACK).await);
        }
        acks
    });
    let server = Server::start(port, &data, &[]).await;
    let acks = publisher.await.unwrap();
    for (k, a) in acks.iter().enumerate() {
        assert_eq!(a.as_ref().map(|a| a.offset), Ok(31 + k as u64), "{a:?}");
    }
    while got.len() < 60 {
        got.push(next_publication(&mut sub).await);
    }
    // A marker published by another connection: the next thing delivered.
    let other = WsClient::builder(&server.ws_url())
        .token(move || Some(token.clone()))
        .build()
        .unwrap();
    let mut other_sub = other.subscribe(channel);
    wait_subscribed(&mut other_sub).await;
    other
        .publish(channel, &json!({"i": "end"}), ACK)
        .await
        .unwrap();
    got.push(next_publication(&mut sub).await);

    let epoch = got[0].epoch.clone();
    for (k, p) in got.iter().enumerate() {
        assert_eq!(p.offset, k as u64 + 1, "no gap, no duplicate");
        assert_eq!(p.epoch, epoch, "persisted history keeps its epoch");
        if k < 60 {
            assert_eq!(p.data, json!({"i": k}));
        }
    }
    assert_eq!(got[60].data, json!({"i": "end"}));

    // The late subscriber resumed (recovered) and got the same 61.
    let mut slow_got = Vec::new();
    let mut resumed = Vec::new();
    while slow_got.len() < 61 {
        match next_sub_event(&mut slow_sub).await {
            SubEvent::Publication(p) => slow_got.push(p),
            SubEvent::Subscribed { recovered, .. } => resumed.push(recovered),
            _ => {}
        }
    }
    assert_eq!(slow_got, got);
    assert_eq!(resumed, vec![true], "one resume, complete");
    slow.close();

    // The tail example printed the same 61 lines.
    let mut lines = Vec::new();
    while lines.len() < 61 {
        lines.push(next(&mut tail_out).await);
    }
    for (k, l) in lines.iter().enumerate() {
        let v: Json = serde_json::from_str(l).expect("one JSON object per line");
        assert_eq!(v["channel"], channel);
        assert_eq!(v["offset"], k as u64 + 1, "tail: no gap, no duplicate: {l}");
        assert_eq!(v["epoch"], epoch);
        assert_eq!(v["data"], got[k].data);
    }
    wait_line(&mut tail_err, "tail: subscribed").await;
    client.close();
    other.close();
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test]
async fn ws_presence_history_and_errors() {
    let data = temp_dir("misc");
    let server = Server::start(0, &data, &[]).await;
    let token = server.dev_token("bob").await;
    let client = WsClient::builder(&server.ws_url())
        .token(move || Some(token.clone()))
        .build()
        .unwrap();
    let mut sub = client.subscribe("chat:misc");
    wait_subscribed(&mut sub).await;
    // chat has join/leave: our own join arrives.
    loop {
        if let SubEvent::Join(j) = next_sub_event(&mut sub).await {
            assert_eq!(j["user"], "bob");
            break;
        }
    }
    client
        .publish("chat:misc", &json!("one"), ACK)
        .await
        .unwrap();
    client
        .publish("chat:misc", &json!("two"), ACK)
        .await
        .unwrap();
    let h = client.history("chat:misc", Some(10), ACK).await.unwrap();
    let datas: Vec<Json> = h["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"].clone())
        .collect();
    assert_eq!(datas, vec![json!("one"), json!("two")]);
    let p = client.presence("chat:misc", ACK).await.unwrap();
    assert_eq!(p["presence"][0]["user"], "bob");
    // A channel of an unknown namespace is refused with its code.
    let e = client.publish("nope:x", &json!(1), ACK).await.unwrap_err();
    assert!(
        matches!(&e, WsError::Server { code, .. } if code == "unknown_namespace"),
        "{e:?}"
    );
    let mut bad = client.subscribe("nope:x");
    match next_sub_event(&mut bad).await {
        SubEvent::Error(WsError::Server { code, .. }) => assert_eq!(code, "unknown_namespace"),
        other => panic!("{other:?}"),
    }
    client.close();
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}
