"""Historical retrieval on the PostgreSQL and Spark offline stores, tiffin beside Feast 0.67.

    .venv/bin/python benchmarks/backends.py [--scale 0.1] [--backends postgres,spark]

run.py calls this for its ``backends`` phase; alone it writes
benchmarks/results/backends.json and backends.md.

Same definitions and data as the main benchmark (side.py, gen_data.py), at a smaller
scale by default (0.1: 650k driver rows, 600k customer rows, 100k entity rows): both
libraries' PostgreSQL and Spark stores run the join inside the engine, and the
engines, not the libraries, set the pace at full size. For PostgreSQL, the two Parquet
sources are loaded into tables of a ``tiffin_bench`` schema of the local server
(127.0.0.1:5432, user postgres) and each side's source is ``PostgreSQLSource(table=...)``;
for Spark (local[2]), ``SparkSource(path=..., file_format="parquet")``. Each side's
``get_historical_features(entity_df, 8 features).to_df()`` runs in a fresh child
process; the training sets are compared row by row, with each other and with tiffin's
DuckDB result on the same data.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
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
                if lib_name == "tiffin":
                    Source = lib.SparkSource
                else:
                    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import (
                        SparkSource as Source,
                    )
                srcs = [
                    Source(
                        name=f"{n}_spark",
                        path=os.path.abspath(os.path.join(data, f"{n}.parquet")),
                        file_format="parquet",
                        timestamp_field="event_timestamp",
                        created_timestamp_column="created",
                    )
                    for n in ("drivers", "customers")
                ]
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


# --------------------------------------------------------------------------- parent


def run(
    data: str,
    work: str,
    pythons: dict,
    envs: dict,
    libs: list[str],
    backends: list[str],
    timeout_s: float = 1800,
) -> dict:
    from large import tree_rss_kib
    from run import compare_historical

    report: dict = {"backends": {}}
    if "postgres" in backends:
        t0 = time.perf_counter()
        load_postgres(data)
        report["postgres_load_seconds"] = time.perf_counter() - t0
    jobs = [("tiffin", "duckdb")] + [(lib, b) for b in backends for lib in libs]
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
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(*sys.argv[2:7])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--backends", default="postgres,spark")
    ap.add_argument("--libs", default="tiffin,feast")
    ap.add_argument("--anchor", default="now")
    ap.add_argument("--work", default=os.path.join(HERE, ".work"))
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    import run as runner

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
    work = os.path.join(os.path.abspath(a.work), tag, "backends")
    os.makedirs(work, exist_ok=True)
    report = run(data, work, pythons, envs, libs, [x for x in a.backends.split(",") if x])
    report["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report["scale"] = a.scale
    os.makedirs(a.results, exist_ok=True)
    with open(os.path.join(a.results, "backends.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)
    md = render_md(report)
    with open(os.path.join(a.results, "backends.md"), "w") as f:
        f.write(f"# Offline stores: tiffin vs Feast ({report['date']}, scale {a.scale:g})\n\n{md}")
    print("\n" + md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
