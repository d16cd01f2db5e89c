"""Redis goes away under the server and comes back: 503s that fail fast, then recovery
without restarting the server. Uses a private redis-server so the shared one is untouched."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import timedelta

import pytest
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
            redis_proc = _start(port, tmp_path)  # back, empty (no persistence)
            assert client.get("/health").status_code == 200
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
