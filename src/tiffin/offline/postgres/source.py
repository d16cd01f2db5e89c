"""``PostgreSQLSource``: rows in PostgreSQL (entry point ``postgres`` of ``tiffin.data_sources``)."""

from __future__ import annotations

from typing import Any

from tiffin.definitions.sources import DataSource


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
