"""Track-level production-complexity filter (SAM Audio Table 3): PC(target) < 2.5 means close to one clean source."""
from __future__ import annotations

import numpy as np

from pipelines.filters.config import FilterConfig
from pipelines.filters.rules import DecisionStage, Rule
from pipelines.filters.scoring import ModelScoringStage, length_groups, sample_rate_of, stack
from pipelines.stage import Batch, batch_len


class PCScoring(ModelScoringStage):
    """Adds `pc_target` (audiobox-style production complexity, 1-10)."""

    name = "score_pc"

    def __call__(self, batch: Batch) -> Batch:
        self._ensure()
        n = batch_len(batch)
        scores = np.full(n, np.nan)
        if n:
            sr = sample_rate_of(batch)
            for _, idx in length_groups(list(batch["target"])).items():
                scores[idx] = np.asarray(self.scorer.score(stack(batch["target"], idx), sr), dtype=np.float64)
        return {**batch, "pc_target": scores}


def pc_rules(cfg: FilterConfig) -> list[Rule]:
    return [Rule("pc", "pc_target", "<", cfg.pc_max, "pc_high", enabled=cfg.pc_enabled)]


def PCDecision(cfg: FilterConfig) -> DecisionStage:
    return DecisionStage("decide_pc", pc_rules(cfg))
