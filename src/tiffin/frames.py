"""Arrow tables as polars frames, at the user edge (pandas needs nothing: ``to_pandas``)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa


def to_polars(table: pa.Table) -> Any:
    """``table`` as a polars DataFrame; a clear error when the ``polars`` extra is missing."""
    try:
        import polars as pl
    except ImportError:
        from tiffin.errors import MissingDependencyError
        raise MissingDependencyError("polars", "polars") from None
    return pl.from_arrow(table)
