/**
 * @switchboard/client: a small client of Switchboard's plain WebSocket
 * protocol (`/ws`, one JSON object `{type, payload, id, timestamp}` per text
 * message). No dependencies; an ES module, for browsers and Node.
 *
 * - Promises for requests, answered by `ack` or `error` with the same id,
 *   each with its own timeout; errors are {@link SwitchboardError} with a
 *   `.code` (the server's code, or `timeout`, `disconnected`, `closed`,
 *   `offline`, `queue_full`, `unsubscribed` for local failures).
 * - Reconnection with exponential backoff and full jitter; an offline queue
 *   of requests made while disconnected, sent after the next connection is
 *   authenticated and every channel is subscribed again.
 * - Resumption: every subscription remembers the last `(offset, epoch)` seen
 *   and subscribes again with `since`, so what was published meanwhile is
 *   replayed in order, without duplicates; when the history no longer
 *   reaches back, a `reset` event says the channel must be reloaded.
 * - Events: `message` (and `message:<channel>`), `join`/`leave` (and
 *   `join:<channel>`, `leave:<channel>`), `subscribed`, `reset`, `state`,
 *   `close`, `error`.
 *
 * @example
 * import { SwitchboardClient } from "@switchboard/client";
 * const client = new SwitchboardClient("/ws", { getToken: async () => myToken });
 * client.on("message:chat:lobby", (m) => console.log(m.from, m.data));
 * client.on("state", (s) => console.log("connection:", s));
 * client.connect();
 * await client.subscribe("chat:lobby");
 * await client.publish("chat:lobby", { text: "hello" });
 *
 * @module
 */

/** WebSocket close codes used by the server. */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  /** The server is shutting down: reconnect. */
  GOING_AWAY: 1001,
  /** Invalid JSON or a binary message. */
  UNSUPPORTED_DATA: 1003,
  /** Authentication timeout, slow consumer, rate abuse. */
  POLICY_VIOLATION: 1008,
  /** A message over the server's size limit. */
  MESSAGE_TOO_BIG: 1009,
  /** A backend disconnected the user: do not reconnect on one's own. */
  DISCONNECTED: 4001,
});

/** Connection states, as emitted by the `state` event. */
export type ConnectionState = "idle" | "connecting" | "connected" | "reconnecting" | "offline" | "closed";

/** A position in a channel's stream: pass it as `since` to resume after it. */
export interface Position {
  /** Offset of the last publication seen (1, 2, 3...; 0: none). */
  offset: number;
  /** The channel stream's epoch. */
  epoch: string;
}

/** A publication as delivered to `message` listeners. */
export interface Publication<T = unknown> {
  /** The channel it was published to. */
  channel: string;
  /** Its position in the channel (1, 2, 3...). */
  offset: number;
  /** The channel stream's epoch. */
  epoch: string;
  /** What was published. */
  data: T;
  /** The publisher's user id (`null`: a backend, through the HTTP API). */
  from: string | null;
  /** The server's time, in milliseconds. */
  time: number;
  /** `true` when it was missed and replayed on resume. */
  replayed: boolean;
}

/** A join or leave signal of a channel with presence. */
export interface PresenceSignal {
  /** The channel. */
  channel: string;
  /** The user id. */
  user: string;
  /** The user's display name (from the token). */
  name: string;
}

/** One user present in a channel. */
export interface PresenceEntry {
  /** The user id. */
  user: string;
  /** The user's display name (from the token). */
  name: string;
  /** How many connections of the user are subscribed. */
  connections: number;
}

/** The outcome of a (re)subscription. */
export interface Subscribed {
  /** The channel. */
  channel: string;
  /** The last offset seen (or the channel's current one). */
  offset: number;
  /** The channel stream's epoch (`null` before the first answer). */
  epoch: string | null;
  /** `true` when the subscription resumed from a position without loss. */
  resumed: boolean;
}

/** Sent by the `reset` event: the history no longer reaches back to the last position seen. */
export interface Reset extends Position {
  /** The channel, to reload (e.g. with `history`). */
  channel: string;
}

/** The answer to a publish: where the publication was stored. */
export interface Published extends Position {
  /** The channel. */
  channel: string;
}

/** A stored publication, as in `history` and `subscribe` answers. */
export interface StoredPublication<T = unknown> {
  /** Its position in the channel. */
  offset: number;
  /** What was published. */
  data: T;
  /** The publisher's user id (`null`: a backend). */
  from: string | null;
  /** The server's time of the publication, in milliseconds. */
  time_ms: number;
}

/** The answer to `history`. */
export interface History<T = unknown> extends Position {
  /** The channel. */
  channel: string;
  /** The last publications, oldest first. */
  publications: StoredPublication<T>[];
}

/** The events of a {@link SwitchboardClient} and the value each carries. */
export interface ClientEvents {
  /** Every publication of every channel subscribed, once, in offset order. */
  message: Publication;
  /** A user's first connection subscribed to a channel with join/leave signals. */
  join: PresenceSignal;
  /** A user's last connection left a channel with join/leave signals. */
  leave: PresenceSignal;
  /** After every (re)subscription. */
  subscribed: Subscribed;
  /** The history no longer reaches back to the last position seen: reload the channel. */
  reset: Reset;
  /** The connection state changed. */
  state: ConnectionState;
  /** A socket closed. */
  close: { code: number; reason: string };
  /** An error not tied to a request. */
  error: SwitchboardError;
}

/** Any event name: those of {@link ClientEvents}, or per channel (`message:<channel>`, `join:<channel>`, `leave:<channel>`). */
export type ClientEventName = keyof ClientEvents | `message:${string}` | `join:${string}` | `leave:${string}`;

/** The value an event carries. */
export type ClientEventValue<E extends string> = E extends keyof ClientEvents
  ? ClientEvents[E]
  : E extends `message:${string}`
    ? Publication
    : PresenceSignal;

/** Options of a {@link SwitchboardClient}. */
export interface ClientOptions {
  /** A fixed token (or use `getToken`). */
  token?: string;
  /** Called before every authentication; `refresh` is `true` after the last token was refused. */
  getToken?: (ctx: { refresh: boolean }) => string | undefined | Promise<string | undefined>;
  /** First reconnection delay bound, ms (full jitter: a random delay in `[0, bound]`). Default 500. */
  backoffBase?: number;
  /** Largest reconnection delay bound, ms. Default 10,000. */
  backoffMax?: number;
  /** How long a request waits for its answer once sent, ms. Default 10,000. */
  requestTimeout?: number;
  /** Interval of keep-alive pings while connected (0: none), ms. Default 25,000. */
  pingInterval?: number;
  /** Most requests kept while disconnected. Default 500. */
  maxQueue?: number;
  /** Retries of a request refused with `rate_limited` (after a jittered delay). Default 3. */
  rateLimitRetries?: number;
  /** The WebSocket constructor (e.g. the `ws` package outside browsers). Default `globalThis.WebSocket`. */
  WebSocket?: WebSocketConstructor;
}

/** What the client needs of a WebSocket constructor (the browser's, or the `ws` package's). */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** What the client needs of a WebSocket. */
export interface WebSocketLike {
  /** 1 when open. */
  readonly readyState: number;
  /** Sends a text message. */
  send(data: string): void;
  /** Closes the socket. */
  close(code?: number, reason?: string): void;
  /** Open handler. */
  onopen: ((ev: unknown) => void) | null;
  /** Message handler. */
  onmessage: ((ev: { data: unknown }) => void) | null;
  /** Close handler. */
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  /** Error handler. */
  onerror: ((ev: unknown) => void) | null;
}

/** Options of one request. */
export interface RequestOptions {
  /** How long to wait for the answer once sent, ms (default: the client's `requestTimeout`). */
  timeout?: number;
  /** Wait in the offline queue while disconnected (default `true`); `false` fails with `offline` at once. */
  queue?: boolean;
}

/** Options of {@link SwitchboardClient.subscribe}. */
export interface SubscribeOptions {
  /** Start after this position (saved earlier with `position`): what follows it is replayed. */
  since?: Position;
  /** Resume after reconnections (default `true`); `false` for ephemeral channels. */
  recover?: boolean;
}

/** An error answered by the server, or a local failure, with a `.code`. */
export class SwitchboardError extends Error {
  /** A stable code (`forbidden`, `rate_limited`, `timeout`...). */
  code: string;
  /** The channel, for a refused resubscription. */
  channel?: string;

  /**
   * @param code    stable code (`forbidden`, `rate_limited`, `timeout`...)
   * @param message a human-readable message (default: the code)
   */
  constructor(code: string, message?: string) {
    super(message || code);
    this.name = "SwitchboardError";
    this.code = code;
  }
}

/** Codes of failures that happen on this side of the connection. */
const LOCAL_CODES = new Set(["timeout", "disconnected", "closed", "offline", "queue_full", "unsubscribed"]);

const DEFAULTS = {
  backoffBase: 500,
  backoffMax: 10_000,
  requestTimeout: 10_000,
  pingInterval: 25_000,
  maxQueue: 500,
  rateLimitRetries: 3,
};

type Settled = Required<Pick<ClientOptions, keyof typeof DEFAULTS>> & ClientOptions;

interface Pending {
  resolve: (value: any) => void;
  reject: (err: SwitchboardError) => void;
  timer: ReturnType<typeof setTimeout>;
}

interface Queued {
  type: string;
  payload: unknown;
  timeout: number;
  queue: boolean;
  retries?: number;
  resolve: (value: any) => void;
  reject: (err: SwitchboardError) => void;
}

interface Channel {
  name: string;
  offset: number;
  epoch: string | null;
  recover: boolean;
  active: boolean;
  /** A subscribe request is in flight for it. */
  busy: boolean;
  waiters: { resolve: (s: Subscribed) => void; reject: (err: SwitchboardError) => void }[];
}

interface Incoming {
  type?: string;
  id?: number;
  payload?: any;
  timestamp?: number;
}

const hasWindow = typeof window !== "undefined" && typeof window.addEventListener === "function";
const isOffline = () => typeof navigator !== "undefined" && navigator.onLine === false;

/** Resolves `/ws` against the page: `ws://host/ws` (or `wss:` under https). Outside a page a relative URL stays as it is. */
function resolveUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url, typeof location !== "undefined" ? location.href : undefined);
  } catch {
    return url;
  }
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  return u.href;
}

/** A client of one Switchboard server over `/ws`. */
export class SwitchboardClient {
  /** The server's WebSocket URL. */
  url: string;
  /** The options, with their defaults. */
  options: Settled;
  /** The connection state. */
  state: ConnectionState = "idle";
  /** `{user, name}` once authenticated. */
  user: { user: string; name: string } | null = null;

  private _ws: WebSocketLike | null = null;
  private _nextId = 1;
  /** id -> request sent on the current socket. */
  private _pending = new Map<number, Pending>();
  /** Requests made while not connected. */
  private _queue: Queued[] = [];
  private _channels = new Map<string, Channel>();
  private _listeners = new Map<string, Set<(value: any) => void>>();
  private _attempt = 0;
  private _timer: ReturnType<typeof setTimeout> | undefined;
  private _pingTimer: ReturnType<typeof setInterval> | undefined;
  private _stopped = true;
  private _refreshToken = false;
  private _onOnline = () => this._online();
  private _onOffline = () => this._offline();

  /**
   * @param url     `/ws`, or an absolute `ws://`/`wss://`/`http(s)://` URL
   * @param options see {@link ClientOptions}
   */
  constructor(url: string, options: ClientOptions = {}) {
    this.url = resolveUrl(url);
    this.options = { ...DEFAULTS, ...options };
  }

  // ---- events -------------------------------------------------------------

  /**
   * Adds a listener. Events: `message`, `message:<channel>` ({@link Publication}),
   * `join`/`leave` and `join:<channel>`/`leave:<channel>` (`{channel, user, name}`),
   * `subscribed`, `reset` (history lost: reload), `state`, `close`, `error`.
   * @returns a function that removes the listener
   */
  on<E extends ClientEventName>(event: E, fn: (value: ClientEventValue<E>) => void): () => void {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  /** Removes a listener added with {@link on}. */
  off<E extends ClientEventName>(event: E, fn: (value: ClientEventValue<E>) => void): void {
    this._listeners.get(event)?.delete(fn);
  }

  private _emit(event: string, value: unknown) {
    for (const fn of [...(this._listeners.get(event) ?? [])]) {
      try {
        fn(value);
      } catch (err) {
        // A broken listener must not break the connection.
        (globalThis.reportError ?? console.error)(err);
      }
    }
  }

  private _setState(state: ConnectionState) {
    if (state === this.state) return;
    this.state = state;
    this._emit("state", state);
  }

  // ---- connection -----------------------------------------------------------

  /** Opens the connection (and keeps it open until {@link close}). */
  connect(): this {
    if (!this._stopped) return this;
    this._stopped = false;
    this._attempt = 0;
    if (hasWindow) {
      window.addEventListener("online", this._onOnline);
      window.addEventListener("offline", this._onOffline);
    }
    this._open();
    return this;
  }

  /** Closes the connection for good; pending and queued requests fail with `closed`. */
  close(): void {
    this._stopped = true;
    if (hasWindow) {
      window.removeEventListener("online", this._onOnline);
      window.removeEventListener("offline", this._onOffline);
    }
    clearTimeout(this._timer);
    if (this._ws) this._drop(this._ws, CloseCode.NORMAL, "client closed");
    this._failQueue("closed");
    this._setState("closed");
  }

  private _open() {
    clearTimeout(this._timer);
    this._timer = undefined;
    if (this._stopped) return;
    if (isOffline()) {
      this._setState("offline");
      return;
    }
    const first = this.state === "idle" || this.state === "connecting" || this.state === "closed";
    this._setState(first ? "connecting" : "reconnecting");
    let ws: WebSocketLike;
    try {
      const Ctor = this.options.WebSocket ?? (globalThis.WebSocket as unknown as WebSocketConstructor);
      ws = new Ctor(resolveUrl(this.url));
    } catch (err) {
      this._emit("error", new SwitchboardError("connect_failed", (err as Error).message));
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    ws.onopen = () => this._handshake(ws);
    ws.onmessage = (e) => this._receive(e.data);
    ws.onclose = (e) => this._closed(ws, e.code, e.reason);
    ws.onerror = () => {}; // a close event follows
  }

  /** Authenticates, subscribes again, then sends what was queued. */
  private async _handshake(ws: WebSocketLike) {
    try {
      const { getToken, token } = this.options;
      const current = getToken ? await getToken({ refresh: this._refreshToken }) : token;
      if (ws !== this._ws) return;
      let me;
      try {
        me = await this._send(ws, "auth", { token: current });
      } catch (err) {
        if (!LOCAL_CODES.has((err as SwitchboardError).code)) {
          // The token was refused: get a new one next time, or give up.
          this._refreshToken = true;
          if (!getToken) {
            this._emit("error", err);
            this.close();
            return;
          }
        }
        throw err;
      }
      this._refreshToken = false;
      this.user = me;
      // Subscribe again (resuming); a channel the server now refuses is
      // dropped by _subscribeNow, a lost connection starts over.
      const results = await Promise.allSettled([...this._channels.values()].map((ch) => this._subscribeNow(ws, ch)));
      const lost = results.find((r) => r.status === "rejected" && LOCAL_CODES.has(r.reason?.code));
      if (lost) throw (lost as PromiseRejectedResult).reason;
      if (ws !== this._ws) return;
      this._attempt = 0;
      this._setState("connected");
      this._startPing(ws);
      // Channels added during the handshake, then what waited in the queue
      // (in order, after the subscriptions it may need).
      for (const ch of this._channels.values()) {
        if (!ch.active && !ch.busy) this._subscribeNow(ws, ch).catch(() => {});
      }
      for (const q of this._queue.splice(0)) this._dispatch(ws, q);
    } catch (err) {
      if (ws !== this._ws) return;
      if (!LOCAL_CODES.has((err as SwitchboardError).code)) this._emit("error", err);
      this._drop(ws, 4000, "handshake failed");
    }
  }

  /** Forgets a socket (closing it) and runs the close logic right away. */
  private _drop(ws: WebSocketLike, code: number, reason: string) {
    ws.onopen = ws.onmessage = ws.onclose = null;
    // Closing a socket still connecting makes the `ws` package emit an
    // error, which Node throws when nobody listens.
    ws.onerror = () => {};
    try {
      ws.close(code === 4000 || code === CloseCode.NORMAL ? code : 4000, reason);
    } catch {
      /* already closed */
    }
    this._closed(ws, code, reason);
  }

  private _closed(ws: WebSocketLike, code: number, reason: string) {
    if (ws !== this._ws) return;
    this._ws = null;
    clearInterval(this._pingTimer);
    for (const ch of this._channels.values()) ch.active = false;
    for (const [id, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(new SwitchboardError("disconnected", "the connection was lost"));
      this._pending.delete(id);
    }
    this._emit("close", { code, reason });
    if (this._stopped) return;
    if (code === CloseCode.DISCONNECTED) {
      // A backend disconnected the user: stay disconnected.
      this._emit("error", new SwitchboardError("disconnected_by_server", reason || "disconnected by the server"));
      this.close();
      return;
    }
    this._scheduleReconnect();
  }

  private _scheduleReconnect() {
    clearTimeout(this._timer);
    if (this._stopped) return;
    if (isOffline()) {
      this._setState("offline"); // the `online` event reconnects
      return;
    }
    this._setState("reconnecting");
    const { backoffBase, backoffMax } = this.options;
    const bound = Math.min(backoffMax, backoffBase * 2 ** this._attempt);
    this._attempt += 1;
    this._timer = setTimeout(() => this._open(), Math.random() * bound);
  }

  private _online() {
    if (this._stopped || this._ws) return;
    this._attempt = 0;
    this._open();
  }

  private _offline() {
    if (this._stopped) return;
    if (this._ws && this.state === "connected") {
      // The socket may still work (or be dead): a ping tells.
      this._checkAlive(this._ws);
      return;
    }
    clearTimeout(this._timer);
    if (this._ws) this._drop(this._ws, 4000, "offline");
    else this._setState("offline");
  }

  private _startPing(ws: WebSocketLike) {
    clearInterval(this._pingTimer);
    if (!this.options.pingInterval) return;
    this._pingTimer = setInterval(() => this._checkAlive(ws), this.options.pingInterval);
  }

  private _checkAlive(ws: WebSocketLike) {
    this._send(ws, "ping", undefined).catch((err: SwitchboardError) => {
      if (err.code === "timeout" && ws === this._ws) this._drop(ws, 4000, "ping timeout");
    });
  }

  // ---- requests -------------------------------------------------------------

  /** Sends one request on `ws`; resolves with the ack's payload. */
  private _send(ws: WebSocketLike, type: string, payload: unknown, timeout = this.options.requestTimeout): Promise<any> {
    return new Promise((resolve, reject) => {
      if (ws !== this._ws || ws.readyState !== 1) {
        reject(new SwitchboardError("disconnected", "not connected"));
        return;
      }
      const id = this._nextId++;
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new SwitchboardError("timeout", `no answer to ${type} within ${timeout} ms`));
      }, timeout);
      this._pending.set(id, { resolve, reject, timer });
      const msg: Incoming = { type, id, timestamp: Date.now() };
      if (payload !== undefined) msg.payload = payload;
      ws.send(JSON.stringify(msg));
    });
  }

  /** Sends a queued or new request, retrying `rate_limited` refusals after a delay. */
  private _dispatch(ws: WebSocketLike, q: Queued) {
    this._send(ws, q.type, q.payload, q.timeout).then(q.resolve, (err: SwitchboardError) => {
      const retries = q.retries ?? 0;
      if (err.code === "rate_limited" && retries < this.options.rateLimitRetries) {
        q.retries = retries + 1;
        const delay = Math.random() * this.options.backoffBase * 2 ** q.retries;
        setTimeout(() => this._request(q), delay);
        return;
      }
      q.reject(err);
    });
  }

  private _request(q: Queued) {
    if (this.state === "connected" && this._ws) this._dispatch(this._ws, q);
    else if (this.state === "closed") q.reject(new SwitchboardError("closed", "the client is closed"));
    else if (!q.queue) q.reject(new SwitchboardError("offline", "not connected"));
    else if (this._queue.length >= this.options.maxQueue) q.reject(new SwitchboardError("queue_full", "too many requests waiting for the connection"));
    else this._queue.push(q);
  }

  private _failQueue(code: string) {
    for (const q of this._queue.splice(0)) q.reject(new SwitchboardError(code, "the client is closed"));
  }

  /**
   * Sends any request; resolves with the ack's payload. While disconnected
   * the request waits in the offline queue (unless `queue: false`: it fails
   * with `offline` at once); `timeout` counts from the moment it is sent.
   */
  request<T = any>(type: string, payload?: unknown, { timeout = this.options.requestTimeout, queue = true }: RequestOptions = {}): Promise<T> {
    return new Promise((resolve, reject) => this._request({ type, payload, timeout, queue, resolve, reject }));
  }

  /** Publishes `data` to `channel`; resolves with `{channel, offset, epoch}`. */
  publish(channel: string, data: unknown, opts?: RequestOptions): Promise<Published> {
    return this.request("message", { channel, data }, opts);
  }

  /** Who is present in a channel: resolves with `[{user, name, connections}]`. */
  async presence(channel: string, opts?: RequestOptions): Promise<PresenceEntry[]> {
    return (await this.request("presence", { channel }, opts)).presence;
  }

  /** The last publications of a channel (at most `limit`), oldest first. */
  history<T = unknown>(channel: string, { limit, ...opts }: RequestOptions & { limit?: number } = {}): Promise<History<T>> {
    return this.request("history", limit === undefined ? { channel } : { channel, limit }, opts);
  }

  // ---- subscriptions ----------------------------------------------------------

  /**
   * Subscribes to a channel, now or as soon as connected; resolves once the
   * server acknowledged (at once when already subscribed). After a
   * reconnection the channel is subscribed again from the last position
   * seen. `since` starts from a position saved earlier (what follows it is
   * replayed); `recover: false` never resumes (ephemeral channels).
   */
  subscribe(channel: string, { since, recover = true }: SubscribeOptions = {}): Promise<Subscribed> {
    let ch = this._channels.get(channel);
    if (!ch) {
      ch = { name: channel, offset: since?.offset ?? 0, epoch: since?.epoch ?? null, recover, active: false, busy: false, waiters: [] };
      this._channels.set(channel, ch);
    }
    if (ch.active) return Promise.resolve({ channel, offset: ch.offset, epoch: ch.epoch, resumed: false });
    const wanted = ch;
    return new Promise((resolve, reject) => {
      wanted.waiters.push({ resolve, reject });
      if (this.state === "connected" && this._ws && !wanted.busy) this._subscribeNow(this._ws, wanted).catch(() => {});
    });
  }

  /** Stops a subscription (and its resumption). */
  async unsubscribe(channel: string): Promise<{ channel: string }> {
    const ch = this._channels.get(channel);
    if (!ch) return { channel };
    this._channels.delete(channel);
    for (const w of ch.waiters.splice(0)) w.reject(new SwitchboardError("unsubscribed", `${channel} was unsubscribed`));
    if (this.state !== "connected" || !this._ws) return { channel };
    return this._send(this._ws, "unsubscribe", { channel });
  }

  /** The last position seen in a channel, to save and pass as `since` later. */
  position(channel: string): Position | undefined {
    const ch = this._channels.get(channel);
    return ch && ch.epoch !== null ? { offset: ch.offset, epoch: ch.epoch } : undefined;
  }

  /** The channels subscribed (or to be subscribed once connected). */
  channels(): string[] {
    return [...this._channels.keys()];
  }

  private async _subscribeNow(ws: WebSocketLike, ch: Channel): Promise<Subscribed> {
    const payload: { channel: string; since?: Position } = { channel: ch.name };
    const resume = ch.recover && ch.epoch !== null;
    if (resume) payload.since = { offset: ch.offset, epoch: ch.epoch as string };
    let ack;
    ch.busy = true;
    try {
      ack = await this._send(ws, "subscribe", payload);
    } catch (err) {
      const e = err as SwitchboardError;
      if (!LOCAL_CODES.has(e.code) && this._channels.get(ch.name) === ch) {
        // Refused by the server (forbidden...): forget the channel.
        this._channels.delete(ch.name);
        for (const w of ch.waiters.splice(0)) w.reject(e);
        e.channel = ch.name;
        this._emit("error", e);
      }
      throw e;
    } finally {
      ch.busy = false;
    }
    if (this._channels.get(ch.name) !== ch) return ack; // unsubscribed meanwhile
    if (resume && !ack.recovered) {
      ch.offset = ack.offset;
      ch.epoch = ack.epoch;
      this._emit("reset", { channel: ch.name, offset: ack.offset, epoch: ack.epoch });
    } else {
      for (const p of ack.publications ?? []) {
        this._publication({ channel: ch.name, epoch: ack.epoch, ...p }, p.time_ms, true);
      }
      if (ch.epoch !== ack.epoch || ack.offset > ch.offset) {
        ch.offset = ack.offset;
        ch.epoch = ack.epoch;
      }
    }
    ch.active = true;
    const result: Subscribed = { channel: ch.name, offset: ch.offset, epoch: ch.epoch, resumed: resume && ack.recovered };
    this._emit("subscribed", result);
    for (const w of ch.waiters.splice(0)) w.resolve(result);
    return result;
  }

  // ---- incoming -------------------------------------------------------------

  private _receive(text: unknown) {
    let msg: Incoming;
    try {
      msg = JSON.parse(String(text));
    } catch {
      this._emit("error", new SwitchboardError("bad_message", "the server sent invalid JSON"));
      return;
    }
    const p = msg.id !== undefined ? this._pending.get(msg.id) : undefined;
    if (p) {
      this._pending.delete(msg.id as number);
      clearTimeout(p.timer);
      if (msg.type === "error") p.reject(new SwitchboardError(msg.payload?.code ?? "error", msg.payload?.message));
      else p.resolve(msg.payload ?? null);
      return;
    }
    switch (msg.type) {
      case "message":
        this._publication(msg.payload, msg.timestamp, false);
        break;
      case "join":
      case "leave":
        this._emit(msg.type, msg.payload);
        this._emit(`${msg.type}:${msg.payload.channel}`, msg.payload);
        break;
      case "error":
        this._emit("error", new SwitchboardError(msg.payload?.code ?? "error", msg.payload?.message));
        break;
      default:
        break; // pong, answers to forgotten requests
    }
  }

  /** Delivers a publication once: an offset already seen in the same epoch is dropped. */
  private _publication(p: Omit<Publication, "time" | "replayed">, time: number | undefined, replayed: boolean) {
    const ch = this._channels.get(p.channel);
    if (!ch) return;
    if (ch.epoch === p.epoch && p.offset <= ch.offset) return;
    ch.offset = p.offset;
    ch.epoch = p.epoch;
    const event: Publication = { channel: p.channel, offset: p.offset, epoch: p.epoch, data: p.data, from: p.from ?? null, time: time ?? Date.now(), replayed };
    this._emit("message", event);
    this._emit(`message:${p.channel}`, event);
  }
}
