// Transports: WebSocket only, HTTP long-polling only, polling -> websocket upgrade, heartbeat.
import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, waitFor, waitConnect, ack, ackAll, record, withTimeout, TEST_TIMEOUT_MS, WAIT_MS } from "./helpers.mjs";

const opts = { timeout: TEST_TIMEOUT_MS };

/** Checks shared by every transport: welcome, echo with ack, echo-event, ordering. */
async function exerciseBasics(socket, welcome) {
  assert.equal(socket.connected, true);
  assert.equal(typeof socket.id, "string");
  assert.ok(socket.id.length > 0, "socket id must not be empty");
  assert.deepEqual(welcome, [{ id: socket.id }], "welcome must carry the socket id");

  assert.equal(await ack(socket, "echo", "hello"), "hello");
  assert.deepEqual(await ackAll(socket, "echo", 1, "two", { three: [3] }, null, true), [1, "two", { three: [3] }, null, true]);

  const back = waitFor(socket, "echo-event");
  socket.emit("echo-event", { a: 1 }, "b");
  assert.deepEqual(await back, [{ a: 1 }, "b"]);

  // Many packets in a row must arrive complete and in order (polling batches them).
  const N = 50;
  const got = [];
  const all = new Promise((resolve) => {
    socket.on("echo-event", function onEcho(i) {
      got.push(i);
      if (got.length === N) {
        socket.off("echo-event", onEcho);
        resolve();
      }
    });
  });
  for (let i = 0; i < N; i++) socket.emit("echo-event", i);
  await withTimeout(all, WAIT_MS, `${N} echo-event replies (got ${got.length})`);
  assert.deepEqual(got, Array.from({ length: N }, (_, i) => i), "echo-event replies must keep emission order");
}

test("websocket-only transport: connect, welcome, events and acks", opts, async (t) => {
  const f = await setup(t);
  const socket = f.client("/", { transports: ["websocket"] });
  const welcome = waitFor(socket, "welcome");
  await waitConnect(socket);
  assert.equal(socket.io.engine.transport.name, "websocket");
  await exerciseBasics(socket, await welcome);
  assert.equal(socket.io.engine.transport.name, "websocket");
});

test("polling-only transport: connect, welcome, events and acks, never upgrades", opts, async (t) => {
  const f = await setup(t);
  const socket = f.client("/", { transports: ["polling"] });
  const upgrades = record(socket.io.engine, "upgrade");
  const welcome = waitFor(socket, "welcome");
  await waitConnect(socket);
  assert.equal(socket.io.engine.transport.name, "polling");
  await exerciseBasics(socket, await welcome);
  // Large-ish payload over polling (well below the default 1 MB limit).
  const big = "x".repeat(200_000);
  assert.equal(await ack(socket, "echo", big), big);
  assert.equal(socket.io.engine.transport.name, "polling");
  assert.equal(upgrades.length, 0, "a polling-only client must not upgrade");
});

test("default transports: starts on polling and upgrades to websocket", opts, async (t) => {
  const f = await setup(t);
  const socket = f.client("/"); // default transports: polling first, then upgrade
  const engine = socket.io.engine;
  let initialTransport;
  engine.once("open", () => {
    initialTransport = engine.transport.name;
  });
  const upgradeErrors = record(engine, "upgradeError");
  const upgraded = waitFor(engine, "upgrade", { label: "engine.io 'upgrade' event (polling -> websocket)" }).catch((err) => {
    if (upgradeErrors.length) err.message += `; upgradeError: ${upgradeErrors.map((a) => a[0]?.message).join(", ")}`;
    throw err;
  });
  const welcome = waitFor(socket, "welcome");
  await waitConnect(socket);
  assert.equal(initialTransport, "polling", "the engine must open over polling first");

  const [transport] = await upgraded;
  assert.equal(transport.name, "websocket");
  assert.equal(socket.io.engine.transport.name, "websocket", "transport after upgrade");
  assert.equal(upgradeErrors.length, 0);
  assert.equal(socket.connected, true);

  // The session survives the upgrade: same socket id, events still flow.
  await exerciseBasics(socket, await welcome);
  assert.equal(socket.io.engine.transport.name, "websocket");
});

test("packets buffered during the upgrade are not lost", opts, async (t) => {
  const f = await setup(t);
  const socket = f.client("/");
  const upgraded = waitFor(socket.io.engine, "upgrade");
  await waitConnect(socket);
  // Fire acks immediately, racing with the probe / upgrade.
  const pending = [];
  for (let i = 0; i < 20; i++) pending.push(ack(socket, "echo", i));
  await upgraded;
  for (let i = 20; i < 40; i++) pending.push(ack(socket, "echo", i));
  assert.deepEqual(await Promise.all(pending), Array.from({ length: 40 }, (_, i) => i));
  assert.equal(socket.io.engine.transport.name, "websocket");
});

for (const transports of [["websocket"], ["polling"]]) {
  test(`heartbeat with short PING_INTERVAL keeps the ${transports[0]} connection alive`, opts, async (t) => {
    const f = await setup(t, { env: { PING_INTERVAL: "100", PING_TIMEOUT: "2000" } });
    const socket = f.client("/", { transports });
    const disconnects = record(socket, "disconnect");
    await waitConnect(socket);
    const engine = socket.io.engine;
    // The server must send pings (the client answers with pongs automatically).
    for (let i = 0; i < 3; i++) await waitFor(engine, "ping", { label: `engine.io ping #${i + 1} from the server` });
    assert.equal(socket.connected, true);
    assert.deepEqual(disconnects, [], "no disconnect expected while pings are answered");
    assert.equal(await ack(socket, "echo", "still here"), "still here");
  });
}
