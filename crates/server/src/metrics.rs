//! Prometheus metrics, rendered at `/metrics` in the text exposition
//! format. A fixed set of counters kept in atomics (no lock, no allocation
//! on the hot path); gauges are read from the hub when scraped.
//!
//! Written here rather than taken from the `metrics` crates: the set is
//! small and fixed, labels have a handful of known values, and the format
//! is a few lines of text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::hub::Wire;

/// Protocol label values, indexed by [`Wire`].
pub(crate) const PROTOCOLS: [&str; 3] = ["socketio", "ws", "sse"];

/// Refusal reasons (label values of `switchboard_refusals_total`).
pub(crate) const REFUSALS: [&str; 12] = [
    "too_many_connections",
    "too_many_connections_per_ip",
    "too_many_handshakes",
    "shutting_down",
    "rate_limited",
    "rate_abuse",
    "too_many_subscriptions",
    "message_too_large",
    "forbidden",
    "unauthenticated",
    "bad_request",
    "too_many_http_connections",
];

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Counters per protocol.
#[derive(Default)]
struct PerWire([AtomicU64; 3]);

impl PerWire {
    fn add(&self, wire: Wire, n: u64) {
        self.0[wire as usize].fetch_add(n, Ordering::Relaxed);
    }
}

/// The server's metrics.
#[derive(Default)]
pub(crate) struct Metrics {
    messages_in: PerWire,
    messages_out: PerWire,
    bytes_in: PerWire,
    bytes_out: PerWire,
    connections_total: PerWire,
    slow_consumers: PerWire,
    publications: AtomicU64,
    refusals: [AtomicU64; REFUSALS.len()],
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
}

/// Values read from the rest of the server when scraped.
#[derive(Debug, Default, Clone)]
pub(crate) struct Gauges {
    /// Open connections by protocol and transport (`(protocol, transport, n)`).
    pub(crate) connections: Vec<(&'static str, &'static str, usize)>,
    /// Subscriptions (connection × channel) on this node.
    pub(crate) subscriptions: usize,
    /// Channels with at least one subscriber on this node.
    pub(crate) channels: usize,
    /// 1 while the server accepts connections, 0 while it shuts down.
    pub(crate) ready: bool,
}

impl Metrics {
    /// A message received from a client.
    pub(crate) fn message_in(&self, wire: Wire, bytes: usize) {
        self.messages_in.add(wire, 1);
        self.bytes_in.add(wire, bytes as u64);
    }

    /// A message queued to a client.
    pub(crate) fn message_out(&self, wire: Wire, bytes: usize) {
        self.messages_out.add(wire, 1);
        self.bytes_out.add(wire, bytes as u64);
    }

    /// A connection opened.
    pub(crate) fn connection_opened(&self, wire: Wire) {
        self.connections_total.add(wire, 1);
    }

    /// A client closed for not reading fast enough.
    pub(crate) fn slow_consumer(&self, wire: Wire) {
        self.slow_consumers.add(wire, 1);
    }

    /// A publication stored and handed to subscribers.
    pub(crate) fn publication(&self) {
        self.publications.fetch_add(1, Ordering::Relaxed);
    }

    /// Something refused, by its code (unknown codes are not counted).
    pub(crate) fn refusal(&self, code: &str) {
        // Every token error (`token_expired`...) is an authentication refusal.
        let code = if code.starts_with("token_") {
            "unauthenticated"
        } else {
            code
        };
        if let Some(i) = REFUSALS.iter().position(|r| *r == code) {
            self.refusals[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How long a publication took from its publish to being written to a
    /// client.
    pub(crate) fn delivery_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The text exposition.
    pub(crate) fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let head = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        head(
            &mut out,
            "switchboard_connections",
            "gauge",
            "Open client connections by protocol and transport.",
        );
        for (protocol, transport, n) in &gauges.connections {
            let _ = writeln!(
                out,
                "switchboard_connections{{protocol=\"{protocol}\",transport=\"{transport}\"}} {n}"
            );
        }
        for (name, help, counters) in [
            (
                "switchboard_connections_opened_total",
                "Client connections opened.",
                &self.connections_total,
            ),
            (
                "switchboard_messages_in_total",
                "Messages received from clients.",
                &self.messages_in,
            ),
            (
                "switchboard_messages_out_total",
                "Messages queued to clients.",
                &self.messages_out,
            ),
            (
                "switchboard_bytes_in_total",
                "Bytes of messages received from clients.",
                &self.bytes_in,
            ),
            (
                "switchboard_bytes_out_total",
                "Bytes of messages queued to clients.",
                &self.bytes_out,
            ),
            (
                "switchboard_slow_consumer_disconnects_total",
                "Clients disconnected because their send queue overflowed.",
                &self.slow_consumers,
            ),
        ] {
            head(&mut out, name, "counter", help);
            for (i, p) in PROTOCOLS.iter().enumerate() {
                let _ = writeln!(out, "{name}{{protocol=\"{p}\"}} {}", load(&counters.0[i]));
            }
        }
        head(
            &mut out,
            "switchboard_subscriptions",
            "gauge",
            "Channel subscriptions of this node's connections.",
        );
        let _ = writeln!(out, "switchboard_subscriptions {}", gauges.subscriptions);
        head(
            &mut out,
            "switchboard_channels",
            "gauge",
            "Channels with subscribers on this node.",
        );
        let _ = writeln!(out, "switchboard_channels {}", gauges.channels);
        head(
            &mut out,
            "switchboard_publications_total",
            "counter",
            "Publications stored and delivered.",
        );
        let _ = writeln!(
            out,
            "switchboard_publications_total {}",
            load(&self.publications)
        );
        head(
            &mut out,
            "switchboard_refusals_total",
            "counter",
            "Requests and connections refused, by reason.",
        );
        for (i, r) in REFUSALS.iter().enumerate() {
            let _ = writeln!(
                out,
                "switchboard_refusals_total{{reason=\"{r}\"}} {}",
                load(&self.refusals[i])
            );
        }
        let name = "switchboard_delivery_latency_seconds";
        head(
            &mut out,
            name,
            "histogram",
            "Time from a publish to its delivery being written to a client (sampled: one publication in 16, every subscriber).",
        );
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += load(&self.latency_buckets[i]);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = load(&self.latency_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            load(&self.latency_sum_ns) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count {count}");
        head(
            &mut out,
            "switchboard_ready",
            "gauge",
            "1 while the server accepts connections.",
        );
        let _ = writeln!(out, "switchboard_ready {}", u8::from(gauges.ready));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let m = Metrics::default();
        m.message_in(Wire::Json, 10);
        m.message_out(Wire::Sse, 7);
        m.refusal("rate_limited");
        m.refusal("no_such_reason");
        m.delivery_latency(Duration::from_micros(300));
        m.delivery_latency(Duration::from_secs(10));
        let text = m.render(&Gauges {
            connections: vec![("socketio", "websocket", 2)],
            subscriptions: 3,
            channels: 1,
            ready: true,
        });
        for line in [
            "switchboard_messages_in_total{protocol=\"ws\"} 1",
            "switchboard_bytes_in_total{protocol=\"ws\"} 10",
            "switchboard_bytes_out_total{protocol=\"sse\"} 7",
            "switchboard_refusals_total{reason=\"rate_limited\"} 1",
            "switchboard_connections{protocol=\"socketio\",transport=\"websocket\"} 2",
            "switchboard_delivery_latency_seconds_bucket{le=\"0.00025\"} 0",
            "switchboard_delivery_latency_seconds_bucket{le=\"0.0005\"} 1",
            "switchboard_delivery_latency_seconds_bucket{le=\"2.5\"} 1",
            "switchboard_delivery_latency_seconds_bucket{le=\"+Inf\"} 2",
            "switchboard_delivery_latency_seconds_count 2",
            "switchboard_subscriptions 3",
            "switchboard_ready 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
