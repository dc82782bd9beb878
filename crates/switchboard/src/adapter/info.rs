//! A socket as the cluster sees it: [`SocketInfo`] and its [`Handshake`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use super::Room;
use crate::engine::RequestInfo;
use crate::protocol::sid::Sid;
use crate::protocol::value::Value;

/// A socket as seen by [`super::Adapter::fetch_sockets`]: it may live on
/// this node or another one.
#[derive(Debug, Clone)]
pub struct SocketInfo {
    /// The socket id.
    pub id: Sid,
    /// Its namespace.
    pub nsp: String,
    /// Its rooms (its own id room included).
    pub rooms: Vec<Room>,
    /// Its data (see [`crate::Socket::set_data`]).
    pub data: serde_json::Value,
    /// Its handshake.
    pub handshake: Handshake,
}

/// The handshake of a namespace socket: the HTTP request of its connection
/// and the auth payload of its CONNECT packet. For a socket of another
/// node, what that node described.
#[derive(Debug, Clone)]
pub struct Handshake {
    source: Source,
    auth: Value,
}

#[derive(Debug, Clone)]
enum Source {
    /// A connection of this node.
    Local(Arc<RequestInfo>),
    /// A description received from another node (rare: boxed).
    Remote(Box<Remote>),
}

#[derive(Debug, Clone)]
struct Remote {
    headers: HeaderMap,
    url: String,
    address: Option<IpAddr>,
    time: SystemTime,
    xdomain: bool,
    secure: bool,
}

impl Handshake {
    pub(crate) fn new(request: Arc<RequestInfo>, auth: Value) -> Self {
        Handshake {
            source: Source::Local(request),
            auth,
        }
    }

    /// The auth object the client sent with CONNECT (`{}` when none).
    pub fn auth(&self) -> &Value {
        &self.auth
    }

    /// The request headers.
    pub fn headers(&self) -> &HeaderMap {
        match &self.source {
            Source::Local(r) => r.headers(),
            Source::Remote(r) => &r.headers,
        }
    }

    fn raw_query(&self) -> Option<&str> {
        self.url().split_once('?').map(|(_, q)| q)
    }

    /// One query parameter of the handshake URL, as written (not
    /// percent-decoded; [`Handshake::query`] decodes).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.raw_query()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }

    /// Every query parameter, in order, percent-decoded (`+` is a space),
    /// as Node's `handshake.query` holds them.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.raw_query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// Every query parameter, percent-decoded.
    pub fn query(&self) -> HashMap<String, String> {
        self.query_pairs().into_iter().collect()
    }

    /// The handshake URL (path and query).
    pub fn url(&self) -> &str {
        match &self.source {
            Source::Local(r) => r.path_and_query(),
            Source::Remote(r) => &r.url,
        }
    }

    /// The peer address, when known (for a socket of another node, its IP
    /// with port 0: the reference only describes the address).
    pub fn address(&self) -> Option<SocketAddr> {
        match &self.source {
            Source::Local(r) => r.remote_addr,
            Source::Remote(r) => r.address.map(|ip| SocketAddr::new(ip, 0)),
        }
    }

    /// When the connection was opened.
    pub fn time(&self) -> SystemTime {
        match &self.source {
            Source::Local(r) => r.time,
            Source::Remote(r) => r.time,
        }
    }

    /// When the connection was opened, in milliseconds since the epoch.
    pub fn issued(&self) -> u64 {
        self.time()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// Whether the request came from another origin (an `Origin` header).
    pub fn xdomain(&self) -> bool {
        match &self.source {
            Source::Local(r) => r.headers().contains_key(http::header::ORIGIN),
            Source::Remote(r) => r.xdomain,
        }
    }

    /// Whether the connection was encrypted, as far as this node knows
    /// (behind a TLS-terminating proxy: `x-forwarded-proto: https`).
    pub fn secure(&self) -> bool {
        match &self.source {
            Source::Local(r) => r
                .headers()
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https")),
            Source::Remote(r) => r.secure,
        }
    }

    /// The handshake in the reference server's shape, as cluster adapters
    /// send it: `{headers, time, address, xdomain, secure, issued, url,
    /// query, auth}`.
    pub fn to_json(&self) -> serde_json::Value {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.into())))
            .collect();
        let query: serde_json::Map<String, serde_json::Value> = self
            .query_pairs()
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
        serde_json::json!({
            "headers": headers,
            "time": js_date_string(self.time()),
            "address": self.address().map(|a| a.ip().to_string()),
            "xdomain": self.xdomain(),
            "secure": self.secure(),
            "issued": self.issued(),
            "url": self.url(),
            "query": query,
            "auth": serde_json::to_value(&self.auth).unwrap_or_default(),
        })
    }

    /// A handshake described by another node (the shape of
    /// [`Handshake::to_json`]); missing fields get neutral values.
    pub fn from_json(v: &serde_json::Value) -> Self {
        let mut headers = HeaderMap::new();
        if let Some(map) = v.get("headers").and_then(|h| h.as_object()) {
            for (k, val) in map {
                let text = match val {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if let (Ok(name), Ok(value)) = (
                    http::header::HeaderName::from_bytes(k.as_bytes()),
                    http::HeaderValue::from_str(&text),
                ) {
                    headers.append(name, value);
                }
            }
        }
        let issued = v.get("issued").and_then(serde_json::Value::as_u64);
        let time = issued.map_or(UNIX_EPOCH, |ms| UNIX_EPOCH + Duration::from_millis(ms));
        let address = v
            .get("address")
            .and_then(serde_json::Value::as_str)
            .and_then(|a| {
                let a = a.strip_prefix("::ffff:").unwrap_or(a);
                a.parse().ok()
            });
        Handshake {
            source: Source::Remote(Box::new(Remote {
                headers,
                url: v
                    .get("url")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                address,
                time,
                xdomain: v
                    .get("xdomain")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false),
                secure: v
                    .get("secure")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false),
            })),
            auth: v.get("auth").cloned().map(Value::from).unwrap_or_default(),
        }
    }
}

/// Percent-decodes a query component (`+` is a space); invalid escapes
/// and invalid UTF-8 are kept as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// A time as JavaScript's `Date.prototype.toString` writes it in UTC:
/// `Tue Dec 01 2026 07:03:49 GMT+0000 (Coordinated Universal Time)`.
fn js_date_string(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {:02} {} {:02}:{:02}:{:02} GMT+0000 (Coordinated Universal Time)",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_javascript_does() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_108_629);
        assert_eq!(
            js_date_string(t),
            "Tue Dec 01 2026 07:03:49 GMT+0000 (Coordinated Universal Time)"
        );
        assert_eq!(
            js_date_string(UNIX_EPOCH),
            "Thu Jan 01 1970 00:00:00 GMT+0000 (Coordinated Universal Time)"
        );
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(js_date_string(leap).starts_with("Tue Feb 29 2000"));
    }

    #[test]
    fn a_remote_description_round_trips() {
        let json = serde_json::json!({
            "headers": {"host": "a.example", "x-n": "1"},
            "time": "whatever",
            "address": "::ffff:10.0.0.7",
            "xdomain": true,
            "secure": false,
            "issued": 1_700_000_000_123u64,
            "url": "/socket.io/?EIO=4&transport=websocket&room=x",
            "query": {"EIO": "4"},
            "auth": {"token": "t"}
        });
        let h = Handshake::from_json(&json);
        assert_eq!(h.headers()["host"], "a.example");
        assert_eq!(h.query_param("room"), Some("x"));
        assert_eq!(h.address().unwrap().ip().to_string(), "10.0.0.7");
        assert!(h.xdomain());
        assert_eq!(h.issued(), 1_700_000_000_123);
        assert_eq!(h.auth().get("token").and_then(Value::as_str), Some("t"));
        let q = Handshake::from_json(&serde_json::json!({"url": "/x?a=x%20y&b=1+2&c=%zz&d=%"}));
        assert_eq!(
            q.query_pairs(),
            [("a", "x y"), ("b", "1 2"), ("c", "%zz"), ("d", "%")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let back = h.to_json();
        assert_eq!(back["url"], json["url"]);
        assert_eq!(back["issued"], json["issued"]);
        assert_eq!(back["query"]["room"], "x");
        assert_eq!(back["auth"], json["auth"]);
    }
}
