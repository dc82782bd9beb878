// Broadcast with acknowledgements: io.timeout(ms).emit_with_ack("ping-all") to every socket of "/".
import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, ack, record, waitConnect, TEST_TIMEOUT_MS } from "./helpers.mjs";

const opts = { timeout: TEST_TIMEOUT_MS };

const sortByJson = (arr) => [...arr].sort((x, y) => (JSON.stringify(x) < JSON.stringify(y) ? -1 : 1));

/** Answer every ping-all with `answer`; returns the list of argument lists received (ack fn removed). */
function answerPings(socket, answer) {
  const seen = [];
  socket.on("ping-all", (...args) => {
    const cb = args.pop();
    assert.equal(typeof cb, "function", "ping-all must request an ack");
    seen.push(args);
    cb(answer);
  });
  return seen;
}

function assertShape(res) {
  assert.ok(res && typeof res === "object", `broadcast-ack must ack an object, got ${JSON.stringify(res)}`);
  assert.ok(Array.isArray(res.responses), `responses must be an array, got ${JSON.stringify(res)}`);
  assert.ok("error" in res, `ack must have an "error" key, got ${JSON.stringify(res)}`);
}

test("broadcast with ack: every client answers -> one response per client, error null", opts, async (t) => {
  const f = await setup(t);
  const [a, b, c] = await Promise.all([
    f.connected("/", { transports: ["websocket"] }),
    f.connected("/", { transports: ["polling"] }),
    f.connected("/"),
  ]);
  const seenA = answerPings(a, "pong-a");
  const seenB = answerPings(b, { from: "b", n: 2 });
  const seenC = answerPings(c, "pong-c");

  const res = await ack(a, "broadcast-ack", 3000);
  assertShape(res);
  assert.equal(res.error, null);
  assert.equal(res.responses.length, 3, `one response per client: ${JSON.stringify(res.responses)}`);
  assert.deepEqual(sortByJson(res.responses), sortByJson(["pong-a", { from: "b", n: 2 }, "pong-c"]));
  // The requesting socket is included (io-level broadcast); each client was asked once.
  assert.equal(seenA.length, 1);
  assert.equal(seenB.length, 1);
  assert.equal(seenC.length, 1);
});

test("broadcast with ack: one client never answers -> error timeout with partial responses", opts, async (t) => {
  const f = await setup(t);
  const [a, b, silent] = await Promise.all([f.connected("/"), f.connected("/"), f.connected("/")]);
  answerPings(a, "pong-a");
  answerPings(b, "pong-b");
  const silentSeen = record(silent, "ping-all"); // receives but never calls the ack

  const res = await ack(a, "broadcast-ack", 300);
  assertShape(res);
  assert.equal(res.error, "timeout");
  assert.deepEqual(sortByJson(res.responses), ["pong-a", "pong-b"], "answers of the clients that did answer");
  assert.equal(silentSeen.length, 1, "the silent client was asked too");
  // Everybody is still connected and usable afterwards.
  for (const s of [a, b, silent]) assert.equal(await ack(s, "echo", "ok"), "ok");
});

test("broadcast with ack: a single client (the requester) answers itself", opts, async (t) => {
  const f = await setup(t);
  const a = await f.connected("/");
  answerPings(a, 1);
  const res = await ack(a, "broadcast-ack", 3000);
  assertShape(res);
  assert.deepEqual(res, { responses: [1], error: null });
});

test("broadcast with ack only targets namespace '/'", opts, async (t) => {
  const f = await setup(t);
  const manager = f.manager();
  const main = f.track(manager.socket("/"));
  const second = f.track(manager.socket("/second"));
  const other = await f.connected("/");
  await Promise.all([waitConnect(main), waitConnect(second)]);
  answerPings(main, "main");
  answerPings(other, "other");
  const secondSeen = record(second, "ping-all");

  const res = await ack(main, "broadcast-ack", 3000);
  assertShape(res);
  assert.equal(res.error, null);
  assert.deepEqual(sortByJson(res.responses), ["main", "other"]);
  assert.equal(await ack(second, "echo", "sync"), "sync");
  assert.deepEqual(secondSeen, [], "sockets of /second are not part of the '/' broadcast");
});
