"""Redis online store.

Key layout: one string per (project, view, entity key)::

    tiffin:<project>:<view>:<join key values, '|'-separated, each type-tagged>
        -> msgpack [event time, [value 1, ..., value n], created time or -1, layout id]
    tiffin:<project>:<view>:#layouts      (a hash)
        layout id -> msgpack [[feature name, type name], ...]
    tiffin:<project>:<view>:#newest       (a string)
        the newest event time ever written for the view, in decimal (freshness)

On a Redis Cluster (``redis_type: redis_cluster``) the entity key is the hash tag, so
every view's row of one entity lives in one slot, and a view's metadata is tagged with
the project::

    tiffin:{<project>:<join key values>}:<view>
    tiffin:{<project>}:<view>:#layouts
    tiffin:{<project>}:<view>:#newest

A one-entity request then touches one node however many views it reads, and a larger
one sends one MGET per slot, pipelined per node, to every node at once. A single
server and a Sentinel-managed master keep the layout above.

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

Writes go through one Lua script per chunk (on a cluster: per slot, pipelined per
node), which keeps a row only if it is newer in event time (then created time) than
the stored one, so replays and late batches never overwrite fresher data. With ``key_ttl_seconds`` (or
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
    import redis.backoff
    import redis.cluster
    import redis.retry
    import redis.sentinel

    # Packs a command in C (redis-py's own packer walks the arguments in Python).
    from hiredis import pack_command as _pack_command

    from tiffin.online.redis.aio import AsyncReader
    from tiffin.online.redis.routing import ClusterReader, SentinelResolver, key_slot
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = msgpack = None

# A stored row is a msgpack array [event ts, [values], created ts, layout id] whose
# times are always int64 (0xd3) and whose layout is always uint64 (0xcf), so the
# script reads both times at fixed offsets, from the start and from the end, without
# decoding the values (Redis's Lua msgpack cannot decode bytes values).
_HEAD = struct.Struct(">BBq")  # fixarray of 4, int64 tag, event ts
_TAIL = struct.Struct(">BqBQ")  # int64 tag, created ts (-1: unknown), uint64 tag, layout

# KEYS: the rows' keys, then (ARGV[5] = 2) the view's #layouts hash and #newest string.
# ARGV: ttl in ms (0: none), the layout id and its description, the chunk's newest event
# ts, 2 or 0 (whether the last two keys are the view's metadata), then per row: event
# ts, created ts (-1 if unknown), value. On one server the layout and the newest event
# time are recorded in the same call, so no row exists without them; on a cluster a
# script may only touch one slot, so the layout is written before the rows and the
# newest time after them, by calls of their own. A stored value that is not such a
# row (a hash from an older tiffin) is replaced.
_WRITE = """
local meta = tonumber(ARGV[5])
local n = #KEYS - meta
if meta == 2 then
  redis.call('HSET', KEYS[n + 1], ARGV[2], ARGV[3])
  local newest = tonumber(redis.call('GET', KEYS[n + 2]))
  if newest == nil or tonumber(ARGV[4]) > newest then
    redis.call('SET', KEYS[n + 2], ARGV[4])
  end
end
local ttl = tonumber(ARGV[1])
for i = 1, n do
  local at = 3 * i + 3
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


def _ssl_flag(options: dict[str, Any]) -> dict[str, Any]:
    """redis-py's cluster and sentinel clients take TLS as ``ssl=True`` (they pick
    their own connection classes), not as the SSLConnection class a plain pool takes."""
    options = dict(options)
    conn_class = options.pop("connection_class", None)
    if conn_class is not None and conn_class.__name__ == "SSLConnection":
        options["ssl"] = True
    return options


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

    def __init__(self, head: str, tail: str, meta: str, view: FeatureView):
        """A row's key is ``head + entity key + tail``; ``meta`` starts the view's
        #layouts and #newest keys."""
        self.view = view
        self.names = [f.name for f in view.features]
        self.types = [str(f.dtype) for f in view.features]
        self.description = msgpack.packb([self.names, self.types])
        digest = hashlib.blake2b(self.description, digest_size=8)
        self.layout = int.from_bytes(digest.digest(), "big")
        self.position = {name: i for i, name in enumerate(self.names)}
        self.decoders = {f.name: _decoder(f.dtype) for f in view.features}
        self.layouts_key = meta + "#layouts"
        self.newest_key = meta + "#newest"
        keys = view.entity_columns
        if len(keys) == 1 and keys[0].dtype.name in ("Int32", "Int64"):
            int_head = head + "i"  # _key_part of an int, without a call per key

            def build(ks: Sequence[tuple]) -> list[str]:
                return [f"{int_head}{k[0]}{tail}" for k in ks]
        else:
            def build(ks: Sequence[tuple]) -> list[str]:
                return [head + "|".join(_key_part(v) for v in k) + tail for k in ks]
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
        self.cluster = config.redis_type == "redis_cluster"
        self._resolver: SentinelResolver | None = None
        self._sentinel: Any = None
        if self.cluster:
            # One immediate retry (after redis-py reloads the slot map), not its default
            # backoff over many: during a failover a caller gets a 503 within the socket
            # timeout, as with one server. MOVED/ASK are followed apart from this.
            self.client = self._call("connecting to the cluster", lambda: redis.cluster.RedisCluster(
                startup_nodes=[redis.cluster.ClusterNode(host, port)
                               for host, port in config.addresses()],
                retry=redis.retry.Retry(redis.backoff.NoBackoff(), 1),
                max_connections=config.max_connections, **_ssl_flag(config.options())))
            self._aio = ClusterReader(config.options(), config.addresses())
        elif config.redis_type == "redis_sentinel":
            # redis-py's Sentinel asks the sentinels for the master at every new
            # connection and drops one that meets a READONLY reply, so a failover is
            # followed as connections are replaced. The sentinels get only the timeouts.
            sentinel = self._sentinel = redis.sentinel.Sentinel(config.addresses(),
                                               sentinel_kwargs=config.timeouts(),
                                               **_ssl_flag(config.options()))
            self.client = sentinel.master_for(config.sentinel_master,
                                              max_connections=config.max_connections)
            self.pool = self.client.connection_pool
            self._resolver = SentinelResolver(config.addresses(), config.sentinel_master,
                                              config.timeouts())
            self._aio = AsyncReader(config.options(), resolve=self._resolver)
        else:
            self.pool = redis.ConnectionPool(**config.connection_kwargs(),
                                             max_connections=config.max_connections)
            self.client = redis.Redis(connection_pool=self.pool)
            self._aio = AsyncReader(config.connection_kwargs())
        self._script = self.client.register_script(_WRITE)
        self._codecs: dict[str, _Codec] = {}
        # (view, layout id) -> {feature name: (position, type name)}; layouts never change
        self._layouts: dict[tuple[str, int], dict[str, tuple[int, str]]] = {}

    def _prefix(self, view: FeatureView) -> str:
        """What every key of the view (single server), or its metadata (cluster), starts with."""
        if self.cluster:
            return f"tiffin:{{{self.project}}}:{view.name}:"
        return f"tiffin:{self.project}:{view.name}:"

    def _codec(self, view: FeatureView) -> _Codec:
        # Rebuilt when the registry hands out a new view object (refresh, re-apply).
        codec = self._codecs.get(view.name)
        if codec is None or codec.view is not view:
            if self.cluster:
                codec = _Codec(f"tiffin:{{{self.project}:", f"}}:{view.name}",
                               self._prefix(view), view)
            else:
                codec = _Codec(self._prefix(view), "", self._prefix(view), view)
            self._codecs[view.name] = codec
        return codec

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise StoreUnavailableError(f"Redis unreachable while {what}: {e}") from e
        except redis.exceptions.RedisClusterException as e:
            # Not a RedisError: no node reachable, a slot no node serves (a failover).
            raise StoreUnavailableError(f"Redis Cluster unavailable while {what}: {e}") from e
        except redis.RedisError as e:
            raise BackendError(f"Redis failed while {what}: {e}") from e

    def ping(self) -> None:
        self._call("pinging", self.client.ping)

    def prepare(self, keep: Sequence[FeatureView], delete: Sequence[FeatureView]) -> None:
        self.teardown(delete)  # strings need no schema; removed views lose their keys

    def teardown(self, views: Sequence[FeatureView]) -> None:
        for view in views:
            def drop(view: FeatureView = view) -> None:
                if self.cluster:  # rows on every master; the metadata in the project's slot
                    match = f"tiffin:{{{self.project}:*}}:{view.name}"
                    self.client.unlink(self._prefix(view) + "#layouts",
                                       self._prefix(view) + "#newest")
                else:
                    match = self._prefix(view) + "*"
                batch = []
                # A cluster client scans every master and splits UNLINK by slot.
                for key in self.client.scan_iter(match=match, count=1000):
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
        found = self._call("reading event times", lambda: self._mget(keys))
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
        head = [ttl, layout, codec.description]

        def row(i: int) -> list[Any]:
            created = -1 if cr[i] is None else cr[i]
            return [ts[i], created,
                    _HEAD.pack(0x94, 0xD3, ts[i]) + pack([col[i] for col in values])
                    + _TAIL.pack(0xD3, created, 0xCF, layout)]

        chunk = 500
        if self.cluster:
            self._write_cluster(view, codec, keys, ts, head, row, chunk)
            return
        for start in range(0, batch.num_rows, chunk):
            stop = min(start + chunk, batch.num_rows)
            argv: list[Any] = [*head, max(ts[start:stop]), 2]
            for i in range(start, stop):
                argv += row(i)
            self._call(f"writing {view.name!r}",
                       lambda rkeys=[*keys[start:stop], codec.layouts_key, codec.newest_key],
                       argv=argv:
                       self._script(keys=rkeys, args=argv))

    def _write_cluster(self, view: FeatureView, codec: _Codec, keys: list[str],
                       ts: list[int], head: list[Any], row: Callable[[int], list[Any]],
                       chunk: int) -> None:
        what = f"writing {view.name!r}"
        self._call(what, lambda: self.client.hset(codec.layouts_key, str(codec.layout),
                                                  codec.description))
        for start in range(0, len(keys), chunk):
            by_slot: dict[int, list[int]] = {}
            for i in range(start, min(start + chunk, len(keys))):
                by_slot.setdefault(key_slot(keys[i]), []).append(i)
            calls = []
            for rows in by_slot.values():
                argv: list[Any] = [*head, 0, 0]
                for i in rows:
                    argv += row(i)
                calls.append(([keys[i] for i in rows], argv))
            self._call(what, lambda calls=calls: self._run_scripts(calls))
        self._call(what, lambda: self._script(
            keys=[codec.layouts_key, codec.newest_key], args=[*head, max(ts), 2]))

    def _run_scripts(self, calls: list[tuple[list[str], list[Any]]]) -> None:
        """One EVALSHA per slot, in one pipeline: redis-py sends each node its share at
        once and follows MOVED/ASK. A master that lacks the script (a promoted replica,
        a restarted node) gets it loaded, and the calls run again: rows are written
        only if newer, so running one twice changes nothing."""
        for attempt in (0, 1):
            pipe = self.client.pipeline(transaction=False)
            for rkeys, argv in calls:
                pipe.evalsha(self._script.sha, len(rkeys), *rkeys, *argv)
            results = pipe.execute(raise_on_error=False)
            errors = [r for r in results if isinstance(r, Exception)]
            if not errors:
                return
            if attempt == 0 and all(isinstance(e, redis.exceptions.NoScriptError)
                                    for e in errors):
                self.client.script_load(_WRITE)
                continue
            raise errors[0]

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
        return self._decode(reads, await self._aio.mget(rkeys))

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
        if self.cluster:
            return self._cluster_mget(keys)
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

    def _cluster_mget(self, keys: list[str]) -> list[bytes | None]:
        """One MGET per slot; each node's MGETs go out in one write, to every node
        before any reply is read, packed in C. Where redis-py's slot table is out of
        date (a MOVED or ASK reply) or a node is gone, redis-py's own per-slot MGETs
        (which follow redirections and reload the table) answer instead; they cost
        about four times as much in Python, so they are not the everyday path."""
        by_slot: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            by_slot.setdefault(key_slot(key), []).append(i)
        by_node: dict[str, tuple[Any, list[int]]] = {}
        for slot, at in by_slot.items():
            node = self.client.get_node_from_key(keys[at[0]])
            by_node.setdefault(node.name, (node, []))[1].append(slot)
        taken = []
        try:
            for node, slots in by_node.values():
                pool = self.client.get_redis_connection(node).connection_pool
                conn = pool.get_connection()
                taken.append((pool, conn, slots))
                # Joined: redis-py sends each item of a list with a sendall of its own.
                conn.send_packed_command((b"".join(
                    [_pack_command(("MGET", *[keys[i] for i in by_slot[s]])) for s in slots]),))
            out: list[bytes | None] = [None] * len(keys)
            for _, conn, slots in taken:
                for slot in slots:
                    for i, value in zip(by_slot[slot], conn.read_response()):
                        out[i] = value
        except redis.TimeoutError:
            for _, conn, _ in taken:
                conn.disconnect()
            raise  # asking again would double the wait
        except (redis.ResponseError, redis.ConnectionError):
            for _, conn, _ in taken:
                conn.disconnect()  # replies may be left unread on it
            return self.client.mget_nonatomic(keys)
        except BaseException:
            for _, conn, _ in taken:
                conn.disconnect()
            raise
        finally:
            for pool, conn, _ in taken:
                pool.release(conn)
        return out

    def close(self) -> None:
        self._aio.close()
        if self._resolver is not None:
            self._resolver.close()
        if self._sentinel is not None:  # its clients of the sentinels are its own
            for client in self._sentinel.sentinels:
                client.close()
        self.client.close()
