#!/usr/bin/env bash
# Runs the whole test suite: Rust unit and integration tests, the benchmark
# smoke run, then the interop tests that drive the official socket.io-client
# (Node) against the example servers. Installs the Node packages it needs
# (npm ci) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node and npm are required for the interop tests" >&2
  exit 1
fi
if [ ! -f tests/interop/node_modules/.package-lock.json ] ||
   [ tests/interop/package-lock.json -nt tests/interop/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/interop --no-audit --no-fund
fi

echo "== cargo test (workspace)"
cargo build --workspace --examples
cargo test --workspace

echo "== benchmark smoke run (tiny N; checks that every server and scenario still works)"
python3 bench/run.py --smoke

echo "== interop: official socket.io-client against the examples"
node --test --test-concurrency=1 tests/interop/
