// The mounting examples: axum 0.8 (examples/axum.rs) and plain hyper 1
// (examples/hyper.rs), driven by the official client on every transport.
import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, waitFor, waitConnect, ack, exampleBin, TEST_TIMEOUT_MS } from "./helpers.mjs";

const opts = { timeout: TEST_TIMEOUT_MS };
const transports = [["websocket"], ["polling"], ["polling", "websocket"]];

for (const t of transports) {
  test(`axum example over ${t.join("+")}: message-back to the sender, chat to the others`, opts, async (ctx) => {
    const f = await setup(ctx, { bin: exampleBin("axum") });
    const page = await fetch(f.url + "/");
    assert.equal(page.status, 200);
    assert.match(await page.text(), /Hello from axum/);

    const a = await f.connected("/", { transports: t });
    const b = await f.connected("/", { transports: t });
    const back = waitFor(a, "message-back");
    const chat = waitFor(b, "chat");
    a.emit("message", "hi", { n: 1 });
    assert.deepEqual(await back, ["hi", { n: 1 }]);
    assert.deepEqual(await chat, ["hi", { n: 1 }]);
  });

  test(`hyper example over ${t.join("+")}: hello with the peer address, echo ack`, opts, async (ctx) => {
    const f = await setup(ctx, { bin: exampleBin("hyper") });
    const socket = f.client("/", { transports: t });
    const hello = waitFor(socket, "hello");
    await waitConnect(socket);
    const [text] = await hello;
    assert.match(text, /127\.0\.0\.1/);
    assert.deepEqual(await ack(socket, "echo", { x: [1, 2] }), { x: [1, 2] });
    const missing = await fetch(f.url + "/elsewhere");
    assert.equal(missing.status, 404);
  });
}
