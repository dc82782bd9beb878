#!/usr/bin/env bash
# Autobahn WebSocket conformance suite against Switchboard's WebSocket stack.
#
#   bench/autobahn/run.sh            every case except 12.x/13.x (compression)
#   bench/autobahn/run.sh --quick    a subset that runs in seconds (CI)
#   bench/autobahn/run.sh --profile library|server|both   (default both)
#   bench/autobahn/run.sh --runner wstest  the classic runner (Python 2.7)
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

# --runner wstest: the classic autobahntestsuite as a cross-check. It needs
# a Python 2.7 ($PYTHON2, pyenv's 2.7, python2.7 or python2) and installs
# itself into bench/autobahn/.py2.
extra=()
for arg in "$@"; do
    if [ "$arg" = "wstest" ] || [ "$arg" = "--runner=wstest" ]; then
        py2=""
        for c in "${PYTHON2:-}" "$HOME"/.pyenv/versions/2.7*/bin/python python2.7 python2; do
            if [ -n "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
                py2="$(command -v "$c")"
                break
            fi
        done
        [ -n "$py2" ] || { echo "autobahn: --runner wstest needs Python 2.7 (set PYTHON2)" >&2; exit 1; }
        site="$here/.py2/lib/python2.7/site-packages"
        if ! "$py2" -c "import site; site.addsitedir('$site'); import autobahntestsuite" 2>/dev/null; then
            echo "autobahn: installing autobahntestsuite 25.10.1 for $py2 into $here/.py2" >&2
            # Building its dependencies needs setuptools, from the same prefix.
            for pkg in "setuptools==44.0.0" "autobahntestsuite==25.10.1"; do
                PYTHONPATH="$site" "$py2" -m pip install --quiet --disable-pip-version-check \
                    --no-warn-script-location --prefix "$here/.py2" "$pkg"
            done
        fi
        extra=(--python2 "$py2" --py2-site "$site")
    fi
done

echo "autobahn: building the ws-echo example" >&2
(cd "$root" && nice -n 19 cargo build --quiet --release -p switchboard --example ws-echo)

exec "$venv/bin/python" "$here/run.py" --binary "$root/target/release/examples/ws-echo" "${extra[@]}" "$@"
