"""The registry: every applied definition and materialization watermark, per project.

On-disk format (``format_version`` 1), UTF-8 JSON::

    {"format": "tiffin.registry", "format_version": 1, "serial": 12,
     "updated_at": "2026-11-25T12:00:00+00:00",
     "projects": {
       "<project>": {
         "entities":         {"<name>": {...Entity.to_dict()...}},
         "data_sources":     {"<name>": {...}},
         "feature_views":    {"<name>": {...}},
         "on_demand_feature_views": {"<name>": {..., "udf": {"name", "source", "file"}}},
         "feature_services": {"<name>": {...}},
         "projects":         {"<name>": {...}},
         "materializations": {"<view>": {"watermark": "<iso>", "intervals": [["<iso>", "<iso>"]]}}
       }}}

``serial`` grows by one per committed change. A reader that finds a newer
``format_version`` refuses it instead of guessing. Writes go through
``RegistryStore.write`` with the version read, and are retried on conflict.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tiffin.definitions import (
    DataSource,
    Definition,
    Entity,
    FeatureService,
    FeatureView,
    OnDemandFeatureView,
    Project,
)
from tiffin.errors import (
    DataSourceNotFoundError,
    EntityNotFoundError,
    FeatureServiceNotFoundError,
    FeatureViewNotFoundError,
    NotFoundError,
    RegistryConflictError,
    RegistryFormatError,
)
from tiffin.registry.base import RegistryStore

FORMAT = "tiffin.registry"
FORMAT_VERSION = 1

KINDS: dict[str, type[Definition]] = {
    "entities": Entity,
    "data_sources": DataSource,
    "feature_views": FeatureView,
    "on_demand_feature_views": OnDemandFeatureView,
    "feature_services": FeatureService,
    "projects": Project,
}
NOT_FOUND: dict[str, type[NotFoundError]] = {
    "entities": EntityNotFoundError,
    "data_sources": DataSourceNotFoundError,
    "feature_views": FeatureViewNotFoundError,
    "on_demand_feature_views": FeatureViewNotFoundError,
    "feature_services": FeatureServiceNotFoundError,
    "projects": NotFoundError,
}
# Apply order: what others refer to comes first; deletes go the other way.
APPLY_ORDER = ["projects", "entities", "data_sources", "feature_views",
               "on_demand_feature_views", "feature_services"]


def _empty_project() -> dict[str, Any]:
    return {kind: {} for kind in APPLY_ORDER} | {"materializations": {}}


@dataclass(frozen=True)
class Change:
    op: str  # "create" | "update" | "delete"
    kind: str
    name: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None

    def __str__(self) -> str:
        sign = {"create": "+", "update": "~", "delete": "-"}[self.op]
        label = self.kind.rstrip("s").replace("_", " ").replace("entitie", "entity")
        line = f"{sign} {label} {self.name}"
        if self.op == "update" and self.old and self.new:
            changed = sorted(k for k in set(self.old) | set(self.new)
                             if self.old.get(k) != self.new.get(k))
            line += f" (changed: {', '.join(changed)})"
        return line


@dataclass
class Diff:
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0

    def __bool__(self) -> bool:
        return bool(self.changes)

    def of(self, op: str, kind: str | None = None) -> list[Change]:
        return [c for c in self.changes if c.op == op and (kind is None or c.kind == kind)]

    def __str__(self) -> str:
        if not self.changes:
            return f"No changes ({self.unchanged} objects up to date)."
        lines = [str(c) for c in self.changes]
        lines.append(f"{len(self.of('create'))} to create, {len(self.of('update'))} to update, "
                     f"{len(self.of('delete'))} to delete, {self.unchanged} unchanged.")
        return "\n".join(lines)


class Snapshot:
    """The parsed registry of one project at one moment. Objects are built lazily."""

    def __init__(self, project: str, data: dict[str, Any], serial: int):
        self.project = project
        self.data = data
        self.serial = serial
        self._objects: dict[tuple[str, str], Definition] = {}

    def names(self, kind: str) -> list[str]:
        return list(self.data.get(kind, ()))

    def get(self, kind: str, name: str) -> Any:
        key = (kind, name)
        obj = self._objects.get(key)
        if obj is None:
            raw = self.data.get(kind, {}).get(name)
            if raw is None:
                raise NOT_FOUND[kind](name, self.data.get(kind, {}), project=self.project)
            obj = KINDS[kind].from_dict(raw)
            self._objects[key] = obj
        return obj

    def list(self, kind: str, tags: dict[str, str] | None = None) -> list[Any]:
        objs = [self.get(kind, n) for n in self.data.get(kind, ())]
        if tags:
            objs = [o for o in objs if all(o.tags.get(k) == v for k, v in tags.items())]
        return objs

    def materialization(self, view: str) -> dict[str, Any]:
        return self.data["materializations"].get(view, {"watermark": None, "intervals": []})


def _parse(raw: bytes | None, where: str) -> dict[str, Any]:
    if raw is None:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "serial": 0, "projects": {}}
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise RegistryFormatError(f"registry {where} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RegistryFormatError(f"{where} is not a tiffin registry",
                                  hint="a Feast registry.db cannot be read; run `tiffin apply` "
                                       "to build a new registry from the repository")
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise RegistryFormatError(
            f"registry {where} has format version {doc['format_version']}, newer than this "
            f"tiffin understands ({FORMAT_VERSION})", hint="upgrade tiffin")
    return doc


class Registry:
    """Facade over a RegistryStore: cached reads, diffed and retried writes."""

    def __init__(self, store: RegistryStore, project: str, cache_ttl_seconds: float = 600.0):
        self.store = store
        self.project = project
        self.cache_ttl_seconds = cache_ttl_seconds
        self._snapshot: Snapshot | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    # -- reads ---------------------------------------------------------------------------
    def snapshot(self, allow_cache: bool = True) -> Snapshot:
        snap = self._snapshot
        fresh = snap is not None and (
            self.cache_ttl_seconds <= 0
            or time.monotonic() - self._loaded_at < self.cache_ttl_seconds)
        if allow_cache and fresh:
            return snap  # type: ignore[return-value]
        return self.refresh()

    def refresh(self) -> Snapshot:
        raw, _ = self.store.read()
        doc = _parse(raw, self.store.describe())
        data = doc["projects"].get(self.project) or _empty_project()
        snap = Snapshot(self.project, data, doc.get("serial", 0))
        with self._lock:
            self._snapshot, self._loaded_at = snap, time.monotonic()
        return snap

    def get(self, kind: str, name: str, allow_cache: bool = True) -> Any:
        return self.snapshot(allow_cache).get(kind, name)

    def list(self, kind: str, tags: dict[str, str] | None = None, allow_cache: bool = True
             ) -> list[Any]:
        return self.snapshot(allow_cache).list(kind, tags)

    # -- writes --------------------------------------------------------------------------
    def _update(self, mutate: Callable[[dict[str, Any]], Any], retries: int = 50) -> Any:
        """Read-modify-write with optimistic concurrency: retry when another writer won."""
        for attempt in range(retries):
            raw, version = self.store.read()
            doc = _parse(raw, self.store.describe())
            project = doc["projects"].setdefault(self.project, _empty_project())
            for kind, empty in _empty_project().items():
                project.setdefault(kind, empty)
            result = mutate(project)
            doc["format_version"] = FORMAT_VERSION
            doc["serial"] = doc.get("serial", 0) + 1
            doc["updated_at"] = datetime.now(timezone.utc).isoformat()
            try:
                self.store.write(json.dumps(doc, sort_keys=True).encode(), version)
            except RegistryConflictError:
                time.sleep(min(0.5, 0.01 * 2 ** attempt))
                continue
            self.refresh()
            return result
        raise RegistryConflictError(f"registry {self.store.describe()} kept changing; gave up "
                                    f"after {retries} attempts")

    @staticmethod
    def diff(project: dict[str, Any], objects: Iterable[Definition],
             delete: Iterable[Definition] = (), partial: bool = True) -> Diff:
        desired: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in APPLY_ORDER}
        for obj in objects:
            desired[obj.kind][obj.name] = obj.to_dict()
        doomed = {(o.kind, o.name) for o in delete}
        diff = Diff()
        for kind in APPLY_ORDER:
            current = project.get(kind, {})
            for name, new in desired[kind].items():
                old = current.get(name)
                if old is None:
                    diff.changes.append(Change("create", kind, name, None, new))
                elif old != new:
                    diff.changes.append(Change("update", kind, name, old, new))
                else:
                    diff.unchanged += 1
        for kind in reversed(APPLY_ORDER):
            for name, old in project.get(kind, {}).items():
                if name in desired[kind]:
                    continue
                if (kind, name) in doomed or not partial:
                    diff.changes.append(Change("delete", kind, name, old, None))
        return diff

    def plan(self, objects: Iterable[Definition], delete: Iterable[Definition] = (),
             partial: bool = True) -> Diff:
        raw, _ = self.store.read()
        doc = _parse(raw, self.store.describe())
        return self.diff(doc["projects"].get(self.project) or _empty_project(), objects,
                         delete, partial)

    def apply(self, objects: Iterable[Definition], delete: Iterable[Definition] = (),
              partial: bool = True) -> Diff:
        objects, delete = list(objects), list(delete)

        def mutate(project: dict[str, Any]) -> Diff:
            diff = self.diff(project, objects, delete, partial)
            for c in diff.changes:
                if c.op == "delete":
                    project[c.kind].pop(c.name, None)
                    if c.kind == "feature_views":
                        project["materializations"].pop(c.name, None)
                else:
                    project[c.kind][c.name] = c.new
            return diff

        return self._update(mutate)

    def record_materialization(self, view: str, start: datetime, end: datetime) -> None:
        def mutate(project: dict[str, Any]) -> None:
            m = project["materializations"].setdefault(view, {"watermark": None,
                                                               "intervals": []})
            m["intervals"].append([start.isoformat(), end.isoformat()])
            m["intervals"] = m["intervals"][-100:]  # history is for humans; keep it bounded
            if m["watermark"] is None or end.isoformat() > m["watermark"]:
                m["watermark"] = end.isoformat()

        self._update(mutate)

    def delete_project(self) -> None:
        def mutate(project: dict[str, Any]) -> None:
            project.clear()
            project.update(_empty_project())
        self._update(mutate)

    def dump(self) -> dict[str, Any]:
        raw, _ = self.store.read()
        return _parse(raw, self.store.describe())
