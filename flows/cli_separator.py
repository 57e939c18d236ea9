"""`stemforge train separator`, `stemforge separate`, `stemforge evaluate`: thin wrappers over models.separator."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from flows.common import EXIT_DATA, EXIT_GATED, EXIT_USAGE, config_options, fail, log


@click.command("separator")
@click.option("--shards", "shards", multiple=True, required=True, type=click.Path(exists=True, file_okay=False), help="Training shard dir (repeatable).")
@click.option("--val", "val_dirs", multiple=True, type=click.Path(exists=True, file_okay=False), help="Validation shard dir(s); default: a 1-in-10 key-hash hold-out of --shards.")
@click.option("--preset", type=click.Choice(["tiny", "clapsep"]), default=None, help="Model preset (default: separator.preset).")
@click.option("--init", "init", type=click.Path(exists=True, dir_okay=False), default=None, help="Fine-tune from this checkpoint.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Best checkpoint path; OUT.run/ keeps last.pt for resuming.")
@click.option("--steps", type=int, default=None, help="Budget in optimiser steps (default: separator.max_steps).")
@click.option("--workers", type=int, default=1, show_default=True,
              help="Data-parallel training workers: >1 trains under Ray Train (DDP; engine.ray says where Ray runs; "
                   "separator.batch_size is the global batch).")
@click.option("--no-resume", is_flag=True, help="Start over even if OUT.run/last.pt exists.")
@config_options
def train_separator(cfg: Any, shards: tuple[str, ...], val_dirs: tuple[str, ...], preset: str | None, init: str | None,
                    out: str, steps: int | None, workers: int, no_resume: bool) -> None:
    """Train the query-conditioned separator from WebDataset shards."""
    from models.separator.atomic_copy import copy_atomic
    from models.separator.data import ShardDataError, ShardSource, read_samples
    from models.separator.train import train_separator as train

    scfg = cfg.separator
    updates: dict[str, Any] = {}
    if preset:
        updates["preset"] = preset
    if steps is not None:
        updates["max_steps"] = steps
    scfg = scfg.model_copy(update=updates)
    try:
        if val_dirs:
            stream = ShardSource(list(shards), scfg.sample_rate)
            val = read_samples(list(val_dirs), scfg.sample_rate, scfg.val_max)
        else:
            stream = ShardSource(list(shards), scfg.sample_rate, holdout=10)
            held = ShardSource(list(shards), scfg.sample_rate, holdout=10, only_holdout=True)
            val = [held[i] for i in range(min(len(held), scfg.val_max))]
        if not val:
            fail("no validation samples (give --val or more samples in --shards)", EXIT_DATA)
        run_dir = Path(out).with_suffix(Path(out).suffix + ".run")
        lineage = {"shards": stream.lineage(), "val": [str(v) for v in val_dirs]}
        if workers > 1:
            import shutil
            from functools import partial

            from engine.ray_runtime import ray_session
            from engine.ray_train import FitSpec, fit_separator, given, resolve_use_gpu

            if no_resume:
                shutil.rmtree(run_dir, ignore_errors=True)
            spec = FitSpec(separator=scfg, streams=partial(given, [(stream, 1.0)]), val=partial(given, val),
                           out_dir=str(run_dir), init=init, lineage=lineage)
            with ray_session(cfg.engine.ray):
                result = fit_separator(spec, num_workers=workers, use_gpu=resolve_use_gpu(cfg.engine, scfg.device),
                                       max_failures=cfg.engine.train_max_failures)
        else:
            result = train(scfg, [(stream, 1.0)], val, run_dir, init=init, resume=not no_resume, lineage=lineage)
    except ShardDataError as exc:
        fail(str(exc), EXIT_DATA)
        return
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
        return
    copy_atomic(result.best, Path(out))
    m = result.best_metrics
    click.echo(json.dumps({"checkpoint": str(out), "last": str(result.last), "epochs": result.epochs, "steps": result.steps,
                           "seconds": round(result.seconds, 1), "best": {k: m.get(k) for k in ("val_loss", "si_sdri", "sdri", "silence_sdr")}}))


def _inference_threads(cfg: Any) -> None:
    """CPU inference on `separator.threads` intra-op threads (as the run's steps do, engine/determinism.py): with a
    fixed thread count the same input and query give the same output bits in any process."""
    import torch

    if cfg.separator.threads > 0:
        torch.set_num_threads(cfg.separator.threads)


@click.command("separate")
@click.option("--separator", "ckpt", required=True, type=click.Path(exists=True, dir_okay=False), help="Separator checkpoint.")
@click.option("--audio", "audio", required=True, type=click.Path(dir_okay=False), help="Input audio file (any length).")
@click.option("--query", "query", default=None,
              help="What to extract: a label in any written form ('violin', 'Alarm_Clock') or free text ('a dog barking').")
@click.option("--negative", "negative", default=None, help="What to remove (alone, or together with --query).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output FLAC/WAV path for the estimate.")
@click.option("--residual", "residual", default=None, type=click.Path(dir_okay=False), help="Also write mixture - estimate here.")
@click.option("--gate-threshold", type=float, default=None, help="Override the presence-gate threshold (0 = gate off).")
@click.option("--no-gate", is_flag=True, help="Turn the presence gate off: always return the mask output.")
@click.option("--device", default=None, help="cpu / cuda (default: separator.device).")
@config_options
def separate(cfg: Any, ckpt: str, audio: str, query: str | None, negative: str | None, out: str, residual: str | None,
             gate_threshold: float | None, no_gate: bool, device: str | None) -> None:
    """Separate one audio file with a text query.

    A label-like query (a class name in any case, with `_`, `-` or spaces) is asked as its label's phrase, the
    form the separator was trained on (models/labels.py: canonical_query); free text is asked as written. When the
    presence gate judges the queried sound absent from the whole file, the file written is silence, stderr says so
    (query, presence, threshold) and the exit code is 4; `--no-gate` returns the mask output instead."""
    from models.separator.checkpoint import CheckpointError
    from models.separator.infer import Separator
    from storage.audio import AudioConfig, AudioError, load_audio, write_audio

    if not query and not negative:
        fail("give --query and/or --negative", EXIT_USAGE)
    if no_gate and gate_threshold is not None:
        fail("give --no-gate or --gate-threshold, not both", EXIT_USAGE)
    try:
        _inference_threads(cfg)
        sep = Separator.load(ckpt, device or cfg.separator.device, gate_threshold=0.0 if no_gate else gate_threshold)
    except CheckpointError as exc:
        fail(str(exc), EXIT_USAGE)
        return
    sr = cfg.audio.sample_rate
    try:
        mix = load_audio(audio, AudioConfig(**{**cfg.audio.model_dump(), "allow_silent": True}))
    except AudioError as exc:
        fail(str(exc), EXIT_DATA)
        return
    try:
        res = sep.separate_detailed([mix], sr, [query], [negative])
    except ValueError as exc:  # a query the text encoder cannot encode (no letters or digits)
        fail(f"query: {exc}", EXIT_USAGE)
        return
    est, presence, closed = res.estimates[0], float(res.presence[0]), float(res.closed[0])
    write_audio(out, est, sr)
    if residual:
        write_audio(residual, mix - est, sr)
    asked = _asked(query, negative, res.texts[0])
    click.echo(json.dumps({"out": out, "seconds": round(len(mix) / sr, 3), "presence": round(presence, 4),
                           "gate_threshold": sep.gate_threshold, "gated_share": round(closed, 4),
                           "query_text": res.texts[0][0], "negative_text": res.texts[0][1]}))
    if closed >= 1.0:
        click.echo(f"warning: the presence gate silenced {asked}: presence {presence:.3f} < threshold "
                   f"{sep.gate_threshold:.2f}, so {out} is silence. The separator judges the sound absent; ask in "
                   f"other words, or pass --no-gate for the mask output (exit code {EXIT_GATED}).", err=True)
        sys.exit(EXIT_GATED)
    if closed > 0:
        click.echo(f"warning: the presence gate silenced {100 * closed:.0f}% of the windows of {asked} (presence below "
                   f"{sep.gate_threshold:.2f} there; mean {presence:.3f}): those parts of {out} are silence; "
                   f"--no-gate keeps them.", err=True)


def _asked(query: str | None, negative: str | None, texts: tuple[str | None, str | None]) -> str:
    """How a query is named in messages: as the user wrote it, with the text the encoder saw where they differ."""
    parts = []
    for name, given, seen in (("query", query, texts[0]), ("negative", negative, texts[1])):
        if given:
            parts.append(f"{name} {given!r}" + (f" (asked as {seen!r})" if seen != given else ""))
    return " with ".join(parts)


@click.command("evaluate")
@click.option("--separator", "ckpt", required=True, type=click.Path(exists=True, dir_okay=False), help="Separator checkpoint.")
@click.option("--test", "tests", multiple=True, required=True, type=click.Path(exists=True), help="Shard dir(s), or a demo corpus / scene manifest dir (its --split scenes with audit stems).")
@click.option("--split", default="test", show_default=True, help="Natural-scene split to evaluate.")
@click.option("--max-items", type=int, default=None, help="Evaluate at most this many shard tuples (the run uses engine.eval_max_items).")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Write the report as JSON here.")
@click.option("--gate-threshold", type=float, default=None, help="Override the presence-gate threshold (0 = gate off).")
@click.option("--no-absent", is_flag=True, help="Skip the extra absent-class queries on shard tuples.")
@click.option("--device", default=None, help="cpu / cuda (default: separator.device).")
@config_options
def evaluate(cfg: Any, ckpt: str, tests: tuple[str, ...], split: str, max_items: int | None, json_out: str | None,
             gate_threshold: float | None, no_absent: bool, device: str | None) -> None:
    """Evaluate a separator the way the run does (engine/evaluation.py: one code path, one query policy): SDR, SDRi,
    SI-SDRi overall and per class with 95% intervals, the all-zero-estimate baseline, the share of silent answers,
    and Silence-SDR for absent-class queries."""
    from engine.evaluation import evaluate_separator, format_report, natural_manifests
    from models.separator.checkpoint import CheckpointError
    from models.separator.data import ShardDataError
    from models.separator.infer import Separator
    from storage.atomic import atomic_write_text

    try:
        _inference_threads(cfg)
        sep = Separator.load(ckpt, device or cfg.separator.device, gate_threshold=gate_threshold)
    except CheckpointError as exc:
        fail(str(exc), EXIT_USAGE)
        return
    shard_dirs: list[Path] = []
    natural: list[tuple[str, str]] = []
    try:
        for t in tests:
            p = Path(t)
            if (p / "manifests").is_dir() or any(p.glob("part-*.parquet")):
                natural.append(natural_manifests(p))
            else:
                shard_dirs.append(p)
        report = evaluate_separator(sep, shard_dirs, natural, split, seed=cfg.run.seed, max_synthetic_items=max_items,
                                    absent_queries=not no_absent)
    except (ShardDataError, FileNotFoundError, ValueError) as exc:
        fail(str(exc), EXIT_DATA)
        return
    click.echo(format_report(report))
    if json_out:
        atomic_write_text(json_out, json.dumps(report, indent=2))
        log.info("report written to %s", json_out)
