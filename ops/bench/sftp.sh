#!/usr/bin/env bash
# SFTP intake benchmark: time for `snodo run` to pull an N-row MyPay 1_4 flow from the loopback
# OpenSSH server of ops/sshd.sh through an `sftp` source and import it (until the IUV outcome
# zip appears in the remote out/ folder), against the floor of the OpenSSH `sftp` client
# downloading the same file, on this machine, in the same run.
#
#   ops/bench/sftp.sh [N]            (default N = 1000000; run from anywhere in the repo)
#
# Needs the test sshd (ops/setup.sh, or ops/sshd.sh, starts it). Steps, all in a fresh temporary
# directory and a fresh remote folder (both removed at the end; KEEP=1 keeps them):
#   1. cargo build --release (SKIP_BUILD=1 skips it; SNODO_BIN=path uses another binary)
#   2. ops/bench/gen_flow.py: the N-row flow (zip, ~2% bad rows, inserts only), uploaded once
#   3. the floor: `sftp` getting the flow, host key pinned (timed, RUNS times, default 3)
#   4. snodo: per run a fresh hub (new store) is started and ready; the flow is renamed into the
#      watched folder on the server (the clock starts) and the clock stops when <stem>_IUV.zip
#      is listed in the run's remote out/ folder (RUNS times)
# The snodo side includes up to one poll period (its schedule is every second) and the listing
# loop's granularity (one `sftp ls` per ~0.3 s). Exits non-zero only when something fails.
set -euo pipefail

N="${1:-1000000}"
if ! [[ "$N" =~ ^[0-9]+$ ]] || [ "$N" -lt 1 ]; then
    echo "usage: $0 [ROWS]   (a positive number of rows, default 1000000)" >&2
    exit 2
fi
RUNS="${RUNS:-3}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

for tool in python3 cargo sftp curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool is not installed; run ops/setup.sh" >&2
        exit 1
    fi
done

STATE="${SNODO_TEST_SSHD_DIR:-/var/tmp/snodo-sshd}"
for f in port user home host_fingerprint host_ed25519_key.pub client_ed25519; do
    if [ ! -r "$STATE/$f" ]; then
        echo "error: the test sshd is not set up ($STATE/$f missing): run ops/setup.sh (or ops/sshd.sh)" >&2
        exit 1
    fi
done
PORT="${SNODO_TEST_SSHD_PORT:-$(cat "$STATE/port")}"
SUSER="$(cat "$STATE/user")"
SHOME="$(cat "$STATE/home")"
KEY="$STATE/client_ed25519"
FPR="$(cat "$STATE/host_fingerprint")"
if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "error: the test sshd is not running on 127.0.0.1:$PORT: run ops/setup.sh (or ops/sshd.sh)" >&2
    exit 1
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/snodo-bench-sftp.XXXXXX")"
REMOTE="$SHOME/bench-$$-$(date +%s)"
HUB_PID=""
log() { echo "== $*" >&2; }

# The host key is pinned for the OpenSSH client too: no "accept any" on either side.
KNOWN="$TMP/known_hosts"
echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$STATE/host_ed25519_key.pub")" >"$KNOWN"
SFTP=(sftp -q -P "$PORT" -i "$KEY" -o "UserKnownHostsFile=$KNOWN" -o StrictHostKeyChecking=yes
      -o LogLevel=ERROR)
# Runs sftp batch commands given as arguments, one per line.
sftp_do() { printf '%s\n' "$@" | "${SFTP[@]}" -b - "$SUSER@127.0.0.1"; }

cleanup() {
    if [ -n "$HUB_PID" ]; then
        kill "$HUB_PID" 2>/dev/null || true
        wait "$HUB_PID" 2>/dev/null || true
    fi
    if [ "${KEEP:-0}" = "1" ]; then
        echo "kept $TMP, and $REMOTE on the test sshd" >&2
        return
    fi
    # "-" lets a batch command fail (a folder a failed run never made) and go on; sftp's rm
    # takes globs, its rmdir does not.
    local cmds=("-rm $REMOTE/src/*" "-rm $REMOTE/in/*" "-rm $REMOTE/in/failed/*"
                "-rm $REMOTE/in/archive/*/*" "-rm $REMOTE/in/processing/*/*")
    local d
    for d in $(sftp_do "ls -1 $REMOTE/in/archive" "ls -1 $REMOTE/in/processing" 2>/dev/null \
               | grep -v '^sftp>' || true); do
        cmds+=("-rmdir $d")
    done
    for d in $(seq "$RUNS"); do
        cmds+=("-rm $REMOTE/out-$d/*" "-rmdir $REMOTE/out-$d")
    done
    cmds+=("-rmdir $REMOTE/in/archive" "-rmdir $REMOTE/in/processing" "-rmdir $REMOTE/in/failed"
           "-rmdir $REMOTE/in" "-rmdir $REMOTE/src" "-rmdir $REMOTE")
    sftp_do "${cmds[@]}" >/dev/null 2>&1 || true
    # Last: $TMP holds the known_hosts file sftp_do needs.
    rm -rf "$TMP"
}
trap cleanup EXIT

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
TAXONOMY="$ROOT/adapters/specs/mypay/tassonomia.csv"
if [ -f "$TAXONOMY" ]; then
    SNODO_TAXONOMY_FILE="$(cd "$(dirname "$TAXONOMY")" && pwd)/$(basename "$TAXONOMY")"
    export SNODO_TAXONOMY_FILE
else
    log "warning: $TAXONOMY not found; taxonomy codes are checked by pattern only"
fi

# ---- 2. generate and upload ------------------------------------------------------------------
log "generating $N rows (1_4, zip)"
GEN_JSON="$(python3 ops/bench/gen_flow.py --entity c_g224 --iuf SFTPBENCH --rows "$N" \
    --version 1_4 --seed 1 --zip --out "$TMP/flows")"
FLOW="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["file"])' "$GEN_JSON")"
NAME="$(basename "$FLOW")"
STEM="${NAME%.zip}"
BYTES="$(stat -c %s "$FLOW")"
log "uploading $NAME ($BYTES bytes) to $REMOTE/src"
sftp_do "mkdir $REMOTE" "mkdir $REMOTE/src" "mkdir $REMOTE/in" "put $FLOW $REMOTE/src/$NAME" >/dev/null

median() { printf '%s\n' "$@" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
now() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }

# ---- 3. the floor: the OpenSSH sftp client ----------------------------------------------------
FLOOR_TIMES=()
for run in $(seq "$RUNS"); do
    rm -f "$TMP/floor.zip"
    sync
    log "floor: sftp get (timed, run $run of $RUNS)"
    t0="$(now)"
    "${SFTP[@]}" "$SUSER@127.0.0.1:$REMOTE/src/$NAME" "$TMP/floor.zip" >/dev/null
    t1="$(now)"
    FLOOR_TIMES+=("$(secs "$t0" "$t1")")
    if ! cmp -s "$FLOW" "$TMP/floor.zip"; then
        echo "error: the sftp client's download differs from the flow" >&2
        exit 1
    fi
done
FLOOR_SECS="$(median "${FLOOR_TIMES[@]}")"

# ---- 4. snodo run with an sftp source ---------------------------------------------------------
SNODO_TIMES=()
PEAK_KB=0
for run in $(seq "$RUNS"); do
    HUB="$TMP/hub-$run"
    mkdir -p "$HUB"
    HTTP_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
    python3 - "$ROOT/config/demo.toml" "$HUB/snodo.toml" "$HTTP_PORT" "$PORT" "$SUSER" "$KEY" \
        "$FPR" "$REMOTE" "$run" "$HUB/staging" <<'PY'
import sys
src, dst, http, port, user, key, fpr, remote, run, staging = sys.argv[1:]
cfg = open(src).read()
conn = ('{ connector = "sftp", host = "127.0.0.1", port = %s, user = "%s", key = "%s", '
        'known_host = "%s", path = "%s/' % (port, user, key, fpr, remote))
old_from = 'from = { connector = "dir", path = "var/c_g224/in", schedule = "*/5 * * * * *" }'
old_out = 'outcomes = { connector = "dir", path = "var/c_g224/out" }'
assert old_from in cfg and old_out in cfg, "config/demo.toml changed: update ops/bench/sftp.sh"
cfg = cfg.replace(old_from, 'from = %sin", schedule = "* * * * * *", settle = "0s", '
                  'staging = "%s" }' % (conn, staging))
cfg = cfg.replace(old_out, 'outcomes = %sout-%s" }' % (conn, run))
cfg = cfg.replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:%s"' % http)
open(dst, "w").write(cfg)
PY
    (cd "$HUB" && exec "$BIN" run -c snodo.toml >"$HUB/hub.out" 2>"$HUB/hub.err") &
    HUB_PID=$!
    for _ in $(seq 200); do
        curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && break
        sleep 0.1
    done
    if ! curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1; then
        cat "$HUB/hub.err" >&2
        echo "error: snodo run did not start" >&2
        exit 1
    fi
    sync
    log "snodo: rename into in/, wait for ${STEM}_IUV.zip in out-$run/ (timed, run $run of $RUNS)"
    t0="$(now)"
    sftp_do "rename $REMOTE/src/$NAME $REMOTE/in/$NAME" >/dev/null
    until sftp_do "ls -1 $REMOTE/out-$run" 2>/dev/null | grep "/${STEM}_IUV.zip$" >/dev/null; do
        if ! kill -0 "$HUB_PID" 2>/dev/null; then
            cat "$HUB/hub.err" >&2
            echo "error: snodo run exited" >&2
            exit 1
        fi
        if sftp_do "ls -1 $REMOTE/in/failed" 2>/dev/null | grep "/$NAME\$" >/dev/null; then
            echo "error: the flow was refused (see $REMOTE/in/failed, KEEP=1 keeps it)" >&2
            exit 1
        fi
    done
    t1="$(now)"
    SNODO_TIMES+=("$(secs "$t0" "$t1")")
    kb="$(awk '/VmHWM/ { print $2 }' "/proc/$HUB_PID/status" 2>/dev/null || true)"
    if [ "${kb:-0}" -gt "$PEAK_KB" ]; then PEAK_KB="$kb"; fi
    # Put the flow back for the next run once the hub has archived it, then stop the hub.
    month="$(date +%Y_%m)"
    back=""
    for _ in $(seq 100); do
        if sftp_do "rename $REMOTE/in/archive/$month/$NAME $REMOTE/src/$NAME" >/dev/null 2>&1; then
            back=1
            break
        fi
        sleep 0.2
    done
    kill -TERM "$HUB_PID"
    wait "$HUB_PID" || true
    HUB_PID=""
    if [ -z "$back" ] && [ "$run" -lt "$RUNS" ]; then
        echo "error: the flow was not archived in $REMOTE/in/archive/$month" >&2
        exit 1
    fi
done
SNODO_SECS="$(median "${SNODO_TIMES[@]}")"

# ---- report ----------------------------------------------------------------------------------
awk -v n="$N" -v bytes="$BYTES" -v s="$SNODO_SECS" -v f="$FLOOR_SECS" -v kb="$PEAK_KB" \
    -v st="${SNODO_TIMES[*]}" -v ft="${FLOOR_TIMES[*]}" '
BEGIN {
    printf "rows                  %d (zip of %.1f MiB)\n", n, bytes / 1048576
    printf "snodo (pull + import) %.3f s   %.0f rows/s   (median; runs: %s)\n", s, (s > 0 ? n / s : 0), st
    printf "floor (sftp get)      %.3f s   %.1f MiB/s    (median; runs: %s)\n", f, (f > 0 ? bytes / 1048576 / f : 0), ft
    printf "ratio snodo/floor     %.1f\n", (f > 0 ? s / f : 0)
    printf "peak RSS (snodo run)  %.1f MiB\n", kb / 1024
}'
