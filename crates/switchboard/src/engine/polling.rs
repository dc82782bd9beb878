//! The HTTP long-polling transport: GET fetches queued packets, POST
//! delivers the client's.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body::Body;
use http_body_util::{BodyExt, Limited};

use super::reply::Reply;
use super::session::TransportKind;
use super::{CloseReason, EngineHandler, Session};
use crate::protocol::engine::{Packet, decode_payload, encode_payload};

/// Closes the session when a poll is abandoned by its client (the request
/// future is dropped before it produced a response).
struct PollGuard<'a, H: EngineHandler> {
    session: &'a Arc<Session<H>>,
    armed: bool,
}

impl<H: EngineHandler> Drop for PollGuard<'_, H> {
    fn drop(&mut self) {
        if self.armed {
            self.session.set_polling(false);
            self.session.close(CloseReason::TransportError);
        }
    }
}

/// Closes the session when a POST is abandoned before its body arrived.
struct PostGuard<'a, H: EngineHandler> {
    session: &'a Arc<Session<H>>,
    armed: bool,
}

impl<H: EngineHandler> Drop for PostGuard<'_, H> {
    fn drop(&mut self) {
        if self.armed {
            self.session.lock().posting = false;
            self.session.close(CloseReason::TransportError);
        }
    }
}

/// Answers a polling GET: everything queued, as soon as there is anything.
pub(crate) async fn get<H: EngineHandler>(session: Arc<Session<H>>) -> Reply {
    {
        let mut s = session.lock();
        if s.polling {
            drop(s);
            // Two overlapping polls: the pending one receives `1`, this one 400.
            session.close(CloseReason::TransportError);
            return Reply::empty(StatusCode::BAD_REQUEST);
        }
        s.polling = true;
    }
    let mut guard = PollGuard {
        session: &session,
        armed: true,
    };
    // During an upgrade a poll is released with a noop after at most 100 ms
    // (as the reference does); if the upgrade completes first, the poll is
    // refused like any poll after an upgrade.
    let mut noop_at: Option<tokio::time::Instant> = None;
    loop {
        let wake = session.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let body = {
            let mut s = session.lock();
            if let Some(reason) = s.closed {
                // A client close packet releases the pending poll with a noop.
                Some(if reason == CloseReason::TransportClose {
                    Bytes::from_static(b"6")
                } else {
                    Bytes::from_static(b"1")
                })
            } else if s.transport == TransportKind::WebSocket {
                s.polling = false;
                drop(s);
                guard.armed = false;
                return Reply::empty(StatusCode::BAD_REQUEST);
            } else if !s.queue.is_empty() {
                s.queued_bytes = 0;
                let mut frames = std::mem::take(&mut s.queue);
                // The close packet (the last queued frame of a closing
                // session) travels alone, in the poll after the others, as
                // the reference sends it: a client that received both in one
                // payload would see the transport close before it handled
                // the packets ahead of it (socket.io-client hands decoded
                // packets on a tick later), losing their acks and a
                // namespace DISCONNECT.
                let closing = s.closing && frames.len() == 1;
                if s.closing && !closing {
                    s.queue.extend(frames.pop_back());
                }
                s.polling = false;
                drop(s);
                guard.armed = false;
                if closing {
                    session.close(CloseReason::ForcedClose);
                }
                return Reply::payload(encode_payload(&frames));
            } else if s.upgrading {
                // Nothing to send during a probe: release the poll with a
                // noop after at most 100 ms.
                let at = *noop_at.get_or_insert_with(|| {
                    tokio::time::Instant::now() + std::time::Duration::from_millis(100)
                });
                (tokio::time::Instant::now() >= at).then(|| Bytes::from_static(b"6"))
            } else {
                None
            }
        };
        if let Some(body) = body {
            session.set_polling(false);
            guard.armed = false;
            return Reply::payload(body);
        }
        match noop_at {
            Some(at) => {
                tokio::select! {
                    () = wake => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => wake.await,
        }
    }
}

/// Answers a polling POST: decodes and dispatches the client's packets.
pub(crate) async fn post<H, B>(session: Arc<Session<H>>, body: B) -> Reply
where
    H: EngineHandler,
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    {
        let mut s = session.lock();
        if s.posting {
            drop(s);
            session.close(CloseReason::TransportError);
            return Reply::empty(StatusCode::BAD_REQUEST);
        }
        s.posting = true;
    }
    let max = session.shared.config.max_payload;
    // A POST its client abandons mid-body closes the session (as the
    // reference does) instead of leaving it marked as posting.
    let mut guard = PostGuard {
        session: &session,
        armed: true,
    };
    let collected = Limited::new(body, max).collect().await;
    guard.armed = false;
    session.lock().posting = false;
    let body = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                // Over maxHttpBufferSize: refused, the session lives on.
                return Reply::empty(StatusCode::PAYLOAD_TOO_LARGE);
            }
            session.close(CloseReason::TransportError);
            return Reply::empty(StatusCode::BAD_REQUEST);
        }
    };
    let payload = decode_payload(&body);
    for packet in payload.packets {
        if session.is_closed() {
            break;
        }
        let close = packet == Packet::Close;
        session.on_packet(packet);
        if close {
            break;
        }
    }
    if let Some(error) = payload.error {
        tracing::debug!(sid = %session.id(), %error, "undecodable polling payload");
        session.close(CloseReason::ParseError);
        return Reply::empty(StatusCode::BAD_REQUEST);
    }
    Reply::ok()
}
