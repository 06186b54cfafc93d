#!/usr/bin/env bash
# The whole test suite, from a fresh machine: set-up, lint, then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
ops/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
