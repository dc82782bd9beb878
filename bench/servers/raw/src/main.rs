//! Benchmark baseline: the machine's raw fan-out limit over WebSocket.
//!
//! Accepts plain WebSocket connections on any path (the HTTP upgrade is
//! done by hand) and keeps every socket. When any client sends a text
//! message with payload `P`, one server frame (an unmasked text frame with
//! payload `P`, encoded once) is written to every connected socket: one
//! `write` per socket per publish, in a single pass on a single thread. A
//! socket whose kernel buffer is full gets the rest queued in user space
//! (at most `RAW_MAX_PENDING` bytes, 1 MiB by default; whole frames past
//! that are dropped and counted) and flushed when it becomes writable.
//!
//! No Socket.IO, no Engine.IO: pings are answered with pongs, closes with a
//! close, and nothing else is ever sent. Listens on 127.0.0.1:$PORT
//! (default 3000), prints `listening on <port>` when ready, sets
//! TCP_NODELAY on accepted sockets, and exits on SIGTERM or SIGINT after
//! printing its counters on stderr.

use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::rc::Rc;
use std::time::Duration;

use base64::Engine as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

/// Largest request head accepted for the upgrade.
const MAX_HEAD: usize = 16 * 1024;
/// Largest incoming message.
const MAX_MESSAGE: usize = 1 << 20;
/// Size of one read.
const READ_CHUNK: usize = 64 * 1024;
/// The WebSocket handshake GUID (RFC 6455).
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A connected WebSocket.
struct Conn {
    stream: TcpStream,
    /// Bytes accepted for this socket but not yet written.
    pending: RefCell<Vec<u8>>,
    /// Wakes the socket's task when `pending` stops being empty or the
    /// socket is closed.
    wake: Notify,
    /// Position in [`Hub::conns`], while registered.
    index: Cell<usize>,
    /// Set when a write failed or a close was queued: no more deliveries.
    closed: Cell<bool>,
}

impl Conn {
    /// Writes (or queues) `frame`. Returns false if it was dropped.
    fn deliver(&self, frame: &[u8], max_pending: usize) -> bool {
        if self.closed.get() {
            return false;
        }
        let mut pending = self.pending.borrow_mut();
        if !pending.is_empty() {
            if pending.len() + frame.len() > max_pending {
                return false;
            }
            pending.extend_from_slice(frame);
            return true;
        }
        match self.stream.try_write(frame) {
            Ok(n) if n == frame.len() => return true,
            Ok(n) => pending.extend_from_slice(&frame[n..]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => pending.extend_from_slice(frame),
            Err(_) => self.closed.set(true),
        }
        self.wake.notify_one();
        !self.closed.get()
    }

    /// Queues a control frame, bypassing the bound.
    fn queue(&self, frame: &[u8]) {
        self.pending.borrow_mut().extend_from_slice(frame);
        self.wake.notify_one();
    }

    /// Writes as much of `pending` as the socket takes now.
    fn flush(&self) -> io::Result<()> {
        let mut pending = self.pending.borrow_mut();
        let mut written = 0;
        while written < pending.len() {
            match self.stream.try_write(&pending[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        pending.drain(..written);
        Ok(())
    }
}

/// Every connected socket, and the counters.
struct Hub {
    conns: RefCell<Vec<Rc<Conn>>>,
    max_pending: usize,
    publishes: Cell<u64>,
    deliveries: Cell<u64>,
    dropped: Cell<u64>,
}

impl Hub {
    fn add(&self, conn: &Rc<Conn>) {
        let mut conns = self.conns.borrow_mut();
        conn.index.set(conns.len());
        conns.push(Rc::clone(conn));
    }

    fn remove(&self, conn: &Rc<Conn>) {
        let mut conns = self.conns.borrow_mut();
        let i = conn.index.get();
        if i < conns.len() && Rc::ptr_eq(&conns[i], conn) {
            conns.swap_remove(i);
            if let Some(moved) = conns.get(i) {
                moved.index.set(i);
            }
            conn.index.set(usize::MAX);
        }
    }

    /// Sends `payload` as one text frame to every socket.
    fn publish(&self, payload: &[u8]) {
        let frame = encode_frame(0x1, payload);
        let mut delivered = 0u64;
        let mut dropped = 0u64;
        for conn in self.conns.borrow().iter() {
            if conn.deliver(&frame, self.max_pending) {
                delivered += 1;
            } else {
                dropped += 1;
            }
        }
        self.publishes.set(self.publishes.get() + 1);
        self.deliveries.set(self.deliveries.get() + delivered);
        self.dropped.set(self.dropped.get() + dropped);
    }
}

/// An unmasked server frame with FIN set.
fn encode_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut frame = Vec::with_capacity(len + 10);
    frame.push(0x80 | opcode);
    if len < 126 {
        frame.push(len as u8);
    } else if len <= u16::MAX as usize {
        frame.push(126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(payload);
    frame
}

/// One complete incoming frame.
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

/// Takes one complete client frame off the front of `buf`, unmasked.
/// `Ok(None)`: more bytes are needed.
fn parse_frame(buf: &mut Vec<u8>) -> io::Result<Option<Frame>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    if buf[1] & 0x80 == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unmasked client frame",
        ));
    }
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        126 | 127 => return Ok(None),
        n => (n as u64, 2),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message too large",
        ));
    }
    let len = len as usize;
    if buf.len() < at + 4 + len {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    let mut payload = buf[at..at + len].to_vec();
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    buf.drain(..at + len);
    Ok(Some(Frame {
        fin,
        opcode,
        payload,
    }))
}

/// Writes all of `bytes`, waiting for the socket when needed.
async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads what the socket has now into `buf`. `Ok(false)`: end of stream.
fn read_available(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match stream.try_read(&mut chunk) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if n < READ_CHUNK {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}

/// Reads the HTTP request head and answers the upgrade. Returns the bytes
/// received after the head.
async fn handshake(stream: &TcpStream) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let end = loop {
        stream.readable().await?;
        if !read_available(stream, &mut buf)? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let key = head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-key")
            .then(|| value.trim().to_owned())
    });
    let Some(key) = key else {
        let _ = write_all(
            stream,
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a WebSocket upgrade",
        ));
    };
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WS_GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
    );
    write_all(stream, response.as_bytes()).await?;
    Ok(buf.split_off(end))
}

/// Handles the frames in `buf`. `Ok(false)`: the client closed.
fn handle_frames(
    hub: &Hub,
    conn: &Conn,
    buf: &mut Vec<u8>,
    fragments: &mut Option<Vec<u8>>,
) -> io::Result<bool> {
    while let Some(frame) = parse_frame(buf)? {
        match frame.opcode {
            0x1 if frame.fin => hub.publish(&frame.payload),
            0x1 => *fragments = Some(frame.payload),
            0x0 => {
                if let Some(message) = fragments.as_mut() {
                    message.extend_from_slice(&frame.payload);
                    if message.len() > MAX_MESSAGE {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "too large"));
                    }
                    if frame.fin
                        && let Some(message) = fragments.take()
                    {
                        hub.publish(&message);
                    }
                }
            }
            0x8 => {
                let code = frame.payload.get(..2).unwrap_or(&[]);
                conn.queue(&encode_frame(0x8, code));
                return Ok(false);
            }
            0x9 => conn.queue(&encode_frame(0xA, &frame.payload)),
            // Binary messages and pongs are ignored.
            _ => {}
        }
    }
    Ok(true)
}

/// Serves one connection until it closes.
async fn connection(hub: Rc<Hub>, stream: TcpStream) {
    let Ok(mut buf) = handshake(&stream).await else {
        return;
    };
    let conn = Rc::new(Conn {
        stream,
        pending: RefCell::new(Vec::new()),
        wake: Notify::new(),
        index: Cell::new(usize::MAX),
        closed: Cell::new(false),
    });
    hub.add(&conn);
    let mut fragments = None;
    let mut open = handle_frames(&hub, &conn, &mut buf, &mut fragments).unwrap_or(false);
    while open && !conn.closed.get() {
        let want_write = !conn.pending.borrow().is_empty();
        tokio::select! {
            biased;
            r = conn.stream.writable(), if want_write => {
                open = r.is_ok() && conn.flush().is_ok();
            }
            r = conn.stream.readable() => {
                open = r.is_ok()
                    && matches!(read_available(&conn.stream, &mut buf), Ok(true))
                    && handle_frames(&hub, &conn, &mut buf, &mut fragments).unwrap_or(false);
            }
            _ = conn.wake.notified() => {}
        }
    }
    hub.remove(&conn);
    conn.closed.set(true);
    // Send what is left (a close frame, typically), for a little while.
    let rest = std::mem::take(&mut *conn.pending.borrow_mut());
    let _ = tokio::time::timeout(Duration::from_secs(1), write_all(&conn.stream, &rest)).await;
}

/// Accepts connections until the process ends.
async fn accept_loop(hub: Rc<Hub>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::task::spawn_local(connection(Rc::clone(&hub), stream));
            }
            // Out of file descriptors and the like: keep serving the others.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown() -> io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn main() -> io::Result<()> {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000u16);
    let max_pending = std::env::var("RAW_MAX_PENDING")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1usize << 20);
    let hub = Rc::new(Hub {
        conns: RefCell::new(Vec::new()),
        max_pending,
        publishes: Cell::new(0),
        deliveries: Cell::new(0),
        dropped: Cell::new(0),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        {
            let mut out = io::stdout().lock();
            writeln!(out, "listening on {}", listener.local_addr()?.port())?;
            out.flush()?;
        }
        tokio::select! {
            () = accept_loop(Rc::clone(&hub), listener) => Ok(()),
            r = shutdown() => r,
        }
    })?;
    eprintln!(
        "raw: {} connections, {} publishes, {} deliveries, {} dropped",
        hub.conns.borrow().len(),
        hub.publishes.get(),
        hub.deliveries.get(),
        hub.dropped.get()
    );
    std::process::exit(0)
}
