// Binary payloads (Buffers) in both directions, in events and acks, nested and several at once.
import { test } from "node:test";
import assert from "node:assert/strict";
import { setup, waitFor, ackAll, toBuffer, isBinary, TEST_TIMEOUT_MS } from "./helpers.mjs";

const opts = { timeout: TEST_TIMEOUT_MS };

function bytes(n, seed = 0) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/**
 * Replace every binary value in `value` by { $bin: <hex> } so that results can be
 * compared with deepEqual regardless of Buffer / ArrayBuffer representation.
 * Also checks binaries arrive as binaries (not as JSON objects / base64 strings).
 */
function normalize(value) {
  if (isBinary(value)) return { $bin: toBuffer(value).toString("hex") };
  if (Array.isArray(value)) return value.map(normalize);
  if (value && typeof value === "object") {
    if (value.type === "Buffer" && Array.isArray(value.data)) {
      throw new assert.AssertionError({ message: "binary came back as a JSON-serialized Buffer, not as binary" });
    }
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalize(v)]));
  }
  return value;
}

const payloads = {
  "a single Buffer": () => [bytes(16)],
  "every byte value": () => [Buffer.from(Array.from({ length: 256 }, (_, i) => i))],
  "an empty Buffer": () => [Buffer.alloc(0)],
  "a Buffer nested in an object": () => [{ file: { name: "a.bin", data: bytes(64, 1) }, n: 1 }],
  "several Buffers across arguments and nesting": () => [
    bytes(3, 2),
    "text",
    { list: [bytes(5, 3), { deeper: bytes(7, 4) }], plain: [1, 2] },
    [bytes(1, 5), null, bytes(2, 6)],
  ],
  "a 100 KiB Buffer": () => [bytes(100 * 1024, 7)],
};

for (const transports of [["websocket"], ["polling"]]) {
  const tr = transports[0];
  for (const [name, make] of Object.entries(payloads)) {
    test(`[${tr}] binary both ways: ${name} (binary-back event and ack)`, opts, async (t) => {
      const f = await setup(t);
      const socket = await f.connected("/", { transports });
      const args = make();
      const back = waitFor(socket, "binary-back");
      const acked = await ackAll(socket, "binary-echo", ...args);
      const expected = normalize(args);
      assert.deepEqual(normalize(acked), expected, "ack of binary-echo");
      assert.deepEqual(normalize(await back), expected, "binary-back event");
    });
  }

  test(`[${tr}] binary-echo without ack only emits binary-back`, opts, async (t) => {
    const f = await setup(t);
    const socket = await f.connected("/", { transports });
    const payload = { a: bytes(10, 9), b: [bytes(20, 10)] };
    const back = waitFor(socket, "binary-back");
    socket.emit("binary-echo", payload);
    assert.deepEqual(normalize(await back), normalize([payload]));
  });

  test(`[${tr}] binary and text packets interleave without corruption`, opts, async (t) => {
    const f = await setup(t);
    const socket = await f.connected("/", { transports });
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        i % 2 ? ackAll(socket, "binary-echo", bytes(i + 1, i), i) : ackAll(socket, "echo", `text-${i}`),
      ),
    );
    results.forEach((r, i) => {
      if (i % 2) assert.deepEqual(normalize(r), normalize([bytes(i + 1, i), i]), `binary ack #${i}`);
      else assert.deepEqual(r, [`text-${i}`], `text ack #${i}`);
    });
  });
}

test("binary survives the polling -> websocket upgrade", opts, async (t) => {
  const f = await setup(t);
  const socket = await f.connected("/"); // default transports
  const before = await ackAll(socket, "binary-echo", bytes(32, 11));
  if (socket.io.engine.transport.name !== "websocket") await waitFor(socket.io.engine, "upgrade");
  const after = await ackAll(socket, "binary-echo", { b: bytes(32, 12) });
  assert.deepEqual(normalize(before), normalize([bytes(32, 11)]));
  assert.deepEqual(normalize(after), normalize([{ b: bytes(32, 12) }]));
});
