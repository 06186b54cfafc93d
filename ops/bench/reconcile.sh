#!/usr/bin/env bash
# Reconciliation benchmark (issue 17): one entity with N receipts (default 1 000 000), FLOWS
# settlement flows of 100 payments each (default N / 100) and MOVEMENTS treasury movements
# (default FLOWS). Measures `snodo reconcile rebuild` labelling everything from scratch (wall
# time, peak RSS under /usr/bin/time -v), then the incremental cost of one new flow and of one
# new movement: `snodo reconcile` relabelling the one pending mark, less the same command with
# nothing pending. Floor in the same run: the same join written as one `sqlite3` query on the
# same store, writing each payment's and movement's classes to a table. The rebuild's labels
# must equal the floor's, item by item.
#
#   ops/bench/reconcile.sh [N]       (run from anywhere in the repo; N also from the environment)
#
# Environment: FLOWS (default N / 100; FLOWS * 100 <= N), MOVEMENTS (default FLOWS), RUNS (timed
# runs, median reported; default 3), SKIP_BUILD=1 (reuse the release binary), SNODO_BIN=path
# (another binary; default $CARGO_TARGET_DIR/release/snodo or target/release/snodo), KEEP=1
# (keep the temp dir).
#
# Steps, in a fresh temporary directory (removed at the end):
#   1. cargo build --release (unless SKIP_BUILD=1)
#   2. N + 100 + 10 % positions of Comune di Padova (gen_flow.py, 1_3: one transfer each),
#      imported
#   3. one of them paid for real: `snodo run`, then `snodo sim` pays it; the hub stops
#   4. N + 99 more paid by gen_receipts.py (clones of that receipt), so N + 100 receipts: the
#      last 100 are paid and not yet reported, for the new flow of step 6
#   5. gen_recon.py seed, straight into the store: FLOWS flows `ok` over the oldest FLOWS * 100
#      receipts (1 row in 1000 of another amount), MOVEMENTS movements (year 2026) crediting
#      them with their totals (1 in 100 with another); every reconciliation mark and label
#      removed. This store is the seed each run starts from (a fresh copy).
#   6. RUNS times, on a fresh copy of the seed:
#      a. floor: `sqlite3` running the one query (timed); b. `snodo reconcile rebuild` (timed,
#      time -v), its summary checked and its labels compared with the floor's;
#      c. `snodo reconcile` with nothing pending (baseline), then gen_recon.py flow (100 rows
#      over the 100 unreported receipts, and the hub's mark (entity, iuf)) and `snodo
#      reconcile` again; the difference is the flow's incremental cost; its 100 payments must
#      be RT_IUF,IUF_NO_TES;
#      d. the same for gen_recon.py movement (crediting that flow; mark (entity, iuf,
#      movement)); the 100 payments must be RT_IUF_TES,RT_IUF.
# Every `snodo reconcile` runs with --at ten days after the flows' date, so the grace periods
# ([reconciliation] defaults, 72 h and 120 h) are over: no payment is PENDING.
# Targets (issue 17): rebuild <= 2x the floor, an incremental update <= 50 ms, RSS <= 300 MiB.
# Missing a target still exits 0 (this is a report); failing a step or a check exits non-zero.
# Disk: about 6 KB a receipt (its XML and parsed request), twice (the seed and the run's copy):
# some 15 GB in TMPDIR for N = 1 000 000.
set -euo pipefail

N="${1:-${N:-1000000}}"
RUNS="${RUNS:-3}"
for v in N RUNS; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
        echo "usage: $0 [N]   ($v must be a positive number, got '${!v}')" >&2
        exit 2
    fi
done
FLOWS="${FLOWS:-$((N / 100))}"
MOVEMENTS="${MOVEMENTS:-$FLOWS}"
for v in FLOWS MOVEMENTS; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [ "${!v}" -lt 1 ]; then
        echo "error: $v must be a positive number, got '${!v}' (N is at least 100)" >&2
        exit 2
    fi
done
[ $((FLOWS * 100)) -le "$N" ] || { echo "error: FLOWS * 100 ($((FLOWS * 100))) is more than N ($N)" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=ops/bench/common.sh
. "$ROOT/ops/bench/common.sh"
cd "$ROOT"
for tool in python3 cargo curl sqlite3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is missing: run ops/setup.sh" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "error: /usr/bin/time is missing: run ops/setup.sh" >&2; exit 1; }

BIN="${SNODO_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/snodo}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/snodo-reconcile.XXXXXX")"
HUB=""
cleanup() {
    if [ -n "$HUB" ]; then kill "$HUB" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
log() { echo "== $*" >&2; }
now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
GEN="$ROOT/ops/bench/gen_recon.py"

# ---- 1. build --------------------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release"
    cargo build --release --quiet
fi
[ -x "$BIN" ] || { echo "error: $BIN does not exist" >&2; exit 1; }

PORT=$(free_port)
TAXONOMY="$ROOT/adapters/specs/mypay/tassonomia.csv"
[ -f "$TAXONOMY" ] && export SNODO_TAXONOMY_FILE="$TAXONOMY"
export SNODO_LOG=warn
E=c_g224

# One entity (Comune di Padova, as in config/demo.toml); [reconciliation] left to its defaults.
padova_config "sqlite" "$PORT" >"$TMP/snodo.toml"
cd "$TMP"
"$BIN" validate -c snodo.toml >/dev/null

# ---- 2. positions ----------------------------------------------------------------------------
PAID=$((N + 100))
ROWS=$((PAID + PAID / 10 + 10))
log "generating and importing $ROWS positions (untimed)"
python3 "$ROOT/ops/bench/gen_flow.py" --entity "$E" --iuf RECBENCH --rows "$ROWS" --version 1_3 \
    --bad-ratio 0 --out flows >/dev/null
"$BIN" import -c snodo.toml --entity "$E" --out out flows/$E-RECBENCH-1_3.csv | tail -n 1 >&2

# ---- 3. one receipt through the hub ----------------------------------------------------------
"$BIN" run -c snodo.toml >hub.log 2>&1 &
HUB=$!
wait_ready "$PORT" hub.log
NOTICE=$(sqlite3 var/snodo.db "SELECT '00644060287;3' || iuv FROM positions WHERE entity = '$E' AND status = 'active' AND length(iuv) = 17 ORDER BY id DESC LIMIT 1")
echo "$NOTICE" >notice.txt
"$BIN" sim -c snodo.toml --notices notice.txt --count 1 --ledger ledger >sim-pay.out 2>&1 \
    || { cat sim-pay.out >&2; echo "error: snodo sim could not pay one notice" >&2; exit 1; }
kill "$HUB"; wait "$HUB" 2>/dev/null || true; HUB=""

# ---- 4. N + 99 more receipts -----------------------------------------------------------------
log "cloning that receipt for $((PAID - 1)) more positions (untimed)"
OUT=$(python3 "$ROOT/ops/bench/gen_receipts.py" --db var/snodo.db --ledger ledger --entity "$E" --count "$PAID")
DATE=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["date"])' "$OUT")
RECEIPTS=$(sqlite3 var/snodo.db "SELECT count(*) FROM receipts WHERE entity = '$E'")
[ "$RECEIPTS" = "$PAID" ] || { echo "error: $RECEIPTS receipts in the store, $PAID expected" >&2; exit 1; }

# ---- 5. flows and movements ------------------------------------------------------------------
log "writing $FLOWS flows ($((FLOWS * 100)) rows) and $MOVEMENTS movements (untimed)"
SEED=$(python3 "$GEN" seed --db var/snodo.db --entity "$E" --date "$DATE" --flows "$FLOWS" --movements "$MOVEMENTS")
sqlite3 var/snodo.db "PRAGMA wal_checkpoint(TRUNCATE)" >/dev/null
cp -a var seed
log "seed store $(du -sh seed | cut -f1): $SEED"
# Labels as of ten days after the later of now and the flows' date: every grace period over.
AT=$(python3 -c 'import sys; from datetime import datetime, timedelta, timezone as tz
d = max(datetime.now(tz.utc), datetime.strptime(sys.argv[1], "%Y-%m-%d").replace(tzinfo=tz.utc))
print((d + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ"))' "$DATE")

# The floor: every payment's classes (the rules of docs/RECONCILIATION.md this data can meet:
# no notification, no revoked or implicit row) and every movement's, in one statement. Grace
# periods as [reconciliation]'s defaults: 3 days after the receipt, 5 after the flow's date.
cat >floor.sql <<EOF
CREATE TABLE floor AS
SELECT key, CASE WHEN s = '' AND ((unrep AND NOT rover) OR (uncred AND NOT cover)) THEN 'PENDING'
                 ELSE substr(s, 2) END AS classes
FROM (
  SELECT key, unrep, rover, uncred, cover,
    CASE WHEN rap AND tf = total THEN ',RT_IUF_TES' ELSE '' END
    || CASE WHEN rap THEN ',RT_IUF' ELSE '' END
    || CASE WHEN NOT rep AND tv = paid THEN ',RT_TES' ELSE '' END
    || CASE WHEN unrep AND rover THEN ',RT_NO_IUF' ELSE '' END
    || CASE WHEN uncred AND cover THEN ',IUF_NO_TES' ELSE '' END
    || CASE WHEN rep AND (tf <> total OR tv <> total) THEN ',IUF_TES_DIV_IMP' ELSE '' END AS s
  FROM (
    SELECT key, paid, rep, rap, total, tf, tv, rover, cover,
           tv IS NULL AND NOT rap AS unrep, rep AND tf IS NULL AND tv IS NULL AS uncred
    FROM (
      SELECT 'P:' || r.iuv || ':' || r.receipt_id || ':1' AS key, r.amount_cents AS paid,
             f.id IS NOT NULL AS rep,
             COALESCE(f.id IS NOT NULL AND p.amount_cents = r.amount_cents, 0) AS rap,
             COALESCE(f.declared_cents, f.computed_cents) AS total, t.s AS tf, v.s AS tv,
             julianday(r.received_at) + 3 <= julianday('$AT') AS rover,
             COALESCE(julianday(f.flow_date) + 5 <= julianday('$AT'), 1) AS cover
      FROM receipts r
      LEFT JOIN (report_payments p JOIN report_flows f ON f.id = p.flow AND f.status = 'ok'
                 AND f.superseded_by IS NULL AND p.esito <> 3)
        ON p.entity = r.entity AND p.iuv = r.iuv AND p.iur = r.receipt_id AND p.link_index = 1
      LEFT JOIN (SELECT iuf, SUM(amount_cents) AS s FROM treasury_movements
                 WHERE entity = '$E' AND iuf IS NOT NULL GROUP BY iuf) t ON t.iuf = f.iuf
      LEFT JOIN (SELECT iuv, SUM(amount_cents) AS s FROM treasury_movements
                 WHERE entity = '$E' AND iuv IS NOT NULL GROUP BY iuv) v ON v.iuv = r.iuv
      WHERE r.entity = '$E' AND r.conflict_of IS NULL
    )
  )
)
UNION ALL
SELECT 'M:' || m.year || '-' || m.bill,
       CASE WHEN m.iuf IS NULL AND m.iuv IS NULL THEN 'TES_NO_MATCH'
            WHEN EXISTS (SELECT 1 FROM report_flows f WHERE f.entity = m.entity AND f.iuf = m.iuf
                           AND f.status = 'ok' AND f.superseded_by IS NULL)
              OR EXISTS (SELECT 1 FROM receipts r WHERE r.entity = m.entity AND r.iuv = m.iuv)
            THEN '' ELSE 'TES_NO_IUF_OR_IUV' END
FROM treasury_movements m WHERE m.entity = '$E';
EOF

# ---- 6. the runs -----------------------------------------------------------------------------
timed() { # output file, command...; sets SECS, RSS_MIB
    local out="$1"; shift
    sync
    local t0 t1
    t0=$(now_ns)
    /usr/bin/time -v -o time.txt "$@" >"$out" 2>"$out.err" \
        || { cat "$out" "$out.err" >&2; echo "error: $* failed" >&2; exit 1; }
    t1=$(now_ns)
    SECS=$(secs "$t0" "$t1")
    RSS_MIB=$(awk -F: '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' time.txt)
}
reconcile() { timed "$1" "$BIN" reconcile -c snodo.toml --entity "$E" --at "$AT" "${@:2}"; }
summary() { # summary JSON line, field path -> value (0 when absent)
    python3 -c 'import json,sys; v=json.loads(sys.argv[1])
for k in sys.argv[2].split("."): v = v.get(k, 0) if isinstance(v, dict) else 0
print(v)' "$1" "$2"
}
classes_of_flow() { # flow id -> "classes count" lines of its payments' items
    sqlite3 var/snodo.db "SELECT i.classes, count(*) FROM report_payments p JOIN recon_items i
        ON i.entity = p.entity AND i.key = 'P:' || p.iuv || ':' || p.iur || ':1'
        WHERE p.flow = $1 GROUP BY i.classes"
}

FLOOR_T="" REBUILD_T="" REBUILD_RSS=0 FLOW_T="" MOV_T="" BASE_T="" INC_RSS=0
for r in $(seq "$RUNS"); do
    rm -rf var && cp -a seed var
    timed floor.out sqlite3 var/snodo.db ".read floor.sql"
    FLOOR_T="$FLOOR_T $SECS"
    reconcile rebuild.out rebuild
    REBUILD_T="$REBUILD_T $SECS"
    REBUILD_RSS=$(awk -v a="$REBUILD_RSS" -v b="$RSS_MIB" 'BEGIN { print (b > a ? b : a) }')
    SUMMARY=$(tail -n 1 rebuild.out)
    log "run $r: floor $(echo "$FLOOR_T" | awk '{ print $NF }') s, rebuild $SECS s, peak RSS $RSS_MIB MiB; $SUMMARY"
    got_p=$(summary "$SUMMARY" payments) got_m=$(summary "$SUMMARY" movements)
    if [ "$got_p" != "$PAID" ] || [ "$got_m" != "$MOVEMENTS" ]; then
        echo "error: rebuild labelled $got_p payments and $got_m movements, $PAID and $MOVEMENTS expected" >&2
        exit 1
    fi
    EXPECT="RT_IUF_TES RT_NO_IUF"
    [ "$(summary "$SEED" odd_movements)" = 0 ] || EXPECT="$EXPECT IUF_TES_DIV_IMP"
    for c in $EXPECT; do
        [ "$(summary "$SUMMARY" "classes.$c")" -gt 0 ] || { echo "error: no $c after the rebuild" >&2; exit 1; }
    done
    # The rebuild's labels against the floor's, item by item (untimed).
    DIFF=$(sqlite3 var/snodo.db "SELECT count(*) FROM floor f LEFT JOIN recon_items i
        ON i.entity = '$E' AND i.key = f.key WHERE i.classes IS NOT f.classes")
    EXTRA=$(sqlite3 var/snodo.db "SELECT (SELECT count(*) FROM recon_items WHERE entity = '$E')
        - (SELECT count(*) FROM floor)")
    if [ "$DIFF" != 0 ] || [ "$EXTRA" != 0 ]; then
        sqlite3 var/snodo.db "SELECT f.key, f.classes, i.classes FROM floor f LEFT JOIN recon_items i
            ON i.entity = '$E' AND i.key = f.key WHERE i.classes IS NOT f.classes LIMIT 5" >&2
        echo "error: $DIFF item(s) labelled otherwise than by the floor, $EXTRA item(s) more than it" >&2
        exit 1
    fi

    # Incremental: one new flow, then one new movement; each against the same command idle.
    reconcile idle1.out; B1=$SECS
    NEW=$(python3 "$GEN" flow --db var/snodo.db --entity "$E" --date "$DATE")
    FLOW_ID=$(summary "$NEW" flow)
    reconcile flow.out; F=$SECS
    INC_RSS=$(awk -v a="$INC_RSS" -v b="$RSS_MIB" 'BEGIN { print (b > a ? b : a) }')
    got=$(classes_of_flow "$FLOW_ID")
    [ "$got" = "RT_IUF,IUF_NO_TES|100" ] || { echo "error: the new flow's payments are '$got', expected 'RT_IUF,IUF_NO_TES|100'" >&2; exit 1; }
    reconcile idle2.out; B2=$SECS
    MOV=$(python3 "$GEN" movement --db var/snodo.db --entity "$E" --date "$DATE")
    reconcile movement.out; M=$SECS
    INC_RSS=$(awk -v a="$INC_RSS" -v b="$RSS_MIB" 'BEGIN { print (b > a ? b : a) }')
    got=$(classes_of_flow "$FLOW_ID")
    [ "$got" = "RT_IUF_TES,RT_IUF|100" ] || { echo "error: after its movement the new flow's payments are '$got', expected 'RT_IUF_TES,RT_IUF|100'" >&2; exit 1; }
    KEY="M:$(summary "$MOV" movement)"
    got=$(sqlite3 var/snodo.db "SELECT '[' || classes || ']' FROM recon_items WHERE entity = '$E' AND key = '$KEY'")
    [ "$got" = "[]" ] || { echo "error: movement $KEY labelled '$got', expected no class" >&2; exit 1; }
    [ "$(sqlite3 var/snodo.db 'SELECT count(*) FROM recon_dirty')" = 0 ] || { echo "error: marks left after reconcile" >&2; exit 1; }
    log "run $r: idle $B1 s, new flow $F s; idle $B2 s, new movement $M s"
    BASE_T="$BASE_T $B1 $B2"
    FLOW_T="$FLOW_T $(awk -v a="$F" -v b="$B1" 'BEGIN { printf "%.3f", a - b }')"
    MOV_T="$MOV_T $(awk -v a="$M" -v b="$B2" 'BEGIN { printf "%.3f", a - b }')"
done

# ---- report ----------------------------------------------------------------------------------
FL=$(echo "$FLOOR_T" | median) RB=$(echo "$REBUILD_T" | median) BS=$(echo "$BASE_T" | median)
FI=$(echo "$FLOW_T" | median) MI=$(echo "$MOV_T" | median)
echo "labels after rebuild: $SUMMARY"
awk -v n="$PAID" -v flows="$FLOWS" -v movs="$MOVEMENTS" -v runs="$RUNS" -v fl="$FL" -v rb="$RB" \
    -v bs="$BS" -v fi="$FI" -v mi="$MI" -v fls="$FLOOR_T" -v rbs="$REBUILD_T" -v bss="$BASE_T" \
    -v fis="$FLOW_T" -v mis="$MOV_T" -v rss="$REBUILD_RSS" -v irss="$INC_RSS" 'BEGIN {
    printf "data                 %d receipts, %d flows of 100, %d movements, one entity; median of %d runs\n", n, flows, movs, runs
    printf "floor (sqlite3)      %.3f s   (runs%s; one CREATE TABLE AS SELECT of every item'"'"'s classes)\n", fl, fls
    printf "rebuild              %.3f s   (runs%s) %.0f payments/s  %.2fx floor  peak RSS %s MiB\n", rb, rbs, n / rb, rb / fl, rss
    printf "reconcile, idle      %.3f s   (runs%s; start, nothing pending, summary)\n", bs, bss
    printf "+ one flow (100)     %+.3f s   (runs%s) over idle\n", fi, fis
    printf "+ one movement       %+.3f s   (runs%s) over idle; peak RSS %s MiB\n", mi, mis, irss
    printf "targets: rebuild <= 2x floor %s; incremental <= 50 ms: flow %s, movement %s; RSS <= 300 MiB %s\n",
        (rb <= 2 * fl ? "ok" : "MISSED"), (fi <= 0.05 ? "ok" : "MISSED"), (mi <= 0.05 ? "ok" : "MISSED"),
        (rss <= 300 && irss <= 300 ? "ok" : "MISSED")
}'
