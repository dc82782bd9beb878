//! Prints every publication of a channel of a `switchboard` server as one
//! JSON line `{"channel","offset","epoch","data"}` on standard output,
//! reconnecting and resuming on its own (nothing lost or repeated across a
//! server restart within the channel's history).
//!
//! ```text
//! SWITCHBOARD_TOKEN=... cargo run --release -p switchboard-client --example tail -- \
//!     --url ws://127.0.0.1:3000/ws --channel chat:lobby
//! ```
//!
//! Connection events go to standard error.

use std::io::Write;

use clap::Parser;
use switchboard_client::ws::{SubEvent, WsClient, WsEvent};

/// Tail a channel of a switchboard server over /ws.
#[derive(Parser)]
struct Args {
    /// The server's /ws endpoint, e.g. ws://127.0.0.1:3000/ws.
    #[arg(long)]
    url: String,
    /// The channel, `namespace:name`.
    #[arg(long)]
    channel: String,
    /// Resume after this offset (with --epoch).
    #[arg(long, requires = "epoch")]
    since: Option<u64>,
    /// The epoch of --since.
    #[arg(long, requires = "since")]
    epoch: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = WsClient::builder(&args.url)
        // Read at every connection: a refreshed token in the environment
        // is not picked up by a running process, but a token file could be.
        .token(|| std::env::var("SWITCHBOARD_TOKEN").ok())
        .build()?;
    client.on_event(|e| match e {
        WsEvent::Connected => eprintln!("tail: connected"),
        WsEvent::Disconnected(why) => eprintln!("tail: disconnected: {why}"),
        WsEvent::ReconnectError(why) => eprintln!("tail: reconnect failed: {why}"),
        WsEvent::AuthFailed(code) => eprintln!("tail: auth refused: {code}"),
        WsEvent::Kicked => eprintln!("tail: disconnected by the server (4001)"),
        _ => {}
    });
    let mut sub = match (args.since, args.epoch) {
        (Some(offset), Some(epoch)) => client.subscribe_from(&args.channel, offset, &epoch),
        _ => client.subscribe(&args.channel),
    };
    let stdout = std::io::stdout();
    while let Some(event) = sub.recv().await {
        match event {
            SubEvent::Publication(p) => {
                let line = serde_json::json!({
                    "channel": p.channel,
                    "offset": p.offset,
                    "epoch": p.epoch,
                    "data": p.data,
                });
                let mut out = stdout.lock();
                writeln!(out, "{line}")?;
                out.flush()?;
            }
            SubEvent::Subscribed {
                offset,
                epoch,
                recovered,
            } => {
                eprintln!("tail: subscribed at {offset} ({epoch}), recovered: {recovered}");
                if !recovered {
                    eprintln!("tail: publications were missed (history lost or too short)");
                }
            }
            SubEvent::Error(e) => anyhow::bail!("subscription refused: {e}"),
            _ => {}
        }
    }
    Ok(())
}
