#!/usr/bin/env bash
# Install what the test suite needs and is absent, then start its services. Under
# `make test` and CI a test whose tool or service is missing fails (tests/conftest.py),
# so this is where they come from:
#   java 17          Spark's tests (PySpark runs a JVM)
#   redis-server     the shared Redis on 6379, and private servers the tests start
#                    themselves (outage, Cluster, Sentinel via redis-server --sentinel)
#   redis-cli        driving those private servers (cluster creation, sentinel queries)
#   PostgreSQL       on 127.0.0.1:5432, user postgres, trust
# CI and developer machines run as root with Debian's apt. Idempotent, and quick when
# everything is there: apt is only asked when something is missing.
set -euo pipefail

missing=()
if ! command -v java >/dev/null 2>&1 && [ -z "${JAVA_HOME:-}" ]; then
  missing+=(openjdk-17-jre-headless)
fi
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  missing+=(postgresql)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  apt-get update -qq >/dev/null
  for pkg in "${missing[@]}"; do
    # Say which package has no candidate rather than letting apt fail on the whole list.
    if ! apt-cache policy "$pkg" | grep -q 'Candidate: [0-9]'; then
      echo "apt has no candidate for $pkg; install it (or its equivalent) by hand" >&2
      exit 1
    fi
  done
  # Slim Debian images drop man pages, and the JRE's postinst fails without this folder.
  mkdir -p /usr/share/man/man1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  if [[ " ${missing[*]} " == *" postgresql "* ]]; then
    ver=$(ls /etc/postgresql | sort -V | tail -n 1)
    # The tests connect as postgres over loopback without a password (trust).
    sed -i 's/^\(host.*127.0.0.1\/32\s*\)\S*$/\1trust/; s/^\(local\s*all\s*postgres\s*\)\S*$/\1trust/' \
      "/etc/postgresql/$ver/main/pg_hba.conf"
  fi
fi
java -version >/dev/null 2>&1 || "${JAVA_HOME:-/nonexistent}/bin/java" -version >/dev/null 2>&1 \
  || { echo "java does not run; Spark's tests need Java 17" >&2; exit 1; }

redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

if ! redis_up; then
  mkdir -p /tmp/tiffin-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/tiffin-redis --logfile /tmp/tiffin-redis/redis.log
  for _ in $(seq 1 100); do redis_up && break; sleep 0.1; done
  redis_up || { echo "Redis did not start; see /tmp/tiffin-redis/redis.log" >&2; exit 1; }
fi

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q >/dev/null 2>&1; }

if ! pg_up; then
  ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  for _ in $(seq 1 100); do pg_up && break; sleep 0.1; done
  pg_up || { echo "PostgreSQL did not start" >&2; exit 1; }
fi
echo "services: java, redis-server, redis-cli, redis on 6379 and postgresql ok" >&2
