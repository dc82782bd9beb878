// Events and acknowledgements in both directions.
import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, waitFor, ack, ackAll, TEST_TIMEOUT_MS } from "./helpers.mjs";

const opts = { timeout: TEST_TIMEOUT_MS };

for (const transports of [["websocket"], ["polling"]]) {
  const tr = transports[0];

  test(`[${tr}] client -> server acks carry arbitrary JSON arguments`, opts, async (t) => {
    const f = await setup(t);
    const socket = await f.connected("/", { transports });
    const cases = [
      ["a string"],
      [42],
      [-1.5],
      [0],
      [true],
      [false],
      [null],
      [""],
      [[]],
      [{}],
      [{ nested: { deep: [1, { x: "y" }, null] }, unicode: "héllo wörld ✓ 🚀", quote: 'a "b" \\ c' }],
      [[1, "2", [3, [4]]]],
      ["multi", 2, { three: 3 }],
      ["line\nbreak\ttab", "\u0000nul", "\u2028sep"],
    ];
    for (const args of cases) {
      assert.deepEqual(await ackAll(socket, "echo", ...args), args, `echo ack of ${JSON.stringify(args)}`);
    }
  });

  test(`[${tr}] echo with no arguments acks with no arguments`, opts, async (t) => {
    const f = await setup(t);
    const socket = await f.connected("/", { transports });
    assert.deepEqual(await ackAll(socket, "echo"), []);
  });

  test(`[${tr}] server -> client event (echo-event) with several arguments`, opts, async (t) => {
    const f = await setup(t);
    const socket = await f.connected("/", { transports });
    const back = waitFor(socket, "echo-event");
    socket.emit("echo-event", "x", { y: [1, 2] }, 3, null);
    assert.deepEqual(await back, ["x", { y: [1, 2] }, 3, null]);
  });

  test(`[${tr}] many concurrent acks are matched to the right calls`, opts, async (t) => {
    const f = await setup(t);
    const socket = await f.connected("/", { transports });
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => ack(socket, "echo", { i })));
    assert.deepEqual(
      results,
      Array.from({ length: 100 }, (_, i) => ({ i })),
    );
  });

  test(`[${tr}] server -> client ack: the client answers "question"`, opts, async (t) => {
    const f = await setup(t);
    const socket = await f.connected("/", { transports });
    let questionArgs;
    socket.on("question", (...args) => {
      const cb = args.pop();
      assert.equal(typeof cb, "function", "server must request an ack for 'question'");
      questionArgs = args;
      cb({ forty: 2 }, "ignored second arg");
    });
    const res = await ack(socket, "ask-client", 5000);
    assert.ok(questionArgs, "client must have received 'question'");
    assert.deepEqual(res, { answer: { forty: 2 } });
  });

  test(`[${tr}] server -> client ack with a string answer`, opts, async (t) => {
    const f = await setup(t);
    const socket = await f.connected("/", { transports });
    socket.on("question", (...args) => args.pop()("42"));
    assert.deepEqual(await ack(socket, "ask-client", 5000), { answer: "42" });
  });

  test(`[${tr}] server -> client ack times out when the client never answers`, opts, async (t) => {
    const f = await setup(t);
    const socket = await f.connected("/", { transports });
    let asked = 0;
    socket.on("question", () => {
      asked++; // deliberately never call the ack
    });
    const res = await ack(socket, "ask-client", 200);
    assert.deepEqual(res, { error: "timeout" });
    assert.equal(asked, 1, "client must have received exactly one 'question'");
    // The connection is still fine afterwards.
    assert.equal(await ack(socket, "echo", "ok?"), "ok?");
  });

  test(`[${tr}] a late client answer after the server timeout is ignored`, opts, async (t) => {
    const f = await setup(t);
    const socket = await f.connected("/", { transports });
    let lateCb;
    socket.on("question", (...args) => {
      lateCb = args.pop();
    });
    assert.deepEqual(await ack(socket, "ask-client", 100), { error: "timeout" });
    assert.equal(typeof lateCb, "function");
    lateCb("too late"); // the server must ignore this ack
    assert.equal(await ack(socket, "echo", "after"), "after");
    assert.equal(socket.connected, true);
  });
}
