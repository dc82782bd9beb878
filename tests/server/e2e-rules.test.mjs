// One table of command rules, run over every protocol: each rule is a
// command (and what precedes it) and the refusal code it must get, the
// same on the plain WebSocket protocol (/ws), on Socket.IO and, for the
// rules a stream can meet (subscribing), on SSE. The checks run in one
// order (crates/server/src/session.rs): rate, authentication, arguments
// (channel, then since/limit/data), the subscription cap, then the
// channel's rules and the token's expiry.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  start, uniq, WsClient, SioClient, sseRefusal, signHs256, nowSecs, closeAll,
} from "./e2e-helpers.mjs";

const SECRET = "rules-secret-0123456789abcdef-0123456789";
const token = (sub, extra = {}) => signHs256({ sub, name: sub, exp: nowSecs() + 3600, ...extra }, SECRET);

/** A client of either protocol behind one interface: `cmd` resolves to {ok} or {error}. */
async function client(server, protocol, tok) {
  if (protocol === "ws") {
    const c = await WsClient.connect(server, { token: tok, label: "rules ws" });
    return {
      raw: c,
      async cmd(command, args) {
        const reply = await c.request(command === "publish" ? "message" : command, args);
        return reply.type === "error" ? { error: reply.payload } : { ok: reply.payload };
      },
    };
  }
  const c = await SioClient.connect(server, { token: tok, transports: ["websocket"], label: "rules sio" });
  return {
    raw: c,
    async cmd(command, args) {
      const answer = await c.ack(command, args);
      return answer?.error ? { error: answer.error } : { ok: answer };
    },
  };
}

const big = "x".repeat(2000); // over the typing namespace's 1,024 bytes

// [rule, setup commands (must succeed), the command, its arguments, code]
const RULES = [
  ["a command without a channel", [], "subscribe", {}, "bad_request"],
  ["a channel name without a namespace", [], "subscribe", { channel: "nonamespace" }, "bad_request"],
  ["a channel in an unknown namespace", [], "subscribe", { channel: "nope:x" }, "unknown_namespace"],
  ["another user's private channel", [], "subscribe", { channel: "user:bob" }, "forbidden"],
  ["a malformed since", [], "subscribe", { channel: "chat:r", since: { offset: "x" } }, "bad_request"],
  ["a malformed since, at the cap (arguments before the cap)",
    [["subscribe", { channel: "chat:a" }], ["subscribe", { channel: "chat:b" }]],
    "subscribe", { channel: "chat:c", since: 5 }, "bad_request"],
  ["one subscription over the cap",
    [["subscribe", { channel: "chat:a" }], ["subscribe", { channel: "chat:b" }]],
    "subscribe", { channel: "chat:c" }, "too_many_subscriptions"],
  ["a forbidden channel at the cap (the cap before the channel's rules)",
    [["subscribe", { channel: "chat:a" }], ["subscribe", { channel: "chat:b" }]],
    "subscribe", { channel: "user:bob" }, "too_many_subscriptions"],
  ["publishing where nobody may", [], "publish", { channel: "notifications:x", data: 1 }, "forbidden"],
  ["publishing without subscribing (subscribers only)", [], "publish", { channel: "chat:r", data: 1 }, "forbidden"],
  ["publishing over the namespace's size", [["subscribe", { channel: "typing:r" }]],
    "publish", { channel: "typing:r", data: big }, "message_too_large"],
  ["presence where there is none", [["subscribe", { channel: "typing:r" }]], "presence", { channel: "typing:r" }, "forbidden"],
  ["history of an unknown namespace", [], "history", { channel: "nope:x" }, "unknown_namespace"],
  ["history of another user's channel", [], "history", { channel: "user:bob" }, "forbidden"],
  ["a malformed token", [], "auth", { token: "not-a-jwt" }, "token_malformed"],
  ["a token of another user", [], "auth", { token: token("bob") }, "bad_request"],
  ["a command that does not exist", [], "frobnicate", { channel: "chat:r" }, "bad_request"],
];

/** The same rules where SSE can meet them: [rule, channels, code]. */
const SSE_RULES = [
  ["a channel name without a namespace", ["nonamespace"], "bad_request"],
  ["a channel in an unknown namespace", ["nope:x"], "unknown_namespace"],
  ["another user's private channel", ["user:bob"], "forbidden"],
  ["one subscription over the cap", ["chat:a", "chat:b", "chat:c"], "too_many_subscriptions"],
  ["a forbidden channel at the cap", ["chat:a", "chat:b", "user:bob"], "too_many_subscriptions"],
];

function serverWithRules() {
  return start({ args: ["--set", `auth.secret=${SECRET}`, "--set", "limits.max_subscriptions=2"] });
}

for (const protocol of ["ws", "sio"]) {
  test(`${protocol}: every rule of the table gets its code`, { timeout: 120_000 }, async () => {
    const server = await serverWithRules();
    const open = [];
    try {
      for (const [rule, setup, command, args, code] of RULES) {
        const c = await client(server, protocol, token("alice"));
        open.push(c.raw);
        for (const [sc, sa] of setup) {
          const r = await c.cmd(sc, sa);
          assert.ok(r.ok !== undefined, `${protocol}, ${rule}: setup ${sc} ${JSON.stringify(sa)} answered ${JSON.stringify(r)}`);
        }
        const r = await c.cmd(command, args);
        assert.equal(r.error?.code, code, `${protocol}, ${rule}: ${command} ${JSON.stringify(args).slice(0, 80)} answered ${JSON.stringify(r).slice(0, 200)}`);
        assert.equal(typeof r.error.message, "string", `${protocol}, ${rule}: a readable message`);
        // The connection stays usable after a refusal.
        const ok = await c.cmd("history", { channel: `chat:${uniq("after")}` });
        assert.ok(ok.ok !== undefined, `${protocol}, ${rule}: usable after the refusal: ${JSON.stringify(ok)}`);
        c.raw.close();
      }
    } finally {
      closeAll(...open);
      await server.cleanup();
    }
  });

  test(`${protocol}: an expired token refuses every command with token_expired until the client refreshes it`, { timeout: 60_000 }, async () => {
    const server = await serverWithRules();
    const open = [];
    try {
      const channel = `chat:${uniq("exp")}`;
      const c = await client(server, protocol, token("alice", { exp: nowSecs() + 2 }));
      open.push(c.raw);
      assert.ok((await c.cmd("subscribe", { channel })).ok, "subscribed while the token is valid");
      await new Promise((r) => setTimeout(r, 3100));
      for (const [command, args] of [["publish", { channel, data: 1 }], ["subscribe", { channel: `chat:${uniq("x")}` }], ["history", { channel }], ["presence", { channel }]]) {
        const r = await c.cmd(command, args);
        assert.equal(r.error?.code, "token_expired", `${protocol}: ${command} after expiry answered ${JSON.stringify(r)}`);
      }
      const refreshed = await c.cmd("auth", { token: token("alice") });
      assert.equal(refreshed.ok?.user, "alice", `${protocol}: refresh answered ${JSON.stringify(refreshed)}`);
      const r = await c.cmd("publish", { channel, data: 2 });
      assert.equal(typeof r.ok?.offset, "number", `${protocol}: publish after the refresh answered ${JSON.stringify(r)}`);
    } finally {
      closeAll(...open);
      await server.cleanup();
    }
  });
}

test("ws: before auth only auth and ping are answered; every other command is unauthenticated", { timeout: 60_000 }, async () => {
  const server = await serverWithRules();
  const c = await WsClient.connect(server, { label: "rules ws (anonymous)" });
  try {
    for (const type of ["subscribe", "unsubscribe", "message", "presence", "history"]) {
      const e = await c.fails(type, { channel: "chat:r" });
      assert.equal(e.code, "unauthenticated", `${type}: ${JSON.stringify(e)}`);
    }
    assert.equal((await c.request("ping")).type, "pong");
  } finally {
    closeAll(c);
    await server.cleanup();
  }
});

test("sse: the rules a stream can meet get the same codes", { timeout: 60_000 }, async () => {
  const server = await serverWithRules();
  try {
    for (const [rule, channels, code] of SSE_RULES) {
      const r = await sseRefusal(server, { channels, token: token("alice") });
      assert.equal(r.body?.code, code, `sse, ${rule}: ${JSON.stringify(r)}`);
      assert.ok(r.status >= 400, `sse, ${rule}: an HTTP error status (${r.status})`);
    }
    const expired = await sseRefusal(server, { channels: ["chat:r"], token: token("alice", { exp: nowSecs() - 60 }) });
    assert.equal(expired.body?.code, "token_expired", JSON.stringify(expired));
  } finally {
    await server.cleanup();
  }
});
