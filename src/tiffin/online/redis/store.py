"""Redis online store.

Key layout: one string per (project, view, entity key)::

    tiffin:<project>:<view>:<join key values, '|'-separated, each type-tagged>
        -> msgpack [event time, [value 1, ..., value n], created time or -1, layout id]
    tiffin:<project>:<view>:#layouts      (a hash)
        layout id -> msgpack [[feature name, type name], ...]
    tiffin:<project>:<view>:#newest       (a string)
        the newest event time ever written for the view, in decimal (freshness)

Values are positional, in the order of the view's features when the row was
written; the layout id (a hash of those names and types) says which order. The
row's first two items are the store interface's (event time, values) pair, so a
read of a whole view (the usual feature service) uses the decoded rows as they
are, and a read of some features picks them by position in C; rows of an older
layout (a feature added since) are matched by name through ``#layouts``,
and a feature they lack, or whose type changed, reads as null. Times are epoch
microseconds, also inside values (``UnixTimestamp`` features).

A request reads every key of every view in one ``MGET``. Redis does about 0.5 us
of work per key (the previous layout, a Lua script doing one ``HMGET`` per key,
cost three times that and blocked the server for the whole call), and the client
decodes all the values with one msgpack call over their concatenation: positional
arrays decode about 4x faster than a map per row.

Writes go through one Lua script per chunk, which keeps a row only if it is
newer in event time (then created time) than the stored one, so replays and
late batches never overwrite fresher data. With ``key_ttl_seconds`` (or
``key_ttl_from_view``) keys expire.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tiffin.config import RepoConfig
from tiffin.definitions import FeatureView
from tiffin.errors import BackendError, MissingDependencyError, StoreUnavailableError
from tiffin.online.base import OnlineStore, PairRows, Rows, python_values
from tiffin.online.redis.config import RedisOnlineStoreConfig
from tiffin.types import Array, FeastType, from_micros

try:
    import msgpack
    import redis

    # Packs a command in C (redis-py's own packer walks the arguments in Python).
    from hiredis import pack_command as _pack_command

    from tiffin.online.redis.aio import AsyncReader
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = msgpack = None

# A stored row is a msgpack array [event ts, [values], created ts, layout id] whose
# times are always int64 (0xd3) and whose layout is always uint64 (0xcf), so the
# script reads both times at fixed offsets, from the start and from the end, without
# decoding the values (Redis's Lua msgpack cannot decode bytes values).
_HEAD = struct.Struct(">BBq")  # fixarray of 4, int64 tag, event ts
_TAIL = struct.Struct(">BqBQ")  # int64 tag, created ts (-1: unknown), uint64 tag, layout

# KEYS: the rows' keys, then the view's #layouts hash and #newest string. ARGV: ttl in
# ms (0: none), the layout id and its description, the chunk's newest event ts, then
# per row: event ts, created ts (-1 if unknown), value. The layout and the newest
# event time are recorded in the same call, so no row exists without them. A stored
# value that is not such a row (a hash from an older tiffin) is replaced.
_WRITE = """
local n = #KEYS - 2
redis.call('HSET', KEYS[n + 1], ARGV[2], ARGV[3])
local newest = tonumber(redis.call('GET', KEYS[n + 2]))
if newest == nil or tonumber(ARGV[4]) > newest then
  redis.call('SET', KEYS[n + 2], ARGV[4])
end
local ttl = tonumber(ARGV[1])
for i = 1, n do
  local at = 3 * i + 2
  local ts = tonumber(ARGV[at])
  local cr = tonumber(ARGV[at + 1])
  local cur = redis.pcall('GET', KEYS[i])
  local newer = true
  if type(cur) == 'string' and #cur >= 28 and string.byte(cur, 1) == 0x94
      and string.byte(cur, 2) == 0xd3 then
    local cts = struct.unpack('>i8', string.sub(cur, 3, 10))
    local ccr = struct.unpack('>i8', string.sub(cur, -17, -10))
    newer = ts > cts or (ts == cts and cr >= ccr)
  end
  if newer then
    if ttl > 0 then
      redis.call('SET', KEYS[i], ARGV[at + 2], 'PX', ttl)
    else
      redis.call('SET', KEYS[i], ARGV[at + 2])
    end
  end
end
return 0
"""

_LAYOUT = itemgetter(3)  # of a stored row
_NIL = b"\xc0"  # msgpack nil: stands in for a key that is not there


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _decoder(dtype: FeastType) -> Callable[[Any], Any] | None:
    """How a stored value becomes the user's value (None: msgpack already gives it)."""
    if isinstance(dtype, Array):  # decoded as a tuple (use_list=False): users get lists
        if dtype.base_type.name == "UnixTimestamp":
            return lambda v: None if v is None else [None if x is None else from_micros(x)
                                                     for x in v]
        return lambda v: None if v is None else list(v)
    if dtype.name == "UnixTimestamp":
        return lambda v: None if v is None else from_micros(v)
    return None


def _key_part(v: Any) -> str:
    # Type-tagged so 1 (int) and "1" (str) are different entities.
    if isinstance(v, bytes):
        return "b" + v.hex()
    if isinstance(v, str):
        return "s" + v.replace("\\", "\\\\").replace("|", "\\|")
    if isinstance(v, datetime):  # the same key writes use (epoch microseconds)
        return "i" + str((v - _EPOCH) // timedelta(microseconds=1))
    return "i" + str(v)


class _Codec:
    """How one view's rows are keyed, laid out and decoded; rebuilt when the view changes."""

    def __init__(self, prefix: str, view: FeatureView):
        self.view = view
        self.names = [f.name for f in view.features]
        self.types = [str(f.dtype) for f in view.features]
        self.description = msgpack.packb([self.names, self.types])
        digest = hashlib.blake2b(self.description, digest_size=8)
        self.layout = int.from_bytes(digest.digest(), "big")
        self.position = {name: i for i, name in enumerate(self.names)}
        self.decoders = {f.name: _decoder(f.dtype) for f in view.features}
        self.layouts_key = prefix + "#layouts"
        self.newest_key = prefix + "#newest"
        keys = view.entity_columns
        if len(keys) == 1 and keys[0].dtype.name in ("Int32", "Int64"):
            int_prefix = prefix + "i"  # _key_part of an int, without a call per key

            def build(ks: Sequence[tuple]) -> list[str]:
                return [f"{int_prefix}{k[0]}" for k in ks]
        else:
            def build(ks: Sequence[tuple]) -> list[str]:
                return [prefix + "|".join(_key_part(v) for v in k) for k in ks]
        self.keys = build
        self._pickers: dict[tuple[str, ...], Callable[[list], Sequence[Any]] | None] = {}

    def picker(self, features: Sequence[str]) -> Callable[[list], Sequence[Any]] | None:
        """Stored values (this layout) -> the requested ones in one C call; None when
        the request is the whole view in order, so the stored values are the answer."""
        feats = tuple(features)
        if feats in self._pickers:
            return self._pickers[feats]
        at = [self.position[f] for f in feats]
        pick: Callable[[list], Sequence[Any]] | None
        if at == list(range(len(self.names))):
            pick = None
        elif len(at) == 1:
            i = at[0]
            pick = lambda values: (values[i],)  # noqa: E731
        elif at:
            pick = itemgetter(*at)
        else:
            pick = lambda values: ()  # noqa: E731
        self._pickers[feats] = pick
        return pick


class RedisOnlineStore(OnlineStore):
    def __init__(self, config: RedisOnlineStoreConfig, repo_config: RepoConfig):
        super().__init__(config, repo_config)
        if redis is None or msgpack is None:
            raise MissingDependencyError("redis", "redis")
        self.pool = redis.ConnectionPool(**config.connection_kwargs(),
                                         max_connections=config.max_connections)
        self.client = redis.Redis(connection_pool=self.pool)
        self._script = self.client.register_script(_WRITE)
        self._aio = AsyncReader(config.connection_kwargs())
        self._codecs: dict[str, _Codec] = {}
        # (view, layout id) -> {feature name: (position, type name)}; layouts never change
        self._layouts: dict[tuple[str, int], dict[str, tuple[int, str]]] = {}

    def _prefix(self, view: FeatureView) -> str:
        return f"tiffin:{self.project}:{view.name}:"

    def _codec(self, view: FeatureView) -> _Codec:
        # Rebuilt when the registry hands out a new view object (refresh, re-apply).
        codec = self._codecs.get(view.name)
        if codec is None or codec.view is not view:
            codec = self._codecs[view.name] = _Codec(self._prefix(view), view)
        return codec

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise StoreUnavailableError(f"Redis unreachable while {what}: {e}") from e
        except redis.RedisError as e:
            raise BackendError(f"Redis failed while {what}: {e}") from e

    def ping(self) -> None:
        self._call("pinging", self.client.ping)

    def prepare(self, keep: Sequence[FeatureView], delete: Sequence[FeatureView]) -> None:
        self.teardown(delete)  # strings need no schema; removed views lose their keys

    def teardown(self, views: Sequence[FeatureView]) -> None:
        for view in views:
            def drop(view: FeatureView = view) -> None:
                batch = []
                for key in self.client.scan_iter(match=self._prefix(view) + "*", count=1000):
                    batch.append(key)
                    if len(batch) >= 1000:
                        self.client.unlink(*batch)
                        batch = []
                if batch:
                    self.client.unlink(*batch)
            self._call(f"dropping {view.name!r}", drop)

    def newest_event_times(self, views: Sequence[FeatureView]) -> dict[str, int]:
        if not views:
            return {}
        keys = [self._codec(v).newest_key for v in views]
        found = self._call("reading event times", lambda: self.client.mget(keys))
        return {v.name: int(t) for v, t in zip(views, found) if t is not None}

    def _ttl_ms(self, view: FeatureView) -> int:
        if self.config.key_ttl_seconds:
            return int(self.config.key_ttl_seconds * 1000)
        if self.config.key_ttl_from_view and view.ttl_seconds:
            return int(view.ttl_seconds * 1000)  # past the ttl, reads would hide it anyway
        return 0

    def write(self, view: FeatureView, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        codec = self._codec(view)
        key_cols = [python_values(batch.column(f.name)) for f in view.entity_columns]
        keys = codec.keys(list(zip(*key_cols)))
        ts = pc.cast(batch.column("__event_ts"), pa.int64()).to_pylist()
        cr = pc.cast(batch.column("__created_ts"), pa.int64()).to_pylist()
        present = set(batch.schema.names)
        nulls = [None] * batch.num_rows  # a feature the batch lacks is written as null
        values = [python_values(batch.column(name)) if name in present else nulls
                  for name in codec.names]
        pack = msgpack.Packer().pack
        ttl = self._ttl_ms(view)
        layout = codec.layout
        chunk = 500
        for start in range(0, batch.num_rows, chunk):
            stop = min(start + chunk, batch.num_rows)
            argv: list[Any] = [ttl, layout, codec.description, max(ts[start:stop])]
            for i in range(start, stop):
                created = -1 if cr[i] is None else cr[i]
                argv += [ts[i], created,
                         _HEAD.pack(0x94, 0xD3, ts[i]) + pack([col[i] for col in values])
                         + _TAIL.pack(0xD3, created, 0xCF, layout)]
            self._call(f"writing {view.name!r}",
                       lambda rkeys=[*keys[start:stop], codec.layouts_key, codec.newest_key],
                       argv=argv:
                       self._script(keys=rkeys, args=argv))

    def read(self, view: FeatureView, keys: Sequence[tuple], features: Sequence[str]
             ) -> Rows:
        return self.read_many([(view, keys, features)])[0]

    def read_many(self, reads: Sequence[tuple[FeatureView, Sequence[tuple], Sequence[str]]]
                  ) -> list[Rows]:
        rkeys = self._read_keys(reads)
        if not rkeys:
            return [[] for _ in reads]
        return self._decode(reads, self._call("reading", lambda: self._mget(rkeys)))

    @property
    def async_reads(self) -> bool:  # type: ignore[override]
        # Connections the async reader cannot make (TLS, Unix sockets) read in a thread.
        return self._aio.usable

    async def read_many_async(self, reads: Sequence[tuple[FeatureView, Sequence[tuple],
                                                          Sequence[str]]]
                              ) -> list[Rows]:
        if not self._aio.usable:
            return await super().read_many_async(reads)
        rkeys = self._read_keys(reads)
        if not rkeys:
            return [[] for _ in reads]
        return self._decode(reads, await self._aio.execute(_pack_command(("MGET", *rkeys))))

    def _read_keys(self, reads: Sequence[tuple[FeatureView, Sequence[tuple], Sequence[str]]]
                   ) -> list[str]:
        rkeys: list[str] = []
        for view, keys, _ in reads:
            rkeys += self._codec(view).keys(keys)
        return rkeys

    def _decode(self, reads: Sequence[tuple[FeatureView, Sequence[tuple], Sequence[str]]],
                stored: list[bytes | None]) -> list[Rows]:
        # One C-level decode for the whole request: the stored values are msgpack
        # documents, so their concatenation behind an array header is one document.
        try:
            # Tuples, not lists: cheaper to build, and nothing downstream changes them.
            rows = msgpack.unpackb(_array_header(len(stored)) + b"".join(
                [_NIL if v is None else v for v in stored]), use_list=False)
            return self._rows(reads, rows)
        except (ValueError, TypeError, IndexError, KeyError, msgpack.UnpackException) as e:
            # Checked by failing, not row by row: a stored value of another shape breaks
            # the C-level passes below.
            raise BackendError(
                f"a value under tiffin:{self.project}: is not a tiffin row ({e!r})",
                hint="was the key written by another program? `tiffin materialize` "
                     "rewrites it") from e

    def _rows(self, reads: Sequence[tuple[FeatureView, Sequence[tuple], Sequence[str]]],
              rows: list) -> list[Rows]:
        out: list[Rows] = []
        at = 0
        for view, keys, features in reads:
            codec = self._codec(view)
            mine = rows[at:at + len(keys)]
            at += len(keys)
            layouts = set(map(_LAYOUT, filter(None, mine)))  # C-level passes
            if not layouts or layouts == {codec.layout}:
                pick = codec.picker(features)
                # A stored row is (event time, values, ...), the reader's PairRows row as
                # it is when the whole view is read.
                if pick is None:
                    found = PairRows(mine)
                else:
                    found = PairRows([None if r is None else (r[0], pick(r[1])) for r in mine])
            else:
                found = self._read_mixed(codec, mine, features)
            todo = [(i, d) for i, f in enumerate(features)
                    if (d := codec.decoders[f]) is not None]
            if todo:
                for j, hit in enumerate(found):
                    if hit is None:
                        continue
                    fixed = list(hit[1])
                    for i, decode in todo:
                        if fixed[i] is not None:
                            fixed[i] = decode(fixed[i])
                    found[j] = (hit[0], fixed)
            out.append(found)
        return out

    def _read_mixed(self, codec: _Codec, rows: list, features: Sequence[str]) -> PairRows:
        """Rows of several layouts (the view changed since some were written): by name."""
        found = PairRows()
        for row in rows:
            if row is None:
                found.append(None)
                continue
            if row[3] == codec.layout:
                pick = codec.picker(features)
                found.append((row[0], row[1] if pick is None else pick(row[1])))
                continue
            old = self._layout(codec, row[3])
            values = []
            for name in features:
                pos = old.get(name)
                # A feature the row predates, or whose type changed, reads as null.
                values.append(row[1][pos[0]] if pos is not None
                              and pos[1] == codec.types[codec.position[name]] else None)
            found.append((row[0], values))
        return found

    def _layout(self, codec: _Codec, layout: int) -> dict[str, tuple[int, str]]:
        hit = self._layouts.get((codec.view.name, layout))
        if hit is None:
            raw = self._call("reading", lambda: self.client.hget(codec.layouts_key, str(layout)))
            if raw is None:  # not cached: it may be written (or restored) later
                return {}
            names, types = msgpack.unpackb(raw)
            hit = self._layouts[(codec.view.name, layout)] = {
                n: (i, t) for i, (n, t) in enumerate(zip(names, types))}
        return hit

    def _mget(self, keys: list[str]) -> list[bytes | None]:
        # Straight on a pooled connection: redis-py's command path (argument checks and
        # packing in Python, response callbacks) costs more than Redis takes to answer.
        conn = self.pool.get_connection()
        try:
            conn.send_packed_command((_pack_command(("MGET", *keys)),))
            return conn.read_response()
        except BaseException:
            conn.disconnect()  # a half-read reply must not reach the next caller
            raise
        finally:
            self.pool.release(conn)

    def close(self) -> None:
        self._aio.close()
        self.client.close()
