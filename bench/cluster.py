#!/usr/bin/env python3
"""Cluster and connection-state-recovery benchmarks.

    python3 bench/cluster.py            # full run: builds, runs every
                                        # configuration --repeat times, writes
                                        # the cluster section of
                                        # docs/benchmarks.md
    python3 bench/cluster.py --smoke    # tiny N, a few seconds: checks that
                                        # every server and mode still works (CI)
    python3 bench/cluster.py --render bench/cluster-last-run.json
                                        # only rewrite the section

Cluster: two nodes of one server on one Redis, the subscribers split across
them, the publisher on the first node (`bench-loadgen cluster`): deliveries/s
at p99 <= 100 ms, the CPU of Redis, and the commands Redis executed per
publish (`INFO commandstats`), for Switchboard (switchboard-redis: classic,
sharded, streams), Node socket.io with the official adapters
(@socket.io/redis-adapter classic and sharded, @socket.io/redis-streams-
adapter) and socketioxide with socketioxide-redis.

Recovery: the single-node fan-out search (`bench-loadgen search`, as in
bench/run.py) and idle memory per connection (`bench-loadgen idle`) for the
Switchboard bench server with connection state recovery off and on, with the
in-memory store (no adapter) and with the Redis streams store
(ADAPTER=streams).

Redis is a `redis-server` of its own on a free port (never the machine's
6379), flushed before each run. Pinning (taskset): the server nodes on
CPU 0, the load generator and Redis on CPU 1. Each configuration runs
--repeat times, interleaved (run 1 of every configuration, then run 2...),
so that a change of background load hits all of them alike.
"""

import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as benchrun  # noqa: E402  (bench/run.py: helpers shared with the main benchmarks)
from run import ROOT, fmt_bytes, fmt_num, free_port, log, machine, median_range, out, sh  # noqa: E402

BEGIN, END = "<!-- cluster:begin -->", "<!-- cluster:end -->"
LAST_RUN = os.path.join(ROOT, "bench", "cluster-last-run.json")
NODE_DIR = os.path.join(ROOT, "bench", "servers", "node")
SERVER_CPU, CLIENT_CPU = "0", "1"

# (key, server, adapter mode, extra env, label)
CLUSTER = [
    ("switchboard-redis", "switchboard", "redis", {}, "Switchboard, classic (PUBLISH/PSUBSCRIBE)"),
    ("switchboard-sharded", "switchboard", "sharded", {}, "Switchboard, sharded (SPUBLISH, dynamic)"),
    ("switchboard-streams", "switchboard", "streams", {}, "Switchboard, streams (XADD/XREAD)"),
    ("switchboard-streams-recovery", "switchboard", "streams", {"RECOVERY": "1"},
     "Switchboard, streams, recovery on"),
    ("socketioxide-redis", "socketioxide", "redis", {}, "socketioxide + socketioxide-redis (PUBLISH)"),
    ("node-redis", "node", "redis", {}, "Node socket.io + @socket.io/redis-adapter, classic"),
    ("node-sharded", "node", "sharded", {}, "Node socket.io + @socket.io/redis-adapter, sharded"),
    ("node-streams", "node", "streams", {}, "Node socket.io + @socket.io/redis-streams-adapter"),
]
# (key, adapter mode or None, recovery on)
RECOVERY = [
    ("memory-off", None, False),
    ("memory-on", None, True),
    ("streams-off", "streams", False),
    ("streams-on", "streams", True),
]


class Redis:
    """A redis-server of our own on a free port, pinned to the client CPU."""

    def __init__(self, pin):
        if not shutil.which("redis-server") or not shutil.which("redis-cli"):
            raise SystemExit("redis-server and redis-cli are needed (apt-get install redis-server)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning"]
        if pin:
            cmd = ["taskset", "-c", CLIENT_CPU] + cmd
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.cli("ping") == "PONG":
                break
            time.sleep(0.05)
        else:
            self.stop()
            raise SystemExit("redis-server did not start")
        self.version = self.cli("info", "server")
        m = re.search(r"redis_version:(\S+)", self.version)
        self.version = m.group(1) if m else "?"

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def cli(self, *args):
        try:
            return subprocess.run(["redis-cli", "-p", str(self.port)] + list(args), capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except Exception:
            return ""

    def flush(self):
        self.cli("flushall")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, True)


def busy_ticks():
    """(busy, total) ticks of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


def proc_ticks(pid):
    """User + system ticks of a process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except Exception:
        return 0


class Background:
    """What the other tenants of the machine used while a run went on: the
    machine's busy time minus that of our processes (the nodes, Redis and
    the load generator, a child of this process), in % of one core, with
    steal and the load average."""

    def __init__(self, pids):
        self.pids = pids
        self.at = time.time()
        self.busy, self.total, self.steal = self._machine()
        self.ours = sum(proc_ticks(p) for p in pids) + self._children()

    @staticmethod
    def _machine():
        # busy = user, nice, system, irq, softirq (a process's own ticks
        # include the softirq work done in its context); total; steal.
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[0] + v[1] + v[2] + v[5] + v[6], sum(v[:8]), v[7]

    @staticmethod
    def _children():
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (ru.ru_utime + ru.ru_stime) * os.sysconf("SC_CLK_TCK")

    def finish(self):
        secs = max(time.time() - self.at, 1e-3)
        busy, total, steal = self._machine()
        ours = sum(proc_ticks(p) for p in self.pids) + self._children()
        other = max((busy - self.busy) - (ours - self.ours), 0)
        return {"other_cpu_pct": round(other / secs), "steal_pct": round((steal - self.steal) / max(total - self.total, 1) * 100),
                "loadavg": round(os.getloadavg()[0], 2)}


def wait_quiet(limit_pct, max_wait):
    """Waits (at most `max_wait` seconds) until the other tenants use less
    than `limit_pct` % of one core over 2 s; returns what was seen last and
    how long it waited."""
    started = time.time()
    while True:
        b = Background([])
        time.sleep(2)
        seen = b.finish()["other_cpu_pct"]
        waited = round(time.time() - started)
        if seen < limit_pct or waited >= max_wait:
            return {"before_cpu_pct": seen, "waited_s": waited}
        time.sleep(3)


class Cluster:
    def __init__(self, args):
        self.args = args
        self.bench = benchrun.Bench(argparse.Namespace(smoke=args.smoke, servers=[]))
        self.pin = self.bench.pin

    def build(self):
        cmd = ["cargo", "build", "-p", "bench-loadgen", "-p", "bench-switchboard", "-p", "bench-socketioxide"]
        if not self.args.smoke:
            cmd.append("--release")
        sh(cmd)
        lock = os.path.join(NODE_DIR, "package-lock.json")
        installed = os.path.join(NODE_DIR, "node_modules", ".package-lock.json")
        if not os.path.exists(installed) or os.path.getmtime(lock) > os.path.getmtime(installed):
            sh(["npm", "ci", "--prefix", NODE_DIR, "--no-audit", "--no-fund"])

    def start(self, server, env):
        """Starts one node; returns (process, port)."""
        port = free_port()
        cmd = self.bench.server_cmd(server, port)
        if self.pin:
            cmd = ["taskset", "-c", SERVER_CPU] + cmd
        full_env = dict(os.environ, PORT=str(port), **env)
        for k in ("ADAPTER", "RECOVERY"):
            if k not in env:
                full_env.pop(k, None)
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        deadline = time.time() + 30
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("listening on"):
                return proc, int(line.split()[-1])
        stop(proc)
        raise RuntimeError(f"{server} ({env}) did not start")

    def loadgen(self, args, timeout):
        cmd = [self.bench.bin("bench-loadgen")] + [str(a) for a in args]
        if self.pin:
            cmd = ["taskset", "-c", CLIENT_CPU] + cmd
        log("  $", " ".join(cmd[3:] if self.pin else cmd))
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if res.stderr.strip():
            log(res.stderr.rstrip())
        try:
            return json.loads(res.stdout.strip().splitlines()[-1])
        except Exception:
            return {"error": f"no result (exit {res.returncode}): {res.stdout[-300:]}"}

    def run_cluster(self, redis, server, mode, env, nodes, fixed=None):
        """The search, or with `fixed` = (rate, seconds) one trial at that
        rate (for the Redis traffic at an equal rate)."""
        a = self.args
        if fixed:
            a = argparse.Namespace(n=a.n, rate=fixed[0], duration=fixed[1], p99_ms=1e9, trials=1)
        redis.flush()
        env = dict(env, ADAPTER=mode, REDIS_URL=redis.url, PREFIX="bench")
        procs = []
        try:
            for _ in range(nodes):
                procs.append(self.start(server, env))
            time.sleep(0.3)
            bg = Background([p.pid for p, _ in procs] + [redis.proc.pid])
            r = self.loadgen(["cluster", "--addrs", ",".join(f"127.0.0.1:{p}" for _, p in procs),
                              "--n", a.n, "--rate", a.rate, "--duration", a.duration, "--p99-ms", a.p99_ms,
                              "--trials", a.trials, "--server-pids", ",".join(str(p.pid) for p, _ in procs),
                              "--redis", f"127.0.0.1:{redis.port}", "--redis-pid", redis.proc.pid],
                             timeout=900)
            r["background"] = bg.finish()
            return r
        finally:
            for p, _ in procs:
                stop(p)
            time.sleep(0.5)

    def run_single(self, redis, mode, recovery, scenario, extra):
        env = {}
        if mode:
            redis.flush()
            env.update(ADAPTER=mode, REDIS_URL=redis.url, PREFIX="bench")
        if recovery:
            env["RECOVERY"] = "1"
        proc, port = self.start("switchboard", env)
        try:
            bg = Background([proc.pid, redis.proc.pid])
            if scenario == "idle":
                cmd = ["idle", "--addr", f"127.0.0.1:{port}", "--server-pid", proc.pid]
            else:
                # The fan-out search with one node: the trials of bench/run.py's
                # fan-out, plus Redis's figures and the retry of disturbed trials.
                cmd = ["cluster", "--addrs", f"127.0.0.1:{port}", "--server-pids", proc.pid,
                       "--redis", f"127.0.0.1:{redis.port}", "--redis-pid", redis.proc.pid]
            r = self.loadgen(cmd + extra, timeout=900)
            r["background"] = bg.finish()
            return r
        finally:
            stop(proc)
            time.sleep(0.5)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def best(r):
    return (r or {}).get("best") or None


def deliveries(r):
    if not isinstance(r, dict) or "error" in r:
        return None
    b = best(r)
    return b.get("deliveries_per_s") if b else 0


def received_any(r):
    """Smoke: something was delivered (no timing criterion)."""
    if not isinstance(r, dict) or "error" in r:
        return False
    if "bytes_per_conn" in r:
        return r.get("connected", 0) > 0
    return any(t.get("received", 0) > 0 for t in r.get("trials", []))


def pick(runs, f):
    return median_range([f(r) for r in runs if isinstance(r, dict) and "error" not in r])


def b_get(*path):
    def f(r):
        v = best(r)
        for p in path:
            if not isinstance(v, dict):
                return None
            v = v.get(p)
        return v
    return f


def redis_usec_per_publish(r):
    b = best(r)
    if not b or not b.get("rate") or b.get("cpu", {}).get("redis_cpu_pct") is None:
        return None
    return b["cpu"]["redis_cpu_pct"] / 100 * 1e6 / b["rate"]


def fmt_range(med, lo, hi, f):
    if med is None:
        return "n/a"
    return f(med) if lo == hi or f(lo) == f(hi) else f"{f(med)} [{f(lo)}-{f(hi)}]"


def fmt_plain(digits):
    return lambda v: "n/a" if v is None else f"{v:.{digits}f}"


def node_versions():
    v = {}
    try:
        pl = json.load(open(os.path.join(NODE_DIR, "package-lock.json")))
        for pkg in ["socket.io", "@socket.io/redis-adapter", "@socket.io/redis-streams-adapter", "redis"]:
            v[f"npm:{pkg}"] = pl["packages"].get(f"node_modules/{pkg}", {}).get("version", "?")
    except Exception:
        pass
    lock = open(os.path.join(ROOT, "Cargo.lock")).read()
    for crate in ["socketioxide", "socketioxide-redis", "redis", "switchboard-redis"]:
        m = re.findall(r'name = "%s"\nversion = "([^"]+)"' % re.escape(crate), lock)
        v[crate] = ", ".join(m) if m else "?"
    return v


READING = os.path.join(ROOT, "bench", "cluster-reading.md")


def notes():
    """The reading of the figures: bench/cluster-reading.md, written by hand
    after a full run (it names the run it reads)."""
    text = open(READING).read().strip() if os.path.exists(READING) else "(no reading written for this run yet)"
    return f"\n### Reading\n\n{text}\n"


def bg_text(bg):
    if not bg:
        return ""
    return f"{bg.get('other_cpu_pct')}% / {bg.get('steal_pct')}% / {bg.get('loadavg')}"


def first_trial(runs):
    """The trial of the first good fixed-rate run."""
    for r in runs:
        if isinstance(r, dict) and "error" not in r and r.get("trials"):
            return r["trials"][0]
    return None


def section(saved):
    meta, cfg, raw = saved["machine"], saved["config"], saved["runs"]
    vers, redis_version = saved.get("versions", {}), saved.get("redis_version", "?")
    rows, details = [], []
    for key, server, mode, env, label in CLUSTER:
        runs = raw.get("cluster", {}).get(key)
        if not runs:
            continue
        d = pick(runs, deliveries)
        rows.append("| " + " | ".join([
            label,
            fmt_range(*d, fmt_num),
            fmt_range(*pick(runs, b_get("rate")), fmt_num),
            fmt_range(*pick(runs, b_get("p99_ms")), fmt_plain(1)),
            fmt_range(*pick(runs, b_get("cpu", "redis_cpu_pct")), fmt_plain(0)),
            fmt_range(*pick(runs, redis_usec_per_publish), fmt_plain(1)),
            fmt_range(*pick(runs, b_get("redis", "commands_per_publish")), fmt_plain(2)),
            fmt_range(*pick(runs, b_get("redis", "net_in_bytes_per_publish")), fmt_plain(0)) + " / " +
            fmt_range(*pick(runs, b_get("redis", "net_out_bytes_per_publish")), fmt_plain(0)),
            fmt_range(*pick(runs, b_get("cpu", "server_cpu_pct")), fmt_plain(0)),
            fmt_range(*pick(runs, b_get("cpu", "loadgen_cpu_pct")), fmt_plain(0)),
        ]) + " |")
        for i, r in enumerate(runs):
            if not isinstance(r, dict) or "error" in r:
                details.append(f"| {label} | {i + 1} | failed: {str((r or {}).get('error'))[:80]} | | | | | | |")
                continue
            b = best(r) or {}
            cmds = ", ".join(f"{k} {v}" for k, v in sorted(((b.get("redis") or {}).get("commands") or {}).items()))
            bg = r.get("background", {})
            cpu = b.get("cpu", {})
            details.append(f"| {label} | {i + 1} | {b.get('rate', '')} | {b.get('deliveries_per_s', '')} | "
                           f"{b.get('p99_ms', '')} | {cpu.get('servers_cpu_pct', '')} | {cpu.get('redis_cpu_pct', '')} | "
                           f"{cmds} | {bg_text(bg)}; trial: {cpu.get('other_cpu_pct')}%, attempt {b.get('attempts', 1)} |")

    traffic_rows = []
    for key, server, mode, env, label in CLUSTER:
        runs = raw.get("traffic", {}).get(key)
        if not runs:
            continue
        t = first_trial(runs)
        if not t:
            traffic_rows.append(f"| {label} | failed | | | | |")
            continue
        red = t.get("redis") or {}
        cmds = ", ".join(f"{k} {v / max(t.get('sent', 1), 1):.2f}" for k, v in sorted((red.get("commands") or {}).items()))
        traffic_rows.append(f"| {label} | {red.get('commands_per_publish')} ({cmds}) | "
                            f"{fmt_plain(1)(red.get('command_usec_per_publish'))} | "
                            f"{fmt_plain(0)(red.get('net_in_bytes_per_publish'))} / {fmt_plain(0)(red.get('net_out_bytes_per_publish'))} | "
                            f"{t.get('cpu', {}).get('redis_cpu_pct')} | {t.get('p50_ms')} / {t.get('p99_ms')} |")

    def med(key):
        return pick(raw.get("cluster", {}).get(key) or [], deliveries)[0]

    def ratio(a, b):
        va, vb = med(a), med(b)
        return f"{va / vb:.2f}x" if va and vb else "n/a"

    def cmds(key):
        t = first_trial(raw.get("traffic", {}).get(key) or [])
        return ((t or {}).get("redis") or {}).get("commands_per_publish")

    def cmp_cmds(a, b):
        va, vb = cmds(a), cmds(b)
        if va is None or vb is None:
            return "n/a"
        return f"{va:.2f} vs {vb:.2f} ({'met' if va <= vb + 1e-9 else 'missed'})"

    targets = []
    for mode in ["redis", "sharded", "streams"]:
        targets.append((f"Switchboard {mode} vs socketioxide-redis (target >= 2x)",
                        ratio(f"switchboard-{mode}", "socketioxide-redis")))
    for mode in ["redis", "sharded", "streams"]:
        targets.append((f"Switchboard {mode} vs Node {mode} (target >= 10x)",
                        ratio(f"switchboard-{mode}", f"node-{mode}")))
    for mode in ["redis", "sharded", "streams"]:
        targets.append((f"Redis commands per publish at {cfg.get('traffic_rate', 50):g}/s, Switchboard {mode} vs Node {mode} (target: no more)",
                        cmp_cmds(f"switchboard-{mode}", f"node-{mode}")))

    rec = raw.get("recovery", {})
    rec_rows = []
    for store, mode in [("memory", None), ("streams", "streams")]:
        off = pick(rec.get(f"fanout-{store}-off") or [], deliveries)
        on = pick(rec.get(f"fanout-{store}-on") or [], deliveries)
        ioff = pick(rec.get(f"idle-{store}-off") or [], lambda r: r.get("bytes_per_conn"))
        ion = pick(rec.get(f"idle-{store}-on") or [], lambda r: r.get("bytes_per_conn"))
        cost = f"{(1 - on[0] / off[0]) * 100:.0f}%" if on[0] and off[0] else "n/a"
        label = "in memory (one node, no adapter)" if store == "memory" else "Redis streams (one node, ADAPTER=streams)"
        rec_rows.append(f"| {label} | {fmt_range(*off, fmt_num)} | {fmt_range(*on, fmt_num)} | {cost} | "
                        f"{fmt_range(*ioff, fmt_bytes)} | {fmt_range(*ion, fmt_bytes)} |")
    rec_details = []
    for key, runs in sorted(rec.items()):
        for i, r in enumerate(runs):
            if not isinstance(r, dict) or "error" in r:
                rec_details.append(f"| {key} | {i + 1} | failed | | | | |")
                continue
            bg = r.get("background", {})
            if "bytes_per_conn" in r:
                rec_details.append(f"| {key} | {i + 1} | {r.get('connected')} connected | "
                                   f"{r.get('bytes_per_conn')} B/conn | | | {bg_text(bg)} |")
            else:
                b = best(r) or {}
                cpu = b.get("cpu", {})
                rec_details.append(f"| {key} | {i + 1} | {b.get('rate', '')}/s | {b.get('deliveries_per_s', '')} | "
                                   f"{b.get('p99_ms', '')} | {cpu.get('server_cpu_pct', '')} / {cpu.get('loadgen_cpu_pct', '')} | "
                                   f"{bg_text(bg)}; trial: {cpu.get('other_cpu_pct')}%, attempt {b.get('attempts', 1)} |")
    mem_off = pick(rec.get("fanout-memory-off") or [], deliveries)[0]
    mem_on = pick(rec.get("fanout-memory-on") or [], deliveries)[0]
    if mem_off and mem_on:
        c = (1 - mem_on / mem_off) * 100
        targets.append(("Recovery on, memory store: fan-out cost (target <= 25%)",
                        f"{c:.0f}% ({'met' if c <= 25 else 'missed'})"))

    return f"""{BEGIN}
## Cluster: two nodes on one Redis; connection state recovery

Written by `python3 bench/cluster.py` (`--smoke`: the tiny version the test
suite runs); `bench/run.py` keeps this section as it is.

- {meta['date']}; {meta['cpu']}, {meta['cores']} cores, {meta['mem_gib']} GiB, Linux {meta['kernel']}
- {meta['rustc']}; Node {meta['node']}; redis-server {redis_version} (its own, on a free port, no persistence, flushed before each run)
- switchboard-redis {vers.get('switchboard-redis')} (redis crate {vers.get('redis')});
  socketioxide {vers.get('socketioxide')} with socketioxide-redis {vers.get('socketioxide-redis')} (its `redis` driver);
  socket.io {vers.get('npm:socket.io')} with @socket.io/redis-adapter {vers.get('npm:@socket.io/redis-adapter')},
  @socket.io/redis-streams-adapter {vers.get('npm:@socket.io/redis-streams-adapter')}, redis (npm client) {vers.get('npm:redis')}
- source: commit {saved.get('source', '?')}
- {max([len(v) for v in raw.get('cluster', {}).values()] or [0])} run(s) per configuration, interleaved; median with [min-max]

### How the load was generated

- **Pinning** (2 cores): both server nodes on CPU 0, the load generator
  and Redis on CPU 1 (`taskset`). The servers thus get one core between
  them, as the single-node scenarios do; Redis shares the generator's core
  and its CPU is reported.
- **Cluster**: `bench-loadgen cluster` opens {cfg['n']} subscribers (WebSocket,
  from 8 loopback source addresses), alternately on node 1 and node 2, each
  joining room `bench`; the publisher is one more client on node 1, emitting
  `publish` (room, 64-byte payload stamped with its send time) at an even
  rate (every millisecond, the publishes due); node 1 broadcasts `msg` to the
  room through its Redis adapter, each node delivers to its own subscribers.
  The rate starts at {cfg['rate']}/s, doubles, then bisects, to the highest rate with
  at least 99.9% delivered, no connection lost and p99 publish-to-delivery
  latency <= {cfg['p99_ms']} ms; {cfg['duration']} s per trial. Every trial reads `INFO stats
  commandstats` before and after (the INFO calls left out) and the CPU of
  both nodes, Redis and the generator from /proc.
- **Shared machine**: each trial also measures what other processes of the
  machine used (busy time in /proc/stat minus ours). A trial that fails
  while they took more than 15% of a core is run again once they use less
  than that over a second (6 attempts at most), and each run starts after
  a 2-second window in which they use less than 15% of a core (waiting up
  to 10 minutes).
- The adapters run with their defaults (prefix `bench`); the sharded modes
  use dynamic subscriptions (the room has its own channel). A `join` is
  acknowledged once the node receives the room's broadcasts.
- **Recovery**: the fan-out search of `bench/run.py` on one node (1k
  subscribers in one room, p99 <= 100 ms, 3 s trials; run by the same loop
  as the cluster scenario with a single node, so disturbed trials are
  repeated there too) and idle memory (`bench-loadgen idle`, 10k
  connections, RSS growth / N) on the Switchboard bench server, `RECOVERY=1` turning on
  `connection_state_recovery(RecoveryConfig::default())`: every broadcast
  then carries an offset as its last argument (the generator reads the
  stamp inside the payload) and is stored, in memory or (ADAPTER=streams)
  in the Redis stream. Server on CPU 0, generator and Redis on CPU 1.

### Cluster, {cfg['n']} subscribers on 2 nodes: deliveries/s at p99 <= {cfg['p99_ms']} ms

| server, adapter | deliveries/s | publishes/s | p99 ms | Redis CPU % | Redis CPU µs / publish | Redis commands / publish | Redis bytes in / out per publish | both nodes CPU % | generator CPU % |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

The CPU figures are those of the best trial (% of one core); commands and
bytes per publish are counted by Redis over that trial (bytes include one
INFO answer, about 2 KB, spread over the trial's publishes). How many
commands a publish costs depends on the rate in the streams modes (a
reader's XREAD returns every entry added since its last one), hence the
same count at an equal rate:

### Redis traffic per publish at an equal rate ({cfg.get('traffic_rate', 50):g} publishes/s, {cfg['n']} subscribers on 2 nodes, {5 if cfg['n'] >= 1000 else 1} s)

| server, adapter | commands / publish (by command) | Redis command µs / publish | bytes in / out per publish | Redis CPU % | p50 / p99 ms |
|---|---|---|---|---|---|
{chr(10).join(traffic_rows)}

Command µs are Redis's own accounting (`INFO commandstats` usec), which
leaves out its network and event-loop work; the Redis CPU % (from /proc)
includes it.

### Connection state recovery: what it costs (Switchboard)

| store | fan-out 1k, recovery off | recovery on | throughput cost | idle 10k, RSS/conn, off | on |
|---|---|---|---|---|---|
{chr(10).join(rec_rows)}

### Against the targets (medians, same run)

| target | measured |
|---|---|
{chr(10).join(f"| {t} | {v} |" for t, v in targets)}
{notes()}
### Per-run details

Cluster (best trial of each search). Background: the CPU other tenants of
the machine used during the whole run (machine busy time minus that of the
nodes, Redis and the generator; % of one core) / steal % / load average at
the end:

| configuration | run | publishes/s | deliveries/s | p99 ms | nodes CPU % | Redis CPU % | Redis commands in the trial | background |
|---|---|---|---|---|---|---|---|---|
{chr(10).join(details)}

Recovery:

| configuration | run | publishes/s | deliveries/s | p99 ms | server / generator CPU % | background |
|---|---|---|---|---|---|---|
{chr(10).join(rec_details)}
{END}
"""


def write_section(saved, path):
    text = section(saved)
    old = open(path).read() if os.path.exists(path) else ""
    m = re.search(re.escape(BEGIN) + r".*?" + re.escape(END) + r"\n?", old, re.S)
    if m:
        new = old[:m.start()] + text + old[m.end():]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    with open(path, "w") as f:
        f.write(new)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--only", default="", help="comma-separated configuration keys (cluster keys, "
                    "or fanout-memory-on and the like); the others keep their saved figures")
    ap.add_argument("--groups", default="cluster,traffic,recovery",
                    help="what to run: cluster (the searches), traffic (Redis traffic at an equal rate), "
                    "recovery; the others keep their saved figures")
    ap.add_argument("--append", action="store_true",
                    help="add the runs to the saved ones (bench/cluster-last-run.json) instead of replacing them")
    ap.add_argument("--traffic-rate", type=float, default=None,
                    help="publishes/s of the equal-rate Redis traffic trial (50; 20 in --smoke)")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--idle-n", type=int, default=None)
    ap.add_argument("--quiet-wait", type=float, default=None, metavar="S",
                    help="before each run, wait up to S seconds for the other tenants of the machine "
                    "to use less than --quiet-pct of one core (default 600; 0 in --smoke)")
    ap.add_argument("--quiet-pct", type=float, default=15)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--render", metavar="JSON", help="only rewrite the section from a saved run")
    args = ap.parse_args()
    # SIGTERM stops the nodes, the generator and Redis on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.render:
        write_section(json.load(open(args.render)), args.out)
        log(f"wrote the cluster section of {args.out}")
        return
    if args.repeat is None:
        args.repeat = 1 if args.smoke else 3
    if args.quiet_wait is None:
        args.quiet_wait = 0 if args.smoke else 600
    if args.smoke:
        args.n, args.rate, args.duration, args.p99_ms, args.trials = args.n or 20, 20, 1, 1000, 1
        args.idle_n = args.idle_n or 50
    else:
        args.n, args.rate, args.duration, args.p99_ms, args.trials = args.n or 1000, 100, 3, 100, 12
        args.idle_n = args.idle_n or 10000
    only = set(filter(None, args.only.split(",")))
    c = Cluster(args)
    c.build()
    redis = Redis(c.pin)
    raw = {"cluster": {}, "traffic": {}, "recovery": {}}
    if args.traffic_rate is None:
        args.traffic_rate = 20 if args.smoke else 50
    groups = set(filter(None, args.groups.split(",")))
    partial = only or groups != {"cluster", "traffic", "recovery"} or args.append
    if not args.smoke and partial and os.path.exists(LAST_RUN):
        raw = json.load(open(LAST_RUN)).get("runs", raw)
    failures, passed = [], 0
    try:
        plan = []
        if "cluster" in groups:
            for key, server, mode, env, label in CLUSTER:
                if not only or key in only:
                    plan.append(("cluster", key, lambda s=server, m=mode, e=env: c.run_cluster(redis, s, m, e, 2)))
        if "traffic" in groups:
            for key, server, mode, env, label in CLUSTER:
                if not only or key in only:
                    plan.append(("traffic", key, lambda s=server, m=mode, e=env: c.run_cluster(
                        redis, s, m, e, 2, fixed=(args.traffic_rate, 1 if args.smoke else 5))))
        if "recovery" in groups:
            search = ["--n", args.n, "--rate", args.rate, "--duration", args.duration, "--p99-ms", args.p99_ms,
                      "--trials", args.trials]
            idle = ["--n", args.idle_n, "--duration", 1 if args.smoke else 5]
            for store, mode, on in RECOVERY:
                suffix = store.split("-")[0] + ("-on" if on else "-off")
                for scen, extra in [("fanout", search), ("idle", idle)]:
                    key = f"{scen}-{suffix}"
                    if not only or key in only:
                        plan.append(("recovery", key, lambda m=mode, o=on, sc=scen, ex=extra: c.run_single(
                            redis, m, o, sc, ex)))
        for group, key, _ in plan:
            if not args.append or not raw.get(group, {}).get(key):
                raw.setdefault(group, {})[key] = []
        for i in range(args.repeat):
            for group, key, fn in plan:
                if group == "traffic" and i > 0 and not args.append:
                    continue  # counts, not timings: one run is enough
                log(f"== {group} / {key} (run {i + 1}/{args.repeat})")
                quiet = wait_quiet(args.quiet_pct, args.quiet_wait) if args.quiet_wait > 0 else None
                if quiet and quiet["waited_s"]:
                    log(f"   (waited {quiet['waited_s']} s for a quiet machine; other tenants at {quiet['before_cpu_pct']}%)")
                try:
                    r = fn()
                except Exception as e:  # a node that did not start
                    r = {"error": str(e)}
                if quiet:
                    r.setdefault("background", {}).update(quiet)
                raw[group][key].append(r)
                ok = received_any(r)
                if key.startswith("idle"):
                    log(f"   -> {r.get('bytes_per_conn')} bytes/conn" if ok else f"   -> FAILED: {r.get('error')}")
                else:
                    b = best(r) or {}
                    log(f"   -> {b.get('deliveries_per_s')} deliveries/s, redis {((b.get('redis') or {}).get('commands_per_publish'))} "
                        f"commands/publish" if ok else f"   -> FAILED: {r.get('error', 'nothing received')}")
                if ok:
                    passed += 1
                else:
                    failures.append(f"{group}/{key}: {r.get('error', 'nothing received')}")
    finally:
        redis.stop()
    if args.smoke:
        print(f"cluster bench smoke: {passed} passed, {len(failures)} failed")
        for f in failures:
            print("  FAILED", f)
        sys.exit(1 if failures else 0)
    commit = out(["git", "rev-parse", "--short", "HEAD"])
    dirty = out(["git", "status", "--porcelain", "--", "crates/switchboard/src", "crates/redis/src"])
    saved = {"machine": machine(), "versions": node_versions(), "redis_version": redis.version,
             "source": f"{commit}{' + uncommitted changes in crates/' if dirty else ''}",
             "config": {"n": args.n, "rate": args.rate, "duration": args.duration, "p99_ms": args.p99_ms,
                        "idle_n": args.idle_n, "repeat": args.repeat, "traffic_rate": args.traffic_rate},
             "runs": raw}
    json.dump(saved, open(LAST_RUN, "w"), indent=1)
    write_section(saved, args.out)
    log(f"wrote the cluster section of {args.out} and {LAST_RUN}")
    if failures:
        log("failures:\n  " + "\n  ".join(failures))


if __name__ == "__main__":
    main()
