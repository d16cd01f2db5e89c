"""``ToyCsvSource``: rows in a CSV file with a header line."""

from __future__ import annotations

import os
from typing import Any

from tiffin.definitions import DataSource


class ToyCsvSource(DataSource):
    source_type = "toy_csv"

    def __init__(self, *, path: str, name: str = "", delimiter: str = ",",
                 timestamp_field: str = "", created_timestamp_column: str = "",
                 field_mapping: dict[str, str] | None = None, date_partition_column: str = "",
                 description: str = "", tags: dict[str, str] | None = None, owner: str = ""):
        if len(delimiter) != 1:
            raise ValueError(f"ToyCsvSource {name or path!r}: delimiter must be one character")
        super().__init__(name=name or path, timestamp_field=timestamp_field,
                         created_timestamp_column=created_timestamp_column,
                         field_mapping=field_mapping,
                         date_partition_column=date_partition_column, description=description,
                         tags=tags, owner=owner)
        self.path = str(path)
        self.delimiter = delimiter

    def resolved_path(self, repo_path: str | os.PathLike | None) -> str:
        if repo_path is None or os.path.isabs(self.path):
            return self.path
        return os.path.join(str(repo_path), self.path)

    def to_dict(self) -> dict[str, Any]:
        return {**self._source_meta(), "path": self.path, "delimiter": self.delimiter}

