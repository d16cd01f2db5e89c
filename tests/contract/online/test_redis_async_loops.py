"""get_online_features_async from a fresh event loop each time (asyncio.run in a loop, as a
script or a test does) must not leave a Redis connection behind per loop."""

from __future__ import annotations

import asyncio
import gc
import os
import warnings
from datetime import timedelta

import pytest
from conftest import NOW, ONLINE_BACKENDS, REDIS, OnlineWorld

pytestmark = pytest.mark.redis


def _sockets_to_redis() -> set[int]:
    import psutil
    port = int(REDIS.split(",")[0].split(":")[1])
    proc = psutil.Process()
    # net_connections replaced connections in psutil 6 (which warns on the old name).
    conns = (proc.net_connections if hasattr(proc, "net_connections") else proc.connections)("tcp")
    return {c.laddr[1] for c in conns if c.raddr and c.raddr[1] == port
            and c.status == psutil.CONN_ESTABLISHED}


def test_repeated_asyncio_run_keeps_sockets_and_file_descriptors_flat(tmp_path):
    backend = next(b for b in ONLINE_BACKENDS if b.name == "redis-async")
    gc.collect()  # what earlier tests left to the collector is not this test's
    world = OnlineWorld(tmp_path, backend)
    try:
        world.write("driver_stats", [{"driver_id": 1, "__event_ts": NOW - timedelta(minutes=1),
                                      "i64": 7}])

        def read():
            return asyncio.run(world.store.get_online_features_async(
                ["driver_stats:i64"], [{"driver_id": 1}])).to_dict()["i64"]

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert read() == [7]  # first use: opens what the store keeps for good
            gc.collect()
            sockets, fds = _sockets_to_redis(), len(os.listdir("/proc/self/fd"))
            for _ in range(60):
                assert read() == [7]
            gc.collect()
        assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
        # A leak would be one socket (and one descriptor) per loop: 60 here.
        assert _sockets_to_redis() <= sockets
        assert len(os.listdir("/proc/self/fd")) <= fds
        assert getattr(world.store.online_store._aio._local, "conn", None) is None
    finally:
        world.store.online_store.teardown(world.store.list_feature_views())
        world.store.close()
