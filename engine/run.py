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
from pathlib import Path
from typing import Any, Callable

import numpy as np

from engine.data_steps import step_corpus, step_synthetic
from engine.engine_steps import step_filter, step_tiers
from engine.evaluation import evaluate_checkpoint
from engine.parallel import SCORER_STEPS
from engine.model_steps import train_clap_step, train_judge_step, train_pc_step, train_separator_step
from engine.report import write_report
from engine.workspace import RunError, Workspace
from storage.configio import config_hash

log = logging.getLogger("stemforge.run")


def _clean_tracks(sources: str, audio_cfg: Any, limit: int, seed: int) -> list[dict[str, Any]]:
    """Clean single-label clips of the train split as ITT partner tracks (ClearSep: kept *or clean* tracks)."""
    from storage.audio import load_audio
    from storage.manifests import iter_rows

    rows = [r for r in iter_rows(sources, columns=["clip_id", "path", "labels", "split"], expect="source_clip")
            if r["split"] == "train" and len(r["labels"] or []) == 1]
    rng = np.random.default_rng(seed)
    picked = [rows[int(i)] for i in rng.permutation(len(rows))[:limit]]
    return [{"__key__": r["clip_id"], "target": load_audio(r["path"], audio_cfg),
             "json": {"target_labels": list(r["labels"]), "sample_rate": audio_cfg.sample_rate}} for r in picked]


def retrain_streams(cfg: Any, synthetic_train: str, tiers: dict[str, Any], sources: str, seed: int) -> tuple[list[tuple[Any, float]], dict[str, float]]:
    """(stream, weight) pairs for synthetic / ITT / SST with the configured ratios (empty tiers left out)."""
    from models.separator.data import ShardStream, read_shard_dir
    from pipelines.training_data import ITTBuilder, normalised_ratios, sst_sample

    sr = cfg.separator.sample_rate
    streams: dict[str, Any] = {"synthetic": ShardStream([synthetic_train], sr)}
    if tiers["itt"]["count"] > 0:
        tracks = list(read_shard_dir(tiers["itt"]["dir"], sr))
        clean = _clean_tracks(sources, cfg.audio, limit=200, seed=seed)
        streams["itt"] = ITTBuilder(tracks, clean, seed=seed, max_others=cfg.engine.itt_max_others)
    if tiers["sst"]["count"] > 0:
        sst = [sst_sample(s) for s in read_shard_dir(tiers["sst"]["dir"], sr)]
        order = np.random.default_rng(seed).permutation(len(sst))
        streams["sst"] = [sst[int(i)] for i in order]
    weights = normalised_ratios(cfg.engine.retrain_ratios, streams.keys())
    return [(streams[k], w) for k, w in weights.items()], weights


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
    root = Path(out_root or cfg.run.out_root) / name
    ws = Workspace.open(root, config_hash(cfg), restart=restart, allow_config_change=cfg.engine.allow_config_change)
    try:
        return _run(cfg, ws, name, root, on_step, until, t_start)
    except _StopAfter:
        return {"name": name, "stopped_after": until, "timings": dict(ws.timings), "resumed_steps": list(ws.resumed_steps)}


def _run(cfg: Any, ws: Workspace, name: str, root: Path, on_step: Callable[[str], None] | None, until: str | None,
         t_start: float) -> dict[str, Any]:
    from models.separator.data import ShardStream

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
    background = None
    foreground = set(ws.timings)  # steps this process ran or resumed before the background process starts
    if cfg.engine.parallel_scorers and until is None and any(ws.done(s) is None for s in SCORER_STEPS):
        from engine.parallel import ScorerProcess

        log.info("training the scorers in a background process alongside separator_0")
        background = ScorerProcess(cfg, root, ws.config_hash, corpus["sources"])
    try:
        separators = [step("separator_0", lambda: train_separator_step(
            ws, cfg, "iter0", [(ShardStream([synthetic["dirs"]["train"]], sr), 1.0)], synthetic["dirs"]["val"],
            cfg.engine.separator_budget_s, lineage={"iteration": 0, "data": "synthetic"},
            grad_threads=1 if background is not None else None))]  # the scorer process has the other core
    except BaseException:
        if background is not None:
            background.cancel()
        raise
    parallel_steps: list[str] = []
    if background is not None:
        t_wait = time.perf_counter()
        background.wait()
        log.info("background scorers: waited %.1f s after separator_0", time.perf_counter() - t_wait)
        parallel_steps = [s for s in SCORER_STEPS if s not in foreground and s not in ws.resumed_steps]
    scorers = {
        "clap": clap if clap is not None else step("scorer_clap", lambda: train_clap_step(ws, cfg, corpus["sources"])),
        "judge": step("scorer_judge", lambda: train_judge_step(ws, cfg, corpus["sources"])),
        "pc": step("scorer_pc", lambda: train_pc_step(ws, cfg, corpus["sources"])),
    }
    if parallel_steps:  # trained by the background process in this invocation, not resumed from an earlier one
        ws.resumed_steps[:] = [s for s in ws.resumed_steps if s not in parallel_steps]
    filters: dict[int, dict[str, Any]] = {}
    for k in range(1, cfg.run.iterations + 1):
        prev = separators[k - 1]
        filters[k - 1] = step(f"filter_{k - 1}", lambda: step_filter(ws, cfg, k - 1, corpus, prev, scorers))
        tiers = step(f"tiers_{k - 1}", lambda: step_tiers(ws, cfg, k - 1, corpus, prev, scorers))

        def retrain(k: int = k, prev: dict[str, Any] = prev, tiers: dict[str, Any] = tiers) -> dict[str, Any]:
            streams, weights = retrain_streams(cfg, synthetic["dirs"]["train"], tiers, corpus["sources"], cfg.run.seed + k)
            out = train_separator_step(ws, cfg, f"iter{k}", streams, synthetic["dirs"]["val"], cfg.engine.retrain_budget_s,
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
            **{key: ev.get(key) for key in ("sdri_db", "si_sdri_db", "natural_sdri_db", "natural_si_sdri_db", "silence_sdr_db")},
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
        "total_seconds": time.perf_counter() - t_start,
        "retrained_beats_bootstrap_natural": (
            None if len(iterations) < 2 or iterations[-1]["natural_sdri_db"] is None or iterations[0]["natural_sdri_db"] is None
            else bool(iterations[-1]["natural_sdri_db"] > iterations[0]["natural_sdri_db"])),
    }
    report["files"] = write_report(root, report, last_table)
    return report
