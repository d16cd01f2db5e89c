"""Saved datasets: create from a historical retrieval, read back, registry round trips,
overwrite rules, errors, and the table-storage hook for offline backends."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tiffin import (
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    ParquetFormat,
    RepoConfig,
    RetrievalJob,
    ValueType,
)
from tiffin.definitions import (
    Definition,
    SavedDataset,
    SavedDatasetFileStorage,
    SavedDatasetStorage,
    on_demand_feature_view,
)
from tiffin.definitions.saved_dataset import UnregisteredStorage
from tiffin.errors import DefinitionError, RequestError, SavedDatasetNotFoundError
from tiffin.offline.duckdb.store import DuckDBOfflineStore
from tiffin.offline.saved_datasets import SavedDatasetTables
from tiffin.types import Float64, Int64, String

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
FEATURES = ["stats:value", "stats:city"]


def h(n: float) -> datetime:
    return T0 + timedelta(hours=n)


driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
source = FileSource(name="drivers", path="data/drivers.parquet",
                    timestamp_field="event_timestamp", created_timestamp_column="created")
stats = FeatureView(name="stats", entities=[driver], ttl=None, source=source,
                    schema=[Field(name="value", dtype=Int64), Field(name="city", dtype=String)])
rates = FeatureView(name="rates", entities=[driver], ttl=timedelta(hours=3), source=source,
                    schema=[Field(name="value", dtype=Float64)])


@on_demand_feature_view(sources=[stats[["value"]]], schema=[Field(name="double", dtype=Int64)],
                        mode="python")
def doubled(inputs: dict) -> dict:
    return {"double": [None if v is None else 2 * v for v in inputs["value"]]}


service = FeatureService(name="model_v1", features=[stats[["value"]], rates])
REPO = [driver, source, stats, rates, doubled, service]


def entity_df(hours: list[float]) -> pa.Table:
    return pa.table({"driver_id": [1, 2, 1, 3][:len(hours)],
                     "event_timestamp": pa.array([h(x) for x in hours], pa.timestamp("us", "UTC")),
                     "label": [True, False, True, False][:len(hours)]})


@pytest.fixture
def config(tmp_path, request) -> RepoConfig:
    """A repository on Parquet (no online store: saved datasets never need one). Tests
    parametrized with "sql" make DuckDB run, and persist by COPY, the ASOF SQL."""
    (tmp_path / "data").mkdir()
    pq.write_table(pa.table({
        "driver_id": [1, 1, 2, 3],
        "event_timestamp": pa.array([h(0), h(5), h(1), h(8)], pa.timestamp("us", "UTC")),
        "created": pa.array([h(0), h(5), h(1), h(8)], pa.timestamp("us", "UTC")),
        "value": [10, 11, 20, 30],
        "city": ["a", "b", None, "c"],
    }), tmp_path / "data" / "drivers.parquet")
    limit = 0 if getattr(request, "param", "memory") == "sql" else 25_000_000
    return RepoConfig(project="sd", registry="data/registry.json", online_store=None,
                      offline_store={"type": "duckdb", "in_memory_join_max_rows": limit})


@pytest.fixture
def store(tmp_path, config):
    s = FeatureStore(repo_path=tmp_path, config=config)
    s.apply(REPO)
    yield s
    s.close()


def file_storage(name: str = "train") -> SavedDatasetFileStorage:
    return SavedDatasetFileStorage(path=f"data/{name}.parquet")


def parquet_and_temp_files(repo) -> list[str]:
    return sorted(p for p in os.listdir(repo / "data") if p.endswith((".parquet", ".tmp")))


def create(store, name: str = "train", hours: tuple[float, ...] = (6, 2, 9), **kw):
    job = store.get_historical_features(entity_df(list(hours)), kw.pop("features", FEATURES),
                                        full_feature_names=kw.pop("full_feature_names", False))
    return job, store.create_saved_dataset(from_=job, name=name,
                                           storage=kw.pop("storage", file_storage(name)), **kw)


BOTH_JOINS = pytest.mark.parametrize("config", ["memory", "sql"], indirect=True)


@BOTH_JOINS
def test_create_and_read_back_equals_the_retrieval(store, tmp_path):
    job, ds = create(store, tags={"team": "ml"})
    expected = job.to_arrow()
    assert expected.num_rows == 3
    assert (tmp_path / "data" / "train.parquet").is_file()  # relative to the repository
    for got in (ds, store.get_saved_dataset("train")):
        assert got.to_arrow().equals(expected)
        assert got.to_df().equals(job.to_df())
        assert got.to_polars().equals(job.to_polars())
        assert pa.Table.from_batches(list(got.to_arrow_batches(batch_rows=1))).equals(expected)
    assert ds.features == FEATURES
    assert ds.join_keys == ["driver_id"]
    assert ds.full_feature_names is False and ds.feature_service_name is None
    assert ds.tags == {"team": "ml"}
    assert ds.storage == file_storage()
    assert (ds.min_event_timestamp, ds.max_event_timestamp) == (h(2), h(9))
    assert ds.created_timestamp == ds.last_updated_timestamp
    assert abs(ds.created_timestamp - datetime.now(timezone.utc)) < timedelta(minutes=1)
    assert parquet_and_temp_files(tmp_path) == ["drivers.parquet", "train.parquet"]


def test_survives_a_fresh_feature_store(store, tmp_path, config):
    _, ds = create(store, tags={"team": "ml"})
    _, other = create(store, name="eval", hours=(3,))
    fresh = FeatureStore(repo_path=tmp_path, config=config)
    got = fresh.get_saved_dataset("train")
    assert got == ds and got.to_dict() == ds.to_dict()
    assert got.to_arrow().equals(ds.to_arrow())
    assert [d.name for d in fresh.list_saved_datasets()] == ["eval", "train"]  # by name
    assert [d.name for d in fresh.list_saved_datasets(tags={"team": "ml"})] == ["train"]
    assert fresh.list_saved_datasets()[0].to_arrow().equals(other.to_arrow())
    doc = json.loads((tmp_path / "data" / "registry.json").read_text())
    entry = doc["projects"]["sd"]["saved_datasets"]["train"]
    assert entry["storage"] == {"type": "file", "path": "data/train.parquet",
                                "file_format": "parquet", "s3_endpoint_override": None}
    assert entry["min_event_timestamp"] == h(2).isoformat()


def test_feature_service_full_names_and_on_demand_views(store):
    job, ds = create(store, features=service, full_feature_names=True, feature_service=service)
    assert ds.features == ["stats:value", "rates:value"]
    assert ds.full_feature_names is True and ds.feature_service_name == "model_v1"
    assert ds.to_arrow().column_names == ["driver_id", "event_timestamp", "label",
                                          "stats__value", "rates__value"]
    # On-demand views run in this process; the job is persisted by the generic writer.
    job, ds = create(store, name="odfv", features=["doubled:double", "stats:city"])
    assert ds.features == ["doubled:double", "stats:city"]
    assert ds.to_arrow().equals(job.to_arrow())
    assert ds.to_arrow().column("double").to_pylist() == [22, 40, 22]


@BOTH_JOINS
def test_duplicate_name_or_file_needs_allow_overwrite(store, tmp_path):
    _, first = create(store)
    path = tmp_path / "data" / "train.parquet"
    before = path.read_bytes()
    with pytest.raises(RequestError, match="saved dataset 'train' already exists") as e:
        create(store, hours=(3,))
    assert e.value.hint == "pass allow_overwrite=True to replace it, or choose another name"
    assert path.read_bytes() == before  # nothing was written
    with pytest.raises(RequestError, match="train.parquet already exists"):
        create(store, name="other", storage=file_storage("train"))
    assert [d.name for d in store.list_saved_datasets()] == ["train"]

    job, again = create(store, hours=(3,), allow_overwrite=True)
    assert again.to_arrow().equals(job.to_arrow()) and again.to_arrow().num_rows == 1
    got = store.get_saved_dataset("train")
    assert got.created_timestamp == first.created_timestamp
    assert got.last_updated_timestamp > first.last_updated_timestamp
    assert (got.min_event_timestamp, got.max_event_timestamp) == (h(3), h(3))


def test_a_failed_write_registers_nothing_and_keeps_the_old_file(store, tmp_path):
    def broken(batch_rows: int) -> pa.RecordBatchReader:
        schema = pa.schema([("driver_id", pa.int64())])

        def batches():
            yield pa.record_batch([pa.array([1])], schema=schema)
            raise OSError("disk full")
        return pa.RecordBatchReader.from_batches(schema, batches())

    job = RetrievalJob(broken, metadata={"feature_refs": FEATURES, "keys": ["driver_id"]})
    with pytest.raises(OSError, match="disk full"):
        store.create_saved_dataset(from_=job, name="train", storage=file_storage())
    assert parquet_and_temp_files(tmp_path) == ["drivers.parquet"]
    assert store.list_saved_datasets() == []

    good, ds = create(store)
    with pytest.raises(OSError, match="disk full"):
        store.create_saved_dataset(from_=job, name="train", storage=file_storage(),
                                   allow_overwrite=True)
    assert store.get_saved_dataset("train").to_arrow().equals(good.to_arrow())
    assert parquet_and_temp_files(tmp_path) == ["drivers.parquet", "train.parquet"]


def test_unknown_name_says_did_you_mean(store):
    create(store)
    with pytest.raises(SavedDatasetNotFoundError) as e:
        store.get_saved_dataset("trian")
    assert str(e.value) == "saved dataset 'trian' not found in project 'sd' " \
                           "(did you mean 'train'?)"
    assert isinstance(e.value, KeyError)


def test_missing_file_is_a_clear_error(store, tmp_path):
    create(store)
    (tmp_path / "data" / "train.parquet").unlink()
    ds = store.get_saved_dataset("train")  # the registry entry is still there
    with pytest.raises(DefinitionError, match=r"saved dataset 'train': its file .*train\.parquet "
                                              r"is missing"):
        ds.to_df()


@pytest.mark.parametrize("kwargs, message", [
    ({"from_": "not a job"}, "from_ must be the RetrievalJob of get_historical_features"),
    ({"storage": "data/x.parquet"}, "storage must be a SavedDatasetStorage"),
    ({"storage": SavedDatasetFileStorage(path="s3://bucket/x.parquet")}, "only local files"),
    ({"storage": SavedDatasetFileStorage(path="data")}, "is a directory"),
])
def test_bad_arguments(store, kwargs, message):
    job = store.get_historical_features(entity_df([1]), FEATURES)
    args = {"from_": job, "name": "x", "storage": file_storage("x"), **kwargs}
    with pytest.raises(RequestError, match=message):
        store.create_saved_dataset(**args)
    assert store.list_saved_datasets() == []


def test_apply_never_deletes_saved_datasets(store):
    create(store)
    # What `tiffin apply` does: sync the registry to the repository (partial=False).
    assert not store.plan(REPO, partial=False)
    diff = store.apply([driver, source, stats], partial=False)
    assert {c.name for c in diff.of("delete")} == {"rates", "doubled", "model_v1"}
    assert all(c.kind != "saved_datasets" for c in diff.changes)
    assert [d.name for d in store.list_saved_datasets()] == ["train"]
    store.teardown()  # teardown removes the project's registry entries, these too
    assert store.list_saved_datasets() == []


def test_saved_dataset_is_not_a_repository_object():
    # Repository loading collects Definitions; a saved dataset is made by the SDK only.
    ds = SavedDataset(name="x", features=[], join_keys=[], storage=file_storage())
    assert not isinstance(ds, Definition)


# -- dict forms ----------------------------------------------------------------------------

STORAGES = [
    SavedDatasetFileStorage(path="data/train.parquet"),
    SavedDatasetFileStorage(path="/abs/train.parquet", file_format=ParquetFormat(),
                            s3_endpoint_override="http://minio:9000"),
    UnregisteredStorage("not_loaded_kind", {"table_ref": "public.train"}),
]


@pytest.mark.parametrize("storage", STORAGES, ids=repr)
def test_storage_round_trips(storage):
    again = SavedDatasetStorage.from_dict(json.loads(json.dumps(storage.to_dict())))
    assert again == storage and type(again) is type(storage)
    ds = SavedDataset(name="x", features=["v:f"], join_keys=["k"], storage=storage,
                      tags={"a": "b"}, feature_service_name="svc")
    ds.min_event_timestamp = h(1)
    assert SavedDataset.from_dict(json.loads(json.dumps(ds.to_dict()))) == ds


def test_file_storage_is_parquet_only():
    with pytest.raises(ValueError, match="only Parquet"):
        SavedDatasetFileStorage(path="x.csv", file_format="csv")
    src = SavedDatasetFileStorage(path="data/train.parquet").to_data_source()
    assert isinstance(src, FileSource) and src.path == "data/train.parquet"


def test_unattached_dataset_says_how_to_read_it():
    ds = SavedDataset(name="x", features=[], join_keys=[], storage=file_storage())
    with pytest.raises(RequestError, match="not attached to a store"):
        ds.to_arrow()


# -- the table-storage hook ------------------------------------------------------------------

@pytest.fixture
def tables():
    """What an offline backend adds for its tables (here: a dict of Arrow tables). Defined
    per test: the on-demand view above re-imports this module in a fresh store, which would
    register a second storage class of the same tag."""

    class SavedDatasetMemoryStorage(SavedDatasetStorage):
        storage_type = "test_memory"

        def __init__(self, table_ref: str):
            self.table_ref = table_ref

        def fields(self):
            return {"table_ref": self.table_ref}

        @property
        def location(self):
            return self.table_ref

    class TablesOfflineStore(DuckDBOfflineStore, SavedDatasetTables):
        saved_dataset_storages = (SavedDatasetMemoryStorage,)
        tables: dict[str, pa.Table] = {}

        def persist_saved_dataset(self, job, storage, allow_overwrite):
            if storage.table_ref in self.tables and not allow_overwrite:
                raise RequestError(f"table {storage.table_ref} exists")
            self.tables[storage.table_ref] = pa.Table.from_batches(list(job.to_arrow_batches()))

        def read_saved_dataset(self, storage, batch_rows):
            table = self.tables[storage.table_ref]
            return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(batch_rows))

    return SavedDatasetMemoryStorage, TablesOfflineStore


def test_a_store_without_the_ability_refuses_table_storage(store, tables):
    storage_cls, _ = tables
    with pytest.raises(RequestError, match="the 'duckdb' offline store cannot write saved "
                                           "datasets to SavedDatasetMemoryStorage") as e:
        create(store, storage=storage_cls("t"))
    assert e.value.hint == "use SavedDatasetFileStorage"
    assert store.list_saved_datasets() == []


def test_a_store_with_the_ability_persists_and_reads_tables(store, tmp_path, config, tables):
    storage_cls, store_cls = tables
    store.offline_store = store_cls(config.offline_store, store.config)
    job, ds = create(store, storage=storage_cls("public.train"))
    assert store_cls.tables["public.train"].equals(job.to_arrow())
    fresh = FeatureStore(repo_path=tmp_path, config=config)
    fresh.offline_store = store_cls(config.offline_store, fresh.config)
    got = fresh.get_saved_dataset("train")
    assert got.storage == storage_cls("public.train")
    assert got.to_arrow().equals(job.to_arrow())


def test_a_kind_no_loaded_backend_defines(store, tmp_path):
    create(store)
    path = tmp_path / "data" / "registry.json"
    doc = json.loads(path.read_text())
    doc["projects"]["sd"]["saved_datasets"]["train"]["storage"] = {"type": "spark_test",
                                                                    "table_name": "train"}
    path.write_text(json.dumps(doc))
    ds = store.get_saved_dataset("train")
    assert isinstance(ds.storage, UnregisteredStorage) and ds.storage.location == "table_name=train"
    with pytest.raises(RequestError, match="cannot read saved datasets from 'spark_test' storage"):
        ds.to_arrow()
