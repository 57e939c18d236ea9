"""`stemforge train clap`: train the in-project mini CLAP on a source manifest and save an atomic checkpoint.

Phrases for each label come from `pipelines.mixing.prompts.phrase_for` (the same phrases the mixer writes into
prompts), so the CLAP and the filter see the same language. The summary (steps, seconds, zero-shot top-1 on the
val split when the manifest has one) goes to stderr and into the checkpoint's `meta`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from flows.common import EXIT_DATA, EXIT_USAGE, config_options, fail

log = logging.getLogger("stemforge.clap")


@click.command("clap")
@click.option("--sources", "sources", required=True, type=click.Path(), help="Source-clip manifest directory (e.g. CORPUS/manifests/sources).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Checkpoint file to write (e.g. runs/demo/clap_mini.pt).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Training steps (default: clap.mini.steps).")
@click.option("--device", default=None, help="cpu, cuda, auto (default: clap.device).")
@config_options
def train_clap(cfg: Any, sources: str, out_path: str, steps: int | None, device: str | None) -> None:
    """Train the mini CLAP (contrastive audio-text model) on the train split of a source manifest."""
    from models.clap.train_mini import load_clips, train_mini_clap, zero_shot_top1
    from models.scoring import resolve_device
    from pipelines.mixing.prompts import phrase_for
    from storage.manifests import ManifestError

    mcfg = cfg.clap.mini if cfg.clap.mini.seed is not None else cfg.clap.mini.model_copy(update={"seed": cfg.run.seed})
    if steps is not None:
        mcfg = mcfg.model_copy(update={"steps": steps})
    try:
        dev = resolve_device(device or cfg.clap.device)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc), EXIT_USAGE)
    if not Path(sources).is_dir():
        fail(f"{sources}: source manifest directory not found", EXIT_DATA)
    try:
        clips, skipped = load_clips(sources, mcfg.sample_rate, ("train",))
        val, _ = load_clips(sources, mcfg.sample_rate, ("val",))
    except (ManifestError, ValueError, OSError) as exc:
        fail(f"{sources}: {exc}", EXIT_DATA)
    for msg in skipped[:10]:
        log.warning("skipped %s", msg)
    if len(skipped) > 10:
        log.warning("... %d more skipped", len(skipped) - 10)
    labels = sorted({c.label for c in clips})
    if len(labels) < 2:
        fail(f"{sources}: need train clips of at least 2 classes, found {labels or 'none'}", EXIT_DATA)
    phrases = {label: phrase_for(label) for label in labels}
    log.info("training mini CLAP on %d clips of %d classes for %d steps on %s", len(clips), len(labels), mcfg.steps, dev)
    result = train_mini_clap(clips, phrases, mcfg, device=dev)
    meta: dict[str, Any] = {"classes": labels, "phrases": phrases, "train_clips": len(clips), "steps": result.steps,
                            "train_seconds": round(result.seconds, 1), "final_loss": round(result.final_loss, 4), "sources": str(Path(sources).resolve())}
    val = [c for c in val if c.label in phrases]
    if val:
        meta["val_zero_shot_top1"] = round(zero_shot_top1(result.model, val, phrases), 4)
    result.model.cpu().save(out_path, meta)
    summary = ", ".join(f"{k}={meta[k]}" for k in ("train_clips", "steps", "train_seconds", "final_loss") ) + (f", val_zero_shot_top1={meta['val_zero_shot_top1']}" if "val_zero_shot_top1" in meta else "")
    click.echo(f"wrote {out_path} ({summary})", err=True)
