"""Synthetic workload for the tiffin vs Feast benchmark.

Writes three Parquet files into a cache directory and reuses them when the
parameters (scale, seed, generator version) match:

* ``drivers.parquet``   hourly rows, 30 days, ``10_000 * scale`` drivers, ~10% of
  rows dropped at random, plus a few thousand duplicated
  (driver_id, event_timestamp) pairs that differ in ``created`` and in values.
* ``customers.parquet`` daily rows, 60 days, ``100_000 * scale`` customers.
* ``entity_df.parquet`` ``1_000_000 * scale`` rows of (row_id, driver_id,
  customer_id, event_timestamp, label); ~1% unknown ids per key, ~1% of the
  timestamps before any driver data, ~5% exactly on an hour boundary.

Only numpy and pyarrow are used, so it runs under either virtualenv.

    python benchmarks/gen_data.py --scale 0.05 --data benchmarks/.data/scale-0.05
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

GEN_VERSION = 4
SEED = 20260101

US_PER_MIN = 60 * 1_000_000
US_PER_HOUR = 60 * US_PER_MIN
US_PER_DAY = 24 * US_PER_HOUR

# Driver data covers [start, start + 30 days), where the last hourly row sits at
# the anchor hour; customer data covers# the 60 days that end at the same instant.
# --anchor fixed: the last driver hour is 2026-01-30 23:00 UTC (data never changes).
# --anchor now (run.py's default): the last driver hour is the current hour, so the
# online phases read values younger than the views' ttl.  A library that enforces
# ttl on online reads would otherwise answer only nulls.
FIXED_ANCHOR = datetime(2026, 1, 30, 23, tzinfo=timezone.utc)
DRIVER_DAYS = 30
CUSTOMER_DAYS = 60

DRIVER_ID_BASE = 1_000
CUSTOMER_ID_BASE = 5_000_000
UNKNOWN_DRIVER_BASE = 900_000
UNKNOWN_CUSTOMER_BASE = 90_000_000

CITIES = np.array(
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
        "Nairobi",
        "Oslo",
        "Paris",
        "Pune",
        "Quito",
        "Rome",
        "Seoul",
        "Sydney",
        "Tokyo",
        "Toronto",
        "Warsaw",
    ],
    dtype=object,
)
TIERS = np.array(["bronze", "silver", "gold", "platinum"], dtype=object)

TS = pa.timestamp("us", tz="UTC")
ROW_GROUP = 250_000
ENTITY_ROW_GROUP = 100_000


def _us(dt: datetime) -> int:
    return int(dt.timestamp()) * 1_000_000


def sizes(scale: float) -> dict:
    return {
        "drivers": max(10, int(round(10_000 * scale))),
        "customers": max(10, int(round(100_000 * scale))),
        "entity_rows": max(100, int(round(1_000_000 * scale))),
        "driver_dups": max(5, int(round(3_000 * scale))),
    }


def _ts(values_us: np.ndarray) -> pa.Array:
    return pa.array(values_us.astype(np.int64), type=pa.int64()).cast(TS)


def make_drivers(rng: np.random.Generator, start: int, n_drivers: int, n_dups: int) -> pa.Table:
    hours = DRIVER_DAYS * 24
    # Row-major by hour, then driver: the order an hourly batch job would append.
    hour_idx = np.repeat(np.arange(hours, dtype=np.int64), n_drivers)
    drv_idx = np.tile(np.arange(n_drivers, dtype=np.int64), hours)
    keep = rng.random(hour_idx.size) >= 0.10
    hour_idx = hour_idx[keep]
    drv_idx = drv_idx[keep]
    n = hour_idx.size

    event = start + hour_idx * US_PER_HOUR
    created = event + rng.integers(0, 60, n) * US_PER_MIN
    driver_id = DRIVER_ID_BASE + drv_idx
    conv = rng.random(n, dtype=np.float32)
    acc = rng.random(n, dtype=np.float32)
    trips = rng.integers(0, 1_000, n).astype(np.int64)
    rating = np.round(rng.uniform(1.0, 5.0, n), 3)
    city = CITIES[rng.integers(0, CITIES.size, n)]

    # Duplicated (driver_id, event_timestamp) pairs: a later correction with a
    # strictly different `created` and different values, appended at the end.
    dup = rng.choice(n, size=min(n_dups, n), replace=False)
    d_created = created[dup] + rng.integers(1, 120, dup.size) * US_PER_MIN
    # Half of the corrections are *older* than the original, so "last row in
    # file order wins" and "max(created) wins" give different answers.
    older = rng.random(dup.size) < 0.5
    d_created = np.where(older, created[dup] - rng.integers(1, 120, dup.size) * US_PER_MIN, d_created)
    m = dup.size
    cols = {
        "driver_id": np.concatenate([driver_id, driver_id[dup]]),
        "event_timestamp": np.concatenate([event, event[dup]]),
        "created": np.concatenate([created, d_created]),
        "conv_rate": np.concatenate([conv, rng.random(m, dtype=np.float32)]),
        "acc_rate": np.concatenate([acc, rng.random(m, dtype=np.float32)]),
        "avg_daily_trips": np.concatenate([trips, rng.integers(0, 1_000, m).astype(np.int64)]),
        "rating": np.concatenate([rating, np.round(rng.uniform(1.0, 5.0, m), 3)]),
        "city": np.concatenate([city, CITIES[rng.integers(0, CITIES.size, m)]]),
    }
    return pa.table(
        {
            "driver_id": pa.array(cols["driver_id"], type=pa.int64()),
            "event_timestamp": _ts(cols["event_timestamp"]),
            "created": _ts(cols["created"]),
            "conv_rate": pa.array(cols["conv_rate"], type=pa.float32()),
            "acc_rate": pa.array(cols["acc_rate"], type=pa.float32()),
            "avg_daily_trips": pa.array(cols["avg_daily_trips"], type=pa.int64()),
            "rating": pa.array(cols["rating"], type=pa.float64()),
            "city": pa.array(cols["city"], type=pa.string()),
        }
    )


def make_customers(rng: np.random.Generator, start_drivers: int, n_customers: int) -> pa.Table:
    end = start_drivers + DRIVER_DAYS * US_PER_DAY
    start = end - CUSTOMER_DAYS * US_PER_DAY
    day_idx = np.repeat(np.arange(CUSTOMER_DAYS, dtype=np.int64), n_customers)
    cust_idx = np.tile(np.arange(n_customers, dtype=np.int64), CUSTOMER_DAYS)
    n = day_idx.size
    # Daily snapshot written at a random second of the first hour of the day.
    event = start + day_idx * US_PER_DAY + rng.integers(0, 3600, n) * 1_000_000
    created = event + rng.integers(0, 60, n) * US_PER_MIN
    return pa.table(
        {
            "customer_id": pa.array(CUSTOMER_ID_BASE + cust_idx, type=pa.int64()),
            "event_timestamp": _ts(event),
            "created": _ts(created),
            "spend": pa.array(np.round(rng.gamma(2.0, 40.0, n), 2), type=pa.float64()),
            "orders": pa.array(rng.integers(0, 50, n).astype(np.int64), type=pa.int64()),
            "tier": pa.array(TIERS[rng.integers(0, TIERS.size, n)], type=pa.string()),
        }
    )


def make_entity_df(
    rng: np.random.Generator, start: int, n_rows: int, n_drivers: int, n_customers: int
) -> pa.Table:
    span = DRIVER_DAYS * US_PER_DAY
    ts = start + rng.integers(0, span, n_rows)  # microsecond resolution
    on_hour = rng.random(n_rows) < 0.05  # exact hits on driver rows
    ts = np.where(on_hour, start + (ts - start) // US_PER_HOUR * US_PER_HOUR, ts)
    before = rng.random(n_rows) < 0.01  # before any driver data
    ts = np.where(before, start - rng.integers(1, 6 * US_PER_HOUR, n_rows), ts)

    driver_id = DRIVER_ID_BASE + rng.integers(0, n_drivers, n_rows)
    unk = rng.random(n_rows) < 0.01
    driver_id = np.where(unk, UNKNOWN_DRIVER_BASE + rng.integers(0, 10_000, n_rows), driver_id)
    customer_id = CUSTOMER_ID_BASE + rng.integers(0, n_customers, n_rows)
    unk = rng.random(n_rows) < 0.01
    customer_id = np.where(unk, UNKNOWN_CUSTOMER_BASE + rng.integers(0, 10_000, n_rows), customer_id)
    return pa.table(
        {
            "row_id": pa.array(np.arange(n_rows, dtype=np.int64)),
            "driver_id": pa.array(driver_id.astype(np.int64)),
            "customer_id": pa.array(customer_id.astype(np.int64)),
            "event_timestamp": _ts(ts),
            "label": pa.array(rng.integers(0, 2, n_rows).astype(np.int64)),
        }
    )


def _table_meta(t: pa.Table, ts_col: str = "event_timestamp") -> dict:
    import pyarrow.compute as pc

    mm = pc.min_max(t[ts_col])
    return {
        "rows": t.num_rows,
        "min_ts": mm["min"].as_py().isoformat(),
        "max_ts": mm["max"].as_py().isoformat(),
    }


def resolve_anchor(anchor: str) -> datetime:
    """'fixed', 'now' (current hour, UTC) or an ISO timestamp -> the last driver hour."""
    if anchor == "fixed":
        return FIXED_ANCHOR
    if anchor == "now":
        dt = datetime.now(timezone.utc)
    else:
        dt = datetime.fromisoformat(anchor)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def generate(data_dir: str, scale: float, force: bool = False, anchor: str = "fixed") -> dict:
    """Create (or reuse) the data set and return its metadata."""
    meta_path = os.path.join(data_dir, "meta.json")
    last_hour = resolve_anchor(anchor)
    want = {
        "gen_version": GEN_VERSION,
        "seed": SEED,
        "scale": scale,
        "anchor": last_hour.isoformat(),
        **sizes(scale),
    }
    if not force and os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        files_ok = all(
            os.path.exists(os.path.join(data_dir, n))
            for n in ("drivers.parquet", "customers.parquet", "entity_df.parquet")
        )
        if files_ok and all(meta.get(k) == v for k, v in want.items()):
            meta["reused"] = True
            return meta

    os.makedirs(data_dir, exist_ok=True)
    s = sizes(scale)
    rng = np.random.default_rng(SEED)
    meta = dict(want)
    start = _us(last_hour) - (DRIVER_DAYS * 24 - 1) * US_PER_HOUR
    drivers = make_drivers(rng, start, s["drivers"], s["driver_dups"])
    pq.write_table(drivers, os.path.join(data_dir, "drivers.parquet"), row_group_size=ROW_GROUP)
    meta["drivers_table"] = _table_meta(drivers)
    del drivers
    customers = make_customers(rng, start, s["customers"])
    pq.write_table(customers, os.path.join(data_dir, "customers.parquet"), row_group_size=ROW_GROUP)
    meta["customers_table"] = _table_meta(customers)
    del customers
    ent = make_entity_df(rng, start, s["entity_rows"], s["drivers"], s["customers"])
    pq.write_table(ent, os.path.join(data_dir, "entity_df.parquet"), row_group_size=ENTITY_ROW_GROUP)
    meta["entity_table"] = _table_meta(ent)
    del ent
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2)
    meta["reused"] = False
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--data", default=None, help="output dir (default benchmarks/.data/scale-S)")
    ap.add_argument("--force", action="store_true", help="regenerate even if cached")
    ap.add_argument(
        "--anchor", default="fixed", help="last driver hour: 'fixed' (2026-01-30T23Z), 'now' or ISO"
    )
    a = ap.parse_args()
    data = a.data or os.path.join(os.path.dirname(os.path.abspath(__file__)), ".data", f"scale-{a.scale:g}")
    print(json.dumps(generate(data, a.scale, a.force, a.anchor), indent=2))


if __name__ == "__main__":
    main()
