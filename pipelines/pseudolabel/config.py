"""Config section: pseudo-labeling of natural scenes (ClearSep §3.3 decomposition, SAM Audio §4.1.3 prompting)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from storage.configio import Section


class PseudoLabelConfig(Section):
    """How natural scenes become candidate (target, residual, prompt) tracks.

    `mode="labels"`: ClearSep decomposition, one query per event label with the other labels as negatives.
    `mode="captions"`: SAM Audio style, each caption phrase prompts a target + residual (no negatives).
    Candidates: `query_modes` x `gains_db` variants per query, the first `num_candidates` of them are separated and
    reranked by `judge_weight x judge overall + clap_weight x CLAP(text, target)` (SAM Audio §6.1: 1 and 5).
    """

    mode: Literal["labels", "captions"] = "labels"
    min_events: int = Field(2, ge=1, description="only scenes with at least this many events are pseudo-labeled")
    num_candidates: int = Field(1, ge=1, description="test-time variants per query; 1 = no reranking")
    query_modes: list[Literal["posneg", "pos"]] = Field(default_factory=lambda: ["posneg", "pos"])
    gains_db: list[float] = Field(default_factory=lambda: [0.0, -6.0], description="input gain variants (output is rescaled back)")
    judge_weight: float = 1.0
    clap_weight: float = 5.0
    window_s: float = Field(10.0, gt=0, description="scenes longer than this are separated in overlapping windows")
    overlap_s: float = Field(1.0, ge=0, description="window overlap, linearly crossfaded")
    batch_size: int = Field(4, ge=1, description="scenes per separation call")

    @model_validator(mode="after")
    def _check(self) -> "PseudoLabelConfig":
        if self.overlap_s >= self.window_s:
            raise ValueError(f"overlap_s ({self.overlap_s}) must be shorter than window_s ({self.window_s})")
        if not self.query_modes or not self.gains_db:
            raise ValueError("query_modes and gains_db need at least one entry each")
        return self
