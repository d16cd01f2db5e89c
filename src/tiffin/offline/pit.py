"""The point-in-time join, written once and rendered per SQL dialect.

Semantics (what the contract suite checks): for every entity row and every
requested view, take the view's source row with the same join-key values,
``event_ts <= row_ts`` and, when the view has a ttl, ``event_ts >= row_ts - ttl``;
the newest ``event_ts`` wins and ties go to the newest created timestamp. No
match gives nulls. Every entity row comes out exactly once, in input order.

The strategies render the same semantics:

* ``asof``: dedupe each source on (keys, event_ts) by created timestamp, then
  ``ASOF LEFT JOIN``; the ttl is checked on the one row the ASOF join picked
  (it is the newest eligible row, so if it is too old every other row is too).
  Linear-ish time, used where the engine has ASOF joins (DuckDB).
* ``window``: range join on keys and the time window, ``ROW_NUMBER()`` per
  entity row, keep the first. Portable SQL for engines without ASOF.
* ``sweep``: one sorted pass instead of a range join. Entity rows and source
  rows go into one stream ordered by (keys, time, source before entity,
  created); a running count of source rows numbers the groups "one source row
  and the entity rows after it", and ``FIRST_VALUE`` over each group hands the
  entity rows that source row. Two window functions, no join that grows with
  the number of source rows per key: portable SQL that scales like ASOF
  (PostgreSQL uses it).
* ``lateral``: per entity row, ``LATERAL (... ORDER BY event time DESC LIMIT
  1)`` on the raw source columns. With an index on (join keys, event time) each
  row is one index probe, far faster than sorting the source; without one it
  scans the source per row, so a store picks it only where such an index exists.

The entity relation must already carry ``__row_id`` (input order) and ``__ts``
(the row's timestamp as a UTC timestamp without zone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pyarrow as pa

from tiffin import types as T

if TYPE_CHECKING:
    from tiffin.features import ViewRequest

ROW_ID = "__row_id"
ENTITY_TS = "__ts"
EVENT_TS = "__event_ts"
CREATED_TS = "__created_ts"


class Dialect:
    """What differs between SQL engines; subclasses register by ``name``."""

    name = "ansi"
    supports_asof = False
    supports_arg_max = False  # arg_max(value, ordering) aggregate
    registry: dict[str, type[Dialect]] = {}

    def __init_subclass__(cls, **kw: object) -> None:
        super().__init_subclass__(**kw)
        Dialect.registry[cls.name] = cls

    def quote(self, ident: str) -> str:
        return '"' + ident.replace('"', '""') + '"'

    def timestamp_literal(self, ts: datetime, zoned: bool) -> str:
        ts = ts.astimezone(timezone.utc)
        if zoned:
            return f"TIMESTAMP WITH TIME ZONE '{ts.isoformat()}'"
        return f"TIMESTAMP '{ts.replace(tzinfo=None).isoformat(sep=' ')}'"

    def as_utc(self, expr: str, zoned: bool) -> str:
        """An expression as a zone-less UTC timestamp (sessions run in UTC)."""
        return f"CAST({expr} AS TIMESTAMP)"

    def from_utc(self, expr: str, zoned: bool) -> str:
        """The inverse of ``as_utc``: a zone-less UTC timestamp as a value comparable with a
        zoned or zone-less column without converting the column (so indexes still serve)."""
        return f"CAST({expr} AS TIMESTAMP WITH TIME ZONE)" if zoned else expr

    def minus_seconds(self, expr: str, seconds: float) -> str:
        # round, not int: 1.000001 s is 1000000.9999 us as a float
        return f"({expr} - INTERVAL '{round(seconds * 1_000_000)} microseconds')"

    def sql_type(self, dtype: T.FeastType) -> str:
        if isinstance(dtype, T.Array):
            return self.sql_type(dtype.base_type) + "[]"
        return {"Int32": "INTEGER", "Int64": "BIGINT", "Float32": "REAL", "Float64": "DOUBLE",
                "String": "VARCHAR", "Bool": "BOOLEAN", "Bytes": "BLOB",
                "UnixTimestamp": "TIMESTAMP WITH TIME ZONE"}[dtype.name]

    def struct(self, fields: list[tuple[str, str]]) -> str:
        """A struct value from (name, expression) pairs; compares field by field."""
        def lit(name: str) -> str:
            return "'" + name.replace("'", "''") + "'"
        return "{" + ", ".join(f"{lit(n)}: {e}" for n, e in fields) + "}"

    def cast(self, expr: str, dtype: T.FeastType) -> str:
        return f"CAST({expr} AS {self.sql_type(dtype)})"


class DuckDBDialect(Dialect):
    name = "duckdb"
    supports_asof = True
    supports_arg_max = True

    def as_utc(self, expr: str, zoned: bool) -> str:
        # A zoned -> zone-less CAST goes through ICU's calendar per row (seconds on millions
        # of rows); the epoch arithmetic gives the same UTC wall time almost for free.
        # The inner CASTs only change units (ns/ms -> us), never zones.
        if zoned:
            return f"make_timestamp(epoch_us(CAST({expr} AS TIMESTAMP WITH TIME ZONE)))"
        return f"CAST({expr} AS TIMESTAMP)"

    def as_epoch_us(self, expr: str, zoned: bool) -> str:
        # Epoch microseconds are all the in-memory merge needs of a time; the round trip
        # back to a TIMESTAMP (make_timestamp above) cost a fifth of reading a large source.
        if zoned:
            return f"epoch_us(CAST({expr} AS TIMESTAMP WITH TIME ZONE))"
        return f"epoch_us(CAST({expr} AS TIMESTAMP))"

    def recency_key(self, event_ts: str, created_ts: str | None) -> str:
        """One sortable number for (event_ts, created_ts), null created lowest.

        A 128-bit integer compares twice as fast as a struct in DuckDB's arg_max.
        """
        if created_ts is None:
            return f"epoch_us({event_ts})"
        return (f"(epoch_us({event_ts})::HUGEINT * 18446744073709551616 "
                f"+ COALESCE(epoch_us({created_ts}), -9223372036854775807))")


@dataclass
class SourceColumns:
    """How one view reads its source: logical name -> source column, and its Arrow types."""

    relation: str  # SQL that yields the raw source rows (table name, subquery, table function)
    timestamp: str
    created: str | None
    columns: dict[str, str]  # logical name -> raw source column (field_mapping applied)
    arrow_types: dict[str, pa.DataType]  # raw source column -> type


@dataclass
class ViewJoin:
    alias: str  # SQL-safe alias for this view's CTEs
    source: SourceColumns
    join_keys: list[str]  # logical names in the source
    entity_keys: list[str]  # matching entity relation columns
    features: list[tuple[str, str, T.FeastType]]  # (logical feature, output column, dtype)
    ttl_seconds: float | None

    @classmethod
    def of(cls, alias: str, req: ViewRequest, source: SourceColumns) -> ViewJoin:
        """The join of one view of a FeaturePlan, reading ``source``."""
        return cls(alias=alias, source=source, join_keys=req.join_keys,
                   entity_keys=req.entity_columns,
                   features=[(f.name, out, f.dtype)
                             for f, out in zip(req.features, req.output_names)],
                   ttl_seconds=req.view.ttl_seconds)


@dataclass
class PointInTimeJoin:
    entity_relation: str
    entity_columns: list[str]  # output first, in this order (the original entity_df columns)
    views: list[ViewJoin]
    min_ts: datetime | None  # range of entity timestamps, to prune source scans
    max_ts: datetime | None
    strategy: str = "asof"
    # Output feature columns in request order (views interleave); default: view by view.
    feature_order: list[str] = field(default_factory=list)
    # False: rows in any order (they carry __row_id); for a caller that reorders them
    # itself, cheaper than the global sort of an engine that runs on many machines.
    ordered: bool = True

    def _order_by(self) -> str:
        return f" ORDER BY e.{ROW_ID}" if self.ordered else ""

    def source_query(self, d: Dialect, v: ViewJoin, epoch_us: bool = False) -> str:
        """The view's source rows: renamed columns, cast features, pruned to the time range.
        ``epoch_us``: event and created times as BIGINT epoch microseconds (``d`` must have
        ``as_epoch_us``), for the in-memory merge, which compares nothing else."""
        q = d.quote
        src = v.source
        zoned = _is_zoned(src, src.timestamp)
        as_time = d.as_epoch_us if epoch_us else d.as_utc  # type: ignore[attr-defined]
        cols = [f"{q(src.columns[k])} AS {q('k' + str(i))}" for i, k in enumerate(v.join_keys)]
        cols.append(f"{as_time(q(src.timestamp), zoned)} AS {EVENT_TS}")
        if src.created:
            cols.append(f"{as_time(q(src.created), _is_zoned(src, src.created))} "
                        f"AS {CREATED_TS}")
        for i, (logical, _, dtype) in enumerate(v.features):
            raw = src.columns[logical]
            expr = q(raw)
            if not _same_type(src.arrow_types.get(raw), dtype):
                expr = d.cast(expr, dtype)
            cols.append(f"{expr} AS {q('f' + str(i))}")
        where = [f"{q(src.timestamp)} IS NOT NULL"]
        where += [f"{q(src.columns[k])} IS NOT NULL" for k in v.join_keys]
        if self.max_ts is not None:
            where.append(f"{q(src.timestamp)} <= {d.timestamp_literal(self.max_ts, zoned)}")
        if self.min_ts is not None and v.ttl_seconds:
            lower = self.min_ts - timedelta(seconds=v.ttl_seconds)
            where.append(f"{q(src.timestamp)} >= {d.timestamp_literal(lower, zoned)}")
        return (f"SELECT {', '.join(cols)} FROM {src.relation} AS src "
                f"WHERE {' AND '.join(where)}")

    def render(self, dialect: Dialect | str) -> str:
        d = Dialect.registry[dialect]() if isinstance(dialect, str) else dialect
        strategy = self.strategy
        if strategy == "asof" and not d.supports_asof:
            strategy = "window"
        if strategy == "sweep":
            return self._render_sweep(d)
        if strategy == "lateral":
            return self._render_lateral(d)
        return self._render_asof(d) if strategy == "asof" else self._render_window(d)

    def _select_outputs(self, d: Dialect, pick: Callable[[ViewJoin, int], str]) -> str:
        """Entity columns, then every feature (``pick`` renders one) in request order."""
        q = d.quote
        by_name = {name: (v, i) for v in self.views for i, (_, name, _) in enumerate(v.features)}
        order = self.feature_order or list(by_name)
        out = [f"e.{q(c)}" for c in self.entity_columns]
        out += [f"{pick(*by_name[name])} AS {q(name)}" for name in order]
        return ", ".join(out)

    def _render_asof(self, d: Dialect) -> str:
        q = d.quote
        ctes, joins = [], []
        for v in self.views:
            src = self.source_query(d, v)
            keys = [q("k" + str(i)) for i in range(len(v.join_keys))]
            if v.source.created:
                # The ASOF join cannot break ties itself: keep one row per (keys, event_ts).
                src = (f"SELECT * FROM ({src}) AS s QUALIFY ROW_NUMBER() OVER (PARTITION BY "
                       f"{', '.join(keys + [EVENT_TS])} ORDER BY {CREATED_TS} DESC NULLS LAST)"
                       " = 1")
            ctes.append(f"{q(v.alias)} AS ({src})")
            on = [f"e.{q(ek)} = {q(v.alias)}.{k}" for ek, k in zip(v.entity_keys, keys)]
            on.append(f"e.{ENTITY_TS} >= {q(v.alias)}.{EVENT_TS}")
            joins.append(f"ASOF LEFT JOIN {q(v.alias)} ON {' AND '.join(on)}")

        def pick(v: ViewJoin, i: int) -> str:
            # ttl: the ASOF match is the newest eligible row; if it is too old, so is every
            # other candidate, and the feature is null.
            a = q(v.alias)
            col = f"{a}.{q('f' + str(i))}"
            if v.ttl_seconds:
                col = (f"CASE WHEN {a}.{EVENT_TS} >= "
                       f"{d.minus_seconds('e.' + ENTITY_TS, v.ttl_seconds)} THEN {col} END")
            return col

        return (f"WITH {', '.join(ctes)} SELECT {self._select_outputs(d, pick)} "
                f"FROM {self.entity_relation} AS e {' '.join(joins)}{self._order_by()}")

    def _render_window(self, d: Dialect) -> str:
        q = d.quote
        ctes, joins, matches = [], [], {}
        for v in self.views:
            src_alias, match_alias = q(v.alias + "__src"), q(v.alias + "__match")
            ctes.append(f"{src_alias} AS ({self.source_query(d, v)})")
            on = [f"e.{q(ek)} = s.{q('k' + str(i))}" for i, ek in enumerate(v.entity_keys)]
            on.append(f"s.{EVENT_TS} <= e.{ENTITY_TS}")
            if v.ttl_seconds:
                on.append(f"s.{EVENT_TS} >= {d.minus_seconds('e.' + ENTITY_TS, v.ttl_seconds)}")
            order = [f"s.{EVENT_TS} DESC"]
            if v.source.created:
                order.append(f"s.{CREATED_TS} DESC NULLS LAST")
            feats = ", ".join(f"s.{q('f' + str(i))}" for i in range(len(v.features)))
            ranked = (f"SELECT e.{ROW_ID}, {feats}, ROW_NUMBER() OVER (PARTITION BY e.{ROW_ID} "
                      f"ORDER BY {', '.join(order)}) AS __rn FROM {self.entity_relation} AS e "
                      f"JOIN {src_alias} AS s ON {' AND '.join(on)}")
            ctes.append(f"{match_alias} AS (SELECT * FROM ({ranked}) AS r WHERE __rn = 1)")
            joins.append(f"LEFT JOIN {match_alias} ON {match_alias}.{ROW_ID} = e.{ROW_ID}")
            matches[v.alias] = match_alias

        def pick(v: ViewJoin, i: int) -> str:
            return f"{matches[v.alias]}.{q('f' + str(i))}"

        return (f"WITH {', '.join(ctes)} SELECT {self._select_outputs(d, pick)} "
                f"FROM {self.entity_relation} AS e {' '.join(joins)}{self._order_by()}")

    def _render_sweep(self, d: Dialect) -> str:
        q = d.quote
        ctes, joins, matches = [], [], {}
        for v in self.views:
            keys = [q("k" + str(i)) for i in range(len(v.join_keys))]
            feats = [q("f" + str(i)) for i in range(len(v.features))]
            ent_keys = [f"e.{q(ek)}" for ek in v.entity_keys]
            created = v.source.created is not None
            # Source rows first in the stream, so their column types name the union's.
            src_cols = [f"s.{k}" for k in keys] + [f"s.{EVENT_TS} AS __t", "0 AS __side"]
            ent_cols = [f"{ek} AS {k}" for ek, k in zip(ent_keys, keys)] + \
                [f"e.{ENTITY_TS} AS __t", "1 AS __side"]
            if created:
                src_cols.append(f"s.{CREATED_TS} AS __c")
                ent_cols.append("NULL AS __c")
            src_cols += [f"s.{EVENT_TS} AS __match_ts", *(f"s.{f}" for f in feats),
                         f"CAST(NULL AS BIGINT) AS {ROW_ID}"]
            ent_cols += ["NULL AS __match_ts", *(f"NULL AS {f}" for f in feats), f"e.{ROW_ID}"]
            # Only keys some entity row asks for: a semi-join is far cheaper than sorting
            # the rest of the source.
            wanted = " AND ".join(f"{ek} = s.{k}" for ek, k in zip(ent_keys, keys))
            ent_where = " AND ".join([f"e.{ENTITY_TS} IS NOT NULL"] +
                                     [f"{ek} IS NOT NULL" for ek in ent_keys])
            stream = (f"SELECT {', '.join(src_cols)} FROM ({self.source_query(d, v)}) AS s "
                      f"WHERE EXISTS (SELECT 1 FROM {self.entity_relation} AS e WHERE {wanted}) "
                      f"UNION ALL SELECT {', '.join(ent_cols)} FROM {self.entity_relation} AS e "
                      f"WHERE {ent_where}")
            # At equal times source rows come first (the match is inclusive), and among
            # them the largest created timestamp last, so it is the one an entity row sees.
            order = "__t, __side" + (", __c NULLS FIRST" if created else "")
            rows = "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
            part = ", ".join(keys)
            grouped = (f"SELECT *, COUNT(__match_ts) OVER (PARTITION BY {part} ORDER BY {order} "
                       f"{rows}) AS __grp FROM ({stream}) AS u")
            over = f"OVER (PARTITION BY {part}, __grp ORDER BY {order} {rows})"
            firsts = ", ".join(f"FIRST_VALUE({c}) {over} AS {c}" for c in ["__match_ts", *feats])
            match_alias = q(v.alias + "__match")
            ctes.append(f"{match_alias} AS (SELECT * FROM (SELECT {ROW_ID}, __side, {firsts} "
                        f"FROM ({grouped}) AS g) AS p WHERE __side = 1)")
            joins.append(f"LEFT JOIN {match_alias} ON {match_alias}.{ROW_ID} = e.{ROW_ID}")
            matches[v.alias] = match_alias

        def pick(v: ViewJoin, i: int) -> str:
            m = matches[v.alias]
            col = f"{m}.{q('f' + str(i))}"
            if v.ttl_seconds:
                col = (f"CASE WHEN {m}.__match_ts >= "
                       f"{d.minus_seconds('e.' + ENTITY_TS, v.ttl_seconds)} THEN {col} END")
            return col

        return (f"WITH {', '.join(ctes)} SELECT {self._select_outputs(d, pick)} "
                f"FROM {self.entity_relation} AS e {' '.join(joins)}{self._order_by()}")

    def _render_lateral(self, d: Dialect) -> str:
        q = d.quote
        joins = []
        for v in self.views:
            src = v.source
            ts_type = src.arrow_types.get(src.timestamp)
            zoned = _is_zoned(src, src.timestamp)
            # Conditions on the raw columns (the entity side converted instead), so that an
            # index on (keys, event time) serves them; a text time column cannot be.
            ts = f"src.{q(src.timestamp)}"
            row_ts = d.from_utc(f"e.{ENTITY_TS}", zoned)
            since = v.ttl_seconds and d.from_utc(d.minus_seconds(f"e.{ENTITY_TS}",
                                                                 v.ttl_seconds), zoned)
            if ts_type is None or not (pa.types.is_timestamp(ts_type) or
                                       pa.types.is_date(ts_type)):
                ts, row_ts = d.as_utc(ts, zoned), f"e.{ENTITY_TS}"
                since = v.ttl_seconds and d.minus_seconds(f"e.{ENTITY_TS}", v.ttl_seconds)
            where = [f"src.{q(src.columns[k])} = e.{q(ek)}"
                     for k, ek in zip(v.join_keys, v.entity_keys)]
            where.append(f"{ts} <= {row_ts}")
            if since:
                where.append(f"{ts} >= {since}")
            order = [f"{ts} DESC"]
            if src.created:
                order.append(f"src.{q(src.created)} DESC NULLS LAST")
            cols = []
            for i, (logical, _, dtype) in enumerate(v.features):
                raw = src.columns[logical]
                expr = f"src.{q(raw)}"
                if not _same_type(src.arrow_types.get(raw), dtype):
                    expr = d.cast(expr, dtype)
                cols.append(f"{expr} AS {q('f' + str(i))}")
            joins.append(f"LEFT JOIN LATERAL (SELECT {', '.join(cols)} FROM {src.relation} AS "
                         f"src WHERE {' AND '.join(where)} ORDER BY {', '.join(order)} "
                         f"LIMIT 1) AS {q(v.alias)} ON TRUE")

        def pick(v: ViewJoin, i: int) -> str:
            return f"{q(v.alias)}.{q('f' + str(i))}"

        return (f"SELECT {self._select_outputs(d, pick)} FROM {self.entity_relation} AS e "
                f"{' '.join(joins)}{self._order_by()}")


@dataclass
class LatestRows:
    """Latest row per entity key with ``start <= event_ts <= end``: what materialization loads."""

    source: SourceColumns
    join_keys: list[str]
    features: list[tuple[str, T.FeastType]]  # (logical feature name, dtype)
    start: datetime | None
    end: datetime

    def render(self, dialect: Dialect | str) -> str:
        d = Dialect.registry[dialect]() if isinstance(dialect, str) else dialect
        q = d.quote
        src = self.source
        zoned = _is_zoned(src, src.timestamp)
        cols = [f"{q(src.columns[k])} AS {q(k)}" for k in self.join_keys]
        for logical, dtype in self.features:
            raw = src.columns[logical]
            expr = q(raw)
            if not _same_type(src.arrow_types.get(raw), dtype):
                expr = d.cast(expr, dtype)
            cols.append(f"{expr} AS {q(logical)}")
        # Times as zone-less UTC: cheap to compare, and Arrow labels them UTC on the way out.
        cols.append(f"{d.as_utc(q(src.timestamp), zoned)} AS {EVENT_TS}")
        cols.append(f"{d.as_utc(q(src.created), _is_zoned(src, src.created))} AS {CREATED_TS}"
                    if src.created else f"CAST(NULL AS TIMESTAMP) AS {CREATED_TS}")
        rows = f"SELECT {', '.join(cols)} FROM {src.relation} AS src WHERE {self._where(d)}"
        keys = [q(k) for k in self.join_keys]
        outputs = keys + [q(f) for f, _ in self.features] + [EVENT_TS, CREATED_TS]
        if d.supports_arg_max:
            # One hash aggregation instead of a sort: the row with the greatest
            # (event_ts, created_ts) per key; a null created sorts below any value.
            fields = [f for f, _ in self.features] + [EVENT_TS, CREATED_TS]
            row = d.struct([(f, q(f)) for f in fields])
            order = d.recency_key(EVENT_TS, CREATED_TS if src.created else None)
            picked = ", ".join(f"__v.{q(f)}" for f in fields)
            return (f"SELECT {', '.join(keys)}, {picked} FROM (SELECT {', '.join(keys)}, "
                    f"arg_max({row}, {order}) AS __v FROM ({rows}) AS r "
                    f"GROUP BY {', '.join(keys)}) AS g")
        return (f"SELECT {', '.join(outputs)} FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY "
                f"{', '.join(keys)} ORDER BY {EVENT_TS} DESC, {CREATED_TS} DESC NULLS LAST) "
                f"AS __rn FROM ({rows}) AS r) AS ranked WHERE __rn = 1")

    def _where(self, d: Dialect) -> str:
        q, src = d.quote, self.source
        zoned = _is_zoned(src, src.timestamp)
        where = [f"{q(src.timestamp)} <= {d.timestamp_literal(self.end, zoned)}"]
        if self.start is not None:
            where.append(f"{q(src.timestamp)} >= {d.timestamp_literal(self.start, zoned)}")
        where += [f"{q(src.columns[k])} IS NOT NULL" for k in self.join_keys]
        return " AND ".join(where)

    def count_keys(self, dialect: Dialect | str) -> str:
        """How many distinct keys have a row in range: what a complete answer has."""
        d = Dialect.registry[dialect]() if isinstance(dialect, str) else dialect
        keys = ", ".join(d.quote(self.source.columns[k]) for k in self.join_keys)
        return (f"SELECT COUNT(*) FROM (SELECT DISTINCT {keys} FROM {self.source.relation} AS src "
                f"WHERE {self._where(d)}) AS k")


def _is_zoned(src: SourceColumns, column: str) -> bool:
    t = src.arrow_types.get(column)
    return t is not None and pa.types.is_timestamp(t) and t.tz is not None


def _same_type(arrow_type: pa.DataType | None, dtype: T.FeastType) -> bool:
    if arrow_type is None:
        return False
    if pa.types.is_timestamp(arrow_type) and dtype == T.UnixTimestamp:
        return True
    return arrow_type == dtype.to_arrow()


# -- PostgreSQL ------------------------------------------------------------------------------
class PostgresDialect(Dialect):
    """PostgreSQL: no ASOF join (the offline store picks ``lateral`` where indexes serve it,
    else ``sweep``); ``AT TIME ZONE 'UTC'`` turns a ``timestamptz`` into its UTC wall time
    and back, whatever the session's zone."""

    name = "postgres"

    def as_utc(self, expr: str, zoned: bool) -> str:
        if zoned:
            return f"({expr} AT TIME ZONE 'UTC')"
        return f"CAST({expr} AS TIMESTAMP)"

    def from_utc(self, expr: str, zoned: bool) -> str:
        return f"({expr} AT TIME ZONE 'UTC')" if zoned else expr

    def sql_type(self, dtype: T.FeastType) -> str:
        if isinstance(dtype, T.Array):
            return self.sql_type(dtype.base_type) + "[]"
        return {"Float64": "DOUBLE PRECISION", "String": "TEXT", "Bytes": "BYTEA",
                "UnixTimestamp": "TIMESTAMPTZ"}.get(dtype.name) or super().sql_type(dtype)


# -- Spark -----------------------------------------------------------------------------------
class SparkDialect(Dialect):
    """Spark SQL. Its ``TIMESTAMP_LTZ`` is an instant and compares as one; tiffin's sessions
    run with ``spark.sql.session.timeZone=UTC``, so it plays the part of the zone-less UTC
    timestamp here, and ``TIMESTAMP_NTZ`` columns (naive Parquet) are read as UTC wall times.
    Spark has no ASOF join in SQL: the store renders ``sweep`` (or ``window``)."""

    name = "spark"

    def quote(self, ident: str) -> str:
        return "`" + ident.replace("`", "``") + "`"

    def timestamp_literal(self, ts: datetime, zoned: bool) -> str:
        wall = ts.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
        # Typed literals that do not depend on spark.sql.timestampType.
        return f"TIMESTAMP_LTZ '{wall}+00:00'" if zoned else f"TIMESTAMP_NTZ '{wall}'"

    def as_utc(self, expr: str, zoned: bool) -> str:
        return expr if zoned else f"CAST({expr} AS TIMESTAMP_LTZ)"

    def minus_seconds(self, expr: str, seconds: float) -> str:
        return f"({expr} - INTERVAL '{round(seconds * 1_000_000)}' MICROSECOND)"

    def sql_type(self, dtype: T.FeastType) -> str:
        if isinstance(dtype, T.Array):
            return f"ARRAY<{self.sql_type(dtype.base_type)}>"
        return {"Int32": "INT", "Int64": "BIGINT", "Float32": "FLOAT", "Float64": "DOUBLE",
                "String": "STRING", "Bool": "BOOLEAN", "Bytes": "BINARY",
                "UnixTimestamp": "TIMESTAMP_LTZ"}[dtype.name]

    def struct(self, fields: list[tuple[str, str]]) -> str:
        def lit(name: str) -> str:
            return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return "named_struct(" + ", ".join(f"{lit(n)}, {e}" for n, e in fields) + ")"
