#!/usr/bin/env bash
# PostgreSQL over TLS for the tests (tests/pg_tls.rs): a test CA and a server certificate for
# localhost / 127.0.0.1 in $SNODO_PG_TLS_DIR (default /var/lib/postgresql/snodo-tls: ca.pem,
# server.crt, server.key), served by the local server (127.0.0.1:5432, trust auth) with ssl = on,
# set with ALTER SYSTEM and reloaded: no restart, plain connections keep working.
# Safe to run again: it does nothing while the server serves a valid certificate from that folder.
set -euo pipefail

DIR="${SNODO_PG_TLS_DIR:-/var/lib/postgresql/snodo-tls}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
psql_() { psql -h 127.0.0.1 -U postgres -d postgres -tAq "$@"; }

served() {
  [ "$(psql_ -c 'SHOW ssl')" = on ] &&
    [ "$(psql_ -c 'SHOW ssl_cert_file')" = "$DIR/server.crt" ] &&
    openssl verify -CAfile "$DIR/ca.pem" "$DIR/server.crt" >/dev/null 2>&1 &&
    openssl x509 -checkend 2592000 -noout -in "$DIR/server.crt" >/dev/null 2>&1 &&
    psql "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=verify-full sslrootcert=$DIR/ca.pem" \
      -tAqc 'SELECT 1' >/dev/null 2>&1
}

if served; then exit 0; fi
echo "ops/pg-tls.sh: serving PostgreSQL over TLS with a test CA in $DIR"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -subj "/CN=snodo test PostgreSQL CA" -keyout ca.key -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
  -keyout server.key -out server.csr 2>/dev/null
printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
  "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
  -extfile server.ext -out server.crt 2>/dev/null

# The server reads its key only if its own user owns it and nobody else may read it.
$SUDO mkdir -p "$DIR"
$SUDO install -m 0644 ca.pem "$DIR/ca.pem"
$SUDO install -m 0644 server.crt "$DIR/server.crt"
$SUDO install -m 0600 server.key "$DIR/server.key"
if id postgres >/dev/null 2>&1; then
  $SUDO chown postgres: "$DIR/server.crt" "$DIR/server.key"
fi

# One statement per -c: ALTER SYSTEM may not run inside a transaction block.
psql_ -c "ALTER SYSTEM SET ssl_cert_file = '$DIR/server.crt'" \
  -c "ALTER SYSTEM SET ssl_key_file = '$DIR/server.key'" \
  -c "ALTER SYSTEM SET ssl = on" \
  -c "SELECT pg_reload_conf()" >/dev/null

for _ in $(seq 50); do
  if served; then exit 0; fi
  sleep 0.1
done
echo "ops/pg-tls.sh: PostgreSQL does not serve the new certificate (see its log)" >&2
exit 1
