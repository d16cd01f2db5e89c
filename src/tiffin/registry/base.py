"""Where the registry's bytes live. One small interface; the Registry facade does the rest."""

from __future__ import annotations

from abc import ABC, abstractmethod


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
