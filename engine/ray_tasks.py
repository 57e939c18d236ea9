"""Fan independent units of work out as Ray tasks (or run them in-process, same code): `run_tasks`.

Why one helper: shard groups (`engine/shard_jobs.py`) and demo-corpus units (`engine/data_steps.py`) are both
"call a pure, module-level function on many small descriptions of work, each of which writes its own files
atomically"; the concurrency (tasks in flight, retries of lost workers, cancelling the rest on a failure) is the
engine's business, not the pipeline's. The in-process path calls the same function in a plain loop, so both give
the same files; it is what tests and debugging use.

Ray semantics this relies on: a task whose worker process dies (killed, OOM, lost node) is re-run up to
`max_retries` times; an exception raised by the function itself is *not* retried (`retry_exceptions=False`: a bad
input fails the same way again) and is re-raised here as the original exception type. Execution is therefore
at-least-once: the functions must be idempotent (atomic, deterministic outputs), which the shard writer and the
demo renderer are.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Literal, Sequence, TypeVar

log = logging.getLogger("stemforge.engine")

Executor = Literal["ray", "inprocess"]
EXECUTORS: tuple[str, ...] = ("ray", "inprocess")
R = TypeVar("R")


@contextmanager
def executor_session(cfg: Any) -> Iterator[Executor]:
    """The executor `cfg.engine.backend` selects, with Ray connected for the block when it is `ray`
    (`engine.ray_runtime.ray_session`: reuses an initialised Ray, e.g. the run's or a test's)."""
    backend = cfg.engine.backend
    if backend == "ray":
        from engine.ray_runtime import ray_session

        with ray_session(cfg.engine.ray):
            yield "ray"
    else:
        yield "inprocess"


def run_tasks(fn: Callable[[Any, Any], R], items: Sequence[Any], *, shared: Any = None, executor: Executor = "ray",
              workers: int | None = None, max_retries: int = 2, num_cpus: float = 1.0, name: str | None = None,
              on_result: Callable[[int, R], None] | None = None) -> list[R]:
    """`fn(shared, item)` for every item; returns the results in item order.

    `fn` must be a module-level function (workers import it by name) and `shared` picklable: under Ray it is put
    in the object store once instead of being shipped with every task. `workers` bounds the tasks in flight
    (None: as many as Ray schedules, i.e. the cluster's CPUs / `num_cpus`); `on_result(i, result)` runs in the
    caller as each task finishes (completion order), e.g. to advance a progress bar or append to a journal.
    In-process, `workers` is ignored and items run one after another. Ray must already be initialised
    (`engine.ray_runtime.ray_session`).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if executor == "inprocess" or not items:
        results: list[R] = []
        for i, item in enumerate(items):
            results.append(fn(shared, item))
            if on_result is not None:
                on_result(i, results[-1])
        return results
    return _run_ray(fn, items, shared, workers, max_retries, num_cpus, name or getattr(fn, "__name__", "task"), on_result)


def _run_ray(fn: Callable[[Any, Any], R], items: Sequence[Any], shared: Any, workers: int | None, max_retries: int,
             num_cpus: float, name: str, on_result: Callable[[int, R], None] | None) -> list[R]:
    import ray

    if not ray.is_initialized():
        raise RuntimeError("run_tasks(executor='ray') needs an initialised Ray: wrap the call in "
                           "engine.ray_runtime.ray_session(cfg.engine.ray)")
    remote = ray.remote(num_cpus=num_cpus, max_retries=max_retries, retry_exceptions=False)(fn).options(name=name)
    shared_ref = ray.put(shared)
    limit = len(items) if workers is None else workers
    results: dict[int, R] = {}
    in_flight: dict[Any, int] = {}
    nxt = 0
    try:
        while nxt < len(items) or in_flight:
            while nxt < len(items) and len(in_flight) < limit:
                in_flight[remote.remote(shared_ref, items[nxt])] = nxt
                nxt += 1
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                i = in_flight.pop(ref)
                results[i] = ray.get(ref)  # re-raises the task's own exception (after retries of lost workers)
                if on_result is not None:
                    on_result(i, results[i])
    except BaseException:
        for ref in in_flight:  # a failure (or Ctrl-C) stops the rest; finished units keep their outputs
            ray.cancel(ref, force=False)
        raise
    return [results[i] for i in range(len(items))]
