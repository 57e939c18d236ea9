"""Tiny synthetic source manifests for the CLAP tests: three easily told-apart classes, written as real files."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from storage.audio import write_audio
from storage.manifests import SOURCE_CLIP_SCHEMA, write_manifest

PHRASES = {"hum": "a low hum", "whistle": "a high whistle", "hiss": "white noise hissing"}


def synth(label: str, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    if label == "hum":
        x = np.sin(2 * np.pi * rng.uniform(90, 160) * t) + 0.3 * np.sin(2 * np.pi * rng.uniform(180, 320) * t)
    elif label == "whistle":
        x = np.sin(2 * np.pi * rng.uniform(2500, 3500) * t)
    else:
        x = rng.standard_normal(n)
    x = x * np.clip(np.sin(np.pi * t / t[-1]) * 4, 0, 1)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def make_manifest(root: Path, per_class: dict[str, int], sr: int = 22050, seconds: float = 1.0, seed: int = 0) -> Path:
    """Write clips at `sr` (not the model's rate, so loading resamples) and a source_clip manifest; return its dir."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, count in per_class.items():
        for label in PHRASES:
            for i in range(count):
                path = root / "sources" / split / f"{label}-{i}.flac"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_audio(path, synth(label, rng, int(sr * seconds), sr), sr)
                rows.append({"clip_id": f"{label}-{split}-{i}", "path": str(path.resolve()), "sample_rate": sr,
                             "num_frames": int(sr * seconds), "duration_s": seconds, "labels": [label], "label_ids": [label],
                             "domain": "sound", "split": split, "content_hash": f"{label}{split}{i}", "dataset": "synthetic"})
    out = root / "manifests" / "sources"
    write_manifest(out, SOURCE_CLIP_SCHEMA, rows)
    return out
