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
         "saved_datasets":   {"<name>": {...SavedDataset.to_dict()...}},
         "materializations": {"<view>": {"watermark": "<iso>", "intervals": [["<iso>", "<iso>"]]}},
         "owners":           {"<kind>/<name>": ["<repository>", ...]}
       }}}

Saved datasets are created by the SDK (``create_saved_dataset``), not declared in a
repository: ``apply`` never diffs or deletes them, even with ``partial=False``.
``owners`` records which repositories (by folder name) define each object, so that
several repositories can share one project: see ``Registry.apply``.
``serial`` grows by one per committed change. A reader that finds a newer
``format_version`` refuses it instead of guessing. Writes go through
``RegistryStore.write`` with the version read, and are retried on conflict.
"""

from __future__ import annotations

import json
import random
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
    SavedDataset,
)
from tiffin.errors import (
    DataSourceNotFoundError,
    EntityNotFoundError,
    FeatureServiceNotFoundError,
    FeatureViewNotFoundError,
    NotFoundError,
    RegistryConflictError,
    RegistryFormatError,
    RequestError,
    SavedDatasetNotFoundError,
)
from tiffin.registry.base import RegistryStore

FORMAT = "tiffin.registry"
FORMAT_VERSION = 1

KINDS: dict[str, type[Definition] | type[SavedDataset]] = {
    "entities": Entity,
    "data_sources": DataSource,
    "feature_views": FeatureView,
    "on_demand_feature_views": OnDemandFeatureView,
    "feature_services": FeatureService,
    "projects": Project,
    "saved_datasets": SavedDataset,
}
NOT_FOUND: dict[str, type[NotFoundError]] = {
    "entities": EntityNotFoundError,
    "data_sources": DataSourceNotFoundError,
    "feature_views": FeatureViewNotFoundError,
    "on_demand_feature_views": FeatureViewNotFoundError,
    "feature_services": FeatureServiceNotFoundError,
    "projects": NotFoundError,
    "saved_datasets": SavedDatasetNotFoundError,
}
# Apply order: what others refer to comes first; deletes go the other way.
APPLY_ORDER = ["projects", "entities", "data_sources", "feature_views",
               "on_demand_feature_views", "feature_services"]
# Kinds the SDK creates one by one; outside APPLY_ORDER, so apply's diff never sees them.
SDK_KINDS = ["saved_datasets"]


def _empty_project() -> dict[str, Any]:
    return {kind: {} for kind in APPLY_ORDER + SDK_KINDS} | {"materializations": {}}


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
    kept: int = 0  # absent from this repository, left alone: other repositories define them

    def __bool__(self) -> bool:
        return bool(self.changes)

    def of(self, op: str, kind: str | None = None) -> list[Change]:
        return [c for c in self.changes if c.op == op and (kind is None or c.kind == kind)]

    def __str__(self) -> str:
        kept = f" {self.kept} defined by other repositories left as they are." \
            if self.kept else ""
        if not self.changes:
            return f"No changes ({self.unchanged} objects up to date).{kept}"
        lines = [str(c) for c in self.changes]
        lines.append(f"{len(self.of('create'))} to create, {len(self.of('update'))} to update, "
                     f"{len(self.of('delete'))} to delete, {self.unchanged} unchanged.{kept}")
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


def _claim(owners: dict[str, list[str]], defined: set[str], repository: str) -> None:
    """``repository`` now owns exactly ``defined`` (keys ``<kind>/<name>``)."""
    for key in defined:
        if repository not in owners.get(key, ()):
            owners[key] = sorted({*owners.get(key, ()), repository})
    for key in [k for k, who in owners.items() if repository in who and k not in defined]:
        rest = [w for w in owners[key] if w != repository]
        if rest:
            owners[key] = rest
        else:
            del owners[key]


class Registry:
    """Facade over a RegistryStore: cached reads, diffed and retried writes."""

    def __init__(self, store: RegistryStore, project: str, cache_ttl_seconds: float = 600.0,
                 repository: str | None = None):
        self.store = store
        self.project = project
        self.repository = repository  # who a full sync (partial=False) applies for
        self.cache_ttl_seconds = cache_ttl_seconds
        self._snapshot: Snapshot | None = None
        self._raw: bytes | str | None = None  # the document self._snapshot was parsed from
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
        snap = self._snapshot
        if snap is not None and raw == self._raw:
            # Unchanged: keep the same objects, so caches keyed on them (request plans,
            # store codecs) stay warm, and a serving process parses nothing.
            with self._lock:
                self._loaded_at = time.monotonic()
            return snap
        doc = _parse(raw, self.store.describe())
        data = _empty_project() | (doc["projects"].get(self.project) or {})
        snap = Snapshot(self.project, data, doc.get("serial", 0))
        with self._lock:
            self._snapshot, self._raw, self._loaded_at = snap, raw, time.monotonic()
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
                # Jitter, so writers that collided do not collide again in lockstep.
                time.sleep(random.uniform(0, min(0.5, 0.01 * 2 ** attempt)))
                continue
            self.refresh()
            return result
        raise RegistryConflictError(f"registry {self.store.describe()} kept changing; gave up "
                                    f"after {retries} attempts")

    @staticmethod
    def diff(project: dict[str, Any], objects: Iterable[Definition],
             delete: Iterable[Definition] = (), partial: bool = True,
             repository: str | None = None) -> Diff:
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
        owners = project.get("owners", {})
        for kind in reversed(APPLY_ORDER):
            for name, old in project.get(kind, {}).items():
                if name in desired[kind]:
                    continue
                if (kind, name) in doomed:
                    diff.changes.append(Change("delete", kind, name, old, None))
                elif not partial:
                    claimed = set(owners.get(f"{kind}/{name}", ()))
                    if repository is None or claimed <= {repository}:
                        diff.changes.append(Change("delete", kind, name, old, None))
                    else:
                        diff.kept += 1
        return diff

    def plan(self, objects: Iterable[Definition], delete: Iterable[Definition] = (),
             partial: bool = True) -> Diff:
        raw, _ = self.store.read()
        doc = _parse(raw, self.store.describe())
        return self.diff(doc["projects"].get(self.project) or _empty_project(), objects,
                         delete, partial, self.repository)

    def apply(self, objects: Iterable[Definition], delete: Iterable[Definition] = (),
              partial: bool = True) -> Diff:
        """Create and update ``objects``; delete ``delete``, and with ``partial=False`` (a
        full sync, what ``tiffin apply`` does) what ``objects`` lacks -- in one commit.

        A full sync on behalf of a ``repository`` records it as an owner of every object
        it applies and deletes an object it lacks only when no other repository owns it:
        several repositories can then share one project, each ``apply`` removing what
        that repository dropped and leaving the others' objects alone (objects that two
        repositories define take the last applied definition). Objects that no repository
        owns (applied through the SDK, or by a tiffin before ownership was recorded) are
        deleted by a full sync, as Feast's declarative ``apply`` does.
        """
        objects, delete = list(objects), list(delete)

        def mutate(project: dict[str, Any]) -> Diff:
            diff = self.diff(project, objects, delete, partial, self.repository)
            owners: dict[str, list[str]] = project.setdefault("owners", {})
            for c in diff.changes:
                if c.op == "delete":
                    project[c.kind].pop(c.name, None)
                    owners.pop(f"{c.kind}/{c.name}", None)
                    if c.kind == "feature_views":
                        project["materializations"].pop(c.name, None)
                else:
                    project[c.kind][c.name] = c.new
            if not partial and self.repository is not None:
                _claim(owners, {f"{o.kind}/{o.name}" for o in objects}, self.repository)
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

    def check_saved_dataset_name(self, name: str) -> None:
        """RequestError if a saved dataset is already called ``name`` (fresh read)."""
        if name in self.snapshot(allow_cache=False).names("saved_datasets"):
            raise self._name_taken(name)

    def _name_taken(self, name: str) -> RequestError:
        return RequestError(f"saved dataset {name!r} already exists in project "
                            f"{self.project!r}",
                            hint="pass allow_overwrite=True to replace it, or choose another "
                                 "name")

    def apply_saved_dataset(self, dataset: SavedDataset, allow_overwrite: bool = False
                            ) -> SavedDataset:
        """Register a saved dataset; stamps its created (kept on overwrite) and last-updated
        times. A name already taken is a RequestError unless ``allow_overwrite``."""
        def mutate(project: dict[str, Any]) -> None:
            old = project["saved_datasets"].get(dataset.name)
            if old is not None and not allow_overwrite:
                raise self._name_taken(dataset.name)
            now = datetime.now(timezone.utc)
            created = old.get("created_timestamp") if old else None
            dataset.created_timestamp = datetime.fromisoformat(created) if created else now
            dataset.last_updated_timestamp = now
            project["saved_datasets"][dataset.name] = dataset.to_dict()

        self._update(mutate)
        return dataset

    def delete_project(self) -> None:
        def mutate(project: dict[str, Any]) -> None:
            project.clear()
            project.update(_empty_project())
        self._update(mutate)

    def dump(self) -> dict[str, Any]:
        raw, _ = self.store.read()
        return _parse(raw, self.store.describe())
