"""The point-in-time join as an in-memory merge, for sources that fit in memory.

Same semantics as ``pit.PointInTimeJoin`` (the contract suite runs both), found
a different way: instead of an ASOF join, each source row becomes one 64-bit
number ``key code | time | row index`` and each entity row ``key code | time |
row index``; one vectorized sort of each side and one binary search per entity
row then give the newest source row at or before it. Sorting plain integers is
several times faster than sorting rows, and only the matched rows' features are
ever copied. When the numbers do not fit in 63 bits (very many keys, microsecond
timestamps spread over years, billions of rows) the caller falls back to SQL.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BITS = 63
# Coarsest unit that divides every source timestamp: whole hours or seconds need far
# fewer bits than microseconds, and comparisons stay exact (see _time_codes).
_UNITS = (3_600_000_000, 60_000_000, 1_000_000, 1_000, 1)


def _bits(n: int) -> int:
    return max(int(n).bit_length(), 1)


def _int_like(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _string_like(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


# Full-length temporaries are what the merge pays for on large sources: every fresh
# array is fresh memory, and first-touching it (page faults; in a VM, host faults too)
# cost more than the arithmetic. So codes are built in place, and what must be derived
# per source row is derived in blocks of this many rows, whose buffers stay warm.
_BLOCK = 1 << 18


def _blocks(n: int):
    for start in range(0, n, _BLOCK):
        yield start, min(start + _BLOCK, n)


def _owned_int64(col: pa.ChunkedArray) -> np.ndarray:
    """A column as an int64 array this code may overwrite (a copy only when needed)."""
    a = col.to_numpy()
    if a.dtype != np.int64 or not a.flags.writeable:
        a = a.astype(np.int64)
    return a


def _key_codes(src: list[pa.ChunkedArray], ent: list[pa.ChunkedArray]
               ) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Integer codes for the join keys of both sides (entity -1: key not in the source)."""
    s_code = np.zeros(len(src[0]), np.int64)
    e_code = np.zeros(len(ent[0]), np.int64)
    e_bad = np.zeros(len(ent[0]), bool)
    width = 1
    for s, e in zip(src, ent):
        if _int_like(s.type) and _int_like(e.type):
            sn = s.to_numpy().astype(np.int64, copy=False)
            lo, hi = int(sn.min()), int(sn.max())
            span = hi - lo + 1
            sc = sn - lo
            en = pc.fill_null(e, lo - 1).to_numpy().astype(np.int64, copy=False) - lo
            e_bad |= (en < 0) | (en >= span)
            ec = en
        elif s.type == e.type or (_string_like(s.type) and _string_like(e.type)):
            uniq = pc.unique(s)
            span = len(uniq)
            sc = pc.index_in(s, value_set=uniq).to_numpy().astype(np.int64)
            ei = pc.index_in(e.cast(s.type), value_set=uniq)
            e_bad |= ei.is_null().to_numpy(zero_copy_only=False)
            ec = pc.fill_null(ei, 0).to_numpy().astype(np.int64)
        else:
            return None  # types that do not compare: let SQL decide (and explain)
        width *= span
        if _bits(width) > 40:
            return None
        s_code = s_code * span + sc
        e_code = e_code * span + np.where(e_bad, 0, ec)
    e_code[e_bad] = -1
    return s_code, e_code, _bits(width - 1)


def _block(col: np.ndarray | pa.ChunkedArray, a: int, b: int) -> np.ndarray:
    """Rows [a, b) of a column as int64 numpy: a view into a chunk when the block lies in
    one, else a copy of just the block (never the whole column)."""
    if isinstance(col, np.ndarray):
        return col[a:b]
    return col.slice(a, b - a).to_numpy().astype(np.int64, copy=False)


def _min_max(col: np.ndarray | pa.ChunkedArray) -> tuple[int, int]:
    if isinstance(col, np.ndarray):
        return int(col.min()), int(col.max())
    mm = pc.min_max(col)
    return int(mm["min"].as_py()), int(mm["max"].as_py())


def _at(col: np.ndarray | pa.ChunkedArray, idx: np.ndarray, null: int) -> np.ndarray:
    """``col[idx]`` as int64, nulls as ``null``."""
    if isinstance(col, np.ndarray):
        return col[idx]
    return micros(col.take(pa.array(idx)), null=null)


def _time_unit(src_ts: np.ndarray | pa.ChunkedArray) -> tuple[int, int, int]:
    """(smallest time, unit, largest time in units above it) for the source times."""
    lo, hi = _min_max(src_ts)
    # Coarsest first; each unit is a multiple of the finer ones, so the first that divides
    # a block is the block's, and usually one remainder per block settles it.
    units = list(_UNITS)
    n = len(src_ts)
    buf, back = np.empty(min(_BLOCK, n), np.int64), np.empty(min(_BLOCK, n), np.int64)
    for a, b in _blocks(n):
        if len(units) == 1:
            break
        seg, q = buf[:b - a], back[:b - a]
        np.subtract(_block(src_ts, a, b), lo, out=seg)
        # Divide and multiply back: numpy divides by a constant without a hardware
        # division per value (remainder does one), half the time for this check.
        while len(units) > 1:
            np.floor_divide(seg, units[0], out=q)
            q *= units[0]
            if np.array_equal(q, seg):
                break
            units.pop(0)
    unit = units[0]
    return lo, unit, (hi - lo) // unit


def _one_int_key(src: list[pa.ChunkedArray], ent: list[pa.ChunkedArray]
                 ) -> tuple[int, np.ndarray, int] | None:
    """For one integer key (the common case): (smallest source key, entity codes, bits).
    A source row's code is its offset from that key, written straight into the packed
    codes a block at a time, so the key column is never copied whole."""
    if len(src) != 1 or not (_int_like(src[0].type) and _int_like(ent[0].type)):
        return None
    if pa.types.is_uint64(src[0].type):
        return None  # may not fit int64: the general path decides
    lo, hi = _min_max(src[0])
    if _bits(hi - lo + 1) > 40:
        return None  # the general path gives up too: SQL decides
    e_code = pc.fill_null(ent[0], lo - 1).to_numpy().astype(np.int64) - lo
    e_code[(e_code < 0) | (e_code > hi - lo)] = -1
    return lo, e_code, _bits(hi - lo)


def point_in_time_indices(src_keys: list[pa.ChunkedArray],
                          src_ts: np.ndarray | pa.ChunkedArray,
                          src_created: np.ndarray | pa.ChunkedArray | None,
                          ent_keys: list[pa.ChunkedArray], ent_ts: np.ndarray,
                          ent_valid: np.ndarray, ttl_us: int | None) -> np.ndarray | None:
    """For each entity row, the index of its source row or -1; None if it does not fit.

    ``src_ts``/``ent_ts`` are epoch microseconds, ``src_created`` too (nulls as the
    smallest int64 in an array; a ChunkedArray may keep them null); the source columns
    as int64 numpy arrays or ChunkedArrays (read in blocks, never concatenated). Source
    rows must have non-null keys and times.
    """
    n_src, n_ent = len(src_ts), len(ent_ts)
    out = np.full(n_ent, -1, np.int64)
    if n_src == 0 or n_ent == 0:
        return out
    one = _one_int_key(src_keys, ent_keys)
    if one is not None:
        k_lo, e_code, k_bits = one
        s_code = None
    else:
        codes = _key_codes(src_keys, ent_keys)
        if codes is None:
            return None
        s_code, e_code, k_bits = codes
    t_lo, unit, top = _time_unit(src_ts)
    t_bits = _bits(top)
    # Every source time is t_lo + k*unit, so s <= e  <=>  k <= floor((e - t_lo) / unit).
    e_t = np.floor_divide(ent_ts - t_lo, unit)
    np.minimum(e_t, top, out=e_t)
    i_bits, j_bits = _bits(n_src - 1), _bits(n_ent - 1)
    if k_bits + t_bits + max(i_bits, j_bits) > BITS:
        return None
    i_mask, j_mask = (1 << i_bits) - 1, (1 << j_bits) - 1

    # key | time | row, a block at a time into one array: the only one as long as the
    # source that the merge allocates (besides the sort's buffer).
    if s_code is None:
        s_code = np.empty(n_src, np.int64)
    else:
        s_code <<= t_bits + i_bits
    buf = np.empty(min(_BLOCK, n_src), np.int64)
    for a, b in _blocks(n_src):
        seg, codes = buf[:b - a], s_code[a:b]
        if one is not None:
            np.subtract(_block(src_keys[0], a, b), k_lo, out=codes)
            codes <<= t_bits + i_bits
        np.subtract(_block(src_ts, a, b), t_lo, out=seg)
        if unit > 1:
            np.floor_divide(seg, unit, out=seg)
        seg <<= i_bits
        codes |= seg
        seg[:] = np.arange(a, b)
        codes |= seg
    del buf
    _sort(s_code)
    S = s_code
    rows = np.flatnonzero(ent_valid & (e_code >= 0) & (e_t >= 0))
    E = np.sort((e_code[rows] << (t_bits + j_bits)) | (e_t[rows] << j_bits) | rows)
    e_rows = E & j_mask
    # The last source entry <= (same key, same or earlier time, any index).
    pos = np.searchsorted(S, ((E >> j_bits) << i_bits) | i_mask, side="right") - 1
    hit = S[np.maximum(pos, 0)]
    ok = (pos >= 0) & ((hit >> (t_bits + i_bits)) == (E >> (t_bits + j_bits)))
    src = hit & i_mask
    src = _break_ties(S, i_bits, hit, src, src_created)
    if ttl_us:
        # The matched row's time is in its code: no lookup into the source column.
        hit_ts = t_lo + ((hit >> i_bits) & ((1 << t_bits) - 1)) * unit
        ok &= hit_ts >= ent_ts[e_rows] - ttl_us
    out[e_rows[ok]] = src[ok]
    return out


def _sort(a: np.ndarray) -> None:
    """Sort in place. A source read in key order arrives as a few sorted runs (one per
    row group, in whatever order the scan threads finish): timsort merges those in
    linear time where quicksort would start over; on other data quicksort is faster."""
    runs = np.count_nonzero(a[1:] < a[:-1]) + 1
    if runs == 1:
        return  # read in key order (see _merge_key_chunked): nothing to do
    a.sort(kind="stable" if runs <= max(64, a.size >> 14) else "quicksort")


def _break_ties(S: np.ndarray, i_bits: int, hit: np.ndarray, src: np.ndarray,
                created: np.ndarray | pa.ChunkedArray | None) -> np.ndarray:
    """Among source rows with the same key and time, prefer the newest created (then the
    last in the source), as the SQL form does. Ties are rare, so only they are sorted."""
    # Neighbours in the same group, found a block at a time (no full-length temporaries).
    found = []
    for a, b in _blocks(S.size - 1):
        g = S[a:b + 1] >> i_bits
        found.append(np.flatnonzero(g[1:] == g[:-1]) + a)
    dup = np.concatenate(found) if found else np.zeros(0, np.int64)
    if dup.size == 0:
        return src
    tied = np.unique(np.concatenate([dup, dup + 1]))
    idx = S[tied] & ((1 << i_bits) - 1)
    rank = _at(created, idx, -(2**63)) if created is not None else \
        np.zeros(len(idx), np.int64)
    order = np.lexsort((idx, rank, S[tied] >> i_bits))
    ordered = tied[order]
    g = S[ordered] >> i_bits
    last = np.flatnonzero(np.r_[g[1:] != g[:-1], True])
    winners_group, winners = g[last], S[ordered[last]] & ((1 << i_bits) - 1)
    at = np.searchsorted(winners_group, hit >> i_bits)
    at_c = np.minimum(at, len(winners_group) - 1)
    m = winners_group[at_c] == (hit >> i_bits)
    src = src.copy()
    src[m] = winners[at_c[m]]
    return src


def micros(col: pa.ChunkedArray | pa.Array, null: int | None = None) -> np.ndarray:
    """Timestamps as int64 epoch microseconds; nulls become ``null`` (needed if any)."""
    if pa.types.is_timestamp(col.type) and col.type.unit != "us":
        col = pc.cast(col, pa.timestamp("us", col.type.tz), safe=False)
    ints = pc.cast(col, pa.int64())
    if null is not None:
        ints = pc.fill_null(ints, null)
    return np.asarray(ints.to_numpy(), dtype=np.int64)


def take(col: pa.ChunkedArray, idx: np.ndarray, missing: np.ndarray) -> pa.Array:
    """``col[idx]`` with nulls where ``missing``. A column of many chunks is gathered chunk
    by chunk by Arrow: concatenating it first would copy every source row (a fresh array
    as long as the source, per feature) to pick the few matched ones. A single chunk of
    null-free numbers goes through numpy's gather, the fastest there."""
    if col.num_chunks != 1:
        out = col.take(pa.array(idx, mask=missing))
        return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out
    arr = col.chunk(0)
    t = arr.type
    if arr.null_count == 0 and (pa.types.is_integer(t) or pa.types.is_floating(t)):
        values = arr.to_numpy()[np.where(missing, 0, idx)] if len(arr) else \
            np.zeros(len(idx), t.to_pandas_dtype())
        return pa.array(values, type=t, mask=missing)
    return arr.take(pa.array(idx, mask=missing))
