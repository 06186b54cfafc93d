#!/usr/bin/env bash
# The three hot paths and the idle footprint in one run, each beside its floor measured in the
# same run: import (ops/bench/import.sh), the node's SOAP calls (soap.sh), receipts stored and
# fanned out (fanout.sh, whole payments and receipts only), idle and start-up (idle.sh).
# Prints one table and writes the same as JSON to target/bench/all.json, with each script's own
# output beside it (target/bench/<name>.txt).
#
#   ops/bench/all.sh            (about 7 minutes on two cores, after one release build)
#   QUICK=1 ops/bench/all.sh    (smaller sizes, about 90 s: a check that everything runs)
#
# Environment: IMPORT_ROWS (1000000), SOAP_POSITIONS (1000000), SOAP_SECONDS (30),
# FANOUT_SECONDS (60), SKIP_BUILD=1 (reuse target/release/snodo). Needs ops/setup.sh first
# (wrk, sqlite3). Exits non-zero only when a benchmark could not run; a missed target is a
# result, marked MISSED.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [ "${QUICK:-0}" = 1 ]; then
    : "${IMPORT_ROWS:=100000}" "${SOAP_POSITIONS:=100000}" "${SOAP_SECONDS:=5}" "${FANOUT_SECONDS:=10}" "${IDLE_RUNS:=2}"
    export POSITIONS="${POSITIONS:-50000}" COUNT="${COUNT:-20000}" IDLE="${IDLE:-3}" RUNS="${RUNS:-1}"
fi
IMPORT_ROWS="${IMPORT_ROWS:-1000000}"
SOAP_POSITIONS="${SOAP_POSITIONS:-1000000}"
SOAP_SECONDS="${SOAP_SECONDS:-30}"
FANOUT_SECONDS="${FANOUT_SECONDS:-60}"
IDLE_RUNS="${IDLE_RUNS:-5}"
OUT="$ROOT/target/bench"
mkdir -p "$OUT"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "== cargo build --release" >&2
    cargo build --release --quiet
fi
export SKIP_BUILD=1

bench() {
    local name="$1"; shift
    echo "== $name: $*" >&2
    local t0; t0=$(date +%s)
    if ! env "$@" >"$OUT/$name.txt" 2>"$OUT/$name.err"; then
        cat "$OUT/$name.txt" "$OUT/$name.err" >&2
        echo "error: $name failed (output in $OUT/$name.txt and .err)" >&2
        exit 1
    fi
    echo "   done in $(( $(date +%s) - t0 )) s" >&2
}
bench import ops/bench/import.sh "$IMPORT_ROWS"
bench soap ops/bench/soap.sh "$SOAP_POSITIONS" "$SOAP_SECONDS"
bench fanout ops/bench/fanout.sh "$FANOUT_SECONDS"
bench receipts RECEIPTS_ONLY=1 ops/bench/fanout.sh "$FANOUT_SECONDS"
bench idle ops/bench/idle.sh "$IDLE_RUNS"

python3 - "$OUT" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'PY'
import datetime, json, os, re, sys

out, commit = sys.argv[1], sys.argv[2]
text = {n: open(os.path.join(out, n + ".txt")).read() for n in ("import", "soap", "fanout", "receipts", "idle")}

def num(pattern, name):
    m = re.search(pattern, text[name], re.M)
    if not m:
        sys.exit(f"error: cannot read {pattern!r} in {out}/{name}.txt")
    return float(m.group(1))

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown")
machine = {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)}

imp_rps = num(r"^snodo\s+[\d.]+ s\s+(\d+) rows/s", "import")
imp_floor = num(r"^floor \(sqlite3\)\s+[\d.]+ s\s+(\d+) rows/s", "import")
imp_ratio = num(r"^ratio snodo/floor\s+([\d.]+)", "import")
imp_rss = num(r"^peak RSS \(snodo\)\s+([\d.]+)", "import")
floor_rps = num(r"^floor /healthz\s+([\d.]+) req/s", "soap")
verify_rps = num(r"^verify\s+([\d.]+) req/s", "soap")
get_rps = num(r"^getPaymentV2\s+([\d.]+) req/s", "soap")
get_p99 = re.search(r"^getPaymentV2 .*p99 (\S+)", text["soap"], re.M).group(1)
fixed_p99 = num(r"p99 <= 5 ms at 1000 req/s \w+ \(([\d.]+) ms\)", "soap")

def fan(name):
    return {
        "receipts_per_s": num(r"receipts_per_s=(\d+)", name),
        "deliveries_per_s": num(r"deliveries_per_s=(\d+)", name),
        "p99_ms": num(r"stored_to_delivered p50_ms=[\d.na]+ p99_ms=([\d.]+)", name),
        "lost": num(r"^lost=(\d+)", name),
        "rss_mib": num(r"^hub peak RSS ([\d.]+)", name),
    }
whole, only = fan("fanout"), fan("receipts")
ready = num(r"^hub \(embedded demo\)\s+ready (\d+) ms", "idle")
ready_floor = num(r"^floor \(receiver\)\s+ready (\d+) ms", "idle")
idle_rss = num(r"^hub \(embedded demo\).*idle RSS ([\d.]+) MiB", "idle")
idle_floor = num(r"^floor \(receiver\).*idle RSS ([\d.]+) MiB", "idle")

rows = [
    ("import", f"{imp_rps:.0f} rows/s, peak RSS {imp_rss:.0f} MiB", f"sqlite3 .import {imp_floor:.0f} rows/s",
     f"{imp_ratio:.2f}x time", ">= 250000 rows/s, <= 2x, <= 200 MiB",
     imp_rps >= 250000 and imp_ratio <= 2 and imp_rss <= 200),
    ("soap verify", f"{verify_rps:.0f} req/s, p99 {fixed_p99} ms at 1000/s", f"/healthz {floor_rps:.0f} req/s",
     f"{verify_rps / floor_rps:.2f}x", ">= 0.5x floor", verify_rps / floor_rps >= 0.5),
    ("soap getPaymentV2", f"{get_rps:.0f} req/s, p99 {get_p99}", f"/healthz {floor_rps:.0f} req/s",
     f"{get_rps / floor_rps:.2f}x", "(no target; reported)", True),
    ("receipts, whole payments", f"{whole['receipts_per_s']:.0f}/s stored, {whole['deliveries_per_s']:.0f}/s delivered, p99 {whole['p99_ms']:.0f} ms, lost {whole['lost']:.0f}",
     "stored/s (deliveries keep up)", f"{whole['deliveries_per_s'] / max(whole['receipts_per_s'], 1):.2f}x",
     ">= 3000/s, p99 <= 1 s, 0 lost",
     whole["receipts_per_s"] >= 3000 and whole["p99_ms"] <= 1000 and whole["lost"] == 0),
    ("receipts only (store path)", f"{only['receipts_per_s']:.0f}/s stored, {only['deliveries_per_s']:.0f}/s delivered, p99 {only['p99_ms']:.0f} ms, lost {only['lost']:.0f}",
     "stored/s (deliveries keep up)", f"{only['deliveries_per_s'] / max(only['receipts_per_s'], 1):.2f}x",
     ">= 3000/s, p99 <= 1 s, 0 lost",
     only["receipts_per_s"] >= 3000 and only["p99_ms"] <= 1000 and only["lost"] == 0),
    ("idle and start-up", f"ready {ready:.0f} ms, idle RSS {idle_rss:.1f} MiB", f"snodo receiver: {ready_floor:.0f} ms, {idle_floor:.1f} MiB",
     f"{ready / ready_floor:.1f}x, {idle_rss / idle_floor:.1f}x", "<= 300 ms, <= 50 MiB", ready <= 300 and idle_rss <= 50),
]
today = datetime.date.today().isoformat()
print(f"{today}  commit {commit}  {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB")
print("| path | measured | floor (same run) | ratio | target | verdict |")
print("|---|---|---|---|---|---|")
for path, measured, floor, ratio, target, ok in rows:
    print(f"| {path} | {measured} | {floor} | {ratio} | {target} | {'met' if ok else 'MISSED'} |")
json.dump({
    "date": today, "commit": commit, "machine": machine,
    "import": {"rows_per_s": imp_rps, "floor_rows_per_s": imp_floor, "ratio": imp_ratio, "peak_rss_mib": imp_rss},
    "soap": {"floor_req_per_s": floor_rps, "verify_req_per_s": verify_rps, "verify_ratio": verify_rps / floor_rps,
             "verify_p99_ms_at_1000": fixed_p99, "get_payment_v2_req_per_s": get_rps, "get_payment_v2_ratio": get_rps / floor_rps},
    "receipts_whole_payments": whole, "receipts_only": only,
    "idle": {"ready_ms": ready, "floor_ready_ms": ready_floor, "idle_rss_mib": idle_rss, "floor_idle_rss_mib": idle_floor},
    "verdicts": {path: ("met" if ok else "missed") for path, _, _, _, _, ok in rows},
}, open(os.path.join(out, "all.json"), "w"), indent=2)
print(f"(JSON: {out}/all.json)")
PY
