from __future__ import annotations

import warnings
from typing import Any

from tiffin.definitions.base import Definition
from tiffin.types import ValueType


class Entity(Definition):
    """Something features describe (a driver, a customer), identified by its join key.

    >>> driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    >>> driver.join_key
    'driver_id'
    """

    kind = "entities"

    def __init__(self, *, name: str, join_keys: list[str] | None = None,
                 value_type: ValueType | None = None, description: str = "",
                 tags: dict[str, str] | None = None, owner: str = ""):
        super().__init__(name, description, tags, owner)
        keys = list(join_keys) if join_keys else [name]
        if len(keys) != 1:
            # Feast accepts a list but only ever uses one key; say so instead of silently
            # dropping the others. Composite keys come from views with several entities.
            raise ValueError(f"entity {name!r}: exactly one join key is supported, got {keys}")
        self.join_keys = keys
        if value_type is None:
            # Same nudge as Feast: the type is inferred from the source at apply.
            warnings.warn(f"entity {name!r} has no value_type; it will be inferred from the "
                          "source at apply", UserWarning, stacklevel=2)
        self.value_type = ValueType(value_type) if value_type is not None else None

    @property
    def join_key(self) -> str:
        return self.join_keys[0]

    def to_dict(self) -> dict[str, Any]:
        return {**self._meta(), "join_keys": self.join_keys,
                "value_type": self.value_type.name if self.value_type is not None else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entity:
        vt = data.get("value_type")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = cls(name=data["name"], join_keys=data["join_keys"],
                      value_type=ValueType[vt] if vt else None, description=data["description"],
                      tags=data["tags"], owner=data["owner"])
        obj.origin = None
        return obj
