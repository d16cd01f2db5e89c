from __future__ import annotations

from typing import Any

from tiffin.definitions.base import Definition


class FeatureService(Definition):
    """A named set of features a model uses: whole views or ``view[["f1", "f2"]]``.

    >>> svc = FeatureService(name="model_v1", features=[stats[["conv_rate"]]])  # doctest: +SKIP
    """

    kind = "feature_services"

    def __init__(self, *, name: str, features: list[Any], description: str = "",
                 tags: dict[str, str] | None = None, owner: str = "",
                 logging_config: Any = None, **_feast_only: Any):
        super().__init__(name, description, tags, owner)
        self.feature_views = list(features)
        for fv in self.feature_views:
            if not hasattr(fv, "projection"):
                raise TypeError(f"feature service {name!r}: features must be feature views or "
                                f"view[[...]] projections, got {fv!r}")
        self.logging_config = logging_config
        # What the registry stores: view name + projection, in the order given.
        self.projections = [{"view": fv.name, **fv.projection.to_dict()}
                            for fv in self.feature_views]

    def to_dict(self) -> dict[str, Any]:
        return {**self._meta(), "features": self.projections}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureService:
        obj = cls.__new__(cls)
        Definition.__init__(obj, data["name"], data["description"], data["tags"], data["owner"])
        obj.origin = None
        obj.feature_views = []
        obj.logging_config = None
        obj.projections = data["features"]
        return obj


class Project(Definition):
    """Feast's ``Project`` object: its name must match ``project:`` in feature_store.yaml."""

    kind = "projects"

    def __init__(self, *, name: str, description: str = "", tags: dict[str, str] | None = None,
                 owner: str = ""):
        super().__init__(name, description, tags, owner)

    def to_dict(self) -> dict[str, Any]:
        return self._meta()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Project:
        obj = cls(**data)
        obj.origin = None
        return obj
