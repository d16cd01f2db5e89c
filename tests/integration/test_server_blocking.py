"""The feature server's event loop never waits on a store: a request stuck on a locked
PostgreSQL table holds up only itself, and completes correctly once the lock goes."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tiffin import Entity, FeatureStore, FeatureView, Field, FileSource, PushSource, ValueType
from tiffin.server.app import create_app
from tiffin.types import Float64

psycopg = pytest.importorskip("psycopg")
uvicorn = pytest.importorskip("uvicorn")

pytestmark = pytest.mark.postgres

PG_HOST = os.environ.get("TIFFIN_TEST_POSTGRES_HOST", "127.0.0.1")
NOW = datetime.now(timezone.utc).replace(microsecond=0)
PROMPT = 3.0  # seconds: far more than any answer takes, far less than the lock is held


def _free_port() -> int:
    for port in range(8200, 8300):  # this suite's range on shared machines
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port in 8200-8299")


@pytest.fixture
def served(tmp_path):
    schema = f"srvblk_{uuid.uuid4().hex[:8]}"
    project = f"blk_{uuid.uuid4().hex[:8]}"
    (tmp_path / "feature_store.yaml").write_text(
        f"project: {project}\nregistry: registry.json\n"
        f"online_store:\n  type: postgres\n  host: {PG_HOST}\n  user: postgres\n"
        f"  database: postgres\n  db_schema: {schema}\n")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    objects: list = [driver]
    for name in ("slow", "fast"):
        pq.write_table(pa.table({
            "driver_id": pa.array([], pa.int64()), "rate": pa.array([], pa.float64()),
            "event_timestamp": pa.array([], pa.timestamp("us", "UTC"))}),
            tmp_path / f"{name}.parquet")
        batch = FileSource(name=f"{name}_batch", path=f"{name}.parquet",
                           timestamp_field="event_timestamp")
        push = PushSource(name=f"{name}_push", batch_source=batch)
        objects += [batch, push, FeatureView(name=name, entities=[driver], ttl=timedelta(days=1),
                                             source=push,
                                             schema=[Field(name="rate", dtype=Float64)])]
    store = FeatureStore(repo_path=tmp_path)
    store.apply(objects)
    for name, rate in (("slow", 0.5), ("fast", 0.25)):
        store.push(f"{name}_push", {"driver_id": [1], "rate": [rate],
                                    "event_timestamp": [NOW - timedelta(minutes=5)]})
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", schema, f"{project}_slow"
    finally:
        server.should_exit = True
        thread.join(30)
        with psycopg.connect(host=PG_HOST, user="postgres", dbname="postgres",
                             autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _waiting_on(con, schema: str, table: str) -> int:
    """How many sessions wait for a lock on the table."""
    return con.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE NOT l.granted AND n.nspname = %s AND c.relname = %s",
        [schema, table]).fetchone()[0]


def read(client: httpx.Client, base: str, view: str, ids=(1, 2)) -> httpx.Response:
    return client.post(f"{base}/get-online-features", json={
        "features": [f"{view}:rate"], "entities": {"driver_id": list(ids)}})


def test_a_request_waiting_on_a_locked_table_holds_up_no_other(served):
    base, schema, table = served
    results: dict[str, httpx.Response | BaseException] = {}

    def call(name, fn):
        try:
            with httpx.Client(timeout=120) as c:
                results[name] = fn(c)
        except BaseException as e:  # reported by the assertions below
            results[name] = e

    locker = psycopg.connect(host=PG_HOST, user="postgres", dbname="postgres")
    watcher = psycopg.connect(host=PG_HOST, user="postgres", dbname="postgres",
                              autocommit=True)
    try:
        locker.execute(f'LOCK TABLE "{schema}"."{table}" IN ACCESS EXCLUSIVE MODE')
        stuck = [
            threading.Thread(target=call, args=("read", lambda c: read(c, base, "slow"))),
            threading.Thread(target=call, args=("push", lambda c: c.post(f"{base}/push", json={
                "push_source_name": "slow_push", "df": {  # (a key the read does not ask)
                    "driver_id": [3], "rate": [0.75],
                    "event_timestamp": [NOW.isoformat()]}}))),
        ]
        for t in stuck:
            t.start()
        # (A server whose loop blocks on the first never even sends the second.)
        deadline = time.monotonic() + 20
        while _waiting_on(watcher, schema, table) < 2:
            assert time.monotonic() < deadline, f"requests never reached the lock: {results}"
            time.sleep(0.05)

        # Both wait on PostgreSQL; everything else is answered at once.
        with httpx.Client(timeout=PROMPT) as c:
            started = time.monotonic()
            assert c.get(f"{base}/health").json()["status"] == "ok"
            fast = read(c, base, "fast").json()
            assert fast["results"][1]["values"] == [0.25, None]
            pushed = c.post(f"{base}/push", json={
                "push_source_name": "fast_push", "df": {
                    "driver_id": [2], "rate": [0.125], "event_timestamp": [NOW.isoformat()]}})
            assert pushed.status_code == 200, pushed.text
            written = c.post(f"{base}/write-to-online-store", json={
                "feature_view_name": "fast", "df": {
                    "driver_id": [3], "rate": [1.0], "event_timestamp": [NOW.isoformat()]}})
            assert written.status_code == 200, written.text
            again = read(c, base, "fast").json()
            assert again["results"][1]["values"] == [0.25, 0.125]
            elapsed = time.monotonic() - started
        assert not results, f"a request on the locked table finished early: {results}"
        assert _waiting_on(watcher, schema, table) == 2
        assert elapsed < PROMPT * 5
    finally:
        locker.rollback()  # releases the lock
        locker.close()
        watcher.close()
    for t in stuck:
        t.join(60)
    got = results["read"]
    assert isinstance(got, httpx.Response) and got.status_code == 200, got
    body = got.json()
    assert body["metadata"]["feature_names"] == ["driver_id", "rate"]
    assert body["results"][1]["values"] == [0.5, None]
    assert body["results"][1]["statuses"] == ["PRESENT", "NOT_FOUND"]
    push = results["push"]
    assert isinstance(push, httpx.Response) and push.status_code == 200, push
    with httpx.Client(timeout=PROMPT) as c:
        assert read(c, base, "slow", (1, 3)).json()["results"][1]["values"] == [0.5, 0.75]


def test_unreachable_postgresql_is_a_prompt_503_on_the_async_path(served, tmp_path):
    # The same repository, its online store moved to a port nothing listens on.
    from fastapi.testclient import TestClient

    from tiffin.config import load_repo_config
    config = load_repo_config(tmp_path)
    dead = config.online_store.model_copy(update={"port": _free_port(),
                                                  "connect_timeout_seconds": 1})
    store = FeatureStore(repo_path=tmp_path, config=config.model_copy(
        update={"online_store": dead}))
    with TestClient(create_app(store)) as c:
        started = time.monotonic()
        r = c.post("/get-online-features", json={"features": ["fast:rate"],
                                                  "entities": {"driver_id": [1]}})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["type"] == "StoreUnavailableError"
        assert "PostgreSQL unreachable while reading 'fast'" in r.json()["error"]["message"]
        assert time.monotonic() - started < 10
