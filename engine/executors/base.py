"""The executor contract: stage specs, tasks, the chain runner both backends share, and the run summary.

- A **task** is `(key, rows)`: a stable key (`scenes-00003`) and a small JSON-able column batch that *describes*
  the work (paths, ids, labels; never audio). Both executors JSON round-trip the rows, so both feed stages the
  same Python values.
- A **stage spec** is data: `StageSpec("pipelines.x:Class", {...JSON-able kwargs...})`; workers build the stage
  from it and call `setup(ctx)` once per worker. `engine/resources.py` attaches each spec's `Resources`.
- `Executor.run(specs, tasks, sink) -> RunSummary`: keys the sink has committed are skipped before anything is
  scheduled; the chain is checked against the task columns before any model loads; each task's output goes to
  the sink inside the worker; only small summaries come back.
- A row that raises in a stage becomes a quarantine row `(stage, key, row_id, error_kind, message)` written by
  the sink beside the task's output; the batch is retried row by row so the other rows finish. A failing
  `setup` (a missing checkpoint) fails the run: it is not a property of one row.
"""
from __future__ import annotations

import importlib
import json
import logging
import re
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import numpy as np

from engine.resources import Resources
from pipelines.stage import Batch, StageContext, batch_len, columns_after, concat_batches, slice_batch, split_batch

log = logging.getLogger("stemforge.engine")

KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
#: the first of these columns present names a row in quarantine records (else its index in the task)
ID_COLUMNS = ("candidate_id", "row_id", "scene_id", "__key__", "key", "id")


class ExecutorError(RuntimeError):
    """The run cannot go on: a stage failed to set up, the chain is inconsistent, or every row failed."""


class ChainError(ExecutorError):
    """A stage needs columns no earlier stage (nor the task) provides; raised before any model loads."""


class StageSetupError(ExecutorError):
    """A stage's `setup` raised (bad checkpoint, missing model); `kind` is the original exception's class name."""

    def __init__(self, stage: str, kind: str, message: str) -> None:
        super().__init__(f"stage {stage!r} failed to set up: {kind}: {message}")
        self.stage, self.kind, self.message = stage, kind, message

    def __reduce__(self):  # survive pickling across Ray workers
        return (StageSetupError, (self.stage, self.kind, self.message))


@dataclass(frozen=True)
class StageSpec:
    """A stage as data: `target` is `module:callable` (a class or a factory), `kwargs` JSON-able.

    `import_path` is a directory put on `sys.path` before importing `target`, for stage code outside the installed
    packages (tests, a user's plugin folder); on a cluster it must exist on every node (or be in the job's
    working dir, which Ray already puts on the path).
    """

    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    import_path: str | None = None

    def __post_init__(self) -> None:
        if ":" not in self.target:
            raise ValueError(f"stage target {self.target!r} must be 'module:callable'")
        try:
            json.dumps(self.kwargs, sort_keys=True)
        except TypeError as exc:
            raise ValueError(f"stage {self.target}: kwargs must be JSON-able (config dumps, paths): {exc}") from exc

    @classmethod
    def of(cls, target: str, **kwargs: Any) -> "StageSpec":
        """Spec with pydantic sections dumped to JSON dicts (`StageSpec.of("m:C", cfg=cfg.filters)`)."""
        return cls(target, {k: _jsonable(v) for k, v in kwargs.items()})

    def build(self) -> Any:
        if self.import_path and self.import_path not in sys.path:
            sys.path.insert(0, self.import_path)
        module, attr = self.target.split(":", 1)
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj(**self.kwargs)

    def with_resources(self, resources: Resources) -> "StageSpec":
        return replace(self, resources=resources)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "model_dump"):
        return v.model_dump(mode="json")
    if isinstance(v, tuple):
        return list(v)
    return v


@dataclass(frozen=True)
class Task:
    """One unit of work and of resume: a key and the JSON-able rows describing it."""

    key: str
    rows: dict[str, Any]

    def __post_init__(self) -> None:
        if not KEY_RE.match(self.key):
            raise ValueError(f"task key {self.key!r} must match [A-Za-z0-9_-]+ (it names sink parts)")

    def encode(self) -> str:
        return json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else list(v)) for k, v in self.rows.items()})


def decode_rows(text: str) -> Batch:
    return dict(json.loads(text))


def check_tasks(tasks: Iterable[Task]) -> list[Task]:
    out = list(tasks)
    keys = [t.key for t in out]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"duplicate task keys: {dup[:5]}")
    return out


def check_chain(stages: Sequence[Any], columns: Iterable[str]) -> None:
    """Every stage's declared inputs exist when it runs; raises ChainError naming the stage and the columns."""
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ChainError(f"stage names must be unique, got {names}")
    available = set(columns)
    for stage in stages:
        missing = [c for c in getattr(stage, "inputs", ()) if c not in available]
        if missing:
            raise ChainError(f"stage {stage.name!r} needs column(s) {missing} that no earlier stage provides "
                             f"(available: {sorted(available)})")
        available = columns_after(stage, available)


def fuse_groups(specs: Sequence[StageSpec]) -> list[list[int]]:
    """Indices of consecutive specs with the same resources (cpus, gpus, replicas): each group is one worker."""
    groups: list[list[int]] = []
    for i, spec in enumerate(specs):
        if groups and specs[groups[-1][-1]].resources.fuse_key() == spec.resources.fuse_key():
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def group_resources(specs: Sequence[StageSpec], group: Sequence[int]) -> Resources:
    """A fused group runs as an actor when any member holds models, else as tasks."""
    members = [specs[i].resources for i in group]
    kind = "actor" if any(r.kind == "actor" for r in members) else "task"
    return replace(members[0], kind=kind, batch_size=max(r.batch_size for r in members))


def _audio_seconds(batch: Batch) -> float:
    if "duration_s" in batch:
        return float(np.nansum(np.asarray(batch["duration_s"], dtype=np.float64)))
    if "mixture" in batch and "sample_rate" in batch:
        return float(sum(len(a) / float(sr) for a, sr in zip(batch["mixture"], batch["sample_rate"])))
    return 0.0


def _row_id(batch: Batch, i: int, offset: int) -> str:
    for col in ID_COLUMNS:
        if col in batch:
            return str(batch[col][i])
    return str(offset + i)


def _error_kind(exc: BaseException) -> str:
    kind = getattr(exc, "kind", None)
    return f"{type(exc).__name__}:{kind}" if isinstance(kind, str) and kind else type(exc).__name__


class Chain:
    """Built stages of (part of) a chain, with their batch sizes; runs one task's batch with quarantine and stats."""

    def __init__(self, specs: Sequence[StageSpec]) -> None:
        self.specs = list(specs)
        self.stages = [s.build() for s in self.specs]
        self.batch_sizes = [s.resources.batch_size for s in self.specs]
        self.setup_seconds: dict[str, float] = {}
        self.ready = False

    def setup(self, ctx: StageContext) -> None:
        if self.ready:
            return
        for stage in self.stages:
            t0 = time.perf_counter()
            try:
                stage.setup(ctx)
            except Exception as exc:
                raise StageSetupError(stage.name, type(exc).__name__, str(exc)) from exc
            self.setup_seconds[stage.name] = round(time.perf_counter() - t0, 3)
        self.ready = True

    def run(self, key: str, batch: Batch) -> tuple[Batch, list[dict[str, Any]], list[dict[str, Any]]]:
        """(output batch, quarantine rows, per-stage stats) of one task's batch."""
        quarantine: list[dict[str, Any]] = []
        stats: list[dict[str, Any]] = []
        current = batch
        for stage, size in zip(self.stages, self.batch_sizes):
            n_in = batch_len(current)
            st = {"name": stage.name, "rows_in": n_in, "rows_out": 0, "batches": 0, "seconds": 0.0,
                  "audio_s": _audio_seconds(current), "failures": 0, "counts": {}}
            t0 = time.perf_counter()
            parts: list[Batch] = []
            offset = 0
            for part in (split_batch(current, size) if n_in else []):
                parts.extend(self._call(stage, key, part, offset, quarantine, st))
                offset += batch_len(part)
                st["batches"] += 1
            for name, n in stage.take_counts().items():
                st["counts"][name] = st["counts"].get(name, 0) + n
            current = concat_batches(parts)
            st["seconds"] = time.perf_counter() - t0
            st["rows_out"] = batch_len(current)
            if not st["audio_s"]:
                st["audio_s"] = _audio_seconds(current)
            stats.append(st)
        return current, quarantine, stats

    @staticmethod
    def _call(stage: Any, key: str, part: Batch, offset: int, quarantine: list[dict[str, Any]],
              st: dict[str, Any]) -> list[Batch]:
        try:
            return [stage(part)]
        except Exception:  # noqa: BLE001 - retried row by row below: only the failing rows are quarantined
            pass
        out: list[Batch] = []
        for i in range(batch_len(part)):
            row = slice_batch(part, i, i + 1)
            try:
                out.append(stage(row))
            except Exception as exc:  # noqa: BLE001 - the row is recorded with its reason, the others go on
                st["failures"] += 1
                quarantine.append({"stage": stage.name, "key": key, "row_id": _row_id(part, i, offset),
                                   "error_kind": _error_kind(exc), "message": str(exc)[:2000]})
                log.warning("stage %s, task %s, row %s quarantined: %s: %s", stage.name, key,
                            _row_id(part, i, offset), type(exc).__name__, exc)
        return out


@dataclass
class RunSummary:
    """What comes back to the driver: counts, per-stage stats, quarantine count; never the outputs themselves."""

    tasks: int = 0
    skipped: int = 0            # committed before this run: never scheduled
    computed: int = 0
    rows_out: int = 0           # over every committed task (this run's and earlier ones)
    quarantined: int = 0        # likewise
    counts: dict[str, int] = field(default_factory=dict)   # stage counters over every committed task
    stages: list[dict[str, Any]] = field(default_factory=list)  # this run's per-stage stats
    groups: list[dict[str, Any]] = field(default_factory=list)  # fused worker groups (stages, kind, resources, actors)
    setup_seconds: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    backend: str = ""

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def merge_stage_stats(per_task: Iterable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per-stage totals over tasks, with rows/s and audio hours/s (time is worker time spent inside the stage)."""
    merged: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for stats in per_task:
        for st in stats:
            m = merged.get(st["name"])
            if m is None:
                m = merged[st["name"]] = {"name": st["name"], "rows_in": 0, "rows_out": 0, "batches": 0, "seconds": 0.0,
                                          "audio_s": 0.0, "failures": 0, "counts": {}}
                order.append(st["name"])
            for k in ("rows_in", "rows_out", "batches", "seconds", "audio_s", "failures"):
                m[k] += st[k]
            for k, v in st.get("counts", {}).items():
                m["counts"][k] = m["counts"].get(k, 0) + v
    out = []
    for name in order:
        m = merged[name]
        s = m["seconds"]
        m["rows_per_s"] = round(m["rows_in"] / s, 3) if s > 0 else 0.0
        m["audio_hours_per_s"] = round(m["audio_s"] / 3600.0 / s, 6) if s > 0 else 0.0
        m["seconds"] = round(s, 3)
        m["audio_s"] = round(m["audio_s"], 3)
        out.append(m)
    return out


def task_record(key: str, rows_in: int, out: Batch, quarantine: list[dict[str, Any]], stats: list[dict[str, Any]],
                worker: str, setup_seconds: dict[str, float]) -> dict[str, Any]:
    """The small per-task record a sink commits with the task and the driver collects."""
    counts: dict[str, int] = {}
    for st in stats:
        for k, v in st.get("counts", {}).items():
            counts[k] = counts.get(k, 0) + v
    return {"key": key, "rows_in": rows_in, "rows_out": batch_len(out), "quarantined": len(quarantine),
            "counts": counts, "stats": stats, "worker": worker, "setup_seconds": setup_seconds}


def summarize(backend: str, tasks: int, skipped: int, records: list[dict[str, Any]], commits: list[dict[str, Any]],
              groups: list[dict[str, Any]], wall_s: float) -> RunSummary:
    """RunSummary from this run's task records and every committed record; raises when every row failed."""
    summary = RunSummary(tasks=tasks, skipped=skipped, computed=len(records), backend=backend, wall_s=round(wall_s, 3))
    for c in commits:
        summary.rows_out += int(c.get("rows_out", 0))
        summary.quarantined += int(c.get("quarantined", 0))
        for k, v in c.get("counts", {}).items():
            summary.counts[k] = summary.counts.get(k, 0) + int(v)
    summary.stages = merge_stage_stats(r["stats"] for r in records)
    for r in records:
        for k, v in r.get("setup_seconds", {}).items():
            summary.setup_seconds[k] = max(summary.setup_seconds.get(k, 0.0), float(v))
    workers: dict[int, set[str]] = {}
    for r in records:
        for gi, w in enumerate(str(r.get("worker", "")).split(",")):
            workers.setdefault(gi, set()).add(w)
    summary.groups = [{**g, "actors": len(workers.get(i, ()))} for i, g in enumerate(groups)]
    if summary.quarantined and summary.rows_out == 0:
        raise ExecutorError(f"every row failed: {summary.quarantined} row(s) quarantined and none committed "
                            f"(see the sink's quarantine parts)")
    return summary


class Executor(ABC):
    """Runs stage specs over tasks into a sink. Implementations: `InProcessExecutor`, `RayExecutor`."""

    backend = ""

    @abstractmethod
    def gpus_available(self) -> bool:
        """Whether the backend can place GPU stages (engine/resources.py reads it for `engine.device: auto`)."""

    @abstractmethod
    def run(self, specs: Sequence[StageSpec], tasks: Iterable[Task], sink: Any) -> RunSummary:
        """Run every task not yet committed by `sink` through `specs`; outputs go to the sink."""

    def close(self) -> None:
        """Release what the executor started (a Ray session); a no-op by default."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @staticmethod
    def prepare(specs: Sequence[StageSpec], tasks: Iterable[Task], sink: Any) -> tuple[list[Task], list[Task]]:
        """(all tasks, pending tasks): checks keys and the chain (before any model loads), asks the sink."""
        all_tasks = check_tasks(tasks)
        if all_tasks:
            columns = set(all_tasks[0].rows)
            check_chain([s.build() for s in specs], columns)
        sink.prepare()
        done = sink.committed()
        return all_tasks, [t for t in all_tasks if t.key not in done]


def build_executor(engine_cfg: Any) -> Executor:
    """Executor for `engine.backend` (`inprocess` | `ray`); unknown backends are a configuration error."""
    backend = engine_cfg.backend
    if backend == "inprocess":
        from engine.executors.inprocess import InProcessExecutor

        return InProcessExecutor()
    if backend == "ray":
        from engine.executors.ray_data import RayExecutor

        return RayExecutor(engine_cfg.ray)
    raise ValueError(f"engine.backend={backend!r} is not available (known: 'inprocess', 'ray')")
