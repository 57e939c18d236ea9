"""Run steps of one engine iteration: pseudo-label natural scenes, score and filter, write tiered shards.

All per-scene work goes through an `Executor` (in-process now, Ray later) as an ordered list of stages; this
module only builds the stages, feeds keyed scene batches and writes the results (candidate table, tier shards).
"""
from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from engine.data_steps import audit_stems, scene_rows
from engine.executor import ExecutionResult, build_executor
from engine.workspace import Workspace
from pipelines.filters import ClapScoring, JudgeScoring, PCScoring, SilenceScoring, all_rules, decision_stages
from pipelines.filters.audit import AuditTruth, DropColumns
from pipelines.filters.rules import rejection_counts
from pipelines.filters.sweep import filter_payoff, in_tier, threshold_sweep
from pipelines.filters.table import write_candidates
from pipelines.pseudolabel.stages import LoadScenes, PseudoLabel
from pipelines.stage import Batch, batch_to_rows
from storage.audio import encode_audio, load_audio

log = logging.getLogger("stemforge.run")


def scorer_factories(cfg: Any, scorers: dict[str, dict[str, Any]]):
    """Factories building each scorer from its section with the checkpoint trained in this run."""
    from models.aesthetics.scorer import build_pc
    from models.clap.base import build_clap
    from models.judge.scorer import build_judge

    clap_cfg = cfg.clap.model_copy(update={"checkpoint": scorers["clap"]["checkpoint"]})
    judge_cfg = cfg.judge.model_copy(update={"checkpoint": scorers["judge"]["checkpoint"]})
    pc_cfg = cfg.pc.model_copy(update={"checkpoint": scorers["pc"]["checkpoint"]})
    return (lambda: build_clap(clap_cfg)), (lambda: build_judge(judge_cfg)), (lambda: build_pc(pc_cfg))


def separator_factory(checkpoint: str, device: str):
    def make():
        from models.separator.infer import Separator

        return Separator.load(checkpoint, device)
    return make


def run_candidates(ws: Workspace, cfg: Any, iteration: int, corpus: dict[str, Any], separator: dict[str, Any],
                   scorers: dict[str, dict[str, Any]]) -> tuple[Batch, ExecutionResult, PseudoLabel]:
    """Pseudo-label, score and decide every scene of the configured splits; resumable per scene batch."""
    clap_f, judge_f, pc_f = scorer_factories(cfg, scorers)
    fcfg = cfg.filters
    pl = PseudoLabel(cfg.pseudo_label, separator_factory(separator["checkpoint"], cfg.engine.device), clap_f, judge_f)
    stages = [
        LoadScenes(cfg.audio),
        pl,
        ClapScoring(clap_f),
        PCScoring(pc_f),
        SilenceScoring(fcfg),
        JudgeScoring(judge_f),
        AuditTruth(audit_stems(corpus["audit"]), cfg.audio),
        *decision_stages(fcfg),
        DropColumns(("mixture", "residual")),
    ]
    rows = scene_rows(corpus["scenes"], list(cfg.engine.pseudo_label_splits))
    size = cfg.engine.rows_per_batch

    def inputs():
        for b in range(0, len(rows), size):
            chunk = rows[b:b + size]
            yield f"scenes-{b // size:05d}", {
                "scene_id": [r["clip_id"] for r in chunk], "path": [r["path"] for r in chunk],
                "event_labels": [list(r["event_labels"]) for r in chunk], "caption": [r.get("caption") or "" for r in chunk],
            }

    executor = build_executor(cfg.engine.backend, cfg.engine.batch_sizes)
    result = executor.run(stages, inputs(), work_dir=ws.path(f"iter{iteration}", "executor"))
    pl.ledger.seen = len(rows)
    return result.merged(), result, pl


def thresholds_of(cfg: Any) -> dict[str, Any]:
    f = cfg.filters
    return {k: getattr(f, k) for k in ("itt_min_db", "sst_min_db", "clap_target_min", "clap_residual_max", "pc_max",
                                         "silence_ratio_max", "judge_min")} | {
        "enabled": {k: getattr(f, f"{k}_enabled") for k in ("remix", "clap_target", "clap_residual", "pc", "silence", "judge")}}


def step_filter(ws: Workspace, cfg: Any, iteration: int, corpus: dict[str, Any], separator: dict[str, Any],
                scorers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Candidates -> `candidates.parquet` (every candidate, kept or not), sweep and pay-off JSON, statistics."""
    cands, result, pl = run_candidates(ws, cfg, iteration, corpus, separator, scorers)
    it_dir = ws.path(f"iter{iteration}", "candidates.parquet").parent
    n = len(cands.get("candidate_id", []))
    if n:
        write_candidates(it_dir / "candidates.parquet", cands)
    keep = np.asarray(cands.get("keep", np.zeros(0, bool)), dtype=bool)
    tiers = np.asarray(cands.get("tier", []), dtype=object)
    dur = np.asarray(cands.get("duration_s", np.zeros(0)), dtype=np.float64)
    kept_itt = keep & in_tier(tiers, "itt") if n else keep
    kept_sst = keep & in_tier(tiers, "sst") if n else keep
    scenes = {}
    for sid, re in zip(cands.get("scene_id", []), cands.get("re_sdr_db", [])):
        scenes[sid] = float(re)
    re_vals = np.array(list(scenes.values()), dtype=np.float64)
    sweep = threshold_sweep(cands, cfg.filters) if n else []
    payoff = filter_payoff(cands, rules=all_rules(cfg.filters)) if n else {"available": False}
    scene_count = len(scene_rows(corpus["scenes"], list(cfg.engine.pseudo_label_splits)))
    stats = {
        "iteration": iteration,
        "scenes": scene_count,
        "scenes_labelled": len(scenes),
        "scenes_skipped_min_events": scene_count - len(scenes),
        "candidates": n,
        "kept_itt": int(kept_itt.sum()),
        "kept_sst": int(kept_sst.sum()),
        "kept_hours_itt": float(dur[kept_itt].sum() / 3600.0) if n else 0.0,
        "kept_hours_sst": float(dur[kept_sst].sum() / 3600.0) if n else 0.0,
        "re_sdr_mean_db": float(np.mean(re_vals)) if re_vals.size else None,
        "prop_re_sdr_gt15": float(np.mean(re_vals > 15.0)) if re_vals.size else None,
        "prop_re_sdr_gt10": float(np.mean(re_vals > 10.0)) if re_vals.size else None,
        "rejections": rejection_counts(list(cands.get("reasons", []))),
        "thresholds": thresholds_of(cfg),
        "sweep": sweep,
        "payoff": payoff,
        "stage_stats": result.stats_table(),
        "candidates_table": str(it_dir / "candidates.parquet") if n else None,
    }
    (it_dir / "filter_stats.json").write_text(json.dumps(stats, indent=2, default=float))
    return stats


def step_tiers(ws: Workspace, cfg: Any, iteration: int, corpus: dict[str, Any], separator: dict[str, Any],
               scorers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Kept candidates -> WebDataset shards per tier (`iter<k>/tiers/{itt,sst}/`), scene reloaded from its file."""
    from storage.version import code_version
    from pipelines.training_data import tier_sample
    from storage.configio import config_hash
    from storage.shards.store import write_store

    cands, _, _ = run_candidates(ws, cfg, iteration, corpus, separator, scorers)  # fully resumed: no recompute
    rows = batch_to_rows(cands) if cands else []
    versions = {"separator": separator["checkpoint_hash"], **{k: v["checkpoint_hash"] for k, v in scorers.items()}}
    thresholds = thresholds_of(cfg)
    chash = config_hash(cfg)
    out: dict[str, Any] = {}
    for tier in ("itt", "sst"):
        chosen = [r for r in rows if r["keep"] and in_tier(np.asarray([r["tier"]], dtype=object), tier)[0]]
        chosen.sort(key=lambda r: r["candidate_id"])
        store = ws.path(f"iter{iteration}", "tiers", tier)

        def factory(i: int, chosen: list[dict[str, Any]] = chosen, tier: str = tier) -> dict[str, Any]:
            row = dict(chosen[i])
            row["mixture"] = load_audio(row["scene_path"], cfg.audio)
            return tier_sample(row, tier, thresholds, versions, chash, code_version(), encode_audio)

        manifest = write_store(store, factory, len(chosen), cfg.shards.model_copy(update={"prefix": f"{tier}-it{iteration}"}),
                               meta={"tier": tier, "iteration": iteration, "separator": separator["checkpoint_hash"]})
        out[tier] = {"dir": str(store), "count": int(manifest["num_samples"]), "hours": float(manifest["hours"])}
    return out
