"""Arrow <-> PostgreSQL: column types both ways, and CSV for ``COPY`` in and out.

Rows cross the wire as ``COPY ... (FORMAT csv)``: Arrow's C++ CSV writer and
reader do the formatting and parsing, so no Python object is made per value
(a cursor fetch builds one per value, several times slower). PostgreSQL sends
``COPY TO`` data one row per message, so a run of whole messages is a run of
whole lines: the reader parses every ``batch_rows`` messages as one batch and
never holds more. Types CSV cannot carry (bytea, arrays) travel as
PostgreSQL's text form and are converted here.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

UTC_TS = pa.timestamp("us", tz="UTC")

# type OID -> Arrow type (OIDs are fixed for built-in types)
_SCALARS: dict[int, pa.DataType] = {
    16: pa.bool_(), 17: pa.binary(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(),
    26: pa.int64(), 700: pa.float32(), 701: pa.float64(), 1700: pa.float64(),
    1082: pa.date32(), 1114: pa.timestamp("us"), 1184: UTC_TS,
}
# array type OID -> element type OID
_ARRAYS = {1000: 16, 1001: 17, 1005: 21, 1007: 23, 1016: 20, 1028: 26, 1021: 700, 1022: 701,
           1231: 1700, 1182: 1082, 1115: 1114, 1185: 1184, 1009: 25, 1015: 1043, 1014: 1042,
           1002: 18, 1003: 19, 199: 114, 3807: 3802, 2951: 2950}


def arrow_type(oid: int) -> pa.DataType:
    """The Arrow type a PostgreSQL column of this type OID reads as (text for the rest:
    varchar, json, uuid, enums, intervals...)."""
    if oid in _ARRAYS:
        return pa.list_(arrow_type(_ARRAYS[oid]))
    return _SCALARS.get(oid, pa.string())


def pg_type(t: pa.DataType) -> str:
    """A PostgreSQL column type that holds this Arrow type (for staging tables)."""
    if pa.types.is_dictionary(t):
        return pg_type(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return pg_type(t.value_type) + "[]"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_decimal(t):
        return f"NUMERIC({t.precision}, {t.scale})"
    if pa.types.is_unsigned_integer(t):
        return {8: "SMALLINT", 16: "INTEGER", 32: "BIGINT"}.get(t.bit_width, "NUMERIC(20)")
    for test, name in ((pa.types.is_boolean, "BOOLEAN"), (pa.types.is_int8, "SMALLINT"),
                       (pa.types.is_int16, "SMALLINT"), (pa.types.is_int32, "INTEGER"),
                       (pa.types.is_int64, "BIGINT"), (pa.types.is_float16, "REAL"),
                       (pa.types.is_float32, "REAL"), (pa.types.is_float64, "DOUBLE PRECISION"),
                       (pa.types.is_date, "DATE"), (pa.types.is_time, "TIME"),
                       (pa.types.is_binary, "BYTEA"), (pa.types.is_large_binary, "BYTEA"),
                       (pa.types.is_fixed_size_binary, "BYTEA")):
        if test(t):
            return name
    return "TEXT"


# -- Arrow -> COPY FROM ----------------------------------------------------------------------
def _array_literal(values: list[Any] | None) -> str | None:
    """A Python list as a one-dimensional PostgreSQL array literal."""
    if values is None:
        return None
    out = []
    for v in values:
        if v is None:
            out.append("NULL")
        elif isinstance(v, bool):
            out.append("t" if v else "f")
        elif isinstance(v, (int, float)):
            out.append(repr(v) if v == v else "NaN")
        else:
            if isinstance(v, bytes):
                v = "\\x" + v.hex()
            elif hasattr(v, "isoformat"):
                v = v.isoformat()
            s = str(v).replace("\\", "\\\\").replace('"', '\\"')
            out.append(f'"{s}"')
    return "{" + ",".join(out) + "}"


def _csv_ready(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Columns Arrow's CSV writer cannot write as PostgreSQL reads them, as text."""
    t = col.type
    if pa.types.is_dictionary(t):
        return _csv_ready(col.cast(t.value_type))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return pa.chunked_array([pa.array([_array_literal(v) for v in col.to_pylist()],
                                          pa.string())])
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return pa.chunked_array([pa.array([None if v is None else "\\x" + v.hex()
                                           for v in col.to_pylist()], pa.string())])
    if pa.types.is_timestamp(t) and (t.unit == "ns" or t.tz not in (None, "UTC")):
        # Written in UTC: a zone-less PostgreSQL column drops the offset, and its values
        # are UTC wall times in tiffin.
        return pc.cast(col, pa.timestamp("us", "UTC" if t.tz else None), safe=False)
    return col


def csv_chunks(table: pa.Table, rows_per_chunk: int = 65_536) -> Iterator[bytes]:
    """``table`` as CSV for ``COPY ... FROM STDIN (FORMAT csv)``: no header, null as an
    unquoted empty field, the empty string as ``""``."""
    table = pa.table([_csv_ready(c) for c in table.columns],
                     names=[str(i) for i in range(table.num_columns)])
    options = pacsv.WriteOptions(include_header=False, batch_size=rows_per_chunk)
    for batch in table.to_batches(rows_per_chunk):
        buf = io.BytesIO()
        pacsv.write_csv(batch, buf, options)
        yield buf.getvalue()


# -- COPY TO -> Arrow ------------------------------------------------------------------------
def _parse_type(oid: int) -> pa.DataType:
    """What Arrow's CSV reader parses a column as; text for what needs converting after."""
    t = arrow_type(oid)
    if pa.types.is_list(t) or pa.types.is_binary(t):
        return pa.string()
    return t


def _array_elements(text: str) -> list[str | None]:
    """The elements of a one-dimensional array literal ``{1,NULL,"a b"}`` as text."""
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"not a one-dimensional array: {text[:40]!r}")
    body, out, i, n = text[1:-1], [], 0, len(text) - 2
    while i < n:
        if body[i] == '"':
            i += 1
            chars = []
            while body[i] != '"':
                if body[i] == "\\":
                    i += 1
                chars.append(body[i])
                i += 1
            out.append("".join(chars))
            i += 1
        else:
            j = body.find(",", i)
            j = n if j < 0 else j
            word = body[i:j]
            if word.startswith("{"):
                raise ValueError("multi-dimensional arrays are not supported")
            out.append(None if word == "NULL" else word)
            i = j
        i += 1  # the comma
    return out


def _from_text(values: pa.Array, t: pa.DataType) -> pa.Array:
    """PostgreSQL's text form of scalars (as in COPY and array literals) to Arrow."""
    if pa.types.is_boolean(t):
        return pc.equal(values, "t")
    if pa.types.is_binary(t):
        return pa.array([None if v is None else bytes.fromhex(v[2:])
                         for v in values.to_pylist()], pa.binary())
    if pa.types.is_string(t):
        return values
    return pc.cast(values, t)


def _convert(col: pa.Array, oid: int) -> pa.Array:
    t = arrow_type(oid)
    if pa.types.is_list(t):
        offsets, elements = [0], []
        mask = []
        for text in col.to_pylist():
            items = [] if text is None else _array_elements(text)
            elements.extend(items)
            offsets.append(len(elements))
            mask.append(text is None)
        flat = _from_text(pa.array(elements, pa.string()), t.value_type)
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat,
                                        mask=pa.array(mask, pa.bool_()))
    if pa.types.is_binary(t):
        return _from_text(col, t)
    return col


class CopyReader:
    """Parses ``COPY (query) TO STDOUT (FORMAT csv)`` into record batches of ``target``.

    ``oids`` are the query's column type OIDs (from a describe); each column is parsed as
    its PostgreSQL type says, then cast to the target type (e.g. a ``timestamp`` column
    that is a UTC feature).
    """

    def __init__(self, oids: list[int], target: pa.Schema):
        self.oids = oids
        self.target = target
        names = [f"c{i}" for i in range(len(oids))]
        self._read = pacsv.ReadOptions(column_names=names, use_threads=False)
        # A row whose only column is null is an empty line: keep it.
        self._parse = pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False)
        self._convert = pacsv.ConvertOptions(
            column_types={n: _parse_type(o) for n, o in zip(names, oids)},
            null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False,
            true_values=["t"], false_values=["f"])

    def batch(self, data: bytes | bytearray) -> pa.RecordBatch:
        if not data:
            return pa.RecordBatch.from_pylist([], schema=self.target)
        table = pacsv.read_csv(pa.py_buffer(data), read_options=self._read,
                               parse_options=self._parse, convert_options=self._convert)
        arrays = []
        for col, oid, field in zip(table.columns, self.oids, self.target):
            arr = _convert(col.combine_chunks(), oid)
            if arr.type != field.type:
                arr = arr.cast(field.type)
            arrays.append(arr)
        return pa.RecordBatch.from_arrays(arrays, schema=self.target)

    def batches(self, rows: Iterable[Any], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """``rows``: the COPY's messages, one row each."""
        buf, n = bytearray(), 0
        for row in rows:
            buf += row
            n += 1
            if n >= batch_rows:
                yield self.batch(buf)
                buf, n = bytearray(), 0
        if n:
            yield self.batch(buf)
