"""`stemforge mix`: render synthetic (mixture, target, residual, prompt) tuples into a shard store, and
`stemforge mix rerender`: render one stored tuple again from its spec and check it against the stored audio.

Logs and figures go to stderr; `mix_report.json` and `config.resolved.yaml` go next to the shards.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import click

from engine.run_config import with_overrides
from flows.common import EXIT_DATA, EXIT_FAILURE, EXIT_USAGE, config_options, fail, progress

log = logging.getLogger("stemforge.mix")
RECIPE_NAMES = ("triplets", "noisy_music", "noisy_speech", "noisy_sound", "promptsep", "opensep")


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--sources", type=click.Path(exists=True), default=None, help="source_clip manifest directory (clean pool).")
@click.option("--stems", "stems_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of multitrack songs (<song>/<stem>.wav) for the triplets recipe, instead of --sources.")
@click.option("--scenes", type=click.Path(exists=True), default=None,
              help="natural_scene manifest: in-the-wild pool for noisy_sound's clean+wild and wild+wild pairings.")
@click.option("--recipe", type=click.Choice(RECIPE_NAMES), default=None, help="Recipe (default: mixing.recipe).")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default=None,
              help="Manifest split the sources (and --scenes) are drawn from (default: mixing.split, train). Use the "
                   "split the shards are for: validation tuples from val clips, test tuples from test clips.")
@click.option("--num", type=click.IntRange(min=1), default=None,
              help="Number of tuples to render: exactly this many (a tuple whose excerpt turns out silent is drawn "
                   "again, up to mixing.max_redraws times); only tuples with unreadable sources are dropped, and listed.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Shard store directory (resumable).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed (default: run.seed).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Shard groups rendered at once: Ray tasks in flight (engine.backend: ray; inprocess runs one).")
@config_options
@click.pass_context
def mix(ctx: click.Context, cfg: Any, sources: str | None, stems_dir: str | None, scenes: str | None, recipe: str | None,
        split: str | None, num: int | None, out_dir: str | None, seed: int | None, workers: int) -> None:
    """Render N tuples with a recipe into a resumable WebDataset shard store.

    Same sources, config and seed give identical shards whatever --workers; re-running after a crash continues
    where it stopped (only groups not yet committed are rendered). Every tuple that could not be rendered is
    listed with its reason in mix_report.json.
    """
    if ctx.invoked_subcommand is not None:
        return
    missing = [name for name, value in (("--num", num), ("--out", out_dir)) if value is None]
    if sources is None and stems_dir is None:
        missing.append("--sources (or --stems)")
    if missing:
        fail(f"mix needs {', '.join(missing)}", EXIT_USAGE)
    from engine.ray_tasks import executor_session
    from engine.shard_jobs import StoreJob, mix_factory_spec, write_store_job
    from pipelines.mixing.pool import PoolError
    from storage.atomic import atomic_write_text
    from storage.configio import config_hash, write_resolved
    from storage.shards.store import StoreError

    cfg = with_overrides(cfg, {**({"mixing.recipe": recipe} if recipe is not None else {}),
                               **({"mixing.split": split} if split is not None else {}),
                               **({"run.seed": seed} if seed is not None else {})})
    assert num is not None and out_dir is not None
    spec = mix_factory_spec(cfg.mixing, cfg.run.seed, cfg.audio, sources=sources, stems_dir=stems_dir, scenes=scenes)
    try:
        spec.build().stage.setup()  # fail fast on an unusable pool, before any file is written or Ray starts
    except PoolError as exc:
        fail(str(exc), EXIT_DATA)
    meta = {"producer": "mix", "recipe": cfg.mixing.recipe, "split": cfg.mixing.split, "seed": cfg.run.seed,
            "config_hash": config_hash(cfg.mixing),
            "sample_rate": cfg.audio.sample_rate, "sources": str(Path(sources or stems_dir).resolve()),
            "scenes": str(Path(scenes).resolve()) if scenes else None}
    start = time.perf_counter()
    try:
        with executor_session(cfg) as executor, progress(num, f"mix {cfg.mixing.recipe}") as advance:
            result = write_store_job(StoreJob(out_dir, num, spec, cfg.shards, meta), executor=executor,
                                     workers=workers, progress=advance)
    except StoreError as exc:
        fail(str(exc), EXIT_USAGE)
    except PoolError as exc:
        fail(str(exc), EXIT_DATA)
    elapsed = time.perf_counter() - start
    manifest = result.manifest
    write_resolved(cfg, out_dir)
    audio_s = manifest.get("hours", 0.0) * 3600.0
    report = {"recipe": cfg.mixing.recipe, "split": cfg.mixing.split, "seed": cfg.run.seed, "requested": num, "written": manifest.get("num_samples"),
              "dropped": manifest.get("num_dropped"), "shards": manifest.get("num_shards"), "seconds": round(elapsed, 3),
              "tuples_per_s": round(num / elapsed, 2) if elapsed > 0 else None,
              "x_realtime": round(audio_s / elapsed, 1) if elapsed > 0 else None, "executor": cfg.engine.backend,
              "workers": workers, "groups_written": result.groups_written, "groups_total": result.groups_total,
              "num_errors": len(result.errors), "errors": result.errors}
    atomic_write_text(Path(out_dir) / "mix_report.json", json.dumps(report, indent=1))
    log.info("mix %s: %s tuples in %d shard(s), %.1f s (%.1f tuples/s, %.0fx real time), %s dropped -> %s",
             report["recipe"], report["written"], report["shards"] or 0, elapsed, report["tuples_per_s"] or 0,
             report["x_realtime"] or 0, report["dropped"], Path(out_dir).resolve())
    if result.errors:
        log.warning("mix: %d tuple(s) could not be rendered, first: %s: %s (all in mix_report.json)",
                    len(result.errors), result.errors[0]["key"], result.errors[0]["reason"])
    if manifest.get("num_samples", 0) == 0:
        fail("no tuple could be rendered (see the warnings above)", EXIT_DATA)


@mix.command("rerender")
@click.option("--shards", "store", required=True, type=click.Path(exists=True, file_okay=False), help="Shard store directory.")
@click.option("--key", required=True, help="Sample key, e.g. promptsep-000000-00000012.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory for mix/target/residual FLACs.")
@config_options
def rerender(cfg: Any, store: str, key: str, out_dir: str) -> None:
    """Render a stored tuple again from its spec and sources; exit 1 unless it equals the stored audio."""
    import numpy as np
    import pyarrow.dataset as pads

    from pipelines.mixing.job import rerender_sample
    from pipelines.mixing.render import RenderError, to_shard_sample
    from pipelines.mixing.spec import SpecError
    from storage.atomic import atomic_write_bytes
    from storage.audio import AudioError, decode_audio
    from storage.shards.index import ShardIndexError, read_index, read_member

    try:
        rows = read_index(store, filter=pads.field("key") == key).to_pylist()
    except ShardIndexError as exc:
        fail(str(exc), EXIT_DATA)
    if not rows:
        fail(f"{store}: no sample with key {key!r}", EXIT_DATA)
    row = rows[0]
    meta = json.loads(read_member(store, row, "json"))
    if "spec" not in meta:
        fail(f"{store}: sample {key} has no mix spec (not produced by `stemforge mix`)", EXIT_DATA)
    audio_cfg = cfg.audio.model_copy(update={"sample_rate": int(meta["spec"]["sample_rate"])})
    try:
        again = to_shard_sample(rerender_sample(meta["spec"], audio_cfg))
    except (SpecError, RenderError, AudioError) as exc:
        fail(f"{key}: cannot re-render: {exc}", EXIT_DATA)
    out = Path(out_dir)
    worst = 0.0
    for member in ("mix.flac", "target.flac", "residual.flac"):
        new = again.get(member)
        stored = read_member(store, row, member) if any(m.endswith("." + member) for m in row["members"]) else None
        if new is not None:
            atomic_write_bytes(out / f"{key}.{member}", new)
        if (new is None) != (stored is None):
            click.echo(f"{member}: present in {'stored' if stored else 'rerendered'} sample only", err=True)
            worst = float("inf")
            continue
        if new is not None and stored is not None:
            diff = float(np.max(np.abs(decode_audio(new)[0] - decode_audio(stored)[0])))
            worst = max(worst, diff)
            click.echo(f"{member}: max |rerendered - stored| = {diff:.3g}{' (identical bytes)' if new == stored else ''}", err=True)
    spans_equal = again["json"]["spans"] == meta.get("spans")
    if worst == 0.0 and spans_equal:
        click.echo(f"{key}: rerender equals the stored audio -> {out.resolve()}")
        return
    fail(f"{key}: rerender differs from the stored sample (max diff {worst:.3g}, spans equal: {spans_equal})", EXIT_FAILURE)
