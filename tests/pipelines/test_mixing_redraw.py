"""Silent excerpts: mixing cuts event excerpts inside a clip's recorded active span, and a tuple whose excerpt still
turns out silent is redrawn (same key, deterministic), so a job delivers exactly the tuples it was asked for.

The pool is ESC-50-like: 5-s clips holding a 0.4-s tone somewhere and digital silence elsewhere, imported through
the real importer (which records the active span)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from pipelines.corpus.config import ImportConfig
from pipelines.corpus.importers import run_import
from pipelines.corpus.layouts import open_layout
from pipelines.mixing.config import MixingConfig
from pipelines.mixing.job import MixStage
from pipelines.mixing.pool import SourceEntry, SourcePool
from pipelines.mixing.recipes.base import place_event, place_full, start_range
from storage import manifests as mf
from storage.audio import AudioConfig

SR = 16000
CLASSES = ("dog", "car_horn", "church_bells", "rooster")


def padded_corpus(tmp: Path, per_class: int = 3, split_dirs: bool = False, tone_s: float = 0.4) -> Path:
    """Import folder-per-class padded clips (a `tone_s` tone in 5 s of silence); returns the sources manifest."""
    root = tmp / "padded"
    rng = np.random.default_rng(0)
    for c, label in enumerate(CLASSES):
        for j in range(per_class):
            x = np.zeros(5 * SR, dtype=np.float32)
            at = int(rng.uniform(0.2, 4.9 - tone_s) * SR)
            t = np.arange(int(tone_s * SR)) / SR
            x[at:at + t.size] = 0.3 * np.sin(2 * np.pi * (300 + 97 * c + 13 * j) * t)
            split = ("train", "val", "test")[j % 3]
            path = root / split / label / f"{j}.wav" if split_dirs else root / label / f"{j}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, x, SR, subtype="FLOAT")
    cfg = ImportConfig(val_fraction=0.0, test_fraction=0.0)  # without split folders: every clip in train
    reader = open_layout("folders", root, cfg)
    run_import(reader.candidates(), tmp / "corpus", layout="folders", dataset=reader.dataset, root=root,
               audio_cfg=AudioConfig(), import_cfg=cfg)
    return tmp / "corpus" / "manifests" / "sources"


def without_active(manifest: Path, out: Path) -> Path:
    """The same clips in a manifest that records no active span (as written before the columns existed)."""
    rows = [dict(r, active_start_s=None, active_end_s=None) for r in mf.iter_rows(manifest)]
    mf.write_manifest(out, mf.SOURCE_CLIP_SCHEMA, rows)
    return out


def _stage(sources: Path, **cfg) -> MixStage:
    mcfg = MixingConfig(recipe="promptsep", duration_s=2.0, **cfg)
    return MixStage(mcfg, seed=5, sources=str(sources), audio_cfg=AudioConfig(sample_rate=SR))


def test_import_records_the_active_span_and_placement_stays_inside_it(tmp_path: Path) -> None:
    manifest = padded_corpus(tmp_path)
    rows = list(mf.iter_rows(manifest))
    assert all(0.2 <= r["active_end_s"] - r["active_start_s"] <= 0.5 for r in rows)
    pool = SourcePool.from_manifest(manifest, None)
    rng = np.random.default_rng(1)
    for entry in pool.entries:
        a, b = entry.active
        for _ in range(20):
            start, _onset, length = place_event(entry, rng, 2.0, float(rng.uniform(1.0, 4.0)))
            assert start <= a and start + length >= b  # an excerpt longer than the span holds all of it
            start, _onset, length = place_full(entry, rng, 2.0)
            assert start <= a and start + length >= b
    long = SourceEntry("x", "x.wav", ("x",), "sound", 10.0, active=(2.0, 8.0))
    assert start_range(long, 1.0) == (2.0, 7.0)  # a short excerpt lies inside the span
    assert start_range(SourceEntry("y", "y.wav", ("y",), "sound", 10.0), 1.0) == (0.0, 9.0)  # no span: anywhere


def test_active_spans_mean_no_redraws(tmp_path: Path) -> None:
    stage = _stage(padded_corpus(tmp_path))
    tuples = [stage.render_index(i) for i in range(30)]
    assert not any(t.spec.info.get("redraw") for t in tuples)


def test_silent_excerpts_are_redrawn_deterministically(tmp_path: Path) -> None:
    manifest = without_active(padded_corpus(tmp_path, tone_s=2.5), tmp_path / "old-manifest")
    stage = _stage(manifest)
    out = stage({"index": np.arange(30)})
    assert out["error"] == [None] * 30  # every tuple delivered
    redrawn = [s["json"]["spec"]["info"] for s in out["sample"] if s["json"]["spec"]["info"].get("redraw")]
    assert redrawn, "whole-clip excerpts of padded clips should have hit silence"
    assert all("is silent at" in info["redrawn"][0] and len(info["redrawn"]) == info["redraw"] for info in redrawn)
    again = _stage(manifest)({"index": np.arange(29, -1, -1)})  # another process, another order: same tuples
    assert [s["json"]["spec"] for s in again["sample"][::-1]] == [s["json"]["spec"] for s in out["sample"]]
    assert [s["__key__"] for s in out["sample"]] == [f"promptsep-000005-{i:08d}" for i in range(30)]
    none = _stage(manifest, max_redraws=0)({"index": np.arange(30)})
    assert sum(e is not None for e in none["error"]) == len(redrawn)  # without redraws those tuples are dropped
