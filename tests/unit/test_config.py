"""feature_store.yaml / RepoConfig: defaults, backends, did-you-mean errors, env expansion."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tiffin.config import RegistryConfig, RepoConfig, load_repo_config
from tiffin.errors import ConfigError, TiffinError, UnknownBackendError


def write_yaml(tmp_path: Path, text: str) -> Path:
    (tmp_path / "feature_store.yaml").write_text(textwrap.dedent(text).lstrip())
    return tmp_path


def minimal(**extra) -> dict:
    return {"project": "demo", "registry": "data/registry.json", **extra}


# -- defaults -------------------------------------------------------------------------------

def test_defaults():
    cfg = RepoConfig(**minimal())
    assert cfg.project == "demo"
    assert cfg.provider == "local"
    assert cfg.online_store is not None
    assert cfg.online_store.type == "sqlite"
    assert cfg.online_store.path == "data/online.db"
    assert cfg.offline_store.type == "duckdb"
    assert cfg.batch_engine.type == "local"
    assert isinstance(cfg.registry, RegistryConfig)
    assert cfg.registry.path == "data/registry.json"
    assert cfg.registry.registry_type == "file"
    assert cfg.registry.cache_ttl_seconds == 600
    assert cfg.entity_key_serialization_version == 3


def test_registry_as_mapping():
    cfg = RepoConfig(project="demo",
                     registry={"path": "data/reg.json", "cache_ttl_seconds": 5})
    assert cfg.registry.path == "data/reg.json"
    assert cfg.registry.cache_ttl_seconds == 5


@pytest.mark.parametrize("value", [{"type": "file"}, {"type": "dask"}, "file", {"type": "duckdb"}])
def test_feast_offline_store_types_resolve_to_duckdb(value):
    cfg = RepoConfig(**minimal(offline_store=value))
    assert cfg.offline_store.type == "duckdb"


def test_online_store_null_disables_online_store():
    cfg = RepoConfig(**minimal(online_store=None))
    assert cfg.online_store is None


def test_online_store_path_is_kept():
    cfg = RepoConfig(**minimal(online_store={"type": "sqlite", "path": "x/y.db"}))
    assert cfg.online_store.path == "x/y.db"


def test_resolve_path_relative_to_repo(tmp_path):
    cfg = RepoConfig(**minimal(), repo_path=tmp_path)
    assert cfg.resolve_path("data/a.db") == tmp_path / "data" / "a.db"
    assert cfg.resolve_path(str(tmp_path / "abs.db")) == tmp_path / "abs.db"


# -- unknown keys and backends --------------------------------------------------------------

@pytest.mark.parametrize("data, exc, key, suggestion", [
    (minimal(onlin_store={"type": "sqlite"}), ConfigError, "onlin_store", "online_store"),
    (minimal(ofline_store={"type": "duckdb"}), ConfigError, "ofline_store", "offline_store"),
    (minimal(online_store={"type": "sqlite", "pth": "x"}), ConfigError, "pth", "path"),
    (minimal(online_store={"type": "sqllite"}), UnknownBackendError, "sqllite", "sqlite"),
    (minimal(offline_store={"type": "duckd"}), UnknownBackendError, "duckd", "duckdb"),
    ({"project": "demo", "registry": {"path": "r.json", "cache_ttl_secs": 1}}, ConfigError,
     "cache_ttl_secs", "cache_ttl_seconds"),
])
def test_unknown_names_get_did_you_mean(data, exc, key, suggestion):
    with pytest.raises(exc) as info:
        RepoConfig(**data)
    err = info.value
    assert isinstance(err, ValueError)
    assert isinstance(err, TiffinError)
    assert key in err.message
    assert err.hint == f"did you mean {suggestion!r}?"
    assert suggestion in str(err)


def test_unknown_key_without_close_match_lists_valid_keys():
    with pytest.raises(ConfigError) as info:
        RepoConfig(**minimal(zzzzzz=1))
    assert "zzzzzz" in info.value.message
    assert "online_store" in info.value.hint


def test_unknown_backend_error_is_config_error():
    assert issubclass(UnknownBackendError, ConfigError)


# -- Feast-only keys: accepted with a warning -----------------------------------------------

@pytest.mark.parametrize("data, key", [
    (minimal(auth={"type": "no_auth"}), "auth"),
    (minimal(feature_server={"enabled": True}), "feature_server"),
    (minimal(flags={"alpha_features": True}), "flags"),
    (minimal(coerce_tz_aware=True), "coerce_tz_aware"),
    ({"project": "demo", "registry": {"path": "r.json", "cache_mode": "sync"}}, "cache_mode"),
    (minimal(online_store={"type": "sqlite", "vector_enabled": True}), "vector_enabled"),
])
def test_feast_only_keys_warn(data, key):
    with pytest.warns(UserWarning, match=key):
        cfg = RepoConfig(**data)
    assert cfg.project == "demo"
    assert key not in cfg.redacted()


# -- environment variables ------------------------------------------------------------------

def test_env_var_expansion(monkeypatch):
    monkeypatch.setenv("TIFFIN_TEST_DB", "/tmp/online-from-env.db")
    cfg = RepoConfig(**minimal(online_store={"type": "sqlite", "path": "${TIFFIN_TEST_DB}"}))
    assert cfg.online_store.path == "/tmp/online-from-env.db"


@pytest.mark.parametrize("set_value, expected", [(None, "fallback.db"), ("set.db", "set.db")])
def test_env_var_default(monkeypatch, set_value, expected):
    monkeypatch.delenv("TIFFIN_TEST_MAYBE", raising=False)
    if set_value is not None:
        monkeypatch.setenv("TIFFIN_TEST_MAYBE", set_value)
    cfg = RepoConfig(**minimal(
        online_store={"type": "sqlite", "path": "data/${TIFFIN_TEST_MAYBE:-fallback.db}"}))
    assert cfg.online_store.path == f"data/{expected}"


def test_missing_env_var_names_it(monkeypatch):
    monkeypatch.delenv("TIFFIN_TEST_MISSING", raising=False)
    with pytest.raises(ConfigError, match="TIFFIN_TEST_MISSING") as info:
        RepoConfig(**minimal(online_store={"type": "sqlite", "path": "${TIFFIN_TEST_MISSING}"}))
    assert "online_store" in info.value.message


def test_env_var_in_yaml_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TIFFIN_TEST_PROJECT", "from_env")
    write_yaml(tmp_path, """
        project: ${TIFFIN_TEST_PROJECT}
        registry: data/registry.json
    """)
    assert load_repo_config(tmp_path).project == "from_env"


# -- invalid values -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["my project", "-lead", "bad/name", "", "dots.no"])
def test_invalid_project_name(name):
    with pytest.raises(ConfigError, match="project"):
        RepoConfig(**{**minimal(), "project": name})


@pytest.mark.parametrize("name", ["demo", "Demo_2", "a-b", "9lives"])
def test_valid_project_names(name):
    assert RepoConfig(**{**minimal(), "project": name}).project == name


@pytest.mark.parametrize("data, field_path", [
    ({"project": "demo", "registry": {"path": "r.json", "cache_ttl_seconds": "abc"}},
     "registry.cache_ttl_seconds"),
    (minimal(online_store={"type": "sqlite", "timeout_seconds": "soon"}),
     "online_store.timeout_seconds"),
    (minimal(batch_engine={"type": "local", "batch_rows": "many"}), "batch_engine.batch_rows"),
    (minimal(entity_key_serialization_version="three"), "entity_key_serialization_version"),
])
def test_wrong_value_type_names_field_path(data, field_path):
    with pytest.raises(ConfigError) as info:
        RepoConfig(**data)
    assert field_path in str(info.value)


def test_missing_project_is_config_error():
    with pytest.raises(ConfigError, match="project"):
        RepoConfig(registry="r.json")


def test_entity_key_serialization_version_below_2_rejected():
    with pytest.raises(ConfigError, match="entity_key_serialization_version"):
        RepoConfig(**minimal(entity_key_serialization_version=1))


def test_non_local_provider_warns_and_is_accepted():
    with pytest.warns(UserWarning, match="gcp"):
        cfg = RepoConfig(**minimal(provider="gcp"))
    assert cfg.provider == "gcp"


# -- loading from a folder ------------------------------------------------------------------

def test_load_minimal_yaml(tmp_path):
    write_yaml(tmp_path, """
        project: demo
        registry: data/registry.json
    """)
    cfg = load_repo_config(tmp_path)
    assert cfg.project == "demo"
    assert cfg.repo_path == tmp_path.resolve()
    assert cfg.resolve_path(cfg.registry.path) == tmp_path.resolve() / "data" / "registry.json"


def test_missing_yaml_hints_init(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_repo_config(tmp_path)
    assert "feature_store.yaml" in info.value.message
    assert "tiffin init" in info.value.hint


@pytest.mark.parametrize("text", [
    "project: demo\nregistry: [unclosed\n",
    "project: demo\n  registry: x\n bad: indent\n",
    "- just\n- a list\n",
])
def test_invalid_yaml(tmp_path, text):
    (tmp_path / "feature_store.yaml").write_text(text)
    with pytest.raises(ConfigError, match="feature_store.yaml|YAML|mapping"):
        load_repo_config(tmp_path)


def test_yaml_errors_name_the_file_and_key(tmp_path):
    write_yaml(tmp_path, """
        project: demo
        registry: data/registry.json
        onlin_store:
          type: sqlite
    """)
    with pytest.raises(ConfigError) as info:
        load_repo_config(tmp_path)
    assert "feature_store.yaml" in info.value.message
    assert "onlin_store" in info.value.message
    assert info.value.hint == "did you mean 'online_store'?"


def test_explicit_yaml_file(tmp_path):
    other = tmp_path / "conf" / "store.yaml"
    other.parent.mkdir()
    other.write_text("project: other\nregistry: r.json\n")
    cfg = load_repo_config(tmp_path, other)
    assert cfg.project == "other"


def test_feast_067_feature_store_yaml_loads(tmp_path):
    """A feature_store.yaml as `feast init` writes it, plus a Feast offline store type."""
    write_yaml(tmp_path, """
        project: my_project
        # a Feast-style registry path; tiffin writes its own format there
        registry: data/registry.db
        provider: local
        online_store:
          type: sqlite
          path: data/online_store.db
        offline_store:
          type: file
        entity_key_serialization_version: 3
    """)
    cfg = load_repo_config(tmp_path)
    assert cfg.project == "my_project"
    assert cfg.registry.path == "data/registry.db"
    assert cfg.online_store.type == "sqlite"
    assert cfg.online_store.path == "data/online_store.db"
    assert cfg.offline_store.type == "duckdb"
    assert cfg.entity_key_serialization_version == 3


def test_feast_yaml_with_feast_only_sections_loads_with_warnings(tmp_path):
    write_yaml(tmp_path, """
        project: my_project
        registry:
          registry_type: file
          path: data/registry.db
          cache_mode: sync
        provider: local
        online_store:
          type: sqlite
          path: data/online_store.db
          vector_enabled: false
        auth:
          type: no_auth
        entity_key_serialization_version: 3
    """)
    with pytest.warns(UserWarning) as record:
        cfg = load_repo_config(tmp_path)
    messages = " ".join(str(w.message) for w in record)
    for key in ("cache_mode", "vector_enabled", "auth"):
        assert key in messages
    assert cfg.registry.path == "data/registry.db"


def test_redacted_config_is_plain_data():
    cfg = RepoConfig(**minimal(), repo_path=Path("/somewhere"))
    dumped = cfg.redacted()
    assert "repo_path" not in dumped
    assert dumped["online_store"]["type"] == "sqlite"
    assert dumped["registry"]["path"] == "data/registry.json"


# -- registry kinds: file (local, s3://, fsspec), sql ----------------------------------------

@pytest.mark.parametrize("registry, kind, path", [
    ("s3://bucket/feast/registry.json", "file", "s3://bucket/feast/registry.json"),
    ({"path": "s3://b/r.json", "s3_endpoint_url": "http://127.0.0.1:9000"}, "file", "s3://b/r.json"),
    ({"registry_type": "sql", "path": "sqlite:///data/registry.db"}, "sql",
     "sqlite:///data/registry.db"),
    ({"registry_type": "sql", "path": "postgresql+psycopg://postgres@127.0.0.1:5432/db",
      "sqlalchemy_config_kwargs": {"echo": False}}, "sql",
     "postgresql+psycopg://postgres@127.0.0.1:5432/db"),
])
def test_registry_kinds(registry, kind, path):
    cfg = RepoConfig(project="demo", registry=registry)
    assert cfg.registry.registry_type == kind
    assert cfg.registry.path == path


@pytest.mark.parametrize("registry, exc, message, hint", [
    ({"registry_type": "sqll", "path": "x"}, UnknownBackendError, "registry_type 'sqll'",
     "did you mean 'sql'?"),
    ({"registry_type": "remote", "path": "h:6570"}, UnknownBackendError, "not supported by tiffin",
     "registered: file, sql"),
    ({"registry_type": "sql", "path": "data/registry.db"}, ConfigError, "needs a SQLAlchemy URL",
     "sqlite:///data/registry.db"),
    ({"path": "postgresql://u:pw@h/db"}, ConfigError, "is a URL for registry_type sql",
     "add registry_type: sql to the registry section"),
    ("s3://bucket-only", ConfigError, "not s3://bucket/key", "e.g. s3://my-bucket/"),
    ({"path": "s3://b/k", "s3_endpoint": "http://x"}, ConfigError, "unknown key 's3_endpoint'",
     "did you mean 's3_endpoint_url'?"),
])
def test_bad_registry_sections(registry, exc, message, hint):
    with pytest.raises(exc, match=message) as info:
        RepoConfig(project="demo", registry=registry)
    assert hint in info.value.hint
    assert "pw" not in str(info.value)


def test_registry_url_password_is_redacted():
    cfg = RepoConfig(project="demo", registry={
        "registry_type": "sql", "path": "postgresql://tiffin:s3cr3t@db:5432/registry"})
    assert cfg.registry.path == "postgresql://tiffin:s3cr3t@db:5432/registry"  # usable...
    assert cfg.redacted()["registry"]["path"] == "postgresql://tiffin:***@db:5432/registry"


def test_s3_keys_on_a_local_registry_warn():
    with pytest.warns(UserWarning, match="s3_endpoint_url is ignored"):
        RepoConfig(project="demo", registry={"path": "data/r.json",
                                             "s3_endpoint_url": "http://x"})


def test_duckdb_offline_store_defaults_bound_memory_and_spill_to_temp():
    import tempfile

    cfg = RepoConfig(**minimal())
    assert cfg.offline_store.memory_limit == "1GB"
    assert cfg.offline_store.temp_directory == str(Path(tempfile.gettempdir()) / "tiffin-duckdb")
    cfg = RepoConfig(**minimal(offline_store={"type": "duckdb", "memory_limit": None,
                                              "temp_directory": "~/spill"}))
    assert cfg.offline_store.memory_limit is None
    assert cfg.offline_store.temp_directory == str(Path("~/spill").expanduser())


@pytest.mark.parametrize("key, value, words", [
    ("memory_limit", "lots", "not a size"),
    ("memory_limit", "0GB", "not a size"),
    ("memory_limit", "4 parsecs", "not a size"),
    ("in_memory_join_max_rows", -1, "0 or more"),
    ("threads", 0, "at least 1"),
])
def test_duckdb_offline_store_rejects_bad_settings(key, value, words):
    with pytest.raises(ConfigError, match=f"offline_store.{key}.*{words}"):
        RepoConfig(**minimal(offline_store={"type": "duckdb", key: value}))


def test_duckdb_temp_directory_must_not_be_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="temp_directory.*not a directory"):
        RepoConfig(**minimal(offline_store={"type": "duckdb", "temp_directory": str(f)}))
