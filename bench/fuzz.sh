#!/usr/bin/env bash
# Reruns the cargo-fuzz targets (fuzz/) for N minutes each, two at a time,
# under `nice -n 19` (the machine's cores are shared), then minimizes each
# target's corpus back into fuzz/corpus/<target>/ and prints, per target,
# the time, libFuzzer's execution count and whether it crashed.
#
#   bench/fuzz.sh                 # every target, 10 minutes each
#   bench/fuzz.sh -m 1 jwt        # one target, one minute
#   bench/fuzz.sh -m 10 -j 1      # one target at a time
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Working corpora and logs go to fuzz/corpus-raw/ and fuzz/logs/ (ignored
# by git); a crash leaves its input under fuzz/artifacts/<target>/.
set -euo pipefail

minutes=10
jobs=2
while getopts "m:j:" opt; do
    case $opt in
        m) minutes=$OPTARG ;;
        j) jobs=$OPTARG ;;
        *) echo "usage: $0 [-m minutes] [-j parallel] [target...]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))

cd "$(dirname "$0")/../fuzz"
# The bundled SQLite (the server's embedded database) defines a global
# twice under AddressSanitizer's ODR check, a false positive in C code
# the targets do not reach.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_odr_violation=0"
# The same build flags for build, run and cmin (release with debug
# assertions, so overflows are caught too), or cargo-fuzz rebuilds.
flags=(-O -a)
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

nice -n 19 cargo +nightly fuzz build "${flags[@]}"
python3 seeds.py
mkdir -p logs

run_one() {
    local t=$1
    mkdir -p "corpus-raw/$t" "corpus/$t"
    cp -rn "corpus/$t/." "corpus-raw/$t/"
    cp -rn "seeds/$t/." "corpus-raw/$t/"
    local start=$SECONDS rc=0
    nice -n 19 cargo +nightly fuzz run "${flags[@]}" "$t" "corpus-raw/$t" -- \
        -max_total_time=$((minutes * 60)) -print_final_stats=1 \
        >"logs/$t.log" 2>&1 || rc=$?
    echo "$t $((SECONDS - start)) $rc" >"logs/$t.result"
}

# At most $jobs targets at a time.
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
        wait -n || true
    done
    run_one "$t" &
done
wait

# Minimizes corpus-raw/<t> (libFuzzer's merge: the inputs that add
# coverage) and commits the best of it to corpus/<t>: greedy maximum
# coverage within 200 files and 200 KB (fuzz/select.py).
minimize() {
    local t=$1 bin="target/x86_64-unknown-linux-gnu/release/$1"
    rm -rf "corpus-min/$t" "logs/$t.merge" && mkdir -p "corpus-min/$t"
    nice -n 19 "$bin" -merge=1 -merge_control_file="logs/$t.merge" \
        "corpus-min/$t" "corpus-raw/$t" >"logs/$t.cmin.log" 2>&1
    python3 select.py "logs/$t.merge" "corpus/$t"
    rm -rf "corpus-raw/$t" && mv "corpus-min/$t" "corpus-raw/$t"
}

printf '%-20s %8s %14s %s\n' target seconds executions result
for t in "${targets[@]}"; do
    read -r _ secs rc <"logs/$t.result"
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    if [ "$rc" = 0 ]; then result="no crash"; else result="CRASH (exit $rc, see fuzz/logs/$t.log and fuzz/artifacts/$t/)"; fi
    printf '%-20s %8s %14s %s\n' "$t" "$secs" "${execs:-?}" "$result"
    if [ "$rc" = 0 ]; then
        minimize "$t"
    fi
done
