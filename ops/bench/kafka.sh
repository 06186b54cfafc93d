#!/usr/bin/env bash
# Kafka intake benchmark: N JSON positions (position-json, key = IUD) on a 4-partition topic;
# time the hub's intake from start to every position applied (one outcome per message produced to
# an outcomes topic), and in the same run the floor: the project's bare consumer (`snodo topic`,
# no group, no processing) reading the same topic. Once with the SQLite store, once with
# PostgreSQL (a fresh database on 127.0.0.1:5432). Prints positions/s and the ratio to the floor.
#
#   ops/bench/kafka.sh [N]      (default 1000000; run from anywhere in the repo)
#
# Environment: BROKERS (default 127.0.0.1:9092, ops/kafka.sh starts one), STORES ("sqlite
# postgres"), SKIP_BUILD=1, SNODO_BIN=path, KEEP=1 (keep the temp dir).
set -euo pipefail

N="${1:-${N:-1000000}}"
BROKERS="${BROKERS:-127.0.0.1:9092}"
STORES="${STORES:-sqlite postgres}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=ops/bench/common.sh
. "$ROOT/ops/bench/common.sh"
cd "$ROOT"
BIN="${SNODO_BIN:-$ROOT/target/release/snodo}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/snodo-kafka-bench.XXXXXX")"
HUB="" DB=""
cleanup() {
    [ -n "$HUB" ] && kill "$HUB" 2>/dev/null || true
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
ops/kafka.sh >&2
SNODO_TAXONOMY_FILE="$(cd "$ROOT/adapters/specs/mypay" && pwd)/tassonomia.csv"
export SNODO_TAXONOMY_FILE
export SNODO_LOG=warn
RUN="$(date +%s)"
TOPIC="bench-positions-$RUN"

log "generating $N positions and producing them to $TOPIC (untimed)"
python3 - "$N" >"$TMP/positions.tsv" <<'PY'
import json, sys
n = int(sys.argv[1])
letters = "BCDFGHLMNPRSTVZ"
months = "ABCDEHLMPRST"
odd = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23]
def val(c, odd_pos):
    i = int(c) if c.isdigit() else ord(c) - 65
    return odd[i] if odd_pos else i
def cf(k):
    first = "".join(letters[(k // 15 ** j) % 15] for j in range(6))
    first += f"{50 + k % 50:02d}{months[k % 12]}{1 + k % 28:02d}A562"
    s = sum(val(c, i % 2 == 0) for i, c in enumerate(first))
    return first + chr(65 + s % 26)
out = sys.stdout
for k in range(n):
    iud = f"B{k:08d}"
    m = {"IUD": iud, "tipoIdentificativoUnivoco": "F", "codiceIdentificativoUnivoco": cf(k),
         "anagraficaPagatore": f"Cittadino {k}", "importoDovuto": f"{10 + k % 90}.{k % 100:02d}",
         "tipoDovuto": "MENSA", "causaleVersamento": f"Mensa alunno {k}",
         "datiSpecificiRiscossione": "9/0107101TS/", "flgGeneraIuv": True, "azione": "I"}
    out.write(iud + "\t" + json.dumps(m, separators=(",", ":")) + "\n")
PY
"$BIN" topic --brokers "$BROKERS" --topic "$TOPIC" --partitions 4 --produce "$TMP/positions.tsv" 2>&1 | tail -n 1 >&2

log "floor: snodo topic reads the $N messages (no group, no processing)"
FLOOR=$("$BIN" topic --brokers "$BROKERS" --topic "$TOPIC" --from-beginning --count "$N" --quiet)
echo "   $FLOOR" >&2
FLOOR_S=$(echo "$FLOOR" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p')

for store in $STORES; do
    dir="$TMP/$store"
    mkdir -p "$dir"
    case "$store" in
        sqlite) url="sqlite" ;;
        postgres)
            DB="snodo_bench_$RUN"
            psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB" >/dev/null
            url="postgres://postgres@127.0.0.1:5432/$DB" ;;
        *) echo "unknown store $store" >&2; exit 2 ;;
    esac
    count() {
        local q="SELECT coalesce(sum(accepted + rejected), 0) FROM flows WHERE version = 'position-json'"
        if [ "$store" = sqlite ]; then sqlite3 "$dir/var/snodo.db" "$q" 2>/dev/null || echo 0
        else psql -h 127.0.0.1 -U postgres -d "$DB" -tAc "$q" 2>/dev/null || echo 0; fi
    }
    # Comune di Padova as the other benchmarks have it (ops/bench/common.sh); the HTTP port is
    # not used here.
    padova_config "$url" 0 >"$dir/snodo.toml"
    cat >>"$dir/snodo.toml" <<EOF

[[pipelines]]
name = "padova-kafka-in"
entity = "c_g224"
from = { connector = "kafka", brokers = "$BROKERS", topic = "$TOPIC", group = "bench-$store-$RUN" }
decode = "position-json"
to = "registry"
outcomes = { connector = "kafka", brokers = "$BROKERS", topic = "$TOPIC-outcomes-$store", partitions = 4 }
EOF
    log "$store: snodo run until $N positions are applied"
    (cd "$dir" && exec "$BIN" run -c snodo.toml >hub.log 2>&1) &
    HUB=$!
    T0=$(now)
    while [ "$(count)" -lt "$N" ]; do
        kill -0 "$HUB" 2>/dev/null || { tail -20 "$dir/hub.log" >&2; exit 1; }
        sleep 0.2
    done
    T1=$(now)
    RSS=$(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$HUB/status" 2>/dev/null || echo "?")
    kill -TERM "$HUB"; wait "$HUB" 2>/dev/null || true; HUB=""
    python3 - "$store" "$N" "$T0" "$T1" "$FLOOR_S" "$RSS" <<'PY'
import sys
store, n, t0, t1, floor_s, rss = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
s = t1 - t0
floor_rate = n / floor_s
print(f"store={store} positions={n} seconds={s:.1f} positions_per_s={n / s:.0f} "
      f"floor_s={floor_s:.1f} floor_per_s={floor_rate:.0f} ratio_to_floor={floor_s / s:.2f} peak_rss_mib={rss}")
PY
done
