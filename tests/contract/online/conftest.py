"""Online contract suite harness: every online store runs the same tests.

A backend supplies ``config(tmp_path) -> dict`` (the ``online_store:`` section) and
``marks``. Add Redis/PostgreSQL by appending to ONLINE_BACKENDS.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis_servers

from tiffin import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from tiffin.offline.base import online_batch_schema
from tiffin.types import (
    Array,
    Bool,
    Bytes,
    Float32,
    Float64,
    Int32,
    Int64,
    String,
    UnixTimestamp,
)

NOW = datetime.now(timezone.utc).replace(microsecond=0)


@dataclass
class OnlineBackend:
    name: str
    config: Callable[[Any], dict]
    marks: list = field(default_factory=list)
    read_async: bool = False  # read through get_online_features_async
    servers: str | None = None  # a session fixture that starts the servers it talks to


REDIS = os.environ.get("TIFFIN_TEST_REDIS", "127.0.0.1:6379,db=15")
REDIS_CLUSTER = ",".join(f"127.0.0.1:{p}" for p in redis_servers.CLUSTER_PORTS)
REDIS_SENTINELS = ",".join(f"127.0.0.1:{p}" for p in redis_servers.SENTINEL_PORTS)


def _cluster(tmp):
    return {"type": "redis", "redis_type": "redis_cluster", "connection_string": REDIS_CLUSTER}


def _sentinel(tmp):
    return {"type": "redis", "redis_type": "redis_sentinel",
            "sentinel_master": redis_servers.SENTINEL_NAME,
            "connection_string": REDIS_SENTINELS}


ONLINE_BACKENDS = [
    OnlineBackend("sqlite", lambda tmp: {"type": "sqlite", "path": str(tmp / "online.db")}),
    OnlineBackend("redis", lambda tmp: {"type": "redis", "connection_string": REDIS},
                  [pytest.mark.redis]),
    OnlineBackend("redis-async", lambda tmp: {"type": "redis", "connection_string": REDIS},
                  [pytest.mark.redis], read_async=True),
    OnlineBackend("postgres", lambda tmp: {
        "type": "postgres", "host": os.environ.get("TIFFIN_TEST_POSTGRES_HOST", "127.0.0.1"),
        "user": "postgres", "database": "postgres", "db_schema": "tiffin_contract"},
        [pytest.mark.postgres]),
    OnlineBackend("postgres-async", lambda tmp: {
        "type": "postgres", "host": os.environ.get("TIFFIN_TEST_POSTGRES_HOST", "127.0.0.1"),
        "user": "postgres", "database": "postgres", "db_schema": "tiffin_contract"},
        [pytest.mark.postgres], read_async=True),
    OnlineBackend("redis-cluster", _cluster, [pytest.mark.redis], servers="redis_cluster"),
    OnlineBackend("redis-cluster-async", _cluster, [pytest.mark.redis], read_async=True,
                  servers="redis_cluster"),
    OnlineBackend("redis-sentinel", _sentinel, [pytest.mark.redis], servers="redis_sentinel"),
    OnlineBackend("redis-sentinel-async", _sentinel, [pytest.mark.redis], read_async=True,
                  servers="redis_sentinel"),
]


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A 3-master Redis Cluster on 127.0.0.1:7000-7002, for the whole session."""
    servers = redis_servers.start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory):
    """A master (7010), its replica (7011) and three sentinels (7020-7022)."""
    servers = redis_servers.start_sentinel(tmp_path_factory.mktemp("redis-sentinel"))
    yield servers
    servers.stop()


@pytest.fixture(params=[pytest.param(b, id=b.name, marks=b.marks) for b in ONLINE_BACKENDS])
def online_backend(request):
    if request.param.servers:
        request.getfixturevalue(request.param.servers)
    return request.param


ALL_TYPES = [("i32", Int32), ("i64", Int64), ("f32", Float32), ("f64", Float64),
             ("s", String), ("b", Bool), ("raw", Bytes), ("ts", UnixTimestamp),
             ("ai64", Array(Int64)), ("as", Array(String)), ("af64", Array(Float64))]


class OnlineWorld:
    """A store with three views applied: typed driver stats, customer stats, a pair view."""

    def __init__(self, tmp_path, backend: OnlineBackend, driver_ttl=timedelta(hours=2)):
        self.tmp = tmp_path
        self.backend = backend
        self._local = threading.local()
        self.loops: list[asyncio.AbstractEventLoop] = []
        self.driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
        self.customer = Entity(name="customer", join_keys=["customer_id"],
                               value_type=ValueType.STRING)
        schema_d = pa.schema([("driver_id", pa.int64()), ("event_timestamp", pa.timestamp("us", "UTC")),
                              ("created", pa.timestamp("us", "UTC"))]
                             + [(n, t.to_arrow()) for n, t in ALL_TYPES])
        self.driver_src = self._source("drivers", schema_d, created="created")
        self.customer_src = self._source("customers", pa.schema([
            ("customer_id", pa.string()), ("event_timestamp", pa.timestamp("us", "UTC")),
            ("spend", pa.float64()), ("tier", pa.string())]))
        self.pair_src = self._source("pairs", pa.schema([
            ("driver_id", pa.int64()), ("customer_id", pa.string()),
            ("event_timestamp", pa.timestamp("us", "UTC")), ("trips", pa.int64())]))
        self.driver_stats = FeatureView(
            name="driver_stats", entities=[self.driver], ttl=driver_ttl,
            schema=[Field(name=n, dtype=t) for n, t in ALL_TYPES], source=self.driver_src)
        self.customer_stats = FeatureView(
            name="customer_stats", entities=[self.customer], ttl=None,
            schema=[Field(name="spend", dtype=Float64), Field(name="tier", dtype=String)],
            source=self.customer_src)
        self.pair_stats = FeatureView(
            name="pair_stats", entities=[self.driver, self.customer], ttl=timedelta(days=1),
            schema=[Field(name="trips", dtype=Int64)], source=self.pair_src)
        # A project per test: stores shared by every test (Redis) stay separate.
        self.config = RepoConfig(project=f"oc_{uuid.uuid4().hex[:10]}",
                                 registry=str(tmp_path / "registry.json"),
                                 online_store=backend.config(tmp_path))
        self.store = FeatureStore(repo_path=tmp_path, config=self.config)
        self.store.apply([self.driver, self.customer, self.driver_stats, self.customer_stats,
                          self.pair_stats])

    def _source(self, name, schema, created=""):
        path = self.tmp / f"{name}.parquet"
        pq.write_table(schema.empty_table(), path)
        return FileSource(name=name, path=str(path), timestamp_field="event_timestamp",
                          created_timestamp_column=created)

    def view(self, name):
        return self.store.get_feature_view(name)

    def write(self, view_name, rows: list[dict]):
        """Write rows straight through the store interface (each needs __event_ts)."""
        view = self.view(view_name)
        schema = online_batch_schema(view)
        cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
        batch = pa.RecordBatch.from_pydict(cols, schema=schema)
        self.store.online_store.write(view, batch)

    def read(self, features, rows, **kw):
        if self.backend.read_async:
            # One event loop per thread for the whole test, as a server worker has: an
            # async client's connections belong to the loop that opened them.
            loop = getattr(self._local, "loop", None)
            if loop is None:
                loop = self._local.loop = asyncio.new_event_loop()
                self.loops.append(loop)
            return loop.run_until_complete(self.store.get_online_features_async(
                features=features, entity_rows=rows, **kw))
        return self.store.get_online_features(features=features, entity_rows=rows, **kw)

    def close(self):
        # Each loop's async clients are closed on that loop, before it closes: a transport
        # its loop never closed leaks its socket.
        for loop in self.loops:
            loop.run_until_complete(self.store.aclose())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        self.store.close()


@pytest.fixture
def world(tmp_path, online_backend):
    w = OnlineWorld(tmp_path, online_backend)
    yield w
    w.store.online_store.teardown(w.store.list_feature_views())
    w.close()
