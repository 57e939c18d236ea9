"""Run steps that produce data: the demo corpus and the synthetic (mixture, target, residual, prompt) shards.

Both fan their work out through the engine (`engine/ray_tasks.py`): demo-corpus units as Ray tasks, synthetic
stores as one Ray task per shard group (`engine/shard_jobs.py`); `engine.backend: inprocess` runs the same
functions in this process and writes the same bytes.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

from engine.ray_tasks import Executor, executor_session, run_tasks
from engine.workspace import Workspace
from storage.configio import config_hash

log = logging.getLogger("stemforge.run")

SPLIT_SEED_OFFSET = {"train": 0, "val": 1000, "test": 2000}
DEMO_UNITS_PER_TASK = 8  # a unit renders in ~10-50 ms: batch a few per task so Ray's per-task overhead stays small


def _render_demo_chunk(ctx: Any, units: list[Any]) -> list[dict[str, Any]]:
    """Ray task body: render a few demo units (pure, writes only their own files atomically)."""
    from pipelines.corpus.demo import render_unit

    return [render_unit(ctx, unit) for unit in units]


def demo_runner(executor: Executor, workers: int | None = None, max_retries: int = 2):
    """A `pipelines.corpus.demo.UnitRunner` that renders the units as Ray tasks (or in-process, same bytes)."""

    def run(units: list[Any], ctx: Any, on_result: Callable[[int, dict[str, Any]], None]) -> None:
        size = DEMO_UNITS_PER_TASK
        chunks = [units[i:i + size] for i in range(0, len(units), size)]

        def chunk_done(c: int, results: list[dict[str, Any]]) -> None:
            for k, result in enumerate(results):
                on_result(c * size + k, result)

        run_tasks(_render_demo_chunk, chunks, shared=ctx, executor=executor, workers=workers,
                  max_retries=max_retries, name="demo_units", on_result=chunk_done)

    return run


def build_demo_corpus(out_dir: str | Path, demo_cfg: Any, seed: int, sample_rate: int, *, executor: Executor,
                      workers: int | None = None, progress: Callable[[int], None] | None = None,
                      extra_summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """`pipelines.corpus.demo.generate_demo` with its units fanned out by the engine; returns the corpus summary.

    `workers`: units' tasks in flight (None: `demo_cfg.workers`, where 0 = as many as Ray schedules)."""
    from pipelines.corpus.demo import generate_demo

    if workers is None:
        workers = demo_cfg.workers or None
    return generate_demo(out_dir, demo_cfg, seed, sample_rate, progress=progress, extra_summary=extra_summary,
                         runner=demo_runner(executor, workers))


def step_corpus(ws: Workspace, cfg: Any) -> dict[str, Any]:
    """Generate the embedded demo corpus under `corpus/` (resumable inside generate_demo)."""
    out = ws.path("corpus")
    with executor_session(cfg) as executor:
        summary = build_demo_corpus(out, cfg.corpus.demo, cfg.run.seed, cfg.audio.sample_rate, executor=executor)
    return {"dir": str(out), "sources": str(out / "manifests" / "sources"), "scenes": str(out / "manifests" / "scenes"),
            "audit": str(out / "manifests" / "audit"), "summary": {k: summary[k] for k in summary if k in ("counts", "hours")}}


def synthetic_jobs(ws: Workspace, cfg: Any, sources: str) -> list[Any]:
    """One shard-store job per split of `engine.synthetic_counts` (`synthetic/<split>/`, prefix `syn-<split>`)."""
    from engine.shard_jobs import StoreJob, mix_factory_spec

    jobs = []
    for split, num in cfg.engine.synthetic_counts.items():
        mcfg = cfg.mixing.model_copy(update={"split": split})
        seed = cfg.run.seed + SPLIT_SEED_OFFSET.get(split, 3000)
        jobs.append(StoreJob(str(ws.path("synthetic", split)), int(num), mix_factory_spec(mcfg, seed, cfg.audio, sources=sources),
                             cfg.shards.model_copy(update={"prefix": f"syn-{split}"}),
                             {"split": split, "seed": seed, "mixing": config_hash(mcfg)}))
    return jobs


def step_synthetic(ws: Workspace, cfg: Any, sources: str) -> dict[str, Any]:
    """Render synthetic tuples per source split into shard stores `synthetic/<split>/`: the pending shard groups of
    all splits are one wave of Ray tasks (resumable: committed groups are skipped)."""
    from engine.shard_jobs import write_stores

    jobs = synthetic_jobs(ws, cfg, sources)
    with executor_session(cfg) as executor:
        results = write_stores(jobs, executor=executor)
    dirs: dict[str, str] = {}
    counts: dict[str, int] = {}
    for split, job, result in zip(cfg.engine.synthetic_counts, jobs, results):
        dirs[split] = job.out_dir
        counts[split] = int(result.manifest["num_samples"])
        if result.errors:
            log.warning("synthetic %s: %d tuple(s) skipped, first: %s: %s", split, len(result.errors),
                        result.errors[0]["key"], result.errors[0]["reason"])
    return {"dirs": dirs, "counts": counts, "errors": {split: len(r.errors) for split, r in zip(dirs, results)}}


def scene_rows(scenes_manifest: str, splits: list[str]) -> list[dict[str, Any]]:
    """Natural scene rows of the given splits, sorted by id (a stable order makes executor batch keys stable)."""
    from storage.manifests import iter_rows

    rows = [r for r in iter_rows(scenes_manifest, expect="natural_scene") if r["split"] in splits]
    return sorted(rows, key=lambda r: r["clip_id"])


def audit_stems(audit_manifest: str) -> dict[str, dict[str, str]]:
    """scene_id -> {label: stem path} (ground truth; used only for evaluation and filter pay-off analysis)."""
    from storage.manifests import iter_rows

    out: dict[str, dict[str, str]] = {}
    for r in iter_rows(audit_manifest, expect="audit_stem"):
        out.setdefault(r["scene_id"], {})[r["label"]] = r["path"]
    return out
