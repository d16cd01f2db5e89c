"""One benchmark phase for one library, run in a fresh process by run.py.

    <venv>/bin/python benchmarks/side.py --lib tiffin|feast --phase NAME \
        --repo DIR --data DIR --out FILE.json

The same file runs under both virtualenvs: the library is reached only through
``importlib.import_module(lib)`` and ``<lib>.types``, so the feature
definitions are identical apart from the package they come from.

Phases: apply, historical, materialize, online_1, online_100.
The JSON written to --out holds the timed seconds (``seconds``), extra figures
(latency percentiles, row counts), library versions and the process's peak RSS
(``vm_hwm_kib``, from /proc/self/status VmHWM, taken right after the timed call;
for historical that is before the result is written to Parquet). historical then
times the same retrieval a second time in the same process (``warm_seconds``).
``rss_before_kib`` is the RSS right before the timed call, so the import
overhead is visible.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import sys
import time
import traceback
from datetime import datetime, timedelta, timezone

FEATURES = [
    "driver_stats:conv_rate",
    "driver_stats:acc_rate",
    "driver_stats:avg_daily_trips",
    "driver_stats:rating",
    "driver_stats:city",
    "customer_stats:spend",
    "customer_stats:orders",
    "customer_stats:tier",
]

FEATURE_STORE_YAML = """\
project: bench
registry: data/registry.db
provider: local
online_store:
  type: sqlite
  path: data/online.db
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""

ONLINE_SEED = 7


def _status_kib(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def _version(mod_name: str) -> str:
    try:
        from importlib.metadata import version

        return version(mod_name)
    except Exception:
        try:
            return str(importlib.import_module(mod_name).__version__)
        except Exception:
            return "n/a"


def write_repo(repo: str, online_store: str = "sqlite") -> None:
    """``online_store``: ``sqlite`` or ``redis:<connection string>``."""
    os.makedirs(os.path.join(repo, "data"), exist_ok=True)
    text = FEATURE_STORE_YAML
    if online_store.startswith("redis:"):
        text = text.replace(
            "  type: sqlite\n  path: data/online.db\n",
            f'  type: redis\n  connection_string: "{online_store[len("redis:") :]}"\n',
        )
    with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
        f.write(text)


def push_definitions(lib, repo: str, driver) -> list:
    """A push source and its view (driver_live), for the feature-server benchmark's push phase.

    Its batch source is a one-row Parquet file in the repo, so materialize has nearly
    nothing to load from it; pushes go to the online store only.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = importlib.import_module(lib.__name__ + ".types")
    path = os.path.join(repo, "data", "driver_live.parquet")
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array([0], pa.int64()),
                "event_timestamp": pa.array(
                    [datetime(2026, 1, 1, tzinfo=timezone.utc)], pa.timestamp("us", "UTC")
                ),
                "conv_rate": pa.array([0.0], pa.float32()),
            }
        ),
        path,
    )
    batch = lib.FileSource(name="driver_live_source", path=path, timestamp_field="event_timestamp")
    push = lib.PushSource(name="driver_push", batch_source=batch)
    view = lib.FeatureView(
        name="driver_live",
        entities=[driver],
        ttl=timedelta(days=1),
        schema=[lib.Field(name="driver_id", dtype=t.Int64), lib.Field(name="conv_rate", dtype=t.Float32)],
        online=True,
        source=push,
    )
    return [batch, push, view]


def definitions(lib, data_dir: str) -> list:
    """Entities, sources, feature views and a feature service, via ``lib`` only."""
    t = importlib.import_module(lib.__name__ + ".types")
    Entity, FeatureView, Field, FileSource = lib.Entity, lib.FeatureView, lib.Field, lib.FileSource
    ValueType, FeatureService = lib.ValueType, lib.FeatureService

    driver = Entity(
        name="driver", join_keys=["driver_id"], value_type=ValueType.INT64, description="driver id"
    )
    customer = Entity(
        name="customer", join_keys=["customer_id"], value_type=ValueType.INT64, description="customer id"
    )
    driver_src = FileSource(
        name="driver_hourly_source",
        path=os.path.abspath(os.path.join(data_dir, "drivers.parquet")),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    customer_src = FileSource(
        name="customer_daily_source",
        path=os.path.abspath(os.path.join(data_dir, "customers.parquet")),
        timestamp_field="event_timestamp",
        created_timestamp_column="created",
    )
    driver_stats = FeatureView(
        name="driver_stats",
        entities=[driver],
        ttl=timedelta(hours=2),
        schema=[
            Field(name="driver_id", dtype=t.Int64),
            Field(name="conv_rate", dtype=t.Float32),
            Field(name="acc_rate", dtype=t.Float32),
            Field(name="avg_daily_trips", dtype=t.Int64),
            Field(name="rating", dtype=t.Float64),
            Field(name="city", dtype=t.String),
        ],
        online=True,
        source=driver_src,
        tags={"team": "bench"},
    )
    customer_stats = FeatureView(
        name="customer_stats",
        entities=[customer],
        ttl=timedelta(days=2),
        schema=[
            Field(name="customer_id", dtype=t.Int64),
            Field(name="spend", dtype=t.Float64),
            Field(name="orders", dtype=t.Int64),
            Field(name="tier", dtype=t.String),
        ],
        online=True,
        source=customer_src,
        tags={"team": "bench"},
    )
    service = FeatureService(name="bench_service", features=[driver_stats, customer_stats])
    return [driver, customer, driver_src, customer_src, driver_stats, customer_stats, service]


def _meta(data_dir: str) -> dict:
    with open(os.path.join(data_dir, "meta.json")) as f:
        return json.load(f)


def phase_apply(
    lib, store_cls, repo: str, data_dir: str, res: dict, online_store: str = "sqlite", push: bool = False
) -> None:
    write_repo(repo, online_store)
    objs = definitions(lib, data_dir)
    if push:
        objs += push_definitions(lib, repo, objs[0])
    t0 = time.perf_counter()
    store = store_cls(repo_path=repo)
    t1 = time.perf_counter()
    res["rss_before_kib"] = _status_kib("VmRSS")
    store.apply(objs)
    t2 = time.perf_counter()
    res["seconds"] = t2 - t1
    res["init_seconds"] = t1 - t0
    res["feature_views"] = sorted(fv.name for fv in store.list_feature_views())


def phase_historical(lib, store_cls, repo: str, data_dir: str, res: dict, out: str) -> None:
    import pandas as pd

    store = store_cls(repo_path=repo)
    entity_df = pd.read_parquet(os.path.join(data_dir, "entity_df.parquet"))
    res["entity_rows"] = len(entity_df)
    res["rss_before_kib"] = _status_kib("VmRSS")
    t0 = time.perf_counter()
    df = store.get_historical_features(entity_df=entity_df, features=FEATURES).to_df()
    t1 = time.perf_counter()
    res["seconds"] = t1 - t0
    res["vm_hwm_kib"] = _status_kib("VmHWM")  # before the Parquet dump below adds its own
    res["result_rows"] = len(df)
    res["result_columns"] = list(map(str, df.columns))
    res["result_dtypes"] = {str(c): str(d) for c, d in df.dtypes.items()}
    path = os.path.splitext(out)[0] + ".parquet"
    df.reset_index(drop=True).to_parquet(path, index=False)
    res["result_parquet"] = path
    del df
    # The same call again in this process: the first one also pays each library's lazy
    # imports and first-use setup (Feast's DuckDB store imports ibis then, about 0.5-1 s),
    # so the warm figure is the retrieval alone, on both sides.
    t0 = time.perf_counter()
    df = store.get_historical_features(entity_df=entity_df, features=FEATURES).to_df()
    res["warm_seconds"] = time.perf_counter() - t0
    res["warm_rows"] = len(df)


def phase_materialize(lib, store_cls, repo: str, data_dir: str, res: dict) -> None:
    meta = _meta(data_dir)
    mins = [datetime.fromisoformat(meta[k]["min_ts"]) for k in ("drivers_table", "customers_table")]
    maxs = [datetime.fromisoformat(meta[k]["max_ts"]) for k in ("drivers_table", "customers_table")]
    start = min(mins) - timedelta(seconds=1)
    end = max(maxs) + timedelta(seconds=1)
    store = store_cls(repo_path=repo)
    res["rss_before_kib"] = _status_kib("VmRSS")
    t0 = time.perf_counter()
    store.materialize(start_date=start, end_date=end)
    t1 = time.perf_counter()
    res["seconds"] = t1 - t0
    res["start"] = start.isoformat()
    res["end"] = end.isoformat()
    res["source_rows"] = meta["drivers_table"]["rows"] + meta["customers_table"]["rows"]
    res["rows_per_second"] = res["source_rows"] / res["seconds"] if res["seconds"] else None


def _pct(sorted_ns: list, q: float) -> float:
    # nearest-rank percentile, in milliseconds
    k = max(0, min(len(sorted_ns) - 1, int(round(q / 100.0 * len(sorted_ns) + 0.5)) - 1))
    return sorted_ns[k] / 1e6


def phase_online(
    lib,
    store_cls,
    repo: str,
    data_dir: str,
    res: dict,
    rows_per_call: int,
    calls: int,
    warmup: int,
    out: str = "",
) -> None:
    meta = _meta(data_dir)
    n_drv, n_cus = meta["drivers"], meta["customers"]
    rng = random.Random(ONLINE_SEED + rows_per_call)
    # ids as generated by gen_data (existing ids only)
    from gen_data import CUSTOMER_ID_BASE, DRIVER_ID_BASE

    def rows() -> list:
        return [
            {
                "driver_id": DRIVER_ID_BASE + rng.randrange(n_drv),
                "customer_id": CUSTOMER_ID_BASE + rng.randrange(n_cus),
            }
            for _ in range(rows_per_call)
        ]

    batches = [rows() for _ in range(warmup + calls)]
    store = store_cls(repo_path=repo)
    get = store.get_online_features
    kept = []  # warm-up answers (up to ~1000 entity rows) for run.py's online cross-check
    for i, b in enumerate(batches[:warmup]):
        first = get(features=FEATURES, entity_rows=b).to_dict()
        if (i + 1) * rows_per_call <= 1000:
            kept.append(first)
    if out:
        path = os.path.splitext(out)[0] + ".answers.json"
        with open(path, "w") as f:
            json.dump(kept, f, default=str)
        res["answers_json"] = path
    res["rss_before_kib"] = _status_kib("VmRSS")
    lat = []
    pc = time.perf_counter_ns
    t_all = pc()
    for b in batches[warmup:]:
        t0 = pc()
        get(features=FEATURES, entity_rows=b).to_dict()
        lat.append(pc() - t0)
    total = (pc() - t_all) / 1e9
    lat.sort()
    res["calls"] = calls
    res["warmup"] = warmup
    res["rows_per_call"] = rows_per_call
    res["p50_ms"] = _pct(lat, 50)
    res["p90_ms"] = _pct(lat, 90)
    res["p99_ms"] = _pct(lat, 99)
    res["mean_ms"] = sum(lat) / len(lat) / 1e6
    res["max_ms"] = lat[-1] / 1e6
    res["seconds"] = total
    # sanity: how many feature values came back non-null in the last warm-up call
    nn = sum(1 for k, v in first.items() if k not in ("driver_id", "customer_id") for x in v if x is not None)
    res["warmup_last_nonnull_values"] = nn
    res["warmup_last_keys"] = sorted(first.keys())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True, choices=["tiffin", "feast"])
    ap.add_argument(
        "--phase", required=True, choices=["apply", "historical", "materialize", "online_1", "online_100"]
    )
    ap.add_argument("--repo", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--online-calls-1", type=int, default=3000)
    ap.add_argument("--online-calls-100", type=int, default=500)
    ap.add_argument("--online-warmup", type=int, default=200)
    ap.add_argument(
        "--online-store", default="sqlite", help="apply only: sqlite or redis:<connection string>"
    )
    ap.add_argument("--push", action="store_true", help="apply only: add the push source and its view")
    a = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

    res: dict = {"lib": a.lib, "phase": a.phase, "ok": False}
    t0 = time.perf_counter()
    try:
        lib = importlib.import_module(a.lib)
        res["import_seconds"] = time.perf_counter() - t0
        res["versions"] = {
            a.lib: str(getattr(lib, "__version__", None) or _version(a.lib)),
            "duckdb": _version("duckdb"),
            "pyarrow": _version("pyarrow"),
            "pandas": _version("pandas"),
            "numpy": _version("numpy"),
            "python": sys.version.split()[0],
        }
        store_cls = lib.FeatureStore
        repo = os.path.abspath(a.repo)
        if a.phase == "apply":
            phase_apply(lib, store_cls, repo, a.data, res, a.online_store, a.push)
        elif a.phase == "historical":
            phase_historical(lib, store_cls, repo, a.data, res, a.out)
        elif a.phase == "materialize":
            phase_materialize(lib, store_cls, repo, a.data, res)
        elif a.phase == "online_1":
            phase_online(lib, store_cls, repo, a.data, res, 1, a.online_calls_1, a.online_warmup, a.out)
        elif a.phase == "online_100":
            phase_online(lib, store_cls, repo, a.data, res, 100, a.online_calls_100, a.online_warmup, a.out)
        res["ok"] = True
    except BaseException as e:  # report, don't hide: run.py prints it
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()
    res.setdefault("vm_hwm_kib", _status_kib("VmHWM"))
    res["vm_hwm_end_kib"] = _status_kib("VmHWM")
    res["finished_at"] = datetime.now(timezone.utc).isoformat()
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2, default=str)
    if not res["ok"]:
        sys.stderr.write(res.get("traceback", "") + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
