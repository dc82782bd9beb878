// The React hooks (dist/react.js, dist/socket-io.js) rendered with
// react-dom in jsdom, under StrictMode, against the real server binary:
// the /ws hooks over the `ws` package, useEventSource over the
// `eventsource` package, useSocket over socket.io-client.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, it } from "node:test";
import { JSDOM } from "jsdom";
import { EventSource } from "eventsource";
import { devToken, gatedWebSocket, metric, publishApi, startServer, until, api } from "../helpers.mjs";

// A DOM before react-dom and the client load (the client listens to the
// window's online/offline events when there is one).
const dom = new JSDOM('<!doctype html><div id="root"></div>', { url: "http://localhost/" });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
Object.defineProperty(globalThis, "navigator", { value: dom.window.navigator, configurable: true });

const { StrictMode, createElement: h } = await import("react");
const { createRoot } = await import("react-dom/client");
const { SwitchboardClient } = await import("../../dist/index.js");
const { SwitchboardProvider, useChannel, useEventSource, usePresence, usePublish, useSwitchboard } = await import("../../dist/react.js");
const { useSocket } = await import("../../dist/socket-io.js");

/** Renders `element` under StrictMode in a fresh container; returns the root. */
function render(element) {
  const container = document.createElement("div");
  document.body.append(container);
  const root = createRoot(container);
  root.render(h(StrictMode, null, element));
  roots.push(root);
  return root;
}
const roots = [];
const clients = [];
afterEach(() => {
  for (const r of roots.splice(0)) r.unmount();
  for (const c of clients.splice(0)) c.close();
});

/** A component that stores what the hooks return in `probe` at every render. */
function Probe({ probe, channel, presence = false, since }) {
  probe.sb = useSwitchboard();
  probe.channel = useChannel(channel, { since, onPublication: (p) => (probe.all ??= []).push(p) });
  probe.pub = usePublish(channel);
  if (presence) probe.presence = usePresence(channel);
  probe.renders = (probe.renders ?? 0) + 1;
  return null;
}

const offsets = (publications) => publications.map((p) => p.offset);
const texts = (publications) => publications.map((p) => p.data.text);

describe("the React hooks against the server (StrictMode)", { timeout: 120_000 }, () => {
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.cleanup();
  });

  it("the provider opens one connection and a channel is subscribed once", async () => {
    const token = await devToken(server, "ada", "Ada");
    const { gate, WebSocket } = gatedWebSocket();
    const opened = await metric(server, "switchboard_connections_opened_total", 'protocol="ws"');
    const subsBefore = await metric(server, "switchboard_subscriptions");
    const probe = {};
    const root = render(h(SwitchboardProvider, { url: server.wsUrl, options: { token, WebSocket } }, h(Probe, { probe, channel: "chat:strict" })));
    await until(() => probe.sb?.state === "connected" && probe.channel?.status === "subscribed", "connected and subscribed");
    assert.equal(gate.opened, 1);
    assert.equal((await metric(server, "switchboard_connections_opened_total", 'protocol="ws"')) - opened, 1);
    assert.equal((await metric(server, "switchboard_subscriptions")) - subsBefore, 1);
    assert.deepEqual(probe.sb.user, { user: "ada", name: "Ada" });

    // Unmounting closes the connection and the subscription.
    const client = probe.sb.client;
    root.unmount();
    await until(() => client.state === "closed", "the provider's client closed");
    await until(async () => (await metric(server, "switchboard_subscriptions")) === subsBefore, "the subscription gone on the server");
  });

  it("useChannel and usePublish: publications in order, resumed with no gap or duplicate after a dropped connection", async () => {
    const token = await devToken(server, "bob", "Bob");
    const { gate, WebSocket } = gatedWebSocket();
    const probe = {};
    render(h(SwitchboardProvider, { url: server.wsUrl, options: { token, WebSocket, backoffBase: 50, backoffMax: 200 } }, h(Probe, { probe, channel: "chat:hooks" })));
    await until(() => probe.channel?.status === "subscribed", "subscribed");

    const acks = await Promise.all([probe.pub.publish({ text: "one" }), probe.pub.publish({ text: "two" })]);
    assert.deepEqual(acks.map((a) => a.offset).sort(), [1, 2]);
    await until(() => probe.pub.pending === 0 && probe.channel.publications.length === 2, "two publications rendered");
    assert.equal(probe.pub.last.channel, "chat:hooks");
    assert.equal(probe.channel.last.offset, 2);

    gate.open = false;
    gate.drop();
    await until(() => probe.sb.state === "reconnecting", "reconnecting rendered");
    await until(() => probe.channel.status === "subscribing", "the channel waits for the connection");
    await publishApi(server, "chat:hooks", { text: "three" });
    await publishApi(server, "chat:hooks", { text: "four" });
    const queued = probe.pub.publish({ text: "five" }); // offline queue
    await until(() => probe.pub.pending === 1, "one publish pending");
    gate.open = true;
    await queued;
    await until(() => probe.channel.publications.length === 5 && probe.sb.state === "connected", "the replay rendered");
    assert.deepEqual(offsets(probe.channel.publications), [1, 2, 3, 4, 5]);
    assert.deepEqual(texts(probe.channel.publications).slice(2), ["three", "four", "five"]);
    assert.deepEqual(probe.channel.publications.map((p) => p.replayed), [false, false, true, true, false]);
    assert.deepEqual(offsets(probe.all), [1, 2, 3, 4, 5]);
    assert.deepEqual(probe.channel.position, { offset: 5, epoch: acks[0].epoch });
    assert.equal(probe.channel.reset, null);
  });

  it("useChannel with since replays from a saved position; a refusal is rendered with its code", async () => {
    const first = await publishApi(server, "chat:saved", { text: "a" });
    await publishApi(server, "chat:saved", { text: "b" });
    const token = await devToken(server, "cyd", "Cyd");
    const probe = {};
    const refused = {};
    function Refused() {
      refused.channel = useChannel("user:someone-else");
      refused.pub = usePublish("notifications:all");
      return null;
    }
    render(
      h(
        SwitchboardProvider,
        { url: server.wsUrl, options: { token, WebSocket: gatedWebSocket().WebSocket } },
        h(Probe, { probe, channel: "chat:saved", since: { offset: first.offset, epoch: first.epoch } }),
        h(Refused),
      ),
    );
    await until(() => probe.channel?.publications.length === 1, "the replay after offset 1");
    assert.deepEqual(texts(probe.channel.publications), ["b"]);
    assert.equal(probe.channel.publications[0].replayed, true);
    await until(() => refused.channel?.status === "error", "the refusal rendered");
    assert.equal(refused.channel.error.code, "forbidden");
    await assert.rejects(refused.pub.publish({ title: "no" }), { code: "forbidden" });
    await until(() => refused.pub.error?.code === "forbidden" && refused.pub.pending === 0, "the publish refusal rendered");
  });

  it("usePresence lists the users, follows join and leave", async () => {
    const token = await devToken(server, "dan", "Dan");
    const probe = {};
    render(h(SwitchboardProvider, { url: server.wsUrl, options: { token, WebSocket: gatedWebSocket().WebSocket } }, h(Probe, { probe, channel: "chat:people", presence: true })));
    await until(() => probe.presence?.presence.length === 1, "oneself present");
    assert.deepEqual(probe.presence.presence, [{ user: "dan", name: "Dan", connections: 1 }]);

    const other = new SwitchboardClient(server.wsUrl, { token: await devToken(server, "eve", "Eve"), WebSocket: gatedWebSocket().WebSocket });
    clients.push(other);
    other.connect();
    await other.subscribe("chat:people");
    await until(() => probe.presence.presence.some((p) => p.user === "eve"), "eve joined");
    assert.deepEqual(probe.presence.presence.map((p) => p.user).sort(), ["dan", "eve"]);
    await other.unsubscribe("chat:people");
    await until(() => probe.presence.presence.length === 1, "eve left");
    assert.equal(probe.presence.presence[0].user, "dan");
    assert.equal(probe.presence.error, null);
  });

  it("two components on one channel share one subscription; the last to unmount unsubscribes", async () => {
    const token = await devToken(server, "fay", "Fay");
    const client = new SwitchboardClient(server.wsUrl, { token, WebSocket: gatedWebSocket().WebSocket });
    clients.push(client);
    client.connect();
    const a = {};
    const b = {};
    // The earlier tests' connections close asynchronously: start from none.
    await until(async () => (await metric(server, "switchboard_subscriptions")) === 0, "no subscription left from earlier tests");
    const subsBefore = 0;
    function Two({ showB }) {
      return h(SwitchboardProvider, { client }, h(Probe, { probe: a, channel: "chat:shared" }), showB ? h(Probe, { probe: b, channel: "chat:shared" }) : null);
    }
    const root = render(h(Two, { showB: true }));
    await until(() => a.channel?.status === "subscribed" && b.channel?.status === "subscribed", "both subscribed");
    assert.equal((await metric(server, "switchboard_subscriptions")) - subsBefore, 1);
    await publishApi(server, "chat:shared", { text: "to both" });
    await until(() => a.channel.publications.length === 1 && b.channel.publications.length === 1, "both received it");
    root.render(h(StrictMode, null, h(Two, { showB: false })));
    await publishApi(server, "chat:shared", { text: "to a" });
    await until(() => a.channel.publications.length === 2, "a still receives");
    assert.deepEqual(client.channels(), ["chat:shared"]);
    root.render(h(StrictMode, null, h("div")));
    await until(() => client.channels().length === 0, "unsubscribed after the last one");
    await until(async () => (await metric(server, "switchboard_subscriptions")) === subsBefore, "the subscription gone on the server");
    assert.equal(client.state, "connected"); // a client given to the provider stays the application's
  });

  it("useEventSource: one stream under StrictMode, resumed with Last-Event-ID after a server restart", async () => {
    const own = await startServer();
    let back = null;
    try {
      const token = await devToken(own, "gil", "Gil");
      const sent = []; // the Last-Event-ID of every attempt
      let open = true;
      let made = 0;
      const gatedFetch = (url, init) => {
        sent.push(new Headers(init?.headers).get("last-event-id"));
        return open ? fetch(url, init) : Promise.reject(new TypeError("gate closed"));
      };
      class GatedEventSource extends EventSource {
        constructor(url, init) {
          super(url, { ...init, fetch: gatedFetch });
          made += 1;
        }
      }
      const probe = { received: [] };
      function Stream() {
        probe.es = useEventSource(`${own.url}/events?channel=chat:sse&token=${token}`, {
          EventSource: GatedEventSource,
          onMessage: (m) => probe.received.push(JSON.parse(m.data)),
        });
        return null;
      }
      render(h(Stream));
      await until(() => probe.es?.status === "open", "the stream open");
      assert.equal(made, 1);
      assert.equal((await metric(own, "switchboard_connections_opened_total", 'protocol="sse"')), 1);
      await publishApi(own, "chat:sse", { text: "one" });
      await until(() => probe.received.length === 1, "the first event");
      assert.match(probe.es.lastEventId, /^chat:sse~[^~]+~1$/);

      open = false;
      await own.kill("SIGKILL");
      await until(() => probe.es.status === "connecting" && probe.es.error !== null, "reconnecting rendered");
      back = await own.restart();
      await publishApi(back, "chat:sse", { text: "two" });
      await publishApi(back, "chat:sse", { text: "three" });
      open = true;
      await until(() => probe.received.length === 3, "the events missed, after the reconnection", 20_000);
      assert.deepEqual(probe.received.map((p) => p.data.text), ["one", "two", "three"]);
      assert.deepEqual(probe.received.map((p) => p.offset), [1, 2, 3]);
      assert.equal(sent.at(-1), `chat:sse~${probe.received[0].epoch}~1`);
      assert.equal(probe.es.status, "open");
      assert.equal(made, 1, "the EventSource reconnected by itself");
    } finally {
      await back?.kill("SIGKILL");
      await own.cleanup();
    }
  });

  it("useSocket: one Socket.IO connection under StrictMode, events rendered, disconnected at unmount", async () => {
    const token = await devToken(server, "hal", "Hal");
    const opened = await metric(server, "switchboard_connections_opened_total", 'protocol="socketio"');
    const probe = { events: [] };
    function Sock() {
      probe.io = useSocket(server.url, { auth: { token }, transports: ["websocket"], onEvent: (m) => probe.events.push(m) });
      return null;
    }
    const root = render(h(Sock));
    await until(() => probe.io?.status === "connected", "connected");
    assert.equal((await metric(server, "switchboard_connections_opened_total", 'protocol="socketio"')) - opened, 1);
    assert.ok(probe.io.id);
    const ack = await probe.io.socket.emitWithAck("subscribe", { channel: "chat:sio" });
    assert.equal(ack.channel, "chat:sio");
    await publishApi(server, "chat:sio", { text: "over socket.io" });
    await until(() => probe.io.lastMessage?.event === "publication", "the publication rendered");
    assert.equal(probe.io.lastMessage.args[0].data.text, "over socket.io");
    assert.deepEqual(probe.events.map((e) => e.event), ["join", "publication"]); // its own join, then the publication

    // A disconnect by the server stops it (no reconnection), as socket.io-client does.
    const socket = probe.io.socket;
    const res = await api(server, "POST", "/api/disconnect", { user: "hal" });
    assert.equal(res.status, 200);
    await until(() => probe.io.status === "disconnected", "disconnected rendered");
    root.unmount();
    assert.equal(socket.connected, false);
    assert.equal(socket.active, false);
  });

  it("useSocket: a refused token is rendered as the error", async () => {
    const probe = {};
    function Sock() {
      probe.io = useSocket(server.url, { auth: { token: "not-a-jwt" }, transports: ["websocket"], reconnection: false });
      return null;
    }
    render(h(Sock));
    await until(() => probe.io?.error, "the connect error");
    assert.equal(probe.io.error.data?.code, "token_malformed");
    assert.equal(probe.io.status, "disconnected");
  });
});
