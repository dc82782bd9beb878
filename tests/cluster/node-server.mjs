#!/usr/bin/env node
// Reference cluster node: a Node socket.io 4.8 server with one of the official
// Redis adapters. The cluster tests (tests/cluster/*.test.mjs) start it, and
// the Rust example `cluster` (crates/redis/examples/cluster.rs)
// implements the SAME contract, so that the tests can mix both kinds of node
// in one cluster. Other tools drive this contract: change it in both places.
//
// ============================================================================
// THE NODE CONTRACT
// ============================================================================
//
// Environment
//   PORT               listen on 127.0.0.1:PORT (0: any free port; the chosen
//                      port is what "listening on" prints). Default 0.
//   REDIS_URL          default redis://127.0.0.1:6379
//   ADAPTER            redis   classic: createAdapter(pub, sub, {key: PREFIX})
//                              from @socket.io/redis-adapter (Redis pub/sub)
//                      sharded createShardedAdapter(pub, sub, {channelPrefix:
//                              PREFIX, subscriptionMode: SUBSCRIPTION_MODE})
//                              (Redis 7 sharded pub/sub)
//                      streams @socket.io/redis-streams-adapter
//                              createAdapter(client, {streamName: PREFIX,
//                              channelPrefix: PREFIX, sessionKeyPrefix:
//                              SESSION_PREFIX})
//                      memory  no Redis, a single node (default)
//   PREFIX             key / channel prefix and stream name; default "socket.io"
//   SESSION_PREFIX     streams only: key prefix of the persisted sessions of
//                      connection state recovery; default "sio:session:"
//   SUBSCRIPTION_MODE  sharded only: "dynamic" (default) or "static"
//   NODE_NAME          default "node-<PORT>"
//   RECOVERY           "1": connection state recovery on, i.e.
//                      connectionStateRecovery: {maxDisconnectionDuration:
//                      RECOVERY_MS, skipMiddlewares: true}
//   RECOVERY_MS        the recovery window in ms; default 120000
//
// Readiness: prints exactly `listening on <port>` (one line, stdout) once the
// HTTP server listens AND the adapter is connected: every subscription is
// confirmed by Redis and (streams) the stream is being read, so a message
// published by another node after that line is received. Nothing else goes to
// stdout (diagnostics go to stderr). SIGTERM / SIGINT: exit promptly.
//
// Socket.IO: path /socket.io/, both transports, namespace "/". For every socket:
//   on connection      socket.emit("hello", {node: NODE_NAME, port: PORT,
//                      recovered: socket.recovered})
//   join (room, ack)   socket.join(room); ack "ok". The ack is sent only once
//                      this node receives cluster broadcasts to the room
//                      (sharded dynamic: after Redis confirmed the SSUBSCRIBE
//                      of the room's channel).
//   leave (room, ack)  socket.leave(room); ack "ok"
//   publish (room, payload)             io.to(room).emit("msg", payload)
//   publish-all (payload)               io.emit("msg", payload)
//   publish-except (room, except, payload)
//                      io.to(room).except(except).emit("msg", payload);
//                      `except` is a room or an array of rooms
//   count (ack)        ack (await io.fetchSockets()).length  (whole cluster)
//   server-emit (payload)               io.serverSideEmit("relay", payload)
//     on the namespace, for "relay" (payload) from another server (or the
//     emitter): io.local.emit("relayed", payload)
//   server-ask (ack)   ack await io.serverSideEmitWithAck("node-ping"), i.e.
//                      one "pong" per OTHER server; on error ack
//                      {error: err.message, responses: err.responses}
//     on the namespace, for "node-ping" (ack): ack "pong"
//   ask-all (ack)      ack await io.timeout(3000).emitWithAck("question"),
//                      one answer per socket of the cluster (the asking one
//                      included); on timeout ack
//                      {error: "timeout", responses: err.responses ?? []}
//   join-all (room, ack)    io.socketsJoin(room); ack "ok"
//   leave-all (room, ack)   io.socketsLeave(room); ack "ok"
//   kick (room, ack)        io.in(room).disconnectSockets(true); ack "ok"
//     (these three are fire-and-forget toward other nodes: the ack does not
//     mean that remote sockets have already joined / left / disconnected)
//   rooms (ack)        ack the sorted array of every room of the cluster
//                      (socket-id rooms included): adapter.allRooms() where
//                      the adapter has it (classic), else the union of the
//                      rooms of every socket of io.fetchSockets()
//   sockets-info (room, ack)
//                      ack (await io.in(room).fetchSockets()).map(s => ({id,
//                      rooms: sorted, data, handshake: {auth, query, address,
//                      xdomain, secure, url}}))
//   set-data (data, ack)    socket.data = data; ack "ok"
//   remote-emit (socketId, payload, ack)
//                      [s] = await io.in(socketId).fetchSockets();
//                      s.emit("direct", payload); ack "ok"
//   remote-join (socketId, room, ack)   s.join(room); ack "ok"
//   remote-leave (socketId, room, ack)  s.leave(room); ack "ok"
//   remote-disconnect (socketId, ack)   s.disconnect(true); ack "ok"
//     (remote-*: ack {error: "not found"} when no socket has that id; like
//     join-all, the effect on a socket of another node is asynchronous)
//   disconnect-reason (socketId, ack)
//                      ack the server-side disconnect reason recorded by THIS
//                      node for a socket that was connected to it, or null
//
// Every handler passes its payloads through unchanged, binary included
// (Buffers, nested in objects or arrays). Acks are optional: a handler whose
// last argument is not a function (no ack requested) still does its work, and
// the handlers listed without an ack (publish*, server-emit) ack "ok" when the
// client asks for one (after the broadcast was handed to the adapter).
// Handlers that fail ack {error: message}.
// ============================================================================

import { createServer } from "node:http";
import { Server } from "socket.io";

const env = process.env;
const PORT = Number(env.PORT ?? 0);
const REDIS_URL = env.REDIS_URL || "redis://127.0.0.1:6379";
const ADAPTER = env.ADAPTER || "memory";
const PREFIX = env.PREFIX || "socket.io";
const SESSION_PREFIX = env.SESSION_PREFIX || "sio:session:";
const SUBSCRIPTION_MODE = env.SUBSCRIPTION_MODE || "dynamic";
const RECOVERY = env.RECOVERY === "1";
const RECOVERY_MS = Number(env.RECOVERY_MS || 120000);

const log = (...args) => console.error(`[node-server ${env.NODE_NAME ?? PORT}]`, ...args);

/** Redis clients this node opened (closed on exit). */
const redisClients = [];
/** Resolves when the adapter's subscriptions are confirmed: (called again after each join). */
let syncSubscriptions = async () => {};

async function redisClient(name) {
  const { createClient } = await import("redis");
  // The name (CLIENT SETNAME) is copied by duplicate(): it lets this process
  // recognise its own connections in CLIENT LIST (streams readiness).
  const client = createClient({ url: REDIS_URL, name });
  client.on("error", (err) => log("redis error:", err.message));
  await client.connect();
  redisClients.push(client);
  return client;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves when CLIENT LIST shows a connection named `name` matching `pred`. */
async function waitClientList(probe, name, pred, what) {
  const deadline = Date.now() + 15000;
  for (;;) {
    const list = await probe.sendCommand(["CLIENT", "LIST"]);
    const mine = list
      .split("\n")
      .filter((line) => line.includes(` name=${name} `))
      .map((line) => Object.fromEntries(line.trim().split(" ").map((kv) => {
        const i = kv.indexOf("=");
        return [kv.slice(0, i), kv.slice(i + 1)];
      })));
    if (mine.some(pred)) return;
    if (Date.now() > deadline) throw new Error(`adapter not ready: ${what}`);
    await sleep(10);
  }
}

async function buildAdapter(nodeName) {
  const name = `sio-${nodeName.replace(/[^A-Za-z0-9_.:-]/g, "_")}-${process.pid}`;
  switch (ADAPTER) {
    case "memory":
      return { adapter: undefined, ready: async () => {} };
    case "redis":
    case "sharded": {
      const { createAdapter, createShardedAdapter } = await import("@socket.io/redis-adapter");
      const pub = await redisClient(name);
      const sub = pub.duplicate();
      sub.on("error", (err) => log("redis error (sub):", err.message));
      await sub.connect();
      redisClients.push(sub);
      // The adapters issue their (S|P)SUBSCRIBE commands without awaiting
      // them. Commands on one connection are answered in order, so a PING
      // answered after them means they are all in effect.
      syncSubscriptions = () => sub.ping();
      const adapter =
        ADAPTER === "redis"
          ? createAdapter(pub, sub, { key: PREFIX })
          : createShardedAdapter(pub, sub, { channelPrefix: PREFIX, subscriptionMode: SUBSCRIPTION_MODE });
      return { adapter, ready: () => sub.ping() };
    }
    case "streams": {
      const { createAdapter } = await import("@socket.io/redis-streams-adapter");
      const client = await redisClient(name);
      const adapter = createAdapter(client, {
        streamName: PREFIX,
        channelPrefix: PREFIX,
        sessionKeyPrefix: SESSION_PREFIX,
      });
      // The adapter duplicates the client twice, asynchronously: one
      // connection XREADs the stream from "$" (entries added before its first
      // XREAD are never seen), one SUBSCRIBEs to the public and private
      // channels. Ready once both are visible in CLIENT LIST.
      const ready = async () => {
        await waitClientList(client, name, (c) => c.cmd === "xread", "stream reader");
        await waitClientList(client, name, (c) => Number(c.sub) >= 2, "channel subscriptions");
      };
      return { adapter, ready };
    }
    default:
      throw new Error(`unknown ADAPTER ${JSON.stringify(ADAPTER)} (redis | sharded | streams | memory)`);
  }
}

async function main() {
  const httpServer = createServer();
  await new Promise((resolve, reject) => {
    httpServer.once("error", reject);
    httpServer.listen(PORT, "127.0.0.1", resolve);
  });
  const port = httpServer.address().port;
  const NODE_NAME = env.NODE_NAME || `node-${port}`;

  const { adapter, ready } = await buildAdapter(NODE_NAME);
  const io = new Server(httpServer, {
    serveClient: false,
    ...(adapter ? { adapter } : {}),
    ...(RECOVERY
      ? { connectionStateRecovery: { maxDisconnectionDuration: RECOVERY_MS, skipMiddlewares: true } }
      : {}),
  });
  const nsp = io.of("/");

  // Server-to-server events (from other nodes or the emitter).
  nsp.on("relay", (payload) => {
    io.local.emit("relayed", payload);
  });
  nsp.on("node-ping", (...args) => {
    const ack = args.pop();
    if (typeof ack === "function") ack("pong");
  });

  /** Server-side disconnect reasons of sockets of this node, by socket id (bounded). */
  const reasons = new Map();

  io.on("connection", (socket) => {
    socket.emit("hello", { node: NODE_NAME, port, recovered: socket.recovered });

    socket.on("disconnect", (reason) => {
      reasons.set(socket.id, reason);
      if (reasons.size > 10000) reasons.delete(reasons.keys().next().value);
    });

    /** Registers a handler; `ack` is the last argument when it is a function. */
    const on = (event, arity, fn) => {
      socket.on(event, async (...args) => {
        const ack = typeof args[args.length - 1] === "function" ? args.pop() : () => {};
        while (args.length < arity) args.push(undefined);
        try {
          const result = await fn(...args.slice(0, arity));
          ack(result === undefined ? "ok" : result);
        } catch (err) {
          log(`handler ${event} failed:`, err);
          ack({ error: err?.message ?? String(err) });
        }
      });
    };

    const findSocket = async (id) => {
      const [s] = await io.in(id).fetchSockets();
      return s;
    };

    on("join", 1, async (room) => {
      socket.join(room);
      await syncSubscriptions();
      return "ok";
    });
    on("leave", 1, async (room) => {
      socket.leave(room);
      return "ok";
    });
    on("publish", 2, async (room, payload) => {
      io.to(room).emit("msg", payload);
    });
    on("publish-all", 1, async (payload) => {
      io.emit("msg", payload);
    });
    on("publish-except", 3, async (room, except, payload) => {
      io.to(room).except(except).emit("msg", payload);
    });
    on("count", 0, async () => (await io.fetchSockets()).length);
    on("server-emit", 1, async (payload) => {
      io.serverSideEmit("relay", payload);
    });
    on("server-ask", 0, async () => {
      try {
        return await io.serverSideEmitWithAck("node-ping");
      } catch (err) {
        return { error: err.message, responses: err.responses };
      }
    });
    on("ask-all", 0, async () => {
      try {
        return await io.timeout(3000).emitWithAck("question");
      } catch (err) {
        return { error: "timeout", responses: err.responses ?? [] };
      }
    });
    on("join-all", 1, async (room) => {
      io.socketsJoin(room);
      return "ok";
    });
    on("leave-all", 1, async (room) => {
      io.socketsLeave(room);
      return "ok";
    });
    on("kick", 1, async (room) => {
      io.in(room).disconnectSockets(true);
      return "ok";
    });
    on("rooms", 0, async () => {
      let rooms;
      if (typeof nsp.adapter.allRooms === "function") {
        rooms = await nsp.adapter.allRooms();
      } else {
        rooms = new Set();
        for (const s of await io.fetchSockets()) for (const r of s.rooms) rooms.add(r);
      }
      return [...rooms].sort();
    });
    on("sockets-info", 1, async (room) =>
      (await io.in(room).fetchSockets()).map((s) => ({
        id: s.id,
        rooms: [...s.rooms].sort(),
        data: s.data,
        handshake: {
          auth: s.handshake.auth,
          query: s.handshake.query,
          address: s.handshake.address,
          xdomain: s.handshake.xdomain,
          secure: s.handshake.secure,
          url: s.handshake.url,
        },
      })),
    );
    on("set-data", 1, async (data) => {
      socket.data = data;
      return "ok";
    });
    on("remote-emit", 2, async (id, payload) => {
      const s = await findSocket(id);
      if (!s) return { error: "not found" };
      s.emit("direct", payload);
      return "ok";
    });
    on("remote-join", 2, async (id, room) => {
      const s = await findSocket(id);
      if (!s) return { error: "not found" };
      s.join(room);
      return "ok";
    });
    on("remote-leave", 2, async (id, room) => {
      const s = await findSocket(id);
      if (!s) return { error: "not found" };
      s.leave(room);
      return "ok";
    });
    on("remote-disconnect", 1, async (id) => {
      const s = await findSocket(id);
      if (!s) return { error: "not found" };
      s.disconnect(true);
      return "ok";
    });
    on("disconnect-reason", 1, async (id) => reasons.get(id) ?? null);
  });

  await ready();
  process.stdout.write(`listening on ${port}\n`);
}

const shutdown = () => {
  for (const c of redisClients) {
    try {
      c.disconnect().catch(() => {});
    } catch {
      /* already closed */
    }
  }
  process.exit(0);
};
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);

main().catch((err) => {
  log("fatal:", err);
  process.exit(1);
});
