#!/usr/bin/env bash
# Create .venv-feast (Feast 0.67.0 with its DuckDB offline store, which pulls in
# ibis-framework[duckdb], its Redis online store and its PostgreSQL and Spark offline
# stores) at the repo root, for the benchmark's Feast side.
# Idempotent: does nothing when .venv-feast already imports feast 0.67.0.
set -euo pipefail

FEAST_VERSION="0.67.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-feast"
PY="$VENV/bin/python"

have_feast() {
    [ -x "$PY" ] && "$PY" - "$FEAST_VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
import duckdb, ibis, redis, psycopg, pyspark  # offline duckdb, online redis, offline postgres and spark
sys.exit(0 if version("feast") == sys.argv[1] else 1)
PY
}

if have_feast; then
    echo "setup_feast: $VENV already has feast $FEAST_VERSION"
    exit 0
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x "$PY" ]; then
    echo "setup_feast: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

UV="$ROOT/.venv/bin/uv"
if [ -x "$UV" ]; then
    "$UV" pip install --python "$PY" "feast[duckdb,redis,postgres,spark]==$FEAST_VERSION"
elif command -v uv >/dev/null 2>&1; then
    uv pip install --python "$PY" "feast[duckdb,redis,postgres,spark]==$FEAST_VERSION"
else
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install "feast[duckdb,redis,postgres,spark]==$FEAST_VERSION"
fi

if ! have_feast; then
    echo "setup_feast: feast $FEAST_VERSION still not importable from $PY" >&2
    exit 1
fi
echo "setup_feast: ready ($PY)"
