//! The `/ws` client through a TCP relay that stalls, corrupts (drops bytes)
//! and cuts connections, against the `switchboard` binary (build it first:
//! `cargo build -p switchboard-server`).
//!
//! 1,000 publishes with acks: each ends exactly once, as an ack or as a
//! timeout error; every acked publication is in the channel at its offset;
//! the publisher's own subscription sees every offset once, in order.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use common::{DEADLINE, Server, fast_reconnection, temp_dir};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::json;
use switchboard_client::ws::{SubEvent, WsClient, WsError, WsEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the relay did, for the test to check that chaos happened.
#[derive(Default)]
struct Chaos {
    connections: AtomicUsize,
    cuts: AtomicUsize,
    drops: AtomicUsize,
    stalls: AtomicUsize,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Relays `127.0.0.1:<returned port>` to `upstream`. The first
/// `chaotic` connections misbehave at random; later ones are clean, so the
/// run always ends.
async fn chaos_proxy(upstream: u16, chaotic: usize, chaos: Arc<Chaos>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let n = chaos.connections.fetch_add(1, Ordering::SeqCst);
            let chaos = chaos.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                relay(
                    client,
                    server,
                    n < chaotic,
                    Rng(0x9e37_79b9 + n as u64 * 7919),
                    chaos,
                )
                .await;
            });
        }
    });
    port
}

async fn relay(
    mut client: TcpStream,
    mut server: TcpStream,
    chaotic: bool,
    mut rng: Rng,
    chaos: Arc<Chaos>,
) {
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    let mut stalled = false;
    // Leave the handshake and auth alone most of the time: chaos starts
    // after a few chunks.
    let mut chunks = 0u32;
    loop {
        let (n, to_server) = tokio::select! {
            r = client.read(&mut up) => (r.unwrap_or(0), true),
            r = server.read(&mut down) => (r.unwrap_or(0), false),
        };
        if n == 0 {
            return;
        }
        chunks += 1;
        if stalled {
            // Swallow everything until one side gives up.
            continue;
        }
        if chaotic && chunks > 4 {
            match rng.below(100) {
                0..=1 => {
                    chaos.cuts.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                2..=3 => {
                    chaos.drops.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                4..=5 => {
                    chaos.stalls.fetch_add(1, Ordering::SeqCst);
                    stalled = true;
                    continue;
                }
                _ => {}
            }
        }
        let ok = if to_server {
            server.write_all(&up[..n]).await
        } else {
            client.write_all(&down[..n]).await
        };
        if ok.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn acks_through_a_bad_network_arrive_once_or_time_out() {
    let data = temp_dir("chaos");
    let server = Server::start(
        0,
        &data,
        &[
            "limits.messages_per_second=100000",
            "limits.messages_burst=100000",
            "limits.handshakes_per_second_per_ip=10000",
            "limits.handshake_burst=10000",
        ],
    )
    .await;
    let token = server.dev_token("ada").await;
    let chaos = Arc::new(Chaos::default());
    let proxy = chaos_proxy(server.port, 12, chaos.clone()).await;

    let t = token.clone();
    let client = WsClient::builder(&format!("ws://127.0.0.1:{proxy}/ws"))
        .token(move || Some(t.clone()))
        .reconnection(fast_reconnection())
        .heartbeat(Duration::from_millis(300), Duration::from_millis(300))
        .connect_timeout(Duration::from_secs(2))
        .offline_buffer(2000)
        .build()
        .unwrap();
    let reconnects = Arc::new(AtomicU32::new(0));
    let r = reconnects.clone();
    client.on_event(move |e| {
        if matches!(e, WsEvent::ReconnectAttempt(_)) {
            r.fetch_add(1, Ordering::SeqCst);
        }
    });
    let channel = "chat:chaos";
    let mut sub = client.subscribe(channel);

    // 1,000 publishes, 50 in flight at a time.
    const TOTAL: u64 = 1000;
    let mut results: HashMap<u64, Result<u64, WsError>> = HashMap::new();
    let mut in_flight = FuturesUnordered::new();
    let mut next_i = 0u64;
    while results.len() < TOTAL as usize {
        while next_i < TOTAL && in_flight.len() < 50 {
            let c = client.clone();
            let i = next_i;
            in_flight.push(async move {
                let r = c
                    .publish(channel, &json!({ "i": i }), Duration::from_secs(3))
                    .await;
                (i, r.map(|a| a.offset))
            });
            next_i += 1;
        }
        let (i, r) = tokio::time::timeout(DEADLINE, in_flight.next())
            .await
            .expect("every publish ends")
            .expect("in flight");
        assert!(results.insert(i, r).is_none(), "publish {i} ended twice");
    }
    assert_eq!(results.len(), TOTAL as usize);

    let mut acked: HashMap<u64, u64> = HashMap::new(); // offset -> i
    let mut timeouts = 0;
    for (i, r) in &results {
        match r {
            Ok(offset) => {
                assert!(
                    acked.insert(*offset, *i).is_none(),
                    "offset {offset} acked twice"
                );
            }
            Err(WsError::Timeout) => timeouts += 1,
            Err(e) => panic!("publish {i}: unexpected error {e:?}"),
        }
    }
    assert!(
        chaos.cuts.load(Ordering::SeqCst)
            + chaos.drops.load(Ordering::SeqCst)
            + chaos.stalls.load(Ordering::SeqCst)
            > 0,
        "the relay misbehaved"
    );
    assert!(
        reconnects.load(Ordering::SeqCst) > 0,
        "the client reconnected"
    );

    // The channel holds each acked publication at its offset (read directly,
    // not through the relay).
    let t = token.clone();
    let reader = WsClient::builder(&server.ws_url())
        .token(move || Some(t.clone()))
        .build()
        .unwrap();
    let h = reader
        .history(channel, Some(5000), Duration::from_secs(10))
        .await
        .unwrap();
    let stored: Vec<(u64, u64)> = h["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["offset"].as_u64().unwrap(),
                p["data"]["i"].as_u64().unwrap(),
            )
        })
        .collect();
    let stored_map: HashMap<u64, u64> = stored.iter().copied().collect();
    for (offset, i) in &acked {
        assert_eq!(
            stored_map.get(offset),
            Some(i),
            "acked publication {i} stored at {offset}"
        );
    }
    let distinct: HashSet<u64> = stored.iter().map(|(_, i)| *i).collect();
    assert_eq!(distinct.len(), stored.len(), "nothing was published twice");
    let max = stored.iter().map(|(o, _)| *o).max().unwrap_or(0);

    // The publisher's subscription, resumed across every cut, saw every
    // offset once and in order.
    let mut seen = Vec::new();
    while seen.len() < max as usize {
        let event = tokio::time::timeout(DEADLINE, sub.recv()).await;
        let Ok(Some(event)) = event else {
            panic!("publications stopped: {} of {max} seen", seen.len());
        };
        match event {
            SubEvent::Publication(p) => seen.push(p.offset),
            SubEvent::Error(e) => panic!("subscription refused: {e}"),
            _ => {}
        }
    }
    assert_eq!(seen, (1..=max).collect::<Vec<u64>>());
    eprintln!(
        "chaos: {} connections, {} cuts, {} drops, {} stalls; {} acked, {timeouts} timed out, {} reconnect attempts",
        chaos.connections.load(Ordering::SeqCst),
        chaos.cuts.load(Ordering::SeqCst),
        chaos.drops.load(Ordering::SeqCst),
        chaos.stalls.load(Ordering::SeqCst),
        acked.len(),
        reconnects.load(Ordering::SeqCst),
    );
    client.close();
    reader.close();
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}
