// A persisted channel's history is committed before the publish is
// acknowledged: SIGKILL right after an ack loses nothing, offsets and the
// epoch stay the same after a restart on the same data directory, and the
// stream goes on from there (resumable from positions seen before the crash).

import { test } from "node:test";
import assert from "node:assert/strict";
import { devToken, until } from "./helpers.mjs";
import { start, uniq, WsClient, SioClient, publish, history, within, closeAll } from "./e2e-helpers.mjs";

/** SIGKILL now (same tick), then wait for the exit. */
async function killNow(server) {
  server.child.kill("SIGKILL");
  const exit = await within(server.exited, "the killed server to exit");
  assert.equal(exit.signal, "SIGKILL");
}

test("history of a persisted channel survives SIGKILL right after an acknowledged publish (each protocol), same offsets and epoch", { timeout: 120_000 }, async () => {
  const first = await start();
  const servers = [first];
  const clients = [];
  try {
    const channel = `chat:${uniq("durable")}`;
    const expected = [];
    let server = first;
    let epoch;

    const rounds = [
      ["http api", async (s) => {
        const data = { via: "api", n: expected.length };
        const r = await publish(s, channel, data);
        return { ...r, data, from: null };
      }],
      ["ws", async (s) => {
        const token = await devToken(s, "wsuser", "WS");
        const ws = await WsClient.connect(s, { token });
        clients.push(ws);
        await ws.ok("subscribe", { channel });
        const data = { via: "ws", n: expected.length };
        const r = await ws.ok("message", { channel, data });
        return { ...r, data, from: "wsuser" };
      }],
      ["socket.io", async (s) => {
        const token = await devToken(s, "siouser", "SIO");
        const sio = await SioClient.connect(s, { token });
        clients.push(sio);
        await sio.ok("subscribe", { channel });
        const data = { via: "socket.io", n: expected.length };
        const r = await sio.ok("publish", { channel, data });
        return { ...r, data, from: "siouser" };
      }],
      ["http api, 25 at once", async (s) => {
        const batch = Array.from({ length: 25 }, (_, i) => ({ via: "api-burst", i }));
        const answers = await Promise.all(batch.map((data) => publish(s, channel, data).then((r) => ({ ...r, data, from: null }))));
        return answers.sort((a, b) => a.offset - b.offset);
      }],
    ];

    for (const [how, round] of rounds) {
      const acked = [await round(server)].flat();
      // The ack is in hand: kill at once, nothing gets a chance to flush.
      await killNow(server);
      closeAll(clients);
      for (const a of acked) {
        epoch ??= a.epoch;
        assert.equal(a.epoch, epoch, `${how}: the epoch never changes for a persisted channel`);
        assert.equal(a.offset, expected.length + 1, `${how}: offsets go on after the restart`);
        expected.push(a);
      }
      server = await server.restart();
      servers.push(server);
      const h = await history(server, channel);
      assert.equal(h.epoch, epoch, `${how}: same epoch after SIGKILL and restart`);
      assert.equal(h.offset, expected.length, `${how}: the channel's position after the restart`);
      assert.deepEqual(
        h.publications.map((p) => ({ offset: p.offset, data: p.data, from: p.from })),
        expected.map((p) => ({ offset: p.offset, data: p.data, from: p.from })),
        `${how}: every acknowledged publication is in the history after SIGKILL`,
      );
    }

    // A client that saw offset 1 before the crashes resumes across them.
    const token = await devToken(server, "late", "Late");
    const ws = await WsClient.connect(server, { token });
    clients.push(ws);
    const ack = await ws.ok("subscribe", { channel, since: { offset: 1, epoch } });
    assert.equal(ack.recovered, true);
    assert.deepEqual(ack.publications.map((p) => p.offset), expected.slice(1).map((p) => p.offset));
    // And the next publication takes the next offset.
    const next = await publish(server, channel, { after: "restarts" });
    assert.deepEqual([next.offset, next.epoch], [expected.length + 1, epoch]);
    await until(() => ws.publications(channel).some((p) => p.offset === next.offset), "the live publication after the restarts");
  } finally {
    closeAll(clients);
    for (const s of servers.reverse()) await s.cleanup();
  }
});
