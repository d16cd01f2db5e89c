"""PostgreSQL online store.

Layout: table ``"<project>_<view>"`` in ``db_schema``: join-key columns (primary
key), ``__event_ts`` and ``__created_ts`` (epoch microseconds, BIGINT) and a
typed column per feature (arrays as JSON text). Writes COPY a batch into a
temporary table, then one ``INSERT … ON CONFLICT … DO UPDATE … WHERE`` keeps
the newer event; reads are one query per view. ``__tiffin_newest`` keeps, per
view table, the newest event time ever written (freshness without a scan).

Reads from an event loop (the feature server) go through psycopg's async driver,
with an ``AsyncConnectionPool`` per loop (a pool's connections and tasks belong to
the loop that opened them): while PostgreSQL answers, or waits on a lock, the loop
serves other requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import threading
import weakref
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

import pyarrow as pa

from tiffin.config import RepoConfig
from tiffin.definitions import FeatureView
from tiffin.errors import BackendError, MissingDependencyError, StoreUnavailableError
from tiffin.online.base import OnlineStore, Rows, newest_event_us, python_values
from tiffin.online.postgres.config import PostgreSQLOnlineStoreConfig
from tiffin.types import Array, FeastType, from_micros

try:
    import psycopg
    from psycopg import sql
    from psycopg_pool import AsyncConnectionPool, ConnectionPool
except ImportError:  # pragma: no cover - only without the extra
    psycopg = None


def _pg_type(dtype: FeastType) -> str:
    if isinstance(dtype, Array):
        return "TEXT"
    return {"Int32": "INTEGER", "Int64": "BIGINT", "Bool": "BOOLEAN", "UnixTimestamp": "BIGINT",
            "Float32": "REAL", "Float64": "DOUBLE PRECISION", "String": "TEXT",
            "Bytes": "BYTEA"}[dtype.name]


def _decoder(dtype: FeastType) -> Callable[[Any], Any] | None:
    if isinstance(dtype, Array):
        if dtype.base_type.name == "UnixTimestamp":
            return lambda v: [None if x is None else from_micros(x) for x in json.loads(v)]
        return json.loads
    if dtype.name == "UnixTimestamp":
        return from_micros
    if dtype.name == "Bytes":
        return bytes
    return None


def _unavailable(what: str, e: Exception) -> Exception | None:
    """The tiffin error for a driver or pool failure, None for any other exception."""
    if isinstance(e, psycopg.OperationalError) or type(e).__module__.startswith("psycopg_pool"):
        return StoreUnavailableError(f"PostgreSQL unreachable while {what}: {e}")
    if isinstance(e, psycopg.Error):
        return BackendError(f"PostgreSQL failed while {what}: {e}")
    return None


class PostgreSQLOnlineStore(OnlineStore):
    async_reads = True

    def __init__(self, config: PostgreSQLOnlineStoreConfig, repo_config: RepoConfig):
        super().__init__(config, repo_config)
        if psycopg is None:
            raise MissingDependencyError("psycopg", "postgres")
        self.pool = self._new_pool()
        self._opened = False
        self._async_pools: dict[asyncio.AbstractEventLoop, Any] = {}
        # Per loop, the async generator that closes its pool as the loop ends in order
        # (held here: a loop holds its async generators by weak reference).
        self._pool_guards: dict[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = {}
        self._async_lock = threading.Lock()  # loops of several threads may open pools
        self._closing: set[asyncio.Task] = set()
        self._queries: dict[tuple, tuple[Any, list]] = {}
        self._newest_ready = False  # __tiffin_newest is known to exist

    def _new_pool(self) -> Any:
        return ConnectionPool(self.config.conninfo(), min_size=self.config.min_conn,
                              max_size=self.config.max_conn, open=False,
                              kwargs={"autocommit": True})

    def _conn(self) -> Any:
        if not self._opened:
            self.pool.open(wait=False)
            self._opened = True
        return self.pool.connection(timeout=self.config.connect_timeout_seconds)

    def _run(self, what: str, fn: Callable[[Any], Any]) -> Any:
        try:
            with self._conn() as con:
                return fn(con)
        except Exception as e:
            error = _unavailable(what, e)
            if error is None:
                raise
            raise error from e

    async def _async_pool(self) -> Any:
        loop = asyncio.get_running_loop()
        pool = self._async_pools.get(loop)
        if pool is not None:
            return pool
        with self._async_lock:
            # Pools of loops that have ended are dropped as they are: their loop closed
            # their sockets' transports and cancelled their tasks already.
            for old in [lp for lp in self._async_pools if lp.is_closed()]:
                del self._async_pools[old]
                self._pool_guards.pop(old, None)
            # Empty at first (min_size 0, not min_conn): a connection is made when a read
            # waits for one, so none is being made in the background when a short-lived
            # loop (asyncio.run) ends. psycopg_pool's connect task takes the cancellation
            # that ending sends for a failed connect and schedules a retry: the loop, and
            # asyncio.run, never finished ending.
            made: weakref.WeakSet = weakref.WeakSet()  # every connection the pool opens

            async def remember(con: Any) -> None:
                made.add(con)

            pool = self._async_pools[loop] = AsyncConnectionPool(
                self.config.conninfo(), min_size=0, max_size=max(1, self.config.max_conn),
                open=False, kwargs={"autocommit": True}, configure=remember)
            guard = self._pool_guards[loop] = self._until_loop_ends(loop, pool, made)
        # psycopg's connections are sockets the loop watches, not transports the loop
        # closes: a loop that ends leaves them open. Every orderly end of a loop
        # (asyncio.run's, Runner.close, loop.shutdown_asyncgens()) closes its suspended
        # async generators; the guard's ``finally`` then closes the pool's connections.
        await guard.__anext__()
        await pool.open(wait=False)
        return pool

    async def _until_loop_ends(self, loop: asyncio.AbstractEventLoop, pool: Any,
                               made: weakref.WeakSet) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._async_lock:
                if self._async_pools.get(loop) is pool:
                    del self._async_pools[loop]
                self._pool_guards.pop(loop, None)
            # The loop's ending cancelled the pool's worker tasks first, so ``close``
            # stops (raising their CancelledError) before it closes the idle connections:
            # every connection the pool made (its public ``configure`` hook recorded them)
            # is closed here, one by one. Nothing is in use: the loop's tasks have ended.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await pool.close(timeout=1)
            for con in list(made):
                if not con.closed:
                    with contextlib.suppress(Exception):
                        await con.close()

    async def read_many_async(self, reads: Sequence[tuple[FeatureView, Sequence[tuple],
                                                          Sequence[str]]]) -> list[Rows]:
        what = "reading " + ", ".join(dict.fromkeys(repr(v.name) for v, _, _ in reads))
        try:
            pool = await self._async_pool()
            out: list[Rows] = []
            async with pool.connection(timeout=self.config.connect_timeout_seconds) as con:
                for view, keys, features in reads:
                    if not keys:
                        out.append([])
                        continue
                    query, decoders = self._read_query(view, features)
                    try:
                        cur = await con.execute(query, [list(c) for c in zip(*keys)],
                                                prepare=True)
                        rows = await cur.fetchall()
                    except psycopg.errors.UndefinedTable:
                        rows = [None] * len(keys)  # never materialized here: NOT_FOUND
                    out.append(_decode(rows, decoders))
            return out
        except Exception as e:
            error = _unavailable(what, e)
            if error is None:
                raise
            raise error from e

    def _name(self, view: FeatureView) -> str:
        return f"{self.project}_{view.name}"

    def _table(self, view: FeatureView) -> Any:
        return sql.Identifier(self.config.db_schema, self._name(view))

    def _newest_table(self) -> Any:
        return sql.Identifier(self.config.db_schema, "__tiffin_newest")

    def ping(self) -> None:
        self._run("pinging", lambda con: con.execute("SELECT 1").fetchall())

    async def aclose(self) -> None:
        with self._async_lock:
            pool = self._async_pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()
        self.close()

    def close(self) -> None:
        if self._opened:
            self.pool.close()
            self.pool = self._new_pool()  # a closed pool cannot reopen; the next use opens this
            self._opened = False
        with self._async_lock:
            pools, self._async_pools = self._async_pools, {}
            self._pool_guards = {}  # (a guard left to run finds its pool closed)
        for loop, pool in pools.items():
            # A pool is closed on its own loop: from here when that loop runs in another
            # thread or is idle (``aclose`` closes the running loop's pool first). A loop
            # that has ended took its connections with it.
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if loop is running:  # cannot wait for it here: closed when the loop next runs
                task = loop.create_task(pool.close())
                self._closing.add(task)  # (a task nobody holds may be collected unfinished)
                task.add_done_callback(self._closing.discard)
            elif loop.is_running():
                closing = asyncio.run_coroutine_threadsafe(pool.close(), loop)
                try:
                    closing.result(self.config.connect_timeout_seconds + 5)
                except concurrent.futures.TimeoutError:
                    # That loop is busy (or waits on this thread): its pool closes when the
                    # loop gets to it, or when the loop ends (its guard); close() returns.
                    pass
            elif running is None:
                loop.run_until_complete(pool.close())
            else:  # an idle loop cannot run inside this thread's running one: a thread runs it
                closer = threading.Thread(target=loop.run_until_complete, args=(pool.close(),))
                closer.start()
                closer.join()

    # -- schema --------------------------------------------------------------------------
    def _columns(self, view: FeatureView) -> list[tuple[str, str]]:
        cols = [(f.name, _pg_type(f.dtype)) for f in view.entity_columns]
        cols += [("__event_ts", "BIGINT"), ("__created_ts", "BIGINT")]
        return cols + [(f.name, _pg_type(f.dtype)) for f in view.features]

    def prepare(self, keep: Sequence[FeatureView], delete: Sequence[FeatureView]) -> None:
        def run(con: Any) -> None:
            con.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(self.config.db_schema)))
            self._ensure_newest(con)
            self._drop(con, delete)
            for view in keep:
                cols = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t))
                                          for n, t in self._columns(view))
                keys = sql.SQL(", ").join(sql.Identifier(f.name) for f in view.entity_columns)
                con.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))")
                            .format(self._table(view), cols, keys))
                for n, t in self._columns(view):  # features added since: new columns
                    con.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}")
                                .format(self._table(view), sql.Identifier(n), sql.SQL(t)))
        self._run("preparing tables", run)
        self._queries.clear()

    def _ensure_newest(self, con: Any) -> None:
        if self._newest_ready:
            return
        try:
            con.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (name TEXT PRIMARY KEY, "
                                "event_ts BIGINT NOT NULL)").format(self._newest_table()))
        except psycopg.errors.UniqueViolation:  # another process created it at the same time
            pass
        self._newest_ready = True

    def teardown(self, views: Sequence[FeatureView]) -> None:
        self._run("dropping tables", lambda con: self._drop(con, views))
        self._queries.clear()

    def _drop(self, con: Any, views: Sequence[FeatureView]) -> None:
        for view in views:
            con.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._table(view)))
            try:
                with con.transaction():
                    con.execute(sql.SQL("DELETE FROM {} WHERE name = %s").format(
                        self._newest_table()), [self._name(view)])
            except psycopg.errors.UndefinedTable:  # prepared by an older tiffin: nothing kept
                pass

    # -- writes --------------------------------------------------------------------------
    def write(self, view: FeatureView, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        names = batch.schema.names
        dtypes = {f.name: f.dtype for f in list(view.schema) + list(view.entity_columns)}
        columns = []
        for i, n in enumerate(names):
            values = python_values(batch.column(i))
            if isinstance(dtypes.get(n), Array):
                values = [None if v is None else json.dumps(v) for v in values]
            columns.append(values)
        keys = [f.name for f in view.entity_columns]
        table = self._table(view)
        ident = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        key_ids = sql.SQL(", ").join(sql.Identifier(k) for k in keys)
        updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n))
                                     for n in names if n not in keys)
        # One row per key from the batch (newest first), then keep it only if newer than
        # what is stored: an older event never overwrites a newer one.
        upsert = sql.SQL(
            "INSERT INTO {t} ({cols}) SELECT DISTINCT ON ({keys}) {cols} FROM __stage "
            "ORDER BY {keys}, __event_ts DESC, __created_ts DESC NULLS LAST "
            "ON CONFLICT ({keys}) DO UPDATE SET {updates} "
            "WHERE EXCLUDED.__event_ts > {t}.__event_ts OR (EXCLUDED.__event_ts = "
            "{t}.__event_ts AND COALESCE(EXCLUDED.__created_ts, 0) >= "
            "COALESCE({t}.__created_ts, 0))").format(t=table, cols=ident, keys=key_ids,
                                                     updates=updates)
        newest = newest_event_us(batch)

        def run(con: Any) -> None:
            self._ensure_newest(con)  # (a schema prepared by an older tiffin lacks it)
            with con.transaction():
                con.execute(sql.SQL("CREATE TEMP TABLE __stage (LIKE {}) ON COMMIT DROP")
                            .format(table))
                with con.cursor().copy(sql.SQL("COPY __stage ({}) FROM STDIN").format(ident)
                                       ) as copy:
                    for row in zip(*columns):
                        copy.write_row(row)
                con.execute(upsert)
            if newest is None:
                return
            # After the rows' commit, in a transaction of its own that does not wait for
            # its WAL flush: concurrent writers of one view queue on this one row only
            # for a statement, not for a commit each. Lost in a crash, freshness reads
            # older than the data, never newer.
            with con.transaction():
                con.execute("SET LOCAL synchronous_commit = off")
                con.execute(sql.SQL(
                    "INSERT INTO {n} AS n VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                    "SET event_ts = GREATEST(n.event_ts, EXCLUDED.event_ts)").format(
                    n=self._newest_table()), [self._name(view), newest])
        self._run(f"writing {view.name!r}", run)

    def newest_event_times(self, views: Sequence[FeatureView]) -> dict[str, int]:
        by_table = {self._name(v): v.name for v in views}
        if not by_table:
            return {}

        def run(con: Any) -> list[tuple]:
            try:
                return con.execute(sql.SQL("SELECT name, event_ts FROM {} WHERE name = ANY(%s)")
                                   .format(self._newest_table()), [list(by_table)]).fetchall()
            except psycopg.errors.UndefinedTable:
                return []  # never prepared here
        return {by_table[n]: ts for n, ts in self._run("reading event times", run)}

    # -- reads ---------------------------------------------------------------------------
    def read(self, view: FeatureView, keys: Sequence[tuple], features: Sequence[str]
             ) -> Rows:
        if not keys:
            return []
        query, decoders = self._read_query(view, features)
        params = [list(col) for col in zip(*keys)]

        def run(con: Any) -> list[tuple]:
            try:
                return con.execute(query, params, prepare=True).fetchall()
            except psycopg.errors.UndefinedTable:
                return [None] * len(keys)  # never materialized here: every key NOT_FOUND
        return _decode(self._run(f"reading {view.name!r}", run), decoders)

    def _read_query(self, view: FeatureView, features: Sequence[str]) -> tuple[Any, list]:
        """The SELECT reading ``features`` of ``view`` for a list of keys, and the value
        decoders of its columns; built once per (view, features)."""
        cache_key = (view.name, tuple(features))
        prepared = self._queries.get(cache_key)
        if prepared is None:
            by_name = {f.name: f for f in view.features}
            decoders = [(i, d) for i, n in enumerate(features, 1)
                        if (d := _decoder(by_name[n].dtype)) is not None]
            names = [f.name for f in view.entity_columns]
            cols = sql.SQL(", ").join(
                [sql.SQL("t.__event_ts")] + [sql.SQL("t.{}").format(sql.Identifier(n))
                                             for n in features])
            arrays = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(
                _pg_type(f.dtype))) for f in view.entity_columns)
            aliases = sql.SQL(", ").join(sql.Identifier(f"k{i}") for i in range(len(names)))
            on = sql.SQL(" AND ").join(
                sql.SQL("t.{} = k.{}").format(sql.Identifier(n), sql.Identifier(f"k{i}"))
                for i, n in enumerate(names))
            # One row per key, in key order (ORDINALITY), nulls where a key has no row.
            query = sql.SQL("SELECT {} FROM unnest({}) WITH ORDINALITY AS k({}, __ord) "
                            "LEFT JOIN {} AS t ON {} ORDER BY k.__ord").format(
                cols, arrays, aliases, self._table(view), on)
            prepared = self._queries[cache_key] = (query, decoders)
        return prepared


def _decode(rows: list, decoders: list[tuple[int, Callable[[Any], Any]]]) -> Rows:
    if not decoders:
        return rows
    out: list = []
    for row in rows:
        if row is None or row[0] is None:
            out.append(row)
            continue
        values = list(row)
        for i, dec in decoders:
            if values[i] is not None:
                values[i] = dec(values[i])
        out.append(values)
    return out
