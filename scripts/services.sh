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
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q >/dev/null 2>&1; }

if ! pg_up; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    echo "installing postgresql" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    ver=$(ls /etc/postgresql | sort -V | tail -n 1)
    # The tests connect as postgres over loopback without a password (trust).
    sed -i 's/^\(host.*127.0.0.1\/32\s*\)\S*$/\1trust/; s/^\(local\s*all\s*postgres\s*\)\S*$/\1trust/' \
      "/etc/postgresql/$ver/main/pg_hba.conf"
  fi
  ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  for _ in $(seq 1 100); do pg_up && break; sleep 0.1; done
  pg_up || { echo "PostgreSQL did not start" >&2; exit 1; }
fi
echo "services: redis and postgresql ok" >&2
