// Benchmark server: the bench application on Node socket.io 4.8.
//
// - `join` (room, with ack): the socket joins the room; acks "ok".
// - `publish` (room, payload): emits `msg` with the payload to every socket
//   in the room (io.to(room), the publisher included).
// - `echo` (payload, with ack): acks with the same payload.
//
// Listens on 127.0.0.1:$PORT (default 3000) with socket.io's default
// options and prints `listening on <port>` on stdout when ready. Reports on
// stderr whether ws (the WebSocket library under engine.io) uses the native
// bufferutil add-on. Accepted sockets get TCP_NODELAY. Exits on SIGTERM or
// SIGINT.
//
// Optional, for the cluster benchmarks (bench/cluster.py); unset, the server
// is the plain single-node one:
//   ADAPTER=redis    createAdapter(pub, sub, {key: PREFIX}) from
//                    @socket.io/redis-adapter (PUBLISH / PSUBSCRIBE)
//   ADAPTER=sharded  createShardedAdapter(pub, sub, {channelPrefix: PREFIX})
//                    (SPUBLISH / SSUBSCRIBE, dynamic subscriptions)
//   ADAPTER=streams  createAdapter(client, {streamName: PREFIX, channelPrefix:
//                    PREFIX}) from @socket.io/redis-streams-adapter
//   REDIS_URL (redis://127.0.0.1:6379), PREFIX (socket.io).
// Each with the packages' default options and the `redis` 4 client. With an
// adapter, `listening on` is printed once the adapter's subscriptions are in
// effect (and, streams, the stream is being read), and `join` acks once the
// room's broadcasts reach this node (sharded: its channel is subscribed).
// RECOVERY=1 turns connection state recovery on (the defaults).

import { createRequire } from 'node:module';
import { isUtf8 } from 'node:buffer';
import http from 'node:http';
import { Server } from 'socket.io';

const port = Number(process.env.PORT || 3000);

// Resolve the add-ons the way ws does: from ws's own location (ws is a
// dependency of engine.io, itself a dependency of socket.io).
function addonReport() {
  const fromHere = createRequire(import.meta.url);
  const fromEngine = createRequire(fromHere.resolve('engine.io'));
  const wsPath = fromEngine.resolve('ws');
  const fromWs = createRequire(wsPath);
  const wsVersion = fromWs('./package.json').version;
  const lines = [];
  try {
    const bufferutil = fromWs('bufferutil');
    const fallback = fromWs('bufferutil/fallback');
    const version = fromWs('bufferutil/package.json').version;
    const native = bufferutil.mask !== fallback.mask;
    const disabled = Boolean(process.env.WS_NO_BUFFER_UTIL);
    lines.push(
      `bufferutil ${version}: ${native ? 'native' : 'JS fallback (native build not loaded)'}` +
        `, ${disabled ? 'DISABLED by WS_NO_BUFFER_UTIL' : `used by ws ${wsVersion}`}`,
    );
  } catch (e) {
    lines.push(`bufferutil: NOT available to ws ${wsVersion} (${e.code || e.message})`);
  }
  try {
    const version = fromWs('utf-8-validate/package.json').version;
    fromWs('utf-8-validate');
    lines.push(
      `utf-8-validate ${version}: installed` +
        (typeof isUtf8 === 'function'
          ? `; ws uses Node's built-in buffer.isUtf8 instead on Node ${process.versions.node}`
          : '; used by ws'),
    );
  } catch (e) {
    lines.push(`utf-8-validate: NOT available (${e.code || e.message})`);
  }
  return lines;
}

for (const line of addonReport()) process.stderr.write(`${line}\n`);

const httpServer = http.createServer({ noDelay: true });
httpServer.on('connection', (socket) => socket.setNoDelay(true));

const ADAPTER = process.env.ADAPTER || '';
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const PREFIX = process.env.PREFIX || 'socket.io';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The adapter for ADAPTER, and a function resolving once it is in effect. */
async function clusterAdapter() {
  if (!ADAPTER) return { adapter: undefined, ready: async () => {} };
  const { createClient } = await import('redis');
  const name = `bench-node-${process.pid}`;
  const client = createClient({ url: REDIS_URL, name });
  client.on('error', (err) => process.stderr.write(`redis error: ${err.message}\n`));
  await client.connect();
  if (ADAPTER === 'redis' || ADAPTER === 'sharded') {
    const { createAdapter, createShardedAdapter } = await import('@socket.io/redis-adapter');
    const sub = client.duplicate();
    sub.on('error', (err) => process.stderr.write(`redis error (sub): ${err.message}\n`));
    await sub.connect();
    const adapter =
      ADAPTER === 'redis'
        ? createAdapter(client, sub, { key: PREFIX })
        : createShardedAdapter(client, sub, { channelPrefix: PREFIX });
    // The adapters do not await their (S|P)SUBSCRIBE commands; a PING on the
    // same connection is answered after them.
    return { adapter, ready: () => sub.ping() };
  }
  if (ADAPTER === 'streams') {
    const { createAdapter } = await import('@socket.io/redis-streams-adapter');
    const adapter = createAdapter(client, { streamName: PREFIX, channelPrefix: PREFIX });
    // The adapter duplicates the client: one connection XREADs the stream,
    // one subscribes to the request channels. Ready once both are visible.
    const seen = async (pred) => {
      for (let i = 0; i < 1500; i++) {
        const list = await client.sendCommand(['CLIENT', 'LIST']);
        if (list.split('\n').some((l) => l.includes(` name=${name} `) && pred(l))) return;
        await sleep(10);
      }
      throw new Error('the streams adapter did not start');
    };
    let started;
    const ready = () =>
      (started ??= (async () => {
        await seen((l) => / cmd=xread/.test(l));
        await seen((l) => Number((l.match(/ sub=(\d+)/) || [])[1]) >= 2);
      })());
    return { adapter, ready };
  }
  throw new Error(`unknown ADAPTER ${JSON.stringify(ADAPTER)} (redis | sharded | streams)`);
}

const { adapter, ready } = await clusterAdapter();
const io = new Server(httpServer, {
  ...(adapter ? { adapter } : {}),
  ...(process.env.RECOVERY === '1' ? { connectionStateRecovery: {} } : {}),
});

io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    socket.join(room);
    if (typeof ack !== 'function') return;
    if (ADAPTER) ready().then(() => ack('ok'), () => ack('ok'));
    else ack('ok');
  });
  socket.on('publish', (room, payload) => {
    io.to(room).emit('msg', payload);
  });
  socket.on('echo', (payload, ack) => {
    if (typeof ack === 'function') ack(payload);
  });
});

httpServer.listen(port, '127.0.0.1', async () => {
  await ready();
  process.stdout.write(`listening on ${httpServer.address().port}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
