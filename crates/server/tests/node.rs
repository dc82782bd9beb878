//! The operations every gateway shares: publish, subscribe with resume,
//! presence, policies; with subscribers that record what they receive.

mod common;

use std::sync::{Arc, Mutex};

use serde_json::json;
use switchboard_server::auth::Identity;
use switchboard_server::channel::ChannelName;
use switchboard_server::history::StreamPosition;
use switchboard_server::hub::{CloseReason, Delivery, Signal, Subscriber};
use switchboard_server::node::{Node, NodeError, Publisher, Reader};

struct Recorder {
    id: String,
    got: Mutex<Vec<(String, u64, serde_json::Value)>>,
    signals: Mutex<Vec<String>>,
}

impl Subscriber for Recorder {
    fn id(&self) -> &str {
        &self.id
    }
    fn deliver(&self, d: &Arc<Delivery>) -> bool {
        self.got.lock().unwrap().push((
            d.channel.to_string(),
            d.publication.offset,
            d.publication.data.to_value(),
        ));
        true
    }
    fn signal(&self, s: &Arc<Signal>) -> bool {
        self.signals
            .lock()
            .unwrap()
            .push(format!("{} {} {}", s.kind.as_str(), s.channel, s.user));
        true
    }
    fn close(&self, _: CloseReason) {}
    fn transport(&self) -> &'static str {
        "test"
    }
}

fn recorder(id: &str) -> Arc<Recorder> {
    Arc::new(Recorder {
        id: id.into(),
        got: Mutex::new(Vec::new()),
        signals: Mutex::new(Vec::new()),
    })
}

fn user(id: &str) -> Identity {
    Identity {
        user: id.into(),
        name: Some(format!("User {id}")),
        channels: None,
        expires_at: None,
    }
}

fn node() -> Node {
    Node::new(Arc::new(common::config("node"))).unwrap()
}

fn ch(name: &str) -> ChannelName {
    ChannelName::parse(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_publishes_and_every_subscriber_receives_in_order() {
    let node = node();
    let (ada, bob) = (user("ada"), user("bob"));
    let (a, b) = (recorder("c-a"), recorder("c-b"));
    let lobby = ch("chat:lobby");
    node.subscribe(&lobby, Some(&ada), a.clone(), None)
        .await
        .unwrap();
    node.subscribe(&lobby, Some(&bob), b.clone(), None)
        .await
        .unwrap();
    for i in 1..=3 {
        let (p, _) = node
            .publish(
                &lobby,
                json!({ "n": i }),
                Publisher::Client {
                    identity: Some(&ada),
                    conn: "c-a",
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(p.offset, i);
        assert_eq!(p.from.as_deref(), Some("ada"));
    }
    let got: Vec<u64> = b.got.lock().unwrap().iter().map(|g| g.1).collect();
    assert_eq!(got, vec![1, 2, 3]);
    assert_eq!(
        a.got.lock().unwrap().len(),
        3,
        "the publisher gets its own too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_refuse_with_stable_codes() {
    let node = node();
    let ada = user("ada");
    // Not subscribed: chat publishes are for subscribers.
    let e = node
        .publish(
            &ch("chat:lobby"),
            json!(1),
            Publisher::Client {
                identity: Some(&ada),
                conn: "x",
            },
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), "forbidden");
    // Notifications: only the HTTP API publishes.
    let e = node
        .publish(
            &ch("notifications:all"),
            json!(1),
            Publisher::Client {
                identity: Some(&ada),
                conn: "x",
            },
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, NodeError::Forbidden));
    node.publish(&ch("notifications:all"), json!(1), Publisher::Api, None)
        .await
        .unwrap();
    // Private channels: only the owner subscribes.
    let e = node
        .subscribe(&ch("user:bob"), Some(&ada), recorder("x"), None)
        .await
        .unwrap_err();
    assert!(matches!(e, NodeError::Forbidden));
    node.subscribe(&ch("user:ada"), Some(&ada), recorder("y"), None)
        .await
        .unwrap();
    // Anonymous clients cannot subscribe to authenticated channels.
    assert!(
        node.subscribe(&ch("chat:lobby"), None, recorder("z"), None)
            .await
            .is_err()
    );
    // Unknown namespaces and oversized messages.
    let e = node
        .publish(&ch("nope:x"), json!(1), Publisher::Api, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "unknown_namespace");
    let big = json!("x".repeat(20_000));
    let e = node
        .publish(&ch("chat:lobby"), big, Publisher::Api, None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "message_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_limited_to_some_channels_gets_only_those() {
    let node = node();
    let limited = Identity {
        channels: Some(vec!["chat:lobby".into(), "notifications:*".into()]),
        ..user("ada")
    };
    assert!(
        node.subscribe(&ch("chat:lobby"), Some(&limited), recorder("a"), None)
            .await
            .is_ok()
    );
    assert!(
        node.subscribe(&ch("notifications:x"), Some(&limited), recorder("b"), None)
            .await
            .is_ok()
    );
    assert!(matches!(
        node.subscribe(&ch("chat:other"), Some(&limited), recorder("c"), None)
            .await,
        Err(NodeError::Forbidden)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_returns_exactly_what_was_missed() {
    let node = node();
    let ada = user("ada");
    let lobby = ch("chat:lobby");
    let first = node
        .subscribe(&lobby, Some(&ada), recorder("c1"), None)
        .await
        .unwrap();
    assert_eq!(first.position.offset, 0);
    for i in 1..=5 {
        node.publish(&lobby, json!(i), Publisher::Api, None)
            .await
            .unwrap();
    }
    let seen = StreamPosition {
        offset: 2,
        epoch: first.position.epoch.clone(),
    };
    let again = node
        .subscribe(&lobby, Some(&ada), recorder("c2"), Some(&seen))
        .await
        .unwrap();
    assert!(again.recovered);
    assert_eq!(
        again.missed.iter().map(|p| p.offset).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert_eq!(again.position.offset, 5);
    let foreign = StreamPosition {
        offset: 2,
        epoch: "gone".into(),
    };
    let lost = node
        .subscribe(&lobby, Some(&ada), recorder("c3"), Some(&foreign))
        .await
        .unwrap();
    assert!(!lost.recovered);
    assert!(lost.missed.is_empty());
    assert_eq!(lost.position.offset, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_users_and_an_idempotent_publish_lands_once() {
    let node = node();
    let ada = user("ada");
    let lobby = ch("chat:lobby");
    let observer = recorder("obs");
    node.subscribe(&lobby, Some(&user("eve")), observer.clone(), None)
        .await
        .unwrap();
    let mut joins = 0;
    for conn in ["t1", "t2", "t3"] {
        if node
            .subscribe(&lobby, Some(&ada), recorder(conn), None)
            .await
            .unwrap()
            .joined
        {
            joins += 1;
        }
    }
    assert_eq!(joins, 1);
    let present = node.presence(&lobby, Reader::Api).unwrap();
    assert_eq!(present.len(), 2);
    assert_eq!(
        (present[0].user.as_str(), present[0].connections),
        ("ada", 3)
    );
    assert!(!node.unsubscribe(&lobby, Some(&ada), "t1"));
    assert!(!node.unsubscribe(&lobby, Some(&ada), "t2"));
    assert!(
        node.unsubscribe(&lobby, Some(&ada), "t3"),
        "the last tab leaves"
    );
    assert_eq!(
        *observer.signals.lock().unwrap(),
        [
            "join chat:lobby eve",
            "join chat:lobby ada",
            "leave chat:lobby ada"
        ],
        "its own join, then one join for ada's first tab, one leave for her last"
    );
    node.unsubscribe(&lobby, Some(&user("eve")), "obs");

    let watcher = recorder("w");
    node.subscribe(&lobby, Some(&user("bob")), watcher.clone(), None)
        .await
        .unwrap();
    let (p1, _) = node
        .publish(&lobby, json!("once"), Publisher::Api, Some("key-1".into()))
        .await
        .unwrap();
    let (p2, _) = node
        .publish(&lobby, json!("once"), Publisher::Api, Some("key-1".into()))
        .await
        .unwrap();
    assert_eq!(p1.offset, p2.offset);
    assert_eq!(watcher.got.lock().unwrap().len(), 1, "delivered once");
    let (history, _) = node.history_of(&lobby, 10, Reader::Api).await.unwrap();
    assert_eq!(history.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_presence_are_read_under_the_subscribe_policy() {
    let node = node();
    let (ada, bob) = (user("ada"), user("bob"));
    let private = ch("user:ada");
    node.publish(&private, json!("secret"), Publisher::Api, None)
        .await
        .unwrap();
    let lobby = ch("chat:lobby");
    for (channel, reader, allowed) in [
        (&private, Reader::Client(Some(&ada)), true),
        (&private, Reader::Client(Some(&bob)), false),
        (&private, Reader::Client(None), false),
        (&private, Reader::Api, true),
        (&lobby, Reader::Client(None), false),
        (&lobby, Reader::Client(Some(&bob)), true),
    ] {
        let got = node.history_of(channel, 10, reader).await;
        assert_eq!(got.is_ok(), allowed, "history of {channel} by {reader:?}");
        if !allowed {
            assert_eq!(got.unwrap_err().code(), "forbidden");
        }
    }
    assert!(node.presence(&lobby, Reader::Client(Some(&bob))).is_ok());
    assert_eq!(
        node.presence(&lobby, Reader::Client(None))
            .unwrap_err()
            .code(),
        "forbidden"
    );
    let limited = Identity {
        channels: Some(vec!["chat:other".into()]),
        ..user("carol")
    };
    assert!(
        node.history_of(&lobby, 10, Reader::Client(Some(&limited)))
            .await
            .is_err(),
        "the token's allowed channels apply too"
    );
}

/// Polls a future once and drops it: a client that went away mid-request.
async fn poll_once_and_drop<F: std::future::Future>(f: F) {
    let mut f = std::pin::pin!(f);
    std::future::poll_fn(|cx| {
        let _ = f.as_mut().poll(cx);
        std::task::Poll::Ready(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_dropped_mid_way_is_stored_and_delivered_or_neither() {
    let node = node();
    let ada = user("ada");
    // `chat` keeps its history in the embedded database, `notifications`
    // in memory: both must deliver what they stored.
    for (name, publisher) in [
        ("chat:cancel", Publisher::Api),
        ("notifications:cancel", Publisher::Api),
    ] {
        let channel = ch(name);
        let r = recorder(&format!("c-{name}"));
        node.subscribe(&channel, Some(&ada), r.clone(), None)
            .await
            .unwrap();
        for i in 0..20 {
            poll_once_and_drop(node.publish(&channel, json!(i), publisher, None)).await;
        }
        // One more, awaited: everything before it is stored by then.
        let (last, _) = node
            .publish(&channel, json!("last"), publisher, None)
            .await
            .unwrap();
        let (stored, _) = node.history_of(&channel, 100, Reader::Api).await.unwrap();
        assert_eq!(stored.last().map(|p| p.offset), Some(last.offset));
        let got: Vec<u64> = r.got.lock().unwrap().iter().map(|g| g.1).collect();
        let kept: Vec<u64> = stored.iter().map(|p| p.offset).collect();
        assert_eq!(
            got, kept,
            "{name}: every stored publication reached the subscriber, in order"
        );
        assert!(
            got.len() > 1,
            "{name}: some dropped publishes were stored ({got:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_keep_each_channels_order_and_offsets() {
    let node = Arc::new(node());
    let ada = user("ada");
    let channels = ["chat:a", "chat:b", "notifications:a"];
    let mut recorders = Vec::new();
    for name in channels {
        let r = recorder(&format!("c-{name}"));
        node.subscribe(&ch(name), Some(&ada), r.clone(), None)
            .await
            .unwrap();
        recorders.push(r);
    }
    // 8 publishers per channel at once: the persisted ones commit in groups.
    let mut tasks = Vec::new();
    for name in channels {
        for p in 0..8 {
            let node = Arc::clone(&node);
            tasks.push(tokio::spawn(async move {
                let mut offsets = Vec::new();
                for i in 0..25 {
                    let (publication, _) = node
                        .publish(&ch(name), json!({ "p": p, "i": i }), Publisher::Api, None)
                        .await
                        .unwrap();
                    offsets.push(publication.offset);
                }
                offsets
            }));
        }
    }
    for t in tasks {
        let offsets = t.await.unwrap();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "one publisher's offsets grow: {offsets:?}"
        );
    }
    for (name, r) in channels.iter().zip(&recorders) {
        let got: Vec<u64> = r.got.lock().unwrap().iter().map(|g| g.1).collect();
        assert_eq!(
            got,
            (1..=200).collect::<Vec<u64>>(),
            "{name}: every offset once, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_on_every_command() {
    let node = node();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lobby = ch("chat:lobby");
    let live = Identity {
        expires_at: Some(now + 3600),
        ..user("ada")
    };
    let r = recorder("c-ada");
    node.subscribe(&lobby, Some(&live), r.clone(), None)
        .await
        .unwrap();
    let conn = Publisher::Client {
        identity: Some(&live),
        conn: "c-ada",
    };
    node.publish(&lobby, json!("while valid"), conn, None)
        .await
        .unwrap();
    // The same connection, once its token has expired (what a refresh
    // would replace): every command is refused with one code.
    let expired = Identity {
        expires_at: Some(now - 1),
        ..live.clone()
    };
    let conn = Publisher::Client {
        identity: Some(&expired),
        conn: "c-ada",
    };
    let code = |e: NodeError| e.code();
    assert_eq!(
        code(
            node.publish(&lobby, json!("late"), conn, None)
                .await
                .unwrap_err()
        ),
        "token_expired"
    );
    assert_eq!(
        code(
            node.subscribe(&ch("chat:other"), Some(&expired), recorder("c-x"), None)
                .await
                .unwrap_err()
        ),
        "token_expired"
    );
    assert_eq!(
        code(
            node.history_of(&lobby, 10, Reader::Client(Some(&expired)))
                .await
                .unwrap_err()
        ),
        "token_expired"
    );
    assert_eq!(
        code(
            node.presence(&lobby, Reader::Client(Some(&expired)))
                .unwrap_err()
        ),
        "token_expired"
    );
    // Nothing of the refused publish reached anyone.
    let got: Vec<serde_json::Value> = r.got.lock().unwrap().iter().map(|g| g.2.clone()).collect();
    assert_eq!(got, vec![json!("while valid")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_used_once_do_not_stay_in_memory() {
    // `typing` keeps no history: a channel that nobody is subscribed to any
    // more keeps nothing, and is forgotten.
    let node = node();
    let ada = user("ada");
    for i in 0..2000 {
        let c = ch(&format!("typing:t{i}"));
        let r = recorder(&format!("c{i}"));
        node.subscribe(&c, Some(&ada), r.clone(), None)
            .await
            .unwrap();
        node.publish(
            &c,
            json!("typing"),
            Publisher::Client {
                identity: Some(&ada),
                conn: &format!("c{i}"),
            },
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.got.lock().unwrap().len(), 1);
        node.unsubscribe(&c, Some(&ada), &format!("c{i}"));
    }
    assert_eq!(node.memory_streams(), 0, "every idle stream was forgotten");
    // The API publishing to channels nobody listens to keeps nothing either.
    for i in 0..500 {
        node.publish(
            &ch(&format!("typing:api{i}")),
            json!(1),
            Publisher::Api,
            None,
        )
        .await
        .unwrap();
    }
    assert_eq!(node.memory_streams(), 0);

    // A channel with a subscriber stays, offsets continue.
    let live = ch("typing:live");
    let r = recorder("live");
    node.subscribe(&live, Some(&ada), r.clone(), None)
        .await
        .unwrap();
    let publish = |n: i64| {
        node.publish(
            &live,
            json!(n),
            Publisher::Client {
                identity: Some(&ada),
                conn: "live",
            },
            None,
        )
    };
    let (p1, e1) = publish(1).await.unwrap();
    let (p2, e2) = publish(2).await.unwrap();
    assert_eq!((p1.offset, p2.offset), (1, 2));
    assert_eq!(e1, e2);
    assert_eq!(node.memory_streams(), 1);
    // Once forgotten, the channel starts again under a new epoch: a
    // position from before is not taken for one in the new stream.
    node.unsubscribe(&live, Some(&ada), "live");
    assert_eq!(node.memory_streams(), 0);
    let r = recorder("again");
    let s = node
        .subscribe(
            &live,
            Some(&ada),
            r.clone(),
            Some(&StreamPosition {
                offset: 2,
                epoch: e2.clone(),
            }),
        )
        .await
        .unwrap();
    assert!(!s.recovered, "a forgotten stream's position resumed");
    let (p, e) = node
        .publish(
            &live,
            json!(3),
            Publisher::Client {
                identity: Some(&ada),
                conn: "again",
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(p.offset, 1);
    assert_ne!(e, e2, "the new stream has an epoch of its own");
    assert_eq!(
        r.got.lock().unwrap().len(),
        1,
        "the live publication arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_history_or_a_remembered_key_is_kept() {
    let node = node();
    // `notifications` keeps 50 publications in memory: not forgotten.
    node.publish(&ch("notifications:n1"), json!(1), Publisher::Api, None)
        .await
        .unwrap();
    // An idempotency key is remembered even where nothing is kept.
    node.publish(
        &ch("typing:k1"),
        json!(1),
        Publisher::Api,
        Some("key-1".into()),
    )
    .await
    .unwrap();
    assert_eq!(node.memory_streams(), 2);
    let (again, _) = node
        .publish(
            &ch("typing:k1"),
            json!(1),
            Publisher::Api,
            Some("key-1".into()),
        )
        .await
        .unwrap();
    assert_eq!(again.offset, 1, "the retried key landed once");
}
