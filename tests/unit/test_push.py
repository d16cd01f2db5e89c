"""The Push API: validation, online and offline writes, visibility to training sets."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tiffin import (
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    PushMode,
    PushSource,
    RepoConfig,
    ValueType,
)
from tiffin.errors import FeatureViewNotFoundError, PushSourceNotFoundError, RequestError
from tiffin.types import Float64, String

NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture(params=["file", "directory"])
def store(tmp_path, request):
    table = pa.table({"driver_id": pa.array([1], pa.int64()),
                      "event_timestamp": pa.array([NOW - timedelta(hours=1)],
                                                  pa.timestamp("us", "UTC")),
                      "created": pa.array([NOW], pa.timestamp("us", "UTC")),
                      "rate": [0.5], "city": ["Lisbon"]})
    if request.param == "file":
        path = "stats.parquet"
        pq.write_table(table, tmp_path / path)
    else:
        path = "stats"
        (tmp_path / path).mkdir()
        pq.write_table(table, tmp_path / path / "part-0.parquet")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    batch = FileSource(name="stats_batch", path=path, timestamp_field="event_timestamp",
                       created_timestamp_column="created")
    push_src = PushSource(name="stats_push", batch_source=batch)
    view = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=1), source=push_src,
                       schema=[Field(name="rate", dtype=Float64), Field(name="city", dtype=String)])
    other = FeatureView(name="trips", entities=[driver], ttl=None, source=batch,
                        schema=[Field(name="rate", dtype=Float64)])
    s = FeatureStore(repo_path=tmp_path, config=RepoConfig(project="p", registry="r.json"))
    s.apply([driver, batch, push_src, view, other])
    yield s
    s.close()


def rows(n_hours_ago: float, rate: float, city: str = "Porto", driver: int = 1) -> pd.DataFrame:
    return pd.DataFrame({"driver_id": [driver],
                         "event_timestamp": [NOW - timedelta(hours=n_hours_ago)],
                         "created": [NOW], "rate": [rate], "city": [city]})


def online(store, driver=1):
    return store.get_online_features(["stats:rate", "stats:city"], [{"driver_id": driver}]
                                     ).to_dict()


def training(store, ts=None):
    edf = pd.DataFrame({"driver_id": [1], "event_timestamp": [ts or NOW]})
    return store.get_historical_features(edf, ["stats:rate"]).to_df()["rate"].tolist()


def test_push_online_is_read_back_and_stays_monotonic(store):
    assert store.push("stats_push", rows(0.5, 0.9)) == 1
    assert online(store) == {"driver_id": [1], "rate": [0.9], "city": ["Porto"]}
    store.push("stats_push", rows(2, 0.1))  # older event: ignored online
    assert online(store)["rate"] == [0.9]
    assert training(store) == [0.5]  # online-only push leaves the offline store alone


@pytest.mark.parametrize("mode", [PushMode.OFFLINE, "offline", "ONLINE_AND_OFFLINE", 3])
def test_push_offline_is_visible_to_the_next_training_set(store, mode):
    store.push("stats_push", rows(0.25, 0.7), to=mode)
    assert training(store) == [0.7]
    assert training(store, NOW - timedelta(minutes=30)) == [0.5]
    expect_online = PushMode.parse(mode) == PushMode.ONLINE_AND_OFFLINE
    assert online(store)["rate"] == ([0.7] if expect_online else [None])


def test_bad_pushes_write_nothing(store):
    cases = [
        (lambda: store.push("stats_pus", rows(0, 1)), PushSourceNotFoundError,
         "did you mean 'stats_push'"),
        (lambda: store.push("stats_push", rows(0, 1).drop(columns=["rate"])), RequestError,
         r"missing column\(s\) \['rate'\]"),
        (lambda: store.push("stats_push", rows(0, 1).assign(rat=1.0)), RequestError,
         r"unknown column\(s\) \['rat'\].*did you mean 'rate'"),
        (lambda: store.push("stats_push", rows(0, 1).assign(driver_id=["x"])), RequestError,
         "'driver_id' cannot be int64"),
        (lambda: store.push("stats_push", rows(0, 1), to="sideways"), RequestError,
         "not a push mode"),
        (lambda: store.push("stats_push", rows(0, 1).iloc[0:0]), RequestError, "no rows"),
        (lambda: store.write_to_online_store("stat", rows(0, 1)), FeatureViewNotFoundError,
         "did you mean 'stats'"),
    ]
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    assert online(store) == {"driver_id": [1], "rate": [None], "city": [None]}
    assert training(store) == [0.5]


def test_write_to_online_store(store):
    assert store.write_to_online_store("trips", pd.DataFrame({
        "driver_id": [1, 2], "event_timestamp": [NOW, NOW], "rate": [1.5, 2.5]})) == 2
    got = store.get_online_features(["trips:rate"], {"driver_id": [2, 1]}).to_dict()
    assert got["rate"] == [2.5, 1.5]
    with pytest.raises(RequestError, match="missing column"):
        store.write_to_online_store("trips", pd.DataFrame({"driver_id": [1], "rate": [1.0]}))



@pytest.mark.parametrize("column", ["driver_id", "event_timestamp"])
@pytest.mark.parametrize("how", ["push", "write"])
def test_null_key_or_event_time_is_a_request_error_and_writes_nothing(store, column, how):
    df = pd.concat([rows(0.5, 0.9, driver=7), rows(0.5, 0.8, driver=8)], ignore_index=True)
    df[column] = df[column].astype(object)
    df.loc[1, column] = None
    with pytest.raises(RequestError, match=f"column '{column}' is null in row 1"):
        if how == "push":
            store.push("stats_push", df, to=PushMode.ONLINE_AND_OFFLINE)
        else:
            store.write_to_online_store("stats", df)
    got = store.get_online_features(["stats:rate"], [{"driver_id": 7}]).to_dict()
    assert got["rate"] == [None]  # the valid first row was not written either


def test_the_source_schema_is_read_once_per_registry_version(store, monkeypatch):
    # Each read of the schema is I/O (a Parquet footer here, a PostgreSQL connection for a
    # table source): pushes reuse it until the registry changes.
    calls = []
    read_schema = store.offline_store.source_schema
    monkeypatch.setattr(store.offline_store, "source_schema",
                        lambda source: calls.append(source.name) or read_schema(source))
    for i in range(3):
        store.push("stats_push", rows(0.5 - i * 0.1, 0.1 * i))
    store.push("stats_push", rows(0.1, 0.7), allow_registry_cache=False)  # (unchanged)
    assert calls == ["stats_batch"]
    assert online(store)["rate"] == [0.7]

    view = store.get_feature_view("stats")
    view.tags = {"changed": "yes"}
    store.apply([view])
    calls.clear()  # (apply reads the schemas too, to check the sources)
    store.push("stats_push", rows(0.05, 0.8), to="online_and_offline")
    store.push("stats_push", rows(0.01, 0.9), to="online_and_offline")
    assert calls == ["stats_batch"]
    assert online(store)["rate"] == [0.9] and training(store)[-1] == 0.9
