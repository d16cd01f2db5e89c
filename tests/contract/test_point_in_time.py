"""Point-in-time contract for ``get_historical_features``, run on every offline backend.

For every entity row and every requested view the result holds the newest source row with
the same join key(s) and ``event_ts <= row_ts`` (inclusive) and, when the view has a ttl,
``event_ts >= row_ts - ttl`` (inclusive); ties on event_ts go to the largest created
timestamp (a set created timestamp beats a null one); no match gives nulls. Exactly one
output row per input row, in input order; columns are the entity_df's columns in their
order, then the features in request order; the timestamp column comes back as UTC.

Expected results are written out by hand, never computed by a second implementation.
"""

from __future__ import annotations

import math
import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tiffin import Entity, FeatureService, FeatureView, Field, ValueType
from tiffin.errors import (
    EntityDataFrameError,
    FeatureNameCollisionError,
    FeatureNotFoundError,
    FeatureViewNotFoundError,
    RequestError,
)
from tiffin.types import Bool, Float32, Float64, Int32, Int64, String

UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")


def at(clock: str, day: int = 1) -> datetime:
    """``at("10:00:00.000001")``: that UTC time on 2026-01-<day>."""
    return datetime.fromisoformat(f"2026-01-{day:02d} {clock}").replace(tzinfo=UTC)


# -- definitions ---------------------------------------------------------------------------
def driver() -> Entity:
    return Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)


def customer() -> Entity:
    return Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)


DRIVER_STATS = pa.schema([("driver_id", pa.int64()), ("event_timestamp", TS),
                          ("created", TS), ("conv_rate", pa.float64()), ("trips", pa.int64())])


def driver_stats_rows(rows: list[tuple]) -> pa.Table:
    """Rows of (driver_id, event_ts, created_ts, conv_rate, trips)."""
    return pa.Table.from_pylist([dict(zip(DRIVER_STATS.names, r)) for r in rows],
                                schema=DRIVER_STATS)


def driver_stats_view(backend: Any, rows: list[tuple], *, ttl: timedelta | None = None,
                      name: str = "driver_stats") -> FeatureView:
    src = backend.make_source(name, driver_stats_rows(rows), created_timestamp_column="created")
    return FeatureView(name=name, entities=[driver()], ttl=ttl,
                       schema=[Field(name="conv_rate", dtype=Float64),
                               Field(name="trips", dtype=Int64)], source=src)


def driver_entity_df(rows: list[tuple], **extra: list[Any]) -> pa.Table:
    """entity_df with driver_id and event_timestamp (UTC) from (driver_id, ts) rows."""
    cols = {"driver_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_timestamp": pa.array([r[1] for r in rows], TS)}
    cols.update({k: pa.array(v) for k, v in extra.items()})
    return pa.table(cols)


# -- comparing results ---------------------------------------------------------------------
def _norm(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return "NaN"
    return v


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    return [{k: _norm(v) for k, v in r.items()} for r in table.to_pylist()]


def assert_result(job: Any, expected: list[dict[str, Any]]) -> pa.Table:
    """The job's Arrow result has exactly the expected columns (in order) and rows (in order).

    Values compare as Python objects (None for null, "NaN" for NaN) and must have the
    expected Python type too: an int feature returned as 7.0 or a bool as 1 is a failure,
    and so is a naive datetime where an aware one is expected.
    """
    table = job.to_arrow()
    assert table.column_names == list(expected[0])
    got = rows_of(table)
    assert len(got) == len(expected), f"{len(got)} rows, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        e = {k: _norm(v) for k, v in e.items()}
        assert g == e, f"row {i}"
        for k, v in e.items():
            if v is not None:
                assert type(g[k]) is type(v), f"row {i}, {k!r}: {g[k]!r} is not a {type(v)}"
    return table


def conv_rows(entity_rows: list[tuple]) -> list[dict[str, Any]]:
    """Expected rows for a driver_stats:conv_rate request from (driver_id, ts, conv_rate)."""
    return [{"driver_id": d, "event_timestamp": t, "conv_rate": c} for d, t, c in entity_rows]


def run_conv(make_store: Any, hist: Any, backend: Any, source_rows: list[tuple],
             cases: list[tuple], ttl: timedelta | None = None) -> pa.Table:
    """Request driver_stats:conv_rate for (driver_id, ts, expected conv_rate) cases."""
    store = make_store(driver(), driver_stats_view(backend, source_rows, ttl=ttl))
    job = hist(store, driver_entity_df([(d, t) for d, t, _ in cases]),
               ["driver_stats:conv_rate"])
    return assert_result(job, conv_rows(cases))


# -- the time window -----------------------------------------------------------------------
def test_match_is_inclusive_at_the_row_timestamp(offline_backend, make_store, hist):
    source = [(1, at("10:00"), at("10:00"), 1.5, 10),
              (1, at("11:00"), at("11:00"), 2.5, 20)]
    run_conv(make_store, hist, offline_backend, source, [
        (1, at("09:59:59.999999"), None),  # before any data
        (1, at("10:00"), 1.5),  # exactly at the event time: included
        (1, at("10:59:59.999999"), 1.5),
        (1, at("11:00"), 2.5),
        (1, at("11:00:00.000001"), 2.5),
    ])


TTL_CASES = {
    "1h": (timedelta(hours=1),
           [(1, at("08:00"), at("08:00"), 0.5, 1), (1, at("10:00"), at("10:00"), 1.5, 2)],
           [(1, at("09:00"), 0.5),  # row_ts - ttl == 08:00: included
            (1, at("09:00:00.000001"), None),  # one microsecond past the ttl
            (1, at("10:30"), 1.5),
            (1, at("11:00"), 1.5),  # boundary again, on the newer row
            (1, at("11:00:00.000001"), None),
            (1, at("11:00:01"), None),
            (1, at("07:59:59"), None)]),
    "1s": (timedelta(seconds=1),
           [(1, at("10:00"), at("10:00"), 1.5, 1)],
           [(1, at("10:00:00.500000"), 1.5),
            (1, at("10:00:01"), 1.5),
            (1, at("10:00:01.000001"), None),
            (1, at("10:00:02"), None)]),
    # a ttl with a microsecond part is honoured to the microsecond
    "1.000001s": (timedelta(seconds=1, microseconds=1),
                  [(1, at("10:00"), at("10:00"), 1.5, 1)],
                  [(1, at("10:00:01"), 1.5),
                   (1, at("10:00:01.000001"), 1.5),
                   (1, at("10:00:01.000002"), None)]),
    "1d": (timedelta(days=1),
           [(1, at("10:00"), at("10:00"), 1.5, 1)],
           [(1, at("10:00", day=2), 1.5),
            (1, at("10:00:00.000001", day=2), None),
            (1, at("09:59:59", day=2), 1.5)]),
}


@pytest.mark.parametrize("case", list(TTL_CASES))
def test_ttl_boundary_is_inclusive(offline_backend, make_store, hist, case):
    ttl, source, cases = TTL_CASES[case]
    run_conv(make_store, hist, offline_backend, source, cases, ttl=ttl)


@pytest.mark.parametrize("ttl", [None, timedelta(0)], ids=["None", "zero"])
def test_no_ttl_means_unlimited_lookback(offline_backend, make_store, hist, ttl):
    old = datetime(2001, 3, 4, 5, 6, 7, tzinfo=UTC)
    source = [(1, old, old, 1.5, 1)]
    run_conv(make_store, hist, offline_backend, source, [
        (1, at("10:00"), 1.5),
        (1, datetime(2001, 3, 4, 5, 6, 7, tzinfo=UTC), 1.5),
        (1, datetime(2001, 3, 4, 5, 6, 6, 999999, tzinfo=UTC), None),
    ], ttl=ttl)


def test_views_with_different_ttls_in_one_request(offline_backend, make_store, hist):
    b = offline_backend
    short = driver_stats_view(b, [(1, at("10:00"), at("10:00"), 1.5, 1)],
                              ttl=timedelta(minutes=30), name="short")
    forever = driver_stats_view(b, [(1, at("10:00"), at("10:00"), 2.5, 2)], name="forever")
    store = make_store(driver(), short, forever)
    job = hist(store, driver_entity_df([(1, at("10:30")), (1, at("10:30:01"))]),
               ["short:conv_rate", "forever:trips"])
    assert_result(job, [
        {"driver_id": 1, "event_timestamp": at("10:30"), "conv_rate": 1.5, "trips": 2},
        {"driver_id": 1, "event_timestamp": at("10:30:01"), "conv_rate": None, "trips": 2},
    ])


# -- ties ------------------------------------------------------------------------------------
TIE_CASES = {
    # same event time: the largest created timestamp wins, wherever it sits in the file
    "largest_created_wins": (None,
                             [(1, at("10:00"), at("10:05"), 1.5, 1),
                              (1, at("10:00"), at("10:10"), 2.5, 2),
                              (1, at("10:00"), at("10:01"), 3.5, 3)],
                             [(1, at("12:00"), 2.5)]),
    # a set created timestamp beats a null one, in either file order
    "set_created_beats_null": (None,
                               [(1, at("10:00"), None, 1.5, 1),
                                (1, at("10:00"), at("09:00"), 2.5, 2)],
                               [(1, at("12:00"), 2.5)]),
    "set_created_beats_null_reversed": (None,
                                        [(1, at("10:00"), at("09:00"), 2.5, 2),
                                         (1, at("10:00"), None, 1.5, 1)],
                                        [(1, at("12:00"), 2.5)]),
    # the created timestamp only breaks ties: a newer event time always wins
    "event_time_beats_created": (None,
                                 [(1, at("10:00"), at("12:00"), 1.5, 1),
                                  (1, at("10:30"), at("10:30"), 2.5, 2)],
                                 [(1, at("10:15"), 1.5), (1, at("11:00"), 2.5)]),
    # fully identical rows still give one output row per entity row
    "identical_rows": (None,
                       [(1, at("10:00"), at("10:00"), 1.5, 1),
                        (1, at("10:00"), at("10:00"), 1.5, 1)],
                       [(1, at("10:00"), 1.5), (1, at("11:00"), 1.5)]),
    # ties inside a ttl window, with a second key that must not interfere
    "tie_within_ttl": (timedelta(hours=1),
                       [(1, at("10:00"), at("10:20"), 1.5, 1),
                        (1, at("10:00"), at("10:40"), 2.5, 2),
                        (2, at("10:00"), at("11:00"), 9.5, 9),
                        (1, at("08:00"), at("23:00"), 0.5, 0)],
                       [(1, at("11:00"), 2.5), (2, at("11:00"), 9.5),
                        (1, at("11:00:01"), None)]),
}


@pytest.mark.parametrize("case", list(TIE_CASES))
def test_ties_go_to_the_largest_created_timestamp(offline_backend, make_store, hist, case):
    ttl, source, cases = TIE_CASES[case]
    run_conv(make_store, hist, offline_backend, source, cases, ttl=ttl)


# -- no match --------------------------------------------------------------------------------
def test_rows_without_a_match_get_nulls(offline_backend, make_store, hist):
    source = [(1, at("10:00"), at("10:00"), 1.5, 10), (2, at("10:00"), at("10:00"), 2.5, 20),
              (3, None, at("10:00"), 3.5, 30)]  # a source row without an event time
    store = make_store(driver(), driver_stats_view(offline_backend, source))
    entity = driver_entity_df([(999, at("12:00")),  # entity absent from the source
                               (3, at("12:00")),  # its only row has no event time
                               (1, at("09:00")),  # before any data for this key
                               (None, at("12:00")),  # null key matches nothing
                               (1, None),  # no row timestamp: no match, row still kept
                               (2, at("12:00"))])
    job = hist(store, entity, ["driver_stats:conv_rate", "driver_stats:trips"])
    assert_result(job, [
        {"driver_id": 999, "event_timestamp": at("12:00"), "conv_rate": None, "trips": None},
        {"driver_id": 3, "event_timestamp": at("12:00"), "conv_rate": None, "trips": None},
        {"driver_id": 1, "event_timestamp": at("09:00"), "conv_rate": None, "trips": None},
        {"driver_id": None, "event_timestamp": at("12:00"), "conv_rate": None, "trips": None},
        {"driver_id": 1, "event_timestamp": None, "conv_rate": None, "trips": None},
        {"driver_id": 2, "event_timestamp": at("12:00"), "conv_rate": 2.5, "trips": 20},
    ])


# -- rows and columns ------------------------------------------------------------------------
ORDER_SOURCE = [(1, at("10:00"), at("10:00"), 1.5, 10), (1, at("12:00"), at("12:00"), 2.5, 20),
                (2, at("09:00"), at("09:00"), 5.5, 50), (2, at("11:00"), at("11:00"), 6.5, 60)]
ORDER_CASES = [(2, at("11:30"), 6.5), (1, at("10:30"), 1.5), (2, at("10:00"), 5.5),
               (1, at("12:30"), 2.5), (2, at("11:30"), 6.5), (1, at("10:30"), 1.5),
               (1, at("09:00"), None)]


def test_one_row_per_input_row_in_input_order_duplicates_kept(offline_backend, make_store,
                                                              hist):
    run_conv(make_store, hist, offline_backend, ORDER_SOURCE, ORDER_CASES)


def test_order_kept_for_a_larger_entity_df(offline_backend, make_store, hist, tmp_path):
    """3,500 rows: enough for engines to split the work; ``row`` numbers the input."""
    store = make_store(driver(), driver_stats_view(offline_backend, ORDER_SOURCE))
    n = 500 * len(ORDER_CASES)
    cases = [ORDER_CASES[i % len(ORDER_CASES)] for i in range(n)]
    entity = driver_entity_df([(d, t) for d, t, _ in cases], row=list(range(n)))
    job = hist(store, entity, ["driver_stats:conv_rate"])
    expected = [{"driver_id": d, "event_timestamp": t, "row": i, "conv_rate": c}
                for i, (d, t, c) in enumerate(cases)]
    table = assert_result(job, expected)

    # streaming and persisting give the same table
    batches = list(job.to_arrow_batches(batch_rows=1000))
    assert len(batches) > 1 and all(b.num_rows <= 1000 for b in batches)
    assert pa.Table.from_batches(batches, schema=table.schema).equals(table)
    path = tmp_path / "out" / "training.parquet"
    job.persist(str(path))
    written = pq.read_table(path)
    assert written.schema.remove_metadata().equals(table.schema.remove_metadata())
    assert written.to_pylist() == table.to_pylist()


def test_persist_refuses_to_overwrite(offline_backend, make_store, hist, tmp_path):
    store = make_store(driver(), driver_stats_view(offline_backend, ORDER_SOURCE))
    job = hist(store, driver_entity_df([(1, at("10:30"))]), ["driver_stats:trips"])
    path = tmp_path / "training.parquet"
    job.persist(str(path))
    with pytest.raises(RequestError):
        job.persist(str(path))
    job.persist(str(path), allow_overwrite=True)
    assert pq.read_table(path).to_pylist() == job.to_arrow().to_pylist() == [
        {"driver_id": 1, "event_timestamp": at("10:30"), "trips": 10}]


def test_columns_are_entity_columns_then_features_in_request_order(offline_backend,
                                                                    make_store, hist):
    store = make_store(driver(), driver_stats_view(offline_backend, ORDER_SOURCE))
    entity = pa.table({"label": pa.array([True, False]),
                       "event_timestamp": pa.array([at("10:30"), at("11:30")], TS),
                       "note": pa.array(["a", None]),
                       "driver_id": pa.array([1, 2], pa.int64())})
    job = hist(store, entity, ["driver_stats:trips", "driver_stats:conv_rate"])
    assert_result(job, [
        {"label": True, "event_timestamp": at("10:30"), "note": "a", "driver_id": 1,
         "trips": 10, "conv_rate": 1.5},
        {"label": False, "event_timestamp": at("11:30"), "note": None, "driver_id": 2,
         "trips": 60, "conv_rate": 6.5},
    ])


def test_full_feature_names(offline_backend, make_store, hist):
    store = make_store(driver(), driver_stats_view(offline_backend, ORDER_SOURCE))
    job = hist(store, driver_entity_df([(2, at("10:00"))]),
               ["driver_stats:conv_rate", "driver_stats:trips"], full_feature_names=True)
    assert_result(job, [{"driver_id": 2, "event_timestamp": at("10:00"),
                         "driver_stats__conv_rate": 5.5, "driver_stats__trips": 50}])


def test_same_feature_name_from_two_views(offline_backend, make_store, hist):
    b = offline_backend
    store = make_store(driver(),
                       driver_stats_view(b, [(1, at("10:00"), at("10:00"), 1.5, 1)], name="a"),
                       driver_stats_view(b, [(1, at("10:00"), at("10:00"), 2.5, 2)], name="b"))
    entity = driver_entity_df([(1, at("11:00"))])
    with pytest.raises(FeatureNameCollisionError) as e:
        hist(store, entity, ["a:conv_rate", "b:conv_rate"])
    assert isinstance(e.value, ValueError)
    assert "conv_rate" in str(e.value)
    job = hist(store, entity, ["a:conv_rate", "b:conv_rate"], full_feature_names=True)
    assert_result(job, [{"driver_id": 1, "event_timestamp": at("11:00"),
                         "a__conv_rate": 1.5, "b__conv_rate": 2.5}])


# -- timestamps ------------------------------------------------------------------------------
@pytest.fixture
def local_time_is_not_utc():
    """Run with the process's local zone far from UTC, so "naive means local" bugs show."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Kiritimati"  # UTC+14
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def _entity_pandas(tz: str | None, unit: str = "ns") -> pd.DataFrame:
    utc = pd.to_datetime(["2026-01-01 09:59:59", "2026-01-01 10:59:59",
                          "2026-01-01 11:00:00"], utc=True).as_unit(unit)
    ts = utc.tz_localize(None) if tz is None else utc.tz_convert(tz)
    return pd.DataFrame({"driver_id": [1, 1, 1], "event_timestamp": ts})


ENTITY_TIMESTAMPS = {
    "pandas_naive_is_utc": lambda: _entity_pandas(None),
    "pandas_utc": lambda: _entity_pandas("UTC"),
    "pandas_new_york": lambda: _entity_pandas("America/New_York"),
    "arrow_naive_seconds": lambda: pa.Table.from_pandas(_entity_pandas(None, "s"),
                                                        preserve_index=False),
    "arrow_new_york_ms": lambda: pa.Table.from_pandas(_entity_pandas("America/New_York", "ms"),
                                                      preserve_index=False),
}


@pytest.mark.parametrize("kind", list(ENTITY_TIMESTAMPS))
def test_entity_timestamps_in_any_zone_are_the_same_instant(offline_backend, make_store,
                                                            hist, kind, local_time_is_not_utc):
    source = [(1, at("10:00"), at("10:00"), 1.5, 1), (1, at("11:00"), at("11:00"), 2.5, 2)]
    store = make_store(driver(), driver_stats_view(offline_backend, source))
    job = hist(store, ENTITY_TIMESTAMPS[kind](), ["driver_stats:conv_rate"])
    table = assert_result(job, conv_rows([(1, at("09:59:59"), None),
                                          (1, at("10:59:59"), 1.5),
                                          (1, at("11:00"), 2.5)]))
    assert table.schema.field("event_timestamp").type == TS


SOURCE_TIMESTAMP_TYPES = {
    "naive_us_is_utc": pa.timestamp("us"),
    "utc_us": pa.timestamp("us", tz="UTC"),
    "utc_ns": pa.timestamp("ns", tz="UTC"),
    "new_york_us": pa.timestamp("us", tz="America/New_York"),
}


@pytest.mark.parametrize("kind", list(SOURCE_TIMESTAMP_TYPES))
def test_source_timestamps_in_any_zone(offline_backend, make_store, hist, kind,
                                       local_time_is_not_utc):
    ts_type = SOURCE_TIMESTAMP_TYPES[kind]

    def col(values: list[datetime]) -> pa.Array:
        arr = pa.array(values, TS)
        if ts_type.tz is None:  # naive source columns hold UTC wall-clock times
            return arr.cast(pa.timestamp("us")).cast(ts_type)
        return arr.cast(ts_type)

    events = [at("10:00"), at("10:00"), at("11:00"), at("10:00")]
    created = [at("10:00"), at("10:01"), at("11:00"), at("10:00")]
    table = pa.table({"driver_id": pa.array([1, 1, 1, 2], pa.int64()),
                      "event_timestamp": col(events), "created": col(created),
                      "conv_rate": pa.array([1.5, 1.75, 2.5, 3.5]),
                      "trips": pa.array([1, 2, 3, 4], pa.int64())})
    src = offline_backend.make_source("stats", table, created_timestamp_column="created")
    view = FeatureView(name="driver_stats", entities=[driver()], ttl=timedelta(hours=1),
                       schema=[Field(name="conv_rate", dtype=Float64)], source=src)
    store = make_store(driver(), view)
    cases = [(1, at("09:59:59"), None), (1, at("10:00"), 1.75), (1, at("10:59:59"), 1.75),
             (1, at("11:00"), 2.5), (1, at("12:00"), 2.5), (1, at("12:00:01"), None),
             (2, at("11:00"), 3.5), (2, at("11:00:01"), None)]
    job = hist(store, driver_entity_df([(d, t) for d, t, _ in cases]),
               ["driver_stats:conv_rate"])
    assert_result(job, conv_rows(cases))


@pytest.mark.parametrize("ts_type", [TS, pa.timestamp("us")], ids=["utc", "naive"])
def test_timestamp_column_found_by_type(offline_backend, make_store, hist, ts_type):
    """Without an event_timestamp column, the one datetime column is the row timestamp."""
    store = make_store(driver(), driver_stats_view(offline_backend, ORDER_SOURCE))
    entity = pa.table({"driver_id": pa.array([1, 2], pa.int64()),
                       "request_time": pa.array([at("10:00"), at("09:00")], TS).cast(ts_type),
                       "label": pa.array(["x", "y"])})
    job = hist(store, entity, ["driver_stats:trips"])
    table = assert_result(job, [
        {"driver_id": 1, "request_time": at("10:00"), "label": "x", "trips": 10},
        {"driver_id": 2, "request_time": at("09:00"), "label": "y", "trips": 50},
    ])
    assert table.schema.field("request_time").type == TS


@pytest.mark.parametrize("signup_type", [TS, pa.timestamp("us")], ids=["utc", "naive"])
def test_event_timestamp_wins_over_other_datetime_columns(offline_backend, make_store, hist,
                                                          signup_type):
    """Other datetime columns are passed through untouched (a naive one stays naive)."""
    store = make_store(driver(), driver_stats_view(offline_backend, ORDER_SOURCE))
    signup = pa.array([at("12:30")], TS).cast(signup_type)
    entity = pa.table({"driver_id": pa.array([1], pa.int64()), "signup": signup,
                       "event_timestamp": pa.array([at("10:00")], TS)})
    table = assert_result(hist(store, entity, ["driver_stats:trips"]), [
        {"driver_id": 1, "signup": signup[0].as_py(), "event_timestamp": at("10:00"),
         "trips": 10}])
    assert table.schema.field("signup").type == signup_type


# -- several views and entities ------------------------------------------------------------
def _customer_view(backend: Any) -> FeatureView:
    table = pa.table({
        "customer_id": pa.array([100, 100, 200], pa.int64()),
        "event_timestamp": pa.array([at("08:00"), at("11:00"), at("09:00")], TS),
        "spend": pa.array([10.5, 20.5, 30.5]),
        "tier": pa.array(["gold", "silver", None]),
    })
    src = backend.make_source("customer_profile", table)
    return FeatureView(name="customer_profile", entities=[customer()], ttl=None,
                       schema=[Field(name="spend", dtype=Float64),
                               Field(name="tier", dtype=String)], source=src)


def _driver_view_1h(backend: Any) -> FeatureView:
    return driver_stats_view(backend, [(1, at("10:00"), at("10:00"), 1.5, 10),
                                       (2, at("10:00"), at("10:00"), 2.5, 20)],
                             ttl=timedelta(hours=1))


def _two_key_entity_df(rows: list[tuple]) -> pa.Table:
    return pa.table({"driver_id": pa.array([r[0] for r in rows], pa.int64()),
                     "customer_id": pa.array([r[1] for r in rows], pa.int64()),
                     "event_timestamp": pa.array([r[2] for r in rows], TS)})


def test_views_keyed_by_different_entities(offline_backend, make_store, hist):
    b = offline_backend
    store = make_store(driver(), customer(), _driver_view_1h(b), _customer_view(b))
    entity = _two_key_entity_df([(1, 100, at("10:30")), (2, 200, at("11:30")),
                                 (1, 200, at("08:30")), (2, 100, at("11:00"))])
    job = hist(store, entity,
               ["customer_profile:spend", "driver_stats:conv_rate", "customer_profile:tier"])
    assert_result(job, [
        {"driver_id": 1, "customer_id": 100, "event_timestamp": at("10:30"),
         "spend": 10.5, "conv_rate": 1.5, "tier": "gold"},
        {"driver_id": 2, "customer_id": 200, "event_timestamp": at("11:30"),
         "spend": 30.5, "conv_rate": None, "tier": None},
        {"driver_id": 1, "customer_id": 200, "event_timestamp": at("08:30"),
         "spend": None, "conv_rate": None, "tier": None},
        {"driver_id": 2, "customer_id": 100, "event_timestamp": at("11:00"),
         "spend": 20.5, "conv_rate": 2.5, "tier": "silver"},
    ])


def test_view_keyed_by_two_entities(offline_backend, make_store, hist):
    b = offline_backend
    table = pa.table({
        "driver_id": pa.array([1, 1, 1, 2], pa.int64()),
        "customer_id": pa.array([100, 100, 200, 100], pa.int64()),
        "event_timestamp": pa.array([at("09:00"), at("11:00"), at("09:00"), at("10:00")], TS),
        "orders": pa.array([3, 4, 5, 6], pa.int64()),
    })
    pair = FeatureView(name="driver_customer", entities=[driver(), customer()], ttl=None,
                       schema=[Field(name="orders", dtype=Int64)],
                       source=b.make_source("driver_customer", table))
    store = make_store(driver(), customer(), pair, _driver_view_1h(b))
    entity = _two_key_entity_df([(1, 100, at("10:00")), (1, 100, at("11:00")),
                                 (1, 200, at("12:00")), (2, 200, at("12:00")),
                                 (2, 100, at("10:30")), (2, 100, at("09:00"))])
    job = hist(store, entity, ["driver_customer:orders", "driver_stats:conv_rate"])
    assert_result(job, [
        {"driver_id": 1, "customer_id": 100, "event_timestamp": at("10:00"),
         "orders": 3, "conv_rate": 1.5},
        {"driver_id": 1, "customer_id": 100, "event_timestamp": at("11:00"),
         "orders": 4, "conv_rate": 1.5},
        {"driver_id": 1, "customer_id": 200, "event_timestamp": at("12:00"),
         "orders": 5, "conv_rate": None},
        {"driver_id": 2, "customer_id": 200, "event_timestamp": at("12:00"),
         "orders": None, "conv_rate": None},
        {"driver_id": 2, "customer_id": 100, "event_timestamp": at("10:30"),
         "orders": 6, "conv_rate": 2.5},
        {"driver_id": 2, "customer_id": 100, "event_timestamp": at("09:00"),
         "orders": None, "conv_rate": None},
    ])


def test_field_mapping_renames_features_and_join_keys(offline_backend, make_store, hist):
    table = pa.table({
        "drv": pa.array([1, 1, 2], pa.int64()),
        "ts": pa.array([at("10:00"), at("10:00"), at("10:00")], TS),
        "written_at": pa.array([at("10:00"), at("10:05"), at("10:00")], TS),
        "rate_raw": pa.array([1.5, 2.5, 3.5]),
        "trips": pa.array([10, 20, 30], pa.int64()),
    })
    src = offline_backend.make_source(
        "renamed", table, timestamp_field="ts", created_timestamp_column="written_at",
        field_mapping={"drv": "driver_id", "rate_raw": "conv_rate"})
    view = FeatureView(name="driver_stats", entities=[driver()], ttl=None,
                       schema=[Field(name="conv_rate", dtype=Float64),
                               Field(name="trips", dtype=Int64)], source=src)
    store = make_store(driver(), view)
    job = hist(store, driver_entity_df([(1, at("11:00")), (2, at("11:00")), (1, at("09:00"))]),
               ["driver_stats:conv_rate", "driver_stats:trips"])
    assert_result(job, [
        {"driver_id": 1, "event_timestamp": at("11:00"), "conv_rate": 2.5, "trips": 20},
        {"driver_id": 2, "event_timestamp": at("11:00"), "conv_rate": 3.5, "trips": 30},
        {"driver_id": 1, "event_timestamp": at("09:00"), "conv_rate": None, "trips": None},
    ])


# -- inputs ----------------------------------------------------------------------------------
def _as_pandas(table: pa.Table, tmp_path: Any) -> Any:
    return table.to_pandas()


def _as_parquet_str(table: pa.Table, tmp_path: Any) -> Any:
    pq.write_table(table, tmp_path / "entity.parquet")
    return str(tmp_path / "entity.parquet")


def _as_parquet_path(table: pa.Table, tmp_path: Any) -> Any:
    pq.write_table(table, tmp_path / "entity.parquet")
    return tmp_path / "entity.parquet"


def _as_pandas_odd_index(table: pa.Table, tmp_path: Any) -> Any:
    df = table.to_pandas()
    df.index = [7, 3, 9, 1]  # a filtered/shuffled frame: its index is not the row order
    return df


ENTITY_FORMATS = {"arrow": lambda t, p: t, "pandas": _as_pandas,
                  "pandas_odd_index": _as_pandas_odd_index, "parquet_str": _as_parquet_str,
                  "parquet_pathlib": _as_parquet_path}


@pytest.mark.parametrize("fmt", list(ENTITY_FORMATS))
def test_entity_df_formats(offline_backend, make_store, hist, tmp_path, fmt):
    store = make_store(driver(), driver_stats_view(offline_backend, ORDER_SOURCE))
    cases = ORDER_CASES[:4]
    entity = ENTITY_FORMATS[fmt](driver_entity_df([(d, t) for d, t, _ in cases]), tmp_path)
    job = hist(store, entity, ["driver_stats:conv_rate"])
    assert_result(job, conv_rows(cases))
    df = job.to_df()
    assert list(df.columns) == ["driver_id", "event_timestamp", "conv_rate"]
    assert str(df["event_timestamp"].dt.tz) == "UTC"
    assert df["conv_rate"].tolist() == [6.5, 1.5, 5.5, 2.5]


def test_int_features_with_nulls_stay_nullable_ints(offline_backend, make_store, hist):
    source = [(1, at("10:00"), at("10:00"), 1.5, 7), (1, at("11:00"), at("11:00"), 2.5, None),
              (2, at("10:00"), at("10:00"), None, None),
              (4, at("10:00"), at("10:00"), float("nan"), 4)]
    store = make_store(driver(), driver_stats_view(offline_backend, source))
    entity = driver_entity_df([(1, at("10:30")), (1, at("11:30")), (2, at("12:00")),
                               (3, at("12:00")), (4, at("12:00"))])
    job = hist(store, entity, ["driver_stats:trips", "driver_stats:conv_rate"])
    table = assert_result(job, [
        {"driver_id": 1, "event_timestamp": at("10:30"), "trips": 7, "conv_rate": 1.5},
        # the newest row's null is the value: no falling back to an older non-null
        {"driver_id": 1, "event_timestamp": at("11:30"), "trips": None, "conv_rate": 2.5},
        {"driver_id": 2, "event_timestamp": at("12:00"), "trips": None, "conv_rate": None},
        {"driver_id": 3, "event_timestamp": at("12:00"), "trips": None, "conv_rate": None},
        # NaN is a value, not a null
        {"driver_id": 4, "event_timestamp": at("12:00"), "trips": 4, "conv_rate": float("nan")},
    ])
    assert table.schema.field("trips").type == pa.int64()
    assert table.column("conv_rate").null_count == 2
    assert table.column("trips").null_count == 3


TYPED = [("rating", Float32, pa.float32(), [0.5, None]),
         ("rank", Int32, pa.int32(), [3, None]),
         ("city", String, pa.string(), ["Zürich", None]),
         ("active", Bool, pa.bool_(), [False, None]),
         ("trips", Int64, pa.int64(), [12, None])]


@pytest.mark.parametrize("source_types", ["declared", "widened"])
def test_feature_types_follow_the_schema(offline_backend, make_store, hist, source_types):
    """Output columns have the declared types, also when the source column is narrower."""
    def src_type(arrow_type: pa.DataType) -> pa.DataType:
        if source_types == "widened":
            return {pa.int64(): pa.int32()}.get(arrow_type, arrow_type)
        return arrow_type

    cols = {"driver_id": pa.array([1], pa.int64()),
            "event_timestamp": pa.array([at("10:00")], TS)}
    cols.update({n: pa.array(vals[:1], src_type(t)) for n, _, t, vals in TYPED})
    view = FeatureView(name="typed", entities=[driver()], ttl=None,
                       schema=[Field(name=n, dtype=d) for n, d, _, _ in TYPED],
                       source=offline_backend.make_source("typed", pa.table(cols)))
    store = make_store(driver(), view)
    job = hist(store, driver_entity_df([(1, at("10:00")), (1, at("09:00"))]),
               [f"typed:{n}" for n, _, _, _ in TYPED])
    table = assert_result(job, [
        {"driver_id": 1, "event_timestamp": at("10:00"),
         **{n: vals[0] for n, _, _, vals in TYPED}},
        {"driver_id": 1, "event_timestamp": at("09:00"),
         **{n: vals[1] for n, _, _, vals in TYPED}},
    ])
    assert [table.schema.field(n).type for n, _, _, _ in TYPED] == [t for _, _, t, _ in TYPED]


@pytest.mark.parametrize("by_name,full", [(False, False), (True, True)],
                         ids=["object-short_names", "name-full_names"])
def test_feature_service_with_projection(offline_backend, make_store, hist, by_name, full):
    b = offline_backend
    stats, profile = _driver_view_1h(b), _customer_view(b)
    service = FeatureService(name="training_v1", features=[profile[["tier"]], stats[["trips"]]])
    store = make_store(driver(), customer(), stats, profile, service)
    entity = _two_key_entity_df([(1, 100, at("10:30")), (2, 200, at("12:00"))])
    job = hist(store, entity, "training_v1" if by_name else service, full_feature_names=full)
    tier, trips = ("customer_profile__tier", "driver_stats__trips") if full else ("tier", "trips")
    assert_result(job, [
        {"driver_id": 1, "customer_id": 100, "event_timestamp": at("10:30"),
         tier: "gold", trips: 10},
        {"driver_id": 2, "customer_id": 200, "event_timestamp": at("12:00"),
         tier: None, trips: None},
    ])


# -- errors ----------------------------------------------------------------------------------
ERROR_CASES = {
    "unknown_feature": (["driver_stats:conv_rat"],
                        lambda: driver_entity_df([(1, at("10:00"))]),
                        (FeatureNotFoundError, KeyError),
                        ["conv_rat", "did you mean", "driver_stats:conv_rate"]),
    "unknown_view": (["driver_stat:conv_rate"],
                     lambda: driver_entity_df([(1, at("10:00"))]),
                     (FeatureViewNotFoundError, KeyError),
                     ["driver_stat", "did you mean", "'driver_stats'"]),
    "missing_join_key": (["driver_stats:conv_rate"],
                         lambda: pa.table({"driver": pa.array([1], pa.int64()),
                                           "event_timestamp": pa.array([at("10:00")], TS)}),
                         (EntityDataFrameError, ValueError),
                         ["driver_id"]),
    "two_datetime_columns": (["driver_stats:conv_rate"],
                             lambda: pa.table({"driver_id": pa.array([1], pa.int64()),
                                               "t1": pa.array([at("10:00")], TS),
                                               "t2": pa.array([at("10:00")], TS)}),
                             (EntityDataFrameError, ValueError),
                             ["event_timestamp"]),
    "no_datetime_column": (["driver_stats:conv_rate"],
                           lambda: pa.table({"driver_id": pa.array([1], pa.int64())}),
                           (EntityDataFrameError, ValueError),
                           ["event_timestamp"]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_requests_raise_clear_errors(offline_backend, make_store, hist, case):
    features, entity, types, needles = ERROR_CASES[case]
    store = make_store(driver(), driver_stats_view(offline_backend, ORDER_SOURCE))
    with pytest.raises(types[0]) as e:
        hist(store, entity(), features)
    assert all(isinstance(e.value, t) for t in types)
    for needle in needles:
        assert needle in str(e.value)


# -- more edges ------------------------------------------------------------------------------
def test_empty_entity_df_gives_an_empty_typed_result(offline_backend, make_store, hist):
    store = make_store(driver(), driver_stats_view(offline_backend, ORDER_SOURCE))
    table = hist(store, driver_entity_df([]), ["driver_stats:conv_rate",
                                               "driver_stats:trips"]).to_arrow()
    assert table.num_rows == 0
    assert table.column_names == ["driver_id", "event_timestamp", "conv_rate", "trips"]
    assert table.schema.types == [pa.int64(), TS, pa.float64(), pa.int64()]


def test_string_join_keys_match_exactly(offline_backend, make_store, hist):
    city = Entity(name="city", join_keys=["city_id"], value_type=ValueType.STRING)
    table = pa.table({"city_id": pa.array(["ams", "zrh", "ams"]),
                      "event_timestamp": pa.array([at("10:00"), at("10:00"), at("11:00")], TS),
                      "temp": pa.array([1.5, 2.5, 3.5])})
    view = FeatureView(name="weather", entities=[city], ttl=None,
                       schema=[Field(name="temp", dtype=Float64)],
                       source=offline_backend.make_source("weather", table))
    store = make_store(city, view)
    entity = pa.table({"city_id": pa.array(["zrh", "ams", "AMS", "ams ", "nyc"]),
                       "event_timestamp": pa.array([at("12:00")] * 5, TS)})
    assert_result(hist(store, entity, ["weather:temp"]), [
        {"city_id": k, "event_timestamp": at("12:00"), "temp": v}
        for k, v in [("zrh", 2.5), ("ams", 3.5), ("AMS", None), ("ams ", None), ("nyc", None)]])


def _ns(clock: str) -> pd.Timestamp:
    return pd.Timestamp(f"2026-01-01 {clock}", tz="UTC")


def test_nanosecond_entity_timestamps_never_see_the_future(offline_backend, make_store, hist):
    """A row at 10:00:00.0000005 must not see an event at 10:00:00.000001 (results are
    returned at microsecond precision)."""
    source = [(1, at("10:00"), at("10:00"), 1.5, 1),
              (1, at("10:00:00.000001"), at("10:00:00.000001"), 2.5, 2)]
    store = make_store(driver(), driver_stats_view(offline_backend, source))
    entity = pd.DataFrame({"driver_id": [1, 1],
                           "event_timestamp": [_ns("10:00:00.000000500"),
                                               _ns("10:00:00.000001500")]})
    assert_result(hist(store, entity, ["driver_stats:conv_rate"]),
                  conv_rows([(1, at("10:00"), 1.5), (1, at("10:00:00.000001"), 2.5)]))


def test_nanosecond_source_timestamps_never_leak_the_future(offline_backend, make_store, hist):
    """An event at 10:00:00.0000005 happened after a row at 10:00:00."""
    events = pa.array([_ns("09:00").value, _ns("10:00:00.000000500").value],
                      pa.timestamp("ns", tz="UTC"))
    table = pa.table({"driver_id": pa.array([1, 1], pa.int64()), "event_timestamp": events,
                      "conv_rate": pa.array([0.5, 9.5])})
    view = FeatureView(name="driver_stats", entities=[driver()], ttl=None,
                       schema=[Field(name="conv_rate", dtype=Float64)],
                       source=offline_backend.make_source("ns_stats", table))
    store = make_store(driver(), view)
    cases = [(1, at("10:00"), 0.5), (1, at("10:00:00.000001"), 9.5)]
    assert_result(hist(store, driver_entity_df([(d, t) for d, t, _ in cases]),
                       ["driver_stats:conv_rate"]), conv_rows(cases))


@pytest.mark.parametrize("extra", ['weird "Col"', "__fold"])
def test_any_extra_entity_column_is_kept(offline_backend, make_store, hist, extra):
    """Extra entity_df columns come back whatever their names (quotes, leading "__", case)."""
    store = make_store(driver(), driver_stats_view(offline_backend, ORDER_SOURCE))
    entity = driver_entity_df([(1, at("10:30")), (2, at("11:30"))])
    entity = entity.append_column(extra, pa.array([4, 5], pa.int64()))
    assert_result(hist(store, entity, ["driver_stats:trips"]), [
        {"driver_id": 1, "event_timestamp": at("10:30"), extra: 4, "trips": 10},
        {"driver_id": 2, "event_timestamp": at("11:30"), extra: 5, "trips": 60}])


def test_feature_names_that_need_quoting(offline_backend, make_store, hist):
    names = ["select", "Avg Rate", "camelCase"]
    table = pa.table({"driver_id": pa.array([1], pa.int64()),
                      "event_timestamp": pa.array([at("10:00")], TS),
                      **{n: pa.array([float(i) + 0.5]) for i, n in enumerate(names)}})
    view = FeatureView(name="odd", entities=[driver()], ttl=None,
                       schema=[Field(name=n, dtype=Float64) for n in names],
                       source=offline_backend.make_source("odd", table))
    store = make_store(driver(), view)
    job = hist(store, driver_entity_df([(1, at("11:00"))]), [f"odd:{n}" for n in names[::-1]])
    assert_result(job, [{"driver_id": 1, "event_timestamp": at("11:00"),
                         "camelCase": 2.5, "Avg Rate": 1.5, "select": 0.5}])


def test_join_key_width_in_entity_df_does_not_matter(offline_backend, make_store, hist):
    """An int32 driver_id column in entity_df joins an int64 source key by value."""
    store = make_store(driver(), driver_stats_view(offline_backend, ORDER_SOURCE))
    entity = pa.table({"driver_id": pa.array([2, 1], pa.int32()),
                       "event_timestamp": pa.array([at("11:30"), at("10:30")], TS)})
    table = assert_result(hist(store, entity, ["driver_stats:trips"]), [
        {"driver_id": 2, "event_timestamp": at("11:30"), "trips": 60},
        {"driver_id": 1, "event_timestamp": at("10:30"), "trips": 10}])
    assert table.schema.field("driver_id").type == pa.int32()
