// One channel fabric, three wire protocols: a publication made through
// Socket.IO, the plain WebSocket protocol or the HTTP API reaches the
// subscribers on all of them (and SSE streams), with the same channel,
// offset, epoch, data and sender everywhere.

import { test } from "node:test";
import assert from "node:assert/strict";
import { devToken, until } from "./helpers.mjs";
import { start, uniq, WsClient, SioClient, SseClient, publish, history, assertSameStream, closeAll } from "./e2e-helpers.mjs";

test("a publication from each protocol reaches the subscribers of all protocols with the same offset and payload", { timeout: 120_000 }, async () => {
  const server = await start();
  const clients = [];
  try {
    const channel = `chat:${uniq("fan")}`;
    const wsToken = await devToken(server, "wsuser", "WS User");
    const sioToken = await devToken(server, "siouser", "SIO User");
    const sseToken = await devToken(server, "sseuser", "SSE User");

    const ws = await WsClient.connect(server, { token: wsToken, label: "ws" });
    clients.push(ws);
    const wsSub = await ws.ok("subscribe", { channel });
    assert.equal(wsSub.channel, channel);
    assert.equal(wsSub.offset, 0, "a new channel starts at offset 0");

    const sio = await SioClient.connect(server, { token: sioToken, label: "sio" });
    clients.push(sio);
    const sioSub = await sio.ok("subscribe", { channel });
    assert.equal(sioSub.epoch, wsSub.epoch, "one channel, one epoch, whatever the protocol");

    // SSE streams with the token in each of the three documented places.
    const sseHeader = await SseClient.open(server, { channels: [channel], token: sseToken, via: "header", label: "sse(header)" });
    clients.push(sseHeader);
    const sseCookie = await SseClient.open(server, { channels: [channel], token: sseToken, via: "cookie", label: "sse(cookie)" });
    clients.push(sseCookie);
    const sseQuery = await SseClient.open(server, { channels: [channel], token: sseToken, via: "query", label: "sse(query)" });
    clients.push(sseQuery);

    const sent = [];
    // 1. From Socket.IO.
    const d1 = { via: "socket.io", text: "héllo ✓ \"quoted\"\nnew line", nested: { list: [1, 2.5, null, true], empty: {} } };
    const a1 = await sio.ok("publish", { channel, data: d1 });
    assert.equal(a1.channel, channel);
    sent.push({ offset: a1.offset, epoch: a1.epoch, data: d1, from: "siouser" });
    // 2. From the plain WebSocket protocol.
    const d2 = { via: "ws", text: "second", n: 2 };
    const a2 = await ws.ok("message", { channel, data: d2 });
    assert.equal(a2.channel, channel);
    sent.push({ offset: a2.offset, epoch: a2.epoch, data: d2, from: "wsuser" });
    // 3. From the HTTP API (no sender).
    const d3 = ["api", 3, { deep: { deeper: "x" } }];
    const a3 = await publish(server, channel, d3);
    sent.push({ offset: a3.offset, epoch: a3.epoch, data: d3, from: null });
    // A scalar payload too.
    const a4 = await publish(server, channel, "just a string");
    sent.push({ offset: a4.offset, epoch: a4.epoch, data: "just a string", from: null });

    assert.deepEqual(sent.map((s) => s.offset), [1, 2, 3, 4], "offsets follow each other across protocols");
    for (const s of sent) assert.equal(s.epoch, wsSub.epoch, "every publication is in the channel's epoch");

    const receivers = [
      ["ws", () => ws.publications(channel)],
      ["socket.io", () => sio.publications(channel)],
      ["sse(header)", () => sseHeader.publications(channel)],
      ["sse(cookie)", () => sseCookie.publications(channel)],
      ["sse(query)", () => sseQuery.publications(channel)],
    ];
    for (const [who, got] of receivers) {
      await until(() => got().length >= sent.length, `${who} to receive ${sent.length} publications`);
    }
    // Nothing more than these arrives: a last marker is the next thing everyone gets.
    const marker = await publish(server, channel, { marker: true });
    const all = [...sent, { offset: marker.offset, epoch: marker.epoch, data: { marker: true }, from: null }];
    for (const [who, got] of receivers) {
      await until(() => got().some((p) => p.offset === marker.offset), `${who} to receive the marker`);
      const pubs = got();
      assertSameStream(pubs, all, who);
      for (let i = 0; i < all.length; i++) {
        assert.equal(pubs[i].channel, channel, `${who}: channel of #${i}`);
        assert.equal(pubs[i].from, all[i].from, `${who}: sender of offset ${all[i].offset}`);
      }
    }
    for (const sse of [sseHeader, sseCookie, sseQuery]) {
      assert.deepEqual(
        sse.publications(channel).map((p) => p.eventId),
        all.map((p) => `${channel}~${p.epoch}~${p.offset}`),
        `${sse.label}: each event's id is <channel>~<epoch>~<offset>`,
      );
    }

    // The stored history says the same.
    const h = await history(server, channel);
    assert.equal(h.offset, marker.offset);
    assert.equal(h.epoch, wsSub.epoch);
    assert.deepEqual(
      h.publications.map((p) => ({ offset: p.offset, data: p.data, from: p.from })),
      all.map((p) => ({ offset: p.offset, data: p.data, from: p.from })),
    );
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("a client subscribed to several channels gets each publication only on its own channel", { timeout: 120_000 }, async () => {
  const server = await start();
  const clients = [];
  try {
    const c1 = `chat:${uniq("one")}`;
    const c2 = `chat:${uniq("two")}`;
    const token = await devToken(server, "multi", "Multi");
    const ws = await WsClient.connect(server, { token });
    clients.push(ws);
    await ws.ok("subscribe", { channel: c1 });
    await ws.ok("subscribe", { channel: c2 });
    const sio = await SioClient.connect(server, { token });
    clients.push(sio);
    await sio.ok("subscribe", { channel: c1 });
    const sse = await SseClient.open(server, { channels: [c1, c2], token });
    clients.push(sse);

    const p1 = await publish(server, c1, { to: 1 });
    const p2 = await publish(server, c2, { to: 2 });
    const p3 = await publish(server, c1, { to: 3 });
    assert.deepEqual([p1.offset, p2.offset, p3.offset], [1, 1, 2], "each channel has its own offsets");

    await until(() => ws.publications(c1).length === 2 && ws.publications(c2).length === 1, "ws to get both channels");
    await until(() => sio.publications(c1).length === 2, "socket.io to get c1");
    await until(() => sse.publications(c1).length === 2 && sse.publications(c2).length === 1, "sse to get both channels");
    assertSameStream(ws.publications(c1), [p1, p3].map((p, i) => ({ ...p, data: { to: [1, 3][i] } })), "ws c1");
    assertSameStream(ws.publications(c2), [{ ...p2, data: { to: 2 } }], "ws c2");
    assert.equal(sio.publications(c2).length, 0, "socket.io is not subscribed to c2");
    assertSameStream(sse.publications(c1), [{ ...p1, data: { to: 1 } }, { ...p3, data: { to: 3 } }], "sse c1");
    // An SSE event id carries the stream's position in every channel.
    const last = sse.events.filter((e) => e.type === "message").at(-1);
    assert.equal(last.id, [`${c1}~${p3.epoch}~2`, `${c2}~${p2.epoch}~1`].sort().join(","));
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});
