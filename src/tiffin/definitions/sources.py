"""Data sources: where a feature view's rows live."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from tiffin.definitions.base import Definition
from tiffin.definitions.field import Field

SOURCE_GROUP = "tiffin.data_sources"


class DataSource(Definition):
    """Base of every source. ``source_type`` keys the registry's dict form.

    A source type is a subclass with its own ``source_type``, registered as an entry point
    of ``tiffin.data_sources`` (``source_type = "package.module:Class"``): ``from_dict``
    imports it from there when a registry names it, so a process that reads the registry
    (the feature server, a training job) needs no import of the repository's code. A
    subclass defined in a repository's own files also works once they are imported.
    """

    kind = "data_sources"
    source_type: ClassVar[str]
    _types: ClassVar[dict[str, type[DataSource]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "source_type" in cls.__dict__:
            # The latest definition wins: re-importing a repository's files (apply, tests)
            # makes a new class object, and isinstance checks must see that one.
            DataSource._types[cls.source_type] = cls

    def __init__(self, *, name: str, timestamp_field: str = "",
                 created_timestamp_column: str = "", field_mapping: dict[str, str] | None = None,
                 date_partition_column: str = "", description: str = "",
                 tags: dict[str, str] | None = None, owner: str = ""):
        super().__init__(name, description, tags, owner)
        self.timestamp_field = timestamp_field or ""
        self.created_timestamp_column = created_timestamp_column or ""
        self.field_mapping = dict(field_mapping or {})
        self.date_partition_column = date_partition_column or ""

    def _source_meta(self) -> dict[str, Any]:
        return {**self._meta(), "source_type": self.source_type,
                "timestamp_field": self.timestamp_field,
                "created_timestamp_column": self.created_timestamp_column,
                "field_mapping": self.field_mapping,
                "date_partition_column": self.date_partition_column}

    def to_dict(self) -> dict[str, Any]:
        return self._source_meta()

    @staticmethod
    def source_class(source_type: str) -> type[DataSource]:
        """The class of ``source_type``: one already imported, else its entry point's."""
        found = DataSource._types.get(source_type)
        if found is not None:
            return found
        from importlib.metadata import entry_points

        from tiffin.errors import UnknownBackendError, did_you_mean
        eps = {ep.name: ep for ep in entry_points(group=SOURCE_GROUP)}
        ep = eps.get(source_type)
        if ep is None:
            known = sorted(set(eps) | set(DataSource._types))
            raise UnknownBackendError(
                f"data source type {source_type!r} is not installed",
                hint=did_you_mean(source_type, known) or
                f"registered: {', '.join(known)}; install the package that provides it "
                f"(an entry point of {SOURCE_GROUP})")
        try:
            cls = ep.load()
        except ImportError as e:
            raise UnknownBackendError(f"data source type {source_type!r} ({ep.value}) cannot "
                                      f"be imported: {e}",
                                      hint="reinstall the package that provides it") from None
        if not (isinstance(cls, type) and issubclass(cls, DataSource)
                and cls.__dict__.get("source_type") == source_type):
            raise UnknownBackendError(f"entry point {source_type!r} of {SOURCE_GROUP} is "
                                      f"{ep.value}, not a DataSource with source_type = "
                                      f"{source_type!r}")
        DataSource._types[source_type] = cls
        return cls

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSource:
        data = dict(data)
        sub = DataSource.source_class(data.pop("source_type"))
        obj = sub._from_fields(data)
        obj.origin = None
        return obj

    @classmethod
    def _from_fields(cls, data: dict[str, Any]) -> DataSource:
        return cls(**data)

    @property
    def batch(self) -> DataSource:
        """The source that holds the rows offline (itself, or a push source's batch source)."""
        return self


class FileSource(DataSource):
    """Parquet file(s): a file, a directory of files, or a glob.

    >>> src = FileSource(name="driver_stats", path="data/driver_stats.parquet",
    ...                  timestamp_field="event_timestamp", created_timestamp_column="created")
    """

    source_type = "file"

    def __init__(self, *, path: str, name: str = "", timestamp_field: str = "",
                 created_timestamp_column: str = "", field_mapping: dict[str, str] | None = None,
                 date_partition_column: str = "", description: str = "",
                 tags: dict[str, str] | None = None, owner: str = "", file_format: Any = None,
                 s3_endpoint_override: str | None = None, event_timestamp_column: str = "",
                 **_feast_only: Any):
        super().__init__(name=name or path, timestamp_field=timestamp_field or event_timestamp_column,
                         created_timestamp_column=created_timestamp_column,
                         field_mapping=field_mapping, date_partition_column=date_partition_column,
                         description=description, tags=tags, owner=owner)
        self.path = str(path)
        # Only Parquet is read; a Feast ParquetFormat() object is accepted and means the same.
        fmt = file_format if isinstance(file_format, str) else \
            getattr(file_format, "format", file_format)  # (str.format is a method)
        if fmt not in (None, "", "parquet"):
            raise ValueError(f"FileSource {self.name!r}: only Parquet files are supported, "
                             f"got file_format={file_format!r}")
        self.s3_endpoint_override = s3_endpoint_override

    def resolved_path(self, repo_path: str | os.PathLike | None) -> str:
        """Relative paths are relative to the feature repository, as in Feast."""
        if repo_path is None or "://" in self.path or os.path.isabs(self.path):
            return self.path
        return os.path.join(str(repo_path), self.path)

    def to_dict(self) -> dict[str, Any]:
        return {**self._source_meta(), "path": self.path,
                "s3_endpoint_override": self.s3_endpoint_override}


class ParquetFormat:
    """Feast's ``ParquetFormat()``: accepted as ``FileSource(file_format=...)``."""

    format = "parquet"


class PushSource(DataSource):
    """Rows pushed by applications (``store.push``); ``batch_source`` holds them offline."""

    source_type = "push"

    def __init__(self, *, name: str, batch_source: DataSource | None = None,
                 description: str = "", tags: dict[str, str] | None = None, owner: str = "",
                 **_feast_only: Any):
        bs = batch_source
        super().__init__(name=name, timestamp_field=bs.timestamp_field if bs else "",
                         created_timestamp_column=bs.created_timestamp_column if bs else "",
                         field_mapping=bs.field_mapping if bs else None,
                         description=description, tags=tags, owner=owner)
        self.batch_source = batch_source

    @property
    def batch(self) -> DataSource:
        if self.batch_source is None:
            raise ValueError(f"push source {self.name!r} has no batch_source")
        return self.batch_source

    def to_dict(self) -> dict[str, Any]:
        return {**self._meta(), "source_type": self.source_type,
                "batch_source": self.batch_source.to_dict() if self.batch_source else None}

    @classmethod
    def _from_fields(cls, data: dict[str, Any]) -> PushSource:
        bs = data.pop("batch_source")
        return cls(batch_source=DataSource.from_dict(bs) if bs else None, **data)


class RequestSource(DataSource):
    """Values supplied with each request (for on-demand views)."""

    source_type = "request"

    def __init__(self, *, name: str, schema: list[Field], timestamp_field: str = "",
                 description: str = "", tags: dict[str, str] | None = None, owner: str = ""):
        super().__init__(name=name, timestamp_field=timestamp_field, description=description,
                         tags=tags, owner=owner)
        self.schema = list(schema)

    def to_dict(self) -> dict[str, Any]:
        return {**self._meta(), "source_type": self.source_type,
                "timestamp_field": self.timestamp_field,
                "schema": [f.to_dict() for f in self.schema]}

    @classmethod
    def _from_fields(cls, data: dict[str, Any]) -> RequestSource:
        data["schema"] = [Field.from_dict(f) for f in data["schema"]]
        return cls(**data)


# Source types that moved to their offline store's folder, still importable from here.
_MOVED = {"SparkSource": "tiffin.offline.spark.source",
          "SPARK_FILE_FORMATS": "tiffin.offline.spark.source",
          "PostgreSQLSource": "tiffin.offline.postgres.source"}


def __getattr__(name: str):  # Feast imports these two from its file-source module
    if name in _MOVED:
        import importlib
        return getattr(importlib.import_module(_MOVED[name]), name)
    if name == "FileLoggingDestination":
        from tiffin.definitions.on_demand import FileLoggingDestination
        return FileLoggingDestination
    if name == "SavedDatasetFileStorage":
        from tiffin.definitions.saved_dataset import SavedDatasetFileStorage
        return SavedDatasetFileStorage
    raise AttributeError(name)
