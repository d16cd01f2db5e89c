"""The registry in a SQL database (``registry_type: sql``), through SQLAlchemy.

Two tables, created on first use::

    tiffin_registry_objects   (project, kind, name) -> body: one object's JSON
    tiffin_registry_projects  project -> version, format_version, updated_at

``kind`` is a key of the project in the registry document (``feature_views``,
``materializations``, ...), so the rows hold exactly the document of
``registry.py``, split per object; ``read`` joins them back. The version a reader
gets is every project's version. ``write`` runs in one transaction: for each project
whose rows would change it moves the version row from the version read to the next
(``UPDATE ... WHERE version = :read``, and a row count of 0 means another writer
committed first: ``RegistryConflictError``, and the Registry retries on fresh data),
then inserts, updates and deletes only the rows that differ. Writers of different
projects do not wait for each other; writers of one project serialize on its row.

SQLite takes the database's write lock when the transaction starts (``BEGIN
IMMEDIATE``), so writers queue on its busy timeout instead of failing to upgrade a
read lock. Relative SQLite paths are relative to the repository, as other paths are.
``postgresql://`` means psycopg 3 (``pip install 'tiffin[sql,postgres]'``).
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from tiffin.config import redact_url
from tiffin.errors import (
    ConfigError,
    MissingDependencyError,
    RegistryConflictError,
    RegistryError,
    RegistryFormatError,
    RegistryUnavailableError,
    did_you_mean,
)
from tiffin.registry.base import RegistryStore
from tiffin.registry.registry import FORMAT, FORMAT_VERSION

OBJECTS = "tiffin_registry_objects"
PROJECTS = "tiffin_registry_projects"
DIALECTS = ("postgresql", "sqlite", "mysql", "mariadb", "mssql", "oracle")
DRIVERS = {"postgresql": ("psycopg", "postgres")}  # backend -> (package, tiffin extra)
_TABLES_LOCK_KEY = 0x746966666E  # pg_advisory_xact_lock key while creating the tables

Rows = dict[tuple[str, str], str]  # (kind, name) -> canonical JSON


@cache
def _tables() -> tuple[Any, Any, Any]:
    from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text
    metadata = MetaData()
    objects = Table(OBJECTS, metadata,
                    Column("project", String(128), primary_key=True),
                    Column("kind", String(64), primary_key=True),
                    Column("name", String(512), primary_key=True),
                    Column("body", Text, nullable=False))
    projects = Table(PROJECTS, metadata,
                     Column("project", String(128), primary_key=True),
                     Column("version", BigInteger, nullable=False),
                     Column("format_version", Integer, nullable=False),
                     Column("updated_at", String(40), nullable=False))
    return metadata, objects, projects


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _rows(project: dict[str, Any], where: str) -> Rows:
    rows: Rows = {}
    for kind, objects in project.items():
        if not isinstance(objects, dict):
            raise RegistryFormatError(f"registry {where}: project key {kind!r} is not a "
                                      "mapping of names")
        for name, body in objects.items():
            rows[(kind, name)] = _canonical(body)
    return rows


def _token(versions: dict[str, int]) -> str:
    return _canonical(versions)


class SQLRegistryStore(RegistryStore):
    """``registry: {registry_type: sql, path: <SQLAlchemy URL>}`` (``tiffin[sql]``)."""

    def __init__(self, url: str, engine_kwargs: dict[str, Any] | None = None,
                 base_dir: str | os.PathLike | None = None):
        try:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError
        except ImportError:
            raise MissingDependencyError("sqlalchemy", "sql") from None
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):  # ValueError: a port that is not a number
            raise ConfigError(f"registry path {redact_url(url)!r} is not a SQLAlchemy URL",
                              hint="e.g. postgresql+psycopg://user@host:5432/db or "
                                   "sqlite:///data/registry.db") from None
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")  # Feast does the same
        if parsed.get_backend_name() == "sqlite":
            db = parsed.database or ""
            if db in ("", ":memory:") or db.startswith("file:"):
                raise ConfigError(f"registry path {redact_url(url)!r} is not a SQLite file",
                                  hint="use sqlite:///data/registry.db: an in-memory "
                                       "database would vanish with each connection")
            if not os.path.isabs(db) and base_dir is not None:
                parsed = parsed.set(database=str(Path(base_dir) / db))
        self.url = parsed
        self.engine_kwargs = dict(engine_kwargs or {})
        self._engine: Any = None
        self._engine_lock = threading.Lock()

    def describe(self) -> str:
        return self.url.render_as_string(hide_password=True)

    # -- connection ------------------------------------------------------------------------
    def _connect(self) -> Any:
        """The engine, built and the tables created on first use."""
        with self._engine_lock:
            if self._engine is None:
                engine = self._create_engine()
                self._create_tables(engine)
                self._engine = engine
            return self._engine

    def _create_engine(self) -> Any:
        from sqlalchemy import create_engine, event
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError
        from sqlalchemy.pool import NullPool
        backend = self.url.get_backend_name()
        kwargs: dict[str, Any] = {"poolclass": NullPool} | self.engine_kwargs
        connect_args = dict(kwargs.pop("connect_args", {}))
        if backend == "sqlite":
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            connect_args.setdefault("timeout", 60)  # seconds a writer waits for the lock
        elif backend == "postgresql" and "connect_timeout" not in self.url.query:
            connect_args.setdefault("connect_timeout", 10)
        try:
            engine = create_engine(self.url, connect_args=connect_args, **kwargs)
        except NoSuchModuleError:
            raise ConfigError(f"registry path {self.describe()!r}: unknown database "
                              f"{self.url.drivername!r}",
                              hint=did_you_mean(backend, DIALECTS)
                              or f"supported: {', '.join(DIALECTS)}") from None
        except ImportError as e:
            package, extra = DRIVERS.get(backend, (e.name or "the database driver", "sql"))
            if backend in DRIVERS:
                raise MissingDependencyError(package, extra) from None
            raise ConfigError(f"registry {self.describe()}: driver not installed: {e}",
                              hint=f"pip install the driver for {backend}") from None
        except (ArgumentError, TypeError) as e:
            raise ConfigError(f"registry {self.describe()}: {e}",
                              hint="check registry.path and sqlalchemy_config_kwargs") from None
        if backend == "sqlite":
            # pysqlite's own transaction handling would BEGIN lazily (deferred); take it over.
            @event.listens_for(engine, "connect")
            def _no_driver_transactions(dbapi_connection: Any, record: Any) -> None:
                dbapi_connection.isolation_level = None

            @event.listens_for(engine, "begin")
            def _begin(conn: Any) -> None:
                writing = conn.get_execution_options().get("tiffin_write")
                conn.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")
        return engine

    def _create_tables(self, engine: Any) -> None:
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError
        metadata, _, _ = _tables()
        for attempt in range(2):
            try:
                with engine.connect() as conn:
                    conn = conn.execution_options(tiffin_write=True)
                    with conn.begin():
                        if engine.dialect.name == "postgresql":
                            # Concurrent first uses would race to CREATE TABLE.
                            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                                         {"key": _TABLES_LOCK_KEY})
                        metadata.create_all(conn)
                return
            except DBAPIError as e:
                if attempt or e.connection_invalidated or _unreachable(e):
                    raise self._error(e, "open") from None
                # another process created the tables between our check and our CREATE

    # -- the RegistryStore interface -------------------------------------------------------
    def read(self) -> tuple[bytes | None, str | None]:
        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError
        _, objects, projects = _tables()
        try:
            with self._connect().connect() as conn, conn.begin():
                # Versions first: content can then only be newer than the versions, which
                # makes a write based on it conflict (safe), never the reverse.
                heads = conn.execute(select(projects)).all()
                rows = conn.execute(select(objects)).all() if heads else []
        except SQLAlchemyError as e:
            raise self._error(e, "read") from None
        if not heads:
            return None, None
        doc: dict[str, Any] = {
            "format": FORMAT,
            "format_version": max(h.format_version for h in heads),
            "serial": sum(h.version for h in heads),
            "updated_at": max(h.updated_at for h in heads),
            "projects": {h.project: {} for h in heads},
        }
        for r in rows:
            project = doc["projects"].setdefault(r.project, {})
            project.setdefault(r.kind, {})[r.name] = json.loads(r.body)
        return (json.dumps(doc, sort_keys=True).encode(),
                _token({h.project: h.version for h in heads}))

    def write(self, data: bytes, expected_version: str | None) -> str:
        from sqlalchemy import and_, delete, insert, select, update
        from sqlalchemy.exc import IntegrityError, SQLAlchemyError
        doc = json.loads(data)
        where = self.describe()
        wanted = {p: _rows(project, where) for p, project in doc.get("projects", {}).items()}
        expected: dict[str, int] = json.loads(expected_version) if expected_version else {}
        format_version = int(doc.get("format_version", FORMAT_VERSION))
        updated_at = str(doc.get("updated_at") or datetime.now(timezone.utc).isoformat())
        _, objects, projects = _tables()
        committed: dict[str, int] = {}
        try:
            with self._connect().connect() as conn:
                conn = conn.execution_options(tiffin_write=True)
                with conn.begin():
                    current = dict(conn.execute(select(projects.c.project,
                                                       projects.c.version)).all())
                    # Sorted, so two writers touching the same projects lock them in one order.
                    for name in sorted(set(wanted) | set(current)):
                        key = objects.c.project == name
                        have: Rows = {(r.kind, r.name): r.body for r in conn.execute(
                            select(objects.c.kind, objects.c.name, objects.c.body).where(key))}
                        want = wanted.get(name, {})
                        if have == want and (name in current or not want):
                            if name in expected:  # what the caller's copy is known to match
                                committed[name] = expected[name]
                            continue
                        read_version = expected.get(name)
                        if read_version is None:
                            if name in current:
                                raise self._conflict()
                            conn.execute(insert(projects).values(
                                project=name, version=1, format_version=format_version,
                                updated_at=updated_at))
                            committed[name] = 1
                        else:
                            moved = conn.execute(
                                update(projects)
                                .where(projects.c.project == name,
                                       projects.c.version == read_version)
                                .values(version=read_version + 1,
                                        format_version=format_version,
                                        updated_at=updated_at)).rowcount
                            if moved != 1:
                                raise self._conflict()
                            committed[name] = read_version + 1
                        gone = [{"k": k, "n": n} for (k, n) in have if (k, n) not in want]
                        new = [{"project": name, "kind": k, "name": n, "body": b}
                               for (k, n), b in want.items() if (k, n) not in have]
                        changed = [{"k": k, "n": n, "b": b} for (k, n), b in want.items()
                                   if (k, n) in have and have[(k, n)] != b]
                        match = and_(key, objects.c.kind == _param("k"),
                                     objects.c.name == _param("n"))
                        if gone:
                            conn.execute(delete(objects).where(match), gone)
                        if new:
                            conn.execute(insert(objects), new)
                        if changed:
                            conn.execute(update(objects).where(match)
                                         .values(body=_param("b")), changed)
        except IntegrityError:
            raise self._conflict() from None  # another writer created the same project first
        except SQLAlchemyError as e:
            raise self._error(e, "write") from None
        return _token(committed)

    def delete(self) -> None:
        from sqlalchemy import delete
        from sqlalchemy.exc import SQLAlchemyError
        _, objects, projects = _tables()
        try:
            with self._connect().connect() as conn:
                conn = conn.execution_options(tiffin_write=True)
                with conn.begin():
                    conn.execute(delete(objects))
                    conn.execute(delete(projects))
        except SQLAlchemyError as e:
            raise self._error(e, "delete") from None

    def close(self) -> None:
        with self._engine_lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    # -- errors ----------------------------------------------------------------------------
    def _conflict(self) -> RegistryConflictError:
        return RegistryConflictError(f"registry {self.describe()} changed while applying",
                                     hint="retry; tiffin retries this on its own")

    def _error(self, e: Exception, action: str) -> RegistryError:
        """A driver error as one line with a hint; the URL's password never shows."""
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        where = self.describe()
        if "does not exist" in reason and "database" in reason:
            return RegistryError(f"cannot {action} registry {where}: {reason}",
                                 hint="create the database first (CREATE DATABASE ...), or "
                                      "fix registry.path")
        if _unreachable(e):
            return RegistryUnavailableError(
                f"cannot {action} registry {where}: {reason}",
                hint="check that the database is up and reachable, and registry.path")
        return RegistryError(f"cannot {action} registry {where}: {reason}")


def _param(name: str) -> Any:
    from sqlalchemy import bindparam
    return bindparam(name)


def _unreachable(e: Exception) -> bool:
    from sqlalchemy.exc import DBAPIError, OperationalError
    return isinstance(e, OperationalError) or (isinstance(e, DBAPIError)
                                               and e.connection_invalidated)
