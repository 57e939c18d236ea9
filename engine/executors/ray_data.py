"""Ray executor (`engine.backend: ray`): Ray Data `map_batches` over in-memory task items, one fused worker group
per run of stages with equal resources.

Shape of a run:
- `ray.data.from_items` of the pending tasks (one block per task): no read tasks, so nothing waits for a whole
  free CPU beside fractional actors (the read-task starvation in docs/ENGINE.md);
- consecutive stages with equal resources are fused into one callable (`fuse_groups`): a group holding models is
  a callable-class actor pool (`concurrency=(min, max)`, fractional `num_cpus`/`num_gpus`), the rest run as tasks;
  within a group a task's audio stays in the worker's memory; between groups it travels as one serialised
  object per task through the object store (never to disk);
- each call processes one task (`batch_size=1` over task items), the last group writes it to the sink inside the
  worker and returns only its small record; the driver streams those records (`iter_rows`), so nothing
  materialises the dataset;
- a worker that dies is restarted / its task retried (`max_restarts`, `max_task_retries`, `max_retries` =
  `engine.max_retries`); the sink's deterministic part names and commit-last protocol make the retry leave no
  duplicate. Exceptions raised by a stage on a row are not retried: the chain runner quarantines the row.
Inside a GPU actor the device comes from `ray.get_gpu_ids()`; a GPU Ray granted but torch cannot see (logical
GPUs, a driver-less node) runs on CPU torch with a warning that the driver repeats once per group.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import socket
import time
import warnings
from typing import Any, Iterable, Sequence

import numpy as np

from engine.executors.base import (Chain, Executor, ExecutorError, RunSummary, StageSetupError, StageSpec, Task,
                                   decode_rows, fuse_groups, group_resources, summarize, task_record)
from pipelines.stage import ModelCache, StageContext, batch_len

log = logging.getLogger("stemforge.engine")

#: one model cache per worker process: every fused stage of every group in this process shares its models
_WORKER_MODELS = ModelCache()
#: task groups are plain functions; their built chains are kept per worker process, keyed by their specs
_TASK_CHAINS: dict[str, "_Group"] = {}


def ray_device(gpus: float) -> tuple[str, list[Any], bool]:
    """(device, Ray GPU ids, fell back to CPU) for a worker granted `gpus` GPUs."""
    if gpus <= 0:
        return "cpu", [], False
    import ray

    ids = list(ray.get_gpu_ids())
    import torch

    if ids and torch.cuda.is_available():
        return "cuda", ids, False
    log.warning("Ray granted GPU ids %s but torch sees no CUDA device in this worker: running on CPU torch", ids)
    return "cpu", ids, True


class _Group:
    """One fused group of stages in one worker: built and set up once, then one task per call."""

    def __init__(self, specs: list[StageSpec], index: int, first: bool, last: bool, sink: Any, gpus: float) -> None:
        self.index, self.first, self.last, self.sink = index, first, last, sink
        device, ids, fallback = ray_device(gpus)
        self.worker = {"worker": f"{socket.gethostname()}:{os.getpid()}", "device": device,
                       "gpu_ids": [str(i) for i in ids], "cpu_fallback": fallback}
        self.chain = Chain(specs)
        self.chain.setup(StageContext(device=device, models=_WORKER_MODELS))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        key = str(batch["key"][0])
        if self.first:
            data = decode_rows(str(batch["task"][0]))
            carried: dict[str, Any] = {"rows_in": batch_len(data), "quarantine": [], "stats": [], "workers": [],
                                       "setup_seconds": {}}
        else:
            carried = pickle.loads(batch["payload"][0])
            data = carried.pop("batch")
        out, quarantine, stats = self.chain.run(key, data)
        carried["quarantine"] = carried["quarantine"] + quarantine
        carried["stats"] = carried["stats"] + stats
        carried["workers"] = carried["workers"] + [self.worker]
        carried["setup_seconds"] = {**carried["setup_seconds"], **self.chain.setup_seconds}
        if not self.last:
            # one opaque object per task (Ray Data would otherwise turn the dict into Arrow structs); it lives in
            # the object store between two groups only, never on disk
            payload = np.empty(1, dtype=object)
            payload[0] = pickle.dumps({**carried, "batch": out}, protocol=pickle.HIGHEST_PROTOCOL)
            return {"key": np.array([key]), "payload": payload}
        record = task_record(key, carried["rows_in"], out, carried["quarantine"], carried["stats"],
                             ",".join(w["worker"] for w in carried["workers"]), carried["setup_seconds"])
        record["workers"] = carried["workers"]
        self.sink.write(key, out, carried["quarantine"], record)
        return {"key": np.array([key]), "record": np.array([json.dumps(record, default=float)])}


class _GroupActor(_Group):
    """The actor-pool form of a group (Ray Data needs a class to keep models loaded across calls)."""


def _run_group_task(batch: dict[str, np.ndarray], specs: list[StageSpec], index: int, first: bool, last: bool,
                    sink: Any, gpus: float) -> dict[str, np.ndarray]:
    """The task form of a group: the chain is built once per worker process and reused by later tasks."""
    cache_key = json.dumps([[s.target, s.kwargs] for s in specs] + [index], sort_keys=True)
    group = _TASK_CHAINS.get(cache_key)
    if group is None:
        group = _TASK_CHAINS[cache_key] = _Group(specs, index, first, last, sink, gpus)
    group.sink = sink
    return group(batch)


def _find_setup_error(exc: BaseException) -> StageSetupError | None:
    """The StageSetupError inside Ray's wrappers (RayTaskError.cause, __cause__, __context__), if any."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, StageSetupError):
            return e
        stack.extend([getattr(e, "cause", None), e.__cause__, e.__context__])
    # Ray Data may re-raise an actor-creation error as text only: recover stage, kind and message from its format
    found = re.search(r"StageSetupError: stage '([^']*)' failed to set up: (\w+): (.*)", str(exc))
    if found:
        return StageSetupError(found.group(1), found.group(2), found.group(3))
    return None


class RayExecutor(Executor):
    """Ray Data executor; reuses an initialised Ray or starts/joins one through `engine.ray_runtime.ray_session`."""

    backend = "ray"

    def __init__(self, ray_cfg: Any = None) -> None:
        self.ray_cfg = ray_cfg
        self._stack = contextlib.ExitStack()

    def _ensure_ray(self) -> Any:
        import ray

        if not ray.is_initialized():
            from engine.ray_runtime import ray_session

            self._stack.enter_context(ray_session(self.ray_cfg))
        return ray

    def close(self) -> None:
        self._stack.close()

    def gpus_available(self) -> bool:
        return float(self._ensure_ray().cluster_resources().get("GPU", 0.0)) > 0

    def run(self, specs: Sequence[StageSpec], tasks: Iterable[Task], sink: Any) -> RunSummary:
        t0 = time.perf_counter()
        all_tasks, pending = self.prepare(specs, tasks, sink)
        groups = fuse_groups(specs)
        described = [{"stages": [specs[i].build().name for i in g], **group_resources(specs, g).to_dict()} for g in groups]
        records: list[dict[str, Any]] = []
        if pending:
            records = self._execute(specs, groups, pending, sink)
        self._log_fallbacks(records, described)
        summary = summarize(self.backend, len(all_tasks), len(all_tasks) - len(pending), records, sink.commits(),
                            described, time.perf_counter() - t0)
        for g in summary.groups:
            log.info("ray group %s (%s, %g CPU, %g GPU): %d worker(s)", "+".join(g["stages"]), g["kind"], g["cpus"],
                     g["gpus"], g["actors"])
        return summary

    def _execute(self, specs: Sequence[StageSpec], groups: list[list[int]], pending: list[Task], sink: Any) -> list[dict[str, Any]]:
        ray = self._ensure_ray()
        from ray.data import ActorPoolStrategy, DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ds = ray.data.from_items([{"key": t.key, "task": t.encode()} for t in pending], override_num_blocks=len(pending))
        for gi, group in enumerate(groups):
            res = group_resources(specs, group)
            last = gi == len(groups) - 1
            kwargs = {"specs": [specs[i] for i in group], "index": gi, "first": gi == 0, "last": last,
                      "sink": sink if last else None, "gpus": res.gpus}
            common: dict[str, Any] = {"batch_size": 1, "num_cpus": res.cpus, "zero_copy_batch": True}
            if res.gpus > 0:
                common["num_gpus"] = res.gpus
            # Ray 2.60 has no named parameters for retries and warns about `**ray_remote_args`; they are still
            # honoured, and Ray Data's own defaults (infinite restarts) would loop forever on a deterministic crash
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if res.kind == "actor":
                    pool = ActorPoolStrategy(min_size=res.min_replicas, max_size=res.max_replicas,
                                             max_tasks_in_flight_per_actor=1)  # one task per actor: even spread
                    ds = ds.map_batches(_GroupActor, fn_constructor_kwargs=kwargs, compute=pool,
                                        max_restarts=res.max_retries, max_task_retries=res.max_retries, **common)
                else:
                    ds = ds.map_batches(_run_group_task, fn_kwargs=kwargs, max_retries=res.max_retries, **common)
        records: list[dict[str, Any]] = []
        try:
            for row in ds.select_columns(["record"]).iter_rows():
                records.append(json.loads(row["record"]))
        except Exception as exc:  # noqa: BLE001 - re-raised with the stage's own message when it is a setup failure
            setup = _find_setup_error(exc)
            if setup is not None:
                raise setup from exc
            raise ExecutorError(f"ray executor failed: {type(exc).__name__}: {exc}") from exc
        return records

    @staticmethod
    def _log_fallbacks(records: list[dict[str, Any]], described: list[dict[str, Any]]) -> None:
        fell_back: dict[int, list[str]] = {}
        for r in records:
            for gi, w in enumerate(r.get("workers", [])):
                if w.get("cpu_fallback"):
                    fell_back.setdefault(gi, w.get("gpu_ids", []))
        for gi, ids in fell_back.items():
            log.warning("stage group %s: Ray granted GPU ids %s but torch has no CUDA there: ran on CPU torch",
                        "+".join(described[gi]["stages"]), ids)
