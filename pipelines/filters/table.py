"""The candidate table: every candidate, kept or dropped, with all its scores, flags and reasons, as Parquet.

Why: filters must never drop silently. The table is the audit trail (which filter removed what), the input of the
threshold sweep (re-deciding without re-scoring) and of the report. Audio columns are left out (they live in the
tier shards for kept candidates); everything scalar or list-of-strings is kept.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.stage import Batch, batch_len
from storage.atomic import atomic_path

AUDIO_COLUMNS = ("mixture", "target", "residual")


def _is_audio(values: Any) -> bool:
    return any(isinstance(v, np.ndarray) and v.ndim >= 1 for v in values)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def candidates_to_table(batch: Batch) -> pa.Table:
    """Non-audio columns of a candidate batch as an Arrow table (NaN scores become nulls)."""
    n = batch_len(batch)
    columns: dict[str, list[Any]] = {}
    for key, values in batch.items():
        if key in AUDIO_COLUMNS or key.startswith("_"):
            continue
        seq = list(values)
        if _is_audio(seq):
            continue
        if isinstance(values, np.ndarray) and values.dtype.kind == "f":
            columns[key] = [None if not np.isfinite(v) else float(v) for v in values]
        else:
            columns[key] = [_plain(v) for v in seq]
    table = pa.table(columns) if columns else pa.table({})
    if table.num_rows != n and columns:
        raise ValueError(f"candidate table has {table.num_rows} rows for a batch of {n}")
    return table


def write_candidates(path: str | Path, batch: Batch) -> Path:
    """Write the candidate table atomically to `path` (a .parquet file)."""
    path = Path(path)
    table = candidates_to_table(batch)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_candidates(path: str | Path) -> dict[str, np.ndarray]:
    """Read a candidate table back as numpy columns (nulls in numeric columns become NaN)."""
    table = pq.read_table(path)
    out: dict[str, np.ndarray] = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
            out[name] = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64) if col.null_count or pa.types.is_floating(col.type) else col.to_numpy()
        elif pa.types.is_boolean(col.type):
            out[name] = np.asarray(col.to_pylist(), dtype=bool)
        else:
            out[name] = np.asarray(col.to_pylist(), dtype=object)
    return out
