"""In-process executor (tests, debugging): the same contract and the same chain runner as the Ray executor.

One model cache for the whole run, so fused stages share models exactly as inside one Ray actor; stages are built
from their specs and set up lazily on the first pending task (a fully committed run loads no model).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Iterable, Sequence

from engine.executors.base import (Chain, Executor, RunSummary, StageSpec, Task, decode_rows, fuse_groups,
                                   group_resources, summarize, task_record)
from pipelines.stage import StageContext, batch_len

log = logging.getLogger("stemforge.engine")


def local_device(gpus: float) -> str:
    """`cuda` when the stage was given GPUs and torch sees one; else `cpu` (with a log line when GPUs were asked)."""
    if gpus <= 0:
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    log.warning("stage resources ask for %g GPU(s) but torch sees no CUDA device: running on CPU torch", gpus)
    return "cpu"


class InProcessExecutor(Executor):
    """Sequential: every task through every stage in this process, outputs written by the sink here."""

    backend = "inprocess"

    def gpus_available(self) -> bool:
        import torch

        return bool(torch.cuda.is_available())

    def run(self, specs: Sequence[StageSpec], tasks: Iterable[Task], sink: Any) -> RunSummary:
        t0 = time.perf_counter()
        all_tasks, pending = self.prepare(specs, tasks, sink)
        groups = fuse_groups(specs)
        described = [{"stages": [specs[i].build().name for i in g], **group_resources(specs, g).to_dict()} for g in groups]
        chain: Chain | None = None
        records = []
        worker = ",".join([f"pid{os.getpid()}"] * len(groups))
        for task in pending:
            if chain is None:
                chain = Chain(specs)
                gpus = max((s.resources.gpus for s in specs), default=0.0)
                chain.setup(StageContext(device=local_device(gpus)))
            batch = decode_rows(task.encode())
            out, quarantine, stats = chain.run(task.key, batch)
            record = task_record(task.key, batch_len(batch), out, quarantine, stats, worker, chain.setup_seconds)
            sink.write(task.key, out, quarantine, record)
            records.append(record)
        summary = summarize(self.backend, len(all_tasks), len(all_tasks) - len(pending), records, sink.commits(),
                            described, time.perf_counter() - t0)
        for st in summary.stages:
            log.info("stage %s: %d rows in %.2f s (%.2f rows/s)", st["name"], st["rows_in"], st["seconds"], st["rows_per_s"])
        return summary
