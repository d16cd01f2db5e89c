"""``tiffin init``: a new feature repository with generated sample data."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from importlib.resources import files
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tiffin.errors import RequestError

TEMPLATE = "local"


def sample_driver_stats(drivers: int = 5, days: int = 15, seed: int = 7,
                        end: datetime | None = None) -> pa.Table:
    """Hourly stats per driver over the last ``days`` days, ending at the current hour."""
    rng = np.random.default_rng(seed)
    end = (end or datetime.now(timezone.utc)).replace(minute=0, second=0, microsecond=0)
    hours = days * 24
    start = end - timedelta(hours=hours - 1)
    ts = np.datetime64(start.replace(tzinfo=None), "us") + \
        np.arange(hours).astype("timedelta64[h]").astype("timedelta64[us]")
    ids = np.repeat(np.arange(1001, 1001 + drivers, dtype=np.int64), hours)
    event = np.tile(ts, drivers)
    n = len(ids)
    cities = np.array(["Lisbon", "Porto", "Braga", "Faro"])
    return pa.table({
        "driver_id": ids,
        "event_timestamp": pa.array(event, pa.timestamp("us", tz="UTC")),
        "created": pa.array(event + rng.integers(1, 600, n).astype("timedelta64[s]"),
                            pa.timestamp("us", tz="UTC")),
        "conv_rate": rng.random(n, dtype=np.float32),
        "acc_rate": rng.random(n, dtype=np.float32),
        "avg_daily_trips": rng.integers(0, 1000, n),
        "city": cities[(ids - 1001) % len(cities)],
    })


def init_repo(name: str, parent: str | Path = ".") -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise RequestError(f"project name {name!r} must be letters, digits, '_' or '-'")
    repo = Path(parent) / name
    if repo.exists() and any(repo.iterdir()):
        raise RequestError(f"{repo} already exists and is not empty",
                           hint="choose another name or remove the folder")
    template = files("tiffin.templates") / TEMPLATE
    (repo / "data").mkdir(parents=True, exist_ok=True)
    for entry in template.iterdir():
        if entry.is_file() and entry.name != "__init__.py":
            (repo / entry.name).write_text(entry.read_text().replace("{project}", name))
    pq.write_table(sample_driver_stats(), repo / "data" / "driver_stats.parquet")
    return repo
