#!/usr/bin/env bash
# REST API benchmark: positions created through POST /api/v1/entities/c_g224/positions, one
# position a request and in batches of 100, against the floor of `snodo import` of a CSV flow,
# on this machine, in the same run.
#
#   ops/bench/rest.sh [N1 [N2 [N3]]]   (run from anywhere in the repo)
#       N1  positions created one a request      (default 20000)
#       N2  positions created in batches         (default 200000, a multiple of BATCH)
#       N3  rows of the CSV flow of the floor    (default 200000)
#
# Knobs (environment): SKIP_BUILD=1, SNODO_BIN=path, KEEP=1 as in import.sh; CONNS (wrk
# connections, default 16), THREADS (wrk threads, default 2), BATCH (positions a batch, default
# 100), TIMEOUT (seconds one API phase may take at most, default 600).
#
# Steps, all in a fresh temporary directory (removed at the end; KEEP=1 keeps it):
#   1. cargo build --release (SKIP_BUILD=1 skips it; SNODO_BIN=path uses another binary)
#   2. snodo run with the demo config on a free loopback port, data in the temp dir, the API
#      rate limit raised out of the way (SNODO__API__RATE_PER_SECOND/RATE_BURST); wait for /readyz
#   3. one at a time: wrk sends exactly N1 POSTs of one position (a JSON object, unique IUD
#      ONE-<thread>-<n>) over CONNS connections; each wrk thread stops at its last answer; the
#      clock runs from wrk's start to the last answer. Statuses other than 201 are reported.
#   4. batches: the same with N2/BATCH POSTs of a JSON array of BATCH positions (IUDs BAT-...);
#      the client adds up "created" from the 200 answers.
#   5. the positions created by each phase are counted in the store (sqlite3 on
#      <data_dir>/snodo.db), and that count, not the client's, makes the rate
#   6. the floor, with the hub stopped: ops/bench/gen_flow.py writes an N3-row flow and its seed
#      flow as import.sh does; snodo import of the seed flow (untimed), then of the flow (timed)
# No targets yet: the report gives positions/s of each API phase, rows/s of the import and each
# API rate as a fraction of the import rate. Failing to build, start, load or import exits
# non-zero.
set -euo pipefail

N1="${1:-20000}"
N2="${2:-200000}"
N3="${3:-200000}"
CONNS="${CONNS:-16}"
THREADS="${THREADS:-2}"
BATCH="${BATCH:-100}"
TIMEOUT="${TIMEOUT:-600}"
for v in N1 N2 N3 CONNS THREADS BATCH TIMEOUT; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
        echo "usage: $0 [N1 [N2 [N3]]]   ($v must be a positive number, got '${!v}')" >&2
        exit 2
    fi
done
if [ $((N2 % BATCH)) -ne 0 ]; then
    echo "usage: $0 [N1 [N2 [N3]]]   (N2 = $N2 must be a multiple of BATCH = $BATCH)" >&2
    exit 2
fi
if [ "$THREADS" -gt "$CONNS" ]; then
    echo "error: THREADS ($THREADS) must not exceed CONNS ($CONNS)" >&2
    exit 2
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

for tool in python3 cargo curl wrk sqlite3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool is not installed; run ops/setup.sh, then run this script again." >&2
        exit 1
    fi
done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/snodo-rest.XXXXXX")"
HUB=""
WRK=""
cleanup() {
    [ -n "$WRK" ] && kill "$WRK" 2>/dev/null || true
    [ -n "$HUB" ] && kill "$HUB" 2>/dev/null && wait "$HUB" 2>/dev/null || true
    if [ "${KEEP:-0}" = "1" ]; then
        echo "kept $TMP" >&2
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT

log() { echo "== $*" >&2; }
now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }

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

# ---- configuration: demo entities, data in the temp dir, rate limit out of the way -----------
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cp config/demo.toml "$TMP/snodo.toml"
export SNODO__HUB__DATA_DIR="$TMP/var" SNODO__HTTP__LISTEN="127.0.0.1:$PORT" SNODO_LOG=warn
export SNODO__API__RATE_PER_SECOND=1000000 SNODO__API__RATE_BURST=1000000
TAXONOMY="$ROOT/adapters/specs/mypay/tassonomia.csv"
if [ -f "$TAXONOMY" ]; then
    SNODO_TAXONOMY_FILE="$(cd "$(dirname "$TAXONOMY")" && pwd)/$(basename "$TAXONOMY")"
    export SNODO_TAXONOMY_FILE
else
    log "warning: $TAXONOMY not found; taxonomy codes are checked by pattern only"
fi
mkdir -p "$TMP/var" "$TMP/out" "$TMP/flows"
DB="$TMP/var/snodo.db"
API_KEY="demo-key-c_g224-padova"
API_PATH="/api/v1/entities/c_g224/positions"

# ---- the wrk script: exactly REQUESTS requests split between the threads ---------------------
# delay() lets a connection send only while its thread has requests left (wrk calls it before
# each request, and once more request() for its own check, which is why sending is counted
# here); at its last answer a thread writes its counts to DONE_DIR/<id>.done and stops.
cat >"$TMP/rest.lua" <<'LUA'
local prefix, batch = os.getenv("PREFIX"), tonumber(os.getenv("BATCH"))
local requests, threads = tonumber(os.getenv("REQUESTS")), tonumber(os.getenv("THREADS"))
local done_dir, path = os.getenv("DONE_DIR"), os.getenv("API_PATH")
local headers = { ["Authorization"] = "Bearer " .. os.getenv("API_KEY"),
                  ["Content-Type"] = "application/json" }
local template = '{"IUD":"%s-%d-%d","tipoIdentificativoUnivoco":"F",'
  .. '"codiceIdentificativoUnivoco":"RSSMRA85T10A562S","anagraficaPagatore":"Mario Rossi",'
  .. '"importoDovuto":"120.50","tipoDovuto":"TARI","dataEsecuzionePagamento":"2099-01-31",'
  .. '"causaleVersamento":"TARI 2026","datiSpecificiRiscossione":"9/0101100IM/","flgGeneraIuv":true}'

-- main state: number the threads, give each its share of the requests
local threads_set = 0
function setup(thread)
  threads_set = threads_set + 1
  local share = math.floor(requests / threads) + ((threads_set <= requests % threads) and 1 or 0)
  thread:set("id", threads_set)
  thread:set("quota", share)
end

-- thread state (id and quota are set by setup)
local sent, answered, created, rejected, unchanged, n = 0, 0, 0, 0, 0, 0
local statuses, sample = {}, nil

local function finish()
  local f = assert(io.open(done_dir .. "/" .. id .. ".tmp", "w"))
  f:write("answered ", answered, "\ncreated ", created, "\nrejected ", rejected,
          "\nunchanged ", unchanged, "\n")
  for status, count in pairs(statuses) do f:write("status ", status, " ", count, "\n") end
  if sample then f:write("sample ", sample, "\n") end
  f:close()
  os.rename(done_dir .. "/" .. id .. ".tmp", done_dir .. "/" .. id .. ".done")
end

function init(args)
  if quota == 0 then finish() end
end

function delay()
  if sent < quota then
    sent = sent + 1
    return 0
  end
  return 3600000
end

local function position()
  n = n + 1
  return string.format(template, prefix, id, n)
end

request = function()
  local body
  if batch == 0 then
    body = position()
  else
    local items = {}
    for k = 1, batch do items[k] = position() end
    body = "[" .. table.concat(items, ",") .. "]"
  end
  return wrk.format("POST", path, headers, body)
end

response = function(status, headers, body)
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
  local expected = (batch == 0) and 201 or 200
  if status == expected then
    if batch == 0 then
      created = created + 1
    else
      created = created + tonumber(string.match(body, '"created"%s*:%s*(%d+)') or 0)
      rejected = rejected + tonumber(string.match(body, '"rejected"%s*:%s*(%d+)') or 0)
      unchanged = unchanged + tonumber(string.match(body, '"unchanged"%s*:%s*(%d+)') or 0)
    end
  end
  if (status ~= expected or (batch > 0 and not string.find(body, '"rejected":0', 1, true)))
      and sample == nil then
    sample = status .. " " .. string.sub(string.gsub(body, "%s+", " "), 1, 400)
  end
  if answered == quota then
    finish()
    wrk.thread:stop()
  end
end
LUA

# ---- 2. the hub ------------------------------------------------------------------------------
# Started from the temp dir: the demo's pipeline folders (var/<ipa>/in, ...) are relative paths.
log "snodo run on 127.0.0.1:$PORT"
(cd "$TMP" && exec "$BIN" run -c "$TMP/snodo.toml") >"$TMP/hub.log" 2>&1 &
HUB=$!
ready=0
for _ in $(seq 300); do
    if curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; then ready=1; break; fi
    kill -0 "$HUB" 2>/dev/null || break
    sleep 0.1
done
if [ "$ready" != 1 ]; then
    tail -n 20 "$TMP/hub.log" >&2
    echo "error: the hub did not become ready on 127.0.0.1:$PORT" >&2
    exit 1
fi

# One API phase: run_api NAME PREFIX REQUESTS BATCH (0 = one object a request). Sets SECS (wall
# time to the last answer), STORED (positions with IUDs PREFIX-* in the store), CLIENT_CREATED,
# STATUSES ("201:19998 500:2"), REJECTED, UNCHANGED, SAMPLE (first unexpected answer), LATENCY.
run_api() {
    local name="$1" prefix="$2" requests="$3" batch="$4"
    local done_dir="$TMP/done.$name" t0 t1 files
    mkdir -p "$done_dir"
    sync
    t0="$(now_ns)"
    PREFIX="$prefix" BATCH="$batch" REQUESTS="$requests" THREADS="$THREADS" DONE_DIR="$done_dir" \
        API_KEY="$API_KEY" API_PATH="$API_PATH" \
        wrk -t"$THREADS" -c"$CONNS" -d"${TIMEOUT}s" --timeout 60s --latency -s "$TMP/rest.lua" \
        "http://127.0.0.1:$PORT" >"$TMP/$name.wrk" 2>&1 &
    WRK=$!
    shopt -s nullglob
    while true; do
        files=("$done_dir"/*.done)
        [ "${#files[@]}" -ge "$THREADS" ] && break
        kill -0 "$WRK" 2>/dev/null || break
        sleep 0.01
    done
    t1="$(now_ns)"
    shopt -u nullglob
    # wrk sleeps out its -d even when every thread has stopped; SIGINT ends it and it reports.
    kill -INT "$WRK" 2>/dev/null || true
    wait "$WRK" 2>/dev/null || true
    WRK=""
    if [ "${#files[@]}" -lt "$THREADS" ]; then
        cat "$TMP/$name.wrk" >&2
        cat "$done_dir"/*.done >&2 2>/dev/null || true
        echo "error: $name: wrk ended before every request was answered (TIMEOUT=${TIMEOUT}s)" >&2
        exit 1
    fi
    SECS="$(secs "$t0" "$t1")"
    STORED="$(sqlite3 -cmd '.timeout 10000' "$DB" \
        "SELECT count(*) FROM positions WHERE entity = 'c_g224' AND iud GLOB '$prefix-*' AND status = 'active'")"
    CLIENT_CREATED="$(cat "${files[@]}" | awk '$1 == "created" { s += $2 } END { print s + 0 }')"
    REJECTED="$(cat "${files[@]}" | awk '$1 == "rejected" { s += $2 } END { print s + 0 }')"
    UNCHANGED="$(cat "${files[@]}" | awk '$1 == "unchanged" { s += $2 } END { print s + 0 }')"
    STATUSES="$(cat "${files[@]}" | awk '$1 == "status" { c[$2] += $3 } END { for (s in c) printf "%s:%d ", s, c[s] }' \
        | tr ' ' '\n' | sed '/^$/d' | sort | tr '\n' ' ' | sed 's/ $//')"
    SAMPLE="$(cat "${files[@]}" | sed -n 's/^sample //p' | head -n 1)"
    LATENCY="$(awk '/^ +50%/ { p50 = $2 } /^ +99%/ { p99 = $2 } END { printf "p50 %s p99 %s", p50, p99 }' "$TMP/$name.wrk")"
}

# ---- 3. one at a time ------------------------------------------------------------------------
log "one at a time: $N1 POSTs of one position (c=$CONNS, t=$THREADS)"
run_api one ONE "$N1" 0
ONE_SECS="$SECS" ONE_STORED="$STORED" ONE_CLIENT="$CLIENT_CREATED" ONE_STATUSES="$STATUSES"
ONE_SAMPLE="$SAMPLE" ONE_LAT="$LATENCY"
log "one at a time: $ONE_STORED stored in $ONE_SECS s (statuses $ONE_STATUSES)"

# ---- 4. batches ------------------------------------------------------------------------------
BATCHES=$((N2 / BATCH))
log "batches of $BATCH: $BATCHES POSTs, $N2 positions (c=$CONNS, t=$THREADS)"
run_api batch BAT "$BATCHES" "$BATCH"
BAT_SECS="$SECS" BAT_STORED="$STORED" BAT_CLIENT="$CLIENT_CREATED" BAT_STATUSES="$STATUSES"
BAT_SAMPLE="$SAMPLE" BAT_LAT="$LATENCY" BAT_REJECTED="$REJECTED" BAT_UNCHANGED="$UNCHANGED"
log "batches of $BATCH: $BAT_STORED stored in $BAT_SECS s (statuses $BAT_STATUSES)"

RSS="$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$HUB/status" 2>/dev/null || echo "?")"
kill "$HUB" 2>/dev/null || true
wait "$HUB" 2>/dev/null || true
HUB=""

# ---- 5. the floor: snodo import of a CSV flow, as import.sh does ------------------------------
export SNODO__HUB__DATA_DIR="$TMP/import-var"
mkdir -p "$TMP/import-var"
log "generating $N3 rows (1_4, zip, with seed flow)"
GEN_JSON="$(python3 ops/bench/gen_flow.py --entity c_g224 --iuf BENCH001 --rows "$N3" \
    --version 1_4 --seed 1 --seed-flow --zip --out "$TMP/flows")"
json_field() { python3 -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print("" if v is None else v)' "$GEN_JSON" "$1"; }
FLOW="$(json_field file)"
SEED_FLOW="$(json_field seed_file)"
BAD_ROWS="$(json_field bad_rows)"
SNODO_IMPORT=("$BIN" import -c "$TMP/snodo.toml" --entity c_g224 --out "$TMP/out")
log "snodo import of the seed flow $(basename "$SEED_FLOW") (untimed)"
if ! "${SNODO_IMPORT[@]}" "$SEED_FLOW" >"$TMP/seed.out" 2>"$TMP/seed.err"; then
    cat "$TMP/seed.err" "$TMP/seed.out" >&2
    echo "error: snodo import of the seed flow failed" >&2
    exit 1
fi
log "snodo import of $(basename "$FLOW") (timed)"
sync
t0="$(now_ns)"
if ! "${SNODO_IMPORT[@]}" "$FLOW" >"$TMP/import.out" 2>"$TMP/import.err"; then
    cat "$TMP/import.err" "$TMP/import.out" >&2
    echo "error: snodo import failed" >&2
    exit 1
fi
t1="$(now_ns)"
IMPORT_SECS="$(secs "$t0" "$t1")"
IMPORT_LAST="$(tail -n 1 "$TMP/import.out")"

# ---- report ----------------------------------------------------------------------------------
awk -v n1="$N1" -v n2="$N2" -v n3="$N3" -v batch="$BATCH" -v conns="$CONNS" -v threads="$THREADS" \
    -v os="$ONE_SECS" -v ost="$ONE_STORED" -v ocl="$ONE_CLIENT" -v osta="$ONE_STATUSES" -v olat="$ONE_LAT" \
    -v bs="$BAT_SECS" -v bst="$BAT_STORED" -v bcl="$BAT_CLIENT" -v bsta="$BAT_STATUSES" -v blat="$BAT_LAT" \
    -v brej="$BAT_REJECTED" -v bunch="$BAT_UNCHANGED" \
    -v is="$IMPORT_SECS" -v last="$IMPORT_LAST" -v bad="$BAD_ROWS" -v rss="$RSS" '
BEGIN {
    orate = (os > 0) ? ost / os : 0
    brate = (bs > 0) ? bst / bs : 0
    irate = (is > 0) ? n3 / is : 0
    printf "wrk                      %d connections, %d threads; each phase sends exactly its requests\n", conns, threads
    printf "one at a time            %d POSTs of 1 position in %.3f s\n", n1, os
    printf "  stored (sqlite3)       %d of %d   (client counted %d created; statuses %s)\n", ost, n1, ocl, osta
    printf "  latency                %s\n", olat
    printf "batches of %-4d          %d POSTs of %d positions in %.3f s\n", batch, n2 / batch, batch, bs
    printf "  stored (sqlite3)       %d of %d   (client counted %d created, %d rejected, %d unchanged; statuses %s)\n", bst, n2, bcl, brej, bunch, bsta
    printf "  latency                %s (per batch)\n", blat
    printf "csv import (floor)       %d rows in %.3f s (bad rows generated: %d)\n", n3, is, bad
    printf "  snodo import           %s\n", last
    printf "hub peak RSS             %s MiB\n", rss
    printf "summary:\n"
    printf "  one at a time          %8.0f positions/s   %.3fx the import rate\n", orate, (irate > 0 ? orate / irate : 0)
    printf "  batches of %-4d        %8.0f positions/s   %.3fx the import rate\n", batch, brate, (irate > 0 ? brate / irate : 0)
    printf "  csv import             %8.0f rows/s\n", irate
    if (ost != n1) printf "WARNING: one at a time stored %d positions, %d were sent\n", ost, n1
    if (bst != n2) printf "WARNING: batches stored %d positions, %d were sent\n", bst, n2
}'
if [ -n "$ONE_SAMPLE" ]; then echo "first unexpected answer (one at a time): $ONE_SAMPLE"; fi
if [ -n "$BAT_SAMPLE" ]; then echo "first unexpected answer (batches): $BAT_SAMPLE"; fi
