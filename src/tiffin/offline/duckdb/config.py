from __future__ import annotations

from typing import ClassVar, Literal

from tiffin.config import BackendConfig


class DuckDBOfflineStoreConfig(BackendConfig):
    """``offline_store: {type: duckdb}``; Feast's ``file`` and ``dask`` mean the same here."""

    type: Literal["duckdb"] = "duckdb"
    memory_limit: str | None = None  # e.g. "4GB"; DuckDB spills to temp_directory past it
    temp_directory: str | None = None
    threads: int | None = None
    # Sources up to this many rows are joined by an in-memory merge (much faster); larger
    # ones by DuckDB's ASOF join, which spills to disk. 0 always uses SQL.
    in_memory_join_max_rows: int = 25_000_000

    aliases: ClassVar[tuple[str, ...]] = ("file", "dask")
    feast_keys: ClassVar[frozenset[str]] = frozenset(
        {"staging_location", "staging_location_endpoint_override"})

    def store_class(self) -> type:
        from tiffin.offline.duckdb.store import DuckDBOfflineStore
        return DuckDBOfflineStore
