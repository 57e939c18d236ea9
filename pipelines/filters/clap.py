"""Track-level CLAP filter (SAM Audio Table 3): the target must match its text, the residual must not.

Scores: `clap_target` = CLAP(text, target), `clap_residual` = CLAP(text, residual) (cosine).
Keep when clap_target > `clap_target_min` (0.35) and clap_residual < `clap_residual_max` (0.0).
"""
from __future__ import annotations

import numpy as np

from pipelines.filters.config import FilterConfig
from pipelines.filters.rules import DecisionStage, Rule, as_filter_config
from pipelines.filters.scoring import ModelScoringStage, length_groups, sample_rate_of, stack
from pipelines.stage import Batch, batch_len


class ClapScoring(ModelScoringStage):
    """Adds `clap_target` and `clap_residual` using the prompt in `positive_text` (NaN for rows without one)."""

    name = "score_clap"
    model_kind = "clap"
    inputs = ("positive_text", "target", "residual", "sample_rate")
    outputs = ("clap_target", "clap_residual")

    def __call__(self, batch: Batch) -> Batch:
        self._ensure()
        n = batch_len(batch)
        out = dict(batch)
        sr = sample_rate_of(batch) if n else 16000
        texts = list(batch["positive_text"]) if n else []
        has_text = [i for i in range(n) if texts[i]]
        for column, audio_col in (("clap_target", "target"), ("clap_residual", "residual")):
            scores = np.full(n, np.nan)
            audios = list(batch[audio_col]) if n else []
            for _, group in length_groups([audios[i] for i in has_text]).items():
                idx = [has_text[j] for j in group]
                scores[idx] = np.asarray(self.scorer.score([texts[i] for i in idx], stack(audios, idx), sr), dtype=np.float64)
            out[column] = scores
        return self.with_info(out, n)


def clap_rules(cfg: FilterConfig) -> list[Rule]:
    return [
        Rule("clap_target", "clap_target", ">", cfg.clap_target_min, "clap_target_low", enabled=cfg.clap_target_enabled),
        Rule("clap_residual", "clap_residual", "<", cfg.clap_residual_max, "clap_residual_high", enabled=cfg.clap_residual_enabled),
    ]


def ClapDecision(cfg: FilterConfig | dict) -> DecisionStage:
    return DecisionStage("decide_clap", clap_rules(as_filter_config(cfg)))
