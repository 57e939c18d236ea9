"""Shared plumbing for scoring stages: build the model once in `setup()`, score equal-length groups.

Scorers take `[N, T]` arrays; candidates from different scenes differ in length, so rows are grouped by length
(no padding: padding would change CLAP embeddings and silence ratios).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from pipelines.stage import BaseStage, Batch, Resources, batch_len


def length_groups(audios: list[np.ndarray]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, a in enumerate(audios):
        groups.setdefault(len(a), []).append(i)
    return groups


def stack(audios: list[np.ndarray], idx: list[int]) -> np.ndarray:
    return np.stack([np.asarray(audios[i], dtype=np.float32) for i in idx])


def sample_rate_of(batch: Batch) -> int:
    rates = {int(r) for r in batch["sample_rate"]}
    if len(rates) != 1:
        raise ValueError(f"a scoring batch must have one sample rate, got {sorted(rates)}")
    return rates.pop()


class ModelScoringStage(BaseStage):
    """Base for stages that call a scorer: `factory()` is invoked once per replica in `setup()`."""

    resources = Resources(cpus=1, gpus=0, batch_size=16)

    def __init__(self, factory: Callable[[], Any], name: str | None = None) -> None:
        super().__init__()
        if name:
            self.name = name
        self.factory = factory
        self.scorer: Any = None

    def setup(self) -> None:
        if self.scorer is None:
            self.scorer = self.factory()

    def model_info(self) -> dict[str, Any]:
        info = getattr(self.scorer, "info", None)
        return dict(info()) if callable(info) else {}

    def _ensure(self) -> None:
        if self.scorer is None:
            self.setup()

    def empty(self, batch: Batch) -> bool:
        return batch_len(batch) == 0
