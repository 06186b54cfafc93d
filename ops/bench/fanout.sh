#!/usr/bin/env bash
# Receipts fan-out benchmark: `snodo sim` pays notices as fast as the hub answers for DURATION
# seconds while one push pipeline (encode = "json", http) delivers every stored receipt to
# `snodo receiver`; then the outbox drains. Prints receipts stored per second, deliveries per
# second, the stored-to-delivered latency (p50/p99, from the outbox rows), receipts lost
# (acknowledged to the node but never received; must be 0) and the hub's peak RSS.
#
#   ops/bench/fanout.sh [DURATION]     (default 60 s; run from anywhere in the repo)
#
# Environment: DURATION (seconds), POSITIONS (positions imported, default 250000: more than the
# sim can pay in DURATION), CONCURRENCY (payments in flight, default 32), DRAIN_TIMEOUT (seconds
# to wait for the outbox to empty, default 300), SKIP_BUILD=1 (reuse target/release/snodo),
# SNODO_BIN=path (another binary), KEEP=1 (keep the temp dir with logs and store),
# STORE=sqlite|postgres (default sqlite; postgres: a fresh database on 127.0.0.1:5432, dropped
# at the end), RECEIPTS_ONLY=1 (`snodo sim --receipts-only`: COUNT payments, default 100000,
# verified and activated first, untimed; then only their receipts are sent for DURATION: the
# store path alone).
set -euo pipefail

DURATION="${1:-${DURATION:-60}}"
POSITIONS="${POSITIONS:-250000}"
CONCURRENCY="${CONCURRENCY:-32}"
DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-300}"
STORE="${STORE:-sqlite}"
RECEIPTS_ONLY="${RECEIPTS_ONLY:-0}"; export RECEIPTS_ONLY
COUNT="${COUNT:-100000}"
for v in DURATION POSITIONS CONCURRENCY DRAIN_TIMEOUT COUNT; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
        echo "usage: $0 [DURATION]   ($v must be a positive number, got ${!v:-nothing})" >&2
        exit 2
    fi
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=ops/bench/common.sh
. "$ROOT/ops/bench/common.sh"
cd "$ROOT"
for tool in python3 cargo curl sqlite3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is missing: run ops/setup.sh" >&2; exit 1; }
done

BIN="${SNODO_BIN:-$ROOT/target/release/snodo}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/snodo-fanout.XXXXXX")"
HUB="" RECEIVER="" DB=""
cleanup() {
    [ -n "$HUB" ] && kill "$HUB" 2>/dev/null || true
    [ -n "$RECEIVER" ] && kill "$RECEIVER" 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "$DB" ] && psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
log() { echo "== $*" >&2; }
now() { date +%s.%N; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
[ -x "$BIN" ] || { echo "error: $BIN does not exist" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
RPORT=$(free_port)
TAXONOMY="$ROOT/adapters/specs/mypay/tassonomia.csv"
if [ -f "$TAXONOMY" ]; then
    SNODO_TAXONOMY_FILE="$(cd "$(dirname "$TAXONOMY")" && pwd)/$(basename "$TAXONOMY")"
    export SNODO_TAXONOMY_FILE
else
    log "warning: $TAXONOMY not found; taxonomy codes are checked by pattern only"
fi
export SNODO_LOG=warn

case "$STORE" in
    sqlite) STORE_URL=sqlite ;;
    postgres)
        DB="snodo_fanout_$(date +%s)"
        psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB" >/dev/null
        STORE_URL="postgres://postgres@127.0.0.1:5432/$DB" ;;
    *) echo "STORE must be sqlite or postgres" >&2; exit 2 ;;
esac
# A query on the hub's store, tab-separated rows.
sql() {
    if [ "$STORE" = sqlite ]; then sqlite3 -separator $'\t' var/snodo.db "$1"
    else psql -h 127.0.0.1 -U postgres -d "$DB" -tA -F $'\t' -c "$1"; fi
}

# One entity (Comune di Padova, as in config/demo.toml) and one push pipeline to the receiver.
padova_config "$STORE_URL" "$PORT" >"$TMP/snodo.toml"
cat >>"$TMP/snodo.toml" <<EOF

[[pipelines]]
name = "padova-receipts-push"
entity = "c_g224"
from = "receipts"
encode = "json"
to = { connector = "http", url = "http://127.0.0.1:$RPORT/receipts", timeout = "10s", retry = { max_attempts = 100, initial = "200ms", max = "5s" } }
EOF
cd "$TMP"
"$BIN" validate -c snodo.toml >/dev/null

log "generating and importing $POSITIONS positions (untimed)"
python3 "$ROOT/ops/bench/gen_flow.py" --entity c_g224 --iuf FANOUT --rows "$POSITIONS" --bad-ratio 0 --out flows >/dev/null
"$BIN" import -c snodo.toml --entity c_g224 --out out flows/c_g224-FANOUT-1_4.csv | tail -n 1 >&2

"$BIN" receiver --listen "127.0.0.1:$RPORT" --log received.log >receiver.out 2>receiver.err &
RECEIVER=$!
"$BIN" run -c snodo.toml >hub.log 2>&1 &
HUB=$!
wait_ready "$PORT" hub.log

ONLY=()
[ "$RECEIPTS_ONLY" = 1 ] && ONLY=(--receipts-only --count "$COUNT")
log "snodo sim --from-config --concurrency $CONCURRENCY --duration ${DURATION}s ${ONLY[*]}"
SIM_T0=$(now)
"$BIN" sim -c snodo.toml --from-config --concurrency "$CONCURRENCY" --duration "${DURATION}s" \
    --retry-for 60s --receipts-log receipts.log "${ONLY[@]}" >sim.out 2>sim.err &
SIM=$!
if [ "${PROFILE:-0}" = 1 ]; then
    # Receipts only: the profile starts once the untimed activations are done.
    while [ "$RECEIPTS_ONLY" = 1 ] && ! grep -q 'sending their receipts' sim.err && kill -0 "$SIM" 2>/dev/null; do
        sleep 0.2
    done
    profile_start "$HUB" "$([ "$RECEIPTS_ONLY" = 1 ] && echo receipts-only || echo fanout)"
fi
wait "$SIM" || { cat sim.out sim.err >&2; exit 1; }
SIM_T1=$(now)
profile_stop
[ "$RECEIPTS_ONLY" = 1 ] && sed 's/^/   /' sim.err >&2
sed 's/^/   /' sim.out >&2

log "waiting for the outbox to drain (at most ${DRAIN_TIMEOUT}s)"
left() { sql "SELECT count(*) FROM deliveries WHERE status NOT IN ('delivered', 'dead')" 2>/dev/null || echo unknown; }
drained=0
for _ in $(seq $((DRAIN_TIMEOUT * 5))); do
    [ "$(left)" = 0 ] && { drained=1; break; }
    sleep 0.2
done
DRAIN_T1=$(now)
[ "$drained" = 1 ] || log "warning: $(left) deliveries still pending after ${DRAIN_TIMEOUT}s"
RSS_MIB=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$HUB/status")
kill -TERM "$HUB"; wait "$HUB" || true; HUB=""
# A short pause so the last keep-alive requests are logged, then the receiver's summary.
sleep 0.3
kill -TERM "$RECEIVER"; wait "$RECEIVER" || true; RECEIVER=""

sql "SELECT idempotency_key, status, created_at, coalesce(delivered_at, '') FROM deliveries" >deliveries.tsv
sql "SELECT count(*) FROM receipts" >receipts.count
python3 - "$SIM_T0" "$SIM_T1" "$DRAIN_T1" "$RSS_MIB" "$DURATION" "$CONCURRENCY" "$POSITIONS" "$(cat receiver.out)" "$STORE" <<'PY'
import datetime, os, sys

sim_t0, sim_t1, drain_t1 = (float(x) for x in sys.argv[1:4])
rss, duration, concurrency, positions, receiver, store = sys.argv[4:10]

report = {}
for line in open("sim.out"):
    if line.startswith("total "):
        report = dict(kv.split("=", 1) for kv in line.split()[1:])
sim_s = float(report.get("wall_ms", 0)) / 1000 or (sim_t1 - sim_t0)

# Acknowledged receipts: OK, or a resend the hub already had (stored, answer lost).
acked = set()
for line in open("receipts.log"):
    f = line.rstrip("\n").split(";")
    if len(f) == 3 and f[2] in ("OK", "PAA_RECEIPT_DUPLICATA"):
        acked.add(f[0])
first_arrival_ms, arrivals = {}, 0
for line in open("received.log"):
    f = line.rstrip("\n").split(";")
    if len(f) == 3 and f[0].isdigit():
        first_arrival_ms.setdefault(f[1], int(f[0]))
        arrivals += 1
received = set(first_arrival_ms)
lost = len(acked - received)

def ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

deliveries = [l.rstrip("\n").split("\t") for l in open("deliveries.tsv") if l.strip()]
rows = [(c, d) for _, st, c, d in deliveries if st == "delivered"]
# Cross-check with the receiver's clock (same machine): stored to first arrival.
arrived = sorted(first_arrival_ms[k] / 1000 - ts(c) for k, _, c, _ in deliveries if k in first_arrival_ms)
counts = {}
for _, st, _, _ in deliveries:
    counts[st] = counts.get(st, 0) + 1
stored = int(open("receipts.count").read().strip() or 0)
lat = sorted(ts(d) - ts(c) for c, d in rows)
def pct(p, sample=None):
    sample = lat if sample is None else sample
    if not sample:
        return float("nan")
    k = max(1, -(-p * len(sample) // 100))
    return sample[k - 1] * 1000
span = (max(ts(d) for _, d in rows) - min(ts(c) for c, _ in rows)) if rows else 0
deliveries_s = len(rows) / span if span > 0 else 0
receipts_s = len(acked) / sim_s if sim_s > 0 else 0
drain_s = drain_t1 - sim_t1

print(f"mode={'receipts-only' if os.environ.get('RECEIPTS_ONLY') == '1' else 'whole payments'} store={store} duration_s={duration} concurrency={concurrency} positions={positions}")
print(f"sim payments={report.get('payments')} completed={report.get('completed')} faulted={report.get('faulted')} errors={report.get('errors')} wall_s={sim_s:.1f}")
print(f"receipts acknowledged={len(acked)} stored={stored} receipts_per_s={receipts_s:.0f}")
print(f"deliveries delivered={counts.get('delivered', 0)} pending={sum(v for k, v in counts.items() if k not in ('delivered', 'dead'))} dead={counts.get('dead', 0)} deliveries_per_s={deliveries_s:.0f} drain_after_sim_s={drain_s:.1f}")
print(f"latency stored_to_delivered p50_ms={pct(50):.1f} p99_ms={pct(99):.1f} max_ms={(lat[-1] * 1000 if lat else float('nan')):.1f}")
print(f"latency stored_to_received p50_ms={pct(50, arrived):.1f} p99_ms={pct(99, arrived):.1f} (receiver log)")
print(f"receiver {receiver} arrivals_logged={arrivals}")
print(f"lost={lost} ({'ok' if lost == 0 else 'RECEIPTS LOST'})")
print(f"hub peak RSS {rss} MiB")
today = datetime.date.today().isoformat()
print("| date | duration | concurrency | receipts stored/s | deliveries/s | stored→delivered p50 / p99 | lost | hub peak RSS |")
print(f"| {today} | {duration} s | {concurrency} | {receipts_s:.0f} ({len(acked)} receipts) | {deliveries_s:.0f} | {pct(50):.1f} ms / {pct(99):.1f} ms | {lost} | {rss} MiB |")
sys.exit(1 if lost else 0)
PY
