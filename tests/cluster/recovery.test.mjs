// Connection state recovery (RECOVERY=1) with the client's own automatic
// reconnection: on one node (ADAPTER=memory, ADAPTER=streams) of every kind
// of CLUSTER_KINDS, and across two nodes (ADAPTER=streams) of every pair.
//
// What Node does, and the Rust nodes must reproduce:
// - Only broadcasts carry an offset: the adapter appends it as an extra,
//   last argument of the event (memory: a yeast id, e.g. "PbGvH1b"; streams:
//   the Redis stream entry id "<ms>-<seq>"), and socket.io-client remembers
//   the last string argument of every event as `_lastOffset`
//   (node_modules/socket.io-client/build/cjs/socket.js emitEvent). Events
//   sent to one socket (socket.emit) carry none.
// - On reconnection the client sends {pid, offset} in its CONNECT auth. The
//   server restores only when both are strings (socket.io/dist/namespace.js
//   _createSocket): a client that has not received any broadcast yet has no
//   offset, so it gets a fresh session even within the window.
// - Missed packets are written before the CONNECT packet
//   (socket.io/dist/socket.js constructor); the client buffers them and emits
//   them before "connect" (socket.io-client socket.js onconnect/emitBuffered).
// - Cutting the transport from the client (engine.close()) is seen by the
//   server as "transport close" for both transports (a recoverable reason,
//   socket.io/dist/socket.js RECOVERABLE_DISCONNECT_REASONS); the client's
//   own reason is "forced close" and it reconnects on its own.
// - A failed restore (unknown or forged pid, bad offset, expired session) is
//   never an error: the client just gets a fresh session.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  TEST_TIMEOUT_MS,
  WAIT_MS,
  ack,
  kindPairs,
  kinds,
  room,
  startCluster,
  until,
  waitConnect,
  waitFor,
} from "./harness.mjs";

const opts = { timeout: TEST_TIMEOUT_MS };

const ADAPTERS = [
  { name: "memory", env: { ADAPTER: "memory" }, offset: /^[0-9A-Za-z_.-]+$/ },
  { name: "streams", env: { ADAPTER: "streams" }, offset: /^\d+-\d+$/ },
];
const STREAMS = ADAPTERS[1];
const label = (node) => `${node.kind} node :${node.port}`;

/** The client's reconnection delay (fixed, no jitter): how long it stays away after a cut. */
const AWAY_MS = 1000;

function reconnecting(transports, delay = AWAY_MS) {
  return {
    transports,
    reconnection: true,
    reconnectionDelay: delay,
    reconnectionDelayMax: delay,
    randomizationFactor: 0,
  };
}

function start(t, nodeKinds, adapter, env = {}) {
  return startCluster(t, { kinds: nodeKinds, env: { ...adapter.env, RECOVERY: "1", ...env }, label: `rec-${adapter.name}` });
}

/**
 * Logs what `socket` sees, in order: ["msg", payload, offset] and ["connect"].
 * The offset is the extra last argument the server appended (or undefined).
 */
function eventLog(socket) {
  const log = [];
  socket.on("msg", (payload, ...rest) => log.push(["msg", payload, rest.at(-1)]));
  socket.on("connect", () => log.push(["connect"]));
  return log;
}

/** Publishes to `r` from `publisher` and waits until `subscriber` got it. */
async function publishSeen(publisher, subscriber, r, payload) {
  const got = waitFor(subscriber, "msg", { filter: (p) => p?.n === payload.n, label: `msg ${payload.n}` });
  assert.equal(await ack(publisher, "publish", r, payload), "ok");
  return got;
}

/**
 * The whole scenario: a subscriber on `home` in room r gets two broadcasts
 * (one from a client of `home`, one from a client of `away`), its transport is
 * cut, it reconnects by itself to `away` (possibly the same node), and
 * meanwhile three messages go to r and one to another room.
 */
async function cutAndRecover(c, { home, away, transports, adapter }) {
  const r = room("rec");
  const other = room("other");
  const [sub, pubHome, pubAway] = await Promise.all([
    c.connect(home, reconnecting(transports)),
    c.connect(home),
    c.connect(away),
  ]);
  assert.equal(sub.hello.recovered, false);
  assert.equal(await ack(sub, "join", r), "ok");
  const log = eventLog(sub);
  await publishSeen(pubHome, sub, r, { n: 1 });
  await publishSeen(pubAway, sub, r, { n: 2 });
  for (const [, , offset] of log) assert.match(offset, adapter.offset, "broadcasts carry an offset as their last argument");
  const id = sub.id;
  const pid = sub._pid;
  assert.equal(typeof pid, "string", "the server sent a pid in its CONNECT packet");

  // socket.io-client builds a new engine from `manager.uri` on every
  // (re)connection attempt (socket.io-client/build/cjs/manager.js open), so
  // changing it sends the automatic reconnection to another node.
  if (away !== home) sub.io.uri = away.url;
  const disconnected = waitFor(sub, "disconnect");
  const hello = waitFor(sub, "hello", { timeoutMs: WAIT_MS + AWAY_MS });
  const reconnected = waitFor(sub, "connect", { timeoutMs: WAIT_MS + AWAY_MS });
  sub.io.engine.close();
  const [clientReason] = await disconnected;
  assert.equal(clientReason, "forced close");
  const cut = log.length;
  // Publish only once the home node has seen the socket go: a broadcast
  // written to the WebSocket while the server is still closing it fails, and
  // the reason becomes "transport error" (also recoverable) instead of
  // "transport close".
  const reason = await until(() => ack(pubHome, "disconnect-reason", id), `${label(home)} to see ${id} disconnected`);
  assert.equal(reason, "transport close", "server-side disconnect reason (recoverable)");

  for (const n of [3, 4, 5]) assert.equal(await ack(pubAway, "publish", r, { n }), "ok");
  assert.equal(await ack(pubAway, "publish", other, { n: "other room" }), "ok");
  assert.ok(!sub.connected, `the client reconnected before the missed messages were published (its delay is ${AWAY_MS} ms)`);

  await reconnected;
  assert.equal(sub.recovered, true, "socket.recovered");
  assert.equal(sub.id, id, "same socket id");
  assert.equal(sub._pid, pid, "same pid");
  const [h] = await hello;
  assert.equal(h.recovered, true, "the server's socket.recovered");
  assert.equal(h.node, away.name);

  // The missed messages, once, in order, before "connect"; not the other room's.
  assert.deepEqual(
    log.slice(cut).map(([ev, p]) => (ev === "msg" ? p.n : ev)),
    [3, 4, 5, "connect"],
  );
  for (const [ev, , offset] of log.slice(cut, cut + 3)) {
    assert.equal(ev, "msg");
    assert.match(offset, adapter.offset);
  }
  // Live messages keep flowing, from both nodes; the socket is still in r.
  await publishSeen(pubAway, sub, r, { n: 6 });
  await publishSeen(pubHome, sub, r, { n: 7 });
  assert.deepEqual(
    log.slice(cut).map(([ev, p]) => (ev === "msg" ? p.n : ev)),
    [3, 4, 5, "connect", 6, 7],
  );
  const [info] = await ack(pubHome, "sockets-info", id);
  assert.ok(info?.rooms.includes(r), `the recovered socket is back in ${r}`);
}

for (const kind of kinds()) {
  for (const adapter of ADAPTERS) {
    describe(`recovery ${adapter.name} ${kind}`, () => {
      for (const transports of [["websocket"], ["polling"]]) {
        test(`${transports[0]}: a cut client recovers its id, rooms and the missed messages`, opts, async (t) => {
          const c = await start(t, [kind], adapter);
          const [N] = c.nodes;
          await cutAndRecover(c, { home: N, away: N, transports, adapter });
        });
      }

      test("a client away longer than the window gets a fresh session", opts, async (t) => {
        const windowMs = 400;
        const c = await start(t, [kind], adapter, { RECOVERY_MS: String(windowMs) });
        const [N] = c.nodes;
        const r = room("rec");
        const [sub, pub] = await Promise.all([c.connect(N, reconnecting(["websocket"], windowMs + 1000)), c.connect(N)]);
        await ack(sub, "join", r);
        await publishSeen(pub, sub, r, { n: 1 });
        const id = sub.id;
        const log = eventLog(sub);
        const hello = waitFor(sub, "hello", { timeoutMs: WAIT_MS + 2000 });
        const reconnected = waitFor(sub, "connect", { timeoutMs: WAIT_MS + 2000 });
        sub.io.engine.close();
        await ack(pub, "publish", r, { n: 2 });
        await reconnected;
        assert.equal(sub.recovered, false);
        assert.notEqual(sub.id, id, "a new socket id");
        assert.equal((await hello)[0].recovered, false);
        assert.deepEqual(log, [["connect"]], "no missed message delivered");
        // The fresh socket is not in the room any more. (The publish ack
        // does not mean delivered: cluster adapters deliver locally only
        // after the publication to Redis, so wait for a marker that follows.)
        const box = [];
        sub.on("msg", (p) => box.push(p));
        await ack(pub, "publish", r, { n: 3 });
        const marker = waitFor(sub, "msg", { filter: (p) => p?.marker });
        await ack(pub, "publish-all", { marker: true });
        await marker;
        assert.deepEqual(box, [{ marker: true }]);
      });

      test("the session is restored from the CONNECT auth {pid, offset}; a pid without offset gets a fresh session", opts, async (t) => {
        const c = await start(t, [kind], adapter);
        const [N] = c.nodes;
        // With recovery on, socket.emit() goes through the adapter too
        // (socket.io/dist/socket.js emit), so even "hello" carries an offset.
        const first = await c.connect(N);
        assert.match(first._lastOffset, adapter.offset, "the hello event carries an offset");
        const r = room("manual");
        await ack(first, "join", r);
        await ack(first, "set-data", { who: "first" });
        const { _pid: pid, _lastOffset: offset, id } = first;
        const gone = waitFor(first, "disconnect");
        first.io.engine.close(); // reconnection is off in this client
        await gone;
        const observer = await c.connect(N);
        await until(() => ack(observer, "disconnect-reason", id), `${label(N)} to see ${id} disconnected`);
        await ack(observer, "publish", r, { n: "missed" });
        // No offset (not a string): fresh session; the stored one is kept.
        const noOffset = await c.connect(N, { auth: { pid } });
        assert.equal(noOffset.hello.recovered, false);
        assert.notEqual(noOffset.id, id);
        // Another client instance presenting the pid and offset gets the
        // session back: same id, rooms and data, and the missed message
        // (the client-side socket.recovered stays false: this client never
        // had that pid).
        const again = c.client(N, { auth: { pid, offset, extra: 1 } });
        const log = eventLog(again);
        const hello = waitFor(again, "hello");
        await waitConnect(again);
        assert.equal((await hello)[0].recovered, true);
        assert.equal(again.id, id);
        assert.deepEqual(log.map(([ev, p]) => (ev === "msg" ? p.n : ev)), ["missed", "connect"]);
        const [info] = await ack(observer, "sockets-info", id);
        assert.deepEqual(info.rooms, [id, r].sort());
        assert.deepEqual(info.data, { who: "first" });
        assert.deepEqual(info.handshake.auth, { pid, offset, extra: 1 }, "the handshake auth is the new CONNECT's");
      });

      test("a forged pid gets a fresh session, never an error", opts, async (t) => {
        const c = await start(t, [kind], adapter);
        const [N] = c.nodes;
        // A real offset, for the forged pid to come with.
        const [probe, pub] = await Promise.all([c.connect(N), c.connect(N)]);
        const r = room("probe");
        await ack(probe, "join", r);
        const [, realOffset] = await Promise.all([ack(pub, "publish", r, { n: 1 }), waitFor(probe, "msg")]).then(
          ([, args]) => args,
        );
        assert.match(realOffset, adapter.offset);
        const attempts = [
          { pid: "forged-pid-that-does-not-exist", offset: realOffset },
          { pid: "AAAAAAAAAAAAAAAAAAAAAA", offset: "0-0" },
          { pid: "AAAAAAAAAAAAAAAAAAAAAA", offset: "not an offset" },
          { pid: probe._pid, offset: "1-0" }, // a live socket's pid, bogus offset
          { pid: 42, offset: 7 },
          { pid: "x", offset: { $gt: "" } },
        ];
        for (const auth of attempts) {
          const s = await c.connect(N, { auth });
          assert.equal(s.recovered, false, JSON.stringify(auth));
          assert.equal(s.hello.recovered, false, JSON.stringify(auth));
          assert.notEqual(s.id, probe.id);
          assert.equal(await ack(s, "count"), 3, "the node keeps working");
          s.disconnect();
          await waitForCount(pub, 2);
        }
      });
    });
  }
}

/** Waits until `count` (asked through `socket`) is `n`. */
async function waitForCount(socket, n) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    if ((await ack(socket, "count")) === n) return;
    if (Date.now() > deadline) throw new Error(`count never reached ${n}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

for (const [ka, kb] of kindPairs()) {
  describe(`recovery streams two nodes ${ka}-${kb}`, () => {
    for (const transports of [["websocket"], ["polling"]]) {
      for (const [from, to] of [
        [0, 1],
        [1, 0],
      ]) {
        const kindOf = (i) => [ka, kb][i];
        test(`${transports[0]}: a client of ${kindOf(from)} node ${from} recovers on ${kindOf(to)} node ${to}`, opts, async (t) => {
          const c = await start(t, [ka, kb], STREAMS);
          await cutAndRecover(c, { home: c.nodes[from], away: c.nodes[to], transports, adapter: STREAMS });
        });
      }
    }
  });
}
