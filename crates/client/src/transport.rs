//! Opening connections: TCP, then the WebSocket handshake; reading and
//! writing Engine.IO packets over WebSocket.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Uri;
use http::header::{HeaderName, HeaderValue};
use switchboard::protocol::engine::{Frame, Packet};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
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

/// How to secure connections to `https`/`wss` URLs: a rustls client
/// configuration, or (by default) one trusting the system's certificate
/// authorities.
#[derive(Clone, Default)]
pub(crate) struct Tls {
    pub(crate) config: Option<Arc<rustls::ClientConfig>>,
}

/// Where systems keep their bundle of trusted certificate authorities.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A client configuration trusting the system's authorities (the file
/// named by `SSL_CERT_FILE`, or the first bundle found).
pub(crate) fn system_tls_config() -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let from_env = std::env::var("SSL_CERT_FILE").ok();
    let candidates = from_env
        .iter()
        .map(String::as_str)
        .chain(CA_BUNDLES.iter().copied());
    for path in candidates {
        let Ok(iter) = CertificateDer::pem_file_iter(path) else {
            continue;
        };
        for cert in iter.flatten() {
            let _ = roots.add(cert);
        }
        if !roots.is_empty() {
            break;
        }
    }
    if roots.is_empty() {
        return Err(ConnectError::Tls(
            "no trusted certificate authorities found (set SSL_CERT_FILE or give a TLS configuration)"
                .to_owned(),
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ConnectError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Opens the byte stream to the target: TCP, then TLS for `https`/`wss`.
pub(crate) async fn open_stream(target: &Target, tls: &Tls) -> Result<Box<dyn Io>, ConnectError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    tcp.set_nodelay(true)?;
    if !target.secure {
        return Ok(Box::new(tcp));
    }
    let config = match &tls.config {
        Some(c) => c.clone(),
        None => system_tls_config()?,
    };
    let name = rustls::pki_types::ServerName::try_from(target.host.clone())
        .map_err(|e| ConnectError::Tls(e.to_string()))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    Ok(Box::new(stream))
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
