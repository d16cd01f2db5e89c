from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

from tiffin.definitions.base import Definition, ttl_seconds
from tiffin.definitions.entity import Entity
from tiffin.definitions.field import Field
from tiffin.definitions.sources import DataSource


class Projection:
    """How a view is used in a request: which of its features, under which name.

    ``view[["a", "b"]]``, ``view.with_name("alias")`` and ``view.with_join_key_map(...)``
    return a copy of the view carrying one of these.
    """

    def __init__(self, features: list[str] | None = None, name_alias: str | None = None,
                 join_key_map: dict[str, str] | None = None):
        self.features = list(features) if features is not None else None  # None: all
        self.name_alias = name_alias
        self.join_key_map = dict(join_key_map or {})

    def to_dict(self) -> dict[str, Any]:
        return {"features": self.features, "name_alias": self.name_alias,
                "join_key_map": self.join_key_map}


class FeatureView(Definition):
    """A group of features read from one source, keyed by entities, with a ttl.

    >>> from datetime import timedelta
    >>> from tiffin import Entity, FileSource, Field
    >>> from tiffin.types import Float32
    >>> stats = FeatureView(
    ...     name="driver_stats", entities=[Entity(name="driver", join_keys=["driver_id"])],
    ...     ttl=timedelta(hours=2), schema=[Field(name="conv_rate", dtype=Float32)],
    ...     source=FileSource(path="data/driver_stats.parquet", timestamp_field="event_timestamp"))
    >>> [f.name for f in stats[["conv_rate"]].projected_features]
    ['conv_rate']
    """

    kind = "feature_views"

    def __init__(self, *, name: str, source: DataSource | None = None,
                 schema: list[Field] | None = None, entities: list[Entity | str] | None = None,
                 ttl: timedelta | None = timedelta(0), online: bool = True, offline: bool = False,
                 description: str = "", tags: dict[str, str] | None = None, owner: str = "",
                 **_feast_only: Any):
        super().__init__(name, description, tags, owner)
        if source is None:
            raise ValueError(f"feature view {name!r} needs a source")
        if not isinstance(source, DataSource):
            raise TypeError(f"feature view {name!r}: source must be a data source such as "
                            f"FileSource or PushSource, got {type(source).__name__}")
        self.source = source
        entities = list(entities or [])
        self.entities = [e.name if isinstance(e, Entity) else str(e) for e in entities]
        self.entity_objects = [e for e in entities if isinstance(e, Entity)]
        self.schema = list(schema or [])
        # Join-key columns with their types; set when the view is resolved at apply.
        self.entity_columns: list[Field] = []
        self._ttl = ttl_seconds(ttl)
        self.online = bool(online)
        self.offline = bool(offline)
        self.projection = Projection()

    # -- ttl -----------------------------------------------------------------------------
    @property
    def ttl(self) -> timedelta | None:
        return timedelta(seconds=self._ttl) if self._ttl else None

    @property
    def ttl_seconds(self) -> float | None:
        return self._ttl

    # -- columns -------------------------------------------------------------------------
    @property
    def join_keys(self) -> list[str]:
        if self.entity_columns:
            return [f.name for f in self.entity_columns]
        return [e.join_key for e in self.entity_objects]

    @property
    def features(self) -> list[Field]:
        keys = set(self.join_keys)
        return [f for f in self.schema if f.name not in keys]

    @property
    def projected_features(self) -> list[Field]:
        if self.projection.features is None:
            return self.features
        by_name = {f.name: f for f in self.features}
        return [by_name[n] for n in self.projection.features if n in by_name]

    @property
    def projected_name(self) -> str:
        return self.projection.name_alias or self.name

    def projected_join_keys(self) -> list[str]:
        """Join keys as the request names them (after ``with_join_key_map``)."""
        return [self.projection.join_key_map.get(k, k) for k in self.join_keys]

    # -- projections ---------------------------------------------------------------------
    def _copy(self) -> FeatureView:
        new = copy.copy(self)
        new.projection = copy.deepcopy(self.projection)
        return new

    def __getitem__(self, feature_names: list[str]) -> FeatureView:
        if isinstance(feature_names, str):
            feature_names = [feature_names]
        known = {f.name for f in self.features}
        if known:
            missing = [n for n in feature_names if n not in known]
            if missing:
                raise KeyError(f"feature view {self.name!r} has no feature(s) {missing}; "
                               f"it has {sorted(known)}")
        new = self._copy()
        new.projection.features = list(feature_names)
        return new

    def with_name(self, name: str) -> FeatureView:
        new = self._copy()
        new.projection.name_alias = name
        return new

    def with_join_key_map(self, join_key_map: dict[str, str]) -> FeatureView:
        new = self._copy()
        new.projection.join_key_map = dict(join_key_map)
        return new

    # -- dict form -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {**self._meta(), "entities": self.entities,
                "entity_columns": [f.to_dict() for f in self.entity_columns],
                "schema": [f.to_dict() for f in self.schema], "ttl_seconds": self._ttl,
                "online": self.online, "offline": self.offline,
                "source": self.source.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureView:
        obj = cls(name=data["name"], source=DataSource.from_dict(data["source"]),
                  schema=[Field.from_dict(f) for f in data["schema"]], entities=data["entities"],
                  ttl=data["ttl_seconds"], online=data["online"], offline=data["offline"],
                  description=data["description"], tags=data["tags"], owner=data["owner"])
        obj.entity_columns = [Field.from_dict(f) for f in data["entity_columns"]]
        obj.origin = None
        return obj


class BatchFeatureView(FeatureView):
    """Feast's BatchFeatureView without transformations: a feature view over a batch source."""
