"""The async online read never blocks its event loop, whatever the store declares."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from tiffin import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from tiffin.online.sqlite.store import SQLiteOnlineStore
from tiffin.types import Float64

NOW = datetime.now(timezone.utc).replace(microsecond=0)


class GatedStore(SQLiteOnlineStore):
    """A store without an async path whose reads wait until the test opens the gate."""

    async_reads = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.threads: list[str] = []

    def read_many(self, reads):
        self.threads.append(threading.current_thread().name)
        assert self.gate.wait(10), "the gate was never opened"
        return super().read_many(reads)


def test_a_store_without_async_reads_is_read_in_a_worker_thread(tmp_path):
    pq.write_table(pa.table({"driver_id": pa.array([1], pa.int64()), "rate": [0.5],
                             "event_timestamp": pa.array([NOW - timedelta(minutes=1)],
                                                         pa.timestamp("us", "UTC"))}),
                   tmp_path / "d.parquet")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    view = FeatureView(name="stats", entities=[driver], ttl=timedelta(days=1),
                       source=FileSource(name="d", path="d.parquet",
                                         timestamp_field="event_timestamp"),
                       schema=[Field(name="rate", dtype=Float64)])
    store = FeatureStore(repo_path=tmp_path, config=RepoConfig(
        project="gated", registry="r.json",
        online_store={"type": "sqlite", "path": str(tmp_path / "online.db")}))
    store.apply([driver, view])
    store.materialize(NOW - timedelta(days=1), NOW)
    gated = store.__dict__["online_store"] = GatedStore(store.config.online_store, store.config)

    async def main():
        read = asyncio.ensure_future(store.get_online_features_async(
            ["stats:rate"], {"driver_id": [1, 2]}))
        ticks = 0
        while not gated.threads and ticks < 1000:  # the loop runs while the read waits
            await asyncio.sleep(0.01)
            ticks += 1
        for _ in range(5):
            await asyncio.sleep(0.01)
            ticks += 1
        assert not read.done()
        gated.gate.set()
        return ticks, await read

    try:
        ticks, resp = asyncio.run(main())
    finally:
        gated.gate.set()
        store.close()
    assert ticks >= 5 and gated.threads and gated.threads[0] != threading.main_thread().name
    assert resp.to_dict() == {"driver_id": [1, 2], "rate": [0.5, None]}
