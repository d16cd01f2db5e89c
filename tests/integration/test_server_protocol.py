"""`tiffin serve`'s HTTP protocol: one send per response, and HTTP/1.1 left intact.

The transport is checked write by write against an in-memory recorder; the protocol as
a whole is checked over loopback on a real uvicorn server (keep-alive, pipelining,
streaming, large bodies, Connection: close).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

pytest.importorskip("uvicorn")
import uvicorn  # noqa: E402
from uvicorn.protocols.http.h11_impl import H11Protocol  # noqa: E402

from tiffin.server.protocol import HTTPProtocol, _OneSend  # noqa: E402


class Recorder(asyncio.Transport):
    """The asyncio transport surface _OneSend uses, recording each call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, bytes]] = []
        self.closing = False

    def write(self, data) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, chunks) -> None:
        self.calls.append(("writelines", b"".join(chunks)))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", b""))

    def abort(self) -> None:
        self.closing = True
        self.calls.append(("abort", b""))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def run(coro_fn):
    return asyncio.run(coro_fn())


def wrapped() -> tuple[Recorder, _OneSend]:
    """A recorder and the _OneSend in front of it (inside a running loop)."""
    t = Recorder()
    return t, _OneSend(t, asyncio.get_running_loop())


def test_a_head_and_the_body_after_it_leave_in_one_call():
    async def main():
        t, w = wrapped()
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert t.calls == []  # held for its body
        assert w.get_write_buffer_size() == 38
        w.write(b"{}")
        assert t.calls == [("writelines", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")]
        await asyncio.sleep(0)  # the scheduled release finds nothing held
        assert len(t.calls) == 1

    run(main)


def test_a_lone_write_leaves_at_the_end_of_the_loop_turn():
    async def main():
        t, w = wrapped()
        w.write(b"chunk")
        w.write(b"")  # empty writes change nothing
        assert t.calls == []
        await asyncio.sleep(0)
        assert t.calls == [("write", b"chunk")]

    run(main)


def test_close_sends_what_is_held_first_and_abort_drops_it():
    async def main():
        t, w = wrapped()
        w.write(b"last words")
        w.close()
        assert t.calls == [("write", b"last words"), ("close", b"")]
        t2, w2 = wrapped()
        w2.write(b"never sent")
        w2.abort()
        await asyncio.sleep(0)
        assert t2.calls == [("abort", b"")]

    run(main)


def test_writelines_keeps_the_order_and_a_closed_transport_gets_nothing_late():
    async def main():
        t, w = wrapped()
        w.write(b"a")
        w.writelines([b"b", b"c"])
        assert t.calls == [("writelines", b"abc")]
        w.write(b"d")
        t.closing = True  # the peer went away before the turn ended
        await asyncio.sleep(0)
        assert t.calls == [("writelines", b"abc")]
        assert w.get_extra_info("peername") == ("127.0.0.1", 1)  # the rest is the transport's

    run(main)


def test_a_mutable_buffer_is_copied_when_held():
    async def main():
        t, w = wrapped()
        buf = bytearray(b"abc")
        w.write(buf)
        buf[:] = b"xyz"
        await asyncio.sleep(0)
        assert t.calls == [("write", b"abc")]

    run(main)


# --------------------------------------------------------------------------- over loopback

BIG = b"x" * (3 * 1024 * 1024)  # past the transport's high-water mark: flow control


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    payload = BIG if path == "/big" else b"echo:" + body + path.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


class H11OneSend(H11Protocol):
    """The same wrapper over uvicorn's pure-Python protocol (its fallback without
    httptools), so both of AutoHTTPProtocol's choices are covered."""

    def connection_made(self, transport):
        super().connection_made(_OneSend(transport, self.loop))


@pytest.fixture(scope="module", params=[HTTPProtocol, H11OneSend], ids=["auto", "h11"])
def server(request):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=request.param, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield sock.getsockname()[1]
    srv.should_exit = True
    thread.join(10)


def read_response(f) -> tuple[int, dict[str, str], bytes]:
    status = int(f.readline().split()[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        return status, headers, f.read(int(headers["content-length"]))
    body = b""
    while True:  # chunked
        size = int(f.readline().strip(), 16)
        chunk = f.read(size)
        f.readline()
        if size == 0:
            return status, headers, body
        body += chunk


def test_pipelined_requests_are_answered_in_order(server):
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        reqs = b"".join(
            b"POST /r%d HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n%02d" % (i, i)
            for i in range(5))
        s.sendall(reqs)  # all five at once
        f = s.makefile("rb")
        for i in range(5):
            status, _, body = read_response(f)
            assert (status, body) == (200, b"echo:%02d/r%d" % (i, i))


def test_streaming_large_and_closing_responses_arrive_whole(server):
    with socket.create_connection(("127.0.0.1", server), timeout=10) as s:
        f = s.makefile("rb")
        s.sendall(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        status, headers, body = read_response(f)
        assert (status, headers.get("transfer-encoding"), body) == (200, "chunked",
                                                                   b"one,two,three")
        s.sendall(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
        status, _, body = read_response(f)
        assert status == 200 and body == BIG
        s.sendall(b"GET /bye HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        status, headers, body = read_response(f)
        assert (status, headers.get("connection"), body) == (200, "close", b"echo:/bye")
        assert f.read() == b""  # and the server closed the connection after sending it
