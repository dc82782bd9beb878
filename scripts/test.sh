#!/usr/bin/env bash
# Runs the whole test suite: Rust unit and integration tests, the benchmark
# smoke run, the interop tests that drive the official socket.io-client
# (Node) against the example servers, then the end-to-end tests of the
# `switchboard` binary with real peers (socket.io-client, ws, eventsource)
# and a real browser (playwright-core driving Debian's Chromium). Installs
# what it needs when missing: the Node packages (npm ci) and Chromium
# (apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node and npm are required for the interop tests" >&2
  exit 1
fi
for dir in tests/interop tests/server; do
  if [ ! -f "$dir/node_modules/.package-lock.json" ] ||
     [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    npm ci --prefix "$dir" --no-audit --no-fund
  fi
done
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
export CHROMIUM_PATH
if [ ! -x "$CHROMIUM_PATH" ]; then
  echo "== installing Debian's Chromium for the browser tests"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

echo "== cargo test (workspace)"
cargo build --workspace --bins --examples
cargo test --workspace

echo "== benchmark smoke run (tiny N; checks that every server and scenario still works)"
python3 bench/run.py --smoke

echo "== interop: official socket.io-client against the examples"
node --test --test-concurrency=1 tests/interop/

echo "== end to end: the switchboard binary with real peers and a real browser"
node --test --test-concurrency=1 tests/server/
