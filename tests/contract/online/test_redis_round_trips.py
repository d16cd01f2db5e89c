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
