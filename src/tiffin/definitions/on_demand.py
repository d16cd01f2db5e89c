"""On-demand feature views: features computed at read time from other views and request data.

>>> @on_demand_feature_view(sources=[driver_stats, trip_request],
...                         schema=[Field(name="conv_rate_plus_val", dtype=Float64)])
... def conv_rate_plus(inputs: pd.DataFrame) -> pd.DataFrame:          # doctest: +SKIP
...     return pd.DataFrame({"conv_rate_plus_val": inputs["conv_rate"] + inputs["val"]})

The function runs on every online read and after every point-in-time join, in
``pandas`` mode (a DataFrame in, a DataFrame out) or ``python`` mode (a dict of
lists in and out). The registry keeps its source code and file; a process that
did not define it loads it from that file (or, failing that, from the source).
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import os
import textwrap
import threading
from collections.abc import Callable
from typing import Any

from tiffin.definitions.base import Definition
from tiffin.definitions.feature_view import FeatureView, Projection
from tiffin.definitions.field import Field
from tiffin.definitions.sources import DataSource, RequestSource

MODES = ("pandas", "python")
_loaded: dict[tuple[str, str], Callable] = {}
_lock = threading.Lock()


def _function_source(fn: Callable) -> str:
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError):
        return ""
    lines = src.splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("def ")), 0)
    return "\n".join(lines[start:]) + "\n"  # without decorators: they would re-register it


class OnDemandFeatureView(Definition):
    kind = "on_demand_feature_views"

    def __init__(self, *, name: str, schema: list[Field], sources: list[Any],
                 udf: Callable | None = None, udf_string: str = "", mode: str = "pandas",
                 entities: list[Any] | None = None, description: str = "",
                 tags: dict[str, str] | None = None, owner: str = "",
                 write_to_online_store: bool = False, singleton: bool = False,
                 **_feast_only: Any):
        super().__init__(name, description, tags, owner)
        if mode not in MODES:
            raise ValueError(f"on-demand feature view {name!r}: mode must be one of {MODES}, "
                             f"got {mode!r}")
        if write_to_online_store:
            raise ValueError(f"on-demand feature view {name!r}: write_to_online_store=True is "
                             "not supported yet; it is computed on every read")
        if not schema:
            raise ValueError(f"on-demand feature view {name!r} needs a schema")
        self.schema = list(schema)
        self.mode = mode
        self.singleton = bool(singleton)
        self.udf = udf
        self.udf_name = getattr(udf, "__name__", name)
        self.udf_source = udf_string or (_function_source(udf) if udf else "")
        self.udf_file = os.path.abspath(inspect.getsourcefile(udf) or "") if udf else ""
        self.sources: list[dict[str, Any]] = []
        for src in sources:
            if isinstance(src, FeatureView):
                self.sources.append({"view": src.name, "features": src.projection.features})
            elif isinstance(src, RequestSource):
                self.sources.append({"request": src.to_dict()})
            else:
                raise TypeError(f"on-demand feature view {name!r}: sources must be feature "
                                f"views or RequestSources, got {type(src).__name__}")
        self.projection = Projection()

    @property
    def features(self) -> list[Field]:
        return self.schema

    def __getitem__(self, feature_names: list[str]) -> OnDemandFeatureView:
        new = copy.copy(self)
        new.projection = Projection(list(feature_names))
        return new

    def request_sources(self) -> list[RequestSource]:
        return [DataSource.from_dict(s["request"]) for s in self.sources  # type: ignore[misc]
                if "request" in s]

    def view_sources(self) -> list[dict[str, Any]]:
        return [s for s in self.sources if "view" in s]

    # -- the function ----------------------------------------------------------------------
    def function(self) -> Callable:
        if self.udf is not None:
            return self.udf
        key = (self.name, self.udf_source)
        with _lock:
            fn = _loaded.get(key)
            if fn is None:
                fn = _loaded[key] = self._load()
        return fn

    def _load(self) -> Callable:
        # Prefer the defining file: the function keeps its module's imports and helpers.
        if self.udf_file and os.path.exists(self.udf_file):
            spec = importlib.util.spec_from_file_location(f"_tiffin_odfv_{self.name}",
                                                          self.udf_file)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            for value in vars(module).values():
                if isinstance(value, OnDemandFeatureView) and value.name == self.name \
                        and value.udf is not None:
                    return value.udf
        import numpy as np
        import pandas as pd
        namespace: dict[str, Any] = {"pd": pd, "pandas": pd, "np": np, "numpy": np}
        exec(compile(self.udf_source, f"<on-demand view {self.name}>", "exec"), namespace)
        return namespace[self.udf_name]

    # -- dict form -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {**self._meta(), "schema": [f.to_dict() for f in self.schema],
                "sources": self.sources, "mode": self.mode, "singleton": self.singleton,
                "udf": {"name": self.udf_name, "source": self.udf_source,
                        "file": self.udf_file}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OnDemandFeatureView:
        obj = cls.__new__(cls)
        Definition.__init__(obj, data["name"], data["description"], data["tags"], data["owner"])
        obj.origin = None
        obj.schema = [Field.from_dict(f) for f in data["schema"]]
        obj.sources = data["sources"]
        obj.mode = data["mode"]
        obj.singleton = data["singleton"]
        obj.udf = None
        obj.udf_name = data["udf"]["name"]
        obj.udf_source = data["udf"]["source"]
        obj.udf_file = data["udf"]["file"]
        obj.projection = Projection()
        return obj


def on_demand_feature_view(*, schema: list[Field], sources: list[Any], name: str | None = None,
                           mode: str = "pandas", description: str = "",
                           tags: dict[str, str] | None = None, owner: str = "",
                           write_to_online_store: bool = False, singleton: bool = False,
                           **feast_only: Any) -> Callable[[Callable], OnDemandFeatureView]:
    """Decorator form of OnDemandFeatureView; the view is named after the function."""
    def wrap(fn: Callable) -> OnDemandFeatureView:
        view = OnDemandFeatureView(name=name or fn.__name__, schema=schema, sources=sources,
                                   udf=fn, mode=mode, description=description, tags=tags,
                                   owner=owner, write_to_online_store=write_to_online_store,
                                   singleton=singleton, **feast_only)
        view.origin = f"{inspect.getsourcefile(fn)}:{fn.__code__.co_firstlineno}"
        return view
    return wrap


class LoggingConfig:
    """Feast's feature-service logging config: accepted so repositories load; not acted on."""

    def __init__(self, destination: Any = None, sample_rate: float = 1.0):
        self.destination = destination
        self.sample_rate = sample_rate


class FileLoggingDestination:
    """Feast's file logging destination: accepted, not acted on."""

    def __init__(self, *, path: str, **_feast_only: Any):
        self.path = path
