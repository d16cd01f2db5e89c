"""Definitions, their validation at apply, their dict round trip, and the type mapping."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tiffin import (
    BatchFeatureView,
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    Project,
    PushSource,
    RepoConfig,
    RequestSource,
    ValueType,
)
from tiffin.definitions import DataSource
from tiffin.errors import DefinitionError, TiffinError
from tiffin.types import (
    Array,
    Bool,
    Bytes,
    Float32,
    Float64,
    Int32,
    Int64,
    String,
    UnixTimestamp,
    compatible,
    from_arrow,
    from_name,
    from_value_type,
)

THIS_FILE = Path(__file__).name
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def stats_table() -> pa.Table:
    return pa.table({
        "driver_id": pa.array([1, 2, 1], pa.int64()),
        "event_timestamp": pa.array([T0, T0, T0 + timedelta(hours=1)], pa.timestamp("us", "UTC")),
        "created": pa.array([T0, T0, T0 + timedelta(hours=1)], pa.timestamp("us", "UTC")),
        "conv_rate": pa.array([0.1, 0.2, 0.3], pa.float32()),
        "trips": pa.array([10, 20, 30], pa.int64()),
        "city": pa.array(["Lisbon", "Porto", "Lisbon"]),
    })


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    pq.write_table(stats_table(), tmp_path / "data" / "stats.parquet")
    return tmp_path


@pytest.fixture
def store(repo: Path):
    cfg = RepoConfig(project="demo", registry=str(repo / "data" / "registry.json"),
                     online_store={"type": "sqlite", "path": str(repo / "data" / "online.db")})
    fs = FeatureStore(repo_path=repo, config=cfg)
    yield fs
    fs.close()


def driver() -> Entity:
    return Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)


def source(**kw) -> FileSource:
    args = {"name": "stats_source", "path": "data/stats.parquet",
            "timestamp_field": "event_timestamp", "created_timestamp_column": "created"}
    return FileSource(**{**args, **kw})


def view(name: str = "stats", *, schema=None, entities=None, src=None, **kw) -> FeatureView:
    if schema is None:
        schema = [Field(name="conv_rate", dtype=Float32), Field(name="trips", dtype=Int64)]
    return FeatureView(name=name, entities=entities if entities is not None else [driver()],
                       schema=schema, source=src if src is not None else source(),
                       ttl=timedelta(days=1), **kw)


def assert_definition_error(err: DefinitionError, *words: str) -> None:
    """Every definition error names the object, what is wrong, and where it was defined."""
    assert isinstance(err, ValueError)
    assert isinstance(err, TiffinError)
    text = str(err)
    for w in words:
        assert w in text, f"{w!r} not in {text!r}"
    assert "defined at" in text
    assert THIS_FILE in text


# -- apply-time validation ------------------------------------------------------------------

def test_valid_definitions_apply(store):
    diff = store.apply([driver(), view()])
    assert {(c.op, c.kind, c.name) for c in diff.changes} >= {
        ("create", "entities", "driver"), ("create", "feature_views", "stats"),
        ("create", "data_sources", "stats_source")}
    fv = store.get_feature_view("stats")
    assert [f.name for f in fv.features] == ["conv_rate", "trips"]
    assert fv.join_keys == ["driver_id"]
    assert fv.entity_columns[0].dtype == Int64


def test_schema_field_missing_from_source(store):
    bad = view(schema=[Field(name="conv_rat", dtype=Float32)])
    with pytest.raises(DefinitionError) as info:
        store.apply([driver(), bad])
    assert_definition_error(info.value, "'stats'", "'conv_rat'", "stats_source")
    assert info.value.hint == "did you mean 'conv_rate'?"


def test_join_key_absent_from_source(store):
    rider = Entity(name="rider", join_keys=["rider_id"], value_type=ValueType.INT64)
    with pytest.raises(DefinitionError) as info:
        store.apply([rider, view(entities=[rider])])
    assert_definition_error(info.value, "'stats'", "join key", "'rider_id'")


@pytest.mark.parametrize("kw, role, column", [
    ({"timestamp_field": "event_ts"}, "timestamp_field", "'event_ts'"),
    ({"created_timestamp_column": "created_at"}, "created_timestamp_column", "'created_at'"),
])
def test_time_columns_absent_from_source(store, kw, role, column):
    with pytest.raises(DefinitionError) as info:
        store.apply([driver(), view(src=source(**kw))])
    assert_definition_error(info.value, "'stats'", role, column)


def test_missing_timestamp_field(store):
    with pytest.raises(DefinitionError, match="timestamp_field") as info:
        store.apply([driver(), view(src=source(timestamp_field=""))])
    assert "stats_source" in str(info.value)


@pytest.mark.parametrize("field, column", [
    (Field(name="trips", dtype=String), "trips"),
    (Field(name="city", dtype=Int64), "city"),
    (Field(name="conv_rate", dtype=Array(Float32)), "conv_rate"),
])
def test_declared_type_incompatible_with_source(store, field, column):
    with pytest.raises(DefinitionError) as info:
        store.apply([driver(), view(schema=[field])])
    assert_definition_error(info.value, "'stats'", repr(column), str(field.dtype))


def test_widening_numeric_types_are_accepted(store):
    store.apply([driver(), view(schema=[Field(name="conv_rate", dtype=Float64),
                                        Field(name="trips", dtype=Float64)])])
    assert [str(f.dtype) for f in store.get_feature_view("stats").features] == \
        ["Float64", "Float64"]


def test_view_uses_undefined_entity(store):
    fv = view(entities=["drivr"])
    with pytest.raises(DefinitionError) as info:
        store.apply([driver(), fv])
    assert_definition_error(info.value, "'stats'", "'drivr'")
    assert info.value.hint == "did you mean 'driver'?"


def test_view_may_use_entity_applied_earlier(store):
    store.apply([driver()])
    store.apply([view(entities=["driver"])])
    assert store.get_feature_view("stats").entities == ["driver"]


def test_feature_service_asks_for_missing_feature(store):
    fv = view()
    svc = FeatureService(name="model", features=[fv])
    # Bypass the projection check __getitem__ does, as a view with an inferred schema would.
    svc.projections[0]["features"] = ["conv_rat"]
    with pytest.raises(DefinitionError) as info:
        store.apply([driver(), fv, svc])
    assert_definition_error(info.value, "'model'", "'conv_rat'", "'stats'")
    assert info.value.hint == "did you mean 'conv_rate'?"


def test_projection_of_unknown_feature_fails_at_definition():
    with pytest.raises(KeyError, match="nope"):
        view()[["nope"]]


def test_feature_service_on_inferred_view_checks_features(store):
    fv = view(schema=[])  # schema inferred at apply, so __getitem__ cannot check
    svc = FeatureService(name="model", features=[fv[["convrate"]]])
    with pytest.raises(DefinitionError) as info:
        store.apply([driver(), fv, svc])
    assert_definition_error(info.value, "'model'", "'convrate'")


@pytest.mark.parametrize("make_pair", [
    lambda: (driver(), Entity(name="driver", join_keys=["driver_key"],
                              value_type=ValueType.INT64)),
    lambda: (view(), view(schema=[Field(name="trips", dtype=Int64)])),
    lambda: (source(), source(timestamp_field="created")),
], ids=["entity", "feature_view", "data_source"])
def test_two_different_objects_with_one_name(store, make_pair):
    a, b = make_pair()
    objects = [driver(), a, b] if not isinstance(a, Entity) else [a, b]
    with pytest.raises(DefinitionError) as info:
        store.apply(objects)
    text = str(info.value)
    assert repr(a.name) in text
    assert THIS_FILE in text


def test_equal_duplicates_are_fine(store):
    store.apply([driver(), driver(), view()])
    assert [e.name for e in store.list_entities()] == ["driver"]


def test_source_path_does_not_exist(store, repo):
    with pytest.raises(DefinitionError) as info:
        store.apply([driver(), view(src=source(path="data/missing.parquet"))])
    text = str(info.value)
    assert "stats_source" in text
    assert "missing.parquet" in text
    assert "defined at" in text and THIS_FILE in text


def test_project_must_match_yaml(store):
    with pytest.raises(DefinitionError) as info:
        store.apply([Project(name="other", description="x")])
    assert_definition_error(info.value, "'other'", "'demo'")


def test_matching_project_applies(store):
    store.apply([Project(name="demo", description="Demo project")])
    assert store.registry.get("projects", "demo").description == "Demo project"


def test_view_without_entities_is_rejected(store):
    with pytest.raises(DefinitionError, match="no entities"):
        store.apply([view(entities=[])])


def test_request_source_cannot_feed_feature_view(store):
    rs = RequestSource(name="req", schema=[Field(name="x", dtype=Int64)])
    with pytest.raises(DefinitionError, match="RequestSource"):
        store.apply([driver(), view(src=rs)])


def test_push_source_without_batch_source_is_rejected(store):
    with pytest.raises(DefinitionError, match="batch_source"):
        store.apply([driver(), view(src=PushSource(name="push"))])


# -- inference and field mapping -----------------------------------------------------------

def test_schema_inferred_from_source(store):
    store.apply([driver(), view(schema=[])])
    fv = store.get_feature_view("stats")
    assert {f.name: f.dtype for f in fv.features} == {
        "conv_rate": Float32, "trips": Int64, "city": String}
    assert fv.join_keys == ["driver_id"]


def test_entity_type_inferred_from_source(store):
    with pytest.warns(UserWarning, match="value_type"):
        rider = Entity(name="driver", join_keys=["driver_id"])
    store.apply([rider, view(entities=[rider])])
    assert store.get_feature_view("stats").entity_columns[0].dtype == Int64


def test_field_mapping_is_honoured(store):
    src = source(field_mapping={"trips": "trip_count", "driver_id": "driver"})
    ent = Entity(name="d", join_keys=["driver"], value_type=ValueType.INT64)
    fv = view(entities=[ent], src=src, schema=[Field(name="trip_count", dtype=Int64)])
    store.apply([ent, fv])
    applied = store.get_feature_view("stats")
    assert [f.name for f in applied.features] == ["trip_count"]
    assert applied.join_keys == ["driver"]


def test_field_mapping_missing_raw_column(store):
    src = source(field_mapping={"trip": "trip_count"})
    with pytest.raises(DefinitionError) as info:
        store.apply([driver(), view(src=src, schema=[Field(name="trip_count", dtype=Int64)])])
    # The raw column the mapping points at is what is missing.
    assert_definition_error(info.value, "'stats'", "'trip'")
    assert info.value.hint == "did you mean 'trips'?"


# -- round trip ------------------------------------------------------------------------------

def round_trip_objects() -> list:
    src = source(description="stats", tags={"a": "b"}, owner="me@example.com")
    fv = view(src=src, description="d", tags={"team": "x"}, owner="o", online=False)
    return [
        driver(),
        Entity(name="rider", join_keys=["rider_id"], value_type=ValueType.STRING,
               description="r", tags={"k": "v"}, owner="o"),
        src,
        PushSource(name="push", batch_source=src, description="p"),
        RequestSource(name="req", schema=[Field(name="amount", dtype=Float64, description="x"),
                                          Field(name="ids", dtype=Array(Int64))]),
        fv,
        FeatureView(
            name="no_ttl", entities=[driver()], source=src, ttl=None,
            schema=[Field(name="city", dtype=String, tags={"pii": "no"})]),
        FeatureService(name="svc", features=[fv[["conv_rate"]], fv.with_name("alias")],
                       description="s", tags={"m": "1"}),
        Project(name="demo", description="Demo"),
    ]


@pytest.mark.parametrize("obj", round_trip_objects(), ids=lambda o: f"{type(o).__name__}-{o.name}")
def test_to_dict_from_dict_round_trip(obj):
    data = obj.to_dict()
    cls = DataSource if isinstance(obj, DataSource) else type(obj)
    back = cls.from_dict(data)
    assert type(back) is type(obj)
    assert back == obj
    assert back.to_dict() == data


def test_applied_view_round_trips_through_registry(store):
    store.apply([driver(), view(schema=[])])
    fv = store.get_feature_view("stats", allow_registry_cache=False)
    assert FeatureView.from_dict(fv.to_dict()) == fv


# -- apply semantics -------------------------------------------------------------------------

def test_apply_twice_is_no_op(store):
    objs = [driver(), view(), FeatureService(name="svc", features=[view()[["trips"]]])]
    first = store.apply(objs)
    assert first
    second = store.apply(objs)
    assert not second
    assert str(second).startswith("No changes")
    assert second.unchanged == len(first.changes)


def test_plan_does_not_change_registry(store):
    diff = store.plan([driver(), view()])
    assert diff.of("create")
    assert store.list_feature_views(allow_cache=False) == []


def test_update_is_reported(store):
    store.apply([driver(), view()])
    diff = store.apply([view(description="new text")])
    (change,) = diff.changes
    assert (change.op, change.kind, change.name) == ("update", "feature_views", "stats")
    assert "description" in str(change)


def test_sdk_apply_is_additive(store):
    store.apply([driver(), view("first")])
    store.apply([view("second")])
    names = sorted(v.name for v in store.list_feature_views(allow_cache=False))
    assert names == ["first", "second"]


def test_objects_to_delete(store):
    first, second = view("first"), view("second")
    store.apply([driver(), first, second])
    diff = store.apply([], objects_to_delete=[first])
    assert [(c.op, c.name) for c in diff.changes] == [("delete", "first")]
    assert [v.name for v in store.list_feature_views(allow_cache=False)] == ["second"]


def test_partial_false_deletes_absent_objects(store):
    store.apply([driver(), view("first"), view("second")])
    diff = store.apply([driver(), view("second")], partial=False)
    assert [(c.op, c.kind, c.name) for c in diff.changes] == [("delete", "feature_views", "first")]
    assert [v.name for v in store.list_feature_views(allow_cache=False)] == ["second"]
    assert [e.name for e in store.list_entities(allow_cache=False)] == ["driver"]


def test_get_unknown_view_suggests(store):
    store.apply([driver(), view()])
    with pytest.raises(KeyError) as info:
        store.get_feature_view("stat")
    assert "did you mean 'stats'?" in str(info.value)


# -- definition-time checks ------------------------------------------------------------------

def test_entity_without_value_type_warns():
    with pytest.warns(UserWarning, match="driver"):
        e = Entity(name="driver", join_keys=["driver_id"])
    assert e.value_type is None


def test_entity_join_key_defaults_to_name():
    assert Entity(name="driver_id", value_type=ValueType.INT64).join_key == "driver_id"


def test_entity_with_two_join_keys_rejected():
    with pytest.raises(ValueError, match="one join key"):
        Entity(name="x", join_keys=["a", "b"], value_type=ValueType.INT64)


@pytest.mark.parametrize("make, exc", [
    (lambda: FeatureView(name="v", entities=[], schema=[]), ValueError),
    (lambda: FeatureView(name="v", source="data/x.parquet", entities=[]), TypeError),
    (lambda: Field(name="f", dtype=int), TypeError),
    (lambda: Array(Array(Int64)), TypeError),
    (lambda: FileSource(path="x.csv", file_format="csv"), ValueError),
    (lambda: FeatureService(name="s", features=["stats:conv_rate"]), TypeError),
    (lambda: FeatureView(name="v", source=source(), ttl=timedelta(seconds=-1)), ValueError),
    (lambda: Entity(name="", value_type=ValueType.INT64), TypeError),
])
def test_invalid_constructor_arguments(make, exc):
    with pytest.raises(exc):
        make()


@pytest.mark.parametrize("ttl, expected", [
    (timedelta(days=1), timedelta(days=1)), (timedelta(0), None), (None, None), (3600, timedelta(hours=1)),
])
def test_ttl_normalisation(ttl, expected):
    fv = FeatureView(name="v", source=source(), ttl=ttl)
    assert fv.ttl == expected


def test_projection_helpers():
    fv = view()
    proj = fv.with_name("alias").with_join_key_map({"driver_id": "rider_id"})[["trips"]]
    assert proj.projected_name == "alias"
    assert proj.projected_join_keys() == ["rider_id"]
    assert [f.name for f in proj.projected_features] == ["trips"]
    # The original is untouched.
    assert fv.projected_name == "stats" and len(fv.projected_features) == 2


def test_batch_feature_view_is_feature_view():
    bfv = BatchFeatureView(name="b", source=source(), entities=[driver()])
    assert isinstance(bfv, FeatureView)


def test_file_source_name_defaults_to_path():
    assert FileSource(path="data/a.parquet", timestamp_field="ts").name == "data/a.parquet"


def test_push_source_inherits_batch_time_columns():
    push = PushSource(name="push", batch_source=source())
    assert push.timestamp_field == "event_timestamp"
    assert push.created_timestamp_column == "created"
    assert push.batch.name == "stats_source"


def test_origin_points_at_this_file():
    e = driver()
    assert e.origin is not None and THIS_FILE in e.origin
    assert f"defined at {e.origin}" in e.where()


# -- types ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, arrow", [
    (Int64, pa.int64()), (Int32, pa.int32()), (Float32, pa.float32()), (Float64, pa.float64()),
    (String, pa.string()), (Bool, pa.bool_()), (Bytes, pa.binary()),
    (UnixTimestamp, pa.timestamp("us", tz="UTC")),
    (Array(String), pa.list_(pa.string())), (Array(Int64), pa.list_(pa.int64())),
    (Array(Float32), pa.list_(pa.float32())),
])
def test_types_to_arrow(dtype, arrow):
    assert dtype.to_arrow() == arrow
    assert from_arrow(arrow) == dtype
    assert from_name(str(dtype)) == dtype


@pytest.mark.parametrize("name, number", [
    ("UNKNOWN", 0), ("BYTES", 1), ("STRING", 2), ("INT32", 3), ("INT64", 4), ("DOUBLE", 5),
    ("FLOAT", 6), ("BOOL", 7), ("UNIX_TIMESTAMP", 8), ("BYTES_LIST", 11), ("STRING_LIST", 12),
    ("INT32_LIST", 13), ("INT64_LIST", 14), ("DOUBLE_LIST", 15), ("FLOAT_LIST", 16),
    ("BOOL_LIST", 17), ("UNIX_TIMESTAMP_LIST", 18),
])
def test_value_type_numbers_match_feast(name, number):
    assert ValueType[name] == number


@pytest.mark.parametrize("dtype, value_type", [
    (Int64, ValueType.INT64), (String, ValueType.STRING), (Float64, ValueType.DOUBLE),
    (Float32, ValueType.FLOAT), (Bool, ValueType.BOOL), (UnixTimestamp, ValueType.UNIX_TIMESTAMP),
    (Array(Int64), ValueType.INT64_LIST), (Array(String), ValueType.STRING_LIST),
])
def test_types_to_value_type_and_back(dtype, value_type):
    assert dtype.to_value_type() == value_type
    assert from_value_type(value_type) == dtype


@pytest.mark.parametrize("declared, arrow, ok", [
    (Int64, pa.int32(), True), (Float64, pa.float32(), True), (Float32, pa.int64(), True),
    (String, pa.int64(), False), (Int64, pa.string(), False), (Bool, pa.int8(), False),
    (Array(Float64), pa.list_(pa.float32()), True), (Array(String), pa.list_(pa.int64()), False),
    (String, pa.large_string(), True),
    # decimals: floats take the nearest value, String the exact text, integers whole values
    (Float64, pa.decimal128(12, 3), True), (String, pa.decimal128(12, 3), True),
    (Int64, pa.decimal128(12, 3), False), (Int64, pa.decimal128(20, 0), True),
    (Int32, pa.decimal256(50, 0), True), (Bool, pa.decimal128(12, 3), False),
])
def test_compatible(declared, arrow, ok):
    assert compatible(declared, arrow) is ok


def test_decimal_from_text_is_exact_or_an_error():
    from decimal import Decimal

    from tiffin.types import decimal_from_text

    text = pa.array(["-12.50", "1.5e+3", None, "0.000000000000000001"])
    assert decimal_from_text(text, pa.decimal128(38, 18)).to_pylist() == \
        [Decimal("-12.5"), Decimal(1500), None, Decimal("1e-18")]
    # pyarrow alone turns these into other numbers (the scaled-up value wraps around)
    for wide in ("12345678901234567890123", "1.5e+22"):
        with pytest.raises(pa.ArrowInvalid, match="does not fit"):
            decimal_from_text(pa.array([wide]), pa.decimal128(38, 18))
    for wide in ("-99999999999999999999999.5", "1" + "0" * 60):
        with pytest.raises(pa.ArrowInvalid):
            decimal_from_text(pa.array([wide]), pa.decimal128(38, 18))
    for lossy in ("0.0000000000000000001", "nan"):
        with pytest.raises(pa.ArrowInvalid):
            decimal_from_text(pa.array([lossy]), pa.decimal128(38, 18))


def test_unknown_type_name():
    with pytest.raises(ValueError, match="Decimal"):
        from_name("Decimal")
