"""The file registry: format, diffs, atomic writes, caching and concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import warnings
from datetime import datetime, timezone

import pytest

from tiffin import Entity, ValueType
from tiffin.errors import EntityNotFoundError, RegistryConflictError, RegistryFormatError
from tiffin.registry import Registry
from tiffin.registry.file import FileRegistryStore
from tiffin.registry.registry import FORMAT_VERSION


def entity(name: str, description: str = "") -> Entity:
    return Entity(name=name, join_keys=[f"{name}_id"], value_type=ValueType.INT64,
                  description=description)


@pytest.fixture
def registry(tmp_path):
    return Registry(FileRegistryStore(tmp_path / "registry.json"), "proj", cache_ttl_seconds=600)


def test_apply_creates_updates_and_is_idempotent(registry):
    diff = registry.apply([entity("driver"), entity("customer")])
    assert [(c.op, c.name) for c in diff.changes] == [("create", "driver"), ("create", "customer")]
    assert not registry.apply([entity("driver"), entity("customer")])
    diff = registry.apply([entity("driver", "changed")])
    assert [(c.op, c.name) for c in diff.changes] == [("update", "driver")]
    assert "changed: description" in str(diff)
    assert registry.get("entities", "driver").description == "changed"


def test_partial_apply_is_additive_and_full_apply_deletes(registry):
    registry.apply([entity("driver"), entity("customer")])
    registry.apply([entity("rider")])  # SDK default: additive
    assert sorted(e.name for e in registry.list("entities")) == ["customer", "driver", "rider"]
    diff = registry.apply([], delete=[entity("rider")])
    assert [(c.op, c.name) for c in diff.changes] == [("delete", "rider")]
    diff = registry.apply([entity("driver")], partial=False)  # CLI: sync to the repository
    assert [(c.op, c.name) for c in diff.changes] == [("delete", "customer")]
    assert [e.name for e in registry.list("entities")] == ["driver"]


def test_plan_changes_nothing(registry):
    registry.apply([entity("driver")])
    diff = registry.plan([entity("customer")], partial=False)
    assert sorted((c.op, c.name) for c in diff.changes) == [("create", "customer"),
                                                              ("delete", "driver")]
    assert [e.name for e in registry.list("entities", allow_cache=False)] == ["driver"]


def test_document_format_and_projects_are_separate(tmp_path, registry):
    registry.apply([entity("driver")])
    other = Registry(FileRegistryStore(tmp_path / "registry.json"), "other")
    other.apply([entity("customer")])
    doc = json.loads((tmp_path / "registry.json").read_text())
    assert doc["format"] == "tiffin.registry" and doc["format_version"] == FORMAT_VERSION
    assert doc["serial"] == 2
    assert list(doc["projects"]["proj"]["entities"]) == ["driver"]
    assert list(doc["projects"]["other"]["entities"]) == ["customer"]
    with pytest.raises(EntityNotFoundError, match="did you mean 'driver'"):
        registry.get("entities", "drivr", allow_cache=False)


def test_newer_format_and_garbage_are_refused(tmp_path, registry):
    path = tmp_path / "registry.json"
    path.write_text(json.dumps({"format": "tiffin.registry", "format_version": 99,
                                "projects": {}}))
    with pytest.raises(RegistryFormatError, match="upgrade tiffin"):
        registry.refresh()
    path.write_bytes(b"\x08\x01feast-proto")
    with pytest.raises(RegistryFormatError):
        registry.refresh()


def test_cache_ttl(tmp_path):
    store = FileRegistryStore(tmp_path / "registry.json")
    cached = Registry(store, "proj", cache_ttl_seconds=600)
    writer = Registry(store, "proj")
    assert cached.list("entities") == []
    writer.apply([entity("driver")])
    assert cached.list("entities") == []  # still the cached snapshot
    assert [e.name for e in cached.list("entities", allow_cache=False)] == ["driver"]
    forever = Registry(store, "proj", cache_ttl_seconds=0)  # 0: cache until refreshed
    assert len(forever.list("entities")) == 1
    writer.apply([entity("customer")])
    assert len(forever.list("entities")) == 1
    forever.refresh()
    assert len(forever.list("entities")) == 2


def test_conditional_write_rejects_a_stale_version(tmp_path):
    store = FileRegistryStore(tmp_path / "registry.json")
    _, v0 = store.read()
    store.write(b'{"a": 1}', v0)
    with pytest.raises(RegistryConflictError):
        store.write(b'{"a": 2}', v0)  # someone else wrote since v0
    assert store.read()[0] == b'{"a": 1}'


def test_a_failed_write_leaves_the_old_registry_whole(tmp_path, monkeypatch):
    store = FileRegistryStore(tmp_path / "registry.json")
    registry = Registry(store, "proj")
    registry.apply([entity("driver")])
    before = (tmp_path / "registry.json").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        registry.apply([entity("customer")])
    assert (tmp_path / "registry.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_watermarks(registry):
    t1 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    t2 = datetime(2026, 1, 2, tzinfo=timezone.utc)
    registry.record_materialization("fv", t1, t2)
    registry.record_materialization("fv", t1, t1)  # an older end never moves it back
    m = registry.snapshot(allow_cache=False).materialization("fv")
    assert m["watermark"] == t2.isoformat()
    assert m["intervals"] == [[t1.isoformat(), t2.isoformat()], [t1.isoformat(), t1.isoformat()]]


def _apply_many(path: str, worker: int, n: int) -> None:
    warnings.simplefilter("ignore")
    registry = Registry(FileRegistryStore(path), "proj")
    for i in range(n):
        registry.apply([entity(f"e{worker}_{i}")])


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "registry.json")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_apply_many, args=(path, w, 10)) for w in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    names = {e.name for e in Registry(FileRegistryStore(path), "proj").list("entities")}
    assert names == {f"e{w}_{i}" for w in range(6) for i in range(10)}


# -- several repositories sharing one project (what `tiffin apply` does: a full sync) ---------

def test_full_syncs_from_two_repositories_share_a_project(tmp_path):
    store = FileRegistryStore(tmp_path / "registry.json")
    team_a = Registry(store, "proj", repository="team_a")
    team_b = Registry(store, "proj", repository="team_b")
    team_a.apply([entity("shared"), entity("a1")], partial=False)
    diff = team_b.apply([entity("shared"), entity("b1")], partial=False)
    assert [(c.op, c.name) for c in diff.changes] == [("create", "b1")]
    assert diff.kept == 1 and "1 defined by other repositories left as they are" in str(diff)
    assert {e.name for e in team_a.list("entities", allow_cache=False)} == {"shared", "a1", "b1"}

    # team_a drops a1 and the shared entity: a1 goes; shared stays, team_b still defines it.
    assert team_a.plan([], partial=False).of("delete") == team_a.apply([], partial=False).of(
        "delete")
    assert {e.name for e in team_a.list("entities", allow_cache=False)} == {"shared", "b1"}
    owners = team_a.snapshot().data["owners"]
    assert owners == {"entities/shared": ["team_b"], "entities/b1": ["team_b"]}

    # Once no repository defines it, it goes.
    diff = team_b.apply([entity("b1")], partial=False)
    assert [(c.op, c.name) for c in diff.changes] == [("delete", "shared")]


def test_full_sync_deletes_what_no_repository_owns(tmp_path):
    store = FileRegistryStore(tmp_path / "registry.json")
    Registry(store, "proj", repository="other").apply([entity("theirs")], partial=False)
    Registry(store, "proj").apply([entity("from_sdk")])  # additive SDK apply: no owner
    diff = Registry(store, "proj", repository="mine").apply([entity("mine")], partial=False)
    assert sorted((c.op, c.name) for c in diff.changes) == [("create", "mine"),
                                                            ("delete", "from_sdk")]
    assert diff.kept == 1


def test_explicit_deletes_ignore_ownership(tmp_path):
    store = FileRegistryStore(tmp_path / "registry.json")
    Registry(store, "proj", repository="a").apply([entity("x")], partial=False)
    registry = Registry(store, "proj", repository="b")
    registry.apply([], delete=[entity("x")])
    assert registry.list("entities", allow_cache=False) == []
    assert registry.snapshot().data["owners"] == {}


def test_fsspec_url_round_trip(tmp_path):
    pytest.importorskip("fsspec")
    from tiffin.config import RepoConfig
    from tiffin.registry import registry_store
    url = f"memory://tiffin-test/{tmp_path.name}/registry.json"
    store = registry_store(RepoConfig(project="proj", registry=url))
    registry = Registry(store, "proj")
    registry.apply([entity("driver")])
    assert [e.name for e in Registry(store, "proj").list("entities")] == ["driver"]
    _, version = store.read()
    store.write(b'{"format": "tiffin.registry", "projects": {}}', version)
    with pytest.raises(RegistryConflictError):
        store.write(b"{}", version)
    store.delete()
    assert store.read() == (None, None)


def test_file_lock_survives_a_concurrent_delete(tmp_path):
    # delete() removes the lock file. A writer that was waiting on the removed file must not
    # think it holds the lock that writers arriving later take on the new file.
    import fcntl
    import threading
    store = FileRegistryStore(tmp_path / "registry.json")
    lock_path = tmp_path / "registry.json.lock"
    held = store._locked()
    held.__enter__()
    waiter = threading.Thread(target=store.write, args=(b"{}", None))
    waiter.start()
    waiter.join(0.3)  # now blocked on the lock we hold
    lock_path.unlink()  # what delete() does while holding the lock
    newcomer = open(lock_path, "a+")  # a writer arriving after the delete locks the new file
    fcntl.flock(newcomer.fileno(), fcntl.LOCK_EX)
    held.__exit__(None, None, None)  # the waiter wakes up holding the removed file...
    waiter.join(0.5)
    assert waiter.is_alive()  # ...and queues behind the newcomer instead of writing
    assert not store.path.exists()
    newcomer.close()
    waiter.join(10)
    assert not waiter.is_alive()
    assert store.read()[0] == b"{}"
