"""Materialization engines: move the latest row per entity from offline to online."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from tiffin.config import BackendConfig, RepoConfig
from tiffin.definitions import FeatureView
from tiffin.offline.base import OfflineStore
from tiffin.online.base import OnlineStore

Progress = Callable[[int], None]  # called with the number of rows just written


@dataclass
class MaterializeResult:
    view: str
    rows: int
    max_event_ts: datetime | None


class Engine(ABC):
    def __init__(self, config: BackendConfig, repo_config: RepoConfig):
        self.config = config
        self.repo_config = repo_config

    @abstractmethod
    def materialize(self, offline: OfflineStore, online: OnlineStore, view: FeatureView,
                    start: datetime | None, end: datetime,
                    progress: Progress | None = None) -> MaterializeResult:
        """Write the latest row per entity with start <= event_ts <= end to ``online``."""
