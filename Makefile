# The one entry point for humans and CI. Everything installs into .venv at the repo root.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test bench bench-results lint clean

install: $(STAMP)

# tests/plugins/tiffin_toy: a separate package of toy backends, found through its entry points.
$(STAMP): pyproject.toml tests/plugins/tiffin_toy/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip uv
	$(VENV)/bin/uv pip install --quiet --python $(PY) --compile-bytecode -e '.[all,dev]' \
		-e tests/plugins/tiffin_toy
	touch $(STAMP)

# Quickstart end to end on the embedded defaults (DuckDB + Parquet, SQLite, file registry).
demo: install
	$(PY) -m tiffin.demo demo_repo

# TIFFIN_REQUIRE_ALL=1: a test that would skip (no Java, no redis-server, a missing
# package) fails instead; tests/conftest.py. CI=true does the same.
test: install
	bash scripts/services.sh
	TIFFIN_REQUIRE_ALL=1 $(PY) -m pytest $(PYTEST_ARGS)

# tiffin beside Feast 0.67 (installed into .venv-feast), same workload, same run.
bench: install
	bash benchmarks/setup_feast.sh
	command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	$(PY) benchmarks/run.py --wait-idle 300 $(BENCH_ARGS)

# Where the README's figures come from: every run file in benchmarks/results/, its commit,
# whether the tree was dirty, whether the file is committed, and the sections it holds.
# `make bench-results SHOW=serve` prints the newest run with that section as markdown
# (standard library only: no install needed).
bench-results:
	$(if $(SHOW),$(PYTHON) benchmarks/record.py --latest $(SHOW),$(PYTHON) benchmarks/record.py)

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) .venv-feast demo_repo .pytest_cache
