"""Historical retrieval on the PostgreSQL and Spark offline stores, tiffin beside Feast 0.67.

    .venv/bin/python benchmarks/backends.py [--scale 0.1] [--backends postgres,spark]

run.py calls this for its ``backends`` phase; alone it writes a run file with a
``backends`` section (benchmarks/results/<date>-<commit>.json and .md, see record.py).

Same definitions and data as the main benchmark (side.py, gen_data.py), at a smaller
scale by default (0.1: 650k driver rows, 600k customer rows, 100k entity rows): both
libraries' PostgreSQL and Spark stores run the join inside the engine, and the
engines, not the libraries, set the pace at full size. For PostgreSQL, the two Parquet
sources are loaded into tables of a ``tiffin_bench`` schema of the local server
(127.0.0.1:5432, user postgres) and each side's source is ``PostgreSQLSource(table=...)``;
for Spark (local[2]), ``SparkSource(path=..., file_format="parquet")``. Each side's
``get_historical_features(entity_df, 8 features).to_df()`` runs in a fresh child
process; the training sets are compared row by row, with each other and with tiffin's
DuckDB result on the same data. Spark is timed cold and warm, from the same state on
both sides (see run_spark).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import gen_data  # noqa: E402

PG = {"host": "127.0.0.1", "port": 5432, "database": "postgres", "user": "postgres"}
# TIFFIN_BENCH_PG_SCHEMA: another schema, so that runs side by side do not share tables.
SCHEMA = os.environ.get("TIFFIN_BENCH_PG_SCHEMA", "tiffin_bench")
PG_URI = " ".join(f"{k}={v}" for k, v in {"host": PG["host"], "port": PG["port"],
                                            "dbname": PG["database"], "user": PG["user"]}.items())
SPARK_CONF = {
    "spark.master": "local[2]",
    "spark.sql.shuffle.partitions": "8",
    "spark.ui.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "4g",
    # tiffin turns Arrow on in its own sessions; Feast's Spark documentation sets it in
    # spark_conf. Given here, both sides move pandas <-> Spark the same way.
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def yaml_for(backend: str) -> str:
    head = (
        "project: bench\nregistry: data/registry.db\nprovider: local\n"
        "online_store:\n  type: sqlite\n  path: data/online.db\nentity_key_serialization_version: 3\n"
    )
    if backend == "postgres":
        return (
            head
            + "offline_store:\n  type: postgres\n"
            + "".join(f"  {k}: {v}\n" for k, v in PG.items())
            + f'  db_schema: {SCHEMA}\n  password: ""\n'
            "  sslmode: disable\n"
        )
    if backend == "spark":
        return (
            head
            + "offline_store:\n  type: spark\n  spark_conf:\n"
            + "".join(f'    {k}: "{v}"\n' for k, v in SPARK_CONF.items())
        )
    return head + "offline_store:\n  type: duckdb\n"


def load_postgres(data: str) -> None:
    """The two sources as tables (COPY from the Parquet files), once per data set."""
    import psycopg
    import pyarrow.parquet as pq

    types = {
        "int64": "BIGINT",
        "float": "REAL",
        "double": "DOUBLE PRECISION",
        "string": "TEXT",
        "large_string": "TEXT",
        "timestamp[us, tz=UTC]": "TIMESTAMPTZ",
    }
    with psycopg.connect(
        host=PG["host"], port=PG["port"], dbname=PG["database"], user=PG["user"], autocommit=True
    ) as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        for name in ("drivers", "customers"):
            table = pq.read_table(os.path.join(data, f"{name}.parquet"))
            stamp = os.path.getmtime(os.path.join(data, f"{name}.parquet"))
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA}.loaded (name TEXT PRIMARY KEY, stamp DOUBLE PRECISION)"
            )
            row = con.execute(f"SELECT stamp FROM {SCHEMA}.loaded WHERE name = %s", (name,)).fetchone()
            if row and row[0] == stamp:
                continue
            cols = ", ".join(f'"{f.name}" {types[str(f.type)]}' for f in table.schema)
            con.execute(f"DROP TABLE IF EXISTS {SCHEMA}.{name}")
            con.execute(f"CREATE TABLE {SCHEMA}.{name} ({cols})")
            with con.cursor().copy(f"COPY {SCHEMA}.{name} FROM STDIN") as cp:
                for batch in table.to_batches(100_000):
                    for r in zip(*(c.to_pylist() for c in batch.columns)):
                        cp.write_row(r)
            con.execute(f"ANALYZE {SCHEMA}.{name}")
            con.execute(
                f"INSERT INTO {SCHEMA}.loaded VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                "SET stamp = EXCLUDED.stamp",
                (name, stamp),
            )


def _fetch_adbc(database, sql: str) -> int:
    """Rows of ``sql`` through ADBC's PostgreSQL driver, as the offline store reads them:
    a connection made from ``database`` (which read the type catalog once)."""
    from tiffin.offline.postgres.store import RowsSession

    con = RowsSession(database)
    try:
        return sum(b.num_rows for b in con.query(sql))
    finally:
        con.close()


def _fetch_copy_csv(sql: str, batch_rows: int = 65_536) -> int:
    """Rows of ``sql`` the way tiffin read them before ADBC: ``COPY ... (FORMAT csv)``,
    ``batch_rows`` messages at a time parsed by Arrow's CSV reader into the columns' types."""
    import psycopg
    import pyarrow as pa
    import pyarrow.csv as pacsv

    by_oid = {20: pa.int64(), 23: pa.int32(), 700: pa.float32(), 701: pa.float64(),
              1114: pa.timestamp("us"), 1184: pa.timestamp("us", "UTC")}
    with psycopg.connect(PG_URI, autocommit=True) as con:
        desc = con.execute(f"SELECT * FROM ({sql}) AS q LIMIT 0").description
        names = [f"c{i}" for i in range(len(desc))]
        read = pacsv.ReadOptions(column_names=names, use_threads=False)
        parse = pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False)
        convert = pacsv.ConvertOptions(
            column_types={n: by_oid.get(d.type_code, pa.string()) for n, d in zip(names, desc)},
            null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False)
        rows, buf, n = 0, bytearray(), 0

        def parse_rows(data: bytearray) -> int:
            return pacsv.read_csv(pa.py_buffer(data), read_options=read, parse_options=parse,
                                  convert_options=convert).num_rows

        with con.cursor().copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
            for row in copy:
                buf += row
                n += 1
                if n >= batch_rows:
                    rows += parse_rows(buf)
                    buf, n = bytearray(), 0
        return rows + (parse_rows(buf) if n else 0)


def pg_fetch_comparison(result_parquet: str, rounds: int = 5) -> dict:
    """Fetch alone, ADBC vs the hand-written COPY CSV reader tiffin had before, taken in
    turn (A B, B A, ...): the tiffin training set (loaded into a table) and the driver
    source table. Each fetch opens its own connection, as a job does."""
    import adbc_driver_manager
    import adbc_driver_postgresql
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(result_parquet)
    table = table.replace_schema_metadata(None).cast(pa.schema([
        pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else
                 pa.timestamp("us", f.type.tz) if pa.types.is_timestamp(f.type) else f.type)
        for f in table.schema]))
    t0 = time.perf_counter()
    database = adbc_driver_postgresql.connect(PG_URI)
    out: dict = {"rounds": rounds, "adbc_first_connection_seconds": time.perf_counter() - t0}
    con = adbc_driver_manager.AdbcConnection(database)
    st = adbc_driver_manager.AdbcStatement(con)
    st.set_options(**{adbc_driver_manager.INGEST_OPTION_TARGET_TABLE: "training_set",
                      "adbc.ingest.target_db_schema": SCHEMA,
                      adbc_driver_manager.INGEST_OPTION_MODE: "adbc.ingest.mode.replace"})
    st.bind_stream(table)
    st.execute_update()
    st.close()
    con.close()
    for what, sql in (("training_set", f"SELECT * FROM {SCHEMA}.training_set"),
                      ("driver_source", f"SELECT * FROM {SCHEMA}.drivers")):
        paths = {"adbc": lambda q: _fetch_adbc(database, q), "copy_csv": _fetch_copy_csv}
        times: dict = {k: [] for k in paths}
        rows = set()
        for i in range(rounds):
            for name in (("adbc", "copy_csv") if i % 2 == 0 else ("copy_csv", "adbc")):
                t0 = time.perf_counter()
                rows.add(paths[name](sql))
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        out[what] = {"rows": rows.pop() if len(rows) == 1 else sorted(rows),
                     "seconds": times, "median_seconds": med,
                     "copy_csv_over_adbc": med["copy_csv"] / med["adbc"]}
    database.close()
    return out


# --------------------------------------------------------------------------- child


def child(lib_name: str, backend: str, repo: str, data: str, out: str) -> int:
    res: dict = {"lib": lib_name, "backend": backend, "ok": False}
    try:
        from side import FEATURES, definitions

        lib = importlib.import_module(lib_name)
        os.makedirs(os.path.join(repo, "data"), exist_ok=True)
        with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
            f.write(yaml_for(backend))
        objs = definitions(lib, data)
        if backend != "duckdb":
            driver, customer, _, _, dv, cv, _svc = objs
            if backend == "postgres":
                if lib_name == "tiffin":
                    Source = lib.PostgreSQLSource
                else:
                    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
                        PostgreSQLSource as Source,
                    )
                srcs = [
                    Source(
                        name=f"{n}_pg",
                        table=f"{SCHEMA}.{n}",
                        timestamp_field="event_timestamp",
                        created_timestamp_column="created",
                    )
                    for n in ("drivers", "customers")
                ]
            else:
                srcs = spark_sources(lib, lib_name, data)
            views = []
            for v, src, ent in ((dv, srcs[0], driver), (cv, srcs[1], customer)):
                views.append(
                    lib.FeatureView(
                        name=v.name, entities=[ent], ttl=v.ttl, schema=v.schema, source=src, online=False
                    )
                )
            objs = [driver, customer, *srcs, *views]
        store = lib.FeatureStore(repo_path=repo)
        store.apply(objs)
        import pandas as pd

        entity = pd.read_parquet(os.path.join(data, "entity_df.parquet"))
        t0 = time.perf_counter()
        df = store.get_historical_features(entity_df=entity, features=FEATURES).to_df()
        res["seconds"] = time.perf_counter() - t0
        res["rows"] = len(df)
        path = os.path.splitext(out)[0] + ".parquet"
        df.reset_index(drop=True).to_parquet(path, index=False)
        res["result_parquet"] = path
        res["ok"] = True
    except BaseException as e:
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                res["vm_hwm_kib"] = int(line.split()[1])
    with open(out, "w") as f:
        json.dump(res, f, indent=2, default=str)
    return 0 if res["ok"] else 1


# --------------------------------------------------------------------------- Spark
#
# Both sides are timed from the same state. `apply` runs in a process of its own (tiffin's
# apply reads the sources' schemas through Spark and so starts the JVM; Feast's does not),
# then a fresh process per side times:
#   cold: the first get_historical_features(...).to_df(): JVM and session start, the
#         query, and the result as pandas;
#   warm: the same call again in that process, with the session up.
# Before any of it each virtualenv starts and stops one Spark session, untimed, so that
# both sides' Spark jars and the data files are in the OS page cache: cold means a new
# JVM, not a cold disk.

SPARK_PRIME = (
    "from pyspark.sql import SparkSession\n"
    "s = SparkSession.builder.master('local[1]').config('spark.ui.enabled', 'false').getOrCreate()\n"
    "s.range(10).count()\n"
    "s.stop()\n"
)


def spark_sources(lib, lib_name: str, data: str) -> list:
    if lib_name == "tiffin":
        Source = lib.SparkSource
    else:
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
            SparkSource as Source,
        )
    return [
        Source(
            name=f"{n}_spark",
            path=os.path.abspath(os.path.join(data, f"{n}.parquet")),
            file_format="parquet",
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        )
        for n in ("drivers", "customers")
    ]


def spark_objects(lib, lib_name: str, data: str) -> list:
    from side import definitions

    driver, customer, _, _, dv, cv, _svc = definitions(lib, data)
    srcs = spark_sources(lib, lib_name, data)
    views = [
        lib.FeatureView(name=v.name, entities=[e], ttl=v.ttl, schema=v.schema, source=s, online=False)
        for v, s, e in ((dv, srcs[0], driver), (cv, srcs[1], customer))
    ]
    return [driver, customer, *srcs, *views]


def _spark_session_info() -> dict | None:
    """The running session's settings that bear on speed, or None when none is running."""
    if "pyspark.sql" not in sys.modules:
        return None
    from pyspark.sql import SparkSession

    s = SparkSession.getActiveSession()
    if s is None:
        return None
    keys = ("spark.master", "spark.sql.shuffle.partitions", "spark.sql.execution.arrow.pyspark.enabled",
            "spark.driver.memory")
    return {"version": s.version, **{k: s.conf.get(k, None) for k in keys}}


def spark_child(lib_name: str, step: str, repo: str, data: str, out: str) -> int:
    res: dict = {"lib": lib_name, "backend": "spark", "step": step, "ok": False}
    try:
        import pandas as pd
        import pyarrow.parquet as pq
        from side import FEATURES

        lib = importlib.import_module(lib_name)
        if step == "apply":
            os.makedirs(os.path.join(repo, "data"), exist_ok=True)
            with open(os.path.join(repo, "feature_store.yaml"), "w") as f:
                f.write(yaml_for("spark"))
            objs = spark_objects(lib, lib_name, data)
            store = lib.FeatureStore(repo_path=repo)
            t0 = time.perf_counter()
            store.apply(objs)
            res["seconds"] = time.perf_counter() - t0
            res["started_spark"] = _spark_session_info() is not None
        elif step == "retrieve":
            store = lib.FeatureStore(repo_path=repo)
            entity = pd.read_parquet(os.path.join(data, "entity_df.parquet"))
            res["session_before_cold"] = _spark_session_info()  # None, or cold is not cold
            base = os.path.splitext(out)[0]
            for run_name in ("cold", "warm"):
                t0 = time.perf_counter()
                df = store.get_historical_features(entity_df=entity, features=FEATURES).to_df()
                res[f"{run_name}_seconds"] = time.perf_counter() - t0
                res[f"vm_hwm_after_{run_name}_kib"] = _vm_hwm_kib()
                res[f"{run_name}_rows"] = len(df)
                df.reset_index(drop=True).to_parquet(f"{base}.{run_name}.parquet", index=False)
                if run_name == "cold":
                    res["result_dtypes"] = {str(c): str(d) for c, d in df.dtypes.items()}
                del df
            res["result_parquet"] = f"{base}.cold.parquet"
            cold, warm = (pq.read_table(f"{base}.{x}.parquet").sort_by("row_id") for x in ("cold", "warm"))
            res["warm_same_as_cold"] = cold.equals(warm)
            res["spark_session"] = _spark_session_info()
        else:
            raise ValueError(f"unknown step {step!r}")
        res["ok"] = True
    except BaseException as e:
        res["error"] = f"{type(e).__name__}: {e}"
        res["traceback"] = traceback.format_exc()
    res["vm_hwm_kib"] = _vm_hwm_kib()
    with open(out, "w") as f:
        json.dump(res, f, indent=2, default=str)
    return 0 if res["ok"] else 1


def _vm_hwm_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return -1


def _tree_sample(pid: int) -> tuple[int, dict[int, int]]:
    """RSS (KiB) of ``pid`` and its descendants (Spark's JVM is one), and each one's CPU
    ticks so far: the parent keeps the last value seen per process, the JVM included."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
            except (OSError, IndexError, ValueError):
                continue
    rss, ticks, todo = 0, {}, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks[p] = int(fields[11]) + int(fields[12])  # utime + stime
            with open(f"/proc/{p}/status") as f:
                rss += next((int(x.split()[1]) for x in f if x.startswith("VmRSS:")), 0)
        except (OSError, IndexError, ValueError):
            pass
    return rss, ticks


def spawn(cmd: list[str], env: dict, log: str, timeout_s: float) -> dict:
    """Run one child in its own session; its tree's peak RSS, CPU time, and the CPU time
    the rest of the machine used meanwhile (a busy neighbour skews a 2-core box)."""
    from run import _cpu_busy_seconds

    peak, ticks = 0, {}
    busy0, t0 = _cpu_busy_seconds(), time.perf_counter()
    with open(log, "w") as lf:
        proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)
        timed_out = False
        while proc.poll() is None:
            rss, seen = _tree_sample(proc.pid)
            peak = max(peak, rss)
            ticks.update(seen)
            if time.perf_counter() - t0 > timeout_s:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)  # the JVM too
                proc.wait()
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    cpu = sum(ticks.values()) / os.sysconf("SC_CLK_TCK")
    return {
        "exit_code": proc.returncode,
        "timed_out": timed_out,
        "process_wall_seconds": wall,
        "tree_cpu_seconds": cpu,
        "other_cpu_seconds": max(0.0, _cpu_busy_seconds() - busy0 - cpu),
        "peak_tree_rss_kib": peak,
        "log": os.path.relpath(log, ROOT),
    }


def _load(out: str, proc: dict) -> dict:
    res = {"ok": False, "error": f"no result (exit {proc['exit_code']})"}
    if os.path.exists(out):
        with open(out) as f:
            res = json.load(f)
    if proc["timed_out"]:
        res["ok"], res["error"] = False, "stopped at the time limit"
    return {**res, **proc}


def run_spark(
    data: str, work: str, pythons: dict, envs: dict, libs: list[str], timeout_s: float, rounds: int = 1
) -> dict:
    """Spark's cold and warm retrievals, per side; ``rounds`` fresh processes per side, the
    sides' order alternating from round to round; figures are the rounds' medians."""
    import statistics

    from run import warm_page_cache

    me = os.path.abspath(__file__)
    sides: dict = {lib: {"rounds": []} for lib in libs}
    warm_page_cache(data)
    for lib in libs:
        t0 = time.perf_counter()
        try:
            p = subprocess.run([pythons[lib], "-c", SPARK_PRIME], env=envs[lib], cwd=ROOT,
                               capture_output=True, text=True, timeout=timeout_s)
            if p.returncode:
                sides[lib]["prime_error"] = p.stderr[-2000:]
        except subprocess.TimeoutExpired:
            sides[lib]["prime_error"] = f"no Spark session within {timeout_s:.0f} s"
        sides[lib]["prime_seconds"] = time.perf_counter() - t0
    for lib in libs:
        repo = os.path.join(work, f"spark-{lib}")
        shutil.rmtree(repo, ignore_errors=True)
        os.makedirs(repo)
        out = os.path.join(work, f"spark-{lib}-apply.json")
        print(f"[{datetime.now():%H:%M:%S}] spark    {lib:6s} apply ...", end=" ", flush=True)
        r = _load(out, spawn([pythons[lib], me, "--spark-child", lib, "apply", repo, data, out],
                             envs[lib], os.path.join(work, f"spark-{lib}-apply.log"), timeout_s))
        sides[lib]["apply"] = r
        print(f"{r['seconds']:.1f} s" if r.get("ok") else f"FAILED: {r.get('error', '')[:300]}", flush=True)
    for i in range(rounds):
        for lib in libs if i % 2 == 0 else libs[::-1]:
            if not sides[lib]["apply"].get("ok"):
                continue
            repo = os.path.join(work, f"spark-{lib}")
            out = os.path.join(work, f"spark-{lib}-{i}.json")
            print(f"[{datetime.now():%H:%M:%S}] spark    {lib:6s} historical, cold + warm ...",
                  end=" ", flush=True)
            r = _load(out, spawn([pythons[lib], me, "--spark-child", lib, "retrieve", repo, data, out],
                                 envs[lib], os.path.join(work, f"spark-{lib}-{i}.log"), timeout_s))
            sides[lib]["rounds"].append(r)
            print(
                f"cold {r['cold_seconds']:.1f} s, warm {r['warm_seconds']:.1f} s, "
                f"peak RSS {r['peak_tree_rss_kib'] / 1024:,.0f} MiB"
                if r.get("ok")
                else f"FAILED: {r.get('error', '')[:300]}",
                flush=True,
            )
    report: dict = {}
    for lib, s in sides.items():
        done = [r for r in s["rounds"] if r.get("ok")]
        failed = [r for r in s["rounds"] if not r.get("ok")] or ([] if done else [s["apply"]])
        res = {k: v for k, v in s.items() if k != "rounds"}
        res["rounds"] = s["rounds"]
        res["apply_seconds"] = s["apply"].get("seconds")
        res["ok"] = bool(done) and not failed
        if failed:
            res["error"] = failed[0].get("error", "failed")
        if done:
            res["cold_seconds"] = statistics.median(r["cold_seconds"] for r in done)
            res["warm_seconds"] = statistics.median(r["warm_seconds"] for r in done)
            res["seconds"] = res["cold_seconds"]
            res["peak_rss_mib"] = max(max(r["peak_tree_rss_kib"], r["vm_hwm_kib"]) for r in done) / 1024
            res["result_parquet"] = done[0]["result_parquet"]
            res["rows"] = done[0]["cold_rows"]
            res["warm_same_as_cold"] = all(r["warm_same_as_cold"] for r in done)
            res["cold_each"] = [r["cold_seconds"] for r in done]
            res["warm_each"] = [r["warm_seconds"] for r in done]
            res["other_cpu_seconds"] = [round(r["other_cpu_seconds"], 1) for r in done]
            res["spark_session"] = done[0].get("spark_session")
            res["result_via"] = "get_historical_features(entity_df, 8 features).to_df()"
        report[lib] = res
    return report


# --------------------------------------------------------------------------- parent


def run(
    data: str,
    work: str,
    pythons: dict,
    envs: dict,
    libs: list[str],
    backends: list[str],
    timeout_s: float = 1800,
    spark_rounds: int = 1,
) -> dict:
    from large import tree_rss_kib
    from run import compare_historical

    report: dict = {"backends": {}}
    if "postgres" in backends:
        t0 = time.perf_counter()
        load_postgres(data)
        report["postgres_load_seconds"] = time.perf_counter() - t0
    jobs = [("tiffin", "duckdb")] + [(lib, b) for b in backends if b != "spark" for lib in libs]
    for lib, backend in jobs:
        repo = os.path.join(work, f"{backend}-{lib}")
        shutil.rmtree(repo, ignore_errors=True)
        os.makedirs(repo)
        out = os.path.join(work, f"{backend}-{lib}.json")
        log = os.path.join(work, f"{backend}-{lib}.log")
        print(f"[{datetime.now():%H:%M:%S}] {backend:8s} {lib:6s} historical ...", end=" ", flush=True)
        peak = 0
        with open(log, "w") as lf:
            proc = subprocess.Popen(
                [pythons[lib], os.path.abspath(__file__), "--child", lib, backend, repo, data, out],
                stdout=lf,
                stderr=subprocess.STDOUT,
                env=envs[lib],
                cwd=ROOT,
                start_new_session=True,
            )
            t0 = time.perf_counter()
            while proc.poll() is None:
                peak = max(peak, tree_rss_kib(proc.pid))  # Spark's JVM is a child process
                if time.perf_counter() - t0 > timeout_s:
                    proc.kill()
                    proc.wait()
                time.sleep(0.2)
        res = (
            json.load(open(out)) if os.path.exists(out) else {"ok": False, "error": f"exit {proc.returncode}"}
        )
        res["peak_rss_mib"] = max(peak, res.get("vm_hwm_kib", 0)) / 1024
        report["backends"].setdefault(backend, {})[lib] = res
        print(
            f"{res['seconds']:.1f} s, peak RSS {res['peak_rss_mib']:,.0f} MiB"
            if res.get("ok")
            else f"FAILED: {res.get('error', '')[:300]}",
            flush=True,
        )
    if "spark" in backends:
        report["backends"]["spark"] = run_spark(data, work, pythons, envs, libs, timeout_s, spark_rounds)
    base = report["backends"].get("duckdb", {}).get("tiffin", {})
    entity = os.path.join(data, "entity_df.parquet")
    for backend in backends:
        sides = report["backends"].get(backend, {})
        cmp: dict = {}
        if all(sides.get(x, {}).get("ok") for x in ("tiffin", "feast")):
            c = compare_historical(
                entity,
                {"tiffin": sides["tiffin"]["result_parquet"], "feast": sides["feast"]["result_parquet"]},
            )
            cmp["tiffin_vs_feast"] = {
                k: c.get(k)
                for k in ("exact", "mismatching_cells", "mismatches_by_column", "order_kept", "reason")
            }
        if base.get("ok") and sides.get("tiffin", {}).get("ok"):
            c = compare_historical(
                entity, {"tiffin": sides["tiffin"]["result_parquet"], "feast": base["result_parquet"]}
            )
            cmp["tiffin_vs_tiffin_duckdb"] = {
                k: c.get(k) for k in ("exact", "mismatching_cells", "mismatches_by_column", "reason")
            }
        sides["comparison"] = cmp
    pg_tiffin = report["backends"].get("postgres", {}).get("tiffin", {})
    if pg_tiffin.get("ok"):
        print(f"[{datetime.now():%H:%M:%S}] postgres fetch alone, ADBC vs COPY CSV ...",
              end=" ", flush=True)
        try:
            report["postgres_fetch"] = pg_fetch_comparison(pg_tiffin["result_parquet"])
            print("done", flush=True)
        except Exception as e:  # the comparison is extra: the retrieval figures stand
            report["postgres_fetch"] = {"error": f"{type(e).__name__}: {e}"}
            print(f"FAILED: {e}", flush=True)
    return report


def render_md(report: dict) -> str:
    lines = [
        "| offline store | tiffin s | Feast s | tiffin/Feast | tiffin peak RSS MiB | Feast peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for backend, sides in report["backends"].items():
        t, f = sides.get("tiffin", {}), sides.get("feast", {})

        def cell(r: dict, key: str, fmt: str) -> str:
            if not r:
                return "-"
            return fmt.format(r[key]) if r.get("ok") else "FAILED"

        if backend == "spark":
            lines += spark_rows(t, f, cell)
            continue
        ratio = f"{t['seconds'] / f['seconds']:.2f}x" if t.get("ok") and f.get("ok") else "-"
        lines.append(
            f"| {backend} | {cell(t, 'seconds', '{:.2f}')} | {cell(f, 'seconds', '{:.2f}')} | {ratio} | "
            f"{cell(t, 'peak_rss_mib', '{:,.0f}')} | {cell(f, 'peak_rss_mib', '{:,.0f}')} |"
        )
    lines.append("")
    for backend, sides in report["backends"].items():
        for name, c in sides.get("comparison", {}).items():
            verdict = (
                "exact"
                if c.get("exact")
                else f"NOT exact ({c.get('mismatching_cells')} cells, "
                f"{c.get('mismatches_by_column')}, {c.get('reason', '')})"
            )
            lines.append(f"- {backend}, {name.replace('_', ' ')}: {verdict}")
        for lib in ("tiffin", "feast"):
            r = sides.get(lib)
            if r and not r.get("ok"):
                lines.append(f"- {backend} {lib} failed: {r.get('error', '')[:400]}")
    fetch = report.get("postgres_fetch")
    if fetch and "error" in fetch:
        lines.append(f"- postgres fetch comparison failed: {fetch['error'][:400]}")
    elif fetch:
        for what, label in (("training_set", "tiffin's training set"),
                            ("driver_source", "the driver source table")):
            f = fetch[what]
            med = f["median_seconds"]
            lines.append(
                f"- postgres fetch alone, {label} ({f['rows']:,} rows): ADBC {med['adbc']:.2f} s, "
                f"COPY CSV + Arrow CSV reader {med['copy_csv']:.2f} s (medians of "
                f"{fetch['rounds']} taken in turn; CSV/ADBC {f['copy_csv_over_adbc']:.2f}x)"
            )
        lines.append(f"- ADBC's database object, made once per store (reads the type catalog): "
                     f"{fetch['adbc_first_connection_seconds'] * 1000:.0f} ms")
    if "spark" in report["backends"]:
        lines += spark_notes(report["backends"]["spark"])
    return "\n".join(lines) + "\n"


def spark_rows(t: dict, f: dict, cell) -> list[str]:
    rows = []
    for key, label in (
        ("cold_seconds", "spark, cold: first retrieval in a fresh process (JVM start included)"),
        ("warm_seconds", "spark, warm: the same retrieval again, session up"),
    ):
        ratio = f"{t[key] / f[key]:.2f}x" if t.get("ok") and f.get("ok") else "-"
        rss = [cell(t, "peak_rss_mib", "{:,.0f}"), cell(f, "peak_rss_mib", "{:,.0f}")]
        rows.append(
            f"| {label} | {cell(t, key, '{:.2f}')} | {cell(f, key, '{:.2f}')} | {ratio} | "
            + (" | ".join(rss) if key == "cold_seconds" else "(above) | (above)")
            + " |"
        )
    return rows


def spark_notes(sides: dict) -> list[str]:
    """What the Spark rows measured, as the run saw it."""
    out = []
    libs = [lib for lib in ("tiffin", "feast") if sides.get(lib, {}).get("ok")]
    if libs:
        s0 = sides[libs[0]].get("spark_session") or {}
        out.append(
            f"- spark: both sides `{sides[libs[0]]['result_via']}`, Spark {s0.get('version')} "
            f"{s0.get('spark.master')}, shuffle partitions {s0.get('spark.sql.shuffle.partitions')}, "
            f"Arrow {s0.get('spark.sql.execution.arrow.pyspark.enabled')}; apply ran in a process of its "
            "own, then one fresh process per side and round timed the cold and the warm call; "
            "each side's Spark was started once before, untimed, so both find their jars and the "
            "data in the page cache"
        )
    for lib in ("tiffin", "feast"):
        if sides.get(lib, {}).get("prime_error"):
            out.append(f"- spark {lib}: the untimed warm-up start failed: {sides[lib]['prime_error'][-300:]}")
    for lib in libs:
        r = sides[lib]
        seen = r.get("spark_session") or {}
        out.append(
            f"- spark {lib}: cold {' / '.join(f'{x:.2f}' for x in r['cold_each'])} s, warm "
            f"{' / '.join(f'{x:.2f}' for x in r['warm_each'])} s over {len(r['cold_each'])} round(s) "
            f"(median shown); apply {r['apply_seconds']:.2f} s "
            f"({'starts' if r['apply'].get('started_spark') else 'does not start'} Spark); "
            f"warm result {'equals' if r['warm_same_as_cold'] else 'DIFFERS from'} the cold one; "
            f"Arrow {seen.get('spark.sql.execution.arrow.pyspark.enabled')}; "
            f"other processes' CPU during each round: {r['other_cpu_seconds']} s"
        )
        busy = [
            x for x in r["rounds"]
            if x.get("ok") and x["other_cpu_seconds"] > max(1.0, 0.2 * x["process_wall_seconds"])
        ]
        if busy:
            out.append(
                f"- WARNING: other processes used the CPU during spark {lib}'s retrievals "
                + "; ".join(f"{x['other_cpu_seconds']:.0f} CPU-s in {x['process_wall_seconds']:.0f} s"
                            for x in busy)
                + ". Timings are skewed; rerun on an idle machine."
            )
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(*sys.argv[2:7])
    if len(sys.argv) > 1 and sys.argv[1] == "--spark-child":
        return spark_child(*sys.argv[2:7])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--backends", default="postgres,spark")
    ap.add_argument("--libs", default="tiffin,feast")
    ap.add_argument("--anchor", default="now")
    ap.add_argument("--work", default=os.path.join(HERE, ".work"))
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--spark-rounds", type=int, default=1,
                    help="fresh processes per side for Spark's cold and warm retrievals")
    a = ap.parse_args()
    import record
    import run as runner

    run_info = record.start("backends.py", a)

    tag = f"scale-{a.scale:g}"
    data = os.path.join(HERE, ".data", tag)
    gen_data.generate(data, a.scale, anchor=a.anchor)
    libs = [x for x in a.libs.split(",") if x]
    pythons = {
        "tiffin": os.path.join(ROOT, ".venv", "bin", "python"),
        "feast": os.path.join(ROOT, ".venv-feast", "bin", "python"),
    }
    pycache = os.path.join(os.path.abspath(a.work), "pycache")
    envs = {lib: runner.child_env(pycache) for lib in libs}
    for lib in libs:  # as run.py does: no side compiles its lazy imports inside a timed call
        runner.warm_bytecode(pythons[lib], lib, envs[lib])
    work = os.path.join(os.path.abspath(a.work), tag, "backends")
    os.makedirs(work, exist_ok=True)
    report = run(data, work, pythons, envs, libs, [x for x in a.backends.split(",") if x],
                 spark_rounds=a.spark_rounds)
    report["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report["scale"] = a.scale
    md = render_md(report)
    title = f"## PostgreSQL and Spark offline stores (scale {a.scale:g})"
    path = record.write(run_info, {"backends": report}, [f"{title}\n\n{md}"], a.results)
    print("\n" + md + f"\nwrote {os.path.relpath(path, ROOT)} and its .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
