# Shared by the benchmark scripts (sourced, not run).

# padova_config STORE PORT: on stdout, the configuration of a hub with one entity (Comune di
# Padova as in config/demo.toml, debt types TARI and MENSA) on store STORE, listening on
# 127.0.0.1:PORT. Each benchmark appends the pipelines it measures.
padova_config() {
    cat <<EOF
[hub]
data_dir = "var"
store = "$1"
taxonomy_file = "\${SNODO_TAXONOMY_FILE:-adapters/specs/mypay/tassonomia.csv}"

[http]
listen = "127.0.0.1:$2"

[pagopa]
broker_fiscal_code = "80007580279"
stations = ["80007580279_01"]

[[entities]]
ipa_code = "c_g224"
fiscal_code = "00644060287"
name = "Comune di Padova"
segregation_code = "01"

  [[entities.debt_types]]
  code = "TARI"
  description = "Tassa sui rifiuti"
  iban = "IT60X0542811101000000123456"
  taxonomy = "9/0101100IM/"
  due_date_required = true

  [[entities.debt_types]]
  code = "MENSA"
  description = "Refezione scolastica"
  iban = "IT90J0200812100000041234567"
  taxonomy = "9/0107101TS/"
  generate_iuv = true
EOF
}

# wait_ready PORT LOG: waits up to 20 s for the hub on 127.0.0.1:PORT to answer /readyz; if it
# does not, shows LOG and exits.
wait_ready() {
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0; sleep 0.1; done
    cat "$2" >&2
    echo "error: the hub did not start" >&2
    exit 1
}

# With PROFILE=1, profile_start PID NAME samples PID's stacks with perf (cpu-clock, DWARF
# unwinding, 199 Hz) until profile_stop, which folds them into target/bench/flame-NAME.svg with
# inferno (installed from crates.io under ~/.cache/snodo on first use). Without PROFILE both do
# nothing. A profiled run is slower: its figures are not the benchmark's.
PROFILE_PID="" PROFILE_NAME="" PROFILE_DATA=""
profile_start() {
    [ "${PROFILE:-0}" = 1 ] || return 0
    command -v perf >/dev/null || { echo "error: perf is missing: run ops/setup.sh" >&2; exit 1; }
    PROFILE_NAME="$2"
    PROFILE_DATA="$(mktemp "${TMPDIR:-/tmp}/snodo-perf.XXXXXX")"
    perf record -q -F 199 --call-graph dwarf,32768 -p "$1" -o "$PROFILE_DATA" 2>/dev/null &
    PROFILE_PID=$!
    sleep 0.5
}
profile_stop() {
    [ -n "$PROFILE_PID" ] || return 0
    kill -INT "$PROFILE_PID" 2>/dev/null || true
    wait "$PROFILE_PID" 2>/dev/null || true
    PROFILE_PID=""
    local inferno="$HOME/.cache/snodo/inferno/bin"
    if [ ! -x "$inferno/inferno-flamegraph" ]; then
        echo "== installing inferno (flame graphs) from crates.io" >&2
        cargo install --quiet --locked inferno --root "$HOME/.cache/snodo/inferno" >&2
    fi
    local root; root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    mkdir -p "$root/target/bench"
    local out="$root/target/bench/flame-$PROFILE_NAME"
    perf script -i "$PROFILE_DATA" 2>/dev/null | "$inferno/inferno-collapse-perf" >"$out.folded"
    # Frames under 0.2 % of the width are left out: the picture stays a few hundred KiB.
    "$inferno/inferno-flamegraph" --title "snodo: $PROFILE_NAME" --width 1400 --minwidth 0.2 \
        <"$out.folded" >"$out.svg"
    rm -f "$PROFILE_DATA"
    echo "== flame graph: $out.svg (stacks: $out.folded)" >&2
}
