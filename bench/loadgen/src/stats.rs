//! Latency histogram, counters, and readings from /proc.

use std::cell::{Cell, RefCell};
use std::sync::OnceLock;
use std::time::Instant;

use hdrhistogram::Histogram;

static START: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the load generator started (one clock for publishers
/// and subscribers, which live in the same process).
pub(crate) fn now_us() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// What the receiving side of a scenario has seen.
pub(crate) struct Stats {
    hist: RefCell<Histogram<u64>>,
    pub(crate) received: Cell<u64>,
    pub(crate) disconnected: Cell<u64>,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Stats {
            hist: RefCell::new(
                Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
            ),
            received: Cell::new(0),
            disconnected: Cell::new(0),
        }
    }

    pub(crate) fn record(&self, sent_us: u64) {
        let lat = now_us().saturating_sub(sent_us).max(1);
        let _ = self.hist.borrow_mut().record(lat.min(120_000_000));
        self.received.set(self.received.get() + 1);
    }

    pub(crate) fn reset(&self) {
        self.hist.borrow_mut().reset();
        self.received.set(0);
    }

    /// p50, p99 and max latency in milliseconds.
    pub(crate) fn latency_ms(&self) -> (f64, f64, f64) {
        let h = self.hist.borrow();
        if h.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        let ms = |v: u64| v as f64 / 1000.0;
        (
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
        )
    }
}

/// Resident memory of a process in KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// User plus system CPU time of a process, in clock ticks (1/100 s).
pub(crate) fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Total and steal ticks of the whole machine.
pub(crate) fn steal_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    Some((v.iter().sum(), *v.get(7)?))
}

/// CPU use of the server, of this process, and machine steal over a window.
pub(crate) struct CpuWindow {
    server_pid: Option<u32>,
    server: Option<u64>,
    me: Option<u64>,
    steal: Option<(u64, u64)>,
    at: Instant,
}

impl CpuWindow {
    pub(crate) fn start(server_pid: Option<u32>) -> Self {
        CpuWindow {
            server_pid,
            server: server_pid.and_then(|p| cpu_ticks(Some(p))),
            me: cpu_ticks(None),
            steal: steal_ticks(),
            at: Instant::now(),
        }
    }

    /// (server CPU %, load generator CPU %, steal %) since `start`.
    pub(crate) fn finish(&self) -> serde_json::Value {
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        let pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => {
                serde_json::json!(((b - a) as f64 / 100.0 / secs * 100.0).round())
            }
            _ => serde_json::Value::Null,
        };
        let steal = match (self.steal, steal_ticks()) {
            (Some((t0, s0)), Some((t1, s1))) if t1 > t0 => {
                serde_json::json!(((s1 - s0) as f64 / (t1 - t0) as f64 * 100.0).round())
            }
            _ => serde_json::Value::Null,
        };
        serde_json::json!({
            "server_cpu_pct": pct(self.server, self.server_pid.and_then(|p| cpu_ticks(Some(p)))),
            "loadgen_cpu_pct": pct(self.me, cpu_ticks(None)),
            "steal_pct": steal,
        })
    }
}
