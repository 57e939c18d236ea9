"""The stage protocol shared by every batch-processing step of the data engine.

Why a protocol here and not in `engine`: stages live in `pipelines` (signal processing, scoring, decisions) and
must not depend on how they are executed. An executor builds each stage *inside its worker* from a serialisable
spec (class path + JSON-able kwargs), calls `setup(ctx)` once there, then feeds it batches. Everything an executor
needs to know before any model loads is plain data on the stage: its name and the columns it reads and writes.
How many CPUs/GPUs a stage gets and its batch size are decided by the engine from the config
(`engine/resources.py`), never by the stage.

A batch is a column dict: every value is a numpy array or a list with the same leading length (the rows).
Audio columns are object arrays or lists of float32 `[T]` arrays, because scenes differ in length.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, TypeVar, runtime_checkable

import numpy as np

Batch = dict[str, Any]
T = TypeVar("T")


class ModelCache:
    """Model instances of one worker process keyed by (kind, canonical JSON of their spec).

    Why: fused stages in one worker (the pseudo-labeller's reranking CLAP and judge, the scoring stages' CLAP and
    judge) ask for the same model with the same spec and must share one instance instead of loading copies.
    """

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], Any] = {}
        self.loads: list[str] = []  # kinds in load order (tests and stats: how many models this worker built)

    def get(self, kind: str, spec: Mapping[str, Any], build: Callable[[], T]) -> T:
        key = (kind, json.dumps(spec, sort_keys=True, default=str))
        if key not in self._models:
            self._models[key] = build()
            self.loads.append(kind)
        return self._models[key]


@dataclass
class StageContext:
    """What a worker hands every stage's `setup`: the torch device it was given and its shared model cache."""

    device: str = "cpu"
    models: ModelCache = field(default_factory=ModelCache)


@runtime_checkable
class Stage(Protocol):
    """A named transformation of column batches with declared columns. `setup(ctx)` loads models once per worker."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def setup(self, ctx: StageContext) -> None: ...

    def __call__(self, batch: Batch) -> Batch: ...


class BaseStage:
    """Convenience base: a default name, declared columns and per-call counters; subclasses implement `__call__`.

    Columns: `inputs` must exist before the stage runs; `outputs` are added; `drops` are removed; a stage with
    `passthrough = False` emits only its `outputs` (it reshapes rows, e.g. one scene -> one row per track).
    Counters (`count`) are per-call numbers the executor collects into the run summary (e.g. scenes skipped for
    too few events), so nothing is kept as driver-side state.
    """

    name: str = ""
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    drops: tuple[str, ...] = ()
    passthrough: bool = True
    uses_models: bool = False  # True: holds models (the engine runs it in a long-lived actor)

    def __init__(self) -> None:
        if not self.name:
            self.name = type(self).__name__
        self._counts: dict[str, int] = {}

    def setup(self, ctx: StageContext) -> None:
        """Load heavy state (models) here, not in `__init__`, so constructing a pipeline stays cheap."""

    def count(self, name: str, n: int = 1) -> None:
        self._counts[name] = self._counts.get(name, 0) + int(n)

    def take_counts(self) -> dict[str, int]:
        counts, self._counts = getattr(self, "_counts", {}), {}
        return counts

    def __call__(self, batch: Batch) -> Batch:  # pragma: no cover - abstract
        raise NotImplementedError


def columns_after(stage: Any, available: Iterable[str]) -> set[str]:
    """Columns present after `stage` ran on a batch with `available` columns (its declared effect)."""
    cols = set(available) if getattr(stage, "passthrough", True) else set()
    return (cols | set(getattr(stage, "outputs", ()))) - set(getattr(stage, "drops", ()))


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
