"""A deterministic, picklable sample factory of noise-like tuples in the shard sample contract.

Why it lives here and not in tests: the shard benchmark, the crash/resume test (which runs the writer in a separate
process) and `write_store(workers>1)` all need a factory that can be pickled or re-created from arguments, and that
renders sample i identically every time. It is not a mixing recipe: real tuples come from `pipelines/mixing`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from storage.audio import encode_audio

LABELS = ("dog_bark", "rain", "speech", "siren", "piano", "engine")


@dataclass(frozen=True)
class SyntheticSamples:
    """`factory(i)` -> sample dict with encoded `mix.flac`, `target.flac`, `residual.flac` and a `json` record.

    Every random choice comes from `(seed, i)`. `extra_members` adds further FLAC members (e.g. "scene.flac");
    `drop_every` > 0 returns None for every n-th sample (as a filter would); `delay_s` slows rendering (for tests
    that must interrupt a writer midway).
    """

    seed: int = 0
    seconds: float = 0.25
    sample_rate: int = 16000
    extra_members: tuple[str, ...] = ()
    drop_every: int = 0
    delay_s: float = 0.0

    def __call__(self, i: int) -> dict[str, Any] | None:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.drop_every and i % self.drop_every == self.drop_every - 1:
            return None
        rng = np.random.default_rng([self.seed, i])
        n = int(round(self.seconds * self.sample_rate))
        t = np.arange(n, dtype=np.float32) / self.sample_rate
        freq = float(rng.uniform(100.0, 2000.0))
        target = (0.3 * np.sin(2 * np.pi * freq * t) * rng.uniform(0.2, 1.0)).astype(np.float32)
        residual = (0.05 * rng.standard_normal(n)).astype(np.float32)
        mix = target + residual
        pos = str(LABELS[int(rng.integers(len(LABELS)))])
        neg = [lab for lab in LABELS if lab != pos][: int(rng.integers(0, 3))]
        key = f"s{self.seed:04d}_{i:08d}"
        sample: dict[str, Any] = {
            "__key__": key,
            "mix.flac": encode_audio(mix, self.sample_rate),
            "target.flac": encode_audio(target, self.sample_rate),
            "residual.flac": encode_audio(residual, self.sample_rate),
            "json": {
                "key": key, "sample_rate": self.sample_rate, "num_frames": n, "duration_s": n / self.sample_rate,
                "recipe": "synthetic_noise", "operator": "extract", "prompt": pos.replace("_", " "),
                "positive_labels": [pos], "negative_labels": neg, "positive_text": pos.replace("_", " "),
                "negative_text": None, "query_mode": "pos", "silent_target": False, "target_labels": [pos],
                "residual_labels": ["noise"], "spans": [[0.0, n / self.sample_rate]], "spec": {"freq_hz": freq},
                "seed": self.seed, "lineage": {"source_clip_ids": [], "recipe": "synthetic_noise",
                                               "config_hash": None, "code_version": None},
            },
        }
        for ext in self.extra_members:
            sample[ext] = encode_audio(0.5 * mix, self.sample_rate)
        return sample
