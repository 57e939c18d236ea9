"""Candidate filters: scoring stages (call models) and decision stages (arithmetic on scores, with reasons)."""
from __future__ import annotations

from pipelines.filters.clap import ClapDecision, ClapScoring
from pipelines.filters.config import FilterConfig
from pipelines.filters.judge import JudgeDecision, JudgeScoring
from pipelines.filters.pc import PCDecision, PCScoring
from pipelines.filters.remix import RemixDecision
from pipelines.filters.rules import DecisionStage, FinalDecision, Rule
from pipelines.filters.silence import SilenceDecision, SilenceScoring
from pipelines.stage import BaseStage


def decision_stages(cfg: FilterConfig) -> list[BaseStage]:
    """Every decision stage in order, ending with the final keep/reason combination."""
    return [RemixDecision(cfg), ClapDecision(cfg), PCDecision(cfg), SilenceDecision(cfg), JudgeDecision(cfg), FinalDecision()]


__all__ = [
    "ClapDecision", "ClapScoring", "DecisionStage", "FilterConfig", "FinalDecision", "JudgeDecision", "JudgeScoring",
    "PCDecision", "PCScoring", "RemixDecision", "Rule", "SilenceDecision", "SilenceScoring", "decision_stages",
]
