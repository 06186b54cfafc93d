#!/usr/bin/env bash
# SOAP over TLS with client authentication, side by side with plain HTTP in the same run: with N
# positions in the store (default 200 000), the same hub home is served twice, one after the
# other — plain HTTP (the floor), then TLS with `node_auth` mtls (a CA, the hub's certificate and
# the node's client certificate made here with openssl) — and `snodo sim --verify-only` drives
# paVerifyPaymentNotice against each: at a fixed R req/s (default 1 000) for D seconds (default
# 20), then at full concurrency C (default 32) for D seconds. wrk cannot present a client
# certificate; the sim can (--ca-file, --client-cert, --client-key). Connections are kept alive
# (as the node does), so the handshake is paid once per connection.
# Prints throughput and p50/p99 for both and the TLS/plain ratios.
#
#   ops/bench/soap_tls.sh [N] [D] [R] [C]   (SKIP_BUILD=1 reuses the release binary; KEEP=1 keeps the dir)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
N="${1:-200000}"
D="${2:-20}"
R="${3:-1000}"
C="${4:-32}"
for tool in openssl sqlite3 python3 curl; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run ops/setup.sh" >&2; exit 1; }
done
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --quiet --bin snodo
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/snodo"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/snodo-soap-tls.XXXXXX")"
HUB=""
cleanup() { [ -n "$HUB" ] && kill "$HUB" 2>/dev/null; [ "${KEEP:-0}" = 1 ] && echo "kept $TMP" || rm -rf "$TMP"; }
trap cleanup EXIT
log() { echo "== $*" >&2; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SNODO__HUB__DATA_DIR="$TMP/var" SNODO__HTTP__LISTEN="127.0.0.1:$PORT" SNODO_LOG=warn
TAXONOMY="$ROOT/adapters/specs/mypay/tassonomia.csv"
[ -f "$TAXONOMY" ] && export SNODO_TAXONOMY_FILE="$TAXONOMY"

log "certificates: a CA standing for pagoPA's, the hub's (IP 127.0.0.1), the node's client certificate"
C_DIR="$TMP/certs"
mkdir -p "$C_DIR"
(
  cd "$C_DIR"
  ossl() { openssl "$@" >/dev/null 2>&1; }
  ossl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca -keyout ca.key -out ca.pem
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >server.ext
  printf 'subjectAltName=DNS:nodo.pagopa.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' >node.ext
  for n in server node; do
    subj=/CN=127.0.0.1
    [ "$n" = node ] && subj=/C=IT/O=PagoPA/CN=nodo.pagopa.test
    ossl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$n.key" -out "$n.csr"
    ossl x509 -req -in "$n.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile "$n.ext" -out "$n.pem"
  done
)

# The same demo configuration twice: plain, and with [http.tls] and node_auth mtls.
cp config/demo.toml "$TMP/plain.toml"
sed "s|^\[pagopa\]$|[pagopa]\nnode_auth = { mode = \"mtls\", ca_file = \"$C_DIR/ca.pem\", subject = \"CN=nodo.pagopa.test, O=PagoPA\" }|" \
  config/demo.toml >"$TMP/tls.toml"
printf '\n[http.tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$C_DIR/server.pem" "$C_DIR/server.key" >>"$TMP/tls.toml"
"$BIN" validate -c "$TMP/tls.toml" >/dev/null

log "generating and importing $N positions (untimed)"
python3 ops/bench/gen_flow.py --entity c_g224 --iuf SOAPBENCH --rows "$N" --bad-ratio 0 --out "$TMP/flows" >/dev/null
"$BIN" import -c "$TMP/plain.toml" --entity c_g224 --out "$TMP/out" "$TMP/flows/c_g224-SOAPBENCH-1_4.csv" | tail -n 1 >&2
# Notice numbers of aux digit 3 are "3" + the IUV: take 100 000 active ones at random.
sqlite3 "$TMP/var/snodo.db" "SELECT '00644060287;3' || iuv FROM positions WHERE status = 'active' AND length(iuv) = 17 ORDER BY random() LIMIT 100000" >"$TMP/notices.txt"
log "$(wc -l <"$TMP/notices.txt") notice numbers sampled"

# start_hub CONFIG URL CURL_ARGS...: serves until stop_hub.
start_hub() {
  local cfg=$1 url=$2
  shift 2
  "$BIN" run -c "$cfg" >>"$TMP/hub.log" 2>&1 &
  HUB=$!
  for _ in $(seq 200); do curl -sf "$@" "$url/readyz" >/dev/null && return; sleep 0.1; done
  echo "the hub did not start ($cfg): $(tail -n 5 "$TMP/hub.log")" >&2
  exit 1
}
stop_hub() { kill "$HUB"; wait "$HUB" 2>/dev/null || true; HUB=""; }

# measure NAME CONFIG SIM_ARGS...: the fixed rate, then full concurrency.
measure() {
  local name=$1 cfg=$2
  shift 2
  log "$name: paVerifyPaymentNotice at $R req/s for ${D}s"
  "$BIN" sim -c "$cfg" --notices "$TMP/notices.txt" --verify-only --rate "$R" --count $((R * D)) \
    --concurrency "$C" "$@" >"$TMP/$name-rate.txt"
  log "$name: paVerifyPaymentNotice at concurrency $C for ${D}s"
  "$BIN" sim -c "$cfg" --notices "$TMP/notices.txt" --verify-only --duration "${D}s" --count 100000000 \
    --concurrency "$C" "$@" >"$TMP/$name-full.txt"
  RSS_OF[$name]=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$HUB/status")
}
declare -A RSS_OF

start_hub "$TMP/plain.toml" "http://127.0.0.1:$PORT"
measure plain "$TMP/plain.toml"
stop_hub
start_hub "$TMP/tls.toml" "https://127.0.0.1:$PORT" --cacert "$C_DIR/ca.pem" --cert "$C_DIR/node.pem" --key "$C_DIR/node.key"
measure tls "$TMP/tls.toml" --ca-file "$C_DIR/ca.pem" --client-cert "$C_DIR/node.pem" --client-key "$C_DIR/node.key"
stop_hub

# field FILE KEY: KEY=value from the verify line (or the total line for calls_per_s).
field() { awk -v k="$2" '/^paVerifyPaymentNotice calls=|^total / { for (i = 1; i <= NF; i++) if (index($i, k "=") == 1) { print substr($i, length(k) + 2); exit } }' "$1"; }
echo "positions in store   $N   (notices sampled: $(wc -l <"$TMP/notices.txt"); ${D}s per measure; client: snodo sim on the same machine)"
printf "%-22s %12s %9s %9s %9s %7s %7s\n" "" "verify/s" "p50_ms" "p90_ms" "p99_ms" "err" "RSS_MiB"
for name in plain tls; do
  for kind in rate full; do
    f="$TMP/$name-$kind.txt"
    label="$name @$R/s"
    [ "$kind" = full ] && label="$name c=$C"
    printf "%-22s %12s %9s %9s %9s %7s %7s\n" "$label" "$(field "$f" calls_per_s)" "$(field "$f" p50_ms)" \
      "$(field "$f" p90_ms)" "$(field "$f" p99_ms)" "$(field "$f" err)" "${RSS_OF[$name]}"
  done
done
awk -v pf="$(field "$TMP/plain-full.txt" calls_per_s)" -v tf="$(field "$TMP/tls-full.txt" calls_per_s)" \
  -v pr="$(field "$TMP/plain-rate.txt" p99_ms)" -v tr="$(field "$TMP/tls-rate.txt" p99_ms)" \
  -v p5="$(field "$TMP/plain-rate.txt" p50_ms)" -v t5="$(field "$TMP/tls-rate.txt" p50_ms)" 'BEGIN {
  printf "TLS / plain          throughput at c=%s %.2f   p50 at %s/s %.2f   p99 at %s/s %.2f\n", "'"$C"'", tf / pf, "'"$R"'", t5 / p5, "'"$R"'", tr / pr
}'
