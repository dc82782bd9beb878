//! Request routing for the engine: handshake, polling, WebSocket upgrade,
//! the reference's error answers, CORS, and the tower service and layer.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame as BodyFrame, SizeHint};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use super::coalesce::Coalesce;
use super::config::{CorsOrigins, SessionGuard};
use super::reply::{ErrorCode, Reply, into_response};
use super::session::{RequestInfo, TransportKind};
use super::{Engine, EngineHandler, Session, polling, websocket};
use crate::protocol::engine::Frame;
use crate::protocol::sid::Sid;

/// The peer address of a connection, inserted by the server into request
/// extensions so that handshakes can report it (see the examples).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr(pub std::net::SocketAddr);

struct Query<'a> {
    eio: Option<&'a str>,
    transport: Option<&'a str>,
    sid: Option<&'a str>,
}

fn parse_query(query: &str) -> Query<'_> {
    let mut q = Query {
        eio: None,
        transport: None,
        sid: None,
    };
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "EIO" => q.eio = Some(v),
            "transport" => q.transport = Some(v),
            "sid" => q.sid = Some(v),
            _ => {}
        }
    }
    q
}

fn is_websocket_upgrade<B>(req: &Request<B>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    req.method() == Method::GET
        && has(header::UPGRADE, "websocket")
        && has(header::CONNECTION, "upgrade")
}

impl<H: EngineHandler> Engine<H> {
    /// Whether this request is for the engine (its path starts with the
    /// configured prefix).
    pub fn matches<B>(&self, req: &Request<B>) -> bool {
        let prefix = &self.shared.config.path;
        let path = req.uri().path();
        path.starts_with(prefix.as_str()) || path == prefix.trim_end_matches('/')
    }

    /// Handles one request for the engine.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let origin = req.headers().get(header::ORIGIN).cloned();
        let preflight = req.method() == Method::OPTIONS && self.shared.config.cors.is_some();
        let mut response = if preflight {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
            );
            if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
                h.append(
                    header::VARY,
                    HeaderValue::from_static("Access-Control-Request-Headers"),
                );
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
            r
        } else {
            self.route(req).await
        };
        self.add_cors(origin.as_ref(), response.headers_mut());
        response
    }

    fn add_cors(&self, origin: Option<&HeaderValue>, h: &mut http::HeaderMap) {
        let Some(cors) = &self.shared.config.cors else {
            return;
        };
        let allowed = match (&cors.origins, origin) {
            (CorsOrigins::Any, _) if !cors.credentials => Some(HeaderValue::from_static("*")),
            (CorsOrigins::Any, Some(o)) => Some(o.clone()),
            (CorsOrigins::List(list), Some(o)) => o
                .to_str()
                .ok()
                .filter(|o| list.iter().any(|l| l == o))
                .map(|_| o.clone()),
            _ => None,
        };
        if !matches!((&cors.origins, cors.credentials), (CorsOrigins::Any, false)) {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if let Some(value) = allowed {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            if cors.credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
        }
    }

    async fn route<B>(&self, mut req: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let cfg = &self.shared.config;
        let query = req.uri().query().unwrap_or("").to_owned();
        let q = parse_query(&query);
        let transport = match q.transport {
            Some("polling") if cfg.polling => TransportKind::Polling,
            Some("websocket") if cfg.websocket => TransportKind::WebSocket,
            _ => return into_response(Reply::error(ErrorCode::UnknownTransport, None)),
        };
        let upgrade = is_websocket_upgrade(&req);

        if let Some(sid) = q.sid {
            let session = sid.parse::<Sid>().ok().and_then(|s| self.shared.get(s));
            let Some(session) = session.filter(|s| !s.expire_if_overdue()) else {
                return into_response(Reply::error(ErrorCode::UnknownSid, None));
            };
            if transport == TransportKind::WebSocket {
                if !upgrade || !cfg.allow_upgrades {
                    return into_response(Reply::error(ErrorCode::BadRequest, None));
                }
                return self.accept_websocket(&mut req, Ok(session));
            }
            if session.transport() != TransportKind::Polling {
                return into_response(Reply::error(ErrorCode::BadRequest, None));
            }
            let reply = match *req.method() {
                Method::GET => polling::get(session).await,
                Method::POST => polling::post(session, req.into_body()).await,
                _ => Reply::empty(StatusCode::INTERNAL_SERVER_ERROR),
            };
            return into_response(reply);
        }

        if req.method() != Method::GET {
            return into_response(Reply::error(ErrorCode::BadHandshakeMethod, None));
        }
        if transport == TransportKind::WebSocket && !upgrade {
            return into_response(Reply::error(ErrorCode::BadRequest, None));
        }
        if q.eio != Some("4") {
            return into_response(Reply::error(ErrorCode::UnsupportedProtocolVersion, None));
        }
        let mut guard = None;
        if let Some(allow) = &cfg.allow_request {
            let (parts, body) = req.into_parts();
            match allow(&parts) {
                Ok(g) => guard = g,
                Err(refusal) => {
                    return into_response(Reply::error(
                        ErrorCode::Forbidden,
                        Some(&refusal.message),
                    ));
                }
            }
            req = Request::from_parts(parts, body);
        }
        if transport == TransportKind::WebSocket {
            return self.accept_websocket(&mut req, Err(guard));
        }
        let session = self.open(TransportKind::Polling, request_info(&req), guard);
        let (frames, _) = session.drain();
        into_response(Reply::payload(crate::protocol::engine::encode_payload(
            &frames,
        )))
    }

    /// Opens a session: registers it, queues the open packet, starts the
    /// heartbeat and tells the handler. The session holds `guard` until it
    /// closes.
    fn open(
        &self,
        transport: TransportKind,
        info: RequestInfo,
        guard: Option<SessionGuard>,
    ) -> Arc<Session<H>> {
        let session = Session::new(Arc::clone(&self.shared), transport, info, guard);
        let upgrades = transport == TransportKind::Polling
            && self.shared.config.allow_upgrades
            && self.shared.config.websocket;
        let _ = session.send(Frame::Text(session.open_packet(upgrades)));
        self.shared.insert(Arc::clone(&session));
        if transport == TransportKind::Polling {
            tokio::spawn(Arc::clone(&session).heartbeat());
        }
        self.shared.handler.on_open(&session);
        session
    }

    /// Upgrades to WebSocket: `Ok` the polling session that upgrades, or
    /// `Err` the guard of a new session opened on the WebSocket.
    fn accept_websocket<B>(
        &self,
        req: &mut Request<B>,
        existing: Result<Arc<Session<H>>, Option<SessionGuard>>,
    ) -> Response<Full<Bytes>> {
        let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
        let version_ok = req
            .headers()
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13");
        let Some(key) = key.filter(|_| version_ok) else {
            return into_response(Reply::error(ErrorCode::BadRequest, None));
        };
        let on_upgrade = hyper::upgrade::on(&mut *req);
        let info = request_info(req);
        let engine = self.clone();
        let max_payload = self.shared.config.max_payload;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            let ws = tokio_websockets::ServerBuilder::new()
                .limits(tokio_websockets::Limits::default().max_payload_len(Some(max_payload)))
                // The transport flushes after each batch; `Coalesce` turns
                // the batch into one write.
                .config(tokio_websockets::Config::default().flush_threshold(64 * 1024))
                .serve(Coalesce::new(TokioIo::new(upgraded)));
            // The connection's long-lived task holds only `run`: the state
            // of this handshake task (request info, upgrade future) is freed.
            match existing {
                Ok(session) => tokio::spawn(websocket::run(session, ws, true)),
                Err(guard) => {
                    let session = engine.open(TransportKind::WebSocket, info, guard);
                    tokio::spawn(websocket::run(session, ws, false))
                }
            };
        });
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept_key(key.as_bytes()));
        r
    }
}

fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let digest = base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes());
    HeaderValue::from_str(&digest).expect("base64 is a valid header value")
}

fn request_info<B>(req: &Request<B>) -> RequestInfo {
    RequestInfo::new(
        req.headers(),
        req.uri(),
        req.extensions().get::<RemoteAddr>().map(|a| a.0),
    )
}

/// The body of a response from [`EngineService`]: the engine's own, or the
/// inner service's.
pub enum ResponseBody<B> {
    /// An answer from the engine.
    Engine(Full<Bytes>),
    /// An answer from the inner service.
    Inner(B),
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ResponseBody::Engine(full) => match Pin::new(full).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(Ok(f))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            ResponseBody::Inner(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Engine(f) => f.is_end_stream(),
            ResponseBody::Inner(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Engine(f) => f.size_hint(),
            ResponseBody::Inner(b) => b.size_hint(),
        }
    }
}

/// Something that answers engine requests: an [`Engine`], or the Socket.IO
/// server built on one.
pub trait EngineEndpoint: Clone + Send + Sync + 'static {
    /// Whether this request is for the endpoint.
    fn matches<B>(&self, req: &Request<B>) -> bool;
    /// Answers the request.
    fn call<B>(&self, req: Request<B>) -> impl Future<Output = Response<Full<Bytes>>> + Send
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>;
}

impl<H: EngineHandler> EngineEndpoint for Engine<H> {
    fn matches<B>(&self, req: &Request<B>) -> bool {
        Engine::matches(self, req)
    }
    fn call<B>(&self, req: Request<B>) -> impl Future<Output = Response<Full<Bytes>>> + Send
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let engine = self.clone();
        async move { engine.handle(req).await }
    }
}

/// A tower service answering engine requests and passing the others to
/// `inner`.
#[derive(Clone)]
pub struct EngineService<E, S> {
    endpoint: E,
    inner: S,
}

impl<E, S> EngineService<E, S> {
    /// Wraps `inner`.
    pub fn new(endpoint: E, inner: S) -> Self {
        EngineService { endpoint, inner }
    }
}

/// A future answering one request in [`EngineService`].
pub type ServiceFuture<T, Err> = Pin<Box<dyn Future<Output = Result<T, Err>> + Send>>;

impl<E, S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for EngineService<E, S>
where
    E: EngineEndpoint,
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    ResBody: Body<Data = Bytes> + Unpin + Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ServiceFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if self.endpoint.matches(&req) {
            let endpoint = self.endpoint.clone();
            Box::pin(async move { Ok(endpoint.call(req).await.map(ResponseBody::Engine)) })
        } else {
            let fut = self.inner.call(req);
            Box::pin(async move { Ok(fut.await?.map(ResponseBody::Inner)) })
        }
    }
}

/// A tower layer mounting an engine (or a Socket.IO server) in front of a
/// service.
#[derive(Clone)]
pub struct EngineLayer<E> {
    endpoint: E,
}

impl<E> EngineLayer<E> {
    /// A layer for this endpoint.
    pub fn new(endpoint: E) -> Self {
        EngineLayer { endpoint }
    }
}

impl<E: Clone, S> tower_layer::Layer<S> for EngineLayer<E> {
    type Service = EngineService<E, S>;
    fn layer(&self, inner: S) -> Self::Service {
        EngineService::new(self.endpoint.clone(), inner)
    }
}

/// A service answering 404 to everything: the innermost service when the
/// engine is served alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotFound;

impl<B> tower_service::Service<Request<B>> for NotFound {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        let mut r = Response::new(Full::new(Bytes::from_static(b"Not Found")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        std::future::ready(Ok(r))
    }
}
