"""Candidate filters: scoring stages (call models) and decision stages (arithmetic on scores, with reasons)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.filters.config import FilterConfig

if TYPE_CHECKING:
    from pipelines.filters.rules import Rule
    from pipelines.stage import BaseStage

_LAZY = {
    "ClapDecision": "clap", "ClapScoring": "clap", "JudgeDecision": "judge", "JudgeScoring": "judge",
    "PCDecision": "pc", "PCScoring": "pc", "RemixDecision": "remix", "DecisionStage": "rules",
    "FinalDecision": "rules", "Rule": "rules", "SilenceDecision": "silence", "SilenceScoring": "silence",
}


def __getattr__(name: str):
    """Stages load on first use (the remix metrics pull in torch); `FilterConfig` alone stays light for configs."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"pipelines.filters.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def all_rules(cfg: FilterConfig) -> list["Rule"]:
    """Every track/scene rule with its configured threshold and enabled flag (for reports on disabled filters)."""
    from pipelines.filters.clap import clap_rules
    from pipelines.filters.judge import judge_rules
    from pipelines.filters.pc import pc_rules
    from pipelines.filters.rules import Rule
    from pipelines.filters.silence import silence_rules

    remix = Rule("remix", "re_min_db", ">", cfg.itt_min_db, "re_sdr_below_itt", enabled=cfg.remix_enabled)
    return [remix, *clap_rules(cfg), *pc_rules(cfg), *silence_rules(cfg), *judge_rules(cfg)]


#: every decision stage in order as `module:callable` taking the filter config (a spec can name them), ending with
#: the final keep/reason combination
DECISION_STAGES = (
    "pipelines.filters.remix:RemixDecision", "pipelines.filters.clap:ClapDecision", "pipelines.filters.pc:PCDecision",
    "pipelines.filters.silence:SilenceDecision", "pipelines.filters.judge:JudgeDecision",
)
FINAL_DECISION = "pipelines.filters.rules:FinalDecision"


def decision_stages(cfg: FilterConfig) -> list[BaseStage]:
    """Every decision stage in order, ending with the final keep/reason combination."""
    import importlib

    stages = []
    for path in DECISION_STAGES:
        module, attr = path.split(":")
        stages.append(getattr(importlib.import_module(module), attr)(cfg))
    from pipelines.filters.rules import FinalDecision

    return [*stages, FinalDecision()]


__all__ = [
    "DECISION_STAGES", "FINAL_DECISION", "ClapDecision", "ClapScoring", "DecisionStage", "FilterConfig", "FinalDecision", "JudgeDecision", "JudgeScoring",
    "PCDecision", "PCScoring", "RemixDecision", "Rule", "SilenceDecision", "SilenceScoring", "all_rules", "decision_stages",
]
