"""get_online_features_async on PostgreSQL from a fresh event loop each time (asyncio.run
in a loop, as a script or a test does): every loop must be able to end.

The pool of a loop made a connection in the background (its min_size) while the first
read waited for another; when asyncio.run ended the loop, that connect took the
cancellation for a failure and scheduled a retry, and asyncio.run never returned.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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
