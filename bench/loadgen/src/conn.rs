//! Client connections: Socket.IO over WebSocket, Socket.IO over
//! long-polling, and plain WebSocket.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

use crate::stats::Stats;

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// The wire protocol of the server under test.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Proto {
    /// Engine.IO v4 / Socket.IO v5.
    Sio,
    /// Plain WebSocket: every text frame is a payload.
    Raw,
    /// The `switchboard` server's own vocabulary over Socket.IO: `subscribe`
    /// to a channel, `publish` to it, publications arrive as `publication`.
    Server,
}

impl Proto {
    /// Whether the transport is Engine.IO / Socket.IO.
    pub(crate) fn is_sio(self) -> bool {
        matches!(self, Proto::Sio | Proto::Server)
    }
}

/// The channel the `switchboard` server is benchmarked on.
pub(crate) const CHANNEL: &str = "bench:room";

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

/// A TCP connection from loopback source address `127.0.0.<2 + k>`.
pub(crate) async fn tcp(addr: SocketAddr, source: u8) -> io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2 + source), 0)))?;
    let stream = sock.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a WebSocket; for Socket.IO, also joins the main namespace.
pub(crate) async fn open(addr: SocketAddr, source: u8, proto: Proto) -> io::Result<Ws> {
    let stream = tcp(addr, source).await?;
    let path = match proto {
        Proto::Sio | Proto::Server => "/socket.io/?EIO=4&transport=websocket",
        Proto::Raw => "/",
    };
    let (mut ws, _) = ClientBuilder::new()
        .uri(&format!("ws://{addr}{path}"))
        .map_err(|e| err(e.to_string()))?
        .connect_on(stream)
        .await
        .map_err(|e| err(e.to_string()))?;
    if proto.is_sio() {
        wait_for(&mut ws, |t| t.starts_with('0')).await?;
        send(&mut ws, "40".to_owned()).await?;
        wait_for(&mut ws, |t| t.starts_with("40")).await?;
    }
    Ok(ws)
}

pub(crate) async fn send(ws: &mut Ws, text: String) -> io::Result<()> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| err(e.to_string()))
}

/// Reads until a text message matches, answering pings on the way.
pub(crate) async fn wait_for(ws: &mut Ws, pred: impl Fn(&str) -> bool) -> io::Result<String> {
    loop {
        let msg = ws
            .next()
            .await
            .ok_or_else(|| err("connection closed"))?
            .map_err(|e| err(e.to_string()))?;
        if let Some(text) = msg.as_text() {
            if text == "2" {
                send(ws, "3".to_owned()).await?;
            } else if pred(text) {
                return Ok(text.to_owned());
            }
        }
    }
}

/// Joins a room with the benchmark application's `join` event.
pub(crate) async fn join(ws: &mut Ws, proto: Proto, room: &str) -> io::Result<()> {
    let request = match proto {
        Proto::Server => format!("420[\"subscribe\",{{\"channel\":\"{CHANNEL}\"}}]"),
        _ => format!("420[\"join\",\"{room}\"]"),
    };
    send(ws, request).await?;
    wait_for(ws, |t| t.starts_with("430")).await?;
    Ok(())
}

/// The `"t":<micros>` stamp inside a payload.
pub(crate) fn stamp(text: &str) -> Option<u64> {
    let i = text.find("\"t\":")? + 4;
    let digits = text[i..].bytes().take_while(u8::is_ascii_digit).count();
    text[i..i + digits].parse().ok()
}

/// The JSON payload of a publication stamped now, `size` bytes of filler.
pub(crate) fn payload(size: usize) -> String {
    format!(
        "{{\"t\":{},\"p\":\"{}\"}}",
        crate::stats::now_us(),
        "x".repeat(size)
    )
}

/// Receives publications until the connection ends, recording latencies.
pub(crate) async fn subscribe(mut ws: Ws, proto: Proto, stats: Rc<Stats>) {
    while let Some(Ok(msg)) = ws.next().await {
        let Some(text) = msg.as_text() else { continue };
        let is_ping = proto.is_sio() && text == "2";
        if is_ping {
            if send(&mut ws, "3".to_owned()).await.is_err() {
                break;
            }
            continue;
        }
        let publication = match proto {
            Proto::Raw => true,
            Proto::Sio => text.starts_with("42[\"msg\""),
            Proto::Server => text.starts_with("42[\"publication\""),
        };
        if publication && let Some(t) = stamp(text) {
            stats.record(t);
        }
    }
    stats.disconnected.set(stats.disconnected.get() + 1);
}

/// A minimal HTTP/1.1 keep-alive client (bodies with Content-Length).
pub(crate) struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    pub(crate) async fn connect(addr: SocketAddr, source: u8) -> io::Result<Self> {
        Ok(Http {
            stream: tcp(addr, source).await?,
            buf: Vec::with_capacity(4096),
        })
    }

    pub(crate) async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> io::Result<(u16, String)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body.as_bytes()).await?;
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| err("bad status line"))?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .ok_or_else(|| err("no content-length"))?;
        while self.buf.len() < head_end + len {
            self.fill().await?;
        }
        let body = String::from_utf8_lossy(&self.buf[head_end..head_end + len]).into_owned();
        self.buf.drain(..head_end + len);
        Ok((status, body))
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(err("connection closed"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// A Socket.IO client on the long-polling transport, joined to `room`.
pub(crate) struct Poller {
    get: Http,
    post: Http,
    path: String,
}

impl Poller {
    pub(crate) async fn open(addr: SocketAddr, source: u8, room: &str) -> io::Result<Self> {
        let mut get = Http::connect(addr, source).await?;
        let post = Http::connect(addr, source).await?;
        let (_, open) = get
            .request("GET", "/socket.io/?EIO=4&transport=polling", "")
            .await?;
        let sid = open
            .split("\"sid\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .ok_or_else(|| err("no sid in handshake"))?
            .to_owned();
        let mut p = Poller {
            get,
            post,
            path: format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
        };
        p.post("40").await?;
        p.poll_until("40").await?;
        p.post(&format!("420[\"join\",\"{room}\"]")).await?;
        p.poll_until("430").await?;
        Ok(p)
    }

    async fn post(&mut self, body: &str) -> io::Result<()> {
        let (status, _) = self.post.request("POST", &self.path, body).await?;
        if status != 200 {
            return Err(err(format!("POST answered {status}")));
        }
        Ok(())
    }

    async fn poll_until(&mut self, prefix: &str) -> io::Result<()> {
        loop {
            let (status, body) = self.get.request("GET", &self.path, "").await?;
            if status != 200 {
                return Err(err(format!("GET answered {status}")));
            }
            for packet in body.split('\u{1e}') {
                if packet == "2" {
                    self.post("3").await?;
                } else if packet.starts_with(prefix) {
                    return Ok(());
                }
            }
        }
    }

    /// Polls until the session ends, recording publications.
    pub(crate) async fn receive(mut self, stats: Rc<Stats>) {
        loop {
            let Ok((200, body)) = self.get.request("GET", &self.path, "").await else {
                break;
            };
            for packet in body.split('\u{1e}') {
                if packet == "2" {
                    if self.post("3").await.is_err() {
                        stats.disconnected.set(stats.disconnected.get() + 1);
                        return;
                    }
                } else if packet.starts_with("42[\"msg\"")
                    && let Some(t) = stamp(packet)
                {
                    stats.record(t);
                }
            }
        }
        stats.disconnected.set(stats.disconnected.get() + 1);
    }
}
