"""``feature_store.yaml`` as typed models.

Each backend owns its config class (``type:`` picks it, like a discriminated
union whose members come from entry points). Unknown keys are rejected with a
did-you-mean; keys Feast has but tiffin does not use are accepted with a
warning, so a Feast repository loads unchanged. ``${VAR}`` and
``${VAR:-default}`` in string values are expanded from the environment;
secrets are ``SecretStr`` and print as ``**********``.

>>> cfg = RepoConfig(project="demo", registry="data/registry.db")
>>> cfg.online_store.type, cfg.offline_store.type
('sqlite', 'duckdb')
"""

from __future__ import annotations

import os
import re
import warnings
from abc import abstractmethod
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from tiffin.errors import ConfigError, UnknownBackendError, did_you_mean

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, where: str = "") -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in every string of a parsed YAML tree."""
    if isinstance(value, str):
        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{where or 'config'}: environment variable {name} is not set",
                              hint=f"export {name}=... or write ${{{name}:-default}}")
        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: expand_env(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def check_keys(data: dict[str, Any], model: type[BaseModel], where: str,
               feast_keys: frozenset[str] = frozenset(),
               extra: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Reject unknown keys with a did-you-mean; drop Feast-only keys with a warning.
    ``extra``: keys a plugin declared on top of the model's own."""
    known = set(model.model_fields) | extra
    out = {}
    for key, value in data.items():
        if key in known:
            out[key] = value
        elif key in feast_keys:
            warnings.warn(f"{where}: {key!r} is a Feast setting that tiffin does not use; "
                          "ignored", UserWarning, stacklevel=4)
        else:
            raise ConfigError(f"{where}: unknown key {key!r}",
                              hint=did_you_mean(key, known | feast_keys)
                              or f"valid keys: {', '.join(sorted(known))}")
    return out


class BackendConfig(BaseModel):
    """Base of every backend's config. Subclasses set ``type`` and may list Feast-only keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    feast_keys: ClassVar[frozenset[str]] = frozenset()
    aliases: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def store_class(self) -> type:
        """The backend's implementation; imported here, lazily, so drivers load only when used
        (a missing driver raises MissingDependencyError, which names the extra to install)."""


class PostgresConnection(BackendConfig):
    """The connection fields the PostgreSQL offline and online stores share (Feast's keys):
    ``host, port, database, db_schema, user, password``, or ``dsn: postgresql://...``."""

    host: str = "localhost"
    port: int = 5432
    database: str = "postgres"
    db_schema: str = "public"
    user: str = "postgres"
    password: SecretStr | None = None
    dsn: SecretStr | None = None
    sslmode: str | None = None
    connect_timeout_seconds: int = 5

    def libpq_params(self) -> dict[str, str]:
        """libpq keywords for the fields above (a DSN, when set, is used instead)."""
        params = {"host": self.host, "port": str(self.port), "dbname": self.database,
                  "user": self.user, "connect_timeout": str(self.connect_timeout_seconds)}
        if self.password is not None:
            params["password"] = self.password.get_secret_value()
        if self.sslmode:
            params["sslmode"] = self.sslmode
        return params


GROUPS = {"online_store": "tiffin.online_stores", "offline_store": "tiffin.offline_stores",
          "batch_engine": "tiffin.engines"}


def _entry_points(group: str) -> tuple[dict[str, Any], dict[str, str]]:
    """(name -> loaded object, name -> why it failed to load) for one entry-point group.

    A plugin that fails to import breaks only the repositories that name it: its error is
    kept and raised when it is asked for, not when another backend is.
    """
    loaded: dict[str, Any] = {}
    broken: dict[str, str] = {}
    for ep in entry_points(group=group):
        try:
            loaded[ep.name] = ep.load()
        except Exception as e:  # a third-party plugin may fail in any way on import
            dist = getattr(ep, "dist", None)
            where = f" (from {dist.name})" if dist is not None else ""
            broken[ep.name] = f"{ep.value}{where} failed to import: {type(e).__name__}: {e}"
    return loaded, broken


def plugin_load_error(group: str, name: str, broken: dict[str, str]) -> ConfigError:
    return ConfigError(f"the {group} plugin {name!r} is installed but unusable: {broken[name]}",
                       hint="reinstall the package that provides it, or uninstall it")


@cache
def _backends(group: str) -> tuple[dict[str, type[BackendConfig]], dict[str, str]]:
    loaded, broken = _entry_points(group)
    found: dict[str, type[BackendConfig]] = {}
    for name, cls in loaded.items():
        if not (isinstance(cls, type) and issubclass(cls, BackendConfig)):
            broken[name] = f"{cls!r} is not a tiffin.config.BackendConfig subclass"
            continue
        if cls.__abstractmethods__:
            broken[name] = (f"{cls.__qualname__} does not implement "
                            f"{', '.join(sorted(cls.__abstractmethods__))}")
            continue
        found[name] = cls
        for alias in cls.aliases:
            found.setdefault(alias, cls)
    return found, broken


def backends(group: str) -> dict[str, type[BackendConfig]]:
    """``type`` name -> config class, from installed entry points (aliases included)."""
    found, broken = _backends(group)
    if not found and not broken:
        raise ConfigError(f"no backends registered for {group}",
                          hint="install tiffin as a package: pip install -e .")
    return found


def parse_backend(section: str, value: Any, default_type: str) -> BackendConfig | None:
    group = GROUPS[section]
    if isinstance(value, BackendConfig):
        return value
    if value is None:
        value = {"type": default_type}
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{section}: expected a mapping with a 'type' key, got {value!r}")
    value = dict(value)
    type_name = str(value.get("type", default_type))
    registered = backends(group)
    broken = _backends(group)[1]
    if type_name in broken:
        raise plugin_load_error(group, type_name, broken)
    if type_name not in registered:
        hint = did_you_mean(type_name, registered) or \
            f"installed: {', '.join(sorted(registered))} (others come with extras, e.g. " \
            f"pip install 'tiffin[{type_name.split('.')[0]}]')"
        raise UnknownBackendError(f"{section}: unknown type {type_name!r}", hint=hint)
    cls = registered[type_name]
    value["type"] = cls.model_fields["type"].default  # aliases resolve to the canonical name
    value = check_keys(value, cls, section, cls.feast_keys)
    try:
        return cls.model_validate(value)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, section)) from None


def _format_validation(e: ValidationError, prefix: str) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]*@")
REGISTRY_GROUP = "tiffin.registry_stores"
# registry_type values Feast has that no tiffin plugin serves: said so instead of a typo hint.
FEAST_ONLY_REGISTRY_TYPES = ("snowflake.registry", "remote")


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return _URL_PASSWORD.sub(r"\1***@", url)


def url_scheme(path: str) -> str:
    """``s3://b/k`` -> ``s3``; ``postgresql+psycopg://...`` -> ``postgresql``; a path -> ``''``."""
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", path)
    return m.group(1).split("+")[0].lower() if m else ""


class RegistryConfig(BaseModel):
    """``registry:`` -- a path (local file, ``s3://bucket/key``, another fsspec URL) or, with
    ``registry_type: sql``, a SQLAlchemy URL. Stores come from ``tiffin.registry_stores``
    entry points; keys a plugin store declares (``RegistryStoreType.keys``) are kept in
    ``model_extra``.

    >>> RegistryConfig(path="s3://bucket/registry.json").registry_type
    'file'
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    registry_type: str = "file"
    path: str
    cache_ttl_seconds: float = 600.0  # 0: never refresh on its own (Feast's meaning too)
    s3_endpoint_url: str | None = None  # else AWS_ENDPOINT_URL(_S3), else AWS itself
    s3_additional_kwargs: dict[str, str] | None = None  # extra PutObject arguments, e.g. SSE
    sqlalchemy_config_kwargs: dict[str, Any] = {}  # passed to create_engine

    feast_keys: ClassVar[frozenset[str]] = frozenset({
        "registry_store_type", "cache_mode", "purge_feast_metadata",
        "enable_online_feature_view_versioning", "serve_features_while_materializing", "mcp",
        "thread_pool_executor_worker_count", "schema_mode", "read_path"})

    @field_serializer("path")
    def _redacted_path(self, path: str) -> str:
        return redact_url(path)

    @model_validator(mode="after")
    def _plugin_keys(self) -> RegistryConfig:
        # Extra keys are allowed only as the serving plugin's own (RepoConfig checks them
        # before this with hints; this catches a RegistryConfig built directly).
        if self.model_extra:
            allowed = registry_store_type(self.registry_type, self.path).keys
            unknown = sorted(set(self.model_extra) - allowed)
            if unknown:
                raise ValueError(f"unknown key {unknown[0]!r}"
                                 + (f" (this store's own: {', '.join(sorted(allowed))})"
                                    if allowed else ""))
        return self


@cache
def registry_store_types() -> tuple[dict[str, Any], dict[str, str]]:
    """(entry-point name -> RegistryStoreType instance, name -> why it is unusable)."""
    from tiffin.registry.base import RegistryStoreType
    loaded, broken = _entry_points(REGISTRY_GROUP)
    found: dict[str, Any] = {}
    for name, cls in loaded.items():
        if not (isinstance(cls, type) and issubclass(cls, RegistryStoreType)):
            broken[name] = f"{cls!r} is not a tiffin.registry.base.RegistryStoreType subclass"
            continue
        if not cls.registry_types or not cls.schemes:
            broken[name] = f"{cls.__qualname__} declares no registry_types or no schemes"
            continue
        try:
            found[name] = cls()
        except TypeError as e:  # abstract methods left unimplemented
            broken[name] = f"{cls.__qualname__}: {e}"
    return found, broken


def registry_store_type(registry_type: str, path: str) -> Any:
    """The registered RegistryStoreType that serves this ``registry_type`` and ``path``."""
    found, broken = registry_store_types()
    if not found and not broken:
        raise ConfigError(f"no registry stores registered for {REGISTRY_GROUP}",
                          hint="install tiffin as a package: pip install -e .")
    serving = {n: t for n, t in found.items() if registry_type in t.registry_types}
    if not serving:
        if registry_type in broken:
            raise plugin_load_error(REGISTRY_GROUP, registry_type, broken)
        known = sorted({k for t in found.values() for k in t.registry_types})
        unsupported = registry_type in FEAST_ONLY_REGISTRY_TYPES
        # A broken plugin's types are unknown (it did not load); it may be the one meant.
        unusable = "".join(f"; unusable: {n} ({why})" for n, why in sorted(broken.items()))
        raise UnknownBackendError(
            f"registry: registry_type {registry_type!r} is not supported"
            + (" by tiffin" if unsupported else ""),
            hint=(None if unsupported else did_you_mean(registry_type, known))
            or f"registered: {', '.join(known)}{unusable}")
    scheme = url_scheme(path)
    shown = redact_url(path)
    exact = [n for n, t in serving.items() if scheme in t.schemes]
    if not exact:
        # A scheme that a store of another registry_type names outright (postgresql:// under
        # the default `file`): the registry_type line was probably forgotten.
        for t in found.values():
            if scheme and scheme in t.schemes and registry_type not in t.registry_types:
                other = t.registry_types[0]
                raise ConfigError(f"registry: path {shown!r} is a URL for registry_type "
                                  f"{other}, not {registry_type}",
                                  hint=f"add registry_type: {other} to the registry section")
        exact = [n for n, t in serving.items() if "*" in t.schemes]
    if not exact:
        schemes = sorted({f"{s}://" if s else "a plain path" for t in serving.values()
                          for s in t.schemes})
        raise UnknownBackendError(
            f"registry: no registry store serves {scheme + '://' if scheme else 'plain'} paths "
            f"for registry_type {registry_type}",
            hint=did_you_mean(scheme, [s.removesuffix("://") for s in schemes])
            or f"registered: {', '.join(schemes)}")
    if len(exact) > 1:
        raise ConfigError(f"registry: registry_type {registry_type} with path {shown!r} is "
                          f"served by several plugins: {', '.join(sorted(exact))}",
                          hint="uninstall all but one of the packages that provide them")
    return serving[exact[0]]


def check_registry(data: dict[str, Any]) -> dict[str, Any]:
    """The registry mapping checked (keys, store, the store's own checks) before pydantic,
    so the errors keep their hints."""
    kind = data.get("registry_type", "file")
    path = data.get("path")
    if not isinstance(kind, str) or not isinstance(path, str):
        return check_keys(data, RegistryConfig, "registry", RegistryConfig.feast_keys)
    store_type = registry_store_type(kind, path)
    data = check_keys(data, RegistryConfig, "registry", RegistryConfig.feast_keys,
                      extra=store_type.keys)
    store_type.check(data)
    scheme = url_scheme(path)
    for key in ("s3_endpoint_url", "s3_additional_kwargs"):
        if data.get(key) is not None and scheme != "s3":
            warnings.warn(f"registry: {key} is ignored: path is not an s3:// URL",
                          UserWarning, stacklevel=5)
    return data


class RepoConfig(BaseModel):
    """The whole ``feature_store.yaml``. Construct it like Feast's ``RepoConfig(...)``."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    project: str
    project_description: str = ""
    registry: RegistryConfig
    provider: str = "local"
    online_store: BackendConfig | None = None
    offline_store: BackendConfig
    batch_engine: BackendConfig
    entity_key_serialization_version: int = 3
    repo_path: Path | None = None

    feast_keys: ClassVar[frozenset[str]] = frozenset({
        "auth", "feature_server", "flags", "coerce_tz_aware", "materialization", "openlineage",
        "mlflow", "embedding_model", "data_quality_monitoring", "go_feature_serving",
        "go_feature_retrieval"})

    def __init__(self, **data: Any):
        # Key checks and backend resolution run before pydantic so their ConfigErrors (with
        # hints) reach the caller as they are instead of wrapped in a ValidationError.
        data = self._resolve(data)
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(_format_validation(e, "feature_store.yaml")) from None

    @classmethod
    def _resolve(cls, data: dict[str, Any]) -> dict[str, Any]:
        data = check_keys(expand_env(dict(data)), cls, "feature_store.yaml", cls.feast_keys)
        if "registry" in data:
            reg = data["registry"]
            if isinstance(reg, str):
                reg = {"path": reg}
            if isinstance(reg, dict):
                data["registry"] = check_registry(reg)
        if "online_store" not in data:
            data["online_store"] = {"type": "sqlite"}
        if data["online_store"] is not None:
            data["online_store"] = parse_backend("online_store", data["online_store"], "sqlite")
        data["offline_store"] = parse_backend("offline_store", data.get("offline_store"), "duckdb")
        data["batch_engine"] = parse_backend("batch_engine", data.get("batch_engine"), "local")
        return data

    @field_validator("project")
    @classmethod
    def _project_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", v):
            raise ValueError(f"project name {v!r} must be letters, digits, '_' or '-', "
                             "starting with a letter or digit")
        return v

    @field_validator("provider")
    @classmethod
    def _provider(cls, v: str) -> str:
        if v not in ("local", "gcp", "aws", "azure"):
            raise ValueError(f"provider {v!r} is not known; use 'local'")
        if v != "local":
            warnings.warn(f"provider {v!r} is accepted for Feast compatibility and behaves as "
                          "'local': the stores configured below are used", UserWarning,
                          stacklevel=2)
        return v

    @field_validator("entity_key_serialization_version")
    @classmethod
    def _eksv(cls, v: int) -> int:
        if v < 2:
            raise ValueError("entity_key_serialization_version below 2 is not supported")
        return v

    def resolve_path(self, path: str) -> Path:
        """A path from the yaml, relative to the repository directory."""
        p = Path(path)
        if p.is_absolute() or self.repo_path is None:
            return p
        return self.repo_path / p

    def redacted(self) -> dict[str, Any]:
        """The resolved config with secrets masked (for ``tiffin configuration``)."""
        return self.model_dump(mode="json", exclude={"repo_path"}, serialize_as_any=True)


YAML_NAME = "feature_store.yaml"


def load_repo_config(repo_path: str | os.PathLike, fs_yaml_file: str | os.PathLike | None = None
                     ) -> RepoConfig:
    """Read and validate ``feature_store.yaml`` from a repository directory."""
    repo_path = Path(repo_path).resolve()
    path = Path(fs_yaml_file) if fs_yaml_file else repo_path / YAML_NAME
    if not path.exists():
        raise ConfigError(f"no {path.name} in {path.parent}",
                          hint="run inside a feature repository, pass --chdir, or create one "
                               "with `tiffin init`")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    raw.pop("repo_path", None)
    try:
        return RepoConfig(**raw, repo_path=repo_path)
    except ConfigError as e:
        if e.message.startswith(f"{YAML_NAME}:") and path.name == YAML_NAME:
            raise
        raise ConfigError(f"{path.name}: {e.message}", hint=e.hint) from None
