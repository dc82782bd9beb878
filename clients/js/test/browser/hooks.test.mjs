// The hooks in a real page in Chromium against the real server: page.jsx
// (every hook, under StrictMode) is bundled by esbuild into a temporary
// folder that the server serves (web.dir), so the page, /ws, /events and
// /socket.io/ share one origin.
//
// Environment: SWITCHBOARD_BIN (default target/debug/switchboard),
// CHROMIUM_PATH (default /usr/bin/chromium), BROWSER_WAIT_MS (default 10 s).

import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import { devToken, metric, publishApi, startServer } from "../helpers.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const WAIT = Number(process.env.BROWSER_WAIT_MS || 10_000);
/** Connection failures while the server is down or the page offline are expected. */
const EXPECTED = /ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_INTERNET_DISCONNECTED|ERR_EMPTY_RESPONSE|ERR_INCOMPLETE_CHUNKED_ENCODING|ERR_NETWORK_CHANGED|WebSocket connection to .* failed|WebSocket is closed before/;

/** Bundles the page (React's development build: StrictMode mounts effects twice) into a new folder. */
async function buildPage() {
  const dir = mkdtempSync(path.join(tmpdir(), "switchboard-hooks-page-"));
  await build({
    entryPoints: [path.join(here, "page.jsx")],
    bundle: true,
    format: "esm",
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"development"' },
    outfile: path.join(dir, "page.js"),
    logLevel: "warning",
  });
  writeFileSync(
    path.join(dir, "index.html"),
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>hooks</title><link rel="icon" href="data:,">' +
      '<script type="module" src="page.js"></script></head><body><main id="root"></main></body></html>\n',
  );
  return dir;
}

/** A browser context whose page errors and unexpected console errors are collected. */
async function newUser(browser) {
  const context = await browser.newContext();
  context.setDefaultTimeout(WAIT);
  context.problems = [];
  context.on("page", (page) => {
    page.on("pageerror", (err) => context.problems.push(`page error: ${err.message}`));
    page.on("console", (msg) => {
      if (msg.type() === "error" && !EXPECTED.test(msg.text())) context.problems.push(`console error: ${msg.text()}`);
    });
  });
  return context;
}

const texts = (page, testid) => page.getByTestId(testid).allInnerTexts();
const attr = (page, testid, name) => page.getByTestId(testid).getAttribute(name);

describe("the hooks in Chromium against the server", { timeout: 180_000 }, () => {
  let server;
  let pageDir;
  let browser;
  before(async () => {
    pageDir = await buildPage();
    server = await startServer({ args: ["--set", `web.dir=${pageDir}`] });
    browser = await chromium.launch({ executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
  });
  after(async () => {
    await browser?.close();
    await server?.cleanup();
    if (pageDir) rmSync(pageDir, { recursive: true, force: true });
  });

  it("subscribe, publish, presence, SSE and Socket.IO; one connection each under StrictMode; resumed after a restart", async () => {
    const channel = "chat:browser";
    const ada = await newUser(browser);
    const page = await ada.newPage();
    const sseRequests = [];
    page.on("request", async (req) => {
      if (new URL(req.url()).pathname !== "/events") return;
      const slot = sseRequests.push(undefined) - 1;
      sseRequests[slot] = (await req.allHeaders())["last-event-id"] ?? null;
    });
    const url = async (user) => `${server.url}/?token=${encodeURIComponent(await devToken(server, user, user.toUpperCase()))}&channel=${channel}`;
    await page.goto(await url("ada"));

    await page.locator('[data-testid="status"][data-state="connected"]').waitFor({ state: "attached" });
    await page.locator('[data-testid="publications"][data-status="subscribed"]').waitFor({ state: "attached" });
    await page.locator('[data-testid="stream"][data-status="open"]').waitFor({ state: "attached" });
    await page.locator('[data-testid="socket"][data-status="connected"]').waitFor({ state: "attached" });
    await page.locator('[data-testid="present"][data-user="ada"]').waitFor();
    // StrictMode mounted every effect twice: still one connection per protocol.
    for (const protocol of ["ws", "sse", "socketio"]) {
      assert.equal(await metric(server, "switchboard_connections_opened_total", `protocol="${protocol}"`), 1, protocol);
    }

    // usePublish -> useChannel, the SSE stream and the Socket.IO socket.
    await page.getByLabel("Message").fill("hello");
    await page.getByRole("button", { name: "Send" }).click();
    await page.getByTestId("publication").filter({ hasText: "hello" }).waitFor();
    await page.getByTestId("streamed").filter({ hasText: "hello" }).waitFor();
    await page.getByTestId("socket").filter({ hasText: "hello" }).waitFor();
    assert.equal(await attr(page, "composer", "data-last"), "1");

    // usePresence: another user comes and goes.
    const bob = await newUser(browser);
    const bobPage = await bob.newPage();
    await bobPage.goto(`${await url("bob")}&only=ws`);
    await page.locator('[data-testid="present"][data-user="bob"]').waitFor();
    await bobPage.locator('[data-testid="present"][data-user="ada"]').waitFor();
    await bobPage.close();
    await page.locator('[data-testid="present"][data-user="bob"]').waitFor({ state: "detached" });

    // The browser goes offline and the server restarts; meanwhile two
    // publications through the API and one written offline.
    await ada.setOffline(true);
    await server.kill("SIGKILL");
    await page.locator('[data-testid="status"][data-state="offline"]').waitFor({ state: "attached" });
    const back = await server.restart();
    server.kill = back.kill; // cleanup() kills the running one
    await publishApi(back, channel, { text: "gap1" });
    await publishApi(back, channel, { text: "gap2" });
    await page.getByLabel("Message").fill("written offline");
    await page.getByRole("button", { name: "Send" }).click();
    await page.locator('[data-testid="composer"][data-pending="1"]').waitFor({ state: "attached" });
    await ada.setOffline(false);

    await page.locator('[data-testid="status"][data-state="connected"]').waitFor({ state: "attached" });
    await page.locator('[data-testid="composer"][data-pending="0"]').waitFor({ state: "attached" });
    await page.getByTestId("publication").nth(3).waitFor();
    assert.deepEqual(await texts(page, "publication"), ["hello", "gap1", "gap2", "written offline"]);
    const pubs = page.getByTestId("publication");
    assert.deepEqual(await pubs.evaluateAll((els) => els.map((e) => [Number(e.dataset.offset), e.dataset.replayed])), [
      [1, "false"],
      [2, "true"],
      [3, "true"],
      [4, "false"],
    ]);
    assert.equal(await attr(page, "publications", "data-reset"), "no");

    // The EventSource came back by itself with Last-Event-ID: the stream resumed.
    await page.getByTestId("streamed").nth(3).waitFor({ timeout: 3 * WAIT });
    assert.deepEqual(await texts(page, "streamed"), ["hello", "gap1", "gap2", "written offline"]);
    assert.ok(sseRequests.length >= 2, `reconnections of the stream: ${JSON.stringify(sseRequests)}`);
    assert.match(sseRequests.at(-1), /^chat:browser~[^~]+~1$/);

    // socket.io-client reconnected; the page subscribed again on connect.
    await page.locator('[data-testid="socket"][data-status="connected"]').waitFor({ state: "attached", timeout: 2 * WAIT });
    await publishApi(back, channel, { text: "after the restart" });
    await page.getByTestId("socket").filter({ hasText: "after the restart" }).waitFor();
    await page.getByTestId("publication").filter({ hasText: "after the restart" }).waitFor();
    await page.getByTestId("streamed").filter({ hasText: "after the restart" }).waitFor();
    assert.deepEqual(await texts(page, "publication"), ["hello", "gap1", "gap2", "written offline", "after the restart"]);
    assert.deepEqual(await texts(page, "streamed"), ["hello", "gap1", "gap2", "written offline", "after the restart"]);

    assert.deepEqual(ada.problems, []);
    assert.deepEqual(bob.problems, []);
    await ada.close();
    await bob.close();
  });
});
