#!/usr/bin/env bash
# Autobahn WebSocket conformance suite against Switchboard's WebSocket stack.
#
#   bench/autobahn/run.sh            every case except 12.x/13.x (compression)
#   bench/autobahn/run.sh --quick    a subset that runs in seconds (CI)
#   bench/autobahn/run.sh --profile library|server|both   (default both)
#
# Builds the `ws-echo` example, installs the fuzzing client (kosoku, from
# PyPI) into bench/autobahn/.venv, then runs bench/autobahn/run.py, which
# starts the echo server, drives the cases and writes the reports under
# bench/autobahn/reports/. Exits non-zero if any case is not OK,
# NON-STRICT or INFORMATIONAL (see README.md in this folder).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
kosoku_version="0.1.0"

if ! "$venv/bin/python" -c "import kosoku" 2>/dev/null \
    || [ "$("$venv/bin/python" -m pip show kosoku 2>/dev/null | sed -n 's/^Version: //p')" != "$kosoku_version" ]; then
    echo "autobahn: installing kosoku $kosoku_version into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "kosoku==$kosoku_version"
fi

echo "autobahn: building the ws-echo example" >&2
(cd "$root" && nice -n 19 cargo build --quiet --release -p switchboard --example ws-echo)

exec "$venv/bin/python" "$here/run.py" --binary "$root/target/release/examples/ws-echo" "$@"
