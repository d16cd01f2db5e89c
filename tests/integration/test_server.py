"""The feature server: Feast's JSON shapes, real HTTP errors, push, metrics, `tiffin serve`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from tiffin import (
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    PushSource,
    ValueType,
)
from tiffin.server.app import create_app
from tiffin.types import Float64, Int64, String

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def make_repo(tmp_path):
    pq.write_table(pa.table({
        "driver_id": pa.array([1, 2], pa.int64()),
        "event_timestamp": pa.array([NOW - timedelta(minutes=30)] * 2, pa.timestamp("us", "UTC")),
        "rate": [0.5, 0.25], "trips": [3, 4], "city": ["Lisbon", None]}), tmp_path / "d.parquet")
    (tmp_path / "feature_store.yaml").write_text("project: srv\nregistry: registry.json\n")
    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    batch = FileSource(name="d_batch", path="d.parquet", timestamp_field="event_timestamp")
    push = PushSource(name="d_push", batch_source=batch)
    stats = FeatureView(name="stats", entities=[driver], ttl=timedelta(hours=2), source=push,
                        schema=[Field(name="rate", dtype=Float64), Field(name="trips", dtype=Int64),
                                Field(name="city", dtype=String)])
    svc = FeatureService(name="svc", features=[stats[["trips", "rate"]]])
    # An entity no view uses: a request may still send its join key (returned as sent).
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING)
    store = FeatureStore(repo_path=tmp_path)
    store.apply([driver, customer, batch, push, stats, svc])
    store.materialize(NOW - timedelta(days=1), NOW)
    return store


@pytest.fixture
def client(tmp_path):
    store = make_repo(tmp_path)
    with TestClient(create_app(store)) as c:
        yield c


def test_get_online_features_json(client):
    r = client.post("/get-online-features", json={
        "features": ["stats:city", "stats:rate"], "entities": {"driver_id": [2, 1, 9]}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metadata"]["feature_names"] == ["driver_id", "city", "rate"]
    key, city, rate = body["results"]
    assert key["values"] == [2, 1, 9] and key["statuses"] == ["PRESENT"] * 3
    assert city["values"] == [None, "Lisbon", None]
    assert city["statuses"] == ["NULL_VALUE", "PRESENT", "NOT_FOUND"]
    assert rate["values"] == [0.25, 0.5, None]
    assert rate["event_timestamps"][0].endswith("Z") and rate["event_timestamps"][2] == \
        "1970-01-01T00:00:00Z"
    svc = client.post("/get-online-features", json={"feature_service": "svc",
                                                     "entities": {"driver_id": [1]},
                                                     "full_feature_names": True}).json()
    assert svc["metadata"]["feature_names"] == ["driver_id", "stats__trips", "stats__rate"]


@pytest.mark.parametrize("fast", [True, False])
def test_every_entity_column_sent_is_answered_as_feast_does(client, fast):
    # Feast's answer: every join key of the project that the request sent, in its order,
    # PRESENT with epoch event times, even one no requested feature uses; other columns
    # are left out. fast=False sends the body FastAPI's route answers (a coerced flag).
    body = {"features": ["stats:rate"], "full_feature_names": False if fast else "false",
            "entities": {"customer_id": ["a", None], "driver_id": [1, 9], "note": [0, 0]}}
    r = client.post("/get-online-features", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["metadata"]["feature_names"] == ["customer_id", "driver_id", "rate"]
    customer, driver, rate = got["results"]
    assert customer == {"values": ["a", None], "statuses": ["PRESENT", "PRESENT"],
                        "event_timestamps": ["1970-01-01T00:00:00Z"] * 2}
    assert driver["values"] == [1, 9] and rate["values"] == [0.5, None]
    assert rate["statuses"] == ["PRESENT", "NOT_FOUND"]
    bad = client.post("/get-online-features", json={**body, "entities": {
        "customer_id": [1, 2], "driver_id": [1, 9]}})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "EntityValueError"


@pytest.mark.parametrize("path, body, status, kind, text", [
    ("/get-online-features", {"features": ["stat:rate"], "entities": {"driver_id": [1]}},
     404, "FeatureViewNotFoundError", "did you mean 'stats'"),
    ("/get-online-features", {"feature_service": "svx", "entities": {"driver_id": [1]}},
     404, "FeatureServiceNotFoundError", "did you mean 'svc'"),
    ("/get-online-features", {"features": ["stats:rat"], "entities": {"driver_id": [1]}},
     404, "FeatureNotFoundError", "stats:rate"),
    ("/get-online-features", {"features": ["stats:rate"], "entities": {"driver": [1]}},
     400, "EntityDataFrameError", "driver_id"),
    ("/get-online-features", {"features": ["stats:rate"], "entities": {"driver_id": ["1"]}},
     400, "EntityValueError", "Int64"),
    ("/get-online-features", {"features": ["stats:rate"], "feature_service": "svc",
                              "entities": {"driver_id": [1]}}, 400, "RequestError", "exactly one"),
    ("/get-online-features", {"features": ["stats:rate"]}, 422, "InvalidRequestBody",
     "entities"),
    ("/push", {"push_source_name": "d_pus", "df": {}}, 404, "PushSourceNotFoundError",
     "did you mean 'd_push'"),
    ("/push", {"push_source_name": "d_push", "df": {"driver_id": [1]}}, 400, "RequestError",
     "missing column"),
    ("/push", {"push_source_name": "d_push", "to": "later", "df": {"driver_id": [1]}}, 400,
     "RequestError", "push mode"),
    ("/write-to-online-store", {"feature_view_name": "nope", "df": {"driver_id": [1]}}, 404,
     "FeatureViewNotFoundError", "nope"),
    ("/materialize", {"start_ts": "yesterday", "end_ts": "now"}, 400, "RequestError",
     "ISO 8601"),
])
def test_bad_requests_get_4xx_with_a_json_error(client, path, body, status, kind, text):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == kind
    assert text in err["message"] + " " + err.get("hint", "")


def test_malformed_json_is_422(client):
    r = client.post("/get-online-features", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["type"] == "InvalidRequestBody"


@pytest.mark.parametrize("body, headers", [
    # FastAPI coerces these (lax pydantic): the fast path passes them on, same answer.
    ({"features": ["stats:rate"], "entities": {"driver_id": [1]}, "full_feature_names": "true"},
     {}),
    ({"features": ["stats:rate"], "entities": {"driver_id": [1]}}, {"content-type": "text/json"}),
    ({"features": ["stats:rate"], "entities": {"driver_id": [1]}, "unknown": 1}, {}),
])
def test_fast_path_and_fastapi_route_answer_alike(client, body, headers):
    import json
    r = client.post("/get-online-features", content=json.dumps(body).encode(),
                    headers={"content-type": "application/json", **headers})
    plain = client.post("/get-online-features", json={
        "features": ["stats:rate"], "entities": {"driver_id": [1]},
        "full_feature_names": body.get("full_feature_names") == "true"})
    if headers.get("content-type") == "text/json":
        assert r.status_code == 422  # not JSON by its content type: the schema says no
        return
    assert r.status_code == 200, r.text
    assert r.json() == plain.json()


def test_every_online_read_is_counted(client):
    for _ in range(3):
        client.post("/get-online-features", json={"features": ["stats:rate"],
                                                  "entities": {"driver_id": [1]}})
    client.post("/get-online-features", json={"features": ["stats:nope"],
                                              "entities": {"driver_id": [1]}})
    metrics = client.get("/metrics").text
    assert 'tiffin_requests_total{endpoint="/get-online-features",status="200"} 3.0' in metrics
    assert 'tiffin_requests_total{endpoint="/get-online-features",status="404"} 1.0' in metrics


def test_middleware_added_by_an_embedding_app_sees_online_reads(tmp_path):
    # An application that adds its own middleware (auth here) to the app must see
    # every request, the fast path's included; reads are then still counted once.
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import JSONResponse

    class RequireToken(BaseHTTPMiddleware):
        async def dispatch(self, request, call_next):
            if request.headers.get("authorization") != "Bearer ok":
                return JSONResponse({"error": "unauthorized"}, status_code=401)
            return await call_next(request)

    app = create_app(make_repo(tmp_path))
    app.add_middleware(RequireToken)
    body = {"features": ["stats:rate"], "entities": {"driver_id": [1]}}
    with TestClient(app) as c:
        assert c.post("/get-online-features", json=body).status_code == 401
        assert c.get("/health").status_code == 401
        ok = c.post("/get-online-features", json=body, headers={"authorization": "Bearer ok"})
        assert ok.status_code == 200 and ok.json()["results"][1]["values"] == [0.5]
        metrics = c.get("/metrics", headers={"authorization": "Bearer ok"}).text
    assert 'tiffin_requests_total{endpoint="/get-online-features",status="200"} 1.0' in metrics


def test_push_then_read_and_metrics(client):
    ts = (NOW + timedelta(seconds=5)).isoformat()
    r = client.post("/push", json={"push_source_name": "d_push", "to": "online_and_offline",
                                   "df": {"driver_id": [1], "event_timestamp": [ts],
                                          "rate": [0.75], "trips": [9], "city": ["Faro"]}})
    assert r.status_code == 200, r.text
    got = client.post("/get-online-features", json={"features": ["stats:rate"],
                                                    "entities": {"driver_id": [1]}}).json()
    assert got["results"][1]["values"] == [0.75]
    r = client.post("/write-to-online-store", json={
        "feature_view_name": "stats", "df": {"driver_id": [2], "event_timestamp": [ts],
                                             "rate": [0.1], "trips": [1], "city": ["x"]}})
    assert r.status_code == 200, r.text
    metrics = client.get("/metrics").text
    assert 'tiffin_rows_pushed_total{push_source="d_push"} 1.0' in metrics
    assert 'tiffin_requests_total{endpoint="/push",status="200"} 1.0' in metrics
    assert _samples(metrics)["tiffin_newest_event_timestamp_seconds", "stats"] == \
        (NOW + timedelta(seconds=5)).timestamp()


def _samples(text: str) -> dict[tuple[str, str], float]:
    """(metric, feature_view label or '') -> value, from Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families
    return {(s.name, s.labels.get("feature_view", "")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_freshness_is_measured_from_event_time_whoever_wrote_it(client, tmp_path):
    # make_repo materialized rows 30 minutes old; a separate process (here another
    # FeatureStore) then writes a row 10 minutes old: the server's freshness follows the
    # online store, not its own writes or its last materialize.
    def age_of(newest: datetime) -> None:  # the scraped age, between two clock readings
        before = time.time()
        got = _samples(client.get("/metrics").text)
        assert got["tiffin_online_store_up", ""] == 1
        assert got["tiffin_newest_event_timestamp_seconds", "stats"] == newest.timestamp()
        age = got["tiffin_feature_freshness_seconds", "stats"]
        assert before - newest.timestamp() <= age <= time.time() - newest.timestamp()

    age_of(NOW - timedelta(minutes=30))
    other = FeatureStore(repo_path=tmp_path)
    try:
        other.write_to_online_store("stats", {
            "driver_id": [2], "event_timestamp": [NOW - timedelta(minutes=10)],
            "rate": [0.1], "trips": [1], "city": ["x"]})
    finally:
        other.close()
    age_of(NOW - timedelta(minutes=10))


def test_materialize_health_openapi(client):
    r = client.post("/materialize-incremental", json={"end_ts": NOW.isoformat()})
    assert r.status_code == 200 and r.json()["feature_views"][0]["name"] == "stats"
    assert client.get("/health").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/get-online-features", "/push", "/write-to-online-store", "/materialize",
            "/materialize-incremental", "/health"} <= set(paths)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tiffin_serve_over_loopback(tmp_path):
    make_repo(tmp_path).close()
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tiffin.cli", "serve", "--port", str(port)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        r = httpx.post(f"http://127.0.0.1:{port}/get-online-features",
                       json={"features": ["stats:trips"], "entities": {"driver_id": [1, 2]}})
        assert r.json()["results"][1]["values"] == [3, 4]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # waits, and closes the pipes it read


def test_workers_sum_metrics_are_restarted_and_stop_on_sigterm(tmp_path):
    """`serve --workers 2`: a scrape answered by either worker counts both workers'
    requests, a worker that dies is replaced, and SIGTERM stops everything and removes
    the metrics directory."""
    import http.client

    import psutil

    make_repo(tmp_path).close()
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tiffin.cli", "serve", "--port", str(port),
                             "--workers", "2"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    parent = psutil.Process(proc.pid)

    def workers() -> list[psutil.Process]:  # live ones, not multiprocessing's resource tracker
        out = []
        for w in parent.children():
            try:
                if "resource_tracker" not in " ".join(w.cmdline()):
                    out.append(w)
            except psutil.Error:  # exited, not yet reaped by the server
                pass
        return out

    def holder(c: http.client.HTTPConnection) -> int:
        """The pid of the worker holding this client connection."""
        local = c.sock.getsockname()[1]
        for w in workers():
            if any(x.raddr and x.raddr.port == local for x in w.net_connections("tcp")):
                return w.pid
        raise AssertionError("no worker holds the connection")

    body = json.dumps({"features": ["stats:trips"], "entities": {"driver_id": [1, 2]}})
    conns: dict[int, http.client.HTTPConnection] = {}  # one kept-alive connection per worker
    others = []
    reads = 0
    try:
        deadline = time.monotonic() + 60
        while len(workers()) < 2 or not _healthy(port):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        # The workers share one listening socket, so which one accepts is up to the
        # kernel: connect until each holds one of ours.
        while len(conns) < 2:
            assert reads < 200, "one worker accepted every connection"
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("POST", "/get-online-features", body, {"content-type": "application/json"})
            r = c.getresponse()
            assert r.status == 200 and json.loads(r.read())["results"][1]["values"] == [3, 4]
            reads += 1
            pid = holder(c)
            if pid in conns:
                others.append(c)
            else:
                conns[pid] = c
        metrics_dir = workers()[0].environ()["PROMETHEUS_MULTIPROC_DIR"]
        assert os.path.isdir(metrics_dir)
        assert all(w.environ()["PROMETHEUS_MULTIPROC_DIR"] == metrics_dir for w in workers())
        for c in conns.values():  # each worker answers with both workers' counts
            c.request("GET", "/metrics")
            r = c.getresponse()
            assert r.status == 200
            line = 'tiffin_requests_total{endpoint="/get-online-features",status="200"}'
            assert f"{line} {float(reads)}" in r.read().decode()
        victim = workers()[0]
        victim.kill()
        deadline = time.monotonic() + 60
        while victim.pid in [w.pid for w in workers()] or len(workers()) < 2 \
                or not _healthy(port):
            assert time.monotonic() < deadline, "worker not replaced"
            time.sleep(0.2)
        assert len(workers()) == 2
        last = workers()
    finally:
        for c in [*conns.values(), *others]:
            c.close()
        proc.terminate()
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    gone, alive = psutil.wait_procs(last, timeout=15)
    assert not alive, "workers outlived the server"
    assert not os.path.exists(metrics_dir), "the metrics directory outlived the server"


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False
