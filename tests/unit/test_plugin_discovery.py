"""Backends as entry-point plugins: how registry stores, data-source types and backend
configs are found, what a broken or ambiguous plugin does, and the engines' capability
check. (A whole toy package run end to end: tests/integration/test_plugins.py.)"""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, Literal

import pytest

import tiffin.config as config_module
from tiffin import DataSource, FileSource, RepoConfig, SparkSource
from tiffin.config import REGISTRY_GROUP, BackendConfig, registry_store_type
from tiffin.errors import ConfigError, UnknownBackendError
from tiffin.registry import Registry, registry_store
from tiffin.registry.base import RegistryStore, RegistryStoreType
from tiffin.registry.file import FileRegistryStore
from tiffin.registry.kinds import FileRegistry, FsspecRegistry, S3Registry, SQLRegistry

FAKE = "tiffin_test_fake_plugins"


class MemoRegistry(RegistryStoreType):
    """``registry_type: memo, path: memo://name``: a file named after the URL's path."""

    registry_types = ("memo",)
    schemes = ("memo",)

    def open(self, config: RepoConfig) -> RegistryStore:
        return FileRegistryStore(config.resolve_path(config.registry.path.removeprefix("memo://")))


class MemoRegistryAgain(MemoRegistry):
    pass


class NoOpen(RegistryStoreType):
    registry_types = ("no_open",)
    schemes = ("",)


class NoSchemes(MemoRegistry):
    registry_types = ("no_open",)
    schemes = ()


@pytest.fixture
def plugins(monkeypatch):
    """Replace the entry points of some groups: ``plugins(group, {name: value})``."""
    module = types.ModuleType(FAKE)
    module.MemoRegistry, module.MemoRegistryAgain, module.NoOpen, module.NoSchemes = \
        MemoRegistry, MemoRegistryAgain, NoOpen, NoSchemes
    monkeypatch.setitem(sys.modules, FAKE, module)
    real = config_module.entry_points
    extra: dict[str, dict[str, str]] = {}

    def entry_points(group: str) -> list[EntryPoint]:
        eps = list(real(group=group))
        return eps + [EntryPoint(name, value, group) for name, value in
                      extra.get(group, {}).items()]

    def add(group: str, found: dict[str, str]) -> None:
        extra.setdefault(group, {}).update(found)
        config_module.registry_store_types.cache_clear()
        config_module._backends.cache_clear()

    monkeypatch.setattr(config_module, "entry_points", entry_points)
    yield add
    config_module.registry_store_types.cache_clear()
    config_module._backends.cache_clear()


# -- registry stores --------------------------------------------------------------------------

@pytest.mark.parametrize("registry_type, path, expected", [
    ("file", "data/registry.json", FileRegistry),
    ("file", "file:///tmp/registry.json", FileRegistry),
    ("file", "s3://bucket/registry.json", S3Registry),
    ("file", "gs://bucket/registry.json", FsspecRegistry),
    ("sql", "sqlite:///data/registry.db", SQLRegistry),
    ("sql", "postgresql+psycopg://u@h/db", SQLRegistry),
    ("sql", "cockroachdb://u@h/db", SQLRegistry),  # a dialect another package adds
])
def test_builtin_registry_stores_are_chosen_by_type_and_scheme(registry_type, path, expected):
    assert type(registry_store_type(registry_type, path)) is expected


def test_a_plugin_registry_store_serves_its_own_type(plugins, tmp_path):
    plugins(REGISTRY_GROUP, {"memo": f"{FAKE}:MemoRegistry"})
    cfg = RepoConfig(project="p", registry={"registry_type": "memo", "path": "memo://reg.json"},
                     repo_path=tmp_path)
    store = registry_store(cfg)
    assert isinstance(store, FileRegistryStore) and store.path == tmp_path / "reg.json"
    Registry(store, "p").apply([])
    assert (tmp_path / "reg.json").exists()


def test_a_scheme_of_another_registry_type_names_it(plugins):
    plugins(REGISTRY_GROUP, {"memo": f"{FAKE}:MemoRegistry"})
    with pytest.raises(ConfigError, match="is a URL for registry_type file, not memo") as info:
        RepoConfig(project="p", registry={"registry_type": "memo", "path": "s3://b/k"})
    assert info.value.hint == "add registry_type: file to the registry section"
    with pytest.raises(ConfigError, match="is a URL for registry_type memo, not file"):
        RepoConfig(project="p", registry="memo://reg.json")


def test_a_scheme_nobody_serves_lists_the_registered_ones(plugins):
    plugins(REGISTRY_GROUP, {"memo": f"{FAKE}:MemoRegistry"})
    with pytest.raises(UnknownBackendError, match="no registry store serves gopher:// paths "
                                                  "for registry_type memo") as info:
        RepoConfig(project="p", registry={"registry_type": "memo", "path": "gopher://x/y"})
    assert info.value.hint == "registered: memo://"
    with pytest.raises(UnknownBackendError, match="plain paths") as info:
        RepoConfig(project="p", registry={"registry_type": "memo", "path": "data/reg.json"})


def test_unknown_registry_type_lists_every_registered_one(plugins):
    plugins(REGISTRY_GROUP, {"memo": f"{FAKE}:MemoRegistry"})
    with pytest.raises(UnknownBackendError, match="registry_type 'mem0' is not supported") as e:
        RepoConfig(project="p", registry={"registry_type": "mem0", "path": "memo://x"})
    assert e.value.hint == "did you mean 'memo'?"
    with pytest.raises(UnknownBackendError) as e:
        RepoConfig(project="p", registry={"registry_type": "zzz", "path": "x"})
    assert e.value.hint.startswith("registered: ") and "memo" in e.value.hint \
        and "file" in e.value.hint and "sql" in e.value.hint


def test_two_plugins_serving_the_same_section_is_an_error(plugins):
    plugins(REGISTRY_GROUP, {"memo": f"{FAKE}:MemoRegistry",
                             "memo2": f"{FAKE}:MemoRegistryAgain"})
    with pytest.raises(ConfigError, match="served by several plugins: memo, memo2"):
        RepoConfig(project="p", registry={"registry_type": "memo", "path": "memo://x"})


@pytest.mark.parametrize("value, reason", [
    ("tiffin_no_such_module:Store", "ModuleNotFoundError"),
    (f"{FAKE}:NoOpen", "abstract"),
    (f"{FAKE}:NoSchemes", "declares no registry_types or no schemes"),
    ("tiffin.registry.file:FileRegistryStore", "is not a tiffin.registry.base.RegistryStoreType"),
])
def test_a_broken_registry_plugin_breaks_only_its_own_type(plugins, value, reason):
    plugins(REGISTRY_GROUP, {"no_open": value})
    with pytest.raises(ConfigError, match="installed but unusable") as info:
        RepoConfig(project="p", registry={"registry_type": "no_open", "path": "x"})
    assert reason in str(info.value)
    assert RepoConfig(project="p", registry="data/registry.json").registry.registry_type == "file"
    # Under another entry-point name its types are unknown: the hint names it as unusable.
    plugins(REGISTRY_GROUP, {"other_name": value})
    with pytest.raises(UnknownBackendError) as info:
        RepoConfig(project="p", registry={"registry_type": "zzz_none", "path": "x"})
    assert "unusable: other_name (" in info.value.hint and reason in info.value.hint


def test_plugin_keys_are_accepted_only_for_the_plugin_that_declares_them(plugins):
    with pytest.raises(ConfigError, match="unknown key 'keep_versions'"):
        RepoConfig(project="p", registry={"path": "r.json", "keep_versions": 2})


# -- backend configs --------------------------------------------------------------------------

class HalfConfig(BackendConfig):
    type: Literal["half"] = "half"


def test_a_broken_backend_plugin_breaks_only_its_own_type(plugins):
    sys.modules[FAKE].HalfConfig = HalfConfig
    plugins("tiffin.online_stores", {"flaky": "tiffin_no_such_module:Config",
                                     "notaconfig": "tiffin.registry.kinds:FileRegistry",
                                     "half": f"{FAKE}:HalfConfig"})
    with pytest.raises(ConfigError, match="'flaky' is installed but unusable: "
                                          "tiffin_no_such_module:Config"):
        RepoConfig(project="p", registry="r.json", online_store={"type": "flaky"})
    with pytest.raises(ConfigError, match="not a tiffin.config.BackendConfig subclass"):
        RepoConfig(project="p", registry="r.json", online_store={"type": "notaconfig"})
    with pytest.raises(ConfigError, match="HalfConfig does not implement store_class"):
        RepoConfig(project="p", registry="r.json", online_store={"type": "half"})
    assert RepoConfig(project="p", registry="r.json").online_store.type == "sqlite"


# -- data sources -----------------------------------------------------------------------------

def test_a_source_type_not_yet_imported_comes_from_its_entry_point(monkeypatch):
    monkeypatch.delitem(DataSource._types, "spark")
    src = SparkSource(name="s", table="t", timestamp_field="ts")
    back = DataSource.from_dict(src.to_dict())
    assert type(back) is SparkSource and back.table == "t"
    assert DataSource._types["spark"] is SparkSource


def test_an_unknown_source_type_names_the_registered_ones():
    data = FileSource(path="x.parquet", timestamp_field="ts").to_dict()
    with pytest.raises(UnknownBackendError, match="data source type 'fiel' is not installed") \
            as info:
        DataSource.from_dict({**data, "source_type": "fiel"})
    assert info.value.hint == "did you mean 'file'?"
    with pytest.raises(UnknownBackendError) as info:
        DataSource.from_dict({**data, "source_type": "kafka_stream_zz"})
    assert "registered: " in info.value.hint and "postgres" in info.value.hint \
        and "tiffin.data_sources" in info.value.hint


def test_a_source_entry_point_must_name_a_source_of_that_type(monkeypatch):
    import importlib.metadata as md  # source_class imports entry_points when it needs it
    orig = md.entry_points

    def entry_points(group: str) -> Any:
        eps = list(orig(group=group))
        if group == "tiffin.data_sources":
            eps.append(EntryPoint("csvish", "tiffin.definitions.sources:FileSource", group))
        return eps

    monkeypatch.setattr(md, "entry_points", entry_points)
    with pytest.raises(UnknownBackendError, match="not a DataSource with source_type = "
                                                  "'csvish'"):
        DataSource.source_class("csvish")


# -- engine capabilities ------------------------------------------------------------------------

def test_the_spark_engine_asks_for_spark_frames_not_a_store_class(tmp_path: Path):
    from tiffin.materialize.spark import SparkEngine, SparkEngineConfig
    from tiffin.offline.base import SPARK_FRAMES
    from tiffin.offline.duckdb.config import DuckDBOfflineStoreConfig
    from tiffin.offline.duckdb.store import DuckDBOfflineStore
    from tiffin.offline.spark.config import SparkOfflineStoreConfig
    from tiffin.offline.spark.store import SparkOfflineStore

    cfg = RepoConfig(project="p", registry="r.json", repo_path=tmp_path)
    engine = SparkEngine(SparkEngineConfig(), cfg)
    duck = DuckDBOfflineStore(DuckDBOfflineStoreConfig(), cfg)
    spark = SparkOfflineStore(SparkOfflineStoreConfig(), cfg)
    assert spark.supports(SPARK_FRAMES) and not duck.supports(SPARK_FRAMES)
    assert engine.reader(spark) is spark
    own = engine.reader(duck)
    assert isinstance(own, SparkOfflineStore) and own is not spark

    class FramesOverDuckDB(DuckDBOfflineStore):
        """A store of another class that declares the capability is used as it is."""
        capabilities = frozenset({SPARK_FRAMES})

    other = FramesOverDuckDB(DuckDBOfflineStoreConfig(), cfg)
    assert engine.reader(other) is other


def test_a_registry_config_built_directly_refuses_undeclared_keys():
    from pydantic import ValidationError

    from tiffin.config import RegistryConfig
    with pytest.raises(ValidationError, match="unknown key 'keep_versions'"):
        RegistryConfig(path="data/registry.json", keep_versions=2)
