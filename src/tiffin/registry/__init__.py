"""The registry: applied definitions and materialization state.

Where it lives is a ``RegistryStore``: a local file (``file.py``), an S3 object
(``s3.py``), any other fsspec URL (``fsspec_store.py``) or SQL tables (``sql.py``).
Drivers are imported only by the store that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tiffin.registry.base import RegistryStore
from tiffin.registry.registry import Diff, Registry, Snapshot

if TYPE_CHECKING:
    from tiffin.config import RepoConfig

__all__ = ["Diff", "Registry", "RegistryStore", "Snapshot", "open_registry", "registry_store"]


def registry_store(config: RepoConfig) -> RegistryStore:
    """The store that ``config.registry`` names (``registry_type`` and the path's scheme)."""
    from tiffin.config import url_scheme
    reg = config.registry
    if reg.registry_type == "sql":
        from tiffin.registry.sql import SQLRegistryStore
        return SQLRegistryStore(reg.path, reg.sqlalchemy_config_kwargs, config.repo_path)
    scheme = url_scheme(reg.path)
    if scheme in ("", "file"):
        from tiffin.registry.file import FileRegistryStore
        path = reg.path.removeprefix("file://")
        return FileRegistryStore(config.resolve_path(path))
    if scheme == "s3":
        from tiffin.registry.s3 import S3RegistryStore
        return S3RegistryStore(reg.path, reg.s3_endpoint_url, reg.s3_additional_kwargs)
    from tiffin.registry.fsspec_store import FsspecRegistryStore
    return FsspecRegistryStore(reg.path)


def open_registry(config: RepoConfig) -> Registry:
    """The project's Registry over its configured store.

    The repository is known by its folder's name: a full sync (``tiffin apply``) deletes
    only what this repository defined before (or what no repository claims), never what
    another repository applied to the same project. See ``Registry.apply``.
    """
    repository = config.repo_path.name if config.repo_path is not None else None
    return Registry(registry_store(config), config.project,
                    config.registry.cache_ttl_seconds, repository=repository)
