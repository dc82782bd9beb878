// Harness of the cluster interop tests: starts cluster nodes (the Node
// reference server node-server.mjs, or the Rust example `cluster`), clients,
// and cleans everything up. The node contract is documented at the top of
// node-server.mjs.
//
// Environment:
//   CLUSTER_KINDS     comma-separated kind pairs to test, from node-node,
//                     node-rust, rust-node, rust-rust (the default: all four)
//   RUST_CLUSTER_BIN  the Rust node binary (default
//                     <repo>/target/debug/examples/cluster, or under
//                     $CARGO_TARGET_DIR)
//   REDIS_URL         default redis://127.0.0.1:6379
//   CLUSTER_WAIT_MS   bound of one wait (default 5000)
//
// Isolation: every cluster gets its own random PREFIX (channels, stream
// name) and SESSION_PREFIX, so tests never see each other's messages, and the
// keys it created (stream, sessions) are deleted at the end. Redis itself is
// shared: never flushed.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { io } from "socket.io-client";
import { createClient } from "redis";

export { io, sleep };

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** Repository root: this file lives in <root>/tests/cluster/harness.mjs. */
export const REPO_ROOT = path.resolve(HERE, "..", "..");
export const REDIS_URL = process.env.REDIS_URL || "redis://127.0.0.1:6379";
/** Bound of one wait (connect, event, ack), in milliseconds. */
export const WAIT_MS = Number(process.env.CLUSTER_WAIT_MS || 5000);
/** Per-test timeout given to node:test: a last resort behind the per-wait bounds. */
export const TEST_TIMEOUT_MS = 60_000;

// ---------------------------------------------------------------------------
// Kinds and modes
// ---------------------------------------------------------------------------

const ALL_PAIRS = ["node-node", "node-rust", "rust-node", "rust-rust"];

/** The kind pairs to test: [["node", "node"], ...] from CLUSTER_KINDS. */
export function kindPairs() {
  const spec = process.env.CLUSTER_KINDS ?? ALL_PAIRS.join(",");
  const pairs = spec
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const pair = s.split("-");
      if (pair.length !== 2 || !pair.every((k) => k === "node" || k === "rust")) {
        throw new Error(`CLUSTER_KINDS: bad pair ${JSON.stringify(s)} (expected node-node, node-rust, rust-node or rust-rust)`);
      }
      return pair;
    });
  return pairs;
}

/** Every kind that appears in CLUSTER_KINDS, in order ("node", "rust"). */
export function kinds() {
  return [...new Set(kindPairs().flat())];
}

/** The cluster modes: name and node environment (PREFIX added per cluster). */
export const MODES = [
  { name: "redis", env: { ADAPTER: "redis" } },
  { name: "sharded-dynamic", env: { ADAPTER: "sharded", SUBSCRIPTION_MODE: "dynamic" } },
  { name: "sharded-static", env: { ADAPTER: "sharded", SUBSCRIPTION_MODE: "static" } },
  { name: "streams", env: { ADAPTER: "streams" } },
];

function targetDir() {
  const t = process.env.CARGO_TARGET_DIR;
  if (!t) return path.join(REPO_ROOT, "target");
  return path.isAbsolute(t) ? t : path.resolve(REPO_ROOT, t);
}

/** The command that starts a node of `kind`. */
export function nodeCommand(kind) {
  if (kind === "node") return { cmd: process.execPath, args: [path.join(HERE, "node-server.mjs")] };
  if (kind === "rust") {
    const fromEnv = process.env.RUST_CLUSTER_BIN;
    const bin = fromEnv
      ? path.isAbsolute(fromEnv) ? fromEnv : path.resolve(REPO_ROOT, fromEnv)
      : path.join(targetDir(), "debug", "examples", "cluster");
    if (!existsSync(bin)) {
      throw new Error(
        `Rust cluster node not found: ${bin}\n` +
          "Build it (cargo build -p switchboard --example cluster), point RUST_CLUSTER_BIN at it, " +
          "or run only the Node pairs: CLUSTER_KINDS=node-node",
      );
    }
    return { cmd: bin, args: [] };
  }
  throw new Error(`unknown node kind ${JSON.stringify(kind)}`);
}

/** A random prefix, unique per cluster: "sbtest:<label>:<hex>". */
export function uniquePrefix(label = "t") {
  return `sbtest:${label.replace(/[^A-Za-z0-9_-]/g, "_")}:${randomBytes(6).toString("hex")}`;
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const liveChildren = new Set();
// Safety net: never leave a node behind, even if a test crashes mid-way.
process.on("exit", () => {
  for (const child of liveChildren) {
    try {
      process.kill(-child.pid, "SIGKILL");
    } catch {
      try {
        child.kill("SIGKILL");
      } catch {
        /* gone */
      }
    }
  }
});

function signal(child, sig) {
  try {
    process.kill(-child.pid, sig); // its process group (detached)
  } catch {
    try {
      child.kill(sig);
    } catch {
      /* gone */
    }
  }
}

/**
 * Starts one node of `kind` with `env` (PORT is chosen here unless given) and
 * waits for its `listening on <port>` line.
 * Resolves to { kind, name, port, url, env, pid, logs(), kill(sig), exited }.
 */
export async function startNode(kind, env = {}, { timeoutMs = 20_000 } = {}) {
  const { cmd, args } = nodeCommand(kind);
  const port = env.PORT ?? (await freePort());
  const childEnv = {
    ...process.env,
    RUST_LOG: process.env.RUST_LOG ?? "warn",
    REDIS_URL,
    ...env,
    PORT: String(port),
  };
  for (const [k, v] of Object.entries(childEnv)) if (v === undefined) delete childEnv[k];
  const child = spawn(cmd, args, { cwd: REPO_ROOT, env: childEnv, stdio: ["ignore", "pipe", "pipe"], detached: true });
  liveChildren.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8");
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (d) => {
    stderr += d;
    if (stderr.length > 100_000) stderr = stderr.slice(-50_000);
  });
  const exited = new Promise((resolve) =>
    child.once("exit", (code, sig) => {
      liveChildren.delete(child);
      child.stdout.destroy();
      child.stderr.destroy();
      resolve({ code, signal: sig });
    }),
  );
  const logs = () => `\n--- ${kind} node :${port} stdout ---\n${stdout.slice(-2000)}\n--- stderr ---\n${stderr.slice(-4000)}`;
  const printed = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal(child, "SIGKILL");
      reject(new Error(`${kind} node did not print "listening on <port>" within ${timeoutMs} ms${logs()}`));
    }, timeoutMs);
    child.stdout.on("data", (d) => {
      stdout += d;
      const m = /^listening on (\d+)\s*$/m.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`failed to start ${kind} node (${cmd}): ${err.message}`));
    });
    exited.then(({ code, signal: sig }) => {
      clearTimeout(timer);
      reject(new Error(`${kind} node exited (code ${code}, signal ${sig}) before listening${logs()}`));
    });
  });
  if (printed !== Number(port)) {
    signal(child, "SIGKILL");
    throw new Error(`${kind} node printed "listening on ${printed}" but was given PORT=${port}${logs()}`);
  }
  const node = {
    kind,
    name: env.NODE_NAME ?? `node-${port}`,
    port,
    url: `http://127.0.0.1:${port}`,
    env: childEnv,
    pid: child.pid,
    exited,
    logs,
    /** Stops the node: `sig` (default SIGTERM), then SIGKILL after 3 s. */
    async kill(sig = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      signal(child, sig);
      const done = await withTimeout(exited, 3000, "node exit").then(() => true, () => false);
      if (!done) {
        signal(child, "SIGKILL");
        await withTimeout(exited, 3000, "node exit after SIGKILL").catch(() => {});
      }
    },
  };
  return node;
}

/** Deletes the keys a cluster with this prefix may have created (stream, sessions). */
export async function deleteKeys(prefix, sessionPrefix) {
  const client = createClient({ url: REDIS_URL });
  client.on("error", () => {});
  await client.connect();
  try {
    const keys = [];
    for (const pattern of [`${prefix}*`, `${sessionPrefix}*`]) {
      for await (const key of client.scanIterator({ MATCH: pattern, COUNT: 1000 })) keys.push(key);
    }
    // Only keys of this random prefix: never anything else of the shared Redis.
    const own = [...new Set(keys)].filter((k) => k.startsWith(prefix) || k.startsWith(sessionPrefix));
    if (own.length) await client.del(own);
  } finally {
    await client.quit().catch(() => {});
  }
}

/** A connected node-redis client for the test itself (closed by the cluster's cleanup). */
export async function testRedisClient(t) {
  const client = createClient({ url: REDIS_URL });
  client.on("error", () => {});
  await client.connect();
  t.after(() => client.quit().catch(() => {}));
  return client;
}

/**
 * Starts a cluster for one test: one node per entry of `kinds` (e.g.
 * ["node", "rust"]), all with `env` (typically a MODES entry's env) and a
 * fresh PREFIX / SESSION_PREFIX, started concurrently. Registers the cleanup
 * (clients closed, nodes killed, keys deleted) with `t.after`.
 * Resolves to { prefix, sessionPrefix, nodes, client(node, opts), connect(node, opts) }.
 */
export async function startCluster(t, { kinds: nodeKinds, env = {}, label = "c" }) {
  const prefix = env.PREFIX ?? uniquePrefix(label);
  const sessionPrefix = env.SESSION_PREFIX ?? `${prefix}:session:`;
  const sockets = new Set();
  const nodes = [];
  t.after(async () => {
    for (const s of sockets) {
      try {
        s.io.opts.reconnection = false;
        s.io.reconnection(false);
        s.disconnect();
        s.io._close?.();
      } catch {
        /* ignore */
      }
    }
    await Promise.all(nodes.map((n) => n.kill()));
    await deleteKeys(prefix, sessionPrefix).catch(() => {});
  });
  const started = await Promise.allSettled(
    nodeKinds.map((kind, i) =>
      startNode(kind, { ...env, PREFIX: prefix, SESSION_PREFIX: sessionPrefix, NODE_NAME: `${kind}-${i}` }),
    ),
  );
  for (const r of started) if (r.status === "fulfilled") nodes.push(r.value);
  const failed = started.find((r) => r.status === "rejected");
  if (failed) throw failed.reason;

  const cluster = {
    prefix,
    sessionPrefix,
    nodes,
    /** A new (not yet connected) client of `node`; reconnection off and websocket only unless overridden. */
    client(node, opts = {}) {
      const socket = io(node.url, {
        forceNew: true,
        reconnection: false,
        transports: ["websocket"],
        timeout: WAIT_MS,
        ...opts,
      });
      sockets.add(socket);
      return socket;
    },
    /**
     * A connected client of `node`; resolves once its `hello` arrived
     * (socket.hello = the hello payload). Options as for client().
     */
    async connect(node, opts = {}) {
      const socket = cluster.client(node, opts);
      const hello = waitFor(socket, "hello", { label: `hello from ${node.kind} node :${node.port}` });
      await waitConnect(socket, { label: `connect to ${node.kind} node :${node.port}` });
      [socket.hello] = await hello;
      return socket;
    },
    /** Adds a socket created elsewhere to the cleanup. */
    track(socket) {
      sockets.add(socket);
      return socket;
    },
    /** The logs of every node (for failure messages). */
    logs: () => nodes.map((n) => n.logs()).join("\n"),
  };
  return cluster;
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/** Races a promise against a timeout that rejects with `what`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The next `event` on `emitter` (optionally the first whose args pass
 * `filter`), as the array of its arguments; bounded.
 */
export function waitFor(emitter, event, { timeoutMs = WAIT_MS, filter, label } = {}) {
  let handler;
  const p = new Promise((resolve) => {
    handler = (...args) => {
      if (filter && !filter(...args)) return;
      emitter.off(event, handler);
      resolve(args);
    };
    emitter.on(event, handler);
  });
  const result = withTimeout(p, timeoutMs, label ?? `event "${event}"${emitter.id ? ` on socket ${emitter.id}` : ""}`).catch(
    (err) => {
      emitter.off(event, handler);
      throw err;
    },
  );
  // Waits are often armed before the action that triggers them: if the test
  // fails before awaiting this one, don't report an unhandled rejection too.
  result.catch(() => {});
  return result;
}

/** Waits for `connect`; rejects with the connect_error if refused. */
export function waitConnect(socket, { timeoutMs = WAIT_MS, label = "connect" } = {}) {
  if (socket.connected) return Promise.resolve(socket);
  let onConnect, onError;
  const p = new Promise((resolve, reject) => {
    onConnect = () => resolve(socket);
    onError = (err) => reject(new Error(`connect_error: ${err?.message}${err?.data !== undefined ? ` (${JSON.stringify(err.data)})` : ""}`));
    socket.once("connect", onConnect);
    socket.once("connect_error", onError);
  });
  return withTimeout(p, timeoutMs, label).finally(() => {
    socket.off("connect", onConnect);
    socket.off("connect_error", onError);
  });
}

/** Records every `event` on `emitter`: an array of argument arrays. */
export function record(emitter, event) {
  const seen = [];
  emitter.on(event, (...args) => seen.push(args));
  return seen;
}

/** Emits `event` with `args` and resolves with the first ack argument; bounded. */
export async function ack(socket, event, ...args) {
  try {
    return await socket.timeout(WAIT_MS).emitWithAck(event, ...args);
  } catch (err) {
    throw new Error(`no ack for "${event}" within ${WAIT_MS} ms (${err.message})`);
  }
}

/** Like ack() with a longer bound (for operations that take ~3 s by design). */
export async function slowAck(socket, ms, event, ...args) {
  try {
    return await socket.timeout(ms).emitWithAck(event, ...args);
  } catch (err) {
    throw new Error(`no ack for "${event}" within ${ms} ms (${err.message})`);
  }
}

/** Polls `fn` until it returns a truthy value (returned), or fails after `timeoutMs` with `what`. */
export async function until(fn, what, { timeoutMs = WAIT_MS, intervalMs = 25 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = undefined;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ""}`);
    }
    await sleep(intervalMs);
  }
}

/**
 * Retries `attempt()` (an async function that throws when the expected effect
 * is not there yet) until it succeeds; for effects that propagate
 * asynchronously through the cluster. Returns what `attempt` returned.
 */
export async function eventually(attempt, what, { timeoutMs = WAIT_MS, intervalMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${err.message}`);
    }
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------

/** A random room name (unique per call). */
export function room(label = "room") {
  return `${label}-${randomBytes(4).toString("hex")}`;
}

/** Normalises any binary value to a Buffer (throws on non-binary). */
export function toBuffer(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`expected binary data, got ${Object.prototype.toString.call(value)}: ${JSON.stringify(value)}`);
}

/** Sorted copy. */
export const sorted = (arr) => [...arr].sort();
