"""The toy backends' config classes: what tiffin imports to read ``feature_store.yaml``.

The stores themselves are imported by ``store_class`` only when a repository uses them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from tiffin.config import BackendConfig


class ToyCsvOfflineStoreConfig(BackendConfig):
    """``offline_store: {type: toy_csv}``."""

    type: Literal["toy_csv"] = "toy_csv"
    encoding: str = "utf8"

    def store_class(self) -> type:
        from tiffin_toy.offline import ToyCsvOfflineStore
        return ToyCsvOfflineStore


class ToyJsonOnlineStoreConfig(BackendConfig):
    """``online_store: {type: toy_json, path: data/online_json}`` (relative to the repo)."""

    type: Literal["toy_json"] = "toy_json"
    path: str = "data/online_json"

    def store_class(self) -> type:
        from tiffin_toy.online import ToyJsonOnlineStore
        return ToyJsonOnlineStore


class ToyChunkedEngineConfig(BackendConfig):
    """``batch_engine: {type: toy_chunked, chunk_rows: 2}``."""

    type: Literal["toy_chunked"] = "toy_chunked"
    chunk_rows: int = 1000

    @field_validator("chunk_rows")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError("chunk_rows must be 1 or more")
        return value

    def store_class(self) -> type:
        from tiffin_toy.engine import ToyChunkedEngine
        return ToyChunkedEngine
