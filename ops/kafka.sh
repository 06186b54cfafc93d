#!/usr/bin/env bash
# The Kafka-protocol broker for tests, the demo and benchmarks: Tansu (a Kafka broker written in
# Rust; Apache Kafka itself cannot be installed on these machines), on 127.0.0.1:9092. Safe to
# run again: it builds Tansu only when the binary is missing (about 11 minutes on 2 cores, then
# cached under $TANSU_ROOT) and starts it only when the port is not answering. Tansu does not
# create topics on its own; the hub creates the ones it needs.
#
# Storage is SQLite (`--features libsql`, `sqlite://`), not `memory://`: Tansu 0.6.0's memory
# (and S3) storage answers a fetch from inside a record batch with the batches after it, so a
# consumer group resuming at a committed offset mid-batch silently skips messages, and it reports
# a partition's end offset as the last batch's first offset + 1. The SQLite storage keeps one row
# per record and gets both right. It starts empty at every start of the broker.
#
# State: $SNODO_KAFKA_DIR (default /var/tmp/snodo-kafka)/ tansu.pid, tansu.log, tansu.db
set -euo pipefail

VERSION=0.6.0
ADDR="${SNODO_KAFKA_ADDR:-127.0.0.1:9092}"
STATE="${SNODO_KAFKA_DIR:-/var/tmp/snodo-kafka}"
TANSU_ROOT="${TANSU_ROOT:-$HOME/.cache/snodo/tansu-$VERSION-libsql}"
BIN="$TANSU_ROOT/bin/tansu"
HOST="${ADDR%:*}"
PORT="${ADDR##*:}"

answering() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

if ! [ -x "$BIN" ] || ! "$BIN" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "ops/kafka.sh: building tansu $VERSION from crates.io into $TANSU_ROOT (about 11 minutes, once)"
  cargo install tansu --version "$VERSION" --locked --features libsql --root "$TANSU_ROOT" --quiet
fi

mkdir -p "$STATE"
if answering; then
  echo "ops/kafka.sh: broker answering on $ADDR"
  exit 0
fi

echo "ops/kafka.sh: starting tansu on $ADDR"
rm -f "$STATE"/tansu.db*
# setsid: the broker outlives the shell (and the CI step) that started it. Tansu takes the
# sqlite:// path as relative, hence the cd.
(cd "$STATE" && setsid nohup "$BIN" broker \
  --listener-url "tcp://$ADDR" \
  --advertised-listener-url "tcp://$ADDR" \
  --storage-engine "sqlite://tansu.db" >"$STATE/tansu.log" 2>&1 < /dev/null &
  echo $! >"$STATE/tansu.pid")
for _ in $(seq 1 100); do
  if answering; then
    echo "ops/kafka.sh: broker answering on $ADDR"
    exit 0
  fi
  if ! kill -0 "$(cat "$STATE/tansu.pid")" 2>/dev/null; then
    echo "ops/kafka.sh: tansu exited; its log:" >&2
    tail -20 "$STATE/tansu.log" >&2
    exit 1
  fi
  sleep 0.2
done
echo "ops/kafka.sh: tansu does not answer on $ADDR after 20 s; see $STATE/tansu.log" >&2
exit 1
