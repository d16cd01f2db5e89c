"""Redis answers an online request in one round trip, however many views it touches.

Round trips are counted on the real connection (every pipeline or command is one
``send_packed_command``), against the real server.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import NOW, ONLINE_BACKENDS, OnlineWorld

pytestmark = pytest.mark.redis
redis = pytest.importorskip("redis")


@pytest.fixture
def world(tmp_path):
    backend = next(b for b in ONLINE_BACKENDS if b.name == "redis")
    w = OnlineWorld(tmp_path, backend)
    yield w
    w.store.online_store.teardown(w.store.list_feature_views())
    w.store.close()


@pytest.fixture
def round_trips(monkeypatch):
    sent = []
    real = redis.connection.AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append(1)
        return real(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


@pytest.mark.parametrize("n_rows", [1, 100])
def test_three_views_one_round_trip(world, round_trips, n_rows):
    ts = NOW - timedelta(minutes=5)
    world.write("driver_stats", [{"driver_id": i, "__event_ts": ts, "i64": i}
                                 for i in range(n_rows)])
    world.write("customer_stats", [{"customer_id": f"c{i}", "__event_ts": ts, "spend": 1.5}
                                   for i in range(n_rows)])
    world.write("pair_stats", [{"driver_id": i, "customer_id": f"c{i}", "__event_ts": ts,
                                "trips": i} for i in range(n_rows)])
    world.read(["driver_stats:i64"], [{"driver_id": 0}])  # connect, load nothing else
    round_trips.clear()
    rows = [{"driver_id": i, "customer_id": f"c{i}"} for i in range(n_rows)]
    resp = world.read(["driver_stats:i64", "customer_stats:spend", "pair_stats:trips"], rows)
    assert len(round_trips) == 1
    d = resp.to_dict()
    assert d["i64"] == list(range(n_rows))
    assert d["trips"] == list(range(n_rows))
    assert d["spend"] == [1.5] * n_rows


def _with_schema(world, view_name, source_file, change):
    """Re-apply ``view_name`` with its schema changed by ``change(list of Fields)``, and
    its (empty) Parquet source to match, so apply's source checks pass."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    view = world.view(view_name)
    view.schema = change(list(view.schema))
    path = world.tmp / source_file
    old = pq.read_schema(path)
    keep = [f for f in old if f.name in ("event_timestamp", *view.join_keys)]
    pq.write_table(pa.schema(keep + [pa.field(f.name, f.dtype.to_arrow())
                                     for f in view.features]).empty_table(), path)
    world.store.apply([view])


def test_rows_of_an_older_layout_are_read_by_name(world):
    from tiffin import Field
    from tiffin.types import Int64, String

    world.write("customer_stats", [{"customer_id": "old", "__event_ts": NOW, "spend": 2.0,
                                    "tier": "gold"}])
    # A feature added in front, and 'tier' now an Int64: positions and a type changed.
    _with_schema(world, "customer_stats", "customers.parquet", lambda fields: (
        [Field(name="visits", dtype=Int64)]
        + [Field(name="tier", dtype=Int64) if f.name == "tier" else f for f in fields]))
    world.write("customer_stats", [{"customer_id": "new", "__event_ts": NOW, "spend": 3.0,
                                    "tier": 7, "visits": 1}])
    rows = [{"customer_id": "old"}, {"customer_id": "new"}]
    got = world.read(["customer_stats:spend", "customer_stats:visits", "customer_stats:tier"],
                     rows).to_dict()
    # The old row keeps 'spend'; 'visits' did not exist and 'tier' was a String: null.
    assert got == {"customer_id": ["old", "new"], "spend": [2.0, 3.0], "visits": [None, 1],
                   "tier": [None, 7]}
    # Back to the first layout: the old row reads in full again, and a fresh client
    # (no cached layouts) agrees.
    _with_schema(world, "customer_stats", "customers.parquet", lambda fields: [
        Field(name="spend", dtype=fields[1].dtype), Field(name="tier", dtype=String)])
    world.store.close()
    del world.store.__dict__["online_store"]  # a new store object: no layouts cached
    fresh = world.read(["customer_stats:tier", "customer_stats:spend"], rows).to_dict()
    assert fresh == {"customer_id": ["old", "new"], "tier": ["gold", None], "spend": [2.0, 3.0]}


def test_a_key_left_by_an_older_layout_is_replaced_on_write(world):
    store = world.store.online_store
    view = world.view("driver_stats")
    key = store._prefix(view) + "i1"
    store.client.hset(key, mapping={"__ts": "1", "i64": "5"})  # the hash layout of tiffin 0.1
    assert world.read(["driver_stats:i64"], [{"driver_id": 1}]).to_dict()["i64"] == [None]
    world.write("driver_stats", [{"driver_id": 1, "__event_ts": NOW, "i64": 6}])
    assert world.read(["driver_stats:i64"], [{"driver_id": 1}]).to_dict()["i64"] == [6]


def test_async_read_is_one_command_for_three_views(world, monkeypatch):
    import asyncio

    from tiffin.online.redis import aio

    ts = NOW - timedelta(minutes=5)
    world.write("driver_stats", [{"driver_id": 1, "__event_ts": ts, "i64": 10}])
    world.write("customer_stats", [{"customer_id": "c1", "__event_ts": ts, "spend": 1.5}])
    world.write("pair_stats", [{"driver_id": 1, "customer_id": "c1", "__event_ts": ts,
                                "trips": 3}])
    sent = []
    real = aio._Protocol.send
    monkeypatch.setattr(aio._Protocol, "send", lambda self, packed: (sent.append(packed),
                                                                      real(self, packed))[1])

    async def read():
        await world.store.get_online_features_async(["driver_stats:i64"], [{"driver_id": 1}])
        sent.clear()  # connected (the SELECT of the test database is a command too)
        return await world.store.get_online_features_async(
            ["driver_stats:i64", "customer_stats:spend", "pair_stats:trips"],
            [{"driver_id": 1, "customer_id": "c1"}])

    resp = asyncio.run(read())
    assert len(sent) == 1 and sent[0].split(b"\r\n")[2] == b"MGET"
    assert resp.to_dict() == {"driver_id": [1], "customer_id": ["c1"], "i64": [10],
                              "spend": [1.5], "trips": [3]}


@pytest.mark.parametrize("foreign", [b"not msgpack \xc1", b"\xa3abc", b"\x92\x01\x02"])
def test_a_value_written_by_another_program_is_a_clear_backend_error(world, foreign):
    import asyncio

    from tiffin.errors import BackendError

    store = world.store.online_store
    store.client.set(store._prefix(world.view("driver_stats")) + "i1", foreign)
    with pytest.raises(BackendError, match="is not a tiffin row"):
        world.read(["driver_stats:i64"], [{"driver_id": 1}])
    with pytest.raises(BackendError, match="is not a tiffin row"):
        asyncio.run(world.store.get_online_features_async(["driver_stats:i64"],
                                                          [{"driver_id": 1}]))
