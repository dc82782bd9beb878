// POST /api/publish with an idempotency_key: a retry (sequential,
// concurrent, or after a crash of the server) is stored and delivered once,
// and answers the same offset.

import { test } from "node:test";
import assert from "node:assert/strict";
import { devToken, until } from "./helpers.mjs";
import { start, uniq, WsClient, SseClient, publish, history, within, assertSameStream, closeAll } from "./e2e-helpers.mjs";

test("a retried idempotent publish is stored once and answers the same offset", { timeout: 120_000 }, async () => {
  const first = await start();
  const servers = [first];
  const clients = [];
  try {
    const channel = `chat:${uniq("idem")}`;
    const token = await devToken(first, "watcher", "Watcher");
    const ws = await WsClient.connect(first, { token });
    clients.push(ws);
    await ws.ok("subscribe", { channel });
    const sse = await SseClient.open(first, { channels: [channel], token });
    clients.push(sse);

    // Sequential retry.
    const d1 = { order: 1, text: "pay the invoice" };
    const r1 = await publish(first, channel, d1, "key-1");
    const r1again = await publish(first, channel, d1, "key-1");
    assert.deepEqual(r1again, r1, "the retry answers the first publication's position");

    // Concurrent retries: one stored, all answered with its offset.
    const d2 = { order: 2 };
    const concurrent = await Promise.all(Array.from({ length: 8 }, () => publish(first, channel, d2, "key-2")));
    for (const r of concurrent) assert.deepEqual(r, concurrent[0], "concurrent retries answer the same position");
    assert.equal(concurrent[0].offset, r1.offset + 1);

    // Another key is another publication; no key is always a new one.
    const d3 = { order: 3 };
    const r3 = await publish(first, channel, d3, "key-3");
    assert.equal(r3.offset, r1.offset + 2);
    const plainA = await publish(first, channel, { order: 4 });
    const plainB = await publish(first, channel, { order: 4 });
    assert.equal(plainB.offset, plainA.offset + 1, "without a key the same data is published twice");

    const expected = [
      { ...r1, data: d1 },
      { ...concurrent[0], data: d2 },
      { ...r3, data: d3 },
      { ...plainA, data: { order: 4 } },
      { ...plainB, data: { order: 4 } },
    ];
    const h = await history(first, channel);
    assertSameStream(h.publications.map((p) => ({ ...p, epoch: h.epoch })), expected, "history");

    // Subscribers got each once.
    const marker = await publish(first, channel, { marker: 1 });
    const withMarker = [...expected, { ...marker, data: { marker: 1 } }];
    await until(() => ws.publications(channel).some((p) => p.offset === marker.offset), "ws to get the marker");
    await until(() => sse.publications(channel).some((p) => p.offset === marker.offset), "sse to get the marker");
    assertSameStream(ws.publications(channel), withMarker, "ws subscriber");
    assertSameStream(sse.publications(channel), withMarker, "sse subscriber");

    // A backend retrying after the server crashed (its answer lost) still
    // stores the publication once: keys of a persisted channel are kept.
    first.child.kill("SIGKILL");
    await within(first.exited, "the server to die");
    closeAll(clients);
    const second = await first.restart();
    servers.push(second);
    const retried = await publish(second, channel, d1, "key-1");
    assert.deepEqual(retried, r1, "a retry after a restart answers the original position");
    const retried2 = await publish(second, channel, d2, "key-2");
    assert.deepEqual(retried2, concurrent[0]);
    const h2 = await history(second, channel);
    assertSameStream(h2.publications.map((p) => ({ ...p, epoch: h2.epoch })), withMarker, "history after the restart and the retries");
  } finally {
    closeAll(clients);
    for (const s of servers.reverse()) await s.cleanup();
  }
});
