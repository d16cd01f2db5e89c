from __future__ import annotations

import os
import re
import tempfile
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from tiffin.config import BackendConfig

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*", re.IGNORECASE)


class DuckDBOfflineStoreConfig(BackendConfig):
    """``offline_store: {type: duckdb}``; Feast's ``file`` and ``dask`` mean the same here.

    ``memory_limit`` (default ``1GB``) caps each DuckDB connection's buffer memory, DuckDB's
    own setting: past it, sorts, aggregations and partitioned writes spill to
    ``temp_directory``. ``null`` leaves DuckDB's default, 80% of the machine's memory,
    which large sources then actually use. A number with a unit: ``512MB``, ``2GiB``.

    ``temp_directory`` (default ``<system temp dir>/tiffin-duckdb``) is where DuckDB
    spills and where a large source is split into key-hash buckets; it must have room
    for a source's needed columns. It is created when first needed.

    ``in_memory_join_max_rows`` (default 25M): historical retrieval joins sources up to
    this many rows (by their Parquet footers) in memory at once; a larger source is read
    in pieces of about half as many rows: ranges of entity times when its row groups are
    ordered by time and the view has a ttl, else ranges of entity keys when they are
    ordered by one integer key, else buckets of a hash of the keys written to
    ``temp_directory``. ``0`` always uses DuckDB's ASOF join. Materialization of a
    source this large reads its row groups newest first when they are ordered by time.

    >>> DuckDBOfflineStoreConfig(memory_limit="2 GiB").memory_limit
    '2 GiB'
    """

    type: Literal["duckdb"] = "duckdb"
    memory_limit: str | None = "1GB"
    temp_directory: str | None = Field(default=None, validate_default=True)
    threads: int | None = None
    in_memory_join_max_rows: int = 25_000_000

    aliases: ClassVar[tuple[str, ...]] = ("file", "dask")
    feast_keys: ClassVar[frozenset[str]] = frozenset(
        {"staging_location", "staging_location_endpoint_override"})

    @field_validator("memory_limit")
    @classmethod
    def _memory_limit(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = _SIZE.fullmatch(v)
        if not m or float(m.group(1)) <= 0:
            raise ValueError(f"memory_limit {v!r} is not a size: use a number with a unit, "
                             "e.g. '1GB' or '512MiB' (null: DuckDB's default, 80% of memory)")
        return v

    @field_validator("temp_directory")
    @classmethod
    def _temp_directory(cls, v: str | None) -> str:
        path = os.path.expanduser(v) if v else os.path.join(tempfile.gettempdir(),
                                                            "tiffin-duckdb")
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"temp_directory {path!r} exists and is not a directory")
        return path

    @field_validator("threads")
    @classmethod
    def _threads(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"threads must be at least 1, got {v}")
        return v

    @field_validator("in_memory_join_max_rows")
    @classmethod
    def _max_rows(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"in_memory_join_max_rows must be 0 or more, got {v}")
        return v

    def store_class(self) -> type:
        from tiffin.offline.duckdb.store import DuckDBOfflineStore
        return DuckDBOfflineStore
