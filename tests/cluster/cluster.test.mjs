// Cluster interop: two (or three) nodes sharing one Redis, in every adapter
// mode, for every kind pair of CLUSTER_KINDS. Every operation is started on
// one node and observed on the other, in both directions.
//
//   CLUSTER_KINDS=node-node node --test --test-concurrency=1 tests/cluster/
//
// The node contract (env, handlers) is at the top of node-server.mjs.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  MODES,
  TEST_TIMEOUT_MS,
  WAIT_MS,
  ack,
  eventually,
  kindPairs,
  record,
  room,
  slowAck,
  sorted,
  startCluster,
  until,
  waitFor,
} from "./harness.mjs";

const opts = { timeout: TEST_TIMEOUT_MS };

/** The payloads (first argument) of every `event` a socket receives. */
function inbox(socket, event = "msg") {
  const seen = [];
  socket.on(event, (payload) => seen.push(payload));
  return seen;
}

const isMarker = (tag) => (p) => p && typeof p === "object" && p.marker === tag;

/**
 * Publishes a marker to the whole namespace from `publisher` and waits until
 * every socket of `sockets` got it. Broadcasts from one node reach a socket
 * in the order they were published, so whatever a socket has not received
 * before the marker, it will not receive.
 */
async function mark(publisher, sockets, tag = `m-${Math.random().toString(16).slice(2)}`) {
  const waits = sockets.map((s) => waitFor(s, "msg", { filter: isMarker(tag), label: `marker ${tag} on ${s.id}` }));
  publisher.emit("publish-all", { marker: tag });
  await Promise.all(waits);
  return tag;
}

/** Drops markers from an inbox. */
const content = (box) => box.filter((p) => !(p && typeof p === "object" && "marker" in p));

/** Both directions of a pair: [[from, to], [to, from]]. */
const directions = ([a, b]) => [
  [a, b],
  [b, a],
];

const label = (node) => `${node.kind}#${node.port}`;

/**
 * Publishes `payload` to `target` from `publisher` until every socket of
 * `expect` received it: for rooms joined remotely, whose subscription (sharded
 * dynamic: the room's channel) is set up asynchronously on the other node.
 */
async function publishUntilReceived(publisher, target, expect, what) {
  let n = 0;
  await eventually(async () => {
    const nonce = `${what}-${n++}`;
    const waits = expect.map((s) =>
      waitFor(s, "msg", { timeoutMs: 300, filter: (p) => p?.nonce === nonce, label: `${nonce} on ${s.id}` }),
    );
    publisher.emit("publish", target, { nonce });
    await Promise.all(waits);
  }, what);
}

/** sockets-info of `room`, sorted by id. */
async function socketsInfo(socket, r) {
  const info = await ack(socket, "sockets-info", r);
  assert.ok(Array.isArray(info), `sockets-info must ack an array, got ${JSON.stringify(info)}`);
  return [...info].sort((x, y) => (x.id < y.id ? -1 : 1));
}

const ids = (sockets) => sorted(sockets.map((s) => s.id));

/** Client options of a long-polling client (the default is WebSocket only). */
const polling = { transports: ["polling"] };

for (const mode of MODES) {
  for (const pair of kindPairs()) {
    describe(`${mode.name} ${pair.join("-")}`, () => {
      const start = (t, kinds = pair) => startCluster(t, { kinds, env: mode.env, label: mode.name });

      test("room broadcast reaches the room on both nodes, not the sockets outside it", opts, async (t) => {
        const c = await start(t);
        const [A, B] = c.nodes;
        const sockets = await Promise.all([c.connect(A), c.connect(A, polling), c.connect(B, polling), c.connect(B)]);
        const [aIn, aOut, bIn, bOut] = sockets;
        assert.equal(aIn.hello.node, A.name);
        assert.equal(bIn.hello.node, B.name);
        const r = room();
        assert.equal(await ack(aIn, "join", r), "ok");
        assert.equal(await ack(bIn, "join", r), "ok");
        const boxes = sockets.map((s) => inbox(s));
        // A→B then B→A: the publisher is outside the room.
        for (const [step, publisher] of [
          [1, aOut],
          [2, bOut],
        ]) {
          publisher.emit("publish", r, { step, text: `to ${r}` });
          await mark(publisher, sockets);
          const want = Array.from({ length: step }, (_, i) => ({ step: i + 1, text: `to ${r}` }));
          assert.deepEqual(content(boxes[0]), want, `socket in ${r} on ${label(A)}`);
          assert.deepEqual(content(boxes[2]), want, `socket in ${r} on ${label(B)}`);
          assert.deepEqual(content(boxes[1]), [], `socket outside ${r} on ${label(A)}`);
          assert.deepEqual(content(boxes[3]), [], `socket outside ${r} on ${label(B)}`);
        }
        // Every socket got both markers (publish-all = whole namespace, both nodes).
        for (const box of boxes) assert.equal(box.filter((p) => p?.marker).length, 2);
      });

      test("publish-all reaches every socket of both nodes, the sender included", opts, async (t) => {
        const c = await start(t);
        const [A, B] = c.nodes;
        const sockets = await Promise.all([c.connect(A), c.connect(A), c.connect(B), c.connect(B)]);
        const boxes = sockets.map((s) => inbox(s));
        for (const [from, publisher] of [
          ["A", sockets[0]],
          ["B", sockets[2]],
        ]) {
          const waits = sockets.map((s) => waitFor(s, "msg", { filter: (p) => p?.from === from }));
          publisher.emit("publish-all", { from, n: [1, 2, 3] });
          await Promise.all(waits);
        }
        for (const box of boxes) assert.deepEqual(box, [{ from: "A", n: [1, 2, 3] }, { from: "B", n: [1, 2, 3] }]);
      });

      test("publish-except skips the excepted rooms on both nodes", opts, async (t) => {
        const c = await start(t);
        const [A, B] = c.nodes;
        const sockets = await Promise.all([c.connect(A), c.connect(A), c.connect(B), c.connect(B)]);
        const [a1, a2, b1, b2] = sockets;
        const r = room("r");
        const x = room("x");
        for (const s of sockets) await ack(s, "join", r);
        await ack(a2, "join", x);
        await ack(b2, "join", x);
        for (const [publisher, other] of [
          [a1, b1],
          [b1, a1],
        ]) {
          const boxes = sockets.map((s) => inbox(s));
          // except one room: the sender (in r, not in x) gets it too.
          publisher.emit("publish-except", r, x, { except: "x" });
          // except an array: a room and the other node's socket id.
          publisher.emit("publish-except", r, [x, other.id], { except: "x+id" });
          await mark(publisher, sockets);
          const got = (s) => content(boxes[sockets.indexOf(s)]);
          assert.deepEqual(got(publisher), [{ except: "x" }, { except: "x+id" }], `publisher on ${publisher.hello.node}`);
          assert.deepEqual(got(other), [{ except: "x" }], `socket ${other.hello.node} excepted by id`);
          assert.deepEqual(got(a2), [], "socket in x on A");
          assert.deepEqual(got(b2), [], "socket in x on B");
          for (const s of sockets) s.removeAllListeners("msg");
        }
      });

      test("binary payloads cross the cluster intact, as Buffers", opts, async (t) => {
        const c = await start(t);
        const [A, B] = c.nodes;
        const [a1, a2, b1, b2] = await Promise.all([c.connect(A), c.connect(A, polling), c.connect(B), c.connect(B, polling)]);
        const r = room();
        for (const s of [a2, b2]) await ack(s, "join", r);
        const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
        for (const [publisher, receivers] of [
          [a1, [a2, b2]],
          [b1, [a2, b2]],
        ]) {
          const payload = {
            from: publisher.hello.node,
            bin: Buffer.from([0, 1, 2, 254, 255]),
            nested: { list: [Buffer.from("héllo wörld"), 7, null, { deep: all }], empty: Buffer.alloc(0) },
            text: "plain",
          };
          const waits = receivers.map((s) => waitFor(s, "msg", { filter: (p) => p?.from === publisher.hello.node }));
          publisher.emit("publish", r, payload);
          for (const [got] of await Promise.all(waits)) {
            assert.ok(Buffer.isBuffer(got.bin), `bin is a Buffer, got ${Object.prototype.toString.call(got.bin)}`);
            assert.ok(Buffer.isBuffer(got.nested.list[0]));
            assert.ok(Buffer.isBuffer(got.nested.list[3].deep));
            assert.ok(Buffer.isBuffer(got.nested.empty));
            assert.deepEqual(got, payload);
          }
          // A Buffer as the whole payload, to the whole namespace.
          const raw = Buffer.from(`raw from ${publisher.hello.node}`);
          const rawWaits = [a1, a2, b1, b2].map((s) => waitFor(s, "msg", { filter: (p) => Buffer.isBuffer(p) && p.equals(raw) }));
          publisher.emit("publish-all", raw);
          await Promise.all(rawWaits);
        }
      });

      test("count sees the sockets of both nodes", opts, async (t) => {
        const c = await start(t);
        const [A, B] = c.nodes;
        const onA = await Promise.all([c.connect(A), c.connect(A), c.connect(A)]);
        const onB = await Promise.all([c.connect(B), c.connect(B)]);
        for (const s of [...onA, ...onB]) assert.equal(await ack(s, "count"), 5, `count from ${s.hello.node}`);
        // A socket leaving is seen from the other node.
        const left = waitFor(onB[1], "disconnect");
        onB[1].disconnect();
        await left;
        await until(async () => (await ack(onA[0], "count")) === 4, "count 4 from A after a socket of B left");
        assert.equal(await ack(onB[0], "count"), 4);
      });

      test("server-side emit reaches the other node only; server-ask gets its pong", opts, async (t) => {
        const c = await start(t);
        const [A, B] = c.nodes;
        const [a1, a2, b1, b2] = await Promise.all([c.connect(A), c.connect(A), c.connect(B), c.connect(B)]);
        const boxes = new Map([a1, a2, b1, b2].map((s) => [s, inbox(s, "relayed")]));
        // From A: the clients of B get "relayed", those of A do not.
        await Promise.all([
          ...[b1, b2].map((s) => waitFor(s, "relayed")),
          Promise.resolve(a1.emit("server-emit", { from: "A", bin: Buffer.from([1, 2]) })),
        ]);
        // From B: now the clients of A get it. Had A relayed its own emit, its
        // clients would have got it before B's (A handled its emit first).
        await Promise.all([
          ...[a1, a2].map((s) => waitFor(s, "relayed")),
          Promise.resolve(b1.emit("server-emit", { from: "B" })),
        ]);
        for (const s of [a1, a2]) assert.deepEqual(boxes.get(s), [{ from: "B" }], `relayed on A (${s.id})`);
        // The classic adapter sends server-side emits as JSON (JSON.stringify
        // of the request, node_modules/@socket.io/redis-adapter/dist/index.js
        // serverSideEmit), so a Buffer arrives as its toJSON() form; the
        // sharded and streams adapters use msgpack when there is binary.
        const bin = mode.env.ADAPTER === "redis" ? { type: "Buffer", data: [1, 2] } : Buffer.from([1, 2]);
        for (const s of [b1, b2]) assert.deepEqual(boxes.get(s), [{ from: "A", bin }], `relayed on B (${s.id})`);
        // With acks: one answer per other server.
        assert.deepEqual(await ack(a1, "server-ask"), ["pong"]);
        assert.deepEqual(await ack(b1, "server-ask"), ["pong"]);
      });

      test("three nodes: server-ask gets two pongs, count and server-emit span all", opts, async (t) => {
        const c = await start(t, [pair[0], pair[1], pair[0]]);
        const [A, B, C] = c.nodes;
        const [a, b, cc] = await Promise.all([c.connect(A), c.connect(B), c.connect(C)]);
        for (const s of [a, b, cc]) {
          assert.deepEqual(await ack(s, "server-ask"), ["pong", "pong"], `server-ask from ${s.hello.node}`);
          assert.equal(await ack(s, "count"), 3, `count from ${s.hello.node}`);
        }
        const boxes = [a, b, cc].map((s) => inbox(s, "relayed"));
        await Promise.all([waitFor(b, "relayed"), waitFor(cc, "relayed"), Promise.resolve(a.emit("server-emit", 1))]);
        await Promise.all([waitFor(a, "relayed"), waitFor(cc, "relayed"), Promise.resolve(b.emit("server-emit", 2))]);
        assert.deepEqual(boxes, [[2], [1], [1, 2]]);
      });

      test("broadcast with acks spans both nodes", opts, async (t) => {
        const c = await start(t);
        const [A, B] = c.nodes;
        const sockets = await Promise.all([c.connect(A), c.connect(A, polling), c.connect(B), c.connect(B, polling), c.connect(B)]);
        const asked = new Map(sockets.map((s) => [s, 0]));
        for (const s of sockets) {
          s.on("question", (cb) => {
            asked.set(s, asked.get(s) + 1);
            cb(s.id);
          });
        }
        for (const asker of [sockets[0], sockets[2]]) {
          const res = await ack(asker, "ask-all");
          assert.ok(Array.isArray(res), `ask-all from ${asker.hello.node} must ack an array, got ${JSON.stringify(res)}`);
          assert.deepEqual(sorted(res), ids(sockets), `answers to ask-all from ${asker.hello.node}`);
        }
        for (const s of sockets) assert.equal(asked.get(s), 2, `socket ${s.id} asked once per ask-all`);
      });

      test("broadcast with acks: a silent client makes it time out with the partial answers", opts, async (t) => {
        const c = await start(t);
        const [A, B] = c.nodes;
        const [a1, a2, b1, silent] = await Promise.all([c.connect(A), c.connect(A), c.connect(B), c.connect(B)]);
        for (const s of [a1, a2, b1]) s.on("question", (cb) => cb(s.id));
        let silentAsked = 0;
        silent.on("question", () => silentAsked++); // never acks
        // Both directions at once (the timeout is 3 s each).
        const t0 = Date.now();
        const [fromA, fromB] = await Promise.all([slowAck(a1, 10_000, "ask-all"), slowAck(b1, 10_000, "ask-all")]);
        const elapsed = Date.now() - t0;
        for (const res of [fromA, fromB]) {
          assert.equal(res?.error, "timeout", `ask-all must time out, got ${JSON.stringify(res)}`);
          assert.deepEqual(sorted(res.responses), ids([a1, a2, b1]));
        }
        assert.equal(silentAsked, 2);
        assert.ok(elapsed >= 2800 && elapsed < 6000, `timed out after ${elapsed} ms, expected ~3000`);
      });

      test("join-all and leave-all reach the sockets of the other node", opts, async (t) => {
        const c = await start(t);
        const [A, B] = c.nodes;
        const sockets = await Promise.all([c.connect(A), c.connect(A), c.connect(B), c.connect(B)]);
        const [a1, , b1] = sockets;
        for (const [from, to] of [
          [a1, b1],
          [b1, a1],
        ]) {
          const J = room("all");
          assert.equal(await ack(from, "join-all", J), "ok");
          // io.socketsJoin is fire-and-forget for the other nodes (the
          // adapters publish the request and return): poll until it took effect.
          await until(async () => JSON.stringify((await socketsInfo(to, J)).map((s) => s.id)) === JSON.stringify(ids(sockets)),
            `every socket in ${J} (seen from ${to.hello.node})`);
          for (const info of await socketsInfo(from, J)) assert.ok(info.rooms.includes(J));
          await publishUntilReceived(to, J, sockets, `to ${J}`);

          assert.equal(await ack(from, "leave-all", J), "ok");
          await until(async () => (await socketsInfo(to, J)).length === 0, `${J} empty (seen from ${to.hello.node})`);
          const boxes = sockets.map((s) => inbox(s));
          to.emit("publish", J, { after: "leave-all" });
          from.emit("publish", J, { after: "leave-all" });
          await mark(from, sockets);
          await mark(to, sockets);
          for (const box of boxes) assert.deepEqual(content(box), []);
          for (const s of sockets) s.removeAllListeners("msg");
        }
      });

      test("kick disconnects the sockets of the room on both nodes", opts, async (t) => {
        const c = await start(t);
        const [A, B] = c.nodes;
        for (const [P, Q] of directions([A, B])) {
          const [kicker, pIn, qIn, qOut] = await Promise.all([c.connect(P), c.connect(P), c.connect(Q), c.connect(Q)]);
          const K = room("kick");
          await ack(pIn, "join", K);
          await ack(qIn, "join", K);
          const gone = [pIn, qIn].map((s) => waitFor(s, "disconnect"));
          assert.equal(await ack(kicker, "kick", K), "ok");
          for (const [reason] of await Promise.all(gone)) assert.equal(reason, "io server disconnect");
          assert.ok(kicker.connected && qOut.connected);
          await until(async () => (await ack(qOut, "count")) === 2, `count 2 after the kick from ${label(P)}`);
          kicker.disconnect();
          qOut.disconnect();
          await until(async () => {
            const s = await c.connect(P);
            const n = await ack(s, "count");
            s.disconnect();
            return n === 1;
          }, "the cluster empty again");
        }
      });

      test("remote-emit, remote-join, remote-leave, remote-disconnect on a socket of the other node", opts, async (t) => {
        const c = await start(t);
        const [A, B] = c.nodes;
        for (const [P, Q] of directions([A, B])) {
          const [driver, target, bystander] = await Promise.all([c.connect(P), c.connect(Q), c.connect(Q)]);
          // remote-emit, JSON and binary.
          const direct = record(target, "direct");
          const bystanderDirect = record(bystander, "direct");
          const got = waitFor(target, "direct", { filter: (p) => p?.bin });
          assert.equal(await ack(driver, "remote-emit", target.id, { text: "hi" }), "ok");
          assert.equal(await ack(driver, "remote-emit", target.id, { bin: Buffer.from([9, 8, 7]) }), "ok");
          await got;
          assert.deepEqual(direct, [[{ text: "hi" }], [{ bin: Buffer.from([9, 8, 7]) }]]);
          assert.ok(Buffer.isBuffer(direct[1][0].bin));
          assert.deepEqual(bystanderDirect, []);
          // remote-join: asynchronous on the other node.
          const R = room("remote");
          assert.equal(await ack(driver, "remote-join", target.id, R), "ok");
          await until(async () => (await socketsInfo(driver, R)).map((s) => s.id).join() === target.id, `${target.id} in ${R}`);
          const [info] = await socketsInfo(bystander, target.id);
          assert.deepEqual(info.rooms, sorted([target.id, R]));
          await publishUntilReceived(driver, R, [target], `to ${R}`);
          // remote-leave.
          assert.equal(await ack(driver, "remote-leave", target.id, R), "ok");
          await until(async () => (await socketsInfo(driver, R)).length === 0, `${R} empty`);
          const box = inbox(target);
          driver.emit("publish", R, { after: "leave" });
          await mark(driver, [target]);
          assert.deepEqual(content(box), []);
          // remote-disconnect (the client forgets its id once disconnected).
          const targetId = target.id;
          const gone = waitFor(target, "disconnect");
          assert.equal(await ack(driver, "remote-disconnect", targetId), "ok");
          assert.equal((await gone)[0], "io server disconnect");
          assert.ok(bystander.connected);
          await until(async () => (await socketsInfo(driver, targetId)).length === 0, `${targetId} gone`);
          // Unknown ids.
          assert.deepEqual(await ack(driver, "remote-emit", "no-such-socket-id-000", 1), { error: "not found" });
          driver.disconnect();
          bystander.disconnect();
        }
      });

      test("sockets-info describes a socket of the other node: id, rooms, data, handshake", opts, async (t) => {
        const c = await start(t);
        const [A, B] = c.nodes;
        for (const [[P, Q], transport] of directions([A, B]).map((d, i) => [d, ["websocket", "polling"][i]])) {
          const asker = await c.connect(P);
          const auth = { token: `tok-${Q.kind}`, n: 1, nested: { ok: true } };
          const subject = await c.connect(Q, { auth, query: { q: "x y", lang: "fr" }, transports: [transport] });
          const r1 = room("r1");
          const r2 = room("r2");
          await ack(subject, "join", r1);
          await ack(subject, "join", r2);
          const data = { user: "bob", tags: ["a", "b"], n: 42, nested: { deep: [1, null, "x"] } };
          assert.equal(await ack(subject, "set-data", data), "ok");

          const [remote, ...more] = await socketsInfo(asker, subject.id);
          assert.equal(more.length, 0);
          assert.equal(remote.id, subject.id);
          assert.deepEqual(remote.rooms, sorted([subject.id, r1, r2]));
          assert.deepEqual(remote.data, data);
          assert.deepEqual(remote.handshake.auth, auth);
          assert.equal(remote.handshake.query.q, "x y");
          assert.equal(remote.handshake.query.lang, "fr");
          assert.equal(remote.handshake.query.EIO, "4");
          assert.equal(remote.handshake.query.transport, transport);
          assert.match(remote.handshake.address, /127\.0\.0\.1$/);
          assert.equal(remote.handshake.xdomain, false);
          assert.equal(remote.handshake.secure, false);
          assert.match(remote.handshake.url, /^\/socket\.io\/\?/);
          // The remote view equals the view of the socket's own node.
          const [local] = await socketsInfo(subject, subject.id);
          assert.deepEqual(remote, local);
          // A room spanning both nodes lists both sockets.
          await ack(asker, "join", r1);
          const both = await socketsInfo(subject, r1);
          assert.deepEqual(both.map((s) => s.id), ids([asker, subject]));
          assert.deepEqual(both.find((s) => s.id === asker.id).data, {}, "socket.data defaults to {}");
          asker.disconnect();
          subject.disconnect();
        }
      });

      test("rooms lists the rooms held on both nodes", opts, async (t) => {
        const c = await start(t);
        const [A, B] = c.nodes;
        const [a1, a2, b1] = await Promise.all([c.connect(A), c.connect(A), c.connect(B)]);
        const ra = room("ra");
        const rb = room("rb");
        const shared = room("shared");
        await ack(a1, "join", ra);
        await ack(b1, "join", rb);
        await ack(a2, "join", shared);
        await ack(b1, "join", shared);
        const want = sorted([a1.id, a2.id, b1.id, ra, rb, shared]);
        assert.deepEqual(await ack(a1, "rooms"), want, "rooms from A");
        assert.deepEqual(await ack(b1, "rooms"), want, "rooms from B");
        await ack(b1, "leave", rb);
        assert.deepEqual(await ack(a2, "rooms"), sorted([a1.id, a2.id, b1.id, ra, shared]), "rooms from A after B left rb");
      });
    });
  }
}

// Sanity: the waits above are bounded well under the per-test timeout.
assert.ok(WAIT_MS * 4 < TEST_TIMEOUT_MS);
