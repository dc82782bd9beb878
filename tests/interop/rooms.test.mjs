// Rooms: broadcasts reach exactly the members; sender excluded/included as asked.
import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, waitFor, ack, record, sleep, GRACE_MS, TEST_TIMEOUT_MS } from "./helpers.mjs";

const opts = { timeout: TEST_TIMEOUT_MS };

/**
 * Absence check without a long sleep: each given socket does an echo round
 * trip (anything already queued for it arrives before the ack), then a short
 * grace period covers delivery on other connections.
 */
async function settle(...sockets) {
  await Promise.all(sockets.map((s) => ack(s, "echo", "sync")));
  await sleep(GRACE_MS);
}

/** Rooms of a socket, without its own private room (the socket id), if the server lists it. */
async function roomsOf(socket) {
  const rooms = await ack(socket, "rooms");
  assert.ok(Array.isArray(rooms), `rooms ack must be an array, got ${JSON.stringify(rooms)}`);
  assert.deepEqual(rooms, [...rooms].sort(), "rooms must be sorted");
  return rooms.filter((r) => r !== socket.id);
}

for (const transports of [["websocket"], ["polling"]]) {
  const tr = transports[0];

  test(`[${tr}] to-room reaches the other members only; to-room-all includes the sender`, opts, async (t) => {
    const f = await setup(t);
    const [a, b, c] = await Promise.all([
      f.connected("/", { transports }),
      f.connected("/", { transports }),
      f.connected("/", { transports }),
    ]);
    const gotA = record(a, "room-msg");
    const gotB = record(b, "room-msg");
    const gotC = record(c, "room-msg");

    assert.equal(await ack(a, "join", "r1"), "ok");
    assert.equal(await ack(b, "join", "r1"), "ok");

    // socket.to(room): members except the sender.
    const bGets = waitFor(b, "room-msg");
    assert.equal(await ack(a, "to-room", "r1", { n: 1, text: "hi" }), "ok");
    assert.deepEqual(await bGets, [{ n: 1, text: "hi" }]);
    await settle(a, b, c);
    assert.deepEqual(gotA, [], "sender must be excluded by to-room");
    assert.deepEqual(gotB, [[{ n: 1, text: "hi" }]], "member B gets exactly one message");
    assert.deepEqual(gotC, [], "non-member C must get nothing");

    // io.to(room): every member including the sender.
    const aGets = waitFor(a, "room-msg");
    const bGets2 = waitFor(b, "room-msg");
    assert.equal(await ack(a, "to-room-all", "r1", { n: 2 }), "ok");
    assert.deepEqual(await aGets, [{ n: 2 }]);
    assert.deepEqual(await bGets2, [{ n: 2 }]);
    await settle(a, b, c);
    assert.deepEqual(gotA, [[{ n: 2 }]]);
    assert.deepEqual(gotB, [[{ n: 1, text: "hi" }], [{ n: 2 }]]);
    assert.deepEqual(gotC, [], "non-member C must get nothing");
  });

  test(`[${tr}] a non-member can broadcast into a room`, opts, async (t) => {
    const f = await setup(t);
    const [a, b, c] = await Promise.all([
      f.connected("/", { transports }),
      f.connected("/", { transports }),
      f.connected("/", { transports }),
    ]);
    const gotC = record(c, "room-msg");
    await ack(a, "join", "r2");
    await ack(b, "join", "r2");
    const aGets = waitFor(a, "room-msg");
    const bGets = waitFor(b, "room-msg");
    assert.equal(await ack(c, "to-room-all", "r2", "from-outside"), "ok");
    assert.deepEqual(await aGets, ["from-outside"]);
    assert.deepEqual(await bGets, ["from-outside"]);
    await settle(c);
    assert.deepEqual(gotC, [], "sender is not a member, so it gets nothing even with to-room-all");
  });

  test(`[${tr}] leave stops room delivery; rooms lists joined rooms sorted`, opts, async (t) => {
    const f = await setup(t);
    const [a, b] = await Promise.all([f.connected("/", { transports }), f.connected("/", { transports })]);
    const gotA = record(a, "room-msg");

    assert.deepEqual(await roomsOf(a), [], "a fresh socket is in no named room");
    for (const r of ["zeta", "alpha", "mid"]) assert.equal(await ack(a, "join", r), "ok");
    assert.deepEqual(await roomsOf(a), ["alpha", "mid", "zeta"]);
    // Joining twice is idempotent.
    assert.equal(await ack(a, "join", "alpha"), "ok");
    assert.deepEqual(await roomsOf(a), ["alpha", "mid", "zeta"]);

    const aGets = waitFor(a, "room-msg");
    await ack(b, "to-room", "mid", "m1");
    assert.deepEqual(await aGets, ["m1"]);

    assert.equal(await ack(a, "leave", "mid"), "ok");
    assert.deepEqual(await roomsOf(a), ["alpha", "zeta"]);
    await ack(b, "to-room", "mid", "m2");
    await settle(a, b);
    assert.deepEqual(gotA, [["m1"]], "after leave, no more messages from that room");

    // Leaving a room one is not in is harmless.
    assert.equal(await ack(a, "leave", "never-joined"), "ok");
    assert.deepEqual(await roomsOf(a), ["alpha", "zeta"]);
  });

  test(`[${tr}] a socket in several rooms gets one copy per broadcast`, opts, async (t) => {
    const f = await setup(t);
    const [a, b] = await Promise.all([f.connected("/", { transports }), f.connected("/", { transports })]);
    const gotB = record(b, "room-msg");
    await ack(b, "join", "x");
    await ack(b, "join", "y");
    const bGets = waitFor(b, "room-msg");
    await ack(a, "to-room", "x", "only-x");
    assert.deepEqual(await bGets, ["only-x"]);
    await settle(a, b);
    assert.deepEqual(gotB, [["only-x"]]);
  });
}

test("broadcast to a room after a member disconnected still reaches the others", opts, async (t) => {
  const f = await setup(t);
  const [a, b] = await Promise.all([f.connected("/"), f.connected("/")]);
  await ack(a, "join", "gone");
  await ack(b, "join", "gone");
  const gotB = record(b, "room-msg");
  a.disconnect();
  // c joins the room and sends to-room-all; only b and c get it (a is gone, no error).
  const c = await f.connected("/");
  await ack(c, "join", "gone");
  const cGets = waitFor(c, "room-msg");
  assert.equal(await ack(c, "to-room-all", "gone", "after-a-left"), "ok");
  assert.deepEqual(await cGets, ["after-a-left"]);
  await settle(b, c);
  assert.deepEqual(gotB, [["after-a-left"]]);
});
