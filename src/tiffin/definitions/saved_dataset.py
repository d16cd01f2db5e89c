"""Saved datasets: a training set written once, registered by name, read back later.

>>> job = store.get_historical_features(entity_df, ["driver_stats:conv_rate"])  # doctest: +SKIP
>>> store.create_saved_dataset(from_=job, name="training_v1",
...     storage=SavedDatasetFileStorage(path="data/training_v1.parquet"))        # doctest: +SKIP
>>> store.get_saved_dataset("training_v1").to_df()                                # doctest: +SKIP

The storage is a small tagged type. Each kind subclasses :class:`SavedDatasetStorage`
and sets ``storage_type``, the tag that keys its dict form in the registry; subclassing
registers it. :class:`SavedDatasetFileStorage` (Parquet) works with every offline store.
A table storage (a PostgreSQL table, a Spark table) is defined by the offline backend
that can write and read it: see ``tiffin.offline.saved_datasets`` for that hook.

Saved datasets are created by the SDK, never declared in repository files, so they are
not a ``Definition``: ``tiffin apply`` neither diffs nor deletes them.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from tiffin.errors import RequestError

if TYPE_CHECKING:
    import pyarrow as pa

    from tiffin.definitions.sources import FileSource


class SavedDatasetStorage(ABC):
    """Where a saved dataset's rows live. ``to_dict()`` is ``{"type": <tag>, **fields}``
    and ``cls(**fields)`` rebuilds an equal storage."""

    storage_type: ClassVar[str]
    _types: ClassVar[dict[str, type[SavedDatasetStorage]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "storage_type" in cls.__dict__:
            SavedDatasetStorage._types[cls.storage_type] = cls

    @abstractmethod
    def fields(self) -> dict[str, Any]:
        """JSON-able constructor arguments."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the rows are, for listings and messages (a path, a table name)."""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.storage_type, **self.fields()}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> SavedDatasetStorage:
        data = dict(data)
        tag = data.pop("type")
        cls = SavedDatasetStorage._types.get(tag)
        if cls is None:
            # Its backend module is not imported (yet): keep the dict so the registry can
            # still be listed, and resolve it when the data is read.
            return UnregisteredStorage(tag, data)
        return cls(**data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SavedDatasetStorage) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash(self.storage_type)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.fields().items())
        return f"{type(self).__name__}({args})"


class SavedDatasetFileStorage(SavedDatasetStorage):
    """A Parquet file; a relative path is relative to the feature repository (as for
    ``FileSource``). Only local paths are written for now.

    >>> SavedDatasetFileStorage(path="data/training_v1.parquet").location
    'data/training_v1.parquet'
    """

    storage_type = "file"

    def __init__(self, path: str, file_format: Any = None,
                 s3_endpoint_override: str | None = None, **_feast_only: Any):
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise TypeError(f"SavedDatasetFileStorage needs a path, got {path!r}")
        # Feast's ParquetFormat() (a .format attribute) or the string "parquet".
        fmt = file_format if isinstance(file_format, str) else \
            getattr(file_format, "format", file_format)
        if fmt not in (None, "", "parquet"):
            raise ValueError(f"SavedDatasetFileStorage: only Parquet files are supported, "
                             f"got file_format={file_format!r}")
        self.path = str(path)
        self.s3_endpoint_override = s3_endpoint_override or None

    def fields(self) -> dict[str, Any]:
        return {"path": self.path, "file_format": "parquet",
                "s3_endpoint_override": self.s3_endpoint_override}

    @property
    def location(self) -> str:
        return self.path

    def resolved_path(self, repo_path: str | os.PathLike | None) -> str:
        if repo_path is None or "://" in self.path or os.path.isabs(self.path):
            return self.path
        return os.path.join(str(repo_path), self.path)

    def to_data_source(self) -> FileSource:
        """The file as a ``FileSource``, e.g. to build a feature view on a saved dataset."""
        from tiffin.definitions.sources import FileSource
        return FileSource(path=self.path, s3_endpoint_override=self.s3_endpoint_override)


class UnregisteredStorage(SavedDatasetStorage):
    """A storage kind whose class is not loaded: its offline backend is not imported, or
    not installed. Kept as read from the registry, so it round-trips unchanged."""

    def __init__(self, storage_type: str, fields: dict[str, Any]):
        self.storage_type = storage_type  # type: ignore[misc]  # per instance, not per class
        self._fields = dict(fields)

    def fields(self) -> dict[str, Any]:
        return dict(self._fields)

    @property
    def location(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self._fields.items() if v is not None)

    def resolve(self) -> SavedDatasetStorage:
        """The registered class's object, once its backend is imported; else ``self``."""
        return SavedDatasetStorage.from_dict(self.to_dict())

    def __repr__(self) -> str:
        return f"UnregisteredStorage({self.storage_type!r}, {self._fields!r})"


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None


def _parse_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class SavedDataset:
    """A registered training set: the features and join keys it was retrieved with, where
    it is stored, and when. Get one from ``store.get_saved_dataset(name)`` to read it.

    >>> ds = store.get_saved_dataset("training_v1")            # doctest: +SKIP
    >>> ds.features, ds.join_keys, ds.storage.location         # doctest: +SKIP
    (['driver_stats:conv_rate'], ['driver_id'], 'data/training_v1.parquet')
    """

    kind: ClassVar[str] = "saved_datasets"  # registry section

    def __init__(self, name: str, features: list[str], join_keys: list[str],
                 storage: SavedDatasetStorage, full_feature_names: bool = False,
                 tags: dict[str, str] | None = None, feature_service_name: str | None = None,
                 description: str = "", **_feast_only: Any):
        if not isinstance(name, str) or not name:
            raise TypeError(f"SavedDataset needs a non-empty string name, got {name!r}")
        if not isinstance(storage, SavedDatasetStorage):
            raise TypeError(f"saved dataset {name!r}: storage must be a SavedDatasetStorage "
                            f"such as SavedDatasetFileStorage(path=...), got {storage!r}")
        self.name = name
        self.features = list(features)
        self.join_keys = list(join_keys)
        self.storage = storage
        self.full_feature_names = bool(full_feature_names)
        self.tags = dict(tags or {})
        self.feature_service_name = feature_service_name or None
        self.description = description or ""
        # Set by the registry (created, last updated) and from the retrieval (event range).
        self.created_timestamp: datetime | None = None
        self.last_updated_timestamp: datetime | None = None
        self.min_event_timestamp: datetime | None = None
        self.max_event_timestamp: datetime | None = None
        self._reader: Callable[[int], pa.RecordBatchReader] | None = None

    # -- dict form -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "tags": self.tags,
                "features": self.features, "join_keys": self.join_keys,
                "full_feature_names": self.full_feature_names,
                "feature_service_name": self.feature_service_name,
                "storage": self.storage.to_dict(),
                "created_timestamp": _iso(self.created_timestamp),
                "last_updated_timestamp": _iso(self.last_updated_timestamp),
                "min_event_timestamp": _iso(self.min_event_timestamp),
                "max_event_timestamp": _iso(self.max_event_timestamp)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SavedDataset:
        obj = cls(name=data["name"], features=data["features"], join_keys=data["join_keys"],
                  storage=SavedDatasetStorage.from_dict(data["storage"]),
                  full_feature_names=data.get("full_feature_names", False),
                  tags=data.get("tags"), feature_service_name=data.get("feature_service_name"),
                  description=data.get("description", ""))
        for key in ("created_timestamp", "last_updated_timestamp", "min_event_timestamp",
                    "max_event_timestamp"):
            setattr(obj, key, _parse_iso(data.get(key)))
        return obj

    # -- data ----------------------------------------------------------------------------
    def with_reader(self, reader: Callable[[int], pa.RecordBatchReader]) -> SavedDataset:
        """Attach how to read the rows (``batch_rows -> RecordBatchReader``); the store does
        this for every dataset it returns."""
        self._reader = reader
        return self

    def to_arrow_batches(self, batch_rows: int = 65_536) -> pa.RecordBatchReader:
        """Stream the rows in record batches without holding them all in memory."""
        if self._reader is None:
            raise RequestError(f"saved dataset {self.name!r} is not attached to a store",
                               hint=f"read it via store.get_saved_dataset({self.name!r})")
        return self._reader(batch_rows)

    def to_arrow(self, timeout: int | None = None) -> pa.Table:
        return self.to_arrow_batches(1_000_000).read_all()

    def to_df(self, timeout: int | None = None, **_feast_only: Any) -> Any:
        return self.to_arrow().to_pandas()

    def to_polars(self) -> Any:
        from tiffin.frames import to_polars
        return to_polars(self.to_arrow())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SavedDataset) and other.to_dict() == self.to_dict()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.name))

    def __repr__(self) -> str:
        return f"SavedDataset(name={self.name!r}, storage={self.storage!r})"


__all__ = ["SavedDataset", "SavedDatasetStorage", "SavedDatasetFileStorage",
           "UnregisteredStorage"]
