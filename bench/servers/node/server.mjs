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

const io = new Server(httpServer);

io.on('connection', (socket) => {
  socket.on('join', (room, ack) => {
    socket.join(room);
    if (typeof ack === 'function') ack('ok');
  });
  socket.on('publish', (room, payload) => {
    io.to(room).emit('msg', payload);
  });
  socket.on('echo', (payload, ack) => {
    if (typeof ack === 'function') ack(payload);
  });
});

httpServer.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening on ${httpServer.address().port}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
