#!/usr/bin/env bash
# `make bench`: run every benchmark under bench/ and print its figures.
set -euo pipefail
cd "$(dirname "$0")/.."
# wrk drives bench/console.py's load from C (Python clients would eat the shared cores).
if ! command -v wrk >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq wrk >/dev/null) || echo "wrk not installed; bench/console.py uses Python clients only"
fi
command -v redis-server >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)
# scale.py and load.py run the production shape (PostgreSQL, gunicorn, several workers): the
# local PostgreSQL on 127.0.0.1:5432 when it answers, else a private cluster from initdb.
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
  (apt-get update -qq && apt-get install -y -qq postgresql >/dev/null)
status=0
for script in bench/quote.py bench/pipeline.py bench/fanout.py bench/console.py bench/scale.py bench/load.py bench/webhooks.py; do
  .venv/bin/python "$script" || status=1
done
exit $status
