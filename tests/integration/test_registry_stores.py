"""Every registry store -- local file, S3, SQL on SQLite and on PostgreSQL -- through one suite.

Real services, no mocks of our own: S3 is moto's server on a free loopback port, PostgreSQL
the one ``make test`` starts (database ``tiffin_registry_test``, a schema per test). A store
is chosen the way users choose it, by the ``registry:`` section of ``feature_store.yaml``;
``SECTIONS`` is the one place that says how to point it at each backend.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tiffin import Entity, ValueType
from tiffin.config import RepoConfig
from tiffin.errors import (
    ConfigError,
    RegistryConflictError,
    RegistryError,
    RegistryUnavailableError,
)
from tiffin.registry import Registry, RegistryStore, registry_store

PG_HOST = os.environ.get("TIFFIN_TEST_POSTGRES_HOST", "127.0.0.1")
PG_DATABASE = "tiffin_registry_test"
BUCKET = "tiffin-registry-test"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
PYCACHE = Path(tempfile.gettempdir()) / f"tiffin-cli-tests-pycache-{os.getuid()}"


# -- services --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    """Fake credentials, for boto3 here and in the `tiffin` subprocesses (they inherit them)."""
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def moto(aws_env: None) -> Iterator[str]:
    """moto's S3 server on a free loopback port; yields its endpoint URL.

    Served one request at a time: moto checks If-Match / If-None-Match and then stores the
    object without a lock, so its threaded server (what ``moto_server`` and
    ThreadedMotoServer run) can let two racing conditional PUTs both succeed. S3 itself
    evaluates the condition atomically; a serial server is the faithful stand-in.
    """
    import boto3
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app),
                         threaded=False, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=BUCKET)
    client.close()
    yield endpoint
    server.shutdown()
    thread.join(10)
    server.server_close()


@pytest.fixture(scope="module")
def pg_database() -> str:
    import psycopg
    with psycopg.connect(host=PG_HOST, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (PG_DATABASE,)).fetchone():
            try:
                conn.execute(f"CREATE DATABASE {PG_DATABASE}")
            except psycopg.errors.DuplicateDatabase:
                pass  # another test run created it meanwhile
    return f"postgresql+psycopg://postgres@{PG_HOST}:5432/{PG_DATABASE}"


@pytest.fixture
def pg_url(pg_database: str) -> Iterator[str]:
    """The test database with a fresh schema first on the search path."""
    import psycopg
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=PG_HOST, user="postgres", dbname=PG_DATABASE,
                         autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{pg_database}?options=-csearch_path%3D{schema}"
    with psycopg.connect(host=PG_HOST, user="postgres", dbname=PG_DATABASE,
                         autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def free_port() -> int:
    """A loopback port nothing listens on (for 'unreachable' tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the backends under test -----------------------------------------------------------------

BACKENDS = ["file", "s3", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def section(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The ``registry:`` section of feature_store.yaml for a registry only this test uses."""
    kind = request.param
    if kind == "file":
        return {"path": str(tmp_path / "registry.json")}
    if kind == "s3":
        return {"path": f"s3://{BUCKET}/{uuid.uuid4().hex}/registry.json",
                "s3_endpoint_url": request.getfixturevalue("moto")}
    if kind == "sqlite":
        return {"registry_type": "sql", "path": f"sqlite:///{tmp_path}/registry.db"}
    return {"registry_type": "sql", "path": request.getfixturevalue("pg_url")}


def open_store(section: dict[str, Any], repo: Path) -> RegistryStore:
    return registry_store(RepoConfig(project="proj", registry=section, repo_path=repo))


@pytest.fixture
def store(section: dict[str, Any], tmp_path: Path) -> Iterator[RegistryStore]:
    s = open_store(section, tmp_path)
    yield s
    s.close()


def document(**projects: Any) -> bytes:
    return json.dumps({"format": "tiffin.registry", "format_version": 1, "serial": 1,
                       "updated_at": "2026-01-01T00:00:00+00:00", "projects": projects},
                      sort_keys=True).encode()


def projects_of(raw: bytes | None) -> dict[str, Any]:
    """The projects of a stored document, empty kinds dropped (SQL keeps no row for them)."""
    assert raw is not None
    return {p: {k: v for k, v in kinds.items() if v}
            for p, kinds in json.loads(raw)["projects"].items()}


def entity(name: str) -> Entity:
    return Entity(name=name, join_keys=[f"{name}_id"], value_type=ValueType.INT64)


# -- the RegistryStore contract --------------------------------------------------------------

def test_round_trip_and_conditional_write(store: RegistryStore):
    assert store.read() == (None, None)
    v1 = store.write(document(p={"entities": {"a": {"x": 1}}}), None)
    raw, version = store.read()
    assert version == v1
    assert projects_of(raw) == {"p": {"entities": {"a": {"x": 1}}}}

    with pytest.raises(RegistryConflictError):  # someone created the registry first
        store.write(document(p={"entities": {"a": {"x": 9}}}), None)
    v2 = store.write(document(p={"entities": {"a": {"x": 2}, "b": {"y": [1, 2]}}}), v1)
    assert v2 != v1
    with pytest.raises(RegistryConflictError, match="changed while applying"):
        store.write(document(p={"entities": {"a": {"x": 3}}}), v1)  # stale: v2 is newer
    raw, version = store.read()
    assert version == v2
    assert projects_of(raw) == {"p": {"entities": {"a": {"x": 2}, "b": {"y": [1, 2]}}}}

    v3 = store.write(document(p={"entities": {"b": {"y": [3]}}}, q={"projects": {"q": {}}}), v2)
    assert projects_of(store.read()[0]) == {"p": {"entities": {"b": {"y": [3]}}},
                                            "q": {"projects": {"q": {}}}}
    assert store.read()[1] == v3


def test_repeated_reads_see_every_change_of_another_writer(section: dict[str, Any],
                                                          tmp_path: Path):
    # Stores may answer an unchanged registry from what they read last (S3: a 304 to
    # If-None-Match; SQL: versions unchanged): a change by another client must show.
    reader, writer = open_store(section, tmp_path), open_store(section, tmp_path)
    try:
        v1 = writer.write(document(p={"entities": {"a": {"x": 1}}}), None)
        assert reader.read() == reader.read()
        assert projects_of(reader.read()[0]) == {"p": {"entities": {"a": {"x": 1}}}}
        writer.write(document(p={"entities": {"a": {"x": 2}}}), v1)
        raw, version = reader.read()
        assert projects_of(raw) == {"p": {"entities": {"a": {"x": 2}}}}
        assert reader.read() == (raw, version)
        # Deleted and created again (SQL versions start over at 1): still seen.
        writer.delete()
        assert reader.read() == (None, None)
        writer.write(document(p={"entities": {"a": {"x": 3}}}), None)
        assert projects_of(reader.read()[0]) == {"p": {"entities": {"a": {"x": 3}}}}
        writer.delete()
        writer.write(document(p={"entities": {"a": {"x": 4}}}), None)
        assert projects_of(reader.read()[0]) == {"p": {"entities": {"a": {"x": 4}}}}
    finally:
        reader.close()
        writer.close()


def test_s3_unchanged_registry_is_not_downloaded_again(moto: str, tmp_path: Path,
                                                      aws_env: None):
    store = open_store({"path": f"s3://{BUCKET}/unchanged/registry.json",
                        "s3_endpoint_url": moto}, tmp_path)
    try:
        store.write(document(p={"entities": {"a": {"x": 1}}}), None)
        statuses = []
        store._s3().meta.events.register(
            "after-call.s3.GetObject",
            lambda http_response, **_: statuses.append(http_response.status_code))
        first, second = store.read(), store.read()
        assert first == second and statuses == [200, 304]
    finally:
        store.close()


def test_registry_round_trip_and_teardown(section: dict[str, Any], tmp_path: Path):
    from datetime import datetime, timezone
    store = open_store(section, tmp_path)
    proj, other = Registry(store, "proj"), Registry(store, "other")
    proj.apply([entity("driver"), entity("customer")])
    other.apply([entity("rider")])
    day = datetime(2026, 1, 2, tzinfo=timezone.utc)
    proj.record_materialization("fv", day, day)

    fresh = Registry(open_store(section, tmp_path), "proj")  # another client, same registry
    assert sorted(e.name for e in fresh.list("entities")) == ["customer", "driver"]
    assert fresh.get("entities", "driver").join_key == "driver_id"
    assert fresh.snapshot().materialization("fv")["watermark"] == day.isoformat()
    assert fresh.snapshot().serial >= 3

    proj.delete_project()  # `tiffin teardown`: this project only
    assert proj.list("entities", allow_cache=False) == []
    assert [e.name for e in other.list("entities", allow_cache=False)] == ["rider"]
    store.delete()
    assert store.read() == (None, None)
    store.delete()  # nothing left: still fine
    store.close()


def _apply_many(section: dict[str, Any], repo: Path, worker: int, n: int) -> None:
    registry = Registry(open_store(section, repo), "proj")
    for i in range(n):
        registry.apply([entity(f"e{worker}_{i}")])
    registry.store.close()


def test_concurrent_writers_lose_nothing(section: dict[str, Any], tmp_path: Path):
    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(_apply_many, section, tmp_path, w, 4) for w in range(4)]:
            done.result(60)
    names = {e.name for e in Registry(open_store(section, tmp_path), "proj").list("entities")}
    assert names == {f"e{w}_{i}" for w in range(4) for i in range(4)}


# -- 8 concurrent `tiffin apply` processes, each repository adding its own view -------------------

SHARED = '''\
from tiffin import Entity, FileSource, ValueType

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
stats = FileSource(name="stats", path="data/stats.parquet", timestamp_field="event_timestamp")
'''

VIEW = '''\
from tiffin import FeatureView, Field
from tiffin.types import Float64

from shared import driver, stats

view = FeatureView(name="stats_{i}", entities=[driver], schema=[Field(name="x", dtype=Float64)],
                   source=stats)
'''


def _env() -> dict[str, str]:
    env = dict(os.environ)  # carries AWS_* when the S3 backend is under test
    for k in ("TIFFIN_TRACEBACK", "TIFFIN_REPO_DIR", "PYTHONDONTWRITEBYTECODE"):
        env.pop(k, None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)  # compile tiffin once, not per process
    return env


def tiffin(*args: str, cwd: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("tiffin")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "tiffin.cli"]
    return subprocess.Popen([*command, *args], cwd=cwd, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def compiled() -> None:
    """Compile what `tiffin apply` imports once, before eight processes all want it at once
    (a cold bytecode cache would make each of them compile botocore and SQLAlchemy)."""
    subprocess.run([sys.executable, "-c", "import tiffin.cli, tiffin.store, boto3, "
                    "tiffin.registry.s3, tiffin.registry.sql, sqlalchemy.dialects.sqlite, "
                    "sqlalchemy.dialects.postgresql, psycopg"], env=_env(), check=True,
                   timeout=300)


def make_repo(path: Path, i: int, section: dict[str, Any], data: Path) -> Path:
    (path / "data").mkdir(parents=True)
    shutil.copy(data, path / "data" / "stats.parquet")
    (path / "feature_store.yaml").write_text(yaml.safe_dump({
        "project": "shared", "registry": section,
        "online_store": {"type": "sqlite", "path": "data/online.db"}}))
    (path / "shared.py").write_text(SHARED)
    (path / "view.py").write_text(VIEW.format(i=i))
    return path


def test_concurrent_cli_applies_keep_every_view(section: dict[str, Any], tmp_path: Path,
                                                compiled: None):
    data = tmp_path / "stats.parquet"
    pq.write_table(pa.table({"driver_id": pa.array([1], pa.int64()),
                             "event_timestamp": pa.array([0], pa.timestamp("us", "UTC")),
                             "x": pa.array([0.5])}), data)
    repos = [make_repo(tmp_path / f"repo{i}", i, section, data) for i in range(8)]
    procs = [tiffin("apply", cwd=repo) for repo in repos]
    results = [(*proc.communicate(timeout=300), proc) for proc in procs]
    for out, err, proc in results:
        assert proc.returncode == 0 and "Traceback" not in err, f"{out}\n{err}"

    registry = Registry(open_store(section, tmp_path), "shared")
    assert {v.name for v in registry.list("feature_views")} == {f"stats_{i}" for i in range(8)}
    assert [e.name for e in registry.list("entities")] == ["driver"]
    owners = registry.snapshot().data["owners"]
    assert owners["feature_views/stats_3"] == ["repo3"]
    assert owners["entities/driver"] == sorted(f"repo{i}" for i in range(8))
    registry.store.close()


# -- S3 specifics ----------------------------------------------------------------------------

def test_s3_endpoint_and_extra_put_arguments(moto: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch):
    import boto3
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto)  # the standard variable, no yaml key
    key = f"{uuid.uuid4().hex}/registry.json"
    store = open_store({"path": f"s3://{BUCKET}/{key}",
                        "s3_additional_kwargs": {"ServerSideEncryption": "AES256"}}, tmp_path)
    assert store.describe() == f"s3://{BUCKET}/{key} at {moto}"
    Registry(store, "proj").apply([entity("driver")])
    head = boto3.client("s3", endpoint_url=moto).head_object(Bucket=BUCKET, Key=key)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ETag"] == store.read()[1]  # the ETag is the version


def test_s3_unreachable_endpoint_is_one_clear_error(aws_env: None, tmp_path: Path):
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = open_store({"path": "s3://bucket/registry.json", "s3_endpoint_url": endpoint},
                       tmp_path)
    with pytest.raises(RegistryUnavailableError) as info:
        store.read()
    assert info.value.transient
    assert f"s3://bucket/registry.json at {endpoint}" in info.value.message
    assert "AWS_ENDPOINT_URL" in info.value.hint


def test_s3_missing_bucket_and_missing_credentials(moto: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch):
    store = open_store({"path": "s3://no-such-bucket/registry.json", "s3_endpoint_url": moto},
                       tmp_path)
    with pytest.raises(RegistryError, match="bucket 'no-such-bucket' does not exist") as info:
        store.read()
    assert "aws s3 mb s3://no-such-bucket" in info.value.hint

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    store = open_store({"path": f"s3://{BUCKET}/registry.json", "s3_endpoint_url": moto},
                       tmp_path)
    with pytest.raises(RegistryError, match="no AWS credentials") as info:
        store.read()
    assert "AWS_ACCESS_KEY_ID" in info.value.hint


def test_bad_s3_path_is_a_config_error():
    with pytest.raises(ConfigError, match="not s3://bucket/key") as info:
        RepoConfig(project="p", registry="s3://just-a-bucket")
    assert "s3://my-bucket/" in info.value.hint


# -- SQL specifics ---------------------------------------------------------------------------

def test_sql_unreachable_database_hides_the_password(tmp_path: Path):
    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/db"
    store = open_store({"registry_type": "sql", "path": url}, tmp_path)
    with pytest.raises(RegistryUnavailableError) as info:
        store.read()
    assert "hunter2" not in str(info.value)
    assert "postgres:***@127.0.0.1" in info.value.message
    assert "database is up" in info.value.hint
    assert "hunter2" not in yaml.safe_dump(
        RepoConfig(project="p", registry={"registry_type": "sql", "path": url}).redacted())


@pytest.mark.postgres
def test_sql_missing_database(tmp_path: Path):
    store = open_store({"registry_type": "sql",
                        "path": f"postgresql://postgres@{PG_HOST}:5432/tiffin_no_such_db"},
                       tmp_path)
    with pytest.raises(RegistryError, match="does not exist") as info:
        store.read()
    assert "CREATE DATABASE" in info.value.hint


@pytest.mark.parametrize("path, message, hint", [
    ("postgress://u@h/db", "unknown database 'postgress'", "did you mean 'postgresql'?"),
    ("sqlite:///:memory:", "not a SQLite file", "sqlite:///data/registry.db"),
    ("postgresql://u@h:notaport/db", "is not a SQLAlchemy URL", "postgresql+psycopg://"),
])
def test_sql_bad_urls_are_config_errors(tmp_path: Path, path: str, message: str, hint: str):
    with pytest.raises(ConfigError, match=message) as info:
        open_store({"registry_type": "sql", "path": path}, tmp_path).read()
    assert hint in info.value.hint


def test_sqlite_path_is_relative_to_the_repository(tmp_path: Path):
    store = open_store({"registry_type": "sql", "path": "sqlite:///data/registry.db"}, tmp_path)
    Registry(store, "proj").apply([entity("driver")])
    assert (tmp_path / "data" / "registry.db").is_file()
    assert store.describe() == f"sqlite:///{tmp_path}/data/registry.db"


def test_cli_prints_registry_errors_without_a_traceback(tmp_path: Path, compiled: None):
    data = tmp_path / "stats.parquet"
    pq.write_table(pa.table({"driver_id": pa.array([1], pa.int64()),
                             "event_timestamp": pa.array([0], pa.timestamp("us", "UTC")),
                             "x": pa.array([0.5])}), data)
    url = f"postgresql://postgres:hunter2@127.0.0.1:{free_port()}/db"
    repo = make_repo(tmp_path / "repo", 0, {"registry_type": "sql", "path": url}, data)
    out, err = tiffin("apply", cwd=repo).communicate(timeout=120)
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err, err
    assert lines[0].startswith("Error: cannot open registry postgresql+psycopg://postgres:***@")
    assert lines[1].startswith("Hint: check that the database is up")
    assert "hunter2" not in err + out
