"""The registry as one local file, replaced atomically under an exclusive lock."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tiffin.errors import RegistryConflictError, RegistryError
from tiffin.registry.base import RegistryStore


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class FileRegistryStore(RegistryStore):
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def describe(self) -> str:
        return str(self.path)

    def read(self) -> tuple[bytes | None, str | None]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None, None
        except OSError as e:
            raise RegistryError(f"cannot read registry {self.path}: {e}") from e
        return data, _version(data)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # flock serializes writers across processes on this machine (every `tiffin apply`
        # takes it for its compare-and-replace); the rename in write() is what keeps readers,
        # who never lock, from ever seeing half a file.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            lock = open(self._lock_path, "a+")
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                # delete() removes the lock file: a writer that was waiting on the removed
                # file would hold a lock nobody else takes. Only the file at the path counts.
                try:
                    same = os.stat(self._lock_path).st_ino == os.fstat(lock.fileno()).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    try:
                        yield
                    finally:
                        fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
                    return
            finally:
                lock.close()

    def write(self, data: bytes, expected_version: str | None) -> str:
        with self._locked():
            _, current = self.read()
            if current != expected_version:
                raise RegistryConflictError(f"registry {self.path} changed while applying",
                                            hint="retry; tiffin retries this on its own")
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp",
                                       dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        return _version(data)

    def delete(self) -> None:
        with self._locked():
            self.path.unlink(missing_ok=True)
            self._lock_path.unlink(missing_ok=True)
