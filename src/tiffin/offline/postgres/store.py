"""PostgreSQL offline store: sources are tables or queries, and the joins run in PostgreSQL.

Rows travel through ADBC's PostgreSQL driver (Arrow in C, binary ``COPY``);
psycopg answers what is not rows (source columns, indexes) and appends rows in
``write``. One retrieval is one ADBC session:

1. The entity rows go into a temporary table (gone with the session): from a
   DataFrame only ``__row_id``, ``__ts`` and the join-key columns are sent, by
   ADBC's bulk ingest; the other entity_df columns never leave this process and
   are put back beside the features as they stream in. An entity_df given as SQL
   is copied into that table by PostgreSQL itself.
2. The point-in-time join, rendered from ``pit`` by the ``postgres`` dialect
   (PostgreSQL has no ASOF join: strategy ``lateral``, one index probe per entity
   row, when every source table has an index on (join keys, event time), else
   ``sweep``, one sorted pass), streams back as Arrow batches cast to the
   features' types (see ``wire``, NUMERIC included), so ``to_arrow_batches``
   holds one batch at a time.

Timestamps: ``timestamptz`` columns are instants and ``timestamp`` columns UTC
wall times (as a naive column is everywhere in tiffin); both are compared as
UTC wall times, and sessions run in UTC.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from tiffin.config import RepoConfig
from tiffin.definitions import DataSource, FeatureView, PostgreSQLSource
from tiffin.errors import (
    BackendError,
    DefinitionError,
    MissingDependencyError,
    RequestError,
    StoreUnavailableError,
    did_you_mean,
)
from tiffin.features import FeaturePlan
from tiffin.offline.base import (
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
    PostgresDialect,
    SourceColumns,
    ViewJoin,
)
from tiffin.offline.postgres.config import PostgreSQLOfflineStoreConfig
from tiffin.offline.postgres.wire import (
    UTC_TS,
    arrow_type,
    csv_chunks,
    ingest_ready,
    is_numeric_field,
    needs_text,
    to_target,
)
from tiffin.types import TIMESTAMP

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
except ImportError:  # pragma: no cover - only without the extra
    psycopg = None
try:
    # The driver manager's low-level API: its DB-API module imports pandas, polars and
    # pyarrow.dataset when present (over a second on a busy machine).
    import adbc_driver_manager as adbc
    import adbc_driver_postgresql as adbc_pg
except ImportError:  # pragma: no cover - only without the extra
    adbc_pg = None

ENTITY_NAME = "__tiffin_entity"
ENTITY_TABLE = f'"{ENTITY_NAME}"'
DIALECT = PostgresDialect()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _adbc_message(e: BaseException) -> str:
    """ADBC's message without its prefixes ("IO: [libpq] Failed to ...: ")."""
    text = _first_line(e)
    for mark in ("ERROR:", "FATAL:"):
        if mark in text:
            return text[text.index(mark):].replace(":  ", ": ", 1)
    return text


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class RowsSession:
    """One ADBC connection: statements that stream Arrow batches, bulk ingest.

    Its statements and their readers are closed before the connection (ADBC refuses to
    close a connection with open children).
    """

    def __init__(self, database: Any):
        self.connection = adbc.AdbcConnection(database)
        self._open: list[Any] = []

    def _statement(self, sql: str | None = None) -> Any:
        st = adbc.AdbcStatement(self.connection)
        self._open.append(st)
        if sql is not None:
            st.set_sql_query(sql)
        return st

    def run(self, sql: str) -> None:
        """A statement whose rows, if any, are not wanted (DDL, ANALYZE, set_config)."""
        self._statement(sql).execute_update()

    def schema(self, sql: str) -> pa.Schema:
        """The Arrow schema of ``sql``'s rows (planned, never run)."""
        return pa.schema(self._statement(sql).execute_schema())

    def query(self, sql: str) -> pa.RecordBatchReader:
        handle, _ = self._statement(sql).execute_query()
        reader = pa.RecordBatchReader.from_stream(handle)
        self._open.append(reader)
        return reader

    def ingest(self, name: str, table: pa.Table) -> None:
        """``table`` into a new temporary table ``name`` (binary COPY)."""
        st = self._statement()
        st.set_options(**{adbc.INGEST_OPTION_TARGET_TABLE: name,
                          adbc.INGEST_OPTION_MODE: adbc.INGEST_OPTION_MODE_CREATE,
                          "adbc.ingest.temporary": "true"})
        st.bind_stream(table)
        st.execute_update()

    def close(self) -> None:
        for child in reversed(self._open):
            child.close()
        self.connection.close()


class PostgreSQLOfflineStore(OfflineStore, EntityQueries):
    def __init__(self, config: PostgreSQLOfflineStoreConfig, repo_config: RepoConfig):
        super().__init__(config, repo_config)
        if psycopg is None:
            raise MissingDependencyError("psycopg", "postgres")
        if adbc_pg is None:
            raise MissingDependencyError("adbc-driver-postgresql", "postgres")
        # ADBC's database object reads the server's type catalog when made (over 100 ms);
        # the connections made from it share what it read. It holds no session.
        self._adbc_database: Any = None
        self._adbc_lock = threading.Lock()

    # -- connections ---------------------------------------------------------------------
    def _conninfo(self) -> str:
        cfg = self.config
        if cfg.dsn is not None:
            dsn = cfg.dsn.get_secret_value()
            extra = {} if "connect_timeout" in conninfo_to_dict(dsn) else \
                {"connect_timeout": cfg.connect_timeout_seconds}
            conninfo = make_conninfo(dsn, **extra)
        else:
            conninfo = make_conninfo("", **cfg.connection_params())
        return make_conninfo(conninfo, application_name="tiffin", client_encoding="UTF8")

    def _settings(self) -> dict[str, str]:
        cfg = self.config
        schemas = '"' + cfg.db_schema.replace('"', '""') + '"'
        if cfg.db_schema != "public":
            schemas += ", public"
        return {"TimeZone": "UTC", "search_path": schemas, **cfg.settings}

    def _connect_error(self, message: str) -> Exception:
        where = self.config.where()
        if "FATAL:" in message and not any(
                busy in message for busy in ("starting up", "shutting down", "too many",
                                             "recovery")):
            # The server answered and said no (role, password, database): retrying
            # will not help.
            return BackendError(f"PostgreSQL at {where} refused the connection: {message}",
                                hint="check user, password and database in offline_store "
                                     "in feature_store.yaml")
        return StoreUnavailableError(
            f"cannot connect to PostgreSQL at {where}: {message}",
            hint="is the server running and reachable? check offline_store in "
                 "feature_store.yaml")

    def _settings_error(self, e: Exception) -> BackendError:
        return BackendError(f"PostgreSQL rejected the session settings {self._settings()}: "
                            f"{_first_line(e)}",
                            hint="check offline_store.settings in feature_store.yaml")

    def connect(self) -> Any:
        """A new psycopg connection in autocommit mode, in UTC, searching ``db_schema``
        first: for what is not rows (schemas, indexes) and for ``write``.

        One per job, like a DuckDB connection: jobs never share a session (their temporary
        tables), and a long join never holds a pooled connection others wait for.
        """
        try:
            con = psycopg.connect(self._conninfo(), autocommit=True)
        except psycopg.OperationalError as e:
            raise self._connect_error(_first_line(e)) from None
        settings = self._settings()
        try:
            con.execute("SELECT " + ", ".join(["set_config(%s, %s, false)"] * len(settings)),
                        [x for kv in settings.items() for x in kv])
        except psycopg.Error as e:
            con.close()
            raise self._settings_error(e) from None
        return con

    def connect_adbc(self) -> RowsSession:
        """A new ADBC connection (autocommit, same settings as ``connect``): what reads
        rows, and the session a retrieval stages its entity rows in."""
        try:
            with self._adbc_lock:
                if self._adbc_database is None:
                    self._adbc_database = adbc_pg.connect(self._conninfo())
                con = RowsSession(self._adbc_database)
        except adbc.Error as e:
            raise self._connect_error(_adbc_message(e)) from None
        settings = self._settings()
        try:
            con.run("SELECT " + ", ".join(f"set_config({_literal(k)}, {_literal(v)}, false)"
                                          for k, v in settings.items()))
        except adbc.Error as e:
            con.close()
            raise self._settings_error(e) from None
        return con

    def close(self) -> None:
        with self._adbc_lock:
            database, self._adbc_database = self._adbc_database, None
        if database is not None:
            database.close()

    def _driver_error(self, what: str, message: str, lost: bool) -> Exception:
        """A driver's error as a tiffin error: a lost connection is transient (503)."""
        if lost:
            return StoreUnavailableError(f"lost the connection to PostgreSQL at "
                                         f"{self.config.where()} while {what}: {message}")
        return BackendError(f"PostgreSQL failed while {what}: {message}")

    @contextmanager
    def session(self, what: str) -> Iterator[Any]:
        """A connection for one piece of work; driver errors become tiffin errors."""
        con = self.connect()
        try:
            yield con
        except psycopg.Error as e:
            lost = isinstance(e, psycopg.OperationalError) and con.broken
            raise self._driver_error(what, _first_line(e), lost) from None
        finally:
            con.close()

    @contextmanager
    def rows_session(self, what: str) -> Iterator[RowsSession]:
        """An ADBC connection for one piece of work; driver errors become tiffin errors."""
        con = self.connect_adbc()
        try:
            yield con
        except (adbc.Error, OSError) as e:
            message = _adbc_message(e)
            lost = any(text in message for text in ("FATAL:", "server closed the connection",
                                                    "no connection to the server"))
            raise self._driver_error(what, message, lost) from None
        finally:
            con.close()

    # -- sources -------------------------------------------------------------------------
    def _source(self, source: DataSource) -> PostgreSQLSource:
        batch = source.batch
        if not isinstance(batch, PostgreSQLSource):
            raise DefinitionError(f"the postgres offline store reads PostgreSQLSource, not "
                                  f"{type(batch).__name__} ({batch.name!r}){batch.where()}")
        return batch

    def relation(self, source: DataSource) -> str:
        batch = self._source(source)
        return f"({batch.query})" if batch.query else str(batch.table)

    def source_schema(self, source: DataSource) -> pa.Schema:
        with self.session(f"reading the columns of source {source.batch.name!r}") as con:
            return self._schema(con, source)

    def _schema(self, con: Any, source: DataSource) -> pa.Schema:
        """The columns a query on the source returns (``LIMIT 0``: planned, never run)."""
        batch = self._source(source)
        try:
            with con.transaction():
                cur = con.execute(f"SELECT * FROM {self.relation(batch)} AS src LIMIT 0")
        except psycopg.errors.UndefinedTable as e:
            hint = None
            if batch.table:
                hint = did_you_mean(batch.table, self._table_names(con)) or \
                    f"no such table in the search path ({self.config.db_schema}, public)"
            raise DefinitionError(f"source {batch.name!r}{batch.where()}: {_first_line(e)}",
                                  hint=hint) from None
        except (psycopg.ProgrammingError, psycopg.DataError) as e:
            raise DefinitionError(f"source {batch.name!r}{batch.where()}: cannot read it: "
                                  f"{_first_line(e)}") from None
        return pa.schema([pa.field(d.name, arrow_type(d.type_code, d.precision, d.scale))
                          for d in cur.description])

    def _table_names(self, con: Any) -> list[str]:
        """Tables and views in reach, unqualified (search path) and qualified."""
        rows = con.execute(
            "SELECT table_schema, table_name, table_schema = ANY(current_schemas(false)) "
            "FROM information_schema.tables WHERE table_schema NOT IN "
            "('pg_catalog', 'information_schema') AND table_schema NOT LIKE 'pg_temp%%'"
        ).fetchall()
        return [n for schema, table, searched in rows
                for n in ([table] if searched else []) + [f"{schema}.{table}"]]

    def write(self, source: DataSource, table: pa.Table) -> None:
        """Append rows to a table source with ``COPY``, in one transaction."""
        batch = self._source(source)
        if not batch.table:
            raise RequestError(f"source {batch.name!r} is a query; rows can only be appended "
                               "to a table source", hint="give the source table=")
        cols = ", ".join(DIALECT.quote(n) for n in table.column_names)
        with self.session(f"appending rows to {batch.table}") as con, con.transaction():
            with con.cursor().copy(f"COPY {batch.table} ({cols}) FROM STDIN (FORMAT csv)"
                                   ) as copy:
                for chunk in csv_chunks(table):
                    copy.write(chunk)

    # -- point-in-time join --------------------------------------------------------------
    def _views(self, con: Any, plan: FeaturePlan, strategy: str) -> tuple[list[ViewJoin], str]:
        """The views' joins, and the strategy: "auto" is ``lateral`` when every source is a
        table with an index on (join keys, event time), else ``sweep``."""
        views, indexed = [], []
        for i, req in enumerate(plan.views):
            source = req.view.source
            src = self.source_columns(source, self.relation(source), req.source_columns,
                                      schema=self._schema(con, source))
            views.append(ViewJoin.of(f"v{i}", req, src))
            if strategy == "auto":
                indexed.append(self._has_time_index(con, self._source(source), src,
                                                    req.join_keys))
        if strategy == "auto":
            strategy = "lateral" if indexed and all(indexed) else "sweep"
        return views, strategy

    def _has_time_index(self, con: Any, source: PostgreSQLSource, src: SourceColumns,
                        join_keys: list[str]) -> bool:
        """Whether a btree index on the table starts with the join-key columns (any order)
        and then the event-time column: then one probe per entity row finds its match."""
        ts_type = src.arrow_types.get(src.timestamp)
        if not source.table or ts_type is None or not (
                pa.types.is_timestamp(ts_type) or pa.types.is_date(ts_type)):
            return False
        try:
            with con.transaction():
                rows = con.execute(
                    "SELECT ARRAY(SELECT a.attname::text FROM unnest(x.indkey::int2[]) "
                    "WITH ORDINALITY AS k(attnum, pos) LEFT JOIN pg_attribute AS a ON "
                    "a.attrelid = x.indrelid AND a.attnum = k.attnum "
                    "WHERE k.pos <= x.indnkeyatts ORDER BY k.pos) "
                    "FROM pg_index AS x JOIN pg_class AS c ON c.oid = x.indexrelid "
                    "JOIN pg_am AS am ON am.oid = c.relam "
                    "WHERE x.indrelid = to_regclass(%s) AND am.amname = 'btree' "
                    "AND x.indpred IS NULL AND x.indisvalid", [source.table]).fetchall()
        except psycopg.Error:
            return False  # a table name to_regclass cannot parse: no index to find
        keys = {src.columns[k] for k in join_keys}
        n = len(keys)
        return any(set(cols[:n]) == keys and len(cols) > n and cols[n] == src.timestamp
                   for (cols,) in rows)

    @staticmethod
    def _feature_schema(views: list[ViewJoin], plan: FeaturePlan) -> pa.Schema:
        types = {out: dtype.to_arrow() for v in views for _, out, dtype in v.features}
        return pa.schema([pa.field(n, types[n]) for n in plan.view_outputs])

    def _stream(self, con: RowsSession, sql: str, target: pa.Schema, batch_rows: int
                ) -> Iterator[pa.RecordBatch]:
        """Run ``sql`` on an ADBC connection and read its rows as ``target``, at most
        ``batch_rows`` a batch (the driver's batches are cut by bytes)."""
        found = con.schema(sql)
        casts = [needs_text(f.type, t.type) for f, t in zip(found, target)]
        if any(casts):  # PostgreSQL's own text of uuid, json, NUMERIC... for text targets
            q = DIALECT.quote
            sql = "SELECT " + ", ".join(
                f"CAST(q.{q(f.name)} AS {cast})" if cast else f"q.{q(f.name)}"
                for f, cast in zip(found, casts)) + f" FROM ({sql}) AS q"
        for batch in con.query(sql):
            arrays = []
            for col, field, source in zip(batch.columns, target, batch.schema):
                try:
                    arrays.append(to_target(col, field.type, is_numeric_field(source)))
                except pa.ArrowException as e:
                    raise BackendError(f"cannot read PostgreSQL's column {field.name!r} "
                                       f"({col.type}) as {field.type}: "
                                       f"{_first_line(e)}") from None
            out = pa.RecordBatch.from_arrays(arrays, schema=target)
            for start in range(0, out.num_rows, batch_rows):
                yield out.slice(start, batch_rows)

    def get_historical_features(self, entity: pa.Table, timestamp_column: str,
                                plan: FeaturePlan, full_feature_names: bool,
                                strategy: str = "auto") -> RetrievalJob:
        """``strategy``: "auto" (``lateral`` where indexes serve it, else ``sweep``), or
        "lateral", "sweep" or "window" to force one (see ``pit``)."""
        entity_columns = entity_df_columns(entity)
        lo, hi = entity_time_range(entity)
        with self.session("reading source columns") as con:
            views, strategy = self._views(con, plan, strategy)
        join = PointInTimeJoin(ENTITY_TABLE, [], views, lo, hi, strategy,
                               feature_order=plan.view_outputs)
        sql = join.render(DIALECT)
        features = self._feature_schema(views, plan)
        staged = entity.select([ROW_ID, ENTITY_TS, *plan.entity_columns])
        out_schema = pa.schema([entity.schema.field(c) for c in entity_columns] + list(features))

        def batches(batch_rows: int) -> Iterator[pa.RecordBatch]:
            done = 0
            with self.rows_session("running the point-in-time join") as con:
                self._stage(con, staged)
                for batch in self._stream(con, sql, features, batch_rows):
                    part = entity.slice(done, batch.num_rows)
                    done += batch.num_rows
                    yield pa.RecordBatch.from_arrays(
                        [part.column(c).combine_chunks() for c in entity_columns]
                        + batch.columns, schema=out_schema)
            if done != entity.num_rows:
                raise BackendError(f"the point-in-time join returned {done} rows for "
                                   f"{entity.num_rows} entity rows")

        return self._job(batches, out_schema, sql, full_feature_names, plan, lo, hi)

    def _stage(self, con: Any, table: pa.Table) -> None:
        """The entity rows into a temporary table of the ADBC session (gone with it)."""
        con.ingest(ENTITY_NAME, ingest_ready(table))
        con.run(f"ANALYZE {ENTITY_TABLE}")  # temporary tables are never auto-analyzed

    def get_historical_features_from_query(self, query: str, plan: FeaturePlan,
                                           full_feature_names: bool, strategy: str = "auto"
                                           ) -> RetrievalJob:
        """entity_df as SQL: its rows are copied into the temporary table by PostgreSQL,
        numbered in the query's order."""
        query = query.strip().rstrip(";").rstrip()
        q = DIALECT.quote
        with self.session("reading the entity query's columns") as con:
            try:
                with con.transaction():
                    desc = con.execute(f"SELECT * FROM ({query}) AS q LIMIT 0").description
            except (psycopg.ProgrammingError, psycopg.DataError) as e:
                raise RequestError(f"entity_df query failed: {_first_line(e)}") from None
            views, strategy = self._views(con, plan, strategy)
        schema = pa.schema([pa.field(d.name, arrow_type(d.type_code, d.precision, d.scale))
                            for d in desc])
        ts_col = check_entity_columns(schema, plan)
        entity_columns = schema.names
        ts_type = schema.field(ts_col).type
        if pa.types.is_timestamp(ts_type) or pa.types.is_date(ts_type):
            ts = DIALECT.as_utc(f"q.{q(ts_col)}", zoned=ts_type == UTC_TS)
        else:  # ISO text: with an offset it is an instant, without one UTC
            ts = DIALECT.as_utc(f"CAST(q.{q(ts_col)} AS TIMESTAMPTZ)", zoned=True)
        stage = (f"CREATE TEMPORARY TABLE {ENTITY_TABLE} AS SELECT q.*, "
                 f"ROW_NUMBER() OVER () AS {ROW_ID}, {ts} AS {ENTITY_TS} FROM ({query}) AS q")
        features = self._feature_schema(views, plan)
        out_schema = pa.schema([schema.field(c) if c != ts_col else pa.field(c, TIMESTAMP)
                                for c in entity_columns] + list(features))

        def render(lo: datetime | None, hi: datetime | None) -> str:
            return PointInTimeJoin(ENTITY_TABLE, entity_columns, views, lo, hi, strategy,
                                   feature_order=plan.view_outputs).render(DIALECT)

        def batches(batch_rows: int) -> Iterator[pa.RecordBatch]:
            with self.rows_session("running the point-in-time join") as con:
                con.run(stage)
                con.run(f"ANALYZE {ENTITY_TABLE}")
                [row] = con.query(f"SELECT MIN({ENTITY_TS}) AS lo, MAX({ENTITY_TS}) AS hi "
                                  f"FROM {ENTITY_TABLE}").read_all().to_pylist()
                lo, hi = row["lo"], row["hi"]
                # __ts is a UTC wall time; the driver hands it over naive
                lo, hi = (None if t is None else t.replace(tzinfo=timezone.utc)
                          for t in (lo, hi))
                yield from self._stream(con, render(lo, hi), out_schema, batch_rows)

        job = self._job(batches, out_schema, render(None, None), full_feature_names, plan,
                        None, None)
        job.metadata["entity_columns"] = entity_columns
        return job

    def _job(self, batches: Callable[[int], Iterator[pa.RecordBatch]], schema: pa.Schema,
             sql: str, full_feature_names: bool, plan: FeaturePlan,
             lo: datetime | None, hi: datetime | None) -> RetrievalJob:
        def reader(batch_rows: int) -> pa.RecordBatchReader:
            return pa.RecordBatchReader.from_batches(schema, batches(batch_rows))

        return RetrievalJob(reader, sql=sql, full_feature_names=full_feature_names,
                            metadata={"features": plan.view_outputs,
                                      "keys": plan.entity_columns,
                                      "min_event_timestamp": lo, "max_event_timestamp": hi})

    # -- materialization -----------------------------------------------------------------
    def pull_latest(self, view: FeatureView, start: datetime | None, end: datetime,
                    batch_rows: int) -> pa.RecordBatchReader:
        logical = view.join_keys + [f.name for f in view.features]
        source = view.source
        with self.session(f"reading the columns of {view.name!r}'s source") as con:
            src = self.source_columns(source, self.relation(source), logical,
                                      schema=self._schema(con, source))
        sql = LatestRows(src, view.join_keys, [(f.name, f.dtype) for f in view.features],
                         start, end).render(DIALECT)
        target = online_batch_schema(view)

        def batches() -> Iterator[pa.RecordBatch]:
            with self.rows_session(f"reading {view.name!r} from its source") as con:
                yield from self._stream(con, sql, target, batch_rows)

        return pa.RecordBatchReader.from_batches(target, batches())


__all__ = ["PostgreSQLOfflineStore"]
