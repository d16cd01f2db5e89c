"""The PostgreSQL offline store beyond the contract suite: entity_df as SQL, query sources,
every feature type through COPY, materialization into SQLite, pushes appended to tables,
and clear errors for missing tables and wrong sources. Each test gets its own schema."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from tiffin import (
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    PostgreSQLSource,
    PushMode,
    PushSource,
    RepoConfig,
    ValueType,
)
from tiffin.errors import DefinitionError, EntityDataFrameError, RequestError
from tiffin.types import Array, Bool, Bytes, Float32, Float64, Int32, Int64, String, UnixTimestamp

psycopg = pytest.importorskip("psycopg")
pytestmark = pytest.mark.postgres

PG_HOST = os.environ.get("TIFFIN_TEST_POSTGRES_HOST", "127.0.0.1")
UTC = timezone.utc


def at(clock: str, day: int = 1) -> datetime:
    return datetime.fromisoformat(f"2026-01-{day:02d} {clock}").replace(tzinfo=UTC)


class Pg:
    """A schema of the test's own (the offline store's db_schema), dropped afterwards."""

    def __init__(self) -> None:
        self.schema = f"tiffin_it_{uuid.uuid4().hex[:12]}"
        self.con = psycopg.connect(host=PG_HOST, user="postgres", dbname="postgres",
                                   autocommit=True)
        self.con.execute(f"CREATE SCHEMA {self.schema}")
        self.con.execute(f"SET search_path TO {self.schema}")

    def run(self, sql: str, params: Any = None) -> list[tuple]:
        cur = self.con.execute(sql, params)
        return cur.fetchall() if cur.description else []

    def close(self) -> None:
        self.con.execute(f"DROP SCHEMA {self.schema} CASCADE")
        self.con.close()


@pytest.fixture
def pg():
    db = Pg()
    yield db
    db.close()


@pytest.fixture
def make_store(pg, tmp_path):
    stores: list[FeatureStore] = []

    def make(*objects: Any) -> FeatureStore:
        cfg = RepoConfig(project="it", registry=str(tmp_path / "registry.json"),
                         online_store={"type": "sqlite", "path": str(tmp_path / "online.db")},
                         offline_store={"type": "postgres", "host": PG_HOST, "user": "postgres",
                                        "database": "postgres", "db_schema": pg.schema})
        store = FeatureStore(repo_path=tmp_path, config=cfg)
        stores.append(store)
        if objects:
            store.apply(list(objects))
        return store

    yield make
    for store in stores:
        store.close()


DRIVER = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)


def driver_stats(pg: Pg, ttl: timedelta | None = timedelta(hours=2), **source: Any
                 ) -> FeatureView:
    """driver_stats(driver_id, event_timestamp timestamptz, created, conv_rate, trips)."""
    pg.run("CREATE TABLE driver_stats (driver_id BIGINT, event_timestamp TIMESTAMPTZ, "
           "created TIMESTAMPTZ, conv_rate DOUBLE PRECISION, trips INTEGER)")
    pg.run("INSERT INTO driver_stats VALUES "
           "(1, '2026-01-01 10:00+00', '2026-01-01 10:00+00', 1.5, 10), "
           "(1, '2026-01-01 11:00+00', '2026-01-01 11:00+00', 2.5, 20), "
           "(2, '2026-01-01 10:00+00', '2026-01-01 10:00+00', 3.5, 30), "
           "(2, '2026-01-01 10:00+00', '2026-01-01 10:05+00', 4.5, 40)")
    src = PostgreSQLSource(**{"name": "driver_stats", "table": "driver_stats",
                              "timestamp_field": "event_timestamp",
                              "created_timestamp_column": "created", **source})
    return FeatureView(name="driver_stats", entities=[DRIVER], ttl=ttl,
                       schema=[Field(name="conv_rate", dtype=Float64),
                               Field(name="trips", dtype=Int64)], source=src)


# -- entity_df as a SQL query ---------------------------------------------------------------
@pytest.mark.parametrize("ts_type", ["TIMESTAMPTZ", "TIMESTAMP", "TEXT"])
def test_entity_df_as_sql(pg, make_store, ts_type):
    store = make_store(DRIVER, driver_stats(pg))
    pg.run(f"CREATE TABLE requests (driver_id INTEGER, requested {ts_type}, label TEXT)")
    pg.run("INSERT INTO requests VALUES (2, '2026-01-01 10:30:00+00', 'b'), "
           "(1, '2026-01-01 10:59:59+00', 'a'), (1, '2026-01-01 13:00:00+00', 'late'), "
           "(NULL, '2026-01-01 12:00:00+00', 'no key'), (1, '2026-01-01 09:00:00+00', 'early'), "
           "(9, '2026-01-01 12:00:00+00', NULL)")
    sql = "SELECT driver_id, requested AS event_timestamp, label FROM requests ORDER BY label"
    if ts_type == "TEXT":
        sql = sql.replace("requested AS", "requested::text AS")
    job = store.get_historical_features(entity_df=sql,
                                        features=["driver_stats:conv_rate", "driver_stats:trips"])
    table = job.to_arrow()
    assert table.column_names == ["driver_id", "event_timestamp", "label", "conv_rate", "trips"]
    assert table.schema.field("event_timestamp").type == pa.timestamp("us", "UTC")
    assert table.schema.field("driver_id").type == pa.int32()
    assert table.to_pylist() == [  # the query's order; ORDER BY label puts NULL last
        {"driver_id": 1, "event_timestamp": at("10:59:59"), "label": "a", "conv_rate": 1.5,
         "trips": 10},
        {"driver_id": 2, "event_timestamp": at("10:30"), "label": "b", "conv_rate": 4.5,
         "trips": 40},
        {"driver_id": 1, "event_timestamp": at("09:00"), "label": "early", "conv_rate": None,
         "trips": None},
        {"driver_id": 1, "event_timestamp": at("13:00"), "label": "late", "conv_rate": 2.5,
         "trips": 20},
        {"driver_id": None, "event_timestamp": at("12:00"), "label": "no key",
         "conv_rate": None, "trips": None},
        {"driver_id": 9, "event_timestamp": at("12:00"), "label": None, "conv_rate": None,
         "trips": None},
    ]
    assert "__tiffin_entity" in job.to_sql()
    assert job.metadata["entity_columns"] == ["driver_id", "event_timestamp", "label"]


def test_entity_sql_finds_the_one_datetime_column_and_streams(pg, make_store):
    store = make_store(DRIVER, driver_stats(pg))
    job = store.get_historical_features(
        "SELECT 1 AS driver_id, t AS asked_at FROM generate_series("
        "TIMESTAMPTZ '2026-01-01 09:00+00', TIMESTAMPTZ '2026-01-01 12:00+00', "
        "INTERVAL '1 minute') AS t", ["driver_stats:trips"])
    batches = list(job.to_arrow_batches(batch_rows=50))
    assert [b.num_rows for b in batches] == [50, 50, 50, 31]
    rows = pa.Table.from_batches(batches).to_pylist()
    assert rows[0] == {"driver_id": 1, "asked_at": at("09:00"), "trips": None}
    assert rows[60] == {"driver_id": 1, "asked_at": at("10:00"), "trips": 10}
    assert rows[-1] == {"driver_id": 1, "asked_at": at("12:00"), "trips": 20}


def test_entity_sql_errors_are_clear(pg, make_store):
    store = make_store(DRIVER, driver_stats(pg))
    with pytest.raises(EntityDataFrameError, match="driver_id") as e:
        store.get_historical_features("SELECT 1 AS driver, now() AS event_timestamp",
                                      ["driver_stats:trips"])
    assert "did you mean 'driver'" in str(e.value)
    with pytest.raises(EntityDataFrameError, match="event_timestamp"):
        store.get_historical_features("SELECT 1 AS driver_id", ["driver_stats:trips"])
    with pytest.raises(RequestError, match="entity_df query failed.*no_such_table"):
        store.get_historical_features("SELECT * FROM no_such_table", ["driver_stats:trips"])


def test_entity_sql_and_dataframe_agree(pg, make_store):
    store = make_store(DRIVER, driver_stats(pg))
    rows = [(d, at(f"{h:02d}:{m:02d}")) for d in (1, 2, 3) for h in (9, 10, 11, 12)
            for m in (0, 30)]
    values = ", ".join(f"({d}, TIMESTAMPTZ '{t.isoformat()}')" for d, t in rows)
    from_sql = store.get_historical_features(
        f"SELECT * FROM (VALUES {values}) AS v(driver_id, event_timestamp)",
        ["driver_stats:conv_rate"]).to_arrow()
    frame = pa.table({"driver_id": pa.array([d for d, _ in rows], pa.int32()),
                      "event_timestamp": pa.array([t for _, t in rows],
                                                  pa.timestamp("us", "UTC"))})
    from_frame = store.get_historical_features(frame, ["driver_stats:conv_rate"]).to_arrow()
    assert from_sql.to_pylist() == from_frame.to_pylist()


# -- sources --------------------------------------------------------------------------------
def test_query_source_with_field_mapping(pg, make_store):
    pg.run("CREATE TABLE raw_events (drv BIGINT, ts TIMESTAMP, kind TEXT, amount NUMERIC(10, 2))")
    pg.run("INSERT INTO raw_events VALUES (1, '2026-01-01 10:00', 'ride', 12.50), "
           "(1, '2026-01-01 10:30', 'tip', 3.00), (1, '2026-01-01 11:00', 'ride', 7.25), "
           "(2, '2026-01-01 10:00', 'ride', 1.00)")
    src = PostgreSQLSource(name="rides", timestamp_field="ts", field_mapping={"drv": "driver_id"},
                           query="SELECT drv, ts, amount AS fare FROM raw_events "
                                 "WHERE kind = 'ride';")
    view = FeatureView(name="rides", entities=[DRIVER], schema=[Field(name="fare", dtype=Float64)],
                       source=src)
    store = make_store(DRIVER, view)
    entity = pa.table({"driver_id": pa.array([1, 1, 2], pa.int64()),
                       "event_timestamp": pa.array([at("10:45"), at("11:30"), at("09:00")])})
    assert store.get_historical_features(entity, ["rides:fare"]).to_arrow().column(
        "fare").to_pylist() == [12.5, 7.25, None]


ALL_TYPES = [("i32", Int32, "INTEGER", 7), ("i64", Int64, "BIGINT", 2**40),
             ("f32", Float32, "REAL", 0.5), ("f64", Float64, "DOUBLE PRECISION", 0.1),
             ("s", String, "VARCHAR(40)", 'Zürich, "quoted"\nnewline'), ("b", Bool, "BOOLEAN", True),
             ("raw", Bytes, "BYTEA", b"\x00\xff,\n"),
             ("when", UnixTimestamp, "TIMESTAMPTZ", at("08:00:00.000001")),
             ("ai", Array(Int64), "BIGINT[]", [1, None, 3]),
             ("astr", Array(String), "TEXT[]", ["a,b", None, 'q"', "NULL", ""]),
             ("af", Array(Float64), "DOUBLE PRECISION[]", [1.5, -2.0]),
             ("ab", Array(Bool), "BOOLEAN[]", [True, False]),
             ("ats", Array(UnixTimestamp), "TIMESTAMPTZ[]", [at("01:02:03.5")])]


def test_every_feature_type_comes_back_exactly(pg, make_store):
    cols = ", ".join(f'"{n}" {sql}' for n, _, sql, _ in ALL_TYPES)
    pg.run(f"CREATE TABLE typed (driver_id BIGINT, event_timestamp TIMESTAMPTZ, {cols})")
    names = ", ".join(f'"{n}"' for n, _, _, _ in ALL_TYPES)
    marks = ", ".join(["%s"] * (len(ALL_TYPES) + 2))
    pg.run(f"INSERT INTO typed (driver_id, event_timestamp, {names}) VALUES ({marks})",
           [1, at("10:00")] + [v for _, _, _, v in ALL_TYPES])
    pg.run("INSERT INTO typed (driver_id, event_timestamp) VALUES (2, '2026-01-01 10:00+00')")
    view = FeatureView(name="typed", entities=[DRIVER], source=PostgreSQLSource(
        name="typed", table="typed", timestamp_field="event_timestamp"),
        schema=[Field(name=n, dtype=t) for n, t, _, _ in ALL_TYPES])
    store = make_store(DRIVER, view)
    entity = pa.table({"driver_id": pa.array([1, 2, 1], pa.int64()),
                       "event_timestamp": pa.array([at("11:00"), at("11:00"), at("09:00")])})
    table = store.get_historical_features(entity, [f"typed:{n}" for n, _, _, _ in ALL_TYPES]
                                          ).to_arrow()
    assert [table.schema.field(n).type for n, _, _, _ in ALL_TYPES] == \
        [t.to_arrow() for _, t, _, _ in ALL_TYPES]
    full, empty, before = table.to_pylist()
    assert {n: full[n] for n, _, _, _ in ALL_TYPES} == {n: v for n, _, _, v in ALL_TYPES}
    assert all(empty[n] is None and before[n] is None for n, _, _, _ in ALL_TYPES)


# NUMERIC values no float64 holds: 2**53 + 1, and 30 digits with a 10-digit fraction.
BIG_WHOLE = 2**53 + 1
WIDE = "12345678901234567890.1234567890"


def numeric_view(pg: Pg) -> FeatureView:
    pg.run("CREATE TABLE money (driver_id BIGINT, event_timestamp TIMESTAMPTZ, "
           "price NUMERIC(30, 10), whole NUMERIC(20, 0), free NUMERIC)")
    pg.run("INSERT INTO money VALUES "
           f"(1, '2026-01-01 10:00+00', {WIDE}, {BIG_WHOLE}, 0.1000), "
           "(2, '2026-01-01 10:00+00', -0.0000000001, -7, 'NaN'), "
           "(3, '2026-01-01 10:00+00', NULL, NULL, '-Infinity')")
    return FeatureView(name="money", entities=[DRIVER], ttl=None, source=PostgreSQLSource(
        name="money", table="money", timestamp_field="event_timestamp"),
        schema=[Field(name="price", dtype=String), Field(name="whole", dtype=Int64),
                Field(name="free", dtype=String)])


NUMERIC_FEATURES = ["money:price", "money:whole", "money:free"]
NUMERIC_EXPECTED = {"price": [WIDE, "-0.0000000001", None],
                    "whole": [BIG_WHOLE, -7, None], "free": ["0.1000", "NaN", "-Infinity"]}


def test_numeric_keeps_its_value_through_retrieval(pg, make_store):
    store = make_store(DRIVER, numeric_view(pg))
    entity = pa.table({"driver_id": pa.array([1, 2, 3], pa.int64()),
                       "event_timestamp": pa.array([at("11:00")] * 3)})
    got = store.get_historical_features(entity, NUMERIC_FEATURES).to_arrow()
    assert {k: got.column(k).to_pylist() for k in NUMERIC_EXPECTED} == NUMERIC_EXPECTED
    # from an entity query, a NUMERIC entity column comes back as its decimal
    sql = ("SELECT driver_id, TIMESTAMPTZ '2026-01-01 11:00+00' AS event_timestamp, "
           f"CAST({WIDE} AS NUMERIC(30, 10)) AS budget FROM money ORDER BY driver_id")
    got = store.get_historical_features(sql, NUMERIC_FEATURES).to_arrow()
    assert got.schema.field("budget").type == pa.decimal128(30, 10)
    assert got.column("budget").to_pylist() == [Decimal(WIDE)] * 3
    assert {k: got.column(k).to_pylist() for k in NUMERIC_EXPECTED} == NUMERIC_EXPECTED


def test_numeric_keeps_its_value_through_materialization(pg, make_store):
    store = make_store(DRIVER, numeric_view(pg))
    [result] = store.materialize(at("00:00"), at("12:00"))
    assert result.rows == 3
    online = store.get_online_features(NUMERIC_FEATURES, [{"driver_id": i} for i in (1, 2, 3)])
    assert {k: v for k, v in online.to_dict().items() if k != "driver_id"} == NUMERIC_EXPECTED


def test_numeric_as_float_is_the_nearest_double_and_inferred(pg, make_store):
    pg.run("CREATE TABLE prices (driver_id BIGINT, event_timestamp TIMESTAMPTZ, "
           "p NUMERIC(30, 10), special NUMERIC)")
    pg.run(f"INSERT INTO prices VALUES (1, '2026-01-01 10:00+00', {WIDE}, 'Infinity'), "
           "(2, '2026-01-01 10:00+00', 0.1, 'NaN')")
    view = FeatureView(name="prices", entities=[DRIVER], source=PostgreSQLSource(
        name="prices", table="prices", timestamp_field="event_timestamp"))
    store = make_store(DRIVER, view)
    # inferred as Feast does: NUMERIC is a Float64 feature
    assert [(f.name, f.dtype) for f in store.get_feature_view("prices").features] == \
        [("p", Float64), ("special", Float64)]
    entity = pa.table({"driver_id": pa.array([1, 2], pa.int64()),
                       "event_timestamp": pa.array([at("11:00")] * 2)})
    got = store.get_historical_features(entity, ["prices:p", "prices:special"]
                                        ).to_arrow().to_pylist()
    assert [r["p"] for r in got] == [float(WIDE), 0.1]
    assert got[0]["special"] == float("inf") and got[1]["special"] != got[1]["special"]


def test_entity_query_columns_of_other_types_read_as_postgres_text(pg, make_store):
    store = make_store(DRIVER, driver_stats(pg))
    sql = ("SELECT 1 AS driver_id, TIMESTAMPTZ '2026-01-01 10:30+00' AS event_timestamp, "
           "'6f1c0a4e-3c1b-4e0f-9a43-2a0f3c7b1d55'::uuid AS u, '{\"a\": [1, 2]}'::jsonb AS j, "
           "INTERVAL '1 day 02:00' AS i, ARRAY['x'::varchar] AS vs")
    got = store.get_historical_features(sql, ["driver_stats:trips"]).to_arrow().to_pylist()
    assert got == [{"driver_id": 1, "event_timestamp": at("10:30"),
                    "u": "6f1c0a4e-3c1b-4e0f-9a43-2a0f3c7b1d55", "j": '{"a": [1, 2]}',
                    "i": "1 day 02:00:00", "vs": ["x"], "trips": 10}]


@pytest.mark.parametrize("column, message", [
    ("'NaN'::numeric", "NUMERIC NaN has no decimal128"),
    ("12345678901234567890123.5::numeric", "does not fit"),  # 23 digits before the point
    ("'infinity'::timestamptz", "infinity"),
])
def test_values_arrow_cannot_hold_are_clear_errors(pg, make_store, column, message):
    from tiffin.errors import BackendError

    store = make_store(DRIVER, driver_stats(pg))
    sql = ("SELECT 1 AS driver_id, TIMESTAMPTZ '2026-01-01 10:30+00' AS event_timestamp, "
           f"{column} AS odd")
    with pytest.raises(BackendError, match=f"column 'odd'.*{message}"):
        store.get_historical_features(sql, ["driver_stats:trips"]).to_arrow()


def test_numeric_with_a_fraction_cannot_be_an_integer_feature(pg, make_store):
    pg.run("CREATE TABLE fares (driver_id BIGINT, event_timestamp TIMESTAMPTZ, "
           "fare NUMERIC(10, 2))")
    view = FeatureView(name="fares", entities=[DRIVER], schema=[Field(name="fare", dtype=Int64)],
                       source=PostgreSQLSource(name="fares", table="fares",
                                               timestamp_field="event_timestamp"))
    with pytest.raises(DefinitionError, match="declared Int64 but source 'fares' has "
                                              "decimal128"):
        make_store(DRIVER, view)


def test_source_schema_maps_postgres_types(pg, make_store):
    pg.run("CREATE TABLE wide (a SMALLINT, b NUMERIC(12, 3), c DATE, d TIMESTAMP, "
           "e TIMESTAMPTZ, f JSONB, g UUID, h INTEGER[], i TEXT)")
    store = make_store()
    schema = store.offline_store.source_schema(PostgreSQLSource(table="wide",
                                                                timestamp_field="d"))
    assert schema.types == [pa.int16(), pa.decimal128(12, 3), pa.date32(), pa.timestamp("us"),
                            pa.timestamp("us", "UTC"), pa.string(), pa.string(),
                            pa.list_(pa.int32()), pa.string()]


def test_missing_table_fails_at_apply_with_did_you_mean(pg, make_store):
    pg.run("CREATE TABLE driver_statistics (driver_id BIGINT, ts TIMESTAMPTZ, x BIGINT)")
    view = FeatureView(name="v", entities=[DRIVER], schema=[Field(name="x", dtype=Int64)],
                       source=PostgreSQLSource(name="s", table="driver_statistic",
                                               timestamp_field="ts"))
    with pytest.raises(DefinitionError, match="driver_statistic") as e:
        make_store(DRIVER, view)
    assert "did you mean 'driver_statistics'" in str(e.value)


def test_a_file_source_is_refused(pg, make_store, tmp_path):
    view = FeatureView(name="v", entities=[DRIVER], schema=[Field(name="x", dtype=Int64)],
                       source=FileSource(path=str(tmp_path / "x.parquet"), timestamp_field="ts"))
    with pytest.raises(DefinitionError, match="reads PostgreSQLSource, not FileSource"):
        make_store(DRIVER, view)


def test_settings_apply_to_sessions(pg, tmp_path):
    cfg = RepoConfig(project="it", registry=str(tmp_path / "r.json"), online_store=None,
                     offline_store={"type": "postgres", "host": PG_HOST, "db_schema": pg.schema,
                                    "settings": {"work_mem": "64MB", "jit": "off"}})
    with FeatureStore(config=cfg, repo_path=tmp_path) as store:
        with store.offline_store.session("checking") as con:
            assert con.execute("SHOW work_mem").fetchone() == ("64MB",)
            assert con.execute("SHOW TimeZone").fetchone() == ("UTC",)
            assert con.execute("SHOW search_path").fetchone()[0].startswith(f'"{pg.schema}"')


# -- materialization and push ---------------------------------------------------------------
def test_materialize_from_postgres_into_sqlite(pg, make_store):
    store = make_store(DRIVER, driver_stats(pg, ttl=None))  # online reads honour the ttl
    [result] = store.materialize(at("00:00"), at("10:30"))
    assert result.rows == 2
    online = store.get_online_features(["driver_stats:conv_rate", "driver_stats:trips"],
                                       [{"driver_id": 1}, {"driver_id": 2}, {"driver_id": 3}])
    assert online.to_dict() == {"driver_id": [1, 2, 3], "conv_rate": [1.5, 4.5, None],
                                "trips": [10, 40, None]}
    pg.run("INSERT INTO driver_stats VALUES (2, '2026-01-01 12:00+00', NULL, 5.5, 50)")
    store.materialize_incremental(at("23:00"))
    assert store.get_online_features(["driver_stats:trips"], [{"driver_id": 1},
                                                              {"driver_id": 2}]
                                     ).to_dict()["trips"] == [20, 50]


def test_push_offline_appends_to_the_table(pg, make_store):
    stats = driver_stats(pg, ttl=None)
    push = PushSource(name="stats_push", batch_source=stats.source)
    view = FeatureView(name="pushed", entities=[DRIVER], source=push,
                       schema=[Field(name="conv_rate", dtype=Float64),
                               Field(name="trips", dtype=Int64)])
    store = make_store(DRIVER, view)
    rows = {"driver_id": [3, 3], "event_timestamp": [at("10:00"), at("11:00")],
            "created": [at("10:00"), None], "conv_rate": [6.5, 7.5], "trips": [60, 70]}
    assert store.push("stats_push", rows, to=PushMode.ONLINE_AND_OFFLINE) == 2
    assert pg.run("SELECT driver_id, event_timestamp, created, trips FROM driver_stats "
                  "WHERE driver_id = 3 ORDER BY event_timestamp") == [
        (3, at("10:00"), at("10:00"), 60), (3, at("11:00"), None, 70)]
    job = store.get_historical_features(
        pa.table({"driver_id": [3], "event_timestamp": [at("11:30")]}), ["pushed:trips"])
    assert job.to_arrow().column("trips").to_pylist() == [70]
    assert store.get_online_features(["pushed:trips"], [{"driver_id": 3}]
                                     ).to_dict()["trips"] == [70]
    # a bad value anywhere rejects the whole push: nothing is appended
    with pytest.raises(RequestError):
        store.push("stats_push", {**rows, "trips": [1, "x"]}, to="offline")
    assert pg.run("SELECT count(*) FROM driver_stats WHERE driver_id = 3") == [(2,)]


def test_push_offline_into_numeric_columns_keeps_the_values(pg, make_store):
    view = numeric_view(pg)
    push = PushSource(name="money_push", batch_source=view.source)
    pushed = FeatureView(name="pushed_money", entities=[DRIVER], source=push, online=False,
                         schema=[Field(name="price", dtype=String)])
    store = make_store(DRIVER, pushed)
    rows = {"driver_id": [4, 5], "event_timestamp": [at("10:00")] * 2,
            "price": [Decimal(WIDE), None], "whole": [BIG_WHOLE, None],
            "free": [0.1, 2.5]}  # floats go in as their shortest text: 0.1, not 0.1000...055
    assert store.push("money_push", rows, to="offline") == 2
    assert pg.run("SELECT price::text, whole, free FROM money WHERE driver_id >= 4 "
                  "ORDER BY driver_id") == [(WIDE, BIG_WHOLE, Decimal("0.1")),
                                            (None, None, Decimal("2.5"))]
    # a float with more digits than the column's scale is refused, not rounded
    with pytest.raises(RequestError, match="'price' cannot be decimal128"):
        store.push("money_push", {**rows, "price": [0.123456789012, None]}, to="offline")
    assert pg.run("SELECT count(*) FROM money WHERE driver_id >= 4") == [(2,)]


def test_push_to_a_query_source_is_refused(pg, make_store):
    pg.run("CREATE TABLE t (driver_id BIGINT, ts TIMESTAMPTZ, x BIGINT)")
    push = PushSource(name="p", batch_source=PostgreSQLSource(
        name="q", query="SELECT * FROM t", timestamp_field="ts"))
    view = FeatureView(name="v", entities=[DRIVER], source=push,
                       schema=[Field(name="x", dtype=Int64)])
    store = make_store(DRIVER, view)
    with pytest.raises(RequestError, match="is a query"):
        store.push("p", {"driver_id": [1], "ts": [at("10:00")], "x": [1]}, to="offline")


# -- strategies -----------------------------------------------------------------------------
def test_auto_strategy_probes_an_index_on_keys_then_time(pg, make_store):
    store = make_store(DRIVER, driver_stats(pg))
    entity = pa.table({"driver_id": pa.array([1], pa.int64()),
                       "event_timestamp": pa.array([at("10:30")])})

    def strategy() -> str:
        sql = store.get_historical_features(entity, ["driver_stats:trips"]).to_sql()
        return "lateral" if "LATERAL" in sql else "sweep"

    assert strategy() == "sweep"  # no index: a probe per row would scan the table
    pg.run("CREATE INDEX wrong_order ON driver_stats (event_timestamp, driver_id)")
    pg.run("CREATE INDEX partial ON driver_stats (driver_id, event_timestamp) WHERE trips > 0")
    assert strategy() == "sweep"
    pg.run("CREATE INDEX by_key_time ON driver_stats (driver_id, event_timestamp, created)")
    assert strategy() == "lateral"
    assert store.get_historical_features(entity, ["driver_stats:trips"]).to_arrow().column(
        "trips").to_pylist() == [10]


def test_strategies_agree_with_duckdb(pg, make_store, tmp_path):
    """Random data (ties on event time broken by created) through every strategy, and
    through the DuckDB store over the same rows as Parquet: the same table each time."""
    import numpy as np
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    n, keys = 3000, 40
    minutes = rng.integers(0, 600, n)
    created = minutes * 60 + rng.permutation(n)  # unique: no two rows tie completely
    rows = pa.table({
        "driver_id": pa.array(rng.integers(0, keys, n), pa.int64()),
        "event_timestamp": pa.array([at("00:00") + timedelta(minutes=int(m)) for m in minutes],
                                    pa.timestamp("us", "UTC")),
        "created": pa.array([at("00:00") + timedelta(seconds=int(c)) for c in created],
                            pa.timestamp("us", "UTC")),
        "conv_rate": pa.array(rng.random(n)),
        "trips": pa.array(rng.integers(0, 100, n), pa.int64())})
    pg.run("CREATE TABLE driver_stats (driver_id BIGINT, event_timestamp TIMESTAMPTZ, "
           "created TIMESTAMPTZ, conv_rate DOUBLE PRECISION, trips BIGINT)")
    with pg.con.cursor().copy("COPY driver_stats FROM STDIN") as copy:
        for row in rows.to_pylist():
            copy.write_row(list(row.values()))
    pq.write_table(rows, tmp_path / "stats.parquet")
    entity = pa.table({"driver_id": pa.array(rng.integers(-2, keys + 2, 800), pa.int64()),
                       "event_timestamp": pa.array(
                           [at("00:00") + timedelta(seconds=int(s))
                            for s in rng.integers(-600, 40000, 800)], pa.timestamp("us", "UTC"))})
    features = ["driver_stats:conv_rate", "driver_stats:trips"]

    def view(source) -> FeatureView:
        return FeatureView(name="driver_stats", entities=[DRIVER], ttl=timedelta(hours=3),
                           schema=[Field(name="conv_rate", dtype=Float64),
                                   Field(name="trips", dtype=Int64)], source=source)

    store = make_store(DRIVER, view(PostgreSQLSource(
        name="s", table="driver_stats", timestamp_field="event_timestamp",
        created_timestamp_column="created")))
    from tiffin.offline.base import prepare_entity
    plan = store._plan(features, False)
    table, ts = prepare_entity(entity, plan)
    got = {s: store.offline_store.get_historical_features(table, ts, plan, False, strategy=s)
           .to_arrow() for s in ("sweep", "window", "lateral")}
    cfg = RepoConfig(project="ref", registry=str(tmp_path / "ref.json"), online_store=None)
    with FeatureStore(config=cfg, repo_path=tmp_path) as duck:
        duck.apply([DRIVER, view(FileSource(name="s", path=str(tmp_path / "stats.parquet"),
                                            timestamp_field="event_timestamp",
                                            created_timestamp_column="created"))])
        expected = duck.get_historical_features(entity, features).to_arrow()
    assert expected.column("trips").null_count not in (0, len(entity))  # both kinds of rows
    for strategy, result in got.items():
        assert result.equals(expected), strategy


def test_a_connection_lost_mid_job_is_store_unavailable(pg, make_store):
    import threading
    import time

    from tiffin.errors import StoreUnavailableError

    store = make_store(DRIVER, driver_stats(pg))
    marker = f"0.{uuid.uuid4().int % 10**8:08d}"  # finds this job's backend, and only it

    def kill() -> None:
        for _ in range(100):
            killed = pg.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE query LIKE %s AND pid <> pg_backend_pid()",
                            [f"%pg_sleep(3{marker})%"])
            if killed:
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill)
    killer.start()
    with pytest.raises(StoreUnavailableError, match="lost the connection to PostgreSQL"):
        store.get_historical_features(
            f"SELECT 1 AS driver_id, now() AS event_timestamp FROM pg_sleep(3{marker})",
            ["driver_stats:trips"]).to_arrow()
    killer.join()


def test_a_refused_login_is_a_terminal_error(pg, tmp_path):
    from tiffin.errors import BackendError, StoreUnavailableError

    cfg = RepoConfig(project="it", registry=str(tmp_path / "r.json"), online_store=None,
                     offline_store={"type": "postgres", "host": PG_HOST,
                                    "database": f"missing_{pg.schema}"})
    view = FeatureView(name="v", entities=[DRIVER], schema=[Field(name="x", dtype=Int64)],
                       source=PostgreSQLSource(name="s", table="s", timestamp_field="ts"))
    with FeatureStore(config=cfg, repo_path=tmp_path) as store:
        with pytest.raises(BackendError, match="refused the connection.*does not exist") as e:
            store.apply([DRIVER, view])
    assert not isinstance(e.value, StoreUnavailableError) and not e.value.transient
    assert "check user, password and database" in str(e.value)
