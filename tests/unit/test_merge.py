"""The in-memory merge against the SQL forms on random data, and its fallbacks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tiffin import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from tiffin.offline import merge
from tiffin.offline.base import prepare_entity
from tiffin.types import Float64, Int64, String

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _us(values: np.ndarray) -> pa.Array:
    base = int(T0.timestamp()) * 1_000_000
    return pa.array(values + base, pa.int64()).cast(pa.timestamp("us", "UTC"))


def _store(tmp_path, seed: int, key_type: str, unit_us: int):
    """Random source with many same-time rows; created times are unique, so exactly one
    row is the right answer for every entity row and both joins must agree exactly."""
    rng = np.random.default_rng(seed)
    n = 3000
    keys = rng.integers(0, 40, n)
    ts = rng.integers(0, 500, n) * unit_us
    created = ts + rng.permutation(n) + 1
    key_col = pa.array(keys) if key_type == "int" else pa.array([f"k{k}" for k in keys])
    table = pa.table({"key": key_col, "ts": _us(ts), "created": _us(created),
                      "value": pa.array(rng.integers(0, 1_000_000, n)),
                      "label": pa.array([f"v{i}" for i in range(n)])})
    pq.write_table(table, tmp_path / "src.parquet", row_group_size=700)
    vt = ValueType.INT64 if key_type == "int" else ValueType.STRING
    ent = Entity(name="thing", join_keys=["key"], value_type=vt)
    src = FileSource(name="src", path="src.parquet", timestamp_field="ts",
                     created_timestamp_column="created")
    view = FeatureView(name="v", entities=[ent], ttl=timedelta(microseconds=120 * unit_us),
                       source=src, schema=[Field(name="value", dtype=Int64),
                                           Field(name="label", dtype=String)])
    unbounded = FeatureView(name="u", entities=[ent], ttl=None, source=src,
                            schema=[Field(name="value", dtype=Float64)])
    store = FeatureStore(repo_path=tmp_path, config=RepoConfig(project="m", registry="r.json"))
    store.apply([ent, src, view, unbounded])
    m = 2000
    e_keys = rng.integers(-2, 45, m)
    entity = pa.table({
        "key": pa.array(e_keys) if key_type == "int" else pa.array([f"k{k}" for k in e_keys]),
        "event_timestamp": _us(rng.integers(-20, 560, m) * unit_us + rng.integers(0, 2, m)),
    })
    return store, entity


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("key_type", ["int", "str"])
@pytest.mark.parametrize("unit_us", [1, 1_000_000, 3_600_000_000])
def test_memory_merge_equals_sql(tmp_path, seed, key_type, unit_us):
    store, entity = _store(tmp_path, seed, key_type, unit_us)
    features = ["v:value", "v:label", "u:value"]
    plan = store._plan(features, True)
    table, ts = prepare_entity(entity, plan)
    results = {s: store.offline_store.get_historical_features(table, ts, plan, True, strategy=s)
               .to_arrow() for s in ("memory", "window")}
    assert results["memory"] == results["window"]
    assert results["memory"].column("key").to_pylist() == entity.column("key").to_pylist()
    assert 0 < results["memory"].column("v__value").null_count < len(entity)


def test_falls_back_to_sql_when_numbers_do_not_pack(tmp_path, monkeypatch):
    store, entity = _store(tmp_path, 7, "int", 1)
    feats = ["v:value", "u:value"]
    expected = store.get_historical_features(entity, feats, full_feature_names=True).to_arrow()
    monkeypatch.setattr(merge, "BITS", 8)  # nothing fits: auto must use SQL, same answer
    assert store.get_historical_features(entity, feats, full_feature_names=True).to_arrow() == expected


def test_indices_directly():
    src_keys = [pa.chunked_array([pa.array([1, 1, 1, 2])])]
    src_ts = np.array([10, 20, 20, 5], np.int64)
    created = np.array([0, 1, 2, -(2**63)], np.int64)
    ent_keys = [pa.chunked_array([pa.array([1, 1, 1, 2, 3, None])])]
    ent_ts = np.array([9, 20, 25, 5, 30, 30], np.int64)
    valid = np.ones(6, bool)
    got = merge.point_in_time_indices(src_keys, src_ts, created, ent_keys, ent_ts, valid, None)
    assert got.tolist() == [-1, 2, 2, 3, -1, -1]
    got = merge.point_in_time_indices(src_keys, src_ts, created, ent_keys, ent_ts, valid, 4)
    assert got.tolist() == [-1, 2, -1, 3, -1, -1]


@pytest.mark.parametrize("runs", [1, 3, 40, 5_000])
def test_sort_of_sorted_runs_equals_a_plain_sort(runs):
    """merge._sort picks timsort for a few sorted runs (a key-ordered source read by
    several threads) and quicksort otherwise; either way the order is exact."""
    rng = np.random.default_rng(runs)
    a = np.concatenate([np.sort(rng.integers(0, 1 << 40, 20_000 // runs))
                        for _ in range(runs)])
    rng.shuffle(a.reshape(runs, -1))  # runs in any order
    got = a.copy()
    merge._sort(got)
    assert np.array_equal(got, np.sort(a))


@pytest.mark.parametrize("block", [3, 7, 1 << 18])
@pytest.mark.parametrize("ttl", [None, 25])
def test_indices_from_chunks_equal_indices_from_arrays(monkeypatch, block, ttl):
    # The merge reads ChunkedArray columns a block at a time; blocks that straddle chunk
    # boundaries, created-time ties (with nulls) and ttl must give what arrays give.
    rng = np.random.default_rng(7)
    n = 200
    keys = np.sort(rng.integers(5, 40, n))
    ts = rng.integers(0, 12, n) * 10
    created = rng.integers(0, 3, n).astype(np.int64)
    created_null = rng.random(n) < 0.2
    ent_keys = [pa.chunked_array([pa.array(rng.integers(0, 45, 300))])]
    ent_ts = rng.integers(-5, 130, 300).astype(np.int64)
    valid = rng.random(300) > 0.05

    def chunked(values, mask=None):
        cuts = [0, 1, 50, 51, 120, n]
        return pa.chunked_array([pa.array(values[a:b], pa.int64(),
                                          mask=None if mask is None else mask[a:b])
                                 for a, b in zip(cuts, cuts[1:])])

    filled = np.where(created_null, -(2**63), created)
    want = merge.point_in_time_indices([chunked(keys)], ts.astype(np.int64), filled, ent_keys,
                                       ent_ts, valid, ttl)
    monkeypatch.setattr(merge, "_BLOCK", block)
    got = merge.point_in_time_indices([chunked(keys)], chunked(ts), chunked(created, created_null),
                                      ent_keys, ent_ts, valid, ttl)
    assert got.tolist() == want.tolist()
    assert (got >= 0).any()


@pytest.mark.parametrize("block", [2, 1 << 18])
def test_time_unit_is_the_coarsest_dividing_every_offset(monkeypatch, block):
    monkeypatch.setattr(merge, "_BLOCK", block)
    hour, minute = 3_600_000_000, 60_000_000
    assert merge._time_unit(np.array([0, 5 * hour, 2 * hour])) == (0, hour, 5)
    # One offset off the hour, late in the column: the unit drops to minutes.
    assert merge._time_unit(np.array([7, 7 + hour, 7 + 2 * hour, 7 + 3 * minute])) == (7, minute, 120)
    assert merge._time_unit(pa.chunked_array([[10, 11], [13]])) == (10, 1, 3)
    assert merge._time_unit(np.array([-hour, 0, 1_000])) == (-hour, 1_000, 3_600_001)
