// A socket.io 4.8 server for the Rust client's tests.
// Usage: node server.js [port]   (prints "listening on <port>" when ready)
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] ?? 0);
const httpServer = createServer();
const io = new Server(httpServer, {
  connectionStateRecovery: { maxDisconnectionDuration: 120000, skipMiddlewares: true },
  pingInterval: 2000,
  pingTimeout: 2000,
});

// Every "log" event this process received, in order, per namespace.
const logs = { "/": [], "/admin": [] };

function common(socket) {
  const nsp = socket.nsp.name;
  socket.onAny((event, ...args) => {
    if (event === "log") logs[nsp].push(args[0]);
  });
  socket.on("echo", (...args) => socket.emit("echo", ...args));
  socket.on("echo-ack", (...args) => {
    const cb = args.pop();
    cb(...args);
  });
  socket.on("get-log", (cb) => cb(logs[nsp]));
  socket.on("conn-id", (cb) => cb(socket.conn.id));
  socket.on("transport", (cb) => cb(socket.conn.transport.name));
  socket.on("handshake", (cb) =>
    cb({
      header: socket.handshake.headers["x-test"] ?? null,
      query: socket.handshake.query.k ?? null,
      auth: socket.handshake.auth,
    }),
  );
  socket.on("get-binary", (cb) =>
    cb(Buffer.from([1, 2, 3]), { nested: Buffer.from("hi"), n: 1 }),
  );
  socket.on("ask", (payload) => {
    socket.timeout(5000).emit("question", payload, (err, answer) => {
      socket.emit("answer", err ? { error: String(err) } : answer);
    });
  });
  socket.on("kick", () => socket.disconnect(true));
  // Drops the transport (no namespace disconnect), then broadcasts `count`
  // ticks the client is not there to receive; recovery must replay them.
  socket.on("drop-and-tick", (count) => {
    socket.conn.close();
    setTimeout(() => {
      for (let i = 1; i <= count; i++) io.of(nsp).emit("tick", i);
    }, 50);
  });
  socket.on("tick-now", (count) => {
    for (let i = 1; i <= count; i++) io.of(nsp).emit("tick", i);
  });
}

io.on("connection", (socket) => {
  socket.emit("welcome", { recovered: socket.recovered });
  common(socket);
});

const admin = io.of("/admin");
admin.use((socket, next) => {
  if (socket.handshake.auth?.token === "secret") return next();
  const err = new Error("forbidden");
  err.data = { code: "bad_token" };
  next(err);
});
admin.on("connection", common);

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`listening on ${httpServer.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));
