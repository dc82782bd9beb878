#!/usr/bin/env python3
"""Soak test of the `switchboard` server (issue 14).

Starts a release `switchboard` server of its own, holds N connections over
the three protocols (Socket.IO over WebSocket, plain WebSocket JSON at `/ws`,
Server-Sent Events at `/events`) for a number of minutes with churn,
subscriptions, an even rate of acknowledged publications, paused (slow)
readers and reconnects, and records the server's memory, open files,
threads and gauges each minute. At the end it checks that no acknowledged
publication was lost: every acknowledged (channel, offset) is in the
channel's history, and every subscriber received every publication of its
channels exactly once and in order (across reconnects, by resuming, for the
channels with history).

The clients are written here on the standard library only (asyncio streams,
a small WebSocket client, an SSE reader, an HTTP/1.1 client), so the smoke
run needs nothing installed besides Python 3.11 and the server binary.

    python3 bench/soak.py --smoke                  # 300 connections, 1 minute (CI)
    python3 bench/soak.py                          # 15,000 connections, 60 minutes
    python3 bench/soak.py --minutes 5 --connections 3000 --out /tmp/soak

The full run writes bench/soak-last-run.json, docs/soak.md and
docs/soak.svg (a smoke run writes its JSON under /tmp unless --out is
given, and never the docs). The exit status is non-zero when an
acknowledged publication was lost, a delivery was missing, duplicated or
out of order, or a resume within the history window was not recovered.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
SECRET = "soak-secret-0123456789abcdef0123456789abcdef"
API_KEY = "soak-api-key-0123456789abcdef"


# ---------------------------------------------------------------- parameters


@dataclass
class Params:
    """What the run does; every rate is per second, spread evenly."""

    minutes: float
    connections: int
    smoke: bool
    shared_channels: int = 100
    live_channels: int = 50
    shared_rate: float = 40.0
    live_rate: float = 20.0
    own_rate: float = 100.0
    fire_rate: float = 10.0
    fire_payload: int = 4000
    small_payload: int = 64
    shared_history: int = 300
    own_history: int = 20
    fire_history: int = 4000
    own_every: int = 5  # one connection in 5 has a channel of its own
    live_every: int = 3  # one connection in 3 subscribes to a live channel
    slow_every: int = 100  # one connection in 100 is a paused reader
    churn_per_minute: float = 0.05
    max_queued_bytes: int = 131072
    client_ips: int = 30
    http_publishers: int = 96
    ws_publishers: int = 96
    connect_rate: float = 400.0  # connection attempts per second at start
    warmup_minutes: float = 20.0
    pause_min: float = 30.0
    pause_max: float = 120.0
    read_min: float = 30.0
    read_max: float = 90.0

    def scaled(self) -> "Params":
        """The smoke run: the same mix, small and quick."""
        if self.smoke:
            self.shared_channels = 10
            self.live_channels = 5
            self.shared_rate = 20.0
            self.live_rate = 10.0
            self.own_rate = 20.0
            self.fire_rate = 40.0
            self.fire_payload = 8000
            self.slow_every = 25
            self.churn_per_minute = 0.2
            self.http_publishers = 2
            self.ws_publishers = 2
            self.client_ips = 3
            self.warmup_minutes = 0.0
            self.pause_min = 10.0
            self.pause_max = 25.0
            self.read_min = 5.0
            self.read_max = 10.0
            self.max_queued_bytes = 32768
        return self


# ---------------------------------------------------------------- small clients


def jwt(sub: str, name: str) -> str:
    """An HS256 token the server accepts (no expiry: the run outlives any)."""

    def b64(b: bytes) -> bytes:
        return base64.urlsafe_b64encode(b).rstrip(b"=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": sub, "name": name}).encode())
    sig = b64(hmac.new(SECRET.encode(), head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


class Closed(Exception):
    """The peer closed the connection (or it broke)."""


async def open_tcp(port: int, local_ip: str, rcvbuf: int | None = None):
    """A TCP connection from `local_ip`, optionally with a small fixed
    receive buffer (paused readers: the server's queue fills sooner)."""
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.bind((local_ip, 0))
        s.setblocking(False)
        await loop.sock_connect(s, (HOST, port))
    except BaseException:
        s.close()
        raise
    return await asyncio.open_connection(sock=s, limit=1 << 16)


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """An HTTP/1.1 response's status and headers."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as e:
        raise Closed(str(e)) from e
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


class WebSocket:
    """A minimal RFC 6455 client: text frames, pings answered, close."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, path: str, local_ip: str, rcvbuf=None) -> "WebSocket":
        reader, writer = await open_tcp(port, local_ip, rcvbuf)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        status, headers = await read_head(reader)
        if status != 101:
            writer.transport.abort()
            raise Closed(f"websocket handshake answered {status}")
        return cls(reader, writer)

    def _frame(self, opcode: int, payload: bytes) -> bytes:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        if n:
            k = (mask * (n // 4 + 1))[:n]
            masked = (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")
        else:
            masked = b""
        return head + mask + masked

    def send(self, text: str) -> None:
        self.writer.write(self._frame(0x1, text.encode()))

    async def recv(self) -> str:
        """The next text message; raises Closed at the end."""
        parts = []
        try:
            while True:
                b0, b1 = await self.reader.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    (n,) = struct.unpack("!H", await self.reader.readexactly(2))
                elif n == 127:
                    (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
                payload = await self.reader.readexactly(n) if n else b""
                op = b0 & 0x0F
                if op == 0x9:
                    self.writer.write(self._frame(0xA, payload))
                    continue
                if op == 0xA:
                    continue
                if op == 0x8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    raise Closed(f"close {code} {payload[2:].decode(errors='replace')}")
                parts.append(payload)
                if b0 & 0x80:
                    return b"".join(parts).decode()
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            raise Closed(f"eof ({type(e).__name__})") from e

    def close(self, clean: bool) -> None:
        try:
            if clean:
                self.writer.write(self._frame(0x8, struct.pack("!H", 1000)))
                self.writer.close()
            else:
                self.writer.transport.abort()
        except Exception:
            pass


class Http:
    """A keep-alive HTTP/1.1 client for the API and /metrics."""

    def __init__(self, port: int, local_ip: str = HOST):
        self.port = port
        self.local_ip = local_ip
        self.conn = None

    async def request(self, method: str, path: str, body=None, api=True, timeout=30.0):
        for attempt in range(3):
            try:
                return await asyncio.wait_for(self._request(method, path, body, api), timeout)
            except (Closed, ConnectionError, OSError, asyncio.TimeoutError):
                self.close()
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2)

    async def _request(self, method, path, body, api):
        if self.conn is None:
            self.conn = await open_tcp(self.port, self.local_ip)
        reader, writer = self.conn
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(data)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        if api:
            head += f"Authorization: apikey {API_KEY}\r\n"
        writer.write(head.encode() + b"\r\n" + data)
        status, headers = await read_head(reader)
        try:
            if headers.get("transfer-encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    chunk = await reader.readexactly(size + 2)
                    if size == 0:
                        break
                    chunks.append(chunk[:-2])
                raw = b"".join(chunks)
            else:
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            raise Closed(str(e)) from e
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, raw

    def close(self):
        if self.conn is not None:
            try:
                self.conn[1].transport.abort()
            except Exception:
                pass
            self.conn = None


# ---------------------------------------------------------------- bookkeeping


@dataclass
class Counters:
    """Client-side counts (cumulative)."""

    deliveries: int = 0
    replayed: int = 0
    gaps: int = 0  # publications missing inside one subscriber's stream
    gap_events: int = 0
    duplicates: int = 0  # publications received twice or out of order
    epoch_changes: int = 0
    new_stream_epochs: int = 0  # position (0, E) at subscribe, then offset 1 in another epoch
    unrecovered: int = 0  # resumes within the window answered recovered: false
    resume_refused: int = 0  # connection closed while a resuming subscribe was answered
    reloads: int = 0  # channels subscribed afresh after two refused resumes
    reload_skipped: int = 0  # publications those reloads skipped (still in the history)
    connects: int = 0
    connect_failures: int = 0
    churn_closes: int = 0
    churn_aborts: int = 0
    slow_drops: int = 0  # paused readers the server disconnected
    slow_resumed: int = 0  # ... that resumed with recovered: true
    slow_survived: int = 0  # pauses that ended with the connection still open
    unexpected_drops: int = 0  # other disconnections not asked for
    published: int = 0
    publish_failures: int = 0
    history_checked: int = 0
    history_missing: int = 0  # acknowledged (channel, offset) absent from history
    history_mismatch: int = 0  # present with other data
    history_evicted_unchecked: int = 0
    ack_conflicts: int = 0  # two acks naming the same (channel, offset)
    drop_reasons: dict = field(default_factory=dict)


class Track:
    """One subscriber's position in one channel."""

    __slots__ = ("epoch", "last", "count")

    def __init__(self):
        self.epoch = None
        self.last = None  # last offset received (or the subscribe position)
        self.count = 0


class Ledger:
    """Every acknowledged publication, by channel."""

    def __init__(self):
        self.acked: dict[str, dict[int, str]] = {}
        self.epoch: dict[str, str] = {}
        self.verified: dict[str, int] = {}  # offsets <= this were checked in history
        self.conflicts: list[str] = []
        self.epochs_seen: dict[str, int] = {}

    def record(self, c: Counters, channel: str, offset: int, epoch: str, key: str) -> None:
        if self.epoch.get(channel, epoch) != epoch:
            # A new stream (a channel without history forgotten while nobody
            # was subscribed starts again at offset 1 in a new epoch).
            self.epochs_seen[channel] = self.epochs_seen.get(channel, 1) + 1
            if not channel.startswith("live:"):
                c.epoch_changes += 1
            self.acked[channel] = {}
            self.verified.pop(channel, None)
        self.epoch[channel] = epoch
        offsets = self.acked.setdefault(channel, {})
        if offset in offsets:
            c.ack_conflicts += 1
            self.conflicts.append(f"{channel}#{offset}: {offsets[offset]} and {key}")
        offsets[offset] = key
        c.published += 1

    def max_offset(self, channel: str) -> int:
        o = self.acked.get(channel)
        return max(o) if o else 0


# ---------------------------------------------------------------- the run


class Soak:
    def __init__(self, p: Params, port: int, server_pid: int):
        self.p = p
        self.port = port
        self.server_pid = server_pid
        self.c = Counters()
        self.ledger = Ledger()
        self.clients: list[Client] = []
        self.stopping = False
        self.publishing = True
        self.backlog = 0
        self.samples: list[dict] = []
        self.ips = [f"127.0.0.{2 + i}" for i in range(p.client_ips)]
        self.t0 = time.monotonic()
        self.pub_seq = 0
        self.history_channels = (
            [f"shared:s{i}" for i in range(p.shared_channels)]
            + ["fire:all"]
            + [f"own:c{i}" for i in range(p.connections) if i % p.own_every == 0]
        )
        self.history_size = {"shared": p.shared_history, "own": p.own_history, "fire": p.fire_history}
        self.own_rotation = 0

    # -- publishing ------------------------------------------------------

    def payload(self, channel: str) -> tuple[str, dict]:
        self.pub_seq += 1
        key = f"p{self.pub_seq}"
        n = self.p.fire_payload if channel.startswith("fire:") else self.p.small_payload
        return key, {"k": key, "t": int(time.time() * 1000), "pad": "x" * n}

    async def pacer(self, queue: asyncio.Queue, rate: float, channels: list[str]) -> None:
        """Puts publications on the queue at an even rate, round robin."""
        start = time.monotonic()
        issued = 0
        while self.publishing:
            due = int((time.monotonic() - start) * rate)
            while issued < due and self.publishing:
                queue.put_nowait(channels[issued % len(channels)])
                self.backlog += 1
                issued += 1
            await asyncio.sleep(0.01)

    async def http_publisher(self, queue: asyncio.Queue, n: int) -> None:
        http = Http(self.port, self.ips[n % len(self.ips)])
        while True:
            channel = await queue.get()
            self.backlog -= 1
            key, data = self.payload(channel)
            body = {"channel": channel, "data": data}
            if n % 2 == 0:
                body["idempotency_key"] = key
            try:
                status, raw = await http.request("POST", "/api/publish", body)
                if status != 200:
                    raise Closed(f"publish {status} {raw[:200]!r}")
                a = json.loads(raw)
                self.ledger.record(self.c, a["channel"], a["offset"], a["epoch"], key)
            except Exception as e:  # noqa: BLE001 - counted, the run goes on
                self.c.publish_failures += 1
                self.note(f"http publish failed: {e}")
            queue.task_done()

    async def ws_publisher(self, queue: asyncio.Queue, n: int) -> None:
        token = jwt(f"publisher{n}", f"Publisher {n}")
        ws = None
        seq = 0
        while True:
            channel = await queue.get()
            self.backlog -= 1
            key, data = self.payload(channel)
            for attempt in range(2):
                try:
                    if ws is None:
                        ws = await WebSocket.connect(self.port, "/ws", self.ips[n % len(self.ips)])
                        ws.send(json.dumps({"type": "auth", "payload": {"token": token}, "id": "a"}))
                        m = json.loads(await asyncio.wait_for(ws.recv(), 30))
                        if m.get("type") != "ack":
                            raise Closed(f"auth answered {m}")
                    seq += 1
                    rid = f"r{seq}"
                    ws.send(json.dumps({"type": "message", "payload": {"channel": channel, "data": data}, "id": rid}))
                    while True:
                        m = json.loads(await asyncio.wait_for(ws.recv(), 30))
                        if m.get("id") == rid:
                            break
                    if m.get("type") != "ack":
                        raise Closed(f"publish answered {m}")
                    a = m["payload"]
                    self.ledger.record(self.c, a["channel"], a["offset"], a["epoch"], key)
                    break
                except Exception as e:  # noqa: BLE001
                    if ws is not None:
                        ws.close(False)
                    ws = None
                    if attempt == 1:
                        self.c.publish_failures += 1
                        self.note(f"ws publish failed: {e}")
            queue.task_done()

    # -- verification ----------------------------------------------------

    def note(self, msg: str) -> None:
        self.notes = getattr(self, "notes", [])
        if len(self.notes) < 200:
            self.notes.append(f"[{time.monotonic() - self.t0:7.1f}s] {msg}")

    async def check_history(self, http: Http, channels: list[str], final: bool = False) -> None:
        """Every acknowledged offset of these channels, acknowledged before
        the request, must be in the channel's history with its data."""
        for channel in channels:
            acked = self.ledger.acked.get(channel)
            if not acked:
                continue
            done = self.ledger.verified.get(channel, 0)
            todo = sorted(o for o in list(acked) if o > done)
            if not todo:
                continue
            ns = channel.split(":")[0]
            status, raw = await http.request(
                "GET", f"/api/history?channel={channel}&limit={min(1000, self.history_size[ns])}"
            )
            if status != 200:
                self.note(f"history {channel}: {status} {raw[:200]!r}")
                continue
            h = json.loads(raw)
            got = {p["offset"]: p["data"].get("k") if isinstance(p["data"], dict) else None for p in h["publications"]}
            low = min(got) if got else h["offset"] + 1
            for o in todo:
                if o < low:
                    self.c.history_evicted_unchecked += 1
                elif o not in got:
                    self.c.history_missing += 1
                    self.note(f"acknowledged {channel}#{o} missing from history")
                elif got[o] != acked[o]:
                    self.c.history_mismatch += 1
                    self.note(f"{channel}#{o} holds {got[o]} instead of {acked[o]}")
                else:
                    self.c.history_checked += 1
            self.ledger.verified[channel] = todo[-1]
            if h["epoch"] != self.ledger.epoch.get(channel, h["epoch"]):
                self.note(f"{channel}: epoch changed to {h['epoch']}")
                self.c.epoch_changes += 1

    async def history_checker(self) -> None:
        """Each minute: the shared and fire channels, and a fifth of the
        per-connection channels (each within its history window)."""
        http = Http(self.port)
        fixed = [c for c in self.history_channels if not c.startswith("own:")]
        own = [c for c in self.history_channels if c.startswith("own:")]
        while not self.stopping:
            await asyncio.sleep(60 if not self.p.smoke else 15)
            if self.stopping:
                break
            parts = 1 if self.p.smoke else 5
            k = len(own) // parts + 1
            part = own[self.own_rotation * k : (self.own_rotation + 1) * k]
            self.own_rotation = (self.own_rotation + 1) % parts
            try:
                await self.check_history(http, fixed + part)
            except Exception as e:  # noqa: BLE001
                self.note(f"history check failed: {e}")

    # -- sampling --------------------------------------------------------

    def proc(self, pid: int) -> dict:
        out = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "RssAnon", "Threads"):
                    out[k] = int(v.split()[0])
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        out["cpu_s"] = (int(fields[11]) + int(fields[12])) / tick
        return out

    async def metrics(self, http: Http) -> dict:
        status, raw = await http.request("GET", "/metrics", api=False)
        m: dict = {}
        for line in raw.decode().splitlines():
            if not line or line.startswith("#"):
                continue
            name, _, value = line.rpartition(" ")
            try:
                m[name] = float(value)
            except ValueError:
                pass
        return m

    async def sample(self, http: Http, minute: float) -> dict:
        s = self.proc(self.server_pid)
        me = self.proc(os.getpid())
        m = await self.metrics(http)

        def total(prefix: str) -> float:
            return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))

        by_proto = {"socketio": 0, "ws": 0, "sse": 0}
        for k, v in m.items():
            r = re.match(r'switchboard_connections\{protocol="(\w+)"', k)
            if r:
                by_proto[r.group(1)] = by_proto.get(r.group(1), 0) + int(v)
        connected = {"sio": 0, "ws": 0, "sse": 0}
        paused = 0
        for cl in self.clients:
            if cl.connected:
                connected[cl.proto] += 1
            if cl.paused:
                paused += 1
        c = self.c
        row = {
            "minute": round(minute, 2),
            "rss_kib": s["VmRSS"],
            "rss_anon_kib": s.get("RssAnon"),
            "hwm_kib": s["VmHWM"],
            "open_files": s["fds"],
            "threads": s["Threads"],
            "server_cpu_s": round(s["cpu_s"], 1),
            "loadgen_rss_kib": me["VmRSS"],
            "loadgen_cpu_s": round(me["cpu_s"], 1),
            "server_connections": by_proto,
            "server_subscriptions": int(m.get("switchboard_subscriptions", 0)),
            "server_channels": int(m.get("switchboard_channels", 0)),
            "server_publications": int(m.get("switchboard_publications_total", 0)),
            "server_messages_out": int(total("switchboard_messages_out_total")),
            "server_bytes_out": int(total("switchboard_bytes_out_total")),
            "server_slow_consumer_disconnects": int(total("switchboard_slow_consumer_disconnects_total")),
            "server_refusals": int(total("switchboard_refusals_total")),
            "client_connected": connected,
            "client_paused": paused,
            "published": c.published,
            "publish_failures": c.publish_failures,
            "publish_backlog": self.backlog,
            "deliveries": c.deliveries,
            "replayed": c.replayed,
            "connects": c.connects,
            "churn": c.churn_closes + c.churn_aborts,
            "slow_drops": c.slow_drops,
            "unexpected_drops": c.unexpected_drops,
            "gaps": c.gaps,
            "duplicates": c.duplicates,
            "unrecovered": c.unrecovered,
            "history_missing": c.history_missing,
        }
        self.samples.append(row)
        try:
            with open(os.path.join(tempfile.gettempdir(), f"soak-progress-{os.getpid()}.json"), "w") as f:
                json.dump({"samples": self.samples, "counters": vars(self.c)}, f)
        except OSError:
            pass
        return row

    async def sampler(self) -> None:
        http = Http(self.port)
        period = 60.0 if not self.p.smoke else 10.0
        nxt = self.t_load + period
        while not self.stopping:
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            if self.stopping:
                break
            nxt += period
            try:
                row = await self.sample(http, (time.monotonic() - self.t_load) / 60)
                cc = row["client_connected"]
                print(
                    f"  min {row['minute']:6.2f}: rss {row['rss_kib'] / 1024:7.1f} MiB, fds {row['open_files']},"
                    f" threads {row['threads']}, conns {sum(row['server_connections'].values())}"
                    f" (clients sio {cc['sio']} ws {cc['ws']} sse {cc['sse']}, paused {row['client_paused']}),"
                    f" published {row['published']} (backlog {row['publish_backlog']}), deliveries {row['deliveries']},"
                    f" slow drops {row['slow_drops']}, gaps {row['gaps']}, dups {row['duplicates']},"
                    f" unrecovered {row['unrecovered']}, hist missing {row['history_missing']}",
                    flush=True,
                )
            except Exception as e:  # noqa: BLE001
                self.note(f"sample failed: {e}")

    # -- churn -----------------------------------------------------------

    async def churner(self) -> None:
        """Disconnects 5% of the connections a minute, evenly: half closed
        cleanly, half dropped (TCP reset); each reconnects and resumes."""
        per_second = self.p.connections * self.p.churn_per_minute / 60.0
        if per_second <= 0:
            return
        start = time.monotonic()
        done = 0
        rng = random.Random(7)
        while not self.stopping:
            await asyncio.sleep(0.05)
            due = int((time.monotonic() - start) * per_second)
            while done < due and not self.stopping:
                done += 1
                for _ in range(20):
                    cl = rng.choice(self.clients)
                    if cl.connected and not cl.slow and not cl.churn_requested:
                        cl.churn(clean=rng.random() < 0.5)
                        break

    # -- the whole run ----------------------------------------------------

    async def run(self) -> int:
        p = self.p
        http = Http(self.port)
        # Seed every channel once, so every channel has an epoch and the
        # first SSE streams can name their position.
        shared = [f"shared:s{i}" for i in range(p.shared_channels)]
        live = [f"live:l{i}" for i in range(p.live_channels)]
        own = [f"own:c{i}" for i in range(p.connections) if i % p.own_every == 0]
        fire = ["fire:all"]
        seed = Http(self.port)
        sem = asyncio.Semaphore(8)

        async def seed_one(ch):
            async with sem:
                h = Http(self.port)
                key, data = self.payload(ch)
                st, raw = await h.request("POST", "/api/publish", {"channel": ch, "data": data})
                h.close()
                if st != 200:
                    raise RuntimeError(f"seeding {ch}: {st} {raw!r}")
                a = json.loads(raw)
                self.ledger.record(self.c, a["channel"], a["offset"], a["epoch"], key)

        t = time.monotonic()
        await asyncio.gather(*(seed_one(ch) for ch in shared + own + fire))
        seed.close()
        print(f"seeded {len(shared + own + fire)} channels in {time.monotonic() - t:.1f}s", flush=True)

        # Connect the clients at an even rate.
        t = time.monotonic()
        for i in range(p.connections):
            self.clients.append(Client(self, i))
        tasks = []
        for n, cl in enumerate(self.clients):
            tasks.append(asyncio.create_task(cl.run()))
            await asyncio.sleep(max(0.0, t + (n + 1) / p.connect_rate - time.monotonic()))
        deadline = time.monotonic() + 120
        while sum(cl.connected for cl in self.clients) < p.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        up = sum(cl.connected for cl in self.clients)
        print(f"{up}/{p.connections} connected in {time.monotonic() - t:.1f}s", flush=True)

        # Load: publications, churn, pauses, samples.
        self.t_load = time.monotonic()
        queue_http: asyncio.Queue = asyncio.Queue()
        queue_ws: asyncio.Queue = asyncio.Queue()
        workers = [asyncio.create_task(self.http_publisher(queue_http, n)) for n in range(p.http_publishers)]
        workers += [asyncio.create_task(self.ws_publisher(queue_ws, n)) for n in range(p.ws_publishers)]
        pacers = []
        for rate, chans in ((p.shared_rate, shared), (p.live_rate, live), (p.own_rate, own), (p.fire_rate, fire)):
            # Half of each stream through the HTTP API, half through /ws.
            pacers.append(asyncio.create_task(self.pacer(queue_http, rate / 2, chans)))
            pacers.append(asyncio.create_task(self.pacer(queue_ws, rate / 2, chans[len(chans) // 2 :] + chans[: len(chans) // 2])))
        background = [
            asyncio.create_task(self.sampler()),
            asyncio.create_task(self.churner()),
            asyncio.create_task(self.history_checker()),
        ]
        await self.sample(http, 0.0)
        await asyncio.sleep(max(0.0, self.t_load + p.minutes * 60 - time.monotonic()))

        # End: no more churn or pauses; everyone reconnects and reads.
        print("stopping churn and pauses; waiting for every client to be connected and reading", flush=True)
        self.stopping = True
        for b in background:
            b.cancel()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if all(cl.connected and not cl.paused for cl in self.clients):
                break
            await asyncio.sleep(0.5)
        # Publications go on for a few seconds over the settled clients, then stop.
        await asyncio.sleep(3)
        self.publishing = False
        for pc in pacers:
            await pc
        await queue_http.join()
        await queue_ws.join()
        for w in workers:
            w.cancel()
        final = await self.sample(http, (time.monotonic() - self.t_load) / 60)
        print("publishing stopped; waiting for the last deliveries", flush=True)

        # Every subscriber's position must reach the channel's last offset.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.behind() == 0:
                break
            await asyncio.sleep(0.5)
        tail_missing, tail_detail = self.behind(detail=True), self.behind_detail
        await self.check_history(http, self.history_channels, final=True)
        final_hist = {"history_missing": self.c.history_missing}
        self.tail_missing = tail_missing
        self.tail_detail = tail_detail
        for cl in self.clients:
            cl.stop()
        await asyncio.sleep(0.5)
        for tk in tasks:
            tk.cancel()
        http.close()
        del final, final_hist
        return 0

    def behind(self, detail: bool = False) -> int:
        """Publications some connected subscriber has not received yet."""
        n = 0
        self.behind_detail = []
        for cl in self.clients:
            if not cl.connected:
                continue
            for ch, tr in cl.tracks.items():
                if tr.last is None or tr.epoch != self.ledger.epoch.get(ch, tr.epoch):
                    continue
                top = self.ledger.max_offset(ch)
                if tr.last < top:
                    n += top - tr.last
                    if detail and len(self.behind_detail) < 20:
                        self.behind_detail.append(f"client {cl.i} ({cl.proto}) {ch}: at {tr.last}, last {top}")
        return n


class Client:
    """One connection (and its reconnections) over one protocol."""

    def __init__(self, soak: Soak, i: int):
        p = soak.p
        self.soak = soak
        self.i = i
        self.proto = ("sio", "ws", "sse")[i % 3]
        self.ip = soak.ips[i % len(soak.ips)]
        self.slow = (i // 3) % p.slow_every == 7 % p.slow_every
        chans = [f"shared:s{i % p.shared_channels}"]
        if (i // 3) % p.live_every == 0:
            chans.append(f"live:l{(i // 3) % p.live_channels}")
        if i % p.own_every == 0:
            chans.append(f"own:c{i}")
        if self.slow:
            chans.append("fire:all")
        self.channels = chans
        self.tracks: dict[str, Track] = {c: Track() for c in chans}
        self.connected = False
        self.paused = False
        self.churn_requested = False
        self.clean = True
        self.stopped = False
        self.conn = None
        self.token = jwt(f"u{i}", f"User {i}")
        self.rng = random.Random(i)
        self.errors = 0  # gaps, duplicates, unrecovered resumes on this client
        self.subscribing = None  # (channel, since) of the subscribe in flight
        self.refused: dict[str, int] = {}
        self.reload: set[str] = set()
        self.drops = 0
        self.pauses = 0

    def resumable(self, channel: str) -> bool:
        return not channel.startswith("live:")

    # -- deliveries --------------------------------------------------------

    def deliver(self, channel: str, offset: int, epoch: str, replay: bool = False) -> None:
        c = self.soak.c
        tr = self.tracks.get(channel)
        if tr is None:
            return
        if replay:
            c.replayed += 1
        else:
            c.deliveries += 1
        if tr.epoch is not None and epoch != tr.epoch and tr.last == 0 and offset == 1:
            # Subscribed to a stream not stored yet (it read as (0, the
            # process's epoch)); its first publication made it, in an
            # epoch of its own.
            c.new_stream_epochs += 1
            tr.epoch = epoch
        if tr.epoch is not None and epoch != tr.epoch:
            c.epoch_changes += 1
            self.soak.note(f"client {self.i} ({self.proto}) {channel}: epoch {tr.epoch} then {epoch} at {offset}")
            tr.epoch, tr.last = epoch, offset
            return
        tr.epoch = epoch
        if tr.last is None:
            tr.last = offset
        elif offset == tr.last + 1:
            tr.last = offset
        elif offset <= tr.last:
            c.duplicates += 1
            self.errors += 1
            self.soak.note(f"client {self.i} ({self.proto}) {channel}: got {offset} after {tr.last}")
            return
        else:
            c.gaps += offset - tr.last - 1
            c.gap_events += 1
            self.errors += 1
            self.soak.note(f"client {self.i} ({self.proto}) {channel}: gap {tr.last + 1}..{offset - 1}")
            tr.last = offset
        tr.count += 1

    def subscribed(self, channel: str, answer: dict, since: dict | None) -> None:
        """A subscribe answer: the replay (if resuming), then the position."""
        tr = self.tracks[channel]
        self.subscribing = None
        self.refused.pop(channel, None)
        rl = getattr(self, "reloading", None)
        if rl and rl[0] == channel:
            self.reloading = None
            self.soak.c.reload_skipped += max(0, answer["offset"] - rl[1])
        if since is not None and not answer.get("recovered"):
            self.soak.c.unrecovered += 1
            self.errors += 1
            self.soak.note(f"client {self.i} ({self.proto}) {channel}: not recovered from {since}: {answer.get('offset')}")
            tr.last = None
        if since is None or not answer.get("recovered"):
            tr.epoch = answer["epoch"]
            tr.last = answer["offset"]
            return
        for pub in answer.get("publications", []):
            self.deliver(channel, pub["offset"], answer["epoch"], replay=True)
        if tr.last is not None and tr.last < answer["offset"]:
            # The answer's position is past the replay: publications missing.
            self.soak.c.gaps += answer["offset"] - tr.last
            self.soak.c.gap_events += 1
            self.errors += 1
            self.soak.note(f"client {self.i} ({self.proto}) {channel}: replay ends at {tr.last}, position {answer['offset']}")
            tr.last = answer["offset"]

    def since(self, channel: str) -> dict | None:
        tr = self.tracks[channel]
        if not self.resumable(channel) or tr.last is None:
            return None
        if channel in self.reload:
            # Two resumes of this channel were refused (the connection closed
            # before the answer): subscribe afresh, as a client would reload.
            self.reload.discard(channel)
            self.soak.c.reloads += 1
            self.reloading = (channel, tr.last)
            return None
        return {"offset": tr.last, "epoch": tr.epoch}

    # -- life --------------------------------------------------------------

    def churn(self, clean: bool) -> None:
        self.churn_requested = True
        self.clean = clean
        if clean:
            self.soak.c.churn_closes += 1
        else:
            self.soak.c.churn_aborts += 1
        if self.conn is not None:
            self.conn.close(clean)

    def stop(self) -> None:
        self.stopped = True
        if self.conn is not None:
            self.conn.close(False)

    async def run(self) -> None:
        soak = self.soak
        first = True
        while not self.stopped:
            if not first:
                await asyncio.sleep(self.rng.uniform(0.2, 2.0))
            first = False
            try:
                await asyncio.wait_for(self.open(), 60)
            except Exception as e:  # noqa: BLE001
                soak.c.connect_failures += 1
                soak.note(f"client {self.i} ({self.proto}) connect failed: {type(e).__name__} {e}")
                if self.subscribing and self.subscribing[1] is not None:
                    ch = self.subscribing[0]
                    soak.c.resume_refused += 1
                    key = f"{self.proto}: resuming subscribe closed ({e})"[:90]
                    soak.c.drop_reasons[key] = soak.c.drop_reasons.get(key, 0) + 1
                    self.refused[ch] = self.refused.get(ch, 0) + 1
                    if self.refused[ch] >= 2:
                        self.reload.add(ch)
                        self.refused.pop(ch)
                self.subscribing = None
                if self.conn is not None:
                    self.conn.close(False)
                    self.conn = None
                await asyncio.sleep(self.rng.uniform(1.0, 3.0))
                continue
            soak.c.connects += 1
            self.connected = True
            reason = await self.read_loop()
            self.connected = False
            self.paused = False
            if self.conn is not None:
                self.conn.close(False)
                self.conn = None
            if self.stopped:
                return
            if self.churn_requested:
                self.churn_requested = False
                continue
            r = re.sub(r"\d{2,}", "N", reason)[:80]
            key = f"{self.proto}{' paused reader' if self.slow else ''}: {r}"
            soak.c.drop_reasons[key] = soak.c.drop_reasons.get(key, 0) + 1
            if self.slow:
                # Paused readers are the ones the server is expected to drop.
                soak.c.slow_drops += 1
                self.drops += 1
            else:
                soak.c.unexpected_drops += 1
                soak.note(f"client {self.i} ({self.proto}) dropped: {reason}")

    async def open(self) -> None:
        if self.proto == "sse":
            self.conn = await SseConn.open(self)
        elif self.proto == "ws":
            self.conn = await WsConn.open(self)
        else:
            self.conn = await SioConn.open(self)

    async def read_loop(self) -> str:
        """Reads until the connection ends; paused readers stop reading for
        a while now and then (between two messages: a read is never
        cancelled half-way). Returns why it ended."""
        conn = self.conn
        p = self.soak.p
        next_pause = time.monotonic() + self.rng.uniform(p.read_min, p.read_max) if self.slow else None
        while True:
            if next_pause is not None and not self.soak.stopping and time.monotonic() >= next_pause:
                self.paused = True
                until = time.monotonic() + self.rng.uniform(p.pause_min, p.pause_max)
                while time.monotonic() < until and not self.soak.stopping and not self.stopped:
                    await asyncio.sleep(0.5)
                self.paused = False
                self.pauses += 1
                next_pause = time.monotonic() + self.rng.uniform(p.read_min, p.read_max)
            try:
                await conn.pump(self)
            except Closed as e:
                return str(e)
            except (ValueError, KeyError, TypeError, IndexError) as e:
                return f"bad message: {type(e).__name__} {e}"


HEAD_PARSED = [0, 0]  # publications read by their head, and by a full parse
PUBLICATION = re.compile(r'"channel":"([^"]+)","offset":(\d+),"epoch":"([^"]+)"')


def head_of(text: str) -> tuple[str, int, str] | None:
    """(channel, offset, epoch) of a publication from the start of its
    JSON without parsing the data (the paused readers' publications are
    large); None when the text is laid out otherwise."""
    m = PUBLICATION.search(text, 0, 400)
    HEAD_PARSED[0 if m else 1] += 1
    return (m.group(1), int(m.group(2)), m.group(3)) if m else None


class WsConn:
    """`/ws`: auth, subscribe (resuming), then publications."""

    def __init__(self, ws: WebSocket):
        self.ws = ws

    @classmethod
    async def open(cls, cl: Client) -> "WsConn":
        ws = await WebSocket.connect(cl.soak.port, "/ws", cl.ip, 8192 if cl.slow else None)
        self = cls(ws)
        cl.conn = self
        ws.send(json.dumps({"type": "auth", "payload": {"token": cl.token}, "id": "auth"}))
        await self.answer(cl, "auth")
        for n, ch in enumerate(cl.channels):
            since = cl.since(ch)
            payload = {"channel": ch}
            if since:
                payload["since"] = since
            cl.subscribing = (ch, since)
            ws.send(json.dumps({"type": "subscribe", "payload": payload, "id": f"s{n}"}))
            a = await self.answer(cl, f"s{n}")
            cl.subscribed(ch, a, since)
        return self

    async def answer(self, cl: Client, rid: str) -> dict:
        while True:
            m = json.loads(await self.ws.recv())
            if m.get("id") == rid:
                if m.get("type") != "ack":
                    raise Closed(f"{rid} answered {m}")
                return m["payload"]
            self.handle(cl, m)

    def handle(self, cl: Client, m: dict) -> None:
        if m.get("type") == "message":
            pl = m["payload"]
            cl.deliver(pl["channel"], pl["offset"], pl["epoch"])

    async def pump(self, cl: Client) -> None:
        text = await self.ws.recv()
        if text.startswith('{"type":"message"'):
            h = head_of(text)
            if h:
                cl.deliver(*h)
                return
        self.handle(cl, json.loads(text))

    def close(self, clean: bool) -> None:
        self.ws.close(clean)


class SioConn:
    """Socket.IO v5 over an Engine.IO v4 WebSocket (no polling)."""

    def __init__(self, ws: WebSocket):
        self.ws = ws
        self.ack = 0

    @classmethod
    async def open(cls, cl: Client) -> "SioConn":
        ws = await WebSocket.connect(
            cl.soak.port, "/socket.io/?EIO=4&transport=websocket", cl.ip, 8192 if cl.slow else None
        )
        self = cls(ws)
        cl.conn = self
        m = await ws.recv()
        if not m.startswith("0"):
            raise Closed(f"engine open answered {m[:100]}")
        ws.send("40" + json.dumps({"token": cl.token}))
        while True:
            m = await ws.recv()
            if m.startswith("40"):
                break
            if m.startswith("44"):
                raise Closed(f"connect_error {m[:200]}")
            self.handle(cl, m)
        for ch in cl.channels:
            since = cl.since(ch)
            payload = {"channel": ch}
            if since:
                payload["since"] = since
            cl.subscribing = (ch, since)
            a = await self.call(cl, "subscribe", payload)
            if "error" in a:
                raise Closed(f"subscribe {ch}: {a}")
            cl.subscribed(ch, a, since)
        return self

    async def call(self, cl: Client, event: str, arg: dict) -> dict:
        self.ack += 1
        aid = self.ack
        self.ws.send(f"42{aid}" + json.dumps([event, arg]))
        prefix = f"43{aid}["
        while True:
            m = await self.ws.recv()
            if m.startswith(prefix):
                return json.loads(m[len(prefix) - 1 :])[0]
            self.handle(cl, m)

    def handle(self, cl: Client, m: str) -> None:
        if m == "2":
            self.ws.send("3")
        elif m.startswith('42["publication"'):
            h = head_of(m)
            if h:
                cl.deliver(*h)
                return
            pl = json.loads(m[2:])[1]
            cl.deliver(pl["channel"], pl["offset"], pl["epoch"])
        elif m.startswith("41"):
            raise Closed("namespace disconnect")
        elif m.startswith("1"):
            raise Closed("engine close")

    async def pump(self, cl: Client) -> None:
        self.handle(cl, await self.ws.recv())

    def close(self, clean: bool) -> None:
        if clean:
            try:
                self.ws.send("41")
            except Exception:
                pass
        self.ws.close(clean)


class SseConn:
    """`GET /events`: one stream for all the client's channels; resumes
    with `Last-Event-ID` (positions of the channels with history)."""

    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.buf = b""
        self.raw = b""
        self.chunked = False

    @classmethod
    async def open(cls, cl: Client) -> "SseConn":
        reader, writer = await open_tcp(cl.soak.port, cl.ip, 8192 if cl.slow else None)
        self = cls(reader, writer)
        cl.conn = self
        q = "&".join(f"channel={ch}" for ch in cl.channels)
        ids = []
        self.sinces = {}
        for ch in cl.channels:
            tr = cl.tracks[ch]
            if cl.resumable(ch):
                if tr.last is None:
                    # First stream: start at the last acknowledged offset.
                    tr.epoch = cl.soak.ledger.epoch[ch]
                    tr.last = cl.soak.ledger.max_offset(ch)
                ids.append(f"{ch}~{tr.epoch}~{tr.last}")
                self.sinces[ch] = tr.last
            else:
                tr.last = None  # live: starts with the first event
        head = f"GET /events?{q} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {cl.token}\r\nAccept: text/event-stream\r\n"
        if ids:
            head += f"Last-Event-ID: {','.join(ids)}\r\n"
        writer.write((head + "\r\n").encode())
        status, headers = await read_head(reader)
        if status != 200:
            raise Closed(f"events answered {status}")
        self.chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        return self

    async def read_some(self) -> bytes:
        """The next decoded bytes of the body (chunked or not)."""
        while True:
            if not self.chunked:
                data, self.raw = self.raw, b""
                if data:
                    return data
            else:
                out = []
                while True:
                    nl = self.raw.find(b"\r\n")
                    if nl < 0:
                        break
                    size = int(self.raw[:nl].split(b";")[0] or b"0", 16)
                    if size == 0:
                        raise Closed("end of stream")
                    if len(self.raw) < nl + 2 + size + 2:
                        break
                    out.append(self.raw[nl + 2 : nl + 2 + size])
                    self.raw = self.raw[nl + 2 + size + 2 :]
                if out:
                    return b"".join(out)
            try:
                data = await self.reader.read(65536)
            except (ConnectionError, OSError) as e:
                raise Closed(f"eof ({type(e).__name__})") from e
            if not data:
                raise Closed("eof")
            self.raw += data

    def events(self, cl: Client) -> None:
        while True:
            end = self.buf.find(b"\n\n")
            if end < 0:
                return
            raw, self.buf = self.buf[:end], self.buf[end + 2 :]
            kind, data = "message", None
            for line in raw.split(b"\n"):
                if line.startswith(b"event: "):
                    kind = line[7:].decode()
                elif line.startswith(b"data: "):
                    data = line[6:]
            if data is None:
                continue
            if kind == "message":
                h = head_of(data.decode())
                if h:
                    cl.deliver(*h)
                    continue
                pl = json.loads(data)
                cl.deliver(pl["channel"], pl["offset"], pl["epoch"])
            elif kind == "unrecovered":
                pl = json.loads(data)
                cl.soak.c.unrecovered += 1
                cl.errors += 1
                cl.soak.note(f"client {cl.i} (sse) {pl['channel']}: unrecovered at {pl['offset']}")
                tr = cl.tracks[pl["channel"]]
                tr.epoch, tr.last = pl["epoch"], pl["offset"]
            elif kind == "disconnect":
                raise Closed("disconnect event")

    async def pump(self, cl: Client) -> None:
        self.buf += await self.read_some()
        self.events(cl)

    def close(self, clean: bool) -> None:
        try:
            if clean:
                self.writer.close()
            else:
                self.writer.transport.abort()
        except Exception:
            pass


# ---------------------------------------------------------------- server


def free_port() -> int:
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def server_config(p: Params, port: int, data_dir: str) -> str:
    return f"""
[server]
host = "{HOST}"
port = {port}
data_dir = "{data_dir}"

[auth]
secret = "{SECRET}"

[api]
key = "{API_KEY}"

[web]
enabled = false

[log]
level = "warn"

[limits]
max_connections = {p.connections * 2 + 1000}
max_connections_per_ip = {p.connections + 1000}
handshakes_per_second_per_ip = 0
handshake_burst = {p.connections + 1000}
messages_per_second = 1000
messages_burst = 2000
max_queued_bytes = {p.max_queued_bytes}
max_message_size = 16384

[channels.shared]
subscribe = "authenticated"
publish = "authenticated"
history_size = {p.shared_history}

[channels.live]
subscribe = "authenticated"
publish = "authenticated"

[channels.own]
subscribe = "authenticated"
publish = "authenticated"
history_size = {p.own_history}

[channels.fire]
subscribe = "authenticated"
publish = "authenticated"
history_size = {p.fire_history}
"""


def find_server(path: str | None) -> str:
    if path:
        return path
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "release", "switchboard")
    print("building the release server (cargo build --release -p switchboard-server)", flush=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "switchboard-server"], cwd=ROOT, check=True)
    return binary


async def wait_ready(port: int, proc: subprocess.Popen, log_path: str) -> None:
    http = Http(port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: {open(log_path).read()[:2000]}")
        try:
            st, _ = await http.request("GET", "/readyz", api=False, timeout=2)
            if st == 200:
                http.close()
                return
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the server did not become ready in 30 s")


# ---------------------------------------------------------------- results


def growth(samples: list[dict], minutes: float, window: float = 40.0) -> dict:
    """RSS over the last `window` minutes (or the part after warm-up)."""
    rows = [r for r in samples if r["minute"] >= minutes - window - 0.01 and r["minute"] <= minutes + 0.5]
    if len(rows) < 2:
        return {}
    first, last = rows[0]["rss_kib"], rows[-1]["rss_kib"]
    top = max(r["rss_kib"] for r in rows)
    xs = [r["minute"] for r in rows]
    ys = [r["rss_kib"] for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-9, sum((x - mx) ** 2 for x in xs))
    return {
        "from_minute": rows[0]["minute"],
        "to_minute": rows[-1]["minute"],
        "rss_first_kib": first,
        "rss_last_kib": last,
        "rss_max_kib": top,
        "growth_pct": round((last - first) / first * 100, 2),
        "peak_over_first_pct": round((top - first) / first * 100, 2),
        "slope_kib_per_min": round(slope, 1),
    }


def failures(c: Counters, tail_missing: int) -> dict:
    return {
        "history_missing": c.history_missing,
        "history_mismatch": c.history_mismatch,
        "ack_conflicts": c.ack_conflicts,
        "delivery_gaps": c.gaps,
        "duplicates_or_out_of_order": c.duplicates,
        "unrecovered_resumes": c.unrecovered,
        "epoch_changes": c.epoch_changes,
        "tail_missing": tail_missing,
    }


def svg_chart(samples: list[dict], title: str) -> str:
    """RSS (MiB, left axis) and open files (right axis) per minute."""
    w, h = 900, 420
    left, right, top, bottom = 70, 80, 40, 50
    pw, ph = w - left - right, h - top - bottom
    xs = [r["minute"] for r in samples]
    rss = [r["rss_kib"] / 1024 for r in samples]
    fds = [r["open_files"] for r in samples]
    xmax = max(xs) or 1

    def nice(v):
        for step in (1, 2, 5):
            for e in range(0, 8):
                m = step * 10**e
                if m >= v:
                    return m
        return v

    rmax = nice(max(rss) * 1.15)
    fmax = nice(max(fds) * 1.15)

    def X(x):
        return left + pw * x / xmax

    def Y(v, vmax):
        return top + ph - ph * v / vmax

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>',
    ]
    for k in range(6):
        v = rmax * k / 5
        y = Y(v, rmax)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#1f77b4">{v:g}</text>')
        out.append(f'<text x="{left + pw + 6}" y="{y + 4:.1f}" fill="#d62728">{fmax * k / 5:g}</text>')
    step = 10 if xmax > 30 else (1 if xmax <= 5 else 5)
    m = 0
    while m <= xmax + 1e-9:
        x = X(m)
        out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 5}" stroke="black"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 18}" text-anchor="middle">{m:g}</text>')
        m += step
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')
    out.append(f'<text x="{left + pw / 2}" y="{h - 10}" text-anchor="middle">minutes of load</text>')
    out.append(f'<text x="16" y="{top + ph / 2}" transform="rotate(-90 16 {top + ph / 2})" text-anchor="middle" fill="#1f77b4">server RSS (MiB)</text>')
    out.append(f'<text x="{w - 14}" y="{top + ph / 2}" transform="rotate(90 {w - 14} {top + ph / 2})" text-anchor="middle" fill="#d62728">open files</text>')
    for vals, vmax, color in ((rss, rmax, "#1f77b4"), (fds, fmax, "#d62728")):
        pts = " ".join(f"{X(x):.1f},{Y(v, vmax):.1f}" for x, v in zip(xs, vals))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, v in zip(xs, vals):
            out.append(f'<circle cx="{X(x):.1f}" cy="{Y(v, vmax):.1f}" r="2.5" fill="{color}"/>')
    out.append(f'<line x1="{left + 10}" y1="{top + 12}" x2="{left + 30}" y2="{top + 12}" stroke="#1f77b4" stroke-width="2"/>')
    out.append(f'<text x="{left + 35}" y="{top + 16}">server RSS</text>')
    out.append(f'<line x1="{left + 130}" y1="{top + 12}" x2="{left + 150}" y2="{top + 12}" stroke="#d62728" stroke-width="2"/>')
    out.append(f'<text x="{left + 155}" y="{top + 16}">open files</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--connections", type=int, default=15000)
    ap.add_argument("--smoke", action="store_true", help="300 connections for 1 minute (CI); non-zero exit on any loss")
    ap.add_argument("--server", help="the switchboard binary (default: build target/release/switchboard)")
    ap.add_argument("--out", help="directory for the JSON, report and chart (default: bench/ and docs/ for a full run)")
    ap.add_argument("--commit", help="the commit the server was built from (recorded in the report)")
    args = ap.parse_args()
    if args.smoke:
        args.minutes, args.connections = 1.0, 300
    p = Params(minutes=args.minutes, connections=args.connections, smoke=args.smoke).scaled()
    binary = find_server(args.server)
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="soak-")
    with open(os.path.join(tmp, "switchboard.toml"), "w") as f:
        f.write(server_config(p, port, os.path.join(tmp, "data")))
    log = open(os.path.join(tmp, "server.log"), "w")
    proc = subprocess.Popen([binary, "--config", os.path.join(tmp, "switchboard.toml")], stdout=log, stderr=log)
    started = time.time()
    try:
        asyncio.run(wait_ready(port, proc, os.path.join(tmp, "server.log")))
        soak = Soak(p, port, proc.pid)
        code = asyncio.run(soak.run())
    finally:
        alive = proc.poll() is None
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    if not alive:
        print(f"the server died during the run (exit {proc.returncode}); log: {tmp}/server.log")
        return 2
    c = soak.c
    fails = failures(c, soak.tail_missing)
    lost = sum(fails.values())
    slow = [cl for cl in soak.clients if cl.slow]
    slow_dropped = [cl for cl in slow if cl.drops]
    result = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "commit": args.commit,
        "server": binary,
        "params": {k: v for k, v in vars(p).items()},
        "samples": soak.samples,
        "rss_last_40_min": growth(soak.samples, p.minutes),
        "failures": fails,
        "lost_acknowledged": lost,
        "counters": vars(c),
        "slow_readers": {
            "clients": len(slow),
            "pauses": sum(cl.pauses for cl in slow),
            "drops": sum(cl.drops for cl in slow),
            "clients_dropped": len(slow_dropped),
            "dropped_clients_without_error": sum(1 for cl in slow_dropped if cl.errors == 0),
        },
        "acked_by_namespace": {
            ns: sum(len(v) for k, v in soak.ledger.acked.items() if k.startswith(ns + ":"))
            for ns in ("shared", "live", "own", "fire")
        },
        "tail_detail": soak.tail_detail,
        "ack_conflicts": soak.ledger.conflicts[:50],
        "notes": getattr(soak, "notes", []),
    }
    out = args.out
    if out is None and not args.smoke:
        json_path = os.path.join(ROOT, "bench", "soak-last-run.json")
        md_path = os.path.join(ROOT, "docs", "soak.md")
        svg_path = os.path.join(ROOT, "docs", "soak.svg")
    else:
        out = out or tempfile.mkdtemp(prefix="soak-out-")
        os.makedirs(out, exist_ok=True)
        json_path, md_path, svg_path = (os.path.join(out, n) for n in ("soak-last-run.json", "soak.md", "soak.svg"))
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1)
    with open(svg_path, "w") as f:
        f.write(svg_chart(soak.samples, f"switchboard soak: {p.connections:,} connections, {p.minutes:g} minutes"))
    with open(md_path, "w") as f:
        f.write(report(result, p))
    print(f"wrote {json_path}, {md_path}, {svg_path}")
    g = result["rss_last_40_min"]
    print(f"RSS last 40 min: {g}")
    print(f"failures: {fails}")
    print(f"slow readers: {result['slow_readers']}; drop reasons: {c.drop_reasons}")
    print(f"published {c.published}, failures {c.publish_failures}, deliveries {c.deliveries}, replayed {c.replayed}")
    print(f"publications read by their head {HEAD_PARSED[0]}, parsed whole {HEAD_PARSED[1]}")
    print(f"resumes refused {c.resume_refused}, reloads {c.reloads} skipping {c.reload_skipped}; "
          f"history checked {c.history_checked}, aged out unchecked {c.history_evicted_unchecked}; "
          f"unexpected drops {c.unexpected_drops}, connect failures {c.connect_failures}")
    shutil.rmtree(tmp, ignore_errors=True)
    if lost:
        print(f"FAIL: {lost} lost, missing, duplicated or unrecovered publications")
        for n in result["notes"][:30]:
            print("  " + n)
        return 1
    if args.smoke and c.connects < p.connections:
        print("FAIL: not every client connected")
        return 1
    return code


def report(r: dict, p: Params) -> str:
    """docs/soak.md."""
    g = r["rss_last_40_min"]
    f = r["failures"]
    c = r["counters"]
    s = r["samples"]
    sr = r["slow_readers"]
    lines = [
        "# Soak run of the `switchboard` server",
        "",
        "Written by `python3 bench/soak.py` (issue 14); the minute samples are in",
        "`bench/soak-last-run.json`. Rerun: `python3 bench/soak.py` (60 minutes,",
        "15,000 connections), or `python3 bench/soak.py --smoke` (300 connections,",
        "1 minute, the CI run).",
        "",
        "![Server RSS and open files per minute](soak.svg)",
        "",
        "## Result",
        "",
        f"- started {r['started_utc']}, server built in release from commit `{r['commit'] or 'unknown'}`;",
        f"  {p.connections:,} connections for {p.minutes:g} minutes of load.",
    ]
    if g:
        lines += [
            f"- server RSS from minute {g['from_minute']:g} to {g['to_minute']:g}: "
            f"{g['rss_first_kib'] / 1024:.1f} MiB to {g['rss_last_kib'] / 1024:.1f} MiB, "
            f"**{g['growth_pct']:+.2f}%** (highest sample {g['peak_over_first_pct']:+.2f}% over the first; "
            f"least-squares slope {g['slope_kib_per_min']:+.1f} KiB/minute); the bar is 5%.",
        ]
    lines += [
        f"- **lost acknowledged publications: {r['lost_acknowledged']}** "
        f"({', '.join(f'{k} {v}' for k, v in f.items())}).",
        f"- acknowledged publications: {c['published']:,} "
        f"({', '.join(f'{k} {v:,}' for k, v in r['acked_by_namespace'].items())}); "
        f"failed publish requests: {c['publish_failures']}; "
        f"checked present in the history with their data: {c['history_checked']:,} "
        f"(aged out of the history before a check reached them: {c['history_evicted_unchecked']}).",
        f"- deliveries received live: {c['deliveries']:,}; replayed on resume: {c['replayed']:,}.",
        f"- resuming subscribes refused (the connection closed before the answer): {c['resume_refused']}; "
        f"channels then subscribed afresh after two refusals: {c['reloads']}, skipping {c['reload_skipped']:,} "
        "publications (they stay in the history; not counted as lost).",
        f"- connections opened (first connects and reconnects): {c['connects']:,}; churn: "
        f"{c['churn_closes']:,} clean closes and {c['churn_aborts']:,} TCP resets; failed connection attempts: "
        f"{c['connect_failures']}; other disconnections of ordinary clients: {c['unexpected_drops']}.",
        f"- paused readers: {sr['clients']} clients, {sr['pauses']} pauses; the server dropped them "
        f"{sr['drops']} times ({sr['clients_dropped']} clients), server-side slow-consumer disconnects "
        f"{s[-1]['server_slow_consumer_disconnects'] if s else 0}; dropped clients that resumed every "
        f"channel without a gap, duplicate or unrecovered answer: {sr['dropped_clients_without_error']} of "
        f"{sr['clients_dropped']}.",
        "",
        *(
            [
                f"- **resumes refused: {c['resume_refused']}**: a resuming subscribe whose replay is larger than",
                "  `limits.max_queued_bytes` closed the connection (1008) before its answer (see the reasons below);",
                "  after two refusals the client subscribed afresh (a reload) and skipped what it missed.",
            ]
            if c["resume_refused"]
            else []
        ),
        "",
        "Disconnections by protocol and reason (client side):",
        "",
    ]
    for k, v in sorted(c["drop_reasons"].items(), key=lambda kv: -kv[1]):
        lines.append(f"- {k}: {v}")
    lines += [
        "",
        "## Load",
        "",
        f"- {p.connections:,} clients, one connection each, a third per protocol: Socket.IO v5 over an",
        "  Engine.IO v4 WebSocket, plain WebSocket JSON at `/ws`, SSE at `/events`; from",
        f"  {p.client_ips} loopback addresses (127.0.0.2 and up), opened at {p.connect_rate:g} a second.",
        "- one Python process (asyncio, standard library only: its own WebSocket, SSE and HTTP/1.1",
        "  clients) holds every connection and checks every delivery.",
        "- channels (each namespace configured by the script; history in memory):",
        f"  - `shared:s0..s{p.shared_channels - 1}`: every client subscribes to one; history {p.shared_history};",
        f"    {p.shared_rate:g} publications/s in all, {p.small_payload} bytes of padding;",
        f"  - `live:l0..l{p.live_channels - 1}`: one client in {p.live_every} subscribes to one; no history",
        f"    (a reconnect starts afresh); {p.live_rate:g}/s;",
        f"  - `own:c<i>`: one client in {p.own_every} has a channel of its own; history {p.own_history}; {p.own_rate:g}/s in all;",
        f"  - `fire:all`: the paused readers' channel; history {p.fire_history}; {p.fire_rate:g}/s of",
        f"    {p.fire_payload} bytes.",
        f"- publications: {p.shared_rate + p.live_rate + p.own_rate + p.fire_rate:g}/s at an even rate (a pacer",
        f"  per stream, round robin over its channels), half through `POST /api/publish` ({p.http_publishers}",
        f"  keep-alive connections, half of them with an idempotency key), half through `/ws` publish",
        f"  requests ({p.ws_publishers} connections); each waits for its acknowledgement and records the",
        "  (channel, offset, key).",
        f"- churn: {p.churn_per_minute * 100:g}% of the connections a minute, spread evenly (a random ordinary",
        "  client: half close cleanly, half are reset), each reconnecting after 0.2-2 s; a client resumes",
        "  its channels with history from its last offset (`since` over Socket.IO and `/ws`, `Last-Event-ID`",
        "  over SSE) and subscribes afresh to its live channel.",
        f"- paused readers: one client in {p.slow_every} (a third per protocol) also subscribes to `fire:all`",
        f"  with an 8 KiB receive buffer, reads for {p.read_min:g}-{p.read_max:g} s, then stops reading for",
        f"  {p.pause_min:g}-{p.pause_max:g} s; the server's `limits.max_queued_bytes` is {p.max_queued_bytes:,}",
        "  (a Socket.IO client that stops reading also stops answering pings). When dropped, it reconnects",
        "  and resumes.",
        "",
        "## What is checked",
        "",
        "- every acknowledged (channel, offset) of a channel with history is in `GET /api/history` with the",
        "  key of its data: each minute for the shared and `fire` channels and a fifth of the `own` channels",
        "  (each well within its history window), and for every channel after the run;",
        "- every subscriber receives each publication of its channels once and in order: a gap, a duplicate",
        "  or an offset out of order is counted, also across reconnections for the channels with history",
        "  (the resume must answer `recovered: true` and replay exactly what was missed); live channels are",
        "  checked within each connection;",
        "- at the end churn and pauses stop, every client is connected and reading, publications go on for",
        "  3 s and stop, and every subscriber's last offset must reach its channel's last acknowledged offset",
        "  (`tail_missing` counts what is short).",
        "",
        "## Minute samples",
        "",
        "RSS, open files (`/proc/<pid>/fd`) and threads of the server process; connections, subscriptions and",
        "slow-consumer disconnects from its `/metrics`; CPU seconds are cumulative. The server does not export",
        "its queued bytes (no gauge for it in `/metrics`).",
        "",
        "| minute | RSS MiB | open files | threads | connections | subscriptions | server CPU s | published | deliveries | slow drops | gaps | dups |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in s:
        lines.append(
            f"| {row['minute']:.1f} | {row['rss_kib'] / 1024:.1f} | {row['open_files']} | {row['threads']} | "
            f"{sum(row['server_connections'].values()):,} | {row['server_subscriptions']:,} | {row['server_cpu_s']:.0f} | "
            f"{row['published']:,} | {row['deliveries']:,} | {row['slow_drops']} | {row['gaps']} | {row['duplicates']} |"
        )
    if r["notes"]:
        lines += ["", "## Notes from the run", ""]
        lines += [f"- {n}" for n in r["notes"][:40]]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
