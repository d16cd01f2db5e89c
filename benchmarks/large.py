"""Large-scale run: bounded memory on one machine, tiffin beside Feast 0.67.

    .venv/bin/python benchmarks/large.py [--drivers 100000] [--hours 1000] \
        [--entity-rows 5000000] [--libs tiffin,feast] [--feast-timeout 1800] \
        [--layouts time,key,shuffled] [--phases persist,to_arrow,to_df,materialize]

run.py calls this for its ``large`` phase; alone it writes a run file with a ``large``
section (benchmarks/results/<date>-<commit>.json and .md, see record.py).

Workload: one hourly driver source of ``drivers x hours`` rows (100M by default:
100,000 drivers x 1,000 hours, ~2% of rows missing), written as one Parquet file per
100 hours, and an entity frame of 5M rows with random drivers and times. One feature
view (5 features, ttl 2 h). The same rows are laid out three ways, since memory and
speed of a point-in-time join depend on it: ``time`` (as generated: hour by hour),
``key`` (one file sorted by driver then time, as a per-entity export would be) and
``shuffled`` (one file in a hash order of driver and time: no order at all).

Phases, each in a fresh child process with the same feature repo layout as side.py
(duckdb offline store with its defaults, sqlite online store):

* to_arrow: ``get_historical_features(entity_df, 5 features).to_arrow()`` then
  ``pyarrow.parquet.write_table``, the same calls for both libraries (the two training
  sets are then compared row by row);
* to_df: ``get_historical_features(...).to_df()``, the same call for both;
* persist: tiffin's ``RetrievalJob.persist(path)``, its streaming path (Feast's
  ``persist`` needs a saved-dataset storage and goes through a DataFrame; to_arrow is
  the like-for-like pair);
* materialize: the whole source into SQLite (tiffin with its CLI progress reporting).

The parent samples the child's process-tree RSS every 0.2 s: the peak reported is
the larger of that and the child's own VmHWM. A child is stopped when its tree
passes ``--memory-cap`` (default 16 GiB, so the machine stays usable) or the time
limit; the report says which.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

GEN_VERSION = 1
SEED = 424242
DRIVER_ID_BASE = 1_000
HOURS_PER_FILE = 100
US_PER_HOUR = 3_600_000_000
FEATURES = [
    "driver_stats:conv_rate",
    "driver_stats:acc_rate",
    "driver_stats:avg_daily_trips",
    "driver_stats:rating",
    "driver_stats:city",
]

FEATURE_STORE_YAML = """\
project: large
registry: data/registry.db
provider: local
online_store:
  type: sqlite
  path: data/online.db
offline_store:
  type: duckdb
entity_key_serialization_version: 3
"""


# --------------------------------------------------------------------------- data


def generate(data_dir: str, drivers: int, hours: int, entity_rows: int) -> dict:
    """Write (or reuse) the large source and entity frame; numpy and pyarrow only."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    want = {
        "gen_version": GEN_VERSION,
        "seed": SEED,
        "drivers": drivers,
        "hours": hours,
        "entity_rows": entity_rows,
    }
    meta_path = os.path.join(data_dir, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if all(meta.get(k) == v for k, v in want.items()):
            return meta | {"reused": True}
    shutil.rmtree(data_dir, ignore_errors=True)
    src_dir = os.path.join(data_dir, "drivers")
    os.makedirs(src_dir)
    rng = np.random.default_rng(SEED)
    # Fixed in time: the large run checks memory and speed, not ttl on online reads.
    start = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000
    cities = np.array(
        [
            "Amsterdam",
            "Berlin",
            "Chennai",
            "Delhi",
            "Lagos",
            "Lima",
            "Lisbon",
            "Madrid",
            "Mumbai",
            "Oslo",
            "Paris",
            "Seoul",
            "Tokyo",
        ],
        dtype=object,
    )
    ts_type = pa.timestamp("us", tz="UTC")
    rows = 0
    for first in range(0, hours, HOURS_PER_FILE):
        n_hours = min(HOURS_PER_FILE, hours - first)
        path = os.path.join(src_dir, f"part-{first // HOURS_PER_FILE:04d}.parquet")
        with pq.ParquetWriter(
            path,
            pa.schema(
                [
                    ("driver_id", pa.int64()),
                    ("event_timestamp", ts_type),
                    ("created", ts_type),
                    ("conv_rate", pa.float32()),
                    ("acc_rate", pa.float32()),
                    ("avg_daily_trips", pa.int64()),
                    ("rating", pa.float64()),
                    ("city", pa.string()),
                ]
            ),
        ) as w:
            for h in range(first, first + n_hours):
                keep = np.flatnonzero(rng.random(drivers) >= 0.02)
                n = keep.size
                event = np.full(n, start + h * US_PER_HOUR, dtype=np.int64)
                created = event + rng.integers(0, 3_600, n) * 1_000_000
                w.write_table(
                    pa.table(
                        {
                            "driver_id": pa.array(DRIVER_ID_BASE + keep, pa.int64()),
                            "event_timestamp": pa.array(event, pa.int64()).cast(ts_type),
                            "created": pa.array(created, pa.int64()).cast(ts_type),
                            "conv_rate": pa.array(rng.random(n, dtype=np.float32)),
                            "acc_rate": pa.array(rng.random(n, dtype=np.float32)),
                            "avg_daily_trips": pa.array(rng.integers(0, 1_000, n), pa.int64()),
                            "rating": pa.array(np.round(rng.uniform(1.0, 5.0, n), 3)),
                            "city": pa.array(cities[rng.integers(0, cities.size, n)], pa.string()),
                        }
                    ),
                    row_group_size=1_000_000,
                )
                rows += n
    ts = start + rng.integers(0, hours * US_PER_HOUR, entity_rows)
    pq.write_table(
        pa.table(
            {
                "row_id": pa.array(np.arange(entity_rows, dtype=np.int64)),
                "driver_id": pa.array(DRIVER_ID_BASE + rng.integers(0, drivers, entity_rows), pa.int64()),
                "event_timestamp": pa.array(ts, pa.int64()).cast(ts_type),
            }
        ),
        os.path.join(data_dir, "entity_df.parquet"),
        row_group_size=1_000_000,
    )
    meta = want | {
        "source_rows": rows,
        "min_ts": datetime.fromtimestamp(start / 1e6, timezone.utc).isoformat(),
        "max_ts": datetime.fromtimestamp((start + (hours - 1) * US_PER_HOUR) / 1e6, timezone.utc).isoformat(),
    }
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2)
    return meta | {"reused": False}


# --------------------------------------------------------------------------- child


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def child(lib_name: str, phase: str, repo: str, data: str, out: str) -> int:
    import importlib
    import traceback

    res: dict = {"lib": lib_name, "phase": phase, "ok": False}
    try:
        lib = importlib.import_module(lib_name)
        t = importlib.import_module(lib_name + ".types")
        with open(os.path.join(data, "meta.json")) as f:
            meta = json.load(f)
        if phase == "apply":
            os.makedirs(os.path.join(repo, "data"), exist_ok=True)
            with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
                f.write(FEATURE_STORE_YAML)
        store = lib.FeatureStore(repo_path=repo)
        if phase == "apply":
            driver = lib.Entity(name="driver", join_keys=["driver_id"], value_type=lib.ValueType.INT64)
            # A glob: Feast's DuckDB store reads no directories (its reader returns None).
            src = lib.FileSource(
                name="drivers",
                path=os.path.join(data, "drivers", "*.parquet"),
                timestamp_field="event_timestamp",
                created_timestamp_column="created",
            )
            view = lib.FeatureView(
                name="driver_stats",
                entities=[driver],
                ttl=timedelta(hours=2),
                schema=[
                    lib.Field(name="driver_id", dtype=t.Int64),
                    lib.Field(name="conv_rate", dtype=t.Float32),
                    lib.Field(name="acc_rate", dtype=t.Float32),
                    lib.Field(name="avg_daily_trips", dtype=t.Int64),
                    lib.Field(name="rating", dtype=t.Float64),
                    lib.Field(name="city", dtype=t.String),
                ],
                source=src,
                online=True,
            )
            t0 = time.perf_counter()
            store.apply([driver, src, view])
            res["seconds"] = time.perf_counter() - t0
        elif phase in ("persist", "to_arrow", "to_df"):
            import pyarrow.parquet as pq

            # Read before the clock starts; each library gets the frame type it documents.
            if lib_name == "tiffin":
                entity = pq.read_table(os.path.join(data, "entity_df.parquet"))
            else:
                import pandas as pd

                entity = pd.read_parquet(os.path.join(data, "entity_df.parquet"))
            out_path = os.path.join(repo, f"training-{phase}.parquet")
            if os.path.exists(out_path):
                os.remove(out_path)
            t0 = time.perf_counter()
            job = store.get_historical_features(entity_df=entity, features=FEATURES)
            if phase == "persist":
                if lib_name != "tiffin":
                    raise SystemExit("persist is tiffin's streaming path only")
                job.persist(out_path)
            elif phase == "to_arrow":
                pq.write_table(job.to_arrow(), out_path)
            else:
                res["result_rows"] = len(job.to_df())
            res["seconds"] = time.perf_counter() - t0
            if phase != "to_df":
                res["result_rows"] = pq.ParquetFile(out_path).metadata.num_rows
                res["result_parquet"] = out_path
        elif phase == "materialize":
            start = datetime.fromisoformat(meta["min_ts"]) - timedelta(seconds=1)
            end = datetime.fromisoformat(meta["max_ts"]) + timedelta(seconds=1)
            t0 = time.perf_counter()
            if lib_name == "tiffin":
                done = [0]

                def progress(view: str, n: int) -> None:  # what the CLI's progress bar gets
                    done[0] += n

                store.materialize(start, end, progress=progress)
                res["progress_rows"] = done[0]
            else:
                store.materialize(start_date=start, end_date=end)
            res["seconds"] = time.perf_counter() - t0
            res["source_rows"] = meta["source_rows"]
            res["rows_per_second"] = meta["source_rows"] / res["seconds"]
        res["ok"] = True
    except BaseException as e:  # report it; the parent prints it
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()
    res["vm_hwm_kib"] = _status_kib("VmHWM")
    with open(out, "w") as f:
        json.dump(res, f, indent=2, default=str)
    return 0 if res["ok"] else 1


# --------------------------------------------------------------------------- parent


def tree_rss_kib(pid: int) -> int:
    from serve import tree_rss_kib as rss

    return rss(pid)


def run_child(
    python: str,
    env: dict,
    lib: str,
    phase: str,
    repo: str,
    data: str,
    work: str,
    timeout_s: float,
    cap_kib: int,
) -> dict:
    out = os.path.join(work, f"{lib}-{phase}.json")
    log = os.path.join(work, f"{lib}-{phase}.log")
    if os.path.exists(out):
        os.remove(out)
    cmd = [python, os.path.abspath(__file__), "--child", lib, phase, repo, data, out]
    peak, stopped = 0, None
    with open(log, "w") as lf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True
        )
        while proc.poll() is None:
            peak = max(peak, tree_rss_kib(proc.pid))
            if peak > cap_kib:
                stopped = f"stopped: memory passed the {cap_kib / 1048576:.0f} GiB cap"
            elif time.perf_counter() - t0 > timeout_s:
                stopped = f"stopped: no result after {timeout_s:.0f} s"
            if stopped:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.2)
        wall = time.perf_counter() - t0
    res: dict = {}
    if os.path.exists(out):
        with open(out) as f:
            res = json.load(f)
    res.setdefault("ok", False)
    if stopped:
        res["ok"], res["error"] = False, stopped
    elif not res.get("ok") and "error" not in res:
        with open(log) as f:
            res["error"] = f"child exited with {proc.returncode}: {f.read()[-2000:]}"
    res["peak_rss_mib"] = max(peak, res.get("vm_hwm_kib", 0)) / 1024
    res["wall_seconds"] = wall
    res["log"] = os.path.relpath(log, ROOT)
    return res


def compare(paths: dict[str, str]) -> dict:
    """Both training sets, row by row (aligned by row_id), values compared exactly."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET memory_limit = '3GB'")
    a, b = paths["tiffin"], paths["feast"]
    cols = ["conv_rate", "acc_rate", "avg_daily_trips", "rating", "city"]
    diff = " OR ".join(f"(t.{c} IS DISTINCT FROM f.{c})" for c in cols)
    n_t, n_f = (con.execute(f"SELECT count(*) FROM '{p}'").fetchone()[0] for p in (a, b))
    bad = con.execute(
        f"SELECT count(*) FROM '{a}' t FULL JOIN '{b}' f USING (row_id) "
        f"WHERE {diff} OR t.row_id IS NULL OR f.row_id IS NULL"
    ).fetchone()[0]
    return {"rows": {"tiffin": n_t, "feast": n_f}, "mismatching_rows": bad, "exact": bad == 0 and n_t == n_f}


LAYOUTS = ("time", "key", "shuffled")
PHASES = ("persist", "to_arrow", "to_df", "materialize")


def layout_data(data: str, layout: str) -> str:
    """The generated rows in another order, beside them (made once, reused): ``key`` sorted
    by driver then time, ``shuffled`` in a hash order of both. One file with 1M-row row
    groups, so only the order differs from the time-ordered files."""
    if layout == "time":
        return data
    out = f"{data}-{layout}"
    with open(os.path.join(data, "meta.json")) as f:
        meta = json.load(f)
    meta_path = os.path.join(out, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            if json.load(f) == meta | {"layout": layout}:
                return out
    import duckdb

    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "drivers"))
    order = "driver_id, event_timestamp" if layout == "key" else "hash(driver_id, event_timestamp)"
    con = duckdb.connect()
    con.execute("SET memory_limit = '3GB'")
    con.execute("SET preserve_insertion_order = true")
    con.execute(f"SET temp_directory = '{os.path.join(out, '.tmp')}'")
    con.execute(
        f"COPY (SELECT * FROM read_parquet('{os.path.join(data, 'drivers', '*.parquet')}') "
        f"ORDER BY {order}) TO '{os.path.join(out, 'drivers', 'part-0000.parquet')}' "
        "(FORMAT parquet, ROW_GROUP_SIZE 1000000)"
    )
    con.close()
    shutil.rmtree(os.path.join(out, ".tmp"), ignore_errors=True)
    shutil.copy(os.path.join(data, "entity_df.parquet"), os.path.join(out, "entity_df.parquet"))
    with open(meta_path, "w") as f:
        json.dump(meta | {"layout": layout}, f, indent=2)
    return out


def run(
    pythons: dict,
    envs: dict,
    libs: list[str],
    work: str,
    data: str,
    meta: dict,
    timeout_s: float,
    feast_timeout_s: float,
    cap_gib: float,
    phases: tuple[str, ...] = PHASES,
    layouts: tuple[str, ...] = LAYOUTS,
) -> dict:
    report: dict = {"data": {k: v for k, v in meta.items() if k != "reused"}, "layouts": {}}
    for layout in layouts:
        t0 = time.perf_counter()
        ldata = layout_data(data, layout)
        print(f"[{datetime.now():%H:%M:%S}] large layout {layout}: {ldata} "
              f"({time.perf_counter() - t0:.0f} s to prepare)", flush=True)
        results: dict = {}
        report["layouts"][layout] = {"results": results}
        for lib in libs:
            repo = os.path.join(work, layout, lib)
            shutil.rmtree(repo, ignore_errors=True)
            os.makedirs(repo)
            results[lib] = {}
            for phase in ("apply", *phases):
                if phase == "persist" and lib != "tiffin":
                    continue
                limit = feast_timeout_s if lib == "feast" else timeout_s
                print(f"[{datetime.now():%H:%M:%S}] large {layout:8s} {lib:6s} {phase} ...", end=" ",
                      flush=True)
                r = run_child(
                    pythons[lib], envs[lib], lib, phase, repo, ldata, work, limit, int(cap_gib * 1048576)
                )
                results[lib][phase] = r
                if r.get("ok"):
                    print(f"{r['seconds']:.1f} s, peak RSS {r['peak_rss_mib']:,.0f} MiB", flush=True)
                else:
                    print(
                        f"FAILED ({r.get('error', '')[:300]}), peak RSS {r['peak_rss_mib']:,.0f} MiB",
                        flush=True,
                    )
                    if phase == "apply":
                        break
        arrow = {lib: results.get(lib, {}).get("to_arrow", {}) for lib in ("tiffin", "feast")}
        if all(h.get("ok") for h in arrow.values()):
            report["layouts"][layout]["exactness"] = compare(
                {lib: h["result_parquet"] for lib, h in arrow.items()})
    return report


def render_md(report: dict) -> str:
    d = report["data"]
    lines = [
        f"Large run: {d['source_rows']:,} source rows ({d['drivers']:,} drivers x {d['hours']:,} hours), "
        f"{d['entity_rows']:,} entity rows. Peak RSS is the child process tree's.",
        "",
        "| layout | phase | tiffin s | tiffin peak RSS MiB | Feast s | Feast peak RSS MiB "
        "| tiffin/Feast time |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for layout, part in report["layouts"].items():
        results = part["results"]
        for phase in PHASES:
            if not any(phase in results.get(lib, {}) for lib in ("tiffin", "feast")):
                continue
            cells = []
            for lib in ("tiffin", "feast"):
                r = results.get(lib, {}).get(phase)
                if r is None:
                    cells += ["-", "-"]
                elif r.get("ok"):
                    cells += [f"{r['seconds']:.1f}", f"{r['peak_rss_mib']:,.0f}"]
                else:
                    cells += [r.get("error", "FAILED").split("\n")[0][:80], f"{r['peak_rss_mib']:,.0f}"]
            t, f = (results.get(lib, {}).get(phase) or {} for lib in ("tiffin", "feast"))
            ratio = f"{t['seconds'] / f['seconds']:.2f}x" if t.get("ok") and f.get("ok") else "-"
            lines.append(f"| {layout} | {phase} | " + " | ".join(cells) + f" | {ratio} |")
        for lib in ("tiffin", "feast"):
            r = results.get(lib, {}).get("materialize")
            if r and r.get("ok"):
                notes.append(f"- {layout}, materialize {lib}: {r['rows_per_second']:,.0f} source rows/s")
        ex = part.get("exactness")
        if ex:
            notes.append(
                f"- {layout}, to_arrow training sets: {ex['mismatching_rows']} mismatching rows of "
                f"{ex['rows']['tiffin']:,} ({'exact' if ex['exact'] else 'NOT exact'})"
            )
    return "\n".join(lines + notes) + "\n"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(*sys.argv[2:7])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drivers", type=int, default=100_000)
    ap.add_argument("--hours", type=int, default=1_000)
    ap.add_argument("--entity-rows", type=int, default=5_000_000)
    ap.add_argument("--libs", default="tiffin,feast")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--feast-timeout", type=float, default=1800)
    ap.add_argument("--memory-cap", type=float, default=16, help="GiB")
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--layouts", default=",".join(LAYOUTS))
    ap.add_argument("--work", default=os.path.join(HERE, ".work"))
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    import record

    run_info = record.start(os.path.basename(__file__), a)
    import run as runner

    tag = f"large-{a.drivers}x{a.hours}-{a.entity_rows}"
    data = os.path.join(HERE, ".data", tag)
    t0 = time.perf_counter()
    meta = generate(data, a.drivers, a.hours, a.entity_rows)
    print(f"data: {data} ({'reused' if meta['reused'] else 'generated'} in {time.perf_counter() - t0:.0f} s)")
    libs = [x for x in a.libs.split(",") if x]
    pythons = {
        "tiffin": os.path.join(ROOT, ".venv", "bin", "python"),
        "feast": os.path.join(ROOT, ".venv-feast", "bin", "python"),
    }
    pycache = os.path.join(os.path.abspath(a.work), "pycache")
    envs = {lib: runner.child_env(pycache) for lib in libs}
    work = os.path.join(os.path.abspath(a.work), tag)
    os.makedirs(work, exist_ok=True)
    report = run(
        pythons,
        envs,
        libs,
        work,
        data,
        meta,
        a.timeout,
        a.feast_timeout,
        a.memory_cap,
        tuple(x for x in a.phases.split(",") if x),
        tuple(x for x in a.layouts.split(",") if x),
    )
    report["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    md = render_md(report)
    path = record.write(run_info, {"large": report}, [f"## Large scale\n\n{md}"], a.results)
    print("\n" + md + f"\nwrote {os.path.relpath(path, ROOT)} and its .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
