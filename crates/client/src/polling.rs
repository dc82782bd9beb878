//! Engine.IO HTTP long-polling, and the upgrade to WebSocket.
//!
//! Two HTTP/1.1 connections per session: one carries the long-polling
//! `GET`s (driven by one task per session, which hands each response's
//! packets to the session through a channel, so reading stays cancel-safe),
//! the other the `POST`s of outgoing packets.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use switchboard::protocol::engine::{self, Frame, Packet};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::ConnectError;
use crate::transport::{self, Headers, Target, Tls};

/// One HTTP/1.1 connection.
struct Http {
    sender: SendRequest<Full<Bytes>>,
}

impl Http {
    async fn open(target: &Target, tls: &Tls) -> Result<Http, ConnectError> {
        let stream = transport::open_stream(target, tls).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Http(e.to_string()))?;
        // One task drives the connection for its whole life.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Http { sender })
    }

    async fn request(
        &mut self,
        method: Method,
        target: &Target,
        path_and_query: &str,
        headers: &Headers,
        body: Bytes,
    ) -> Result<Bytes, ConnectError> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path_and_query)
            .header(http::header::HOST, target.authority.as_str());
        if method == Method::POST {
            req = req.header(http::header::CONTENT_TYPE, "text/plain;charset=UTF-8");
        }
        for (n, v) in headers {
            req = req.header(n, v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ConnectError::Http(e.to_string()))?;
        self.sender
            .ready()
            .await
            .map_err(|e| ConnectError::Http(e.to_string()))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| ConnectError::Http(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ConnectError::Http(e.to_string()))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(ConnectError::Http(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(body)
    }
}

/// Engine.IO over long-polling.
pub(crate) struct PollingTransport {
    target: Target,
    headers: Headers,
    /// `path?EIO=4&transport=polling&sid=...[&query]`.
    pq: String,
    post: Http,
    rx: mpsc::Receiver<Result<Vec<Packet>, ConnectError>>,
    ready: VecDeque<Packet>,
    paused: Arc<AtomicBool>,
    poller: JoinHandle<()>,
}

impl Drop for PollingTransport {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// Performs the polling handshake; returns the transport, the `open`
/// packet's data and the session id.
pub(crate) async fn handshake(
    target: &Target,
    tls: &Tls,
    headers: &Headers,
    base_pq: &str,
) -> Result<(PollingTransport, Bytes, String), ConnectError> {
    let mut get = Http::open(target, tls).await?;
    let body = get
        .request(Method::GET, target, base_pq, headers, Bytes::new())
        .await?;
    let payload = engine::decode_payload(&body);
    let mut packets = payload.packets.into_iter();
    let Some(Packet::Open(open)) = packets.next() else {
        return Err(ConnectError::Handshake(
            "the first polling response is not an open packet".into(),
        ));
    };
    #[derive(serde::Deserialize)]
    struct Sid {
        sid: String,
    }
    let sid: Sid =
        serde_json::from_slice(&open).map_err(|e| ConnectError::Handshake(e.to_string()))?;
    let pq = format!("{base_pq}&sid={}", transport::encode_component(&sid.sid));
    let post = Http::open(target, tls).await?;
    let (tx, rx) = mpsc::channel(8);
    let paused = Arc::new(AtomicBool::new(false));
    let poller = tokio::spawn(poll_loop(
        get,
        target.clone(),
        headers.clone(),
        pq.clone(),
        tx,
        paused.clone(),
    ));
    let t = PollingTransport {
        target: target.clone(),
        headers: headers.clone(),
        pq,
        post,
        rx,
        ready: packets.collect(),
        paused,
        poller,
    };
    Ok((t, open, sid.sid))
}

async fn poll_loop(
    mut get: Http,
    target: Target,
    headers: Headers,
    pq: String,
    tx: mpsc::Sender<Result<Vec<Packet>, ConnectError>>,
    paused: Arc<AtomicBool>,
) {
    while !paused.load(Ordering::Acquire) {
        let r = get
            .request(Method::GET, &target, &pq, &headers, Bytes::new())
            .await
            .and_then(|body| {
                let p = engine::decode_payload(&body);
                match p.error {
                    Some(e) => Err(ConnectError::Handshake(e.to_string())),
                    None => Ok(p.packets),
                }
            });
        let failed = r.is_err();
        if tx.send(r).await.is_err() || failed {
            return;
        }
    }
}

impl PollingTransport {
    /// Writes frames in one `POST`.
    pub(crate) async fn send(&mut self, frames: Vec<Frame>) -> Result<(), ConnectError> {
        let body = engine::encode_payload(frames.iter());
        self.post
            .request(Method::POST, &self.target, &self.pq, &self.headers, body)
            .await
            .map(|_| ())
    }

    /// The next packet; `None` when the session ended.
    pub(crate) async fn recv(&mut self) -> Option<Result<Packet, ConnectError>> {
        loop {
            if let Some(p) = self.ready.pop_front() {
                return Some(Ok(p));
            }
            match self.rx.recv().await? {
                Ok(packets) => self.ready.extend(packets),
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Sends a close packet (best effort).
    pub(crate) async fn close(&mut self) {
        let _ = self.send(vec![Frame::control(b"1")]).await;
    }

    /// Whether [`PollingTransport::pause`] was called.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Stops polling after the request in flight (the upgrade's noop
    /// releases it); returns every packet received until then.
    pub(crate) async fn pause(&mut self) -> Result<VecDeque<Packet>, ConnectError> {
        self.paused.store(true, Ordering::Release);
        let mut out = std::mem::take(&mut self.ready);
        // The poller ends (dropping its sender) after its last request.
        while let Some(r) = self.rx.recv().await {
            out.extend(r?.into_iter().filter(|p| !matches!(p, Packet::Noop)));
        }
        Ok(out)
    }
}
