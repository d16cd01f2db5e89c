"""Feature repositories: find the definitions in a folder and check them before apply.

Every ``.py`` file under the repository is imported (Feast does the same), except
paths matched by ``.tiffinignore`` or ``.feastignore`` (gitignore-style globs, one
per line) and the usual suspects (hidden folders, virtualenvs, ``__pycache__``).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import sys
import traceback
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from tiffin.definitions import (
    Definition,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    OnDemandFeatureView,
    Project,
    PushSource,
    RequestSource,
)
from tiffin.errors import DefinitionError, NotFoundError, did_you_mean
from tiffin.offline.base import check_source_columns
from tiffin.types import compatible, from_arrow, from_value_type

IGNORE_FILES = (".tiffinignore", ".feastignore")
ALWAYS_IGNORED = {".git", ".venv", "venv", "__pycache__", "node_modules", ".ipynb_checkpoints"}


@dataclass
class RepoContents:
    objects: list[Definition] = field(default_factory=list)

    def of(self, cls: type) -> list[Any]:
        return [o for o in self.objects if isinstance(o, cls)]


def _ignore_patterns(repo: Path) -> list[str]:
    patterns = []
    for name in IGNORE_FILES:
        f = repo / name
        if f.exists():
            for line in f.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    patterns.append(line.rstrip("/"))
    return patterns


def _ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    for p in patterns:
        if fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p + "/*") or \
                any(fnmatch.fnmatch(part, p) for part in parts):
            return True
    return False


def python_files(repo: Path) -> list[Path]:
    patterns = _ignore_patterns(repo)
    found = []
    for root, dirs, files in os.walk(repo):
        dirs[:] = sorted(d for d in dirs if d not in ALWAYS_IGNORED and not d.startswith(".")
                         and not _ignored(os.path.relpath(os.path.join(root, d), repo)
                                          .replace(os.sep, "/"), patterns))
        for f in sorted(files):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), repo).replace(os.sep, "/")
                if not _ignored(rel, patterns):
                    found.append(Path(root) / f)
    return found


def load_repo(repo_path: str | os.PathLike) -> RepoContents:
    """Import the repository's Python files and collect the definitions they create."""
    repo = Path(repo_path).resolve()
    sys.path.insert(0, str(repo))
    seen: dict[int, Definition] = {}
    try:
        for path in python_files(repo):
            name = f"_tiffin_repo_{uuid.uuid4().hex[:8]}_{path.stem}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            try:
                spec.loader.exec_module(module)  # type: ignore[union-attr]
            except DefinitionError:
                raise
            except Exception as e:
                tb = traceback.extract_tb(e.__traceback__)
                if isinstance(e, SyntaxError) and e.lineno:
                    line = f"{path}:{e.lineno}"
                else:
                    line = next((f"{fr.filename}:{fr.lineno}" for fr in reversed(tb)
                                 if fr.filename == str(path)), str(path))
                raise DefinitionError(f"{line}: {type(e).__name__}: {e}",
                                      hint="fix the error, or list the file in .tiffinignore "
                                           "if it is not a definitions file") from e
            for value in vars(module).values():
                if isinstance(value, Definition):
                    seen.setdefault(id(value), value)
                elif isinstance(value, (list, tuple)):
                    for v in value:
                        if isinstance(v, Definition):
                            seen.setdefault(id(v), v)
    finally:
        sys.path.remove(str(repo))
    return RepoContents(list(seen.values()))


def _collect_sources(objects: list[Definition]) -> list[Definition]:
    """Sources referenced by views are registered too, even if not top-level names."""
    out = list(objects)
    ids = {id(o) for o in out}
    for o in objects:
        if isinstance(o, FeatureView):
            for src in (o.source, getattr(o.source, "batch_source", None)):
                if src is not None and id(src) not in ids:
                    out.append(src)
                    ids.add(id(src))
        if isinstance(o, PushSource) and o.batch_source is not None and \
                id(o.batch_source) not in ids:
            out.append(o.batch_source)
            ids.add(id(o.batch_source))
    return out


def resolve(objects: Iterable[Definition], *, project: str, snapshot: Any,
            source_schema: Any, check_sources: bool = True) -> list[Definition]:
    """Validate definitions and fill in what apply infers (entity columns, schemas).

    ``snapshot`` supplies objects already in the registry (the SDK's apply is additive);
    ``source_schema(source) -> pa.Schema`` reads a source's columns.
    """
    objects = _collect_sources(list(objects))
    by_kind: dict[tuple[str, str], Definition] = {}
    for obj in objects:
        key = (obj.kind, obj.name)
        other = by_kind.get(key)
        if other is not None and other is not obj and other.to_dict() != obj.to_dict():
            raise DefinitionError(
                f"two different {type(obj).__name__}s are named {obj.name!r}: "
                f"{other.origin or '?'} and {obj.origin or '?'}",
                hint="names must be unique within their kind")
        by_kind[key] = obj
    objects = list(by_kind.values())

    for p in (o for o in objects if isinstance(o, Project)):
        if p.name != project:
            raise DefinitionError(f"Project {p.name!r}{p.where()} does not match project "
                                  f"{project!r} in feature_store.yaml")

    entities = {o.name: o for o in objects if isinstance(o, Entity)}
    views = {o.name: o for o in objects if isinstance(o, FeatureView)}

    def entity(name: str, view: FeatureView) -> Entity:
        if name in entities:
            return entities[name]
        try:
            return snapshot.get("entities", name)
        except NotFoundError:
            known = list(entities) + snapshot.names("entities")
            raise DefinitionError(
                f"feature view {view.name!r}{view.where()} uses entity {name!r}, which is not "
                "defined", hint=did_you_mean(name, known) or "define it and apply it too"
            ) from None

    resolved: list[Definition] = []
    for obj in objects:
        if isinstance(obj, FeatureView):
            obj = _resolve_view(obj, [entity(n, obj) for n in obj.entities], source_schema,
                                check_sources)
            views[obj.name] = obj
        resolved.append(obj)

    on_demand = {o.name: o for o in resolved if isinstance(o, OnDemandFeatureView)}
    clash = set(on_demand) & (set(views) | set(snapshot.names("feature_views")))
    if clash:
        raise DefinitionError(f"{sorted(clash)} name both a feature view and an on-demand "
                              "feature view", hint="names must be unique across both")

    def find(name: str, user: str, kinds: tuple[str, ...]) -> Any:
        for kind, local in (("feature_views", views), ("on_demand_feature_views", on_demand)):
            if kind not in kinds:
                continue
            if name in local:
                return local[name]
            if name in snapshot.names(kind):
                return snapshot.get(kind, name)
        raise DefinitionError(f"{user} uses feature view {name!r}, which is not defined",
                              hint=did_you_mean(name, list(views) + list(on_demand)))

    def check_features(user: str, view: Any, wanted: list[str] | None) -> None:
        names = {f.name for f in view.features}
        for f in wanted or []:
            if f not in names:
                raise DefinitionError(f"{user} asks for {f!r}, which feature view "
                                      f"{view.name!r} does not have",
                                      hint=did_you_mean(f, names) or f"it has {sorted(names)}")

    for odfv in on_demand.values():
        user = f"on-demand feature view {odfv.name!r}{odfv.where()}"
        for src in odfv.view_sources():
            check_features(user, find(src["view"], user, ("feature_views",)), src["features"])
        if odfv.udf is None and not odfv.udf_source:
            raise DefinitionError(f"{user} has no function", hint="use @on_demand_feature_view")

    for svc in (o for o in resolved if isinstance(o, FeatureService)):
        user = f"feature service {svc.name!r}{svc.where()}"
        for proj in svc.projections:
            check_features(user, find(proj["view"], user, ("feature_views",
                                                           "on_demand_feature_views")),
                           proj["features"])
    return resolved


def _resolve_view(view: FeatureView, entities: list[Entity], source_schema: Any,
                  check_sources: bool) -> FeatureView:
    if not entities:
        raise DefinitionError(f"feature view {view.name!r}{view.where()} has no entities",
                              hint="entity-less feature views are not supported yet")
    if isinstance(view.source, RequestSource):
        raise DefinitionError(f"feature view {view.name!r}{view.where()}: a RequestSource "
                              "feeds on-demand views only")
    src = view.source.batch if not isinstance(view.source, PushSource) or \
        view.source.batch_source is not None else None
    if src is None:
        raise DefinitionError(f"feature view {view.name!r}{view.where()}: its push source "
                              f"{view.source.name!r} has no batch_source")
    schema: pa.Schema | None = source_schema(src) if check_sources else None
    # Source columns under the names the view uses (field_mapping applied), time columns aside.
    logical_types: dict[str, pa.DataType] = {}
    if schema is not None:
        for f in schema:
            if f.name not in (src.timestamp_field, src.created_timestamp_column):
                logical_types[src.field_mapping.get(f.name, f.name)] = f.type
    declared = {f.name: f for f in view.schema}
    keys: list[Field] = []
    for e in entities:
        if e.join_key in declared:
            dtype = declared[e.join_key].dtype
        elif e.value_type is not None:
            dtype = from_value_type(e.value_type)
        elif e.join_key in logical_types:
            dtype = from_arrow(logical_types[e.join_key])
        else:
            raise DefinitionError(f"feature view {view.name!r}{view.where()}: cannot tell the "
                                  f"type of join key {e.join_key!r}",
                                  hint="set value_type on the entity")
        keys.append(Field(name=e.join_key, dtype=dtype))
    new = view._copy()
    new.entity_columns = keys
    if len({k.name for k in keys}) != len(keys):
        raise DefinitionError(f"feature view {view.name!r}{view.where()}: two entities share "
                              "a join key")
    key_names = {k.name for k in keys}
    if not [f for f in view.schema if f.name not in key_names]:
        if schema is None:
            raise DefinitionError(f"feature view {view.name!r}{view.where()} has no schema")
        new.schema = [Field(name=name, dtype=from_arrow(t)) for name, t in logical_types.items()
                      if name not in key_names]
    else:
        new.schema = [f for f in view.schema if f.name not in key_names]
    names = [f.name for f in new.schema]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise DefinitionError(f"feature view {view.name!r}{view.where()}: duplicate field(s) "
                              f"{sorted(dupes)}")
    if schema is not None:
        check_source_columns(new, schema)
        for f in list(new.schema) + keys:
            t = logical_types.get(f.name)
            if t is not None and not compatible(f.dtype, t):
                raise DefinitionError(
                    f"feature view {view.name!r}{view.where()}: field {f.name!r} is declared "
                    f"{f.dtype} but source {src.name!r} has {t}")
    new.origin = view.origin
    return new
