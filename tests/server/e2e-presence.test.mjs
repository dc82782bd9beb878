// Presence counts users, not connections: one user on three connections
// (Socket.IO, WebSocket, SSE) is one entry with connections: 3. Another
// user observing the channel (on every protocol) gets exactly one `join`
// when the first of those connections subscribes, none for the second and
// third, and exactly one `leave` when the last one goes.

import { test } from "node:test";
import assert from "node:assert/strict";
import { devToken, until } from "./helpers.mjs";
import { start, uniq, WsClient, SioClient, SseClient, sseRefusal, publish, presence, closeAll } from "./e2e-helpers.mjs";

const norm = (list) => [...list].map((e) => ({ user: e.user, name: e.name, connections: e.connections })).sort((a, b) => a.user.localeCompare(b.user));

test("one user on three protocols is present once with connections: 3; observers get exactly one join and one leave", { timeout: 120_000 }, async () => {
  const server = await start();
  const clients = [];
  try {
    const channel = `chat:${uniq("presence")}`;
    const bobToken = await devToken(server, "bob", "Bob");
    const aliceToken = await devToken(server, "alice", "Alice");

    // Bob observes on every protocol.
    const bobWs = await WsClient.connect(server, { token: bobToken, label: "bob ws" });
    clients.push(bobWs);
    await bobWs.ok("subscribe", { channel });
    const bobSio = await SioClient.connect(server, { token: bobToken, label: "bob sio" });
    clients.push(bobSio);
    await bobSio.ok("subscribe", { channel });
    const bobSse = await SseClient.open(server, { channels: [channel], token: bobToken, label: "bob sse" });
    clients.push(bobSse);
    const observers = [bobWs, bobSio, bobSse];
    const joinsOf = (o, user) => o.signals("join", channel).filter((s) => s.user === user);
    const leavesOf = (o, user) => o.signals("leave", channel).filter((s) => s.user === user);

    // Everything signalled before a publication reaches an observer before it.
    let n = 0;
    const barrier = async () => {
      const m = await publish(server, channel, { barrier: ++n });
      for (const o of observers) {
        await until(() => o.publications(channel).some((p) => p.offset === m.offset), `${o.label} to get barrier ${n}`);
      }
    };
    const expectSignals = async (joins, leaves, when) => {
      await barrier();
      for (const o of observers) {
        assert.equal(joinsOf(o, "alice").length, joins, `${o.label}: alice's joins ${when}: ${JSON.stringify(o.signals("join", channel))}`);
        assert.equal(leavesOf(o, "alice").length, leaves, `${o.label}: alice's leaves ${when}: ${JSON.stringify(o.signals("leave", channel))}`);
      }
    };

    // Bob's first connection joined him (and that connection saw its own join).
    assert.deepEqual(joinsOf(bobWs, "bob"), [{ channel, user: "bob", name: "Bob" }], "the joining connection receives its own join");
    assert.deepEqual(norm(await presence(server, channel)), [{ user: "bob", name: "Bob", connections: 3 }]);

    // Alice's first connection: one join for everyone.
    const aliceWs = await WsClient.connect(server, { token: aliceToken, label: "alice ws" });
    clients.push(aliceWs);
    await aliceWs.ok("subscribe", { channel });
    await expectSignals(1, 0, "after her first connection subscribed");
    for (const o of observers) assert.deepEqual(joinsOf(o, "alice")[0], { channel, user: "alice", name: "Alice" });
    await until(() => joinsOf(aliceWs, "alice").length === 1, "alice's connection to get its own join");

    // Second (Socket.IO) and third (SSE) connections: no more joins.
    const aliceSio = await SioClient.connect(server, { token: aliceToken, label: "alice sio" });
    clients.push(aliceSio);
    await aliceSio.ok("subscribe", { channel });
    await expectSignals(1, 0, "after her second connection subscribed");
    const aliceSse = await SseClient.open(server, { channels: [channel], token: aliceToken, label: "alice sse" });
    clients.push(aliceSse);
    await expectSignals(1, 0, "after her third connection (SSE) subscribed");

    // Presence, asked through every protocol and the API: alice once, 3 connections.
    const want = [{ user: "alice", name: "Alice", connections: 3 }, { user: "bob", name: "Bob", connections: 3 }];
    assert.deepEqual(norm(await presence(server, channel)), want, "API presence");
    assert.deepEqual(norm((await bobWs.ok("presence", { channel })).presence), want, "WebSocket presence");
    const sioPresence = await bobSio.ok("presence", { channel });
    assert.equal(sioPresence.channel, channel);
    assert.deepEqual(norm(sioPresence.presence), want, "Socket.IO presence");

    const aliceConnections = async () => (await presence(server, channel)).find((e) => e.user === "alice")?.connections ?? 0;
    // Connections go one by one: no leave until the last.
    aliceWs.close();
    await until(async () => (await aliceConnections()) === 2, "alice's presence to drop to 2 connections");
    await expectSignals(1, 0, "after her WebSocket closed");
    aliceSse.close();
    await until(async () => (await aliceConnections()) === 1, "alice's presence to drop to 1 connection (SSE stream closed)");
    await expectSignals(1, 0, "after her SSE stream closed");
    aliceSio.close();
    await until(async () => (await aliceConnections()) === 0, "alice to leave the presence");
    await expectSignals(1, 1, "after her last connection closed");
    for (const o of observers) assert.deepEqual(leavesOf(o, "alice")[0], { channel, user: "alice", name: "Alice" });
    assert.deepEqual(norm(await presence(server, channel)), [{ user: "bob", name: "Bob", connections: 3 }]);

    // Back, then gone by unsubscribing (not disconnecting): one more of each.
    const aliceAgain = await SioClient.connect(server, { token: aliceToken, label: "alice sio again" });
    clients.push(aliceAgain);
    await aliceAgain.ok("subscribe", { channel });
    await expectSignals(2, 1, "after she came back");
    await aliceAgain.ok("unsubscribe", { channel });
    await expectSignals(2, 2, "after she unsubscribed");
    assert.equal(await aliceConnections(), 0);
    // Bob never saw a signal about himself from someone else's comings and goings.
    assert.equal(joinsOf(bobSio, "bob").length, 0, "bob's later connections did not re-announce him");
    assert.equal(leavesOf(bobWs, "bob").length, 0);
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("an SSE stream refused for one of its channels never announces its user in the others", { timeout: 120_000 }, async () => {
  // GET /events?channel=chat:x&channel=user:bob as alice is refused (403):
  // she never subscribed to chat:x, so its subscribers must not see her
  // join (and leave), nor count her in its presence.
  const server = await start();
  const clients = [];
  try {
    const channel = `chat:${uniq("refused")}`;
    const bob = await WsClient.connect(server, { token: await devToken(server, "bob", "Bob"), label: "bob ws" });
    clients.push(bob);
    await bob.ok("subscribe", { channel });
    const aliceToken = await devToken(server, "alice", "Alice");
    const refused = await sseRefusal(server, { channels: [channel, "user:bob"], token: aliceToken });
    assert.deepEqual([refused.status, refused.body.code], [403, "forbidden"]);
    const marker = await publish(server, channel, { marker: true });
    await until(() => bob.publications(channel).some((p) => p.offset === marker.offset), "bob to get the marker");
    assert.deepEqual(
      bob.messages.filter((m) => (m.type === "join" || m.type === "leave") && m.payload.user === "alice").map((m) => m.type),
      [],
      "no join/leave for a stream that was refused",
    );
    assert.deepEqual((await presence(server, channel)).map((e) => e.user), ["bob"]);
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});
