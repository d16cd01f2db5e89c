"""The registry: applied definitions and materialization state.

Where it lives is a ``RegistryStore``: a local file (``file.py``), an S3 object
(``s3.py``), any other fsspec URL (``fsspec_store.py``) or SQL tables (``sql.py``).
Each is a plugin (``tiffin.registry_stores`` entry points, ``kinds.py``); drivers are
imported only by the store that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiffin.registry.base import RegistryStore, RegistryStoreType
from tiffin.registry.registry import Diff, Registry, Snapshot

if TYPE_CHECKING:
    from tiffin.config import RepoConfig

__all__ = ["Diff", "Registry", "RegistryStore", "RegistryStoreType", "Snapshot", "open_registry",
           "registry_store"]


def registry_store(config: RepoConfig) -> RegistryStore:
    """The store that ``config.registry`` names: the ``tiffin.registry_stores`` plugin
    serving its ``registry_type`` and its path's scheme."""
    from tiffin.config import registry_store_type
    reg = config.registry
    return registry_store_type(reg.registry_type, reg.path).open(config)


def open_registry(config: RepoConfig) -> Registry:
    """The project's Registry over its configured store.

    The repository is known by its folder's name: a full sync (``tiffin apply``) deletes
    only what this repository defined before (or what no repository claims), never what
    another repository applied to the same project. See ``Registry.apply``.
    """
    repository = config.repo_path.name if config.repo_path is not None else None
    return Registry(registry_store(config), config.project,
                    config.registry.cache_ttl_seconds, repository=repository)
