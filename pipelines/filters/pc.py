"""Track-level production-complexity filter (SAM Audio Table 3): PC(target) < 2.5 means close to one clean source."""
from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.filters.config import FilterConfig
from pipelines.filters.rules import DecisionStage, Rule, as_filter_config
from pipelines.filters.scoring import ModelScoringStage, length_groups, sample_rate_of, stack
from pipelines.stage import Batch, batch_len


class PCScoring(ModelScoringStage):
    """Adds `pc_target` (audiobox-style production complexity, 1-10); `columns` maps output -> audio column
    (`stemforge score` also asks for `pc_mix` of the mixture)."""

    name = "score_pc"
    model_kind = "pc"

    def __init__(self, section: Any, name: str | None = None, info_columns: bool = False,
                 columns: dict[str, str] | None = None) -> None:
        self.columns = dict(columns or {"pc_target": "target"})
        self.outputs = tuple(self.columns)
        self.inputs = (*sorted(set(self.columns.values())), "sample_rate")
        super().__init__(section, name, info_columns)

    def __call__(self, batch: Batch) -> Batch:
        self._ensure()
        n = batch_len(batch)
        out = dict(batch)
        for column, audio_col in self.columns.items():
            scores = np.full(n, np.nan)
            if n:
                sr = sample_rate_of(batch)
                for _, idx in length_groups(list(batch[audio_col])).items():
                    scores[idx] = np.asarray(self.scorer.score(stack(batch[audio_col], idx), sr), dtype=np.float64)
            out[column] = scores
        return self.with_info(out, n)


def pc_rules(cfg: FilterConfig) -> list[Rule]:
    return [Rule("pc", "pc_target", "<", cfg.pc_max, "pc_high", enabled=cfg.pc_enabled)]


def PCDecision(cfg: FilterConfig | dict) -> DecisionStage:
    return DecisionStage("decide_pc", pc_rules(as_filter_config(cfg)))
