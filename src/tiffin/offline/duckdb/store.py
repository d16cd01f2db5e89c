from __future__ import annotations

import glob
import os
import threading
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from tiffin.config import RepoConfig
from tiffin.definitions import DataSource, FeatureView, FileSource
from tiffin.errors import BackendError, DefinitionError
from tiffin.features import FeaturePlan
from tiffin.offline.base import (
    OfflineStore,
    RetrievalJob,
    entity_time_range,
    online_batch_schema,
)
from tiffin.offline.duckdb.config import DuckDBOfflineStoreConfig
from tiffin.offline.pit import ENTITY_TS, ROW_ID, LatestRows, PointInTimeJoin, ViewJoin
from tiffin.types import TIMESTAMP


def _sql_string(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class DuckDBOfflineStore(OfflineStore):
    dialect = "duckdb"

    def __init__(self, config: DuckDBOfflineStoreConfig, repo_config: RepoConfig):
        super().__init__(config, repo_config)
        self._schemas: dict[tuple[str, float], pa.Schema] = {}
        self._lock = threading.Lock()

    # -- connections ---------------------------------------------------------------------
    def connect(self) -> duckdb.DuckDBPyConnection:
        """A fresh in-memory connection per job: jobs never share state or block each other."""
        con = duckdb.connect()
        # Casts between zoned and zone-less timestamps use the session zone: make it UTC.
        con.execute("SET TimeZone = 'UTC'")
        # We ORDER BY explicitly where order matters; not preserving it lets DuckDB stream
        # and spill with far less memory.
        con.execute("SET preserve_insertion_order = false")
        cfg = self.config
        if cfg.memory_limit:
            con.execute(f"SET memory_limit = {_sql_string(cfg.memory_limit)}")
        if cfg.threads:
            con.execute(f"SET threads = {int(cfg.threads)}")
        if cfg.temp_directory:
            con.execute(f"SET temp_directory = {_sql_string(cfg.temp_directory)}")
        return con

    # -- sources -------------------------------------------------------------------------
    def _files(self, source: FileSource) -> str:
        path = source.resolved_path(self.repo_config.repo_path)
        if "://" not in path and os.path.isdir(path):
            return os.path.join(path, "**", "*.parquet")
        return path

    def relation(self, source: DataSource) -> str:
        source = source.batch
        if not isinstance(source, FileSource):
            raise DefinitionError(f"the duckdb offline store reads FileSource, not "
                                  f"{type(source).__name__} ({source.name!r})")
        files = self._files(source)
        hive = ", hive_partitioning = true" if "**" in files else ""
        return f"read_parquet({_sql_string(files)}, union_by_name = true{hive})"

    def source_schema(self, source: DataSource) -> pa.Schema:
        batch = source.batch
        if isinstance(batch, FileSource):
            path = batch.resolved_path(self.repo_config.repo_path)
            if "://" not in path and not any(ch in path for ch in "*?[") and \
                    not os.path.exists(path):
                raise DefinitionError(f"source {batch.name!r}{batch.where()}: no file or "
                                      f"directory at {path}")
            if os.path.isdir(path) and not glob.glob(os.path.join(path, "**", "*.parquet"),
                                                     recursive=True):
                raise DefinitionError(f"source {batch.name!r}{batch.where()}: directory {path} "
                                      "has no .parquet files")
            key = (path, os.path.getmtime(path) if os.path.exists(path) else 0.0)
            if key in self._schemas:
                return self._schemas[key]
        rel = self.relation(batch)
        try:
            with self.connect() as con:
                schema = con.sql(f"SELECT * FROM {rel} LIMIT 0").to_arrow_table().schema
        except duckdb.Error as e:
            raise DefinitionError(f"source {batch.name!r}{batch.where()}: cannot read it: "
                                  f"{_first_line(e)}") from None
        if isinstance(batch, FileSource):
            self._schemas[key] = schema
        return schema

    # -- point-in-time join --------------------------------------------------------------
    def build_join(self, entity: pa.Table, entity_columns: list[str], plan: FeaturePlan,
                   strategy: str = "asof") -> PointInTimeJoin:
        lo, hi = entity_time_range(entity)
        views = []
        for i, req in enumerate(plan.views):
            view = req.view
            logical = req.join_keys + [f.name for f in req.features]
            src = self.source_columns(view.source.batch, self.relation(view.source), logical)
            views.append(ViewJoin(
                alias=f"v{i}", source=src, join_keys=req.join_keys,
                entity_keys=req.entity_columns,
                features=[(f.name, out, f.dtype) for f, out in zip(req.features,
                                                                    req.output_names)],
                ttl_seconds=view.ttl_seconds))
        return PointInTimeJoin("entity_df", entity_columns, views, lo, hi, strategy,
                               feature_order=plan.output_names)

    def get_historical_features(self, entity: pa.Table, timestamp_column: str,
                                plan: FeaturePlan, full_feature_names: bool,
                                strategy: str = "asof") -> RetrievalJob:
        entity_columns = [c for c in entity.column_names if c not in (ROW_ID, ENTITY_TS)]
        sql = self.build_join(entity, entity_columns, plan, strategy).render(self.dialect)
        ts_col = timestamp_column

        def run(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
            con.register("entity_df", entity)
            return con.sql(sql)

        def reader(batch_rows: int) -> pa.RecordBatchReader:
            con = self.connect()
            try:
                raw = run(con).to_arrow_reader(batch_rows)
            except duckdb.Error as e:
                con.close()
                raise BackendError(f"historical retrieval failed: {_first_line(e)}") from None
            return _utc_reader(raw, ts_col, con)

        def persist(path: str) -> None:
            with self.connect() as con:
                run(con)
                con.execute(f"COPY ({sql}) TO {_sql_string(path)} (FORMAT parquet)")

        lo, hi = entity_time_range(entity)
        return RetrievalJob(reader, persist=persist, sql=sql,
                            full_feature_names=full_feature_names,
                            metadata={"features": plan.output_names,
                                      "keys": plan.entity_columns,
                                      "min_event_timestamp": lo, "max_event_timestamp": hi})

    # -- materialization -----------------------------------------------------------------
    def pull_latest(self, view: FeatureView, start: datetime | None, end: datetime,
                    batch_rows: int) -> pa.RecordBatchReader:
        logical = view.join_keys + [f.name for f in view.features]
        src = self.source_columns(view.source.batch, self.relation(view.source), logical)
        sql = LatestRows(src, view.join_keys, [(f.name, f.dtype) for f in view.features],
                         start, end).render(self.dialect)
        con = self.connect()
        try:
            raw = con.sql(sql).to_arrow_reader(batch_rows)
        except duckdb.Error as e:
            con.close()
            raise BackendError(f"reading {view.name!r} from its source failed: "
                               f"{_first_line(e)}") from None
        return _cast_reader(raw, online_batch_schema(view), con)


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _utc_reader(raw: pa.RecordBatchReader, ts_col: str, con: Any) -> pa.RecordBatchReader:
    """DuckDB labels UTC as 'Etc/UTC'; hand users plain 'UTC' like the input had."""
    schema = raw.schema
    fields = [pa.field(f.name, TIMESTAMP) if pa.types.is_timestamp(f.type) and f.type.tz
              else f for f in schema]
    target = pa.schema(fields)
    return _cast_reader(raw, target, con)


def _cast_reader(raw: pa.RecordBatchReader, target: pa.Schema, con: Any
                 ) -> pa.RecordBatchReader:
    def batches():
        try:
            for batch in raw:
                yield batch.cast(target) if batch.schema != target else batch
        finally:
            con.close()
    return pa.RecordBatchReader.from_batches(target, batches())


__all__ = ["DuckDBOfflineStore"]
