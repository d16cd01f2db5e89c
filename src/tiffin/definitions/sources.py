"""Data sources: where a feature view's rows live."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from tiffin.definitions.base import Definition
from tiffin.definitions.field import Field


class DataSource(Definition):
    """Base of every source. ``source_type`` keys the registry's dict form."""

    kind = "data_sources"
    source_type: ClassVar[str]
    _types: ClassVar[dict[str, type[DataSource]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "source_type" in cls.__dict__:
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSource:
        data = dict(data)
        sub = DataSource._types[data.pop("source_type")]
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


# -- Spark -----------------------------------------------------------------------------------
SPARK_FILE_FORMATS = ("parquet", "orc", "avro", "csv", "json", "delta")


class SparkSource(DataSource):
    """Rows that Spark reads: a catalog ``table``, a ``query``, or files at ``path`` in
    ``file_format`` (``parquet``, ``orc``, ``avro``, ``csv``, ``json``, ``delta``). Read by
    the ``spark`` offline store and the ``spark`` engine.

    >>> src = SparkSource(name="driver_stats", path="s3a://bucket/driver_stats",
    ...                   file_format="parquet", timestamp_field="event_timestamp")
    >>> SparkSource(name="recent", query="SELECT * FROM stats WHERE day > '2026-01-01'",
    ...             timestamp_field="event_timestamp").query
    "SELECT * FROM stats WHERE day > '2026-01-01'"
    """

    source_type = "spark"

    def __init__(self, *, name: str = "", table: str | None = None, query: str | None = None,
                 path: str | None = None, file_format: Any = None, timestamp_field: str = "",
                 created_timestamp_column: str = "", field_mapping: dict[str, str] | None = None,
                 date_partition_column: str = "", description: str = "",
                 tags: dict[str, str] | None = None, owner: str = "", table_format: Any = None,
                 event_timestamp_column: str = "", **_feast_only: Any):
        given = [k for k, v in (("table", table), ("query", query), ("path", path)) if v]
        label = repr(name or table or path or "")
        if len(given) != 1:
            raise ValueError(f"SparkSource {label}: give exactly one of table=, query= or path=" +
                             (f" (got {', '.join(given)})" if given else ""))
        if query and not name:
            raise ValueError("SparkSource: a query source needs a name=")
        super().__init__(name=name or table or path or "",
                         timestamp_field=timestamp_field or event_timestamp_column,
                         created_timestamp_column=created_timestamp_column,
                         field_mapping=field_mapping, date_partition_column=date_partition_column,
                         description=description, tags=tags, owner=owner)
        fmt = file_format if isinstance(file_format, str) or file_format is None else \
            getattr(file_format, "format", file_format)  # Feast's ParquetFormat() object
        fmt = str(fmt).lower() if fmt else None
        if path and not fmt:
            raise ValueError(f"SparkSource {label}: path= needs file_format= (one of "
                             f"{', '.join(SPARK_FILE_FORMATS)})")
        if fmt and not path:
            raise ValueError(f"SparkSource {label}: file_format= goes with path=, not "
                             f"{given[0]}=")
        if fmt and fmt not in SPARK_FILE_FORMATS:
            raise ValueError(f"SparkSource {label}: file_format {fmt!r} is not one of "
                             f"{', '.join(SPARK_FILE_FORMATS)}")
        if table_format is not None:
            raise ValueError(f"SparkSource {label}: table_format= (Iceberg, Hudi, Lance) is not "
                             "supported; register the table in Spark's catalog and pass table=")
        self.table = table or None
        self.query = query or None
        self.path = str(path) if path else None
        self.file_format = fmt

    def resolved_path(self, repo_path: str | os.PathLike | None) -> str | None:
        """A relative local path is relative to the feature repository, as for FileSource."""
        if self.path is None or repo_path is None or "://" in self.path or \
                os.path.isabs(self.path):
            return self.path
        return os.path.join(str(repo_path), self.path)

    def to_dict(self) -> dict[str, Any]:
        return {**self._source_meta(), "table": self.table, "query": self.query,
                "path": self.path, "file_format": self.file_format}



# -- PostgreSQL ------------------------------------------------------------------------------
class PostgreSQLSource(DataSource):
    """Rows in PostgreSQL: a ``table`` (``"stats"`` or ``"analytics.stats"``, written as in
    SQL; unqualified names are looked up in the offline store's ``db_schema``, then
    ``public``) or a ``query``. Read by the ``postgres`` offline store, which can also
    append pushed rows to a table source.

    >>> src = PostgreSQLSource(name="driver_stats", table="driver_stats",
    ...                        timestamp_field="event_timestamp", created_timestamp_column="created")
    >>> PostgreSQLSource(name="recent", query="SELECT * FROM driver_stats WHERE trips > 0",
    ...                  timestamp_field="event_timestamp").table is None
    True
    """

    source_type = "postgres"

    def __init__(self, *, name: str = "", query: str | None = None, table: str | None = None,
                 timestamp_field: str = "", created_timestamp_column: str = "",
                 field_mapping: dict[str, str] | None = None, date_partition_column: str = "",
                 description: str = "", tags: dict[str, str] | None = None, owner: str = "",
                 **_feast_only: Any):
        label = repr(name or table or "")
        if bool(table) == bool(query):
            raise ValueError(f"PostgreSQLSource {label}: give exactly one of table= or query=")
        if query and not name:
            raise ValueError("PostgreSQLSource: a query source needs a name=")
        super().__init__(name=name or str(table), timestamp_field=timestamp_field,
                         created_timestamp_column=created_timestamp_column,
                         field_mapping=field_mapping, date_partition_column=date_partition_column,
                         description=description, tags=tags, owner=owner)
        self.table = table or None
        # A trailing ';' would end the subquery the query is read through.
        self.query = query.strip().rstrip(";").rstrip() if query else None

    def to_dict(self) -> dict[str, Any]:
        return {**self._source_meta(), "table": self.table, "query": self.query}

def __getattr__(name: str):  # Feast imports these two from its file-source module
    if name == "FileLoggingDestination":
        from tiffin.definitions.on_demand import FileLoggingDestination
        return FileLoggingDestination
    if name == "SavedDatasetFileStorage":
        from tiffin.definitions.saved_dataset import SavedDatasetFileStorage
        return SavedDatasetFileStorage
    raise AttributeError(name)
