"""The spark pieces that need no Spark: the SQL the ``spark`` dialect renders (snapshots),
``SparkSource`` definitions, and the ``spark`` offline store and engine configs."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from tiffin import DataSource, ParquetFormat, RepoConfig, SparkSource
from tiffin.errors import ConfigError
from tiffin.offline.pit import LatestRows, PointInTimeJoin, SourceColumns, SparkDialect, ViewJoin
from tiffin.types import Array, Float64, Int64, String

UTC = timezone.utc
SNAPSHOTS = Path(__file__).parent / "snapshots"


# -- SQL, as generated (a change shows as a diff of the snapshot) ---------------------------
def _join(strategy: str, ordered: bool = True) -> PointInTimeJoin:
    src = SourceColumns(relation="`tiffin_src_0123`", timestamp="event_timestamp",
                        created="created", columns={"driver_id": "driver_id",
                                                    "conv_rate": "conv_rate", "city": "City`s"},
                        arrow_types={"event_timestamp": pa.timestamp("us", "UTC"),
                                     "created": pa.timestamp("us"),
                                     "driver_id": pa.int64(), "conv_rate": pa.float32(),
                                     "City`s": pa.string()})
    view = ViewJoin(alias="v0", source=src, join_keys=["driver_id"], entity_keys=["driver_id"],
                    features=[("conv_rate", "conv_rate", Float64), ("city", "city", String)],
                    ttl_seconds=3600.000001)
    return PointInTimeJoin("`tiffin_entity_0123`", ["__row_id"], [view],
                           datetime(2026, 1, 1, 10, tzinfo=UTC),
                           datetime(2026, 1, 2, 10, tzinfo=UTC), strategy, ordered=ordered)


def _latest() -> LatestRows:
    src = _join("sweep").views[0].source
    return LatestRows(src, ["driver_id"], [("conv_rate", Float64), ("city", String)],
                      datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))


SQL_CASES = {"spark_sweep": lambda: _join("sweep").render("spark"),
             "spark_window_unordered": lambda: _join("window", ordered=False).render("spark"),
             "spark_latest": lambda: _latest().render("spark")}


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


def test_spark_dialect_pieces():
    d = SparkDialect()
    sql = _join("window").render(d)
    assert "`City``s`" in sql  # backticks, doubled inside
    assert "`event_timestamp` AS __event_ts" in sql  # TIMESTAMP_LTZ: already the instant
    assert "CAST(`created` AS TIMESTAMP_LTZ) AS __created_ts" in sql  # NTZ: a UTC wall time
    assert "CAST(`conv_rate` AS DOUBLE)" in sql  # float column, Float64 feature
    assert "TIMESTAMP_LTZ '2026-01-02 10:00:00+00:00'" in sql  # pruning, zoned column
    assert "INTERVAL '3600000001' MICROSECOND" in sql  # the ttl, to the microsecond
    assert sql.endswith("ORDER BY e.__row_id")
    assert "ORDER BY e.__row_id" not in _join("window", ordered=False).render(d)
    naive = datetime(2026, 1, 1, 10, 0, 0, 5, tzinfo=UTC)
    assert d.timestamp_literal(naive, zoned=False) == "TIMESTAMP_NTZ '2026-01-01 10:00:00.000005'"
    assert d.sql_type(Array(Int64)) == "ARRAY<BIGINT>"
    assert d.struct([("a'b", "x")]) == "named_struct('a\\'b', x)"


# -- SparkSource -----------------------------------------------------------------------------
SOURCES = {
    "table": SparkSource(name="stats", table="db.driver_stats", timestamp_field="ts",
                         created_timestamp_column="created", field_mapping={"a": "b"},
                         description="d", tags={"t": "1"}, owner="o"),
    "query": SparkSource(name="recent", query="SELECT * FROM stats WHERE x > 1",
                         timestamp_field="ts"),
    "path": SparkSource(path="data/stats", file_format="parquet", timestamp_field="ts",
                        date_partition_column="day"),
}


@pytest.mark.parametrize("kind", list(SOURCES))
def test_source_round_trips_as_a_dict(kind):
    src = SOURCES[kind]
    back = DataSource.from_dict(src.to_dict())
    assert type(back) is SparkSource and back == src and back.to_dict() == src.to_dict()


def test_source_names_and_formats():
    assert SOURCES["table"].name == "stats"
    assert SOURCES["path"].name == "data/stats"  # like FileSource: the path
    fmt = SparkSource(name="p", path="x", file_format=ParquetFormat(), timestamp_field="t")
    assert fmt.file_format == "parquet"
    assert SparkSource(name="p", path="x", file_format="CSV").file_format == "csv"
    assert SOURCES["path"].resolved_path("/repo") == "/repo/data/stats"
    assert SparkSource(path="s3a://b/x", file_format="orc").resolved_path("/repo") == "s3a://b/x"


SOURCE_ERRORS = {
    "nothing": (dict(name="x"), "exactly one of"),
    "two": (dict(name="x", table="t", query="SELECT 1"), "got table, query"),
    "path_without_format": (dict(path="data/x"), "needs file_format"),
    "format_without_path": (dict(table="t", file_format="parquet"), "goes with path"),
    "unknown_format": (dict(path="x", file_format="xlsx"), "'xlsx' is not one of"),
    "query_without_name": (dict(query="SELECT 1"), "needs a name"),
    "table_format": (dict(table="t", table_format=object()), "table_format"),
}


@pytest.mark.parametrize("case", list(SOURCE_ERRORS))
def test_source_definition_errors(case):
    kwargs, needle = SOURCE_ERRORS[case]
    with pytest.raises(ValueError, match=needle):
        SparkSource(timestamp_field="ts", **kwargs)


def test_feast_import_path():
    from tiffin.infra.offline_stores.contrib.spark_offline_store.spark_source import (
        SparkSource as Aliased,
    )
    assert Aliased is SparkSource


# -- config ----------------------------------------------------------------------------------
def config(offline=None, engine=None) -> RepoConfig:
    return RepoConfig(project="x", registry="r.json", offline_store=offline or {"type": "spark"},
                      batch_engine=engine or {"type": "local"})


def test_config_accepts_feast_keys_and_names_and_coerces_values():
    with pytest.warns(UserWarning) as caught:
        cfg = config({"type": "spark", "staging_location": "s3://b/x", "region": "eu",
                      "spark_conf": {"spark.sql.shuffle.partitions": 8,
                                     "spark.sql.adaptive.enabled": False}})
    assert sorted(str(w.message).split("'")[1] for w in caught) == ["region",
                                                                    "staging_location"]
    assert cfg.offline_store.spark_conf == {"spark.sql.shuffle.partitions": "8",
                                            "spark.sql.adaptive.enabled": "false"}
    assert cfg.offline_store.join_strategy == "sweep"
    feast = config({"type": "feast.infra.offline_stores.contrib.spark_offline_store.spark."
                            "SparkOfflineStore"})
    assert feast.offline_store.type == "spark"
    engine = config(engine={"type": "spark.engine", "partitions": 4}).batch_engine
    assert (engine.type, engine.partitions) == ("spark", 4)


CONFIG_ERRORS = {
    "typo": ({"type": "spark", "spark_confs": {}}, None, "did you mean 'spark_conf'"),
    "not_a_mapping": ({"type": "spark", "spark_conf": "local"}, None, "mapping"),
    "nested_value": ({"type": "spark", "spark_conf": {"a": {"b": 1}}}, None, "spark_conf"),
    "zone": ({"type": "spark", "spark_conf": {"spark.sql.session.timeZone": "Europe/Paris"}},
             None, "UTC"),
    "strategy": ({"type": "spark", "join_strategy": "asof"}, None, "join_strategy"),
    "partitions": (None, {"type": "spark", "partitions": -1}, "partitions"),
    "engine_typo": (None, {"type": "spark", "partition": 2}, "did you mean 'partitions'"),
}


@pytest.mark.parametrize("case", list(CONFIG_ERRORS))
def test_config_errors(case):
    offline, engine, needle = CONFIG_ERRORS[case]
    with pytest.raises(ConfigError) as e:
        config(offline, engine)
    assert needle in f"{e.value} {e.value.hint}"


def test_missing_pyspark_names_the_extra(monkeypatch):
    import sys

    from tiffin.errors import MissingDependencyError
    from tiffin.offline.spark.store import spark_session
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(MissingDependencyError) as e:
        spark_session({})
    assert "tiffin[spark]" in e.value.hint

