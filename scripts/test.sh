#!/usr/bin/env bash
# `make test`: install what the suite needs, start a private Redis, run the suite on SQLite,
# then the database-sensitive subset (-m pg) on a throwaway PostgreSQL database.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing with apt: ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

workdir=$(mktemp -d)
redis_pid=""
pg_db=""
cleanup() {
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  if [ -n "$pg_db" ]; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT

port=$($BIN/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
  --maxmemory-policy noeviction --dir "$workdir" --logfile "$workdir/redis.log" &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
export REDIS_URL="redis://127.0.0.1:$port/0"
export TEST_REDIS_URL="$REDIS_URL"

echo "== suite on SQLite =="
env -u TEST_DATABASE_URL $BIN/python -m pytest "$@"

pg_url="${TEST_DATABASE_URL:-}"
if [ -z "$pg_url" ] && $BIN/python - <<'PY' 2>/dev/null
import psycopg
psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres", connect_timeout=3).close()
PY
then
  pg_db="batchrouter_test_$$"
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $pg_db" >/dev/null
  pg_url="postgresql+psycopg://postgres@127.0.0.1:5432/$pg_db"
fi
if [ -n "$pg_url" ]; then
  echo "== database-sensitive subset on PostgreSQL =="
  TEST_DATABASE_URL="$pg_url" $BIN/python -m pytest -m pg "$@"
elif [ "${REQUIRE_POSTGRES:-0}" = "1" ]; then
  echo "REQUIRE_POSTGRES=1 but no PostgreSQL answers on 127.0.0.1:5432 and TEST_DATABASE_URL is unset" >&2
  exit 1
else
  echo "NOTICE: PostgreSQL not available; the -m pg subset was skipped (set TEST_DATABASE_URL or start PostgreSQL on 127.0.0.1:5432)."
fi
