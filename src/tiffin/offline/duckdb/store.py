from __future__ import annotations

import glob
import os
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc  # noqa: F401  (pa.ipc)
import pyarrow.parquet as pq

from tiffin.config import RepoConfig
from tiffin.definitions import DataSource, FeatureView, FileSource
from tiffin.errors import BackendError, DefinitionError, RequestError
from tiffin.features import FeaturePlan
from tiffin.offline.base import (
    OfflineStore,
    RetrievalJob,
    entity_df_columns,
    entity_time_range,
    online_batch_schema,
)
from tiffin.offline.duckdb.config import DuckDBOfflineStoreConfig
from tiffin.offline.merge import micros, point_in_time_indices, take
from tiffin.offline.pit import (
    CREATED_TS,
    ENTITY_TS,
    EVENT_TS,
    Dialect,
    LatestRows,
    PointInTimeJoin,
    ViewJoin,
)
from tiffin.types import TIMESTAMP, from_micros


class _LazyModule:
    """``duckdb`` imported on first attribute use: `tiffin plan/apply` on local Parquet
    never needs it, and it costs a third of a second to import."""

    def __getattr__(self, name: str) -> Any:
        import duckdb as module
        globals()["duckdb"] = module
        return getattr(module, name)


duckdb: Any = _LazyModule()


# Read a chunked merge's next part while merging the current one (see _merge_chunked).
_PREFETCH = True


def _sql_string(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join(_sql_string(i) for i in items) + "]"


def pushed_dir(path: str) -> str:
    """Where rows pushed to a single-file source go: a folder beside it, read with it."""
    return path + ".pushed"


class DuckDBOfflineStore(OfflineStore):
    dialect = "duckdb"

    def __init__(self, config: DuckDBOfflineStoreConfig, repo_config: RepoConfig):
        super().__init__(config, repo_config)
        self._schemas: dict[tuple[str, float], pa.Schema] = {}

    # -- connections ---------------------------------------------------------------------
    def connect(self) -> duckdb.DuckDBPyConnection:
        """A fresh in-memory connection per job: jobs never share state or block each other."""
        con = duckdb.connect()
        # Casts between zoned and zone-less timestamps use the session zone: make it UTC.
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
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
    def _files(self, source: FileSource) -> list[str]:
        """Globs DuckDB reads for a source: the path, plus rows pushed beside a single file."""
        path = source.resolved_path(self.repo_config.repo_path)
        if "://" not in path and os.path.isdir(path):
            return [os.path.join(path, "**", "*.parquet")]
        pushed = pushed_dir(path)
        if "://" not in path and os.path.isdir(pushed) and \
                glob.glob(os.path.join(pushed, "*.parquet")):
            return [path, os.path.join(pushed, "*.parquet")]
        return [path]

    def write(self, source: DataSource, table: pa.Table) -> None:
        """Append rows to a Parquet source: a new file, written whole then renamed into
        place, so a concurrent reader sees all of it or none of it."""
        batch = source.batch
        if not isinstance(batch, FileSource):
            raise DefinitionError(f"the duckdb offline store writes FileSource, not "
                                  f"{type(batch).__name__} ({batch.name!r})")
        path = batch.resolved_path(self.repo_config.repo_path)
        if "://" in path or any(ch in path for ch in "*?["):
            raise RequestError(f"source {batch.name!r}: cannot append to {path}",
                               hint="push to a local Parquet file or directory")
        target = path if os.path.isdir(path) else pushed_dir(path)
        os.makedirs(target, exist_ok=True)
        name = f"part-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
        tmp = os.path.join(target, f".{name}.tmp")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, os.path.join(target, name + ".parquet"))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def relation(self, source: DataSource) -> str:
        source = source.batch
        if not isinstance(source, FileSource):
            raise DefinitionError(f"the duckdb offline store reads FileSource, not "
                                  f"{type(source).__name__} ({source.name!r})")
        files = self._files(source)
        hive = ", hive_partitioning = true" if "**" in files[0] else ""
        return f"read_parquet({_sql_list(files)}, union_by_name = true{hive})"

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
            if os.path.isfile(path):
                # The footer is enough; no query engine needed to learn the columns.
                try:
                    schema = pq.read_schema(path)
                except (pa.ArrowException, OSError) as e:
                    raise DefinitionError(f"source {batch.name!r}{batch.where()}: cannot read "
                                          f"{path} as Parquet: {e}") from None
                self._schemas[key] = schema
                return schema
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
            source = req.view.source
            views.append(ViewJoin.of(f"v{i}", req, self.source_columns(
                source.batch, self.relation(source), req.source_columns)))
        return PointInTimeJoin("entity_df", entity_columns, views, lo, hi, strategy,
                               feature_order=plan.view_outputs)

    def get_historical_features(self, entity: pa.Table, timestamp_column: str,
                                plan: FeaturePlan, full_feature_names: bool,
                                strategy: str = "auto") -> RetrievalJob:
        """``strategy``: "auto" merges in memory, partitioning sources larger than
        ``in_memory_join_max_rows`` by key hash, and runs the ASOF SQL when a source's size
        is unknown or the merge cannot pack its keys; "memory", "partitioned", "asof",
        "window" and "sweep" force one (the contract suite runs each)."""
        entity_columns = entity_df_columns(entity)
        join = self.build_join(entity, entity_columns, plan,
                               strategy if strategy in ("window", "sweep") else "asof")
        sql = join.render(self.dialect)
        ts_col = timestamp_column
        in_memory = strategy in ("memory", "partitioned")
        counts: list[int | None] | None = None
        if strategy == "auto":
            # Sized from the Parquet footers: sources that fit merge in memory, larger ones
            # merge bucket by bucket; only a source of unknown size goes to the ASOF SQL.
            # ``in_memory_join_max_rows: 0`` asks for the ASOF SQL whatever the sizes.
            counts = [self._source_rows(req.view.source.batch) for req in plan.views]
            in_memory = self.config.in_memory_join_max_rows > 0 and all(
                c is not None for c in counts)

        def merged() -> pa.Table | None:
            if not in_memory:
                return None
            if strategy == "partitioned":  # forced, for the contract suite: 3 buckets always
                table = self._merge_in_memory(entity, join, force_buckets=3)
            else:
                table = self._merge_in_memory(entity, join, counts,
                                              sources=[r.view.source.batch for r in plan.views])
            if table is None and strategy in ("memory", "partitioned"):
                raise BackendError("the in-memory merge cannot pack these keys and times")
            return table

        def run(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyRelation:
            con.register("entity_df", entity)
            return con.sql(sql)

        def reader(batch_rows: int) -> pa.RecordBatchReader:
            table = merged()
            if table is not None:
                return pa.RecordBatchReader.from_batches(table.schema,
                                                         table.to_batches(batch_rows))
            con = self.connect()
            try:
                raw = run(con).to_arrow_reader(batch_rows)
            except duckdb.Error as e:
                con.close()
                raise BackendError(f"historical retrieval failed: {_first_line(e)}") from None
            return _utc_reader(raw, ts_col, con)

        def persist(path: str) -> None:
            table = merged()
            if table is not None:
                pq.write_table(table, path)
                return
            with self.connect() as con:
                run(con)
                con.execute(f"COPY ({sql}) TO {_sql_string(path)} (FORMAT parquet)")

        return RetrievalJob(reader, persist=persist, sql=sql,
                            full_feature_names=full_feature_names,
                            metadata={"features": plan.view_outputs,
                                      "keys": plan.entity_columns,
                                      "min_event_timestamp": join.min_ts,
                                      "max_event_timestamp": join.max_ts})

    def _source_rows(self, source: DataSource) -> int | None:
        """Rows in a Parquet source, from the files' footers (None when unknown)."""
        with self.connect() as con:
            try:
                ((rows,),) = con.sql(
                    "SELECT COALESCE(SUM(num_rows), 0) FROM parquet_file_metadata("
                    f"{_sql_list(self._files(source))})").fetchall()  # type: ignore[arg-type]
            except duckdb.Error:
                return None
        return int(rows)

    def _merge_in_memory(self, entity: pa.Table, join: PointInTimeJoin,
                         source_rows: list[int | None] | None = None,
                         force_buckets: int | None = None,
                         sources: list[DataSource] | None = None) -> pa.Table | None:
        """The point-in-time join by ``merge.point_in_time_indices``, one view at a time.

        With ``source_rows`` (per view), a source larger than ``in_memory_join_max_rows`` is first
        split by a hash of its join keys into buckets of half that size (one streaming
        DuckDB pass to Parquet files in the temp directory); each bucket is then merged
        with the entity rows whose keys hash to it. Memory stays bounded by one bucket
        plus the result, however large the source.
        """
        ent_ts_col = entity.column(ENTITY_TS)
        ent_valid = ent_ts_col.is_valid().to_numpy(zero_copy_only=False)
        ent_ts = micros(ent_ts_col, null=0)
        limit = self.config.in_memory_join_max_rows
        dialect = Dialect.registry[self.dialect]()

        def one_view(v: ViewJoin, rows: int | None, source: DataSource | None
                     ) -> dict[str, pa.Array] | None:
            if force_buckets:
                return self._merge_partitioned(entity, join, v, ent_ts, ent_valid, force_buckets)
            if limit > 0 and rows is not None and rows > limit:
                target = max(1, limit // 2)
                chunks = self._time_chunks(v, source, ent_ts, ent_valid, target)
                if chunks:
                    return self._merge_time_chunked(entity, join, v, ent_ts, ent_valid, chunks)
                key_chunks = self._key_chunks(v, source, entity, ent_valid, target)
                if key_chunks:
                    return self._merge_key_chunked(entity, join, v, ent_ts, ent_valid,
                                                   key_chunks)
                return self._merge_partitioned(entity, join, v, ent_ts, ent_valid,
                                               buckets=-(-rows // target))
            with self.connect() as con:
                try:
                    src = con.sql(join.source_query(dialect, v, epoch_us=True)).to_arrow_table()
                except duckdb.Error as e:
                    raise BackendError(f"reading a source failed: {_first_line(e)}") from None
            return _merge_view(src, v, [entity.column(c) for c in v.entity_keys], ent_ts,
                               ent_valid)

        # One view at a time: only one source is in memory at once (merging two views in
        # parallel measured no faster on two cores and a quarter more memory).
        features: dict[str, pa.Array] = {}
        for v, rows, source in zip(join.views, source_rows or [None] * len(join.views),
                                   sources or [None] * len(join.views)):
            part = one_view(v, rows, source)
            if part is None:
                return None
            features.update(part)
        order = join.feature_order or list(features)
        arrays = [entity.column(c) for c in join.entity_columns] + [features[n] for n in order]
        return pa.Table.from_arrays(arrays, names=join.entity_columns + order)

    def _time_chunks(self, v: ViewJoin, source: DataSource | None, ent_ts: np.ndarray,
                     ent_valid: np.ndarray, target_rows: int) -> list[tuple[int, int]] | None:
        """Entity time ranges whose source rows (by Parquet row-group statistics) fit.

        With a ttl, an entity row at t needs only source rows in [t - ttl, t]. Sources are
        usually appended in time order, so the row groups' min/max event times tell how
        many rows a range of entity times needs without reading them. Returns None when
        that does not work out (no ttl, no statistics, or rows not clustered by time).
        """
        if not v.ttl_seconds or not isinstance(source, FileSource):
            return None
        ttl = round(v.ttl_seconds * 1_000_000)
        stats = self._row_group_times(source, v.source.timestamp)
        if stats is None:
            return None
        n_rows, mins, maxs = stats
        # A source not clustered by time fails on any one entity time (it alone needs more
        # than target rows): a few samples tell before the sort of every entity time does.
        sample = ent_ts[ent_valid][:: max(1, int(ent_valid.sum()) // 16)]
        for t in sample.tolist():
            if int(n_rows[(maxs >= t - ttl) & (mins <= t)].sum()) > target_rows:
                return None
        times = _distinct(ent_ts[ent_valid])
        if times.size == 0:
            return None
        chunks = _ranges(times, n_rows, mins, maxs, target_rows, ttl)
        if chunks is None:
            return None
        total = sum(int(n_rows[(maxs >= lo - ttl) & (mins <= hi)].sum()) for lo, hi in chunks)
        if total > 2 * int(n_rows.sum()):
            return None  # ranges overlap too much: hashing the keys reads less
        return chunks

    def _merge_time_chunked(self, entity: pa.Table, join: PointInTimeJoin, v: ViewJoin,
                            ent_ts: np.ndarray, ent_valid: np.ndarray,
                            chunks: list[tuple[int, int]]) -> dict[str, pa.Array] | None:
        d = Dialect.registry[self.dialect]()

        def parts():
            for lo, hi in chunks:
                rows = np.flatnonzero(ent_valid & (ent_ts >= lo) & (ent_ts <= hi))
                if rows.size:
                    # The same source query, pruned to what these entity times can match.
                    sub = replace(join, min_ts=from_micros(lo), max_ts=from_micros(hi))
                    yield rows, sub.source_query(d, v, epoch_us=True)

        return self._merge_chunked(entity, v, ent_ts, ent_valid, parts())

    def _merge_key_chunked(self, entity: pa.Table, join: PointInTimeJoin, v: ViewJoin,
                           ent_ts: np.ndarray, ent_valid: np.ndarray,
                           chunks: list[tuple[int, int]]) -> dict[str, pa.Array] | None:
        d = Dialect.registry[self.dialect]()
        keys = self._int_keys(entity.column(v.entity_keys[0]))
        assert keys is not None  # _key_chunks said so
        values, known = keys
        source = join.source_query(d, v, epoch_us=True)
        key = d.quote("k0")

        def parts():
            for lo, hi in chunks:
                rows = np.flatnonzero(ent_valid & known & (values >= lo) & (values <= hi))
                if rows.size:
                    # DuckDB pushes the key range down to the Parquet scan: row groups whose
                    # key statistics lie outside it are skipped unread.
                    yield rows, (f"SELECT * FROM ({source}) AS s "
                                 f"WHERE {key} BETWEEN {lo} AND {hi}")

        # In file order, a source sorted by key and time gives its codes already sorted:
        # the merge's sort becomes one check (scan threads finishing out of order would
        # otherwise hand it a run per row group to merge).
        return self._merge_chunked(entity, v, ent_ts, ent_valid, parts(), in_order=True)

    def _merge_chunked(self, entity: pa.Table, v: ViewJoin, ent_ts: np.ndarray,
                       ent_valid: np.ndarray, parts: Any, in_order: bool = False
                       ) -> dict[str, pa.Array] | None:
        """Merge disjoint sets of entity rows, each against the source rows its query
        reads; ``parts`` yields (entity row positions, source query). Entity rows in no
        part cannot match anything and get nulls. ``in_order``: read rows in file order."""
        ent_keys = [entity.column(c) for c in v.entity_keys]
        positions, pieces = [], []
        assigned = np.zeros(entity.num_rows, bool)

        def read(query: str) -> pa.Table:
            with self.connect() as con:
                if in_order:
                    con.execute("SET preserve_insertion_order = true")
                try:
                    return con.sql(query).to_arrow_table()
                except duckdb.Error as e:
                    raise BackendError(f"reading a source failed: {_first_line(e)}") from None

        todo = list(parts)
        # The next part is read (DuckDB, off the GIL) while this one merges (numpy, mostly
        # off it too): two cores both busy, at the cost of one more part in memory.
        with ThreadPoolExecutor(1) if _PREFETCH and len(todo) > 1 else nullcontext() as pool:
            ahead = pool.submit(read, todo[0][1]) if pool else None
            for i, (rows, query) in enumerate(todo):
                assigned[rows] = True
                if pool:
                    src = ahead.result()
                    ahead = pool.submit(read, todo[i + 1][1]) if i + 1 < len(todo) else None
                else:
                    src = read(query)
                idx_rows = pa.array(rows)
                part = _merge_view(src, v, [k.take(idx_rows) for k in ent_keys], ent_ts[rows],
                                   ent_valid[rows])
                del src
                if part is None:
                    if ahead is not None:
                        ahead.cancel()
                    return None
                positions.append(rows)
                pieces.append(part)
        rest = np.flatnonzero(~assigned)
        if rest.size or not pieces:
            idx_rows = pa.array(rest)
            pieces.append(_merge_view(None, v, [k.take(idx_rows) for k in ent_keys], ent_ts[rest],
                                      ent_valid[rest]))
            positions.append(rest)
        return _in_entity_order(entity.num_rows, positions, pieces, v)

    @staticmethod
    def _int_keys(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray] | None:
        """An integer entity key as int64 values and a validity mask; None for other types."""
        if not pa.types.is_integer(col.type):
            return None
        known = col.is_valid().to_numpy(zero_copy_only=False)
        try:
            values = pc.fill_null(pc.cast(col, pa.int64()), 0).to_numpy()
        except pa.ArrowInvalid:  # uint64 past int64: such keys take the hash buckets
            return None
        return np.asarray(values, np.int64), np.asarray(known, bool)

    def _key_chunks(self, v: ViewJoin, source: DataSource | None, entity: pa.Table,
                    ent_valid: np.ndarray, target_rows: int) -> list[tuple[int, int]] | None:
        """Ranges of entity key values whose source rows (by Parquet row-group statistics
        of the key column) fit ``target_rows``: the counterpart of ``_time_chunks`` for a
        source written in key order (an export per entity, a table sorted by key).

        One integer join key only (its statistics compare as numbers). Returns None when
        that does not work out: other keys, no statistics, or row groups not clustered by
        key (each would then be read by many ranges)."""
        if len(v.join_keys) != 1 or not isinstance(source, FileSource):
            return None
        keys = self._int_keys(entity.column(v.entity_keys[0]))
        raw = v.source.columns[v.join_keys[0]]
        if keys is None or not pa.types.is_integer(v.source.arrow_types.get(raw, pa.null())):
            return None
        stats = self._row_group_stats(source, raw, "BIGINT")
        if stats is None:
            return None
        n_rows, mins, maxs = stats
        values, known = keys
        wanted = _distinct(values[known & ent_valid])
        if wanted.size == 0:
            return None
        chunks = _ranges(wanted, n_rows, mins, maxs, target_rows, 0)
        if chunks is None:
            return None
        total = sum(int(n_rows[(maxs >= lo) & (mins <= hi)].sum()) for lo, hi in chunks)
        if total > 2 * int(n_rows.sum()):
            return None  # ranges share too many row groups: hashing the keys reads less
        return chunks

    def _merge_partitioned(self, entity: pa.Table, join: PointInTimeJoin, v: ViewJoin,
                           ent_ts: np.ndarray, ent_valid: np.ndarray, buckets: int
                           ) -> dict[str, pa.Array] | None:
        d = Dialect.registry[self.dialect]()
        keys = [d.quote(f"k{i}") for i in range(len(v.join_keys))]
        if self.config.temp_directory:
            os.makedirs(self.config.temp_directory, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix="tiffin-pit-", dir=self.config.temp_directory)
        try:
            with self.connect() as con:
                source = join.source_query(d, v, epoch_us=True)
                try:
                    key_types = con.sql(f"SELECT {', '.join(keys)} FROM ({source}) AS s LIMIT 0"
                                        ).types
                    files = _split_by_bucket(
                        con.sql(f"SELECT *, CAST(hash({', '.join(keys)}) % {buckets} AS INTEGER) "
                                f"AS __bucket FROM ({source}) AS s").to_arrow_reader(1 << 20),
                        buckets, tmp)
                    # The entity side hashes the same values: its keys cast to the source's
                    # types (TRY_CAST: values that cannot match go anywhere, and match nothing).
                    con.register("entity_keys", entity.select(v.entity_keys))
                    con.execute("SET preserve_insertion_order = true")
                    cast = [f"TRY_CAST({d.quote(c)} AS {t})" for c, t in zip(v.entity_keys, key_types)]
                    ent_bucket = con.sql(f"SELECT CAST(hash({', '.join(cast)}) % {buckets} AS BIGINT) "
                                         f"AS b FROM entity_keys").to_arrow_table()
                except duckdb.Error as e:
                    raise BackendError(f"partitioning a source failed: {_first_line(e)}") from None
            ent_bucket_np = ent_bucket.column(0).to_numpy()
            del ent_bucket
            ent_keys = [entity.column(c) for c in v.entity_keys]
            positions, pieces = [], []
            for b in range(buckets):
                rows = np.flatnonzero(ent_bucket_np == b)
                if rows.size == 0:
                    continue
                if files[b] is not None:
                    with pa.OSFile(files[b]) as f:
                        src = pa.ipc.open_stream(f).read_all()
                    os.unlink(files[b])
                else:
                    src = None
                idx_rows = pa.array(rows)
                part = _merge_view(src, v, [k.take(idx_rows) for k in ent_keys], ent_ts[rows],
                                   ent_valid[rows])
                if part is None:
                    return None
                positions.append(rows)
                pieces.append(part)
                del src
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if not pieces:  # no entity rows: typed empty columns
            return _merge_view(None, v, [entity.column(c) for c in v.entity_keys], ent_ts,
                               ent_valid)
        return _in_entity_order(entity.num_rows, positions, pieces, v)

    # -- materialization -----------------------------------------------------------------
    def pull_latest(self, view: FeatureView, start: datetime | None, end: datetime,
                    batch_rows: int) -> pa.RecordBatchReader:
        logical = view.join_keys + [f.name for f in view.features]
        src = self.source_columns(view.source.batch, self.relation(view.source), logical)
        latest = LatestRows(src, view.join_keys, [(f.name, f.dtype) for f in view.features],
                            start, end)
        windows = self._newest_first(view.source.batch, src.timestamp, start, end)
        con = self.connect()
        try:
            if windows:
                raw = self._latest_by_windows(con, latest, windows, batch_rows)
            else:
                raw = con.sql(latest.render(self.dialect)).to_arrow_reader(batch_rows)
        except duckdb.Error as e:
            con.close()
            raise BackendError(f"reading {view.name!r} from its source failed: "
                               f"{_first_line(e)}") from None
        return _cast_reader(raw, online_batch_schema(view), con)

    def _row_group_times(self, source: DataSource, ts_column: str
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(rows, min event time, max event time) per Parquet row group, epoch microseconds;
        None when the files or their statistics cannot tell."""
        return self._row_group_stats(source, ts_column, "TIMESTAMPTZ")

    def _row_group_stats(self, source: DataSource, column: str, sql_type: str
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(rows, min, max) of ``column`` per Parquet row group, as int64 (timestamps in
        epoch microseconds); None when the files or their statistics cannot tell."""
        if not isinstance(source, FileSource):
            return None
        lo, hi = (f"TRY_CAST(stats_{m}_value AS {sql_type})" for m in ("min", "max"))
        if sql_type == "TIMESTAMPTZ":
            lo, hi = f"epoch_us({lo})", f"epoch_us({hi})"
        with self.connect() as con:
            try:
                stats = con.sql(
                    f"SELECT row_group_num_rows, {lo}, {hi} FROM parquet_metadata("
                    f"{_sql_list(self._files(source))}) WHERE path_in_schema = "
                    f"{_sql_string(column)}").fetchnumpy()
            except duckdb.Error:
                return None
        n_rows = np.asarray(stats["row_group_num_rows"], np.int64)
        lo_raw, hi_raw = stats[list(stats)[1]], stats[list(stats)[2]]
        if len(n_rows) == 0 or np.ma.is_masked(lo_raw) or np.ma.is_masked(hi_raw):
            return None
        return n_rows, np.asarray(lo_raw, np.int64), np.asarray(hi_raw, np.int64)

    def _newest_first(self, source: DataSource, ts_column: str, start: datetime | None,
                      end: datetime) -> list[tuple[datetime, datetime]] | None:
        """Time windows, newest first, of about ``in_memory_join_max_rows / 2`` source rows
        each (by row-group statistics), for a source too large to aggregate at once; None
        when one aggregation is as good (small, or rows not ordered by time)."""
        limit = self.config.in_memory_join_max_rows
        stats = self._row_group_times(source, ts_column) if limit > 0 else None
        if stats is None:
            return None
        n_rows, mins, maxs = stats
        lo_us = None if start is None else round(start.timestamp() * 1e6)
        hi_us = round(end.timestamp() * 1e6)
        keep = (mins <= hi_us) & (maxs >= (lo_us if lo_us is not None else np.iinfo(np.int64).min))
        n_rows, mins, maxs = n_rows[keep], mins[keep], maxs[keep]
        total = int(n_rows.sum())
        if total <= limit:
            return None
        order = np.argsort(-maxs, kind="stable")
        target = max(1, limit // 2)
        windows, upper, acc, lowest = [], hi_us, 0, None
        for i in order:
            acc += int(n_rows[i])
            lowest = int(mins[i]) if lowest is None else min(lowest, int(mins[i]))
            if acc >= target:
                windows.append((lowest, upper))
                upper, acc, lowest = lowest, 0, None
        if lowest is not None:
            windows.append((lowest, upper))
        first_lo = windows[0][0]
        if int(n_rows[(maxs >= first_lo)].sum()) > total // 2:
            return None  # the newest window already spans most rows: not ordered by time
        # The last window reaches back to the start, whatever the statistics said.
        windows[-1] = (lo_us if lo_us is not None else windows[-1][0], windows[-1][1])
        return [(from_micros(max(a, lo_us) if lo_us is not None else a), from_micros(b))
                for a, b in windows]

    def _latest_by_windows(self, con: duckdb.DuckDBPyConnection, latest: LatestRows,
                           windows: list[tuple[datetime, datetime]], batch_rows: int
                           ) -> pa.RecordBatchReader:
        """The latest row per key, looking at the newest rows first.

        A key found in a window has no newer row in an older one, so once every key in
        range has been found (one count of distinct keys tells), the older rows, usually
        most of an append-only source, are never aggregated.
        """
        d = Dialect.registry[self.dialect]()
        ((wanted,),) = con.sql(latest.count_keys(d)).fetchall()
        on = " AND ".join(f"w.{d.quote(k)} IS NOT DISTINCT FROM l.{d.quote(k)}"
                          for k in latest.join_keys)
        first = True
        for lo, hi in windows:
            window = replace(latest, start=lo, end=hi).render(d)
            if first:
                con.execute(f"CREATE TEMP TABLE __latest AS {window}")
                first = False
            else:
                con.execute(f"INSERT INTO __latest SELECT w.* FROM ({window}) AS w "
                            f"ANTI JOIN __latest AS l ON {on}")
            ((found,),) = con.sql("SELECT COUNT(*) FROM __latest").fetchall()
            if found >= wanted:
                break
        return con.sql("SELECT * FROM __latest").to_arrow_reader(batch_rows)


def _split_by_bucket(reader: pa.RecordBatchReader, buckets: int, tmp: str
                     ) -> list[str | None]:
    """Stream rows with a ``__bucket`` column into one Arrow IPC file per bucket (without
    that column); the file paths, None for a bucket without rows.

    Arrow IPC is the in-memory layout written as is: writing and reading a bucket back
    cost little more than a copy, where a partitioned Parquet write encodes and
    compresses every value and took most of the time of a shuffled source's join."""
    at = reader.schema.get_field_index("__bucket")
    schema = reader.schema.remove(at)
    sinks: list[Any] = [None] * buckets
    writers: list[Any] = [None] * buckets
    try:
        for batch in reader:
            b = batch.column(at).to_numpy()
            # Small integers sort stably by radix: one gather puts each bucket's rows together.
            b = b.astype(np.int16) if buckets < (1 << 15) else b
            order = np.argsort(b, kind="stable")
            ends = np.cumsum(np.bincount(b, minlength=buckets))
            rows = pa.RecordBatch.from_arrays(
                [batch.column(i) for i in range(batch.num_columns) if i != at], schema=schema
            ).take(pa.array(order))
            start = 0
            for i, end in enumerate(ends.tolist()):
                if end > start:
                    if writers[i] is None:
                        sinks[i] = pa.OSFile(os.path.join(tmp, f"bucket-{i}.arrow"), "wb")
                        writers[i] = pa.ipc.new_stream(sinks[i], schema)
                    writers[i].write_batch(rows.slice(start, end - start))
                start = end
    finally:
        for w, f in zip(writers, sinks):
            if w is not None:
                w.close()
                f.close()
    return [None if w is None else os.path.join(tmp, f"bucket-{i}.arrow")
            for i, w in enumerate(writers)]


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values; np.unique hashes int64 (numpy 2.3+), several times slower
    than a sort for millions of timestamps."""
    if values.size == 0:
        return values
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < 4 * values.size:
        # Dense integers (entity keys, mostly): one mark per value instead of a sort.
        seen = np.zeros(hi - lo + 1, bool)
        seen[values - lo] = True
        return np.flatnonzero(seen) + lo
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]]


def _ranges(values: np.ndarray, n_rows: np.ndarray, mins: np.ndarray, maxs: np.ndarray,
            target_rows: int, reach: int) -> list[tuple[int, int]] | None:
    """Cut sorted, distinct ``values`` into ranges [lo, hi] whose row groups (those with
    ``max >= lo - reach`` and ``min <= hi``) hold at most ``target_rows`` rows; None when a
    single value already needs more (the row groups are not clustered by this column)."""
    def need(lo: int, hi: int) -> int:
        return int(n_rows[(maxs >= lo - reach) & (mins <= hi)].sum())

    chunks, i = [], 0
    while i < values.size:
        lo = int(values[i])
        if need(lo, lo) > target_rows:
            return None
        a, b = i, values.size - 1  # largest j with need(lo, values[j]) <= target
        while a < b:
            mid = (a + b + 1) // 2
            if need(lo, int(values[mid])) <= target_rows:
                a = mid
            else:
                b = mid - 1
        hi = int(values[a])
        chunks.append((lo, hi))
        i = a + 1
    return chunks


def _merge_view(src: pa.Table | None, v: ViewJoin, ent_keys: list[pa.ChunkedArray],
                ent_ts: np.ndarray, ent_valid: np.ndarray) -> dict[str, pa.Array] | None:
    """One view's features for the entity rows, from its (pruned, renamed) source rows."""
    n = len(ent_ts)
    if src is not None and src.num_rows:
        # Times stay in their chunks: the merge reads them a block at a time.
        created = _epoch_chunks(src.column(CREATED_TS)) if v.source.created else None
        idx = point_in_time_indices(
            [src.column(f"k{i}") for i in range(len(v.join_keys))],
            _epoch_chunks(src.column(EVENT_TS)), created, ent_keys, ent_ts, ent_valid,
            round(v.ttl_seconds * 1_000_000) if v.ttl_seconds else None)
        if idx is None:
            return None
    else:
        idx = np.full(n, -1, np.int64)
    missing = idx < 0
    out = {}
    for i, (_, name, dtype) in enumerate(v.features):
        if src is None or not src.num_rows:
            col = pa.nulls(n, dtype.to_arrow())
        else:
            col = take(src.column(f"f{i}"), idx, missing)
        if pa.types.is_timestamp(col.type) and col.type.tz:
            col = col.cast(TIMESTAMP)
        out[name] = col
    return out


def _epoch_chunks(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A time column as int64 epoch microseconds, chunk for chunk (the merge's source
    queries already give that; a timestamp column is cast, nulls kept)."""
    if pa.types.is_timestamp(col.type):
        if col.type.unit != "us":
            col = pc.cast(col, pa.timestamp("us", col.type.tz), safe=False)
        col = pc.cast(col, pa.int64())
    return col


def _in_entity_order(n: int, positions: list[np.ndarray], pieces: list[dict[str, pa.Array]],
                     v: ViewJoin) -> dict[str, pa.Array]:
    """Pieces computed for disjoint sets of entity rows (which cover all n), in entity order."""
    pos = np.concatenate(positions)
    inverse = np.empty(n, np.int64)
    inverse[pos] = np.arange(pos.size)
    inverse_arr = pa.array(inverse)
    return {name: pa.chunked_array([p[name] for p in pieces]).combine_chunks().take(inverse_arr)
            for _, name, _ in v.features}


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
