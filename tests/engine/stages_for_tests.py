"""Tiny stages for the executor tests; importable by Ray workers (specs name them `stages_for_tests:<Class>`).

Why a module and not classes inside the test files: a stage spec is data (a class path), and workers import the
class by that path, exactly as they import the engine's own stages.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.stage import BaseStage, Batch, StageContext, batch_len


class Expand(BaseStage):
    """Task rows `{id, x}` -> `n` rows per input row with a float audio column (like one scene -> tracks)."""

    name = "expand"
    inputs = ("id", "x")
    outputs = ("row_id", "id", "x", "j", "audio", "sample_rate")
    passthrough = False

    def __init__(self, n: int = 2) -> None:
        super().__init__()
        self.n = int(n)

    def __call__(self, batch: Batch) -> Batch:
        out: dict[str, list[Any]] = {c: [] for c in self.outputs}
        for i in range(batch_len(batch)):
            if batch["x"][i] < 0:
                self.count("negative_skipped")
                continue
            for j in range(self.n):
                out["row_id"].append(f"{batch['id'][i]}-{j}")
                out["id"].append(batch["id"][i])
                out["x"].append(float(batch["x"][i]))
                out["j"].append(j)
                out["audio"].append(np.full(4 + j, float(batch["x"][i]), dtype=np.float32))
                out["sample_rate"].append(4)
        return out if out["row_id"] else {}


class Score(BaseStage):
    """A "model" stage: adds `score` = mean(audio) * factor + offset (offset "loaded" in setup).

    Test switches: `fail_on` (a row_id that raises), `die_once` (marker file: the first call kills its process),
    `fail_setup` (setup raises), `barrier` ([dir, n]: setup waits until n workers reached it, proving they
    coexist), `record_worker` (adds worker_pid, device and gpu_ids columns).
    """

    name = "score"
    inputs = ("audio",)
    outputs = ("score",)
    uses_models = True

    def __init__(self, factor: float = 2.0, fail_on: str | None = None, die_once: str | None = None,
                 sleep_s: float = 0.0, fail_setup: bool = False, barrier: list | None = None,
                 record_worker: bool = False) -> None:
        super().__init__()
        self.factor = float(factor)
        self.fail_on = fail_on
        self.die_once = die_once
        self.sleep_s = float(sleep_s)
        self.fail_setup = fail_setup
        self.barrier = barrier
        self.record_worker = record_worker
        if record_worker:
            self.outputs = ("score", "worker_pid", "device", "gpu_ids")
        self.offset: float | None = None
        self.device = ""
        self.gpu_ids = ""

    def setup(self, ctx: StageContext) -> None:
        if self.fail_setup:
            raise FileNotFoundError("no such checkpoint: /nowhere/model.pt")
        if self.barrier:
            d, n = Path(self.barrier[0]), int(self.barrier[1])
            d.mkdir(parents=True, exist_ok=True)
            (d / str(os.getpid())).write_text("here")
            deadline = time.time() + 60
            while len(list(d.iterdir())) < n:
                if time.time() > deadline:
                    raise TimeoutError(f"only {len(list(d.iterdir()))} of {n} workers started")
                time.sleep(0.1)
        self.offset = 0.5
        self.device = ctx.device
        self.gpu_ids = os.environ.get("STEMFORGE_TEST_GPU_IDS", "")
        try:
            import ray

            if ray.is_initialized():
                self.gpu_ids = ",".join(str(g) for g in ray.get_gpu_ids())
        except ImportError:  # pragma: no cover
            pass

    def __call__(self, batch: Batch) -> Batch:
        assert self.offset is not None, "setup() was not called"
        n = batch_len(batch)
        if self.die_once and not Path(self.die_once).exists() and n:
            Path(self.die_once).write_text("died")
            os._exit(1)  # the worker process dies mid-task: the executor must retry the task elsewhere
        if self.fail_on is not None and "row_id" in batch and self.fail_on in list(batch["row_id"]):
            raise ValueError(f"cannot score {self.fail_on}")
        if self.sleep_s:
            time.sleep(self.sleep_s)
        out = {**batch, "score": np.array([float(np.mean(a)) * self.factor + self.offset for a in batch["audio"]])}
        if self.record_worker:
            out.update({"worker_pid": [os.getpid()] * n, "device": [self.device] * n, "gpu_ids": [self.gpu_ids] * n})
        return out


class Decide(BaseStage):
    """Stateless: `keep` = score > threshold."""

    name = "decide"
    inputs = ("score",)
    outputs = ("keep",)

    def __init__(self, threshold: float = 5.0) -> None:
        super().__init__()
        self.threshold = float(threshold)

    def __call__(self, batch: Batch) -> Batch:
        return {**batch, "keep": np.asarray(batch["score"], dtype=np.float64) > self.threshold}
