"""Routing for the async Redis reader: a Redis Cluster's slots, a Sentinel's master.

``ClusterReader`` keeps one pipelined ``AsyncReader`` per cluster node and a slot table
(``CLUSTER SLOTS``): a request sends one MGET per slot it touches, each node's MGETs
leave in one write, all nodes at once, and a MOVED or ASK reply re-routes the command
(MOVED also drops the table, to be reloaded by the next request).
``SentinelResolver`` tells an ``AsyncReader`` where the master is, whenever it connects.
"""

from __future__ import annotations

import asyncio
import binascii
import threading
from collections.abc import Sequence
from typing import Any

import hiredis

from tiffin.errors import BackendError, StoreUnavailableError
from tiffin.online.redis.aio import AsyncReader, _reply_error

_SLOTS = 16384  # a Redis Cluster's hash slots


def key_slot(key: str) -> int:
    """The cluster slot of a key: CRC16 (XMODEM) of its hash tag, or of the whole key."""
    raw = key.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1:end]
    return binascii.crc_hqx(raw, 0) % _SLOTS


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class SentinelResolver:
    """Asks the sentinels, in turn, where the master called ``name`` is now."""

    def __init__(self, sentinels: Sequence[tuple[str, int]], name: str,
                 kwargs: dict[str, Any]):
        self.name = name
        self.readers = [AsyncReader({**kwargs, "host": host, "port": port})
                        for host, port in sentinels]

    async def __call__(self) -> tuple[str, int]:
        errors = []
        command = hiredis.pack_command(("SENTINEL", "get-master-addr-by-name", self.name))
        for reader in self.readers:
            try:
                reply = await reader.execute(command)
            except BackendError as e:
                errors.append(str(e))
                continue
            if reply:
                return reply[0].decode(), int(reply[1])
            errors.append(f"sentinel {reader.host}:{reader.port} monitors no {self.name!r}")
        raise StoreUnavailableError(f"no sentinel named the Redis master {self.name!r}: "
                                    + "; ".join(errors))

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


class ClusterReader:
    """MGET over a Redis Cluster: keys grouped by slot, slots by node, nodes in parallel.

    The slot table is loaded with ``CLUSTER SLOTS`` from any node that answers and
    dropped when a node cannot be reached or a reply says MOVED, so the next request
    loads the new one (after a failover, the promoted replica's). Until the cluster
    has settled, requests fail fast with StoreUnavailableError (a 503).
    """

    def __init__(self, kwargs: dict[str, Any], startup: Sequence[tuple[str, int]]):
        self.kwargs = {k: v for k, v in kwargs.items() if k not in ("host", "port")}
        self.startup = list(startup)
        probe = self._reader(self.startup[0])
        self.usable = probe.usable
        self.nodes: dict[tuple[str, int], AsyncReader] = {}
        self.slots: list[tuple[str, int] | None] | None = None
        self._lock = threading.Lock()  # the node map, shared by every thread's loop

    def _reader(self, address: tuple[str, int]) -> AsyncReader:
        return AsyncReader({**self.kwargs, "host": address[0], "port": address[1]})

    def _node(self, address: tuple[str, int]) -> AsyncReader:
        node = self.nodes.get(address)
        if node is None:
            with self._lock:
                node = self.nodes.setdefault(address, self._reader(address))
        return node

    async def refresh(self) -> list[tuple[str, int] | None]:
        errors = []
        for address in dict.fromkeys([*self.nodes, *self.startup]):
            try:
                reply = await self._node(address).execute(hiredis.pack_command(
                    ("CLUSTER", "SLOTS")))
            except BackendError as e:
                errors.append(str(e))
                continue
            table: list[tuple[str, int] | None] = [None] * _SLOTS
            for start, end, master, *_ in reply:
                # An empty or "?" host means the node asked (its own address unknown).
                host = master[0].decode() if master[0] not in (b"", b"?") else address[0]
                table[start:end + 1] = [(host, int(master[1]))] * (end - start + 1)
            self.slots = table
            return table
        raise StoreUnavailableError("no Redis Cluster node answered CLUSTER SLOTS: "
                                    + "; ".join(errors))

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        try:
            return await self._mget(keys)
        except StoreUnavailableError:
            self.slots = None  # a node is gone: the map may change (failover)
            raise

    async def _mget(self, keys: list[str]) -> list[bytes | None]:
        table = self.slots or await self.refresh()
        by_slot: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            by_slot.setdefault(key_slot(key), []).append(i)
        by_node: dict[tuple[str, int], list[int]] = {}
        for slot in by_slot:
            address = table[slot]
            if address is None:
                raise StoreUnavailableError(f"no Redis Cluster node serves slot {slot}")
            by_node.setdefault(address, []).append(slot)
        out: list[bytes | None] = [None] * len(keys)

        async def part(address: tuple[str, int], slots: list[int]) -> None:
            commands = [hiredis.pack_command(("MGET", *[keys[i] for i in by_slot[slot]]))
                        for slot in slots]
            replies = await self._node(address).execute_many(commands)
            for slot, command, reply in zip(slots, commands, replies):
                if isinstance(reply, hiredis.ReplyError):
                    reply = await self._redirect(slot, command, reply)
                for i, value in zip(by_slot[slot], reply):
                    out[i] = value

        parts = [part(address, slots) for address, slots in by_node.items()]
        if len(parts) == 1:
            await parts[0]
        else:
            done = await asyncio.gather(*parts, return_exceptions=True)
            for result in done:
                if isinstance(result, BaseException):
                    raise result
        return out

    async def _redirect(self, slot: int, command: bytes, reply: Exception) -> Any:
        for _ in range(5):
            kind, _, rest = str(reply).partition(" ")
            if kind == "MOVED":
                target = _address(rest.split()[1])
                self.slots = None  # owners changed: reload the whole table next time
                (reply,) = await self._node(target).execute_many((command,))
            elif kind == "ASK":  # the slot is migrating: this key is already there
                target = _address(rest.split()[1])
                _, reply = await self._node(target).execute_many(
                    (hiredis.pack_command(("ASKING",)), command))
            else:
                raise _reply_error(reply, "reading")
            if not isinstance(reply, hiredis.ReplyError):
                return reply
        raise StoreUnavailableError(f"Redis Cluster kept redirecting slot {slot}: {reply}")

    def close(self) -> None:
        for node in list(self.nodes.values()):
            node.close()
