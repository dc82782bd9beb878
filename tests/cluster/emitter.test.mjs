// @socket.io/redis-emitter (classic mode only: it speaks the protocol of the
// classic @socket.io/redis-adapter) publishing to a cluster of two nodes of
// every kind pair of CLUSTER_KINDS.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { Emitter } from "@socket.io/redis-emitter";
import {
  MODES,
  TEST_TIMEOUT_MS,
  ack,
  kindPairs,
  room,
  sorted,
  startCluster,
  testRedisClient,
  until,
  waitFor,
} from "./harness.mjs";

const opts = { timeout: TEST_TIMEOUT_MS };
const classic = MODES.find((m) => m.name === "redis");

function inbox(socket, event = "msg") {
  const seen = [];
  socket.on(event, (payload) => seen.push(payload));
  return seen;
}

/** Two nodes (A, B) with two clients each; a1 and b1 in room `r`. */
async function setup(t, pair) {
  const c = await startCluster(t, { kinds: pair, env: classic.env, label: "emitter" });
  const [A, B] = c.nodes;
  const [a1, a2, b1, b2] = await Promise.all([c.connect(A), c.connect(A), c.connect(B), c.connect(B)]);
  const r = room("em");
  await ack(a1, "join", r);
  await ack(b1, "join", r);
  const redis = await testRedisClient(t);
  const emitter = new Emitter(redis, { key: c.prefix });
  return { c, A, B, a1, a2, b1, b2, r, emitter, all: [a1, a2, b1, b2] };
}

async function socketIdsIn(socket, r) {
  return sorted((await ack(socket, "sockets-info", r)).map((s) => s.id));
}

for (const pair of kindPairs()) {
  describe(`emitter redis ${pair.join("-")}`, () => {
    test("emitter.to(room).emit reaches the room on both nodes, JSON and binary; emitter.emit reaches all", opts, async (t) => {
      const { b1, r, emitter, all } = await setup(t, pair);
      const boxes = all.map((s) => inbox(s));
      const bin = { bin: Buffer.from([0, 1, 2, 255]), nested: [Buffer.from("x"), { n: 1 }] };
      const markers = all.map((s) => waitFor(s, "msg", { filter: (p) => p?.marker }));
      emitter.to(r).emit("msg", { n: 1 });
      emitter.to(r).emit("msg", bin);
      emitter.to(r).except(b1.id).emit("msg", { n: 2, except: "b1" });
      // Same Redis connection, so the marker is delivered after the above.
      emitter.emit("msg", { marker: true });
      await Promise.all(markers);
      assert.deepEqual(boxes[0], [{ n: 1 }, bin, { n: 2, except: "b1" }, { marker: true }], "a1 (in room, on A)");
      assert.deepEqual(boxes[2], [{ n: 1 }, bin, { marker: true }], "b1 (in room, on B)");
      assert.ok(Buffer.isBuffer(boxes[0][1].bin) && Buffer.isBuffer(boxes[2][1].nested[0]));
      assert.deepEqual(boxes[1], [{ marker: true }], "a2 (not in room)");
      assert.deepEqual(boxes[3], [{ marker: true }], "b2 (not in room)");
    });

    test("emitter.serverSideEmit reaches every node", opts, async (t) => {
      const { emitter, all } = await setup(t, pair);
      const waits = all.map((s) => waitFor(s, "relayed"));
      emitter.serverSideEmit("relay", { from: "emitter", list: [1, "two"] });
      for (const [payload] of await Promise.all(waits)) assert.deepEqual(payload, { from: "emitter", list: [1, "two"] });
    });

    test("emitter.in(room).socketsJoin / socketsLeave act on both nodes", opts, async (t) => {
      const { a1, a2, b1, b2, r, emitter } = await setup(t, pair);
      const J = room("joined");
      emitter.in(r).socketsJoin(J);
      // Fire-and-forget (a Redis PUBLISH): poll until both nodes applied it.
      await until(async () => (await socketIdsIn(a2, J)).join() === sorted([a1.id, b1.id]).join(), `a1 and b1 in ${J}`);
      const waits = [a1, b1].map((s) => waitFor(s, "msg", { filter: (p) => p?.to === J }));
      const others = [a2, b2].map((s) => inbox(s));
      emitter.to(J).emit("msg", { to: J });
      const marks = [a2, b2].map((s) => waitFor(s, "msg", { filter: (p) => p?.marker }));
      emitter.emit("msg", { marker: 1 });
      await Promise.all([...waits, ...marks]);
      for (const box of others) assert.deepEqual(box, [{ marker: 1 }]);
      emitter.in(J).socketsLeave(J);
      await until(async () => (await socketIdsIn(b2, J)).length === 0, `${J} empty`);
    });

    test("emitter.in(room).disconnectSockets(true) disconnects the room on both nodes", opts, async (t) => {
      const { a1, a2, b1, b2, r, emitter } = await setup(t, pair);
      const gone = [a1, b1].map((s) => waitFor(s, "disconnect"));
      emitter.in(r).disconnectSockets(true);
      for (const [reason] of await Promise.all(gone)) assert.equal(reason, "io server disconnect");
      assert.ok(a2.connected && b2.connected);
      await until(async () => (await ack(a2, "count")) === 2, "count 2 after the disconnect");
      assert.equal(await ack(b2, "count"), 2);
    });
  });
}
