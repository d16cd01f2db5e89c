"""Redis goes away under the server and comes back: 503s that fail fast, then recovery
without restarting the server, for sequential requests and under concurrent load over HTTP.
Uses a private redis-server so the shared one is untouched."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
from datetime import timedelta

import httpx
import pytest
import redis
import uvicorn
from fastapi.testclient import TestClient
from test_server import NOW, make_repo

from tiffin import FeatureStore, RepoConfig
from tiffin.server.app import create_app

pytestmark = [pytest.mark.redis,
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(port: int, tmp) -> subprocess.Popen:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def test_outage_gives_fast_503_then_recovers(tmp_path):
    port = _free_port()
    redis_proc = _start(port, tmp_path)
    try:
        make_repo(tmp_path).close()
        config = RepoConfig(project="srv", registry="registry.json", online_store={
            "type": "redis", "connection_string": f"127.0.0.1:{port}",
            "socket_timeout_seconds": 1})
        store = FeatureStore(repo_path=tmp_path, config=config)
        store.materialize(NOW - timedelta(days=1), NOW)
        body = {"features": ["stats:trips"], "entities": {"driver_id": [1]}}
        with TestClient(create_app(store)) as client:
            assert client.post("/get-online-features", json=body).json()["results"][1][
                "values"] == [3]
            redis_proc.terminate()
            redis_proc.wait(10)
            for _ in range(3):
                started = time.monotonic()
                r = client.post("/get-online-features", json=body)
                assert r.status_code == 503, r.text
                assert r.json()["error"]["type"] == "StoreUnavailableError"
                assert time.monotonic() - started < 3  # fails fast, no hanging requests
            assert client.get("/health").status_code == 503
            # A scrape still answers, and says the store did not.
            scraped = client.get("/metrics")
            assert scraped.status_code == 200
            assert "tiffin_online_store_up 0.0" in scraped.text
            assert "tiffin_feature_freshness_seconds{" not in scraped.text
            redis_proc = _start(port, tmp_path)  # back, empty (no persistence)
            assert client.get("/health").status_code == 200
            assert "tiffin_online_store_up 1.0" in client.get("/metrics").text
            r = client.post("/get-online-features", json=body)
            assert r.status_code == 200 and r.json()["results"][1]["statuses"] == ["NOT_FOUND"]
            r = client.post("/materialize", json={"start_ts": (NOW - timedelta(days=1))
                                                  .isoformat(), "end_ts": NOW.isoformat()})
            assert r.status_code == 200, r.text
            assert client.post("/get-online-features", json=body).json()["results"][1][
                "values"] == [3]
    finally:
        redis_proc.kill()
        redis_proc.wait(10)


# driver_id -> trips, as make_repo materializes them; 9 does not exist.
TRIPS = {1: 3, 2: 4, 9: None}


def _serve(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    """The in-process app behind a real uvicorn on loopback, in a thread."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           ws="none", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


def test_outage_under_concurrent_load(tmp_path):
    """8 clients hammer /get-online-features while Redis is killed and restarted with its data:
    every request during the outage is a fast 503, nothing else fails, and every client gets
    correct values again shortly after Redis is back, from the same server."""
    port = _free_port()
    redis_proc = _start(port, tmp_path)
    server = thread = None
    try:
        make_repo(tmp_path).close()
        config = RepoConfig(project="srv", registry="registry.json", online_store={
            "type": "redis", "connection_string": f"127.0.0.1:{port}",
            "socket_timeout_seconds": 1})
        store = FeatureStore(repo_path=tmp_path, config=config)
        store.materialize(NOW - timedelta(days=1), NOW)
        # Keep the rows over the restart: an RDB snapshot the new redis-server loads.
        with redis.Redis(port=port) as admin:
            admin.save()
        server, thread, url = _serve(create_app(store))

        stop = threading.Event()
        log: list[list[tuple[float, float, int | str, object]]] = [[] for _ in range(8)]

        def client(i: int) -> None:
            keys = [[1, 2, 9], [2, 9, 1], [9, 1, 2]][i % 3]  # each client its own order
            body = {"features": ["stats:trips"], "entities": {"driver_id": keys}}
            with httpx.Client(base_url=url, timeout=10) as http:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        r = http.post("/get-online-features", json=body)
                        outcome: int | str = r.status_code
                        got = r.json()["results"][1]["values"] if r.status_code == 200 else \
                            r.json()["error"]["type"] if r.status_code == 503 else r.text
                        if r.status_code == 200 and got != [TRIPS[k] for k in keys]:
                            outcome = "wrong values"
                    except Exception as e:  # a refused, reset or hung connection
                        outcome, got = "transport error", repr(e)
                    log[i].append((started, time.monotonic(), outcome, got))

        def wait_until(ok, seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while not all(ok(entries) for entries in log):
                assert time.monotonic() < deadline, [[e[2] for e in entries[-3:]] for entries in log]
                time.sleep(0.05)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda entries: sum(e[2] == 200 for e in entries) >= 5, 15)
            killed = time.monotonic()
            redis_proc.send_signal(signal.SIGKILL)  # a crash, not a clean shutdown
            redis_proc.wait(10)
            down = time.monotonic()
            wait_until(lambda entries: sum(e[0] >= down for e in entries) >= 5, 10)
            time.sleep(1.0)
            up_from = time.monotonic()
            redis_proc = _start(port, tmp_path)
            up = time.monotonic()
            # Every client is answered correctly again within a few seconds, and stays so.
            wait_until(lambda entries: any(e[0] >= up and e[2] == 200 for e in entries), 5)
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(30)

        everything = [e for entries in log for e in entries]
        bad = [e for e in everything if e[2] not in (200, 503)
               or (e[2] == 503 and e[3] != "StoreUnavailableError")]
        assert not bad, bad[:5]  # no 500s, no wrong values, no transport errors
        slow = [e for e in everything if e[1] - e[0] >= 3]
        assert not slow, slow[:5]
        for i, entries in enumerate(log):
            before = [e for e in entries if e[1] < killed]
            during = [e for e in entries if e[0] >= down and e[1] <= up_from]
            after = [e for e in entries if e[0] >= up]
            assert before and all(e[2] == 200 for e in before), (i, before[-3:])
            assert len(during) >= 3 and all(e[2] == 503 for e in during), (i, during[-3:])
            recovered = next((e[0] for e in after if e[2] == 200), None)
            assert recovered is not None and recovered - up < 5, (i, after[:3])
            late = [e for e in after if e[0] >= recovered and e[2] != 200]
            assert not late and len(after) >= 3, (i, late[:3])
    finally:
        if server is not None:
            server.should_exit = True
            thread.join(30)
        redis_proc.kill()
        redis_proc.wait(10)
