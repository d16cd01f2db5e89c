"""The Push API: fresh rows from applications into the online and/or offline store.

A push is checked whole before anything is written: every column a view reads
must be there, no column may be unknown to the source, and every value must
convert to its column's type. Bad input raises a RequestError and writes
nothing. Online writes keep the usual rule: an older event never overwrites a
newer one.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from tiffin.definitions import DataSource, FeatureView, PushSource
from tiffin.errors import PushSourceNotFoundError, RequestError, did_you_mean
from tiffin.types import TIMESTAMP, decimal_from_text

if TYPE_CHECKING:
    from tiffin.store import FeatureStore


class PushMode(enum.IntEnum):
    ONLINE = 1
    OFFLINE = 2
    ONLINE_AND_OFFLINE = 3

    @classmethod
    def parse(cls, value: Any) -> PushMode:
        """PushMode, its name in any case ("online_and_offline"), or its number."""
        if isinstance(value, PushMode):
            return value
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        if isinstance(value, int) and not isinstance(value, bool) and value in (1, 2, 3):
            return cls(value)
        raise RequestError(f"to={value!r} is not a push mode",
                           hint="use 'online', 'offline' or 'online_and_offline'")


def _cast(table: pa.Table, name: str, target: pa.DataType, what: str) -> pa.ChunkedArray:
    col = table.column(name)
    if col.type == target:
        return col
    try:
        if pa.types.is_timestamp(target):
            from tiffin.offline.base import utc_timestamps
            col = utc_timestamps(col, name)
            return col if target.tz else pc.cast(col, pa.timestamp(target.unit), safe=False)
        if pa.types.is_decimal(target) and (pa.types.is_floating(col.type)
                                            or pa.types.is_string(col.type)):
            # A float through its shortest text: 0.1 is 0.1, not the 0.1000000000000000055
            # the binary float holds; digits the decimal cannot hold fail the cast.
            return decimal_from_text(pc.cast(col, pa.string()), target)
        return pc.cast(col, target)  # safe: 1.5 -> int fails instead of truncating
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError) as e:
        raise RequestError(f"{what}: column {name!r} cannot be {target}: "
                           f"{str(e).splitlines()[0]}",
                           hint=f"send {target} values for {name!r}") from None


def online_rows(view: FeatureView, table: pa.Table, source: DataSource, what: str) -> pa.Table:
    """A pushed frame (source column names) as the online store's batch for ``view``."""
    from tiffin.offline.base import online_batch_schema

    raw = {v: k for k, v in source.field_mapping.items()}
    schema = online_batch_schema(view)
    ts_raw, created_raw = source.timestamp_field, source.created_timestamp_column
    cols = []
    for f in schema:
        if f.name == "__event_ts":
            cols.append(_cast(table, ts_raw, TIMESTAMP, what))
        elif f.name == "__created_ts":
            cols.append(_cast(table, created_raw, TIMESTAMP, what) if created_raw
                        and created_raw in table.column_names
                        else pa.nulls(table.num_rows, TIMESTAMP))
        else:
            cols.append(_cast(table, raw.get(f.name, f.name), f.type, what))
    # An online row needs its key and its event time: a null is bad input, caught here
    # before anything is written, not a store constraint failing halfway.
    for f, col in zip(schema, cols):
        if col.null_count and (f.name == "__event_ts" or f.name in view.join_keys):
            name = ts_raw if f.name == "__event_ts" else raw.get(f.name, f.name)
            row = col.is_null().to_pylist().index(True)
            raise RequestError(f"{what}: column {name!r} is null in row {row}",
                               hint=f"every row written online needs a {name!r}")
    return pa.Table.from_arrays(cols, schema=schema)


def required_columns(views: list[FeatureView], source: DataSource) -> list[str]:
    raw = {v: k for k, v in source.field_mapping.items()}
    names = [source.timestamp_field]
    for view in views:
        names += [raw.get(k, k) for k in view.join_keys]
        names += [raw.get(f.name, f.name) for f in view.features]
    return list(dict.fromkeys(names))


def _frame(df: Any, what: str) -> pa.Table:
    from tiffin.offline.base import to_arrow_table
    table = to_arrow_table(df, what)
    if table.num_rows == 0:
        raise RequestError(f"{what}: no rows to write")
    dupes = {c for c in table.column_names if table.column_names.count(c) > 1}
    if dupes:
        raise RequestError(f"{what}: duplicate column(s) {sorted(dupes)}")
    return table


def _check_columns(table: pa.Table, required: list[str], allowed: list[str], what: str) -> None:
    present = table.column_names
    missing = [c for c in required if c not in present]
    if missing:
        raise RequestError(f"{what}: missing column(s) {missing}",
                           hint=did_you_mean(missing[0], present) or f"got {present}")
    extra = [c for c in present if c not in allowed]
    if extra:
        raise RequestError(f"{what}: unknown column(s) {extra}",
                           hint=did_you_mean(extra[0], allowed) or f"expected {allowed}")


def _source_schema(store: FeatureStore, snap: Any, batch: DataSource) -> pa.Schema:
    """The batch source's columns, read once per registry version: asking the offline
    store costs I/O (a PostgreSQL connection, a Parquet footer) on every push otherwise.
    A registry change (a new snapshot) reads it again, so does a new source definition."""
    cache = store._push_schemas
    hit = cache.get(batch.name)
    if hit is not None and hit[0] is snap:
        return hit[1]
    schema = store.offline_store.source_schema(batch)
    cache[batch.name] = (snap, schema)
    return schema


def push(store: FeatureStore, push_source_name: str, df: Any, to: Any = PushMode.ONLINE,
         allow_registry_cache: bool = True) -> int:
    """Validate ``df`` against the push source and write it; returns the rows written."""
    mode = PushMode.parse(to)
    snap = store.registry.snapshot(allow_cache=allow_registry_cache)
    sources = [s for s in snap.list("data_sources") if isinstance(s, PushSource)]
    source = next((s for s in sources if s.name == push_source_name), None)
    if source is None:
        raise PushSourceNotFoundError(push_source_name, [s.name for s in sources],
                                      project=store.project)
    what = f"push to {push_source_name!r}"
    views = [v for v in snap.list("feature_views") if v.source.name == push_source_name]
    batch = source.batch
    table = _frame(df, what)
    schema = _source_schema(store, snap, batch)
    required = required_columns(views, batch)
    _check_columns(table, required, schema.names, what)

    online = [v for v in views if v.online] if mode != PushMode.OFFLINE else []
    # Convert everything first: a bad value in any column rejects the whole push.
    rows = {v.name: online_rows(v, table, batch, what) for v in online}
    offline = None
    if mode != PushMode.ONLINE:
        cols = [(_cast(table, f.name, f.type, what) if f.name in table.column_names
                 else pa.nulls(table.num_rows, f.type)) for f in schema]
        offline = pa.Table.from_arrays(cols, schema=pa.schema(
            [pa.field(f.name, f.type) for f in schema]))
    for view in online:
        store.online_store.write(view, rows[view.name].combine_chunks().to_batches()[0])
    if offline is not None:
        store.offline_store.write(batch, offline)
    return table.num_rows


def write_to_online_store(store: FeatureStore, feature_view_name: str, df: Any,
                          allow_registry_cache: bool = True) -> int:
    view = store.registry.get("feature_views", feature_view_name, allow_registry_cache)
    what = f"write to feature view {feature_view_name!r}"
    if not view.online:
        raise RequestError(f"feature view {feature_view_name!r} has online=False")
    batch = view.source.batch
    table = _frame(df, what)
    raw = {v: k for k, v in batch.field_mapping.items()}
    allowed = required_columns([view], batch) + [batch.created_timestamp_column] + \
        [raw.get(f.name, f.name) for f in view.schema]
    _check_columns(table, required_columns([view], batch), [c for c in allowed if c], what)
    rows = online_rows(view, table, batch, what)
    store.online_store.write(view, rows.combine_chunks().to_batches()[0])
    return table.num_rows
