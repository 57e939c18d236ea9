"""`stemforge train judge` and `stemforge train pc`: train the mini judge and the mini PC estimator.

Both read a `source_clip` manifest (clean single-label clips), train on synthetic tuples drawn from its `train`
split (all clips when the manifest has no splits), evaluate on the other splits (or a held-out 20 % of clips),
and write the checkpoint plus `<CKPT>.report.json` with the held-out PCC/SRCC. Text for each label comes from
the mixing prompts (phrase and a few extraction prompts), so the judge sees the wording the engine uses.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from flows.common import EXIT_DATA, EXIT_USAGE, config_options, fail, progress

log = logging.getLogger("stemforge.judge")


def _pools(manifest: str, sample_rate: int, max_clips: int, seed: int):
    """(train pool, held-out pool) from the manifest's splits, else a 20 % clip hold-out."""
    from models.judge.tuples import SourcePool
    from storage.manifests import read_column

    try:
        splits = set(read_column(manifest, "split", expect="source_clip"))
        if "train" in splits and splits - {"train"}:
            train = SourcePool.from_manifest(manifest, sample_rate, ("train",), max_clips, seed)
            held = SourcePool.from_manifest(manifest, sample_rate, tuple(sorted(splits - {"train"})), max_clips, seed)
            return train, held, f"splits train vs {sorted(splits - {'train'})}"
        pool = SourcePool.from_manifest(manifest, sample_rate, None, max_clips, seed)
        train, held = pool.split_by_clip(0.2, seed)
        return train, held, "20% clip hold-out"
    except (ValueError, OSError) as exc:
        fail(f"{manifest}: {exc}", EXIT_DATA)


def _label_texts(labels: list[str]) -> dict[str, list[str]]:
    """Phrase plus extraction prompts per label (pipelines.mixing.prompts when present, else the label)."""
    try:
        from pipelines.mixing.prompts import make_prompt, phrase_for
    except ImportError:
        return {lab: [lab] for lab in labels}
    rng = np.random.default_rng(0)
    return {lab: [phrase_for(lab), phrase_for(lab)] + [make_prompt("extract", [lab], rng) for _ in range(2)] for lab in labels}


def _write_report(out: str, report: dict[str, Any]) -> Path:
    from storage.atomic import atomic_write_text

    path = Path(str(out) + ".report.json")
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")
    return path


@click.command("judge")
@click.option("--sources", "manifest", required=True, type=click.Path(exists=True), help="source_clip manifest directory.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Checkpoint file to write.")
@click.option("--ratings", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Human ratings (Parquet/CSV: mixture, output, text, overall, recall, precision, faithfulness).")
@config_options
def train_judge(cfg: Any, manifest: str, out: str, ratings: str | None) -> None:
    """Train the SAJ-style mini judge: proxy pre-training, then MAE+MSE fine-tuning.

    Without --ratings the fine-tuning targets are PROXY ratings derived from ground truth of deliberately
    degraded outputs (see models/judge/proxy_ratings.py); with --ratings they are the given human ratings.
    """
    import torch

    from models.judge.features import resolve_device
    from models.judge.human_ratings import RatingsError, evaluate_human, finetune_human, load_ratings, split_ratings
    from models.judge.train import build_model, evaluate_proxy, pretrain_proxy, save_judge, train_proxy_and_ratings

    jc = cfg.judge
    try:
        device = resolve_device(jc.device)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    train, held, how = _pools(manifest, jc.sample_rate, jc.max_clips, jc.seed)
    texts = _label_texts(sorted(set(train.labels) | set(held.labels)))
    log.info("judge: %d train clips, %d held-out clips (%s), %d labels, device %s", len(train.clips), len(held.clips),
             how, len(train.label_names), device)
    model = build_model(jc)
    t0 = time.perf_counter()
    total = jc.pretrain_steps + jc.finetune_steps
    with progress(total, "train judge") as advance:
        step_cb = lambda stage, step, loss: advance(1)
        if ratings is None:
            rep = train_proxy_and_ratings(model, train, jc, device, texts, step_cb)
            metrics = evaluate_proxy(model, held, jc, device, texts)
            summary = {"targets": "proxy", "proxy_acc": rep.proxy_acc, "history": rep.history}
        else:
            try:
                table = load_ratings(ratings, jc.sample_rate)
            except RatingsError as exc:
                fail(str(exc), EXIT_DATA)
            r_train, r_held = split_ratings(table, 0.2, jc.seed)
            acc = pretrain_proxy(model, train, jc, device, texts, step_cb)
            history = finetune_human(model, r_train, jc, device, on_step=step_cb)
            metrics = evaluate_human(model, r_held, jc, device) if len(r_held) else {"n": 0, "axes": {}}
            summary = {"targets": "human", "ratings": str(Path(ratings).resolve()), "rows": len(table),
                       "proxy_acc": acc, "history": history}
    seconds = time.perf_counter() - t0
    report = {"kind": "judge", "sources": str(Path(manifest).resolve()), "holdout": how, "train_seconds": seconds,
              "torch_threads": torch.get_num_threads(), "device": str(device), **summary, "heldout": metrics}
    sha = save_judge(out, model, jc, meta={"targets": summary["targets"], "heldout": metrics})
    path = _write_report(out, report)
    for axis, m in metrics.get("axes", {}).items():
        log.info("held-out %-12s PCC %.3f  SRCC %.3f  MAE %.3f", axis, m["pcc"], m["srcc"], m["mae"])
    log.info("judge checkpoint %s (sha256 %s…) in %.0f s; report %s", out, sha[:12], seconds, path)


@click.command("pc")
@click.option("--sources", "manifest", required=True, type=click.Path(exists=True), help="source_clip manifest directory.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Checkpoint file to write.")
@config_options
def train_pc(cfg: Any, manifest: str, out: str) -> None:
    """Train the mini production-complexity estimator (PROXY: counts sources and background; see
    models/aesthetics/mini.py) on synthetic mixtures of the manifest's clips."""
    import torch

    from models.aesthetics.train import build_model, evaluate_pc, save_pc, train_pc as fit
    from models.judge.features import resolve_device

    pc = cfg.pc
    try:
        device = resolve_device(pc.device)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    train, held, how = _pools(manifest, pc.sample_rate, pc.max_clips, pc.seed)
    log.info("pc: %d train clips, %d held-out clips (%s), device %s", len(train.clips), len(held.clips), how, device)
    model = build_model(pc)
    with progress(pc.steps, "train pc") as advance:
        seconds = fit(model, train, pc, device, lambda step, loss: advance(1))
    metrics = evaluate_pc(model, held, pc, device)
    sha = save_pc(out, model, pc, meta={"heldout": metrics})
    report = {"kind": "pc", "sources": str(Path(manifest).resolve()), "holdout": how, "train_seconds": seconds,
              "torch_threads": torch.get_num_threads(), "device": str(device), "heldout": metrics}
    path = _write_report(out, report)
    log.info("held-out PC: PCC %.3f SRCC %.3f MAE %.3f; single clean < 2.5: %.0f%%; multi-source >= 2.5: %.0f%%",
             metrics["pcc"], metrics["srcc"], metrics["mae"], 100 * metrics["single_clean_below_2.5"],
             100 * metrics["multi_source_at_or_above_2.5"])
    log.info("pc checkpoint %s (sha256 %s…) in %.0f s; report %s", out, sha[:12], seconds, path)
