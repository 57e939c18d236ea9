"""Synthetic (mixture, target, residual, text) tuples for training the mini judge and PC estimator.

Why here and not in `pipelines/mixing`: `models` sits below `pipelines` and must not import it; the scorers only
need a small, seeded generator over clean source clips (2-4 sources of different labels summed at random SNRs),
so they keep their own. The CLI passes the corpus's label -> phrase map so texts match what the engine prompts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from storage.audio import AudioConfig, AudioError, load_audio
from storage.manifests import iter_rows


def rms(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=axis) + 1e-12)


@dataclass
class SourcePool:
    """Clean single-label clips held in memory, grouped by label (the training data of both minis)."""

    clips: list[np.ndarray]
    labels: list[str]
    sample_rate: int

    def __post_init__(self) -> None:
        self.by_label: dict[str, list[int]] = {}
        for i, lab in enumerate(self.labels):
            self.by_label.setdefault(lab, []).append(i)
        if len(self.by_label) < 2:
            raise ValueError(f"source pool needs clips of at least 2 labels, got {sorted(self.by_label)}")

    @property
    def label_names(self) -> list[str]:
        return sorted(self.by_label)

    @classmethod
    def from_manifest(cls, manifest: str | Path, sample_rate: int, splits: tuple[str, ...] | None = None,
                      max_clips: int = 600, seed: int = 0) -> "SourcePool":
        """Load up to `max_clips` source clips (first label of each) from a `source_clip` manifest.

        Unreadable clips are skipped with their count reported in the error only if nothing usable remains.
        """
        rows = [r for r in iter_rows(manifest, columns=["path", "labels", "split"], expect="source_clip")
                if r["labels"] and (splits is None or r["split"] in splits)]
        if not rows:
            raise ValueError(f"{manifest}: no source clips{'' if splits is None else f' in splits {splits}'}")
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(rows))[:max_clips]
        cfg = AudioConfig(sample_rate=sample_rate)
        clips, labels, bad = [], [], []
        for i in sorted(order):
            try:
                clips.append(load_audio(rows[i]["path"], cfg))
                labels.append(str(rows[i]["labels"][0]))
            except AudioError as exc:
                bad.append(str(exc))
        if not clips:
            raise ValueError(f"{manifest}: none of {len(order)} clips could be read; first error: {bad[0]}")
        return cls(clips, labels, sample_rate)

    def split_by_clip(self, holdout: float, seed: int) -> tuple["SourcePool", "SourcePool"]:
        """Disjoint train/held-out pools (per label, so every label stays in both when it has >= 2 clips)."""
        rng = np.random.default_rng(seed)
        train, held = [], []
        for lab in self.label_names:
            idx = list(rng.permutation(self.by_label[lab]))
            k = int(round(len(idx) * holdout)) if len(idx) > 1 else 0
            k = max(1, k) if len(idx) > 1 else 0
            held += idx[:k]
            train += idx[k:]
        pick = lambda ids: SourcePool([self.clips[i] for i in ids], [self.labels[i] for i in ids], self.sample_rate)
        return pick(sorted(train)), pick(sorted(held))

    def crop(self, idx: int, n: int, rng: np.random.Generator) -> np.ndarray:
        """A random `n`-sample excerpt (zero-padded when the clip is shorter), rescaled to unit RMS when sounding."""
        clip = self.clips[idx]
        if len(clip) >= n:
            start = int(rng.integers(0, len(clip) - n + 1))
            out = clip[start:start + n].astype(np.float32, copy=True)
        else:
            out = np.zeros(n, dtype=np.float32)
            off = int(rng.integers(0, n - len(clip) + 1))
            out[off:off + len(clip)] = clip
        r = rms(out)
        return (out / r).astype(np.float32) if r > 1e-5 else out

    def draw_sources(self, rng: np.random.Generator, k: int, n: int) -> tuple[list[np.ndarray], list[str]]:
        """`k` excerpts of `k` different labels."""
        labs = rng.choice(self.label_names, size=min(k, len(self.by_label)), replace=False)
        srcs = [self.crop(int(rng.choice(self.by_label[lab])), n, rng) for lab in labs]
        return srcs, [str(lab) for lab in labs]


@dataclass
class Tuple:
    mixture: np.ndarray
    target: np.ndarray
    others: list[np.ndarray]  # the other scaled sources; residual = sum(others)
    label: str
    text: str

    @property
    def residual(self) -> np.ndarray:
        return np.sum(self.others, axis=0).astype(np.float32) if self.others else np.zeros_like(self.target)


Phrases = Mapping[str, "str | Sequence[str]"] | None


def phrase_for(label: str, phrases: Phrases, rng: np.random.Generator | None = None) -> str:
    """Text for `label`: the mapped phrase, or one of several paraphrases drawn with `rng`; the label otherwise."""
    value = (phrases or {}).get(label, label)
    if isinstance(value, str):
        return value
    if not value:
        return label
    return str(value[int(rng.integers(len(value)))]) if rng is not None else str(value[0])


def make_tuple(pool: SourcePool, rng: np.random.Generator, n: int, min_sources: int, max_sources: int,
               snr_db: tuple[float, float], phrases: Phrases = None, peak: float = 0.9) -> Tuple:
    """Mixture = target + others, each other source at an SNR (target over it) drawn from `snr_db`."""
    k = int(rng.integers(min_sources, max_sources + 1))
    srcs, labs = pool.draw_sources(rng, k, n)
    target = srcs[0]
    others = [s * np.float32(10 ** (-rng.uniform(*snr_db) / 20.0)) for s in srcs[1:]]
    mix = target + np.sum(others, axis=0)
    scale = np.float32(peak / max(float(np.abs(mix).max()), 1e-6) * rng.uniform(0.3, 1.0))
    return Tuple(mix * scale, target * scale, [o * scale for o in others], labs[0], phrase_for(labs[0], phrases, rng))
