// The client (dist/index.js, the build of src/index.ts) against the real
// server binary, over the `ws` package.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import { CloseCode, SwitchboardClient, SwitchboardError } from "../../dist/index.js";
import { api, devToken, gatedWebSocket, metric, publishApi, startServer, until } from "../helpers.mjs";

/** Every client made by a test, closed after it (a failed test must not leave one reconnecting). */
const clients = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

/** A client of `server` as `user`, its publications and states recorded. */
async function newClient(server, user, extra = {}) {
  const token = await devToken(server, user, user.toUpperCase());
  const { gate, WebSocket } = gatedWebSocket();
  const client = new SwitchboardClient(server.wsUrl, { token, WebSocket, backoffBase: 50, backoffMax: 200, ...extra });
  clients.push(client);
  const seen = { messages: [], states: [], errors: [], resets: [] };
  client.on("message", (m) => seen.messages.push(m));
  client.on("state", (s) => seen.states.push(s));
  client.on("error", (e) => seen.errors.push(e));
  client.on("reset", (r) => seen.resets.push(r));
  return { client, gate, seen };
}

const texts = (messages, channel) => messages.filter((m) => m.channel === channel).map((m) => m.data.text);

describe("SwitchboardClient against the server", { timeout: 120_000 }, () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.cleanup();
  });

  it("connects, subscribes, publishes and receives in order", async () => {
    const { client, seen } = await newClient(server, "ada");
    client.connect();
    const sub = await client.subscribe("chat:order");
    assert.equal(sub.channel, "chat:order");
    assert.equal(sub.resumed, false);
    await until(() => client.state === "connected", "connected");
    assert.deepEqual(client.user, { user: "ada", name: "ADA" });
    const acks = [];
    for (let i = 1; i <= 5; i++) acks.push(await client.publish("chat:order", { text: `m${i}` }));
    assert.deepEqual(acks.map((a) => a.offset), [1, 2, 3, 4, 5]);
    await until(() => texts(seen.messages, "chat:order").length === 5, "5 publications");
    assert.deepEqual(texts(seen.messages, "chat:order"), ["m1", "m2", "m3", "m4", "m5"]);
    assert.ok(seen.messages.every((m) => m.from === "ada" && m.replayed === false && typeof m.time === "number"));
    assert.deepEqual(client.position("chat:order"), { offset: 5, epoch: acks[0].epoch });
    assert.deepEqual(seen.states, ["connecting", "connected"]);
    client.close();
    assert.equal(client.state, "closed");
  });

  it("resumes after a dropped connection: what was published meanwhile arrives once, in order", async () => {
    const { client, gate, seen } = await newClient(server, "bob");
    client.connect();
    await client.subscribe("chat:resume");
    await publishApi(server, "chat:resume", { text: "before" });
    await until(() => texts(seen.messages, "chat:resume").length === 1, "the first publication");

    gate.open = false;
    gate.drop();
    await until(() => client.state === "reconnecting", "reconnecting");
    for (const text of ["gap1", "gap2", "gap3"]) await publishApi(server, "chat:resume", { text });
    // A publish made while disconnected waits in the offline queue.
    const queued = client.publish("chat:resume", { text: "queued" });
    gate.open = true;
    const ack = await queued;
    await until(() => texts(seen.messages, "chat:resume").length === 5, "the replay and the queued publish");
    assert.deepEqual(texts(seen.messages, "chat:resume"), ["before", "gap1", "gap2", "gap3", "queued"]);
    assert.deepEqual(seen.messages.filter((m) => m.channel === "chat:resume").map((m) => m.offset), [1, 2, 3, 4, 5]);
    assert.deepEqual(seen.messages.filter((m) => m.channel === "chat:resume").map((m) => m.replayed), [false, true, true, true, false]);
    assert.equal(ack.offset, 5);
    assert.ok(seen.states.includes("reconnecting"));
    assert.equal(seen.states.at(-1), "connected");
    client.close();
  });

  it("resumes across a server restart (persisted history) and reports a reset where history was lost", async () => {
    const own = await startServer();
    let back = null;
    try {
      const { client, gate, seen } = await newClient(own, "cyd");
      client.connect();
      await client.subscribe("chat:restart");
      await client.subscribe("notifications:all"); // memory history: a new epoch after a restart
      await publishApi(own, "chat:restart", { text: "one" });
      await publishApi(own, "notifications:all", { text: "n1" });
      await until(() => seen.messages.length === 2, "two publications");

      gate.open = false;
      await own.kill("SIGKILL");
      back = await own.restart();
      await publishApi(back, "chat:restart", { text: "two" });
      await publishApi(back, "chat:restart", { text: "three" });
      gate.open = true;
      await until(() => texts(seen.messages, "chat:restart").length === 3, "the replay after the restart");
      await until(() => seen.resets.length === 1, "a reset of the memory channel");
      assert.deepEqual(texts(seen.messages, "chat:restart"), ["one", "two", "three"]);
      assert.equal(seen.resets[0].channel, "notifications:all");
      // After the reset the channel goes on from the new position.
      await publishApi(back, "notifications:all", { text: "n2" });
      await until(() => texts(seen.messages, "notifications:all").length === 2, "the next notification");
      assert.deepEqual(texts(seen.messages, "notifications:all"), ["n1", "n2"]);
      client.close();
    } finally {
      await back?.kill("SIGKILL");
      await own.cleanup();
    }
  });

  it("starts from a saved position with since", async () => {
    const first = await publishApi(server, "chat:since", { text: "a" });
    await publishApi(server, "chat:since", { text: "b" });
    await publishApi(server, "chat:since", { text: "c" });
    const { client, seen } = await newClient(server, "dan");
    client.connect();
    const sub = await client.subscribe("chat:since", { since: { offset: first.offset, epoch: first.epoch } });
    assert.equal(sub.resumed, true);
    await until(() => seen.messages.length === 2, "the replay after offset 1");
    assert.deepEqual(texts(seen.messages, "chat:since"), ["b", "c"]);
    client.close();
  });

  it("rejects refusals with the server's code and local failures with their own", async () => {
    const { client, seen } = await newClient(server, "eve");
    client.connect();
    await assert.rejects(client.subscribe("user:someone-else"), (e) => e instanceof SwitchboardError && e.code === "forbidden");
    assert.equal(seen.errors.at(-1).channel, "user:someone-else");
    assert.deepEqual(client.channels(), []);
    await assert.rejects(client.publish("notifications:all", { x: 1 }), { code: "forbidden" });
    await assert.rejects(client.history("no-namespace"), { code: "bad_request" });
    await client.subscribe("chat:history");
    for (const text of ["h1", "h2", "h3"]) await client.publish("chat:history", { text });
    const history = await client.history("chat:history", { limit: 2 });
    assert.deepEqual(history.publications.map((p) => p.data.text), ["h2", "h3"]);
    assert.equal(history.offset, 3);
    client.close();
    await assert.rejects(client.publish("chat:order", {}), { code: "closed" });

    const closedGate = gatedWebSocket();
    closedGate.gate.open = false;
    const offline = new SwitchboardClient(server.wsUrl, { token: "x", WebSocket: closedGate.WebSocket, maxQueue: 1 });
    clients.push(offline);
    offline.connect();
    await assert.rejects(offline.publish("chat:a", {}, { queue: false }), { code: "offline" });
    const waiting = offline.publish("chat:a", {});
    await assert.rejects(offline.publish("chat:a", {}), { code: "queue_full" });
    offline.close();
    await assert.rejects(waiting, { code: "closed" });
  });

  it("a refused fixed token closes the client; getToken is asked for a fresh one", async () => {
    const bad = new SwitchboardClient(server.wsUrl, { token: "not-a-jwt", WebSocket: gatedWebSocket().WebSocket });
    clients.push(bad);
    const errors = [];
    bad.on("error", (e) => errors.push(e.code));
    bad.connect();
    await until(() => bad.state === "closed", "closed after the refusal");
    assert.deepEqual(errors, ["token_malformed"]);

    const good = await devToken(server, "fay", "Fay");
    const asks = [];
    const refreshing = new SwitchboardClient(server.wsUrl, {
      WebSocket: gatedWebSocket().WebSocket,
      backoffBase: 20,
      getToken: ({ refresh }) => {
        asks.push(refresh);
        return asks.length === 1 ? "not-a-jwt" : good;
      },
    });
    clients.push(refreshing);
    refreshing.connect();
    await until(() => refreshing.state === "connected", "connected with the second token");
    assert.deepEqual(asks, [false, true]);
    assert.equal(refreshing.user.user, "fay");
    refreshing.close();
  });

  it("a disconnect through the API closes the client for good (4001)", async () => {
    const { client, gate, seen } = await newClient(server, "gil");
    const closes = [];
    client.on("close", (c) => closes.push(c.code));
    client.connect();
    await client.subscribe("chat:lobby");
    const res = await api(server, "POST", "/api/disconnect", { user: "gil" });
    assert.equal(res.status, 200);
    await until(() => client.state === "closed", "closed");
    assert.deepEqual(closes, [CloseCode.DISCONNECTED]);
    assert.equal(seen.errors.at(-1).code, "disconnected_by_server");
    const opened = gate.opened;
    await new Promise((r) => setTimeout(r, 300)); // several backoff periods: no new attempt
    assert.equal(gate.opened, opened);
  });

  it("a throwing listener does not disturb the others", async () => {
    const { client, seen } = await newClient(server, "hal");
    const reported = [];
    const original = globalThis.reportError;
    globalThis.reportError = (e) => reported.push(e.message);
    try {
      client.on("message:chat:throw", () => {
        throw new Error("listener bug");
      });
      client.connect();
      await client.subscribe("chat:throw");
      await publishApi(server, "chat:throw", { text: "x" });
      await until(() => seen.messages.length === 1, "the publication");
      assert.deepEqual(reported, ["listener bug"]);
      assert.equal(client.state, "connected");
    } finally {
      globalThis.reportError = original;
      client.close();
    }
  });

  it("one subscribe request per channel, however often subscribe is called", async () => {
    const { client } = await newClient(server, "ivy");
    client.connect();
    await until(() => client.state === "connected", "connected");
    const before = await metric(server, "switchboard_messages_in_total", 'protocol="ws"');
    const results = await Promise.all([client.subscribe("chat:once"), client.subscribe("chat:once"), client.subscribe("chat:once")]);
    assert.equal(new Set(results.map((r) => r.channel)).size, 1);
    const afterwards = await metric(server, "switchboard_messages_in_total", 'protocol="ws"');
    assert.equal(afterwards - before, 1);
    client.close();
  });
});
