"""An offline store over ``ToyCsvSource`` files, the point-in-time join done in Python.

Every call reads the whole CSV: fine for the small files it is meant for.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.csv as pcsv

from tiffin.definitions import DataSource, FeatureView
from tiffin.errors import DefinitionError
from tiffin.features import FeaturePlan
from tiffin.offline.base import (
    OfflineStore,
    RetrievalJob,
    entity_df_columns,
    online_batch_schema,
    utc_timestamps,
)
from tiffin.offline.merge import micros
from tiffin.offline.pit import ENTITY_TS
from tiffin_toy.source import ToyCsvSource

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def to_micros(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)  # integers: no float rounding


class ToyCsvOfflineStore(OfflineStore):
    def _source(self, source: DataSource) -> ToyCsvSource:
        batch = source.batch
        if not isinstance(batch, ToyCsvSource):
            raise DefinitionError(f"the toy_csv offline store reads ToyCsvSource, not "
                                  f"{type(batch).__name__} ({batch.name!r})")
        return batch

    def _path(self, source: ToyCsvSource) -> str:
        return source.resolved_path(self.repo_config.repo_path)

    def _read(self, source: DataSource) -> pa.Table:
        src = self._source(source)
        path = self._path(src)
        try:
            table = pcsv.read_csv(path, pcsv.ReadOptions(encoding=self.config.encoding),
                                  pcsv.ParseOptions(delimiter=src.delimiter))
        except FileNotFoundError:
            raise DefinitionError(f"source {src.name!r}: no file {path}") from None
        except pa.ArrowInvalid as e:
            raise DefinitionError(f"source {src.name!r}: {path} is not readable CSV: {e}"
                                  ) from None
        for col in (src.timestamp_field, src.created_timestamp_column):
            if col and col in table.column_names:
                i = table.column_names.index(col)
                table = table.set_column(i, col, utc_timestamps(table.column(i), col))
        return table

    def source_schema(self, source: DataSource) -> pa.Schema:
        return self._read(source).schema

    # -- reads ---------------------------------------------------------------------------
    def _rows_by_key(self, view: FeatureView, features: list[str]
                     ) -> dict[tuple, list[tuple[int, int | None, list]]]:
        """Per key tuple: (event us, created us or None, feature values), oldest first."""
        src = view.source.batch
        table = self._read(src)
        raw = {v: k for k, v in src.field_mapping.items()}

        def column(logical: str) -> list:
            name = raw.get(logical, logical)
            if name not in table.column_names:
                raise DefinitionError(f"feature view {view.name!r}: {name!r} is not a column "
                                      f"of {self._path(self._source(src))}")
            return table.column(name).to_pylist()

        keys = list(zip(*[column(k) for k in view.join_keys]))
        event = micros(table.column(src.timestamp_field), null=0).tolist()
        created: list[int | None] = (
            table.column(src.created_timestamp_column).cast(pa.int64()).to_pylist()
            if src.created_timestamp_column else [None] * table.num_rows)
        values = list(zip(*[column(f) for f in features])) if features else \
            [()] * table.num_rows
        by_key: dict[tuple, list[tuple[int, int | None, list]]] = {}
        valid = table.column(src.timestamp_field).is_valid().to_pylist()
        for i, key in enumerate(keys):
            if any(k is None for k in key) or not valid[i]:
                continue
            by_key.setdefault(key, []).append((event[i], created[i], list(values[i])))
        for rows in by_key.values():
            # Ties on event time go to the newest created time, then the later line.
            rows.sort(key=lambda r: (r[0], -1 if r[1] is None else r[1]))
        return by_key

    def get_historical_features(self, entity: pa.Table, timestamp_column: str,
                                plan: FeaturePlan, full_feature_names: bool) -> RetrievalJob:
        ent_ts = micros(entity.column(ENTITY_TS), null=0).tolist()
        ent_valid = entity.column(ENTITY_TS).is_valid().to_pylist()
        outputs: dict[str, pa.Array] = {}
        for req in plan.views:
            view = req.view
            names = [f.name for f in req.features]
            by_key = self._rows_by_key(view, names)
            ttl = round(view.ttl_seconds * 1_000_000) if view.ttl_seconds else None
            ent_keys = list(zip(*[entity.column(c).to_pylist() for c in req.entity_columns]))
            found: list[list | None] = []
            for key, ts, valid in zip(ent_keys, ent_ts, ent_valid):
                best = None
                if valid:
                    for event, _, vals in by_key.get(key, ()):
                        if event > ts:
                            break
                        best = (event, vals)
                if best is not None and ttl is not None and best[0] < ts - ttl:
                    best = None
                found.append(None if best is None else best[1])
            for i, (field, out) in enumerate(zip(req.features, req.output_names)):
                outputs[out] = pa.array([None if row is None else row[i] for row in found],
                                        field.dtype.to_arrow())
        columns = entity_df_columns(entity)
        names = [n for n in plan.view_outputs if n in outputs]
        result = pa.Table.from_arrays([entity.column(c) for c in columns] +
                                      [outputs[n] for n in names], names=columns + names)

        def reader(batch_rows: int) -> pa.RecordBatchReader:
            return pa.RecordBatchReader.from_batches(result.schema,
                                                     result.to_batches(batch_rows))

        return RetrievalJob(reader, full_feature_names=full_feature_names)

    def pull_latest(self, view: FeatureView, start: datetime | None, end: datetime,
                    batch_rows: int) -> pa.RecordBatchReader:
        names = [f.name for f in view.features]
        lo = None if start is None else to_micros(start)
        hi = to_micros(end)
        schema = online_batch_schema(view)
        cols: list[list] = [[] for _ in schema]
        for key, rows in self._rows_by_key(view, names).items():
            inside = [r for r in rows if (lo is None or r[0] >= lo) and r[0] <= hi]
            if inside:
                event, created, vals = inside[-1]
                for i, v in enumerate([*key, *vals, event, created]):
                    cols[i].append(v)
        n_values = len(view.join_keys) + len(names)
        arrays = [pa.array(values, f.type) if i < n_values else
                  pa.array(values, pa.int64()).cast(f.type)  # the two times, epoch us
                  for i, (f, values) in enumerate(zip(schema, cols))]
        table = pa.Table.from_arrays(arrays, schema=schema)

        def batches() -> Iterator[pa.RecordBatch]:
            yield from table.to_batches(batch_rows)

        return pa.RecordBatchReader.from_batches(schema, batches())

    # -- writes --------------------------------------------------------------------------
    def write(self, source: DataSource, table: pa.Table) -> None:
        src = self._source(source)
        path = self._path(src)
        current = self._read(src)
        rows = table.select(current.column_names).cast(current.schema)
        merged = pa.concat_tables([current, rows])
        # The whole file is rewritten beside the old one and renamed over it, so a reader
        # sees the rows before or after the push, never half of them.
        fd, tmp = tempfile.mkstemp(prefix=".toy-", suffix=".csv",
                                   dir=os.path.dirname(path) or ".")
        os.close(fd)
        try:
            pcsv.write_csv(merged, tmp, pcsv.WriteOptions(delimiter=src.delimiter))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
