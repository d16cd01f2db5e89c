"""Where the registry's bytes live. One small interface; the Registry facade does the rest."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from tiffin.config import RepoConfig


class RegistryStore(ABC):
    """Reads and conditionally writes one registry document.

    ``version`` is an opaque token of what was read. ``write`` succeeds only if
    the stored document still has ``expected_version`` (None: it must not
    exist yet); otherwise it raises ``RegistryConflictError`` and the caller
    re-reads and retries. That is what makes concurrent ``apply`` lose nothing.
    """

    @abstractmethod
    def read(self) -> tuple[bytes | None, str | None]:
        """(document, version), or (None, None) when there is no registry yet."""

    @abstractmethod
    def write(self, data: bytes, expected_version: str | None) -> str:
        """Replace the document atomically if unchanged since ``expected_version``."""

    @abstractmethod
    def delete(self) -> None:
        """Remove the registry (teardown)."""

    @abstractmethod
    def describe(self) -> str:
        """Where the registry is, for messages (no secrets)."""

    def close(self) -> None:
        """Release clients and connections; the store may be used again afterwards."""


class RegistryStoreType(ABC):
    """What an entry point of the ``tiffin.registry_stores`` group names: which registry
    sections a store serves, and how to open it.

    A section is served by the type that lists its ``registry_type`` (default ``file``) in
    ``registry_types`` and the scheme of its ``path`` (``s3`` for ``s3://b/k``, ``''`` for a
    plain path) in ``schemes``; ``'*'`` there serves any scheme no other type of the same
    ``registry_type`` names. Importing the class must stay cheap: ``open`` imports the
    store and its driver, only when a repository uses it.
    """

    registry_types: ClassVar[tuple[str, ...]] = ()
    schemes: ClassVar[tuple[str, ...]] = ()
    # Keys of the registry section this store reads beyond RegistryConfig's own; they are
    # in ``config.registry.model_extra``.
    keys: ClassVar[frozenset[str]] = frozenset()

    def check(self, section: dict[str, Any]) -> None:
        """Raise ConfigError (with a hint) for a section that cannot work, before anything
        is opened; ``section`` is the registry mapping as written (env expanded)."""

    @abstractmethod
    def open(self, config: RepoConfig) -> RegistryStore:
        """The store for ``config.registry`` (relative paths against ``config.repo_path``)."""
