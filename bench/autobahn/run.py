#!/usr/bin/env python3
"""Runs the Autobahn WebSocket cases against the `ws-echo` example.

Called by run.sh (which installs kosoku and builds the example); run it with
the Python of bench/autobahn/.venv. For each profile of the example (the
library's WebSocket configuration, the server's), starts the echo server on
a free port, drives the cases with kosoku's fuzzing client, keeps kosoku's
full report (HTML and JSON) under target/autobahn/<name>/ and writes
bench/autobahn/reports/<name>/index.json (kosoku's index, one entry per
case) and summary.txt (counts per behaviour, every case that is not OK with
kosoku's explanation).

With --runner wstest the classic runner (autobahntestsuite on Python 2.7,
installed by run.sh) drives the same cases instead, as a cross-check; its
reports go to <name>-wstest.

Exit status: 0 when every case's behaviour is OK, NON-STRICT or
INFORMATIONAL and its closing behaviour OK or INFORMATIONAL; 1 otherwise,
or when no case ran, or when the server died.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

# permessage-deflate (12.x, 13.x) is not offered by tokio-websockets, so
# those cases can only report UNIMPLEMENTED: they are left out.
FULL_EXCLUDE = ["12.*", "13.*"]

# Seconds-long subset for CI: framing, pings, reserved bits, opcodes,
# fragmentation, UTF-8 (6.1-6.4), the closing handshake basics (7.1-7.5),
# the small 9.1/9.2 sizes (64 KiB to 1 MiB) and 10.x.
QUICK_INCLUDE = [
    "1.*",
    "2.*",
    "3.*",
    "4.*",
    "5.*",
    "6.1.*",
    "6.2.*",
    "6.3.*",
    "6.4.*",
    "7.1.*",
    "7.3.*",
    "7.5.*",
    "9.1.1",
    "9.1.2",
    "9.1.3",
    "9.2.1",
    "9.2.2",
    "9.2.3",
    "10.*",
]

ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}
ACCEPTED_CLOSE = {"OK", "INFORMATIONAL"}

# How long the server may take to print its port.
STARTUP_DEADLINE_S = 60
# A whole kosoku run; the full suite takes seconds on loopback.
RUN_DEADLINE_S = 1800


def case_key(case_id: str) -> list[int]:
    return [int(p) for p in case_id.split(".")]


def start_server(binary: str, profile: str) -> tuple[subprocess.Popen[str], int]:
    """Starts ws-echo on a free port; returns the process and its port."""
    env = dict(os.environ, PORT="0", WS_ECHO_PROFILE=profile)
    proc = subprocess.Popen(
        ["nice", "-n", "19", binary],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    found: list[int] = []

    def read_port() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.match(r"listening on (\d+)", line)
            if m:
                found.append(int(m.group(1)))
                return

    reader = threading.Thread(target=read_port, daemon=True)
    reader.start()
    reader.join(STARTUP_DEADLINE_S)
    if not found:
        stop_server(proc)
        sys.exit(f"autobahn: ws-echo did not print its port within {STARTUP_DEADLINE_S} s")
    return proc, found[0]


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kosoku_version() -> str:
    return importlib.metadata.version("kosoku")


def cases_version() -> str:
    """The Autobahn TestSuite release kosoku vendors its cases from."""
    try:
        import kosoku._report_assets as assets

        m = re.search(r"autobahn-testsuite@(v[\w.]+)", assets.__doc__ or "")
        if m:
            return m.group(1)
    except ImportError:
        pass
    return "unknown"


def run_kosoku(port: int, args: list[str], raw: Path, parallelism: int) -> int:
    kosoku = Path(sys.executable).parent / "kosoku"
    cmd = ["nice", "-n", "19", str(kosoku), "-o", str(raw), "-p", str(parallelism)]
    cmd += args + [f"127.0.0.1:{port}"]
    print("autobahn:", " ".join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, timeout=RUN_DEADLINE_S)
    return done.returncode


def run_wstest(
    port: int, agent: str, cases: list[str], exclude: list[str], raw: Path, py2: str, site: str
) -> int:
    """Runs the classic runner (autobahntestsuite, Python 2) on the same cases."""
    raw.mkdir(parents=True)
    spec = {
        "outdir": str(raw),
        "servers": [{"agent": agent, "url": f"ws://127.0.0.1:{port}"}],
        "cases": cases,
        "exclude-cases": exclude,
        "exclude-agent-cases": {},
    }
    (raw / "spec.json").write_text(json.dumps(spec))
    # Its packages sit in a --prefix install whose .pth files (zope's
    # namespace) only count for a site directory.
    boot = (
        f"import site, sys; site.addsitedir({site!r}); "
        "sys.argv = ['wstest', '-m', 'fuzzingclient', '-s', sys.argv[1]]; "
        "from autobahntestsuite.wstest import run; run()"
    )
    cmd = ["nice", "-n", "19", py2, "-c", boot, str(raw / "spec.json")]
    print("autobahn: wstest -m fuzzingclient -s", raw / "spec.json", file=sys.stderr)
    with open(raw / "wstest.log", "w") as log:
        done = subprocess.run(cmd, timeout=RUN_DEADLINE_S, stdout=log, stderr=subprocess.STDOUT)
    return done.returncode


def summarize(
    name: str, profile: str, selection: str, raw: Path, out: Path, tool: str
) -> tuple[bool, str]:
    """Writes out/index.json and out/summary.txt; returns (passed, summary)."""
    index = json.loads((raw / "index.json").read_text())
    if len(index) != 1:
        raise SystemExit(f"autobahn: expected one agent in {raw}/index.json, got {list(index)}")
    (cases,) = index.values()
    ids = sorted(cases, key=case_key)
    behavior = collections.Counter(cases[i]["behavior"] for i in ids)
    behavior_close = collections.Counter(cases[i]["behaviorClose"] for i in ids)
    bad = [
        i
        for i in ids
        if cases[i]["behavior"] not in ACCEPTED or cases[i]["behaviorClose"] not in ACCEPTED_CLOSE
    ]
    passed = bool(ids) and not bad

    lines = [
        f"Autobahn WebSocket conformance: switchboard ws-echo, profile {profile}",
        f"date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"tool: {tool}",
        f"selection: {selection}",
        f"cases: {len(ids)}",
        "behavior: " + ", ".join(f"{k} {v}" for k, v in sorted(behavior.items())),
        "behaviorClose: " + ", ".join(f"{k} {v}" for k, v in sorted(behavior_close.items())),
        f"verdict: {'PASS' if passed else 'FAIL'}"
        + ("" if ids else " (no case ran)")
        + (f" ({len(bad)} case(s) not accepted: {', '.join(bad)})" if bad else ""),
        "",
        "Cases that are not OK/OK (kosoku's explanation; reasons in bench/autobahn/README.md):",
    ]
    not_ok = [i for i in ids if cases[i]["behavior"] != "OK" or cases[i]["behaviorClose"] != "OK"]
    for i in not_ok:
        c = cases[i]
        detail = json.loads((raw / c["reportfile"]).read_text())
        lines.append(
            f"  {i}: {c['behavior']} / {c['behaviorClose']}, "
            f"server close code {c.get('remoteCloseCode')}"
        )
        lines.append(f"    case: {detail.get('description', '')}")
        lines.append(f"    result: {detail.get('result', '')}")
        lines.append(f"    close: {detail.get('resultClose', '')}")
    if not not_ok:
        lines.append("  (none)")
    summary = "\n".join(lines) + "\n"

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    agent = f"switchboard ws-echo ({profile})"
    (out / "index.json").write_text(json.dumps({agent: {i: cases[i] for i in ids}}, indent=1) + "\n")
    (out / "summary.txt").write_text(summary)
    return passed, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True, help="the built ws-echo example")
    parser.add_argument("--quick", action="store_true", help="the CI subset only")
    parser.add_argument(
        "--profile",
        choices=["library", "server", "both"],
        default="both",
        help="which WebSocket configuration of ws-echo to test",
    )
    parser.add_argument("--parallelism", type=int, default=1, help="cases run at once (kosoku)")
    parser.add_argument(
        "--runner",
        choices=["kosoku", "wstest"],
        default="kosoku",
        help="kosoku, or the classic autobahntestsuite (needs --python2 and --py2-site)",
    )
    parser.add_argument("--python2", help="Python 2.7 for --runner wstest")
    parser.add_argument("--py2-site", help="site-packages of autobahntestsuite for --runner wstest")
    parser.add_argument("--reports", default=str(HERE / "reports"), help="where summaries go")
    args = parser.parse_args()

    if args.quick:
        include, exclude = QUICK_INCLUDE, []
        selection = "quick: " + " ".join(QUICK_INCLUDE)
    else:
        include, exclude = ["*"], FULL_EXCLUDE
        selection = "all cases except " + " ".join(FULL_EXCLUDE) + " (permessage-deflate)"
    if args.runner == "kosoku":
        tool = f"kosoku {kosoku_version()} (cases of autobahn-testsuite {cases_version()})"
        selection_args = [a for i in include if i != "*" for a in ("-i", i)]
        selection_args += [a for x in exclude for a in ("-x", x)]
    else:
        if not (args.python2 and args.py2_site):
            parser.error("--runner wstest needs --python2 and --py2-site")
        tool = "autobahntestsuite (wstest) 25.10.1 on Python 2.7"
    profiles = ["library", "server"] if args.profile == "both" else [args.profile]

    all_passed = True
    for profile in profiles:
        name = profile + ("-quick" if args.quick else "")
        if args.runner == "wstest":
            name += "-wstest"
        raw = ROOT / "target" / "autobahn" / name
        if raw.exists():
            shutil.rmtree(raw)
        proc, port = start_server(args.binary, profile)
        try:
            if args.runner == "kosoku":
                code = run_kosoku(port, selection_args, raw, args.parallelism)
            else:
                agent = f"switchboard ws-echo ({profile})"
                code = run_wstest(port, agent, include, exclude, raw, args.python2, args.py2_site)
            alive = proc.poll() is None
        finally:
            stop_server(proc)
        if not (raw / "index.json").exists():
            print(f"autobahn: {args.runner} wrote no report (exit {code})", file=sys.stderr)
            all_passed = False
            continue
        passed, summary = summarize(name, profile, selection, raw, Path(args.reports) / name, tool)
        print(summary)
        print(f"full report: {raw}/index.html", file=sys.stderr)
        if not alive:
            print("autobahn: ws-echo died during the run", file=sys.stderr)
            passed = False
        # kosoku exits 1 when a case fails; wstest exits 0 whatever happened.
        if args.runner == "wstest" and code != 0:
            print(f"autobahn: wstest exited {code}", file=sys.stderr)
            passed = False
        if args.runner == "kosoku" and passed != (code == 0):
            print(
                f"autobahn: kosoku exited {code} but the summary says {'PASS' if passed else 'FAIL'}",
                file=sys.stderr,
            )
            passed = False
        all_passed &= passed

    print(f"autobahn: {'PASS' if all_passed else 'FAIL'}", file=sys.stderr)
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
