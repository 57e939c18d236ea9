"""`stemforge train judge`, `stemforge train pc` and `stemforge train judge-calibration`.

`judge` and `pc` train the mini judge and the mini PC estimator. Both read a `source_clip` manifest (clean
single-label clips), train on synthetic tuples drawn from its `train` split (all clips when the manifest has no
splits), evaluate on the other splits (or a held-out 20 % of clips), and write the checkpoint plus
`<CKPT>.report.json` with the held-out PCC/SRCC. Text for each label comes from the mixing prompts (phrase and a few
extraction prompts), so the judge sees the wording the engine uses.

`judge-calibration` fine-tunes a trained judge on a separator's own outputs for items whose truth is known (the
engine's judge_K step, engine/judge_calibration.py, as one command).
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


@click.command("judge-calibration")
@click.option("--judge", "judge_ckpt", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Judge checkpoint to start from (e.g. a run's scorers/judge.pt).")
@click.option("--separator", "separator_ckpt", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Separator whose outputs the judge learns to rate.")
@click.option("--shards", "shard_dirs", multiple=True, required=True, type=click.Path(exists=True, file_okay=False),
              help="Shard store with known truth (target and residual), e.g. a held-out synthetic store; repeatable.")
@click.option("--max-tuples", type=click.IntRange(min=1), default=None, help="At most this many tuples per store.")
@click.option("--stems-corpus", type=click.Path(exists=True, file_okay=False), default=None,
              help="Corpus folder whose natural scenes have stems (`corpus import --layout stems`, `corpus demo`): "
                   "the scenes of --stems-split are calibrated on too.")
@click.option("--stems-split", default="val", show_default=True,
              help="Split of --stems-corpus to calibrate on (never the split you report on).")
@click.option("--heldout", "heldout_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Shard store scored for the report only (e.g. the synthetic test store); repeatable.")
@click.option("--steps", type=click.IntRange(min=1), default=600, show_default=True, help="Fine-tuning steps.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Checkpoint file to write.")
@config_options
def calibrate_judge_cmd(cfg: Any, judge_ckpt: str, separator_ckpt: str, shard_dirs: tuple[str, ...],
                        max_tuples: int | None, stems_corpus: str | None, stems_split: str,
                        heldout_dirs: tuple[str, ...], steps: int, out: str) -> None:
    """Re-calibrate a judge on a separator's own outputs, where the truth is known (what `stemforge run` does
    before each filter step with `engine.judge_calibration.enabled`).

    The targets are PROXY ratings computed from the truth (models/judge/separator_ratings.py documents the mapping),
    not human ratings. Writes the checkpoint and `<CKPT>.report.json` with held-out correlations."""
    from engine.judge_calibration import natural_truth_items
    from flows.cli_engine import corpus_folder
    from models.judge.separator_ratings import calibrate_judge

    extra: list[dict[str, Any]] = []
    if stems_corpus:
        corpus = corpus_folder(stems_corpus)
        if corpus["audit"] is None:
            fail(f"{Path(corpus['dir']) / 'manifests' / 'audit'}: not found: --stems-corpus needs scenes with stems",
                 EXIT_DATA)
        try:
            extra = natural_truth_items(corpus["scenes"], corpus["audit"], stems_split, cfg.judge.sample_rate)
        except (FileNotFoundError, ValueError) as exc:
            fail(str(exc), EXIT_DATA)
        if not extra:
            fail(f"{corpus['dir']}: no scene of split {stems_split!r} has a stem", EXIT_DATA)
    try:
        res = calibrate_judge(judge_ckpt, separator_ckpt, list(shard_dirs), cfg.judge, steps, cfg.judge.seed,
                              Path(out), heldout_dirs=list(heldout_dirs), max_tuples=max_tuples, extra_samples=extra)
    except ValueError as exc:
        fail(str(exc), EXIT_DATA)
    report = {"kind": "judge-calibration", "judge": str(Path(judge_ckpt).resolve()),
              "separator": str(Path(separator_ckpt).resolve()), "shards": [str(Path(d).resolve()) for d in shard_dirs],
              "stems": {"corpus": str(Path(stems_corpus).resolve()), "split": stems_split, "items": len(extra)}
              if stems_corpus else None, **{k: v for k, v in res.items() if k != "history"}}
    path = _write_report(out, report)
    overall = (res["heldout"].get("axes") or {}).get("overall", {})
    log.info("calibrated judge %s (sha256 %s...) from %d items (%d examples) in %.0f s; held-out overall PCC %s; "
             "report %s", out, res["sha256"][:12], res["tuples"], res["examples"], res["seconds"], overall.get("pcc"), path)
