#!/usr/bin/env bash
# `make demo-postgres`: the demo of `make demo` (searches, answers, the triage workflow, audit
# verify) with every shared store and the index in PostgreSQL + pgvector: [workspace]
# database_url and [index] backend = "postgres" on top of demo/sovra.toml, home ./sovra-data-pg.
# Uses $SOVRA_DATABASE_URL when set (an ordinary role on a PostgreSQL with pgvector >= 0.8),
# else starts the bundled server in ./sovra-data-pg/pg for the length of the run.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
CONFIG=demo/.sovra-postgres.toml
if [ -z "${SOVRA_DATABASE_URL:-}" ]; then
  eval "$("$BIN/python" demo/pgserver.py start sovra-data-pg/pg)"
  trap '"$BIN/python" demo/pgserver.py stop sovra-data-pg/pg' EXIT
fi
# The demo's own file with two changes, so the two demos never drift apart.
sed -e 's#^home = "../sovra-data"$#home = "../sovra-data-pg"\ndatabase_url = "env:SOVRA_DATABASE_URL"#' \
  demo/sovra.toml > "$CONFIG"
grep -q '^database_url = "env:SOVRA_DATABASE_URL"$' "$CONFIG" ||
  { echo "demo/sovra.toml has no home = \"../sovra-data\" line to rewrite" >&2; exit 1; }
printf '\n[index]\nbackend = "postgres"\n' >> "$CONFIG"
make --no-print-directory demo-steps CONFIG="$CONFIG"
