"""``SparkSource``: rows that Spark reads (entry point ``spark`` of ``tiffin.data_sources``)."""

from __future__ import annotations

import os
from typing import Any

from tiffin.definitions.sources import DataSource

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
