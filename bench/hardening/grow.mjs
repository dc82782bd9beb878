// Publishes one ~1 KB message to each of N random user: channels per round
// through the API, and prints the data directory's size after each round.
import { spawn, execSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
const [bin, rounds, perRound, waitSecs, ...extra] = process.argv.slice(2);
const dir = mkdtempSync(path.join(tmpdir(), "grow-"));
const child = spawn(bin, ["--host", "127.0.0.1", "--port", "0", "--data-dir", dir, "--set", "api.key=grow-measure-key-0123", ...extra], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "warn" } });
const port = await new Promise((r) => child.stdout.on("data", (d) => { const m = /listening on (\d+)/.exec(String(d)); if (m) r(m[1]); }));
const du = () => Number(execSync(`du -sb ${dir}`).toString().split("\t")[0]);
const pad = "p".repeat(1000);
console.log(`start: ${du()} bytes`);
for (let r = 0; r < Number(rounds); r++) {
  let next = 0;
  const N = Number(perRound);
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < N) {
      const i = next++;
      const res = await fetch(`http://127.0.0.1:${port}/api/publish`, { method: "POST", headers: { authorization: "apikey grow-measure-key-0123", "content-type": "application/json" }, body: JSON.stringify({ channel: `user:r${r}-${i}-${Math.random().toString(36).slice(2)}`, data: { pad } }) });
      if (res.status !== 200) throw new Error(`${res.status} ${await res.text()}`);
    }
  }));
  console.log(`after round ${r + 1} (${N} channels): ${du()} bytes`);
  if (r + 1 < Number(rounds)) await new Promise((res) => setTimeout(res, Number(waitSecs) * 1000));
}
child.kill("SIGKILL");
execSync(`rm -rf ${dir}`);
