"""tiffin: a feature store for machine learning, with Feast 0.67's definitions and API.

>>> from tiffin import Entity, FeatureView, Field, FileSource, FeatureStore
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from tiffin import _compat
from tiffin.config import RepoConfig
from tiffin.definitions import (
    BatchFeatureView,
    DataSource,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    OnDemandFeatureView,
    ParquetFormat,
    PostgreSQLSource,
    Project,
    PushSource,
    RequestSource,
    SparkSource,
)
from tiffin.offline.base import RetrievalJob
from tiffin.online.reader import FieldStatus, OnlineResponse
from tiffin.push import PushMode
from tiffin.store import FeatureStore
from tiffin.types import ValueType

try:
    __version__ = _version("tiffin")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"

_compat.install()

__all__ = [
    "BatchFeatureView", "DataSource", "Entity", "FeatureService", "FeatureStore", "FeatureView",
    "Field", "FieldStatus", "FileSource", "OnDemandFeatureView", "OnlineResponse",
    "ParquetFormat", "PostgreSQLSource", "Project", "PushMode", "PushSource", "RepoConfig", "RequestSource",
    "RetrievalJob", "SparkSource", "ValueType",
    "__version__",
]
# As in Feast, the decorator lives in its module: tiffin.on_demand_feature_view is that module
# (from tiffin.on_demand_feature_view import on_demand_feature_view).
