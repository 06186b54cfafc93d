#!/usr/bin/env bash
# Import benchmark: `snodo import` of an N-row MyPay 1_4 flow against the floor of a bare
# `sqlite3 .import` of the same CSV, on this machine, in the same run.
#
#   ops/bench/import.sh [N]          (default N = 1000000; run from anywhere in the repo)
#
# Steps, all in a fresh temporary directory (removed at the end; KEEP=1 keeps it):
#   1. cargo build --release (SKIP_BUILD=1 skips it; SNODO_BIN=path uses another binary)
#   2. ops/bench/gen_flow.py: the N-row flow (zip, ~2% bad rows, M/A rows) and its seed flow
#   3. snodo import of the seed flow (untimed), then of the main flow (timed: wall, peak RSS)
#   4. the floor: sqlite3 .import of the unzipped CSV into a bare table (timed)
# Targets: >= 250 000 rows/s, <= 2x the floor, <= 200 MiB peak RSS. Missing a target still exits
# 0 (this is a report); failing to build, generate or import exits non-zero.
set -euo pipefail

N="${1:-1000000}"
if ! [[ "$N" =~ ^[0-9]+$ ]] || [ "$N" -lt 1 ]; then
    echo "usage: $0 [ROWS]   (a positive number of rows, default 1000000)" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

for tool in python3 cargo; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool is not installed" >&2
        exit 1
    fi
done
if ! command -v sqlite3 >/dev/null 2>&1; then
    echo "error: sqlite3 is not installed; the benchmark needs it for the floor measurement." >&2
    echo "       Run ops/setup.sh (it installs sqlite3), then run this script again." >&2
    exit 1
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/snodo-bench.XXXXXX")"
cleanup() {
    if [ "${KEEP:-0}" = "1" ]; then
        echo "kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT

log() { echo "== $*" >&2; }

# ---- 1. build --------------------------------------------------------------------------------
BIN="${SNODO_BIN:-$ROOT/target/release/snodo}"
if [ "${SKIP_BUILD:-0}" != "1" ]; then
    log "cargo build --release"
    if ! cargo build --release >&2; then
        echo "error: cargo build --release failed" >&2
        exit 1
    fi
fi
if [ ! -x "$BIN" ]; then
    echo "error: $BIN does not exist" >&2
    exit 1
fi

# ---- configuration: demo entities, data in the temp dir --------------------------------------
cp config/demo.toml "$TMP/snodo.toml"
export SNODO__HUB__DATA_DIR="$TMP/var"
TAXONOMY="$ROOT/adapters/specs/mypay/tassonomia.csv"
if [ -f "$TAXONOMY" ]; then
    SNODO_TAXONOMY_FILE="$(cd "$(dirname "$TAXONOMY")" && pwd)/$(basename "$TAXONOMY")"
    export SNODO_TAXONOMY_FILE
else
    log "warning: $TAXONOMY not found; taxonomy codes are checked by pattern only"
fi
mkdir -p "$TMP/var" "$TMP/out" "$TMP/flows"

# ---- 2. generate -----------------------------------------------------------------------------
log "generating $N rows (1_4, zip, with seed flow)"
GEN_JSON="$(python3 ops/bench/gen_flow.py --entity c_g224 --iuf BENCH001 --rows "$N" \
    --version 1_4 --seed 1 --seed-flow --zip --out "$TMP/flows")"
json_field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print("" if v is None else v)' "$GEN_JSON" "$1"; }
FLOW="$(json_field file)"
SEED_FLOW="$(json_field seed_file)"
BAD_ROWS="$(json_field bad_rows)"
EXPECT_REJ="$(json_field expected_rejected_at_least)"

# Runs "$@" with stdout/stderr to $TMP/<name>.out/.err; sets ELAPSED (s) and RSS_KB.
# Peak RSS from GNU time -v when present, else from getrusage(RUSAGE_CHILDREN) in python.
measure() {
    local name="$1"; shift
    local tfile="$TMP/$name.time" rc=0 t0 t1
    t0="$(date +%s%N)"
    if [ -x /usr/bin/time ] && /usr/bin/time -v true >/dev/null 2>&1; then
        /usr/bin/time -v -o "$tfile" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" || rc=$?
    else
        python3 - "$tfile" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" <<'PY' || rc=$?
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as fh:
    fh.write("Maximum resident set size (kbytes): %d\n"
             % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc)
PY
    fi
    t1="$(date +%s%N)"
    ELAPSED="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
    RSS_KB="$(awk -F': *' '/Maximum resident set size/ { print $2 }' "$tfile" 2>/dev/null || true)"
    RSS_KB="${RSS_KB:-0}"
    return "$rc"
}

SNODO_IMPORT=("$BIN" import -c "$TMP/snodo.toml" --entity c_g224 --out "$TMP/out")

# ---- 3. snodo --------------------------------------------------------------------------------
log "snodo import of the seed flow $(basename "$SEED_FLOW") (untimed)"
if ! "${SNODO_IMPORT[@]}" "$SEED_FLOW" >"$TMP/seed.out" 2>"$TMP/seed.err"; then
    cat "$TMP/seed.err" "$TMP/seed.out" >&2
    echo "error: snodo import of the seed flow failed" >&2
    exit 1
fi
SEED_LAST="$(tail -n 1 "$TMP/seed.out")"
log "seed: $SEED_LAST"

# Each timed side runs RUNS times (default 3) from the same starting state; the median counts,
# as this machine's disk timings vary from run to run.
RUNS="${RUNS:-3}"
median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
cp -a "$TMP/var" "$TMP/var.seeded"
SNODO_TIMES=()
SNODO_RSS_KB=0
for run in $(seq "$RUNS"); do
    rm -rf "$TMP/var" "$TMP/out" && cp -a "$TMP/var.seeded" "$TMP/var"
    log "snodo import of $(basename "$FLOW") (timed, run $run of $RUNS)"
    # Every timed run starts with no dirty pages pending from the steps before it.
    sync
    if ! measure snodo "${SNODO_IMPORT[@]}" "$FLOW"; then
        cat "$TMP/snodo.err" "$TMP/snodo.out" >&2
        echo "error: snodo import failed" >&2
        exit 1
    fi
    SNODO_TIMES+=("$ELAPSED")
    [ "$RSS_KB" -gt "$SNODO_RSS_KB" ] && SNODO_RSS_KB="$RSS_KB"
done
SNODO_SECS="$(median "${SNODO_TIMES[@]}")"
SNODO_LAST="$(tail -n 1 "$TMP/snodo.out")"
if [ "${PROFILE:-0}" = 1 ]; then
    # One more run, untimed, sampled by perf (ops/bench/common.sh).
    . "$ROOT/ops/bench/common.sh"
    rm -rf "$TMP/var" "$TMP/out" && cp -a "$TMP/var.seeded" "$TMP/var"
    log "snodo import under perf (untimed)"
    "${SNODO_IMPORT[@]}" "$FLOW" >"$TMP/profiled.out" 2>&1 &
    profile_start $! import
    wait $! || true
    profile_stop
fi

# ---- 4. the floor: sqlite3 .import of the same CSV -------------------------------------------
CSV="$TMP/floor.csv"
python3 - "$FLOW" "$CSV" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(z.namelist()[0]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
printf '.mode csv\n.separator ";"\n.import %s t\n' "$CSV" >"$TMP/floor.sql"
FLOOR_TIMES=()
for run in $(seq "$RUNS"); do
    rm -f "$TMP/floor.db"
    log "floor: sqlite3 .import of the unzipped CSV (timed, run $run of $RUNS)"
    sync
    # .import warns (on stderr) about the deliberately short rows and fills them with NULLs.
    measure floor sh -c 'sqlite3 "$1" <"$2"' sh "$TMP/floor.db" "$TMP/floor.sql" || true
    FLOOR_TIMES+=("$ELAPSED")
done
FLOOR_SECS="$(median "${FLOOR_TIMES[@]}")"
FLOOR_ROWS="$(sqlite3 "$TMP/floor.db" 'SELECT count(*) FROM t' 2>/dev/null || echo 0)"
if [ "$FLOOR_ROWS" != "$N" ]; then
    head -n 5 "$TMP/floor.err" >&2 || true
    echo "error: the floor import loaded $FLOOR_ROWS rows, not $N" >&2
    exit 1
fi

# ---- report ----------------------------------------------------------------------------------
awk -v n="$N" -v s="$SNODO_SECS" -v f="$FLOOR_SECS" -v kb="$SNODO_RSS_KB" \
    -v st="${SNODO_TIMES[*]}" -v ft="${FLOOR_TIMES[*]}" \
    -v last="$SNODO_LAST" -v seed="$SEED_LAST" -v bad="$BAD_ROWS" -v expect="$EXPECT_REJ" '
function mark(ok) { return ok ? "ok" : "MISSED" }
BEGIN {
    rps = (s > 0) ? n / s : 0
    frps = (f > 0) ? n / f : 0
    ratio = (f > 0) ? s / f : 0
    mib = kb / 1024
    printf "rows                 %d (bad rows generated: %d)\n", n, bad
    printf "snodo                %.3f s   %.0f rows/s   (median; runs: %s)\n", s, rps, st
    printf "floor (sqlite3)      %.3f s   %.0f rows/s   (median; runs: %s)\n", f, frps, ft
    printf "ratio snodo/floor    %.2f\n", ratio
    printf "peak RSS (snodo)     %.1f MiB\n", mib
    printf "seed import          %s\n", seed
    printf "snodo import         %s\n", last
    printf "targets:\n"
    printf "  >= 250000 rows/s   %-7s (%.0f)\n", mark(rps >= 250000), rps
    printf "  <= 2x floor        %-7s (%.2fx)\n", mark(ratio <= 2), ratio
    printf "  <= 200 MiB RSS     %-7s (%.1f MiB)\n", mark(mib <= 200), mib
    if (match(last, /rejected=[0-9]+/)) {
        rej = substr(last, RSTART + 9, RLENGTH - 9) + 0
        if (rej < expect) printf "WARNING: rejected=%d but at least %d rows are bad\n", rej, expect
    }
    if (match(last, /accepted=[0-9]+/)) {
        acc = substr(last, RSTART + 9, RLENGTH - 9) + 0
        if (acc < n - bad) printf "note: accepted=%d, %d rows were generated valid\n", acc, n - bad
    }
}'
