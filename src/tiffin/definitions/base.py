"""What every definition shares: a name, metadata, the file it came from, and a dict form.

Definitions are plain Python objects (no protobuf). The registry stores
``to_dict()``; ``from_dict`` rebuilds an equal object. Equality is on the dict
form, so ``apply`` can diff a repository against the registry.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Any, ClassVar

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _caller_origin() -> str | None:
    """``file:line`` of the user code that built the object, for error messages."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not os.path.abspath(filename).startswith(_PACKAGE_DIR) and not filename.startswith("<frozen"):
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back
    return None


class Definition:
    """Base of Entity, FeatureView, FeatureService, data sources and Project."""

    kind: ClassVar[str]  # registry section, e.g. "feature_views"
    name: str

    def __init__(self, name: str, description: str = "", tags: dict[str, str] | None = None,
                 owner: str = ""):
        if not isinstance(name, str) or not name:
            raise TypeError(f"{type(self).__name__} needs a non-empty string name, got {name!r}")
        self.name = name
        self.description = description or ""
        self.tags = dict(tags or {})
        self.owner = owner or ""
        self.origin = _caller_origin()

    def _meta(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "tags": self.tags,
                "owner": self.owner}

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Definition:
        raise NotImplementedError

    def where(self) -> str:
        """' (defined at file:line)' for error messages, or ''."""
        return f" (defined at {self.origin})" if self.origin else ""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_dict() == self.to_dict()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.name))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def ttl_seconds(ttl: timedelta | int | float | None) -> float | None:
    """Feast treats ttl 0 and None as 'no limit'; we store None for both."""
    if ttl is None:
        return None
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    if seconds < 0:
        raise ValueError(f"ttl must not be negative, got {ttl!r}")
    return seconds or None
