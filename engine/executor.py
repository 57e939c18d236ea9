"""Executors: run an ordered list of stages over keyed input batches, with per-stage stats and resume.

The seam: callers (engine/run.py, the CLI) build stages and keyed input batches and hand them to an `Executor`;
they never loop over stages themselves. `InProcessExecutor` is the only backend today; a Ray executor implements
the same `run()` signature (stage `resources` map to `num_cpus`/`num_gpus`/`batch_size`, keyed batches map to
blocks, completion markers stay the same files), so swapping it in touches neither stages nor the CLI.

Resume: each input batch has a stable key. When its full chain of stages has run, the output batch is written
atomically to `<work_dir>/<key>.pkl` and then a `<key>.done` marker; a re-run loads completed outputs instead of
recomputing them. The marker is written last, so a crash between the two leaves the batch to be recomputed.
The pickles are private intermediate state of one run (never shipped or read from elsewhere).
"""
from __future__ import annotations

import json
import logging
import pickle
import re
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from pipelines.stage import Batch, Stage, batch_len, concat_batches, split_batch
from storage.atomic import atomic_write_bytes, atomic_write_text

log = logging.getLogger("stemforge.engine")

_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass
class StageStats:
    """Throughput of one stage across a run. Units: items = rows, seconds = wall time spent inside the stage."""

    name: str
    batches: int = 0
    items_in: int = 0
    items_out: int = 0
    seconds: float = 0.0

    @property
    def items_per_s(self) -> float:
        return self.items_in / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, float | int | str]:
        out = asdict(self)
        out["items_per_s"] = round(self.items_per_s, 3)
        out["seconds"] = round(self.seconds, 3)
        return out


@dataclass
class ExecutionResult:
    """Output batches in input order, stats per stage, and how many input batches were resumed vs computed."""

    outputs: list[tuple[str, Batch]]
    stats: list[StageStats]
    computed: int = 0
    resumed: int = 0
    setup_seconds: dict[str, float] = field(default_factory=dict)

    def merged(self) -> Batch:
        return concat_batches(batch for _, batch in self.outputs)

    def stats_table(self) -> list[dict[str, float | int | str]]:
        return [s.to_dict() for s in self.stats]


class ExecutorError(RuntimeError):
    """A stage failed; names the stage and the input batch key."""


class Executor(ABC):
    """Runs stages over keyed batches. Implementations: `InProcessExecutor` (now), a Ray executor (next)."""

    @abstractmethod
    def run(
        self,
        stages: Sequence[Stage],
        inputs: Iterable[tuple[str, Batch]],
        work_dir: str | Path | None = None,
        on_output: Callable[[str, Batch], None] | None = None,
    ) -> ExecutionResult:
        """Run every input batch through `stages` in order.

        `work_dir` enables resume (completed outputs are loaded, not recomputed). `on_output(key, batch)` is called
        for every output batch, resumed ones included, in input order.
        """


def _check_key(key: str) -> None:
    if not _KEY_RE.match(key):
        raise ValueError(f"batch key {key!r} must match [A-Za-z0-9_-]+ (it names marker files)")


class InProcessExecutor(Executor):
    """Sequential executor in this process: each stage sees sub-batches of its declared `resources.batch_size`."""

    def __init__(self, batch_size_overrides: dict[str, int] | None = None) -> None:
        self.batch_size_overrides = dict(batch_size_overrides or {})

    def _batch_size(self, stage: Stage) -> int:
        return int(self.batch_size_overrides.get(stage.name, stage.resources.batch_size))

    def run(
        self,
        stages: Sequence[Stage],
        inputs: Iterable[tuple[str, Batch]],
        work_dir: str | Path | None = None,
        on_output: Callable[[str, Batch], None] | None = None,
    ) -> ExecutionResult:
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        wdir = Path(work_dir) if work_dir is not None else None
        if wdir is not None:
            wdir.mkdir(parents=True, exist_ok=True)
        stats = [StageStats(name=s.name) for s in stages]
        result = ExecutionResult(outputs=[], stats=stats)
        set_up = False
        seen: set[str] = set()
        for key, batch in inputs:
            _check_key(key)
            if key in seen:
                raise ValueError(f"duplicate batch key {key!r}")
            seen.add(key)
            done = wdir / f"{key}.done" if wdir is not None else None
            if done is not None and done.is_file():
                with open(wdir / f"{key}.pkl", "rb") as fh:
                    out = pickle.load(fh)
                result.resumed += 1
            else:
                if not set_up:
                    for stage in stages:
                        t0 = time.perf_counter()
                        stage.setup()
                        result.setup_seconds[stage.name] = round(time.perf_counter() - t0, 3)
                    set_up = True
                out = self._run_one(stages, stats, key, batch)
                if wdir is not None:
                    atomic_write_bytes(wdir / f"{key}.pkl", pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
                    atomic_write_text(wdir / f"{key}.done", json.dumps({"key": key, "rows": batch_len(out)}))
                result.computed += 1
            result.outputs.append((key, out))
            if on_output is not None:
                on_output(key, out)
        if wdir is not None:
            atomic_write_text(wdir / "stats.json", json.dumps({"stages": result.stats_table(), "computed": result.computed, "resumed": result.resumed, "setup_seconds": result.setup_seconds}, indent=2))
        for s in stats:
            log.info("stage %s: %d items in %.2f s (%.2f items/s)", s.name, s.items_in, s.seconds, s.items_per_s)
        return result

    def _run_one(self, stages: Sequence[Stage], stats: list[StageStats], key: str, batch: Batch) -> Batch:
        current = batch
        for stage, st in zip(stages, stats):
            n_in = batch_len(current)
            t0 = time.perf_counter()
            try:
                parts = [stage(part) for part in split_batch(current, self._batch_size(stage))]
            except Exception as exc:
                raise ExecutorError(f"stage {stage.name!r} failed on batch {key!r}: {type(exc).__name__}: {exc}") from exc
            current = concat_batches(parts)
            st.seconds += time.perf_counter() - t0
            st.batches += 1
            st.items_in += n_in
            st.items_out += batch_len(current)
        return current


def build_executor(backend: str = "inprocess", batch_size_overrides: dict[str, int] | None = None) -> Executor:
    """Executor factory keyed by `engine.backend`; unknown backends are a configuration error, not a fallback."""
    if backend == "inprocess":
        return InProcessExecutor(batch_size_overrides)
    raise ValueError(f"engine.backend={backend!r} is not available (known: 'inprocess'; 'ray' arrives with the Ray executor)")
