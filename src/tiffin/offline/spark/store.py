"""Spark offline store: the point-in-time join runs as Spark SQL.

The SQL comes from ``pit.PointInTimeJoin`` rendered in the ``spark`` dialect; this module
only connects it to Spark. Sources are ``SparkSource`` (a catalog table, a query, or files
in any format Spark reads) and Parquet ``FileSource``. An Arrow/pandas ``entity_df`` is
sent to Spark with only what the join needs (join keys, row number, timestamp) and the
result is matched back to the caller's rows in Python, so every entity column comes back
exactly as it went in; a SQL ``entity_df`` stays in Spark from start to end.

One SparkSession per process, created on first use from ``spark_conf`` (or the running
one reused). tiffin sets ``spark.sql.session.timeZone=UTC`` on it.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from functools import cached_property
from typing import Any

import pyarrow as pa

from tiffin.config import RepoConfig
from tiffin.definitions import DataSource, FeatureView, FileSource, SparkSource
from tiffin.errors import BackendError, DefinitionError, MissingDependencyError
from tiffin.features import FeaturePlan
from tiffin.offline.base import (
    SPARK_FRAMES,
    EntityQueries,
    OfflineStore,
    RetrievalJob,
    check_entity_columns,
    entity_df_columns,
    entity_time_range,
    online_batch_schema,
)
from tiffin.offline.pit import (
    ENTITY_TS,
    ROW_ID,
    LatestRows,
    PointInTimeJoin,
    SourceColumns,
    ViewJoin,
)
from tiffin.offline.spark.config import SparkOfflineStoreConfig
from tiffin.types import TIMESTAMP, from_micros

DIALECT = "spark"
ENTITY_VIEW = "`tiffin_entity`"  # in to_sql(); each run names a view of its own

# What tiffin needs from any session it uses (set on a running session too).
REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Parquet written by pandas holds nanosecond timestamps, which Spark cannot read as
    # timestamps: read them as integers and convert (see _nanos_to_timestamps).
    "spark.sql.legacy.parquet.nanosAsLong": "true",
}
# Defaults for a session tiffin starts itself; spark_conf overrides them.
DEFAULT_CONF = {
    "spark.app.name": "tiffin",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",  # not INT96
}
# ...and, when it runs in this process (no spark.master, or local[...]): small data.
LOCAL_CONF = {"spark.sql.shuffle.partitions": "4"}

_SESSION_LOCK = threading.Lock()


def spark_session(conf: Mapping[str, str]) -> Any:
    """The process's SparkSession, started from ``conf`` if there is none yet."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise MissingDependencyError("pyspark", "spark") from None
    with _SESSION_LOCK:
        options = dict(REQUIRED_CONF)
        # Defaults only for a session tiffin starts itself in this process (not one that
        # spark-submit or the application started: PYSPARK_GATEWAY_PORT is then set).
        if SparkSession.getActiveSession() is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
            options.update(DEFAULT_CONF)
            if conf.get("spark.master", os.environ.get("MASTER", "local")).startswith("local"):
                options.update(LOCAL_CONF)
                # Python workers run this interpreter, where tiffin and pyarrow are
                # installed (PySpark reads this variable, not spark.pyspark.python).
                os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        options.update(conf)
        options.update(REQUIRED_CONF)
        builder = SparkSession.builder
        for key, value in options.items():
            builder = builder.config(key, value)
        try:
            return builder.getOrCreate()
        except Exception as e:  # the JVM did not start: no Java, a bad setting...
            raise BackendError(f"cannot start Spark: {spark_message(e)}") from None


def spark_errors() -> tuple[type[BaseException], ...]:
    """What a Spark call raises (analysis and runtime errors, Py4J): translated into
    tiffin's errors where a call crosses into Spark."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException
    return (PySparkException, Py4JError)


def spark_message(e: BaseException) -> str:
    """The message that says what went wrong: a Python worker's exception, else the first
    line of Spark's (a Py4J error's own first line only names the Java method called)."""
    text = str(e)
    java = getattr(e, "java_exception", None)
    if java is not None:
        try:
            text = str(java.toString()) + "\n" + text
        except Exception:  # the JVM is gone
            pass
    marker = "Traceback (most recent call last):"
    if marker in text:
        for line in text.split(marker, 1)[1].splitlines()[1:]:
            if line.strip() and not line[0].isspace():
                return line.strip()
    text = text.strip()
    return text.splitlines()[0] if text else type(e).__name__


def _arrow_type(dtype: Any) -> pa.DataType:
    from pyspark.sql.pandas.types import to_arrow_type
    try:
        try:
            return to_arrow_type(dtype, timezone="UTC")
        except TypeError as e:  # pyspark 3.5: no timezone argument, timestamps are UTC
            if "timezone" not in str(e):
                raise
            return to_arrow_type(dtype)
    except Exception:  # a type Arrow cannot hold (user-defined): not usable as a feature
        return pa.null()


def arrow_schema(struct: Any) -> pa.Schema:
    """A Spark schema as Arrow: TIMESTAMP is ``timestamp[us, UTC]``, TIMESTAMP_NTZ naive."""
    return pa.schema([pa.field(f.name, _arrow_type(f.dataType)) for f in struct.fields])


def to_arrow(df: Any) -> pa.Table:
    if hasattr(df, "toArrow"):  # Spark 4
        return df.toArrow()
    batches = df._collect_as_arrow()  # Spark 3.5
    return pa.Table.from_batches(batches) if batches else arrow_schema(df.schema).empty_table()


def from_arrow(spark: Any, table: pa.Table) -> Any:
    try:
        return spark.createDataFrame(table)  # Spark 4 takes Arrow as it is
    except TypeError:  # Spark 3.5: through pandas (Arrow-accelerated)
        return spark.createDataFrame(table.to_pandas())


def arrow_batches(df: Any) -> Iterator[pa.RecordBatch]:
    """The rows partition by partition, in order, as Arrow: only one partition's batches
    are on the driver at a time. Each executor encodes its batches as Arrow IPC messages,
    which ``toLocalIterator`` hands over one partition after the other."""

    def encode(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa
        for batch in batches:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch)
            buf = sink.getvalue()
            offsets = pa.array([0, buf.size], pa.int32()).buffers()[1]
            cell = pa.Array.from_buffers(pa.binary(), 1, [None, offsets, buf])  # no copy
            yield pa.RecordBatch.from_arrays([cell], names=["ipc"])

    for row in df.mapInArrow(encode, "ipc BINARY").toLocalIterator(prefetchPartitions=True):
        yield from pa.ipc.open_stream(row[0]).read_all().to_batches()


def _rechunk(batches: Iterator[pa.RecordBatch], batch_rows: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)


class SparkRetrievalJob(RetrievalJob):
    """A training set computed by Spark. ``to_spark_df()`` gives the Spark DataFrame itself,
    with the entity columns, to keep working in Spark."""

    def __init__(self, reader: Callable[[int], pa.RecordBatchReader],
                 table: Callable[[], pa.Table], spark_df: Callable[[], Any], **kw: Any):
        super().__init__(reader, **kw)
        self._table = table
        self._spark_df = spark_df

    def to_arrow(self, timeout: int | None = None) -> pa.Table:
        return self._table()  # one collect, instead of one job per partition

    def to_spark_df(self) -> Any:
        return self._spark_df()


class SparkOfflineStore(OfflineStore, EntityQueries):
    """``offline_store: {type: spark, spark_conf: {...}}``."""

    capabilities = frozenset({SPARK_FRAMES})

    def __init__(self, config: SparkOfflineStoreConfig, repo_config: RepoConfig):
        super().__init__(config, repo_config)
        # file sources: key -> (Spark schema as read, nanosecond columns, Arrow schema)
        self._file_schemas: dict[tuple, tuple[Any, dict[str, bool], pa.Schema]] = {}

    @cached_property
    def spark(self) -> Any:
        """The SparkSession, started on first use."""
        return spark_session(self.config.spark_conf)

    # -- sources -------------------------------------------------------------------------
    def _location(self, source: DataSource) -> tuple[str, str]:
        """Path and format of a file source."""
        if isinstance(source, SparkSource):
            return source.resolved_path(self.repo_config.repo_path) or "", source.file_format
        assert isinstance(source, FileSource)
        return source.resolved_path(self.repo_config.repo_path), "parquet"

    def _files(self, source: DataSource) -> tuple[list[str], str]:
        """What Spark reads for a file source: its path and, for a single local file, the
        rows appended beside it (``<path>.pushed/``, the layout the duckdb store uses too)."""
        path, fmt = self._location(source)
        pushed = path + ".pushed"
        if "://" not in path and os.path.isfile(path) and os.path.isdir(pushed) and \
                any(n.endswith("." + fmt) for n in os.listdir(pushed)):
            return [path, os.path.join(pushed, "*." + fmt)], fmt
        return [path], fmt

    def _file_key(self, paths: list[str], fmt: str) -> tuple:
        stamps = tuple(os.path.getmtime(p) if "://" not in p and os.path.exists(p) else 0.0
                       for p in paths)
        return (tuple(paths), fmt, stamps)

    def _read_files(self, source: DataSource) -> tuple[Any, pa.Schema]:
        """A file source as a DataFrame, and its Arrow schema. The schema is found once per
        state of the files (from a Parquet footer when pyarrow can read it, else by
        Spark's inference, a job of its own) and given to Spark on later reads."""
        paths, fmt = self._files(source)
        local = [p for p in paths if "://" not in p and not any(c in p for c in "*?[")]
        if len(local) == len(paths) and not any(os.path.exists(p) for p in paths):
            raise DefinitionError(f"source {source.name!r}{source.where()}: no file or "
                                  f"directory at {paths[0]}")
        key = self._file_key(paths, fmt)
        cached = self._file_schemas.get(key)
        reader = self.spark.read.format(fmt)
        if fmt == "csv":
            reader = reader.option("header", "true").option("inferSchema", "true")
        footer = _parquet_footer(paths[0]) if fmt == "parquet" and cached is None else None
        known = cached[0] if cached is not None else _spark_schema(footer)
        if known is not None:
            reader = reader.schema(known)
        try:
            df = reader.load(paths if len(paths) > 1 else paths[0])
        except spark_errors() as e:
            raise DefinitionError(f"source {source.name!r}{source.where()}: Spark cannot read "
                                  f"{', '.join(paths)} as {fmt}: {spark_message(e)}") from None
        if cached is None:
            nanos = {f.name: f.type.tz is not None for f in footer or ()
                     if pa.types.is_timestamp(f.type) and f.type.unit == "ns"}
            raw = df.schema
            df = _nanos_to_timestamps(df, nanos, source.timestamp_field)
            self._file_schemas[key] = (raw, nanos, arrow_schema(df.schema))
            return df, self._file_schemas[key][2]
        return _nanos_to_timestamps(df, cached[1], source.timestamp_field), cached[2]

    def relation(self, source: DataSource) -> str:
        """SQL naming the source's rows: a table, a subquery, or a temporary view over files."""
        return self._source(source)[0]

    def source_schema(self, source: DataSource) -> pa.Schema:
        return self._source(source)[1]

    def _source(self, source: DataSource) -> tuple[str, pa.Schema]:
        batch = source.batch
        if isinstance(batch, FileSource) or (isinstance(batch, SparkSource) and batch.path):
            df, schema = self._read_files(batch)
            paths, fmt = self._files(batch)
            key = repr((paths, fmt, batch.timestamp_field)).encode()
            name = "tiffin_src_" + hashlib.sha1(key).hexdigest()[:16]
            df.createOrReplaceTempView(name)
            return _quote(name), schema
        if isinstance(batch, SparkSource) and batch.table:
            relation = batch.table if "`" in batch.table else \
                ".".join(_quote(part) for part in batch.table.split("."))
        elif isinstance(batch, SparkSource):
            relation = f"({batch.query})"
        else:
            raise DefinitionError(f"the spark offline store reads SparkSource and FileSource, "
                                  f"not {type(batch).__name__} ({batch.name!r})")
        try:
            return relation, arrow_schema(self.spark.sql(f"SELECT * FROM {relation}").schema)
        except spark_errors() as e:
            raise DefinitionError(f"source {batch.name!r}{batch.where()}: Spark cannot read it: "
                                  f"{spark_message(e)}") from None

    def _columns(self, source: DataSource, logical: list[str]) -> SourceColumns:
        relation, schema = self._source(source)
        return self.source_columns(source.batch, relation, logical, schema)

    def write(self, source: DataSource, table: pa.Table) -> None:
        """Append rows: to a catalog table (``insertInto``) or as new files (into the
        folder, or beside a single file in ``<path>.pushed/``), committed by Spark."""
        batch = source.batch
        if not isinstance(batch, (SparkSource, FileSource)) or \
                (isinstance(batch, SparkSource) and batch.query):
            raise DefinitionError(f"the spark offline store appends to a table or files, not "
                                  f"to {type(batch).__name__} {batch.name!r}",
                                  hint="push to a SparkSource(table=...) or (path=...)")
        df = from_arrow(self.spark, table)
        try:
            if isinstance(batch, SparkSource) and batch.table:
                df.select(*self.spark.table(batch.table).columns).write.insertInto(batch.table)
                return
            path, fmt = self._location(batch)
            target = path + ".pushed" if "://" not in path and os.path.isfile(path) else path
            df.write.mode("append").format(fmt).save(target)
        except spark_errors() as e:
            raise BackendError(f"appending to {batch.name!r} failed: {spark_message(e)}") from None

    # -- point-in-time join --------------------------------------------------------------
    def _join(self, relation: str, entity_columns: list[str], plan: FeaturePlan,
              lo: datetime | None, hi: datetime | None) -> PointInTimeJoin:
        views = []
        for i, req in enumerate(plan.views):
            views.append(ViewJoin.of(f"v{i}", req, self._columns(req.view.source,
                                                                   req.source_columns)))
        return PointInTimeJoin(relation, entity_columns, views, lo, hi,
                               self.config.join_strategy, feature_order=plan.view_outputs)

    def get_historical_features(self, entity: pa.Table, timestamp_column: str,
                                plan: FeaturePlan, full_feature_names: bool) -> RetrievalJob:
        entity_columns = entity_df_columns(entity)
        lo, hi = entity_time_range(entity)
        # Spark computes row id -> features; the caller's columns are taken back from the
        # Arrow table by row id, untouched (types, zones, names Spark could not hold).
        join = self._join(ENTITY_VIEW, [ROW_ID], plan, lo, hi)
        sql = join.render(DIALECT)
        keys = list(dict.fromkeys(k for req in plan.views for k in req.entity_columns))
        user = entity.select(entity_columns)
        target = _output_schema(user.schema, plan)

        def frame(join: PointInTimeJoin = join) -> Any:
            cols = list(dict.fromkeys(join.entity_columns + keys + [ROW_ID]))
            sent = entity.select([c for c in cols if c != ROW_ID] + [ROW_ID])
            sent = sent.append_column(ENTITY_TS, entity.column(ENTITY_TS).cast(TIMESTAMP))
            return self._run(lambda: from_arrow(self.spark, sent), join)

        def attach(batch: pa.RecordBatch | pa.Table) -> pa.Table:
            rows = user.take(batch.column(0))
            arrays = rows.columns + [batch.column(i + 1) for i in range(batch.num_columns - 1)]
            return pa.Table.from_arrays(arrays, schema=_lenient(target, arrays)).cast(target)

        def table() -> pa.Table:
            if entity.num_rows == 0:
                return target.empty_table()
            # Unsorted in Spark, put in order here: no global sort of the result.
            return attach(_sorted(self._collect(frame(replace(join, ordered=False)))))

        def reader(batch_rows: int) -> pa.RecordBatchReader:
            if entity.num_rows == 0:
                return pa.RecordBatchReader.from_batches(target, iter(()))
            df = frame()

            def batches() -> Iterator[pa.RecordBatch]:
                for raw in self._stream(df):
                    yield from _rechunk(attach(raw).to_batches(), batch_rows)
            return pa.RecordBatchReader.from_batches(target, batches())

        def spark_df() -> Any:
            return frame(replace(join, entity_columns=entity_columns))

        return SparkRetrievalJob(reader, table, spark_df, sql=sql,
                                 full_feature_names=full_feature_names,
                                 metadata=_metadata(plan, join))

    def get_historical_features_from_query(self, query: str, plan: FeaturePlan,
                                           full_feature_names: bool) -> RetrievalJob:
        from pyspark.sql import functions as F
        spark = self.spark
        try:
            rows = spark.sql(query)
        except spark_errors() as e:
            raise BackendError(f"entity_df query failed: {spark_message(e)}") from None
        schema = arrow_schema(rows.schema)
        ts_col = check_entity_columns(schema, plan)
        entity_columns = schema.names
        # The rows are numbered once and kept (localCheckpoint), so the join and the
        # output see the same rows with the same numbers, in the query's order.
        ts = F.col(_quote(ts_col)).cast("timestamp_ltz")
        frame = (rows.withColumn(ts_col, ts)
                 .withColumn(ROW_ID, F.monotonically_increasing_id())
                 .withColumn(ENTITY_TS, ts))
        try:
            frame = frame.localCheckpoint()
            lo, hi = frame.agg(F.min(F.unix_micros(ENTITY_TS)),
                               F.max(F.unix_micros(ENTITY_TS))).first()
        except spark_errors() as e:
            raise BackendError(f"entity_df query failed: {spark_message(e)}") from None
        lo, hi = (None, None) if lo is None else (from_micros(lo), from_micros(hi))
        join = self._join(ENTITY_VIEW, entity_columns, plan, lo, hi)
        sql = join.render(DIALECT)
        user_schema = pa.schema([pa.field(ts_col, TIMESTAMP) if f.name == ts_col else f
                                 for f in schema])
        target = _output_schema(user_schema, plan)

        def run(join: PointInTimeJoin = join) -> Any:
            return self._run(lambda: frame, join)

        def table() -> pa.Table:
            unordered = replace(join, entity_columns=[ROW_ID] + entity_columns, ordered=False)
            return _sorted(self._collect(run(unordered))).drop_columns([ROW_ID]).cast(target)

        def reader(batch_rows: int) -> pa.RecordBatchReader:
            df = run()
            batches = (b.cast(target) for raw in self._stream(df)
                       for b in _rechunk(iter([raw]), batch_rows))
            return pa.RecordBatchReader.from_batches(target, batches)

        metadata = _metadata(plan, join)
        metadata["entity_columns"] = entity_columns
        return SparkRetrievalJob(reader, table, run, sql=sql,
                                 full_feature_names=full_feature_names, metadata=metadata)

    def _run(self, entity: Callable[[], Any], join: PointInTimeJoin) -> Any:
        """The join as a DataFrame, over the entity rows in a temporary view of its own
        (each run: runs may overlap). The view is only needed while Spark analyzes the
        query (the DataFrame keeps the resolved plan), so it is dropped right after."""
        view = f"tiffin_entity_{uuid.uuid4().hex}"
        sql = replace(join, entity_relation=_quote(view)).render(DIALECT)
        try:
            entity().createOrReplaceTempView(view)
            try:
                return self.spark.sql(sql)
            finally:
                self.spark.catalog.dropTempView(view)
        except spark_errors() as e:
            raise BackendError(f"historical retrieval failed: {spark_message(e)}") from None

    def _collect(self, df: Any) -> pa.Table:
        try:
            return to_arrow(df)
        except spark_errors() as e:
            raise BackendError(f"historical retrieval failed: {spark_message(e)}") from None

    def _stream(self, df: Any) -> Iterator[pa.RecordBatch]:
        try:
            yield from arrow_batches(df)
        except spark_errors() as e:
            raise BackendError(f"historical retrieval failed: {spark_message(e)}") from None

    # -- materialization -----------------------------------------------------------------
    def latest_frame(self, view: FeatureView, start: datetime | None, end: datetime) -> Any:
        """The latest row per entity as a Spark DataFrame, in ``online_batch_schema``'s
        columns (the spark engine writes it to the online store from the executors)."""
        src = self._columns(view.source, view.join_keys + [f.name for f in view.features])
        sql = LatestRows(src, view.join_keys, [(f.name, f.dtype) for f in view.features],
                         start, end).render(DIALECT)
        try:
            return self.spark.sql(sql)
        except spark_errors() as e:
            raise BackendError(f"reading {view.name!r} from its source failed: "
                               f"{spark_message(e)}") from None

    def pull_latest(self, view: FeatureView, start: datetime | None, end: datetime,
                    batch_rows: int) -> pa.RecordBatchReader:
        target = online_batch_schema(view)
        df = self.latest_frame(view, start, end)
        batches = (b.cast(target) for raw in self._stream(df)
                   for b in _rechunk(iter([raw]), batch_rows))
        return pa.RecordBatchReader.from_batches(target, batches)


def _quote(ident: str) -> str:
    return "`" + ident.replace("`", "``") + "`"


def _output_schema(entity: pa.Schema, plan: FeaturePlan) -> pa.Schema:
    types = {out: f.dtype.to_arrow() for req in plan.views
             for f, out in zip(req.features, req.output_names)}
    return pa.schema(list(entity) + [pa.field(n, types[n]) for n in plan.view_outputs])


def _sorted(table: pa.Table) -> pa.Table:
    """Rows in ``__row_id`` order (the first column, or the one of that name)."""
    import pyarrow.compute as pc
    return table.take(pc.sort_indices(table.column(ROW_ID)))


def _lenient(target: pa.Schema, arrays: list[Any]) -> pa.Schema:
    """``target``'s names with the arrays' own types (the cast to ``target`` comes next)."""
    return pa.schema([pa.field(f.name, a.type) for f, a in zip(target, arrays)])


def _metadata(plan: FeaturePlan, join: PointInTimeJoin) -> dict[str, Any]:
    return {"features": plan.view_outputs, "keys": plan.entity_columns,
            "min_event_timestamp": join.min_ts, "max_event_timestamp": join.max_ts}


def _parquet_footer(path: str) -> pa.Schema | None:
    """The Arrow schema in a local Parquet file's footer (the first file of a flat folder);
    None for anything else (remote, globs, partitioned folders): Spark infers those."""
    import pyarrow.parquet as pq
    if "://" in path or any(c in path for c in "*?["):
        return None
    try:
        if os.path.isdir(path):
            entries = sorted(os.listdir(path))
            if any(os.path.isdir(os.path.join(path, e)) for e in entries):
                return None
            files = [e for e in entries if e.endswith(".parquet") and e[0] not in "._"]
            if not files:
                return None
            path = os.path.join(path, files[0])
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        # INT96 (Spark 3's default timestamp encoding) shows as nanoseconds in Arrow, but
        # Spark reads it as a timestamp, not as nanoseconds in an integer.
        int96 = {parquet.schema.column(i).path for i in range(len(parquet.schema))
                 if parquet.schema.column(i).physical_type == "INT96"}
        for name in int96 & set(schema.names):
            at = schema.get_field_index(name)
            schema = schema.set(at, pa.field(name, pa.timestamp("us", "UTC")))
        return schema
    except (pa.ArrowException, OSError):
        return None


def _spark_schema(schema: pa.Schema | None) -> Any:
    """The Spark schema Spark's Parquet reader infers for ``schema``, for the plain types
    whose mapping is certain; None (let Spark infer) if any column is something else."""
    if schema is None:
        return None
    from pyspark.sql import types as T
    plain = {pa.int8(): T.ByteType, pa.int16(): T.ShortType, pa.int32(): T.IntegerType,
             pa.int64(): T.LongType, pa.float32(): T.FloatType, pa.float64(): T.DoubleType,
             pa.bool_(): T.BooleanType, pa.string(): T.StringType,
             pa.large_string(): T.StringType, pa.binary(): T.BinaryType,
             pa.large_binary(): T.BinaryType, pa.date32(): T.DateType}

    def spark_type(t: pa.DataType) -> Any:
        if t in plain:
            return plain[t]()
        if pa.types.is_timestamp(t):
            if t.unit == "ns":
                return T.LongType()  # spark.sql.legacy.parquet.nanosAsLong
            return T.TimestampType() if t.tz else T.TimestampNTZType()
        if pa.types.is_decimal128(t):
            return T.DecimalType(t.precision, t.scale)
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            inner = spark_type(t.value_type)
            return None if inner is None else T.ArrayType(inner, True)
        return None

    fields = [(f.name, spark_type(f.type)) for f in schema]
    if any(t is None for _, t in fields):
        return None
    return T.StructType([T.StructField(n, t, True) for n, t in fields])


def _nanos_to_timestamps(df: Any, nanos: dict[str, bool], event_column: str) -> Any:
    """Nanosecond Parquet columns (read as integers) as microsecond timestamps. The event
    time rounds up: an event 0.5 us after a row's time happened after it, and stays
    after it; other columns are truncated, as everywhere in tiffin."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType
    todo = {f.name for f in df.schema.fields if f.name in nanos and
            isinstance(f.dataType, LongType)}
    if not todo:
        return df
    cols = []
    for name in df.columns:
        if name not in todo:
            cols.append(F.col(_quote(name)))
            continue
        rounding = "CEIL" if name == event_column else "FLOOR"
        micros = F.expr(f"CAST({rounding}(CAST({_quote(name)} AS DECIMAL(20, 0)) / 1000) "
                        "AS BIGINT)")
        ts = F.timestamp_micros(micros)
        cols.append((ts if nanos[name] else ts.cast("timestamp_ntz")).alias(name))
    return df.select(*cols)


__all__ = ["SparkOfflineStore", "SparkRetrievalJob", "arrow_batches", "spark_errors", "spark_message",
           "spark_session"]
