from __future__ import annotations

from typing import ClassVar, Literal

from tiffin.config import BackendConfig


class DuckDBOfflineStoreConfig(BackendConfig):
    """``offline_store: {type: duckdb}``; Feast's ``file`` and ``dask`` mean the same here."""

    type: Literal["duckdb"] = "duckdb"
    memory_limit: str | None = None  # e.g. "4GB"; DuckDB spills to temp_directory past it
    temp_directory: str | None = None
    threads: int | None = None

    aliases: ClassVar[tuple[str, ...]] = ("file", "dask")
    feast_keys: ClassVar[frozenset[str]] = frozenset(
        {"staging_location", "staging_location_endpoint_override"})

    def store_class(self) -> type:
        from tiffin.offline.duckdb.store import DuckDBOfflineStore
        return DuckDBOfflineStore
