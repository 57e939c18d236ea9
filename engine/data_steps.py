"""Run steps that produce data: the demo corpus and the synthetic (mixture, target, residual, prompt) shards.

Both fan their work out through the engine (`engine/ray_tasks.py`): demo-corpus units as Ray tasks, synthetic
stores as one Ray task per shard group (`engine/shard_jobs.py`); `engine.backend: inprocess` runs the same
functions in this process and writes the same bytes.
"""
from __future__ import annotations

import json
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


def import_dataset(layout: str, root: str | Path, out_dir: str | Path, cfg: Any, ontology: str | None = None,
                   limit: int | None = None, import_cfg: Any = None, progress: Callable[[int], None] | None = None) -> Any:
    """Import a dataset root into manifests under `out_dir` (the code of `stemforge corpus import` and of a run given
    `corpus.data.root`): every clip validated, deduplicated by content, bad files quarantined with their reason.
    Returns the `ImportReport`; raises `LayoutError` / `OntologyError` naming the folder or file it expected."""
    from pipelines.corpus.importers import import_reader
    from pipelines.corpus.layouts import open_layout

    icfg = import_cfg or cfg.corpus.importer
    reader = open_layout(layout, root, icfg, ontology, cfg.run.seed)
    return import_reader(reader, out_dir, root=root, audio_cfg=cfg.audio, import_cfg=icfg, seed=cfg.run.seed,
                         limit=limit, progress=progress)


def _manifest_dir(corpus_dir: Path, name: str) -> str | None:
    d = corpus_dir / "manifests" / name
    return str(d) if d.is_dir() and any(d.glob("*.parquet")) else None


def user_corpus(ws: Workspace, cfg: Any, source: Any, where: str, import_cfg: Any = None) -> tuple[Path, dict[str, Any]]:
    """(corpus folder, import summary) of a `corpus.data` / `corpus.eval` source: an imported folder as it is, or
    `root` imported into the run directory's `<where>/` (resumable: a re-import dedupes what is there)."""
    from engine.workspace import RunError
    from pipelines.corpus.importers import LayoutError
    from pipelines.corpus.ontology import OntologyError

    if source.path is not None:
        folder = Path(source.path).expanduser().absolute()
        if not (folder / "manifests").is_dir():
            raise RunError(f"{folder}: not an imported corpus (expected {folder / 'manifests'}/ written by "
                           f"`stemforge corpus import --out {folder}`)")
        report = folder / "import_report.json"
        return folder, (json.loads(report.read_text()) if report.is_file() else {})
    folder = ws.path(where)
    try:
        rep = import_dataset(source.layout, source.root, folder, cfg, source.ontology, source.limit, import_cfg)
    except (LayoutError, OntologyError) as exc:
        raise RunError(f"corpus.{'data' if where == 'corpus' else 'eval'}: {exc}") from exc
    if rep.imported == 0 and rep.duplicate == 0:
        raise RunError(f"corpus.{'data' if where == 'corpus' else 'eval'}: no usable clip under {source.root} "
                       f"({rep.quarantined} quarantined; see {folder / 'import_report.json'})")
    return folder, rep.to_dict()


def step_corpus(ws: Workspace, cfg: Any) -> dict[str, Any]:
    """The run's corpus: the embedded demo generated under `corpus/`, or the user's imported manifests
    (`corpus.kind: manifests`). Returns the manifest folders every later step reads: `sources` (clean clips),
    `scenes` (natural scenes to pseudo-label), `audit` (their stems, or None), and `eval_scenes` / `eval_audit`
    (the natural evaluation set: `corpus.eval`, else the data corpus's own scenes)."""
    from engine.workspace import RunError

    if cfg.corpus.kind == "demo":
        out = ws.path("corpus")
        with executor_session(cfg) as executor:
            summary = build_demo_corpus(out, cfg.corpus.demo, cfg.run.seed, cfg.audio.sample_rate, executor=executor)
        man = out / "manifests"
        return {"kind": "demo", "dir": str(out), "sources": str(man / "sources"), "scenes": str(man / "scenes"),
                "audit": str(man / "audit"), "eval_scenes": str(man / "scenes"), "eval_audit": str(man / "audit"),
                "summary": {k: summary[k] for k in summary if k in ("counts", "hours")}}
    folder, data_report = user_corpus(ws, cfg, cfg.corpus.data, "corpus")
    sources = _manifest_dir(folder, "sources")
    if sources is None:
        raise RunError(f"{folder}: no clean source clips (manifests/sources is empty): synthetic mixtures need "
                       f"single-label clips")
    out = {"kind": "manifests", "dir": str(folder), "sources": sources, "scenes": _manifest_dir(folder, "scenes"),
           "audit": _manifest_dir(folder, "audit"), "summary": {"data": data_report.get("manifest_totals", {})}}
    if cfg.corpus.eval is not None:
        # an evaluation set the run imports itself is split half validation (stop rule), half test (report)
        icfg = cfg.corpus.importer.model_copy(update={"val_fraction": 0.5, "test_fraction": 0.5, "stems_split": "hash"})
        efolder, eval_report = user_corpus(ws, cfg, cfg.corpus.eval, "eval", icfg)
        out["eval_dir"] = str(efolder)
        out["eval_scenes"], out["eval_audit"] = _manifest_dir(efolder, "scenes"), _manifest_dir(efolder, "audit")
        out["summary"]["eval"] = eval_report.get("manifest_totals", {})
        if out["eval_scenes"] is None or out["eval_audit"] is None:
            raise RunError(f"corpus.eval {efolder}: no mixtures with stems (expected manifests/scenes and "
                           f"manifests/audit, written by `stemforge corpus import --layout stems`)")
    else:
        out["eval_scenes"], out["eval_audit"] = out["scenes"], out["audit"]
    return out


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
