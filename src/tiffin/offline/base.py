"""The offline-store interface and the pieces every offline store shares.

An offline store runs queries against data tiffin does not own. It does four
things: tells what columns a source has (``source_schema``), runs the
point-in-time join (``get_historical_features``), finds the latest row per
entity in a time range (``pull_latest``, for materialization) and appends
pushed rows (``write``). Everything else (planning features, entity
frames, naming, ordering) lives here once.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from tiffin.config import BackendConfig, RepoConfig
from tiffin.definitions import DataSource, FeatureView
from tiffin.errors import DefinitionError, EntityDataFrameError, RequestError, did_you_mean
from tiffin.features import FeaturePlan
from tiffin.offline.pit import ENTITY_TS, ROW_ID, SourceColumns
from tiffin.types import TIMESTAMP, from_micros

DEFAULT_TIMESTAMP_COLUMN = "event_timestamp"

# Capabilities an offline store can declare (``OfflineStore.capabilities``) for engines that
# ask for more than the four methods. SPARK_FRAMES: ``latest_frame(view, start, end)``
# returns the latest row per entity as a Spark DataFrame in ``online_batch_schema``'s
# columns, so the spark engine writes from the executors without collecting rows.
SPARK_FRAMES = "spark_frames"


class RetrievalJob:
    """A training set not yet computed. Nothing runs until you ask for the data.

    >>> job = store.get_historical_features(entity_df, ["driver_stats:conv_rate"])  # doctest: +SKIP
    >>> df = job.to_df()                                                             # doctest: +SKIP
    """

    def __init__(self, reader: Callable[[int], pa.RecordBatchReader], *,
                 persist: Callable[[str], None] | None = None, sql: str | None = None,
                 full_feature_names: bool = False, metadata: dict[str, Any] | None = None):
        self._reader = reader
        self._persist = persist
        self._sql = sql
        self.full_feature_names = full_feature_names
        self.metadata = metadata or {}

    def to_arrow_batches(self, batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
        """Stream the result in record batches without holding it all in memory."""
        yield from self._reader(batch_rows)

    def to_arrow(self, timeout: int | None = None) -> pa.Table:
        return self._reader(1_000_000).read_all()

    def to_df(self, timeout: int | None = None, **_feast_only: Any) -> Any:
        return self.to_arrow().to_pandas()

    def to_polars(self) -> Any:
        from tiffin.frames import to_polars
        return to_polars(self.to_arrow())

    def to_sql(self) -> str:
        if self._sql is None:
            raise NotImplementedError("this retrieval job has no SQL form")
        return self._sql

    def persist(self, storage: Any, allow_overwrite: bool = False, timeout: int | None = None
                ) -> None:
        """Write the result to a Parquet file, streaming (``storage`` is a path or has ``.path``)."""
        path = str(getattr(storage, "path", storage))
        if os.path.exists(path) and not allow_overwrite:
            raise RequestError(f"{path} already exists", hint="pass allow_overwrite=True")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if self._persist is not None:
            self._persist(path)
            return
        import pyarrow.parquet as pq
        reader = self._reader(65_536)
        with pq.ParquetWriter(path, reader.schema) as w:
            for batch in reader:
                w.write_batch(batch)


class OfflineStore(ABC):
    """Runs queries against batch data. Implement the four abstract methods."""

    # Optional abilities an engine may ask for (``supports``), e.g. SPARK_FRAMES: an engine
    # asks for what it needs instead of checking for a store class, so a plugin store that
    # offers the same ability is used the same way.
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: BackendConfig, repo_config: RepoConfig):
        self.config = config
        self.repo_config = repo_config

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    @abstractmethod
    def source_schema(self, source: DataSource) -> pa.Schema:
        """The source's columns and types; raise DefinitionError when it cannot be read."""

    @abstractmethod
    def get_historical_features(self, entity: pa.Table, timestamp_column: str,
                                plan: FeaturePlan, full_feature_names: bool) -> RetrievalJob:
        """The point-in-time join of ``entity`` (normalized by ``prepare_entity``) and ``plan``."""

    @abstractmethod
    def pull_latest(self, view: FeatureView, start: datetime | None, end: datetime,
                    batch_rows: int) -> pa.RecordBatchReader:
        """Latest row per entity with start <= event_ts <= end, as ``online_batch_schema``."""

    @abstractmethod
    def write(self, source: DataSource, table: pa.Table) -> None:
        """Append rows (already in the source's columns and types) to ``source``, atomically."""

    def close(self) -> None:
        """Release connections."""

    # -- shared helpers ------------------------------------------------------------------
    def source_columns(self, source: DataSource, relation: str, logical: list[str],
                       schema: pa.Schema | None = None) -> SourceColumns:
        """Map logical names (features, join keys) to raw source columns and their types
        (``schema``: the source's, if the caller has read it already)."""
        schema = schema if schema is not None else self.source_schema(source)
        raw_by_logical = {v: k for k, v in source.field_mapping.items()}
        columns = {name: raw_by_logical.get(name, name) for name in logical}
        return SourceColumns(relation=relation, timestamp=source.timestamp_field,
                             created=source.created_timestamp_column or None, columns=columns,
                             arrow_types={f.name: f.type for f in schema})


def online_batch_schema(view: FeatureView) -> pa.Schema:
    """What materialization hands the online store: keys, features, event and created times."""
    fields = [pa.field(f.name, f.dtype.to_arrow()) for f in view.entity_columns]
    fields += [pa.field(f.name, f.dtype.to_arrow()) for f in view.features]
    fields += [pa.field("__event_ts", TIMESTAMP), pa.field("__created_ts", TIMESTAMP)]
    return pa.schema(fields)


def to_arrow_table(data: Any, what: str = "entity_df") -> pa.Table:
    """Accept a pandas/polars DataFrame, an Arrow table, a Parquet path or a dict of lists."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, (str, os.PathLike)):
        import pyarrow.parquet as pq
        if not os.path.exists(data):
            raise RequestError(f"{what}: no such file {str(data)!r}",
                               hint="pass a DataFrame, an Arrow table or a Parquet path")
        return pq.read_table(data)
    if isinstance(data, dict):
        lengths = {k: len(v) if isinstance(v, (list, tuple)) else None for k, v in data.items()}
        if any(n is None for n in lengths.values()):
            raise RequestError(f"{what}: every column must be a list of values")
        if len(set(lengths.values())) > 1:
            raise RequestError(f"{what}: columns have different lengths: {lengths}")
        try:
            return pa.table(data)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError,
                OverflowError) as e:
            raise RequestError(f"{what}: {str(e).splitlines()[0]}") from None
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False)
    if module == "polars":
        return data.to_arrow()
    raise RequestError(f"{what} must be a DataFrame, an Arrow table or a Parquet path, "
                       f"got {type(data).__name__}")


def utc_timestamps(col: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    t = col.type
    # Arrow stores instants as UTC epoch values, so a naive column (UTC, as in Feast) and a
    # zoned one both become timestamp[us, UTC] by a plain cast; ns precision is truncated.
    if pa.types.is_timestamp(t):
        return pc.cast(col, TIMESTAMP, safe=False)
    if pa.types.is_date(t):
        return col.cast(pa.timestamp("us")).cast(TIMESTAMP)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        # ISO 8601 text: all with offsets, all without (UTC), or a mix (value by value).
        for target in (TIMESTAMP, pa.timestamp("us")):
            try:
                return pc.cast(pc.cast(col, target), TIMESTAMP)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        try:
            parsed = [None if v is None else datetime.fromisoformat(v.replace("Z", "+00:00"))
                      for v in col.to_pylist()]
            parsed = [v if v is None or v.tzinfo else v.replace(tzinfo=timezone.utc)
                      for v in parsed]
            return pa.chunked_array([pa.array(parsed, TIMESTAMP)])
        except ValueError:
            pass
    raise EntityDataFrameError(f"column {name!r} is {t}, not a timestamp",
                               hint="send datetimes or ISO 8601 strings")


def prepare_entity(data: Any, plan: FeaturePlan) -> tuple[pa.Table, str]:
    """Normalize entity_df: find its timestamp column, make it UTC, add row id and ``__ts``.

    Returns the table and the timestamp column's name. Raises EntityDataFrameError for a
    missing join key or an ambiguous timestamp column.
    """
    table = to_arrow_table(data)
    names = table.column_names
    ts_col = check_entity_columns(table.schema, plan)
    ts = utc_timestamps(table.column(ts_col), ts_col)
    table = table.set_column(names.index(ts_col), ts_col, ts)
    import numpy as np  # a dependency anyway; here only, so importing tiffin stays light

    # From numpy, not a Python range: that took half a second for 2.5M entity rows.
    table = table.append_column(ROW_ID, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    table = table.append_column(ENTITY_TS, ts.cast(pa.timestamp("us")))
    return table, ts_col


def check_entity_columns(schema: pa.Schema, plan: FeaturePlan) -> str:
    """The entity rows' timestamp column (``event_timestamp``, else the one datetime
    column); raise EntityDataFrameError for a missing join key or a reserved name."""
    names = schema.names
    for internal in (ROW_ID, ENTITY_TS):
        if internal in names:
            raise EntityDataFrameError(f"entity_df has a column named {internal!r}, which "
                                       "tiffin reserves")
    if DEFAULT_TIMESTAMP_COLUMN in names:
        ts_col = DEFAULT_TIMESTAMP_COLUMN
    else:
        candidates = [f.name for f in schema
                      if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
        if len(candidates) != 1:
            raise EntityDataFrameError(
                f"entity_df has no {DEFAULT_TIMESTAMP_COLUMN!r} column and "
                f"{'no' if not candidates else len(candidates)} datetime columns "
                f"{candidates if candidates else ''}".rstrip(),
                hint=f"name the row timestamps {DEFAULT_TIMESTAMP_COLUMN!r}")
        ts_col = candidates[0]
    for v in plan.views:
        for key in v.entity_columns:
            if key not in names:
                raise EntityDataFrameError(
                    f"entity_df has no column {key!r}, the join key of feature view "
                    f"{v.name!r}", hint=did_you_mean(key, names) or f"columns are {names}")
    return ts_col


class EntityQueries(ABC):
    """An offline store that also takes ``entity_df`` as a SQL query (Feast's string form)
    and runs it itself, so the entity rows never pass through Python.

    >>> store.get_historical_features(                                   # doctest: +SKIP
    ...     "SELECT driver_id, event_timestamp FROM trips", ["driver_stats:conv_rate"])
    """

    @abstractmethod
    def get_historical_features_from_query(self, query: str, plan: FeaturePlan,
                                           full_feature_names: bool) -> RetrievalJob:
        """The point-in-time join of the query's rows; ``metadata["entity_columns"]`` lists
        the query's columns. Check the columns now (``check_entity_columns``), not when
        the job runs."""


_SQL_START = re.compile(r"\s*(\(|select\b|with\b|values\b|table\b)", re.IGNORECASE)


def entity_query(data: Any) -> str | None:
    """``entity_df`` as SQL text, or None: a string that is not an existing file and reads
    like a query (``SELECT``/``WITH``/``VALUES``/``TABLE``). Other strings are paths."""
    if isinstance(data, str) and _SQL_START.match(data) and not os.path.exists(data):
        return data
    return None


def historical_job(store: OfflineStore, entity_df: Any, plan: FeaturePlan,
                   full_feature_names: bool) -> tuple[RetrievalJob, list[str]]:
    """Start the point-in-time join for ``entity_df`` in any accepted form; returns the job
    and the entity_df's own columns (the result's first columns)."""
    query = entity_query(entity_df)
    if query is None:
        table, ts_col = prepare_entity(entity_df, plan)
        job = store.get_historical_features(table, ts_col, plan, full_feature_names)
        return job, entity_df_columns(table)
    if not isinstance(store, EntityQueries):
        raise RequestError(f"the {store.config.type} offline store cannot run entity_df as a "
                           "SQL query", hint="pass a DataFrame, an Arrow table or a Parquet "
                           "path, or use an offline store that runs SQL (postgres, spark)")
    job = store.get_historical_features_from_query(query, plan, full_feature_names)
    return job, list(job.metadata["entity_columns"])


def entity_df_columns(table: pa.Table) -> list[str]:
    """The caller's entity_df columns in a table from ``prepare_entity`` (internal ones out)."""
    return [c for c in table.column_names if c not in (ROW_ID, ENTITY_TS)]


def entity_time_range(table: pa.Table) -> tuple[datetime | None, datetime | None]:
    col = table.column(ENTITY_TS)
    if col.null_count == len(col):
        return None, None
    mm = pc.min_max(pc.cast(col, pa.int64()))  # ints: TimestampScalar.as_py imports pandas
    lo, hi = mm["min"].as_py(), mm["max"].as_py()
    return from_micros(lo), from_micros(hi)


def check_source_columns(view: FeatureView, schema: pa.Schema) -> None:
    """Every column the view reads must exist in the source (after field_mapping)."""
    src = view.source.batch
    names = schema.names
    raw_by_logical = {v: k for k, v in src.field_mapping.items()}
    where = view.where()

    def need(raw: str, role: str) -> None:
        if raw not in names:
            raise DefinitionError(
                f"feature view {view.name!r}{where}: {role} {raw!r} is not a column of source "
                f"{src.name!r}", hint=did_you_mean(raw, names) or f"source columns: {names}")

    if not src.timestamp_field:
        raise DefinitionError(f"source {src.name!r}{src.where()}: timestamp_field is not set",
                              hint="set timestamp_field to the event time column")
    need(src.timestamp_field, "timestamp_field")
    if src.created_timestamp_column:
        need(src.created_timestamp_column, "created_timestamp_column")
    for key in view.join_keys:
        need(raw_by_logical.get(key, key), "join key")
    for f in view.features:
        need(raw_by_logical.get(f.name, f.name), "feature")
