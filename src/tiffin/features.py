"""Turning a request's feature references into per-view work.

``["driver_stats:conv_rate", "customer:spend"]`` or a FeatureService become a
list of :class:`ViewRequest` (one per view, in first-mention order) and a list
of output column names in request order. Shared by historical and online
retrieval so both name, order and validate features the same way.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tiffin.definitions import FeatureService, FeatureView, Field
from tiffin.errors import (
    FeatureNameCollisionError,
    FeatureNotFoundError,
    FeatureViewNotFoundError,
    RequestError,
    did_you_mean,
)


@dataclass
class ViewRequest:
    view: FeatureView
    name: str  # projected name (alias) used for full feature names
    features: list[Field]  # in request order
    output_names: list[str]  # same length as features
    join_keys: list[str]  # the view's join keys, as stored
    entity_columns: list[str]  # the request columns that feed them (join_key_map applied)

    @property
    def source_columns(self) -> list[str]:
        """The logical source columns a read of this request needs: keys, then features."""
        return self.join_keys + [f.name for f in self.features]


@dataclass
class OdfvRequest:
    odfv: Any  # OnDemandFeatureView
    name: str
    features: list[Field]
    output_names: list[str]
    inputs: list[tuple[str, str]]  # (name the function sees, internal column holding it)
    request_fields: list[str]


HIDDEN = "__odfv_input__"


@dataclass
class FeaturePlan:
    views: list[ViewRequest]
    output_names: list[str]  # every output feature, in request order
    odfvs: list[OdfvRequest] = field(default_factory=list)
    # The join keys of the project's other entities (-> their type, None if unknown): a
    # request may send them although no requested view uses them, and, as in Feast, an
    # online answer returns them with the entity columns.
    other_entity_columns: dict[str, Any] = field(default_factory=dict)

    @property
    def view_outputs(self) -> list[str]:
        """Columns the stores produce: requested view features, then on-demand inputs."""
        visible = [n for n in self.output_names if not self.odfvs or n in self._view_names()]
        return visible + [n for v in self.views for n in v.output_names if n.startswith(HIDDEN)]

    @property
    def feature_refs(self) -> list[str]:
        """``view:feature`` for each output feature, in request order."""
        ref = {out: f"{r.name}:{f.name}" for r in [*self.views, *self.odfvs]
               for f, out in zip(r.features, r.output_names)}
        return [ref[n] for n in self.output_names]

    def _view_names(self) -> set[str]:
        return {n for v in self.views for n in v.output_names}

    @property
    def request_fields(self) -> list[str]:
        return list(dict.fromkeys(f for o in self.odfvs for f in o.request_fields))

    @property
    def entity_columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for v in self.views:
            for c in v.entity_columns:
                seen.setdefault(c)
        return list(seen)


def _parse_ref(ref: str) -> tuple[str, str]:
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise RequestError(f"feature reference {ref!r} must look like 'view:feature'")
    view, feature = ref.split(":")
    if not view or not feature:
        raise RequestError(f"feature reference {ref!r} must look like 'view:feature'")
    return view, feature


def plan_features(snapshot: Any, features: Sequence[str] | FeatureService | str,
                  full_feature_names: bool = False) -> FeaturePlan:
    """Resolve references against a registry snapshot; raise clear errors for bad ones."""
    if isinstance(features, str) and ":" not in features:
        features = snapshot.get("feature_services", features)
    # (projected view name) -> (view or on-demand view, projection join-key map)
    groups: dict[str, tuple[Any, dict[str, str]]] = {}
    order: list[tuple[str, str]] = []

    def lookup(name: str) -> Any:
        if name in snapshot.names("on_demand_feature_views"):
            return snapshot.get("on_demand_feature_views", name)
        return snapshot.get("feature_views", name)

    if isinstance(features, FeatureService):
        for proj in features.projections:
            view = lookup(proj["view"])
            name = proj.get("name_alias") or view.name
            wanted = proj["features"] if proj["features"] is not None else \
                [f.name for f in view.features]
            groups.setdefault(name, (view, proj.get("join_key_map") or {}))
            for f in wanted:
                order.append((name, f))
    else:
        if isinstance(features, (str, bytes)) or not isinstance(features, Sequence):
            raise RequestError("features must be a list of 'view:feature' strings or a "
                               f"FeatureService, got {type(features).__name__}")
        if not features:
            raise RequestError("no features requested", hint="pass features=['view:feature']")
        view_names = snapshot.names("feature_views") + snapshot.names("on_demand_feature_views")
        for ref in features:
            vname, fname = _parse_ref(ref)
            if vname not in groups:
                if vname not in view_names:
                    services = snapshot.names("feature_services")
                    hint = did_you_mean(vname, view_names)
                    if hint is None and vname in services:
                        hint = f"{vname!r} is a feature service: pass it as features=..."
                    raise FeatureViewNotFoundError(vname, view_names,
                                                   project=snapshot.project, hint=hint)
                groups[vname] = (lookup(vname), {})
            order.append((vname, fname))

    requests: dict[str, ViewRequest] = {}
    odfvs: dict[str, OdfvRequest] = {}
    output_names: list[str] = []
    seen_refs: set[tuple[str, str]] = set()

    def add(vname: str, view: FeatureView, jkm: dict[str, str], f: Field, out: str) -> None:
        req = requests.get(vname)
        if req is None:
            keys = view.join_keys
            req = requests[vname] = ViewRequest(view, vname, [], [], keys,
                                                [jkm.get(k, k) for k in keys])
        req.features.append(f)
        req.output_names.append(out)

    for vname, fname in order:
        if (vname, fname) in seen_refs:
            continue  # asking twice for one feature returns it once, as Feast does
        seen_refs.add((vname, fname))
        view, jkm = groups[vname]
        by_name = {f.name: f for f in view.features}
        if fname not in by_name:
            raise FeatureNotFoundError(f"{vname}:{fname}", [f"{vname}:{n}" for n in by_name],
                                       project=snapshot.project)
        out = f"{vname}__{fname}" if full_feature_names else fname
        output_names.append(out)
        if not isinstance(view, FeatureView):  # on-demand: fetch its inputs too, hidden
            req = odfvs.get(vname)
            if req is None:
                inputs: list[tuple[str, str]] = []
                for src in view.view_sources():
                    source_view = snapshot.get("feature_views", src["view"])
                    wanted = src["features"] or [f.name for f in source_view.features]
                    src_fields = {f.name: f for f in source_view.features}
                    for feat in wanted:
                        hidden = f"{HIDDEN}{vname}__{src['view']}__{feat}"
                        add(src["view"], source_view, {}, src_fields[feat], hidden)
                        inputs.append((feat, hidden))
                fields = [f.name for r in view.request_sources() for f in r.schema]
                req = odfvs[vname] = OdfvRequest(view, vname, [], [], inputs, fields)
            req.features.append(by_name[fname])
            req.output_names.append(out)
            continue
        add(vname, view, jkm, by_name[fname], out)
    clashes = {n for n in output_names if output_names.count(n) > 1}
    if clashes:
        raise FeatureNameCollisionError(
            f"feature name(s) {sorted(clashes)} come from more than one feature view",
            hint="pass full_feature_names=True to name them view__feature")
    reserved = {c for r in requests.values() for c in r.entity_columns}
    clashes = {n for n in output_names if n in reserved}
    if clashes:
        raise FeatureNameCollisionError(
            f"feature name(s) {sorted(clashes)} clash with entity columns",
            hint="pass full_feature_names=True to name them view__feature")
    return FeaturePlan(list(requests.values()), output_names, list(odfvs.values()),
                       _other_entity_columns(snapshot, reserved | set(output_names)))


# Snapshot -> every entity's join key and its type. Feature-service plans are made per
# request, so this walk over every view is done once per registry version instead.
_ENTITY_KEYS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _entity_keys(snapshot: Any) -> dict[str, Any]:
    keys = _ENTITY_KEYS.get(snapshot)
    if keys is not None:
        return keys
    from tiffin.types import from_value_type
    resolved = {f.name: f.dtype for v in snapshot.list("feature_views")
                for f in v.entity_columns}
    keys = {}
    for entity in snapshot.list("entities"):
        # The type apply resolved for views keyed on it, else the declared one.
        dtype = resolved.get(entity.join_key)
        if dtype is None and entity.value_type is not None:
            try:
                dtype = from_value_type(entity.value_type)
            except ValueError:  # UNKNOWN and the like: nothing to check against
                dtype = None
        keys.setdefault(entity.join_key, dtype)
    _ENTITY_KEYS[snapshot] = keys
    return keys


def _other_entity_columns(snapshot: Any, used: set[str]) -> dict[str, Any]:
    # (a feature named like a join key is what the answer holds under that name)
    return {k: t for k, t in _entity_keys(snapshot).items() if k not in used}


__all__ = ["ViewRequest", "OdfvRequest", "FeaturePlan", "plan_features"]
