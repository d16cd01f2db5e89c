"""The spark offline store and engine beyond the point-in-time contract (which
tests/contract runs on Spark too): catalog tables, queries, other file formats, SQL
entity_df, streaming, both join strategies, materialization from the executors compared
with the local engine. (SQL snapshots, definitions and configs: tests/unit/test_spark_sql.py.)"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import uuid
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tiffin import (
    DataSource,
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    ParquetFormat,
    RepoConfig,
    SparkSource,
    ValueType,
)
from tiffin.errors import EntityDataFrameError, RequestError
from tiffin.types import Float64, Int64, String

pytestmark = pytest.mark.spark

# The session the contract suite uses (tests/contract/conftest.py): whichever test starts
# Spark first, the other reuses it.
SPARK_CONF = {
    "spark.master": "local[2]",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.sql.adaptive.enabled": "false",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1",
    # not ./spark-warehouse in the working tree
    "spark.sql.warehouse.dir": os.path.join(tempfile.gettempdir(), "tiffin-test-warehouse"),
}
UTC = timezone.utc
TS = pa.timestamp("us", tz="UTC")
T0 = datetime(2026, 1, 1, 10, tzinfo=UTC)


def h(n: float) -> datetime:
    return T0 + timedelta(hours=n)


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        pytest.skip("Spark needs Java")
    from tiffin.offline.spark.store import spark_session
    return spark_session(SPARK_CONF)


DRIVER = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
ROWS = [  # driver_id, event hour, created hour, conv_rate, trips, city
    (1, 0, 0, 0.5, 10, "a"),
    (1, 5, 5, 1.5, 11, "b"),
    (1, 5, 7, 2.5, 12, "c"),  # same event time, newer created: wins
    (1, 9, 9, 3.5, 13, "d"),
    (2, 1, 1, 4.5, 20, "e"),
    (2, 3, None, 5.5, 21, None),
    (3, 8, 8, 6.5, 30, "f"),
    (4, 2, 2, 7.5, None, "g"),
]


def stats_table() -> pa.Table:
    return pa.table({
        "driver_id": pa.array([r[0] for r in ROWS], pa.int64()),
        "event_timestamp": pa.array([h(r[1]) for r in ROWS], TS),
        "created": pa.array([None if r[2] is None else h(r[2]) for r in ROWS], TS),
        "conv_rate": [r[3] for r in ROWS],
        "trips": pa.array([r[4] for r in ROWS], pa.int64()),
        "city": [r[5] for r in ROWS],
    })


def stats_view(source: DataSource, name: str = "stats") -> FeatureView:
    return FeatureView(name=name, entities=[DRIVER], ttl=None, source=source,
                       schema=[Field(name="conv_rate", dtype=Float64),
                               Field(name="trips", dtype=Int64),
                               Field(name="city", dtype=String)])


def make_store(root, *objects, offline=None, engine=None) -> FeatureStore:
    root.mkdir(parents=True, exist_ok=True)
    cfg = RepoConfig(project="sparktest", registry=str(root / "registry.json"),
                     online_store={"type": "sqlite", "path": str(root / "online.db")},
                     offline_store=offline or {"type": "spark", "spark_conf": SPARK_CONF},
                     batch_engine=engine or {"type": "local"})
    store = FeatureStore(repo_path=root, config=cfg)
    store.apply(list(objects))
    return store


def entity_df(rows: list[tuple[int, datetime]]) -> pa.Table:
    return pa.table({"driver_id": pa.array([r[0] for r in rows], pa.int64()),
                     "event_timestamp": pa.array([r[1] for r in rows], TS)})


ENTITY_ROWS = [(1, h(6)), (2, h(2)), (9, h(6)), (1, h(4)), (4, h(3))]
EXPECTED = [  # conv_rate, trips for ENTITY_ROWS
    (2.5, 12), (4.5, 20), (None, None), (0.5, 10), (7.5, None)]


def assert_expected(table: pa.Table) -> None:
    assert table.column_names == ["driver_id", "event_timestamp", "conv_rate", "trips"]
    assert [(r["conv_rate"], r["trips"]) for r in table.to_pylist()] == EXPECTED
    assert table.schema.field("event_timestamp").type == TS


@pytest.fixture
def parquet_path(tmp_path):
    path = tmp_path / "data" / "stats.parquet"
    path.parent.mkdir()
    pq.write_table(stats_table(), path)
    return path


# -- sources ---------------------------------------------------------------------------------
def test_table_source(spark, tmp_path, parquet_path):
    table = f"tiffin_stats_{uuid.uuid4().hex[:8]}"
    spark.sql(f"CREATE TABLE {table} USING parquet LOCATION '{parquet_path.parent}'")
    try:
        src = SparkSource(name="stats_table", table=table, timestamp_field="event_timestamp",
                          created_timestamp_column="created")
        store = make_store(tmp_path / "repo", DRIVER, src, stats_view(src))
        assert_expected(store.get_historical_features(
            entity_df(ENTITY_ROWS), ["stats:conv_rate", "stats:trips"]).to_arrow())
        # push appends to the table: a row the next retrieval sees
        row = stats_table().slice(0, 1).to_pylist()[0] | {
            "event_timestamp": h(5.5), "created": h(5.5), "conv_rate": 9.5, "trips": 99}
        store.offline_store.write(src, pa.Table.from_pylist([row], schema=stats_table().schema))
        job = store.get_historical_features(entity_df([(1, h(6))]), ["stats:trips"])
        assert job.to_arrow().column("trips").to_pylist() == [99]
    finally:
        spark.sql(f"DROP TABLE IF EXISTS {table}")


def test_query_source_with_field_mapping(spark, tmp_path, parquet_path):
    spark.read.parquet(str(parquet_path)).createOrReplaceTempView("tiffin_raw_stats")
    src = SparkSource(name="recent", query="SELECT driver_id AS drv, event_timestamp, created, "
                      "conv_rate * 2 AS rate, trips, city FROM tiffin_raw_stats "
                      "WHERE driver_id <> 2",
                      timestamp_field="event_timestamp", created_timestamp_column="created",
                      field_mapping={"drv": "driver_id", "rate": "conv_rate"})
    view = FeatureView(name="recent", entities=[DRIVER], ttl=timedelta(hours=3), source=src,
                       schema=[Field(name="conv_rate", dtype=Float64)])
    store = make_store(tmp_path / "repo", DRIVER, src, view)
    job = store.get_historical_features(entity_df(ENTITY_ROWS), ["recent:conv_rate"])
    # driver 2 filtered out by the query; driver 1 at h(4): its h(0) row is past the ttl
    assert job.to_arrow().column("conv_rate").to_pylist() == [5.0, None, None, None, 15.0]
    assert "`tiffin_entity`" in job.to_sql() and "(SELECT driver_id AS drv" in job.to_sql()


def test_csv_path_and_parquet_format_object(spark, tmp_path):
    import pyarrow.csv as pacsv
    path = tmp_path / "data" / "stats_csv"
    path.mkdir(parents=True)
    pacsv.write_csv(stats_table().drop_columns(["created"]), path / "part-0.csv")
    src = SparkSource(name="stats_csv", path=str(path), file_format="csv",
                      timestamp_field="event_timestamp")
    schema = FeatureStore(repo_path=tmp_path, config=RepoConfig(
        project="x", registry=str(tmp_path / "r.json"),
        offline_store={"type": "spark", "spark_conf": SPARK_CONF})).offline_store \
        .source_schema(src)
    assert schema.field("driver_id").type == pa.int32() or \
        schema.field("driver_id").type == pa.int64()
    assert pa.types.is_timestamp(schema.field("event_timestamp").type)
    fmt = SparkSource(name="p", path="x", file_format=ParquetFormat(), timestamp_field="t")
    assert fmt.file_format == "parquet"


def test_file_source_is_read_too(spark, tmp_path, parquet_path):
    src = FileSource(name="stats_file", path=str(parquet_path), timestamp_field="event_timestamp",
                     created_timestamp_column="created")
    store = make_store(tmp_path / "repo", DRIVER, src, stats_view(src))
    assert_expected(store.get_historical_features(
        entity_df(ENTITY_ROWS), ["stats:conv_rate", "stats:trips"]).to_arrow())


def test_int96_file_and_rows_appended_beside_it(spark, tmp_path):
    """Spark 3 wrote timestamps as INT96; a push to a single-file source lands in
    ``<file>.pushed/`` and is read with the file."""
    path = tmp_path / "int96.parquet"
    pq.write_table(stats_table(), path, use_deprecated_int96_timestamps=True)
    src = SparkSource(name="int96", path=str(path), file_format="parquet",
                      timestamp_field="event_timestamp", created_timestamp_column="created")
    store = make_store(tmp_path / "repo", DRIVER, src, stats_view(src))
    assert_expected(store.get_historical_features(
        entity_df(ENTITY_ROWS), ["stats:conv_rate", "stats:trips"]).to_arrow())
    row = {"driver_id": 2, "event_timestamp": h(1.5), "created": h(1.5), "conv_rate": 8.5,
           "trips": 88, "city": "z"}
    store.offline_store.write(src, pa.Table.from_pylist([row], schema=stats_table().schema))
    assert (tmp_path / "int96.parquet.pushed").is_dir()
    job = store.get_historical_features(entity_df([(2, h(2)), (1, h(6))]), ["stats:trips"])
    assert job.to_arrow().column("trips").to_pylist() == [88, 12]


def test_source_round_trips_through_the_registry(spark, tmp_path, parquet_path):
    src = SparkSource(name="stats_src", path=str(parquet_path), file_format="parquet",
                      timestamp_field="event_timestamp", created_timestamp_column="created",
                      description="d", tags={"team": "x"}, owner="o")
    store = make_store(tmp_path / "repo", DRIVER, src, stats_view(src))
    again = FeatureStore(repo_path=tmp_path / "repo", config=store.config)
    back = again.get_data_source("stats_src")
    assert type(back) is SparkSource and back == src and back.path == str(parquet_path)
    assert again.get_feature_view("stats").source == src
    assert DataSource.from_dict(src.to_dict()) == src


# -- retrieval -------------------------------------------------------------------------------
def test_entity_df_as_sql(spark, tmp_path, parquet_path):
    src = SparkSource(name="stats_src", path=str(parquet_path), file_format="parquet",
                      timestamp_field="event_timestamp", created_timestamp_column="created")
    store = make_store(tmp_path / "repo", DRIVER, src, stats_view(src))
    rows = ", ".join(f"({d}, TIMESTAMP_LTZ '{t.isoformat(sep=' ')}', 'r{i}')"
                     for i, (d, t) in enumerate(ENTITY_ROWS))
    query = (f"SELECT * FROM VALUES {rows} AS t(driver_id, event_timestamp, label)")
    job = store.get_historical_features(entity_df=query,
                                        features=["stats:conv_rate", "stats:trips"])
    table = job.to_arrow()
    assert table.column_names == ["driver_id", "event_timestamp", "label", "conv_rate", "trips"]
    assert table.column("label").to_pylist() == [f"r{i}" for i in range(len(ENTITY_ROWS))]
    assert [(r["conv_rate"], r["trips"]) for r in table.to_pylist()] == EXPECTED
    assert table.schema.field("event_timestamp").type == TS
    streamed = pa.Table.from_batches(list(job.to_arrow_batches(batch_rows=2)))
    assert streamed.equals(table)
    # the columns are checked before anything runs
    with pytest.raises(EntityDataFrameError, match="driver_id"):
        store.get_historical_features(entity_df="SELECT 1 AS id, current_timestamp() AS ts",
                                      features=["stats:trips"])


def test_sql_entity_df_needs_a_store_that_runs_sql(tmp_path, parquet_path):
    src = FileSource(name="stats_file", path=str(parquet_path), timestamp_field="event_timestamp")
    store = make_store(tmp_path / "repo", DRIVER, src, stats_view(src),
                       offline={"type": "duckdb"})
    with pytest.raises(RequestError, match="SQL"):
        store.get_historical_features(entity_df="SELECT 1 AS driver_id",
                                      features=["stats:trips"])


def test_streaming_and_spark_df(spark, tmp_path, parquet_path):
    src = SparkSource(name="stats_src", path=str(parquet_path), file_format="parquet",
                      timestamp_field="event_timestamp", created_timestamp_column="created")
    store = make_store(tmp_path / "repo", DRIVER, src, stats_view(src))
    entity = entity_df(ENTITY_ROWS * 3).append_column("row", pa.array(range(15)))
    job = store.get_historical_features(entity, ["stats:conv_rate", "stats:trips"])
    whole = job.to_arrow()
    batches = list(job.to_arrow_batches(batch_rows=4))
    assert all(b.num_rows <= 4 for b in batches) and len(batches) >= 4
    assert pa.Table.from_batches(batches).equals(whole)
    assert whole.column("row").to_pylist() == list(range(15))
    sdf = job.to_spark_df()
    assert sdf.columns == ["driver_id", "event_timestamp", "row", "conv_rate", "trips"]
    assert [r["trips"] for r in sdf.collect()] == [t for _, t in EXPECTED] * 3


def test_both_join_strategies_agree_with_duckdb_on_random_rows(spark, tmp_path):
    """Many keys, repeated event times, ties broken by created (some null), a ttl: the
    spark store's two renderings and the duckdb store give the same training set."""
    rng = random.Random(7)
    seen, rows = set(), []
    while len(rows) < 400:
        key, event = rng.randint(1, 20), rng.randint(0, 95) * 15
        created = None if rng.random() < 0.1 else rng.randint(0, 10**6)
        if (key, event, created) in seen or (created is None and (key, event, None) in seen):
            continue
        seen.add((key, event, created))
        rows.append({"driver_id": key, "event_timestamp": T0 + timedelta(minutes=event),
                     "created": None if created is None else T0 + timedelta(seconds=created),
                     "conv_rate": rng.random(), "trips": rng.choice([None, rng.randint(0, 99)]),
                     "city": rng.choice(["a", "b", None])})
    path = tmp_path / "random.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=stats_table().schema), path)
    entity = entity_df([(rng.randint(0, 22), T0 + timedelta(minutes=rng.randint(-60, 1500)))
                        for _ in range(300)])

    def training_set(offline: dict, src: DataSource) -> list[dict]:
        view = FeatureView(name="stats", entities=[DRIVER], ttl=timedelta(hours=3),
                           source=src, schema=stats_view(src).schema)
        store = make_store(tmp_path / offline.get("join_strategy", offline["type"]), DRIVER,
                           src, view, offline=offline)
        return store.get_historical_features(
            entity, ["stats:conv_rate", "stats:trips", "stats:city"]).to_arrow().to_pylist()

    kw = dict(timestamp_field="event_timestamp", created_timestamp_column="created")
    expected = training_set({"type": "duckdb"}, FileSource(name="r", path=str(path), **kw))
    assert sum(r["conv_rate"] is not None for r in expected) > 100  # the data is not empty
    for strategy in ["sweep", "window"]:
        spark_src = SparkSource(name="r", path=str(path), file_format="parquet", **kw)
        offline = {"type": "spark", "spark_conf": SPARK_CONF, "join_strategy": strategy}
        assert training_set(offline, spark_src) == expected, strategy


# -- materialization -------------------------------------------------------------------------
def online_contents(store: FeatureStore) -> dict:
    return store.get_online_features(["stats:conv_rate", "stats:trips", "stats:city"],
                                     {"driver_id": [1, 2, 3, 4, 5]}).to_dict()


ENGINE_SETUPS = {
    # offline store, engine, how the source is defined
    "spark_store+spark_engine": ("spark", {"type": "spark", "partitions": 3}, "spark"),
    "duckdb_store+spark_engine": ("duckdb", {"type": "spark.engine", "spark_conf": SPARK_CONF},
                                  "file"),
    "spark_store+local_engine": ("spark", {"type": "local", "batch_rows": 2}, "spark"),
}


@pytest.mark.parametrize("setup", list(ENGINE_SETUPS))
def test_engines_write_the_same_online_rows_as_the_local_engine(spark, tmp_path, parquet_path,
                                                               setup):
    def source(kind: str) -> DataSource:
        if kind == "file":
            return FileSource(name="stats_src", path=str(parquet_path),
                              timestamp_field="event_timestamp",
                              created_timestamp_column="created")
        return SparkSource(name="stats_src", path=str(parquet_path), file_format="parquet",
                           timestamp_field="event_timestamp", created_timestamp_column="created")

    reference = make_store(tmp_path / "local", DRIVER, source("file"),
                           stats_view(source("file")), offline={"type": "duckdb"})
    offline, engine, kind = ENGINE_SETUPS[setup]
    offline_cfg = {"type": "spark", "spark_conf": SPARK_CONF} if offline == "spark" \
        else {"type": "duckdb"}
    store = make_store(tmp_path / "other", DRIVER, source(kind), stats_view(source(kind)),
                       offline=offline_cfg, engine=engine)
    for start, end in [(h(0), h(6)), (h(6), h(12))]:  # two windows: newer rows overwrite
        expected = reference.materialize(start, end)
        got = store.materialize(start, end)
        assert [(r.view, r.rows, r.max_event_ts) for r in got] == \
            [(r.view, r.rows, r.max_event_ts) for r in expected]
        assert online_contents(store) == online_contents(reference)
    assert online_contents(store)["trips"] == [13, 21, 30, None, None]
