// Disconnections: server-initiated, client-initiated, and automatic reconnection after a server restart.
import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, waitFor, waitConnect, ack, record, sleep, GRACE_MS, TEST_TIMEOUT_MS, WAIT_MS } from "./helpers.mjs";

const opts = { timeout: TEST_TIMEOUT_MS };

for (const transports of [["websocket"], ["polling"]]) {
  const tr = transports[0];

  test(`[${tr}] server-initiated disconnect -> "io server disconnect", no automatic reconnection`, opts, async (t) => {
    const f = await setup(t);
    // Reconnection is ON here on purpose: the client must still not reconnect after a server disconnect.
    const socket = f.client("/", { transports, reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 100 });
    await waitConnect(socket);
    const attempts = record(socket.io, "reconnect_attempt");
    const connects = record(socket, "connect");

    const disconnected = waitFor(socket, "disconnect");
    socket.emit("disconnect-me");
    const [reason] = await disconnected;
    assert.equal(reason, "io server disconnect");
    assert.equal(socket.connected, false);
    assert.equal(socket.active, false, "after a server disconnect the socket is no longer active");

    await sleep(GRACE_MS * 2); // well beyond reconnectionDelayMax
    assert.deepEqual(attempts, [], "no reconnection attempt after 'io server disconnect'");
    assert.deepEqual(connects, [], "no new connect after 'io server disconnect'");

    assert.equal(socket.id, undefined, "socket.id is cleared while disconnected");
    // A manual reconnect is possible and yields a new session.
    const welcome = waitFor(socket, "welcome");
    socket.connect();
    await waitConnect(socket);
    const [w] = await welcome;
    assert.deepEqual(w, { id: socket.id });
    assert.equal(await ack(socket, "echo", "again"), "again");
  });

  test(`[${tr}] server disconnect of one namespace keeps the other namespace connected`, opts, async (t) => {
    const f = await setup(t);
    const manager = f.manager({ transports });
    const main = f.track(manager.socket("/"));
    const second = f.track(manager.socket("/second"));
    await Promise.all([waitConnect(main), waitConnect(second)]);
    const secondDisconnects = record(second, "disconnect");
    const disconnected = waitFor(main, "disconnect");
    main.emit("disconnect-me");
    const [reason] = await disconnected;
    assert.equal(reason, "io server disconnect");
    assert.equal(await ack(second, "echo", "alive"), "alive");
    assert.equal(second.connected, true);
    assert.deepEqual(secondDisconnects, []);
    assert.equal(manager.engine.readyState, "open");
  });

  test(`[${tr}] client-initiated disconnect -> "io client disconnect", reconnect by hand`, opts, async (t) => {
    const f = await setup(t);
    const socket = f.client("/", { transports });
    await waitConnect(socket);
    const disconnected = waitFor(socket, "disconnect");
    socket.disconnect();
    assert.deepEqual((await disconnected).slice(0, 1), ["io client disconnect"]);
    assert.equal(socket.connected, false);

    const welcome = waitFor(socket, "welcome");
    socket.connect();
    await waitConnect(socket);
    assert.deepEqual(await welcome, [{ id: socket.id }]);
    assert.equal(await ack(socket, "echo", 1), 1);
  });
}

for (const transports of [["websocket"], ["polling"], undefined]) {
  const label = transports ? transports[0] : "default transports";

  test(`[${label}] automatic reconnection after the server restarts on the same port`, opts, async (t) => {
    const f = await setup(t);
    const socket = f.client("/", {
      ...(transports ? { transports } : {}),
      reconnection: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 300,
      randomizationFactor: 0,
      reconnectionAttempts: 100, // bounded; the test's own timeouts fire long before
    });
    const firstWelcome = waitFor(socket, "welcome");
    await waitConnect(socket);
    const [{ id: firstId }] = await firstWelcome;
    assert.equal(firstId, socket.id);
    assert.equal(await ack(socket, "echo", "before"), "before");
    if (!transports) {
      // Default transports: let the upgrade to WebSocket settle first, so the
      // crash hits an established transport (a kill in the middle of the
      // upgrade leaves engine.io-client waiting for its ping timeout).
      const engine = socket.io.engine;
      if (engine.transport.name !== "websocket") await waitFor(engine, "upgrade", { label: "engine 'upgrade' event" });
      assert.equal(engine.transport.name, "websocket");
    }

    const connects = record(socket, "connect");
    const disconnected = waitFor(socket, "disconnect", { timeoutMs: WAIT_MS * 2 });
    const reconnected = waitFor(socket.io, "reconnect", { timeoutMs: WAIT_MS * 3, label: "Manager 'reconnect' event" });
    const secondWelcome = waitFor(socket, "welcome", { timeoutMs: WAIT_MS * 3, label: "welcome after reconnection" });

    // SIGKILL: a crash, not a graceful shutdown (which might send "io server disconnect").
    await f.server.kill("SIGKILL");
    const [reason] = await disconnected;
    assert.ok(
      reason === "transport close" || reason === "transport error" || reason === "ping timeout",
      `unexpected disconnect reason after the server died: ${reason}`,
    );
    assert.equal(socket.active, true, "socket keeps trying to reconnect after a transport failure");

    await f.server.restart();
    const [attempts] = await reconnected;
    assert.ok(attempts >= 1, `reconnect event carries the attempt number, got ${attempts}`);
    const [w] = await secondWelcome;
    assert.equal(socket.connected, true);
    assert.equal(connects.length, 1, "connect fired again exactly once");
    assert.deepEqual(w, { id: socket.id });
    assert.notEqual(socket.id, firstId, "a restarted server gives a new session id");
    assert.equal(await ack(socket, "echo", "after"), "after");
  });
}
