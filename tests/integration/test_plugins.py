"""Backends of every kind from a separately installed package (tests/plugins/tiffin_toy).

tiffin finds the toy backends only through their entry points: a repository whose
``feature_store.yaml`` names them is applied, materialized, read online and offline, and
pushed to, each step in a fresh process (the CLI, then a script), so nothing of the toy is
imported by the test process first. ``make install`` installs the package; the fixture
installs it (editable, as ``make install`` does) when a venv predates it.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "tests" / "plugins" / "tiffin_toy"

# Day 0 is three days ago (to the hour), so the online reads (ttl 2 days, counted from now)
# find the rows of days 1.5 and 2 fresh.
DAY0 = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)


def at(days: float) -> str:
    return (DAY0 + timedelta(days=days)).isoformat()


CSV = f"""driver_id,event_timestamp,created,conv_rate,trips
1001,{at(0)},{at(0)},0.1,1
1001,{at(1)},{at(1)},0.2,2
1001,{at(2)},{at(2)},0.3,3
1002,{at(1.5)},{at(1.5)},0.5,7
1003,{at(1.25)},{at(1.25)},0.9,9
"""

DEFINITIONS = """
from datetime import timedelta

from tiffin import Entity, FeatureView, Field, PushSource
from tiffin.types import Float64, Int64
from tiffin_toy.source import ToyCsvSource

driver = Entity(name="driver", join_keys=["driver_id"])
stats_source = ToyCsvSource(name="driver_stats_csv", path="data/driver_stats.csv",
                            timestamp_field="event_timestamp", created_timestamp_column="created")
stats_push = PushSource(name="driver_stats_push", batch_source=stats_source)
stats = FeatureView(name="driver_stats", entities=[driver], ttl=timedelta(days=2),
                    schema=[Field(name="conv_rate", dtype=Float64),
                            Field(name="trips", dtype=Int64)],
                    source=stats_push)
"""


def _toy_installed() -> bool:
    try:
        md.distribution("tiffin-toy")
    except md.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def toy() -> None:
    if not _toy_installed():
        subprocess.run([sys.executable, "-m", "uv", "pip", "install", "--quiet", "--python",
                        sys.executable, "-e", str(TOY)], check=True)
    assert _toy_installed()


def run(cwd: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("TIFFIN_TRACEBACK", None)
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == code, f"{args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def script(cwd: Path, body: str) -> object:
    """Run ``body`` in a fresh interpreter; it prints one JSON value, returned here."""
    return json.loads(run(cwd, "-c", textwrap.dedent(body)).stdout.strip().splitlines()[-1])


def make_repo(path: Path, **overrides: object) -> Path:
    (path / "data").mkdir(parents=True)
    (path / "data" / "driver_stats.csv").write_text(CSV)
    (path / "definitions.py").write_text(DEFINITIONS)
    config = {"project": "toyproj",
              "registry": {"registry_type": "toy_dir", "path": "data/registry",
                           "keep_versions": 2},
              "online_store": {"type": "toy_json", "path": "data/online"},
              "offline_store": {"type": "toy_csv"},
              "batch_engine": {"type": "toy_chunked", "chunk_rows": 2},
              **overrides}
    (path / "feature_store.yaml").write_text(yaml.safe_dump(config))
    return path


def test_toy_backends_end_to_end(toy, tmp_path):
    repo = make_repo(tmp_path / "repo")
    run(repo, "-m", "tiffin.cli", "apply")
    # The registry is the toy's: numbered versions in a directory, nothing else.
    assert sorted(os.listdir(repo / "data" / "registry")) == ["v1.json"]

    # A fresh process reads the source back from the registry though nothing imported its
    # module: DataSource.from_dict finds the class through its entry point.
    got = script(repo, """
        import json, sys
        from tiffin import FeatureStore
        store = FeatureStore(".")
        before = "tiffin_toy.source" in sys.modules
        src = store.get_data_source("driver_stats_csv")
        print(json.dumps([before, type(src).__module__, type(src).__name__, src.path,
                          type(store.online_store).__name__, type(store.offline_store).__name__]))
    """)
    assert got == [False, "tiffin_toy.source", "ToyCsvSource", "data/driver_stats.csv",
                   "ToyJsonOnlineStore", "ToyCsvOfflineStore"]

    got = script(repo, f"""
        import json
        from tiffin import FeatureStore
        store = FeatureStore(".")
        store.materialize({at(0)!r}, {at(2)!r})
        print(json.dumps([type(store.engine).__name__, store.engine.chunks]))
    """)
    assert got == ["ToyChunkedEngine", [2, 1]]  # three drivers' latest rows, chunk_rows: 2
    online = json.loads((repo / "data" / "online" / "toyproj__driver_stats.json").read_text())
    assert len(online["rows"]) == 3

    got = script(repo, f"""
        import json
        import pandas as pd
        from tiffin import FeatureStore
        store = FeatureStore(".")
        online = store.get_online_features(["driver_stats:conv_rate", "driver_stats:trips"],
                                           [{{"driver_id": 1001}}, {{"driver_id": 1002}},
                                            {{"driver_id": 9}}]).to_dict()
        entity_df = pd.DataFrame({{
            "driver_id": [1001, 1001, 1002, 1003, 1001],
            "event_timestamp": pd.to_datetime([{at(0.25)!r}, {at(1.9)!r}, {at(3.5 + 1 / 24)!r},
                                               {at(0)!r}, {at(8)!r}])}})
        hist = store.get_historical_features(entity_df, ["driver_stats:conv_rate",
                                                         "driver_stats:trips"]).to_df()
        print(json.dumps({{"online": online,
                          "hist": hist.astype(object).where(hist.notna(), None)
                                      [["driver_id", "conv_rate", "trips"]].values.tolist()}}))
    """)
    assert got["online"]["driver_id"] == [1001, 1002, 9]
    assert got["online"]["conv_rate"] == [0.3, 0.5, None]
    assert got["online"]["trips"] == [3, 7, None]
    # Point in time, with the 2-day ttl: 1002 asks 2 days 1 h after its row, 1003 before its
    # first row, 1001 on day 8 is past the ttl of its day-2 row.
    assert got["hist"] == [[1001, 0.1, 1], [1001, 0.2, 2], [1002, None, None],
                           [1003, None, None], [1001, None, None]]

    # Push: the offline write appends to the CSV, the online write goes to the JSON store.
    got = script(repo, f"""
        import json
        import pandas as pd
        from tiffin import FeatureStore
        from tiffin.push import PushMode
        store = FeatureStore(".")
        store.push("driver_stats_push", pd.DataFrame({{
            "driver_id": [1002], "event_timestamp": pd.to_datetime([{at(2.5)!r}]),
            "created": pd.to_datetime([{at(2.5)!r}]),
            "conv_rate": [0.75], "trips": [8]}}), to=PushMode.ONLINE_AND_OFFLINE)
        online = store.get_online_features(["driver_stats:trips"],
                                           [{{"driver_id": 1002}}]).to_dict()
        print(json.dumps(online["trips"]))
    """)
    assert got == [8]
    lines = (repo / "data" / "driver_stats.csv").read_text().splitlines()
    assert len(lines) == 7 and lines[-1].startswith("1002,")

    # Apply, materialize and push each committed a version. keep_versions (the toy's own
    # key of the registry section) keeps two with content; older ones are emptied, their
    # names kept so that no writer can create them again.
    registry = repo / "data" / "registry"

    def versions() -> list[int]:
        return sorted(int(n[1:-5]) for n in os.listdir(registry) if n.endswith(".json"))

    before = versions()[-1]
    (repo / "definitions.py").write_text(DEFINITIONS + textwrap.dedent("""
        stats2 = FeatureView(name="driver_trips", entities=[driver], ttl=timedelta(days=2),
                             schema=[Field(name="trips", dtype=Int64)], source=stats_source)
    """))
    run(repo, "-m", "tiffin.cli", "apply")
    after = versions()
    assert after == list(range(1, before + 2))
    sizes = [(registry / f"v{v}.json").stat().st_size for v in after]
    assert all(sizes[-2:]) and not any(sizes[:-2])
    listed = run(repo, "-m", "tiffin.cli", "feature-views", "list").stdout
    assert "driver_trips" in listed and "driver_stats" in listed


def test_toy_misconfigurations_say_what_is_registered(toy, tmp_path):
    repo = make_repo(tmp_path / "typo", online_store={"type": "toy_jsn"})
    err = run(repo, "-m", "tiffin.cli", "apply", code=1).stderr
    assert "did you mean 'toy_json'?" in err
    repo = make_repo(tmp_path / "regtypo", registry={"registry_type": "toy_dri", "path": "r"})
    err = run(repo, "-m", "tiffin.cli", "apply", code=1).stderr
    assert "did you mean 'toy_dir'?" in err
    repo = make_repo(tmp_path / "keep", registry={"registry_type": "toy_dir", "path": "r",
                                                  "keep_versions": 0})
    err = run(repo, "-m", "tiffin.cli", "apply", code=1).stderr
    assert "keep_versions must be a whole number >= 1" in err
    # A key the toy did not declare is still refused, with the declared ones offered.
    repo = make_repo(tmp_path / "keys", registry={"registry_type": "toy_dir", "path": "r",
                                                  "keep_version": 2})
    err = run(repo, "-m", "tiffin.cli", "apply", code=1).stderr
    assert "unknown key 'keep_version'" in err and "did you mean 'keep_versions'?" in err


def test_no_core_file_names_the_toy():
    # The toy is wired in by its own pyproject.toml alone: tiffin's sources and packaging
    # never mention it (the Makefile only installs it, like any other package).
    offenders = [str(p.relative_to(ROOT)) for p in [*(ROOT / "src").rglob("*.py"),
                                                    ROOT / "pyproject.toml"]
                 if "toy" in p.read_text().lower()]
    assert offenders == []


def test_toy_registry_store_refuses_a_stale_write(toy, tmp_path, monkeypatch):
    # Importing the toy here is fine: the end-to-end test above shows tiffin needs no import.
    # (On the path explicitly: a .pth the fixture just installed is read by new processes only.)
    monkeypatch.syspath_prepend(str(TOY))
    from tiffin_toy.registry import ToyDirRegistryStore

    from tiffin.errors import RegistryConflictError

    a, b = ToyDirRegistryStore(tmp_path / "r", 1), ToyDirRegistryStore(tmp_path / "r", 1)
    assert a.read() == (None, None)
    assert a.write(b"one", None) == "1"
    with pytest.raises(RegistryConflictError):
        b.write(b"also one", None)
    data, version = b.read()
    assert (data, version) == (b"one", "1")
    assert a.write(b"two", version) == "2"
    with pytest.raises(RegistryConflictError):
        b.write(b"two from b", version)
    assert a.write(b"three", "2") == "3"
    # keep_versions 1: versions 1 and 2 are emptied but keep their names, so a writer that
    # read version 1 long ago still cannot create version 2 again.
    assert (tmp_path / "r" / "v1.json").read_bytes() == b""
    with pytest.raises(RegistryConflictError):
        b.write(b"stale", "1")
    assert b.read() == (b"three", "3")
