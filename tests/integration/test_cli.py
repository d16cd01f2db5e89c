"""The ``tiffin`` command, run as a subprocess against real repositories.

Each subprocess costs about a second (interpreter + pyarrow start-up), so repositories are
module-scoped and independent commands are started together (``run_all``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

PROJECT = "demo"
VIEW = "driver_hourly_stats"
SERVICE = "driver_activity_v1"


@dataclass
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def __str__(self) -> str:  # shown when an assertion fails
        return f"tiffin {' '.join(self.args)} -> {self.code}\n--stdout--\n{self.out}\n" \
               f"--stderr--\n{self.err}"


# Start-up time is mostly compiling modules; with PYTHONDONTWRITEBYTECODE set (as in some
# sandboxes) every subprocess would compile tiffin again. Cache bytecode outside the tree.
PYCACHE = Path(tempfile.gettempdir()) / f"tiffin-cli-tests-pycache-{os.getuid()}"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TIFFIN_TRACEBACK", None)
    env.pop("TIFFIN_REPO_DIR", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env["NO_COLOR"] = "1"
    return env


def _start(args: tuple[str, ...], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tiffin.cli", *args], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(*args: str, cwd: Path) -> Result:
    proc = _start(args, cwd)
    out, err = proc.communicate(timeout=120)
    return Result(args, proc.returncode, out, err)


def run_all(commands: dict[str, tuple[tuple[str, ...], Path]]) -> dict[str, Result]:
    """Run independent commands concurrently; results by key."""
    procs = {key: (args, _start(args, cwd)) for key, (args, cwd) in commands.items()}
    results = {}
    for key, (args, proc) in procs.items():
        out, err = proc.communicate(timeout=120)
        results[key] = Result(args, proc.returncode, out, err)
    return results


def ok(result: Result) -> Result:
    assert result.code == 0, str(result)
    assert "Traceback" not in result.err, str(result)
    return result


def assert_clean_error(result: Result, *, hint: str | None = None) -> tuple[str, str]:
    """Exit 1, and stderr is exactly an ``Error:`` line and a ``Hint:`` line."""
    assert result.code == 1, str(result)
    assert "Traceback" not in result.err, str(result)
    lines = result.err.strip().splitlines()
    assert len(lines) == 2, str(result)
    assert lines[0].startswith("Error: "), str(result)
    assert lines[1].startswith("Hint: "), str(result)
    if hint is not None:
        assert lines[1] == f"Hint: {hint}", str(result)
    return lines[0], lines[1]


def copy_repo(src: Path, dst: Path) -> Path:
    """A fresh repository with the same definitions, yaml and data, but no registry."""
    (dst / "data").mkdir(parents=True)
    for name in ("feature_store.yaml", "definitions.py"):
        shutil.copy(src / name, dst / name)
    shutil.copy(src / "data" / "driver_stats.parquet", dst / "data" / "driver_stats.parquet")
    return dst


# -- the scaffolded repository -----------------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def template(workspace: Path) -> tuple[Path, Result]:
    """`tiffin init` output, never applied: copied for tests that need a fresh repo."""
    parent = workspace / "template"
    parent.mkdir()
    result = run("init", PROJECT, cwd=parent)
    return parent / PROJECT, result


@pytest.fixture(scope="module")
def demo(workspace: Path, template) -> tuple[Path, Result]:
    repo = copy_repo(template[0], workspace / "demo")
    return repo, run("apply", cwd=repo)


@pytest.fixture(scope="module")
def read_only(workspace: Path, demo) -> dict[str, Result]:
    """Every command that only reads the applied demo repository, run concurrently."""
    repo = demo[0]
    assert repo.parent == workspace
    return run_all({
        "version": (("version",), repo),
        "init_again": (("init", PROJECT), workspace / "template"),
        "plan": (("plan",), repo),
        # -c / --chdir: run from the parent folder
        "fv_list": (("-c", repo.name, "feature-views", "list"), workspace),
        "configuration": (("--chdir", str(repo), "configuration"), workspace),
        "entity_describe": (("entities", "describe", "driver"), repo),
        "fs_list": (("feature-services", "list"), repo),
        "ds_list": (("data-sources", "list"), repo),
        "dump": (("registry-dump",), repo),
        "no_repo": (("feature-views", "list"), workspace),
        "describe_unknown": (("feature-views", "describe", "driver_hourly_stat"), repo),
        "describe_unknown_tb": (("--traceback", "feature-views", "describe", "driver_hourly_stat"),
                                repo),
        "bad_ts": (("materialize", "yesterday", "now"), repo),
        "materialize_unknown_view": (("materialize-incremental", "now", "--views",
                                      "driver_hourly_stat"), repo),
    })


def test_version(read_only):
    out = ok(read_only["version"]).out
    assert re.fullmatch(r"tiffin \S+\n", out)


def test_init_creates_repo(template):
    repo, result = template
    ok(result)
    assert "Created feature repository" in result.out
    assert (repo / "feature_store.yaml").is_file()
    assert (repo / "definitions.py").is_file()
    table = pq.read_table(repo / "data" / "driver_stats.parquet")
    assert {"driver_id", "event_timestamp", "created", "conv_rate", "acc_rate",
            "avg_daily_trips", "city"} <= set(table.column_names)
    assert table.num_rows > 0
    cfg = yaml.safe_load((repo / "feature_store.yaml").read_text())
    assert cfg["project"] == PROJECT


def test_init_refuses_non_empty_folder(read_only):
    error, _ = assert_clean_error(read_only["init_again"])
    assert "already exists" in error


def test_apply_prints_creates(demo):
    result = ok(demo[1])
    for line in ("+ entity driver", "+ data source driver_hourly_stats_source",
                 "+ data source driver_stats_push_source", f"+ feature view {VIEW}",
                 f"+ feature service {SERVICE}"):
        assert line in result.out.splitlines(), str(result)
    assert "5 to create, 0 to update, 0 to delete" in result.out


def test_plan_after_apply_has_no_changes(read_only):
    assert ok(read_only["plan"]).out.startswith("No changes")


def test_feature_views_list(read_only):
    lines = ok(read_only["fv_list"]).out.splitlines()
    assert lines[0].split()[:2] == ["NAME", "ENTITIES"]
    row = next(line for line in lines if line.startswith(VIEW))
    assert row.split()[1:3] == ["driver", "4"]


def test_entities_describe_is_yaml(read_only):
    doc = yaml.safe_load(ok(read_only["entity_describe"]).out)
    assert doc["name"] == "driver"
    assert doc["join_keys"] == ["driver_id"]
    assert doc["value_type"] == "INT64"


def test_feature_services_list(read_only):
    out = ok(read_only["fs_list"]).out
    row = next(line for line in out.splitlines() if line.startswith(SERVICE))
    assert f"{VIEW}[conv_rate,avg_daily_trips]" in row


def test_data_sources_list(read_only):
    rows = {line.split()[0]: line.split()[1:] for line in
            ok(read_only["ds_list"]).out.splitlines()[1:]}
    assert rows["driver_hourly_stats_source"] == ["file", "data/driver_stats.parquet"]
    assert rows["driver_stats_push_source"] == ["push", "driver_hourly_stats_source"]


def test_registry_dump_is_json(read_only):
    doc = json.loads(ok(read_only["dump"]).out)
    assert doc["format"] == "tiffin.registry"
    project = doc["projects"][PROJECT]
    assert set(project["feature_views"]) == {VIEW}
    assert set(project["feature_services"]) == {SERVICE}
    assert project["entities"]["driver"]["join_keys"] == ["driver_id"]


def test_configuration(read_only):
    cfg = yaml.safe_load(ok(read_only["configuration"]).out)
    assert cfg["project"] == PROJECT
    assert cfg["online_store"]["type"] == "sqlite"
    assert cfg["offline_store"]["type"] == "duckdb"
    assert cfg["registry"]["path"] == "data/registry.json"
    assert "repo_path" not in cfg


def test_outside_a_repo_hints_init(read_only):
    _, hint = assert_clean_error(read_only["no_repo"])
    assert "tiffin init" in hint


def test_unknown_view_is_one_error_line_and_a_hint(read_only):
    error, _ = assert_clean_error(read_only["describe_unknown"],
                                  hint=f"did you mean {VIEW!r}?")
    assert "'driver_hourly_stat'" in error


def test_traceback_flag_shows_traceback(read_only):
    result = read_only["describe_unknown_tb"]
    assert result.code != 0
    assert "Traceback" in result.err
    assert "FeatureViewNotFoundError" in result.err


def test_bad_timestamp_to_materialize(read_only):
    error, _ = assert_clean_error(read_only["bad_ts"])
    assert "START_TS" in error and "'yesterday'" in error


def test_materialize_unknown_view(read_only):
    error, _ = assert_clean_error(read_only["materialize_unknown_view"],
                                  hint=f"did you mean {VIEW!r}?")
    assert "'driver_hourly_stat'" in error


def test_materialize(demo, read_only):
    repo = demo[0]
    now = datetime.now(timezone.utc)
    start = (now - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S")
    result = ok(run("materialize", start, now.isoformat(), "-v", VIEW, cwd=repo))
    assert result.out.startswith("Materializing")
    assert re.search(rf"^  {VIEW}: 5 rows\b", result.out, re.M), str(result)

    incremental = ok(run("materialize-incremental", "now", cwd=repo))
    assert incremental.out.startswith("Materializing incrementally up to")
    assert re.search(rf"^  {VIEW}: \d+ rows\b", incremental.out, re.M), str(incremental)

    doc = json.loads((repo / "data" / "registry.json").read_text())
    marks = doc["projects"][PROJECT]["materializations"][VIEW]
    assert len(marks["intervals"]) == 2
    assert marks["watermark"] >= now.isoformat()[:19]

    from tiffin import FeatureStore
    with FeatureStore(repo_path=repo) as store:
        values = store.get_online_features([f"{VIEW}:conv_rate", f"{VIEW}:city"],
                                           [{"driver_id": 1001}, {"driver_id": 9999}]).to_dict()
    assert values["driver_id"] == [1001, 9999]
    assert values["conv_rate"][0] is not None and values["conv_rate"][1] is None
    assert values["city"][0] == "Lisbon"


# -- editing a repository: plan shows, apply changes, teardown removes -----------------------

def test_edit_plan_apply_teardown(workspace, template):
    repo = copy_repo(template[0], workspace / "lifecycle")
    ok(run("apply", cwd=repo))
    registry = repo / "data" / "registry.json"

    defs = repo / "definitions.py"
    text = defs.read_text()
    cut = text.index("driver_activity_v1 = FeatureService(")
    text = text[:cut] + "\n"  # drop the feature service
    text = text.replace('tags={"team": "driver_performance"},',
                        'tags={"team": "driver_performance"},\n    description="Hourly stats",')
    defs.write_text(text)

    planned = ok(run("plan", cwd=repo))
    lines = planned.out.splitlines()
    assert f"- feature service {SERVICE}" in lines, str(planned)
    assert f"~ feature view {VIEW} (changed: description)" in lines, str(planned)
    assert "0 to create, 1 to update, 1 to delete" in planned.out
    # plan changed nothing
    doc = json.loads(registry.read_text())["projects"][PROJECT]
    assert SERVICE in doc["feature_services"]
    assert doc["feature_views"][VIEW]["description"] == ""

    applied = ok(run("apply", cwd=repo))
    assert f"- feature service {SERVICE}" in applied.out.splitlines(), str(applied)
    doc = json.loads(registry.read_text())["projects"][PROJECT]
    assert doc["feature_services"] == {}
    assert doc["feature_views"][VIEW]["description"] == "Hourly stats"

    torn = ok(run("teardown", "-y", cwd=repo))
    assert PROJECT in torn.out
    listing = ok(run("feature-views", "list", cwd=repo))
    assert listing.out.splitlines()[0].startswith("NAME")
    assert VIEW not in listing.out
    assert json.loads(registry.read_text())["projects"][PROJECT]["entities"] == {}


# -- saved datasets: made by the SDK, listed by the CLI, kept by `apply` ---------------------

def test_saved_datasets_list_describe_and_survive_apply(workspace, template):
    from tiffin import FeatureStore
    from tiffin.definitions import SavedDatasetFileStorage
    from tiffin.repo import load_repo

    repo = copy_repo(template[0], workspace / "saved_datasets")
    with FeatureStore(repo_path=repo) as store:
        store.apply(load_repo(repo).objects, partial=False)
        entity_df = pd.DataFrame({"driver_id": [1001, 1002],
                                  "event_timestamp": [datetime.now(timezone.utc)] * 2})
        job = store.get_historical_features(entity_df, [f"{VIEW}:conv_rate", f"{VIEW}:city"])
        store.create_saved_dataset(from_=job, name="training_v1", tags={"team": "ml"},
                                   storage=SavedDatasetFileStorage(path="data/training.parquet"))
    ok(run("apply", cwd=repo))  # syncs the registry to the repository: must keep the dataset
    results = run_all({
        "list": (("saved-datasets", "list"), repo),
        "list_tagged": (("saved-datasets", "list", "--tags", "team:other"), repo),
        "describe": (("saved-datasets", "describe", "training_v1"), repo),
        "unknown": (("saved-datasets", "describe", "training_v2"), repo),
    })
    lines = ok(results["list"]).out.splitlines()
    assert lines[0].split() == ["NAME", "FEATURES", "STORAGE", "LOCATION", "CREATED"]
    assert lines[1].split()[:4] == ["training_v1", "2", "file", "data/training.parquet"]
    assert ok(results["list_tagged"]).out.splitlines()[1:] == []
    doc = yaml.safe_load(ok(results["describe"]).out)
    assert doc["features"] == [f"{VIEW}:conv_rate", f"{VIEW}:city"]
    assert doc["join_keys"] == ["driver_id"]
    assert doc["storage"]["path"] == "data/training.parquet"
    assert doc["tags"] == {"team": "ml"}
    error, _ = assert_clean_error(results["unknown"], hint="did you mean 'training_v1'?")
    assert error == "Error: saved dataset 'training_v2' not found in project 'demo'"
    with FeatureStore(repo_path=repo) as store:
        assert store.get_saved_dataset("training_v1").to_arrow().num_rows == 2


# -- broken repositories ---------------------------------------------------------------------

STRAY = "scratch/explore.py"
STRAY_CODE = 'import pandas\n\nraise RuntimeError("exploration notebook, not definitions")\n'


def _broken_definitions(repo: Path, code: str) -> None:
    (repo / "broken.py").write_text(textwrap.dedent(code).lstrip())


@pytest.fixture(scope="module")
def broken(workspace: Path, template) -> dict[str, tuple[Path, Result]]:
    """Repositories with one thing wrong each, all run concurrently."""
    base = workspace / "broken"
    src = template[0]
    repos: dict[str, Path] = {}

    def make(key: str) -> Path:
        repos[key] = copy_repo(src, base / key)
        return repos[key]

    _broken_definitions(make("syntax"), """
        from tiffin import Entity

        x = Entity(name="x", join_keys=["x_id"]
        y = 1
    """)
    _broken_definitions(make("runtime"), """
        from tiffin import Entity, ValueType

        rider = Entity(name="rider", join_keys=["rider_id"], value_type=ValueType.INT64)
        print(undefined_name)
    """)
    yml = make("bad_yaml") / "feature_store.yaml"
    yml.write_text(yml.read_text().replace("online_store:", "onlin_store:"))
    for key, ignore in (("stray", None), ("tiffinignore", (".tiffinignore", "scratch/\n")),
                        ("feastignore", (".feastignore", "# not definitions\n" + STRAY + "\n"))):
        repo = make(key)
        (repo / "scratch").mkdir()
        (repo / STRAY).write_text(STRAY_CODE)
        if ignore:
            (repo / ignore[0]).write_text(ignore[1])
    results = run_all({key: (("apply",), repo) for key, repo in repos.items()})
    return {key: (repos[key], results[key]) for key in repos}


def test_syntax_error_names_file_and_line(broken):
    error, hint = assert_clean_error(broken["syntax"][1])
    assert "broken.py" in error
    assert "SyntaxError" in error
    assert re.search(r"broken\.py:3\b|line 3\b", error), error
    assert ".tiffinignore" in hint


def test_runtime_error_names_file_and_line(broken):
    error, _ = assert_clean_error(broken["runtime"][1])
    assert "broken.py:4" in error
    assert "NameError" in error and "undefined_name" in error


def test_bad_yaml_key(broken):
    error, _ = assert_clean_error(broken["bad_yaml"][1], hint="did you mean 'online_store'?")
    assert "'onlin_store'" in error
    assert "feature_store.yaml" in error


def test_bad_yaml_key_names_the_file_once(broken):
    error, _ = assert_clean_error(broken["bad_yaml"][1])
    assert error.count("feature_store.yaml") == 1, error


def test_stray_script_breaks_apply(broken):
    error, _ = assert_clean_error(broken["stray"][1])
    assert "explore.py:3" in error
    assert "RuntimeError" in error


@pytest.mark.parametrize("key", ["tiffinignore", "feastignore"])
def test_ignore_file_excludes_stray_script(broken, key):
    result = ok(broken[key][1])
    assert f"+ feature view {VIEW}" in result.out


# -- a repository written as for Feast 0.67, with `feast` replaced by `tiffin` ----------------

FEAST_YAML = """\
project: rides
# The registry is a file; tiffin keeps its own format in it.
registry: data/registry.db
provider: local
online_store:
    type: sqlite
    path: data/online_store.db
offline_store:
    type: file
entity_key_serialization_version: 3
"""

FEAST_DEFINITIONS = '''\
from datetime import timedelta

from tiffin import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    Project,
    PushSource,
    ValueType,
)
from tiffin.types import Float32, Float64, Int64

project = Project(name="rides", description="Ride hailing features")

rider = Entity(name="rider", join_keys=["rider_id"], value_type=ValueType.INT64,
               description="A rider")

rider_stats_source = FileSource(
    name="rider_stats_source",
    path="data/rider_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

rider_stats_fv = FeatureView(
    name="rider_stats",
    entities=[rider],
    ttl=timedelta(days=1),
    schema=[
        Field(name="spend", dtype=Float64),
        Field(name="rating", dtype=Float32),
        Field(name="rides", dtype=Int64, description="Rides taken"),
    ],
    online=True,
    source=rider_stats_source,
    tags={"team": "riders"},
)

rider_stats_push_source = PushSource(
    name="rider_stats_push_source",
    batch_source=rider_stats_source,
)

rider_stats_fresh_fv = FeatureView(
    name="rider_stats_fresh",
    entities=[rider],
    ttl=timedelta(days=1),
    schema=[
        Field(name="spend", dtype=Float64),
        Field(name="rides", dtype=Int64),
    ],
    online=True,
    source=rider_stats_push_source,
    tags={"team": "riders"},
)

rider_model_v1 = FeatureService(
    name="rider_model_v1",
    features=[rider_stats_fv[["spend", "rides"]]],
)
'''

# Recent data: the online read enforces the 1-day ttl against the clock.
NOW = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
T0 = NOW - timedelta(days=1, hours=6)


def rider_stats() -> pa.Table:
    # rider 1: two rows a day apart; rider 2: two rows at one event time, `created` decides.
    late = T0 + timedelta(days=1, hours=1)
    ts = [T0, T0 + timedelta(days=1), late, late]
    return pa.table({
        "rider_id": pa.array([1, 1, 2, 2], pa.int64()),
        "event_timestamp": pa.array(ts, pa.timestamp("us", "UTC")),
        "created": pa.array([T0, T0 + timedelta(days=1), late, late + timedelta(minutes=5)],
                            pa.timestamp("us", "UTC")),
        "spend": pa.array([10.0, 20.0, 30.0, 31.0], pa.float64()),
        "rating": pa.array([4.5, 4.0, 3.5, 3.6], pa.float32()),
        "rides": pa.array([1, 2, 3, 4], pa.int64()),
    })


@pytest.fixture(scope="module")
def feast_repo(workspace: Path) -> tuple[Path, Result]:
    repo = workspace / "feast_style"
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(FEAST_YAML)
    (repo / "example_repo.py").write_text(FEAST_DEFINITIONS)
    pq.write_table(rider_stats(), repo / "data" / "rider_stats.parquet")
    return repo, run("apply", cwd=repo)


def test_feast_style_repo_applies(feast_repo):
    result = ok(feast_repo[1])
    lines = result.out.splitlines()
    for line in ("+ project rides", "+ entity rider", "+ feature view rider_stats",
                 "+ feature view rider_stats_fresh",
                 "+ feature service rider_model_v1", "+ data source rider_stats_push_source"):
        assert line in lines, str(result)


def test_feast_style_repo_works_through_the_sdk(feast_repo):
    from tiffin import FeatureStore

    repo = feast_repo[0]
    with FeatureStore(repo_path=repo) as store:
        assert store.project == "rides"
        assert {v.name for v in store.list_feature_views()} == {"rider_stats",
                                                              "rider_stats_fresh"}

        entity_df = pd.DataFrame({
            "rider_id": [1, 1, 2, 2],
            "event_timestamp": pd.to_datetime([T0 + timedelta(hours=12),
                                               T0 + timedelta(days=1, hours=1),
                                               T0 + timedelta(days=1, hours=2),
                                               T0 + timedelta(days=3)], utc=True),
        })
        training = store.get_historical_features(
            entity_df=entity_df,
            features=["rider_stats:spend", "rider_stats:rating", "rider_stats:rides"],
        ).to_df().sort_values(["rider_id", "event_timestamp"]).reset_index(drop=True)
        assert training["spend"].tolist()[:3] == [10.0, 20.0, 31.0]  # newest created wins
        assert training["rides"].tolist()[:3] == [1, 2, 4]
        assert pd.isna(training["spend"][3])  # older than the 1-day ttl

        service = store.get_feature_service("rider_model_v1")
        by_service = store.get_historical_features(entity_df=entity_df, features=service).to_df()
        assert {"spend", "rides"} <= set(by_service.columns)
        assert "rating" not in by_service.columns

        store.materialize(T0 - timedelta(days=1), datetime.now(timezone.utc))
        online = store.get_online_features(
            features=["rider_stats:spend", "rider_stats:rides"],
            entity_rows=[{"rider_id": 1}, {"rider_id": 2}, {"rider_id": 3}],
        ).to_dict()
        assert online["rider_id"] == [1, 2, 3]
        assert online["spend"] == [20.0, 31.0, None]
        assert online["rides"] == [2, 4, None]

        via_service = store.get_online_features(features=service,
                                                entity_rows=[{"rider_id": 2}]).to_dict()
        assert via_service["spend"] == [31.0]
