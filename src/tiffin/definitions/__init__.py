"""Feature repository objects, with Feast 0.67's names and arguments."""

from tiffin.definitions.base import Definition
from tiffin.definitions.entity import Entity
from tiffin.definitions.feature_service import FeatureService, Project
from tiffin.definitions.feature_view import BatchFeatureView, FeatureView, Projection
from tiffin.definitions.field import Field
from tiffin.definitions.on_demand import (
    FileLoggingDestination,
    LoggingConfig,
    OnDemandFeatureView,
    on_demand_feature_view,
)
from tiffin.definitions.saved_dataset import (
    SavedDataset,
    SavedDatasetFileStorage,
    SavedDatasetStorage,
)
from tiffin.definitions.sources import (
    DataSource,
    FileSource,
    ParquetFormat,
    PushSource,
    RequestSource,
)

# Feast exports these from its top level, so they are imported here though each lives
# in (and registers from) its offline store's folder like any plugin source.
from tiffin.offline.postgres.source import PostgreSQLSource  # noqa: E402
from tiffin.offline.spark.source import SparkSource  # noqa: E402

__all__ = [
    "Definition", "Entity", "Field", "FeatureView", "BatchFeatureView", "Projection",
    "FeatureService", "Project", "DataSource", "FileSource", "ParquetFormat", "PushSource",
    "RequestSource", "OnDemandFeatureView", "on_demand_feature_view", "LoggingConfig",
    "FileLoggingDestination", "SavedDataset", "SavedDatasetStorage", "SavedDatasetFileStorage",
    "SparkSource", "PostgreSQLSource",
]
