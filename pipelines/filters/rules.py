"""Threshold rules and the decision stages built from them.

Why decisions are separate from scoring: scoring calls models (slow, needs a device), deciding is arithmetic on
score columns. Keeping them apart makes every keep/drop and its reason testable on plain numbers, lets a sweep
re-decide a Parquet table without re-scoring, and lets a Ray executor give the two different resources.

A rule never removes rows. It adds `keep_<rule>` (bool) and `reason_<rule>` (a short code, "" when kept);
`FinalDecision` combines every `keep_*` column into `keep` and `reasons` ("; "-joined codes of all failures).
A missing score (NaN or absent column) for an enabled rule drops the candidate with reason `<rule>_missing`:
nothing passes a filter by not being measured.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np

from typing import Any

from pipelines.filters.config import FilterConfig
from pipelines.stage import BaseStage, Batch, batch_len

_OPS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


@dataclass(frozen=True)
class Rule:
    """Keep a row when `column <op> threshold`; otherwise record `reason`."""

    name: str
    column: str
    op: str
    threshold: float
    reason: str
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"rule {self.name}: unknown operator {self.op!r} (use one of {sorted(_OPS)})")

    def apply(self, values: np.ndarray) -> tuple[np.ndarray, list[str]]:
        values = np.asarray(values, dtype=np.float64)
        missing = ~np.isfinite(values)
        with np.errstate(invalid="ignore"):
            passed = _OPS[self.op](values, self.threshold) & ~missing
        reasons = ["" if ok else (f"{self.name}_missing" if miss else self.reason) for ok, miss in zip(passed, missing)]
        return passed, reasons


def column_values(batch: Batch, column: str) -> np.ndarray:
    n = batch_len(batch)
    if column not in batch:
        return np.full(n, np.nan)
    return np.asarray([np.nan if v is None else v for v in batch[column]], dtype=np.float64)


def as_filter_config(cfg: FilterConfig | dict[str, Any]) -> FilterConfig:
    """Decision stages are built from a FilterConfig or its JSON dump (what a stage spec carries)."""
    return FilterConfig.model_validate(cfg.model_dump() if isinstance(cfg, FilterConfig) else cfg)


class DecisionStage(BaseStage):
    """Applies rules to score columns; disabled rules record keep=True and reason "" (they never drop).

    Inputs are the score columns of the enabled rules, so a chain that never computes a gating score fails before
    any model loads instead of dropping every row as `<rule>_missing`.
    """

    def __init__(self, name: str, rules: list[Rule]) -> None:
        super().__init__()
        self.name = name
        self.rules = rules
        self.inputs = tuple(r.column for r in rules if r.enabled)
        self.outputs = tuple(c for r in rules for c in (f"keep_{r.name}", f"reason_{r.name}"))

    def __call__(self, batch: Batch) -> Batch:
        out = dict(batch)
        n = batch_len(batch)
        for rule in self.rules:
            if not rule.enabled:
                out[f"keep_{rule.name}"] = np.ones(n, dtype=bool)
                out[f"reason_{rule.name}"] = [""] * n
                continue
            keep, reasons = rule.apply(column_values(batch, rule.column))
            out[f"keep_{rule.name}"] = keep
            out[f"reason_{rule.name}"] = reasons
        return out


class FinalDecision(BaseStage):
    """`keep` = AND of every `keep_*` column; `reasons` lists every failing code, `reason` the first one."""

    name = "decide_final"
    outputs = ("keep", "reasons", "reason")

    def __call__(self, batch: Batch) -> Batch:
        n = batch_len(batch)
        keep_cols = sorted(k for k in batch if k.startswith("keep_"))
        keep = np.ones(n, dtype=bool)
        all_reasons: list[list[str]] = [[] for _ in range(n)]
        for col in keep_cols:
            keep &= np.asarray(batch[col], dtype=bool)
            reason_col = batch.get("reason_" + col[len("keep_"):], [""] * n)
            for i, r in enumerate(reason_col):
                if r:
                    all_reasons[i].append(r)
        out = dict(batch)
        out["keep"] = keep
        out["reasons"] = ["; ".join(r) for r in all_reasons]
        out["reason"] = [r[0] if r else "" for r in all_reasons]
        return out


def rejection_counts(reasons: list[str]) -> dict[str, int]:
    """reason code -> number of candidates failing it (a candidate failing two filters counts under both)."""
    counts: dict[str, int] = {}
    for text in reasons:
        for code in filter(None, (c.strip() for c in (text or "").split(";"))):
            counts[code] = counts.get(code, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
