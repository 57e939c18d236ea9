"""One Prefect task per engine step (engine/steps.py): retries for transient failures only, a cache key per step.

Why these choices:
- `retry_condition_fn`: a lost Ray worker or an I/O error is retried (engine/errors.py `is_transient`); a config
  error or unusable input fails at once, since it fails the same way every time.
- Cache key = the step's own config sections + its inputs + the code version + the run directory's id + the
  step's marker (engine/steps.py `step_key`). The marker is part of the key so the cache can only ever agree with
  the run directory: a step without a marker never hits the cache (it runs, or resumes inside itself), and
  deleting a marker forces the step again. A run therefore resumes the same with or without Prefect's database.
- Results persist as JSON (they are small dicts of paths, counts and hashes, never audio).
- The run is passed as its directory (`run`), and the open `RunContext` is looked up in this process's registry:
  the subflows and the threads of the task runner share one context, so step timings and resumed steps add up
  in the one report.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable

from prefect import task

from engine import steps
from engine.errors import is_transient
from engine.steps import RunContext

_RUNS: dict[str, RunContext] = {}


def register(ctx: RunContext) -> str:
    """Make `ctx` reachable from tasks by its directory; returns the key the tasks take as `run`."""
    _RUNS[str(ctx.root)] = ctx
    return str(ctx.root)


def unregister(run: str) -> None:
    _RUNS.pop(run, None)


def lookup(run: str) -> RunContext | None:
    return _RUNS.get(run)


def context(run: str) -> RunContext:
    try:
        return _RUNS[run]
    except KeyError:
        raise RuntimeError(f"{run}: no open run in this process (open it with flows.cycle before its tasks)") from None


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry only what `engine.errors.is_transient` calls transient."""
    exc = state.data if isinstance(getattr(state, "data", None), BaseException) else None
    if exc is None:
        try:
            state.result()
        except BaseException as raised:  # noqa: BLE001 - inspecting the failure, not handling it
            exc = raised
    return exc is not None and is_transient(exc)


def _marker_digest(ctx: RunContext, step: str) -> str | None:
    marker = ctx.ws.marker(step)
    return hashlib.sha256(marker.read_bytes()).hexdigest()[:16] if marker.is_file() else None


def cache_key(task_context: Any, parameters: dict[str, Any]) -> str | None:
    """The step's key (see module doc); None (no caching) when the step has not finished in this run directory."""
    from storage.version import code_version

    ctx = context(parameters["run"])
    step = parameters["step"]
    marker = _marker_digest(ctx, step)
    if marker is None:
        return None
    inputs = {k: v for k, v in parameters.items() if k not in ("run", "step")}
    return steps.step_key(ctx.cfg, step, ctx.ws.run_id, {"inputs": inputs, "marker": marker}, code_version())


def step_task(fn: Callable[..., dict[str, Any]]) -> Any:
    """A Prefect task around an engine step: named by its `step` parameter, transient-only retries, cached."""
    return task(name=fn.__name__, task_run_name="{step}", retries=2, retry_delay_seconds=2,
                retry_condition_fn=retry_transient, cache_key_fn=cache_key, persist_result=True,
                result_serializer="json", log_prints=False)(fn)


@step_task
def corpus(run: str, step: str = "corpus") -> dict[str, Any]:
    return steps.corpus(context(run))


@step_task
def synthetic(run: str, corpus_out: dict[str, Any], step: str = "synthetic") -> dict[str, Any]:
    return steps.synthetic(context(run), corpus_out)


@step_task
def scorer(run: str, which: str, corpus_out: dict[str, Any], remote: bool, step: str) -> dict[str, Any]:
    return steps.scorer(context(run), which, corpus_out, remote=remote)


@step_task
def bootstrap_separator(run: str, synthetic_out: dict[str, Any], clap: dict[str, Any] | None,
                        step: str = "separator_0") -> dict[str, Any]:
    return steps.bootstrap_separator(context(run), synthetic_out, clap)


@step_task
def pseudo_label_and_filter(run: str, k: int, corpus_out: dict[str, Any], separator: dict[str, Any],
                            scorers: dict[str, dict[str, Any]], step: str) -> dict[str, Any]:
    return steps.pseudo_label_and_filter(context(run), k, corpus_out, separator, scorers)


@step_task
def calibrated_judge(run: str, k: int, corpus_out: dict[str, Any], synthetic_out: dict[str, Any],
                     separator: dict[str, Any], judge: dict[str, Any], step: str, remote: bool = False) -> dict[str, Any]:
    return steps.calibrated_judge(context(run), k, corpus_out, synthetic_out, separator, judge, remote=remote)


@step_task
def tier_shards(run: str, k: int, corpus_out: dict[str, Any], separator: dict[str, Any],
                scorers: dict[str, dict[str, Any]], step: str) -> dict[str, Any]:
    return steps.tier_shards(context(run), k, corpus_out, separator, scorers)


@step_task
def retrain(run: str, k: int, synthetic_out: dict[str, Any], corpus_out: dict[str, Any], init: dict[str, Any],
            tiers: dict[str, Any], clap: dict[str, Any] | None, step: str) -> dict[str, Any]:
    return steps.retrain(context(run), k, synthetic_out, corpus_out, init, tiers, clap)


@step_task
def control(run: str, k: int, synthetic_out: dict[str, Any], init: dict[str, Any], clap: dict[str, Any] | None,
            step: str) -> dict[str, Any]:
    return steps.control(context(run), k, synthetic_out, init, clap)


@step_task
def evaluate(run: str, label: str, separator: dict[str, Any], corpus_out: dict[str, Any], synthetic_out: dict[str, Any],
             scorers: dict[str, dict[str, Any]], step: str, remote: bool = False) -> dict[str, Any]:
    return steps.evaluate(context(run), label, separator, corpus_out, synthetic_out, scorers, remote=remote)


@step_task
def final_separator(run: str, synthetic_out: dict[str, Any], corpus_out: dict[str, Any], last: dict[str, Any],
                    tiers: dict[str, Any], clap: dict[str, Any] | None, step: str = "final_separator") -> dict[str, Any]:
    return steps.final_separator(context(run), synthetic_out, corpus_out, last, tiers, clap)


@step_task
def final_judge(run: str, corpus_out: dict[str, Any], judge: dict[str, Any], remote: bool = False,
                step: str = "final_judge") -> dict[str, Any]:
    return steps.final_judge(context(run), corpus_out, judge, remote=remote)


@step_task
def release(run: str, report_out: dict[str, Any], separator: dict[str, Any], judge: dict[str, Any],
            evaluation: dict[str, Any], last_evaluation: dict[str, Any], tiers: dict[str, Any],
            synthetic_out: dict[str, Any], tiers_from: str, step: str = "release") -> dict[str, Any]:
    return steps.release(context(run), report_out, separator, judge, evaluation, last_evaluation, tiers, synthetic_out,
                         tiers_from)
