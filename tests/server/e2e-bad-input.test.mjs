// Bad input on each protocol gets the documented answer (close code, error
// code, HTTP status), and NOTHING IS LOST FOR OTHER CLIENTS: while a
// misbehaving client (subscribed to the same channel) does its worst and
// the HTTP API keeps publishing, well-behaved subscribers on every
// protocol receive every publication of the channel, in order, exactly once.

import { test } from "node:test";
import assert from "node:assert/strict";
import { devToken, until } from "./helpers.mjs";
import {
  start, uniq, api, WsClient, SioClient, SseClient, sseRefusal, publish, history, presence,
  startPublisher, assertSameStream, canonical, closeAll,
} from "./e2e-helpers.mjs";

/** A server whose chat channels keep every publication of a test (the ground truth). */
function startServer(extra = []) {
  return start({ args: ["--set", "channels.chat.history_size=100000", ...extra] });
}

/**
 * Witnesses on every protocol subscribed to `channel`, and a background
 * API publisher. `accepted(...)` records publications a misbehaving client
 * got acknowledged; `verify()` stops the publisher and checks that the
 * channel's history holds every acknowledged publication (and, unless
 * `allowUnacked`, nothing else), and that every witness received exactly
 * the whole history, in order.
 */
async function watch(server, channel, clients) {
  const token = await devToken(server, "witness", "Witness");
  const ws = await WsClient.connect(server, { token, label: "witness ws" });
  clients.push(ws);
  await ws.ok("subscribe", { channel });
  const sio = await SioClient.connect(server, { token, label: "witness sio" });
  clients.push(sio);
  await sio.ok("subscribe", { channel });
  const sse = await SseClient.open(server, { channels: [channel], token, label: "witness sse" });
  clients.push(sse);
  const publisher = startPublisher(server, channel, { pauseMs: 10 });
  clients.push(publisher);
  const others = [];
  await until(() => publisher.acked.length >= 10, "the background publisher to get going");
  return {
    publisher,
    accepted(...pubs) { others.push(...pubs); },
    /** Lets the publisher run for `n` more publications. */
    async more(n = 20) {
      const target = publisher.acked.length + n;
      await until(() => publisher.acked.length >= target, `${n} more background publications`);
    },
    async verify({ allowUnacked = false } = {}) {
      await publisher.stop();
      const marker = await publish(server, channel, { marker: true });
      const acked = [...publisher.acked, ...others, { ...marker, data: { marker: true } }].sort((a, b) => a.offset - b.offset);
      // The API reads at most the last 1000 publications.
      const h = await history(server, channel, 1000);
      assert.equal(h.offset, marker.offset, "the marker is the channel's last publication");
      const tail = h.publications.map((p) => ({ ...p, epoch: h.epoch }));
      assert.equal(tail.length, Math.min(h.offset, 1000), "the history holds every publication");
      const byOffset = new Map(tail.map((p) => [p.offset, p]));
      for (const a of acked.filter((p) => p.offset >= tail[0].offset)) {
        assert.ok(byOffset.has(a.offset), `acknowledged offset ${a.offset} is in the history`);
        assert.equal(canonical(byOffset.get(a.offset).data), canonical(a.data), `offset ${a.offset} holds what was acknowledged`);
      }
      let stored;
      if (!allowUnacked) {
        assertSameStream(tail, acked.slice(-tail.length), "history vs acknowledged publications (nothing stored without an ack)");
        assert.equal(acked.length, h.offset, "every publication of the channel was acknowledged once");
        stored = acked;
      } else {
        assert.equal(tail.length, h.offset, `the ground truth is the whole history (${h.offset} publications: too many for one read)`);
        stored = tail;
      }
      for (const w of [ws, sio, sse]) {
        await until(() => w.publications(channel).some((p) => p.offset === marker.offset), `${w.label} to get the marker`, 10_000);
        assertSameStream(w.publications(channel), stored, w.label);
      }
      for (const w of [ws, sio]) assert.equal(w.closeInfo ?? w.disconnects?.[0] ?? null, null, `${w.label} stayed connected`);
      assert.equal(sse.errors.length, 0, "the witness SSE stream never broke");
      return stored;
    },
  };
}

test("WebSocket: invalid JSON and binary frames close with 1003; nothing is lost for others", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const clients = [];
  try {
    const channel = `chat:${uniq("badjson")}`;
    const w = await watch(server, channel, clients);
    const token = await devToken(server, "mallory", "Mallory");
    const cases = [
      ["truncated JSON", (c) => c.sendRaw('{"type":"message","payload":{"channel":')],
      ["not JSON at all", (c) => c.sendRaw("hello, server")],
      ["a binary frame", (c) => c.sendRaw(Buffer.from(JSON.stringify({ type: "ping" })), { binary: true })],
    ];
    for (const [what, misbehave] of cases) {
      const bad = await WsClient.connect(server, { token, label: `mallory (${what})` });
      clients.push(bad);
      assert.equal((await bad.fails("message", { channel, data: { before: what } })).code, "forbidden", "not subscribed yet: publishing is refused");
      await bad.ok("subscribe", { channel });
      const ok = await bad.ok("message", { channel, data: { mallory: what } });
      w.accepted({ ...ok, data: { mallory: what } });
      misbehave(bad);
      const closed = await bad.waitClosed();
      assert.equal(closed.code, 1003, `${what}: closed with ${closed.code} ${closed.reason}`);
      await w.more(10);
    }
    await until(async () => !(await presence(server, channel)).some((e) => e.user === "mallory"), "mallory's closed connections to leave the presence");
    await w.verify();
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("WebSocket: invalid JSON amid more messages in flight still reaches the client as close 1003 (not a reset)", { timeout: 120_000 }, async () => {
  // The client sends pings, one invalid message, then more pings without
  // waiting: the close frame must not be lost to a TCP reset caused by
  // closing the socket with unread data.
  const server = await startServer();
  const clients = [];
  try {
    const channel = `chat:${uniq("badjson-busy")}`;
    const w = await watch(server, channel, clients);
    const token = await devToken(server, "mallory", "Mallory");
    const codes = [];
    for (let round = 0; round < 5; round++) {
      const bad = await WsClient.connect(server, { token, label: `mallory #${round}` });
      clients.push(bad);
      await bad.ok("subscribe", { channel });
      for (let i = 0; i < 50; i++) bad.sendRaw(JSON.stringify({ type: "ping", id: `a${i}` }));
      bad.sendRaw("{this is not json");
      for (let i = 0; i < 50; i++) bad.sendRaw(JSON.stringify({ type: "ping", id: `b${i}` }));
      const closed = await bad.waitClosed();
      codes.push(closed.code);
      assert.equal(bad.messages.filter((m) => m.type === "pong" && String(m.id).startsWith("b")).length, 0, "nothing after the invalid message is processed");
    }
    await w.more(10);
    await w.verify();
    assert.deepEqual(codes, [1003, 1003, 1003, 1003, 1003], "each client learns why it was closed");
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("WebSocket and Socket.IO: unknown types and malformed requests answer bad_request and the connection stays usable; nothing is lost for others", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const clients = [];
  try {
    const channel = `chat:${uniq("malformed")}`;
    const w = await watch(server, channel, clients);
    const token = await devToken(server, "mallory", "Mallory");

    const ws = await WsClient.connect(server, { token, label: "mallory ws" });
    clients.push(ws);
    await ws.ok("subscribe", { channel });
    const wsCases = [
      ["unknown type", "teleport", { channel }],
      ["subscribe without channel", "subscribe", {}],
      ["subscribe with a bad since", "subscribe", { channel, since: "yesterday" }],
      ["publish with a numeric channel", "message", { channel: 42, data: 1 }],
      ["publish without payload", "message", undefined],
      ["history of a bad name", "history", { channel: "no namespace" }],
    ];
    for (const [what, type, payload] of wsCases) {
      const err = await ws.fails(type, payload);
      assert.equal(err.code, "bad_request", `${what}: ${JSON.stringify(err)}`);
      await w.more(3);
    }
    // Raw messages: unknown fields, a JSON array, a string id.
    ws.sendRaw(JSON.stringify({ type: "ping", id: "extra-field", surprise: true }));
    ws.sendRaw(JSON.stringify({ type: "nope", id: "string-id" }));
    ws.sendRaw("[1,2,3]");
    await until(() => ws.messages.filter((m) => m.type === "error").length >= wsCases.length + 3, "errors for the raw messages");
    const rawErrors = ws.messages.filter((m) => m.type === "error").slice(-3);
    assert.deepEqual(rawErrors.map((m) => [m.id, m.payload.code]), [["extra-field", "bad_request"], ["string-id", "bad_request"], [undefined, "bad_request"]]);
    // Still usable.
    assert.equal((await ws.request("ping")).type, "pong");
    const wsPub = await ws.ok("message", { channel, data: { still: "here" } });
    w.accepted({ ...wsPub, data: { still: "here" } });
    assert.ok(ws.isOpen);

    const sio = await SioClient.connect(server, { token, label: "mallory sio" });
    clients.push(sio);
    await sio.ok("subscribe", { channel });
    const sioCases = [
      ["subscribe without channel", "subscribe", {}],
      ["subscribe with no argument", "subscribe", undefined],
      ["subscribe with a bad since", "subscribe", { channel, since: { offset: "x" } }],
      ["publish with a numeric channel", "publish", { channel: 42, data: 1 }],
      ["presence of a bad name", "presence", { channel: "nonamespace" }],
      ["history with a string argument", "history", "chat:lobby"],
    ];
    for (const [what, event, arg] of sioCases) {
      const err = await sio.fails(event, arg);
      assert.equal(err.code, "bad_request", `${what}: ${JSON.stringify(err)}`);
      await w.more(3);
    }
    const sioPub = await sio.ok("publish", { channel, data: { sio: "still here" } });
    w.accepted({ ...sioPub, data: { sio: "still here" } });
    assert.ok(sio.socket.connected);
    assert.deepEqual(sio.disconnects, []);

    await w.verify();
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("HTTP API: malformed bodies answer 400 with a JSON {code: bad_request}", { timeout: 120_000 }, async () => {
  const server = await startServer();
  try {
    const channel = `chat:${uniq("api")}`;
    const cases = [
      ["invalid JSON", "{not json"],
      ["no body", undefined],
      ["missing data", { channel }],
      ["missing channel", { data: 1 }],
      ["unknown field", { channel, data: 1, extra: true }],
      ["a numeric idempotency_key", { channel, data: 1, idempotency_key: 42 }],
      ["a numeric channel", { channel: 7, data: 1 }],
    ];
    const wrong = [];
    for (const [what, body] of cases) {
      const r = await api(server, "POST", "/api/publish", body);
      if (r.status !== 400 || r.body?.code !== "bad_request" || typeof r.body?.message !== "string") {
        wrong.push(`${what}: answered ${r.status} ${JSON.stringify(r.body)}`);
      }
    }
    assert.deepEqual(wrong, [], "every malformed body is answered 400 {code: bad_request, message}");
    const badName = await api(server, "POST", "/api/publish", { channel: "chat:has space", data: 1 });
    assert.deepEqual([badName.status, badName.body.code], [400, "bad_channel"]);
    const h = await history(server, channel);
    assert.equal(h.offset, 0, "nothing was published");
  } finally {
    await server.cleanup();
  }
});

test("oversized messages: WebSocket closes 1009, Socket.IO (websocket and polling) is closed, policy sizes answer message_too_large, API 413; nothing is lost for others", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const clients = [];
  try {
    const channel = `chat:${uniq("big")}`;
    const w = await watch(server, channel, clients);
    const token = await devToken(server, "mallory", "Mallory");
    const huge = "x".repeat(70_000); // over limits.max_message_size (65536)
    const large = "y".repeat(20_000); // under it, over chat's max_message_size (16384)

    // WebSocket: over the channel's size → error, the connection stays.
    const ws = await WsClient.connect(server, { token, label: "mallory ws" });
    clients.push(ws);
    await ws.ok("subscribe", { channel });
    assert.equal((await ws.fails("message", { channel, data: large })).code, "message_too_large");
    assert.equal((await ws.request("ping")).type, "pong", "still usable after message_too_large");
    // Over the frame limit → closed with 1009.
    ws.sendRaw(JSON.stringify({ type: "message", id: 99, payload: { channel, data: huge } }));
    const closed = await ws.waitClosed();
    assert.equal(closed.code, 1009, `closed with ${closed.code} ${closed.reason}`);
    await w.more(10);

    // Socket.IO over each transport.
    for (const transports of [["websocket"], ["polling"]]) {
      const sio = await SioClient.connect(server, { token, transports, label: `mallory sio ${transports}` });
      clients.push(sio);
      await sio.ok("subscribe", { channel });
      assert.equal((await sio.fails("publish", { channel, data: large })).code, "message_too_large");
      assert.ok(sio.socket.connected, "still connected after message_too_large");
      sio.socket.emit("publish", { channel, data: huge });
      const d = await sio.waitDisconnected();
      assert.ok(["transport close", "transport error"].includes(d.reason), `${transports}: disconnected with ${d.reason}`);
      await w.more(10);
    }

    // HTTP API.
    const r = await api(server, "POST", "/api/publish", { channel, data: large });
    assert.deepEqual([r.status, r.body.code], [413, "message_too_large"], JSON.stringify(r.body));
    const ok = await api(server, "POST", "/api/publish", { channel, data: "z".repeat(16_000) });
    assert.equal(ok.status, 200, "just under the channel's limit is fine");
    w.accepted({ ...ok.body, data: "z".repeat(16_000) });

    const all = await w.verify();
    assert.ok(all.every((p) => p.data !== large && p.data !== huge), "no oversized publication was stored");
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("subscription flood: beyond limits.max_subscriptions (128) → too_many_subscriptions on each protocol; nothing is lost for others", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const clients = [];
  try {
    const channel = `chat:${uniq("subs")}`;
    const w = await watch(server, channel, clients);
    const token = await devToken(server, "mallory", "Mallory");
    const others = Array.from({ length: 140 }, (_, i) => `chat:${uniq(`flood${i}`)}`);

    const ws = await WsClient.connect(server, { token, label: "mallory ws" });
    clients.push(ws);
    await ws.ok("subscribe", { channel });
    const wsAnswers = await Promise.all(others.map((c) => ws.request("subscribe", { channel: c })));
    const wsOk = wsAnswers.filter((a) => a.type === "ack").length;
    const wsRefused = wsAnswers.filter((a) => a.type === "error");
    assert.equal(wsOk, 127, "128 subscriptions in all");
    assert.equal(wsRefused.length, 13);
    for (const e of wsRefused) assert.equal(e.payload.code, "too_many_subscriptions");
    assert.equal((await ws.request("subscribe", { channel })).type, "ack", "subscribing again to a channel it has is not a new subscription");
    await ws.ok("unsubscribe", { channel: others[0] });
    await ws.ok("subscribe", { channel: others[139] });
    assert.equal((await ws.fails("subscribe", { channel: others[138] })).code, "too_many_subscriptions");
    const wsPub = await ws.ok("message", { channel, data: { ws: "still here" } });
    w.accepted({ ...wsPub, data: { ws: "still here" } });
    await w.more(10);

    const sio = await SioClient.connect(server, { token, label: "mallory sio" });
    clients.push(sio);
    await sio.ok("subscribe", { channel });
    const sioAnswers = await Promise.all(others.map((c) => sio.ack("subscribe", { channel: c })));
    assert.equal(sioAnswers.filter((a) => !a.error).length, 127);
    const sioRefused = sioAnswers.filter((a) => a.error);
    assert.equal(sioRefused.length, 13);
    for (const a of sioRefused) assert.equal(a.error.code, "too_many_subscriptions");
    const sioPub = await sio.ok("publish", { channel, data: { sio: "still here" } });
    w.accepted({ ...sioPub, data: { sio: "still here" } });
    await w.more(10);

    // SSE: at most 128 channel parameters per stream.
    const tooMany = await sseRefusal(server, { channels: [channel, ...others.slice(0, 128)], token });
    assert.deepEqual([tooMany.status, tooMany.body?.code], [400, "too_many_subscriptions"], JSON.stringify(tooMany.body));
    const justEnough = await SseClient.open(server, { channels: [channel, ...others.slice(0, 127)], token, label: "mallory sse (128)" });
    clients.push(justEnough);

    await w.verify();
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

const FLOOD_LIMITS = ["--set", "limits.messages_per_second=5", "--set", "limits.messages_burst=5", "--set", "limits.abuse_close_after=10"];

const FLOOD_ROUNDS = 5;

test("WebSocket request flood: beyond the message rate → rate_limited, then close 1008 \"rate limit exceeded\"; nothing is lost for others", { timeout: 120_000 }, async () => {
  const server = await startServer(FLOOD_LIMITS);
  const clients = [];
  try {
    const channel = `chat:${uniq("flood-ws")}`;
    const w = await watch(server, channel, clients);
    const token = await devToken(server, "mallory", "Mallory");

    // Several flooding connections, one after the other (each has its own bucket).
    const rounds = [];
    for (let round = 0; round < FLOOD_ROUNDS; round++) {
      const ws = await WsClient.connect(server, { token, label: `mallory ws #${round}` });
      clients.push(ws);
      await ws.ok("subscribe", { channel });
      const answers = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => ws.request("message", { channel, data: { round, flood: i } })));
      const closed = await ws.waitClosed();
      // The acked ones are real publications (with their data).
      answers.forEach((a, i) => {
        if (a.status === "fulfilled" && a.value.type === "ack") w.accepted({ ...a.value.payload, data: { round, flood: i } });
      });
      const acks = answers.filter((a) => a.status === "fulfilled" && a.value.type === "ack");
      const limited = answers.filter((a) => a.status === "fulfilled" && a.value.type === "error");
      for (const e of limited) assert.equal(e.value.payload.code, "rate_limited");
      // A: acked, L: refused, x: no answer before the close.
      const seen = `round ${round}: answers ${answers.map((a) => (a.status !== "fulfilled" ? "x" : a.value.type === "ack" ? "A" : "L")).join("")}, then close ${closed.code} ${JSON.stringify(closed.reason)}`;
      rounds.push({ closed, acks: acks.length, limited: limited.length, seen });
      await w.more(5);
    }

    // A well-behaved connection of the same user is not affected.
    const calm = await WsClient.connect(server, { token, label: "mallory ws (calm)" });
    clients.push(calm);
    await calm.ok("subscribe", { channel });
    const calmPub = await calm.ok("message", { channel, data: { calm: true } });
    w.accepted({ ...calmPub, data: { calm: true } });
    await until(async () => (await presence(server, channel)).find((e) => e.user === "mallory")?.connections === 1, "the flooding connections to leave the presence");
    // Nothing lost for the others (answers lost with a reset connection
    // leave stored publications unacknowledged: checked below, not here).
    await w.verify({ allowUnacked: rounds.some((r) => r.closed.code !== 1008) });
    const all = rounds.map((r) => r.seen).join("\n  ");
    for (const r of rounds) {
      assert.deepEqual([r.closed.code, r.closed.reason], [1008, "rate limit exceeded"], `each flooding client is told why it was closed:\n  ${all}`);
      assert.ok(r.acks >= 1 && r.acks <= 10, `some publications within the burst were accepted:\n  ${all}`);
      assert.ok(r.limited >= 1, `then requests were refused:\n  ${all}`);
      assert.ok(r.limited < 40 - r.acks, `the connection was closed before answering the whole flood:\n  ${all}`);
    }
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("Socket.IO request flood: beyond the message rate → rate_limited acks, then a server disconnect; nothing is lost for others", { timeout: 120_000 }, async () => {
  const server = await startServer(FLOOD_LIMITS);
  const clients = [];
  try {
    const channel = `chat:${uniq("flood-sio")}`;
    const w = await watch(server, channel, clients);
    const token = await devToken(server, "mallory", "Mallory");

    const rounds = [];
    for (let round = 0; round < FLOOD_ROUNDS; round++) {
      const sio = await SioClient.connect(server, { token, label: `mallory sio #${round}` });
      clients.push(sio);
      await sio.ok("subscribe", { channel });
      const answers = await Promise.allSettled(Array.from({ length: 40 }, (_, i) => sio.ack("publish", { channel, data: { round, sioFlood: i } }, 3000)));
      const d = await sio.waitDisconnected();
      const seen = `round ${round}: answers ${answers.map((a) => (a.status !== "fulfilled" ? "x" : a.value.error ? "L" : "A")).join("")}, disconnect ${JSON.stringify(d.reason)}`;
      const acks = answers.map((a, i) => [i, a]).filter(([, a]) => a.status === "fulfilled" && !a.value.error);
      const limited = answers.filter((a) => a.status === "fulfilled" && a.value.error);
      for (const a of limited) assert.equal(a.value.error.code, "rate_limited");
      for (const [i, a] of acks) w.accepted({ ...a.value, data: { round, sioFlood: i } });
      rounds.push({ reason: d.reason, active: sio.socket.active, acks: acks.length, limited: limited.length, seen });
      await w.more(5);
    }

    // Another connection of the same user is not affected.
    const calm = await SioClient.connect(server, { token, label: "mallory sio (calm)" });
    clients.push(calm);
    await calm.ok("subscribe", { channel });
    const calmPub = await calm.ok("publish", { channel, data: { calm: true } });
    w.accepted({ ...calmPub, data: { calm: true } });
    await until(async () => (await presence(server, channel)).find((e) => e.user === "mallory")?.connections === 1, "the flooding connections to leave the presence");
    // The disconnect can drop the acks of publications accepted just before
    // it (they are stored and delivered, their publisher is gone): allowed.
    await w.verify({ allowUnacked: true });
    const all = rounds.map((r) => r.seen).join("\n  ");
    for (const r of rounds) {
      assert.equal(r.reason, "io server disconnect", `a namespace disconnect, not a lost transport (after which the client would reconnect and flood again):\n  ${all}`);
      assert.equal(r.active, false, `after a server disconnect the official client does not reconnect on its own:\n  ${all}`);
      assert.ok(r.acks <= 10, `at most the burst was accepted:\n  ${all}`);
      assert.ok(r.limited >= 1, `then events were refused (answered rate_limited):\n  ${all}`);
    }
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("Socket.IO flood of unknown events: counted against the message rate → bad_request, then rate_limited, then a server disconnect", { timeout: 60_000 }, async () => {
  const server = await startServer(FLOOD_LIMITS);
  const clients = [];
  try {
    const token = await devToken(server, "mallory", "Mallory");
    const sio = await SioClient.connect(server, { token, label: "mallory sio (unknown events)" });
    clients.push(sio);
    // Without acks first (nothing to answer), then with acks: the burst is
    // 5, so the acked ones are refused.
    for (let i = 0; i < 3; i++) sio.socket.emit("no-such-event", { i });
    const answers = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => sio.ack("made-up", { i }, 3000)));
    const d = await sio.waitDisconnected();
    const codes = answers.map((a) => (a.status === "fulfilled" ? a.value.error?.code : "x"));
    const seen = `answers ${JSON.stringify(codes)}, disconnect ${JSON.stringify(d.reason)}`;
    assert.ok(codes.every((c) => c === "bad_request" || c === "rate_limited" || c === "x"), seen);
    assert.ok(codes.filter((c) => c === "bad_request").length <= 5, `at most the burst is answered bad_request: ${seen}`);
    assert.ok(codes.includes("rate_limited"), `then unknown events are refused for their rate: ${seen}`);
    assert.equal(d.reason, "io server disconnect", `and the flood ends in a namespace disconnect: ${seen}`);
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("slow consumers (WebSocket and Socket.IO clients that stop reading) are disconnected; what they got is an in-order prefix; nothing is lost for others", { timeout: 120_000 }, async () => {
  const server = await startServer(["--set", "limits.max_queued_bytes=200000"]);
  const clients = [];
  try {
    const channel = `chat:${uniq("slow")}`;
    const w = await watch(server, channel, clients);
    const token = await devToken(server, "sloth", "Sloth");
    const ws = await WsClient.connect(server, { token, label: "sloth ws" });
    clients.push(ws);
    await ws.ok("subscribe", { channel });
    const sio = await SioClient.connect(server, { token, transports: ["websocket"], label: "sloth sio" });
    clients.push(sio);
    await sio.ok("subscribe", { channel });
    // Stop reading: the kernel buffers fill up, then the server's queues.
    ws.ws._socket.pause();
    sio.socket.io.engine.transport.ws._socket.pause();

    const big = "x".repeat(15_000);
    const pubs = [];
    let n = 0;
    const slothGone = async () => !(await presence(server, channel)).some((e) => e.user === "sloth");
    await until(async () => {
      const batch = await Promise.all(Array.from({ length: 10 }, () => {
        const data = { big, n: n++ };
        return publish(server, channel, data).then((r) => ({ ...r, data }));
      }));
      pubs.push(...batch);
      return slothGone();
    }, "both slow consumers to be disconnected", 60_000);
    w.accepted(...pubs);
    ws.ws._socket.resume();
    sio.socket.io.engine.transport.ws._socket.resume();
    await ws.waitClosed(15_000);
    await sio.waitDisconnected(15_000);
    await w.verify();
    const ordered = [...pubs].sort((a, b) => a.offset - b.offset);
    const before = w.publisher.acked.filter((p) => p.offset < ordered[0].offset);
    for (const [who, got] of [["ws", ws.publications(channel)], ["socket.io", sio.publications(channel)]]) {
      assert.ok(got.length < before.length + pubs.length, `${who} did not get everything (it was cut off)`);
      // An in-order prefix of the channel's stream: no gap, no reordering.
      for (let i = 1; i < got.length; i++) assert.equal(got[i].offset, got[i - 1].offset + 1, `${who}: contiguous offsets`);
    }
    // The slow client resumes from what it saw and gets the rest.
    const last = ws.publications(channel).at(-1) ?? { offset: 0, epoch: pubs[0].epoch };
    const back = await WsClient.connect(server, { token, label: "sloth back" });
    clients.push(back);
    const ack = await back.ok("subscribe", { channel, since: { offset: last.offset, epoch: pubs[0].epoch } }, 15_000);
    assert.equal(ack.recovered, true);
    assert.equal(ack.publications[0]?.offset, last.offset + 1);
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});
