#!/usr/bin/env bash
# Installs and starts everything the tests, the demo and the benchmarks need on a fresh machine
# (Debian, as root or with sudo). Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages: sqlite3 (the import benchmark's floor), unzip (demo and tests look inside
# outcome zips), python3 (the flow generator), procps (kill, used by the hub tests), curl (the
# tests call the hub over HTTP), libxml2-utils (xmllint checks answers against the official XSD),
# wrk (the SOAP benchmark's load), libssl-dev and pkg-config (the ssh2 crate builds libssh2 against
# OpenSSL), openssh-client (the sftp command-line client), make, g++ and zlib1g-dev (rdkafka
# builds librdkafka from source: Debian's librdkafka is too old for the test broker), python3-venv
# (ops/fuzz-api.sh installs schemathesis in a venv under ~/.cache/snodo), openssl (tests make a
# CA and a server certificate to prove https calls are verified), ca-certificates (the trust store
# of https calls).
# poppler-utils (pdftoppm, pdftotext) and zbar-tools (zbarimg) read rendered payment notices back
# in tests (adapters/tests/notice_tools.rs); dmtx-utils (dmtxread) is for the Poste Data Matrix;
# time (/usr/bin/time -v: the settlement flows benchmark's peak RSS); linux-perf (PROFILE=1 of
# the benchmarks samples the hub's stacks for the flame graphs in docs/).
# chromium: the web console's browser tests (tests/console.rs drives Debian's chromium with
# Playwright; its npm packages are installed below, no browser is downloaded). Node.js and npm
# for them come from Debian (nodejs 18 and up) unless a node is already installed.
PACKAGES=(sqlite3 unzip python3 python3-venv procps curl libxml2-utils wrk libssl-dev pkg-config
  openssh-client make g++ zlib1g-dev openssl ca-certificates poppler-utils zbar-tools dmtx-utils
  time linux-perf chromium)
command -v node >/dev/null 2>&1 || PACKAGES+=(nodejs)
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ops/setup.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# PyPI: zeep, the third-party SOAP client the tests point at the served WSDL; jsonschema, which
# checks the json receipt format against docs/receipt.schema.json; openapi-spec-validator, which
# checks the served OpenAPI document (module:package pairs).
for pair in zeep:zeep jsonschema:jsonschema openapi_spec_validator:openapi-spec-validator; do
  module="${pair%%:*}"
  if ! python3 -c "import $module" >/dev/null 2>&1; then
    echo "ops/setup.sh: installing ${pair#*:}"
    python3 -m pip install --quiet --root-user-action=ignore "${pair#*:}"
  fi
done
# schemathesis, in its own venv, for the API fuzz pass (tests/rest_fuzz.rs).
"$(dirname "$0")/fuzz-api.sh" --install

# The console's browser tests: playwright-core at the version the committed lock file pins
# (tests/console/package-lock.json; 1.61, the last that runs on Debian 12's Node.js 18), again
# only when the lock changed since the last install.
if ! cmp -s tests/console/package-lock.json tests/console/node_modules/.snodo-installed-lock; then
  echo "ops/setup.sh: installing the console tests' npm packages (npm ci in tests/console)"
  (cd tests/console && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error \
    && cp package-lock.json node_modules/.snodo-installed-lock)
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "ops/setup.sh: cargo is missing: install Rust (https://rustup.rs) first" >&2
  exit 1
fi

# The loopback sshd the sftp connector's tests talk to (installs openssh-server if missing).
ops/sshd.sh

# The Kafka-protocol broker (Tansu) the Kafka tests, demo and benchmarks use: built once, started
# when not running.
ops/kafka.sh

# PostgreSQL: the store suite and the several-hubs tests need a server (trust auth on loopback).
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "ops/setup.sh: starting PostgreSQL"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  else
    echo "ops/setup.sh: PostgreSQL is not running on 127.0.0.1:5432 and is not installed" >&2
    exit 1
  fi
fi

# PostgreSQL over TLS with a test CA (tests/pg_tls.rs); plain connections keep working.
ops/pg-tls.sh

echo "ops/setup.sh: ready"
