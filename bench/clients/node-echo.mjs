// The client benchmark's Node side: the official socket.io-client in one
// Node process, the same scenario as `bench-loadgen client-echo`.
//
//   node --expose-gc bench/clients/node-echo.mjs --url http://127.0.0.1:3000 \
//     [--connections 1000] [--duration 10] [--warmup 2] [--inflight 100] \
//     [--payload 64] [--timeout 10] [--server-pid PID]
//
// Opens --connections Managers (forceNew, WebSocket transport only, no
// reconnection), at most --inflight handshakes at a time. Each connection
// loops `echo` with an ack, payload {n, p}, and sends the next one when the
// answer is back (closed loop, one ack in flight per connection); the
// answer must carry the same n. Memory: process RSS before connecting and
// once every connection is up (after a full GC when run with --expose-gc);
// bytes_per_conn is the growth divided by the connections. Rate: after
// --warmup seconds of load, the acks received over --duration seconds and
// the CPU time of this process meanwhile (process.cpuUsage: user + system,
// every thread). Prints one JSON object with the same keys as the Rust
// load generator; exits 1 when a connection fails, an ack fails or does
// not match, a connection drops, or no ack arrives.

import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { io } from "socket.io-client";

function flags() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || argv[i + 1] === undefined) {
      throw new Error(`bad argument ${argv[i]}`);
    }
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

const f = flags();
const url = f.url ?? "http://127.0.0.1:3000";
const connections = Math.max(1, Number(f.connections ?? 1000));
const duration = Number(f.duration ?? 10) * 1000;
const warmup = Number(f.warmup ?? 2) * 1000;
const inflight = Math.max(1, Number(f.inflight ?? 100));
const payload = Number(f.payload ?? 64);
const timeout = Number(f.timeout ?? 10) * 1000;
const serverPid = f["server-pid"] ? Number(f["server-pid"]) : null;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function rssKib() {
  if (global.gc) global.gc();
  return Math.round(process.memoryUsage.rss() / 1024);
}

// utime + stime of a process, in clock ticks (1/100 s), from /proc.
function cpuTicks(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return null;
  }
}

// (total, steal) ticks of the machine.
function stealTicks() {
  const v = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  return [v.reduce((a, b) => a + b, 0), v[7]];
}

function open() {
  return new Promise((resolve, reject) => {
    const socket = io(url, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      timeout,
    });
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error("connect timed out"));
    }, timeout);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      socket.close();
      reject(err);
    });
  });
}

async function main() {
  const rssBefore = rssKib();
  let disconnects = 0;
  const started = performance.now();
  const sockets = [];
  const errors = [];
  let next = 0;
  async function opener() {
    while (next < connections) {
      next++;
      try {
        const s = await open();
        s.on("disconnect", () => disconnects++);
        sockets.push(s);
      } catch (e) {
        errors.push(String(e?.message ?? e));
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(inflight, connections) }, opener));
  const connectSecs = (performance.now() - started) / 1000;
  if (errors.length > 0) {
    for (const s of sockets) s.close();
    throw new Error(`${errors.length} of ${connections} connections failed (node): first error: ${errors[0]}`);
  }
  await sleep(500);
  const rssConnected = rssKib();

  const pad = "x".repeat(payload);
  let stop = false;
  let measuring = false;
  let acks = 0;
  let ackErrors = 0;
  let mismatched = 0;
  let firstError = null;
  let latencies = [];
  async function loop(socket) {
    let n = 0;
    while (!stop) {
      n++;
      const sent = performance.now();
      try {
        const answer = await socket.timeout(timeout).emitWithAck("echo", { n, p: pad });
        if (answer && answer.n === n) {
          if (measuring) {
            acks++;
            latencies.push(performance.now() - sent);
          }
        } else {
          mismatched++;
        }
      } catch (e) {
        ackErrors++;
        firstError ??= String(e?.message ?? e);
        break;
      }
    }
  }
  const loops = sockets.map(loop);
  await sleep(warmup);

  // The measured window.
  measuring = true;
  const cpu0 = process.cpuUsage();
  const server0 = serverPid ? cpuTicks(serverPid) : null;
  const steal0 = stealTicks();
  const t0 = performance.now();
  await sleep(duration);
  measuring = false;
  const secs = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const server1 = serverPid ? cpuTicks(serverPid) : null;
  const steal1 = stealTicks();
  const windowAcks = acks;
  const lat = latencies;
  latencies = [];
  const rssLoaded = Math.round(process.memoryUsage.rss() / 1024);

  stop = true;
  await Promise.all(loops);
  const dropped = disconnects;
  for (const s of sockets) s.close();

  lat.sort((a, b) => a - b);
  const q = (p) => (lat.length ? Math.round(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] * 1000) / 1000 : 0);
  const cpuS = (cpu.user + cpu.system) / 1e6;
  const n = sockets.length;
  const result = {
    scenario: "client-echo",
    client: "node",
    connections: n,
    connect_secs: Math.round(connectSecs * 1000) / 1000,
    payload,
    window_s: Math.round(secs * 1000) / 1000,
    acks: windowAcks,
    acks_per_s: Math.round(windowAcks / secs),
    cpu_s: Math.round(cpuS * 1000) / 1000,
    client_cpu_pct: Math.round((cpuS / secs) * 100),
    acks_per_cpu_s: cpuS > 0 ? Math.round(windowAcks / cpuS) : 0,
    rss_before_kib: rssBefore,
    rss_connected_kib: rssConnected,
    rss_loaded_kib: rssLoaded,
    bytes_per_conn: Math.round((Math.max(0, rssConnected - rssBefore) * 1024) / n),
    loaded_bytes_per_conn: Math.round((Math.max(0, rssLoaded - rssBefore) * 1024) / n),
    p50_ms: q(0.5),
    p99_ms: q(0.99),
    max_ms: lat.length ? Math.round(lat[lat.length - 1] * 1000) / 1000 : 0,
    ack_errors: ackErrors,
    first_error: firstError,
    mismatched,
    disconnects: dropped,
    server_cpu_pct:
      server0 !== null && server1 !== null ? Math.round(((server1 - server0) / 100 / secs) * 100) : null,
    steal_pct: steal1[0] > steal0[0] ? Math.round(((steal1[1] - steal0[1]) / (steal1[0] - steal0[0])) * 100) : null,
    gc_before_rss: Boolean(global.gc),
    node: process.version,
  };
  const problems = [];
  if (windowAcks === 0) problems.push("no ack in the window");
  if (ackErrors > 0) problems.push(`${ackErrors} acks failed`);
  if (mismatched > 0) problems.push(`${mismatched} answers did not match`);
  if (dropped > 0) problems.push(`${dropped} connections dropped`);
  if (problems.length > 0) {
    console.log(JSON.stringify({ error: `${problems.join(", ")}; figures: ${JSON.stringify(result)}` }));
    process.exit(1);
  }
  console.log(JSON.stringify(result));
  process.exit(0);
}

main().catch((e) => {
  console.log(JSON.stringify({ error: String(e?.message ?? e) }));
  process.exit(1);
});
