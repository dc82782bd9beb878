// Acknowledged API publishes per second to one persisted channel, with W
// concurrent publishers, for S seconds.
import { spawn, execSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
const [bin, W, S] = process.argv.slice(2);
const dir = mkdtempSync(path.join(tmpdir(), "rate-"));
const child = spawn(bin, ["--host", "127.0.0.1", "--port", "0", "--data-dir", dir, "--set", "api.key=rate-measure-key-0123", "--set", "channels.chat.history_size=1000"], { stdio: ["ignore", "pipe", "ignore"], env: { ...process.env, RUST_LOG: "warn" } });
const port = await new Promise((r) => child.stdout.on("data", (d) => { const m = /listening on (\d+)/.exec(String(d)); if (m) r(m[1]); }));
let n = 0;
const end = Date.now() + Number(S) * 1000;
await Promise.all(Array.from({ length: Number(W) }, async () => {
  while (Date.now() < end) {
    const res = await fetch(`http://127.0.0.1:${port}/api/publish`, { method: "POST", headers: { authorization: "apikey rate-measure-key-0123", "content-type": "application/json" }, body: JSON.stringify({ channel: "chat:rate", data: { n } }) });
    if (res.status !== 200) throw new Error(String(res.status));
    await res.text();
    n++;
  }
}));
console.log(`${path.basename(path.dirname(path.dirname(path.dirname(bin))))} W=${W}: ${(n / Number(S)).toFixed(0)} publishes/s`);
child.kill("SIGKILL");
execSync(`rm -rf ${dir}`);
