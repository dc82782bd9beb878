// Shared helpers for the Switchboard interop tests.
//
// Every wait in here is bounded by a timeout and rejects with a message that
// says what was being waited for, so a broken server makes tests fail, never hang.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createHmac } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { io, Manager } from "socket.io-client";

export { io, Manager, sleep };

/** Repository root: this file lives in <root>/tests/interop/helpers.mjs. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Default timeout of a single wait (connect, event, ack) in milliseconds. */
export const WAIT_MS = Number(process.env.INTEROP_WAIT_MS || 5000);
/** Grace period used when asserting that something did NOT happen. */
export const GRACE_MS = 200;
/** Per-test timeout passed to node:test, a last resort behind the per-wait timeouts. */
export const TEST_TIMEOUT_MS = 30_000;

function targetDir() {
  const t = process.env.CARGO_TARGET_DIR;
  if (!t) return path.join(REPO_ROOT, "target");
  return path.isAbsolute(t) ? t : path.resolve(REPO_ROOT, t);
}

function resolveBin(envVar, exampleName) {
  const fromEnv = process.env[envVar];
  if (fromEnv) return path.isAbsolute(fromEnv) ? fromEnv : path.resolve(REPO_ROOT, fromEnv);
  return path.join(targetDir(), "debug", "examples", exampleName);
}

/** Path of the interop-server example binary (env INTEROP_SERVER_BIN overrides). */
export function interopServerBin() {
  return resolveBin("INTEROP_SERVER_BIN", "interop-server");
}

/** Path of the chat example binary (env CHAT_BIN overrides). */
export function chatBin() {
  return resolveBin("CHAT_BIN", "chat");
}

// ---------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------

const liveChildren = new Set();
// Safety net: never leave a server behind, even if a test crashes mid-way.
process.on("exit", () => {
  for (const child of liveChildren) signalTree(child, "SIGKILL");
});

/**
 * Servers run in their own process group (detached), so a signal reaches the
 * whole group, e.g. a wrapper script and the server it started.
 */
function signalTree(child, signal) {
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* already gone */
    }
  }
}

function spawnOnce(bin, port, env, timeoutMs) {
  return new Promise((resolve, reject) => {
    const childEnv = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn", ...env, PORT: String(port) };
    // `{ VAR: undefined }` in `env` means: make sure VAR is not set for the server.
    for (const [k, v] of Object.entries(childEnv)) if (v === undefined) delete childEnv[k];
    const child = spawn(bin, [], {
      cwd: REPO_ROOT,
      env: childEnv,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    liveChildren.add(child);
    const exited = new Promise((res) => child.once("exit", (code, signal) => res({ code, signal })));
    exited.then(() => {
      liveChildren.delete(child);
      // Leftover grandchildren could keep the pipes (and this process) alive.
      child.stdout.destroy();
      child.stderr.destroy();
    });

    let stdout = "";
    let stderr = "";
    let settled = false;
    const finish = (err, value) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) {
        if (child.pid !== undefined) signalTree(child, "SIGKILL");
        reject(err);
      } else {
        resolve(value);
      }
    };
    const describe = () =>
      `\n--- stdout ---\n${stdout.slice(-2000)}\n--- stderr ---\n${stderr.slice(-4000)}`;
    const timer = setTimeout(
      () => finish(new Error(`server ${bin} did not print "listening on <port>" within ${timeoutMs} ms${describe()}`)),
      timeoutMs,
    );
    child.stdout.setEncoding("utf8");
    child.stderr.setEncoding("utf8");
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      if (stdout.length > 100_000) stdout = stdout.slice(-50_000);
      const m = /^listening on (\d+)\s*$/m.exec(stdout);
      if (m) finish(null, { child, port: Number(m[1]), exited, logs: () => describe() });
    });
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
      if (stderr.length > 100_000) stderr = stderr.slice(-50_000);
    });
    child.once("error", (err) => finish(new Error(`failed to start server ${bin}: ${err.message}`)));
    child.once("exit", (code, signal) =>
      finish(new Error(`server ${bin} exited (code ${code}, signal ${signal}) before it was listening${describe()}`)),
    );
  });
}

/**
 * Start a server binary on 127.0.0.1 (port 0 = random) and wait for its
 * `listening on <port>` line.
 *
 * Returns { port, url, pid, kill(signal), restart(), logs() }.
 * `restart()` kills the current process (if still running) and starts a new
 * one on the same port, retrying a few times while the port is not yet free.
 */
export async function startServer({ bin, env = {}, port = 0, timeoutMs = 15_000 } = {}) {
  if (!bin) throw new Error("startServer: no binary given");
  if (!existsSync(bin)) {
    throw new Error(
      `server binary not found: ${bin}\n` +
        "Build it first (e.g. `cargo build -p switchboard --example interop-server` / `--example chat`) " +
        "or point INTEROP_SERVER_BIN / CHAT_BIN at it.",
    );
  }
  let current = await spawnOnce(bin, port, env, timeoutMs);
  const server = {
    bin,
    port: current.port,
    url: `http://127.0.0.1:${current.port}`,
    get pid() {
      return current.child.pid;
    },
    logs: () => current.logs(),
    /** Stop the process; SIGTERM (or the given signal), then SIGKILL if it lingers. */
    async kill(signal = "SIGTERM") {
      const { child, exited } = current;
      if (child.exitCode !== null || child.signalCode !== null) return;
      signalTree(child, signal);
      const done = await withTimeout(exited, 5000, "server exit").then(
        () => true,
        () => false,
      );
      if (!done) {
        signalTree(child, "SIGKILL");
        await withTimeout(exited, 5000, "server exit after SIGKILL").catch(() => {});
      }
    },
    /** Kill (if running) and start a fresh process on the same port. */
    async restart() {
      await server.kill();
      let lastErr;
      for (let attempt = 0; attempt < 20; attempt++) {
        try {
          current = await spawnOnce(bin, server.port, env, timeoutMs);
          if (current.port !== server.port) {
            throw new Error(`restarted server listens on ${current.port}, expected ${server.port}`);
          }
          return server;
        } catch (err) {
          lastErr = err;
          await sleep(100); // port may still be held for a moment; bounded retries
        }
      }
      throw new Error(`could not restart server on port ${server.port}: ${lastErr?.message}`);
    },
  };
  return server;
}

// ---------------------------------------------------------------------------
// Generic waiting
// ---------------------------------------------------------------------------

/** Race a promise against a timeout that rejects with `what`. */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Wait for the next `event` on an emitter (socket, manager or engine).
 * Resolves with the array of event arguments. Optional `filter(...args)`.
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
  const what = label ?? `event "${event}"${emitter.nsp ? ` on namespace ${emitter.nsp}` : ""}`;
  const result = withTimeout(p, timeoutMs, what).catch((err) => {
    emitter.off(event, handler);
    throw err;
  });
  // Waits are often armed before the action that triggers them; if the test
  // fails before awaiting, don't report a second, unhandled rejection.
  result.catch(() => {});
  return result;
}

/** Record every occurrence of `event` (arrays of args) on an emitter. */
export function record(emitter, event) {
  const seen = [];
  emitter.on(event, (...args) => seen.push(args));
  return seen;
}

/** Wait until `cond()` becomes true, checking every `intervalMs`; bounded. */
export async function until(cond, what, { timeoutMs = WAIT_MS, intervalMs = 20 } = {}) {
  const attempts = Math.ceil(timeoutMs / intervalMs);
  for (let i = 0; i < attempts; i++) {
    if (await cond()) return;
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

// ---------------------------------------------------------------------------
// Socket.IO client helpers
// ---------------------------------------------------------------------------

/** Wait for `connect`; reject with the connect_error (message + data) if refused. */
export function waitConnect(socket, { timeoutMs = WAIT_MS } = {}) {
  if (socket.connected) return Promise.resolve(socket);
  let onConnect, onError;
  const p = new Promise((resolve, reject) => {
    onConnect = () => resolve(socket);
    onError = (err) => {
      const e = new Error(
        `connect_error on namespace ${socket.nsp}: ${err?.message}` +
          (err?.data !== undefined ? ` (data: ${JSON.stringify(err.data)})` : ""),
      );
      e.cause = err;
      reject(e);
    };
    socket.once("connect", onConnect);
    socket.once("connect_error", onError);
  });
  return withTimeout(p, timeoutMs, `connect on namespace ${socket.nsp}`).finally(() => {
    socket.off("connect", onConnect);
    socket.off("connect_error", onError);
  });
}

/** Wait for `connect_error` (the connection must be refused); resolves with the Error. */
export function waitConnectError(socket, { timeoutMs = WAIT_MS } = {}) {
  let onConnect, onError;
  const p = new Promise((resolve, reject) => {
    onError = (err) => resolve(err);
    onConnect = () => reject(new Error(`namespace ${socket.nsp} connected but a connect_error was expected`));
    socket.once("connect", onConnect);
    socket.once("connect_error", onError);
  });
  return withTimeout(p, timeoutMs, `connect_error on namespace ${socket.nsp}`).finally(() => {
    socket.off("connect", onConnect);
    socket.off("connect_error", onError);
  });
}

/** emit with ack, resolving with the FIRST ack argument; bounded. */
export async function ack(socket, event, ...args) {
  try {
    return await socket.timeout(WAIT_MS).emitWithAck(event, ...args);
  } catch (err) {
    throw new Error(`no ack for "${event}" on namespace ${socket.nsp} within ${WAIT_MS} ms (${err.message})`);
  }
}

/** emit with ack, resolving with ALL ack arguments (array); bounded. */
export function ackAll(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(WAIT_MS).emit(event, ...args, (err, ...resp) => {
      if (err) reject(new Error(`no ack for "${event}" on namespace ${socket.nsp} within ${WAIT_MS} ms (${err.message})`));
      else resolve(resp);
    });
  });
}

/**
 * Per-test fixture: starts its own server (random port), creates clients and
 * tears everything down in `t.after` (clients disconnected, server killed).
 */
export async function setup(t, { bin = interopServerBin(), env = {} } = {}) {
  const server = await startServer({ bin, env });
  const sockets = new Set();
  const managers = new Set();
  t.after(async () => {
    for (const s of sockets) {
      try {
        s.disconnect();
      } catch {
        /* ignore */
      }
    }
    for (const m of managers) {
      try {
        m._close();
      } catch {
        /* ignore */
      }
    }
    await server.kill();
  });

  const fixture = {
    server,
    url: server.url,
    /** New client socket. forceNew + no reconnection unless overridden. */
    client(nsp = "/", opts = {}) {
      const socket = io(server.url + nsp, { forceNew: true, reconnection: false, timeout: WAIT_MS, ...opts });
      fixture.track(socket);
      return socket;
    },
    /** New client socket that is connected (rejects on connect_error / timeout). */
    async connected(nsp = "/", opts = {}) {
      const socket = fixture.client(nsp, opts);
      await waitConnect(socket);
      return socket;
    },
    /** An explicit Manager (shared engine) for multiplexing tests. */
    manager(opts = {}) {
      const m = new Manager(server.url, { reconnection: false, timeout: WAIT_MS, ...opts });
      managers.add(m);
      return m;
    },
    /** Register a socket for cleanup. */
    track(socket) {
      sockets.add(socket);
      if (socket.io) managers.add(socket.io);
      return socket;
    },
  };
  return fixture;
}

// ---------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------

/** Normalise any binary value (Buffer / ArrayBuffer / typed array) to a Buffer. */
export function toBuffer(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof ArrayBuffer) return Buffer.from(value);
  if (ArrayBuffer.isView(value)) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`expected binary data, got ${Object.prototype.toString.call(value)}: ${JSON.stringify(value)}`);
}

export function isBinary(value) {
  return Buffer.isBuffer(value) || value instanceof ArrayBuffer || ArrayBuffer.isView(value);
}

/** Minimal HS256 JWT signer (node:crypto only). */
export function signJwt(claims, secret, header = { alg: "HS256", typ: "JWT" }) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const unsigned = `${b64(header)}.${b64(claims)}`;
  const sig = createHmac("sha256", secret).update(unsigned).digest("base64url");
  return `${unsigned}.${sig}`;
}

/** Path of any example binary of the switchboard crate. */
export function exampleBin(name) {
  return resolveBin(`EXAMPLE_${name.toUpperCase().replace(/-/g, "_")}_BIN`, name);
}
