"""Run steps that train models: the separator (bootstrap and retrain) and the mini scorers (CLAP, judge, PC).

Budgets: every trainer is capped so the demo run fits in 15 minutes on 2 cores; the separator by optimiser steps
(`engine.separator_steps`, `engine.retrain_steps`), the scorers by their step counts in their own sections.
The separator trains under Ray Train (`engine/ray_train.py`, `engine.train_workers` DDP ranks) with the Ray backend,
in this process with the in-process backend: the same loop either way.
"""
from __future__ import annotations

import logging
from functools import partial
from typing import Any, Callable, Sequence

from engine.workspace import Workspace
from models.weights import weights_hash

log = logging.getLogger("stemforge.run")


def _clean_tracks(sources: str, audio_cfg: Any, limit: int, seed: int) -> list[dict[str, Any]]:
    """Clean single-label clips of the train split as ITT partner tracks (ClearSep: kept *or clean* tracks)."""
    import numpy as np

    from storage.audio import load_audio
    from storage.manifests import iter_rows

    rows = [r for r in iter_rows(sources, columns=["clip_id", "path", "labels", "split"], expect="source_clip")
            if r["split"] == "train" and len(r["labels"] or []) == 1]
    rng = np.random.default_rng(seed)
    picked = [rows[int(i)] for i in rng.permutation(len(rows))[:limit]]
    return [{"__key__": r["clip_id"], "target": load_audio(r["path"], audio_cfg),
             "json": {"target_labels": list(r["labels"]), "sample_rate": audio_cfg.sample_rate}} for r in picked]


def retrain_weights(cfg: Any, tiers: dict[str, Any]) -> dict[str, float]:
    """Normalised `engine.retrain_ratios` over synthetic and the non-empty tiers."""
    from pipelines.training_data import normalised_ratios

    available = ["synthetic"] + [t for t in ("itt", "sst") if tiers.get(t, {}).get("count", 0) > 0]
    return normalised_ratios(cfg.engine.retrain_ratios, available)


def tier_dirs(tier: dict[str, Any]) -> list[str]:
    """A tier's shard stores, newest first: `dirs` when accumulated over iterations (steps.training_tiers), else its
    one `dir`."""
    return list(tier.get("dirs") or [tier["dir"]])


def tier_tracks(tier: dict[str, Any], sample_rate: int) -> list[dict[str, Any]]:
    """The decoded samples of a tier's stores (`dirs` newest first, or one `dir`): a track kept by several iterations
    (same scene and label) only in its newest version."""
    from models.separator.data import read_samples

    seen: set[tuple[str, str]] = set()
    out: list[dict[str, Any]] = []
    for d in tier_dirs(tier):
        for s in read_samples([d], sample_rate):
            meta = s["json"]
            ident = (str((meta.get("scene_lineage") or {}).get("scene_id", s.get("__key__"))),
                     str((meta.get("target_labels") or [""])[0]))
            if ident not in seen:
                seen.add(ident)
                out.append(s)
    return out


def retrain_streams(cfg: Any, synthetic_train: str, tiers: dict[str, Any], sources: str, seed: int) -> list[tuple[Any, float]]:
    """(source, weight) pairs for synthetic / ITT / SST with the configured ratios (empty tiers left out).

    Called where the training runs (each Ray Train rank builds its own: only shard indexes and the few kept tracks
    are loaded, and every source is indexable, so ranks and resumed runs draw the same samples)."""
    from models.separator.data import ShardSource
    from pipelines.training_data import ITTBuilder, sst_sample

    sr = cfg.separator.sample_rate
    built: dict[str, Any] = {"synthetic": ShardSource([synthetic_train], sr)}
    weights = retrain_weights(cfg, tiers)
    if "itt" in weights:
        clean = _clean_tracks(sources, cfg.audio, limit=200, seed=seed)
        built["itt"] = ITTBuilder(tier_tracks(tiers["itt"], sr), clean, seed=seed, max_others=cfg.engine.itt_max_others)
    if "sst" in weights:
        built["sst"] = [sst_sample(s) for s in tier_tracks(tiers["sst"], sr)]
    return [(built[k], w) for k, w in weights.items()]


def train_separator_step(ws: Workspace, cfg: Any, name: str, streams: Callable[[], Sequence[tuple[Any, float]]],
                         val_dir: str, steps: int, init: str | None = None,
                         lineage: dict[str, Any] | None = None, pick: str = "best",
                         workers: int | None = None) -> dict[str, Any]:
    """Train `steps` optimiser steps into `<name>/separator/` (resuming from its last.pt) and return the chosen
    checkpoint and its hash: `pick` "best" (lowest validation loss, `best.pt`) or "end" (the weights at the end of
    the budget, `end.pt`; `engine.retrain_checkpoint`).

    `streams` is a picklable callable returning `(source, weight)` pairs (e.g. `partial(shard_streams, [dir], sr)`,
    `partial(retrain_streams, ...)`): it runs inside every training worker. With `engine.backend: ray` the fit runs
    under Ray Train with `workers` ranks (default `engine.train_workers`; within the run's Ray session); otherwise in
    this process."""
    from engine.ray_train import FitSpec, run_spec, val_samples

    if pick not in ("best", "end"):  # before the fit, not after minutes of training
        raise ValueError(f"checkpoint pick {pick!r}: expected best or end")
    scfg = cfg.separator.model_copy(update={"max_steps": int(steps), "seed": cfg.run.seed})
    out = ws.path(name, "separator")
    spec = FitSpec(separator=scfg, streams=streams, val=partial(val_samples, [str(val_dir)], scfg.sample_rate, scfg.val_max),
                   out_dir=str(out), init=init, lineage=lineage or {})
    workers = int(workers or cfg.engine.train_workers)
    if cfg.engine.backend == "ray":
        from engine.ray_runtime import ray_session
        from engine.ray_train import fit_separator, placeable_workers, resolve_use_gpu

        with ray_session(cfg.engine.ray):
            workers = placeable_workers(workers, scfg.batch_size)
            res = fit_separator(spec, num_workers=workers, use_gpu=resolve_use_gpu(cfg.engine, scfg.device),
                                max_failures=int(cfg.engine.train_max_failures))
    else:
        if workers > 1:
            log.warning("%d training workers need engine.backend: ray; training in this process", workers)
            workers = 1
        res = run_spec(spec)
    if pick == "end":
        from models.separator.train import end_checkpoint

        chosen = str(end_checkpoint(out))
    else:
        chosen = str(res.best)
    end_metrics = res.history[-1] if res.history else {}
    return {"checkpoint": chosen, "checkpoint_hash": weights_hash(chosen)[:16], "picked": pick, "epochs": res.epochs,
            "steps": res.steps, "train_seconds": round(res.seconds, 1), "best_metrics": res.best_metrics,
            "end_metrics": end_metrics, "train_workers": workers}


SCORER_STEP_KEYS = {"clap": ("clap", "steps"), "judge_pretrain": ("judge", "pretrain_steps"),
                    "judge_finetune": ("judge", "finetune_steps"), "pc": ("pc", "steps")}


def capped(cfg: Any, section: str) -> Any:
    """The scorer section with `engine.scorer_steps` caps applied (the run's budget, not the scorer's default)."""
    unknown = set(cfg.engine.scorer_steps) - set(SCORER_STEP_KEYS)
    if unknown:
        raise ValueError(f"engine.scorer_steps: unknown key(s) {sorted(unknown)}; known: {sorted(SCORER_STEP_KEYS)}")
    sec = cfg.clap.mini if section == "clap" else getattr(cfg, section)
    update = {field: int(cfg.engine.scorer_steps[key]) for key, (s, field) in SCORER_STEP_KEYS.items()
              if s == section and key in cfg.engine.scorer_steps}
    return sec.model_copy(update=update)


def _source_pools(manifest: str, sample_rate: int, max_clips: int, seed: int):
    from models.judge.tuples import SourcePool

    train = SourcePool.from_manifest(manifest, sample_rate, ("train",), max_clips, seed)
    held = SourcePool.from_manifest(manifest, sample_rate, ("val", "test"), max_clips, seed)
    return train, held


def _label_texts(labels: list[str]) -> dict[str, list[str]]:
    import numpy as np

    from pipelines.mixing.prompts import make_prompt, phrase_for

    rng = np.random.default_rng(0)
    return {lab: [phrase_for(lab), phrase_for(lab)] + [make_prompt("extract", [lab], rng) for _ in range(2)] for lab in labels}


def train_judge_step(ws: Workspace, cfg: Any, sources: str) -> dict[str, Any]:
    """Mini judge: proxy pre-training then proxy-rating fine-tuning on the clean source pool."""
    from models.judge.features import resolve_device
    from models.judge.train import build_model, evaluate_proxy, save_judge, train_proxy_and_ratings

    jc = capped(cfg, "judge")
    device = resolve_device(jc.device)
    train, held = _source_pools(sources, jc.sample_rate, jc.max_clips, jc.seed)
    texts = _label_texts(sorted(set(train.labels) | set(held.labels)))
    model = build_model(jc)
    rep = train_proxy_and_ratings(model, train, jc, device, texts)
    metrics = evaluate_proxy(model, held, jc, device, texts)
    out = ws.path("scorers", "judge.pt")
    sha = save_judge(out, model, jc, meta={"targets": "proxy", "heldout": metrics})
    return {"checkpoint": str(out), "checkpoint_hash": sha[:16], "proxy_acc": rep.proxy_acc, "heldout": metrics}


def train_pc_step(ws: Workspace, cfg: Any, sources: str) -> dict[str, Any]:
    """Mini production-complexity estimator on synthetic mixtures of the clean pool."""
    from models.aesthetics.train import build_model, evaluate_pc, save_pc, train_pc
    from models.judge.features import resolve_device

    pc = capped(cfg, "pc")
    device = resolve_device(pc.device)
    train, held = _source_pools(sources, pc.sample_rate, pc.max_clips, pc.seed)
    model = build_model(pc)
    seconds = train_pc(model, train, pc, device)
    metrics = evaluate_pc(model, held, pc, device)
    out = ws.path("scorers", "pc.pt")
    sha = save_pc(out, model, pc, meta={"heldout": metrics})
    return {"checkpoint": str(out), "checkpoint_hash": sha[:16], "train_seconds": seconds, "heldout": metrics}


def train_clap_step(ws: Workspace, cfg: Any, sources: str) -> dict[str, Any]:
    """Mini CLAP on the clean source pool (contrastive + margin loss; models/clap/train_mini.py)."""
    from models.clap.train_mini import load_clips, train_mini_clap, zero_shot_top1
    from pipelines.mixing.prompts import phrase_for

    mc = capped(cfg, "clap").model_copy(update={"seed": cfg.run.seed})
    clips, skipped = load_clips(sources, mc.sample_rate, ("train",))
    phrases = {c: phrase_for(c) for c in sorted({c.label for c in clips})}
    res = train_mini_clap(clips, phrases, mc, device="cpu")
    out = ws.path("scorers", "clap.pt")
    res.model.save(out, meta={"classes": res.classes, "steps": res.steps})
    held, _ = load_clips(sources, mc.sample_rate, ("val", "test"))
    top1 = zero_shot_top1(res.model, held, phrases) if held else None
    return {"checkpoint": str(out), "checkpoint_hash": weights_hash(out)[:16], "train_seconds": round(res.seconds, 1),
            "final_loss": res.final_loss, "heldout_zero_shot_top1": top1, "skipped": len(skipped)}
