// A client that was away while 1,000 messages were published to a
// persisted channel resumes from the last position it saw and receives all
// of them, in order, exactly once, then the live ones: publications made
// while the replay is under way are neither lost nor duplicated.
// One test per protocol: WebSocket and Socket.IO subscribe with `since`,
// SSE reconnects with a Last-Event-ID header.

import { test } from "node:test";
import assert from "node:assert/strict";
import { devToken, until } from "./helpers.mjs";
import { start, uniq, WsClient, SioClient, SseClient, publish, assertSameStream, canonical, summarize, within, closeAll } from "./e2e-helpers.mjs";

const MISSED = 1000;
const LIVE = 30;
const REPLAY_WAIT_MS = 20_000;

/** A server whose chat history holds more than what is missed. */
function startServer() {
  return start({ args: ["--set", "channels.chat.history_size=5000"] });
}

/** Publishes `n` messages one after the other; resolves to [{offset, epoch, data}]. */
async function publishMany(server, channel, n, tag) {
  const out = [];
  for (let i = 0; i < n; i++) {
    const data = { tag, i };
    const r = await publish(server, channel, data);
    out.push({ offset: r.offset, epoch: r.epoch, data });
  }
  return out;
}

function assertContiguous(pubs, who) {
  for (let i = 1; i < pubs.length; i++) {
    if (pubs[i].offset !== pubs[i - 1].offset + 1) {
      assert.fail(`${who}: offsets not contiguous: ${summarize(pubs.map((p) => p.offset))}`);
    }
  }
}

test("WebSocket: a client back after 1,000 publications resumes with since {offset, epoch}: all of them in order exactly once, then live ones", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const clients = [];
  try {
    const channel = `chat:${uniq("resume-ws")}`;
    const token = await devToken(server, "reader", "Reader");
    const ws1 = await WsClient.connect(server, { token, label: "ws1" });
    clients.push(ws1);
    await ws1.ok("subscribe", { channel });
    const before = await publishMany(server, channel, 3, "before");
    await until(() => ws1.publications(channel).length === 3, "ws1 to receive the first 3");
    assertSameStream(ws1.publications(channel), before, "ws1");
    const seen = ws1.publications(channel).at(-1);
    const since = { offset: seen.offset, epoch: seen.epoch };
    ws1.close();
    await ws1.waitClosed();

    const missed = await publishMany(server, channel, MISSED, "missed");
    assertContiguous([...before, ...missed], "API answers");

    const ws2 = await WsClient.connect(server, { token, label: "ws2" });
    clients.push(ws2);
    // Live publications race with the replay.
    const liveP = publishMany(server, channel, LIVE, "live");
    const reply = await ws2.request("subscribe", { channel, since }, REPLAY_WAIT_MS);
    const live = await liveP;
    assert.equal(reply.type, "ack", `resume answered ${JSON.stringify(reply).slice(0, 300)}`);
    const ack = reply.payload;
    assert.equal(ack.recovered, true, "the history reaches back far enough");
    assert.equal(ack.epoch, since.epoch);
    assert.ok(ack.publications.length >= MISSED, `the ack replays at least the ${MISSED} missed (got ${ack.publications.length})`);
    assert.equal(ack.offset, ack.publications.at(-1).offset, "the ack's offset is the last replayed one");

    const marker = await publish(server, channel, { marker: true });
    await until(() => ws2.publications(channel).some((p) => p.offset === marker.offset), "ws2 to receive the marker", REPLAY_WAIT_MS);
    const ackIndex = ws2.messages.indexOf(reply);
    const early = ws2.messages.slice(0, ackIndex).filter((m) => m.type === "message" && m.payload?.channel === channel);
    assert.deepEqual(early, [], "no live publication is sent before the resume's ack");
    const replayed = ack.publications.map((p) => ({ ...p, epoch: p.epoch ?? ack.epoch }));
    const received = [...replayed, ...ws2.publications(channel)];
    assertSameStream(received, [...missed, ...live, { ...marker, data: { marker: true } }], "ws2 (replay + live)");
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("Socket.IO: a client back after 1,000 publications resumes with since {offset, epoch}: all of them in order exactly once, then live ones", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const clients = [];
  try {
    const channel = `chat:${uniq("resume-sio")}`;
    const token = await devToken(server, "reader", "Reader");
    const sio1 = await SioClient.connect(server, { token, label: "sio1" });
    clients.push(sio1);
    await sio1.ok("subscribe", { channel });
    const before = await publishMany(server, channel, 3, "before");
    await until(() => sio1.publications(channel).length === 3, "sio1 to receive the first 3");
    assertSameStream(sio1.publications(channel), before, "sio1");
    const seen = sio1.publications(channel).at(-1);
    const since = { offset: seen.offset, epoch: seen.epoch };
    sio1.close();

    const missed = await publishMany(server, channel, MISSED, "missed");

    const sio2 = await SioClient.connect(server, { token, label: "sio2" });
    clients.push(sio2);
    const liveP = publishMany(server, channel, LIVE, "live");
    const { answer: ack, mark } = await sio2.ackWithMark("subscribe", { channel, since }, REPLAY_WAIT_MS);
    const live = await liveP;
    assert.ok(ack && !ack.error, `resume answered ${JSON.stringify(ack).slice(0, 300)}`);
    assert.equal(ack.recovered, true, "the history reaches back far enough");
    assert.equal(ack.epoch, since.epoch);
    assert.ok(ack.publications.length >= MISSED, `the ack replays at least the ${MISSED} missed (got ${ack.publications.length})`);
    assert.equal(ack.offset, ack.publications.at(-1).offset, "the ack's offset is the last replayed one");

    const marker = await publish(server, channel, { marker: true });
    await until(() => sio2.publications(channel).some((p) => p.offset === marker.offset), "sio2 to receive the marker", REPLAY_WAIT_MS);
    const early = sio2.events.slice(0, mark).filter((e) => e.event === "publication" && e.args[0]?.channel === channel);
    assert.deepEqual(early, [], "no live publication arrives before the resume's ack");
    const replayed = ack.publications.map((p) => ({ ...p, epoch: p.epoch ?? ack.epoch }));
    const received = [...replayed, ...sio2.publications(channel)];
    assertSameStream(received, [...missed, ...live, { ...marker, data: { marker: true } }], "sio2 (replay + live)");
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("SSE: a stream reopened with Last-Event-ID after 1,000 publications gets all of them in order exactly once, then live ones", { timeout: 120_000 }, async () => {
  const server = await startServer();
  const clients = [];
  try {
    const channel = `chat:${uniq("resume-sse")}`;
    const token = await devToken(server, "reader", "Reader");
    const sse1 = await SseClient.open(server, { channels: [channel], token, label: "sse1" });
    clients.push(sse1);
    const before = await publishMany(server, channel, 3, "before");
    await until(() => sse1.publications(channel).length === 3, "sse1 to receive the first 3");
    assertSameStream(sse1.publications(channel), before, "sse1");
    const lastEventId = sse1.lastId;
    assert.equal(lastEventId, `${channel}~${before[2].epoch}~${before[2].offset}`);
    sse1.close();

    const missed = await publishMany(server, channel, MISSED, "missed");

    const liveP = publishMany(server, channel, LIVE, "live");
    const sse2 = await SseClient.open(server, { channels: [channel], token, lastEventId, label: "sse2" });
    clients.push(sse2);
    assert.equal(sse2.requests[0]["Last-Event-ID"], lastEventId, "the reconnect carries Last-Event-ID");
    const live = await liveP;
    const marker = await publish(server, channel, { marker: true });
    await until(() => sse2.publications(channel).some((p) => p.offset === marker.offset), "sse2 to receive the marker", REPLAY_WAIT_MS);
    assert.deepEqual(sse2.events.filter((e) => e.type === "unrecovered"), [], "no unrecovered event: the history reaches back");
    const received = sse2.publications(channel);
    assertSameStream(received, [...missed, ...live, { ...marker, data: { marker: true } }], "sse2 (replay + live)");
    // Each event's id moves the position on, so a further reconnect would resume from it.
    for (const p of received) assert.equal(p.eventId, `${channel}~${p.epoch}~${p.offset}`);
    assert.equal(sse2.opens, 1, "one stream, no reconnect in between");
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("SSE: an EventSource whose stream ends resumes by itself from its last event id", { timeout: 120_000 }, async () => {
  // The server ends every stream at shutdown; the EventSource reconnects
  // (to the restarted server) with the Last-Event-ID it tracked, and gets
  // what was published in between.
  const server = await startServer();
  let server2;
  const clients = [];
  try {
    const channel = `chat:${uniq("resume-auto")}`;
    const token = await devToken(server, "reader", "Reader");
    const sse = await SseClient.open(server, { channels: [channel], token, label: "sse" });
    clients.push(sse);
    const before = await publishMany(server, channel, 3, "before");
    await until(() => sse.publications(channel).length === 3, "sse to receive the first 3");
    const exit = await within(server.kill("SIGTERM"), "the server to stop", 15_000);
    assert.equal(exit.code, 0);
    await sse.waitEnded();
    server2 = await server.restart();
    // The development secret is kept in the data directory: the token still works.
    const missed = await publishMany(server2, channel, 50, "missed");
    await until(() => sse.publications(channel).length >= 53, "the EventSource to reconnect and resume", REPLAY_WAIT_MS);
    const after = await publish(server2, channel, { after: true });
    await until(() => sse.publications(channel).some((p) => p.offset === after.offset), "the live publication after the resume");
    assert.ok(sse.requests.length >= 2, "the EventSource reconnected");
    assert.equal(sse.requests.at(-1)["Last-Event-ID"], `${channel}~${before[2].epoch}~${before[2].offset}`, "it sent the last id it saw");
    assertSameStream(sse.publications(channel), [...before, ...missed, { ...after, data: { after: true } }], "sse across the restart");
  } finally {
    closeAll(clients);
    if (server2) await server2.cleanup();
    await server.cleanup();
  }
});

test("resuming while publications pour in never reorders, drops or duplicates (25 resumes per protocol)", { timeout: 120_000 }, async () => {
  // A tighter look at the replay/live boundary: three API publishers run
  // flat out while clients of each protocol resume again and again from
  // 300 publications back (so each replay takes a while and live ones
  // arrive meanwhile). Every resume must continue exactly after its
  // `since`, in offset order, with no live publication ahead of the replay.
  const server = await startServer();
  const clients = [];
  const ROUNDS = 25;
  try {
    const channel = `chat:${uniq("race")}`;
    const token = await devToken(server, "racer", "Racer");
    const byOffset = new Map();
    let running = true;
    const failures = [];
    const loops = [0, 1, 2].map(async (k) => {
      let i = 0;
      while (running) {
        const data = { k, i: i++ };
        try {
          const r = await publish(server, channel, data);
          byOffset.set(r.offset, data);
        } catch (e) {
          failures.push(String(e));
          return;
        }
      }
    });
    const problems = [];
    const check = (who, round, since, seq) => {
      let expect = since.offset + 1;
      for (const p of seq) {
        if (p.offset !== expect) {
          problems.push(`${who} round ${round}: after ${since.offset} got offsets ${summarize(seq.map((q) => q.offset))}`);
          return;
        }
        const data = byOffset.get(p.offset);
        if (data && canonical(data) !== canonical(p.data)) {
          problems.push(`${who} round ${round}: offset ${p.offset} carries ${JSON.stringify(p.data)}, published as ${JSON.stringify(data)}`);
          return;
        }
        expect++;
      }
    };
    await until(() => byOffset.size >= 400, "the publishers to fill the history", 20_000);
    const { epoch } = await publish(server, channel, { start: true });
    const back = () => ({ offset: Math.max(...byOffset.keys()) - 300, epoch });

    // WebSocket
    for (let round = 0; round < ROUNDS; round++) {
      const since = back();
      const ws = await WsClient.connect(server, { token, label: `ws#${round}` });
      clients.push(ws);
      const reply = await ws.request("subscribe", { channel, since }, REPLAY_WAIT_MS);
      assert.equal(reply.type, "ack", JSON.stringify(reply).slice(0, 300));
      const n0 = reply.payload.publications.length;
      await until(() => ws.publications(channel).length >= 10, `${ws.label} to get live publications`);
      ws.close();
      const idx = ws.messages.indexOf(reply);
      const early = ws.messages.slice(0, idx).filter((m) => m.type === "message");
      if (early.length) problems.push(`ws round ${round}: ${early.length} live publication(s) before the ack (offsets ${early.map((m) => m.payload.offset)}), the ack replays ${n0}`);
      const seq = [...reply.payload.publications, ...ws.publications(channel)];
      check("ws", round, since, seq);
    }
    // Socket.IO
    for (let round = 0; round < ROUNDS; round++) {
      const since = back();
      const sio = await SioClient.connect(server, { token, label: `sio#${round}` });
      clients.push(sio);
      const { answer, mark } = await sio.ackWithMark("subscribe", { channel, since }, REPLAY_WAIT_MS);
      assert.ok(answer && !answer.error, JSON.stringify(answer).slice(0, 300));
      await until(() => sio.publications(channel).length >= 10, `${sio.label} to get live publications`);
      sio.close();
      const early = sio.events.slice(0, mark).filter((e) => e.event === "publication");
      if (early.length) problems.push(`socket.io round ${round}: ${early.length} live publication(s) before the ack (offsets ${early.map((e) => e.args[0].offset)}), the ack replays ${answer.publications.length} (${summarize(answer.publications.map((p) => p.offset))})`);
      const seq = [...answer.publications, ...sio.publications(channel)];
      check("socket.io", round, since, seq);
    }
    // SSE
    for (let round = 0; round < ROUNDS; round++) {
      const since = back();
      const sse = await SseClient.open(server, { channels: [channel], token, lastEventId: `${channel}~${since.epoch}~${since.offset}`, label: `sse#${round}` });
      clients.push(sse);
      await until(() => sse.publications(channel).length >= 310, `${sse.label} to get publications`);
      sse.close();
      const seq = sse.publications(channel);
      check("sse", round, since, seq);
    }
    running = false;
    await within(Promise.all(loops), "the publishers to stop");
    assert.deepEqual(failures, []);
    assert.deepEqual(problems, [], "every resume continues exactly where the last one stopped");
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});
