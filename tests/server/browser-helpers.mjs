// Helpers of the browser tests (browser.test.mjs): a server serving the web
// chat, Chromium through playwright-core, and the page's moves.
//
// Environment: CHROMIUM_PATH (default /usr/bin/chromium); WEB_DIR_FROM_DISK=1
// serves crates/server/web from disk (--set web.dir=...) instead of the
// copies embedded in the binary; BROWSER_WAIT_MS bounds every wait on the
// page (default 10 s).

import { mkdirSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { API_KEY, REPO_ROOT, api, startServer } from "./helpers.mjs";

export const WEB_DIR = path.join(REPO_ROOT, "crates", "server", "web");
export const OUTPUT_DIR = path.join(REPO_ROOT, "tests", "server", "output");
/** Bound of every wait on a page, in milliseconds. */
export const UI_WAIT_MS = Number(process.env.BROWSER_WAIT_MS || 10_000);

// The server refuses API keys shorter than 16 characters: lengthen the
// shared test key when it is shorter.
const KEY = API_KEY.length >= 16 ? API_KEY : `${API_KEY}-browser-tests`;

/** Starts a server for the page (same options as startServer). */
export function startChatServer(opts = {}) {
  const args = [...(opts.args ?? [])];
  if (KEY !== API_KEY) args.push("--set", `api.key=${KEY}`);
  if (process.env.WEB_DIR_FROM_DISK === "1") args.push("--set", `web.dir=${WEB_DIR}`);
  // The server reads every SWITCHBOARD_* variable as configuration, and
  // refuses SWITCHBOARD_BIN (the helpers' name of the binary) as an unknown
  // key: keep it out of the server's environment.
  return startServer({ ...opts, args, env: { SWITCHBOARD_BIN: undefined, ...opts.env } });
}

/** Calls the HTTP API (like helpers.api, with this server's key). */
export async function callApi(server, method, pathname, body) {
  if (KEY === API_KEY) return api(server, method, pathname, body);
  const res = await fetch(`${server.url}${pathname}`, {
    method,
    headers: { authorization: `apikey ${KEY}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  return { status: res.status, body: parsed };
}

/** Publishes through the HTTP API; fails unless accepted. */
export async function publishApi(server, channel, data) {
  const res = await callApi(server, "POST", "/api/publish", { channel, data });
  if (res.status !== 200) throw new Error(`publish to ${channel}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

export function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox"],
  });
}

/**
 * A browser context (one user: its own cookies and localStorage), with
 * bounded waits. `problems` collects page errors and console errors (a CSP
 * violation is one), checked by assertNoProblems.
 */
export async function newUser(browser, { width = 1280, height = 800 } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, colorScheme: "light", locale: "en-GB", timezoneId: "UTC" });
  context.setDefaultTimeout(UI_WAIT_MS);
  context.problems = [];
  context.on("page", (page) => watch(page, context.problems));
  return context;
}

/** Console errors of connections refused while a server is down or offline. */
const EXPECTED_ERRORS = /ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_INTERNET_DISCONNECTED|ERR_EMPTY_RESPONSE|ERR_INCOMPLETE_CHUNKED_ENCODING|WebSocket connection to .* failed/;

function watch(page, problems) {
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("console", (msg) => {
    // Connection failures while a server is down are expected.
    if (msg.type() === "error" && !EXPECTED_ERRORS.test(msg.text())) {
      problems.push(`console error: ${msg.text()}`);
    }
  });
}

/** Fails when a page of the context reported an error. */
export function assertNoProblems(context) {
  if (context.problems.length) throw new Error(`the page reported problems:\n${context.problems.join("\n")}`);
}

/** Opens the chat in a new tab of `context`. */
export async function openChat(context, server) {
  const page = await context.newPage();
  await page.goto(server.url);
  return page;
}

/** Signs in with a display name and waits for the connection. */
export async function signIn(page, name) {
  await page.getByLabel("Your name").fill(name);
  await page.getByRole("button", { name: "Sign in" }).click();
  await waitForState(page, "connected");
}

/** Waits for the connection status (`connected`, `reconnecting`, `offline`, `closed`). */
export async function waitForState(page, state) {
  await page.locator(`[data-testid="connection-status"][data-state="${state}"]`).waitFor();
}

/** Types a message into the composer and presses Enter. */
export async function sendMessage(page, text) {
  const input = page.getByTestId("composer-input");
  await input.fill(text);
  await input.press("Enter");
}

/** Delivered messages (not the pending ones) of the open conversation. */
export function deliveredMessages(page) {
  return page.locator('[data-testid="message"][data-offset]');
}

/** Waits for a delivered message whose text is exactly `text`; returns its locator. */
export async function waitForMessage(page, text) {
  const exact = new RegExp(`^${text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`);
  const msg = deliveredMessages(page).filter({ has: page.getByTestId("message-text").filter({ hasText: exact }) });
  await msg.first().waitFor();
  return msg;
}

/** The texts of the delivered messages of the open conversation, in order. */
export async function messageTexts(page) {
  return deliveredMessages(page).getByTestId("message-text").allInnerTexts();
}

/** The presence list's entries, as user ids. */
export async function presentUsers(page) {
  return page.locator('[data-testid="presence-item"]').evaluateAll((items) => items.map((li) => li.dataset.user));
}

/** Writes a screenshot to tests/server/output/<name>; returns its path. */
export async function screenshot(page, name) {
  mkdirSync(OUTPUT_DIR, { recursive: true });
  const file = path.join(OUTPUT_DIR, name);
  await page.screenshot({ path: file });
  return file;
}
