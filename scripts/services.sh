#!/usr/bin/env bash
# Start the services the test suite needs; install them first if they are absent.
# (CI and developer machines run as root, so apt-get works.) Idempotent.
set -euo pipefail
PY=${PY:-.venv/bin/python}

redis_up() { "$PY" -c "import redis; redis.Redis(host='127.0.0.1', port=6379, socket_timeout=1).ping()" >/dev/null 2>&1; }

if ! redis_up; then
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "installing redis-server" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  mkdir -p /tmp/tiffin-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/tiffin-redis --logfile /tmp/tiffin-redis/redis.log
  for _ in $(seq 1 100); do redis_up && break; sleep 0.1; done
  redis_up || { echo "Redis did not start; see /tmp/tiffin-redis/redis.log" >&2; exit 1; }
fi
echo "services: redis ok" >&2
