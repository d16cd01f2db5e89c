"""A registry kept as numbered versions in a directory (``registry_type: toy_dir``).

Version n is the file ``v<n>.json``. A write after reading version n creates n+1 with
``os.link`` from a complete temporary file, which fails if n+1 exists: of two writers
that read the same version, exactly one wins, with no lock. ``keep_versions`` old
versions keep their content (the section's own key, declared in ``keys``); older ones
are emptied, not removed, so their names stay taken and a writer that read a long
outdated version cannot create one again.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tiffin.config import RepoConfig
from tiffin.errors import ConfigError, RegistryConflictError, RegistryError
from tiffin.registry.base import RegistryStore, RegistryStoreType

_NAME = re.compile(r"v(\d+)\.json")


class ToyDirRegistry(RegistryStoreType):
    registry_types = ("toy_dir",)
    schemes = ("",)
    keys = frozenset({"keep_versions"})

    def check(self, section: dict[str, Any]) -> None:
        keep = section.get("keep_versions", 3)
        if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
            raise ConfigError(f"registry: keep_versions must be a whole number >= 1, got {keep!r}",
                              hint="e.g. keep_versions: 3")

    def open(self, config: RepoConfig) -> RegistryStore:
        keep = (config.registry.model_extra or {}).get("keep_versions", 3)
        return ToyDirRegistryStore(config.resolve_path(config.registry.path), keep)


class ToyDirRegistryStore(RegistryStore):
    def __init__(self, root: str | os.PathLike, keep_versions: int = 3):
        self.root = Path(root)
        self.keep_versions = keep_versions

    def describe(self) -> str:
        return f"{self.root} (versioned directory)"

    def versions(self) -> list[int]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _NAME.fullmatch(n)))

    def read(self) -> tuple[bytes | None, str | None]:
        # A version can be pruned between listing and reading it: list again then.
        for _ in range(10):
            versions = self.versions()
            if not versions:
                return None, None
            try:
                data = (self.root / f"v{versions[-1]}.json").read_bytes()
            except FileNotFoundError:
                continue
            if data:  # empty: emptied by a writer since the listing
                return data, str(versions[-1])
        raise RegistryError(f"registry {self.describe()} keeps changing under the reader")

    def write(self, data: bytes, expected_version: str | None) -> str:
        target = 1 if expected_version is None else int(expected_version) + 1
        if expected_version is None and self.versions():
            raise RegistryConflictError(f"registry {self.describe()} was created meanwhile")
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".v", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.root / f"v{target}.json")
            except FileExistsError:
                raise RegistryConflictError(f"registry {self.describe()} changed while "
                                            "applying", hint="retry") from None
        finally:
            os.unlink(tmp)
        for old in self.versions()[:-self.keep_versions]:
            path = self.root / f"v{old}.json"
            if path.stat().st_size:
                # Replaced by an empty file (atomically: a reader gets all or nothing).
                fd, empty = tempfile.mkstemp(prefix=".e", suffix=".tmp", dir=self.root)
                os.close(fd)
                os.replace(empty, path)
        return str(target)

    def delete(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
