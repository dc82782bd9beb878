// Client wrappers for the end-to-end tests of the `switchboard` binary:
// a plain WebSocket JSON client (npm `ws`) with request/ack by id, a
// Socket.IO client (npm `socket.io-client`) with bounded emitWithAck, and an
// SSE client (npm `eventsource`) collecting events. Also JWT signing for the
// auth tests and a background HTTP API publisher.
//
// Every wait is bounded (WAIT_MS from helpers.mjs unless told), so a broken
// server makes a test fail with a message saying what was awaited, never hang.

import assert from "node:assert/strict";
import { createHmac, createSign, randomBytes } from "node:crypto";
import WebSocket from "ws";
import { io } from "socket.io-client";
import { EventSource } from "eventsource";
import { until, sleep, startServer, API_KEY, WAIT_MS } from "./helpers.mjs";

export { WebSocket, io, EventSource };

/** startServer() of helpers.mjs (each test starts its own server). */
export function start(opts = {}) {
  return startServer(opts);
}

/**
 * Calls the HTTP API like helpers.mjs's api(), bounded, with options: `key`
 * (default the test key; null: no Authorization header), and a string
 * `body` is sent as is (for invalid JSON). Resolves to { status, body, headers }.
 */
export async function api(server, method, pathname, body, { key = API_KEY } = {}) {
  const headers = {};
  if (key !== null) headers.authorization = `apikey ${key}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await within(fetch(`${server.url}${pathname}`, {
    method,
    headers,
    body: body === undefined ? undefined : (typeof body === "string" ? body : JSON.stringify(body)),
  }), `${method} ${pathname} to answer`);
  const text = await within(res.text(), `the body of ${method} ${pathname}`);
  let parsed;
  try { parsed = JSON.parse(text); } catch { parsed = text; }
  return { status: res.status, body: parsed, headers: res.headers };
}

/** A unique suffix for channel and user names. */
export function uniq(prefix = "t") {
  return `${prefix}-${randomBytes(4).toString("hex")}`;
}

/** Rejects after `ms` with `what` unless `promise` settles first. */
export function within(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------
// JWTs
// ---------------------------------------------------------------------------

const b64url = (buf) => Buffer.from(buf).toString("base64url");

/** An HS256 JWT with these claims, signed with `secret`. */
export function signHs256(claims, secret, header = { alg: "HS256", typ: "JWT" }) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = createHmac("sha256", secret).update(input).digest();
  return `${input}.${b64url(sig)}`;
}

/** An RS256 JWT with these claims, signed with an RSA `privateKey` (KeyObject). */
export function signRs256(claims, privateKey) {
  const input = `${b64url(JSON.stringify({ alg: "RS256", typ: "JWT" }))}.${b64url(JSON.stringify(claims))}`;
  const sig = createSign("RSA-SHA256").update(input).sign(privateKey);
  return `${input}.${b64url(sig)}`;
}

export const nowSecs = () => Math.floor(Date.now() / 1000);

// ---------------------------------------------------------------------------
// Plain WebSocket JSON client
// ---------------------------------------------------------------------------

/**
 * A `/ws` client. `messages` holds every server message (parsed), in order;
 * `closed` resolves to {code, reason} when the connection closes.
 */
export class WsClient {
  constructor(ws, label) {
    this.ws = ws;
    this.label = label;
    this.messages = [];
    this.nextId = 1;
    this.pending = new Map();
    this.closeInfo = null;
    this.closed = new Promise((resolve) => {
      ws.on("close", (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        for (const { reject, timer } of this.pending.values()) {
          clearTimeout(timer);
          reject(new Error(`${label}: connection closed (${code} ${reason}) before the answer`));
        }
        this.pending.clear();
        resolve(this.closeInfo);
      });
    });
    ws.on("error", () => { /* reported through close */ });
    ws.on("message", (raw, isBinary) => {
      let msg;
      try { msg = JSON.parse(raw.toString()); } catch { msg = { type: "<unparsable>", raw: raw.toString(), isBinary }; }
      this.messages.push(msg);
      if ((msg.type === "ack" || msg.type === "error" || msg.type === "pong") && msg.id !== undefined && this.pending.has(msg.id)) {
        const p = this.pending.get(msg.id);
        this.pending.delete(msg.id);
        clearTimeout(p.timer);
        p.resolve(msg);
      }
    });
  }

  /** Opens a connection; with `token`, authenticates (and checks the ack). */
  static async connect(server, { token, label = "ws" } = {}) {
    const ws = new WebSocket(server.wsUrl);
    const client = new WsClient(ws, label);
    try {
      await within(new Promise((resolve, reject) => {
        ws.once("open", resolve);
        ws.once("error", reject);
        ws.once("unexpected-response", (_req, res) => reject(new Error(`${label}: upgrade refused with HTTP ${res.statusCode}`)));
      }), `${label} to open`);
      if (token !== undefined) {
        const reply = await client.request("auth", { token });
        assert.equal(reply.type, "ack", `${label}: auth answered ${JSON.stringify(reply)}`);
      }
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends a request with a fresh id; resolves to the answer (ack, error or pong). */
  request(type, payload, ms = WAIT_MS) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${this.label}: no answer to ${type} #${id} within ${ms} ms`));
      }, ms);
      this.pending.set(id, { resolve, reject, timer });
      const msg = { type, id, timestamp: Date.now() };
      if (payload !== undefined) msg.payload = payload;
      this.ws.send(JSON.stringify(msg), (err) => {
        if (err && this.pending.has(id)) {
          clearTimeout(timer);
          this.pending.delete(id);
          reject(err);
        }
      });
    });
  }

  /** A request that must be acked: resolves to the ack's payload. */
  async ok(type, payload, ms) {
    const reply = await this.request(type, payload, ms);
    assert.equal(reply.type, "ack", `${this.label}: ${type} ${JSON.stringify(payload)} answered ${JSON.stringify(reply)}`);
    return reply.payload;
  }

  /** A request that must fail: resolves to the error's payload {code, message}. */
  async fails(type, payload, ms) {
    const reply = await this.request(type, payload, ms);
    assert.equal(reply.type, "error", `${this.label}: ${type} ${JSON.stringify(payload)} should fail, got ${JSON.stringify(reply)}`);
    return reply.payload;
  }

  /** Sends raw text or bytes. */
  sendRaw(data, opts) {
    this.ws.send(data, opts ?? {});
  }

  /** Publications received on `channel` (their payloads), in arrival order. */
  publications(channel) {
    return this.messages.filter((m) => m.type === "message" && m.payload?.channel === channel).map((m) => m.payload);
  }

  /** join/leave signals received on `channel`. */
  signals(kind, channel) {
    return this.messages.filter((m) => m.type === kind && m.payload?.channel === channel).map((m) => m.payload);
  }

  /** Resolves to {code, reason} once closed (bounded). */
  waitClosed(ms = WAIT_MS) {
    return within(this.closed, `${this.label} to be closed by the server`, ms);
  }

  close() {
    try { this.ws.terminate(); } catch { /* gone */ }
  }
}

// ---------------------------------------------------------------------------
// Socket.IO client
// ---------------------------------------------------------------------------

/**
 * A socket.io-client socket on namespace "/": `events` holds every event
 * received [{event, args}], `disconnects` every disconnect reason.
 */
export class SioClient {
  constructor(socket, label) {
    this.socket = socket;
    this.label = label;
    this.events = [];
    this.disconnects = [];
    this.connects = 0;
    socket.onAny((event, ...args) => this.events.push({ event, args }));
    socket.on("connect", () => { this.connects++; });
    socket.on("disconnect", (reason, description) => this.disconnects.push({ reason, description }));
  }

  static options(token, opts = {}) {
    const { reconnection = false, transports, ...rest } = opts;
    return {
      forceNew: true,
      reconnection,
      timeout: WAIT_MS,
      ...(token !== undefined ? { auth: { token } } : {}),
      ...(transports ? { transports } : {}),
      ...rest,
    };
  }

  /** Connects; resolves once connected (rejects on connect_error or timeout). */
  static async connect(server, { token, label = "sio", ...opts } = {}) {
    const socket = io(server.url, SioClient.options(token, opts));
    const client = new SioClient(socket, label);
    try {
      await within(new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", (err) => reject(new Error(`${label}: connect_error ${err.message} ${JSON.stringify(err.data)}`)));
      }), `${label} to connect`);
    } catch (e) {
      socket.disconnect();
      throw e;
    }
    return client;
  }

  /** Connects expecting a refusal; resolves to the connect_error (message, data). */
  static async refused(server, { token, label = "sio", ...opts } = {}) {
    const socket = io(server.url, SioClient.options(token, opts));
    try {
      return await within(new Promise((resolve, reject) => {
        socket.once("connect", () => reject(new Error(`${label}: connected, a refusal was expected`)));
        socket.once("connect_error", resolve);
      }), `${label} connect_error`);
    } finally {
      socket.disconnect();
    }
  }

  /** emitWithAck, bounded: resolves to the ack's value. */
  ack(event, arg, ms = WAIT_MS) {
    return this.socket.timeout(ms).emitWithAck(event, arg);
  }

  /**
   * Like ack(), also resolving to how many events had arrived when the ack
   * did: {answer, mark} (events[mark...] came after the ack).
   */
  ackWithMark(event, arg, ms = WAIT_MS) {
    return new Promise((resolve, reject) => {
      this.socket.timeout(ms).emit(event, arg, (err, answer) => {
        if (err) reject(new Error(`${this.label}: no ack to ${event} within ${ms} ms (${err.message})`));
        else resolve({ answer, mark: this.events.length });
      });
    });
  }

  /** An event that must succeed (its ack has no `error`). */
  async ok(event, arg, ms) {
    const answer = await this.ack(event, arg, ms);
    assert.ok(answer && !answer.error, `${this.label}: ${event} ${JSON.stringify(arg)} answered ${JSON.stringify(answer)}`);
    return answer;
  }

  /** An event that must fail: resolves to the ack's `error` {code, message}. */
  async fails(event, arg, ms) {
    const answer = await this.ack(event, arg, ms);
    assert.ok(answer?.error, `${this.label}: ${event} ${JSON.stringify(arg)} should fail, got ${JSON.stringify(answer)}`);
    return answer.error;
  }

  publications(channel) {
    return this.events.filter((e) => e.event === "publication" && e.args[0]?.channel === channel).map((e) => e.args[0]);
  }

  signals(kind, channel) {
    return this.events.filter((e) => e.event === kind && e.args[0]?.channel === channel).map((e) => e.args[0]);
  }

  /** Resolves to the first disconnect {reason, description} (bounded). */
  waitDisconnected(ms = WAIT_MS) {
    return until(() => this.disconnects[0], `${this.label} to be disconnected`, ms);
  }

  close() {
    try { this.socket.disconnect(); } catch { /* gone */ }
  }
}

// ---------------------------------------------------------------------------
// Server-Sent Events client
// ---------------------------------------------------------------------------

const SSE_EVENTS = ["message", "join", "leave", "unrecovered", "disconnect"];

/**
 * An EventSource on `/events?channel=...`. `events` holds every event
 * {type, data (parsed JSON), id (the last event id)}; `errors` every error
 * event {code, message, readyState} (readyState 0: the stream ended and the
 * client will reconnect; 2: failed for good); `responses` the HTTP status of
 * each request the EventSource made.
 */
export class SseClient {
  constructor(server, { channels, token, via = "header", lastEventId, label = "sse", query = "" }) {
    this.label = label;
    this.events = [];
    this.errors = [];
    this.responses = [];
    this.requests = [];
    const params = new URLSearchParams();
    for (const c of channels) params.append("channel", c);
    if (token !== undefined && via === "query") params.append("token", token);
    const url = `${server.url}/events?${params}${query}`;
    const extra = {};
    if (token !== undefined && via === "header") extra.authorization = `Bearer ${token}`;
    if (token !== undefined && via === "cookie") extra.cookie = `token=${token}`;
    let first = true;
    const customFetch = async (input, init) => {
      const headers = { ...init.headers, ...extra };
      // The first request carries the given Last-Event-ID (a "reconnect");
      // later ones carry what the EventSource itself tracked.
      if (first && lastEventId !== undefined && !Object.keys(headers).some((k) => k.toLowerCase() === "last-event-id")) {
        headers["Last-Event-ID"] = lastEventId;
      }
      first = false;
      this.requests.push(headers);
      const res = await fetch(input, { ...init, headers });
      this.responses.push(res.status);
      return res;
    };
    this.es = new EventSource(url, { fetch: customFetch });
    this.opens = 0;
    this.es.addEventListener("open", () => { this.opens++; });
    for (const type of SSE_EVENTS) {
      this.es.addEventListener(type, (ev) => {
        let data;
        try { data = JSON.parse(ev.data); } catch { data = ev.data; }
        this.events.push({ type, data, id: ev.lastEventId });
      });
    }
    this.es.addEventListener("error", (ev) => {
      this.errors.push({ code: ev.code, message: ev.message, readyState: this.es.readyState });
    });
  }

  /** Opens a stream and waits until it is open (the server subscribed it). */
  static async open(server, opts) {
    const client = new SseClient(server, opts);
    try {
      await until(() => client.opens > 0 || client.errors.length > 0, `${client.label} to open`);
      if (client.opens === 0) throw new Error(`${client.label}: stream refused: ${JSON.stringify(client.errors)}`);
    } catch (e) {
      client.close();
      throw e;
    }
    return client;
  }

  /** Publications (event `message`) on `channel`, with the event id. */
  publications(channel) {
    return this.events.filter((e) => e.type === "message" && e.data?.channel === channel).map((e) => ({ ...e.data, eventId: e.id }));
  }

  signals(kind, channel) {
    return this.events.filter((e) => e.type === kind && e.data?.channel === channel).map((e) => e.data);
  }

  /** The id of the last `message` event seen. */
  get lastId() {
    const m = this.events.filter((e) => e.type === "message");
    return m.length ? m[m.length - 1].id : undefined;
  }

  /** Resolves when the stream has ended (an error event after it was open). */
  waitEnded(ms = WAIT_MS) {
    return until(() => this.errors.find((e) => e.readyState !== EventSource.OPEN), `${this.label}'s stream to end`, ms);
  }

  close() {
    try { this.es.close(); } catch { /* gone */ }
  }
}

/** GET /events answered with an error: resolves to {status, body}. */
export async function sseRefusal(server, { channels, token, via = "header" }) {
  const params = new URLSearchParams();
  for (const c of channels) params.append("channel", c);
  if (token !== undefined && via === "query") params.append("token", token);
  const headers = { accept: "text/event-stream" };
  if (token !== undefined && via === "header") headers.authorization = `Bearer ${token}`;
  if (token !== undefined && via === "cookie") headers.cookie = `token=${token}`;
  const ac = new AbortController();
  const res = await within(fetch(`${server.url}/events?${params}`, { headers, signal: ac.signal }), "GET /events to answer");
  try {
    if (res.status === 200) return { status: 200, body: null, contentType: res.headers.get("content-type") };
    const text = await within(res.text(), "the refusal's body");
    let body;
    try { body = JSON.parse(text); } catch { body = text; }
    return { status: res.status, body };
  } finally {
    ac.abort();
  }
}

// ---------------------------------------------------------------------------
// HTTP API
// ---------------------------------------------------------------------------

/** POST /api/publish that must succeed: resolves to {channel, offset, epoch}. */
export async function publish(server, channel, data, idempotencyKey) {
  const body = { channel, data };
  if (idempotencyKey !== undefined) body.idempotency_key = idempotencyKey;
  const res = await api(server, "POST", "/api/publish", body);
  assert.equal(res.status, 200, `publish to ${channel}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

/** GET /api/history: resolves to the body (must be 200). */
export async function history(server, channel, limit = 1000) {
  const res = await api(server, "GET", `/api/history?channel=${encodeURIComponent(channel)}&limit=${limit}`);
  assert.equal(res.status, 200, `history of ${channel}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

/** GET /api/presence: resolves to the presence list (must be 200). */
export async function presence(server, channel) {
  const res = await api(server, "GET", `/api/presence?channel=${encodeURIComponent(channel)}`);
  assert.equal(res.status, 200, `presence of ${channel}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.presence;
}

/**
 * Publishes to `channel` through the API in the background, one at a time,
 * until `stop()` (or the first failure): `acked` holds every answer
 * {offset, epoch, data} in order. `close()` stops it without checking
 * (for cleanup after a failed test: closeAll() calls it).
 */
export function startPublisher(server, channel, { pauseMs = 5, tag = "bg" } = {}) {
  const acked = [];
  const failures = [];
  let running = true;
  let n = 0;
  const loop = (async () => {
    while (running) {
      const data = { tag, n: n++ };
      try {
        const res = await api(server, "POST", "/api/publish", { channel, data });
        if (res.status === 200) acked.push({ offset: res.body.offset, epoch: res.body.epoch, data });
        else failures.push(`${res.status} ${JSON.stringify(res.body)}`);
      } catch (e) {
        failures.push(String(e));
      }
      if (failures.length) break;
      await sleep(pauseMs);
    }
  })();
  return {
    acked,
    failures,
    async stop() {
      running = false;
      await within(loop, "the background publisher to stop");
      assert.deepEqual(failures, [], "the background publisher's API calls failed");
    },
    close() {
      running = false;
    },
  };
}

/**
 * Asserts that `received` (publication objects) are exactly `expected`
 * ({offset, epoch, data}), in order: nothing lost, duplicated or reordered.
 */
export function assertSameStream(received, expected, who) {
  const got = received.map((p) => `${p.offset}@${p.epoch}:${canonical(p.data)}`);
  const want = expected.map((p) => `${p.offset}@${p.epoch}:${canonical(p.data)}`);
  if (got.length !== want.length || got.some((g, i) => g !== want[i])) {
    const firstDiff = got.findIndex((g, i) => g !== want[i]);
    assert.fail(`${who}: received ${got.length} publications, expected ${want.length}; first difference at #${firstDiff}: got ${got[firstDiff]} expected ${want[firstDiff]}` +
      `\n  got offsets: ${summarize(received.map((p) => p.offset))}\n  expected:    ${summarize(expected.map((p) => p.offset))}`);
  }
}

/** JSON with object keys sorted (key order carries no meaning). */
export function canonical(value) {
  return JSON.stringify(value, (_k, v) => (v && typeof v === "object" && !Array.isArray(v)
    ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
    : v));
}

/** "1..5,7,9..12" from a list of numbers (for messages). */
export function summarize(nums) {
  const out = [];
  let i = 0;
  while (i < nums.length) {
    let j = i;
    while (j + 1 < nums.length && nums[j + 1] === nums[j] + 1) j++;
    out.push(j > i ? `${nums[i]}..${nums[j]}` : `${nums[i]}`);
    i = j + 1;
  }
  return out.join(",");
}

/** Closes every client given (ignores nulls and errors). */
export function closeAll(...clients) {
  for (const c of clients.flat()) {
    if (c) {
      try { c.close(); } catch { /* gone */ }
    }
  }
}
