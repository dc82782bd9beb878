// Shared helpers for the end-to-end tests of the `switchboard` binary.
//
// Each test starts its own server process (any free port, its own data
// directory) and talks to it with real peers. Every wait is bounded, so a
// broken server makes a test fail, never hang.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createServer } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

export { sleep };

/** Repository root: this file lives in <root>/tests/server/helpers.mjs. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The API key every test server is started with. */
export const API_KEY = "test-api-key-0123456789";
/** Default bound of one wait, in milliseconds. */
export const WAIT_MS = Number(process.env.E2E_WAIT_MS || 5000);

/** Path of the server binary (env SWITCHBOARD_BIN overrides). */
export function serverBin() {
  if (process.env.SWITCHBOARD_BIN) return path.resolve(REPO_ROOT, process.env.SWITCHBOARD_BIN);
  const target = process.env.CARGO_TARGET_DIR ? path.resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR) : path.join(REPO_ROOT, "target");
  return path.join(target, "debug", "switchboard");
}

/** A free TCP port on 127.0.0.1 (for servers that must come back on the same port). */
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

const live = new Set();
process.on("exit", () => {
  for (const child of live) {
    try { child.kill("SIGKILL"); } catch { /* gone */ }
  }
});

/**
 * Starts the server. Options: `port` (default 0: any free port), `dataDir`
 * (default: a fresh temporary directory, removed by `cleanup()`), `args`
 * (extra command-line arguments, e.g. ["--set", "channels.chat.history_size=5"]),
 * `env` (extra environment variables).
 * Resolves to { port, url, wsUrl, dataDir, child, logs(), kill(signal), exited, restart(), cleanup() }.
 */
export async function startServer(opts = {}) {
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(tmpdir(), "switchboard-e2e-"));
  const ownsDir = opts.dataDir === undefined;
  const args = [
    "--host", "127.0.0.1",
    "--port", String(opts.port ?? 0),
    "--data-dir", dataDir,
    "--set", `api.key=${API_KEY}`,
    ...(opts.args ?? []),
  ];
  // SWITCHBOARD_* variables are configuration keys for the server: the
  // tests' own (SWITCHBOARD_BIN) must not reach it.
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn", ...(opts.env ?? {}) };
  delete env.SWITCHBOARD_BIN;
  const child = spawn(serverBin(), args, {
    cwd: REPO_ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  live.add(child);
  let out = "";
  child.stdout.on("data", (d) => { out += d; });
  child.stderr.on("data", (d) => { out += d; });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => { live.delete(child); resolve({ code, signal }); }));
  const port = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start within 20 s; output:\n${out}`)), 20_000);
    const onData = () => {
      const m = /listening on (\d+)/.exec(out);
      if (m) { clearTimeout(timer); child.stdout.off("data", onData); resolve(Number(m[1])); }
    };
    child.stdout.on("data", onData);
    exited.then(({ code, signal }) => { clearTimeout(timer); reject(new Error(`server exited (${code ?? signal}) before listening; output:\n${out}`)); });
  });
  const server = {
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    dataDir,
    child,
    exited,
    logs: () => out,
    /** Sends a signal (default SIGTERM) and waits for the exit. */
    async kill(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    /** Starts a new server on the same port and data directory (after kill). */
    restart(extra = {}) {
      return startServer({ ...opts, ...extra, port, dataDir });
    },
    /** Kills the server if still running and removes its data directory (if the helper made it). */
    async cleanup() {
      await server.kill("SIGKILL");
      if (ownsDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
  return server;
}

/** A development token for `user` (display name `name`). */
export async function devToken(server, user, name) {
  const res = await fetch(`${server.url}/api/dev/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user, name }),
  });
  if (!res.ok) throw new Error(`dev token: ${res.status} ${await res.text()}`);
  return (await res.json()).token;
}

/** Calls the HTTP API with the test key. Resolves to { status, body }. */
export async function api(server, method, pathname, body) {
  const res = await fetch(`${server.url}${pathname}`, {
    method,
    headers: { authorization: `apikey ${API_KEY}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed;
  try { parsed = JSON.parse(text); } catch { parsed = text; }
  return { status: res.status, body: parsed };
}

/** Resolves when `predicate()` is truthy (polled), or rejects after `ms` with `what`. */
export async function until(predicate, what, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await predicate();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}
