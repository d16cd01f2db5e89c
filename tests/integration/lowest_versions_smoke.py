"""The smoke run of test_lowest_versions.py, run by the interpreter of a venv that holds the
lowest versions pyproject.toml allows. Not a test module: it imports only tiffin and what
tiffin declares, and exits non-zero (with the reason) when something is wrong.

    python lowest_versions_smoke.py WORKDIR PROJECT REDIS_HOST:PORT POSTGRES_HOST

It builds the quickstart repository with `tiffin init`, then: `tiffin apply`, a training
set (checked against values computed here from the Parquet file, and read as Arrow and as
polars), `tiffin materialize`, `tiffin serve` with one worker and with two answering
/get-online-features over loopback, and the same materialization and reads through Redis
(the server's asyncio reader too) and PostgreSQL online stores.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import yaml

TIFFIN = [str(Path(sys.executable).with_name("tiffin"))]
FEATURES = ["driver_hourly_stats:conv_rate", "driver_hourly_stats:avg_daily_trips"]


def tiffin(*args: str, cwd: Path) -> str:
    done = subprocess.run([*TIFFIN, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        sys.exit(f"tiffin {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def rows_of(repo: Path) -> list[dict]:
    return pq.read_table(repo / "data" / "driver_stats.parquet").to_pylist()


def latest_at(rows: list[dict], driver: int, at: datetime, ttl: timedelta) -> dict | None:
    """The row a point-in-time join must pick: newest event time at or before ``at`` and
    within the view's ttl, the newest created time among equal event times."""
    seen = [r for r in rows if r["driver_id"] == driver and at - ttl <= r["event_timestamp"] <= at]
    return max(seen, key=lambda r: (r["event_timestamp"], r["created"]), default=None)


def check_online(answer: dict, rows: list[dict], drivers: list[int], what: str) -> None:
    end = max(r["event_timestamp"] for r in rows)
    names = answer["metadata"]["feature_names"]
    results = dict(zip(names, answer["results"]))
    for i, driver in enumerate(drivers):
        want = latest_at(rows, driver, end, timedelta(days=36500))
        got_rate = results["conv_rate"]["values"][i]
        got_trips = results["avg_daily_trips"]["values"][i]
        if want is None:
            ok = got_rate is None and got_trips is None
        else:
            ok = abs(got_rate - want["conv_rate"]) < 1e-6 and got_trips == want["avg_daily_trips"]
        if not ok:
            sys.exit(f"{what}: driver {driver}: got {got_rate}, {got_trips}; want {want}")


def serve(repo: Path, rows: list[dict], drivers: list[int], workers: int, what: str) -> None:
    port = free_port()
    args = [*TIFFIN, "serve", "--port", str(port), "--workers", str(workers)]
    with subprocess.Popen(args, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                        break
                except OSError:
                    if proc.poll() is not None:
                        sys.exit(f"{what}: tiffin serve exited:\n{proc.stderr.read()}")
                    if time.monotonic() > deadline:
                        sys.exit(f"{what}: tiffin serve did not answer /health in 60 s")
                    time.sleep(0.2)
            for _ in range(2 * workers):  # with two workers, connections reach both
                check_online(post(port, "/get-online-features",
                                  {"features": FEATURES, "entities": {"driver_id": drivers}}),
                             rows, drivers, what)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                sys.exit(f"{what}: tiffin serve did not stop on SIGTERM")


def training_set(repo: Path, rows: list[dict]) -> None:
    import pandas as pd

    from tiffin import FeatureStore

    drivers = sorted({r["driver_id"] for r in rows})
    times = sorted({r["event_timestamp"] for r in rows})
    # Between event times, on them, and before the data begins.
    asks = [(d, t) for d in drivers for t in (times[0] - timedelta(hours=1), times[3],
                                              times[len(times) // 2] + timedelta(minutes=30),
                                              times[-1])]
    entity_df = pd.DataFrame({"driver_id": [d for d, _ in asks],
                              "event_timestamp": [t for _, t in asks]})
    store = FeatureStore(repo_path=repo)
    try:
        job = store.get_historical_features(entity_df=entity_df, features=FEATURES)
        table = job.to_arrow()
        frame = job.to_polars()
    finally:
        store.close()
    for column in ("driver_id", "avg_daily_trips", "conv_rate"):
        if frame[column].to_list() != table.column(column).to_pylist():
            sys.exit(f"training set: to_polars() and to_arrow() differ in {column}")
    got = {(r["driver_id"], r["event_timestamp"]): (r["conv_rate"], r["avg_daily_trips"])
           for r in table.to_pylist()}
    if len(got) != len(asks):
        sys.exit(f"training set: {table.num_rows} rows for {len(asks)} entity rows")
    for d, t in asks:
        want = latest_at(rows, d, t, timedelta(days=1))
        rate, trips = got[(d, t)]
        ok = (rate is None and trips is None) if want is None else (
            abs(rate - want["conv_rate"]) < 1e-6 and trips == want["avg_daily_trips"])
        if not ok:
            sys.exit(f"training set: driver {d} at {t}: got {rate}, {trips}; want {want}")


def with_online_store(repo: Path, online: dict) -> None:
    config = yaml.safe_load((repo / "feature_store.yaml").read_text())
    config["online_store"] = online
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))


def main() -> None:
    # PROJECT is unique: the Redis and PostgreSQL servers are shared.
    work, name, redis_at, pg_host = Path(sys.argv[1]), *sys.argv[2:5]
    tiffin("init", name, cwd=work)
    repo = work / name
    rows = rows_of(repo)
    drivers = sorted({r["driver_id"] for r in rows}) + [-1]  # and one that is not there
    start = min(r["event_timestamp"] for r in rows) - timedelta(seconds=1)
    end = datetime.now(timezone.utc)
    if datetime.now(timezone.utc) - max(r["event_timestamp"] for r in rows) > timedelta(days=1):
        sys.exit("the sample data's newest rows are older than the view's ttl")

    tiffin("apply", cwd=repo)
    training_set(repo, rows)
    tiffin("materialize", start.isoformat(), end.isoformat(), cwd=repo)
    serve(repo, rows, drivers, 1, "sqlite, one worker")
    serve(repo, rows, drivers, 2, "sqlite, two workers")

    for online in ({"type": "redis", "connection_string": f"{redis_at},db=15"},
                   {"type": "postgres", "host": pg_host, "user": "postgres",
                    "database": "postgres", "db_schema": name}):
        with_online_store(repo, online)
        tiffin("apply", cwd=repo)
        try:
            tiffin("materialize", start.isoformat(), end.isoformat(), cwd=repo)
            serve(repo, rows, drivers, 1, online["type"])
        finally:
            tiffin("teardown", "--yes", cwd=repo)
    print("lowest-versions smoke run: ok", os.environ.get("VIRTUAL_ENV", sys.prefix))


if __name__ == "__main__":
    main()
