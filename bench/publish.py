#!/usr/bin/env python3
"""Publish throughput of the `switchboard` server.

    python3 bench/publish.py                  # full run: writes the publish
                                              # section of docs/benchmarks.md
    python3 bench/publish.py --smoke          # tiny, a few seconds (CI)
    python3 bench/publish.py --render bench/publish-last-run.json
                                              # only rewrite the section
    python3 bench/publish.py --before BIN     # also measures another build of
                                              # the server (e.g. an older commit)
                                              # in the same run, interleaved

64 publishers (connections), each publishing with an ack as fast as acks
return (closed loop, `bench-loadgen publish`), on 64 channels and on 1,
through the HTTP API (`POST /api/publish`, keep-alive) and through `/ws`;
the namespace keeps 100 publications per channel in the embedded database
(persisted: each publication is committed before its ack). Reports acked
publications/s and the ack latency (p50, p99). The server is pinned to CPU 0
and the generator to CPU 1; the server starts fresh, on an empty data
directory, for each measurement.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ROOT, fmt_num, free_port, log, machine, median_range, out, sh  # noqa: E402

BEGIN, END = "<!-- publish:begin -->", "<!-- publish:end -->"
LAST_RUN = os.path.join(ROOT, "bench", "publish-last-run.json")
READING = os.path.join(ROOT, "bench", "publish-reading.md")
API_KEY = "bench-publish-api-key-0123456789"
CASES = [("api", 64), ("api", 1), ("ws", 64), ("ws", 1)]


def server_cmd(binary, port, data):
    sets = [
        "channels.pbench.subscribe=anyone", "channels.pbench.publish=authenticated",
        "channels.pbench.history_size=100", "channels.pbench.history_storage=persisted",
        "channels.pbench.presence=false",
        f"api.key={API_KEY}",
        "limits.max_connections=1000000", "limits.max_connections_per_ip=1000000",
        "limits.handshakes_per_second_per_ip=0", "limits.messages_per_second=0",
        "log.level=warn",
    ]
    cmd = ["taskset", "-c", "0", binary, "--host", "127.0.0.1", "--port", str(port), "--data-dir", data]
    for kv in sets:
        cmd += ["--set", kv]
    return cmd


def measure(binary, loadgen, via, channels, args):
    port = free_port()
    data = tempfile.mkdtemp(prefix="switchboard-publish-")
    proc = subprocess.Popen(server_cmd(binary, port, data), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except Exception:
                time.sleep(0.1)
        else:
            return {"error": f"the server did not start: {proc.stderr.read(2000) if proc.poll() is not None else ''}"}
        cmd = ["taskset", "-c", "1", loadgen, "publish", "--addr", f"127.0.0.1:{port}", "--via", via,
               "--conns", str(args.conns), "--channels", str(channels), "--namespace", "pbench",
               "--api-key", API_KEY, "--duration", str(args.duration), "--warmup", str(args.warmup),
               "--server-pid", str(proc.pid)]
        log("  $ " + " ".join(cmd))
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + args.warmup + 60)
        try:
            r = json.loads(res.stdout.strip().splitlines()[-1])
        except Exception:
            r = {"error": f"no result (exit {res.returncode}): {res.stderr[-500:]}"}
        return r
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, True)


def render(saved):
    rows = []
    builds = saved["builds"]
    for via, channels in CASES:
        cells = []
        for name in builds:
            runs = saved["runs"].get(f"{name}/{via}/{channels}", [])
            med, lo, hi = median_range([r.get("acked_per_s") for r in runs])
            p99 = median_range([r.get("p99_ms") for r in runs])[0]
            p50 = median_range([r.get("p50_ms") for r in runs])[0]
            rng = f" [{fmt_num(lo)}-{fmt_num(hi)}]" if runs and len(runs) > 1 else ""
            cells.append(f"{fmt_num(med)}{rng} (p50 {p50 or 0:.1f} / p99 {p99 or 0:.1f} ms)" if med else "failed")
        rows.append(f"| {'HTTP API' if via == 'api' else '/ws'} | {channels} | " + " | ".join(cells) + " |")
    m = saved["machine"]
    heads = " | ".join(f"{b}: acked/s (ack latency)" for b in builds)
    return f"""{BEGIN}
## Publish throughput (the `switchboard` server)

Written by `python3 bench/publish.py`. {m['date']}; {m['cpu']}, {m['cores']} cores;
{saved['config']['repeat']} run(s) per case, interleaved, median [min-max].

{saved['config']['conns']} publishers (connections), each publishing a
64-byte payload with an ack as fast as acks return, spread over 64 channels
or all on 1, through the HTTP API (`POST /api/publish`, keep-alive
HTTP/1.1) or `/ws` (`message` requests); the namespace keeps 100
publications per channel in the embedded database, so each publication is
committed to SQLite before its ack. {saved['config']['warmup']} s of warm-up,
then {saved['config']['duration']} s measured. Server on CPU 0, generator
(`bench-loadgen publish`) on CPU 1.

| via | channels | {heads} |
|---|---|{'---|' * len(builds)}
{chr(10).join(rows)}

Builds: {'; '.join(f'{b}: {d}' for b, d in saved['describe'].items())}.

### Reading

{open(READING).read().strip() if os.path.exists(READING) else "(no reading written for this run yet)"}
{END}
"""


def write_section(saved, path):
    text = render(saved)
    old = open(path).read() if os.path.exists(path) else ""
    m = re.search(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", old, re.S)
    new = old[:m.start()] + text + old[m.end():] if m else old.rstrip("\n") + "\n\n" + text
    with open(path, "w") as f:
        f.write(new)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--before", metavar="BIN", help="another build of the `switchboard` binary to measure too")
    ap.add_argument("--before-label", default="before")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--render", metavar="JSON", help="only rewrite the section from a saved run")
    args = ap.parse_args()
    if args.render:
        write_section(json.load(open(args.render)), args.out)
        log(f"wrote the publish section of {args.out}")
        return
    if args.smoke:
        args.conns, args.duration, args.warmup, args.repeat = 4, 1, 0.3, 1
        profile, target = "debug", os.path.join(ROOT, "target", "debug")
        sh(["cargo", "build", "-p", "switchboard-server", "-p", "bench-loadgen"])
    else:
        args.conns, args.duration, args.warmup = 64, 5, 1
        profile, target = "release", os.path.join(ROOT, "target", "release")
        sh(["cargo", "build", "--release", "-p", "switchboard-server", "-p", "bench-loadgen"])
    loadgen = os.path.join(target, "bench-loadgen")
    builds = {"after" if args.before else "this build": os.path.join(target, "switchboard")}
    describe = {list(builds)[0]: f"commit {out(['git', 'rev-parse', '--short', 'HEAD'])} ({profile})"}
    if args.before:
        builds = {args.before_label: os.path.abspath(args.before), **builds}
        describe = {args.before_label: args.before, **describe}
    runs, failures = {}, []
    for i in range(args.repeat):
        for via, channels in CASES:
            for name, binary in builds.items():
                log(f"== {name} / {via} / {channels} channel(s) (run {i + 1}/{args.repeat})")
                r = measure(binary, loadgen, via, channels, args)
                runs.setdefault(f"{name}/{via}/{channels}", []).append(r)
                if "error" in r or not r.get("acked_per_s") or r.get("errors"):
                    failures.append(f"{name}/{via}/{channels}: {r.get('error') or r}")
                    log(f"   -> FAILED: {r.get('error') or r}")
                else:
                    log(f"   -> {r['acked_per_s']} acked/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
    if args.smoke:
        print(f"publish bench smoke: {len(CASES) * len(builds) - len(failures)} passed, {len(failures)} failed")
        sys.exit(1 if failures else 0)
    saved = {"machine": machine(), "builds": list(builds), "describe": describe, "runs": runs,
             "config": {"conns": args.conns, "duration": args.duration, "warmup": args.warmup,
                        "repeat": args.repeat}}
    json.dump(saved, open(LAST_RUN, "w"), indent=1)
    write_section(saved, args.out)
    log(f"wrote the publish section of {args.out} and {LAST_RUN}")


if __name__ == "__main__":
    main()
