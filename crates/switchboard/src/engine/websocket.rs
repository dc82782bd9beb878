//! The WebSocket transport, and the upgrade of a polling session to it.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_websockets::{CloseCode, Message, WebSocketStream};

use super::session::TransportKind;
use super::{CloseReason, EngineHandler, Session};
use crate::protocol::engine::{Frame, Packet};

pub(crate) type Ws = WebSocketStream<TokioIo<Upgraded>>;

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
}

fn read(msg: Option<Result<Message, tokio_websockets::Error>>) -> Inbound {
    match msg {
        None => Inbound::Closed,
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
            () = session.token.cancelled() => break false,
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

/// Drives one WebSocket: reads the client's packets and writes the queue,
/// batching every queued frame into one flush.
pub(crate) async fn run<H: EngineHandler>(session: Arc<Session<H>>, mut ws: Ws, is_upgrade: bool) {
    if is_upgrade && !upgrade(&session, &mut ws).await {
        shut(&mut ws, None).await;
        return;
    }
    let mut pending = true;
    loop {
        if pending {
            pending = false;
            let (frames, closing) = session.drain();
            let mut failed = false;
            for frame in frames {
                if ws.feed(to_message(frame)).await.is_err() {
                    failed = true;
                    break;
                }
            }
            if failed || ws.flush().await.is_err() {
                session.close(CloseReason::TransportError);
                return;
            }
            if closing {
                shut(&mut ws, None).await;
                session.close(CloseReason::ForcedClose);
                return;
            }
        }
        tokio::select! {
            biased;
            () = session.token.cancelled() => {
                let code = match session.lock().closed {
                    Some(CloseReason::SlowConsumer) => Some(CloseCode::POLICY_VIOLATION),
                    _ => None,
                };
                shut(&mut ws, code).await;
                return;
            }
            () = session.wake.notified() => pending = true,
            msg = ws.next() => match read(msg) {
                Inbound::Packet(p) => session.on_packet(p),
                Inbound::Closed => {
                    session.close(CloseReason::TransportClose);
                    let _ = ws.flush().await;
                    return;
                }
                Inbound::Error(reason) => {
                    // A too-long message already has its 1009 close queued.
                    let _ = ws.flush().await;
                    if reason == CloseReason::ParseError {
                        shut(&mut ws, None).await;
                    }
                    session.close(reason);
                    return;
                }
            },
        }
    }
}
