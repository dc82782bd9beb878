//! Server-Sent Events over real connections, read as a browser would.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_server::app::App;
use switchboard_server::channel::ChannelName;
use switchboard_server::node::Publisher;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

async fn start() -> (SocketAddr, Arc<App>) {
    let app = App::new(common::config("sse")).unwrap();
    (common::serve(&app).await, app)
}

#[derive(Debug, Clone, PartialEq)]
struct Event {
    id: Option<String>,
    event: String,
    data: Value,
}

struct Stream {
    tcp: TcpStream,
    text: String,
    status: u16,
    head: String,
}

impl Stream {
    async fn open(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Stream {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut req =
            format!("GET /events?{query} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut s = Stream {
            tcp,
            text: String::new(),
            status: 0,
            head: String::new(),
        };
        while !s.text.contains("\r\n\r\n") {
            s.fill().await;
        }
        let end = s.text.find("\r\n\r\n").unwrap() + 4;
        s.head = s.text[..end].to_owned();
        s.text.drain(..end);
        s.status = s.head.split_whitespace().nth(1).unwrap().parse().unwrap();
        s
    }

    async fn fill(&mut self) {
        let mut buf = [0u8; 8192];
        let n = tokio::time::timeout(WAIT, self.tcp.read(&mut buf))
            .await
            .expect("timed out")
            .unwrap();
        assert!(n > 0, "stream ended");
        self.text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }

    /// The next event (comments and chunk framing skipped).
    async fn next(&mut self) -> Event {
        loop {
            if let Some(pos) = self.text.find("\ndata: ")
                && let Some(end) = self.text[pos + 1..].find('\n')
            {
                let block_start = self.text[..pos].rfind("\n\n").map_or(0, |i| i + 2);
                let block = self.text[block_start..pos + 1 + end].to_owned();
                self.text.drain(..pos + 1 + end);
                let mut ev = Event {
                    id: None,
                    event: String::new(),
                    data: Value::Null,
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        ev.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        ev.event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        ev.data = serde_json::from_str(v).unwrap();
                    }
                }
                return ev;
            }
            self.fill().await;
        }
    }
}

fn lobby() -> ChannelName {
    ChannelName::parse("chat:lobby").unwrap()
}

async fn publish(app: &App, data: Value) -> u64 {
    app.node
        .publish(&lobby(), data, Publisher::Api, None)
        .await
        .unwrap()
        .0
        .offset
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_arrive_as_events_with_resumable_ids() {
    let (addr, app) = start().await;
    let token = app.verifier.issue_dev_token("ada", None, 60).unwrap();
    let auth = format!("Bearer {token}");
    let mut s = Stream::open(addr, "channel=chat:lobby", &[("Authorization", &auth)]).await;
    assert_eq!(s.status, 200, "{}", s.head);
    let head = s.head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("x-accel-buffering: no"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    // Wait until the stream is subscribed before publishing.
    tokio::time::timeout(WAIT, async {
        while app.node.hub().subscriber_count(&lobby()) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    publish(&app, json!({"n": 1})).await;
    // Its own join (chat has join/leave events): no id, not resumable.
    let e = s.next().await;
    assert_eq!((e.event.as_str(), e.id.as_deref()), ("join", None));
    assert_eq!(
        e.data,
        json!({"channel": "chat:lobby", "user": "ada", "name": null})
    );
    let e = s.next().await;
    assert_eq!(e.event, "message");
    assert_eq!(e.data["offset"], 1);
    assert_eq!(e.data["data"], json!({"n": 1}));
    let first_id = e.id.clone().expect("an id");
    drop(s);
    // Published while the client is away.
    for n in 2..=4 {
        publish(&app, json!({ "n": n })).await;
    }
    // The browser reconnects with the last id it saw: nothing lost, no repeat.
    let mut s = Stream::open(
        addr,
        &format!("channel=chat:lobby&token={token}"),
        &[("Last-Event-ID", &first_id)],
    )
    .await;
    assert_eq!(s.status, 200);
    for n in 2..=4 {
        let e = s.next().await;
        assert_eq!(
            (e.event.as_str(), e.data["offset"].as_u64()),
            ("message", Some(n))
        );
    }
    publish(&app, json!({"n": 5})).await;
    let mut e = s.next().await;
    if e.event == "join" {
        // Ada's new stream made her join again (the old one was dropped).
        assert_eq!(e.data["user"], "ada");
        e = s.next().await;
    }
    assert_eq!(
        (e.event.as_str(), e.data["offset"].as_u64()),
        ("message", Some(5))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_json_with_stable_codes() {
    let (addr, app) = start().await;
    let s = Stream::open(addr, "channel=chat:lobby", &[]).await;
    assert_eq!(s.status, 401);
    assert!(s.head.to_ascii_lowercase().contains("application/json"));
    let s = Stream::open(addr, "x=1", &[]).await;
    assert_eq!(s.status, 400);
    let token = app.verifier.issue_dev_token("ada", None, 60).unwrap();
    let s = Stream::open(addr, &format!("channel=user:bob&token={token}"), &[]).await;
    assert_eq!(s.status, 403);
    let s = Stream::open(addr, "channel=chat:lobby&token=bad.token.here", &[]).await;
    assert_eq!(s.status, 401);
    // A cookie works too.
    let cookie = format!("theme=dark; token={token}");
    let s = Stream::open(addr, "channel=chat:lobby", &[("Cookie", &cookie)]).await;
    assert_eq!(s.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_events_keep_every_channel_position_in_their_ids() {
    let (addr, app) = start().await;
    let token = app.verifier.issue_dev_token("ada", None, 60).unwrap();
    let (a, b) = (
        ChannelName::parse("chat:ida").unwrap(),
        ChannelName::parse("chat:idb").unwrap(),
    );
    let mut last = Vec::new();
    for ch in [&a, &b] {
        let (p, epoch) = app
            .node
            .publish(ch, json!(1), Publisher::Api, None)
            .await
            .unwrap();
        last.push(format!("{ch}~{epoch}~{}", p.offset));
        for n in 2..=3 {
            app.node
                .publish(ch, json!(n), Publisher::Api, None)
                .await
                .unwrap();
        }
    }
    // Resume both channels from offset 1: the replay of chat:ida comes
    // first, and its ids must still carry chat:idb's position.
    let mut s = Stream::open(
        addr,
        &format!("channel=chat:ida&channel=chat:idb&token={token}"),
        &[("Last-Event-ID", &last.join(","))],
    )
    .await;
    assert_eq!(s.status, 200);
    let mut seen = 0;
    while seen < 4 {
        let e = s.next().await;
        if e.event != "message" {
            continue;
        }
        let id = e.id.expect("an id");
        assert!(
            id.contains("chat:ida~") && id.contains("chat:idb~"),
            "an id forgot a channel: {id}"
        );
        seen += 1;
    }
}

/// `channel~epoch~offset,...` → channel → offset.
fn id_offsets(id: &str) -> std::collections::HashMap<String, u64> {
    id.split(',')
        .filter_map(|part| {
            let mut it = part.rsplitn(3, '~');
            let offset = it.next()?.parse().ok()?;
            let _epoch = it.next()?;
            Some((it.next()?.to_owned(), offset))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_id_never_names_a_publication_written_after_it() {
    let (addr, app) = start().await;
    let token = app.verifier.issue_dev_token("ada", None, 60).unwrap();
    let (a, b) = (
        ChannelName::parse("chat:live").unwrap(),
        ChannelName::parse("chat:replayed").unwrap(),
    );
    let mut last = Vec::new();
    for ch in [&a, &b] {
        let (p, epoch) = app
            .node
            .publish(ch, json!(0), Publisher::Api, None)
            .await
            .unwrap();
        last.push(format!("{ch}~{epoch}~{}", p.offset));
    }
    // Live publications on chat:live all along, while streams resume both
    // channels (chat:replayed with a replay to build from the database).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (app, a, stop) = (Arc::clone(&app), a.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                app.node
                    .publish(&a, json!(n), Publisher::Api, None)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    for round in 0..20 {
        for n in 0..5 {
            app.node
                .publish(&b, json!({ "round": round, "n": n }), Publisher::Api, None)
                .await
                .unwrap();
        }
        let mut s = Stream::open(
            addr,
            &format!("channel=chat:live&channel=chat:replayed&token={token}"),
            &[("Last-Event-ID", &last.join(","))],
        )
        .await;
        assert_eq!(s.status, 200);
        // What has been written so far, per channel (from the resume point).
        let mut written = id_offsets(&last.join(","));
        let mut replayed = 0;
        let mut events = 0;
        while replayed < 5 * (round + 1) || events < 30 {
            let e = s.next().await;
            if e.event == "unrecovered" {
                // chat:live's resume point has left its history: it starts
                // over from its current position.
                let channel = e.data["channel"].as_str().unwrap().to_owned();
                written.insert(channel, e.data["offset"].as_u64().unwrap());
                continue;
            }
            if e.event != "message" {
                continue;
            }
            events += 1;
            let channel = e.data["channel"].as_str().unwrap().to_owned();
            let offset = e.data["offset"].as_u64().unwrap();
            if channel == b.as_str() {
                replayed += 1;
            }
            written.insert(channel.clone(), offset);
            let id = e.id.expect("an id");
            for (c, o) in id_offsets(&id) {
                assert!(
                    o <= written[&c],
                    "round {round}: event {channel}#{offset} has id {id}, naming {c}#{o} before it was written (written up to {})",
                    written[&c]
                );
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_many_long_channels_gets_compact_ids_that_resume() {
    let (addr, app) = start().await;
    let token = app.verifier.issue_dev_token("ada", None, 60).unwrap();
    let channels: Vec<ChannelName> = (0..128)
        .map(|i| ChannelName::parse(&format!("chat:{i:03}{}", "x".repeat(200))).unwrap())
        .collect();
    let query: String = channels
        .iter()
        .map(|c| format!("channel={c}&"))
        .collect::<String>()
        + &format!("token={token}");
    let mut s = Stream::open(addr, &query, &[]).await;
    assert_eq!(s.status, 200, "{}", s.head);
    // Every stream's subscription is in place before publishing.
    let target = &channels[5];
    tokio::time::timeout(WAIT, async {
        while app.node.hub().subscriber_count(&channels[127]) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stream subscribed");
    app.node
        .publish(target, json!(1), Publisher::Api, None)
        .await
        .unwrap();
    // (`chat` sends join events, without ids, before.)
    let first = loop {
        let e = s.next().await;
        if e.event == "message" {
            break e;
        }
    };
    let id = first.id.expect("an id");
    // A named id would carry 128 names of 205 bytes on every event.
    assert!(id.len() < 1024, "the id is {} bytes: {id}", id.len());
    drop(s);
    for n in 2..=4 {
        app.node
            .publish(target, json!(n), Publisher::Api, None)
            .await
            .unwrap();
    }
    // Reconnecting with the id (channels in another order) resumes exactly
    // what was missed.
    let mut reversed = channels.clone();
    reversed.reverse();
    let query: String = reversed
        .iter()
        .map(|c| format!("channel={c}&"))
        .collect::<String>()
        + &format!("token={token}");
    let mut s = Stream::open(addr, &query, &[("Last-Event-ID", &id)]).await;
    assert_eq!(s.status, 200, "{}", s.head);
    let mut by_query = Stream::open(
        addr,
        &format!("{query}&last_event_id={}", id.replace('/', "%2F")),
        &[],
    )
    .await;
    assert_eq!(by_query.status, 200, "{}", by_query.head);
    for n in 2..=4 {
        let e = loop {
            let e = by_query.next().await;
            assert_ne!(e.event, "unrecovered", "{e:?}");
            if e.event == "message" {
                break e;
            }
        };
        assert_eq!(e.data["data"], json!(n), "resumed by the query parameter");
    }
    for n in 2..=4 {
        let e = loop {
            let e = s.next().await;
            assert_ne!(e.event, "unrecovered", "{e:?}");
            if e.event == "message" {
                break e;
            }
        };
        assert_eq!(e.data["data"], json!(n));
        assert_eq!(e.data["offset"], json!(n));
    }
}
