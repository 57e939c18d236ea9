"""Track-level CLAP filter (SAM Audio Table 3): the target must match its text, the residual must not.

Scores: `clap_target` = CLAP(text, target), `clap_residual` = CLAP(text, residual) (cosine).
Keep when clap_target > `clap_target_min` (0.35) and clap_residual < `clap_residual_max` (0.0).
"""
from __future__ import annotations

import numpy as np

from pipelines.filters.config import FilterConfig
from pipelines.filters.rules import DecisionStage, Rule
from pipelines.filters.scoring import ModelScoringStage, length_groups, sample_rate_of, stack
from pipelines.stage import Batch, batch_len


class ClapScoring(ModelScoringStage):
    """Adds `clap_target` and `clap_residual` using the prompt in `positive_text`."""

    name = "score_clap"

    def __call__(self, batch: Batch) -> Batch:
        self._ensure()
        n = batch_len(batch)
        out = dict(batch)
        sr = sample_rate_of(batch) if n else 16000
        texts = list(batch["positive_text"]) if n else []
        for column, audio_col in (("clap_target", "target"), ("clap_residual", "residual")):
            scores = np.full(n, np.nan)
            for _, idx in length_groups(list(batch[audio_col]) if n else []).items():
                scores[idx] = np.asarray(self.scorer.score([texts[i] for i in idx], stack(batch[audio_col], idx), sr), dtype=np.float64)
            out[column] = scores
        return out


def clap_rules(cfg: FilterConfig) -> list[Rule]:
    return [
        Rule("clap_target", "clap_target", ">", cfg.clap_target_min, "clap_target_low", enabled=cfg.clap_target_enabled),
        Rule("clap_residual", "clap_residual", "<", cfg.clap_residual_max, "clap_residual_high", enabled=cfg.clap_residual_enabled),
    ]


def ClapDecision(cfg: FilterConfig) -> DecisionStage:
    return DecisionStage("decide_clap", clap_rules(cfg))
