"""A tiny synthetic source pool (tones and noise bursts) for tests, benchmarks and quick trials.

Why here and not in tests: the benchmark and the CLI tests need the same pool without depending on the demo
corpus generator, and every test file must build it in milliseconds. Each class is a distinct sound (a tone of
its own pitch, or band-limited noise) that is active over the whole clip, so any window of it is non-silent.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from storage.manifests import SOURCE_CLIP_SCHEMA, append_rows, file_hash

TOY_CLASSES: tuple[tuple[str, str], ...] = (
    ("male speech", "speech"), ("female speech", "speech"),
    ("piano", "music"), ("violin", "music"), ("drums", "music"), ("flute", "music"),
    ("dog", "sound"), ("siren", "sound"), ("rain", "sound"), ("engine", "sound"),
)


def toy_clip(label: str, rng: np.random.Generator, seconds: float, sample_rate: int) -> np.ndarray:
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    k = zlib.crc32(label.encode()) % 24
    f0 = 110.0 * 2 ** (k / 12.0) * float(rng.uniform(0.97, 1.03))
    tone = np.sin(2 * np.pi * f0 * t) + 0.3 * np.sin(2 * np.pi * 2 * f0 * t + rng.uniform(0, np.pi))
    am = 0.6 + 0.4 * np.sin(2 * np.pi * float(rng.uniform(0.5, 3.0)) * t + rng.uniform(0, np.pi))
    noise = rng.standard_normal(n) * (0.2 if k % 3 else 0.8)
    x = tone * am + noise
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


def write_toy_sources(out_dir: str | Path, classes: Sequence[tuple[str, str]] = TOY_CLASSES, per_class: int = 3,
                      seconds: float = 2.0, sample_rate: int = 16000, seed: int = 0, split: str = "train") -> Path:
    """Write FLAC clips and a `source_clip` manifest under `out_dir`; returns the manifest directory."""
    out_dir = Path(out_dir)
    rows = []
    for label, domain in classes:
        for j in range(per_class):
            rng = np.random.default_rng([seed, zlib.crc32(label.encode()), j])
            clip_id = f"{label.replace(' ', '_')}-{j:03d}"
            path = out_dir / "sources" / f"{clip_id}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            audio = toy_clip(label, rng, seconds, sample_rate)
            sf.write(str(path), audio, sample_rate, subtype="PCM_24")
            rows.append({"clip_id": clip_id, "path": str(path.resolve()), "sample_rate": sample_rate, "num_frames": audio.shape[0],
                         "duration_s": audio.shape[0] / sample_rate, "labels": [label], "label_ids": [label], "domain": domain,
                         "split": split, "content_hash": file_hash(path), "dataset": "toy"})
    manifest = out_dir / "manifests" / "sources"
    append_rows(manifest, SOURCE_CLIP_SCHEMA, rows)
    return manifest


def write_toy_scenes(out_dir: str | Path, classes: Sequence[tuple[str, str]] = TOY_CLASSES, num: int = 12,
                     events: int = 2, seconds: float = 2.0, sample_rate: int = 16000, seed: int = 0, split: str = "train") -> Path:
    """`natural_scene` manifest of toy scenes (sums of `events` toy clips of distinct classes) for wild-pool tests."""
    from storage.manifests import NATURAL_SCENE_SCHEMA

    out_dir = Path(out_dir)
    rows = []
    for j in range(num):
        rng = np.random.default_rng([seed, 7, j])
        picks = rng.choice(len(classes), size=events, replace=False)
        labels = [classes[int(k)][0] for k in picks]
        audio = np.sum([toy_clip(label, rng, seconds, sample_rate) for label in labels], axis=0).astype(np.float32)
        scene_id = f"scene-{j:04d}"
        path = out_dir / "scenes" / f"{scene_id}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), audio, sample_rate, subtype="PCM_24")
        rows.append({"clip_id": scene_id, "path": str(path.resolve()), "sample_rate": sample_rate, "num_frames": audio.shape[0],
                     "duration_s": audio.shape[0] / sample_rate, "labels": labels, "label_ids": labels, "domain": "sound",
                     "split": split, "content_hash": file_hash(path), "dataset": "toy", "event_labels": labels,
                     "events": [{"label": label, "onset_s": 0.0, "offset_s": seconds} for label in labels],
                     "caption": None, "audit_dir": None})
    manifest = out_dir / "manifests" / "scenes"
    append_rows(manifest, NATURAL_SCENE_SCHEMA, rows)
    return manifest
