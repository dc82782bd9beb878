//! Requests this node sent to the others, waiting for their answers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchboard::Value;
use switchboard::adapter::{AckEvent, AckResponse, AckSink, Adapter, AdapterError};
use tokio::sync::mpsc;

use crate::driver::Metrics;

/// A random id of `len` characters from `[A-Za-z0-9]` (Node's `uid2`).
pub(crate) fn uid2(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = vec![0u8; len];
    getrandom::fill(&mut raw).expect("the OS random source is unavailable");
    raw.iter()
        .map(|b| CHARS[usize::from(*b) % CHARS.len()] as char)
        .collect()
}

/// A random id of 16 hex characters (`randomBytes(8).toString("hex")`).
pub(crate) fn hex16() -> String {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).expect("the OS random source is unavailable");
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Pending requests by id: each gets the raw answers to it.
#[derive(Default)]
pub(crate) struct Requests {
    pending: Mutex<HashMap<String, mpsc::UnboundedSender<Value>>>,
    acks: Mutex<HashMap<String, AckSink>>,
}

/// A request waiting for answers; unregistered when dropped.
pub(crate) struct Waiting<'a> {
    requests: &'a Requests,
    id: String,
    rx: mpsc::UnboundedReceiver<Value>,
}

impl Requests {
    /// Registers request `id`.
    pub(crate) fn wait(&self, id: String) -> Waiting<'_> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), tx);
        Waiting {
            requests: self,
            id,
            rx,
        }
    }

    /// Whether this node waits for answers to request `id`.
    pub(crate) fn is_pending(&self, id: &str) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// Hands an answer to its request; `false` if no such request waits.
    pub(crate) fn answer(&self, id: &str, answer: Value) -> bool {
        match self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            Some(tx) => tx.send(answer).is_ok(),
            None => false,
        }
    }

    /// Registers a broadcast with acks sent by this node, forgotten after
    /// `timeout` (the caller stops waiting then).
    pub(crate) fn expect_acks(
        self: &std::sync::Arc<Self>,
        id: String,
        sink: AckSink,
        timeout: Duration,
    ) {
        self.acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), sink);
        let me = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(me) = me.upgrade() {
                me.acks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            }
        });
    }

    /// Whether `id` is a broadcast with acks this node sent.
    pub(crate) fn is_own_ack_request(&self, id: &str) -> bool {
        self.acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(id)
    }

    /// Another node asked this many clients.
    pub(crate) fn client_count(&self, id: &str, count: usize) {
        if let Some(sink) = self.acks.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            let _ = sink.send(AckEvent::ClientCount(count));
        }
    }

    /// A client of another node answered.
    pub(crate) fn client_ack(&self, id: &str, arg: Value) {
        if let Some(sink) = self.acks.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            let _ = sink.send(AckEvent::Ack(AckResponse {
                socket: None,
                args: vec![arg],
            }));
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.requests
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Waiting<'_> {
    /// Collects `expected` answers within `timeout`; on timeout, the error
    /// and what arrived.
    pub(crate) async fn collect(
        mut self,
        expected: usize,
        timeout: Duration,
        metrics: &Metrics,
    ) -> Result<Vec<Value>, (AdapterError, Vec<Value>)> {
        let mut got = Vec::with_capacity(expected);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        while got.len() < expected {
            tokio::select! {
                a = self.rx.recv() => match a {
                    Some(a) => got.push(a),
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
        if got.len() < expected {
            metrics.timeouts.fetch_add(1, Ordering::Relaxed);
            let received = got.len();
            return Err((AdapterError::Timeout { received, expected }, got));
        }
        Ok(got)
    }
}

/// Sends another node's broadcast with acks to this node's sockets: gives
/// it this node's ack id, reports how many clients were asked
/// (`on_count`), then each client's answer (its first argument,
/// `on_ack`) until all answered or the request's timeout; then forgets the
/// ack slots. `opts` are the request's options (`flags.timeout` in ms).
pub(crate) fn relay_acks<A: Adapter>(
    adapter: &A,
    owner: std::sync::Weak<A>,
    event: &[Value],
    opts: Option<&Value>,
    default_timeout: Duration,
    on_count: impl FnOnce(usize),
    on_ack: impl Fn(&A, Value) + Send + 'static,
) {
    let local = adapter.local();
    let ack_id = local.namespace().next_ack_id();
    let nsp = local.namespace().name();
    let Some(encoded) = crate::packet::encode(nsp, event, Some(ack_id)) else {
        return;
    };
    let timeout = opts
        .and_then(|o| o.get("flags"))
        .and_then(|f| f.get("timeout"))
        .and_then(Value::as_u64)
        .map_or(default_timeout, Duration::from_millis);
    let (sink, mut rx) = mpsc::unbounded_channel();
    let count = local.broadcast_with_ack(&encoded, ack_id, &crate::packet::opts_from(opts), &sink);
    drop(sink);
    on_count(count);
    if count == 0 {
        return;
    }
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut left = count;
        while left > 0 {
            tokio::select! {
                event = rx.recv() => match event {
                    Some(AckEvent::Ack(r)) => {
                        left -= 1;
                        let Some(owner) = owner.upgrade() else { return };
                        on_ack(&owner, r.args.into_iter().next().unwrap_or(Value::Null));
                    }
                    Some(AckEvent::ClientCount(_)) => {}
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
        if let Some(owner) = owner.upgrade() {
            owner.local().forget_ack(ack_id);
        }
    });
}
