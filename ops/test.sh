#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, lint, then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
ops/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --features snodo-connectors/integration -- -D warnings
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# `integration`: the connectors' tests against the sshd and the broker that setup.sh started.
cargo test --workspace --all-targets --features snodo-connectors/integration 2>&1 | tee "$log"
# One closing line for the whole run (cargo prints one per test binary, the last often empty).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
