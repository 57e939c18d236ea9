"""Procedural 2-3 source mixtures in the shard sample format, and a minimal shard writer.

Used by the separator's tests and as a fallback data source for the benchmark when no demo corpus is given: a few
spectrally distinct synthetic classes are enough to check that conditioning, silence handling, resume and
evaluation really work. Every signal derives from the seed.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from storage.atomic import atomic_path
from storage.audio import encode_audio


def _tone(f: float) -> Callable[[np.random.Generator, np.ndarray], np.ndarray]:
    def make(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
        f0 = f * rng.uniform(0.95, 1.05)
        return np.sin(2 * np.pi * f0 * t + rng.uniform(0, 6.28)) * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    return make


def _band_noise(lo: float, hi: float) -> Callable[[np.random.Generator, np.ndarray], np.ndarray]:
    def make(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
        sr = 1.0 / (t[1] - t[0])
        spec = np.fft.rfft(rng.standard_normal(len(t)))
        f = np.fft.rfftfreq(len(t), 1 / sr)
        spec[(f < lo) | (f > hi)] = 0
        return np.fft.irfft(spec, len(t))
    return make


def _clicks(rate: float) -> Callable[[np.random.Generator, np.ndarray], np.ndarray]:
    def make(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
        sr = 1.0 / (t[1] - t[0])
        x = np.zeros(len(t))
        period = int(sr / (rate * rng.uniform(0.9, 1.1)))
        for s in range(int(rng.integers(0, period)), len(t), period):
            n = min(len(t) - s, int(0.01 * sr))
            x[s:s + n] += np.exp(-np.arange(n) / (0.002 * sr)) * rng.choice([-1, 1])
        return x
    return make


def _chirp(f0: float, f1: float) -> Callable[[np.random.Generator, np.ndarray], np.ndarray]:
    def make(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
        period = rng.uniform(0.4, 0.8)
        ph = (t % period) / period
        freq = f0 + (f1 - f0) * ph
        return np.sin(2 * np.pi * np.cumsum(freq) * (t[1] - t[0]))
    return make


CLASSES: dict[str, Callable[[np.random.Generator, np.ndarray], np.ndarray]] = {
    "low hum": _tone(110.0),
    "whistle": _tone(1800.0),
    "hiss": _band_noise(4000.0, 7500.0),
    "rumble": _band_noise(40.0, 300.0),
    "ticking clock": _clicks(4.0),
    "bird chirp": _chirp(2500.0, 4500.0),
}


def synth_source(label: str, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    x = CLASSES[label](rng, t)
    x = 0.05 * x / (np.sqrt(np.mean(x ** 2)) + 1e-9)
    peak = np.abs(x).max()
    if peak > 0.25:  # impulsive classes: keep the mixture inside full scale for 24-bit FLAC
        x *= 0.25 / peak
    return x.astype(np.float32)


def synthetic_samples(n: int, sr: int = 16000, seconds: float = 2.0, seed: int = 0, silent_every: int = 0,
                      classes: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """`n` sample dicts `{"__key__", "mix", "target", "residual", "json"}`: 2-3 sources at SNR in [-3, 10] dB,
    target = one of them, query mode pos / neg / posneg. With `silent_every=k`, every k-th sample queries an
    absent class with an all-zero target (`silent_target`)."""
    names = classes or sorted(CLASSES)
    length = int(round(seconds * sr))
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        k = int(rng.integers(2, 4))
        labels = [names[j] for j in rng.choice(len(names), size=k, replace=False)]
        srcs = [synth_source(lab, rng, length, sr) * np.float32(10 ** (-rng.uniform(-3, 10) / 20) if j else 1.0)
                for j, lab in enumerate(labels)]
        target, others = srcs[0], srcs[1:]
        residual = np.sum(others, axis=0).astype(np.float32)
        mix = (target + residual).astype(np.float32)
        mode = ["pos", "neg", "posneg"][int(rng.integers(3))]
        silent = bool(silent_every) and i % silent_every == silent_every - 1
        pos_labels, neg_labels = [labels[0]], labels[1:]
        if silent:
            absent = [c for c in names if c not in labels]
            pos_labels, mode = [absent[int(rng.integers(len(absent)))]], "pos"
            target, residual = np.zeros_like(mix), mix.copy()
        meta = {
            "key": f"syn{seed:03d}x{i:06d}", "sample_rate": sr, "num_frames": length, "duration_s": seconds,
            "recipe": "synthetic_test", "operator": "extract", "prompt": pos_labels[0],
            "positive_labels": pos_labels, "negative_labels": neg_labels,
            "positive_text": pos_labels[0], "negative_text": ", ".join(neg_labels), "query_mode": mode,
            "silent_target": silent, "target_labels": [] if silent else [labels[0]],
            "residual_labels": labels if silent else labels[1:], "spans": [], "spec": {}, "seed": seed,
            "lineage": {"source_clip_ids": [], "recipe": "synthetic_test", "config_hash": "", "code_version": ""},
        }
        yield {"__key__": meta["key"], "mix": mix, "target": target, "residual": residual, "json": meta}


def write_tar_shard(path: str | Path, samples: list[dict[str, Any]]) -> Path:
    """Write samples as one WebDataset tar (FLAC members + json), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w") as tf:
            for s in samples:
                sr = int(s["json"]["sample_rate"])
                members = [("mix.flac", encode_audio(s["mix"], sr)), ("target.flac", encode_audio(s["target"], sr))]
                if np.any(s["residual"]):
                    members.append(("residual.flac", encode_audio(s["residual"], sr)))
                members.append(("json", json.dumps(s["json"]).encode()))
                for name, data in members:
                    info = tarfile.TarInfo(f"{s['__key__']}.{name}")
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return path
