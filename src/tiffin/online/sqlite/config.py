from __future__ import annotations

from typing import ClassVar, Literal

from tiffin.config import BackendConfig


class SQLiteOnlineStoreConfig(BackendConfig):
    """``online_store: {type: sqlite, path: data/online.db}`` (path relative to the repo)."""

    type: Literal["sqlite"] = "sqlite"
    path: str = "data/online.db"
    timeout_seconds: float = 30.0  # how long a reader/writer waits on a locked database
    mmap_size_bytes: int = 1 << 30  # address space for memory-mapped reads (not memory used)
    cache_size_kib: int = 65_536  # page cache per connection

    feast_keys: ClassVar[frozenset[str]] = frozenset(
        {"vector_enabled", "similarity", "text_search_enabled", "enable_openai_compatible_store",
         "vector_len"})

    def store_class(self) -> type:
        from tiffin.online.sqlite.store import SQLiteOnlineStore
        return SQLiteOnlineStore
