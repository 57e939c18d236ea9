"""Run steps of one engine iteration: pseudo-label natural scenes, score and filter, write tiered shards.

All per-scene work goes through an executor (`engine.backend`: `ray` or `inprocess`) as a list of stage specs
over keyed scene tasks; the candidates go to a `CandidatesSink` under `iter<k>/filter/` (written inside the
workers): `table/` (every candidate with its scores and reasons, one Parquet part per task key),
`kept_audio/` (FLAC of the kept targets), `quarantine/` (rows that raised) and `_commits/`. The tier step reads
those files; it never re-runs the candidates.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from engine.data_steps import scene_rows
from engine.executors import RunSummary, StageSpec, Task, build_executor
from engine.resources import plan_resources
from engine.sinks import CandidatesSink, TableSink, read_kept_audio
from engine.workspace import Workspace
from pipelines.filters import DECISION_STAGES, FINAL_DECISION, all_rules
from pipelines.filters.rules import rejection_counts
from pipelines.filters.sweep import filter_payoff, in_tier, threshold_sweep
from storage.atomic import atomic_write_text

log = logging.getLogger("stemforge.run")


def scorer_sections(cfg: Any, scorers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each scorer's config section with the checkpoint trained in this run."""
    return {name: getattr(cfg, name).model_copy(update={"checkpoint": scorers[name]["checkpoint"]})
            for name in ("clap", "judge", "pc")}


def model_versions(separator: dict[str, Any], scorers: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Checkpoint hashes of the separator and the scorers a filter or tier step used (the judge may be judge_K)."""
    return {"separator": separator["checkpoint_hash"], **{k: v["checkpoint_hash"] for k, v in scorers.items()}}


def filter_specs(cfg: Any, corpus: dict[str, Any], separator: dict[str, Any],
                 scorers: dict[str, dict[str, Any]]) -> list[StageSpec]:
    """Pseudo-label -> score (CLAP, PC, judge, silence) -> audit truth -> decisions, as stage specs."""
    sec = scorer_sections(cfg, scorers)
    return [
        StageSpec.of("pipelines.pseudolabel.stages:LoadScenes", audio=cfg.audio),
        StageSpec.of("pipelines.pseudolabel.stages:PseudoLabel", cfg=cfg.pseudo_label,
                     separator={"checkpoint": separator["checkpoint"]}, clap=sec["clap"], judge=sec["judge"]),
        StageSpec.of("pipelines.filters.clap:ClapScoring", section=sec["clap"]),
        StageSpec.of("pipelines.filters.pc:PCScoring", section=sec["pc"]),
        StageSpec.of("pipelines.filters.judge:JudgeScoring", section=sec["judge"]),
        StageSpec.of("pipelines.filters.silence:SilenceScoring", cfg=cfg.filters),
        StageSpec.of("pipelines.filters.audit:AuditTruth", audit_manifest=corpus["audit"], audio=cfg.audio),
        *[StageSpec.of(path, cfg=cfg.filters) for path in DECISION_STAGES],
        StageSpec.of(FINAL_DECISION),
    ]


def labelled_splits(cfg: Any) -> list[str]:
    """Scene splits the filter step pseudo-labels: `engine.pseudo_label_splits` (the training data), plus the
    stop rule's validation split when the stop metric is the label-free Re-SDR (scored, never tiered)."""
    splits = list(cfg.engine.pseudo_label_splits)
    if getattr(cfg.run, "stop_metric", None) == "re_sdr" and cfg.run.stop_split not in splits:
        splits.append(cfg.run.stop_split)
    return splits


def scenes_manifest(corpus: dict[str, Any]) -> str:
    """The natural scenes the engine pseudo-labels (a clear error for a corpus without any)."""
    from engine.workspace import RunError

    if not corpus.get("scenes"):
        raise RunError(f"{corpus.get('dir')}: the corpus has no natural scenes (manifests/scenes): the relabel cycle "
                       f"pseudo-labels multi-label clips; import some (e.g. --layout fsd50k) or run build_dataset only")
    return corpus["scenes"]


def scene_tasks(cfg: Any, corpus: dict[str, Any], splits: list[str] | None = None) -> list[Task]:
    """The scenes of `splits` (default: the labelled splits) in stable `scenes-NNNNN` tasks of
    `engine.rows_per_batch` scenes."""
    rows = scene_rows(scenes_manifest(corpus), labelled_splits(cfg) if splits is None else splits)
    size = cfg.engine.rows_per_batch
    tasks = []
    for b in range(0, len(rows), size):
        chunk = rows[b:b + size]
        tasks.append(Task(f"scenes-{b // size:05d}", {
            "scene_id": [r["clip_id"] for r in chunk], "path": [r["path"] for r in chunk],
            "event_labels": [list(r["event_labels"]) for r in chunk], "caption": [r.get("caption") or "" for r in chunk]}))
    return tasks


def candidates_sink(ws: Workspace, iteration: int) -> CandidatesSink:
    return CandidatesSink(str(ws.path(f"iter{iteration}", "filter", "table").parent))


def run_candidates(ws: Workspace, cfg: Any, iteration: int, corpus: dict[str, Any], separator: dict[str, Any],
                   scorers: dict[str, dict[str, Any]], splits: list[str] | None = None,
                   sink: TableSink | None = None) -> tuple[RunSummary, TableSink]:
    """Pseudo-label, score and decide every scene of `splits` (default: the labelled splits) into a candidates sink
    (default: the iteration's; resumable per task key)."""
    sink = sink or candidates_sink(ws, iteration)
    with build_executor(cfg.engine) as executor:
        specs = plan_resources(cfg, filter_specs(cfg, corpus, separator, scorers), executor.gpus_available())
        summary = executor.run(specs, scene_tasks(cfg, corpus, splits), sink)
    return summary, sink


def label_free_figures(cands: dict[str, Any]) -> dict[str, Any]:
    """What can be said of a separator on natural scenes without stems: its pseudo-labels' remix consistency
    (per scene: Re-SDR distribution, share above 10 / 15 dB) and the scorers' agreement (CLAP target, judge)."""
    re_by_scene: dict[str, float] = {}
    for sid, re in zip(cands.get("scene_id", []), cands.get("re_sdr_db", [])):
        re_by_scene[sid] = float(re)
    re_vals = np.array(list(re_by_scene.values()), dtype=np.float64)
    re_vals = re_vals[np.isfinite(re_vals)]

    def mean(col: str) -> float | None:
        v = np.asarray(cands.get(col, []), dtype=np.float64)
        v = v[np.isfinite(v)]
        return round(float(v.mean()), 3) if v.size else None

    q = (lambda p: round(float(np.percentile(re_vals, p)), 3)) if re_vals.size else (lambda p: None)
    return {"true_sdr": "unavailable: no ground-truth stems for these scenes", "scenes": int(re_vals.size),
            "candidates": len(cands.get("candidate_id", [])),
            "re_sdr_mean_db": round(float(re_vals.mean()), 3) if re_vals.size else None,
            "re_sdr_quantiles_db": {"p10": q(10), "p50": q(50), "p90": q(90)},
            "prop_re_sdr_gt10": round(float(np.mean(re_vals > 10.0)), 4) if re_vals.size else None,
            "prop_re_sdr_gt15": round(float(np.mean(re_vals > 15.0)), 4) if re_vals.size else None,
            "clap_target_mean": mean("clap_target"), "judge_overall_mean": mean("judge_overall"),
            "kept": int(np.asarray(cands.get("keep", []), dtype=bool).sum())}


def label_free_evaluation(ws: Workspace, cfg: Any, label: str, corpus: dict[str, Any], checkpoint: str,
                          checkpoint_hash: str, scorers: dict[str, dict[str, Any]], split: str) -> dict[str, Any]:
    """Label-free natural evaluation of one separator on the held-out scenes of `split` (no stems anywhere): the
    same pseudo-label + scoring chain as the filter step, into `eval/<label>/<split>/` (never tiered)."""
    from pipelines.filters.table import read_candidates

    if not scene_rows(scenes_manifest(corpus), [split]):
        return {"true_sdr": "unavailable: no ground-truth stems", "scenes": 0, "split": split}
    sink = TableSink(str(ws.path("eval", label, split)))
    run_candidates(ws, cfg, -1, corpus, {"checkpoint": checkpoint, "checkpoint_hash": checkpoint_hash}, scorers,
                   splits=[split], sink=sink)
    return {**label_free_figures(read_candidates(sink.table_dir)), "split": split}


THRESHOLD_KEYS = ("itt_min_db", "sst_min_db", "clap_target_min", "clap_residual_max", "pc_max", "silence_ratio_max",
                  "judge_min")


def thresholds_of(cfg: Any) -> dict[str, Any]:
    """The thresholds and gates a filter step decided with (recorded in its marker, tier lineage and the review)."""
    f = cfg.filters
    return {k: getattr(f, k) for k in THRESHOLD_KEYS} | {
        "enabled": {k: getattr(f, f"{k}_enabled") for k in ("remix", "clap_target", "clap_residual", "pc", "silence", "judge")}}


def step_filter(ws: Workspace, cfg: Any, iteration: int, corpus: dict[str, Any], separator: dict[str, Any],
                scorers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Candidates -> `iter<k>/filter/` (every candidate, kept or not), sweep and pay-off JSON, statistics."""
    from pipelines.filters.table import read_candidates

    summary, sink = run_candidates(ws, cfg, iteration, corpus, separator, scorers)
    cands = read_candidates(sink.table_dir)
    n = len(cands.get("candidate_id", []))
    keep = np.asarray(cands.get("keep", np.zeros(0, bool)), dtype=bool)
    tiers = np.asarray(cands.get("tier", []), dtype=object)
    dur = np.asarray(cands.get("duration_s", np.zeros(0)), dtype=np.float64)
    split_of = {r["clip_id"]: r["split"] for r in scene_rows(scenes_manifest(corpus), labelled_splits(cfg))}
    training = set(cfg.engine.pseudo_label_splits)
    keep = keep & np.array([split_of.get(s) in training for s in cands.get("scene_id", [])], dtype=bool)  # tiered
    kept_itt = keep & in_tier(tiers, "itt") if n else keep
    kept_sst = keep & in_tier(tiers, "sst") if n else keep
    scenes, by_split = {}, {}
    for sid, re in zip(cands.get("scene_id", []), cands.get("re_sdr_db", [])):
        by_split.setdefault(split_of.get(sid, "?"), {})[sid] = float(re)
        if split_of.get(sid) in training:
            scenes[sid] = float(re)
    re_vals = np.array(list(scenes.values()), dtype=np.float64)
    train_rows = [r for r in scene_rows(scenes_manifest(corpus), list(training))]
    scene_count = len(train_rows)
    stats = {
        "iteration": iteration,
        "scenes": scene_count,
        "scenes_labelled": len(scenes),
        "scene_hours": float(sum(float(r.get("duration_s") or 0.0) for r in train_rows) / 3600.0),
        "scenes_skipped_min_events": int(summary.counts.get("scenes_skipped_min_events", 0)),
        "quarantined": summary.quarantined,
        "candidates": n,
        "kept_itt": int(kept_itt.sum()),
        "kept_sst": int(kept_sst.sum()),
        "kept_hours_itt": float(dur[kept_itt].sum() / 3600.0) if n else 0.0,
        "kept_hours_sst": float(dur[kept_sst].sum() / 3600.0) if n else 0.0,
        "re_sdr_mean_db": float(np.mean(re_vals)) if re_vals.size else None,
        "re_sdr_mean_db_by_split": {k: float(np.mean(list(v.values()))) for k, v in sorted(by_split.items())},
        "prop_re_sdr_gt15": float(np.mean(re_vals > 15.0)) if re_vals.size else None,
        "prop_re_sdr_gt10": float(np.mean(re_vals > 10.0)) if re_vals.size else None,
        "rejections": rejection_counts(list(cands.get("reasons", []))),
        "thresholds": thresholds_of(cfg),
        "model_versions": model_versions(separator, scorers),
        "sweep": threshold_sweep(cands, cfg.filters) if n else [],
        "payoff": filter_payoff(cands, rules=all_rules(cfg.filters)) if n else {"available": False},
        "stage_stats": summary.stages,
        "executor": {k: v for k, v in summary.to_dict().items() if k != "stages"},
        "candidates_table": str(sink.table_dir) if n else None,
        "kept_audio": str(sink.kept_audio_dir),
        "quarantine": str(sink.quarantine_dir),
    }
    atomic_write_text(Path(sink.root) / "filter_stats.json", json.dumps(stats, indent=2, default=float))
    return stats


def write_tier_store(store: Path, rows: list[dict[str, Any]], tier: str, cfg: Any, iteration: int,
                     separator: dict[str, Any], versions: dict[str, str]) -> dict[str, Any]:
    """One tier's kept candidates (rows with their target FLAC under `target_flac`) -> a shard store; returns its
    manifest. The only place the tier step writes shards: one task per shard group (engine/shard_jobs.py), Ray or
    in-process after `engine.backend`, same bytes."""
    from engine.ray_tasks import executor_session
    from engine.shard_jobs import StoreJob, tier_factory_spec, write_store_job
    from engine.run_config import work_hash
    from storage.version import code_version

    # the run's identity (the same hash as run.json and the report), not the full config with its execution keys
    spec = tier_factory_spec(rows, tier, thresholds_of(cfg), versions, work_hash(cfg), code_version(), cfg.audio)
    job = StoreJob(str(store), len(rows), spec, cfg.shards.model_copy(update={"prefix": f"{tier}-it{iteration}"}),
                   {"tier": tier, "iteration": iteration, "separator": separator["checkpoint_hash"]})
    with executor_session(cfg) as executor:
        return write_store_job(job, executor=executor).manifest


def step_tiers(ws: Workspace, cfg: Any, iteration: int, corpus: dict[str, Any], separator: dict[str, Any],
               scorers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Kept candidates (the filter step's table + kept audio) -> shard stores `iter<k>/tiers/{itt,sst}/`."""
    from pipelines.filters.table import read_table_parts

    sink = candidates_sink(ws, iteration)
    missing = [t.key for t in scene_tasks(cfg, corpus) if t.key not in sink.committed()]
    if missing:
        raise RuntimeError(f"{sink.root}: filter_{iteration} has not committed task(s) {missing[:3]}: run the filter step first")
    table = read_table_parts(sink.table_dir)
    rows = table.to_pylist() if table.num_columns else []
    audio = read_kept_audio(sink.root)
    training = {r["clip_id"] for r in scene_rows(scenes_manifest(corpus), list(cfg.engine.pseudo_label_splits))}
    rows = [r for r in rows if r["scene_id"] in training]  # validation scenes are scored for the stop rule, never trained on
    versions = model_versions(separator, scorers)
    out: dict[str, Any] = {}
    for tier in ("itt", "sst"):
        chosen = [r for r in rows if r["keep"] and in_tier(np.asarray([r["tier"]], dtype=object), tier)[0]]
        chosen.sort(key=lambda r: r["candidate_id"])
        for r in chosen:
            r["target_flac"] = audio[r["candidate_id"]][0]
        store = ws.path(f"iter{iteration}", "tiers", tier)
        manifest = write_tier_store(store, chosen, tier, cfg, iteration, separator, versions)
        out[tier] = {"dir": str(store), "count": int(manifest["num_samples"]), "hours": float(manifest["hours"])}
    return out
