//! What a socket knows of the request that opened its connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use crate::engine::RequestInfo;
use crate::protocol::value::Value;

/// The handshake of a namespace socket: the HTTP request of its connection
/// and the auth payload of its CONNECT packet.
#[derive(Debug, Clone)]
pub struct Handshake {
    request: Arc<RequestInfo>,
    auth: Value,
}

impl Handshake {
    pub(crate) fn new(request: Arc<RequestInfo>, auth: Value) -> Self {
        Handshake { request, auth }
    }

    /// The auth object the client sent with CONNECT (`{}` when none).
    pub fn auth(&self) -> &Value {
        &self.auth
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        self.request.headers()
    }

    /// One query parameter of the handshake URL (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.request.query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    /// Every query parameter.
    pub fn query(&self) -> HashMap<String, String> {
        self.request
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    /// The handshake URL (path and query).
    pub fn url(&self) -> String {
        self.request.path_and_query().to_owned()
    }

    /// The peer address, when the server provided it.
    pub fn address(&self) -> Option<SocketAddr> {
        self.request.remote_addr
    }

    /// When the connection was opened.
    pub fn time(&self) -> SystemTime {
        self.request.time
    }

    /// When the connection was opened, in milliseconds since the epoch.
    pub fn issued(&self) -> u64 {
        self.request
            .time
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// Whether the request came from another origin (an `Origin` header).
    pub fn xdomain(&self) -> bool {
        self.request.headers().contains_key(http::header::ORIGIN)
    }
}
