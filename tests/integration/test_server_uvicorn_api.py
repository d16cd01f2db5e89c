"""The parts of uvicorn that `tiffin serve --workers N` uses beyond its documented interface.

tiffin/server/workers.py drives ``uvicorn.Server`` piece by piece in each worker:
``Config.load``/``lifespan_class``/``http_protocol_class``/``get_loop_factory``,
``Server.startup(sockets=[])``/``main_loop``/``shutdown``/``server_state``/
``should_exit``, the HTTP protocol class built with ``config``, ``server_state`` and
``app_state``, and its ``connection_lost`` wrapped. pyproject bounds uvicorn to the
versions this was tested with; these tests run one worker exactly as the dealer does
(a connection handed over a Unix socket with SCM_RIGHTS), with each of uvicorn's HTTP
implementations, so that a uvicorn which moves any of it fails here, by name.
"""

from __future__ import annotations

import json
import multiprocessing
import socket

import pytest

pytest.importorskip("uvicorn")

from test_server import make_repo  # noqa: E402  (same folder: on sys.path)

from tiffin.server import workers  # noqa: E402


def _recv_exactly(sock: socket.socket, n: int, timeout: float) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _http(conn: socket.socket, request: bytes) -> tuple[int, bytes]:
    conn.sendall(request)
    f = conn.makefile("rb")
    head = f.readline()
    assert head, "no response: the worker closed the connection (see its stderr)"
    status = int(head.split()[1])
    length = 0
    while (line := f.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, f.read(length)


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_one_worker_serves_a_handed_over_connection_and_reports_its_close(
        tmp_path, monkeypatch, http):
    pytest.importorskip(http)
    make_repo(tmp_path).close()
    monkeypatch.setenv("TIFFIN_REPO_PATH", str(tmp_path))  # read by the spawned worker
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    proc = multiprocessing.get_context("spawn").Process(
        target=workers._worker,
        args=(theirs, {"http": http, "log_level": "warning", "access_log": False}))
    proc.start()
    theirs.close()
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        client = socket.create_connection(listener.getsockname(), timeout=60)
        accepted, _ = listener.accept()
        socket.send_fds(ours, [b"c"], [accepted.fileno()])
        accepted.close()  # the worker has its own copy
        # Served by the worker (the first request waits for its startup).
        read = json.dumps({"features": ["stats:trips"], "entities": {"driver_id": [2]}}).encode()
        status, body = _http(client, b"POST /get-online-features HTTP/1.1\r\nhost: t\r\n"
                                     b"content-type: application/json\r\n"
                                     b"content-length: %d\r\n\r\n%s" % (len(read), read))
        assert status == 200, body
        assert json.loads(body)["results"][1]["values"] == [4]
        status, _ = _http(client, b"GET /health HTTP/1.1\r\nhost: t\r\n\r\n")  # keep-alive
        assert status == 200
        client.close()
        # The wrapped connection_lost tells the dealer, one byte per closed connection.
        assert _recv_exactly(ours, 1, timeout=30) == b"-"
        ours.close()  # the dealer gone: the worker shuts down by itself
        proc.join(30)
        assert proc.exitcode == 0, f"worker exited with {proc.exitcode}"
    finally:
        listener.close()
        if proc.is_alive():
            proc.kill()
            proc.join(5)
