// POST /api/disconnect {user}: every connection of that user is closed the
// way its protocol says (Socket.IO namespace disconnect → 'io server
// disconnect', WebSocket close 4001, SSE `disconnect` event then the end of
// the stream); the answer counts them; other users are not affected.

import { test } from "node:test";
import assert from "node:assert/strict";
import { devToken, until, sleep } from "./helpers.mjs";
import { start, uniq, api, WsClient, SioClient, SseClient, publish, presence, closeAll } from "./e2e-helpers.mjs";

test("POST /api/disconnect closes every connection of the user on every protocol, counts them, and leaves others alone", { timeout: 120_000 }, async () => {
  const server = await start();
  const clients = [];
  try {
    const channel = `chat:${uniq("dc")}`;
    const aliceToken = await devToken(server, "alice", "Alice");
    const bobToken = await devToken(server, "bob", "Bob");

    // Alice: four connections (one of them subscribed to nothing).
    const aWs = await WsClient.connect(server, { token: aliceToken, label: "alice ws" });
    clients.push(aWs);
    await aWs.ok("subscribe", { channel });
    const aIdle = await WsClient.connect(server, { token: aliceToken, label: "alice idle ws" });
    clients.push(aIdle);
    const aSio = await SioClient.connect(server, { token: aliceToken, label: "alice sio", reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
    clients.push(aSio);
    await aSio.ok("subscribe", { channel });
    const aSse = await SseClient.open(server, { channels: [channel], token: aliceToken, label: "alice sse" });
    clients.push(aSse);

    // Bob on every protocol, and an anonymous Socket.IO client.
    const bWs = await WsClient.connect(server, { token: bobToken, label: "bob ws" });
    clients.push(bWs);
    await bWs.ok("subscribe", { channel });
    const bSio = await SioClient.connect(server, { token: bobToken, label: "bob sio" });
    clients.push(bSio);
    await bSio.ok("subscribe", { channel });
    const bSse = await SseClient.open(server, { channels: [channel], token: bobToken, label: "bob sse" });
    clients.push(bSse);
    const anon = await SioClient.connect(server, { label: "anonymous sio" });
    clients.push(anon);

    const before = await publish(server, channel, { before: true });
    for (const c of [aWs, aSio, aSse, bWs, bSio, bSse]) {
      await until(() => c.publications(channel).length === 1, `${c.label} to get the first publication`);
    }

    const r = await api(server, "POST", "/api/disconnect", { user: "alice" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body, { user: "alice", disconnected: 4 }, "the answer counts alice's connections on every protocol");

    const sioGone = await aSio.waitDisconnected();
    assert.equal(sioGone.reason, "io server disconnect");
    assert.equal(aSio.socket.active, false, "an official client does not reconnect after a server disconnect");
    for (const ws of [aWs, aIdle]) {
      const closed = await ws.waitClosed();
      assert.equal(closed.code, 4001, `${ws.label} closed with ${closed.code} ${closed.reason}`);
    }
    await until(() => aSse.events.some((e) => e.type === "disconnect"), "alice's SSE stream to get a disconnect event");
    await aSse.waitEnded();
    const types = aSse.events.map((e) => e.type);
    assert.equal(types.at(-1), "disconnect", `the disconnect event is the stream's last: ${types}`);
    aSse.close(); // as a browser page would on this event

    // Bob: still connected everywhere, told alice left (once), and gets what follows.
    const after = await publish(server, channel, { after: true });
    for (const c of [bWs, bSio, bSse]) {
      await until(() => c.publications(channel).some((p) => p.offset === after.offset), `${c.label} to get the next publication`);
      assert.deepEqual(c.publications(channel).map((p) => p.offset), [before.offset, after.offset], `${c.label}: nothing lost or doubled`);
      assert.deepEqual(c.signals("leave", channel), [{ channel, user: "alice", name: "Alice" }], `${c.label}: one leave for alice`);
    }
    assert.ok(bWs.isOpen && bSio.socket.connected && bSse.errors.length === 0, "bob's connections are untouched");
    assert.ok(anon.socket.connected, "the anonymous client is untouched");
    assert.deepEqual((await presence(server, channel)).map((e) => e.user), ["bob"]);

    // Alice's clients stay away (nothing reconnected on its own).
    await sleep(500);
    assert.equal(aSio.connects, 1, "the Socket.IO client did not reconnect");
    assert.deepEqual((await api(server, "POST", "/api/disconnect", { user: "alice" })).body, { user: "alice", disconnected: 0 });
    // Alice may come back by herself (not banned).
    const aBack = await WsClient.connect(server, { token: aliceToken, label: "alice back" });
    clients.push(aBack);
    await aBack.ok("subscribe", { channel });

    // Unknown and empty users.
    assert.deepEqual((await api(server, "POST", "/api/disconnect", { user: "nobody" })).body, { user: "nobody", disconnected: 0 });
    const empty = await api(server, "POST", "/api/disconnect", { user: "" });
    assert.deepEqual([empty.status, empty.body.code], [400, "bad_request"]);
    const noKey = await api(server, "POST", "/api/disconnect", { user: "bob" }, { key: null });
    assert.equal(noKey.status, 401);
    assert.ok(bWs.isOpen, "a refused disconnect did nothing");
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});
