//! The WebSocket transport, and the upgrade of a polling session to it.

use std::sync::Arc;

use bytes::Bytes;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_websockets::{CloseCode, Message, WebSocketStream};

use super::coalesce::Coalesce;
use super::session::TransportKind;
use super::{CloseReason, EngineHandler, Session};
use crate::protocol::engine::{Frame, Packet};

pub(crate) type Ws = WebSocketStream<Coalesce<TokioIo<Upgraded>>>;

fn to_message(frame: Frame) -> Message {
    match frame {
        Frame::Text(t) => Message::text(t),
        Frame::Binary(b) => Message::binary(b),
    }
}

enum Inbound {
    Packet(Packet),
    Closed,
    Error(CloseReason),
    /// A message over `max_payload`: closed with 1009.
    TooLong,
}

fn read(msg: Option<Result<Message, tokio_websockets::Error>>) -> Inbound {
    match msg {
        None => Inbound::Closed,
        Some(Err(tokio_websockets::Error::PayloadTooLong { len, max_len })) => {
            tracing::debug!(len, max_len, "websocket message over the limit");
            Inbound::TooLong
        }
        Some(Err(e)) => {
            tracing::debug!(error = %e, "websocket read error");
            Inbound::Error(CloseReason::TransportError)
        }
        Some(Ok(m)) if m.is_text() => {
            let text: Bytes = m.into_payload().into();
            match Packet::decode_text(text) {
                Ok(p) => Inbound::Packet(p),
                Err(_) => Inbound::Error(CloseReason::ParseError),
            }
        }
        Some(Ok(m)) if m.is_binary() => Inbound::Packet(Packet::Binary(m.into_payload().into())),
        Some(Ok(m)) if m.is_close() => Inbound::Closed,
        // Pings and pongs of the WebSocket protocol itself.
        Some(Ok(_)) => Inbound::Packet(Packet::Noop),
    }
}

/// Sends a close frame and flushes whatever the stream still holds.
async fn shut(ws: &mut Ws, code: Option<CloseCode>) {
    let _ = ws.send(Message::close(code, "")).await;
    let _ = ws.flush().await;
}

/// Ends a connection: flushes what is queued (a close frame the library
/// queued itself included) and, with `close`, sends a close frame, for at
/// most [`CLOSE_GRACE`]. Boxed: this runs once per connection and its state
/// must not weigh on the connection task's size for its whole life.
async fn finish(ws: &mut Ws, code: Option<CloseCode>, close: bool) {
    Box::pin(tokio::time::timeout(CLOSE_GRACE, async {
        if close {
            shut(ws, code).await;
        } else {
            let _ = ws.flush().await;
        }
        // The closing handshake: read (and drop) what the client still
        // sends until its close or its end. Dropping a socket with unread
        // data resets it, and the reset can destroy the close frame and
        // the last packets before the client reads them.
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
        }
        // The framing layer ends its stream at the peer's close (or a
        // protocol error) without draining the socket: shut down our side
        // and drain it, or the kernel may still reset the connection.
        linger(ws.get_mut()).await;
    }))
    .await
    .ok();
}

/// The most a closing connection reads and drops while it lingers.
const LINGER_BYTES: usize = 1 << 20;

/// Shuts down the writing side (after what is buffered) and reads, then
/// drops, what the peer still sends until it ends, at most
/// [`LINGER_BYTES`]: closing a socket with unread data resets it, and a
/// reset destroys what the peer had not read yet (the close frame, the last
/// packets).
async fn linger<S>(io: &mut S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = io.shutdown().await;
    let mut buf = [0u8; 4096];
    let mut left = LINGER_BYTES;
    while left > 0 {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Clears the session's `upgrading` flag when the probe phase ends.
struct UpgradeFlag<'a, H: EngineHandler>(&'a Arc<Session<H>>);

impl<H: EngineHandler> Drop for UpgradeFlag<'_, H> {
    fn drop(&mut self) {
        self.0.lock().upgrading = false;
    }
}

/// Runs the probe phase of an upgrade. Returns `true` once the client sent
/// `5` and the session now uses this WebSocket.
async fn upgrade<H: EngineHandler>(session: &Arc<Session<H>>, ws: &mut Ws) -> bool {
    {
        let mut s = session.lock();
        if s.upgrading || s.transport != TransportKind::Polling || s.closed.is_some() {
            return false;
        }
        s.upgrading = true;
    }
    // However the probe ends (even dropped by a timeout), it stops upgrading.
    let _flag = UpgradeFlag(session);
    let deadline = tokio::time::sleep(session.shared.config.upgrade_timeout);
    tokio::pin!(deadline);
    let done = loop {
        tokio::select! {
            msg = ws.next() => match read(msg) {
                Inbound::Packet(Packet::Ping(data)) if &data[..] == b"probe" => {
                    if ws.send(Message::text(Bytes::from_static(b"3probe"))).await.is_err() {
                        break false;
                    }
                    // Release a pending poll so the client can pause polling.
                    session.wake.notify_one();
                }
                Inbound::Packet(Packet::Upgrade) => break true,
                Inbound::Packet(Packet::Noop) => {}
                _ => break false,
            },
            () = &mut deadline => break false,
            () = session.wait_closed() => break false,
        }
    };
    let mut s = session.lock();
    s.upgrading = false;
    if done && s.closed.is_none() {
        s.transport = TransportKind::WebSocket;
        drop(s);
        // A poll still pending gets a noop and the queue moves to this socket.
        session.wake.notify_one();
        true
    } else {
        false
    }
}

/// What woke the connection task.
enum Step {
    Inbound(Inbound),
    Heartbeat,
    /// The server's close packet went out after the last queued frame.
    Closing,
    /// The session was closed.
    Closed,
    WriteFailed,
}

/// How long a closing connection may take to get its close frame out to a
/// client that does not read.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Drives one WebSocket: reads the client's packets and writes the queue.
///
/// Reading and writing are polled side by side in one task: a client that
/// stops reading blocks only the write side, so its packets are still read,
/// and what the server answers piles up in the bounded session queue until
/// the slow-consumer policy closes it. Every frame queued at a wake-up is fed
/// to the socket and flushed once.
///
/// A session born on this WebSocket also runs its heartbeat here (one timer
/// in this task rather than a task of its own); an upgraded session keeps the
/// heartbeat task it started with on polling.
// Not an `async fn`: its arguments would be stored twice in the future
// (once as arguments, once as locals), and `ws` alone is ~300 bytes kept
// for the whole life of the connection. The `async move` block captures
// them once.
#[allow(clippy::manual_async_fn)]
pub(crate) fn run<H: EngineHandler>(
    session: Arc<Session<H>>,
    mut ws: Ws,
    is_upgrade: bool,
) -> impl Future<Output = ()> + Send {
    async move {
        // Boxed: the probe phase is short, and its state must not weigh on the
        // task for the whole life of the connection.
        if is_upgrade {
            // The whole probe is bounded by the upgrade timeout and ends if
            // the session closes, even while a write to the client waits.
            let probe = tokio::time::timeout(
                session.shared.config.upgrade_timeout,
                Box::pin(upgrade(&session, &mut ws)),
            );
            let upgraded = tokio::select! {
                r = probe => r.unwrap_or(false),
                () = session.wait_closed() => false,
            };
            if !upgraded {
                finish(&mut ws, None, true).await;
                return;
            }
        }
        let heartbeat = tokio::time::sleep_until(if is_upgrade {
            // Far away: the polling heartbeat task keeps running this session.
            Instant::now() + Duration::from_secs(86_400 * 365)
        } else {
            Instant::now() + session.shared.config.ping_interval
        });
        tokio::pin!(heartbeat);
        let wake = session.wake.notified();
        tokio::pin!(wake);
        let mut outbox: VecDeque<Frame> = VecDeque::new();
        let mut queued = true;
        let mut flushing = false;
        let mut closing = false;
        loop {
            let step = poll_fn(|cx| {
                loop {
                    if wake.as_mut().poll(cx).is_ready() {
                        wake.set(session.wake.notified());
                        if session.lock().closed.is_some() {
                            return Poll::Ready(Step::Closed);
                        }
                        queued = true;
                        continue;
                    }
                    break;
                }
                // Writes: take the queue only once the previous batch is out, so
                // a stalled socket leaves frames in the bounded session queue.
                loop {
                    if outbox.is_empty() && queued {
                        queued = false;
                        let (frames, close_after) = session.drain();
                        outbox = frames;
                        closing |= close_after;
                    }
                    if outbox.is_empty() {
                        break;
                    }
                    match ws.poll_ready_unpin(cx) {
                        Poll::Ready(Ok(())) => {
                            let frame = outbox.pop_front().expect("checked non-empty");
                            if ws.start_send_unpin(to_message(frame)).is_err() {
                                return Poll::Ready(Step::WriteFailed);
                            }
                            flushing = true;
                        }
                        Poll::Ready(Err(_)) => return Poll::Ready(Step::WriteFailed),
                        Poll::Pending => break,
                    }
                }
                if outbox.is_empty() && flushing {
                    match ws.poll_flush_unpin(cx) {
                        Poll::Ready(Ok(())) => {
                            flushing = false;
                            // An idle connection keeps no queue allocation.
                            outbox = VecDeque::new();
                        }
                        Poll::Ready(Err(_)) => return Poll::Ready(Step::WriteFailed),
                        Poll::Pending => {}
                    }
                }
                if closing && outbox.is_empty() && !flushing {
                    return Poll::Ready(Step::Closing);
                }
                if !is_upgrade && heartbeat.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Step::Heartbeat);
                }
                ws.poll_next_unpin(cx).map(|msg| Step::Inbound(read(msg)))
            })
            .await;
            match step {
                Step::Inbound(inbound) => match inbound {
                    Inbound::Packet(p) => {
                        let pong = matches!(p, Packet::Pong(_));
                        session.on_packet(p);
                        if pong && !is_upgrade {
                            heartbeat.as_mut().reset(session.heartbeat_deadline());
                        }
                    }
                    Inbound::Closed => {
                        session.close(CloseReason::TransportClose);
                        finish(&mut ws, None, false).await;
                        return;
                    }
                    Inbound::Error(reason) => {
                        // A protocol error has its close frame queued by the
                        // framing layer; a parse error sends its own.
                        finish(&mut ws, None, reason == CloseReason::ParseError).await;
                        session.close(reason);
                        return;
                    }
                    Inbound::TooLong => {
                        // A single frame over the limit has its 1009 queued
                        // by the framing layer (then this close is refused
                        // as already closed, and that one goes out); a
                        // fragmented message over it does not, so it is
                        // sent here.
                        finish(&mut ws, Some(CloseCode::MESSAGE_TOO_BIG), true).await;
                        session.close(CloseReason::TransportError);
                        return;
                    }
                },
                Step::Heartbeat => {
                    if let Some(next) = session.heartbeat_tick() {
                        heartbeat.as_mut().reset(next);
                    }
                }
                Step::Closing => {
                    finish(&mut ws, None, true).await;
                    session.close(CloseReason::ForcedClose);
                    return;
                }
                Step::Closed => {
                    let code = match session.lock().closed {
                        Some(CloseReason::SlowConsumer) => Some(CloseCode::POLICY_VIOLATION),
                        _ => None,
                    };
                    finish(&mut ws, code, true).await;
                    return;
                }
                Step::WriteFailed => {
                    session.close(CloseReason::TransportError);
                    return;
                }
            }
        }
    }
}
