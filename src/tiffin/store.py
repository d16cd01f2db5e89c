"""``FeatureStore``: a thin facade that wires the registry, stores and engine together.

>>> store = FeatureStore(repo_path="feature_repo")                            # doctest: +SKIP
>>> training = store.get_historical_features(entity_df, features=[
...     "driver_hourly_stats:conv_rate"]).to_df()                                # doctest: +SKIP
>>> store.materialize_incremental(end_date=datetime.now(timezone.utc))         # doctest: +SKIP
>>> store.get_online_features(["driver_hourly_stats:conv_rate"],
...                           [{"driver_id": 1001}]).to_dict()                 # doctest: +SKIP
>>> store.create_saved_dataset(from_=store.get_historical_features(entity_df, features),
...     name="training_v1",
...     storage=SavedDatasetFileStorage(path="data/training_v1.parquet"))       # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from tiffin import push as push_mod
from tiffin import repo as repo_mod
from tiffin.config import RepoConfig, load_repo_config
from tiffin.definitions import (
    DataSource,
    Definition,
    Entity,
    FeatureService,
    FeatureView,
    SavedDataset,
    SavedDatasetStorage,
)
from tiffin.errors import RequestError
from tiffin.features import FeaturePlan, plan_features
from tiffin.materialize.base import Engine, MaterializeResult
from tiffin.offline import saved_datasets
from tiffin.offline.base import OfflineStore, RetrievalJob, historical_job
from tiffin.online.base import OnlineStore
from tiffin.online.reader import OnlineResponse, read_online, read_online_async
from tiffin.push import PushMode
from tiffin.registry import Diff, Registry, open_registry
from tiffin.transform import on_demand_offline

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_utc(ts: datetime | str, what: str = "timestamp") -> datetime:
    """ISO strings and datetimes; naive means UTC (as everywhere in tiffin)."""
    if isinstance(ts, str):
        try:
            ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        except ValueError:
            raise RequestError(f"{what} {ts!r} is not an ISO 8601 timestamp",
                               hint="e.g. 2026-11-25T12:00:00") from None
    if not isinstance(ts, datetime):
        raise RequestError(f"{what} must be a datetime, got {type(ts).__name__}")
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


class FeatureStore:
    """The SDK entry point. Construct from a repository path (reads ``feature_store.yaml``)
    or from a ``RepoConfig``; the same arguments as Feast's ``FeatureStore``."""

    def __init__(self, repo_path: str | os.PathLike | None = None,
                 config: RepoConfig | None = None,
                 fs_yaml_file: str | os.PathLike | None = None):
        if config is None:
            config = load_repo_config(repo_path or ".", fs_yaml_file)
        elif config.repo_path is None:
            config = config.model_copy(update={"repo_path": Path(repo_path or ".").resolve()})
        self.config = config
        self.repo_path = config.repo_path
        self.registry: Registry = open_registry(config)
        self._plans: dict[tuple, tuple[int, FeaturePlan]] = {}
        # Push source name -> (registry snapshot, its batch source's schema): see push.py.
        self._push_schemas: dict[str, tuple[Any, Any]] = {}

    @property
    def project(self) -> str:
        return self.config.project

    # -- backends, built on first use so a CLI `plan` never opens the online store ------
    @cached_property
    def offline_store(self) -> OfflineStore:
        cfg = self.config.offline_store
        return cfg.store_class()(cfg, self.config)

    @cached_property
    def online_store(self) -> OnlineStore:
        cfg = self.config.online_store
        if cfg is None:
            raise RequestError("this repository has no online store (online_store: null)")
        return cfg.store_class()(cfg, self.config)

    @cached_property
    def engine(self) -> Engine:
        cfg = self.config.batch_engine
        return cfg.store_class()(cfg, self.config)

    def close(self) -> None:
        for name in ("offline_store", "online_store"):
            if name in self.__dict__:
                self.__dict__[name].close()

    async def aclose(self) -> None:
        """``close`` from an event loop (a server's shutdown): the online store's async
        clients are closed on the loop they belong to."""
        online = self.__dict__.get("online_store")
        if online is not None:
            await online.aclose()
        if "offline_store" in self.__dict__:
            self.__dict__["offline_store"].close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- registry ------------------------------------------------------------------------
    def refresh_registry(self) -> None:
        self.registry.refresh()

    def _resolve(self, objects: Iterable[Definition], check_sources: bool = True
                 ) -> list[Definition]:
        return repo_mod.resolve(objects, project=self.project,
                                snapshot=self.registry.snapshot(allow_cache=False),
                                source_schema=self.offline_store.source_schema,
                                check_sources=check_sources)

    def plan(self, objects: Iterable[Definition], partial: bool = False) -> Diff:
        """What ``apply`` would change; changes nothing."""
        return self.registry.plan(self._resolve(objects), partial=partial)

    def apply(self, objects: Definition | Iterable[Definition],
              objects_to_delete: Iterable[Definition] | None = None, partial: bool = True,
              **_feast_only: Any) -> Diff:
        """Register objects (additive, as in Feast): only ``objects_to_delete`` are removed,
        or everything absent from ``objects`` when ``partial=False``."""
        if isinstance(objects, Definition):
            objects = [objects]
        resolved = self._resolve(objects)
        diff = self.registry.apply(resolved, delete=list(objects_to_delete or []),
                                   partial=partial)
        self._sync_infra(diff)
        return diff

    def _sync_infra(self, diff: Diff) -> None:
        if self.config.online_store is None:
            return
        views = self.registry.snapshot().list("feature_views")
        keep = [v for v in views if v.online]
        dropped = [FeatureView.from_dict(c.old) for c in diff.of("delete", "feature_views")
                   if c.old]
        dropped += [v for v in views if not v.online]
        self.online_store.prepare(keep, dropped)

    def teardown(self) -> None:
        """Drop online tables and the project's registry entries."""
        if self.config.online_store is not None:
            self.online_store.teardown(self.registry.list("feature_views", allow_cache=False))
        self.registry.delete_project()

    def get_entity(self, name: str, allow_registry_cache: bool = True) -> Entity:
        return self.registry.get("entities", name, allow_registry_cache)

    def get_feature_view(self, name: str, allow_registry_cache: bool = True) -> FeatureView:
        return self.registry.get("feature_views", name, allow_registry_cache)

    def get_feature_service(self, name: str, allow_cache: bool = True) -> FeatureService:
        return self.registry.get("feature_services", name, allow_cache)

    def get_data_source(self, name: str) -> DataSource:
        return self.registry.get("data_sources", name)

    def list_entities(self, allow_cache: bool = True, tags: dict[str, str] | None = None
                      ) -> list[Entity]:
        return self.registry.list("entities", tags, allow_cache)

    def list_feature_views(self, allow_cache: bool = True, tags: dict[str, str] | None = None
                           ) -> list[FeatureView]:
        return self.registry.list("feature_views", tags, allow_cache)

    list_all_feature_views = list_feature_views
    list_batch_feature_views = list_feature_views

    def list_feature_services(self, tags: dict[str, str] | None = None
                              ) -> list[FeatureService]:
        return self.registry.list("feature_services", tags)

    def list_data_sources(self, allow_cache: bool = True, tags: dict[str, str] | None = None
                          ) -> list[DataSource]:
        return self.registry.list("data_sources", tags, allow_cache)

    # -- retrieval -----------------------------------------------------------------------
    def _plan(self, features: Any, full_feature_names: bool) -> FeaturePlan:
        snap = self.registry.snapshot()
        if isinstance(features, (list, tuple)):
            key = (tuple(features), full_feature_names)
            cached = self._plans.get(key)
            if cached is not None and cached[0] is snap:  # type: ignore[comparison-overlap]
                return cached[1]
            plan = plan_features(snap, features, full_feature_names)
            if len(self._plans) > 1024:
                self._plans.clear()
            self._plans[key] = (snap, plan)  # type: ignore[assignment]
            return plan
        return plan_features(snap, features, full_feature_names)

    def get_historical_features(self, entity_df: Any = None,
                                features: Sequence[str] | FeatureService = (),
                                full_feature_names: bool = False, **_feast_only: Any
                                ) -> RetrievalJob:
        """Point-in-time-correct feature values for every row of ``entity_df``."""
        if entity_df is None:
            raise RequestError("entity_df is required",
                               hint="pass a DataFrame/Arrow table/Parquet path with join keys "
                                    "and an event_timestamp column")
        plan = self._plan(features, full_feature_names)
        job, entity_columns = historical_job(self.offline_store, entity_df, plan,
                                             full_feature_names)
        # What create_saved_dataset records, whatever the backend put in the metadata.
        job.metadata.setdefault("feature_refs", plan.feature_refs)
        job.metadata.setdefault("keys", plan.entity_columns)
        if not plan.odfvs:
            return job
        # On-demand views run on the joined rows, in this process, whatever the store.

        def reader(batch_rows: int) -> Any:
            import pyarrow as pa
            out = on_demand_offline(job.to_arrow(), plan, entity_columns)
            return pa.RecordBatchReader.from_batches(out.schema, out.to_batches(batch_rows))

        return RetrievalJob(reader, full_feature_names=full_feature_names,
                            metadata={**job.metadata, "features": plan.output_names})

    def get_online_features(self, features: Sequence[str] | FeatureService,
                            entity_rows: Any, full_feature_names: bool = False,
                            **_feast_only: Any) -> OnlineResponse:
        """Latest values for each entity row, with a status per value."""
        plan = self._plan(features, full_feature_names)
        return read_online(self.online_store, plan, entity_rows)

    async def get_online_features_async(self, features: Sequence[str] | FeatureService,
                                        entity_rows: Any, full_feature_names: bool = False,
                                        **_feast_only: Any) -> OnlineResponse:
        """``get_online_features`` for an event loop, which it never blocks: a store with
        an async client (Redis, PostgreSQL) is awaited, any other reads in a worker thread
        (SQLite's microsecond reads stay on the loop)."""
        plan = self._plan(features, full_feature_names)
        return await read_online_async(self.online_store, plan, entity_rows)

    # -- saved datasets ------------------------------------------------------------------
    def create_saved_dataset(self, from_: RetrievalJob, name: str, storage: SavedDatasetStorage,
                             tags: dict[str, str] | None = None,
                             feature_service: FeatureService | str | None = None,
                             allow_overwrite: bool = False, **_feast_only: Any
                             ) -> SavedDataset:
        """Write a retrieval's rows to ``storage`` (streamed, never all in memory) and
        register them as saved dataset ``name``. A name or file already taken is a
        RequestError unless ``allow_overwrite``."""
        if not isinstance(from_, RetrievalJob) or "feature_refs" not in from_.metadata:
            raise RequestError("from_ must be the RetrievalJob of get_historical_features",
                               hint="job = store.get_historical_features(entity_df, features)")
        if not isinstance(storage, SavedDatasetStorage):
            raise RequestError(f"storage must be a SavedDatasetStorage, got {storage!r}",
                               hint="storage=SavedDatasetFileStorage(path='data/x.parquet')")
        meta = from_.metadata
        dataset = SavedDataset(name=name, features=meta["feature_refs"],
                               join_keys=meta.get("keys", []), storage=storage,
                               full_feature_names=from_.full_feature_names, tags=tags,
                               feature_service_name=getattr(feature_service, "name",
                                                            feature_service))
        dataset.min_event_timestamp = meta.get("min_event_timestamp")
        dataset.max_event_timestamp = meta.get("max_event_timestamp")
        if not allow_overwrite:  # before writing anything; checked again on commit
            self.registry.check_saved_dataset_name(name)
        saved_datasets.persist(self.offline_store, from_, storage, allow_overwrite,
                               self.repo_path)
        self.registry.apply_saved_dataset(dataset, allow_overwrite)
        return self._attach(dataset)

    def get_saved_dataset(self, name: str) -> SavedDataset:
        """A saved dataset by name; ``.to_df()``, ``.to_arrow()``, ``.to_polars()`` read it."""
        return self._attach(self.registry.get("saved_datasets", name, allow_cache=False))

    def list_saved_datasets(self, allow_cache: bool = False,
                            tags: dict[str, str] | None = None, **_feast_only: Any
                            ) -> list[SavedDataset]:
        return [self._attach(d) for d in self.registry.list("saved_datasets", tags, allow_cache)]

    def _attach(self, dataset: SavedDataset) -> SavedDataset:
        return dataset.with_reader(lambda batch_rows: saved_datasets.read(
            self.offline_store, dataset, self.repo_path, batch_rows))

    # -- writes --------------------------------------------------------------------------
    def push(self, push_source_name: str, df: Any, allow_registry_cache: bool = True,
             to: PushMode | str = PushMode.ONLINE, **_feast_only: Any) -> int:
        """Write fresh rows for every feature view fed by a push source: online, offline
        (appended to its batch source) or both. Checked whole first; returns the row count."""
        return push_mod.push(self, push_source_name, df, to, allow_registry_cache)

    def write_to_online_store(self, feature_view_name: str, df: Any = None,
                              allow_registry_cache: bool = True, inputs: Any = None,
                              **_feast_only: Any) -> int:
        """Write rows straight to one view's online table (monotonic in event time)."""
        data = df if df is not None else inputs
        if data is None:
            raise RequestError("write_to_online_store needs df")
        return push_mod.write_to_online_store(self, feature_view_name, data,
                                              allow_registry_cache)

    # -- materialization -----------------------------------------------------------------
    def _views(self, names: Sequence[str] | None) -> list[FeatureView]:
        if names:
            return [self.get_feature_view(n, allow_registry_cache=False) for n in names]
        return [v for v in self.registry.list("feature_views", allow_cache=False) if v.online]

    def materialize(self, start_date: datetime | str, end_date: datetime | str,
                    feature_views: Sequence[str] | None = None,
                    progress: Callable[[str, int], None] | None = None, **_feast_only: Any
                    ) -> list[MaterializeResult]:
        """Load the latest row per entity with start <= event time <= end into the online store."""
        start, end = to_utc(start_date, "start_date"), to_utc(end_date, "end_date")
        if start > end:
            raise RequestError(f"start {start.isoformat()} is after end {end.isoformat()}")
        return self._materialize([(v, start) for v in self._views(feature_views)], end,
                                 progress)

    def materialize_incremental(self, end_date: datetime | str,
                                feature_views: Sequence[str] | None = None,
                                progress: Callable[[str, int], None] | None = None,
                                **_feast_only: Any) -> list[MaterializeResult]:
        """Materialize each view from where its last run ended (first run: end - ttl, or all
        history for views without a ttl) up to ``end_date``."""
        end = to_utc(end_date, "end_date")
        snap = self.registry.snapshot(allow_cache=False)
        work: list[tuple[FeatureView, datetime | None]] = []
        for view in self._views(feature_views):
            mark = snap.materialization(view.name)["watermark"]
            if mark is not None:
                work.append((view, datetime.fromisoformat(mark)))
            else:
                work.append((view, end - view.ttl if view.ttl else None))
        return self._materialize(work, end, progress)

    def _materialize(self, work: list[tuple[FeatureView, datetime | None]], end: datetime,
                     progress: Callable[[str, int], None] | None) -> list[MaterializeResult]:
        for view, _ in work:
            if not view.online:
                raise RequestError(f"feature view {view.name!r} has online=False")
        self.online_store.prepare([view for view, _ in work], [])

        def run(view: FeatureView, start: datetime | None) -> MaterializeResult:
            report = (lambda n: progress(view.name, n)) if progress else None
            result = self.engine.materialize(self.offline_store, self.online_store, view,
                                             start, end, report)
            self.registry.record_materialization(view.name, start or EPOCH, end)
            return result

        if len(work) == 1:
            return [run(*work[0])]
        # Two views at a time: one view's offline query runs while another's rows are being
        # written online, so neither the CPU-bound scan nor the write waits for the other.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="tiffin-materialize") as pool:
            return list(pool.map(lambda w: run(*w), work))

    def __repr__(self) -> str:
        return f"FeatureStore(project={self.project!r}, repo_path={str(self.repo_path)!r})"
