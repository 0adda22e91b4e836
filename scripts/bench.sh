#!/usr/bin/env bash
# `make bench`: run every benchmark under bench/ and print its figures.
set -euo pipefail
cd "$(dirname "$0")/.."
# wrk drives bench/console.py's load from C (Python clients would eat the shared cores).
if ! command -v wrk >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq wrk >/dev/null) || echo "wrk not installed; bench/console.py uses Python clients only"
fi
command -v redis-server >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)
for script in bench/quote.py bench/pipeline.py bench/console.py; do
  .venv/bin/python "$script"
done
