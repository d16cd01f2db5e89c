"""The HTTP protocol of ``tiffin serve``: uvicorn's, with each response leaving in one send.

uvicorn writes a response's head and its body with two transport writes. With
TCP_NODELAY each becomes its own segment and wakes the client twice, and on a loaded
machine every wakeup of another process can preempt the worker. In the
feature-server benchmark (2 workers, with the load generator and Redis on the same
2 cores) the workers were preempted 1.5 times per 100-entity request with two
writes and 0.75 times with one. Over three interleaved runs each, 1-entity SQLite
requests per second rose by 4% on average; 100-entity throughput did not change.

``_OneSend`` holds a write until the next one, which leaves with it in one call, or
until the loop's next turn, whichever comes first; so a head and the body written
right after it go out together, and nothing waits longer than the current turn.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol


class _OneSend:
    """An asyncio transport whose writes are paired: see the module docstring."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: Any) -> None:
        if not data:
            return  # (as asyncio's transports do with an empty write)
        held = self._held
        if held is None:
            self._held = bytes(data)  # a copy: the caller may reuse its buffer
            self._loop.call_soon(self._release)
            return
        self._held = None
        self._transport.writelines((held, data))  # one send (writev) for both

    def writelines(self, chunks: Any) -> None:
        held, self._held = self._held, None
        self._transport.writelines([held, *chunks] if held is not None else chunks)

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._release()
        self._transport.close()

    def write_eof(self) -> None:
        self._release()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        held = self._held
        return self._transport.get_write_buffer_size() + (len(held) if held else 0)

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's
        return getattr(self._transport, name)


class HTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP/1.1 protocol (httptools, else h11) over a ``_OneSend`` transport."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(_OneSend(transport, self.loop))  # type: ignore[arg-type]
