#!/usr/bin/env bash
# `make bench`: run every benchmark under bench/ and print its figures.
set -euo pipefail
cd "$(dirname "$0")/.."
for script in bench/quote.py bench/pipeline.py bench/console.py; do
  .venv/bin/python "$script"
done
