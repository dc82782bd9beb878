//! Micro-benchmarks of the pure codecs: Engine.IO packets and polling
//! payloads, Socket.IO packets, and the encoding of one broadcast for many
//! recipients. `cargo bench -p bench-codecs`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde::Serialize;
use switchboard::protocol::engine::{Frame, Packet, decode_payload, encode_payload};
use switchboard::protocol::socketio::{self, Args};

#[derive(Serialize)]
struct Message<'a> {
    id: u64,
    room: &'a str,
    from: &'a str,
    text: &'a str,
    ts: u64,
}

const MESSAGE: Message<'static> = Message {
    id: 42,
    room: "lobby",
    from: "user-17",
    text: "hello everyone, this is a chat message of ordinary length",
    ts: 1_763_776_000_000,
};

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine.io");
    let text = Bytes::from_static(br#"42["message",{"text":"hello","n":1}]"#);
    g.bench_function("decode_text", |b| {
        b.iter(|| Packet::decode_text(black_box(text.clone())))
    });
    let mut body = Vec::new();
    for i in 0..10 {
        if i > 0 {
            body.push(0x1e);
        }
        body.extend_from_slice(br#"42["message",{"text":"hello","n":1}]"#);
    }
    body.extend_from_slice(b"\x1ebAQIDBAUGBwgJCgsMDQ4PEA==");
    let body = Bytes::from(body);
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode_payload_11_packets", |b| {
        b.iter(|| decode_payload(black_box(&body)))
    });
    let frames: Vec<Frame> = (0..10)
        .map(|_| Frame::Text(text.clone()))
        .chain([Frame::Binary(Bytes::from_static(&[1; 16]))])
        .collect();
    g.bench_function("encode_payload_11_frames", |b| {
        b.iter(|| encode_payload(black_box(&frames)))
    });
    g.finish();
}

fn socketio(c: &mut Criterion) {
    let mut g = c.benchmark_group("socket.io");
    let event = br#"2["message",{"id":42,"room":"lobby","from":"user-17","text":"hello everyone, this is a chat message of ordinary length","ts":1763776000000}]"#;
    g.bench_function("decode_event", |b| {
        b.iter(|| socketio::decode(black_box(event), 10))
    });
    let binary =
        br#"52-/chat,7["upload",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
    g.bench_function("decode_binary_event_header", |b| {
        b.iter(|| socketio::decode(black_box(binary), 10))
    });
    g.bench_function("encode_event_struct", |b| {
        b.iter(|| socketio::encode_event("/", "message:new", black_box(&MESSAGE), Args::One, None))
    });
    g.bench_function("encode_ack", |b| {
        b.iter(|| socketio::encode_ack("/chat", 12, black_box(&("ok", 1)), Args::Spread))
    });
    let blob = Bytes::from(vec![7u8; 4096]);
    g.bench_function("encode_binary_event", |b| {
        b.iter(|| {
            socketio::encode_event(
                "/",
                "file",
                black_box(&("a.png", blob.clone())),
                Args::Spread,
                None,
            )
        })
    });
    g.finish();
}

/// What one broadcast costs per recipient: encoding once and sharing the
/// bytes, against encoding again for each recipient.
fn broadcast(c: &mut Criterion) {
    let mut g = c.benchmark_group("broadcast");
    for recipients in [100usize, 1000] {
        g.throughput(Throughput::Elements(recipients as u64));
        g.bench_with_input(
            BenchmarkId::new("encode_once_share", recipients),
            &recipients,
            |b, &n| {
                b.iter(|| {
                    let packet =
                        socketio::encode_event("/", "message:new", &MESSAGE, Args::One, None)
                            .expect("encodes");
                    let frames = packet.frames();
                    let mut queued = Vec::with_capacity(n);
                    for _ in 0..n {
                        queued.push(frames.clone());
                    }
                    black_box(queued)
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("encode_per_recipient", recipients),
            &recipients,
            |b, &n| {
                b.iter(|| {
                    let mut queued = Vec::with_capacity(n);
                    for _ in 0..n {
                        let packet =
                            socketio::encode_event("/", "message:new", &MESSAGE, Args::One, None)
                                .expect("encodes");
                        queued.push(packet.frames());
                    }
                    black_box(queued)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, engine, socketio, broadcast);
criterion_main!(benches);
