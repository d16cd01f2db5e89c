"""The Redis read path for an event loop: one pipelined socket per loop, parsed by hiredis.

A feature server worker is one event loop. With a blocking client it sits idle while
Redis answers (about a third of a 100-entity request); here a request awaits its
reply and the loop serves others meanwhile. Commands from concurrent requests go
down one connection back to back, and Redis answers in order, so each reply
resolves the oldest waiting future. redis-py's asyncio client would do the same at
several times the Python cost per command.

Commands issued in one turn of the loop leave in one write (auto-pipelining): Redis
wakes once for all of them and answers them in one read. In the feature-server
benchmark's 1-entity runs, Redis's CPU per request fell from 22 to 10 µs and
requests per second rose by 14-28% (three interleaved runs each, measured with a
one-send response transport since removed). At 100 entities a write carried 3
commands on average but throughput did not change: there Redis's time is per key.

Behind Sentinel, the address is asked of the sentinels (``routing.SentinelResolver``)
each time a connection is made, so a reader follows a failover once its connection drops
(or a READONLY reply drops it). On a Redis Cluster, ``routing.ClusterReader`` keeps one
such reader per node and routes each key by its slot.

Only reads use this (writes keep redis-py and its Lua script support). TCP and TLS
(``rediss://`` or ``ssl=true`` with default verification) are handled; any other
connection option (a Unix socket, client certificates) makes ``AsyncReader.usable``
false and the store reads synchronously instead.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import hiredis

from tiffin.errors import BackendError, StoreUnavailableError

_PLAIN = {"host", "port", "db", "password", "username", "socket_timeout",
          "socket_connect_timeout", "ssl"}


# Replies that say "not now" (still loading its data after a restart, a script running,
# a replica without its primary): a 503 to retry, as redis-py's BusyLoadingError is.
_TRANSIENT = ("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


def _reply_error(reply: Exception, what: str) -> Exception:
    text = str(reply)
    if text.startswith(_TRANSIENT):
        return StoreUnavailableError(f"Redis cannot answer yet while {what}: {text}")
    return BackendError(f"Redis failed while {what}: {text}")


class _Batch:
    """Stands in the waiter queue once per command of a batch, like a future would."""

    __slots__ = ("future", "replies", "size")

    def __init__(self, future: asyncio.Future, size: int):
        self.future, self.replies, self.size = future, [], size

    def done(self) -> bool:
        return self.future.done()

    def set_result(self, reply: Any) -> None:
        self.replies.append(reply)
        if len(self.replies) == self.size:
            self.future.set_result(self.replies)

    def set_exception(self, error: BaseException) -> None:
        self.future.set_exception(error)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.unsent: list[bytes] = []  # this turn's commands, written together at its end
        self.address = "?"  # host:port, for messages

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            waiter = self.waiters.popleft()
            if not waiter.done():  # a cancelled caller's reply is dropped, in order
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(StoreUnavailableError(f"Redis closed the connection: {exc or 'EOF'}"))

    def fail(self, error: Exception) -> None:
        """Fail every waiting command and drop the connection (no reply can be trusted)."""
        self.closed = True
        self.unsent.clear()
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def send(self, packed: bytes) -> asyncio.Future:
        if self.closed:  # dropped since it was handed out: fail now, not at the timeout
            raise StoreUnavailableError("the connection to Redis was lost")
        waiter = self.loop.create_future()
        self.waiters.append(waiter)  # in the order the commands will be written
        if not self.unsent:
            self.loop.call_soon(self.flush)
        self.unsent.append(packed)
        return waiter

    def send_batch(self, packed: Sequence[bytes]) -> asyncio.Future:
        """Send commands back to back; one future gets all their replies, in order (a
        future, a callback and a loop turn per command cost more than Redis's work)."""
        if self.closed:
            raise StoreUnavailableError("the connection to Redis was lost")
        batch = _Batch(self.loop.create_future(), len(packed))
        self.waiters.extend([batch] * len(packed))  # type: ignore[list-item]
        if not self.unsent:
            self.loop.call_soon(self.flush)
        self.unsent.extend(packed)
        return batch.future

    def flush(self) -> None:
        unsent, self.unsent = self.unsent, []
        if unsent and not self.closed:
            self.transport.writelines(unsent)  # type: ignore[union-attr]


class _LoopConnection:
    """A thread's connection on one event loop, closed before that loop closes.

    A transport can only be closed by its own loop, and a loop closes without closing the
    transports still open on it (their sockets leak until garbage collection, with a
    ResourceWarning). What every orderly end of a loop does first - asyncio.run's end,
    asyncio.Runner.close, or a hand-run loop's ``loop.shutdown_asyncgens()`` - is close
    the asynchronous generators still suspended on it; ``guard`` is one such generator,
    and its ``finally`` closes the connection while the loop can still do it.
    """

    __slots__ = ("loop", "proto", "connecting", "guard", "dropped")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.proto: _Protocol | None = None
        self.connecting: asyncio.Task | None = None
        self.guard: AsyncGenerator[None, None] | None = None
        self.dropped = False

    def drop(self, why: str) -> None:
        self.dropped = True
        proto, self.proto = self.proto, None
        # A loop closed without that orderly end cannot close its transport any more
        # (asyncio has no way to); dropping the last reference lets the garbage collector
        # close the socket, with asyncio's ResourceWarning naming that transport.
        if proto is not None and not self.loop.is_closed():
            proto.fail(StoreUnavailableError(why))


class AsyncReader:
    """``resolve``, if given, is awaited for the (host, port) to connect to, at every
    new connection (Sentinel: where the master is now)."""

    def __init__(self, kwargs: dict[str, Any],
                 resolve: Callable[[], Awaitable[tuple[str, int]]] | None = None):
        self.resolve = resolve
        conn_class = kwargs.get("connection_class")
        self.tls = bool(kwargs.get("ssl")) or (
            conn_class is not None and conn_class.__name__ == "SSLConnection")
        extra = set(kwargs) - _PLAIN - {"connection_class"}
        self.usable = not extra and (conn_class is None or conn_class.__name__ in (
            "Connection", "SSLConnection"))
        self.host = kwargs.get("host", "localhost")
        self.port = int(kwargs.get("port", 6379))
        self.db = int(kwargs.get("db") or 0)
        self.username, self.password = kwargs.get("username"), kwargs.get("password")
        self.timeout = float(kwargs.get("socket_timeout") or 5.0)
        self.connect_timeout = float(kwargs.get("socket_connect_timeout") or self.timeout)
        self._local = threading.local()  # conn: this thread's _LoopConnection

    async def execute(self, packed: bytes) -> Any:
        """Send one packed command and await its reply (an error reply raises)."""
        (reply,) = await self.execute_many((packed,))
        if isinstance(reply, hiredis.ReplyError):
            raise _reply_error(reply, "reading")
        return reply

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        (reply,) = await self.execute_many((hiredis.pack_command(("MGET", *keys)),))
        if isinstance(reply, hiredis.ReplyError):
            raise _reply_error(reply, "reading")
        return reply

    async def execute_many(self, packed: Sequence[bytes]) -> list[Any]:
        """Send packed commands back to back and await their replies, error replies
        included (a cluster reader reads MOVED and ASK from them)."""
        proto = await self._connection()
        loop = asyncio.get_running_loop()
        # One timer per call, not asyncio.wait_for (a task per call): on expiry the
        # connection is dropped, failing these and every later command queued on it.
        timer = loop.call_later(self.timeout, proto.fail, StoreUnavailableError(
            f"Redis at {proto.address} did not answer within {self.timeout:g} s"))
        try:
            if len(packed) == 1:
                replies = [await proto.send(packed[0])]
            else:
                replies = await proto.send_batch(packed)
        finally:
            timer.cancel()
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("READONLY"):
                # A replica now (a failover demoted it): the next connection asks again.
                proto.fail(StoreUnavailableError(f"Redis at {proto.address} is a replica"))
                raise StoreUnavailableError(f"Redis at {proto.address} is a replica now: "
                                            f"{reply}")
        return replies

    async def _connection(self) -> _Protocol:
        # Per thread: an SDK user may run event loops in several threads at once.
        loop = asyncio.get_running_loop()
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.loop is not loop:
            if conn is not None:  # that loop was not shut down in order (see _LoopConnection)
                conn.drop("the event loop is no longer used")
            conn = self._local.conn = _LoopConnection(loop)
            conn.guard = self._until_shutdown(conn)
            await conn.guard.__anext__()  # runs to its yield at once; the loop now tracks it
        proto = conn.proto
        if proto is not None and not proto.closed:
            return proto
        task = conn.connecting
        if task is None:
            # A task of its own, shared by every request that needs the connection, so
            # that a cancelled request (its client went away) cancels no one else's.
            task = conn.connecting = loop.create_task(self._connect(loop))
            task.add_done_callback(partial(self._connected, conn))
        return await asyncio.shield(task)

    async def _until_shutdown(self, conn: _LoopConnection) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            conn.guard = None
            conn.drop("the event loop is shutting down")
            if getattr(self._local, "conn", None) is conn:
                self._local.conn = None  # nothing of the loop is kept once it ends

    @staticmethod
    def _connected(conn: _LoopConnection, task: asyncio.Task) -> None:
        conn.connecting = None
        if not task.cancelled() and task.exception() is None:  # exception(): retrieved
            if conn.dropped:  # closed, or its loop ending, while this connected
                task.result().fail(StoreUnavailableError("the connection was no longer wanted"))
            else:
                conn.proto = task.result()

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        ssl_context = None
        if self.tls:
            import ssl
            ssl_context = ssl.create_default_context()
        host, port = (self.host, self.port) if self.resolve is None else await self.resolve()
        try:
            _, proto = await asyncio.wait_for(loop.create_connection(
                _Protocol, host, port, ssl=ssl_context), self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise StoreUnavailableError(
                f"Redis unreachable at {host}:{port}: {e or 'timed out'}") from e
        proto.address = f"{host}:{port}"
        # As redis-py: AUTH only with a username or a non-empty password.
        commands = []
        if self.username or self.password:
            commands.append(("AUTH", self.username, self.password or "") if self.username
                            else ("AUTH", self.password))
        if self.db:
            commands.append(("SELECT", self.db))
        if self.resolve is not None:
            # The address came from elsewhere (the sentinels): it may be out of date,
            # and a demoted master would serve stale reads without a word.
            commands.append(("ROLE",))
        if not commands:
            return proto
        setup: list[asyncio.Future] = []
        try:
            setup = [proto.send(hiredis.pack_command(c)) for c in commands]
            done, _ = await asyncio.wait(setup, timeout=self.connect_timeout)
            if len(done) < len(setup):
                raise StoreUnavailableError(f"Redis at {host}:{port} did not "
                                            f"answer AUTH/SELECT within "
                                            f"{self.connect_timeout:g} s")
            for waiter in setup:
                reply = waiter.result()
                if isinstance(reply, hiredis.ReplyError):
                    raise _reply_error(reply, "setting up the connection")
            if self.resolve is not None and setup[-1].result()[0] != b"master":
                raise StoreUnavailableError(f"Redis at {host}:{port} is not a master "
                                            f"(yet), though named as one")
        except BaseException as e:
            proto.fail(e if isinstance(e, Exception) else StoreUnavailableError("cancelled"))
            for waiter in setup:  # retrieved: no "exception was never retrieved" warnings
                if waiter.done() and not waiter.cancelled():
                    waiter.exception()
            raise
        return proto

    def close(self) -> None:
        """Close this thread's connection. Connections of loops in other threads close
        when those loops end (asyncio.run returns, or shutdown_asyncgens is awaited)."""
        conn, self._local.conn = getattr(self._local, "conn", None), None
        if conn is not None:
            conn.drop("the store was closed")
