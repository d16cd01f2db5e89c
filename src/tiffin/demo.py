"""The quickstart, end to end: ``python -m tiffin.demo [FOLDER]`` (what ``make demo`` runs).

1. ``tiffin init``: a repository with a week of hourly driver stats (Parquet).
2. ``tiffin apply``: validate and register the definitions.
3. ``get_historical_features``: a point-in-time-correct training set.
4. ``tiffin materialize-incremental``: load the latest values into SQLite.
5. ``get_online_features``: read them back, with a status per value.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd


def _step(n: int, title: str) -> None:
    print(f"\n== {n}. {title}")


def _tiffin(*args: str, cwd: Path) -> None:
    print(f"$ tiffin {' '.join(args)}")
    subprocess.run([sys.executable, "-m", "tiffin.cli", *args], cwd=cwd, check=True)


def main(folder: str = "demo_repo") -> None:
    from tiffin import FeatureStore

    pd.set_option("display.width", 120)
    pd.set_option("display.max_columns", 20)
    target = Path(folder).resolve()
    if target.exists():
        shutil.rmtree(target)  # the demo always starts from scratch
    _step(1, "Create a feature repository with sample data")
    _tiffin("init", target.name, cwd=target.parent)
    print(f"files: {', '.join(sorted(p.name for p in target.iterdir()))}")

    _step(2, "Register the definitions")
    _tiffin("apply", cwd=target)

    _step(3, "Build a training set (point-in-time correct)")
    store = FeatureStore(repo_path=target)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    entity_df = pd.DataFrame({
        "driver_id": [1001, 1002, 1003, 1001, 1004, 4242],
        "event_timestamp": [now - timedelta(hours=h) for h in (1, 5, 26, 72, 2, 1)],
        "label_trip_completed": [1, 0, 1, 1, 0, 1],
    })
    print("entity_df (one row per training example; 4242 is an unknown driver):")
    print(entity_df.to_string(index=False))
    training = store.get_historical_features(
        entity_df=entity_df,
        features=["driver_hourly_stats:conv_rate", "driver_hourly_stats:acc_rate",
                  "driver_hourly_stats:avg_daily_trips", "driver_hourly_stats:city"],
    ).to_df()
    print("\ntraining set (each row sees only values at or before its own timestamp):")
    print(training.to_string(index=False))

    _step(4, "Load the latest values into the online store")
    _tiffin("materialize-incremental", now.isoformat(), cwd=target)

    _step(5, "Read online features")
    store.refresh_registry()
    response = store.get_online_features(
        features=store.get_feature_service("driver_activity_v1"),
        entity_rows=[{"driver_id": 1001}, {"driver_id": 1002}, {"driver_id": 4242}],
    )
    table = pd.DataFrame(response.to_dict(), dtype=object)  # keep ints as ints beside None
    for name, statuses in response.statuses.items():
        table[f"{name} status"] = [s.name for s in statuses]
    print(table.to_string(index=False))
    store.close()
    print(f"\nDone. The repository is in {target}; try `tiffin -c {target} feature-views list`.")


if __name__ == "__main__":
    main(*sys.argv[1:2])
