"""Track-level judge filter (SAJ §III-E.2): keep when the judge's overall score >= `judge_min` (default 4.0).

The scoring stage records all four judge dimensions so a sweep (3.8-4.6) can re-decide without re-scoring.
"""
from __future__ import annotations

import numpy as np

from pipelines.filters.config import FilterConfig
from pipelines.filters.rules import DecisionStage, Rule
from pipelines.filters.scoring import ModelScoringStage, length_groups, sample_rate_of, stack
from pipelines.stage import Batch, batch_len

JUDGE_DIMENSIONS = ("overall", "recall", "precision", "faithfulness")


class JudgeScoring(ModelScoringStage):
    """Adds `judge_overall`, `judge_recall`, `judge_precision`, `judge_faithfulness` for (scene, target, text)."""

    name = "score_judge"

    def __call__(self, batch: Batch) -> Batch:
        self._ensure()
        n = batch_len(batch)
        cols = {f"judge_{d}": np.full(n, np.nan) for d in JUDGE_DIMENSIONS}
        if n:
            sr = sample_rate_of(batch)
            texts = list(batch["positive_text"])
            for _, idx in length_groups(list(batch["target"])).items():
                res = self.scorer.score(stack(batch["mixture"], idx), stack(batch["target"], idx), [texts[i] for i in idx], sr)
                for d in JUDGE_DIMENSIONS:
                    if d in res:
                        cols[f"judge_{d}"][idx] = np.asarray(res[d], dtype=np.float64)
        return {**batch, **cols}


def judge_rules(cfg: FilterConfig, threshold: float | None = None) -> list[Rule]:
    t = cfg.judge_min if threshold is None else threshold
    return [Rule("judge", "judge_overall", ">=", t, "judge_low", enabled=cfg.judge_enabled)]


def JudgeDecision(cfg: FilterConfig) -> DecisionStage:
    return DecisionStage("decide_judge", judge_rules(cfg))
