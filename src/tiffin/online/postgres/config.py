from __future__ import annotations

from typing import ClassVar, Literal

from tiffin.config import PostgresConnection


class PostgreSQLOnlineStoreConfig(PostgresConnection):
    """``online_store: {type: postgres, host, port, database, db_schema, user, password}``,
    or ``dsn: postgresql://...``. Feast's keys."""

    type: Literal["postgres"] = "postgres"
    min_conn: int = 1
    max_conn: int = 10

    feast_keys: ClassVar[frozenset[str]] = frozenset(
        {"conn_type", "keepalives_idle", "vector_enabled", "similarity", "sslkey_path",
         "sslcert_path", "sslrootcert_path", "enable_openai_compatible_store",
         "max_batched_result_rows"})

    def conninfo(self) -> str:
        if self.dsn is not None:
            return self.dsn.get_secret_value()
        parts = self.libpq_params()

        def quote(v: str) -> str:
            return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return " ".join(f"{k}={quote(v)}" for k, v in parts.items())

    def store_class(self) -> type:
        from tiffin.online.postgres.store import PostgreSQLOnlineStore
        return PostgreSQLOnlineStore
