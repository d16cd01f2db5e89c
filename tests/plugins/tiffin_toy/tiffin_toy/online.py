"""An online store of JSON files, one per feature view, replaced whole on each write.

Writers of one view take an exclusive ``flock`` for their read-merge-replace, so
concurrent materializations lose nothing; readers never lock (the rename is atomic).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from tiffin.config import RepoConfig
from tiffin.definitions import FeatureView
from tiffin.errors import BackendError
from tiffin.online.base import OnlineStore, Rows, newest_event_us, python_values
from tiffin.types import from_micros
from tiffin_toy.config import ToyJsonOnlineStoreConfig


def _encode(value: Any) -> Any:
    # JSON has no bytes: tag them so a string value that happens to look encoded stays a string.
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any, dtype_name: str) -> Any:
    if value is None:
        return None
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode(v, dtype_name) for v in value]
    if "UnixTimestamp" in dtype_name:
        return from_micros(value)
    return value


class ToyJsonOnlineStore(OnlineStore):
    def __init__(self, config: ToyJsonOnlineStoreConfig, repo_config: RepoConfig):
        super().__init__(config, repo_config)
        self.root = repo_config.resolve_path(config.path)

    def _file(self, view: FeatureView) -> Path:
        return self.root / f"{self.project}__{view.name}.json"

    def _load(self, path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return {"rows": {}, "newest": None}
        except (OSError, ValueError) as e:
            raise BackendError(f"cannot read online rows {path}: {e}") from None

    def _store(self, path: Path, doc: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a+") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def prepare(self, keep: Sequence[FeatureView], delete: Sequence[FeatureView]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.teardown(delete)

    def teardown(self, views: Sequence[FeatureView]) -> None:
        for view in views:
            path = self._file(view)
            with self._locked(path):
                path.unlink(missing_ok=True)

    def write(self, view: FeatureView, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        keys = [f.name for f in view.entity_columns]
        features = [f.name for f in view.features]
        key_cols = [python_values(batch.column(k)) for k in keys]
        value_cols = [python_values(batch.column(f)) for f in features]
        event = python_values(batch.column("__event_ts"))
        created = python_values(batch.column("__created_ts"))
        path = self._file(view)
        with self._locked(path):
            doc = self._load(path)
            rows = doc["rows"]
            for i in range(batch.num_rows):
                key = json.dumps([col[i] for col in key_cols])
                old = rows.get(key)
                new_order = (event[i], created[i] or 0)
                # Monotonic: an older row (or as old and created earlier) never wins.
                if old is not None and (old["event"], old["created"] or 0) > new_order:
                    continue
                rows[key] = {"event": event[i], "created": created[i],
                             "values": {f: _encode(col[i])
                                        for f, col in zip(features, value_cols)}}
            newest = newest_event_us(batch)
            if newest is not None and (doc["newest"] is None or newest > doc["newest"]):
                doc["newest"] = newest
            self._store(path, doc)

    def read(self, view: FeatureView, keys: Sequence[tuple], features: Sequence[str]) -> Rows:
        rows = self._load(self._file(view))["rows"]
        dtypes = {f.name: str(f.dtype) for f in view.features}
        out: list[list[Any] | None] = []
        for key in keys:
            row = rows.get(json.dumps(list(key)))
            if row is None:
                out.append(None)
                continue
            out.append([row["event"], *(_decode(row["values"].get(f), dtypes[f])
                                        for f in features)])
        return out

    def newest_event_times(self, views: Sequence[FeatureView]) -> dict[str, int]:
        found = {}
        for view in views:
            newest = self._load(self._file(view))["newest"]
            if newest is not None:
                found[view.name] = newest
        return found
