#!/usr/bin/env bash
# Runs the whole test suite: Rust unit and integration tests (the Redis
# adapter's against the Redis at 127.0.0.1:6379, plus redis-server
# processes of their own on other ports; the fuzz corpora replayed), the
# Autobahn WebSocket suite's quick subset (kosoku from PyPI, in a venv of
# its own), the benchmark and soak smoke runs, the
# interop tests that drive the official socket.io-client (Node) against the
# example servers, the cluster tests that mix Node socket.io servers (with
# the official Redis adapters) and Rust nodes in one cluster, then the
# end-to-end tests of the `switchboard` binary with real peers
# (socket.io-client, ws, eventsource) and a real browser (playwright-core
# driving Debian's Chromium), and the JavaScript client package
# (clients/js). Installs what it needs when missing: the Node packages (npm
# ci), Redis and Chromium (apt-get), kosoku (pip, into bench/autobahn/.venv).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node and npm are required for the interop tests" >&2
  exit 1
fi
for dir in tests/interop tests/cluster tests/server clients/js crates/client/tests/node; do
  if [ ! -f "$dir/node_modules/.package-lock.json" ] ||
     [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    npm ci --prefix "$dir" --no-audit --no-fund
  fi
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "== installing Debian's Redis (redis-server, redis-cli) for the cluster tests"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
export REDIS_URL
if ! redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1; then
  echo "== starting a Redis server at $REDIS_URL for the cluster tests"
  redis-server --daemonize yes --bind 127.0.0.1 --port "${REDIS_URL##*:}" --save "" --appendonly no >/dev/null
  for _ in $(seq 50); do redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
if ! command -v pkg-config >/dev/null || ! pkg-config --exists openssl; then
  echo "== installing OpenSSL's headers for rust_socketio (the client benchmark's peer)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pkg-config libssl-dev >/dev/null
fi
CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"
export CHROMIUM_PATH
if [ ! -x "$CHROMIUM_PATH" ]; then
  echo "== installing Debian's Chromium for the browser tests"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

echo "== cargo test (workspace)"
cargo build --workspace --bins --examples
cargo test --workspace

echo "== Autobahn WebSocket conformance, quick subset (ws-echo on the library's and the server's WebSocket configuration)"
bench/autobahn/run.sh --quick

echo "== benchmark smoke run (tiny N; checks that every server and scenario still works)"
python3 bench/run.py --smoke

echo "== publish benchmark smoke run (the switchboard server: acked publications through the HTTP API and /ws)"
python3 bench/publish.py --smoke

echo "== cluster benchmark smoke run (two nodes on a Redis of its own, every server and adapter mode; recovery on and off)"
python3 bench/cluster.py --smoke

echo "== soak smoke run (300 connections over the three protocols for a minute, churn, paused readers; fails on any lost acknowledged publication)"
python3 bench/soak.py --smoke --server target/debug/switchboard

echo "== client benchmark smoke run (switchboard-client, rust_socketio and the Node client echoing with acks)"
python3 bench/clients.py --smoke

echo "== interop: official socket.io-client against the examples"
node --test --test-concurrency=1 tests/interop/

echo "== cluster: Node socket.io servers (official Redis adapters) and Rust nodes in one cluster"
node --test --test-concurrency=1 tests/cluster/

echo "== end to end: the switchboard binary with real peers and a real browser"
node --test --test-concurrency=1 tests/server/

echo "== @switchboard/client (clients/js): the committed web copy, types, size, unit and browser tests"
npm run check:web --prefix clients/js
npm run typecheck --prefix clients/js
npm run size --prefix clients/js
npm test --prefix clients/js
npm run test:browser --prefix clients/js
