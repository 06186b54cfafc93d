#!/usr/bin/env bash
# Settlement flows (FdR) benchmark: one flow of N payments (default 100 000) published and served
# by `snodo sim --serve`, pulled by `snodo reports pull` over FdR 3 REST and over the legacy SOAP,
# each pull storing the flow and linking every row against the N receipts in the store. Floors
# in the same run: `curl` fetching the same REST pages the hub fetches, and `xmllint --stream
# --noout` of the same FlussoRiversamento XML file the SOAP answer carries. Prints each side's
# median time, the ratio to its floor and the pull's peak RSS (/usr/bin/time -v).
#
#   ops/bench/reports.sh [N]        (run from anywhere in the repo)
#
# Environment: RUNS (timed runs of each side, median reported; default 3), PAGE_SIZE (REST
# payments per page, as [pagopa.fdr] page_size; default 1000), SKIP_BUILD=1 (reuse the release
# binary), SNODO_BIN=path (another binary; default $CARGO_TARGET_DIR/release/snodo or
# target/release/snodo), KEEP=1 (keep the temp dir).
#
# Steps, in a fresh temporary directory (removed at the end):
#   1. cargo build --release (unless SKIP_BUILD=1)
#   2. N + 10 % positions of Comune di Padova (gen_flow.py, 1_3: one transfer each), imported
#   3. one of them paid for real: `snodo run`, then `snodo sim` pays it (verify, activation,
#      paSendRTV2) recording the simulator's ledger; the hub stops
#   4. N - 1 more paid by gen_receipts.py: clones of that receipt (ids, notice, IUV, amounts
#      replaced in its XML and parsed request) and their ledger lines, same PSP and day
#   5. `snodo sim --publish-flows` settles the ledger: one flow, N rows; the store is kept as
#      the seed every pull starts from (a copy each run: N receipts, no flow)
#   6. `snodo sim --serve` serves it; floors: curl of the list, the flow and its payments pages
#      (REST), xmllint --stream --noout of its XML file (SOAP)
#   7. for REST and SOAP, RUNS times: a fresh copy of the seed store, `snodo reports pull
#      --entity c_g224` timed under /usr/bin/time -v; then the store must hold one flow `ok`
#      with N rows, N linked and no anomaly
# Targets (issue 16): each pull <= 3x its floor, peak RSS <= 200 MiB.
set -euo pipefail

N="${1:-100000}"
RUNS="${RUNS:-3}"
PAGE_SIZE="${PAGE_SIZE:-1000}"
for v in N RUNS PAGE_SIZE; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
        echo "usage: $0 [N]   ($v must be a positive number, got '${!v}')" >&2
        exit 2
    fi
done
[ "$PAGE_SIZE" -le 1000 ] || { echo "error: PAGE_SIZE is at most 1000 (FdR 3's limit)" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=ops/bench/common.sh
. "$ROOT/ops/bench/common.sh"
cd "$ROOT"
for tool in python3 cargo curl sqlite3 xmllint; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is missing: run ops/setup.sh" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "error: /usr/bin/time is missing: run ops/setup.sh" >&2; exit 1; }

BIN="${SNODO_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/snodo}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/snodo-reports.XXXXXX")"
HUB="" SIM=""
cleanup() {
    [ -n "$HUB" ] && kill "$HUB" 2>/dev/null || true
    [ -n "$SIM" ] && kill "$SIM" 2>/dev/null || true
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
log() { echo "== $*" >&2; }
now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- 1. build --------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
[ -x "$BIN" ] || { echo "error: $BIN does not exist" >&2; exit 1; }

PORT=$(free_port)
SPORT=$(free_port)
TAXONOMY="$ROOT/adapters/specs/mypay/tassonomia.csv"
[ -f "$TAXONOMY" ] && export SNODO_TAXONOMY_FILE="$TAXONOMY"
export SNODO_LOG=warn
KEY="bench-key"
PASSWORD="bench-pw"

# One entity (Comune di Padova, as in config/demo.toml); [pagopa.fdr] is added per mode.
padova_config "sqlite" "$PORT" >"$TMP/base.toml"
cd "$TMP"
cp base.toml snodo.toml
"$BIN" validate -c snodo.toml >/dev/null

# ---- 2. positions ----------------------------------------------------------------------------
ROWS=$((N + N / 10 + 10))
log "generating and importing $ROWS positions (untimed)"
python3 "$ROOT/ops/bench/gen_flow.py" --entity c_g224 --iuf REPBENCH --rows "$ROWS" --version 1_3 \
    --bad-ratio 0 --out flows >/dev/null
"$BIN" import -c snodo.toml --entity c_g224 --out out flows/c_g224-REPBENCH-1_3.csv | tail -n 1 >&2

# ---- 3. one receipt through the hub ----------------------------------------------------------
"$BIN" run -c snodo.toml >hub.log 2>&1 &
HUB=$!
wait_ready "$PORT" hub.log
NOTICE=$(sqlite3 var/snodo.db "SELECT '00644060287;3' || iuv FROM positions WHERE entity = 'c_g224' AND status = 'active' AND length(iuv) = 17 ORDER BY id DESC LIMIT 1")
echo "$NOTICE" >notice.txt
"$BIN" sim -c snodo.toml --notices notice.txt --count 1 --ledger ledger >sim-pay.out 2>&1 \
    || { cat sim-pay.out >&2; echo "error: snodo sim could not pay one notice" >&2; exit 1; }
kill "$HUB"; wait "$HUB" 2>/dev/null || true; HUB=""

# ---- 4. N - 1 more receipts ------------------------------------------------------------------
log "cloning that receipt for $((N - 1)) more positions (untimed)"
GEN=$(python3 "$ROOT/ops/bench/gen_receipts.py" --db var/snodo.db --ledger ledger --entity c_g224 --count "$N")
DATE=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["date"])' "$GEN")
RECEIPTS=$(sqlite3 var/snodo.db "SELECT count(*) FROM receipts WHERE entity = 'c_g224'")
[ "$RECEIPTS" = "$N" ] || { echo "error: $RECEIPTS receipts in the store, $N expected" >&2; exit 1; }
sqlite3 var/snodo.db "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
cp -a var seed

# ---- 5. one flow -----------------------------------------------------------------------------
"$BIN" sim --ledger ledger --publish-flows --date "$DATE" >publish.out
FLOWLINE=$(grep '^flow ' publish.out)
[ "$(echo "$FLOWLINE" | wc -l)" = 1 ] || { cat publish.out >&2; echo "error: not one flow published" >&2; exit 1; }
field() { echo "$FLOWLINE" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
FDR=$(field fdr) PSP=$(field psp) ORG=$(field organization) JSON=$(field file)
XML="${JSON%.json}.xml"
[ "$(field payments)" = "$N" ] || { cat publish.out >&2; echo "error: the flow has $(field payments) rows, $N expected" >&2; exit 1; }
log "flow $FDR: $N payments, XML $(du -h "$XML" | cut -f1), JSON $(du -h "$JSON" | cut -f1)"

# ---- 6. served, and the floors ---------------------------------------------------------------
"$BIN" sim --ledger ledger --serve "127.0.0.1:$SPORT" --fdr-key "$KEY" --fdr-password "$PASSWORD" >sim.out 2>sim.err &
SIM=$!
for _ in $(seq 100); do grep -q "sim: reporting" sim.out 2>/dev/null && break; sleep 0.1; done
grep -q "sim: reporting" sim.out || { cat sim.out sim.err >&2; echo "error: the sim does not serve flows" >&2; exit 1; }
REST="http://127.0.0.1:$SPORT/fdr-org/service/v1"
SOAP="http://127.0.0.1:$SPORT/nodo-auth/node-for-pa/v1"
FLOW="$REST/organizations/$ORG/fdrs/$FDR/revisions/1/psps/$PSP"
PAGES=$(((N + PAGE_SIZE - 1) / PAGE_SIZE))

# The REST floor: what the hub asks, in the same order, one connection (curl reuses it).
{
    echo "url = \"$REST/organizations/$ORG/fdrs?page=1&size=$PAGE_SIZE\""
    echo "url = \"$FLOW\""
    for p in $(seq "$PAGES"); do echo "url = \"$FLOW/payments?page=$p&size=$PAGE_SIZE\""; done
} | sed 's|$|\noutput = "/dev/null"|' >pages.curl
curl_pages() { # prints the bytes received; fails on any error answer
    curl -sf -H "Ocp-Apim-Subscription-Key: $KEY" -H 'Accept: application/json' -K pages.curl \
        -w '%{size_download}\n' | awk '{ s += $1; n++ } END { print s; if (n != '"$((PAGES + 2))"') exit 1 }'
}
BYTES=$(curl_pages)   # warm: the sim parses the flow file once
FLOOR_REST=""
for _ in $(seq "$RUNS"); do
    t0=$(now_ns); curl_pages >/dev/null; t1=$(now_ns)
    FLOOR_REST="$FLOOR_REST $(secs "$t0" "$t1")"
done
FLOOR_XML=""
for _ in $(seq "$RUNS"); do
    t0=$(now_ns); xmllint --stream --noout "$XML"; t1=$(now_ns)
    FLOOR_XML="$FLOOR_XML $(secs "$t0" "$t1")"
done
log "floors: curl $((PAGES + 2)) REST calls ($BYTES bytes):$FLOOR_REST s; xmllint --stream:$FLOOR_XML s"

# ---- 7. the pulls ----------------------------------------------------------------------------
pull() { # mode; sets SECS, RSS_MIB
    local mode="$1" url extra
    rm -rf var && cp -a seed var
    if [ "$mode" = rest ]; then
        url="$REST"; extra="subscription_key = \"$KEY\"
page_size = $PAGE_SIZE"
    else
        url="$SOAP"; extra="password = \"$PASSWORD\""
    fi
    { cat base.toml; printf '\n[pagopa.fdr]\nmode = "%s"\nurl = "%s"\n%s\n' "$mode" "$url" "$extra"; } >snodo.toml
    sync
    t0=$(now_ns)
    /usr/bin/time -v -o time.txt "$BIN" reports -c snodo.toml pull --entity c_g224 >pull.out 2>pull.err \
        || { cat pull.out pull.err >&2; echo "error: the $mode pull failed" >&2; exit 1; }
    t1=$(now_ns)
    SECS=$(secs "$t0" "$t1")
    RSS_MIB=$(awk -F: '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' time.txt)
    local got
    got=$(sqlite3 var/snodo.db "SELECT status, computed_count, linked, anomalies FROM report_flows")
    [ "$got" = "ok|$N|$N|0" ] || { cat pull.out pull.err >&2; echo "error: $mode pull stored '$got', expected 'ok|$N|$N|0'" >&2; exit 1; }
    [ "$(sqlite3 var/snodo.db "SELECT count(*) FROM report_payments WHERE receipt IS NOT NULL")" = "$N" ] \
        || { echo "error: $mode pull: not every row linked" >&2; exit 1; }
}
declare -A TIMES RSS
for mode in rest soap; do
    TIMES[$mode]="" RSS[$mode]=0
    for r in $(seq "$RUNS"); do
        pull "$mode"
        log "$mode pull $r: $SECS s, peak RSS $RSS_MIB MiB"
        TIMES[$mode]="${TIMES[$mode]} $SECS"
        RSS[$mode]=$(awk -v a="${RSS[$mode]}" -v b="$RSS_MIB" 'BEGIN { print (b > a ? b : a) }')
    done
done

# ---- report ----------------------------------------------------------------------------------
FR=$(echo "$FLOOR_REST" | median) FX=$(echo "$FLOOR_XML" | median)
PR=$(echo "${TIMES[rest]}" | median) PS=$(echo "${TIMES[soap]}" | median)
awk -v n="$N" -v runs="$RUNS" -v pages="$PAGES" -v size="$PAGE_SIZE" -v bytes="$BYTES" \
    -v fr="$FR" -v fx="$FX" -v pr="$PR" -v ps="$PS" -v frs="$FLOOR_REST" -v fxs="$FLOOR_XML" \
    -v prs="${TIMES[rest]}" -v pss="${TIMES[soap]}" -v rr="${RSS[rest]}" -v rs="${RSS[soap]}" \
    -v xmlsize="$(stat -c %s "$XML")" 'BEGIN {
    printf "flow                 %d payments, one PSP, %d receipts in the store; median of %d runs\n", n, n, runs
    printf "floor REST (curl)    %.3f s   (runs%s; %d calls, %d payments a page, %.1f MiB)\n", fr, frs, pages + 2, size, bytes / 1048576
    printf "floor SOAP (xmllint) %.3f s   (runs%s; --stream --noout, %.1f MiB XML)\n", fx, fxs, xmlsize / 1048576
    printf "pull REST            %.3f s   (runs%s) %.0f rows/s  %.2fx floor  peak RSS %s MiB\n", pr, prs, n / pr, pr / fr, rr
    printf "pull SOAP            %.3f s   (runs%s) %.0f rows/s  %.2fx floor  peak RSS %s MiB\n", ps, pss, n / ps, ps / fx, rs
    printf "targets: <= 3x floor: REST %s, SOAP %s; RSS <= 200 MiB: REST %s, SOAP %s\n",
        (pr <= 3 * fr ? "ok" : "MISSED"), (ps <= 3 * fx ? "ok" : "MISSED"),
        (rr <= 200 ? "ok" : "MISSED"), (rs <= 200 ? "ok" : "MISSED")
}'
