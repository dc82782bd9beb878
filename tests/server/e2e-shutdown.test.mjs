// Graceful shutdown on SIGTERM: WebSocket clients get close 1001 (after
// what was queued for them), Socket.IO clients lose the transport (reason
// 'transport close', so they reconnect), SSE streams end (the EventSource
// reconnects and resumes); the process exits 0 without waiting for its
// drain timeout; a publication acknowledged just before SIGTERM is in the
// history after a restart.

import { test } from "node:test";
import assert from "node:assert/strict";
import { devToken, until } from "./helpers.mjs";
import { start, uniq, WsClient, SioClient, SseClient, publish, history, within, closeAll } from "./e2e-helpers.mjs";

test("SIGTERM: WebSocket 1001, Socket.IO 'transport close' (reconnects), SSE ends; exit 0; a publication acked just before is kept", { timeout: 120_000 }, async () => {
  // A long drain timeout: with every client reading, the server has no
  // reason to wait for it, so the bounded wait below must be enough.
  const server = await start({ args: ["--set", "server.shutdown_timeout_secs=60"] });
  let server2;
  const clients = [];
  try {
    const channel = `chat:${uniq("shutdown")}`;
    const token = await devToken(server, "ada", "Ada");
    const ws = await WsClient.connect(server, { token, label: "ws" });
    clients.push(ws);
    await ws.ok("subscribe", { channel });
    const sio = await SioClient.connect(server, {
      token, label: "sio", reconnection: true, reconnectionDelay: 200, reconnectionDelayMax: 500,
    });
    clients.push(sio);
    await sio.ok("subscribe", { channel });
    const sse = await SseClient.open(server, { channels: [channel], token, label: "sse" });
    clients.push(sse);

    const first = await publish(server, channel, { n: 1 });
    for (const c of [ws, sio, sse]) await until(() => c.publications(channel).length === 1, `${c.label} to get the first publication`);

    const last = await publish(server, channel, { n: 2, last: true });
    server.child.kill("SIGTERM");

    const exit = await within(server.exited, "the server to exit after SIGTERM", 15_000);
    assert.deepEqual(exit, { code: 0, signal: null }, `exit status; output:\n${server.logs().slice(-2000)}`);

    const closed = await ws.waitClosed();
    assert.equal(closed.code, 1001, `WebSocket closed with ${closed.code} ${closed.reason}`);
    assert.deepEqual(ws.publications(channel).map((p) => p.offset), [first.offset, last.offset], "what was queued went out before the close");
    const d = await sio.waitDisconnected();
    assert.equal(d.reason, "transport close", `Socket.IO disconnected with ${d.reason}`);
    assert.equal(sio.socket.active, true, "the Socket.IO client will reconnect");
    await sse.waitEnded();
    assert.deepEqual(sse.publications(channel).map((p) => p.offset), [first.offset, last.offset], "the SSE stream got what was queued before it ended");
    assert.equal(sse.events.filter((e) => e.type === "disconnect").length, 0, "a shutdown is not a disconnect: the EventSource should reconnect");

    // Restart on the same data directory and port.
    server2 = await server.restart();
    const h = await history(server2, channel);
    assert.equal(h.epoch, last.epoch);
    assert.deepEqual(h.publications.map((p) => [p.offset, p.data]), [[first.offset, { n: 1 }], [last.offset, { n: 2, last: true }]]);

    // The clients that should come back do, by themselves.
    await until(() => sio.connects >= 2, "the Socket.IO client to reconnect to the restarted server", 15_000);
    const resumed = await sio.ok("subscribe", { channel, since: { offset: first.offset, epoch: first.epoch } });
    assert.equal(resumed.recovered, true);
    assert.deepEqual(resumed.publications.map((p) => p.offset), [last.offset]);
    await until(() => sse.opens >= 2, "the EventSource to reconnect to the restarted server", 15_000);
    const next = await publish(server2, channel, { n: 3 });
    await until(() => sse.publications(channel).some((p) => p.offset === next.offset), "the reconnected EventSource to get the next publication");
    assert.deepEqual(sse.publications(channel).map((p) => p.offset), [first.offset, last.offset, next.offset], "resumed from its last id, nothing doubled");
  } finally {
    closeAll(clients);
    if (server2) await server2.cleanup();
    await server.cleanup();
  }
});
