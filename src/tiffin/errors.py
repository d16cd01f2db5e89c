"""Every error tiffin raises, in one tree.

::

    TiffinError
    ├── ConfigError (ValueError)              feature_store.yaml or RepoConfig is wrong
    │   └── UnknownBackendError               `type:` names no installed backend
    ├── DefinitionError (ValueError)          an Entity/FeatureView/... is invalid (found at apply)
    ├── NotFoundError (KeyError)              a name that is not in the registry
    │   ├── EntityNotFoundError
    │   ├── DataSourceNotFoundError
    │   ├── FeatureViewNotFoundError
    │   ├── FeatureServiceNotFoundError
    │   ├── FeatureNotFoundError
    │   ├── PushSourceNotFoundError
    │   └── SavedDatasetNotFoundError
    ├── RequestError (ValueError)             bad input to a call: fix the call, not the server
    │   ├── EntityDataFrameError              entity_df lacks a join key / timestamp column
    │   ├── EntityValueError                  an entity value of the wrong type
    │   └── FeatureNameCollisionError         same feature name from two views
    ├── RegistryError                         the registry cannot be read or written
    │   ├── RegistryFormatError               unreadable or from a newer tiffin
    │   ├── RegistryConflictError             lost a race with another writer (transient)
    │   └── RegistryUnavailableError          cannot reach its bucket or database (transient)
    ├── TransformationError                   an on-demand view's function failed
    ├── BackendError                          a store or engine failed underneath us
    │   └── StoreUnavailableError             cannot reach the store (transient)
    └── MissingDependencyError (ImportError)  a backend's driver is not installed

Input errors also subclass ``ValueError``/``KeyError`` so callers written for
the builtins keep working. ``transient`` says whether retrying can help; retry
logic checks it instead of matching message text. The HTTP server maps the
branches to status codes (NotFound 404, Request/Definition 400, transient 503)
and the CLI prints ``message`` and ``hint`` on one line each; nothing here
imports a web framework.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to ``name``, phrased as a hint, or None."""
    names = sorted(set(candidates))
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return None


class TiffinError(Exception):
    """Base of every tiffin error; ``hint`` says what to do about it."""

    transient = False

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class ConfigError(TiffinError, ValueError):
    """feature_store.yaml or RepoConfig is invalid."""


class UnknownBackendError(ConfigError):
    """A ``type:`` that no installed backend registers."""


class DefinitionError(TiffinError, ValueError):
    """An object definition is invalid; the message names object, field and file."""


class NotFoundError(TiffinError, KeyError):
    """A name that the registry does not hold."""

    kind = "object"

    def __init__(self, name: str, candidates: Iterable[str] = (), *, project: str | None = None,
                 hint: str | None = None):
        self.name = name
        where = f" in project {project!r}" if project else ""
        super().__init__(f"{self.kind} {name!r} not found{where}",
                         hint=hint or did_you_mean(name, candidates))

    # KeyError.__str__ quotes its argument; we want the readable message.
    __str__ = TiffinError.__str__


class EntityNotFoundError(NotFoundError):
    kind = "entity"


class DataSourceNotFoundError(NotFoundError):
    kind = "data source"


class FeatureViewNotFoundError(NotFoundError):
    kind = "feature view"


class FeatureServiceNotFoundError(NotFoundError):
    kind = "feature service"


class FeatureNotFoundError(NotFoundError):
    kind = "feature"


class PushSourceNotFoundError(NotFoundError):
    kind = "push source"


class SavedDatasetNotFoundError(NotFoundError):
    kind = "saved dataset"


class RequestError(TiffinError, ValueError):
    """The call's arguments are wrong."""


class EntityDataFrameError(RequestError):
    """entity_df lacks a join key or its timestamp column cannot be found."""


class EntityValueError(RequestError):
    """An entity value does not fit its join key's type."""


class FeatureNameCollisionError(RequestError):
    """Two requested views give the same feature name without full_feature_names."""


class RegistryError(TiffinError):
    """The registry cannot be read or written."""


class RegistryFormatError(RegistryError):
    """The registry file is corrupt or written by a newer format version."""


class RegistryConflictError(RegistryError):
    """Another writer committed first; re-read and retry."""

    transient = True


class RegistryUnavailableError(RegistryError):
    """The registry's object store or database cannot be reached right now."""

    transient = True


class TransformationError(TiffinError):
    """An on-demand feature view's function raised or returned the wrong shape."""


class BackendError(TiffinError):
    """A store or engine failed underneath tiffin (driver errors are wrapped in this)."""


class StoreUnavailableError(BackendError):
    """The store cannot be reached right now."""

    transient = True


class MissingDependencyError(TiffinError, ImportError):
    """A backend's driver is not installed."""

    def __init__(self, package: str, extra: str):
        super().__init__(f"the {package!r} package is not installed",
                         hint=f"pip install 'tiffin[{extra}]'")
