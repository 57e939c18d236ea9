"""Run steps that produce data: the demo corpus and the synthetic (mixture, target, residual, prompt) shards."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from engine.workspace import Workspace
from storage.configio import config_hash

log = logging.getLogger("stemforge.run")

SPLIT_SEED_OFFSET = {"train": 0, "val": 1000, "test": 2000}


def step_corpus(ws: Workspace, cfg: Any) -> dict[str, Any]:
    """Generate the embedded demo corpus under `corpus/` (resumable inside generate_demo)."""
    from pipelines.corpus.demo import generate_demo

    out = ws.path("corpus")
    summary = generate_demo(out, cfg.corpus.demo, seed=cfg.run.seed, sample_rate=cfg.audio.sample_rate)
    return {"dir": str(out), "sources": str(out / "manifests" / "sources"), "scenes": str(out / "manifests" / "scenes"),
            "audit": str(out / "manifests" / "audit"), "summary": {k: summary[k] for k in summary if k in ("counts", "hours")}}


def step_synthetic(ws: Workspace, cfg: Any, sources: str) -> dict[str, Any]:
    """Render synthetic tuples per source split into shard stores `synthetic/<split>/` (resumable stores)."""
    from pipelines.mixing.job import MixStage
    from storage.shards.store import write_store

    dirs: dict[str, str] = {}
    counts: dict[str, int] = {}
    for split, num in cfg.engine.synthetic_counts.items():
        mcfg = cfg.mixing.model_copy(update={"split": split})
        seed = cfg.run.seed + SPLIT_SEED_OFFSET.get(split, 3000)
        stage = MixStage(mcfg, seed=seed, sources=sources, audio_cfg=cfg.audio)
        errors: list[str] = []

        def factory(i: int, stage: MixStage = stage, errors: list[str] = errors) -> dict[str, Any] | None:
            out = stage({"index": np.asarray([i], dtype=np.int64)})
            if out["sample"][0] is None:
                errors.append(str(out["error"][0]))
            return out["sample"][0]

        out_dir = ws.path("synthetic", split)
        manifest = write_store(out_dir, factory, int(num), cfg.shards.model_copy(update={"prefix": f"syn-{split}"}),
                               meta={"split": split, "seed": seed, "mixing": config_hash(mcfg)})
        dirs[split] = str(out_dir)
        counts[split] = int(manifest["num_samples"])
        if errors:
            log.warning("synthetic %s: %d tuple(s) skipped, first: %s", split, len(errors), errors[0])
    return {"dirs": dirs, "counts": counts}


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


def shard_dir_ok(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and any(p.glob("*.tar"))
