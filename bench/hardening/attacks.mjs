// Measures the server's cost of the attacks listed in issue 14, the way
// they were first reported, so the figures in docs/hardening.md can be
// measured again:
//   node --experimental-websocket bench/hardening/attacks.mjs [path/to/switchboard]
// (default: target/release/switchboard; build it with
// `cargo build --release -p switchboard-server`). Needs Node 20+ only
// (the flag gives Node 20 its WebSocket; Node 22 has it anyway).
//
// 1. SSE channel parsing: server CPU per refused request with 500, 1,000,
//    2,000 and 3,000 `channel` parameters (read from /proc/<pid>/stat).
// 2. SSE event size: bytes on a stream of 128 channels with 255-byte names
//    for one 4-byte publication.
// 3. Unauthenticated HTTP bodies: server RSS after 100 connections each
//    announce a 1.9 MB body to /api/publish without a key.
// 4. Channels used once: server RSS and the channel gauge after subscribe,
//    publish, unsubscribe on 120,000 fresh `typing:` channels.
//
// Load: one client process on loopback, requests one after another (no
// concurrency except in 3, where the 100 connections are opened at once).
// The figures are for one run on the machine it runs on; compare builds on
// the same machine.

import { spawn } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import net from "node:net";
import http from "node:http";

const bin = process.argv[2] ?? "target/release/switchboard";
const KEY = "attack-bench-key-0123456789";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const TICKS = 100; // USER_HZ on Linux

async function startServer() {
  const dir = `/tmp/attacks-${process.pid}-${Math.random().toString(36).slice(2)}`;
  // Port 0: the server picks a free port and prints it ("listening on N").
  const srv = spawn(bin, [
    "--set", "server.port=0", "--set", `server.data_dir=${dir}`,
    "--set", `api.key=${KEY}`,
    "--set", "limits.messages_per_second=0",
    "--set", "limits.handshakes_per_second_per_ip=0",
  ], { stdio: ["ignore", "pipe", "ignore"] });
  const port = await new Promise((resolve, reject) => {
    let out = "";
    srv.stdout.on("data", (c) => {
      out += c;
      const m = out.match(/listening on (\d+)/);
      if (m) resolve(Number(m[1]));
    });
    srv.on("exit", (code) => reject(new Error(`the server exited (${code})`)));
  });
  const url = `http://127.0.0.1:${port}`;
  const token = (await (await fetch(`${url}/api/dev/token`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ user: "ada" }),
  })).json()).token;
  return {
    url, port, token, pid: srv.pid,
    stop() { srv.kill("SIGKILL"); rmSync(dir, { recursive: true, force: true }); },
  };
}

function cpuTicks(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}

function rssKb(pid) {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"));
  return Number(line.split(/\s+/)[1]);
}

function get(url) {
  return new Promise((resolve) => {
    const req = http.get(url, (res) => { res.resume(); res.on("end", () => resolve(res.statusCode)); });
    req.on("error", () => resolve(0));
  });
}

async function sseParsing() {
  const s = await startServer();
  const rows = [];
  for (const n of [500, 1000, 2000, 3000]) {
    const q = Array.from({ length: n }, (_, i) => `channel=chat:c${i}`).join("&") + `&token=${s.token}`;
    const rounds = 200;
    const before = cpuTicks(s.pid);
    let status = 0;
    for (let i = 0; i < rounds; i++) status = await get(`${s.url}/events?${q}`);
    const ms = ((cpuTicks(s.pid) - before) * 1000) / TICKS / rounds;
    rows.push(`  ${n} channel parameters: ${ms.toFixed(2)} ms of server CPU per refused request (HTTP ${status})`);
  }
  s.stop();
  return rows.join("\n");
}

async function sseEventSize() {
  const s = await startServer();
  const names = Array.from({ length: 128 }, (_, i) => `typing:${String(i).padStart(3, "0")}${"x".repeat(245)}`);
  const q = names.map((n) => `channel=${n}`).join("&") + `&token=${s.token}`;
  let bytes = 0;
  let counting = false;
  const req = http.get(`${s.url}/events?${q}`, (res) => res.on("data", (c) => { if (counting) bytes += c.length; }));
  await sleep(1000);
  counting = true;
  await fetch(`${s.url}/api/publish`, {
    method: "POST", headers: { "content-type": "application/json", authorization: `apikey ${KEY}` },
    body: JSON.stringify({ channel: names[7], data: "abcd" }),
  });
  await sleep(1000);
  req.destroy();
  s.stop();
  return `  one 4-byte publication on a stream of 128 channels of ${names[0].length}-byte names: ${bytes} bytes on the stream`;
}

async function unauthenticatedBodies() {
  const s = await startServer();
  const before = rssKb(s.pid);
  const sockets = [];
  const chunk = Buffer.alloc(64 * 1024, 0x20);
  for (let i = 0; i < 100; i++) {
    const sock = net.connect(s.port, "127.0.0.1");
    sock.on("error", () => {});
    sockets.push(sock);
    sock.write(`POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1900000\r\n\r\n`);
    // Up to 1.9 MB, as long as the server takes it.
    for (let sent = 0; sent < 1_900_000 && !sock.destroyed; sent += chunk.length) sock.write(chunk);
  }
  await sleep(3000);
  const after = rssKb(s.pid);
  const open = sockets.filter((x) => !x.destroyed && x.readyState === "open").length;
  for (const x of sockets) x.destroy();
  s.stop();
  return `  100 connections announcing 1.9 MB bodies without a key: RSS ${(before / 1024).toFixed(1)} MB -> ${(after / 1024).toFixed(1)} MB; ${open} of 100 still open after 3 s`;
}

async function channelsUsedOnce() {
  const s = await startServer();
  const { WebSocket } = globalThis;
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/ws`);
  const pending = new Map();
  let id = 0;
  ws.onmessage = (m) => {
    const v = JSON.parse(m.data);
    if (v.id !== undefined && pending.has(v.id)) { pending.get(v.id)(v); pending.delete(v.id); }
  };
  await new Promise((r) => { ws.onopen = r; });
  const call = (type, payload) => new Promise((resolve) => {
    const n = ++id;
    pending.set(n, resolve);
    ws.send(JSON.stringify({ type, payload, id: n }));
  });
  const authed = await call("auth", { token: s.token });
  if (authed.type !== "ack") throw new Error(`auth: ${JSON.stringify(authed)}`);
  const before = rssKb(s.pid);
  let refused = 0;
  let firstRefusal = null;
  const check = (v) => {
    if (v.type !== "ack") { refused += 1; firstRefusal ??= v; }
  };
  const total = 120_000;
  const batch = 100; // under the 128 subscriptions of a connection
  for (let i = 0; i < total; i += batch) {
    const work = [];
    for (let j = i; j < i + batch; j++) {
      const channel = `typing:${j.toString(36)}${Math.random().toString(36).slice(2, 10)}`;
      work.push(call("subscribe", { channel }).then(check)
        .then(() => call("message", { channel, data: 1 })).then(check)
        .then(() => call("unsubscribe", { channel })).then(check));
    }
    await Promise.all(work);
  }
  const after = rssKb(s.pid);
  const metrics = await (await fetch(`${s.url}/metrics`)).text();
  const gauge = metrics.split("\n").find((l) => l.startsWith("switchboard_channels "));
  ws.close();
  s.stop();
  const refusals = refused ? `; ${refused} refused, first: ${JSON.stringify(firstRefusal)}` : "";
  return `  subscribe, publish, unsubscribe on ${total} fresh typing: channels: RSS ${(before / 1024).toFixed(1)} MB -> ${(after / 1024).toFixed(1)} MB; ${gauge ?? "no channels gauge"}${refusals}`;
}

console.log(`binary: ${bin}`);
console.log("1. SSE channel parameters\n" + (await sseParsing()));
console.log("2. SSE event size\n" + (await sseEventSize()));
console.log("3. Unauthenticated bodies\n" + (await unauthenticatedBodies()));
console.log("4. Channels used once\n" + (await channelsUsedOnce()));
