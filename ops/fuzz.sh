#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers with cargo-fuzz (libFuzzer) on the stable toolchain:
# `--sanitizer none` uses only stable rustc flags (docs/FUZZING.md).
#
#   ops/fuzz.sh list                 the targets
#   ops/fuzz.sh TARGET [MINUTES]     fuzz one target (default 15 min), one process, lowest priority
#   ops/fuzz.sh cmin TARGET          fold what the runs found into a minimised fuzz/corpus/TARGET
#
# New inputs go to fuzz/found/TARGET (not committed), crashes to fuzz/artifacts/TARGET; a fixed
# crash is committed under fuzz/crashes/TARGET, where `cargo test` replays it for good.
# FUZZ_TARGET_DIR overrides the build folder (default fuzz/target).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS="soap_request mypay_flow position_json receipt_encoders fdr treasury"
target_dir=${FUZZ_TARGET_DIR:-fuzz/target}

max_len() {
    case $1 in
        position_json) echo 4096 ;;
        *) echo 16384 ;;
    esac
}

known() {
    for t in $TARGETS; do [ "$t" = "$1" ] && return 0; done
    echo "unknown target $1 (one of: $TARGETS)" >&2
    exit 2
}

# cargo-fuzz from crates.io when missing; it needs a C++ compiler for libFuzzer.
if ! command -v cargo-fuzz >/dev/null; then
    cargo install cargo-fuzz --locked
fi

build() {
    nice -n 19 cargo fuzz build --fuzz-dir fuzz -s none --target-dir "$target_dir" "$1"
}

binary() {
    echo "$target_dir/$(rustc -vV | sed -n 's/^host: //p')/release/$1"
}

case ${1:-} in
    list)
        echo "$TARGETS"
        ;;
    cmin)
        t=${2:?usage: ops/fuzz.sh cmin TARGET}
        known "$t"
        build "$t"
        mkdir -p "fuzz/found/$t"
        merged=$(mktemp -d)
        # libFuzzer's merge keeps the smallest inputs that together reach every edge seen;
        # without hit counts (-use_counters=0) the committed corpus stays small.
        nice -n 19 "$(binary "$t")" -merge=1 -use_counters=0 -max_len="$(max_len "$t")" "$merged" \
            "fuzz/corpus/$t" "fuzz/found/$t"
        rm -rf "fuzz/corpus/$t"
        mkdir -p "fuzz/corpus/$t"
        cp "$merged"/* "fuzz/corpus/$t/"
        rm -rf "$merged"
        # tests/self_contained.rs refuses tracked files naming a path above the repository.
        { grep -lZ -F '../' "fuzz/corpus/$t"/* || true; } | xargs -0 -r rm --
        echo "fuzz/corpus/$t: $(ls "fuzz/corpus/$t" | wc -l) files, $(du -sh "fuzz/corpus/$t" | cut -f1)"
        ;;
    '' | -h | --help)
        sed -n '2,12p' "$0"
        ;;
    *)
        t=$1
        minutes=${2:-15}
        known "$t"
        build "$t"
        mkdir -p "fuzz/found/$t" "fuzz/artifacts/$t"
        start=$(date -u +%FT%TZ)
        SECONDS=0
        # One process (no -jobs/-workers): the machine is shared.
        nice -n 19 "$(binary "$t")" "fuzz/found/$t" "fuzz/corpus/$t" \
            -max_total_time=$((minutes * 60)) -max_len="$(max_len "$t")" -timeout=10 \
            -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" \
            && status=0 || status=$?
        mkdir -p fuzz/artifacts
        echo "$start $t ${SECONDS}s exit=$status" >> fuzz/artifacts/runs.log
        exit "$status"
        ;;
esac
