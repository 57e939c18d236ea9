"""The candidate table: every candidate, kept or dropped, with all its scores, flags and reasons, as Parquet.

Why: filters must never drop silently. The table is the audit trail (which filter removed what), the input of the
threshold sweep (re-deciding without re-scoring) and of the report. Audio columns are left out (they live in the
tier shards for kept candidates); everything scalar or list-of-strings is kept. The engine writes the table as a
directory of parts, one per task key (engine/sinks.py); `read_candidates` reads either form.
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


def read_table_parts(path: str | Path) -> pa.Table:
    """A Parquet file, or a directory of `part-*.parquet` (one per task key, as the engine's sinks write them)
    concatenated in key order; a column that is all-null in one part is promoted to the other parts' type."""
    path = Path(path)
    if not path.is_dir():
        return pq.read_table(path)
    parts = [pq.read_table(p) for p in sorted(path.glob("part-*.parquet"))]
    parts = [t for t in parts if t.num_rows]
    if not parts:
        return pa.table({})
    return pa.concat_tables(parts, promote_options="permissive").combine_chunks()


def read_candidates(path: str | Path) -> dict[str, np.ndarray]:
    """Read a candidate table (file or directory of parts) back as numpy columns (numeric nulls become NaN)."""
    table = read_table_parts(path)
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
