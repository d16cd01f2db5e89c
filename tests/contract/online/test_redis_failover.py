"""A Sentinel-managed master dies under load: reads fail fast, then recover by themselves.

Concurrent readers keep asking through the async store API (the feature server's path)
while the master is killed. Until the sentinels promote the replica every request must
end within the socket timeout as StoreUnavailableError (the server's 503), and once
they have, requests must succeed again without a restart of the store.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import redis_servers
from conftest import NOW, ONLINE_BACKENDS, OnlineWorld

from tiffin.errors import StoreUnavailableError

pytestmark = pytest.mark.redis
redis = pytest.importorskip("redis")

TIMEOUT = 1.0  # the store's socket timeout in this test


@pytest.fixture
def world(tmp_path, redis_sentinel):
    base = next(b for b in ONLINE_BACKENDS if b.name == "redis-sentinel-async")
    backend = type(base)(base.name, lambda tmp: {**base.config(tmp),
                                                 "socket_timeout_seconds": TIMEOUT},
                         base.marks, read_async=True)
    w = OnlineWorld(tmp_path, backend)
    yield w
    w.store.online_store.teardown(w.store.list_feature_views())
    w.store.close()


def _promoted(old: tuple[str, int]) -> bool:
    try:
        return redis_servers.sentinel_master() != old
    except ValueError:  # no answer yet
        return False


def _eventually(fn, within: float):
    deadline = time.monotonic() + within
    while True:
        start = time.monotonic()
        try:
            return fn()
        except StoreUnavailableError:
            assert time.monotonic() - start < TIMEOUT + 1.0  # each try fails fast
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_reads_fail_fast_during_a_sentinel_failover_and_recover(world, redis_sentinel):
    world.write("driver_stats", [{"driver_id": i, "__event_ts": NOW, "i64": i}
                                 for i in range(10)])
    old = redis_servers.sentinel_master()
    # The replica must hold the rows before its master dies (replication is async).
    assert redis.Redis(*old).wait(1, 5000) == 1

    outcomes: list[tuple[float, float, str]] = []  # (start, duration, outcome)
    killed_at: list[float] = []

    async def reader(k: int) -> None:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                got = await world.store.get_online_features_async(
                    features=["driver_stats:i64"], entity_rows=[{"driver_id": k}])
                assert got.to_dict()["i64"] == [k]
                outcome = "ok"
            except StoreUnavailableError:
                outcome = "unavailable"
            outcomes.append((start, time.monotonic() - start, outcome))
            if killed_at and outcome == "ok" and start > killed_at[0] and _recovered():
                return
            await asyncio.sleep(0.02)

    def _recovered() -> bool:
        # Done once every reader has succeeded after the kill.
        after = [o for o in outcomes if o[0] > killed_at[0]]
        return sum(o[2] == "ok" for o in after) >= 4 and after[-1][2] == "ok"

    async def killer() -> None:
        await asyncio.sleep(1.0)
        killed_at.append(time.monotonic())
        await asyncio.to_thread(redis_sentinel.kill, old[1])

    async def main() -> None:
        await asyncio.gather(killer(), *(reader(k) for k in range(4)))

    try:
        asyncio.run(main())
        before = [o for o in outcomes if o[0] + o[1] < killed_at[0]]
        after = [o for o in outcomes if o[0] > killed_at[0]]
        assert before and all(o[2] == "ok" for o in before)
        failures = [o for o in after if o[2] == "unavailable"]
        assert failures, "the kill was not noticed"
        # Fast: no request hangs past the socket timeout (plus scheduling slack).
        assert max(o[1] for o in failures) < TIMEOUT + 1.0
        # Recovered by itself, within seconds of the kill, and stays up.
        first_ok = min(o[0] for o in after if o[2] == "ok" and o[0] > failures[0][0])
        assert first_ok - killed_at[0] < 20
        # and stays up: no reader fails once the new master has answered one.
        assert not [o for o in failures if o[0] > first_ok + TIMEOUT]
        assert redis_servers.sentinel_master() != old
        # The sync path (redis-py's Sentinel client) follows too, for reads and writes;
        # it asks for a master the sentinels no longer mark as down, which can come a
        # little after the promotion the async reader acts on.
        def write_and_read() -> list:
            world.write("driver_stats", [{"driver_id": 0, "__event_ts": NOW, "i64": 100}])
            return world.store.get_online_features(
                features=["driver_stats:i64"], entity_rows=[{"driver_id": 0}]).to_dict()["i64"]

        assert _eventually(write_and_read, within=15) == [100]
    finally:
        # The old master comes back; the sentinels make it a replica of the new one,
        # so the group is whole again for whatever runs next.
        if old[1] not in redis_sentinel.procs:
            redis_sentinel.restart(old[1])
            redis_servers._wait("the old master to rejoin as a replica", lambda: (
                "master_link_status:up" in redis_servers._cli(old[1], "INFO", "replication")),
                timeout=60)
