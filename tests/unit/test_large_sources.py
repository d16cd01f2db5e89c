"""Sources larger than ``in_memory_join_max_rows``: merged by time ranges or key buckets.

A large source is not read whole: with a ttl and a time-ordered source (the usual
append-only table) the entity rows are cut into time ranges whose source rows, by the
Parquet row-group statistics, fit the limit; otherwise the source is split by a hash of
its keys. Both must give exactly what the plain in-memory merge and the ASOF SQL give.
The limit here is tiny, so a few thousand rows exercise both paths.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tiffin import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from tiffin.offline.duckdb.store import DuckDBOfflineStore
from tiffin.offline.duckdb.store import _merge_view as merge_view
from tiffin.types import Float64, Int64, String

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
US = 1_000_000
TS = pa.timestamp("us", "UTC")


def source_table(rng: np.random.Generator, keys: int, hours: int) -> pa.Table:
    """Hourly rows per key, some missing, some duplicated with another created time;
    appended in time order, as a batch job would."""
    hour = np.repeat(np.arange(hours), keys)
    key = np.tile(np.arange(keys), hours)
    keep = rng.random(hour.size) > 0.15
    hour, key = hour[keep], key[keep]
    dup = rng.choice(hour.size, hour.size // 20, replace=False)
    hour, key = np.concatenate([hour, hour[dup]]), np.concatenate([key, key[dup]])
    order = np.argsort(hour, kind="stable")
    hour, key = hour[order], key[order]
    n = hour.size
    event = int(T0.timestamp()) * US + hour * 3600 * US
    created = event + rng.integers(0, 3600, n) * US
    return pa.table({
        "driver_id": pa.array(key, pa.int64()),
        "event_timestamp": pa.array(event, pa.int64()).cast(TS),
        "created": pa.array(created, pa.int64()).cast(TS),
        "rate": pa.array(rng.random(n)),
        "trips": pa.array(rng.integers(0, 100, n), pa.int64()),
        "city": pa.array(rng.choice(["a", "b", "c"], n)),
    })


def entity_table(rng: np.random.Generator, keys: int, hours: int, n: int) -> pa.Table:
    # Some unknown keys, some times before the data, some exactly on the hour.
    ts = int(T0.timestamp()) * US + rng.integers(-3 * 3600 * US, (hours + 2) * 3600 * US, n)
    on_hour = rng.random(n) < 0.2
    ts = np.where(on_hour, ts // (3600 * US) * (3600 * US), ts)
    return pa.table({"driver_id": pa.array(rng.integers(0, keys + 5, n), pa.int64()),
                     "event_timestamp": pa.array(ts, pa.int64()).cast(TS)})


def laid_out(rng: np.random.Generator, table: pa.Table, layout: str) -> pa.Table:
    """The same rows in time order (as generated), key order, or no order at all."""
    if layout == "key":
        return table.sort_by([("driver_id", "ascending"), ("event_timestamp", "ascending")])
    if layout == "shuffled":
        return table.take(pa.array(rng.permutation(table.num_rows)))
    return table


def make(tmp_path, name: str, limit: int, table: pa.Table, ttl: timedelta | None
         ) -> FeatureStore:
    root = tmp_path / name
    root.mkdir()
    path = root / "drivers.parquet"
    pq.write_table(table, path, row_group_size=97)  # many row groups, as a real table has
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    src = FileSource(name="drivers", path=str(path), timestamp_field="event_timestamp",
                     created_timestamp_column="created")
    view = FeatureView(name="stats", entities=[driver], ttl=ttl, source=src,
                       schema=[Field(name="rate", dtype=Float64), Field(name="trips", dtype=Int64),
                               Field(name="city", dtype=String)])
    cfg = RepoConfig(project="p", registry=str(root / "registry.json"),
                     offline_store={"type": "duckdb", "in_memory_join_max_rows": limit})
    store = FeatureStore(repo_path=root, config=cfg)
    store.apply([driver, src, view])
    return store


@pytest.fixture
def taken(monkeypatch):
    """Which large-source path each retrieval took (a spy; the real methods run)."""
    calls: list[str] = []
    for name in ("_merge_time_chunked", "_merge_key_chunked", "_merge_partitioned"):
        real = getattr(DuckDBOfflineStore, name)

        def spy(self, *a, _real=real, _name=name, **kw):
            calls.append(_name)
            return _real(self, *a, **kw)

        monkeypatch.setattr(DuckDBOfflineStore, name, spy)
    return calls


FEATURES = ["stats:rate", "stats:trips", "stats:city"]


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("ttl, path", [(timedelta(hours=3), "_merge_time_chunked"),
                                       (timedelta(minutes=90), "_merge_time_chunked"),
                                       (None, "_merge_partitioned")])
def test_large_source_paths_match_the_plain_merge_and_sql(tmp_path, taken, seed, ttl, path):
    rng = np.random.default_rng(seed)
    table = source_table(rng, keys=40, hours=150)
    entity = entity_table(rng, keys=40, hours=150, n=3_000)
    big = make(tmp_path, "big", 1_000, table, ttl)  # the source has ~5,000 rows
    plain = make(tmp_path, "plain", 10_000_000, table, ttl)
    sql = make(tmp_path, "sql", 0, table, ttl)  # 0: always the ASOF SQL
    got = big.get_historical_features(entity, FEATURES).to_arrow()
    assert taken == [path]
    want = plain.get_historical_features(entity, FEATURES).to_arrow()
    assert got.equals(want)
    assert got.equals(sql.get_historical_features(entity, FEATURES).to_arrow())
    assert got.column("rate").null_count < got.num_rows  # the join found rows at all


def test_a_limit_of_zero_always_runs_the_asof_sql(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    store = make(tmp_path, "sql", 0, source_table(rng, keys=5, hours=10), timedelta(hours=2))

    def refuse(*a, **kw):
        raise AssertionError("in_memory_join_max_rows: 0 must not merge in memory")

    monkeypatch.setattr(DuckDBOfflineStore, "_merge_in_memory", refuse)
    got = store.get_historical_features(entity_table(rng, 5, 10, 200), FEATURES).to_arrow()
    assert got.num_rows == 200 and got.column("rate").null_count < 200


@pytest.mark.parametrize("layout, ttl, path", [
    ("time", timedelta(hours=2), "_merge_time_chunked"),
    ("time", None, "_merge_partitioned"),  # no ttl: time ranges would need all earlier rows
    ("key", timedelta(hours=2), "_merge_key_chunked"),
    ("key", None, "_merge_key_chunked"),
    ("shuffled", timedelta(hours=2), "_merge_partitioned"),
    ("shuffled", None, "_merge_partitioned"),
])
def test_every_source_layout_takes_a_bounded_path_with_the_same_result(
        tmp_path, taken, layout, ttl, path):
    """Whatever order the source rows were written in, a source past the limit is read in
    pieces (time ranges, key ranges or hash buckets) and the result is exactly the
    plain merge's and the ASOF SQL's."""
    rng = np.random.default_rng(5)
    table = laid_out(rng, source_table(rng, keys=50, hours=120), layout)
    entity = entity_table(rng, keys=50, hours=120, n=2_000)
    big = make(tmp_path, "big", 1_000, table, ttl)  # ~5,600 source rows
    got = big.get_historical_features(entity, FEATURES).to_arrow()
    assert taken == [path]
    want = make(tmp_path, "plain", 10_000_000, table, ttl).get_historical_features(
        entity, FEATURES).to_arrow()
    assert got.equals(want)
    sql = make(tmp_path, "sql", 0, table, ttl).get_historical_features(entity, FEATURES)
    assert got.equals(sql.to_arrow())
    assert got.column("rate").null_count < got.num_rows


def test_key_ranges_read_only_their_row_groups(tmp_path, monkeypatch):
    """Each key range of a key-ordered source reads about its share of the rows, not the
    whole source: the point of the key-range path."""
    rng = np.random.default_rng(9)
    table = laid_out(rng, source_table(rng, keys=80, hours=60), "key")
    entity = entity_table(rng, keys=80, hours=60, n=1_500)
    big = make(tmp_path, "big", 1_000, table, None)
    read: list[int] = []
    real = DuckDBOfflineStore._merge_chunked

    def spy(self, entity, v, ent_ts, ent_valid, parts, **kw):
        def counted():
            for rows, query in parts:
                with self.connect() as con:
                    read.append(con.sql(f"SELECT COUNT(*) FROM ({query}) AS q").fetchall()[0][0])
                yield rows, query
        return real(self, entity, v, ent_ts, ent_valid, counted(), **kw)

    monkeypatch.setattr(DuckDBOfflineStore, "_merge_chunked", spy)
    got = big.get_historical_features(entity, FEATURES).to_arrow()
    assert len(read) >= 8 and max(read) <= 500  # ranges of at most half the limit
    assert sum(read) == table.num_rows  # disjoint key ranges: every row read once
    plain = make(tmp_path, "plain", 10_000_000, table, None)
    assert got.equals(plain.get_historical_features(entity, FEATURES).to_arrow())


def test_string_keys_in_key_order_take_the_hash_buckets(tmp_path, taken):
    """Key ranges need integer statistics; a string key sorted by key still gets a
    bounded path, the hash buckets."""
    rng = np.random.default_rng(4)
    table = laid_out(rng, source_table(rng, keys=30, hours=80), "key")
    table = table.set_column(0, "driver_id", pc.cast(table.column("driver_id"), pa.string()))
    entity = entity_table(rng, keys=30, hours=80, n=800)
    entity = entity.set_column(0, "driver_id", pc.cast(entity.column("driver_id"), pa.string()))

    def store(name: str, limit: int) -> FeatureStore:
        root = tmp_path / name
        root.mkdir()
        pq.write_table(table, root / "drivers.parquet", row_group_size=97)
        driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.STRING)
        src = FileSource(name="drivers", path=str(root / "drivers.parquet"),
                         timestamp_field="event_timestamp", created_timestamp_column="created")
        view = FeatureView(name="stats", entities=[driver], ttl=None, source=src,
                           schema=[Field(name="rate", dtype=Float64),
                                   Field(name="trips", dtype=Int64),
                                   Field(name="city", dtype=String)])
        s = FeatureStore(repo_path=root, config=RepoConfig(
            project="p", registry=str(root / "registry.json"),
            offline_store={"type": "duckdb", "in_memory_join_max_rows": limit}))
        s.apply([driver, src, view])
        return s

    got = store("big", 800).get_historical_features(entity, FEATURES).to_arrow()
    assert taken == ["_merge_partitioned"]
    assert got.equals(store("plain", 10_000_000).get_historical_features(
        entity, FEATURES).to_arrow())


def test_unclustered_source_falls_back_to_key_buckets(tmp_path, taken):
    rng = np.random.default_rng(7)
    table = source_table(rng, keys=30, hours=100)
    table = table.take(pa.array(rng.permutation(table.num_rows)))  # every row group spans all time
    entity = entity_table(rng, keys=30, hours=100, n=1_000)
    big = make(tmp_path, "big", 800, table, timedelta(hours=2))
    plain = make(tmp_path, "plain", 10_000_000, table, timedelta(hours=2))
    got = big.get_historical_features(entity, FEATURES).to_arrow()
    assert taken == ["_merge_partitioned"]
    assert got.equals(plain.get_historical_features(entity, FEATURES).to_arrow())


def test_persist_streams_the_large_result_to_parquet(tmp_path):
    rng = np.random.default_rng(3)
    table = source_table(rng, keys=20, hours=60)
    entity = entity_table(rng, keys=20, hours=60, n=500)
    big = make(tmp_path, "big", 300, table, timedelta(hours=2))
    job = big.get_historical_features(entity, FEATURES)
    out = tmp_path / "training.parquet"
    job.persist(str(out))
    assert pq.read_table(out).equals(job.to_arrow())
    batches = list(job.to_arrow_batches(128))
    assert sum(b.num_rows for b in batches) == entity.num_rows


def test_merge_view_without_source_rows_is_typed_nulls():
    from tiffin.offline.pit import SourceColumns, ViewJoin

    v = ViewJoin("v0", SourceColumns("t", "ts", None, {}, {}), ["k"], ["k"],
                 [("rate", "rate", Float64), ("city", "city", String)], None)
    out = merge_view(None, v, [pa.chunked_array([[1, 2]])], np.array([1, 2]),
                     np.array([True, True]))
    assert out["rate"].type == pa.float64() and out["rate"].null_count == 2
    assert out["city"].type == pa.string()


@pytest.mark.parametrize("shuffled", [False, True])
def test_materialize_of_a_large_source_reads_newest_rows_first(tmp_path, monkeypatch, shuffled):
    """Newest-first windows (time-ordered source) or one aggregation (shuffled rows): the
    online store ends up with exactly what the plain aggregation gives."""
    rng = np.random.default_rng(11)
    table = source_table(rng, keys=60, hours=120)
    # A few keys whose last row is old: found only in older windows.
    old = pa.table({"driver_id": pa.array([1000, 1001], pa.int64()),
                    "event_timestamp": pa.array([T0, T0 + timedelta(hours=3)], TS),
                    "created": pa.array([T0, T0], TS), "rate": [0.5, 0.25],
                    "trips": pa.array([7, 8], pa.int64()), "city": ["old", "old"]})
    table = pa.concat_tables([old, table])
    if shuffled:
        table = table.take(pa.array(rng.permutation(table.num_rows)))
    windows_used = []
    real = DuckDBOfflineStore._latest_by_windows

    def spy(self, con, latest, windows, batch_rows):
        windows_used.append(len(windows))
        return real(self, con, latest, windows, batch_rows)

    monkeypatch.setattr(DuckDBOfflineStore, "_latest_by_windows", spy)
    big = make(tmp_path, "big", 1_000, table, None)
    plain = make(tmp_path, "plain", 10_000_000, table, None)
    end = T0 + timedelta(hours=200)
    for s in (big, plain):
        s.materialize(T0 - timedelta(hours=1), end)
    assert windows_used == ([] if shuffled else [windows_used[0]]) and \
        (shuffled or windows_used[0] > 3)
    keys = [{"driver_id": k} for k in [*range(60), 1000, 1001, 5000]]
    got = big.get_online_features(FEATURES, keys).to_dict(include_event_timestamps=True)
    want = plain.get_online_features(FEATURES, keys).to_dict(include_event_timestamps=True)
    assert got == want
    assert got["city"][-3:-1] == ["old", "old"] and got["rate"][-1] is None


def test_distinct_dense_and_sparse_values():
    from tiffin.offline.duckdb.store import _distinct

    rng = np.random.default_rng(3)
    dense = rng.integers(-50, 50, 1_000)  # marks
    sparse = rng.integers(-(2**62), 2**62, 1_000)  # sort
    for values in (dense, sparse, np.array([7]), np.zeros(0, np.int64)):
        assert _distinct(values).tolist() == sorted(set(values.tolist()))
