// The web chat in a real browser (Debian's Chromium driven by
// playwright-core) against the switchboard binary: two users chatting,
// typing and presence, direct messages, a socket.io-client peer in the same
// room, notifications over SSE, a server restart with messages published
// meanwhile, a disconnect by the API; screenshots in tests/server/output/.
//
// Run: cd tests/server && npm ci && SWITCHBOARD_BIN=... node --test browser.test.mjs
// (WEB_DIR_FROM_DISK=1 tests the files of crates/server/web on disk).

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { devToken, until } from "./helpers.mjs";
import {
  UI_WAIT_MS,
  assertNoProblems,
  callApi,
  deliveredMessages,
  launchBrowser,
  messageTexts,
  newUser,
  openChat,
  presentUsers,
  publishApi,
  screenshot,
  sendMessage,
  signIn,
  startChatServer,
  waitForMessage,
  waitForState,
} from "./browser-helpers.mjs";

describe("the web chat", { timeout: 180_000 }, () => {
  let server;
  let browser;
  let alice; // browser contexts: one per user
  let bob;
  let alicePage;
  let alicePage2;
  let bobPage;
  let nodeSocket;

  before(async () => {
    server = await startChatServer();
    browser = await launchBrowser();
    alice = await newUser(browser);
    bob = await newUser(browser);
  });

  after(async () => {
    nodeSocket?.disconnect();
    await browser?.close();
    await server?.cleanup();
  });

  it("two users sign in, chat, see each other typing and present; two tabs of a user are listed once", async () => {
    alicePage = await openChat(alice, server);
    await signIn(alicePage, "Alice Martin");
    bobPage = await openChat(bob, server);
    await signIn(bobPage, "Bob");

    // Both are in the lobby, present in each other's list.
    for (const page of [alicePage, bobPage]) {
      await page.getByTestId("conversation-title").filter({ hasText: "# lobby" }).waitFor();
      await page.locator('[data-testid="presence-item"][data-user="alice-martin"]').waitFor();
      await page.locator('[data-testid="presence-item"][data-user="bob"]').waitFor();
    }
    assert.equal(await alicePage.getByTestId("me-name").innerText(), "Alice Martin");

    await sendMessage(alicePage, "Morning Bob! Is the new build out?");
    const seenByBob = await waitForMessage(bobPage, "Morning Bob! Is the new build out?");
    assert.equal(await seenByBob.getAttribute("data-own"), "false");
    assert.match(await seenByBob.innerText(), /Alice Martin/);
    const seenByAlice = await waitForMessage(alicePage, "Morning Bob! Is the new build out?");
    assert.equal(await seenByAlice.getAttribute("data-own"), "true");
    // A timestamp, machine-readable.
    assert.ok(Date.parse(await seenByAlice.locator("time").getAttribute("datetime")) > 0);

    // Bob types: Alice sees it; Bob does not see his own typing.
    await bobPage.getByTestId("composer-input").pressSequentially("Deployed", { delay: 20 });
    await alicePage.getByTestId("typing-indicator").filter({ hasText: "Bob is typing…" }).waitFor();
    assert.equal(await bobPage.getByTestId("typing-indicator").innerText(), "");
    await bobPage.getByTestId("composer-input").press("End");
    await bobPage.getByTestId("composer-input").pressSequentially(" to staging ten minutes ago.");
    await bobPage.getByTestId("composer-input").press("Enter");
    await waitForMessage(alicePage, "Deployed to staging ten minutes ago.");
    // The indicator goes once the message is there.
    await alicePage.getByTestId("typing-indicator").filter({ hasText: /^$/ }).waitFor();
    await sendMessage(alicePage, "Great, I'll run the browser tests against it.");
    await waitForMessage(bobPage, "Great, I'll run the browser tests against it.");
    assert.deepEqual(await messageTexts(bobPage), [
      "Morning Bob! Is the new build out?",
      "Deployed to staging ten minutes ago.",
      "Great, I'll run the browser tests against it.",
    ]);

    // A second tab of Alice: signed in from the stored session, with the history.
    alicePage2 = await openChat(alice, server);
    await waitForState(alicePage2, "connected");
    await waitForMessage(alicePage2, "Deployed to staging ten minutes ago.");
    // Alice is one entry, with two connections (the server counts users).
    await alicePage2.locator('[data-testid="presence-item"][data-user="alice-martin"] [data-testid="connections"]').filter({ hasText: "2" }).waitFor();
    for (const page of [alicePage, alicePage2, bobPage]) {
      const users = await presentUsers(page);
      assert.deepEqual(users.filter((u) => u === "alice-martin"), ["alice-martin"], `each user once: ${users}`);
      assert.equal(new Set(users).size, users.length);
    }

    // Messages survive a reload (history on join).
    await bobPage.reload();
    await waitForState(bobPage, "connected");
    await waitForMessage(bobPage, "Great, I'll run the browser tests against it.");
    assert.equal(await deliveredMessages(bobPage).count(), 3);
    assertNoProblems(alice);
    assertNoProblems(bob);
  });

  it("direct messages reach the other user and one's own other tabs", async () => {
    // Bob opens a conversation from the people list.
    await bobPage.getByRole("button", { name: /^Message Alice Martin/ }).click();
    await bobPage.getByTestId("conversation-title").filter({ hasText: "Alice Martin" }).waitFor();
    await sendMessage(bobPage, "Psst: lunch at noon?");
    await waitForMessage(bobPage, "Psst: lunch at noon?");

    // Alice, in the lobby, gets an unread conversation. (Her first tab is
    // brought to the front: hidden tabs get no animation frames.)
    await alicePage.bringToFront();
    const conv = alicePage.locator('[data-testid="dm"][data-peer="bob"]');
    await conv.locator('[data-testid="unread"]').filter({ hasText: "1" }).waitFor();
    await conv.click();
    await waitForMessage(alicePage, "Psst: lunch at noon?");
    await sendMessage(alicePage, "Sure, see you there.");
    await waitForMessage(bobPage, "Sure, see you there.");
    // Her other tab has both sides of the conversation.
    await alicePage2.bringToFront();
    await alicePage2.locator('[data-testid="dm"][data-peer="bob"]').click();
    await waitForMessage(alicePage2, "Sure, see you there.");
    assert.deepEqual(await messageTexts(alicePage2), ["Psst: lunch at noon?", "Sure, see you there."]);
    const mine = await waitForMessage(alicePage2, "Sure, see you there.");
    assert.equal(await mine.getAttribute("data-own"), "true");
    // Nothing leaked into the lobby.
    await alicePage.bringToFront();
    await alicePage.getByRole("button", { name: /^#lobby/ }).click();
    await bobPage.getByRole("button", { name: /^#lobby/ }).click();
    await waitForMessage(bobPage, "Great, I'll run the browser tests against it.");
    assert.equal((await messageTexts(bobPage)).includes("Sure, see you there."), false);
    await alicePage2.close();
    assertNoProblems(alice);
    assertNoProblems(bob);
  });

  it("rooms are joined by name, kept across a reload and left; the page is keyboard-usable and labelled", async () => {
    await alicePage.bringToFront();
    await alicePage.getByLabel("Join a room by name").fill("Design Review");
    await alicePage.getByLabel("Join a room by name").press("Enter");
    await alicePage.getByTestId("conversation-title").filter({ hasText: "# design-review" }).waitFor();
    await alicePage.locator('[data-testid="room"][data-room="design-review"][aria-current="page"]').waitFor();
    await alicePage.locator('[data-testid="presence-item"][data-user="alice-martin"]').waitFor();
    assert.deepEqual(await presentUsers(alicePage), ["alice-martin"]);
    assert.equal(await bobPage.locator('[data-testid="room"][data-room="design-review"]').count(), 0);

    // Shift+Enter starts a new line, Enter sends.
    const input = alicePage.getByTestId("composer-input");
    await input.focus();
    await alicePage.keyboard.type("Agenda:");
    await alicePage.keyboard.press("Shift+Enter");
    await alicePage.keyboard.type("1. the new sign-in page");
    await alicePage.keyboard.press("Enter");
    await waitForMessage(alicePage, "Agenda:\n1. the new sign-in page");
    assert.equal(await input.inputValue(), "");

    // Joined rooms and the open conversation survive a reload.
    await alicePage.reload();
    await waitForState(alicePage, "connected");
    await alicePage.getByTestId("conversation-title").filter({ hasText: "# design-review" }).waitFor();
    await waitForMessage(alicePage, "Agenda:\n1. the new sign-in page");

    // Every field has a label; the landmarks are there.
    const unlabelled = await alicePage.evaluate(() =>
      [...document.querySelectorAll("input, textarea, select")].filter((e) => e.labels.length === 0 && !e.getAttribute("aria-label")).map((e) => e.id),
    );
    assert.deepEqual(unlabelled, []);
    for (const role of ["banner", "navigation", "main", "complementary", "log"]) {
      assert.equal(await alicePage.getByRole(role).count(), 1, role);
    }
    // Keyboard only: Shift+Tab from the join field walks up the room list.
    await alicePage.getByLabel("Join a room by name").focus();
    for (let i = 0; i < 3; i++) await alicePage.keyboard.press("Shift+Tab");
    assert.equal(await alicePage.evaluate(() => document.activeElement.getAttribute("aria-label")), "#random (not joined)");
    await alicePage.keyboard.press("Enter");
    await alicePage.getByTestId("conversation-title").filter({ hasText: "# random" }).waitFor();
    await alicePage.getByRole("button", { name: "Leave room" }).click();
    await alicePage.locator('[data-testid="room"][data-room="random"][aria-current="page"]').waitFor({ state: "detached" });

    await alicePage.getByRole("button", { name: "#design-review" }).click();
    await alicePage.getByRole("button", { name: "Leave room" }).click();
    await alicePage.locator('[data-testid="room"][data-room="design-review"]').waitFor({ state: "detached" });
    await alicePage.getByTestId("conversation-title").filter({ hasText: "# lobby" }).waitFor();
    assertNoProblems(alice);
  });

  it("a socket.io-client peer in the lobby and the browser see each other's messages", async () => {
    const token = await devToken(server, "nodebot", "Build bot");
    nodeSocket = io(server.url, { auth: { token }, transports: ["websocket"], reconnection: false });
    const received = [];
    nodeSocket.on("publication", (p) => received.push(p));
    await until(() => nodeSocket.connected, "the socket.io connection");
    const sub = await nodeSocket.timeout(UI_WAIT_MS).emitWithAck("subscribe", { channel: "chat:lobby" });
    assert.equal(sub.channel, "chat:lobby", JSON.stringify(sub));

    // The bot joins the people list of both pages.
    for (const page of [alicePage, bobPage]) await page.locator('[data-testid="presence-item"][data-user="nodebot"]').waitFor();

    await sendMessage(bobPage, "Bot, what's the status of build 128?");
    const fromBrowser = await until(() => received.find((p) => p.data?.text === "Bot, what's the status of build 128?"), "the browser's message at the socket.io client", UI_WAIT_MS);
    assert.equal(fromBrowser.channel, "chat:lobby");
    assert.equal(fromBrowser.from, "bob");
    assert.equal(typeof fromBrowser.offset, "number");
    assert.equal(typeof fromBrowser.epoch, "string");

    const ack = await nodeSocket.timeout(UI_WAIT_MS).emitWithAck("publish", {
      channel: "chat:lobby",
      data: { text: "Build 128 passed: 214 tests, 0 failures.", name: "Build bot" },
    });
    assert.equal(ack.error, undefined, JSON.stringify(ack));
    for (const page of [alicePage, bobPage]) {
      const msg = await waitForMessage(page, "Build 128 passed: 214 tests, 0 failures.");
      assert.match(await msg.innerText(), /Build bot/);
      assert.equal(await msg.getAttribute("data-offset"), String(ack.offset));
    }
    assertNoProblems(alice);
    assertNoProblems(bob);
  });

  it("notifications published through the HTTP API appear live", async () => {
    for (const page of [alicePage, bobPage]) await page.locator('[data-testid="notifications"][data-stream="open"]').waitFor({ state: "attached" });
    await publishApi(server, "notifications:all", { title: "Maintenance tonight", body: "The server restarts at 22:00 UTC for an upgrade." });
    for (const page of [alicePage, bobPage]) {
      const n = page.getByTestId("notification").filter({ hasText: "Maintenance tonight" });
      await n.waitFor();
      assert.match(await n.innerText(), /restarts at 22:00 UTC/);
    }
    // A personal one reaches its user only.
    await publishApi(server, "notifications:alice-martin", { title: "Your export is ready", body: "lobby-history.csv (12 kB)" });
    await alicePage.getByTestId("notification").filter({ hasText: "Your export is ready" }).waitFor();
    await publishApi(server, "notifications:all", { title: "Welcome to Switchboard", body: "Rooms, direct messages and live notifications." });
    await bobPage.getByTestId("notification").filter({ hasText: "Welcome to Switchboard" }).waitFor();
    assert.equal(await bobPage.getByTestId("notification").filter({ hasText: "Your export is ready" }).count(), 0);
    // Newest first.
    await alicePage.getByTestId("notification").filter({ hasText: "Welcome to Switchboard" }).waitFor();
    const titles = await alicePage.locator('[data-testid="notification"] .title').allInnerTexts();
    assert.deepEqual(titles, ["Welcome to Switchboard", "Your export is ready", "Maintenance tonight"]);
    assertNoProblems(alice);
    assertNoProblems(bob);
  });

  it("screenshots of the chat (desktop and phone)", async () => {
    // Bob starts typing, so Alice's page shows everything at once.
    await bobPage.getByTestId("composer-input").pressSequentially("Nice, ", { delay: 20 });
    await alicePage.getByTestId("typing-indicator").filter({ hasText: "Bob is typing…" }).waitFor();
    await alicePage.locator('[data-testid="presence-item"]').nth(2).waitFor();
    await alicePage.getByTestId("composer-input").focus();
    await alicePage.mouse.move(640, 300); // no hover effect in the picture
    await screenshot(alicePage, "chat-desktop.png");

    const phone = await newUser(browser, { width: 390, height: 844 });
    try {
      const page = await openChat(phone, server);
      await page.getByLabel("Your name").fill("Carol");
      await screenshot(page, "signin-phone.png");
      await signIn(page, "Carol");
      await waitForMessage(page, "Build 128 passed: 214 tests, 0 failures.");
      // The rooms and people panels are drawers on a phone.
      await page.getByRole("button", { name: "People" }).click();
      await page.locator('[data-testid="presence-list"]').waitFor({ state: "visible" });
      await screenshot(page, "chat-phone-people.png");
      await page.keyboard.press("Escape");
      await page.locator('[data-testid="presence-list"]').waitFor({ state: "hidden" });
      await screenshot(page, "chat-phone.png");
      assertNoProblems(phone);
    } finally {
      await phone.close();
    }
  });
});

describe("the web chat across a server restart and a disconnect", { timeout: 180_000 }, () => {
  let server;
  let browser;

  before(async () => {
    server = await startChatServer();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.cleanup();
  });

  it("pages reconnect after a restart and hold every message published meanwhile, once, in order", async () => {
    const alice = await newUser(browser);
    const bob = await newUser(browser);
    const alicePage = await openChat(alice, server);
    await signIn(alicePage, "Alice");
    const bobPage = await openChat(bob, server);
    await signIn(bobPage, "Bob");
    await sendMessage(alicePage, "before the restart");
    await waitForMessage(bobPage, "before the restart");

    await server.kill("SIGKILL");
    for (const page of [alicePage, bobPage]) {
      await waitForState(page, "reconnecting");
      assert.equal(await page.getByTestId("connection-status").innerText(), "Reconnecting…");
    }
    // Alice's browser goes offline: no reconnection until it is back, and
    // what she sends meanwhile waits in the client's queue.
    await alice.setOffline(true);
    await waitForState(alicePage, "offline");
    await sendMessage(alicePage, "written while offline");
    await alicePage.locator('[data-testid="message"][data-pending="true"]').filter({ hasText: "written while offline" }).waitFor();

    server = await server.restart();
    const published = ["published during the outage 1", "published during the outage 2", "published during the outage 3"];
    for (const text of published) await publishApi(server, "chat:lobby", { text });
    await alice.setOffline(false);

    const expected = ["before the restart", ...published, "written while offline"];
    for (const page of [alicePage, bobPage]) {
      await waitForState(page, "connected");
      await waitForMessage(page, "written while offline");
      await waitForMessage(page, published[2]);
      assert.deepEqual(await messageTexts(page), expected);
    }
    assert.equal(await alicePage.locator('[data-testid="message"][data-pending]').count(), 0);
    // The API's messages are shown as the server's.
    assert.match(await (await waitForMessage(bobPage, published[0])).innerText(), /Server/);
    await screenshot(alicePage, "chat-after-restart.png");
    assertNoProblems(alice);
    assertNoProblems(bob);
    await alice.close();
    await bob.close();
  });

  it("after a graceful shutdown (SIGTERM) the chat and the notifications stream come back", async () => {
    const frank = await newUser(browser);
    const page = await openChat(frank, server);
    await signIn(page, "Frank");
    await page.locator('[data-testid="notifications"][data-stream="open"]').waitFor({ state: "attached" });
    const before = await messageTexts(page);

    await server.kill("SIGTERM");
    await waitForState(page, "reconnecting");
    server = await server.restart();
    const published = ["after a graceful restart 1", "after a graceful restart 2"];
    for (const text of published) await publishApi(server, "chat:lobby", { text });
    await waitForState(page, "connected");
    await waitForMessage(page, published[1]);
    assert.deepEqual(await messageTexts(page), [...before, ...published]);

    // The EventSource reconnects on its own (or the page reopens it).
    await page.locator('[data-testid="notifications"][data-stream="open"]').waitFor({ state: "attached", timeout: 2 * UI_WAIT_MS });
    await publishApi(server, "notifications:all", { title: "Upgrade done", body: "Thanks for your patience." });
    await page.getByTestId("notification").filter({ hasText: "Upgrade done" }).waitFor();
    assertNoProblems(frank);
    await frank.close();
  });

  it("a disconnect through the API stops the page until the user reconnects", async () => {
    const dora = await newUser(browser);
    const eve = await newUser(browser);
    const doraPage = await openChat(dora, server);
    await signIn(doraPage, "Dora");
    const evePage = await openChat(eve, server);
    await signIn(evePage, "Eve");
    await evePage.locator('[data-testid="presence-item"][data-user="dora"]').waitFor();

    // The client module on its own: errors carry the server's code.
    const codes = await doraPage.evaluate(async () => {
      const { SwitchboardClient } = await import("/switchboard.js");
      const { token } = JSON.parse(localStorage.getItem("switchboard.session"));
      const client = new SwitchboardClient("/ws", { token });
      const states = [];
      client.on("state", (s) => states.push(s));
      client.connect();
      const out = {};
      for (const [name, call] of [
        ["subscribeOthersChannel", () => client.subscribe("user:eve")],
        ["publishNotifications", () => client.publish("notifications:all", { title: "nope" })],
        ["badChannel", () => client.history("no-namespace")],
      ]) {
        try {
          await call();
          out[name] = "resolved";
        } catch (err) {
          out[name] = err.code;
        }
      }
      out.history = (await client.history("chat:lobby", { limit: 5 })).channel;
      client.close();
      out.states = states;
      return out;
    });
    assert.deepEqual(codes, {
      subscribeOthersChannel: "forbidden",
      publishNotifications: "forbidden",
      badChannel: "bad_request",
      history: "chat:lobby",
      states: ["connecting", "connected", "closed"],
    });

    const res = await callApi(server, "POST", "/api/disconnect", { user: "dora" });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    await waitForState(doraPage, "closed");
    assert.equal(await doraPage.getByTestId("connection-status").innerText(), "Disconnected");
    await evePage.locator('[data-testid="presence-item"][data-user="dora"]').waitFor({ state: "detached" });
    await doraPage.locator('[data-testid="notifications"][data-stream="closed"]').waitFor({ state: "attached" });
    // It stays disconnected (no automatic reconnection)...
    await doraPage.waitForTimeout(1500);
    assert.equal(await doraPage.getByTestId("connection-status").getAttribute("data-state"), "closed");
    // ...until the user asks.
    await doraPage.getByTestId("reconnect").click();
    await waitForState(doraPage, "connected");
    await evePage.locator('[data-testid="presence-item"][data-user="dora"]').waitFor();
    await sendMessage(doraPage, "back again");
    await waitForMessage(evePage, "back again");
    assertNoProblems(dora);
    assertNoProblems(eve);
    await dora.close();
    await eve.close();
  });
});
