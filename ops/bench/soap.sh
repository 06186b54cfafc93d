#!/usr/bin/env bash
# SOAP benchmark: with N positions in the store (default 1 000 000), wrk drives
# paVerifyPaymentNotice and then paGetPaymentV2 at concurrency 32 for D seconds (default 30);
# in the same run, the same load hits the same server's trivial /healthz (the floor).
# Prints req/s, latency percentiles, the ratio to the floor and the hub's peak RSS.
#
#   ops/bench/soap.sh [N] [D]       (SKIP_BUILD=1 reuses target/release/snodo; KEEP=1 keeps the dir)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
# shellcheck source=ops/bench/common.sh
. "$ROOT/ops/bench/common.sh"
N="${1:-1000000}"
D="${2:-30}"
ops/setup.sh >/dev/null
command -v wrk >/dev/null || { echo "wrk is missing: run ops/setup.sh" >&2; exit 1; }
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet
BIN="$ROOT/target/release/snodo"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/snodo-soap.XXXXXX")"
HUB=""
cleanup() { [ -n "$HUB" ] && kill "$HUB" 2>/dev/null; [ "${KEEP:-0}" = 1 ] && echo "kept $TMP" || rm -rf "$TMP"; }
trap cleanup EXIT
log() { echo "== $*" >&2; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cp config/demo.toml "$TMP/snodo.toml"
export SNODO__HUB__DATA_DIR="$TMP/var" SNODO__HTTP__LISTEN="127.0.0.1:$PORT" SNODO_LOG=warn
TAXONOMY="$ROOT/adapters/specs/mypay/tassonomia.csv"
[ -f "$TAXONOMY" ] && export SNODO_TAXONOMY_FILE="$TAXONOMY"

log "generating and importing $N positions (untimed)"
python3 ops/bench/gen_flow.py --entity c_g224 --iuf SOAPBENCH --rows "$N" --bad-ratio 0 --out "$TMP/flows" >/dev/null
"$BIN" import -c "$TMP/snodo.toml" --entity c_g224 --out "$TMP/out" "$TMP/flows/c_g224-SOAPBENCH-1_4.csv" | tail -n 1 >&2
# Notice numbers of aux digit 3 are "3" + the IUV: take 100 000 active ones at random.
sqlite3 "$TMP/var/snodo.db" "SELECT '3' || iuv FROM positions WHERE status = 'active' AND length(iuv) = 17 ORDER BY random() LIMIT 100000" >"$TMP/notices.txt"
log "$(wc -l <"$TMP/notices.txt") notice numbers sampled"

"$BIN" run -c "$TMP/snodo.toml" >"$TMP/hub.log" 2>&1 &
HUB=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

export NOTICES="$TMP/notices.txt" ID_PA=00644060287 BROKER=80007580279 STATION=80007580279_01
run_wrk() { wrk -t2 -c32 -d"${D}s" --latency "$@" 2>&1; }
summary() { # name, wrk output
  awk -v name="$1" '
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = $2 } /^ +90%/ { p90 = $2 } /^ +99%/ { p99 = $2 }
    /Non-2xx/ { bad = $NF }
    END { printf "%-14s %10.0f req/s   p50 %-8s p90 %-8s p99 %-8s non-2xx %s\n", name, rps, p50, p90, p99, (bad == "" ? 0 : bad) }'
}
log "floor: GET /healthz, c=32, ${D}s"
FLOOR=$(run_wrk "http://127.0.0.1:$PORT/healthz")
log "paVerifyPaymentNotice, c=32, ${D}s"
profile_start "$HUB" soap-verify
VERIFY=$(OPERATION=verify run_wrk -s ops/bench/soap.lua "http://127.0.0.1:$PORT")
profile_stop
log "paGetPaymentV2, c=32, ${D}s"
profile_start "$HUB" soap-getPaymentV2
GETPAY=$(OPERATION=getPaymentV2 run_wrk -s ops/bench/soap.lua "http://127.0.0.1:$PORT")
profile_stop
log "paVerifyPaymentNotice at a fixed 1 000 req/s for ${D}s (snodo sim --rate)"
sed 's/^/00644060287;/' "$TMP/notices.txt" >"$TMP/sim-notices.txt"
FIXED=$("$BIN" sim -c "$TMP/snodo.toml" --url "http://127.0.0.1:$PORT" --notices "$TMP/sim-notices.txt" \
  --verify-only --rate 1000 --count $((1000 * D)) --concurrency 32 2>&1)
RSS=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$HUB/status")

echo "positions in store   $N"
echo "$FLOOR"  | summary "floor /healthz"
echo "$VERIFY" | summary "verify"
echo "$GETPAY" | summary "getPaymentV2"
f=$(echo "$FLOOR" | awk '/Requests\/sec/ { print $2 }')
v=$(echo "$VERIFY" | awk '/Requests\/sec/ { print $2 }')
g=$(echo "$GETPAY" | awk '/Requests\/sec/ { print $2 }')
echo "$FIXED" | awk '/^paVerifyPaymentNotice calls=/ { print "verify @1000/s     " $2 " " $3 " " $4 "   " $6 " " $7 " " $8 " " $9 }'
P99=$(echo "$FIXED" | awk '/^paVerifyPaymentNotice calls=/ { for (i = 1; i <= NF; i++) if ($i ~ /^p99_ms=/) { sub("p99_ms=", "", $i); print $i } }')
awk -v f="$f" -v v="$v" -v g="$g" -v rss="$RSS" -v p99="$P99" 'BEGIN {
  printf "ratio to floor       verify %.2f   getPaymentV2 %.2f\n", v / f, g / f
  printf "hub peak RSS         %s MiB\n", rss
  printf "targets: >= 10000 verify/s %s; p99 <= 5 ms at 1000 req/s %s (%s ms); >= 0.5x floor %s\n", (v >= 10000 ? "ok" : "MISSED"), (p99 != "" && p99 + 0 <= 5 ? "ok" : "MISSED"), p99, (v / f >= 0.5 ? "ok" : "MISSED")
}'
