from __future__ import annotations

from typing import Any

from tiffin.types import FeastType, from_name


class Field:
    """A named, typed column of a feature view: ``Field(name="conv_rate", dtype=Float32)``."""

    def __init__(self, *, name: str, dtype: FeastType, description: str = "",
                 tags: dict[str, str] | None = None, **_vector_options: Any):
        if not isinstance(dtype, FeastType):
            raise TypeError(f"field {name!r}: dtype must be a tiffin type such as Float32, "
                            f"got {dtype!r}")
        self.name = name
        self.dtype = dtype
        self.description = description or ""
        self.tags = dict(tags or {})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": str(self.dtype), "description": self.description,
                "tags": self.tags}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Field:
        return cls(name=data["name"], dtype=from_name(data["dtype"]),
                   description=data.get("description", ""), tags=data.get("tags"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Field) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, dtype={self.dtype})"
