from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import SecretStr

from tiffin.config import BackendConfig


class PostgreSQLOnlineStoreConfig(BackendConfig):
    """``online_store: {type: postgres, host, port, database, db_schema, user, password}``,
    or ``dsn: postgresql://...``. Feast's keys."""

    type: Literal["postgres"] = "postgres"
    host: str = "localhost"
    port: int = 5432
    database: str = "postgres"
    db_schema: str = "public"
    user: str = "postgres"
    password: SecretStr | None = None
    dsn: SecretStr | None = None
    sslmode: str | None = None
    min_conn: int = 1
    max_conn: int = 10
    connect_timeout_seconds: int = 5

    feast_keys: ClassVar[frozenset[str]] = frozenset(
        {"conn_type", "keepalives_idle", "vector_enabled", "similarity", "sslkey_path",
         "sslcert_path", "sslrootcert_path", "enable_openai_compatible_store",
         "max_batched_result_rows"})

    def conninfo(self) -> str:
        if self.dsn is not None:
            return self.dsn.get_secret_value()
        parts = {"host": self.host, "port": str(self.port), "dbname": self.database,
                 "user": self.user, "connect_timeout": str(self.connect_timeout_seconds)}
        if self.password is not None:
            parts["password"] = self.password.get_secret_value()
        if self.sslmode:
            parts["sslmode"] = self.sslmode
        def quote(v: str) -> str:
            return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return " ".join(f"{k}={quote(v)}" for k, v in parts.items())

    def store_class(self) -> type:
        from tiffin.online.postgres.store import PostgreSQLOnlineStore
        return PostgreSQLOnlineStore
