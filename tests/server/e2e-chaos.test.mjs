// Chaos: the server is killed (SIGKILL) in the middle of bursts of
// acknowledged publishes over each protocol, its data directory fills up,
// its write-ahead log is truncated, its database file is corrupted. What is
// checked each time: nothing acknowledged is lost, nothing is acknowledged
// that was not stored, and a damaged history is never served as if whole
// (the server refuses to start naming the file, or starts a new epoch so
// resuming clients are told `recovered: false`).
//
// The disk-full test mounts a small tmpfs (needs root and mount rights; it
// is skipped, saying why, where mounting is not allowed).

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, truncateSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { devToken, until, WAIT_MS } from "./helpers.mjs";
import { start, uniq, api, WsClient, SioClient, publish, history, within, closeAll, canonical } from "./e2e-helpers.mjs";

/** SIGKILL now (same tick), then wait for the exit. */
async function killNow(server) {
  server.child.kill("SIGKILL");
  const exit = await within(server.exited, "the killed server to exit");
  assert.equal(exit.signal, "SIGKILL");
}

/** Every publication of a channel (up to 1,000) through the API. */
async function everything(server, channel) {
  return history(server, channel, 1000);
}

/**
 * Acknowledged publications missing from (or different in) a history:
 * each ack {offset, data} must be at its offset with its data.
 */
function missingFrom(h, acked) {
  const byOffset = new Map(h.publications.map((p) => [p.offset, canonical(p.data)]));
  return acked.filter((a) => byOffset.get(a.offset) !== canonical(a.data));
}

const BURST_ARGS = ["--set", "channels.chat.history_size=1000"];
/** Publishers running at once, per protocol. */
const WRITERS = 8;
/** Acknowledgements to wait for before the kill. */
const ACKS_BEFORE_KILL = 300;

/**
 * Runs `writers` loops publishing with `once(writer, n)` (resolves to the
 * answer {offset, epoch} or throws) until stopped; returns {acked, tried,
 * stop()}. A publish whose answer never came (the server died) counts as
 * tried but not acknowledged.
 */
function burst(writers, once) {
  const acked = [];
  let tried = 0;
  let running = true;
  const loops = writers.map(async (w, i) => {
    let n = 0;
    while (running) {
      const data = { w: i, n: n++ };
      tried++;
      try {
        const r = await once(w, data);
        acked.push({ offset: r.offset, epoch: r.epoch, data });
      } catch {
        return; // the server is gone
      }
    }
  });
  return {
    acked,
    get tried() { return tried; },
    async stop() {
      running = false;
      await within(Promise.all(loops), "the publishers to stop", WAIT_MS * 2);
    },
  };
}

const PROTOCOLS = {
  "http api": {
    async writers(server) {
      return Array.from({ length: WRITERS }, () => server);
    },
    async once(server, channel, data) {
      const res = await api(server, "POST", "/api/publish", { channel, data });
      if (res.status !== 200) throw new Error(`publish answered ${res.status} ${JSON.stringify(res.body)}`);
      return res.body;
    },
  },
  ws: {
    async writers(server, channel, clients) {
      const out = [];
      for (let i = 0; i < WRITERS; i++) {
        const token = await devToken(server, `ws${i}`, `WS ${i}`);
        const ws = await WsClient.connect(server, { token, label: `ws${i}` });
        clients.push(ws);
        await ws.ok("subscribe", { channel });
        out.push(ws);
      }
      return out;
    },
    async once(ws, channel, data) {
      const reply = await ws.request("message", { channel, data });
      if (reply.type !== "ack") throw new Error(`publish answered ${JSON.stringify(reply)}`);
      return reply.payload;
    },
  },
  "socket.io": {
    async writers(server, channel, clients) {
      const out = [];
      for (let i = 0; i < WRITERS; i++) {
        const token = await devToken(server, `sio${i}`, `SIO ${i}`);
        const sio = await SioClient.connect(server, { token, label: `sio${i}` });
        clients.push(sio);
        await sio.ok("subscribe", { channel });
        out.push(sio);
      }
      return out;
    },
    async once(sio, channel, data) {
      const answer = await sio.ack("publish", { channel, data });
      if (!answer || answer.error) throw new Error(`publish answered ${JSON.stringify(answer)}`);
      return answer;
    },
  },
};

for (const [protocol, how] of Object.entries(PROTOCOLS)) {
  test(`SIGKILL in the middle of a burst of acknowledged publishes (${protocol}): none missing after the restart`, { timeout: 180_000 }, async (t) => {
    let server = await start({ args: BURST_ARGS });
    const servers = [server];
    const clients = [];
    try {
      for (let round = 1; round <= 3; round++) {
        const channel = `chat:${uniq(`chaos-${round}`)}`;
        const writers = await how.writers(server, channel, clients);
        const b = burst(writers, (w, data) => how.once(w, channel, data));
        await until(() => b.acked.length >= ACKS_BEFORE_KILL, `${ACKS_BEFORE_KILL} acknowledged publishes`, WAIT_MS * 6);
        // Publishes are in flight on every writer: kill now.
        await killNow(server);
        await b.stop();
        closeAll(clients.splice(0));
        server = await server.restart();
        servers.push(server);

        const acked = b.acked;
        const offsets = new Set(acked.map((a) => a.offset));
        assert.equal(offsets.size, acked.length, "no two acknowledgements share an offset");
        const epochs = new Set(acked.map((a) => a.epoch));
        assert.equal(epochs.size, 1, "one epoch for the whole burst");
        const h = await everything(server, channel);
        assert.equal(h.epoch, acked[0].epoch, "same epoch after SIGKILL and restart");
        const missing = missingFrom(h, acked);
        t.diagnostic(`${protocol} round ${round}: ${acked.length} acknowledged, ${b.tried - acked.length} in flight at the kill, ${h.publications.length} stored, ${missing.length} acknowledged but missing`);
        assert.deepEqual(missing, [], `${protocol}: acknowledged but missing after SIGKILL`);
        // Stored offsets are 1..n without holes (in-flight ones may be stored, unanswered).
        assert.deepEqual(h.publications.map((p) => p.offset), h.publications.map((_, i) => i + 1), "offsets without holes");
        assert.equal(h.offset, h.publications.length, "the position is the last stored offset");
      }
    } finally {
      closeAll(clients);
      for (const s of servers.reverse()) await s.cleanup();
    }
  });
}

test("a truncated write-ahead log after SIGKILL: loss detected, logged, new epoch (no reused offsets under the old one)", { timeout: 120_000 }, async (t) => {
  let server = await start({ args: BURST_ARGS });
  const servers = [server];
  const clients = [];
  try {
    const channel = `chat:${uniq("wal")}`;
    const acked = [];
    for (let n = 0; n < 200; n++) {
      const data = { n, pad: "x".repeat(200) };
      const r = await publish(server, channel, data);
      acked.push({ ...r, data });
    }
    const epoch = acked[0].epoch;
    await killNow(server);
    const wal = path.join(server.dataDir, "history.db-wal");
    const size = statSync(wal).size;
    assert.ok(size > 32 * 1024, `the write-ahead log holds the burst (${size} bytes)`);
    truncateSync(wal, Math.floor(size / 2));

    server = await server.restart();
    servers.push(server);
    await until(() => /HISTORY LOST/.test(server.logs()), "the loss to be logged");
    assert.match(server.logs(), /history\.db/, "the log names the file");
    const h = await everything(server, channel);
    assert.notEqual(h.epoch, epoch, "a new epoch after the loss");
    assert.ok(h.offset < 200, `some of the burst was lost (position ${h.offset})`);
    t.diagnostic(`truncated WAL: ${200 - h.offset} of 200 acknowledged publications lost, epoch ${epoch} -> ${h.epoch}`);
    // What is left is genuine: a prefix of what was acknowledged.
    assert.deepEqual(missingFrom(h, acked.slice(0, h.publications.length)), []);

    // A client that saw offset 150 of the old epoch is told it cannot resume.
    const token = await devToken(server, "resumer", "R");
    const ws = await WsClient.connect(server, { token });
    clients.push(ws);
    const ack = await ws.ok("subscribe", { channel, since: { offset: 150, epoch } });
    assert.equal(ack.recovered, false, "resuming from a lost position is not recovered");
    assert.deepEqual(ack.publications ?? [], []);
    assert.notEqual(ack.epoch, epoch);
    const next = await publish(server, channel, { after: "loss" });
    assert.notEqual(next.epoch, epoch, "the next publication is not under the old epoch");
    assert.equal(next.epoch, h.epoch);

    // The new epoch holds across a clean restart (no second loss reported).
    await server.kill("SIGTERM");
    server = await server.restart();
    servers.push(server);
    const again = await everything(server, channel);
    assert.equal(again.epoch, h.epoch);
    assert.doesNotMatch(server.logs(), /HISTORY LOST/);
  } finally {
    closeAll(clients);
    for (const s of servers.reverse()) await s.cleanup();
  }
});

/** Starts a server expected to refuse to start: resolves to its output. */
async function refusesToStart(server) {
  const attempt = server.restart().then(
    (s) => { s.cleanup(); return null; },
    (e) => e.message,
  );
  const output = await within(attempt, "the server to exit", 30_000);
  assert.ok(output !== null, "the server started on a damaged history.db");
  return output;
}

test("a corrupt or truncated history.db: the server refuses to start, naming the file", { timeout: 120_000 }, async () => {
  const server = await start({ args: BURST_ARGS });
  const servers = [server];
  const clients = [];
  try {
    const channels = Array.from({ length: 5 }, (_, i) => `chat:${uniq(`c${i}`)}`);
    for (let n = 0; n < 100; n++) {
      await Promise.all(channels.map((c) => publish(server, c, { n, pad: "y".repeat(500) })));
    }
    const before = await everything(server, channels[0]);
    // A clean stop writes everything into history.db itself.
    await server.kill("SIGTERM");
    const db = path.join(server.dataDir, "history.db");
    const pristine = readFileSync(db);
    assert.ok(pristine.length > 64 * 1024, `history.db holds the publications (${pristine.length} bytes)`);

    const damages = {
      "a page overwritten with garbage": () => {
        const fd = openSync(db, "r+");
        writeSync(fd, Buffer.alloc(4096, 0xa5), 0, 4096, Math.floor(pristine.length / 4096 / 2) * 4096);
        closeSync(fd);
      },
      "truncated to half": () => truncateSync(db, Math.floor(pristine.length / 2)),
      "a garbage header": () => {
        const fd = openSync(db, "r+");
        writeSync(fd, Buffer.alloc(100, 0x5a), 0, 100, 0);
        closeSync(fd);
      },
    };
    for (const [what, damage] of Object.entries(damages)) {
      writeFileBytes(db, pristine);
      damage();
      const output = await refusesToStart(server);
      assert.match(output, /history\.db is damaged and will not be served/, `${what}: the refusal says why`);
      assert.ok(output.includes(db), `${what}: the refusal names the file (${db})`);
    }

    // Repaired (the pristine copy restored): it starts and serves the same history.
    writeFileBytes(db, pristine);
    const back = await server.restart();
    servers.push(back);
    const h = await everything(back, channels[0]);
    assert.equal(h.epoch, before.epoch);
    assert.deepEqual(h.publications, before.publications);
    await back.kill("SIGTERM");

    // Moved away instead: an empty history under a new epoch, the loss
    // logged (the mark says commits were made), resumes not recovered.
    for (const suffix of ["", "-wal", "-shm"]) rmSync(db + suffix, { force: true });
    const fresh = await server.restart();
    servers.push(fresh);
    await until(() => /HISTORY LOST/.test(fresh.logs()), "the loss to be logged");
    const empty = await everything(fresh, channels[0]);
    assert.notEqual(empty.epoch, before.epoch);
    assert.equal(empty.publications.length, 0);
    const token = await devToken(fresh, "resumer", "R");
    const ws = await WsClient.connect(fresh, { token });
    clients.push(ws);
    const ack = await ws.ok("subscribe", { channel: channels[0], since: { offset: 50, epoch: before.epoch } });
    assert.equal(ack.recovered, false);
  } finally {
    closeAll(clients);
    for (const s of servers.reverse()) await s.cleanup();
  }
});

function writeFileBytes(file, bytes) {
  const fd = openSync(file, "w");
  writeSync(fd, bytes);
  closeSync(fd);
}

/** Mounts a tmpfs of `size` on a new directory; null (with why) if not allowed. */
function mountTmpfs(size) {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-full-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir], { stdio: "pipe" });
    return { dir };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    return { why: `cannot mount a tmpfs here (${String(e.stderr || e.message).trim()})` };
  }
}

function unmount(dir) {
  try {
    execFileSync("umount", [dir], { stdio: "pipe" });
  } catch {
    execFileSync("umount", ["-l", dir], { stdio: "pipe" });
  }
  rmSync(dir, { recursive: true, force: true });
}

/** Fills the file system of `dir` with a file of 4 KiB writes until ENOSPC. */
function fill(file) {
  const fd = openSync(file, "w");
  const chunk = Buffer.alloc(4096, 1);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (e) {
    if (e.code !== "ENOSPC") throw e;
  } finally {
    closeSync(fd);
  }
}

test("a full disk: publishes refused with storage_unavailable over each protocol, nothing acknowledged lost, readiness follows, recovery when space returns", { timeout: 120_000 }, async (t) => {
  if (process.getuid?.() !== 0) return t.skip("needs root to mount a tmpfs");
  const mount = mountTmpfs("8m");
  if (!mount.dir) return t.skip(mount.why);
  const servers = [];
  const clients = [];
  try {
    let server = await start({ dataDir: mount.dir, args: BURST_ARGS });
    servers.push(server);
    const channel = `chat:${uniq("full")}`;
    const acked = [];
    const record = (r, data) => acked.push({ offset: r.offset, epoch: r.epoch, data });
    for (let n = 0; n < 20; n++) {
      const data = { n, pad: "z".repeat(1000) };
      record(await publish(server, channel, data), data);
    }
    const wsToken = await devToken(server, "wsfull", "W");
    const ws = await WsClient.connect(server, { token: wsToken });
    clients.push(ws);
    await ws.ok("subscribe", { channel });
    const sioToken = await devToken(server, "siofull", "S");
    const sio = await SioClient.connect(server, { token: sioToken });
    clients.push(sio);
    await sio.ok("subscribe", { channel });
    assert.equal((await api(server, "GET", "/readyz")).status, 200);

    const filler = path.join(mount.dir, "filler");
    fill(filler);

    // The API: 503 with the documented, retryable code.
    const refused = await api(server, "POST", "/api/publish", { channel, data: { full: "api", pad: "z".repeat(1000) } });
    assert.equal(refused.status, 503, `publish on a full disk: ${refused.status} ${JSON.stringify(refused.body)}`);
    assert.equal(refused.body.code, "storage_unavailable");
    assert.match(refused.body.message, /disk is full/);
    // /ws and Socket.IO: the same code.
    const wsRefused = await ws.fails("message", { channel, data: { full: "ws", pad: "z".repeat(1000) } });
    assert.equal(wsRefused.code, "storage_unavailable");
    const sioRefused = await sio.fails("publish", { channel, data: { full: "sio", pad: "z".repeat(1000) } });
    assert.equal(sioRefused.code, "storage_unavailable");
    // Not ready while writes fail.
    const ready = await api(server, "GET", "/readyz");
    assert.equal(ready.status, 503, `readyz on a full disk: ${JSON.stringify(ready.body)}`);
    assert.equal(ready.body.status, "storage_error");
    // Reads still answer, with everything acknowledged and nothing refused.
    const during = await everything(server, channel);
    assert.deepEqual(missingFrom(during, acked), []);
    assert.equal(during.offset, acked.length, "refused publishes were not stored");

    // Space returns: ready again, publishes go on right after the last acknowledged offset.
    rmSync(filler);
    await until(async () => (await api(server, "GET", "/readyz")).status === 200, "readiness once space returned");
    let data = { after: "api" };
    record(await publish(server, channel, data), data);
    data = { after: "ws" };
    record(await ws.ok("message", { channel, data }), data);
    data = { after: "sio" };
    record(await sio.ok("publish", { channel, data }), data);
    assert.deepEqual(acked.slice(-3).map((a) => a.offset), [21, 22, 23], "offsets go on without holes");

    // And all of it survives SIGKILL.
    await killNow(server);
    closeAll(clients);
    server = await server.restart();
    servers.push(server);
    const after = await everything(server, channel);
    assert.equal(after.epoch, acked[0].epoch);
    assert.deepEqual(missingFrom(after, acked), []);
    assert.equal(after.offset, acked.length);
    t.diagnostic(`disk full: ${acked.length} acknowledged, 3 refused with storage_unavailable, 0 missing after recovery and SIGKILL`);
  } finally {
    closeAll(clients);
    for (const s of servers.reverse()) await s.cleanup();
    if (existsSync(mount.dir)) unmount(mount.dir);
  }
});
