"""`stemforge run`: the data engine end to end, in resumable steps under `runs/<name>/`.

corpus -> synthetic shards -> bootstrap separator (iteration 0) -> mini scorers (CLAP, judge, PC) ->
for k in 1..run.iterations: pseudo-label the natural training scenes with separator k-1 -> score + filter ->
tier shards (ITT, SST) -> retrain separator k from k-1 on synthetic + ITT + SST -> evaluate every separator on
held-out synthetic tuples and held-out natural scenes (audit stems) -> report.json / report.md / plots.

Every step writes a done-marker (engine/workspace.py); steps resume inside themselves too (shard stores,
trainers from last.pt, executor batches), so re-running after a crash continues where it stopped.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from engine.data_steps import step_corpus, step_synthetic
from engine.engine_steps import step_filter, step_tiers
from engine.evaluation import REPORT_KEYS, evaluate_checkpoint
from engine.model_steps import (retrain_streams, retrain_weights, train_clap_step, train_judge_step, train_pc_step,
                                train_separator_step)
from engine.ray_train import shard_streams
from engine.report import write_report
from engine.scorer_tasks import SCORER_STEPS
from engine.workspace import RunError, Workspace
from storage.configio import config_hash

log = logging.getLogger("stemforge.run")


class _StopAfter(Exception):
    """Raised internally after the step named by `until` has finished."""


def run_job(cfg: Any, out_root: str | Path | None = None, name: str | None = None, restart: bool = False,
            on_step: Callable[[str], None] | None = None, until: str | None = None) -> dict[str, Any]:
    """Run (or resume) the whole engine; returns the report dict also written to `runs/<name>/report.json`.

    `until` stops after the named step (e.g. "synthetic", "separator_0") and returns `{"stopped_after", "timings",
    "resumed_steps"}` without a report; a later call without it continues from there.
    """
    t_start = time.perf_counter()
    name = name or cfg.run.name
    # absolute: Ray workers (Ray Train ranks, tasks on other nodes) do not share the driver's working directory
    root = (Path(out_root or cfg.run.out_root) / name).absolute()
    ws = Workspace.open(root, config_hash(cfg), restart=restart, allow_config_change=cfg.engine.allow_config_change)
    with backend_session(cfg) as session:
        try:
            return _run(cfg, ws, name, root, on_step, until, t_start, session)
        except _StopAfter:
            return {"name": name, "stopped_after": until, "timings": dict(ws.timings),
                    "resumed_steps": list(ws.resumed_steps), "ray": session.to_dict() if session else None}


@contextmanager
def backend_session(cfg: Any) -> Iterator[Any]:
    """`engine.backend: ray`: the whole run inside one `ray_session` (started, joined or reused; its start-up time
    goes to the log and the report); `inprocess`: no Ray at all (yields None)."""
    if cfg.engine.backend != "ray":
        yield None
        return
    from engine.ray_runtime import ray_session

    with ray_session(cfg.engine.ray) as session:
        yield session


def _run(cfg: Any, ws: Workspace, name: str, root: Path, on_step: Callable[[str], None] | None, until: str | None,
         t_start: float, session: Any = None) -> dict[str, Any]:
    from storage.configio import write_resolved

    write_resolved(cfg, root)

    def step(step_name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if on_step:
            on_step(step_name)
        out = ws.step(step_name, fn)
        if until == step_name:
            raise _StopAfter(step_name)
        return out

    corpus = step("corpus", lambda: step_corpus(ws, cfg))
    synthetic = step("synthetic", lambda: step_synthetic(ws, cfg, corpus["sources"]))
    if "train" not in synthetic["dirs"] or "val" not in synthetic["dirs"] or "test" not in synthetic["dirs"]:
        raise RunError(f"{root}: engine.synthetic_counts must render train, val and test splits")
    sr = cfg.separator.sample_rate
    clap: dict[str, Any] | None = None
    if cfg.engine.separator_queries == "run_clap":
        # the separators ask their queries through the run's own CLAP text tower (issue: "the in-project CLAP for
        # the default"), so CLAP trains first; judge and PC still train alongside separator_0
        clap = step("scorer_clap", lambda: train_clap_step(ws, cfg, corpus["sources"]))
        cfg = cfg.model_copy(update={"separator": cfg.separator.model_copy(
            update={"text_encoder": f"clap:{clap['checkpoint']}"})})
    background = None  # the scorer Ray tasks (engine/scorer_tasks.py); the in-process backend trains them in turn below
    foreground = set(ws.timings)  # steps this process ran or resumed before the scorer tasks start
    pending_scorers = [s for s in SCORER_STEPS if ws.done(s) is None]
    # `--until separator_0` would stop before the tasks are awaited (and end the session under them): train in turn
    if session is not None and cfg.engine.parallel_scorers and until != "separator_0" and pending_scorers:
        from engine.scorer_tasks import ScorerTasks

        background = ScorerTasks(cfg, root, ws.config_hash, corpus["sources"], pending_scorers,
                                 reserved_cpus=float(cfg.engine.train_workers))
    try:
        separators = [step("separator_0", lambda: train_separator_step(
            ws, cfg, "iter0", partial(shard_streams, [synthetic["dirs"]["train"]], sr), synthetic["dirs"]["val"],
            cfg.engine.separator_steps, lineage={"iteration": 0, "data": "synthetic"}))]
    except BaseException:
        if background is not None:
            background.cancel()
        raise
    parallel_steps: list[str] = []
    scorer_tasks: dict[str, Any] = {}  # where each scorer task ran (pid, host, seconds)
    if background is not None:
        t_wait = time.perf_counter()
        scorer_tasks = background.wait()
        log.info("scorer tasks: waited %.1f s after separator_0", time.perf_counter() - t_wait)
        parallel_steps = [s for s in SCORER_STEPS if s not in foreground and s not in ws.resumed_steps]
    scorers = {
        "clap": clap if clap is not None else step("scorer_clap", lambda: train_clap_step(ws, cfg, corpus["sources"])),
        "judge": step("scorer_judge", lambda: train_judge_step(ws, cfg, corpus["sources"])),
        "pc": step("scorer_pc", lambda: train_pc_step(ws, cfg, corpus["sources"])),
    }
    if parallel_steps:  # trained by the scorer tasks in this invocation, not resumed from an earlier one
        ws.resumed_steps[:] = [s for s in ws.resumed_steps if s not in parallel_steps]
    filters: dict[int, dict[str, Any]] = {}
    for k in range(1, cfg.run.iterations + 1):
        prev = separators[k - 1]
        filters[k - 1] = step(f"filter_{k - 1}", lambda: step_filter(ws, cfg, k - 1, corpus, prev, scorers))
        tiers = step(f"tiers_{k - 1}", lambda: step_tiers(ws, cfg, k - 1, corpus, prev, scorers))

        def retrain(k: int = k, prev: dict[str, Any] = prev, tiers: dict[str, Any] = tiers) -> dict[str, Any]:
            weights = retrain_weights(cfg, tiers)
            streams = partial(retrain_streams, cfg, synthetic["dirs"]["train"], tiers, corpus["sources"], cfg.run.seed + k)
            out = train_separator_step(ws, cfg, f"iter{k}", streams, synthetic["dirs"]["val"], cfg.engine.retrain_steps,
                                       init=prev["checkpoint"], lineage={"iteration": k, "weights": weights,
                                                                         "tiers": {t: v["dir"] for t, v in tiers.items()}})
            return {**out, "weights": weights}

        separators.append(step(f"separator_{k}", retrain))
    last = cfg.run.iterations
    if cfg.engine.final_pseudo_label:
        filters[last] = step(f"filter_{last}", lambda: step_filter(ws, cfg, last, corpus, separators[last], scorers))
    evals = [step(f"evaluate_{k}", lambda k=k: evaluate_checkpoint(separators[k]["checkpoint"], cfg, corpus, synthetic["dirs"]["test"]))
             for k in range(len(separators))]

    iterations = []
    for k, (sep, ev) in enumerate(zip(separators, evals)):
        f = filters.get(k, {})
        iterations.append({
            "iteration": k, "separator_checkpoint": sep["checkpoint"], "separator_hash": sep["checkpoint_hash"],
            **{key: ev.get(key) for key in REPORT_KEYS},
            **{key: f.get(key) for key in ("candidates", "kept_itt", "kept_sst", "kept_hours_itt", "kept_hours_sst",
                                           "re_sdr_mean_db", "prop_re_sdr_gt15", "prop_re_sdr_gt10", "scenes_labelled",
                                           "scenes_skipped_min_events")},
            "rejections": f.get("rejections", {}),
            "train_weights": sep.get("weights"),
        })
    last_filter = filters.get(max(filters)) if filters else None
    last_table = None
    if last_filter and last_filter.get("candidates_table"):
        from pipelines.filters.table import read_candidates

        last_table = read_candidates(last_filter["candidates_table"])
    report = {
        "name": name, "config_hash": ws.config_hash, "iterations": iterations,
        "scorers": {k: {kk: v.get(kk) for kk in ("checkpoint", "checkpoint_hash", "heldout", "heldout_zero_shot_top1", "proxy_acc")}
                    for k, v in scorers.items()},
        "corpus": corpus.get("summary"),
        "synthetic": synthetic["counts"],
        "last_filter": last_filter,
        "timings": dict(ws.timings),
        "cpu_timings": dict(ws.cpu_timings),
        "resumed_steps": list(ws.resumed_steps),
        "parallel_steps": parallel_steps,
        "ray": session.to_dict() if session is not None else None,
        "scorer_tasks": scorer_tasks,
        "total_seconds": time.perf_counter() - t_start,
        "retrained_beats_bootstrap_natural": (
            None if len(iterations) < 2 or iterations[-1]["natural_sdri_db"] is None or iterations[0]["natural_sdri_db"] is None
            else bool(iterations[-1]["natural_sdri_db"] > iterations[0]["natural_sdri_db"])),
    }
    report["files"] = write_report(root, report, last_table)
    return report
