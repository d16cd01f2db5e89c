"""Feature-server benchmark: `tiffin serve` beside `feast serve`, same workload, same run.

    .venv/bin/python benchmarks/serve.py [--scale 1.0] [--stores sqlite,redis] \
        [--duration 20] [--repeats 3] [--soak 600] [--workers 2] \
        [--serve-variants tiffin,gunicorn]

run.py calls this for its ``serve`` phase (part of ``all``); alone it writes a run file
with a ``serve`` section (benchmarks/results/<date>-<commit>.json and .md, see record.py).

For each online store, each side gets its own feature repo: the benchmark's
definitions (side.py) plus a push source and its view, then ``apply`` and a full
``materialize`` of the workload, each in a fresh child process. Then both servers
start, with the same number of workers, and are measured over loopback:

* **probe**: the same 1-entity and 100-entity requests to both servers; answers are
  compared value by value (a value older than the view's ttl is null in tiffin and
  returned by Feast, so those are counted apart);
* **load**: wrk (closed loop, 16 connections, 1 thread so that the load generator
  takes one core at most) for ``--duration`` seconds per window, cycling through
  1,000 (1-entity) or 200 (100-entity) pre-built bodies of 8 features from 2 views;
  requests/s, latency percentiles, non-2xx responses and socket errors. Each side
  gets ``--repeats`` windows per request shape, taken in turn with the other
  side's (tiffin, Feast, tiffin, ...), so that both meet the same spells of a
  shared machine being fast or slow (single windows on the 2-core VM this was
  built on varied by 20-30% from one minute to the next). The report gives the
  median window of each figure and keeps every window;
* **push -> read**: push one new row over HTTP (``to: online``), then read it back
  over HTTP until it shows; the time from the push's response to the first read
  response that has the value (so one read latency at least), 200 times;
* server memory: the RSS of the server's whole process tree after the load.

tiffin's side can be served several ways at once (``--serve-variants``; see
serve_launch.py): ``tiffin serve`` itself (uvicorn's ``workers=N``), the same app
under gunicorn with uvicorn-worker, and ``uvicorn-workers``, the same server as
``tiffin serve`` started another way: a control that shows how far two windows of one
server differ on this machine. Each is one more server taking
its windows in turn; every window also records how many of the 16 connections each
server process holds.

``--soak S`` then loads tiffin's SQLite server for S seconds at 16 connections, in
60-second wrk windows, recording per window requests/s, p99, errors and the RSS.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import gen_data  # noqa: E402
import run as runner  # noqa: E402
import serve_launch  # noqa: E402
from side import FEATURES  # noqa: E402

LIBS = ["tiffin", "feast"]
LABEL = {"tiffin": "tiffin", "feast": "Feast", **{v: v for v in serve_launch.VARIANTS}}
# `make bench`'s servers: `tiffin serve` and tiffin's app under the libraries' own
# process managers (serve_launch.py), each in turn with Feast's.
DEFAULT_VARIANTS = "tiffin,gunicorn"
VARIANT_NOTE = {
    "tiffin": "`tiffin serve` (uvicorn's workers=N: the workers accept from one socket)",
    "uvicorn-workers": "uvicorn.run(workers=N) started by serve_launch.py, the same server "
                       "as `tiffin serve` (a control for window-to-window noise)",
    "gunicorn": "gunicorn + uvicorn-worker's UvicornWorker (likewise one shared socket)",
}
REDIS_DB = {"tiffin": 3, "feast": 4}  # one database per side, flushed before its apply
SHAPES = {"1": (1, 1000), "100": (100, 200)}  # entities per request, distinct bodies


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_rss_kib(pid: int) -> int:
    """RSS of ``pid`` and all its descendants (gunicorn/uvicorn workers), in KiB."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def request_bodies(meta: dict, n_entities: int, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    n_drv, n_cus = meta["drivers"], meta["customers"]
    out = []
    for _ in range(count):
        drivers = [gen_data.DRIVER_ID_BASE + rng.randrange(n_drv) for _ in range(n_entities)]
        customers = [gen_data.CUSTOMER_ID_BASE + rng.randrange(n_cus) for _ in range(n_entities)]
        out.append(
            json.dumps(
                {"features": FEATURES, "entities": {"driver_id": drivers, "customer_id": customers}},
                separators=(",", ":"),
            )
        )
    return out


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def post(self, path: str, body: str) -> tuple[int, bytes]:
        self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        return r.status, r.read()

    def get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path)
        r = self.conn.getresponse()
        return r.status, r.read()

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------- servers


class Server:
    def __init__(self, lib: str, python: str, repo: str, workers: int, env: dict, log: str):
        """``lib``: tiffin, feast, or one of serve_launch.VARIANTS (tiffin's app run
        another way)."""
        self.lib, self.port = lib, free_port()
        exe = os.path.join(os.path.dirname(python), lib)
        if lib in serve_launch.VARIANTS:
            cmd = [python, os.path.join(HERE, "serve_launch.py"), lib, "--port", str(self.port),
                   "--workers", str(workers)]
        elif lib == "tiffin":
            cmd = [exe, "serve", "--port", str(self.port), "--workers", str(workers)]
        else:
            cmd = [exe, "serve", "--port", str(self.port), "--workers", str(workers), "--no-access-log"]
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            cmd, cwd=repo, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, timeout: float = 120.0) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.lib} server exited with {self.proc.returncode}")
            try:
                c = Client(self.port, timeout=2)
                status, _ = c.get("/health")
                c.close()
                if status == 200:
                    return time.perf_counter() - t0
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.lib} server not ready after {timeout:.0f} s")

    def rss_kib(self) -> int:
        return tree_rss_kib(self.proc.pid)

    def connections_per_process(self) -> list[int]:
        """How many of the load's connections each process of the server holds, most
        first: how evenly the workers share them."""
        import psutil  # (tiffin's dev extra)

        counts = []
        try:
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]
        except psutil.Error:
            return []
        for p in procs:
            try:
                n = sum(1 for c in p.net_connections("tcp")
                        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port)
            except psutil.Error:
                continue
            if n:
                counts.append(n)
        return sorted(counts, reverse=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------- wrk

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def wrk(port: int, bodies: list[str], seconds: float, connections: int = 16, threads: int = 1) -> dict:
    """Run wrk against /get-online-features, cycling through ``bodies``; parse its summary."""
    if not shutil.which("wrk"):
        raise RuntimeError("wrk not found (apt-get install wrk)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write("local bodies = {\n")
        for b in bodies:
            f.write(f"[==[{b}]==],\n")
        f.write(
            "}\n"
            "local reqs = {}\n"
            "local i = 0\n"
            "init = function(args)\n"
            "  local h = {['Content-Type'] = 'application/json'}\n"
            "  for k, b in ipairs(bodies) do\n"
            "    reqs[k] = wrk.format('POST', '/get-online-features', h, b)\n"
            "  end\n"
            "  i = math.random(#reqs)\n"
            "end\n"
            "request = function()\n"
            "  i = i % #reqs + 1\n"
            "  return reqs[i]\n"
            "end\n"
        )
        script = f.name
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{int(seconds)}s",
                "--timeout",
                "10s",
                "--latency",
                "-s",
                script,
                f"http://127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script)
    res: dict = {"connections": connections, "threads": threads, "seconds": seconds}
    dist = re.search(r"Latency Distribution\s+50%\s+(\S+)\s+75%\s+(\S+)\s+90%\s+(\S+)\s+99%\s+(\S+)", out)
    if not dist:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    res["p50_ms"], res["p75_ms"], res["p90_ms"], res["p99_ms"] = (_ms(x) for x in dist.groups())
    res["max_ms"] = _ms(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1))
    res["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    res["requests_per_second"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["socket_errors"] = sum(map(int, sock.groups())) if sock else 0
    res["errors"] = res["non_2xx"] + res["socket_errors"]
    res["raw"] = out
    return res


# --------------------------------------------------------------------------- measurements


def probe(port: int, bodies: list[str]) -> list[dict]:
    """The answers to ``bodies`` as {column: values} (values only)."""
    c = Client(port)
    out = []
    try:
        for b in bodies:
            status, raw = c.post("/get-online-features", b)
            if status != 200:
                out.append({"__status__": status, "__body__": raw[:300].decode(errors="replace")})
                continue
            doc = json.loads(raw)
            names = doc["metadata"]["feature_names"]
            out.append({n: r["values"] for n, r in zip(names, doc["results"])})
    finally:
        c.close()
    return out


def compare_answers(a: list[dict], b: list[dict]) -> dict:
    res = {"values": 0, "mismatching_values": 0, "tiffin_null_feast_value": 0, "failed_requests": 0}
    for da, db in zip(a, b):
        if "__status__" in da or "__status__" in db:
            res["failed_requests"] += 1
            res.setdefault("failures", []).append({"tiffin": da.get("__body__"), "feast": db.get("__body__")})
            continue
        for k in sorted(set(da) | set(db)):
            va, vb = da.get(k) or [], db.get(k) or []
            for x, y in zip(va, vb):
                res["values"] += 1
                if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                    same = float(x) == float(y)
                else:
                    same = x == y
                if not same:
                    res["mismatching_values"] += 1
                    if x is None and y is not None:
                        res["tiffin_null_feast_value"] += 1
            res["mismatching_values"] += abs(len(va) - len(vb))
    return res


def push_visibility(port: int, rounds: int = 200, timeout_s: float = 2.0) -> dict:
    """Push one new row, then read it back until it shows; ``rounds`` times."""
    c = Client(port)
    push_ms, visible_ms, reads, failures = [], [], [], []
    base = 50_000_000 + random.randrange(1_000_000) * 1000  # fresh ids every run
    try:
        for i in range(rounds):
            driver = base + i
            value = i + 0.5  # exact in float32
            ts = datetime.now(timezone.utc).isoformat()
            body = json.dumps(
                {
                    "push_source_name": "driver_push",
                    "to": "online",
                    "df": {"driver_id": [driver], "event_timestamp": [ts], "conv_rate": [value]},
                }
            )
            read = json.dumps({"features": ["driver_live:conv_rate"], "entities": {"driver_id": [driver]}})
            t0 = time.perf_counter()
            status, raw = c.post("/push", body)
            t1 = time.perf_counter()
            if status >= 300:
                failures.append(f"push {status}: {raw[:300].decode(errors='replace')}")
                continue
            n, seen = 0, None
            while time.perf_counter() - t1 < timeout_s:
                status, raw = c.post("/get-online-features", read)
                n += 1
                if status == 200:
                    doc = json.loads(raw)
                    got = doc["results"][1]["values"][0]
                    if got is not None and abs(got - value) < 1e-6:
                        seen = time.perf_counter()
                        break
                else:
                    failures.append(f"read {status}: {raw[:300].decode(errors='replace')}")
                    break
            push_ms.append((t1 - t0) * 1e3)
            if seen is None:
                failures.append(f"row {i} not visible within {timeout_s} s")
            else:
                visible_ms.append((seen - t1) * 1e3)
                reads.append(n)
    finally:
        c.close()

    def pct(xs: list[float], q: float):
        if not xs:
            return None
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(q / 100 * len(xs) + 0.5)) - 1)]

    return {
        "rounds": rounds,
        "visible": len(visible_ms),
        "push_p50_ms": pct(push_ms, 50),
        "push_p99_ms": pct(push_ms, 99),
        "visible_p50_ms": pct(visible_ms, 50),
        "visible_p99_ms": pct(visible_ms, 99),
        "visible_max_ms": max(visible_ms) if visible_ms else None,
        "reads_needed_max": max(reads) if reads else None,
        "failures": failures[:5],
        "failure_count": len(failures),
    }


# --------------------------------------------------------------------------- driver


def _lib(side: str) -> str:
    """The library whose interpreter and feature repo a side uses."""
    return "feast" if side == "feast" else "tiffin"


def prepare_repo(lib, python, env, store, repo, data, logs) -> dict:
    """apply (+ push source) and a full materialize, each in a fresh child process."""
    shutil.rmtree(repo, ignore_errors=True)
    os.makedirs(repo)
    online = "sqlite"
    if store == "redis":
        import redis

        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB[lib]).flushdb()
        online = f"redis:127.0.0.1:6379,db={REDIS_DB[lib]}"
    out = {}
    for phase in ("apply", "materialize"):
        r = runner.run_child(
            env,
            python,
            lib,
            phase,
            repo,
            data,
            os.path.join(repo, f"{phase}.json"),
            os.path.join(logs, f"serve-{store}-{lib}-{phase}.log"),
            ["--online-store", online, "--push"] if phase == "apply" else [],
        )
        if not r.get("ok"):
            raise RuntimeError(f"{lib} {phase} failed: {r.get('error')}\n{r.get('traceback', '')}")
        out[phase + "_seconds"] = r["seconds"]
    return out


def measure_store(sides, pythons, envs, repos, store, workers, duration, repeats, bodies, logs,
                  wait_idle_s) -> None:
    """Both servers up; load windows in turn (see the module docstring); push; RSS."""
    servers = {}
    try:
        for lib in sides:
            base = _lib(lib)
            servers[lib] = Server(lib, pythons[base], repos[base], workers, envs[base],
                                  os.path.join(logs, f"serve-{store}-{lib}-server.log"))
        for lib, server in servers.items():
            res = sides[lib]
            try:
                res["startup_seconds"] = server.wait_ready()
                res["probe"] = {
                    shape: probe(server.port, b[:20] if shape == "1" else b[:5])
                    for shape, b in bodies.items()
                }
                for shape in bodies:
                    res[f"windows_{shape}"] = []
            except Exception as e:  # report, keep the other side running
                res["error"] = f"{type(e).__name__}: {e}"
                print(f"  {LABEL[lib]} {store} FAILED: {res['error']}", flush=True)
        live = [lib for lib in servers if "error" not in sides[lib]]
        for round_ in range(repeats):
            for shape, b in bodies.items():
                for lib in live:
                    if "error" in sides[lib]:
                        continue
                    try:
                        if wait_idle_s:
                            runner.wait_idle(wait_idle_s)
                        wrk(servers[lib].port, b, 3)  # warm every worker and connection
                        spread: list = []
                        sampler = threading.Timer(min(2.0, duration / 2), lambda s=servers[lib], out=spread:
                                                  out.extend(s.connections_per_process()))
                        sampler.start()
                        r = wrk(servers[lib].port, b, duration)
                        sampler.join()
                        r["connections_per_worker"] = spread
                    except Exception as e:
                        sides[lib]["error"] = f"{type(e).__name__}: {e}"
                        print(f"  {LABEL[lib]} {store} FAILED: {sides[lib]['error']}", flush=True)
                        continue
                    r.pop("raw", None)
                    sides[lib][f"windows_{shape}"].append(r)
                    print(
                        f"  [{datetime.now():%H:%M:%S}] {LABEL[lib]:21s} {store:6s} {shape:>3s} entities, "
                        f"window {round_ + 1}/{repeats}: {r['requests_per_second']:8,.0f} req/s  "
                        f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  errors {r['errors']}  "
                        f"connections per worker {spread}",
                        flush=True,
                    )
        for lib in live:
            res = sides[lib]
            if "error" in res:
                continue
            for shape in bodies:
                res[f"load_{shape}"] = median_window(res[f"windows_{shape}"])
            res["rss_after_load_kib"] = servers[lib].rss_kib()
            try:
                res["push"] = p = push_visibility(servers[lib].port)
            except Exception as e:
                res["error"] = f"{type(e).__name__}: {e}"
                continue
            print(
                f"  {LABEL[lib]:21s} {store:6s} push->read visible p50 {p['visible_p50_ms']} ms  "
                f"p99 {p['visible_p99_ms']} ms  failures {p['failure_count']}",
                flush=True,
            )
            res["ok"] = True
    finally:
        for server in servers.values():
            server.stop()


def median_window(windows: list[dict]) -> dict:
    """Each figure's median over the windows (errors: their sum), and every window's p99
    and requests/s."""
    out: dict = {"windows": len(windows)}
    for key in ("requests_per_second", "p50_ms", "p75_ms", "p90_ms", "p99_ms", "max_ms"):
        out[key] = statistics.median(w[key] for w in windows)
    for key in ("requests", "non_2xx", "socket_errors", "errors"):
        out[key] = sum(w[key] for w in windows)
    out["p99_ms_each"] = [w["p99_ms"] for w in windows]
    out["connections_per_worker_each"] = [w.get("connections_per_worker") for w in windows]
    out["requests_per_second_each"] = [w["requests_per_second"] for w in windows]
    return out


def soak(python, env, repo, workers, seconds, bodies, logs, window=60) -> dict:
    server = Server("tiffin", python, repo, workers, env, os.path.join(logs, "soak-server.log"))
    windows = []
    try:
        server.wait_ready()
        wrk(server.port, bodies, 3)
        left = seconds
        while left > 0:
            d = min(window, left)
            r = wrk(server.port, bodies, d)
            r.pop("raw")
            r["rss_kib"] = server.rss_kib()
            windows.append(r)
            print(
                f"  soak {len(windows):2d}: {r['requests_per_second']:8,.0f} req/s  "
                f"p99 {r['p99_ms']:.2f} ms  errors {r['errors']}  RSS {r['rss_kib'] / 1024:.0f} MiB",
                flush=True,
            )
            left -= d
    finally:
        server.stop()
    rss = [w["rss_kib"] for w in windows]
    return {
        "seconds": seconds,
        "windows": windows,
        "requests": sum(w["requests"] for w in windows),
        "errors": sum(w["errors"] for w in windows),
        "rss_first_window_mib": rss[0] / 1024 if rss else None,
        "rss_last_window_mib": rss[-1] / 1024 if rss else None,
        "rss_max_mib": max(rss) / 1024 if rss else None,
        "p99_max_ms": max(w["p99_ms"] for w in windows) if windows else None,
    }


def run(
    data: str,
    meta: dict,
    work: str,
    pythons: dict,
    envs: dict,
    libs: list[str],
    stores: list[str],
    duration: float,
    soak_seconds: float,
    workers: int,
    wait_idle_s: float = 0.0,
    repeats: int = 3,
    variants: list[str] | None = None,
) -> dict:
    """``variants``: the ways to serve tiffin's side (``tiffin`` is `tiffin serve`; the
    others are serve_launch.VARIANTS), each measured in turn with the others and Feast."""
    variants = variants or ["tiffin"]
    for v in variants:
        if v != "tiffin" and v not in serve_launch.VARIANTS:
            raise ValueError(f"unknown serve variant {v!r} (known: tiffin, "
                             f"{', '.join(serve_launch.VARIANTS)})")
    logs = os.path.join(work, "logs")
    os.makedirs(logs, exist_ok=True)
    bodies = {shape: request_bodies(meta, n, count, seed=11 + n) for shape, (n, count) in SHAPES.items()}
    report: dict = {"duration": duration, "repeats": repeats, "workers": workers,
                    "variants": variants, "stores": {}}
    for store in stores:
        sides: dict = {}
        repos = {}
        for lib in libs:
            repos[lib] = repo = os.path.join(work, f"serve-{store}", lib)
            print(f"[{datetime.now():%H:%M:%S}] {LABEL[lib]} {store}: apply + materialize ...", flush=True)
            try:
                prep = prepare_repo(lib, pythons[lib], envs[lib], store, repo, data, logs)
            except Exception as e:
                sides[lib] = {"ok": False, "error": str(e)}
                print(f"  FAILED: {e}", flush=True)
                continue
            for side in (variants if lib == "tiffin" else [lib]):  # one repo, many servers
                sides[side] = {"lib": side, "store": store, "workers": workers, "ok": False, **prep}
        if "tiffin" in sides and "error" in sides["tiffin"]:
            for v in variants:
                sides[v] = sides["tiffin"]
        measure_store({lib: r for lib, r in sides.items() if "error" not in r}, pythons, envs,
                      repos, store, workers, duration, repeats, bodies, logs, wait_idle_s)
        if all(sides.get(x, {}).get("ok") for x in LIBS):
            sides["answers"] = {
                shape: compare_answers(sides["tiffin"]["probe"][shape], sides["feast"]["probe"][shape])
                for shape in SHAPES
            }
        if sides.get("tiffin", {}).get("ok"):  # the same app however it is run
            for v in variants:
                if v != "tiffin" and sides[v].get("ok"):
                    sides[v]["differs_from_tiffin"] = sum(
                        compare_answers(sides["tiffin"]["probe"][shape], sides[v]["probe"][shape])
                        ["mismatching_values"] for shape in SHAPES)
        for side in sides.values():
            if isinstance(side, dict):
                side.pop("probe", None)
        report["stores"][store] = sides
    if soak_seconds > 0 and "tiffin" in libs and "sqlite" in stores:
        print(
            f"[{datetime.now():%H:%M:%S}] soak: tiffin sqlite, {soak_seconds:.0f} s at 16 connections",
            flush=True,
        )
        report["soak"] = soak(
            pythons["tiffin"],
            envs["tiffin"],
            os.path.join(work, "serve-sqlite", "tiffin"),
            workers,
            soak_seconds,
            bodies["1"],
            logs,
        )
    return report


# --------------------------------------------------------------------------- report


def _ratio(t: float | None, f: float | None) -> str:
    """tiffin/Feast with two significant digits, so that 0.016x does not print as 0.0x."""
    if t is None or not f:
        return "-"
    return f"{t / f:.2g}x" if t / f < 10 else f"{t / f:.1f}x"


def _sides(report: dict) -> list[str]:
    """The table's server columns: tiffin's variants in the order run, then Feast."""
    return [*report.get("variants", ["tiffin"]), "feast"]


def table(report: dict) -> list[list[str]]:
    rows = []
    sides = _sides(report)

    def val(store, lib, *path):
        r = report["stores"].get(store, {}).get(lib, {})
        if not r.get("ok"):
            return None
        for p in path:
            r = r.get(p) if isinstance(r, dict) else None
        return r

    def row(label, key_path, fmt, ratio):
        vals = [val(store, lib, *key_path) for lib in sides]
        t, f = val(store, "tiffin", *key_path), val(store, "feast", *key_path)
        return [label, *("-" if v is None else fmt(v) for v in vals), ratio(t, f) if ratio else "-"]

    for store in report["stores"]:
        for shape in SHAPES:
            for key, label, fmt in (
                ("requests_per_second", "req/s", "{:,.0f}"),
                ("p50_ms", "p50 ms", "{:.2f}"),
                ("p99_ms", "p99 ms", "{:.2f}"),
                ("errors", "errors", "{:d}"),
            ):
                rows.append(row(f"{store} {shape}-entity {label}", (f"load_{shape}", key),
                                fmt.format, _ratio if key != "errors" else None))
                if key == "p99_ms":  # the median hides nothing: every window's p99 too
                    rows.append(row(f"{store} {shape}-entity p99 ms, each window",
                                    (f"load_{shape}", "p99_ms_each"),
                                    lambda e: " / ".join(f"{x:.1f}" for x in e), None))
        for key, label in (
            ("visible_p50_ms", "push->read visible p50 ms"),
            ("visible_p99_ms", "push->read visible p99 ms"),
        ):
            rows.append(row(f"{store} {label}", ("push", key), "{:.2f}".format,
                            lambda t, f: f"{t / f:.2f}x" if t is not None and f else "-"))
        rows.append(row(f"{store} server RSS MiB", ("rss_after_load_kib",),
                        lambda v: f"{v / 1024:,.0f}",
                        lambda t, f: f"{t / f:.2f}x" if t and f else "-"))
    return rows


def header(report: dict) -> list[str]:
    return ["server", *(LABEL[x] for x in _sides(report)), "tiffin/Feast"]


def render_md(report: dict) -> str:
    rows = table(report)
    head = header(report)
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    notes = []
    if len(report.get("variants", [])) > 1:
        notes.append("tiffin's app served " + "; ".join(
            f"{v}: {VARIANT_NOTE[v]}" for v in report["variants"]))
    for store, sides in report["stores"].items():
        for lib in _sides(report):
            r = sides.get(lib)
            if r and not r.get("ok"):
                notes.append(f"FAILED {LABEL[lib]} {store}: {r.get('error')}")
            elif r and r["push"]["failure_count"]:
                notes.append(
                    f"{LABEL[lib]} {store} push: {r['push']['failure_count']} failures, "
                    f"e.g. {r['push']['failures'][:2]}"
                )
            if r and r.get("differs_from_tiffin"):
                notes.append(f"{LABEL[lib]} {store}: {r['differs_from_tiffin']} values differ "
                             "from `tiffin serve`'s answers")
        for shape, cmp_ in sides.get("answers", {}).items():
            notes.append(
                f"{store} {shape}-entity answers: {cmp_['mismatching_values']} of {cmp_['values']} "
                f"values differ ({cmp_['tiffin_null_feast_value']} are values older than the ttl: "
                f"null in tiffin, returned by Feast); failed requests {cmp_['failed_requests']}"
            )
    s = report.get("soak")
    if s:
        notes.append(
            f"soak (tiffin, sqlite, {s['seconds']:.0f} s at 16 connections): {s['requests']:,} requests, "
            f"{s['errors']} errors, worst window p99 {s['p99_max_ms']:.2f} ms, server RSS "
            f"{s['rss_first_window_mib']:.0f} MiB after the first minute, "
            f"{s['rss_last_window_mib']:.0f} MiB at the end (max {s['rss_max_mib']:.0f})"
        )
    return "\n".join(out) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--stores", default="sqlite,redis")
    ap.add_argument("--libs", default="tiffin,feast")
    ap.add_argument("--duration", type=float, default=20, help="seconds of wrk per window")
    ap.add_argument("--repeats", type=int, default=3, help="windows per side and request shape")
    ap.add_argument("--soak", type=float, default=0, help="seconds of tiffin soak (0: none)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--serve-variants", default=DEFAULT_VARIANTS,
                    help="how tiffin's side is served, comma-separated: tiffin (`tiffin serve`), "
                         + ", ".join(serve_launch.VARIANTS))
    ap.add_argument("--anchor", default="now")
    ap.add_argument("--wait-idle", type=float, default=0.0)
    ap.add_argument("--work", default=os.path.join(HERE, ".work"))
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    a = ap.parse_args()
    import record

    run_info = record.start(os.path.basename(__file__), a)
    libs = [x for x in a.libs.split(",") if x]
    pythons = {
        "tiffin": os.path.join(ROOT, ".venv", "bin", "python"),
        "feast": os.path.join(ROOT, ".venv-feast", "bin", "python"),
    }
    tag = f"scale-{a.scale:g}"
    data = os.path.join(HERE, ".data", tag)
    meta = gen_data.generate(data, a.scale, anchor=a.anchor)
    work = os.path.join(os.path.abspath(a.work), tag)
    pycache = os.path.join(os.path.abspath(a.work), "pycache")
    envs = {lib: runner.child_env(pycache) for lib in libs}
    for lib in libs:
        runner.warm_bytecode(pythons[lib], lib, envs[lib])
    report = run(
        data,
        meta,
        work,
        pythons,
        envs,
        libs,
        [x for x in a.stores.split(",") if x],
        a.duration,
        a.soak,
        a.workers,
        a.wait_idle,
        a.repeats,
        [x for x in a.serve_variants.split(",") if x],
    )
    report["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    md = render_md(report)
    path = record.write(run_info, {"serve": report}, [f"## Feature server\n\n{md}"], a.results)
    print("\n" + md + f"\nwrote {os.path.relpath(path, ROOT)} and its .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
