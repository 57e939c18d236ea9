"""Run steps that train models: the separator (bootstrap and retrain) and the mini scorers (CLAP, judge, PC).

Budgets: every trainer is capped so the demo run fits in 15 minutes on 2 cores; the separator by wall-clock
(`engine.separator_budget_s`, `engine.retrain_budget_s`), the scorers by their step counts in their own sections.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

from engine.workspace import Workspace
from storage.manifests import file_hash

log = logging.getLogger("stemforge.run")


def _val_samples(val_dir: str, sr: int, limit: int) -> list[dict[str, Any]]:
    from itertools import islice

    from models.separator.data import read_shard_dir

    return list(islice(read_shard_dir(val_dir, sr), limit))


def train_separator_step(ws: Workspace, cfg: Any, name: str, streams: list[tuple[Iterable[dict[str, Any]], float]],
                         val_dir: str, budget_s: float, init: str | None = None, lineage: dict[str, Any] | None = None,
                         grad_threads: int | None = None) -> dict[str, Any]:
    """Train into `<name>/` (resuming from its last.pt) and return the best checkpoint and its hash.

    `grad_threads` overrides `separator.grad_threads` (the run passes 1 while the scorers train on the other core)."""
    from models.separator.train import train_separator

    update: dict[str, Any] = {"time_budget_s": float(budget_s), "seed": cfg.run.seed}
    if grad_threads is not None:
        update["grad_threads"] = int(grad_threads)
    scfg = cfg.separator.model_copy(update=update)
    out = ws.path(name, "separator")
    val = _val_samples(val_dir, scfg.sample_rate, scfg.val_max)
    res = train_separator(scfg, streams, val, out, init=init, lineage=lineage or {})
    best = str(res.best)
    return {"checkpoint": best, "checkpoint_hash": file_hash(best)[:16], "epochs": res.epochs, "steps": res.steps,
            "train_seconds": round(res.seconds, 1), "best_metrics": res.best_metrics}


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
    return {"checkpoint": str(out), "checkpoint_hash": file_hash(out)[:16], "train_seconds": round(res.seconds, 1),
            "final_loss": res.final_loss, "heldout_zero_shot_top1": top1, "skipped": len(skipped)}
