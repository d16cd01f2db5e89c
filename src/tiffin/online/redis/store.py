"""Redis online store.

Key layout: one hash per (project, view, entity key)::

    tiffin:<project>:<view>:<join key values, '|'-separated, each type-tagged>
        __ts  -> event time, epoch microseconds
        __cr  -> created time, epoch microseconds ('' when unknown)
        <feature> -> the value, encoded by its type (absent field: null)

Writes go through one Lua script per batch, which keeps a row only if it is
newer in event time (then created time) than the stored one, so replays and
late batches never overwrite fresher data. An online request is one round trip:
one script call that HMGETs every key of every view (``read_many``). With
``key_ttl_seconds`` (or ``key_ttl_from_view``) keys expire.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tiffin.config import RepoConfig
from tiffin.definitions import FeatureView
from tiffin.errors import BackendError, MissingDependencyError, StoreUnavailableError
from tiffin.online.base import OnlineStore, ReadResult, python_values
from tiffin.online.redis.config import RedisOnlineStoreConfig
from tiffin.types import Array, FeastType, from_micros

try:
    import redis
except ImportError:  # pragma: no cover - exercised only without the extra
    redis = None

_WRITE = """
local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local pos = 3
for i = 1, #KEYS do
  local ts = tonumber(ARGV[pos])
  local cr = tonumber(ARGV[pos + 1]) or -1
  local cur = redis.call('HMGET', KEYS[i], '__ts', '__cr')
  local cts = tonumber(cur[1])
  local ccr = tonumber(cur[2]) or -1
  if cts == nil or ts > cts or (ts == cts and cr >= ccr) then
    redis.call('DEL', KEYS[i])
    local args = {'__ts', ARGV[pos], '__cr', ARGV[pos + 1]}
    for j = 0, n - 1 do
      local f = ARGV[pos + 2 + 2 * j]
      if f ~= '' then
        table.insert(args, f)
        table.insert(args, ARGV[pos + 3 + 2 * j])
      end
    end
    redis.call('HSET', KEYS[i], unpack(args))
    if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
  pos = pos + 2 + 2 * n
end
return 0
"""


# Reads: every key of every view of one request in one EVALSHA. A pipeline of HMGETs
# is one round trip too, but redis-py packs and parses each command in Python
# (~20 us apiece); one script call is one command and one nested reply that hiredis
# parses in C. ARGV: group count, then per view: key count, field count, fields.
_READ = """
local out = {}
local k = 1
local pos = 2
for g = 1, tonumber(ARGV[1]) do
  local nkeys = tonumber(ARGV[pos])
  local nf = tonumber(ARGV[pos + 1])
  local fields = {}
  for j = 1, nf do fields[j] = ARGV[pos + 1 + j] end
  pos = pos + 2 + nf
  for i = 1, nkeys do
    out[k] = redis.call('HMGET', KEYS[k], unpack(fields))
    k = k + 1
  end
end
return out
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _encoder(dtype: FeastType) -> Callable[[Any], bytes | str]:
    if isinstance(dtype, Array):
        return lambda v: json.dumps(v)
    if dtype.name == "Bool":
        return lambda v: "1" if v else "0"
    if dtype.name == "Bytes":
        return lambda v: v
    if dtype.name == "Float32" or dtype.name == "Float64":
        return lambda v: repr(float(v))
    return lambda v: str(v)


def _decoder(dtype: FeastType) -> Callable[[bytes], Any]:
    if isinstance(dtype, Array):
        base = dtype.base_type.name
        if base == "UnixTimestamp":
            return lambda b: [None if x is None else from_micros(x) for x in json.loads(b)]
        return lambda b: json.loads(b)
    name = dtype.name
    if name in ("Int32", "Int64"):
        return int
    if name in ("Float32", "Float64"):
        return float
    if name == "Bool":
        return lambda b: b == b"1"
    if name == "Bytes":
        return lambda b: b
    if name == "UnixTimestamp":
        return lambda b: from_micros(int(b))
    return lambda b: b.decode()


def _key_part(v: Any) -> str:
    # Type-tagged so 1 (int) and "1" (str) are different entities.
    if isinstance(v, bytes):
        return "b" + v.hex()
    if isinstance(v, str):
        return "s" + v.replace("\\", "\\\\").replace("|", "\\|")
    if isinstance(v, datetime):  # the same key writes use (epoch microseconds)
        return "i" + str((v - _EPOCH) // timedelta(microseconds=1))
    return "i" + str(v)


class RedisOnlineStore(OnlineStore):
    def __init__(self, config: RedisOnlineStoreConfig, repo_config: RepoConfig):
        super().__init__(config, repo_config)
        if redis is None:
            raise MissingDependencyError("redis", "redis")
        self.client = redis.Redis(connection_pool=redis.ConnectionPool(
            **config.connection_kwargs(), max_connections=config.max_connections))
        self._script = self.client.register_script(_WRITE)
        self._read_script = self.client.register_script(_READ)
        self._decoder_cache: dict[tuple[str, str], tuple[FeastType, Callable[[bytes], Any]]] = {}

    def _prefix(self, view: FeatureView) -> str:
        return f"tiffin:{self.project}:{view.name}:"

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
        self.teardown(delete)  # hashes need no schema; removed views lose their keys

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

    def _ttl_ms(self, view: FeatureView) -> int:
        if self.config.key_ttl_seconds:
            return int(self.config.key_ttl_seconds * 1000)
        if self.config.key_ttl_from_view and view.ttl_seconds:
            return int(view.ttl_seconds * 1000)  # past the ttl, reads would hide it anyway
        return 0

    def write(self, view: FeatureView, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        keys = [f.name for f in view.entity_columns]
        feats = [f for f in view.features if f.name in batch.schema.names]
        key_cols = [python_values(batch.column(k)) for k in keys]
        ts = pc.cast(batch.column("__event_ts"), pa.int64()).to_pylist()
        cr = pc.cast(batch.column("__created_ts"), pa.int64()).to_pylist()
        values = [python_values(batch.column(f.name)) for f in feats]
        encoders = [_encoder(f.dtype) for f in feats]
        prefix = self._prefix(view)
        names = [f.name for f in feats]
        chunk = 500
        for start in range(0, batch.num_rows, chunk):
            rkeys, argv = [], [len(feats), self._ttl_ms(view)]
            for i in range(start, min(start + chunk, batch.num_rows)):
                rkeys.append(prefix + "|".join(_key_part(c[i]) for c in key_cols))
                argv += [ts[i], "" if cr[i] is None else cr[i]]
                for name, col, enc in zip(names, values, encoders):
                    v = col[i]
                    argv += ["", ""] if v is None else [name, enc(v)]  # '' name: a null
            self._call(f"writing {view.name!r}",
                       lambda rkeys=rkeys, argv=argv: self._script(keys=rkeys, args=argv))

    def read(self, view: FeatureView, keys: Sequence[tuple], features: Sequence[str]
             ) -> ReadResult:
        return self.read_many([(view, keys, features)])[0]

    def read_many(self, reads: Sequence[tuple[FeatureView, Sequence[tuple], Sequence[str]]]
                  ) -> list[ReadResult]:
        rkeys: list[str] = []
        argv: list[Any] = [len(reads)]
        for view, keys, features in reads:
            prefix = self._prefix(view)
            if len(view.join_keys) == 1:
                rkeys += [prefix + _key_part(key[0]) for key in keys]
            else:
                rkeys += [prefix + "|".join(_key_part(v) for v in key) for key in keys]
            argv += [len(keys), len(features) + 1, "__ts", *features]
        if not rkeys:
            return [{} for _ in reads]
        rows = self._call("reading", lambda: self._read_script(keys=rkeys, args=argv))
        out: list[ReadResult] = []
        at = 0
        for view, keys, features in reads:
            mine = rows[at:at + len(keys)]
            at += len(keys)
            hit = [(k, r) for k, r in zip(keys, mine) if r[0] is not None]
            if not hit:
                out.append({})
                continue
            # Decode column by column (one C-level map per feature), not value by value.
            cols = list(zip(*(r for _, r in hit)))
            decoded = [list(map(int, cols[0]))]
            for name, col in zip(features, cols[1:]):
                decode = self._decoders(view, name)
                decoded.append(list(map(decode, col)) if None not in col else
                               [None if b is None else decode(b) for b in col])
            found: ReadResult = {}
            for (key, _), ts, *values in zip(hit, *decoded):
                found[key] = (ts, values)
            out.append(found)
        return out

    def _decoders(self, view: FeatureView, name: str) -> Callable[[bytes], Any]:
        # Keyed by name and checked by type: registry refreshes bring new view objects.
        dtype = next(f.dtype for f in view.features if f.name == name)
        hit = self._decoder_cache.get((view.name, name))
        if hit is None or hit[0] != dtype:
            hit = self._decoder_cache[(view.name, name)] = (dtype, _decoder(dtype))
        return hit[1]

    def close(self) -> None:
        self.client.close()
