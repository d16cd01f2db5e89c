"""PostgreSQL offline store over tables and queries (``pip install 'tiffin[postgres]'``)."""
from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import field_validator

from tiffin.config import PostgresConnection


class PostgreSQLOfflineStoreConfig(PostgresConnection):
    """``offline_store: {type: postgres, host, port, database, db_schema, user, password}``,
    or ``dsn: postgresql://...`` (then the connection fields are not used). Feast's keys.

    ``db_schema`` is searched first for unqualified table names (then ``public``).
    ``settings`` are PostgreSQL settings for tiffin's sessions, e.g.
    ``{work_mem: 256MB, jit: "off"}`` for large point-in-time joins.

    >>> PostgreSQLOfflineStoreConfig(host="db", password="s3cret").password
    SecretStr('**********')
    """

    type: Literal["postgres"] = "postgres"
    sslkey_path: str | None = None
    sslcert_path: str | None = None
    sslrootcert_path: str | None = None
    keepalives_idle: int | None = None
    settings: dict[str, str] = {}

    aliases: ClassVar[tuple[str, ...]] = (
        "feast.infra.offline_stores.contrib.postgres_offline_store.postgres."
        "PostgreSQLOfflineStore",)
    # Connection pools and entity upload modes are Feast internals: tiffin opens one
    # connection per job and always stages entity rows in a temporary table.
    feast_keys: ClassVar[frozenset[str]] = frozenset(
        {"min_conn", "max_conn", "conn_type", "entity_select_mode"})

    @field_validator("settings")
    @classmethod
    def _setting_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", name):
                raise ValueError(f"{name!r} is not a PostgreSQL setting name")
        return {k: str(val) for k, val in v.items()}

    def connection_params(self) -> dict[str, str]:
        """libpq keywords (the DSN, if set, is passed separately and wins)."""
        params = self.libpq_params()
        optional = {"sslkey": self.sslkey_path, "sslcert": self.sslcert_path,
                    "sslrootcert": self.sslrootcert_path, "keepalives_idle": self.keepalives_idle}
        params.update({k: str(v) for k, v in optional.items() if v is not None})
        return params

    def where(self) -> str:
        """Where the server is, for messages (never the password or the DSN's secrets)."""
        if self.dsn is not None:
            return "the server in offline_store.dsn"
        return f"{self.host}:{self.port}/{self.database}"

    def store_class(self) -> type:
        from tiffin.offline.postgres.store import PostgreSQLOfflineStore
        return PostgreSQLOfflineStore
