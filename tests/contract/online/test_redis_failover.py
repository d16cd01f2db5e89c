"""A master dies under load: reads fail fast, then recover by themselves.

Concurrent readers keep asking through the async store API (the feature server's path)
while a master is killed: the Sentinel group's master, or the cluster master that has a
replica. Until the replica is promoted every request must end within the socket timeout
as StoreUnavailableError (the server's 503); once it is, requests must succeed again
without a restart of the store, and the sync path (redis-py) must follow too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
import redis_servers
from conftest import NOW, ONLINE_BACKENDS, OnlineWorld

from tiffin.errors import StoreUnavailableError

pytestmark = pytest.mark.redis
redis = pytest.importorskip("redis")

TIMEOUT = 1.0  # the store's socket timeout in these tests
READERS = 4


def _world(tmp_path, name: str) -> OnlineWorld:
    base = next(b for b in ONLINE_BACKENDS if b.name == name)
    backend = type(base)(base.name, lambda tmp: {**base.config(tmp),
                                                 "socket_timeout_seconds": TIMEOUT},
                         base.marks, read_async=True)
    return OnlineWorld(tmp_path, backend)


@pytest.fixture
def sentinel_world(tmp_path, redis_sentinel):
    w = _world(tmp_path, "redis-sentinel-async")
    yield w
    w.store.online_store.teardown(w.store.list_feature_views())
    w.store.close()


@pytest.fixture
def cluster_world(tmp_path, redis_cluster):
    w = _world(tmp_path, "redis-cluster-async")
    yield w
    w.store.online_store.teardown(w.store.list_feature_views())
    w.store.close()


def _eventually(fn: Callable, within: float):
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


def _kill_under_load(world: OnlineWorld, kill: Callable[[], None], ids: list[int]
                     ) -> tuple[float, list[tuple[float, float, str]]]:
    """Readers ask for ``ids`` (reader k for ids[k::READERS]) before, during and after
    ``kill``; the outcomes must show fast failures only, then a lasting recovery.
    Returns when the kill began and every (start, duration, outcome)."""
    outcomes: list[tuple[float, float, str]] = []  # (start, duration, outcome)
    killed_at: list[float] = []

    def recovered() -> bool:
        # Recovered once the latest rounds of every reader all succeeded after failures
        # (on a cluster, requests away from the dead node succeed until the cluster
        # marks it failed, then all fail until its replica takes over).
        after = [o[2] for o in outcomes if o[0] > killed_at[0]]
        return "unavailable" in after and after[-3 * READERS:] == ["ok"] * (3 * READERS)

    async def reader(k: int) -> None:
        mine = ids[k::READERS]
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            start = time.monotonic()
            try:
                got = await world.store.get_online_features_async(
                    features=["driver_stats:i64"], entity_rows=[{"driver_id": i} for i in mine])
                assert got.to_dict()["i64"] == mine
                outcome = "ok"
            except StoreUnavailableError:
                outcome = "unavailable"
            outcomes.append((start, time.monotonic() - start, outcome))
            if killed_at and start > killed_at[0] and recovered():
                return
            await asyncio.sleep(0.02)

    async def killer() -> None:
        await asyncio.sleep(1.0)
        killed_at.append(time.monotonic())
        await asyncio.to_thread(kill)

    async def main() -> None:
        await asyncio.gather(killer(), *(reader(k) for k in range(READERS)))

    asyncio.run(main())
    before = [o for o in outcomes if o[0] + o[1] < killed_at[0]]
    after = [o for o in outcomes if o[0] > killed_at[0]]
    assert before and all(o[2] == "ok" for o in before)
    failures = [o for o in after if o[2] == "unavailable"]
    assert failures, "the kill was not noticed"
    # Fast: no request hangs past the socket timeout (plus scheduling slack).
    assert max(o[1] for o in failures) < TIMEOUT + 1.0
    # Recovered by itself, within seconds of the kill, and stayed up: every reader
    # answered several times in a row since (the readers stop then, or at 40 s).
    assert recovered(), "no lasting recovery within 40 s"
    assert failures[-1][0] - killed_at[0] < 20

    # The sync path (redis-py) follows as well, for writes and reads; it may take a
    # little longer (Sentinel: until the sentinels stop marking the master as down).
    def write_and_read() -> list:
        world.write("driver_stats", [{"driver_id": i, "__event_ts": NOW, "i64": i + 100}
                                     for i in ids])
        return world.store.get_online_features(
            features=["driver_stats:i64"],
            entity_rows=[{"driver_id": i} for i in ids]).to_dict()["i64"]

    assert _eventually(write_and_read, within=15) == [i + 100 for i in ids]
    return killed_at[0], outcomes


def test_reads_fail_fast_during_a_sentinel_failover_and_recover(sentinel_world,
                                                                redis_sentinel):
    ids = list(range(8))
    sentinel_world.write("driver_stats", [{"driver_id": i, "__event_ts": NOW, "i64": i}
                                          for i in ids])
    old = redis_servers.sentinel_master()
    # The replica must hold the rows before its master dies (replication is async).
    assert redis.Redis(*old).wait(1, 5000) == 1
    try:
        _kill_under_load(sentinel_world, lambda: redis_sentinel.kill(old[1]), ids)
        assert redis_servers.sentinel_master() != old
    finally:
        # The old master comes back; the sentinels make it a replica of the new one,
        # so the group is whole again for whatever runs next.
        if old[1] not in redis_sentinel.procs:
            redis_sentinel.restart(old[1])
            redis_servers._wait("the Sentinel group to be whole again",
                                redis_servers.sentinel_group_ok, timeout=60)


def test_reads_fail_fast_during_a_cluster_failover_and_recover(cluster_world, redis_cluster):
    # Whichever of the two is master now (an earlier run of this test swaps them).
    pair = (redis_servers.CLUSTER_PORTS[0], redis_servers.CLUSTER_REPLICA_PORT)
    master = next(p for p in pair if redis_servers.cluster_role(p) == "master")
    replica = pair[1] if master == pair[0] else pair[0]
    # Entities on every master, the dying one included.
    ids = list(range(24))
    cluster_world.write("driver_stats", [{"driver_id": i, "__event_ts": NOW, "i64": i}
                                         for i in ids])
    assert redis.Redis(port=master).wait(1, 5000) == 1
    view = cluster_world.view("driver_stats")
    keys = cluster_world.store.online_store._codec(view).keys([(i,) for i in ids])
    assert any(cluster_world.store.online_store.client.get_node_from_key(k).port == master
               for k in keys)
    try:
        _kill_under_load(cluster_world, lambda: redis_cluster.kill(master), ids)
        assert redis_servers.cluster_role(replica) == "master"
    finally:
        if master not in redis_cluster.procs:
            # Back from its nodes.conf, it learns it was replaced and follows the new one.
            redis_cluster.restart(master)
            redis_servers._wait("the old master to rejoin as a replica", lambda: (
                "master_link_status:up" in redis_servers._cli(master, "INFO", "replication")),
                timeout=60)
            for port in (*redis_servers.CLUSTER_PORTS, redis_servers.CLUSTER_REPLICA_PORT):
                redis_servers._wait(f"cluster state ok on {port}",
                                    lambda port=port: redis_servers.cluster_ok(port))


def test_a_named_address_that_is_no_master_is_not_read_from(redis_sentinel):
    # The sentinels' answer can be stale for a moment; a replica would serve old data.
    from tiffin.online.redis.aio import AsyncReader

    master = redis_servers.sentinel_master()[1]
    replica = (redis_servers.SENTINEL_REPLICA_PORT if master == redis_servers.SENTINEL_MASTER_PORT
               else redis_servers.SENTINEL_MASTER_PORT)

    def reader(port: int) -> AsyncReader:
        async def resolve() -> tuple[str, int]:
            return "127.0.0.1", port
        return AsyncReader({"socket_timeout": TIMEOUT}, resolve=resolve)

    async def main() -> None:
        to_replica, to_master = reader(replica), reader(master)
        try:
            with pytest.raises(StoreUnavailableError, match="not a master"):
                await to_replica.mget(["tiffin:test:role"])
            assert await to_master.mget(["tiffin:test:role"]) == [None]
        finally:
            to_replica.close()
            to_master.close()

    asyncio.run(main())
