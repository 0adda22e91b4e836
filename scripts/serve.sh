#!/usr/bin/env bash
# `make serve`: run BatchRouter in production on this machine: gunicorn with WEB_CONCURRENCY
# processes and WORKERS `flask worker` processes (RQ + scheduler), all sharing one metrics
# directory. Migrations are NOT run here: `make migrate` is an explicit deploy step, and this
# script refuses to start on a database that is behind the code.
#
#   SERVE_ROLE=all|web|worker   what this machine runs (default all)
#   WEB_CONCURRENCY (default 2× cores), WEB_THREADS (default 1: sync processes), WORKERS (default 2)
#   BATCHROUTER_METRICS_BIND=10.0.0.5:9100 also serves /metrics there without a token
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
role="${SERVE_ROLE:-all}"

missing=()
for var in DATABASE_URL REDIS_URL SECRET_KEY BASE_URL; do
  [ -n "${!var:-}" ] || missing+=("$var")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "make serve: set ${missing[*]} (see docs/operations.md). Every machine must share the" >&2
  echo "same DATABASE_URL, REDIS_URL and SECRET_KEY." >&2
  exit 2
fi
$BIN/flask --app app db check || {
  echo "make serve: the database schema is not at this code's migration head; run 'make migrate' first." >&2
  exit 3
}

export WEB_CONCURRENCY="${WEB_CONCURRENCY:-$(( $(nproc) * 2 ))}"
export WORKERS="${WORKERS:-2}"
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$PWD/instance/prometheus}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM EXIT

if [ "$role" = all ] || [ "$role" = worker ]; then
  for _ in $(seq "$WORKERS"); do
    $BIN/flask --app app worker &
    pids+=($!)
  done
fi
if [ "$role" = all ] || [ "$role" = web ]; then
  $BIN/gunicorn -c scripts/gunicorn_conf.py "app:app" &
  pids+=($!)
fi
if [ -n "${BATCHROUTER_METRICS_BIND:-}" ]; then
  $BIN/flask --app app metrics --bind "$BATCHROUTER_METRICS_BIND" &
  pids+=($!)
fi
# Any process exiting stops the rest: the process manager (systemd, a container runtime)
# restarts the whole unit rather than leaving it half up.
wait -n "${pids[@]}"
