//! Opening connections: TCP, then the WebSocket handshake; reading and
//! writing Engine.IO packets over WebSocket.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Uri;
use http::header::{HeaderName, HeaderValue};
use switchboard::protocol::engine::{Frame, Packet};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_websockets::{Message, WebSocketStream};

use crate::error::ConnectError;

/// A byte stream a connection runs on (TCP, or TLS over TCP).
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A WebSocket over any byte stream.
pub(crate) type Ws = WebSocketStream<Box<dyn Io>>;

/// Extra HTTP headers sent with every request.
pub(crate) type Headers = Vec<(HeaderName, HeaderValue)>;

/// Parses extra headers given as strings.
pub(crate) fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), ConnectError> {
    let n = HeaderName::try_from(name).map_err(|e| ConnectError::Header(e.to_string()))?;
    let v = HeaderValue::try_from(value).map_err(|e| ConnectError::Header(e.to_string()))?;
    Ok((n, v))
}

/// Percent-encodes a query component.
pub(crate) fn encode_component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The parts of a server URL the client needs.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Whether TLS is used (`https`/`wss`).
    pub(crate) secure: bool,
    /// Host name (without IPv6 brackets).
    pub(crate) host: String,
    /// Port.
    pub(crate) port: u16,
    /// `host[:port]` as written in the URL, for the `Host` header.
    pub(crate) authority: String,
    /// The path from the URL (may be empty or `/`).
    pub(crate) path: String,
    /// The query from the URL, without `?` (may be empty).
    pub(crate) query: String,
}

impl Target {
    /// Parses `http(s)://` or `ws(s)://` URLs.
    pub(crate) fn parse(url: &str) -> Result<Target, ConnectError> {
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ConnectError::Url(e.to_string()))?;
        let secure = match uri.scheme_str() {
            Some("http" | "ws") => false,
            Some("https" | "wss") => true,
            _ => return Err(ConnectError::Url(format!("unsupported scheme in {url}"))),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| ConnectError::Url(format!("no host in {url}")))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority
            .port_u16()
            .unwrap_or(if secure { 443 } else { 80 });
        Ok(Target {
            secure,
            host,
            port,
            authority: authority.as_str().to_owned(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or("").to_owned(),
        })
    }

    /// A `ws(s)://` URI for `path?query`.
    pub(crate) fn ws_uri(&self, path_and_query: &str) -> Result<Uri, ConnectError> {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}{path_and_query}", self.authority)
            .parse()
            .map_err(|e: http::uri::InvalidUri| ConnectError::Url(e.to_string()))
    }
}

/// How to secure connections to `https`/`wss` URLs.
#[derive(Clone, Default)]
pub(crate) struct Tls {}

/// Opens the byte stream to the target.
pub(crate) async fn open_stream(target: &Target, _tls: &Tls) -> Result<Box<dyn Io>, ConnectError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    tcp.set_nodelay(true)?;
    if target.secure {
        return Err(ConnectError::Url(
            "TLS (https/wss) is not supported yet".to_owned(),
        ));
    }
    Ok(Box::new(tcp))
}

/// Opens a WebSocket to `uri` with extra headers.
pub(crate) async fn connect_ws(
    target: &Target,
    uri: Uri,
    headers: &Headers,
    tls: &Tls,
) -> Result<Ws, ConnectError> {
    let stream = open_stream(target, tls).await?;
    let mut builder = tokio_websockets::ClientBuilder::from_uri(uri);
    for (name, value) in headers {
        builder = builder.add_header(name.clone(), value.clone())?;
    }
    let (ws, _response) = builder.connect_on(stream).await?;
    Ok(ws)
}

/// Engine.IO over a WebSocket.
pub(crate) struct WsTransport {
    ws: Ws,
    /// Packets received before the switch (on polling, during an upgrade).
    pending: std::collections::VecDeque<Packet>,
}

impl WsTransport {
    pub(crate) fn new(ws: Ws) -> Self {
        WsTransport {
            ws,
            pending: std::collections::VecDeque::new(),
        }
    }

    /// A WebSocket that takes over from polling, with what polling received
    /// last.
    pub(crate) fn upgraded(ws: Ws, pending: std::collections::VecDeque<Packet>) -> Self {
        WsTransport { ws, pending }
    }

    /// Writes frames and flushes once.
    pub(crate) async fn send(&mut self, frames: Vec<Frame>) -> Result<(), ConnectError> {
        for frame in frames {
            let msg = match frame {
                Frame::Text(t) => Message::text(t),
                Frame::Binary(b) => Message::binary(b),
            };
            self.ws.feed(msg).await?;
        }
        self.ws.flush().await?;
        Ok(())
    }

    /// Reads the next Engine.IO packet; `None` when the connection closed.
    pub(crate) async fn recv(&mut self) -> Option<Result<Packet, ConnectError>> {
        if let Some(p) = self.pending.pop_front() {
            return Some(Ok(p));
        }
        loop {
            let msg = match self.ws.next().await? {
                Ok(m) => m,
                Err(e) => return Some(Err(e.into())),
            };
            if msg.is_text() {
                let data = Bytes::from(msg.into_payload());
                return Some(
                    Packet::decode_text(data).map_err(|e| ConnectError::Handshake(e.to_string())),
                );
            }
            if msg.is_binary() {
                return Some(Ok(Packet::Binary(Bytes::from(msg.into_payload()))));
            }
            if msg.is_close() {
                return None;
            }
            // Pings are answered by the WebSocket stream itself.
        }
    }

    /// The WebSocket and the packets not read yet.
    pub(crate) fn into_parts(self) -> (Ws, std::collections::VecDeque<Packet>) {
        (self.ws, self.pending)
    }

    /// Sends a close frame (best effort).
    pub(crate) async fn close(&mut self) {
        let _ = self.ws.close().await;
    }
}

/// An Engine.IO transport: WebSocket, or long-polling.
pub(crate) enum Transport {
    /// WebSocket (from the start, or after an upgrade).
    Ws(Box<WsTransport>),
    /// HTTP long-polling.
    Polling(Box<crate::polling::PollingTransport>),
}

impl Transport {
    /// Writes frames.
    pub(crate) async fn send(&mut self, frames: Vec<Frame>) -> Result<(), ConnectError> {
        match self {
            Transport::Ws(t) => t.send(frames).await,
            Transport::Polling(t) => t.send(frames).await,
        }
    }

    /// Reads the next packet (cancel-safe).
    pub(crate) async fn recv(&mut self) -> Option<Result<Packet, ConnectError>> {
        match self {
            Transport::Ws(t) => t.recv().await,
            Transport::Polling(t) => t.recv().await,
        }
    }

    /// Closes (best effort).
    pub(crate) async fn close(&mut self) {
        match self {
            Transport::Ws(t) => t.close().await,
            Transport::Polling(t) => t.close().await,
        }
    }

    /// `websocket` or `polling`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Transport::Ws(_) => "websocket",
            Transport::Polling(_) => "polling",
        }
    }
}
