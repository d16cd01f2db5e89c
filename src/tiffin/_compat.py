"""Feast's import paths, so a repository ported by replacing ``feast`` with ``tiffin`` imports.

Feast repositories import from submodules (``feast.types``, ``feast.infra.offline_stores
.file_source``...). Rather than keep a shell module per path, this table maps each such
path to the tiffin module that holds the same names; a meta-path finder serves them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

ALIASES = {
    "tiffin.entity": "tiffin.definitions.entity",
    "tiffin.field": "tiffin.definitions.field",
    "tiffin.feature_view": "tiffin.definitions.feature_view",
    "tiffin.batch_feature_view": "tiffin.definitions.feature_view",
    "tiffin.feature_service": "tiffin.definitions.feature_service",
    "tiffin.project": "tiffin.definitions.feature_service",
    "tiffin.data_source": "tiffin.definitions.sources",
    "tiffin.value_type": "tiffin.types",
    "tiffin.data_format": "tiffin.definitions.sources",
    "tiffin.infra.offline_stores.file_source": "tiffin.definitions.sources",
    "tiffin.feature_store": "tiffin.store",
    "tiffin.repo_config": "tiffin.config",
    "tiffin.data_source_push": "tiffin.push",
    "tiffin.on_demand_feature_view": "tiffin.definitions.on_demand",
    "tiffin.feature_logging": "tiffin.definitions.on_demand",
    "tiffin.request_source": "tiffin.definitions.sources",
    "tiffin.saved_dataset": "tiffin.definitions.saved_dataset",
}
# Feast keeps SparkSource under contrib/.
ALIASES["tiffin.infra.offline_stores.contrib.spark_offline_store.spark_source"] = \
    "tiffin.offline.spark.source"
_PARENTS = {"tiffin.infra", "tiffin.infra.offline_stores", "tiffin.infra.offline_stores.contrib",
            "tiffin.infra.offline_stores.contrib.spark_offline_store"}
# ... and PostgreSQLSource (postgres_source) beside its store's config (postgres).
_PG = "tiffin.infra.offline_stores.contrib.postgres_offline_store"
ALIASES[f"{_PG}.postgres_source"] = "tiffin.offline.postgres.source"
ALIASES[f"{_PG}.postgres"] = "tiffin.offline.postgres.config"
_PARENTS.add(_PG)


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):  # type: ignore[override]
        if fullname in ALIASES or fullname in _PARENTS:
            return importlib.util.spec_from_loader(fullname, self,
                                                   is_package=fullname in _PARENTS)
        return None

    def create_module(self, spec):  # type: ignore[override]
        if spec.name in _PARENTS:
            module = ModuleType(spec.name)
            module.__path__ = []  # a namespace-like parent for the aliases below it
            return module
        return importlib.import_module(ALIASES[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        pass


def install() -> None:
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
