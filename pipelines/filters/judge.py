"""Track-level judge filter (SAJ §III-E.2): keep when the judge's overall score >= `judge_min`.

SAJ keeps tracks its human-rated judge scores >= 4.0; the engine's judge is re-calibrated on each separator's own
outputs (engine.judge_calibration), whose overall axis is true SDR mapped -10..15 dB -> 1..5, so the default 3.0
keeps tracks it predicts at >= 2.5 dB: on the demo it drops the worst of what the other filters keep (docs/perf/
judge_pc.md). The scoring stage records all four judge dimensions so a sweep can re-decide without re-scoring.
"""
from __future__ import annotations

import numpy as np

from pipelines.filters.config import FilterConfig
from pipelines.filters.rules import DecisionStage, Rule, as_filter_config
from pipelines.filters.scoring import ModelScoringStage, length_groups, sample_rate_of, stack
from pipelines.stage import Batch, batch_len

JUDGE_DIMENSIONS = ("overall", "recall", "precision", "faithfulness")


def other_labels(batch: Batch) -> list[list[str]] | None:
    """Per row, the other sounds known to be in the mixture, for a judge that reads them (`models.judge.prompt`):
    a candidate's scene labels minus its positive labels, else a shard sample's residual labels, else the query's
    negative labels; None when the batch carries none of these columns."""
    from models.judge.prompt import others_in

    if "scene_labels" in batch and "positive_labels" in batch:
        return [others_in(s, pos) for s, pos in zip(batch["scene_labels"], batch["positive_labels"])]
    for col in ("residual_labels", "negative_labels"):
        if col in batch:
            return [list(x) if x is not None else [] for x in batch[col]]
    return None


class JudgeScoring(ModelScoringStage):
    """Adds `judge_overall`, `judge_recall`, `judge_precision`, `judge_faithfulness` for (mixture, target,
    positive_text, and the mixture's other labels where the batch has them: `other_labels`); NaN for rows without
    a positive text."""

    name = "score_judge"
    model_kind = "judge"
    inputs = ("mixture", "target", "positive_text", "sample_rate")
    outputs = tuple(f"judge_{d}" for d in JUDGE_DIMENSIONS)

    def __call__(self, batch: Batch) -> Batch:
        self._ensure()
        n = batch_len(batch)
        cols = {f"judge_{d}": np.full(n, np.nan) for d in JUDGE_DIMENSIONS}
        if n:
            sr = sample_rate_of(batch)
            texts = list(batch["positive_text"])
            has_text = [i for i in range(n) if texts[i]]
            targets = list(batch["target"])
            others = other_labels(batch)
            for _, group in length_groups([targets[i] for i in has_text]).items():
                idx = [has_text[j] for j in group]
                res = self.scorer.score(stack(batch["mixture"], idx), stack(targets, idx), [texts[i] for i in idx], sr,
                                        others=None if others is None else [others[i] for i in idx])
                for d in JUDGE_DIMENSIONS:
                    if d in res:
                        cols[f"judge_{d}"][idx] = np.asarray(res[d], dtype=np.float64)
        return self.with_info({**batch, **cols}, n)


def judge_rules(cfg: FilterConfig, threshold: float | None = None) -> list[Rule]:
    t = cfg.judge_min if threshold is None else threshold
    return [Rule("judge", "judge_overall", ">=", t, "judge_low", enabled=cfg.judge_enabled)]


def JudgeDecision(cfg: FilterConfig | dict) -> DecisionStage:
    return DecisionStage("decide_judge", judge_rules(as_filter_config(cfg)))
