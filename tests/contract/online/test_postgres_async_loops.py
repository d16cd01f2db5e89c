"""get_online_features_async on PostgreSQL from a fresh event loop each time (asyncio.run
in a loop, as a script or a test does): every loop must be able to end.

The pool of a loop made a connection in the background (its min_size) while the first
read waited for another; when asyncio.run ended the loop, that connect took the
cancellation for a failure and scheduled a retry, and asyncio.run never returned.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import NOW, ONLINE_BACKENDS, OnlineWorld

pytestmark = pytest.mark.postgres

HERE = Path(__file__).parent

SCRIPT = textwrap.dedent("""
    import asyncio, pathlib, sys, tempfile
    from datetime import timedelta
    sys.path.insert(0, {here!r})
    from conftest import NOW, ONLINE_BACKENDS, OnlineWorld

    backend = next(b for b in ONLINE_BACKENDS if b.name == "postgres-async")
    world = OnlineWorld(pathlib.Path(tempfile.mkdtemp()), backend)
    try:
        world.write("driver_stats", [{{"driver_id": 1,
                                       "__event_ts": NOW - timedelta(minutes=1), "i64": 7}}])
        for _ in range(25):
            resp = asyncio.run(world.store.get_online_features_async(
                ["driver_stats:i64"], [{{"driver_id": 1}}]))
            assert resp.to_dict()["i64"] == [7]
    finally:
        world.store.online_store.teardown(world.store.list_feature_views())
        world.store.close()
    print("done")
""")


def test_repeated_asyncio_run_never_hangs(tmp_path):
    script = tmp_path / "loops.py"
    script.write_text(SCRIPT.format(here=str(HERE)))
    try:
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                              timeout=45)
    except subprocess.TimeoutExpired:
        pytest.fail("asyncio.run(get_online_features_async(...)) on PostgreSQL never returned")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("done")


def _sockets_to_postgres() -> set[int]:
    import psutil
    proc = psutil.Process()
    conns = (proc.net_connections if hasattr(proc, "net_connections") else proc.connections)("tcp")
    return {c.laddr[1] for c in conns if c.raddr and c.raddr[1] == 5432
            and c.status == psutil.CONN_ESTABLISHED}


def test_each_loops_pool_connections_are_closed_when_its_loop_ends(tmp_path):
    backend = next(b for b in ONLINE_BACKENDS if b.name == "postgres-async")
    gc.collect()
    world = OnlineWorld(tmp_path, backend)
    try:
        world.write("driver_stats", [{"driver_id": 1, "__event_ts": NOW - timedelta(minutes=1),
                                      "i64": 7}])
        online = world.store.online_store
        synchronous = _sockets_to_postgres()  # the store's own (sync) pool

        def read():
            return asyncio.run(world.store.get_online_features_async(
                ["driver_stats:i64"], [{"driver_id": 1}])).to_dict()["i64"]

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(5):
                assert read() == [7]
                # The loop has ended: nothing of its pool may stay open.
                assert _sockets_to_postgres() <= synchronous
                assert [p for p in online._async_pools.values() if not p.closed] == []
            world.store.close()
            gc.collect()
        assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
    finally:
        world.store.online_store.teardown(world.store.list_feature_views())
        world.store.close()



def test_close_returns_while_another_threads_loop_is_busy(tmp_path):
    """close() cannot wait forever for a loop that is stuck: it gives up after the
    connect timeout, and the pool it handed over closes once that loop runs again."""
    import threading
    import time

    backend = next(b for b in ONLINE_BACKENDS if b.name == "postgres-async")
    world = OnlineWorld(tmp_path, backend)
    online = world.store.online_store
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    release = threading.Event()
    try:
        world.write("driver_stats", [{"driver_id": 1, "__event_ts": NOW - timedelta(minutes=1),
                                      "i64": 7}])
        read = asyncio.run_coroutine_threadsafe(world.store.get_online_features_async(
            ["driver_stats:i64"], [{"driver_id": 1}]), loop)
        assert read.result(30).to_dict()["i64"] == [7]
        (pool,) = online._async_pools.values()
        loop.call_soon_threadsafe(release.wait, 60)  # the loop blocks until released
        started = time.monotonic()
        online.close()  # neither raises nor hangs
        assert time.monotonic() - started < online.config.connect_timeout_seconds + 15
        assert not pool.closed and online._async_pools == {}
        release.set()
        deadline = time.monotonic() + 20
        while not pool.closed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.closed
    finally:
        release.set()
        asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(30)
        loop.close()
        online.teardown(world.store.list_feature_views())
        world.store.close()
