"""The Spark engine: the latest row per entity is computed by Spark and written to the
online store by the executors, partition by partition; only row counts reach the driver.

Each executor task builds its own online store from the (pickled) repository config, so
the online store must be reachable from the executors: Redis or PostgreSQL on a cluster;
SQLite only when Spark runs on this machine (``local[*]``).

Sources are read by the configured offline store when it offers Spark DataFrames (the
``SPARK_FRAMES`` capability: the spark offline store, or a plugin's); with another
offline store (duckdb over Parquet files), this engine reads the Parquet ``FileSource``s
(and ``SparkSource``s) itself.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import datetime
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import field_validator

from tiffin.config import BackendConfig, RepoConfig
from tiffin.definitions import FeatureView
from tiffin.materialize.base import Engine, MaterializeResult, Progress
from tiffin.offline.base import SPARK_FRAMES, OfflineStore
from tiffin.offline.spark.config import spark_conf_values
from tiffin.online.base import OnlineStore
from tiffin.types import from_micros


class SparkEngineConfig(BackendConfig):
    """``batch_engine: {type: spark, spark_conf: {...}, partitions: 8}``; Feast's
    ``spark.engine`` is the same. ``partitions`` > 0 repartitions the latest rows before
    writing (how many executor tasks write at once); ``spark_conf`` is used when the
    offline store is not spark (else the offline store's session is used)."""

    type: Literal["spark"] = "spark"
    spark_conf: dict[str, str] = {}
    partitions: int = 0

    aliases: ClassVar[tuple[str, ...]] = (
        "spark.engine", "feast.infra.compute_engines.spark.compute.SparkComputeEngine")
    feast_keys: ClassVar[frozenset[str]] = frozenset({"staging_location", "region"})

    @field_validator("spark_conf", mode="before")
    @classmethod
    def _conf(cls, value: Any) -> dict[str, str]:
        return spark_conf_values(value)

    @field_validator("partitions")
    @classmethod
    def _partitions(cls, value: int) -> int:
        if value < 0:
            raise ValueError("partitions must be 0 (as Spark computed) or more")
        return value

    def store_class(self) -> type:
        return SparkEngine


class SparkEngine(Engine):
    def reader(self, offline: OfflineStore) -> Any:
        """The offline store that reads the sources as Spark DataFrames: the configured one
        if it can (SPARK_FRAMES), else a spark offline store of this engine's own (for
        Parquet files)."""
        if offline.supports(SPARK_FRAMES):
            return offline
        from tiffin.offline.spark.config import SparkOfflineStoreConfig
        from tiffin.offline.spark.store import SparkOfflineStore
        cfg = SparkOfflineStoreConfig(spark_conf=self.config.spark_conf)
        return SparkOfflineStore(cfg, self.repo_config)

    def materialize(self, offline: OfflineStore, online: OnlineStore, view: FeatureView,
                    start: datetime | None, end: datetime,
                    progress: Progress | None = None) -> MaterializeResult:
        from pyspark.sql import functions as F

        from tiffin.offline.spark.store import spark_errors, spark_message
        rows_df = self.reader(offline).latest_frame(view, start, end)
        if self.config.partitions:
            rows_df = rows_df.repartition(self.config.partitions)
        write = functools.partial(write_partition, self.repo_config, view.to_dict())
        try:
            totals = (rows_df.mapInArrow(write, "rows BIGINT, max_ts BIGINT")
                      .agg(F.sum("rows"), F.max("max_ts")).first())
        except spark_errors() as e:
            from tiffin.errors import BackendError
            raise BackendError(f"materializing {view.name!r} with Spark failed: "
                               f"{spark_message(e)}") from None
        rows, newest = int(totals[0] or 0), totals[1]
        if progress and rows:
            progress(rows)
        return MaterializeResult(view.name, rows, None if newest is None else
                                 from_micros(newest))


def write_partition(repo_config: RepoConfig, view_dict: dict[str, Any],
                    batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Runs in an executor: write one partition's rows to the online store, yield one row
    (rows written, newest event time in epoch microseconds)."""
    import pyarrow.compute as pc

    from tiffin.offline.base import online_batch_schema
    view = FeatureView.from_dict(view_dict)
    target = online_batch_schema(view)
    cfg = repo_config.online_store
    rows, newest = 0, None
    online = None
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if online is None:
                online = cfg.store_class()(cfg, repo_config)
            batch = batch.cast(target)
            online.write(view, batch)
            rows += batch.num_rows
            top = pc.max(pc.cast(batch.column("__event_ts"), pa.int64())).as_py()
            if top is not None and (newest is None or top > newest):
                newest = top
    finally:
        if online is not None:
            online.close()
    yield pa.RecordBatch.from_pydict({"rows": [rows], "max_ts": [newest]},
                                     schema=pa.schema([("rows", pa.int64()),
                                                       ("max_ts", pa.int64())]))


__all__ = ["SparkEngine", "SparkEngineConfig"]
