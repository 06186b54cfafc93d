#!/usr/bin/env bash
# Notices benchmark: `snodo import --notices` of an N-position MyPay 1_4 flow, the notices
# rendered and zipped, without and with the Poste section, against the floor of rendering the
# same notices' QR codes alone with the same library and threads, in the same run.
#
#   ops/bench/notices.sh [N]          (default N = 10000; run from anywhere in the repo)
#
# Steps, in a fresh temporary directory (removed at the end; KEEP=1 keeps it):
#   1. cargo build --release of snodo and the floor (adapters/examples/qr_floor.rs)
#      (SKIP_BUILD=1 skips it)
#   2. ops/bench/gen_flow.py: N valid TARI inserts with generated IUVs
#   3. snodo import --notices, timed (wall, peak RSS); the notices' own time is the hub's
#      "flow notices written" log line; once on the demo config, once with a postal account
#      and Poste's authorisation on TARI (every notice then has the Poste slip)
#   4. the floor: qr_floor on the payloads of the same notices
# Targets: >= 500 notices/s, peak RSS <= 200 MiB. Missing one still exits 0 (this is a report);
# failing to build, generate or import exits non-zero.
set -euo pipefail

N="${1:-10000}"
if ! [[ "$N" =~ ^[0-9]+$ ]] || [ "$N" -lt 1 ]; then
    echo "usage: $0 [POSITIONS]   (a positive number, default 10000)" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/snodo-notices.XXXXXX")"
cleanup() { if [ "${KEEP:-0}" = "1" ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi; }
trap cleanup EXIT
log() { echo "== $*" >&2; }

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release/snodo"
FLOOR="$TARGET_DIR/release/examples/qr_floor"
if [ "${SKIP_BUILD:-0}" != "1" ]; then
    log "cargo build --release (snodo, qr_floor)"
    cargo build --release --bin snodo >&2
    cargo build --release -p snodo-adapters --example qr_floor >&2
fi
for b in "$BIN" "$FLOOR"; do
    [ -x "$b" ] || { echo "error: $b does not exist" >&2; exit 1; }
done
THREADS="${NOTICE_THREADS:-$(nproc)}"

log "generating $N positions"
mkdir -p "$TMP/flows"
GEN_JSON="$(python3 ops/bench/gen_flow.py --entity c_g224 --iuf NOTICES --rows "$N" \
    --version 1_4 --seed 7 --bad-ratio 0 --zip --out "$TMP/flows")"
FLOW="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["file"])' "$GEN_JSON")"

TAXONOMY="$ROOT/adapters/specs/mypay/tassonomia.csv"
export SNODO_TAXONOMY_FILE="$TAXONOMY"
export SNODO_LOG=info

# One timed import with notices; sets WALL, RSS_KB, NOTICES, NOTICE_SECONDS.
run() {
    local name="$1" config="$2" dir="$TMP/$1"
    mkdir -p "$dir/out"
    sync
    local t0 t1
    t0="$(date +%s%N)"
    if ! SNODO__HUB__DATA_DIR="$dir/var" SNODO__HUB__NOTICE_THREADS="$THREADS" \
        /usr/bin/time -v -o "$dir/time" "$BIN" import -c "$config" --entity c_g224 \
        --out "$dir/out" --notices "$FLOW" >"$dir/stdout" 2>"$dir/stderr"; then
        cat "$dir/stderr" >&2
        echo "error: snodo import --notices failed ($name)" >&2
        exit 1
    fi
    t1="$(date +%s%N)"
    WALL="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
    RSS_KB="$(awk -F': *' '/Maximum resident set size/ { print $2 }' "$dir/time")"
    read -r NOTICES NOTICE_SECONDS < <(python3 - "$dir/stderr" <<'PY'
import re, sys
text = re.sub(r"\x1b\[[0-9;]*m", "", open(sys.argv[1]).read())
m = re.search(r"flow notices written.*?notices=(\d+).*?elapsed=([0-9.]+)(ns|µs|us|ms|s)\b", text)
if not m:
    sys.exit("no 'flow notices written' line in the log")
scale = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(3)]
print(m.group(1), "%.3f" % (float(m.group(2)) * scale))
PY
)
    ZIP="$(ls "$dir"/out/*_AVVISI_PDF.zip)"
    # Rows accepted without an IUV (flgGeneraIuv false, none given) have no notice number.
    local expected
    expected="$(python3 - "$(ls "$dir"/out/*_IUV.zip)" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
print(sum(1 for l in z.read(z.namelist()[0]).decode().splitlines()[1:] if l.split(";")[1]))
PY
)"
    [ "$NOTICES" = "$expected" ] || {
        echo "error: $NOTICES notices for $expected positions with a notice number ($name)" >&2
        exit 1
    }
}

cp config/demo.toml "$TMP/plain.toml"
log "import --notices, demo config ($THREADS threads)"
run plain "$TMP/plain.toml"
PLAIN=("$WALL" "$RSS_KB" "$NOTICE_SECONDS" "$(stat -c %s "$ZIP")" "$NOTICES")
IUV_ZIP="$(ls "$TMP"/plain/out/*_IUV.zip)"

# TARI and MENSA with a postal account, Padova with Poste's authorisation: every notice has the slip.
python3 - "$TMP/plain.toml" "$TMP/poste.toml" <<'PY'
import sys
cfg = open(sys.argv[1]).read()
cfg = cfg.replace('segregation_code = "01"\n',
    'segregation_code = "01"\nposte_authorisation = "AUT. DB/SSIC/E 12345 DEL 01/01/2020"\n', 1)
for iban in ("IT60X0542811101000000123456", "IT90J0200812100000041234567"):
    cfg = cfg.replace('iban = "%s"\n' % iban,
        'iban = "%s"\npostal_iban = "IT24M0760112100000012345678"\n' % iban, 1)
open(sys.argv[2], "w").write(cfg)
PY
log "import --notices, with the Poste section"
run poste "$TMP/poste.toml"
POSTE=("$WALL" "$RSS_KB" "$NOTICE_SECONDS" "$(stat -c %s "$ZIP")" "$NOTICES")

log "floor: the same notices' QR codes alone ($THREADS threads)"
python3 - "$IUV_ZIP" >"$TMP/payloads.txt" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
lines = z.read(z.namelist()[0]).decode().splitlines()[1:]
for l in lines:
    f = l.split(";")
    if not f[1]:
        continue
    cents = int(f[13].replace(".", ""))
    print("PAGOPA|002|3%s|00644060287|%d" % (f[1], cents))
PY
FLOOR_OUT="$("$FLOOR" "$THREADS" <"$TMP/payloads.txt")"
FLOOR_SECONDS="$(echo "$FLOOR_OUT" | sed -E 's/.*seconds=([0-9.]+).*/\1/')"

python3 - "$N" "$THREADS" "$FLOOR_SECONDS" "${PLAIN[@]}" "${POSTE[@]}" <<'PY'
import sys
n, threads, floor = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
rows = [("without Poste", sys.argv[4:9]), ("with Poste", sys.argv[9:14])]
notices = int(rows[0][1][4])
print(f"notices benchmark: {n} positions, {notices} with a notice number, {threads} rendering threads")
print(f"floor (their QR codes alone): {floor:.3f} s = {notices / max(floor, 1e-9):,.0f} codes/s")
print(f"{'case':<15} {'notices/s':>10} {'x floor':>8} {'notices s':>10} {'import wall s':>14} {'peak RSS MiB':>13} {'zip MiB':>8}")
for name, (wall, rss_kb, secs, size, count) in rows:
    secs = float(secs)
    rate = int(count) / max(secs, 1e-9)
    rss = int(rss_kb) / 1024
    print(f"{name:<15} {rate:>10,.0f} {secs / max(floor, 1e-9):>8.1f} {secs:>10.3f} {float(wall):>14.3f} {rss:>13.1f} {int(size) / 2**20:>8.1f}")
    print(f"  target >= 500 notices/s: {'met' if rate >= 500 else 'MISSED'}; "
          f"RSS <= 200 MiB: {'met' if rss <= 200 else 'MISSED'}")
PY
