"""`stemforge score --scorer clap|judge|pc --shards DIR --out TABLE`: score every shard sample into a Parquet table.

One row per sample key. Columns: `key`, `shard`, the scorer's score columns (clap: `clap_target`,
`clap_residual`; judge: `judge_overall|recall|precision|faithfulness`; pc: `pc_target`, `pc_mix`) and its identity
(`<scorer>_backend`, `<scorer>_checkpoint_hash`, `<scorer>_version`). If TABLE exists, the new columns are joined
onto it by key (a re-run of the same scorer replaces its columns), so running all three scorers builds one table.
Scorers are built lazily from their config sections (`clap`, `judge`, `pc`); `--checkpoint` overrides theirs.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import click
import numpy as np

from flows.common import EXIT_DATA, EXIT_USAGE, config_options, fail, track

log = logging.getLogger("stemforge.score")

SCORERS = ("clap", "judge", "pc")


def build_scorer(name: str, cfg: Any, checkpoint: str | None, device: str | None) -> tuple[Any, int]:
    """(scorer, batch size) for `name`, built from its config section; heavy modules are imported here only."""
    section = getattr(cfg, name)
    updates = {k: v for k, v in (("checkpoint", checkpoint), ("device", device)) if v is not None}
    section = section.model_copy(update=updates) if updates else section
    if name == "clap":
        from models.clap.base import build_clap

        return build_clap(section), section.batch_size
    if name == "judge":
        from models.judge import build_judge

        return build_judge(section), section.batch_size
    from models.aesthetics import build_pc

    return build_pc(section), section.batch_size


def score_batch(name: str, scorer: Any, samples: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Score columns for a list of decoded shard samples (equal-length groups, NaN where undefined)."""
    from models.scoring import equal_length_groups

    n = len(samples)
    meta = [s["json"] for s in samples]
    rates = [int(m["sample_rate"]) for m in meta]
    lengths = [len(s["target"]) for s in samples]

    def run(columns: list[str], keep: list[bool], fn: Callable[[list[int], int], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        out = {c: np.full(n, np.nan, dtype=np.float64) for c in columns}
        for (_, sr), idx in equal_length_groups(lengths, rates, keep).items():
            for c, v in fn(idx, sr).items():
                out[c][idx] = np.asarray(v, dtype=np.float64)
        return out

    def stack(key: str, idx: list[int]) -> np.ndarray:
        return np.stack([np.asarray(samples[i][key], dtype=np.float32) for i in idx])

    if name == "clap":
        texts = [m.get("positive_text") for m in meta]
        return run(["clap_target", "clap_residual"], [t is not None for t in texts], lambda idx, sr: {
            "clap_target": scorer.score([texts[i] for i in idx], stack("target", idx), sr),
            "clap_residual": scorer.score([texts[i] for i in idx], stack("residual", idx), sr)})
    if name == "judge":
        prompts = [m.get("prompt") or "" for m in meta]

        def judge(idx: list[int], sr: int) -> dict[str, np.ndarray]:
            res = scorer.score(stack("mix", idx), stack("target", idx), [prompts[i] for i in idx], sr)
            return {f"judge_{k}": v for k, v in res.items()}

        return run([f"judge_{k}" for k in ("overall", "recall", "precision", "faithfulness")], [True] * n, judge)
    return run(["pc_target", "pc_mix"], [True] * n, lambda idx, sr: {
        "pc_target": scorer.score(stack("target", idx), sr), "pc_mix": scorer.score(stack("mix", idx), sr)})


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
@click.option("--device", default=None, help="Override <scorer>.device (cpu, cuda, auto).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Score only the first N samples.")
@config_options
def score(cfg: Any, scorer_name: str, shards: str, out_path: str, checkpoint: str | None, device: str | None, limit: int | None) -> None:
    """Score shard samples with one scorer and write/extend a Parquet table keyed by sample key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from models.clap.checkpoint import CheckpointError
    from models.scoring import info_columns
    from storage.atomic import atomic_path
    from storage.shards.reader import ShardReadError, iter_samples, resolve_urls

    if not Path(shards).exists():
        fail(f"{shards}: shard store not found", EXIT_DATA)
    try:
        urls = resolve_urls(shards)
    except (OSError, ValueError) as exc:
        fail(f"{shards}: {exc}", EXIT_DATA)
    if not urls:
        fail(f"{shards}: no shards found", EXIT_DATA)
    try:
        scorer, batch_size = build_scorer(scorer_name, cfg, checkpoint, device)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        # a corrupt or foreign checkpoint (each model family has its own CheckpointError) is bad input data;
        # a missing checkpoint setting or an unavailable backend is a usage problem
        if isinstance(exc, CheckpointError) or type(exc).__name__ == "CheckpointError":
            fail(str(exc), EXIT_DATA)
        fail(f"{scorer_name}: {exc}", EXIT_USAGE)
    keys: list[str] = []
    shard_col: list[str] = []
    columns: dict[str, list[np.ndarray]] = {}
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        for c, v in score_batch(scorer_name, scorer, batch).items():
            columns.setdefault(c, []).append(v)
        batch.clear()

    try:
        for i, sample in enumerate(track(iter_samples(urls), None, f"score {scorer_name}")):
            if limit is not None and i >= limit:
                break
            keys.append(str(sample["__key__"]))
            shard_col.append(Path(str(sample.get("__url__", ""))).name)
            batch.append(sample)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    except ShardReadError as exc:
        fail(str(exc), EXIT_DATA)
    if not keys:
        fail(f"{shards}: shards hold no samples", EXIT_DATA)
    data: dict[str, Any] = {"key": keys, "shard": shard_col}
    data.update({c: np.concatenate(v) for c, v in columns.items()})
    data.update(info_columns(scorer_name, scorer.info(), len(keys)))
    table = pa.table(data)
    out = Path(out_path)
    try:
        table = merge_into_table(out, table)
    except ValueError as exc:
        fail(str(exc), EXIT_DATA)
    with atomic_path(out, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    summary = ", ".join(f"{c} median {np.nanmedian(data[c]):.3f}" for c in columns if np.isfinite(data[c]).any())
    click.echo(f"wrote {out} ({len(keys)} samples; {summary})", err=True)
