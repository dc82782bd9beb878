// Authentication failures and policy denials answer the documented errors
// on each protocol: WebSocket error codes, Socket.IO connect_error data.code
// and ack errors, SSE HTTP status and JSON code, HTTP API status and code.
// Tokens are real JWTs signed here (HS256 with the server's secret, with a
// wrong secret, expired, not yet valid, RS256 with a generated key...).

import { test } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { until, sleep } from "./helpers.mjs";
import {
  start, uniq, api, WsClient, SioClient, SseClient, sseRefusal, publish,
  signHs256, signRs256, nowSecs, closeAll, EventSource,
} from "./e2e-helpers.mjs";

const SECRET = "e2e-secret-0123456789abcdef-0123456789";
const OTHER_SECRET = "not-the-server-secret-0123456789abcdef";

function startWithSecret(extra = []) {
  return start({ args: ["--set", `auth.secret=${SECRET}`, ...extra] });
}

function tokens() {
  const exp = nowSecs() + 600;
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const header = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return {
    good: signHs256({ sub: "alice", name: "Alice", exp }, SECRET),
    bob: signHs256({ sub: "bob", name: "Bob", exp }, SECRET),
    bad: {
      token_bad_signature: signHs256({ sub: "alice", exp }, OTHER_SECRET),
      token_expired: signHs256({ sub: "alice", exp: nowSecs() - 60 }, SECRET),
      token_wrong_algorithm: signRs256({ sub: "alice", exp }, privateKey),
      token_malformed: "this-is-not-a-jwt",
      token_not_yet_valid: signHs256({ sub: "alice", nbf: nowSecs() + 3600, exp: nowSecs() + 7200 }, SECRET),
      token_bad_claims: signHs256({ name: "No Subject", exp }, SECRET),
    },
    // alg "none" with no signature: must never be accepted.
    none: `${header({ alg: "none", typ: "JWT" })}.${header({ sub: "alice", exp })}.`,
  };
}

test("bad tokens are refused with their stable code on every protocol", { timeout: 120_000 }, async () => {
  const server = await startWithSecret();
  const clients = [];
  try {
    const t = tokens();
    const channel = `chat:${uniq("auth")}`;

    // No development login with a real key.
    const dev = await fetch(`${server.url}/api/dev/token`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ user: "x", name: "X" }),
    });
    assert.notEqual(dev.status, 200, "the development login is off when a secret is configured");

    // Control: the good token works on all three.
    const okWs = await WsClient.connect(server, { token: t.good, label: "good ws" });
    clients.push(okWs);
    await okWs.ok("subscribe", { channel });
    const okSio = await SioClient.connect(server, { token: t.good, label: "good sio" });
    clients.push(okSio);
    await okSio.ok("subscribe", { channel });
    const okSse = await SseClient.open(server, { channels: [channel], token: t.good, label: "good sse" });
    clients.push(okSse);

    for (const [code, token] of Object.entries(t.bad)) {
      // WebSocket: an error answer; the connection stays unauthenticated and usable.
      const ws = await WsClient.connect(server, { label: `ws ${code}` });
      clients.push(ws);
      const err = await ws.fails("auth", { token });
      assert.equal(err.code, code, `WebSocket auth with a ${code} token: ${JSON.stringify(err)}`);
      assert.ok(err.message, "an error has a message");
      assert.equal((await ws.fails("subscribe", { channel })).code, "unauthenticated", "still not authenticated");
      const later = await ws.ok("auth", { token: t.good });
      assert.equal(later.user, "alice", "a good token afterwards authenticates");
      ws.close();

      // Socket.IO: the connection is refused with connect_error data.code.
      const refusal = await SioClient.refused(server, { token, label: `sio ${code}` });
      assert.equal(refusal.data?.code, code, `Socket.IO connect_error for a ${code} token: ${refusal.message} ${JSON.stringify(refusal.data)}`);
      assert.ok(refusal.message, "connect_error has a message");

      // SSE: 401 with the code, whichever way the token comes.
      for (const via of ["header", "cookie", "query"]) {
        const r = await sseRefusal(server, { channels: [channel], token, via });
        assert.equal(r.status, 401, `SSE (${via}) with a ${code} token: ${r.status} ${JSON.stringify(r.body)}`);
        assert.equal(r.body.code, code, `SSE (${via}) with a ${code} token`);
      }
      // A real EventSource gets an error and does not reconnect.
      const es = new SseClient(server, { channels: [channel], token, label: `sse ${code}` });
      clients.push(es);
      await until(() => es.errors.length > 0, `the EventSource with a ${code} token to fail`);
      assert.equal(es.errors[0].code, 401);
      assert.equal(es.es.readyState, EventSource.CLOSED, "a refused stream is not retried");
      assert.equal(es.opens, 0);
    }

    // alg "none": refused everywhere, whatever the code.
    const wsNone = await WsClient.connect(server, { label: "ws none" });
    clients.push(wsNone);
    assert.match((await wsNone.fails("auth", { token: t.none })).code, /^token_/);
    assert.match((await SioClient.refused(server, { token: t.none })).data?.code ?? "", /^token_/);
    const sseNone = await sseRefusal(server, { channels: [channel], token: t.none });
    assert.equal(sseNone.status, 401);
    assert.match(sseNone.body.code, /^token_/);

    // Missing token.
    const anonWs = await WsClient.connect(server, { label: "anonymous ws" });
    clients.push(anonWs);
    assert.equal((await anonWs.fails("subscribe", { channel })).code, "unauthenticated", "WebSocket: subscribe before auth");
    assert.equal((await anonWs.fails("message", { channel, data: 1 })).code, "unauthenticated", "WebSocket: publish before auth");
    assert.equal((await anonWs.fails("history", { channel })).code, "unauthenticated", "WebSocket: history before auth");
    assert.equal((await anonWs.request("ping")).type, "pong", "ping is allowed before auth");
    assert.equal((await anonWs.fails("auth", {})).code, "token_missing", "WebSocket: auth without a token");
    assert.equal((await anonWs.fails("auth", { token: "" })).code, "token_missing", "WebSocket: auth with an empty token");
    const anonSio = await SioClient.connect(server, { label: "anonymous sio" });
    clients.push(anonSio);
    const anonSub = await anonSio.fails("subscribe", { channel });
    assert.ok(["token_missing", "unauthenticated", "forbidden"].includes(anonSub.code),
      `Socket.IO without a token, subscribing to an authenticated channel: ${JSON.stringify(anonSub)}`);
    assert.equal((await anonSio.fails("publish", { channel, data: 1 })).code, anonSub.code, "Socket.IO without a token, publishing");
    const anonSse = await sseRefusal(server, { channels: [channel] });
    assert.equal(anonSse.status, 401, JSON.stringify(anonSse.body));
    assert.equal(anonSse.body.code, "token_missing");

    // None of this reached the good clients' channel.
    const marker = await publish(server, channel, { marker: true });
    for (const c of [okWs, okSio, okSse]) {
      await until(() => c.publications(channel).some((p) => p.offset === marker.offset), `${c.label} to get the marker`);
      assert.deepEqual(c.publications(channel).map((p) => p.offset), [marker.offset], `${c.label} got only the marker`);
    }

    // Re-authentication on WebSocket: same user refreshes, another user is refused.
    assert.equal((await okWs.ok("auth", { token: t.good })).user, "alice");
    assert.equal((await okWs.fails("auth", { token: t.bob })).code, "bad_request", "a WebSocket connection cannot change user");
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("policy denials: someone else's user channel, publishing to notifications, unknown namespace, channels claim, bad names", { timeout: 120_000 }, async () => {
  const server = await startWithSecret();
  const clients = [];
  try {
    const t = tokens();
    const exp = nowSecs() + 600;
    const ws = await WsClient.connect(server, { token: t.good, label: "alice ws" });
    clients.push(ws);
    const sio = await SioClient.connect(server, { token: t.good, label: "alice sio" });
    clients.push(sio);

    // user:<id> is for its owner only.
    assert.equal((await ws.fails("subscribe", { channel: "user:bob" })).code, "forbidden", "WebSocket: user:bob as alice");
    assert.equal((await sio.fails("subscribe", { channel: "user:bob" })).code, "forbidden", "Socket.IO: user:bob as alice");
    const sseOther = await sseRefusal(server, { channels: ["user:bob"], token: t.good });
    assert.deepEqual([sseOther.status, sseOther.body.code], [403, "forbidden"], `SSE: user:bob as alice: ${JSON.stringify(sseOther.body)}`);
    // ...while the owner subscribes, and anyone authenticated may write to it.
    await ws.ok("subscribe", { channel: "user:alice" });
    await sio.ok("subscribe", { channel: "user:alice" });
    const sseOwn = await SseClient.open(server, { channels: ["user:alice"], token: t.good, label: "alice sse" });
    clients.push(sseOwn);
    const bobWs = await WsClient.connect(server, { token: t.bob, label: "bob ws" });
    clients.push(bobWs);
    const dm = await bobWs.ok("message", { channel: "user:alice", data: { dm: "hi alice" } });
    for (const c of [ws, sio, sseOwn]) {
      await until(() => c.publications("user:alice").some((p) => p.offset === dm.offset), `${c.label} to get bob's private message`);
      const p = c.publications("user:alice").find((q) => q.offset === dm.offset);
      assert.deepEqual([p.from, p.data], ["bob", { dm: "hi alice" }]);
    }
    // SSE with one allowed and one denied channel: the whole stream is refused.
    const mixed = await sseRefusal(server, { channels: ["user:alice", "user:bob"], token: t.good });
    assert.deepEqual([mixed.status, mixed.body.code], [403, "forbidden"]);

    // notifications:* : clients subscribe, only the API publishes.
    const notif = `notifications:${uniq("n")}`;
    await ws.ok("subscribe", { channel: notif });
    await sio.ok("subscribe", { channel: notif });
    const sseNotif = await SseClient.open(server, { channels: [notif], token: t.good, label: "alice sse notifications" });
    clients.push(sseNotif);
    assert.equal((await ws.fails("message", { channel: notif, data: { fake: true } })).code, "forbidden", "WebSocket: publish to notifications");
    assert.equal((await sio.fails("publish", { channel: notif, data: { fake: true } })).code, "forbidden", "Socket.IO: publish to notifications");
    const real = await publish(server, notif, { real: true });
    assert.equal(real.offset, 1, "the refused publications took no offset");
    for (const c of [ws, sio, sseNotif]) {
      await until(() => c.publications(notif).length === 1, `${c.label} to get the API's notification`);
      assert.deepEqual(c.publications(notif)[0].data, { real: true });
    }

    // chat: publishing needs a subscription.
    const chat = `chat:${uniq("unsubscribed")}`;
    assert.equal((await ws.fails("message", { channel: chat, data: 1 })).code, "forbidden", "WebSocket: publish without subscribing");
    assert.equal((await sio.fails("publish", { channel: chat, data: 1 })).code, "forbidden", "Socket.IO: publish without subscribing");

    // Unknown namespace.
    assert.equal((await ws.fails("subscribe", { channel: "nope:x" })).code, "unknown_namespace", "WebSocket: unknown namespace");
    assert.equal((await ws.fails("message", { channel: "nope:x", data: 1 })).code, "unknown_namespace");
    assert.equal((await sio.fails("subscribe", { channel: "nope:x" })).code, "unknown_namespace", "Socket.IO: unknown namespace");
    assert.equal((await sio.fails("publish", { channel: "nope:x", data: 1 })).code, "unknown_namespace");
    const sseNope = await sseRefusal(server, { channels: ["nope:x"], token: t.good });
    assert.equal(sseNope.body.code, "unknown_namespace", `SSE: unknown namespace: ${JSON.stringify(sseNope.body)}`);
    assert.ok([400, 403].includes(sseNope.status), `SSE: unknown namespace answered ${sseNope.status}`);
    const apiNope = await api(server, "POST", "/api/publish", { channel: "nope:x", data: 1 });
    assert.deepEqual([apiNope.status, apiNope.body.code], [400, "unknown_namespace"], "API: unknown namespace");

    // Bad channel names.
    for (const bad of ["no-namespace", "chat:", "chat:has space"]) {
      assert.equal((await ws.fails("subscribe", { channel: bad })).code, "bad_request", `WebSocket: ${JSON.stringify(bad)}`);
      assert.equal((await sio.fails("subscribe", { channel: bad })).code, "bad_request", `Socket.IO: ${JSON.stringify(bad)}`);
      const r = await sseRefusal(server, { channels: [bad], token: t.good });
      assert.deepEqual([r.status, r.body.code], [400, "bad_request"], `SSE: ${JSON.stringify(bad)}: ${JSON.stringify(r.body)}`);
    }
    const noChannel = await sseRefusal(server, { channels: [], token: t.good });
    assert.deepEqual([noChannel.status, noChannel.body.code], [400, "bad_request"], "SSE without a channel");

    // A token's channels claim limits what it may use.
    const limited = signHs256({ sub: "carol", name: "Carol", exp, channels: ["chat:allowed"] }, SECRET);
    const cWs = await WsClient.connect(server, { token: limited, label: "carol ws" });
    clients.push(cWs);
    const cSio = await SioClient.connect(server, { token: limited, label: "carol sio" });
    clients.push(cSio);
    await cWs.ok("subscribe", { channel: "chat:allowed" });
    await cSio.ok("subscribe", { channel: "chat:allowed" });
    const cSse = await SseClient.open(server, { channels: ["chat:allowed"], token: limited, label: "carol sse" });
    clients.push(cSse);
    assert.equal((await cWs.fails("subscribe", { channel: "chat:other" })).code, "forbidden", "WebSocket: outside the channels claim");
    assert.equal((await cSio.fails("subscribe", { channel: "chat:other" })).code, "forbidden", "Socket.IO: outside the channels claim");
    const cOther = await sseRefusal(server, { channels: ["chat:other"], token: limited });
    assert.deepEqual([cOther.status, cOther.body.code], [403, "forbidden"], "SSE: outside the channels claim");

    // The HTTP API wants its key.
    const noKey = await api(server, "GET", "/api/info", undefined, { key: null });
    assert.deepEqual([noKey.status, noKey.body.code], [401, "api_key_missing"]);
    const badKey = await api(server, "POST", "/api/publish", { channel: "chat:x", data: 1 }, { key: "wrong-key-wrong-key-wrong" });
    assert.deepEqual([badKey.status, badKey.body.code], [401, "bad_api_key"]);
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("SSE without a token to an unknown namespace is refused as unknown_namespace, not token_missing", { timeout: 120_000 }, async () => {
  // A token would not help: the channel cannot exist. (The message of the
  // refusal already says "unknown channel namespace".)
  const server = await start();
  try {
    const r = await sseRefusal(server, { channels: ["nope:x"] });
    assert.equal(r.body.code, "unknown_namespace", `answered ${r.status} ${JSON.stringify(r.body)}`);
    const anonSio = await SioClient.connect(server, { label: "anonymous sio" });
    try {
      assert.equal((await anonSio.fails("subscribe", { channel: "nope:x" })).code, "unknown_namespace", "Socket.IO, anonymous");
    } finally {
      anonSio.close();
    }
  } finally {
    await server.cleanup();
  }
});

test("WebSocket: no auth within server.auth_timeout_secs closes with 1008; an authenticated client stays", { timeout: 120_000 }, async () => {
  const server = await start({ args: ["--set", "server.auth_timeout_secs=1"] });
  const clients = [];
  try {
    const res = await fetch(`${server.url}/api/dev/token`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ user: "ada", name: "Ada" }),
    });
    const { token } = await res.json();
    const lazy = await WsClient.connect(server, { label: "lazy" });
    clients.push(lazy);
    assert.equal((await lazy.request("ping")).type, "pong", "pings do not authenticate");
    const authed = await WsClient.connect(server, { token, label: "authed" });
    clients.push(authed);
    const closed = await lazy.waitClosed(5000);
    assert.equal(closed.code, 1008, `closed with ${closed.code} ${closed.reason}`);
    await sleep(300);
    assert.ok(authed.isOpen, "the authenticated client is still connected");
    assert.equal((await authed.request("ping")).type, "pong");
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});

test("a configured issuer and audience are required, time claims must be numbers, and a Socket.IO token must be a string", { timeout: 120_000 }, async () => {
  const server = await startWithSecret(["--set", "auth.issuer=https://auth.example", "--set", "auth.audience=switchboard"]);
  const clients = [];
  try {
    const exp = nowSecs() + 600;
    const channel = `chat:${uniq("claims")}`;
    const good = signHs256({ sub: "alice", iss: "https://auth.example", aud: "switchboard", exp }, SECRET);
    const refused = {
      "no aud": signHs256({ sub: "alice", iss: "https://auth.example", exp }, SECRET),
      "no iss": signHs256({ sub: "alice", aud: "switchboard", exp }, SECRET),
      "a string exp": signHs256({ sub: "alice", iss: "https://auth.example", aud: "switchboard", exp: String(exp + 1e6) }, SECRET),
      "a null exp": signHs256({ sub: "alice", iss: "https://auth.example", aud: "switchboard", exp: null }, SECRET),
    };
    // Control: the complete token works on all three.
    const ws = await WsClient.connect(server, { token: good, label: "good ws" });
    clients.push(ws);
    await ws.ok("subscribe", { channel });
    const sio = await SioClient.connect(server, { token: good, label: "good sio" });
    clients.push(sio);
    await sio.ok("subscribe", { channel });
    for (const [what, token] of Object.entries(refused)) {
      const w = await WsClient.connect(server, { label: `ws ${what}` });
      clients.push(w);
      const err = await w.fails("auth", { token });
      assert.equal(err.code, "token_bad_claims", `WebSocket with ${what}: ${JSON.stringify(err)}`);
      const r = await SioClient.refused(server, { token, label: `sio ${what}` });
      assert.equal(r.data?.code, "token_bad_claims", `Socket.IO with ${what}: ${r.message}`);
      const s = await sseRefusal(server, { channels: [channel], token });
      assert.equal(s.status, 401, `SSE with ${what}`);
      assert.equal(s.body.code, "token_bad_claims", `SSE with ${what}`);
    }
    // A token that is not a string is refused, not taken as no token.
    for (const token of [12345, { sub: "alice" }, ["x"], true]) {
      const r = await SioClient.refused(server, { token, label: `sio token ${JSON.stringify(token)}` });
      assert.equal(r.data?.code, "token_malformed", `Socket.IO auth.token ${JSON.stringify(token)}: ${r.message}`);
    }
  } finally {
    closeAll(clients);
    await server.cleanup();
  }
});
