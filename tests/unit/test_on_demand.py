"""On-demand feature views: definitions, apply checks, online and offline transforms."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tiffin import FeatureStore, FieldStatus
from tiffin.errors import DefinitionError, EntityDataFrameError, TransformationError

NOW = datetime.now(timezone.utc).replace(microsecond=0)

DEFINITIONS = '''
from datetime import timedelta

import pandas as pd

from tiffin import (Entity, FeatureService, FeatureView, Field, FileSource, RequestSource,
                    ValueType)
from tiffin.on_demand_feature_view import on_demand_feature_view
from tiffin.feature_logging import LoggingConfig
from tiffin.infra.offline_stores.file_source import FileLoggingDestination
from tiffin.types import Float64, Int64

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
source = FileSource(name="stats_src", path="data/stats.parquet",
                    timestamp_field="event_timestamp")
stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=1), source=source,
                    schema=[Field(name="conv_rate", dtype=Float64),
                            Field(name="trips", dtype=Int64)])
request = RequestSource(name="vals", schema=[Field(name="val_to_add", dtype=Int64)])

SCALE = 10


@on_demand_feature_view(sources=[stats, request],
                        schema=[Field(name="conv_plus_val", dtype=Float64),
                                Field(name="trips_scaled", dtype=Int64)])
def adjusted(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame()
    out["conv_plus_val"] = inputs["conv_rate"] + inputs["val_to_add"]
    out["trips_scaled"] = inputs["trips"] * SCALE
    return out


@on_demand_feature_view(sources=[stats[["trips"]]], schema=[Field(name="double", dtype=Int64)],
                        mode="python")
def doubled(inputs: dict) -> dict:
    return {"double": [None if t is None else 2 * t for t in inputs["trips"]]}


svc = FeatureService(name="svc", features=[stats[["trips"]], adjusted[["conv_plus_val"]]],
                     logging_config=LoggingConfig(destination=FileLoggingDestination(path="d")))
'''


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({
        "driver_id": [1, 2],
        "event_timestamp": pa.array([NOW - timedelta(hours=1)] * 2, pa.timestamp("us", "UTC")),
        "conv_rate": [0.5, 0.25], "trips": [3, None]}), tmp_path / "data" / "stats.parquet")
    (tmp_path / "feature_store.yaml").write_text("project: odfv\nregistry: data/registry.json\n")
    (tmp_path / "definitions.py").write_text(DEFINITIONS)
    subprocess.run([sys.executable, "-m", "tiffin.cli", "apply"], cwd=tmp_path, check=True,
                   capture_output=True)
    return tmp_path


def test_online_in_a_process_that_did_not_define_it(repo):
    store = FeatureStore(repo_path=repo)
    store.materialize(NOW - timedelta(days=1), NOW)
    resp = store.get_online_features(
        ["adjusted:conv_plus_val", "stats:trips", "adjusted:trips_scaled", "doubled:double"],
        [{"driver_id": 1, "val_to_add": 10}, {"driver_id": 2, "val_to_add": 1},
         {"driver_id": 9, "val_to_add": 0}])
    assert resp.to_dict() == {"driver_id": [1, 2, 9], "conv_plus_val": [10.5, 1.25, None],
                              "trips": [3, None, None], "trips_scaled": [30, None, None],
                              "double": [6, None, None]}
    assert resp.statuses["conv_plus_val"] == [FieldStatus.PRESENT, FieldStatus.PRESENT,
                                              FieldStatus.NULL_VALUE]
    svc = store.get_online_features(store.get_feature_service("svc"),
                                    {"driver_id": [1], "val_to_add": [1]}).to_dict()
    assert svc == {"driver_id": [1], "trips": [3], "conv_plus_val": [1.5]}
    with pytest.raises(EntityDataFrameError, match="missing request field 'val_to_add'"):
        store.get_online_features(["adjusted:conv_plus_val"], [{"driver_id": 1}])


def test_offline(repo):
    store = FeatureStore(repo_path=repo)
    entity_df = pd.DataFrame({"driver_id": [2, 1, 1], "val_to_add": [1, 2, 3],
                              "event_timestamp": [NOW, NOW, NOW - timedelta(days=2)]})
    got = store.get_historical_features(
        entity_df, ["stats:conv_rate", "adjusted:conv_plus_val", "doubled:double"]).to_arrow()
    assert got.column_names == ["driver_id", "val_to_add", "event_timestamp", "conv_rate",
                                "conv_plus_val", "double"]
    assert got.column("conv_plus_val").to_pylist() == [1.25, 2.5, None]
    assert got.column("double").to_pylist() == [None, 6, None]
    with pytest.raises(Exception, match="val_to_add"):
        store.get_historical_features(entity_df.drop(columns=["val_to_add"]),
                                      ["adjusted:conv_plus_val"]).to_arrow()


def test_bad_definitions_and_failing_functions(repo):
    store = FeatureStore(repo_path=repo)
    from tiffin.on_demand_feature_view import on_demand_feature_view

    from tiffin import FeatureView, Field
    from tiffin.types import Float64
    stats = store.get_feature_view("stats")

    ghost = FeatureView(name="ghost", entities=["driver"], source=stats.source,
                        schema=[Field(name="conv_rate", dtype=Float64)])

    @on_demand_feature_view(sources=[ghost], schema=[Field(name="x", dtype=Float64)])
    def broken(inputs):
        return inputs

    with pytest.raises(DefinitionError, match="uses feature view 'ghost', which is not defined"):
        store.apply([broken])

    @on_demand_feature_view(sources=[stats], schema=[Field(name="x", dtype=Float64)])
    def raises(inputs):
        raise ZeroDivisionError("boom")

    store.apply([raises])
    store.materialize(NOW - timedelta(days=1), NOW)
    with pytest.raises(TransformationError, match="raises.*ZeroDivisionError: boom"):
        store.get_online_features(["raises:x"], [{"driver_id": 1}])


def test_function_survives_without_its_file(repo, monkeypatch):
    from tiffin.definitions import on_demand
    monkeypatch.setattr(on_demand, "_loaded", {})  # as in a fresh process
    (repo / "definitions.py").rename(repo / "moved.py")
    store = FeatureStore(repo_path=repo)
    store.materialize(NOW - timedelta(days=1), NOW)
    # Loaded from the stored source: module-level helpers (SCALE) are not there, so the
    # failure is explicit rather than a wrong value.
    got = store.get_online_features(["doubled:double"], [{"driver_id": 1}]).to_dict()
    assert got["double"] == [6]
    with pytest.raises(TransformationError, match="SCALE"):
        store.get_online_features(["adjusted:trips_scaled"],
                                  [{"driver_id": 1, "val_to_add": 1}])
