// The chat example: JWT auth, presence, rooms, messages, typing, private messages.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  setup,
  chatBin,
  signJwt,
  waitFor,
  waitConnect,
  waitConnectError,
  ack,
  record,
  until,
  sleep,
  GRACE_MS,
  TEST_TIMEOUT_MS,
} from "./helpers.mjs";

const opts = { timeout: TEST_TIMEOUT_MS };
const SECRET = "interop-test-secret";
const nowSec = () => Math.floor(Date.now() / 1000);

function token(sub, name, { exp = nowSec() + 3600, secret = SECRET, extra = {} } = {}) {
  const claims = { sub, exp, ...extra };
  if (name !== undefined) claims.name = name;
  return signJwt(claims, secret);
}

async function chatServer(t, env = {}) {
  return setup(t, { bin: chatBin(), env: { JWT_SECRET: SECRET, ...env } });
}

/** A client socket for `sub`, with listeners for `events` recorded from the very start. */
function tab(f, sub, name, { events = [], transports } = {}) {
  const socket = f.client("/", { auth: { token: token(sub, name) }, ...(transports ? { transports } : {}) });
  const seen = {};
  for (const e of events) seen[e] = record(socket, e);
  return { socket, seen };
}

async function connectedTab(f, sub, name, o) {
  const t = tab(f, sub, name, o);
  await waitConnect(t.socket);
  return t;
}

/** Absence check: a round trip on each socket, then a short grace period. */
async function settle(...sockets) {
  await Promise.all(sockets.map((s) => ack(s, "presence:list")));
  await sleep(GRACE_MS);
}

function assertMessageId(res, what) {
  assert.ok(res && typeof res === "object", `${what}: ack must be an object, got ${JSON.stringify(res)}`);
  assert.equal(res.error, undefined, `${what}: unexpected error ${JSON.stringify(res)}`);
  assert.equal(typeof res.id, "string", `${what}: ack must carry a string id, got ${JSON.stringify(res)}`);
  assert.ok(res.id.length > 0, `${what}: id must not be empty`);
  return res.id;
}

function assertTs(ts) {
  assert.equal(typeof ts, "number", `ts must be a number, got ${JSON.stringify(ts)}`);
  assert.ok(Number.isInteger(ts), `ts must be an integer (ms epoch), got ${ts}`);
  assert.ok(ts > 1e12, `ts must be milliseconds since the epoch, got ${ts}`);
}

// ---------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------

test("chat: missing token -> connect_error unauthorized {reason: 'missing token'}", opts, async (t) => {
  const f = await chatServer(t);
  for (const o of [{}, { auth: {} }, { auth: { notToken: "x" } }]) {
    const socket = f.client("/", o);
    const err = await waitConnectError(socket);
    assert.equal(err.message, "unauthorized", `options ${JSON.stringify(o)}`);
    assert.deepEqual(err.data, { reason: "missing token" }, `options ${JSON.stringify(o)}`);
    assert.equal(socket.connected, false);
  }
});

test("chat: invalid or expired token -> connect_error unauthorized {reason: 'invalid token'}", opts, async (t) => {
  const f = await chatServer(t);
  const valid = token("mallory", "Mallory");
  const [h, , s] = valid.split(".");
  const forgedPayload = Buffer.from(JSON.stringify({ sub: "admin", name: "Admin", exp: nowSec() + 3600 })).toString("base64url");
  const noneHeader = Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url");
  const cases = {
    "not a JWT": "not-a-jwt",
    "two segments": valid.split(".").slice(0, 2).join("."),
    "signed with another secret": token("mallory", "Mallory", { secret: "some-other-secret" }),
    "signed with the default secret while JWT_SECRET is set": token("mallory", "Mallory", { secret: "dev-secret" }),
    "tampered payload": `${h}.${forgedPayload}.${s}`,
    "alg none": `${noneHeader}.${forgedPayload}.`,
    "expired an hour ago": token("mallory", "Mallory", { exp: nowSec() - 3600 }),
  };
  for (const [label, tok] of Object.entries(cases)) {
    const socket = f.client("/", { auth: { token: tok } });
    const seen = record(socket, "presence:online");
    const err = await waitConnectError(socket);
    assert.equal(err.message, "unauthorized", label);
    assert.deepEqual(err.data, { reason: "invalid token" }, label);
    assert.equal(socket.connected, false, label);
    assert.deepEqual(seen, [], label);
  }
  // A valid token still works on the same server.
  const ok = f.client("/", { auth: { token: valid } });
  await waitConnect(ok);
  assert.deepEqual(await ack(ok, "presence:list"), { online: ["mallory"] });
});

test("chat: JWT_SECRET defaults to 'dev-secret'", opts, async (t) => {
  const f = await chatServer(t, { JWT_SECRET: undefined });
  const good = f.client("/", { auth: { token: token("dana", "Dana", { secret: "dev-secret" }) } });
  await waitConnect(good);
  const bad = f.client("/", { auth: { token: token("eve", "Eve", { secret: SECRET }) } });
  const err = await waitConnectError(bad);
  assert.equal(err.message, "unauthorized");
  assert.deepEqual(err.data, { reason: "invalid token" });
});

// ---------------------------------------------------------------------------
// Presence
// ---------------------------------------------------------------------------

test("chat: presence counts a user with two tabs once; offline only when the last tab closes", opts, async (t) => {
  const f = await chatServer(t);
  const events = ["presence:online", "presence:offline"];
  const bob = await connectedTab(f, "bob", "Bob", { events });

  // Alice, first tab: everybody else hears she is online; she does not hear it herself.
  const bobHearsAlice = waitFor(bob.socket, "presence:online");
  const a1 = await connectedTab(f, "alice", "Alice", { events, transports: ["websocket"] });
  assert.deepEqual(await bobHearsAlice, [{ userId: "alice", name: "Alice" }]);

  // Alice, second tab: no new presence:online anywhere.
  const a2 = await connectedTab(f, "alice", "Alice", { events, transports: ["polling"] });
  await settle(bob.socket, a1.socket, a2.socket);
  assert.deepEqual(bob.seen["presence:online"], [[{ userId: "alice", name: "Alice" }]], "alice announced once");
  assert.deepEqual(a1.seen["presence:online"], [], "no presence:online to alice's own tabs");
  assert.deepEqual(a2.seen["presence:online"], []);
  for (const s of [bob, a1, a2]) {
    assert.deepEqual(await ack(s.socket, "presence:list"), { online: ["alice", "bob"] }, "alice listed once");
  }

  // Closing one of alice's two tabs: she is still online.
  assert.deepEqual(await ack(a1.socket, "room:join", { room: "probe" }), { ok: true, online: ["alice"] });
  a1.socket.disconnect();
  // Wait until the server has processed the disconnect (a1 left room "probe").
  await until(async () => {
    const res = await ack(bob.socket, "room:join", { room: "probe" });
    return JSON.stringify(res.online) === JSON.stringify(["bob"]);
  }, "the server to process alice's first tab disconnecting");
  await settle(bob.socket, a2.socket);
  assert.deepEqual(bob.seen["presence:offline"], [], "alice still has a tab open: no presence:offline");
  assert.deepEqual(await ack(bob.socket, "presence:list"), { online: ["alice", "bob"] });

  // Closing her last tab: presence:offline for everybody.
  const bobHearsOffline = waitFor(bob.socket, "presence:offline");
  a2.socket.disconnect();
  assert.deepEqual(await bobHearsOffline, [{ userId: "alice" }]);
  assert.deepEqual(await ack(bob.socket, "presence:list"), { online: ["bob"] });
  await settle(bob.socket);
  assert.equal(bob.seen["presence:offline"].length, 1, "exactly one presence:offline");

  // Coming back online is announced again.
  const again = waitFor(bob.socket, "presence:online");
  await connectedTab(f, "alice", "Alice");
  assert.deepEqual(await again, [{ userId: "alice", name: "Alice" }]);
});

test("chat: presence:offline when a single-tab user disconnects", opts, async (t) => {
  const f = await chatServer(t);
  const bob = await connectedTab(f, "bob", "Bob");
  const carol = await connectedTab(f, "carol", "Carol");
  assert.deepEqual(await ack(bob.socket, "presence:list"), { online: ["bob", "carol"] });
  const bobHears = waitFor(bob.socket, "presence:offline");
  carol.socket.disconnect();
  assert.deepEqual(await bobHears, [{ userId: "carol" }]);
  assert.deepEqual(await ack(bob.socket, "presence:list"), { online: ["bob"] });
});

// ---------------------------------------------------------------------------
// Rooms and messages
// ---------------------------------------------------------------------------

test("chat: room:join reports the online users of the room, room:leave acks ok", opts, async (t) => {
  const f = await chatServer(t);
  const alice = await connectedTab(f, "alice", "Alice");
  const alice2 = await connectedTab(f, "alice", "Alice");
  const bob = await connectedTab(f, "bob", "Bob");
  assert.deepEqual(await ack(bob.socket, "room:join", { room: "general" }), { ok: true, online: ["bob"] });
  assert.deepEqual(await ack(alice.socket, "room:join", { room: "general" }), { ok: true, online: ["alice", "bob"] });
  assert.deepEqual(await ack(alice2.socket, "room:join", { room: "general" }), { ok: true, online: ["alice", "bob"] });
  assert.deepEqual(await ack(bob.socket, "room:leave", { room: "general" }), { ok: true });
  assert.deepEqual(await ack(bob.socket, "room:join", { room: "other" }), { ok: true, online: ["bob"] });
});

test("chat: message:send acks an id and fans message:new out to the room (sender included, others not)", opts, async (t) => {
  const f = await chatServer(t);
  const events = ["message:new"];
  const alice = await connectedTab(f, "alice", "Alice", { events });
  const bob = await connectedTab(f, "bob", "Bob", { events, transports: ["polling"] });
  const carol = await connectedTab(f, "carol", "Carol", { events }); // online, not in the room
  await ack(alice.socket, "room:join", { room: "general" });
  await ack(bob.socket, "room:join", { room: "general" });

  const aliceGets = waitFor(alice.socket, "message:new");
  const bobGets = waitFor(bob.socket, "message:new");
  const res = await ack(alice.socket, "message:send", { room: "general", text: "hello 🌍" });
  const id = assertMessageId(res, "message:send");
  const [msgA] = await aliceGets;
  const [msgB] = await bobGets;
  assert.deepEqual(msgA, msgB, "sender and member get the same message");
  assertTs(msgA.ts);
  assert.deepEqual(msgA, { id, room: "general", from: "alice", name: "Alice", text: "hello 🌍", ts: msgA.ts });

  // A second message gets a different id.
  const bobGets2 = waitFor(bob.socket, "message:new");
  const id2 = assertMessageId(await ack(bob.socket, "message:send", { room: "general", text: "hi alice" }), "second send");
  assert.notEqual(id2, id, "message ids must be unique");
  const [msg2] = await bobGets2;
  assert.equal(msg2.id, id2);
  assert.equal(msg2.from, "bob");
  assert.equal(msg2.name, "Bob");

  await settle(alice.socket, bob.socket, carol.socket);
  assert.equal(alice.seen["message:new"].length, 2);
  assert.equal(bob.seen["message:new"].length, 2);
  assert.deepEqual(carol.seen["message:new"], [], "a user outside the room gets nothing");
});

test("chat: message:send validation: not in room, empty, too long, non-string", opts, async (t) => {
  const f = await chatServer(t);
  const events = ["message:new"];
  const alice = await connectedTab(f, "alice", "Alice", { events });
  const bob = await connectedTab(f, "bob", "Bob", { events });
  await ack(bob.socket, "room:join", { room: "general" });

  assert.deepEqual(await ack(alice.socket, "message:send", { room: "general", text: "let me in" }), { error: "not in room" });

  await ack(alice.socket, "room:join", { room: "general" });
  for (const [label, payload] of [
    ["empty text", { room: "general", text: "" }],
    ["2001 characters", { room: "general", text: "a".repeat(2001) }],
    ["number text", { room: "general", text: 42 }],
    ["null text", { room: "general", text: null }],
  ]) {
    assert.deepEqual(await ack(alice.socket, "message:send", payload), { error: "invalid message" }, label);
  }
  await settle(alice.socket, bob.socket);
  assert.deepEqual(bob.seen["message:new"], [], "rejected messages are not broadcast");
  assert.deepEqual(alice.seen["message:new"], []);

  // Exactly 2000 characters is fine.
  const bobGets = waitFor(bob.socket, "message:new");
  const long = "b".repeat(2000);
  assertMessageId(await ack(alice.socket, "message:send", { room: "general", text: long }), "2000 chars");
  const [msg] = await bobGets;
  assert.equal(msg.text, long);

  // After leaving, sending is refused and nothing more is received.
  assert.deepEqual(await ack(bob.socket, "room:leave", { room: "general" }), { ok: true });
  assert.deepEqual(await ack(bob.socket, "message:send", { room: "general", text: "x" }), { error: "not in room" });
  assertMessageId(await ack(alice.socket, "message:send", { room: "general", text: "bob left" }), "after leave");
  await settle(alice.socket, bob.socket);
  assert.equal(bob.seen["message:new"].length, 1, "bob left the room before 'bob left'");
});

test("chat: typing is relayed to the others in the room only", opts, async (t) => {
  const f = await chatServer(t);
  const events = ["typing"];
  const alice = await connectedTab(f, "alice", "Alice", { events });
  const bob = await connectedTab(f, "bob", "Bob", { events });
  const carol = await connectedTab(f, "carol", "Carol", { events }); // not in the room
  await ack(alice.socket, "room:join", { room: "general" });
  await ack(bob.socket, "room:join", { room: "general" });

  const start = waitFor(bob.socket, "typing");
  alice.socket.emit("typing:start", { room: "general" });
  assert.deepEqual(await start, [{ room: "general", userId: "alice", typing: true }]);

  const stop = waitFor(bob.socket, "typing");
  alice.socket.emit("typing:stop", { room: "general" });
  assert.deepEqual(await stop, [{ room: "general", userId: "alice", typing: false }]);

  await settle(alice.socket, bob.socket, carol.socket);
  assert.deepEqual(alice.seen.typing, [], "the typing user does not get her own typing events");
  assert.deepEqual(carol.seen.typing, [], "users outside the room get no typing events");
  assert.equal(bob.seen.typing.length, 2);
});

test("chat: message:private reaches every tab of the recipient and the sender's other tabs only", opts, async (t) => {
  const f = await chatServer(t);
  const events = ["message:private"];
  const a1 = await connectedTab(f, "alice", "Alice", { events, transports: ["websocket"] });
  const a2 = await connectedTab(f, "alice", "Alice", { events, transports: ["polling"] });
  const b1 = await connectedTab(f, "bob", "Bob", { events, transports: ["websocket"] });
  const b2 = await connectedTab(f, "bob", "Bob", { events });
  const carol = await connectedTab(f, "carol", "Carol", { events });

  const waits = [b1, b2, a2].map((x) => waitFor(x.socket, "message:private"));
  const id = assertMessageId(await ack(a1.socket, "message:private", { to: "bob", text: "psst" }), "message:private");
  const got = (await Promise.all(waits)).map(([m]) => m);
  assertTs(got[0].ts);
  const expected = { id, from: "alice", name: "Alice", to: "bob", text: "psst", ts: got[0].ts };
  for (const m of got) assert.deepEqual(m, expected);

  await settle(a1.socket, a2.socket, b1.socket, b2.socket, carol.socket);
  assert.deepEqual(a1.seen["message:private"], [], "the sending socket does not get its own private message");
  assert.equal(a2.seen["message:private"].length, 1, "sender's other tab gets one copy");
  assert.equal(b1.seen["message:private"].length, 1, "recipient tab 1 gets one copy");
  assert.equal(b2.seen["message:private"].length, 1, "recipient tab 2 gets one copy");
  assert.deepEqual(carol.seen["message:private"], [], "third parties get nothing");

  // And the reply from one of bob's tabs.
  const replyWaits = [a1, a2, b1].map((x) => waitFor(x.socket, "message:private"));
  const replyId = assertMessageId(await ack(b2.socket, "message:private", { to: "alice", text: "hey" }), "reply");
  for (const [m] of await Promise.all(replyWaits)) {
    assert.equal(m.id, replyId);
    assert.equal(m.from, "bob");
    assert.equal(m.to, "alice");
    assert.equal(m.text, "hey");
  }
  await settle(b2.socket, carol.socket);
  assert.deepEqual(
    b2.seen["message:private"].map(([m]) => m.id),
    [id],
    "the replying socket only has alice's message, not its own reply",
  );
  assert.deepEqual(carol.seen["message:private"], []);
});
