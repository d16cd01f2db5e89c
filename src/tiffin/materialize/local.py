"""The in-process engine: stream from the offline store to the online store in Arrow batches."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc

from tiffin.config import BackendConfig
from tiffin.definitions import FeatureView
from tiffin.materialize.base import Engine, MaterializeResult, Progress
from tiffin.offline.base import OfflineStore
from tiffin.online.base import OnlineStore
from tiffin.types import from_micros


class LocalEngineConfig(BackendConfig):
    """``batch_engine: {type: local, batch_rows: 50000}``."""

    type: Literal["local"] = "local"
    # Rows per write: bounds memory (one batch in flight) and keeps each transaction short.
    batch_rows: int = 50_000

    feast_keys: ClassVar[frozenset[str]] = frozenset({"backend"})

    def store_class(self) -> type:
        return LocalEngine


class LocalEngine(Engine):
    def materialize(self, offline: OfflineStore, online: OnlineStore, view: FeatureView,
                    start: datetime | None, end: datetime,
                    progress: Progress | None = None) -> MaterializeResult:
        reader = offline.pull_latest(view, start, end, self.config.batch_rows)
        rows, newest = 0, None
        for batch in reader:
            if batch.num_rows == 0:
                continue
            online.write(view, batch)
            rows += batch.num_rows
            # Compare as integers: TimestampScalar.as_py() imports pandas (seconds at start-up).
            top = pc.max(pc.cast(batch.column("__event_ts"), pa.int64())).as_py()
            if top is not None and (newest is None or top > newest):
                newest = top
            if progress:
                progress(batch.num_rows)
        return MaterializeResult(view.name, rows, None if newest is None else
                                 from_micros(newest))
