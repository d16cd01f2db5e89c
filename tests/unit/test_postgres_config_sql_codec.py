"""PostgreSQL offline store pieces that need no server: config, source definitions, the SQL
it generates (snapshots), the COPY codec, and the error when the server is unreachable."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from tiffin import (
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    PostgreSQLSource,
    RepoConfig,
    ValueType,
)
from tiffin.definitions import DataSource
from tiffin.errors import ConfigError, RequestError, StoreUnavailableError
from tiffin.offline.base import entity_query
from tiffin.offline.pit import LatestRows, PointInTimeJoin, SourceColumns, ViewJoin
from tiffin.offline.postgres.wire import (
    _array_literal,
    arrow_type,
    csv_chunks,
    ingest_ready,
    is_numeric_field,
    needs_text,
    numeric_type,
    to_target,
)
from tiffin.types import Float64, Int64, String

UTC = timezone.utc
SNAPSHOTS = Path(__file__).parent / "snapshots"


def pg_config(**kw) -> RepoConfig:
    return RepoConfig(project="demo", registry="data/registry.json",
                      offline_store={"type": "postgres", **kw})


# -- config ---------------------------------------------------------------------------------
def test_config_defaults_and_secret_password():
    cfg = pg_config(host="db", password="s3cret", db_schema="features").offline_store
    assert (cfg.host, cfg.port, cfg.database, cfg.user, cfg.db_schema) == \
        ("db", 5432, "postgres", "postgres", "features")
    assert "s3cret" not in repr(cfg) and "s3cret" not in str(pg_config(password="s3cret")
                                                              .redacted())
    assert cfg.connection_params()["password"] == "s3cret"


def test_config_feast_ssl_keys_become_libpq_keywords():
    cfg = pg_config(sslmode="verify-ca", sslkey_path="/k.pem", sslcert_path="/c.pem",
                    sslrootcert_path="/ca.pem", keepalives_idle=30).offline_store
    params = cfg.connection_params()
    assert (params["sslmode"], params["sslkey"], params["sslcert"], params["sslrootcert"],
            params["keepalives_idle"]) == ("verify-ca", "/k.pem", "/c.pem", "/ca.pem", "30")


@pytest.mark.parametrize("key, suggestion", [("hots", "host"), ("db_shema", "db_schema"),
                                             ("pasword", "password"), ("sslmod", "sslmode")])
def test_config_typo_says_did_you_mean(key, suggestion):
    with pytest.raises(ConfigError, match=f"did you mean '{suggestion}'"):
        pg_config(**{key: "x"})


@pytest.mark.parametrize("key, value", [("min_conn", 1), ("max_conn", 10),
                                        ("conn_type", "pool"), ("entity_select_mode", "temp_table")])
def test_config_feast_only_keys_are_accepted_with_a_warning(key, value):
    with pytest.warns(UserWarning, match=key):
        assert pg_config(**{key: value}).offline_store.type == "postgres"


def test_config_feast_class_path_means_postgres():
    cfg = pg_config(type="feast.infra.offline_stores.contrib.postgres_offline_store.postgres."
                         "PostgreSQLOfflineStore")
    assert cfg.offline_store.type == "postgres"


def test_config_bad_values_are_config_errors():
    with pytest.raises(ConfigError, match="port"):
        pg_config(port="not a port")
    with pytest.raises(ConfigError, match="setting name"):
        pg_config(settings={"work_mem; DROP TABLE x": "1"})


def test_config_from_the_environment(monkeypatch):
    monkeypatch.setenv("PGPASS_T", "from-env")
    assert pg_config(password="${PGPASS_T}").offline_store.password.get_secret_value() == \
        "from-env"


# -- the source definition ------------------------------------------------------------------
def test_postgres_source_round_trips_and_validates():
    src = PostgreSQLSource(name="stats", query="SELECT * FROM t WHERE x > 0 ;\n",
                           timestamp_field="ts", created_timestamp_column="created",
                           field_mapping={"raw": "rate"}, tags={"team": "a"})
    assert src.query == "SELECT * FROM t WHERE x > 0"
    again = DataSource.from_dict(src.to_dict())
    assert isinstance(again, PostgreSQLSource) and again == src and again.table is None
    assert PostgreSQLSource(table="analytics.stats", timestamp_field="ts").name == \
        "analytics.stats"
    with pytest.raises(ValueError, match="exactly one of table= or query="):
        PostgreSQLSource(name="x", table="t", query="SELECT 1")
    with pytest.raises(ValueError, match="exactly one of table= or query="):
        PostgreSQLSource(name="x")
    with pytest.raises(ValueError, match="needs a name"):
        PostgreSQLSource(query="SELECT 1")


def test_feast_import_path():
    from tiffin.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
        PostgreSQLSource as FromFeastPath,
    )
    assert FromFeastPath is PostgreSQLSource


# -- entity_df as SQL -----------------------------------------------------------------------
@pytest.mark.parametrize("text, is_query", [
    ("SELECT * FROM trips", True), ("  select 1", True), ("WITH x AS (SELECT 1) SELECT *", True),
    ("(SELECT 1)", True), ("VALUES (1)", True), ("data/entity.parquet", False),
    ("selection.parquet", False)])
def test_entity_query_detection(text, is_query):
    assert (entity_query(text) is not None) == is_query


def test_entity_query_that_is_an_existing_file_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("select 1").write_text("")
    assert entity_query("select 1") is None


def test_duckdb_store_rejects_entity_sql(tmp_path):
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"driver_id": pa.array([1], pa.int64()), "x": pa.array([1]),
                             "event_timestamp": pa.array([datetime(2026, 1, 1, tzinfo=UTC)])}),
                   tmp_path / "s.parquet")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(name="v", entities=[driver], schema=[Field(name="x", dtype=Int64)],
                       source=FileSource(path=str(tmp_path / "s.parquet"),
                                         timestamp_field="event_timestamp"))
    with FeatureStore(config=RepoConfig(project="p", registry=str(tmp_path / "r.json"),
                                        online_store=None), repo_path=tmp_path) as store:
        store.apply([driver, view])
        with pytest.raises(RequestError, match="cannot run entity_df as a SQL query") as e:
            store.get_historical_features("SELECT 1 AS driver_id", ["v:x"])
        assert "postgres" in str(e.value)


# -- an unreachable server ------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_a_clear_transient_error(tmp_path):
    port = _closed_port()
    cfg = RepoConfig(project="p", registry=str(tmp_path / "r.json"), online_store=None,
                     offline_store={"type": "postgres", "host": "127.0.0.1", "port": port,
                                    "password": "s3cret", "connect_timeout_seconds": 2})
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(name="v", entities=[driver], schema=[Field(name="x", dtype=Int64)],
                       source=PostgreSQLSource(name="s", table="s", timestamp_field="ts"))
    with FeatureStore(config=cfg, repo_path=tmp_path) as store:
        with pytest.raises(StoreUnavailableError) as e:
            store.apply([driver, view])
    err = e.value
    assert err.transient
    assert f"cannot connect to PostgreSQL at 127.0.0.1:{port}/postgres" in str(err)
    assert "is the server running" in str(err)
    assert "s3cret" not in str(err)


# -- SQL, as generated (a change shows as a diff of the snapshot) ---------------------------
def _join(strategy: str) -> PointInTimeJoin:
    src = SourceColumns(relation="analytics.driver_stats", timestamp="event_timestamp",
                        created="created", columns={"driver_id": "driver_id",
                                                    "conv_rate": "conv_rate", "city": "City"},
                        arrow_types={"event_timestamp": pa.timestamp("us", "UTC"),
                                     "created": pa.timestamp("us"),
                                     "driver_id": pa.int64(), "conv_rate": pa.float32(),
                                     "City": pa.string()})
    view = ViewJoin(alias="v0", source=src, join_keys=["driver_id"], entity_keys=["driver_id"],
                    features=[("conv_rate", "conv_rate", Float64), ("city", "city", String)],
                    ttl_seconds=3600.0)
    return PointInTimeJoin('"__tiffin_entity"', ["driver_id", "event_timestamp"], [view],
                           datetime(2026, 1, 1, 10, tzinfo=UTC),
                           datetime(2026, 1, 2, 10, tzinfo=UTC), strategy)


def _latest() -> LatestRows:
    src = _join("sweep").views[0].source
    return LatestRows(src, ["driver_id"], [("conv_rate", Float64)],
                      datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))


SQL_CASES = {"postgres_sweep": lambda: _join("sweep").render("postgres"),
             "postgres_window": lambda: _join("window").render("postgres"),
             "postgres_lateral": lambda: _join("lateral").render("postgres"),
             "postgres_latest": lambda: _latest().render("postgres")}


@pytest.mark.parametrize("name", list(SQL_CASES))
def test_generated_sql_matches_snapshot(name):
    """Regenerate with TIFFIN_UPDATE_SNAPSHOTS=1 and review the diff."""
    sql = SQL_CASES[name]().replace(" FROM ", "\n FROM ").replace(" UNION ALL ",
                                                                   "\nUNION ALL\n") + "\n"
    path = SNAPSHOTS / f"{name}.sql"
    if os.environ.get("TIFFIN_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(sql)
    assert sql == path.read_text()


def test_dialect_time_zones_and_types():
    sql = _join("sweep").render("postgres")
    assert "(\"event_timestamp\" AT TIME ZONE 'UTC')" in sql  # timestamptz: its UTC wall time
    assert 'CAST("created" AS TIMESTAMP)' in sql  # timestamp: already a UTC wall time
    assert "TIMESTAMP WITH TIME ZONE '2026-01-02T10:00:00+00:00'" in sql  # pruning, zoned
    assert 'CAST("conv_rate" AS DOUBLE PRECISION)' in sql  # float32 column, Float64 feature
    # lateral compares the raw column (so an index serves it): the entity time converts
    lateral = _join("lateral").render("postgres")
    assert "src.\"event_timestamp\" <= (e.__ts AT TIME ZONE 'UTC')" in lateral
    assert "ORDER BY src.\"event_timestamp\" DESC, src.\"created\" DESC NULLS LAST LIMIT 1" \
        in lateral


# -- the codec -------------------------------------------------------------------------------
@pytest.mark.parametrize("values, literal", [
    ([1, 2, None], "{1,2,NULL}"), ([], "{}"), (None, None),
    (["a,b", 'c"d', None, "NULL", "", "x\\y"], '{"a,b","c\\"d",NULL,"NULL","","x\\\\y"}'),
    ([1.5, float("nan")], "{1.5,NaN}"), ([True, False], "{t,f}")])
def test_array_literal(values, literal):
    assert _array_literal(values) == literal


def numeric_adbc() -> pa.DataType:
    """ADBC's NUMERIC type: opaque over its text (pyarrow 18+ knows the opaque type)."""
    return pa.opaque(pa.string(), type_name="numeric", vendor_name="PostgreSQL")


def numeric_text(values: list) -> pa.Array:
    """A column as ADBC's PostgreSQL driver hands NUMERIC over."""
    return pa.ExtensionArray.from_storage(numeric_adbc(), pa.array(values, pa.string()))


NUMERICS = ["12345678901234567890.1234567890", "-0.0000000001", "0.10", None]


def test_numeric_reads_exactly_as_decimal_and_text():
    col = numeric_text(NUMERICS)
    exact = [None if v is None else Decimal(v) for v in NUMERICS]
    assert to_target(col, pa.decimal128(30, 10)).to_pylist() == exact
    assert to_target(col, pa.string()).to_pylist() == NUMERICS
    assert to_target(col, pa.float64()).to_pylist() == \
        [None if v is None else float(v) for v in NUMERICS]  # the nearest double


def test_numeric_known_by_field_metadata_alone():
    """pyarrow before 18 sees ADBC's NUMERIC as plain text with the driver's metadata."""
    plain = pa.field("n", pa.string(), metadata={"POSTGRESQL:type": "numeric"})
    assert is_numeric_field(plain) and not is_numeric_field(pa.field("s", pa.string()))
    assert to_target(pa.array(["nan", "2.50"]), pa.string(), numeric=True).to_pylist() == \
        ["NaN", "2.50"]
    assert to_target(pa.array(["2.50"]), pa.decimal128(5, 2), numeric=True).to_pylist() == \
        [Decimal("2.50")]


def test_numeric_nan_and_infinity():
    col = numeric_text(["nan", "inf", "-inf", "1.5"])
    assert to_target(col, pa.string()).to_pylist() == ["NaN", "Infinity", "-Infinity", "1.5"]
    f = to_target(col, pa.float64()).to_pylist()
    assert f[0] != f[0] and f[1:] == [float("inf"), float("-inf"), 1.5]
    for target in (pa.decimal128(38, 18), pa.int64()):
        with pytest.raises(pa.ArrowInvalid, match="NUMERIC NaN has no"):
            to_target(col, target)


def test_numeric_as_integer_only_when_whole_and_in_range():
    assert to_target(numeric_text(["12.000", "-3", None, "9223372036854775807"]),
                     pa.int64()).to_pylist() == [12, -3, None, 2**63 - 1]
    for bad in ("12.5", "9223372036854775808"):
        with pytest.raises(pa.ArrowInvalid):
            to_target(numeric_text([bad]), pa.int64())


def test_numeric_that_does_not_fit_the_decimal_is_an_error_not_a_rounding():
    with pytest.raises(pa.ArrowInvalid):
        to_target(numeric_text(["0.1234567890123456789"]), pa.decimal128(38, 18))
    with pytest.raises(pa.ArrowInvalid):
        to_target(numeric_text(["1" + "0" * 20]), pa.decimal128(38, 18))


def test_numeric_arrays():
    t = pa.list_(numeric_adbc())
    col = pa.ListArray.from_arrays(pa.array([0, 2, 2, 3], pa.int32()),
                                   numeric_text(["1.5", None, "0.25"]), type=t,
                                   mask=pa.array([False, True, False]))
    assert to_target(col, pa.list_(pa.float64())).to_pylist() == [[1.5, None], None, [0.25]]


def test_infinite_timestamps_are_an_error():
    # ADBC's reading of 'infinity' and '-infinity': microseconds wrapped around near -2**63
    ts = pa.array([0, -9222425352054775809], pa.int64()).cast(pa.timestamp("us"))
    with pytest.raises(pa.ArrowInvalid, match="infinity"):
        to_target(ts, pa.timestamp("us", "UTC"))
    naive = pa.array([0, None], pa.int64()).cast(pa.timestamp("us"))
    assert to_target(naive, pa.timestamp("us", "UTC")).to_pylist() == \
        [datetime(1970, 1, 1, tzinfo=UTC), None]


@pytest.mark.parametrize("found, target, cast", [
    (pa.string(), pa.string(), None), (pa.binary(16), pa.string(), "text"),
    (pa.month_day_nano_interval(), pa.string(), "text"), (pa.int64(), pa.float64(), None),
    (pa.list_(pa.int32()), pa.list_(pa.string()), "text[]"),
    (pa.list_(pa.string()), pa.list_(pa.string()), None)])
def test_text_targets_get_postgres_text(found, target, cast):
    assert needs_text(found, target) == cast


def test_ingest_ready_types():
    table = pa.table({"d": pa.array(["a", "b"]).dictionary_encode(),
                      "u": pa.array([1, 2], pa.uint32()),
                      "ts": pa.array([1500, 2000], pa.timestamp("ns", "America/New_York")),
                      "i": pa.array([1, 2], pa.int8())})
    out = ingest_ready(table)
    assert out.schema.types == [pa.string(), pa.int64(), pa.timestamp("us", "UTC"),
                                pa.int16()]
    assert out.column("ts").cast(pa.int64()).to_pylist() == [1, 2]
    assert out.column("d").to_pylist() == ["a", "b"]


def test_csv_for_copy_in():
    table = pa.table({"s": ["", None, 'q"x'], "raw": [b"\x01", None, b""],
                      "l": [[1, None], None, []],
                      "ts": pa.array([1, 2, 3], pa.timestamp("ns", "UTC")),
                      "b": [True, False, None]})
    text = b"".join(csv_chunks(table)).decode()
    assert text.splitlines() == ['"","\\x01","{1,NULL}",1970-01-01 00:00:00.000000Z,true',
                                 ',,,1970-01-01 00:00:00.000000Z,false',
                                 '"q""x","\\x","{}",1970-01-01 00:00:00.000000Z,']


def test_csv_for_copy_in_writes_times_in_utc():
    """A zone-less PostgreSQL column drops an offset, so every instant is written in UTC."""
    ny = pa.array([datetime(2026, 1, 1, 10, tzinfo=UTC)], pa.timestamp("us", "UTC")).cast(
        pa.timestamp("ns", "America/New_York"))
    naive = pa.array([datetime(2026, 1, 1, 10)], pa.timestamp("ns"))
    assert b"".join(csv_chunks(pa.table({"ny": ny, "naive": naive}))) == \
        b"2026-01-01 10:00:00.000000Z,2026-01-01 10:00:00.000000\n"


@pytest.mark.parametrize("oid, arrow", [
    (20, pa.int64()), (23, pa.int32()), (701, pa.float64()),
    (1184, pa.timestamp("us", "UTC")), (1114, pa.timestamp("us")), (1043, pa.string()),
    (3802, pa.string()), (1016, pa.list_(pa.int64())), (1009, pa.list_(pa.string()))])
def test_postgres_types_as_arrow(oid, arrow):
    assert arrow_type(oid) == arrow


@pytest.mark.parametrize("precision, scale, arrow", [
    (12, 3, pa.decimal128(12, 3)), (38, 0, pa.decimal128(38, 0)),
    (50, 10, pa.decimal256(50, 10)), (3, -2, pa.decimal128(3, -2)),
    (3, 5, pa.decimal128(5, 5)), (None, None, pa.decimal128(38, 18)),
    (1000, 900, pa.string())])
def test_numeric_as_decimal(precision, scale, arrow):
    assert numeric_type(precision, scale) == arrow
    assert arrow_type(1700, precision, scale) == arrow


def test_ttl_is_honoured_in_generated_sql():
    sql = _join("sweep").render("postgres")
    assert f"INTERVAL '{round(timedelta(hours=1).total_seconds() * 1_000_000)} microseconds'" \
        in sql
