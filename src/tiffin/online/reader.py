"""The online read path, once for every store: rows in, validated keys, statuses, ttl, response.

Statuses follow Feast's FieldStatus numbers. Unlike Feast's Python path, a
stored null is NULL_VALUE and a value older than its view's ttl comes back
null with OUTSIDE_MAX_AGE (the ttl is enforced on read, against the clock).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from operator import itemgetter
from typing import Any

import pyarrow as pa

from tiffin.errors import EntityDataFrameError, EntityValueError, RequestError
from tiffin.features import FeaturePlan
from tiffin.online.base import OnlineStore, PairRows, Rows
from tiffin.types import FeastType, from_micros

_TIME, _VALUES = itemgetter(0), itemgetter(1)  # of a PairRows row
MAX_KEYS_PER_READ = 1000  # keeps each store query's parameter list bounded


class FieldStatus(enum.IntEnum):
    INVALID = 0
    PRESENT = 1
    NULL_VALUE = 2
    NOT_FOUND = 3
    OUTSIDE_MAX_AGE = 4


PRESENT, NULL_VALUE, NOT_FOUND, OUTSIDE_MAX_AGE = (
    FieldStatus.PRESENT, FieldStatus.NULL_VALUE, FieldStatus.NOT_FOUND,
    FieldStatus.OUTSIDE_MAX_AGE)


class OnlineResponse:
    """Features for each requested entity row, with a status and event time per value.

    ``to_dict()`` gives ``{column: [values]}``: the entity columns first, then the
    features in the order requested. ``statuses`` gives a FieldStatus per value;
    it is computed on first access, so callers that only want values pay nothing.
    """

    def __init__(self, entity_columns: dict[str, list[Any]], values: dict[str, list[Any]],
                 times: dict[str, tuple[list[int | None], int | None]],
                 dtypes: dict[str, FeastType]):
        self._entities = entity_columns
        self._values = values
        # feature -> (event time per request row, None where no row; ttl cutoff or None).
        # The features of one view share one times list: per-view work is keyed by its id.
        self._times = times
        self._dtypes = dtypes
        self._statuses: dict[str, list[FieldStatus]] | None = None
        self._per_view: dict[int, tuple[list[str], int]] = {}

    @property
    def entity_columns(self) -> dict[str, list[Any]]:
        return self._entities

    @property
    def feature_columns(self) -> dict[str, list[Any]]:
        return self._values

    @property
    def feature_names(self) -> list[str]:
        return list(self._entities) + list(self._values)

    @property
    def statuses(self) -> dict[str, list[FieldStatus]]:
        if self._statuses is None:
            self._statuses = {}
            for name, (times, cutoff) in self._times.items():
                self._statuses[name] = [
                    NOT_FOUND if t is None else
                    OUTSIDE_MAX_AGE if cutoff is not None and t < cutoff else
                    NULL_VALUE if v is None else PRESENT
                    for t, v in zip(times, self._values[name])]
        return self._statuses

    def status_names(self, name: str) -> list[str]:
        """``statuses[name]`` as names ("PRESENT", ...), for JSON answers.

        Found / not found / too old is the same for every feature of a view, so it is
        computed once per view; a feature only pays again if it has a null value.
        The returned list may be shared between features: do not modify it.
        """
        times, cutoff = self._times[name]
        per_view = self._per_view.get(id(times))
        if per_view is None:
            if cutoff is None and None not in times:
                base = ["PRESENT"] * len(times)
            else:
                base = ["NOT_FOUND" if t is None else
                        "OUTSIDE_MAX_AGE" if cutoff is not None and t < cutoff else
                        "PRESENT" for t in times]
            per_view = self._per_view[id(times)] = (base, len(base) - base.count("PRESENT"))
        base, absent = per_view
        values = self._values[name]
        # Rows not found or too old have null values: if those are all the nulls (counted
        # in C), no value is a stored null and the view's statuses are the feature's.
        if values.count(None) == absent:
            return base
        return ["NULL_VALUE" if v is None and s == "PRESENT" else s for s, v in zip(base, values)]

    def _event_ts(self, name: str) -> list[int | None]:
        return self._times[name][0]

    def to_dict(self, include_event_timestamps: bool = False) -> dict[str, list[Any]]:
        out = {**self._entities, **self._values}
        if include_event_timestamps:
            for name in self._values:
                out[f"{name}__ts"] = [None if t is None else t // 1_000_000
                                      for t in self._event_ts(name)]
        return out

    def event_timestamps_us(self, name: str) -> list[int | None]:
        """Event times as epoch microseconds (None where no row was found); read only."""
        return self._event_ts(name)

    def event_timestamps(self, name: str) -> list[datetime | None]:
        """When each value's row happened (None where no row was found)."""
        return [None if t is None else from_micros(t) for t in self._event_ts(name)]

    def to_arrow(self, include_event_timestamps: bool = False) -> pa.Table:
        cols: dict[str, pa.Array] = {}
        for name, vals in self._entities.items():
            cols[name] = pa.array(vals)
        for name, vals in self._values.items():
            cols[name] = pa.array(vals, type=self._dtypes[name].to_arrow())
            if include_event_timestamps:
                cols[f"{name}__ts"] = pa.array(
                    self._event_ts(name), type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        return pa.table(cols)

    def to_df(self, include_event_timestamps: bool = False) -> Any:
        return self.to_arrow(include_event_timestamps).to_pandas()

    def to_polars(self, include_event_timestamps: bool = False) -> Any:
        from tiffin.frames import to_polars
        return to_polars(self.to_arrow(include_event_timestamps))


def entity_columns(entity_rows: Any, needed: Sequence[str], what: str = "join key",
                   optional: Mapping[str, Any] | frozenset[str] = frozenset()
                   ) -> tuple[dict[str, list], int]:
    """Rows as a list of dicts or a dict of lists (or a DataFrame) -> the needed columns,
    and those of ``optional`` the caller sent, in the caller's order."""
    if isinstance(entity_rows, Mapping):
        lengths = {k: len(v) for k, v in entity_rows.items()}
        if len(set(lengths.values())) > 1:
            raise RequestError(f"entity columns have different lengths: {lengths}")
        n = next(iter(lengths.values()), 0)
        for k in needed:
            if k not in entity_rows:
                raise _missing(k, list(entity_rows), what=what)
        # Entity columns come back in the caller's order.
        return {k: list(v) for k, v in entity_rows.items()
                if k in needed or k in optional}, n
    if type(entity_rows).__module__.split(".")[0] in ("pandas", "polars"):
        return entity_columns(entity_rows.to_dict(as_series=False) if hasattr(
            entity_rows, "to_arrow") else entity_rows.to_dict("list"), needed, what, optional)
    if not isinstance(entity_rows, Sequence) or isinstance(entity_rows, (str, bytes)):
        raise RequestError("entity_rows must be a list of dicts or a dict of lists, got "
                           f"{type(entity_rows).__name__}")
    first = entity_rows[0] if entity_rows and isinstance(entity_rows[0], Mapping) else {}
    # Optional columns are those of the first row (as the needed ones, every row must have
    # them then): a row missing one is reported, never given a made-up null.
    ordered = [k for k in first if k in needed or k in optional] + \
        [k for k in needed if k not in first]
    try:
        # The hot path (plain dicts, every key present) is one comprehension per column.
        cols = {k: [row[k] for row in entity_rows] for k in ordered}
    except (KeyError, TypeError):
        for i, row in enumerate(entity_rows):
            if not isinstance(row, Mapping):
                raise RequestError(f"entity row {i} is a {type(row).__name__}, not a dict"
                                   ) from None
            for k in ordered:
                if k not in row:
                    raise _missing(k, list(row), f" (entity row {i})", what) from None
        raise
    return cols, len(entity_rows)


def _missing(key: str, present: list[str], where: str = "", what: str = "join key"
             ) -> EntityDataFrameError:
    from tiffin.errors import did_you_mean
    return EntityDataFrameError(f"missing {what} {key!r}{where}",
                                hint=did_you_mean(key, present) or f"got columns {present}")


def _check_key_values(name: str, values: list[Any], dtype: FeastType) -> list[Any]:
    """Join-key values must have the key's type; numpy scalars are unwrapped, nothing coerced."""
    kind = dtype.name
    if kind in ("Int32", "Int64"):
        ok = int
    elif kind == "String":
        ok = str
    elif kind == "Bytes":
        ok = bytes
    else:
        ok = object
    if ok is not object and not set(map(type, values)).difference((ok, type(None))):
        return values  # the common case, checked in C
    bad = None
    for i, v in enumerate(values):
        if type(v) is ok or v is None:
            continue
        item = getattr(v, "item", None)  # numpy scalar
        if item is not None:
            v = values[i] = item()
            if type(v) is ok:
                continue
        if ok is object:
            continue
        bad = (i, v)
        break
    if bad is not None:
        i, v = bad
        raise EntityValueError(f"join key {name!r} is {kind}, but row {i} has "
                               f"{type(v).__name__} {v!r}",
                               hint=f"send {kind} values for {name!r}")
    return values


class _ReadPlan:
    """What a read needs from a FeaturePlan, computed once per plan (plans are cached per
    request shape), so a request pays only for its own keys and values."""

    def __init__(self, plan: FeaturePlan):
        self.entity_columns = plan.entity_columns
        # Other entities' join keys: returned when sent, checked against their type.
        self.optional = dict(plan.other_entity_columns)
        self.key_types: dict[str, FeastType | None] = dict(self.optional)
        self.views = []
        for v in plan.views:
            types = {f.name: f.dtype for f in v.view.entity_columns}
            for key, col in zip(v.join_keys, v.entity_columns):
                if self.key_types.get(col) is None:
                    self.key_types[col] = types[key]
            names = [f.name for f in v.features]
            ttl = v.view.ttl_seconds
            self.views.append((v.view, v.entity_columns, names,
                               round(ttl * 1_000_000) if ttl else None,
                               list(zip(v.output_names, [f.dtype for f in v.features]))))


def _read_plan(plan: FeaturePlan) -> _ReadPlan:
    cached = getattr(plan, "_read_plan", None)
    if cached is None:
        cached = plan._read_plan = _ReadPlan(plan)  # type: ignore[attr-defined]
    return cached


def read_online(store: OnlineStore, plan: FeaturePlan, entity_rows: Any,
                now: float | None = None) -> OnlineResponse:
    reads, finish = _begin(plan, entity_rows, now)
    return finish(store.read_many(reads) if reads else [])


async def read_online_async(store: OnlineStore, plan: FeaturePlan, entity_rows: Any,
                            now: float | None = None) -> OnlineResponse:
    """``read_online`` for an event loop: the store's reads never block it."""
    reads, finish = _begin(plan, entity_rows, now)
    if not reads:
        return finish([])
    if store.async_reads:
        return finish(await store.read_many_async(reads))
    # A store without an async path reads in a worker thread (the base class's default,
    # asked for here by name so a store that overrides read_many_async without declaring
    # async_reads still cannot block the loop).
    return finish(await OnlineStore.read_many_async(store, reads))


def _begin(plan: FeaturePlan, entity_rows: Any, now: float | None
           ) -> tuple[list[tuple[Any, list[tuple], list[str]]],
                      Callable[[list[Rows]], OnlineResponse]]:
    """Validate the request and list the store reads: (reads, finish(results) -> answer)."""
    rp = _read_plan(plan)
    cols, n = entity_columns(entity_rows, rp.entity_columns, optional=rp.optional)
    for name, col in cols.items():
        dtype = rp.key_types[name]
        if dtype is not None:
            _check_key_values(name, col, dtype)
    now_us = int((time.time() if now is None else now) * 1_000_000)
    # First the keys of every view, then one read_many for all of them, so a store that
    # can (Redis) answers the whole request in one round trip. Stores answer row for
    # row, so every key is sent as it is, repeats included; only null keys, which
    # match nothing, are left out.
    per_view, reads = [], []
    for view, key_names, names, ttl_us, outputs in rp.views:
        key_cols = [cols[c] for c in key_names]
        keys = list(zip(*key_cols))
        where = None
        if any(None in c for c in key_cols):
            where = [i for i, k in enumerate(keys) if None not in k]
            keys = [keys[i] for i in where]
        first = len(reads)
        for start in range(0, len(keys), MAX_KEYS_PER_READ):
            reads.append((view, keys[start:start + MAX_KEYS_PER_READ], names))
        per_view.append((where, first, len(reads), ttl_us, outputs, len(names)))
    return reads, partial(_finish, plan, entity_rows, cols, n, now_us, per_view)


def _finish(plan: FeaturePlan, entity_rows: Any, cols: dict[str, list[Any]], n: int,
            now_us: int, per_view: list[tuple], results: list[Rows]) -> OnlineResponse:
    by_output: dict[str, tuple[list[Any], tuple[list[int | None], int | None], FeastType]] = {}
    for where, first, last, ttl_us, outputs, n_names in per_view:
        parts = results[first:last]
        pairs = bool(parts) and isinstance(parts[0], PairRows)
        rows: Any = parts[0] if len(parts) == 1 else [row for part in parts for row in part]
        absent = (None, (None,) * n_names) if pairs else (None,) * (n_names + 1)
        if where is not None:  # null keys were not read: they have no row
            full: list[Any] = [None] * n
            for i, row in zip(where, rows):
                full[i] = row
            rows = full
        if None in rows:
            rows = [absent if r is None else r for r in rows]
        # Rows -> columns in C-level passes: the event times, then each feature.
        if pairs:
            times = list(map(_TIME, rows))
        else:
            columns = list(zip(*rows)) if rows else [()] * (n_names + 1)
            times = list(columns[0])
        cutoff = now_us - ttl_us if ttl_us else None
        if cutoff is not None:
            found = [t for t in times if t is not None] if None in times else times
            if not found or min(found) >= cutoff:
                cutoff = None  # no row is too old: for this answer, as if there were no ttl
            else:
                # Values of rows older than the ttl read as absent.
                rows = [absent if t is not None and t < cutoff else r
                        for t, r in zip(times, rows)]
                if not pairs:
                    columns = list(zip(*rows))
        if pairs:
            features = list(zip(*map(_VALUES, rows))) if rows else [()] * n_names
        else:
            features = columns[1:]
        stamps = (times, cutoff)
        for (out, dtype), column in zip(outputs, features):
            by_output[out] = (list(column), stamps, dtype)
    if plan.odfvs:
        from tiffin.transform import on_demand_online
        request, n = entity_columns(entity_rows, plan.request_fields, what="request field")
        computed = on_demand_online(plan, {o: v[0] for o, v in by_output.items()}, request, n)
        for f_out, values_ in computed.items():
            # Computed values have no stored row: PRESENT or NULL_VALUE, no event time.
            by_output[f_out] = (values_, ([0] * len(values_), None), None)
        for req in plan.odfvs:
            for f, out in zip(req.features, req.output_names):
                by_output[out] = (*by_output[out][:2], f.dtype)
    # Outputs in request order, whatever view they came from.
    values = {out: by_output[out][0] for out in plan.output_names}
    times = {out: by_output[out][1] for out in plan.output_names}
    dtypes = {out: by_output[out][2] for out in plan.output_names}
    return OnlineResponse(cols, values, times, dtypes)
