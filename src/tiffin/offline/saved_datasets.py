"""Writing a retrieval into a saved dataset's storage, and reading it back.

``SavedDatasetFileStorage`` (Parquet) works with every offline store: the retrieval is
streamed (``RetrievalJob.persist``) to a temporary file beside the target, then renamed
into place, so a failed write leaves no half-written file and does not clobber the
dataset it was meant to replace. Reading streams the file back in record batches.

Table storages belong to offline backends. A backend that can keep saved datasets in
its own tables (a PostgreSQL table, a Spark table) does two things in its own package:

1. defines the storage kind, a ``SavedDatasetStorage`` subclass with its own tag::

       class SavedDatasetPostgreSQLStorage(SavedDatasetStorage):
           storage_type = "postgres"          # the tag in the registry's dict form

           def __init__(self, table_ref: str):
               self.table_ref = table_ref

           def fields(self):
               return {"table_ref": self.table_ref}

           @property
           def location(self):
               return self.table_ref

2. mixes :class:`SavedDatasetTables` into its ``OfflineStore``, lists the storage classes
   it handles in ``saved_dataset_storages`` and implements ``persist_saved_dataset`` and
   ``read_saved_dataset``.

The facade asks for the ability (``isinstance`` on the mixin and the storage class)
instead of catching ``NotImplementedError``; any other combination is a ``RequestError``
that names the offline store and the storage. A registry entry whose storage class is
not loaded yet (its backend module not imported) stays an ``UnregisteredStorage`` until
it is read; by then the configured offline store is built, its module imported, and the
kind resolves.
"""

from __future__ import annotations

import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pyarrow as pa

from tiffin.definitions.saved_dataset import (
    SavedDataset,
    SavedDatasetFileStorage,
    SavedDatasetStorage,
    UnregisteredStorage,
)
from tiffin.errors import DefinitionError, RequestError
from tiffin.offline.base import OfflineStore, RetrievalJob


class SavedDatasetTables(ABC):
    """Optional ability of an offline store: keep saved datasets in its own tables.

    >>> class PostgreSQLOfflineStore(OfflineStore, SavedDatasetTables):   # doctest: +SKIP
    ...     saved_dataset_storages = (SavedDatasetPostgreSQLStorage,)
    """

    saved_dataset_storages: ClassVar[tuple[type[SavedDatasetStorage], ...]] = ()

    @abstractmethod
    def persist_saved_dataset(self, job: RetrievalJob, storage: SavedDatasetStorage,
                              allow_overwrite: bool) -> None:
        """Write the job's rows into the table named by ``storage``, streaming (the job may
        come from this store, e.g. one ``CREATE TABLE AS``, or be any RetrievalJob: use
        ``job.to_arrow_batches()``). If the table exists and not ``allow_overwrite``, raise
        ``RequestError``; replace it atomically where the engine allows."""

    @abstractmethod
    def read_saved_dataset(self, storage: SavedDatasetStorage, batch_rows: int
                           ) -> pa.RecordBatchReader:
        """Stream the table's rows back in the order they were written. A missing table is
        a ``DefinitionError`` naming it."""


def _supports(store: OfflineStore, storage: SavedDatasetStorage) -> bool:
    return isinstance(store, SavedDatasetTables) and \
        isinstance(storage, store.saved_dataset_storages)


def _unsupported(store: OfflineStore, storage: SavedDatasetStorage, doing: str) -> RequestError:
    store_type = getattr(store.config, "type", type(store).__name__)
    if isinstance(storage, UnregisteredStorage):
        return RequestError(f"cannot {doing} {storage.storage_type!r} storage: no loaded "
                            f"offline store defines it (this repository uses {store_type!r})",
                            hint="configure the offline store that created this dataset")
    handled = [c.__name__ for c in getattr(store, "saved_dataset_storages", ())]
    return RequestError(f"the {store_type!r} offline store cannot {doing} "
                        f"{type(storage).__name__}",
                        hint=f"use {', '.join(['SavedDatasetFileStorage', *handled])}")


def persist(store: OfflineStore, job: RetrievalJob, storage: SavedDatasetStorage,
            allow_overwrite: bool, repo_path: str | os.PathLike | None) -> None:
    """Write ``job`` into ``storage``, streaming; nothing is registered here."""
    if isinstance(storage, SavedDatasetFileStorage):
        _persist_file(job, storage.resolved_path(repo_path), allow_overwrite)
    elif _supports(store, storage):
        store.persist_saved_dataset(job, storage, allow_overwrite)  # type: ignore[attr-defined]
    else:
        raise _unsupported(store, storage, "write saved datasets to")


def _persist_file(job: RetrievalJob, path: str, allow_overwrite: bool) -> None:
    if "://" in path:
        raise RequestError(f"cannot write a saved dataset to {path}: only local files are "
                           "supported", hint="use a local path")
    if os.path.isdir(path):
        raise RequestError(f"{path} is a directory", hint="give the path of a .parquet file")
    if os.path.exists(path) and not allow_overwrite:
        raise RequestError(f"{path} already exists",
                           hint="pass allow_overwrite=True to replace it, or choose another path")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        job.persist(str(tmp), allow_overwrite=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def read(store: OfflineStore, dataset: SavedDataset, repo_path: str | os.PathLike | None,
         batch_rows: int) -> pa.RecordBatchReader:
    """Stream a saved dataset's rows from its storage."""
    storage = dataset.storage
    if isinstance(storage, UnregisteredStorage):
        dataset.storage = storage = storage.resolve()  # the store's module is loaded by now
    if isinstance(storage, SavedDatasetFileStorage):
        return _read_file(dataset.name, storage.resolved_path(repo_path), batch_rows)
    if _supports(store, storage):
        return store.read_saved_dataset(storage, batch_rows)  # type: ignore[attr-defined]
    raise _unsupported(store, storage, "read saved datasets from")


def _read_file(name: str, path: str, batch_rows: int) -> pa.RecordBatchReader:
    import pyarrow.parquet as pq
    if not os.path.isfile(path):
        raise DefinitionError(f"saved dataset {name!r}: its file {path} is missing",
                              hint="it was moved or deleted; create the dataset again with "
                                   "allow_overwrite=True")
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DefinitionError(f"saved dataset {name!r}: cannot read {path} as Parquet: "
                              f"{e}") from None

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from file.iter_batches(batch_size=batch_rows)
        finally:
            file.close()

    return pa.RecordBatchReader.from_batches(file.schema_arrow, batches())


__all__ = ["SavedDatasetTables", "persist", "read"]
