"""Synthetic triplet mixing: recipes sample specs, the renderer turns specs into (mixture, target, residual).

Public entry points: `MixPlanner`, `MixStage`, `MixSampleFactory` / `mix_factory`, `render`, `to_shard_sample`, `rerender_sample`,
`MixSpec`. See docs in each module for the loudness/SNR definition and determinism rules.
"""
from __future__ import annotations

from pipelines.mixing.config import MixingConfig

__all__ = ["MixingConfig"]
