"""Random bodies against every POST endpoint: bad input is a 4xx, never a 500."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_server import make_repo

from tiffin.server.app import create_app

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
names = st.sampled_from(["stats", "stats:rate", "stats:city", "d_push", "svc", "driver_id",
                         "event_timestamp", "rate", "trips", "city", "nope", ""])
columns = st.dictionaries(names, st.lists(scalars, min_size=0, max_size=3), max_size=5)
bodies = {
    "/get-online-features": st.fixed_dictionaries({}, optional={
        "features": st.one_of(st.lists(names, max_size=3), json_values),
        "feature_service": st.one_of(names, json_values),
        "entities": st.one_of(columns, json_values),
        "full_feature_names": st.one_of(st.booleans(), json_values)}),
    "/push": st.fixed_dictionaries({}, optional={
        "push_source_name": st.one_of(names, json_values), "df": st.one_of(columns, json_values),
        "to": st.one_of(st.sampled_from(["online", "offline", "online_and_offline", "x"]),
                        json_values)}),
    "/write-to-online-store": st.fixed_dictionaries({}, optional={
        "feature_view_name": st.one_of(names, json_values),
        "df": st.one_of(columns, json_values)}),
    "/materialize": st.fixed_dictionaries({}, optional={
        "start_ts": st.one_of(st.text(max_size=12), json_values),
        "end_ts": st.one_of(st.sampled_from(["2026-01-01", "now", "2026-13-40"]), json_values),
        "feature_views": st.one_of(st.lists(names, max_size=2), json_values)}),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    store = make_repo(tmp_path_factory.mktemp("fuzz"))
    with TestClient(create_app(store), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("path", sorted(bodies))
def test_no_5xx_on_random_bodies(client, path):
    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(body=bodies[path])
    def check(body):
        r = client.post(path, json=body)
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            assert "error" in r.json()
    check()
