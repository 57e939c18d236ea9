"""The stage protocol shared by every batch-processing step of the data engine.

Why a protocol here and not in `engine`: stages live in `pipelines` (signal processing, scoring, decisions) and
must not depend on how they are executed. The engine imports this module; an in-process executor and a Ray
executor can both drive the same stage objects because everything an executor needs to know (name, resources,
batch size) is plain data on the stage.

A batch is a column dict: every value is a numpy array or a list with the same leading length (the rows).
Audio columns are object arrays or lists of float32 `[T]` arrays, because scenes differ in length.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Protocol, runtime_checkable

import numpy as np

Batch = dict[str, Any]


@dataclass(frozen=True)
class Resources:
    """What one replica of a stage needs; a Ray executor maps this to `num_cpus`/`num_gpus`/`batch_size`."""

    cpus: float = 1.0
    gpus: float = 0.0
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.cpus < 0 or self.gpus < 0:
            raise ValueError(f"resources must be non-negative, got cpus={self.cpus} gpus={self.gpus}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@runtime_checkable
class Stage(Protocol):
    """A named, resourced transformation of column batches. `setup()` loads models once per replica."""

    name: str
    resources: Resources

    def setup(self) -> None: ...

    def __call__(self, batch: Batch) -> Batch: ...


class BaseStage:
    """Convenience base: a no-op `setup`, a default name and default resources; subclasses implement `__call__`."""

    name: str = ""
    resources: Resources = Resources()

    def __init__(self) -> None:
        if not self.name:
            self.name = type(self).__name__

    def setup(self) -> None:
        """Load heavy state (models) here, not in `__init__`, so constructing a pipeline stays cheap."""

    def __call__(self, batch: Batch) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError


class BatchError(ValueError):
    """A malformed batch (ragged columns); names the stage and the columns involved."""


def batch_len(batch: Batch) -> int:
    """Number of rows; raises BatchError when columns disagree (a stage dropped or added rows in one column only)."""
    lengths = {key: len(value) for key, value in batch.items()}
    if not lengths:
        return 0
    distinct = set(lengths.values())
    if len(distinct) != 1:
        raise BatchError(f"ragged batch, column lengths differ: {lengths}")
    return distinct.pop()


def _take(value: Any, idx: slice | np.ndarray) -> Any:
    if isinstance(value, np.ndarray):
        return value[idx]
    if isinstance(idx, slice):
        return list(value[idx])
    return [value[i] for i in idx]


def slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    return {key: _take(value, slice(start, stop)) for key, value in batch.items()}


def select_rows(batch: Batch, mask: np.ndarray) -> Batch:
    """Rows where `mask` is true (used by sinks; filters themselves never drop rows, they flag them)."""
    idx = np.flatnonzero(np.asarray(mask, dtype=bool))
    return {key: _take(value, idx) for key, value in batch.items()}


def split_batch(batch: Batch, batch_size: int) -> Iterator[Batch]:
    n = batch_len(batch)
    for start in range(0, n, batch_size):
        yield slice_batch(batch, start, min(n, start + batch_size))


def concat_batches(batches: Iterable[Batch]) -> Batch:
    """Concatenate batches with the same columns; numpy columns stay numpy, list columns stay lists."""
    batches = [b for b in batches if b]
    if not batches:
        return {}
    keys = list(batches[0].keys())
    for b in batches[1:]:
        if set(b.keys()) != set(keys):
            raise BatchError(f"cannot concatenate batches with different columns: {sorted(keys)} vs {sorted(b.keys())}")
    out: Batch = {}
    for key in keys:
        values = [b[key] for b in batches]
        if all(isinstance(v, np.ndarray) for v in values) and all(v.dtype != object for v in values):
            out[key] = np.concatenate(values)
        else:
            merged: list[Any] = []
            for v in values:
                merged.extend(list(v))
            out[key] = merged
    return out


def rows_to_batch(rows: list[dict[str, Any]]) -> Batch:
    """Row dicts -> column batch (lists); the inverse of `batch_to_rows`."""
    if not rows:
        return {}
    keys = list(rows[0].keys())
    return {key: [row.get(key) for row in rows] for key in keys}


def batch_to_rows(batch: Batch) -> list[dict[str, Any]]:
    n = batch_len(batch)
    return [{key: batch[key][i] for key in batch} for i in range(n)]
