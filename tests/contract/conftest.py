"""Harness for the offline-store contract suite.

Every test in ``tests/contract`` takes the ``offline_backend`` fixture and so runs once per
backend. A backend object knows how to turn an Arrow table into a tiffin data source that
its offline store can read (``make_source``), what ``offline_store:`` config selects it
(``offline_config``) and how to ask it for a training set (``get_historical_features``).

To run the suite against a new offline store, write a class with those three methods
(plus ``name``, and ``close`` if it holds anything to release) and add it to ``BACKENDS``
(a service it needs goes in ``BACKEND_MARKS``); the test functions do not change.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tiffin import DataSource, FeatureStore, FileSource, PostgreSQLSource, RepoConfig, RetrievalJob


class DuckDBBackend:
    """Sources are Parquet files under the test's tmp_path, read by the duckdb offline store.

    ``strategy`` picks how the store joins: ``"auto"`` is what
    ``FeatureStore.get_historical_features`` does (for these small sources, the in-memory
    merge); ``"memory"`` forces that merge, ``"asof"`` DuckDB's ASOF SQL (what large
    sources get), ``"window"`` the portable ROW_NUMBER() SQL and ``"sweep"`` the portable
    window-function sweep PostgreSQL uses. The forced ones are reached through the store's
    internals.
    """

    def __init__(self, root: Path, strategy: str = "auto"):
        self.root = root
        self.strategy = strategy
        self.name = f"duckdb-{strategy}"

    def offline_config(self) -> dict[str, Any]:
        return {"type": "duckdb"}

    def make_source(self, name: str, table: pa.Table, *, timestamp_field: str = "event_timestamp",
                    created_timestamp_column: str = "",
                    field_mapping: dict[str, str] | None = None) -> DataSource:
        path = self.root / "data" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return FileSource(name=name, path=str(path), timestamp_field=timestamp_field,
                          created_timestamp_column=created_timestamp_column,
                          field_mapping=field_mapping)

    def get_historical_features(self, store: FeatureStore, entity_df: Any, features: Any,
                                full_feature_names: bool = False) -> RetrievalJob:
        if self.strategy == "auto":
            return store.get_historical_features(entity_df=entity_df, features=features,
                                                 full_feature_names=full_feature_names)
        from tiffin.offline.base import prepare_entity
        plan = store._plan(features, full_feature_names)
        table, ts = prepare_entity(entity_df, plan)
        return store.offline_store.get_historical_features(table, ts, plan, full_feature_names,
                                                           strategy=self.strategy)


PG_HOST = os.environ.get("TIFFIN_TEST_POSTGRES_HOST", "127.0.0.1")


class PostgresBackend:
    """Sources are tables in a schema of the test's own (dropped after it) in the local
    PostgreSQL, read by the postgres offline store. ``strategy`` as for DuckDBBackend:
    "auto" is what the store does (these tables have no indexes, so its ``sweep``),
    "lateral" forces the per-row probe it picks for indexed tables."""

    TYPES = {pa.int64(): "BIGINT", pa.int32(): "INTEGER", pa.float64(): "DOUBLE PRECISION",
             pa.float32(): "REAL", pa.string(): "TEXT", pa.bool_(): "BOOLEAN"}

    def __init__(self, root: Path, strategy: str = "auto"):
        import psycopg
        self.strategy = strategy
        self.name = f"postgres-{strategy}"
        self.schema = f"tiffin_pit_{uuid.uuid4().hex[:12]}"
        self.con = psycopg.connect(f"host={PG_HOST} user=postgres dbname=postgres",
                                   autocommit=True)
        self.con.execute(f"CREATE SCHEMA {self.schema}")

    def close(self) -> None:
        self.con.execute(f"DROP SCHEMA {self.schema} CASCADE")
        self.con.close()

    def offline_config(self) -> dict[str, Any]:
        return {"type": "postgres", "host": PG_HOST, "user": "postgres",
                "database": "postgres", "db_schema": self.schema}

    def _type(self, t: pa.DataType) -> str:
        if pa.types.is_timestamp(t):
            return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
        return self.TYPES[t]

    def make_source(self, name: str, table: pa.Table, *, timestamp_field: str = "event_timestamp",
                    created_timestamp_column: str = "",
                    field_mapping: dict[str, str] | None = None) -> DataSource:
        columns = []
        for f, col in zip(table.schema, table.columns):
            if pa.types.is_timestamp(f.type) and f.type.unit == "ns":
                # PostgreSQL keeps microseconds: an event at .0000005 is stored at the next
                # microsecond, so it is never earlier than it happened.
                col = pc.cast(pc.ceil_temporal(col, unit="microsecond"),
                              pa.timestamp("us", f.type.tz))
            columns.append(col)
        ddl = ", ".join(f'"{f.name}" {self._type(f.type)}' for f in table.schema)
        self.con.execute(f'CREATE TABLE {self.schema}."{name}" ({ddl})')
        with self.con.cursor().copy(f'COPY {self.schema}."{name}" FROM STDIN') as copy:
            for row in zip(*(c.to_pylist() for c in columns)):
                copy.write_row(row)
        return PostgreSQLSource(name=name, table=f'{self.schema}."{name}"',
                                timestamp_field=timestamp_field,
                                created_timestamp_column=created_timestamp_column,
                                field_mapping=field_mapping)

    def get_historical_features(self, store: FeatureStore, entity_df: Any, features: Any,
                                full_feature_names: bool = False) -> RetrievalJob:
        if self.strategy == "auto":
            return store.get_historical_features(entity_df=entity_df, features=features,
                                                 full_feature_names=full_feature_names)
        from tiffin.offline.base import prepare_entity
        plan = store._plan(features, full_feature_names)
        table, ts = prepare_entity(entity_df, plan)
        return store.offline_store.get_historical_features(table, ts, plan, full_feature_names,
                                                           strategy=self.strategy)


# -- Spark -----------------------------------------------------------------------------------
# One local SparkSession serves the whole test run (the store reuses the process's session):
# two threads and two shuffle partitions suit these few rows; no UI. The JIT flag (C1 only)
# cuts the JVM's start-up and warm-up by about half on small machines.
SPARK_TEST_CONF = {
    "spark.master": "local[2]",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    # Adaptive execution plans each stage after the previous one ran: worth it on big
    # data, a few hundred ms of pure overhead on a test's handful of rows.
    "spark.sql.adaptive.enabled": "false",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
    # not ./spark-warehouse in the working tree
    "spark.sql.warehouse.dir": os.path.join(tempfile.gettempdir(), "tiffin-test-warehouse"),
}


class SparkBackend:
    """Sources are Parquet files under the test's tmp_path, defined as
    ``SparkSource(path=..., file_format="parquet")`` and read by the spark offline store.
    Nanosecond timestamps are written as they are: the store converts them itself."""

    name = "spark"

    def __init__(self, root: Path):
        pytest.importorskip("pyspark")
        if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
            pytest.skip("Spark needs Java")
        self.root = root

    def offline_config(self) -> dict[str, Any]:
        return {"type": "spark", "spark_conf": SPARK_TEST_CONF}

    def make_source(self, name: str, table: pa.Table, *, timestamp_field: str = "event_timestamp",
                    created_timestamp_column: str = "",
                    field_mapping: dict[str, str] | None = None) -> DataSource:
        from tiffin import SparkSource
        path = self.root / "data" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return SparkSource(name=name, path=str(path), file_format="parquet",
                           timestamp_field=timestamp_field,
                           created_timestamp_column=created_timestamp_column,
                           field_mapping=field_mapping)

    def get_historical_features(self, store: FeatureStore, entity_df: Any, features: Any,
                                full_feature_names: bool = False) -> RetrievalJob:
        return store.get_historical_features(entity_df=entity_df, features=features,
                                             full_feature_names=full_feature_names)


# name -> factory(root directory) ; add PostgreSQL / Spark backends here.
BACKENDS: dict[str, Callable[[Path], Any]] = {
    "duckdb": lambda root: DuckDBBackend(root, "auto"),
    "duckdb-memory": lambda root: DuckDBBackend(root, "memory"),
    "duckdb-asof": lambda root: DuckDBBackend(root, "asof"),
    "duckdb-window": lambda root: DuckDBBackend(root, "window"),
    "duckdb-partitioned": lambda root: DuckDBBackend(root, "partitioned"),
    "duckdb-sweep": lambda root: DuckDBBackend(root, "sweep"),
    "postgres": lambda root: PostgresBackend(root, "auto"),
    "postgres-lateral": lambda root: PostgresBackend(root, "lateral"),
    "spark": SparkBackend,
}
# Backends that need a service: their marks select or skip them (-m "not postgres").
BACKEND_MARKS: dict[str, list[Any]] = {
    "postgres": [pytest.mark.postgres], "postgres-lateral": [pytest.mark.postgres],
    "spark": [pytest.mark.spark],
}


@pytest.fixture(params=[pytest.param(name, marks=BACKEND_MARKS.get(name, []))
                        for name in BACKENDS])
def offline_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    backend = BACKENDS[request.param](tmp_path)
    yield backend
    if hasattr(backend, "close"):
        backend.close()


@pytest.fixture
def make_store(offline_backend: Any, tmp_path: Path):
    """``make_store(entity, view, ...)``: a FeatureStore in tmp_path with the objects applied."""
    stores: list[FeatureStore] = []

    def make(*objects: Any) -> FeatureStore:
        root = tmp_path / f"repo{len(stores)}"
        root.mkdir()
        cfg = RepoConfig(project="contract", registry=str(root / "registry.json"),
                         provider="local",
                         online_store={"type": "sqlite", "path": str(root / "online.db")},
                         offline_store=offline_backend.offline_config())
        store = FeatureStore(repo_path=root, config=cfg)
        stores.append(store)
        store.apply(list(objects))
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def hist(offline_backend: Any) -> Callable[..., RetrievalJob]:
    """``hist(store, entity_df, features, full_feature_names=False)`` on the backend under test."""
    return offline_backend.get_historical_features
