// Helpers of the package's tests: the server binary comes from the
// end-to-end helpers of tests/server (each test starts its own server on a
// free port with its own data directory), plus a gate in front of the
// client's WebSocket, metrics and bounded polling.

import WebSocket from "ws";

export { API_KEY, REPO_ROOT, WAIT_MS, api, devToken, serverBin, sleep, startServer, until } from "../../../tests/server/helpers.mjs";

/**
 * A WebSocket constructor for the client whose connections the test
 * controls: `gate.open = false` makes new connections fail (they go to a
 * closed port, so the client backs off and retries), `gate.drop()` cuts the
 * live ones abruptly (no close frame, as a network failure), `gate.opened`
 * counts the connections attempted with the gate open.
 */
export function gatedWebSocket() {
  const gate = {
    open: true,
    opened: 0,
    sockets: new Set(),
    drop() {
      for (const ws of gate.sockets) ws.terminate();
      gate.sockets.clear();
    },
  };
  class GatedWebSocket extends WebSocket {
    constructor(url) {
      super(gate.open ? url : "ws://127.0.0.1:9/ws");
      if (gate.open) gate.opened += 1;
      gate.sockets.add(this);
      this.addEventListener("close", () => gate.sockets.delete(this));
    }
  }
  return { gate, WebSocket: GatedWebSocket };
}

/** The value of a Prometheus sample of the server's /metrics (0 when absent). */
export async function metric(server, name, labels = "") {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ""} `));
  return line ? Number(line.split(" ").pop()) : 0;
}

/** Publishes through the HTTP API; fails unless stored. */
export async function publishApi(server, channel, data) {
  const { api } = await import("../../../tests/server/helpers.mjs");
  const res = await api(server, "POST", "/api/publish", { channel, data });
  if (res.status !== 200) throw new Error(`publish to ${channel}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}
