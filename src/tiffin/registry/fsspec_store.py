"""The registry as one object behind any fsspec URL (``gs://``, ``az://``, ``hdfs://``, ...).

fsspec has no portable conditional write, so this store compares the stored bytes with
the version read just before replacing them: it catches a writer that committed earlier,
but two writers inside that short window can still overwrite one another. Use ``s3://``
or ``registry_type: sql`` where several people or jobs ``apply`` at once.
"""

from __future__ import annotations

import hashlib
from typing import Any

from tiffin.config import redact_url
from tiffin.errors import ConfigError, RegistryConflictError, RegistryError
from tiffin.registry.base import RegistryStore


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def _filesystem(url: str) -> tuple[Any, str]:
    try:
        import fsspec
    except ImportError:
        raise ConfigError(f"registry path {redact_url(url)!r} needs fsspec",
                          hint="pip install fsspec plus the package for this scheme (gcsfs, "
                               "adlfs, ...), or use a local path, s3:// or registry_type: sql"
                          ) from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:  # unknown protocol, or its package is missing
        raise ConfigError(f"registry path {redact_url(url)!r}: {e}",
                          hint="install the fsspec package for this scheme") from None


class FsspecRegistryStore(RegistryStore):
    """``registry: gs://bucket/registry.json`` and other fsspec URLs (fsspec installed)."""

    def __init__(self, url: str):
        self.url = url
        self._fs, self._path = _filesystem(url)

    def describe(self) -> str:
        return redact_url(self.url)

    def read(self) -> tuple[bytes | None, str | None]:
        try:
            data = self._fs.cat_file(self._path)
        except FileNotFoundError:
            return None, None
        except Exception as e:  # each filesystem raises its own errors
            raise RegistryError(f"cannot read registry {self.describe()}: {type(e).__name__}: {e}"
                                ) from None
        return data, _version(data)

    def write(self, data: bytes, expected_version: str | None) -> str:
        _, current = self.read()
        if current != expected_version:
            raise RegistryConflictError(f"registry {self.describe()} changed while applying",
                                        hint="retry; tiffin retries this on its own")
        try:
            self._fs.pipe_file(self._path, data)
        except Exception as e:
            raise RegistryError(f"cannot write registry {self.describe()}: {type(e).__name__}: {e}"
                                ) from None
        return _version(data)

    def delete(self) -> None:
        try:
            self._fs.rm_file(self._path)
        except FileNotFoundError:
            pass
        except Exception as e:
            raise RegistryError(f"cannot delete registry {self.describe()}: {type(e).__name__}: {e}"
                                ) from None
