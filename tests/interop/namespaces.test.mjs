// Namespaces: multiplexing on one connection, dynamic namespaces, invalid namespace, connect middleware.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  setup,
  io,
  waitFor,
  waitConnect,
  waitConnectError,
  ack,
  ackAll,
  record,
  sleep,
  GRACE_MS,
  TEST_TIMEOUT_MS,
  WAIT_MS,
} from "./helpers.mjs";

const opts = { timeout: TEST_TIMEOUT_MS };

for (const transports of [["websocket"], ["polling"]]) {
  const tr = transports[0];

  test(`[${tr}] "/" and "/second" share one Manager and one engine.io connection`, opts, async (t) => {
    const f = await setup(t);
    // No forceNew here: io() multiplexes namespaces of the same host on one Manager.
    const main = f.track(io(f.url, { reconnection: false, timeout: WAIT_MS, transports }));
    const second = f.track(io(f.url + "/second", { reconnection: false, timeout: WAIT_MS, transports }));
    assert.equal(main.io, second.io, "both sockets must use the same Manager");

    const welcome = waitFor(main, "welcome");
    const welcomeSecond = waitFor(second, "welcome-second");
    await Promise.all([waitConnect(main), waitConnect(second)]);
    assert.equal(main.connected, true);
    assert.equal(second.connected, true);
    assert.equal(main.io.engine, second.io.engine, "one engine.io connection for both namespaces");
    assert.notEqual(main.id, second.id, "each namespace socket has its own id");
    assert.deepEqual(await welcome, [{ id: main.id }]);
    assert.deepEqual(await welcomeSecond, [{ id: second.id }]);

    assert.deepEqual(await ackAll(main, "echo", "on-main", 1), ["on-main", 1]);
    assert.deepEqual(await ackAll(second, "echo", "on-second", { x: 2 }), ["on-second", { x: 2 }]);

    // Leaving one namespace keeps the other (and the shared connection) alive.
    const engine = main.io.engine;
    const mainDisconnects = record(main, "disconnect");
    second.disconnect();
    assert.equal(await ack(main, "echo", "still"), "still");
    assert.equal(main.io.engine, engine);
    assert.equal(engine.readyState, "open");
    assert.equal(main.connected, true);
    assert.deepEqual(mainDisconnects, []);

    // ... and the namespace can be re-entered on the same connection.
    const welcomeAgain = waitFor(second, "welcome-second");
    second.connect();
    await waitConnect(second);
    assert.deepEqual(await welcomeAgain, [{ id: second.id }]);
    assert.equal(second.io.engine, engine);
    assert.deepEqual(await ackAll(second, "echo", "back"), ["back"]);
  });

  test(`[${tr}] explicit Manager: "/", "/second", a dynamic and an authorized namespace on one engine`, opts, async (t) => {
    const f = await setup(t);
    const manager = f.manager({ transports });
    const main = f.track(manager.socket("/"));
    const second = f.track(manager.socket("/second"));
    const dyn = f.track(manager.socket("/dyn-multi"));
    const admin = f.track(manager.socket("/admin", { auth: { token: "secret" } }));
    const dynName = waitFor(dyn, "dyn");
    const hello = waitFor(admin, "hello-admin");
    await Promise.all([main, second, dyn, admin].map((s) => waitConnect(s)));
    const ids = new Set([main.id, second.id, dyn.id, admin.id]);
    assert.equal(ids.size, 4, "four distinct socket ids");
    for (const s of [main, second, dyn, admin]) assert.equal(s.io.engine, manager.engine);
    assert.deepEqual(await dynName, ["/dyn-multi"]);
    assert.deepEqual(await hello, [{ user: "admin" }]);
    assert.equal(await ack(main, "echo", 1), 1);
    assert.equal(await ack(second, "echo", 2), 2);
    assert.equal(await ack(dyn, "echo", 3), 3);
  });
}

test("dynamic namespace /dyn-42: created on first connect, emits its name, echo works", opts, async (t) => {
  const f = await setup(t);
  const a = f.client("/dyn-42");
  const dynA = waitFor(a, "dyn");
  await waitConnect(a);
  assert.deepEqual(await dynA, ["/dyn-42"]);
  assert.deepEqual(await ackAll(a, "echo", "dyn", { n: 1 }), ["dyn", { n: 1 }]);

  // A second client on the same (now existing) dynamic namespace.
  const b = f.client("/dyn-42");
  const dynB = waitFor(b, "dyn");
  await waitConnect(b);
  assert.deepEqual(await dynB, ["/dyn-42"]);
  assert.notEqual(a.id, b.id);

  // Another dynamic namespace is distinct.
  const c = f.client("/dyn-other");
  const dynC = waitFor(c, "dyn");
  await waitConnect(c);
  assert.deepEqual(await dynC, ["/dyn-other"]);
  assert.equal(await ack(c, "echo", "x"), "x");
});

for (const nsp of ["/nope", "/dynx"]) {
  test(`unknown namespace ${nsp} -> connect_error "Invalid namespace"`, opts, async (t) => {
    const f = await setup(t);
    const socket = f.client(nsp);
    const err = await waitConnectError(socket);
    assert.equal(err.message, "Invalid namespace");
    assert.equal(socket.connected, false);
    assert.equal(socket.active, false, "a refused socket does not retry on its own");
  });
}

test("invalid namespace on a shared Manager leaves the other namespace working", opts, async (t) => {
  const f = await setup(t);
  const manager = f.manager();
  const main = f.track(manager.socket("/"));
  await waitConnect(main);
  const bad = f.track(manager.socket("/nope"));
  const err = await waitConnectError(bad);
  assert.equal(err.message, "Invalid namespace");
  assert.equal(main.connected, true);
  assert.equal(await ack(main, "echo", "alive"), "alive");
});

for (const [label, auth] of [
  ["no auth", undefined],
  ["empty auth", {}],
  ["wrong token", { token: "not-the-secret" }],
  ["non-string token", { token: 12345 }],
]) {
  test(`/admin middleware refuses ${label}: connect_error "unauthorized" with data {code:401}`, opts, async (t) => {
    const f = await setup(t);
    const socket = f.client("/admin", auth === undefined ? {} : { auth });
    const hellos = record(socket, "hello-admin");
    const err = await waitConnectError(socket);
    assert.equal(err.message, "unauthorized");
    assert.deepEqual(err.data, { code: 401 });
    assert.equal(socket.connected, false);
    assert.equal(socket.active, false);
    await sleep(GRACE_MS);
    assert.deepEqual(hellos, [], "a refused socket must not receive namespace events");
  });
}

test("/admin middleware accepts the right token (object and function auth)", opts, async (t) => {
  const f = await setup(t);
  const a = f.client("/admin", { auth: { token: "secret" } });
  const helloA = waitFor(a, "hello-admin");
  await waitConnect(a);
  assert.deepEqual(await helloA, [{ user: "admin" }]);

  const b = f.client("/admin", { auth: (cb) => cb({ token: "secret", extra: [1, 2] }) });
  const helloB = waitFor(b, "hello-admin");
  await waitConnect(b);
  assert.deepEqual(await helloB, [{ user: "admin" }]);
});

test("/admin refusal on a shared Manager does not affect the main namespace", opts, async (t) => {
  const f = await setup(t);
  const manager = f.manager();
  const main = f.track(manager.socket("/"));
  await waitConnect(main);
  const admin = f.track(manager.socket("/admin", { auth: { token: "wrong" } }));
  const err = await waitConnectError(admin);
  assert.equal(err.message, "unauthorized");
  assert.deepEqual(err.data, { code: 401 });
  assert.equal(main.connected, true);
  assert.equal(await ack(main, "echo", "fine"), "fine");

  // A later, correct attempt from the same socket on the same connection succeeds.
  admin.auth = { token: "secret" };
  const hello = waitFor(admin, "hello-admin");
  admin.connect();
  await waitConnect(admin);
  assert.deepEqual(await hello, [{ user: "admin" }]);
  assert.equal(admin.io.engine, main.io.engine);
});
