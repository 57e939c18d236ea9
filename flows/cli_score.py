"""`stemforge score --scorer clap|judge|pc --shards DIR --out TABLE`: score every shard sample into a Parquet table.

One row per sample key. Columns: `key`, `shard`, the scorer's score columns (clap: `clap_target`,
`clap_residual`; judge: `judge_overall|recall|precision|faithfulness`; pc: `pc_target`, `pc_mix`) and its identity
(`<scorer>_backend`, `<scorer>_checkpoint_hash`, `<scorer>_version`). If TABLE exists, the new columns are joined
onto it by key (a re-run of the same scorer replaces its columns), so running all three scorers builds one table.
The scoring runs through the engine's executor (`engine.backend`) with the engine's own scoring stages (one task per
shard; models built in the workers from the scorer's config section; `--checkpoint` overrides its checkpoint,
`--device` the engine's device), so a score here equals the same score in the filter step.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
import numpy as np

from flows.common import EXIT_DATA, EXIT_USAGE, config_options, fail

log = logging.getLogger("stemforge.score")

SCORERS = ("clap", "judge", "pc")
#: scorer -> (stage spec target, extra stage kwargs, score columns)
STAGES = {
    "clap": ("pipelines.filters.clap:ClapScoring", {}, ["clap_target", "clap_residual"]),
    "judge": ("pipelines.filters.judge:JudgeScoring", {},
              [f"judge_{k}" for k in ("overall", "recall", "precision", "faithfulness")]),
    "pc": ("pipelines.filters.pc:PCScoring", {"columns": {"pc_target": "target", "pc_mix": "mixture"}}, ["pc_target", "pc_mix"]),
}


def score_specs(name: str, cfg: Any, checkpoint: str | None) -> list[Any]:
    """The engine's own stages: shard samples -> `<scorer>` scores (+ its identity columns), as stage specs."""
    from engine.executors import StageSpec

    section = getattr(cfg, name)
    if checkpoint is not None:
        section = section.model_copy(update={"checkpoint": checkpoint})
    target, extra, _ = STAGES[name]
    return [StageSpec.of("pipelines.filters.scoring:LoadShardSamples"),
            StageSpec.of(target, section=section, info_columns=True, **extra)]


def shard_tasks(urls: list[str], limit: int | None) -> list[Any]:
    """One task per shard (`shard-NNNNN`, in store order); `limit` cuts the first N samples over all shards."""
    from engine.executors import Task

    left = limit
    tasks = []
    for i, url in enumerate(urls):
        n = -1
        if left is not None:
            if left <= 0:
                break
            n = left
            left -= min(left, _count_samples(url))
        tasks.append(Task(f"shard-{i:05d}", {"url": [url], "limit": [n]}))
    return tasks


def _count_samples(url: str) -> int:
    import tarfile

    with tarfile.open(url) as tar:
        return len({name.split(".", 1)[0] for name in tar.getnames()})


def merge_into_table(out: Path, new: Any) -> Any:
    """Join `new` (has `key`) onto an existing table at `out` by key; columns of `new` replace same-named ones."""
    import pyarrow.parquet as pq

    if not out.exists():
        return new
    try:
        old = pq.read_table(out)
    except Exception as exc:
        raise ValueError(f"{out}: existing table is not readable Parquet: {exc}") from exc
    if "key" not in old.column_names:
        raise ValueError(f"{out}: existing table has no 'key' column; refusing to merge")
    keep = [c for c in old.column_names if c == "key" or c not in new.column_names]
    return old.select(keep).join(new, keys="key", join_type="full outer").sort_by("key").combine_chunks() if keep != ["key"] else new


@click.command("score")
@click.option("--scorer", "scorer_name", required=True, type=click.Choice(SCORERS), help="Which scorer: clap, judge or pc.")
@click.option("--shards", "shards", required=True, type=click.Path(), help="Shard store directory (or one .tar shard).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="Parquet table to write or extend (joined by key).")
@click.option("--checkpoint", default=None, help="Override <scorer>.checkpoint.")
@click.option("--device", default=None, type=click.Choice(["cpu", "cuda", "auto"]), help="Override engine.device.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score only the first N samples.")
@config_options
def score(cfg: Any, scorer_name: str, shards: str, out_path: str, checkpoint: str | None, device: str | None, limit: int | None) -> None:
    """Score shard samples with one scorer and write/extend a Parquet table keyed by sample key.

    Runs the engine's scoring stages through the configured executor (`engine.backend`); the judge is asked with
    each sample's `positive_text`, exactly as in the filter step."""
    import shutil
    import tempfile

    import pyarrow.parquet as pq

    from engine.executors import ExecutorError, StageSetupError, build_executor
    from engine.resources import plan_resources
    from engine.sinks import TableSink
    from pipelines.filters.table import read_table_parts
    from storage.atomic import atomic_path
    from storage.shards.reader import resolve_urls

    if not Path(shards).exists():
        fail(f"{shards}: shard store not found", EXIT_DATA)
    try:
        urls = resolve_urls(shards)
    except (OSError, ValueError) as exc:
        fail(f"{shards}: {exc}", EXIT_DATA)
    if not urls:
        fail(f"{shards}: no shards found", EXIT_DATA)
    if device is not None:
        cfg = cfg.model_copy(update={"engine": cfg.engine.model_copy(update={"device": device})})
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    parts = Path(tempfile.mkdtemp(prefix=f".{out.name}.parts-", dir=out.parent))
    sink = TableSink(str(parts))
    try:
        try:
            with build_executor(cfg.engine) as executor:
                specs = plan_resources(cfg, score_specs(scorer_name, cfg, checkpoint), executor.gpus_available())
                summary = executor.run(specs, shard_tasks(urls, limit), sink)
        except StageSetupError as exc:
            # a corrupt, foreign or unsafe checkpoint (models/checkpoint_io.py CheckpointError) is bad input data;
            # a missing checkpoint setting or an unavailable backend is a usage problem
            fail(exc.message if exc.kind == "CheckpointError" else f"{scorer_name}: {exc.message}",
                 EXIT_DATA if exc.kind == "CheckpointError" else EXIT_USAGE)
        except ExecutorError as exc:
            fail(str(exc), EXIT_DATA)
        if summary.quarantined:
            first = sink.quarantine_rows()[0]
            fail(f"{summary.quarantined} shard(s)/sample(s) failed, first: {first['error_kind']}: {first['message']}", EXIT_DATA)
        table = read_table_parts(sink.table_dir)
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    if table.num_rows == 0:
        fail(f"{shards}: shards hold no samples", EXIT_DATA)
    columns = STAGES[scorer_name][2]
    table = table.select(["key", "shard", *columns, *(f"{scorer_name}_{k}" for k in ("backend", "checkpoint_hash", "version"))])
    try:
        table = merge_into_table(out, table)
    except ValueError as exc:
        fail(str(exc), EXIT_DATA)
    with atomic_path(out, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    data = {c: np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float64) for c in columns}
    summary_text = ", ".join(f"{c} median {np.nanmedian(v):.3f}" for c, v in data.items() if np.isfinite(v).any())
    click.echo(f"wrote {out} ({table.num_rows} samples; {summary_text})", err=True)
