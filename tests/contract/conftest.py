"""Harness for the offline-store contract suite.

Every test in ``tests/contract`` takes the ``offline_backend`` fixture and so runs once per
backend. A backend object knows how to turn an Arrow table into a tiffin data source that
its offline store can read (``make_source``), what ``offline_store:`` config selects it
(``offline_config``) and how to ask it for a training set (``get_historical_features``).

To run the suite against a new offline store, write a class with those three methods
(plus ``name``) and add it to ``BACKENDS``; the test functions do not change.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tiffin import DataSource, FeatureStore, FileSource, RepoConfig, RetrievalJob


class DuckDBBackend:
    """Sources are Parquet files under the test's tmp_path, read by the duckdb offline store.

    ``strategy`` picks how the store joins: ``"auto"`` is what
    ``FeatureStore.get_historical_features`` does (for these small sources, the in-memory
    merge); ``"memory"`` forces that merge, ``"asof"`` DuckDB's ASOF SQL (what large
    sources get) and ``"window"`` the portable ROW_NUMBER() SQL later backends use. The
    forced ones are reached through the store's internals.
    """

    def __init__(self, root: Path, strategy: str = "auto"):
        self.root = root
        self.strategy = strategy
        self.name = f"duckdb-{strategy}"

    def offline_config(self) -> dict[str, Any]:
        return {"type": "duckdb"}

    def make_source(self, name: str, table: pa.Table, *, timestamp_field: str = "event_timestamp",
                    created_timestamp_column: str = "",
                    field_mapping: dict[str, str] | None = None) -> DataSource:
        path = self.root / "data" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        return FileSource(name=name, path=str(path), timestamp_field=timestamp_field,
                          created_timestamp_column=created_timestamp_column,
                          field_mapping=field_mapping)

    def get_historical_features(self, store: FeatureStore, entity_df: Any, features: Any,
                                full_feature_names: bool = False) -> RetrievalJob:
        if self.strategy == "auto":
            return store.get_historical_features(entity_df=entity_df, features=features,
                                                 full_feature_names=full_feature_names)
        from tiffin.offline.base import prepare_entity
        plan = store._plan(features, full_feature_names)
        table, ts = prepare_entity(entity_df, plan)
        return store.offline_store.get_historical_features(table, ts, plan, full_feature_names,
                                                           strategy=self.strategy)


# name -> factory(root directory) ; add PostgreSQL / Spark backends here.
BACKENDS: dict[str, Callable[[Path], Any]] = {
    "duckdb": lambda root: DuckDBBackend(root, "auto"),
    "duckdb-memory": lambda root: DuckDBBackend(root, "memory"),
    "duckdb-asof": lambda root: DuckDBBackend(root, "asof"),
    "duckdb-window": lambda root: DuckDBBackend(root, "window"),
}


@pytest.fixture(params=list(BACKENDS))
def offline_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
def make_store(offline_backend: Any, tmp_path: Path):
    """``make_store(entity, view, ...)``: a FeatureStore in tmp_path with the objects applied."""
    stores: list[FeatureStore] = []

    def make(*objects: Any) -> FeatureStore:
        root = tmp_path / f"repo{len(stores)}"
        root.mkdir()
        cfg = RepoConfig(project="contract", registry=str(root / "registry.json"),
                         provider="local",
                         online_store={"type": "sqlite", "path": str(root / "online.db")},
                         offline_store=offline_backend.offline_config())
        store = FeatureStore(repo_path=root, config=cfg)
        stores.append(store)
        store.apply(list(objects))
        return store

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def hist(offline_backend: Any) -> Callable[..., RetrievalJob]:
    """``hist(store, entity_df, features, full_feature_names=False)`` on the backend under test."""
    return offline_backend.get_historical_features
