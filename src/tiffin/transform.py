"""Running on-demand feature views: once here for both training sets and online reads."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from tiffin.errors import RequestError, TiffinError, TransformationError
from tiffin.features import FeaturePlan, OdfvRequest


def _call(req: OdfvRequest, inputs: dict[str, list[Any]], n: int) -> dict[str, list[Any]]:
    """Run one on-demand view over ``n`` rows; returns its requested outputs, by output name."""
    odfv = req.odfv
    fn = odfv.function()
    wanted = [f.name for f in req.features]
    try:
        if odfv.mode == "pandas":
            import pandas as pd
            result = fn(pd.DataFrame(inputs, index=range(n)))
            missing = [w for w in wanted if w not in getattr(result, "columns", ())]
            if missing:
                raise TransformationError(f"on-demand feature view {odfv.name!r} returned no "
                                          f"column(s) {missing}")
            out = {w: result[w].tolist() for w in wanted}
        elif odfv.singleton:
            rows = [fn({k: v[i] for k, v in inputs.items()}) for i in range(n)]
            out = {w: [r.get(w) for r in rows] for w in wanted}
        else:
            result = fn(inputs)
            out = {w: list(result[w]) for w in wanted}
    except TiffinError:
        raise
    except Exception as e:
        raise TransformationError(f"on-demand feature view {odfv.name!r} failed: "
                                  f"{type(e).__name__}: {e}") from e
    for w, values in out.items():
        if len(values) != n:
            raise TransformationError(f"on-demand feature view {odfv.name!r} returned "
                                      f"{len(values)} values of {w!r} for {n} rows")
        # pandas marks missing numbers as NaN; a missing value is None everywhere else.
        out[w] = [None if isinstance(v, float) and math.isnan(v) else v for v in values]
    return {o: out[f.name] for f, o in zip(req.features, req.output_names)}


def on_demand_online(plan: FeaturePlan, columns: dict[str, list[Any]],
                     request: dict[str, list[Any]], n: int) -> dict[str, list[Any]]:
    """Outputs of every on-demand view, from fetched (hidden) input columns and request data."""
    out: dict[str, list[Any]] = {}
    for req in plan.odfvs:
        inputs = {name: columns[col] for name, col in req.inputs}
        inputs.update({f: request[f] for f in req.request_fields})
        out.update(_call(req, inputs, n))
    return out


def on_demand_offline(table: pa.Table, plan: FeaturePlan, entity_columns: list[str]
                      ) -> pa.Table:
    """Add on-demand outputs to a point-in-time join result and drop their hidden inputs."""
    missing = [f for f in plan.request_fields if f not in table.column_names]
    if missing:
        raise RequestError(f"entity_df has no column(s) {missing}, which on-demand feature "
                           "views read as request data")
    computed: dict[str, pa.Array] = {}
    for req in plan.odfvs:
        inputs = {name: table.column(col).to_pylist() for name, col in req.inputs}
        inputs.update({f: table.column(f).to_pylist() for f in req.request_fields})
        values = _call(req, inputs, table.num_rows)
        for f, o in zip(req.features, req.output_names):
            try:
                computed[o] = pa.array(values[o], type=f.dtype.to_arrow())
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise TransformationError(f"on-demand feature view {req.name!r}: {f.name!r} "
                                          f"is declared {f.dtype}: {e}") from None
    columns = [table.column(c) for c in entity_columns]
    columns += [computed[o] if o in computed else table.column(o) for o in plan.output_names]
    return pa.Table.from_arrays(columns, names=entity_columns + plan.output_names)
