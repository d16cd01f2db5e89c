"""The lowest versions pyproject.toml declares do run tiffin.

A throwaway venv gets tiffin with every extra at the lowest versions its floors allow
(uv --resolution lowest-direct), and lowest_versions_smoke.py runs there: init, apply, a
training set, materialize, serve with one and two workers, Redis and PostgreSQL online
stores. uv's cache makes a rerun take about a minute; the first run downloads PySpark.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

ROOT = Path(__file__).parents[2]
REDIS = os.environ.get("TIFFIN_TEST_REDIS", "127.0.0.1:6379").split(",")[0]
PG_HOST = os.environ.get("TIFFIN_TEST_POSTGRES_HOST", "127.0.0.1")


def declared_floors() -> dict[str, Version]:
    """name -> lowest version allowed, for the runtime dependencies and every extra but dev."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra, reqs in project["optional-dependencies"].items():
        if extra != "dev":
            requirements += [r for r in reqs if not r.startswith("tiffin[")]
    floors = {}
    for text in requirements:
        req = Requirement(text)
        lows = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert lows, f"{text}: every dependency declares a floor"
        floors[re.sub(r"[-_.]+", "-", req.name).lower()] = max(lows)
    return floors


def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        pytest.skip("uv is not installed (make install puts it in .venv)")
    return found


def run(args: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def test_lowest_declared_versions_run_the_smoke_subset(tmp_path):
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    run([uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], 120)
    # dev is left out: its packages lift some shared ones (pyyaml, click) above our floors.
    run([uv(), "pip", "install", "--quiet", "--python", str(python),
         "--resolution", "lowest-direct", f"{ROOT}[all]"], 1200)
    installed = {re.sub(r"[-_.]+", "-", p["name"]).lower(): Version(p["version"]) for p in
                 json.loads(run([uv(), "pip", "list", "--format", "json", "--python",
                                 str(python)], 60).stdout)}
    # The floors are what was installed: what passes below is what pyproject.toml promises.
    floors = declared_floors()
    assert {n: installed.get(n) for n in floors} == floors

    project = f"lowest_{uuid.uuid4().hex[:8]}"
    work = tmp_path / "work"
    work.mkdir()
    try:
        done = run([str(python), str(Path(__file__).with_name("lowest_versions_smoke.py")),
                    str(work), project, REDIS, PG_HOST], 900, cwd=work)
        assert "lowest-versions smoke run: ok" in done.stdout
    finally:  # what a failed run left behind on the shared servers
        import psycopg
        import redis
        with psycopg.connect(f"host={PG_HOST} user=postgres dbname=postgres",
                             autocommit=True) as con:
            con.execute(f"DROP SCHEMA IF EXISTS {project} CASCADE")
        host, port = REDIS.split(":")
        with redis.Redis(host=host, port=int(port), db=15) as r:
            for key in r.scan_iter(f"tiffin:{project}:*"):
                r.delete(key)


def test_the_dev_extra_resolves_at_its_floors_too(tmp_path):
    # Not installed (the smoke run needs none of it): resolving proves the floors agree.
    venv = tmp_path / "venv"
    run([uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], 120)
    run([uv(), "pip", "install", "--dry-run", "--quiet", "--python", str(venv / "bin" / "python"),
         "--resolution", "lowest-direct", f"{ROOT}[all,dev]"], 600)
