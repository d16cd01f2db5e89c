"""The public surface: ``tiffin.__all__``, Feast's import paths, and the error tree."""

from __future__ import annotations

import importlib
import inspect

import pytest

import tiffin
import tiffin.errors as errors

EXPECTED_ALL = {
    "BatchFeatureView", "DataSource", "Entity", "FeatureService", "FeatureStore", "FeatureView",
    "Field", "FieldStatus", "FileSource", "OnDemandFeatureView", "OnlineResponse", "ParquetFormat", "Project",
    "PushMode", "PushSource", "RepoConfig", "RequestSource", "RetrievalJob", "SparkSource",
    "ValueType", "PostgreSQLSource",
    "__version__",
}


def test_all_is_the_expected_set():
    # Changing the public API must be deliberate: update EXPECTED_ALL with it.
    assert set(tiffin.__all__) == EXPECTED_ALL
    assert len(tiffin.__all__) == len(set(tiffin.__all__)), "duplicates in __all__"


@pytest.mark.parametrize("name", sorted(EXPECTED_ALL))
def test_every_public_name_is_importable(name):
    assert getattr(tiffin, name) is not None
    namespace: dict = {}
    exec(f"from tiffin import {name}", namespace)
    assert namespace[name] is getattr(tiffin, name)


def test_version_is_a_string():
    assert isinstance(tiffin.__version__, str) and tiffin.__version__


# Feast import lines with `feast` replaced by `tiffin`, and a name each must provide.
FEAST_IMPORTS = [
    ("from tiffin.types import Float32, Int64, String, Array", ["Float32", "Int64", "String",
                                                                 "Array"]),
    ("from tiffin.types import Float64, Int32, Bool, Bytes, UnixTimestamp",
     ["Float64", "Int32", "Bool", "Bytes", "UnixTimestamp"]),
    ("from tiffin.infra.offline_stores.file_source import FileSource", ["FileSource"]),
    ("from tiffin.value_type import ValueType", ["ValueType"]),
    ("from tiffin.data_source import PushSource", ["PushSource"]),
    ("from tiffin.data_source import RequestSource", ["RequestSource"]),
    ("from tiffin.data_format import ParquetFormat", ["ParquetFormat"]),
    ("from tiffin.entity import Entity", ["Entity"]),
    ("from tiffin.field import Field", ["Field"]),
    ("from tiffin.feature_view import FeatureView", ["FeatureView"]),
    ("from tiffin.feature_service import FeatureService", ["FeatureService"]),
    ("from tiffin.feature_store import FeatureStore", ["FeatureStore"]),
    ("from tiffin.repo_config import RepoConfig", ["RepoConfig"]),
    ("from tiffin.saved_dataset import SavedDataset, SavedDatasetStorage",
     ["SavedDataset", "SavedDatasetStorage"]),
    ("from tiffin.infra.offline_stores.file_source import SavedDatasetFileStorage",
     ["SavedDatasetFileStorage"]),
    ("from tiffin.infra.offline_stores.contrib.postgres_offline_store.postgres_source import "
     "PostgreSQLSource", ["PostgreSQLSource"]),
    ("from tiffin.infra.offline_stores.contrib.postgres_offline_store.postgres import "
     "PostgreSQLOfflineStoreConfig", ["PostgreSQLOfflineStoreConfig"]),
    ("from tiffin import Entity, FeatureView, Field, FileSource, FeatureService, PushSource, "
     "Project, RequestSource, FeatureStore, RepoConfig, ValueType",
     ["Entity", "FeatureView", "Field", "FileSource", "FeatureService", "PushSource", "Project",
      "RequestSource", "FeatureStore", "RepoConfig", "ValueType"]),
]


@pytest.mark.parametrize("statement, names", FEAST_IMPORTS, ids=[s for s, _ in FEAST_IMPORTS])
def test_feast_import_paths(statement, names):
    namespace: dict = {}
    exec(statement, namespace)
    for name in names:
        assert name in namespace
        # The alias paths give the very same objects as the top-level package.
        if hasattr(tiffin, name):
            assert namespace[name] is getattr(tiffin, name)


def test_feast_alias_modules_import_with_importlib():
    mod = importlib.import_module("tiffin.infra.offline_stores.file_source")
    assert mod.FileSource is tiffin.FileSource
    assert importlib.import_module("tiffin.value_type").ValueType is tiffin.ValueType


def test_unknown_submodule_still_fails():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("tiffin.infra.online_stores.no_such_store")


# -- errors -----------------------------------------------------------------------------------

ERROR_CLASSES = [obj for _, obj in inspect.getmembers(errors, inspect.isclass)
                 if obj.__module__ == errors.__name__]


def test_error_module_defines_the_documented_classes():
    names = {c.__name__ for c in ERROR_CLASSES}
    assert {"TiffinError", "ConfigError", "UnknownBackendError", "DefinitionError",
            "NotFoundError", "EntityNotFoundError", "FeatureViewNotFoundError",
            "FeatureServiceNotFoundError", "DataSourceNotFoundError", "FeatureNotFoundError",
            "PushSourceNotFoundError", "SavedDatasetNotFoundError", "RequestError", "EntityDataFrameError",
            "RegistryError", "RegistryFormatError", "RegistryConflictError", "BackendError",
            "StoreUnavailableError", "MissingDependencyError"} <= names


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_subclasses_tiffin_error(cls):
    assert issubclass(cls, errors.TiffinError)


@pytest.mark.parametrize("cls, builtin", [
    (errors.ConfigError, ValueError), (errors.UnknownBackendError, ValueError),
    (errors.DefinitionError, ValueError), (errors.RequestError, ValueError),
    (errors.EntityDataFrameError, ValueError), (errors.NotFoundError, KeyError),
    (errors.FeatureViewNotFoundError, KeyError), (errors.MissingDependencyError, ImportError),
])
def test_errors_also_subclass_builtins(cls, builtin):
    assert issubclass(cls, builtin)


@pytest.mark.parametrize("cls, transient", [
    (errors.RegistryConflictError, True), (errors.StoreUnavailableError, True),
    (errors.ConfigError, False), (errors.NotFoundError, False), (errors.BackendError, False),
])
def test_transient_flag(cls, transient):
    assert cls.transient is transient


def test_not_found_str_is_readable():
    e = errors.FeatureViewNotFoundError("drivr_stats", ["driver_stats", "orders"], project="demo")
    assert str(e) == ("feature view 'drivr_stats' not found in project 'demo' "
                      "(did you mean 'driver_stats'?)")
    assert not str(e).startswith(("'", '"'))
    assert e.name == "drivr_stats"
    assert e.hint == "did you mean 'driver_stats'?"
    with pytest.raises(KeyError):
        raise e


def test_not_found_without_close_match_has_no_hint():
    e = errors.EntityNotFoundError("zzz", ["driver"])
    assert e.hint is None
    assert str(e) == "entity 'zzz' not found"


def test_error_str_includes_hint():
    e = errors.ConfigError("bad thing", hint="do this")
    assert e.message == "bad thing"
    assert str(e) == "bad thing (do this)"
    assert str(errors.ConfigError("plain")) == "plain"


def test_missing_dependency_hint_names_extra():
    e = errors.MissingDependencyError("redis", "redis")
    assert "redis" in e.message
    assert e.hint == "pip install 'tiffin[redis]'"


@pytest.mark.parametrize("name, candidates, expected", [
    ("onlin_store", ["online_store", "offline_store"], "did you mean 'online_store'?"),
    ("sqllite", ["sqlite", "redis"], "did you mean 'sqlite'?"),
    ("xyz", ["online_store"], None),
])
def test_did_you_mean(name, candidates, expected):
    assert errors.did_you_mean(name, candidates) == expected
