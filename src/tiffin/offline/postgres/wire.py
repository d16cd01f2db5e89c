"""Arrow <-> PostgreSQL: column types both ways, CSV for ``COPY`` in, ADBC's batches out.

Rows are read with ADBC's PostgreSQL driver (``COPY ... TO STDOUT (FORMAT binary)``
decoded to Arrow in C), so no Python object is made per value. What its Arrow
types leave to us is done here: NUMERIC arrives as its text, and a column is cast
to the type the caller asked for (a feature's type).

NUMERIC keeps its value. Its Arrow type (source schemas, entity query columns):
``NUMERIC(p, s)`` is ``decimal128(p, s)``, ``decimal256(p, s)`` past 38 digits and
PostgreSQL's text past 76; an unconstrained ``NUMERIC`` is ``decimal128(38, 18)``
(Spark's choice too). A value that does not fit its decimal type exactly is an
error, never rounded; so are NaN and +/-Infinity, which no decimal holds. A
NUMERIC column feeding a feature is cast in PostgreSQL to the feature's type: a
Float64 feature gets the nearest double of the exact value (NaN and +/-inf
included), a String feature PostgreSQL's own text of it (``12.50``, ``NaN``,
``Infinity``), an integer feature the value when it fits; an integer feature over a
NUMERIC with a fraction (scale > 0) is refused when applied (``types.compatible``),
since PostgreSQL would round.

Rows are written (``write``) as ``COPY ... FROM STDIN (FORMAT csv)``, formatted
by Arrow's C++ CSV writer; types CSV cannot carry (bytea, arrays) travel as
PostgreSQL's text form.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tiffin.types import decimal_from_text

UTC_TS = pa.timestamp("us", tz="UTC")

# type OID -> Arrow type (OIDs are fixed for built-in types); NUMERIC (1700) is decimal
_SCALARS: dict[int, pa.DataType] = {
    16: pa.bool_(), 17: pa.binary(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(),
    26: pa.int64(), 700: pa.float32(), 701: pa.float64(),
    1082: pa.date32(), 1114: pa.timestamp("us"), 1184: UTC_TS,
}
NUMERIC_OID = 1700
# array type OID -> element type OID
_ARRAYS = {1000: 16, 1001: 17, 1005: 21, 1007: 23, 1016: 20, 1028: 26, 1021: 700, 1022: 701,
           1231: 1700, 1182: 1082, 1115: 1114, 1185: 1184, 1009: 25, 1015: 1043, 1014: 1042,
           1002: 18, 1003: 19, 199: 114, 3807: 3802, 2951: 2950}
# An unconstrained NUMERIC has no declared scale; Spark reads it as DECIMAL(38, 18) too.
UNCONSTRAINED_NUMERIC = pa.decimal128(38, 18)


def numeric_type(precision: int | None, scale: int | None) -> pa.DataType:
    """The Arrow type of ``NUMERIC(precision, scale)``; ``None``: unconstrained."""
    if precision is None:
        return UNCONSTRAINED_NUMERIC
    scale = scale or 0
    # PostgreSQL 15 allows a scale above the precision (0.00123 as NUMERIC(3, 5)); Arrow
    # does not, and the digits needed are the larger of the two.
    digits = max(precision, scale)
    if digits <= 38:
        return pa.decimal128(digits, scale)
    if digits <= 76:
        return pa.decimal256(digits, scale)
    return pa.string()  # no Arrow decimal holds it: its exact text


def arrow_type(oid: int, precision: int | None = None, scale: int | None = None
               ) -> pa.DataType:
    """The Arrow type a PostgreSQL column of this type OID reads as (text for the rest:
    varchar, json, uuid, enums, intervals...); ``precision``/``scale``: a NUMERIC's."""
    if oid in _ARRAYS:
        return pa.list_(arrow_type(_ARRAYS[oid]))
    if oid == NUMERIC_OID:
        return numeric_type(precision, scale)
    return _SCALARS.get(oid, pa.string())


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


# -- ADBC -> Arrow ---------------------------------------------------------------------------
_TEXT_FORMS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def is_numeric(t: pa.DataType) -> bool:
    """ADBC's NUMERIC: an opaque extension type over its text."""
    return isinstance(t, pa.BaseExtensionType) and getattr(t, "type_name", None) == "numeric"


def is_numeric_field(f: pa.Field) -> bool:
    """Also where pyarrow does not know the opaque extension type (before 18): then the
    column is plain text and only the driver's field metadata says NUMERIC."""
    return is_numeric(f.type) or (f.metadata or {}).get(b"POSTGRESQL:type") == b"numeric"


def needs_text(found: pa.DataType, target: pa.DataType) -> str | None:
    """The SQL cast (``text`` or ``text[]``) that gives a column PostgreSQL's own text form,
    for a text target that ADBC's type for the column is not (uuid, json, interval, enum,
    NUMERIC); None when the column is read as it is."""
    def texty(t: pa.DataType) -> bool:
        return pa.types.is_string(t) or pa.types.is_large_string(t)

    if texty(target) and not texty(found):
        return "text"
    if pa.types.is_list(target) and texty(target.value_type) and not (
            pa.types.is_list(found) and texty(found.value_type)):
        return "text[]"
    return None


def _numeric(text: pa.Array, target: pa.DataType) -> pa.Array:
    """NUMERIC values (their text, NaN as ``nan`` and Infinity as ``inf``) as ``target``,
    exactly or not at all (``pa.ArrowInvalid`` names the value)."""
    if pa.types.is_floating(target):
        return pc.cast(text, target)  # the nearest float of the exact decimal text
    if pa.types.is_string(target) or pa.types.is_large_string(target):
        for adbc_form, pg_form in _TEXT_FORMS.items():
            text = pc.if_else(pc.equal(text, adbc_form), pg_form, text)
        return text.cast(target)
    special = pc.is_in(text, pa.array(list(_TEXT_FORMS)))
    if pc.any(special).as_py():
        bad = text.filter(special)[0].as_py()
        raise pa.ArrowInvalid(f"NUMERIC {_TEXT_FORMS[bad]} has no {target} value")
    if pa.types.is_integer(target):
        # whole values only: "12.000" is 12, "12.5" fails the cast
        return pc.cast(pc.replace_substring_regex(text, r"\.0*$", ""), target)
    if pa.types.is_decimal(target):
        return decimal_from_text(text, target)
    raise pa.ArrowInvalid(f"a NUMERIC column cannot be read as {target}")


def to_target(arr: pa.Array, target: pa.DataType, numeric: bool = False) -> pa.Array:
    """One column of an ADBC batch as ``target`` (``numeric``: the column is NUMERIC)."""
    if is_numeric(arr.type):
        return _numeric(arr.storage, target)
    if numeric:
        return _numeric(arr, target)
    if isinstance(arr.type, pa.BaseExtensionType):  # json, uuid...: what they are stored as
        arr = arr.storage
    if pa.types.is_list(arr.type) and pa.types.is_list(target) and \
            is_numeric(arr.type.value_type):
        values = to_target(arr.values, target.value_type)
        return pa.ListArray.from_arrays(arr.offsets, values, type=target,
                                        mask=arr.is_null() if arr.null_count else None)
    if pa.types.is_timestamp(arr.type) and arr.null_count < len(arr):
        # ADBC hands PostgreSQL's 'infinity' / '-infinity' over as wrapped-around
        # microseconds far before year 1 instead of failing.
        low = pc.min(arr.cast(pa.int64())).as_py()
        if low < _FAR_PAST:
            raise pa.ArrowInvalid("a timestamp is 'infinity' or '-infinity', which Arrow "
                                  "cannot hold")
    if arr.type != target:
        arr = arr.cast(target)
    return arr


# About 144000 BC in microseconds: before anything PostgreSQL stores (4713 BC), after
# ADBC's infinities (near -2**63).
_FAR_PAST = -(2**62)


def ingest_ready(table: pa.Table) -> pa.Table:
    """``table`` in types ADBC's bulk ingest makes PostgreSQL columns of (for staging)."""
    columns = []
    for col in table.columns:
        t = col.type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            t = pa.string()
        elif pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
            t = pa.binary()
        elif pa.types.is_unsigned_integer(t):
            t = {8: pa.int16(), 16: pa.int32(), 32: pa.int64()}.get(t.bit_width, pa.int64())
        elif pa.types.is_int8(t):
            t = pa.int16()
        elif pa.types.is_timestamp(t) and (t.unit != "us" or t.tz not in (None, "UTC")):
            # sub-microsecond digits go, as PostgreSQL's timestamps have none
            t = pa.timestamp("us", "UTC" if t.tz else None)
            col = pc.cast(col, t, safe=False)
        columns.append(col if col.type == t else col.cast(t))
    return pa.table(columns, names=table.column_names)
