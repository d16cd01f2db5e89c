"""The asyncio Redis reader against the real server (and a silent socket for timeouts)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import pytest

pytest.importorskip("hiredis")
import hiredis  # noqa: E402

from tiffin.errors import BackendError, StoreUnavailableError  # noqa: E402
from tiffin.online.redis.aio import AsyncReader  # noqa: E402
from tiffin.online.redis.config import RedisOnlineStoreConfig  # noqa: E402

pytestmark = pytest.mark.redis
REDIS = os.environ.get("TIFFIN_TEST_REDIS", "127.0.0.1:6379,db=15")


def reader(connection_string: str = REDIS, timeout: float = 2.0) -> AsyncReader:
    return AsyncReader(RedisOnlineStoreConfig(connection_string=connection_string,
                                              socket_timeout_seconds=timeout
                                              ).connection_kwargs())


def cmd(*args) -> bytes:
    return hiredis.pack_command(args)


def test_concurrent_commands_get_their_own_replies_in_order():
    r = reader()

    async def main():
        await r.execute(cmd("SET", "tiffin:aio:test", "x"))
        # 200 commands in flight on one socket; each must get its own reply.
        replies = await asyncio.gather(*(r.execute(cmd("ECHO", str(i))) for i in range(200)))
        assert replies == [str(i).encode() for i in range(200)]
        # The database was selected (db=15 in the tests): the key is found there only.
        assert await r.execute(cmd("GET", "tiffin:aio:test")) == b"x"
        await r.execute(cmd("DEL", "tiffin:aio:test"))

    asyncio.run(main())


@pytest.fixture
def reads_processed():
    import redis
    host, port = REDIS.split(",")[0].split(":")
    client = redis.Redis(host=host, port=int(port))
    client.ping()  # connected now: each call below is one read of Redis's
    yield lambda: client.info("stats")["total_reads_processed"]
    client.close()


def test_commands_of_one_loop_turn_reach_redis_in_one_read(reads_processed):
    # Auto-pipelining: 50 commands issued before the loop turns are one write, so Redis
    # reads them at once (its own count of reads says so), and each still gets its reply.
    r = reader()

    async def main():
        await r.execute(cmd("PING"))  # connected first: setup commands are not counted
        before = reads_processed()
        replies = await asyncio.gather(*(r.execute(cmd("ECHO", str(i))) for i in range(50)))
        after = reads_processed()
        assert replies == [str(i).encode() for i in range(50)]
        # One read for the batch, one for the second INFO call (50 if unbatched); a
        # little slack for a write that Redis happens to read in two parts.
        assert after - before <= 4, after - before
        # Commands issued in different turns still go out (each turn flushes its own).
        assert await r.execute(cmd("ECHO", "a")) == b"a"
        assert await r.execute(cmd("ECHO", "b")) == b"b"

    asyncio.run(main())


def test_a_connection_lost_before_its_turn_ends_fails_the_unsent_commands():
    r = reader()

    async def main():
        await r.execute(cmd("PING"))
        proto = r._local.conn.proto
        pending = [asyncio.ensure_future(r.execute(cmd("ECHO", str(i)))) for i in range(3)]
        await asyncio.sleep(0)  # the commands are queued, not yet written
        proto.fail(StoreUnavailableError("gone"))
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(e, StoreUnavailableError) for e in results), results
        assert proto.unsent == []
        # The next command opens a new connection.
        assert await r.execute(cmd("ECHO", "again")) == b"again"

    asyncio.run(main())


def test_a_cancelled_caller_does_not_shift_later_replies():
    r = reader()

    async def main():
        await r.execute(cmd("PING"))  # connected
        slow = asyncio.ensure_future(r.execute(cmd("ECHO", "first")))
        await asyncio.sleep(0)  # sent, reply pending
        slow.cancel()
        assert await r.execute(cmd("ECHO", "second")) == b"second"
        assert slow.cancelled()

    asyncio.run(main())


def test_a_request_cancelled_while_connecting_does_not_fail_the_others():
    r = reader()

    async def main():
        first = asyncio.ensure_future(r.execute(cmd("ECHO", "a")))
        second = asyncio.ensure_future(r.execute(cmd("ECHO", "b")))
        await asyncio.sleep(0)  # both wait for the same connection
        first.cancel()
        assert await second == b"b"

    asyncio.run(main())


def test_error_reply_is_a_backend_error_and_the_connection_stays_usable():
    r = reader()

    async def main():
        with pytest.raises(BackendError, match="unknown command"):
            await r.execute(cmd("NOSUCHCOMMAND"))
        assert await r.execute(cmd("PING")) == b"PONG"

    asyncio.run(main())


def test_refused_connection_fails_fast_as_unavailable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    r = reader(f"127.0.0.1:{port}")
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        asyncio.run(r.execute(cmd("PING")))


def test_silent_server_times_out_as_unavailable_then_recovers():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts (kernel backlog) and never answers
    port = listener.getsockname()[1]
    r = reader(f"127.0.0.1:{port}", timeout=0.3)

    async def main():
        waiting = [asyncio.ensure_future(r.execute(cmd("PING"))) for _ in range(3)]
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(e, StoreUnavailableError) for e in results), results
        assert "did not answer within 0.3 s" in str(results[0])

    try:
        asyncio.run(main())
    finally:
        listener.close()


def test_wrong_password_is_a_clear_backend_error():
    host_port = REDIS.split(",")[0]
    r = reader(f"{host_port},password=not-the-password")
    with pytest.raises(BackendError, match="setting up the connection: ERR AUTH"):
        asyncio.run(r.execute(cmd("PING")))


def test_unix_socket_configs_fall_back_to_the_blocking_client():
    cfg = RedisOnlineStoreConfig(connection_string="unix:///tmp/redis.sock?db=1")
    assert not AsyncReader(cfg.connection_kwargs()).usable
    assert AsyncReader(RedisOnlineStoreConfig(
        connection_string="rediss://:pw@cache:6380/2").connection_kwargs()).tls


@contextlib.contextmanager
def _fake_redis(answer: bytes | None):
    """A TCP server that answers every command with ``answer`` (None: never answers);
    yields its listening socket and the connections it accepted, all closed on exit."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    conns: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conns.append(conn)
            threads.append(threading.Thread(target=handle, args=(conn,), daemon=True))
            threads[-1].start()

    def handle(conn):
        parser = hiredis.Reader()
        try:
            while data := conn.recv(65536):
                parser.feed(data)
                while parser.gets() is not False:
                    if answer is not None:
                        conn.sendall(answer)
        except OSError:
            return

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        yield listener, conns
    finally:
        # shutdown() wakes a thread blocked in accept or recv on that socket.
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        server.join(5)  # accepts no more: conns and threads are final
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(5)
        for s in [listener, *conns]:
            s.close()


def test_redis_still_loading_is_unavailable_not_a_server_fault():
    with _fake_redis(b"-LOADING Redis is loading the dataset in memory\r\n") as (listener, _):
        r = reader(f"127.0.0.1:{listener.getsockname()[1]}")
        with pytest.raises(StoreUnavailableError, match="LOADING"):
            asyncio.run(r.execute(cmd("MGET", "a")))


def test_silent_select_times_out_as_unavailable_and_closes_its_socket():
    with _fake_redis(None) as (listener, conns):
        r = reader(f"127.0.0.1:{listener.getsockname()[1]},db=3", timeout=0.3)
        for _ in range(3):
            with pytest.raises(StoreUnavailableError, match="AUTH/SELECT"):
                asyncio.run(r.execute(cmd("PING")))
        # Every attempt's socket was closed by the client: the server side reads EOF.
        import time
        time.sleep(0.2)
        assert len(conns) == 3
        for conn in conns:
            conn.settimeout(1)
            assert conn.recv(1) == b""


def test_empty_password_sends_no_auth():
    host_port = REDIS.split(",")[0]
    r = reader(f"{host_port},db=15,password=")
    assert asyncio.run(r.execute(cmd("PING"))) == b"PONG"


def _redis_port() -> int:
    return int(REDIS.split(",")[0].split(":")[1])


def _established_to(port: int) -> set[int]:
    """The local ports of this process's open TCP connections to ``port``."""
    import psutil
    proc = psutil.Process()
    # net_connections replaced connections in psutil 6 (which warns on the old name).
    conns = (proc.net_connections if hasattr(proc, "net_connections") else proc.connections)("tcp")
    return {c.laddr[1] for c in conns if c.raddr and c.raddr[1] == port
            and c.status == psutil.CONN_ESTABLISHED}


def _clients_on(ports: set[int]) -> list[str]:
    """The clients Redis still lists whose address is one of our local ``ports``."""
    import redis
    host, port = REDIS.split(",")[0].split(":")
    with redis.Redis(host=host, port=int(port)) as admin:
        return [c["addr"] for c in admin.client_list()
                if int(c["addr"].rsplit(":", 1)[1]) in ports]


def _assert_released(r: AsyncReader, run_loops, ports: set[int]) -> None:
    """Runs ``run_loops`` and checks that every connection it opened is gone on both
    ends, that no ResourceWarning was raised (collected garbage included) and that the
    reader keeps nothing of the loops that ended."""
    import gc
    import time
    import warnings

    port = _redis_port()
    gc.collect()  # what earlier tests left to the collector is not this test's
    before = _established_to(port)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_loops()
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []
    assert _established_to(port) <= before  # none of the loops' connections is open
    assert not ports & before
    assert getattr(r._local, "conn", None) is None
    deadline = time.monotonic() + 5  # Redis drops a client once it reads the EOF
    while (left := _clients_on(ports)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []


def _echo_recording_port(r: AsyncReader, ports: set[int], text: str):
    async def main():
        assert await r.execute(cmd("ECHO", text)) == text.encode()
        ports.add(r._local.conn.proto.transport.get_extra_info("sockname")[1])
    return main


def test_asyncio_run_many_times_leaves_no_connection_behind():
    # Each asyncio.run is a new loop, and a loop's connection cannot outlive it.
    r = reader()
    ports: set[int] = set()

    def run_loops():
        for i in range(40):
            asyncio.run(_echo_recording_port(r, ports, str(i))())

    _assert_released(r, run_loops, ports)
    assert len(ports) > 1  # each loop had a connection of its own


def test_loops_in_several_threads_each_release_their_connection():
    from concurrent.futures import ThreadPoolExecutor

    r = reader()
    ports: set[int] = set()

    def worker(t: int) -> None:
        for i in range(10):
            asyncio.run(_echo_recording_port(r, ports, f"{t}-{i}")())
        assert getattr(r._local, "conn", None) is None  # this thread's, after its loops

    def run_loops():
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(worker, range(4)))

    _assert_released(r, run_loops, ports)
    assert len(ports) > 4


def test_a_hand_run_loop_releases_its_connection_at_shutdown_asyncgens():
    r = reader()
    ports: set[int] = set()

    def run_loops():
        for i in range(5):
            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(_echo_recording_port(r, ports, str(i))())
                loop.run_until_complete(r.execute(cmd("PING")))  # same loop, same connection
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

    _assert_released(r, run_loops, ports)
    assert len(ports) == 5


def test_close_inside_the_loop_closes_the_connection_at_once():
    r = reader()
    ports: set[int] = set()

    def run_loops():
        async def main():
            await _echo_recording_port(r, ports, "x")()
            proto = r._local.conn.proto
            pending = asyncio.ensure_future(r.execute(cmd("ECHO", "y")))
            await asyncio.sleep(0)  # queued on the connection
            r.close()
            with pytest.raises(StoreUnavailableError, match="the store was closed"):
                await pending
            assert proto.closed and proto.transport.is_closing()
            # Used again, it connects anew; that connection ends with the loop.
            await _echo_recording_port(r, ports, "z")()
            assert r._local.conn.proto is not proto
        asyncio.run(main())

    _assert_released(r, run_loops, ports)
    assert len(ports) == 2


def test_a_connection_still_being_made_when_closed_is_closed_once_made():
    r = reader()
    ports: set[int] = set()

    def run_loops():
        async def main():
            request = asyncio.ensure_future(r.execute(cmd("PING")))
            await asyncio.sleep(0)  # its connection is being made
            connecting = r._local.conn.connecting
            r.close()
            with pytest.raises(StoreUnavailableError):
                await request
            proto = connecting.result()
            ports.add(proto.transport.get_extra_info("sockname")[1])
            await asyncio.sleep(0)
            assert proto.closed and proto.transport.is_closing()
        asyncio.run(main())

    _assert_released(r, run_loops, ports)
