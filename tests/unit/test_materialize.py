"""Materialization: latest row per entity in [start, end], watermarks, batching, agreement
with the point-in-time join."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tiffin import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from tiffin.errors import FeatureViewNotFoundError, RequestError
from tiffin.types import Float64, Int64, String

# Nine and a half hours before the last full hour: the newest rows (9h) are then at most
# 90 minutes old when collected, so the 2-hour ttl of `scaled` leaves them readable online
# even when the suite crosses an hour boundary (T0 is fixed at collection).
T0 = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) \
    - timedelta(hours=9, minutes=30)


def h(n: float) -> datetime:
    return T0 + timedelta(hours=n)


ROWS = [  # driver_id, event hour, created hour, value, city
    (1, 0, 0, 10, "a"),
    (1, 5, 5, 11, "b"),
    (1, 5, 7, 12, "c"),   # same event time, newer created: wins
    (1, 9, 9, 13, "d"),   # after the window below
    (2, 1, 1, 20, "e"),
    (2, 3, None, 21, None),
    (3, 8, 8, 30, "f"),
]


@pytest.fixture(params=["aggregate", "window"])
def store(tmp_path, request, monkeypatch):
    if request.param == "window":
        # The portable ROW_NUMBER form other dialects use, run on DuckDB.
        from tiffin.offline.pit import DuckDBDialect
        monkeypatch.setattr(DuckDBDialect, "supports_arg_max", False)
    table = pa.table({
        "driver_id": [r[0] for r in ROWS],
        "event_timestamp": pa.array([h(r[1]) for r in ROWS], pa.timestamp("us", "UTC")),
        "created": pa.array([None if r[2] is None else h(r[2]) for r in ROWS],
                            pa.timestamp("us", "UTC")),
        "value": [r[3] for r in ROWS],
        "city": [r[4] for r in ROWS],
    })
    pq.write_table(table, tmp_path / "drivers.parquet", row_group_size=2)
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    src = FileSource(name="drivers", path="drivers.parquet", timestamp_field="event_timestamp",
                     created_timestamp_column="created")
    stats = FeatureView(name="stats", entities=[driver], ttl=None, source=src,
                        schema=[Field(name="value", dtype=Int64), Field(name="city", dtype=String)])
    scaled = FeatureView(name="scaled", entities=[driver], ttl=timedelta(hours=2), source=src,
                         schema=[Field(name="value", dtype=Float64)])
    cfg = RepoConfig(project="mat", registry="registry.json",
                     batch_engine={"type": "local", "batch_rows": 1})
    s = FeatureStore(repo_path=tmp_path, config=cfg)
    s.apply([driver, src, stats, scaled])
    yield s
    s.close()


def online(store, feature, ids):
    return store.get_online_features([feature], {"driver_id": ids}).to_dict()[feature.split(":")[1]]


def test_latest_row_per_entity_in_window(store):
    results = store.materialize(h(0), h(6), feature_views=["stats"])
    assert [(r.view, r.rows, r.max_event_ts) for r in results] == [("stats", 2, h(5))]
    assert online(store, "stats:value", [1, 2, 3]) == [12, 21, None]
    assert online(store, "stats:city", [1, 2, 3]) == ["c", None, None]


def test_window_bounds_are_inclusive(store):
    store.materialize(h(1), h(1), feature_views=["stats"])
    assert online(store, "stats:value", [1, 2]) == [None, 20]


def test_older_window_never_overwrites_newer_values(store):
    store.materialize(h(0), h(10), feature_views=["stats"])
    store.materialize(h(0), h(2), feature_views=["stats"])  # replays older rows
    assert online(store, "stats:value", [1, 2, 3]) == [13, 21, 30]


def test_incremental_uses_watermarks(store):
    store.materialize_incremental(h(6), feature_views=["stats"])
    assert online(store, "stats:value", [1, 3]) == [12, None]
    snap = store.registry.snapshot(allow_cache=False)
    assert snap.materialization("stats")["watermark"] == h(6).isoformat()
    (result,) = store.materialize_incremental(h(10), feature_views=["stats"])
    assert result.rows == 2  # only what arrived in (6h, 10h]
    assert online(store, "stats:value", [1, 3]) == [13, 30]


def test_incremental_first_run_starts_at_end_minus_ttl(store):
    (result,) = store.materialize_incremental(h(9), feature_views=["scaled"])
    assert result.rows == 2  # rows in [7h, 9h]: driver 1 at 9h, driver 3 at 8h
    assert store.get_online_features(["scaled:value"], {"driver_id": [1, 2, 3]}).to_dict() \
        ["value"][1] is None


def test_all_online_views_by_default_and_int_to_float_cast(store):
    results = store.materialize(h(0), h(10))
    assert sorted(r.view for r in results) == ["scaled", "stats"]
    resp = store.get_online_features(["scaled:value"], {"driver_id": [1]})
    assert resp.to_dict()["value"] == [13.0]  # declared Float64 over an int column


def test_online_matches_point_in_time_join_at_end(store):
    end = h(8.5)
    store.materialize(h(-100), end, feature_views=["stats"])
    ids = [1, 2, 3]
    training = store.get_historical_features(
        pa.table({"driver_id": ids, "event_timestamp": pa.array([end] * 3,
                                                               pa.timestamp("us", "UTC"))}),
        ["stats:value", "stats:city"]).to_arrow()
    assert training.column("value").to_pylist() == online(store, "stats:value", ids)
    assert training.column("city").to_pylist() == online(store, "stats:city", ids)


def test_bad_requests(store):
    with pytest.raises(RequestError, match="after end"):
        store.materialize(h(5), h(1))
    with pytest.raises(RequestError, match="ISO 8601"):
        store.materialize("yesterday", h(1))
    with pytest.raises(FeatureViewNotFoundError, match="did you mean 'stats'"):
        store.materialize(h(0), h(1), feature_views=["stat"])
