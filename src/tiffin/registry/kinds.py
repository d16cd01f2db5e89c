"""tiffin's own registry store types (entry points of ``tiffin.registry_stores``).

Each opens its store module only when a repository uses it, so reading a
``feature_store.yaml`` never imports boto3, SQLAlchemy or fsspec.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tiffin.config import redact_url, url_scheme
from tiffin.errors import ConfigError
from tiffin.registry.base import RegistryStore, RegistryStoreType

if TYPE_CHECKING:
    from tiffin.config import RepoConfig

# URL schemes of the databases SQLAlchemy ships dialects for. Named here (not only '*') so a
# `registry: postgresql://...` without `registry_type: sql` is recognized as such.
SQL_SCHEMES = ("postgresql", "postgres", "sqlite", "mysql", "mariadb", "mssql", "oracle")


class FileRegistry(RegistryStoreType):
    """``registry: data/registry.json`` (or ``file://...``): a local file."""

    registry_types = ("file",)
    schemes = ("", "file")

    def open(self, config: RepoConfig) -> RegistryStore:
        from tiffin.registry.file import FileRegistryStore
        return FileRegistryStore(config.resolve_path(config.registry.path.removeprefix("file://")))


class S3Registry(RegistryStoreType):
    """``registry: s3://bucket/key`` (``tiffin[s3]``)."""

    registry_types = ("file",)
    schemes = ("s3",)

    def check(self, section: dict[str, Any]) -> None:
        path = section["path"]
        if not re.fullmatch(r"s3://[^/]+/.+", path):
            raise ConfigError(f"registry: path {redact_url(path)!r} is not s3://bucket/key",
                              hint="e.g. s3://my-bucket/feast/registry.json")

    def open(self, config: RepoConfig) -> RegistryStore:
        from tiffin.registry.s3 import S3RegistryStore
        reg = config.registry
        return S3RegistryStore(reg.path, reg.s3_endpoint_url, reg.s3_additional_kwargs)


class FsspecRegistry(RegistryStoreType):
    """Any other URL (``gs://``, ``az://``, ``memory://``...) through fsspec."""

    registry_types = ("file",)
    schemes = ("*",)

    def open(self, config: RepoConfig) -> RegistryStore:
        from tiffin.registry.fsspec_store import FsspecRegistryStore
        return FsspecRegistryStore(config.registry.path)


class SQLRegistry(RegistryStoreType):
    """``registry: {registry_type: sql, path: <SQLAlchemy URL>}`` (``tiffin[sql]``)."""

    registry_types = ("sql",)
    schemes = (*SQL_SCHEMES, "*")  # '*': dialects that other packages add to SQLAlchemy

    def check(self, section: dict[str, Any]) -> None:
        path = section["path"]
        if not url_scheme(path):
            raise ConfigError(f"registry: registry_type sql needs a SQLAlchemy URL as path, got "
                              f"{redact_url(path)!r}",
                              hint="e.g. postgresql+psycopg://user@host:5432/db or "
                                   "sqlite:///data/registry.db")

    def open(self, config: RepoConfig) -> RegistryStore:
        from tiffin.registry.sql import SQLRegistryStore
        reg = config.registry
        return SQLRegistryStore(reg.path, reg.sqlalchemy_config_kwargs, config.repo_path)
