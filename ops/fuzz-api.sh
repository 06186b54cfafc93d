#!/usr/bin/env bash
# Fuzzes the hub's REST API from its own OpenAPI document with schemathesis: every operation gets
# generated requests (valid and invalid), and the run fails when any answer is a 5xx, does not
# match the document (status, body schema, content type, headers), or never comes.
#
#   ops/fuzz-api.sh <base_url> <bearer key> [max_examples]
#   ops/fuzz-api.sh --install        (only install schemathesis)
#   e.g. ops/fuzz-api.sh http://127.0.0.1:8080 "$SNODO_DEMO_KEY_C_G224" 50
#
# base_url is the hub's root (the schema is read from <base_url>/api/v1/openapi.json);
# max_examples is per operation (default 20).
# Environment:
#   FUZZ_MAX_SECONDS  wall-time limit of the whole run (default 300); reaching it is a failure
#   FUZZ_IPA          send every request for this entity (e.g. c_g224, the key's own) instead of
#                     generated IPA codes, which mostly get 403
#   FUZZ_SEED         hypothesis seed, to repeat a run
#   FUZZ_CHECKS       schemathesis checks (default: no 5xx, and answers as documented)
# schemathesis (pinned below) is installed on first use in a venv under ~/.cache/snodo/venv.
set -euo pipefail

SCHEMATHESIS_VERSION="4.32.5"

venv="${HOME}/.cache/snodo/venv"
st="$venv/bin/schemathesis"

install() {
  if ! [ -x "$st" ] || [ "$("$st" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    echo "fuzz-api: installing schemathesis $SCHEMATHESIS_VERSION in $venv"
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
      echo "fuzz-api: python3 cannot make a venv: install python3-venv (ops/setup.sh does)" >&2
      exit 1
    fi
    mkdir -p "$(dirname "$venv")"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
}

# `--install`: only install (ops/setup.sh), so a test run does not wait for PyPI.
if [ "${1:-}" = "--install" ]; then
  install
  exit 0
fi

if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  echo "usage: $0 <base_url> <bearer key> [max_examples]" >&2
  exit 2
fi
base_url="${1%/}"
key="$2"
max_examples="${3:-20}"
max_seconds="${FUZZ_MAX_SECONDS:-300}"
case "$max_examples" in '' | *[!0-9]* | 0) echo "$0: max_examples must be a positive integer" >&2; exit 2 ;; esac
case "$max_seconds" in '' | *[!0-9]* | 0) echo "$0: FUZZ_MAX_SECONDS must be a positive integer" >&2; exit 2 ;; esac

install

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# An explicit config file, so that no schemathesis.toml found around the working directory applies.
config="$work/schemathesis.toml"
: >"$config"
if [ -n "${FUZZ_IPA:-}" ]; then
  printf '[parameters]\n"path.ipa" = "%s"\n' "$FUZZ_IPA" >>"$config"
fi

args=(
  --checks "${FUZZ_CHECKS:-not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance,response_headers_conformance}"
  --max-examples "$max_examples"
  --header "Authorization: Bearer $key"
  --request-timeout 30
  --wait-for-schema 30
  --rate-limit auto
  --generation-database none
)
if [ -n "${FUZZ_SEED:-}" ]; then args+=(--seed "$FUZZ_SEED"); fi

echo "fuzz-api: $base_url/api/v1/openapi.json, $max_examples examples per operation, at most ${max_seconds}s"
set +e
(cd "$work" && timeout --kill-after=10 "$max_seconds" \
  "$st" --config-file "$config" run "${args[@]}" "$base_url/api/v1/openapi.json")
rc=$?
set -e
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "fuzz-api: FAILED: not finished after ${max_seconds}s (raise FUZZ_MAX_SECONDS or lower max_examples)" >&2
  exit 1
fi
if [ "$rc" -ne 0 ]; then
  echo "fuzz-api: FAILED (schemathesis exit $rc)" >&2
  exit 1
fi
echo "fuzz-api: no 5xx, every answer as documented"
