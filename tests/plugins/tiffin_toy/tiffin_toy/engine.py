"""An engine that materializes in fixed-size chunks and records each one it wrote."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from tiffin.config import RepoConfig
from tiffin.definitions import FeatureView
from tiffin.materialize.base import Engine, MaterializeResult, Progress
from tiffin.offline.base import OfflineStore
from tiffin.online.base import OnlineStore
from tiffin.types import from_micros
from tiffin_toy.config import ToyChunkedEngineConfig


class ToyChunkedEngine(Engine):
    def __init__(self, config: ToyChunkedEngineConfig, repo_config: RepoConfig):
        super().__init__(config, repo_config)
        self.chunks: list[int] = []  # rows per write, for whoever wants to check the chunking

    def materialize(self, offline: OfflineStore, online: OnlineStore, view: FeatureView,
                    start: datetime | None, end: datetime,
                    progress: Progress | None = None) -> MaterializeResult:
        size = self.config.chunk_rows
        rows, newest = 0, None
        for batch in offline.pull_latest(view, start, end, size):
            for offset in range(0, batch.num_rows, size):
                chunk = batch.slice(offset, size)
                online.write(view, chunk)
                self.chunks.append(chunk.num_rows)
                rows += chunk.num_rows
                top = pc.max(pc.cast(chunk.column("__event_ts"), pa.int64())).as_py()
                if top is not None and (newest is None or top > newest):
                    newest = top
                if progress:
                    progress(chunk.num_rows)
        return MaterializeResult(view.name, rows, None if newest is None else from_micros(newest))
