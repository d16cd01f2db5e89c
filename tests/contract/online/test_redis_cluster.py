"""The Redis Cluster layout and routing, against the session's real 3-master cluster.

Counts come from the nodes themselves (INFO commandstats / stats), so they say what
reached Redis, not what the client meant to send.
"""

from __future__ import annotations

import asyncio

import pytest
import redis_servers
from conftest import NOW, ONLINE_BACKENDS, OnlineWorld

from tiffin import FeatureView, Field
from tiffin.errors import StoreUnavailableError
from tiffin.online.redis.routing import ClusterReader, key_slot
from tiffin.types import Float64

pytestmark = pytest.mark.redis
redis = pytest.importorskip("redis")

PORTS = redis_servers.CLUSTER_PORTS


@pytest.fixture
def world(tmp_path, redis_cluster):
    backend = next(b for b in ONLINE_BACKENDS if b.name == "redis-cluster")
    w = OnlineWorld(tmp_path, backend)
    # A second view of the driver entity: both views of a driver share one slot.
    w.driver_more = FeatureView(name="driver_more", entities=[w.driver],
                                schema=[Field(name="f64", dtype=Float64)], source=w.driver_src)
    w.store.apply([w.driver_more])
    yield w
    w.store.online_store.teardown(w.store.list_feature_views())
    w.store.close()


def _masters() -> list[int]:
    return [p for p in (*PORTS, redis_servers.CLUSTER_REPLICA_PORT)
            if redis_servers.cluster_role(p) == "master"]


def _counters(stat):
    clients = {p: redis.Redis(port=p) for p in _masters()}
    for c in clients.values():
        c.ping()  # connected now: each call below is one command and one read

    def read() -> dict[int, int]:
        return {p: stat(c) for p, c in clients.items()}
    return read


def _mget_calls(client) -> int:
    return client.info("commandstats").get("cmdstat_mget", {}).get("calls", 0)


def _reads(client) -> int:
    return client.info("stats")["total_reads_processed"]


def _read(world, features, rows, read_async):
    if read_async:
        return asyncio.run(world.store.get_online_features_async(features=features,
                                                                 entity_rows=rows))
    return world.store.get_online_features(features=features, entity_rows=rows)


def test_key_slots_agree_with_the_server(redis_cluster):
    client = redis.Redis(port=PORTS[0])
    for key in ["tiffin:{p:i1}:v", "plain", "{}x", "a{b}c{d}", "{", "x{}{y}", "é{ü}",
                "tiffin:{proj}:view:#layouts", "tiffin:{p:s}x}:v"]:
        assert key_slot(key) == client.cluster("keyslot", key), key


def test_every_view_of_an_entity_shares_a_slot(world):
    store = world.store.online_store
    for i in (1, 2, 3):
        slots = {key_slot(store._codec(world.view(v)).keys([(i,)])[0])
                 for v in ("driver_stats", "driver_more")}
        assert len(slots) == 1
    # A view's metadata sits in the project's slot, so one MGET reads every view's.
    meta = {key_slot(store._codec(world.view(v)).newest_key)
            for v in ("driver_stats", "driver_more", "customer_stats")}
    assert len(meta) == 1


@pytest.mark.parametrize("read_async", [False, True])
def test_one_entity_of_two_views_is_one_mget_on_one_node(world, read_async):
    world.write("driver_stats", [{"driver_id": 7, "__event_ts": NOW, "i64": 70}])
    world.write("driver_more", [{"driver_id": 7, "__event_ts": NOW, "f64": 0.5}])
    features = ["driver_stats:i64", "driver_more:f64"]
    _read(world, features, [{"driver_id": 1}], read_async)  # connected, slots loaded
    calls = _counters(_mget_calls)
    before = calls()
    got = _read(world, features, [{"driver_id": 7}], read_async).to_dict()
    after = calls()
    assert got["i64"] == [70] and got["f64"] == [0.5]
    assert sum(after.values()) - sum(before.values()) == 1


@pytest.mark.parametrize("read_async", [False, True])
def test_many_entities_are_one_write_per_node(world, read_async):
    ids = list(range(100))
    world.write("driver_stats", [{"driver_id": i, "__event_ts": NOW, "i64": i} for i in ids])
    rows = [{"driver_id": i} for i in ids]
    _read(world, ["driver_stats:i64"], rows, read_async)  # connected, slots loaded
    reads, calls = _counters(_reads), _counters(_mget_calls)
    # The read counters innermost: the commandstats calls must not count as reads.
    before_calls = calls()
    before_reads = reads()
    got = _read(world, ["driver_stats:i64"], rows, read_async).to_dict()
    after_reads = reads()
    after_calls = calls()
    assert got["i64"] == ids
    # One MGET per slot touched (100 keys, 100 hash tags) ...
    slots = {key_slot(k) for k in world.store.online_store._codec(
        world.view("driver_stats")).keys([(i,) for i in ids])}
    assert sum(after_calls.values()) - sum(before_calls.values()) == len(slots)
    # ... but each node read them in one go: one read for the request, one for the
    # second INFO (and a little slack for a write Redis happens to read in two parts).
    for port, n in after_reads.items():
        assert n - before_reads[port] <= 3, (port, n - before_reads[port])


def _reader() -> ClusterReader:
    return ClusterReader({"socket_timeout": 2.0}, [("127.0.0.1", PORTS[0])])


def test_a_stale_slot_table_is_corrected_by_moved(redis_cluster):
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=PORTS[0])
    keys = [f"tiffin:test:{{moved{i}}}" for i in range(30)]
    for k in keys:
        client.set(k, k)
    r = _reader()

    async def main():
        table = await r.refresh()
        wrong = next(a for a in set(table) if a is not None)
        r.slots = [wrong] * len(table)  # every slot "on" one node: the others say MOVED
        assert await r.mget(keys) == [k.encode() for k in keys]
        assert r.slots is None or r.slots == table  # dropped, to be reloaded
        assert await r.mget(keys) == [k.encode() for k in keys]
        assert r.slots == table

    try:
        asyncio.run(main())
    finally:
        r.close()
        client.delete(*keys)
        client.close()


def _sync_store(tmp_path):
    from tiffin import RepoConfig
    from tiffin.online.redis.store import RedisOnlineStore
    cfg = RepoConfig(project="routing", registry=str(tmp_path / "r.json"), online_store={
        "type": "redis", "redis_type": "redis_cluster",
        "connection_string": f"127.0.0.1:{PORTS[0]}"})
    return RedisOnlineStore(cfg.online_store, cfg)


def test_a_migrating_slot_is_followed_by_ask(redis_cluster, tmp_path):
    key = "tiffin:test:{asked}"
    slot = key_slot(key)
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=PORTS[0])
    client.set(key, b"here")
    store = _sync_store(tmp_path)
    assert store._mget([key, "tiffin:test:{other}"]) == [b"here", None]  # slots loaded
    source = client.get_node_from_key(key)
    target = next(n for n in client.get_primaries() if n.name != source.name)
    src, dst = redis.Redis(port=source.port), redis.Redis(port=target.port)
    src_id, dst_id = src.cluster("myid"), dst.cluster("myid")
    r = _reader()
    try:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        src.execute_command("MIGRATE", "127.0.0.1", target.port, key, 0, 5000)
        # The key moved, the slot not yet: the source answers ASK for it.
        with pytest.raises(redis.exceptions.AskError):
            src.get(key)

        async def main():
            await r.refresh()
            assert r.slots[slot] == ("127.0.0.1", source.port)  # the table says source
            assert await r.mget([key]) == [b"here"]

        asyncio.run(main())
        # The sync path: redis-py's table still says source, whose ASK is followed.
        assert store._mget([key, "tiffin:test:{other}"]) == [b"here", None]
        for port in _masters():  # the move completes: the source now answers MOVED
            redis.Redis(port=port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        assert store._mget([key, "tiffin:test:{other}"]) == [b"here", None]
        assert store.client.get_node_from_key(key).port == target.port  # table reloaded
        assert store._mget([key]) == [b"here"]
    finally:
        r.close()
        store.close()
        # Finish the move on every master, so the cluster is consistent again.
        for port in _masters():
            redis.Redis(port=port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        client.close()
        redis.cluster.RedisCluster(host="127.0.0.1", port=PORTS[0]).delete(key)


def test_no_reachable_node_is_unavailable_not_a_failure():
    r = ClusterReader({"socket_timeout": 0.5}, [("127.0.0.1", 7099)])  # nothing there

    async def main():
        with pytest.raises(StoreUnavailableError, match="CLUSTER SLOTS"):
            await r.mget(["a", "b"])

    asyncio.run(main())
    r.close()
