"""tiffin vs Feast 0.67: same workload, same run, one table.

    .venv/bin/python benchmarks/run.py [--scale 1.0] [--phases apply,historical,...]

Every phase of every library runs in its own fresh child process
(benchmarks/side.py) under that library's virtualenv; sides are interleaved
(tiffin apply, Feast apply, tiffin historical, ...).  The child times the call
in-process and reports its peak RSS (VmHWM); the parent also records wait4().  Each run
writes benchmarks/results/<date>-<commit>.json and .md (record.py), to be committed.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import gen_data  # noqa: E402
import record  # noqa: E402
from record import machine_info  # noqa: E402

PHASES = ["apply", "historical", "materialize", "online_1", "online_100"]
# Separate harnesses with their own repos and tables: the feature servers under wrk
# (serve.py), the PostgreSQL and Spark offline stores (backends.py) and the 100M-row
# bounded-memory run (large.py).
EXTRA = ["serve", "backends", "large"]
LIBS = ["tiffin", "feast"]
LABEL = {"tiffin": "tiffin", "feast": "Feast"}


# --------------------------------------------------------------------------- running


def _cpu_busy_seconds() -> float:
    """Machine-wide non-idle CPU seconds so far, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_idle(limit_s: float, threshold: float = 0.25) -> float:
    """Wait (up to limit_s) for a second in which the machine is nearly idle.

    Returns the seconds waited.  threshold is busy CPU-seconds per second.
    """
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        b0 = _cpu_busy_seconds()
        time.sleep(1.0)
        if _cpu_busy_seconds() - b0 < threshold:
            break
    return time.perf_counter() - t0


def child_env(pycache: str) -> dict:
    """Environment for the children: bytecode cached under benchmarks/.work.

    This workplace sets PYTHONDONTWRITEBYTECODE and uv installs no .pyc files,
    so every process would otherwise recompile every module it imports
    (about 10 s for `import feast`), inside the timed calls too when a library
    imports lazily.  A pycache prefix keeps the cache out of the venvs and src/.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pycache
    env.setdefault("PYTHONHASHSEED", "0")
    return env


def warm_page_cache(data_dir: str) -> float:
    """Read every file of the data set once, so that neither side pays the disk.

    The sides run in a fixed order (tiffin first); with data files left on disk by an
    earlier run, the first reader would pay their reads and the second would not.
    """
    t0 = time.perf_counter()
    for dirpath, _dirs, files in os.walk(data_dir):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                while f.read(1 << 24):
                    pass
    return time.perf_counter() - t0


def warm_bytecode(python: str, lib: str, env: dict) -> float:
    """Compile the interpreter's site-packages (and tiffin's src/) into the prefix."""
    t0 = time.perf_counter()
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    dirs = [d for d in (purelib, os.path.join(ROOT, "src")) if d and os.path.isdir(d)]
    subprocess.run(
        [python, "-m", "compileall", "-q", "-j", "0", *dirs],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    return time.perf_counter() - t0


def run_child(
    env: dict,
    python: str,
    lib: str,
    phase: str,
    repo: str,
    data: str,
    out_json: str,
    log_path: str,
    extra: list[str],
) -> dict:
    cmd = [
        python,
        os.path.join(HERE, "side.py"),
        "--lib",
        lib,
        "--phase",
        phase,
        "--repo",
        repo,
        "--data",
        data,
        "--out",
        out_json,
        *extra,
    ]
    if os.path.exists(out_json):
        os.remove(out_json)
    busy_before = _cpu_busy_seconds()
    with open(log_path, "w") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from re-waiting
    res: dict = {}
    if os.path.exists(out_json):
        with open(out_json) as f:
            res = json.load(f)
    # Peak RSS: the child's own VmHWM, read by the child just before it exits.
    # wait4's ru_maxrss is kept too, but Linux folds the parent's high-water
    # mark into it at exec time (fork/vfork share or copy the parent's mm),
    # so it can never be lower than run.py's own peak.
    res["wait4_maxrss_kib"] = ru.ru_maxrss  # KiB on Linux
    hwm = res.get("vm_hwm_kib", -1)
    res["peak_rss_kib"] = hwm if hwm and hwm > 0 else ru.ru_maxrss
    res["peak_rss_source"] = "VmHWM" if hwm and hwm > 0 else "wait4"
    res["process_cpu_seconds"] = ru.ru_utime + ru.ru_stime
    # CPU time the rest of the machine used while the child ran: a busy
    # neighbour skews timings on a 2-core box, so the report flags it.
    busy = _cpu_busy_seconds() - busy_before
    res["other_cpu_seconds"] = max(0.0, busy - res["process_cpu_seconds"])
    res["process_wall_seconds"] = wall
    res["exit_code"] = proc.returncode
    res["log"] = os.path.relpath(log_path, ROOT)
    if proc.returncode != 0 or not res.get("ok"):
        res["ok"] = False
        if "error" not in res:
            with open(log_path) as f:
                tail = f.read()[-4000:]
            res["error"] = f"child exited with {proc.returncode}"
            res["traceback"] = tail
    return res


# --------------------------------------------------------------------------- exactness


def compare_historical(
    entity_path: str, paths: dict[str, str], pandas_dtypes: dict[str, dict] | None = None
) -> dict:
    """Row-by-row comparison of the two historical results.

    Both frames are checked for keeping entity_df's row order, then aligned by
    row_id.  Values are compared after casting both sides to a common Arrow
    type; null == null, NaN counts as null (pandas writes missing floats as NaN).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ent = pq.read_table(entity_path)
    n = ent.num_rows
    out: dict = {"entity_rows": n, "order_kept": {}, "row_counts": {}}
    tabs = {}
    for lib, p in paths.items():
        t = pq.read_table(p)
        out["row_counts"][lib] = t.num_rows
        if "row_id" in t.column_names:
            out["order_kept"][lib] = t.num_rows == n and t["row_id"].equals(ent["row_id"])
            t = t.sort_by("row_id")
        else:
            out["order_kept"][lib] = None
        tabs[lib] = t
    a, b = tabs["tiffin"], tabs["feast"]
    cols_a, cols_b = set(a.column_names), set(b.column_names)
    out["only_in_tiffin"] = sorted(cols_a - cols_b)
    out["only_in_feast"] = sorted(cols_b - cols_a)
    # dtypes as the caller saw them in pandas (from the children), for information
    out["dtype_differences"] = {}
    if pandas_dtypes and all(pandas_dtypes.get(k) for k in ("tiffin", "feast")):
        dt, df_ = pandas_dtypes["tiffin"], pandas_dtypes["feast"]
        out["dtype_differences"] = {
            c: {"tiffin": dt[c], "feast": df_[c]} for c in sorted(set(dt) & set(df_)) if dt[c] != df_[c]
        }
    per_col: dict[str, int] = {}
    if a.num_rows != b.num_rows:
        out["exact"] = False
        out["mismatching_cells"] = None
        out["reason"] = f"row counts differ: tiffin {a.num_rows}, Feast {b.num_rows}"
        return out
    if "row_id" in cols_a and "row_id" in cols_b and not a["row_id"].equals(b["row_id"]):
        out["exact"] = False
        out["mismatching_cells"] = None
        out["reason"] = "row_id sets differ"
        return out

    def norm(col: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if pa.types.is_large_string(col.type) or pa.types.is_string_view(col.type):
            col = col.cast(pa.string())
        if not col.type.equals(target):
            col = col.cast(target, safe=False)
        if pa.types.is_floating(col.type):
            nan = pc.is_nan(col)
            col = pc.if_else(pc.fill_null(nan, False), pa.scalar(None, col.type), col)
        return col

    def common(ta: pa.DataType, tb: pa.DataType) -> pa.DataType:
        for t in (ta, tb):
            if pa.types.is_dictionary(t):
                return common(
                    ta.value_type if pa.types.is_dictionary(ta) else ta,
                    tb.value_type if pa.types.is_dictionary(tb) else tb,
                )
        if ta.equals(tb):
            return ta
        if pa.types.is_timestamp(ta) and pa.types.is_timestamp(tb):
            return pa.timestamp("ns", tz="UTC")
        numeric = (pa.types.is_integer, pa.types.is_floating)
        if any(f(ta) for f in numeric) and any(f(tb) for f in numeric):
            return pa.float64()
        if all(
            pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
            for t in (ta, tb)
        ):
            return pa.string()
        return pa.string()

    total = 0
    for c in sorted(cols_a & cols_b):
        ta, tb = a[c].type, b[c].type
        tgt = common(ta, tb)
        try:
            x, y = norm(a[c], tgt), norm(b[c], tgt)
        except Exception as e:  # incomparable types: every cell counts
            per_col[c] = a.num_rows
            out.setdefault("errors", {})[c] = str(e)
            total += a.num_rows
            continue
        xn, yn = pc.is_null(x), pc.is_null(y)
        eq = pc.fill_null(pc.equal(x, y), False)
        both_null = pc.and_(xn, yn)
        ok = pc.or_(eq, both_null)
        bad = a.num_rows - pc.sum(ok.cast(pa.int64())).as_py()
        if bad:
            per_col[c] = bad
            total += bad
    out["mismatches_by_column"] = per_col
    out["mismatching_cells"] = total
    out["exact"] = total == 0 and not out["only_in_tiffin"] and not out["only_in_feast"]
    # a little context for humans: how sparse were the results
    nulls = {}
    for lib, t in tabs.items():
        nulls[lib] = {
            c: t[c].null_count
            for c in t.column_names
            if c not in ("row_id", "driver_id", "customer_id", "event_timestamp", "label")
        }
    out["null_counts"] = nulls
    return out


def compare_online(paths: dict[str, str]) -> dict:
    """Compare the two sides' warm-up answers (same entity rows on both sides).

    Values are compared as returned by to_dict(); a float from a float32
    feature equals the other side's only if both widen it the same way, so
    ints and floats are compared as floats, exactly.
    """
    ans = {}
    for lib, p in paths.items():
        with open(p) as f:
            ans[lib] = json.load(f)
    a, b = ans["tiffin"], ans["feast"]
    out: dict = {"calls": min(len(a), len(b)), "values": 0, "mismatching_values": 0}
    by_key: dict[str, int] = {}
    if len(a) != len(b):
        out["reason"] = f"answer counts differ: {len(a)} vs {len(b)}"
    for da, db in zip(a, b):
        keys = set(da) | set(db)
        for k in sorted(keys):
            va, vb = da.get(k), db.get(k)
            if va is None or vb is None or len(va) != len(vb):
                by_key[k] = by_key.get(k, 0) + max(len(va or []), len(vb or []))
                continue
            for x, y in zip(va, vb):
                out["values"] += 1
                if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                    same = float(x) == float(y) or (x != x and y != y)
                else:
                    same = x == y
                if not same:
                    by_key[k] = by_key.get(k, 0) + 1
                    if x is None and y is not None:
                        out["tiffin_null_feast_value"] = out.get("tiffin_null_feast_value", 0) + 1
    out["mismatches_by_key"] = by_key
    out["mismatching_values"] = sum(by_key.values())
    out["exact"] = not by_key and "reason" not in out
    return out


# --------------------------------------------------------------------------- report


def _fmt(v, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "MiB":
        return f"{v:,.0f}"
    if unit == "ms":
        return f"{v:.3f}"
    return f"{v:.2f}" if v >= 0.1 else f"{v:.3f}"


def _ratio(a, b) -> str:
    if a is None or b is None or not b:
        return "-"
    return f"{a / b:.2f}x"


def _cell(r: dict | None, v, unit: str) -> str:
    if r is None:
        return "-"
    if not r.get("ok"):
        return "skipped" if r.get("skipped") else "FAILED"
    return _fmt(v, unit)


def _val(r: dict | None, key: str):
    return r.get(key) if r and r.get("ok") else None


def _rss_mib(r: dict | None):
    return r["peak_rss_kib"] / 1024 if r and r.get("ok") and "peak_rss_kib" in r else None


def table_rows(results: dict) -> list[list[str]]:
    rows = []
    for phase in PHASES:
        rt_, rf_ = (results.get(lib, {}).get(phase) for lib in LIBS)
        if rt_ is None and rf_ is None:
            continue
        mt, mf = _rss_mib(rt_), _rss_mib(rf_)
        mem = [_cell(rt_, mt, "MiB"), _cell(rf_, mf, "MiB"), _ratio(mt, mf)]
        if phase.startswith("online"):
            for i, q in enumerate(("p50", "p99")):
                vt, vf = _val(rt_, f"{q}_ms"), _val(rf_, f"{q}_ms")
                rows.append(
                    [
                        f"{phase} {q} (ms)",
                        _cell(rt_, vt, "ms"),
                        _cell(rf_, vf, "ms"),
                        _ratio(vt, vf),
                        *(mem if i == 0 else ["", "", ""]),
                    ]
                )
        else:
            vt, vf = _val(rt_, "seconds"), _val(rf_, "seconds")
            rows.append([f"{phase} (s)", _cell(rt_, vt, "s"), _cell(rf_, vf, "s"), _ratio(vt, vf), *mem])
            wt, wf = _val(rt_, "warm_seconds"), _val(rf_, "warm_seconds")
            if wt is not None or wf is not None:  # historical: the same call again, same process
                again = [_cell(rt_, wt, "s"), _cell(rf_, wf, "s"), _ratio(wt, wf)]
                rows.append([f"{phase}, again (s)", *again, "", "", ""])
    return rows


HEADER = [
    "phase",
    "tiffin",
    "Feast",
    "tiffin/Feast",
    "tiffin peak RSS MiB",
    "Feast peak RSS MiB",
    "RSS tiffin/Feast",
]


def render_text(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(HEADER), sep, *map(line, rows)])


def render_md(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---"] + ["---:"] * (len(HEADER) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def summary_lines(report: dict) -> list[str]:
    lines = []
    m = report["machine"]
    lines.append(f"date: {report['date']}")
    lines.append(
        f"machine: {m.get('nproc')} cores, {m.get('mem_total_gib')} GiB, "
        f"{m.get('cpu', '?')}, {m.get('platform')}"
    )
    d = report["data"]
    lines.append(
        f"workload: scale {d['scale']}: drivers {d['drivers_table']['rows']:,} rows "
        f"({d['drivers']:,} drivers), customers {d['customers_table']['rows']:,} rows "
        f"({d['customers']:,} customers), entity_df {d['entity_table']['rows']:,} rows"
    )
    for lib in LIBS:
        v = report["versions"].get(lib)
        if v:
            lines.append(f"{LABEL[lib]} side: " + ", ".join(f"{k} {x}" for k, x in v.items()))
    for lib in LIBS:
        r = report["results"].get(lib, {}).get("materialize")
        if r and r.get("ok"):
            lines.append(
                f"materialize {LABEL[lib]}: {r['source_rows']:,} source rows, "
                f"{r['rows_per_second']:,.0f} rows/s"
            )
    if any("warm_seconds" in report["results"].get(lib, {}).get("historical", {}) for lib in LIBS):
        lines.append(
            "historical, again: the same call a second time in the same process; the first "
            "also pays each library's lazy imports and first-use setup"
        )
    ex = report.get("exactness")
    if ex:
        if ex.get("mismatching_cells") is None and "reason" in ex:
            lines.append(f"exact: no ({ex['reason']})")
        else:
            lines.append(
                f"exact: {'yes' if ex['exact'] else 'no'} ({ex['mismatching_cells']} mismatching cells)"
            )
        if ex.get("mismatches_by_column"):
            lines.append(f"  mismatches by column: {ex['mismatches_by_column']}")
        if ex.get("only_in_tiffin") or ex.get("only_in_feast"):
            lines.append(
                f"  columns only in tiffin: {ex['only_in_tiffin']}; only in Feast: {ex['only_in_feast']}"
            )
        if ex.get("dtype_differences"):
            lines.append(
                f"  pandas dtype differences (values compared after casting): {ex['dtype_differences']}"
            )
        lines.append(
            "  entity_df row order kept: " + ", ".join(f"{LABEL[k]} {v}" for k, v in ex["order_kept"].items())
        )
    for phase, ox in report.get("online_exactness", {}).items():
        verdict = "yes" if ox["exact"] else "no"
        lines.append(
            f"online exact ({phase}, {ox['calls']} warm-up calls): {verdict} "
            f"({ox['mismatching_values']} of {ox['values']} values differ)"
            + (f" {ox['mismatches_by_key']}" if ox["mismatches_by_key"] else "")
            + (f" [{ox['reason']}]" if "reason" in ox else "")
        )
        tn = ox.get("tiffin_null_feast_value", 0)
        if tn:
            lines.append(
                f"  {tn} of them are null in tiffin but set in Feast: tiffin nulls values older "
                "than the view's ttl on online reads; Feast 0.67 returns them"
            )
    noisy = [
        f"{LABEL[lib]} {phase} ({r['other_cpu_seconds']:.1f} CPU-s in {r['process_wall_seconds']:.1f} s)"
        for lib in LIBS
        for phase, r in report["results"].get(lib, {}).items()
        if r.get("other_cpu_seconds", 0) > max(1.0, 0.2 * r.get("process_wall_seconds", 0))
    ]
    if noisy:
        lines.append(
            "WARNING: other processes used the CPU during: "
            + "; ".join(noisy)
            + ". Timings are skewed; rerun on an idle machine."
        )
    for lib in LIBS:
        for phase, r in report["results"].get(lib, {}).items():
            if not r.get("ok") and not r.get("skipped"):
                lines.append(f"FAILED {LABEL[lib]} {phase}: {r.get('error')} (log: {r.get('log')})")
    return lines


# --------------------------------------------------------------------------- main


def parse_phases(s: str) -> list[str]:
    out = []
    for p in (x.strip() for x in s.split(",") if x.strip()):
        if p == "all":
            out += PHASES + EXTRA
        elif p == "online":
            out += ["online_1", "online_100"]
        elif p in PHASES or p in EXTRA:
            out.append(p)
        else:
            raise SystemExit(f"unknown phase {p!r}; choose from {PHASES + EXTRA} or 'online', 'all'")
    return [p for p in PHASES + EXTRA if p in out]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="workload size factor (1.0 = 6.5M + 6M source rows, 1M entity rows)",
    )
    ap.add_argument(
        "--phases",
        default="all",
        help="comma list of apply,historical,materialize,online_1,online_100 "
        "(or 'online', 'all'); later phases need the earlier ones' state",
    )
    ap.add_argument("--libs", default="tiffin,feast", help="which sides to run")
    ap.add_argument("--tiffin-python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    ap.add_argument("--feast-python", default=os.path.join(ROOT, ".venv-feast", "bin", "python"))
    ap.add_argument("--data", default=None, help="data cache dir (default benchmarks/.data/scale-S)")
    ap.add_argument("--work", default=os.path.join(HERE, ".work"), help="feature repos and child logs")
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument(
        "--anchor",
        default="now",
        help="where the data's last driver hour sits: 'now' (default: the current hour, "
        "regenerating the cached data when the hour has changed), 'fixed' "
        "(2026-01-30T23:00Z, never regenerated) or an ISO timestamp",
    )
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each phase, wait up to SECONDS for the machine to be idle",
    )
    ap.add_argument("--online-calls-1", type=int, default=3000)
    ap.add_argument("--online-calls-100", type=int, default=500)
    ap.add_argument("--online-warmup", type=int, default=200)
    ap.add_argument("--serve-duration", type=float, default=20, help="seconds of wrk per window")
    ap.add_argument("--serve-repeats", type=int, default=3,
                    help="wrk windows per server and request shape, in turn with the other side's")
    ap.add_argument("--serve-stores", default="sqlite,redis")
    ap.add_argument("--serve-workers", type=int, default=2)
    ap.add_argument("--serve-variants", default="tiffin,gunicorn",
                    help="how tiffin's server is run, in turn with Feast's (see serve_launch.py)")
    ap.add_argument("--soak", type=float, default=600, help="seconds of tiffin server soak (0: none)")
    ap.add_argument("--large-feast-timeout", type=float, default=1800)
    ap.add_argument("--backends-scale", type=float, default=0.1)
    ap.add_argument("--backends-stores", default="postgres,spark", help="backends: which offline stores")
    ap.add_argument("--spark-rounds", type=int, default=1,
                    help="backends: fresh processes per side for Spark's cold and warm retrievals")
    a = ap.parse_args()
    run_info = record.start("run.py", a)

    phases = parse_phases(a.phases)
    libs = [x.strip() for x in a.libs.split(",") if x.strip()]
    for lib in libs:
        if lib not in LIBS:
            raise SystemExit(f"unknown lib {lib!r}")
    pythons = {"tiffin": a.tiffin_python, "feast": a.feast_python}
    for lib in libs:
        if not os.path.exists(pythons[lib]):
            hint = " (run: bash benchmarks/setup_feast.sh)" if lib == "feast" else " (run: make install)"
            raise SystemExit(f"{LABEL[lib]} interpreter not found: {pythons[lib]}{hint}")

    scale_tag = f"scale-{a.scale:g}"
    data = os.path.abspath(a.data or os.path.join(HERE, ".data", scale_tag))
    t0 = time.perf_counter()
    meta = gen_data.generate(data, a.scale, anchor=a.anchor)
    print(
        f"data: {data} ({'reused' if meta['reused'] else 'generated'} in {time.perf_counter() - t0:.1f}s)",
        flush=True,
    )

    work = os.path.abspath(os.path.join(a.work, scale_tag))
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    repos = {lib: os.path.join(work, lib) for lib in libs}
    if "apply" in phases:
        for lib in libs:  # start every full run from an empty repo
            shutil.rmtree(repos[lib], ignore_errors=True)
    for lib in libs:
        os.makedirs(repos[lib], exist_ok=True)

    extra = [
        "--online-calls-1",
        str(a.online_calls_1),
        "--online-calls-100",
        str(a.online_calls_100),
        "--online-warmup",
        str(a.online_warmup),
    ]
    pycache = os.path.join(os.path.abspath(a.work), "pycache")
    envs = {lib: child_env(pycache) for lib in libs}
    for lib in libs:
        took = warm_bytecode(pythons[lib], lib, envs[lib])
        print(f"bytecode cache for {LABEL[lib]}: {took:.1f} s", flush=True)

    if any(p in PHASES for p in phases):
        print(f"page cache: read the data set in {warm_page_cache(data):.1f} s", flush=True)

    results: dict = {lib: {} for lib in libs}
    broken: dict = {}
    for phase in [p for p in phases if p in PHASES]:
        for lib in libs:
            if lib in broken:
                results[lib][phase] = {
                    "ok": False,
                    "skipped": True,
                    "error": f"skipped: {broken[lib]} failed",
                }
                continue
            if a.wait_idle > 0:
                waited = wait_idle(a.wait_idle)
                if waited > 1.5:
                    print(f"(waited {waited:.0f} s for an idle machine)", flush=True)
            print(f"[{datetime.now():%H:%M:%S}] {LABEL[lib]:6s} {phase} ...", end=" ", flush=True)
            r = run_child(
                envs[lib],
                pythons[lib],
                lib,
                phase,
                repos[lib],
                data,
                os.path.join(work, f"{lib}-{phase}.json"),
                os.path.join(logs, f"{lib}-{phase}.log"),
                extra,
            )
            results[lib][phase] = r
            if r.get("ok"):
                extra_s = (
                    f"p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms"
                    if phase.startswith("online")
                    else f"{r['seconds']:.2f} s"
                )
                print(
                    f"{extra_s}, peak RSS {r['peak_rss_kib'] / 1024:,.0f} MiB "
                    f"(process {r['process_wall_seconds']:.1f} s)",
                    flush=True,
                )
            else:
                print(f"FAILED: {r.get('error')}", flush=True)
                tb = r.get("traceback")
                if tb:
                    print("    " + tb.strip().replace("\n", "\n    "), flush=True)
                if phase in ("apply", "materialize"):
                    broken[lib] = phase  # later phases depend on this state

    versions = {}
    for lib in libs:
        for r in results[lib].values():
            if r.get("versions"):
                versions[lib] = r["versions"]
                break

    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions,
        "data": {k: v for k, v in meta.items() if k != "reused"},
        "data_dir": data,
        "phases": phases,
        "results": results,
    }
    hist = {lib: results.get(lib, {}).get("historical", {}) for lib in LIBS}
    if all(h.get("ok") and h.get("result_parquet") for h in hist.values()):
        report["exactness"] = compare_historical(
            os.path.join(data, "entity_df.parquet"),
            {lib: hist[lib]["result_parquet"] for lib in LIBS},
            {lib: hist[lib].get("result_dtypes") for lib in LIBS},
        )

    for phase in ("online_1", "online_100"):
        rs = {lib: results.get(lib, {}).get(phase, {}) for lib in LIBS}
        if all(r.get("ok") and r.get("answers_json") for r in rs.values()):
            report.setdefault("online_exactness", {})[phase] = compare_online(
                {lib: rs[lib]["answers_json"] for lib in LIBS}
            )

    extra_md = ""
    if "serve" in phases:
        import serve

        print(
            f"[{datetime.now():%H:%M:%S}] feature servers (wrk, {a.serve_repeats} windows of "
            f"{a.serve_duration:.0f} s per server and shape)",
            flush=True,
        )
        report["serve"] = serve.run(
            data,
            meta,
            os.path.join(work, "serve"),
            pythons,
            envs,
            libs,
            [x for x in a.serve_stores.split(",") if x],
            a.serve_duration,
            a.soak,
            a.serve_workers,
            a.wait_idle,
            a.serve_repeats,
            [x for x in a.serve_variants.split(",") if x],
        )
        extra_md += "\n## Feature server\n\n" + serve.render_md(report["serve"])
    if "backends" in phases:
        import backends

        bscale = a.backends_scale
        bdata = os.path.abspath(os.path.join(HERE, ".data", f"scale-{bscale:g}"))
        gen_data.generate(bdata, bscale, anchor=a.anchor)
        bwork = os.path.join(os.path.abspath(a.work), f"scale-{bscale:g}", "backends")
        os.makedirs(bwork, exist_ok=True)
        print(f"[{datetime.now():%H:%M:%S}] offline stores (scale {bscale:g})", flush=True)
        report["backends"] = backends.run(
            bdata, bwork, pythons, envs, libs, [x for x in a.backends_stores.split(",") if x],
            spark_rounds=a.spark_rounds,
        )
        report["backends"]["scale"] = bscale
        extra_md += f"\n## PostgreSQL and Spark offline stores (scale {bscale:g})\n\n" + backends.render_md(
            report["backends"]
        )
    if "large" in phases:
        import large

        ldata = os.path.join(HERE, ".data", "large-100000x1000-5000000")
        lmeta = large.generate(ldata, 100_000, 1_000, 5_000_000)
        lwork = os.path.join(os.path.abspath(a.work), "large-100000x1000-5000000")
        os.makedirs(lwork, exist_ok=True)
        print(f"[{datetime.now():%H:%M:%S}] large scale: {lmeta['source_rows']:,} source rows", flush=True)
        report["large"] = large.run(pythons, envs, libs, lwork, ldata, lmeta, 1800, a.large_feast_timeout, 16)
        extra_md += "\n## Large scale\n\n" + large.render_md(report["large"])

    rows = table_rows(results)
    text = render_text(rows)
    lines = summary_lines(report)
    print()
    print(text)
    print()
    print("\n".join(lines))
    if extra_md:
        print(extra_md)

    # One file per run: the main phases and each harness as its own section.
    harnesses = [h for h in EXTRA if h in report]
    sections = {h: report.pop(h) for h in harnesses}
    md_parts = [extra_md]
    if any(p in PHASES for p in phases):
        sections = {"main": report, **sections}
        # summary_lines indents a line that belongs to the one above: a nested bullet here
        summary = "\n".join(f"  - {x.strip()}" if x.startswith("  ") else f"- {x}" for x in lines)
        md_parts.insert(0, f"## Main phases\n\n{render_md(rows)}\n\n{summary}\n")
    path = record.write(run_info, sections, md_parts, a.results)
    print(f"\nwrote {os.path.relpath(path, ROOT)} and its .md (commit them to keep the figures)")
    failed = any(not r.get("ok") for lib in libs for r in results[lib].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
