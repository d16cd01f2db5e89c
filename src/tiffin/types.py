"""Feature types, their Feast ``ValueType`` codes and their Arrow types, in one place.

>>> from tiffin.types import Array, Int64, from_arrow
>>> Array(Int64).to_arrow()
ListType(list<item: int64>)
>>> from_arrow(Int64.to_arrow()) is Int64
True
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta, timezone

import pyarrow as pa


class ValueType(enum.IntEnum):
    """Feast's value type codes (the numbers match Feast's, so definitions port unchanged)."""

    UNKNOWN = 0
    BYTES = 1
    STRING = 2
    INT32 = 3
    INT64 = 4
    DOUBLE = 5
    FLOAT = 6
    BOOL = 7
    UNIX_TIMESTAMP = 8
    BYTES_LIST = 11
    STRING_LIST = 12
    INT32_LIST = 13
    INT64_LIST = 14
    DOUBLE_LIST = 15
    FLOAT_LIST = 16
    BOOL_LIST = 17
    UNIX_TIMESTAMP_LIST = 18
    NULL = 19


class FeastType:
    """Base of the dtype objects used in ``Field(dtype=...)``."""

    name: str

    def to_arrow(self) -> pa.DataType:
        raise NotImplementedError

    def to_value_type(self) -> ValueType:
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name


class PrimitiveType(FeastType):
    def __init__(self, name: str, value_type: ValueType, arrow: pa.DataType):
        self.name = name
        self._value_type = value_type
        self._arrow = arrow

    def to_arrow(self) -> pa.DataType:
        return self._arrow

    def to_value_type(self) -> ValueType:
        return self._value_type

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PrimitiveType) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


TIMESTAMP = pa.timestamp("us", tz="UTC")

Bytes = PrimitiveType("Bytes", ValueType.BYTES, pa.binary())
String = PrimitiveType("String", ValueType.STRING, pa.string())
Bool = PrimitiveType("Bool", ValueType.BOOL, pa.bool_())
Int32 = PrimitiveType("Int32", ValueType.INT32, pa.int32())
Int64 = PrimitiveType("Int64", ValueType.INT64, pa.int64())
Float32 = PrimitiveType("Float32", ValueType.FLOAT, pa.float32())
Float64 = PrimitiveType("Float64", ValueType.DOUBLE, pa.float64())
UnixTimestamp = PrimitiveType("UnixTimestamp", ValueType.UNIX_TIMESTAMP, TIMESTAMP)
Invalid = PrimitiveType("Invalid", ValueType.UNKNOWN, pa.null())

PRIMITIVES: dict[str, PrimitiveType] = {
    t.name: t for t in (Bytes, String, Bool, Int32, Int64, Float32, Float64, UnixTimestamp)
}
_LIST_OFFSET = 10  # Feast numbers X_LIST as X + 10


class Array(FeastType):
    """A list of a primitive type: ``Array(Float32)``."""

    def __init__(self, base_type: FeastType):
        if not isinstance(base_type, PrimitiveType) or base_type is Invalid:
            raise TypeError(f"Array takes a primitive type such as Int64, not {base_type!r}")
        self.base_type = base_type
        self.name = f"Array({base_type.name})"

    def to_arrow(self) -> pa.DataType:
        return pa.list_(self.base_type.to_arrow())

    def to_value_type(self) -> ValueType:
        return ValueType(self.base_type.to_value_type() + _LIST_OFFSET)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Array) and other.base_type == self.base_type

    def __hash__(self) -> int:
        return hash(self.name)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def from_micros(us: int) -> datetime:
    """Epoch microseconds -> aware UTC datetime, exactly (float division loses microseconds)."""
    return _EPOCH + timedelta(microseconds=us)


def from_name(name: str) -> FeastType:
    """Inverse of ``str(dtype)``; the registry stores dtypes by name."""
    if name in PRIMITIVES:
        return PRIMITIVES[name]
    if name.startswith("Array(") and name.endswith(")"):
        return Array(from_name(name[6:-1]))
    raise ValueError(f"unknown feature type {name!r}")


def from_value_type(value_type: ValueType | int) -> FeastType:
    vt = ValueType(value_type)
    for t in PRIMITIVES.values():
        if t.to_value_type() == vt:
            return t
    for t in PRIMITIVES.values():
        if t.to_value_type() + _LIST_OFFSET == vt:
            return Array(t)
    raise ValueError(f"value type {vt.name} has no feature type")


def from_arrow(arrow_type: pa.DataType) -> FeastType:
    """The feature type a source column of this Arrow type holds (used for schema inference)."""
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return Array(from_arrow(arrow_type.value_type))
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return UnixTimestamp
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or \
            pa.types.is_string_view(arrow_type) or pa.types.is_dictionary(arrow_type):
        return String
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type) or \
            pa.types.is_fixed_size_binary(arrow_type):
        return Bytes
    if pa.types.is_boolean(arrow_type):
        return Bool
    if pa.types.is_integer(arrow_type):
        return Int64 if arrow_type.bit_width > 32 or (
            pa.types.is_unsigned_integer(arrow_type) and arrow_type.bit_width == 32) else Int32
    if pa.types.is_float32(arrow_type) or pa.types.is_float16(arrow_type):
        return Float32
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return Float64
    raise ValueError(f"no feature type for Arrow type {arrow_type}")


def compatible(declared: FeastType, source: pa.DataType) -> bool:
    """Whether a source column can feed a feature declared with ``declared``.

    Widening casts are fine (int32 -> Int64, float32 -> Float64); a string
    column cannot feed a numeric feature. A decimal column feeds a float feature (the
    nearest float), a String feature (its exact text) and an integer feature only when
    its scale is 0 (a fraction would be rounded away).
    """
    if pa.types.is_decimal(source):
        if declared == String:
            return True
        if declared in (Int32, Int64):
            return source.scale <= 0
    try:
        found = from_arrow(source)
    except ValueError:
        return False
    if found == declared:
        return True
    numeric = {Int32, Int64, Float32, Float64}
    if declared in numeric and found in numeric:
        return True
    if isinstance(declared, Array) and isinstance(found, Array):
        return compatible(declared.base_type, source.value_type)
    return False


def decimal_from_text(text: pa.Array | pa.ChunkedArray, target: pa.DataType
                      ) -> pa.Array | pa.ChunkedArray:
    """Decimal text (``-12.50``, ``1.5e+22``) as the decimal type ``target``, exactly, or
    ``pa.ArrowInvalid``.

    pyarrow's string -> decimal cast (26.0 at least) scales the parsed value up to the
    target's scale without an overflow check: ``"12345678901234567890123"`` as
    ``decimal128(38, 18)`` comes out as another number. A wrapped-around value is off by
    at least half its size, so comparing both as floats finds it.
    """
    import pyarrow.compute as pc

    out = pc.cast(text, target)  # safe: fails on fraction digits the scale cannot hold
    want = pc.cast(text, pa.float64())
    off = pc.greater(pc.abs(pc.subtract(pc.cast(out, pa.float64()), want)),
                     pc.multiply(pc.abs(want), 1e-6))
    if pc.any(off).as_py():
        bad = pc.filter(text, off)[0].as_py()
        raise pa.ArrowInvalid(f"{bad} does not fit {target}")
    return out


__all__ = [
    "decimal_from_text",
    "ValueType", "FeastType", "PrimitiveType", "Array",
    "Bytes", "String", "Bool", "Int32", "Int64", "Float32", "Float64", "UnixTimestamp", "Invalid",
    "from_micros", "from_name", "from_value_type", "from_arrow", "compatible",
]
