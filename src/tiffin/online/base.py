"""The online-store interface: five abstract methods, no response shaping, no ttl logic.

A store keeps, per feature view and entity key, the newest row it was given:
its feature values and event timestamp. ``write`` must be monotonic: a row
whose event timestamp is older than the stored one (or equal, with an older
created timestamp) is ignored, so a late or replayed batch never overwrites
fresher data. A store also keeps, per view, the newest event time it was ever
given, so freshness is measured from event time by whoever reads the store (the
feature server's metrics), not from when this process last wrote. Reading,
statuses, ttl and batching live once in ``tiffin.online.reader``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from tiffin.config import BackendConfig, RepoConfig
from tiffin.definitions import FeatureView


def python_values(col: pa.Array | pa.ChunkedArray) -> list[object]:
    """A batch column as plain Python values for a store: times (also inside lists) as
    epoch microseconds, so no store has to deal with datetime objects."""
    if pa.types.is_timestamp(col.type):
        col = pc.cast(col, pa.int64())
    elif pa.types.is_list(col.type) and pa.types.is_timestamp(col.type.value_type):
        col = pc.cast(col, pa.list_(pa.int64()))
    return col.to_pylist()


def newest_event_us(batch: pa.RecordBatch) -> int | None:
    """The batch's newest event time in epoch microseconds (None for no rows), which a
    store records for ``newest_event_times``."""
    return pc.max(batch.column("__event_ts")).cast(pa.int64()).as_py()


# One entry per key asked for, in the same order: a flat row (event timestamp in epoch
# microseconds, then the feature values in the order requested), or, for a key without
# a row, None or a row whose event timestamp is None. Aligned rows let the reader turn
# a store's answer into columns in one C-level pass, with no lookup per key. A store
# that decodes (event time, values) pairs returns them as a PairRows instead.
Rows = Sequence[Sequence[Any] | None]


class PairRows(list):
    """Rows a store decoded as ``(event time, values, ...)`` (only items 0 and 1 are
    read; None for a key without a row), returned as decoded instead of being flattened
    row by row: the reader takes their columns in C-level passes (Redis)."""


class OnlineStore(ABC):
    # True when ``read_many_async`` never holds up its event loop: the store awaits its
    # network I/O (Redis, PostgreSQL) or its reads are too short to be worth leaving the
    # loop for (SQLite). For other stores the async read path (the feature server's)
    # runs ``read_many`` in a worker thread, so a slow store stalls only its own request.
    async_reads: ClassVar[bool] = False

    def __init__(self, config: BackendConfig, repo_config: RepoConfig):
        self.config = config
        self.repo_config = repo_config
        self.project = repo_config.project

    @abstractmethod
    def prepare(self, keep: Sequence[FeatureView], delete: Sequence[FeatureView]) -> None:
        """Create or migrate storage for ``keep``; drop it for ``delete``. Idempotent."""

    @abstractmethod
    def write(self, view: FeatureView, batch: pa.RecordBatch) -> None:
        """Upsert rows (``offline.base.online_batch_schema`` columns), monotonic in event time."""

    @abstractmethod
    def read(self, view: FeatureView, keys: Sequence[tuple], features: Sequence[str]
             ) -> Rows:
        """The stored row of each of ``keys`` (tuples in ``view.join_keys`` order), aligned
        with them: ``(event_ts_us, *values of features)``, or None for a key without a row.

        ``keys`` may repeat; a repeated key gets its row each time.
        """

    @abstractmethod
    def teardown(self, views: Sequence[FeatureView]) -> None:
        """Remove all storage for ``views``."""

    @abstractmethod
    def newest_event_times(self, views: Sequence[FeatureView]) -> dict[str, int]:
        """View name -> the newest event time (epoch microseconds) ever written for it,
        by any process; views never written (or torn down since) are left out.

        Recorded by ``write`` with the rows (never before they are visible), so
        reading it costs one lookup per view, never a scan of the rows.
        """

    def read_many(self, reads: Sequence[tuple[FeatureView, Sequence[tuple], Sequence[str]]]
                  ) -> list[Rows]:
        """``read`` for several (view, keys, features) at once, results in the same order.

        Stores whose protocol can batch across views (Redis) override this so an online
        request costs one round trip however many views it touches.
        """
        return [self.read(view, keys, features) for view, keys, features in reads]

    async def read_many_async(self, reads: Sequence[tuple[FeatureView, Sequence[tuple],
                                                          Sequence[str]]]) -> list[Rows]:
        """``read_many`` for an event loop, which it must not block. Stores that set
        ``async_reads`` override this (their client awaits the network); the default
        runs ``read_many`` in the loop's default (bounded) thread pool."""
        return await asyncio.get_running_loop().run_in_executor(None, self.read_many, reads)

    def ping(self) -> None:
        """Raise if the store cannot be reached (health checks)."""

    def close(self) -> None:
        """Release connections."""

    async def aclose(self) -> None:
        """``close`` from an event loop, in its thread: clients opened on that loop are
        closed on it (a store with per-loop async clients overrides this)."""
        self.close()
